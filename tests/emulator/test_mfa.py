"""TOTP multi-factor authentication on the local Cognito emulator (stack/emulator_mfa.py), as a client sees it.

Every test talks to a real emulator process through boto3, as the pages talk to it through the same JSON API: a
user enrols an authenticator (AssociateSoftwareToken, VerifySoftwareToken), turns it on (SetUserMFAPreference), and
then signs in with a password and a code (InitiateAuth, RespondToAuthChallenge). Codes are computed with pyotp from
the secret the emulator hands out, for explicit 30 s steps, so no test waits for the clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyotp
import pytest
from botocore.exceptions import ClientError

from stack.cognito import Provisioned, cognito_client, provision, register, user_sub
from stack.local import cognito_emulator, emulator_url, local_idp
from stack.processes import free_port
from tests.conftest import REGION
from tests.emulator.test_hosted import Hosted, _provisioned, claims, signed_in

PASSWORD = "T0tp-Passw0rd!"
TEMPORARY_PASSWORD = "Temp0rary-pass!"
INVALID_SESSION = "Invalid session for the user."
CODE_MISMATCH = "Invalid code or auth state for the user."
INCORRECT_PASSWORD = "Incorrect username or password."
MISSING_PASSWORD = "Missing required parameter PASSWORD"
# Every password flow, as (API, AuthFlow): InitiateAuth's and AdminInitiateAuth's two names for the same flow.
PASSWORD_FLOWS = [("user", "USER_PASSWORD_AUTH"), ("admin", "ADMIN_USER_PASSWORD_AUTH"), ("admin", "ADMIN_NO_SRP_AUTH")]
SHORT_SESSION_SECONDS = 2.0


# -- users and codes ------------------------------------------------------------------------------------------


def this_step() -> int:
    """The current 30 s TOTP step (RFC 6238)."""
    return int(time.time()) // 30


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).generate_otp(step)


def wrong_code(secret: str) -> str:
    """A 6-digit code that is no code of the secret's anywhere near now."""
    near = {code_at(secret, step) for step in range(this_step() - 3, this_step() + 4)}
    return next(code for code in (f"{n:06d}" for n in range(1000)) if code not in near)


@dataclass
class Enrolled:
    """A user with a verified authenticator: the step whose code verified it is spent, the next one is not."""

    email: str
    secret: str
    verified_at: int
    access_token: str


def new_user(cognito: Any, pool: Provisioned) -> str:
    email = f"mfa-{uuid.uuid4().hex[:10]}@cruddur.local"
    register(cognito, pool.pool_id, pool.client_id, email=email, password=PASSWORD, name="Mfa User", handle="mfa")
    return email


def password_sign_in(cognito: Any, client_id: str, email: str) -> dict[str, Any]:
    return cognito.initiate_auth(
        ClientId=client_id, AuthFlow="USER_PASSWORD_AUTH", AuthParameters={"USERNAME": email, "PASSWORD": PASSWORD}
    )


def enrol(cognito: Any, pool: Provisioned, *, turn_on: bool = True) -> Enrolled:
    """A new user who associated an authenticator, verified it with this step's code and (by default) turned TOTP on."""
    email = new_user(cognito, pool)
    access_token = password_sign_in(cognito, pool.client_id, email)["AuthenticationResult"]["AccessToken"]
    secret = cognito.associate_software_token(AccessToken=access_token)["SecretCode"]
    step = this_step()
    cognito.verify_software_token(AccessToken=access_token, UserCode=code_at(secret, step), FriendlyDeviceName="phone")
    if turn_on:
        cognito.set_user_mfa_preference(
            AccessToken=access_token, SoftwareTokenMfaSettings={"Enabled": True, "PreferredMfa": True}
        )
    return Enrolled(email=email, secret=secret, verified_at=step, access_token=access_token)


def answer_code(cognito: Any, client_id: str, session: str, username: str, code: str) -> dict[str, Any]:
    return cognito.respond_to_auth_challenge(
        ClientId=client_id,
        ChallengeName="SOFTWARE_TOKEN_MFA",
        Session=session,
        ChallengeResponses={"USERNAME": username, "SOFTWARE_TOKEN_MFA_CODE": code},
    )


def sign_in_with(cognito: Any, pool: Provisioned, api: str, flow: str, parameters: dict[str, str]) -> dict[str, Any]:
    """InitiateAuth (api "user") or AdminInitiateAuth (api "admin") with flow and AuthParameters as given."""
    if api == "user":
        return cognito.initiate_auth(ClientId=pool.client_id, AuthFlow=flow, AuthParameters=parameters)
    return cognito.admin_initiate_auth(
        UserPoolId=pool.pool_id, ClientId=pool.client_id, AuthFlow=flow, AuthParameters=parameters
    )


