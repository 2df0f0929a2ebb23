"""The decision of a Check, free of any transport: the facts of a request in, a Decision out.

`Authorizer.decide` runs the steps in one fixed order, in one place: the route's settings, the bearer token,
verification, the denylist and the policy, revocation, and on a sign-out route the sign-out. A transport (service.py for Envoy's gRPC ext_authz) reads its request into
`RequestFacts`, calls `decide`, turns the Decision into its wire reply, and hands the Decision to `record`, which
counts and logs it. Nothing here knows a wire type, and nothing below this module calls back up into it.

A transport on an event loop calls `decide_now` first: the same decision, except that where a step would wait on
the network (a key refetch, Cognito's GetUser, a sign-out's write to the shared state) it stops and returns None, having started that call; `decide` in a
thread then finishes the Check, and finds the work already done (the verified token cached, the call in flight).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import Any, Generic, NamedTuple, TypeVar

from authz.cache import remember, token_digest
from authz.errors import (
    AuthzError,
    BadPath,
    InternalError,
    MalformedAuthorization,
    MustWait,
    RouteMisconfigured,
    TokenRevoked,
)
from authz.metrics import Metrics
from authz.policy import Decision, Policy, Verdict
from authz.revocation import Confirmation, Revocation
from authz.routes import Auth, RouteSettings, RouteTableFile, normal_path, route_settings
from authz.tokens import TokenVerifier, VerifiedToken, bearer_token

log = logging.getLogger("authz.decision")
_failures = logging.getLogger("authz.authorizer")

# Entries in each memo of the Check path (decisions by caller and route here, responses by Decision in a transport,
# metric children by label set); a full memo starts over.
MEMO_SIZE = 4096


class RequestFacts(NamedTuple):
    """What a Check is about, as a transport read it from the request. (A NamedTuple: one is built per Check, and
    a tuple is the cheapest immutable record to build.)"""

    method: str
    host: str
    path: str
    # Every Authorization header value the request carried: more than one is a malformed request, never first-wins.
    authorization: tuple[str, ...]
    # The route's settings as Envoy states them (the per-route ext_authz context_extensions).
    route: Mapping[str, str]
    # For the decision log only (Envoy's x-request-id).
    request_id: str | None = None


class Authorizer:
    """Decides Checks: `decide(facts) -> Decision`, then `record(decision, facts, seconds)`."""

    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        policy: Policy,
        metrics: Metrics,
        max_token_bytes: int,
        revocation: Revocation | None = None,
        routes: RouteTableFile | None = None,
    ) -> None:
        """revocation: None on a server that cannot ask Cognito (a route demanding it is then misconfigured);
        routes: the route table in force for Checks without context_extensions (None: every such route requires an
        access token)."""
        self._verifier = verifier
        self._routes = routes
        self._policy = policy
        self._metrics = metrics
        self._max_token_bytes = max_token_bytes
        self._revocation = revocation or Revocation(None, by_default=False)
        # Built once here, so failing closed cannot itself fail.
        self.internal_error = policy.deny(InternalError())
        # Decisions by caller and route: a repeated token on a route skips the policy, whose allow (seven identity
        # headers and any claim headers) is most of a cached decision's work. Revocation is applied after it, never memoized: Cognito's
        # word on a token can change.
        self._decisions: dict[tuple[VerifiedToken, RouteSettings], Decision] = {}
        # Counter children by label set: prometheus-client's .labels() costs more than the increment.
        self._counters: dict[tuple[str, str, str, str], Any] = {}

    def decide(self, facts: RequestFacts) -> Decision:
        """The Decision for a request, waiting on the network where a step needs it. Never raises: a failure inside
        is the internal_error Decision (fail closed)."""
        try:
            return self._decide(facts, wait=True)
        except Exception:  # noqa: BLE001 - a bug must deny, never allow or leave the transport without an answer
            _failures.exception("decision failed")
            return self.internal_error

    def decide_now(self, facts: RequestFacts) -> Decision | None:
        """The Decision for a request if it can be made without waiting on the network; None when it cannot (then
        call `decide` where waiting is fine). Never raises."""
        try:
            return self._decide(facts, wait=False)
        except MustWait:
            return None
        except Exception:  # noqa: BLE001 - a bug must deny, never allow or leave the transport without an answer
            _failures.exception("decision failed")
            return self.internal_error

    async def decide_on_loop(self, facts: RequestFacts, waiting: futures.Executor | None) -> Decision:
        """The Decision for a transport on an event loop: made in place when no step needs the network, else by
        `decide` on the `waiting` threads (None: the loop's default), so the loop never waits. Never raises."""
        decision = self.decide_now(facts)
        if decision is None:
            decision = await asyncio.get_running_loop().run_in_executor(waiting, self.decide, facts)
        return decision

    def _decide(self, facts: RequestFacts, *, wait: bool) -> Decision:
        # 1. The route's settings: from context_extensions when Envoy sends them, else from the route table, for a
        # path in normal form only.
        if not normal_path(facts.path):
            return self._policy.deny(BadPath())
        try:
            if facts.route or self._routes is None:
                route = route_settings(facts.route)
            else:
                route = self._routes.table.settings_for(facts.method, facts.host, facts.path)
            if route.claims:
                # The claims its conditions ask about must be kept of the token verified next.
                self._verifier.keep_claims(route.claim_names)
        except RouteMisconfigured as error:
            log.error(
                "route misconfigured",
                extra={"fields": {"reason": error.reason, "key": error.key, "path": loggable_path(facts.path)}},
            )
            return self._policy.deny(error)
        if route.auth is Auth.NONE:  # public: the token is not even read
            return self._policy.decide(None, route)
        # 2. The bearer token, 3. verification. The digest is computed once and serves the verifier's cache and
        # revocation's alike.
        token = ""
        digest = b""
        verdict: Verdict
        try:
            if not facts.authorization:
                verdict = None
            elif len(facts.authorization) > 1:
                raise MalformedAuthorization()
            else:
                token = bearer_token(facts.authorization[0], self._max_token_bytes)
                digest = token_digest(token)
                verdict = self._verifier.verify(token, digest=digest, wait=wait)
        except AuthzError as error:
            verdict = error
        # 4. The policy; a token the denylist refuses is revoked, whatever the route.
        if not isinstance(verdict, VerifiedToken):
            return self._policy.decide(verdict, route)
        if self._revocation.refuses(verdict, digest):
            return self._policy.deny_caller(TokenRevoked, verdict)
        decision = self._decisions.get((verdict, route))
        if decision is None:
            decision = remember(self._decisions, (verdict, route), self._policy.decide(verdict, route), limit=MEMO_SIZE)
        if not decision.allowed:
            return decision
        # 5. Revocation, last: only a token that would otherwise be allowed is worth asking Cognito about.
        confirmation = self._revocation.confirm(token, verdict, route.revocation, digest=digest, wait=wait)
        decision = self._policy.with_revocation(decision, confirmation)
        if confirmation is Confirmation.UNCONFIRMED:
            self._metrics.record_unconfirmed(denied=not decision.allowed)
        # 6. A sign-out route: the caller's tokens are refused everywhere before the request goes on.
        if route.sign_out is not None and decision.allowed:
            if not wait:
                raise MustWait()
            outcome = self._revocation.sign_out(verdict, digest, route.sign_out)
            self._metrics.record_sign_out(outcome)
            decision = self._policy.with_sign_out(decision, outcome)
        return decision

    def record(self, decision: Decision, facts: RequestFacts | None, seconds: float) -> None:
        """Count and log a Decision (facts None: the transport could not read the request). Never raises."""
        try:
            self._record(decision, facts, seconds)
        except Exception:  # noqa: BLE001 - counting or logging a Decision must never change or break it
            _failures.exception("recording the decision failed")

    def _record(self, decision: Decision, facts: RequestFacts | None, seconds: float) -> None:
        identity = decision.identity
        pool = identity.pool_id if identity else ""
        client = identity.client_id if identity else ""
        result = "allow" if decision.allowed else "deny"
        labels = (result, decision.reason, pool, client)
        counter = self._counters.get(labels)
        if counter is None:
            counter = remember(self._counters, labels, self._metrics.decisions.labels(*labels), limit=MEMO_SIZE)
        counter.inc()
        self._metrics.check_seconds.observe(seconds)
        # Denies at INFO, allows at DEBUG: Envoy's access log already has a line per request with the caller's
        # sub, and a log line costs more than the rest of a cached Check.
        level = logging.DEBUG if decision.allowed else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "decision",
                extra={
                    "fields": {
                        "result": result,
                        "reason": decision.reason,
                        "status": decision.http_status,
                        "sub": identity.sub if identity else None,
                        "pool": pool or None,
                        "path": loggable_path(facts.path) if facts else None,
                        "request_id": facts.request_id if facts else None,
                    }
                },
            )


