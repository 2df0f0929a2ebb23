"""Envoy's gRPC ext_authz as envoy/bootstrap.py renders it, against a scripted gRPC authz server on the real Envoy:
how long Envoy waits for one Check."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import requests
from grpc_health.v1 import health, health_pb2_grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz._proto.google.rpc import status_pb2
from envoy import bootstrap
from stack.local import envoy_process
from stack.processes import free_ports
from tests.integration.cruddur_api import RecordingUpstream


class SlowAuthz(external_auth_pb2_grpc.AuthorizationServicer):
    """Allows every Check after `delay` seconds, counting the Checks."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.checks = 0

    def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method's name
        self.checks += 1
        time.sleep(self.delay)
        response = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0))
        response.ok_response.SetInParent()
        return response


@dataclass
class GrpcModeProxy:
    url: str
    authz: SlowAuthz


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcModeProxy]:
    run_dir = tmp_path_factory.mktemp("grpc-mode")
    authz = SlowAuthz()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authz, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    authz_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    upstream = RecordingUpstream()
    envoy_port, admin_port = free_ports(2)
    topology = bootstrap.local(
        envoy_port=envoy_port, admin_port=admin_port, authz_ports=(authz_port,), backend_port=upstream.port
    )
    envoy = envoy_process(
        "envoy", bootstrap.render(topology), run_dir, envoy_port=envoy_port, admin_port=admin_port, env={}
    )
    try:
        with envoy:
            yield GrpcModeProxy(f"http://127.0.0.1:{envoy_port}", authz)
    finally:
        server.stop(0)
        upstream.close()


@pytest.mark.parametrize("delay", [0.3, 0.7])
def test_a_slow_check_is_waited_for_up_to_the_timeout_and_asked_once(proxy: GrpcModeProxy, delay: float):
    """A Check answered well inside the 1 s timeout (a cold token: a GetUser call, a JWKS refetch) decides the
    request, and is not asked again: no per-try timeout cuts it short."""
    proxy.authz.delay, proxy.authz.checks = delay, 0
    answer = requests.get(proxy.url + "/api/me", timeout=10)
    assert answer.status_code == 200
    assert proxy.authz.checks == 1


def test_a_check_slower_than_the_timeout_is_a_503(proxy: GrpcModeProxy):
    """Past AUTHZ_TIMEOUT Envoy gives up: STATUS_ON_ERROR, and the upstream is not called."""
    proxy.authz.delay = bootstrap.AUTHZ_TIMEOUT.total_seconds() + 0.3
    started = time.monotonic()
    answer = requests.get(proxy.url + "/api/me", timeout=10)
    assert answer.status_code == bootstrap.STATUS_ON_ERROR
    assert time.monotonic() - started < bootstrap.AUTHZ_TIMEOUT.total_seconds() + 0.3
