"""The Authorization servicer on a real grpc.aio server, asked over a real channel: what Envoy receives for each
kind of Check."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import closing

import grpc
import pytest
from google.protobuf import json_format

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.authorizer import Authorizer
from authz.client import check_request, describe
from authz.jwks import JwksCache
from authz.logs import JsonFormatter
from authz.metrics import Metrics
from authz.policy import Policy
from authz.service import register
from authz.tokens import TokenVerifier, VerifiedToken
from tests.conftest import (
    CLIENT_ID,
    IDENTITY_HEADERS,
    ISSUER,
    POOL_ID,
    FakeClock,
    access_claims,
    id_claims,
    jwks_document,
    mint,
    static_fetcher,
)


class Harness:
    """The servicer registered on a grpc.aio server on an event loop in a thread, and a channel to it."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.metrics = Metrics()
        authorizer = Authorizer(
            verifier=verifier, policy=Policy(realm="cruddur"), metrics=self.metrics, max_token_bytes=16_384
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._waiting = futures.ThreadPoolExecutor(2)

        async def start() -> int:
            self._server = grpc.aio.server()  # on its loop
            register(self._server, authorizer, self._waiting)
            port = self._server.add_insecure_port("127.0.0.1:0")
            await self._server.start()
            return port

        port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=10)
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._stub = external_auth_pb2_grpc.AuthorizationStub(self._channel)

    def check(self, request: external_auth_pb2.CheckRequest) -> tuple[external_auth_pb2.CheckResponse, grpc.StatusCode]:
        response, call = self._stub.Check.with_call(request, timeout=10)
        return response, call.code()

    def close(self) -> None:
        self._channel.close()
        asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._waiting.shutdown()

    def decisions(self, result: str, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "authz_decisions_total",
            {
                "result": result,
                "reason": reason,
                "pool": POOL_ID if result == "allow" else "",
                "client": CLIENT_ID if result == "allow" else "",
            },
        )
        return value or 0.0


def make_verifier(clock: FakeClock) -> TokenVerifier:
    return TokenVerifier(
        issuers={ISSUER: POOL_ID},
        key_sources={ISSUER: JwksCache("memory://jwks", fetcher=static_fetcher(jwks_document()))},
        client_ids={CLIENT_ID},
        clock=clock,
        cache_size=100,
    )


@pytest.fixture
def harness(clock: FakeClock) -> Iterator[Harness]:
    harness = Harness(make_verifier(clock))
    yield harness
    harness.close()


def test_valid_access_token_is_allowed_with_overwriting_identity_headers(harness):
    """An allowed Check is status OK with identity headers that overwrite any client copy, old and new Envoy alike."""
    response, code = harness.check(check_request(token=mint(), path="/api/me"))
    assert code is grpc.StatusCode.OK
    assert response.status.code == 0 and response.HasField("ok_response")
    headers = {option.header.key: option for option in response.ok_response.headers}
    assert headers["x-user-sub"].header.value == access_claims()["sub"]
    assert headers["x-user-name"].header.value == "andrew"
    for option in headers.values():
        assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        assert option.HasField("append") and option.append.value is False
    assert list(response.ok_response.headers_to_remove) == ["x-user-groups", "x-user-idp"]


def test_allowed_check_is_counted_by_pool_and_client(harness):
    """Each decision increments authz_decisions_total with its result, reason, pool and client."""
    harness.check(check_request(token=mint()))
    harness.check(check_request(token=mint()))
    assert harness.decisions("allow", "ok") == 2


def test_spoofed_identity_headers_are_removed_for_anonymous_callers(harness):
    """On an optional route without a token, client-sent x-user-* headers are all in headers_to_remove."""
    request = check_request(path="/api/activities/home", headers={"x-user-sub": "admin"}, context={"auth": "optional"})
    response, _ = harness.check(request)
    assert response.status.code == 0
    assert set(response.ok_response.headers_to_remove) == IDENTITY_HEADERS
    assert not response.ok_response.headers


def test_missing_token_is_denied_with_401_and_bare_challenge(harness):
    """No Authorization header on a required route: UNAUTHENTICATED, HTTP 401, `Bearer realm` only, JSON body."""
    response, _ = harness.check(check_request(path="/api/me"))
    assert response.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    denied = response.denied_response
    assert denied.status.code == 401
    headers = {option.header.key: option.header.value for option in denied.headers}
    assert headers == {"www-authenticate": 'Bearer realm="cruddur"', "content-type": "application/json"}
    assert json.loads(denied.body) == {"error": "missing_token", "message": "authentication required"}
    assert harness.decisions("deny", "missing_token") == 1


