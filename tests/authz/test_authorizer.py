"""The decision of a Check as one call, with no server and no gRPC: request facts in, a Decision out, in order
(route settings, bearer token, verification, policy, revocation), failing closed, then counted and logged."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import identity_headers
from authz import revocation, tokens
from authz.authorizer import Authorizer, RequestFacts
from authz.config import RevocationOnError
from authz.denylist import Denylist, EntryRules
from authz.jwks import JwksCache
from authz.logs import JsonFormatter
from authz.metrics import Metrics
from authz.policy import Policy
from authz.revocation import Revocation, Status
from authz.routes import RouteTableFile
from authz.state import SharedState
from authz.tokens import TokenVerifier, VerifiedToken
from tests.conftest import (
    CLIENT_ID,
    ISSUER,
    NOW,
    POOL_ID,
    FakeClock,
    RedisServer,
    ScriptedLookup,
    access_claims,
    jwks_document,
    mint,
    static_fetcher,
    wait_for,
)

SUB = access_claims()["sub"]


class CountingVerifier(TokenVerifier):
    """The real verifier, counting how often it is asked."""

    calls = 0

    def verify(self, token: str, *, digest: bytes | None = None, wait: bool = True) -> VerifiedToken:
        self.calls += 1
        return super().verify(token, digest=digest, wait=wait)


def facts(
    token: str | None = None,
    *,
    route: Mapping[str, str] | None = None,
    authorization: tuple[str, ...] | None = None,
    path: str = "/api/me",
    request_id: str | None = None,
) -> RequestFacts:
    if authorization is None:
        authorization = () if token is None else (f"Bearer {token}",)
    return RequestFacts(
        method="GET",
        host="api.example.com",
        path=path,
        authorization=authorization,
        route=dict(route or {}),
        request_id=request_id,
    )


class Parts:
    """An Authorizer on real parts (keys from memory, a FakeClock, a scripted GetUser), and its metrics."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        lookup: ScriptedLookup | None = None,
        revocation_by_default: bool = False,
        on_unconfirmed: RevocationOnError = RevocationOnError.ALLOW,
        with_revocation: bool = True,
        state: SharedState | None = None,
    ) -> None:
        self.metrics = Metrics()
        keys = JwksCache("memory://jwks", fetcher=static_fetcher(jwks_document()))
        keys.refresh()  # loaded, as a serving server's are
        self.verifier = CountingVerifier(
            issuers={ISSUER: POOL_ID},
            key_sources={ISSUER: keys},
            client_ids={CLIENT_ID},
            clock=clock,
            cache_size=100,
        )
        self.lookup = lookup or ScriptedLookup(Status.ACTIVE)
        self.checker = revocation.RevocationChecker(
            self.lookup, ttl=30.0, timeout=5.0, cache_size=100, leeway=0.0, clock=clock
        )
        self.policy = Policy(realm="cruddur", on_unconfirmed=on_unconfirmed)
        self.authorizer = Authorizer(
            verifier=self.verifier,
            policy=self.policy,
            metrics=self.metrics,
            max_token_bytes=16_384,
            revocation=Revocation(
                self.checker,
                by_default=revocation_by_default,
                clock=clock,
                shared=state,
                denylist=state.denylist if state else None,
                rules=EntryRules(leeway=0.0) if state else None,
                sign_out_timeout=0.25,
            )
            if with_revocation
            else None,
        )

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def close(self) -> None:
        self.lookup.release()
        self.checker.close()


@pytest.fixture
def parts(clock: FakeClock) -> Iterator[Any]:
    made: list[Parts] = []

    def make(**options: Any) -> Parts:
        made.append(Parts(clock, **options))
        return made[-1]

    yield make
    for part in made:
        part.close()


def test_a_valid_token_is_allowed_with_the_identity_headers(parts):
    """A valid access token on a default route is allowed, with the caller's identity for the upstream."""
    decision = parts().authorizer.decide(facts(mint()))
    assert (decision.allowed, decision.reason, decision.http_status) == (True, "ok", 200)
    assert dict(decision.upstream_headers)["x-user-sub"] == SUB
    assert decision.identity is not None and decision.identity.sub == SUB


