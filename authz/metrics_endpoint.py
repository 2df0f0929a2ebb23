"""The Prometheus endpoint: prometheus_client's WSGI app behind a small asyncio HTTP/1.1 front with deadlines and a
bound on open connections.

A scraper sends one short GET and reads the answer. A threaded server (wsgiref, prometheus_client's own) gives every
connection a thread that waits with no deadline, so 200 connections that never finish their headers held 200
threads forever. Here a connection is a coroutine on the server's event loop: its request must arrive whole within
READ_SECONDS and its answer leave within WRITE_SECONDS, and a request head over MAX_HEAD_BYTES is dropped. At most
MAX_READING connections may be waiting for their request at once: a new one closes the oldest, so a scraper's fresh
connection, whose request comes at once, is answered however many connections others hold open. One request per
connection (`Connection: close`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger("authz.metrics")

READ_SECONDS = 5.0
WRITE_SECONDS = 10.0
MAX_HEAD_BYTES = 16_384
# Health for HTTP checkers (the HTTP transport's, where gRPC health is not there): 200 once every pool has keys.
HEALTH_PATH = "/healthz"
# Far more than any set of scrapers needs, few enough that held connections cost little.
MAX_READING = 64
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class MetricsEndpoint:
    """Serves `registry` over HTTP on the running event loop; `start` it, then `close` it."""

    def __init__(self, registry: CollectorRegistry, *, healthy: Callable[[], bool] = lambda: True) -> None:
        """healthy: whether /healthz answers 200 (serving) or 503 (not yet: keys not loaded, or shutting down)."""
        self._app: WsgiApp = make_wsgi_app(registry)
        self._healthy = healthy
        # Connections still waiting for their request, oldest first (a dict keeps insertion order).
        self._reading: dict[asyncio.StreamWriter, None] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0 picks a free one, then `port` says which); OSError when it cannot."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._reading) >= MAX_READING:
            oldest = next(iter(self._reading))
            del self._reading[oldest]
            oldest.transport.abort()
        self._reading[writer] = None
        try:
            try:
                async with asyncio.timeout(READ_SECONDS):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return  # too slow, too large, closed as the oldest, or gone: nothing worth answering
            finally:
                self._reading.pop(writer, None)
            writer.write(self._answer(head))
            writer.close()  # once the answer is out
            async with asyncio.timeout(WRITE_SECONDS):
                await writer.wait_closed()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.transport.abort()  # nothing left to do once closed; drops a client that never reads its answer

    def _answer(self, head: bytes) -> bytes:
        try:
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            headers = dict(_header(line) for line in header_lines if line)
        except ValueError:
            return _BAD_REQUEST
        if not version.startswith("HTTP/1."):
            return _BAD_REQUEST
        path, _, query = target.partition("?")
        if path == HEALTH_PATH:
            status, text = ("200 OK", "serving") if self._healthy() else ("503 Service Unavailable", "not serving")
            return (
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(text)}\r\n"
                f"Connection: close\r\n\r\n{text}"
            ).encode("latin-1")
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": unquote(path, encoding="latin-1"),
            "QUERY_STRING": query,
            "SERVER_PROTOCOL": version,
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
        } | {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
        started: list[Any] = []

        def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: object = None) -> None:
            started[:] = [status, response_headers]

        try:
            body = b"".join(self._app(environ, start_response))
        except Exception:  # a collector's failure is a 500 for this scrape, never a dead endpoint
            log.exception("metrics scrape failed")
            return b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        status, response_headers = started
        lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in response_headers)]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1") + body


def _header(line: str) -> tuple[str, str]:
    name, separator, value = line.partition(":")
    if not separator or not name or name != name.strip():
        raise ValueError("not a header line")
    return name, value.strip()
