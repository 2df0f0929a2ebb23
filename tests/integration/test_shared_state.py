"""Shared state across authz replicas (AUTHZ_STATE_URL): three replicas, one real redis-server, a real Envoy.

The module starts its own three `python -m authz` replicas (AUTHZ_REVOCATION=cognito, a 2 s TTL) with a Redis of
their own and an Envoy in front of them, beside the session stack's backend and Cognito emulator. The replicas reach
the emulator through a counting proxy (tests/integration/counting_cognito.py), so a test can tell how often they
asked Cognito's GetUser about a token. Each replica is asked directly, one Check at a time (authz.client.check on
gRPC; on AUTHZ_TRANSPORT=http, the same request sent to its HTTP port, as Envoy's HTTP mode asks), and through Envoy.

The replicas' route table is the stack's, plus one route that trusts the JWT alone (`revocation: skip`): the
emulator's tokens carry no origin_jti, so the session tests re-sign a token with one (with the emulator's own key),
and Cognito, which never issued that token, would refuse it on any route that asks.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from authz.cache import token_digest
from authz.client import check
from authz.denylist import DenyEntry, EntryKind
from authz.state import CHANNEL, KEY_PREFIX, connect
from envoy.bootstrap import Transport
from stack.cognito import sign_in
from stack.local import ROOT, ROUTES_FILE, LocalStack
from stack.processes import grpc_serving, http_ok
from tests.integration.counting_cognito import CountingCognito
from tests.integration.cruddur_api import PASSWORD, User, bearer, get, resign, sign_up

if TYPE_CHECKING:
    import redis

REPLICAS = 3
TTL = 2.0
# Every replica refuses what a revoke names within this of the command's exit (the pub/sub channel).
PROPAGATION = 1.0
# Envoy's ext_authz timeout: no Check may take longer, whatever Redis does.
CHECK_BOUND = 1.0
# How long a replica takes to notice an outage (a PING each second, each command bounded by 0.25 s) or a Redis
# back (reconnecting with backoff up to 2 s), with room to spare.
NOTICE = 5.0
# A route of the module's own table on which a Check trusts the JWT alone (no GetUser).
JWT_ONLY = "/shared-state/jwt-only"
ME = "/api/me"
SIGN_OUT = "/api/sign-out"


class Answer(NamedTuple):
    """A replica's answer to one Check: allowed, and if not the HTTP status and the body's message."""

    allowed: bool
    status: int
    message: str = ""


REVOKED = Answer(False, 401, "token revoked")
SIGN_OUT_UNAVAILABLE = Answer(False, 503, "cannot record the sign-out now")
ALLOWED = Answer(True, 200)


@pytest.fixture(scope="module")
def counting(stack: LocalStack) -> Iterator[CountingCognito]:
    with CountingCognito(stack.cognito_env["AWS_ENDPOINT_URL_COGNITO_IDP"]) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def replicas(
    stack: LocalStack, counting: CountingCognito, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """Three authz replicas sharing one redis-server, asking Cognito through the counting proxy, behind one Envoy."""
    run_dir = tmp_path_factory.mktemp("shared-state")
    table = yaml.safe_load(ROUTES_FILE.read_text())
    table["routes"].append({"match": {"path": JWT_ONLY}, "auth": "required", "revocation": "skip"})
    routes = run_dir / "routes.yaml"
    routes.write_text(yaml.safe_dump(table))
    shared = LocalStack(
        ports=stack.ports.beside(authz_replicas=REPLICAS),
        run_dir=run_dir,
        state=True,
        routes_file=routes,
        authz_env={"AUTHZ_REVOCATION": "cognito", "AUTHZ_REVOCATION_TTL": str(int(TTL))},
        envoy_concurrency=1,
    )
    shared.use_cognito({**stack.cognito_env, "AWS_ENDPOINT_URL_COGNITO_IDP": counting.url})
    try:
        shared.start_state()
        with ThreadPoolExecutor(REPLICAS) as starting:
            for started in [starting.submit(shared.start_authz, replica) for replica in range(REPLICAS)]:
                started.result()
        shared.start_envoy()
        yield shared
    finally:
        shared.stop()


@pytest.fixture(scope="module")
def state(replicas: LocalStack) -> Iterator[redis.Redis]:
    """A client of the replicas' Redis, to look at and to spoil what they share."""
    client = connect(replicas.state_url, timeout=5.0)
    yield client
    client.close()


# ------------------------------------------------------------------------------------------------ helpers