def test_expired_token_is_denied_with_401_invalid_token(harness, clock):
    """A token past exp is a 401 with error="invalid_token" and a static description."""
    token = mint()
    clock.advance(3601)
    result = describe(harness.check(check_request(token=token))[0])
    assert result["http_status"] == 401
    assert result["response_headers"]["www-authenticate"] == (
        'Bearer realm="cruddur", error="invalid_token", error_description="token expired"'
    )


def test_id_token_on_default_route_is_401_and_allowed_where_route_accepts_it(harness):
    """Routes take access tokens by default; token_use=id lets an id token through."""
    token = mint(id_claims())
    assert describe(harness.check(check_request(token=token))[0])["http_status"] == 401
    allowed = describe(harness.check(check_request(token=token, context={"token_use": "id"}))[0])
    assert allowed["allowed"] and allowed["upstream_headers"]["x-user-token-use"] == "id"
    assert allowed["upstream_headers"]["x-user-client-id"] == CLIENT_ID


def test_group_rule_denies_with_403_insufficient_scope(harness):
    """A caller outside the route's groups gets PERMISSION_DENIED and HTTP 403."""
    response, _ = harness.check(check_request(token=mint(), context={"groups": "admins"}))
    assert response.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert response.denied_response.status.code == 403
    in_group = mint(access_claims(**{"cognito:groups": ["admins"]}))
    assert harness.check(check_request(token=in_group, context={"groups": "admins"}))[0].status.code == 0


def test_misconfigured_route_is_denied_403_and_logged(harness, caplog):
    """An unknown context_extensions key is a 403 deny and an error log naming the key."""
    with caplog.at_level(logging.ERROR, logger="authz.decision"):
        response, _ = harness.check(check_request(token=mint(), context={"group": "admins"}))
    assert response.denied_response.status.code == 403
    assert any(getattr(r, "fields", {}).get("key") == "group" for r in caplog.records)


def test_duplicate_raw_authorization_headers_are_invalid(harness):
    """With Envoy's raw header_map, two Authorization headers are a malformed request, never first-wins."""
    request = check_request()
    http = request.attributes.request.http
    for value in (f"Bearer {mint()}", "Bearer other"):
        http.header_map.headers.add(key="authorization", raw_value=value.encode())
    result = describe(harness.check(request)[0])
    assert result["http_status"] == 401
    assert json.loads(result["body"]) == {
        "error": "invalid_token",
        "message": "authorization header must be a single 'Bearer <token>'",
    }
    assert harness.decisions("deny", "malformed_authorization") == 1


def test_single_raw_authorization_header_is_read(harness):
    """A token in Envoy's raw header_map (encode_raw_headers) is verified like one in the headers map."""
    request = check_request()
    request.attributes.request.http.header_map.headers.add(key="authorization", raw_value=f"Bearer {mint()}".encode())
    assert harness.check(request)[0].status.code == 0


def test_decision_log_line_carries_identity_and_never_the_token(harness, caplog):
    """At DEBUG an allow is one JSON line with result, reason, sub, path without query and request id; no token."""
    token = mint()
    request = check_request(token=token, path=f"/api/me?access_token={token}", headers={"x-request-id": "req-42"})
    with caplog.at_level(logging.DEBUG, logger="authz.decision"):
        harness.check(request)
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "authz.decision"]
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert {k: line[k] for k in ("result", "reason", "sub", "path", "request_id", "status")} == {
        "result": "allow",
        "reason": "ok",
        "sub": access_claims()["sub"],
        "path": "/api/me",
        "request_id": "req-42",
        "status": 200,
    }
    assert token not in lines[0] and token.split(".")[2] not in lines[0]


def test_unexpected_failure_fails_closed(clock):
    """A bug inside verification denies the request with a 500, never allows it or breaks the RPC."""

    class BrokenVerifier:
        def verify(self, token: str, *, digest: bytes | None = None, wait: bool = True) -> VerifiedToken:
            raise RuntimeError("boom")

    with closing(Harness(BrokenVerifier())) as harness:  # type: ignore[arg-type]  # a stand-in with only verify()
        response, code = harness.check(check_request(token=mint()))
    assert code is grpc.StatusCode.OK
    assert response.status.code == grpc.StatusCode.INTERNAL.value[0]
    assert response.denied_response.status.code == 500
    assert "boom" not in response.denied_response.body