def new_password_session(cognito: Any, pool: Provisioned) -> tuple[str, str]:
    """(username, session) of a user an admin created, signed in with the temporary password: NEW_PASSWORD_REQUIRED."""
    name = f"new-{uuid.uuid4().hex[:8]}@cruddur.local"
    cognito.admin_create_user(UserPoolId=pool.pool_id, Username=name, TemporaryPassword=TEMPORARY_PASSWORD)
    started = cognito.initiate_auth(
        ClientId=pool.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": name, "PASSWORD": TEMPORARY_PASSWORD},
    )
    assert started["ChallengeName"] == "NEW_PASSWORD_REQUIRED"
    return name, started["Session"]


def refused(error: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    """(error code, message) of a refused call, as botocore reports Cognito's JSON error."""
    return error.value.response["Error"]["Code"], error.value.response["Error"]["Message"]


@pytest.fixture(scope="module")
def mfa_pool(cognito: Any, pool: Provisioned) -> Provisioned:
    """The seed's pool with MFA OPTIONAL and software tokens enabled, as a pool that offers TOTP is configured."""
    cognito.set_user_pool_mfa_config(
        UserPoolId=pool.pool_id, SoftwareTokenMfaConfiguration={"Enabled": True}, MfaConfiguration="OPTIONAL"
    )
    return pool


@pytest.fixture(scope="module")
def federated(emulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosted]:
    """The module's emulator with LocalIdP, provisioned as tests/emulator/test_hosted.py provisions it, against a
    real local IdP (oidc-provider-mock) on a free loopback port: its users sign in through the hosted endpoints."""
    port = free_port()
    with local_idp(port, tmp_path_factory.mktemp("idp")):
        yield _provisioned(emulator, f"http://127.0.0.1:{port}")


def other_pool(cognito: Any, mfa: str) -> Provisioned:
    """A pool of its own with MFA `mfa` (TOTP only when not OFF) and a public client allowing password sign-in."""
    pool_id = cognito.create_user_pool(PoolName=f"mfa-{mfa.lower()}-{uuid.uuid4().hex[:6]}")["UserPool"]["Id"]
    if mfa != "OFF":
        cognito.set_user_pool_mfa_config(
            UserPoolId=pool_id, SoftwareTokenMfaConfiguration={"Enabled": True}, MfaConfiguration=mfa
        )
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="app",
        ExplicitAuthFlows=["ALLOW_USER_SRP_AUTH", "ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    return Provisioned(pool_id=pool_id, client_id=client_id, region=REGION)


# -- enrolment ------------------------------------------------------------------------------------------------


def test_enrolment_hands_out_a_secret_and_takes_only_a_right_code(cognito, mfa_pool):
    """AssociateSoftwareToken gives a 32-character base32 secret (160 bits); VerifySoftwareToken refuses a wrong
    code with EnableSoftwareTokenMFAException and takes the right one (SUCCESS, no session for an access token)."""
    email = new_user(cognito, mfa_pool)
    access_token = password_sign_in(cognito, mfa_pool.client_id, email)["AuthenticationResult"]["AccessToken"]
    answer = cognito.associate_software_token(AccessToken=access_token)
    secret = answer["SecretCode"]
    assert re.fullmatch(r"[A-Z2-7]{32}", secret) and "Session" not in answer
    with pytest.raises(ClientError) as error:
        cognito.verify_software_token(AccessToken=access_token, UserCode=wrong_code(secret))
    assert refused(error) == ("EnableSoftwareTokenMFAException", "Code mismatch and fail enable Software Token MFA")
    verified = cognito.verify_software_token(AccessToken=access_token, UserCode=code_at(secret, this_step()))
    assert verified["Status"] == "SUCCESS" and "Session" not in verified


def test_two_users_get_different_secrets_and_one_code_fits_one_user(cognito, mfa_pool):
    """Each user has a secret of their own (moto gives every user one fixed secret): one user's code does not verify
    the other's authenticator."""
    first, second = new_user(cognito, mfa_pool), new_user(cognito, mfa_pool)
    tokens = [password_sign_in(cognito, mfa_pool.client_id, email)["AuthenticationResult"] for email in (first, second)]
    secrets = [cognito.associate_software_token(AccessToken=t["AccessToken"])["SecretCode"] for t in tokens]
    assert secrets[0] != secrets[1]
    with pytest.raises(ClientError) as error:
        cognito.verify_software_token(AccessToken=tokens[1]["AccessToken"], UserCode=code_at(secrets[0], this_step()))
    assert refused(error)[0] == "EnableSoftwareTokenMFAException"


def test_totp_cannot_be_turned_on_before_a_token_is_verified(cognito, mfa_pool):
    """SetUserMFAPreference Enabled=true is refused for a user whose associated token is still unverified, and that
    user signs in with a password alone."""
    email = new_user(cognito, mfa_pool)
    access_token = password_sign_in(cognito, mfa_pool.client_id, email)["AuthenticationResult"]["AccessToken"]
    cognito.associate_software_token(AccessToken=access_token)
    with pytest.raises(ClientError) as error:
        cognito.set_user_mfa_preference(AccessToken=access_token, SoftwareTokenMfaSettings={"Enabled": True})
    assert refused(error)[0] == "InvalidParameterException"
    assert "AuthenticationResult" in password_sign_in(cognito, mfa_pool.client_id, email)


def test_enrolment_requests_out_of_shape_are_refused(cognito, mfa_pool):
    """Both an access token and a session, or a code that is not 6 digits, is InvalidParameterException; an unknown
    access token or session is NotAuthorizedException."""
    email = new_user(cognito, mfa_pool)
    access_token = password_sign_in(cognito, mfa_pool.client_id, email)["AuthenticationResult"]["AccessToken"]
    with pytest.raises(ClientError) as error:
        cognito.associate_software_token(AccessToken=access_token, Session="s" * 40)
    assert refused(error)[0] == "InvalidParameterException"
    cognito.associate_software_token(AccessToken=access_token)
    with pytest.raises(ClientError) as error:
        cognito.verify_software_token(AccessToken=access_token, UserCode="12a456")
    assert refused(error)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as error:
        cognito.associate_software_token(Session="s" * 40)
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)
    with pytest.raises(ClientError) as error:
        cognito.associate_software_token(AccessToken="not-a-token")
    assert refused(error)[0] == "NotAuthorizedException"


def test_a_pool_without_totp_refuses_to_associate_a_token(cognito):
    """Where the pool's MFA is OFF, AssociateSoftwareToken is SoftwareTokenMFANotFoundException."""
    pool = other_pool(cognito, "OFF")
    email = new_user(cognito, pool)
    access_token = password_sign_in(cognito, pool.client_id, email)["AuthenticationResult"]["AccessToken"]
    with pytest.raises(ClientError) as error:
        cognito.associate_software_token(AccessToken=access_token)
    assert refused(error) == (
        "SoftwareTokenMFANotFoundException",
        "Software Token MFA has not been enabled by the userPool",
    )


# -- signing in with a code -----------------------------------------------------------------------------------


def test_sign_in_asks_for_a_code_and_gives_tokens_only_for_a_right_one(cognito, mfa_pool):
    """With TOTP on, a right password gives SOFTWARE_TOKEN_MFA and a session, no tokens; a wrong code is
    CodeMismatchException and keeps the session; the right code on it gives tokens."""
    user = enrol(cognito, mfa_pool)
    challenge = password_sign_in(cognito, mfa_pool.client_id, user.email)
    assert challenge["ChallengeName"] == "SOFTWARE_TOKEN_MFA" and "AuthenticationResult" not in challenge
    assert challenge["ChallengeParameters"] == {"FRIENDLY_DEVICE_NAME": "phone"}
    session = challenge["Session"]
    with pytest.raises(ClientError) as error:
        answer_code(cognito, mfa_pool.client_id, session, user.email, wrong_code(user.secret))
    assert refused(error) == ("CodeMismatchException", CODE_MISMATCH)
    tokens = answer_code(cognito, mfa_pool.client_id, session, user.email, code_at(user.secret, user.verified_at + 1))
    assert set(tokens["AuthenticationResult"]) >= {"AccessToken", "IdToken", "RefreshToken"}
    with pytest.raises(ClientError) as error:  # the session ended with the sign-in
        answer_code(cognito, mfa_pool.client_id, session, user.email, code_at(user.secret, user.verified_at + 1))
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)


