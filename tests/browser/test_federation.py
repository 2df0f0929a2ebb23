""" "Sign in with LocalIdP" in a real browser: the pages' authorization code flow with PKCE through the emulator's
hosted endpoints (/oauth2/authorize, /oauth2/token, /logout) and the stack's external IdP (oidc-provider-mock, whose
own page signs the user in), and what the pages refuse: an answer to a sign-in this tab did not start, a code whose
verifier does not match, and a sign-in that no longer says where its code is to be exchanged."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from stack.cognito import LOCAL_IDP
from stack.local import LocalStack
from stack.provision import IDP_ACCOUNTS
from tests.browser.accounts import EmulatorLog, api_identity, claims_of, refresh_refused
from tests.browser.pages import App

BUTTON = f"Sign in with {LOCAL_IDP}"


def provider_button(app: App) -> WebElement:
    """The sign-in page's "Sign in with LocalIdP" button."""
    app.open("/signin")
    app.wait_page("signin")
    return app.wait(
        lambda: next(
            (b for b in app.driver.find_elements(By.CSS_SELECTOR, "#signin-providers button") if b.text == BUTTON),
            None,
        ),
        lambda: f"no {BUTTON!r} button (providers: {app.text('#signin-providers')!r})",
    )


def leave_for_the_idp(app: App, stack: LocalStack) -> str:
    """Click "Sign in with LocalIdP" and wait for the IdP's own sign-in page; returns its URL."""
    provider_button(app).click()
    app.wait(
        lambda: app.driver.current_url.startswith(stack.idp_url) and app.driver.find_elements(By.NAME, "sub"),
        lambda: f"the IdP's page never showed (at {app.driver.current_url!r}: {app.body_text()[:300]!r})",
    )
    return app.driver.current_url


def sign_in_at_the_idp(app: App, account: str) -> None:
    """On the IdP's page, sign in as one of its predefined accounts (a button each)."""
    app.find(f'button[name="sub"][value="{account}"]').click()


def back_on_the_pages(app: App) -> None:
    """The browser is back on the pages (and their callback handling has run: a page shows)."""
    app.wait(
        lambda: app.driver.current_url.startswith(app.origin) and app.page_names(),
        lambda: f"never back on the pages (at {app.driver.current_url!r}: {app.body_text()[:300]!r})",
    )


def signed_in_with_the_idp(app: App, stack: LocalStack, account: str) -> dict[str, Any]:
    """Sign in with LocalIdP as account, through to home signed in; returns the stored session."""
    leave_for_the_idp(app, stack)
    sign_in_at_the_idp(app, account)
    back_on_the_pages(app)
    app.wait_signed_in_home()
    return app.signed_in_session()


def tamper_pending_sign_in(app: App, idp_page: str, **changes: str) -> dict[str, Any]:
    """While the IdP's page shows, change what the pages stored for the sign-in (on the pages' origin, where the
    storage is), then return to the IdP's page. Returns what was stored before."""
    app.driver.get(app.origin + "/api/health")
    pending = app.pending_sign_in()
    assert pending is not None, "the pages stored nothing for the sign-in under way"
    app.store_pending_sign_in({**pending, **changes})
    app.driver.get(idp_page)
    app.wait(lambda: app.driver.find_elements(By.NAME, "sub"), "the IdP's page did not show again")
    return pending


