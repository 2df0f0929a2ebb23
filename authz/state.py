"""Shared state across replicas (AUTHZ_STATE_URL): the denylist and Cognito's GetUser answers, in Redis or Valkey.

What is stored, under KEY_PREFIX (keys hold token digests, never tokens):
- `deny:<kind>:<subject>`: a denylist entry (authz/denylist.py), expiring at its `until`;
- `getuser:<digest>`: Cognito's last GetUser answer about a token, expiring when a replica must ask again;
- `lock:getuser:<digest>`: held (SET NX, a short expiry) by the one replica asking Cognito about a token now.
A new entry is also published on CHANNEL, which every replica reads: that is how a revoke reaches every replica
within a second without any Check reading Redis.

`SharedState` keeps the replica's local view (a Denylist) fresh from one thread: it subscribes, then reads every
entry (a subscription first, so nothing published during the read is missed; an entry read twice merges), then
applies what is published. When Redis fails or stops answering (a PING each second on the subscription, every command
bounded by `timeout`), the view keeps what it had (nothing learned is forgotten before its until), `connected`
turns False, the outage is counted and logged once, and the thread reconnects with backoff; on reconnecting it reads
every entry again and merges it in (what was published meanwhile is learned then; nothing held is dropped), and
writes back what Redis lost. The first sync's read completes before `connected` turns True (a replica serves only
then); a resync's is merged in while the replica is connected. While disconnected, no Check touches Redis: lookups ask
Cognito themselves and a sign-out is refused (StateUnavailable).

Anything read from Redis is parsed strictly; what this server did not write is ignored and counted (on_malformed),
never an allow: a malformed answer is no answer, a malformed entry refuses nothing it does not say.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from authz.denylist import DenyEntry, Denylist, MalformedEntry, parse_entry
from authz.revocation import Claim, SharedAnswer, StateUnavailable, Status

log = logging.getLogger("authz.state")

KEY_PREFIX = "cognito-ext-authz:"
CHANNEL = KEY_PREFIX + "denylist"
_DENY = KEY_PREFIX + "deny:"
_ANSWER = KEY_PREFIX + "getuser:"
_LOCK = KEY_PREFIX + "lock:getuser:"
_VERSION = 1
# How often the sync thread proves Redis answers, and how it backs off while it does not.
PING_SECONDS = 1.0
BACKOFF_SECONDS = (0.1, 2.0)
# How often a waiting replica looks for the answer another replica is getting from Cognito.
POLL_SECONDS = 0.01
# Expired entries leave the local view this often.
PRUNE_SECONDS = 10.0
_SCAN_BATCH = 500
_LISTED = frozenset({Status.ACTIVE.value, Status.REVOKED.value})
# claim(): the answer if there is one, else the claim (SET NX with an expiry), as {answer or false, 1 if claimed}.
_CLAIM = """
local answer = redis.call('GET', KEYS[1])
if answer then
  return {answer, 0}
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return {false, 1}
end
return {false, 0}
"""
# put_answer(): the answer, until its deadline (epoch ms), and the claim given up.
_ANSWERED = """
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
redis.call('DEL', KEYS[2])
"""


class SharedState:
    """One replica's connection to the shared state: `start` it, then `close` it."""

    def __init__(
        self,
        url: str,
        denylist: Denylist,
        *,
        timeout: float,
        clock: Callable[[], float] = time.time,
        on_connected: Callable[[bool], None] | None = None,
        on_malformed: Callable[[str], None] | None = None,
    ) -> None:
        """timeout bounds every Redis command (connect, read, write); on_connected hears each transition,
        on_malformed each value read that this server did not write (by what it was: entry, answer, message)."""
        self.denylist = denylist
        self._timeout = timeout
        self._clock = clock
        self._on_connected = on_connected
        self._on_malformed = on_malformed
        self._where = _describe_url(url)
        self._client = connect(url, timeout)
        self._claim_script = self._client.register_script(_CLAIM)
        self._answered_script = self._client.register_script(_ANSWERED)
        # None until the first attempt to sync tells (so the first failure is logged too), then each transition.
        self._connected: bool | None = None
        self._syncs = 0  # times the view came in sync: a failure after one starts the backoff over
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shared-state", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected is True

    def start(self) -> None:
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        """Whether the view is in sync within timeout (a starting server waits on it, in a thread of its own, before it
        reports SERVING; no Check ever does)."""
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.connected

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * PING_SECONDS + self._timeout)
        self._client.close()

    # ------------------------------------------------------------------------------------------ the denylist

    def record(self, entry: DenyEntry) -> bool:
        """Store an entry and tell every replica; held in this replica's view at once. StateUnavailable when Redis
        did not take it (nothing is then held: the view stays what Redis has); False when Redis took it but this
        replica's view is full and cannot hold it (it counts that)."""
        if not self.connected:
            raise StateUnavailable()
        try:
            entry = store_entry(self._client, entry)
        except (redis.RedisError, OSError) as error:
            log.warning("shared state refused an entry", extra={"fields": {"error": type(error).__name__}})
            raise StateUnavailable() from None
        return self.denylist.add(entry)

    # ------------------------------------------------------------------------------------ GetUser's answers

    def answer(self, digest: bytes) -> SharedAnswer | None:
        """The answer some replica got from Cognito about a token, while it holds."""
        return self._parse_answer(self._command(self._client.get, _ANSWER + digest.hex()))

    def claim(self, digest: bytes, hold: float) -> Claim:
        """Some replica's answer about a token if there is one; else whether this replica is now the one to ask
        Cognito (for `hold` seconds at most). One script, so one round trip and atomic: an answer stored just before
        is always seen, so a token is never asked about twice because a claim was given up between a look and a
        claim."""
        raw, claimed = self._command(
            self._claim_script, keys=[_ANSWER + digest.hex(), _LOCK + digest.hex()], args=[_positive_millis(hold)]
        )
        answer = self._parse_answer(raw)
        if answer is not None:
            return Claim(answer, claimed=False)
        if raw is not None:
            # Something this server did not write stands where an answer goes: no answer, so claim the token and
            # ask Cognito (whose answer then replaces it), as if nothing were there.
            claimed = self._command(self._client.set, _LOCK + digest.hex(), b"1", nx=True, px=_positive_millis(hold))
        return Claim(None, claimed=bool(claimed))

    def wait_answer(self, digest: bytes, deadline: float) -> SharedAnswer | None:
        """The answer the replica holding the claim stores, if it comes before deadline (this clock)."""
        while True:
            found = self.answer(digest)
            if found is not None or self._clock() + POLL_SECONDS > deadline:
                return found
            time.sleep(POLL_SECONDS)

    def put_answer(self, digest: bytes, answer: SharedAnswer, deadline: float) -> None:
        """Store Cognito's answer for every replica until deadline, and give up the claim (one script: one round
        trip)."""
        value = json.dumps({"v": _VERSION, "status": answer.status.value, "at": answer.asked_at})
        self._command(
            self._answered_script, keys=[_ANSWER + digest.hex(), _LOCK + digest.hex()], args=[value, _millis(deadline)]
        )

    def release(self, digest: bytes) -> None:
        """Give up a claim without an answer (Cognito gave none): the next Check anywhere may ask."""
        self._command(self._client.delete, _LOCK + digest.hex())

    def _command(self, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.connected:
            raise StateUnavailable()
        try:
            return command(*args, **kwargs)
        except (redis.RedisError, OSError):
            raise StateUnavailable() from None

    def _parse_answer(self, raw: bytes | None) -> SharedAnswer | None:
        if raw is None:
            return None
        try:
            document = json.loads(raw)
            status, asked_at = document["status"], document["at"]
            if document["v"] != _VERSION or status not in _LISTED or len(document) != 3:
                raise ValueError
            if isinstance(asked_at, bool) or not isinstance(asked_at, int | float) or not math.isfinite(asked_at):
                raise ValueError
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError):
            self._malformed("answer")
            return None
        # An answer from the future (a skewed clock, or a forged value) counts as asked now, so it cannot outlast
        # the TTL it was cached for.
        return SharedAnswer(Status(status), min(float(asked_at), self._clock()))

    # ----------------------------------------------------------------------------------- the sync thread

    def _run(self) -> None:
        backoff = BACKOFF_SECONDS[0]
        while not self._stop.is_set():
            syncs = self._syncs
            try:
                self._sync()
                return
            except (redis.RedisError, OSError) as error:
                self._set_connected(False, type(error).__name__)
            except Exception:  # a bug here must not end the thread that keeps the view fresh
                log.exception("shared state sync crashed")
                self._set_connected(False, "crash")
            if self._syncs != syncs:
                backoff = BACKOFF_SECONDS[0]
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_SECONDS[1])

    def _sync(self) -> None:
        """Subscribe, read every entry into the view (merged: nothing held is dropped), write back what Redis lost,
        then follow what is published; returns only when stopped, raises when Redis fails or the subscription goes
        silent."""
        pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        try:
            pubsub.subscribe(CHANNEL)
            self._await_subscription(pubsub)
            if self._syncs:
                # A resync: the view is only ever added to, so what it holds stays enforced while Redis is read
                # again, and writes and shared answers can go on at once (a large denylist takes seconds to read).
                self._set_connected(True, None)
            read: list[DenyEntry] = []
            missed = 0
            for batch in self._read_batches():
                read += batch
                missed += self.denylist.merge(batch)
                # What is published meanwhile is applied as it comes, not after the whole read (a message is read
                # once its first bytes are there, with the timeout for the rest).
                while pubsub.connection is not None and pubsub.connection.can_read(timeout=0):
                    message = pubsub.get_message(timeout=self._timeout)
                    if message is not None and message.get("type") == "message":
                        self._apply(message.get("data"))
            if missed:
                log.error(
                    "denylist larger than its local bound: entries not held",
                    extra={"fields": {"not_held": missed, "max_entries": self.denylist.max_entries}},
                )
            in_redis = {(entry.kind, entry.subject): entry for entry in read}
            lost, weakened = [], []
            for held in self.denylist.entries():
                stored = in_redis.get((held.kind, held.subject))
                if stored is None:
                    lost.append(held)
                elif stored.stronger(held) != stored:
                    weakened.append(held)
            if lost:
                _write_back(self._client, lost)
            for held in weakened:  # a weaker entry stands where this one was: merge it back in
                store_entry(self._client, held)
            self._syncs += 1
            self._set_connected(True, None)
            # The subscription's own connection is proven alive: a PING on it each second, whose PONG must come
            # back within a second and the timeout, else the subscription is taken for dead (a middlebox that dropped
            # an idle flow would otherwise leave this replica deaf to every revoke, and "connected").
            next_ping = next_prune = time.monotonic()
            pong_due: float | None = None
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=min(PING_SECONDS, 0.25))
                if message is not None:
                    kind = message.get("type")
                    if kind == "message":
                        self._apply(message.get("data"))
                    elif kind == "pong":
                        pong_due = None
                now = time.monotonic()
                if pong_due is not None and now > pong_due:
                    raise redis.TimeoutError("the subscription did not answer its PING")
                if now >= next_ping:
                    pubsub.ping()
                    if pong_due is None:
                        pong_due = now + PING_SECONDS + self._timeout
                    next_ping = now + PING_SECONDS
                if now >= next_prune:
                    self.denylist.prune()
                    next_prune = now + PRUNE_SECONDS
        finally:
            pubsub.close()

    def _await_subscription(self, pubsub: Any) -> None:
        deadline = time.monotonic() + max(self._timeout, 1.0)
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=self._timeout)
            if message is not None and message.get("type") == "subscribe":
                return
        raise redis.TimeoutError("no subscription confirmed")

    def _read_batches(self) -> Iterator[list[DenyEntry]]:
        """Every entry in Redis, a batch at a time (SCAN, then MGET)."""
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=_DENY + "*", count=_SCAN_BATCH):
            batch.append(key)
            if len(batch) >= _SCAN_BATCH:
                yield self._read_batch(batch)
                batch = []
        yield self._read_batch(batch)

    def _read_batch(self, keys: list[bytes]) -> list[DenyEntry]:
        if not keys:
            return []
        entries = []
        for key, value in zip(keys, self._client.mget(keys), strict=True):
            if isinstance(value, bytes):  # None: expired since the scan
                entry = self._parse_entry(key, value)
                if entry is not None:
                    entries.append(entry)
        return entries

    def _apply(self, data: object) -> None:
        if not isinstance(data, bytes):
            self._malformed("message")
            return
        key, space, value = data.partition(b" ")
        entry = self._parse_entry(key, value) if space else None
        if entry is not None:
            self.denylist.add(entry)
        elif not space:
            self._malformed("message")

    def _parse_entry(self, key: bytes, value: bytes) -> DenyEntry | None:
        try:
            name = key.decode("ascii")
            if not name.startswith(_DENY):
                raise MalformedEntry("not a denylist key")
            kind, _, subject = name.removeprefix(_DENY).partition(":")
            return parse_entry(kind, subject, value)
        except (MalformedEntry, UnicodeDecodeError):
            self._malformed("entry")
            return None

    def _malformed(self, what: str) -> None:
        if self._on_malformed is not None:
            self._on_malformed(what)

    def _set_connected(self, connected: bool, error: str | None) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        if connected:
            log.info("shared state in sync", extra={"fields": {"at": self._where, "entries": len(self.denylist)}})
        else:
            log.error(
                "shared state unavailable: answering from the local view",
                extra={"fields": {"at": self._where, "error": error, "entries": len(self.denylist)}},
            )
        if self._on_connected is not None:
            self._on_connected(connected)


