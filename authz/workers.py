"""AUTHZ_WORKERS: several server processes on one port under one supervisor, for either transport.

The supervisor (`python -m authz serve` or `serve-http` with AUTHZ_WORKERS above 1) starts that many workers, each
`python -m authz` of the same command in a process of its own with the whole server of run_server: its own
decision, token cache, key caches, revocation cache and route table reloads. A worker binds the authorization
port with SO_REUSEPORT, so the kernel spreads connections over the workers, and binds it only once it has every
pool's keys: a connection the kernel hands a worker is answered with keys. Before any worker starts, the
supervisor makes sure no other socket holds the port (a worker would otherwise join it silently).

The supervisor alone serves AUTHZ_METRICS_ADDR: /metrics adds up the files the workers write (prometheus_client's
multiprocess mode, authz/metrics.py) and /healthz is 200 while at least one worker serves. It restarts a worker
that dies (after RESTART_DELAY_SECONDS, doubling while workers keep dying young), forwards SIGTERM (or SIGINT) as
SIGTERM to every worker, which stops taking connections and lets its in-flight Checks finish within
AUTHZ_SHUTDOWN_GRACE_SECONDS, and exits once they have. A worker whose supervisor is gone stops by itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from authz.config import Settings
from authz.metrics_endpoint import MetricsEndpoint
from authz.server import Transport, addr_port, build_routes, event_loop_thread, refuse_shared_port

log = logging.getLogger("authz.workers")

# A dead worker is started again after this, doubled for each worker of its slot that died within YOUNG_SECONDS of
# its start, up to MAX_RESTART_DELAY_SECONDS: a worker that cannot live does not spin the machine.
RESTART_DELAY_SECONDS = 0.5
MAX_RESTART_DELAY_SECONDS = 30.0
YOUNG_SECONDS = 10.0
# After SIGTERM, workers get the shutdown grace plus this to exit before they are killed.
STOP_MARGIN_SECONDS = 10.0
_READY = b"ready\n"
# A worker that exits with this before it ever served met a configuration problem restarting cannot cure.
EXIT_CONFIG = 2


class WorkerLink:
    """A worker's end of the socket pair its supervisor gave it: tells the supervisor the worker serves, and stops
    the worker when the supervisor is gone (the pair reads end-of-file)."""

    def __init__(self, fd: int, stop: threading.Event) -> None:
        self._socket = socket.socket(fileno=fd)
        self._stop = stop
        self.exit_code = 0
        threading.Thread(target=self._watch, name="authz-supervisor-link", daemon=True).start()

    def ready(self) -> None:
        try:
            self._socket.sendall(_READY)
        except OSError:
            self._stop.set()

    def failed(self, message: str) -> None:
        """The worker cannot serve (its port): it exits with EXIT_CONFIG."""
        log.error("worker cannot serve", extra={"fields": {"error": message}})
        self.exit_code = EXIT_CONFIG
        self._stop.set()

    def _watch(self) -> None:
        while True:
            try:
                if not self._socket.recv(64):
                    break
            except OSError:
                break
        if not self._stop.is_set():
            log.error("the supervisor is gone; stopping")
            self._stop.set()


@dataclass
class _Slot:
    """One of the AUTHZ_WORKERS places and the worker process in it now (None while it waits to restart)."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    link: socket.socket | None = None
    started: float = 0.0
    serving: bool = False
    ever_served: bool = False
    young_deaths: int = 0
    restart_at: float | None = None
    buffer: bytes = field(default=b"", repr=False)


