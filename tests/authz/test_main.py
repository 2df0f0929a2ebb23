"""authz/__main__.py: the command line as a user runs it, serve, verify and check as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from authz.server import run_server
from tests.conftest import CLIENT_ID, POOL_ID, FakeClock, access_claims, mint, settings_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def authz(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_COGNITO_", "AUTHZ_"))}
    return subprocess.run(
        [sys.executable, "-m", "authz", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pool_env(jwks_url: str, **extra: str) -> dict[str, str]:
    return {
        "AWS_COGNITO_USER_POOLS_ID": POOL_ID,
        "AWS_COGNITO_CLIENT_ID": CLIENT_ID,
        "AUTHZ_JWKS_URL": jwks_url,
        **extra,
    }


def live_claims(**overrides):
    """Claims valid by the real clock: the CLI runs in its own process with the real time."""
    now = int(time.time())
    return access_claims(**{"iat": now - 10, "auth_time": now - 10, "exp": now + 600, **overrides})


@pytest.mark.parametrize(
    "env, variable",
    [
        ({}, "AWS_COGNITO_USER_POOLS_ID"),
        ({"AWS_COGNITO_USER_POOLS_ID": "not-a-pool", "AWS_COGNITO_CLIENT_ID": "c"}, "AWS_COGNITO_USER_POOLS_ID"),
        ({"AWS_COGNITO_USER_POOLS_ID": POOL_ID}, "AWS_COGNITO_CLIENT_ID"),
        (
            {"AWS_COGNITO_USER_POOLS_ID": POOL_ID, "AWS_COGNITO_CLIENT_ID": "c", "AWS_COGNITO_REGION": "us-east-1"},
            "AWS_COGNITO_REGION",
        ),
        (
            {"AWS_COGNITO_USER_POOLS_ID": POOL_ID, "AWS_COGNITO_CLIENT_ID": "c", "AUTHZ_CACHE_SIZE": "lots"},
            "AUTHZ_CACHE_SIZE",
        ),
    ],
)
def test_bad_configuration_stops_serve_with_one_line_and_exit_2(env, variable):
    """A bad environment stops `serve` at start: exit 2 and a single line naming the variable."""
    result = authz("serve", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"authz: configuration error: {variable}:")


def test_verify_prints_claims_of_a_valid_token(jwks_server):
    """`verify TOKEN` fetches the pool's keys and prints the verified identity, exit 0."""
    result = authz("verify", mint(live_claims()), env=pool_env(jwks_server.url))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["valid"] is True
    identity = printed["identity"]
    assert (identity["sub"], identity["username"], identity["pool_id"]) == (access_claims()["sub"], "andrew", POOL_ID)
    assert printed["claims"]["token_use"] == "access" and printed["claims"]["client_id"] == CLIENT_ID


def test_verify_prints_the_reason_for_an_invalid_token(jwks_server):
    """`verify` on a token expired beyond the leeway prints the static reason and exits 1."""
    expired = mint(live_claims(exp=int(time.time()) - 120))
    result = authz("verify", expired, env=pool_env(jwks_server.url, AUTHZ_LEEWAY_SECONDS="30"))
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"valid": False, "reason": "expired", "message": "token expired"}


def test_check_prints_the_decision_of_a_running_server(jwks_server):
    """`check --addr --token --path --context` sends one Check and prints what Envoy would do."""
    with run_server(settings_for(jwks_server.url), clock=FakeClock()) as server:
        addr = f"127.0.0.1:{server.port}"
        allowed = authz("check", "--addr", addr, "--token", mint(), "--path", "/api/me")
        assert allowed.returncode == 0, allowed.stderr
        assert json.loads(allowed.stdout)["upstream_headers"]["x-user-name"] == "andrew"
        denied = authz("check", "--addr", addr, "--token", mint(), "--context", "groups=admins")
        assert denied.returncode == 1
        assert json.loads(denied.stdout)["http_status"] == 403
        anonymous = authz("check", "--addr", addr, "--context", "auth=optional")
        assert anonymous.returncode == 0
        assert "x-user-sub" in json.loads(anonymous.stdout)["headers_to_remove"]


def test_check_against_nothing_listening_exits_3():
    """`check` to an address with no server says so on stderr and exits 3."""
    result = authz("check", "--addr", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert result.returncode == 3
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr


def test_serve_answers_checks_and_stops_cleanly_on_sigterm(jwks_server):
    """`serve` logs JSON (at DEBUG also each allow), answers a Check, and exits 0 on SIGTERM."""
    port, metrics_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_COGNITO_", "AUTHZ_"))},
        **pool_env(
            jwks_server.url,
            AUTHZ_ADDR=f"127.0.0.1:{port}",
            AUTHZ_METRICS_ADDR=f"127.0.0.1:{metrics_port}",
            AUTHZ_LOG_LEVEL="DEBUG",
        ),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "authz", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        result = None
        while time.monotonic() < deadline:
            result = authz("check", "--addr", f"127.0.0.1:{port}", "--token", mint(live_claims()), "--timeout", "1")
            if result.returncode == 0:
                break
            time.sleep(0.1)
        assert result is not None and result.returncode == 0, result.stderr if result else "no attempt"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    decisions = [r for r in records if r.get("logger") == "authz.decision"]
    assert decisions and decisions[-1]["result"] == "allow" and decisions[-1]["sub"] == access_claims()["sub"]
    assert any(r.get("msg") == "authz stopped" for r in records)


def test_serve_on_a_busy_port_exits_2_with_one_line(jwks_server):
    """When AUTHZ_ADDR is taken, `serve` says so in one line and exits 2 instead of a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = authz(
            "serve", env=pool_env(jwks_server.url, AUTHZ_ADDR=f"127.0.0.1:{busy}", AUTHZ_METRICS_ADDR="127.0.0.1:0")
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"authz: cannot start: cannot listen on 127.0.0.1:{busy}")
    assert "Traceback" not in result.stderr
