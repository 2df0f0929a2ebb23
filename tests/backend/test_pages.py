"""The web pages as the backend serves them: the app shell, its assets, the Cognito settings and the headers that
keep the pages to their own scripts."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from backend import create_app

POOL = "ca-central-1_AbC123"
CLIENT = "4f1client0allowed0000000"
EMULATOR = "http://127.0.0.1:9229"
BASE = {"FRONTEND_URL": "", "BACKEND_URL": "", "IDENTITY_HEADER_PREFIX": "x-user-"}


def client_for(**cognito: str) -> FlaskClient:
    config = {
        **BASE,
        "AWS_COGNITO_USER_POOLS_ID": "",
        "AWS_COGNITO_CLIENT_ID": "",
        "AWS_ENDPOINT_URL_COGNITO_IDP": "",
        "PAGES_COGNITO_ENDPOINT": "",
    }
    config.update(cognito)
    return create_app(config).test_client()


@pytest.fixture
def local() -> FlaskClient:
    return client_for(
        AWS_COGNITO_USER_POOLS_ID=POOL, AWS_COGNITO_CLIENT_ID=CLIENT, AWS_ENDPOINT_URL_COGNITO_IDP=EMULATOR
    )


def test_config_names_the_stacks_pool_client_and_emulator(local: FlaskClient):
    """The pages learn where Cognito is from /web/config.json: the stack's own pool, client and endpoint."""
    reply = local.get("/web/config.json")
    assert reply.status_code == 200
    assert reply.get_json() == {"userPoolId": POOL, "clientId": CLIENT, "region": "ca-central-1", "endpoint": EMULATOR}


def test_config_points_a_real_pool_at_its_regional_endpoint():
    """Without an emulator the same pages talk to the pool's regional Cognito endpoint."""
    reply = client_for(AWS_COGNITO_USER_POOLS_ID="eu-west-1_Real1", AWS_COGNITO_CLIENT_ID=CLIENT).get(
        "/web/config.json"
    )
    assert reply.get_json()["endpoint"] == "https://cognito-idp.eu-west-1.amazonaws.com/"
    assert "connect-src 'self' https://cognito-idp.eu-west-1.amazonaws.com;" in reply.headers["Content-Security-Policy"]


def test_pages_can_be_sent_to_cognito_on_their_own_origin():
    """PAGES_COGNITO_ENDPOINT (compose: Envoy's /cognito/) is where the browser calls Cognito, whatever endpoint the
    servers use; a path on the pages' origin needs nothing beyond 'self' in the policy."""
    reply = client_for(
        AWS_COGNITO_USER_POOLS_ID=POOL,
        AWS_COGNITO_CLIENT_ID=CLIENT,
        AWS_ENDPOINT_URL_COGNITO_IDP="http://cognito-local:5000",
        PAGES_COGNITO_ENDPOINT="/cognito/",
    ).get("/web/config.json")
    assert reply.get_json()["endpoint"] == "/cognito/"
    assert "connect-src 'self';" in reply.headers["Content-Security-Policy"]


def test_without_a_pool_the_config_is_404_and_the_shell_still_loads():
    """A backend with no pool configured says so (the pages show "sign-in is not available") instead of guessing."""
    client = client_for()
    reply = client.get("/web/config.json")
    assert reply.status_code == 404 and reply.get_json()["error"] == "not_configured"
    assert client.get("/").status_code == 200


def test_shell_is_served_with_headers_that_allow_only_its_own_scripts_and_cognito(local: FlaskClient):
    """/ is the app shell; its policy lets scripts and styles come only from this origin and lets the page talk only
    to this origin and the emulator; it may not be framed, sniffed or leak a referrer."""
    reply = local.get("/")
    assert reply.status_code == 200 and reply.mimetype == "text/html"
    body = reply.get_data(as_text=True)
    assert '<script type="module" src="/web/app.js">' in body
    for page in ("home", "signup", "confirm", "signin", "forgot", "reset"):
        assert f'data-page="{page}"' in body
    policy = reply.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert f"connect-src 'self' {EMULATOR};" in policy
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("name", "mimetype"),
    [
        ("app.js", "text/javascript"),
        ("cognito.js", "text/javascript"),
        ("session.js", "text/javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_assets_are_served_with_their_types(local: FlaskClient, name: str, mimetype: str):
    reply = local.get(f"/web/{name}")
    assert reply.status_code == 200 and reply.mimetype == mimetype
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path", ["/web/app.py", "/web/../app.py", "/web/..%2fapp.py", "/web/index.html", "/web/", "/static/app.js"]
)
def test_nothing_else_is_served_from_the_backend_folder(local: FlaskClient, path: str):
    """Only the listed assets: no source file, no directory listing, no Flask static folder."""
    assert local.get(path).status_code == 404


def test_pages_never_depend_on_identity_headers(local: FlaskClient):
    """The shell is the same for everyone: it is public, and identity reaches only the API."""
    anonymous = local.get("/").get_data()
    spoofed = local.get("/", headers={"x-user-sub": "someone", "x-user-name": "mallory"}).get_data()
    assert anonymous == spoofed