Request = TypeVar("Request")
Answer = TypeVar("Answer")


class Answering(Generic[Request, Answer]):
    """A transport's round on an event loop, the same for every transport: its request read into RequestFacts,
    decided (`decide_on_loop`), and the Decision turned into the transport's answer, once per Decision (a repeated
    caller on a route, like every deny of one kind, gets an equal Decision). The caller sends the answer and then
    `record`s the Decision."""

    def __init__(
        self,
        authorizer: Authorizer,
        read: Callable[[Request], RequestFacts],
        build: Callable[[Decision], Answer],
        *,
        waiting: futures.Executor | None = None,
    ) -> None:
        """waiting: the threads that decide requests which must wait on the network (None: the loop's default)."""
        self._authorizer = authorizer
        self._read = read
        self._build = build
        self._waiting = waiting
        # Built once here, so failing closed cannot itself fail.
        self._internal_error = build(authorizer.internal_error)
        self._answers: dict[Decision, Answer] = {}

    async def answer(self, request: Request) -> tuple[Answer, Decision, RequestFacts | None]:
        """The answer, its Decision and the request's facts (None when they could not be read). Never raises: a
        failure of the transport's own is the internal_error Decision's answer (fail closed, never an allow)."""
        facts = None
        try:
            facts = self._read(request)
            decision = await self._authorizer.decide_on_loop(facts, self._waiting)
            answer = self._answers.get(decision)
            if answer is None:
                answer = remember(self._answers, decision, self._build(decision), limit=MEMO_SIZE)
        except Exception:  # noqa: BLE001 - a bug must deny, never allow or leave Envoy without an answer
            _failures.exception("check failed")
            return self._internal_error, self._authorizer.internal_error, facts
        return answer, decision, facts


def loggable_path(path: str) -> str:
    """The path as logs may show it: cut before its query (?), parameters (;) or fragment (#), and "-" if what is
    left is shaped like a JWT, since each of those may carry a token (Envoy's access log withholds the same paths)."""
    head = _PATH_TAIL.split(path, maxsplit=1)[0]
    return "-" if _JWT_SHAPED.search(head) else head


_PATH_TAIL = re.compile(r"[?;#]")
# A JWT's header is base64url JSON, so it starts with `eyJ` ('{"'), and a dot follows it.
_JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]*\.")
