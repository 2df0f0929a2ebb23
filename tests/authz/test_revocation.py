"""authz/revocation.py: confirming a verified Cognito access token with GetUser before it is allowed.

The checker (cache, single flight, bounded wait), which tokens can be confirmed, and the rule's Confirmation for
a route. Cognito itself is replaced by a scripted lookup; the boto3 lookup is checked against a loopback endpoint
that speaks GetUser's JSON protocol. What a client sees through a real server is in test_server.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from authz.cache import token_digest
from authz.errors import MustWait
from authz.revocation import (
    Confirmation,
    Deferral,
    Revocation,
    RevocationChecker,
    Status,
    confirmable,
)
from authz.tokens import VerifiedToken
from tests.conftest import (
    NOW,
    POOL_ID,
    access_claims,
    throttled,
    verified,
    wait_for,
)
from tests.held_lookup import HeldLookup

ADMIN = "aws.cognito.signin.user.admin"
SUB = access_claims()["sub"]


# ------------------------------------------------------------------------------------------------ helpers


def identity(**overrides: Any) -> VerifiedToken:
    """A verified Cognito access token with the admin scope, expiring an hour after NOW."""
    return verified(**overrides)


# ------------------------------------------------------------------------------------ checker: caching


def test_active_answer_is_cached_for_ttl_then_asked_again(checkers, lookups, clock):
    """An active token costs one GetUser per TTL: repeated Checks within the TTL reuse the answer."""
    lookup = lookups(Status.ACTIVE)
    checker = checkers(lookup, ttl=30.0)

    assert checker.status("token-a", identity()) is Status.ACTIVE
    assert lookup.calls == [(POOL_ID, "token-a")]
    clock.advance(29.9)
    assert checker.status("token-a", identity()) is Status.ACTIVE
    assert lookup.count == 1
    clock.advance(0.1)  # exactly ttl after the answer
    assert checker.status("token-a", identity()) is Status.ACTIVE
    assert lookup.count == 2


@pytest.mark.parametrize("leeway", [0.0, 5.0], ids=["no-leeway", "leeway-5s"])
def test_active_answer_is_never_cached_past_what_the_verifier_accepts(checkers, lookups, clock, leeway):
    """A token expiring before the TTL is confirmed again once the verifier's acceptance ends (exp + leeway), not
    trusted for the whole TTL."""
    lookup = lookups(Status.ACTIVE)
    checker = checkers(lookup, ttl=30.0, leeway=leeway)
    soon = identity(expires_at=NOW + 10)

    checker.status("token-a", soon)
    clock.advance(10 + leeway - 0.1)
    checker.status("token-a", soon)
    assert lookup.count == 1
    clock.advance(0.1)
    checker.status("token-a", soon)
    assert lookup.count == 2


def test_revoked_answer_is_kept_until_the_token_expires(checkers, lookups, clock):
    """A revoked token stays revoked without asking Cognito again, well past the TTL, until it expires."""
    lookup = lookups(Status.REVOKED)
    checker = checkers(lookup, ttl=30.0)
    token = identity(expires_at=NOW + 100)

    assert checker.status("token-a", token) is Status.REVOKED
    clock.advance(99.9)
    assert checker.status("token-a", token) is Status.REVOKED
    assert lookup.count == 1
    clock.advance(0.1)
    checker.status("token-a", token)
    assert lookup.count == 2


@pytest.mark.parametrize(
    "failure",
    [
        throttled(),
        ClientError({"Error": {"Code": "InternalErrorException", "Message": "boom"}}, "GetUser"),
        RuntimeError("endpoint unreachable"),
        TimeoutError("read timed out"),
        ConnectionResetError(),
        ValueError("unexpected answer"),
    ],
    ids=["throttled", "internal-error", "runtime-error", "timeout", "connection-reset", "value-error"],
)
def test_a_failed_lookup_is_unknown_for_error_ttl_and_never_raises(checkers, lookups, clock, failure):
    """Cognito failing in any way is UNKNOWN (never an exception out of status()), remembered for error_ttl only."""
    lookup = lookups(failure)
    checker = checkers(lookup, ttl=30.0, error_ttl=1.0)

    assert checker.status("token-a", identity()) is Status.UNKNOWN
    assert checker.status("token-a", identity()) is Status.UNKNOWN
    assert lookup.count == 1
    clock.advance(0.9)
    checker.status("token-a", identity())
    assert lookup.count == 1
    clock.advance(0.1)
    lookup.answer = Status.ACTIVE  # Cognito is back
    assert checker.status("token-a", identity()) is Status.ACTIVE
    assert lookup.count == 2


def test_error_ttl_never_exceeds_ttl(checkers, lookups, clock):
    """An outage answer is not remembered longer than an active one would be."""
    lookup = lookups(throttled())
    checker = checkers(lookup, ttl=2.0, error_ttl=5.0)

    checker.status("token-a", identity())
    clock.advance(2.0)
    checker.status("token-a", identity())
    assert lookup.count == 2


class _OddlyShapedError(Exception):
    """An exception from some client library with a `response` dict whose "Error" is not itself a dict."""

    def __init__(self, error: Any) -> None:
        super().__init__("odd")
        self.response = {"Error": error}


def test_a_lookup_error_of_any_shape_is_unknown(checkers, lookups):
    """Whatever a lookup raises, status() answers UNKNOWN rather than letting an exception out."""
    lookup = lookups(_OddlyShapedError("Throttling"))
    checker = checkers(lookup)

    assert checker.status("token-a", identity()) is Status.UNKNOWN


def test_a_token_in_its_leeway_window_costs_one_lookup_not_one_per_check(checkers, lookups, clock):
    """A just-expired token still inside the verifier's leeway is denied from a remembered answer, not a call
    to Cognito per Check; the answer is dropped once the verifier would no longer accept the token."""
    lookup = lookups(Status.REVOKED)  # what Cognito says of an expired access token
    checker = checkers(lookup, leeway=30.0)
    just_expired = identity(expires_at=NOW - 5)  # what the verifier returns at NOW with leeway_seconds=30

    for _ in range(3):
        assert checker.status("token-a", just_expired) is Status.REVOKED
    assert lookup.count == 1
    clock.advance(24.9)
    checker.status("token-a", just_expired)
    assert lookup.count == 1
    clock.advance(0.1)  # exp + leeway
    checker.status("token-a", just_expired)
    assert lookup.count == 2


def test_cache_holds_at_most_cache_size_answers(checkers, lookups):
    """With cache_size=N, N+k distinct tokens leave exactly N cached, the least recently asked evicted."""
    lookup = lookups(Status.ACTIVE)
    checker = checkers(lookup, cache_size=5)

    for index in range(8):
        checker.status(f"token-{index}", identity())
    assert checker.cached() == 5
    checker.status("token-7", identity())
    assert lookup.count == 8
    checker.status("token-0", identity())  # evicted: asked again
    assert lookup.count == 9


# ------------------------------------------------------------------------------- checker: concurrency


def test_concurrent_checks_of_one_token_share_one_lookup(checkers, lookups):
    """20 Checks of the same token while GetUser is in flight make one call and all get its answer."""
    lookup = lookups(Status.REVOKED, blocked=True)
    checker = checkers(lookup)
    started = threading.Semaphore(0)
    results: list[Status] = []
    results_lock = threading.Lock()

    def ask() -> None:
        started.release()
        answer = checker.status("token-a", identity())
        with results_lock:
            results.append(answer)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert started.acquire(timeout=5)
    assert lookup.entered.wait(timeout=5)
    assert results == []  # nobody answered while Cognito had not
    lookup.release()
    for thread in threads:
        thread.join(timeout=5)

    assert results == [Status.REVOKED] * 20
    assert lookup.calls == [(POOL_ID, "token-a")]


def test_concurrent_checks_of_different_tokens_each_get_their_own_lookup(checkers, lookups):
    """Different tokens are never coalesced: each is asked about with its own token."""
    lookup = lookups(
        answers={"token-a": Status.ACTIVE, "token-b": Status.REVOKED, "token-c": Status.ACTIVE}, blocked=True
    )
    checker = checkers(lookup)
    results: dict[str, Status] = {}

    def ask(token: str) -> None:
        results[token] = checker.status(token, identity())

    threads = [threading.Thread(target=ask, args=(token,)) for token in ("token-a", "token-b", "token-c")]
    for thread in threads:
        thread.start()
    assert wait_for(lambda: lookup.count == 3, timeout=5)
    lookup.release()
    for thread in threads:
        thread.join(timeout=5)

    assert sorted(lookup.tokens()) == ["token-a", "token-b", "token-c"]
    assert results == {"token-a": Status.ACTIVE, "token-b": Status.REVOKED, "token-c": Status.ACTIVE}


def test_a_lookup_that_never_answers_is_unknown_within_the_timeout(checkers, lookups):
    """However slow Cognito is, status() gives up after `timeout` and answers UNKNOWN."""
    lookup = lookups(Status.ACTIVE, blocked=True)  # released only at teardown
    checker = checkers(lookup, timeout=0.1)
    answers: list[Status] = []
    # Asked from a thread so that a status() that does hang fails this test instead of hanging the run.
    asker = threading.Thread(target=lambda: answers.append(checker.status("token-a", identity())), daemon=True)

    asker.start()
    asker.join(timeout=0.1 + 0.5)
    assert answers == [Status.UNKNOWN]
    assert lookup.count == 1


def test_beyond_max_waiters_a_check_answers_at_once_and_the_call_still_happens(checkers, lookups):
    """With max_waiters Checks already waiting on a slow Cognito, the next Check is UNKNOWN at once (it must not
    take another gRPC worker hostage), yet its token's call is made, so the answer is cached for next time."""
    lookup = lookups(Status.ACTIVE, blocked=True)
    checker = checkers(lookup, timeout=5.0, max_waiters=1)
    waiting = threading.Thread(target=checker.status, args=("token-a", identity()))
    waiting.start()
    assert wait_for(lambda: lookup.count == 1, timeout=5)

    started = time.monotonic()
    assert checker.status("token-b", identity()) is Status.UNKNOWN
    assert time.monotonic() - started < 1.0
    assert wait_for(lambda: lookup.count == 2, timeout=5)  # token-b is being asked about all the same

    lookup.release()
    waiting.join(timeout=5)
    assert wait_for(lambda: checker.status("token-b", identity()) is Status.ACTIVE, timeout=5)
    assert lookup.count == 2


