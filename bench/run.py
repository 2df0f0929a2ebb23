"""`make bench`: what our ext_authz costs next to Envoy's native jwt_authn and next to the Python gRPC floor.

    python -m bench.run [--rounds 3] [--seconds 10] [--connections 32] [--threads 2] [--rss-tokens 100000] [--smoke]

On loopback, each configuration behind a real Envoy (the pinned wheel) answering from a direct_response, loaded
with wrk:
  a. Envoy, no auth                     b. jwt_authn, same JWKS, jwt_cache on     c. jwt_authn, jwt_cache off
  d. our ext_authz, one token repeated  e. our ext_authz, a new token per request  f. constant-reply ext_authz (floor)
  g, h. d and e with AUTHZ_REVOCATION=cognito, against a loopback GetUser that always answers "active" (so
        the figures are authz's own cost of confirming a token: botocore's call, the cache; not Cognito's latency)
  i. constant-reply server in Envoy's HTTP ext_authz mode (bench/http_floor.py, granian: the HTTP floor)
  j, k. d and e with our server on the HTTP transport (`python -m authz serve-http`)
  l, m. d and j with AUTHZ_WORKERS=2
  n, o. g and h with the shared state on (AUTHZ_STATE_URL: a local redis-server, emptied before each run, so o's
        tokens are new to Redis too): the state's cost hot (the local denylist view) and cold (a claim and an
        answer in Redis around each GetUser); Redis's own CPU per Check is reported beside the server's
A neighbour's load on a shared machine lands on some runs and not others, so every configuration runs in
--rounds interleaved rounds (default $BENCH_ROUNDS, else 3: a b c ... k, then again), each run with its own fresh
Envoy and server; a configuration's figure is the median of its rounds, with min and max beside it, and the ratios
are taken from the medians. For d to k the Check server's CPU time per Check (µs, from /proc: its process tree's
CPU over the measured run divided by the requests Envoy answered) is reported too: capacity per core, on any
machine, whatever the neighbours do to req/s. And for every run, how many cores the rest of the machine kept busy
meanwhile (others_cores: the machine's busy time less that of Envoy, the server, wrk and the bench), so a round
that ran beside a neighbour shows as one.

Then the per-token verification cost (ours, raw RS256, the seed's per-call key rebuild), what the route table
costs a Check (bench/route_cost.py) and the authz server's RSS after caching --rss-tokens distinct tokens. Prints
a table and writes bench/results.json. --smoke runs one round, each step for a second at 4 connections with few
tokens, and judges no target: tests/bench/test_bench_smoke.py runs it so the harness cannot rot.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import redis
import requests

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from bench import envoy_variants, proc_cpu, route_cost, verify_cost, wrk
from bench.pool import ISSUER, BenchPool
from stack.local import envoy_command, redis_server, redis_url
from stack.processes import ManagedProcess, Probe, free_ports, grpc_serving, http_ok, rss_mb

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
TARGETS = {
    "hot_vs_floor": 0.95,
    "cold_vs_hot": 0.80,
    "hot_vs_jwt_authn_nocache": 0.40,
    "http_hot_vs_http_floor": 0.85,
    "http_cold_vs_http_hot": 0.70,
    "http_hot_vs_jwt_authn_nocache": 0.60,
}
CONFIGS = {
    "a_no_auth": "none",
    "b_jwt_authn_cache": "jwt_authn",
    "c_jwt_authn_nocache": "jwt_authn_nocache",
    "d_ext_authz_hot": "ext_authz",
    "e_ext_authz_cold": "ext_authz",
    "f_ext_authz_floor": "ext_authz",
    "g_revocation_hot": "ext_authz",
    "h_revocation_cold": "ext_authz",
    "i_http_floor": "ext_authz_http",
    "j_http_hot": "ext_authz_http",
    "k_http_cold": "ext_authz_http",
    "l_grpc_hot_2_workers": "ext_authz",
    "m_http_hot_2_workers": "ext_authz_http",
    "n_state_hot": "ext_authz",
    "o_state_cold": "ext_authz",
}
OURS = ("d_", "e_", "g_", "h_", "l_", "n_", "o_")
OURS_HTTP = ("j_", "k_", "m_")
# Our server with AUTHZ_WORKERS=2 (its CPU is the supervisor's and both workers').
TWO_WORKERS = ("l_", "m_")
WITH_REVOCATION = ("g_", "h_", "n_", "o_")
# With the shared state (AUTHZ_STATE_URL) on the bench's Redis.
WITH_STATE = ("n_", "o_")
# A new token per request: each run reads the round-shared token file (see run_bench).
COLD = ("e_", "h_", "k_", "o_")
# The configurations whose Check server's CPU per Check is measured: authz's and the floors'.
SERVER_CPU = ("d_", "e_", "f_", "g_", "h_", "i_", "j_", "k_", "l_", "m_", "n_", "o_")
# Envoy's own account of a configuration's answers (its admin stats, counted from the measured run only): a 4xx is a
# token jwt_authn or authz refused, a 5xx is Envoy failing closed because a Check errored or overran its 1 s budget.
ENVOY_COUNTERS = {
    "rq_2xx": "http.bench.downstream_rq_2xx",
    "rq_4xx": "http.bench.downstream_rq_4xx",
    "rq_5xx": "http.bench.downstream_rq_5xx",
    "jwt_authn_denied": "http.bench.jwt_authn.denied",
    "ext_authz_denied": "http.bench.ext_authz.denied",
    "ext_authz_error": "http.bench.ext_authz.error",
}


@dataclass(frozen=True)
class Measurement:
    """One configuration's measured run in one round."""

    wrk: wrk.WrkResult
    envoy: dict[str, int]
    cpu_us_per_check: float | None
    # Cores the rest of the machine kept busy, on average, during the measured run: the machine's busy CPU time
    # less that of Envoy, the Check server, wrk and the bench itself (the GetUser stand-in), over the run's wall
    # time. A round where this is high ran beside a neighbour.
    others_cores: float = 0.0
    # With the shared state: Redis's CPU per Check in µs, beside the server's own.
    state_cpu_us_per_check: float | None = None


