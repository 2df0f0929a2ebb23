"""authz/getuser.py: Cognito's GetUser as one plain HTTP call, answering as the botocore lookup does.

What Cognito says about a token is checked against the local Cognito emulator (moto's server), with botocore's
lookup beside ours; what Cognito cannot be made to do on demand (throttle, fail, stall, trickle, redirect, answer
too much or in another shape) against a fault server on loopback that records every request and connection.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from authz.getuser import (
    CONTENT_TYPE,
    MAX_BODY_BYTES,
    TARGET,
    CognitoError,
    GetUserFailed,
    GetUserMalformed,
    GetUserTimeout,
    GetUserUnreachable,
    endpoint_for,
    error_code,
    get_user_lookup,
)
from authz.revocation import REVOKED_ERROR_CODES, Lookup, Status, _describe
from bench.getuser_cost import botocore_lookup
from stack.cognito import Provisioned, register, sign_in
from stack.processes import free_port
from tests.conftest import POOL_ID, LoopbackHttp, closed_at_exit, mint

TIMEOUT = 0.5
TOKEN = mint()
USER = {"Username": "andrew", "UserAttributes": [{"Name": "sub", "Value": "7c0a1d2e"}]}
PASSWORD = "GetUser-Passw0rd!"


# ------------------------------------------------------------------------------------- the fault server


@dataclass(frozen=True)
class Seen:
    """One request as the fault server read it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Reply = Callable[[BaseHTTPRequestHandler, threading.Event], None]


