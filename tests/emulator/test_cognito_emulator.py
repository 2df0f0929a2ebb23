"""Against moto's Cognito emulator: the seed's provisioning as code, and real Cognito-shaped tokens through authz."""

from __future__ import annotations

from authz.client import check
from authz.config import Settings
from authz.server import run_server
from stack.cognito import cognito_client, ensure_user, provision, sign_in
from tests.conftest import REGION

USER = {"email": "andrew@cruddur.local", "password": "Sup3r-secret!", "name": "Andrew Brown", "handle": "andrewbrown"}


def test_provisioning_creates_the_seed_pool_once(emulator):
    """provision() creates cruddur-user-pool (email sign-in, required name/email/preferred_username) and client
    `cruddur` without a secret, and a second run reuses them."""
    client = cognito_client(REGION, emulator)
    first = provision(client, REGION)
    again = provision(client, REGION)
    assert (again.pool_id, again.client_id) == (first.pool_id, first.client_id)
    pool = client.describe_user_pool(UserPoolId=first.pool_id)["UserPool"]
    assert pool["Name"] == "cruddur-user-pool" and pool["UsernameAttributes"] == ["email"]
    required = {a["Name"] for a in pool["SchemaAttributes"] if a.get("Required")}
    assert {"name", "email", "preferred_username"} <= required
    app = client.describe_user_pool_client(UserPoolId=first.pool_id, ClientId=first.client_id)["UserPoolClient"]
    assert app["ClientName"] == "cruddur" and "ClientSecret" not in app


def test_emulator_tokens_are_allowed_and_identify_the_user(emulator):
    """A user signed up and signed in on the emulator is allowed by authz with their own sub; the id token is
    refused on an access-token route."""
    client = cognito_client(REGION, emulator)
    provisioned = provision(client, REGION)
    ensure_user(client, provisioned, **USER)
    tokens = sign_in(client, provisioned.client_id, USER["email"], USER["password"])
    sub = client.get_user(AccessToken=tokens["AccessToken"])["UserAttributes"]
    sub = next(attribute["Value"] for attribute in sub if attribute["Name"] == "sub")
    settings = Settings.from_env(
        {
            "AWS_COGNITO_USER_POOLS_ID": provisioned.pool_id,
            "AWS_COGNITO_CLIENT_ID": provisioned.client_id,
            "AUTHZ_JWKS_URL": emulator + "/{pool}/.well-known/jwks.json",
            "AUTHZ_ADDR": "127.0.0.1:0",
            "AUTHZ_METRICS_ADDR": "127.0.0.1:0",
        }
    )
    with run_server(settings) as server:
        addr = f"127.0.0.1:{server.port}"
        allowed = check(addr, token=tokens["AccessToken"], path="/api/me")
        assert allowed["allowed"] and allowed["upstream_headers"]["x-user-sub"] == sub
        assert allowed["upstream_headers"]["x-user-client-id"] == provisioned.client_id
        refused = check(addr, token=tokens["IdToken"], path="/api/me")
        assert (refused["allowed"], refused["http_status"]) == (False, 401)
        assert check(addr, token=tokens["IdToken"], context={"token_use": "id"})["allowed"]
