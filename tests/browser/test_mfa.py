"""The pages' TOTP multi-factor authentication in a real browser, against the emulator's TOTP (stack/emulator_mfa.py):
the security page turns an authenticator app on and off, and sign-in then asks for its code.

The codes come from pyotp with the key the page shows, as an authenticator app would compute them. Cognito (and the
emulator) accepts a code of the current 30 s step or of either neighbour, and never the same step's code twice, so
a test that enters two right codes within one step enters the next step's code the second time.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pyotp

from stack.emulator_mfa import CODE_MISMATCH, ENABLE_MISMATCH, INVALID_SESSION, MAX_WRONG_CODES
from stack.local import LocalStack
from tests.browser.accounts import api_identity, confirmed_person
from tests.browser.pages import App, Person

STEP_SECONDS = 30
# The path of dark modules the pages' own QR drawing (backend/web/totp.js) makes of a text, to hold the drawn code to.
_QR_PATH_OF_JS = """
const [text, done] = arguments;
import('/web/totp.js')
  .then(({ qrSvg }) => done(qrSvg(text, 'expected').querySelector('path').getAttribute('d')))
  .catch((error) => done(String(error)));
"""


def wrong_code(totp: pyotp.TOTP) -> str:
    """Six digits that are no code of the steps a server takes now (the current one and its neighbours)."""
    now = time.time()
    taken = {totp.at(now + offset) for offset in (-2 * STEP_SECONDS, -STEP_SECONDS, 0, STEP_SECONDS, 2 * STEP_SECONDS)}
    return next(code for code in (f"{n:06d}" for n in range(1_000_000)) if code not in taken)


def turn_on_authenticator(app: App) -> pyotp.TOTP:
    """On the security page: "Turn on", read the key the page shows, enter the app's code; the page says it is on.
    Returns the authenticator app."""
    app.open_security()
    app.wait_authenticator("off")
    app.find("button#mfa-on").click()
    secret = app.wait_text("#totp-secret").replace(" ", "")
    totp = pyotp.TOTP(secret)
    app.fill({"#totp-code": totp.now()})
    app.submit("form#totp-form")
    app.wait_authenticator("on")
    return totp


def test_turn_on_an_authenticator_then_sign_in_with_its_code_then_turn_it_off(
    app: App, browser_stack: LocalStack, cognito: Any
) -> None:
    """A signed-in user turns on an authenticator app on the security page (the key shown as text and as a QR code,
    never stored; a wrong code refused with Cognito's message), signs out, and signing in then asks for the app's code
    after the password: a wrong one is refused with Cognito's message and leaves them signed out, the right one signs
    them in with an access token authz accepts through Envoy. Once they turn it off, signing in asks for no code."""
    person = confirmed_person(browser_stack, cognito)
    app.sign_in(person.email, person.password)

    app.open_security()
    app.wait_authenticator("off")
    assert "off" in app.text("#mfa-status").lower()
    assert not app.shown("button#mfa-off")
    app.find("button#mfa-on").click()
    shown = app.wait_text("#totp-secret")
    secret = shown.replace(" ", "")
    assert all(len(group) == 4 for group in shown.split(" ")[:-1]), shown  # grouped for reading
    totp = pyotp.TOTP(secret)
    # The QR code is an SVG the page drew, of the otpauth:// URI an authenticator app reads (Key Uri Format: the
    # label's account percent-encoded).
    assert app.shown("#totp-qr svg[role=img]")
    drawn = app.driver.execute_script("return document.querySelector('#totp-qr svg path').getAttribute('d')")
    uri = f"otpauth://totp/Cruddur:{quote(person.email, safe='')}?secret={secret}&issuer=Cruddur"
    assert drawn and drawn == app.driver.execute_async_script(_QR_PATH_OF_JS, uri)
    assert secret not in app.storage() and secret not in app.driver.current_url

    app.fill({"#totp-code": wrong_code(totp)})
    app.submit("form#totp-form")
    assert app.wait_text("#totp-error") == ENABLE_MISMATCH
    app.wait_authenticator("off")

    app.fill({"#totp-code": totp.now()})
    app.submit("form#totp-form")
    app.wait_authenticator("on")
    assert "on" in app.text("#mfa-status").lower()
    assert app.wait_text("#security-notice", "on")
    # Once confirmed, the key is gone from the page; it was never kept anywhere else.
    assert not app.shown("form#totp-form") and app.text("#totp-secret") == ""
    assert secret not in app.driver.page_source and secret not in app.storage()
    assert app.driver.find_elements("css selector", "#totp-qr svg") == []

    app.find("button#signout").click()
    app.wait_signed_out_home()

    app.enter_password(person.email, person.password)
    app.wait_code_step()
    assert app.session() is None
    app.enter_code(wrong_code(totp))
    assert app.wait_text("#mfa-error") == CODE_MISMATCH
    assert app.session() is None
    app.wait_code_step()  # still asking, with the same sign-in session

    # Enrolment took the current step's code, and a step's code is accepted once: the next step's code is one the
    # emulator takes now (a neighbour) and has not seen.
    app.enter_code(totp.at(time.time() + STEP_SECONDS))
    app.wait_signed_in_home()
    assert app.text("#nav-user") == person.name
    session = app.signed_in_session()
    sub = next(
        a["Value"] for a in cognito.get_user(AccessToken=session["accessToken"])["UserAttributes"] if a["Name"] == "sub"
    )
    assert api_identity(browser_stack, session["accessToken"])["sub"] == sub

    app.open_security()
    app.wait_authenticator("on")
    app.find("button#mfa-off").click()
    app.wait_authenticator("off")
    assert app.shown("button#mfa-on") and not app.shown("button#mfa-off")

    app.find("button#signout").click()
    app.wait_signed_out_home()
    app.sign_in(person.email, person.password)  # home at once: no code step
    assert not app.shown("form#mfa-form")


def test_a_sign_in_session_that_ended_leads_back_to_the_password(
    app: App, browser_stack: LocalStack, cognito: Any
) -> None:
    """When Cognito no longer takes the sign-in's session (here: it ended after the most wrong codes a session takes),
    the code step gives way to the password step with a message saying so; the password and a fresh code then sign
    the user in."""
    person = confirmed_person(browser_stack, cognito)
    app.sign_in(person.email, person.password)
    totp = turn_on_authenticator(app)
    app.find("button#signout").click()
    app.wait_signed_out_home()

    app.enter_password(person.email, person.password)
    app.wait_code_step()
    for _ in range(MAX_WRONG_CODES):
        app.enter_code(wrong_code(totp))
        assert app.wait_text("#mfa-error") == CODE_MISMATCH
    app.enter_code(totp.at(time.time() + STEP_SECONDS))

    app.wait(
        lambda: app.shown("form#signin-form") and not app.shown("form#mfa-form"),
        lambda: f"the password step never came back (code error: {app.text('#mfa-error')!r})",
    )
    message = app.wait_text("#signin-error", INVALID_SESSION)
    assert "password again" in message.lower(), message
    assert app.value("#signin-email") == person.email
    assert app.session() is None

    app.fill({"#signin-password": person.password})
    app.submit("form#signin-form")
    app.wait_code_step()
    # The ended session took no code: the next step's code is still one the emulator has not accepted.
    app.enter_code(totp.at(time.time() + STEP_SECONDS))
    app.wait_signed_in_home()


def test_the_code_step_and_the_security_page_are_labelled_and_announce_errors(
    app: App, browser_stack: LocalStack, cognito: Any
) -> None:
    """The code input says what it is for, takes the one-time code autofill, and its errors are alerts; so are the
    security page's fields and errors."""
    person: Person = confirmed_person(browser_stack, cognito)
    app.sign_in(person.email, person.password)
    app.open_security()
    app.wait_authenticator("off")
    app.find("button#mfa-on").click()
    app.wait_text("#totp-secret")
    for field in ("#totp-code", "#totp-device"):
        field_id = field.removeprefix("#")
        assert app.driver.find_elements("css selector", f'label[for="{field_id}"]'), field
    assert app.find("#totp-code").get_dom_attribute("autocomplete") == "one-time-code"
    for alert in ("#security-error", "#totp-error"):
        assert app.find(alert).get_dom_attribute("role") == "alert"

    app.open("/signin")
    app.wait_page("signin")
    code = app.find("#mfa-code")
    assert code.get_dom_attribute("autocomplete") == "one-time-code"
    assert code.get_dom_attribute("inputmode") == "numeric"
    assert app.driver.find_elements("css selector", 'label[for="mfa-code"]')
    assert app.find("#mfa-error").get_dom_attribute("role") == "alert"


def test_the_security_page_asks_a_visitor_to_sign_in(app: App) -> None:
    """Signed out, #/security leads to the sign-in page, and the nav has no Security link."""
    app.open("/security")
    app.wait_page("signin")
    assert app.hash.startswith("#/signin"), app.hash
    assert not app.shown("#nav-security")


def grouped(code: str, separator: str) -> str:
    """A six-digit code as an authenticator app shows or copies it: two groups of three."""
    return f"{code[:3]}{separator}{code[3:]}"


def test_a_code_pasted_with_a_space_or_a_dash_is_taken_whole(app: App, browser_stack: LocalStack, cognito: Any) -> None:
    """Authenticator apps show and copy a code in two groups ("123 456", some "123-456"): pasted like that, the code
    field keeps all of it, and the code turns the app on at the security page and signs the user in at the code
    step."""
    person = confirmed_person(browser_stack, cognito)
    app.sign_in(person.email, person.password)
    app.open_security()
    app.wait_authenticator("off")
    app.find("button#mfa-on").click()
    totp = pyotp.TOTP(app.wait_text("#totp-secret").replace(" ", ""))
    dashed = grouped(totp.now(), "-")
    app.paste("#totp-code", dashed)
    assert app.value("#totp-code") == dashed
    app.submit("form#totp-form")
    app.wait_authenticator("on")
    app.find("button#signout").click()
    app.wait_signed_out_home()

    app.enter_password(person.email, person.password)
    app.wait_code_step()
    # The next step's code: enrolment took the current one (see test_turn_on_an_authenticator_...).
    spaced = grouped(totp.at(time.time() + STEP_SECONDS), " ")
    app.paste("#mfa-code", spaced)
    assert app.value("#mfa-code") == spaced
    app.submit("form#mfa-form")
    app.wait_signed_in_home()
    assert app.text("#nav-user") == person.name
