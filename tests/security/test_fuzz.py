"""Property-based fuzzing of token strings and whole CheckRequests against a real server.

The property is the contract, judged exactly: every Check gets a well-formed answer (an allow with identity
headers, or a 401/403 deny with its matching gRPC code and JSON body), never an RPC error, never INTERNAL (13: a bug
that failed closed) and never UNAVAILABLE (14: the keys are loaded for the whole run); it is an allow exactly when a
small model of the contract written here, independently of authz.tokens and authz.policy, says so; nothing is
fetched because of a token; and the server still answers health afterwards.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.errors import AuthzError
from authz.routes import Auth, route_settings
from identity_headers import MAX_VALUE_BYTES
from tests.conftest import (
    CLIENT_ID,
    IDENTITY_HEADERS,
    ISSUER,
    KID,
    NOW,
    OTHER_CLIENT_ID,
    OTHER_ISSUER,
    access_claims,
    b64url,
    id_claims,
    mint,
    private_key,
    settings_for,
)
from tests.security.conftest import (
    VALID_TOKEN,
    Authz,
    CheckRequest,
    CheckResponse,
    check_request,
)

OK, INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED = 0, 3, 7, 16
HTTP_FOR_CODE = {UNAUTHENTICATED: 401, PERMISSION_DENIED: 403, INVALID_ARGUMENT: 400}
BODY_ERRORS = {"missing_token", "invalid_token", "insufficient_scope", "route_misconfigured", "bad_path"}
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
FORBIDDEN_HEADER_PARAMS = ("crit", "jku", "x5u", "jwk", "x5c")
ROUTE_KEYS = ("auth", "token_use", "groups", "scopes")
ROUTE_VALUES = (
    "required",
    "optional",
    "access",
    "id",
    "any",
    "admins",
    "users,admins",
    "aws.cognito.signin.user.admin",
    "",
)
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
# Each example breaks about one claim of ten, so catching a skipped check reliably takes more of them.
FUZZ_CLAIMS = settings(FUZZ, max_examples=400)

# The settings the authz fixture runs with (its JWKS URL aside), and the frozen wall clock it judges claims by.
SERVER_SETTINGS = settings_for("http://127.0.0.1/jwks.json")
TRUSTED_ISSUERS = frozenset(pool.issuer for pool in SERVER_SETTINGS.pools)
ALLOWED_CLIENTS = SERVER_SETTINGS.client_ids
LEEWAY = SERVER_SETTINGS.leeway_seconds


# --- the contract, modelled independently of authz.tokens and authz.policy -----------------------------------

# Every token the pool's private key signed under a header the contract accepts, with the payload it carries.
# Nothing else holds that key, so these are the only tokens that can ever verify.
POOL_SIGNED: dict[str, Any] = {VALID_TOKEN: access_claims()}
# RFC 6750's `Bearer` scheme (case-insensitive), one or more spaces, then one compact JWS and nothing else.
BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +(?P<token>[A-Za-z0-9_.-]+)")


def pool_signed(payload: Any, header: dict[str, Any] | None = None) -> str:
    """A token the pool's key signed over payload (bytes as given, else JSON), recorded if its header is acceptable."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    token = mint(raw, header=header, key=private_key())
    if header is None or _acceptable_header(header):
        POOL_SIGNED[token] = payload
    return token


def _acceptable_header(header: dict[str, Any]) -> bool:
    return (
        header.get("alg") == "RS256"
        and header.get("kid") == KID
        and not set(header) & set(FORBIDDEN_HEADER_PARAMS)
        and _standard_json(header)
    )


def _standard_json(value: Any) -> bool:
    """Whether value encodes as RFC 8259 JSON, which has no NaN or Infinity."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _header_safe(value: Any) -> bool:
    """A non-empty string with no control, line-separator or lone-surrogate character, no whitespace (of any kind)
    at either end, and no longer in UTF-8 than an identity header value may be (it may become a header)."""
    return (
        isinstance(value, str)
        and value != ""
        and not any(
            ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029" or 0xD800 <= ord(ch) <= 0xDFFF
            for ch in value
        )
        and value.strip() == value
        and len(value.encode()) <= MAX_VALUE_BYTES
    )


def _scope_tokens(scope: str) -> list[str]:
    """An access token's scope as its scope tokens: separated by the ASCII space only (RFC 6749 section 3.3)."""
    return scope.split(" ") if scope else []


