"""AUTHZ_WORKERS: `serve` and `serve-http` as several worker processes on one port under a supervisor, run as a
user runs them (subprocesses, the real kernel's SO_REUSEPORT): one scrape sums the workers, a killed worker is
replaced, SIGTERM drains in-flight Checks, and workers never outlive their supervisor."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc
from authz.client import check_request, describe
from tests.authz.test_main import free_port, live_claims, pool_env
from tests.conftest import jwks_document, mint, private_key, public_jwk, wait_for

TRANSPORTS = ["serve", "serve-http"]


class Supervised:
    """`python -m authz COMMAND` with AUTHZ_WORKERS, its JSON log read as it comes."""

    def __init__(self, command: str, jwks_url: str, workers: int = 2, **env: str) -> None:
        self.command = command
        self.port, self.metrics_port = free_port(), free_port()
        addr = "AUTHZ_HTTP_ADDR" if command == "serve-http" else "AUTHZ_ADDR"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_COGNITO_", "AUTHZ_", "PROMETHEUS_"))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "authz", command],
            env={
                **base,
                **pool_env(
                    jwks_url,
                    AUTHZ_WORKERS=str(workers),
                    **{addr: f"127.0.0.1:{self.port}"},
                    AUTHZ_METRICS_ADDR=f"127.0.0.1:{self.metrics_port}",
                    **env,
                ),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.records: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith("{"):
                self.records.append(json.loads(line))

    def logged(self, msg: str) -> list[dict[str, Any]]:
        return [record for record in list(self.records) if record.get("msg") == msg]

    def healthy(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """The sum of name's samples whose labels include these."""
        return sum(
            value
            for (sample, sample_labels), value in self.metrics().items()
            if sample == name and set(labels.items()) <= set(sample_labels)
        )

    def check(self, token: str | None) -> bool:
        """One request on a connection of its own (the kernel picks the worker): allowed or not."""
        if self.command == "serve-http":
            headers = {"Connection": "close", **({"Authorization": f"Bearer {token}"} if token else {})}
            response = requests.get(f"http://127.0.0.1:{self.port}/api/me", headers=headers, timeout=10)
            assert response.status_code in (200, 401), response.status_code
            return response.status_code == 200
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(f"127.0.0.1:{self.port}", options=options) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            return describe(stub.Check(check_request(token=token, path="/api/me"), timeout=10))["allowed"]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code


@contextmanager
def supervised(command: str, jwks_url: str, **kwargs: Any) -> Iterator[Supervised]:
    server = Supervised(command, jwks_url, **kwargs)
    try:
        assert wait_for(server.healthy, timeout=30), "".join(server.lines)
        assert wait_for(lambda: len(server.logged("worker serving")) == 2, timeout=30), "".join(server.lines)
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def worker_pids(server: Supervised) -> set[int]:
    return {record["pid"] for record in server.logged("worker started")} - {
        record["pid"] for record in server.logged("worker ended; starting another")
    }


def alive(pid: int) -> bool:
    """Whether pid is a process that has not exited (a zombie has: its sockets are closed)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped, or being reaped as /proc is read
        return False


@pytest.mark.parametrize("command", TRANSPORTS)
def test_two_workers_answer_on_one_port_and_one_scrape_sums_them(jwks_server, command):
    """Connections spread over both workers; the supervisor's scrape counts every Check of either, and each worker
    holds the token in its own cache (the verified-cache gauge sums to 2)."""
    token = mint(live_claims())
    with supervised(command, jwks_server.url) as server:
        assert len(worker_pids(server)) == 2
        assert all(server.check(token) for _ in range(30))
        assert not server.check(None)
        assert server.metric("authz_decisions_total", result="allow") == 30
        assert server.metric("authz_decisions_total", result="deny") == 1
        assert server.metric("authz_check_duration_seconds_count") == 31
        # Both workers saw the token (30 connections on one of two workers: odds 2 in 2**30), each caching it once.
        assert wait_for(lambda: server.metric("authz_token_cache_entries", cache="verified") == 2, timeout=5)
        assert server.metric("authz_workers_serving") == 2
        assert server.metric("authz_jwks_keys_loaded") == 1  # the fewest any worker holds, not a sum
        assert server.stop() == 0


@pytest.mark.parametrize("command", TRANSPORTS)
def test_a_killed_worker_is_replaced_and_nothing_it_counted_is_lost(jwks_server, command):
    """SIGKILL one worker: the other answers every Check meanwhile, the supervisor starts a new worker, says so
    in its log and its restart counter, and the scrape still counts the dead worker's Checks."""
    token = mint(live_claims())
    with supervised(command, jwks_server.url) as server:
        assert all(server.check(token) for _ in range(20))
        victim = min(worker_pids(server))
        os.kill(victim, signal.SIGKILL)
        # Once the supervisor has reaped it: a killed process's leader is a zombie before its other threads have
        # exited and closed its sockets.
        assert wait_for(lambda: bool(server.logged("worker ended; starting another")), timeout=10)
        assert all(server.check(token) for _ in range(10))
        assert wait_for(lambda: len(server.logged("worker serving")) == 3, timeout=30), "".join(server.lines)
        [ended] = server.logged("worker ended; starting another")
        assert (ended["pid"], ended["ended"]) == (victim, "signal SIGKILL")
        assert len(worker_pids(server)) == 2 and victim not in worker_pids(server)
        assert server.metric("authz_worker_restarts_total", cause="signal") == 1
        assert all(server.check(token) for _ in range(10))
        assert server.metric("authz_decisions_total", result="allow") == 40
        assert server.healthy()
        assert server.stop() == 0


