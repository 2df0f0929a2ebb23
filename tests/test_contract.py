"""The identity-header contract: every part that speaks the identity headers agrees with their one definition
(identity_headers) on the names, the default prefix and the prefix pattern. The parts meet only over the wire, so
each is checked by what it does: the headers authz sets, the prefix Envoy strips and logs, the headers the backend
reads, what the local stack hands each part, the floor's reply, and the table README documents. Change one part's
prefix alone and its test here fails."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import identity_headers
from authz.authorizer import loggable_path as authz_loggable_path
from authz.config import ConfigError, Settings
from authz.http import reply
from authz.policy import Policy
from authz.routes import RouteSettings
from authz.service import _response
from authz.tokens import VerifiedToken
from backend import create_app
from backend.access_log import loggable_path as backend_loggable_path
from backend.identity import read_identity
from bench.floor import IDENTITY_HEADERS as FLOOR_HEADERS
from envoy import bootstrap
from stack.local import LocalStack, Ports
from tests.conftest import CLIENT_ID, POOL_ID

ROOT = Path(__file__).resolve().parent.parent
OTHER_PREFIX = "x-caller-"
# Prefixes on both sides of the pattern: every part must accept exactly the ones the definition accepts.
CANDIDATE_PREFIXES = ("x-user-", "x-caller-", "id-", "a1-", "X-User-", "x-user", "-x-", "x_user-", "x-us er-", "")

# Every field set, so that an allow sets every header (an identity provider comes only with an id token, scopes only
# with an access token: the names and their order are what this holds to).
CALLER = VerifiedToken(
    sub="7c0a1d2e-0000-4000-8000-000000000001",
    token_use="access",
    client_id=CLIENT_ID,
    pool_id=POOL_ID,
    username="andrew",
    groups=("admins", "staff"),
    scopes=("feed/read", "feed/write"),
    expires_at=2e9,
    identity_provider="LocalIdP",
)


def test_readme_documents_the_defined_headers_in_order():
    """The Allow table users read lists exactly the defined headers, at the default prefix, in emitted order."""
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    assert [name for name in documented if name.startswith(identity_headers.DEFAULT_PREFIX)] == list(
        identity_headers.header_names()
    )


# ---------------------------------------------------------------------------------------------------- authz


def test_authz_defaults_to_the_defined_prefix_and_sets_the_defined_headers():
    """authz's AUTHZ_HEADER_PREFIX default is the defined one, and an allow sets the defined headers in order."""
    settings = Settings.from_env({"AWS_COGNITO_USER_POOLS_ID": POOL_ID, "AWS_COGNITO_CLIENT_ID": CLIENT_ID})
    assert settings.header_prefix == identity_headers.DEFAULT_PREFIX
    allow = Policy(header_prefix=settings.header_prefix).decide(CALLER, RouteSettings())
    assert [name for name, _ in allow.upstream_headers] == list(identity_headers.header_names())


def test_authz_follows_another_prefix_and_accepts_exactly_the_defined_pattern():
    """With another prefix authz names every header with it; it accepts a prefix exactly when the pattern does."""
    assert Policy(header_prefix=OTHER_PREFIX).identity_headers == identity_headers.header_names(OTHER_PREFIX)
    for prefix in CANDIDATE_PREFIXES:
        env = {"AWS_COGNITO_USER_POOLS_ID": POOL_ID, "AWS_COGNITO_CLIENT_ID": CLIENT_ID, "AUTHZ_HEADER_PREFIX": prefix}
        accepted = _accepts(lambda env=env: Settings.from_env(env), ConfigError)
        # An empty AUTHZ_HEADER_PREFIX means the default, as every empty setting does.
        assert accepted == (not prefix or _valid(prefix)), prefix


# -------------------------------------------------------------------------------------------------- backend


def test_backend_defaults_to_the_defined_prefix_and_reads_every_defined_header():
    """The backend's IDENTITY_HEADER_PREFIX default is the defined one, and it reads each defined header as the
    field authz put there (groups and scopes split on the defined separators)."""
    app = create_app({})
    assert app.config["IDENTITY_HEADER_PREFIX"] == identity_headers.DEFAULT_PREFIX
    allow = Policy().decide(CALLER, RouteSettings())
    identity = read_identity(dict(allow.upstream_headers), app.config["IDENTITY_HEADER_PREFIX"])
    assert identity is not None
    assert (
        identity.sub,
        identity.username,
        identity.groups,
        identity.scopes,
        identity.client_id,
        identity.token_use,
        identity.principal,
    ) == (
        CALLER.sub,
        CALLER.username,
        CALLER.groups,
        CALLER.scopes,
        CALLER.client_id,
        CALLER.token_use,
        CALLER.principal,
    )


def test_backend_accepts_exactly_the_defined_pattern():
    """The backend refuses a prefix at start exactly when the definition's pattern does."""
    for prefix in CANDIDATE_PREFIXES:
        accepted = _accepts(lambda prefix=prefix: create_app({"IDENTITY_HEADER_PREFIX": prefix}), ValueError)
        assert accepted == (not prefix or _valid(prefix)), prefix


# ---------------------------------------------------------------------------------------------------- Envoy


