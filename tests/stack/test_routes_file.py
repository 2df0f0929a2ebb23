"""The stack's route table (stack/routes/routes.yaml): valid, and saying what Envoy's routes say.

The stack's Envoy sends no rules, so this file is where the stack's rules live; envoy/bootstrap.py's ROUTES keep the
same rules as context_extensions for the variant that sends them. Each row of ROUTES is asked of the table with a
request Envoy would route to that row: a checked row's context_extensions and the table must demand the same, and
a row where Envoy skips the Check must be public in the table too (so an Envoy that checks every route, as Istio's
CUSTOM action does, gets the same answers), except the CORS preflight, which a table cannot tell apart.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from envoy_data_plane.envoy.config.route.v3 import RouteMatch

from authz.routes import Auth, RouteSettings, load_table, route_settings
from envoy import bootstrap
from stack.local import ROOT, ROUTES_FILE


def _requests_routed_to(match: RouteMatch) -> list[str]:
    """Paths Envoy routes by this match (when no earlier row takes them)."""
    if match.path:
        return [match.path]
    if match.path_separated_prefix:
        return [match.path_separated_prefix, match.path_separated_prefix + "/app.js"]
    assert match.prefix, match
    return [match.prefix + "x", match.prefix + "x/y"]


def _table_settings(method: str, path: str) -> RouteSettings:
    return load_table(ROUTES_FILE).settings_for(method, "localhost:8080", path)


@pytest.mark.parametrize("row", [row for row in bootstrap.ROUTES if row.context_extensions], ids=lambda row: row.name)
def test_the_table_demands_what_each_checked_route_sends(row: bootstrap.ApiRoute):
    """A checked route's context_extensions and the stack's table demand the same of every method."""
    assert row.context_extensions is not None
    for path in _requests_routed_to(row.match):
        for method in ("GET", "POST", "OPTIONS"):
            assert _table_settings(method, path) == route_settings(row.context_extensions), (method, path)


@pytest.mark.parametrize(
    "row",
    [row for row in bootstrap.ROUTES if row.context_extensions is None and row.name != "cors-preflight"],
    ids=lambda row: row.name,
)
def test_the_table_opens_what_envoy_skips(row: bootstrap.ApiRoute):
    """A route where the stack's Envoy skips the Check is `auth: none` in the table, so an Envoy that checks it
    anyway gets the same answer."""
    for path in _requests_routed_to(row.match):
        assert _table_settings("GET", path).auth is Auth.NONE, path


def test_a_preflight_is_left_to_envoy():
    """The table matches method, host and path, not headers: it cannot tell a preflight from another OPTIONS, which
    needs a token, so the preflight route is one Envoy must keep unchecked."""
    assert _table_settings("OPTIONS", "/api/me").auth is Auth.REQUIRED


def test_routes_check_accepts_the_stacks_table():
    """`python -m authz routes check` (what an operator runs in CI) accepts the file and lists its rules."""
    result = subprocess.run(
        [sys.executable, "-m", "authz", "routes", "check", str(ROUTES_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/api/activities/home" in result.stdout
