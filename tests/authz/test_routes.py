"""authz/routes.py: what a route demands, from its context_extensions or the route table (matching, every
configuration error, live reload), and the normal-form rule for paths; anything not understood is an error."""

from __future__ import annotations

import json
import logging
import os

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from authz import errors
from authz.errors import RouteMisconfigured
from authz.routes import (
    Auth,
    RoutesError,
    RouteSettings,
    RouteTable,
    RouteTableFile,
    SignOut,
    load_table,
    normal_path,
    parse_table,
    route_settings,
    schema,
)
from tests.conftest import wait_for


def test_routes_require_an_access_token_by_default():
    """With no context_extensions a route requires auth and accepts access tokens only."""
    assert route_settings({}) == RouteSettings(auth=Auth.REQUIRED, token_uses=frozenset({"access"}))


def test_route_settings_parse_every_key():
    """auth, token_use, groups (comma list) and scopes (space or comma list) are read from context_extensions."""
    settings = route_settings({"auth": "required", "token_use": "any", "groups": "admins, staff", "scopes": "a b,c"})
    assert settings == RouteSettings(
        auth=Auth.REQUIRED,
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
        ({"principal": "robot"}, "principal"),
        ({"principal": "client", "token_use": "any"}, "principal"),
        ({"principal": "client", "groups": "admins"}, "groups"),
        ({"auth": "optional", "principal": "user"}, "principal"),
        ({"audiences": " "}, "audiences"),
        ({"token_use": "id", "audiences": "https://api.example.com"}, "audiences"),
        ({"claims": "plan=pro"}, "claims"),
        ({"claims": "{}"}, "claims"),
        ({"claims": '{"plan": {"equals": ["pro"]}}'}, "claims"),
        ({"claims": '{"plan": {"present": true, "equals": "pro"}}'}, "claims"),
        ({"claims": "[" * 100_000 + "]" * 100_000}, "claims"),
        ({"auth": "optional", "claims": '{"plan": {"present": true}}'}, "claims"),
    ],
)
def test_unknown_or_contradictory_route_settings_are_a_configuration_error(extensions, key):
    """A key or value the server does not understand raises RouteMisconfigured naming the key."""
    with pytest.raises(errors.RouteMisconfigured) as caught:
        route_settings(extensions)
    assert caught.value.key == key


def test_principal_audiences_and_claims_from_context_extensions_mean_what_the_table_says():
    """principal, audiences (space or comma list) and claims (the table's mapping, as JSON) read the same from
    context_extensions as from a table rule; principal defaults to any, so existing routes are unchanged."""
    assert route_settings({}).principals == frozenset({"user", "client"})
    extensions = {
        "principal": "client",
        "scopes": "reports-api/read",
        "audiences": "https://a.example.com, https://b.example.com",
        "claims": json.dumps({"custom:plan": {"one_of": ["pro", "team"]}, "custom:tenant_id": {"present": True}}),
    }
    rule = parse_table(
        "routes:\n"
        "  - match: {prefix: /reports}\n"
        "    principal: client\n"
        "    scopes: [reports-api/read]\n"
        "    audiences: [https://a.example.com, https://b.example.com]\n"
        "    claims: {custom:plan: {one_of: [pro, team]}, custom:tenant_id: {present: true}}\n",
        "routes.yaml",
    ).rules[0]
    assert route_settings(extensions) == rule.settings
    assert rule.settings.principals == frozenset({"client"})
    assert rule.settings.claim_names == frozenset({"custom:plan", "custom:tenant_id"})


