"""Cognito's newer tokens through a real Envoy and authz (README, Users and app clients, Audiences, Custom claims, A
rate limit per caller): an app client's own token from the emulator's GetClientToken, a user's token bound to a
resource or carrying custom claims (the emulator's token, re-signed with its key after its claims are changed: a
token the pool could have issued), each allowed or refused for its reason, with what the upstream receives; and one
user flooding an Envoy with a per-caller limit gets 429 while another goes on.

The module runs its own authz, with a route table whose rules differ by host and with AUTHZ_CLAIM_HEADERS, and its
own Envoy, in front of an upstream that records what it receives; Cognito is the session's emulator.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from envoy import bootstrap
from stack.cognito import REPORTS_READ, client_token, provision_machine_client
from stack.local import LocalStack, envoy_process
from stack.processes import ManagedProcess, free_ports
from tests.conftest import wait_for
from tests.integration.cruddur_api import RecordingUpstream, User, access_log, bearer, get, resign
from tests.integration.test_identity_values import json_401

ROUTES = """\
default: {auth: required}
routes:
  - match: {path: /api/activities/home}
    auth: optional
  - match: {prefix: /api, hosts: [reports.cruddur.test]}
    principal: client
    scopes: [reports-api/read]
  - match: {prefix: /api, hosts: [people.cruddur.test]}
    principal: user
  - match: {prefix: /api, hosts: [bound.cruddur.test]}
    audiences: [https://api.cruddur.test]
  - match: {prefix: /api, hosts: [pro.cruddur.test]}
    claims: {custom:plan: {one_of: [pro, team]}, custom:tenant_id: {present: true}}
"""
CLAIM_HEADERS = "custom:tenant_id=x-user-tenant,custom:plan=x-user-plan,custom:roles=x-user-roles"
RATE = 3


@dataclass
class Kinds:
    stack: LocalStack
    upstream: RecordingUpstream
    machine_token: str
    machine_id: str

    def ask(self, host: str, token: str | None, path: str = "/api/me") -> tuple[requests.Response, dict[str, str]]:
        """The response through Envoy, and the headers the upstream received (empty when it received nothing)."""
        before = len(self.upstream.requests)
        headers = {"Host": host, **(bearer(token) if token else {})}
        response = get(self.stack, path, headers=headers)
        received = self.upstream.requests[before:]
        return response, received[-1].headers if received else {}


@pytest.fixture(scope="module")
def kinds(stack: LocalStack, cognito: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kinds]:
    run_dir = tmp_path_factory.mktemp("token-kinds")
    routes = run_dir / "routes.yaml"
    routes.write_text(ROUTES)
    machine = provision_machine_client(cognito, stack.cognito_env["AWS_COGNITO_USER_POOLS_ID"])
    with RecordingUpstream() as upstream:
        own = LocalStack(
            ports=dataclasses.replace(stack.ports.beside(), backend=upstream.port),
            run_dir=run_dir,
            routes_file=routes,
            authz_env={"AUTHZ_CLAIM_HEADERS": CLAIM_HEADERS},
            envoy_concurrency=1,
        )
        web_client = stack.cognito_env["AWS_COGNITO_CLIENT_ID"]
        own.use_cognito({**stack.cognito_env, "AWS_COGNITO_CLIENT_ID": f"{web_client},{machine.client_id}"})
        try:
            own.start_authz()
            own.start_envoy()
            yield Kinds(own, upstream, client_token(cognito, machine), machine.client_id)
        finally:
            own.stop()


# ------------------------------------------------------------------------------------------- app clients


def test_an_app_clients_own_token_reaches_its_route_and_says_client(kinds: Kinds):
    """The emulator's GetClientToken token: allowed where principal: client and its scope are demanded, the upstream
    told x-user-principal client with the client's id as sub and no name or groups, even when a client sent some."""
    response, received = kinds.ask("reports.cruddur.test", kinds.machine_token)
    assert response.status_code == 200, response.text[:300]
    assert received["x-user-principal"] == "client"
    assert received["x-user-sub"] == received["x-user-client-id"] == kinds.machine_id
    assert received["x-user-scopes"] == REPORTS_READ
    forged = {
        "Host": "reports.cruddur.test",
        "x-user-name": "admin",
        "x-user-groups": "admins",
        **bearer(kinds.machine_token),
    }
    before = len(kinds.upstream.requests)
    assert get(kinds.stack, "/api/me", headers=forged).status_code == 200
    headers = kinds.upstream.requests[before].headers
    assert "x-user-name" not in headers and "x-user-groups" not in headers


def test_a_client_token_is_403_where_only_users_may_call_and_a_user_token_where_only_clients(kinds: Kinds, user: User):
    """principal: user turns the app client away, principal: client the user: 403 insufficient_scope, and the
    upstream receives nothing."""
    for host, token in (("people.cruddur.test", kinds.machine_token), ("reports.cruddur.test", user.access_token)):
        response, received = kinds.ask(host, token)
        assert response.status_code == 403 and not received
        assert response.json() == {"error": "insufficient_scope", "message": "this kind of caller is not allowed here"}
    response, received = kinds.ask("people.cruddur.test", user.access_token)
    assert response.status_code == 200 and received["x-user-principal"] == "user"


# --------------------------------------------------------------------------------------------- audiences


def test_a_token_bound_to_the_routes_resource_passes_and_others_get_401(kinds: Kinds, user: User):
    """audiences: the user's token bound to the resource passes; bound elsewhere, or to nothing, 401 the client can
    read (ask for a token for this resource)."""
    bound = resign(user.access_token, aud="https://api.cruddur.test")
    assert kinds.ask("bound.cruddur.test", bound)[0].status_code == 200
    for token in (resign(user.access_token, aud="https://other.cruddur.test"), user.access_token):
        json_401(kinds.ask("bound.cruddur.test", token)[0], "token not issued for this resource")


# ------------------------------------------------------------------------------------------ custom claims


def test_claim_conditions_admit_only_their_values(kinds: Kinds, user: User):
    """claims: a plan of pro or team with a tenant passes; another plan, a missing tenant or the plan in another type
    is 403 claim_mismatch."""
    passing = resign(user.access_token, **{"custom:plan": "team", "custom:tenant_id": "t-1"})
    assert kinds.ask("pro.cruddur.test", passing)[0].status_code == 200
    for claims in (
        {"custom:plan": "free", "custom:tenant_id": "t-1"},
        {"custom:plan": "pro"},
        {"custom:plan": ["pro"], "custom:tenant_id": "t-1"},
    ):
        response, received = kinds.ask("pro.cruddur.test", resign(user.access_token, **claims))
        assert response.status_code == 403 and not received, claims
        assert response.json() == {"error": "insufficient_scope", "message": "token lacks a required claim value"}


@pytest.mark.parametrize(
    "claims, expected",
    [
        ({"custom:tenant_id": "t-42", "custom:plan": "pro"}, {"x-user-tenant": "t-42", "x-user-plan": "pro"}),
        ({"custom:tenant_id": 42, "custom:plan": True}, {"x-user-tenant": "42", "x-user-plan": "true"}),
        ({"custom:roles": ["editor", "viewer"]}, {"x-user-roles": "editor,viewer"}),
        ({"custom:tenant_id": {"id": "t-42"}, "custom:roles": ["a", 1]}, {}),
        ({"custom:plan": "pro\r\nx-user-sub: victim", "custom:tenant_id": " t-42"}, {}),
        ({"custom:plan": None, "custom:roles": []}, {}),
    ],
    ids=["strings", "number-and-boolean", "string-list", "object-and-mixed-list", "hostile-strings", "null-and-empty"],
)
def test_mapped_claims_reach_the_upstream_whole_or_not_at_all(
    kinds: Kinds, user: User, claims: dict[str, Any], expected: dict[str, str]
):
    """AUTHZ_CLAIM_HEADERS through Envoy: each value the upstream receives is the claim's, and a header whose claim
    is missing, of another type or unsafe does not arrive, also when the client sent its own copy."""
    token = resign(user.access_token, **claims)
    forged = dict.fromkeys(("x-user-tenant", "x-user-plan", "x-user-roles"), "forged")
    before = len(kinds.upstream.requests)
    response = get(kinds.stack, "/api/me", headers={"Host": "api.cruddur.test", **forged, **bearer(token)})
    assert response.status_code == 200, response.text[:300]
    received = kinds.upstream.requests[before].headers
    assert {name: received[name] for name in forged if name in received} == expected
    assert received["x-user-sub"] == user.sub


# ---------------------------------------------------------------------------------------- the rate limit


@pytest.fixture(scope="module")
def limited(kinds: Kinds, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ManagedProcess]]:
    """An Envoy with a per-caller limit of RATE requests a second, in front of the module's authz and upstream."""
    envoy_port, admin_port = free_ports(2)
    topology = dataclasses.replace(
        kinds.stack.topology(envoy_port=envoy_port, admin_port=admin_port), user_rate_limit=RATE
    )
    run_dir = tmp_path_factory.mktemp("rate-limit")
    envoy = envoy_process(
        "envoy", bootstrap.render(topology), run_dir, envoy_port=envoy_port, admin_port=admin_port, concurrency=1
    )
    with envoy:
        yield f"http://127.0.0.1:{envoy_port}", envoy


