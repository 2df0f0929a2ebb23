"""Command line: `serve` runs the server, `verify` checks a token offline, `check` asks a running server.

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

from authz.config import ConfigError, Settings
from authz.logs import configure_logging

EXIT_DENIED = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m authz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the ext_authz gRPC server (configured from the environment)")
    verify = commands.add_parser("verify", help="verify a token against the configured pools and print its claims")
    verify.add_argument("token")
    check = commands.add_parser("check", help="send one Check to a running server and print the decision")
    check.add_argument("--addr", default="127.0.0.1:9191", help="HOST:PORT of the server (default %(default)s)")
    check.add_argument("--token", help="the bearer token to send (omit for an anonymous request)")
    check.add_argument("--path", default="/", help="request path (default %(default)s)")
    check.add_argument("--method", default="GET")
    check.add_argument("--context", action="append", default=[], metavar="KEY=VALUE", help="a context_extensions entry")
    check.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)

    if args.command == "check":
        return _check(args, parser)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"authz: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "serve":
        return _serve(settings)
    return _verify(settings, args.token)


def _serve(settings: Settings) -> int:
    from authz.routes import RoutesError
    from authz.server import run_server

    configure_logging(settings.log_level)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with run_server(settings):
            stop.wait()
    except RoutesError as exc:
        print(f"authz: configuration error: AUTHZ_ROUTES: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"authz: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
