"""Command line: `serve` runs the server, `verify` checks a token offline, `check` asks a running server,
`routes check` validates a route table file (AUTHZ_ROUTES) offline, `routes explain` tells which of its rules
decides a request, and `revoke` has every replica refuse a token, a sign-in session or a user's tokens (through the
shared state, AUTHZ_STATE_URL).

Exit codes: 0 allowed/valid, 1 denied/invalid, 2 bad configuration or usage, 3 server unreachable.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from authz.config import ConfigError, Settings
from authz.logs import configure_logging

if TYPE_CHECKING:
    from authz.routes import ClaimCondition, RouteMatch, RouteSettings, RouteTable

EXIT_DENIED = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m authz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the ext_authz gRPC server (configured from the environment)")
    serve_http = commands.add_parser(
        "serve-http", help="run the ext_authz server for Envoy's HTTP mode on AUTHZ_HTTP_ADDR (configured likewise)"
    )
    for command in (serve, serve_http):
        # Given by the supervisor of AUTHZ_WORKERS to each worker it starts (authz/workers.py), never by a user.
        command.add_argument("--worker", metavar="INDEX:FD", help=argparse.SUPPRESS)
    verify = commands.add_parser("verify", help="verify a token against the configured pools and print its claims")
    verify.add_argument("token")
    check = commands.add_parser("check", help="send one Check to a running server and print the decision")
    check.add_argument("--addr", default="127.0.0.1:9191", help="HOST:PORT of the server (default %(default)s)")
    check.add_argument("--token", help="the bearer token to send (omit for an anonymous request)")
    check.add_argument("--path", default="/", help="request path (default %(default)s)")
    check.add_argument("--method", default="GET")
    check.add_argument("--context", action="append", default=[], metavar="KEY=VALUE", help="a context_extensions entry")
    check.add_argument("--timeout", type=float, default=5.0)
    routes = commands.add_parser(
        "routes", help="check a route table file (AUTHZ_ROUTES) offline; no environment needed"
    )
    routes_commands = routes.add_subparsers(dest="routes_command", required=True)
    routes_check = routes_commands.add_parser(
        "check", help="validate FILE and print its rules in the order they are tried, then the default"
    )
    routes_check.add_argument("file", metavar="FILE")
    explain = routes_commands.add_parser(
        "explain", help="print which rule of FILE decides a request, and what it demands"
    )
    explain.add_argument("file", metavar="FILE")
    explain.add_argument("--method", required=True, help="the request's method, as sent (case-sensitive: GET, POST...)")
    explain.add_argument("--path", required=True, help="the request's path, as sent (a query string is ignored)")
    explain.add_argument("--host", default="", help="the request's Host or :authority (a port is ignored)")
    revoke = commands.add_parser(
        "revoke",
        help="have every replica refuse a token, a sign-in session or a user's tokens now (needs AUTHZ_STATE_URL)",
    )
    what = revoke.add_mutually_exclusive_group(required=True)
    what.add_argument("--sub", help="every token of this user (sub) issued until now")
    what.add_argument("--origin-jti", help="every token of this sign-in session (Cognito's origin_jti claim)")
    what.add_argument(
        "--token", help="this one token; - reads it from standard input (keeps it out of the process list)"
    )
    revoke.add_argument("--reason", default="", help="why, for the logs of whoever reads the entry (printable ASCII)")
    args = parser.parse_args(argv)

    if args.command == "check":
        return _check(args, parser)
    if args.command == "routes":
        return _routes(args)
    if args.command == "revoke":
        return _revoke(args, parser)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"authz: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command in ("serve", "serve-http"):
        return _serve(settings, http=args.command == "serve-http", worker=args.worker)
    return _verify(settings, args.token)


def _serve(settings: Settings, *, http: bool = False, worker: str | None = None) -> int:
    from authz.routes import RoutesError
    from authz.server import Transport, run_server
    from authz.workers import Supervisor, WorkerLink

    transport = Transport.HTTP if http else Transport.GRPC
    stop = threading.Event()
    link = None
    if worker is not None:
        index, _, fd = worker.partition(":")
        configure_logging(settings.log_level, {"worker": int(index)})
        # The supervisor tells a worker when to stop (SIGTERM); a Ctrl-C in a terminal reaches it through them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        link = WorkerLink(int(fd), stop)
    else:
        configure_logging(settings.log_level)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    try:
        if worker is None and settings.workers > 1:
            return Supervisor(settings, transport, stop).run()
        with run_server(settings, transport=transport, worker=link):
            stop.wait()
    except RoutesError as exc:
        print(f"authz: configuration error: AUTHZ_ROUTES: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"authz: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return link.exit_code if link is not None else 0


def _verify(settings: Settings, token: str) -> int:
    from authz.errors import AuthzError
    from authz.server import build_verifier
    from authz.tokens import verified_claims

    configure_logging("ERROR")
    verifier, _ = build_verifier(settings)
    token = token.strip()
    try:
        verified = verifier.verify(token)
    except AuthzError as error:
        print(json.dumps({"valid": False, "reason": error.reason, "message": error.description}))
        return EXIT_DENIED
    identity = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(verified).items()}
    print(json.dumps({"valid": True, "identity": identity, "claims": verified_claims(token)}, indent=2))
    return 0


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import grpc

    from authz.client import check

    context = {}
    for item in args.context:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--context expects KEY=VALUE, got {item!r}")
        context[key] = value
    try:
        result = check(
            args.addr, token=args.token, path=args.path, method=args.method, context=context, timeout=args.timeout
        )
    except grpc.RpcError as exc:
        print(f"authz: check failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(result, indent=2))
    return 0 if result["allowed"] else EXIT_DENIED


def _revoke(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Store a denylist entry in the shared state and publish it: every replica in sync refuses what it names
    within a second. Prints the entry as stored (a token only by its digest)."""
    import time

    import redis

    from authz.cache import token_digest
    from authz.config import StateSettings
    from authz.denylist import LONGEST_TOKEN_SECONDS, MAX_REASON_CHARS, EntryKind, EntryRules, Source, subject_ok
    from authz.errors import AuthzError
    from authz.state import connect, store_entry
    from authz.tokens import JWT_SHAPE, bearer_token, unverified_expiry
    from identity_headers import MAX_TOKEN_BYTES

    try:
        settings = StateSettings.from_env()
    except ConfigError as exc:
        print(f"authz: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    reason = args.reason.strip()
    if len(reason) > MAX_REASON_CHARS or not reason.isascii() or not reason.isprintable():
        parser.error(f"--reason must be printable ASCII, at most {MAX_REASON_CHARS} characters")
    rules = EntryRules(leeway=settings.leeway_seconds, session_seconds=settings.session_lifetime_seconds)
    now = time.time()
    if args.sub is not None:
        if not subject_ok(EntryKind.USER, args.sub):
            parser.error("--sub is not a Cognito sub (letters, digits and ._:@+-, at most 128)")
        entry = rules.for_user(args.sub, now, Source.OPERATOR, reason)
    elif args.origin_jti is not None:
        if not subject_ok(EntryKind.SESSION, args.origin_jti):
            parser.error("--origin-jti is not a Cognito origin_jti (letters, digits and ._:-, at most 128)")
        entry = rules.for_session(args.origin_jti, now, Source.OPERATOR, reason)
    else:
        token = (sys.stdin.readline() if args.token == "-" else args.token).strip()
        if " " in token:  # an Authorization value: its token as a Check reads it
            try:
                token = bearer_token(token, MAX_TOKEN_BYTES)
            except AuthzError:
                parser.error("--token must be a token or 'Bearer <token>'")
        if not JWT_SHAPE.fullmatch(token):
            # A digest of anything else would never match what a Check looks up: say so rather than store it.
            parser.error("--token is not a JWT (three base64url parts separated by dots)")
        # The token is not verified (it may be revoked because it leaked; any string can be refused): its exp
        # only says how long the entry must live, and one without a readable exp gets the longest a token can.
        expires_at = unverified_expiry(token)
        if expires_at is None or expires_at > now + LONGEST_TOKEN_SECONDS:
            expires_at = now + LONGEST_TOKEN_SECONDS
        entry = rules.for_token(token_digest(token), expires_at, Source.OPERATOR, reason)
    client = connect(settings.state_url, settings.timeout_seconds)
    try:
        stored = store_entry(client, entry)
    except (redis.RedisError, OSError) as exc:
        print(f"authz: cannot reach the shared state: {type(exc).__name__}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        client.close()
    print(
        json.dumps(
            {
                "revoked": stored.kind.value,
                "subject": stored.subject,
                "refused_until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stored.until)),
                **(
                    {"issued_until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stored.before))}
                    if stored.before is not None
                    else {}
                ),
                **({"reason": stored.reason} if stored.reason else {}),
            },
            indent=2,
        )
    )
    return 0


# ------------------------------------------------------------------------------------------------ routes


def _routes(args: argparse.Namespace) -> int:
    """`routes check` and `routes explain`: the file alone decides, never the environment (they run in CI)."""
    from authz.routes import RoutesError, load_table

    try:
        table = load_table(args.file)
    except RoutesError as error:
        print(f"authz: {error}", file=sys.stderr)  # <file>:<line>: <problem>
        return EXIT_CONFIG
    if args.routes_command == "check":
        lines = _routes_check(table)
    else:
        lines = _routes_explain(table, args.method, args.host, args.path)
    print("\n".join(lines))
    return 0


def _routes_check(table: RouteTable) -> list[str]:
    """The rules in the order they are tried, one a line (number, line in the file, match, demands), then the
    default."""
    count = len(table.rules)
    lines = [f"{table.source}: ok, {count} rule{'' if count == 1 else 's'}, sha256 {table.sha256[:12]}"]
    if not table.rules:
        lines.append("no rules: every request gets the default")
    else:
        lines.append("rules in the order they are tried (the first that matches decides):")
    rows = [
        (
            f"{rule.index:>{len(str(count))}}  line {rule.line}",
            _describe_match(rule.match),
            _describe_settings(rule.settings),
        )
        for rule in table.rules
    ]
    rows.append(("default", "(no rule matches)" if rows else "(every request)", _describe_settings(table.default)))
    where_width = max(len(where) for where, _, _ in rows)
    match_width = max(len(match) for _, match, _ in rows)
    lines += [f"  {where:<{where_width}}  {match:<{match_width}}  {demands}" for where, match, demands in rows]
    return lines


def _routes_explain(table: RouteTable, method: str, host: str, path: str) -> list[str]:
    """Which rule decides a request (or the default, or no rule at all for a path not in normal form), and what it
    demands, field by field."""
    from authz.routes import normal_path

    request = f"{method} {path}" + (f" (host {host})" if host else " (no host: no rule with hosts matches)")
    lines = [f"request:     {request}"]
    if not normal_path(path):
        return [
            *lines,
            "decided by:  no rule: the path is not in normal form (a dot segment, //, \\, or an encoded /, \\ or .)",
            "result:      denied 400 bad_path, whatever the rules say",
        ]
    rule = table.rule_for(method, host, path)
    if rule is None:
        lines.append("decided by:  no rule matches: the default")
        settings = table.default
    else:
        lines.append(f"decided by:  rule {rule.index}, line {rule.line}: {rule.text}")
        settings = rule.settings
    return lines + [f"{name + ':':<12} {value}" for name, value in _explain_settings(settings)]


def _names(names: frozenset[str]) -> str:
    """A set as operators read it: sorted, comma-separated."""
    return ",".join(sorted(names))


def _describe_match(match: RouteMatch) -> str:
    parts = [f"path {match.path}" if match.path is not None else f"prefix {match.prefix}"]
    if match.methods:
        parts.append(f"methods {_names(match.methods)}")
    if match.hosts or match.host_suffixes:
        parts.append(f"hosts {_names(match.hosts | {'*' + suffix for suffix in match.host_suffixes})}")
    return "  ".join(parts)


def _describe_settings(settings: RouteSettings) -> str:
    """What a rule demands, on one line: what applies only (auth none reads no token, so nothing else does)."""
    from authz.routes import Auth

    parts = [f"auth {settings.auth.value}"]
    if settings.auth is not Auth.NONE:
        parts.append(f"token_use {_names(settings.token_uses)}")
        if len(settings.principals) == 1:
            parts.append(f"principal {_names(settings.principals)}")
        if settings.groups:
            parts.append(f"groups any of {_names(settings.groups)}")
        if settings.scopes:
            parts.append(f"scopes all of {_names(settings.scopes)}")
        if settings.audiences:
            parts.append(f"audiences any of {_names(settings.audiences)}")
        if settings.claims:
            parts.append(f"claims {'; '.join(_describe_condition(condition) for condition in settings.claims)}")
        if settings.revocation is not None:
            parts.append(f"revocation {'check' if settings.revocation else 'skip'}")
    return "; ".join(parts)


def _explain_settings(settings: RouteSettings) -> list[tuple[str, str]]:
    """What a rule demands, a field a line, with what each means for a caller."""
    from authz.routes import Auth

    if settings.auth is Auth.NONE:
        return [("auth", "none (public: the token is not even read)")]
    if settings.auth is Auth.REQUIRED:
        auth = "required (no valid token: 401)"
    else:
        auth = "optional (no token: allowed as anonymous; a token that is sent must be valid, else 401)"
    revocation = {
        True: "check (the token is confirmed with Cognito's GetUser)",
        False: "skip (never asked of Cognito)",
        None: "as the server is configured (AUTHZ_REVOCATION)",
    }[settings.revocation]
    principal = (
        f"{_names(settings.principals)} only (another kind of caller: 403)"
        if len(settings.principals) == 1
        else "user or client"
    )
    audiences = (
        f"any of {_names(settings.audiences)} (a token bound to none of them: 401)"
        if settings.audiences
        else "none demanded"
    )
    claims = (
        f"{'; '.join(_describe_condition(c) for c in settings.claims)} (one failing: 403)"
        if settings.claims
        else "none demanded"
    )
    return [
        ("auth", auth),
        ("token_use", f"{_names(settings.token_uses)} (another token: 401)"),
        ("principal", principal),
        ("groups", f"any of {_names(settings.groups)} (in none of them: 403)" if settings.groups else "none demanded"),
        ("scopes", f"all of {_names(settings.scopes)} (one missing: 403)" if settings.scopes else "none demanded"),
        ("audiences", audiences),
        ("claims", claims),
        ("revocation", revocation),
    ]


def _describe_condition(condition: ClaimCondition) -> str:
    if condition.accepted is None:
        return f"{condition.name} present"
    return f"{condition.name} one of {','.join(sorted(condition.accepted))}"


if __name__ == "__main__":
    sys.exit(main())
