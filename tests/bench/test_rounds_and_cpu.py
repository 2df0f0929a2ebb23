"""The bench's rounds and CPU accounting: how a configuration's rounds become its figures, where the number of
rounds comes from, and that /proc's CPU time is summed over a server's whole process tree."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench import proc_cpu
from bench.run import Measurement, main, summarize
from bench.wrk import WrkResult

# Burns about `seconds` of CPU in this process, then signals it is done and sleeps until killed.
_SPIN = """
import sys, time
seconds = float(sys.argv[1])
start = time.process_time()
while time.process_time() - start < seconds:
    pass
print("spun", flush=True)
time.sleep(60)
"""


def _measurement(rps: float, requests: int, rq_5xx: int, cpu: float | None) -> Measurement:
    run = WrkResult(requests=requests, rps=rps, p50_ms=rps / 1000, p99_ms=rps / 100, non_2xx=rq_5xx, socket_errors=0)
    envoy = {"rq_2xx": requests - rq_5xx, "rq_4xx": 0, "rq_5xx": rq_5xx}
    return Measurement(run, envoy, cpu)


def test_summarize_takes_medians_with_min_max_and_sums_failures_over_rounds():
    """wrk's figures and Envoy's counters are the median of the rounds, req/s and CPU per Check have min and max
    beside them, 4xx and 5xx are summed over every round, and each round stays under per_round."""
    rounds = [_measurement(3000.0, 30_000, 0, 200.0), _measurement(1000.0, 10_000, 7, 260.0)]
    rounds.append(_measurement(2000.0, 20_000, 1, 210.0))
    entry = summarize(rounds)
    assert (entry["rps"], entry["rps_min"], entry["rps_max"]) == (2000.0, 1000.0, 3000.0)
    assert entry["requests"] == 20_000 and entry["p50_ms"] == 2.0 and entry["envoy"]["rq_5xx"] == 1
    assert (entry["cpu_us_per_check"], entry["cpu_us_per_check_min"], entry["cpu_us_per_check_max"]) == (
        210.0,
        200.0,
        260.0,
    )
    assert entry["envoy_total"] == {"rq_4xx": 0, "rq_5xx": 8}
    assert [run["rps"] for run in entry["per_round"]] == [3000.0, 1000.0, 2000.0]


def test_summarize_of_counts_picks_a_count_that_happened_and_omits_cpu_where_unmeasured():
    """With an even number of rounds a count's median is the lower middle one, never a half request, and a
    configuration without a Check server has no CPU figure."""
    entry = summarize([_measurement(1000.0, 10_001, 0, None), _measurement(2000.0, 20_000, 0, None)])
    assert entry["requests"] == 10_001 and entry["rps"] == 1500.0
    assert "cpu_us_per_check" not in entry


def test_rounds_come_from_the_option_then_bench_rounds_and_a_bad_value_is_refused(monkeypatch, capsys):
    """--rounds wins over $BENCH_ROUNDS; neither accepts a count below one (refused before anything runs)."""
    monkeypatch.setenv("BENCH_ROUNDS", "0")
    with pytest.raises(SystemExit) as exit_info:
        main(["--smoke", "--rounds", "0"])
    assert exit_info.value.code == 2 and "--rounds" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2 and "BENCH_ROUNDS" in capsys.readouterr().err


def test_cpu_seconds_counts_the_process_tree_live_and_reaped():
    """A parent's figure includes a live child's CPU, and keeps it once the child has ended and been reaped."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            f"child = subprocess.Popen([sys.executable, '-c', {_SPIN!r}, '0.4'], stdout=subprocess.PIPE, text=True)\n"
            "child.stdout.readline()\n"
            "print('child spun', flush=True)\n"
            "sys.stdin.readline()\n"
            "child.kill(); child.wait()\n"
            "print('child reaped', flush=True)\n"
            "sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None and parent.stdin is not None
        assert parent.stdout.readline().strip() == "child spun"
        live = proc_cpu.cpu_seconds(parent.pid)
        assert live >= 0.4
        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "child reaped"
        assert proc_cpu.cpu_seconds(parent.pid) >= live
    finally:
        parent.kill()
        parent.wait()


def test_cpu_seconds_of_an_idle_process_stays_still():
    """A process that sleeps gains (next to) no CPU: the figure is CPU time, not wall time."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        before = proc_cpu.cpu_seconds(sleeper.pid)
        time.sleep(0.3)
        assert proc_cpu.cpu_seconds(sleeper.pid) - before <= 0.02
    finally:
        sleeper.kill()
        sleeper.wait()


def test_machine_busy_time_includes_our_own_cpu():
    """What this process spins is counted in its own CPU and in the machine's busy time alike, so subtracting one
    from the other leaves what the rest of the machine did."""
    machine, own = proc_cpu.machine_busy_seconds(), proc_cpu.own_seconds()
    start = time.process_time()
    while time.process_time() - start < 0.3:
        pass
    # /proc counts CPU in 10 ms ticks, so each reading may be a tick short of the truth: two ticks of slack (a CI run
    # measured 0.2899999 for 0.3 s spun).
    assert proc_cpu.own_seconds() - own >= 0.3 - 0.02
    assert proc_cpu.machine_busy_seconds() - machine >= 0.25