# ------------------------------------------------------------------------ checker: every worker busy


@pytest.fixture
def held_lookups() -> Iterator[Any]:
    """Makes HeldLookups and releases every held call at teardown, so no worker thread outlives its test."""
    made: list[HeldLookup] = []

    def make(*args: Any, **kwargs: Any) -> HeldLookup:
        lookup = HeldLookup(*args, **kwargs)
        made.append(lookup)
        return lookup

    yield make
    for lookup in made:
        lookup.release_all()


def occupy(checker: RevocationChecker, lookup: HeldLookup, *tokens: str) -> None:
    """Start a held call for each token (one worker each) and wait until all are at Cognito."""
    lookup.hold(*tokens)
    for token in tokens:
        threading.Thread(target=checker.status, args=(token, identity()), daemon=True).start()
        assert lookup.wait_asked(token)


def test_a_token_finding_every_worker_busy_is_queued_and_answered_for_its_next_check(checkers, held_lookups):
    """With every worker held by a slow Cognito, a new token is UNKNOWN at once, as often as it is asked, with no
    call beyond one per worker; when a worker frees it asks about that token without another Check, and the
    token's next Check has Cognito's answer from the cache."""
    lookup = held_lookups(answers={"token-r": Status.REVOKED})
    checker = checkers(lookup, timeout=5.0, workers=2)
    occupy(checker, lookup, "token-a", "token-b")

    started = time.monotonic()
    for _ in range(3):
        assert checker.status("token-r", identity()) is Status.UNKNOWN
    assert time.monotonic() - started < 1.0  # far below the 5 s timeout: no Check waits on the queue
    assert lookup.tokens() == ["token-a", "token-b"]  # one call per worker, never more

    lookup.release("token-a")
    assert lookup.wait_asked("token-r", timeout=2)
    assert checker.status("token-r", identity()) is Status.REVOKED
    assert lookup.asked("token-r") == 1