def _names_an_allowed_client(claims: dict[str, Any]) -> bool:
    if claims["token_use"] == "access":
        client_id = claims.get("client_id")
        return isinstance(client_id, str) and client_id in ALLOWED_CLIENTS
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    return (
        isinstance(audiences, list)
        and bool(audiences)
        and all(isinstance(audience, str) for audience in audiences)
        and not ALLOWED_CLIENTS.isdisjoint(audiences)
    )


def _is_client(claims: dict[str, Any]) -> bool:
    """An app client's own token: an access token whose sub is its client_id (README, Users and app clients)."""
    return claims.get("token_use") == "access" and claims.get("sub") == claims.get("client_id")


def _audiences(claims: dict[str, Any]) -> list[str] | None:
    """An access token's aud as a list ([] without one); None when it is not a non-empty string or list of them."""
    if claims.get("token_use") != "access" or "aud" not in claims:
        return []
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud
    if isinstance(audiences, list) and audiences and all(isinstance(a, str) and a for a in audiences):
        return audiences
    return None


def accepted_claims(token: str) -> dict[str, Any] | None:
    """The claims of a pool-signed token whose every claim is valid at the server's clock, else None."""
    claims = POOL_SIGNED.get(token)
    if not isinstance(claims, dict) or not _standard_json(claims):
        return None
    token_use = claims.get("token_use")
    username = "username" if token_use == "access" else "cognito:username"
    # A client's token names no user: its username and groups are not read, so not judged.
    client = _is_client(claims)
    groups = [] if client else claims.get("cognito:groups", [])
    scope = claims.get("scope", "")
    valid = (
        isinstance(claims.get("iss"), str)
        and claims["iss"] in TRUSTED_ISSUERS
        and _number(claims.get("exp"))
        and claims["exp"] + LEEWAY > NOW
        and all(_number(claims[name]) and claims[name] <= NOW + LEEWAY for name in ("nbf", "iat") if name in claims)
        and token_use in ("access", "id")
        and _names_an_allowed_client(claims)
        and _header_safe(claims.get("sub"))
        and (client or username not in claims or _header_safe(claims[username]))
        and _audiences(claims) is not None
        and isinstance(groups, list)
        and all(_header_safe(group) for group in groups)
        and (not groups or _header_safe(",".join(groups)))
        and (
            "scope" not in claims
            or (
                token_use == "access"
                and isinstance(scope, str)
                and (scope == "" or (_header_safe(scope) and all(_header_safe(item) for item in _scope_tokens(scope))))
            )
        )
    )
    return claims if valid else None


def _authorization_values(request: CheckRequest) -> list[str]:
    http = request.attributes.request.http
    if http.header_map.headers:
        return [
            header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
            for header in http.header_map.headers
            if header.key.lower() == "authorization"
        ]
    return [http.headers["authorization"]] if "authorization" in http.headers else []


def _normal_path(path: str) -> bool:
    """The contract's normal form, segment by segment: no dot segment, no empty segment but the last, no backslash,
    no encoded slash, backslash or dot."""
    path = path.split("?", 1)[0]
    if "\\" in path or re.search("%(2f|5c|2e)", path, re.IGNORECASE):
        return False
    segments = path.split("/")
    return "" not in segments[1:-1] and not any(segment in (".", "..") for segment in segments)


def contract_decision(request: CheckRequest) -> tuple[bool, str | None]:
    """Whether the contract allows request, and the x-user-sub the allow carries (None when anonymous or denied)."""
    if not _normal_path(request.attributes.request.http.path):
        return False, None
    try:
        route = route_settings(request.attributes.context_extensions)
    except AuthzError:
        return False, None
    if route.auth is Auth.NONE:
        return True, None
    values = _authorization_values(request)
    if not values:
        return not route.auth_required, None
    match = BEARER.fullmatch(values[0]) if len(values) == 1 else None
    claims = accepted_claims(match["token"]) if match else None
    if claims is None:
        return False, None
    groups = [] if _is_client(claims) else claims.get("cognito:groups", [])
    allowed = (
        claims["token_use"] in route.token_uses
        and (not route.audiences or not route.audiences.isdisjoint(_audiences(claims) or []))
        and ("client" if _is_client(claims) else "user") in route.principals
        and (not route.groups or not route.groups.isdisjoint(groups))
        and route.scopes <= set(_scope_tokens(claims.get("scope", "")))
    )
    return (True, claims["sub"]) if allowed else (False, None)


# --- token strategies: each draws a token string ---------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)

random_text = st.text(max_size=300)
dotted_segments = st.lists(st.text(alphabet=B64URL, max_size=48), min_size=1, max_size=6).map(".".join)
oversized = st.integers(min_value=16_000, max_value=70_000).map(lambda n: "A" * n)


