"""A real server on port 0 driven through real channels: health, Checks, reflection (grpcurl), metrics, shutdown,
and what a client sees when Cognito says a token is active, revoked, or says nothing in time (revocation)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from grpc_health.v1 import health_pb2

from authz.client import check
from authz.config import IssuerFormats, Settings, make_pool
from authz.errors import UntrustedIssuer
from authz.revocation import Status
from authz.routes import RoutesError
from authz.server import RunningServer, build_verifier, run_server
from tests.conftest import (
    CLIENT_ID,
    IDENTITY_HEADERS,
    KID,
    NOW,
    POOL_ID,
    FakeClock,
    JwksServer,
    ScriptedLookup,
    access_claims,
    client_claims,
    health_status,
    id_claims,
    jwks_document,
    mint,
    private_key,
    public_jwk,
    settings_for,
    static_fetcher,
    throttled,
    wait_for,
)

SUB = access_claims()["sub"]
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


@pytest.fixture
def running(jwks_server: JwksServer) -> Iterator[RunningServer]:
    with run_server(settings_for(jwks_server.url), clock=FakeClock()) as server:
        assert wait_for(lambda: server.refresher.ready)
        yield server


def test_health_is_not_serving_until_keys_load_then_serving(jwks_server):
    """With the JWKS down at start the server is NOT_SERVING and denies Checks 503 until it recovers by itself."""
    jwks_server.status = 500
    with run_server(settings_for(jwks_server.url, jwks_cooldown_seconds=0), clock=FakeClock()) as server:
        assert health_status(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (
            health_status(server.port, "envoy.service.auth.v3.Authorization")
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        denied = check(f"127.0.0.1:{server.port}", token=mint())
        assert (denied["allowed"], denied["http_status"]) == (False, 503)
        jwks_server.status = 200
        assert wait_for(lambda: health_status(server.port) == health_pb2.HealthCheckResponse.SERVING)
        assert check(f"127.0.0.1:{server.port}", token=mint())["allowed"]


def test_real_channel_check_allows_and_denies(running):
    """Through a real gRPC channel a valid token is allowed with x-user-sub, a tampered one denied 401."""
    addr = f"127.0.0.1:{running.port}"
    allowed = check(addr, token=mint(), path="/api/me")
    assert allowed["allowed"] and allowed["upstream_headers"]["x-user-sub"] == access_claims()["sub"]
    header, _, signature = mint().split(".")
    tampered = f"{header}.{mint(access_claims(sub='someone-else')).split('.')[1]}.{signature}"
    denied = check(addr, token=tampered, path="/api/me")
    assert (denied["allowed"], denied["http_status"]) == (False, 401)
    assert 'error="invalid_token"' in denied["response_headers"]["www-authenticate"]


def test_health_reports_serving_once_keys_are_loaded(running):
    """Once every pool's keys are loaded, overall and Authorization health are SERVING."""
    assert health_status(running.port) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(running.port, "envoy.service.auth.v3.Authorization") == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl is installed by make setup")
