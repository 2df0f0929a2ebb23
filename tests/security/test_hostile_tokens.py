"""Hostile tokens and requests against a real server: each gets its exact deny, and the server keeps serving.

Every case is one row: how the CheckRequest is built, then the gRPC code, HTTP status, WWW-Authenticate
`error=` value, body `error` and the reason (the gRPC status message) the server must answer with. After each
case the server must still report SERVING and allow the known-good token, no request may have reached the
canary (tokens point jku/x5u/x5c/jwk at it), and the JWKS endpoint may only have been asked again where the case
names an unknown kid, then exactly once (the refetch cooldown is moved past before every case, so a lookup of a
kid from a token that should have been refused earlier would show up as a fetch).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from authz import errors
from authz.config import Settings
from tests.conftest import (
    CLIENT_ID,
    IDENTITY_HEADERS,
    ISSUER,
    KID,
    NOW,
    OTHER_CLIENT_ID,
    OTHER_ISSUER,
    OTHER_POOL_ID,
    POOL_ID,
    access_claims,
    b64url,
    encode_segment,
    id_claims,
    mint,
    private_key,
    public_jwk,
)
from tests.security.conftest import (
    VALID_TOKEN,
    Authz,
    CheckRequest,
    CheckResponse,
    body_of,
    check_request,
    response_headers,
)

UNAUTHENTICATED, PERMISSION_DENIED, OK = 16, 7, 0
KIB_64 = 64 * 1024
# One character over the server's token size cap (AUTHZ_MAX_TOKEN_BYTES at its default), whatever the default is.
OVER_THE_CAP = Settings.max_token_bytes + 1
STATIC_MESSAGES = frozenset(
    cls.description for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.AuthzError)
)

Signer = Callable[[bytes], bytes]
Build = Callable[[Authz], CheckRequest]


# --- forging ------------------------------------------------------------------------------------------------


def rsa_signer(
    key: rsa.RSAPrivateKey | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
    *,
    pss: bool = False,
) -> Signer:
    algorithm = algorithm or hashes.SHA256()
    chosen = key or private_key()
    pad = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size) if pss else padding.PKCS1v15()
    return lambda data: chosen.sign(data, pad, algorithm)


def es256_signer() -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants raw r || s, not DER

    return sign


def hs256_signer(secret: bytes) -> Signer:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def forge(
    header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes | None = None, sign: Signer | None = None
) -> str:
    """A compact JWS over any header and payload (JSON or raw bytes), signed by any signer (default: the pool)."""
    signing_input = f"{encode_segment(header)}.{encode_segment(access_claims() if payload is None else payload)}"
    return f"{signing_input}.{b64url((sign or rsa_signer())(signing_input.encode()))}"


def rs256(**extra: Any) -> dict[str, Any]:
    return {"alg": "RS256", "kid": KID, **extra}


def attacker_key() -> rsa.RSAPrivateKey:
    return private_key("attacker")


def public_key_pem() -> bytes:
    return (
        private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def public_key_der() -> bytes:
    return (
        private_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def public_key_pkcs1_pem() -> bytes:
    return private_key().public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)


def public_key_jwk_json() -> bytes:
    return json.dumps(public_jwk(private_key())).encode()


def attacker_certificate(canary_url: str) -> str:
    """A self-signed certificate for the attacker's key whose AIA and CRL point at the canary (base64 DER, as x5c)."""
    key = attacker_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"cognito-idp.amazonaws.com/{POOL_ID}")])
    issued = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(issued - datetime.timedelta(days=1))
        .not_valid_after(issued + datetime.timedelta(days=365))
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(f"{canary_url}/x5c-ca-issuers.der"),
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([x509.UniformResourceIdentifier(f"{canary_url}/x5c.crl")], None, None, None)]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def with_flipped_signature_bit(token: str, byte: int = 100, bit: int = 0) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[byte] ^= 1 << bit
    return f"{header}.{payload}.{b64url(bytes(raw))}"


def with_signature_bytes(token: str, change: Callable[[bytes], bytes]) -> str:
    header, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return f"{header}.{payload}.{b64url(change(raw))}"


def with_non_canonical_signature(token: str) -> str:
    """The same signature bytes spelt differently: the unused low bits of the last base64url character set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    head, last = token[:-1], token[-1]
    spelt = head + alphabet[alphabet.index(last) ^ 1]
    assert base64.urlsafe_b64decode(spelt.split(".")[2] + "==") == base64.urlsafe_b64decode(token.split(".")[2] + "==")
    return spelt


def payload_swapped(token: str, claims: dict[str, Any]) -> str:
    """The token's header and signature around another payload: an edit under the old signature."""
    header, _, signature = token.split(".")
    return f"{header}.{encode_segment(claims)}.{signature}"


def header_swapped(token: str, header: dict[str, Any]) -> str:
    _, payload, signature = token.split(".")
    return f"{encode_segment(header)}.{payload}.{signature}"


