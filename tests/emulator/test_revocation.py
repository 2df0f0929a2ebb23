"""Revocation against moto's Cognito emulator: the real authz server in-process, real Cognito-shaped tokens.

A JWT stays valid until it expires even after its user signed out everywhere; with AUTHZ_REVOCATION=cognito the
server asks Cognito's GetUser and refuses the token at most AUTHZ_REVOCATION_TTL (plus one lookup) after Cognito
stopped honouring it. These tests measure that bound, the default (off), the id-token limit, what a down or slow
Cognito does under each AUTHZ_REVOCATION_ON_ERROR, and that a burst of Checks of one token costs one GetUser.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from authz.client import check
from authz.config import Settings, make_pool
from authz.server import RunningServer, run_server
from bench.emulator import EmulatorSigner
from stack.cognito import Provisioned, register, sign_in, user_sub
from stack.processes import free_port
from tests.conftest import LoopbackHttp, health_status, wait_for

PASSWORD = "Rev0cation-Passw0rd!"
TTL = 2.0
# A revoked token is refused at most TTL after the last "active" answer, plus one GetUser: 1 s covers the lookup.
BOUND = TTL + 1.0
TIMEOUT = 0.3
# "Never a Check that hangs": however slow Cognito is, a Check answers within the revocation timeout and a margin.
CHECK_LIMIT = 1.5
REVOKED_CHALLENGE = 'Bearer realm="api", error="invalid_token", error_description="token revoked"'


# -- the emulator and its users --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    email: str
    sub: str
    access_token: str
    id_token: str


def new_user(cognito: Any, pool: Provisioned) -> SignedIn:
    """A user of their own (moto usernames are emails in this pool), signed up, confirmed and signed in."""
    email = f"revocation-{uuid.uuid4().hex[:10]}@cruddur.local"
    register(
        cognito,
        pool.pool_id,
        pool.client_id,
        email=email,
        password=PASSWORD,
        name="Revoked User",
        handle=email.split("@")[0],
    )
    return sign_in_again(cognito, pool, email)


def sign_in_again(cognito: Any, pool: Provisioned, email: str) -> SignedIn:
    tokens = sign_in(cognito, pool.client_id, email, PASSWORD)
    return SignedIn(
        email=email,
        sub=user_sub(cognito, tokens["AccessToken"]),
        access_token=tokens["AccessToken"],
        id_token=tokens["IdToken"],
    )


# -- the authz server --------------------------------------------------------------------------------------------


def settings_for(emulator: str, pool: Provisioned, **overrides: Any) -> Settings:
    """Keys from the emulator; GetUser against the emulator too unless cognito_endpoint_url says otherwise."""
    values: dict[str, Any] = {
        "pools": (make_pool(pool.pool_id, jwks_url=emulator + "/{pool}/.well-known/jwks.json"),),
        "client_ids": frozenset({pool.client_id}),
        "addr": "127.0.0.1:0",
        "metrics_addr": "127.0.0.1:0",
        "shutdown_grace_seconds": 0.5,
        "revocation": "cognito",
        "revocation_ttl_seconds": TTL,
        # The emulator answers in milliseconds, but on a loaded machine a GetUser can overrun the 0.5 s default and
        # turn into "no answer", which only the tests of a slow Cognito are about (they set TIMEOUT).
        "revocation_timeout_seconds": 5.0,
        "cognito_endpoint_url": emulator,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass(frozen=True)
class Authz:
    server: RunningServer

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def check(self, token: str, *, path: str = "/api/me", context: Mapping[str, str] | None = None) -> dict[str, Any]:
        return check(self.addr, token=token, path=path, context=context)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples matching labels, as the metrics endpoint reports them now."""
        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
        )

    def lookups(self, outcome: str | None = None) -> float:
        labels = {"outcome": outcome} if outcome else {}
        return self.metric("authz_revocation_lookups_total", **labels)


@contextmanager
def serving(settings: Settings) -> Iterator[Authz]:
    with run_server(settings) as server:
        assert wait_for(lambda: health_status(server.port) == health_pb2.HealthCheckResponse.SERVING)
        yield Authz(server)


def assert_allowed(answer: dict[str, Any], user: SignedIn) -> None:
    assert answer["allowed"], answer
    assert answer["upstream_headers"]["x-user-sub"] == user.sub


def assert_revoked(answer: dict[str, Any]) -> None:
    assert (answer["allowed"], answer["http_status"]) == (False, 401), answer
    assert answer["response_headers"]["www-authenticate"] == REVOKED_CHALLENGE
    assert json.loads(answer["body"]) == {"error": "invalid_token", "message": "token revoked"}


