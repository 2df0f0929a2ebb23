"""`make run`: the whole stack as local processes, no Docker and no AWS account.

Starts moto's Cognito emulator on 127.0.0.1:9229 (unless AWS_COGNITO_USER_POOLS_ID points at a real pool) with
the seed's pool, client and a confirmed demo user, and beside it a local external IdP on 127.0.0.1:9400
(oidc-provider-mock, provider LocalIdP of the pool: the pages' "Sign in with LocalIdP"), writes .run/cognito.env,
then the backend, the authz server
(with the route table stack/routes/routes.yaml, or $AUTHZ_ROUTES; asked over gRPC, or in Envoy's HTTP mode with
AUTHZ_TRANSPORT=http) and Envoy, each once the one before is healthy, and prints how to talk to them. With
STACK_STATE=redis, also a local redis-server (Debian's) as authz's shared state (AUTHZ_STATE_URL): the denylist of
`python -m authz revoke` and of the pages' sign-out. Ctrl-C stops everything; pid files in .run/ let the next run
clean up after a crash.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from envoy.bootstrap import DEFAULT_USER_RATE_LIMIT, Transport
from identity_headers import DEFAULT_PREFIX
from stack.cognito import cognito_client_for, sign_in
from stack.local import ROOT, ROUTES_FILE, LocalStack, Ports, transport_from_env
from stack.processes import StartupError, stop_stale
from stack.provision import IDP_ACCOUNTS, write_env_file

RUN_DIR = ROOT / ".run"
# serve-http's default AUTHZ_HTTP_ADDR port, so `make run` with AUTHZ_TRANSPORT=http listens where the docs say.
HTTP_PORT = 9193
REAL_POOL_VARIABLES = ("AWS_COGNITO_USER_POOLS_ID", "AWS_COGNITO_CLIENT_ID", "AWS_COGNITO_REGION")


def user_rate_limit(value: str | None) -> int:
    """ENVOY_USER_RATE_LIMIT: requests a second per caller, 0 for no limit; unset or empty, the stack's default."""
    if value is None or not value.strip():
        return DEFAULT_USER_RATE_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if not 0 <= limit <= 1_000_000:
        raise SystemExit(
            f"run: ENVOY_USER_RATE_LIMIT must be a whole number of requests a second (0: none), not {value!r}"
        )
    return limit


def shared_state(value: str | None) -> bool:
    """STACK_STATE: "redis" gives authz a shared state (a local redis-server); unset or empty, none."""
    choice = (value or "").strip().lower()
    if choice not in ("", "redis"):
        raise SystemExit(f"run: STACK_STATE must be redis or unset, not {value!r}")
    return choice == "redis"