@pytest.mark.parametrize(
    "condition, value, holds",
    [
        ({"present": True}, '"anything"', True),
        ({"present": True}, "0", True),
        ({"present": True}, "null", False),
        ({"present": True}, None, False),
        ({"equals": "pro"}, '"pro"', True),
        ({"equals": "pro"}, '"Pro"', False),
        ({"equals": "pro"}, '["pro"]', False),
        ({"equals": 1}, "1", True),
        ({"equals": 1.0}, "1", True),
        ({"equals": 1}, '"1"', False),
        ({"equals": True}, "true", True),
        ({"equals": True}, "1", False),
        ({"one_of": ["pro", "team"]}, '"team"', True),
        ({"one_of": ["pro", "team"]}, '"free"', False),
        ({"one_of": ["pro", "team"]}, None, False),
    ],
)
def test_a_claim_condition_compares_json_values_exactly(condition, value, holds):
    """present: the claim is there and not null; equals / one_of: the same JSON value (1 is 1.0, never "1" or
    true), strings compared exactly."""
    [parsed] = route_settings({"claims": json.dumps({"c": condition})}).claims
    assert parsed.holds(value) is holds


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


def test_auth_none_is_a_public_route_from_context_extensions_too():
    """auth=none (public: the token is not even read) is understood from context_extensions as from the table."""
    assert route_settings({"auth": "none"}).auth is Auth.NONE
    with pytest.raises(RouteMisconfigured):
        route_settings({"auth": "none", "groups": "admins"})


# ------------------------------------------------------------------------------------------------- the table

ISSUE_EXAMPLE = """\
default: {auth: required}
routes:
  - match: {path: /api/health}
    auth: none
  - match: {prefix: /web}
    auth: none
  - match: {path: /api/activities/home, methods: [GET, HEAD]}
    auth: optional
  - match: {prefix: /api/admin}
    groups: [admins]
  - match: {prefix: /api/reports, methods: [GET]}
    scopes: [reports/read]
  - match: {prefix: /api/tenants, hosts: ["api.example.com", "*.example.com"]}
    token_use: access
    revocation: check
"""


def table(text: str = ISSUE_EXAMPLE) -> RouteTable:
    return parse_table(text, "routes.yaml")


def rule_index(method: str, path: str, host: str = "api.example.com", text: str = ISSUE_EXAMPLE) -> int | None:
    rule = table(text).rule_for(method, host, path)
    return None if rule is None else rule.index


@pytest.mark.parametrize(
    "method, path, host, index",
    [
        ("GET", "/api/health", "x", 1),  # exact path
        ("GET", "/api/health/x", "x", None),  # an exact path is not a prefix
        ("GET", "/api/health?probe=1", "x", 1),  # the query is not part of the path
        ("GET", "/API/health", "x", None),  # paths are case-sensitive
        ("GET", "/web", "x", 2),  # a segment prefix holds the prefix itself
        ("GET", "/web/app.js", "x", 2),  # and what is under it
        ("GET", "/website", "x", None),  # never a longer segment
        ("GET", "/api/activities/home", "x", 3),
        ("HEAD", "/api/activities/home", "x", 3),
        ("POST", "/api/activities/home", "x", None),  # methods narrow a rule
        ("DELETE", "/api/admin/users/7", "x", 4),
        ("GET", "/api/reports/q3", "x", 5),
        ("PUT", "/api/reports/q3", "x", None),
        ("GET", "/api/tenants/1", "api.example.com", 6),  # an exact host
        ("GET", "/api/tenants/1", "API.Example.COM:8443", 6),  # case-insensitive, port ignored
        ("GET", "/api/tenants/1", "eu.api.example.com", 6),  # *.example.com: any labels before it
        ("GET", "/api/tenants/1", "example.com", None),  # but at least one
        ("GET", "/api/tenants/1", "example.com.evil.net", None),
        ("GET", "/api/tenants/1", "notexample.com", None),
        ("GET", "/", "x", None),  # nothing matched: the default
    ],
)
def test_the_first_rule_that_fits_decides(method, path, host, index):
    """Rules are tried in order; exact paths, segment prefixes, methods and hosts (wildcard, port, case) narrow them."""
    assert rule_index(method, path, host) == index