class Bench:
    def __init__(
        self, args: argparse.Namespace, work: Path, pool: BenchPool, endpoint: str, state: ManagedProcess
    ) -> None:
        """state: the redis-server of the shared-state configurations (WITH_STATE), running."""
        self.args = args
        self.work = work
        self.pool = pool
        self.endpoint = endpoint
        self.state = state
        self.hot_token = pool.mint(1)[0]

    def _process(
        self, name: str, argv: list[str], env: dict[str, str], probe: Probe, ports: tuple[int, ...]
    ) -> ManagedProcess:
        """A child in the bench's work folder; use it as a context manager (started healthy, always stopped)."""
        return ManagedProcess(
            name, argv, env={**os.environ, **env}, run_dir=self.work, ready=probe, ports=ports, cwd=ROOT
        )

    def authz(
        self,
        port: int,
        metrics_port: int,
        *,
        revocation: bool = False,
        http: bool = False,
        workers: int = 1,
        state: bool = False,
    ) -> ManagedProcess:
        """Our server on port: `serve` (gRPC), or with http `serve-http` (Envoy's HTTP mode, healthy once the
        metrics port's /healthz says so), as AUTHZ_WORKERS processes; with state, on the bench's Redis."""
        env = {
            **self.pool.authz_env(self.endpoint),
            "AUTHZ_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "AUTHZ_REVOCATION": "cognito" if revocation else "off",
            "AUTHZ_WORKERS": str(workers),
        }
        if state:
            env["AUTHZ_STATE_URL"] = redis_url(self.state.ports[0])
        if http:
            env["AUTHZ_HTTP_ADDR"] = f"127.0.0.1:{port}"
            argv = [sys.executable, "-m", "authz", "serve-http"]
            probe = http_ok(f"http://127.0.0.1:{metrics_port}/healthz")
        else:
            env["AUTHZ_ADDR"] = f"127.0.0.1:{port}"
            argv = [sys.executable, "-m", "authz", "serve"]
            probe = grpc_serving(f"127.0.0.1:{port}")
        return self._process("authz", argv, env, probe, (port, metrics_port))

    def measure(self, config: str, *, token: str | None = None, tokens_file: Path | None = None) -> Measurement:
        """One measured run of the configuration: wrk's report, Envoy's counters (ENVOY_COUNTERS) for the same run
        and, for a configuration with a Check server (SERVER_CPU), that server's CPU per Check in µs: its
        process tree's CPU time over the measured run (bench/proc_cpu.py) over the requests Envoy answered."""
        variant = CONFIGS[config]
        port, admin_port, authz_port, metrics_port = free_ports(4)
        with ExitStack() as stack:
            server: ManagedProcess | None = None
            workers = 2 if config.startswith(TWO_WORKERS) else 1
            with_state = config.startswith(WITH_STATE)
            if with_state:
                # Nothing left from an earlier run: a cold token is new to Redis as to the server.
                flush = redis.Redis(host="127.0.0.1", port=self.state.ports[0], socket_timeout=5)
                flush.flushdb()
                flush.close()
            if config.startswith(OURS):
                server = self.authz(
                    authz_port,
                    metrics_port,
                    revocation=config.startswith(WITH_REVOCATION),
                    workers=workers,
                    state=with_state,
                )
            elif config.startswith(OURS_HTTP):
                server = self.authz(authz_port, metrics_port, http=True, workers=workers)
            elif config.startswith("i_"):
                server = self._process(
                    "http_floor",
                    [
                        sys.executable,
                        "-m",
                        "bench.http_floor",
                        "--addr",
                        f"127.0.0.1:{authz_port}",
                        "--health-addr",
                        f"127.0.0.1:{metrics_port}",
                    ],
                    {},
                    http_ok(f"http://127.0.0.1:{metrics_port}/healthz"),
                    (authz_port, metrics_port),
                )
            elif config.startswith("f_"):
                server = self._process(
                    "floor",
                    [sys.executable, "-m", "bench.floor", "--addr", f"127.0.0.1:{authz_port}"],
                    {},
                    grpc_serving(f"127.0.0.1:{authz_port}"),
                    (authz_port,),
                )
            if server is not None:
                stack.enter_context(server)
            document = envoy_variants.render(
                variant,
                port=port,
                admin_port=admin_port,
                jwks=self.pool.jwks,
                issuer=ISSUER,
                authz_port=authz_port,
                authz_health_port=metrics_port,
            )
            config_path = self.work / f"envoy-{config}.json"
            config_path.write_text(json.dumps(document))
            envoy = stack.enter_context(
                self._process(
                    "envoy",
                    envoy_command(config_path, log_level="error"),
                    {},
                    http_ok(f"http://127.0.0.1:{admin_port}/ready"),
                    (port, admin_port),
                )
            )
            url = f"http://127.0.0.1:{port}/"
            admin = f"http://127.0.0.1:{admin_port}"
            common = {"connections": self.args.connections, "threads": self.args.threads, "script_dir": self.work}
            if tokens_file is None:
                # Warm-up: connections, caches, the JIT-free Python's first-call costs.
                wrk.run(url, seconds=1, token=token, **common)
                requests.post(f"{admin}/reset_counters", timeout=5).raise_for_status()
            pid = server.pid if server is not None and config.startswith(SERVER_CPU) else None
            state_pid = self.state.pid if with_state else None
            ours = [
                process.pid
                for process in (server, envoy, self.state if with_state else None)
                if process is not None and process.pid is not None
            ]
            cpu_before = proc_cpu.cpu_seconds(pid) if pid is not None else 0.0
            state_before = proc_cpu.cpu_seconds(state_pid) if state_pid is not None else 0.0
            machine_before, ours_before = proc_cpu.machine_busy_seconds(), _ours_seconds(ours)
            started = time.monotonic()
            result = wrk.run(url, seconds=self.args.seconds, token=token, tokens_file=tokens_file, **common)
            cpu_used = proc_cpu.cpu_seconds(pid) - cpu_before if pid is not None else 0.0
            state_used = proc_cpu.cpu_seconds(state_pid) - state_before if state_pid is not None else 0.0
            others = proc_cpu.machine_busy_seconds() - machine_before - (_ours_seconds(ours) - ours_before)
            others_cores = round(max(0.0, others) / (time.monotonic() - started), 2)
            counters = envoy_counters(admin)
            answered = counters["rq_2xx"] + counters["rq_4xx"] + counters["rq_5xx"]
            cpu_us = round(cpu_used * 1e6 / answered, 1) if pid is not None and answered else None
            state_us = round(state_used * 1e6 / answered, 1) if state_pid is not None and answered else None
            return Measurement(result, counters, cpu_us, others_cores, state_us)

    def rss_after(self, count: int) -> float:
        """RSS (MiB) of an authz server that has verified and cached `count` distinct tokens."""
        tokens = self.pool.mint(count)
        port, metrics_port = free_ports(2)
        with self.authz(port, metrics_port) as process:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)

                def check(token: str) -> bool:
                    request = external_auth_pb2.CheckRequest()
                    request.attributes.request.http.headers["authorization"] = f"Bearer {token}"
                    request.attributes.request.http.path = "/"
                    return stub.Check(request, timeout=30).status.code == 0

                with ThreadPoolExecutor(8) as executor:
                    allowed = sum(executor.map(check, tokens, chunksize=64))
            if allowed != count:
                raise RuntimeError(f"only {allowed} of {count} distinct tokens were allowed")
            assert process.pid is not None, "the with statement started it"
            return round(rss_mb(process.pid), 1)


