"""A stand-in for Cognito's GetUser under load: slow for exactly the tokens a test picks, each until released.

tests.conftest.ScriptedLookup holds every call on one gate; revocation under load needs calls that finish one at
a time, in the order the test chooses, while other tokens are answered at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from authz.revocation import Status


class HeldLookup:
    """Answers per token (a Status, or an exception to raise), records each call in order, and holds the calls of
    held tokens until the test releases them (release_all at teardown, so no worker thread outlives its test)."""

    def __init__(
        self,
        answer: Status | BaseException = Status.ACTIVE,
        *,
        answers: dict[str, Status | BaseException] | None = None,
        held: Iterable[str] = (),
    ) -> None:
        self.answer = answer
        self.answers = dict(answers or {})
        self._calls: list[str] = []
        self._gates: dict[str, threading.Event] = {}
        self._released_all = False
        self._lock = threading.Lock()
        self._called = threading.Condition(self._lock)
        self.hold(*held)

    def hold(self, *tokens: str) -> None:
        """Hold each future call of these tokens until release()."""
        with self._lock:
            for token in tokens:
                gate = self._gates.setdefault(token, threading.Event())
                if self._released_all:
                    gate.set()

    def release(self, *tokens: str) -> None:
        with self._lock:
            for token in tokens:
                self._gates[token].set()

    def release_all(self) -> None:
        with self._lock:
            self._released_all = True
            for gate in self._gates.values():
                gate.set()

    def __call__(self, pool_id: str, token: str) -> Status:
        with self._lock:
            self._calls.append(token)
            gate = self._gates.get(token)
            self._called.notify_all()
        if gate is not None:
            gate.wait(timeout=30)
        answer = self.answers.get(token, self.answer)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def tokens(self) -> list[str]:
        """The tokens asked about, in the order their calls started."""
        with self._lock:
            return list(self._calls)

    def asked(self, token: str) -> int:
        """How many calls this token has had."""
        with self._lock:
            return self._calls.count(token)

    def wait_asked(self, token: str, times: int = 1, timeout: float = 5.0) -> bool:
        """Whether the token has had `times` calls, waiting up to timeout seconds of real time for them."""
        with self._called:
            return self._called.wait_for(lambda: self._calls.count(token) >= times, timeout=timeout)

    def wait_calls(self, count: int, timeout: float = 5.0) -> bool:
        """Whether `count` calls have started, waiting up to timeout seconds of real time for them."""
        with self._called:
            return self._called.wait_for(lambda: len(self._calls) >= count, timeout=timeout)
