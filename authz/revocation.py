"""Revocation: confirm a verified Cognito access token with Cognito's GetUser before it is allowed.

A JWT stays valid until it expires even after its user signed out everywhere (GlobalSignOut,
AdminUserGlobalSignOut) or was disabled or deleted; no signature check can see that. GetUser, authorized by the
access token itself (no AWS credentials), tells whether Cognito still honours the token.

Bounded staleness and bounded cost:
- each token's answer is cached for `ttl` seconds (a revoked token is denied at most `ttl` after Cognito
  revokes it, plus the time its next lookup waits for a worker; a revoked answer is kept for as long as the
  verifier would accept the token, exp + leeway, since a revocation is never undone);
- concurrent Checks of one token share one GetUser call, and at most `workers` calls run at once;
- a Check waits at most `timeout` seconds for Cognito, however slow it is, and at most `max_waiters` Checks wait
  at once, so a slow Cognito can never hold every gRPC worker (cached, anonymous and skipped Checks keep their
  answer time). Beyond that bound a Check does not wait, but its token's call still goes out;
- a token with no answer that finds every worker busy is queued (one place per token, oldest first, at most
  `max_queued`) and its Check answers at once: no Check ever waits on the queue. A queued token keeps its place
  until a worker asks about it, so it is looked up within ceil(max_queued / workers) + 1 lookups' time, and its
  answer is cached for its next Check. Only when the queue is full is a lookup dropped (no call; the token is
  offered again at its next Check); `on_deferred` counts every queued and every dropped lookup.
Cognito not answering is Status.UNKNOWN, and the caller's policy (AUTHZ_REVOCATION_ON_ERROR) decides; an UNKNOWN
is remembered for `error_ttl` and then asked again, so a Cognito outage costs one call per token per `error_ttl`,
not one per Check.

Only access tokens carrying the aws.cognito.signin.user.admin scope can be asked about (GetUser refuses others):
id tokens and, for example, client-credentials tokens are decided on the JWT alone (`confirmable`).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent import futures
from typing import NamedTuple, Protocol

from authz.cache import TokenCache, token_digest
from authz.denylist import DenyEntry, Denylist, EntryKind, EntryRules, Source, subject_ok
from authz.errors import MustWait
from authz.routes import SignOut
from authz.tokens import VerifiedToken
from identity_headers import PRINCIPAL_USER

ADMIN_SCOPE = "aws.cognito.signin.user.admin"
# GetUser's answers that mean "Cognito no longer honours this token": revoked by a global sign-out or a
# RevokeToken, user disabled (NotAuthorizedException), user deleted (UserNotFoundException), the user must reset
# their password or is not confirmed, or the pool is gone (ResourceNotFoundException). Anything else (throttling,
# 5xx, a WAF's ForbiddenException, transport errors) is no answer at all.
REVOKED_ERROR_CODES = frozenset(
    {
        "NotAuthorizedException",
        "UserNotFoundException",
        "PasswordResetRequiredException",
        "UserNotConfirmedException",
        "ResourceNotFoundException",
    }
)

log = logging.getLogger("authz.revocation")

# How many revocation timeouts a replica's claim to ask Cognito about a token holds: a GetUser call's bounds
# (authz/getuser.py: connect and read within the timeout each, the whole call within twice it) and a margin.
CLAIM_TIMEOUTS = 3.5
# Sign-outs' writes to the shared state at once, and as many again waiting; beyond, a sign-out is refused at once.
SIGN_OUT_WRITERS = 4


class Status(enum.Enum):
    """Cognito's answer about one token, as the checker has it."""

    ACTIVE = "active"
    REVOKED = "revoked"
    UNKNOWN = "unknown"  # Cognito did not answer in time: throttled, unreachable, slow or failing


class Confirmation(enum.Enum):
    """What revocation says about a verified token on a route; the policy turns it into a Decision."""

    NOT_APPLICABLE = "not_applicable"  # not asked: the route skips it, or Cognito cannot judge this token
    CONFIRMED = "confirmed"  # Cognito still honours the token
    REVOKED = "revoked"  # Cognito refuses it: signed out everywhere, user disabled or deleted
    EXPIRED = "expired"  # Cognito refuses it because it expired (within the verifier's leeway after exp)
    UNCONFIRMED = "unconfirmed"  # Cognito did not answer in time
    NOT_CONFIGURED = "not_configured"  # the route demands a check this server is not set up to make


