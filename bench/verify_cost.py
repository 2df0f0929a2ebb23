"""What verifying one Cognito access token costs in-process, three ways, in microseconds per token.

    python -m bench.verify_cost [--tokens 2000] [--rounds 5]

Each way verifies the same N distinct valid tokens (RS256, one RSA-2048 key, kid set, Cognito access-token
claims), each token once, so every verification is a miss:
- `ours`: authz's TokenVerifier built by authz.server.build_verifier as the server builds it (production
  settings, metrics attached, the verdict cache on), with the pool's JWKS loaded first. A fresh verifier per
  round keeps every token a cache miss, and the miss path includes storing the verdict.
- `floor`: the RS256 signature check alone with `cryptography`: split off and base64url-decode the signature,
  then public_key.verify. No header, no claims; nothing can verify a token for less.
- `seed`: the Cruddur bootcamp's Flask CognitoJwtToken.verify: python-jose parses the header, the key is found by
  kid in the JWKS and rebuilt with jwk.construct on every call, jose verifies, then exp and client_id are checked
  in Python. The seed never checked iss; it is checked here too (one string compare) so all three judge the same
  claims that matter.

Timing is time.perf_counter_ns around a loop over all N tokens, after a warm-up, as the median of the rounds.
Before timing, every way must accept a valid token and reject one with a wrong signature, and during timing any
rejection aborts the run (VerificationFailed): a way that stopped verifying cannot pass for a fast one.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from jose import jwk, jwt
from jose.utils import base64url_decode

from authz.config import Settings, make_pool
from authz.metrics import Metrics
from authz.server import build_verifier
from bench.pool import CLIENT_ID, ISSUER, POOL_ID, BenchPool

_WARMUP_TOKENS = 200

Verify = Callable[[str], object]


class VerificationFailed(Exception):
    """A way rejected a valid token or accepted a forged one, so its timing would mean nothing."""


def forge(tokens: Sequence[str]) -> list[str]:
    """Each token with its neighbour's signature: well-formed, correctly sized, and wrong."""
    signatures = [token.rpartition(".")[2] for token in tokens]
    return [f"{token.rpartition('.')[0]}.{signatures[(i + 1) % len(tokens)]}" for i, token in enumerate(tokens)]


def _ours(pool: BenchPool) -> Verify:
    settings = Settings(pools=(make_pool(POOL_ID),), client_ids=frozenset({CLIENT_ID}))
    jwks = pool.jwks.encode()
    verifier, caches = build_verifier(settings, fetcher=lambda url, timeout, max_bytes: jwks, metrics=Metrics())
    for cache in caches:
        if not cache.refresh():
            raise RuntimeError("the bench JWKS did not load")
    return verifier.verify


def _floor(pool: BenchPool) -> Verify:
    public_key = pool.key.public_key()
    pkcs1v15, sha256 = padding.PKCS1v15(), hashes.SHA256()

    def verify(token: str) -> None:
        signing_input, _, signature = token.rpartition(".")
        public_key.verify(
            base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
            signing_input.encode("ascii"),
            pkcs1v15,
            sha256,
        )

    return verify


class SeedError(Exception):
    pass


class _SeedVerifier:
    """CognitoJwtToken.verify from the Cruddur bootcamp's backend-flask, trimmed to the calls it makes."""

    def __init__(self, jwks: bytes, issuer: str, client_id: str) -> None:
        self.jwk_keys: list[dict[str, Any]] = json.loads(jwks)["keys"]  # loaded once, in the seed's __init__
        self.issuer = issuer
        self.user_pool_client_id = client_id

    def verify(self, token: str) -> dict[str, Any]:
        headers = jwt.get_unverified_headers(token)
        kid = headers.get("kid")
        pkey_data = next((key for key in self.jwk_keys if key["kid"] == kid), None)
        if not pkey_data:
            raise SeedError("Public key not found in jwks.json")
        public_key = jwk.construct(pkey_data)  # rebuilt from the JWK on every call, as the seed does
        message, encoded_signature = str(token).rsplit(".", 1)
        decoded_signature = base64url_decode(encoded_signature.encode("utf-8"))
        if not public_key.verify(message.encode("utf8"), decoded_signature):
            raise SeedError("Signature verification failed")
        claims = jwt.get_unverified_claims(token)
        if "exp" not in claims or time.time() > claims["exp"]:
            raise SeedError("Token is expired")
        if claims.get("iss") != self.issuer:
            raise SeedError("Token was not issued by this pool")
        if claims.get("aud", claims.get("client_id")) != self.user_pool_client_id:
            raise SeedError("Token was not issued for this audience")
        return claims


def _seed(pool: BenchPool) -> Verify:
    return _SeedVerifier(pool.jwks.encode(), ISSUER, CLIENT_ID).verify


WAYS: dict[str, Callable[[BenchPool], Verify]] = {"ours": _ours, "floor": _floor, "seed": _seed}


def _accepts(verify: Verify, token: str) -> bool:
    try:
        verify(token)
    except Exception:  # noqa: BLE001 - each way rejects with its own exceptions; any of them is a rejection
        return False
    return True


def verdicts(tokens: int = 50) -> dict[str, tuple[int, int]]:
    """For each way: how many of `tokens` valid tokens it accepted, and how many forged ones it rejected."""
    pool = BenchPool()
    valid = pool.mint(tokens)
    forged = forge(valid)
    result = {}
    for name, build in WAYS.items():
        verify = build(pool)
        accepted = sum(_accepts(verify, token) for token in valid)
        verify = build(pool)  # fresh, so no verdict cached for the valid twin can answer for a forgery
        rejected = sum(not _accepts(verify, token) for token in forged)
        result[name] = (accepted, rejected)
    return result


def _check(name: str, verify: Verify, valid: str, forged: str) -> None:
    if not _accepts(verify, valid):
        raise VerificationFailed(f"{name} rejected a valid token")
    if _accepts(verify, forged):
        raise VerificationFailed(f"{name} accepted a token with a wrong signature")


def _microseconds_per_token(name: str, verify: Verify, tokens: Sequence[str]) -> float:
    gc.collect()
    started = time.perf_counter_ns()
    try:
        for token in tokens:
            verify(token)
    except Exception as exc:
        raise VerificationFailed(f"{name} rejected a valid token: {type(exc).__name__}") from exc
    return (time.perf_counter_ns() - started) / len(tokens) / 1000


def measure(tokens: int = 2000, rounds: int = 5) -> dict[str, float]:
    """Microseconds per token for each way, the median of `rounds` rounds over `tokens` distinct valid tokens."""
    if tokens < 2 or rounds < 1:
        raise ValueError("need at least 2 tokens and 1 round")
    pool = BenchPool()
    valid = pool.mint(tokens)
    forged = forge(valid[:2])
    for name, build in WAYS.items():
        _check(name, build(pool), valid[0], forged[0])
        _microseconds_per_token(name, build(pool), valid[:_WARMUP_TOKENS])
    samples: dict[str, list[float]] = {name: [] for name in WAYS}
    # Ways take turns within each round, so drift in the machine's speed falls on all of them alike.
    for _ in range(rounds):
        for name, build in WAYS.items():
            samples[name].append(_microseconds_per_token(name, build(pool), valid))
    return {f"verify_us_{name}": round(statistics.median(values), 2) for name, values in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify_cost", description=__doc__.partition("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2000, help="distinct tokens per round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        result = measure(tokens=args.tokens, rounds=args.rounds)
    except VerificationFailed as exc:
        print(f"bench.verify_cost: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
