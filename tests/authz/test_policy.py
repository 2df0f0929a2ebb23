"""authz/policy.py: the rules and the HTTP contract, without gRPC: allow headers, deny responses, and what
revocation's confirmation makes of an allow."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

import identity_headers
from authz import errors
from authz.config import RevocationOnError
from authz.policy import Policy
from authz.revocation import Confirmation
from authz.routes import Auth, RouteSettings, route_settings
from authz.tokens import VerifiedToken

PREFIX_HEADERS = identity_headers.header_names()


def token(**overrides) -> VerifiedToken:
    values: dict[str, Any] = {
        "sub": "sub-1",
        "token_use": "access",
        "client_id": "client-1",
        "pool_id": "ca-central-1_AbC123",
        "username": "andrew",
        "groups": ("admins", "staff"),
        "scopes": ("aws.cognito.signin.user.admin", "feed/read"),
        "expires_at": 2e9,
    }
    values.update(overrides)
    return VerifiedToken(**values)


@pytest.fixture
def policy() -> Policy:
    return Policy(header_prefix="x-user-", realm="cruddur")


def test_allow_sets_every_identity_header_with_a_value(policy):
    """An allowed user's access token sets sub, name, groups, scopes, client id, token use and principal headers;
    x-user-idp, which only a federated user's id token fills, is removed."""
    decision = policy.decide(token(), RouteSettings())
    assert decision.allowed and decision.grpc_code == 0 and decision.reason == "ok"
    assert dict(decision.upstream_headers) == {
        "x-user-sub": "sub-1",
        "x-user-name": "andrew",
        "x-user-groups": "admins,staff",
        "x-user-scopes": "aws.cognito.signin.user.admin feed/read",
        "x-user-client-id": "client-1",
        "x-user-token-use": "access",
        "x-user-principal": "user",
    }
    assert decision.removed_headers == ("x-user-idp",)


def test_a_federated_users_id_token_names_their_identity_provider(policy):
    """An id token of a user who signed in through an external provider sets x-user-idp to the provider's name in
    the pool; the provider's automatic group (`<pool id>_<provider>`) is a group like any other, for a header and
    for a route's groups."""
    group = "ca-central-1_AbC123_LocalIdP"
    federated = token(
        token_use="id", username="LocalIdP_alice", groups=(group,), scopes=(), identity_provider="LocalIdP"
    )
    decision = policy.decide(federated, RouteSettings(token_uses=frozenset({"id"}), groups=frozenset({group})))
    assert decision.allowed
    headers = dict(decision.upstream_headers)
    assert (headers["x-user-idp"], headers["x-user-groups"], headers["x-user-name"]) == (
        "LocalIdP",
        group,
        "LocalIdP_alice",
    )
    assert "x-user-idp" not in decision.removed_headers


def test_identity_headers_without_a_value_are_removed(policy):
    """A caller with no groups, scopes or username gets those headers removed, so a client copy cannot pass."""
    decision = policy.decide(token(groups=(), scopes=(), username=None), RouteSettings())
    assert set(dict(decision.upstream_headers)) == {
        "x-user-sub",
        "x-user-client-id",
        "x-user-token-use",
        "x-user-principal",
    }
    assert set(decision.removed_headers) == {"x-user-name", "x-user-groups", "x-user-scopes", "x-user-idp"}


def test_header_prefix_is_configurable():
    """AUTHZ_HEADER_PREFIX renames every identity header, set or removed."""
    decision = Policy(header_prefix="x-cognito-").decide(token(groups=()), RouteSettings())
    assert "x-cognito-sub" in dict(decision.upstream_headers)
    assert decision.removed_headers == ("x-cognito-groups", "x-cognito-idp")


def test_anonymous_allow_on_optional_route_removes_every_identity_header(policy):
    """No token on an optional route is allowed as anonymous, stripping all identity headers."""
    decision = policy.decide(None, RouteSettings(auth=Auth.OPTIONAL))
    assert decision.allowed and decision.reason == "anonymous"
    assert decision.upstream_headers == ()
    assert decision.removed_headers == PREFIX_HEADERS


