"""A minimal Check client, shaped like what Envoy sends: used by `python -m authz check` and the tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

AttributeContext = attribute_context_pb2.AttributeContext


def check_request(
    *,
    token: str | None = None,
    path: str = "/",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    context: Mapping[str, str] | None = None,
) -> external_auth_pb2.CheckRequest:
    all_headers = {":path": path, ":method": method, **(headers or {})}
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    return external_auth_pb2.CheckRequest(
        attributes=AttributeContext(
            request=AttributeContext.Request(
                http=AttributeContext.HttpRequest(method=method, path=path, headers=all_headers)
            ),
            context_extensions=dict(context or {}),
        )
    )


def describe(response: external_auth_pb2.CheckResponse) -> dict[str, Any]:
    """A CheckResponse as plain data: what Envoy would do with the request."""
    if response.status.code == 0:  # Envoy allows on status OK, with or without an ok_response
        ok = response.ok_response
        return {
            "allowed": True,
            "grpc_code": response.status.code,
            "upstream_headers": {option.header.key: option.header.value for option in ok.headers},
            "headers_to_remove": list(ok.headers_to_remove),
        }
    denied = response.denied_response
    return {
        "allowed": False,
        "grpc_code": response.status.code,
        "http_status": denied.status.code,
        "response_headers": {option.header.key: option.header.value for option in denied.headers},
        "body": denied.body,
    }


def check(
    addr: str,
    *,
    token: str | None = None,
    path: str = "/",
    method: str = "GET",
    context: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    with grpc.insecure_channel(addr) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        response = stub.Check(check_request(token=token, path=path, method=method, context=context), timeout=timeout)
    return describe(response)
