"""The stack and the browser for the page tests.

One stack for the session (moto's Cognito, the backend, authz, a real Envoy, Redis and an external OIDC IdP on free
ports), one headless chromium per test module, and a fresh browser state (no session, no storage, no cookies) for
every test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from stack.cognito import cognito_client_for
from stack.local import LocalStack, Ports, running_stack
from tests.browser.pages import App

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="session")
def browser_binaries() -> None:
    """Debian's chromium and chromedriver are there, or every test fails (before the stack starts) naming the fix."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"the browser tests need Debian's chromium and its chromedriver, missing: {', '.join(missing)}; "
            "run `make browser` (apt-installs chromium and chromium-driver)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def browser_stack(browser_binaries: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # With a shared state, as compose has one: the pages' sign-out then goes through the sign-out route too. With the
    # local IdP: the pages offer "Sign in with LocalIdP" through the emulator's hosted endpoints.
    with running_stack(
        Ports.free(), tmp_path_factory.mktemp("browser-stack"), envoy_concurrency=1, state=True, idp=True
    ) as stack:
        yield stack


@pytest.fixture(scope="session")
def cognito(browser_stack: LocalStack) -> Any:
    return cognito_client_for(browser_stack.cognito_env)


@pytest.fixture(scope="module")
def driver(browser_binaries: None) -> Iterator[webdriver.Chrome]:
    """Debian's headless chromium through its own chromedriver; Selenium Manager is never asked for anything."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    # With the driver's path given, Selenium skips Selenium Manager (no lookup, no download).
    chrome = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def app(driver: webdriver.Chrome, browser_stack: LocalStack, request: pytest.FixtureRequest) -> Iterator[App]:
    """The pages with a fresh browser state: storage and cookies of the app's origin cleared before the test."""
    page = App(driver, browser_stack.envoy_url)
    page.reset()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        # What the browser showed when the test failed, next to the signed-in screenshot.
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"failed-{request.node.name}.png"))
    # Leave the app: its refresh timer must not run on into the next test's set-up.
    driver.get("about:blank")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]  # pytest's documented way to hand a report to fixtures
    return report