def test_missing_token_on_required_route_is_401_without_error_attribute(policy):
    """No token on a required route: 401 with a bare Bearer challenge (RFC 6750 3.1) and a JSON body."""
    decision = policy.decide(None, RouteSettings())
    assert not decision.allowed
    assert (decision.http_status, decision.grpc_code, decision.reason) == (401, errors.UNAUTHENTICATED, "missing_token")
    assert dict(decision.response_headers) == {
        "www-authenticate": 'Bearer realm="cruddur"',
        "content-type": "application/json",
    }
    assert json.loads(decision.body) == {"error": "missing_token", "message": "authentication required"}


def test_invalid_token_on_optional_route_is_still_401(policy):
    """A present but invalid token is never downgraded to anonymous, so clients know to refresh."""
    decision = policy.decide(errors.TokenExpired(exp=1, now=2), RouteSettings(auth=Auth.OPTIONAL))
    assert not decision.allowed and decision.http_status == 401
    assert dict(decision.response_headers)["www-authenticate"] == (
        'Bearer realm="cruddur", error="invalid_token", error_description="token expired"'
    )
    assert json.loads(decision.body) == {"error": "invalid_token", "message": "token expired"}


def test_deny_never_echoes_context(policy):
    """Deny text is static: context carried by the error (a kid, a claim) never reaches the response."""
    decision = policy.decide(errors.UnknownSigningKey(kid="attacker-controlled-kid"), RouteSettings())
    assert "attacker" not in decision.body
    assert all("attacker" not in value for _, value in decision.response_headers)


def test_id_token_on_access_route_is_401(policy):
    """An id token where the route accepts access tokens only is an invalid token (401)."""
    decision = policy.decide(token(token_use="id", scopes=()), RouteSettings())
    assert (decision.http_status, decision.reason) == (401, "token_use_not_allowed")


def test_id_token_allowed_where_route_says_id(policy):
    """token_use=id routes accept id tokens and mark the header accordingly."""
    decision = policy.decide(token(token_use="id", scopes=()), route_settings({"token_use": "id"}))
    assert decision.allowed
    assert dict(decision.upstream_headers)["x-user-token-use"] == "id"


def test_caller_in_one_of_the_groups_is_allowed(policy):
    """groups means at least one: a caller in any listed group passes."""
    assert policy.decide(token(groups=("staff",)), route_settings({"groups": "admins,staff"})).allowed


