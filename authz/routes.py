"""What a route demands of its callers (RouteSettings), and the two places it can come from.

1. The route's `context_extensions` in Envoy's per-route ext_authz config (`route_settings`): a CheckRequest that
   carries them is decided by them, so Envoy configs written for them keep working.
2. The route table (`RouteTable`, from `AUTHZ_ROUTES`, a YAML file checked against routes.schema.json): rules tried
   in order, the first whose match fits the request decides, none means the table's default. This is the source
   wherever Envoy sends no context_extensions (Istio's CUSTOM action, Envoy Gateway's extAuth, HTTP ext_authz).
   `RouteTableFile` keeps the table in force and replaces it, whole, when the file changes and is valid.

Whatever the source, a key or value we do not understand is an error, never ignored: a typo such as `group=admins`
must not silently open a route to every caller (context_extensions: RouteMisconfigured, a deny; the table: a
RoutesError, which refuses the file).

A path must be in normal form before any rule is applied to it (`normal_path`): a front proxy that forgot to
normalize must never turn /api/health/../admin into a public route.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from authz.errors import RouteMisconfigured
from authz.tokens import MAX_KEPT_CLAIMS, claim_json
from identity_headers import PRINCIPAL_CLIENT, PRINCIPAL_USER

log = logging.getLogger("authz.routes")

_TOKEN_USES = {"access": frozenset({"access"}), "id": frozenset({"id"}), "any": frozenset({"access", "id"})}
_PRINCIPALS = {
    "user": frozenset({PRINCIPAL_USER}),
    "client": frozenset({PRINCIPAL_CLIENT}),
    "any": frozenset({PRINCIPAL_USER, PRINCIPAL_CLIENT}),
}
_REVOCATION = {"check": True, "skip": False}
_KEYS = frozenset(
    {"auth", "token_use", "principal", "groups", "scopes", "audiences", "claims", "revocation", "sign_out"}
)


class SignOut(enum.StrEnum):
    """What a sign-out route refuses from then on, cluster-wide (the shared state's denylist)."""

    SESSION = "session"  # every token of the caller's sign-in session (its origin_jti)
    GLOBAL = "global"  # every token of the caller issued until now, whatever the session


class Auth(enum.StrEnum):
    REQUIRED = "required"  # a valid token, or 401
    OPTIONAL = "optional"  # anonymous allowed; a token that is sent must be valid
    NONE = "none"  # public: the token is not even read


@dataclass(frozen=True, slots=True)
class ClaimCondition:
    """What a route demands of one claim: that the token has it (`accepted` None), or that its value is one of
    `accepted` (canonical JSON, tokens.claim_json, so 1 and 1.0 are one value and "1" another)."""

    name: str
    accepted: frozenset[str] | None = None

    def holds(self, value: str | None) -> bool:
        """Whether the token's value (canonical JSON; None: the token lacks the claim) meets the condition."""
        if value is None or value == "null":
            return False
        return self.accepted is None or value in self.accepted


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """What a route demands."""

    auth: Auth = Auth.REQUIRED
    token_uses: frozenset[str] = frozenset({"access"})
    # Which kinds of caller (identity_headers.PRINCIPAL_USER, PRINCIPAL_CLIENT).
    principals: frozenset[str] = _PRINCIPALS["any"]
    # Any of these groups (cognito:groups); all of these scopes (scope); any of these audiences (an access token's
    # aud: its resource binding).
    groups: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    audiences: frozenset[str] = frozenset()
    # Every one of these must hold.
    claims: tuple[ClaimCondition, ...] = ()
    # Confirm the token with Cognito (revocation=check), never (skip), or as the server is configured (None).
    revocation: bool | None = None
    # A sign-out route: a caller allowed here has its session's (or all its) tokens denylisted first.
    sign_out: SignOut | None = None

    @property
    def auth_required(self) -> bool:
        return self.auth is Auth.REQUIRED

    @property
    def claim_names(self) -> frozenset[str]:
        """The claims the conditions ask about."""
        return frozenset(condition.name for condition in self.claims)


class _BadSetting(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


def _settings(
    *,
    auth: str = "required",
    token_use: str = "access",  # noqa: S107 - a token kind, not a secret
    principal: str = "any",
    groups: frozenset[str] = frozenset(),
    scopes: frozenset[str] = frozenset(),
    audiences: frozenset[str] = frozenset(),
    claims: Mapping[str, Any] | None = None,
    revocation: str | None = None,
    sign_out: str | None = None,
) -> RouteSettings:
    """Settings from their values as either source gives them (claims already checked against the schema's
    claims); _BadSetting names the key at fault."""
    try:
        auth_value = Auth(auth)
    except ValueError:
        raise _BadSetting("auth", f"auth must be required, optional or none, not {auth!r}") from None
    token_uses = _TOKEN_USES.get(token_use)
    if token_uses is None:
        raise _BadSetting("token_use", f"token_use must be access, id or any, not {token_use!r}")
    principals = _PRINCIPALS.get(principal)
    if principals is None:
        raise _BadSetting("principal", f"principal must be user, client or any, not {principal!r}")
    conditions = tuple(_condition(name, condition) for name, condition in sorted((claims or {}).items()))
    demands = {
        "principal": principal != "any",
        "groups": bool(groups),
        "scopes": bool(scopes),
        "audiences": bool(audiences),
        "claims": bool(conditions),
    }
    if auth_value is not Auth.REQUIRED:
        # A route that lets anonymous callers in would give any rule about the caller no meaning.
        for key, demanded in demands.items():
            if demanded:
                verb = "needs" if key == "principal" else "need"
                raise _BadSetting(key, f"{key} {verb} auth: required (an anonymous caller has none)")
    for key in ("scopes", "audiences"):
        if demands[key] and "access" not in token_uses:
            raise _BadSetting(key, f"{key} need access tokens (an id token carries no {key[:-1]} of its own)")
    if PRINCIPAL_USER not in principals:
        # Only access tokens speak for app clients (tokens.principal_of), and a client is in no group.
        if token_uses != _TOKEN_USES["access"]:
            raise _BadSetting("principal", "principal: client needs token_use: access (id tokens are users')")
        if groups:
            raise _BadSetting("groups", "groups never match principal: client (an app client is in no group)")
    revocation_value = None
    if revocation is not None:
        revocation_value = _REVOCATION.get(revocation)
        if revocation_value is None:
            raise _BadSetting("revocation", f"revocation must be check or skip, not {revocation!r}")
    sign_out_value = None
    if sign_out is not None:
        try:
            sign_out_value = SignOut(sign_out)
        except ValueError:
            raise _BadSetting("sign_out", f"sign_out must be session or global, not {sign_out!r}") from None
        if auth_value is not Auth.REQUIRED:
            raise _BadSetting("sign_out", "sign_out needs auth: required (an anonymous caller has no session)")
    return RouteSettings(
        auth=auth_value,
        token_uses=token_uses,
        principals=principals,
        groups=groups,
        scopes=scopes,
        audiences=audiences,
        claims=conditions,
        revocation=revocation_value,
        sign_out=sign_out_value,
    )


def _condition(name: str, condition: Mapping[str, Any]) -> ClaimCondition:
    """A claim condition as the schema allows it: {present: true}, {equals: VALUE} or {one_of: [VALUE, ...]}."""
    if "equals" in condition:
        return ClaimCondition(name, frozenset({claim_json(condition["equals"])}))
    if "one_of" in condition:
        return ClaimCondition(name, frozenset(claim_json(value) for value in condition["one_of"]))
    return ClaimCondition(name)


# ------------------------------------------------------------------------------------------ context_extensions


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
    try:
        return _settings(
            auth=values.get("auth", "required"),
            token_use=values.get("token_use", "access"),
            principal=values.get("principal", "any"),
            groups=_names(values, "groups", ","),
            scopes=_names(values, "scopes", ", "),
            audiences=_names(values, "audiences", ", "),
            claims=_claims_json(values),
            revocation=values.get("revocation"),
            sign_out=values.get("sign_out"),
        )
    except _BadSetting as error:
        raise RouteMisconfigured(key=error.key) from None


def _claims_json(values: Mapping[str, str]) -> dict[str, Any] | None:
    """The `claims` conditions of context_extensions: the route table's `claims` mapping, written as JSON."""
    if "claims" not in values:
        return None
    try:
        claims = json.loads(values["claims"])
    except (ValueError, RecursionError):
        raise RouteMisconfigured(key="claims") from None
    if not _claims_validator().is_valid(claims):
        raise RouteMisconfigured(key="claims")
    return cast(dict[str, Any], claims)


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


# ------------------------------------------------------------------------------------------------ normal form

# Each is a way to name one path by another: a dot segment, an empty segment, a backslash some servers read as a
# slash, or an encoded slash, backslash or dot a later decoder would turn into one of those.
_NOT_NORMAL = re.compile(r"(?:^|/)\.\.?(?:/|$)|//|\\|%2[fFeE]|%5[cC]")


def normal_path(path: str) -> bool:
    """Whether a request path (its query string aside) is in normal form."""
    return _NOT_NORMAL.search(path.partition("?")[0]) is None


# ------------------------------------------------------------------------------------------------- the table

SCHEMA_RESOURCE = "routes.schema.json"


def schema() -> dict[str, Any]:
    """The route table's JSON Schema (authz/routes.schema.json), which editors can check a file against too."""
    loaded: dict[str, Any] = json.loads(resources.files("authz").joinpath(SCHEMA_RESOURCE).read_text("utf-8"))
    return loaded


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    document = schema()
    validator_class = jsonschema.validators.validator_for(document)
    validator_class.check_schema(document)
    validator: jsonschema.protocols.Validator = validator_class(document)
    return validator


@functools.cache
def _claims_validator() -> jsonschema.protocols.Validator:
    """The schema's `claims` alone, for the conditions context_extensions carry."""
    document = schema()
    validator: jsonschema.protocols.Validator = jsonschema.validators.validator_for(document)(
        {"$schema": document["$schema"], "$defs": document["$defs"], "$ref": "#/$defs/claims"}
    )
    return validator


class RoutesError(Exception):
    """A route table that cannot be used: `source` (the file), `line` (1-based, 0 when unknown) and `problem`."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


_METHOD = re.compile(r"[A-Z]+")
_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Which requests a rule is about: an exact path or a segment prefix, and optionally methods and hosts."""

    path: str | None = None
    prefix: str | None = None
    methods: frozenset[str] = frozenset()  # empty: any method
    hosts: frozenset[str] = frozenset()  # exact names, lower-case
    host_suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"

    @property
    def segment(self) -> str | None:
        """The first path segment of every path this match fits (None: it fits paths under any)."""
        return None if self.prefix == "/" else _first_segment(self.path or self.prefix or "/")

    def fits(self, method: str, host: str, path: str) -> bool:
        """Whether the request fits; host is lower-case without its port, path without its query."""
        if self.path is not None and path != self.path:
            return False
        if self.prefix is not None and not _under(path, self.prefix):
            return False
        if self.methods and method not in self.methods:
            return False
        return not (self.hosts or self.host_suffixes) or _host_fits(host, self.hosts, self.host_suffixes)


def _under(path: str, prefix: str) -> bool:
    """A segment prefix: /web holds /web and /web/..., never /website; / holds every path."""
    if prefix == "/":
        return True
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


def _host_fits(host: str, names: frozenset[str], suffixes: tuple[str, ...]) -> bool:
    return host in names or any(host.endswith(suffix) and len(host) > len(suffix) for suffix in suffixes)


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One rule of a table: its match, its settings, and where it was written (for explain and logs)."""

    index: int  # 1-based, in the order rules are tried
    line: int
    match: RouteMatch
    settings: RouteSettings
    text: str  # the rule as written, one line of JSON


@dataclass(frozen=True)
class RouteTable:
    """Rules tried in order; the first that fits decides; none that fits means `default`."""

    source: str
    sha256: str
    default: RouteSettings
    rules: tuple[RouteRule, ...]
    # Rules by the first path segment they can match, in table order, with the rules every path can match (prefix
    # /) in their places; a path whose first segment no rule names gets only those. A segment prefix or an exact
    # path fits only paths with its own first segment, so this skips only rules that could never fit.
    _by_segment: dict[str, tuple[RouteRule, ...]] = field(init=False, compare=False, repr=False)
    _everywhere: tuple[RouteRule, ...] = field(init=False, compare=False, repr=False)
    # The rule by (method, host, path without query): a service's callers repeat a few requests (bounded; a full
    # memo starts over).
    _memo: dict[tuple[str, str, str], RouteRule | None] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        segments = {rule.match.segment for rule in self.rules} - {None}
        by_segment = {
            segment: tuple(rule for rule in self.rules if rule.match.segment in (None, segment)) for segment in segments
        }
        object.__setattr__(self, "_by_segment", by_segment)
        object.__setattr__(self, "_everywhere", tuple(rule for rule in self.rules if rule.match.segment is None))

    def rule_for(self, method: str, host: str, path: str) -> RouteRule | None:
        """The rule that decides a request (None: the default), matching the path without its query and the host
        without its port, case-insensitively."""
        path = path.partition("?")[0]
        key = (method, host, path)
        try:
            return self._memo[key]
        except KeyError:
            pass
        name = _host_name(host)
        candidates = self._by_segment.get(_first_segment(path), self._everywhere)
        found = next((rule for rule in candidates if rule.match.fits(method, name, path)), None)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = found
        return found

    def settings_for(self, method: str, host: str, path: str) -> RouteSettings:
        rule = self.rule_for(method, host, path)
        return self.default if rule is None else rule.settings


_MEMO_SIZE = 4096


def _first_segment(path: str) -> str:
    return path[1:].partition("/")[0]


def _host_name(host: str) -> str:
    """A Host or :authority without its port, lower-case ("[::1]:8080" -> "[::1]")."""
    host = host.lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]


def parse_table(text: str, source: str) -> RouteTable:
    """A route table from its YAML; RoutesError names the line and the problem."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise RoutesError(source, mark.line + 1 if mark else 0, f"not valid YAML: {problem}") from None
    if document is None:
        raise RoutesError(source, 0, "empty: expected a mapping with `routes` (and optionally `default`)")
    failures = list(_validator().iter_errors(document))
    if failures:
        # The first in the file: the one a person reading from the top meets first.
        failure = _most_specific(min(failures, key=lambda failure: _line(node, list(failure.absolute_path))))
        raise RoutesError(source, _line(node, list(failure.absolute_path)), _describe(failure))
    _refuse_duplicate_keys(node, source)
    default = _table_settings(document.get("default", {}), source, _key_lines(node, ["default"]))
    rules = tuple(
        RouteRule(
            index=index + 1,
            line=_line(node, ["routes", index]),
            match=_match(entry["match"], source, _line(node, ["routes", index, "match"])),
            settings=_table_settings(entry, source, _key_lines(node, ["routes", index])),
            text=json.dumps(entry, separators=(", ", ": ")),
        )
        for index, entry in enumerate(document["routes"])
    )
    named = set(default.claim_names)
    for rule in rules:
        named |= rule.settings.claim_names
        if len(named) > MAX_KEPT_CLAIMS:
            # Each is kept of every verified token (TokenVerifier.keep_claims).
            raise RoutesError(source, rule.line, f"claims: more than {MAX_KEPT_CLAIMS} claims named in the table")
    return RouteTable(
        source=source, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), default=default, rules=rules
    )


def load_table(path: str | os.PathLike[str]) -> RouteTable:
    """The route table in a file; RoutesError when it cannot be read or used."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise RoutesError(source, 0, f"cannot read: {error.strerror or type(error).__name__}") from None
    except UnicodeDecodeError:
        raise RoutesError(source, 0, "cannot read: not UTF-8") from None
    return parse_table(text, source)


def _key_lines(node: yaml.Node | None, path: list[str | int]) -> Callable[[str], int]:
    """The line each key of the mapping at `path` is written on."""

    def line(key: str) -> int:
        return _line(node, [*path, key])

    return line


def _table_settings(entry: Mapping[str, Any], source: str, line: Callable[[str], int]) -> RouteSettings:
    """The settings of a rule (or the default); line(key) is the line a key is written on."""
    try:
        return _settings(
            auth=entry.get("auth", "required"),
            token_use=entry.get("token_use", "access"),
            principal=entry.get("principal", "any"),
            groups=frozenset(entry.get("groups", ())),
            scopes=frozenset(entry.get("scopes", ())),
            audiences=frozenset(entry.get("audiences", ())),
            claims=entry.get("claims"),
            revocation=entry.get("revocation"),
            sign_out=entry.get("sign_out"),
        )
    except _BadSetting as error:
        raise RoutesError(source, line(error.key), error.problem) from None


def _refuse_duplicate_keys(node: yaml.Node | None, source: str) -> None:
    """A key written twice in one mapping is an error: YAML would keep the last, and a copy-paste or merge slip
    (auth: none, then auth: required further down) must not quietly decide a route."""
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key, value in node.value:
            if key.value in seen:
                raise RoutesError(source, key.start_mark.line + 1, f"{key.value!s} is written twice in one mapping")
            seen.add(key.value)
            _refuse_duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, source)


def _match(entry: Mapping[str, Any], source: str, line: int) -> RouteMatch:
    path, prefix = entry.get("path"), entry.get("prefix")
    for value in (path, prefix):
        if value is not None and not normal_path(value):
            raise RoutesError(source, line, f"{value!r} is not a path in normal form (no query, dot segments, //)")
        if value is not None and "?" in value:
            raise RoutesError(source, line, f"{value!r}: match on the path alone, without a query string")
    if prefix is not None and prefix != "/" and prefix.endswith("/"):
        raise RoutesError(
            source, line, f"prefix {prefix!r} ends with /: a prefix is whole segments (/web matches /web/x)"
        )
    hosts = [host.lower() for host in entry.get("hosts", ())]
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise RoutesError(source, line, f"host {host!r} is not a host name, or *. and one (no port, no scheme)")
    return RouteMatch(
        path=path,
        prefix=prefix,
        methods=frozenset(entry.get("methods", ())),
        hosts=frozenset(host for host in hosts if not host.startswith("*.")),
        host_suffixes=tuple(host[1:] for host in hosts if host.startswith("*.")),
    )


def _most_specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For an error under oneOf/anyOf, the branch error deepest in the document (the one a person can act on)."""
    best = error
    for child in error.context or ():
        candidate = _most_specific(child)
        if len(candidate.absolute_path) > len(best.absolute_path):
            best = candidate
    return best


_TYPE_NAMES = {
    "array": "a list",
    "object": "a mapping",
    "string": "a string",
    "number": "a number",
    "boolean": "a boolean",
}


def _describe(error: jsonschema.ValidationError) -> str:
    """The schema's complaint in a table author's words: where, then what is wrong, without Python reprs."""
    where = "/".join(str(part) for part in error.absolute_path) or "the file"
    schema_value: Any = error.validator_value
    instance: Any = error.instance
    match error.validator:
        case "additionalProperties":
            rule_schema: Any = error.schema
            known = sorted(rule_schema.get("properties", {}))
            unknown = sorted(set(instance) - set(known)) if isinstance(instance, dict) else []
            return f"{where}: unknown key {', '.join(unknown)} (expected {', '.join(known)})"
        case "required":
            missing = [key for key in schema_value if key not in instance]
            return f"{where}: {', '.join(missing)} is required"
        case "oneOf" if error.absolute_path and error.absolute_path[-1] == "match":
            return f"{where}: a match needs exactly one of path or prefix"
        case "type":
            kinds = [
                _TYPE_NAMES.get(kind, f"a {kind}")
                for kind in ([schema_value] if isinstance(schema_value, str) else schema_value)
            ]
            expected = kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} or {kinds[-1]}"
            return f"{where}: must be {expected}, not {_shown(error.instance)}"
        case "const":
            return f"{where}: must be {_shown(schema_value)}, not {_shown(error.instance)}"
        case "minProperties" | "maxProperties" if "one_of" in _rule_properties(error):
            return f"{where}: needs exactly one of present, equals or one_of"
        case "minProperties":
            return f"{where}: must name at least one"
        case "enum":
            choices = ", ".join(str(choice) for choice in schema_value)
            return f"{where}: must be one of {choices}, not {_shown(error.instance)}"
        case "pattern":
            return f"{where}: {_shown(error.instance)} is not {_PATTERN_NAMES.get(str(schema_value), 'allowed here')}"
        case "minItems":
            return f"{where}: must list at least one"
        case "uniqueItems":
            return f"{where}: lists an item twice"
        case "minLength":
            return f"{where}: must not be empty"
    return f"{where}: {error.message}"


