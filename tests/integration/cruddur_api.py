"""A client of the Cruddur API through Envoy: users signed up on the emulator, requests, tokens, recorders."""

from __future__ import annotations

import http.server
import json
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import requests

from bench.emulator import EmulatorSigner
from stack.cognito import register, sign_in, user_sub
from stack.local import LocalStack
from stack.processes import ManagedProcess
from tests.conftest import LoopbackHttp

PASSWORD = "Int3gration-Passw0rd!"
_SIGNER = EmulatorSigner()


@dataclass(frozen=True)
class User:
    email: str
    sub: str
    access_token: str
    id_token: str


def sign_up(stack: LocalStack, cognito: Any, *, client_id: str | None = None) -> User:
    """A new user signs up, is confirmed by an admin (the emulator sends no email) and signs in."""
    env = stack.cognito_env
    email = f"user-{uuid.uuid4().hex[:8]}@cruddur.local"
    client_id = client_id or env["AWS_COGNITO_CLIENT_ID"]
    register(
        cognito,
        env["AWS_COGNITO_USER_POOLS_ID"],
        client_id,
        email=email,
        password=PASSWORD,
        name="Integration User",
        handle=email.split("@")[0],
    )
    tokens = sign_in(cognito, client_id, email, PASSWORD)
    sub = user_sub(cognito, tokens["AccessToken"])
    return User(email=email, sub=sub, access_token=tokens["AccessToken"], id_token=tokens["IdToken"])


def resign(token: str, **claims: Any) -> str:
    """The token's claims, changed, signed again with the emulator's own key: a token the pool could have issued."""
    return _SIGNER.resign(token, **claims)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def get(stack: LocalStack, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(stack.envoy_url + path, timeout=10, allow_redirects=False, **kwargs)


def raw_request(port: int, request: bytes) -> bytes:
    """Send bytes exactly as given (no client library normalizing the path or header names) to 127.0.0.1:port and
    read the reply's first 64 KiB."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        return connection.recv(65536)


class Received(NamedTuple):
    """One request as the upstream got it: `headers` by lowered name, `lines` every header line in order with
    repeats kept (a dict shows a repeated header once)."""

    method: str
    path: str
    headers: dict[str, str]
    lines: list[tuple[str, str]]


class RecordingUpstream(LoopbackHttp):
    """An HTTP upstream that records the method, path and headers of every request a client sent through Envoy
    (Envoy's own health checks are not recorded) and answers 200 {}."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        recorded = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                lines = [(name.lower(), value) for name, value in self.headers.items()]
                headers = dict(lines)
                if headers.get("user-agent") != "Envoy/HC":
                    recorded.append(Received(self.command, self.path, headers, lines))
                body = json.dumps({"status": "ok"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_OPTIONS = do_GET  # noqa: N815 - the http.server API

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)

    def __enter__(self) -> RecordingUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def access_log(stack: LocalStack | ManagedProcess) -> list[dict[str, Any]]:
    """Envoy's JSON access log lines so far (a stack's Envoy, or an Envoy process): complete lines only, as Envoy may
    be halfway through writing the last (its buffered log writer can flush in the middle of a line; seen on 1.36)."""
    envoy = stack.process("envoy") if isinstance(stack, LocalStack) else stack
    text = Path(envoy.log_path).read_text()
    lines = text[: text.rfind("\n") + 1].splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def envoy_stat(stack: LocalStack, name: str) -> int:
    """One of Envoy's counters or gauges by its full name (0 while Envoy has not created it yet)."""
    text = requests.get(f"{stack.admin_url}/stats?filter=^{name}$", timeout=5).text
    return int(text.split(":")[1]) if ":" in text else 0
