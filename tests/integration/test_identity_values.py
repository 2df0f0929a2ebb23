"""Identity values as the backend gets them through the real stack (Envoy -> authz -> gunicorn): names in any script,
the largest identity Cognito can issue, and what happens beyond it.

Tokens are the emulator's own, re-signed with changed claims (tests.integration.cruddur_api.resign): tokens the pool
could have issued. Like Cognito, the signer writes claims as raw UTF-8.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

import identity_headers
from stack.local import LocalStack
from tests.integration.cruddur_api import User, bearer, get, resign, sign_up

# Names Cognito allows (any letter, mark, symbol, number or punctuation). `管理者` and `voilà` end in the UTF-8
# bytes \x85 and \xa0, which a server reading header bytes as ISO-8859-1 sees as whitespace.
NAMES = ["管理者", "café", "voilà", "Ünïcödé-Ω", "😀"]

# The largest identity a Cognito user pool can give a user (identity_headers says where each limit is documented):
# 100 groups of 128 characters, each 4 bytes of UTF-8; 50 scopes of 256 characters; a username of 128 characters.
LARGEST_GROUPS = [chr(0x1F600 + index) + "\U0001f600" * 127 for index in range(100)]
LARGEST_SCOPES = [f"{index:02}" + "s" * 254 for index in range(50)]
LARGEST_USERNAME = "\U0001f600" * 128


def json_401(response: requests.Response, description: str) -> dict[str, Any]:
    """The contract's invalid-token deny: 401, a Bearer challenge naming the reason, and its JSON body."""
    assert response.status_code == 401, (response.status_code, response.headers, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="api", error="invalid_token", error_description="{description}"'
    )
    body = response.json()
    assert body == {"error": "invalid_token", "message": description}
    return body


