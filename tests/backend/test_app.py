"""The feed backend: identity from Envoy's headers only, the seed's feed, CORS, JSON errors, gunicorn's header rules."""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from backend import create_app
from backend.activities import home_activities
from identity_headers import MAX_VALUE_BYTES
from stack.processes import ManagedProcess, StartupError, free_port, http_ok

REPO = Path(__file__).resolve().parents[2]
FRONTEND = "http://localhost:3000"
BACKEND = "http://localhost:4567"
CONFIG = {"FRONTEND_URL": FRONTEND, "BACKEND_URL": BACKEND, "IDENTITY_HEADER_PREFIX": "x-user-"}
SUB = "7c0a1d2e-0000-4000-8000-000000000001"
IDENTITY = {
    "x-user-sub": SUB,
    "x-user-name": "andrew",
    "x-user-groups": "admins,editors",
    "x-user-scopes": "aws.cognito.signin.user.admin feed/read",
    "x-user-client-id": "4f1client0allowed0000000",
    "x-user-token-use": "access",
    "x-user-principal": "user",
}
PUBLIC_HANDLES = ["Andrew Brown", "Worf", "Garek"]


@pytest.fixture
def app() -> Flask:
    return create_app(CONFIG)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_anonymous_feed_is_public_items_only(client: FlaskClient) -> None:
    """Without identity headers the home feed holds just the seed's public items."""
    response = client.get("/api/activities/home")
    assert response.status_code == 200
    items = response.get_json()
    assert [item["handle"] for item in items] == PUBLIC_HANDLES
    assert items[0]["message"] == "Cloud is fun!"
    assert items[0]["replies"][0]["handle"] == "Worf"
    assert items[0]["replies"][0]["message"] == "This post has no honor!"


def test_identified_feed_starts_with_callers_own_item(client: FlaskClient) -> None:
    """With identity headers the caller's own item (uuid = sub, handle = name) comes before the public items."""
    items = client.get("/api/activities/home", headers=IDENTITY).get_json()
    assert [item["handle"] for item in items] == ["andrew", *PUBLIC_HANDLES]
    assert items[0]["uuid"] == SUB
    assert items[0]["replies"] == []


def test_feed_timestamps_are_relative_to_now() -> None:
    """Feed timestamps are ISO strings placed relative to the given moment, as the seed's are."""
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    first = home_activities(None, now=now)[0]
    assert first["created_at"] == (now - timedelta(days=2)).isoformat()
    assert first["expires_at"] == (now + timedelta(days=5)).isoformat()
    assert {"likes_count", "replies_count", "reposts_count"} <= first.keys()


def test_me_returns_identity_with_group_and_scope_lists(client: FlaskClient) -> None:
    """/api/me answers with the caller's identity, groups and scopes split into lists."""
    response = client.get("/api/me", headers=IDENTITY)
    assert response.status_code == 200
    assert response.get_json() == {
        "sub": SUB,
        "username": "andrew",
        "groups": ["admins", "editors"],
        "scopes": ["aws.cognito.signin.user.admin", "feed/read"],
        "token_use": "access",
        "client_id": "4f1client0allowed0000000",
        "principal": "user",
        "identity_provider": None,
    }
    assert "no-store" in response.headers["Cache-Control"]


def test_blank_list_entries_are_dropped(client: FlaskClient) -> None:
    """Empty group and scope entries (doubled separators, padding) do not become list items."""
    headers = {"x-user-sub": SUB, "x-user-groups": ",admins,, editors,", "x-user-scopes": "  feed/read   feed/write "}
    body = client.get("/api/me", headers=headers).get_json()
    assert body["groups"] == ["admins", "editors"]
    assert body["scopes"] == ["feed/read", "feed/write"]
    assert body["username"] is None


