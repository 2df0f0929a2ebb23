"""The Cruddur pages in a real browser, through Envoy, against the local Cognito: what a user sees and does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests

from stack.local import LocalStack
from tests.browser.accounts import EmulatorLog, confirmed_person, refresh_refused, token_refused
from tests.browser.conftest import ARTIFACTS
from tests.browser.pages import App, Person
from tests.conftest import wait_for

CODE = "123456"  # the emulator takes any code for ConfirmSignUp and ConfirmForgotPassword
WRONG_PASSWORD = "Incorrect username or password."


def test_sign_up_confirm_sign_in_and_sign_out(app: App, tmp_path: Path) -> None:
    """A visitor sees the public feed with sign-in and sign-up links; signs up, confirms the emailed code, signs in and
    sees their name, their own item at the top of the feed and a sign-out button; signs out and sees the public feed
    again, with nothing of the session left in the tab."""
    person = Person.new()

    app.open("/")
    feed = app.wait_signed_out_home()
    assert app.find("a#nav-signin").get_dom_attribute("href") == "#/signin"
    assert app.find("a#nav-signup").get_dom_attribute("href") == "#/signup"
    assert not app.shown("#nav-user") and not app.shown("#signout")
    assert all(item["handle"] and item["message"] for item in feed), feed

    app.find("a#nav-signup").click()
    app.sign_up(person)

    app.wait_page("confirm")
    assert unquote(app.hash) == f"#/confirm?email={person.email}", app.hash
    assert app.value("#confirm-email") == person.email
    app.fill({"#confirm-code": CODE})
    app.submit("form#confirm-form")

    app.wait_page("signin")
    assert app.hash.startswith("#/signin"), app.hash
    app.wait_text("#signin-notice")
    app.fill({"#signin-email": person.email, "#signin-password": person.password})
    app.submit("form#signin-form")

    feed = app.wait_signed_in_home()
    assert app.hash in ("", "#/"), app.hash
    session = app.session()
    assert session and session["accessToken"], session
    assert app.text("#nav-user") == person.name
    assert feed[0]["own"] and not any(item["own"] for item in feed[1:]), feed
    assert app.first_is_own()
    assert not app.shown("#nav-signin") and not app.shown("#nav-signup")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for folder in (ARTIFACTS, tmp_path):
        assert app.driver.save_screenshot(str(folder / "feed-signed-in.png"))

    app.find("button#signout").click()
    app.wait_signed_out_home()
    assert not app.shown("#nav-user") and not app.shown("#signout")
    assert app.session() is None
    # Whether Cognito also revoked the tokens (GlobalSignOut): test_sign_out_revokes_the_tokens_at_cognito.


def test_sign_out_revokes_the_tokens_at_cognito(app: App, browser_stack: LocalStack, cognito: Any) -> None:
    """Signing out signs the user out everywhere: after "Sign out" the tokens the page held are refused by Cognito
    (GetUser with the old access token, a refresh with the old refresh token), not only forgotten by this tab. A
    password sign-in's sign-out stays on the pages: Cognito's hosted /logout is for sessions of its hosted sign-in."""
    person = confirmed_person(browser_stack, cognito)
    app.sign_in(person.email, person.password)
    session = app.signed_in_session()
    assert not token_refused(cognito, session["accessToken"])
    log = EmulatorLog(browser_stack)

    app.find("button#signout").click()
    app.wait_signed_out_home()
    assert app.session() is None
    assert app.hash == "#/" and log.logouts() == []
    assert not app.shown("#home-notice"), app.text("#home-notice")  # both calls went through
    assert wait_for(lambda: token_refused(cognito, session["accessToken"]), timeout=5), (
        "Cognito still accepts the access token of the signed-out session: the sign-out was not global"
    )
    assert refresh_refused(cognito, browser_stack, session["refreshToken"]), (
        "Cognito still refreshes with the refresh token of the signed-out session"
    )


def test_sign_out_revokes_the_refresh_token_also_when_global_sign_out_fails(
    app: App, browser_stack: LocalStack, cognito: Any
) -> None:
    """Sign-out also revokes the tab's refresh token (RevokeToken, which needs no access token): when GlobalSignOut
    fails (here: the stored access token is one Cognito never issued), the tab is signed out, the page says the other
    devices may not be, and Cognito no longer refreshes with the refresh token."""
    person = confirmed_person(browser_stack, cognito)
    app.sign_in(person.email, person.password)
    session = app.signed_in_session()
    # Changed under the page, which reads the session from storage when it signs out (a reload would have the API
    # refuse the token first).
    app.store_session({**session, "accessToken": session["accessToken"] + "x"})

    app.find("button#signout").click()
    app.wait_page("home")
    assert "failed" in app.wait_text("#home-notice", "other devices").lower()
    app.wait_signed_out_home()
    assert app.session() is None
    assert refresh_refused(cognito, browser_stack, session["refreshToken"]), (
        "Cognito still refreshes with the refresh token of a tab that signed out"
    )


def test_sign_out_is_refused_by_authz_at_once_through_the_sign_out_route(
    app: App, browser_stack: LocalStack, cognito: Any
) -> None:
    """With a shared state, "Sign out" first goes through the sign-out route: at once the access token the page held
    is refused by authz through Envoy (401 token_revoked), where authz asks Cognito nothing (revocation is off here),
    while the same person's next sign-in (a second later) works."""
    person = confirmed_person(browser_stack, cognito)
    app.sign_in(person.email, person.password)
    session = app.signed_in_session()
    me = browser_stack.envoy_url + "/api/me"
    assert requests.get(me, headers={"Authorization": f"Bearer {session['accessToken']}"}, timeout=5).status_code == 200

    app.find("button#signout").click()
    app.wait_signed_out_home()
    refused = requests.get(me, headers={"Authorization": f"Bearer {session['accessToken']}"}, timeout=5)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_token")
    assert "token revoked" in refused.headers["www-authenticate"]
    # iat has whole seconds, so a token of the same second as the sign-out counts as issued before it: sign in again
    # in a later one.
    time.sleep(1.1)
    app.sign_in(person.email, person.password)
    again = app.signed_in_session()
    assert requests.get(me, headers={"Authorization": f"Bearer {again['accessToken']}"}, timeout=5).status_code == 200