# (pool id, access token) -> ACTIVE or REVOKED; raises when Cognito gives no answer either way.
Lookup = Callable[[str, str], Status]


class SharedAnswer(NamedTuple):
    """Cognito's answer about a token as some replica got it, and when (epoch seconds)."""

    status: Status
    asked_at: float


class Claim(NamedTuple):
    """What a replica learns on claiming a token: some replica's answer (then nobody need ask), or whether it is now
    the one to ask Cognito (else another is, and its answer is to be waited for)."""

    answer: SharedAnswer | None
    claimed: bool


class StateUnavailable(Exception):
    """The shared state did not answer (or is known to be down): the caller falls back, or refuses a sign-out."""


class SharedState(Protocol):
    """What revocation needs of the state replicas share (authz/state.py, Redis): the denylist's writes, and
    GetUser's answers with a claim so that one replica asks Cognito about a token while the others wait for it.
    Every method but `connected` may raise StateUnavailable, within the state's own bounded time."""

    @property
    def connected(self) -> bool: ...

    def record(self, entry: DenyEntry) -> bool: ...

    def answer(self, digest: bytes) -> SharedAnswer | None: ...

    def claim(self, digest: bytes, hold: float) -> Claim: ...

    def wait_answer(self, digest: bytes, deadline: float) -> SharedAnswer | None: ...

    def put_answer(self, digest: bytes, answer: SharedAnswer, deadline: float) -> None: ...

    def release(self, digest: bytes) -> None: ...


def confirmable(token: VerifiedToken) -> bool:
    """Whether GetUser can judge this token: a user's access token with the admin scope (an app client's token has
    no user to get, whatever scopes a trigger gave it)."""
    return token.token_use == "access" and token.principal == PRINCIPAL_USER and ADMIN_SCOPE in token.scopes


class Deferral(enum.Enum):
    """What became of a lookup that found every revocation worker busy."""

    QUEUED = "queued"  # it waits for a worker; its answer will be cached for a later Check
    DROPPED = "dropped"  # the queue was full: no call now; the token is offered again at its next Check


class _Question(NamedTuple):
    """What one GetUser call asks about: the token itself (the call's only credential), and its identity (its pool,
    and until when the verifier accepts it)."""

    token: str
    identity: VerifiedToken


