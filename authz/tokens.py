"""Cognito token verification in one fixed order: header -> key -> signature -> claims.

python-jose is used narrowly: we parse and check the JOSE header ourselves (alg pinned to RS256, no crit,
no jku/x5u/jwk/x5c), select the key by kid from the issuing pool's JWKS ourselves, and jose only verifies
an RS256 signature with a key we built from the JWK dict (`jwks.parse_jwks`). No algorithm is ever taken
from the token, and jose never sees a PEM/DER string or the whole JWKS.

The issuer is read from the still-unverified payload for one purpose only: to pick which pool's JWKS holds
the key (as aws-jwt-verify does). Every claim, the issuer included, is judged after the signature.
"""

from __future__ import annotations

import binascii
import copy
import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from jose.backends.base import Key

from authz.cache import TokenCache, remember, token_digest
from authz.errors import (
    AuthzError,
    BadSignature,
    InvalidClaim,
    MalformedAuthorization,
    MalformedToken,
    RouteMisconfigured,
    TokenExpired,
    TokenNotYetValid,
    TokenTooLarge,
    UnsupportedAlgorithm,
    UnsupportedHeader,
    UntrustedIssuer,
    WrongClient,
    WrongTokenUse,
)
from identity_headers import GROUPS_SEPARATOR, MAX_VALUE_BYTES, PRINCIPAL_CLIENT, PRINCIPAL_USER, SCOPES_SEPARATOR

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# A JWS in compact form as _split takes it: three base64url segments.
JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Header parameters that would let a token pick its own key or demand semantics we do not implement.
_FORBIDDEN_HEADER_PARAMS = ("crit", "jku", "x5u", "jwk", "x5c")
_BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SEXTET = {char: index for index, char in enumerate(_BASE64URL)}
# The unused low bits of a segment's last character, by the segment's length modulo 4.
_UNUSED_BITS = {0: 0, 2: 0x0F, 3: 0x03}
# The kid of each distinct, valid JOSE header: a pool's tokens share a handful of headers (one per signing key), so
# each is parsed and checked once. Invalid headers are never remembered, and a full memo starts over.
_HEADER_MEMO_SIZE = 256
_MAX_KID_LENGTH = 256
# Claim values we forward as HTTP header values: no C0/C1 controls, line or paragraph separators, or lone
# surrogates (which cannot even be encoded), and no whitespace at either end (\s: every Unicode space, the no-break
# and ideographic ones included). Envoy and gunicorn trim a header value's edges, so a sub " <victim-sub>" would
# reach the backend as another caller's "<victim-sub>". fullmatch, not ^...$: `$` also matches before a trailing
# newline.
_HEADER_SAFE = re.compile(r"(?!\s)[^\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+(?<!\s)")
# Caps absurd exp values so they still fit a float (year ~146 billion is far enough).
_FAR_FUTURE = 2**62
# How long a permanent failure is remembered for a given token.
NEGATIVE_TTL_SECONDS = 60.0
# The most distinct claims route conditions may ask about: each is kept of every verified token.
MAX_KEPT_CLAIMS = 64
# What only a user's token can say (Cognito puts no user in an app client's own token).
_USER_CLAIMS = frozenset({"username", "cognito:username", "cognito:groups"})


