"""The decision, free of gRPC: (verified token, error or no token; route settings) -> Decision.

This module holds the whole HTTP contract: which identity headers an allowed request carries to the upstream
and which it must lose, and what status, WWW-Authenticate challenge and JSON body a denied client sees.
service.py only translates a Decision into Envoy's CheckResponse.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass

from authz.errors import (
    AuthzError,
    MissingGroup,
    MissingScope,
    MissingToken,
    RouteMisconfigured,
    TokenUseNotAllowed,
)
from authz.tokens import VerifiedToken

OK = 0
_TOKEN_USES = {"access": frozenset({"access"}), "id": frozenset({"id"}), "any": frozenset({"access", "id"})}
# Header suffixes (after the configurable prefix) in the order they are emitted.
_REVOCATION = {"check": True, "skip": False}
IDENTITY_FIELDS = ("sub", "name", "groups", "scopes", "client-id", "token-use")


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """What a route demands, from ExtAuthzPerRoute.check_settings.context_extensions."""

    auth_required: bool = True
    token_uses: frozenset[str] = frozenset({"access"})
    groups: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    # Confirm the token with Cognito (revocation=check), never (skip), or as the server is configured (None).
    revocation: bool | None = None


def route_settings(context_extensions: Mapping[str, str]) -> RouteSettings:
    """Parse a route's settings; any key or value we do not understand raises RouteMisconfigured.

    An unknown key is an error rather than ignored: a typo such as `group=admin` must not silently open a
    route to every caller.
    """
    return _route_settings(tuple(sorted(context_extensions.items())))


@functools.lru_cache(maxsize=1024)
def _route_settings(items: tuple[tuple[str, str], ...]) -> RouteSettings:
    values = dict(items)
    unknown = set(values) - {"auth", "token_use", "groups", "scopes", "revocation"}
    if unknown:
        raise RouteMisconfigured(key=sorted(unknown)[0])
    auth = values.get("auth", "required")
    if auth not in ("required", "optional"):
        raise RouteMisconfigured(key="auth")
    token_uses = _TOKEN_USES.get(values.get("token_use", "access"))
    if token_uses is None:
        raise RouteMisconfigured(key="token_use")
    groups = _names(values, "groups", ",")
    scopes = _names(values, "scopes", ", ")
    if (groups or scopes) and auth != "required":
        # An optional route lets anonymous callers in, so a group or scope rule there would mean nothing.
        raise RouteMisconfigured(key="groups" if groups else "scopes")
    if scopes and "access" not in token_uses:
        raise RouteMisconfigured(key="scopes")
    revocation = None
    if "revocation" in values:
        revocation = _REVOCATION.get(values["revocation"])
        if revocation is None:
            raise RouteMisconfigured(key="revocation")
    return RouteSettings(
        auth_required=auth == "required", token_uses=token_uses, groups=groups, scopes=scopes, revocation=revocation
    )


def _names(values: Mapping[str, str], key: str, separators: str) -> frozenset[str]:
    if key not in values:
        return frozenset()
    raw = values[key]
    for separator in separators[1:]:
        raw = raw.replace(separator, separators[0])
    names = frozenset(name.strip() for name in raw.split(separators[0]) if name.strip())
    if not names:
        raise RouteMisconfigured(key=key)
    return names


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    grpc_code: int
    http_status: int
    identity: VerifiedToken | None = None
    # Allowed: headers set on the request to the upstream, and identity headers taken off it.
    upstream_headers: tuple[tuple[str, str], ...] = ()
    removed_headers: tuple[str, ...] = ()
    # Denied: what the client receives.
    response_headers: tuple[tuple[str, str], ...] = ()
    body: str = ""


class Policy:
    def __init__(self, *, header_prefix: str = "x-user-", realm: str = "api") -> None:
        self.identity_headers = tuple(header_prefix + field for field in IDENTITY_FIELDS)
        self._realm = realm
        self._anonymous = Decision(
            allowed=True, reason="anonymous", grpc_code=OK, http_status=200, removed_headers=self.identity_headers
        )

    def decide(self, verdict: VerifiedToken | AuthzError | None, route: RouteSettings) -> Decision:
        """verdict is the verified token, the error that stopped verification, or None when no token was sent."""
        if verdict is None:
            return self._anonymous if not route.auth_required else self.deny(MissingToken())
        if isinstance(verdict, AuthzError):
            return self.deny(verdict)
        if verdict.token_use not in route.token_uses:
            return self.deny_caller(TokenUseNotAllowed, verdict)
        if route.groups and route.groups.isdisjoint(verdict.groups):
            return self.deny_caller(MissingGroup, verdict)
        if route.scopes and not route.scopes.issubset(verdict.scopes):
            return self.deny_caller(MissingScope, verdict)
        return self._allow(verdict)

    def deny_caller(self, error: type[AuthzError], caller: VerifiedToken) -> Decision:
        # The response is the static one; the identity rides along for logs and metrics only.
        return dataclasses.replace(self._deny(error), identity=caller)

    def _allow(self, token: VerifiedToken) -> Decision:
        values = (
            token.sub,
            token.username or "",
            # A group name holding a comma cannot be told apart in a comma-joined header, so it is left out
            # of the header (routes still match it by its full name).
            ",".join(group for group in token.groups if "," not in group),
            " ".join(token.scopes),
            token.client_id,
            token.token_use,
        )
        pairs = tuple(zip(self.identity_headers, values, strict=True))
        return Decision(
            allowed=True,
            reason="ok",
            grpc_code=OK,
            http_status=200,
            identity=token,
            upstream_headers=tuple((name, value) for name, value in pairs if value),
            removed_headers=tuple(name for name, value in pairs if not value),
        )

    def deny(self, error: AuthzError) -> Decision:
        return self._deny(type(error))

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one entry per error class; a Policy lives as long as the server
    def _deny(self, error: type[AuthzError]) -> Decision:
        headers: list[tuple[str, str]] = []
        if error.http_status == 401 or error.bearer_error is not None:
            headers.append(("www-authenticate", self._challenge(error)))
        headers.append(("content-type", "application/json"))
        body = json.dumps({"error": error.bearer_error or error.reason, "message": error.description})
        return Decision(
            allowed=False,
            reason=error.reason,
            grpc_code=error.grpc_code,
            http_status=error.http_status,
            response_headers=tuple(headers),
            body=body,
        )

    def _challenge(self, error: type[AuthzError]) -> str:
        parts = [f'Bearer realm="{self._realm}"']
        if error.bearer_error is not None:
            # RFC 6750 3.1: no error attribute when the request carried no token at all.
            parts.append(f'error="{error.bearer_error}"')
            parts.append(f'error_description="{error.description}"')
        return ", ".join(parts)
