"""JWKS fetching, parsing, caching and refreshing, against a real JWKS endpoint on loopback.

Time is a FakeClock; the fetcher is faked only to hold a fetch open (single-flight) or to raise what no real
endpoint raises (a fetcher bug). Answers JwksServer cannot give (a redirect, a body with no Content-Length,
a stall mid-body) come from `ScriptedHttp`, a raw socket endpoint defined here.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from authz.errors import KeysUnavailable, UnknownSigningKey
from authz.jwks import JwksCache, JwksError, JwksRefresher, fetch_jwks, parse_jwks
from tests.conftest import (
    KID,
    FakeClock,
    JwksServer,
    Script,
    ScriptedHttp,
    b64url,
    jwks_document,
    private_key,
    public_jwk,
)

NEW_KID = "kid-2026-2"
MESSAGE = b"header.payload"

# --------------------------------------------------------------------------------------------- helpers


def signature(key: rsa.RSAPrivateKey, message: bytes = MESSAGE) -> bytes:
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def closed_port_url() -> str:
    """A loopback URL nothing listens on, so connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/.well-known/jwks.json"


# conftest's JwksServer takes up to half a second to shut down (serve_forever's default poll interval), which
# across this module's tests would cost many seconds; so each server here lives for the module and is reset
# to conftest's starting state before every test, which then sees exactly what a fresh fixture would give.


def _reset(server: JwksServer) -> JwksServer:
    server.body = jwks_document()
    server.status = 200
    server.delay = 0.0
    server.requests = 0
    return server


@pytest.fixture(scope="module")
def _module_jwks_servers() -> Iterator[tuple[JwksServer, JwksServer]]:
    servers = (JwksServer(), JwksServer())
    yield servers
    closers = [threading.Thread(target=server.close) for server in servers]  # each close takes ~0.5 s
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(timeout=5.0)


@pytest.fixture
def jwks_server(_module_jwks_servers: tuple[JwksServer, JwksServer]) -> JwksServer:
    return _reset(_module_jwks_servers[0])


@pytest.fixture
def other_jwks_server(_module_jwks_servers: tuple[JwksServer, JwksServer]) -> JwksServer:
    return _reset(_module_jwks_servers[1])


# ----------------------------------------------------------------------------------------- fetch_jwks


def test_fetch_returns_the_body_of_a_200_answer(jwks_server: JwksServer) -> None:
    """A 200 answer's body comes back byte for byte."""
    assert fetch_jwks(jwks_server.url, 2.0, 65_536) == jwks_server.body
    assert jwks_server.requests == 1


def test_fetch_accepts_a_body_of_exactly_max_bytes(jwks_server: JwksServer) -> None:
    """A body exactly at the size cap is still accepted."""
    jwks_server.body = b" " * 1_024
    assert fetch_jwks(jwks_server.url, 2.0, 1_024) == b" " * 1_024


@pytest.mark.parametrize("status", [500, 404, 503, 204])
def test_fetch_of_a_non_200_answer_is_an_http_error(jwks_server: JwksServer, status: int) -> None:
    """Any answer but 200 fails with the outcome 'http_error'."""
    jwks_server.status = status
    with pytest.raises(JwksError) as caught:
        fetch_jwks(jwks_server.url, 2.0, 65_536)
    assert caught.value.outcome == "http_error"


def test_fetch_of_a_body_declared_over_max_bytes_is_too_large(jwks_server: JwksServer) -> None:
    """A body whose honest Content-Length is over the cap fails with 'too_large'."""
    jwks_server.body = b" " * 1_025
    with pytest.raises(JwksError) as caught:
        fetch_jwks(jwks_server.url, 2.0, 1_024)
    assert caught.value.outcome == "too_large"


