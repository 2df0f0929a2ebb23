"""Sign-in and TOTP multi-factor authentication in the local Cognito emulator, as Cognito does them (stack/emulator.py
merges ACTIONS).

moto 5.2.5 gives every user one fixed secret, accepts any code unless an environment flag is set, trusts the USERNAME
of a challenge response over the session (user A's password and USERNAME=B gave B's tokens; any session of its own
answered as SMS_MFA with any code gave the named user's), lets any live session answer MFA_SETUP (skipping the
setup), never expires a session, and never asks a user of a pool that requires MFA to set it up. It checks no SRP
proof (any PASSWORD_CLAIM_SIGNATURE passes) and no SECRET_HASH of a password sign-in, and compares passwords with
`!=`, so a user it holds without one (a federated user, a user an admin created without a temporary password)
would sign in with no PASSWORD at all.

Here every sign-in challenge is the emulator's own: SOFTWARE_TOKEN_MFA, MFA_SETUP and NEW_PASSWORD_REQUIRED carry
sessions of the emulator's, bound to the pool, app client, user and challenge, and expiring after the client's
AuthSessionValidity. RespondToAuthChallenge and AdminRespondToAuthChallenge never reach moto: they refuse every
other challenge (NotAuthorizedException "Invalid session for the user."), a name Cognito does not have
(InvalidParameterException) and an admin call whose UserPoolId is not the client's pool (ResourceNotFoundException).
Every password flow (USER_PASSWORD_AUTH, ADMIN_USER_PASSWORD_AUTH, ADMIN_NO_SRP_AUTH) needs a non-empty PASSWORD,
and SECRET_HASH where the client has a secret, and the password is checked here; a federated user has none to sign
in with. USER_SRP_AUTH is refused (InvalidParameterException): the emulator cannot check an SRP proof. SMS MFA is
refused at sign-in: the emulator sends no SMS. TOTP: a random 160-bit secret per user, pending until a code proves
it; codes are checked within one 30 s step either way, and never accepted twice. moto still sets new passwords (its
password policy) and issues the tokens (so GetUser, GlobalSignOut and refresh keep working), and
SetUserMFAPreference is moto's: it turns TOTP on only for a user whose token was verified here.

EMULATOR_AUTH_SESSION_SECONDS, when set, is every sign-in session's lifetime in seconds instead of the client's
AuthSessionValidity (3 to 15 minutes): a setting for tests of expiry only, which Cognito does not have.
"""

from __future__ import annotations

import base64
import enum
import functools
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

import pyotp
from moto.cognitoidp.exceptions import (
    CodeMismatchException,
    InvalidParameterException,
    NotAuthorizedError,
    ResourceNotFoundError,
)
from moto.cognitoidp.models import (
    CognitoIdpBackend,
    CognitoIdpUser,
    CognitoIdpUserPool,
    CognitoIdpUserPoolClient,
    cognitoidp_backends,
    find_account_region_by_value,
)
from moto.cognitoidp.utils import check_secret_hash
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import JsonRESTError

from stack.federation import FederatedUser

TARGET = "AWSCognitoIdentityProviderService."
SOFTWARE_TOKEN_MFA = "SOFTWARE_TOKEN_MFA"
MFA_SETUP = "MFA_SETUP"
NEW_PASSWORD_REQUIRED = "NEW_PASSWORD_REQUIRED"
USER_SRP_AUTH = "USER_SRP_AUTH"
# Cognito's challenge names (the API Reference's ChallengeNameType): an answer to any other is an invalid request.
CHALLENGE_NAMES = frozenset(
    {
        "SMS_MFA",
        "EMAIL_OTP",
        SOFTWARE_TOKEN_MFA,
        "SELECT_MFA_TYPE",
        MFA_SETUP,
        "PASSWORD_VERIFIER",
        "CUSTOM_CHALLENGE",
        "SELECT_CHALLENGE",
        "DEVICE_SRP_AUTH",
        "DEVICE_PASSWORD_VERIFIER",
        "ADMIN_NO_SRP_AUTH",
        NEW_PASSWORD_REQUIRED,
        "SMS_OTP",
        "PASSWORD",
        "WEB_AUTHN",
        "PASSWORD_SRP",
    }
)
# What an MFA_SETUP challenge offers: TOTP only (the emulator sends no SMS), as the JSON string Cognito sends.
MFAS_CAN_SETUP = json.dumps([SOFTWARE_TOKEN_MFA])

