"""Property-based fuzzing of token strings and whole CheckRequests against a real server.

The property is only the contract: every Check gets a well-formed answer (allow with identity headers, or a
401/403 deny with its matching gRPC code and JSON body), never an RPC error, never INTERNAL (13: a bug that
failed closed) and never UNAVAILABLE (14: the keys are loaded for the whole run); nothing but a token the contract
accepts is ever allowed; nothing is fetched because of a token; and the server still answers health afterwards.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import (
    CLIENT_ID,
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
)
from tests.security.conftest import (
    IDENTITY_HEADERS,
    VALID_TOKEN,
    Authz,
    CheckRequest,
    CheckResponse,
    check_request,
)

OK, PERMISSION_DENIED, UNAUTHENTICATED = 0, 7, 16
HTTP_FOR_CODE = {UNAUTHENTICATED: 401, PERMISSION_DENIED: 403}
BODY_ERRORS = {"missing_token", "invalid_token", "insufficient_scope", "route_misconfigured"}
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
FORBIDDEN_HEADER_PARAMS = ("crit", "jku", "x5u", "jwk", "x5c")
ROUTE_KEYS = ("auth", "token_use", "groups", "scopes")
ROUTE_VALUES = ("required", "optional", "access", "id", "any", "admins", "users,admins", "aws.cognito.signin.user.admin", "")
# True: the contract demands an allow; False: a deny; None: the drawn content decides.
Expect = bool | None
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# --- token strategies: each draws (token, expectation) ----------------------------------------------------------
# The expectation is True where the contract demands an allow, False where it demands a deny, None where the
# drawn content decides (a pool-signed payload with random claims); the property checks well-formedness always.

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)

random_text = st.text(max_size=300).map(lambda token: (token, token == VALID_TOKEN))
dotted_segments = (
    st.lists(st.text(alphabet=B64URL, max_size=48), min_size=1, max_size=6).map(".".join).map(lambda t: (t, False))
)
oversized = st.integers(min_value=16_000, max_value=70_000).map(lambda n: ("A" * n, False))


@st.composite
def mutated_valid_tokens(draw: st.DrawFn) -> tuple[str, Expect]:
    """The known-good token flipped, cut, extended, respelt or rearranged: allowed only if nothing changed."""
    token = VALID_TOKEN
    kind = draw(st.sampled_from(["replace", "respell", "delete", "insert", "truncate", "swap", "bitflip", "case"]))
    index = draw(st.integers(min_value=0, max_value=len(token) - 1))
    if kind == "replace":
        token = token[:index] + draw(st.characters(codec="utf-8") | st.sampled_from(B64URL + ".=+/ ")) + token[index + 1 :]
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
    return token, token == VALID_TOKEN


@st.composite
def forged_headers(draw: st.DrawFn, canary_url: str) -> tuple[str, Expect]:
    """A JSON header with random alg/kid types and extra parameters over valid claims, really signed by the pool:
    allowed exactly when the header is what the contract accepts (alg RS256, the pool's kid, no key-choosing params)."""
    header: dict[str, Any] = {}
    if draw(st.booleans()):
        header["alg"] = draw(st.sampled_from(["RS256", "none", "None", "HS256", "RS512", "PS256", "ES256", "rs256", ""]) | json_values)
    if draw(st.booleans()):
        header["kid"] = draw(st.sampled_from([KID, "", "unknown", "../jwks.json"]) | json_values)
    # Key-choosing parameters point at the canary, which must never hear from the server.
    pointers = st.sampled_from([f"{canary_url}/jwks.json", [f"{canary_url}/cert.der"], {"kty": "RSA", "x5u": canary_url}])
    extra = draw(
        st.dictionaries(st.sampled_from([*FORBIDDEN_HEADER_PARAMS, "typ", "cty", "x5t", "zip"]), pointers | json_values, max_size=2)
    )
    header.update(extra)
    token = mint(access_claims(), header=header, key=private_key())
    acceptable = header.get("alg") == "RS256" and header.get("kid") == KID and not set(header) & set(FORBIDDEN_HEADER_PARAMS)
    return token, acceptable


CLAIM_NAMES = ("iss", "exp", "nbf", "iat", "sub", "token_use", "client_id", "aud", "username", "cognito:username", "cognito:groups", "scope")
claim_values = json_values | st.sampled_from(
    [ISSUER, ISSUER + "/", OTHER_ISSUER, CLIENT_ID, OTHER_CLIENT_ID, [CLIENT_ID], "access", "id", "refresh", int(NOW) - 1,
     int(NOW) + 60, NOW, 2**63, -(2**63), "x\r\ny", "\u2028", ["admins"], ["a,b"], "aws.cognito.signin.user.admin"]
)


@st.composite
def forged_payloads(draw: st.DrawFn) -> tuple[str, Expect]:
    """A payload under a correct RS256 signature: raw bytes, random JSON, or Cognito claims with random edits."""
    kind = draw(st.sampled_from(["bytes", "json", "claims"]))
    if kind == "bytes":
        return mint(draw(st.binary(max_size=64))), False
    if kind == "json":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)) | st.dictionaries(st.text(max_size=8), json_values))
        return mint(json.dumps(value).encode()), False
    claims = draw(st.sampled_from([access_claims, id_claims]))()
    for name in draw(st.lists(st.sampled_from(CLAIM_NAMES), max_size=3)):
        claims.pop(name, None)
    claims.update(draw(st.dictionaries(st.sampled_from(CLAIM_NAMES) | st.text(max_size=8), claim_values, max_size=3)))
    return mint(json.dumps(claims).encode()), None


