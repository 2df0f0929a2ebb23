"""Faults under load through a real Envoy: authz killed, restarted, frozen, held open by a hostile client, and one
of two replicas lost."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from bench.load import Report, Request, run
from stack.local import LocalStack
from tests.held_streams import HeldStreams
from tests.integration.cruddur_api import User, bearer, envoy_stat, resign

LOAD_KIND = "x-load-kind"


def _plan(user: User) -> list[Request]:
    """Valid callers interleaved with requests that must never reach the backend."""
    expired = resign(user.access_token, exp=int(time.time()) - 3600)
    head, payload, signature = user.access_token.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}AAAA"
    kinds = {
        "valid": (bearer(user.access_token), user.sub),
        "expired": (bearer(expired), None),
        "tampered": (bearer(tampered), None),
        "anonymous": ({}, None),
        "spoofed": ({"x-user-sub": user.sub, "x-user-name": "spoofed"}, None),
    }
    return [Request("/api/me", {**headers, LOAD_KIND: kind}, caller, kind) for kind, (headers, caller) in kinds.items()]


def _allowed_only_for_callers(request: Request, status: int, body: bytes) -> bool:
    # The recording upstream answers every request 200 {}: an allow is wrong only for a request that must be denied.
    return (status == 200 and request.caller is None) or (status in (401, 403) and request.caller is not None)


def _load_around(base_url: str, plan: list[Request], fault: Callable[[], None], *, after: float, **options) -> Report:
    """Load for a second, then fault() (which may take a while), then `after` more seconds of load."""
    stop = threading.Event()
    result: dict[str, Report] = {}
    loader = threading.Thread(
        target=lambda: result.setdefault("report", run(base_url, plan, seconds=120, stop=stop, **options))
    )
    loader.start()
    try:
        time.sleep(1.0)
        fault()
        time.sleep(after)
    finally:
        stop.set()
        loader.join()
    return result["report"]


def test_authz_killed_under_load_lets_nothing_unauthenticated_through(recording_envoy, stack: LocalStack, user: User):
    """While authz is SIGKILLed and restarted under load, only valid callers reach the backend, with their own sub,
    and service resumes without restarting Envoy."""
    proxy, upstream = recording_envoy
    upstream.requests.clear()
    authz = stack.authz()
    envoy_pid = proxy.process("envoy").pid
    restarted: list[float] = []

    def crash_and_restart() -> None:
        authz.kill()
        time.sleep(1.0)
        authz.start()
        restarted.append(time.monotonic())

    report = _load_around(
        proxy.envoy_url, _plan(user), crash_and_restart, after=1.5, workers=6, verdict=_allowed_only_for_callers
    )
    assert report.total > 100
    assert report.wrong == []
    assert report.statuses()[503] > 0, "the load never saw authz down"
    received = upstream.requests
    assert received, "no valid request reached the backend"
    assert {request.headers[LOAD_KIND] for request in received} == {"valid"}
    assert {request.headers.get("x-user-sub") for request in received} == {user.sub}
    assert "spoofed" not in {request.headers.get("x-user-name") for request in received}
    back = report.between(restarted[0] + 0.5, float("inf"))
    assert {outcome.status for outcome in back if outcome.kind == "valid"} == {200}
    assert proxy.process("envoy").pid == envoy_pid


def test_frozen_authz_times_out_to_503_and_never_allows(recording_envoy, stack: LocalStack, user: User):
    """An authz server that stops answering (SIGSTOP) costs each Check the 1 s timeout and a 503, lets nothing
    through, and serves again as soon as it resumes."""
    proxy, upstream = recording_envoy
    upstream.requests.clear()
    pid = stack.authz().pid
    assert pid is not None
    resumed: list[float] = []

    def freeze_and_resume() -> None:
        os.killpg(pid, signal.SIGSTOP)
        try:
            time.sleep(3.0)
        finally:
            os.killpg(pid, signal.SIGCONT)
            resumed.append(time.monotonic())

    report = _load_around(
        proxy.envoy_url, _plan(user), freeze_and_resume, after=2.0, workers=6, verdict=_allowed_only_for_callers
    )
    assert report.wrong == []
    frozen = report.between(resumed[0] - 2.0, resumed[0])
    # Every request got Envoy's 503 (status_on_error after its Check timeout); a hang would have shown as the
    # load client's own 10 s timeout (status 0).
    assert frozen and {outcome.status for outcome in frozen} == {503}
    assert {request.headers[LOAD_KIND] for request in upstream.requests} == {"valid"}
    back = report.between(resumed[0] + 1.0, float("inf"))
    assert {outcome.status for outcome in back if outcome.kind == "valid"} == {200}


@pytest.fixture
def replicas(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Envoy in front of two authz replicas (and the shared backend and Cognito of the main stack)."""
    pair = LocalStack(
        ports=stack.ports.beside(authz_replicas=2), run_dir=tmp_path_factory.mktemp("replicas"), envoy_concurrency=1
    )
    pair.use_cognito(stack.cognito_env)
    try:
        pair.start_authz(0)
        pair.start_authz(1)
        pair.start_envoy()
        yield pair
    finally:
        pair.stop()