# Cognito's own messages (the API Reference's error types; the wording as the real service answers).
INVALID_SESSION = "Invalid session for the user."
CODE_MISMATCH = "Invalid code or auth state for the user."
ENABLE_MISMATCH = "Code mismatch and fail enable Software Token MFA"
NO_SOFTWARE_TOKEN_MFA = "Software Token MFA has not been enabled by the userPool"
INCORRECT_PASSWORD = "Incorrect username or password."
MISSING_PASSWORD = "Missing required parameter PASSWORD"
# The emulator's own refusals, of what Cognito does and it cannot.
NO_SRP = (
    "USER_SRP_AUTH is not supported by the local Cognito emulator, which cannot check an SRP password proof: "
    "sign in with USER_PASSWORD_AUTH."
)
NO_SMS = (
    "The local Cognito emulator sends no SMS, so it signs in no user whose MFA is SMS: "
    "use an authenticator app (SOFTWARE_TOKEN_MFA)."
)

SESSION_SECONDS_VARIABLE = "EMULATOR_AUTH_SESSION_SECONDS"
# Wrong codes a sign-in session takes before it ends. Cognito documents a "maximum number of retries" but not the
# number, so this is the emulator's own choice.
MAX_WRONG_CODES = 5
_USER_CODE = re.compile(r"[0-9]{6}")

Answer = tuple[int, dict[str, Any]]
# An action answers (HTTP status, body), or None for moto to answer the call unchanged.
Action = Callable[[dict[str, Any]], Answer | None]


def _session_seconds_override() -> float | None:
    """EMULATOR_AUTH_SESSION_SECONDS as a positive number of seconds, or None when it is not set."""
    value = os.environ.get(SESSION_SECONDS_VARIABLE)
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{SESSION_SECONDS_VARIABLE} must be a positive number of seconds, not {value!r}")
    return seconds


_SESSION_SECONDS = _session_seconds_override()


class Step(enum.Enum):
    """What a sign-in session may be used for next."""

    SOFTWARE_TOKEN_MFA = "answer SOFTWARE_TOKEN_MFA with a code"
    MFA_SETUP = "associate a software token (the user has none yet)"
    ASSOCIATED = "verify the associated token's first code"
    VERIFIED = "answer MFA_SETUP"
    NEW_PASSWORD_REQUIRED = "answer NEW_PASSWORD_REQUIRED with a new password"


# The step a session must be at to answer each challenge: the emulator answers no other challenge.
_ANSWERED_AT = {
    SOFTWARE_TOKEN_MFA: Step.SOFTWARE_TOKEN_MFA,
    MFA_SETUP: Step.VERIFIED,
    NEW_PASSWORD_REQUIRED: Step.NEW_PASSWORD_REQUIRED,
}


@dataclass
class ChallengeSession:
    """One sign-in between a right password and tokens: whose it is, for which client, and what it may do next."""

    backend: CognitoIdpBackend
    pool: CognitoIdpUserPool
    client: CognitoIdpUserPoolClient
    user: CognitoIdpUser
    # The name the user signed in with: moto keys the tokens it issues by it, as it does for a sign-in without MFA.
    sign_in_name: str
    step: Step
    expires_at: float
    wrong_codes: int = 0
    # NEW_PASSWORD_REQUIRED's: the session moto issued, which moto needs to set the password. No client sees it.
    moto_session: str | None = None


@dataclass
class SoftwareToken:
    """A user's TOTP authenticator as Cognito knows it."""

    pending: str | None = None  # associated, not yet verified: sign-ins never use it
    secret: str | None = None  # verified: sign-ins are checked against it
    device_name: str | None = None  # VerifySoftwareToken's FriendlyDeviceName
    last_step: int = -1  # the newest 30 s step whose code was accepted; that code and older ones are refused


# Open sign-in sessions by their opaque id: expired ones are dropped whenever a session is opened, so it holds at most
# the sessions of one AuthSessionValidity; the emulator's own, because moto's sessions bind no user and never expire.
_SESSIONS: dict[str, ChallengeSession] = {}
# Each user's software token, for as long as moto keeps that user (a user deleted and signed up again starts afresh).
_TOKENS: WeakKeyDictionary[CognitoIdpUser, SoftwareToken] = WeakKeyDictionary()


