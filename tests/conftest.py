"""Shared test parts: RSA keys and JWKS documents, Cognito-shaped token minting, a fake clock, a JWKS server, waits,
and a scripted stand-in for Cognito's GetUser."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

import identity_headers
from authz.config import Settings, make_pool
from authz.revocation import RevocationChecker, Status
from authz.tokens import VerifiedToken

if TYPE_CHECKING:
    from stack.cognito import Provisioned

REGION = "ca-central-1"
POOL_ID = "ca-central-1_AbC123"
OTHER_POOL_ID = "ca-central-1_XyZ789"
ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL_ID}"
OTHER_ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/{OTHER_POOL_ID}"
CLIENT_ID = "4f1client0allowed0000000"
OTHER_CLIENT_ID = "9z9client0unknown0000000"
KID = "kid-2026-1"
NOW = 1_800_000_000.0
# The six identity headers at the default prefix, as every part names them (identity_headers is their definition).
IDENTITY_HEADERS = frozenset(identity_headers.header_names())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


_KEYS: dict[str, rsa.RSAPrivateKey] = {}


def private_key(name: str = "pool") -> rsa.RSAPrivateKey:
    """One RSA key per name for the whole session (key generation is the slow part)."""
    if name not in _KEYS:
        _KEYS[name] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _KEYS[name]


def public_jwk(key: rsa.RSAPrivateKey, kid: str | None = KID, **overrides: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    jwk = {"alg": "RS256", "e": _uint(numbers.e), "kid": kid, "kty": "RSA", "n": _uint(numbers.n), "use": "sig"}
    jwk.update(overrides)
    return {k: v for k, v in jwk.items() if v is not None}


def jwks_document(*jwks: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(jwks or [public_jwk(private_key())])}).encode()


def access_claims(**overrides: Any) -> dict[str, Any]:
    """Claims shaped like a Cognito access token's."""
    claims = {
        "sub": "7c0a1d2e-0000-4000-8000-000000000001",
        "iss": ISSUER,
        "client_id": CLIENT_ID,
        "origin_jti": "0b1c2d3e-aaaa-4bbb-8ccc-000000000001",
        "event_id": "1a2b3c4d-aaaa-4bbb-8ccc-000000000001",
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "auth_time": int(NOW) - 60,
        "exp": int(NOW) + 3600,
        "iat": int(NOW) - 60,
        "jti": "5e6f7a8b-aaaa-4bbb-8ccc-000000000001",
        "username": "andrew",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def verified(**overrides: Any) -> VerifiedToken:
    """The identity verify() yields for access_claims(): a user's access token with the admin scope and a sign-in
    session, issued a minute before NOW and expiring an hour after it."""
    claims = access_claims()
    values: dict[str, Any] = {
        "sub": claims["sub"],
        "token_use": "access",
        "client_id": CLIENT_ID,
        "pool_id": POOL_ID,
        "username": "andrew",
        "groups": (),
        "scopes": ("aws.cognito.signin.user.admin",),
        "expires_at": NOW + 3600,
        "issued_at": NOW - 60,
        "origin_jti": claims["origin_jti"],
    }
    values.update(overrides)
    return VerifiedToken(**values)


def client_claims(**overrides: Any) -> dict[str, Any]:
    """Claims shaped like the access token of an app client's client credentials grant (or GetClientToken): no
    user, so no username, groups or origin_jti; its sub is the client's id; only resource-server scopes."""
    claims = {
        "sub": CLIENT_ID,
        "token_use": "access",
        "scope": "reports-api/read reports-api/write",
        "auth_time": int(NOW) - 60,
        "iss": ISSUER,
        "exp": int(NOW) + 3600,
        "iat": int(NOW) - 60,
        "version": 2,
        "jti": "5e6f7a8b-aaaa-4bbb-8ccc-000000000003",
        "client_id": CLIENT_ID,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def id_claims(**overrides: Any) -> dict[str, Any]:
    """Claims shaped like a Cognito id token's."""
    claims = {
        "sub": "7c0a1d2e-0000-4000-8000-000000000001",
        "email_verified": True,
        "iss": ISSUER,
        "cognito:username": "andrew",
        "preferred_username": "andrewbrown",
        "origin_jti": "0b1c2d3e-aaaa-4bbb-8ccc-000000000001",
        "aud": CLIENT_ID,
        "event_id": "1a2b3c4d-aaaa-4bbb-8ccc-000000000001",
        "token_use": "id",
        "auth_time": int(NOW) - 60,
        "name": "Andrew Brown",
        "exp": int(NOW) + 3600,
        "iat": int(NOW) - 60,
        "jti": "5e6f7a8b-aaaa-4bbb-8ccc-000000000002",
        "email": "andrew@example.com",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def encode_segment(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return b64url(raw)


def mint(
    claims: dict[str, Any] | bytes | None = None,
    *,
    header: dict[str, Any] | bytes | None = None,
    key: rsa.RSAPrivateKey | None = None,
    kid: str | None = KID,
) -> str:
    """A signed RS256 token; header and payload may be given raw (bytes) to build malformed tokens."""
    if header is None:
        header = {"kid": kid, "alg": "RS256"}
    signing_input = f"{encode_segment(header)}.{encode_segment(access_claims() if claims is None else claims)}"
    signature = (key or private_key()).sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


class FakeClock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class LoopbackHttp:
    """Serves an http.server handler class on a loopback port from a daemon thread, until close()."""

    def _serve(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_port
        # A short poll interval keeps shutdown (and so each test's teardown) quick.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class JwksServer(LoopbackHttp):
    """A JWKS endpoint on loopback whose answer the test controls, counting the requests it gets."""

    def __init__(self) -> None:
        self.body = jwks_document()
        self.status = 200
        self.delay = 0.0
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.delay:
                    time.sleep(outer.delay)
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)
        self.url = f"http://127.0.0.1:{self.port}/{POOL_ID}/.well-known/jwks.json"


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def settings_for(jwks_url: str, **overrides: Any) -> Settings:
    """Settings for one test pool whose keys are served at jwks_url, on free loopback ports."""
    values: dict[str, Any] = {
        "pools": (make_pool(POOL_ID, jwks_url=jwks_url),),
        "client_ids": frozenset({CLIENT_ID}),
        "addr": "127.0.0.1:0",
        "metrics_addr": "127.0.0.1:0",
        "leeway_seconds": 0,
        "shutdown_grace_seconds": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


def emulator_settings(emulator: str, pool_id: str, *client_ids: str, revocation: bool = False) -> Settings:
    """Settings of an authz server for a pool of the local emulator at `emulator` (its keys, and with revocation its
    GetUser), on free loopback ports."""
    env = {
        "AWS_COGNITO_USER_POOLS_ID": pool_id,
        "AWS_COGNITO_CLIENT_ID": ",".join(client_ids),
        "AUTHZ_JWKS_URL": emulator + "/{pool}/.well-known/jwks.json",
        "AUTHZ_ADDR": "127.0.0.1:0",
        "AUTHZ_METRICS_ADDR": "127.0.0.1:0",
    }
    if revocation:
        env |= {"AUTHZ_REVOCATION": "cognito", "AWS_ENDPOINT_URL_COGNITO_IDP": emulator}
    return Settings.from_env(env)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether condition became true within timeout seconds of real time, polling every 20 ms."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def health_status(port: int, service: str = "") -> int:
    """The gRPC health status a server on loopback port reports for service ("" is the whole server)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def static_fetcher(document: bytes):
    """A JWKS fetcher that answers from memory, for tests that are not about fetching."""

    def fetch(url: str, timeout: float, max_bytes: int) -> bytes:
        return document

    return fetch


Script = Callable[[socket.socket, threading.Event], None]


class ScriptedHttp:
    """A loopback HTTP endpoint that answers each request by running a script on the raw socket.

    `release` is set at teardown, so a script that stalls (waits on it) never outlives its test.
    """

    def __init__(self, script: Script) -> None:
        self._script = script
        self.release = threading.Event()
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/.well-known/jwks.json"
        self._workers: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self.release.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._workers.append(worker)
            worker.start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            request = b""
            try:
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                self.requests += 1
                self._script(conn, self.release)
            except OSError:
                pass  # the client hung up first, which is what several tests expect it to do

    def close(self) -> None:
        self.release.set()
        self._acceptor.join(timeout=2.0)
        self._listener.close()
        for worker in self._workers:
            worker.join(timeout=2.0)


Closable = TypeVar("Closable", bound="SupportsClose")


class SupportsClose(Protocol):
    def close(self) -> None: ...


@contextmanager
def closed_at_exit(make: Callable[..., Closable]) -> Iterator[Callable[..., Closable]]:
    """A maker of servers (or anything with close()) for a fixture to yield: every one it made is closed at exit."""
    made: list[Closable] = []

    def start(*args: Any, **kwargs: Any) -> Closable:
        thing = make(*args, **kwargs)
        made.append(thing)
        return thing

    try:
        yield start
    finally:
        for thing in made:
            thing.close()


@pytest.fixture
def scripted_http() -> Iterator[Callable[[Script], ScriptedHttp]]:
    with closed_at_exit(ScriptedHttp) as start:
        yield start


# ----------------------------------------------------------------------------------- the Cognito emulator


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local Cognito emulator (stack/emulator.py: moto's server and our additions), one per test module: its
    endpoint URL. Each module starts its own, so no module sees another's users."""
    from stack.local import cognito_emulator, emulator_url
    from stack.processes import free_port

    port = free_port()
    with cognito_emulator(port, tmp_path_factory.mktemp("cognito"), REGION):
        yield emulator_url(port)


@pytest.fixture(scope="module")
def cognito(emulator: str) -> Any:
    """A boto3 cognito-idp client of the module's emulator (the stack suites override it with their stack's)."""
    from stack.cognito import cognito_client

    return cognito_client(REGION, emulator)


@pytest.fixture(scope="module")
def pool(cognito: Any) -> Provisioned:
    """The seed's pool and app client, provisioned in the module's emulator."""
    from stack.cognito import provision

    return provision(cognito, REGION)


# ------------------------------------------------------------------------------- the shared state: Redis


class RedisServer:
    """A real redis-server of the test's own (Debian's), on a free loopback port with its own data folder and the
    append-only file: `kill` it as a crash would, `start` it again on the same port and data, `pause` it (SIGSTOP:
    a Redis that accepts connections and answers nothing) and `resume` it."""

    def __init__(self, run_dir: Path) -> None:
        import redis

        from stack.local import redis_server, redis_url
        from stack.processes import free_port

        self.port = free_port()
        self.url = redis_url(self.port)
        self.process = redis_server(self.port, run_dir)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.process.start(timeout=20.0)

    def kill(self) -> None:
        self.process.kill()

    def pause(self) -> None:
        import os
        import signal

        assert self.process.pid is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        import os
        import signal

        assert self.process.pid is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.running():
            self.resume()  # a stopped process would only die of the SIGKILL after the grace period
        self.client.close()
        self.process.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for the test, stopped at teardown."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------ Cognito's GetUser, scripted


def throttled() -> ClientError:
    """What botocore raises when Cognito throttles GetUser: no answer either way."""
    return ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"}}, "GetUser")


class ScriptedLookup:
    """Stands in for Cognito's GetUser: records each call, answers per token (a Status, or an exception to
    raise), and can be held on a gate until the test (or its teardown) releases it."""

    def __init__(
        self,
        answer: Status | BaseException = Status.ACTIVE,
        *,
        answers: dict[str, Status | BaseException] | None = None,
        blocked: bool = False,
    ) -> None:
        self.answer = answer
        self.answers = dict(answers or {})
        self.calls: list[tuple[str, str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not blocked:
            self.gate.set()
        self._lock = threading.Lock()

    def __call__(self, pool_id: str, token: str) -> Status:
        with self._lock:
            self.calls.append((pool_id, token))
        self.entered.set()
        self.gate.wait()
        answer = self.answers.get(token, self.answer)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def release(self) -> None:
        self.gate.set()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.calls)

    def tokens(self) -> list[str]:
        with self._lock:
            return [token for _, token in self.calls]


@pytest.fixture
def lookups() -> Iterator[Any]:
    """Makes ScriptedLookups and releases every one at teardown, so no worker thread outlives its test."""
    made: list[ScriptedLookup] = []

    def make(*args: Any, **kwargs: Any) -> ScriptedLookup:
        lookup = ScriptedLookup(*args, **kwargs)
        made.append(lookup)
        return lookup

    yield make
    for lookup in made:
        lookup.release()


@pytest.fixture
def checkers(clock: FakeClock, lookups) -> Iterator[Any]:
    """Makes RevocationCheckers on the test's FakeClock (generous timeout unless told), closed at teardown."""
    made: list[RevocationChecker] = []

    def make(lookup: ScriptedLookup, **overrides: Any) -> RevocationChecker:
        options: dict[str, Any] = {"ttl": 30.0, "timeout": 5.0, "cache_size": 100, "leeway": 0.0, "clock": clock}
        options.update(overrides)
        checker = RevocationChecker(lookup, **options)
        made.append(checker)
        return checker

    yield make
    # `lookups` is torn down after this fixture, but a blocked lookup must be released before close():
    # close() does not wait, and released workers then finish on their own.
    for checker in made:
        checker.close()


# ------------------------------------------------------------------------------------------------ suites

# The suites that start the real parts, by folder, each with the marker that selects (or skips) it:
#   integration  the whole stack behind a real Envoy (tests/integration) and the bench's runs (tests/bench)
#   emulator     the local Cognito emulator, moto's server (tests/emulator, tests/stack/test_emulator.py)
#   browser      headless Chromium against the pages (tests/browser)
#   compose      the compose stack in real containers (tests/compose), which only `make compose-test` brings up:
#                pyproject's addopts leave it out of every other run
# `pytest -m "not integration and not emulator and not browser"` runs the rest in well under a minute.
SUITE_MARKERS = {
    ("integration",): "integration",
    ("bench",): "integration",
    ("emulator",): "emulator",
    ("stack", "test_emulator.py"): "emulator",
    ("browser",): "browser",
    ("compose",): "compose",
}
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(TESTS).parts
        for prefix, marker in SUITE_MARKERS.items():
            if parts[: len(prefix)] == prefix:
                item.add_marker(marker)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which Envoy binary (and version) this run's Envoy tests use, so a CI log of the Envoy matrix names each one."""
    import re
    import subprocess

    try:
        from stack.local import envoy_binary  # imported here: a header must not break collection when it fails

        binary = envoy_binary()
    except Exception as error:  # noqa: BLE001 - the header reports, it never fails the run
        return [f"envoy: none ({error})"]
    try:
        result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
        match = re.search(r"version: [0-9a-f]+/(\d+\.\d+\.\d+)/", result.stdout + result.stderr)
        version = match.group(1) if match else f"unknown version (`--version` exited {result.returncode})"
    except (OSError, subprocess.SubprocessError) as error:
        version = f"unknown version ({error})"
    return [f"envoy: {version} at {binary}"]
