"""A loopback proxy in front of the Cognito emulator that counts the GetUser calls it forwards, by token.

Every request (the JWKS GETs too, since authz derives AUTHZ_JWKS_URL from the Cognito endpoint) goes on to the
emulator unchanged and its answer comes back unchanged; a POST whose X-Amz-Target ends in `.GetUser` is counted under
the SHA-256 digest of its AccessToken (authz.cache.token_digest), so a test can tell how often the replicas asked
Cognito about one token. A test may also hold a token's next GetUser at the proxy until it releases it (`hold`),
to interleave what the replicas do around that call.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from authz.cache import token_digest
from tests.conftest import LoopbackHttp

# Hop-by-hop headers are the proxy's own business on each side; the body is relayed whole, with its own length.
_NOT_RELAYED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


class Hold(NamedTuple):
    """One GetUser held at the proxy: `arrived` once the call reached it, sent on to Cognito once `released`."""

    arrived: threading.Event
    released: threading.Event


class CountingCognito(LoopbackHttp):
    """Forwards to the emulator at `upstream` (http://host:port) and counts GetUser calls per token digest."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        host, port = target.hostname or "127.0.0.1", target.port or 80
        self._lock = threading.Lock()
        self._get_users: Counter[bytes] = Counter()
        self._holds: dict[bytes, Hold] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle(self) -> None:
                # A replica stopped by a test drops its pooled keep-alive connections: nothing to report.
                with contextlib.suppress(OSError):
                    super().handle()

            def do_GET(self) -> None:
                self._forward(b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("X-Amz-Target", "").endswith(".GetUser"):
                    hold = outer._count(body)
                    if hold is not None:
                        hold.arrived.set()
                        hold.released.wait(timeout=10)
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection(host, port, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_RELAYED}
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    self.send_response(answer.status)
                    for name, value in answer.getheaders():
                        if name.lower() not in _NOT_RELAYED:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    upstream.close()

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_user_calls(self, token: str) -> int:
        """GetUser calls forwarded so far about this token."""
        with self._lock:
            return self._get_users[token_digest(token)]

    def hold(self, token: str) -> Hold:
        """The next GetUser about this token waits at the proxy (its `arrived` set) until `released` is set."""
        hold = Hold(threading.Event(), threading.Event())
        with self._lock:
            self._holds[token_digest(token)] = hold
        return hold

    def _count(self, body: bytes) -> Hold | None:
        try:
            token = json.loads(body)["AccessToken"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(token, str):
            return None
        digest = token_digest(token)
        with self._lock:
            self._get_users[digest] += 1
            return self._holds.pop(digest, None)

    def __enter__(self) -> CountingCognito:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
