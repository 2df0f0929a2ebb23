"""authz/client.py: the Check a test or `python -m authz check` sends is shaped like Envoy's, and a reply reads back
as what Envoy would do with the request."""

from __future__ import annotations

import asyncio

from authz.authorizer import Authorizer
from authz.client import check_request, describe
from authz.metrics import Metrics
from authz.policy import Policy
from authz.service import AuthorizationService
from authz.tokens import TokenVerifier


def test_a_check_request_carries_what_envoy_sends():
    """Method and path in the HTTP attributes and as pseudo-headers, the token as a Bearer header, other headers,
    and the route's context_extensions."""
    request = check_request(
        token="t0k", path="/api/me", method="POST", headers={"x-request-id": "r-1"}, context={"auth": "optional"}
    )
    http = request.attributes.request.http
    assert (http.method, http.path) == ("POST", "/api/me")
    assert dict(http.headers) == {
        ":path": "/api/me",
        ":method": "POST",
        "x-request-id": "r-1",
        "authorization": "Bearer t0k",
    }
    assert dict(request.attributes.context_extensions) == {"auth": "optional"}


def test_describe_reads_an_allow_and_a_deny_as_envoy_would():
    """An OK status is an allow with its upstream headers and removals; anything else is the deny the client gets."""
    policy = Policy()
    verifier = TokenVerifier(issuers={}, key_sources={}, client_ids=())
    service = AuthorizationService(Authorizer(verifier=verifier, policy=policy, metrics=Metrics(), max_token_bytes=512))
    # Check never reads its gRPC context, so none is made up here.
    anonymous = describe(asyncio.run(service.Check(check_request(context={"auth": "optional"}), None)))
    assert anonymous == {
        "allowed": True,
        "grpc_code": 0,
        "upstream_headers": {},
        "headers_to_remove": list(policy.identity_headers),
    }
    denied = describe(asyncio.run(service.Check(check_request(), None)))
    assert {key: denied[key] for key in ("allowed", "grpc_code", "http_status")} == {
        "allowed": False,
        "grpc_code": 16,
        "http_status": 401,
    }
    assert denied["response_headers"]["www-authenticate"] == 'Bearer realm="api"'
