"""The local Cognito, ready to use: the seed's pool and client plus a confirmed demo user, and the env file
that tells the rest of the stack about them.

`make run` calls provision_local(); docker-compose runs `python -m stack.provision` as its one-shot job.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stack.cognito import cognito_client, ensure_user, provision

DEMO = {"email": "demo@cruddur.local", "password": "Demo-Passw0rd!", "name": "Demo User", "handle": "demo"}


def provision_local(endpoint: str, region: str) -> dict[str, str]:
    """Provision the emulator at endpoint; returns the variables of .run/cognito.env."""
    client = cognito_client(region, endpoint)
    provisioned = provision(client, region)
    ensure_user(client, provisioned, **DEMO)
    return {
        "AWS_COGNITO_USER_POOLS_ID": provisioned.pool_id,
        "AWS_COGNITO_CLIENT_ID": provisioned.client_id,
        "AWS_COGNITO_REGION": region,
        "AWS_ENDPOINT_URL_COGNITO_IDP": endpoint,
        "DEMO_USERNAME": DEMO["email"],
        "DEMO_PASSWORD": DEMO["password"],
    }


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """KEY=value lines, readable by the owner only (the file holds the demo password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))


def read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def emulator_answers(endpoint: str, region: str) -> bool:
    try:
        cognito_client(region, endpoint).list_user_pools(MaxResults=1)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not yet": connection refused, 5xx while it boots
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.provision", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="the emulator's URL, e.g. http://cognito-local:5000")
    parser.add_argument("--region", default="ca-central-1")
    parser.add_argument("--env-file", type=Path, required=True, help="where to write the KEY=value file")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the emulator to answer")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    while not emulator_answers(args.endpoint, args.region):
        if time.monotonic() > deadline:
            print(f"provision: no Cognito emulator answering at {args.endpoint}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    env = provision_local(args.endpoint, args.region)
    write_env_file(args.env_file, env)
    print(
        f"provision: pool {env['AWS_COGNITO_USER_POOLS_ID']}, client {env['AWS_COGNITO_CLIENT_ID']} -> {args.env_file}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
