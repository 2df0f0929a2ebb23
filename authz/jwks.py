"""A pool's signing keys: fetched over HTTPS, validated strictly, cached, refreshed, never lost on failure.

- `fetch_jwks` is the default fetcher (requests): a timeout, no redirects, a body size cap.
- `parse_jwks` keeps only keys fit for RS256 signatures and builds each one from its JWK dict, once.
- `JwksCache` holds one pool's keys. An unknown kid triggers a refetch at most once per cooldown, and
  concurrent Checks share that one fetch. A failed fetch keeps the last good keys.
- `JwksRefresher` loads every pool at start (retrying with backoff) and refreshes on a TTL in one thread.

The fetcher and the clock are injected so tests control faults and time without sleeping.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from jose import jwk
from jose.backends.base import Key
from jose.exceptions import JOSEError
from urllib3.exceptions import HTTPError, ReadTimeoutError

from authz.errors import KeysUnavailable, MustWait, UnknownSigningKey

log = logging.getLogger("authz.jwks")

MIN_RSA_BITS = 2048
_MAX_KEYS = 100


class JwksError(Exception):
    """A JWKS fetch or document failed; `outcome` is a static label for metrics and logs."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome = outcome


Fetcher = Callable[[str, float, int], bytes]
Clock = Callable[[], float]


