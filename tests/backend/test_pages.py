"""The web pages as the backend serves them: the app shell, its assets, the Cognito settings and the headers that
keep the pages to their own scripts."""

from __future__ import annotations

import hashlib
import re

import pytest
from flask.testing import FlaskClient

from backend import create_app
from backend.pages import PAGE_SETTINGS, WEB_DIR

POOL = "ca-central-1_AbC123"
CLIENT = "4f1client0allowed0000000"
EMULATOR = "http://127.0.0.1:9229"
BASE = {"FRONTEND_URL": "", "BACKEND_URL": "", "IDENTITY_HEADER_PREFIX": "x-user-"}


def client_for(**cognito: str) -> FlaskClient:
    config = {
        **BASE,
        "AWS_COGNITO_USER_POOLS_ID": "",
        "AWS_COGNITO_CLIENT_ID": "",
        **dict.fromkeys(PAGE_SETTINGS, ""),
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


@pytest.mark.parametrize(
    ("setting", "value", "endpoint"),
    [
        ("PAGES_COGNITO_ENDPOINT", "/cognito/", "/cognito/"),
        ("PAGES_COGNITO_ENDPOINT", "/cognito", "/cognito"),
        ("PAGES_COGNITO_ENDPOINT", "https://Cognito.Example.com:443/idp/", "https://cognito.example.com/idp/"),
        ("PAGES_COGNITO_ENDPOINT", "https://cognito.example.com:8443", "https://cognito.example.com:8443"),
        ("AWS_ENDPOINT_URL_COGNITO_IDP", " http://localhost:9229/ ", "http://localhost:9229/"),
        (
            "AWS_ENDPOINT_URL_COGNITO_IDP",
            "https://cognito-idp.eu-west-1.amazonaws.com/",
            "https://cognito-idp.eu-west-1.amazonaws.com/",
        ),
    ],
)
def test_an_endpoint_is_kept_as_rebuilt_from_its_checked_parts(setting: str, value: str, endpoint: str):
    """A path on the pages' origin, or an https URL (http on a loopback host) of a host, port and path, is the
    pages' endpoint: lower-case host, no default port; only its origin goes into connect-src."""
    reply = client_for(AWS_COGNITO_USER_POOLS_ID=POOL, AWS_COGNITO_CLIENT_ID=CLIENT, **{setting: value}).get(
        "/web/config.json"
    )
    assert reply.get_json()["endpoint"] == endpoint
    origin = "" if endpoint.startswith("/") else " " + "/".join(endpoint.split("/")[:3])
    assert f"connect-src 'self'{origin};" in reply.headers["Content-Security-Policy"]


REFUSED_ENDPOINTS = [
    "https://a.com; script-src *",  # no way into the policy
    "https://a.com;script-src",
    "https://a.com/ 'unsafe-inline'",
    "https://a.com/x\nscript-src *",
    "https://a.com/x\tb",
    "https://a.com/cognito;x",
    "https://user:pass@cognito.example.com",
    "https://cognito.example.com\\@evil.example",
    "https://cognito.example.com?x=1",
    "https://cognito.example.com/#x",
    "https://cognito.example.com:99999",
    "https://cognito.example.com:port",
    "https://cognito.example.com/a/../b",
    "https://cognito.example.com//evil.example",
    "https://",
    "http://cognito-local:5000",  # plain http off this machine
    "http://10.0.0.5:9229",
    "ftp://127.0.0.1",
    "javascript:alert(1)",
    "cognito.example.com",  # no scheme
    "//evil.example/",  # another origin, not a path on this one
    "/\\evil.example/",
    "/cognito/?x=1",
    "/cognito/#x",
    "/cognito/ x",
    "/cognito/;script-src",
    "/../cognito/",
    "/cognitö/",
]


@pytest.mark.parametrize("endpoint", REFUSED_ENDPOINTS)
def test_an_endpoint_the_pages_may_not_call_leaves_them_without_sign_in(
    endpoint: str, caplog: pytest.LogCaptureFixture
):
    """A PAGES_COGNITO_ENDPOINT that is neither a plain path on the pages' origin nor an https URL (http on a loopback
    host) of a host, port and path is not used, nor is the next setting in its place: /web/config.json is 404 (the
    pages say sign-in is not available), nothing of the value reaches the policy, and the log names the setting."""
    client = client_for(
        AWS_COGNITO_USER_POOLS_ID=POOL,
        AWS_COGNITO_CLIENT_ID=CLIENT,
        AWS_ENDPOINT_URL_COGNITO_IDP=EMULATOR,
        PAGES_COGNITO_ENDPOINT=endpoint,
    )
    reply = client.get("/web/config.json")
    assert reply.status_code == 404 and reply.get_json()["error"] == "not_configured"
    shell = client.get("/")
    assert shell.status_code == 200
    assert "connect-src 'self';" in shell.headers["Content-Security-Policy"]
    assert "PAGES_COGNITO_ENDPOINT" in caplog.text


def test_a_pool_id_whose_region_is_no_host_name_gives_no_endpoint():
    """The regional endpoint is built from the pool id's region: a region that would not make a host name (here one
    carrying a policy directive) gives the pages no endpoint, and nothing of it reaches the policy."""
    client = client_for(AWS_COGNITO_USER_POOLS_ID="eu-west-1;script-src *_Real1", AWS_COGNITO_CLIENT_ID=CLIENT)
    assert client.get("/web/config.json").status_code == 404
    assert "connect-src 'self';" in client.get("/").headers["Content-Security-Policy"]


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
    for page in ("home", "signup", "confirm", "signin", "forgot", "reset", "security"):
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
        ("oauth.js", "text/javascript"),
        ("totp.js", "text/javascript"),
        ("qrcode-generator.js", "text/javascript"),
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


def test_config_names_the_hosted_endpoints_and_the_identity_providers():
    """PAGES_COGNITO_DOMAIN (the emulator's URL locally) and PAGES_IDENTITY_PROVIDERS reach the pages as `domain` (an
    origin, no trailing slash) and `identityProviders` (in order, each once), and the policy lets the pages POST to
    the domain's /oauth2/token and /oauth2/revoke."""
    reply = client_for(
        AWS_COGNITO_USER_POOLS_ID=POOL,
        AWS_COGNITO_CLIENT_ID=CLIENT,
        AWS_ENDPOINT_URL_COGNITO_IDP=EMULATOR,
        PAGES_COGNITO_DOMAIN="https://cruddur.auth.ca-central-1.amazoncognito.com/",
        PAGES_IDENTITY_PROVIDERS="LocalIdP, Google,LocalIdP",
    ).get("/web/config.json")
    config = reply.get_json()
    assert config["domain"] == "https://cruddur.auth.ca-central-1.amazoncognito.com"
    assert config["identityProviders"] == ["LocalIdP", "Google"]
    policy = reply.headers["Content-Security-Policy"]
    assert f"connect-src 'self' {EMULATOR} https://cruddur.auth.ca-central-1.amazoncognito.com;" in policy
    assert "form-action 'none'" in policy and "script-src 'self';" in policy


def test_an_emulator_serving_both_apis_is_named_once_in_the_policy():
    """Locally the emulator is both the user-pool API and the hosted endpoints: one origin in connect-src."""
    reply = client_for(
        AWS_COGNITO_USER_POOLS_ID=POOL,
        AWS_COGNITO_CLIENT_ID=CLIENT,
        AWS_ENDPOINT_URL_COGNITO_IDP=EMULATOR,
        PAGES_COGNITO_DOMAIN=EMULATOR,
        PAGES_IDENTITY_PROVIDERS="LocalIdP",
    ).get("/web/config.json")
    assert reply.get_json()["domain"] == EMULATOR
    assert f"connect-src 'self' {EMULATOR};" in reply.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("domain", "origin"),
    [
        ("http://localhost:9229", "http://localhost:9229"),
        ("HTTPS://Cruddur.Auth.eu-west-1.AmazonCognito.com:443/", "https://cruddur.auth.eu-west-1.amazoncognito.com"),
        ("https://auth.example.com:8443", "https://auth.example.com:8443"),
        ("  http://127.0.0.1:9229/  ", "http://127.0.0.1:9229"),
    ],
)
def test_a_domain_is_kept_as_its_origin(domain: str, origin: str):
    """An https origin, or http on a loopback host, is kept as its origin: lower case, no default port, no slash."""
    config = client_for(AWS_COGNITO_USER_POOLS_ID=POOL, AWS_COGNITO_CLIENT_ID=CLIENT, PAGES_COGNITO_DOMAIN=domain).get(
        "/web/config.json"
    )
    assert config.get_json()["domain"] == origin