def _ours_seconds(pids: list[int]) -> float:
    """CPU seconds of the processes a run is made of: those trees, and the bench with its reaped children (wrk)."""
    return proc_cpu.own_seconds() + sum(proc_cpu.cpu_seconds(pid) for pid in pids)


def envoy_counters(admin_url: str) -> dict[str, int]:
    """ENVOY_COUNTERS as Envoy counts them now (0 for one it has not created, such as jwt_authn's without it)."""
    stats = requests.get(f"{admin_url}/stats?format=json&type=Counters", timeout=5).json()["stats"]
    values = {stat["name"]: stat["value"] for stat in stats if "name" in stat}
    return {key: int(values.get(name, 0)) for key, name in ENVOY_COUNTERS.items()}


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else 0.0


def _median(values: list[Any]) -> Any:
    """The median of a configuration's rounds: for counts the lower middle one (a count that happened), so a
    relation every round holds (2xx >= requests) holds for the medians too."""
    if all(isinstance(value, int) for value in values):
        return statistics.median_low(values)
    return round(statistics.median(values), 3)


def summarize(rounds: list[Measurement]) -> dict[str, Any]:
    """A configuration's entry in results.json from its rounds: wrk's figures and Envoy's counters as the median of
    the rounds (the keys one run used to write), req/s min and max beside them, the CPU per Check (median, min,
    max) where measured, 4xx and 5xx summed over every round (a failure in any round stays visible), and each
    round's own figures under per_round."""
    runs = [asdict(measurement.wrk) for measurement in rounds]
    entry: dict[str, Any] = {key: _median([run[key] for run in runs]) for key in runs[0]}
    entry["envoy"] = {key: _median([m.envoy[key] for m in rounds]) for key in rounds[0].envoy}
    entry["rps_min"] = min(run["rps"] for run in runs)
    entry["rps_max"] = max(run["rps"] for run in runs)
    cpu = [m.cpu_us_per_check for m in rounds if m.cpu_us_per_check is not None]
    if cpu:
        entry["cpu_us_per_check"] = _median(cpu)
        entry["cpu_us_per_check_min"] = min(cpu)
        entry["cpu_us_per_check_max"] = max(cpu)
    state_cpu = [m.state_cpu_us_per_check for m in rounds if m.state_cpu_us_per_check is not None]
    if state_cpu:
        entry["state_cpu_us_per_check"] = _median(state_cpu)
    entry["envoy_total"] = {key: sum(m.envoy[key] for m in rounds) for key in ("rq_4xx", "rq_5xx")}
    entry["others_cores"] = _median([m.others_cores for m in rounds])
    entry["others_cores_max"] = max(m.others_cores for m in rounds)
    entry["per_round"] = [
        {key: run[key] for key in ("requests", "rps", "p50_ms", "p99_ms")}
        | {
            "rq_4xx": m.envoy["rq_4xx"],
            "rq_5xx": m.envoy["rq_5xx"],
            "cpu_us_per_check": m.cpu_us_per_check,
            "others_cores": m.others_cores,
        }
        for run, m in zip(runs, rounds, strict=True)
    ]
    return entry


