"""JWKS faults end to end: a real server on port 0, real gRPC channels, a JWKS endpoint on loopback that misbehaves.

Each fault is shown twice. At start (keys never loaded): health is NOT_SERVING for "" and the Authorization
service, Checks deny 503 `keys_unavailable` without fetching again inside the cooldown, and the server recovers
by itself once the JWKS is fixed. After warm-up: a refetch that fails (on an unknown kid, or on the TTL) keeps
the cached keys, so valid tokens are still allowed and health stays SERVING.

Time is a FakeClock for token claims and for the JWKS TTL, backoff and cooldown: the refresher thread polls in
real time, but only a test moving the fake clock makes a fetch due, so fetch counts are exact.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, cast

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health_pb2

from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc
from authz.client import check, check_request, describe
from authz.server import RunningServer, run_server
from authz.service import SERVICE_NAME
from tests.conftest import (
    KID,
    POOL_ID,
    FakeClock,
    JwksServer,
    Script,
    ScriptedHttp,
    health_status,
    jwks_document,
    mint,
    private_key,
    public_jwk,
    settings_for,
    wait_for,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]

ROTATED_KID = "kid-2026-2"
COOLDOWN = 10.0  # Settings' default AUTHZ_JWKS_COOLDOWN_SECONDS
# A short TTL makes the refresher poll often in real time (it waits min(TTL, 5 s) between ticks); the fake
# monotonic clock still decides when a refresh is due. The retry backoff is capped at the TTL, so it is TTL too.
SHORT_TTL = 0.1
TIMEOUT = 0.3  # AUTHZ_JWKS_TIMEOUT_SECONDS for every test here, so the slow fault costs little real time


def rotated_key() -> rsa.RSAPrivateKey:
    return private_key("rotated")


def rotated_document() -> bytes:
    """The pool's JWKS mid-rotation: the current key and the new one."""
    return jwks_document(public_jwk(private_key()), public_jwk(rotated_key(), ROTATED_KID))


# --------------------------------------------------------------------------------------------- the JWKS


class SwitchableJwks(JwksServer):
    """conftest's JwksServer that can also stop listening (connection refused) and listen again on its port."""

    def __init__(self) -> None:
        super().__init__()
        self.listening = True

    def down(self) -> None:
        if self.listening:
            self.close()
            self.listening = False

    def up(self) -> None:
        if self.listening:
            return
        # The same handler class keeps reading this object's status, body and delay, and counting requests.
        self._serve(cast(type[BaseHTTPRequestHandler], self._httpd.RequestHandlerClass), self.port)
        self.listening = True

    def heal(self, body: bytes | None = None) -> None:
        """Back to a healthy endpoint serving body (by default conftest's one-key document)."""
        self.up()
        self.status = 200
        self.delay = 0.0
        self.body = jwks_document() if body is None else body


@pytest.fixture
def jwks() -> Iterator[SwitchableJwks]:
    server = SwitchableJwks()
    yield server
    server.down()


@dataclass(frozen=True)
class Fault:
    apply: Callable[[SwitchableJwks], None]
    outcome: str  # the `outcome` label of authz_jwks_fetches_total an operator sees for it


def _set(**attributes: Any) -> Callable[[SwitchableJwks], None]:
    def apply(server: SwitchableJwks) -> None:
        for name, value in attributes.items():
            setattr(server, name, value)

    return apply


def _huge_but_valid_jwks() -> bytes:
    """A JWKS that would load but for its size: over the default AUTHZ_JWKS_MAX_BYTES (65536)."""
    body = json.dumps({"keys": [public_jwk(private_key())], "padding": "x" * 70_000}).encode()
    assert len(body) > 65_536
    return body


FAULTS: dict[str, Fault] = {
    "connection-refused": Fault(lambda server: server.down(), "network_error"),
    "slower-than-timeout": Fault(_set(delay=3 * TIMEOUT), "timeout"),
    "http-500": Fault(_set(status=500), "http_error"),
    "http-404": Fault(_set(status=404), "http_error"),
    "not-json": Fault(_set(body=b"<html><body>502 Bad Gateway</body></html>"), "invalid"),
    "json-without-keys": Fault(_set(body=b'{"message": "maintenance"}'), "invalid"),
    "only-key-kty-oct": Fault(_set(body=jwks_document(public_jwk(private_key(), kty="oct"))), "invalid"),
    "only-key-use-enc": Fault(_set(body=jwks_document(public_jwk(private_key(), use="enc"))), "invalid"),
    "only-key-alg-rs384": Fault(_set(body=jwks_document(public_jwk(private_key(), alg="RS384"))), "invalid"),
    "over-max-bytes": Fault(_set(body=_huge_but_valid_jwks()), "too_large"),
}