def test_grpcurl_lists_services_and_checks_by_reflection(running):
    """grpcurl needs no proto files: reflection lists the services and a Check with -d gets a decision."""
    assert GRPCURL is not None
    addr = f"127.0.0.1:{running.port}"
    listed = subprocess.run([GRPCURL, "-plaintext", addr, "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) >= {"envoy.service.auth.v3.Authorization", "grpc.health.v1.Health"}
    body = {
        "attributes": {
            "request": {"http": {"path": "/api/me", "headers": {"authorization": f"Bearer {mint()}"}}},
            "contextExtensions": {"auth": "required"},
        }
    }
    checked = subprocess.run(
        [GRPCURL, "-plaintext", "-d", json.dumps(body), addr, "envoy.service.auth.v3.Authorization/Check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    response = json.loads(checked.stdout)
    headers = {h["header"]["key"]: h["header"]["value"] for h in response["ok_response"]["headers"]}
    assert headers["x-user-sub"] == access_claims()["sub"]


def test_metrics_endpoint_counts_decisions_and_keys(running):
    """The Prometheus endpoint shows decisions by result and reason, cache lookups and sizes, and loaded keys."""
    addr = f"127.0.0.1:{running.port}"
    check(addr, token=mint())
    check(addr, token=mint())
    check(addr)
    check(addr, token=mint(access_claims(exp=NOW - 3600)))
    text = requests.get(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=5).text
    assert (
        'authz_decisions_total{client="4f1client0allowed0000000",pool="ca-central-1_AbC123",reason="ok",result="allow"} 2.0'
        in text
    )
    assert 'authz_decisions_total{client="",pool="",reason="missing_token",result="deny"} 1.0' in text
    assert 'authz_token_cache_total{result="hit"} 1.0' in text
    assert 'authz_jwks_keys_loaded{pool="ca-central-1_AbC123"} 1.0' in text
    assert 'authz_jwks_fetches_total{outcome="ok",pool="ca-central-1_AbC123"}' in text
    assert "authz_check_duration_seconds_count 4.0" in text
    assert 'authz_token_cache_entries{cache="verified"} 1.0' in text
    assert 'authz_token_cache_entries{cache="rejected"} 1.0' in text


def test_rotated_key_is_accepted_without_restart(jwks_server):
    """A token signed with a newly published kid is accepted after one refetch, with no restart."""
    monotonic = FakeClock(1000.0)
    with run_server(settings_for(jwks_server.url), clock=FakeClock(), monotonic=monotonic) as server:
        assert wait_for(lambda: server.refresher.ready)
        new_key = private_key("rotated")
        jwks_server.body = jwks_document(public_jwk(private_key()), public_jwk(new_key, kid="kid-2026-2"))
        monotonic.advance(11)  # past the 10 s refetch cooldown that started with the first fetch
        assert check(f"127.0.0.1:{server.port}", token=mint(key=new_key, kid="kid-2026-2"))["allowed"]


def test_shutdown_lets_in_flight_checks_finish(jwks_server):
    """On stop, a Check already in progress (here waiting on a slow JWKS refetch) completes with its decision."""
    new_key = private_key("rotated")
    results: list[dict] = []
    monotonic = FakeClock(1000.0)
    settings = settings_for(jwks_server.url, shutdown_grace_seconds=5.0)
    with run_server(settings, clock=FakeClock(), monotonic=monotonic) as server:
        assert wait_for(lambda: server.refresher.ready)
        monotonic.advance(11)
        fetches = jwks_server.requests
        jwks_server.body = jwks_document(public_jwk(private_key()), public_jwk(new_key, kid="kid-slow"))
        jwks_server.delay = 0.5
        caller = threading.Thread(
            target=lambda: results.append(check(f"127.0.0.1:{server.port}", token=mint(key=new_key, kid="kid-slow")))
        )
        caller.start()
        assert wait_for(lambda: jwks_server.requests > fetches)
    caller.join(timeout=10)
    assert results and results[0]["allowed"]


def test_unknown_kid_flood_fetches_at_most_once_per_cooldown(jwks_server):
    """Many tokens with unknown kids cause one JWKS refetch per cooldown, not one per Check."""
    monotonic = FakeClock(1000.0)
    with run_server(settings_for(jwks_server.url), clock=FakeClock(), monotonic=monotonic) as server:
        assert wait_for(lambda: server.refresher.ready)
        addr = f"127.0.0.1:{server.port}"
        monotonic.advance(11)
        fetches = jwks_server.requests
        for index in range(20):
            assert check(addr, token=mint(kid=f"unknown-{index}"))["http_status"] == 401
        assert jwks_server.requests - fetches == 1
        monotonic.advance(11)
        assert check(addr, token=mint(kid="unknown-after-cooldown"))["http_status"] == 401
        assert jwks_server.requests - fetches == 2
        assert check(addr, token=mint(kid=KID))["allowed"]


# ------------------------------------------------------------------------------------------- revocation


@contextmanager
def serving(lookup: ScriptedLookup, **overrides: Any) -> Iterator[RunningServer]:
    """A real server on loopback ports whose pool keys come from memory and whose GetUser is `lookup`."""
    settings = settings_for("https://jwks.invalid/{pool}/.well-known/jwks.json", **overrides)
    with run_server(
        settings, fetcher=static_fetcher(jwks_document()), clock=FakeClock(), revocation_lookup=lookup
    ) as server:
        assert wait_for(lambda: server.refresher.ready)
        yield server


def addr(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


def sample(server: RunningServer, name: str, **labels: str) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def test_server_allows_a_token_cognito_says_is_active(lookups):
    """With AUTHZ_REVOCATION=cognito, a token GetUser accepts is allowed with its identity headers, asked once."""
    lookup = lookups(Status.ACTIVE)
    token = mint()
    with serving(lookup, revocation="cognito") as server:
        first = check(addr(server), token=token, path="/api/me")
        second = check(addr(server), token=token, path="/api/me")
        assert sample(server, "authz_revocation_lookups_total", outcome="active") == 1.0

    assert first["allowed"] and first["upstream_headers"]["x-user-sub"] == SUB
    assert second == first
    assert lookup.calls == [(POOL_ID, token)]


def test_server_denies_a_revoked_token_401_and_counts_it(lookups):
    """A token Cognito no longer honours is a 401 invalid_token "token revoked", with no identity for the
    upstream, and the metrics endpoint shows the revoked lookup and the token_revoked decision."""
    lookup = lookups(Status.REVOKED)
    with serving(lookup, revocation="cognito", realm="cruddur") as server:
        denied = check(addr(server), token=mint(), path="/api/me")
        text = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).text

    assert (denied["allowed"], denied["grpc_code"], denied["http_status"]) == (False, 16, 401)
    assert denied["response_headers"] == {
        "www-authenticate": 'Bearer realm="cruddur", error="invalid_token", error_description="token revoked"',
        "content-type": "application/json",
    }
    assert json.loads(denied["body"]) == {"error": "invalid_token", "message": "token revoked"}
    assert "upstream_headers" not in denied and not IDENTITY_HEADERS & set(denied["response_headers"])
    assert 'authz_revocation_lookups_total{outcome="revoked"} 1.0' in text
    assert (
        f'authz_decisions_total{{client="{CLIENT_ID}",pool="{POOL_ID}",reason="token_revoked",result="deny"}} 1.0'
        in text
    )
    assert "authz_revocation_cache_entries 1.0" in text


@pytest.mark.parametrize("on_error", ["allow", "deny"])
def test_server_applies_the_error_policy_when_cognito_fails(lookups, on_error):
    """Cognito throttling: AUTHZ_REVOCATION_ON_ERROR=allow lets the token through, deny answers 503
    revocation_unavailable with no invalid_token challenge (the client's token is not at fault)."""
    with serving(lookups(throttled()), revocation="cognito", revocation_on_error=on_error) as server:
        answer = check(addr(server), token=mint())
        assert sample(server, "authz_revocation_lookups_total", outcome="unknown") == 1.0
        assert sample(server, "authz_revocation_unconfirmed_total", action=on_error) == 1.0
        if on_error == "allow":  # the decision says it was made on the JWT alone
            labels = {"result": "allow", "reason": "ok_unconfirmed", "pool": POOL_ID, "client": CLIENT_ID}
            assert sample(server, "authz_decisions_total", **labels) == 1.0

    if on_error == "allow":
        assert answer["allowed"] and answer["upstream_headers"]["x-user-sub"] == SUB
    else:
        assert (answer["allowed"], answer["grpc_code"], answer["http_status"]) == (False, 14, 503)
        assert answer["response_headers"] == {"content-type": "application/json"}
        assert json.loads(answer["body"]) == {
            "error": "revocation_unavailable",
            "message": "cannot confirm the token with the identity provider",
        }


@pytest.mark.parametrize("on_error", ["allow", "deny"])
def test_server_answers_in_time_when_cognito_never_does(lookups, on_error):
    """A GetUser that hangs forever does not hang the Check: it is decided by the error policy within the
    revocation timeout (plus a generous margin)."""
    lookup = lookups(Status.ACTIVE, blocked=True)  # released at teardown
    with serving(lookup, revocation="cognito", revocation_on_error=on_error, revocation_timeout_seconds=0.1) as server:
        started = time.monotonic()
        answer = check(addr(server), token=mint())
        elapsed = time.monotonic() - started

    assert elapsed < 0.1 + 0.5
    assert lookup.count == 1
    if on_error == "allow":
        assert answer["allowed"]
    else:
        assert (answer["allowed"], answer["http_status"]) == (False, 503)


def test_server_never_asks_about_tokens_cognito_cannot_confirm(lookups):
    """An id token (on a token_use=any route) and an access token without the admin scope are allowed on the
    JWT alone, even though GetUser would call them revoked."""
    lookup = lookups(Status.REVOKED)
    with serving(lookup, revocation="cognito") as server:
        id_token = check(addr(server), token=mint(id_claims()), context={"token_use": "any"})
        client_token = check(addr(server), token=mint(access_claims(scope="api/read")))

    assert id_token["allowed"] and id_token["upstream_headers"]["x-user-token-use"] == "id"
    assert client_token["allowed"] and client_token["upstream_headers"]["x-user-scopes"] == "api/read"
    assert lookup.calls == []


def test_server_route_skip_overrides_cognito_mode(lookups):
    """revocation=skip on a route makes no GetUser call there, while other routes still check."""
    lookup = lookups(Status.REVOKED)
    token = mint()
    with serving(lookup, revocation="cognito") as server:
        skipped = check(addr(server), token=token, context={"revocation": "skip"})
        assert lookup.calls == []
        checked = check(addr(server), token=token)

    assert skipped["allowed"]
    assert (checked["allowed"], checked["http_status"]) == (False, 401)
    assert lookup.count == 1


def test_server_route_check_works_with_revocation_off(lookups):
    """With AUTHZ_REVOCATION=off nothing is confirmed, except on routes that say revocation=check."""
    lookup = lookups(Status.REVOKED)
    token = mint()
    with serving(lookup, revocation="off") as server:
        default = check(addr(server), token=token)
        assert lookup.calls == []
        checked = check(addr(server), token=token, context={"revocation": "check"})

    assert default["allowed"]
    assert (checked["allowed"], checked["http_status"]) == (False, 401)
    assert 'error_description="token revoked"' in checked["response_headers"]["www-authenticate"]
    assert lookup.calls == [(POOL_ID, token)]


def test_server_remembers_answers_through_the_leeway_window(lookups):
    """A token past exp but within AUTHZ_LEEWAY_SECONDS is confirmed once, not once per Check."""
    lookup = lookups(Status.REVOKED)
    just_expired = mint(access_claims(exp=int(NOW) - 5))
    with serving(lookup, revocation="cognito", leeway_seconds=30) as server:
        answers = [check(addr(server), token=just_expired) for _ in range(3)]

    assert [answer["http_status"] for answer in answers] == [401, 401, 401]
    assert lookup.count == 1


def test_server_rejects_a_bad_route_revocation_value(lookups):
    """A route with revocation=yes is denied 403 route_misconfigured, and Cognito is not asked."""
    lookup = lookups(Status.ACTIVE)
    with serving(lookup, revocation="cognito") as server:
        denied = check(addr(server), token=mint(), context={"revocation": "yes"})

    assert (denied["allowed"], denied["http_status"]) == (False, 403)
    assert json.loads(denied["body"])["error"] == "route_misconfigured"
    assert lookup.calls == []


# ------------------------------------------------------------------------------------------------ route table

ROUTES = """\
routes:
  - match: {path: /api/health}
    auth: none
  - match: {prefix: /api/admin}
    groups: [admins]
"""


def _rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = path.stat().st_mtime_ns + 1_000_000
    os.utime(path, ns=(stamp, stamp))


def test_a_server_with_a_route_table_decides_checks_without_context_extensions_by_it(jwks_server, tmp_path):
    """AUTHZ_ROUTES: Checks without context_extensions follow the table, which is reloaded within the interval when
    the file changes (and a broken file changes nothing); the table in force and the reloads are in the metrics."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    settings = settings_for(jwks_server.url, routes_file=str(routes), routes_reload_seconds=0.1)
    with run_server(settings, clock=FakeClock()) as server:
        assert wait_for(lambda: server.refresher.ready)
        target = f"127.0.0.1:{server.port}"
        assert check(target, path="/api/health")["allowed"]  # public
        assert check(target, path="/api/me")["http_status"] == 401  # the default: a token required
        assert check(target, token=mint(), path="/api/admin/x")["http_status"] == 403  # not in admins
        assert check(target, token=mint(), path="/api/admin/x", context={"auth": "required"})["allowed"]
        [(info_labels, _)] = [
            (sample.labels, sample.value)
            for metric in server.metrics.routes_info.collect()
            for sample in metric.samples
            if sample.value == 1
        ]
        assert info_labels["rules"] == "2"

        _rewrite(routes, ROUTES.replace("groups: [admins]", "auth: optional"))
        assert wait_for(lambda: check(target, path="/api/admin/x")["allowed"], timeout=5)
        assert sample(server, "authz_routes_reloads_total", result="ok") == 1

        _rewrite(routes, "routes:\n  - match: {path: /api/health}\n    auth: nonsense\n")
        assert wait_for(lambda: sample(server, "authz_routes_reloads_total", result="error") == 1, timeout=5)
        assert check(target, path="/api/admin/x")["allowed"]  # the last good table stays in force
        assert check(target, path="/api/health")["allowed"]


def test_a_route_table_that_cannot_be_used_stops_the_server_from_starting(jwks_server, tmp_path):
    """A missing or invalid AUTHZ_ROUTES file raises RoutesError at start (the CLI exits 2 with it)."""
    broken = tmp_path / "routes.yaml"
    broken.write_text("routes:\n  - match: {path: /x}\n    group: [admins]\n")
    for path in (broken, tmp_path / "missing.yaml"):
        with (
            pytest.raises(RoutesError),
            run_server(settings_for(jwks_server.url, routes_file=str(path)), clock=FakeClock()),
        ):
            pass


# ------------------------------------------------------------------------------------------- issuer formats

REGION = POOL_ID.split("_")[0]
ORIGINAL = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL_ID}"
UPDATED = f"https://issuer-cognito-idp.{REGION}.amazonaws.com/{POOL_ID}"


def verifier_for(formats: IssuerFormats = IssuerFormats.BOTH, replicas: tuple[str, ...] = ()) -> tuple[Any, list]:
    """The server's verifier for one pool configured as Settings.from_env would, with the pool's real URLs; the
    second value lists the URLs its keys were fetched from."""
    fetched: list[str] = []

    def fetcher(url: str, timeout: float, max_bytes: int) -> bytes:
        fetched.append(url)
        return jwks_document()

    pool = make_pool(POOL_ID, formats=formats, replica_regions=replicas)
    settings = Settings(pools=(pool,), client_ids=frozenset({CLIENT_ID}))
    verifier, caches = build_verifier(settings, fetcher=fetcher, clock=FakeClock())
    assert all(cache.refresh() for cache in caches)
    return verifier, fetched


@pytest.mark.parametrize(
    "formats, replicas, iss",
    [
        (IssuerFormats.BOTH, (), ORIGINAL),
        (IssuerFormats.BOTH, (), UPDATED),
        (IssuerFormats.ORIGINAL, (), ORIGINAL),
        (IssuerFormats.UPDATED, (), UPDATED),
        (IssuerFormats.BOTH, ("us-west-2",), f"https://cognito-idp.us-west-2.amazonaws.com/{POOL_ID}"),
        (IssuerFormats.ORIGINAL, ("us-west-2",), f"https://cognito-idp.us-west-2.amazonaws.com/{POOL_ID}"),
    ],
    ids=["both-original", "both-updated", "original", "updated", "replica", "original-replica"],
)
def test_a_token_of_each_configured_issuer_verifies_with_the_pools_one_key_set(formats, replicas, iss):
    verifier, fetched = verifier_for(formats, replicas)
    verified = verifier.verify(mint(access_claims(iss=iss, iat=NOW - 10, auth_time=NOW - 10, exp=NOW + 600)))
    assert (verified.pool_id, verified.sub) == (POOL_ID, SUB)
    # One fetch for the pool, from the URL tried first: ORIGINAL's, which serves every pool (UPDATED's for updated).
    assert fetched == [(UPDATED if formats is IssuerFormats.UPDATED else ORIGINAL) + "/.well-known/jwks.json"]


@pytest.mark.parametrize(
    "formats, replicas, iss",
    [
        (IssuerFormats.ORIGINAL, (), UPDATED),
        (IssuerFormats.UPDATED, (), ORIGINAL),
        (IssuerFormats.BOTH, (), f"https://cognito-idp.us-west-2.amazonaws.com/{POOL_ID}"),
        (IssuerFormats.BOTH, ("us-west-2",), f"https://issuer-cognito-idp.us-west-2.amazonaws.com/{POOL_ID}"),
        (IssuerFormats.BOTH, ("us-west-2",), f"https://cognito-idp.eu-west-1.amazonaws.com/{POOL_ID}"),
        (IssuerFormats.BOTH, (), UPDATED + "/"),
        (IssuerFormats.BOTH, (), UPDATED.upper()),
        (IssuerFormats.BOTH, (), UPDATED.replace("issuer-cognito-idp", "Issuer-Cognito-Idp")),
        (IssuerFormats.BOTH, (), UPDATED.replace("https://", "http://")),
        (IssuerFormats.BOTH, (), UPDATED.replace(".com/", ".com:443/")),
        (IssuerFormats.BOTH, (), UPDATED.replace(".com/", ".com.attacker.example/")),
        (IssuerFormats.BOTH, (), UPDATED.replace("issuer-cognito-idp", "issuer.cognito-idp")),
        (IssuerFormats.BOTH, (), UPDATED + "/.well-known/openid-configuration"),
        (IssuerFormats.BOTH, (), f"https://issuer-cognito-idp.{REGION}.amazonaws.com/{POOL_ID}x"),
    ],
    ids=[
        "updated-when-original-only",
        "original-when-updated-only",
        "replica-not-configured",
        "updated-in-a-replica-region",
        "other-replica",
        "trailing-slash",
        "upper-case",
        "mixed-case-host",
        "http",
        "explicit-port",
        "other-host-suffix",
        "dotted-host",
        "longer-path",
        "other-pool",
    ],
)
def test_any_other_issuer_spelling_is_untrusted_and_costs_no_crypto(formats, replicas, iss):
    verifier, _ = verifier_for(formats, replicas)
    with pytest.raises(UntrustedIssuer):
        verifier.verify(mint(access_claims(iss=iss, iat=NOW - 10, auth_time=NOW - 10, exp=NOW + 600)))


def test_a_server_allows_an_updated_issuer_token_and_denies_one_of_another_region(jwks_server):
    """Through the server as it runs (gRPC Check): the pool's UPDATED-format token is allowed by default, the same
    token claiming another Region's UPDATED issuer gets 401."""
    with run_server(settings_for(jwks_server.url), clock=FakeClock()) as server:
        assert wait_for(lambda: server.refresher.ready)
        addr = f"127.0.0.1:{server.port}"
        allowed = check(addr, token=mint(access_claims(iss=UPDATED)), path="/api/me")
        assert allowed["allowed"] and allowed["upstream_headers"]["x-user-sub"] == SUB
        other = UPDATED.replace(REGION, "us-west-2")
        denied = check(addr, token=mint(access_claims(iss=other)), path="/api/me")
        assert (denied["allowed"], denied["http_status"]) == (False, 401)


# ---------------------------------------------------------------- machine tokens, audiences, custom claims

KINDS_ROUTES = """\
routes:
  - match: {prefix: /reports}
    principal: client
    scopes: [reports-api/read]
  - match: {prefix: /api/me}
    principal: user
  - match: {prefix: /bound}
    audiences: [https://api.example.com]
  - match: {prefix: /pro}
    claims: {custom:plan: {one_of: [pro, team]}}
"""


def test_the_server_tells_kinds_audiences_and_claims_apart_as_its_settings_say(jwks_server, tmp_path):
    """Through the server as it runs (gRPC Check, a route table, AUTHZ_CLAIM_HEADERS): an app client's token reaches
    its route and says so, a user's does not, and the reverse; a bound token reaches the bound route, an unbound one
    gets 401; a claim condition admits only its values, even for a token verified before the condition was first
    asked; a mapped claim rides in its header, and one the caller lacks is removed."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(KINDS_ROUTES)
    settings = settings_for(jwks_server.url, routes_file=str(routes), claim_headers=(("custom:plan", "x-user-plan"),))
    client = mint(client_claims(**{"custom:plan": "pro"}))
    user = mint(access_claims(**{"custom:plan": "free"}))
    with run_server(settings, clock=FakeClock()) as server:
        assert wait_for(lambda: server.refresher.ready)
        addr = f"127.0.0.1:{server.port}"

        def status(token: str, path: str) -> int | None:
            answer = check(addr, token=token, path=path)
            return None if answer["allowed"] else answer["http_status"]

        reports = check(addr, token=client, path="/reports/daily")
        assert reports["allowed"] and reports["upstream_headers"]["x-user-principal"] == "client"
        assert reports["upstream_headers"]["x-user-plan"] == "pro"
        assert {"x-user-name", "x-user-groups"} <= set(reports["headers_to_remove"])
        assert status(user, "/reports/daily") == 403
        assert status(user, "/api/me") is None and status(client, "/api/me") == 403
        bound = mint(access_claims(aud="https://api.example.com"))
        assert status(bound, "/bound") is None and status(user, "/bound") == 401
        assert status(client, "/pro") is None and status(user, "/pro") == 403
        me = check(addr, token=user, path="/api/me")
        assert me["upstream_headers"]["x-user-plan"] == "free"
        assert "x-user-plan" in check(addr, token=bound, path="/api/me")["headers_to_remove"]
