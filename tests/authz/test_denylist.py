"""The denylist's entries and its local view: what each kind of entry refuses, for how long, within what bound, and
how strictly a stored entry is read."""

from __future__ import annotations

import json

import pytest

from authz.cache import token_digest
from authz.denylist import (
    LONGEST_TOKEN_SECONDS,
    DenyEntry,
    Denylist,
    EntryKind,
    EntryRules,
    MalformedEntry,
    Source,
    parse_entry,
)
from authz.tokens import VerifiedToken
from tests.conftest import NOW, FakeClock, verified

SUB = "7c0a1d2e-0000-4000-8000-000000000001"
SESSION = "0b1c2d3e-aaaa-4bbb-8ccc-000000000001"
OP = Source.OPERATOR
RULES = EntryRules(leeway=30.0, session_seconds=7 * 86_400.0)


def identity(*, sub: str = SUB, origin_jti: str | None = SESSION, issued_at: float = NOW - 60) -> VerifiedToken:
    return verified(sub=sub, origin_jti=origin_jti, issued_at=issued_at, scopes=())


@pytest.fixture
def denylist(clock: FakeClock) -> Denylist:
    return Denylist(100, clock=clock)


def test_an_empty_denylist_refuses_nothing(denylist: Denylist) -> None:
    """With no entry, every token passes."""
    assert not denylist.refuses(identity(), token_digest("a"))


def test_a_token_entry_refuses_that_token_alone(denylist: Denylist) -> None:
    """A token's entry refuses the token of that digest, and not another token of the same user and session."""
    denylist.add(RULES.for_token(token_digest("leaked"), NOW + 3600, OP))
    assert denylist.refuses(identity(), token_digest("leaked"))
    assert not denylist.refuses(identity(), token_digest("another"))


def test_a_session_entry_refuses_every_token_of_the_session_whenever_issued(denylist: Denylist) -> None:
    """A session's entry refuses its tokens issued before and after it (refreshes), and no other session's."""
    denylist.add(RULES.for_session(SESSION, NOW, OP))
    assert denylist.refuses(identity(issued_at=NOW - 600), token_digest("a"))
    assert denylist.refuses(identity(issued_at=NOW + 600), token_digest("b"))
    assert not denylist.refuses(identity(origin_jti="other-session"), token_digest("c"))
    assert not denylist.refuses(identity(origin_jti=None), token_digest("d"))


def test_a_user_entry_refuses_tokens_issued_until_it_and_not_a_later_sign_in(denylist: Denylist) -> None:
    """A user's entry refuses that user's tokens issued at or before it, whatever the session, not one issued after,
    and not another user's."""
    denylist.add(RULES.for_user(SUB, NOW, OP))
    assert denylist.refuses(identity(issued_at=NOW - 3600, origin_jti="any"), token_digest("a"))
    assert denylist.refuses(identity(issued_at=NOW), token_digest("b"))
    assert not denylist.refuses(identity(issued_at=NOW + 1), token_digest("c"))
    assert not denylist.refuses(identity(sub="someone-else"), token_digest("d"))


def test_a_token_without_iat_counts_as_issued_long_ago(denylist: Denylist) -> None:
    """A token that names no issue time is refused by its user's entry (0.0: before any entry), never let through."""
    denylist.add(RULES.for_user(SUB, NOW, OP))
    assert denylist.refuses(identity(issued_at=0.0), token_digest("a"))


def test_entries_live_until_no_token_they_cover_can_be_valid(clock: FakeClock, denylist: Denylist) -> None:
    """A user's entry lives a day (Cognito's longest token) plus leeway, a session's its lifetime plus that, a token's
    until its exp plus leeway; then it refuses nothing and prune forgets it."""
    user = RULES.for_user(SUB, NOW, OP)
    session = RULES.for_session(SESSION, NOW, OP)
    token = RULES.for_token(token_digest("t"), NOW + 600, OP)
    assert user.until == NOW + LONGEST_TOKEN_SECONDS + 30
    assert session.until == NOW + 7 * 86_400 + LONGEST_TOKEN_SECONDS + 30
    assert token.until == NOW + 630
    denylist.add(token)
    clock.advance(629)
    assert denylist.refuses(identity(), token_digest("t"))
    clock.advance(1)
    assert not denylist.refuses(identity(), token_digest("t"))
    assert denylist.prune() == 1
    assert len(denylist) == 0


def test_a_second_entry_for_a_subject_never_weakens_the_first(denylist: Denylist) -> None:
    """Two revokes of one user keep the later `before` and the later `until`, whichever arrives last."""
    later = RULES.for_user(SUB, NOW + 100, OP)
    denylist.add(later)
    denylist.add(RULES.for_user(SUB, NOW, OP))
    assert denylist.refuses(identity(issued_at=NOW + 50), token_digest("a"))


