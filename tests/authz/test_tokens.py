"""Token verification as the server wires it: a real JwksCache, real RS256 crypto, a fake clock and fetcher."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import json
import types
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from jose.backends.base import Key

from authz.errors import (
    BadSignature,
    InvalidClaim,
    KeysUnavailable,
    MalformedAuthorization,
    MalformedToken,
    RouteMisconfigured,
    TokenExpired,
    TokenNotYetValid,
    TokenTooLarge,
    UnknownSigningKey,
    UnsupportedAlgorithm,
    UnsupportedHeader,
    UntrustedIssuer,
    WrongClient,
    WrongTokenUse,
)
from authz.jwks import JwksCache
from authz.tokens import (
    MAX_KEPT_CLAIMS,
    TokenVerifier,
    VerifiedToken,
    bearer_token,
    claim_header_value,
    claim_json,
)
from identity_headers import MAX_VALUE_BYTES
from tests.conftest import (
    CLIENT_ID,
    ISSUER,
    KID,
    NOW,
    OTHER_CLIENT_ID,
    OTHER_ISSUER,
    POOL_ID,
    REGION,
    FakeClock,
    access_claims,
    b64url,
    client_claims,
    encode_segment,
    id_claims,
    jwks_document,
    mint,
    private_key,
    public_jwk,
)

JWKS_URL = f"{ISSUER}/.well-known/jwks.json"
LEEWAY = 30
MAX_TOKEN_BYTES = 16_384
# Marks a claim to be removed rather than set (None is a legitimate JSON null).
MISSING = object()


class ServedJwks:
    """The injected fetcher: serves whatever JWKS document the test last set."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __call__(self, url: str, timeout: float, max_bytes: int) -> bytes:
        return self.body


class CountingKeySource:
    """A real JwksCache behind a counter: every get_key call is a key lookup the verifier needed for crypto."""

    def __init__(self, inner: JwksCache) -> None:
        self.inner = inner
        self.calls = 0

    def get_key(self, kid: str, *, wait: bool = True) -> Key:
        self.calls += 1
        return self.inner.get_key(kid, wait=wait)


@dataclass
class Harness:
    verifier: TokenVerifier
    keys: CountingKeySource
    jwks: ServedJwks
    clock: FakeClock

    def verify(self, token: str) -> VerifiedToken:
        return self.verifier.verify(token)


def build_harness(
    *,
    jwks: bytes | None = None,
    leeway: float = LEEWAY,
    cache_size: int = 100,
    max_token_bytes: int = MAX_TOKEN_BYTES,
    claim_headers: tuple[str, ...] = (),
) -> Harness:
    clock = FakeClock(NOW)
    served = ServedJwks(jwks if jwks is not None else jwks_document())
    keys = CountingKeySource(JwksCache(JWKS_URL, fetcher=served, clock=clock))
    verifier = TokenVerifier(
        issuers={ISSUER: POOL_ID},
        key_sources={ISSUER: keys},
        client_ids={CLIENT_ID},
        leeway_seconds=leeway,
        max_token_bytes=max_token_bytes,
        clock=clock,
        cache_size=cache_size,
        claim_headers=claim_headers,
    )
    return Harness(verifier, keys, served, clock)


@pytest.fixture
def harness() -> Harness:
    return build_harness()