def test_tokens_of_a_sign_in_with_a_code_work_like_any_others(cognito, mfa_pool):
    """The tokens identify the user to GetUser, refresh with REFRESH_TOKEN_AUTH, and GlobalSignOut revokes them."""
    user = enrol(cognito, mfa_pool)
    session = password_sign_in(cognito, mfa_pool.client_id, user.email)["Session"]
    code = code_at(user.secret, user.verified_at + 1)
    tokens = answer_code(cognito, mfa_pool.client_id, session, user.email, code)["AuthenticationResult"]
    assert user_sub(cognito, tokens["AccessToken"]) == user_sub(cognito, user.access_token)
    refreshed = cognito.initiate_auth(
        ClientId=mfa_pool.client_id,
        AuthFlow="REFRESH_TOKEN_AUTH",
        AuthParameters={"REFRESH_TOKEN": tokens["RefreshToken"]},
    )["AuthenticationResult"]
    assert user_sub(cognito, refreshed["AccessToken"]) == user_sub(cognito, user.access_token)
    cognito.global_sign_out(AccessToken=refreshed["AccessToken"])
    with pytest.raises(ClientError) as error:
        cognito.get_user(AccessToken=tokens["AccessToken"])
    assert refused(error)[0] == "NotAuthorizedException"


def test_a_code_is_accepted_once(cognito, mfa_pool):
    """The code that verified the token cannot also sign the user in, and a code that signed them in is refused on
    the next sign-in: both are CodeMismatchException, as a wrong code is."""
    user = enrol(cognito, mfa_pool)
    enrolment_code, code = code_at(user.secret, user.verified_at), code_at(user.secret, user.verified_at + 1)
    session = password_sign_in(cognito, mfa_pool.client_id, user.email)["Session"]
    with pytest.raises(ClientError) as error:
        answer_code(cognito, mfa_pool.client_id, session, user.email, enrolment_code)
    assert refused(error) == ("CodeMismatchException", CODE_MISMATCH)
    answer_code(cognito, mfa_pool.client_id, session, user.email, code)
    session = password_sign_in(cognito, mfa_pool.client_id, user.email)["Session"]
    with pytest.raises(ClientError) as error:
        answer_code(cognito, mfa_pool.client_id, session, user.email, code)
    assert refused(error) == ("CodeMismatchException", CODE_MISMATCH)