def test_wrong_password_shows_cognitos_message(app: App, browser_stack: LocalStack, cognito: Any) -> None:
    """Signing in with a wrong password shows "Incorrect username or password." and the sign-in form stays."""
    person = confirmed_person(browser_stack, cognito)
    app.open("/signin")
    app.wait_page("signin")
    app.fill({"#signin-email": person.email, "#signin-password": "Wr0ng-password!"})
    app.submit("form#signin-form")

    assert WRONG_PASSWORD in app.wait_text("#signin-error", WRONG_PASSWORD)
    app.wait_page("signin")
    assert app.hash.startswith("#/signin"), app.hash
    assert app.session() is None


def test_resend_code_says_it_was_sent(app: App, browser_stack: LocalStack, cognito: Any) -> None:
    """On the confirm page, "Resend code" tells the user a new code was sent."""
    person = Person.new()
    cognito.sign_up(
        ClientId=browser_stack.cognito_env["AWS_COGNITO_CLIENT_ID"],
        Username=person.email,
        Password=person.password,
        UserAttributes=[
            {"Name": "email", "Value": person.email},
            {"Name": "name", "Value": person.name},
            {"Name": "preferred_username", "Value": person.handle},
        ],
    )
    app.open(f"/confirm?email={person.email}")
    app.wait_page("confirm")
    assert app.value("#confirm-email") == person.email

    app.find("button#resend-code").click()
    app.wait(
        lambda: "sent" in app.text("#confirm-status").lower() or app.text("#confirm-error"),
        "neither a status nor an error after Resend code",
    )
    assert "sent" in app.text("#confirm-status").lower(), (
        f"status {app.text('#confirm-status')!r}, error {app.text('#confirm-error')!r}"
    )
    assert app.text("#confirm-error") == ""


