"""The bench's own parts work: the floor server answers like an allow, and every verification way really verifies."""

from __future__ import annotations

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

import identity_headers
from authz.client import check
from authz.tokens import TokenVerifier
from bench import route_cost, verify_cost
from bench.floor import SERVICE_NAME, serve_floor
from bench.http_floor import serve_http_floor
from stack.processes import free_ports


def test_floor_allows_every_check_with_seven_identity_headers():
    """Over a real channel the floor answers an anonymous Check with OK and authz's seven x-user-* headers."""
    with serve_floor("127.0.0.1:0") as port:
        answer = check(f"127.0.0.1:{port}", path="/api/me")
    assert answer["allowed"] and answer["grpc_code"] == 0
    # As a real allow of a pool's own user: every header but the identity provider, which is removed.
    assert list(answer["upstream_headers"]) == [
        name for name in identity_headers.header_names() if name != "x-user-idp"
    ]
    assert answer["headers_to_remove"] == ["x-user-idp"]


def test_http_floor_allows_every_request_with_seven_identity_headers_and_reports_healthy():
    """Envoy's HTTP mode asks with the request itself: the HTTP floor answers any of them 200, no body, with
    authz's seven x-user-* headers, and its /healthz (where Envoy health-checks it) answers 200."""
    port, health_port = free_ports(2)
    with serve_http_floor(f"127.0.0.1:{port}", f"127.0.0.1:{health_port}"):
        answer = requests.get(f"http://127.0.0.1:{port}/api/me", headers={"authorization": "Bearer x"}, timeout=5)
        health = requests.get(f"http://127.0.0.1:{health_port}/healthz", timeout=5)
    assert answer.status_code == 200 and answer.content == b""
    names = [name.lower() for name in answer.headers]
    assert [name for name in names if name.startswith("x-user-")] == [
        name for name in identity_headers.header_names() if name != "x-user-idp"
    ]
    assert health.status_code == 200


def test_floor_reports_serving_for_overall_and_authorization_health():
    """Envoy's grpc.health.v1 checks see SERVING, overall and for the Authorization service."""
    with serve_floor("127.0.0.1:0") as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_measure_reports_a_positive_cost_for_each_way():
    """A small run yields microseconds per token for ours, the floor and the seed."""
    result = verify_cost.measure(tokens=50, rounds=1)
    assert set(result) == {"verify_us_ours", "verify_us_floor", "verify_us_seed"}
    assert all(value > 0 for value in result.values())


def test_every_way_accepts_valid_tokens_and_rejects_forged_ones():
    """Each way accepts all valid tokens and rejects every token carrying another token's signature."""
    assert verify_cost.verdicts(tokens=20) == dict.fromkeys(("ours", "floor", "seed"), (20, 20))


def test_measure_fails_when_a_verifier_accepts_anything(monkeypatch):
    """A verifier that stopped checking signatures aborts the measurement instead of looking fast."""
    monkeypatch.setattr(TokenVerifier, "verify", lambda self, token: None)
    with pytest.raises(verify_cost.VerificationFailed, match="ours accepted"):
        verify_cost.measure(tokens=4, rounds=1)


def test_measure_fails_when_a_verifier_rejects_valid_tokens(monkeypatch):
    """A verifier that rejects valid tokens aborts the measurement instead of reporting a time."""

    def reject(self, token):
        raise RuntimeError("broken")

    monkeypatch.setattr(TokenVerifier, "verify", reject)
    with pytest.raises(verify_cost.VerificationFailed, match="ours rejected"):
        verify_cost.measure(tokens=4, rounds=1)


def test_route_cost_measures_every_way_and_refuses_a_table_whose_last_rule_does_not_decide(monkeypatch):
    """bench.route_cost reports each way in microseconds, and aborts when its measured requests would not be
    decided by the table's last rule (a table that matched early would pass for a cheap one)."""
    result = route_cost.measure(checks=50, rounds=1)
    assert set(result) == {
        "check_us_context_extensions",
        "check_us_table_seen",
        "check_us_table_new_path",
        "match_us_50_rules_new_path",
        "match_us_50_rules_new_path_one_segment",
    }
    assert all(value > 0 for value in result.values())
    monkeypatch.setattr(route_cost, "table_text", lambda **_: "routes:\n  - match: {prefix: /api}\n")
    with pytest.raises(route_cost.CheckFailed):
        route_cost.measure(checks=5, rounds=1)