def edited(claims: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of claims with members set (None included) or, for MISSING, removed."""
    result = dict(claims)
    for name, value in changes.items():
        if value is MISSING:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def sign_raw(signing_input: str) -> str:
    """A token over an arbitrary signing input, signed by the pool's real key."""
    signature = private_key().sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def segments(token: str) -> list[str]:
    return token.split(".")


# --- bearer_token -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    """The Bearer scheme name is matched case-insensitively and the token after it is returned."""
    assert bearer_token(f"{scheme} abc.def.ghi", MAX_TOKEN_BYTES) == "abc.def.ghi"


@pytest.mark.parametrize(
    "value",
    [
        "Basic dXNlcjpwYXNz",
        "Token abc.def.ghi",
        "Bearerabc.def.ghi",
        "Bearer",
        "Bearer ",
        "",
        "Bearer a b",
        "Bearer a,Bearer b",
        "Bearer\tabc.def.ghi",
        "Bearer \tabc.def.ghi",
        "Bearer abc.def.ghi\t",
    ],
    ids=[
        "basic",
        "token-scheme",
        "no-space",
        "scheme-only",
        "empty-token",
        "empty-value",
        "two-tokens",
        "comma-joined-duplicates",
        "tab-separator",
        "space-then-tab",
        "trailing-tab",
    ],
)
def test_malformed_authorization_is_rejected(value: str) -> None:
    """Anything but a single `Bearer <token>` is a malformed Authorization value."""
    with pytest.raises(MalformedAuthorization):
        bearer_token(value, MAX_TOKEN_BYTES)


def test_authorization_over_the_cap_is_too_large() -> None:
    """An Authorization value whose token is longer than the cap is rejected as too large."""
    with pytest.raises(TokenTooLarge):
        bearer_token("Bearer " + "a" * (MAX_TOKEN_BYTES + 1), MAX_TOKEN_BYTES)


def test_authorization_at_the_cap_is_accepted() -> None:
    """A token exactly at the cap is still returned."""
    token = "a" * MAX_TOKEN_BYTES
    assert bearer_token(f"Bearer {token}", MAX_TOKEN_BYTES) == token


# --- size and structure, before any crypto ----------------------------------------------------------------


def test_token_over_max_token_bytes_is_too_large() -> None:
    """A token one byte over max_token_bytes is rejected as too large without a key lookup."""
    token = mint()
    harness = build_harness(max_token_bytes=len(token) - 1)
    with pytest.raises(TokenTooLarge):
        harness.verify(token)
    assert harness.keys.calls == 0


def test_token_at_max_token_bytes_is_accepted() -> None:
    """A valid token exactly max_token_bytes long verifies."""
    token = mint()
    assert build_harness(max_token_bytes=len(token)).verify(token).sub == access_claims()["sub"]


def _jwe() -> str:
    header = encode_segment({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": KID})
    return ".".join([header, b64url(b"k" * 32), b64url(b"iv" * 6), b64url(b"ciphertext"), b64url(b"t" * 16)])


@pytest.mark.parametrize(
    "make_token",
    [
        lambda t: "",
        lambda t: segments(t)[0],
        lambda t: ".".join(segments(t)[:2]),
        lambda t: f"{t}.{segments(t)[2]}",
        lambda t: _jwe(),
    ],
    ids=["empty", "one-segment", "two-segments", "four-segments", "five-segment-jwe"],
)
def test_token_without_exactly_three_segments_is_malformed(harness: Harness, make_token: Any) -> None:
    """A token of fewer or more than three segments, a JWE included, is malformed before any key lookup."""
    with pytest.raises(MalformedToken):
        harness.verify(make_token(mint()))
    assert harness.keys.calls == 0


def _replace_segment(token: str, index: int, value: str) -> str:
    parts = segments(token)
    parts[index] = value
    return ".".join(parts)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: _replace_segment(t, 0, segments(t)[0][:5] + "+" + segments(t)[0][6:]),
        lambda t: _replace_segment(t, 1, segments(t)[1][:5] + "/" + segments(t)[1][6:]),
        lambda t: t + "==",
        lambda t: _replace_segment(t, 1, segments(t)[1][:10] + " " + segments(t)[1][10:]),
        lambda t: " " + t,
        lambda t: _replace_segment(t, 1, ""),
        lambda t: _replace_segment(t, 2, ""),
        lambda t: _replace_segment(t, 1, segments(t)[1] + "\u00e9"),
        lambda t: t + "\n",
    ],
    ids=[
        "plus",
        "slash",
        "padding",
        "inner-space",
        "leading-space",
        "empty-payload",
        "empty-signature",
        "non-ascii",
        "trailing-newline",
    ],
)
def test_non_base64url_characters_are_malformed(harness: Harness, mutate: Any) -> None:
    """A segment holding anything outside the unpadded base64url alphabet is malformed before any key lookup."""
    with pytest.raises(MalformedToken):
        harness.verify(mutate(mint()))
    assert harness.keys.calls == 0


@pytest.mark.parametrize("index", [0, 1], ids=["header", "payload"])
def test_segment_ending_in_newline_is_malformed_even_when_signed(harness: Harness, index: int) -> None:
    """A header or payload segment ending in a newline is malformed, even when it decodes and is signed over."""
    raw = [
        json.dumps({"alg": "RS256", "kid": KID}, separators=(",", ":")),
        json.dumps(access_claims(), separators=(",", ":")),
    ]
    # Trailing JSON whitespace makes the segment a multiple of 4 characters, so a lenient decoder skips the "\n".
    while len(raw[index]) % 3:
        raw[index] += " "
    parts = [b64url(part.encode()) for part in raw]
    parts[index] += "\n"
    token = sign_raw(".".join(parts))
    with pytest.raises(MalformedToken):
        harness.verify(token)
    assert harness.keys.calls == 0


def _signed_pair_with_respelled_segment(index: int) -> tuple[str, str]:
    """A pool-signed token, and another just as signed whose segment at index is respelled with the same bytes."""
    raw = [json.dumps({"alg": "RS256", "kid": KID}), json.dumps(access_claims())]
    # A length that is not a multiple of 3 leaves unused low bits in the segment's last base64url character.
    while len(raw[index]) % 3 == 0:
        raw[index] += " "
    parts = [b64url(part.encode()) for part in raw]
    canonical = sign_raw(".".join(parts))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    parts[index] = parts[index][:-1] + alphabet[alphabet.index(parts[index][-1]) ^ 1]
    respelled = sign_raw(".".join(parts))
    padded = [segments(token)[index] + "==" for token in (canonical, respelled)]
    assert padded[0] != padded[1] and base64.urlsafe_b64decode(padded[0]) == base64.urlsafe_b64decode(padded[1])
    return canonical, respelled


@pytest.mark.parametrize("index", [0, 1], ids=["header", "payload"])
def test_respelled_segment_is_malformed_even_when_signed(harness: Harness, index: int) -> None:
    """A header or payload segment spelled non-canonically, decoding to the very bytes of a valid one, is malformed."""
    canonical, respelled = _signed_pair_with_respelled_segment(index)
    with pytest.raises(MalformedToken):
        harness.verify(respelled)
    assert harness.keys.calls == 0
    assert harness.verify(canonical).sub == access_claims()["sub"]


UNDECODABLE_JSON = [
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'["alg", "RS256"]', id="json-list"),
    pytest.param(b'"RS256"', id="json-string"),
    pytest.param(b"42", id="json-number"),
    pytest.param(b"null", id="json-null"),
    pytest.param(b'{"alg": "RS256", "kid": "\xff\xfe"}', id="invalid-utf8"),
    pytest.param(b" ", id="whitespace-only"),
]


@pytest.mark.parametrize("raw", UNDECODABLE_JSON)
def test_header_that_is_not_a_json_object_is_malformed(harness: Harness, raw: bytes) -> None:
    """A header that is not a UTF-8 JSON object is malformed before any key lookup."""
    with pytest.raises(MalformedToken):
        harness.verify(mint(header=raw))
    assert harness.keys.calls == 0


@pytest.mark.parametrize("raw", UNDECODABLE_JSON)
def test_payload_that_is_not_a_json_object_is_malformed(harness: Harness, raw: bytes) -> None:
    """A payload that is not a UTF-8 JSON object is malformed before any key lookup."""
    with pytest.raises(MalformedToken):
        harness.verify(mint(raw))
    assert harness.keys.calls == 0


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        pytest.param(f'{{"alg":"RS256","kid":"{KID}","alg":"RS256"}}'.encode(), None, id="header-duplicate-alg"),
        pytest.param(f'{{"alg":"RS256","kid":"{KID}","kid":"x"}}'.encode(), None, id="header-duplicate-kid"),
        pytest.param(
            None,
            json.dumps(access_claims())[:-1].encode() + b', "sub": "someone-else"}',
            id="payload-duplicate-sub",
        ),
        pytest.param(
            None,
            json.dumps(access_claims())[:-1].encode() + b', "nested": {"a": 1, "a": 2}}',
            id="payload-nested-duplicate",
        ),
    ],
)
def test_duplicate_member_names_are_malformed(harness: Harness, header: bytes | None, payload: bytes | None) -> None:
    """A header or payload naming one member twice, at any depth, is malformed before any key lookup."""
    with pytest.raises(MalformedToken):
        harness.verify(mint(payload, header=header))
    assert harness.keys.calls == 0


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["header", "payload"])
def test_non_standard_json_constants_are_malformed(harness: Harness, where: str, constant: str) -> None:
    """NaN and Infinity are not JSON, so a header or payload using them is malformed before any key lookup."""
    if where == "header":
        token = mint(header=f'{{"alg":"RS256","kid":"{KID}","x":{constant}}}'.encode())
    else:
        token = mint(json.dumps(access_claims())[:-1].encode() + f', "n": {constant}}}'.encode())
    with pytest.raises(MalformedToken):
        harness.verify(token)
    assert harness.keys.calls == 0


# --- header: algorithm, parameters, kid -------------------------------------------------------------------


@pytest.mark.parametrize(
    "alg",
    ["none", "None", "nOnE", "NONE", "HS256", "RS384", "RS512", "PS256", "ES256", "rs256", "RS256 ", "", None, MISSING],
    ids=lambda alg: "missing" if alg is MISSING else repr(alg),
)
def test_algorithm_other_than_rs256_is_unsupported(harness: Harness, alg: Any) -> None:
    """Any alg but exactly "RS256", or none at all, is refused before any key lookup."""
    header = edited({"alg": "RS256", "kid": KID}, alg=alg)
    with pytest.raises(UnsupportedAlgorithm):
        harness.verify(mint(header=header))
    assert harness.keys.calls == 0


