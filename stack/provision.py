"""The local Cognito, ready to use: the seed's pool and client plus a confirmed demo user, and the env file
that tells the rest of the stack about them; and, for "Sign in with LocalIdP", the local external IdP's accounts and
its provider in the pool.

`make run` calls provision_local() and provision_local_idp(); docker-compose runs `python -m stack.provision` as its
one-shot job.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stack.cognito import (
    LOCAL_IDP,
    OidcIdentityProvider,
    cognito_client,
    cognito_client_for,
    ensure_user,
    provision,
    provision_identity_provider,
)

DEMO = {"email": "demo@cruddur.local", "password": "Demo-Passw0rd!", "name": "Demo User", "handle": "demo"}
# The local IdP's accounts (oidc-provider-mock's predefined users, a button each on its sign-in page), by sub, with
# the claims the pool's attribute mapping reads: a user the pool requires name, email and preferred_username of.
IDP_ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {
        "email": "alice@idp.local",
        "email_verified": True,
        "name": "Alice Federated",
        "preferred_username": "alice",
    },
    "bob": {"email": "bob@idp.local", "email_verified": True, "name": "Bob Federated", "preferred_username": "bobf"},
}
# Where Cognito's hosted endpoints expect the IdP to send the browser back.
IDP_RESPONSE_PATH = "/oauth2/idpresponse"


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


def provision_local_idp(env: Mapping[str, str], idp_url: str, *, origins: Sequence[str]) -> None:
    """The local IdP (at idp_url) as provider LocalIdP of the pool env describes: an app registration there for the
    pool's /oauth2/idpresponse (at the emulator, AWS_ENDPOINT_URL_COGNITO_IDP), and the app client's hosted-UI
    settings with each of origins + "/" (where the pages are served) as callback and sign-out URL."""
    endpoint = env["AWS_ENDPOINT_URL_COGNITO_IDP"].rstrip("/")
    client_id, client_secret = register_idp_client(idp_url, endpoint + IDP_RESPONSE_PATH)
    pages = [origin.rstrip("/") + "/" for origin in origins]
    provision_identity_provider(
        cognito_client_for(env),
        env["AWS_COGNITO_USER_POOLS_ID"],
        env["AWS_COGNITO_CLIENT_ID"],
        OidcIdentityProvider(issuer=idp_url, client_id=client_id, client_secret=client_secret, name=LOCAL_IDP),
        callback_urls=pages,
        logout_urls=pages,
    )


def register_idp_client(idp_url: str, redirect_uri: str) -> tuple[str, str]:
    """(client_id, client_secret) of a new app registration at the local IdP (OAuth 2.0 dynamic client registration,
    client_secret_basic) whose one redirect URI is redirect_uri."""
    request = urllib.request.Request(
        idp_url.rstrip("/") + "/oauth2/clients",
        data=json.dumps(
            {"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "client_secret_basic"}
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        registration = json.load(response)
    return registration["client_id"], registration["client_secret"]


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