def _cognito_errors(action: Callable[[dict[str, Any]], Answer | None]) -> Action:
    """The action, with a Cognito error (moto's, or one raised here) answered as Cognito's JSON error."""

    @functools.wraps(action)
    def answered(request: dict[str, Any]) -> Answer | None:
        try:
            return action(request)
        except JsonRESTError as error:
            return error.code, json.loads(error.get_body())

    return answered


# ------------------------------------------------------------------------------------ enrolment: associate, verify


@_cognito_errors
def associate_software_token(request: dict[str, Any]) -> Answer:
    """(HTTP status, body) for one AssociateSoftwareToken: a new secret for the user of the access token or of a
    sign-in session that asked for MFA_SETUP, pending until VerifySoftwareToken proves it. With a session, the body
    also carries the next session (for VerifySoftwareToken); the one given ends."""
    access_token, session_id = _one_credential(request)
    if session_id is not None:
        session = _live_session(session_id, Step.MFA_SETUP, Step.ASSOCIATED)
        pool, user = session.pool, session.user
    else:
        pool, user = _user_of_access_token(str(access_token))
    _require_software_token_mfa(pool)
    secret = base64.b32encode(secrets.token_bytes(20)).decode()  # 160 bits, 32 characters of [A-Z2-7]
    _TOKENS.setdefault(user, SoftwareToken()).pending = secret
    if session_id is None:
        return 200, {"SecretCode": secret}
    return 200, {"SecretCode": secret, "Session": _next_session(session_id, Step.ASSOCIATED)}


@_cognito_errors
def verify_software_token(request: dict[str, Any]) -> Answer:
    """(HTTP status, body) for one VerifySoftwareToken: a right code (6 digits, within one 30 s step of now) for
    the pending secret makes it the user's, and moto's `token_verified` true, so SetUserMFAPreference may turn TOTP
    on. A wrong one is EnableSoftwareTokenMFAException and changes nothing; a session takes MAX_WRONG_CODES. With a
    session, the body carries the session that answers MFA_SETUP. The accepted code is spent: it cannot also be the
    first sign-in's."""
    access_token, session_id = _one_credential(request)
    code = request.get("UserCode")
    if not isinstance(code, str) or not _USER_CODE.fullmatch(code):
        raise InvalidParameterException("UserCode must be 6 digits.")
    session = _live_session(session_id, Step.ASSOCIATED) if session_id is not None else None
    pool, user = (session.pool, session.user) if session else _user_of_access_token(str(access_token))
    _require_software_token_mfa(pool)
    token = _TOKENS.get(user)
    if token is None or token.pending is None:
        raise InvalidParameterException("No software token is associated with the user: call AssociateSoftwareToken.")
    step = _accepted_step(token.pending, code, after=-1)
    if step is None:
        if session_id is not None:
            _count_wrong_code(session_id)
        raise JsonRESTError("EnableSoftwareTokenMFAException", ENABLE_MISMATCH)
    token.secret, token.pending, token.last_step = token.pending, None, step
    device_name = request.get("FriendlyDeviceName")
    token.device_name = device_name if isinstance(device_name, str) and device_name else None
    user.token_verified = True
    if session_id is None:
        return 200, {"Status": "SUCCESS"}
    return 200, {"Status": "SUCCESS", "Session": _next_session(session_id, Step.VERIFIED)}


def _one_credential(request: dict[str, Any]) -> tuple[str | None, str | None]:
    """(AccessToken, Session): exactly one of them, as Cognito takes "an access token or a session, but not both"."""
    access_token, session_id = request.get("AccessToken"), request.get("Session")
    given = [value for value in (access_token, session_id) if value is not None]
    if len(given) != 1 or not isinstance(given[0], str) or not given[0]:
        raise InvalidParameterException("Provide either AccessToken or Session, not both.")
    return access_token, session_id


def _user_of_access_token(access_token: str) -> tuple[CognitoIdpUserPool, CognitoIdpUser]:
    account, region = find_account_region_by_value("access_token", access_token, fallback=("", ""))
    if not account:
        raise NotAuthorizedError("Invalid Access Token")
    for pool in cognitoidp_backends[account][region].user_pools.values():
        if access_token in pool.access_tokens:
            _, username = pool.access_tokens[access_token]
            user = pool._get_user(username)
            if user is None:
                break
            if not user.enabled:
                raise NotAuthorizedError("User is disabled.")
            return pool, user
    raise NotAuthorizedError("Invalid Access Token")


