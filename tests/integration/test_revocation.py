"""Revocation through a real Envoy: a user signed out in Cognito loses their unexpired token within the TTL.

The session stack runs authz with revocation off (the default); this module starts a second Envoy and authz
server on ports of their own, with AUTHZ_REVOCATION=cognito and a 2 s TTL, in front of the session stack's
backend and Cognito emulator.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from stack.cognito import sign_in
from stack.local import LocalStack
from tests.integration.cruddur_api import PASSWORD, User, bearer, get, sign_up

TTL = 2.0
BOUND = TTL + 1.0  # the TTL of the last "active" answer, plus one GetUser


@pytest.fixture(scope="module")
def revoking(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Envoy and authz (AUTHZ_REVOCATION=cognito, TTL 2 s) on fresh ports, sharing the session stack's backend and
    Cognito emulator."""
    proxy = LocalStack(
        ports=stack.ports.beside(),
        run_dir=tmp_path_factory.mktemp("revoking"),
        authz_env={"AUTHZ_REVOCATION": "cognito", "AUTHZ_REVOCATION_TTL": str(int(TTL))},
        envoy_concurrency=1,
    )
    proxy.use_cognito(stack.cognito_env)
    try:
        proxy.start_authz()
        proxy.start_envoy()
        yield proxy
    finally:
        proxy.stop()


def _metric(stack: LocalStack, name: str, **labels: str) -> float:
    text = requests.get(stack.metrics_url(), timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


def _refused_after(proxy: LocalStack, token: str, since: float) -> tuple[requests.Response, float]:
    """Poll /api/me until it stops answering 200; that response and how long after `since` it came."""
    while True:
        response = get(proxy, "/api/me", headers=bearer(token))
        elapsed = time.monotonic() - since
        if response.status_code != 200 or elapsed > BOUND + 2.0:
            return response, elapsed
        time.sleep(0.05)


def test_signed_out_user_is_refused_through_envoy_within_the_ttl(revoking: LocalStack, stack: LocalStack, cognito: Any):
    """/api/me answers 200 with the caller's sub; after an admin global sign-out the same token gets 401
    error_description="token revoked" within TTL + 1 s, on /api/me and on the optional-auth home feed alike (a bad
    token there is refused, never downgraded to anonymous); a new sign-in works again. The session stack, with
    revocation off, still lets the signed-out token through: the default documented."""
    user: User = sign_up(stack, cognito)
    me = get(revoking, "/api/me", headers=bearer(user.access_token))
    assert me.status_code == 200
    assert me.json()["sub"] == user.sub
    feed = get(revoking, "/api/activities/home", headers=bearer(user.access_token))
    assert feed.status_code == 200 and feed.json()[0]["uuid"] == user.sub

    cognito.admin_user_global_sign_out(UserPoolId=stack.cognito_env["AWS_COGNITO_USER_POOLS_ID"], Username=user.email)
    signed_out = time.monotonic()
    refused, elapsed = _refused_after(revoking, user.access_token, signed_out)
    assert refused.status_code == 401, refused.text
    assert elapsed <= BOUND, f"refused {elapsed:.2f}s after the sign-out"
    challenge = refused.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in challenge and 'error_description="token revoked"' in challenge
    assert refused.json() == {"error": "invalid_token", "message": "token revoked"}

    on_feed = get(revoking, "/api/activities/home", headers=bearer(user.access_token))
    assert on_feed.status_code == 401
    assert 'error_description="token revoked"' in on_feed.headers["WWW-Authenticate"]
    assert get(revoking, "/api/activities/home").status_code == 200  # anonymous reads are unaffected

    assert get(stack, "/api/me", headers=bearer(user.access_token)).status_code == 200

    tokens = sign_in(cognito, stack.cognito_env["AWS_COGNITO_CLIENT_ID"], user.email, PASSWORD)
    again = get(revoking, "/api/me", headers=bearer(tokens["AccessToken"]))
    assert again.status_code == 200
    assert again.json()["sub"] == user.sub

    assert _metric(revoking, "authz_revocation_lookups_total", outcome="revoked") == 1
    assert _metric(revoking, "authz_revocation_lookups_total", outcome="active") >= 2
