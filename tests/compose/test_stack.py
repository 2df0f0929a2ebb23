"""The compose stack as a user runs it (`docker compose up`), in real containers built without network: requests
through the published port, the pages in a browser, and what happens when authz stops, when a replica dies under
load, and what each container may do. The tests that stop or scale a service put it back as they found it."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver

from tests.browser.pages import App, Person
from tests.compose.conftest import Compose, until
from tests.integration.cruddur_api import bearer

SERVICES = ("envoy", "authz", "backend", "cognito-local", "redis")
GRPCURL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "grpcurl"


@pytest.fixture(scope="module")
def token(stack: Compose) -> str:
    return stack.demo_token()


# -------------------------------------------------------------------------------------------------- requests


def test_the_api_is_denied_without_a_token_and_allowed_with_the_demo_users(stack: Compose, token: str):
    """Through the published port: liveness without a token, the contract's 401 without one on the API, and the
    demo user's own identity with the token README's command prints."""
    assert stack.get("/api/health").status_code == 200
    denied = stack.get("/api/me")
    assert denied.status_code == 401 and denied.json()["error"] == "missing_token"
    assert denied.headers["www-authenticate"] == 'Bearer realm="api"'
    me = stack.get("/api/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert (me.json()["principal"], me.json()["token_use"]) == ("user", "access")


def test_identity_headers_a_client_sends_never_reach_the_backend(stack: Compose, token: str):
    """A spoofed x-user-sub (any case) is stripped: with a token the backend sees the token's sub, without one the
    request is denied."""
    real = stack.get("/api/me", headers=bearer(token)).json()["sub"]
    spoofed = {"X-User-Sub": "someone-else", "x-user-groups": "admins", "x-user-principal": "client"}
    me = stack.get("/api/me", headers={**bearer(token), **spoofed}).json()
    assert (me["sub"], me["groups"], me["principal"]) == (real, [], "user")
    assert stack.get("/api/me", headers=spoofed).status_code == 401


def test_the_pages_reach_cognito_through_envoy_and_only_for_their_own_actions(stack: Compose):
    """/web/config.json sends the pages to /cognito/ on their own origin; there a user-pool action the pages use
    reaches the emulator, and an admin action (which the emulator, like moto, would grant to anyone) is 403."""
    config = stack.get("/web/config.json").json()
    assert config["endpoint"] == "/cognito/" and config["userPoolId"] == stack.env_file()["AWS_COGNITO_USER_POOLS_ID"]

    def call(action: str, body: dict[str, Any]) -> requests.Response:
        headers = {
            "X-Amz-Target": f"AWSCognitoIdentityProviderService.{action}",
            "Content-Type": "application/x-amz-json-1.1",
        }
        return requests.post(stack.url + "/cognito/", headers=headers, data=json.dumps(body), timeout=10)

    wrong = call(
        "InitiateAuth",
        {
            "ClientId": config["clientId"],
            "AuthFlow": "USER_PASSWORD_AUTH",
            "AuthParameters": {"USERNAME": "nobody@cruddur.local", "PASSWORD": "x"},
        },
    )
    # Cognito's own answer for an unknown user: it came from the emulator, not from Envoy.
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["__type"].split("#")[-1] in ("NotAuthorizedException", "UserNotFoundException"), wrong.text
    for action in ("ListUserPools", "AdminCreateUser", "AdminDeleteUser", "DescribeUserPoolClient"):
        refused = call(action, {"UserPoolId": config["userPoolId"], "MaxResults": 1})
        assert refused.status_code == 403 and refused.json()["__type"] == "AccessDeniedException", action
    assert stack.get("/cognito/").status_code == 403
    # An action moto would read before X-Amz-Target, in the query or in the body, and its own /moto-api/.
    headers = {
        "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
        "Content-Type": "application/x-amz-json-1.1",
    }
    for path, body in (
        ("/cognito/?Action=ListUserPools&MaxResults=1", "{}"),
        ("/cognito/", json.dumps({"x": "&Action=ListUserPools&MaxResults=1&"})),
        ("/cognito/moto-api/data.json", "{}"),
        ("/cognito/moto-api/reset", "{}"),
    ):
        answer = requests.post(stack.url + path, headers=headers, data=body, timeout=10)
        assert answer.status_code in (400, 403) and "UserPools" not in answer.text, (path, answer.text[:200])
    assert stack.get("/api/me", headers=bearer(stack.demo_token())).status_code == 200  # the emulator kept its pool


def test_a_visitor_signs_up_and_in_in_a_browser(stack: Compose, driver: webdriver.Chrome):
    """The pages under compose as under `make run`: sign up, confirm (the emulator takes any code), sign in, see
    one's own name and item in the feed, sign out."""
    person = Person.new()
    app = App(driver, stack.url)
    app.reset()
    app.open("/")
    app.wait_signed_out_home()
    app.find("a#nav-signup").click()
    app.sign_up(person)
    app.wait_page("confirm")
    app.fill({"#confirm-code": "123456"})
    app.submit("form#confirm-form")
    app.wait_page("signin")
    app.sign_in(person.email, person.password)
    feed = app.feed()
    assert feed[0]["own"] and feed[0]["handle"] == person.name, feed
    app.find("#signout").click()
    app.wait_signed_out_home()
    driver.get("about:blank")


