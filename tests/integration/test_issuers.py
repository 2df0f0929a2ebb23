"""Cognito's two issuer formats through the real Envoy and authz of the stack (README, Issuers): a token of the
pool's UPDATED-format issuer passes like its ORIGINAL-format twin, and every other spelling is a 401 the client can
read. Tokens are the emulator's own, re-signed with its key after the issuer is changed (a token the pool could
have issued in the other format)."""

from __future__ import annotations

import base64
import json

import pytest

from stack.local import LocalStack
from tests.integration.cruddur_api import User, bearer, get, resign
from tests.integration.test_identity_values import json_401


def issuers(user: User) -> tuple[str, str, str]:
    """The pool's ORIGINAL issuer (what the emulator mints), its UPDATED twin, and the pool's Region."""
    payload = user.access_token.split(".")[1]
    original = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iss"]
    region = original.split("//cognito-idp.", 1)[1].split(".amazonaws.com/", 1)[0]
    return original, original.replace("https://cognito-idp.", "https://issuer-cognito-idp.", 1), region


def test_a_token_of_the_pools_updated_issuer_passes_envoy_as_its_original_twin_does(stack: LocalStack, user: User):
    original, updated, _ = issuers(user)
    for iss in (original, updated):
        response = get(stack, "/api/me", headers=bearer(resign(user.access_token, iss=iss)))
        assert response.status_code == 200, (iss, response.status_code, response.text[:200])
        assert response.json()["sub"] == user.sub


@pytest.mark.parametrize(
    "spelling",
    [
        "updated/",
        "UPDATED",
        "http-updated",
        "updated:443",
        "updated-in-another-region",
        "original-in-another-region",
    ],
)
def test_any_other_issuer_spelling_gets_envoys_401_untrusted_issuer(stack: LocalStack, user: User, spelling: str):
    original, updated, region = issuers(user)
    iss = {
        "updated/": updated + "/",
        "UPDATED": updated.upper(),
        "http-updated": updated.replace("https://", "http://"),
        "updated:443": updated.replace(".amazonaws.com/", ".amazonaws.com:443/"),
        "updated-in-another-region": updated.replace(region, "us-west-2"),
        "original-in-another-region": original.replace(region, "us-west-2"),
    }[spelling]
    json_401(get(stack, "/api/me", headers=bearer(resign(user.access_token, iss=iss))), "untrusted token issuer")
