"""The stack's transport setting: AUTHZ_TRANSPORT, and the Envoy a stack renders for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoy import bootstrap
from stack.local import LocalStack, Ports, transport_from_env


@pytest.mark.parametrize(("value", "expected"), [(None, "grpc"), ("", "grpc"), ("grpc", "grpc"), ("http", "http")])
def test_authz_transport_comes_from_the_environment_and_defaults_to_grpc(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str
):
    """AUTHZ_TRANSPORT picks the transport; unset or empty is gRPC, and a stack takes it by default."""
    if value is None:
        monkeypatch.delenv("AUTHZ_TRANSPORT", raising=False)
    else:
        monkeypatch.setenv("AUTHZ_TRANSPORT", value)
    assert transport_from_env() == expected
    assert LocalStack(ports=Ports(), run_dir=Path("unused")).authz_transport == expected


def test_an_unknown_transport_is_refused(monkeypatch: pytest.MonkeyPatch):
    """A typo in AUTHZ_TRANSPORT stops the run instead of silently choosing one."""
    monkeypatch.setenv("AUTHZ_TRANSPORT", "grcp")
    with pytest.raises(ValueError, match="grcp"):
        transport_from_env()


def test_an_http_stack_renders_envoys_http_mode_checked_on_the_metrics_ports():
    """A stack on the HTTP transport renders Envoy's http_service to its authz ports, each health-checked on its
    metrics port; another Envoy of the same stack (other ports) asks the same way."""
    ports = Ports(envoy=1, admin=2, authz=(3, 4), metrics=(5, 6), backend=7)
    stack = LocalStack(ports=ports, run_dir=Path("unused"), authz_transport=bootstrap.Transport.HTTP)
    topology = stack.topology(envoy_port=8, admin_port=9, backend_port=10)
    assert topology.authz_transport is bootstrap.Transport.HTTP
    assert [host.port for host in topology.authz] == [3, 4]
    assert tuple(topology.authz_health_ports) == (5, 6)
    assert (topology.listener.port, topology.admin.port, topology.backend.port) == (8, 9, 10)
    assert stack.health_url(1) == "http://127.0.0.1:6/healthz"
    grpc = LocalStack(ports=ports, run_dir=Path("unused"), authz_transport=bootstrap.Transport.GRPC).topology()
    assert tuple(grpc.authz_health_ports) == ()
    assert (grpc.listener.port, grpc.backend.port) == (1, 7)
