"""Against moto's Cognito emulator: the seed's provisioning as code, and real Cognito-shaped tokens through authz."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from authz.client import check
from authz.server import run_server
from stack.cognito import (
    REPORTS_READ,
    MachineClient,
    client_token,
    cognito_client,
    ensure_user,
    provision,
    provision_machine_client,
    sign_in,
)
from tests.conftest import REGION, emulator_settings

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
    settings = emulator_settings(emulator, provisioned.pool_id, provisioned.client_id)
    with run_server(settings) as server:
        addr = f"127.0.0.1:{server.port}"
        allowed = check(addr, token=tokens["AccessToken"], path="/api/me")
        assert allowed["allowed"] and allowed["upstream_headers"]["x-user-sub"] == sub
        assert allowed["upstream_headers"]["x-user-client-id"] == provisioned.client_id
        refused = check(addr, token=tokens["IdToken"], path="/api/me")
        assert (refused["allowed"], refused["http_status"]) == (False, 401)
        assert check(addr, token=tokens["IdToken"], context={"token_use": "id"})["allowed"]


def test_an_app_clients_own_token_from_the_emulator_is_a_client_principal(emulator):
    """GetClientToken (the emulator's, as Cognito's API Reference describes it) gives the machine client an access
    token for its resource-server scope; authz allows it as principal client with that scope and no name or groups,
    keeps it off a principal=user route, and never asks GetUser about it (which has no user for it)."""
    client = cognito_client(REGION, emulator)
    provisioned = provision(client, REGION)
    machine = provision_machine_client(client, provisioned.pool_id)
    token = client_token(client, machine)
    with pytest.raises(client.exceptions.NotAuthorizedException):
        client.get_user(AccessToken=token)
    settings = emulator_settings(
        emulator, provisioned.pool_id, provisioned.client_id, machine.client_id, revocation=True
    )
    with run_server(settings) as server:
        addr = f"127.0.0.1:{server.port}"
        allowed = check(addr, token=token, path="/reports", context={"principal": "client", "scopes": REPORTS_READ})
        assert allowed["allowed"], allowed
        headers = allowed["upstream_headers"]
        assert (headers["x-user-sub"], headers["x-user-principal"]) == (machine.client_id, "client")
        assert headers["x-user-scopes"] == REPORTS_READ
        assert {"x-user-name", "x-user-groups"} <= set(allowed["headers_to_remove"])
        refused = check(addr, token=token, path="/api/me", context={"principal": "user"})
        assert (refused["allowed"], refused["http_status"]) == (False, 403)


@pytest.mark.parametrize("fault", ["wrong-secret", "non-ascii-secret", "foreign-scope", "user-flow-client"])
def test_the_emulators_get_client_token_refuses_what_cognito_refuses(emulator, fault):
    """No token for a wrong secret, a scope the client was not given, or a client without ALLOW_CLIENT_TOKEN_AUTH
    (the pages' public client)."""
    client = cognito_client(REGION, emulator)
    provisioned = provision(client, REGION)
    machine = provision_machine_client(client, provisioned.pool_id)
    if fault == "wrong-secret":
        call, error = (
            (lambda: client_token(client, MachineClient(machine.client_id, "not-the-secret-of-this-client"))),
            "NotAuthorized",
        )
    elif fault == "non-ascii-secret":
        call, error = (lambda: client_token(client, MachineClient(machine.client_id, "é" * 24))), "NotAuthorized"
    elif fault == "foreign-scope":
        call, error = (lambda: client_token(client, machine, ["reports-api/write"])), "InvalidParameter"
    else:
        call, error = (
            (lambda: client_token(client, MachineClient(provisioned.client_id, machine.secret))),
            "NotAuthorized",
        )
    with pytest.raises(ClientError) as raised:
        call()
    assert raised.value.response["Error"]["Code"] == f"{error}Exception"