def test_queued_tokens_are_asked_about_oldest_first_once_each(checkers, held_lookups):
    """Tokens queued behind a busy worker are asked about in the order they first came, each once however often
    it is asked for meanwhile, and each is reported queued once."""
    lookup = held_lookups()
    deferred: list[Deferral] = []
    checker = checkers(lookup, workers=1, on_deferred=deferred.append)
    occupy(checker, lookup, "token-a")

    for token in ("token-b", "token-c", "token-b", "token-d", "token-c"):
        assert checker.status(token, identity()) is Status.UNKNOWN
    assert checker.queued() == 3
    assert deferred == [Deferral.QUEUED] * 3

    lookup.release("token-a")
    assert lookup.wait_calls(4, timeout=2)
    assert lookup.tokens() == ["token-a", "token-b", "token-c", "token-d"]
    assert wait_for(lambda: checker.queued() == 0, timeout=2)


def test_a_full_queue_drops_the_new_lookup_never_a_queued_one(checkers, held_lookups):
    """With max_queued tokens waiting, a further token's lookup is dropped (reported at each of its Checks, each
    answered at once) and the queued tokens keep their places; the dropped token is asked about at its next Check
    once a worker is free."""
    lookup = held_lookups()
    deferred: list[Deferral] = []
    checker = checkers(lookup, timeout=5.0, workers=1, max_queued=2, on_deferred=deferred.append)
    occupy(checker, lookup, "token-a")

    started = time.monotonic()
    for token in ("token-b", "token-c", "token-d", "token-e", "token-d"):
        assert checker.status(token, identity()) is Status.UNKNOWN
    assert time.monotonic() - started < 1.0
    assert deferred == [Deferral.QUEUED, Deferral.QUEUED, Deferral.DROPPED, Deferral.DROPPED, Deferral.DROPPED]
    assert checker.queued() == 2

    lookup.release("token-a")
    assert wait_for(lambda: checker.queued() == 0 and len(lookup.tokens()) == 3, timeout=2)
    assert lookup.tokens() == ["token-a", "token-b", "token-c"]
    assert wait_for(lambda: checker.status("token-d", identity()) is Status.ACTIVE, timeout=2)
    assert lookup.tokens() == ["token-a", "token-b", "token-c", "token-d"]


