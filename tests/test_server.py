"""A real server on port 0 driven through real channels: health, Checks, reflection (grpcurl), metrics, shutdown."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from grpc_health.v1 import health_pb2

from authz.client import check
from authz.server import RunningServer, run_server
from tests.conftest import (
    KID,
    NOW,
    FakeClock,
    JwksServer,
    access_claims,
    health_status,
    jwks_document,
    mint,
    private_key,
    public_jwk,
    settings_for,
    wait_for,
)

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
    header, payload, signature = mint().split(".")
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