def test_a_session_ends_after_five_wrong_codes(cognito, mfa_pool):
    """Five wrong codes end the sign-in: the right code is then refused as an invalid session."""
    user = enrol(cognito, mfa_pool)
    session = password_sign_in(cognito, mfa_pool.client_id, user.email)["Session"]
    for _ in range(5):
        with pytest.raises(ClientError) as error:
            answer_code(cognito, mfa_pool.client_id, session, user.email, wrong_code(user.secret))
        assert refused(error)[0] == "CodeMismatchException"
    with pytest.raises(ClientError) as error:
        answer_code(cognito, mfa_pool.client_id, session, user.email, code_at(user.secret, user.verified_at + 1))
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)


def test_turning_totp_off_returns_to_signing_in_with_a_password(cognito, mfa_pool):
    """After SetUserMFAPreference Enabled=false, a right password gives tokens with no challenge."""
    user = enrol(cognito, mfa_pool)
    assert password_sign_in(cognito, mfa_pool.client_id, user.email)["ChallengeName"] == "SOFTWARE_TOKEN_MFA"
    cognito.set_user_mfa_preference(AccessToken=user.access_token, SoftwareTokenMfaSettings={"Enabled": False})
    answer = password_sign_in(cognito, mfa_pool.client_id, user.email)
    assert "ChallengeName" not in answer and "AccessToken" in answer["AuthenticationResult"]


def test_a_wrong_password_is_refused_before_any_challenge(cognito, mfa_pool):
    """A wrong password is NotAuthorizedException "Incorrect username or password." in every password flow (moto's
    admin flows answered with the username), with no session."""
    user = enrol(cognito, mfa_pool)
    for api, flow in PASSWORD_FLOWS:
        with pytest.raises(ClientError) as error:
            sign_in_with(cognito, mfa_pool, api, flow, {"USERNAME": user.email, "PASSWORD": "Wr0ng-passw0rd!"})
        assert refused(error) == ("NotAuthorizedException", INCORRECT_PASSWORD), flow
        assert "Session" not in error.value.response


def test_a_client_with_a_secret_signs_in_only_with_its_secret_hash(cognito, mfa_pool):
    """For an app client with a secret, every password flow without SECRET_HASH, or with another client's or user's,
    is NotAuthorizedException (moto checked none); the right one signs the user in."""
    client = cognito.create_user_pool_client(
        UserPoolId=mfa_pool.pool_id,
        ClientName="with-secret",
        GenerateSecret=True,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]
    confidential = Provisioned(pool_id=mfa_pool.pool_id, client_id=client["ClientId"], region=REGION)
    email, other = new_user(cognito, mfa_pool), new_user(cognito, mfa_pool)

    def secret_hash(username: str) -> str:
        digest = hmac.new(client["ClientSecret"].encode(), (username + client["ClientId"]).encode(), hashlib.sha256)
        return base64.b64encode(digest.digest()).decode()

    for api, flow in PASSWORD_FLOWS:
        for wrong in ({}, {"SECRET_HASH": secret_hash(other)}, {"SECRET_HASH": "c2VjcmV0"}):
            with pytest.raises(ClientError) as error:
                sign_in_with(cognito, confidential, api, flow, {"USERNAME": email, "PASSWORD": PASSWORD, **wrong})
            assert refused(error) == (
                "NotAuthorizedException",
                f"Unable to verify secret hash for client {client['ClientId']}",
            )
        right = {"USERNAME": email, "PASSWORD": PASSWORD, "SECRET_HASH": secret_hash(email)}
        assert "AccessToken" in sign_in_with(cognito, confidential, api, flow, right)["AuthenticationResult"]