class RevocationChecker:
    """Asks `lookup` whether a verified token is still honoured, with a bounded cache and one call per token."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        ttl: float,
        timeout: float,
        cache_size: int,
        leeway: float,
        error_ttl: float = 1.0,
        workers: int = 8,
        max_queued: int | None = None,
        max_waiters: int | None = None,
        clock: Callable[[], float] = time.time,
        on_lookup: Callable[[Status], None] | None = None,
        on_deferred: Callable[[Deferral], None] | None = None,
        shared: SharedState | None = None,
        on_shared: Callable[[Status], None] | None = None,
    ) -> None:
        """workers: GetUser calls at once; max_queued: tokens waiting for a worker (default 4 x workers, so a
        queued token is looked up within five lookups' time); max_waiters: Checks waiting on a call at once.
        shared: the state replicas share (AUTHZ_STATE_URL): a token's answer is taken from there when some replica
        has it, else this replica claims the token and asks, or waits for the replica that claimed it; on_shared
        hears each answer taken from there (UNKNOWN: the claiming replica did not answer in time)."""
        self._lookup = lookup
        self._shared = shared
        self._on_shared = on_shared
        self._ttl = ttl
        self._leeway = leeway
        self._timeout = timeout
        self._error_ttl = min(error_ttl, ttl)
        self._workers = workers
        self._max_queued = 4 * workers if max_queued is None else max_queued
        self._waiters = threading.BoundedSemaphore(max_waiters) if max_waiters else None
        self._clock = clock
        self._on_lookup = on_lookup
        self._on_deferred = on_deferred
        # Cognito's answers by token digest, until each answer's deadline (ttl, error_ttl, or exp + leeway for a
        # revoked token): one GetUser per token per ttl. Bounded by cache_size (LRU).
        self._answers: TokenCache[Status] = TokenCache(cache_size, clock)
        # GetUser calls in flight by token digest, one per busy worker (at most `workers`, so no call ever waits
        # in the executor's own queue): concurrent Checks of one token share its call.
        self._calls: dict[bytes, futures.Future[Status]] = {}
        self._busy = 0  # workers running a call
        # Tokens waiting for a worker, by digest, oldest first: at most max_queued, one place per token; it holds
        # the tokens themselves (the call needs them) until their call starts. A worker that finishes a call takes
        # the oldest, so the queue is only ever non-empty while every worker is busy. A lookup that finds it full
        # is the one dropped, never one already queued: a queued token keeps its place, which is what bounds its
        # wait (a flood of new tokens that evicted the oldest could keep any one token from ever being asked
        # about), and the dropped one loses nothing it had, since its next Check offers it again.
        self._queue: OrderedDict[bytes, _Question] = OrderedDict()
        self._closed = False
        self._lock = threading.Lock()
        self._executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="revocation")

    def cached(self) -> int:
        return len(self._answers)

    def queued(self) -> int:
        return len(self._queue)

    def status(self, token: str, identity: VerifiedToken, *, digest: bytes | None = None, wait: bool = True) -> Status:
        """Cognito's answer for a token verify() accepted: from the cache, a shared call, or UNKNOWN in time.
        digest is the token's token_digest() when the caller has it already. With wait False, where the answer
        needs a call to finish, the call is started and MustWait raised instead of waiting: a later status() finds
        it in flight or answered."""
        if digest is None:
            digest = token_digest(token)
        answer = self._answers.get(digest)
        if answer is not None:
            return answer
        deferral: Deferral | None = None
        with self._lock:
            call = self._calls.get(digest)
            if call is None:
                answer = self._answers.get(digest)  # a call may have finished since the first look
                if answer is not None:
                    return answer
                if self._closed:
                    return Status.UNKNOWN
                if self._busy < self._workers:
                    call = self._calls[digest] = futures.Future()
                    self._busy += 1
                    self._executor.submit(self._work, digest, _Question(token, identity), call)
                elif digest not in self._queue:  # a token already queued keeps its place (and is counted once)
                    deferral = self._enqueue(digest, token, identity)
        if call is None:
            # Every worker is busy: answer now (never wait on the queue); a queued token's answer is cached later.
            if deferral is not None and self._on_deferred is not None:
                self._on_deferred(deferral)
            return Status.UNKNOWN
        # Enough Checks already wait on Cognito: answer now (the call goes on, and its answer is cached).
        if self._waiters is not None and not self._waiters.acquire(blocking=False):
            return Status.UNKNOWN
        if not wait and not call.done():
            if self._waiters is not None:
                self._waiters.release()
            raise MustWait()
        try:
            return call.result(timeout=self._timeout)
        except futures.TimeoutError:
            return Status.UNKNOWN
        finally:
            if self._waiters is not None:
                self._waiters.release()

    def _enqueue(self, digest: bytes, token: str, identity: VerifiedToken) -> Deferral:
        if len(self._queue) >= self._max_queued:
            return Deferral.DROPPED
        self._queue[digest] = _Question(token, identity)
        return Deferral.QUEUED

    def _work(self, digest: bytes, question: _Question, call: futures.Future[Status]) -> None:
        """One worker's run: this call, then the queue's oldest token while there is one."""
        while True:
            # A bug in _ask must strand neither the Checks sharing this call nor the worker (and the queue behind it).
            try:
                answer = self._ask(digest, question.token, question.identity)
            except Exception:
                log.exception("revocation lookup crashed")
                answer = Status.UNKNOWN
            # The call leaves _calls before its Checks hear the answer: a Check arriving after that reads the cache
            # (or starts a new call once the answer has expired), never a finished call's old answer.
            with self._lock:
                del self._calls[digest]
                following = self._start_next()
                if following is None:
                    self._busy -= 1
            call.set_result(answer)
            if following is None:
                return
            digest, question, call = following

    def _start_next(self) -> tuple[bytes, _Question, futures.Future[Status]] | None:
        """The oldest queued token the verifier still accepts, its call registered (called with the lock held)."""
        if self._closed:
            self._queue.clear()
            return None
        now = self._clock()
        while self._queue:
            digest, question = self._queue.popitem(last=False)
            if now < question.identity.expires_at + self._leeway:  # an expired token's answer would never be read
                call = self._calls[digest] = futures.Future()
                return digest, question, call
        return None

    def _ask(self, digest: bytes, token: str, identity: VerifiedToken) -> Status:
        shared = self._shared if self._shared is not None and self._shared.connected else None
        claimed = False
        if shared is not None:
            # One GetUser per token per ttl across the replicas: an answer some replica has, or the claim to ask,
            # or the answer of the replica holding the claim. The state failing is no answer: ask Cognito here.
            try:
                # Held as long as a GetUser can take (its connection, its answer, and its whole-call deadline beyond),
                # so a slow Cognito is not asked about one token by two replicas.
                known, claimed = shared.claim(digest, CLAIM_TIMEOUTS * self._timeout)
                if known is None and not claimed:
                    known = shared.wait_answer(digest, self._clock() + self._timeout)
                    # None: the replica asking has no answer in time, as if Cognito were this slow.
                    known = known or SharedAnswer(Status.UNKNOWN, self._clock())
                if known is not None:
                    self._answers.put(digest, known.status, self._deadline(known, identity))
                    if self._on_shared is not None:
                        self._on_shared(known.status)
                    return known.status
            except StateUnavailable:
                claimed = False
        try:
            answer = self._lookup(identity.pool_id, token)
        except Exception as error:  # noqa: BLE001 - any failure to answer is UNKNOWN, never an exception
            log.warning(
                "revocation lookup failed", extra={"fields": {"error": _describe(error), "pool": identity.pool_id}}
            )
            answer = Status.UNKNOWN
        asked = SharedAnswer(answer, self._clock())
        deadline = self._deadline(asked, identity)
        self._answers.put(digest, answer, deadline)
        if self._on_lookup is not None:
            self._on_lookup(answer)
        if claimed and shared is not None:
            self._share(shared, digest, asked, deadline)
        return answer

    def _deadline(self, answer: SharedAnswer, identity: VerifiedToken) -> float:
        # The verifier accepts a token until exp + leeway, so an answer is worth keeping that long (past exp,
        # Cognito calls the token invalid: without this each Check in the leeway window made its own call).
        accepted_until = identity.expires_at + self._leeway
        if answer.status is Status.REVOKED:
            return accepted_until  # a revoked token never comes back
        if answer.status is Status.ACTIVE:
            return min(answer.asked_at + self._ttl, accepted_until)
        return answer.asked_at + self._error_ttl

    def _share(self, shared: SharedState, digest: bytes, asked: SharedAnswer, deadline: float) -> None:
        """Give the replicas this replica's answer (none: let the next Check anywhere ask), and a revoked token to
        every replica's denylist at once, rather than at each one's next look."""
        try:
            if asked.status is Status.UNKNOWN:
                shared.release(digest)
                return
            shared.put_answer(digest, asked, deadline)
            if asked.status is Status.REVOKED:
                shared.record(DenyEntry(EntryKind.TOKEN, digest.hex(), deadline, source=Source.COGNITO))
        except StateUnavailable:
            pass  # this replica has the answer; the others ask themselves

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _describe(error: Exception) -> str:
    """The error's type and AWS error code: never its message, which could quote a request."""
    try:  # whatever shape a library gives its errors, describing one must not fail the Check
        response = getattr(error, "response", None)
        details = response.get("Error") if isinstance(response, dict) else None
        code = details.get("Code") if isinstance(details, dict) else None
    except Exception:  # noqa: BLE001 - describing an error must never fail the Check it happened in
        code = None
    return f"{type(error).__name__}:{code}" if isinstance(code, str) else type(error).__name__


class SignOutOutcome(enum.Enum):
    """What became of a sign-out route's Check; the policy turns it into a Decision."""

    RECORDED = "recorded"  # every replica refuses the caller's tokens from now on
    UNAVAILABLE = "unavailable"  # the shared state did not take it: nothing is refused
    NOT_CONFIGURED = "not_configured"  # this server has no shared state (AUTHZ_STATE_URL) to record it in


class Revocation:
    """The configured rule: which Checks confirm their token with Cognito, and what Cognito's answer means; and
    with shared state (AUTHZ_STATE_URL), the denylist every Check reads and a sign-out route writes."""

    def __init__(
        self,
        checker: RevocationChecker | None,
        *,
        by_default: bool,
        clock: Callable[[], float] = time.time,
        shared: SharedState | None = None,
        denylist: Denylist | None = None,
        rules: EntryRules | None = None,
        sign_out_timeout: float = 0.25,
    ) -> None:
        """checker: None on a server that cannot ask Cognito; by_default: confirm on routes that do not say
        (AUTHZ_REVOCATION=cognito); shared, denylist and rules: the shared state, the local view it keeps fresh,
        and how long a sign-out's entry lives (all None without AUTHZ_STATE_URL); sign_out_timeout: the longest a
        sign-out's Check waits on the shared state."""
        self.checker = checker
        self._by_default = by_default
        self._clock = clock
        self._shared = shared
        self._denylist = denylist
        self._rules = rules
        self._sign_out_timeout = sign_out_timeout
        # Sign-outs' writes, so a Check waits for one with a deadline of its own, whatever the write's round trips.
        self._writes = (
            futures.ThreadPoolExecutor(max_workers=SIGN_OUT_WRITERS, thread_name_prefix="sign-out")
            if shared is not None
            else None
        )
        self._pending_writes = threading.BoundedSemaphore(2 * SIGN_OUT_WRITERS)

    def refuses(self, identity: VerifiedToken, digest: bytes) -> bool:
        """Whether the denylist refuses a verified token (never any I/O: the local view)."""
        return self._denylist is not None and self._denylist.refuses(identity, digest)

    def sign_out(self, identity: VerifiedToken, digest: bytes, scope: SignOut) -> SignOutOutcome:
        """Record in the shared state that the caller's tokens are refused from now on: its session's (its
        origin_jti; the token alone when it has none) or, with GLOBAL, every one it was issued until now. Waits on
        the shared state at most `sign_out_timeout` in all (however many round trips a write takes), and says
        UNAVAILABLE when it did not take the entry, or this replica cannot hold it, in that time."""
        if self._shared is None or self._rules is None or self._writes is None:
            return SignOutOutcome.NOT_CONFIGURED
        now = self._clock()
        entry: DenyEntry
        if scope is SignOut.GLOBAL and subject_ok(EntryKind.USER, identity.sub):
            entry = self._rules.for_user(identity.sub, now, Source.SIGN_OUT)
        elif identity.origin_jti is not None:
            entry = self._rules.for_session(identity.origin_jti, now, Source.SIGN_OUT)
        else:
            entry = self._rules.for_token(digest, identity.expires_at, Source.SIGN_OUT)
        # Writes waiting beyond the ones running are refused at once: a stalled Redis must not pile up sign-outs
        # that would all land, later, after their callers were told 503.
        if not self._pending_writes.acquire(blocking=False):
            return SignOutOutcome.UNAVAILABLE
        try:
            write = self._writes.submit(self._shared.record, entry)
        except RuntimeError:  # the executor is shut down: the server is stopping
            self._pending_writes.release()
            return SignOutOutcome.UNAVAILABLE
        write.add_done_callback(lambda _: self._pending_writes.release())
        try:
            held = write.result(timeout=self._sign_out_timeout)
        except (StateUnavailable, futures.TimeoutError, futures.CancelledError):
            return SignOutOutcome.UNAVAILABLE
        return SignOutOutcome.RECORDED if held else SignOutOutcome.UNAVAILABLE

    def confirm(
        self, token: str, identity: VerifiedToken, route_says: bool | None, *, digest: bytes, wait: bool = True
    ) -> Confirmation:
        """What revocation says about a verified token on a route whose `revocation` setting is route_says: True
        (check), False (skip) or None (the server default). digest is the token's token_digest(). wait False:
        MustWait where the answer needs a GetUser call to finish (RevocationChecker.status)."""
        wanted = self._by_default if route_says is None else route_says
        if not wanted:
            return Confirmation.NOT_APPLICABLE
        if self.checker is None:
            return Confirmation.NOT_CONFIGURED
        if not confirmable(identity):
            return Confirmation.NOT_APPLICABLE
        status = self.checker.status(token, identity, digest=digest, wait=wait)
        if status is Status.ACTIVE:
            return Confirmation.CONFIRMED
        if status is Status.REVOKED:
            # Within the verifier's leeway after exp, Cognito refuses a token because it expired, not because it
            # was revoked: say so, as the verifier would a minute later.
            return Confirmation.EXPIRED if self._clock() >= identity.expires_at else Confirmation.REVOKED
        return Confirmation.UNCONFIRMED

    def close(self) -> None:
        if self.checker is not None:
            self.checker.close()
        if self._writes is not None:
            self._writes.shutdown(wait=False, cancel_futures=True)
