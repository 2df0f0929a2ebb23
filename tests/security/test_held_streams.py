"""A client that reaches the ports and holds connections open: Checks and scrapes that arrive whole still answer.

The gRPC port: Check calls whose request never (or only slowly) arrives cost no thread, so Checks from a well-behaved
client (Envoy) keep their answers; one connection holds at most MAX_STREAMS_PER_CONNECTION calls, and a held call
ends with its connection, which the server closes after AUTHZ_GRPC_CONNECTION_AGE_SECONDS. The metrics port: a
connection must send its request within READ_SECONDS, and connections still reading are bounded, the oldest closed
first, so a scraper's fresh connection is answered however many are held.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import grpc
import pytest
import requests

from authz import metrics_endpoint
from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc
from authz.server import MAX_STREAMS_PER_CONNECTION, run_server
from tests.conftest import FakeClock, JwksServer, settings_for, wait_for
from tests.held_streams import HeldStreams
from tests.security.conftest import VALID_TOKEN, Authz, check_request


def test_calls_held_open_without_their_request_do_not_stop_checks(authz: Authz):
    """Four connections each holding as many Check calls as they may, without their request, and one trickling
    bytes into its calls: complete Checks on another connection are all answered, allow and deny, and health too."""
    port = authz.server.port
    with ExitStack() as held:
        connections = [held.enter_context(HeldStreams("127.0.0.1", port, streams=500)) for _ in range(4)]
        connections.append(held.enter_context(HeldStreams("127.0.0.1", port, streams=50, trickle=0.1)))
        assert sum(connection.opened for connection in connections) > 16, "more calls held than worker threads"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            # A burst of 2,000 new calls can overflow grpc's queue of calls the server has not taken yet (its
            # grpc.server.max_pending_requests, 1,000) for an instant, cancelling a Check that arrives then; once
            # the server has taken them, held calls cost Checks nothing.
            assert wait_for(lambda: _answers(stub), timeout=10.0)
            codes = [stub.Check(check_request(f"Bearer {VALID_TOKEN}"), timeout=2).status.code for _ in range(20)]
            codes += [stub.Check(check_request(), timeout=2).status.code for _ in range(20)]
        assert authz.is_serving()
        assert not any(connection.closed_by_server.is_set() for connection in connections)
    assert codes == [0] * 20 + [grpc.StatusCode.UNAUTHENTICATED.value[0]] * 20


def _answers(stub: external_auth_pb2_grpc.AuthorizationStub) -> bool:
    try:
        stub.Check(check_request(), timeout=2)
    except grpc.RpcError:
        return False
    return True


def test_one_connection_may_hold_a_bounded_number_of_calls(authz: Authz):
    """The server tells every client how many calls one connection may have open, and refuses more."""
    with HeldStreams("127.0.0.1", authz.server.port, streams=MAX_STREAMS_PER_CONNECTION + 100) as held:
        assert held.max_streams == MAX_STREAMS_PER_CONNECTION
        assert held.opened == MAX_STREAMS_PER_CONNECTION


@pytest.fixture(scope="module")
def short_lived_connections() -> Iterator[int]:
    jwks = JwksServer()
    try:
        with run_server(
            settings_for(jwks.url, grpc_connection_age_seconds=1.0), clock=FakeClock(), monotonic=FakeClock(1000.0)
        ) as server:
            yield server.port
    finally:
        jwks.close()


def test_held_calls_end_when_the_server_closes_their_aged_connection(short_lived_connections: int):
    """A connection holding calls open is closed by the server once it is AUTHZ_GRPC_CONNECTION_AGE_SECONDS old
    (plus the grace, never longer than the age): held calls cannot pile up for ever."""
    with HeldStreams("127.0.0.1", short_lived_connections, streams=20) as held:
        assert held.opened == 20
        # Age 1 s (+ grpc's 10 % jitter) and grace 1 s: closed within ~2.2 s; allow a loaded machine some slack.
        assert wait_for(held.closed_by_server.is_set, timeout=10.0)


def _held_metrics_connections(port: int, count: int) -> list[socket.socket]:
    connections = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=5)
        connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line that ends it
        connections.append(connection)
    return connections


def _closed_by_server(connection: socket.socket, timeout: float) -> bool:
    connection.settimeout(timeout)
    try:
        return connection.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_metrics_port_answers_scrapes_while_connections_are_held(authz: Authz):
    """200 connections that never finish their request head hold no thread, and a scrape on a fresh connection is
    answered at once; the held ones are closed by the server (the oldest when too many are open)."""
    port = authz.server.metrics_port
    threads = threading.active_count()
    held = _held_metrics_connections(port, 200)
    try:
        assert threading.active_count() == threads
        started = time.monotonic()
        response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert response.status_code == 200 and "authz_decisions_total" in response.text
        assert time.monotonic() - started < metrics_endpoint.READ_SECONDS
        # Beyond the bound the oldest were closed at once, the rest within the read deadline.
        assert _closed_by_server(held[0], timeout=1.0)
        deadline = metrics_endpoint.READ_SECONDS + 5.0
        assert all(_closed_by_server(connection, timeout=deadline) for connection in held[-10:])
    finally:
        for connection in held:
            connection.close()


def test_metrics_port_refuses_oversized_and_malformed_requests(authz: Authz):
    """A request head over MAX_HEAD_BYTES is dropped without an answer; a malformed request line gets a 400."""
    port = authz.server.metrics_port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * (2 * metrics_endpoint.MAX_HEAD_BYTES))
        assert _closed_by_server(connection, timeout=5.0)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"NONSENSE\r\n\r\n")
        assert connection.recv(1024).startswith(b"HTTP/1.1 400 ")