def test_sign_in_with_the_idp_lands_home_signed_in(app: App, browser_stack: LocalStack, cognito: Any) -> None:
    """A visitor clicks "Sign in with LocalIdP", signs in on the IdP's own page and lands home signed in as the
    federated user: their name from the IdP, their own item first in the feed, the code gone from the address bar and
    nothing of the round trip left in storage; authz through Envoy takes the access token as that user (x-user-sub
    its sub), and Cognito knows them as LocalIdP_<IdP sub>."""
    account = "alice"
    leave_for_the_idp(app, browser_stack)
    sign_in_at_the_idp(app, account)
    back_on_the_pages(app)

    feed = app.wait_signed_in_home()
    assert app.text("#nav-user") == IDP_ACCOUNTS[account]["name"]
    assert feed[0]["own"] and not any(item["own"] for item in feed[1:]), feed
    assert app.driver.execute_script("return location.search") == "", app.driver.current_url
    assert app.hash in ("", "#/"), app.hash
    assert app.pending_sign_in() is None
    assert "code=" in app.loaded_url()  # it did come back with a code

    session = app.signed_in_session()
    sub = claims_of(session["accessToken"])["sub"]
    user = cognito.get_user(AccessToken=session["accessToken"])
    assert user["Username"] == f"{LOCAL_IDP}_{account}"
    assert {a["Name"]: a["Value"] for a in user["UserAttributes"]}["sub"] == sub
    identity = api_identity(browser_stack, session["accessToken"])
    assert identity["sub"] == sub


def test_a_federated_session_refreshes_and_its_sign_out_revokes_it(
    app: App, browser_stack: LocalStack, cognito: Any
) -> None:
    """A session from the IdP sign-in is refreshed as a password one is (InitiateAuth REFRESH_TOKEN_AUTH with the
    refresh token the token endpoint gave), and signing out revokes that refresh token at Cognito."""
    before = signed_in_with_the_idp(app, browser_stack, "bob")
    before["expiresAt"] = time.time() * 1000 + 30_000
    app.store_session(before)

    app.reload()
    after = app.wait(
        lambda: (session := app.session()) and session["accessToken"] != before["accessToken"] and session,
        "the federated session's access token was not refreshed within 10 s",
    )
    assert after["refreshToken"] == before["refreshToken"]
    assert after.get("hosted") is True  # still known to be a hosted sign-in's, for sign-out to end that session too
    app.wait_signed_in_home()

    app.find("button#signout").click()
    app.wait_signed_out_home()
    assert not app.shown("#home-notice"), app.text("#home-notice")
    assert refresh_refused(cognito, browser_stack, before["refreshToken"])


def test_an_answer_with_another_state_is_refused_and_its_code_not_exchanged(
    app: App, browser_stack: LocalStack, cognito: Any
) -> None:
    """When the state that comes back is not the one this tab stored (here: the stored one changed while the user was
    at the IdP), the pages say the sign-in could not be completed, exchange nothing (the code is still unspent: the
    test redeems it itself), keep no session and forget the sign-in under way."""
    idp_page = leave_for_the_idp(app, browser_stack)
    pending = tamper_pending_sign_in(app, idp_page, state="not-the-state-that-comes-back")
    sign_in_at_the_idp(app, "alice")
    back_on_the_pages(app)

    app.wait_page("signin")
    assert "could not be completed" in app.wait_text("#signin-error").lower()
    assert app.session() is None and app.pending_sign_in() is None
    assert app.driver.execute_script("return location.search") == ""
    assert not any("/oauth2/token" in url for url in app.requested_urls()), app.requested_urls()

    returned = parse_qs(urlsplit(app.loaded_url()).query)
    assert returned["state"] == [pending["state"]]
    redeemed = requests.post(
        browser_stack.cognito_env["AWS_ENDPOINT_URL_COGNITO_IDP"] + "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "client_id": browser_stack.cognito_env["AWS_COGNITO_CLIENT_ID"],
            "code": returned["code"][0],
            "redirect_uri": app.origin + "/",
            "code_verifier": pending["verifier"],
        },
        timeout=5,
    )
    assert redeemed.status_code == 200 and redeemed.json()["access_token"], redeemed.text