def run_bench(args: argparse.Namespace) -> dict:
    if not wrk.available():
        raise SystemExit("bench: wrk is not installed (make bench installs it: apt-get install wrk)")
    if not proc_cpu.available():
        raise SystemExit("bench: no /proc here; the CPU per Check is read from /proc/<pid>/stat (Linux only)")
    pool = BenchPool()
    results: dict = {
        "seconds": args.seconds,
        "connections": args.connections,
        "wrk_threads": args.threads,
        "rounds": args.rounds,
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as work_dir,
        pool.serve() as endpoint,
        redis_server(free_ports(1)[0], Path(work_dir)) as state,
    ):
        work = Path(work_dir)
        bench = Bench(args, work, pool, endpoint, state)
        measured: dict[str, list[Measurement]] = {config: [] for config in CONFIGS}
        get_user_calls: dict[str, list[int]] = {config: [] for config in CONFIGS}
        # The cold configurations (COLD) read one token file, shared by every round: each of their runs starts a
        # fresh authz process (measure() starts one per run), so a token in it was never seen by the server that
        # answers it, in any round, and minting (seconds of both cores) stays out of the rounds but for a top-up.
        tokens_file = work / "tokens.txt"
        tokens_file.write_text("")
        cold_count = 0
        mint_seconds = 0.0
        for round_number in range(1, args.rounds + 1):
            for config in CONFIGS:
                load: dict[str, Any]
                if config.startswith(COLD):
                    # Enough distinct tokens that none repeats within a run: the fastest hot run so far of the
                    # same transport (d before e and h, j before k in every round) bounds a cold one; a later,
                    # faster round gets more appended.
                    hot = "j_http_hot" if config.startswith(OURS_HTTP) else "d_ext_authz_hot"
                    hot_rps = max(m.wrk.rps for m in measured[hot])
                    needed = max(500, int(hot_rps * args.seconds * 1.2))
                    if needed > cold_count:
                        started = time.monotonic()
                        with tokens_file.open("a") as tokens:
                            tokens.write("\n".join(pool.mint(needed - cold_count)) + "\n")
                        mint_seconds += time.monotonic() - started
                        cold_count = needed
                    load = {"tokens_file": tokens_file}
                else:
                    load = {"token": None if config == "a_no_auth" else bench.hot_token}
                calls_before = pool.get_user_calls
                measurement = bench.measure(config, **load)
                measured[config].append(measurement)
                get_user_calls[config].append(pool.get_user_calls - calls_before)
                cpu = measurement.cpu_us_per_check
                print(
                    f"bench: round {round_number}/{args.rounds}: {config}: {measurement.wrk.rps:.0f} req/s"
                    + (f", {cpu:.0f} us CPU per Check" if cpu is not None else "")
                    + f" (others kept {measurement.others_cores:.2f} cores busy)",
                    flush=True,
                )
        results["cold_tokens"] = cold_count
        results["cold_tokens_mint_seconds"] = round(mint_seconds, 1)
        results["cold_tokens_repeated"] = any(
            m.wrk.requests > cold_count for config in CONFIGS if config.startswith(COLD) for m in measured[config]
        )
        results["configs"] = {name: summarize(measured[name]) for name in sorted(measured)}
        # GetUser calls per configuration (median of the rounds): one per distinct token per AUTHZ_REVOCATION_TTL,
        # none without the mode.
        results["get_user_calls"] = {name: _median(calls) for name, calls in get_user_calls.items()}
        results["cpu_us_per_check"] = {
            name: entry["cpu_us_per_check"] for name, entry in results["configs"].items() if "cpu_us_per_check" in entry
        }
        costs = verify_cost.measure(tokens=200 if args.smoke else 2000, rounds=1 if args.smoke else 5)
        costs |= route_cost.measure(checks=500 if args.smoke else 20_000, rounds=1 if args.smoke else 5)
        results.update({key: round(value, 1) for key, value in costs.items()})
        results["rss_tokens"] = args.rss_tokens
        results["rss_mb_100k" if args.rss_tokens == 100_000 else "rss_mb"] = bench.rss_after(args.rss_tokens)
    # Ratios of medians over the same rounds: every configuration ran once in each.
    rps = {name: entry["rps"] for name, entry in results["configs"].items()}
    results["ratios"] = {
        "hot_vs_floor": _ratio(rps["d_ext_authz_hot"], rps["f_ext_authz_floor"]),
        "cold_vs_hot": _ratio(rps["e_ext_authz_cold"], rps["d_ext_authz_hot"]),
        "hot_vs_jwt_authn_nocache": _ratio(rps["d_ext_authz_hot"], rps["c_jwt_authn_nocache"]),
        "hot_vs_jwt_authn_cache": _ratio(rps["d_ext_authz_hot"], rps["b_jwt_authn_cache"]),
        "verify_ours_vs_floor": _ratio(results["verify_us_ours"], results["verify_us_floor"]),
        "revocation_hot_vs_hot": _ratio(rps["g_revocation_hot"], rps["d_ext_authz_hot"]),
        "revocation_cold_vs_cold": _ratio(rps["h_revocation_cold"], rps["e_ext_authz_cold"]),
        "http_hot_vs_http_floor": _ratio(rps["j_http_hot"], rps["i_http_floor"]),
        "http_cold_vs_http_hot": _ratio(rps["k_http_cold"], rps["j_http_hot"]),
        "http_hot_vs_jwt_authn_nocache": _ratio(rps["j_http_hot"], rps["c_jwt_authn_nocache"]),
        "http_floor_vs_grpc_floor": _ratio(rps["i_http_floor"], rps["f_ext_authz_floor"]),
        "grpc_hot_2_workers_vs_hot": _ratio(rps["l_grpc_hot_2_workers"], rps["d_ext_authz_hot"]),
        "http_hot_2_workers_vs_http_hot": _ratio(rps["m_http_hot_2_workers"], rps["j_http_hot"]),
        "state_hot_vs_revocation_hot": _ratio(rps["n_state_hot"], rps["g_revocation_hot"]),
        "state_cold_vs_revocation_cold": _ratio(rps["o_state_cold"], rps["h_revocation_cold"]),
    }
    return results


