"""Tokens the local Cognito emulator would issue, minted without it.

moto signs every pool's tokens with one RSA key that ships inside the moto package (which is why the emulator is
for development only). Re-signing a real emulator token's claims with that key gives tokens the stack must
treat exactly like the emulator's own: expired ones, distinct ones by the thousand for load and soak runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey
from moto.utilities.utils import load_resource


class EmulatorSigner:
    def __init__(self) -> None:
        self._key = RSAKey.import_key(load_resource("cognitoidp/resources/jwks-private.json"))

    def claims(self, token: str) -> dict[str, Any]:
        return dict(jwt.decode(token, self._key).claims)

    def resign(self, token: str, **claims: Any) -> str:
        """The token's claims, changed, signed again with the emulator's key (and the same header)."""
        original = jwt.decode(token, self._key)
        return jwt.encode(dict(original.header), {**original.claims, **claims}, self._key)

    def distinct(self, token: str, count: int, **changes: Any) -> Iterator[str]:
        """count tokens with the token's claims (and changes) and a fresh `jti` each: alike, never equal."""
        original = jwt.decode(token, self._key)
        header, claims = dict(original.header), {**original.claims, **changes}
        for _ in range(count):
            yield jwt.encode(header, {**claims, "jti": str(uuid.uuid4())}, self._key)
