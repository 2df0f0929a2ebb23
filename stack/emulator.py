"""The local Cognito emulator: moto's server, plus the user-pool actions the stack needs that moto lacks or gets wrong.

    python -m stack.emulator -p PORT [-H 127.0.0.1]

moto 5.2.5 answers ResendConfirmationCode with a 500 (NotImplementedError), which a browser sees as a CORS
failure; and it looks for an unsigned GlobalSignOut's token in us-east-1 only, so a pool in any other region
answers NotAuthorizedException and the sign-out does nothing. This wraps moto's WSGI app and answers both as
Cognito does: CodeDeliveryDetails for an unconfirmed user (the emulator sends no email, and accepts any code),
and a sign-out of the token's user wherever its pool is; Cognito's own errors otherwise. moto has no
GetClientToken (an app client's own access token, as the client credentials grant issues it); this issues one as
Cognito's API Reference describes it, signed with the pool's key. moto's TOTP MFA is not Cognito's (one fixed secret
for every user, any code accepted, a challenge's session that signs in whichever user the answer names and never
expires, MFA_SETUP answered without a setup): stack/emulator_mfa.py answers AssociateSoftwareToken,
VerifySoftwareToken and the sign-in's SOFTWARE_TOKEN_MFA and MFA_SETUP challenges as Cognito does, with a secret per
user, codes accepted once within a step of now, and sessions bound to their user, app client and challenge that
expire after the client's AuthSessionValidity. moto also answers any sign-in challenge for whichever USERNAME it
is sent (SMS_MFA with any code, on any session of its own), checks no SRP proof, and lets a user it holds without a
password (a federated user) sign in with none: emulator_mfa.py answers the password flows of InitiateAuth and
AdminInitiateAuth and every RespondToAuthChallenge itself, honouring only the challenges it issued on its own
sessions and refusing USER_SRP_AUTH; moto still sets new passwords and issues the tokens. Before any action, the
CHECKS hold calls to what Cognito holds them to where moto does not: an email attribute must be an email address;
an access token needs the aws.cognito.signin.user.admin scope; and since moto finds a token's user by the name the
token was issued under (in a pool that signs in with email, any user's email first), an access or refresh token
whose name now finds another user than its sub's is refused, never answered for that other user. Everything else is
moto, unchanged, except that a call naming its action in X-Amz-Target (the JSON protocol every Cognito client uses)
may not name another one where moto would read it first (the query string, or a body read as a form): through
compose's Envoy, which lets the pages' own actions through by their X-Amz-Target, that would reach any action of the
emulator, whose admin actions, like moto's, check no credentials.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import io
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from joserfc import jwt
from moto.cognitoidp.models import (
    CognitoIdpUser,
    CognitoIdpUserPool,
    CognitoIdpUserPoolClient,
    UserStatus,
    cognitoidp_backends,
    find_account_region_by_value,
)
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import run_simple
from werkzeug.wrappers import Request

from stack.emulator_mfa import ACTIONS as MFA_ACTIONS
from stack.emulator_mfa import TARGET, Action, Answer
from stack.federation import INVALID_EMAIL, is_email_address

RESEND = TARGET + "ResendConfirmationCode"
GLOBAL_SIGN_OUT = TARGET + "GlobalSignOut"
GET_CLIENT_TOKEN = TARGET + "GetClientToken"
# The actions that take a user's attributes, whose email must be an email address.
ATTRIBUTE_ACTIONS = frozenset(
    TARGET + name for name in ("SignUp", "AdminCreateUser", "UpdateUserAttributes", "AdminUpdateUserAttributes")
)
# The actions whose REFRESH_TOKEN_AUTH moto answers with new tokens of the refresh token's user.
INITIATE_AUTH_ACTIONS = frozenset(TARGET + name for name in ("InitiateAuth", "AdminInitiateAuth"))
REFRESH_FLOWS = frozenset({"REFRESH_TOKEN_AUTH", "REFRESH_TOKEN"})
# The scope Cognito requires of an access token for every user-pool action that takes one (GetUser, ...).
ADMIN_SCOPE = "aws.cognito.signin.user.admin"
CLIENT_TOKEN_FLOW = "ALLOW_CLIENT_TOKEN_AUTH"
# moto signs every token with one key, under this kid (its jwks-public.json).
_MOTO_KID = "dummy"
_VALIDITY_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86_400}
JSON = "application/x-amz-json-1.1"


def resend_confirmation_code(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for one ResendConfirmationCode request, as Cognito answers it."""
    client_id, username = request.get("ClientId"), request.get("Username")
    if not isinstance(client_id, str) or not isinstance(username, str) or not username:
        return 400, cognito_error("InvalidParameterException", "ClientId and Username are required.")
    account, region = find_account_region_by_value("client_id", client_id, fallback=(DEFAULT_ACCOUNT_ID, "us-east-1"))
    pool = next((p for p in cognitoidp_backends[account][region].user_pools.values() if client_id in p.clients), None)
    if pool is None:
        return 400, cognito_error("ResourceNotFoundException", "User pool client does not exist.")
    user = pool._get_user(username)
    if user is None:
        return 400, cognito_error("UserNotFoundException", "Username/client id combination not found.")
    if user.status != UserStatus.UNCONFIRMED:
        return 400, cognito_error("InvalidParameterException", "User is already confirmed.")
    email = next((a["Value"] for a in user.attributes if a["Name"] == "email"), username)
    masked = f"{email[:1]}***@{email.partition('@')[2]}" if "@" in email else "***"
    return 200, {"CodeDeliveryDetails": {"Destination": masked, "DeliveryMedium": "EMAIL", "AttributeName": "email"}}


