"""Envoy's HTTP ext_authz mode as envoy/bootstrap.py renders it (Transport.HTTP), proven on the real Envoy (ENVOY_BIN).

Envoy sits in front of a scripted authorization server, whose replies each test sets and which records what Envoy
asks, a health endpoint standing in for the metrics port, and a recording upstream. So what arrives at the authz
server, what of its reply reaches the upstream or the client, and what Envoy does with a 5xx are Envoy's own
behaviour under our config, not a reading of its docs.
"""

from __future__ import annotations

import http.client
import http.server
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from envoy import bootstrap
from stack.local import envoy_process
from stack.processes import free_ports
from tests.conftest import LoopbackHttp
from tests.envoy.test_envoy_version import envoy_version
from tests.integration.cruddur_api import RecordingUpstream

if envoy_version() in bootstrap.HTTP_MODE_BROKEN:
    pytest.skip(bootstrap.HTTP_MODE_BROKEN[envoy_version()], allow_module_level=True)

IDENTITY = {
    "x-user-sub": "sub-1",
    "x-user-name": "alice",
    "x-user-scopes": "openid profile",
    "x-user-client-id": "client-1",
    "x-user-token-use": "access",
}
DENY_BODY = json.dumps({"error": "invalid_token", "message": "token expired"})
BEARER_401 = 'Bearer realm="api", error="invalid_token", error_description="token expired"'
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"


@dataclass
class Asked:
    """One request as the authz server got it: header lines lowered, in order, repeats kept."""

    method: str
    path: str
    lines: list[tuple[str, str]]
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.lines)


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""
    delay: float = 0.0


class ScriptedAuthz(LoopbackHttp):
    """An HTTP authorization server answering every request with `reply` and recording it."""

    def __init__(self) -> None:
        self.reply = Reply()
        self.asked: list[Asked] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                lines = [(name.lower(), value) for name, value in self.headers.items()]
                outer.asked.append(Asked(self.command, self.path, lines, body))
                reply = outer.reply
                time.sleep(reply.delay)
                payload = reply.body.encode()
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = answer  # noqa: N815 - http.server's API

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)


class HealthEndpoint(LoopbackHttp):
    """The metrics port's /healthz: 200, counting the checks."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)


@dataclass
class HttpModeProxy:
    url: str
    authz: ScriptedAuthz
    health: HealthEndpoint
    upstream: RecordingUpstream
    log_path: Path

    def ask(self, reply: Reply, path: str = "/api/me", **kwargs: Any) -> requests.Response:
        """A client request through Envoy while the authz server answers reply."""
        self.authz.reply = reply
        self.authz.asked.clear()
        self.upstream.requests.clear()
        return requests.request(
            kwargs.pop("method", "GET"), self.url + path, timeout=10, allow_redirects=False, **kwargs
        )


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpModeProxy]:
    run_dir = tmp_path_factory.mktemp("http-mode")
    envoy_port, admin_port = free_ports(2)
    authz, health, upstream = ScriptedAuthz(), HealthEndpoint(), RecordingUpstream()
    topology = bootstrap.local(
        envoy_port=envoy_port,
        admin_port=admin_port,
        authz_ports=(authz.port,),
        backend_port=upstream.port,
        authz_transport=bootstrap.Transport.HTTP,
        authz_health_ports=(health.port,),
    )
    envoy = envoy_process(
        "envoy", bootstrap.render(topology), run_dir, envoy_port=envoy_port, admin_port=admin_port, env={}
    )
    try:
        with envoy:
            yield HttpModeProxy(f"http://127.0.0.1:{envoy_port}", authz, health, upstream, envoy.log_path)
    finally:
        for server in (authz, health, upstream):
            server.close()


def test_envoy_asks_with_the_method_the_path_and_query_the_host_and_the_allowed_headers(proxy: HttpModeProxy):
    """The authz server gets the client's method and path with its query as the request line, the client's Host,
    content-length 0 and no body, authorization and x-request-id, and none of the client's other headers."""
    # A deny, so the upstream (which answers GET only) is not asked.
    answer = proxy.ask(
        Reply(403),
        "/api/things?page=2&q=x",
        method="POST",
        data=b'{"a": 1}',
        headers={
            "Host": "api.example.test:8443",
            "Authorization": "Bearer abc",
            "Cookie": "session=1",
            "X-Other": "o",
            "Content-Type": "application/json",
        },
    )
    assert answer.status_code == 403
    [asked] = proxy.authz.asked
    assert (asked.method, asked.path, asked.body) == ("POST", "/api/things?page=2&q=x", b"")
    headers = asked.headers
    assert headers["host"] == "api.example.test:8443"
    assert headers["authorization"] == "Bearer abc"
    assert headers["content-length"] == "0"
    assert headers["x-request-id"]
    # Envoy's own, from the async client's router: the request comes from inside, and the time it has (the whole
    # timeout, as no per-try timeout is shorter).
    assert headers["x-envoy-internal"] == "true"
    assert headers["x-envoy-expected-rq-timeout-ms"] == str(int(bootstrap.AUTHZ_TIMEOUT.total_seconds() * 1000))
    assert set(headers) == {
        "host",
        "authorization",
        "content-length",
        "x-request-id",
        "x-envoy-internal",
        "x-envoy-expected-rq-timeout-ms",
    }, asked.lines


