"""The denylist: tokens an operator or a sign-out said to refuse now, before Cognito or their expiry would.

An entry names what it refuses in one of three ways (`EntryKind`):
- `token`: one token, by its SHA-256 digest (never the token itself);
- `session`: every token of one sign-in session, by Cognito's `origin_jti` (the id of the sign-in that every token
  refreshed from it carries, whenever it was issued);
- `user`: every token of one user (by `sub`) issued at or before the entry's `before` time; a sign-in after it is
  not refused.
Each entry lives until `until`, when no token it covers can still be valid, and is then forgotten; it is never
withdrawn before.

`Denylist` is a replica's local view: what the shared state (authz/state.py) has told it, held in memory so a
Check never waits on the network to read it. It is bounded (max_entries): when it is full, an operator's or
Cognito's entry takes the place of a sign-out's (`Source`); an entry that finds no room is counted and not held. Entries as stored in Redis are parsed strictly (`parse_entry`): a
malformed or foreign value is refused, never read as something it does not say.
"""

from __future__ import annotations

import enum
import json
import math
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from authz.config import DEFAULT_SESSION_SECONDS
from authz.tokens import ORIGIN_JTI, VerifiedToken

# What an entry's value may say of itself, and how long an operator's reason may be.
_VERSION = 1
MAX_REASON_CHARS = 200
_REASON = re.compile(r"[\x20-\x7e]*")  # printable ASCII only: a reason reaches logs
# What each kind's subject looks like: a digest in hex, Cognito's origin_jti, a sub (a UUID, or for an app client
# its client id); bounded and header-safe, so a foreign key cannot smuggle anything into a log.
_SUBJECT = {
    "token": re.compile(r"[0-9a-f]{64}"),
    "session": ORIGIN_JTI,
    "user": re.compile(r"[A-Za-z0-9._:@+-]{1,128}"),
}


class EntryKind(enum.StrEnum):
    TOKEN = "token"
    SESSION = "session"
    USER = "user"


class Source(enum.StrEnum):
    """Who wrote an entry. A full local view makes room for an operator's or Cognito's entry by dropping a sign-out's
    (which any signed-in caller can make, and which Cognito's own sign-out covers too), never the other way round."""

    OPERATOR = "operator"  # python -m authz revoke
    COGNITO = "cognito"  # GetUser said revoked
    SIGN_OUT = "sign-out"  # a sign-out route


@dataclass(frozen=True)
class DenyEntry:
    """One denylist entry: refuse the tokens `subject` names (by kind) until `until` (epoch seconds)."""

    kind: EntryKind
    subject: str
    until: float
    # USER only: tokens issued (iat) at or before this time are refused.
    before: float | None = None
    source: Source = Source.OPERATOR
    reason: str = ""

    def value(self) -> str:
        """The entry as stored (JSON; the key carries kind and subject)."""
        document: dict[str, object] = {"v": _VERSION, "until": self.until, "by": self.source.value}
        if self.before is not None:
            document["before"] = self.before
        if self.reason:
            document["reason"] = self.reason
        return json.dumps(document, separators=(",", ":"))

    def stronger(self, other: DenyEntry) -> DenyEntry:
        """The entry refusing everything either refuses (same kind and subject): the later until and before, and
        the weightier source (an operator's entry stays one)."""
        before = None if self.before is None or other.before is None else max(self.before, other.before)
        source = min(self.source, other.source, key=_WEIGHT.index)
        return DenyEntry(
            self.kind, self.subject, max(self.until, other.until), before, source, self.reason or other.reason
        )


# Sources from the weightiest (kept longest when the view is full) to the lightest.
_WEIGHT = (Source.OPERATOR, Source.COGNITO, Source.SIGN_OUT)


# Cognito's longest access and ID token lifetime (1 day): a token issued before an entry is written is invalid
# this long after it (plus the verifier's leeway).
LONGEST_TOKEN_SECONDS = 86_400.0