def tokens(canary_url: str) -> st.SearchStrategy[tuple[str, Expect]]:
    return st.one_of(random_text, dotted_segments, oversized, mutated_valid_tokens(), forged_headers(canary_url), forged_payloads())


# --- request strategies -----------------------------------------------------------------------------------------

schemes = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "", "Bearer ", "Bearer\t"]) | st.text(max_size=8)


@st.composite
def authorization_values(draw: st.DrawFn, canary_url: str, allowable: set[str]) -> str:
    """An Authorization value around a drawn token; a token the contract may allow is noted in allowable."""
    token, expected = draw(tokens(canary_url) | st.just((VALID_TOKEN, True)))
    if expected is not False:
        allowable.add(token)
    if draw(st.booleans()):
        return f"Bearer {token}"
    joiner = draw(st.sampled_from([" ", "  ", "", ", Bearer ", "\t"]))
    value = f"{draw(schemes)}{joiner}{token}"
    if draw(st.booleans()):
        # Appended after an empty token, " <good token>" is still one well-formed credential.
        allowable.add(VALID_TOKEN)
        value += draw(st.sampled_from([", Bearer " + VALID_TOKEN, " " + VALID_TOKEN, ",", "\r\nx-user-sub: admin"]))
    return value


header_names = st.sampled_from(["authorization", "Authorization", "x-user-sub", "x-user-groups", "cookie", "x-request-id", ":path"]) | st.text(max_size=20)
routes = st.sampled_from(
    [{}, {"auth": "optional"}, {"auth": "required"}, {"token_use": "any"}, {"token_use": "id"}, {"groups": "admins"},
     {"scopes": "aws.cognito.signin.user.admin"}, {"auth": "optional", "token_use": "any"}]
)
contexts = routes | st.dictionaries(
    st.sampled_from(ROUTE_KEYS) | st.text(max_size=10), st.sampled_from(ROUTE_VALUES) | st.text(max_size=20), max_size=4
)