_PATTERN_NAMES = {
    "^/[^\\s\\u0000-\\u001f\\u007f]*$": "a path (starting with /, no spaces or control characters)",
    "^[A-Z]+$": "an upper-case method name",
    "^[!#-\\[\\]-~]+$": "a scope (printable ASCII, no space, quote or backslash)",
}


def _rule_properties(error: jsonschema.ValidationError) -> Mapping[str, Any]:
    """The properties the schema at fault names (none for a schema that is not a mapping)."""
    at_fault: Any = error.schema
    return at_fault.get("properties", {}) if isinstance(at_fault, dict) else {}


def _shown(value: object) -> str:
    """A value as the table author wrote it (JSON), not as Python prints it (a YAML date as its text)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _line(node: yaml.Node | None, path: Sequence[str | int]) -> int:
    """The 1-based line of the node at `path` in a composed YAML document (the nearest found ancestor's)."""
    line = node.start_mark.line + 1 if node is not None else 0
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if key.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


# ------------------------------------------------------------------------------------------------- live reload


class RouteTableFile:
    """The table in a file, kept in force: `table` is the one every Check reads (replaced whole, never mutated, so
    no Check sees half of two tables); `check()` re-reads the file when its mtime, size or inode changed, and a
    file that is invalid is refused, the last good table staying in force. `start()` checks every `interval`
    seconds in a daemon thread.

    A file caught halfway through being written in place must not pass for a shorter table (a dropped rule would
    put its paths under the default): a change is read only once the file has stayed the same for `settle`
    seconds, and a read during which it changed is thrown away (the next check reads it again). Writing the file
    atomically (a new file renamed over it, as Kubernetes does for a mounted ConfigMap) avoids the question."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        interval: float = 2.0,
        settle: float = 0.2,
        on_reload: Callable[[RouteTable | None, RoutesError | None], None] | None = None,
    ) -> None:
        """Loads the table now: RoutesError if the file is missing or invalid. on_reload(table, error) hears each
        later reload, good (table) or refused (error)."""
        self.path = Path(path)
        self._interval = interval
        self._settle = settle
        self._on_reload = on_reload
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = self._stamp()
        self.table = load_table(self.path)

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def check(self) -> bool:
        """Re-read the file if it changed (and has settled); True when a new table is now in force."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        if self._settle:
            self._stop.wait(self._settle)
            if self._stamp() != stamp:
                return False  # still being written: the next check looks again
        try:
            table = load_table(self.path)
        except RoutesError as error:
            if self._stamp() != stamp:
                return False  # changed while it was read: the next check reads it again
            self._seen = stamp
            log.error(
                "route table refused; the last good one stays in force",
                extra={"fields": {"file": error.source, "line": error.line, "problem": error.problem}},
            )
            self._report(None, error)
            return False
        if self._stamp() != stamp:
            return False  # changed while it was read: the next check reads it again
        self._seen = stamp
        if table.sha256 == self.table.sha256:
            return False
        self.table = table
        log.info(
            "route table loaded",
            extra={"fields": {"file": str(self.path), "sha256": table.sha256[:12], "rules": len(table.rules)}},
        )
        self._report(table, None)
        return True

    def _report(self, table: RouteTable | None, error: RoutesError | None) -> None:
        if self._on_reload is not None:
            try:
                self._on_reload(table, error)
            except Exception:  # observing a reload must never stop the reloading
                log.exception("route table reload observer failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="routes-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # a bug here must not end reloading for good
                log.exception("route table check failed")
