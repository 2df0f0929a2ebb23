"""authz/cache.py: the token cache (bounded LRU by token digest, each entry until its own deadline) and the memos."""

from __future__ import annotations

import hashlib

from authz.cache import TokenCache, remember, token_digest
from tests.conftest import FakeClock


def test_the_key_is_the_tokens_sha256_whatever_the_token_holds():
    """A token is known by its SHA-256 (32 bytes); even a lone surrogate, which no token should hold, hashes."""
    assert token_digest("abc.def.ghi") == hashlib.sha256(b"abc.def.ghi").digest()
    assert len(token_digest("x" * 20_000)) == 32
    assert token_digest("\ud800") != token_digest("\ud801")


def test_an_entry_is_served_until_its_deadline_and_never_after(clock: FakeClock):
    """A read at or past the entry's own deadline is a miss, and the entry is gone."""
    cache: TokenCache[str] = TokenCache(10, clock)
    cache.put(b"a", "verdict", clock.now + 5)
    clock.advance(4.9)
    assert cache.get(b"a") == "verdict"
    clock.advance(0.1)
    assert cache.get(b"a") is None and len(cache) == 0


def test_the_least_recently_used_entry_goes_first_when_full(clock: FakeClock):
    """Beyond max_entries the entry read or written longest ago is evicted; a read keeps an entry fresh."""
    cache: TokenCache[int] = TokenCache(2, clock)
    cache.put(b"a", 1, clock.now + 60)
    cache.put(b"b", 2, clock.now + 60)
    assert cache.get(b"a") == 1
    cache.put(b"c", 3, clock.now + 60)
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (1, None, 3)
    assert len(cache) == 2


def test_nothing_is_stored_with_no_room_or_no_time_left(clock: FakeClock):
    """A cache of size 0 stores nothing, and neither does any cache for an entry already past its deadline."""
    empty: TokenCache[int] = TokenCache(0, clock)
    empty.put(b"a", 1, clock.now + 60)
    cache: TokenCache[int] = TokenCache(10, clock)
    cache.put(b"a", 1, clock.now)
    assert empty.get(b"a") is None and cache.get(b"a") is None


def test_a_full_memo_starts_over():
    """remember() stores and returns the value; at its limit the memo is emptied first, so it never grows past it."""
    memo: dict[str, int] = {}
    assert [remember(memo, key, value, limit=2) for key, value in (("a", 1), ("b", 2))] == [1, 2]
    assert remember(memo, "c", 3, limit=2) == 3
    assert memo == {"c": 3}