@dataclass(frozen=True)
class EntryRules:
    """The entries that refuse a token, a session or a user, each living until no token it covers can be valid."""

    leeway: float
    session_seconds: float = DEFAULT_SESSION_SECONDS

    def for_token(self, digest: bytes, expires_at: float, source: Source, reason: str = "") -> DenyEntry:
        return DenyEntry(EntryKind.TOKEN, digest.hex(), expires_at + self.leeway, source=source, reason=reason)

    def for_session(self, origin_jti: str, now: float, source: Source, reason: str = "") -> DenyEntry:
        """Every token of the session. An operator's entry covers what the session mints until its refresh token
        expires, valid a day beyond; a sign-out's covers the tokens issued so far (a day), since a sign-out also
        revokes the refresh token in Cognito (the pages' GlobalSignOut), and any caller can make one."""
        refreshes = self.session_seconds if source is Source.OPERATOR else 0.0
        until = now + refreshes + LONGEST_TOKEN_SECONDS + self.leeway
        return DenyEntry(EntryKind.SESSION, origin_jti, until, source=source, reason=reason)

    def for_user(self, sub: str, now: float, source: Source, reason: str = "") -> DenyEntry:
        """Every token of the user issued until now."""
        until = now + LONGEST_TOKEN_SECONDS + self.leeway
        return DenyEntry(EntryKind.USER, sub, until, before=now, source=source, reason=reason)


class MalformedEntry(ValueError):
    """A stored entry this server did not write or cannot read: ignored (and counted), never guessed at."""


def subject_ok(kind: EntryKind, subject: str) -> bool:
    return _SUBJECT[kind.value].fullmatch(subject) is not None


def parse_entry(kind: str, subject: str, value: str | bytes) -> DenyEntry:
    """A stored entry, checked strictly; MalformedEntry for anything else."""
    try:
        entry_kind = EntryKind(kind)
    except ValueError:
        raise MalformedEntry("unknown kind") from None
    if not subject_ok(entry_kind, subject):
        raise MalformedEntry("malformed subject")
    try:
        document = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedEntry("not JSON") from None
    if not isinstance(document, dict) or document.get("v") != _VERSION:
        raise MalformedEntry("not a version 1 entry")
    until = _time(document.get("until"))
    before = document.get("before")
    if entry_kind is EntryKind.USER:
        before = _time(before)
    elif before is not None:
        raise MalformedEntry("before on an entry that is not a user's")
    try:
        # An entry written before entries named their source is an operator's: never the first to be dropped.
        source = Source(str(document.get("by", Source.OPERATOR.value)))
    except ValueError:
        raise MalformedEntry("unknown source") from None
    reason = document.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS or not _REASON.fullmatch(reason):
        raise MalformedEntry("malformed reason")
    if set(document) - {"v", "until", "before", "by", "reason"}:
        raise MalformedEntry("unknown fields")
    return DenyEntry(entry_kind, subject, until, before, source, reason)


def _time(value: object) -> float:
    # bool is an int in Python: true is not a time.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise MalformedEntry("malformed time")
    return float(value)