class FaultCognito(LoopbackHttp):
    """A loopback endpoint answering each request with `reply`, counting requests and TCP connections. `release`
    is set at close, so a reply that stalls never outlives its test."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.seen: list[Seen] = []
        self.connections = 0
        self.release = threading.Event()
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so pooled connections show as such
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with lock:
                    outer.connections += 1

            def handle(self) -> None:
                with contextlib.suppress(OSError):  # the client hung up mid-answer, as several tests expect it to
                    super().handle()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with lock:
                    outer.seen.append(Seen(self.command, self.path, headers, body))
                outer.reply(self, outer.release)

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.release.set()
        super().close()

    @property
    def requests(self) -> int:
        return len(self.seen)


def answer(status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> Reply:
    """A reply of one HTTP status and body (a dict is sent as JSON), with Cognito's content type."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()

    def reply(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", CONTENT_TYPE)
        handler.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(raw)

    return reply


def stall(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
    """Reads the request and never answers."""
    release.wait(30)
    handler.close_connection = True


def trickle(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
    """Declares a small valid-looking body and sends it a byte every 50 ms: each read is quick, the whole slow."""
    handler.send_response(200)
    handler.send_header("Content-Type", CONTENT_TYPE)
    handler.send_header("Content-Length", "4000")
    handler.end_headers()
    handler.close_connection = True
    for _ in range(4000):
        if release.wait(0.05):
            return
        handler.wfile.write(b" ")
        handler.wfile.flush()


def flood(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
    """A 200 with no Content-Length, ended by closing the connection, twice the cap long."""
    handler.send_response(200)
    handler.send_header("Content-Type", CONTENT_TYPE)
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.close_connection = True
    for _ in range(2 * MAX_BODY_BYTES // 65_536):
        handler.wfile.write(b" " * 65_536)


@pytest.fixture
def fault() -> Iterator[Callable[[Reply], FaultCognito]]:
    with closed_at_exit(FaultCognito) as start:
        yield start


def lookup_at(server: FaultCognito, *, workers: int = 2, path: str = "") -> Lookup:
    return get_user_lookup(endpoint_url=server.url + path, timeout=TIMEOUT, workers=workers)


# --------------------------------------------------------------------------- Cognito's answers (emulator)


def signed_in(cognito: Any, pool: Provisioned) -> tuple[str, str]:
    """A new user of the emulator's pool, signed up, confirmed and signed in: (username, access token)."""
    email = f"getuser-{uuid.uuid4().hex[:10]}@cruddur.local"
    register(cognito, pool.pool_id, pool.client_id, email=email, password=PASSWORD, name="Get User", handle="getuser")
    return email, sign_in(cognito, pool.client_id, email, PASSWORD)["AccessToken"]


BOTH = pytest.mark.parametrize("make", [get_user_lookup, botocore_lookup], ids=["direct", "botocore"])


@pytest.mark.emulator
@BOTH
def test_a_live_users_token_is_active(emulator, cognito, pool, make):
    """A signed-in user's access token is ACTIVE, through our call as through botocore's."""
    _, token = signed_in(cognito, pool)
    lookup = make(endpoint_url=emulator, timeout=5.0, workers=2)

    assert lookup(pool.pool_id, token) is Status.ACTIVE


@pytest.mark.emulator
@BOTH
def test_a_globally_signed_out_token_is_revoked(emulator, cognito, pool, make):
    """After an admin global sign-out the user's access token is REVOKED, through our call as through botocore's."""
    username, token = signed_in(cognito, pool)
    lookup = make(endpoint_url=emulator, timeout=5.0, workers=2)
    assert lookup(pool.pool_id, token) is Status.ACTIVE

    cognito.admin_user_global_sign_out(UserPoolId=pool.pool_id, Username=username)

    assert lookup(pool.pool_id, token) is Status.REVOKED


@pytest.mark.emulator
@BOTH
@pytest.mark.parametrize("action", ["admin_disable_user", "admin_delete_user"])
def test_a_disabled_or_deleted_users_token_is_revoked(emulator, cognito, pool, make, action):
    """A disabled or deleted user's access token is REVOKED, through our call as through botocore's."""
    username, token = signed_in(cognito, pool)
    lookup = make(endpoint_url=emulator, timeout=5.0, workers=2)

    getattr(cognito, action)(UserPoolId=pool.pool_id, Username=username)

    assert lookup(pool.pool_id, token) is Status.REVOKED


# ------------------------------------------------------------------------------------ the request itself


def test_the_call_is_an_unsigned_json_post_to_getuser(fault):
    """The call is a POST of {"AccessToken": ...} with GetUser's target and JSON 1.1 type, and no AWS signature,
    credentials or cookies: the token is its only credential."""
    server = fault(answer(200, USER))

    assert lookup_at(server)(POOL_ID, TOKEN) is Status.ACTIVE

    (seen,) = server.seen
    assert (seen.method, seen.path) == ("POST", "/")
    assert seen.headers["x-amz-target"] == TARGET == "AWSCognitoIdentityProviderService.GetUser"
    assert seen.headers["content-type"] == CONTENT_TYPE == "application/x-amz-json-1.1"
    assert json.loads(seen.body) == {"AccessToken": TOKEN}
    signing = {"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "cookie"}
    assert not signing & set(seen.headers)


def test_an_endpoint_url_with_a_path_is_posted_to_as_given(fault):
    """An endpoint URL with a path is posted to at that path, as botocore does; one without is posted to at /."""
    server = fault(answer(200, USER))

    lookup_at(server, path="/cognito")(POOL_ID, TOKEN)
    lookup_at(server, path="/")(POOL_ID, TOKEN)

    assert [seen.path for seen in server.seen] == ["/cognito", "/"]


def test_a_proxy_from_the_environment_is_used(fault, monkeypatch):
    """HTTP_PROXY in the environment carries the call, as it does botocore's: the proxy is asked for the endpoint's
    absolute URL."""
    server = fault(answer(200, USER))
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    endpoint = "http://cognito-idp.ca-central-1.example.invalid"

    assert get_user_lookup(endpoint_url=endpoint, timeout=TIMEOUT, workers=1)(POOL_ID, TOKEN) is Status.ACTIVE

    assert [seen.path for seen in server.seen] == [endpoint + "/"]


# -------------------------------------------------------------------------------------- Cognito's errors


@pytest.mark.parametrize("code", sorted(REVOKED_ERROR_CODES))
def test_each_revoked_error_code_is_revoked(fault, code):
    """A 400 naming any of REVOKED_ERROR_CODES in __type is REVOKED, after one request."""
    server = fault(answer(400, {"__type": code, "message": "refused"}))

    assert lookup_at(server)(POOL_ID, TOKEN) is Status.REVOKED
    assert server.requests == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "TooManyRequestsException"),
        (400, "ThrottlingException"),
        (400, "InvalidParameterException"),
        (403, "ForbiddenException"),
        (500, "InternalErrorException"),
        (503, "ServiceUnavailable"),
    ],
)
def test_any_other_error_raises_with_its_code_after_one_request(fault, status, code):
    """Throttling, another 4xx, a WAF's refusal and a 5xx raise a CognitoError carrying the status and code (for
    the checker to call UNKNOWN), after exactly one request: no retries."""
    server = fault(answer(status, {"__type": code, "message": "Rate exceeded"}))

    with pytest.raises(CognitoError) as raised:
        lookup_at(server)(POOL_ID, TOKEN)

    assert (raised.value.status, raised.value.code) == (status, code)
    assert server.requests == 1


def test_a_5xx_naming_a_revoked_code_still_raises(fault):
    """A 500 is Cognito failing even when its body names NotAuthorizedException: it raises, never REVOKED (which
    would be kept until the token expires)."""
    server = fault(answer(500, {"__type": "NotAuthorizedException"}))

    with pytest.raises(CognitoError):
        lookup_at(server)(POOL_ID, TOKEN)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, {"__type": "com.amazonaws.cognito.identity.idp.model#NotAuthorizedException", "message": "revoked"}),
        ({}, {"__type": "aws.cognito#NotAuthorizedException:http://internal.amazon.com/coral/validate/"}),
        ({"x-amzn-ErrorType": "NotAuthorizedException:http://internal.amazon.com/coral/validate/"}, {}),
        ({"x-amzn-ErrorType": "NotAuthorizedException:"}, {"__type": "TooManyRequestsException"}),
        ({}, {"code": "aws.cognito#UserNotFoundException"}),
    ],
    ids=["dunder-type-namespace", "dunder-type-namespace-url", "header-url", "header-over-body", "code"],
)
def test_the_error_code_is_read_in_every_shape_aws_json_uses(fault, headers, body):
    """The code is read from x-amzn-ErrorType, else the body's code, else __type, without its namespace# prefix or
    :url suffix, so each of these is REVOKED."""
    server = fault(answer(400, body, headers))

    assert lookup_at(server)(POOL_ID, TOKEN) is Status.REVOKED