def ask(stack: LocalStack, replica: int, token: str, *, path: str = ME, method: str = "GET") -> Answer:
    """One Check straight to one replica, on the stack's transport."""
    if stack.authz_transport is Transport.HTTP:
        reply = requests.request(method, f"http://{stack.authz_addr(replica)}{path}", headers=bearer(token), timeout=5)
        if reply.status_code == 200:
            return ALLOWED
        return Answer(False, reply.status_code, reply.json()["message"])
    result = check(stack.authz_addr(replica), token=token, path=path, method=method)
    if result["allowed"]:
        return ALLOWED
    return Answer(False, result["http_status"], _message(result["body"]))


def _message(body: str) -> str:
    return str(json.loads(body)["message"]) if body else ""


def ask_all(stack: LocalStack, token: str, *, path: str = ME) -> list[Answer]:
    return [ask(stack, replica, token, path=path) for replica in range(REPLICAS)]


def serving(stack: LocalStack, replica: int) -> bool:
    if stack.authz_transport is Transport.HTTP:
        return http_ok(stack.health_url(replica))()
    return grpc_serving(stack.authz_addr(replica))()


def metric(stack: LocalStack, name: str, replica: int, **labels: str) -> float:
    text = requests.get(stack.metrics_url(replica), timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


def metric_sum(stack: LocalStack, name: str, **labels: str) -> float:
    return sum(metric(stack, name, replica, **labels) for replica in range(REPLICAS))


def revoke(stack: LocalStack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m authz revoke ...` as an operator runs it, with only AUTHZ_STATE_URL set."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AUTHZ_", "AWS_"))}
    env["AUTHZ_STATE_URL"] = stack.state_url
    return subprocess.run(
        [sys.executable, "-m", "authz", "revoke", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )


def revoked_everywhere(stack: LocalStack, token: str, *, path: str = ME, since: float | None = None) -> float:
    """Poll every replica until each refuses the token as revoked; the seconds from `since` (a time.monotonic(),
    by default now) until the last did. Gives up a second past PROPAGATION: the caller asserts the bound."""
    started = time.monotonic() if since is None else since
    pending = set(range(REPLICAS))
    while pending and time.monotonic() - started < PROPAGATION + 1.0:
        pending = {replica for replica in pending if ask(stack, replica, token, path=path) != REVOKED}
        if pending:
            time.sleep(0.02)
    assert not pending, f"replicas {sorted(pending)} still do not refuse the token"
    return time.monotonic() - started


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


def connected_everywhere(stack: LocalStack, value: float) -> bool:
    return all(metric(stack, "authz_state_connected", replica) == value for replica in range(REPLICAS))


def next_second() -> None:
    """Sleep into the next whole second: a token Cognito issues then has an iat (whole seconds) later than now."""
    time.sleep(math.floor(time.time()) + 1.0 - time.time() + 0.01)


def new_token(stack: LocalStack, cognito: Any, user: User) -> str:
    return str(sign_in(cognito, stack.cognito_env["AWS_COGNITO_CLIENT_ID"], user.email, PASSWORD)["AccessToken"])


# -------------------------------------------------------------------------------------------------- tests


def test_one_getuser_per_token_per_ttl_across_the_replicas(
    replicas: LocalStack, stack: LocalStack, cognito: Any, counting: CountingCognito
):
    """A token checked on three replicas, one after another or all at once, costs one GetUser call to Cognito per
    TTL between them, and one more once the TTL has passed."""
    user = sign_up(stack, cognito)
    token = user.access_token
    lookups_before = metric_sum(replicas, "authz_revocation_lookups_total")

    assert ask_all(replicas, token) == [ALLOWED] * REPLICAS
    assert counting.get_user_calls(token) == 1
    assert metric_sum(replicas, "authz_revocation_lookups_total") - lookups_before == 1

    fresh = new_token(stack, cognito, user)
    barrier = threading.Barrier(REPLICAS * 4)

    def at_once(replica: int) -> Answer:
        barrier.wait(timeout=10)
        return ask(replicas, replica, fresh)

    with ThreadPoolExecutor(REPLICAS * 4) as pool:
        answers = list(pool.map(at_once, [replica for replica in range(REPLICAS) for _ in range(4)]))
    assert answers == [ALLOWED] * (REPLICAS * 4)
    assert counting.get_user_calls(fresh) == 1

    time.sleep(TTL + 0.2)
    barrier.reset()
    with ThreadPoolExecutor(REPLICAS * 4) as pool:
        answers = list(pool.map(at_once, [replica for replica in range(REPLICAS) for _ in range(4)]))
    assert answers == [ALLOWED] * (REPLICAS * 4)
    assert counting.get_user_calls(fresh) == 2
    assert metric_sum(replicas, "authz_revocation_lookups_total") - lookups_before == 3
    assert metric_sum(replicas, "authz_revocation_shared_answers_total", outcome="active") >= 2


def test_revoke_sub_reaches_every_replica_within_a_second(replicas: LocalStack, stack: LocalStack, cognito: Any):
    """`python -m authz revoke --sub` has every replica refuse that user's token within a second of the command's
    exit, not another user's; a token the user gets afterwards is allowed."""
    user = sign_up(stack, cognito)
    other = sign_up(stack, cognito)
    assert ask_all(replicas, user.access_token) == [ALLOWED] * REPLICAS

    done = revoke(replicas, "--sub", user.sub, "--reason", "integration test")
    exited, exited_wall = time.monotonic(), time.time()
    assert done.returncode == 0, done.stderr
    elapsed = revoked_everywhere(replicas, user.access_token, since=exited)
    assert elapsed < PROPAGATION, f"refused everywhere only {elapsed:.2f}s after the revoke"
    assert ask_all(replicas, other.access_token) == [ALLOWED] * REPLICAS

    # A user entry refuses tokens issued (iat, whole seconds) at or before the revoke: sign in again a second on.
    if math.floor(time.time()) <= math.floor(exited_wall):
        next_second()
    again = new_token(stack, cognito, user)
    assert ask_all(replicas, again) == [ALLOWED] * REPLICAS
    assert ask_all(replicas, user.access_token) == [REVOKED] * REPLICAS


def test_revoke_origin_jti_refuses_that_sessions_tokens_only(replicas: LocalStack, stack: LocalStack, cognito: Any):
    """`python -m authz revoke --origin-jti` has every replica refuse each token of that sign-in session, and no
    token of the user's other sessions."""
    user = sign_up(stack, cognito)
    session, other_session = str(uuid.uuid4()), str(uuid.uuid4())
    first = resign(user.access_token, origin_jti=session, jti=str(uuid.uuid4()))
    refreshed = resign(user.access_token, origin_jti=session, jti=str(uuid.uuid4()))
    elsewhere = resign(user.access_token, origin_jti=other_session, jti=str(uuid.uuid4()))
    for token in (first, refreshed, elsewhere):
        assert ask_all(replicas, token, path=JWT_ONLY) == [ALLOWED] * REPLICAS

    done = revoke(replicas, "--origin-jti", session)
    exited = time.monotonic()
    assert done.returncode == 0, done.stderr
    assert revoked_everywhere(replicas, first, path=JWT_ONLY, since=exited) < PROPAGATION
    assert ask_all(replicas, refreshed, path=JWT_ONLY) == [REVOKED] * REPLICAS
    assert ask_all(replicas, elsewhere, path=JWT_ONLY) == [ALLOWED] * REPLICAS
    assert ask_all(replicas, user.access_token) == [ALLOWED] * REPLICAS  # it has no origin_jti


def test_revoke_token_from_stdin_refuses_that_token_only(replicas: LocalStack, stack: LocalStack, cognito: Any):
    """`python -m authz revoke --token -` (the token on standard input) has every replica refuse that one token, and
    not the same user's other token."""
    user = sign_up(stack, cognito)
    second = new_token(stack, cognito, user)
    assert ask_all(replicas, user.access_token) == [ALLOWED] * REPLICAS
    assert ask_all(replicas, second) == [ALLOWED] * REPLICAS

    done = revoke(replicas, "--token", "-", stdin=user.access_token + "\n")
    exited = time.monotonic()
    assert done.returncode == 0, done.stderr
    assert user.access_token not in done.stdout + done.stderr
    assert token_digest(user.access_token).hex() in done.stdout
    assert revoked_everywhere(replicas, user.access_token, since=exited) < PROPAGATION
    assert ask_all(replicas, second) == [ALLOWED] * REPLICAS


def test_sign_out_route_through_envoy_refuses_the_token_everywhere(
    replicas: LocalStack, stack: LocalStack, cognito: Any
):
    """POST /api/sign-out through Envoy answers 204; from then on the caller's token is refused on every replica and
    through Envoy, while another user's token still works."""
    user = sign_up(stack, cognito)
    other = sign_up(stack, cognito)
    assert get(replicas, ME, headers=bearer(user.access_token)).status_code == 200
    recorded_before = metric_sum(replicas, "authz_sign_outs_total", outcome="recorded")

    signed_out = requests.post(replicas.envoy_url + SIGN_OUT, headers=bearer(user.access_token), timeout=10)
    answered = time.monotonic()
    assert signed_out.status_code == 204, signed_out.text

    assert revoked_everywhere(replicas, user.access_token, since=answered) < PROPAGATION
    me = get(replicas, ME, headers=bearer(user.access_token))
    assert me.status_code == 401
    assert 'error_description="token revoked"' in me.headers["WWW-Authenticate"]
    assert get(replicas, ME, headers=bearer(other.access_token)).status_code == 200
    assert metric_sum(replicas, "authz_sign_outs_total", outcome="recorded") - recorded_before == 1


class Load:
    """Threads asking every replica about tokens, over and over, recording each answer in the phase the test says
    it is in, and how long the slowest Check took."""

    def __init__(self, stack: LocalStack, tokens: dict[str, str]) -> None:
        self._stack = stack
        self._tokens = tokens
        self._stop = threading.Event()
        self.phase = "before"
        self._answers: list[tuple[str, str, int, Answer]] = []  # (phase, token name, replica, answer)
        self.slowest = 0.0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(name, replica), daemon=True)
            for name in tokens
            for replica in range(REPLICAS)
        ]

    def answers(self, name: str, phase: str) -> list[Answer]:
        with self._lock:
            return [answer for when, which, _, answer in self._answers if when == phase and which == name]

    def allowed(self, name: str, phase: str) -> list[int]:
        """The replica of each Check of the token allowed in the phase."""
        with self._lock:
            return [r for when, which, r, answer in self._answers if (when, which) == (phase, name) and answer.allowed]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self, name: str, replica: int) -> None:
        while not self._stop.is_set():
            phase = self.phase
            started = time.monotonic()
            try:
                answer = ask(self._stack, replica, self._tokens[name])
            except Exception as error:  # noqa: BLE001 - a failed Check is a finding, not a crash of the load
                with self._lock:
                    self.errors.append(f"replica {replica}: {type(error).__name__}: {error}")
                continue
            took = time.monotonic() - started
            with self._lock:
                if phase == self.phase:  # a Check spanning two phases belongs to neither
                    self._answers.append((phase, name, replica, answer))
                self.slowest = max(self.slowest, took)
            time.sleep(0.005)


def test_redis_outage_keeps_checks_fast_and_revokes_enforced(
    replicas: LocalStack, stack: LocalStack, cognito: Any, state: redis.Redis
):
    """With Redis killed under load, every Check still answers within Envoy's 1 s, a token revoked before stays
    refused everywhere, health stays SERVING and the outage shows in the metrics, and a sign-out answers 503; once
    Redis is back (same data), the replicas reconnect, a new revoke reaches them all and the old one still holds."""
    victim = sign_up(stack, cognito)
    good = sign_up(stack, cognito)
    later = sign_up(stack, cognito)
    assert revoke(replicas, "--sub", victim.sub).returncode == 0
    revoked_everywhere(replicas, victim.access_token)
    assert ask_all(replicas, good.access_token) == [ALLOWED] * REPLICAS
    assert ask_all(replicas, later.access_token) == [ALLOWED] * REPLICAS
    wait_for(lambda: connected_everywhere(replicas, 1), NOTICE, "every replica in sync")
    outages_before = [metric(replicas, "authz_state_outages_total", replica) for replica in range(REPLICAS)]
    redis_process = replicas.process("redis")

    with Load(replicas, {"victim": victim.access_token, "good": good.access_token}) as load:
        time.sleep(0.3)
        load.phase = "outage"
        redis_process.kill()
        wait_for(lambda: connected_everywhere(replicas, 0), NOTICE, "every replica sees the outage")
        assert [metric(replicas, "authz_state_outages_total", replica) for replica in range(REPLICAS)] == [
            before + 1 for before in outages_before
        ]
        assert all(serving(replicas, replica) for replica in range(REPLICAS))
        for replica in range(REPLICAS):
            assert ask(replicas, replica, good.access_token, path=SIGN_OUT, method="POST") == SIGN_OUT_UNAVAILABLE
        through_envoy = requests.post(replicas.envoy_url + SIGN_OUT, headers=bearer(good.access_token), timeout=10)
        assert through_envoy.status_code == 503
        time.sleep(TTL + 0.5)  # the good token's answer expires: the replicas ask Cognito themselves meanwhile
        assert all(serving(replicas, replica) for replica in range(REPLICAS))

        load.phase = "reconnect"
        redis_process.start()
        wait_for(lambda: connected_everywhere(replicas, 1), NOTICE, "every replica reconnected")
        load.phase = "after"
        time.sleep(0.5)

    assert not load.errors, load.errors[:5]
    assert load.slowest < CHECK_BOUND, f"a Check took {load.slowest:.2f}s"
    for phase in ("before", "outage", "reconnect", "after"):
        assert load.answers("good", phase), f"no Check of the good token {phase}"
        assert set(load.answers("good", phase)) == {ALLOWED}, phase
        assert load.answers("victim", phase), f"no Check of the revoked token {phase}"
        # "reconnect": each replica reads every entry again (test_a_replica_resyncing_... makes that read long).
        assert not load.allowed("victim", phase), (
            f"revoked token allowed {phase} by replicas {load.allowed('victim', phase)}"
        )

    # Redis kept the entry written before the outage (its append-only file), and a new entry reaches every replica.
    assert state.exists(f"{KEY_PREFIX}deny:user:{victim.sub}")
    done = revoke(replicas, "--sub", later.sub)
    exited = time.monotonic()
    assert done.returncode == 0, done.stderr
    assert revoked_everywhere(replicas, later.access_token, since=exited) < PROPAGATION
    assert ask_all(replicas, victim.access_token) == [REVOKED] * REPLICAS
    assert ask_all(replicas, good.access_token) == [ALLOWED] * REPLICAS

    # A replica started now learns every entry from Redis alone.
    replicas.authz(REPLICAS - 1).stop()
    replicas.start_authz(REPLICAS - 1)
    assert ask(replicas, REPLICAS - 1, victim.access_token) == REVOKED
    assert ask(replicas, REPLICAS - 1, later.access_token) == REVOKED


def test_garbage_in_redis_is_ignored_counted_and_never_an_allow(
    replicas: LocalStack, stack: LocalStack, cognito: Any, state: redis.Redis
):
    """Values in Redis that authz did not write (a deny entry that is not JSON or not its shape, a GetUser answer
    that is garbage, a garbage message on the channel) crash nothing, refuse nothing they do not say, never make a
    token Cognito revoked look active, and are counted in authz_state_malformed_total."""
    user = sign_up(stack, cognito)
    assert ask_all(replicas, user.access_token) == [ALLOWED] * REPLICAS

    def malformed(what: str) -> list[float]:
        return [metric(replicas, "authz_state_malformed_total", replica, what=what) for replica in range(REPLICAS)]

    entries_before, messages_before, answers_before = malformed("entry"), malformed("message"), malformed("answer")
    deny_key = f"{KEY_PREFIX}deny:user:{user.sub}"
    foreign = '{"v": 1, "until": "tomorrow", "who": "' + user.sub + '"}'

    # On the channel: a message that is no entry at all, then two for the user's key that are not entries.
    state.publish(CHANNEL, b"garbage")
    state.publish(CHANNEL, f"{deny_key} not-json".encode())
    state.publish(CHANNEL, f"{deny_key} {foreign}".encode())
    wait_for(
        lambda: (
            malformed("entry") == [before + 2 for before in entries_before]
            and malformed("message") == [before + 1 for before in messages_before]
        ),
        NOTICE,
        "every replica counts the garbage messages",
    )

    # Stored: the same garbage under deny keys, which each replica reads when it syncs again (its subscription
    # cut, as a Redis restart or failover would).
    state.set(deny_key, b"\xff\xfe not json", ex=60)
    state.set(f"{KEY_PREFIX}deny:session:{uuid.uuid4()}", foreign, ex=60)
    state.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    wait_for(
        lambda: malformed("entry") == [before + 4 for before in entries_before],
        NOTICE,
        "every replica counts the garbage entries on resync",
    )
    wait_for(lambda: connected_everywhere(replicas, 1), NOTICE, "every replica in sync again")
    assert all(serving(replicas, replica) for replica in range(REPLICAS))
    assert ask_all(replicas, user.access_token) == [ALLOWED] * REPLICAS  # the garbage refuses nobody

    # GetUser answers: garbage under a token's digest, for tokens Cognito has revoked. Never taken as active.
    garbage_answers = [
        b"\x00\xff",
        b'"active"',
        b'{"v": 1, "status": "active"}',
        b'{"v": 1, "status": "active", "at": "now"}',
        b'{"v": 2, "status": "active", "at": 1}',
        b'{"v": 1, "status": "active", "at": true}',
    ]
    pool = stack.cognito_env["AWS_COGNITO_USER_POOLS_ID"]
    for number, garbage in enumerate(garbage_answers):
        signed_out = sign_up(stack, cognito)
        cognito.admin_user_global_sign_out(UserPoolId=pool, Username=signed_out.email)
        digest = token_digest(signed_out.access_token).hex()
        state.set(f"{KEY_PREFIX}getuser:{digest}", garbage, ex=60)
        replica = number % REPLICAS
        assert ask(replicas, replica, signed_out.access_token) == REVOKED, garbage
        assert ask_all(replicas, signed_out.access_token) == [REVOKED] * REPLICAS, garbage
    assert sum(malformed("answer")) - sum(answers_before) == len(garbage_answers)
    assert all(serving(replicas, replica) for replica in range(REPLICAS))


def test_a_replica_resyncing_with_redis_keeps_refusing_what_it_refused(
    replicas: LocalStack, stack: LocalStack, cognito: Any, state: redis.Redis
):
    """While a replica reads the denylist again after its connection to Redis was cut (a restart, a failover), a
    token it refused before stays refused: the resync never shows Checks a half-read denylist."""
    victim = sign_up(stack, cognito)
    assert ask_all(replicas, victim.access_token) == [ALLOWED] * REPLICAS  # Cognito's "active" is cached
    assert revoke(replicas, "--sub", victim.sub).returncode == 0
    revoked_everywhere(replicas, victim.access_token)

    # Many other entries (as a busy pool's revoked tokens leave), so that reading them all takes a while.
    until = time.time() + 120
    filler = [DenyEntry(EntryKind.TOKEN, secrets.token_hex(32), until) for _ in range(20_000)]
    keys = [f"{KEY_PREFIX}deny:token:{entry.subject}" for entry in filler]
    with state.pipeline(transaction=False) as pipe:
        for key, entry in zip(keys, filler, strict=True):
            pipe.set(key, entry.value(), ex=120)
        pipe.execute()
    try:
        with Load(replicas, {"victim": victim.access_token}) as load:
            load.phase = "resync"
            state.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            time.sleep(0.2)
            wait_for(lambda: connected_everywhere(replicas, 1), NOTICE * 2, "every replica in sync again")
        assert not load.errors, load.errors[:5]
        checks, allowed = load.answers("victim", "resync"), load.allowed("victim", "resync")
        assert not allowed, f"{len(allowed)} of {len(checks)} Checks allowed a revoked user during the resync"
    finally:
        for start in range(0, len(keys), 10_000):
            state.delete(*keys[start : start + 10_000])


def test_a_replica_claiming_a_token_just_after_another_answered_takes_that_answer(
    replicas: LocalStack, stack: LocalStack, cognito: Any, counting: CountingCognito, state: redis.Redis
):
    """A replica that found no shared answer for a token, and claims it just after another replica stored its answer
    and gave up its claim, takes that answer instead of asking Cognito again: one GetUser per token per TTL, however
    the replicas' steps interleave."""
    user = sign_up(stack, cognito)
    token = new_token(stack, cognito, user)
    first, second = 0, 1
    hold = counting.hold(token)
    with ThreadPoolExecutor(2) as pool:
        asking = pool.submit(ask, replicas, first, token)
        assert hold.arrived.wait(timeout=5)  # the first replica holds the claim and waits on Cognito
        # Redis holds every write from now on (reads go on), so that the two replicas' steps land in this order: the
        # first's answer and release, then the second's claim, made after it found no answer. Each write waits a
        # few milliseconds, well within the replicas' 0.25 s bound on a command.
        state.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
        try:
            hold.released.set()
            blocked_writes(state, 1)  # the first replica's answer and release
            answering = pool.submit(ask, replicas, second, token)
            blocked_writes(state, 2)  # the second replica's claim, after its look found no answer
        finally:
            state.execute_command("CLIENT", "UNPAUSE")
        assert asking.result() == ALLOWED
        assert answering.result() == ALLOWED
    assert counting.get_user_calls(token) == 1


def blocked_writes(state: redis.Redis, count: int) -> None:
    """Wait (briefly: the writers' own timeout is 0.25 s) until `count` clients wait on Redis's write pause."""
    deadline = time.monotonic() + 0.2
    while state.info("clients")["blocked_clients"] < count:
        assert time.monotonic() < deadline, f"fewer than {count} writes held by the pause"
        time.sleep(0.002)
