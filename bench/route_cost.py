"""What the route table costs a Check in-process, in microseconds: a cached token's whole decision with its rules
from context_extensions, from a 50-rule table whose last rule decides (the request seen before, and a path never
seen), and the table's matching alone for a path never seen (rules under other first segments, which the table
skips, and all 50 under the request's own first segment, which it must try in turn).

    python -m bench.route_cost [--checks 20000] [--rounds 5]

The authorizer is built by authz.server.build_authorizer as the server builds it (production settings, metrics,
the pool's keys loaded), with AUTHZ_ROUTES pointing at a generated table of 50 rules: 49 segment prefixes with
methods and hosts that never fit the measured requests, then the one that does (table_text). Every measured Check must be
allowed (a way that stopped allowing cannot pass for a fast one). Timing is time.perf_counter_ns around a loop,
after a warm-up, as the median of the rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from authz.authorizer import RequestFacts
from authz.config import Settings, make_pool
from authz.metrics import Metrics
from authz.routes import load_table
from authz.server import build_authorizer
from bench.pool import CLIENT_ID, POOL_ID, BenchPool

RULES = 50


def table_text(rules: int = RULES, *, shared_segment: bool = False) -> str:
    """A table whose last rule is the one the measured requests fit. With shared_segment every rule is under /api,
    as the measured paths are, so none can be skipped by its first segment: the longest scan a Check can make."""
    lines = ["default: {auth: required}", "routes:"]
    under = "/api" if shared_segment else ""
    for index in range(rules - 1):
        lines.append(f"  - match: {{prefix: {under}/svc{index:02d}, methods: [GET, POST], hosts: ['*.example.com']}}")
        lines.append("    groups: [admins]")
    lines.append("  - match: {prefix: /api}")
    lines.append("    token_use: access")
    return "\n".join(lines) + "\n"


class CheckFailed(Exception):
    """A measured Check was not allowed, so its timing would mean nothing."""


def measure(checks: int = 20_000, rounds: int = 5) -> dict[str, float]:
    """Microseconds per Check (and per match) for each way, the median of `rounds` rounds of `checks` each."""
    pool = BenchPool()
    token = pool.mint(1)[0]
    with tempfile.TemporaryDirectory(prefix="route-cost-") as work:
        routes_file = Path(work) / "routes.yaml"
        routes_file.write_text(table_text())
        shared_file = Path(work) / "shared.yaml"
        shared_file.write_text(table_text(shared_segment=True))
        settings = Settings(
            pools=(make_pool(POOL_ID),), client_ids=frozenset({CLIENT_ID}), routes_file=str(routes_file)
        )
        parts = build_authorizer(
            settings, metrics=Metrics(), fetcher=lambda url, timeout, max_bytes: pool.jwks.encode()
        )
        for cache in parts.key_caches:
            cache.refresh()
        authorizer = parts.authorizer
        authorization = (f"Bearer {token}",)
        context = RequestFacts("GET", "api.internal", "/api/me", authorization, {"auth": "required"})
        seen = RequestFacts("GET", "api.internal", "/api/me", authorization, {})
        fresh = [RequestFacts("GET", "api.internal", f"/api/items/{n}", authorization, {}) for n in range(checks)]
        table = load_table(routes_file)
        if len(table.rules) != RULES or table.rule_for("GET", "api.internal", "/api/me") is not table.rules[-1]:
            raise CheckFailed("the measured requests must be decided by the table's last rule")

        def decide(requests: Sequence[RequestFacts]) -> Callable[[], None]:
            def run() -> None:
                for facts in requests:
                    if not authorizer.decide(facts).allowed:
                        raise CheckFailed(f"not allowed: {facts.path}")

            return run

        def match_fresh(file: Path) -> Callable[[], None]:
            base = load_table(file)

            def run() -> None:
                scan = dataclasses.replace(base)  # the same rules, nothing remembered
                for facts in fresh:
                    if scan.rule_for(facts.method, facts.host, facts.path) is not scan.rules[-1]:
                        raise CheckFailed(f"not decided by the last rule: {facts.path}")

            return run

        ways: dict[str, Callable[[], None]] = {
            "check_us_context_extensions": decide([context] * checks),
            "check_us_table_seen": decide([seen] * checks),
            "check_us_table_new_path": decide(fresh),
            "match_us_50_rules_new_path": match_fresh(routes_file),
            "match_us_50_rules_new_path_one_segment": match_fresh(shared_file),
        }
        for run in ways.values():
            run()  # warm-up (and the check that every Check is allowed)
        samples: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):
            for name, run in ways.items():
                started = time.perf_counter_ns()
                run()
                samples[name].append((time.perf_counter_ns() - started) / checks / 1000)
        parts.revocation.close()
    return {name: round(statistics.median(values), 2) for name, values in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.route_cost", description=__doc__.partition("\n\n")[0])
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        result = measure(checks=args.checks, rounds=args.rounds)
    except CheckFailed as exc:
        print(f"bench.route_cost: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