@st.composite
def mutated_valid_tokens(draw: st.DrawFn) -> str:
    """The known-good token flipped, cut, extended, respelt or rearranged."""
    token = VALID_TOKEN
    kind = draw(st.sampled_from(["replace", "respell", "delete", "insert", "truncate", "swap", "bitflip", "case"]))
    index = draw(st.integers(min_value=0, max_value=len(token) - 1))
    if kind == "replace":
        token = (
            token[:index] + draw(st.characters(codec="utf-8") | st.sampled_from(B64URL + ".=+/ ")) + token[index + 1 :]
        )
    elif kind == "respell":
        # A segment's last character carries unused low bits: another spelling of the same bytes is another token.
        parts = token.split(".")
        segment = draw(st.integers(0, 2))
        last = B64URL.index(parts[segment][-1]) ^ draw(st.integers(0, 63))
        parts[segment] = parts[segment][:-1] + B64URL[last]
        token = ".".join(parts)
    elif kind == "delete":
        token = token[:index] + token[index + 1 :]
    elif kind == "insert":
        token = token[:index] + draw(st.text(alphabet=B64URL + ".", min_size=1, max_size=3)) + token[index:]
    elif kind == "truncate":
        token = token[:index]
    elif kind == "swap":
        parts = token.split(".")
        token = ".".join(parts[i] for i in draw(st.permutations(range(3))))
    elif kind == "bitflip":
        header, payload, signature = token.split(".")
        raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
        raw[draw(st.integers(0, len(raw) - 1))] ^= 1 << draw(st.integers(0, 7))
        token = f"{header}.{payload}.{b64url(bytes(raw))}"
    else:
        token = token[:index] + token[index].swapcase() + token[index + 1 :]
    return token


@st.composite
def forged_headers(draw: st.DrawFn, canary_url: str) -> str:
    """Valid claims really signed by the pool under a JSON header with random alg/kid types and extra parameters."""
    header: dict[str, Any] = {}
    if draw(st.booleans()):
        header["alg"] = draw(
            st.sampled_from(["RS256", "none", "None", "HS256", "RS512", "PS256", "ES256", "rs256", ""]) | json_values
        )
    if draw(st.booleans()):
        header["kid"] = draw(st.sampled_from([KID, "", "unknown", "../jwks.json"]) | json_values)
    # Key-choosing parameters point at the canary, which must never hear from the server.
    pointers = st.sampled_from(
        [f"{canary_url}/jwks.json", [f"{canary_url}/cert.der"], {"kty": "RSA", "x5u": canary_url}]
    )
    extra = draw(
        st.dictionaries(
            st.sampled_from([*FORBIDDEN_HEADER_PARAMS, "typ", "cty", "x5t", "zip"]), pointers | json_values, max_size=2
        )
    )
    header.update(extra)
    return pool_signed(access_claims(), header)


REMOVED = object()
# Each claim's edge values: either side of the frozen clock's second, the other client and issuer, wrong types.
CLAIM_EDGES: dict[str, list[Any]] = {
    "iss": [ISSUER, ISSUER + "/", OTHER_ISSUER, ISSUER.upper(), None],
    "exp": [
        int(NOW) + 1,
        NOW + 0.5,
        2**63,
        int(NOW),
        NOW,
        NOW - 0.5,
        int(NOW) - 1,
        -(2**63),
        str(int(NOW) + 60),
        True,
        None,
    ],
    "nbf": [int(NOW), NOW + 0.5, int(NOW) + 1, int(NOW) - 60, "0", None],
    "iat": [int(NOW), NOW + 0.5, int(NOW) + 1, int(NOW) - 60, "0", None],
    "sub": [
        "someone-else",
        CLIENT_ID,  # an access token whose sub is its client: the app client's own
        "\u00fc",
        "",
        "x\r\ny",
        "\u2028",
        " someone-else",
        "someone-else\u00a0",
        7,
        None,
    ],
    "token_use": ["access", "id", "refresh", "Access", None],
    "client_id": [CLIENT_ID, OTHER_CLIENT_ID, [CLIENT_ID], "", None],
    "aud": [
        CLIENT_ID,
        [CLIENT_ID],
        [OTHER_CLIENT_ID, CLIENT_ID],
        OTHER_CLIENT_ID,
        [OTHER_CLIENT_ID],
        [],
        [CLIENT_ID, 1],
        "https://api.example.com",
        ["https://api.example.com", ""],
        "",
        None,
    ],
    "username": ["someone-else", "", "a\nb", "a b", "someone-else ", "\u3000someone-else", 7, None],
    "cognito:username": ["someone-else", "", "a\nb", "a b", "someone-else ", "\u3000someone-else", 7, None],
    "cognito:groups": [
        ["admins"],
        ["users", "admins"],
        ["a,b"],
        [],
        "admins",
        ["x\ny"],
        [" admins"],
        ["users", "admins\u00a0"],
        ["a\u00a0admins"],
        [1],
        None,
    ],
    "scope": [
        "aws.cognito.signin.user.admin",
        "",
        "openid email",
        "a\x00b",
        "openid\u00a0aws.cognito.signin.user.admin",
        "openid\u2003aws.cognito.signin.user.admin email",
        "openid  aws.cognito.signin.user.admin",
        " aws.cognito.signin.user.admin",
        "aws.cognito.signin.user.admin\u00a0",
        ["openid"],
        None,
    ],
}
# The claims each kind of token is judged by (the other kind's client and username claims are merely extra).
OWN_CLAIMS = {
    "access": [name for name in CLAIM_EDGES if name != "cognito:username"],
    "id": [name for name in CLAIM_EDGES if name not in ("client_id", "username")],
}