def test_an_error_without_a_code_raises_with_its_status(fault):
    """An error answer naming no code (a proxy's HTML page) raises with the HTTP status as its code, as botocore's
    ClientError has it."""
    server = fault(answer(502, b"<html>Bad Gateway</html>"))

    with pytest.raises(CognitoError) as raised:
        lookup_at(server)(POOL_ID, TOKEN)

    assert raised.value.code is None
    assert raised.value.response["Error"]["Code"] == "502"


def test_the_checker_log_names_the_error_code(fault):
    """The checker's log line (_describe) names a CognitoError's AWS code, as it names botocore's ClientError's."""
    server = fault(answer(400, {"__type": "TooManyRequestsException"}))

    with pytest.raises(CognitoError) as raised:
        lookup_at(server)(POOL_ID, TOKEN)

    assert _describe(raised.value) == "CognitoError:TooManyRequestsException"


# --------------------------------------------------------------------------------------- transport faults


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed(fault, status):
    """A 3xx raises with its status and is not followed: the token goes to the configured endpoint only."""
    server = fault(answer(status, b"", {"Location": "/elsewhere"}))

    with pytest.raises(CognitoError) as raised:
        lookup_at(server)(POOL_ID, TOKEN)

    assert raised.value.status == status
    assert [seen.path for seen in server.seen] == ["/"]


def test_a_server_that_never_answers_raises_within_the_timeout(fault):
    """A server that reads the request and never answers raises GetUserTimeout, well within three timeouts, after
    one request."""
    server = fault(stall)

    started = time.monotonic()
    with pytest.raises(GetUserTimeout):
        lookup_at(server)(POOL_ID, TOKEN)

    assert time.monotonic() - started < 3 * TIMEOUT
    assert server.requests == 1