def test_no_token_is_401_on_a_required_route_and_anonymous_on_an_optional_one(parts):
    """Without an Authorization header: missing_token where auth is required; an anonymous allow that strips every
    identity header where it is optional."""
    authorizer = parts().authorizer
    assert authorizer.decide(facts()).reason == "missing_token"
    anonymous = authorizer.decide(facts(route={"auth": "optional"}))
    assert anonymous.allowed and anonymous.reason == "anonymous"
    assert set(anonymous.removed_headers) == set(identity_headers.header_names()) and not anonymous.upstream_headers


def test_the_route_is_judged_first_and_a_misconfigured_one_never_reads_the_token(parts, caplog):
    """A route whose settings are not understood is a 403 route_misconfigured, logged with the key and the path
    (without its query), before any token is verified."""
    part = parts()
    token = mint()
    with caplog.at_level(logging.ERROR, logger="authz.decision"):
        decision = part.authorizer.decide(facts(token, route={"group": "admins"}, path=f"/api/me?t={token}"))
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 403, "route_misconfigured")
    assert part.verifier.calls == 0
    [record] = [r for r in caplog.records if r.getMessage() == "route misconfigured"]
    assert record.fields["key"] == "group" and record.fields["path"] == "/api/me"


def test_two_authorization_values_are_malformed_and_never_verified(parts):
    """Two Authorization headers are malformed_authorization, never first-wins, and no token is verified."""
    part = parts()
    decision = part.authorizer.decide(facts(authorization=(f"Bearer {mint()}", "Bearer other")))
    assert (decision.http_status, decision.reason) == (401, "malformed_authorization")
    assert part.verifier.calls == 0


def test_an_invalid_token_is_denied_with_the_verifiers_reason(parts, clock):
    """A token the verifier refuses is denied with that reason, on optional routes too (never downgraded)."""
    token = mint()
    clock.advance(3601)
    for route in ({}, {"auth": "optional"}):
        decision = parts().authorizer.decide(facts(token, route=route))
        assert (decision.allowed, decision.http_status, decision.reason) == (False, 401, "expired")


def test_the_policy_judges_a_verified_caller_against_the_route(parts):
    """A verified caller outside the route's groups is a 403 missing_group that still names the caller."""
    decision = parts().authorizer.decide(facts(mint(), route={"groups": "admins"}))
    assert (decision.http_status, decision.reason) == (403, "missing_group")
    assert decision.identity is not None and decision.identity.sub == SUB


def test_a_repeated_caller_on_a_route_gets_the_remembered_decision(parts, monkeypatch):
    """The same token on the same route is decided by the policy once; another route is judged anew."""
    part = parts()
    decided: list[Any] = []
    original = part.policy.decide

    def decide(verdict: Any, route: Any) -> Any:
        decided.append(route)
        return original(verdict, route)

    monkeypatch.setattr(part.policy, "decide", decide)
    token = mint()
    first = part.authorizer.decide(facts(token))
    assert part.authorizer.decide(facts(token)) is first
    assert not part.authorizer.decide(facts(token, route={"groups": "admins"})).allowed
    assert len(decided) == 2


def test_revocation_comes_last_and_is_never_remembered_with_the_decision(parts, clock):
    """A token Cognito revokes after it was allowed is denied once its answer expires, although its allow is
    remembered; a token the policy denies is never sent to Cognito."""
    lookup = ScriptedLookup(Status.ACTIVE)
    part = parts(lookup=lookup, revocation_by_default=True)
    token = mint()
    assert part.authorizer.decide(facts(token)).allowed
    assert not part.authorizer.decide(facts(token, route={"groups": "admins"})).allowed
    assert lookup.count == 1
    lookup.answer = Status.REVOKED
    clock.advance(31)
    decision = part.authorizer.decide(facts(token))
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 401, "token_revoked")
    assert lookup.count == 2


