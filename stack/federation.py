"""Federated sign-in for the local Cognito emulator: the external OpenID Connect IdP, and the users it makes.

What the emulator asks of an IdP, in order: its discovery document (at the provider's configured `oidc_issuer`,
whose `issuer` must be that same URL), then, when the browser comes back with a code, its token endpoint
(client_secret_basic, as Cognito authenticates to OIDC IdPs) and its JWKS, to verify the id token (RS256 signature,
iss, aud and azp, exp, iat and nbf, the last two give or take CLOCK_SKEW_SECONDS, and the emulator's own nonce). It
fetches nothing else: no URL from a request, no userInfo endpoint (the claims are the id token's), no redirect an
IdP answers with, and every call has a timeout. Errors read as
Cognito's (`<ProviderName> Error - <status> <error>`, "Timeout occurred in calling IdP token endpoint"); the app
sees them as `error=invalid_request&error_description=...` on its callback URL.

The user a sign-in makes is Cognito's federated user: username `<ProviderName>_<IdP user id>` (the claim the
provider's AttributeMapping gives `username`, `sub` by default), status EXTERNAL_PROVIDER, an `identities`
attribute, the provider's mapped attributes (all of them written again on each sign-in; a claim the IdP does not
send leaves its attribute alone) and membership of the automatic group `<userPoolId>_<ProviderName>`.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from moto.cognitoidp.models import (
    CognitoIdpGroup,
    CognitoIdpIdentityProvider,
    CognitoIdpUser,
    CognitoIdpUserPool,
    CognitoIdpUserPoolAttribute,
    UserStatus,
)
from moto.cognitoidp.utils import validate_username_format

EXTERNAL_PROVIDER = "EXTERNAL_PROVIDER"
# Cognito's message for an email attribute that is not an email address (the emulator's API actions answer it too).
INVALID_EMAIL = "Invalid email address format."
# The only signature an IdP's id token may carry here (Cognito's OIDC IdPs sign with RS256 too).
ID_TOKEN_ALGORITHMS = ("RS256",)
# Discovery documents, token answers and key sets are small; a larger body is refused, not read.
MAX_ANSWER_BYTES = 1 << 20
# How far an IdP's clock may run ahead of the emulator's: an id token's iat and nbf may be this much later than now.
CLOCK_SKEW_SECONDS = 30
# Cognito's limit on a mapped attribute's value.
MAX_ATTRIBUTE_LENGTH = 2048


class IdpError(Exception):
    """The IdP could not be used or its answer not trusted; the message is the error_description the app sees."""


class SignInRefused(Exception):
    """The pool refuses the IdP's user (a required attribute missing, a disabled user); the message says why."""


@dataclass(frozen=True)
class OidcProvider:
    """One OIDC identity provider of a pool, as CreateIdentityProvider configured it (ProviderDetails and
    AttributeMapping)."""

    name: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: str
    attribute_mapping: Mapping[str, str]
    # Explicit endpoints in ProviderDetails, used instead of the discovery document's.
    authorize_url: str | None = None
    token_url: str | None = None
    jwks_uri: str | None = None

    @classmethod
    def of(cls, provider: CognitoIdpIdentityProvider) -> OidcProvider:
        """The provider's settings; ValueError when it is no OIDC provider or lacks what a sign-in needs."""
        config = provider.extended_config
        details = config.get("ProviderDetails") or {}
        if config.get("ProviderType") != "OIDC":
            raise ValueError(
                f"{provider.name} is a {config.get('ProviderType')} provider: the emulator signs in with OIDC only"
            )
        missing = [key for key in ("client_id", "oidc_issuer") if not details.get(key)]
        if missing:
            raise ValueError(f"{provider.name} has no {' or '.join(missing)} in its ProviderDetails")
        return cls(
            name=provider.name,
            issuer=details["oidc_issuer"],
            client_id=details["client_id"],
            client_secret=details.get("client_secret", ""),
            scopes=details.get("authorize_scopes") or "openid",
            attribute_mapping=dict(config.get("AttributeMapping") or {"username": "sub"}),
            authorize_url=details.get("authorize_url"),
            token_url=details.get("token_url"),
            jwks_uri=details.get("jwks_uri"),
        )


