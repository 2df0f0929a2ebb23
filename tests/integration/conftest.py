"""The whole stack on free loopback ports: moto's Cognito, the backend under gunicorn, authz and a real Envoy.

One stack serves the session (starting it costs a few seconds); tests that stop a part restore it themselves.
Every process is stopped when the session ends, also when a test or the start-up fails.
AUTHZ_TRANSPORT=http runs the suite with Envoy's HTTP ext_authz mode (`python -m authz serve-http`) instead of
gRPC (the default): `AUTHZ_TRANSPORT=http .venv/bin/python -m pytest tests/integration`. Every LocalStack takes
its transport from it (stack.local.transport_from_env), the ones tests start themselves too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envoy.bootstrap import HTTP_MODE_BROKEN, Transport
from stack.cognito import cognito_client_for
from stack.local import LocalStack, Ports, running_stack, transport_from_env
from stack.processes import free_port
from tests.envoy.test_envoy_version import envoy_version
from tests.integration.cruddur_api import RecordingUpstream, User, sign_up


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On an Envoy whose HTTP ext_authz mode breaks the contract (bootstrap.HTTP_MODE_BROKEN), the suite's HTTP run
    is skipped, saying why, rather than failing on Envoy's bug."""
    version = envoy_version()
    if transport_from_env() is not Transport.HTTP or version not in HTTP_MODE_BROKEN:
        return
    skip = pytest.mark.skip(reason=HTTP_MODE_BROKEN[version])
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(
        Ports.free(), tmp_path_factory.mktemp("stack"), envoy_concurrency=1, authz_transport=transport_from_env()
    ) as running:
        yield running


@pytest.fixture(scope="session")
def cognito(stack: LocalStack) -> Any:
    return cognito_client_for(stack.cognito_env)


@pytest.fixture(scope="session")
def user(stack: LocalStack, cognito: Any) -> User:
    return sign_up(stack, cognito)


@pytest.fixture(scope="session")
def recording_envoy(
    stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalStack, RecordingUpstream]]:
    """A second Envoy with the same configuration and the same authz server, whose backend records what it gets."""
    with RecordingUpstream() as upstream:
        ports = Ports(
            envoy=free_port(),
            admin=free_port(),
            authz=stack.ports.authz,
            metrics=stack.ports.metrics,
            backend=upstream.port,
            cognito=stack.ports.cognito,
        )
        proxy = LocalStack(
            ports=ports,
            run_dir=tmp_path_factory.mktemp("recording"),
            envoy_concurrency=1,
            authz_transport=stack.authz_transport,
        )
        try:
            proxy.start_envoy()
            yield proxy, upstream
        finally:
            proxy.stop()