def test_order_decides_between_rules_that_both_fit_and_the_default_applies_to_the_rest():
    """An earlier rule wins over a later one that also fits; an unmatched request gets the default's settings."""
    text = """\
default: {auth: optional}
routes:
  - match: {prefix: /api}
    groups: [staff]
  - match: {prefix: /api/admin}
    groups: [admins]
"""
    routes = table(text)
    assert routes.settings_for("GET", "h", "/api/admin/x").groups == frozenset({"staff"})
    assert routes.settings_for("GET", "h", "/other") == RouteSettings(auth=Auth.OPTIONAL)
    assert parse_table("routes: []", "r.yaml").settings_for("GET", "h", "/x") == RouteSettings()


def test_a_prefix_of_slash_holds_every_path():
    routes = table("routes:\n  - match: {prefix: /}\n    auth: none\n")
    assert routes.settings_for("GET", "h", "/anything/at/all").auth is Auth.NONE


def test_rules_carry_their_settings_as_context_extensions_would():
    """A table rule means what the same settings in context_extensions mean."""
    routes = table()
    assert routes.settings_for("GET", "h", "/api/admin/x") == route_settings({"groups": "admins"})
    assert routes.settings_for("GET", "h", "/api/reports/x") == route_settings({"scopes": "reports/read"})
    tenants = routes.settings_for("GET", "a.example.com", "/api/tenants")
    assert tenants == route_settings({"token_use": "access", "revocation": "check"})


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("routes: [", 1, "not valid YAML"),
        ("default: {auth: required}\n", 1, "routes is required"),
        ("routes:\n  - match: {path: /x}\n    group: [admins]\n", 2, "unknown key"),  # a typo never opens a route
        ("routes:\n  - match: {path: /x}\n    auth: maybe\n", 3, "auth"),
        ("routes:\n  - match: {path: /x}\n    token_use: refresh\n", 3, "token_use"),
        ("routes:\n  - match: {path: /x}\n    groups: admins\n", 3, "must be a list"),
        ("routes:\n  - match: {path: /x}\n    groups: []\n", 3, "groups"),
        ("routes:\n  - match: {path: /x}\n    revocation: true\n", 3, "revocation"),
        ("routes:\n  - match: {path: /x}\n    auth: optional\n    groups: [admins]\n", 4, "need auth: required"),
        ("routes:\n  - match: {path: /x}\n    auth: none\n    scopes: [a]\n", 4, "need auth: required"),
        ("routes:\n  - match: {path: /x}\n    token_use: id\n    scopes: [a]\n", 4, "scopes need access tokens"),
        ("default: {auth: optional, groups: [a]}\nroutes: []\n", 1, "need auth: required"),
        ("routes:\n  - match: {path: /x}\n    auth: none\n    auth: required\n", 4, "auth is written twice"),
        ("routes:\n  - match: {path: '/a b'}\n", 2, "not a path"),
        ("routes:\n  - match: {path: /x, prefix: /y}\n", 2, "exactly one of path or prefix"),
        ("routes:\n  - match: {path: /x, prefix: /y}\n", 2, "match"),  # one of path or prefix
        ("routes:\n  - match: {methods: [GET]}\n", 2, "match"),
        ("routes:\n  - match: {path: x}\n", 2, "path"),
        ("routes:\n  - match: {prefix: /web/}\n", 2, "ends with /"),
        ("routes:\n  - match: {path: /a/../b}\n", 2, "normal form"),
        ("routes:\n  - match: {path: '/a?b=1'}\n", 2, "without a query"),
        ("routes:\n  - match: {path: /x, methods: [get]}\n", 2, "methods"),
        ("routes:\n  - match: {path: /x, hosts: ['api.example.com:443']}\n", 2, "not a host name"),
        ("routes:\n  - match: {path: /x, hosts: ['*']}\n", 2, "not a host name"),
        ("routes:\n  - match: {path: /x, hosts: ['a.*.com']}\n", 2, "not a host name"),
        ("routes:\n  - match: {path: /x}\n  - match: {path: /y}\n    surprise: 1\n", 3, "unknown key"),
        ("routes: {}\n", 1, "must be a list"),
        ("routes:\n  - match: {path: /x}\n    principal: robot\n", 3, "principal"),
        ("routes:\n  - match: {path: /x}\n    principal: client\n    groups: [a]\n", 4, "an app client is in no"),
        ("routes:\n  - match: {path: /x}\n    principal: client\n    token_use: id\n", 3, "principal: client needs"),
        ("routes:\n  - match: {path: /x}\n    auth: optional\n    principal: user\n", 4, "needs auth: required"),
        ("routes:\n  - match: {path: /x}\n    audiences: []\n", 3, "at least one"),
        ("routes:\n  - match: {path: /x}\n    token_use: id\n    audiences: [a]\n", 4, "audiences need access"),
        ("routes:\n  - match: {path: /x}\n    claims: {}\n", 3, "must name at least one"),
        ("routes:\n  - match: {path: /x}\n    claims: {plan: pro}\n", 3, "must be a mapping"),
        ("routes:\n  - match: {path: /x}\n    claims: {plan: {}}\n", 3, "exactly one of present, equals"),
        ("routes:\n  - match: {path: /x}\n    claims: {plan: {is: pro}}\n", 3, "unknown key is"),
        ("routes:\n  - match: {path: /x}\n    claims: {plan: {present: false}}\n", 3, "must be true"),
        ("routes:\n  - match: {path: /x}\n    claims: {plan: {equals: {a: 1}}}\n", 3, "a string, a number or"),
        ("routes:\n  - match: {path: /x}\n    claims: {plan: {one_of: []}}\n", 3, "at least one"),
        ("routes:\n  - match: {path: /x}\n    claims: {1: {present: true}}\n", 3, "must be a string"),
        ("routes:\n  - match: {path: /x}\n    claims: {on: {present: true}}\n", 3, "must be a string, not true"),
        ("routes:\n  - match: {path: /x}\n    claims: {d: {equals: 2024-01-01}}\n", 3, 'not "2024-01-01"'),
        (
            "routes:\n"
            + "".join(f"  - match: {{path: /p{i}}}\n    claims: {{c{i}: {{present: true}}}}\n" for i in range(65)),
            130,
            "more than 64 claims named",
        ),
        ("routes:\n  - match: {path: /x}\n    auth: none\n    claims: {p: {present: true}}\n", 4, "need auth"),
        ("unexpected: 1\nroutes: []\n", 1, "unknown key"),
    ],
)
def test_a_table_that_cannot_be_used_is_refused_naming_the_line_and_the_problem(text, line, problem):
    """Unknown keys, wrong types and combinations that cannot work are errors with the file, line and problem."""
    with pytest.raises(RoutesError) as caught:
        parse_table(text, "routes.yaml")
    assert (caught.value.source, caught.value.line) == ("routes.yaml", line)
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"routes.yaml:{line}: ")