def denied_after(authz: Authz, token: str, since: float, *, limit: float = BOUND + 2.0) -> tuple[dict[str, Any], float]:
    """Poll until the token is denied; the deny and how long after `since` (time.monotonic()) it came."""
    while True:
        answer = authz.check(token)
        elapsed = time.monotonic() - since
        if not answer["allowed"] or elapsed > limit:
            return answer, elapsed
        time.sleep(0.05)


# -- revoked in Cognito, refused here --------------------------------------------------------------------------


def test_signed_out_token_is_refused_within_the_ttl_and_a_new_sign_in_works(emulator, cognito, pool):
    """AUTHZ_REVOCATION=cognito, TTL 2 s: an access token is allowed with its own sub; after an admin global
    sign-out the same token is refused 401 "token revoked" within TTL + 1 s, while the token of a new sign-in is
    allowed (a route with revocation=skip still takes the old one: it asked not to be checked)."""
    user = new_user(cognito, pool)
    with serving(settings_for(emulator, pool)) as authz:
        assert_allowed(authz.check(user.access_token), user)
        assert wait_for(lambda: authz.lookups("active") == 1)

        cognito.admin_user_global_sign_out(UserPoolId=pool.pool_id, Username=user.email)
        signed_out = time.monotonic()
        answer, elapsed = denied_after(authz, user.access_token, signed_out)
        assert_revoked(answer)
        assert elapsed <= BOUND, f"refused {elapsed:.2f}s after the sign-out"
        assert authz.lookups("revoked") == 1
        assert authz.metric("authz_decisions_total", result="deny", reason="token_revoked") >= 1

        # The revoked answer is kept: no further GetUser for this token, and it stays refused.
        assert_revoked(authz.check(user.access_token))
        assert authz.lookups("revoked") == 1

        again = sign_in_again(cognito, pool, user.email)
        assert again.access_token != user.access_token
        assert_allowed(authz.check(again.access_token), again)
        assert again.sub == user.sub

        assert_allowed(authz.check(user.access_token, context={"revocation": "skip"}), user)


@pytest.mark.parametrize("action", ["admin_disable_user", "admin_delete_user"])
def test_disabled_or_deleted_user_is_refused_within_the_ttl(emulator, cognito, pool, action):
    """A disabled user (GetUser: NotAuthorizedException) and a deleted one (UserNotFoundException) lose their
    still-unexpired access token within TTL + 1 s."""
    user = new_user(cognito, pool)
    with serving(settings_for(emulator, pool)) as authz:
        assert_allowed(authz.check(user.access_token), user)
        getattr(cognito, action)(UserPoolId=pool.pool_id, Username=user.email)
        since = time.monotonic()
        answer, elapsed = denied_after(authz, user.access_token, since)
        assert_revoked(answer)
        assert elapsed <= BOUND, f"refused {elapsed:.2f}s after {action}"
        assert authz.lookups("revoked") == 1


def test_id_token_is_judged_on_the_jwt_alone_after_sign_out(emulator, cognito, pool):
    """The limit: GetUser judges access tokens only, so after a global sign-out the user's id token is still
    allowed on a token_use=any route (even one asking for revocation=check) while their access token is refused."""
    user = new_user(cognito, pool)
    cognito.admin_user_global_sign_out(UserPoolId=pool.pool_id, Username=user.email)
    with serving(settings_for(emulator, pool)) as authz:
        assert_revoked(authz.check(user.access_token))  # no cached answer: the first lookup already says revoked
        for context in ({"token_use": "any"}, {"token_use": "any", "revocation": "check"}):
            answer = authz.check(user.id_token, context=context)
            assert_allowed(answer, user)
            assert answer["upstream_headers"]["x-user-token-use"] == "id"
        assert authz.lookups() == 1  # the access token's; the id token was never asked about


def test_mode_off_keeps_a_signed_out_token_unless_the_route_asks(emulator, cognito, pool):
    """The default (AUTHZ_REVOCATION=off): a signed-out user's access token is still allowed until it expires;
    a route with revocation=check confirms it anyway and refuses it."""
    assert Settings(pools=(), client_ids=frozenset()).revocation == "off"
    user = new_user(cognito, pool)
    cognito.admin_user_global_sign_out(UserPoolId=pool.pool_id, Username=user.email)
    with serving(settings_for(emulator, pool, revocation="off")) as authz:
        assert_allowed(authz.check(user.access_token), user)
        assert authz.lookups() == 0
        assert_revoked(authz.check(user.access_token, context={"revocation": "check"}))
        assert authz.lookups("revoked") == 1
        assert_allowed(authz.check(user.access_token), user)  # the default route still does not ask