# ------------------------------------------------------------------------------------------- the server


def start(url: str, monotonic: FakeClock, **overrides: Any) -> Any:
    """run_server for url on fake clocks; cache_size=0, so every Check needs a signing key, never a cached verdict."""
    values: dict[str, Any] = {"cache_size": 0, "jwks_timeout_seconds": TIMEOUT}
    values.update(overrides)
    return run_server(settings_for(url, **values), clock=FakeClock(), monotonic=monotonic)


def health(server: RunningServer) -> set[int]:
    """The health status of both names Envoy may check, as one set."""
    return {health_status(server.port, name) for name in ("", SERVICE_NAME)}


def check_token(server: RunningServer, token: str) -> dict[str, Any]:
    return check(f"127.0.0.1:{server.port}", token=token, path="/api/me")


def fetches(server: RunningServer, outcome: str | None = None) -> float:
    """JWKS fetches so far with that outcome (all outcomes when None), as /metrics reports them."""
    total = 0.0
    for metric in server.metrics.jwks_fetches.collect():
        for sample in metric.samples:
            if (
                sample.name.endswith("_total")
                and sample.labels["pool"] == POOL_ID
                and (outcome is None or sample.labels["outcome"] == outcome)
            ):
                total += sample.value
    return total


def warm(server: RunningServer) -> None:
    assert wait_for(lambda: health(server) == {SERVING}), "the server never loaded its keys"


def assert_keys_unavailable(result: dict[str, Any]) -> None:
    """The README's deny for keys never loaded: UNAVAILABLE, 503, body error keys_unavailable, no challenge."""
    assert (result["allowed"], result["grpc_code"], result["http_status"]) == (False, UNAVAILABLE, 503), result
    assert json.loads(result["body"])["error"] == "keys_unavailable"
    assert "www-authenticate" not in result["response_headers"]


def assert_unknown_kid(result: dict[str, Any]) -> None:
    assert (result["allowed"], result["grpc_code"], result["http_status"]) == (False, UNAUTHENTICATED, 401), result
    assert json.loads(result["body"])["error"] == "invalid_token"
    assert 'error_description="unknown signing key"' in result["response_headers"]["www-authenticate"]


# ------------------------------------------------------------------------------------- faults at start


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_at_start_means_not_serving_and_503_until_the_jwks_recovers(jwks: SwitchableJwks, fault: str) -> None:
    """A JWKS faulty at start means NOT_SERVING and 503 denies until it is fixed, then the server recovers by itself."""
    FAULTS[fault].apply(jwks)
    monotonic = FakeClock(1_000.0)
    with start(jwks.url, monotonic, jwks_ttl_seconds=SHORT_TTL) as server:
        assert wait_for(lambda: fetches(server, FAULTS[fault].outcome) == 1)
        requests_at_start = jwks.requests
        assert health(server) == {NOT_SERVING}
        for _ in range(5):
            assert_keys_unavailable(check_token(server, mint()))
        assert fetches(server) == 1, "a Check inside the cooldown must not fetch again"

        jwks.heal()
        monotonic.advance(SHORT_TTL)  # the first retry's backoff
        assert wait_for(lambda: health(server) == {SERVING})
        assert check_token(server, mint())["allowed"]
        assert (fetches(server, "ok"), fetches(server)) == (1, 2)
        assert jwks.requests == requests_at_start + 1