def test_fetch_refuses_a_declared_oversize_body_before_reading_it(
    scripted_http: Callable[[Script], ScriptedHttp],
) -> None:
    """A Content-Length over the cap is refused as 'too_large' at once, without waiting for a body that never comes."""

    def declare_and_stall(conn: socket.socket, release: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{")
        release.wait(5.0)

    server = scripted_http(declare_and_stall)
    with pytest.raises(JwksError) as caught:
        fetch_jwks(server.url, 2.0, 1_024)
    assert caught.value.outcome == "too_large"


def _undeclared_body(framing: str, size: int) -> Script:
    def script(conn: socket.socket, release: threading.Event) -> None:
        body = b" " * size
        if framing == "chunked":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            conn.sendall(head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        else:  # the body runs until the server closes the connection
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + body)

    return script


@pytest.mark.parametrize("framing", ["chunked", "until-close"])
def test_fetch_of_an_undeclared_body_over_max_bytes_is_too_large(
    scripted_http: Callable[[Script], ScriptedHttp], framing: str
) -> None:
    """A body with no Content-Length is cut off as 'too_large' once it passes the cap."""
    server = scripted_http(_undeclared_body(framing, 4_096))
    with pytest.raises(JwksError) as caught:
        fetch_jwks(server.url, 2.0, 1_024)
    assert caught.value.outcome == "too_large"


def test_fetch_of_an_undeclared_body_within_max_bytes_is_returned(
    scripted_http: Callable[[Script], ScriptedHttp],
) -> None:
    """A chunked body under the cap is read whole."""
    server = scripted_http(_undeclared_body("chunked", 1_000))
    assert fetch_jwks(server.url, 2.0, 1_024) == b" " * 1_000


def test_fetch_slower_than_the_timeout_is_a_timeout(jwks_server: JwksServer) -> None:
    """A server that answers later than the timeout fails the fetch with 'timeout', without waiting it out."""
    jwks_server.delay = 0.3
    started = time.monotonic()
    with pytest.raises(JwksError) as caught:
        fetch_jwks(jwks_server.url, 0.05, 65_536)
    assert caught.value.outcome == "timeout"
    assert time.monotonic() - started < 0.25


def test_fetch_stalling_mid_body_is_a_timeout(scripted_http: Callable[[Script], ScriptedHttp]) -> None:
    """A server that sends its headers and then stalls past the timeout fails the fetch with 'timeout'."""

    def stall(conn: socket.socket, release: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        release.wait(5.0)

    server = scripted_http(stall)
    with pytest.raises(JwksError) as caught:
        fetch_jwks(server.url, 0.1, 65_536)
    assert caught.value.outcome == "timeout"


def test_fetch_trickled_slower_than_the_timeout_in_total_is_a_timeout(
    scripted_http: Callable[[Script], ScriptedHttp],
) -> None:
    """A body trickled a byte at a time, each within the timeout but all of it well past it, ends in 'timeout'."""

    def trickle(conn: socket.socket, release: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n")
        for _ in range(20):
            conn.sendall(b" ")
            if release.wait(0.03):
                return

    server = scripted_http(trickle)
    started = time.monotonic()
    with pytest.raises(JwksError) as caught:
        fetch_jwks(server.url, 0.1, 65_536)
    assert caught.value.outcome == "timeout"
    assert time.monotonic() - started < 0.4


def test_fetch_from_a_closed_port_is_a_network_error() -> None:
    """A refused connection fails the fetch with 'network_error'."""
    with pytest.raises(JwksError) as caught:
        fetch_jwks(closed_port_url(), 2.0, 65_536)
    assert caught.value.outcome == "network_error"


def test_fetch_does_not_follow_a_redirect(
    scripted_http: Callable[[Script], ScriptedHttp], jwks_server: JwksServer
) -> None:
    """A redirect, even to a valid JWKS, is an 'http_error' and its target is never requested."""
    target = jwks_server.url.encode()

    def redirect(conn: socket.socket, release: threading.Event) -> None:
        head = b"HTTP/1.1 302 Found\r\nLocation: " + target + b"\r\n"
        conn.sendall(head + b"Content-Length: 0\r\nConnection: close\r\n\r\n")

    server = scripted_http(redirect)
    with pytest.raises(JwksError) as caught:
        fetch_jwks(server.url, 2.0, 65_536)
    assert caught.value.outcome == "http_error"
    assert server.requests == 1
    assert jwks_server.requests == 0


# ----------------------------------------------------------------------------------------- parse_jwks


def test_parse_yields_each_cognito_key_by_kid() -> None:
    """A Cognito-shaped document (two RS256 signing keys) yields each key under its kid, verifying its own tokens."""
    first, second = private_key("pool"), private_key("second")
    keys = parse_jwks(jwks_document(public_jwk(first, KID), public_jwk(second, NEW_KID)))

    assert set(keys) == {KID, NEW_KID}
    assert keys[KID].verify(MESSAGE, signature(first))
    assert keys[NEW_KID].verify(MESSAGE, signature(second))
    assert not keys[KID].verify(MESSAGE, signature(second))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'"keys"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"{}", id="no-keys"),
        pytest.param(b'{"keys": {}}', id="keys-object"),
        pytest.param(b'{"keys": "x"}', id="keys-string"),
        pytest.param(b'{"keys": []}', id="keys-empty"),
    ],
)
def test_parse_rejects_a_document_that_is_not_a_jwks(body: bytes) -> None:
    """A body that is not a JSON object with a 'keys' array of keys is rejected as 'invalid'."""
    with pytest.raises(JwksError) as caught:
        parse_jwks(body)
    assert caught.value.outcome == "invalid"


def test_parse_rejects_a_deeply_nested_document_as_invalid() -> None:
    """A hostile, deeply nested JSON body is rejected as 'invalid' rather than escaping as another exception."""
    with pytest.raises(JwksError) as caught:
        parse_jwks(b"[" * 60_000 + b"]" * 60_000)
    assert caught.value.outcome == "invalid"


def _ec_jwk(kid: str) -> dict[str, Any]:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
        "kid": kid,
        "use": "sig",
        "alg": "ES256",
    }


def _unfit_jwks() -> dict[str, Callable[[], Any]]:
    key = private_key()
    return {
        "ec-key": lambda: _ec_jwk("unfit"),
        "rsa-kty-ec": lambda: public_jwk(key, "unfit", kty="EC"),
        "use-enc": lambda: public_jwk(key, "unfit", use="enc"),
        "alg-rs384": lambda: public_jwk(key, "unfit", alg="RS384"),
        "alg-none": lambda: public_jwk(key, "unfit", alg="none"),
        "no-n": lambda: public_jwk(key, "unfit", n=None),
        "no-e": lambda: public_jwk(key, "unfit", e=None),
        "n-not-base64url": lambda: public_jwk(key, "unfit", n="!!!"),
        "1024-bit-modulus": lambda: public_jwk(
            rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 - the weak key the test refuses
            "unfit",
        ),
        "no-kid": lambda: public_jwk(key, None),
        "empty-kid": lambda: public_jwk(key, ""),
        "not-an-object": lambda: "a string",
    }


@pytest.mark.parametrize("unfit", list(_unfit_jwks()))
def test_parse_skips_keys_unfit_for_rs256_signatures(unfit: str) -> None:
    """A key of another type, use, algorithm or shape, or under 2048 bits, is skipped and a good one kept."""
    keys = parse_jwks(jwks_document(_unfit_jwks()[unfit](), public_jwk(private_key(), KID)))
    assert set(keys) == {KID}


def test_parse_accepts_a_key_without_use_or_alg() -> None:
    """An RSA key that omits the optional 'use' and 'alg' members is taken as an RS256 signing key."""
    keys = parse_jwks(jwks_document(public_jwk(private_key(), KID, use=None, alg=None)))
    assert keys[KID].verify(MESSAGE, signature(private_key()))


def test_parse_rejects_a_document_with_no_usable_key() -> None:
    """A document whose keys are all unfit (here: encryption keys) is rejected as 'invalid'."""
    with pytest.raises(JwksError) as caught:
        parse_jwks(jwks_document(public_jwk(private_key(), KID, use="enc")))
    assert caught.value.outcome == "invalid"


def test_parse_rejects_a_duplicate_kid() -> None:
    """Two keys under one kid make the document 'invalid' rather than one silently winning."""
    document = jwks_document(public_jwk(private_key("pool"), KID), public_jwk(private_key("second"), KID))
    with pytest.raises(JwksError) as caught:
        parse_jwks(document)
    assert caught.value.outcome == "invalid"


def test_parse_rejects_more_than_a_hundred_keys() -> None:
    """A document listing over 100 keys is rejected as 'invalid'."""
    jwk = public_jwk(private_key(), KID)
    document = json.dumps({"keys": [dict(jwk, kid=f"kid-{i}") for i in range(101)]}).encode()
    with pytest.raises(JwksError) as caught:
        parse_jwks(document)
    assert caught.value.outcome == "invalid"


def test_parse_never_uses_private_members_of_a_jwk() -> None:
    """A JWK that leaks its private members ('d', 'p', ...) still yields a public-only key that verifies."""
    key = private_key()
    numbers = key.private_numbers()

    def uint(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    leaked = public_jwk(
        key,
        KID,
        d=uint(numbers.d),
        p=uint(numbers.p),
        q=uint(numbers.q),
        dp=uint(numbers.dmp1),
        dq=uint(numbers.dmq1),
        qi=uint(numbers.iqmp),
    )
    built = parse_jwks(jwks_document(leaked))[KID]

    assert built.is_public()
    assert "d" not in built.to_dict()
    assert built.verify(MESSAGE, signature(key))


# ------------------------------------------------------------------------------------------- JwksCache


def test_known_kid_is_served_from_the_cache_after_the_first_fetch(jwks_server: JwksServer, clock: FakeClock) -> None:
    """Repeated lookups of a known kid cost one fetch in all."""
    cache = JwksCache(jwks_server.url, clock=clock)
    for _ in range(5):
        assert cache.get_key(KID).verify(MESSAGE, signature(private_key()))
    assert jwks_server.requests == 1


def test_keys_come_from_the_next_url_when_the_first_refuses(
    jwks_server: JwksServer, other_jwks_server: JwksServer, clock: FakeClock
) -> None:
    """A pool's keys at two URLs (its issuer formats): the first answering 403 (the UPDATED URL of a pool that never
    switched, aws-jwt-verify#279) does not keep the keys from loading, and the URL that answered is asked first
    from then on."""
    jwks_server.status = 403
    outcomes: list[tuple[str, int]] = []
    cache = JwksCache(
        (jwks_server.url, other_jwks_server.url), clock=clock, on_fetch=lambda *fetch: outcomes.append(fetch)
    )
    assert cache.refresh()
    assert cache.get_key(KID).verify(MESSAGE, signature(private_key()))
    assert (jwks_server.requests, other_jwks_server.requests) == (1, 1)
    assert outcomes == [("ok", 1)]
    assert cache.refresh()
    assert (jwks_server.requests, other_jwks_server.requests) == (1, 2)


def test_the_second_url_is_never_asked_while_the_first_answers(
    jwks_server: JwksServer, other_jwks_server: JwksServer, clock: FakeClock
) -> None:
    cache = JwksCache((jwks_server.url, other_jwks_server.url), clock=clock)
    assert cache.refresh() and cache.refresh()
    assert (jwks_server.requests, other_jwks_server.requests) == (2, 0)


def test_every_url_failing_keeps_the_last_keys_and_reports_the_last_failure(
    jwks_server: JwksServer, other_jwks_server: JwksServer, clock: FakeClock
) -> None:
    outcomes: list[tuple[str, int]] = []
    cache = JwksCache(
        (jwks_server.url, other_jwks_server.url), clock=clock, on_fetch=lambda *fetch: outcomes.append(fetch)
    )
    assert cache.refresh()
    jwks_server.status = other_jwks_server.status = 503
    assert cache.refresh()  # still loaded: the last good keys stay
    assert outcomes == [("ok", 1), ("http_error", 1)]
    assert (jwks_server.requests, other_jwks_server.requests) == (2, 1)
    assert cache.get_key(KID).verify(MESSAGE, signature(private_key()))


def test_unknown_kid_within_the_cooldown_of_the_first_load_does_not_refetch(
    jwks_server: JwksServer, clock: FakeClock
) -> None:
    """Keys loaded moments ago are not refetched for an unknown kid until the cooldown has passed."""
    cache = JwksCache(jwks_server.url, clock=clock, cooldown=10.0)
    cache.get_key(KID)

    with pytest.raises(UnknownSigningKey):
        cache.get_key("unknown")
    assert jwks_server.requests == 1


def test_unknown_kid_refetches_at_most_once_per_cooldown(jwks_server: JwksServer, clock: FakeClock) -> None:
    """An unknown kid refetches once; further unknown kids within the cooldown do not; after it, they do again."""
    cache = JwksCache(jwks_server.url, clock=clock, cooldown=10.0)
    cache.get_key(KID)
    assert jwks_server.requests == 1
    clock.advance(10.0)  # the first load is itself a fetch, so it opens a cooldown too

    with pytest.raises(UnknownSigningKey):
        cache.get_key("unknown-1")
    assert jwks_server.requests == 2

    clock.advance(9.999)
    with pytest.raises(UnknownSigningKey):
        cache.get_key("unknown-2")
    assert jwks_server.requests == 2

    clock.advance(0.001)
    with pytest.raises(UnknownSigningKey):
        cache.get_key("unknown-3")
    assert jwks_server.requests == 3


def test_rotated_in_key_resolves_after_a_refetch_without_restart(jwks_server: JwksServer, clock: FakeClock) -> None:
    """Once the pool publishes a new kid, a token naming it is served its key by the same cache."""
    cache = JwksCache(jwks_server.url, clock=clock, cooldown=10.0)
    cache.get_key(KID)

    new_key = private_key("second")
    jwks_server.body = jwks_document(public_jwk(private_key(), KID), public_jwk(new_key, NEW_KID))
    clock.advance(10.0)

    assert cache.get_key(NEW_KID).verify(MESSAGE, signature(new_key))
    assert cache.get_key(KID).verify(MESSAGE, signature(private_key()))
    assert cache.kids == {KID, NEW_KID}
    assert jwks_server.requests == 2


def test_rotated_out_key_stops_resolving_after_a_refresh(jwks_server: JwksServer, clock: FakeClock) -> None:
    """A kid the pool no longer publishes is unknown after the next successful refresh."""
    cache = JwksCache(jwks_server.url, clock=clock)
    cache.get_key(KID)

    jwks_server.body = jwks_document(public_jwk(private_key("second"), NEW_KID))
    assert cache.refresh()

    with pytest.raises(UnknownSigningKey):
        cache.get_key(KID)
    assert cache.kids == {NEW_KID}


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 500}, id="http-500"),
        pytest.param({"body": b"<html>maintenance</html>"}, id="not-json"),
        pytest.param({"body": jwks_document(public_jwk(private_key(), KID, use="enc"))}, id="no-usable-key"),
    ],
)
def test_failed_refresh_keeps_the_last_good_keys(
    jwks_server: JwksServer, clock: FakeClock, fault: dict[str, Any]
) -> None:
    """A refresh that gets an error answer or an invalid document leaves the previous keys in service."""
    outcomes: list[tuple[str, int]] = []
    cache = JwksCache(jwks_server.url, clock=clock, on_fetch=lambda outcome, count: outcomes.append((outcome, count)))
    assert cache.refresh()

    for name, value in fault.items():
        setattr(jwks_server, name, value)
    assert cache.refresh()

    assert jwks_server.requests == 2
    assert cache.get_key(KID).verify(MESSAGE, signature(private_key()))
    assert outcomes[0] == ("ok", 1)
    assert outcomes[1][0] != "ok" and outcomes[1][1] == 1