def test_the_schema_ships_with_the_package_and_accepts_the_issue_example():
    """authz/routes.schema.json is readable from the installed package and is itself a valid JSON Schema."""
    document = schema()
    jsonschema.validators.validator_for(document).check_schema(document)
    jsonschema.validate(yaml.safe_load(ISSUE_EXAMPLE), document)


def test_a_missing_or_unreadable_file_is_a_routes_error(tmp_path):
    with pytest.raises(RoutesError) as caught:
        load_table(tmp_path / "missing.yaml")
    assert "cannot read" in caught.value.problem


# ------------------------------------------------------------------------------------------------ normal form

TRICKS = [
    "/api/health/../admin",
    "/api/./admin",
    "/api/..",
    "/..",
    "/.",
    "//api/admin",
    "/api//admin",
    "/api\\admin",
    "/api%2fadmin",
    "/api%2Fadmin",
    "/api%5cadmin",
    "/api%5Cadmin",
    "/api/%2e%2e/admin",
    "/api/%2E%2E/admin",
    "/api/%2e/admin",
    "/api/.%2e/admin",
]


@pytest.mark.parametrize("path", TRICKS)
def test_paths_not_in_normal_form_are_recognized(path):
    """Dot segments, empty segments, backslashes and encoded /, \\ or . (any case) are not normal form."""
    assert not normal_path(path)
    assert not normal_path(path + "?q=1")