class Supervisor:
    """Runs AUTHZ_WORKERS workers of `command` (serve or serve-http) until `stop` is set; `run` returns the exit
    code. OSError when the port or the metrics port cannot be had, RoutesError when AUTHZ_ROUTES cannot be used."""

    def __init__(self, settings: Settings, transport: Transport, stop: threading.Event) -> None:
        self._settings = settings
        self._transport = transport
        self._stop = stop
        self._slots = [_Slot(index) for index in range(settings.workers)]
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self._metrics_dir = ""
        self.registry = CollectorRegistry()
        self._workers_serving = Gauge(
            "authz_workers_serving",
            "Worker processes serving the authorization port now (AUTHZ_WORKERS are wanted).",
            registry=self.registry,
        )
        self._restarts = Counter(
            "authz_worker_restarts",
            "Workers started again after their process ended without being asked to, by how it ended.",
            ["cause"],
            registry=self.registry,
        )

    def run(self) -> int:
        settings = self._settings
        addr = settings.http_addr if self._transport is Transport.HTTP else settings.addr
        host, port = addr_port(addr)
        if port == 0:
            raise OSError(f"cannot listen on {addr}: AUTHZ_WORKERS shares one port, so it must be given, not 0")
        refuse_shared_port(host, port)
        build_routes(settings)  # the workers would each refuse an unusable table; say it once, here
        self._metrics_dir = tempfile.mkdtemp(prefix="authz-metrics-")
        try:
            MultiProcessCollector(self.registry, path=self._metrics_dir)  # type: ignore[no-untyped-call]
            endpoint = MetricsEndpoint(self.registry, healthy=self._healthy)
            with event_loop_thread() as loop:
                run = asyncio.run_coroutine_threadsafe
                try:
                    run(endpoint.start(*addr_port(settings.metrics_addr)), loop).result(timeout=30)
                except OSError as exc:
                    raise OSError(f"cannot listen on {settings.metrics_addr}: {exc}") from None
                log.info(
                    "authz supervisor started",
                    extra={
                        "fields": {
                            "transport": self._transport.value,
                            "addr": addr,
                            "workers": len(self._slots),
                            "metrics_port": endpoint.port,
                        }
                    },
                )
                try:
                    for slot in self._slots:
                        self._start(slot)
                    return self._supervise()
                finally:
                    self._stop_workers()
                    run(endpoint.close(), loop).result(timeout=30)
                    log.info("authz stopped")
        finally:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _healthy(self) -> bool:
        return not self._stopping and any(slot.serving for slot in self._slots)

    def _start(self, slot: _Slot) -> None:
        ours, theirs = socket.socketpair()
        command = "serve-http" if self._transport is Transport.HTTP else "serve"
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        with theirs:
            slot.process = subprocess.Popen(
                [sys.executable, "-m", "authz", command, "--worker", f"{slot.index}:{theirs.fileno()}"],
                env=env,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        ours.setblocking(False)
        slot.link, slot.started, slot.serving, slot.restart_at, slot.buffer = ours, time.monotonic(), False, None, b""
        self._selector.register(ours, selectors.EVENT_READ, slot)
        log.info("worker started", extra={"fields": {"worker": slot.index, "pid": slot.process.pid}})

    def _supervise(self) -> int:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                self._read(key.data)
            now = time.monotonic()
            for slot in self._slots:
                if slot.process is not None and slot.process.poll() is not None:
                    code = self._ended(slot, slot.process, now)
                    if code is not None:
                        return code
                if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                    self._start(slot)
            self._workers_serving.set(sum(slot.serving for slot in self._slots))
        return 0

    def _read(self, slot: _Slot) -> None:
        if slot.link is None:
            return
        try:
            data = slot.link.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker closed its end: it is ending (poll sees it)
            self._selector.unregister(slot.link)
            slot.link.close()
            slot.link = None
            return
        slot.buffer += data
        if _READY in slot.buffer:
            slot.buffer = b""
            slot.serving = slot.ever_served = True
            pid = slot.process.pid if slot.process is not None else None
            log.info("worker serving", extra={"fields": {"worker": slot.index, "pid": pid}})

    def _ended(self, slot: _Slot, process: subprocess.Popen[bytes], now: float) -> int | None:
        """A worker's process ended unasked: schedule its restart, or return the supervisor's exit code."""
        code, pid = process.returncode, process.pid
        if slot.link is not None:
            self._selector.unregister(slot.link)
            slot.link.close()
            slot.link = None
        slot.process, slot.serving = None, False
        # Its live gauges leave the sums; its counters stay.
        mark_process_dead(pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        cause = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        if code == EXIT_CONFIG and not slot.ever_served:
            log.error(
                "worker could not start; stopping (its own message says why)",
                extra={"fields": {"worker": slot.index, "pid": pid, "ended": cause}},
            )
            return EXIT_CONFIG
        slot.young_deaths = slot.young_deaths + 1 if now - slot.started < YOUNG_SECONDS else 0
        delay = min(MAX_RESTART_DELAY_SECONDS, RESTART_DELAY_SECONDS * 2 ** max(0, slot.young_deaths - 1))
        slot.restart_at = now + delay
        self._restarts.labels("signal" if code < 0 else "exit").inc()
        log.error(
            "worker ended; starting another",
            extra={"fields": {"worker": slot.index, "pid": pid, "ended": cause, "restart_in_seconds": delay}},
        )
        return None

    def _stop_workers(self) -> None:
        """SIGTERM to every worker; each drains its in-flight Checks; those still there after the grace are killed."""
        self._stopping = True
        running = [slot.process for slot in self._slots if slot.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker did not stop in time; killed", extra={"fields": {"pid": process.pid}})
                process.kill()
                process.wait()
        for slot in self._slots:
            if slot.link is not None:
                slot.link.close()
                slot.link = None
            slot.process, slot.serving = None, False
        self._workers_serving.set(0)
        self._selector.close()
