"""The browser tests' users, what Cognito (boto3, against the stack's emulator) says of their tokens, and what the
emulator's log says the browser asked of its hosted endpoints."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from botocore.exceptions import ClientError

from stack.cognito import register
from stack.local import LocalStack
from tests.browser.pages import Person


def confirmed_person(stack: LocalStack, cognito: Any) -> Person:
    """A person signed up and confirmed beforehand (boto3: SignUp, AdminConfirmSignUp)."""
    person = Person.new()
    env = stack.cognito_env
    register(
        cognito,
        env["AWS_COGNITO_USER_POOLS_ID"],
        env["AWS_COGNITO_CLIENT_ID"],
        email=person.email,
        password=person.password,
        name=person.name,
        handle=person.handle,
    )
    return person


def token_refused(cognito: Any, access_token: str) -> bool:
    try:
        cognito.get_user(AccessToken=access_token)
    except ClientError as error:
        return error.response["Error"]["Code"] == "NotAuthorizedException"
    return False


def refresh_refused(cognito: Any, stack: LocalStack, refresh_token: str) -> bool:
    try:
        cognito.initiate_auth(
            ClientId=stack.cognito_env["AWS_COGNITO_CLIENT_ID"],
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": refresh_token},
        )
    except ClientError as error:
        return error.response["Error"]["Code"] == "NotAuthorizedException"
    return False


def api_identity(stack: LocalStack, access_token: str) -> dict[str, Any]:
    """/api/me through the stack's Envoy with the token: who authz says the caller is (its sub, for one)."""
    answer = requests.get(stack.envoy_url + "/api/me", headers={"Authorization": f"Bearer {access_token}"}, timeout=5)
    assert answer.status_code == 200, (answer.status_code, answer.text)
    return answer.json()


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified: for reading what the pages hold (authz and Cognito do the verifying)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# A request line of Werkzeug's log (the emulator's server): method, target, protocol (colour codes around them for
# some statuses), then the status.
_REQUEST_LINE = re.compile(
    r'"(?:\x1b\[[0-9;]*m)?(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)?" (?P<status>\d{3})'
)


class EmulatorLog:
    """The emulator's request log, from the moment this is made on."""

    def __init__(self, stack: LocalStack) -> None:
        self.path = stack.process("cognito").log_path
        self.start = self.path.stat().st_size

    def logouts(self) -> list[dict[str, list[str]]]:
        """The query of each GET /logout the emulator answered with a redirect since then, in order."""
        text = self.path.read_bytes()[self.start :].decode(errors="replace")
        return [
            parse_qs(urlsplit(match["target"]).query)
            for match in _REQUEST_LINE.finditer(text)
            if match["method"] == "GET" and urlsplit(match["target"]).path == "/logout" and match["status"] == "302"
        ]
