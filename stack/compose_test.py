"""`make compose-test`: the compose stack built without network, brought up healthy, tested through its published
port, and taken down again, whatever happens.

1. A container engine (stack.containers.ensure_engine: on Debian as root it is installed and started here, and
   stopped again at the end).
2. The base images (public, or local stand-ins), and every locked wheel in wheelhouse/.
3. `docker compose build` with BUILD_NETWORK=none: no build step can reach a network, so every package came from
   wheelhouse/ and every base from the engine's own images.
4. `docker compose up --wait`, then `pytest -m compose tests/compose` against it (COMPOSE_URL and the compose
   environment tell the tests where it is and how to change it).
5. `docker compose down -v`, on success and on failure: no container, network or volume of it is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping

from stack.containers import COMPOSE_FILE, ROOT, ContainersError, base_images, ensure_engine, run, wheelhouse
from stack.processes import free_port

PROJECT = "cognito-ext-authz-test"
UP_TIMEOUT_SECONDS = 180


def compose_env() -> dict[str, str]:
    """The environment every `docker compose` command of the run gets (the tests' too)."""
    return {
        **os.environ,
        **base_images(),
        "BUILD_NETWORK": "none",
        "COMPOSE_PROJECT_NAME": PROJECT,
        "COMPOSE_FILE": str(COMPOSE_FILE),
        "ENVOY_PORT": str(free_port()),
    }


def image_sizes(env: Mapping[str, str]) -> dict[str, int]:
    """The size in bytes of each service's image (none when the engine will not say: it is only reported)."""
    listed = subprocess.run(
        ["docker", "compose", "images", "--format", "json"], env=dict(env), capture_output=True, text=True
    ).stdout
    try:
        return {entry["ContainerName"]: int(entry["Size"]) for entry in json.loads(listed or "[]")}
    except (ValueError, KeyError, TypeError):
        return {}


def compose_test() -> int:
    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str, since: float) -> float:
        now = time.monotonic()
        phases[name] = now - since
        return now

    engine = ensure_engine()
    mark = phase("engine", started)
    try:
        env = compose_env()
        mark = phase("base images", mark)
        wheelhouse()
        mark = phase("wheelhouse", mark)
        compose = ["docker", "compose"]
        try:
            run([*compose, "build"], env=env)
            mark = phase("build", mark)
            run([*compose, "up", "--wait", "--wait-timeout", str(UP_TIMEOUT_SECONDS)], env=env)
            mark = phase("up", mark)
            for name, size in sorted(image_sizes(env).items()):
                print(f"compose-test: image of {name}: {size / 1e6:.0f} MB")
            url = f"http://127.0.0.1:{env['ENVOY_PORT']}"
            tests = subprocess.run(
                [sys.executable, "-m", "pytest", "-m", "compose", "tests/compose", "-q"],
                env={**env, "COMPOSE_URL": url},
                cwd=ROOT,
            )
            mark = phase("tests", mark)
        finally:
            # Whatever happened: the project's containers, networks and volumes go.
            subprocess.run([*compose, "down", "-v", "--remove-orphans", "--timeout", "10"], env=env, check=False)
            phase("down", mark)
    except ContainersError as error:
        print(f"compose-test: {error}", file=sys.stderr)
        return 1
    finally:
        engine.stop()
    timings = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items())
    print(f"compose-test: {time.monotonic() - started:.0f} s in all ({timings})")
    return tests.returncode