def replace_char(token: str, segment: int, char: str) -> str:
    parts = token.split(".")
    parts[segment] = parts[segment][:10] + char + parts[segment][11:]
    return ".".join(parts)


# --- the table ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Build
    grpc_code: int
    http_status: int | None
    bearer_error: str | None  # the WWW-Authenticate error= value; None for none
    body_error: str | None
    reason: str
    # "absent" when the deny carries no WWW-Authenticate at all (a route misconfiguration)
    challenge: str = "present"
    jwks_refetches: int = 0


def bearer(token: Callable[[Authz], str] | str, **request: Any) -> Build:
    """A Check with `Authorization: Bearer <token>`; token may need the running server (the canary's URL)."""
    return lambda authz: check_request(f"Bearer {token(authz) if callable(token) else token}", **request)


def invalid(name: str, build: Build, reason: str, *, jwks_refetches: int = 0) -> Case:
    return Case(
        name, build, UNAUTHENTICATED, 401, "invalid_token", "invalid_token", reason, jwks_refetches=jwks_refetches
    )


def forbidden(name: str, build: Build, reason: str) -> Case:
    return Case(name, build, PERMISSION_DENIED, 403, "insufficient_scope", "insufficient_scope", reason)


def misconfigured(name: str, build: Build) -> Case:
    return Case(
        name, build, PERMISSION_DENIED, 403, None, "route_misconfigured", "route_misconfigured", challenge="absent"
    )


def missing(name: str, build: Build) -> Case:
    return Case(name, build, UNAUTHENTICATED, 401, None, "missing_token", "missing_token")


def allowed(name: str, build: Build) -> Case:
    return Case(name, build, OK, None, None, None, "ok", challenge="absent")


ID_ROUTE = {"token_use": "id"}
ADMINS_ROUTE = {"groups": "admins"}
WRITE_ROUTE = {"scopes": "feed:write"}