@pytest.mark.parametrize("command", TRANSPORTS)
def test_sigterm_lets_in_flight_checks_finish_then_every_process_exits(jwks_server, command):
    """A Check waiting on a JWKS refetch (a new key, served slowly) when SIGTERM arrives still gets its allow;
    health turns 503 at once; the supervisor exits 0 after its workers, which are gone."""
    with supervised(command, jwks_server.url, AUTHZ_JWKS_COOLDOWN_SECONDS="1") as server:
        pids = worker_pids(server)
        time.sleep(1.2)  # past the refetch cooldown
        rotated = private_key("rotated")
        jwks_server.body = jwks_document(public_jwk(private_key()), public_jwk(rotated, kid="kid-rotated"))
        jwks_server.delay = 2.0
        answers: list[bool] = []
        in_flight = threading.Thread(
            target=lambda: answers.append(server.check(mint(live_claims(), key=rotated, kid="kid-rotated")))
        )
        in_flight.start()
        assert wait_for(lambda: jwks_server.requests >= 3, timeout=5)  # 2 at start, then the refetch
        server.process.send_signal(signal.SIGTERM)
        assert wait_for(lambda: not server.healthy(), timeout=2)
        in_flight.join(timeout=20)
        assert answers == [True]
        assert server.stop() == 0
        assert not any(alive(pid) for pid in pids)
        assert len(server.logged("authz stopped")) == 3  # each worker, then the supervisor


@pytest.mark.parametrize("command", TRANSPORTS)
def test_workers_stop_by_themselves_when_their_supervisor_is_killed(jwks_server, command):
    with supervised(command, jwks_server.url) as server:
        pids = worker_pids(server)
        server.process.kill()
        assert wait_for(lambda: not any(alive(pid) for pid in pids), timeout=20)
        assert len(server.logged("the supervisor is gone; stopping")) == 2


@pytest.mark.parametrize("command", TRANSPORTS)
def test_workers_refuse_a_port_another_server_listens_on(jwks_server, command):
    """SO_REUSEPORT would let the workers join someone else's socket: the supervisor checks first, exit 2."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        addr = "AUTHZ_HTTP_ADDR" if command == "serve-http" else "AUTHZ_ADDR"
        env = pool_env(
            jwks_server.url, AUTHZ_WORKERS="2", AUTHZ_METRICS_ADDR="127.0.0.1:0", **{addr: f"127.0.0.1:{busy}"}
        )
        result = subprocess.run(
            [sys.executable, "-m", "authz", command], env={**_clean_env(), **env}, capture_output=True, text=True
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"authz: cannot start: cannot listen on 127.0.0.1:{busy}")


def test_workers_need_a_port_of_their_own_not_0(jwks_server):
    env = pool_env(jwks_server.url, AUTHZ_WORKERS="2", AUTHZ_ADDR="127.0.0.1:0", AUTHZ_METRICS_ADDR="127.0.0.1:0")
    result = subprocess.run(
        [sys.executable, "-m", "authz", "serve"], env={**_clean_env(), **env}, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "AUTHZ_WORKERS shares one port" in result.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_COGNITO_", "AUTHZ_", "PROMETHEUS_"))}


def test_the_scrape_names_the_route_table_every_worker_has_in_force(jwks_server, tmp_path):
    """authz_routes_info across workers: 1 for the table in force; after an edit both workers reload, the new table
    shows 1 and the old one 0 (no worker has it any more), and a public route of the new table answers at once."""
    table = tmp_path / "routes.yaml"
    table.write_text("routes:\n  - match: {path: /api/health}\n    auth: none\n")
    with supervised(
        "serve-http", jwks_server.url, AUTHZ_ROUTES=str(table), AUTHZ_ROUTES_RELOAD_SECONDS="0.2"
    ) as server:

        def tables() -> dict[str, float]:
            return {
                dict(labels)["sha256"]: value
                for (name, labels), value in server.metrics().items()
                if name == "authz_routes_info"
            }

        [old] = tables()
        assert tables() == {old: 1}
        table.write_text("routes:\n  - match: {path: /api/me}\n    auth: none\n")
        assert wait_for(lambda: len(tables()) == 2 and tables()[old] == 0, timeout=10), tables()
        [new] = set(tables()) - {old}
        assert tables()[new] == 1
        assert server.metric("authz_routes_reloads_total", result="ok") == 2  # one per worker
        assert all(server.check(None) for _ in range(10))  # /api/me is public now, on every worker
        assert server.stop() == 0
