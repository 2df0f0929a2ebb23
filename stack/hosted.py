"""Cognito's hosted OAuth 2.0 endpoints in the local emulator, which moto does not have: a WSGI layer in front of the
emulator's own (stack/emulator.py wraps its app in HostedEndpoints), serving every pool of the emulator.

    GET  /oauth2/authorize     response_type=code with PKCE (S256) and identity_provider=<an OIDC provider of the
                               client>: the browser goes on to that IdP's sign-in page, with a sign-in cookie
    GET  /oauth2/idpresponse   where the IdP sends the browser back (that browser only: its cookie is required):
                               the federated user signs in, the app's callback URL gets ?code=...&state=...
    POST /oauth2/token         authorization_code, refresh_token and client_credentials grants
    POST /oauth2/revoke        revoke a refresh token and the tokens issued from it
    GET  /oauth2/userInfo      the user's attributes, for an access token with the openid scope
    GET  /logout               back to one of the client's sign-out URLs

and two user-pool API actions: RevokeToken, and InitiateAuth's REFRESH_TOKEN_AUTH for a refresh token these
endpoints issued (its tokens keep their scopes and shape); every other InitiateAuth is the emulator's. The token,
revoke and userInfo endpoints answer browsers' fetches from any origin (CORS, preflight included), as the pages
exchange codes and revoke from the browser.

Where the emulator differs from Cognito: it has no managed login pages (an authorize request without
identity_provider gets a page saying so), issues codes only (no implicit grant), requires PKCE of a client without
a secret (Cognito does not), federates with OIDC IdPs only and maps the claims of their id token (Cognito also reads
their userInfo endpoint). EMULATOR_AUTHORIZATION_CODE_SECONDS (default 300, Cognito's five minutes) sets how long a
code lives, for tests of expiry; EMULATOR_IDP_TIMEOUT_SECONDS (default 5) bounds each call to an IdP.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import io
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request, Response

from stack import oauth
from stack.emulator import JSON, REFRESH_FLOWS, TARGET, cognito_error, names_another_action
from stack.federation import (
    IdpError,
    SignInRefused,
    authorization_url,
    discover,
    sign_in_federated_user,
    verified_claims,
)
from stack.oauth import BackToApp, ErrorPage, HostedState, OAuthError, RevocationRefusal, RevocationRefused

AUTHORIZE_PATH = "/oauth2/authorize"
IDP_RESPONSE_PATH = "/oauth2/idpresponse"
TOKEN_PATH = "/oauth2/token"
REVOKE_PATH = "/oauth2/revoke"
USER_INFO_PATH = "/oauth2/userInfo"
LOGOUT_PATH = "/logout"
REVOKE_TOKEN = TARGET + "RevokeToken"
INITIATE_AUTH = TARGET + "InitiateAuth"
CODE_SECONDS_VARIABLE = "EMULATOR_AUTHORIZATION_CODE_SECONDS"
IDP_TIMEOUT_VARIABLE = "EMULATOR_IDP_TIMEOUT_SECONDS"
FORM = "application/x-www-form-urlencoded"
# The cookie that ties a federated sign-in to the browser that started it, one per sign-in (so that two at once in
# one browser both finish): its name's suffix is derived from the state, its value is random and the emulator keeps
# only its SHA-256. Cognito ties /oauth2/idpresponse to the browser with cookies of its own too.
SIGN_IN_COOKIE_PREFIX = "emulator-sign-in-"
SIGN_IN_COOKIE_PATH = "/oauth2/"
# An IdP's error code passes through to the app when it is one (RFC 6749: %x20-21 / %x23-5B / %x5D-7E, in practice
# lower-case words and underscores).
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


@dataclass(frozen=True)
class HostedSettings:
    # How long an authorization code may be redeemed (Cognito: five minutes); 0 makes every code expired, for tests.
    code_seconds: float = 300.0
    # The bound on each call to an external IdP (discovery, token endpoint, JWKS).
    idp_timeout_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HostedSettings:
        """EMULATOR_AUTHORIZATION_CODE_SECONDS and EMULATOR_IDP_TIMEOUT_SECONDS; unset or empty, the defaults."""
        return cls(
            code_seconds=_seconds(env, CODE_SECONDS_VARIABLE, cls.code_seconds, minimum=0.0),
            idp_timeout_seconds=_seconds(env, IDP_TIMEOUT_VARIABLE, cls.idp_timeout_seconds, minimum=0.1),
        )


def _seconds(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    value = (env.get(name) or "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not minimum <= seconds <= 86_400:
        raise ValueError(f"{name} must be a number of seconds from {minimum:g} to 86400, not {value!r}")
    return seconds


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Endpoint:
    """One hosted endpoint: the method it takes, and what answers it."""

    method: str
    handle: Callable[[Request], Response]
    # Called by pages with fetch() from another origin: answers carry CORS headers, OPTIONS is a preflight.
    browser_fetch: bool = False


class HostedEndpoints:
    """WSGI middleware: the hosted endpoints and their two API actions here, everything else to app. state_lock is
    the lock held around everything that touches moto's state (the emulator's own actions and every call app hands
    to moto: its registries are plain dicts, and the server is threaded); it is never held while an IdP is called,
    nor while app is called."""

    def __init__(
        self,
        app: WsgiApp,
        state_lock: threading.Lock,
        settings: HostedSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.lock = state_lock
        self.settings = settings or HostedSettings.from_env(os.environ)
        self.clock = clock
        self.state = HostedState(code_seconds=self.settings.code_seconds)
        self.endpoints = {
            AUTHORIZE_PATH: Endpoint("GET", self.authorize),
            IDP_RESPONSE_PATH: Endpoint("GET", self.idp_response),
            TOKEN_PATH: Endpoint("POST", self.token, browser_fetch=True),
            REVOKE_PATH: Endpoint("POST", self.revoke, browser_fetch=True),
            USER_INFO_PATH: Endpoint("GET", self.user_info, browser_fetch=True),
            LOGOUT_PATH: Endpoint("GET", self.logout),
        }
        self.actions: dict[str, Callable[[dict[str, Any]], tuple[int, dict[str, Any]] | None]] = {
            REVOKE_TOKEN: self.revoke_token_action,
            INITIATE_AUTH: self.refresh_action,
        }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        endpoint = self.endpoints.get(environ.get("PATH_INFO", ""))
        if endpoint is not None:
            return self._serve(endpoint, Request(environ))(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target in self.actions and environ.get("REQUEST_METHOD") == "POST":
            return self._action(target, environ, start_response)
        return self.app(environ, start_response)

    # -- HTTP ------------------------------------------------------------------------------------------

    def _serve(self, endpoint: Endpoint, request: Request) -> Response:
        origin = request.headers.get("Origin")
        if endpoint.browser_fetch and request.method == "OPTIONS":
            return _preflight(endpoint, origin)
        if request.method != endpoint.method:
            response = Response(f"{request.path} takes {endpoint.method}\n", 405, {"Allow": endpoint.method})
        else:
            response = self._answer(endpoint, request)
        if endpoint.browser_fetch and origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.add("Vary", "Origin")
        return response

    @staticmethod
    def _answer(endpoint: Endpoint, request: Request) -> Response:
        try:
            return endpoint.handle(request)
        except ErrorPage as page:
            return _error_page(page)
        except BackToApp as back:
            return _redirect(
                _with_query(
                    back.redirect_uri,
                    {"error_description": back.description or None, "error": back.error, "state": back.state},
                )
            )
        except OAuthError as error:
            return _oauth_error(error)

    def authorize(self, request: Request) -> Response:
        """The app's authorization request: on to the IdP's sign-in page with the emulator's own state and nonce, the
        browser given the sign-in's cookie."""
        query, now = _parameters(request.args), self.clock()
        with self.lock:
            authorization = oauth.authorize(query)
        try:
            endpoints = discover(authorization.provider, timeout=self.settings.idp_timeout_seconds)
        except IdpError as error:
            raise BackToApp(authorization.redirect_uri, authorization.state, "invalid_request", str(error)) from error
        browser_secret = secrets.token_urlsafe(32)
        with self.lock:
            state, pending = self.state.start_sign_in(authorization, browser_binding=_digest(browser_secret), now=now)
        location = authorization_url(
            endpoints,
            authorization.provider,
            redirect_uri=_idp_response_url(request),
            state=state,
            nonce=pending.idp_nonce,
        )
        response = _redirect(location)
        response.set_cookie(
            _sign_in_cookie(state),
            browser_secret,
            max_age=oauth.SIGN_IN_SECONDS,
            path=SIGN_IN_COOKIE_PATH,
            secure=request.is_secure,
            httponly=True,
            samesite="Lax",
        )
        return response

    def idp_response(self, request: Request) -> Response:
        """The IdP's answer: its code exchanged and its id token verified, the federated user signed in, and the app
        sent its own code."""
        query, now = _parameters(request.args), self.clock()
        with self.lock:
            pending = self.state.finish_sign_in(query.get("state") or "")
        if pending is None:
            raise ErrorPage(
                "Unknown sign-in",
                "state names no sign-in the emulator sent to an identity provider, or one that came back already: "
                "start the sign-in again from the app.",
            )
        cookie = _sign_in_cookie(query["state"])
        if not hmac.compare_digest(_digest(request.cookies.get(cookie) or ""), pending.browser_binding):
            # A login CSRF: someone's own sign-in, its answer brought to another browser to sign it in as them.
            raise ErrorPage(
                "Sign-in started in another browser",
                "This browser did not start the sign-in the identity provider answered (it has not the sign-in's "
                "cookie), so it is not signed in: start the sign-in again from the app.",
            )
        authorization = pending.authorization
        provider = authorization.provider

        def back(description: str, error: str = "invalid_request") -> BackToApp:
            return BackToApp(authorization.redirect_uri, authorization.state, error, description)

        if pending.expired(now):
            raise back("The sign-in took too long: start it again.")
        if query.get("error"):
            error = query["error"] if _ERROR_CODE.fullmatch(query["error"]) else "invalid_request"
            raise back(f"{provider.name} Error - {query['error']} {query.get('error_description', '')}".rstrip(), error)
        if not query.get("code"):
            raise back(f"{provider.name} Error - no code in its answer")
        try:
            endpoints = discover(provider, timeout=self.settings.idp_timeout_seconds)
            claims = verified_claims(
                provider,
                endpoints,
                query["code"],
                redirect_uri=_idp_response_url(request),
                nonce=pending.idp_nonce,
                now=now,
                timeout=self.settings.idp_timeout_seconds,
            )
        except IdpError as error:
            raise back(str(error)) from error
        with self.lock:
            client = oauth.app_client(authorization.client.id)
            if client is None:
                raise back("The app client no longer exists.")
            try:
                user = sign_in_federated_user(client.pool, provider, claims, now=now)
            except SignInRefused as refused:
                raise back(str(refused)) from refused
            code = self.state.issue_code(
                oauth.AuthorizationCode(
                    pool_id=client.pool.id,
                    client_id=client.id,
                    redirect_uri=authorization.redirect_uri,
                    code_challenge=authorization.code_challenge,
                    scopes=authorization.scopes,
                    nonce=authorization.nonce,
                    username=user.username,
                    sub=user.id,
                    issued_at=now,
                )
            )
        response = _redirect(_with_query(authorization.redirect_uri, {"code": code, "state": authorization.state}))
        response.delete_cookie(
            cookie, path=SIGN_IN_COOKIE_PATH, secure=request.is_secure, httponly=True, samesite="Lax"
        )
        return response

    def token(self, request: Request) -> Response:
        """The tokens a grant gives, as JSON, or its OAuth error (HTTP 400)."""
        form = _form(request)
        basic = _basic_credentials(request, status=400)
        with self.lock:
            tokens = oauth.token_grant(self.state, form, basic=basic, now=self.clock())
        return _json(200, tokens.token_answer())

    def revoke(self, request: Request) -> Response:
        """200 with an empty body once the refresh token and its tokens are revoked (or for a token unknown here);
        an OAuth error otherwise, invalid_client as HTTP 401."""
        form = _form(request)
        if not form.get("token"):
            raise OAuthError("invalid_request", "token is required")
        basic = _basic_credentials(request, status=401)
        with self.lock:
            client = oauth.authenticate_client(
                form.get("client_id"), form.get("client_secret"), basic=basic, status=401
            )
            try:
                oauth.revoke(self.state, client, form["token"])
            except RevocationRefused as refused:
                raise OAuthError(_REVOKE_ERRORS[refused.reason], refused.reason.value) from refused
        return Response(b"", 200)

    def user_info(self, request: Request) -> Response:
        """The token's user, or its error in WWW-Authenticate too, as Cognito's userInfo answers."""
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise OAuthError("invalid_request", "Bad OAuth2 request at UserInfo Endpoint")
            with self.lock:
                answer = oauth.user_info(token.strip(), now=self.clock())
        except OAuthError as error:
            response = _oauth_error(error)
            response.headers["WWW-Authenticate"] = (
                f'Bearer error="{error.error}", error_description="{error.description}"'
            )
            return response
        return _json(200, answer)

    def logout(self, request: Request) -> Response:
        """Back to the app's sign-out URL, or an error page."""
        with self.lock:
            location = oauth.logout_location(_parameters(request.args))
        return _redirect(location)

    # -- the user-pool API ------------------------------------------------------------------------------

    def _action(self, target: str, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Answer a JSON action of ours, or hand the call on untouched (the emulator's checks then apply: one action
        per call, a JSON body)."""
        raw = Request(environ).get_data(cache=False)
        answer = None
        if not names_another_action(environ, raw):
            try:
                request = json.loads(raw or b"{}")
            except ValueError:
                request = None
            if isinstance(request, dict):
                answer = self.actions[target](request)
        if answer is None:
            # The app behind reads the body again: hand it back, whole and of a known length.
            environ["wsgi.input"] = io.BytesIO(raw)
            environ["CONTENT_LENGTH"] = str(len(raw))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            return self.app(environ, start_response)
        status, body = answer
        response = Response(json.dumps(body), status, content_type=JSON)
        # As the emulator answers browsers: the pages call Cognito from another origin.
        response.headers["Access-Control-Allow-Origin"] = environ.get("HTTP_ORIGIN") or "*"
        return response(environ, start_response)

    def revoke_token_action(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """RevokeToken: as /oauth2/revoke, with the API's errors."""
        client_id, token, secret = request.get("ClientId"), request.get("Token"), request.get("ClientSecret")
        if not isinstance(client_id, str) or not isinstance(token, str) or not client_id or not token:
            return 400, cognito_error("InvalidParameterException", "ClientId and Token are required.")
        if secret is not None and not isinstance(secret, str):
            return 400, cognito_error("InvalidParameterException", "ClientSecret must be a string.")
        with self.lock:
            try:
                client = oauth.authenticate_client(client_id, secret, basic=None, status=400)
                oauth.revoke(self.state, client, token)
            except OAuthError:
                return 400, cognito_error("UnauthorizedException", "Invalid client credentials.")
            except RevocationRefused as refused:
                return 400, cognito_error(_REVOKE_TOKEN_ERRORS[refused.reason], refused.reason.value)
        return 200, {}

    def refresh_action(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """InitiateAuth REFRESH_TOKEN_AUTH with a refresh token of these endpoints' (None for any other call, which
        the emulator answers): new tokens with the session's scopes, as the token endpoint refreshes them."""
        parameters = request.get("AuthParameters")
        if request.get("AuthFlow") not in REFRESH_FLOWS or not isinstance(parameters, dict):
            return None
        refresh_token = parameters.get("REFRESH_TOKEN")
        with self.lock:
            if not isinstance(refresh_token, str) or refresh_token not in self.state.sessions:
                return None
            client = oauth.app_client(request.get("ClientId"))
            if client is None:
                return 400, cognito_error("ResourceNotFoundException", "User pool client does not exist.")
            record = client.pool.refresh_tokens.get(refresh_token)
            if record is None:
                return 400, cognito_error("NotAuthorizedException", "Refresh Token has been revoked")
            if client.has_secret and not oauth.secret_hash_matches(client, record[1], parameters.get("SECRET_HASH")):
                return 400, cognito_error("NotAuthorizedException", "Unable to verify secret hash for client")
            try:
                tokens = oauth.refresh_session(self.state, client, refresh_token, now=self.clock(), id_token=True)
            except OAuthError:
                return 400, cognito_error("NotAuthorizedException", "Invalid Refresh Token")
        return 200, {"ChallengeParameters": {}, "AuthenticationResult": tokens.authentication_result()}


_REVOKE_ERRORS = {
    RevocationRefusal.DISABLED: "invalid_request",
    RevocationRefusal.NOT_A_REFRESH_TOKEN: "unsupported_token_type",
    RevocationRefusal.OTHER_CLIENT: "invalid_grant",
}
_REVOKE_TOKEN_ERRORS = {
    RevocationRefusal.DISABLED: "UnsupportedOperationException",
    RevocationRefusal.NOT_A_REFRESH_TOKEN: "UnsupportedTokenTypeException",
    RevocationRefusal.OTHER_CLIENT: "UnauthorizedException",
}


def _parameters(values: MultiDict[str, str]) -> dict[str, str]:
    """Each parameter once: the first value of a repeated one, which is the one every check and answer then uses."""
    return {key: values[key] for key in values}


def _form(request: Request) -> dict[str, str]:
    if request.mimetype != FORM:
        raise OAuthError("invalid_request", f"Content-Type must be {FORM}")
    return _parameters(request.form)


def _basic_credentials(request: Request, *, status: int) -> tuple[str, str] | None:
    """HTTP Basic client_id:client_secret, when the request has an Authorization header (any other is refused)."""
    if "Authorization" not in request.headers:
        return None
    credentials = request.authorization
    if credentials is None or credentials.type != "basic" or not credentials.username:
        raise OAuthError("invalid_client", "Authorization must be Basic base64(client_id:client_secret)", status=status)
    return credentials.username, credentials.password or ""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _sign_in_cookie(state: str) -> str:
    """The name of the sign-in cookie of the sign-in that state names."""
    return SIGN_IN_COOKIE_PREFIX + _digest(state)[:16]


def _idp_response_url(request: Request) -> str:
    """This emulator's /oauth2/idpresponse, at the address the browser reached it by: the redirect_uri registered at
    the IdP."""
    return request.host_url.rstrip("/") + IDP_RESPONSE_PATH


def _with_query(url: str, parameters: Mapping[str, str | None]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(key, value) for key, value in parameters.items() if value is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redirect(location: str) -> Response:
    return Response(b"", 302, {"Location": location, "Cache-Control": "no-store"})


def _json(status: int, body: Mapping[str, Any]) -> Response:
    response = Response(json.dumps(body), status, content_type="application/json;charset=UTF-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _oauth_error(error: OAuthError) -> Response:
    body = {"error": error.error}
    if error.description:
        body["error_description"] = error.description
    return _json(error.status, body)


def _error_page(page: ErrorPage) -> Response:
    body = (
        "<!doctype html>\n<meta charset=utf-8>\n<title>Sign-in error</title>\n"
        f"<h1>{html.escape(page.title)}</h1>\n<p>{html.escape(page.message)}</p>\n"
    )
    response = Response(body, 400, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response


def _preflight(endpoint: Endpoint, origin: str | None) -> Response:
    response = Response(b"", 204)
    response.headers["Access-Control-Allow-Origin"] = origin or "*"
    response.headers["Access-Control-Allow-Methods"] = f"{endpoint.method}, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
    response.headers["Access-Control-Max-Age"] = "600"
    response.headers["Vary"] = "Origin"
    return response
