"""One real authz server per test module, a canary that must never be called, and raw Check plumbing.

The server runs on port 0 with a frozen wall clock (tests.conftest.NOW) and a frozen monotonic clock, so the
JWKS cooldown never elapses by itself: a test that wants an unknown kid to cause a refetch moves `monotonic`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from authz.server import RunningServer, run_server
from tests.conftest import FakeClock, JwksServer, LoopbackHttp, mint, settings_for, wait_for

AttributeContext = attribute_context_pb2.AttributeContext
CheckRequest = external_auth_pb2.CheckRequest
CheckResponse = external_auth_pb2.CheckResponse
# The one token every module treats as the known-good caller.
VALID_TOKEN = mint()


class Canary(LoopbackHttp):
    """An HTTP server on loopback that counts every request: tokens point here, and nothing may ever call it."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_HEAD = _record  # noqa: N815 - http.server's method names

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)
        self.url = f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Authz:
    """A running server and what a test needs to drive it and to watch its side effects."""

    server: RunningServer
    stub: external_auth_pb2_grpc.AuthorizationStub
    health: health_pb2_grpc.HealthStub
    jwks: JwksServer
    canary: Canary
    monotonic: FakeClock

    def check(self, request: CheckRequest) -> CheckResponse:
        return self.stub.Check(request, timeout=10)

    def is_serving(self) -> bool:
        status = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        return status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    server = Canary()
    yield server
    server.close()


@pytest.fixture(scope="module")
def authz(canary: Canary) -> Iterator[Authz]:
    jwks = JwksServer()
    monotonic = FakeClock(1000.0)
    try:
        with run_server(settings_for(jwks.url), clock=FakeClock(), monotonic=monotonic) as server:
            assert wait_for(lambda: server.refresher.ready), "the JWKS never loaded"
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                authz = Authz(
                    server=server,
                    stub=external_auth_pb2_grpc.AuthorizationStub(channel),
                    health=health_pb2_grpc.HealthStub(channel),
                    jwks=jwks,
                    canary=canary,
                    monotonic=monotonic,
                )
                assert wait_for(authz.is_serving), "health never reported SERVING"
                yield authz
    finally:
        jwks.close()


def check_request(
    authorization: str | None = None,
    *,
    path: str = "/api/me",
    headers: Mapping[str, str] | None = None,
    raw_headers: Sequence[tuple[str, str | bytes]] | None = None,
    context: Mapping[str, str] | None = None,
) -> CheckRequest:
    """A CheckRequest as Envoy builds it: the headers map, or (raw_headers) the repeated header_map instead."""
    http = AttributeContext.HttpRequest(method="GET", path=path)
    if raw_headers is not None:
        for name, value in raw_headers:
            entry = (
                base_pb2.HeaderValue(key=name, raw_value=value)
                if isinstance(value, bytes)
                else base_pb2.HeaderValue(key=name, value=value)
            )
            http.header_map.headers.append(entry)
    else:
        all_headers = {":path": path, ":method": "GET", **(headers or {})}
        if authorization is not None:
            all_headers["authorization"] = authorization
        http.headers.update(all_headers)
    return CheckRequest(
        attributes=AttributeContext(request=AttributeContext.Request(http=http), context_extensions=dict(context or {}))
    )


def body_of(response: CheckResponse) -> dict[str, Any]:
    return json.loads(response.denied_response.body)


def response_headers(response: CheckResponse) -> dict[str, str]:
    options = response.denied_response.headers if response.status.code else response.ok_response.headers
    return {option.header.key: option.header.value for option in options}