def test_a_full_view_holds_what_it_has_and_counts_what_it_cannot(clock: FakeClock) -> None:
    """At max_entries, a new subject's entry is not held and is counted; held entries stay, and one for a subject
    already held still merges."""
    overflow: list[None] = []
    denylist = Denylist(2, clock=clock, on_overflow=lambda: overflow.append(None))
    assert denylist.add(RULES.for_user("u1", NOW, OP))
    assert denylist.add(RULES.for_user("u2", NOW, OP))
    assert not denylist.add(RULES.for_user("u3", NOW, OP))
    assert denylist.add(RULES.for_user("u1", NOW + 10, OP))
    assert len(denylist) == 2
    assert len(overflow) == 1
    assert denylist.refuses(identity(sub="u1", issued_at=NOW + 5), token_digest("a"))
    assert not denylist.refuses(identity(sub="u3"), token_digest("b"))


def test_sign_outs_cannot_crowd_out_an_operators_revoke(clock: FakeClock) -> None:
    """A view filled by callers' own sign-outs makes room for an operator's (or Cognito's) entry by dropping one of
    theirs, an operator's drops Cognito's when no sign-out is left, a further sign-out finds no room and is counted,
    and nothing drops an operator's entry."""
    overflow: list[None] = []
    denylist = Denylist(3, clock=clock, on_overflow=lambda: overflow.append(None))
    for index in range(3):
        assert denylist.add(RULES.for_session(f"session-{index}", NOW, Source.SIGN_OUT))
    assert not denylist.add(RULES.for_session("session-3", NOW, Source.SIGN_OUT))
    assert denylist.add(RULES.for_user("compromised", NOW, OP))
    assert denylist.add(RULES.for_token(token_digest("leaked"), NOW + 600, Source.COGNITO))
    assert denylist.add(RULES.for_user("another", NOW, OP))
    assert not denylist.add(RULES.for_session("session-4", NOW, Source.SIGN_OUT))
    assert denylist.add(RULES.for_user("third", NOW, OP))  # in the place of Cognito's
    assert not denylist.add(RULES.for_user("one-too-many", NOW, OP))
    assert len(overflow) == 3
    for sub in ("compromised", "another", "third"):
        assert denylist.refuses(identity(sub=sub, origin_jti=None), token_digest("x")), sub
    assert not denylist.refuses(identity(sub="nobody", origin_jti=None), token_digest("leaked"))


def test_a_sign_outs_session_entry_covers_the_tokens_issued_so_far_an_operators_the_refreshes_too() -> None:
    """A sign-out's session entry lives a day (the tokens already issued; the sign-out revokes the refresh token in
    Cognito too), an operator's the session's whole refresh lifetime beyond that."""
    assert RULES.for_session(SESSION, NOW, Source.SIGN_OUT).until == NOW + LONGEST_TOKEN_SECONDS + 30
    assert RULES.for_session(SESSION, NOW, OP).until == NOW + 7 * 86_400 + LONGEST_TOKEN_SECONDS + 30


def test_merging_a_resync_never_drops_what_is_held(denylist: Denylist) -> None:
    """After a resync the view holds what it held and what was read, merged: a store that lost entries (or came back
    empty) takes none from the view, and the view is never emptied while it is read."""
    denylist.add(RULES.for_user("kept", NOW, OP))
    assert denylist.merge([RULES.for_session(SESSION, NOW, OP)]) == 0
    assert denylist.refuses(identity(sub="kept", origin_jti="other"), token_digest("a"))
    assert denylist.refuses(identity(sub="someone", origin_jti=SESSION), token_digest("a"))
    assert denylist.merge([]) == 0
    assert len(denylist) == 2
    assert {(entry.kind, entry.subject) for entry in denylist.entries()} == {
        (EntryKind.USER, "kept"),
        (EntryKind.SESSION, SESSION),
    }


def test_an_operators_entry_stays_one_when_merged_with_a_sign_out(denylist: Denylist) -> None:
    """Merging a sign-out's entry into an operator's for the same subject keeps it the operator's (never the first
    to go when the view is full)."""
    denylist.add(RULES.for_user(SUB, NOW, OP))
    denylist.add(RULES.for_user(SUB, NOW + 5, Source.SIGN_OUT))
    [entry] = denylist.entries()
    assert (entry.source, entry.before) == (OP, NOW + 5)


@pytest.mark.parametrize(
    "entry",
    [
        RULES.for_user(SUB, NOW, OP, "leaked laptop"),
        RULES.for_session(SESSION, NOW, Source.SIGN_OUT),
        RULES.for_token(token_digest("t"), NOW, Source.COGNITO),
    ],
)
def test_an_entry_reads_back_as_written(entry: DenyEntry) -> None:
    """What value() stores, parse_entry reads back equal."""
    assert parse_entry(entry.kind.value, entry.subject, entry.value()) == entry


