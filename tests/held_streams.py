"""A hostile gRPC client: raw HTTP/2 Check streams that announce a request message and never finish sending it.

grpcio's sync server gave each such call a worker thread that waited for the message with no deadline, so
AUTHZ_GRPC_WORKERS of them stopped every Check. The security and integration suites hold them open against the
server and prove that Checks arriving complete are still answered.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from types import TracebackType

import h2.config
import h2.connection
import h2.events
import h2.exceptions

CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"


class HeldStreams:
    """`streams` Check calls on one HTTP/2 connection, each sending its headers and a gRPC message prefix that
    announces `announced` bytes, then nothing (trickle: one more byte of each message every `trickle` seconds).
    Use as a context manager; `closed_by_server` is set when the server ends the connection."""

    def __init__(
        self, host: str, port: int, *, streams: int, announced: int = 16, trickle: float | None = None
    ) -> None:
        self._address = (host, port)
        self._streams = streams
        self._announced = announced
        self._trickle = trickle
        self._stop = threading.Event()
        self.closed_by_server = threading.Event()
        self.opened = 0
        self.max_streams = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HeldStreams:
        sock = self._sock = socket.create_connection(self._address, timeout=5)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        # The server's SETTINGS first, so the calls opened below respect its SETTINGS_MAX_CONCURRENT_STREAMS.
        settled = False
        while not settled:
            data = sock.recv(65_536)
            if not data:
                raise ConnectionError("the server closed the connection before its SETTINGS")
            settled = any(isinstance(event, h2.events.RemoteSettingsChanged) for event in conn.receive_data(data))
        sock.sendall(conn.data_to_send())
        self.max_streams = conn.remote_settings.max_concurrent_streams
        ids = []
        for _ in range(self._streams):
            try:
                stream_id = conn.get_next_available_stream_id()
                conn.send_headers(
                    stream_id,
                    [
                        (":method", "POST"),
                        (":scheme", "http"),
                        (":path", CHECK_PATH),
                        (":authority", f"{self._address[0]}:{self._address[1]}"),
                        ("content-type", "application/grpc"),
                        ("te", "trailers"),
                    ],
                )
                conn.send_data(stream_id, b"\x00" + struct.pack(">I", self._announced))
            except h2.exceptions.TooManyStreamsError:
                break  # the server's SETTINGS_MAX_CONCURRENT_STREAMS: all it lets one connection hold
            ids.append(stream_id)
        sock.sendall(conn.data_to_send())
        self.opened = len(ids)
        self._thread = threading.Thread(target=self._hold, args=(sock, conn, ids), daemon=True)
        self._thread.start()
        return self

    def _hold(self, sock: socket.socket, conn: h2.connection.H2Connection, ids: list[int]) -> None:
        sock.settimeout(self._trickle or 0.2)
        next_trickle = time.monotonic() + (self._trickle or 0)
        while not self._stop.is_set():
            try:
                data = sock.recv(65_536)
            except TimeoutError:
                data = None
            except OSError:
                self.closed_by_server.set()
                return
            if data == b"":
                self.closed_by_server.set()
                return
            try:
                if data:
                    conn.receive_data(data)  # a GOAWAY among them: the server closes the connection after its grace
                if self._trickle is not None and time.monotonic() >= next_trickle:
                    next_trickle += self._trickle
                    for stream_id in ids:
                        if conn.streams.get(stream_id) is not None and conn.streams[stream_id].open:
                            conn.send_data(stream_id, b"\x00")
                sock.sendall(conn.data_to_send())
            except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, OSError):
                continue

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