# -- Cognito down or slow -------------------------------------------------------------------------------------------


class SlowCognito(LoopbackHttp):
    """Accepts GetUser and answers only after `release` is set (at teardown): slower than any timeout."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.requests += 1
                outer.release.wait(timeout=30)
                body = b"{}"
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up long ago, which is the point

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.release.set()
        super().close()


@pytest.fixture(params=["down", "slow"])
def unanswering_cognito(request: pytest.FixtureRequest) -> Iterator[tuple[str, SlowCognito | None]]:
    """A GetUser endpoint that never answers in time: a closed port, or a server that sleeps on each request."""
    if request.param == "down":
        yield f"http://127.0.0.1:{free_port()}", None
        return
    slow = SlowCognito()
    try:
        yield slow.url, slow
    finally:
        slow.close()


def _timed(call: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


@pytest.mark.parametrize("on_error", ["allow", "deny"])
def test_cognito_not_answering_follows_the_error_policy_and_never_hangs(
    emulator, cognito, pool, unanswering_cognito, on_error
):
    """GetUser at a closed port or at a server slower than the 0.3 s timeout (keys still come from the emulator):
    on_error=allow lets the verified token through and counts it as unconfirmed{action="allow"}; on_error=deny
    refuses it with 503 revocation_unavailable. Each Check answers within the timeout plus a margin."""
    endpoint, slow = unanswering_cognito
    user = new_user(cognito, pool)
    settings = settings_for(
        emulator, pool, cognito_endpoint_url=endpoint, revocation_on_error=on_error, revocation_timeout_seconds=TIMEOUT
    )
    checks = 4
    with serving(settings) as authz:
        for _ in range(checks):
            answer, seconds = _timed(lambda: authz.check(user.access_token))
            assert seconds < CHECK_LIMIT, f"a Check took {seconds:.2f}s with Cognito {'slow' if slow else 'down'}"
            if on_error == "allow":
                assert_allowed(answer, user)
            else:
                assert (answer["allowed"], answer["http_status"], answer["grpc_code"]) == (False, 503, 14), answer
                assert json.loads(answer["body"])["error"] == "revocation_unavailable"
                assert "www-authenticate" not in answer["response_headers"]  # not the client's token at fault
        assert authz.metric("authz_revocation_unconfirmed_total", action=on_error) == checks
        assert authz.metric("authz_revocation_unconfirmed_total") == checks
        reason = "ok_unconfirmed" if on_error == "allow" else "revocation_unavailable"
        assert authz.metric("authz_decisions_total", result=on_error, reason=reason) == checks
        assert wait_for(lambda: authz.lookups("unknown") >= 1)
        assert authz.lookups("active") == authz.lookups("revoked") == 0
        if slow is not None:
            assert 1 <= slow.requests <= checks


# -- cost ---------------------------------------------------------------------------------------------------------


def test_concurrent_checks_of_one_token_make_one_getuser_call(emulator, cognito, pool):
    """30 Checks of one fresh token at once: all allowed with the caller's sub, and one GetUser between them."""
    user = new_user(cognito, pool)
    with serving(settings_for(emulator, pool)) as authz:
        with ThreadPoolExecutor(max_workers=30) as executor:
            answers = list(executor.map(lambda _: authz.check(user.access_token), range(30)))
        for answer in answers:
            assert_allowed(answer, user)
        assert wait_for(lambda: authz.lookups() >= 1)
        time.sleep(0.2)  # a second call, were there one, would have been counted by now
        assert authz.lookups() == 1
        assert authz.lookups("active") == 1


def test_a_token_in_its_leeway_window_costs_one_getuser_call(emulator, cognito, pool):
    """A token the pool signed that expired 5 s ago is still verified (leeway 30 s); Cognito refuses it (GetUser:
    NotAuthorizedException, as for any expired token) and that answer is kept until exp + leeway like any other,
    so repeating the token costs no further GetUser calls. The client is told the token expired, not that it was
    revoked."""
    user = new_user(cognito, pool)
    expired = EmulatorSigner().resign(user.access_token, exp=int(time.time()) - 5)
    with serving(settings_for(emulator, pool, leeway_seconds=30)) as authz:
        for _ in range(5):
            answer = authz.check(expired)
            assert (answer["allowed"], answer["http_status"]) == (False, 401), answer
            assert json.loads(answer["body"]) == {"error": "invalid_token", "message": "token expired"}
        assert wait_for(lambda: authz.lookups() >= 1)
        time.sleep(0.2)
        assert authz.lookups() == 1