def _require_software_token_mfa(pool: CognitoIdpUserPool) -> None:
    if not _offers_software_token_mfa(pool):
        raise JsonRESTError("SoftwareTokenMFANotFoundException", NO_SOFTWARE_TOKEN_MFA)


def _offers_software_token_mfa(pool: CognitoIdpUserPool) -> bool:
    """Whether the pool's MFA is ON or OPTIONAL with software tokens enabled (SetUserPoolMfaConfig)."""
    return pool.mfa_config in ("ON", "OPTIONAL") and (pool.token_mfa_config or {}).get("Enabled") is True


def _accepted_step(secret: str, code: str, *, after: int) -> int | None:
    """The 30 s step whose code `code` is, if it is this one or one either side (RFC 6238, SHA-1, 6 digits) and
    later than `after`; else None. pyotp's verify(valid_window=1) makes the same check but does not say which step
    matched, and a code must not be accepted twice: Cognito's documents do not say whether it refuses a code used
    once already, but RFC 6238 (5.2) requires it, so the emulator does."""
    totp = pyotp.TOTP(secret)
    now = int(time.time()) // totp.interval
    for step in (now - 1, now, now + 1):
        if step > after and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


# --------------------------------------------------------------------------------- sign-in: the challenges issued


@_cognito_errors
def initiate_auth(request: dict[str, Any]) -> Answer | None:
    """(HTTP status, body) for one InitiateAuth. USER_PASSWORD_AUTH: a password is checked here (_password_checked),
    and a right one answered as Cognito would (_after_password). USER_SRP_AUTH is InvalidParameterException: the
    emulator cannot check an SRP proof. Every other flow (REFRESH_TOKEN_AUTH, ...) is moto's, unchanged."""
    flow = request.get("AuthFlow")
    if flow == USER_SRP_AUTH:
        raise InvalidParameterException(NO_SRP)
    if flow != "USER_PASSWORD_AUTH":
        return None
    backend, pool, client = _client(request.get("ClientId"))
    parameters = _auth_parameters(request)
    username = _password_checked(pool, client, parameters)
    answer = backend.initiate_auth(client.id, flow, parameters)
    return 200, _after_password(backend, pool, client, username, answer)


@_cognito_errors
def admin_initiate_auth(request: dict[str, Any]) -> Answer | None:
    """(HTTP status, body) for one AdminInitiateAuth: as InitiateAuth, for ADMIN_USER_PASSWORD_AUTH (and its old
    name ADMIN_NO_SRP_AUTH) and USER_SRP_AUTH, with the UserPoolId of the client's own pool; the other flows are
    moto's."""
    flow = request.get("AuthFlow")
    if flow == USER_SRP_AUTH:
        raise InvalidParameterException(NO_SRP)
    if flow not in ("ADMIN_USER_PASSWORD_AUTH", "ADMIN_NO_SRP_AUTH"):
        return None
    backend, pool, client = _admin_client(request)
    parameters = _auth_parameters(request)
    username = _password_checked(pool, client, parameters)
    answer = backend.admin_initiate_auth(pool.id, client.id, str(flow), parameters)
    return 200, _after_password(backend, pool, client, username, answer)


class AppClient(NamedTuple):
    """An app client, its pool, and the moto backend (account and region) that holds them."""

    backend: CognitoIdpBackend
    pool: CognitoIdpUserPool
    client: CognitoIdpUserPoolClient


def _client(client_id: Any) -> AppClient:
    """The app client of a client id; ResourceNotFoundException when no pool has that client."""
    if isinstance(client_id, str):
        account, region = find_account_region_by_value(
            "client_id", client_id, fallback=(DEFAULT_ACCOUNT_ID, "us-east-1")
        )
        backend = cognitoidp_backends[account][region]
        pool = next((p for p in backend.user_pools.values() if client_id in p.clients), None)
        if pool is not None:
            return AppClient(backend, pool, pool.clients[client_id])
    raise ResourceNotFoundError(f"User pool client {client_id} does not exist.")