def test_decide_now_answers_what_needs_no_network_exactly_as_decide(parts):
    """Without waiting, a known caller, an anonymous one and a bad token get the very Decision decide() gives."""
    part = parts()
    token = mint()
    part.authorizer.decide(facts(token))
    for request in (facts(token), facts(), facts("not.a.token"), facts(token, route={"groups": "admins"})):
        assert part.authorizer.decide_now(request) == part.authorizer.decide(request)


def test_decide_now_starts_cognitos_call_and_leaves_the_wait_to_decide(parts):
    """A new token to confirm with Cognito: decide_now returns None at once with the GetUser call already started,
    and decide then answers from that same call (one call for the Check)."""
    lookup = ScriptedLookup(Status.ACTIVE, blocked=True)
    part = parts(lookup=lookup, revocation_by_default=True)
    token = mint()
    assert part.authorizer.decide_now(facts(token)) is None
    assert lookup.entered.wait(5), "the call was not started"
    lookup.release()
    assert part.authorizer.decide(facts(token)).allowed
    assert lookup.count == 1
    assert part.authorizer.decide_now(facts(token)).allowed  # answered now, from the cache


def test_decide_now_leaves_a_key_refetch_to_decide_but_answers_within_the_cooldown(clock):
    """An unknown kid that would refetch the JWKS is left to decide(); once that fetch was made, the next unknown
    kid within the cooldown is answered at once (401 unknown key), without waiting."""
    fetches: list[str] = []

    def fetcher(url: str, timeout: float, max_bytes: int) -> bytes:
        fetches.append(url)
        return static_fetcher(jwks_document())(url, timeout, max_bytes)

    monotonic = FakeClock(1000.0)
    keys = JwksCache("memory://jwks", fetcher=fetcher, clock=monotonic, cooldown=10.0)
    keys.refresh()
    verifier = TokenVerifier(
        issuers={ISSUER: POOL_ID}, key_sources={ISSUER: keys}, client_ids={CLIENT_ID}, clock=clock, cache_size=100
    )
    authorizer = Authorizer(
        verifier=verifier, policy=Policy(realm="cruddur"), metrics=Metrics(), max_token_bytes=16_384
    )
    monotonic.advance(11)
    unknown = facts(mint(kid="rotated-1"))
    assert authorizer.decide_now(unknown) is None
    assert len(fetches) == 1
    assert authorizer.decide(unknown).reason == "unknown_kid"
    assert len(fetches) == 2
    decision = authorizer.decide_now(facts(mint(kid="rotated-2")))
    assert decision is not None and decision.reason == "unknown_kid"
    assert len(fetches) == 2


def test_the_token_is_hashed_once_per_check(parts, monkeypatch):
    """The verifier and revocation share the one digest the authorizer computes: neither hashes the token again."""

    def hashed_again(token: str) -> bytes:
        raise AssertionError("the token was hashed a second time")

    monkeypatch.setattr(tokens, "token_digest", hashed_again)
    monkeypatch.setattr(revocation, "token_digest", hashed_again)
    part = parts(revocation_by_default=True)
    assert part.authorizer.decide(facts(mint())).reason == "ok"
    assert part.lookup.count == 1


@pytest.mark.parametrize(
    "on_unconfirmed, allowed, reason, action",
    [
        (RevocationOnError.ALLOW, True, "ok_unconfirmed", "allow"),
        (RevocationOnError.DENY, False, "revocation_unavailable", "deny"),
    ],
)
def test_cognitos_silence_follows_the_error_policy_and_is_counted(parts, on_unconfirmed, allowed, reason, action):
    """A token Cognito does not confirm is allowed as ok_unconfirmed or denied 503, as AUTHZ_REVOCATION_ON_ERROR
    says, and counted in authz_revocation_unconfirmed_total by what was done."""
    part = parts(
        lookup=ScriptedLookup(RuntimeError("throttled")), revocation_by_default=True, on_unconfirmed=on_unconfirmed
    )
    decision = part.authorizer.decide(facts(mint()))
    assert (decision.allowed, decision.reason) == (allowed, reason)
    assert part.metric("authz_revocation_unconfirmed_total", action=action) == 1