def test_a_user_whose_mfa_is_sms_is_refused_at_sign_in(cognito, mfa_pool):
    """The emulator sends no SMS: a right password for a user who turned SMS MFA on is InvalidParameterException
    saying so, with no session (moto asked SMS_MFA and took any code for it)."""
    email = new_user(cognito, mfa_pool)
    access_token = password_sign_in(cognito, mfa_pool.client_id, email)["AuthenticationResult"]["AccessToken"]
    cognito.set_user_mfa_preference(AccessToken=access_token, SMSMfaSettings={"Enabled": True, "PreferredMfa": True})
    for api, flow in PASSWORD_FLOWS:
        with pytest.raises(ClientError) as error:
            sign_in_with(cognito, mfa_pool, api, flow, {"USERNAME": email, "PASSWORD": PASSWORD})
        kind, message = refused(error)
        assert kind == "InvalidParameterException" and "SMS" in message
        assert "Session" not in error.value.response


def test_an_admin_sign_in_asks_for_the_code_too(cognito, mfa_pool):
    """AdminInitiateAuth (ADMIN_USER_PASSWORD_AUTH) gives SOFTWARE_TOKEN_MFA to a user with TOTP on, and
    AdminRespondToAuthChallenge takes a code exactly as RespondToAuthChallenge does: wrong, then right."""
    user = enrol(cognito, mfa_pool)
    challenge = cognito.admin_initiate_auth(
        UserPoolId=mfa_pool.pool_id,
        ClientId=mfa_pool.client_id,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": user.email, "PASSWORD": PASSWORD},
    )
    assert challenge["ChallengeName"] == "SOFTWARE_TOKEN_MFA" and "AuthenticationResult" not in challenge

    def admin_answer(code: str) -> dict[str, Any]:
        return cognito.admin_respond_to_auth_challenge(
            UserPoolId=mfa_pool.pool_id,
            ClientId=mfa_pool.client_id,
            ChallengeName="SOFTWARE_TOKEN_MFA",
            Session=challenge["Session"],
            ChallengeResponses={"USERNAME": user.email, "SOFTWARE_TOKEN_MFA_CODE": code},
        )

    with pytest.raises(ClientError) as error:
        admin_answer(wrong_code(user.secret))
    assert refused(error) == ("CodeMismatchException", CODE_MISMATCH)
    assert "AccessToken" in admin_answer(code_at(user.secret, user.verified_at + 1))["AuthenticationResult"]


def test_srp_sign_in_is_refused(cognito, mfa_pool):
    """USER_SRP_AUTH, by InitiateAuth or AdminInitiateAuth, is InvalidParameterException saying the emulator cannot
    check an SRP proof and to use USER_PASSWORD_AUTH: moto took any PASSWORD_CLAIM_SIGNATURE, so a username alone
    signed a user in."""
    user = enrol(cognito, mfa_pool)
    for api in ("user", "admin"):
        with pytest.raises(ClientError) as error:
            sign_in_with(cognito, mfa_pool, api, "USER_SRP_AUTH", {"USERNAME": user.email, "SRP_A": "ab"})
        kind, message = refused(error)
        assert kind == "InvalidParameterException"
        assert "SRP" in message and "USER_PASSWORD_AUTH" in message
        assert "Session" not in error.value.response


def test_a_password_sign_in_needs_a_password(cognito, mfa_pool):
    """Every password flow without PASSWORD, or with an empty one, is InvalidParameterException "Missing required
    parameter PASSWORD", also for a user an admin created without a temporary password (moto held it as None, so
    no PASSWORD matched it and led on to setting a new one); any PASSWORD for that user is the wrong one."""
    registered = new_user(cognito, mfa_pool)
    created = f"bare-{uuid.uuid4().hex[:8]}@cruddur.local"
    cognito.admin_create_user(UserPoolId=mfa_pool.pool_id, Username=created, MessageAction="SUPPRESS")
    for username in (registered, created):
        for api, flow in PASSWORD_FLOWS:
            for parameters in ({"USERNAME": username}, {"USERNAME": username, "PASSWORD": ""}):
                with pytest.raises(ClientError) as error:
                    sign_in_with(cognito, mfa_pool, api, flow, parameters)
                assert refused(error) == ("InvalidParameterException", MISSING_PASSWORD), (username, flow, parameters)
    for api, flow in PASSWORD_FLOWS:
        with pytest.raises(ClientError) as error:
            sign_in_with(cognito, mfa_pool, api, flow, {"USERNAME": created, "PASSWORD": TEMPORARY_PASSWORD})
        assert refused(error)[0] == "NotAuthorizedException"
        assert "Session" not in error.value.response