REFUSED_DOMAINS = [
    "http://cruddur.auth.ca-central-1.amazoncognito.com",  # plain http off this machine
    "http://10.0.0.5:9229",
    "http://[::1]:9229",
    "ftp://127.0.0.1",
    "javascript:alert(1)",
    "cruddur.auth.ca-central-1.amazoncognito.com",  # no scheme
    "/oauth2",  # a path
    "https://auth.example.com/oauth2",  # more than an origin
    "https://auth.example.com?x=1",
    "https://auth.example.com#x",
    "https://user:pass@auth.example.com",
    "https://auth.example.com:99999",
    "https://auth.example.com:port",
    "https://auth.example.com; script-src *",  # no way into the policy
    "https://auth example.com",
    "https://",
    "",
]


@pytest.mark.parametrize("domain", REFUSED_DOMAINS)
def test_anything_but_an_https_or_loopback_origin_is_no_domain(domain: str):
    """A PAGES_COGNITO_DOMAIN that is not an https origin or an http one on 127.0.0.1 or localhost is ignored: no
    domain, no providers, and nothing of it in the policy."""
    reply = client_for(
        AWS_COGNITO_USER_POOLS_ID=POOL,
        AWS_COGNITO_CLIENT_ID=CLIENT,
        AWS_ENDPOINT_URL_COGNITO_IDP=EMULATOR,
        PAGES_COGNITO_DOMAIN=domain,
        PAGES_IDENTITY_PROVIDERS="LocalIdP",
    ).get("/web/config.json")
    config = reply.get_json()
    assert "domain" not in config and "identityProviders" not in config
    assert f"connect-src 'self' {EMULATOR};" in reply.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "name",
    [
        "COGNITO",  # the pool's own sign-in, which the pages have already
        "Go",  # Cognito's pattern needs three characters at least
        "x" * 33,  # and 32 at most
        "_LocalIdP",  # no leading underscore
        "Local_IdP",  # none at all
        "Sign In With Apple",  # no separator (Unicode Z) anywhere
        "a\u00a0bc",  # a no-break space is a separator too
    ],
)
def test_names_cognito_would_not_give_a_provider_are_left_out(name: str):
    """PAGES_IDENTITY_PROVIDERS keeps only names matching Cognito's ProviderName pattern, and never COGNITO."""
    config = client_for(
        AWS_COGNITO_USER_POOLS_ID=POOL,
        AWS_COGNITO_CLIENT_ID=CLIENT,
        PAGES_COGNITO_DOMAIN=EMULATOR,
        PAGES_IDENTITY_PROVIDERS=f"{name},LocalIdP",
    ).get("/web/config.json")
    assert config.get_json()["identityProviders"] == ["LocalIdP"]