def test_a_route_demanding_revocation_on_an_authorizer_without_it_is_misconfigured(parts):
    """revocation=check where no revocation is configured is a 403, never an allow that skipped the check."""
    authorizer = parts(with_revocation=False).authorizer
    assert authorizer.decide(facts(mint(), route={"revocation": "check"})).reason == "route_misconfigured"
    assert authorizer.decide(facts(mint(), route={"revocation": "skip"})).allowed


def test_a_failure_inside_the_decision_is_a_500_deny(parts, monkeypatch):
    """A bug in any step denies with internal_error (500); decide() itself never raises."""
    part = parts()

    def broken(token: str, *, digest: bytes | None = None) -> VerifiedToken:
        raise RuntimeError("boom")

    monkeypatch.setattr(part.verifier, "verify", broken)
    decision = part.authorizer.decide(facts(mint()))
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 500, "internal_error")
    assert "boom" not in decision.body


def test_record_counts_each_decision_and_logs_denies_without_the_token(parts, caplog):
    """record() counts by result, reason, pool and client, and logs a deny at INFO with the path (no query) and
    the request id; an allow is logged only at DEBUG; no line holds the token."""
    part = parts()
    token = mint()
    allowed = facts(token, path=f"/api/me?access_token={token}", request_id="req-1")
    denied = facts(token, route={"groups": "admins"}, path="/api/admin", request_id="req-2")
    with caplog.at_level(logging.INFO, logger="authz.decision"):
        for request in (allowed, denied):
            part.authorizer.record(part.authorizer.decide(request), request, 0.001)
    assert part.metric("authz_decisions_total", result="allow", reason="ok", pool=POOL_ID, client=CLIENT_ID) == 1
    assert (
        part.metric("authz_decisions_total", result="deny", reason="missing_group", pool=POOL_ID, client=CLIENT_ID) == 1
    )
    assert part.metric("authz_check_duration_seconds_count") == 2
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "authz.decision"]
    assert [(line["result"], line["path"], line["request_id"], line["sub"]) for line in lines] == [
        ("deny", "/api/admin", "req-2", SUB)
    ]
    assert token not in caplog.text


def test_record_without_facts_and_with_broken_metrics_never_raises(parts, monkeypatch):
    """A Decision the transport could not read facts for is still counted; a failure while recording is logged,
    never raised into the transport."""
    part = parts()
    part.authorizer.record(part.authorizer.internal_error, None, 0.0)
    assert part.metric("authz_decisions_total", result="deny", reason="internal_error", pool="", client="") == 1
    monkeypatch.setattr(part.metrics.check_seconds, "observe", lambda seconds: 1 / 0)
    part.authorizer.record(part.authorizer.internal_error, None, 0.0)


ROUTES = """\
default: {auth: required}
routes:
  - match: {path: /api/health}
    auth: none
  - match: {path: /api/activities/home}
    auth: optional
  - match: {prefix: /api/admin}
    groups: [admins]
"""


@pytest.fixture
def routed(clock: FakeClock, tmp_path: Any) -> Iterator[tuple[Parts, RouteTableFile]]:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES)
    routes = RouteTableFile(path)
    part = Parts(clock)
    part.authorizer = Authorizer(
        verifier=part.verifier, policy=part.policy, metrics=part.metrics, max_token_bytes=16_384, routes=routes
    )
    yield part, routes
    part.close()


def test_without_context_extensions_the_route_table_decides(routed):
    """No context_extensions: the table's first fitting rule decides, and its default where none fits."""
    part, _ = routed
    token = mint()
    assert not part.authorizer.decide(facts(token, path="/api/admin/users")).allowed  # groups: [admins]
    assert part.authorizer.decide(facts(token, path="/api/me")).allowed  # the default: a valid token
    assert part.authorizer.decide(facts(None, path="/api/activities/home")).reason == "anonymous"
    assert part.authorizer.decide(facts(None, path="/api/me")).http_status == 401


