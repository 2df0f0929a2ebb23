"""`make soak`: a bounded load through the whole stack that checks every decision and the authz server's memory.

    python -m bench.soak [--seconds 180] [--distinct 20000] [--cache-size 5000] [--workers 8]

Starts its own stack on free ports (moto, backend, authz with AUTHZ_CACHE_SIZE=--cache-size, Envoy), signs up a
few users, mints --distinct valid tokens with the emulator's key, then runs three mixes in turn, each for a third
of the time: hot (a few tokens repeated, plus anonymous and invalid requests), cold (every request a token not
seen for a while, far more tokens than the cache holds), and mixed. Every answer is judged: an allow must carry
the token's own caller (the backend echoes the sub it got from Envoy), an invalid or missing token must be denied.
The authz server's RSS is sampled throughout. Exit 0 only with zero wrong decisions, no errors, and an RSS that
stopped growing once the cache was full.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.emulator import EmulatorSigner
from bench.load import Report, Request, run
from stack.cognito import cognito_client_for, register, sign_in, user_sub
from stack.local import LocalStack, Ports, running_stack
from stack.processes import rss_mb

USERS = 4
PASSWORD = "Soak-Passw0rd!"
# Once the cache is full, memory may still move a little (allocator, gRPC buffers), never keep climbing: in
# thousands of requests after the fill a leak of a kilobyte or so per request exceeds this.
PLATEAU_SLACK_MB = 4.0


@dataclass
class RssSampler:
    pid: int
    interval: float = 0.25
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def now_mb(self) -> float:
        return rss_mb(self.pid)

    def _sample(self) -> None:
        while not self._stop.is_set():
            # The process may be gone (OSError) or a zombie without VmRSS (RuntimeError): that sample is skipped.
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append((time.monotonic(), self.now_mb()))
            self._stop.wait(self.interval)

    def peak_between(self, start: float, end: float) -> float:
        return max((mb for at, mb in self.samples if start <= at <= end), default=0.0)


def _users(stack: LocalStack) -> list[tuple[str, str]]:
    """(sub, access token) of a few users signed up and confirmed on the emulator."""
    env = stack.cognito_env
    client = cognito_client_for(env)
    users = []
    for _ in range(USERS):
        email = f"soak-{uuid.uuid4().hex[:8]}@cruddur.local"
        register(
            client,
            env["AWS_COGNITO_USER_POOLS_ID"],
            env["AWS_COGNITO_CLIENT_ID"],
            email=email,
            password=PASSWORD,
            name="Soak",
            handle=email.split("@")[0],
        )
        token = sign_in(client, env["AWS_COGNITO_CLIENT_ID"], email, PASSWORD)["AccessToken"]
        sub = user_sub(client, token)
        users.append((sub, token))
    return users


def _me(token: str | None, caller: str | None, kind: str) -> Request:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Request("/api/me", headers, caller, kind)


def _plans(users: list[tuple[str, str]], distinct: int, cache_size: int) -> dict[str, list[Request]]:
    """The fill plan (twice the cache in distinct tokens, each sent once) and the judged mixes, whose distinct
    tokens are all new: a leak per distinct token or per request shows after the fill, not hidden inside it."""
    signer = EmulatorSigner()
    hot = [_me(token, sub, "hot") for sub, token in users]
    sub, token = users[0]
    invalid = [
        _me(token[:-6] + "AAAAAA", None, "tampered"),
        _me(signer.resign(token, client_id="not-our-client"), None, "other-client"),
        _me(None, None, "anonymous"),
        Request("/api/me", {"x-user-sub": sub}, None, "spoofed"),
    ]
    # Distinct rejected tokens too, more than the rejected-verdict cache holds.
    expired = [
        _me(minted, None, "expired")
        for minted in signer.distinct(token, max(50, distinct // 4), exp=int(time.time()) - 60)
    ]

    def fresh(count: int, kind: str) -> list[Request]:
        per_user = max(1, count // len(users))
        minted = [list(signer.distinct(user_token, per_user)) for _, user_token in users]
        # Interleaved, so consecutive requests are different callers.
        return [
            _me(minted[i % len(users)][i // len(users)], users[i % len(users)][0], kind)
            for i in range(per_user * len(users))
        ]

    mixed = []
    for i, request in enumerate(fresh(distinct // 2, "mixed")):
        mixed.append(request)
        if i % 2 == 0:
            mixed.append(hot[i % len(hot)])
        if i % 3 == 0:
            mixed.append(expired[i % len(expired)] if i % 2 else invalid[i % len(invalid)])
    return {
        "fill": fresh(2 * cache_size, "fill"),
        "hot": hot * 5 + invalid,
        "cold": fresh(distinct, "cold"),
        "mixed": mixed,
    }


def _cache_entries(metrics_url: str) -> dict[str, float]:
    """authz_token_cache_entries by cache, from the server's Prometheus endpoint."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    entries = {}
    for line in text.splitlines():
        if line.startswith("authz_token_cache_entries{"):
            labels, value = line.rsplit(" ", 1)
            entries[labels.split('"')[1]] = float(value)
    return entries