def test_names_of_any_script_within_cognitos_pattern_are_kept():
    """Cognito's pattern is Unicode: letters of any script, digits, symbols and punctuation (but "_") pass."""
    names = "Fédération,ログイン,Okta-SSO,Entra.ID,a+b"
    config = client_for(
        AWS_COGNITO_USER_POOLS_ID=POOL,
        AWS_COGNITO_CLIENT_ID=CLIENT,
        PAGES_COGNITO_DOMAIN=EMULATOR,
        PAGES_IDENTITY_PROVIDERS=names,
    ).get("/web/config.json")
    assert config.get_json()["identityProviders"] == names.split(",")


def test_providers_without_a_domain_are_not_offered():
    """Without the hosted endpoints no provider can be reached, so none is offered (and no empty list either)."""
    config = client_for(
        AWS_COGNITO_USER_POOLS_ID=POOL, AWS_COGNITO_CLIENT_ID=CLIENT, PAGES_IDENTITY_PROVIDERS="LocalIdP"
    ).get("/web/config.json")
    assert "identityProviders" not in config.get_json() and "domain" not in config.get_json()


def test_a_domain_without_providers_is_named_without_them():
    config = client_for(
        AWS_COGNITO_USER_POOLS_ID=POOL,
        AWS_COGNITO_CLIENT_ID=CLIENT,
        PAGES_COGNITO_DOMAIN=EMULATOR,
        PAGES_IDENTITY_PROVIDERS=" , COGNITO",
    ).get("/web/config.json")
    assert config.get_json()["domain"] == EMULATOR and "identityProviders" not in config.get_json()


def test_the_shell_runs_no_inline_script_and_no_handler_attributes(local: FlaskClient):
    """Every script is a file of this origin (script-src 'self' would refuse any other), and no element carries an
    on...= handler, which the policy would refuse as inline script."""
    body = local.get("/").get_data(as_text=True)
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", body, flags=re.S)
    assert scripts == [""]
    assert not re.search(r"\son[a-z]+\s*=", body)
    assert "//" not in "".join(re.findall(r'(?:src|href)="([^"]*)"', body))  # nothing from another origin


VENDORED = WEB_DIR / "qrcode-generator.js"
_VENDOR_HEADER = 6  # comment lines this project put above the package's own file, and a blank line after them


def test_the_vendored_qr_library_is_the_pinned_file_unchanged():
    """backend/web/qrcode-generator.js names its package, version, source and hashes, and below its header is
    byte for byte the package's dist/qrcode.mjs, whose own MIT notice it keeps."""
    *header, blank, body = VENDORED.read_text().split("\n", _VENDOR_HEADER + 1)
    assert blank == "" and all(line.startswith("// ") for line in header)
    header_text = "\n".join(header)
    assert "qrcode-generator@2.0.4" in header_text and "MIT" in header_text
    assert "https://registry.npmjs.org/qrcode-generator/-/qrcode-generator-2.0.4.tgz" in header_text
    assert "02e2e18a99a90b02dad940851f59b7c3c5fd1ab79cbdece8595cb06328878159" in header_text
    [stated] = re.findall(r"dist/qrcode\.mjs sha256 ([0-9a-f]{64})", header_text)
    assert hashlib.sha256(body.encode()).hexdigest() == stated
    assert "Licensed under the MIT license" in body[:600]