@pytest.mark.parametrize("declared", [True, False], ids=["content-length-10MB", "endless-chunked"])
def test_oversized_jwks_at_start_is_cut_off_at_the_cap_without_reading_it_all(
    scripted_http: Callable[[Script], ScriptedHttp], declared: bool
) -> None:
    """An endless or declared-huge JWKS body is refused as too_large at once, never read to its end or the timeout."""

    def huge(conn: Any, release: threading.Event) -> None:
        if declared:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{")
            release.wait(5.0)
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"
        while not release.is_set():
            conn.sendall(chunk)  # raises once the client hangs up, which ends the script

    endpoint = scripted_http(huge)
    with start(endpoint.url, FakeClock(1_000.0)) as server:
        assert wait_for(lambda: fetches(server) == 1)
        assert fetches(server, "too_large") == 1  # "timeout" would mean it kept reading until the deadline
        assert health(server) == {NOT_SERVING}
        assert_keys_unavailable(check_token(server, mint()))


# -------------------------------------------------------------------------------- faults after warm-up


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_on_an_unknown_kid_refetch_keeps_the_cached_keys(jwks: SwitchableJwks, fault: str) -> None:
    """After warm-up, an unknown-kid refetch hitting the fault denies only that token 401 while cached keys serve on."""
    monotonic = FakeClock(1_000.0)
    with start(jwks.url, monotonic) as server:
        warm(server)
        FAULTS[fault].apply(jwks)
        monotonic.advance(COOLDOWN)

        assert_unknown_kid(check_token(server, mint(key=rotated_key(), kid=ROTATED_KID)))
        assert fetches(server, FAULTS[fault].outcome) == 1
        assert check_token(server, mint())["allowed"]
        assert health(server) == {SERVING}

        # Fixed and rotated: the kid is still unknown inside the cooldown, and accepted after it, without a restart.
        jwks.heal(rotated_document())
        assert_unknown_kid(check_token(server, mint(key=rotated_key(), kid=ROTATED_KID)))
        monotonic.advance(COOLDOWN)
        assert check_token(server, mint(key=rotated_key(), kid=ROTATED_KID))["allowed"]
        assert (fetches(server, "ok"), fetches(server)) == (2, 3)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_on_a_scheduled_refresh_keeps_the_cached_keys(jwks: SwitchableJwks, fault: str) -> None:
    """After warm-up, a TTL refresh hitting the fault keeps the cached keys and SERVING until a retry recovers."""
    monotonic = FakeClock(1_000.0)
    with start(jwks.url, monotonic, jwks_ttl_seconds=SHORT_TTL) as server:
        warm(server)
        FAULTS[fault].apply(jwks)
        monotonic.advance(SHORT_TTL)

        assert wait_for(lambda: fetches(server, FAULTS[fault].outcome) == 1)
        assert check_token(server, mint())["allowed"]
        assert health(server) == {SERVING}
        assert fetches(server) == 2

        jwks.heal(rotated_document())
        monotonic.advance(SHORT_TTL)  # the retry's backoff, capped at the TTL
        assert wait_for(lambda: fetches(server, "ok") == 2)
        assert check_token(server, mint(key=rotated_key(), kid=ROTATED_KID))["allowed"]
        assert fetches(server) == 3


# ---------------------------------------------------------------------------------------------- redirect


class RedirectingJwks:
    """A JWKS URL that either answers 302 to a valid JWKS elsewhere or serves that JWKS itself."""

    def __init__(self, start_http: Callable[[Script], ScriptedHttp], target: JwksServer) -> None:
        self.redirect = True
        self._target = target
        self._endpoint = start_http(self._answer)
        self.url = self._endpoint.url

    def _answer(self, conn: Any, release: threading.Event) -> None:
        if self.redirect:
            head = b"HTTP/1.1 302 Found\r\nLocation: " + self._target.url.encode() + b"\r\nContent-Length: 0\r\n"
            conn.sendall(head + b"Connection: close\r\n\r\n")
            return
        body = self._target.body
        status = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        conn.sendall(status.encode() + b"Connection: close\r\n\r\n" + body)


def test_redirect_at_start_is_not_followed_and_the_server_recovers(
    scripted_http: Callable[[Script], ScriptedHttp], jwks: SwitchableJwks
) -> None:
    """A JWKS URL that redirects, even to a valid JWKS, loads nothing (NOT_SERVING, 503) and never asks its target."""
    endpoint = RedirectingJwks(scripted_http, jwks)
    monotonic = FakeClock(1_000.0)
    with start(endpoint.url, monotonic, jwks_ttl_seconds=SHORT_TTL) as server:
        assert wait_for(lambda: fetches(server, "http_error") == 1)
        assert health(server) == {NOT_SERVING}
        assert_keys_unavailable(check_token(server, mint()))
        assert jwks.requests == 0

        endpoint.redirect = False
        monotonic.advance(SHORT_TTL)
        assert wait_for(lambda: health(server) == {SERVING})
        assert check_token(server, mint())["allowed"]
        assert jwks.requests == 0


def test_redirect_after_warm_up_is_not_followed_and_the_cached_keys_stay(
    scripted_http: Callable[[Script], ScriptedHttp], jwks: SwitchableJwks
) -> None:
    """A refetch answered by a redirect (to a JWKS with the new kid) is refused, and the cached keys keep serving."""
    endpoint = RedirectingJwks(scripted_http, jwks)
    endpoint.redirect = False
    monotonic = FakeClock(1_000.0)
    with start(endpoint.url, monotonic) as server:
        warm(server)
        jwks.body = rotated_document()
        endpoint.redirect = True
        monotonic.advance(COOLDOWN)

        assert_unknown_kid(check_token(server, mint(key=rotated_key(), kid=ROTATED_KID)))
        assert fetches(server, "http_error") == 1
        assert jwks.requests == 0
        assert check_token(server, mint())["allowed"]
        assert health(server) == {SERVING}


# ------------------------------------------------------------------------------------- unfit keys, rotation


def test_published_keys_with_wrong_kty_use_or_alg_never_verify_a_token(jwks: SwitchableJwks) -> None:
    """Beside a good key, JWKs whose kty, use or alg is wrong are ignored: tokens naming them are denied 401."""
    signer = rotated_key()
    unfit = {"kty-oct": {"kty": "oct"}, "use-enc": {"use": "enc"}, "alg-rs384": {"alg": "RS384"}}
    jwks.body = jwks_document(public_jwk(private_key()), *(public_jwk(signer, kid, **o) for kid, o in unfit.items()))
    with start(jwks.url, FakeClock(1_000.0)) as server:
        warm(server)
        for kid in unfit:
            assert_unknown_kid(check_token(server, mint(key=signer, kid=kid)))
        assert check_token(server, mint())["allowed"]
        assert jwks.requests == 1


def test_new_kid_within_the_cooldown_is_denied_then_accepted_without_restart(jwks: SwitchableJwks) -> None:
    """A token with a just-published kid is 401 inside the cooldown, not remembered as bad, and allowed after it."""
    monotonic = FakeClock(1_000.0)
    token = mint(key=rotated_key(), kid=ROTATED_KID)
    # The real token cache here: an unknown kid must not be remembered as a permanently bad token.
    with start(jwks.url, monotonic, cache_size=100_000) as server:
        warm(server)
        jwks.body = rotated_document()
        assert_unknown_kid(check_token(server, token))
        assert jwks.requests == 1
        monotonic.advance(COOLDOWN)
        assert check_token(server, token)["allowed"]
        assert check_token(server, mint(kid=KID))["allowed"]
        assert jwks.requests == 2


def _flood(server: RunningServer, tokens: list[str]) -> list[dict[str, Any]]:
    """Send every token's Check at once over one channel and collect the decisions."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        calls = [stub.Check.future(check_request(token=token, path="/api/me"), timeout=10) for token in tokens]
        return [describe(call.result()) for call in calls]


def test_flood_of_unknown_kids_refetches_at_most_once_per_cooldown_and_rotation_still_works(
    jwks: SwitchableJwks,
) -> None:
    """200 concurrent Checks naming 50 unknown kids, mixed with a newly published kid, cost one fetch per cooldown."""
    monotonic = FakeClock(1_000.0)
    unknown = [mint(kid=f"unknown-{index % 50}") for index in range(200)]
    rotated = [mint(key=rotated_key(), kid=ROTATED_KID) for _ in range(20)]
    tokens = [token for group in zip(unknown[:20], rotated, strict=True) for token in group] + unknown[20:]
    with start(jwks.url, monotonic, grpc_workers=32) as server:
        warm(server)
        jwks.body = rotated_document()
        for round_trip in range(3):
            if round_trip != 1:  # the second flood comes inside the same cooldown as the first
                monotonic.advance(COOLDOWN)
            before = jwks.requests
            results = _flood(server, tokens)
            assert jwks.requests - before == (0 if round_trip == 1 else 1)
            rotated_results = [r for token, r in zip(tokens, results, strict=True) if token in rotated]
            assert len(rotated_results) == 20 and all(r["allowed"] for r in rotated_results)
            for token, result in zip(tokens, results, strict=True):
                if token not in rotated:
                    assert_unknown_kid(result)
        assert health(server) == {SERVING}
        assert check_token(server, mint())["allowed"]
        assert jwks.requests == 3