# One case per line: the table reads as a table.
# fmt: off
CASES: list[Case] = [
    # alg: none in any spelling, missing, or not exactly RS256
    invalid("alg_none_empty_signature", bearer(lambda a: forge({"alg": "none", "kid": KID}).rpartition(".")[0] + "."), "malformed_token"),
    invalid("alg_none_with_signature", bearer(lambda a: forge({"alg": "none", "kid": KID})), "unsupported_algorithm"),
    invalid("alg_None", bearer(lambda a: forge({"alg": "None", "kid": KID})), "unsupported_algorithm"),
    invalid("alg_nOnE", bearer(lambda a: forge({"alg": "nOnE", "kid": KID})), "unsupported_algorithm"),
    invalid("alg_NONE_without_kid", bearer(lambda a: forge({"alg": "NONE"}, sign=lambda _: b"\0")), "unsupported_algorithm"),
    invalid("alg_missing", bearer(lambda a: forge({"kid": KID})), "unsupported_algorithm"),
    invalid("alg_lowercase_rs256", bearer(lambda a: forge({"alg": "rs256", "kid": KID})), "unsupported_algorithm"),
    invalid("alg_as_list", bearer(lambda a: forge({"alg": ["RS256"], "kid": KID})), "unsupported_algorithm"),
    invalid("alg_null", bearer(lambda a: forge({"alg": None, "kid": KID})), "unsupported_algorithm"),
    # HS256 keyed with the pool's own public key, in every form a confused verifier might use
    invalid("hs256_secret_public_key_pem", bearer(lambda a: forge({"alg": "HS256", "kid": KID}, sign=hs256_signer(public_key_pem()))), "unsupported_algorithm"),
    invalid("hs256_secret_public_key_der", bearer(lambda a: forge({"alg": "HS256", "kid": KID}, sign=hs256_signer(public_key_der()))), "unsupported_algorithm"),
    invalid("hs256_secret_public_key_pkcs1_pem", bearer(lambda a: forge({"alg": "HS256", "kid": KID}, sign=hs256_signer(public_key_pkcs1_pem()))), "unsupported_algorithm"),
    invalid("hs256_secret_public_key_jwk", bearer(lambda a: forge({"alg": "HS256", "kid": KID}, sign=hs256_signer(public_key_jwk_json()))), "unsupported_algorithm"),
    invalid("hs256_under_rs256_header", bearer(lambda a: forge(rs256(), sign=hs256_signer(public_key_pem()))), "bad_signature"),
    # other asymmetric algorithms, each a correct signature under its own alg
    invalid("rs384_pool_key", bearer(lambda a: forge({"alg": "RS384", "kid": KID}, sign=rsa_signer(algorithm=hashes.SHA384()))), "unsupported_algorithm"),
    invalid("rs512_pool_key", bearer(lambda a: forge({"alg": "RS512", "kid": KID}, sign=rsa_signer(algorithm=hashes.SHA512()))), "unsupported_algorithm"),
    invalid("ps256_pool_key", bearer(lambda a: forge({"alg": "PS256", "kid": KID}, sign=rsa_signer(pss=True))), "unsupported_algorithm"),
    invalid("es256_fresh_ec_key", bearer(lambda a: forge({"alg": "ES256", "kid": KID}, sign=es256_signer())), "unsupported_algorithm"),
    invalid("rs512_signature_under_rs256_header", bearer(lambda a: forge(rs256(), sign=rsa_signer(algorithm=hashes.SHA512()))), "bad_signature"),
    invalid("ps256_signature_under_rs256_header", bearer(lambda a: forge(rs256(), sign=rsa_signer(pss=True))), "bad_signature"),
    # kid
    invalid("kid_missing", bearer(lambda a: forge({"alg": "RS256"})), "malformed_token"),
    invalid("kid_empty", bearer(lambda a: forge(rs256(kid=""))), "malformed_token"),
    invalid("kid_number", bearer(lambda a: forge(rs256(kid=1))), "malformed_token"),
    invalid("kid_list", bearer(lambda a: forge(rs256(kid=[KID]))), "malformed_token"),
    invalid("kid_object", bearer(lambda a: forge(rs256(kid={"kid": KID}))), "malformed_token"),
    invalid("kid_null", bearer(lambda a: forge(rs256(kid=None))), "malformed_token"),
    invalid("kid_over_256_chars", bearer(lambda a: forge(rs256(kid="k" * 300))), "malformed_token"),
    invalid("kid_unknown", bearer(lambda a: mint(kid="kid-never-published")), "unknown_kid", jwks_refetches=1),
    invalid("kid_path_traversal", bearer(lambda a: mint(kid="../../../../etc/passwd")), "unknown_kid", jwks_refetches=1),
    invalid("kid_url_to_canary", bearer(lambda a: mint(kid=f"{a.canary.url}/kid")), "unknown_kid", jwks_refetches=1),
    invalid("kid_sql_and_nul", bearer(lambda a: mint(kid="' OR 1=1 --\u0000")), "unknown_kid", jwks_refetches=1),
    invalid("kid_real_signed_by_attacker", bearer(lambda a: mint(key=attacker_key())), "bad_signature"),
    # header parameters that would let the token choose its own key: never honoured, never fetched
    invalid("jku_to_canary_otherwise_valid", bearer(lambda a: forge(rs256(jku=f"{a.canary.url}/jwks.json"))), "unsupported_header"),
    invalid("jku_to_canary_attacker_key", bearer(lambda a: forge(rs256(kid="attacker", jku=f"{a.canary.url}/jwks.json"), sign=rsa_signer(attacker_key()))), "unsupported_header"),
    invalid("x5u_to_canary", bearer(lambda a: forge(rs256(x5u=f"{a.canary.url}/cert.pem"), sign=rsa_signer(attacker_key()))), "unsupported_header"),
    invalid("jwk_embedded_attacker_key", bearer(lambda a: forge(rs256(kid="attacker", jwk=public_jwk(attacker_key(), kid="attacker")), sign=rsa_signer(attacker_key()))), "unsupported_header"),
    invalid("jwk_embedded_with_x5u_to_canary", bearer(lambda a: forge(rs256(jwk=public_jwk(attacker_key(), x5u=f"{a.canary.url}/jwk-x5u.pem")), sign=rsa_signer(attacker_key()))), "unsupported_header"),
    invalid("x5c_attacker_cert_pointing_at_canary", bearer(lambda a: forge(rs256(x5c=[attacker_certificate(a.canary.url)]), sign=rsa_signer(attacker_key()))), "unsupported_header"),
    invalid("crit_exp", bearer(lambda a: forge(rs256(crit=["exp"], exp=int(NOW) + 60))), "unsupported_header"),
    invalid("crit_empty_list", bearer(lambda a: forge(rs256(crit=[]))), "unsupported_header"),
    # structure
    invalid("jwe_five_segments", bearer(lambda a: ".".join([encode_segment({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": KID}), "ZW5jcnlwdGVkLWtleQ", "aXY", "Y2lwaGVydGV4dA", "dGFn"])), "malformed_token"),
    invalid("two_segments", bearer(lambda a: VALID_TOKEN.rpartition(".")[0]), "malformed_token"),
    invalid("four_segments", bearer(lambda a: VALID_TOKEN + "." + VALID_TOKEN.split(".")[2]), "malformed_token"),
    invalid("one_segment", bearer(lambda a: VALID_TOKEN.replace(".", "")), "malformed_token"),
    invalid("empty_payload_segment", bearer(lambda a: "{0}..{2}".format(*VALID_TOKEN.split("."))), "malformed_token"),
    invalid("only_dots", bearer(".."), "malformed_token"),
    invalid("json_serialization_instead_of_compact", bearer(lambda a: json.dumps({"payload": VALID_TOKEN.split(".")[1]}).replace(" ", "")), "malformed_token"),
    invalid("standard_base64_plus", bearer(lambda a: replace_char(VALID_TOKEN, 1, "+")), "malformed_token"),
    invalid("standard_base64_slash", bearer(lambda a: replace_char(VALID_TOKEN, 2, "/")), "malformed_token"),
    invalid("base64_padding_on_signature", bearer(lambda a: VALID_TOKEN + "=="), "malformed_token"),
    invalid("fullwidth_letter_in_payload", bearer(lambda a: replace_char(VALID_TOKEN, 1, "\uff21")), "malformed_token"),
    invalid("percent_encoded_dot", bearer(lambda a: VALID_TOKEN.replace(".", "%2E", 1)), "malformed_token"),
    invalid("nul_byte_in_token", bearer(lambda a: VALID_TOKEN + "\u0000"), "malformed_token"),
    invalid("newline_in_token", bearer(lambda a: replace_char(VALID_TOKEN, 1, "\n")), "malformed_token"),
    invalid("payload_segment_of_impossible_length", bearer(lambda a: "{}.{}A.{}".format(*VALID_TOKEN.split("."))), "malformed_token"),
    invalid("signature_non_canonical_base64url", bearer(lambda a: with_non_canonical_signature(VALID_TOKEN)), "malformed_token"),
    invalid("header_not_json", bearer(lambda a: forge(b"RS256 please")), "malformed_token"),
    invalid("payload_not_json", bearer(lambda a: forge(rs256(), b"sub=admin")), "malformed_token"),
    invalid("header_json_array", bearer(lambda a: forge(b'["RS256", "kid-2026-1"]')), "malformed_token"),
    invalid("header_json_null", bearer(lambda a: forge(b"null")), "malformed_token"),
    invalid("payload_json_string", bearer(lambda a: forge(rs256(), b'"admin"')), "malformed_token"),
    invalid("payload_json_number", bearer(lambda a: forge(rs256(), b"1800003600")), "malformed_token"),
    invalid("header_invalid_utf8", bearer(lambda a: forge(b'{"alg":"RS256","kid":"kid-2026-1\xff"}')), "malformed_token"),
    invalid("payload_invalid_utf8", bearer(lambda a: forge(rs256(), json.dumps(access_claims()).encode().replace(b"andrew", b"andr\xc3\x28w"))), "malformed_token"),
    invalid("payload_utf16", bearer(lambda a: forge(rs256(), json.dumps(access_claims()).encode("utf-16"))), "malformed_token"),
    invalid("payload_utf8_bom", bearer(lambda a: forge(rs256(), b"\xef\xbb\xbf" + json.dumps(access_claims()).encode())), "malformed_token"),
    invalid("header_duplicate_alg", bearer(lambda a: forge(b'{"alg":"none","alg":"RS256","kid":"kid-2026-1"}')), "malformed_token"),
    invalid("payload_duplicate_iss", bearer(lambda a: forge(rs256(), ('{"iss":"https://evil.example","iss":"%s","sub":"x","exp":1900000000,"token_use":"access","client_id":"%s"}' % (ISSUER, CLIENT_ID)).encode())), "malformed_token"),  # noqa: UP031 - JSON's braces read better around %s
    invalid("payload_nan_exp", bearer(lambda a: forge(rs256(), json.dumps(access_claims(exp=float("nan"))).encode())), "malformed_token"),
    invalid("payload_deeply_nested", bearer(lambda a: forge(rs256(), b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}")), "malformed_token"),
    invalid("payload_integer_of_5000_digits", bearer(lambda a: forge(rs256(), ('{"exp":1%s}' % ("0" * 5000)).encode())), "malformed_token"),
    # claims of the wrong type or value (all correctly signed by the pool)
    invalid("exp_as_string", bearer(lambda a: mint(access_claims(exp=str(int(NOW) + 3600)))), "invalid_claim"),
    invalid("exp_as_bool", bearer(lambda a: mint(access_claims(exp=True))), "invalid_claim"),
    invalid("exp_overflowing_to_infinity", bearer(lambda a: forge(rs256(), json.dumps(access_claims()).replace(str(int(NOW) + 3600), "1e400").encode())), "invalid_claim"),
    invalid("exp_missing", bearer(lambda a: mint({k: v for k, v in access_claims().items() if k != "exp"})), "invalid_claim"),
    invalid("exp_passed", bearer(lambda a: mint(access_claims(exp=int(NOW) - 1))), "expired"),
    invalid("exp_exactly_now", bearer(lambda a: mint(access_claims(exp=int(NOW)))), "expired"),
    invalid("nbf_in_future", bearer(lambda a: mint(access_claims(nbf=int(NOW) + 60))), "not_yet_valid"),
    invalid("iat_in_future", bearer(lambda a: mint(access_claims(iat=int(NOW) + 60))), "not_yet_valid"),
    invalid("nbf_as_string", bearer(lambda a: mint(access_claims(nbf="0"))), "invalid_claim"),
    invalid("aud_array_of_numbers", bearer(lambda a: mint(id_claims(aud=[1, 2])), context=ID_ROUTE), "invalid_claim"),
    invalid("aud_empty_array", bearer(lambda a: mint(id_claims(aud=[])), context=ID_ROUTE), "invalid_claim"),
    invalid("sub_number", bearer(lambda a: mint(access_claims(sub=42))), "invalid_claim"),
    invalid("sub_empty", bearer(lambda a: mint(access_claims(sub=""))), "invalid_claim"),
    invalid("sub_missing", bearer(lambda a: mint({k: v for k, v in access_claims().items() if k != "sub"})), "invalid_claim"),
    invalid("sub_with_crlf_header_injection", bearer(lambda a: mint(access_claims(sub="x\r\nx-user-groups: admins"))), "invalid_claim"),
    invalid("username_with_nul", bearer(lambda a: mint(access_claims(username="andrew\u0000admin"))), "invalid_claim"),
    invalid("username_with_line_separator", bearer(lambda a: mint(access_claims(username="andrew\u2028admin"))), "invalid_claim"),
    # edge whitespace, which Envoy and gunicorn would trim on the way to the backend: " <sub>" would arrive as <sub>
    invalid("sub_with_leading_space_of_a_victim", bearer(lambda a: mint(access_claims(sub=" " + access_claims()["sub"]))), "invalid_claim"),
    invalid("sub_with_trailing_tab", bearer(lambda a: mint(access_claims(sub=access_claims()["sub"] + "\t"))), "invalid_claim"),
    invalid("sub_with_trailing_no_break_space", bearer(lambda a: mint(access_claims(sub=access_claims()["sub"] + "\u00a0"))), "invalid_claim"),
    invalid("username_with_leading_ideographic_space", bearer(lambda a: mint(access_claims(username="\u3000andrew"))), "invalid_claim"),
    invalid("group_with_edge_space_on_a_group_route", bearer(lambda a: mint(access_claims(**{"cognito:groups": [" admins"]})), context=ADMINS_ROUTE), "invalid_claim"),
    invalid("scope_with_two_spaces", bearer(lambda a: mint(access_claims(scope="feed:read  feed:write")), context=WRITE_ROUTE), "invalid_claim"),
    invalid("scope_with_space_edged_item", bearer(lambda a: mint(access_claims(scope="feed:read \u00a0feed:write")), context=WRITE_ROUTE), "invalid_claim"),
    invalid("groups_as_string", bearer(lambda a: mint(access_claims(**{"cognito:groups": "admins"}))), "invalid_claim"),
    invalid("groups_with_number", bearer(lambda a: mint(access_claims(**{"cognito:groups": ["users", 7]}))), "invalid_claim"),
    invalid("scope_as_list", bearer(lambda a: mint(access_claims(scope=["feed:write"]))), "invalid_claim"),
    # issuer: wrong and near misses
    invalid("iss_foreign", bearer(lambda a: mint(access_claims(iss="https://evil.example.com/" + POOL_ID))), "untrusted_issuer"),
    invalid("iss_trailing_slash", bearer(lambda a: mint(access_claims(iss=ISSUER + "/"))), "untrusted_issuer"),
    invalid("iss_other_region", bearer(lambda a: mint(access_claims(iss=ISSUER.replace("ca-central-1.", "us-east-1.")))), "untrusted_issuer"),
    invalid("iss_other_pool", bearer(lambda a: mint(access_claims(iss=OTHER_ISSUER))), "untrusted_issuer"),
    invalid("iss_http_scheme", bearer(lambda a: mint(access_claims(iss=ISSUER.replace("https://", "http://")))), "untrusted_issuer"),
    invalid("iss_uppercase_host", bearer(lambda a: mint(access_claims(iss=ISSUER.replace("cognito-idp", "COGNITO-IDP")))), "untrusted_issuer"),
    invalid("iss_missing", bearer(lambda a: mint(access_claims(iss=None))), "untrusted_issuer"),
    invalid("iss_as_list", bearer(lambda a: mint(access_claims(iss=[ISSUER]))), "untrusted_issuer"),
    invalid("iss_other_pool_signed_by_attacker", bearer(lambda a: mint(access_claims(iss=OTHER_ISSUER.replace(OTHER_POOL_ID, "ca-central-1_Evil")), key=attacker_key())), "untrusted_issuer"),
    # token_use and client
    invalid("token_use_refresh", bearer(lambda a: mint(access_claims(token_use="refresh"))), "wrong_token_use"),
    invalid("token_use_missing", bearer(lambda a: mint(access_claims(token_use=None))), "wrong_token_use"),
    invalid("token_use_capitalised", bearer(lambda a: mint(access_claims(token_use="Access"))), "wrong_token_use"),
    invalid("id_token_on_access_route", bearer(lambda a: mint(id_claims())), "token_use_not_allowed"),
    invalid("access_token_on_id_route", bearer(lambda a: mint(access_claims()), context=ID_ROUTE), "token_use_not_allowed"),
    invalid("client_id_wrong", bearer(lambda a: mint(access_claims(client_id=OTHER_CLIENT_ID))), "wrong_client"),
    invalid("client_id_missing_but_aud_allowed", bearer(lambda a: mint(access_claims(client_id=None, aud=CLIENT_ID))), "invalid_claim"),
    invalid("client_id_prefix_of_allowed", bearer(lambda a: mint(access_claims(client_id=CLIENT_ID[:-1]))), "wrong_client"),
    invalid("id_token_aud_wrong", bearer(lambda a: mint(id_claims(aud=OTHER_CLIENT_ID)), context=ID_ROUTE), "wrong_client"),
    invalid("id_token_aud_wrong_client_id_allowed", bearer(lambda a: mint(id_claims(aud=OTHER_CLIENT_ID, client_id=CLIENT_ID)), context=ID_ROUTE), "wrong_client"),
    # signature tampering
    invalid("signature_one_bit_flipped", bearer(lambda a: with_flipped_signature_bit(VALID_TOKEN)), "bad_signature"),
    invalid("signature_last_bit_flipped", bearer(lambda a: with_flipped_signature_bit(VALID_TOKEN, byte=255, bit=0)), "bad_signature"),
    invalid("signature_truncated_one_byte", bearer(lambda a: with_signature_bytes(VALID_TOKEN, lambda raw: raw[:-1])), "bad_signature"),
    invalid("signature_extended_one_byte", bearer(lambda a: with_signature_bytes(VALID_TOKEN, lambda raw: raw + b"\0")), "bad_signature"),
    invalid("signature_all_zero", bearer(lambda a: with_signature_bytes(VALID_TOKEN, lambda raw: bytes(len(raw)))), "bad_signature"),
    invalid("signature_single_byte", bearer(lambda a: with_signature_bytes(VALID_TOKEN, lambda raw: b"\x01")), "bad_signature"),
    invalid("payload_edited_under_old_signature", bearer(lambda a: payload_swapped(VALID_TOKEN, access_claims(sub="someone-else"))), "bad_signature"),
    invalid("payload_groups_added_under_old_signature", bearer(lambda a: payload_swapped(VALID_TOKEN, access_claims(**{"cognito:groups": ["admins"]})), context=ADMINS_ROUTE), "bad_signature"),
    invalid("header_edited_under_old_signature", bearer(lambda a: header_swapped(VALID_TOKEN, rs256(typ="JWT"))), "bad_signature"),
    invalid("id_token_signature_on_access_payload", bearer(lambda a: "{}.{}.".format(*VALID_TOKEN.split(".")) + mint(id_claims()).split(".")[2]), "bad_signature"),
    # size
    invalid("token_over_the_cap", bearer(lambda a: mint(access_claims(padding="A" * OVER_THE_CAP))), "token_too_large"),
    invalid("token_1_mib", bearer("A" * 1024 * 1024), "token_too_large"),
    invalid("kid_over_the_cap", bearer(lambda a: mint(kid="k" * OVER_THE_CAP)), "token_too_large"),
    invalid("authorization_header_over_the_cap_of_spaces", lambda a: check_request("Bearer" + " " * OVER_THE_CAP + VALID_TOKEN), "token_too_large"),
    invalid("authorization_header_over_the_cap", lambda a: check_request("Bearer " + "x" * OVER_THE_CAP), "token_too_large"),
    allowed("valid_token_beside_64_kib_header", bearer(VALID_TOKEN, headers={"x-padding": "p" * KIB_64})),
    allowed("valid_token_with_64_kib_path", bearer(VALID_TOKEN, path="/api/" + "p" * KIB_64)),
    # the Authorization header itself
    missing("no_authorization_header", lambda a: check_request()),
    missing("token_in_another_header", lambda a: check_request(headers={"x-access-token": VALID_TOKEN})),
    missing("token_in_query_string", lambda a: check_request(path=f"/api/me?access_token={VALID_TOKEN}")),
    missing("token_in_cookie", lambda a: check_request(headers={"cookie": f"access_token={VALID_TOKEN}"})),
    invalid("duplicate_authorization_headers_raw", lambda a: check_request(raw_headers=[("authorization", f"Bearer {VALID_TOKEN}"), ("authorization", f"Bearer {VALID_TOKEN}")]), "malformed_authorization"),
    invalid("duplicate_authorization_headers_raw_mixed_case", lambda a: check_request(raw_headers=[("Authorization", f"Bearer {VALID_TOKEN}"), ("authorization", "Bearer x.y.z")]), "malformed_authorization"),
    invalid("duplicate_authorization_one_empty_raw", lambda a: check_request(raw_headers=[("authorization", ""), ("authorization", f"Bearer {VALID_TOKEN}")]), "malformed_authorization"),
    invalid("comma_joined_authorization_headers", lambda a: check_request(f"Bearer {VALID_TOKEN}, Bearer {VALID_TOKEN}"), "malformed_authorization"),
    invalid("comma_joined_without_space", lambda a: check_request(f"Bearer {VALID_TOKEN},{VALID_TOKEN}"), "malformed_authorization"),
    invalid("raw_authorization_invalid_utf8", lambda a: check_request(raw_headers=[("authorization", b"Bearer \xff\xfe" + VALID_TOKEN.encode())]), "malformed_token"),
    invalid("scheme_basic", lambda a: check_request("Basic dXNlcjpwYXNzd29yZA=="), "malformed_authorization"),
    invalid("scheme_token", lambda a: check_request(f"Token {VALID_TOKEN}"), "malformed_authorization"),
    invalid("scheme_jwt", lambda a: check_request(f"JWT {VALID_TOKEN}"), "malformed_authorization"),
    invalid("scheme_dpop", lambda a: check_request(f"DPoP {VALID_TOKEN}"), "malformed_authorization"),
    invalid("scheme_missing_bare_token", lambda a: check_request(VALID_TOKEN), "malformed_authorization"),
    invalid("bearer_without_token", lambda a: check_request("Bearer"), "malformed_authorization"),
    invalid("bearer_with_empty_token", lambda a: check_request("Bearer "), "malformed_authorization"),
    invalid("bearer_glued_to_token", lambda a: check_request(f"Bearer{VALID_TOKEN}"), "malformed_authorization"),
    invalid("bearer_tab_separator", lambda a: check_request(f"Bearer\t{VALID_TOKEN}"), "malformed_authorization"),
    invalid("bearer_two_tokens", lambda a: check_request(f"Bearer {VALID_TOKEN} {VALID_TOKEN}"), "malformed_authorization"),
    invalid("bearer_trailing_crlf_injection", lambda a: check_request(f"Bearer {VALID_TOKEN}\r\nx-user-sub: admin"), "malformed_authorization"),
    invalid("empty_authorization_header", lambda a: check_request(""), "malformed_authorization"),
    invalid("invalid_token_on_optional_route_is_not_anonymous", bearer("not-a-jwt", context={"auth": "optional"}), "malformed_token"),
    allowed("bearer_scheme_lowercase", lambda a: check_request(f"bearer {VALID_TOKEN}")),
    allowed("bearer_scheme_uppercase", lambda a: check_request(f"BEARER {VALID_TOKEN}")),
    # groups and scopes (valid tokens the route does not admit)
    forbidden("group_missing", bearer(lambda a: mint(access_claims(**{"cognito:groups": ["users"]})), context=ADMINS_ROUTE), "missing_group"),
    forbidden("group_claim_absent", bearer(VALID_TOKEN, context=ADMINS_ROUTE), "missing_group"),
    forbidden("group_case_differs", bearer(lambda a: mint(access_claims(**{"cognito:groups": ["Admins"]})), context=ADMINS_ROUTE), "missing_group"),
    forbidden("group_comma_smuggled_in_name", bearer(lambda a: mint(access_claims(**{"cognito:groups": ["users,admins"]})), context=ADMINS_ROUTE), "missing_group"),
    forbidden("scope_missing", bearer(lambda a: mint(access_claims(scope="feed:read")), context=WRITE_ROUTE), "missing_scope"),
    forbidden("scope_prefix_is_not_scope", bearer(lambda a: mint(access_claims(scope="feed:write-drafts feed")), context=WRITE_ROUTE), "missing_scope"),
    forbidden("scope_joined_by_no_break_space_is_one_scope", bearer(lambda a: mint(access_claims(scope="a\u00a0feed:write")), context=WRITE_ROUTE), "missing_scope"),
    forbidden("scope_joined_by_em_space_is_one_scope", bearer(lambda a: mint(access_claims(scope="feed:read a\u2003feed:write")), context=WRITE_ROUTE), "missing_scope"),
    forbidden("scope_one_of_two_missing", bearer(lambda a: mint(access_claims(scope="feed:write")), context={"scopes": "feed:write,feed:admin"}), "missing_scope"),
    # route settings from context_extensions that we do not understand
    misconfigured("route_unknown_key_group", bearer(VALID_TOKEN, context={"group": "admins"})),
    misconfigured("route_auth_value_unknown", bearer(VALID_TOKEN, context={"auth": "maybe"})),
    misconfigured("route_groups_on_optional_route", bearer(VALID_TOKEN, context={"auth": "optional", "groups": "admins"})),
    misconfigured("route_scopes_with_id_tokens", bearer(VALID_TOKEN, context={"token_use": "id", "scopes": "feed:write"})),
    misconfigured("route_groups_empty", bearer(VALID_TOKEN, context={"groups": " , "})),
]
# fmt: on


def _request_pieces(request: CheckRequest) -> set[str]:
    """Long fragments of every header value and the path: none may come back in a deny."""
    http = request.attributes.request.http
    values = [
        *http.headers.values(),
        *(h.value or h.raw_value.decode("utf-8", "replace") for h in http.header_map.headers),
    ]
    pieces = set()
    for value in values:
        for piece in value.replace(",", " ").replace(".", " ").split():
            if len(piece) >= 12:
                pieces.add(piece)
    return pieces


def _assert_decision(case: Case, request: CheckRequest, response: CheckResponse) -> None:
    assert (response.status.code, response.status.message if case.grpc_code else "ok") == (case.grpc_code, case.reason)
    if case.grpc_code == OK:
        assert response.HasField("ok_response") and not response.HasField("denied_response")
        assert response_headers(response)["x-user-sub"] == access_claims()["sub"]
        return
    assert response.HasField("denied_response") and not response.HasField("ok_response")
    assert response.denied_response.status.code == case.http_status
    body = body_of(response)
    assert set(body) == {"error", "message"} and body["error"] == case.body_error
    assert body["message"] in STATIC_MESSAGES
    headers = response_headers(response)
    assert headers["content-type"] == "application/json"
    if case.challenge == "absent":
        assert "www-authenticate" not in headers
    elif case.bearer_error is None:
        assert headers["www-authenticate"] == 'Bearer realm="api"'
    else:
        assert headers["www-authenticate"] == (
            f'Bearer realm="api", error="{case.bearer_error}", error_description="{body["message"]}"'
        )
    assert not IDENTITY_HEADERS & set(headers)
    echoed = [
        piece
        for piece in _request_pieces(request)
        if piece in response.denied_response.SerializeToString().decode("utf-8", "replace")
    ]
    assert not echoed, "a deny echoed part of the request"


def cache_lookups(authz: Authz, result: str) -> float:
    """authz_token_cache_total for one result ("hit" or "miss"), as the server's /metrics reports it."""
    value = authz.server.metrics.registry.get_sample_value("authz_token_cache_total", {"result": result})
    return value or 0.0


def _assert_still_serving(authz: Authz) -> None:
    assert authz.is_serving()
    assert authz.check(check_request(f"Bearer {VALID_TOKEN}")).status.code == OK


def test_cases_are_many_and_uniquely_named() -> None:
    """The table holds at least 45 hostile cases, each with its own id."""
    ids = [case.id for case in CASES]
    assert len(ids) >= 45 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hostile_request_gets_its_exact_decision_and_server_keeps_serving(authz: Authz, case: Case) -> None:
    """Each hostile token or request is answered with its exact code, status, challenge and body, fetching nothing."""
    request = case.build(authz)
    # Past the refetch cooldown before every case, so any case that reached a key lookup with a kid the JWKS
    # lacks would show up as a fetch: only the unknown-kid rows may ask, and then exactly once.
    authz.monotonic.advance(11)
    fetches = authz.jwks.requests
    response = authz.check(request)
    _assert_decision(case, request, response)
    assert authz.jwks.requests - fetches == case.jwks_refetches
    assert authz.canary.requests == []
    _assert_still_serving(authz)


def test_repeated_hostile_token_gets_the_same_decision_from_the_cache(authz: Authz) -> None:
    """A rejected token sent again is denied identically by a verdict-cache hit, never turned into an allow."""
    token = with_flipped_signature_bit(VALID_TOKEN, byte=7)
    first = authz.check(check_request(f"Bearer {token}"))
    hits, misses = cache_lookups(authz, "hit"), cache_lookups(authz, "miss")
    second = authz.check(check_request(f"Bearer {token}"))
    assert first == second and first.status.code == UNAUTHENTICATED
    assert (cache_lookups(authz, "hit") - hits, cache_lookups(authz, "miss") - misses) == (1, 0)


def test_unknown_kid_inside_the_cooldown_fetches_nothing(authz: Authz) -> None:
    """Unknown kids sent within the cooldown are denied without asking the JWKS endpoint again."""
    authz.monotonic.advance(11)
    authz.check(check_request(f"Bearer {mint(kid='kid-first')}"))
    fetches = authz.jwks.requests
    for index in range(10):
        response = authz.check(check_request(f"Bearer {mint(kid=f'kid-flood-{index}')}"))
        assert (response.status.code, response.status.message) == (UNAUTHENTICATED, "unknown_kid")
    assert authz.jwks.requests == fetches
    _assert_still_serving(authz)