# ---------------------------------------------------------------------------------------------- containers


def test_every_container_runs_as_a_user_other_than_root(stack: Compose):
    """No service's process is root (authz, the backend and the emulator as 10001, Envoy as 101, Redis as redis)."""
    for service in SERVICES:
        uid = stack.compose("exec", "-T", service, "id", "-u").strip()
        assert uid != "0", service


def test_envoys_admin_answers_inside_its_container_only(stack: Compose):
    """The admin listens on the envoy container's loopback: authz, on a network with Envoy, cannot reach it."""
    probe = "import socket,sys; s=socket.socket(); s.settimeout(2); sys.exit(s.connect_ex(('envoy', int(sys.argv[1]))))"

    def connects(port: int) -> bool:
        argv = ["docker", "compose", "exec", "-T", "authz", "python", "-c", probe, str(port)]
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0

    assert connects(8080)  # the listener: the probe itself works from there
    assert not connects(9901)
    assert stack.healthy("envoy")  # its own healthcheck asks the admin on 127.0.0.1


def test_grpcurl_reaches_the_authz_container(stack: Compose):
    """grpcurl, from the host to the authz container's address on its network, lists Envoy's Authorization service
    and reads SERVING from gRPC health."""
    [container] = stack.containers("authz")
    networks = json.loads(subprocess.run(["docker", "inspect", container], capture_output=True, text=True).stdout)[0][
        "NetworkSettings"
    ]["Networks"]
    address = next(network["IPAddress"] for name, network in networks.items() if name.endswith("authz-net"))
    listed = subprocess.run([str(GRPCURL), "-plaintext", f"{address}:9191", "list"], capture_output=True, text=True)
    assert "envoy.service.auth.v3.Authorization" in listed.stdout.split(), listed.stderr
    health = subprocess.run(
        [str(GRPCURL), "-plaintext", f"{address}:9191", "grpc.health.v1.Health/Check"], capture_output=True, text=True
    )
    assert json.loads(health.stdout)["status"] == "SERVING", health.stderr


