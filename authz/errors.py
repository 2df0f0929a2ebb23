"""Every reason a Check is denied: one root, one class per reason.

Each class carries static text only. `description` is what the client sees (error_description and the JSON
body) and `reason` is the label for metrics and logs; neither ever echoes token content or configured lists.
What an instance knows about its cause (a claim name, a kid, a route key) is a typed attribute, for logs and
tests, never for clients.
"""

from __future__ import annotations

from typing import ClassVar, Self

# google.rpc.Code values, kept here so policy and errors need no gRPC import.
INVALID_ARGUMENT = 3
UNAUTHENTICATED = 16
PERMISSION_DENIED = 7
UNAVAILABLE = 14
INTERNAL = 13


class MustWait(Exception):
    """Not a deny: raised, when asked not to wait, by a part whose answer needs the network first (a key refetch,
    Cognito's GetUser). The transport then decides the Check again where waiting is fine."""


class AuthzError(Exception):
    """Root of every deny reason."""

    reason: ClassVar[str] = "denied"
    description: ClassVar[str] = "access denied"
    http_status: ClassVar[int] = 401
    grpc_code: ClassVar[int] = UNAUTHENTICATED
    # RFC 6750 section 3.1 error code for WWW-Authenticate; None leaves the attribute out.
    bearer_error: ClassVar[str | None] = "invalid_token"
    # Whether the verdict on a given token can never change, so it may be cached by token.
    permanent: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__(self.description)

    def __copy__(self) -> Self:
        """The same reason with the same attributes, and none of this instance's traceback or context (a raised
        instance's traceback keeps the frames it passed through alive, the token among their locals)."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        Exception.__init__(clone, self.description)
        return clone


class MissingToken(AuthzError):
    reason = "missing_token"
    description = "authentication required"
    bearer_error = None


class InvalidToken(AuthzError):
    """The request carried credentials that are not a valid token for this API (401, so clients refresh)."""

    reason = "invalid_token"
    description = "invalid token"


class MalformedAuthorization(InvalidToken):
    reason = "malformed_authorization"
    description = "authorization header must be a single 'Bearer <token>'"


class TokenTooLarge(InvalidToken):
    reason = "token_too_large"
    description = "token too large"


class MalformedToken(InvalidToken):
    reason = "malformed_token"
    description = "malformed token"


class UnsupportedAlgorithm(InvalidToken):
    reason = "unsupported_algorithm"
    description = "unsupported token algorithm"


class UnsupportedHeader(InvalidToken):
    reason = "unsupported_header"
    description = "unsupported token header parameter"


class UnknownSigningKey(InvalidToken):
    reason = "unknown_kid"
    description = "unknown signing key"
    # The pool may publish the key later (rotation), so the verdict is not cached.
    permanent = False

    def __init__(self, kid: str) -> None:
        super().__init__()
        self.kid = kid


class BadSignature(InvalidToken):
    reason = "bad_signature"
    description = "invalid token signature"


class UntrustedIssuer(InvalidToken):
    reason = "untrusted_issuer"
    description = "untrusted token issuer"


class InvalidClaim(InvalidToken):
    reason = "invalid_claim"
    description = "invalid token claims"

    def __init__(self, claim: str) -> None:
        super().__init__()
        self.claim = claim


class TokenExpired(InvalidToken):
    reason = "expired"
    description = "token expired"

    def __init__(self, exp: float, now: float) -> None:
        super().__init__()
        self.exp = exp
        self.now = now


class TokenNotYetValid(InvalidToken):
    reason = "not_yet_valid"
    description = "token not yet valid"
    permanent = False

    def __init__(self, claim: str) -> None:
        super().__init__()
        self.claim = claim


class WrongTokenUse(InvalidToken):
    reason = "wrong_token_use"
    description = "invalid token_use"


class WrongClient(InvalidToken):
    reason = "wrong_client"
    description = "token not issued for an allowed client"


class TokenUseNotAllowed(InvalidToken):
    reason = "token_use_not_allowed"
    description = "token type not accepted here"


class InsufficientScope(AuthzError):
    """A valid caller lacks a group or scope the route requires (403)."""

    reason = "insufficient_scope"
    description = "insufficient permissions"
    http_status = 403
    grpc_code = PERMISSION_DENIED
    bearer_error = "insufficient_scope"


class MissingGroup(InsufficientScope):
    reason = "missing_group"
    description = "caller is not in a required group"


class MissingScope(InsufficientScope):
    reason = "missing_scope"
    description = "token lacks a required scope"


class PrincipalNotAllowed(InsufficientScope):
    """A user where the route takes only app clients, or the other way round (`principal`)."""

    reason = "principal_not_allowed"
    description = "this kind of caller is not allowed here"


class ClaimMismatch(InsufficientScope):
    """A claim condition of the route does not hold for the caller's token (`claims`)."""

    reason = "claim_mismatch"
    description = "token lacks a required claim value"


class WrongAudience(InvalidToken):
    """The access token is bound to other resources, or to none, where the route takes only tokens for its own
    (`audiences`, RFC 8707): 401, so the client asks for a token for this resource."""

    reason = "wrong_audience"
    description = "token not issued for this resource"


class RouteMisconfigured(AuthzError):
    """A route's settings are not ones we understand, or ask for what this server cannot do: deny rather than
    guess. `key` names the setting at fault."""

    reason = "route_misconfigured"
    description = "route authorization is misconfigured"
    http_status = 403
    grpc_code = PERMISSION_DENIED
    bearer_error = None

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key


class BadPath(AuthzError):
    """The request's path is not in normal form (a dot segment, //, a backslash, an encoded /, \\ or .): no rule is
    applied to it, since a front proxy that forgot to normalize could otherwise open a protected route."""

    reason = "bad_path"
    description = "request path is not in normal form"
    http_status = 400
    grpc_code = INVALID_ARGUMENT
    bearer_error = None


class KeysUnavailable(AuthzError):
    """The pool's signing keys could not be loaded: not the client's fault, so 503 and no invalid_token."""

    reason = "keys_unavailable"
    description = "signing keys unavailable"
    http_status = 503
    grpc_code = UNAVAILABLE
    bearer_error = None
    permanent = False

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url


class TokenRevoked(InvalidToken):
    """Cognito no longer honours the token: its user signed out everywhere, or was disabled or deleted."""

    reason = "token_revoked"
    description = "token revoked"


class RevocationUnavailable(AuthzError):
    """Cognito could not confirm a token in time and AUTHZ_REVOCATION_ON_ERROR=deny: not the client's fault."""

    reason = "revocation_unavailable"
    description = "cannot confirm the token with the identity provider"
    http_status = 503
    grpc_code = UNAVAILABLE
    bearer_error = None
    permanent = False


class SignOutUnavailable(AuthzError):
    """A sign-out route could not record the sign-out in the shared state (AUTHZ_STATE_URL unreachable): refused, so
    the caller never believes itself signed out while its tokens still work; not the client's fault."""

    reason = "sign_out_unavailable"
    description = "cannot record the sign-out now"
    http_status = 503
    grpc_code = UNAVAILABLE
    bearer_error = None
    permanent = False


class InternalError(AuthzError):
    """The server failed while deciding: deny (fail closed) without blaming the client's token."""

    reason = "internal_error"
    description = "authorization failed"
    http_status = 500
    grpc_code = INTERNAL
    bearer_error = None
    permanent = False