def connect(url: str, timeout: float) -> redis.Redis:
    """A client of the state at url (connecting on first use). No retries: a command fails within `timeout`, and the
    caller falls back at once (the sync thread retries the connection with its own backoff)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        client_name="cognito-ext-authz",
    )


def store_entry(client: redis.Redis, entry: DenyEntry, *, attempts: int = 3) -> DenyEntry:
    """Store a denylist entry, merged with one already there for the same subject (an entry is never weakened), and
    publish it to every replica; the entry now stored. An optimistic transaction (WATCH), tried again at most
    `attempts` times in all when another writer changed the key meanwhile, each command bounded by the client's
    timeout. Raises redis.RedisError or OSError (also when the key kept changing, or a wait timed out)."""
    key = f"{_DENY}{entry.kind.value}:{entry.subject}"
    for _ in range(attempts):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                held = pipe.get(key)
                stored = entry
                if isinstance(held, bytes):
                    # A value this server did not write is replaced.
                    with contextlib.suppress(MalformedEntry):
                        stored = parse_entry(entry.kind.value, entry.subject, held).stronger(entry)
                pipe.multi()
                pipe.set(key, stored.value(), pxat=_millis(stored.until))
                pipe.publish(CHANNEL, f"{key} {stored.value()}")
                pipe.execute()
                return stored
            except redis.WatchError:
                continue  # another writer (or a lost connection while watching): read and merge again
    raise redis.RedisError("the entry could not be stored")


def _write_back(client: redis.Redis, entries: list[DenyEntry]) -> None:
    """Store again, where Redis has nothing under their keys, the entries this replica holds: a Redis that came back
    without them (a restart inside its fsync window, a failover, a flush) has them again, and replicas that started
    meanwhile hear of them."""
    for start in range(0, len(entries), _SCAN_BATCH):
        with client.pipeline(transaction=False) as pipe:
            for entry in entries[start : start + _SCAN_BATCH]:
                key = f"{_DENY}{entry.kind.value}:{entry.subject}"
                pipe.set(key, entry.value(), pxat=_millis(entry.until), nx=True)
            written = pipe.execute()
        missing = [entry for entry, done in zip(entries[start : start + _SCAN_BATCH], written, strict=True) if done]
        if missing:
            with client.pipeline(transaction=False) as pipe:
                for entry in missing:
                    pipe.publish(CHANNEL, f"{_DENY}{entry.kind.value}:{entry.subject} {entry.value()}")
                pipe.execute()
            log.warning(
                "shared state had lost denylist entries: written back", extra={"fields": {"entries": len(missing)}}
            )


def _millis(epoch: float) -> int:
    return max(1, math.ceil(epoch * 1000))


def _positive_millis(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _describe_url(url: str) -> str:
    """Where the state is, for logs: scheme, host, port and db, never a password."""
    parts = urlsplit(url)
    host = parts.hostname or parts.path
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path if parts.hostname else ''}"