def test_response_that_cannot_be_built_fails_closed(clock):
    """If building the response fails (a value protobuf cannot encode), Envoy still gets an explicit 500 deny."""

    class OddVerifier:
        def verify(self, token: str, *, digest: bytes | None = None, wait: bool = True) -> VerifiedToken:
            return VerifiedToken(
                sub="sub-\ud800",
                token_use="access",
                client_id=CLIENT_ID,
                pool_id=POOL_ID,
                username=None,
                groups=(),
                scopes=(),
                expires_at=2e9,
            )

    with closing(Harness(OddVerifier())) as harness:  # type: ignore[arg-type]  # a stand-in with only verify()
        response, code = harness.check(check_request(token=mint()))
    assert code is grpc.StatusCode.OK
    assert (response.status.code, response.denied_response.status.code) == (grpc.StatusCode.INTERNAL.value[0], 500)


def test_allows_are_logged_at_debug_and_denies_at_info(harness, caplog):
    """At INFO a deny is logged and an allow is not (Envoy's access log already records every allowed request)."""
    with caplog.at_level(logging.INFO, logger="authz.decision"):
        harness.check(check_request(token=mint()))
        harness.check(check_request())
    results = [r.fields["result"] for r in caplog.records if r.name == "authz.decision"]
    assert results == ["deny"]


def test_repeated_token_gets_the_same_answer_from_the_memo(harness):
    """A repeated token on the same route is answered with an identical response, and another route is judged anew."""
    token = mint()
    first, _ = harness.check(check_request(token=token))
    again, _ = harness.check(check_request(token=token))
    assert again == first and again.status.code == 0
    denied, _ = harness.check(check_request(token=token, context={"groups": "admins"}))
    assert denied.denied_response.status.code == 403


def test_request_id_is_logged_from_raw_header_map(harness, caplog):
    """With Envoy's raw header_map the decision log still carries x-request-id."""
    request = check_request()
    for key, value in (("authorization", f"Bearer {mint()}"), ("x-request-id", "raw-7")):
        request.attributes.request.http.header_map.headers.add(key=key, raw_value=value.encode())
    with caplog.at_level(logging.DEBUG, logger="authz.decision"):
        harness.check(request)
    fields = [r.fields for r in caplog.records if r.name == "authz.decision"]
    assert fields and fields[0]["request_id"] == "raw-7" and fields[0]["result"] == "allow"


def test_route_demanding_revocation_on_a_server_without_it_is_denied(harness):
    """A route with revocation=check on a service built without revocation is a misconfiguration: 403
    route_misconfigured, never an allow that silently skipped the check the route asked for."""
    result = describe(harness.check(check_request(token=mint(), context={"revocation": "check"}))[0])
    assert (result["allowed"], result["grpc_code"], result["http_status"]) == (False, 7, 403)
    assert json.loads(result["body"])["error"] == "route_misconfigured"
    # revocation=skip needs nothing from the server: allowed as usual.
    assert describe(harness.check(check_request(token=mint(), context={"revocation": "skip"}))[0])["allowed"]


def test_an_allow_names_the_caller_in_dynamic_metadata_and_an_anonymous_one_does_not(harness):
    """Envoy's access log and rate limit take the caller from the allow's dynamic metadata (only authz writes it):
    the verified caller's sub, kind, client, token use, pool, groups and scopes (lists), never the token; nothing for
    an anonymous caller."""
    token = mint(access_claims(**{"cognito:groups": ["admins", "staff"], "scope": "feed/read feed/write"}))
    response, _ = harness.check(check_request(token=token))
    assert json_format.MessageToDict(response.dynamic_metadata) == {
        "sub": access_claims()["sub"],
        "principal": "user",
        "client_id": CLIENT_ID,
        "token_use": "access",
        "pool": POOL_ID,
        "groups": ["admins", "staff"],
        "scopes": ["feed/read", "feed/write"],
    }
    assert token not in str(response)
    anonymous, _ = harness.check(check_request(context={"auth": "optional"}))
    assert anonymous.status.code == 0 and not anonymous.HasField("dynamic_metadata")