@pytest.mark.parametrize("path", ["/", "/api/admin", "/api/admin/", "/web/app.js", "/a/.well-known/x", "/a/..b", ""])
def test_ordinary_paths_are_normal(path):
    """Dots inside a segment, a trailing slash, and an empty path are fine; so is anything in the query."""
    assert normal_path(path)
    assert normal_path(path + "?next=/a/../b//c%2F")


# ------------------------------------------------------------------------------------------------- live reload


def write(path, text: str) -> None:
    path.write_text(text)
    # A later write within the same mtime tick must still be seen: move mtime on explicitly.
    stamp = path.stat().st_mtime_ns + 1_000_000
    os.utime(path, ns=(stamp, stamp))


def test_a_valid_new_table_replaces_the_old_one_whole(tmp_path):
    """A changed, valid file is in force after check(); the observer hears it."""
    path = tmp_path / "routes.yaml"
    write(path, ISSUE_EXAMPLE)
    heard: list[tuple[object, object]] = []
    source = RouteTableFile(path, on_reload=lambda table, error: heard.append((table, error)))
    first = source.table
    assert first.settings_for("GET", "h", "/api/health").auth is Auth.NONE
    write(path, ISSUE_EXAMPLE.replace("    auth: none\n", "    auth: optional\n", 1))
    assert source.check() is True
    assert source.table is not first
    assert source.table.settings_for("GET", "h", "/api/health").auth is Auth.OPTIONAL
    assert first.settings_for("GET", "h", "/api/health").auth is Auth.NONE  # the old table was never mutated
    assert heard == [(source.table, None)]
    assert source.check() is False  # unchanged: nothing to do