@st.composite
def edited_claims(draw: st.DrawFn) -> dict[str, Any]:
    """Valid access or id token claims with one of their own removed or set to an edge value, sometimes more."""
    claims = draw(st.sampled_from([access_claims, id_claims]))()
    name = draw(st.sampled_from(OWN_CLAIMS[claims["token_use"]]))
    value = draw(st.sampled_from([*CLAIM_EDGES[name], REMOVED]))
    if value is REMOVED:
        claims.pop(name, None)
    else:
        claims[name] = value
    # One draw in four also sets a claim (maybe an unknown one) to a random JSON value.
    if draw(st.integers(0, 3)) == 0:
        names = st.sampled_from(list(CLAIM_EDGES)) | st.text(max_size=8)
        claims.update(draw(st.dictionaries(names, json_values, min_size=1, max_size=2)))
    return claims


@st.composite
def forged_payloads(draw: st.DrawFn) -> str:
    """A payload under a correct RS256 signature: raw bytes, random JSON, or Cognito claims with random edits."""
    kind = draw(st.sampled_from(["bytes", "json", "claims"]))
    if kind == "bytes":
        return pool_signed(draw(st.binary(max_size=64)))
    if kind == "json":
        return pool_signed(draw(json_values | st.dictionaries(st.text(max_size=8), json_values)))
    return pool_signed(draw(edited_claims()))


def tokens(canary_url: str) -> st.SearchStrategy[str]:
    return st.one_of(
        random_text, dotted_segments, oversized, mutated_valid_tokens(), forged_headers(canary_url), forged_payloads()
    )


# --- request strategies -----------------------------------------------------------------------------------------

schemes = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "", "Bearer ", "Bearer\t"]) | st.text(
    max_size=8
)


@st.composite
def authorization_values(draw: st.DrawFn, canary_url: str) -> str:
    """An Authorization value around a drawn token: well-formed, or with another scheme, separator or suffix."""
    # Half the time the known-good token, so that the value around it alone decides.
    token = VALID_TOKEN if draw(st.booleans()) else draw(tokens(canary_url))
    if draw(st.booleans()):
        return f"Bearer {token}"
    joiner = draw(st.sampled_from([" ", "  ", "", ", Bearer ", "\t"]))
    value = f"{draw(schemes)}{joiner}{token}"
    if draw(st.integers(0, 3)) == 0:
        value += draw(st.sampled_from([", Bearer " + VALID_TOKEN, " " + VALID_TOKEN, ",", "\r\nx-user-sub: admin"]))
    return value


header_names = st.sampled_from(
    ["authorization", "Authorization", "x-user-sub", "x-user-groups", "cookie", "x-request-id", ":path"]
) | st.text(max_size=20)
routes = st.sampled_from(
    [
        {},
        {"auth": "optional"},
        {"auth": "required"},
        {"token_use": "any"},
        {"token_use": "id"},
        {"groups": "admins"},
        {"scopes": "aws.cognito.signin.user.admin"},
        {"auth": "optional", "token_use": "any"},
        {"principal": "user"},
        {"principal": "client"},
        {"audiences": "https://api.example.com"},
    ]
)
contexts = routes | st.dictionaries(
    st.sampled_from(ROUTE_KEYS) | st.text(max_size=10), st.sampled_from(ROUTE_VALUES) | st.text(max_size=20), max_size=4
)