class KeySource(Protocol):
    def get_key(self, kid: str, *, wait: bool = True) -> Key: ...


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The identity a verified Cognito token proves, already type-checked and safe to put in headers."""

    sub: str
    token_use: str
    client_id: str
    pool_id: str
    username: str | None
    groups: tuple[str, ...]
    scopes: tuple[str, ...]
    expires_at: float
    # PRINCIPAL_USER, or PRINCIPAL_CLIENT for an app client's own token (principal_of says how it is told).
    principal: str = PRINCIPAL_USER
    # An access token's aud (a resource binding): the resources it was issued for; () when it names none.
    audiences: tuple[str, ...] = ()
    # The claims a route condition asks about (TokenVerifier.keep_claims), as (name, canonical JSON), by name; a
    # claim the token lacks is not here.
    claims: tuple[tuple[str, str], ...] = ()
    # The value of each AUTHZ_CLAIM_HEADERS header, in their order ("": the caller has none, or none safe to send).
    claim_headers: tuple[str, ...] = ()
    # When it was issued (iat; 0.0 when it says not, so a denylist entry for its user refuses it), and its sign-in
    # session (Cognito's origin_jti, carried by every token refreshed from one sign-in; None when it has none): what
    # the denylist (authz/denylist.py) matches besides the token itself.
    issued_at: float = 0.0
    origin_jti: str | None = None
    # A federated user's identity provider, as the pool names it (an ID token's `identities`; identity_provider_of).
    identity_provider: str | None = None

    def claim(self, name: str) -> str | None:
        """A kept claim's canonical JSON (claim_json), or None when the token lacks it."""
        for key, value in self.claims:
            if key == name:
                return value
        return None


def bearer_token(authorization: str, max_bytes: int) -> str:
    """The token of an `Authorization: Bearer <token>` value; anything else is an invalid token."""
    if len(authorization) > max_bytes + 7:
        raise TokenTooLarge()
    scheme, space, token = authorization.partition(" ")
    if not space or scheme.lower() != "bearer":
        raise MalformedAuthorization()
    token = token.lstrip(" ")
    # A comma means Envoy joined two Authorization headers; whitespace means two tokens or garbage.
    if not token or any(ch in token for ch in ", \t"):
        raise MalformedAuthorization()
    return token