def global_sign_out(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for one GlobalSignOut: every token of the access token's user is revoked."""
    token = request.get("AccessToken")
    if not isinstance(token, str) or not token:
        return 400, cognito_error("InvalidParameterException", "AccessToken is required.")
    account, region = find_account_region_by_value("access_token", token, fallback=("", ""))
    if not account:
        return 400, cognito_error("NotAuthorizedException", "Invalid Access Token")
    cognitoidp_backends[account][region].global_sign_out(token)
    return 200, {}


def get_client_token(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for one GetClientToken: an access token for the app client itself (Cognito API Reference,
    GetClientToken: the client needs a secret and the ALLOW_CLIENT_TOKEN_AUTH flow; Scopes are "custom scopes ...
    in the format resource-server-identifier/scope-name", each of a resource server of the pool, and without them
    the client's configured ones). The token is shaped as Cognito's client credentials tokens are: its `sub` is the
    client id, no user, no groups; the errors' wording is the emulator's own."""
    client_id, secret, requested = request.get("ClientId"), request.get("Secret"), request.get("Scopes")
    if not isinstance(client_id, str) or not isinstance(secret, str) or not client_id or not secret:
        return 400, cognito_error("InvalidParameterException", "ClientId and Secret are required.")
    if requested is not None and not (isinstance(requested, list) and all(isinstance(s, str) for s in requested)):
        return 400, cognito_error("InvalidParameterException", "Scopes must be a list of strings.")
    account, region = find_account_region_by_value("client_id", client_id, fallback=(DEFAULT_ACCOUNT_ID, "us-east-1"))
    pool = next((p for p in cognitoidp_backends[account][region].user_pools.values() if client_id in p.clients), None)
    if pool is None:
        return 400, cognito_error("ResourceNotFoundException", "User pool client does not exist.")
    client = pool.clients[client_id]
    if not client.generate_secret or not hmac.compare_digest(client.secret.encode(), secret.encode()):
        return 400, cognito_error("NotAuthorizedException", "Invalid client secret.")
    if CLIENT_TOKEN_FLOW not in client.extended_config.get("ExplicitAuthFlows", []):
        return 400, cognito_error("NotAuthorizedException", f"The client is not enabled for {CLIENT_TOKEN_FLOW}.")
    custom = custom_scopes(pool)
    allowed = [scope for scope in client.extended_config.get("AllowedOAuthScopes", []) if scope in custom]
    scopes = allowed if requested is None else list(dict.fromkeys(requested))
    if not scopes or not set(scopes) <= set(allowed):
        return 400, cognito_error("InvalidParameterException", "Invalid scope requested.")
    token, expires_in = client_access_token(pool, client, scopes, now=time.time())
    return 200, {"ClientAuthenticationResult": {"AccessToken": token, "ExpiresIn": expires_in, "TokenType": "Bearer"}}


def client_access_token(
    pool: CognitoIdpUserPool, client: CognitoIdpUserPoolClient, scopes: Iterable[str], *, now: float
) -> tuple[str, int]:
    """An app client's own access token (GetClientToken's, the client credentials grant's) and its lifetime in
    seconds: the client is its subject; no user, no groups (not in moto's tables: GetUser has no user for it)."""
    client_id = str(client.id)
    expires_in = token_seconds(client.extended_config, "AccessToken")
    issued_at = int(now)
    payload = {
        "sub": client_id,
        "token_use": "access",
        "scope": " ".join(scopes),
        "auth_time": issued_at,
        "iss": issuer(pool),
        "exp": issued_at + expires_in,
        "iat": issued_at,
        "version": 2,
        "jti": str(uuid.uuid4()),
        "client_id": client_id,
    }
    return sign(pool, payload), expires_in


def custom_scopes(pool: CognitoIdpUserPool) -> frozenset[str]:
    """The pool's custom scopes: `<resource server identifier>/<scope name>`."""
    return frozenset(
        f"{server.identifier}/{scope['ScopeName']}"
        for server in pool.resource_servers.values()
        for scope in server.scopes
    )


def token_seconds(config: Mapping[str, Any], token: str) -> int:
    """How long a client's AccessToken or IdToken lasts, from its extended config (its validity and
    TokenValidityUnits; Cognito's default: 60 minutes)."""
    validity = config.get(f"{token}Validity") or 60
    unit = (config.get("TokenValidityUnits") or {}).get(token, "minutes")
    return int(validity) * _VALIDITY_UNITS.get(unit, 60)


def issuer(pool: CognitoIdpUserPool) -> str:
    """The pool's token issuer (`iss`)."""
    return f"https://cognito-idp.{pool.region}.amazonaws.com/{pool.id}"


def sign(pool: CognitoIdpUserPool, payload: Mapping[str, Any]) -> str:
    """Signed with the pool's key, under moto's kid, as moto signs the pool's tokens."""
    return str(jwt.encode({"kid": _MOTO_KID, "alg": "RS256"}, dict(payload), pool.json_web_key))


ACTIONS: dict[str, Action] = {
    RESEND: resend_confirmation_code,
    GLOBAL_SIGN_OUT: global_sign_out,
    GET_CLIENT_TOKEN: get_client_token,
}
# TOTP MFA: AssociateSoftwareToken, VerifySoftwareToken and the sign-in actions whose challenges it takes over.
ACTIONS.update(MFA_ACTIONS)


# One Cognito action: a repeated X-Amz-Target arrives joined with commas, and moto runs what follows the last dot.
_ONE_TARGET = re.compile(r"AWSCognitoIdentityProviderService\.[A-Za-z]+")


def names_another_action(environ: Mapping[str, Any], body: bytes) -> bool:
    """Whether a call that names its action in X-Amz-Target also names one where moto looks first: any query string,
    a form body, or an `Action` in the body read as a form (moto parses a JSON body that way too when the query is
    empty, so `{"x": "&Action=AdminCreateUser&"}` would be AdminCreateUser), or a compressed body (moto decompresses
    it before it looks, where this cannot see)."""
    if environ.get("QUERY_STRING") or environ.get("HTTP_CONTENT_ENCODING"):
        return True
    content_type = str(environ.get("CONTENT_TYPE", "")).lower()
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/")):
        return True
    return "Action" in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


# Held around everything that reads or writes moto's state: the emulator's own actions, the hosted endpoints, and
# every call handed to moto (its registries are plain dicts, and this server is threaded).
_MOTO_STATE = threading.Lock()


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a token in moto's tables (moto or the emulator signed it): read, not verified."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


class TokenTable(dict[str, tuple[str, str]]):
    """One of a pool's token tables (access_tokens or id_tokens: token -> (client id, user name), as moto keeps
    them), which also holds each session's tokens by their origin_jti and the sub they were issued to. It exists so
    that revoking a session reaches its tokens without decoding every token the pool ever issued; its index holds
    exactly the table's tokens, which moto keeps while the process lives (or until a sign-out or revocation)."""

    def __init__(self, tokens: Mapping[str, tuple[str, str]]) -> None:
        super().__init__()
        self._sessions: dict[str, set[str]] = {}
        # origin_jti -> the sub of the session's first token (kept after its tokens go: its refresh token may not).
        self.subjects: dict[str, str] = {}
        for token, value in tokens.items():
            self[token] = value

    def __setitem__(self, token: str, value: tuple[str, str]) -> None:
        super().__setitem__(token, value)
        claims = token_claims(token)
        origin = claims.get("origin_jti")
        if isinstance(origin, str):
            self._sessions.setdefault(origin, set()).add(token)
            if isinstance(claims.get("sub"), str):
                self.subjects.setdefault(origin, claims["sub"])

    def __delitem__(self, token: str) -> None:
        super().__delitem__(token)
        self._forget(token)

    def pop(self, token: str, *default: Any) -> Any:
        value = super().pop(token, *default)
        self._forget(token)
        return value

    def update(self, *args: Any, **kwargs: Any) -> None:
        for token, value in dict(*args, **kwargs).items():
            self[token] = value

    def _forget(self, token: str) -> None:
        origin = token_claims(token).get("origin_jti")
        if not isinstance(origin, str) or origin not in self._sessions:
            return
        tokens = self._sessions[origin]
        tokens.discard(token)
        if not tokens:
            del self._sessions[origin]

    def drop_session(self, origin_jti: str) -> None:
        """Take the session's tokens out of the table."""
        for token in self._sessions.pop(origin_jti, set()):
            super().pop(token, None)


def token_tables(pool: CognitoIdpUserPool) -> tuple[TokenTable, TokenTable]:
    """The pool's access_tokens and id_tokens as TokenTables, put in place of moto's plain dicts the first time (moto
    reads and writes them by attribute, under the state lock, so it goes on using them unchanged)."""
    tables = []
    for name in ("access_tokens", "id_tokens"):
        table = getattr(pool, name)
        if not isinstance(table, TokenTable):
            table = TokenTable(table)
            setattr(pool, name, table)
        tables.append(table)
    return tables[0], tables[1]


def session_subject(pool: CognitoIdpUserPool, origin_jti: str) -> str | None:
    """The sub a session's tokens were issued to (None when the pool holds none of them, nor ever did)."""
    return token_tables(pool)[0].subjects.get(origin_jti)


def cognito_error(kind: str, message: str) -> dict[str, str]:
    """A Cognito error body, as the JSON protocol answers it: its `__type` and `message`."""
    return {"__type": kind, "message": message}


def session_user(pool: CognitoIdpUserPool, name: str, origin_jti: str) -> CognitoIdpUser | None:
    """The user of a session moto holds by name (what it was opened with: a username, or the email a password sign-in
    gave, which moto looks up as an email first): the user moto's own lookup finds, while that is the user the
    session's tokens were issued to (their sub); None otherwise."""
    user: CognitoIdpUser | None = pool._get_user(name)
    if user is None or user.id != session_subject(pool, origin_jti):
        return None
    return user


def _index_token_tables() -> None:
    """Every pool's token tables indexed before a call can add to them (a pool is made by one call, its first tokens
    come from a later one)."""
    for account in cognitoidp_backends.values():
        for region, backend in account.items():
            if region != "global":
                for pool in backend.user_pools.values():
                    token_tables(pool)


def _pool_of_access_token(token: str) -> CognitoIdpUserPool | None:
    account, region = find_account_region_by_value("access_token", token, fallback=("", ""))
    if not account:
        return None
    return next((p for p in cognitoidp_backends[account][region].user_pools.values() if token in p.access_tokens), None)


def _pool_of_client(client_id: object) -> CognitoIdpUserPool | None:
    if not isinstance(client_id, str):
        return None
    account, region = find_account_region_by_value("client_id", client_id, fallback=("", ""))
    if not account:
        return None
    return next((p for p in cognitoidp_backends[account][region].user_pools.values() if client_id in p.clients), None)


def check_access_token(target: str, request: dict[str, Any]) -> Answer | None:
    """Cognito's refusal of an AccessToken, for every action that takes one (GetUser, GlobalSignOut, ChangePassword,
    UpdateUserAttributes, AssociateSoftwareToken, ...): NotAuthorizedException for a token without the
    aws.cognito.signin.user.admin scope (moto's own tokens have it), and for one whose user, as moto would look it up
    by the name it holds, is not the user the token was issued to (its sub). A token the emulator does not hold is
    each action's to answer."""
    token = request.get("AccessToken")
    if not isinstance(token, str) or not token:
        return None
    pool = _pool_of_access_token(token)
    if pool is None:
        return None
    claims = token_claims(token)
    if ADMIN_SCOPE not in str(claims.get("scope", "")).split(" "):
        return 400, cognito_error("NotAuthorizedException", "Access Token does not have required scopes")
    user: CognitoIdpUser | None = pool._get_user(pool.access_tokens[token][1])
    if user is not None and user.id != claims.get("sub"):
        return 400, cognito_error("NotAuthorizedException", "Invalid Access Token")
    return None


def check_refresh_token(target: str, request: dict[str, Any]) -> Answer | None:
    """NotAuthorizedException for InitiateAuth's and AdminInitiateAuth's REFRESH_TOKEN_AUTH with a refresh token whose
    user, as moto would look it up, is not the user its session's tokens were issued to (session_user)."""
    parameters = request.get("AuthParameters")
    if target not in INITIATE_AUTH_ACTIONS or request.get("AuthFlow") not in REFRESH_FLOWS:
        return None
    if not isinstance(parameters, dict) or not isinstance(parameters.get("REFRESH_TOKEN"), str):
        return None
    pool = _pool_of_client(request.get("ClientId"))
    record = None if pool is None else pool.refresh_tokens.get(parameters["REFRESH_TOKEN"])
    if pool is None or record is None:
        return None  # moto's own errors
    if session_user(pool, record[1], record[2]) is None:
        return 400, cognito_error("NotAuthorizedException", "Invalid Refresh Token")
    return None


def check_email(target: str, request: dict[str, Any]) -> Answer | None:
    """Cognito's InvalidParameterException for an email attribute that is not an email address (moto takes any
    string, and looks users up by their email where the pool signs in with email)."""
    attributes = request.get("UserAttributes")
    if target not in ATTRIBUTE_ACTIONS or not isinstance(attributes, list):
        return None
    emails = [
        attribute.get("Value")
        for attribute in attributes
        if isinstance(attribute, dict) and attribute.get("Name") == "email"
    ]
    if not all(is_email_address(email) for email in emails):
        return 400, cognito_error("InvalidParameterException", INVALID_EMAIL)
    return None


# Checks every JSON call passes before its action (the emulator's or moto's) runs: each answers a refusal, or None.
CHECKS: tuple[Callable[[str, dict[str, Any]], Answer | None], ...] = (
    check_access_token,
    check_refresh_token,
    check_email,
)


class WithUserPoolFixes:
    """WSGI middleware: the CHECKS, then the ACTIONS here (each may leave a call to moto), everything else to moto;
    each call wholly under the state lock."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target is None:
            with _MOTO_STATE:
                _index_token_tables()
                return self._moto(environ, start_response)
        raw = Request(environ).get_data(cache=False)
        if not _ONE_TARGET.fullmatch(target) or names_another_action(environ, raw):
            return self._answer(
                environ, start_response, 400, cognito_error("SerializationException", "One action per call.")
            )
        with _MOTO_STATE:
            _index_token_tables()
            answer = self._run(target, raw) if environ.get("REQUEST_METHOD") == "POST" else None
            if answer is None:
                # moto reads the body again: hand it back, whole and of a known length.
                environ["wsgi.input"] = io.BytesIO(raw)
                environ["CONTENT_LENGTH"] = str(len(raw))
                environ.pop("HTTP_TRANSFER_ENCODING", None)
                return self._moto(environ, start_response)
        return self._answer(environ, start_response, *answer)

    def _moto(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """moto's answer, read whole (the caller holds the state lock): moto's app may build its body only as it is
        iterated."""
        body = self.app(environ, start_response)
        try:
            return list(body)
        finally:
            close = getattr(body, "close", None)
            if callable(close):
                close()

    @staticmethod
    def _run(target: str, raw: bytes) -> Answer | None:
        """A check's refusal or the emulator's own action's (HTTP status, body) for a JSON request body, or None where
        the call is moto's."""
        action = ACTIONS.get(target)
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            # moto answers a malformed body of its own actions as it does.
            return None if action is None else (400, cognito_error("SerializationException", "Malformed request body."))
        for check in CHECKS:
            refusal = check(target, request)
            if refusal is not None:
                return refusal
        return None if action is None else action(request)

    @staticmethod
    def _answer(
        environ: dict[str, Any], start_response: Callable[..., Any], status: int, body: dict[str, Any]
    ) -> Iterable[bytes]:
        data = json.dumps(body).encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Bad Request'}",
            [
                ("Content-Type", JSON),
                ("Content-Length", str(len(data))),
                # As moto answers browsers: the pages call Cognito from another origin.
                ("Access-Control-Allow-Origin", environ.get("HTTP_ORIGIN") or "*"),
            ],
        )
        return [data]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.emulator", description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server does: moto builds some URLs from it
    # Cognito's hosted OAuth 2.0 endpoints, RevokeToken and their sessions' refresh (stack/hosted.py, which builds on
    # this module: imported here, not at the top), in front of everything else, under the same state lock.
    from stack.hosted import HostedEndpoints

    app = HostedEndpoints(WithUserPoolFixes(DomainDispatcherApplication(create_backend_app)), _MOTO_STATE)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
