"""Envoy's gRPC ext_authz transport: CheckRequest -> RequestFacts -> Authorizer.decide -> CheckResponse.

The server's only module that knows the v3 wire types (the generated stubs; client.py, the CLI's stand-in for
Envoy, is the other side of the wire). It reads the request's facts, asks the authorizer for the Decision, and
translates the Decision into a CheckResponse; any failure of its own is a deny.

Check is a coroutine on the grpc.aio server's event loop: a Check the authorizer can decide at once (a known
token, any deny, a new token whose keys are loaded) is decided right there, with no thread handoff; one that must
wait on the network (a key refetch, Cognito's GetUser) is decided again in the `waiting` thread pool, so no Check
ever blocks the loop. A call whose request has not arrived yet costs no thread at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import cast

import grpc
from google.protobuf.struct_pb2 import Value
from google.protobuf.wrappers_pb2 import BoolValue

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz._proto.envoy.type.v3 import http_status_pb2
from authz._proto.google.rpc import status_pb2
from authz.authorizer import MEMO_SIZE, Answering, Authorizer, RequestFacts
from authz.cache import remember
from authz.policy import Decision, caller_metadata

SERVICE_NAME = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# Older Envoys honour only the deprecated `append` flag (envoyproxy/envoy#42857): set both so all agree.
_NO_APPEND = BoolValue(value=False)


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(
        self,
        authorizer: Authorizer,
        *,
        waiting: futures.Executor | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """waiting: the threads that decide Checks which must wait on the network (None: the loop's default)."""
        self._authorizer = authorizer
        # CheckResponses by Decision: building one is most of a cached Check's work.
        self._answering = Answering(authorizer, request_facts, _response, waiting=waiting)
        self._clock = clock

    async def Check(  # noqa: N802 - the gRPC method's name
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[object, object] | None
    ) -> external_auth_pb2.CheckResponse:
        started = self._clock()
        response, decision, facts = await self._answering.answer(request)
        self._authorizer.record(decision, facts, self._clock() - started)
        return response


def register(server: grpc.aio.Server, authorizer: Authorizer, waiting: futures.Executor) -> None:
    """Serve Envoy's Authorization service on `server`, deciding with `authorizer`; Checks that must wait on the
    network are decided on `waiting`'s threads."""
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationService(authorizer, waiting=waiting), server
    )


def request_facts(request: external_auth_pb2.CheckRequest) -> RequestFacts:
    """What the authorizer needs of a CheckRequest. Headers come from Envoy's raw header_map when it sends one
    (encode_raw_headers: every header as sent, repeats apart), else from the headers map (where Envoy has already
    comma-joined repeats)."""
    attributes = request.attributes
    http = attributes.request.http
    raw = http.header_map.headers
    if raw:
        authorization, request_id = _raw_values(raw)
    else:
        headers = http.headers
        value = headers.get("authorization")
        authorization = () if value is None else (value,)
        request_id = headers.get("x-request-id")
    return RequestFacts(http.method, http.host, http.path, authorization, attributes.context_extensions, request_id)


def _raw_values(headers: Iterable[base_pb2.HeaderValue]) -> tuple[tuple[str, ...], str | None]:
    """Every Authorization value and the first x-request-id of a raw header_map, in one pass over it (each header's
    fields cost a protobuf access: a pass per name cost a Check 13 µs with ten headers, one pass 6)."""
    authorization: list[str] = []
    request_id = None
    for header in headers:
        name = header.key.lower()
        if name == "authorization":
            authorization.append(header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value)
        elif name == "x-request-id" and request_id is None:
            request_id = header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
    return tuple(authorization), request_id


def _response(decision: Decision) -> external_auth_pb2.CheckResponse:
    if decision.allowed:
        return _allow_response(decision)
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=decision.grpc_code, message=decision.reason),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            # The StatusCode enum's values are the HTTP statuses themselves.
            status=http_status_pb2.HttpStatus(code=cast(http_status_pb2.StatusCode, decision.http_status)),
            headers=_header_options(decision.response_headers),
            body=decision.body,
        ),
    )


# Allow responses by shape (which headers are set, which removed), with empty values: allows differ only in header
# values, and copying a template costs a fifth of building six HeaderValueOptions anew (a new caller's first Check).
_allow_templates: dict[tuple[tuple[str, ...], tuple[str, ...]], external_auth_pb2.CheckResponse] = {}


def _allow_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    shape = (tuple(name for name, _ in decision.upstream_headers), decision.removed_headers)
    template = _allow_templates.get(shape)
    if template is None:
        template = external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=0),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=_header_options(tuple((name, "") for name in shape[0])),
                headers_to_remove=shape[1],
            ),
        )
        remember(_allow_templates, shape, template, limit=MEMO_SIZE)
    response = external_auth_pb2.CheckResponse()
    response.CopyFrom(template)
    for option, (_, value) in zip(response.ok_response.headers, decision.upstream_headers, strict=True):
        option.header.value = value
    if decision.identity is not None:
        # The caller for the rest of Envoy (the access log's `user`, a rate limit per caller): the ext_authz filter
        # emits this as its dynamic metadata, which only authz can write, where a request header is whatever the
        # client sent until ext_authz replaced it.
        fields = response.dynamic_metadata.fields
        for key, metadata in caller_metadata(decision.identity):
            if isinstance(metadata, str):
                fields[key].string_value = metadata
            else:
                fields[key].list_value.values.extend(Value(string_value=item) for item in metadata)
    return response


def _header_options(pairs: tuple[tuple[str, str], ...]) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=value), append=_NO_APPEND, append_action=_OVERWRITE
        )
        for name, value in pairs
    ]