def _admin_client(request: dict[str, Any]) -> AppClient:
    """As _client, for an admin call: its UserPoolId must be the client's pool (moto's admin answers look no further
    than the client), else ResourceNotFoundException."""
    backend, pool, client = app = _client(request.get("ClientId"))
    pool_id = request.get("UserPoolId")
    if pool_id != pool.id:
        if not isinstance(pool_id, str) or pool_id not in backend.user_pools:
            raise ResourceNotFoundError(f"User pool {pool_id} does not exist.")
        raise ResourceNotFoundError(f"User pool client {client.id} does not exist.")
    return app


def _auth_parameters(request: dict[str, Any]) -> dict[str, Any]:
    parameters = request.get("AuthParameters")
    if not isinstance(parameters, dict):
        raise InvalidParameterException("Missing required parameter AuthParameters")
    return parameters


def _password_checked(pool: CognitoIdpUserPool, client: CognitoIdpUserPoolClient, parameters: dict[str, Any]) -> str:
    """The USERNAME of a password sign-in whose AuthParameters hold, checked here for every password flow as Cognito
    checks them: USERNAME and PASSWORD are non-empty strings (InvalidParameterException), SECRET_HASH holds for a
    client with a secret, and the user has a password of their own and it is this one ("Incorrect username or
    password."). moto compares `user.password != password`, so a user it holds with None (a federated user, a user
    an admin created without a temporary password) would sign in with no PASSWORD at all. A name no user has is left
    to moto (UserNotFoundException), as are a disabled user and one not yet confirmed."""
    username, password = parameters.get("USERNAME"), parameters.get("PASSWORD")
    if not isinstance(username, str) or not username:
        raise InvalidParameterException("Missing required parameter USERNAME")
    if not isinstance(password, str) or not password:
        raise InvalidParameterException(MISSING_PASSWORD)
    _check_secret_hash(client, username, parameters.get("SECRET_HASH"))
    user = pool._get_user(username)
    if user is None:
        return username
    # A federated user signs in at their IdP only, even after an admin set them a password.
    own = user.password if isinstance(user.password, str) and not isinstance(user, FederatedUser) else None
    if not own or not hmac.compare_digest(own.encode(errors="surrogatepass"), password.encode(errors="surrogatepass")):
        raise NotAuthorizedError(INCORRECT_PASSWORD)
    return username


def _check_secret_hash(client: CognitoIdpUserPoolClient, username: str, secret_hash: Any) -> None:
    if client.generate_secret and not check_secret_hash(client.secret, client.id, username, secret_hash):
        raise NotAuthorizedError(f"Unable to verify secret hash for client {client.id}")


def _after_password(
    backend: CognitoIdpBackend,
    pool: CognitoIdpUserPool,
    client: CognitoIdpUserPoolClient,
    sign_in_name: str,
    answer: dict[str, Any],
) -> dict[str, Any]:
    """moto's answer to a right password, with the challenge Cognito would ask in place of moto's (or of its tokens,
    which are then withdrawn), or tokens where moto asks a TOTP challenge Cognito would not. Every challenge carries
    a session of the emulator's: NEW_PASSWORD_REQUIRED's keeps moto's own inside, for moto to set the password, and
    no other session of moto's is ever handed out. SMS MFA (SMS_MFA, or an MFA_SETUP that offers SMS only) is
    InvalidParameterException: the emulator sends no SMS."""
    theirs = answer.get("ChallengeName")
    user = pool._get_user(sign_in_name)
    if theirs == NEW_PASSWORD_REQUIRED:
        new_password = ChallengeSession(
            backend, pool, client, user, sign_in_name, Step.NEW_PASSWORD_REQUIRED, 0.0, moto_session=answer["Session"]
        )
        parameters = answer.get("ChallengeParameters") or {}
        return {"ChallengeName": theirs, "Session": _open_session(new_password), "ChallengeParameters": parameters}
    if theirs is not None:
        backend.sessions.pop(answer.get("Session", ""), None)
        if theirs not in (SOFTWARE_TOKEN_MFA, MFA_SETUP) or (
            theirs == MFA_SETUP and not _offers_software_token_mfa(pool)
        ):
            raise InvalidParameterException(NO_SMS)
    ours = _challenge_due(pool, user)
    if theirs is None:
        if ours is None:
            return answer
        _withdraw_tokens(pool, answer.get("AuthenticationResult") or {})
    elif ours is None:
        return backend._log_user_in(pool, client, sign_in_name)
    step = Step.SOFTWARE_TOKEN_MFA if ours == SOFTWARE_TOKEN_MFA else Step.MFA_SETUP
    session_id = _open_session(ChallengeSession(backend, pool, client, user, sign_in_name, step, 0.0))
    return {"ChallengeName": ours, "Session": session_id, "ChallengeParameters": _challenge_parameters(user, step)}