def test_context_extensions_win_over_the_table(routed):
    """A Check that carries context_extensions is decided by them alone, as before the table existed."""
    part, _ = routed
    decision = part.authorizer.decide(facts(None, path="/api/activities/home", route={"auth": "required"}))
    assert decision.http_status == 401
    decision = part.authorizer.decide(facts(mint(), path="/api/admin/x", route={"auth": "required"}))
    assert decision.allowed


def test_a_public_route_never_reads_the_token(routed):
    """auth: none allows without verifying: a garbage token is not even looked at, and no identity is passed on."""
    part, _ = routed
    decision = part.authorizer.decide(facts("not-a-token", path="/api/health"))
    assert decision.allowed and decision.reason == "anonymous" and part.verifier.calls == 0
    assert set(decision.removed_headers) == set(identity_headers.header_names())


@pytest.mark.parametrize("path", ["/api/health/../admin", "//api/health", "/api/health/%2e%2e/admin", "/a\\b"])
def test_a_path_not_in_normal_form_is_400_on_every_rule(routed, path):
    """Whatever the rules (here a public one) or context_extensions say, a non-normal path is 400 bad_path."""
    part, _ = routed
    for request in (facts(mint(), path=path), facts(None, path=path, route={"auth": "none"})):
        decision = part.authorizer.decide(request)
        assert (decision.allowed, decision.http_status, decision.reason) == (False, 400, "bad_path")
        assert json.loads(decision.body) == {"error": "bad_path", "message": "request path is not in normal form"}


def test_a_new_table_is_used_by_the_next_check(routed):
    """Once the file's new table is in force, the next Check is decided by it."""
    part, routes = routed
    assert part.authorizer.decide(facts(None, path="/api/activities/home")).allowed
    routes.path.write_text(ROUTES.replace("auth: optional", "auth: required"))
    stamp = routes.path.stat().st_mtime_ns + 1_000_000
    os.utime(routes.path, ns=(stamp, stamp))
    assert routes.check()
    assert part.authorizer.decide(facts(None, path="/api/activities/home")).http_status == 401


# --- the denylist and sign-out routes (shared state on a real Redis) ------------------------------------------


@pytest.fixture
def states(redis_server: RedisServer, clock: FakeClock) -> Iterator[Any]:
    """Makes replicas' shared states on the test's Redis, in sync before returned, closed at teardown."""
    made: list[SharedState] = []

    def make() -> SharedState:
        state = SharedState(redis_server.url, Denylist(100, clock=clock), timeout=0.25, clock=clock)
        made.append(state)
        state.start()
        assert state.wait_connected(5.0)
        return state

    yield make
    for state in made:
        state.close()


