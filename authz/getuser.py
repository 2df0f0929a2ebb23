"""Cognito's GetUser as one plain HTTP call: the revocation lookup without botocore.

GetUser is a JSON 1.1 call (POST `/` with `X-Amz-Target: AWSCognitoIdentityProviderService.GetUser`, body
`{"AccessToken": ...}`) that the access token itself authorizes: no AWS credentials, no signature. Through botocore
each call costs most of a millisecond of CPU in request building, event hooks and response parsing. Here requests
builds each endpoint's urllib3 connection pool once (TLS verification, CA bundle, proxy), each call goes straight
to that pool, and only what the answer needs is read: well under half the CPU (bench/getuser_cost.py).

Each lookup is one attempt (no retries, no redirects followed). `timeout` bounds the connection and each read, and
twice the timeout the whole call: a server trickling its body is cut off within three timeouts of the call's start
(the deadline is checked between reads). The body is capped at `max_bytes`. A server trickling its status line and
headers is bounded only per read, as it is in botocore, until the headers end.

Cognito's answer is mapped as the checker expects: 200 with a user is ACTIVE; a 4xx naming one of
REVOKED_ERROR_CODES is REVOKED; anything else (another code, throttling, 5xx, a redirect, a malformed or oversized
body, a timeout, no connection) raises a GetUserFailed, which the checker turns into UNKNOWN. No exception carries
the token, the request or Cognito's message text: only a static reason, the HTTP status and the error code.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3 import BaseHTTPResponse, HTTPConnectionPool, Timeout
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as UrllibTimeoutError

from authz.revocation import REVOKED_ERROR_CODES, Lookup, Status

TARGET = "AWSCognitoIdentityProviderService.GetUser"
CONTENT_TYPE = "application/x-amz-json-1.1"
# GetUser's answer lists the user's attributes (at most 50 custom ones of up to 2,048 characters each, plus the
# standard ones): well under this cap, which only stops a misbehaving endpoint from filling memory.
MAX_BODY_BYTES = 1_048_576
_CHUNK = 16_384
# Identity encoding keeps the cap on the bytes that are parsed: a compressed body could expand far beyond it.
_HEADERS: Mapping[str, str] = {
    "Content-Type": CONTENT_TYPE,
    "X-Amz-Target": TARGET,
    "Accept-Encoding": "identity",
    "User-Agent": "authz",
}
# An AWS error code is a shape name: anything else (a URL, free text, an echo of the request) is not logged.
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")

# botocore's partitions (botocore/data/partitions.json, by its regionRegex, in its order): the DNS suffix of a
# Region's endpoints. A Region no partition claims is resolved in `aws`, as botocore does.
_PARTITIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$"), "amazonaws.com"),
    (re.compile(r"^cn\-\w+\-\d+$"), "amazonaws.com.cn"),
    (re.compile(r"^eusc\-(de)\-\w+\-\d+$"), "amazonaws.eu"),
    (re.compile(r"^us\-iso\-\w+\-\d+$"), "c2s.ic.gov"),
    (re.compile(r"^us\-isob\-\w+\-\d+$"), "sc2s.sgov.gov"),
    (re.compile(r"^eu\-isoe\-\w+\-\d+$"), "cloud.adc-e.uk"),
    (re.compile(r"^us\-isof\-\w+\-\d+$"), "csp.hci.ic.gov"),
    (re.compile(r"^us\-gov\-\w+\-\d+$"), "amazonaws.com"),
)


class GetUserFailed(Exception):
    """GetUser gave no answer about the token. Root of the failures; each carries a static message only."""

    message: ClassVar[str] = "GetUser failed"

    def __init__(self) -> None:
        super().__init__(self.message)


class GetUserTimeout(GetUserFailed):
    message = "GetUser timed out"


class GetUserUnreachable(GetUserFailed):
    message = "GetUser could not reach Cognito"


class GetUserMalformed(GetUserFailed):
    """The answer was not one GetUser gives: `detail` is a static label (too_large, not_json, no_user, encoded)."""

    message = "GetUser answered in an unexpected form"

    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail


class CognitoError(GetUserFailed):
    """Cognito (or whatever answered at its endpoint) refused the call: its HTTP status and AWS error code.

    `response` has botocore's ClientError shape, so whatever reads `error.response["Error"]["Code"]` (the checker's
    log line) names the code; like botocore, the code is the HTTP status when the answer named none."""

    message = "GetUser answered with an error"

    def __init__(self, status: int, code: str | None) -> None:
        super().__init__()
        self.status = status
        self.code = code
        self.response: dict[str, Any] = {
            "Error": {"Code": code if code is not None else str(status)},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    def __str__(self) -> str:
        return f"{self.message}: HTTP {self.status} {self.response['Error']['Code']}"

    def __repr__(self) -> str:
        return f"CognitoError(status={self.status!r}, code={self.code!r})"


def endpoint_for(region: str, *, fips: bool = False) -> str:
    """Cognito's user pool API endpoint in a Region, as botocore resolves it (FIPS only when asked: AWS GovCloud
    (US) serves Cognito at its FIPS endpoints only)."""
    suffix = next((suffix for pattern, suffix in _PARTITIONS if pattern.match(region)), "amazonaws.com")
    return f"https://cognito-idp{'-fips' if fips else ''}.{region}.{suffix}/"


def error_code(headers: Mapping[str, str], document: object) -> str | None:
    """The AWS error code of an error answer, by the awsJson1_1 protocol's rules: the X-Amzn-ErrorType header, else
    the body's `code`, else its `__type`; without a `namespace#` prefix or a `:url` suffix. None when there is none,
    or when what is there is not a shape name."""
    raw: object = headers.get("x-amzn-ErrorType")
    if not raw and isinstance(document, dict):
        raw = document.get("code") or document.get("__type")
    if not isinstance(raw, str):
        return None
    code = raw.split(":", 1)[0].rpartition("#")[2]
    return code if _ERROR_CODE.fullmatch(code) else None


def get_user_lookup(
    *,
    endpoint_url: str | None,
    timeout: float,
    workers: int,
    fips: bool = False,
    ca_bundle: str | None = None,
    max_bytes: int = MAX_BODY_BYTES,
) -> Lookup:
    """A Lookup calling GetUser at each pool's regional endpoint, or at `endpoint_url` (a local emulator), which
    then serves every Region. `workers` is how many calls run at once: each endpoint's connection pool keeps that
    many connections. Proxies and the CA bundle follow requests' environment rules (HTTPS_PROXY, NO_PROXY,
    REQUESTS_CA_BUNDLE), read once per endpoint; ca_bundle (AWS_CA_BUNDLE, as botocore reads it) comes first."""
    transport = _Transport(workers, ca_bundle)
    # Each Region's route: one entry per Region of the configured pools (a token only gets here once verified).
    routes: dict[str, _Route] = {}

    def lookup(pool_id: str, token: str) -> Status:
        region = pool_id.partition("_")[0]
        route = routes.get(region)
        if route is None:
            url = _post_url(endpoint_url) if endpoint_url else endpoint_for(region, fips=fips)
            route = routes[region] = transport.route(url)
        return _get_user(route, token, timeout=timeout, max_bytes=max_bytes)

    return lookup


def _post_url(endpoint_url: str) -> str:
    """Where botocore posts for an endpoint URL: its path as given, `/` when it has none."""
    return endpoint_url if urlsplit(endpoint_url).path else endpoint_url + "/"


class _Route(NamedTuple):
    """Where one endpoint's calls go: its urllib3 pool (TLS settings and any proxy applied) and the URL to ask it."""

    pool: HTTPConnectionPool
    url: str