def test_recover_a_forgotten_password(app: App, browser_stack: LocalStack, cognito: Any) -> None:
    """A user who forgot their password asks for a code, sets a new password with it, and then signs in with the new
    password; the old one is refused."""
    person = confirmed_person(browser_stack, cognito)
    new_password = "N3w-secret!!"

    app.open("/signin")
    app.wait_page("signin")
    app.find("a#forgot-link").click()
    app.wait_page("forgot")
    app.fill({"#forgot-email": person.email})
    app.submit("form#forgot-form")

    app.wait_page("reset")
    assert unquote(app.hash) == f"#/reset?email={person.email}", app.hash
    assert app.value("#reset-email") == person.email
    app.fill({"#reset-code": CODE, "#reset-password": new_password})
    app.submit("form#reset-form")

    app.wait_page("signin")
    app.wait_text("#signin-notice")
    app.fill({"#signin-email": person.email, "#signin-password": person.password})
    app.submit("form#signin-form")
    app.wait_text("#signin-error", WRONG_PASSWORD)
    assert app.session() is None

    app.fill({"#signin-email": person.email, "#signin-password": new_password})
    app.submit("form#signin-form")
    app.wait_signed_in_home()
    assert app.text("#nav-user") == person.name


def test_a_refused_token_leads_back_to_sign_in(app: App, browser_stack: LocalStack, cognito: Any) -> None:
    """When the API answers 401 (here: the stored access token's signature was tampered with), the user lands on the
    sign-in page with a notice that their session has ended, and the broken session is gone."""
    person = confirmed_person(browser_stack, cognito)
    app.sign_in(person.email, person.password)
    session = app.signed_in_session()
    header, payload, signature = session["accessToken"].split(".")
    # A character in the middle: the last one may only carry padding bits a lenient decoder ignores.
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    session["accessToken"] = f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"
    app.store_session(session)

    app.reload()
    app.wait_page("signin")
    assert "session" in app.wait_text("#signin-notice", "session").lower()
    assert app.hash.startswith("#/signin"), app.hash
    assert app.session() is None
    assert app.shown("a#nav-signin") and not app.shown("#nav-user")


def test_tokens_are_refreshed_before_they_expire(app: App, browser_stack: LocalStack, cognito: Any) -> None:
    """With less than a minute left on the access token, the page swaps in fresh tokens from the refresh token by
    itself; the user stays signed in and still sees their own item."""
    person = confirmed_person(browser_stack, cognito)
    app.sign_in(person.email, person.password)
    before = app.signed_in_session()
    app.driver.execute_script(
        """const session = JSON.parse(sessionStorage.getItem(arguments[0]));
           session.expiresAt = Date.now() + 30000;
           sessionStorage.setItem(arguments[0], JSON.stringify(session));""",
        "cruddur.session",
    )

    app.reload()
    after = app.wait(
        lambda: (session := app.session()) and session["accessToken"] != before["accessToken"] and session,
        "the access token was not refreshed within 10 s",
    )
    expected = time.time() * 1000 + 3600 * 1000
    assert abs(after["expiresAt"] - expected) < 60_000, (after["expiresAt"], expected)
    assert after["refreshToken"] == before["refreshToken"]
    assert not token_refused(cognito, after["accessToken"])
    app.wait_signed_in_home()
    assert app.text("#nav-user") == person.name


