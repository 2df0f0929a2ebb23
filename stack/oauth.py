"""What Cognito's hosted OAuth 2.0 endpoints decide, on the local emulator's state (moto's pools, clients, users and
token tables) and on records of their own (HostedState): app clients' OAuth settings, scopes, PKCE, authorization
codes, sign-in sessions, the tokens they issue, revocation, userInfo and logout. stack/hosted.py is the HTTP side;
stack/federation.py talks to the external IdP. Callers hold the emulator's state lock around every function here.

Tokens are signed with the pool's key as moto signs its own (RS256, its kid) and shaped as Cognito's: the access
token has `scope` (the granted scopes), `cognito:groups`, `username`, `origin_jti`, `jti`, `client_id`,
`auth_time` and `version: 2`; the id token `cognito:username`, `cognito:groups`, `aud`, `origin_jti`, the user's
readable attributes (`identities` as a JSON array for a federated user) and the app's `nonce`. Both go into moto's
own tables (access_tokens, id_tokens; the refresh token into refresh_tokens), so GetUser, GlobalSignOut,
AdminUserGlobalSignOut and REFRESH_TOKEN_AUTH work on them as on moto's.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from moto.cognitoidp.models import (
    CognitoIdpUser,
    CognitoIdpUserPool,
    CognitoIdpUserPoolClient,
    cognitoidp_backends,
)
from moto.cognitoidp.utils import check_secret_hash

from stack.emulator import (
    ADMIN_SCOPE,
    client_access_token,
    custom_scopes,
    issuer,
    session_user,
    sign,
    token_seconds,
    token_tables,
)
from stack.federation import OidcProvider

OPENID = "openid"
# Cognito's system-reserved scopes; email, phone and profile "can only be requested if openid is also requested".
SYSTEM_SCOPES = frozenset({OPENID, "email", "phone", "profile", ADMIN_SCOPE})
NEEDS_OPENID = frozenset({"email", "phone", "profile"})
# The pool's own sign-in (managed login): an identity_provider value, but no page the emulator has.
COGNITO = "COGNITO"
CODE_FLOW = "code"
IMPLICIT_FLOW = "implicit"
CLIENT_CREDENTIALS_FLOW = "client_credentials"
S256 = "S256"
# A federated sign-in must come back from the IdP within this many seconds.
SIGN_IN_SECONDS = 600
_CODE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_CODE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")


class OAuthError(Exception):
    """An OAuth 2.0 error as the endpoints answer it: `error` (RFC 6749's code), a description and an HTTP status."""

    def __init__(self, error: str, description: str = "", *, status: int = 400) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


class ErrorPage(Exception):
    """A request the emulator cannot send back to the app (no known client, a redirect_uri the client did not
    register, a page it does not have): the browser is shown this, never redirected."""

    def __init__(self, title: str, message: str) -> None:
        super().__init__(f"{title}: {message}")
        self.title = title
        self.message = message


class BackToApp(Exception):
    """An /oauth2/authorize or /oauth2/idpresponse error for the app: its callback URL gets error= (Cognito redirects
    errors only once the client and redirect_uri are known good)."""

    def __init__(self, redirect_uri: str, state: str | None, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.redirect_uri = redirect_uri
        self.state = state
        self.error = error
        self.description = description


class RevocationRefusal(enum.Enum):
    """Why a revocation request is refused (an unknown token is no refusal: it is answered as revoked)."""

    DISABLED = "the app client does not allow token revocation (EnableTokenRevocation)"
    NOT_A_REFRESH_TOKEN = "only a refresh token can be revoked"
    OTHER_CLIENT = "the token was issued to another app client"


class RevocationRefused(Exception):
    def __init__(self, reason: RevocationRefusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


# ------------------------------------------------------------------------------------------ app clients


@dataclass(frozen=True)
class AppClient:
    """An app client of a pool, with the OAuth settings Create/UpdateUserPoolClient gave it."""

    pool: CognitoIdpUserPool
    client: CognitoIdpUserPoolClient

    @property
    def id(self) -> str:
        return str(self.client.id)

    @property
    def _config(self) -> Mapping[str, Any]:
        return self.client.extended_config

    @property
    def has_secret(self) -> bool:
        return bool(self.client.generate_secret)

    def secret_matches(self, secret: str) -> bool:
        return self.has_secret and hmac.compare_digest(str(self.client.secret).encode(), secret.encode())

    @property
    def oauth_enabled(self) -> bool:
        """AllowedOAuthFlowsUserPoolClient: whether the hosted endpoints serve this client at all."""
        return bool(self._config.get("AllowedOAuthFlowsUserPoolClient"))

    def _list(self, key: str) -> tuple[str, ...]:
        return tuple(str(value) for value in self._config.get(key) or ())

    @property
    def flows(self) -> tuple[str, ...]:
        return self._list("AllowedOAuthFlows")

    @property
    def scopes(self) -> tuple[str, ...]:
        return self._list("AllowedOAuthScopes")

    @property
    def callback_urls(self) -> tuple[str, ...]:
        return self._list("CallbackURLs")

    @property
    def logout_urls(self) -> tuple[str, ...]:
        return self._list("LogoutURLs")

    @property
    def identity_providers(self) -> tuple[str, ...]:
        return self._list("SupportedIdentityProviders")

    @property
    def token_revocation(self) -> bool:
        """EnableTokenRevocation (on unless set off, as for a client Cognito creates today)."""
        return self._config.get("EnableTokenRevocation", True) is not False

    def seconds(self, token: str) -> int:
        """How long this client's AccessToken or IdToken lasts (its validity and TokenValidityUnits; Cognito's
        default: 60 minutes)."""
        return token_seconds(self._config, token)

    def readable(self, attribute: str) -> bool:
        """Whether this client may read attribute (ReadAttributes; without any, every attribute)."""
        fields = self.client.get_readable_fields()
        return not fields or attribute in fields


def user_pools() -> Iterator[CognitoIdpUserPool]:
    """Every pool of the emulator, in every account and region."""
    for account in cognitoidp_backends.values():
        for region, backend in account.items():
            if region != "global":
                yield from backend.user_pools.values()


def app_client(client_id: object) -> AppClient | None:
    if not isinstance(client_id, str) or not client_id:
        return None
    for pool in user_pools():
        if client_id in pool.clients:
            return AppClient(pool, pool.clients[client_id])
    return None


def user_pool(pool_id: str) -> CognitoIdpUserPool | None:
    return next((pool for pool in user_pools() if pool.id == pool_id), None)


def authenticate_client(
    client_id: str | None, secret: str | None, *, basic: tuple[str, str] | None, status: int
) -> AppClient:
    """The app client a token or revocation request authenticates as: HTTP Basic `client_id:client_secret`, or
    client_id (and client_secret) in the body; a client with a secret must give it, one without must not."""
    if basic is not None:
        if client_id and client_id != basic[0]:
            raise OAuthError("invalid_client", "client_id does not match the Authorization header", status=status)
        client_id, secret = basic
    client = app_client(client_id)
    if client is None:
        raise OAuthError("invalid_client", "Unknown client", status=status)
    if client.has_secret and not (secret and client.secret_matches(secret)):
        raise OAuthError("invalid_client", "Client authentication failed", status=status)
    if not client.has_secret and secret:
        raise OAuthError("invalid_client", "The client has no secret", status=status)
    return client


def secret_hash_matches(client: AppClient, username: str, secret_hash: object) -> bool:
    """The user-pool API's SECRET_HASH: base64(HMAC-SHA256(client secret, username + client id))."""
    return isinstance(secret_hash, str) and check_secret_hash(
        str(client.client.secret), client.id, username, secret_hash
    )


# ----------------------------------------------------------------------------------------------- scopes


def _each_once(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def authorized_scopes(client: AppClient, requested: str | None) -> tuple[str, ...]:
    """The scopes /oauth2/authorize grants: the requested ones the client is allowed (others "ignored at runtime"),
    or all the client's without a scope parameter; invalid_scope for a scope the pool does not know, for email,
    phone or profile without openid, and when none is left."""
    if requested is None or not requested.strip():
        granted = list(client.scopes)
    else:
        names = _each_once(requested.split(" "))
        known = SYSTEM_SCOPES | custom_scopes(client.pool)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise OAuthError("invalid_scope", f"Unknown scope: {' '.join(unknown)}")
        granted = [name for name in names if name in client.scopes]
    if OPENID not in granted and NEEDS_OPENID & set(granted):
        raise OAuthError("invalid_scope", "email, phone and profile need the openid scope")
    if not granted:
        raise OAuthError("invalid_scope", "None of the requested scopes is allowed for this client")
    return tuple(granted)


def client_credentials_scopes(client: AppClient, requested: str | None) -> tuple[str, ...]:
    """The scopes of a client credentials grant: custom (resource server) scopes the client is allowed, those
    requested among them ("any scope requested must be preassociated with the client or it will be ignored"), all
    of them when none is requested; invalid_scope when none is left."""
    custom = custom_scopes(client.pool)
    allowed = [scope for scope in client.scopes if scope in custom]
    if requested is None or not requested.strip():
        granted = allowed
    else:
        granted = [name for name in _each_once(requested.split(" ")) if name in allowed]
    if not granted:
        raise OAuthError("invalid_scope", "None of the requested scopes is allowed for this client")
    return tuple(granted)


# ------------------------------------------------------------------------------------------------- PKCE


def code_challenge(client: AppClient, method: str | None, challenge: str | None) -> str | None:
    """The request's PKCE challenge (S256 only, as Cognito: "plain" is refused). The emulator requires one of a
    client without a secret, which Cognito does not: a public client's code is then useless to anyone but the app."""
    if method is None and challenge is None:
        if not client.has_secret:
            raise OAuthError(
                "invalid_request",
                "code_challenge is required: the emulator requires PKCE (S256) of an app client without a secret",
            )
        return None
    if method is None or challenge is None:
        raise OAuthError("invalid_request", "code_challenge and code_challenge_method go together")
    if method != S256:
        raise OAuthError("invalid_request", "code_challenge_method must be S256 (plain is not supported)")
    if not _CODE_CHALLENGE.fullmatch(challenge):
        raise OAuthError("invalid_request", "code_challenge must be BASE64URL(SHA256(code_verifier))")
    return challenge


def verifier_matches(challenge: str, verifier: str) -> bool:
    """RFC 7636 S256: BASE64URL(SHA256(ASCII(code_verifier))) == code_challenge."""
    if not _CODE_VERIFIER.fullmatch(verifier):
        return False
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(digest, challenge)


# ------------------------------------------------------------------------------------- /oauth2/authorize


@dataclass(frozen=True)
class Authorization:
    """A valid /oauth2/authorize request: who asked, for what, and which IdP signs the user in."""

    client: AppClient
    redirect_uri: str
    state: str | None
    scopes: tuple[str, ...]
    code_challenge: str | None
    nonce: str | None
    provider: OidcProvider


def authorize(query: Mapping[str, str]) -> Authorization:
    """The authorization request in query, checked as Cognito checks it: ErrorPage while the client or its
    redirect_uri is unknown, BackToApp (error= on the callback URL) after that."""
    client = app_client(query.get("client_id"))
    if client is None:
        raise ErrorPage("Unknown app client", "client_id names no app client of this emulator's user pools.")
    redirect_uri = query.get("redirect_uri") or ""
    if redirect_uri not in client.callback_urls:
        raise ErrorPage(
            "redirect_mismatch",
            f"redirect_uri {redirect_uri!r} is not one of the app client's callback URLs (CallbackURLs).",
        )
    state = query.get("state")
    try:
        if not client.oauth_enabled:
            raise OAuthError(
                "unauthorized_client", "The app client is not enabled for OAuth 2.0 (AllowedOAuthFlowsUserPoolClient)"
            )
        _check_response_type(client, query.get("response_type"))
        scopes = authorized_scopes(client, query.get("scope"))
        challenge = code_challenge(client, query.get("code_challenge_method"), query.get("code_challenge"))
        provider = _identity_provider(client, query.get("identity_provider"))
    except OAuthError as error:
        raise BackToApp(redirect_uri, state, error.error, error.description) from error
    return Authorization(client, redirect_uri, state, scopes, challenge, query.get("nonce"), provider)


def _check_response_type(client: AppClient, response_type: str | None) -> None:
    if not response_type:
        raise OAuthError("invalid_request", "response_type is required")
    flow = {"code": CODE_FLOW, "token": IMPLICIT_FLOW}.get(response_type)
    if flow is None:
        raise OAuthError("unsupported_response_type", "response_type must be code")
    if flow not in client.flows:
        raise OAuthError("unauthorized_client", f"The app client is not allowed the {flow} flow (AllowedOAuthFlows)")
    if flow == IMPLICIT_FLOW:
        raise OAuthError(
            "unsupported_response_type", "The emulator issues authorization codes only (no implicit grant)"
        )


def _identity_provider(client: AppClient, name: str | None) -> OidcProvider:
    if not name or name == COGNITO:
        others = [provider for provider in client.identity_providers if provider != COGNITO]
        raise ErrorPage(
            "No managed login here",
            "The local emulator has no managed login pages (Cognito's own sign-in form): start the sign-in at an "
            "external identity provider with identity_provider="
            + (" or ".join(others) if others else "<a provider of the app client>")
            + ", or sign in through the user-pool API (InitiateAuth).",
        )
    provider = client.pool.identity_providers.get(name)
    if name not in client.identity_providers or provider is None:
        raise OAuthError("invalid_request", f"identity_provider {name} is not enabled for this app client")
    try:
        return OidcProvider.of(provider)
    except ValueError as error:
        raise OAuthError("invalid_request", str(error)) from error


# ------------------------------------------------------------------------- the endpoints' own records


@dataclass(frozen=True)
class PendingSignIn:
    """A federated sign-in under way: the app's request, the nonce the emulator sent the IdP, and the SHA-256 of the
    sign-in cookie given to the browser that went there (only that browser may bring the IdP's answer back)."""

    authorization: Authorization
    idp_nonce: str
    started_at: float
    browser_binding: str = field(repr=False)

    def expired(self, now: float) -> bool:
        return now - self.started_at >= SIGN_IN_SECONDS


@dataclass(frozen=True)
class AuthorizationCode:
    """What a code stands for: one user's sign-in (by username and sub: a user deleted and made again under the
    same name is another user) for one client, redirect_uri, PKCE challenge and scopes."""

    pool_id: str
    client_id: str
    redirect_uri: str
    code_challenge: str | None
    scopes: tuple[str, ...]
    nonce: str | None
    username: str
    sub: str
    issued_at: float


@dataclass(frozen=True)
class SignInSession:
    """What a refresh token the endpoints issued stands for besides moto's (client, username, origin_jti): the sub of
    its user, the scopes granted and when the user signed in, which every token refreshed from it keeps."""

    sub: str
    scopes: tuple[str, ...]
    auth_time: int


class HostedState:
    """The hosted endpoints' records beside moto's: federated sign-ins under way (by the state sent to the IdP,
    dropped when the browser comes back or SIGN_IN_SECONDS later), codes not yet redeemed (dropped when redeemed or
    code_seconds later), and the sessions they started (by refresh token; kept while the process lives, as moto
    keeps its refresh tokens)."""

    def __init__(self, *, code_seconds: float) -> None:
        self.code_seconds = code_seconds
        self._pending: dict[str, PendingSignIn] = {}
        self._codes: dict[str, AuthorizationCode] = {}
        self.sessions: dict[str, SignInSession] = {}

    def start_sign_in(
        self, authorization: Authorization, *, browser_binding: str, now: float
    ) -> tuple[str, PendingSignIn]:
        """The state and the pending sign-in to send the IdP (browser_binding: the SHA-256 of the browser's sign-in
        cookie)."""
        self._pending = {key: value for key, value in self._pending.items() if not value.expired(now)}
        state = secrets.token_urlsafe(32)
        pending = PendingSignIn(
            authorization, idp_nonce=secrets.token_urlsafe(32), started_at=now, browser_binding=browser_binding
        )
        self._pending[state] = pending
        return state, pending

    def finish_sign_in(self, state: str) -> PendingSignIn | None:
        """The sign-in state names, once (None for a state the emulator did not send, or sent and saw back)."""
        return self._pending.pop(state, None)

    def issue_code(self, code: AuthorizationCode) -> str:
        self._codes = {
            key: value for key, value in self._codes.items() if not self._code_expired(value, code.issued_at)
        }
        value = secrets.token_urlsafe(32)
        self._codes[value] = code
        return value

    def redeem_code(self, value: str, *, now: float) -> AuthorizationCode | None:
        """The code's record, once: a code presented is used up, whatever comes of it; None when unknown, used or
        expired."""
        code = self._codes.pop(value, None)
        return None if code is None or self._code_expired(code, now) else code

    def _code_expired(self, code: AuthorizationCode, now: float) -> bool:
        return now - code.issued_at >= self.code_seconds


# ----------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    id_token: str | None = None
    refresh_token: str | None = field(default=None, repr=False)

    def token_answer(self) -> dict[str, Any]:
        """As the token endpoint answers: access_token, id_token and refresh_token when issued, Bearer, expires_in."""
        answer: dict[str, Any] = {"access_token": self.access_token}
        if self.id_token:
            answer["id_token"] = self.id_token
        if self.refresh_token:
            answer["refresh_token"] = self.refresh_token
        answer.update(token_type="Bearer", expires_in=self.expires_in)
        return answer

    def authentication_result(self) -> dict[str, Any]:
        """As the user-pool API answers (InitiateAuth's AuthenticationResult)."""
        result: dict[str, Any] = {"AccessToken": self.access_token, "ExpiresIn": self.expires_in, "TokenType": "Bearer"}
        if self.id_token:
            result["IdToken"] = self.id_token
        if self.refresh_token:
            result["RefreshToken"] = self.refresh_token
        return result


def start_session(
    state: HostedState, client: AppClient, code: AuthorizationCode, user: CognitoIdpUser, *, now: float
) -> IssuedTokens:
    """The tokens a redeemed code gives its user: a new refresh token (a session of its own, its origin_jti in every
    token refreshed from it), an access token and, with the openid scope, an id token."""
    refresh_token, origin_jti = client.pool.create_refresh_token(client.id, user.username)
    session = SignInSession(user.id, code.scopes, auth_time=int(code.issued_at))
    state.sessions[refresh_token] = session
    tokens = _user_tokens(client, user, origin_jti, session, now=now, id_token=OPENID in code.scopes, nonce=code.nonce)
    return replace(tokens, refresh_token=refresh_token)


def refresh_session(
    state: HostedState, client: AppClient, refresh_token: str, *, now: float, id_token: bool | None = None
) -> IssuedTokens:
    """New access (and id) tokens from a refresh token of client's: one the endpoints issued keeps its scopes and
    sign-in time; one from the user-pool API (InitiateAuth) has the admin scope, as its own tokens did. id_token
    None: with the openid scope (or for an API session), as the token endpoint answers."""
    record = client.pool.refresh_tokens.get(refresh_token)
    if record is None:
        raise OAuthError("invalid_grant", "Refresh token is invalid, expired or revoked")
    owner, name, origin_jti = record
    if owner != client.id:
        raise OAuthError("invalid_grant", "Refresh token was issued to another client")
    session = state.sessions.get(refresh_token)
    # An API session is moto's, by the name its sign-in gave (an email, in an email pool).
    user = session_user(client.pool, name, origin_jti) if session is None else _user(client.pool, name, session.sub)
    if user is None or not user.enabled:
        raise OAuthError("invalid_grant", "User is disabled or does not exist")
    if id_token is None:
        id_token = session is None or OPENID in session.scopes
    if session is None:
        session = SignInSession(user.id, (ADMIN_SCOPE,), auth_time=int(now))
    return _user_tokens(client, user, origin_jti, session, now=now, id_token=id_token, nonce=None, name=name)


def client_token(client: AppClient, scopes: tuple[str, ...], *, now: float) -> IssuedTokens:
    """The client credentials grant's access token: the client is its subject; no user, groups or id token (not in
    moto's tables: GetUser has no user for it)."""
    token, expires_in = client_access_token(client.pool, client.client, scopes, now=now)
    return IssuedTokens(token, expires_in)


def _user_tokens(
    client: AppClient,
    user: CognitoIdpUser,
    origin_jti: str,
    session: SignInSession,
    *,
    now: float,
    id_token: bool,
    nonce: str | None,
    name: str | None = None,
) -> IssuedTokens:
    """The session's new access (and id) token for user, in moto's tables under name (the name the session was
    opened with, which moto's sign-outs compare; the username unless given)."""
    pool = client.pool
    name = name or user.username
    issued_at = int(now)
    groups = sorted(group.group_name for group in user.groups)
    access_seconds = client.seconds("AccessToken")
    access: dict[str, Any] = {"sub": user.id}
    if groups:
        access["cognito:groups"] = groups
    access.update(
        {
            "iss": issuer(pool),
            "version": 2,
            "client_id": client.id,
            "origin_jti": origin_jti,
            "token_use": "access",
            "scope": " ".join(session.scopes),
            "auth_time": session.auth_time,
            "exp": issued_at + access_seconds,
            "iat": issued_at,
            "jti": str(uuid.uuid4()),
            "username": user.username,
        }
    )
    access_token = sign(pool, access)
    access_tokens, id_tokens = token_tables(pool)
    # In moto's table under the name the session was opened with, which its sign-outs compare.
    access_tokens[access_token] = (client.id, name)
    if not id_token:
        return IssuedTokens(access_token, access_seconds)
    identity: dict[str, Any] = {"at_hash": _at_hash(access_token), "sub": user.id}
    if groups:
        identity["cognito:groups"] = groups
    identity.update(_attribute_claims(client, user))
    identity.update(
        {
            "iss": issuer(pool),
            "cognito:username": user.username,
            "origin_jti": origin_jti,
            "aud": client.id,
            "token_use": "id",
            "auth_time": session.auth_time,
            "exp": issued_at + client.seconds("IdToken"),
            "iat": issued_at,
            "jti": str(uuid.uuid4()),
        }
    )
    if nonce:
        identity["nonce"] = nonce
    id_token_value = sign(pool, identity)
    id_tokens[id_token_value] = (client.id, name)
    return IssuedTokens(access_token, access_seconds, id_token=id_token_value)


def _user(pool: CognitoIdpUserPool, username: str, sub: object) -> CognitoIdpUser | None:
    """The user of that exact username, while it is the one of that sub (never moto's lookup, which takes a name for
    another user's email first where the pool signs in with email)."""
    user = pool.users.get(username)
    return user if user is not None and user.id == sub else None


def _at_hash(access_token: str) -> str:
    """OIDC's at_hash: the left half of the access token's SHA-256, base64url."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


# Attributes an id token carries as JSON booleans or numbers; every other one is a string, as the pool stores it.
_BOOLEAN_ATTRIBUTES = frozenset({"email_verified", "phone_number_verified"})


def _attribute_claims(client: AppClient, user: CognitoIdpUser) -> dict[str, Any]:
    """The user's attributes the client may read, as id token claims."""
    claims: dict[str, Any] = {}
    for attribute in user.attributes:
        name, value = attribute["Name"], attribute["Value"]
        if name == "sub" or not client.readable(name):
            continue
        if name in _BOOLEAN_ATTRIBUTES:
            claims[name] = value == "true"
        elif name == "updated_at" and str(value).isdigit():
            claims[name] = int(value)
        elif name == "identities":
            claims[name] = _identities_claim(value)
        else:
            claims[name] = value
    return claims


def _identities_claim(stored: str) -> list[dict[str, Any]]:
    """The identities attribute as Cognito's id tokens carry it: a JSON array whose `primary` and `dateCreated` are
    strings ("true", milliseconds), where the attribute holds a boolean and a number."""
    try:
        identities = json.loads(stored)
    except ValueError:
        return []
    if not isinstance(identities, list):
        return []
    claims = []
    for identity in identities:
        if isinstance(identity, dict):
            claim = dict(identity)
            if isinstance(claim.get("primary"), bool):
                claim["primary"] = "true" if claim["primary"] else "false"
            if isinstance(claim.get("dateCreated"), int):
                claim["dateCreated"] = str(claim["dateCreated"])
            claims.append(claim)
    return claims


# ------------------------------------------------------------------------------------------ /oauth2/token


def token_grant(
    state: HostedState, form: Mapping[str, str], *, basic: tuple[str, str] | None, now: float
) -> IssuedTokens:
    """The tokens a token endpoint request is granted (form: its body's parameters, each once; basic: its HTTP Basic
    credentials), or the OAuthError Cognito answers (all HTTP 400)."""
    client = authenticate_client(form.get("client_id"), form.get("client_secret"), basic=basic, status=400)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    grant = _GRANTS.get(grant_type)
    if grant is None:
        raise OAuthError(
            "unsupported_grant_type", "grant_type must be authorization_code, refresh_token or client_credentials"
        )
    if not client.oauth_enabled:
        raise OAuthError(
            "unauthorized_client", "The app client is not enabled for OAuth 2.0 (AllowedOAuthFlowsUserPoolClient)"
        )
    return grant(state, client, form, now)


def _authorization_code_grant(
    state: HostedState, client: AppClient, form: Mapping[str, str], now: float
) -> IssuedTokens:
    value, redirect_uri = form.get("code"), form.get("redirect_uri")
    if not value or not redirect_uri:
        raise OAuthError("invalid_request", "code and redirect_uri are required")
    if CODE_FLOW not in client.flows:
        raise OAuthError("unauthorized_client", "The app client is not allowed the code flow (AllowedOAuthFlows)")
    code = state.redeem_code(value, now=now)
    if code is None or (code.pool_id, code.client_id) != (client.pool.id, client.id):
        raise OAuthError("invalid_grant", "Authorization code is invalid, expired or used already")
    if code.redirect_uri != redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri is not the one the code was issued for")
    verifier = form.get("code_verifier")
    if code.code_challenge is None:
        # RFC 9700 2.1.1: a verifier for a code issued without a challenge is refused, not ignored (PKCE downgrade).
        if verifier is not None:
            raise OAuthError("invalid_grant", "code_verifier given for a code issued without a code_challenge")
    elif not verifier or not verifier_matches(code.code_challenge, verifier):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    user = _user(client.pool, code.username, code.sub)
    if user is None or not user.enabled:
        raise OAuthError("invalid_grant", "User is disabled or does not exist")
    return start_session(state, client, code, user, now=now)


def _refresh_token_grant(state: HostedState, client: AppClient, form: Mapping[str, str], now: float) -> IssuedTokens:
    refresh_token = form.get("refresh_token")
    if not refresh_token:
        raise OAuthError("invalid_request", "refresh_token is required")
    return refresh_session(state, client, refresh_token, now=now)


def _client_credentials_grant(
    state: HostedState, client: AppClient, form: Mapping[str, str], now: float
) -> IssuedTokens:
    if not client.has_secret or CLIENT_CREDENTIALS_FLOW not in client.flows:
        raise OAuthError("unauthorized_client", "The app client is not allowed the client_credentials flow")
    return client_token(client, client_credentials_scopes(client, form.get("scope")), now=now)


_GRANTS: dict[str, Callable[[HostedState, AppClient, Mapping[str, str], float], IssuedTokens]] = {
    "authorization_code": _authorization_code_grant,
    "refresh_token": _refresh_token_grant,
    "client_credentials": _client_credentials_grant,
}


# ------------------------------------------------------------------------------------------- revocation


def revoke(state: HostedState, client: AppClient, token: str) -> None:
    """Cognito's revocation: the refresh token, and every access and id token issued from it (same origin_jti), are
    refused from now on. A token the pool does not know, or revoked already, is answered as revoked."""
    if not client.token_revocation:
        raise RevocationRefused(RevocationRefusal.DISABLED)
    if token.count(".") == 2:
        # A JWT: an access or id token. Cognito's refresh tokens are opaque to the app (moto's are UUIDs).
        raise RevocationRefused(RevocationRefusal.NOT_A_REFRESH_TOKEN)
    record = client.pool.refresh_tokens.get(token)
    if record is None:
        return
    if record[0] != client.id:
        raise RevocationRefused(RevocationRefusal.OTHER_CLIENT)
    revoke_session(state, client.pool, token)


def revoke_session(state: HostedState, pool: CognitoIdpUserPool, refresh_token: str) -> None:
    """Drop the access and id tokens that carry the refresh token's origin_jti from moto's tables, so GetUser and
    the token endpoint refuse them, then mark the refresh token revoked (as moto's sign-outs do): in that order, so
    a revocation cut short leaves the refresh token to revoke again, never its tokens live."""
    record = pool.refresh_tokens.get(refresh_token)
    if record is None:
        return
    for table in token_tables(pool):
        table.drop_session(record[2])
    pool.refresh_tokens[refresh_token] = None
    state.sessions.pop(refresh_token, None)


# ----------------------------------------------------------------------------------------- userInfo


def user_info(access_token: str, *, now: float) -> dict[str, Any]:
    """The /oauth2/userInfo answer for a live access token of the token endpoint's, with the openid scope: `sub`,
    the attributes its client may read (as the pool stores them: strings) and `username`; an invalid_token error
    (HTTP 401) for any other token."""
    pool = next((pool for pool in user_pools() if access_token in pool.access_tokens), None)
    if pool is None:
        raise _invalid_token("Access token is expired, disabled, or deleted, or the user has globally signed out.")
    try:
        claims = jwt.decode(access_token, pool.json_web_key, algorithms=["RS256"]).claims
    except (JoseError, ValueError) as error:
        raise _invalid_token("Access token is malformed.") from error
    if claims.get("token_use") != "access" or not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
        raise _invalid_token("Access token is expired, disabled, or deleted, or the user has globally signed out.")
    if OPENID not in str(claims.get("scope", "")).split(" "):
        raise _invalid_token("Access token does not have the openid scope.")
    client_id, username = pool.access_tokens[access_token]
    user = _user(pool, username, claims.get("sub"))
    client = app_client(client_id)
    if user is None or client is None or not user.enabled:
        raise _invalid_token("Access token is expired, disabled, or deleted, or the user has globally signed out.")
    answer: dict[str, Any] = {"sub": user.id}
    for attribute in user.attributes:
        if attribute["Name"] != "sub" and client.readable(attribute["Name"]):
            answer[attribute["Name"]] = attribute["Value"]
    answer["username"] = user.username
    return answer


def _invalid_token(description: str) -> OAuthError:
    return OAuthError("invalid_token", description, status=401)


# ------------------------------------------------------------------------------------------------- /logout


def logout_location(query: Mapping[str, str]) -> str:
    """Where /logout sends the browser: logout_uri, when it is one of the client's sign-out URLs (LogoutURLs).
    There is no session cookie here to end, and no managed login to send the browser back to."""
    client = app_client(query.get("client_id"))
    if client is None:
        raise ErrorPage("Unknown app client", "client_id names no app client of this emulator's user pools.")
    logout_uri = query.get("logout_uri")
    if logout_uri:
        if logout_uri not in client.logout_urls:
            raise ErrorPage(
                "Sign-out URL not allowed",
                f"logout_uri {logout_uri!r} is not one of the app client's sign-out URLs (LogoutURLs).",
            )
        return logout_uri
    if query.get("redirect_uri"):
        raise ErrorPage(
            "No managed login here",
            "A logout with redirect_uri signs in again on Cognito's managed login pages, which the local emulator "
            "does not have: give logout_uri instead.",
        )
    raise ErrorPage("logout_uri is required", "Give logout_uri, one of the app client's sign-out URLs (LogoutURLs).")
