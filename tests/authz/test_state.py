"""The shared state against a real redis-server: entries reach every replica, a new replica reads them all, an
outage keeps the local view and is reported once, Redis coming back (with its data) rebuilds it, and nothing read
from Redis that this server did not write changes a decision."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from authz.cache import token_digest
from authz.denylist import Denylist, EntryRules, Source
from authz.revocation import Claim, RevocationChecker, SharedAnswer, StateUnavailable, Status
from authz.state import CHANNEL, KEY_PREFIX, PING_SECONDS, SharedState
from authz.tokens import VerifiedToken
from tests.conftest import RedisServer, ScriptedLookup, verified

OP = Source.OPERATOR
RULES = EntryRules(leeway=30.0)
SUB = "7c0a1d2e-0000-4000-8000-000000000001"
TIMEOUT = 0.25
# How long an outage may take to be noticed: a PING a second, each bounded by the timeout, and a little slack.
NOTICED_WITHIN = 3 * (PING_SECONDS + TIMEOUT)


def identity(*, sub: str = SUB, issued_at: float | None = None) -> VerifiedToken:
    """A verified token on the wall clock (Redis's entries expire on it): issued a minute ago, for an hour."""
    now = time.time()
    return verified(sub=sub, expires_at=now + 3600, issued_at=now - 60 if issued_at is None else issued_at)


class Replica:
    """One replica's shared state, with what it reported."""

    def __init__(self, url: str, *, max_entries: int = 1000) -> None:
        self.transitions: list[bool] = []
        self.malformed: list[str] = []
        self.state = SharedState(
            url,
            Denylist(max_entries, clock=time.time),
            timeout=TIMEOUT,
            on_connected=self.transitions.append,
            on_malformed=self.malformed.append,
        )

    def refuses(self, token: VerifiedToken, digest: bytes = b"\0" * 32) -> bool:
        return self.state.denylist.refuses(token, digest)


@pytest.fixture
def replicas(redis_server: RedisServer) -> Iterator[Callable[..., Replica]]:
    """Starts replicas' shared states on the test's Redis (in sync before returned), closed at teardown."""
    made: list[Replica] = []

    def start(*, wait: bool = True, **options: Any) -> Replica:
        replica = Replica(redis_server.url, **options)
        made.append(replica)
        replica.state.start()
        if wait:
            assert replica.state.wait_connected(5.0)
        return replica

    yield start
    for replica in made:
        replica.state.close()


def until(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until condition holds, or None when it does not within timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.005)
    return None


# --- the denylist across replicas ----------------------------------------------------------------------------


def test_an_entry_one_replica_records_reaches_the_others_within_a_second(replicas: Callable[..., Replica]) -> None:
    """A revoke recorded on one replica is refused by the recording one at once and by another within a second."""
    first, second = replicas(), replicas()
    token = identity()
    first.state.record(RULES.for_user(SUB, time.time(), OP))
    assert first.refuses(token)
    assert until(lambda: second.refuses(token), 1.0) is not None


def test_a_replica_started_later_reads_every_entry(replicas: Callable[..., Replica]) -> None:
    """A replica that comes up after revokes were made holds them all once in sync."""
    first = replicas(max_entries=2000)
    for index in range(1200):  # more than one SCAN batch
        first.state.record(RULES.for_user(f"user-{index}", time.time(), OP))
    late = replicas(max_entries=2000)
    assert len(late.state.denylist) == 1200
    assert late.refuses(identity(sub="user-1199"))


def test_an_entry_is_never_weakened_by_a_later_weaker_one(
    redis_server: RedisServer, replicas: Callable[..., Replica]
) -> None:
    """A second revoke of a user with an earlier `before` leaves the later one in Redis and in every view."""
    first, second = replicas(), replicas()
    now = time.time()
    first.state.record(RULES.for_user(SUB, now + 100, OP))
    second.state.record(RULES.for_user(SUB, now, OP))
    late = replicas()
    assert late.refuses(identity(issued_at=now + 50))
    assert until(lambda: second.refuses(identity(issued_at=now + 50)), 1.0) is not None


def test_redis_holds_token_digests_never_tokens(redis_server: RedisServer, replicas: Callable[..., Replica]) -> None:
    """A revoked token's entry and a shared answer are keyed by the token's digest; the token is nowhere in Redis."""
    replica = replicas()
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    digest = token_digest(token)
    replica.state.record(RULES.for_token(digest, time.time() + 600, OP))
    replica.state.put_answer(digest, SharedAnswer(Status.ACTIVE, time.time()), time.time() + 30)
    stored = b"".join(
        key + (redis_server.client.get(key) or b"") for key in redis_server.client.scan_iter(match=KEY_PREFIX + "*")
    )
    assert digest.hex().encode() in stored
    assert token.encode() not in stored
    assert token.split(".")[1].encode() not in stored


# --- GetUser's answers across replicas -----------------------------------------------------------------------


def test_one_replica_claims_a_token_and_the_others_read_its_answer(replicas: Callable[..., Replica]) -> None:
    """Of two replicas, one claims the token; once it stores Cognito's answer the other reads it, and the claim is
    given up."""
    first, second = replicas(), replicas()
    digest = token_digest("t")
    assert first.state.claim(digest, 5.0) == Claim(None, claimed=True)
    assert second.state.claim(digest, 5.0) == Claim(None, claimed=False)
    asked = SharedAnswer(Status.ACTIVE, time.time())
    first.state.put_answer(digest, asked, time.time() + 30)
    assert second.state.answer(digest) == asked
    # Once answered, a claim finds the answer rather than the right to ask again (the claim was given up).
    assert second.state.claim(digest, 5.0) == Claim(asked, claimed=False)


def test_a_claim_left_by_a_crashed_replica_expires(replicas: Callable[..., Replica]) -> None:
    """A claim its replica never answers lets another replica ask after its hold."""
    first, second = replicas(), replicas()
    digest = token_digest("t")
    assert first.state.claim(digest, 0.2).claimed
    assert until(lambda: second.state.claim(digest, 5.0).claimed, 2.0) is not None


def test_concurrent_checks_on_two_replicas_make_one_getuser(replicas: Callable[..., Replica]) -> None:
    """A token checked at once on two replicas is asked of Cognito once; both answer from that one call, and after
    the TTL it is asked once again."""
    states = [replicas().state, replicas().state]
    lookup = ScriptedLookup(Status.ACTIVE)
    checkers = [
        RevocationChecker(lookup, ttl=1.0, timeout=2.0, cache_size=100, leeway=0.0, shared=state) for state in states
    ]
    token = identity()
    try:
        answers: list[Status] = []
        threads = [
            threading.Thread(target=lambda c=checker: answers.append(c.status("tok", token)))
            for checker in checkers
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [Status.ACTIVE] * 8
        assert lookup.count == 1
        time.sleep(1.1)
        assert [checker.status("tok", token) for checker in checkers] == [Status.ACTIVE] * 2
        assert lookup.count == 2
    finally:
        for checker in checkers:
            checker.close()


def test_a_token_cognito_revokes_is_refused_by_every_replica_at_once(replicas: Callable[..., Replica]) -> None:
    """When one replica's GetUser says revoked, the others' denylists refuse the token within a second, without
    waiting for their own cached answers to expire."""
    first, second = replicas(), replicas()
    checker = RevocationChecker(
        ScriptedLookup(Status.REVOKED), ttl=30.0, timeout=2.0, cache_size=100, leeway=0.0, shared=first.state
    )
    token = identity()
    try:
        assert checker.status("tok", token) is Status.REVOKED
        assert until(lambda: second.refuses(token, token_digest("tok")), 1.0) is not None
    finally:
        checker.close()


# --- what Redis holds that this server did not write --------------------------------------------------------


def test_garbage_in_redis_is_ignored_and_counted(redis_server: RedisServer, replicas: Callable[..., Replica]) -> None:
    """Malformed and foreign entries, answers and messages are counted and change nothing: good entries still load,
    a garbage answer is no answer."""
    client = redis_server.client
    client.set(KEY_PREFIX + "deny:user:" + SUB, b"not json")
    client.set(KEY_PREFIX + "deny:user:someone", b'{"v":1,"until":99999999999,"before":0,"allow":true}')
    client.set(KEY_PREFIX + "deny:nonsense", b"{}")
    good = replicas()
    good.state.record(RULES.for_user("revoked-user", time.time(), OP))
    replica = replicas()
    assert replica.malformed.count("entry") == 3
    assert replica.refuses(identity(sub="revoked-user"))
    assert not replica.refuses(identity())
    digest = token_digest("t")
    for garbage in (b"active", b'{"v":1,"status":"allow","at":0}', b'{"v":1,"status":"active","at":"now"}'):
        client.set(KEY_PREFIX + "getuser:" + digest.hex(), garbage)
        assert replica.state.answer(digest) is None
    assert replica.malformed.count("answer") == 3
    client.publish(CHANNEL, b"garbage")
    client.publish(CHANNEL, KEY_PREFIX.encode() + b"deny:user:x {broken")
    assert until(lambda: replica.malformed.count("message") + replica.malformed.count("entry") >= 5, 2.0) is not None
    assert replica.state.connected


def test_an_answer_dated_in_the_future_counts_as_asked_now(
    redis_server: RedisServer, replicas: Callable[..., Replica]
) -> None:
    """A shared answer claiming to come from the future cannot outlast the TTL: it is read as asked now."""
    replica = replicas()
    digest = token_digest("t")
    redis_server.client.set(KEY_PREFIX + "getuser:" + digest.hex(), b'{"v":1,"status":"active","at":99999999999}')
    answer = replica.state.answer(digest)
    assert answer is not None
    assert answer.asked_at <= time.time()


# --- outages ----------------------------------------------------------------------------------------------------


def test_a_killed_redis_keeps_the_view_and_is_reported_once(
    redis_server: RedisServer, replicas: Callable[..., Replica]
) -> None:
    """Redis dying leaves each replica refusing what it learned before, says so once, refuses writes at once, and
    when Redis is back (with its append-only file) the view is rebuilt from it."""
    replica = replicas()
    token = identity()
    replica.state.record(RULES.for_user(SUB, time.time(), OP))
    redis_server.kill()
    assert until(lambda: not replica.state.connected, NOTICED_WITHIN) is not None
    assert replica.refuses(token)
    with pytest.raises(StateUnavailable):
        replica.state.record(RULES.for_user("another", time.time(), OP))
    with pytest.raises(StateUnavailable):
        replica.state.answer(token_digest("t"))
    time.sleep(0.5)  # a few reconnect attempts: still one transition
    assert replica.transitions == [True, False]
    redis_server.start()
    assert replica.state.wait_connected(NOTICED_WITHIN + 2.0)
    assert replica.transitions == [True, False, True]
    assert replica.refuses(token)  # the revoke survived Redis's restart
    late = replicas()
    assert late.refuses(token)


def test_a_redis_that_stops_answering_is_noticed_and_bounded(
    redis_server: RedisServer, replicas: Callable[..., Replica]
) -> None:
    """A Redis that accepts connections and answers nothing (paused) costs a command at most about its timeout,
    and is reported as an outage; once it answers again the replica is back in sync."""
    replica = replicas()
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            replica.state.answer(token_digest("t"))
        assert time.monotonic() - started < 4 * TIMEOUT
        assert until(lambda: not replica.state.connected, NOTICED_WITHIN) is not None
    finally:
        redis_server.resume()
    assert replica.state.wait_connected(NOTICED_WITHIN + 2.0)


def test_a_replica_that_starts_while_redis_is_down_syncs_when_it_comes_up(
    redis_server: RedisServer, replicas: Callable[..., Replica]
) -> None:
    """A replica started during an outage is not in sync (and says so), and reads every entry once Redis is up."""
    replicas().state.record(RULES.for_user(SUB, time.time(), OP))
    redis_server.kill()
    replica = replicas(wait=False)
    assert until(lambda: replica.transitions == [False], NOTICED_WITHIN) is not None
    assert not replica.refuses(identity())
    redis_server.start()
    assert replica.state.wait_connected(NOTICED_WITHIN + 2.0)
    assert replica.refuses(identity())


def test_a_redis_that_comes_back_empty_gets_the_denylist_back(
    redis_server: RedisServer, replicas: Callable[..., Replica]
) -> None:
    """A Redis restarted without its data (a crash inside its fsync window, a failover, a flush) takes no entry
    from the replicas: they keep refusing, write what they hold back, and a replica started afterwards has it."""
    replica = replicas()
    replica.state.record(RULES.for_user(SUB, time.time(), OP))
    redis_server.client.flushall()  # what a Redis that lost its data would hold
    redis_server.client.client_kill_filter(_type="pubsub")  # and the replica's subscription breaks, as on a restart
    assert until(lambda: redis_server.client.exists(KEY_PREFIX + "deny:user:" + SUB) == 1, NOTICED_WITHIN) is not None
    assert replica.refuses(identity())
    assert replicas().refuses(identity())


def test_a_resync_never_leaves_a_moment_without_the_denylist(
    redis_server: RedisServer, replicas: Callable[..., Replica]
) -> None:
    """While a replica reads every entry again after its subscription broke, a revoked user stays refused at every
    moment (the view is merged into, never emptied first)."""
    writer = replicas(max_entries=30_000)
    for start in range(0, 20_000, 1000):
        with redis_server.client.pipeline(transaction=False) as pipe:
            for index in range(start, start + 1000):
                entry = RULES.for_user(f"user-{index}", time.time(), OP)
                pipe.set(f"{KEY_PREFIX}deny:user:user-{index}", entry.value(), px=600_000)
            pipe.execute()
    writer.state.record(RULES.for_user(SUB, time.time(), OP))
    replica = replicas(max_entries=30_000)
    token = identity()
    assert replica.refuses(token)
    redis_server.client.client_kill_filter(_type="pubsub")
    refused_throughout = True
    deadline = time.monotonic() + NOTICED_WITHIN + 2.0
    while time.monotonic() < deadline and replica.transitions.count(True) < 2:
        refused_throughout = refused_throughout and replica.refuses(token)
    assert replica.transitions.count(True) == 2, replica.transitions  # it did resync
    assert refused_throughout


class SilencingProxy:
    """A TCP proxy in front of Redis that can go silent on one connection, forwarding nothing Redis sends there while
    keeping the connection open: what a middlebox that forgot an idle flow does (a fault Redis cannot be asked
    for). Connections are numbered from 1 in the order they are made."""

    def __init__(self, port: int) -> None:
        import socket

        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.silenced: set[int] = set()
        self._count = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._count += 1
            server = socket.create_connection(self._target)
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self._count), daemon=True).start()

    def _pipe(self, source: Any, sink: Any, number: int | None) -> None:
        try:
            while data := source.recv(65536):
                if number is None or number not in self.silenced:
                    sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._listener.close()


