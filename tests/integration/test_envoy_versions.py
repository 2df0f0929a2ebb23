"""The authz server's own header mutations, proven on whichever Envoy runs (ENVOY_BIN; `make test-envoy-matrix`).

The front proxy strips every client-sent x-user-* header before ext_authz runs, so through it the authz server's
overwrite (append_action OVERWRITE_IF_EXISTS_OR_ADD plus the deprecated append=false, for envoyproxy/envoy#42857)
and its headers_to_remove never meet a spoofed header. Here a test-only Envoy runs the same configuration without
that header_mutation filter, in front of the session's authz server and a recording upstream, so each spoofed
header reaches ext_authz and only the authz server's answer can remove or replace it.
The upstream's headers are read as the raw list of header lines: a duplicate or a comma-joined value shows.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from envoy import bootstrap
from stack.local import LocalStack, envoy_process
from stack.processes import free_ports
from tests.envoy.test_envoy_version import envoy_version, version_text
from tests.integration.cruddur_api import RecordingUpstream, User, bearer

HOME_FEED = "/api/activities/home"  # auth optional: anonymous callers get in
SPOOFED = {"x-user-sub": "someone-else", "x-user-groups": "admins"}

RawHeaders = list[tuple[str, str]]


@dataclass
class Proxy:
    url: str
    upstream: RecordingUpstream


def _on() -> str:
    return f"on Envoy {version_text(envoy_version())}"


def _unguarded_config(stack: LocalStack, envoy_port: int, admin_port: int, backend_port: int) -> dict:
    """The stack's Envoy on other ports in front of another backend, less the header_mutation filter that strips
    x-user-*."""
    document = bootstrap.render(stack.topology(envoy_port=envoy_port, admin_port=admin_port, backend_port=backend_port))
    [listener] = document["static_resources"]["listeners"]
    [chain] = listener["filter_chains"]
    [hcm] = chain["filters"]
    filters = hcm["typed_config"]["http_filters"]
    kept = [item for item in filters if item["name"] != bootstrap.HEADER_MUTATION]
    assert len(kept) == len(filters) - 1, [item["name"] for item in filters]
    assert [item["name"] for item in kept] == [bootstrap.EXT_AUTHZ, bootstrap.ROUTER]
    hcm["typed_config"]["http_filters"] = kept
    return document


@pytest.fixture(scope="module")
def unguarded(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A test-only Envoy without the protective strip: the session's authz server, a recording upstream."""
    run_dir = tmp_path_factory.mktemp("unguarded")
    envoy_port, admin_port = free_ports(2)
    with RecordingUpstream() as upstream:
        envoy = envoy_process(
            "envoy-unguarded",
            _unguarded_config(stack, envoy_port, admin_port, upstream.port),
            run_dir,
            envoy_port=envoy_port,
            admin_port=admin_port,
            concurrency=1,
        )
        with envoy:
            yield Proxy(f"http://127.0.0.1:{envoy_port}", upstream)


@pytest.fixture
def guarded(recording_envoy: tuple[LocalStack, RecordingUpstream]) -> Proxy:
    """The session's second Envoy: the real configuration, strip included, in front of a recording upstream."""
    proxy, upstream = recording_envoy
    return Proxy(proxy.envoy_url, upstream)


def _send(proxy: Proxy, path: str, headers: dict[str, str]) -> RawHeaders:
    """GET path through proxy; the one request's raw header lines as the upstream received them."""
    before = len(proxy.upstream.requests)
    response = requests.get(proxy.url + path, headers=headers, timeout=10)
    assert response.status_code == 200, f"{path} answered {response.status_code} {_on()}: {response.text[:200]}"
    received = proxy.upstream.requests[before:]
    assert len(received) == 1, f"the upstream got {len(received)} requests for one GET {_on()}"
    return received[0].lines


def _identity(headers: RawHeaders) -> RawHeaders:
    return [(name, value) for name, value in headers if name.startswith("x-user-")]


def _values(headers: RawHeaders, name: str) -> list[str]:
    return [value for key, value in headers if key == name]


def _groups_claim(token: str) -> object:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("cognito:groups")


# -- the test-only Envoy really lets client headers through ---------------------------------------------------


def test_without_the_strip_a_spoofed_header_reaches_an_unchecked_route(unguarded: Proxy):
    """Control: /api/health skips ext_authz, so with the strip removed the spoofed x-user-sub arrives as sent.
    Without this, the tests below could pass because something else still strips client headers."""
    received = _send(unguarded, "/api/health", SPOOFED)
    assert _values(received, "x-user-sub") == ["someone-else"], f"{_identity(received)} {_on()}"


# -- authz's overwrite and headers_to_remove, against spoofed headers --------------------------------------------


@pytest.mark.parametrize("path", ["/api/me", HOME_FEED], ids=["required", "optional"])
def test_authz_overwrites_a_spoofed_sub_and_removes_a_spoofed_group(unguarded: Proxy, user: User, path: str):
    """A valid access token plus spoofed x-user-sub and x-user-groups: the upstream gets exactly one x-user-sub, the
    caller's (not appended, not comma-joined), and no x-user-groups (the caller has none, so authz lists it in
    headers_to_remove). Asserted on the running Envoy, named in each message."""
    assert _groups_claim(user.access_token) is None, "the session's user must be in no group for this test"
    received = _send(unguarded, path, {**SPOOFED, **bearer(user.access_token)})
    identity = _identity(received)
    assert _values(received, "x-user-sub") == [user.sub], f"x-user-sub lines {identity} {_on()}"
    assert _values(received, "x-user-groups") == [], f"x-user-groups survived {identity} {_on()}"
    names = [name for name, _ in identity]
    assert len(names) == len(set(names)), f"a repeated identity header {identity} {_on()}"
    assert "someone-else" not in str(identity) and "admins" not in str(identity), f"{identity} {_on()}"


def test_authz_removes_every_spoofed_header_from_an_anonymous_caller(unguarded: Proxy):
    """Anonymous on the optional home feed: authz allows with every identity header in headers_to_remove, so none
    of the spoofed ones (any case) reaches the upstream."""
    spoofed = {"x-user-sub": "someone-else", "X-User-Groups": "admins", "X-USER-NAME": "someone-else"}
    received = _send(unguarded, HOME_FEED, spoofed)
    assert _identity(received) == [], f"client identity headers reached the upstream {_on()}"


# -- the same requests through the real configuration -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/me", HOME_FEED], ids=["required", "optional"])
def test_real_config_delivers_exactly_the_callers_identity(guarded: Proxy, user: User, path: str):
    """Through the real configuration (strip, then authz) the same spoofed request delivers the caller's sub once
    and no x-user-groups: the strip and authz agree."""
    received = _send(guarded, path, {**SPOOFED, **bearer(user.access_token)})
    identity = _identity(received)
    assert _values(received, "x-user-sub") == [user.sub], f"{identity} {_on()}"
    assert _values(received, "x-user-groups") == [], f"{identity} {_on()}"
    names = [name for name, _ in identity]
    assert len(names) == len(set(names)), f"a repeated identity header {identity} {_on()}"


def test_real_config_gives_an_anonymous_caller_no_identity(guarded: Proxy):
    """Anonymous on the home feed through the real configuration: no x-user-* header reaches the upstream."""
    received = _send(guarded, HOME_FEED, {"x-user-sub": "someone-else"})
    assert _identity(received) == [], f"{_identity(received)} {_on()}"