def test_a_code_with_the_wrong_verifier_is_refused_at_the_token_endpoint(
    app: App, browser_stack: LocalStack, cognito: Any
) -> None:
    """PKCE: when the verifier the pages send does not hash to the challenge they sent at the start (here: the stored
    verifier changed while the user was at the IdP), the token endpoint refuses the code (invalid_grant), and the
    sign-in page says so; no session is kept."""
    idp_page = leave_for_the_idp(app, browser_stack)
    tamper_pending_sign_in(app, idp_page, verifier="A" * 43)
    sign_in_at_the_idp(app, "alice")
    back_on_the_pages(app)

    app.wait_page("signin")
    message = app.wait_text("#signin-error", "invalid_grant")
    assert "refused" in message.lower(), message
    assert any("/oauth2/token" in url for url in app.requested_urls()), app.requested_urls()
    assert app.session() is None and app.pending_sign_in() is None
    assert app.driver.execute_script("return location.search") == ""


def test_each_configured_provider_has_a_button_and_nothing_else_does(app: App) -> None:
    """The sign-in page offers "Sign in with LocalIdP" (the stack's one provider), as a button of its own below the
    password form, and no other provider."""
    provider_button(app)
    buttons = [b.text for b in app.driver.find_elements(By.CSS_SELECTOR, "#signin-providers button")]
    assert buttons == [BUTTON]


def test_an_error_answer_to_this_tabs_sign_in_is_shown(app: App) -> None:
    """An authorization error response (RFC 6749 4.1.2.1: ?error=&error_description= with this tab's state), as Cognito
    sends when the user or the IdP turns the sign-in down, shows on the sign-in page with the provider's name and the
    error; nothing is exchanged and the query leaves the address bar."""
    app.open("/signin")
    app.wait_page("signin")
    app.store_pending_sign_in({"state": "s" * 43, "verifier": "v" * 43, "provider": LOCAL_IDP})
    app.driver.get(f"{app.origin}/?error=access_denied&error_description=The+user+said+no&state={'s' * 43}")

    app.wait_page("signin")
    message = app.wait_text("#signin-error", "access_denied")
    assert LOCAL_IDP in message and "The user said no" in message, message
    assert not any("/oauth2/token" in url for url in app.requested_urls()), app.requested_urls()
    assert app.session() is None and app.pending_sign_in() is None
    assert app.driver.execute_script("return location.search") == ""


def test_a_code_from_a_sign_in_this_tab_never_started_is_not_exchanged(app: App) -> None:
    """A link to the pages with someone else's code and state (a login CSRF: signing the visitor in as the attacker)
    finds no sign-in under way in this tab: the pages refuse it and ask the token endpoint nothing."""
    app.driver.get(f"{app.origin}/?code=someone-elses-code&state=someone-elses-state")

    app.wait_page("signin")
    assert "could not be completed" in app.wait_text("#signin-error").lower()
    assert not any("/oauth2/token" in url for url in app.requested_urls()), app.requested_urls()
    assert app.session() is None
    assert app.driver.execute_script("return location.search") == ""


def test_sign_out_after_the_idp_sign_in_ends_cognitos_hosted_session(
    app: App, browser_stack: LocalStack, cognito: Any
) -> None:
    """After "Sign in with LocalIdP", "Sign out" also ends Cognito's own sign-in session: once the tab's tokens are
    revoked, the browser passes through the hosted /logout (the app client's id, the pages' root as logout_uri: the
    client's sign-out URL exactly) and lands on the pages' root, home signed out with no notice; Cognito refuses the
    refresh token."""
    session = signed_in_with_the_idp(app, browser_stack, "alice")
    log = EmulatorLog(browser_stack)

    app.find("button#signout").click()
    app.wait(lambda: log.logouts(), "the browser never went through the hosted /logout")
    app.wait_signed_out_home()
    assert log.logouts() == [
        {"client_id": [browser_stack.cognito_env["AWS_COGNITO_CLIENT_ID"]], "logout_uri": [app.origin + "/"]}
    ]
    assert app.driver.current_url == app.origin + "/", app.driver.current_url
    assert not app.shown("#home-notice"), app.text("#home-notice")
    assert app.session() is None and "cruddur." not in app.storage()
    assert refresh_refused(cognito, browser_stack, session["refreshToken"])