def test_a_federated_user_has_no_password_to_sign_in_with(cognito, federated):
    """A user made by a sign-in at the IdP (LocalIdP_alice) is refused by every password flow: no PASSWORD is
    InvalidParameterException (moto let None match None and gave tokens), and any PASSWORD, even one an admin set
    for them, is NotAuthorizedException "Incorrect username or password.\""""
    username = claims(federated, signed_in(federated, "alice")["access_token"])["username"]
    assert username == "LocalIdP_alice"
    pool = Provisioned(pool_id=federated.pool_id, client_id=federated.client_id, region=REGION)
    for api, flow in PASSWORD_FLOWS:
        with pytest.raises(ClientError) as error:
            sign_in_with(cognito, pool, api, flow, {"USERNAME": username})
        assert refused(error) == ("InvalidParameterException", MISSING_PASSWORD)
        with pytest.raises(ClientError) as error:
            sign_in_with(cognito, pool, api, flow, {"USERNAME": username, "PASSWORD": PASSWORD})
        assert refused(error) == ("NotAuthorizedException", INCORRECT_PASSWORD)
    cognito.admin_set_user_password(UserPoolId=pool.pool_id, Username=username, Password=PASSWORD, Permanent=True)
    for api, flow in PASSWORD_FLOWS:
        with pytest.raises(ClientError) as error:
            sign_in_with(cognito, pool, api, flow, {"USERNAME": username, "PASSWORD": PASSWORD})
        assert refused(error) == ("NotAuthorizedException", INCORRECT_PASSWORD)
        assert "AuthenticationResult" not in error.value.response


# -- the session belongs to one sign-in -----------------------------------------------------------------------


def test_one_users_session_cannot_sign_in_another_user(cognito, mfa_pool):
    """User A's session answered with USERNAME=B and B's right code is NotAuthorizedException and gives no tokens
    (moto gave B's tokens): B's password was never given. A's own answer on it still works."""
    a, b = enrol(cognito, mfa_pool), enrol(cognito, mfa_pool)
    session = password_sign_in(cognito, mfa_pool.client_id, a.email)["Session"]
    with pytest.raises(ClientError) as error:
        answer_code(cognito, mfa_pool.client_id, session, b.email, code_at(b.secret, b.verified_at + 1))
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)
    assert "AuthenticationResult" not in error.value.response
    tokens = answer_code(cognito, mfa_pool.client_id, session, a.email, code_at(a.secret, a.verified_at + 1))
    assert user_sub(cognito, tokens["AuthenticationResult"]["AccessToken"]) == user_sub(cognito, a.access_token)


def test_a_session_is_for_the_client_that_started_the_sign_in(cognito, mfa_pool):
    """The session answered with another app client of the pool is NotAuthorizedException."""
    other = cognito.create_user_pool_client(
        UserPoolId=mfa_pool.pool_id, ClientName="other", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    user = enrol(cognito, mfa_pool)
    session = password_sign_in(cognito, mfa_pool.client_id, user.email)["Session"]
    with pytest.raises(ClientError) as error:
        answer_code(cognito, other, session, user.email, code_at(user.secret, user.verified_at + 1))
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)


def test_a_code_challenge_cannot_be_answered_as_mfa_setup_or_with_a_made_up_session(cognito, mfa_pool):
    """A SOFTWARE_TOKEN_MFA session answered as MFA_SETUP (which moto turned into tokens, skipping the code) and a
    session the emulator never issued are both NotAuthorizedException."""
    user = enrol(cognito, mfa_pool)
    session = password_sign_in(cognito, mfa_pool.client_id, user.email)["Session"]
    with pytest.raises(ClientError) as error:
        cognito.respond_to_auth_challenge(
            ClientId=mfa_pool.client_id,
            ChallengeName="MFA_SETUP",
            Session=session,
            ChallengeResponses={"USERNAME": user.email},
        )
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)
    with pytest.raises(ClientError) as error:
        answer_code(cognito, mfa_pool.client_id, "x" * 64, user.email, code_at(user.secret, user.verified_at + 1))
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)


def test_a_challenge_the_emulator_did_not_ask_signs_no_one_in(cognito, mfa_pool):
    """A live session (a new password's, and a code's after the victim's right password) answered as any other of
    Cognito's challenges (SMS_MFA, CUSTOM_CHALLENGE, SELECT_MFA_TYPE, PASSWORD_VERIFIER, DEVICE_SRP_AUTH, ...), for
    its own user or the victim, is NotAuthorizedException "Invalid session for the user." and gives no tokens (moto
    gave the named user's for any SMS_MFA code); each session still answers its own challenge afterwards."""
    victim = enrol(cognito, mfa_pool)
    name, new_password = new_password_session(cognito, mfa_pool)
    code_session = password_sign_in(cognito, mfa_pool.client_id, victim.email)["Session"]
    every_challenge = cognito.meta.service_model.shape_for("ChallengeNameType").enum
    for session, own in ((new_password, "NEW_PASSWORD_REQUIRED"), (code_session, "SOFTWARE_TOKEN_MFA")):
        for challenge in every_challenge:
            if challenge == own:
                continue
            for username in (victim.email, name):
                responses = {
                    "USERNAME": username,
                    f"{challenge}_CODE": "000000",
                    "ANSWER": "SMS_MFA",
                    "NEW_PASSWORD": PASSWORD,
                    "PASSWORD": PASSWORD,
                    "PASSWORD_CLAIM_SECRET_BLOCK": session,
                    "PASSWORD_CLAIM_SIGNATURE": "c2lnbmF0dXJl",
                    "TIMESTAMP": "Mon Jan 5 10:00:00 UTC 2026",
                    "SRP_A": "ab",
                    "DEVICE_KEY": f"{REGION}_device",
                }
                with pytest.raises(ClientError) as error:
                    cognito.respond_to_auth_challenge(
                        ClientId=mfa_pool.client_id,
                        ChallengeName=challenge,
                        Session=session,
                        ChallengeResponses=responses,
                    )
                assert refused(error) == ("NotAuthorizedException", INVALID_SESSION), (own, challenge, username)
                assert "AuthenticationResult" not in error.value.response
    signed_in_with_new_password = cognito.respond_to_auth_challenge(
        ClientId=mfa_pool.client_id,
        ChallengeName="NEW_PASSWORD_REQUIRED",
        Session=new_password,
        ChallengeResponses={"USERNAME": name, "NEW_PASSWORD": PASSWORD},
    )
    assert "AccessToken" in signed_in_with_new_password["AuthenticationResult"]
    code = code_at(victim.secret, victim.verified_at + 1)
    tokens = answer_code(cognito, mfa_pool.client_id, code_session, victim.email, code)["AuthenticationResult"]
    assert user_sub(cognito, tokens["AccessToken"]) == user_sub(cognito, victim.access_token)