def test_unsigned_alg_none_token_is_rejected_before_crypto(harness: Harness) -> None:
    """The classic unsigned `alg: none` token with an empty signature never reaches a key lookup."""
    token = f"{encode_segment({'alg': 'none', 'kid': KID})}.{encode_segment(access_claims())}."
    with pytest.raises(MalformedToken):
        harness.verify(token)
    assert harness.keys.calls == 0


def test_hs256_token_keyed_with_the_public_key_is_rejected_before_crypto(harness: Harness) -> None:
    """An HS256 token whose HMAC key is the pool's public key (key confusion) is refused before any key lookup."""
    public_pem = (
        private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = f"{encode_segment({'alg': 'HS256', 'kid': KID})}.{encode_segment(access_claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(UnsupportedAlgorithm):
        harness.verify(f"{signing_input}.{b64url(mac)}")
    assert harness.keys.calls == 0


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("crit", ["exp"]),
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("jwk", {"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        ("x5c", ["MIIB"]),
    ],
)
def test_key_selecting_header_parameters_are_unsupported(harness: Harness, param: str, value: Any) -> None:
    """A header carrying crit, jku, x5u, jwk or x5c is refused before any key lookup."""
    with pytest.raises(UnsupportedHeader):
        harness.verify(mint(header={"alg": "RS256", "kid": KID, param: value}))
    assert harness.keys.calls == 0


@pytest.mark.parametrize(
    "kid",
    [MISSING, 123, None, "", ["kid-2026-1"], "k" * 257],
    ids=["missing", "number", "null", "empty", "list", "too-long"],
)
def test_unusable_kid_is_malformed(harness: Harness, kid: Any) -> None:
    """A kid that is missing, not a string, empty or absurdly long is malformed before any key lookup."""
    header = edited({"alg": "RS256", "kid": KID}, kid=kid)
    with pytest.raises(MalformedToken):
        harness.verify(mint(header=header))
    assert harness.keys.calls == 0


def test_unknown_kid_is_rejected(harness: Harness) -> None:
    """A kid the pool's JWKS does not publish is an unknown signing key."""
    with pytest.raises(UnknownSigningKey):
        harness.verify(mint(kid="kid-not-published"))


@pytest.mark.parametrize(
    "iss",
    [
        MISSING,
        None,
        123,
        [ISSUER],
        "",
        "https://attacker.example/" + POOL_ID,
        ISSUER + "/",
        f"https://cognito-idp.us-east-1.amazonaws.com/{POOL_ID}",
        OTHER_ISSUER,
        f"http://cognito-idp.{REGION}.amazonaws.com/{POOL_ID}",
        ISSUER.upper(),
        " " + ISSUER,
    ],
    ids=[
        "missing",
        "null",
        "number",
        "list",
        "empty",
        "other-host",
        "trailing-slash",
        "other-region",
        "other-pool",
        "http-scheme",
        "upper-case",
        "leading-space",
    ],
)
def test_untrusted_issuer_is_rejected(harness: Harness, iss: Any) -> None:
    """An iss that is not exactly a configured issuer is untrusted, and no key is looked up for it."""
    with pytest.raises(UntrustedIssuer):
        harness.verify(mint(edited(access_claims(), iss=iss)))
    assert harness.keys.calls == 0


# --- key selection ----------------------------------------------------------------------------------------

UNFIT_JWK = [
    pytest.param({"use": "enc"}, id="use-enc"),
    pytest.param({"alg": "RS384"}, id="alg-rs384"),
    pytest.param({"kty": "EC"}, id="kty-ec"),
]


@pytest.mark.parametrize("override", UNFIT_JWK)
def test_jwk_unfit_for_rs256_signing_leaves_its_kid_unknown(override: dict[str, Any]) -> None:
    """When the JWK with the token's kid is not an RS256 signing key, that kid is an unknown signing key."""
    document = jwks_document(public_jwk(private_key(), **override), public_jwk(private_key("other"), kid="kid-other"))
    harness = build_harness(jwks=document)
    with pytest.raises(UnknownSigningKey):
        harness.verify(mint())


@pytest.mark.parametrize("override", UNFIT_JWK)
def test_jwks_without_any_usable_key_leaves_keys_unavailable(override: dict[str, Any]) -> None:
    """A JWKS whose only key is unfit for RS256 signing is rejected whole, so the keys are unavailable."""
    harness = build_harness(jwks=jwks_document(public_jwk(private_key(), **override)))
    with pytest.raises(KeysUnavailable):
        harness.verify(mint())


def test_jwk_without_use_or_alg_is_usable() -> None:
    """use and alg are optional in a JWK: an RSA key without them verifies RS256 tokens."""
    harness = build_harness(jwks=jwks_document(public_jwk(private_key(), use=None, alg=None)))
    assert harness.verify(mint()).token_use == "access"


# --- signature --------------------------------------------------------------------------------------------


def test_token_signed_by_another_key_has_bad_signature(harness: Harness) -> None:
    """A token claiming the pool's kid but signed by a different RSA key has a bad signature."""
    with pytest.raises(BadSignature):
        harness.verify(mint(key=private_key("attacker")))


def _flip_bit(token: str, byte_index: int) -> str:
    encoded = segments(token)[2]
    signature = bytearray(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    signature[byte_index] ^= 0x01
    return _replace_segment(token, 2, b64url(bytes(signature)))


@pytest.mark.parametrize("byte_index", [0, 128, -1], ids=["first-byte", "middle-byte", "last-byte"])
def test_flipped_signature_bit_is_bad_signature(harness: Harness, byte_index: int) -> None:
    """Flipping one bit of a valid signature makes it a bad signature."""
    with pytest.raises(BadSignature):
        harness.verify(_flip_bit(mint(), byte_index))


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (1, encode_segment(access_claims(username="admin", **{"cognito:groups": ["admins"]}))),
        (1, encode_segment(access_claims(exp=int(NOW) + 86_400 * 365))),
        (0, encode_segment({"alg": "RS256", "kid": KID, "typ": "JWT"})),
    ],
    ids=["payload-identity", "payload-exp", "header"],
)
def test_segment_edited_under_the_old_signature_is_bad_signature(harness: Harness, index: int, value: str) -> None:
    """A header or payload changed after signing no longer matches the signature."""
    with pytest.raises(BadSignature):
        harness.verify(_replace_segment(mint(), index, value))


# --- claims: time -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exp",
    [MISSING, None, str(int(NOW) + 3600), True, False, [int(NOW) + 3600], {"t": 1}],
    ids=["missing", "null", "string", "true", "false", "list", "object"],
)
def test_missing_or_non_numeric_exp_is_invalid(harness: Harness, exp: Any) -> None:
    """exp is required and must be a JSON number."""
    with pytest.raises(InvalidClaim):
        harness.verify(mint(edited(access_claims(), exp=exp)))


