"""Wire compatibility between our generated stubs (authz._proto) and envoy-data-plane.

envoy-data-plane's betterproto2 models are generated from the full upstream Envoy API, so
they stand in for Envoy here: bytes one side writes must decode to the same values on the
other side, in both directions, and our trimmed protos must agree with upstream on every
field number and type they keep.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, cast

import betterproto2
import grpc
import pytest
from envoy_data_plane.envoy.config import core
from envoy_data_plane.envoy.service.auth import v3 as model_auth
from envoy_data_plane.envoy.type import v3 as model_type
from envoy_data_plane.google import protobuf as model_pb
from envoy_data_plane.google import rpc as model_rpc
from envoy_data_plane.message_pool import default_message_pool
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message as pb_message
from google.protobuf import struct_pb2, timestamp_pb2, wrappers_pb2

from authz._proto.envoy.config.core.v3 import address_pb2, base_pb2
from authz._proto.envoy.service.auth.v3 import (
    attribute_context_pb2,
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from authz._proto.envoy.type.v3 import http_status_pb2
from authz._proto.google.rpc import status_pb2

model_core = core.v3

# envoy-data-plane warns whenever the deprecated HeaderValueOption.append is set, which
# these tests do on purpose (Envoy still honours it).
pytestmark = pytest.mark.filterwarnings("ignore:HeaderValueOption.append is deprecated:DeprecationWarning")

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"

# Realistic-looking values; nothing here is a real credential.
BEARER = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhYmMifQ.c2lnbmF0dXJl"
REQUEST_TIME = datetime.datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=datetime.UTC)
DENIED_BODY = '{"error":"invalid_token"}'


# --- builders: each message is built twice, once per library, with identical values ---


def stub_check_request() -> external_auth_pb2.CheckRequest:
    time = timestamp_pb2.Timestamp()
    time.FromDatetime(REQUEST_TIME)
    route_metadata = struct_pb2.Struct()
    route_metadata.update({"audience": "api://orders"})
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            source=attribute_context_pb2.AttributeContext.Peer(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address="203.0.113.7", port_value=54321)
                ),
                principal="spiffe://example.org/client",
            ),
            destination=attribute_context_pb2.AttributeContext.Peer(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address="10.0.0.5", port_value=8080)
                ),
            ),
            request=attribute_context_pb2.AttributeContext.Request(
                time=time,
                http=attribute_context_pb2.AttributeContext.HttpRequest(
                    id="5f0c1a9e-3c44-4a1b-9d7e-0d6f2a8b7c11",
                    method="POST",
                    headers={
                        "authorization": BEARER,
                        ":path": "/orders/42?expand=items",
                        "content-type": "application/json",
                    },
                    header_map=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key="x-raw", raw_value=b"\xff\xfe")]),
                    path="/orders/42?expand=items",
                    host="api.example.com",
                    scheme="https",
                    size=-1,
                    protocol="HTTP/2",
                    raw_body=b"\x00binary",
                ),
            ),
            context_extensions={"cognito_client": "orders-web", "policy": "read-write"},
            route_metadata_context=base_pb2.Metadata(filter_metadata={"envoy.filters.http.ext_authz": route_metadata}),
            tls_session=attribute_context_pb2.AttributeContext.TLSSession(sni="api.example.com"),
        )
    )


def model_check_request() -> model_auth.CheckRequest:
    return model_auth.CheckRequest(
        attributes=model_auth.AttributeContext(
            source=model_auth.AttributeContextPeer(
                address=model_core.Address(
                    socket_address=model_core.SocketAddress(address="203.0.113.7", port_value=54321)
                ),
                principal="spiffe://example.org/client",
            ),
            destination=model_auth.AttributeContextPeer(
                address=model_core.Address(
                    socket_address=model_core.SocketAddress(address="10.0.0.5", port_value=8080)
                ),
            ),
            request=model_auth.AttributeContextRequest(
                time=REQUEST_TIME,
                http=model_auth.AttributeContextHttpRequest(
                    id="5f0c1a9e-3c44-4a1b-9d7e-0d6f2a8b7c11",
                    method="POST",
                    headers={
                        "authorization": BEARER,
                        ":path": "/orders/42?expand=items",
                        "content-type": "application/json",
                    },
                    header_map=model_core.HeaderMap(
                        headers=[model_core.HeaderValue(key="x-raw", raw_value=b"\xff\xfe")]
                    ),
                    path="/orders/42?expand=items",
                    host="api.example.com",
                    scheme="https",
                    size=-1,
                    protocol="HTTP/2",
                    raw_body=b"\x00binary",
                ),
            ),
            context_extensions={"cognito_client": "orders-web", "policy": "read-write"},
            route_metadata_context=model_core.Metadata(
                filter_metadata={
                    "envoy.filters.http.ext_authz": model_pb.Struct(
                        fields={"audience": model_pb.Value(string_value="api://orders")}
                    )
                }
            ),
            tls_session=model_auth.AttributeContextTlsSession(sni="api.example.com"),
        )
    )


def _stub_header(
    key: str, value: str, action: base_pb2.HeaderValueOption.HeaderAppendAction
) -> base_pb2.HeaderValueOption:
    # append=false is set explicitly as well: Envoy lets the deprecated BoolValue override
    # append_action, so its presence (not just its value) has to survive the wire.
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append=wrappers_pb2.BoolValue(value=False),
        append_action=action,
    )


def _model_header(
    key: str, value: str, action: model_core.HeaderValueOptionHeaderAppendAction
) -> model_core.HeaderValueOption:
    return model_core.HeaderValueOption(
        header=model_core.HeaderValue(key=key, value=value),
        append=False,
        append_action=action,
    )


def stub_ok_response() -> external_auth_pb2.CheckResponse:
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    dynamic_metadata = struct_pb2.Struct()
    dynamic_metadata.update({"sub": "abc", "groups": ["admin", "ops"]})
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=0),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[
                _stub_header("x-auth-sub", "abc", overwrite),
                _stub_header("x-auth-groups", "admin,ops", overwrite),
            ],
            headers_to_remove=["authorization", "cookie"],
            response_headers_to_add=[_stub_header("x-auth-cache", "miss", base_pb2.HeaderValueOption.ADD_IF_ABSENT)],
            query_parameters_to_set=[base_pb2.QueryParameter(key="tenant", value="t-1")],
            query_parameters_to_remove=["access_token"],
        ),
        dynamic_metadata=dynamic_metadata,
    )


def model_ok_response() -> model_auth.CheckResponse:
    overwrite = model_core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    return model_auth.CheckResponse(
        status=model_rpc.Status(code=0),
        ok_response=model_auth.OkHttpResponse(
            headers=[
                _model_header("x-auth-sub", "abc", overwrite),
                _model_header("x-auth-groups", "admin,ops", overwrite),
            ],
            headers_to_remove=["authorization", "cookie"],
            response_headers_to_add=[
                _model_header("x-auth-cache", "miss", model_core.HeaderValueOptionHeaderAppendAction.ADD_IF_ABSENT)
            ],
            query_parameters_to_set=[model_core.QueryParameter(key="tenant", value="t-1")],
            query_parameters_to_remove=["access_token"],
        ),
        dynamic_metadata=model_pb.Struct(
            fields={
                "sub": model_pb.Value(string_value="abc"),
                "groups": model_pb.Value(
                    list_value=model_pb.ListValue(
                        values=[model_pb.Value(string_value="admin"), model_pb.Value(string_value="ops")]
                    )
                ),
            }
        ),
    )


def stub_denied_response() -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=16, message="token expired"),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized),
            headers=[
                _stub_header(
                    "www-authenticate",
                    'Bearer error="invalid_token"',
                    base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                ),
                _stub_header("content-type", "application/json", base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS),
            ],
            body=DENIED_BODY,
        ),
    )


def model_denied_response() -> model_auth.CheckResponse:
    return model_auth.CheckResponse(
        status=model_rpc.Status(code=16, message="token expired"),
        denied_response=model_auth.DeniedHttpResponse(
            status=model_type.HttpStatus(code=model_type.StatusCode.Unauthorized),
            headers=[
                _model_header(
                    "www-authenticate",
                    'Bearer error="invalid_token"',
                    model_core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
                ),
                _model_header(
                    "content-type",
                    "application/json",
                    model_core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS,
                ),
            ],
            body=DENIED_BODY,
        ),
    )


CASES: dict[str, tuple[Callable[[], pb_message.Message], Callable[[], betterproto2.Message]]] = {
    "check_request": (stub_check_request, model_check_request),
    "ok_response": (stub_ok_response, model_ok_response),
    "denied_response": (stub_denied_response, model_denied_response),
}


def _parse_model(model_cls: type[betterproto2.Message], data: bytes) -> Any:
    return model_cls.parse(data)


# --- round trips ---


@pytest.mark.parametrize("case", sorted(CASES))
def test_stub_bytes_parse_in_envoy_data_plane(case: str) -> None:
    """Bytes serialized by our stubs decode in envoy-data-plane to the same message built natively there."""
    build_stub, build_model = CASES[case]
    expected = build_model()

    parsed = _parse_model(type(expected), build_stub().SerializeToString())

    assert parsed == expected, f"{parsed!r}\n!=\n{expected!r}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_envoy_data_plane_bytes_parse_in_stubs(case: str) -> None:
    """Bytes serialized by envoy-data-plane decode in our stubs to the same message our stubs build."""
    build_stub, build_model = CASES[case]
    ours = build_stub()

    parsed = type(ours).FromString(bytes(build_model()))

    assert parsed == ours, f"{parsed}\n!=\n{ours}"


# The round-trip tests compare against builders written in this file; these pin the values
# the server actually depends on, so a mistake made identically in both builders still fails.


def test_check_request_fields_envoy_sends_reach_the_server() -> None:
    """The headers, path, method, host, id, context_extensions and source address decode to the values written."""
    parsed = _parse_model(model_auth.CheckRequest, stub_check_request().SerializeToString())

    attrs = parsed.attributes
    http = attrs.request.http
    assert http.headers["authorization"] == BEARER
    assert http.path == "/orders/42?expand=items"
    assert http.method == "POST"
    assert http.host == "api.example.com"
    assert http.id == "5f0c1a9e-3c44-4a1b-9d7e-0d6f2a8b7c11"
    assert http.header_map.headers[0].raw_value == b"\xff\xfe"
    assert attrs.request.time == REQUEST_TIME
    assert attrs.context_extensions == {"cognito_client": "orders-web", "policy": "read-write"}
    assert attrs.source.address.socket_address.address == "203.0.113.7"
    assert attrs.source.address.socket_address.port_value == 54321
    assert attrs.tls_session.sni == "api.example.com"


def test_ok_response_header_semantics_survive_the_wire() -> None:
    """An OK response keeps status 0, OVERWRITE_IF_EXISTS_OR_ADD, an explicitly-present append=false and the headers to remove."""
    parsed = _parse_model(model_auth.CheckResponse, stub_ok_response().SerializeToString())

    # Status must be present even though code 0 encodes as an empty message.
    assert parsed.status is not None and parsed.status.code == 0
    assert parsed.denied_response is None
    header = parsed.ok_response.headers[0]
    assert (header.header.key, header.header.value) == ("x-auth-sub", "abc")
    assert header.append_action == model_core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    assert header.append_action == 2
    # `is False`, not falsy: None would mean Envoy sees has_append() == false.
    assert header.append is False
    assert parsed.ok_response.headers_to_remove == ["authorization", "cookie"]
    assert parsed.dynamic_metadata.fields["sub"].string_value == "abc"


def test_denied_response_carries_unauthenticated_and_401() -> None:
    """A denied response decodes as gRPC UNAUTHENTICATED (16) with HTTP 401, its headers and body."""
    parsed = _parse_model(model_auth.CheckResponse, stub_denied_response().SerializeToString())

    assert parsed.status.code == 16
    assert parsed.ok_response is None
    denied = parsed.denied_response
    assert denied.status.code == model_type.StatusCode.Unauthorized
    assert int(denied.status.code) == 401
    assert denied.headers[0].header.key == "www-authenticate"
    assert denied.headers[0].header.value == 'Bearer error="invalid_token"'
    assert denied.body == DENIED_BODY


# --- schema agreement with upstream ---


_SCALAR_TYPE_NAMES = {
    pb_descriptor.FieldDescriptor.TYPE_BOOL: betterproto2.TYPE_BOOL,
    pb_descriptor.FieldDescriptor.TYPE_INT32: betterproto2.TYPE_INT32,
    pb_descriptor.FieldDescriptor.TYPE_INT64: betterproto2.TYPE_INT64,
    pb_descriptor.FieldDescriptor.TYPE_UINT32: betterproto2.TYPE_UINT32,
    pb_descriptor.FieldDescriptor.TYPE_UINT64: betterproto2.TYPE_UINT64,
    pb_descriptor.FieldDescriptor.TYPE_SINT32: betterproto2.TYPE_SINT32,
    pb_descriptor.FieldDescriptor.TYPE_SINT64: betterproto2.TYPE_SINT64,
    pb_descriptor.FieldDescriptor.TYPE_FIXED32: betterproto2.TYPE_FIXED32,
    pb_descriptor.FieldDescriptor.TYPE_FIXED64: betterproto2.TYPE_FIXED64,
    pb_descriptor.FieldDescriptor.TYPE_SFIXED32: betterproto2.TYPE_SFIXED32,
    pb_descriptor.FieldDescriptor.TYPE_SFIXED64: betterproto2.TYPE_SFIXED64,
    pb_descriptor.FieldDescriptor.TYPE_FLOAT: betterproto2.TYPE_FLOAT,
    pb_descriptor.FieldDescriptor.TYPE_DOUBLE: betterproto2.TYPE_DOUBLE,
    pb_descriptor.FieldDescriptor.TYPE_STRING: betterproto2.TYPE_STRING,
    pb_descriptor.FieldDescriptor.TYPE_BYTES: betterproto2.TYPE_BYTES,
    pb_descriptor.FieldDescriptor.TYPE_ENUM: betterproto2.TYPE_ENUM,
    pb_descriptor.FieldDescriptor.TYPE_MESSAGE: betterproto2.TYPE_MESSAGE,
}


def _our_messages() -> Iterator[pb_descriptor.Descriptor]:
    def walk(desc: pb_descriptor.Descriptor) -> Iterator[pb_descriptor.Descriptor]:
        if desc.GetOptions().map_entry:
            return
        yield desc
        for nested in desc.nested_types:
            yield from walk(nested)

    for module in (address_pb2, base_pb2, attribute_context_pb2, external_auth_pb2, http_status_pb2, status_pb2):
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            yield from walk(desc)


def _model_class(full_name: str) -> type[betterproto2.Message]:
    return default_message_pool.url_to_type[f"type.googleapis.com/{full_name}"]


def _model_full_name(cls: type) -> str:
    return default_message_pool.type_to_url[cls].removeprefix("type.googleapis.com/")


def _betterproto(model_cls: type[betterproto2.Message]) -> Any:
    """A model class's field metadata (a class property the library's type hints do not describe)."""
    return cast(Any, model_cls)._betterproto


def _describe_model_field(model_cls: type[betterproto2.Message], name: str) -> tuple[Any, ...]:
    """(number, type, repeated, oneof, referenced type) for one envoy-data-plane field."""
    meta = _betterproto(model_cls).meta_by_field_name[name]
    cls_by_field = _betterproto(model_cls).cls_by_field
    if meta.proto_type == betterproto2.TYPE_MAP:
        assert meta.map_meta is not None
        key_meta, value_meta = meta.map_meta
        value_ref = value_meta.proto_type
        if value_meta.proto_type == betterproto2.TYPE_MESSAGE:
            value_ref = _model_full_name(cls_by_field[f"{name}.value"])
        return (meta.number, ("map", key_meta.proto_type, value_ref), False, None, None)
    ref: Any = None
    if meta.proto_type == betterproto2.TYPE_MESSAGE:
        # Wrapper types (BoolValue, Timestamp) are unwrapped to Python scalars.
        ref = _model_full_name(meta.unwrap() if meta.unwrap else cls_by_field[name])
    elif meta.proto_type == betterproto2.TYPE_ENUM:
        ref = {m.name: m.value for m in cls_by_field[name]}
    return (meta.number, meta.proto_type, bool(meta.repeated), meta.group, ref)


def _describe_our_field(field: pb_descriptor.FieldDescriptor) -> tuple[Any, ...]:
    """The same tuple as _describe_model_field, for one field of our generated descriptors."""
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        key, value = message_type.fields_by_name["key"], message_type.fields_by_name["value"]
        value_ref: Any = _SCALAR_TYPE_NAMES[value.type]
        if value.message_type is not None:
            value_ref = value.message_type.full_name
        return (field.number, ("map", _SCALAR_TYPE_NAMES[key.type], value_ref), False, None, None)
    ref: Any = None
    if message_type is not None:
        ref = message_type.full_name
    elif field.enum_type is not None:
        ref = {v.name: v.number for v in field.enum_type.values}
    oneof = field.containing_oneof.name if field.containing_oneof is not None else None
    return (field.number, _SCALAR_TYPE_NAMES[field.type], field.is_repeated, oneof, ref)


def test_every_kept_field_matches_upstream_number_and_type() -> None:
    """Each message in our trimmed protos has exactly upstream's field names, numbers, types, oneofs and enum values."""
    checked = 0
    for desc in _our_messages():
        model_cls = _model_class(desc.full_name)
        model_fields = set(_betterproto(model_cls).meta_by_field_name)
        assert set(desc.fields_by_name) == model_fields, desc.full_name
        for field in desc.fields:
            assert _describe_our_field(field) == _describe_model_field(model_cls, field.name), (
                f"{desc.full_name}.{field.name}"
            )
            checked += 1
    # Guards against the walk silently finding nothing.
    assert checked >= 60