def main() -> int:
    RUN_DIR.mkdir(exist_ok=True)
    for name in stop_stale(RUN_DIR):
        print(f"run: stopped a stale {name} left by an earlier run")
    # Ctrl-C and SIGTERM both end the run at any point, start-up included.
    signal.signal(signal.SIGTERM, _interrupt)
    # AUTHZ_TRANSPORT=http: Envoy's HTTP ext_authz mode, served by `python -m authz serve-http` on its default port.
    transport = transport_from_env()
    stack = LocalStack(
        ports=Ports(authz=(HTTP_PORT,)) if transport is Transport.HTTP else Ports(),
        authz_transport=transport,
        run_dir=RUN_DIR,
        identity_header_prefix=os.environ.get("AUTHZ_HEADER_PREFIX", DEFAULT_PREFIX),
        frontend_url=os.environ.get("FRONTEND_URL"),
        # Sign-out cuts a token off within AUTHZ_REVOCATION_TTL seconds (`make sign-out` shows it).
        authz_env={"AUTHZ_REVOCATION": os.environ.get("AUTHZ_REVOCATION", "cognito")},
        # What authz demands on each route; edits take effect within AUTHZ_ROUTES_RELOAD_SECONDS, no restart.
        routes_file=Path(os.environ.get("AUTHZ_ROUTES") or ROUTES_FILE),
        # Each signed-in caller's requests a second through Envoy; past it, 429 for that caller alone.
        user_rate_limit=user_rate_limit(os.environ.get("ENVOY_USER_RATE_LIMIT")),
        # A Redis of the stack's own as authz's shared state: revoke and sign out on every replica at once.
        state=shared_state(os.environ.get("STACK_STATE")),
        # "Sign in with LocalIdP": an IdP of this machine's own, which only the local emulator can reach (a real
        # pool's Cognito cannot call 127.0.0.1).
        idp=not os.environ.get("AWS_COGNITO_USER_POOLS_ID"),
    )
    try:
        env_file = RUN_DIR / "cognito.env"
        if os.environ.get("AWS_COGNITO_USER_POOLS_ID"):
            print("run: using the Cognito pool from AWS_COGNITO_USER_POOLS_ID (no emulator)")
            stack.use_cognito({key: os.environ[key] for key in REAL_POOL_VARIABLES if key in os.environ})
        else:
            _step("cognito", stack.start_cognito)
        if stack.idp:
            _step("idp", stack.start_idp)
        # Rewritten on every run, so `make token` never reads an earlier run's emulator.
        write_env_file(env_file, stack.cognito_env)
        if stack.state:
            _step("redis", stack.start_state)
        _step("backend", stack.start_backend)
        _step("authz", stack.start_authz)
        _step("envoy", stack.start_envoy)
        _banner(stack)
        while True:
            for process in stack.processes.values():
                if not process.running():
                    print(f"run: {process.name} exited ({process.exit_code()}); see {process.log_path}; stopping")
                    return 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
    except StartupError as error:
        print(f"run: {error}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("run: stopping", flush=True)
        stack.stop()


def _shown(path: Path | None) -> str:
    """A path as the banner shows it: relative to the checkout when it is inside it."""
    if path is None:
        return "none"
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _step(name: str, start: Callable[[], object]) -> None:
    print(f"run: starting {name} (log .run/{name}.log)", flush=True)
    start()


def _state(stack: LocalStack) -> str:
    if not stack.state:
        return "none (STACK_STATE=redis adds one: revoke and sign out on every replica at once)"
    return f"{stack.state_url}   (redis-server, log .run/redis.log)"


def _revoke_hint(stack: LocalStack) -> str:
    if not stack.state:
        return ""
    return (
        f"    AUTHZ_STATE_URL={stack.state_url} .venv/bin/python -m authz revoke --sub SUB"
        "   # refused at once, every replica\n"
    )


def _idp(stack: LocalStack) -> str:
    if not stack.idp:
        return ""
    accounts = ", ".join(f"{sub} ({claims['name']})" for sub, claims in IDP_ACCOUNTS.items())
    return f"""  IdP (local)       {stack.idp_url}   where "Sign in with LocalIdP" on the pages leads
                    accounts: {accounts}: one click each on its page
                    any other sub typed there signs in at the IdP, but the pool refuses it (no name or
                    preferred_username claim, as Cognito would) until you give it claims:
                    curl -X PUT {stack.idp_url}/users/carol -H 'Content-Type: application/json' \\
                      -d '{{"email": "carol@idp.local", "name": "Carol", "preferred_username": "carol"}}'
"""


def _rate(limit: int) -> str:
    if not limit:
        return "none per caller (ENVOY_USER_RATE_LIMIT=0)"
    return f"{limit} requests a second per signed-in caller, then 429 (ENVOY_USER_RATE_LIMIT)"


def _provider_sign_in(stack: LocalStack) -> str:
    if stack.idp:
        return '"Sign in with LocalIdP" (the IdP below)'
    return "provider sign-in with PAGES_COGNITO_DOMAIN and PAGES_IDENTITY_PROVIDERS"


def _banner(stack: LocalStack) -> None:
    env = stack.cognito_env
    reload_seconds = os.environ.get("AUTHZ_ROUTES_RELOAD_SECONDS") or "2"
    token = None
    if "DEMO_USERNAME" in env:
        client = cognito_client_for(env)
        token = sign_in(client, env["AWS_COGNITO_CLIENT_ID"], env["DEMO_USERNAME"], env["DEMO_PASSWORD"])["AccessToken"]
    http = stack.authz_transport is Transport.HTTP
    transport_name = "HTTP" if http else "gRPC"
    ask_authz = (
        f'curl -i -H "Authorization: Bearer $TOKEN" http://{stack.authz_addr()}/api/me   # authz itself, as Envoy asks'
        if http
        else f".venv/bin/grpcurl -plaintext {stack.authz_addr()} list"
    )
    print(
        f"""
  In a browser      {stack.envoy_url}/         sign up, sign in, the feed, sign out (any emailed code works locally);
                    Security: an authenticator app's code at sign-in; {_provider_sign_in(stack)}
  Envoy (the API)   {stack.envoy_url}          every request goes through ext_authz
  Envoy admin       {stack.admin_url}
  authz ({transport_name})      {stack.authz_addr()}            metrics {stack.metrics_url()}
  route table       {_shown(stack.routes_file)}   edit it: authz reloads it within {reload_seconds} s
  rate limit        {_rate(stack.user_rate_limit)}
  shared state      {_state(stack)}
  backend           {stack.backend_url}          loopback only; reach it through Envoy
  Cognito (local)   {env.get("AWS_ENDPOINT_URL_COGNITO_IDP", "real AWS")}   pool {env["AWS_COGNITO_USER_POOLS_ID"]}
{_idp(stack)}  ids and demo credentials: .run/cognito.env     a fresh token: make token

  Try it:
    curl -i {stack.envoy_url}/api/me                                  # 401, no token
    curl -i {stack.envoy_url}/api/activities/home                     # public feed
    TOKEN=$(make -s token)
    curl -i -H "Authorization: Bearer $TOKEN" {stack.envoy_url}/api/me     # your identity
    {ask_authz}
    make sign-out     # signs the demo user out everywhere: within 30 s that token gets 401 "token revoked"
{_revoke_hint(stack)}"""
    )
    if token:
        print("  Ready to paste, as the demo user (the token lasts an hour; `make token` gives a new one):")
        print(f'    curl -i -H "Authorization: Bearer {token}" {stack.envoy_url}/api/me\n')
    print("  Ctrl-C stops everything.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
