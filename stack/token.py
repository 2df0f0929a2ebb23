"""`make token`: a fresh access token for the demo user of the running local stack (.run/cognito.env).

`make sign-out` (`python -m stack.token --sign-out`): AdminUserGlobalSignOut for the demo user, as the seed's
"sign out" button does with GlobalSignOut; every token handed out so far is then revoked.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stack.cognito import cognito_client_for, sign_in
from stack.provision import read_env_file

ENV_FILE = Path(__file__).resolve().parent.parent / ".run" / "cognito.env"


def main(argv: list[str] | None = None) -> int:
    sign_out = (sys.argv[1:] if argv is None else argv) == ["--sign-out"]
    if not ENV_FILE.exists():
        print("token: no .run/cognito.env; start the stack with `make run` first", file=sys.stderr)
        return 1
    env = read_env_file(ENV_FILE)
    if "DEMO_USERNAME" not in env:
        print("token: the stack runs against a real pool; sign in with your own user", file=sys.stderr)
        return 1
    client = cognito_client_for(env)
    if sign_out:
        client.admin_user_global_sign_out(UserPoolId=env["AWS_COGNITO_USER_POOLS_ID"], Username=env["DEMO_USERNAME"])
        print(f"signed {env['DEMO_USERNAME']} out everywhere: its tokens are revoked", file=sys.stderr)
        return 0
    print(sign_in(client, env["AWS_COGNITO_CLIENT_ID"], env["DEMO_USERNAME"], env["DEMO_PASSWORD"])["AccessToken"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