def test_the_path_arrives_normalized(proxy: HttpModeProxy):
    """The path the authz server reads is the one Envoy routes: dot segments resolved and slashes merged first."""
    proxy.ask(Reply(200), "/api/health/../me//x")
    [asked] = proxy.authz.asked
    assert asked.path == "/api/me/x"


def test_repeated_authorization_headers_arrive_as_one_comma_joined_value(proxy: HttpModeProxy):
    """Two Authorization lines reach the authz server as one header whose values are joined with a comma."""
    proxy.authz.reply = Reply(200)
    proxy.authz.asked.clear()
    # requests folds a dict of headers, so the two lines go on the wire through http.client.
    connection = http.client.HTTPConnection(proxy.url.removeprefix("http://"), timeout=10)
    connection.putrequest("GET", "/api/me")
    connection.putheader("Authorization", "Bearer one")
    connection.putheader("Authorization", "Bearer two")
    connection.endheaders()
    assert connection.getresponse().status == 200
    connection.close()
    [asked] = proxy.authz.asked
    assert [value for name, value in asked.lines if name == "authorization"] == ["Bearer one,Bearer two"]


def test_an_allow_sets_exactly_the_identity_headers_upstream(proxy: HttpModeProxy):
    """On a 200 the upstream gets the reply's headers under the identity prefix (the built-in ones and any
    AUTHZ_CLAIM_HEADERS ones) and no other reply header, the caller metadata headers included; the client gets
    none of them."""
    claim = {"x-user-tenant": "t-42"}
    reply = Reply(
        200, [*IDENTITY.items(), *claim.items(), ("x-other", "nope"), ("sub", "meta"), ("Cache-Control", "x")]
    )
    answer = proxy.ask(reply, headers={"Authorization": "Bearer abc"})
    assert answer.status_code == 200
    [received] = proxy.upstream.requests
    assert {name: value for name, value in received.lines if name.startswith("x-user-")} == {**IDENTITY, **claim}
    assert "x-other" not in received.headers and "sub" not in received.headers
    assert "authorization" not in received.headers
    assert not {name for name in answer.headers if name.lower().startswith("x-user-") or name.lower() == "x-other"}


def test_headers_the_reply_names_in_x_envoy_auth_headers_to_remove_are_removed_upstream(proxy: HttpModeProxy):
    """x-envoy-auth-headers-to-remove (comma-separated, spaces allowed) removes those request headers before the
    upstream, and never reaches the upstream or the client itself."""
    reply = Reply(200, [*IDENTITY.items(), (HEADERS_TO_REMOVE, "x-remove-me, x-user-groups,x-also")])
    answer = proxy.ask(reply, headers={"X-Remove-Me": "1", "X-Also": "2", "X-Kept": "3"})
    assert answer.status_code == 200
    [received] = proxy.upstream.requests
    assert "x-remove-me" not in received.headers and "x-also" not in received.headers
    assert received.headers["x-kept"] == "3"
    assert "x-user-groups" not in received.headers
    assert HEADERS_TO_REMOVE not in received.headers
    assert HEADERS_TO_REMOVE not in {name.lower() for name in answer.headers}