def test_one_user_flooding_gets_429_while_another_user_goes_on(limited: tuple[str, ManagedProcess], user: User):
    """Past RATE requests in a second, the flooding user gets 429 with x-ratelimit headers; a second user, and
    anonymous callers of a public route, are not held back; the access log names the flooding caller."""
    url, envoy = limited
    flooding_sub = f"flood-{time.monotonic_ns()}"
    flooder = resign(user.access_token, sub=flooding_sub)
    other = resign(user.access_token, sub=f"calm-{time.monotonic_ns()}")
    statuses: list[int] = []
    # The bucket starts full (RATE) and gains RATE a second: a 429 comes once requests outrun that, however slow
    # the machine is.
    while 429 not in statuses and len(statuses) < RATE * 50:
        response = requests.get(url + "/api/me", headers=bearer(flooder), timeout=10)
        statuses.append(response.status_code)
    assert statuses[:RATE] == [200] * RATE and statuses[-1] == 429, statuses
    assert response.headers["x-ratelimit-limit"] == str(RATE) and response.headers["x-ratelimit-remaining"] == "0"
    assert requests.get(url + "/api/me", headers=bearer(other), timeout=10).status_code == 200
    anonymous = [requests.get(url + "/api/activities/home", timeout=10).status_code for _ in range(RATE * 2)]
    assert anonymous == [200] * (RATE * 2)
    # Envoy flushes its access log each second.
    assert wait_for(lambda: len(_refused(envoy)) == statuses.count(429), timeout=5)
    assert {line["user"] for line in _refused(envoy)} == {flooding_sub}


def _refused(envoy: ManagedProcess) -> list[dict[str, Any]]:
    """The access log's 429 lines so far."""
    return [line for line in access_log(envoy) if str(line.get("status")) == "429"]