def test_fractional_exp_is_accepted(harness: Harness) -> None:
    """exp may be a non-integer number."""
    assert harness.verify(mint(access_claims(exp=NOW + 100.5))).expires_at == NOW + 100.5


@pytest.mark.parametrize(
    ("exp", "leeway"),
    [(NOW, 0), (NOW - 1, 0), (NOW - LEEWAY, LEEWAY), (NOW - 3600, LEEWAY)],
    ids=["at-exp-no-leeway", "past-exp-no-leeway", "at-exp-plus-leeway", "long-expired"],
)
def test_expired_token_is_rejected(exp: float, leeway: float) -> None:
    """A token is expired once now >= exp + leeway."""
    with pytest.raises(TokenExpired):
        build_harness(leeway=leeway).verify(mint(access_claims(exp=exp)))


def test_token_expired_within_leeway_is_accepted(harness: Harness) -> None:
    """A token whose exp passed less than the leeway ago still verifies (its identity still reports exp)."""
    exp = NOW - LEEWAY + 1
    assert harness.verify(mint(access_claims(exp=exp))).expires_at == exp


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_future_nbf_or_iat_beyond_leeway_is_not_yet_valid(harness: Harness, claim: str) -> None:
    """An nbf or iat later than now + leeway makes the token not yet valid."""
    with pytest.raises(TokenNotYetValid):
        harness.verify(mint(access_claims(**{claim: NOW + LEEWAY + 1})))


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_future_nbf_or_iat_within_leeway_is_accepted(harness: Harness, claim: str) -> None:
    """An nbf or iat no later than now + leeway is accepted."""
    assert harness.verify(mint(access_claims(**{claim: NOW + LEEWAY}))).token_use == "access"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize("value", [None, "1800000000", True, [1]], ids=["null", "string", "bool", "list"])
def test_non_numeric_nbf_or_iat_is_invalid(harness: Harness, claim: str, value: Any) -> None:
    """nbf and iat are optional but, when present, must be JSON numbers."""
    with pytest.raises(InvalidClaim):
        harness.verify(mint(edited(access_claims(), **{claim: value})))


# --- claims: token_use and client -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token_use",
    [MISSING, None, "refresh", "ACCESS", "", 1, ["access"]],
    ids=["missing", "null", "refresh", "upper-case", "empty", "number", "list"],
)
def test_token_use_other_than_access_or_id_is_wrong(harness: Harness, token_use: Any) -> None:
    """token_use must be exactly "access" or "id"."""
    with pytest.raises(WrongTokenUse):
        harness.verify(mint(edited(access_claims(), token_use=token_use)))


def test_access_token_for_another_client_is_wrong_client(harness: Harness) -> None:
    """An access token whose client_id is not an allowed app client is refused as the wrong client."""
    with pytest.raises(WrongClient):
        harness.verify(mint(access_claims(client_id=OTHER_CLIENT_ID)))


@pytest.mark.parametrize("client_id", [MISSING, None, 123, [CLIENT_ID]], ids=["missing", "null", "number", "list"])
def test_access_token_with_non_string_client_id_is_invalid(harness: Harness, client_id: Any) -> None:
    """An access token must name its app client as a string client_id."""
    with pytest.raises(InvalidClaim):
        harness.verify(mint(edited(access_claims(), client_id=client_id)))


@pytest.mark.parametrize(
    "aud",
    [CLIENT_ID, [CLIENT_ID], [OTHER_CLIENT_ID, CLIENT_ID]],
    ids=["string", "single-item-array", "array-with-one-allowed"],
)
def test_id_token_audience_naming_an_allowed_client_is_accepted(harness: Harness, aud: Any) -> None:
    """An id token's aud, a string or an array of strings, is accepted when it names an allowed client."""
    assert harness.verify(mint(id_claims(aud=aud))).client_id == CLIENT_ID


@pytest.mark.parametrize(
    "aud",
    [OTHER_CLIENT_ID, [OTHER_CLIENT_ID], [OTHER_CLIENT_ID, "another"]],
    ids=["string", "single-item-array", "array-of-others"],
)
def test_id_token_for_another_client_is_wrong_client(harness: Harness, aud: Any) -> None:
    """An id token whose aud names no allowed client is refused as the wrong client."""
    with pytest.raises(WrongClient):
        harness.verify(mint(id_claims(aud=aud)))


@pytest.mark.parametrize(
    "aud",
    [MISSING, None, 123, [], [1, 2], [CLIENT_ID, 1], {"aud": CLIENT_ID}],
    ids=["missing", "null", "number", "empty-array", "array-of-numbers", "mixed-array", "object"],
)
def test_id_token_with_malformed_audience_is_invalid(harness: Harness, aud: Any) -> None:
    """An id token's aud must be a string or a non-empty array of strings."""
    with pytest.raises(InvalidClaim):
        harness.verify(mint(edited(id_claims(), aud=aud)))


# --- claims: identity values ------------------------------------------------------------------------------

TOKEN_KINDS = [pytest.param(access_claims, id="access"), pytest.param(id_claims, id="id")]


@pytest.mark.parametrize("claims", TOKEN_KINDS)
@pytest.mark.parametrize("sub", [MISSING, None, "", 123, ["x"]], ids=["missing", "null", "empty", "number", "list"])
def test_missing_or_non_string_sub_is_invalid(harness: Harness, claims: Any, sub: Any) -> None:
    """sub is required and must be a non-empty string."""
    with pytest.raises(InvalidClaim):
        harness.verify(mint(edited(claims(), sub=sub)))


@pytest.mark.parametrize(
    ("claims", "name"),
    [pytest.param(access_claims, "username", id="access"), pytest.param(id_claims, "cognito:username", id="id")],
)
@pytest.mark.parametrize("value", [None, 123, ["andrew"], ""], ids=["null", "number", "list", "empty"])
def test_non_string_username_is_invalid(harness: Harness, claims: Any, name: str, value: Any) -> None:
    """username (access) or cognito:username (id), when present, must be a non-empty string."""
    with pytest.raises(InvalidClaim):
        harness.verify(mint(edited(claims(), **{name: value})))


@pytest.mark.parametrize(
    ("claims", "name"),
    [pytest.param(access_claims, "username", id="access"), pytest.param(id_claims, "cognito:username", id="id")],
)
def test_absent_username_is_none(harness: Harness, claims: Any, name: str) -> None:
    """A token without its username claim verifies with username None."""
    assert harness.verify(mint(edited(claims(), **{name: MISSING}))).username is None


def test_id_token_username_comes_from_cognito_username(harness: Harness) -> None:
    """An id token's username is its cognito:username, never a plain username claim."""
    verified = harness.verify(mint(id_claims(username="not-this-one")))
    assert verified.username == "andrew"