class _Transport(HTTPAdapter):
    """requests' adapter, subclassed as its documentation intends, to build each endpoint's urllib3 pool once (TLS
    verification, CA bundle, proxy) and hand it out: a call then goes straight to the pool, as the adapter's own
    send() would send it, without requests' per-call work (preparing a request, cookies, a Response object), which
    is about a third of a call's CPU."""

    # More pools than there are AWS Regions: the adapter's manager never closes a pool a route still holds.
    _POOLS = 64

    def __init__(self, workers: int, ca_bundle: str | None = None) -> None:
        super().__init__(pool_connections=self._POOLS, pool_maxsize=workers)
        self._ca_bundle = ca_bundle

    def route(self, url: str) -> _Route:
        with requests.Session() as environment:
            settings = environment.merge_environment_settings(url, {}, True, None, None)
        proxies, verify = settings["proxies"], self._ca_bundle or settings["verify"]
        request = requests.PreparedRequest()
        request.prepare(method="POST", url=url)
        # send() would point the pool at certifi's bundle (cert_verify) unless told another: so does this.
        pool = self.get_connection_with_tls_context(
            request, DEFAULT_CA_BUNDLE_PATH if verify is True else verify, proxies=proxies
        )
        if not isinstance(pool, HTTPConnectionPool):
            raise TypeError(f"requests gave a {type(pool).__name__} for {url}")
        return _Route(pool, self.request_url(request, proxies))