@pytest.fixture(scope="module")
def full_size(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A second Envoy and authz in front of the stack's own backend (gunicorn) and Cognito, with authz's token size
    cap at identity_headers.MAX_TOKEN_BYTES: the largest token Cognito issues for the largest identity."""
    proxy = LocalStack(
        ports=stack.ports.beside(),
        run_dir=tmp_path_factory.mktemp("full-size"),
        authz_env={"AUTHZ_MAX_TOKEN_BYTES": str(identity_headers.MAX_TOKEN_BYTES)},
        envoy_concurrency=1,
    )
    proxy.use_cognito(stack.cognito_env)
    try:
        proxy.start_authz()
        proxy.start_envoy()
        yield proxy
    finally:
        proxy.stop()


# -- names in any script ------------------------------------------------------------------------------------------


def test_non_ascii_names_reach_the_backend_exactly(stack: LocalStack, user: User):
    """A username and group names in any script (`管理者`, `café`) reach the backend exactly as Cognito issued them,
    not as `ç®¡ç` or `cafÃ©`: /api/me and the feed show them as they are."""
    token = resign(user.access_token, username="café-管理者", **{"cognito:groups": NAMES})
    me = get(stack, "/api/me", headers=bearer(token)).json()
    assert (me["sub"], me["username"], me["groups"]) == (user.sub, "café-管理者", NAMES)
    feed = get(stack, "/api/activities/home", headers=bearer(token)).json()
    assert (feed[0]["uuid"], feed[0]["handle"]) == (user.sub, "café-管理者")


# -- edge whitespace --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edge", [" ", "\t", "\u00a0", "\u3000"], ids=["space", "tab", "no-break-space", "ideographic"])
def test_a_sub_with_edge_whitespace_is_refused_not_trimmed_into_another_callers(
    stack: LocalStack, cognito: Any, user: User, edge: str
):
    """A token whose sub is another caller's with whitespace at an edge (which Envoy and gunicorn would trim away) is
    refused as invalid: the backend never sees the other caller's sub."""
    victim = sign_up(stack, cognito)
    for sub in (edge + victim.sub, victim.sub + edge):
        json_401(get(stack, "/api/me", headers=bearer(resign(user.access_token, sub=sub))), "invalid token claims")


# -- large identities -----------------------------------------------------------------------------------------


def test_an_identity_with_many_long_group_names_reaches_the_backend(stack: LocalStack, user: User):
    """64 groups of 128-character names (an 8.3 KB x-user-groups header, over gunicorn's default 8190-byte limit)
    reach the backend intact: 200 with every group, not gunicorn's 431 HTML page."""
    groups = [f"{index:02}-" + "g" * 125 for index in range(64)]
    response = get(stack, "/api/me", headers=bearer(resign(user.access_token, **{"cognito:groups": groups})))
    assert response.status_code == 200, (response.status_code, response.text[:300])
    assert response.json()["groups"] == groups


def test_the_largest_identity_cognito_can_issue_reaches_the_backend_intact(full_size: LocalStack, user: User):
    """An access token with the largest identity Cognito can issue (100 groups of 128 four-byte characters, 50
    scopes of 256 characters, a username of 128 four-byte characters) passes Envoy and authz, and the
    backend answers with every value exactly as issued."""
    token = resign(
        user.access_token,
        username=LARGEST_USERNAME,
        scope=" ".join(LARGEST_SCOPES),
        **{"cognito:groups": LARGEST_GROUPS},
    )
    assert len(",".join(LARGEST_GROUPS).encode()) == identity_headers.MAX_VALUE_BYTES
    assert len(token) <= identity_headers.MAX_TOKEN_BYTES
    response = get(full_size, "/api/me", headers=bearer(token))
    assert response.status_code == 200, (response.status_code, response.text[:300])
    me = response.json()
    assert (me["sub"], me["username"]) == (user.sub, LARGEST_USERNAME)
    assert (me["groups"], me["scopes"]) == (LARGEST_GROUPS, LARGEST_SCOPES)


def test_a_token_at_the_size_cap_with_all_the_identity_it_can_carry_reaches_the_backend(
    full_size: LocalStack, user: User
):
    """A token of nearly authz's whole cap whose payload is almost all identity (the largest group list, and scopes
    filling the rest) reaches the backend intact: Envoy's header limit holds the token and the identity headers
    ext_authz adds beside it."""
    base = resign(user.access_token, scope="", **{"cognito:groups": LARGEST_GROUPS})
    room = (identity_headers.MAX_TOKEN_BYTES - len(base)) * 3 // 4 - 64
    scopes = [f"{index:04}" + "s" * 251 for index in range(room // 256)]
    token = resign(user.access_token, scope=" ".join(scopes), **{"cognito:groups": LARGEST_GROUPS})
    assert identity_headers.MAX_TOKEN_BYTES - 512 < len(token) <= identity_headers.MAX_TOKEN_BYTES
    response = get(full_size, "/api/me", headers=bearer(token))
    assert response.status_code == 200, (response.status_code, response.text[:300])
    assert (response.json()["groups"], response.json()["scopes"]) == (LARGEST_GROUPS, scopes)


def test_an_identity_beyond_cognitos_limits_is_a_json_401(full_size: LocalStack, user: User):
    """A token whose groups would make a longer header value than the largest Cognito identity (only a
    pre-token-generation trigger can issue one) is answered by the contract: 401 invalid_token in JSON."""
    token = resign(user.access_token, **{"cognito:groups": [*LARGEST_GROUPS, "one-more"]})
    json_401(get(full_size, "/api/me", headers=bearer(token)), "invalid token claims")


def test_a_token_over_the_size_cap_is_a_json_401(full_size: LocalStack, user: User):
    """A token longer than authz's cap reaches authz (Envoy's header limit leaves room for it) and is answered by
    the contract, 401 "token too large" in JSON, not with Envoy's own 431."""
    token = resign(user.access_token, padding="p" * identity_headers.MAX_TOKEN_BYTES)
    assert len(token) > identity_headers.MAX_TOKEN_BYTES
    json_401(get(full_size, "/api/me", headers=bearer(token)), "token too large")
