"""The compose stack `make compose-test` brought up (stack/compose_test.py): where it listens and how to change it.

COMPOSE_URL is the published port; the compose environment (COMPOSE_PROJECT_NAME, COMPOSE_FILE, the base images)
lets the tests run `docker compose` on the same project. Without COMPOSE_URL there is no such stack, and the
suite is skipped: `make compose-test` is what runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.browser.conftest import browser_binaries, driver  # noqa: F401 - the browser fixtures, for the pages test


@dataclass(frozen=True)
class Compose:
    """The running compose stack."""

    url: str

    def compose(self, *args: str, timeout: float = 120) -> str:
        """`docker compose ARGS` on the stack's project; its standard output (CalledProcessError if it fails)."""
        return subprocess.run(
            ["docker", "compose", *args], capture_output=True, text=True, check=True, timeout=timeout
        ).stdout

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, allow_redirects=False, **kwargs)

    def containers(self, service: str) -> list[str]:
        """The ids of the service's running containers."""
        return self.compose("ps", "--quiet", service).split()

    def env_file(self) -> dict[str, str]:
        """What the provision job wrote: the pool, the app client and the demo user (read inside authz, the only
        running container besides provision's uid that can)."""
        text = self.compose("exec", "-T", "authz", "cat", "/run/cognito/cognito.env")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def demo_token(self) -> str:
        """A fresh access token of the demo user, as README tells a user to get one."""
        return self.compose("run", "--rm", "--no-deps", "-T", "provision", "python", "-m", "stack.token").strip()

    def healthy(self, service: str) -> bool:
        ids = self.containers(service)
        if not ids:
            return False
        states = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout)
        return all(state["State"].get("Health", {}).get("Status") == "healthy" for state in states)


def until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.fixture(scope="session")
def stack() -> Compose:
    url = os.environ.get("COMPOSE_URL")
    if not url:
        pytest.skip("needs the compose stack `make compose-test` brings up (COMPOSE_URL)")
    return Compose(url)