class Denylist:
    """A replica's local view of the denylist: `refuses(token, digest)` on every Check, no I/O."""

    def __init__(
        self,
        max_entries: int,
        *,
        clock: Callable[[], float],
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._on_overflow = on_overflow
        # One dict per kind, only ever added to (an entry merged with the one it meets) and pruned of expired entries,
        # so a Check reading one while it changes sees every entry that was there before. Tokens by their raw digest,
        # the key the Check path already has.
        self._tokens: dict[bytes, DenyEntry] = {}
        self._sessions: dict[str, DenyEntry] = {}
        self._users: dict[str, DenyEntry] = {}
        # Which entries came from each of the lighter sources, oldest first: what a full view drops for a weightier
        # entry, found without a scan.
        self._droppable: dict[Source, dict[tuple[EntryKind, bytes | str], None]] = {
            Source.COGNITO: {},
            Source.SIGN_OUT: {},
        }
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tokens) + len(self._sessions) + len(self._users)

    def refuses(self, token: VerifiedToken, digest: bytes) -> bool:
        """Whether an entry refuses this verified token now."""
        if not (self._tokens or self._sessions or self._users):
            return False
        now = self._clock()
        entry = self._tokens.get(digest)
        if entry is not None and now < entry.until:
            return True
        if token.origin_jti is not None:
            entry = self._sessions.get(token.origin_jti)
            if entry is not None and now < entry.until:
                return True
        entry = self._users.get(token.sub)
        return entry is not None and now < entry.until and entry.before is not None and token.issued_at <= entry.before

    def add(self, entry: DenyEntry) -> bool:
        """Hold an entry (merged with one for the same subject); False when the view is full and it is not held."""
        with self._lock:
            return self._add(entry)

    def merge(self, entries: Iterable[DenyEntry]) -> int:
        """Hold every entry read from the shared state (after a resync), merged into what is held: nothing held is
        dropped, since an entry is never withdrawn and a store that lost some (a restart inside its fsync window, a
        failover, a flush) must not take them from the replicas too. Returns how many could not be held."""
        missed = 0
        for entry in entries:
            with self._lock:
                missed += not self._add(entry)
        return missed

    def entries(self) -> list[DenyEntry]:
        """Every entry held now that has not expired (to write back to a store that lost them)."""
        now = self._clock()
        with self._lock:
            held = [*self._tokens.values(), *self._sessions.values(), *self._users.values()]
        return [entry for entry in held if entry.until > now]

    def prune(self) -> int:
        """Forget the entries past their until; how many were forgotten."""
        now = self._clock()
        with self._lock:
            gone = 0
            for kind, table in self._tables():
                expired = [key for key, entry in table.items() if entry.until <= now]
                for key in expired:
                    self._forget(kind, table, key)
                gone += len(expired)
            return gone

    def _tables(self) -> tuple[tuple[EntryKind, dict[Any, DenyEntry]], ...]:
        return ((EntryKind.TOKEN, self._tokens), (EntryKind.SESSION, self._sessions), (EntryKind.USER, self._users))

    def _table(self, kind: EntryKind) -> dict[Any, DenyEntry]:
        return self._tokens if kind is EntryKind.TOKEN else self._sessions if kind is EntryKind.SESSION else self._users

    def _add(self, entry: DenyEntry) -> bool:
        if entry.until <= self._clock():
            return True  # nothing left to refuse
        key: bytes | str = bytes.fromhex(entry.subject) if entry.kind is EntryKind.TOKEN else entry.subject
        table = self._table(entry.kind)
        held = table.get(key)
        if held is None and len(self) >= self.max_entries and not self._make_room(entry.source):
            if self._on_overflow is not None:
                self._on_overflow()
            return False
        stored = entry if held is None else held.stronger(entry)
        if held is not None and held.source is not stored.source and held.source in self._droppable:
            del self._droppable[held.source][(entry.kind, key)]
        if stored.source in self._droppable:
            self._droppable[stored.source][(entry.kind, key)] = None
        table[key] = stored
        return True

    def _make_room(self, source: Source) -> bool:
        """Drop an entry of a lighter source for one of a weightier (an operator's drops a sign-out's, else
        Cognito's; Cognito's a sign-out's); False when there is none to drop."""
        for lighter in _WEIGHT[_WEIGHT.index(source) + 1 :][::-1]:
            droppable = self._droppable[lighter]
            if droppable:
                kind, key = next(iter(droppable))
                self._forget(kind, self._table(kind), key)
                return True
        return False

    def _forget(self, kind: EntryKind, table: dict[Any, DenyEntry], key: bytes | str) -> None:
        entry = table.pop(key)
        if entry.source in self._droppable:
            self._droppable[entry.source].pop((kind, key), None)
