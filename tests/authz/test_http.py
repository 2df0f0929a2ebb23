"""The HTTP transport (`serve-http`, authz/http.py) on a real server, asked as Envoy's HTTP ext_authz asks: the
original method, path and Host, with the Authorization and x-request-id headers. What comes back is what Envoy
passes on: an allow's identity headers and the ones to remove, a deny's status, challenge and JSON body."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

import identity_headers
from authz.http import HEADERS_TO_REMOVE
from authz.server import RunningServer, Transport, run_server
from stack.processes import free_port
from tests.conftest import CLIENT_ID, POOL_ID, FakeClock, JwksServer, access_claims, mint, settings_for, wait_for

ROUTES = """\
routes:
  - match: {path: /api/health}
    auth: none
  - match: {path: /api/activities/home}
    auth: optional
  - match: {prefix: /api/admin}
    groups: [admins]
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    jwks = JwksServer()
    routes = tmp_path_factory.mktemp("http") / "routes.yaml"
    routes.write_text(ROUTES)
    settings = settings_for(jwks.url, http_addr=f"127.0.0.1:{free_port()}", routes_file=str(routes))
    try:
        with run_server(settings, clock=FakeClock(), transport=Transport.HTTP) as server:
            assert wait_for(lambda: server.refresher.ready)
            yield server
    finally:
        jwks.close()