def test_a_queued_token_is_asked_about_within_workers_plus_max_queued_calls_whatever_else_arrives(
    checkers, held_lookups
):
    """The guarantee under a flood: a token queued behind busy workers is asked about among the first
    workers + max_queued calls, however many new tokens are Checked between calls (a flood fills the queue the
    moment a place frees, and is dropped after that), so a revoked token is refused, not allowed on every Check."""
    lookup = held_lookups(answers={"token-r": Status.REVOKED})
    checker = checkers(lookup, timeout=0.05, workers=2)  # max_queued defaults to 4 x workers: 8
    flood = (f"flood-{index}" for index in range(1_000))
    lookup.hold(*(f"flood-{index}" for index in range(1_000)))

    for token in (next(flood), next(flood)):  # each worker held at Cognito
        checker.status(token, identity())
    for _ in range(7):  # seven flood tokens queued first, then the revoked one
        checker.status(next(flood), identity())
    assert checker.status("token-r", identity()) is Status.UNKNOWN
    assert lookup.tokens() == ["flood-0", "flood-1"]

    released = 0
    while lookup.asked("token-r") == 0 and released < 20:
        # One held call finishes; before the revoked token's next Check, the flood offers ten new tokens.
        lookup.release(lookup.tokens()[released])
        released += 1
        assert lookup.wait_calls(released + 2, timeout=2)  # its worker has taken the queue's oldest
        for _ in range(10):
            checker.status(next(flood), identity())
        checker.status("token-r", identity())

    assert "token-r" in lookup.tokens()[: 2 + 8]
    assert wait_for(lambda: checker.status("token-r", identity()) is Status.REVOKED, timeout=2)


def test_a_token_cognito_did_not_answer_is_asked_again_after_error_ttl_even_with_every_worker_busy(
    checkers, held_lookups, clock
):
    """A token whose lookup failed is UNKNOWN for error_ttl only: its next Check after that, though every worker is
    busy, queues it, and Cognito's answer when it comes is cached for the Check after."""
    lookup = held_lookups(answers={"token-r": throttled()})
    checker = checkers(lookup, timeout=5.0, workers=1, error_ttl=1.0)
    assert checker.status("token-r", identity()) is Status.UNKNOWN
    assert lookup.asked("token-r") == 1

    clock.advance(1.0)
    occupy(checker, lookup, "token-a")
    lookup.answers["token-r"] = Status.REVOKED  # Cognito answers again: the user signed out meanwhile
    assert checker.status("token-r", identity()) is Status.UNKNOWN
    lookup.release("token-a")
    assert lookup.wait_asked("token-r", times=2, timeout=2)
    assert wait_for(lambda: checker.status("token-r", identity()) is Status.REVOKED, timeout=2)
    assert lookup.asked("token-r") == 2


