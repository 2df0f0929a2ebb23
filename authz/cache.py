"""What the server remembers about tokens, and the small memos of the Check path.

- `TokenCache`: a bounded, thread-safe LRU of what is known about tokens (the verifier's verdicts, Cognito's
  answers), keyed by the token's SHA-256 digest (`token_digest`). It never holds a token (a memory dump or a
  debugger shows no credential) and every entry costs the same 32 bytes of key whatever the token's size. Each
  entry carries its own deadline; a read past it is a miss, so an entry never outlives what it was cached for.
- `remember`: stores into a plain dict memo of derived values that starts over when full.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
K = TypeVar("K")


def remember(memo: dict[K, V], key: K, value: V, *, limit: int) -> V:
    """Store value in a small memo of derived values that starts over when full: no LRU bookkeeping on the hot
    path, and a lost race between threads only computes an equal value twice."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenCache(Generic[V]):
    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> V | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def put(self, digest: bytes, value: V, deadline: float) -> None:
        if self.max_entries <= 0 or deadline <= self._clock():
            return
        with self._lock:
            self._entries[digest] = (deadline, value)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
