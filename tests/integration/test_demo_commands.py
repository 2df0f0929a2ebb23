"""`make token` and `make sign-out` (stack/token.py) against the running stack's emulator and Envoy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from stack import token as demo
from stack.local import LocalStack
from stack.provision import write_env_file


@pytest.fixture
def env_file(stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The .run/cognito.env `make run` would have written for this stack."""
    path = tmp_path / "cognito.env"
    write_env_file(path, stack.cognito_env)
    monkeypatch.setattr(demo, "ENV_FILE", path)
    return path


def _token(capsys: pytest.CaptureFixture[str]) -> str:
    assert demo.main([]) == 0
    return capsys.readouterr().out.strip()


def test_make_token_prints_an_access_token_envoy_lets_through(stack: LocalStack, env_file: Path, capsys):
    """`make token` prints one line, the demo user's access token, and /api/me through Envoy answers with its sub."""
    token = _token(capsys)
    reply = requests.get(f"{stack.envoy_url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert reply.status_code == 200 and reply.json()["token_use"] == "access"


def test_make_sign_out_revokes_every_token_handed_out_so_far(stack: LocalStack, env_file: Path, cognito: Any, capsys):
    """After `make sign-out`, Cognito refuses the demo user's earlier token (what AUTHZ_REVOCATION=cognito asks),
    and `make token` still signs in afresh."""
    before = _token(capsys)
    assert cognito.get_user(AccessToken=before)["Username"]
    assert demo.main(["--sign-out"]) == 0
    assert "signed" in capsys.readouterr().err
    with pytest.raises(cognito.exceptions.NotAuthorizedException):
        cognito.get_user(AccessToken=before)
    assert cognito.get_user(AccessToken=_token(capsys))["Username"]


def test_commands_explain_when_the_stack_is_not_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """Without .run/cognito.env both commands exit 1 and say to start the stack first."""
    monkeypatch.setattr(demo, "ENV_FILE", tmp_path / "missing.env")
    assert demo.main(["--sign-out"]) == 1
    assert "make run" in capsys.readouterr().err