def test_a_challenge_name_cognito_does_not_know_is_invalid(cognito, mfa_pool):
    """A ChallengeName outside Cognito's list is InvalidParameterException naming the value (moto answered 200 with
    an empty body)."""
    _, session = new_password_session(cognito, mfa_pool)
    for answer in (cognito.respond_to_auth_challenge, cognito.admin_respond_to_auth_challenge):
        pool_id = {"UserPoolId": mfa_pool.pool_id} if answer == cognito.admin_respond_to_auth_challenge else {}
        with pytest.raises(ClientError) as error:
            answer(
                ClientId=mfa_pool.client_id,
                ChallengeName="NOT_A_CHALLENGE",
                Session=session,
                ChallengeResponses={"USERNAME": "anyone"},
                **pool_id,
            )
        kind, message = refused(error)
        assert kind == "InvalidParameterException" and "NOT_A_CHALLENGE" in message


def test_an_admin_answer_for_another_pool_is_refused(cognito, mfa_pool):
    """AdminRespondToAuthChallenge whose UserPoolId is not the client's pool (another pool, or none) is
    ResourceNotFoundException, whatever the session: moto then checked a SOFTWARE_TOKEN_MFA code of any user named,
    accepting any. The right pool id with the victim's own session and code still signs the victim in."""
    victim = enrol(cognito, mfa_pool)
    _, new_password = new_password_session(cognito, mfa_pool)
    code_session = password_sign_in(cognito, mfa_pool.client_id, victim.email)["Session"]
    code = code_at(victim.secret, victim.verified_at + 1)

    def admin_answer(pool_id: str, session: str, code: str) -> dict[str, Any]:
        return cognito.admin_respond_to_auth_challenge(
            UserPoolId=pool_id,
            ClientId=mfa_pool.client_id,
            ChallengeName="SOFTWARE_TOKEN_MFA",
            Session=session,
            ChallengeResponses={"USERNAME": victim.email, "SOFTWARE_TOKEN_MFA_CODE": code},
        )

    for pool_id in (f"{REGION}_nopool", other_pool(cognito, "OPTIONAL").pool_id):
        for session, answer in ((new_password, "000000"), (code_session, code)):
            with pytest.raises(ClientError) as error:
                admin_answer(pool_id, session, answer)
            assert refused(error)[0] == "ResourceNotFoundException", pool_id
            assert "AuthenticationResult" not in error.value.response
    tokens = admin_answer(mfa_pool.pool_id, code_session, code)["AuthenticationResult"]
    assert user_sub(cognito, tokens["AccessToken"]) == user_sub(cognito, victim.access_token)


@dataclass
class ShortSessions:
    cognito: Any
    pool: Provisioned


@pytest.fixture(scope="module")
def short_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShortSessions]:
    """An emulator of its own whose sign-in sessions last SHORT_SESSION_SECONDS (EMULATOR_AUTH_SESSION_SECONDS, a
    setting for tests: Cognito's shortest AuthSessionValidity is 3 minutes), with the seed's pool, TOTP optional."""
    port = free_port()
    emulator = cognito_emulator(port, tmp_path_factory.mktemp("short-sessions"), REGION)
    emulator.env["EMULATOR_AUTH_SESSION_SECONDS"] = str(SHORT_SESSION_SECONDS)
    with emulator:
        cognito = cognito_client(REGION, emulator_url(port))
        pool = provision(cognito, REGION)
        cognito.set_user_pool_mfa_config(
            UserPoolId=pool.pool_id, SoftwareTokenMfaConfiguration={"Enabled": True}, MfaConfiguration="OPTIONAL"
        )
        yield ShortSessions(cognito, pool)


