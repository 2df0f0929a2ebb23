"""What a route demands of its callers (RouteSettings), and reading it from where Envoy states it.

Today the one source is the route's `context_extensions` in Envoy's per-route ext_authz config. Whatever the
source, a key or value we do not understand is RouteMisconfigured, never ignored: a typo such as `group=admins`
must not silently open a route to every caller.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from authz.errors import RouteMisconfigured

_TOKEN_USES = {"access": frozenset({"access"}), "id": frozenset({"id"}), "any": frozenset({"access", "id"})}
_REVOCATION = {"check": True, "skip": False}
_KEYS = frozenset({"auth", "token_use", "groups", "scopes", "revocation"})


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """What a route demands."""

    auth_required: bool = True
    token_uses: frozenset[str] = frozenset({"access"})
    # Any of these groups (cognito:groups); all of these scopes (scope).
    groups: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    # Confirm the token with Cognito (revocation=check), never (skip), or as the server is configured (None).
    revocation: bool | None = None


def route_settings(context_extensions: Mapping[str, str]) -> RouteSettings:
    """A route's settings from its context_extensions; any key or value we do not understand raises
    RouteMisconfigured naming the key."""
    return _parsed_settings(tuple(sorted(context_extensions.items())))


# Route settings by context_extensions: a route sends the same few pairs on every Check, so each distinct set is
# parsed once (bounded: routes are few, and a flood of made-up sets only evicts its own kind).
@functools.lru_cache(maxsize=1024)
def _parsed_settings(items: tuple[tuple[str, str], ...]) -> RouteSettings:
    values = dict(items)
    unknown = set(values) - _KEYS
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
    """A non-empty set of names split on any of `separators`."""
    if key not in values:
        return frozenset()
    raw = values[key]
    for separator in separators[1:]:
        raw = raw.replace(separator, separators[0])
    names = frozenset(name.strip() for name in raw.split(separators[0]) if name.strip())
    if not names:
        raise RouteMisconfigured(key=key)
    return names