def test_anonymous_me_is_401_with_bearer_challenge(client: FlaskClient) -> None:
    """/api/me without identity headers is a JSON 401 carrying a Bearer challenge."""
    response = client.get("/api/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.get_json()["error"] == "unauthenticated"


def test_authorization_header_alone_is_anonymous(client: FlaskClient) -> None:
    """A bearer token without Envoy's identity headers identifies no one: the backend never reads tokens."""
    response = client.get("/api/me", headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJldmlsIn0."})
    assert response.status_code == 401


def test_empty_sub_header_is_anonymous(client: FlaskClient) -> None:
    """A present but empty (or blank) sub header is no identity, whatever the other headers say."""
    for sub in ("", "   "):
        headers = {**IDENTITY, "x-user-sub": sub}
        assert client.get("/api/me", headers=headers).status_code == 401
        assert [item["handle"] for item in client.get("/api/activities/home", headers=headers).get_json()] == (
            PUBLIC_HANDLES
        )


def test_repeated_sub_header_is_anonymous(client: FlaskClient) -> None:
    """A sub header sent twice (joined with a comma by the WSGI layer) is ambiguous and so anonymous."""
    headers = [("x-user-sub", SUB), ("x-user-sub", "evil")]
    assert client.get("/api/me", headers=headers).status_code == 401


def test_health_needs_no_identity(client: FlaskClient) -> None:
    """/api/health answers ok to an anonymous caller."""
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_preflight_from_frontend_origin_is_allowed(client: FlaskClient) -> None:
    """A CORS preflight from the frontend origin gets the Access-Control-Allow-* headers for Authorization."""
    response = client.options(
        "/api/activities/home",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert "GET" in response.headers["Access-Control-Allow-Methods"]
    assert {h.strip() for h in response.headers["Access-Control-Allow-Headers"].lower().split(",")} == {
        "authorization",
        "content-type",
    }


def test_preflight_from_unknown_origin_gets_no_cors_headers(client: FlaskClient) -> None:
    """A CORS preflight from an origin that is not configured gets no Access-Control-Allow-* headers."""
    response = client.options(
        "/api/activities/home",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert not [name for name, _ in response.headers if name.lower().startswith("access-control-allow")]


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    """An unknown path is a 404 with a JSON body, not Werkzeug's HTML page."""
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["error"] == "not_found"


def test_wrong_method_is_json_405_with_allow(client: FlaskClient) -> None:
    """A method a route does not take is a JSON 405 that still lists the allowed methods."""
    response = client.delete("/api/health")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_configured_header_prefix_is_the_only_one_read(client: FlaskClient) -> None:
    """With IDENTITY_HEADER_PREFIX set, identity comes from that prefix and the default one is ignored."""
    custom = create_app({**CONFIG, "IDENTITY_HEADER_PREFIX": "x-caller-"}).test_client()
    assert custom.get("/api/me", headers={"x-caller-sub": SUB}).get_json()["sub"] == SUB
    assert custom.get("/api/me", headers={"x-user-sub": SUB}).status_code == 401


def test_malformed_header_prefix_is_rejected() -> None:
    """A prefix the authz server would refuse (uppercase, no trailing dash) fails at create_app, naming the key."""
    with pytest.raises(ValueError, match="IDENTITY_HEADER_PREFIX"):
        create_app({**CONFIG, "IDENTITY_HEADER_PREFIX": "X-User"})


def test_config_falls_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys missing from the config mapping are read from the environment."""
    monkeypatch.setenv("FRONTEND_URL", "http://frontend.test:3000")
    monkeypatch.setenv("IDENTITY_HEADER_PREFIX", "x-caller-")
    app = create_app({"BACKEND_URL": BACKEND})
    assert app.config["FRONTEND_URL"] == "http://frontend.test:3000"
    assert app.config["IDENTITY_HEADER_PREFIX"] == "x-caller-"


# --- under real gunicorn: what the WSGI server does with header names is part of the trust boundary ---


class Gunicorn:
    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    def request(self, path: str, headers: Sequence[tuple[str, str | bytes]]) -> tuple[int, bytes]:
        """Send headers literally (names as given, underscores kept, bytes values as they are) and return
        (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.putrequest("GET", path)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn",
        "--config", "backend/gunicorn.conf.py",
        "--bind", f"127.0.0.1:{port}",
        "backend:create_app()",
    ]  # fmt: skip
    process = ManagedProcess(
        "gunicorn",
        command,
        env={**os.environ, **CONFIG},
        run_dir=tmp_path_factory.mktemp("gunicorn"),
        ready=http_ok(f"http://127.0.0.1:{port}/api/health"),
        ports=(port,),
        cwd=REPO,
    )
    try:
        process.start(timeout=20)
    except StartupError as error:
        pytest.fail(f"{error}:\n{process.log_path.read_text()}")
    try:
        yield Gunicorn(port, process.log_path)
    finally:
        process.stop()


def test_gunicorn_passes_identity_headers_to_the_app(gunicorn: Gunicorn) -> None:
    """Under gunicorn, Envoy's dash-named identity headers reach the app as the caller's identity."""
    status, body = gunicorn.request("/api/me", list(IDENTITY.items()))
    assert status == 200
    identity = json.loads(body)
    assert (identity["sub"], identity["groups"]) == (SUB, ["admins", "editors"])


def test_gunicorn_drops_underscore_identity_header(gunicorn: Gunicorn) -> None:
    """Under gunicorn, a client's `x_user_sub` header never becomes the identity header's environ key."""
    status, _ = gunicorn.request("/api/me", [("x_user_sub", "evil"), ("x_user_name", "evil")])
    assert status == 401
    status, body = gunicorn.request("/api/me", [("x-user-sub", SUB), ("x_user_sub", "evil")])
    assert status == 200
    assert b"evil" not in body


def test_gunicorn_access_log_omits_credentials(gunicorn: Gunicorn) -> None:
    """gunicorn's access log records the request without its Authorization header or query string."""
    secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2ln"
    # The user agent (which the format does log) marks this request's line among the health polls.
    probe = f"log-probe-{uuid.uuid4()}"
    headers = [("Authorization", f"Bearer {secret}"), ("User-Agent", probe)]
    assert gunicorn.request(f"/api/health?access_token={secret}", headers)[0] == 200
    deadline = time.monotonic() + 5
    while probe not in gunicorn.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in gunicorn.log.read_text().splitlines() if probe in line]
    assert len(lines) == 1 and '"GET /api/health HTTP/1.1" 200' in lines[0], gunicorn.log.read_text()
    assert secret not in gunicorn.log.read_text()


# Names Cognito allows (any letter, mark, symbol, number or punctuation), as authz sends them: UTF-8 bytes. `管理者`
# and `voilà` end in the bytes \x85 and \xa0, which read as ISO-8859-1 are whitespace to str.strip().
UTF8_NAMES = ["管理者", "café", "voilà", "Ünïcödé-Ω", "😀"]


def test_gunicorn_reads_utf8_identity_values_exactly(gunicorn: Gunicorn) -> None:
    """Under gunicorn, identity values in UTF-8 (the contract's encoding) reach the app exactly as authz set them:
    `管理者` and `café`, not `ç®¡ç` and `cafÃ©`."""
    headers: list[tuple[str, str | bytes]] = [
        ("x-user-sub", SUB),
        ("x-user-name", "café-管理者".encode()),
        ("x-user-groups", ",".join(UTF8_NAMES).encode()),
    ]
    status, body = gunicorn.request("/api/me", headers)
    assert status == 200, body
    identity = json.loads(body)
    assert (identity["username"], identity["groups"]) == ("café-管理者", UTF8_NAMES)


def test_gunicorn_treats_an_identity_value_that_is_not_utf8_as_anonymous(gunicorn: Gunicorn) -> None:
    """A value that is not UTF-8 was not set by authz: the request is anonymous, never a garbled identity."""
    status, _ = gunicorn.request("/api/me", [("x-user-sub", b"caf\xe9")])
    assert status == 401
    status, _ = gunicorn.request("/api/me", [("x-user-sub", SUB), ("x-user-name", b"\xff\xfe")])
    assert status == 401


def test_gunicorn_accepts_the_largest_identity_cognito_can_issue(gunicorn: Gunicorn) -> None:
    """Under gunicorn, the largest identity Cognito can issue (100 groups of 128 four-byte characters: a groups value
    of MAX_VALUE_BYTES; 50 scopes of 256 characters; a username of 128 four-byte characters) reaches the app intact
    and is answered in JSON, not refused with gunicorn's 431 HTML page."""
    groups = [chr(0x1F600 + index) + "\U0001f600" * 127 for index in range(100)]
    scopes = [f"{index:02}" + "s" * 254 for index in range(50)]
    username = "\U0001f600" * 128
    assert len(",".join(groups).encode()) == MAX_VALUE_BYTES
    headers: list[tuple[str, str | bytes]] = [
        ("x-user-sub", SUB),
        ("x-user-name", username.encode()),
        ("x-user-groups", ",".join(groups).encode()),
        ("x-user-scopes", " ".join(scopes)),
    ]
    status, body = gunicorn.request("/api/me", headers)
    assert status == 200, body[:200]
    identity = json.loads(body)
    assert (identity["username"], identity["groups"], identity["scopes"]) == (username, groups, scopes)