def test_a_trickling_body_is_cut_by_the_whole_call_deadline(fault):
    """A body sent a byte at a time, each read well within the timeout, is cut off by the whole call's deadline
    (twice the timeout) with GetUserTimeout, long before it would end."""
    server = fault(trickle)

    started = time.monotonic()
    with pytest.raises(GetUserTimeout):
        lookup_at(server)(POOL_ID, TOKEN)

    assert time.monotonic() - started < 4 * TIMEOUT  # 200 s to send it all; the deadline and one read, at most
    assert server.requests == 1


@pytest.mark.parametrize(
    "reply",
    [answer(200, b" " * (MAX_BODY_BYTES + 1)), flood],
    ids=["declared", "undeclared"],
)
def test_a_body_over_the_cap_raises(fault, reply):
    """A body over the cap raises GetUserMalformed("too_large"), whether its Content-Length says so or it just keeps
    coming."""
    server = fault(reply)

    with pytest.raises(GetUserMalformed) as raised:
        lookup_at(server)(POOL_ID, TOKEN)

    assert raised.value.detail == "too_large"


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (answer(200, b"<html>Welcome to the hotel wifi</html>"), "not_json"),
        (answer(200, b""), "not_json"),
        (answer(200, {"__type": "NotAuthorizedException"}), "no_user"),
        (answer(200, b"[]"), "no_user"),
        (answer(200, json.dumps(USER).encode(), {"Content-Encoding": "gzip"}), "encoded"),
    ],
    ids=["html", "empty", "no-username", "not-an-object", "compressed"],
)
def test_a_200_that_is_not_getusers_answer_raises(fault, reply, detail):
    """A 200 whose body is not a user (not JSON, empty, no Username, compressed unasked) raises GetUserMalformed,
    never ACTIVE."""
    server = fault(reply)

    with pytest.raises(GetUserMalformed) as raised:
        lookup_at(server)(POOL_ID, TOKEN)

    assert raised.value.detail == detail


def test_nothing_listening_raises_unreachable():
    """A refused connection raises GetUserUnreachable, at once."""
    lookup = get_user_lookup(endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=TIMEOUT, workers=1)

    with pytest.raises(GetUserUnreachable):
        lookup(POOL_ID, TOKEN)


