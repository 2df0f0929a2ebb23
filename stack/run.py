"""`make run`: the local stack as processes, no Docker and no AWS account.

Starts moto's Cognito emulator on 127.0.0.1:9229 (unless AWS_COGNITO_USER_POOLS_ID points at a real pool),
provisions the seed's pool, app client and a confirmed demo user, writes .run/cognito.env, starts the authz
server, waits until it reports SERVING, and prints how to talk to it. Ctrl-C stops everything; pid files
in .run/ let the next run clean up after a crash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stack.cognito import cognito_client, ensure_user, provision, sign_in

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
COGNITO_PORT = 9229
AUTHZ_ADDR = "127.0.0.1:9191"
METRICS_ADDR = "127.0.0.1:9192"
# What each child's command line contains, so a stale pid file never kills a reused, unrelated pid.
SIGNATURES = {"cognito": b"moto_server", "authz": b"authz"}
NAMES: dict[int, str] = {}
DEMO = {"email": "demo@cruddur.local", "password": "Demo-Passw0rd!", "name": "Demo User", "handle": "demo"}


def main() -> int:
    RUN_DIR.mkdir(exist_ok=True)
    _stop_stale_processes()
    children: list[subprocess.Popen] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        env = _cognito_env(children)
        env_file = RUN_DIR / "cognito.env"
        env_file.touch(mode=0o600)
        env_file.chmod(0o600)  # it holds the demo password
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        authz = _start("authz", [sys.executable, "-m", "authz", "serve"], {**os.environ, **env, **_authz_env(env)})
        children.append(authz)
        _wait("authz", lambda: _serving(AUTHZ_ADDR), authz)
        _banner(env)
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    print(f"run: {NAMES[child.pid]} exited ({child.returncode}); see .run/{NAMES[child.pid]}.log; stopping")
                    stopping = True
            time.sleep(0.2)
    finally:
        for child in reversed(children):
            _terminate(child)
        for pidfile in RUN_DIR.glob("*.pid"):
            pidfile.unlink(missing_ok=True)
    return 0


def _cognito_env(children: list[subprocess.Popen]) -> dict[str, str]:
    if os.environ.get("AWS_COGNITO_USER_POOLS_ID"):
        print("run: using the Cognito pool from AWS_COGNITO_USER_POOLS_ID (no emulator)")
        return {
            key: os.environ[key]
            for key in ("AWS_COGNITO_USER_POOLS_ID", "AWS_COGNITO_CLIENT_ID", "AWS_COGNITO_REGION")
            if key in os.environ
        }
    endpoint = f"http://127.0.0.1:{COGNITO_PORT}"
    moto = _start(
        "cognito", [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(COGNITO_PORT)], dict(os.environ)
    )
    children.append(moto)
    region = os.environ.get("AWS_COGNITO_REGION", "ca-central-1")
    client = cognito_client(region, endpoint)
    _wait("cognito", lambda: _answers(client), moto)
    provisioned = provision(client, region)
    ensure_user(client, provisioned, **DEMO)
    return {
        "AWS_COGNITO_USER_POOLS_ID": provisioned.pool_id,
        "AWS_COGNITO_CLIENT_ID": provisioned.client_id,
        "AWS_COGNITO_REGION": region,
        "AWS_ENDPOINT_URL_COGNITO_IDP": endpoint,
        "DEMO_USERNAME": DEMO["email"],
        "DEMO_PASSWORD": DEMO["password"],
    }


def _authz_env(env: dict[str, str]) -> dict[str, str]:
    extra = {"AUTHZ_ADDR": AUTHZ_ADDR, "AUTHZ_METRICS_ADDR": METRICS_ADDR}
    endpoint = env.get("AWS_ENDPOINT_URL_COGNITO_IDP")
    if endpoint:
        # The emulator serves each pool's JWKS under its own path; issuers stay the real-looking ones.
        extra["AUTHZ_JWKS_URL"] = endpoint + "/{pool}/.well-known/jwks.json"
    return extra


def _start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = open(RUN_DIR / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it for its lifetime
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (RUN_DIR / f"{name}.pid").write_text(str(process.pid))
    NAMES[process.pid] = name
    print(f"run: started {name} (pid {process.pid}, log .run/{name}.log)")
    return process


def _wait(name: str, ready: Callable[[], bool], process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"run: {name} exited with {process.returncode}; see .run/{name}.log")
        if ready():
            return
        time.sleep(0.2)
    raise SystemExit(f"run: {name} not healthy after {timeout:.0f}s; see .run/{name}.log")


def _answers(client) -> bool:
    try:
        client.list_user_pools(MaxResults=1)
        return True
    except Exception:
        return False


def _serving(addr: str) -> bool:
    try:
        with grpc.insecure_channel(addr) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
        return status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _stop_stale_processes() -> None:
    """A crashed run may have left children behind; they hold the ports we need."""
    for pidfile in RUN_DIR.glob("*.pid"):
        try:
            pid = int(pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if SIGNATURES.get(pidfile.stem, b"\0") in cmdline:
                os.killpg(pid, signal.SIGTERM)
                print(f"run: stopped a stale {pidfile.stem} from an earlier run")
                time.sleep(0.5)
        except (ValueError, OSError):
            pass
        pidfile.unlink(missing_ok=True)


def _banner(env: dict[str, str]) -> None:
    token = ""
    if "DEMO_USERNAME" in env:
        client = cognito_client(env["AWS_COGNITO_REGION"], env.get("AWS_ENDPOINT_URL_COGNITO_IDP"))
        token = sign_in(client, env["AWS_COGNITO_CLIENT_ID"], env["DEMO_USERNAME"], env["DEMO_PASSWORD"])["AccessToken"]
    print(
        f"""
  authz (gRPC)    {AUTHZ_ADDR}   envoy.service.auth.v3.Authorization, grpc.health.v1.Health, reflection
  metrics         http://{METRICS_ADDR}/metrics
  Cognito (local) {env.get("AWS_ENDPOINT_URL_COGNITO_IDP", "real AWS")}   pool {env["AWS_COGNITO_USER_POOLS_ID"]}
  ids and demo credentials: .run/cognito.env     a fresh token: make token

  Ask the server about a request, as Envoy does:
    .venv/bin/python -m authz check --addr {AUTHZ_ADDR} --path /api/me --token "$(make -s token)"
    .venv/bin/grpcurl -plaintext {AUTHZ_ADDR} list
"""
    )
    if token:
        print(f"  demo access token (1 hour):\n    {token}\n")
    print("  Ctrl-C stops everything.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
