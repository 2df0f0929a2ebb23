"""authz/__main__.py: the command line as a user runs it, serve, verify, check and routes as subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from authz.denylist import Denylist
from authz.server import run_server
from authz.state import KEY_PREFIX, SharedState
from authz.tokens import VerifiedToken
from tests.conftest import CLIENT_ID, POOL_ID, FakeClock, access_claims, mint, settings_for, wait_for


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


def test_serve_http_answers_envoys_http_questions_and_stops_cleanly_on_sigterm(jwks_server):
    """`serve-http` answers on AUTHZ_HTTP_ADDR (an allow 200 with the caller's sub, a deny 401), reports health on
    the metrics port, and exits 0 on SIGTERM."""
    port, metrics_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_COGNITO_", "AUTHZ_"))},
        **pool_env(
            jwks_server.url, AUTHZ_HTTP_ADDR=f"127.0.0.1:{port}", AUTHZ_METRICS_ADDR=f"127.0.0.1:{metrics_port}"
        ),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "authz", "serve-http"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = f"http://127.0.0.1:{metrics_port}/healthz"

        def healthy() -> bool:
            try:
                return requests.get(health, timeout=1).status_code == 200
            except requests.RequestException:
                return False

        assert wait_for(healthy, timeout=20)
        allowed = requests.get(
            f"http://127.0.0.1:{port}/api/me", headers={"Authorization": f"Bearer {mint(live_claims())}"}, timeout=5
        )
        assert (allowed.status_code, allowed.headers["x-user-sub"]) == (200, access_claims()["sub"])
        assert requests.get(f"http://127.0.0.1:{port}/api/me", timeout=5).status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert any(json.loads(line).get("msg") == "authz stopped" for line in stderr.splitlines() if line.startswith("{"))


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


@pytest.mark.parametrize("content", [None, "routes:\n  - match: {path: /x}\n    group: [admins]\n"])
def test_serve_with_a_route_table_it_cannot_use_exits_2_naming_the_file_and_line(jwks_server, tmp_path, content):
    """A missing or invalid AUTHZ_ROUTES file stops `serve` at start: one line naming the file (and line), exit 2."""
    routes = tmp_path / "routes.yaml"
    if content is not None:
        routes.write_text(content)
    env = pool_env(
        jwks_server.url, AUTHZ_ROUTES=str(routes), AUTHZ_ADDR="127.0.0.1:0", AUTHZ_METRICS_ADDR="127.0.0.1:0"
    )
    result = authz("serve", env=env)
    assert result.returncode == 2
    [line] = [line for line in result.stderr.strip().splitlines() if line.startswith("authz:")]
    expected = f"{routes}:2: " if content else f"{routes}: cannot read"
    assert line.startswith(f"authz: configuration error: AUTHZ_ROUTES: {expected}"), line
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------------ routes

# The table, and a last rule that only the order of the rules keeps from GET /api/reports/public/...
TABLE = """\
default: {auth: required}
routes:
  - match: {path: /api/health}                       # exact path
    auth: none
  - match: {prefix: /web}                            # segment prefix: /web and /web/..., never /website
    auth: none
  - match: {path: /api/activities/home, methods: [GET, HEAD]}
    auth: optional
  - match: {prefix: /api/admin}
    groups: [admins, ops]
  - match: {prefix: /api/reports, methods: [GET]}
    scopes: [reports/read]
  - match: {prefix: /api/tenants, hosts: ["api.example.com", "*.example.com"]}
    token_use: any
    revocation: check
  - match: {prefix: /api/reports/public}
    auth: none
"""


@pytest.fixture
def table_file(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(TABLE)
    return path


def test_routes_check_lists_the_rules_in_the_order_they_are_tried_then_the_default(table_file):
    """`routes check FILE` with no environment at all (no AWS_COGNITO_*) prints each rule on one line, numbered
    in the order they are tried with its line in the file, its match and what it demands (sets as sorted comma
    lists), then the default; exit 0."""
    result = authz("routes", "check", str(table_file))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    sha = hashlib.sha256(TABLE.encode()).hexdigest()[:12]
    assert result.stdout.splitlines() == [
        f"{table_file}: ok, 7 rules, sha256 {sha}",
        "rules in the order they are tried (the first that matches decides):",
        "  1  line 3   path /api/health                                          auth none",
        "  2  line 5   prefix /web                                               auth none",
        "  3  line 7   path /api/activities/home  methods GET,HEAD               auth optional; token_use access",
        "  4  line 9   prefix /api/admin                                         auth required; token_use access; groups any of admins,ops",
        "  5  line 11  prefix /api/reports  methods GET                          auth required; token_use access; scopes all of reports/read",
        "  6  line 13  prefix /api/tenants  hosts *.example.com,api.example.com  auth required; token_use access,id; revocation check",
        "  7  line 16  prefix /api/reports/public                                auth none",
        "  default     (no rule matches)                                         auth required; token_use access",
    ]


def test_routes_check_of_a_table_without_rules_shows_the_default_alone(tmp_path):
    """A table with no rules is valid: every request gets the default (here omitted: auth required, access)."""
    path = tmp_path / "routes.yaml"
    path.write_text("routes: []\n")
    result = authz("routes", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "no rules: every request gets the default",
        "  default  (every request)  auth required; token_use access",
    ]


def test_routes_check_accepts_the_stacks_own_table():
    """The table the stack ships passes the check operators run in CI."""
    result = authz("routes", "check", "stack/routes/routes.yaml")
    assert result.returncode == 0, result.stderr
    assert "  default " in result.stdout


VALID_RULE = "routes:\n  - match: {path: /api/health}\n    auth: none\n"


@pytest.mark.parametrize(
    "text, line, problem",
    [
        pytest.param(VALID_RULE + "  - match: {prefix: /api\n", 5, "not valid YAML", id="bad-yaml"),
        pytest.param(
            VALID_RULE + "  - match: {prefix: /api}\n    group: [admins]\n", 4, "unknown key", id="unknown-key"
        ),
        pytest.param(
            VALID_RULE + "  - match: {prefix: /api}\n    groups: admins\n", 5, "routes/1/groups", id="wrong-type"
        ),
        pytest.param(
            VALID_RULE + "  - match: {prefix: /api}\n    auth: optional\n    groups: [admins]\n",
            6,  # the line of the key at fault
            "groups need auth: required",
            id="groups-with-auth-optional",
        ),
        pytest.param(VALID_RULE + "  - match: {prefix: /api/}\n", 4, "ends with /", id="prefix-ending-in-slash"),
        pytest.param(
            VALID_RULE + "  - match: {prefix: /api, hosts: [api.example.com:8443]}\n",
            4,
            "is not a host name",
            id="host-with-port",
        ),
        pytest.param(
            VALID_RULE + "  - match: {prefix: /api, hosts: [https://api.example.com]}\n",
            4,
            "is not a host name",
            id="host-with-scheme",
        ),
    ],
)
@pytest.mark.parametrize("command", ["check", "explain"])
def test_an_invalid_table_exits_2_with_one_line_naming_the_file_and_line(tmp_path, command, text, line, problem):
    """Each kind of invalid file: nothing on stdout, one line `authz: <file>:<line>: <problem>` on stderr, exit 2,
    for `check` and `explain` alike."""
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    extra = ["--method", "GET", "--path", "/api/health"] if command == "explain" else []
    result = authz("routes", command, str(path), *extra)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"authz: {path}:{line}: "), lines[0]
    assert problem in lines[0]


def test_a_missing_table_exits_2_naming_the_file(tmp_path):
    """A file that cannot be read has no line to name: `authz: <file>: cannot read: ...`, exit 2."""
    path = tmp_path / "absent.yaml"
    result = authz("routes", "check", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"authz: {path}: cannot read: No such file or directory"]


def explain(table_file, method: str, path: str, host: str | None = None) -> list[str]:
    args = ["routes", "explain", str(table_file), "--method", method, "--path", path]
    result = authz(*args, *(["--host", host] if host is not None else []))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    "method, path, host, rule",
    [
        pytest.param("GET", "/api/health", None, 1, id="exact"),
        pytest.param("GET", "/api/health/x", None, None, id="exact-is-not-a-prefix"),
        pytest.param("GET", "/web", None, 2, id="segment-prefix-itself"),
        pytest.param("GET", "/web/app.js", None, 2, id="segment-prefix-below"),
        pytest.param("GET", "/website", None, None, id="segment-prefix-not-website"),
        pytest.param("HEAD", "/api/activities/home", None, 3, id="method-listed"),
        pytest.param("POST", "/api/activities/home", None, None, id="method-not-listed"),
        pytest.param("GET", "/api/reports/public/x", None, 5, id="first-match-wins"),
        pytest.param("POST", "/api/reports/public/x", None, 7, id="later-rule-when-earlier-method-differs"),
        pytest.param("GET", "/api/tenants/7", "api.example.com", 6, id="host-exact"),
        pytest.param("GET", "/api/tenants/7", "EU.API.Example.com:8443", 6, id="host-wildcard-with-port-any-case"),
        pytest.param("GET", "/api/tenants/7?page=2", "eu.example.com", 6, id="query-ignored"),
        pytest.param("GET", "/api/tenants/7", "example.com", None, id="wildcard-needs-a-label"),
        pytest.param("GET", "/api/tenants/7", "api.example.org", None, id="host-not-listed"),
        pytest.param("GET", "/api/tenants/7", None, None, id="no-host"),
        pytest.param("GET", "/api/me", None, None, id="default"),
    ],
)
def test_routes_explain_names_the_first_rule_that_matches_or_the_default(table_file, method, path, host, rule):
    """`routes explain` tries the rules in order as the server does (exact path, segment prefix, methods, hosts
    without port and case-insensitive, the path without its query) and names the rule that decides, by number and
    line and as written, or the default."""
    lines = explain(table_file, method, path, host)
    assert lines[0] == f"request:     {method} {path} " + (
        f"(host {host})" if host else "(no host: no rule with hosts matches)"
    )
    if rule is None:
        assert lines[1] == "decided by:  no rule matches: the default"
    else:
        written = {1: 3, 2: 5, 3: 7, 5: 11, 6: 13, 7: 16}[rule]
        assert lines[1].startswith(f'decided by:  rule {rule}, line {written}: {{"match": ')


def test_routes_explain_prints_what_the_rule_demands(table_file):
    """Each demand on its own line (auth, token_use, groups, scopes, revocation), with what it means for a caller."""
    assert explain(table_file, "GET", "/api/admin/users", "api.example.com") == [
        "request:     GET /api/admin/users (host api.example.com)",
        'decided by:  rule 4, line 9: {"match": {"prefix": "/api/admin"}, "groups": ["admins", "ops"]}',
        "auth:        required (no valid token: 401)",
        "token_use:   access (another token: 401)",
        "principal:   user or client",
        "groups:      any of admins,ops (in none of them: 403)",
        "scopes:      none demanded",
        "audiences:   none demanded",
        "claims:      none demanded",
        "revocation:  as the server is configured (AUTHZ_REVOCATION)",
    ]
    assert explain(table_file, "GET", "/api/tenants/7", "x.example.com:443")[2:] == [
        "auth:        required (no valid token: 401)",
        "token_use:   access,id (another token: 401)",
        "principal:   user or client",
        "groups:      none demanded",
        "scopes:      none demanded",
        "audiences:   none demanded",
        "claims:      none demanded",
        "revocation:  check (the token is confirmed with Cognito's GetUser)",
    ]
    assert explain(table_file, "GET", "/api/reports/q3")[6] == "scopes:      all of reports/read (one missing: 403)"
    assert explain(table_file, "GET", "/api/activities/home")[2] == (
        "auth:        optional (no token: allowed as anonymous; a token that is sent must be valid, else 401)"
    )
    assert explain(table_file, "GET", "/web/index.html")[2:] == [
        "auth:        none (public: the token is not even read)"
    ]


def test_routes_explain_falls_to_the_default(table_file):
    """No rule matching: the default decides, and its demands are printed the same way."""
    assert explain(table_file, "DELETE", "/website") == [
        "request:     DELETE /website (no host: no rule with hosts matches)",
        "decided by:  no rule matches: the default",
        "auth:        required (no valid token: 401)",
        "token_use:   access (another token: 401)",
        "principal:   user or client",
        "groups:      none demanded",
        "scopes:      none demanded",
        "audiences:   none demanded",
        "claims:      none demanded",
        "revocation:  as the server is configured (AUTHZ_REVOCATION)",
    ]


@pytest.mark.parametrize(
    "path",
    ["/api/health/../admin", "/api/health/./x", "/web//x", "/web\\..\\api", "/web/%2e%2E/api", "/api%2Fadmin", "/a%5c"],
)
def test_routes_explain_of_a_path_not_in_normal_form_is_bad_path_whatever_the_rules(table_file, path):
    """A path with a dot segment, //, a backslash or an encoded /, \\ or . is denied 400 bad_path before any rule
    (even under a public prefix): explain says so, and exits 0 since that is its answer."""
    lines = explain(table_file, "GET", path, "api.example.com")
    assert lines[0] == f"request:     GET {path} (host api.example.com)"
    assert lines[1].startswith("decided by:  no rule: the path is not in normal form")
    assert lines[2:] == ["result:      denied 400 bad_path, whatever the rules say"]


# ------------------------------------------------------------------------------------------------- revoke


def _stored(redis_server, kind: str, subject: str) -> dict:
    raw = redis_server.client.get(f"{KEY_PREFIX}deny:{kind}:{subject}")
    assert raw is not None, (kind, subject)
    return json.loads(raw)


def test_revoke_sub_stores_an_entry_every_replica_enforces(redis_server):
    """`revoke --sub` needs only AUTHZ_STATE_URL, exits 0, says until when, and a replica in sync refuses the
    user's tokens issued until then within a second."""
    replica = SharedState(redis_server.url, Denylist(100, clock=time.time), timeout=0.25)
    replica.start()
    try:
        assert replica.wait_connected(5.0)
        result = authz(
            "revoke", "--sub", "user-1", "--reason", "laptop stolen", env={"AUTHZ_STATE_URL": redis_server.url}
        )
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        assert (printed["revoked"], printed["subject"], printed["reason"]) == ("user", "user-1", "laptop stolen")
        assert "issued_until" in printed and "refused_until" in printed
        stored = _stored(redis_server, "user", "user-1")
        assert stored["before"] <= time.time() < stored["until"]
        revoked = VerifiedToken(
            sub="user-1",
            token_use="access",
            client_id="c",
            pool_id=POOL_ID,
            username=None,
            groups=(),
            scopes=(),
            expires_at=time.time() + 600,
            issued_at=time.time() - 60,
        )
        assert wait_for(lambda: replica.denylist.refuses(revoked, b"\0" * 32), 1.0)
    finally:
        replica.close()


def test_revoke_token_from_stdin_stores_its_digest_never_the_token(redis_server):
    """`revoke --token -` reads the token from standard input (out of the process list), stores only its digest,
    lives until the token's exp plus leeway, and prints no token."""
    expires_at = int(time.time()) + 600
    token = mint(access_claims(exp=expires_at))
    result = subprocess.run(
        [sys.executable, "-m", "authz", "revoke", "--token", "-"],
        input=token + "\n",
        env={**os.environ, "AUTHZ_STATE_URL": redis_server.url, "AUTHZ_LEEWAY_SECONDS": "0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert json.loads(result.stdout)["subject"] == digest
    assert token not in result.stdout + result.stderr
    assert _stored(redis_server, "token", digest)["until"] == expires_at


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(["revoke", "--sub", "user-1"], {}, id="no-state-url"),
        pytest.param(["revoke", "--sub", "a b"], {"AUTHZ_STATE_URL": "redis://127.0.0.1:1/0"}, id="bad-sub"),
        pytest.param(["revoke", "--origin-jti", "x" * 200], {"AUTHZ_STATE_URL": "redis://127.0.0.1:1/0"}, id="bad-jti"),
        pytest.param(["revoke"], {"AUTHZ_STATE_URL": "redis://127.0.0.1:1/0"}, id="nothing-named"),
        pytest.param(
            ["revoke", "--sub", "u", "--reason", "\x1b[2J"],
            {"AUTHZ_STATE_URL": "redis://127.0.0.1:1/0"},
            id="bad-reason",
        ),
    ],
)
def test_revoke_without_what_it_needs_exits_2(args, env):
    """No AUTHZ_STATE_URL, a malformed subject or reason, or nothing to revoke: exit 2 and nothing stored."""
    assert authz(*args, env=env).returncode == 2


@pytest.mark.parametrize("form", ["bearer {t}", "Bearer   {t}", "{t}"])
def test_revoke_token_takes_it_as_a_check_reads_it(redis_server, form):
    """A token given bare or as an Authorization value (any case of Bearer) is stored under the digest a Check of it
    looks up."""
    token = mint(access_claims(exp=int(time.time()) + 600))
    result = authz("revoke", "--token", form.format(t=token), env={"AUTHZ_STATE_URL": redis_server.url})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["subject"] == hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize("given", ['"{t}"', "Authorization: Bearer {t}", "not-a-jwt", "a.b"])
def test_revoke_token_refuses_what_no_check_would_ever_match(redis_server, given):
    """A value that is not a token nor 'Bearer <token>' exits 2 and stores nothing, rather than a digest no Check
    ever looks up."""
    token = mint(access_claims(exp=int(time.time()) + 600))
    result = authz("revoke", "--token", given.format(t=token), env={"AUTHZ_STATE_URL": redis_server.url})
    assert result.returncode == 2, result.stdout
    assert list(redis_server.client.scan_iter(match=KEY_PREFIX + "*")) == []


def test_revoke_with_redis_unreachable_exits_3():
    """A shared state nobody answers at: exit 3, one line naming the failure."""
    result = authz("revoke", "--sub", "user-1", env={"AUTHZ_STATE_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert result.returncode == 3
    assert result.stderr.startswith("authz: cannot reach the shared state")