def soak(*, seconds: float, distinct: int, cache_size: int, workers: int, run_dir: Path) -> dict[str, Any]:
    with running_stack(
        Ports.free(),
        run_dir,
        envoy_concurrency=1,
        authz_env={"AUTHZ_CACHE_SIZE": str(cache_size), "AUTHZ_LOG_LEVEL": "WARNING"},
    ) as stack:
        users = _users(stack)
        started = time.monotonic()
        plans = _plans(users, distinct, cache_size)
        results: dict[str, Any] = {
            "cache_size": cache_size,
            "tokens_minted": sum(len(plans[name]) for name in ("fill", "cold")) + len(plans["mixed"]),
            "mint_seconds": round(time.monotonic() - started, 1),
        }
        reports: dict[str, Report] = {}
        authz_pid = stack.authz().pid
        assert authz_pid is not None, "running_stack yields only once every part is started"
        with RssSampler(authz_pid) as rss:
            results["rss_mb_start"] = round(rss.now_mb(), 1)
            fill = plans.pop("fill")
            reports["fill"] = run(stack.envoy_url, fill, seconds=600, workers=workers, max_requests=len(fill))
            results["fill"] = reports["fill"].summary()
            # From here on the cache is full: memory must stay where it is.
            results["rss_mb_after_fill"] = baseline = round(rss.now_mb(), 1)
            for name, plan in plans.items():
                phase_start = time.monotonic()
                reports[name] = run(stack.envoy_url, plan, seconds=seconds / len(plans), workers=workers)
                results[name] = {
                    **reports[name].summary(),
                    "rss_mb_peak": round(rss.peak_between(phase_start, time.monotonic()), 1),
                }
            results["rss_mb_end"] = round(rss.now_mb(), 1)
        results["cache_entries"] = _cache_entries(stack.metrics_url())
    judged = sum(reports[name].total for name in plans)
    results["rss_growth_after_fill_mb"] = round(results["rss_mb_end"] - baseline, 1)
    results["rss_growth_kb_per_1000_requests"] = round(results["rss_growth_after_fill_mb"] * 1024 / (judged / 1000), 2)
    results["wrong_decisions"] = sum(len(report.wrong) for report in reports.values())
    results["errors"] = sum(
        count for report in reports.values() for status, count in report.statuses().items() if status not in (200, 401)
    )
    results["cold_requests_exceed_cache"] = reports["cold"].total > cache_size
    results["cache_bounded"] = results["cache_entries"].get("verified", 0) <= cache_size and results[
        "cache_entries"
    ].get("rejected", 0) <= (cache_size // 10 or cache_size)
    results["ok"] = (
        results["cache_bounded"]
        and results["wrong_decisions"] == 0
        and results["errors"] == 0
        and results["rss_growth_after_fill_mb"] <= PLATEAU_SLACK_MB
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--distinct", type=int, default=20_000, help="distinct valid tokens minted for the load")
    parser.add_argument("--cache-size", type=int, default=5_000, help="AUTHZ_CACHE_SIZE of the soaked server")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as run_dir:
        results = soak(
            seconds=args.seconds,
            distinct=args.distinct,
            cache_size=args.cache_size,
            workers=args.workers,
            run_dir=Path(run_dir),
        )
    print(json.dumps(results, indent=2))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