def test_second_replica_takes_over_when_one_is_killed(replicas: LocalStack, user: User):
    """With two replicas, killing one under load causes no wrong decision and next to no errors, because Envoy
    retries a refused Check on the other replica and ejects the dead one, which then serves everything."""
    killed: list[float] = []

    def kill_one() -> None:
        replicas.authz(0).kill()
        killed.append(time.monotonic())

    report = _load_around(replicas.envoy_url, _plan(user), kill_one, after=3.0, workers=6)
    assert report.wrong == []
    assert set(report.statuses()) <= {200, 401, 503}
    after_switch = report.between(killed[0] + 1.0, float("inf"))
    assert len(after_switch) > 50
    assert {outcome.status for outcome in after_switch if outcome.kind == "valid"} == {200}
    errors = [outcome for outcome in report.outcomes if outcome.status == 503]
    print(f"switch: {len(errors)} of {report.total} requests answered 503 after one replica was killed")
    # Measured: 0-3 in about 4,000 (1,640 with neither mechanism). A few may still race the ejection.
    assert len(errors) <= report.total // 100
    # Both mechanisms did their part: refused Checks were retried elsewhere, and the dead replica was ejected.
    assert envoy_stat(replicas, "cluster.authz.upstream_rq_retry_success") > 0
    assert envoy_stat(replicas, "cluster.authz.outlier_detection.ejections_enforced_total") >= 1


def test_calls_held_open_at_the_authz_port_do_not_stop_checks_from_envoy(
    recording_envoy, stack: LocalStack, user: User
):
    """While a client that reached the authz port holds hundreds of Check calls open without their request (and
    trickles bytes into more), every request through Envoy is still answered as usual: 200 for the valid caller,
    401 for the rest, never a 503."""
    proxy, upstream = recording_envoy
    upstream.requests.clear()
    host, port = "127.0.0.1", stack.ports.authz[0]
    with ExitStack() as held:
        connections = [held.enter_context(HeldStreams(host, port, streams=100)) for _ in range(4)]
        connections.append(held.enter_context(HeldStreams(host, port, streams=100, trickle=0.2)))
        # More calls held than the server has threads of any kind (AUTHZ_GRPC_WORKERS, 16).
        assert sum(connection.opened for connection in connections) >= 400
        report = run(proxy.envoy_url, _plan(user), seconds=3.0, workers=6, verdict=_allowed_only_for_callers)
        assert not any(connection.closed_by_server.is_set() for connection in connections[:4]), "nothing was held"
    assert report.total > 50
    assert report.wrong == []
    assert set(report.statuses()) == {200, 401}
    assert {request.headers[LOAD_KIND] for request in upstream.requests} == {"valid"}