def test_caller_in_none_of_the_groups_is_403_insufficient_scope(policy):
    """A caller outside every listed group is denied 403 with error="insufficient_scope"."""
    decision = policy.decide(token(groups=("users",)), route_settings({"groups": "admins"}))
    assert (decision.http_status, decision.grpc_code, decision.reason) == (
        403,
        errors.PERMISSION_DENIED,
        "missing_group",
    )
    challenge = dict(decision.response_headers)["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert "admins" not in challenge and "admins" not in decision.body


def test_scopes_must_all_be_present(policy):
    """scopes means all: one missing scope is a 403 missing_scope."""
    assert policy.decide(token(), route_settings({"scopes": "feed/read"})).allowed
    decision = policy.decide(token(), route_settings({"scopes": "feed/read feed/write"}))
    assert (decision.http_status, decision.reason) == (403, "missing_scope")


def test_a_client_token_is_refused_where_only_users_may_call_and_the_other_way_round(policy):
    """principal: user turns an app client away, principal: client a user, each 403 principal_not_allowed with an
    insufficient_scope challenge; any (the default) takes both."""
    client = token(principal="client", username=None, groups=(), scopes=("reports-api/read",))
    for caller, route in ((client, {"principal": "user"}), (token(), {"principal": "client"})):
        decision = policy.decide(caller, route_settings(route))
        assert (decision.http_status, decision.reason) == (403, "principal_not_allowed")
        assert 'error="insufficient_scope"' in dict(decision.response_headers)["www-authenticate"]
    assert policy.decide(client, route_settings({"principal": "client", "scopes": "reports-api/read"})).allowed
    assert policy.decide(client, RouteSettings()).allowed and policy.decide(token(), RouteSettings()).allowed


def test_a_clients_allow_says_client_and_sends_no_name_or_groups(policy):
    """An app client's allow: x-user-principal client, its scopes and client id; no x-user-name or x-user-groups
    (both removed, so a copy a client sent cannot pass)."""
    client = token(sub="client-1", principal="client", username=None, groups=(), scopes=("reports-api/read",))
    decision = policy.decide(client, RouteSettings())
    assert dict(decision.upstream_headers) == {
        "x-user-sub": "client-1",
        "x-user-scopes": "reports-api/read",
        "x-user-client-id": "client-1",
        "x-user-token-use": "access",
        "x-user-principal": "client",
    }
    assert set(decision.removed_headers) == {"x-user-name", "x-user-groups", "x-user-idp"}


def test_an_access_token_not_bound_to_the_routes_resource_is_401_wrong_audience(policy):
    """audiences: any of them in the token's aud; a token bound elsewhere, or to nothing, gets 401 invalid_token
    (ask for a token for this resource), and a route without the rule takes either."""
    route = route_settings({"audiences": "https://api.example.com https://other.example.com"})
    assert policy.decide(token(audiences=("https://other.example.com",)), route).allowed
    for audiences in ((), ("https://evil.example.com",), ("https://api.example.com/",)):
        decision = policy.decide(token(audiences=audiences), route)
        assert (decision.http_status, decision.reason) == (401, "wrong_audience")
        assert 'error="invalid_token"' in dict(decision.response_headers)["www-authenticate"]
        assert "api.example.com" not in decision.body
    assert policy.decide(token(), RouteSettings()).allowed


def test_a_failed_claim_condition_is_403_claim_mismatch_naming_nothing(policy):
    """Every claim condition must hold; a missing or other value is 403 claim_mismatch with a static body."""
    route = route_settings({"claims": json.dumps({"custom:plan": {"one_of": ["pro", "team"]}, "t": {"present": True}})})
    assert policy.decide(token(claims=(("custom:plan", '"team"'), ("t", '"x"'))), route).allowed
    for claims in ((("custom:plan", '"free"'), ("t", '"x"')), (("custom:plan", '"pro"'),), ()):
        decision = policy.decide(token(claims=claims), route)
        assert (decision.http_status, decision.reason) == (403, "claim_mismatch")
        assert "pro" not in decision.body and "custom:plan" not in decision.body


def test_claim_headers_are_set_with_a_value_and_removed_without_one():
    """AUTHZ_CLAIM_HEADERS headers follow the built-in ones: set when the token gave a value, removed otherwise
    (also for an anonymous caller)."""
    policy = Policy(claim_headers=("x-user-tenant", "x-user-plan"))
    decision = policy.decide(token(claim_headers=("t-42", "")), RouteSettings())
    assert dict(decision.upstream_headers)["x-user-tenant"] == "t-42"
    assert "x-user-plan" in decision.removed_headers and "x-user-plan" not in dict(decision.upstream_headers)
    anonymous = policy.decide(None, route_settings({"auth": "optional"}))
    assert {"x-user-tenant", "x-user-plan"} <= set(anonymous.removed_headers)


def test_route_misconfiguration_is_403_without_challenge(policy):
    """A misconfigured route is the operator's fault: 403, no Bearer challenge, a static body."""
    decision = policy.deny(errors.RouteMisconfigured(key="group"))
    assert decision.http_status == 403
    assert dict(decision.response_headers) == {"content-type": "application/json"}
    assert json.loads(decision.body)["error"] == "route_misconfigured"


def test_keys_unavailable_is_503(policy):
    """When signing keys cannot be loaded the client gets 503, not an invalid_token it would act on."""
    decision = policy.deny(errors.KeysUnavailable(url="https://example.com/jwks.json"))
    assert (decision.http_status, decision.grpc_code) == (503, errors.UNAVAILABLE)
    assert "www-authenticate" not in dict(decision.response_headers)


def test_group_names_with_commas_are_left_out_of_the_groups_header(policy):
    """A group named `x,admins` cannot be told apart in a comma-joined header, so the header omits it."""
    decision = policy.decide(token(groups=("staff", "x,admins")), RouteSettings())
    assert dict(decision.upstream_headers)["x-user-groups"] == "staff"
    assert not policy.decide(token(groups=("x,admins",)), route_settings({"groups": "admins"})).allowed


def test_403_after_verification_still_names_the_caller(policy):
    """A verified caller denied for groups keeps its identity on the Decision (for logs and metrics only)."""
    caller = token(groups=("users",))
    decision = policy.decide(caller, route_settings({"groups": "admins"}))
    assert decision.identity == caller
    assert "sub-1" not in decision.body


# ----------------------------------------------------------------------------------- after revocation


@pytest.mark.parametrize("confirmation", [Confirmation.CONFIRMED, Confirmation.NOT_APPLICABLE])
def test_a_confirmed_or_unasked_token_keeps_its_allow(policy, confirmation):
    """Revocation that confirmed the token, or was not asked, leaves the allow exactly as the policy made it."""
    allowed = policy.decide(token(), RouteSettings())
    assert policy.with_revocation(allowed, confirmation) is allowed


@pytest.mark.parametrize("on_unconfirmed", list(RevocationOnError))
def test_a_revoked_token_is_401_token_revoked_whatever_the_error_policy(on_unconfirmed):
    """REVOKED is a 401 invalid_token "token revoked" with no identity headers; the caller stays on the decision
    for logs and metrics."""
    policy = Policy(realm="cruddur", on_unconfirmed=on_unconfirmed)
    caller = token()
    decision = policy.with_revocation(policy.decide(caller, RouteSettings()), Confirmation.REVOKED)
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 401, "token_revoked")
    assert dict(decision.response_headers)["www-authenticate"] == (
        'Bearer realm="cruddur", error="invalid_token", error_description="token revoked"'
    )
    assert decision.identity == caller and not decision.upstream_headers