def ask(
    server: RunningServer, path: str = "/api/me", *, token: str | None = None, headers: dict[str, Any] | None = None
) -> requests.Response:
    sent = {"Host": "api.example.com", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return requests.get(f"http://127.0.0.1:{server.port}{path}", headers=sent, timeout=5, allow_redirects=False)


def raw(server: RunningServer, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(request)
        return connection.recv(65_536)


def test_an_allow_is_200_with_the_identity_headers_and_the_ones_to_remove(served):
    """A valid token: 200, each identity header with its value, and x-envoy-auth-headers-to-remove naming the ones
    the caller has no value for (here groups, and the identity provider a pool's own user has none of), so Envoy
    takes a client's copy off the request."""
    reply = ask(served, token=mint())
    assert reply.status_code == 200 and reply.content == b""
    assert reply.headers["x-user-sub"] == access_claims()["sub"]
    assert reply.headers["x-user-token-use"] == "access"
    assert reply.headers[HEADERS_TO_REMOVE] == "x-user-groups,x-user-idp"


def test_an_allow_names_the_caller_for_envoys_metadata_in_headers_of_grpcs_keys(served):
    """Envoy's HTTP mode turns reply headers into dynamic metadata by name: the allow carries the caller's sub,
    kind, client, token use, pool and scopes under gRPC's metadata keys (an empty list, here groups, is left out),
    and an anonymous allow carries none."""
    reply = ask(served, token=mint())
    assert {key: reply.headers.get(key) for key in identity_headers.METADATA_KEYS} == {
        "sub": access_claims()["sub"],
        "principal": "user",
        "client_id": CLIENT_ID,
        "token_use": "access",
        "pool": POOL_ID,
        "groups": None,
        "scopes": access_claims()["scope"],
    }
    anonymous = ask(served, "/api/activities/home")
    assert not any(key in anonymous.headers for key in identity_headers.METADATA_KEYS)


def test_an_anonymous_allow_removes_every_identity_header(served):
    reply = ask(served, "/api/activities/home")
    assert reply.status_code == 200
    assert set(reply.headers[HEADERS_TO_REMOVE].split(",")) == set(identity_headers.header_names())
    assert not any(name in reply.headers for name in identity_headers.header_names())


def test_a_deny_carries_the_contracts_status_challenge_and_json_body(served):
    """No token on a required route: 401 with the Bearer challenge, application/json and the contract's body."""
    reply = ask(served)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="api"'
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": "missing_token", "message": "authentication required"}
    forbidden = ask(served, "/api/admin/users", token=mint())
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "insufficient_scope"


def test_the_route_table_is_the_only_source_of_rules(served):
    """HTTP ext_authz has no context_extensions: the table decides, public routes never read the token."""
    assert ask(served, "/api/health", token="garbage").status_code == 200
    assert ask(served, "/api/activities/home", token="garbage").status_code == 401  # optional: a bad token is 401
    assert ask(served, "/api/me?access_token=x", token=mint()).status_code == 200  # the query is not the path


@pytest.mark.parametrize("path", ["/api/health/../admin", "//api/health", "/api/%2e%2e/admin", "/api/health%5Cx"])
def test_a_path_not_in_normal_form_is_400(served, path):
    reply = raw(served, f"GET {path} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b'"bad_path"' in reply


def test_an_encoded_slash_is_judged_as_the_slash_it_decodes_to(served):
    """granian hands the application the percent-decoded path, so /api%2Fadmin is judged as /api/admin (what a
    decoding backend serves): the admin rule applies, never the default (the stack's Envoy refuses %2F anyway)."""
    token = mint()
    reply = raw(served, f"GET /api%2Fadmin/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403 ")


def test_two_authorization_headers_are_malformed_never_first_wins(served):
    token = mint()
    reply = raw(
        served,
        b"GET /api/me HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
        + token.encode()
        + b"\r\nAuthorization: Bearer other\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 401 ")
    assert b"authorization header must be a single" in reply


def test_non_utf8_bytes_in_the_authorization_header_are_a_clear_401(served):
    """Bytes that are not UTF-8 (or a token that is not ASCII) get the contract's 401, never a 500 or an allow."""
    for value in (b"Bearer \xff\xfe", "Bearer café".encode(), b"Bearer " + mint().encode() + b"\xe9"):
        reply = raw(
            served, b"GET /api/me HTTP/1.1\r\nHost: a\r\nAuthorization: " + value + b"\r\nConnection: close\r\n\r\n"
        )
        assert reply.startswith(b"HTTP/1.1 401 "), reply[:80]


def test_oversized_headers_get_a_4xx_never_a_500_or_an_allow(served):
    reply = raw(
        served,
        b"GET /api/me HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
        + b"a" * 300_000
        + b"\r\nConnection: close\r\n\r\n",
    )
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    assert 400 <= status < 500 or reply == b"", reply[:80]


def test_non_ascii_identity_values_leave_as_utf8(served):
    """Identity values are UTF-8 on this transport too: a group named 管理者 arrives as its UTF-8 bytes."""
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)
    connection.request(
        "GET",
        "/api/me",
        headers={"Authorization": f"Bearer {mint(access_claims(**{'cognito:groups': ['管理者', 'café']}))}"},
    )
    response = connection.getresponse()
    assert response.status == 200
    raw_value = dict(response.getheaders())["x-user-groups"]
    assert raw_value.encode("latin-1").decode("utf-8") == "管理者,café"
    connection.close()


def test_health_is_on_the_metrics_port_not_the_authorization_port(served):
    """/healthz answers on the metrics port (200 once keys are loaded); on the authorization port it is just a path
    the table judges (the default: a token required)."""
    assert requests.get(f"http://127.0.0.1:{served.metrics_port}/healthz", timeout=5).status_code == 200
    assert ask(served, "/healthz").status_code == 401
    metrics = requests.get(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=5).text
    assert 'authz_decisions_total{client="",pool="",reason="missing_token",result="deny"}' in metrics


def test_health_is_503_until_the_keys_are_loaded(jwks_server):
    jwks_server.status = 500
    settings = settings_for(jwks_server.url, http_addr=f"127.0.0.1:{free_port()}", jwks_cooldown_seconds=0)
    with run_server(settings, clock=FakeClock(), transport=Transport.HTTP) as server:
        health = f"http://127.0.0.1:{server.metrics_port}/healthz"
        assert requests.get(health, timeout=5).status_code == 503
        assert (
            requests.get(
                f"http://127.0.0.1:{server.port}/api/me", headers={"Authorization": f"Bearer {mint()}"}, timeout=5
            ).status_code
            == 503
        )
        jwks_server.status = 200
        assert wait_for(lambda: requests.get(health, timeout=5).status_code == 200)


def test_connections_that_never_finish_their_request_do_not_stop_questions_that_arrive_whole(served):
    """200 connections holding half a request head, and questions on a fresh connection are still answered."""
    held = []
    try:
        for _ in range(200):
            connection = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            connection.sendall(b"GET /api/me HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ")
            held.append(connection)
        assert [ask(served, token=mint()).status_code for _ in range(10)] == [200] * 10
    finally:
        for connection in held:
            connection.close()
