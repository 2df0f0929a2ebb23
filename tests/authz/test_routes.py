"""authz/routes.py: what a route demands, read from its context_extensions; anything not understood is
misconfigured."""

from __future__ import annotations

import pytest

from authz import errors
from authz.errors import RouteMisconfigured
from authz.routes import RouteSettings, route_settings


def test_routes_require_an_access_token_by_default():
    """With no context_extensions a route requires auth and accepts access tokens only."""
    assert route_settings({}) == RouteSettings(auth_required=True, token_uses=frozenset({"access"}))


def test_route_settings_parse_every_key():
    """auth, token_use, groups (comma list) and scopes (space or comma list) are read from context_extensions."""
    settings = route_settings({"auth": "required", "token_use": "any", "groups": "admins, staff", "scopes": "a b,c"})
    assert settings == RouteSettings(
        auth_required=True,
        token_uses=frozenset({"access", "id"}),
        groups=frozenset({"admins", "staff"}),
        scopes=frozenset({"a", "b", "c"}),
    )
    assert route_settings({"auth": "optional"}).auth_required is False
    assert route_settings({"token_use": "id"}).token_uses == frozenset({"id"})


@pytest.mark.parametrize(
    "extensions, key",
    [
        ({"auth": "maybe"}, "auth"),
        ({"auth": ""}, "auth"),
        ({"token_use": "refresh"}, "token_use"),
        ({"groups": ""}, "groups"),
        ({"groups": " , "}, "groups"),
        ({"scopes": "  "}, "scopes"),
        ({"group": "admins"}, "group"),  # a typo must not silently open the route
        ({"auth": "optional", "groups": "admins"}, "groups"),
        ({"auth": "optional", "scopes": "feed/read"}, "scopes"),
        ({"token_use": "id", "scopes": "feed/read"}, "scopes"),
    ],
)
def test_unknown_or_contradictory_route_settings_are_a_configuration_error(extensions, key):
    """A key or value the server does not understand raises RouteMisconfigured naming the key."""
    with pytest.raises(errors.RouteMisconfigured) as caught:
        route_settings(extensions)
    assert caught.value.key == key


def test_route_revocation_check_skip_or_default():
    """revocation=check and revocation=skip are read from context_extensions; absent means the server default."""
    assert route_settings({"revocation": "check"}).revocation is True
    assert route_settings({"revocation": "skip"}).revocation is False
    assert route_settings({}).revocation is None
    assert route_settings({"token_use": "any", "revocation": "skip"}).revocation is False


@pytest.mark.parametrize("value", ["yes", "", "CHECK", " check", "off", "true"])
def test_unknown_route_revocation_values_are_misconfigured(value):
    """Any other revocation value (including empty) is a misconfigured route naming the key."""
    with pytest.raises(RouteMisconfigured) as caught:
        route_settings({"revocation": value})
    assert caught.value.key == "revocation"