def table(results: dict) -> str:
    rounds = results["rounds"]
    lines = [
        f"median of {rounds} interleaved round{'s' if rounds != 1 else ''}; 4xx and 5xx summed over all rounds; "
        "others: cores the rest of the machine kept busy",
        f"{'configuration':<24}{'req/s':>8}{'min-max':>14}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/Check':>14}"
        f"{'4xx':>7}{'5xx':>7}{'others':>8}",
    ]
    for name, run in results["configs"].items():
        cpu = run.get("cpu_us_per_check")
        spread = f"{run['rps_min']:.0f}-{run['rps_max']:.0f}"
        cpu_text = f"{cpu:.0f}" if cpu is not None else "-"
        lines.append(
            f"{name:<24}{run['rps']:>8.0f}{spread:>14}{run['p50_ms']:>9.2f}{run['p99_ms']:>9.2f}{cpu_text:>14}"
            f"{run['envoy_total']['rq_4xx']:>7}{run['envoy_total']['rq_5xx']:>7}{run['others_cores']:>8.2f}"
        )
    for name, run in results["configs"].items():
        if "state_cpu_us_per_check" in run:
            lines.append(f"{name + ': Redis':<24}{'':>8}{'':>14}{'':>9}{'':>9}{run['state_cpu_us_per_check']:>14.0f}")
    lines.append("")
    for name, value in results["ratios"].items():
        target = TARGETS.get(name)
        lines.append(f"{name:<32}{value:>8.3f}" + (f"   (target >= {target})" if target else ""))
    lines.append(
        f"{'verify us: ours/floor/seed':<28}{results['verify_us_ours']:>8.1f} / {results['verify_us_floor']:.1f} / "
        f"{results['verify_us_seed']:.1f}   (target ours <= 1.5 x floor)"
    )
    lines.append(
        f"{'check us: context/table':<28}{results['check_us_context_extensions']:>8.1f} / "
        f"{results['check_us_table_seen']:.1f} (seen) / {results['check_us_table_new_path']:.1f} (new path)"
    )
    lines.append(
        f"{'match us, 50 rules':<28}{results['match_us_50_rules_new_path']:>8.1f} / "
        f"{results['match_us_50_rules_new_path_one_segment']:.1f} (all under one first segment)"
    )
    rss_key = "rss_mb_100k" if "rss_mb_100k" in results else "rss_mb"
    lines.append(
        f"{'rss MiB after ' + str(results['rss_tokens']) + ' tokens':<28}{results[rss_key]:>8.1f}   (target <= 150 at 100k)"
    )
    return "\n".join(lines)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rss-tokens", type=int, default=100_000)
    parser.add_argument(
        "--smoke", action="store_true", help="a second per step, 4 connections, few tokens; no thresholds"
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=None,
        help="interleaved rounds of every configuration (default: $BENCH_ROUNDS, else 3; --smoke: 1)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        try:
            args.rounds = 1 if args.smoke else _positive(os.environ.get("BENCH_ROUNDS") or "3")
        except argparse.ArgumentTypeError as exc:
            parser.error(f"BENCH_ROUNDS: {exc}")
    if args.smoke:
        # Four requests in flight: fewer than the Checks authz confirms with Cognito at once (half of
        # AUTHZ_GRPC_WORKERS, 8), so no Check queues for a worker or skips its GetUser, and none can overrun Envoy's
        # 1 s budget. The smoke then holds "every new token is looked up, no request fails" by construction; the
        # overload of 32 connections is for `make bench` to measure, not for a test to judge.
        args.seconds, args.rss_tokens, args.connections = 1.0, 500, 4
    results = run_bench(args)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