# The session module in a page, with what GetUser answered arriving after the session it was asked for changed: signed
# out, signed out and in again as a new session, or refreshed. Returns what is stored after each.
_LATE_PROFILE_JS = """
const done = arguments[arguments.length - 1];
import('/web/session.js').then(({ saveSession, saveProfile, clearSession, loadSession }) => {
  const token = (n) => `header.${btoa(JSON.stringify({ exp: 4102444800, n }))}.signature`;
  const result = (n, refreshToken) => ({ AccessToken: token(n), IdToken: token(n), RefreshToken: refreshToken });
  const attributes = [{ Name: 'name', Value: 'From GetUser' }];
  const seen = {};

  const signedOut = saveSession(result(1, 'refresh-1'));
  clearSession();
  saveProfile(signedOut, attributes);
  seen.signedOut = loadSession();

  const replaced = saveSession(result(2, 'refresh-2'));
  clearSession();
  saveSession(result(3, 'refresh-3'));
  saveProfile(replaced, attributes);
  seen.replaced = loadSession();

  const first = saveSession(result(4, 'refresh-4'));
  saveSession({ AccessToken: token(5), IdToken: token(5) }, first);
  saveProfile(first, attributes);
  seen.refreshed = loadSession();
  seen.refreshedToken = token(5);

  clearSession();
  done(seen);
}).catch((error) => done(String(error)));
"""


def test_a_profile_that_arrives_after_sign_out_signs_nothing_back_in(app: App) -> None:
    """After a sign-in the pages ask GetUser for the user's name and keep it with the session; when the answer arrives
    after the user signed out, nothing is stored (the tab stays signed out); after another sign-in, the new session
    is kept as it is; after a refresh, the name joins the refreshed tokens, which stay. (The session module itself,
    in a page of the app's origin where none of the app runs: the race is one of milliseconds in the app.)"""
    app.driver.get(app.origin + "/api/health")
    seen = app.driver.execute_async_script(_LATE_PROFILE_JS)
    assert isinstance(seen, dict), seen
    assert seen["signedOut"] is None
    assert seen["replaced"]["refreshToken"] == "refresh-3" and seen["replaced"]["profile"] == {}
    assert seen["refreshed"]["refreshToken"] == "refresh-4"
    assert seen["refreshed"]["accessToken"] == seen["refreshedToken"]
    assert seen["refreshed"]["profile"] == {"name": "From GetUser"}
    assert app.session() is None


FORM_PAGES = {
    "signin": "/signin",
    "signup": "/signup",
    "confirm": "/confirm?email=someone@cruddur.local",
    "forgot": "/forgot",
    "reset": "/reset?email=someone@cruddur.local",
}

_UNLABELLED_JS = """
const main = document.querySelector('main[data-page]');
return [...main.querySelectorAll('input, select, textarea')]
  .filter(el => !['hidden', 'submit', 'button', 'reset', 'image'].includes((el.type || '').toLowerCase()))
  .filter(el => {
    const byFor = el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`);
    const byAria = (el.getAttribute('aria-label') || '').trim();
    return !byFor && !byAria;
  })
  .map(el => el.id || el.name || el.outerHTML);
"""


@pytest.mark.parametrize("page", list(FORM_PAGES))
def test_form_fields_are_labelled_and_errors_announced(app: App, page: str) -> None:
    """On every form page a screen reader names each input (a <label for> or aria-label), and the error box is an
    alert, so an error is read out when it appears."""
    app.open(FORM_PAGES[page])
    main = app.wait_page(page)
    assert main.find_elements("css selector", "input"), f"no inputs on {page}"
    assert app.driver.execute_script(_UNLABELLED_JS) == []
    error = app.find(f"#{page}-error")
    assert error.get_dom_attribute("role") == "alert"


# Route names an object inherits from Object.prototype (and one that is a path on no page): none of them is a page.
INHERITED_NAMES = ["constructor", "__proto__", "toString", "hasOwnProperty", "/constructor", "/nowhere"]


@pytest.mark.parametrize("route", INHERITED_NAMES)
def test_a_route_named_after_an_inherited_property_is_an_unknown_route(app: App, route: str) -> None:
    """A hash route that names a property every object inherits (#constructor, #__proto__, ...) is no page: the
    user sees home with the public feed, as on any other unknown route, both on loading the app there and on
    navigating there from a page."""
    app.open(route)
    app.wait_signed_out_home()

    app.open("/signin")
    app.wait_page("signin")
    app.driver.execute_script("location.hash = arguments[0]", route)
    app.wait_signed_out_home()
