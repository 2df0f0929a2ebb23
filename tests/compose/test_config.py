"""The compose files as `docker compose config` reads them (the plugin `make compose-test` makes sure of, so these run
wherever the compose suite does): the stack's file is valid, and the real-pool override merges into what it says."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"


def test_docker_compose_accepts_the_file():
    """`docker compose config` (which needs no engine) finds the file valid."""
    docker = "docker"
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr


def test_the_real_pool_override_runs_authz_and_the_backend_on_the_pool_alone():
    """docker-compose.real-pool.yml, merged by `docker compose config`: no emulator or provision job, authz and the
    backend take the pool from the environment and read no env file, authz has a network with a way out (for the
    pool's keys) and its default JWKS URLs, keeps its shared state (Redis, on its network) and waits on it alone,
    the pages go to the pool's own endpoint, and Envoy waits on authz and the backend only."""
    docker = "docker"
    pool = {"AWS_COGNITO_USER_POOLS_ID": "eu-west-1_Real1", "AWS_COGNITO_CLIENT_ID": "realclient"}
    files = ["-f", str(COMPOSE_FILE), "-f", str(REPO / "docker-compose.real-pool.yml")]
    result = subprocess.run(
        [docker, "compose", *files, "config", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": os.environ["PATH"], **pool},
    )
    assert result.returncode == 0, result.stderr
    merged = json.loads(result.stdout)
    services, networks = merged["services"], merged["networks"]
    assert set(services) == {"envoy", "authz", "backend", "redis"}
    for name in ("authz", "backend"):
        assert {key: services[name]["environment"][key] for key in pool} == pool
        assert not any("cognito" in volume.get("source", "") for volume in services[name].get("volumes", []))
        assert "/run/cognito" not in " ".join(services[name]["command"])
    assert services["authz"]["environment"]["AUTHZ_JWKS_URL"] == ""
    assert any(not networks[name].get("internal") for name in services["authz"]["networks"])
    assert set(services["authz"]["depends_on"]) == {"redis"}
    assert set(services["authz"]["networks"]) & set(services["redis"]["networks"]) == {"state-net"}
    assert services["backend"]["environment"]["PAGES_COGNITO_ENDPOINT"] == ""
    assert set(services["envoy"]["depends_on"]) == {"authz", "backend"}
    for unset in pool:
        # Compose names the first missing variable it meets, in no fixed order: leave out one at a time.
        given = {key: value for key, value in pool.items() if key != unset}
        missing = subprocess.run(
            [docker, "compose", *files, "config", "-q"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PATH": os.environ["PATH"], **given},
        )
        assert missing.returncode != 0 and f"required variable {unset} is missing" in missing.stderr, missing.stderr
