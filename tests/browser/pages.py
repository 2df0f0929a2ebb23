"""The Cruddur pages as a test sees them: hash routes, the DOM contract's ids, the session in sessionStorage.

Every wait is explicit (WebDriverWait, 10 s); nothing sleeps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chromium.webdriver import ChromiumDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

WAIT_SECONDS = 10
SESSION_KEY = "cruddur.session"
# Where the pages keep a provider sign-in's state and PKCE verifier between leaving for the provider and coming back.
OAUTH_KEY = "cruddur.oauth"
PASSWORD = "Sup3r-secret!"

# One read of the feed, so no element goes stale between finding it and reading it.
_FEED_JS = """
return [...document.querySelectorAll('section#feed article.activity')].map(a => ({
  own: a.classList.contains('own'),
  handle: (a.querySelector('.handle') || {}).textContent?.trim() ?? null,
  message: (a.querySelector('.message') || {}).textContent?.trim() ?? null,
}));
"""
# Whether the first article of the feed (of any kind) is the caller's own item.
_FIRST_IS_OWN_JS = """
const first = document.querySelector('section#feed article');
return !!first && first.matches('article.activity.own');
"""


@dataclass(frozen=True)
class Person:
    """Someone who signs up: unique per test."""

    name: str
    handle: str
    email: str
    password: str = PASSWORD

    @classmethod
    def new(cls) -> Person:
        tag = uuid.uuid4().hex[:8]
        return cls(name=f"Test User {tag}", handle=f"user{tag}", email=f"user-{tag}@cruddur.local")


class App:
    def __init__(self, driver: ChromiumDriver, origin: str) -> None:
        self.driver = driver
        self.origin = origin.rstrip("/")

    # -- navigation and state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """No session, no storage, no cookies for the app's origin.

        Cleared from /api/health, a page of the same origin on which none of the app's code runs, so nothing of the
        app (a refresh in flight, a timer) can write the old session back after it is cleared.
        """
        self.driver.get(self.origin + "/api/health")
        self.driver.execute_script("sessionStorage.clear(); localStorage.clear();")
        self.driver.delete_all_cookies()

    def open(self, route: str = "/") -> None:
        """Load the app afresh (a full page load, not a hash change) at a hash route such as "/signin"."""
        self.driver.get("about:blank")
        self.driver.get(f"{self.origin}/#{route}")

    def reload(self) -> None:
        self.driver.refresh()

    @contextmanager
    def blocking(self, *patterns: str) -> Iterator[None]:
        """Within the block, a request to a URL matching one of patterns (Chrome's wildcards: "*/web/config.json")
        fails as an unreachable server's would (DevTools' Network.setBlockedURLs)."""
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": list(patterns)})
        try:
            yield
        finally:
            self.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
            self.driver.execute_cdp_cmd("Network.disable", {})

    @property
    def hash(self) -> str:
        return self.driver.execute_script("return location.hash")

    # -- waiting and reading --------------------------------------------------------------------------------------

    def wait(self, condition: Callable[[], Any], message: str | Callable[[], str]) -> Any:
        """condition's first truthy value within 10 s; a TimeoutException naming message otherwise. A callable
        message is read when the wait runs out, so it describes the page as it was then, not as it was before."""
        try:
            return WebDriverWait(
                self.driver, WAIT_SECONDS, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
            ).until(lambda _: condition())
        except TimeoutException as timeout:
            raise TimeoutException(message() if callable(message) else message) from timeout

    def wait_page(self, name: str) -> WebElement:
        """The page's main element, once the page named name shows."""
        return self.wait(
            lambda: self.driver.find_element(By.CSS_SELECTOR, f'main[data-page="{name}"]'),
            lambda: (
                f"page {name!r} never showed (hash {self.hash!r}, pages: {self.page_names()}, "
                f"the page reads: {self.body_text()[:300]!r})"
            ),
        )

    def body_text(self) -> str:
        """What the document shows, for a failure message: an error page from Envoy, say, instead of the app."""
        return self.driver.execute_script("return document.body ? document.body.innerText : ''") or ""

    def page_names(self) -> list[str]:
        return self.driver.execute_script(
            "return [...document.querySelectorAll('main[data-page]')].map(m => m.dataset.page)"
        )

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def shown(self, css: str) -> bool:
        """Whether an element matching css is in the page and visible."""
        try:
            return any(element.is_displayed() for element in self.driver.find_elements(By.CSS_SELECTOR, css))
        except StaleElementReferenceException:
            return False

    def text(self, css: str) -> str:
        """The visible text of the first element matching css, "" when there is none or it is hidden."""
        try:
            element = self.driver.find_element(By.CSS_SELECTOR, css)
            return element.text.strip() if element.is_displayed() else ""
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    def wait_text(self, css: str, contains: str = "") -> str:
        """The visible text of css once it is non-empty (and contains `contains`, case-insensitive)."""
        return self.wait(
            lambda: (text := self.text(css)) and contains.lower() in text.lower() and text,
            lambda: f"{css} never showed text containing {contains!r} (it shows {self.text(css)!r})",
        )

    def value(self, css: str) -> str:
        return self.find(css).get_attribute("value") or ""

    def feed(self) -> list[dict[str, Any]]:
        return self.driver.execute_script(_FEED_JS)

    def first_is_own(self) -> bool:
        return self.driver.execute_script(_FIRST_IS_OWN_JS)

    # -- forms ----------------------------------------------------------------------------------------------------

    def fill(self, fields: dict[str, str]) -> None:
        for css, text in fields.items():
            element = self.find(css)
            element.clear()
            element.send_keys(text)

    def paste(self, css: str, text: str) -> None:
        """Paste text into the field css as a user does: copied to the browser's clipboard (Ctrl+C on a text area
        put in the page for the moment), then Ctrl+V in the field, which takes it as the field's limits allow."""
        self.driver.execute_script(
            """const area = document.createElement('textarea');
               area.id = 'test-clipboard';
               area.value = arguments[0];
               document.body.append(area);
               area.select();""",
            text,
        )
        ActionChains(self.driver).key_down(Keys.CONTROL).send_keys("c").key_up(Keys.CONTROL).perform()
        self.driver.execute_script("document.getElementById('test-clipboard').remove()")
        field = self.find(css)
        field.clear()
        field.click()
        ActionChains(self.driver).key_down(Keys.CONTROL).send_keys("v").key_up(Keys.CONTROL).perform()

    def submit(self, form_css: str) -> None:
        self.find(f"{form_css} [type=submit]").click()

    # -- the session ------------------------------------------------------------------------------------------------

    def session(self) -> dict[str, Any] | None:
        raw = self.driver.execute_script("return sessionStorage.getItem(arguments[0])", SESSION_KEY)
        return None if raw is None else json.loads(raw)

    def signed_in_session(self) -> dict[str, Any]:
        """The stored session of a signed-in tab."""
        session = self.session()
        assert session is not None, "no session is stored: the tab is not signed in"
        return session

    def store_session(self, session: dict[str, Any]) -> None:
        self.driver.execute_script(
            "sessionStorage.setItem(arguments[0], arguments[1])", SESSION_KEY, json.dumps(session)
        )

    def storage(self) -> str:
        """Everything this origin keeps in the tab's storage and cookies, as one text (to look for what must not be
        kept there)."""
        return self.driver.execute_script(
            "return JSON.stringify([{...sessionStorage}, {...localStorage}, document.cookie])"
        )

    def pending_sign_in(self) -> dict[str, Any] | None:
        """What the pages keep while a provider's sign-in is under way (state and PKCE verifier), or None."""
        raw = self.driver.execute_script("return sessionStorage.getItem(arguments[0])", OAUTH_KEY)
        return None if raw is None else json.loads(raw)

    def store_pending_sign_in(self, pending: dict[str, Any]) -> None:
        self.driver.execute_script("sessionStorage.setItem(arguments[0], arguments[1])", OAUTH_KEY, json.dumps(pending))

    def loaded_url(self) -> str:
        """The URL this document was loaded from, query included, whatever history.replaceState made of it since."""
        return self.driver.execute_script("return performance.getEntriesByType('navigation')[0].name")

    def requested_urls(self) -> list[str]:
        """Every URL this document fetched (the Resource Timing entries: fetch() calls, scripts, styles)."""
        return self.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")

    # -- what a user does and sees --------------------------------------------------------------------------------

    def wait_signed_out_home(self) -> list[dict[str, Any]]:
        """Home, signed out: the sign-in and sign-up links, the public feed loaded, no own item. Returns the feed."""
        self.wait_page("home")

        def public() -> list[dict[str, Any]] | None:
            feed = self.feed()
            loaded = any(item["message"] == "Cloud is fun!" for item in feed)
            links = self.shown("nav#nav a#nav-signin") and self.shown("nav#nav a#nav-signup")
            return feed if loaded and links and not any(item["own"] for item in feed) else None

        return self.wait(public, lambda: f"home never showed signed out with the public feed (feed: {self.feed()})")

    def wait_signed_in_home(self) -> list[dict[str, Any]]:
        """Home, signed in: the user's name and the sign-out button, the own item first. Returns the feed."""
        self.wait_page("home")
        self.wait(
            lambda: (
                self.shown("nav#nav span#nav-user") and self.shown("nav#nav button#signout") and self.first_is_own()
            ),
            lambda: (
                f"home never showed signed in with the own item first "
                f"(nav: {self.text('nav#nav')!r}, feed: {self.feed()})"
            ),
        )
        return self.feed()

    def sign_up(self, person: Person) -> None:
        """Fill in the sign-up page as `person` and send it."""
        self.wait_page("signup")
        self.fill(
            {
                "#signup-name": person.name,
                "#signup-handle": person.handle,
                "#signup-email": person.email,
                "#signup-password": person.password,
            }
        )
        self.submit("form#signup-form")

    def enter_password(self, email: str, password: str) -> None:
        """Open the sign-in page and send email and password (what follows is the caller's to wait for)."""
        self.open("/signin")
        self.wait_page("signin")
        self.fill({"#signin-email": email, "#signin-password": password})
        self.submit("form#signin-form")

    def sign_in(self, email: str, password: str) -> None:
        """Sign in from the sign-in page and land on home, signed in."""
        self.enter_password(email, password)
        self.wait_signed_in_home()

    def wait_code_step(self) -> None:
        """The sign-in page's code step: the code form shown, the password form hidden."""
        self.wait_page("signin")
        self.wait(
            lambda: self.shown("form#mfa-form input#mfa-code") and not self.shown("form#signin-form"),
            lambda: f"the code step never showed (error: {self.text('#signin-error')!r})",
        )

    def enter_code(self, code: str) -> None:
        self.fill({"#mfa-code": code})
        self.submit("form#mfa-form")

    # -- the security page ----------------------------------------------------------------------------------------

    def open_security(self) -> None:
        """From a signed-in page, follow the nav's Security link."""
        self.find("nav#nav a#nav-security").click()
        self.wait_page("security")

    def wait_authenticator(self, state: str) -> None:
        """The security page says the authenticator app is `state` ("on" or "off")."""
        self.wait(
            lambda: self.find('main[data-page="security"]').get_dom_attribute("data-mfa") == state,
            lambda: (
                f"the security page never said the authenticator app is {state} "
                f"(status {self.text('#mfa-status')!r}, error {self.text('#security-error')!r})"
            ),
        )