@pytest.mark.parametrize(
    "rendered, prefix",
    [
        (lambda: bootstrap.render(bootstrap.local()), identity_headers.DEFAULT_PREFIX),
        (lambda: yaml.safe_load(bootstrap.COMPOSE_FILE.read_text()), identity_headers.DEFAULT_PREFIX),
        (lambda: bootstrap.render(bootstrap.local(identity_header_prefix=OTHER_PREFIX)), OTHER_PREFIX),
    ],
    ids=["local", "compose-file", "other-prefix"],
)
def test_envoy_strips_the_defined_prefix_and_logs_the_caller_authz_names(rendered: Any, prefix: str):
    """Envoy strips client headers by the prefix (any case): the defined one by default (also in the committed
    compose config), another when the topology names it. It logs the caller from the key authz writes into the
    allow's dynamic metadata, never from a header a client could send."""
    manager = rendered()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [strip] = [f for f in manager["http_filters"] if f["name"] == bootstrap.HEADER_MUTATION]
    matcher = strip["typed_config"]["mutations"]["request_mutations"][0]["remove_on_match"]["key_matcher"]
    assert matcher == {"prefix": prefix, "ignore_case": True}
    access_log = manager["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert access_log["user"] == f"%DYNAMIC_METADATA({bootstrap.EXT_AUTHZ}:{identity_headers.METADATA_SUB})%"


def test_authz_writes_the_caller_metadata_where_envoy_reads_it():
    """An allow's gRPC dynamic_metadata has exactly the defined keys; the HTTP reply carries them as headers, which
    Envoy's HTTP mode copies into metadata by exactly those names (and does not forward, being outside the prefix);
    the per-caller rate limit keys on the defined sub."""
    allow = Policy().decide(CALLER, RouteSettings())
    assert set(_response(allow).dynamic_metadata.fields) == set(identity_headers.METADATA_KEYS)
    _, headers, _ = reply(allow)
    assert [name for name, _ in headers if name in identity_headers.METADATA_KEYS] == list(
        identity_headers.METADATA_KEYS
    )
    http = bootstrap.render(bootstrap.local(authz_transport=bootstrap.Transport.HTTP, authz_health_ports=(9192,)))
    manager = http["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [ext_authz] = [f for f in manager["http_filters"] if f["name"] == bootstrap.EXT_AUTHZ]
    response = ext_authz["typed_config"]["http_service"]["authorization_response"]
    assert [p["exact"] for p in response["dynamic_metadata_from_headers"]["patterns"]] == list(
        identity_headers.METADATA_KEYS
    )
    assert response["allowed_upstream_headers"]["patterns"] == [{"prefix": identity_headers.DEFAULT_PREFIX}]
    assert not any(key.startswith(identity_headers.DEFAULT_PREFIX) for key in identity_headers.METADATA_KEYS)
    limited = bootstrap.render(bootstrap.local(user_rate_limit=5))
    manager = limited["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [rate_limit] = [f for f in manager["http_filters"] if f["name"] == bootstrap.LOCAL_RATE_LIMIT]
    [action] = rate_limit["typed_config"]["rate_limits"][0]["actions"]
    assert action["metadata"]["metadata_key"]["path"] == [{"key": identity_headers.METADATA_SUB}]


# ---------------------------------------------------------------------------------------------- stack, bench


def test_the_local_stack_hands_all_three_parts_one_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`make run`'s stack defaults to the defined prefix and gives the same one, default or not, to the backend,
    authz and Envoy."""
    started: dict[str, dict[str, str]] = {}
    monkeypatch.setattr(LocalStack, "_start", lambda self, name, argv, env, *a, **k: started.update({name: env}))
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, identity_headers.DEFAULT_PREFIX),
        ({"identity_header_prefix": OTHER_PREFIX}, OTHER_PREFIX),
    ]
    for options, expected in cases:
        stack = LocalStack(ports=Ports(), run_dir=tmp_path, **options)
        stack.start_backend()
        stack.start_authz()
        stack.start_envoy()
        assert started["backend"]["IDENTITY_HEADER_PREFIX"] == expected
        assert started["authz"]["AUTHZ_HEADER_PREFIX"] == expected
        rendered = stack.envoy_config_path.read_text()
        assert f'"prefix": "{expected}"' in rendered


def test_the_bench_floor_replies_with_the_defined_headers():
    """The constant-reply floor the bench compares against sets the same headers as a real allow."""
    assert tuple(name for name, _ in FLOOR_HEADERS) == identity_headers.header_names()


def _valid(prefix: str) -> bool:
    return identity_headers.PREFIX_PATTERN.fullmatch(prefix) is not None


def _accepts(build: Any, refusal: type[Exception]) -> bool:
    try:
        build()
    except refusal:
        return False
    return True


# ------------------------------------------------------------------------------------------------ logged paths

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
LOGGED_PATHS = {
    "/api/me": "/api/me",
    "/api/me?access_token=" + JWT: "/api/me",
    "/api/me;access_token=" + JWT: "/api/me",
    "/api/me;jsessionid=1?x=2": "/api/me",
    "/api/me#access_token=" + JWT: "/api/me",
    "/api/" + JWT: "-",
    "/api/" + JWT + "/x?y=1": "-",
    "/api/activities/home": "/api/activities/home",
    "": "",
}


@pytest.mark.parametrize("path", LOGGED_PATHS)
def test_authz_and_the_backend_log_a_path_alike_and_never_a_token(path: str):
    """authz's decision log and the backend's access log cut a path before its query, parameters or fragment and
    withhold one shaped like a JWT, by the same rule (Envoy's access log withholds what they cut)."""
    assert authz_loggable_path(path) == backend_loggable_path(path) == LOGGED_PATHS[path]
