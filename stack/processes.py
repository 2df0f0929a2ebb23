"""Child processes of the local stack: start with a log and a pid file, wait until healthy, stop for sure.

Each child runs in its own process group, so stopping it also stops whatever it forked (gunicorn's workers).
A pid file records the child's pid and start time; a run after a crash stops the process only when both still
match, so a reused pid never gets killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Probe = Callable[[], bool]


class StartupError(RuntimeError):
    """A child exited or never became healthy; the message names its log."""


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        run_dir: Path,
        ready: Probe,
        ports: Sequence[int] = (),
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.ready = ready
        self.ports = tuple(ports)
        self.cwd = cwd
        self.log_path = run_dir / f"{name}.log"
        self.pid_path = run_dir / f"{name}.pid"
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int | None:
        return self._process.poll() if self._process else None

    def start(self, *, timeout: float = 60.0) -> None:
        """Start the process and return once its probe says healthy; raise StartupError otherwise."""
        if self.running():
            raise RuntimeError(f"{self.name} is already running")
        # Otherwise the readiness probe would be answered by whoever holds the port, not by our child.
        for port in self.ports:
            if port_in_use(port):
                raise StartupError(f"{self.name}: port {port} is already in use by another program; stop it first")
        with open(self.log_path, "ab") as log:
            # The child keeps its own copy of the descriptor; ours can close.
            self._process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self._process.pid}\n{_start_time(self._process.pid)}\n")
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.exit_code()
            if code is not None:
                raise StartupError(f"{self.name} exited with {code}; see {self.log_path}")
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise StartupError(f"{self.name} not healthy after {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.1)

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM to the whole process group, SIGKILL after grace seconds."""
        self._signal_and_reap(signal.SIGTERM, grace)

    def kill(self) -> None:
        """Die at once, as a crash would."""
        self._signal_and_reap(signal.SIGKILL, 10.0)

    def _signal_and_reap(self, sig: signal.Signals, grace: float) -> None:
        process = self._process
        if process is not None and process.poll() is not None:
            # The leader is gone already; what it forked may live on in its group.
            _signal_group(process.pid, signal.SIGKILL)
        elif process is not None:
            _signal_group(process.pid, sig)
            if not _exited(process.pid, grace):
                _signal_group(process.pid, signal.SIGKILL)
            # The leader is a zombie until reaped, which keeps its group id from being reused: stragglers
            # (gunicorn's workers) are killed by group while the id is still ours, then the leader is reaped.
            _exited(process.pid, 10.0)
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        self.pid_path.unlink(missing_ok=True)


def _exited(pid: int, timeout: float) -> bool:
    """Wait up to timeout for our child pid to exit, without reaping it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def stop_stale(run_dir: Path) -> list[str]:
    """Stop children a crashed run left behind (they hold the ports); returns their names."""
    stopped = []
    for pid_path in run_dir.glob("*.pid"):
        try:
            pid_text, started = pid_path.read_text().split()
            pid = int(pid_text)
            if _start_time(pid) == started:
                _signal_group(pid, signal.SIGTERM)
                _wait_gone(pid, 10.0)
                _signal_group(pid, signal.SIGKILL)
                stopped.append(pid_path.stem)
        except (ValueError, OSError):
            pass
        pid_path.unlink(missing_ok=True)
    return stopped


def _start_time(pid: int) -> str:
    """When the process started, in clock ticks since boot: with the pid, it names one process for good."""
    return _stat_fields(pid)[19]


def _stat_fields(pid: int) -> list[str]:
    # The fields after the command name, which is in parentheses and may itself hold spaces or parentheses.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # No such group any more, or one we may not signal (not ours): either way nothing of ours is left to stop.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def rss_mb(pid: int) -> float:
    """The process's resident memory in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def port_in_use(port: int) -> bool:
    """Something already accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """count distinct loopback ports; every probe socket stays open until all are chosen, so none repeats."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def grpc_serving(addr: str) -> Probe:
    """grpc.health.v1 reports SERVING for the whole server."""

    def probe() -> bool:
        try:
            with grpc.insecure_channel(addr) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    return probe


def http_ok(url: str) -> Probe:
    """GET url answers 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    return probe
