"""authz/errors.py: the deny reasons, what each tells the client, and what an instance carries for logs."""

from __future__ import annotations

import copy

import pytest

from authz.errors import (
    AuthzError,
    InvalidClaim,
    RevocationUnavailable,
    RouteMisconfigured,
    TokenExpired,
    TokenRevoked,
    UnknownSigningKey,
)


def test_refusals_tell_the_client_the_right_thing():
    """A revoked token is a 401 invalid_token (refresh or sign in again); Cognito's silence is a 503, not the client's fault."""
    assert (TokenRevoked.http_status, TokenRevoked.bearer_error, TokenRevoked.reason, TokenRevoked.description) == (
        401,
        "invalid_token",
        "token_revoked",
        "token revoked",
    )
    assert (RevocationUnavailable.http_status, RevocationUnavailable.bearer_error, RevocationUnavailable.reason) == (
        503,
        None,
        "revocation_unavailable",
    )
    assert RevocationUnavailable.permanent is False


def deny_reasons() -> list[type[AuthzError]]:
    found: list[type[AuthzError]] = []
    pending = [AuthzError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_deny_reason_has_its_own_static_label_and_text():
    """No two reasons share a metrics label, and no client-facing text can carry anything but itself (no
    placeholders a value could be formatted into)."""
    reasons = deny_reasons()
    labels = [cls.reason for cls in reasons]
    assert len(labels) == len(set(labels))
    for cls in reasons:
        assert "{" not in cls.description and "%" not in cls.description, cls


def test_an_error_carries_its_cause_as_typed_attributes_never_in_its_text():
    """The claim, kid or route key at fault is an attribute for logs and tests; the message stays the static text."""
    claim = InvalidClaim(claim="cognito:groups")
    kid = UnknownSigningKey(kid="attacker-chosen")
    route = RouteMisconfigured(key="group")
    assert (claim.claim, kid.kid, route.key) == ("cognito:groups", "attacker-chosen", "group")
    assert [str(error) for error in (claim, kid, route)] == [
        "invalid token claims",
        "unknown signing key",
        "route authorization is misconfigured",
    ]


def test_a_copy_keeps_reason_and_attributes_and_drops_the_traceback():
    """copy.copy() of a raised error is the same reason with the same attributes, without the traceback (whose
    frames held the token) or the exception it was raised during."""

    def raise_while_handling() -> None:
        try:
            raise ValueError("underneath")
        except ValueError:
            raise TokenExpired(exp=1.0, now=2.0)  # noqa: B904 - the implicit __context__ is what the copy must drop

    with pytest.raises(TokenExpired) as caught:
        raise_while_handling()
    original = caught.value
    clone = copy.copy(original)
    assert type(clone) is TokenExpired and clone is not original
    assert (clone.exp, clone.now, clone.reason, str(clone)) == (1.0, 2.0, "expired", "token expired")
    assert original.__traceback__ is not None and original.__context__ is not None
    assert clone.__traceback__ is None and clone.__context__ is None