def test_failed_unknown_kid_refetch_keeps_the_last_good_keys(jwks_server: JwksServer, clock: FakeClock) -> None:
    """An unknown-kid refetch that fails leaves the known kids resolving."""
    cache = JwksCache(jwks_server.url, clock=clock)
    cache.get_key(KID)
    jwks_server.status = 500
    clock.advance(10.0)

    with pytest.raises(UnknownSigningKey):
        cache.get_key(NEW_KID)
    assert jwks_server.requests == 2
    assert cache.get_key(KID).verify(MESSAGE, signature(private_key()))


@pytest.mark.parametrize("unreachable", ["http-503", "refused"])
def test_keys_never_loaded_are_unavailable(jwks_server: JwksServer, clock: FakeClock, unreachable: str) -> None:
    """When the pool's keys have never loaded, a lookup fails with KeysUnavailable (503), not an unknown kid."""
    if unreachable == "http-503":
        jwks_server.status = 503
        url = jwks_server.url
    else:
        url = closed_port_url()
    cache = JwksCache(url, clock=clock, timeout=1.0)

    with pytest.raises(KeysUnavailable) as caught:
        cache.get_key(KID)
    assert caught.value.http_status == 503
    assert not cache.loaded


def test_unknown_kid_in_a_loaded_cache_is_an_unknown_signing_key(jwks_server: JwksServer, clock: FakeClock) -> None:
    """With keys loaded, a kid the pool does not publish fails with UnknownSigningKey naming that kid."""
    cache = JwksCache(jwks_server.url, clock=clock)
    cache.get_key(KID)

    with pytest.raises(UnknownSigningKey) as caught:
        cache.get_key("not-a-published-kid")
    assert caught.value.kid == "not-a-published-kid"
    assert caught.value.http_status == 401


