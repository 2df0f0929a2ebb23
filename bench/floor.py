"""The Python floor: an ext_authz server that allows every Check with one prebuilt answer and verifies nothing.

    python -m bench.floor [--addr 127.0.0.1:9393]

Envoy in front of it measures what grpcio, protobuf and Envoy cost on their own, so the bench can say how much
of authz's latency is token verification and how much is the stack it stands on.

Deliberately identical to authz/server.py, so the difference between the two is only the work inside Check:
- the same grpcio (the project's pinned version, from the same venv) and the same generated stubs (authz._proto);
- grpcio's asyncio server on an event loop in a thread of its own (authz.server.event_loop_thread), with the
  same server options (authz.server.grpc_options), and a coroutine Check answering on the loop, as authz's does
  for every Check that needs no network;
- the same services: Authorization, grpc.health.v1 (Envoy health-checks the authz cluster; SERVING from the
  start here, as there are no keys to wait for) and reflection;
- an allow of the same shape as a real one: status OK and seven x-user-* headers, each with
  OVERWRITE_IF_EXISTS_OR_ADD and `append: false`, as service.py sends them, and the caller's dynamic metadata. The
  request is still parsed by grpcio (the servicer receives a CheckRequest), only never read.

Deliberately left out, because they are what the comparison measures: token parsing and verification, the
verdict cache, the policy, and the per-Check metrics and decision log.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf.wrappers_pb2 import BoolValue
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz._proto.google.rpc import status_pb2
from authz.config import Settings
from authz.server import event_loop_thread, grpc_options
from identity_headers import METADATA_KEYS, header_names

SERVICE_NAME = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
_GRACE_SECONDS = 1.0

# What a real allow of a Cognito access token in one group carries: the identity headers, in the order authz sets them.
IDENTITY_HEADERS = tuple(
    zip(
        header_names(),
        (
            "7c0a1d2e-0000-4000-8000-000000000001",  # sub
            "andrew",  # name
            "cruddur-users",  # groups
            "aws.cognito.signin.user.admin",  # scopes
            "4f1client0allowed0000000",  # client-id
            "access",  # token-use
            "user",  # principal
            "",  # idp: none for the pool's own users (listed in headers_to_remove, as a real allow does)
        ),
        strict=True,
    )
)


CALLER_METADATA = dict(
    zip(
        METADATA_KEYS,
        (
            IDENTITY_HEADERS[0][1],  # sub
            "user",  # principal
            IDENTITY_HEADERS[4][1],  # client_id
            "access",  # token_use
            "ca-central-1_AbC123",  # pool
            ["cruddur-users"],  # groups
            ["aws.cognito.signin.user.admin"],  # scopes
        ),
        strict=True,
    )
)


def _allow_response() -> external_auth_pb2.CheckResponse:
    response = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=0),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=name, value=value),
                    append=BoolValue(value=False),
                    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                )
                for name, value in IDENTITY_HEADERS
                if value
            ],
            headers_to_remove=[name for name, value in IDENTITY_HEADERS if not value],
        ),
    )
    # The caller's dynamic metadata, as a real allow carries it (identity_headers.METADATA_KEYS).
    response.dynamic_metadata.update(CALLER_METADATA)
    return response


class ConstantAllow(external_auth_pb2_grpc.AuthorizationServicer):
    """Answers every Check with the same prebuilt allow."""

    def __init__(self) -> None:
        self._response = _allow_response()

    async def Check(  # noqa: N802 - the gRPC method's name, fixed by the generated servicer
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> external_auth_pb2.CheckResponse:
        return self._response


@contextmanager
def serve_floor(addr: str) -> Iterator[int]:
    """Serve the floor on addr (port 0 picks a free port), yielding the bound port; stop gracefully on exit."""
    with event_loop_thread() as loop:

        def on_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60.0)

        async def start() -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
            # Built as authz.server builds its server, on the loop it serves from.
            server = grpc.aio.server(options=grpc_options(Settings.grpc_connection_age_seconds))
            external_auth_pb2_grpc.add_AuthorizationServicer_to_server(ConstantAllow(), server)
            health_servicer = health.aio.HealthServicer()
            for name in ("", SERVICE_NAME):
                await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
            reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
            try:
                port = server.add_insecure_port(addr)
            except RuntimeError as exc:  # grpcio raises RuntimeError when the port is taken
                raise OSError(f"cannot listen on {addr}: {exc}") from None
            if port == 0:
                raise OSError(f"cannot listen on {addr}")
            await server.start()
            return server, health_servicer, port

        async def stop(server: grpc.aio.Server, health_servicer: health.aio.HealthServicer) -> None:
            await health_servicer.enter_graceful_shutdown()
            await server.stop(_GRACE_SECONDS)

        server, health_servicer, port = on_loop(start())
        try:
            yield port
        finally:
            on_loop(stop(server, health_servicer))


def _address(value: str) -> str:
    # grpcio takes port 99999 as 34463 without a word; authz's config refuses it, and so does the floor.
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.partition("\n\n")[0])
    parser.add_argument(
        "--addr", type=_address, default="127.0.0.1:9393", help="HOST:PORT to listen on (default %(default)s)"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with serve_floor(args.addr) as port:
            print(f"bench.floor: listening on port {port}", file=sys.stderr, flush=True)
            stop.wait()
    except OSError as exc:
        print(f"bench.floor: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
