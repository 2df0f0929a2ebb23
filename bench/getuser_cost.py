"""What one GetUser call costs the authz process in CPU, two ways: botocore's lookup and the direct call.

    python -m bench.getuser_cost [--calls 1000] [--rounds 5] [--target both|loopback|emulator]

- `botocore`: botocore_lookup (below), an unsigned boto3 cognito-idp client (one attempt, as the server
  builds it).
- `direct`: authz.getuser.get_user_lookup, one POST through requests' urllib3 pool.

Each way confirms the same active token `--calls` times in a row against a target:
- `loopback`: bench.pool's GetUser stand-in on loopback (what `make bench` configuration h confirms tokens
  against), in this process; it answers "active" at once, so the calls measure the client alone.
- `emulator`: the local Cognito emulator (stack/emulator.py, moto's server) in its own process, with a user signed
  up and signed in there: Cognito's own answer shape, headers and keep-alive behaviour.

The figure is the calling thread's CPU time (time.thread_time) per call, in microseconds, so an in-process server's
thread is never counted; wall time per call is beside it. Ways take turns within each round (their order swapped
every round) and each figure is the median of the rounds, with min and max, so a neighbour's load on a shared
machine falls on both alike. Every call must answer ACTIVE (a way that stopped confirming cannot pass for a fast
one); each way is warmed up first (botocore's client built, connections opened).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from authz.getuser import get_user_lookup
from authz.revocation import REVOKED_ERROR_CODES, Lookup, Status
from bench.pool import POOL_ID, BenchPool

# As the server builds its lookups: AUTHZ_REVOCATION_TIMEOUT_SECONDS' default is 0.5 s, but the emulator on a busy
# 2-core machine can take longer, and a timeout here would abort the run rather than measure anything.
TIMEOUT = 5.0
WORKERS = 4
_WARMUP_CALLS = 100


def botocore_lookup(
    *, endpoint_url: str | None, timeout: float, workers: int = 8, regions: Collection[str] = ()
) -> Lookup:
    """GetUser through boto3, as the server called it before authz/getuser.py (the "before" this bench measures, and
    the tests' second opinion on what Cognito's answers mean): unsigned (the token is the authorization), one
    attempt, against each pool's regional endpoint or `endpoint_url`."""
    clients: dict[str, Any] = {}
    lock = threading.Lock()

    def client_for(region: str) -> Any:
        with lock:
            if region not in clients:
                import boto3
                from botocore import UNSIGNED
                from botocore.config import Config

                config = Config(
                    signature_version=UNSIGNED,
                    connect_timeout=timeout,
                    read_timeout=timeout,
                    retries={"total_max_attempts": 1},
                    max_pool_connections=workers,
                )
                clients[region] = boto3.session.Session().client(
                    "cognito-idp", region_name=region, endpoint_url=endpoint_url, config=config
                )
            return clients[region]

    for region in regions:
        client_for(region)

    def lookup(pool_id: str, token: str) -> Status:
        client = client_for(pool_id.partition("_")[0])
        try:
            client.get_user(AccessToken=token)
        except client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in REVOKED_ERROR_CODES:
                return Status.REVOKED
            raise
        return Status.ACTIVE

    return lookup


WAYS: dict[str, Callable[..., Lookup]] = {"botocore": botocore_lookup, "direct": get_user_lookup}
TARGETS = ("loopback", "emulator")


class LookupFailed(Exception):
    """A way did not answer ACTIVE for an active token, so its timing would mean nothing."""


class Target(NamedTuple):
    """Where the calls go: an endpoint URL, and a pool id and an active token it confirms."""

    url: str
    pool_id: str
    token: str


@contextmanager
def loopback() -> Iterator[Target]:
    pool = BenchPool()
    with pool.serve() as url:
        yield Target(url, POOL_ID, pool.mint(1)[0])


@contextmanager
def emulator() -> Iterator[Target]:
    from stack.cognito import cognito_client, provision, register, sign_in
    from stack.local import DEFAULT_REGION, cognito_emulator, emulator_url
    from stack.processes import free_port

    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="getuser-cost-") as run_dir,
        cognito_emulator(port, Path(run_dir), DEFAULT_REGION),
    ):
        url = emulator_url(port)
        client = cognito_client(DEFAULT_REGION, url)
        pool = provision(client, DEFAULT_REGION)
        email, password = f"cost-{uuid.uuid4().hex[:8]}@cruddur.local", "GetUser-C0st-Passw0rd!"
        register(client, pool.pool_id, pool.client_id, email=email, password=password, name="Cost", handle="cost")
        yield Target(url, pool.pool_id, sign_in(client, pool.client_id, email, password)["AccessToken"])


def _per_call(name: str, lookup: Lookup, target: Target, calls: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of `calls` calls in a row."""
    gc.collect()
    cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(calls):
        try:
            answer = lookup(target.pool_id, target.token)
        except Exception as exc:  # noqa: BLE001 - any failure to answer ends the run, named by its type
            raise LookupFailed(f"{name} raised {type(exc).__name__}") from None
        if answer is not Status.ACTIVE:
            raise LookupFailed(f"{name} answered {answer.value}")
    return (time.thread_time_ns() - cpu) / calls / 1000, (time.perf_counter_ns() - wall) / calls / 1000


def measure_target(target: Target, *, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per way: the median, min and max CPU µs per call over the rounds, and the median wall µs per call."""
    lookups = {name: make(endpoint_url=target.url, timeout=TIMEOUT, workers=WORKERS) for name, make in WAYS.items()}
    for name, lookup in lookups.items():
        _per_call(name, lookup, target, _WARMUP_CALLS)
    cpu: dict[str, list[float]] = {name: [] for name in lookups}
    wall: dict[str, list[float]] = {name: [] for name in lookups}
    order = list(lookups)
    for _ in range(rounds):
        for name in order:
            cpu_us, wall_us = _per_call(name, lookups[name], target, calls)
            cpu[name].append(cpu_us)
            wall[name].append(wall_us)
        order.reverse()  # neither way always runs first, right after the other warmed the caches
    return {
        name: {
            "cpu_us_median": round(statistics.median(cpu[name]), 1),
            "cpu_us_min": round(min(cpu[name]), 1),
            "cpu_us_max": round(max(cpu[name]), 1),
            "wall_us_median": round(statistics.median(wall[name]), 1),
        }
        for name in lookups
    }


def measure(calls: int = 1000, rounds: int = 5, targets: Sequence[str] = TARGETS) -> dict[str, object]:
    if calls < 1 or rounds < 1:
        raise ValueError("need at least 1 call and 1 round")
    starts = {"loopback": loopback, "emulator": emulator}
    result: dict[str, object] = {"calls": calls, "rounds": rounds}
    for name in targets:
        with starts[name]() as target:
            ways = measure_target(target, calls=calls, rounds=rounds)
        ratio = ways["direct"]["cpu_us_median"] / ways["botocore"]["cpu_us_median"]
        result[name] = {**ways, "direct_vs_botocore_cpu": round(ratio, 2)}
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.getuser_cost", description=__doc__.partition("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per way per round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default %(default)s)")
    parser.add_argument("--target", choices=("both", *TARGETS), default="both", help="where to call (default both)")
    args = parser.parse_args(argv)
    targets = TARGETS if args.target == "both" else (args.target,)
    try:
        result = measure(calls=args.calls, rounds=args.rounds, targets=targets)
    except LookupFailed as exc:
        print(f"bench.getuser_cost: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