class TokenVerifier:
    """Verifies Cognito access and id tokens for a set of pools and app clients, caching verdicts."""

    def __init__(
        self,
        *,
        issuers: Mapping[str, str],
        key_sources: Mapping[str, KeySource],
        client_ids: Collection[str],
        leeway_seconds: float = 0,
        max_token_bytes: int = 16_384,
        cache_size: int = 0,
        claim_headers: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        on_cache: Callable[[bool], None] | None = None,
    ) -> None:
        """issuers maps each trusted issuer URL to its pool id; key_sources maps it to that pool's keys;
        claim_headers names the claims whose header values (claim_header_value) each VerifiedToken carries."""
        if set(issuers) != set(key_sources):
            raise ValueError("every issuer needs exactly one key source")
        self._claim_headers = tuple(claim_headers)
        # The claims route conditions ask about: only these are kept of a token (a verdict cache of whole payloads
        # would hold every token's every claim). keep_claims() adds to them.
        self._kept: frozenset[str] = frozenset()
        self._kept_lock = threading.Lock()
        self._issuers = dict(issuers)
        self._key_sources = dict(key_sources)
        self._client_ids = frozenset(client_ids)
        self._leeway = leeway_seconds
        self._max_token_bytes = max_token_bytes
        self._clock = clock
        self._on_cache = on_cache
        # Verified identities by token digest, until the token's exp: a repeated token costs no crypto.
        self._verified: TokenCache[VerifiedToken] = TokenCache(cache_size, clock)
        # Permanent rejections by token digest, for NEGATIVE_TTL_SECONDS: a replayed bad token costs no crypto
        # either. Bounded separately (a tenth), so a flood of junk cannot evict the good tokens.
        self._rejected: TokenCache[AuthzError] = TokenCache(cache_size // 10 or cache_size, clock)

    def keep_claims(self, names: frozenset[str]) -> None:
        """Keep these claims of every token from now on, for route conditions. Tokens verified before a new name
        was added lack it, so they are verified afresh. Cheap when the names are kept already (every Check of a
        route with conditions calls this). RouteMisconfigured past MAX_KEPT_CLAIMS names in all."""
        if names <= self._kept:
            return
        with self._kept_lock:
            if names <= self._kept:  # another Check added them meanwhile
                return
            if len(self._kept | names) > MAX_KEPT_CLAIMS:
                raise RouteMisconfigured(key="claims")
            # Emptied first, then the new names published: no Check finds a token verified without them in the
            # cache once they are kept, and one being verified now (with the old names) is not cached (verify).
            self._verified.clear()
            self._kept = self._kept | names

    def cached(self) -> tuple[int, int]:
        """How many verified and rejected tokens the caches hold now (each bounded by its size)."""
        return len(self._verified), len(self._rejected)

    def verify(self, token: str, *, digest: bytes | None = None, wait: bool = True) -> VerifiedToken:
        """The verified identity, or raises the AuthzError saying why not. A repeated token costs no crypto.
        digest is the token's token_digest() when the caller has it already. With wait False, a token whose key
        must first be fetched raises MustWait (the key source's) instead of waiting for it."""
        if len(token) > self._max_token_bytes:
            raise TokenTooLarge()
        if digest is None:
            digest = token_digest(token)
        verified = self._verified.get(digest)
        if verified is not None:
            self._report_cache(True)
            return verified
        rejected = self._rejected.get(digest)
        if rejected is not None:
            self._report_cache(True)
            # A fresh copy each time: one instance raised again and again would grow a chain of tracebacks.
            raise copy.copy(rejected)
        self._report_cache(False)
        kept = self._kept
        try:
            verified = self._verify_uncached(token, wait=wait, kept=kept)
        except AuthzError as error:
            if error.permanent:
                # A copy: the raised instance's traceback would keep the token alive in the cache.
                self._rejected.put(digest, copy.copy(error), self._clock() + NEGATIVE_TTL_SECONDS)
            raise
        # The entry dies at exp; during any leeway after it the token is simply verified afresh. One verified while
        # keep_claims added a name lacks it: it is not cached, so the next Check keeps it.
        with self._kept_lock:
            if kept is self._kept:
                self._verified.put(digest, verified, verified.expires_at)
        return verified

    def _report_cache(self, hit: bool) -> None:
        if self._on_cache is not None:
            self._on_cache(hit)

    def _verify_uncached(self, token: str, *, wait: bool, kept: frozenset[str]) -> VerifiedToken:
        encoded_header, encoded_payload, encoded_signature = _split(token)
        kid = _header_kids.get(encoded_header)
        if kid is None:
            header = _decode_json(encoded_header)
            _validate_header(header)
            kid = remember(_header_kids, encoded_header, header["kid"], limit=_HEADER_MEMO_SIZE)
        payload = _decode_json(encoded_payload)
        issuer = payload.get("iss")
        if not isinstance(issuer, str) or issuer not in self._issuers:
            raise UntrustedIssuer()
        key = self._key_sources[issuer].get_key(kid, wait=wait)
        signing_input = f"{encoded_header}.{encoded_payload}".encode("ascii")
        if not key.verify(signing_input, _b64decode(encoded_signature)):
            raise BadSignature()
        return self._validate_claims(payload, pool_id=self._issuers[issuer], kept=kept)

    def _validate_claims(self, claims: dict[str, Any], *, pool_id: str, kept: frozenset[str]) -> VerifiedToken:
        now = self._clock()
        expires_at = _validate_exp(claims, now, self._leeway)
        _validate_not_before(claims, "nbf", now, self._leeway)
        _validate_not_before(claims, "iat", now, self._leeway)
        token_use = _validate_token_use(claims)
        client_id = _validate_client(claims, token_use, self._client_ids)
        sub = _header_safe(claims.get("sub"), "sub")
        principal = principal_of(sub, client_id, token_use)
        username: str | None
        groups: tuple[str, ...]
        if principal == PRINCIPAL_CLIENT:
            # No user: whatever else the token says, it names no user and no groups, for a header or a condition.
            username, groups = None, ()
            claims = {name: value for name, value in claims.items() if name not in _USER_CLAIMS}
        else:
            username = _header_safe_string(claims, "username" if token_use == "access" else "cognito:username")
            groups = _validate_groups(claims)
        # The verdict cache holds up to AUTHZ_CACHE_SIZE of these: values most tokens share (client, token use,
        # scopes, groups, audiences, claim header values; the username that is the sub in email sign-in pools) are
        # stored once, not per token.
        return VerifiedToken(
            sub=sub,
            token_use=sys.intern(token_use),
            client_id=sys.intern(client_id),
            pool_id=pool_id,
            username=sub if username == sub else username,
            groups=_shared(groups),
            scopes=_shared(_validate_scopes(claims, token_use)),
            expires_at=expires_at,
            principal=principal,
            audiences=_shared(_validate_audiences(claims, token_use)),
            claims=tuple((name, claim_json(claims[name])) for name in sorted(kept) if name in claims),
            claim_headers=_shared(tuple(claim_header_value(claims.get(name)) for name in self._claim_headers)),
            issued_at=_number(claims, "iat") or 0.0,
            origin_jti=_origin_jti(claims),
            # Only an id token (always a user's) says.
            identity_provider=identity_provider_of(claims) if token_use == "id" else None,
        )


# One tuple per distinct group or scope list, interned: the verified cache holds up to AUTHZ_CACHE_SIZE identities
# that mostly share a few of these.
_shared_values: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared(value: tuple[str, ...]) -> tuple[str, ...]:
    """One tuple object per distinct value (bounded: a full memo starts over)."""
    shared = _shared_values.get(value)
    if shared is None:
        shared = remember(_shared_values, value, tuple(sys.intern(item) for item in value), limit=1024)
    return shared


def principal_of(sub: str, client_id: str, token_use: str) -> str:
    """Which kind of caller a verified token speaks for, from the two claims Cognito alone sets (a pre token
    generation trigger can neither add, change nor suppress `sub` or `client_id`: Cognito Developer Guide, "Pre token
    generation Lambda trigger", claims you can't modify). An access token from the client credentials grant (or
    GetClientToken, "the same functionality as the OAuth2 client-credentials grant") has no user, and its `sub` is
    the app client's own id; a user's `sub` is a UUID (Developer Guide, "Understanding the access token"), which can
    never equal a client id (ClientIdType allows word characters and "+" only, no dashes). Id tokens are only ever
    issued to users."""
    if token_use == "access" and sub == client_id:
        return PRINCIPAL_CLIENT
    return PRINCIPAL_USER


def claim_json(value: Any) -> str:
    """A claim's value in one canonical JSON spelling, so equal values compare equal: object keys sorted, no
    spaces, characters as themselves, and an integral number as an integer (JSON has one number type: 1.0 is 1)."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():  # finite: the decoder refuses NaN and Infinity
        return int(value)
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    return value


def claim_header_value(value: Any) -> str:
    """What an AUTHZ_CLAIM_HEADERS header carries for a claim's value; "" (the header is removed) for a claim the
    token lacks, and for any value that could not be sent whole and safe: a string is sent as it is, a number or a
    boolean as its JSON text, and a list of strings comma-joined as x-user-groups is (an item holding a comma is
    left out, since it could not be told apart). An object, null, a list holding anything but strings, or any
    value that is not header-safe (control characters, whitespace at an edge) or too long is never sent."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = claim_json(value) if isinstance(value, int) or math.isfinite(value) else ""
    elif isinstance(value, list) and all(isinstance(item, str) and _HEADER_SAFE.fullmatch(item) for item in value):
        text = GROUPS_SEPARATOR.join(item for item in value if GROUPS_SEPARATOR not in item)
    else:
        text = ""
    if not text or not _HEADER_SAFE.fullmatch(text) or not _fits_a_header(text):
        return ""
    return text


def verified_claims(token: str) -> dict[str, Any]:
    """The payload of a token that verify() has already accepted (for display, e.g. `python -m authz verify`)."""
    return _decode_json(_split(token)[1])


def unverified_expiry(token: str) -> float | None:
    """A token's exp as it says, unverified (None when it has no readable one): only ever to tell how long a
    record about the token is worth keeping, never whether it is valid."""
    try:
        value = _number(_decode_json(_split(token)[1]), "exp")
    except AuthzError:
        return None
    return value if value is not None and value < _FAR_FUTURE else None


def _split(token: str) -> tuple[str, str, str]:
    segments = token.split(".")
    if len(segments) != 3:
        # Five segments is a JWE: encrypted tokens are never accepted.
        raise MalformedToken()
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        raise MalformedToken()
    return segments[0], segments[1], segments[2]


def _b64decode(segment: str) -> bytes:
    """Canonical unpadded base64url only (the caller has checked the alphabet)."""
    unused = _UNUSED_BITS.get(len(segment) % 4)
    # One token, one spelling: decoders ignore the unused low bits of a segment's last character, so without
    # this a valid token had up to 16 spellings that all verify, each a different string to the verdict cache
    # (and to anything else keyed by the token, such as a denylist).
    if unused is None or _SEXTET.get(segment[-1:], 0) & unused:
        raise MalformedToken()
    try:
        # str.replace, not str.translate: the latter is a Python-level loop per character.
        return binascii.a2b_base64(segment.replace("-", "+").replace("_", "/") + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise MalformedToken() from None


def _decode_json(segment: str) -> dict[str, Any]:
    try:
        value = _JSON.decode(_b64decode(segment).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedToken() from None
    if not isinstance(value, dict):
        raise MalformedToken()
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Duplicate names are where two JSON parsers disagree about a token; refuse them outright.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


_JSON = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
_header_kids: dict[str, str] = {}


def _validate_header(header: dict[str, Any]) -> None:
    if header.get("alg") != "RS256":
        raise UnsupportedAlgorithm()
    if any(param in header for param in _FORBIDDEN_HEADER_PARAMS):
        raise UnsupportedHeader()
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_LENGTH:
        raise MalformedToken()


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidClaim(claim=name)
    if isinstance(value, float) and not math.isfinite(value):  # ints are exact; math.isfinite overflows on huge ones
        raise InvalidClaim(claim=name)
    return value


def _validate_exp(claims: dict[str, Any], now: float, leeway: float) -> float:
    exp = _number(claims, "exp")
    if exp is None:
        raise InvalidClaim(claim="exp")
    if now >= exp + leeway:
        raise TokenExpired(exp=exp, now=now)
    return float(min(exp, _FAR_FUTURE))


def _validate_not_before(claims: dict[str, Any], name: str, now: float, leeway: float) -> None:
    value = _number(claims, name)
    if value is not None and value > now + leeway:
        raise TokenNotYetValid(claim=name)


def _origin_jti(claims: dict[str, Any]) -> str | None:
    """The token's sign-in session, when it names one the denylist can hold (subject_ok's shape)."""
    value = claims.get("origin_jti")
    return value if isinstance(value, str) and ORIGIN_JTI.fullmatch(value) else None


# What an origin_jti the denylist can hold looks like: Cognito's are UUIDs; bounded and header-safe, so one read
# from a foreign store cannot smuggle anything into a log.
ORIGIN_JTI = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# A user-pool identity provider's name (CreateIdentityProvider's ProviderName: 1 to 32 characters, none of them
# whitespace or an underscore at its ends), kept to what a header carries as is.
_PROVIDER_NAME = re.compile(r"[^\s_,\x00-\x1f\x7f](?:[^\s,\x00-\x1f\x7f]{0,30}[^\s_,\x00-\x1f\x7f])?")


def identity_provider_of(claims: dict[str, Any]) -> str | None:
    """The external provider a federated user's ID token names: Cognito's `identities` claim lists the user's linked
    provider identities ({"providerName", "providerType", "userId", "primary", ...}); the provider is that of its only
    entry, or of the one entry marked primary (true, or Cognito's "true"). Anything less certain names none: the
    claim is information for the upstream, never a reason to refuse a token Cognito signed."""
    identities = claims.get("identities")
    if not isinstance(identities, list) or not identities or not all(isinstance(item, dict) for item in identities):
        return None
    named = (
        identities if len(identities) == 1 else [item for item in identities if item.get("primary") in (True, "true")]
    )
    if len(named) != 1:
        return None
    name = named[0].get("providerName")
    return name if isinstance(name, str) and _PROVIDER_NAME.fullmatch(name) else None


def _validate_token_use(claims: dict[str, Any]) -> str:
    token_use = claims.get("token_use")
    if not isinstance(token_use, str) or token_use not in ("access", "id"):
        raise WrongTokenUse()
    return token_use


def _validate_client(claims: dict[str, Any], token_use: str, allowed: frozenset[str]) -> str:
    """Access tokens name their app client in client_id, id tokens in aud."""
    if token_use == "access":
        client_id = claims.get("client_id")
        if not isinstance(client_id, str) or not _HEADER_SAFE.fullmatch(client_id):
            raise InvalidClaim(claim="client_id")
        if client_id not in allowed:
            raise WrongClient()
        return client_id
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) for a in audiences):
        raise InvalidClaim(claim="aud")
    for audience in cast(list[str], audiences):  # every member is a str: checked above
        if audience in allowed:
            return audience
    raise WrongClient()


def _header_safe_string(claims: dict[str, Any], name: str) -> str | None:
    """An optional claim that goes into a header: absent is None, present must be header-safe."""
    if name not in claims:
        return None
    return _header_safe(claims[name], name)


def _header_safe(value: object, name: str) -> str:
    if not isinstance(value, str) or not _HEADER_SAFE.fullmatch(value) or not _fits_a_header(value):
        raise InvalidClaim(claim=name)
    return value


def _fits_a_header(value: str) -> bool:
    """Whether value (header-safe, so encodable) is no longer in UTF-8 than an identity header value may be: the
    largest identity Cognito itself can issue fits (identity_headers.MAX_VALUE_BYTES says why), and a longer one,
    which only a pre-token-generation trigger can make, is refused here rather than by a server on its way."""
    # At most 4 bytes a character: most values are short enough to need no encoding to tell.
    return len(value) * 4 <= MAX_VALUE_BYTES or len(value.encode()) <= MAX_VALUE_BYTES


def _validate_groups(claims: dict[str, Any]) -> tuple[str, ...]:
    groups = claims.get("cognito:groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and _HEADER_SAFE.fullmatch(g) for g in groups):
        raise InvalidClaim(claim="cognito:groups")
    # The header carries them joined (less any name holding the separator), so the joined list must fit.
    if not _fits_a_header(GROUPS_SEPARATOR.join(groups)):
        raise InvalidClaim(claim="cognito:groups")
    return tuple(groups)


def _validate_audiences(claims: dict[str, Any], token_use: str) -> tuple[str, ...]:
    """An access token's `aud`: the resource it is bound to (Developer Guide, "Scopes, M2M, and resource servers",
    resource binding: "Amazon Cognito sets the requested URI as the audience in the aud claim of the access token"),
    one string, or (RFC 7519 4.1.3) a list of them. An id token's aud is its app client (_validate_client)."""
    if token_use != "access" or "aud" not in claims:
        return ()
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) and a for a in audiences):
        raise InvalidClaim(claim="aud")
    return tuple(cast(list[str], audiences))


def _validate_scopes(claims: dict[str, Any], token_use: str) -> tuple[str, ...]:
    if "scope" not in claims:
        return ()
    scope = claims["scope"]
    if token_use != "access" or not isinstance(scope, str):
        raise InvalidClaim(claim="scope")
    if scope == "":
        return ()
    # Scope tokens separated by single ASCII spaces (RFC 6749 section 3.3). str.split() would also split at a no-break
    # or any other Unicode space, so "a\u00a0admin:write" would grant admin:write; here it is one scope, and an empty
    # or space-edged item (two spaces in a row, "a \u00a0b") makes the claim invalid.
    scopes = scope.split(SCOPES_SEPARATOR)
    if not _fits_a_header(scope) or not all(_HEADER_SAFE.fullmatch(item) for item in scopes):
        raise InvalidClaim(claim="scope")
    return tuple(scopes)
