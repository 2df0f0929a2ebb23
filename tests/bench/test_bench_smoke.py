"""The bench harness in smoke mode: every configuration runs through a real Envoy and wrk, so `make bench` cannot
rot. No figure is judged here; performance is measured by `make bench`, never asserted in a test."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.run import CONFIGS, SERVER_CPU, main


def test_smoke_bench_measures_every_configuration_and_writes_results(tmp_path: Path):
    """A smoke run loads every configuration (both transports, one worker and two) once (one round) without a single
    failed request, measures the Check servers' CPU per Check, the three verification costs and the RSS, and writes results.json with every ratio
    the README reports."""
    out = tmp_path / "results.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["rounds"] == 1
    assert set(results["configs"]) == set(CONFIGS)
    for name, run in results["configs"].items():
        envoy = run["envoy"]
        assert run["requests"] > 0 and run["rps"] > 0 and run["socket_errors"] == 0, (name, run)
        # One round: the median is that round, and so are min and max.
        assert run["rps_min"] == run["rps"] == run["rps_max"] and len(run["per_round"]) == 1, (name, run)
        assert run["envoy_total"] == {"rq_4xx": envoy["rq_4xx"], "rq_5xx": envoy["rq_5xx"]}, (name, run)
        # The rest of the machine's load beside the run: cores, so between none and all of them.
        assert 0 <= run["others_cores"] <= (os.cpu_count() or 1), (name, run)
        # No token was refused: one the verifier or jwt_authn turned down would be a 4xx here.
        assert envoy["rq_4xx"] == envoy["jwt_authn_denied"] == envoy["ext_authz_denied"] == 0, (name, envoy)
        # Every request Envoy answered was a 200: the smoke keeps fewer requests in flight than authz confirms at
        # once, so no Check queues or overruns Envoy's 1 s budget (a 5xx would be Envoy failing closed).
        assert envoy["rq_2xx"] >= run["requests"] and envoy["rq_5xx"] == run["non_2xx"] == 0, (name, run)
    assert set(results["ratios"]) >= {
        "hot_vs_floor",
        "cold_vs_hot",
        "hot_vs_jwt_authn_nocache",
        "hot_vs_jwt_authn_cache",
        "revocation_hot_vs_hot",
        "revocation_cold_vs_cold",
        "http_hot_vs_http_floor",
        "http_cold_vs_http_hot",
        "http_hot_vs_jwt_authn_nocache",
        "http_floor_vs_grpc_floor",
        "grpc_hot_2_workers_vs_hot",
        "http_hot_2_workers_vs_http_hot",
        "state_hot_vs_revocation_hot",
        "state_cold_vs_revocation_cold",
    }
    # g and h really confirm tokens: the repeated token once (its answer is cached for the TTL), each new token
    # once (none is over the bound of calls in flight, so none goes unasked); with the mode off (d, e, j, k) Cognito
    # is never called.
    calls = results["get_user_calls"]
    assert 1 <= calls["g_revocation_hot"] <= 2
    assert calls["h_revocation_cold"] >= results["configs"]["h_revocation_cold"]["requests"] > 0
    # With the shared state too (n, o): Redis was emptied before each run, so each token is still asked once, and
    # Redis's own CPU is measured beside the server's (a hot run may cost it less than a clock tick: zero).
    assert 1 <= calls["n_state_hot"] <= 2
    assert calls["o_state_cold"] >= results["configs"]["o_state_cold"]["requests"] > 0
    assert {name for name, run in results["configs"].items() if "state_cpu_us_per_check" in run} == {
        "n_state_hot",
        "o_state_cold",
    }
    assert all(results["configs"][name]["state_cpu_us_per_check"] >= 0 for name in ("n_state_hot", "o_state_cold"))
    assert calls["d_ext_authz_hot"] == calls["e_ext_authz_cold"] == calls["j_http_hot"] == calls["k_http_cold"] == 0
    # CPU per Check for every configuration with a Check server, and only those: positive (each Check costs a Python
    # server well over the 10 ms clock tick spread over a second's requests) and no more than every core could have
    # spent over the run (a sum over the wrong processes, or a wrong unit, would break one of the two).
    cpu = results["cpu_us_per_check"]
    assert set(cpu) == {name for name in CONFIGS if name.startswith(SERVER_CPU)}
    for name, value in cpu.items():
        answered = sum(results["configs"][name]["envoy"][key] for key in ("rq_2xx", "rq_4xx", "rq_5xx"))
        assert 0 < value * answered <= (results["seconds"] + 1) * (os.cpu_count() or 1) * 1e6, (name, value)
        assert results["configs"][name]["cpu_us_per_check"] == value
    assert all(results[key] > 0 for key in ("verify_us_ours", "verify_us_floor", "verify_us_seed"))
    assert results["rss_mb"] > 0