@pytest.mark.parametrize("claims", TOKEN_KINDS)
@pytest.mark.parametrize(
    "groups",
    [None, "admins", ["admins", 1], [["admins"]], {"admins": True}],
    ids=["null", "string", "mixed-list", "nested-list", "object"],
)
def test_groups_that_are_not_a_list_of_strings_are_invalid(harness: Harness, claims: Any, groups: Any) -> None:
    """cognito:groups, when present, must be a list of strings."""
    with pytest.raises(InvalidClaim):
        harness.verify(mint(edited(claims(), **{"cognito:groups": groups})))


@pytest.mark.parametrize("claims", TOKEN_KINDS)
def test_absent_groups_are_empty(harness: Harness, claims: Any) -> None:
    """A token without cognito:groups verifies with no groups."""
    assert harness.verify(mint(claims())).groups == ()


@pytest.mark.parametrize("scope", [None, 1, ["feed/read"], {"s": 1}], ids=["null", "number", "list", "object"])
def test_non_string_scope_is_invalid(harness: Harness, scope: Any) -> None:
    """An access token's scope, when present, must be a string."""
    with pytest.raises(InvalidClaim):
        harness.verify(mint(edited(access_claims(), scope=scope)))


@pytest.mark.parametrize("scope", [MISSING, ""], ids=["missing", "empty"])
def test_absent_or_empty_scope_gives_no_scopes(harness: Harness, scope: Any) -> None:
    """An access token without scope, or with an empty one, verifies with no scopes."""
    assert harness.verify(mint(edited(access_claims(), scope=scope))).scopes == ()


def test_id_token_carrying_scope_is_invalid(harness: Harness) -> None:
    """scope belongs to access tokens only: an id token carrying one is refused."""
    with pytest.raises(InvalidClaim):
        harness.verify(mint(id_claims(scope="feed/read")))


HEADER_BOUND_CLAIMS = [
    pytest.param(access_claims, "sub", lambda v: v, id="access-sub"),
    pytest.param(id_claims, "sub", lambda v: v, id="id-sub"),
    pytest.param(access_claims, "username", lambda v: v, id="username"),
    pytest.param(id_claims, "cognito:username", lambda v: v, id="cognito-username"),
    pytest.param(access_claims, "cognito:groups", lambda v: ["staff", v], id="access-group"),
    pytest.param(id_claims, "cognito:groups", lambda v: ["staff", v], id="id-group"),
    pytest.param(access_claims, "scope", lambda v: v, id="scope"),
]
CONTROL_CHARACTER_VALUES = [
    pytest.param("a\rb", id="cr"),
    pytest.param("a\nb", id="lf"),
    pytest.param("a\r\nX-User-Groups: admins", id="crlf-injection"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("a\n", id="trailing-lf"),
    pytest.param("\n", id="lf-only"),
    pytest.param("a\x85b", id="c1-next-line"),
    pytest.param("a\u2028b", id="line-separator"),
    pytest.param("a\ud800b", id="lone-surrogate"),
]


@pytest.mark.parametrize(("claims", "name", "shape"), HEADER_BOUND_CLAIMS)
@pytest.mark.parametrize("value", CONTROL_CHARACTER_VALUES)
def test_control_characters_in_header_bound_claims_are_invalid(
    harness: Harness, claims: Any, name: str, shape: Any, value: str
) -> None:
    """A claim forwarded as a header value must hold no control character anywhere, the last position included."""
    with pytest.raises(InvalidClaim):
        harness.verify(mint(edited(claims(), **{name: shape(value)})))


EDGE_WHITESPACE_VALUES = [
    pytest.param(" victim", id="leading-space"),
    pytest.param("victim ", id="trailing-space"),
    pytest.param("\u00a0victim", id="leading-no-break-space"),
    pytest.param("victim\u3000", id="trailing-ideographic-space"),
    pytest.param("\u2003victim\u2003", id="em-spaces-both-ends"),
    pytest.param("\u205fvictim", id="leading-math-space"),
    pytest.param(" ", id="space-only"),
]


@pytest.mark.parametrize(("claims", "name", "shape"), HEADER_BOUND_CLAIMS)
@pytest.mark.parametrize("value", EDGE_WHITESPACE_VALUES)
def test_edge_whitespace_in_header_bound_claims_is_invalid(
    harness: Harness, claims: Any, name: str, shape: Any, value: str
) -> None:
    """A claim forwarded as a header value may not start or end with whitespace, ASCII or Unicode: Envoy and gunicorn
    trim header values, so " <victim-sub>" would reach the backend as the victim's sub."""
    with pytest.raises(InvalidClaim) as raised:
        harness.verify(mint(edited(claims(), **{name: shape(value)})))
    assert raised.value.claim == name


@pytest.mark.parametrize("client_id", [f" {CLIENT_ID}", f"{CLIENT_ID}\u00a0"], ids=["leading-space", "trailing-nbsp"])
def test_edge_whitespace_in_client_id_is_invalid(harness: Harness, client_id: str) -> None:
    """An access token's client_id, forwarded as x-user-client-id, may not carry edge whitespace either."""
    with pytest.raises(InvalidClaim) as raised:
        harness.verify(mint(access_claims(client_id=client_id)))
    assert raised.value.claim == "client_id"


def test_inner_whitespace_in_header_bound_claims_is_kept(harness: Harness) -> None:
    """Whitespace inside a value is no edge: nothing trims it on the way, so the value arrives as it is."""
    verified = harness.verify(mint(access_claims(username="andrew brown", **{"cognito:groups": ["a\u00a0team"]})))
    assert (verified.username, verified.groups) == ("andrew brown", ("a\u00a0team",))


@pytest.mark.parametrize(
    ("scope", "scopes"),
    [
        pytest.param("a\u00a0admin:write", ("a\u00a0admin:write",), id="no-break-space"),
        pytest.param("a\u2003admin:write feed/read", ("a\u2003admin:write", "feed/read"), id="em-space"),
        pytest.param("a\u3000admin:write", ("a\u3000admin:write",), id="ideographic-space"),
        pytest.param("feed/read admin:write", ("feed/read", "admin:write"), id="ascii-space"),
    ],
)
def test_scope_is_split_on_the_ascii_space_only(harness: Harness, scope: str, scopes: tuple[str, ...]) -> None:
    """scope is scope tokens separated by the ASCII space (RFC 6749 section 3.3): another Unicode space is part of
    a token, so "a\u00a0admin:write" is one scope and grants no admin:write."""
    assert harness.verify(mint(access_claims(scope=scope))).scopes == scopes


@pytest.mark.parametrize(
    "scope",
    ["feed/read  admin:write", "feed/read \u00a0admin:write", "feed/read\u00a0 admin:write", " ", "a  "],
    ids=["two-spaces", "space-then-nbsp", "nbsp-then-space", "space-only", "trailing-spaces"],
)
def test_scope_with_an_empty_or_space_edged_item_is_invalid(harness: Harness, scope: str) -> None:
    """Between two ASCII spaces there is exactly one scope token, with no whitespace at its edges."""
    with pytest.raises(InvalidClaim) as raised:
        harness.verify(mint(access_claims(scope=scope)))
    assert raised.value.claim == "scope"


# The largest identity Cognito can give a user (identity_headers says where each limit is documented): 100 groups
# of 128 characters, each 4 bytes of UTF-8, 50 scopes of 256 ASCII characters, a username of 128 such characters.
LARGEST_GROUPS = [chr(0x1F600 + index) + "\U0001f600" * 127 for index in range(100)]
LARGEST_SCOPE = " ".join(f"{index:02}" + "s" * 254 for index in range(50))
LARGEST_USERNAME = "\U0001f600" * 128


def two_byte_text(length: int) -> str:
    """Text of exactly `length` bytes of UTF-8, two-byte characters but for at most one ASCII one."""
    return "\u00e9" * (length // 2) + "x" * (length % 2)


def test_the_largest_identity_cognito_can_issue_is_verified_intact() -> None:
    """Groups, scopes and username at Cognito's own maxima (MAX_VALUE_BYTES of groups) verify exactly as issued."""
    claims = access_claims(username=LARGEST_USERNAME, scope=LARGEST_SCOPE, **{"cognito:groups": LARGEST_GROUPS})
    token = mint(claims)
    assert len(",".join(LARGEST_GROUPS).encode()) == MAX_VALUE_BYTES
    verified = build_harness(max_token_bytes=len(token)).verify(token)
    assert verified.groups == tuple(LARGEST_GROUPS)
    assert verified.scopes == tuple(LARGEST_SCOPE.split(" "))
    assert verified.username == LARGEST_USERNAME


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("cognito:groups", [*LARGEST_GROUPS[:-1], LARGEST_GROUPS[-1] + "x"], id="groups-one-byte-over"),
        pytest.param("cognito:groups", [*LARGEST_GROUPS, "admins"], id="groups-101"),
        pytest.param("cognito:groups", ["g" * (MAX_VALUE_BYTES + 1)], id="one-group-over"),
        pytest.param("username", two_byte_text(MAX_VALUE_BYTES + 1), id="username-one-byte-over"),
        pytest.param("sub", "s" * (MAX_VALUE_BYTES + 1), id="sub-one-byte-over"),
        pytest.param("scope", "s" * (MAX_VALUE_BYTES + 1), id="scope-one-byte-over"),
    ],
)
def test_an_identity_longer_than_a_header_value_may_be_is_invalid(name: str, value: Any) -> None:
    """A claim whose header value would exceed MAX_VALUE_BYTES of UTF-8 (more than Cognito's own limits allow:
    only a pre-token-generation trigger can issue it) is an invalid claim, answered as any other, never a header
    a server on the way refuses."""
    token = mint(access_claims(**{name: value}))
    with pytest.raises(InvalidClaim) as raised:
        build_harness(max_token_bytes=len(token)).verify(token)
    assert raised.value.claim == name