def test_the_hosted_sign_out_still_says_when_other_devices_may_be_signed_in(
    app: App, browser_stack: LocalStack, cognito: Any
) -> None:
    """When GlobalSignOut fails at the sign-out of an IdP sign-in (here: the stored access token is one Cognito never
    issued), the page the hosted /logout sends the browser back to says the other devices may not be signed out;
    the tab's refresh token is revoked all the same, and the notice shows once (not again on a reload)."""
    session = signed_in_with_the_idp(app, browser_stack, "bob")
    app.store_session({**session, "accessToken": session["accessToken"] + "x"})
    log = EmulatorLog(browser_stack)

    app.find("button#signout").click()
    app.wait_page("home")
    assert "failed" in app.wait_text("#home-notice", "other devices").lower()
    assert len(log.logouts()) == 1
    app.wait_signed_out_home()
    assert app.session() is None
    assert refresh_refused(cognito, browser_stack, session["refreshToken"])

    app.open("/")
    app.wait_signed_out_home()
    assert not app.shown("#home-notice"), app.text("#home-notice")


@pytest.mark.parametrize(
    "lost",
    [
        {"domain": None},
        {"domain": ""},
        {"domain": "/cognito"},
        {"clientId": None},
        {"redirectUri": None},
        {"redirectUri": "/"},
    ],
)
def test_a_sign_in_that_lost_where_to_exchange_its_code_exchanges_nothing(
    app: App, browser_stack: LocalStack, lost: dict[str, str | None]
) -> None:
    """The code is exchanged at the domain, with the client and callback the sign-in started with, and nowhere else:
    when what the tab kept for the sign-in lacks one of them (or has a relative URL), the answer, though it has this
    tab's state, is not exchanged (no token request, not even to the page's own origin): the sign-in page says the
    sign-in could not be completed, and nothing is kept."""
    app.open("/signin")
    app.wait_page("signin")
    pending: dict[str, str | None] = {
        "state": "s" * 43,
        "verifier": "v" * 43,
        "provider": LOCAL_IDP,
        "domain": browser_stack.cognito_env["AWS_ENDPOINT_URL_COGNITO_IDP"],
        "clientId": browser_stack.cognito_env["AWS_COGNITO_CLIENT_ID"],
        "redirectUri": app.origin + "/",
    }
    pending.update(lost)
    app.store_pending_sign_in({key: value for key, value in pending.items() if value is not None})
    app.driver.get(f"{app.origin}/?code=a-code&state={'s' * 43}")

    app.wait_page("signin")
    message = app.wait_text("#signin-error", "could not be completed")
    assert LOCAL_IDP in message, message
    assert not any("/oauth2/token" in url for url in app.requested_urls()), app.requested_urls()
    assert app.session() is None and app.pending_sign_in() is None
    assert app.driver.execute_script("return location.search") == ""


def test_an_answer_is_cleared_away_even_when_the_config_does_not_load(app: App) -> None:
    """When /web/config.json cannot be loaded (here: blocked, as an unreachable server), the pages say the sign-in
    settings could not be loaded, and a provider's answer they were loaded with still leaves the address bar, and the
    sign-in under way leaves storage: neither is there for a later load to use."""
    app.open("/signin")
    app.wait_page("signin")
    app.store_pending_sign_in({"state": "s" * 43, "verifier": "v" * 43, "provider": LOCAL_IDP})

    with app.blocking("*/web/config.json"):
        app.driver.get(f"{app.origin}/?code=a-code&state={'s' * 43}")
        app.wait_page("unavailable")
        assert "could not be loaded" in app.wait_text('main[data-page="unavailable"] .error').lower()
        assert app.driver.execute_script("return location.search") == ""
        assert app.pending_sign_in() is None
        assert not any("/oauth2/token" in url for url in app.requested_urls()), app.requested_urls()