@st.composite
def check_requests(draw: st.DrawFn, canary_url: str) -> CheckRequest:
    """A CheckRequest with any headers (as Envoy's map or its raw header_map), path and context_extensions."""
    header_values = authorization_values(canary_url) | st.text(max_size=100)
    path = draw(st.sampled_from(["/api/me", "/api/activities/home", "/"]) | st.text(max_size=80))
    context = draw(contexts)
    if draw(st.integers(0, 3)) == 0:
        raw = draw(
            st.lists(
                st.tuples(
                    st.just("authorization") | header_names,
                    header_values | st.binary(max_size=64).map(lambda b: b"Bearer " + b),
                ),
                max_size=4,
            )
        )
        return check_request(path=path, raw_headers=raw, context=context)
    headers = draw(st.dictionaries(header_names, header_values, max_size=4))
    authorization = draw(st.none() | authorization_values(canary_url))
    return check_request(authorization, path=path, headers=headers, context=context)


# --- the property -----------------------------------------------------------------------------------------------


def assert_per_contract(request: CheckRequest, response: CheckResponse) -> None:
    """A well-formed allow or deny, and an allow (with the caller's x-user-sub) exactly where the contract has one."""
    allowed, sub = contract_decision(request)
    code = response.status.code
    assert code in HTTP_FOR_CODE or code == OK, f"unexpected gRPC code {code} ({response.status.message})"
    if code == OK:
        assert allowed, "the server allowed a request the contract denies"
        assert response.HasField("ok_response") and not response.HasField("denied_response")
        set_headers = {option.header.key: option.header.value for option in response.ok_response.headers}
        removed = list(response.ok_response.headers_to_remove)
        # Every identity header is either set by us or removed: a client copy can never survive.
        assert sorted([*set_headers, *removed]) == sorted(IDENTITY_HEADERS)
        assert set_headers.get("x-user-sub") == sub
        return
    assert not allowed, f"the server denied ({response.status.message}) a request the contract allows"
    assert response.HasField("denied_response") and not response.HasField("ok_response")
    assert response.denied_response.status.code == HTTP_FOR_CODE[code]
    body = json.loads(response.denied_response.body)
    assert set(body) == {"error", "message"} and body["error"] in BODY_ERRORS
    headers = {option.header.key: option.header.value for option in response.denied_response.headers}
    assert headers["content-type"] == "application/json"
    if code == UNAUTHENTICATED:
        assert headers["www-authenticate"].startswith('Bearer realm="api"')


@FUZZ
@given(data=st.data())
def test_fuzzed_token_is_allowed_exactly_per_contract_never_crashing(authz: Authz, data: st.DataObject) -> None:
    """Any token string gets a well-formed answer that is an allow exactly when the contract accepts the token."""
    token = data.draw(tokens(authz.canary.url), label="token")
    fetches = authz.jwks.requests
    request = check_request(f"Bearer {token}", context={"token_use": "any"})
    assert_per_contract(request, authz.check(request))
    # The module's monotonic clock never moves, so even an unknown kid stays inside the cooldown.
    assert authz.jwks.requests == fetches
    assert authz.canary.requests == []


@FUZZ_CLAIMS
@given(claims=edited_claims(), context=st.just({"token_use": "any"}) | routes)
def test_fuzzed_claims_under_the_pool_signature_are_allowed_exactly_per_contract(
    authz: Authz, claims: dict[str, Any], context: dict[str, str]
) -> None:
    """Claims edited under the pool's real signature are allowed exactly when all are valid now and fit the route."""
    request = check_request(f"Bearer {pool_signed(claims)}", context=context)
    assert_per_contract(request, authz.check(request))


@FUZZ
@given(data=st.data())
def test_fuzzed_check_request_is_allowed_exactly_per_contract_never_crashing(authz: Authz, data: st.DataObject) -> None:
    """Any headers, header_map, path and context_extensions get a well-formed answer, an allow exactly per contract."""
    request = data.draw(check_requests(authz.canary.url), label="request")
    assert_per_contract(request, authz.check(request))
    assert authz.is_serving()
    assert authz.canary.requests == []


def test_server_still_serves_and_allows_after_fuzzing(authz: Authz) -> None:
    """After every fuzzed Check the server is SERVING and still allows the known-good token, having fetched nothing."""
    assert authz.is_serving()
    assert authz.check(check_request(f"Bearer {VALID_TOKEN}")).status.code == OK
    assert authz.canary.requests == []