# --- the verified identity --------------------------------------------------------------------------------


def test_valid_access_token_yields_its_identity(harness: Harness) -> None:
    """A valid access token yields its sub, client, pool, username, groups, scopes, exp, iat and origin_jti."""
    claims = access_claims(scope="aws.cognito.signin.user.admin feed/read", **{"cognito:groups": ["admins", "staff"]})
    assert harness.verify(mint(claims)) == VerifiedToken(
        sub=claims["sub"],
        token_use="access",
        client_id=CLIENT_ID,
        pool_id=POOL_ID,
        username="andrew",
        groups=("admins", "staff"),
        scopes=("aws.cognito.signin.user.admin", "feed/read"),
        expires_at=claims["exp"],
        issued_at=claims["iat"],
        origin_jti=claims["origin_jti"],
    )


def test_valid_id_token_yields_its_identity(harness: Harness) -> None:
    """A valid id token yields its sub, the allowed aud as client, cognito:username, groups, no scopes, and its iat
    and origin_jti."""
    claims = id_claims(aud=[OTHER_CLIENT_ID, CLIENT_ID], **{"cognito:groups": ["staff"]})
    assert harness.verify(mint(claims)) == VerifiedToken(
        sub=claims["sub"],
        token_use="id",
        client_id=CLIENT_ID,
        pool_id=POOL_ID,
        username="andrew",
        groups=("staff",),
        scopes=(),
        expires_at=claims["exp"],
        issued_at=claims["iat"],
        origin_jti=claims["origin_jti"],
    )


# --- app clients (client credentials) ---------------------------------------------------------------------


def test_an_app_clients_own_access_token_is_a_client_principal_with_no_user(harness: Harness) -> None:
    """A client credentials token (sub is the app client's id) verifies as principal client: its scopes, no
    username and no groups."""
    claims = client_claims()
    assert harness.verify(mint(claims)) == VerifiedToken(
        sub=CLIENT_ID,
        token_use="access",
        client_id=CLIENT_ID,
        pool_id=POOL_ID,
        username=None,
        groups=(),
        scopes=("reports-api/read", "reports-api/write"),
        expires_at=claims["exp"],
        principal="client",
        issued_at=claims["iat"],
    )


def test_a_client_token_never_carries_a_user_or_groups_whatever_its_claims_say(harness: Harness) -> None:
    """Cognito puts no user in a client token; one that names a username or groups anyway is still the client's,
    and neither reaches a header or a group rule."""
    verified = harness.verify(mint(client_claims(username="andrew", **{"cognito:groups": ["admins"]})))
    assert (verified.principal, verified.username, verified.groups) == ("client", None, ())


@pytest.mark.parametrize(
    "claims",
    [
        access_claims(),  # a user's sub is a UUID, never a client id
        access_claims(username=None),  # no username alone does not make a client
        id_claims(sub=CLIENT_ID),  # id tokens are only ever a user's
    ],
    ids=["user-access", "no-username", "id-token-with-client-sub"],
)
def test_only_an_access_token_whose_sub_is_its_client_is_a_client(harness: Harness, claims: dict[str, Any]) -> None:
    """The kind is read from Cognito's own sub and client_id, not guessed from a missing username."""
    assert harness.verify(mint(claims)).principal == "user"


# --- audiences (resource binding) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "aud, audiences",
    [
        ("https://api.example.com", ("https://api.example.com",)),
        (["https://a.example.com", "https://b.example.com"], ("https://a.example.com", "https://b.example.com")),
        (MISSING, ()),
    ],
    ids=["one", "list", "none"],
)
def test_an_access_tokens_aud_is_its_audiences(harness: Harness, aud: Any, audiences: tuple[str, ...]) -> None:
    """An access token bound to a resource names it in aud (one, or a list); one without aud has none."""
    assert harness.verify(mint(edited(access_claims(), aud=aud))).audiences == audiences