def test_a_subscription_gone_silent_is_noticed_and_what_it_missed_is_learned(
    redis_server: RedisServer, replicas: Callable[..., Replica]
) -> None:
    """A replica whose subscription stops delivering (its connection open, nothing coming) notices within a few
    seconds (its PING there goes unanswered), reconnects and reads the revoke it missed."""
    proxy = SilencingProxy(redis_server.port)
    try:
        deaf = Replica(f"redis://127.0.0.1:{proxy.port}/0")
        deaf.state.start()
        try:
            assert deaf.state.wait_connected(5.0)
            proxy.silenced.add(1)  # its first connection: the subscription
            replicas().state.record(RULES.for_user(SUB, time.time(), OP))
            assert until(lambda: deaf.refuses(identity()), NOTICED_WITHIN + 3.0) is not None
            assert deaf.transitions[:3] == [True, False, True]
        finally:
            deaf.state.close()
    finally:
        proxy.close()


def test_a_write_that_redis_holds_up_gives_up_within_a_few_timeouts(
    redis_server: RedisServer, replicas: Callable[..., Replica]
) -> None:
    """With Redis holding writes up (CLIENT PAUSE WRITE, as during a failover), recording an entry gives up after
    a few attempts, each bounded by the timeout, rather than retrying for as long as the pause lasts."""
    replica = replicas()
    redis_server.client.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
    started = time.monotonic()
    with pytest.raises(StateUnavailable):
        replica.state.record(RULES.for_user(SUB, time.time(), OP))
    assert time.monotonic() - started < 2.0
    redis_server.client.execute_command("CLIENT", "UNPAUSE")