def _challenge_due(pool: CognitoIdpUserPool, user: CognitoIdpUser) -> str | None:
    """The TOTP challenge Cognito asks of a user who gave a right password: in a pool whose MFA is ON, MFA_SETUP
    until the user has a verified token and SOFTWARE_TOKEN_MFA after; when OPTIONAL, SOFTWARE_TOKEN_MFA if the user
    turned TOTP on (SetUserMFAPreference); else none."""
    if not _offers_software_token_mfa(pool):
        return None
    token = _TOKENS.get(user)
    verified = token is not None and token.secret is not None
    if pool.mfa_config == "ON":
        return SOFTWARE_TOKEN_MFA if verified else MFA_SETUP
    return SOFTWARE_TOKEN_MFA if verified and user.software_token_mfa_enabled else None


def _challenge_parameters(user: CognitoIdpUser, step: Step) -> dict[str, str]:
    if step is Step.MFA_SETUP:
        return {"MFAS_CAN_SETUP": MFAS_CAN_SETUP}
    token = _TOKENS.get(user)
    device_name = token.device_name if token else None
    return {"FRIENDLY_DEVICE_NAME": device_name} if device_name else {}


def _withdraw_tokens(pool: CognitoIdpUserPool, tokens: dict[str, Any]) -> None:
    """Take tokens moto issued back out of its tables, so they are refused as if never issued."""
    pool.access_tokens.pop(tokens.get("AccessToken", ""), None)
    pool.id_tokens.pop(tokens.get("IdToken", ""), None)
    pool.refresh_tokens.pop(tokens.get("RefreshToken", ""), None)


# -------------------------------------------------------------------------------- sign-in: the challenges answered


@_cognito_errors
def respond_to_auth_challenge(request: dict[str, Any]) -> Answer:
    """(HTTP status, body) for one RespondToAuthChallenge, never moto's: a ChallengeName Cognito does not have is
    InvalidParameterException. The emulator answers only the challenges it asks (SOFTWARE_TOKEN_MFA, MFA_SETUP,
    NEW_PASSWORD_REQUIRED), and only on a session it issued, unexpired, for this ClientId and this challenge, with
    USERNAME its user; anything else (another challenge, SMS_MFA, PASSWORD_VERIFIER, CUSTOM_CHALLENGE, DEVICE_*...)
    is NotAuthorizedException "Invalid session for the user.". MFA_SETUP takes only the session of a successful
    VerifySoftwareToken. A wrong code is CodeMismatchException and keeps the session, up to MAX_WRONG_CODES. Success
    ends the session and gives moto's tokens, or (after a new password) the TOTP challenge due."""
    name = _challenge_name(request)
    return 200, _answer_challenge(request, name, _client(request.get("ClientId")).client)


@_cognito_errors
def admin_respond_to_auth_challenge(request: dict[str, Any]) -> Answer:
    """(HTTP status, body) for one AdminRespondToAuthChallenge: as RespondToAuthChallenge, with the UserPoolId of the
    client's own pool (ResourceNotFoundException otherwise)."""
    name = _challenge_name(request)
    return 200, _answer_challenge(request, name, _admin_client(request).client)


def _challenge_name(request: dict[str, Any]) -> str:
    name = request.get("ChallengeName")
    if not isinstance(name, str) or name not in CHALLENGE_NAMES:
        raise InvalidParameterException(
            f"1 validation error detected: Value '{name}' at 'challengeName' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{', '.join(sorted(CHALLENGE_NAMES))}]"
        )
    return name


