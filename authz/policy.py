"""The rules of a Check, free of gRPC and I/O: what a verified token, an error or no token at all means on a route,
and what revocation's confirmation makes of an allowed Decision.

This module holds the whole HTTP contract: which identity headers an allowed request carries to the upstream
and which it must lose, and what status, WWW-Authenticate challenge and JSON body a denied client sees. The
transports (service.py for gRPC) only translate a Decision into their wire types.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import assert_never

import identity_headers
from authz.config import RevocationOnError
from authz.errors import (
    AuthzError,
    ClaimMismatch,
    MissingGroup,
    MissingScope,
    MissingToken,
    PrincipalNotAllowed,
    RevocationUnavailable,
    RouteMisconfigured,
    SignOutUnavailable,
    TokenExpired,
    TokenRevoked,
    TokenUseNotAllowed,
    WrongAudience,
)
from authz.revocation import Confirmation, SignOutOutcome
from authz.routes import RouteSettings
from authz.tokens import VerifiedToken

OK = 0

# What verification made of a Check's token: the verified identity, the error that stopped it, or None when the
# request carried no token at all.
Verdict = VerifiedToken | AuthzError | None


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
    # Computed once: a transport looks its reply up by Decision on every Check, and hashing every field anew (the
    # identity's included) cost more than the rest of that lookup.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash(tuple(getattr(self, name) for name in _DECISION_FIELDS)))

    def __hash__(self) -> int:
        return self._hash


# Every field a Decision is compared by, so that equal Decisions hash alike.
_DECISION_FIELDS = tuple(field.name for field in dataclasses.fields(Decision) if field.compare)


MetadataValue = str | tuple[str, ...]


def caller_metadata(caller: VerifiedToken) -> tuple[tuple[str, MetadataValue], ...]:
    """The dynamic metadata of an allow (identity_headers.METADATA_KEYS, in order): only what the identity headers
    carry, and the pool."""
    values = (
        caller.sub,
        caller.principal,
        caller.client_id,
        caller.token_use,
        caller.pool_id,
        caller.groups,
        caller.scopes,
    )
    return tuple(zip(identity_headers.METADATA_KEYS, values, strict=True))


def as_text(key: str, value: MetadataValue) -> str:
    """A value as a header carries it (an identity header, or metadata on a transport whose metadata are strings):
    groups comma-joined, a group holding the comma left out; scopes space-joined; "" for an empty list."""
    if isinstance(value, str):
        return value
    if key == "groups":
        return identity_headers.GROUPS_SEPARATOR.join(
            item for item in value if identity_headers.GROUPS_SEPARATOR not in item
        )
    return identity_headers.SCOPES_SEPARATOR.join(value)


class Policy:
    def __init__(
        self,
        *,
        header_prefix: str = identity_headers.DEFAULT_PREFIX,
        claim_headers: Sequence[str] = (),
        realm: str = "api",
        on_unconfirmed: RevocationOnError = RevocationOnError.ALLOW,
    ) -> None:
        """claim_headers: the AUTHZ_CLAIM_HEADERS header names, in the order of a VerifiedToken's claim_headers values;
        on_unconfirmed: what a token Cognito did not confirm in time gets (AUTHZ_REVOCATION_ON_ERROR)."""
        self.identity_headers = identity_headers.header_names(header_prefix) + tuple(claim_headers)
        self._realm = realm
        self._on_unconfirmed = on_unconfirmed
        self._anonymous = Decision(
            allowed=True, reason="anonymous", grpc_code=OK, http_status=200, removed_headers=self.identity_headers
        )
        # Deny decisions by reason: each is static, so it is built once (bounded by the number of error classes).
        self._denials: dict[type[AuthzError], Decision] = {}

    def decide(self, verdict: Verdict, route: RouteSettings) -> Decision:
        """The Decision for a route, given what verification made of the request's token."""
        if verdict is None:
            return self._anonymous if not route.auth_required else self.deny(MissingToken())
        if isinstance(verdict, AuthzError):
            return self.deny(verdict)
        if verdict.token_use not in route.token_uses:
            return self.deny_caller(TokenUseNotAllowed, verdict)
        if route.audiences and route.audiences.isdisjoint(verdict.audiences):
            return self.deny_caller(WrongAudience, verdict)
        if verdict.principal not in route.principals:
            return self.deny_caller(PrincipalNotAllowed, verdict)
        if route.groups and route.groups.isdisjoint(verdict.groups):
            return self.deny_caller(MissingGroup, verdict)
        if route.scopes and not route.scopes.issubset(verdict.scopes):
            return self.deny_caller(MissingScope, verdict)
        if not all(condition.holds(verdict.claim(condition.name)) for condition in route.claims):
            return self.deny_caller(ClaimMismatch, verdict)
        return self._allow(verdict)

    def with_revocation(self, allowed: Decision, confirmation: Confirmation) -> Decision:
        """An allowed caller's Decision once revocation has spoken about its token."""
        caller = allowed.identity
        match confirmation:
            case Confirmation.NOT_APPLICABLE | Confirmation.CONFIRMED:
                return allowed
            case Confirmation.NOT_CONFIGURED:
                # The route demands a check this server cannot make: never skip it silently.
                return self.deny(RouteMisconfigured(key="revocation"))
            case Confirmation.REVOKED:
                return self.deny_caller(TokenRevoked, caller)
            case Confirmation.EXPIRED:
                return self.deny_caller(TokenExpired, caller)
            case Confirmation.UNCONFIRMED if self._on_unconfirmed is RevocationOnError.DENY:
                return self.deny_caller(RevocationUnavailable, caller)
            case Confirmation.UNCONFIRMED:
                # Allowed on the JWT alone: the reason says so in logs and metrics.
                return dataclasses.replace(allowed, reason="ok_unconfirmed")
            case _:
                assert_never(confirmation)

    def with_sign_out(self, allowed: Decision, outcome: SignOutOutcome) -> Decision:
        """An allowed caller's Decision on a sign-out route once the sign-out was (or was not) recorded."""
        match outcome:
            case SignOutOutcome.RECORDED:
                return allowed
            case SignOutOutcome.NOT_CONFIGURED:
                # The route demands what this server cannot do: never let it look done.
                return self.deny(RouteMisconfigured(key="sign_out"))
            case SignOutOutcome.UNAVAILABLE:
                return self.deny_caller(SignOutUnavailable, allowed.identity)
            case _:
                assert_never(outcome)

    def deny(self, error: AuthzError) -> Decision:
        return self._deny(type(error))

    def deny_caller(self, error: type[AuthzError], caller: VerifiedToken | None) -> Decision:
        # The response is the static one; the identity rides along for logs and metrics only.
        return dataclasses.replace(self._deny(error), identity=caller)

    def _allow(self, token: VerifiedToken) -> Decision:
        values = (
            token.sub,
            token.username or "",
            # A group name holding the separator cannot be told apart in the joined header, so it is left out of
            # the header (routes still match it by its full name).
            as_text("groups", token.groups),
            as_text("scopes", token.scopes),
            token.client_id,
            token.token_use,
            token.principal,
            token.identity_provider or "",
            *token.claim_headers,
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

    def _deny(self, error: type[AuthzError]) -> Decision:
        decision = self._denials.get(error)
        if decision is None:
            decision = self._denials[error] = self._denial(error)
        return decision

    def _denial(self, error: type[AuthzError]) -> Decision:
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