@st.composite
def check_requests(draw: st.DrawFn, canary_url: str) -> tuple[CheckRequest, set[str]]:
    """A CheckRequest, and the tokens in it that the contract may allow."""
    allowable: set[str] = set()
    header_values = authorization_values(canary_url, allowable) | st.text(max_size=100)
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
        return check_request(path=path, raw_headers=raw, context=context), allowable
    headers = draw(st.dictionaries(header_names, header_values, max_size=4))
    authorization = draw(st.none() | authorization_values(canary_url, allowable))
    return check_request(authorization, path=path, headers=headers, context=context), allowable


# --- the property -----------------------------------------------------------------------------------------------


def assert_per_contract(response: CheckResponse, *, may_allow: bool | None) -> None:
    """A well-formed allow or deny, with an allow only where the contract permits one."""
    code = response.status.code
    assert code in (OK, PERMISSION_DENIED, UNAUTHENTICATED), f"unexpected gRPC code {code} ({response.status.message})"
    if code == OK:
        assert may_allow is not False, "a token or request the contract denies was allowed"
        assert response.HasField("ok_response") and not response.HasField("denied_response")
        set_headers = [option.header.key for option in response.ok_response.headers]
        removed = list(response.ok_response.headers_to_remove)
        # Every identity header is either set by us or removed: a client copy can never survive.
        assert sorted(set_headers + removed) == sorted(IDENTITY_HEADERS)
        return
    assert response.HasField("denied_response") and not response.HasField("ok_response")
    assert response.denied_response.status.code == HTTP_FOR_CODE[code]
    body = json.loads(response.denied_response.body)
    assert set(body) == {"error", "message"} and body["error"] in BODY_ERRORS
    headers = {option.header.key: option.header.value for option in response.denied_response.headers}
    assert headers["content-type"] == "application/json"
    if code == UNAUTHENTICATED:
        assert headers["www-authenticate"].startswith('Bearer realm="api"')


def _may_allow(request: CheckRequest, allowable: set[str]) -> bool:
    """Only a token the contract may allow, or no Authorization at all, can be allowed, and only on a route we
    understand."""
    if not set(request.attributes.context_extensions) <= set(ROUTE_KEYS):
        return False
    http = request.attributes.request.http
    if http.header_map.headers:
        values = [h.value or h.raw_value.decode("utf-8", "replace") for h in http.header_map.headers if h.key.lower() == "authorization"]
    else:
        values = [http.headers["authorization"]] if "authorization" in http.headers else []
    return not values or any(token in value for token in allowable for value in values)


@FUZZ
@given(data=st.data())
def test_fuzzed_token_is_allowed_or_denied_per_contract_never_crashing(authz: Authz, data: st.DataObject) -> None:
    """Any token string gets a well-formed allow or deny, and only a token the contract accepts is allowed."""
    token, expected = data.draw(tokens(authz.canary.url), label="token")
    fetches = authz.jwks.requests
    response = authz.check(check_request(f"Bearer {token}", context={"token_use": "any"}))
    assert_per_contract(response, may_allow=expected)
    if expected:
        assert response.status.code == OK
    # The module's monotonic clock never moves, so even an unknown kid stays inside the cooldown.
    assert authz.jwks.requests == fetches
    assert authz.canary.requests == []


@FUZZ
@given(data=st.data())
def test_fuzzed_check_request_is_allowed_or_denied_per_contract_never_crashing(authz: Authz, data: st.DataObject) -> None:
    """Any headers, raw header_map, path and context_extensions get a well-formed allow or deny, never an RPC error."""
    request, allowable = data.draw(check_requests(authz.canary.url), label="request")
    response = authz.check(request)
    assert_per_contract(response, may_allow=_may_allow(request, allowable))
    assert authz.is_serving()
    assert authz.canary.requests == []


def test_server_still_serves_and_allows_after_fuzzing(authz: Authz) -> None:
    """After every fuzzed Check the server is SERVING and still allows the known-good token, having fetched nothing."""
    assert authz.is_serving()
    assert authz.check(check_request(f"Bearer {VALID_TOKEN}")).status.code == OK
    assert authz.canary.requests == []
