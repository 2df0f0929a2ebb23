"""Revocation under a flood, through a real server: a revoked token cannot hide behind other tokens' lookups.

The attack: with AUTHZ_REVOCATION_ON_ERROR=allow (the default), a caller keeps every revocation worker busy with
new tokens that a slow Cognito holds, then presents a token whose user signed out. Every worker busy used to mean
no lookup at all for that token, so it was allowed on every Check for as long as the flood lasted. Here Cognito is a
scripted GetUser that holds each flood token's call until the test lets it go (a real Cognito cannot be made slow
for chosen calls on demand) and answers the revoked token at once; the server, its workers and queue are real.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from authz.client import check
from authz.revocation import Status
from authz.server import RunningServer, run_server
from tests.conftest import (
    CLIENT_ID,
    POOL_ID,
    FakeClock,
    JwksServer,
    access_claims,
    mint,
    settings_for,
    throttled,
    wait_for,
)
from tests.held_lookup import HeldLookup

REVOKED = mint(access_claims(jti="revoked-token"))
TIMEOUT = 2.0  # how long a Check may wait on a call; the revoked token's Checks must not wait at all


@pytest.fixture
def flood_server(jwks_server: JwksServer) -> Iterator[tuple[RunningServer, HeldLookup]]:
    # Flood tokens are held, then throttled: none of them is ever confirmed, so every allow is an unconfirmed one.
    lookup = HeldLookup(throttled(), answers={REVOKED: Status.REVOKED})
    settings = settings_for(jwks_server.url, revocation="cognito", revocation_timeout_seconds=TIMEOUT)
    try:
        with run_server(settings, clock=FakeClock(), revocation_lookup=lookup) as server:
            assert wait_for(lambda: server.refresher.ready)
            yield server, lookup
    finally:
        lookup.release_all()


def metric(server: RunningServer, name: str, **labels: str) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_revoked_token_behind_a_flood_is_looked_up_in_turn_and_every_unconfirmed_allow_is_counted(flood_server):
    """New tokens held at Cognito fill every revocation worker; a revoked token then Checked is allowed at once (no
    answer yet, no wait) and queued, and once two held calls finish it is refused 401 "token revoked", although
    the flood offers three new tokens before each of its Checks. Every allow made without Cognito's answer, the
    flood's and the revoked token's, is counted in authz_revocation_unconfirmed_total{action="allow"}."""
    server, lookup = flood_server
    addr = f"127.0.0.1:{server.port}"
    serial = iter(range(10_000))
    checks: list[Future[dict[str, Any]]] = []

    with ThreadPoolExecutor(max_workers=32) as pool:

        def flood() -> bool:
            """Check one new token in the background until the server has it: whether it got a call (held)."""
            token = mint(access_claims(jti=f"flood-{next(serial)}"))
            lookup.hold(token)
            answer = pool.submit(check, addr, token=token, path="/api/me")
            checks.append(answer)
            assert wait_for(lambda: lookup.asked(token) == 1 or answer.done())
            return lookup.asked(token) == 1

        # Fill every revocation worker: new tokens until one gets no call (it waits in the queue).
        while flood():
            pass
        workers = len(lookup.tokens())
        assert workers >= 1

        revoked_answers = []
        for released in range(workers + 3):
            started = time.monotonic()
            answer = check(addr, token=REVOKED, path="/api/me")
            revoked_answers.append(answer)
            if not answer["allowed"]:
                break
            assert time.monotonic() - started < TIMEOUT / 2  # answered at once: it never waits on the queue
            # One held call finishes; once its worker has taken the next call, the flood offers three new tokens.
            lookup.release(lookup.tokens()[released])
            lookup.wait_calls(workers + released + 1, timeout=1.0)
            for _ in range(3):
                flood()

        lookup.release_all()
        flood_answers = [future.result(timeout=10) for future in checks]

    denied = revoked_answers[-1]
    assert not denied["allowed"], f"allowed on all {len(revoked_answers)} Checks, {lookup.asked(REVOKED)} lookups"
    assert denied["http_status"] == 401
    assert "token revoked" in denied["body"]
    # Queued first behind the one flood token found waiting: looked up once two held calls had finished.
    assert len(revoked_answers) <= 3
    assert lookup.asked(REVOKED) == 1

    allows = sum(answer["allowed"] for answer in flood_answers + revoked_answers)
    assert allows == len(flood_answers) + len(revoked_answers) - 1  # all but the revoked token's refusal
    assert metric(server, "authz_revocation_unconfirmed_total", action="allow") == allows
    decisions = {"pool": POOL_ID, "client": CLIENT_ID}
    assert metric(server, "authz_decisions_total", result="allow", reason="ok_unconfirmed", **decisions) == allows
    assert metric(server, "authz_decisions_total", result="allow", reason="ok", **decisions) == 0
    assert metric(server, "authz_decisions_total", result="deny", reason="token_revoked", **decisions) == 1