def _refused_within(authorizer: Authorizer, token: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if authorizer.decide(facts(token)).reason == "token_revoked":
            return True
        time.sleep(0.01)
    return False


def test_a_session_sign_out_refuses_the_sessions_tokens_on_every_replica(parts, states):
    """A Check on a sign_out=session route is allowed, and from then on that token and every other token of its
    session get 401 token_revoked on this replica at once and on another within a second; another session of the
    same user passes."""
    here, there = parts(state=states()), parts(state=states())
    token = mint(access_claims())
    refreshed = mint(access_claims(jti="another-jti", iat=int(NOW)))
    other_session = mint(access_claims(origin_jti="1b1c2d3e-aaaa-4bbb-8ccc-000000000002"))
    signed_out = here.authorizer.decide(facts(token, route={"sign_out": "session"}))
    assert signed_out.allowed
    assert here.metric("authz_sign_outs_total", outcome="recorded") == 1
    assert here.authorizer.decide(facts(token)).reason == "token_revoked"
    assert _refused_within(there.authorizer, token, 1.0)
    assert there.authorizer.decide(facts(refreshed)).reason == "token_revoked"
    assert there.authorizer.decide(facts(other_session)).allowed


def test_a_global_sign_out_refuses_every_token_the_user_was_issued_until_then(parts, states, clock):
    """A Check on a sign_out=global route refuses the caller's tokens of any session issued until then, and not a
    token from a sign-in after it."""
    part = parts(state=states())
    other_session = mint(access_claims(origin_jti="1b1c2d3e-aaaa-4bbb-8ccc-000000000002"))
    assert part.authorizer.decide(facts(mint(), route={"sign_out": "global"})).allowed
    assert part.authorizer.decide(facts(other_session)).reason == "token_revoked"
    clock.advance(5)
    later = mint(access_claims(iat=int(clock()), origin_jti="2b1c2d3e-aaaa-4bbb-8ccc-000000000003"))
    assert part.authorizer.decide(facts(later)).allowed


def test_a_denylisted_token_is_revoked_on_every_kind_of_route(parts, states):
    """A refused token is 401 token_revoked also where revocation is skipped and where auth is optional (a token
    that is sent must be valid), and a public route still does not read it."""
    part = parts(state=states())
    token = mint()
    assert part.authorizer.decide(facts(token, route={"sign_out": "session"})).allowed
    for route in ({"revocation": "skip"}, {"auth": "optional"}, {}):
        assert part.authorizer.decide(facts(token, route=route)).reason == "token_revoked", route
    assert part.authorizer.decide(facts(token, route={"auth": "none"})).allowed


def test_a_sign_out_waits_for_the_shared_state_and_never_answers_on_the_loop(parts, states):
    """decide_now leaves a sign-out to decide (it writes to the shared state), which records it once."""
    part = parts(state=states())
    token = mint()
    assert part.authorizer.decide_now(facts(token, route={"sign_out": "session"})) is None
    assert part.authorizer.decide(facts(token)).allowed  # nothing recorded by decide_now
    assert part.authorizer.decide(facts(token, route={"sign_out": "session"})).allowed
    assert part.metric("authz_sign_outs_total", outcome="recorded") == 1


def test_a_sign_out_the_shared_state_cannot_record_is_a_503_and_refuses_nothing(parts, states, redis_server):
    """With Redis down, a sign-out route answers 503 sign_out_unavailable (the caller never believes itself signed
    out), and the token goes on working."""
    state = states()
    part = parts(state=state)
    redis_server.kill()
    assert wait_for(lambda: not state.connected, 5.0)
    token = mint()
    decision = part.authorizer.decide(facts(token, route={"sign_out": "session"}))
    assert (decision.allowed, decision.reason, decision.http_status) == (False, "sign_out_unavailable", 503)
    assert part.metric("authz_sign_outs_total", outcome="unavailable") == 1
    assert part.authorizer.decide(facts(token)).allowed


def test_a_sign_out_route_on_a_server_without_shared_state_is_misconfigured(parts):
    """sign_out where no AUTHZ_STATE_URL is configured is route_misconfigured, never an allow that looks signed
    out."""
    part = parts()
    decision = part.authorizer.decide(facts(mint(), route={"sign_out": "session"}))
    assert (decision.allowed, decision.reason) == (False, "route_misconfigured")
    assert part.metric("authz_sign_outs_total", outcome="not_configured") == 1


def test_a_sign_out_waits_no_longer_than_the_state_timeout_however_redis_stalls(parts, states, redis_server):
    """A Redis that stops answering in the middle (paused, before any replica has noticed) costs a sign-out's Check
    at most its state timeout in all, answered 503 sign_out_unavailable, far inside Envoy's 1 s."""
    part = parts(state=states())
    redis_server.pause()
    try:
        started = time.monotonic()
        decision = part.authorizer.decide(facts(mint(), route={"sign_out": "session"}))
        elapsed = time.monotonic() - started
    finally:
        redis_server.resume()
    assert (decision.allowed, decision.reason) == (False, "sign_out_unavailable")
    assert elapsed < 1.0, elapsed