def test_a_queued_token_the_verifier_no_longer_accepts_is_not_asked_about(checkers, held_lookups, clock):
    """A token that expires (exp + leeway) while it waits in the queue is skipped: its answer could never be read."""
    lookup = held_lookups()
    checker = checkers(lookup, workers=1, leeway=5.0)
    occupy(checker, lookup, "token-a")
    checker.status("token-soon", identity(expires_at=NOW + 10))
    checker.status("token-later", identity())

    clock.advance(15.0)
    lookup.release("token-a")
    assert lookup.wait_asked("token-later", timeout=2)
    assert lookup.tokens() == ["token-a", "token-later"]


def test_close_forgets_the_queue(checkers, held_lookups):
    """After close() no queued token is asked about, and a Check answers UNKNOWN without a call."""
    lookup = held_lookups()
    checker = checkers(lookup, workers=1)
    occupy(checker, lookup, "token-a")
    checker.status("token-b", identity())

    checker.close()
    lookup.release("token-a")
    assert checker.status("token-c", identity()) is Status.UNKNOWN
    time.sleep(0.1)  # a queued call, were there one, would have started by now
    assert lookup.tokens() == ["token-a"]
    assert checker.queued() == 0


def test_without_waiting_a_token_with_no_answer_starts_its_call_and_must_wait(checkers, held_lookups):
    """status(wait=False) (a Check on the event loop) never waits: a token with no answer has its call started and
    MustWait raised, for the status() that may wait to share that call; an answered token answers, and a queued or
    dropped one is UNKNOWN at once, as when waiting is allowed. Revocation.confirm passes wait on."""
    lookup = held_lookups(answers={"token-a": Status.REVOKED}, held=("token-a", "token-d"))
    checker = checkers(lookup, timeout=5.0, workers=1, max_queued=1)

    with pytest.raises(MustWait):
        checker.status("token-a", identity(), wait=False)
    assert lookup.wait_asked("token-a")
    with pytest.raises(MustWait):  # in flight: still an answer to wait for
        checker.status("token-a", identity(), wait=False)
    assert checker.status("token-b", identity(), wait=False) is Status.UNKNOWN  # queued
    assert checker.status("token-c", identity(), wait=False) is Status.UNKNOWN  # dropped: the queue is full

    lookup.release("token-a")
    assert checker.status("token-a", identity()) is Status.REVOKED
    assert checker.status("token-a", identity(), wait=False) is Status.REVOKED
    assert lookup.asked("token-a") == 1
    assert lookup.wait_asked("token-b")  # the worker went on to the queue
    rule = Revocation(checker, by_default=True)
    with pytest.raises(MustWait):
        rule.confirm("token-d", identity(), None, digest=token_digest("token-d"), wait=False)
    assert rule.confirm("token-a", identity(), None, digest=token_digest("token-a"), wait=False) is Confirmation.REVOKED


def test_on_lookup_reports_each_answer_once(checkers, lookups):
    """on_lookup (the lookups metric) sees each call's outcome once, and nothing for cached answers."""
    lookup = lookups(answers={"token-a": Status.ACTIVE, "token-b": Status.REVOKED, "token-c": throttled()})
    seen: list[Status] = []
    checker = checkers(lookup, on_lookup=seen.append)

    for token in ("token-a", "token-b", "token-c", "token-a", "token-b", "token-c"):
        checker.status(token, identity())
    assert seen == [Status.ACTIVE, Status.REVOKED, Status.UNKNOWN]


# ------------------------------------------------------------------------------------------ confirmable