@pytest.mark.parametrize("aud", [None, "", [], [""], ["https://a.example.com", 7], 7, {"a": "b"}])
def test_a_malformed_aud_in_an_access_token_is_an_invalid_claim(harness: Harness, aud: Any) -> None:
    """An aud that is not a non-empty string or list of them is refused, never read as no binding."""
    with pytest.raises(InvalidClaim) as raised:
        harness.verify(mint(edited(access_claims(), aud=aud)))
    assert raised.value.claim == "aud"


def test_an_id_tokens_aud_is_its_client_not_an_audience(harness: Harness) -> None:
    """An id token's aud names its app client, so it binds it to no resource."""
    assert harness.verify(mint(id_claims())).audiences == ()


# --- custom claims: headers and conditions ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, header",
    [
        ("acme", "acme"),
        ("Zürich 東京", "Zürich 東京"),
        (42, "42"),
        (-1.5, "-1.5"),
        (2.0, "2"),
        (True, "true"),
        (False, "false"),
        (["pro", "team"], "pro,team"),
        (["a,b", "c"], "c"),  # an item holding the separator is left out, as x-user-groups does
        ([], ""),
        ("", ""),
        (None, ""),
        ({"tier": "pro"}, ""),
        ([1, 2], ""),
        (["ok", ["nested"]], ""),
        (["ok", " edge"], ""),
        (" acme", ""),
        ("acme\r\nx-user-sub: victim", ""),
        ("tab\tin", ""),
        ("\u2028", ""),
        ("x" * (MAX_VALUE_BYTES + 1), ""),
        (1e308 * 10, ""),
    ],
)
def test_a_claims_header_value_is_sent_whole_and_safe_or_not_at_all(value: Any, header: str) -> None:
    """Strings as they are, numbers and booleans as JSON text, string lists comma-joined; anything else, and any
    value that is unsafe in a header or too long, is no value (the header is removed)."""
    assert claim_header_value(value) == header


def test_mapped_claims_ride_with_the_verified_identity() -> None:
    """Each AUTHZ_CLAIM_HEADERS claim's header value comes with the identity, in order, "" for a missing one."""
    harness = build_harness(claim_headers=("custom:tenant_id", "custom:plan", "custom:missing"))
    token = mint(access_claims(**{"custom:tenant_id": "t-42", "custom:plan": ["pro", "team"]}))
    assert harness.verify(token).claim_headers == ("t-42", "pro,team", "")
    assert harness.verify(mint(client_claims(**{"custom:tenant_id": 7}))).claim_headers == ("7", "", "")


@pytest.mark.parametrize(
    "one, other", [(1, 1.0), (10**16, 1e16), (2**53, 2.0**53), (-(10**20), -1e20), ({"a": [2.0]}, {"a": [2]})]
)
def test_equal_json_numbers_have_one_spelling(one: Any, other: Any) -> None:
    """JSON has one number type: an integral float is its integer, however large."""
    assert claim_json(one) == claim_json(other)
    assert claim_json(1) != claim_json(True) and claim_json(1) != claim_json("1")


def test_a_client_tokens_user_claims_reach_no_header_and_no_condition() -> None:
    """An app client's token names no user: a mapped username or groups claim is no value, and a condition on one
    finds it absent."""
    harness = build_harness(claim_headers=("username", "cognito:groups", "custom:plan"))
    harness.verifier.keep_claims(frozenset({"username", "cognito:groups"}))
    claims = client_claims(username="andrew", **{"cognito:groups": ["admins"], "custom:plan": "pro"})
    verified = harness.verify(mint(claims))
    assert verified.claim_headers == ("", "", "pro")
    assert verified.claim("username") is None and verified.claim("cognito:groups") is None


def test_a_token_verified_while_a_claim_was_being_added_is_not_cached_without_it(harness: Harness) -> None:
    """keep_claims during a verification: the token verified with the old names is answered but not cached, so the
    next Check verifies it again, with the new claim."""
    token = mint(access_claims(**{"custom:plan": "pro"}))
    original = harness.verifier._validate_claims

    def add_a_claim_midway(*args: Any, **kwargs: Any) -> VerifiedToken:
        verified = original(*args, **kwargs)
        harness.verifier.keep_claims(frozenset({"custom:plan"}))
        return verified

    harness.verifier._validate_claims = add_a_claim_midway  # type: ignore[method-assign]
    assert harness.verify(token).claims == ()
    harness.verifier._validate_claims = original  # type: ignore[method-assign]
    assert harness.verify(token).claims == (("custom:plan", '"pro"'),)


def test_claims_asked_about_are_kept_even_for_tokens_verified_before(harness: Harness) -> None:
    """Only claims a route condition names are kept (canonical JSON); naming a new one re-verifies tokens the cache
    holds without it, so a condition never sees a stale absence."""
    token = mint(access_claims(**{"custom:plan": "pro", "custom:seats": 5.0, "custom:other": "x"}))
    assert harness.verify(token).claims == ()
    harness.verifier.keep_claims(frozenset({"custom:plan", "custom:seats", "custom:absent"}))
    verified = harness.verify(token)
    assert verified.claims == (("custom:plan", '"pro"'), ("custom:seats", "5"))
    assert (verified.claim("custom:plan"), verified.claim("custom:absent")) == ('"pro"', None)


def test_route_conditions_may_not_ask_about_more_claims_than_the_bound(harness: Harness) -> None:
    """Every kept claim is held for every cached token, so their number is bounded: past it, a misconfigured
    route."""
    harness.verifier.keep_claims(frozenset(f"c{index}" for index in range(MAX_KEPT_CLAIMS)))
    with pytest.raises(RouteMisconfigured):
        harness.verifier.keep_claims(frozenset({"one-more"}))


# --- the verdict cache ------------------------------------------------------------------------------------


def test_repeated_valid_token_costs_no_key_lookup(harness: Harness) -> None:
    """A second verify of the same valid token is answered from the cache, with no key lookup or crypto."""
    token = mint()
    first = harness.verify(token)
    assert harness.keys.calls == 1
    assert harness.verify(token) == first
    assert harness.keys.calls == 1


@pytest.mark.parametrize("leeway", [0, LEEWAY])
def test_cached_token_is_rejected_once_the_clock_reaches_its_expiry(leeway: float) -> None:
    """A cached entry lives until exp, after which the token is verified afresh within any leeway and then expires."""
    harness = build_harness(leeway=leeway)
    exp = NOW + 100
    token = mint(access_claims(exp=exp))
    harness.verify(token)
    harness.clock.now = exp - 1
    harness.verify(token)
    assert harness.keys.calls == 1
    if leeway:
        harness.clock.now = exp + leeway - 1
        harness.verify(token)
        assert harness.keys.calls == 2
    harness.clock.now = exp + leeway
    with pytest.raises(TokenExpired):
        harness.verify(token)


def test_bad_signature_verdict_is_cached(harness: Harness) -> None:
    """A token with a bad signature is rejected again from the cache, with no second key lookup."""
    token = mint(key=private_key("attacker"))
    with pytest.raises(BadSignature):
        harness.verify(token)
    with pytest.raises(BadSignature):
        harness.verify(token)
    assert harness.keys.calls == 1


