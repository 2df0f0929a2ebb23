"""A closed-loop HTTP load through Envoy that judges every answer, for the fault tests and the soak.

Each worker thread keeps one keep-alive connection and sends requests from a shared plan; every request knows
what the right answer is (allow with a given caller, or deny), so a run counts wrong decisions, not just errors.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    """One request and the decision it must get: `caller` is the sub an allow must carry, None means deny."""

    path: str
    headers: dict[str, str]
    caller: str | None
    kind: str


@dataclass(frozen=True)
class Outcome:
    kind: str
    status: int  # 0: no HTTP answer (connection refused or reset)
    at: float  # monotonic time the answer came
    latency: float
    wrong: bool


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def wrong(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.wrong]

    def statuses(self) -> Counter[int]:
        return Counter(outcome.status for outcome in self.outcomes)

    def between(self, start: float, end: float) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if start <= outcome.at < end]

    def summary(self) -> dict[str, object]:
        latencies = sorted(outcome.latency for outcome in self.outcomes) or [0.0]
        duration = (self.outcomes[-1].at - self.outcomes[0].at) if len(self.outcomes) > 1 else 0.0
        return {
            "requests": self.total,
            "rps": round(self.total / duration, 1) if duration else 0.0,
            "statuses": dict(sorted(self.statuses().items())),
            "wrong_decisions": len(self.wrong),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        }


def judge(request: Request, status: int, body: bytes) -> bool:
    """True when the answer is a wrong decision. Unavailable (503, no answer) is an error, not a wrong decision."""
    if status == 200:
        if request.caller is None:
            return True
        try:
            return json.loads(body).get("sub") != request.caller
        except (ValueError, AttributeError):
            return True
    if status in (401, 403):
        return request.caller is not None
    return False


def run(
    base_url: str,
    plan: Sequence[Request],
    *,
    seconds: float,
    workers: int = 8,
    verdict: Callable[[Request, int, bytes], bool] = judge,
    stop: threading.Event | None = None,
    max_requests: int | None = None,
) -> Report:
    """Send plan's requests round-robin from `workers` threads for `seconds` (or until stop is set, or until
    max_requests have been sent)."""
    target = urlsplit(base_url)
    host = target.hostname
    if host is None:
        raise ValueError(f"expected a URL such as http://127.0.0.1:8080, got {base_url!r}")
    next_index = itertools.count()
    report = Report()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    stop = stop or threading.Event()

    def worker() -> None:
        connection = http.client.HTTPConnection(host, target.port, timeout=10)
        outcomes: list[Outcome] = []
        while time.monotonic() < deadline and not stop.is_set():
            index = next(next_index)
            if max_requests is not None and index >= max_requests:
                break
            request = plan[index % len(plan)]
            started = time.monotonic()
            try:
                connection.request("GET", request.path, headers=request.headers)
                response = connection.getresponse()
                body = response.read()
                status = response.status
                if response.getheader("connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException):
                connection.close()
                status, body = 0, b""
                time.sleep(0.01)
            now = time.monotonic()
            outcomes.append(Outcome(request.kind, status, now, now - started, verdict(request, status, body)))
        connection.close()
        with lock:
            report.outcomes.extend(outcomes)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.outcomes.sort(key=lambda outcome: outcome.at)
    return report
