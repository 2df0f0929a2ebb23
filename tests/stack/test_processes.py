"""The local stack's process supervision: what `make run` relies on to start, stop and recover after a crash."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.processes import ManagedProcess, StartupError, free_port, port_in_use, stop_stale
from tests.conftest import wait_for

# A server that listens on the port in argv[1] and forks a grandchild, like gunicorn's workers.
LISTENER = """
import socket, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[2], "w").write(str(child.pid))
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _listener(tmp_path: Path, name: str = "server") -> tuple[ManagedProcess, int, Path]:
    port = free_port()
    grandchild_file = tmp_path / f"{name}.grandchild"
    process = ManagedProcess(
        name,
        [sys.executable, "-c", LISTENER, str(port), str(grandchild_file)],
        env={},
        run_dir=tmp_path,
        ready=lambda: port_in_use(port),
        ports=(port,),
    )
    return process, port, grandchild_file


@pytest.fixture
def cleanup() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in started:
        process.kill()


def test_start_waits_until_ready_and_stop_ends_the_whole_group(tmp_path: Path, cleanup):
    """start() returns once the probe passes; stop() ends the child and what it forked, and frees the port."""
    process, port, grandchild_file = _listener(tmp_path)
    cleanup.append(process)
    process.start(timeout=20)
    assert process.running() and port_in_use(port)
    assert (tmp_path / "server.pid").exists()
    grandchild = int(grandchild_file.read_text())
    process.stop()
    assert not process.running()
    assert wait_for(lambda: not _alive(grandchild))
    assert not port_in_use(port)
    assert not (tmp_path / "server.pid").exists()


def test_a_busy_port_is_reported_not_mistaken_for_our_child(tmp_path: Path, cleanup):
    """If another program holds the port, start() fails naming the port instead of trusting that program's answers."""
    process, port, _ = _listener(tmp_path)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        with pytest.raises(StartupError, match=f"port {port} is already in use"):
            process.start(timeout=5)
        assert not process.running()
    finally:
        squatter.close()


def test_a_child_that_exits_during_start_up_is_reported_with_its_log(tmp_path: Path):
    """A child that dies before it is healthy raises StartupError with its exit code and log path."""
    process = ManagedProcess(
        "broken",
        [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
        env={},
        run_dir=tmp_path,
        ready=lambda: False,
    )
    with pytest.raises(StartupError, match=r"broken exited with 3; see .*broken\.log"):
        process.start(timeout=10)
    assert "boom" in (tmp_path / "broken.log").read_text()


def test_stop_stale_stops_children_of_a_crashed_run(tmp_path: Path, cleanup):
    """After the runner itself was killed, the next run's stop_stale() stops its orphans and frees their ports."""
    process, port, grandchild_file = _listener(tmp_path)
    cleanup.append(process)
    process.start(timeout=20)
    grandchild = int(grandchild_file.read_text())
    # The runner "crashes": nothing calls stop(); only the pid file is left for the next run.
    assert stop_stale(tmp_path) == ["server"]
    assert wait_for(lambda: not port_in_use(port))
    assert wait_for(lambda: not _alive(grandchild))
    assert not list(tmp_path.glob("*.pid"))


def test_stop_stale_leaves_an_unrelated_process_with_a_reused_pid_alone(tmp_path: Path):
    """A pid file whose pid now belongs to another process (another start time) is discarded without signalling it,
    even when that process runs the same program."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        started = Path(f"/proc/{bystander.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (tmp_path / "authz.pid").write_text(f"{bystander.pid}\n{int(started) - 1}\n")
        assert stop_stale(tmp_path) == []
        time.sleep(0.2)
        assert bystander.poll() is None
        assert not (tmp_path / "authz.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()
