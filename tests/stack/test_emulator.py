"""stack/emulator.py: moto's Cognito emulator plus ResendConfirmationCode (moto 5.2.5 answers it with a 500) and a
GlobalSignOut that works for pools outside us-east-1 (moto's looks for the token there only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from stack.cognito import register


def _sign_up(cognito, pool, email: str) -> None:
    register(cognito, pool.pool_id, pool.client_id, email=email, password="Sup3r-secret!", name="Ada", handle="ada")


def test_resend_code_to_an_unconfirmed_user_says_where_it_went(cognito, pool):
    """As Cognito answers: the code's destination, masked, by email."""
    cognito.sign_up(
        ClientId=pool.client_id,
        Username="new@cruddur.local",
        Password="Sup3r-secret!",
        UserAttributes=[
            {"Name": "email", "Value": "new@cruddur.local"},
            {"Name": "name", "Value": "N"},
            {"Name": "preferred_username", "Value": "n"},
        ],
    )
    details = cognito.resend_confirmation_code(ClientId=pool.client_id, Username="new@cruddur.local")[
        "CodeDeliveryDetails"
    ]
    assert details == {"Destination": "n***@cruddur.local", "DeliveryMedium": "EMAIL", "AttributeName": "email"}


def test_resend_code_to_a_confirmed_user_is_refused_as_cognito_does(cognito, pool):
    _sign_up(cognito, pool, "done@cruddur.local")  # register() confirms the user
    with pytest.raises(cognito.exceptions.InvalidParameterException, match="already confirmed"):
        cognito.resend_confirmation_code(ClientId=pool.client_id, Username="done@cruddur.local")


def test_resend_code_to_nobody_or_for_no_client_is_refused(cognito, pool):
    with pytest.raises(cognito.exceptions.UserNotFoundException):
        cognito.resend_confirmation_code(ClientId=pool.client_id, Username="nobody@cruddur.local")
    with pytest.raises(cognito.exceptions.ResourceNotFoundException):
        cognito.resend_confirmation_code(ClientId="no-such-client", Username="nobody@cruddur.local")


def test_a_browser_can_read_the_answer_and_bad_bodies_are_400(emulator: str, pool):
    """The pages call it cross-origin, so the answer carries CORS; a body that is not JSON is Cognito's 400."""
    request = urllib.request.Request(
        emulator + "/",
        data=json.dumps({"ClientId": pool.client_id, "Username": "nobody@cruddur.local"}).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "Origin": "http://127.0.0.1:8080",
            "X-Amz-Target": "AWSCognitoIdentityProviderService.ResendConfirmationCode",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert refused.value.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8080"
    assert json.loads(refused.value.read())["__type"] == "UserNotFoundException"
    request.data = b"not json"
    with pytest.raises(urllib.error.HTTPError) as malformed:
        urllib.request.urlopen(request, timeout=5)
    assert malformed.value.code == 400


def test_everything_else_is_moto(cognito, pool):
    """Other actions reach moto unchanged: a signed-up user signs in and GetUser knows them."""
    _sign_up(cognito, pool, "other@cruddur.local")
    tokens = cognito.initiate_auth(
        ClientId=pool.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "other@cruddur.local", "PASSWORD": "Sup3r-secret!"},
    )["AuthenticationResult"]
    assert cognito.get_user(AccessToken=tokens["AccessToken"])["Username"]


def test_global_sign_out_revokes_every_token_of_the_user(cognito, pool):
    """The pages' sign-out (unsigned, authorized by the access token): the user's access and refresh tokens stop
    working, in a pool outside us-east-1; a second sign-out with the dead token is NotAuthorized."""
    _sign_up(cognito, pool, "leaving@cruddur.local")
    tokens = cognito.initiate_auth(
        ClientId=pool.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "leaving@cruddur.local", "PASSWORD": "Sup3r-secret!"},
    )["AuthenticationResult"]
    request = urllib.request.Request(
        endpoint_of(cognito) + "/",
        data=json.dumps({"AccessToken": tokens["AccessToken"]}).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AWSCognitoIdentityProviderService.GlobalSignOut",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as reply:  # unsigned, as a browser sends it
        assert reply.status == 200
    with pytest.raises(cognito.exceptions.NotAuthorizedException):
        cognito.get_user(AccessToken=tokens["AccessToken"])
    with pytest.raises(cognito.exceptions.NotAuthorizedException):
        cognito.initiate_auth(
            ClientId=pool.client_id,
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": tokens["RefreshToken"]},
        )
    with pytest.raises(urllib.error.HTTPError) as again:
        urllib.request.urlopen(request, timeout=5)
    assert again.value.code == 400 and json.loads(again.value.read())["__type"] == "NotAuthorizedException"


def endpoint_of(cognito) -> str:
    return cognito.meta.endpoint_url.rstrip("/")