def fetch_jwks(url: str, timeout: float, max_bytes: int, *, session: requests.Session | None = None) -> bytes:
    """GET the JWKS document, refusing redirects, non-200 answers and bodies over max_bytes.

    `timeout` bounds the whole body as well as each read, so a server trickling bytes cannot hold a fetch
    (and every Check waiting on it) for longer than about twice the timeout.
    """
    getter = session.get if session is not None else requests.get
    deadline = time.monotonic() + timeout
    try:
        with getter(
            url, timeout=timeout, stream=True, allow_redirects=False, headers={"Accept": "application/json"}
        ) as response:
            if response.status_code != 200:
                raise JwksError("http_error", f"HTTP {response.status_code}")
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise JwksError("too_large", f"Content-Length {declared} over {max_bytes}")
            body = bytearray()
            # read1 returns whatever has arrived, so the deadline is checked however slowly bytes trickle in.
            while chunk := response.raw.read1(16_384, decode_content=True):
                body += chunk
                if len(body) > max_bytes:
                    raise JwksError("too_large", f"body over {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise JwksError("timeout", "body slower than the timeout")
            return bytes(body)
    except requests.Timeout as exc:
        raise JwksError("timeout", type(exc).__name__) from None
    except ReadTimeoutError:
        raise JwksError("timeout", "ReadTimeoutError") from None
    except (requests.RequestException, HTTPError) as exc:
        raise JwksError("network_error", type(exc).__name__) from None


def parse_jwks(body: bytes) -> dict[str, Key]:
    """The usable RS256 signing keys of a JWKS document, by kid.

    Keys for other uses or algorithms are skipped (a JWKS may legitimately hold them); a document that is not
    a JWKS, holds a duplicate kid, or holds no usable key at all is an error, so the caller keeps its old keys.
    """
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JwksError("invalid", "not a UTF-8 JSON document") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("invalid", "no 'keys' array")
    entries = document["keys"]
    if len(entries) > _MAX_KEYS:
        raise JwksError("invalid", f"more than {_MAX_KEYS} keys")
    keys: dict[str, Key] = {}
    seen: set[str] = set()
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if isinstance(kid, str) and kid:
            if kid in seen:
                raise JwksError("invalid", "duplicate kid")
            seen.add(kid)
        key = _signing_key(entry)
        if key is not None and isinstance(kid, str):  # a usable key always has a kid
            keys[kid] = key
    if not keys:
        raise JwksError("invalid", "no usable RS256 signing key")
    return keys


def _signing_key(entry: Any) -> Key | None:
    if not isinstance(entry, dict):
        return None
    kid, n, e = entry.get("kid"), entry.get("n"), entry.get("e")
    if not (isinstance(kid, str) and kid and isinstance(n, str) and isinstance(e, str)):
        return None
    if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
        return None
    modulus = _b64url_uint(n)
    if modulus is None or modulus.bit_length() < MIN_RSA_BITS or _b64url_uint(e) is None:
        return None
    # Only the public members go to jose, and the algorithm is pinned by us, never taken from the document.
    try:
        return jwk.construct({"kty": "RSA", "n": n, "e": e}, "RS256")
    except (JOSEError, ValueError, TypeError):
        return None


def _b64url_uint(value: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if raw else None


class JwksCache:
    """One pool's keys by kid, with a cooldown on refetches and one fetch in flight at a time.

    A pool may serve its keys at several URLs (its issuer formats: the same keys at each). A fetch tries them in
    turn until one gives a usable JWKS, starting with the one that answered last, so a URL that refuses (the
    UPDATED-format URL of a pool that never switched answers 403) costs nothing while another answers."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        fetcher: Fetcher = fetch_jwks,
        clock: Clock = time.monotonic,
        timeout: float = 3.0,
        max_bytes: int = 65_536,
        ttl: float = 900.0,
        cooldown: float = 10.0,
        on_fetch: Callable[[str, int], None] | None = None,
    ) -> None:
        self.urls = (urls,) if isinstance(urls, str) else tuple(urls)
        if not self.urls:
            raise ValueError("a JwksCache needs at least one URL")
        # The URL that gave the keys last (or the first), tried first.
        self.url = self.urls[0]
        self._fetcher = fetcher
        self._clock = clock
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._cooldown = cooldown
        self._on_fetch = on_fetch
        # The pool's usable keys by kid, replaced whole by each good fetch and never dropped by a failed one; None
        # until the first fetch succeeds.
        self._keys: Mapping[str, Key] | None = None
        self._lock = threading.Lock()
        self._inflight: threading.Event | None = None
        self._last_attempt: float | None = None
        self._failures = 0
        self._next_due = clock()

    @property
    def loaded(self) -> bool:
        return self._keys is not None

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys or ())

    def get_key(self, kid: str, *, wait: bool = True) -> Key:
        """The key for kid; on a miss, refetch unless a fetch happened within the cooldown. With wait False, a miss
        that would fetch or join a fetch raises MustWait instead (a miss within the cooldown answers at once)."""
        keys = self._keys
        if keys is not None:
            key = keys.get(kid)
            if key is not None:
                return key
        if not wait and self._fetch_would_wait():
            raise MustWait()
        self._fetch(respect_cooldown=True)
        keys = self._keys
        if keys is None:
            raise KeysUnavailable(url=self.url)
        key = keys.get(kid)
        if key is None:
            raise UnknownSigningKey(kid=kid)
        return key

    def due_in(self) -> float:
        """Seconds until the next scheduled refresh (negative when overdue)."""
        return self._next_due - self._clock()

    def refresh(self) -> bool:
        """A scheduled refresh: fetch now (sharing any fetch in flight); True when keys are loaded after it."""
        self._fetch(respect_cooldown=False)
        return self.loaded

    def _fetch_would_wait(self) -> bool:
        with self._lock:
            return self._inflight is not None or not self._cooling_down(self._clock())

    def _cooling_down(self, now: float) -> bool:
        return self._last_attempt is not None and now - self._last_attempt < self._cooldown

    def _fetch(self, *, respect_cooldown: bool) -> None:
        with self._lock:
            inflight = self._inflight
            if inflight is None:
                now = self._clock()
                if respect_cooldown and self._cooling_down(now):
                    return
                self._last_attempt = now
                inflight = self._inflight = threading.Event()
                leader = True
            else:
                leader = False
        if not leader:
            # A follower waits no longer than the leader's fetch may take: connect, headers and the body's
            # deadline are each bounded by the timeout.
            inflight.wait(3 * self._timeout + 1.0)
            return
        try:
            self._fetch_and_store()
        finally:
            with self._lock:
                self._inflight = None
            inflight.set()

    def _fetch_and_store(self) -> None:
        outcome = "error"
        for url in (self.url, *(other for other in self.urls if other != self.url)):
            try:
                keys = parse_jwks(self._fetcher(url, self._timeout, self._max_bytes))
            except JwksError as exc:
                log.warning("jwks fetch failed", extra={"fields": {"url": url, "outcome": exc.outcome}})
                outcome = exc.outcome
                continue
            except Exception:  # a fetcher bug must not take the Check down with it: keep the last good keys
                log.exception("jwks fetch raised", extra={"fields": {"url": url}})
                outcome = "error"
                continue
            self.url = url
            self._stored(keys)
            return
        self._failed(outcome)

    def _stored(self, keys: Mapping[str, Key]) -> None:
        self._failures = 0
        self._next_due = self._clock() + self._ttl
        self._keys = keys
        self._report("ok")

    def _failed(self, outcome: str) -> None:
        # Retry soon with backoff, whether or not old keys remain: they stay in use meanwhile.
        self._failures += 1
        self._next_due = self._clock() + min(self._ttl, 30.0, 0.5 * 2 ** (self._failures - 1))
        self._report(outcome)

    def _report(self, outcome: str) -> None:
        if self._on_fetch is not None:
            try:
                self._on_fetch(outcome, len(self._keys or ()))
            except Exception:  # observing a fetch must never fail the Check that caused it
                log.exception("jwks fetch observer failed")


class JwksRefresher:
    """Loads every pool's keys at start and refreshes them on their TTL, in one daemon thread."""

    def __init__(
        self,
        caches: Sequence[JwksCache],
        *,
        on_ready: Callable[[], None] | None = None,
        max_wait: float = 5.0,
    ) -> None:
        self._caches = tuple(caches)
        self._on_ready = on_ready
        self._max_wait = max_wait
        self._ready_reported = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jwks-refresher", daemon=True)

    @property
    def ready(self) -> bool:
        return all(cache.loaded for cache in self._caches)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def tick(self) -> float:
        """Refresh what is due; returns how long to wait before the next tick."""
        for cache in self._caches:
            if cache.due_in() <= 0:
                cache.refresh()
        if not self._ready_reported and self.ready:
            self._ready_reported = True
            if self._on_ready is not None:
                self._on_ready()
        return min([cache.due_in() for cache in self._caches] + [self._max_wait])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.tick()
            except Exception:  # the refresher must outlive any single failure
                log.exception("jwks refresher tick failed")
                wait = 1.0
            self._stop.wait(max(wait, 0.05))
