"""A stand-in Cognito pool for the bench: its own RSA key, its JWKS and a GetUser that always answers "active"
served on loopback, and Cognito-shaped access tokens minted by the thousand (in parallel: an RSA-2048 signature
costs about half a millisecond)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

REGION = "ca-central-1"
POOL_ID = f"{REGION}_BenchPool"
CLIENT_ID = "benchclient0000000000000000"
KID = "bench-key-1"
ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL_ID}"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class BenchPool:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()
        self.jwks = json.dumps(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "use": "sig",
                        "alg": "RS256",
                        "kid": KID,
                        "n": _uint(numbers.n),
                        "e": _uint(numbers.e),
                    }
                ]
            }
        )
        self.get_user_calls = 0

    def authz_env(self, endpoint: str) -> dict[str, str]:
        """The environment that points an authz server at this pool served at endpoint (see serve())."""
        return {
            "AWS_COGNITO_USER_POOLS_ID": POOL_ID,
            "AWS_COGNITO_CLIENT_ID": CLIENT_ID,
            "AUTHZ_JWKS_URL": f"{endpoint}/{POOL_ID}/.well-known/jwks.json",
            "AWS_ENDPOINT_URL_COGNITO_IDP": endpoint,
        }

    def mint(self, count: int, *, lifetime: int = 3600) -> list[str]:
        """count distinct valid access tokens (one caller each)."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        workers = max(1, min(os.cpu_count() or 1, count // 500))
        if workers == 1:
            return _mint_batch(pem, count, lifetime)
        sizes = [count // workers + (1 if index < count % workers else 0) for index in range(workers)]
        with ProcessPoolExecutor(workers) as pool:
            batches = pool.map(_mint_batch, [pem] * workers, sizes, [lifetime] * workers)
            return [token for batch in batches for token in batch]

    @contextmanager
    def serve(self) -> Iterator[str]:
        """The pool's endpoint on a loopback HTTP server; yields its URL. GET serves the JWKS, and POST answers
        every GetUser (AUTHZ_REVOCATION=cognito) as Cognito answers for an active user, counting the calls: the
        bench measures what confirming a token costs authz, not what Cognito's latency adds."""
        jwks = self.jwks.encode()
        user = json.dumps({"Username": "bench-user", "UserAttributes": []}).encode()
        bench_pool = self
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
            # Headers and body go out as two writes: with Nagle on, each answer would wait for a delayed ACK (40 ms).
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                self._reply(jwks, "application/json")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("X-Amz-Target") != "AWSCognitoIdentityProviderService.GetUser":
                    self.send_error(400)
                    return
                with lock:
                    bench_pool.get_user_calls += 1
                self._reply(user, "application/x-amz-json-1.1")

            def _reply(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def _mint_batch(pem: bytes, count: int, lifetime: int) -> list[str]:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey), "BenchPool hands its own RSA key to each batch"
    header = _b64url(json.dumps({"kid": KID, "alg": "RS256"}).encode())
    now = int(time.time())
    tokens = []
    for _ in range(count):
        sub = str(uuid.uuid4())
        claims = {
            "sub": sub,
            "iss": ISSUER,
            "client_id": CLIENT_ID,
            "origin_jti": str(uuid.uuid4()),
            "event_id": str(uuid.uuid4()),
            "token_use": "access",
            "scope": "aws.cognito.signin.user.admin",
            "auth_time": now,
            "exp": now + lifetime,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "username": sub,
        }
        signing_input = f"{header}.{_b64url(json.dumps(claims).encode())}"
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        tokens.append(f"{signing_input}.{_b64url(signature)}")
    return tokens