@pytest.mark.parametrize(
    "broken",
    [
        "routes:\n  - match: {path: /x}\n    group: [admins]\n",  # unknown key
        ISSUE_EXAMPLE[: len(ISSUE_EXAMPLE) // 2],  # written halfway
        "routes: [",  # not YAML
        "",  # truncated to nothing
    ],
)
def test_an_invalid_file_is_refused_and_the_last_good_table_stays(tmp_path, broken, caplog):
    """An invalid or half-written file changes nothing in force; it is logged with the line and problem, counted,
    and the next valid write is taken."""
    path = tmp_path / "routes.yaml"
    write(path, ISSUE_EXAMPLE)
    heard: list[tuple[object, object]] = []
    source = RouteTableFile(path, on_reload=lambda table, error: heard.append((table, error)))
    good = source.table
    write(path, broken)
    with caplog.at_level(logging.ERROR, logger="authz.routes"):
        assert source.check() is False
    assert source.table is good
    [(table, error)] = heard
    assert table is None and isinstance(error, RoutesError)
    [record] = [r for r in caplog.records if r.name == "authz.routes"]
    assert record.fields["file"] == str(path) and record.fields["problem"]
    write(path, ISSUE_EXAMPLE.replace("admins", "staff"))
    assert source.check() is True
    assert source.table.settings_for("GET", "h", "/api/admin").groups == frozenset({"staff"})


def test_a_removed_file_keeps_the_table_and_a_restored_one_is_read_again(tmp_path):
    path = tmp_path / "routes.yaml"
    write(path, ISSUE_EXAMPLE)
    source = RouteTableFile(path)
    good = source.table
    path.unlink()
    assert source.check() is False and source.table is good
    write(path, ISSUE_EXAMPLE.replace("reports/read", "reports/all"))
    assert source.check() is True
    assert source.table.settings_for("GET", "h", "/api/reports").scopes == frozenset({"reports/all"})


def test_at_start_a_missing_or_invalid_file_raises(tmp_path):
    with pytest.raises(RoutesError):
        RouteTableFile(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("routes: [")
    with pytest.raises(RoutesError):
        RouteTableFile(tmp_path / "bad.yaml")


def test_the_reload_thread_takes_a_change_within_its_interval(tmp_path):
    """start() checks every interval seconds in the background."""
    path = tmp_path / "routes.yaml"
    write(path, ISSUE_EXAMPLE)
    source = RouteTableFile(path, interval=0.05)
    source.start()
    try:
        write(path, "routes: []\n")
        assert wait_for(lambda: source.table.rules == (), timeout=5.0)
    finally:
        source.stop()


_SEGMENTS = st.sampled_from(["api", "web", "admin", "a", ""])
_PATHS = st.lists(_SEGMENTS, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
_RULES = st.lists(
    st.tuples(
        st.sampled_from(["path", "prefix"]),
        _PATHS.filter(lambda path: normal_path(path) and (path == "/" or not path.endswith("/"))),
        st.sampled_from([None, ["GET"], ["POST", "PUT"]]),
        st.sampled_from([None, ["api.example.com"], ["*.example.com"]]),
    ),
    max_size=12,
)


@given(
    rules=_RULES,
    requests=st.lists(
        st.tuples(st.sampled_from(["GET", "POST"]), st.sampled_from(["api.example.com", "x.example.com"]), _PATHS),
        min_size=1,
        max_size=20,
    ),
)
def test_the_table_decides_as_trying_every_rule_in_order_would(rules, requests):
    """Skipping rules by first segment and remembering answers never changes which rule decides: the same as
    trying every rule in order, for any table and any requests (repeated ones too)."""
    entries = []
    for kind, path, methods, hosts in rules:
        match: dict[str, object] = {kind: path}
        if methods:
            match["methods"] = methods
        if hosts:
            match["hosts"] = hosts
        entries.append({"match": match})
    routes = parse_table(json.dumps({"routes": entries}), "generated.yaml")
    for method, host, path in requests + requests:
        expected = next((rule for rule in routes.rules if rule.match.fits(method, host, path)), None)
        assert routes.rule_for(method, host, path) is expected


# ------------------------------------------------------------------------------------------------- sign-out


def test_a_sign_out_route_says_session_or_global_in_either_source():
    """sign_out: session or global, from context_extensions as from a rule of the table."""
    assert route_settings({"sign_out": "session"}).sign_out is SignOut.SESSION
    assert route_settings({"sign_out": "global"}).sign_out is SignOut.GLOBAL
    assert route_settings({}).sign_out is None
    rule = parse_table("routes:\n  - match: {path: /api/sign-out}\n    sign_out: global\n", "routes.yaml").rules[0]
    assert rule.settings.sign_out is SignOut.GLOBAL


@pytest.mark.parametrize(
    "route",
    [
        {"sign_out": "everywhere"},
        {"sign_out": ""},
        {"sign_out": "session", "auth": "optional"},
        {"sign_out": "global", "auth": "none"},
    ],
)
def test_a_sign_out_route_needs_a_known_scope_and_a_caller(route):
    """An unknown sign_out value, or sign_out on a route that lets anonymous callers in, is misconfigured."""
    with pytest.raises(RouteMisconfigured) as caught:
        route_settings(route)
    assert caught.value.key == "sign_out"


def test_the_default_can_never_sign_out():
    """The table refuses sign_out in its default: every request no rule matches would sign its caller out."""
    with pytest.raises(RoutesError):
        parse_table("default: {sign_out: session}\nroutes: []\n", "routes.yaml")
