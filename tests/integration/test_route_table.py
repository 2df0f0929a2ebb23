"""The authz server's route table through a real Envoy: changed on disk it takes effect without a restart, a broken
file changes nothing, context_extensions still decide where Envoy sends them, an Envoy that checks every route (as
Istio's CUSTOM action does) gets the stack's answers from the table alone, and behind one that forgot to normalize
paths a path not in normal form is 400 on every rule.

The reload tests run their own authz server and Envoy, on their own copy of stack/routes/routes.yaml, in front of
the session's backend: the session's stack never sees their tables.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from envoy import bootstrap
from stack.local import ROUTES_FILE, LocalStack, Ports, envoy_process
from stack.processes import StartupError, free_ports
from tests.integration.cruddur_api import User, bearer, get, raw_request

# Short, so a test waits little; the promise checked is the same: in force within RELOAD_SECONDS + 1 s.
RELOAD_SECONDS = 1
IN_FORCE_WITHIN = RELOAD_SECONDS + 1.0
HOME_FEED = "/api/activities/home"


@dataclass
class TablePair:
    """An authz server reading `routes` and an Envoy in front of it that sends no rules (the stack's own config)."""

    stack: LocalStack
    routes: Path
    original: str

    def write(self, text: str) -> float:
        """Change the table on disk, in place, as an editor would; returns when it was written (monotonic)."""
        self.routes.write_text(text)
        return time.monotonic()

    def metrics(self) -> str:
        return requests.get(self.stack.metrics_url(), timeout=5).text

    def reloads(self, result: str) -> float:
        match = re.search(rf'^authz_routes_reloads_total{{result="{result}"}} (\S+)$', self.metrics(), re.MULTILINE)
        return float(match[1]) if match else 0.0

    def table_in_force(self) -> str:
        """The sha256 label (first 12 hex) of authz_routes_info, the table in force."""
        labels = re.findall(r'^authz_routes_info{[^}]*sha256="([0-9a-f]+)"[^}]*} 1\.0$', self.metrics(), re.MULTILINE)
        assert len(labels) == 1, labels
        return labels[0]


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def pair(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TablePair]:
    run_dir = tmp_path_factory.mktemp("route-table")
    routes = run_dir / "routes.yaml"
    shutil.copyfile(ROUTES_FILE, routes)
    own = LocalStack(
        ports=stack.ports.beside(),
        run_dir=run_dir,
        routes_file=routes,
        authz_env={"AUTHZ_ROUTES_RELOAD_SECONDS": str(RELOAD_SECONDS)},
        envoy_concurrency=1,
    )
    own.use_cognito(stack.cognito_env)
    try:
        own.start_authz()
        own.start_envoy()
        yield TablePair(own, routes, ROUTES_FILE.read_text())
    finally:
        own.stop()


@pytest.fixture
def table(pair: TablePair) -> Iterator[TablePair]:
    """The pair with the stack's table in force, and in force again after the test, whatever it wrote."""
    assert pair.table_in_force() == _sha12(pair.original)
    yield pair
    pair.write(pair.original)
    assert _until(lambda: pair.table_in_force() == _sha12(pair.original), IN_FORCE_WITHIN + 2)


def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _status(stack: LocalStack, path: str, token: str | None = None) -> int:
    return get(stack, path, headers=bearer(token) if token else {}).status_code


def _took_effect(written_at: float, condition: Callable[[], bool]) -> float:
    """Seconds from the write until condition held; fails beyond IN_FORCE_WITHIN (polled for twice as long, so a
    slow reload shows as its time, not as a timeout)."""
    assert _until(condition, 2 * IN_FORCE_WITHIN), "the change never took effect"
    took = time.monotonic() - written_at
    assert took <= IN_FORCE_WITHIN, f"took {took:.2f} s, more than AUTHZ_ROUTES_RELOAD_SECONDS + 1 s"
    return took


# -- a change on disk -----------------------------------------------------------------------------------------


def test_a_rule_made_stricter_on_disk_takes_effect_without_a_restart(table: TablePair, user: User):
    """The home feed made `auth: required` in the file: within AUTHZ_ROUTES_RELOAD_SECONDS + 1 s an anonymous read
    is 401 through the same Envoy and the same authz process, while a signed-in read still passes."""
    proxy = table.stack
    pids = (proxy.authz().pid, proxy.process("envoy").pid)
    assert _status(proxy, HOME_FEED) == 200
    stricter = table.original.replace("    auth: optional", "    auth: required")
    assert stricter != table.original
    written = table.write(stricter)
    _took_effect(written, lambda: _status(proxy, HOME_FEED) == 401)
    assert _status(proxy, HOME_FEED, user.access_token) == 200
    assert table.table_in_force() == _sha12(stricter)
    assert (proxy.authz().pid, proxy.process("envoy").pid) == pids
    assert proxy.authz().running() and proxy.process("envoy").running()


def test_a_group_rule_added_to_a_prefix_takes_effect_without_a_restart(table: TablePair, user: User):
    """`groups: [admins]` on the prefix /api: a valid token of a user in no group gets 403 insufficient_scope on
    /api/me, an anonymous caller still 401, and the public feed above the new rule stays public."""
    proxy = table.stack
    assert _status(proxy, "/api/me", user.access_token) == 200
    admins_only = table.original + "  - match: {prefix: /api}\n    groups: [admins]\n"
    written = table.write(admins_only)
    _took_effect(written, lambda: _status(proxy, "/api/me", user.access_token) == 403)
    response = get(proxy, "/api/me", headers=bearer(user.access_token))
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert response.json()["error"] == "insufficient_scope"
    assert _status(proxy, "/api/me") == 401
    assert _status(proxy, HOME_FEED) == 200


# -- a broken file ------------------------------------------------------------------------------------------------

# Each would open /api/me to anonymous callers, were any of it taken.
BROKEN = {
    "invalid-yaml": "default: {auth: none\nroutes: [\n",
    "unknown-key": "default: {auth: required}\nroutes:\n  - match: {prefix: /api}\n    auth: none\n    group: [admins]\n",
    "wrong-type": "default: {auth: required}\nroutes:\n  - match: {prefix: /api}\n    auth: none\n    scopes: feed/read\n",
    "groups-on-optional": (
        "default: {auth: none}\nroutes:\n  - match: {prefix: /api}\n    auth: optional\n    groups: [admins]\n"
    ),
}


@pytest.mark.parametrize("broken", BROKEN, ids=list(BROKEN))
def test_a_broken_file_changes_nothing(table: TablePair, user: User, broken: str):
    """A file that is not a valid table is refused: the refusal is counted and logged with the file and its line,
    and the last good table stays in force (anonymous /api/me still 401, the feed still public), in the same
    process."""
    proxy = table.stack
    pid = proxy.authz().pid
    refused = table.reloads("error")
    written = table.write(BROKEN[broken])
    _took_effect(written, lambda: table.reloads("error") > refused)
    assert table.table_in_force() == _sha12(table.original)
    assert _status(proxy, "/api/me") == 401
    assert _status(proxy, "/api/me", user.access_token) == 200
    assert _status(proxy, HOME_FEED) == 200
    assert _status(proxy, "/api/health") == 200
    assert proxy.authz().pid == pid and proxy.authz().running()
    refusals = [line for line in _log_lines(proxy.authz().log_path) if line.get("file") == str(table.routes)]
    logged = refusals[-1]
    assert logged["level"] == "error"
    assert isinstance(logged["line"], int) and logged["line"] >= 1
    assert logged["problem"]


def _log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_authz_does_not_start_on_a_missing_or_invalid_table(stack: LocalStack, tmp_path: Path):
    """At start a missing or invalid table stops authz with exit 2, and its one line names the file."""
    for name, text in (("missing.yaml", None), ("invalid.yaml", BROKEN["unknown-key"])):
        routes = tmp_path / name
        if text is not None:
            routes.write_text(text)
        run_dir = tmp_path / name.removesuffix(".yaml")
        run_dir.mkdir()
        authz, metrics = free_ports(2)
        attempt = LocalStack(ports=Ports(authz=(authz,), metrics=(metrics,)), run_dir=run_dir, routes_file=routes)
        attempt.use_cognito(stack.cognito_env)
        with pytest.raises(StartupError, match="exited with 2"):
            attempt.start_authz()
        assert str(routes) in attempt.authz().log_path.read_text()


# -- context_extensions, where Envoy sends them ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sending_envoy(pair: TablePair, stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """An Envoy that sends each route's rules as context_extensions (RuleSource.CONTEXT_EXTENSIONS, as users' own
    Envoy configs do), in front of the pair's authz server and the session's backend. gRPC only: Envoy's HTTP
    ext_authz mode has no context_extensions."""
    if pair.stack.authz_transport is not bootstrap.Transport.GRPC:
        pytest.skip("Envoy's HTTP ext_authz mode sends no context_extensions")
    envoy, admin = free_ports(2)
    proxy = LocalStack(
        ports=Ports(
            envoy=envoy,
            admin=admin,
            authz=pair.stack.ports.authz,
            metrics=pair.stack.ports.metrics,
            backend=stack.ports.backend,
            cognito=stack.ports.cognito,
        ),
        run_dir=tmp_path_factory.mktemp("sending-envoy"),
        route_rules=bootstrap.RuleSource.CONTEXT_EXTENSIONS,
        envoy_concurrency=1,
    )
    try:
        proxy.start_envoy()
        yield proxy
    finally:
        proxy.stop()


def test_context_extensions_decide_where_envoy_sends_them_whatever_the_table_says(
    table: TablePair, sending_envoy: LocalStack, user: User
):
    """Through an Envoy that sends context_extensions the routes keep their rules (feed optional, /api/me an access
    token, an id token refused), also once the server's table says otherwise: a request that carries them is
    decided by them alone, while the Envoy that sends none follows the new table."""

    def as_sent() -> None:
        assert _status(sending_envoy, HOME_FEED) == 200
        assert _status(sending_envoy, "/api/me") == 401
        me = get(sending_envoy, "/api/me", headers=bearer(user.access_token))
        assert me.status_code == 200 and me.json()["sub"] == user.sub
        assert _status(sending_envoy, "/api/me", user.id_token) == 401

    as_sent()
    contrary = table.original.replace("    auth: optional", "    auth: required") + (
        "  - match: {prefix: /api}\n    groups: [admins]\n"
    )
    written = table.write(contrary)
    _took_effect(written, lambda: _status(table.stack, HOME_FEED) == 401)
    assert _status(table.stack, "/api/me", user.access_token) == 403
    as_sent()


# -- an Envoy that checks every route ---------------------------------------------------------------------------


@contextmanager
def _envoy_checking_every_route(
    stack: LocalStack, run_dir: Path, name: str, *, normalize: bool = True
) -> Iterator[tuple[str, int]]:
    """An Envoy with ext_authz on every route and no per-route config at all (as Istio's CUSTOM action or Envoy
    Gateway's extAuth generate), in front of the session's authz server (the stack's table) and backend; without
    `normalize`, it forwards paths as they came (no normalization, no merged slashes, escaped slashes kept): its URL
    and port."""
    envoy_port, admin_port = free_ports(2)
    document = bootstrap.render(stack.topology(envoy_port=envoy_port, admin_port=admin_port))
    [listener] = document["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for route in manager["route_config"]["virtual_hosts"][0]["routes"]:
        route.pop("typed_per_filter_config", None)
    if not normalize:
        manager.update(normalize_path=False, merge_slashes=False, path_with_escaped_slashes_action="KEEP_UNCHANGED")
    envoy = envoy_process(name, document, run_dir, envoy_port=envoy_port, admin_port=admin_port, concurrency=1)
    with envoy:
        yield f"http://127.0.0.1:{envoy_port}", envoy_port


@pytest.fixture(scope="module")
def checking_envoy(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Envoy that checks every route and sends no rules, in front of the session's authz and backend: its URL."""
    run_dir = tmp_path_factory.mktemp("checking-envoy")
    with _envoy_checking_every_route(stack, run_dir, "envoy-checking") as (url, _):
        yield url


@pytest.fixture(scope="module")
def careless_envoy(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The same, but a front proxy that forgot to normalize paths: its port."""
    run_dir = tmp_path_factory.mktemp("careless-envoy")
    with _envoy_checking_every_route(stack, run_dir, "envoy-careless", normalize=False) as (_, port):
        yield port


@pytest.mark.parametrize(
    "path, anonymous, signed_in",
    [
        ("/api/health", 200, 200),
        ("/", 200, 200),
        ("/web/app.js", 200, 200),
        (HOME_FEED, 200, 200),
        ("/api/me", 401, 200),
        ("/api/activities/other", 401, 404),
        ("/website", 401, 404),
        ("/admin", 401, 404),
    ],
)
def test_the_table_alone_decides_every_route_of_the_stack(
    checking_envoy: str, user: User, path: str, anonymous: int, signed_in: int
):
    """With every route checked and no context_extensions, the stack's table gives each route the answer the stack
    gives: health and the pages public, the feed optional, everything else a valid access token."""
    assert requests.get(checking_envoy + path, timeout=10).status_code == anonymous
    assert requests.get(checking_envoy + path, headers=bearer(user.access_token), timeout=10).status_code == signed_in


def test_a_public_route_ignores_even_a_broken_token(checking_envoy: str, user: User):
    """`auth: none` does not read the token: health answers 200 with a garbage one, which the optional feed refuses
    with 401."""
    assert requests.get(checking_envoy + "/api/health", headers=bearer("garbage"), timeout=10).status_code == 200
    assert requests.get(checking_envoy + HOME_FEED, headers=bearer("garbage"), timeout=10).status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        "/api/health/../me",
        "/api/health/./../me",
        "/web/../api/me",
        "//api/me",
        "/api//health",
        "/api/health/..%2Fme",
        "/api/health/%2e%2e/me",
        "/web/%2E%2E/api/me",
        "/api/health%5C..%5Cme",
        "/web/..%5capi/me",
    ],
)
def test_a_path_not_in_normal_form_is_400_whatever_the_rules(careless_envoy: int, user: User, path: str):
    """Behind a front proxy that forgot to normalize, a path with a dot segment, `//` or an encoded `/`, `\\` or `.`
    never reaches a rule, public ones included: 400 bad_path with or without a valid token, never the backend."""
    for token in (None, user.access_token):
        authorization = f"Authorization: Bearer {token}\r\n" if token else ""
        reply = raw_request(
            careless_envoy,
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n".encode(),
        )
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), (path, head[:100])
        assert json.loads(body)["error"] == "bad_path", (path, body[:200])