def _blocked_inside_get_key(thread: threading.Thread) -> bool:
    """True when the thread is parked in a wait somewhere under JwksCache.get_key."""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None or frame.f_code.co_name != "wait":
        return False
    while frame is not None:
        if frame.f_code.co_name == "get_key" and frame.f_code.co_filename.endswith("jwks.py"):
            return True
        frame = frame.f_back
    return False


def test_concurrent_misses_share_one_fetch(jwks_server: JwksServer, clock: FakeClock) -> None:
    """Twenty lookups that miss at once cause exactly one fetch, and every one of them gets the key."""
    gate = threading.Event()

    def gated_fetch(url: str, timeout: float, max_bytes: int) -> bytes:
        gate.wait(5.0)
        return fetch_jwks(url, timeout, max_bytes)

    # cooldown=0 so that only single-flight, not the cooldown, can keep the other threads from fetching.
    cache = JwksCache(jwks_server.url, fetcher=gated_fetch, clock=clock, cooldown=0.0, timeout=5.0)
    results: list[object] = []

    def lookup() -> None:
        try:
            results.append(cache.get_key(KID))
        except Exception as exc:  # noqa: BLE001 - recorded, so the assertion shows whatever it was
            results.append(exc)

    threads = [threading.Thread(target=lookup) for _ in range(20)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5.0
    while not all(_blocked_inside_get_key(t) for t in threads) and time.monotonic() < deadline:
        time.sleep(0.001)  # polling for the threads to park, not waiting out a duration
    assert all(_blocked_inside_get_key(t) for t in threads), "the 20 lookups never all got under way"
    gate.set()
    for thread in threads:
        thread.join(timeout=5.0)

    assert jwks_server.requests == 1
    assert len(results) == 20
    assert all(not isinstance(result, Exception) for result in results), results


def test_fetcher_raising_unexpectedly_keeps_the_keys_and_does_not_propagate(clock: FakeClock) -> None:
    """A fetcher that raises RuntimeError is reported as an 'error' fetch; the old keys stay and nothing is raised."""
    calls: list[str] = []
    outcomes: list[str] = []

    def flaky_fetch(url: str, timeout: float, max_bytes: int) -> bytes:
        calls.append(url)
        if len(calls) == 1:
            return jwks_document()
        raise RuntimeError("fetcher bug")

    cache = JwksCache(
        "https://example.invalid/jwks.json",
        fetcher=flaky_fetch,
        clock=clock,
        on_fetch=lambda outcome, count: outcomes.append(outcome),
    )
    assert cache.refresh()
    assert cache.refresh()
    clock.advance(60.0)
    with pytest.raises(UnknownSigningKey):
        cache.get_key(NEW_KID)

    assert len(calls) == 3
    assert outcomes == ["ok", "error", "error"]
    assert cache.get_key(KID).verify(MESSAGE, signature(private_key()))


def test_fetcher_raising_unexpectedly_before_any_load_means_keys_unavailable(clock: FakeClock) -> None:
    """A fetcher bug on the first load surfaces to the caller as KeysUnavailable, not as the RuntimeError."""

    def broken_fetch(url: str, timeout: float, max_bytes: int) -> bytes:
        raise RuntimeError("fetcher bug")

    cache = JwksCache("https://example.invalid/jwks.json", fetcher=broken_fetch, clock=clock)
    assert not cache.refresh()
    clock.advance(60.0)
    with pytest.raises(KeysUnavailable):
        cache.get_key(KID)


def test_new_cache_is_due_for_refresh_at_once(jwks_server: JwksServer, clock: FakeClock) -> None:
    """A cache that has never fetched is due now."""
    assert JwksCache(jwks_server.url, clock=clock).due_in() <= 0


def test_next_refresh_is_due_one_ttl_after_a_success(jwks_server: JwksServer, clock: FakeClock) -> None:
    """After a successful fetch the next refresh is due exactly one TTL later."""
    cache = JwksCache(jwks_server.url, clock=clock, ttl=900.0)
    assert cache.refresh()
    assert cache.due_in() == 900.0
    clock.advance(899.0)
    assert cache.due_in() == 1.0
    clock.advance(1.0)
    assert cache.due_in() == 0.0


def test_failed_refreshes_back_off_exponentially_up_to_thirty_seconds(
    jwks_server: JwksServer, clock: FakeClock
) -> None:
    """Each failed refresh doubles the retry delay from 0.5 s up to 30 s, and a success resets it to the TTL."""
    cache = JwksCache(jwks_server.url, clock=clock, ttl=900.0)
    jwks_server.status = 500

    delays = []
    for _ in range(8):
        assert not cache.refresh()
        delays.append(cache.due_in())
        clock.advance(cache.due_in())
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert jwks_server.requests == 8

    jwks_server.status = 200
    assert cache.refresh()
    assert cache.due_in() == 900.0

    jwks_server.status = 500
    assert cache.refresh()  # the keys just loaded stay in service
    assert cache.due_in() == 0.5


def test_failed_refresh_backoff_never_exceeds_the_ttl(jwks_server: JwksServer, clock: FakeClock) -> None:
    """With a TTL under 30 s, the retry delay is capped at the TTL."""
    cache = JwksCache(jwks_server.url, clock=clock, ttl=1.5)
    jwks_server.status = 500

    delays = []
    for _ in range(4):
        cache.refresh()
        delays.append(cache.due_in())
    assert delays == [0.5, 1.0, 1.5, 1.5]


# --------------------------------------------------------------------------------------- JwksRefresher


class ReadyCounter:
    def __init__(self) -> None:
        self.calls = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.event.set()


def test_tick_loads_every_pool_and_reports_ready_exactly_once(
    jwks_server: JwksServer, other_jwks_server: JwksServer, clock: FakeClock
) -> None:
    """The first tick loads every pool and calls on_ready once; later ticks, even refreshing, never call it again."""
    caches = [JwksCache(s.url, clock=clock, ttl=100.0) for s in (jwks_server, other_jwks_server)]
    on_ready = ReadyCounter()
    refresher = JwksRefresher(caches, on_ready=on_ready, max_wait=5.0)

    refresher.tick()
    assert (jwks_server.requests, other_jwks_server.requests) == (1, 1)
    assert refresher.ready
    assert on_ready.calls == 1

    refresher.tick()
    clock.advance(100.0)
    refresher.tick()
    assert (jwks_server.requests, other_jwks_server.requests) == (2, 2)
    assert on_ready.calls == 1


def test_tick_refreshes_only_the_pools_that_are_due(
    jwks_server: JwksServer, other_jwks_server: JwksServer, clock: FakeClock
) -> None:
    """A tick fetches the pools whose refresh is due and leaves the others alone."""
    early = JwksCache(jwks_server.url, clock=clock, ttl=100.0)
    late = JwksCache(other_jwks_server.url, clock=clock, ttl=200.0)
    refresher = JwksRefresher([early, late], max_wait=1_000.0)
    refresher.tick()

    clock.advance(150.0)
    refresher.tick()
    assert (jwks_server.requests, other_jwks_server.requests) == (2, 1)

    clock.advance(60.0)
    refresher.tick()
    assert (jwks_server.requests, other_jwks_server.requests) == (2, 2)


def test_no_ready_while_any_pool_fails_to_load(
    jwks_server: JwksServer, other_jwks_server: JwksServer, clock: FakeClock
) -> None:
    """on_ready waits until every pool has loaded: not while one fails, and once it recovers, exactly once."""
    other_jwks_server.status = 500
    caches = [JwksCache(s.url, clock=clock) for s in (jwks_server, other_jwks_server)]
    on_ready = ReadyCounter()
    refresher = JwksRefresher(caches, on_ready=on_ready)

    assert refresher.tick() == 0.5
    clock.advance(0.5)
    refresher.tick()
    assert other_jwks_server.requests == 2
    assert on_ready.calls == 0
    assert not refresher.ready

    other_jwks_server.status = 200
    clock.advance(1.0)
    refresher.tick()
    refresher.tick()
    assert refresher.ready
    assert on_ready.calls == 1


def test_tick_returns_the_wait_until_the_next_due_refresh(
    jwks_server: JwksServer, other_jwks_server: JwksServer, clock: FakeClock
) -> None:
    """After loading, tick asks to wait until the soonest due refresh."""
    caches = [
        JwksCache(jwks_server.url, clock=clock, ttl=100.0),
        JwksCache(other_jwks_server.url, clock=clock, ttl=300.0),
    ]
    refresher = JwksRefresher(caches, max_wait=1_000.0)
    assert refresher.tick() == 100.0
    clock.advance(40.0)
    assert refresher.tick() == 60.0


def test_tick_wait_is_bounded_by_max_wait(jwks_server: JwksServer, clock: FakeClock) -> None:
    """However far off the next refresh, tick never asks to wait longer than max_wait."""
    refresher = JwksRefresher([JwksCache(jwks_server.url, clock=clock, ttl=900.0)], max_wait=5.0)
    assert refresher.tick() == 5.0


def test_tick_wait_after_a_failure_is_the_retry_backoff(jwks_server: JwksServer, clock: FakeClock) -> None:
    """After a failed load, tick asks to wait only the backoff before retrying."""
    jwks_server.status = 500
    refresher = JwksRefresher([JwksCache(jwks_server.url, clock=clock)], max_wait=5.0)
    assert refresher.tick() == 0.5
    clock.advance(0.5)
    assert refresher.tick() == 1.0


def test_started_refresher_loads_keys_and_reports_ready(jwks_server: JwksServer) -> None:
    """The refresher's own thread loads a real endpoint's keys and calls on_ready, and stops when asked."""
    cache = JwksCache(jwks_server.url, timeout=2.0)
    on_ready = ReadyCounter()
    refresher = JwksRefresher([cache], on_ready=on_ready, max_wait=0.05)
    refresher.start()
    try:
        assert on_ready.event.wait(5.0)
    finally:
        refresher.stop()
    assert cache.get_key(KID).verify(MESSAGE, signature(private_key()))
    assert on_ready.calls == 1