def test_a_token_cognito_refused_after_its_exp_is_told_expired(policy):
    """EXPIRED (refused within the leeway after exp) tells the client "token expired", as the verifier would."""
    decision = policy.with_revocation(policy.decide(token(), RouteSettings()), Confirmation.EXPIRED)
    assert (decision.http_status, decision.reason, json.loads(decision.body)["message"]) == (
        401,
        "expired",
        "token expired",
    )


def test_an_unconfirmed_token_is_allowed_as_ok_unconfirmed_by_default(policy):
    """AUTHZ_REVOCATION_ON_ERROR=allow: the same allow, headers and all, with reason ok_unconfirmed."""
    allowed = policy.decide(token(), RouteSettings())
    decision = policy.with_revocation(allowed, Confirmation.UNCONFIRMED)
    assert decision.allowed and decision.reason == "ok_unconfirmed"
    assert decision.upstream_headers == allowed.upstream_headers and decision.identity == allowed.identity


def test_an_unconfirmed_token_is_503_when_the_error_policy_denies():
    """AUTHZ_REVOCATION_ON_ERROR=deny: 503 revocation_unavailable, not the client's fault (no challenge)."""
    policy = Policy(on_unconfirmed=RevocationOnError.DENY)
    decision = policy.with_revocation(policy.decide(token(), RouteSettings()), Confirmation.UNCONFIRMED)
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 503, "revocation_unavailable")
    assert "www-authenticate" not in dict(decision.response_headers)


def test_a_route_demanding_a_check_the_server_cannot_make_is_misconfigured(policy):
    """NOT_CONFIGURED is the route's misconfiguration: 403 route_misconfigured, never an allow."""
    decision = policy.with_revocation(
        policy.decide(token(), RouteSettings(revocation=True)), Confirmation.NOT_CONFIGURED
    )
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 403, "route_misconfigured")


def test_equal_decisions_hash_alike_and_any_field_tells_them_apart(policy):
    """A transport looks its reply up by Decision: two equal Decisions (the same caller, route and outcome) hash
    alike, and a Decision that differs in any one field is another key."""
    first, again = policy.decide(token(), RouteSettings()), policy.decide(token(), RouteSettings())
    assert first is not again and first == again and hash(first) == hash(again)
    replies = {first: "reply"}
    for name, value in (("reason", "ok_unconfirmed"), ("identity", token(sub="sub-2")), ("body", "x")):
        assert dataclasses.replace(first, **{name: value}) not in replies, name