@pytest.mark.parametrize(
    "token, expected",
    [
        (identity(), True),
        (identity(scopes=("openid", ADMIN, "feed/read")), True),
        (identity(token_use="id", scopes=()), False),
        (identity(token_use="id", scopes=(ADMIN,)), False),  # cannot come from the verifier; pinned all the same
        (identity(scopes=("api/read",)), False),  # e.g. a client-credentials token
        (identity(scopes=()), False),
    ],
    ids=[
        "access-admin",
        "access-admin-among-others",
        "id-token",
        "id-token-with-admin-scope",
        "client-credentials",
        "access-no-scope",
    ],
)
def test_only_access_tokens_with_the_admin_scope_are_confirmable(token, expected):
    """GetUser accepts only access tokens carrying aws.cognito.signin.user.admin; others are judged on the JWT."""
    assert confirmable(token) is expected


# ------------------------------------------------------------------------------------------- Revocation


def confirm(rule: Revocation, token: str, identity: VerifiedToken, route_says: bool | None = None) -> Confirmation:
    return rule.confirm(token, identity, route_says, digest=token_digest(token))


@pytest.mark.parametrize(
    "by_default, route_says, expected",
    [
        (True, None, True),
        (False, None, False),
        (False, True, True),
        (True, True, True),
        (True, False, False),
        (False, False, False),
    ],
)
def test_applies_follows_the_route_then_the_server_default(checkers, lookups, by_default, route_says, expected):
    """revocation=check/skip on a route wins; a route that does not say follows AUTHZ_REVOCATION."""
    lookup = lookups()
    rule = Revocation(checkers(lookup), by_default=by_default)

    assert confirm(rule, "token-a", identity(), route_says) is (
        Confirmation.CONFIRMED if expected else Confirmation.NOT_APPLICABLE
    )
    assert lookup.count == (1 if expected else 0)


@pytest.mark.parametrize("route_says", [None, True, False])
@pytest.mark.parametrize(
    "token",
    [identity(token_use="id", scopes=()), identity(scopes=("api/read",))],
    ids=["id-token", "client-credentials"],
)
def test_applies_never_for_tokens_cognito_cannot_confirm(checkers, lookups, token, route_says):
    """Id tokens and tokens without the admin scope are never sent to Cognito, even on revocation=check."""
    lookup = lookups()
    rule = Revocation(checkers(lookup), by_default=True)

    assert confirm(rule, "token-a", token, route_says) is Confirmation.NOT_APPLICABLE
    assert lookup.count == 0


def test_judge_lets_active_through_and_refuses_revoked(checkers, lookups):
    """ACTIVE is confirmed and REVOKED is revoked."""
    lookup = lookups(answers={"live": Status.ACTIVE, "dead": Status.REVOKED})
    rule = Revocation(checkers(lookup), by_default=True)

    assert confirm(rule, "live", identity()) is Confirmation.CONFIRMED
    assert confirm(rule, "dead", identity()) is Confirmation.REVOKED


def test_judge_calls_a_refused_token_past_its_exp_expired_not_revoked(checkers, lookups, clock):
    """Within the verifier's leeway after exp, Cognito refuses a token because it expired: the client is told
    "token expired", as the verifier would tell it a moment later, not "token revoked"."""
    rule = Revocation(checkers(lookups(Status.REVOKED), leeway=30.0), by_default=True, clock=clock)

    assert confirm(rule, "token-a", identity(expires_at=NOW - 5)) is Confirmation.EXPIRED
    assert confirm(rule, "token-b", identity(expires_at=NOW + 5)) is Confirmation.REVOKED


def test_judge_calls_no_answer_unconfirmed(checkers, lookups):
    """Cognito not answering (throttled) leaves the token unconfirmed: the policy decides what that means."""
    rule = Revocation(checkers(lookups(throttled())), by_default=True)

    assert confirm(rule, "token-a", identity()) is Confirmation.UNCONFIRMED


@pytest.mark.parametrize(
    "route_says, expected", [(True, Confirmation.NOT_CONFIGURED), (None, Confirmation.NOT_APPLICABLE)]
)
def test_a_server_without_a_checker_cannot_confirm_what_a_route_demands(route_says, expected):
    """Without a checker, a route demanding revocation=check is not configured (never silently skipped), even for
    a token Cognito could not judge anyway; a route that does not ask is not applicable."""
    rule = Revocation(None, by_default=False)

    assert confirm(rule, "token-a", identity(), route_says) is expected
    assert confirm(rule, "token-a", identity(token_use="id", scopes=()), route_says) is expected


# ------------------------------------------------------------------------------- the boto3 GetUser lookup