@dataclass(frozen=True)
class IdpEndpoints:
    """Where the IdP signs users in (the browser goes there) and where the emulator exchanges codes and reads keys."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def discover(provider: OidcProvider, *, timeout: float) -> IdpEndpoints:
    """The provider's endpoints: ProviderDetails' own where given, the rest from its discovery document."""
    document: Mapping[str, Any] = {}
    if not (provider.authorize_url and provider.token_url and provider.jwks_uri):
        url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = _fetch_json(url, timeout=timeout, what="discovery document", provider=provider.name)
        if document.get("issuer") != provider.issuer:
            raise IdpError(f"{provider.name} Error - issuer {document.get('issuer')!r} is not {provider.issuer!r}")

    def endpoint(name: str, configured: str | None) -> str:
        value = configured or document.get(name)
        if not isinstance(value, str) or urllib.parse.urlsplit(value).scheme not in ("http", "https"):
            raise IdpError(f"{provider.name} Error - no usable {name} in its discovery document")
        return value

    return IdpEndpoints(
        authorization_endpoint=endpoint("authorization_endpoint", provider.authorize_url),
        token_endpoint=endpoint("token_endpoint", provider.token_url),
        jwks_uri=endpoint("jwks_uri", provider.jwks_uri),
    )


def authorization_url(
    endpoints: IdpEndpoints, provider: OidcProvider, *, redirect_uri: str, state: str, nonce: str
) -> str:
    """Where the browser goes to sign in at the IdP: an authorization code request with the emulator's own state and
    nonce, coming back to redirect_uri (the emulator's /oauth2/idpresponse)."""
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": redirect_uri,
            "scope": provider.scopes,
            "state": state,
            "nonce": nonce,
        }
    )
    separator = "&" if urllib.parse.urlsplit(endpoints.authorization_endpoint).query else "?"
    return endpoints.authorization_endpoint + separator + query


def verified_claims(
    provider: OidcProvider,
    endpoints: IdpEndpoints,
    code: str,
    *,
    redirect_uri: str,
    nonce: str,
    now: float,
    timeout: float,
) -> dict[str, Any]:
    """The claims of the id token the IdP gives for code, once its signature, issuer, audience (and authorized
    party), expiry, issue and not-before times and nonce hold; IdpError otherwise."""
    id_token = _exchange_code(provider, endpoints, code, redirect_uri=redirect_uri, timeout=timeout)
    keys = _fetch_json(endpoints.jwks_uri, timeout=timeout, what="jwks uri", provider=provider.name)
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(keys), algorithms=ID_TOKEN_ALGORITHMS)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise IdpError(f"{provider.name} Error - invalid id_token: {error}") from error
    _check_claims(token.claims, provider, nonce=nonce, now=now)
    return dict(token.claims)


def _exchange_code(
    provider: OidcProvider, endpoints: IdpEndpoints, code: str, *, redirect_uri: str, timeout: float
) -> str:
    credentials = (
        f"{urllib.parse.quote(provider.client_id, safe='')}:{urllib.parse.quote(provider.client_secret, safe='')}"
    )
    request = urllib.request.Request(
        endpoints.token_endpoint,
        data=urllib.parse.urlencode(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        ).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
        },
        method="POST",
    )
    answer = _call(request, timeout=timeout, what="token endpoint", provider=provider.name)
    id_token = answer.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise IdpError(f"{provider.name} Error - no id_token in its token answer")
    return id_token


def _check_claims(claims: Mapping[str, Any], provider: OidcProvider, *, nonce: str, now: float) -> None:
    def refuse(what: str) -> IdpError:
        return IdpError(f"{provider.name} Error - invalid id_token: {what}")

    if claims.get("iss") != provider.issuer:
        raise refuse(f"iss is not {provider.issuer}")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or provider.client_id not in audiences:
        raise refuse(f"aud does not name client {provider.client_id}")
    # OIDC Core 3.1.3.7: a token for several audiences says which one it was issued to (azp), and that is this one.
    if ("azp" in claims or len(audiences) > 1) and claims.get("azp") != provider.client_id:
        raise refuse(f"azp is not client {provider.client_id}")
    expires = claims.get("exp")
    if not _is_time(expires) or expires <= now:
        raise refuse("expired")
    issued = claims.get("iat")
    if not _is_time(issued) or issued > now + CLOCK_SKEW_SECONDS:
        raise refuse("iat is missing or later than now")
    if "nbf" in claims and (not _is_time(claims["nbf"]) or claims["nbf"] > now + CLOCK_SKEW_SECONDS):
        raise refuse("nbf is later than now")
    if claims.get("nonce") != nonce:
        raise refuse("nonce is not the one this sign-in sent")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise refuse("no sub")