@pytest.mark.parametrize(
    ("status", "www_authenticate"),
    [
        (401, BEARER_401),
        (403, 'Bearer realm="api", error="insufficient_scope", scope="admin"'),
        (403, None),
        (400, None),
    ],
)
def test_a_deny_reaches_the_client_with_its_status_www_authenticate_content_type_and_body(
    proxy: HttpModeProxy, status: int, www_authenticate: str | None
):
    """A reply below 500 other than 200 is a deny: the client gets its status, www-authenticate, content-type and
    body exactly, no other reply header (identity ones included), and the upstream is never called."""
    headers = [("Content-Type", "application/json"), ("x-user-sub", "leak"), ("x-other", "nope")]
    if www_authenticate:
        headers.append(("WWW-Authenticate", www_authenticate))
    answer = proxy.ask(Reply(status, headers, DENY_BODY), headers={"Authorization": "Bearer abc"})
    assert answer.status_code == status
    assert answer.text == DENY_BODY
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers.get("www-authenticate") == www_authenticate
    assert "x-user-sub" not in answer.headers and "x-other" not in answer.headers
    assert proxy.upstream.requests == []


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_reply_is_an_authz_error_answered_with_status_on_error_and_no_body(proxy: HttpModeProxy, status: int):
    """Envoy treats a 5xx reply as a failed Check, not a deny: the client gets STATUS_ON_ERROR with an empty body
    and none of the reply's headers, and the upstream is never called (failure_mode_allow is off)."""
    reply = Reply(status, [("Content-Type", "application/json"), ("WWW-Authenticate", BEARER_401)], DENY_BODY)
    answer = proxy.ask(reply)
    assert answer.status_code == bootstrap.STATUS_ON_ERROR
    assert answer.text == ""
    assert "www-authenticate" not in answer.headers
    assert proxy.upstream.requests == []


def test_health_checks_go_to_the_metrics_port_never_the_authorization_port(proxy: HttpModeProxy):
    """Envoy checks each replica with GET /healthz on its metrics port; the authorization port, where every path is
    a question, never sees a health check."""
    deadline = time.monotonic() + 5
    while len(proxy.health.paths) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(proxy.health.paths) == {bootstrap.AUTHZ_HEALTH_PATH}
    assert len(proxy.health.paths) >= 2
    proxy.authz.asked.clear()
    time.sleep(1.5)
    assert proxy.authz.asked == []


def test_the_access_log_names_the_caller_from_the_allows_sub_header(proxy: HttpModeProxy):
    """The access log's user is the `sub` metadata header of the authz server's allow (dynamic_metadata_from_headers,
    under gRPC's key), never the identity header a client could have sent."""
    proxy.ask(Reply(200, [*IDENTITY.items(), ("sub", IDENTITY["x-user-sub"])]), "/api/logged")
    proxy.ask(Reply(200, list(IDENTITY.items())), "/api/unnamed")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in proxy.log_path.read_text().splitlines() if line.startswith("{")]
        logged = {line.get("path"): line for line in lines}
        if {"/api/logged", "/api/unnamed"} <= set(logged):
            assert logged["/api/logged"]["user"] == IDENTITY["x-user-sub"]
            assert logged["/api/unnamed"]["user"] in (None, "-")
            return
        time.sleep(0.2)
    pytest.fail("no access log lines for /api/logged and /api/unnamed")


def test_a_slow_check_is_waited_for_up_to_the_timeout_and_asked_once(proxy: HttpModeProxy):
    """A Check answered after 600 ms (a cold token, a JWKS refetch) still decides the request: no per-try timeout
    cuts it short, and it is not asked twice."""
    answer = proxy.ask(Reply(401, [("Content-Type", "application/json")], DENY_BODY, delay=0.6))
    assert answer.status_code == 401
    assert len(proxy.authz.asked) == 1