def _answer_challenge(request: dict[str, Any], name: str, client: CognitoIdpUserPoolClient) -> dict[str, Any]:
    """The answer to challenge `name` of a sign-in with the app client `client`, as respond_to_auth_challenge says."""
    step = _ANSWERED_AT.get(name)
    if step is None:  # no session of the emulator's is ever for this challenge
        raise NotAuthorizedError(INVALID_SESSION)
    session_id, responses = request.get("Session"), request.get("ChallengeResponses") or {}
    if not isinstance(session_id, str) or not session_id:
        raise InvalidParameterException("Missing required parameter Session")
    if not isinstance(responses, dict) or not isinstance(responses.get("USERNAME"), str):
        raise InvalidParameterException("Missing required parameter USERNAME")
    session = _live_session(session_id, step)
    username = responses["USERNAME"]
    if session.client is not client or session.pool._get_user(username) is not session.user:
        raise NotAuthorizedError(INVALID_SESSION)
    _check_secret_hash(client, username, responses.get("SECRET_HASH"))
    if not session.user.enabled:
        raise NotAuthorizedError("User is disabled.")
    if name == NEW_PASSWORD_REQUIRED:
        return _answer_new_password(session_id, session, responses)
    if name == SOFTWARE_TOKEN_MFA:
        _check_sign_in_code(session_id, session, responses.get("SOFTWARE_TOKEN_MFA_CODE"))
    del _SESSIONS[session_id]
    return session.backend._log_user_in(session.pool, session.client, session.sign_in_name)


def _check_sign_in_code(session_id: str, session: ChallengeSession, code: Any) -> None:
    """A right code for the user's verified token, not accepted before; a wrong one counts against the session."""
    token = _TOKENS.get(session.user)
    if not isinstance(code, str) or not code:
        raise InvalidParameterException("Missing required parameter SOFTWARE_TOKEN_MFA_CODE")
    step = _accepted_step(token.secret, code, after=token.last_step) if token and token.secret else None
    if token is None or step is None:
        _count_wrong_code(session_id)
        raise CodeMismatchException(CODE_MISMATCH)
    token.last_step = step


def _answer_new_password(session_id: str, session: ChallengeSession, responses: dict[str, Any]) -> dict[str, Any]:
    """moto sets the new password (its policy checks, on the moto session kept inside this one); its answer then goes
    as a right password's does. A password moto refuses leaves the session open for another."""
    for_moto = {**responses, "USERNAME": session.sign_in_name}
    answer = session.backend.respond_to_auth_challenge(
        str(session.moto_session), session.client.id, NEW_PASSWORD_REQUIRED, for_moto
    )
    del _SESSIONS[session_id]
    return _after_password(session.backend, session.pool, session.client, session.sign_in_name, answer)


# ---------------------------------------------------------------------------------------------- the sessions


def _open_session(session: ChallengeSession) -> str:
    """A new opaque session id for `session`, which expires after the client's AuthSessionValidity from now."""
    now = time.monotonic()
    for expired in [key for key, open_session in _SESSIONS.items() if open_session.expires_at <= now]:
        ended = _SESSIONS.pop(expired)
        ended.backend.sessions.pop(ended.moto_session or "", None)
    minutes = session.client.extended_config.get("AuthSessionValidity") or 3
    session.expires_at = now + (_SESSION_SECONDS or 60 * float(minutes))
    session_id = secrets.token_urlsafe(48)
    _SESSIONS[session_id] = session
    return session_id


def _next_session(session_id: str, step: Step) -> str:
    """End a session and open the next one of the same sign-in, for `step`."""
    session = _SESSIONS.pop(session_id)
    session.step, session.wrong_codes = step, 0
    return _open_session(session)


def _live_session(session_id: Any, *steps: Step) -> ChallengeSession:
    """The open session of that id, if it is unexpired and for one of `steps`; else Cognito's NotAuthorized."""
    session = _SESSIONS.get(session_id) if isinstance(session_id, str) else None
    if session is None or session.step not in steps or session.expires_at <= time.monotonic():
        raise NotAuthorizedError(INVALID_SESSION)
    return session


def _count_wrong_code(session_id: str) -> None:
    session = _SESSIONS[session_id]
    session.wrong_codes += 1
    if session.wrong_codes >= MAX_WRONG_CODES:
        del _SESSIONS[session_id]


ACTIONS: dict[str, Action] = {
    TARGET + "AssociateSoftwareToken": associate_software_token,
    TARGET + "VerifySoftwareToken": verify_software_token,
    TARGET + "InitiateAuth": initiate_auth,
    TARGET + "AdminInitiateAuth": admin_initiate_auth,
    TARGET + "RespondToAuthChallenge": respond_to_auth_challenge,
    TARGET + "AdminRespondToAuthChallenge": admin_respond_to_auth_challenge,
}