@pytest.mark.parametrize(
    ("kind", "subject", "value"),
    [
        pytest.param("device", SUB, '{"v":1,"until":1,"by":"operator"}', id="unknown-kind"),
        pytest.param("user", SUB, '{"v":1,"until":1,"before":0,"by":"admin"}', id="unknown-source"),
        pytest.param("token", "not-hex", '{"v":1,"until":1}', id="token-subject-not-a-digest"),
        pytest.param("user", "a b", '{"v":1,"until":1,"before":0,"by":"operator"}', id="subject-with-space"),
        pytest.param("user", "x" * 129, '{"v":1,"until":1,"before":0,"by":"operator"}', id="subject-too-long"),
        pytest.param("user", SUB, "not json", id="not-json"),
        pytest.param("user", SUB, "[1]", id="not-an-object"),
        pytest.param("user", SUB, '{"v":2,"until":1,"before":0,"by":"operator"}', id="other-version"),
        pytest.param("user", SUB, '{"v":1,"until":1,"by":"operator"}', id="user-without-before"),
        pytest.param("session", SESSION, '{"v":1,"until":1,"before":0,"by":"operator"}', id="before-on-a-session"),
        pytest.param("user", SUB, '{"v":1,"until":"soon","before":0,"by":"operator"}', id="until-not-a-number"),
        pytest.param("user", SUB, '{"v":1,"until":true,"before":0,"by":"operator"}', id="until-a-boolean"),
        pytest.param("user", SUB, '{"v":1,"until":-1,"before":0,"by":"operator"}', id="until-negative"),
        pytest.param("user", SUB, '{"v":1,"until":1e999,"before":0,"by":"operator"}', id="until-infinite"),
        pytest.param("user", SUB, '{"v":1,"until":1,"before":0,"by":"operator","allow":true}', id="unknown-field"),
        pytest.param(
            "user",
            SUB,
            json.dumps({"v": 1, "until": 1, "before": 0, "by": "operator", "reason": "\x1b[31m"}),
            id="reason-ctl",
        ),
        pytest.param(
            "user",
            SUB,
            json.dumps({"v": 1, "until": 1, "before": 0, "by": "operator", "reason": "r" * 201}),
            id="reason-long",
        ),
    ],
)
def test_a_stored_entry_this_server_did_not_write_is_refused(kind: str, subject: str, value: str) -> None:
    """A malformed or foreign entry is MalformedEntry, never read as something it does not say."""
    with pytest.raises(MalformedEntry):
        parse_entry(kind, subject, value)


def test_an_entry_of_each_kind_names_its_subject_as_the_key_part() -> None:
    """A token is named by the hex of its digest (never the token), a session by its origin_jti, a user by sub."""
    entry = RULES.for_token(token_digest("secret.token.value"), NOW, OP)
    assert entry.kind is EntryKind.TOKEN
    assert entry.subject == token_digest("secret.token.value").hex()
    assert "secret" not in entry.value()


def test_an_entry_that_names_no_source_is_read_as_an_operators() -> None:
    """A stored entry without `by` (as written before entries named their source) is read, as an operator's."""
    assert parse_entry("user", SUB, '{"v":1,"until":5,"before":1}') == DenyEntry(EntryKind.USER, SUB, 5.0, 1.0, OP)


def test_an_operators_revoke_makes_room_in_a_view_full_of_cognitos_entries(clock: FakeClock) -> None:
    """A view filled with entries Cognito's answers made (any caller can make those: sign in, sign out, present the
    tokens) still holds an operator's revoke, in place of one of them."""
    denylist = Denylist(3, clock=clock)
    for index in range(3):
        assert denylist.add(RULES.for_token(token_digest(f"t{index}"), NOW + 600, Source.COGNITO))
    assert not denylist.add(RULES.for_token(token_digest("t3"), NOW + 600, Source.COGNITO))
    assert denylist.add(RULES.for_user("compromised", NOW, OP))
    assert denylist.refuses(identity(sub="compromised", origin_jti=None), token_digest("x"))
    assert len(denylist) == 3


def test_the_entry_dropped_is_a_sign_outs_wherever_it_is_held(clock: FakeClock) -> None:
    """With 50,000 operator entries held before one sign-out's, the next operator entry takes that sign-out's place
    and every operator's entry stays (the droppable ones are indexed by source, not searched for)."""
    denylist = Denylist(50_001, clock=clock)
    for index in range(50_000):
        denylist.add(RULES.for_user(f"u{index}", NOW, OP))
    denylist.add(RULES.for_session("leaving", NOW, Source.SIGN_OUT))
    assert denylist.add(RULES.for_user("late", NOW, OP))
    assert not denylist.refuses(identity(sub="nobody", origin_jti="leaving"), token_digest("x"))
    assert all(denylist.refuses(identity(sub=f"u{index}", origin_jti=None), token_digest("x")) for index in (0, 49_999))
