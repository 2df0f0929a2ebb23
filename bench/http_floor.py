"""The HTTP floor: an ext_authz server for Envoy's HTTP mode that allows every request with one prebuilt answer and
verifies nothing.

    python -m bench.http_floor [--addr 127.0.0.1:9493] [--health-addr 127.0.0.1:9494]

What bench/floor.py is to `python -m authz serve`, this is to `python -m authz serve-http`: Envoy in front of it
measures what granian, its RSGI interface and Envoy's HTTP ext_authz cost on their own.

Deliberately identical to authz's HTTP transport (authz/server.py, authz/http.py), so the difference between the
two is only the work inside the request:
- the same granian (the project's pin) embedded in the same event loop (uvloop's) in a thread of its own
  (authz.server.event_loop_thread), RSGI, one runtime thread, the same task implementation (granian's own, not
  asyncio Tasks), granian's logging off, and authz's backlog,
  connection bound and request-head timeout (authz.server.HTTP_*);
- health apart from the authorization port, as authz's: GET /healthz on the health address, served by authz's own
  metrics endpoint on the same loop (200 from the start here: there are no keys to wait for), which Envoy's HTTP
  mode health-checks;
- an allow of the same shape as a real one: 200, no body, seven x-user-* headers (bench.floor's) and the caller's
  metadata headers. The request's head is still parsed by granian, only never read.

Deliberately left out, because they are what the comparison measures: reading the request, token parsing and
verification, the verdict cache, the policy, the reply's memo, and the per-request metrics and decision log.
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

from granian.server.embed import Server as EmbeddedHttpServer
from prometheus_client import CollectorRegistry

from authz.metrics_endpoint import MetricsEndpoint
from authz.server import Transport, event_loop_thread, start_http_server
from bench.floor import CALLER_METADATA, IDENTITY_HEADERS, _address

_STOP_SECONDS = 5.0


class ConstantAllowHttp:
    """Answers every request with the same prebuilt allow."""

    def __init__(self) -> None:
        self._headers = [
            *((name, value) for name, value in IDENTITY_HEADERS if value),
            *((key, ",".join(value) if isinstance(value, list) else value) for key, value in CALLER_METADATA.items()),
        ]

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        proto.response_empty(200, self._headers)


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


@contextmanager
def serve_http_floor(addr: str, health_addr: str) -> Iterator[tuple[int, int]]:
    """Serve the floor on addr (a port of its own: granian needs one) and /healthz on health_addr (port 0 picks
    one), yielding both ports; stop on exit."""
    host, port = _split(addr)
    if port == 0:
        raise OSError(f"cannot listen on {addr}: the HTTP floor needs a port, not 0")
    health_host, health_port = _split(health_addr)
    with event_loop_thread(Transport.HTTP) as loop:

        def on_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60.0)

        async def start() -> tuple[EmbeddedHttpServer, asyncio.Task[None], MetricsEndpoint]:
            health = MetricsEndpoint(CollectorRegistry(), healthy=lambda: True)
            await health.start(health_host, health_port)
            # authz.server's own HTTP server, on the loop it serves from.
            try:
                server, task = await start_http_server(ConstantAllowHttp(), host, port)
            except OSError:
                await health.close()
                raise
            return server, task, health

        async def stop(server: EmbeddedHttpServer, task: asyncio.Task[None], health: MetricsEndpoint) -> None:
            server.stop()
            try:
                await asyncio.wait_for(task, timeout=_STOP_SECONDS)
            finally:
                await health.close()

        server, task, health = on_loop(start())
        try:
            yield port, health.port
        finally:
            on_loop(stop(server, task, health))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_floor", description=__doc__.partition("\n\n")[0])
    parser.add_argument(
        "--addr", type=_address, default="127.0.0.1:9493", help="HOST:PORT to answer on (default %(default)s)"
    )
    parser.add_argument(
        "--health-addr",
        type=_address,
        default="127.0.0.1:9494",
        help="HOST:PORT of GET /healthz (default %(default)s)",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with serve_http_floor(args.addr, args.health_addr) as (port, health_port):
            print(f"bench.http_floor: answering on port {port}, /healthz on {health_port}", file=sys.stderr, flush=True)
            stop.wait()
    except OSError as exc:
        print(f"bench.http_floor: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