def _is_time(value: object) -> TypeGuard[int | float]:
    """A NumericDate (seconds since the epoch)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """An IdP's redirect is an error here: the emulator fetches the configured endpoints and nothing else."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def _fetch_json(url: str, *, timeout: float, what: str, provider: str) -> dict[str, Any]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise IdpError(f"{provider} Error - {what} {url!r} is no http(s) URL")
    return _call(
        urllib.request.Request(url, headers={"Accept": "application/json"}),
        timeout=timeout,
        what=what,
        provider=provider,
    )


def _call(request: urllib.request.Request, *, timeout: float, what: str, provider: str) -> dict[str, Any]:
    """The JSON object the IdP answers with, or IdpError worded as Cognito words these failures."""
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            body = response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as error:
        raise IdpError(f"{provider} Error - {error.code} {_idp_error(error)}".rstrip()) from error
    except TimeoutError as error:
        raise IdpError(_timeout_description(what)) from error
    except (urllib.error.URLError, OSError) as error:
        if isinstance(getattr(error, "reason", None), TimeoutError):
            raise IdpError(_timeout_description(what)) from error
        raise IdpError(f"{provider} Error - {what} unreachable: {getattr(error, 'reason', error)}") from error
    if len(body) > MAX_ANSWER_BYTES:
        raise IdpError(f"{provider} Error - {what} answer larger than {MAX_ANSWER_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError as error:
        raise IdpError(f"{provider} Error - {what} answer is not JSON") from error
    if not isinstance(document, dict):
        raise IdpError(f"{provider} Error - {what} answer is not a JSON object")
    return document


def _timeout_description(what: str) -> str:
    # Cognito's own wording for the two it documents.
    if what == "token endpoint":
        return "Timeout occurred in calling IdP token endpoint"
    if what == "jwks uri":
        return "Timeout in calling jwks uri"
    return f"Timeout in calling {what}"


def _idp_error(error: urllib.error.HTTPError) -> str:
    """The IdP's own `error error_description`, when it answered an OAuth error document."""
    try:
        document = json.loads(error.read(MAX_ANSWER_BYTES))
    except (ValueError, OSError):
        return ""
    if not isinstance(document, dict):
        return ""
    return " ".join(str(document[key]) for key in ("error", "error_description") if document.get(key))


# ----------------------------------------------------------------------------------------- federated users


class FederatedUser(CognitoIdpUser):
    """A user the pool made from a sign-in at an external IdP. moto holds them CONFIRMED, so its GetUser,
    GlobalSignOut and refresh treat them as signed-in users; every answer about them (AdminGetUser, ListUsers,
    ListUsersInGroup) shows EXTERNAL_PROVIDER, as Cognito's do. No password signs them in: they have none."""

    def _base_json(self) -> dict[str, Any]:
        answer = super()._base_json()
        answer["UserStatus"] = EXTERNAL_PROVIDER
        return answer


def is_email_address(value: object) -> bool:
    """Whether value is an email address, by the pattern moto's SignUp holds a username to in an email pool."""
    return isinstance(value, str) and validate_username_format(value, _format="email")


def idp_user_id(provider: OidcProvider, claims: Mapping[str, Any]) -> str:
    """The user's id at the IdP: the claim AttributeMapping gives `username` (`sub` by default)."""
    claim = provider.attribute_mapping.get("username", "sub")
    user_id = claims.get(claim)
    if not isinstance(user_id, str) or not user_id:
        raise SignInRefused(f"{provider.name} sent no {claim} for the user")
    return user_id


def sign_in_federated_user(
    pool: CognitoIdpUserPool, provider: OidcProvider, claims: Mapping[str, Any], *, now: float
) -> FederatedUser:
    """The pool's user for the IdP's claims: made on the first sign-in, its mapped attributes written again on each
    one, and always a member of the provider's automatic group; SignInRefused when the pool cannot take them."""
    user_id = idp_user_id(provider, claims)
    username = f"{provider.name}_{user_id}"
    attributes = _mapped_attributes(pool, provider, claims)
    existing = pool.users.get(username)
    if existing is not None and not isinstance(existing, FederatedUser):
        raise SignInRefused(f"User {username} exists already and is no user of {provider.name}.")
    if existing is not None and not existing.enabled:
        raise SignInRefused("User is disabled.")
    if existing is None:
        identity = {
            "userId": user_id,
            "providerName": provider.name,
            "providerType": "OIDC",
            "issuer": None,
            "primary": True,
            "dateCreated": int(now * 1000),
        }
        attributes["identities"] = json.dumps([identity], separators=(",", ":"))
    merged = {**(existing.attribute_lookup if existing else {}), **attributes}
    missing = [name for name in _required_attributes(pool) if not merged.get(name)]
    if missing:
        raise SignInRefused(f"attributes required: [{', '.join(missing)}]")
    if "email" in attributes and not is_email_address(attributes["email"]):
        # As Cognito refuses it; and moto looks users up by their email where the pool signs in with email.
        raise SignInRefused(f"Invalid user attributes: email: {INVALID_EMAIL}")
    listed = [{"Name": name, "Value": value} for name, value in attributes.items()]
    if existing is None:
        user = FederatedUser(pool.id, username, None, UserStatus.CONFIRMED, listed)
        pool.users[username] = user
    else:
        user = existing
        user.update_attributes(listed)
    _join_provider_group(pool, provider, user)
    return user


def _mapped_attributes(pool: CognitoIdpUserPool, provider: OidcProvider, claims: Mapping[str, Any]) -> dict[str, str]:
    known = set(CognitoIdpUserPoolAttribute.STANDARD_SCHEMA) | set(pool.schema_attributes)
    attributes: dict[str, str] = {}
    for attribute, claim in provider.attribute_mapping.items():
        if attribute == "username" or claim not in claims:
            continue
        if attribute not in known or attribute == "sub":
            raise SignInRefused(f"Invalid user attributes: {attribute}: Attribute does not exist in the schema.")
        value = _attribute_value(claims[claim])
        if len(value) > MAX_ATTRIBUTE_LENGTH:
            raise SignInRefused(f"Invalid user attributes: {attribute}: longer than {MAX_ATTRIBUTE_LENGTH} characters.")
        attributes[attribute] = value
    # Cognito: "a mapped email is unverified unless you also map email_verified".
    if "email" in attributes and "email_verified" not in provider.attribute_mapping:
        attributes["email_verified"] = "false"
    return attributes


def _attribute_value(claim: Any) -> str:
    """A claim as the string a user-pool attribute holds: booleans as true/false, numbers as written, others JSON."""
    if isinstance(claim, bool):
        return "true" if claim else "false"
    if isinstance(claim, str):
        return claim
    if isinstance(claim, int | float):
        return str(claim)
    return json.dumps(claim, separators=(",", ":"))


def _required_attributes(pool: CognitoIdpUserPool) -> list[str]:
    return [
        attribute.name
        for attribute in pool.schema_attributes.values()
        if attribute.required and attribute.name != "sub"
    ]


def provider_group_name(pool: CognitoIdpUserPool, provider_name: str) -> str:
    """Cognito's automatic group of a provider's users: `<userPoolId>_<ProviderName>`."""
    return f"{pool.id}_{provider_name}"


def _join_provider_group(pool: CognitoIdpUserPool, provider: OidcProvider, user: CognitoIdpUser) -> None:
    name = provider_group_name(pool, provider.name)
    group = pool.groups.get(name)
    if group is None:
        # No role and no precedence, as CreateGroup leaves them when not given (moto's hints say str and int).
        group = CognitoIdpGroup(pool.id, name, "", None, None)  # type: ignore[arg-type]
        pool.groups[name] = group
    # Both ways, as moto's AdminAddUserToGroup links them.
    group.users.add(user)
    user.groups.add(group)