def test_a_flooding_user_is_held_to_the_stacks_rate_limit(stack: Compose, token: str):
    """Compose's Envoy limits each signed-in caller (20 requests a second): a flood from the demo user gets 429s,
    while anonymous requests of the public feed go on."""
    statuses: list[int] = []

    def flood() -> None:
        with requests.Session() as session:
            statuses.extend(
                session.get(stack.url + "/api/me", headers=bearer(token), timeout=5).status_code for _ in range(20)
            )

    # 80 requests from 4 connections at once: faster than 20 a second on any machine.
    workers = [threading.Thread(target=flood) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert 429 in statuses and 200 in statuses, statuses
    assert stack.get("/api/activities/home").status_code == 200
    time.sleep(1.5)  # the bucket refills, for the tests after this one


# ------------------------------------------------------------------------------------------------- faults


def test_with_authz_stopped_the_api_fails_closed_and_recovers_when_it_starts(stack: Compose, token: str):
    """`docker compose stop authz`: every checked request is 503 and none reaches the backend, while liveness stays
    up; `start` brings the API back as soon as authz is healthy."""
    stack.compose("stop", "authz")
    try:
        stopped = stack.get("/api/me", headers=bearer(token))
        assert stopped.status_code == 503, stopped.text
        assert stack.get("/api/health").status_code == 200
    finally:
        stack.compose("start", "authz")
    assert until(lambda: stack.healthy("authz"), timeout=60)
    assert until(lambda: stack.get("/api/me", headers=bearer(token)).status_code == 200, timeout=30)


def test_one_of_two_authz_replicas_killed_under_load_costs_no_more_than_the_retries(stack: Compose, token: str):
    """`up --scale authz=2`, then one replica killed while Checks flow (anonymous ones on the optional home feed, so
    the per-caller limit holds nothing back): Envoy retries what the dead one refused on the other and ejects it, so
    at most a few requests fail (the retry budget), and the stack goes back to one."""
    stack.compose("up", "--detach", "--no-deps", "--no-recreate", "--wait", "--scale", "authz=2", "authz", timeout=180)
    try:
        assert len(stack.containers("authz")) == 2
        # Envoy resolves `authz` anew every 5 s (STRICT_DNS): both replicas take Checks once it has.
        time.sleep(6)
        statuses: Counter[int] = Counter()
        stop = threading.Event()

        def load() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    try:
                        statuses[session.get(stack.url + "/api/activities/home", timeout=5).status_code] += 1
                    except requests.RequestException:
                        statuses[0] += 1

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(2)
        victim = stack.containers("authz")[0]
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
        time.sleep(4)
        stop.set()
        for worker in workers:
            worker.join()
        failures = sum(count for status, count in statuses.items() if status != 200)
        print(f"one of two replicas killed under load: {dict(statuses)}")
        assert statuses[200] > 100 and failures <= 3, statuses
    finally:
        stack.compose("up", "--detach", "--no-deps", "--wait", "--scale", "authz=1", "authz", timeout=180)
    assert until(lambda: stack.get("/api/me", headers=bearer(token)).status_code == 200, timeout=30)


# ------------------------------------------------------------------------------------ the shared state (Redis)


def _cognito(stack: Compose, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """A user-pool call as the pages make it: through Envoy's /cognito/ route to the emulator."""
    response = requests.post(
        stack.url + "/cognito/",
        json=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"AWSCognitoIdentityProviderService.{action}",
        },
        timeout=10,
    )
    assert response.status_code == 200, (action, response.status_code, response.text)
    return response.json() if response.content else {}


def _new_user_token(stack: Compose) -> str:
    """A visitor of its own (signed up, confirmed and signed in as the pages do it): its access token. A sign-out
    here then touches no other test's caller."""
    client_id = stack.get("/web/config.json").json()["clientId"]
    name = f"visitor-{time.time_ns()}@example.com"  # the pool signs in by email, as the seed's does
    password = "Correct-Horse-9-battery"
    _cognito(
        stack,
        "SignUp",
        {
            "ClientId": client_id,
            "Username": name,
            "Password": password,
            "UserAttributes": [{"Name": "email", "Value": name}],
        },
    )
    _cognito(stack, "ConfirmSignUp", {"ClientId": client_id, "Username": name, "ConfirmationCode": "123456"})
    signed_in = _cognito(
        stack,
        "InitiateAuth",
        {
            "ClientId": client_id,
            "AuthFlow": "USER_PASSWORD_AUTH",
            "AuthParameters": {"USERNAME": name, "PASSWORD": password},
        },
    )
    return str(signed_in["AuthenticationResult"]["AccessToken"])


def _refused_within(stack: Compose, token: str, seconds: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if stack.get("/api/me", headers=bearer(token)).status_code == 401:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def test_the_pages_sign_out_on_every_authz_replica(stack: Compose):
    """The pages are told the sign-out route, and a POST there with a token answers 204, after which that token is
    refused (401 "token revoked") by both authz replicas at once, while another user's token goes on working."""
    assert stack.get("/web/config.json").json()["signOutPath"] == "/api/sign-out"
    stack.compose("up", "--detach", "--no-deps", "--no-recreate", "--wait", "--scale", "authz=2", "authz", timeout=180)
    try:
        time.sleep(6)  # Envoy resolves `authz` anew every 5 s: both replicas take Checks once it has
        leaving, staying = _new_user_token(stack), _new_user_token(stack)
        assert stack.get("/api/me", headers=bearer(leaving)).status_code == 200
        signed_out = requests.post(stack.url + "/api/sign-out", headers=bearer(leaving), timeout=10)
        assert signed_out.status_code == 204, signed_out.text
        refusals = [stack.get("/api/me", headers=bearer(leaving)) for _ in range(10)]
        assert {(r.status_code, r.headers["www-authenticate"].endswith('"token revoked"')) for r in refusals} == {
            (401, True)
        }
        assert stack.get("/api/me", headers=bearer(staying)).status_code == 200
    finally:
        stack.compose("up", "--detach", "--no-deps", "--wait", "--scale", "authz=1", "authz", timeout=180)


def test_a_revoke_is_enforced_within_a_second_and_outlives_a_redis_restart(stack: Compose):
    """`python -m authz revoke --token -` inside the authz container refuses that token through Envoy within a
    second; Redis restarted (its append-only file on the volume) and authz restarted after it, the token is still
    refused, and a token of a later sign-in is not."""
    token = _new_user_token(stack)
    assert stack.get("/api/me", headers=bearer(token)).status_code == 200
    revoked = subprocess.run(
        ["docker", "compose", "exec", "-T", "authz", "python", "-m", "authz", "revoke", "--token", "-"],
        input=token,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert token not in revoked.stdout
    elapsed = _refused_within(stack, token, 5.0)
    assert elapsed is not None and elapsed < 1.0, elapsed
    stack.compose("restart", "redis", timeout=120)
    stack.compose("restart", "authz", timeout=120)
    assert until(lambda: stack.healthy("redis") and stack.healthy("authz"), timeout=60)
    assert until(lambda: stack.get("/api/health").status_code == 200, timeout=30)
    assert stack.get("/api/me", headers=bearer(token)).status_code == 401
    assert until(lambda: stack.get("/api/me", headers=bearer(_new_user_token(stack))).status_code == 200, timeout=30)
