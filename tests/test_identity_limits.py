"""The sizes in identity_headers hold for the largest identity Cognito can issue, and every part on its way admits it:
authz's verifier, Envoy's request header limit, gunicorn's header line limit. Change one part's limit alone, or a
Cognito limit, and a test here fails."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import identity_headers
from authz.http import reply
from authz.jwks import JwksCache
from authz.policy import Policy
from authz.routes import RouteSettings
from authz.tokens import TokenVerifier
from envoy import bootstrap
from tests.conftest import CLIENT_ID, ISSUER, NOW, POOL_ID, FakeClock, access_claims, jwks_document, mint

ROOT = Path(__file__).resolve().parent.parent
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

# Each of Cognito's maxima, at its costliest: a group name or username of 128 four-byte characters, and scopes of
# 256 characters that are nearly all "/", which Cognito writes as "\/" (the part after the last "/", the scope
# name, may not hold one).
GROUPS = [chr(0x1F600 + index) + "\U0001f600" * 127 for index in range(identity_headers.COGNITO_MAX_GROUPS_PER_USER)]
SCOPES = [
    "/" * (identity_headers.COGNITO_MAX_SCOPE_CHARACTERS - 3) + f"{index:02}"
    for index in range(identity_headers.COGNITO_MAX_SCOPES_PER_CLIENT)
]
USERNAME = "\U0001f600" * identity_headers.COGNITO_MAX_USERNAME_CHARACTERS


def cognito_json(claims: dict[str, Any]) -> bytes:
    """Claims as Cognito writes them: compact, non-ASCII as raw UTF-8, "/" escaped as "\\/"."""
    return json.dumps(claims, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/").encode()


def largest_access_token() -> str:
    """An access token of a pool carrying the largest identity Cognito can give a user, every claim at its longest
    (a client id of 128 characters, the largest Cognito allows)."""
    claims = access_claims(
        client_id="c" * 128,
        username=USERNAME,
        scope=" ".join(SCOPES),
        version=2,
        jti="5e6f7a8b-aaaa-4bbb-8ccc-000000000003",
        **{"cognito:groups": GROUPS},
    )
    return mint(cognito_json(claims))


def test_the_longest_value_is_the_largest_group_list() -> None:
    """MAX_VALUE_BYTES is exactly the largest group list Cognito can give a user, comma-joined in UTF-8, and the
    other values at Cognito's maxima (scopes, username) are shorter."""
    assert len(identity_headers.GROUPS_SEPARATOR.join(GROUPS).encode()) == identity_headers.MAX_VALUE_BYTES
    assert len(identity_headers.SCOPES_SEPARATOR.join(SCOPES).encode()) < identity_headers.MAX_VALUE_BYTES
    assert len(USERNAME.encode()) < identity_headers.MAX_VALUE_BYTES


def test_the_largest_token_fits_max_token_bytes_and_verifies_intact() -> None:
    """The largest access token for the largest identity is under MAX_TOKEN_BYTES, and a verifier capped there
    yields every value of it exactly."""
    token = largest_access_token()
    assert 100_000 < len(token) <= identity_headers.MAX_TOKEN_BYTES
    clock = FakeClock(NOW)
    verifier = TokenVerifier(
        issuers={ISSUER: POOL_ID},
        key_sources={ISSUER: JwksCache(f"{ISSUER}/jwks.json", fetcher=lambda *_: jwks_document(), clock=clock)},
        client_ids={"c" * 128, CLIENT_ID},
        max_token_bytes=identity_headers.MAX_TOKEN_BYTES,
        clock=clock,
    )
    verified = verifier.verify(token)
    assert (verified.groups, verified.scopes, verified.username) == (tuple(GROUPS), tuple(SCOPES), USERNAME)


def test_envoy_holds_a_token_at_the_cap_beside_the_identity_made_from_it() -> None:
    """Envoy's request header limit holds, at once, an Authorization header with a token of MAX_TOKEN_BYTES, the
    identity headers ext_authz adds while the token is still there (the built-in ones and the claim headers, each
    set's values from the token's payload, at most 3/4 of its length), and 32 KiB of other headers."""
    [listener] = bootstrap.render(bootstrap.local())["static_resources"]["listeners"]
    [manager] = [item["typed_config"] for item in listener["filter_chains"][0]["filters"]]
    assert manager["@type"] == HCM
    authorization = len("authorization") + len("Bearer ") + identity_headers.MAX_TOKEN_BYTES
    identity = sum(map(len, identity_headers.header_names())) + identity_headers.MAX_TOKEN_BYTES * 3 // 4
    claims = 1024 + identity_headers.MAX_TOKEN_BYTES * 3 // 4
    assert manager["max_request_headers_kb"] * 1024 >= authorization + identity + claims + 32 * 1024


def test_envoys_http_mode_takes_the_largest_allow_authz_can_send() -> None:
    """The largest allow over HTTP (the largest identity in its headers, again as caller metadata, and claim headers
    as large) fits the reply header limit of Envoy's authz cluster."""
    clock = FakeClock(NOW)
    verifier = TokenVerifier(
        issuers={ISSUER: POOL_ID},
        key_sources={ISSUER: JwksCache(f"{ISSUER}/jwks.json", fetcher=lambda *_: jwks_document(), clock=clock)},
        client_ids={"c" * 128},
        max_token_bytes=identity_headers.MAX_TOKEN_BYTES,
        clock=clock,
    )
    _, headers, _ = reply(Policy().decide(verifier.verify(largest_access_token()), RouteSettings()))
    sent = sum(len(name) + len(value.encode()) + 4 for name, value in headers)
    assert sent > 2 * identity_headers.MAX_VALUE_BYTES  # the groups, twice
    claims = 1024 + identity_headers.MAX_TOKEN_BYTES * 3 // 4
    http = bootstrap.local(authz_transport=bootstrap.Transport.HTTP, authz_health_ports=(9192,))
    [cluster] = [
        c for c in bootstrap.render(http)["static_resources"]["clusters"] if c["name"] == bootstrap.AUTHZ_CLUSTER
    ]
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["common_http_protocol_options"]["max_response_headers_kb"] * 1024 >= sent + claims + 4 * 1024


def test_gunicorn_reads_the_longest_identity_header_line() -> None:
    """gunicorn's header line limit admits the longest identity header: the groups header at its longest value."""
    config = runpy.run_path(str(ROOT / "backend" / "gunicorn.conf.py"))
    longest_name = max(map(len, identity_headers.header_names()))
    assert config["limit_request_field_size"] >= longest_name + len(": ") + identity_headers.MAX_VALUE_BYTES