def test_a_cached_rejection_is_raised_afresh_with_its_cause_and_holds_no_traceback(harness: Harness) -> None:
    """A replayed bad token is refused from the cache with the same reason and claim, as a new exception each time;
    nothing the cache keeps holds a traceback, whose frames would keep the token alive in memory."""
    token = mint(access_claims(sub=""))
    raised: list[InvalidClaim] = []
    for _ in range(3):
        with pytest.raises(InvalidClaim) as caught:
            harness.verify(token)
        raised.append(caught.value)
    assert [error.claim for error in raised] == ["sub"] * 3
    assert harness.keys.calls == 1
    assert len({id(error) for error in raised}) == 3
    del raised, caught
    gc.collect()
    held = [
        tb
        for tb in gc.get_objects()
        if isinstance(tb, types.TracebackType) and tb.tb_frame.f_code.co_filename.endswith("authz/tokens.py")
    ]
    assert held == []


def test_unknown_kid_verdict_is_not_cached() -> None:
    """An unknown kid is retried on every verify, so the token verifies once the pool publishes the key."""
    old_key = public_jwk(private_key("old"), kid="kid-old")
    harness = build_harness(jwks=jwks_document(old_key))
    token = mint()
    with pytest.raises(UnknownSigningKey):
        harness.verify(token)
    harness.jwks.body = jwks_document(old_key, public_jwk(private_key()))
    # Within the JWKS cooldown the new document is not fetched yet, but the verdict is still recomputed.
    with pytest.raises(UnknownSigningKey):
        harness.verify(token)
    assert harness.keys.calls == 2
    harness.clock.advance(11)
    assert harness.verify(token).sub == access_claims()["sub"]


def test_not_yet_valid_verdict_is_not_cached(harness: Harness) -> None:
    """A token refused as not yet valid verifies once the clock reaches its nbf."""
    token = mint(access_claims(nbf=NOW + LEEWAY + 5))
    with pytest.raises(TokenNotYetValid):
        harness.verify(token)
    harness.clock.advance(5)
    assert harness.verify(token).token_use == "access"


def test_cache_evicts_the_least_recently_used_token_beyond_cache_size() -> None:
    """With cache_size=2, a third token evicts the first, which then needs a key lookup again."""
    harness = build_harness(cache_size=2)
    tokens = [mint(access_claims(jti=f"jti-{n}")) for n in range(3)]
    for token in tokens:
        harness.verify(token)
    assert harness.keys.calls == 3
    harness.verify(tokens[2])
    assert harness.keys.calls == 3
    harness.verify(tokens[0])
    assert harness.keys.calls == 4


def test_cache_size_zero_disables_caching() -> None:
    """With cache_size=0 every verify, of a valid or a bad token, looks up the key again."""
    harness = build_harness(cache_size=0)
    token = mint()
    harness.verify(token)
    harness.verify(token)
    assert harness.keys.calls == 2
    forged = mint(key=private_key("attacker"))
    for _ in range(2):
        with pytest.raises(BadSignature):
            harness.verify(forged)
    assert harness.keys.calls == 4


def test_huge_integer_exp_is_a_valid_far_future_expiry(harness: Harness) -> None:
    """An exp too large for a float is still a number: the token verifies, with expires_at capped."""
    verified = harness.verify(mint(access_claims(exp=10**400)))
    assert verified.expires_at == float(2**62)


def test_infinite_exp_is_an_invalid_claim(harness: Harness) -> None:
    """An exp that JSON parses to infinity (1e400) is not a usable time: InvalidClaim."""
    token = mint(json.dumps(access_claims(exp=1)).replace('"exp": 1', '"exp": 1e400').encode())
    with pytest.raises(InvalidClaim):
        harness.verify(token)


def test_non_ascii_printable_claims_are_accepted(harness: Harness) -> None:
    """Printable non-ASCII names (accents, CJK) are fine in identity headers."""
    verified = harness.verify(mint(access_claims(username="zoë-山田", **{"cognito:groups": ["équipe"]})))
    assert (verified.username, verified.groups) == ("zoë-山田", ("équipe",))


# ------------------------------------------------------------------------------------ a federated user's provider


def identity(provider: object = "LocalIdP", **fields: Any) -> dict[str, Any]:
    """One entry of Cognito's `identities` claim, as an id token of a federated user carries it."""
    return {
        "userId": "alice",
        "providerName": provider,
        "providerType": "OIDC",
        "issuer": None,
        "primary": "true",
        "dateCreated": "1764633600000",
        **fields,
    }


@pytest.mark.parametrize(
    ("identities", "provider"),
    [
        pytest.param([identity()], "LocalIdP", id="its-only-identity"),
        pytest.param([identity(primary="false")], "LocalIdP", id="the-only-one-even-if-not-primary"),
        pytest.param([identity("Google", primary=True)], "Google", id="primary-as-json-true"),
        pytest.param(
            [identity("Google", primary="false"), identity("LocalIdP", primary="true")], "LocalIdP", id="the-primary"
        ),
        pytest.param([identity("Google"), identity("LocalIdP")], None, id="two-primaries"),
        pytest.param([identity("Google", primary="false"), identity(primary="false")], None, id="no-primary"),
        pytest.param([], None, id="empty"),
        pytest.param("LocalIdP", None, id="not-a-list"),
        pytest.param([identity(), "LocalIdP"], None, id="an-entry-not-an-object"),
        pytest.param([identity(provider=None)], None, id="no-name"),
        pytest.param([identity(provider=7)], None, id="a-name-not-a-string"),
        pytest.param([identity("Local IdP")], None, id="a-space"),
        pytest.param([identity("_LocalIdP")], None, id="an-underscore-at-the-start"),
        pytest.param([identity("Local,IdP")], None, id="the-header-list-separator"),
        pytest.param([identity("Local\nIdP")], None, id="a-control-character"),
        pytest.param([identity("x" * 33)], None, id="longer-than-cognito-allows"),
    ],
)
def test_an_id_tokens_identities_name_the_provider_only_when_certain(
    harness: Harness, identities: Any, provider: str | None
) -> None:
    """An id token's identity provider is its `identities` claim's only entry's, or the one primary entry's; any
    other shape names none, and the token, which Cognito signed, is valid either way."""
    verified = harness.verify(mint(id_claims(identities=identities)))
    assert verified.identity_provider == provider
    assert verified.sub == id_claims()["sub"]


def test_an_id_token_of_the_pools_own_user_names_no_provider(harness: Harness) -> None:
    assert harness.verify(mint(id_claims())).identity_provider is None


def test_an_access_token_names_no_provider_even_with_an_identities_claim(harness: Harness) -> None:
    """Cognito puts `identities` in id tokens only: an access token that carries one (a pre token generation
    trigger's doing) does not set the provider."""
    assert harness.verify(mint(access_claims(identities=[identity()]))).identity_provider is None