def test_an_expired_session_is_refused(short_sessions):
    """A right code on a session older than its lifetime is NotAuthorizedException; the same code on a new sign-in's
    session signs the user in."""
    cognito, pool = short_sessions.cognito, short_sessions.pool
    user = enrol(cognito, pool)
    code = code_at(user.secret, user.verified_at + 1)
    stale = password_sign_in(cognito, pool.client_id, user.email)["Session"]
    time.sleep(SHORT_SESSION_SECONDS + 0.5)
    with pytest.raises(ClientError) as error:
        answer_code(cognito, pool.client_id, stale, user.email, code)
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)
    fresh = password_sign_in(cognito, pool.client_id, user.email)["Session"]
    assert "AccessToken" in answer_code(cognito, pool.client_id, fresh, user.email, code)["AuthenticationResult"]


# -- a pool that requires MFA ---------------------------------------------------------------------------------


def test_a_pool_that_requires_mfa_has_the_user_set_it_up_during_sign_in(cognito):
    """MFA ON: a user with no authenticator gets MFA_SETUP (MFAS_CAN_SETUP the JSON string ["SOFTWARE_TOKEN_MFA"]);
    that session cannot answer MFA_SETUP itself; AssociateSoftwareToken and VerifySoftwareToken on it give the
    session that does, and tokens; the next sign-in asks for a code."""
    pool = other_pool(cognito, "ON")
    email = new_user(cognito, pool)
    setup = password_sign_in(cognito, pool.client_id, email)
    assert setup["ChallengeName"] == "MFA_SETUP" and "AuthenticationResult" not in setup
    assert json.loads(setup["ChallengeParameters"]["MFAS_CAN_SETUP"]) == ["SOFTWARE_TOKEN_MFA"]

    def answer_setup(session: str) -> dict[str, Any]:
        return cognito.respond_to_auth_challenge(
            ClientId=pool.client_id, ChallengeName="MFA_SETUP", Session=session, ChallengeResponses={"USERNAME": email}
        )

    with pytest.raises(ClientError) as error:
        answer_setup(setup["Session"])
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)
    associated = cognito.associate_software_token(Session=setup["Session"])
    step = this_step()
    with pytest.raises(ClientError) as error:
        cognito.verify_software_token(Session=associated["Session"], UserCode=wrong_code(associated["SecretCode"]))
    assert refused(error)[0] == "EnableSoftwareTokenMFAException"
    with pytest.raises(ClientError) as error:  # not yet verified: the session is still not one for MFA_SETUP
        answer_setup(associated["Session"])
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)
    verified = cognito.verify_software_token(
        Session=associated["Session"], UserCode=code_at(associated["SecretCode"], step)
    )
    assert verified["Status"] == "SUCCESS"
    tokens = answer_setup(verified["Session"])["AuthenticationResult"]
    assert "AccessToken" in tokens
    again = password_sign_in(cognito, pool.client_id, email)
    assert again["ChallengeName"] == "SOFTWARE_TOKEN_MFA"
    signed_in = answer_code(
        cognito, pool.client_id, again["Session"], email, code_at(associated["SecretCode"], step + 1)
    )
    assert "AccessToken" in signed_in["AuthenticationResult"]


def test_a_new_password_leads_to_mfa_setup_for_its_own_user_only(cognito):
    """MFA ON: a user an admin created answers NEW_PASSWORD_REQUIRED and then gets MFA_SETUP, not tokens; that
    session answered with another user's name is NotAuthorizedException (moto set the named user's password)."""
    pool = other_pool(cognito, "ON")
    names = [f"new-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        cognito.admin_create_user(UserPoolId=pool.pool_id, Username=name, TemporaryPassword="Temp0rary-pass!")
    first = cognito.initiate_auth(
        ClientId=pool.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": names[0], "PASSWORD": "Temp0rary-pass!"},
    )
    assert first["ChallengeName"] == "NEW_PASSWORD_REQUIRED"

    def new_password(username: str) -> dict[str, Any]:
        return cognito.respond_to_auth_challenge(
            ClientId=pool.client_id,
            ChallengeName="NEW_PASSWORD_REQUIRED",
            Session=first["Session"],
            ChallengeResponses={"USERNAME": username, "NEW_PASSWORD": PASSWORD},
        )

    with pytest.raises(ClientError) as error:
        new_password(names[1])
    assert refused(error) == ("NotAuthorizedException", INVALID_SESSION)
    setup = new_password(names[0])
    assert setup["ChallengeName"] == "MFA_SETUP" and "AuthenticationResult" not in setup
    assert json.loads(setup["ChallengeParameters"]["MFAS_CAN_SETUP"]) == ["SOFTWARE_TOKEN_MFA"]
    assert cognito.associate_software_token(Session=setup["Session"])["SecretCode"]