def test_http_status_codes_match_upstream() -> None:
    """Our envoy.type.v3.StatusCode enum has exactly upstream's names and values."""
    ours = {v.name: v.number for v in http_status_pb2.DESCRIPTOR.enum_types_by_name["StatusCode"].values}
    assert ours == {m.name: m.value for m in model_type.StatusCode}
    assert ours["Unauthorized"] == 401 and ours["Forbidden"] == 403


# --- service ---


class _RecordingChannel:
    """Just enough of grpc.Channel to capture the method path a stub registers."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        self.methods.append(method)
        return lambda *a, **k: None


def test_generated_service_uses_envoys_method_path() -> None:
    """The generated client stub and service descriptor use Envoy's full method name /envoy.service.auth.v3.Authorization/Check."""
    channel = _RecordingChannel()
    external_auth_pb2_grpc.AuthorizationStub(channel)
    assert channel.methods == [CHECK_METHOD]

    method = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].methods_by_name["Check"]
    assert f"/{method.containing_service.full_name}/{method.name}" == CHECK_METHOD
    assert method.input_type.full_name == "envoy.service.auth.v3.CheckRequest"
    assert method.output_type.full_name == "envoy.service.auth.v3.CheckResponse"


class _DenyAll(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self) -> None:
        self.seen: list[external_auth_pb2.CheckRequest] = []

    def Check(  # noqa: N802 - name fixed by the generated servicer
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        self.seen.append(request)
        return stub_denied_response()


def test_envoy_data_plane_client_reaches_generated_servicer() -> None:
    """A gRPC call made by envoy-data-plane's own Authorization client is routed to our servicer and both messages decode on arrival."""
    servicer = _DenyAll()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = model_auth.AuthorizationSyncStub(channel).check(model_check_request())
    finally:
        server.stop(grace=None)

    assert servicer.seen == [stub_check_request()]
    assert response == model_denied_response()
