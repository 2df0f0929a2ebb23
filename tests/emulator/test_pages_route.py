"""The pages' way to the emulator through a real Envoy (compose's /cognito/ route, envoy/bootstrap.py), in front of the
real emulator (stack/emulator.py): the pages' own user-pool actions reach it, and no other action does, however a
client dresses it up (moto reads an Action in the query string or in a body read as a form before X-Amz-Target, and
serves its own /moto-api/ for a reset or a dump of every user's password)."""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyotp
import pytest
import requests

from envoy import bootstrap
from stack.cognito import cognito_client, provision, register
from stack.emulator import names_another_action
from stack.local import envoy_process
from stack.processes import free_ports
from tests.conftest import REGION

TARGET = "AWSCognitoIdentityProviderService."
JSON = "application/x-amz-json-1.1"


@pytest.fixture(scope="module")
def edge(emulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Envoy rendered as compose's, with the emulator behind its /cognito/ route: its URL."""
    envoy_port, admin_port = free_ports(2)
    emulator_address = urlsplit(emulator)
    topology = dataclasses.replace(
        bootstrap.local(envoy_port=envoy_port, admin_port=admin_port),
        cognito=bootstrap.HostPort("127.0.0.1", emulator_address.port or 80),
    )
    run_dir: Path = tmp_path_factory.mktemp("pages-route")
    with envoy_process("envoy", bootstrap.render(topology), run_dir, envoy_port=envoy_port, admin_port=admin_port):
        yield f"http://127.0.0.1:{envoy_port}"


def call(url: str, action: str, body: dict[str, Any] | str, **headers: str) -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(
        url, data=data, headers={"X-Amz-Target": TARGET + action, "Content-Type": JSON, **headers}, timeout=10
    )


def pools(emulator: str) -> list[str]:
    return [pool["Name"] for pool in cognito_client(REGION, emulator).list_user_pools(MaxResults=60)["UserPools"]]


def test_the_pages_actions_reach_the_emulator_through_envoy(edge: str, emulator: str):
    """A call as the pages make it (a POST to /cognito/ with one of their X-Amz-Targets) gets the emulator's own
    answer: here Cognito's error for a user that does not exist."""
    client_id = provision(cognito_client(REGION, emulator), REGION).client_id
    answer = call(
        edge + "/cognito/",
        "InitiateAuth",
        {
            "ClientId": client_id,
            "AuthFlow": "USER_PASSWORD_AUTH",
            "AuthParameters": {"USERNAME": "x@y.z", "PASSWORD": "p"},
        },
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["__type"].split("#")[-1] in ("NotAuthorizedException", "UserNotFoundException")


def test_the_pages_authenticator_app_and_sign_out_pass_through_envoy(edge: str, emulator: str):
    """Everything the pages' Security page, code step and sign-out call passes the route, as the pages call it: an
    authenticator app turned on (AssociateSoftwareToken, VerifySoftwareToken, SetUserMFAPreference), a sign-in
    answered with its code (RespondToAuthChallenge), and the refresh token revoked (RevokeToken)."""
    cognito = cognito_client(REGION, emulator)
    provisioned = provision(cognito, REGION)
    client_id = provisioned.client_id
    email, password = f"route-{uuid.uuid4().hex[:10]}@cruddur.local", "Sup3r-secret!"
    register(
        cognito,
        provisioned.pool_id,
        client_id,
        email=email,
        password=password,
        name="Route User",
        handle="route",
    )
    route = edge + "/cognito/"
    sign_in = {
        "ClientId": client_id,
        "AuthFlow": "USER_PASSWORD_AUTH",
        "AuthParameters": {"USERNAME": email, "PASSWORD": password},
    }
    tokens = call(route, "InitiateAuth", sign_in).json()["AuthenticationResult"]
    secret = call(route, "AssociateSoftwareToken", {"AccessToken": tokens["AccessToken"]}).json()["SecretCode"]
    totp = pyotp.TOTP(secret)
    now = int(time.time())
    verified = call(route, "VerifySoftwareToken", {"AccessToken": tokens["AccessToken"], "UserCode": totp.at(now)})
    assert verified.json().get("Status") == "SUCCESS", verified.text
    preference = {"AccessToken": tokens["AccessToken"], "SoftwareTokenMfaSettings": {"Enabled": True}}
    assert call(route, "SetUserMFAPreference", preference).status_code == 200
    challenge = call(route, "InitiateAuth", sign_in).json()
    assert challenge["ChallengeName"] == "SOFTWARE_TOKEN_MFA", challenge
    # A step's code is accepted once, and this step's verified the app: the next step's is accepted as well.
    answer = call(
        route,
        "RespondToAuthChallenge",
        {
            "ClientId": client_id,
            "ChallengeName": "SOFTWARE_TOKEN_MFA",
            "Session": challenge["Session"],
            "ChallengeResponses": {"USERNAME": email, "SOFTWARE_TOKEN_MFA_CODE": totp.at(now + 30)},
        },
    )
    refresh_token = answer.json()["AuthenticationResult"]["RefreshToken"]
    assert call(route, "RevokeToken", {"ClientId": client_id, "Token": refresh_token}).status_code == 200
    refresh = {
        "ClientId": client_id,
        "AuthFlow": "REFRESH_TOKEN_AUTH",
        "AuthParameters": {"REFRESH_TOKEN": refresh_token},
    }
    refused = call(route, "InitiateAuth", refresh)
    assert refused.status_code == 400 and refused.json()["__type"].endswith("NotAuthorizedException"), refused.text


def test_a_second_target_or_a_compressed_body_runs_no_other_action(edge: str, emulator: str):
    """A second X-Amz-Target (the emulator's server joins them, and moto runs what follows the last dot) and a gzip
    body hiding an Action (moto decompresses before it reads one) each run nothing but what the route allows, with a
    User-Agent that names the pool's Region (moto takes one from it)."""
    pool_id = provision(cognito_client(REGION, emulator), REGION).pool_id
    users = cognito_client(REGION, emulator).list_users(UserPoolId=pool_id)["Users"]
    before = pools(emulator)
    address = urlsplit(edge)
    smuggled = gzip.compress(json.dumps({"UserPoolId": pool_id, "x": "&Action=ListUsers&"}).encode())
    attempts = [
        (
            [("X-Amz-Target", TARGET + "SignUp"), ("X-Amz-Target", "x.ListUsers")],
            json.dumps({"UserPoolId": pool_id}).encode(),
        ),
        ([("X-Amz-Target", TARGET + "InitiateAuth"), ("Content-Encoding", "gzip")], smuggled),
    ]
    for headers, body in attempts:
        connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
        try:
            connection.putrequest("POST", "/cognito/")
            for name, value in [*headers, ("Content-Type", JSON), ("User-Agent", f"x region/{REGION}")]:
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            answer = connection.getresponse()
            text = answer.read().decode("utf-8", "replace")
        finally:
            connection.close()
        assert answer.status != 200 and "Users" not in text and "Username" not in text, (headers, text[:300])
    assert pools(emulator) == before
    assert cognito_client(REGION, emulator).list_users(UserPoolId=pool_id)["Users"] == users


@pytest.mark.parametrize(
    "path, action, body, headers",
    [
        ("/cognito/", "ListUserPools", {"MaxResults": 1}, {}),
        ("/cognito/?Action=CreateUserPool&PoolName=evil", "InitiateAuth", {}, {}),
        ("/cognito/?Action=CreateUserPool&PoolName=evil", "InitiateAuth", {}, {"Content-Type": "text/plain"}),
        ("/cognito/", "InitiateAuth", {"PoolName": "evil", "x": "&Action=CreateUserPool&"}, {}),
        (
            "/cognito/",
            "InitiateAuth",
            "Action=CreateUserPool&PoolName=evil",
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        ("/cognito/moto-api/reset", "InitiateAuth", {}, {}),
        ("/cognito/moto-api/data.json", "InitiateAuth", {}, {}),
        ("/cognito//", "InitiateAuth", {}, {}),
        ("/cognito/", "CreateUserPool", {"PoolName": "evil"}, {"X-Amz-Target": TARGET.lower() + "createuserpool"}),
        ("/cognito/", "CreateUserPool", {"PoolName": "evil"}, {"Host": "cognito-idp.us-east-1.amazonaws.com"}),
    ],
    ids=[
        "admin-action",
        "action-in-query",
        "action-in-query-as-text",
        "action-in-json-body",
        "action-in-form-body",
        "moto-api-reset",
        "moto-api-dump",
        "extra-slash",
        "target-case",
        "host-of-cognito",
    ],
)
def test_no_other_action_reaches_the_emulator(
    edge: str, emulator: str, path: str, action: str, body: Any, headers: dict[str, str]
):
    """Another action, in the header, the query, a JSON or form body, the emulator's own /moto-api/, another path
    or Host: refused (Envoy's 403, or the emulator's 400 for a second action), and nothing changed in the emulator."""
    provision(cognito_client(REGION, emulator), REGION)
    before = pools(emulator)
    answer = call(edge + path, action, body, **headers)
    assert answer.status_code in (400, 403), (answer.status_code, answer.text[:300])
    assert "evil" not in answer.text and "Password" not in answer.text
    assert pools(emulator) == before
    assert requests.get(edge + "/cognito/moto-api/data.json", timeout=10).status_code == 403


@pytest.mark.parametrize(
    "query, content_type, body, named",
    [
        ("", JSON, b'{"ClientId": "c"}', False),
        ("", JSON, b'{"Username": "a&b=c"}', False),
        ("Action=ListUserPools", JSON, b"{}", True),
        ("x=1", JSON, b"{}", True),
        ("", JSON, b'{"x": "&Action=AdminCreateUser&"}', True),
        ("", "application/x-www-form-urlencoded", b"a=b", True),
        ("", "multipart/form-data; boundary=x", b"", True),
    ],
)
def test_a_json_call_that_also_names_an_action_where_moto_looks_first_is_refused(
    query: str, content_type: str, body: bytes, named: bool
):
    """The emulator's own rule, whatever is in front of it: a call with X-Amz-Target may carry no query string, no
    form body, and no Action in its body read as a form."""
    assert names_another_action({"QUERY_STRING": query, "CONTENT_TYPE": content_type}, body) is named