def test_a_connection_dropped_before_the_answer_is_not_retried(fault):
    """A server that hangs up without answering raises GetUserUnreachable after exactly one request."""

    def hang_up(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
        handler.close_connection = True

    server = fault(hang_up)

    with pytest.raises(GetUserUnreachable):
        lookup_at(server)(POOL_ID, TOKEN)

    assert server.requests == 1


# ------------------------------------------------------------------------------------ the token stays out


def test_no_failure_carries_the_token(fault):
    """Whatever fails, and even when the answer echoes the token back (in __type, the message or the header), the
    exception's str, repr, log description and chain hold neither the token nor the request body."""

    def echo(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
        answer(400, {"__type": TOKEN, "message": f"bad token {TOKEN}"}, {"x-amzn-ErrorType": TOKEN})(handler, release)

    failures: list[GetUserFailed] = []
    for reply in (echo, answer(400, {"__type": f"x#{TOKEN}"}), answer(200, TOKEN.encode()), stall):
        with pytest.raises(GetUserFailed) as raised:
            lookup_at(fault(reply))(POOL_ID, TOKEN)
        failures.append(raised.value)
    with pytest.raises(GetUserFailed) as refused:
        get_user_lookup(endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=TIMEOUT, workers=1)(POOL_ID, TOKEN)
    failures.append(refused.value)

    for failure in failures:
        for text in (str(failure), repr(failure), _describe(failure)):
            assert TOKEN not in text
            assert TOKEN.split(".")[2] not in text  # not even the signature alone
        assert failure.__cause__ is None
        assert failure.__suppress_context__ or failure.__context__ is None
    assert isinstance(failures[0], CognitoError)
    assert failures[0].code is None  # a code that is not a shape name is not kept


def test_an_error_code_that_is_not_a_shape_name_is_dropped():
    """error_code keeps only a shape name: a URL, free text or a JWT is no code."""
    assert error_code({}, {"__type": "Not Authorized"}) is None
    assert error_code({}, {"__type": TOKEN}) is None
    assert error_code({"x-amzn-ErrorType": "ThrottlingException:http://x/y"}, None) == "ThrottlingException"
    assert error_code({}, ["__type"]) is None


# ------------------------------------------------------------------------------------------ the pool


def test_connections_are_pooled_up_to_workers(fault):
    """`workers` concurrent calls open `workers` connections, and the next `workers` concurrent calls reuse them
    all: the pool keeps as many connections as calls can run at once."""
    workers = 4
    together = threading.Barrier(workers, timeout=5)

    def held(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
        together.wait()  # every call in flight at once, so none can reuse another's connection
        answer(200, USER)(handler, release)

    server = fault(held)
    lookup = lookup_at(server, workers=workers)

    with ThreadPoolExecutor(workers) as pool:
        for _ in range(2):
            answers = list(pool.map(lambda _: lookup(POOL_ID, TOKEN), range(workers)))
            assert answers == [Status.ACTIVE] * workers

    assert server.requests == 2 * workers
    assert server.connections == workers


# -------------------------------------------------------------------------------------------- endpoints


@pytest.fixture(scope="module")
def botocore_endpoints() -> Any:
    """botocore's own resolver of Cognito's user pool endpoints (its endpoint rule set and partitions)."""
    import botocore.loaders
    from botocore.endpoint_provider import EndpointProvider

    loader = botocore.loaders.Loader()
    return EndpointProvider(
        ruleset_data=loader.load_service_model("cognito-idp", "endpoint-rule-set-1"),
        partition_data=loader.load_data("partitions"),
    )


def botocore_regions() -> list[str]:
    """Every Region of every partition botocore knows, and one no partition claims."""
    import botocore.loaders

    partitions = botocore.loaders.Loader().load_data("partitions")["partitions"]
    named = [region for partition in partitions for region in partition["regions"] if not region.endswith("-global")]
    return [*named, "xx-nowhere-1"]


@pytest.mark.parametrize("fips", [False, True], ids=["regional", "fips"])
def test_every_regions_endpoint_is_botocores(botocore_endpoints, fips):
    """Each Region's endpoint (China's .amazonaws.com.cn, the ISO partitions', the EU sovereign cloud's, FIPS) is the
    one botocore resolves for Cognito's user pool API, where GetUser is posted at /."""
    regions = botocore_regions()
    assert {"cn-north-1", "us-gov-west-1", "ca-central-1"} <= set(regions)

    for region in regions:
        resolved = botocore_endpoints.resolve_endpoint(Region=region, UseFIPS=fips, UseDualStack=False)
        assert endpoint_for(region, fips=fips) == resolved.url + "/", region


# ------------------------------------------------------------------------------------------- TLS trust


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (a TLS-inspecting proxy's CA, as far as trust goes)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "getuser test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_the_ca_bundle_given_is_the_one_trusted(tmp_path: Path) -> None:
    """With ca_bundle (AWS_CA_BUNDLE) naming the CA of an endpoint's certificate, the call is ACTIVE over TLS; without
    it the same endpoint's certificate is not trusted and the lookup raises (no answer, never a guess)."""
    import ssl

    cert, key = _self_signed(tmp_path)
    cognito = FaultCognito(answer(200, USER))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    cognito._httpd.socket = context.wrap_socket(cognito._httpd.socket, server_side=True)
    url = f"https://127.0.0.1:{cognito.port}"
    try:
        trusted = get_user_lookup(endpoint_url=url, timeout=TIMEOUT, workers=1, ca_bundle=str(cert))
        assert trusted(POOL_ID, TOKEN) is Status.ACTIVE
        untrusted = get_user_lookup(endpoint_url=url, timeout=TIMEOUT, workers=1)
        with pytest.raises(GetUserFailed):
            untrusted(POOL_ID, TOKEN)
    finally:
        cognito.close()