def _get_user(route: _Route, token: str, *, timeout: float, max_bytes: int) -> Status:
    # The whole call's bound is a normal call's: a connection, then an answer, each within the timeout. The Check
    # waiting on it gives up after one timeout anyway; an answer that comes later is still cached for the next.
    deadline = time.monotonic() + 2 * timeout
    try:
        # One attempt (retries=False raises the first error as it is), and a redirect is an answer, not followed.
        response = route.pool.urlopen(
            "POST",
            route.url,
            body=_body(token),
            headers=_HEADERS,
            retries=False,
            redirect=False,
            assert_same_host=False,
            timeout=Timeout(connect=timeout, read=timeout),
            preload_content=False,
            decode_content=False,
        )
        try:
            status = response.status
            if 300 <= status < 400:
                raise CognitoError(status, None)
            body = _read(response, deadline, max_bytes)
        except BaseException:
            response.close()  # a body not read to its end leaves the connection unfit to reuse
            raise
        finally:
            response.release_conn()
    except NewConnectionError:  # before its base class, ConnectTimeoutError: refused or not resolved is no timeout
        raise GetUserUnreachable() from None
    except (UrllibTimeoutError, TimeoutError):
        raise GetUserTimeout() from None
    except (HTTPError, OSError):
        # No urllib3 error holds the request body, but none is chained to what the caller sees either.
        raise GetUserUnreachable() from None
    return _status(status, response.headers, body)


def _body(token: str) -> bytes:
    return json.dumps({"AccessToken": token}).encode()


def _read(response: BaseHTTPResponse, deadline: float, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise GetUserMalformed("too_large")
    if time.monotonic() > deadline:  # the status line and headers came a read at a time, too slowly
        raise GetUserTimeout()
    body = bytearray()
    # read1 returns whatever has arrived, so the deadline is checked however slowly bytes trickle in.
    while chunk := response.read1(_CHUNK, decode_content=False):
        body += chunk
        if len(body) > max_bytes:
            raise GetUserMalformed("too_large")
        if time.monotonic() > deadline:
            raise GetUserTimeout()
    return bytes(body)


def _status(status: int, headers: Mapping[str, str], body: bytes) -> Status:
    if headers.get("Content-Encoding", "identity").lower() != "identity":
        raise GetUserMalformed("encoded")
    try:
        document: object = json.loads(body) if body else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        document = None
    if status == 200:
        if document is None:
            raise GetUserMalformed("not_json")
        if not isinstance(document, dict) or not isinstance(document.get("Username"), str):
            raise GetUserMalformed("no_user")
        return Status.ACTIVE
    code = error_code(headers, document)
    # A 5xx is Cognito failing, whatever it names: a REVOKED is kept until the token expires, so only a refusal
    # of the call (4xx) may say so.
    if 400 <= status < 500 and code in REVOKED_ERROR_CODES:
        return Status.REVOKED
    raise CognitoError(status, code)
