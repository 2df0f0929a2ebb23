"""stack/hosted.py: Cognito's hosted OAuth 2.0 endpoints in a real emulator process, signing users in at a real
external IdP (oidc-provider-mock on loopback, as `make run` starts it), driven as a browser and an app drive them:
every redirect followed by hand, the IdP's sign-in page read and its form posted."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from authz.client import check
from authz.server import run_server
from stack.cognito import (
    LOCAL_IDP,
    OidcIdentityProvider,
    cognito_client,
    ensure_user,
    provision,
    provision_identity_provider,
    provision_machine_client,
    sign_in,
)
from stack.local import cognito_emulator, emulator_url, local_idp
from stack.processes import free_port
from stack.provision import IDP_ACCOUNTS, provision_local, provision_local_idp, register_idp_client
from tests.conftest import REGION, emulator_settings

# Where the app's pages are: the app client's callback and sign-out URL. Nothing listens there; the tests read the
# redirects the browser would follow.
APP = "http://127.0.0.1:8080/"
SCOPES = "openid email profile aws.cognito.signin.user.admin"
PASSWORD_USER = {"email": "pat@cruddur.local", "password": "Sup3r-secret!", "name": "Pat", "handle": "pat"}


@dataclass(frozen=True)
class Hosted:
    """A provisioned emulator with LocalIdP: its URL, the pool, the public app client and the IdP's URL."""

    endpoint: str
    pool_id: str
    client_id: str
    idp: str

    @property
    def group(self) -> str:
        return f"{self.pool_id}_{LOCAL_IDP}"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local IdP on a free loopback port (app registration required, a nonce in every sign-in)."""
    port = free_port()
    with local_idp(port, tmp_path_factory.mktemp("idp")):
        yield f"http://127.0.0.1:{port}"


def _provisioned(endpoint: str, idp: str) -> Hosted:
    env = provision_local(endpoint, REGION)
    provision_local_idp(env, idp, origins=[APP])
    return Hosted(endpoint, env["AWS_COGNITO_USER_POOLS_ID"], env["AWS_COGNITO_CLIENT_ID"], idp)


@pytest.fixture(scope="module")
def hosted(emulator: str, idp: str) -> Hosted:
    return _provisioned(emulator, idp)


@pytest.fixture
def browser() -> Iterator[requests.Session]:
    """A browser's cookie jar, for a test that follows the redirects by hand: the emulator's sign-in cookie, set at
    /oauth2/authorize, goes back with it to /oauth2/idpresponse."""
    with requests.Session() as session:
        yield session


# ------------------------------------------------------------------------------------------------ helpers


def pkce() -> tuple[str, str]:
    """(code_verifier, its S256 code_challenge)."""
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(hosted: Hosted, browser: requests.Session | None = None, **parameters: str | None) -> requests.Response:
    """GET /oauth2/authorize as the pages send it (a sign-in with LocalIdP, PKCE S256), parameters changed or, as
    None, left out, from browser (which keeps the emulator's sign-in cookie for /oauth2/idpresponse; without one,
    nothing keeps it); its redirect is not followed."""
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": hosted.client_id,
        "redirect_uri": APP,
        "state": "app-state-1",
        "identity_provider": LOCAL_IDP,
        "scope": SCOPES,
        "code_challenge_method": "S256",
        "code_challenge": pkce()[1],
        "nonce": "app-nonce-1",
    }
    query.update(parameters)
    return (browser or requests).get(
        hosted.endpoint + "/oauth2/authorize",
        params={key: value for key, value in query.items() if value is not None},
        allow_redirects=False,
        timeout=10,
    )


def at_idp(location: str, sub: str, *, deny: bool = False) -> requests.Response:
    """The IdP's sign-in page at location, as a browser uses it: the page is read, and its form posted with the
    predefined account's button (or any sub typed in its field, or Deny) to the page's own URL."""
    page = requests.get(location, timeout=10)
    assert page.status_code == 200, page.text
    assert '<form method="post"' in page.text
    if deny:
        form = {"action": "deny"}
    else:
        assert 'name="sub"' in page.text
        form = {"sub": sub}
    return requests.post(location, data=form, allow_redirects=False, timeout=10)


def redirect_query(response: requests.Response, origin: str) -> dict[str, str]:
    """The query of a 302 to origin, each parameter once."""
    assert response.status_code == 302, (response.status_code, response.text)
    location = response.headers["Location"]
    assert location.startswith(origin), location
    query = parse_qs(urlsplit(location).query)
    assert all(len(values) == 1 for values in query.values()), query
    return {key: values[0] for key, values in query.items()}


def sign_in_with_idp(hosted: Hosted, sub: str = "alice", **parameters: str | None) -> tuple[dict[str, str], str]:
    """The whole browser round trip, in a browser of its own: the app's authorize request, the IdP's page, back
    through /oauth2/idpresponse to the app. (the app's callback query, the code_verifier)."""
    verifier, challenge = pkce()
    with requests.Session() as browser:
        started = authorize(hosted, browser, **{"code_challenge": challenge, **parameters})
        to_idp = started.headers["Location"]
        assert started.status_code == 302 and to_idp.startswith(hosted.idp + "/oauth2/authorize"), started.text
        back_from_idp = at_idp(to_idp, sub)
        idp_response = back_from_idp.headers["Location"]
        assert back_from_idp.status_code == 302 and idp_response.startswith(hosted.endpoint + "/oauth2/idpresponse")
        return redirect_query(browser.get(idp_response, allow_redirects=False, timeout=10), APP), verifier


def token(hosted: Hosted, *, auth: tuple[str, str] | None = None, **form: str) -> requests.Response:
    """POST /oauth2/token with form (the public client's client_id unless given, or HTTP Basic auth)."""
    if auth is None:
        form.setdefault("client_id", hosted.client_id)
    return requests.post(hosted.endpoint + "/oauth2/token", data=form, auth=auth, timeout=10)


def redeem(hosted: Hosted, code: str, verifier: str, **form: str) -> requests.Response:
    """The authorization code grant for code, as the pages ask it (form changes a field)."""
    fields = {"client_id": hosted.client_id, "grant_type": "authorization_code", "code": code, "redirect_uri": APP}
    fields.update(code_verifier=verifier, **form)
    return requests.post(hosted.endpoint + "/oauth2/token", data=fields, timeout=10)


def signed_in(hosted: Hosted, sub: str = "alice", **parameters: str | None) -> dict[str, Any]:
    """The token endpoint's answer for a fresh federated sign-in of sub."""
    callback, verifier = sign_in_with_idp(hosted, sub, **parameters)
    answer = redeem(hosted, callback["code"], verifier)
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return tokens


def claims(hosted: Hosted, value: str) -> dict[str, Any]:
    """A token's claims, once its signature holds against the pool's JWKS as the emulator serves it."""
    keys = requests.get(f"{hosted.endpoint}/{hosted.pool_id}/.well-known/jwks.json", timeout=10).json()
    decoded: dict[str, Any] = jwt.decode(value, KeySet.import_key_set(keys), algorithms=["RS256"]).claims
    return decoded


def api(hosted: Hosted, action: str, *, http: requests.Session | None = None, **body: Any) -> requests.Response:
    """One user-pool API call as the JSON protocol sends it, its answer unread (no retries, unlike boto3's)."""
    return (http or requests).post(
        hosted.endpoint,
        data=json.dumps(body),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"AWSCognitoIdentityProviderService.{action}",
        },
        timeout=30,
    )


def oauth_error(response: requests.Response, status: int = 400) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    error: str = response.json()["error"]
    return error


def error_page(response: requests.Response) -> str:
    """The text of an error page the browser is shown (never a redirect)."""
    assert response.status_code == 400, (response.status_code, response.text)
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")
    return response.text


# ------------------------------------------------------------------------------------ the sign-in itself


def test_a_federated_sign_in_gives_the_app_a_code_then_cognito_shaped_tokens(hosted):
    """The browser goes from the app to the IdP (with the emulator's own state and nonce) and back to the app's
    callback URL with a code and the app's state; the code gives an access, id and refresh token, signed with the
    pool's key and shaped as Cognito's for a federated user."""
    started = authorize(hosted)
    idp_request = parse_qs(urlsplit(started.headers["Location"]).query)
    assert idp_request["redirect_uri"] == [hosted.endpoint + "/oauth2/idpresponse"]
    assert idp_request["scope"] == ["openid email profile"]
    assert idp_request["state"] != ["app-state-1"] and idp_request["nonce"] != ["app-nonce-1"]

    callback, verifier = sign_in_with_idp(hosted)
    assert set(callback) == {"code", "state"} and callback["state"] == "app-state-1"
    answer = redeem(hosted, callback["code"], verifier)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    tokens = answer.json()
    assert set(tokens) == {"access_token", "id_token", "refresh_token", "token_type", "expires_in"}
    assert (tokens["token_type"], tokens["expires_in"]) == ("Bearer", 3600)

    access, identity = claims(hosted, tokens["access_token"]), claims(hosted, tokens["id_token"])
    issuer = f"https://cognito-idp.{REGION}.amazonaws.com/{hosted.pool_id}"
    assert access["iss"] == identity["iss"] == issuer
    assert access["token_use"] == "access" and identity["token_use"] == "id"
    assert access["scope"] == SCOPES
    assert access["username"] == identity["cognito:username"] == "LocalIdP_alice"
    assert access["cognito:groups"] == identity["cognito:groups"] == [hosted.group]
    assert (access["client_id"], identity["aud"]) == (hosted.client_id, hosted.client_id)
    assert access["origin_jti"] == identity["origin_jti"] and access["jti"] != identity["jti"]
    assert access["version"] == 2 and access["sub"] == identity["sub"]
    assert access["auth_time"] == identity["auth_time"] and access["exp"] - access["iat"] == 3600
    assert identity["nonce"] == "app-nonce-1"
    assert (identity["email"], identity["email_verified"]) == ("alice@idp.local", True)
    assert (identity["name"], identity["preferred_username"]) == ("Alice Federated", "alice")
    [federated] = identity["identities"]
    assert federated["userId"] == "alice" and federated["providerName"] == LOCAL_IDP
    assert (federated["providerType"], federated["issuer"], federated["primary"]) == ("OIDC", None, "true")
    assert federated["dateCreated"].isdigit()


def test_the_federated_user_is_in_the_pool_as_cognito_shows_one(hosted):
    """The user the sign-in made is `LocalIdP_<sub>`, EXTERNAL_PROVIDER, with the mapped attributes and the
    identities attribute, a member of the automatic group `<poolId>_LocalIdP`; GetUser answers for its token."""
    tokens = signed_in(hosted, "bob")
    cognito = cognito_client(REGION, hosted.endpoint)
    user = cognito.admin_get_user(UserPoolId=hosted.pool_id, Username="LocalIdP_bob")
    assert user["UserStatus"] == "EXTERNAL_PROVIDER"
    attributes = {attribute["Name"]: attribute["Value"] for attribute in user["UserAttributes"]}
    account = IDP_ACCOUNTS["bob"]
    assert attributes["email"] == account["email"] and attributes["email_verified"] == "true"
    assert (attributes["name"], attributes["preferred_username"]) == (account["name"], account["preferred_username"])
    [identity] = json.loads(attributes["identities"])
    assert identity["userId"] == "bob" and identity["providerName"] == LOCAL_IDP and identity["primary"] is True
    groups = cognito.admin_list_groups_for_user(UserPoolId=hosted.pool_id, Username="LocalIdP_bob")["Groups"]
    assert [group["GroupName"] for group in groups] == [hosted.group]
    me = cognito.get_user(AccessToken=tokens["access_token"])
    assert me["Username"] == "LocalIdP_bob"
    assert {a["Name"]: a["Value"] for a in me["UserAttributes"]}["sub"] == claims(hosted, tokens["access_token"])["sub"]


def test_a_second_sign_in_writes_the_mapped_attributes_again_to_the_same_user(hosted):
    """Cognito writes every mapped attribute on each federated sign-in: a name changed at the IdP reaches the same
    user (same sub, still one identity)."""
    claims_at_idp = {"email": "dora@idp.local", "name": "Dora", "preferred_username": "dora"}
    requests.put(f"{hosted.idp}/users/dora", json=claims_at_idp, timeout=10).raise_for_status()
    first = claims(hosted, signed_in(hosted, "dora")["id_token"])
    requests.put(f"{hosted.idp}/users/dora", json={**claims_at_idp, "name": "Dora Renamed"}, timeout=10)
    second = claims(hosted, signed_in(hosted, "dora")["id_token"])
    assert (first["name"], second["name"]) == ("Dora", "Dora Renamed")
    assert first["sub"] == second["sub"] and first["identities"] == second["identities"]
    users = cognito_client(REGION, hosted.endpoint).list_users(
        UserPoolId=hosted.pool_id, Filter='username = "LocalIdP_dora"'
    )
    assert len(users["Users"]) == 1


def test_a_user_the_idp_knows_nothing_of_is_refused_for_the_pools_required_attributes(hosted, browser):
    """A sub typed on the IdP's page has only an email claim: the pool requires name and preferred_username, so the
    app gets invalid_request naming them, and no user is made."""
    to_idp = authorize(hosted, browser).headers["Location"]
    back = at_idp(to_idp, "typed-by-hand").headers["Location"]
    callback = redirect_query(browser.get(back, allow_redirects=False, timeout=10), APP)
    assert callback["error"] == "invalid_request" and callback["state"] == "app-state-1"
    assert callback["error_description"] == "attributes required: [name, preferred_username]"
    cognito = cognito_client(REGION, hosted.endpoint)
    with pytest.raises(cognito.exceptions.UserNotFoundException):
        cognito.admin_get_user(UserPoolId=hosted.pool_id, Username="LocalIdP_typed-by-hand")


def test_an_idps_error_reaches_the_app_as_its_own(hosted, browser):
    """An IdP's standard error answer (access_denied, with the state it was sent) goes on to the app's callback URL
    as that error, with the provider named in its description and the app's own state."""
    to_idp = urlsplit(authorize(hosted, browser).headers["Location"])
    sent_state = parse_qs(to_idp.query)["state"][0]
    answer = browser.get(
        hosted.endpoint + "/oauth2/idpresponse",
        params={"error": "access_denied", "error_description": "The user said no", "state": sent_state},
        allow_redirects=False,
        timeout=10,
    )
    callback = redirect_query(answer, APP)
    assert (callback["error"], callback["state"]) == ("access_denied", "app-state-1")
    assert callback["error_description"] == "LocalIdP Error - access_denied The user said no"


def test_a_denial_without_state_gets_a_page(hosted, browser):
    """oidc-provider-mock's Deny button answers access_denied without the state it was sent (RFC 6749 wants it
    echoed): the emulator cannot tell whose sign-in that was, so the browser is shown a page, and no app is sent
    anything."""
    to_idp = authorize(hosted, browser).headers["Location"]
    back = at_idp(to_idp, "alice", deny=True).headers["Location"]
    assert "error=access_denied" in back and "state=" not in back
    assert "Unknown sign-in" in error_page(browser.get(back, allow_redirects=False, timeout=10))


@pytest.mark.parametrize("fault", ["unreachable", "another issuer", "wrong client secret"])
def test_an_idp_the_emulator_cannot_use_is_reported_to_the_app(hosted, browser, fault):
    """An IdP that does not answer, whose discovery document names another issuer, or whose token endpoint refuses
    the emulator's client_secret_basic, ends the sign-in with invalid_request on the app's callback URL, worded as
    Cognito words it."""
    cognito = cognito_client(REGION, hosted.endpoint)
    if fault == "unreachable":
        provider = OidcIdentityProvider(issuer=f"http://127.0.0.1:{free_port()}", client_id="x", client_secret="y")
    elif fault == "another issuer":
        provider = OidcIdentityProvider(issuer=hosted.idp + "/", client_id="x", client_secret="y")
    else:
        client_id, _ = register_idp_client(hosted.idp, hosted.endpoint + "/oauth2/idpresponse")
        provider = OidcIdentityProvider(issuer=hosted.idp, client_id=client_id, client_secret="not-the-secret")
    provision_identity_provider(
        cognito, hosted.pool_id, hosted.client_id, provider, callback_urls=[APP], logout_urls=[APP]
    )
    try:
        started = authorize(hosted, browser)
        if fault == "wrong client secret":
            back = at_idp(started.headers["Location"], "alice").headers["Location"]
            callback = redirect_query(browser.get(back, allow_redirects=False, timeout=10), APP)
        else:
            callback = redirect_query(started, APP)
    finally:
        _provisioned(hosted.endpoint, hosted.idp)
    assert (callback["error"], callback["state"]) == ("invalid_request", "app-state-1")
    expected = {
        "unreachable": "LocalIdP Error - discovery document unreachable",
        "another issuer": "LocalIdP Error - issuer",
        "wrong client secret": "LocalIdP Error - 401 invalid_client",
    }[fault]
    assert callback["error_description"].startswith(expected), callback


@pytest.mark.parametrize(
    ("claims_at_idp", "refused"),
    [
        ({"aud": ["{client}", "another-client"]}, "azp"),
        ({"aud": ["{client}", "another-client"], "azp": "another-client"}, "azp"),
        ({"azp": "another-client"}, "azp"),
        ({"iat": "{in an hour}"}, "iat"),
        ({"iat": "no time"}, "iat"),
        ({"nbf": "{in an hour}"}, "nbf"),
        ({"aud": ["{client}", "another-client"], "azp": "{client}"}, None),
        ({"iat": "{in 10 s}", "nbf": "{in 10 s}"}, None),
    ],
    ids=[
        "two audiences, no azp",
        "two audiences, azp another",
        "azp another",
        "issued in an hour",
        "iat no time",
        "not before an hour",
        "two audiences, azp the emulator",
        "issued within the clock skew",
    ],
)
def test_the_idps_id_token_must_be_for_the_emulator_and_issued_by_now(hosted, browser, claims_at_idp, refused):
    """OIDC Core 3.1.3.7: an id token with several audiences needs azp, and an azp must name the emulator's client at
    the IdP; its iat (required) and nbf may not be later than now, give or take a small clock skew. Any other token
    ends the sign-in with invalid_request on the app's callback URL, naming the claim."""
    cognito = cognito_client(REGION, hosted.endpoint)
    provider = cognito.describe_identity_provider(UserPoolId=hosted.pool_id, ProviderName=LOCAL_IDP)
    client_at_idp = provider["IdentityProvider"]["ProviderDetails"]["client_id"]
    now = int(time.time())
    values = {"{client}": client_at_idp, "{in an hour}": now + 3600, "{in 10 s}": now + 10}

    def filled(value: Any) -> Any:
        return [filled(item) for item in value] if isinstance(value, list) else values.get(value, value)

    idp_user(hosted, "gina", **{claim: filled(value) for claim, value in claims_at_idp.items()})
    back = at_idp(authorize(hosted, browser).headers["Location"], "gina").headers["Location"]
    callback = redirect_query(browser.get(back, allow_redirects=False, timeout=10), APP)
    if refused is None:
        assert set(callback) == {"code", "state"}, callback
    else:
        assert (callback.get("error"), callback["state"]) == ("invalid_request", "app-state-1"), callback
        assert callback["error_description"].startswith(f"LocalIdP Error - invalid id_token: {refused}"), callback


@pytest.mark.parametrize("tampering", ["changed", "missing", "replayed"])
def test_idpresponse_takes_only_a_state_it_sent_and_only_once(hosted, browser, tampering):
    """A state the emulator did not send (changed, missing) or saw back already is shown an error page: no code, no
    redirect anywhere."""
    to_idp = authorize(hosted, browser).headers["Location"]
    back = at_idp(to_idp, "alice").headers["Location"]
    parts = urlsplit(back)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    if tampering == "changed":
        query["state"] = query["state"][:-2] + ("AA" if not query["state"].endswith("AA") else "BB")
    elif tampering == "missing":
        del query["state"]
    else:
        redirect_query(browser.get(back, allow_redirects=False, timeout=10), APP)
    answer = browser.get(
        f"{parts.scheme}://{parts.netloc}{parts.path}", params=query, allow_redirects=False, timeout=10
    )
    assert "Unknown sign-in" in error_page(answer)


def idp_user(hosted: Hosted, sub: str, **claims_at_idp: Any) -> None:
    """An account at the IdP with the claims the pool requires (and any given)."""
    local = sub.partition("@")[0]
    body = {"email": f"{local}@idp.local", "email_verified": True, "name": local.title(), "preferred_username": local}
    requests.put(f"{hosted.idp}/users/{sub}", json={**body, **claims_at_idp}, timeout=10).raise_for_status()


def password_user(hosted: Hosted, handle: str) -> tuple[str, dict[str, str]]:
    """A new user of the pool who signed up with a password: (their email, their sign-in's tokens)."""
    cognito = cognito_client(REGION, hosted.endpoint)
    email, password = f"{handle}-{secrets.token_hex(4)}@cruddur.local", "Sup3r-secret!"
    ensure_user(cognito, provision(cognito, REGION), email=email, password=password, name=handle, handle=handle)
    return email, sign_in(cognito, hosted.client_id, email, password)


def cognito_error(answer: requests.Response) -> tuple[str, str]:
    """A user-pool API error answer's (type, message)."""
    assert answer.status_code == 400, (answer.status_code, answer.text)
    body = answer.json()
    return body["__type"], body["message"]


def test_an_email_that_is_no_email_address_is_refused(hosted):
    """Cognito's InvalidParameterException for an email attribute that is not an email address, from
    UpdateUserAttributes, AdminUpdateUserAttributes and SignUp: a native user cannot make her email a federated
    user's name (LocalIdP_alice), which moto's user lookups take for her email."""
    signed_in(hosted, "alice")
    email, tokens = password_user(hosted, "mallory")
    refused = ("InvalidParameterException", "Invalid email address format.")
    email_of = [{"Name": "email", "Value": "LocalIdP_alice"}]
    assert (
        cognito_error(api(hosted, "UpdateUserAttributes", AccessToken=tokens["AccessToken"], UserAttributes=email_of))
        == refused
    )
    pool_id = claims(hosted, tokens["AccessToken"])["iss"].rpartition("/")[2]
    assert (
        cognito_error(
            api(hosted, "AdminUpdateUserAttributes", UserPoolId=pool_id, Username=email, UserAttributes=email_of)
        )
        == refused
    )
    sign_up = api(
        hosted,
        "SignUp",
        ClientId=hosted.client_id,
        Username=f"other-{email}",
        Password="Sup3r-secret!",
        UserAttributes=[*email_of, {"Name": "name", "Value": "M"}, {"Name": "preferred_username", "Value": "m"}],
    )
    assert cognito_error(sign_up) == refused
    me = api(hosted, "GetUser", AccessToken=tokens["AccessToken"]).json()
    assert {a["Name"]: a["Value"] for a in me["UserAttributes"]}["email"] == email


def test_an_idp_email_that_is_no_email_address_is_refused(hosted, browser):
    """An IdP whose email claim is not an email address (here a federated user's name) ends the sign-in with
    invalid_request on the app's callback URL, and no user is made."""
    idp_user(hosted, "erin", email="LocalIdP_alice")
    to_idp = authorize(hosted, browser).headers["Location"]
    back = at_idp(to_idp, "erin").headers["Location"]
    callback = redirect_query(browser.get(back, allow_redirects=False, timeout=10), APP)
    assert (callback["error"], callback["state"]) == ("invalid_request", "app-state-1")
    assert callback["error_description"] == "Invalid user attributes: email: Invalid email address format."
    cognito = cognito_client(REGION, hosted.endpoint)
    with pytest.raises(cognito.exceptions.UserNotFoundException):
        cognito.admin_get_user(UserPoolId=hosted.pool_id, Username="LocalIdP_erin")


def test_a_user_whose_email_is_a_federated_users_name_gets_none_of_its_sessions(hosted):
    """A federated user's name can be an email address (LocalIdP_carol@idp.local, for an IdP whose user ids are
    emails), which moto looks up as an email first: once a native user takes it as her email, the federated user's
    refresh (token endpoint and REFRESH_TOKEN_AUTH), a new sign-in and userInfo still give the federated user's own
    sub and name, and GetUser refuses the federated user's token rather than answer with the other user."""
    idp_user(hosted, "carol@idp.local")
    carol = signed_in(hosted, "carol@idp.local")
    sub = claims(hosted, carol["access_token"])["sub"]
    _, mallory = password_user(hosted, "mallory")
    taken = [{"Name": "email", "Value": "LocalIdP_carol@idp.local"}]
    assert (
        api(hosted, "UpdateUserAttributes", AccessToken=mallory["AccessToken"], UserAttributes=taken).status_code == 200
    )

    def own(access_token: str) -> None:
        access = claims(hosted, access_token)
        assert (access["sub"], access["username"]) == (sub, "LocalIdP_carol@idp.local")

    refreshed = token(hosted, grant_type="refresh_token", refresh_token=carol["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    own(refreshed.json()["access_token"])
    by_api = api(
        hosted,
        "InitiateAuth",
        ClientId=hosted.client_id,
        AuthFlow="REFRESH_TOKEN_AUTH",
        AuthParameters={"REFRESH_TOKEN": carol["refresh_token"]},
    )
    assert by_api.status_code == 200, by_api.text
    own(by_api.json()["AuthenticationResult"]["AccessToken"])
    again = signed_in(hosted, "carol@idp.local")
    own(again["access_token"])
    info = requests.get(
        hosted.endpoint + "/oauth2/userInfo", headers={"Authorization": f"Bearer {again['access_token']}"}, timeout=10
    ).json()
    assert (info["sub"], info["username"]) == (sub, "LocalIdP_carol@idp.local")
    for access_token in (carol["access_token"], again["access_token"]):
        assert cognito_error(api(hosted, "GetUser", AccessToken=access_token)) == (
            "NotAuthorizedException",
            "Invalid Access Token",
        )


def test_a_password_users_session_never_passes_to_whoever_takes_its_old_email(hosted):
    """moto names a password sign-in's user by the email it signed in with: once the user changes email and another
    user takes the old one, the first sign-in's access token is refused by GetUser and its refresh token by
    REFRESH_TOKEN_AUTH and the token endpoint, where moto would answer with the other user."""
    first_email, first = password_user(hosted, "pat")
    _, mallory = password_user(hosted, "mallory")
    moved = [{"Name": "email", "Value": f"moved-{first_email}"}]
    assert (
        api(hosted, "UpdateUserAttributes", AccessToken=first["AccessToken"], UserAttributes=moved).status_code == 200
    )
    taken = [{"Name": "email", "Value": first_email}]
    assert (
        api(hosted, "UpdateUserAttributes", AccessToken=mallory["AccessToken"], UserAttributes=taken).status_code == 200
    )

    assert cognito_error(api(hosted, "GetUser", AccessToken=first["AccessToken"]))[0] == "NotAuthorizedException"
    refresh = api(
        hosted,
        "InitiateAuth",
        ClientId=hosted.client_id,
        AuthFlow="REFRESH_TOKEN_AUTH",
        AuthParameters={"REFRESH_TOKEN": first["RefreshToken"]},
    )
    assert cognito_error(refresh) == ("NotAuthorizedException", "Invalid Refresh Token")
    at_endpoint = token(hosted, grant_type="refresh_token", refresh_token=first["RefreshToken"])
    assert oauth_error(at_endpoint) == "invalid_grant"


def test_a_deleted_users_code_and_session_do_not_pass_to_a_new_user_of_the_same_name(hosted):
    """A code and a refresh token are bound to the user's sub: once the federated user is deleted and signs in again
    (the same name, a new sub), the old user's unredeemed code and refresh token are invalid_grant."""
    idp_user(hosted, "frank")
    old_callback, old_verifier = sign_in_with_idp(hosted, "frank")
    old = signed_in(hosted, "frank")
    cognito_client(REGION, hosted.endpoint).admin_delete_user(UserPoolId=hosted.pool_id, Username="LocalIdP_frank")
    new = signed_in(hosted, "frank")
    assert claims(hosted, new["access_token"])["sub"] != claims(hosted, old["access_token"])["sub"]
    assert oauth_error(redeem(hosted, old_callback["code"], old_verifier)) == "invalid_grant"
    assert oauth_error(token(hosted, grant_type="refresh_token", refresh_token=old["refresh_token"])) == "invalid_grant"


@pytest.mark.parametrize("cookie", ["none", "another sign-in's", "changed"])
def test_idpresponse_takes_only_the_browser_that_started_the_sign_in(hosted, browser, cookie):
    """/oauth2/authorize gives the browser it sends to the IdP a sign-in cookie (HttpOnly, SameSite=Lax, for
    /oauth2/ only, as long as a sign-in may take); the IdP's answer brought back by any other browser (a login CSRF:
    the attacker's own sign-in, finished in the victim's browser) gets an error page, no code, and that sign-in is
    over. The browser that started it is sent on to the app, and its cookie cleared."""
    started = authorize(hosted, browser)
    [set_cookie] = started.raw.headers.getlist("Set-Cookie")
    attributes = {
        part.strip().partition("=")[0].lower(): part.strip().partition("=")[2] for part in set_cookie.split(";")
    }
    assert attributes["path"] == "/oauth2/" and attributes["samesite"] == "Lax" and "httponly" in attributes
    assert attributes["max-age"] == "600" and "secure" not in attributes  # the emulator is reached over http
    [jar_cookie] = list(browser.cookies)
    back = at_idp(started.headers["Location"], "alice").headers["Location"]

    with requests.Session() as elsewhere:
        if cookie == "another sign-in's":
            authorize(hosted, elsewhere)
        elif cookie == "changed":
            elsewhere.cookies.set(jar_cookie.name, "not-the-value", path="/oauth2/")
        page = error_page(elsewhere.get(back, allow_redirects=False, timeout=10))
    assert "another browser" in page
    assert "Unknown sign-in" in error_page(browser.get(back, allow_redirects=False, timeout=10))

    again = authorize(hosted, browser)
    back = at_idp(again.headers["Location"], "alice").headers["Location"]
    finished = browser.get(back, allow_redirects=False, timeout=10)
    assert set(redirect_query(finished, APP)) == {"code", "state"}
    assert "Max-Age=0" in finished.headers["Set-Cookie"]


def test_authz_allows_a_federated_users_tokens(hosted, emulator):
    """The authz server accepts a federated user's access token (asking GetUser, as AUTHZ_REVOCATION=cognito does),
    with its sub, client and automatic group, and its id token on an id-token route with the provider."""
    tokens = signed_in(hosted)
    settings = emulator_settings(emulator, hosted.pool_id, hosted.client_id, revocation=True)
    with run_server(settings) as server:
        addr = f"127.0.0.1:{server.port}"
        allowed = check(addr, token=tokens["access_token"], path="/api/me")
        assert allowed["allowed"], allowed
        headers = allowed["upstream_headers"]
        assert headers["x-user-sub"] == claims(hosted, tokens["access_token"])["sub"]
        assert (headers["x-user-client-id"], headers["x-user-groups"]) == (hosted.client_id, hosted.group)
        identity = check(addr, token=tokens["id_token"], context={"token_use": "id"})
        assert identity["allowed"] and identity["upstream_headers"]["x-user-idp"] == LOCAL_IDP


# ----------------------------------------------------------------------------------- /oauth2/authorize


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({"client_id": "no-such-client"}, "Unknown app client"),
        ({"client_id": None}, "Unknown app client"),
        ({"redirect_uri": "https://attacker.example/"}, "redirect_mismatch"),
        ({"redirect_uri": APP + "elsewhere"}, "redirect_mismatch"),
        ({"redirect_uri": None}, "redirect_mismatch"),
    ],
)
def test_an_unknown_client_or_unregistered_redirect_uri_gets_a_page_never_a_redirect(hosted, change, shown):
    """Until the client and its redirect_uri are known good, errors are an error page: nothing goes to the URL."""
    assert shown in error_page(authorize(hosted, **change))


def test_without_identity_provider_the_page_says_there_is_no_managed_login(hosted):
    """The emulator has no managed login pages: no identity_provider (or COGNITO) gets a page saying so, naming the
    provider to use."""
    for provider in (None, "COGNITO"):
        page = error_page(authorize(hosted, identity_provider=provider))
        assert "no managed login pages" in page and LOCAL_IDP in page


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"response_type": None}, "invalid_request"),
        ({"response_type": "token"}, "unauthorized_client"),
        ({"response_type": "id_token"}, "unsupported_response_type"),
        ({"identity_provider": "Google"}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"scope": "openid no-such-scope"}, "invalid_scope"),
        ({"scope": "email profile"}, "invalid_scope"),
        ({"scope": "reports-api/read"}, "invalid_scope"),
    ],
)
def test_a_bad_authorization_request_of_a_known_client_goes_back_to_the_app(hosted, change, error):
    """Once client and redirect_uri are good, Cognito sends errors to the callback URL: error= and the app's state
    (an implicit grant the client is not allowed, identity_provider not among the client's, PKCE plain or half, a
    scope the pool does not know, email without openid, no scope the client is allowed)."""
    provision_machine_client(cognito_client(REGION, hosted.endpoint), hosted.pool_id)
    callback = redirect_query(authorize(hosted, **change), APP)
    assert (callback["error"], callback["state"]) == (error, "app-state-1"), callback
    assert "code" not in callback


def test_scopes_the_client_is_not_allowed_are_left_out_and_none_means_all(hosted):
    """A known scope the client was not given (phone) is ignored, as Cognito does; no scope parameter grants all of
    the client's."""
    narrowed = signed_in(hosted, scope="openid phone")
    assert claims(hosted, narrowed["access_token"])["scope"] == "openid"
    everything = signed_in(hosted, scope=None)
    assert claims(hosted, everything["access_token"])["scope"] == SCOPES


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("GetUser", {}),
        ("GlobalSignOut", {}),
        ("UpdateUserAttributes", {"UserAttributes": [{"Name": "name", "Value": "Changed"}]}),
        ("ChangePassword", {"PreviousPassword": "x", "ProposedPassword": "Sup3r-secret!"}),
        ("AssociateSoftwareToken", {}),
        ("VerifySoftwareToken", {"UserCode": "123456"}),
        ("SetUserMFAPreference", {"SoftwareTokenMfaSettings": {"Enabled": False}}),
        ("DeleteUser", {}),
    ],
)
def test_a_token_without_the_admin_scope_is_refused_by_the_user_api(hosted, action, body):
    """An access token granted openid, email and profile but not aws.cognito.signin.user.admin is refused by every
    user-pool action that takes an AccessToken, with Cognito's NotAuthorizedException, and the action does nothing:
    the user is still there, the token still good at userInfo."""
    tokens = signed_in(hosted, "bob", scope="openid email profile")
    answer = api(hosted, action, AccessToken=tokens["access_token"], **body)
    assert cognito_error(answer) == ("NotAuthorizedException", "Access Token does not have required scopes")
    user = cognito_client(REGION, hosted.endpoint).admin_get_user(UserPoolId=hosted.pool_id, Username="LocalIdP_bob")
    assert {a["Name"]: a["Value"] for a in user["UserAttributes"]}["name"] == IDP_ACCOUNTS["bob"]["name"]
    info = requests.get(
        hosted.endpoint + "/oauth2/userInfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
    )
    assert info.status_code == 200, info.text


def test_without_openid_there_is_no_id_token(hosted):
    """An id token comes only with the openid scope."""
    tokens = signed_in(hosted, scope="aws.cognito.signin.user.admin")
    assert "id_token" not in tokens and "refresh_token" in tokens


# --------------------------------------------------------------------------------------- /oauth2/token


def test_a_wrong_verifier_is_invalid_grant_and_uses_the_code_up(hosted):
    """RFC 7636: a code_verifier that does not hash to the challenge is invalid_grant; the code is spent, so the
    right verifier after it is refused too."""
    callback, verifier = sign_in_with_idp(hosted)
    assert oauth_error(redeem(hosted, callback["code"], pkce()[0])) == "invalid_grant"
    assert oauth_error(redeem(hosted, callback["code"], verifier)) == "invalid_grant"


def test_a_verifier_for_a_code_issued_without_a_challenge_is_invalid_grant(hosted):
    """RFC 9700 2.1.1: a code_verifier sent for a code issued without a code_challenge (a confidential client's,
    which may leave PKCE out) is invalid_grant, not ignored; the same client's code without a verifier is good."""
    cognito = cognito_client(REGION, hosted.endpoint)
    confidential = cognito.create_user_pool_client(
        UserPoolId=hosted.pool_id,
        ClientName="confidential-pages",
        GenerateSecret=True,
        AllowedOAuthFlows=["code"],
        AllowedOAuthFlowsUserPoolClient=True,
        AllowedOAuthScopes=SCOPES.split(),
        CallbackURLs=[APP],
        SupportedIdentityProviders=[LOCAL_IDP],
    )["UserPoolClient"]
    credentials = {"client_id": confidential["ClientId"], "client_secret": confidential["ClientSecret"]}
    without_pkce = {"client_id": confidential["ClientId"], "code_challenge": None, "code_challenge_method": None}
    callback, _ = sign_in_with_idp(hosted, **without_pkce)
    assert oauth_error(redeem(hosted, callback["code"], pkce()[0], **credentials)) == "invalid_grant"
    callback, _ = sign_in_with_idp(hosted, **without_pkce)
    fields = {"grant_type": "authorization_code", "code": callback["code"], "redirect_uri": APP, **credentials}
    assert requests.post(hosted.endpoint + "/oauth2/token", data=fields, timeout=10).status_code == 200


def test_a_code_is_good_once(hosted):
    """A code redeemed once is invalid_grant the second time."""
    callback, verifier = sign_in_with_idp(hosted)
    assert redeem(hosted, callback["code"], verifier).status_code == 200
    assert oauth_error(redeem(hosted, callback["code"], verifier)) == "invalid_grant"


def test_a_code_is_bound_to_its_client_and_redirect_uri(hosted):
    """A code issued to the pages' client is invalid_grant for another client of the pool, and for another
    redirect_uri (even one of the client's own)."""
    cognito = cognito_client(REGION, hosted.endpoint)
    other = cognito.create_user_pool_client(
        UserPoolId=hosted.pool_id,
        ClientName="other-pages",
        AllowedOAuthFlows=["code"],
        AllowedOAuthFlowsUserPoolClient=True,
        AllowedOAuthScopes=SCOPES.split(),
        CallbackURLs=[APP],
        SupportedIdentityProviders=[LOCAL_IDP],
    )["UserPoolClient"]["ClientId"]
    callback, verifier = sign_in_with_idp(hosted)
    assert oauth_error(redeem(hosted, callback["code"], verifier, client_id=other)) == "invalid_grant"
    callback, verifier = sign_in_with_idp(hosted)
    assert (
        oauth_error(redeem(hosted, callback["code"], verifier, redirect_uri="http://localhost:8080/"))
        == "invalid_grant"
    )


def test_an_expired_code_is_invalid_grant(tmp_path, idp):
    """A code past its lifetime (EMULATOR_AUTHORIZATION_CODE_SECONDS, here 0: expired as soon as issued) is
    invalid_grant."""
    port = free_port()
    with cognito_emulator(port, tmp_path, REGION, settings={"EMULATOR_AUTHORIZATION_CODE_SECONDS": "0"}):
        hosted = _provisioned(emulator_url(port), idp)
        callback, verifier = sign_in_with_idp(hosted)
        assert oauth_error(redeem(hosted, callback["code"], verifier)) == "invalid_grant"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password", "username": "x", "password": "y"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        ({"grant_type": "authorization_code"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "authorization_code", "code": "made-up", "redirect_uri": APP}, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "made-up"}, "invalid_grant"),
        ({"grant_type": "client_credentials"}, "unauthorized_client"),
        ({"grant_type": "refresh_token", "refresh_token": "x", "client_id": "no-such-client"}, "invalid_client"),
        (
            {"grant_type": "refresh_token", "refresh_token": "x", "client_secret": "a public client has none"},
            "invalid_client",
        ),
    ],
)
def test_the_token_endpoint_answers_cognitos_errors(hosted, form, error):
    """Each malformed or refused request gets its RFC 6749 error, as JSON with HTTP 400."""
    assert oauth_error(token(hosted, **form)) == error


def test_the_token_endpoint_takes_only_a_form(hosted):
    """A JSON body is invalid_request: the endpoint reads application/x-www-form-urlencoded only."""
    answer = requests.post(hosted.endpoint + "/oauth2/token", json={"grant_type": "refresh_token"}, timeout=10)
    assert oauth_error(answer) == "invalid_request"


def test_a_refresh_keeps_the_session_and_gives_no_new_refresh_token(hosted):
    """grant_type=refresh_token gives a new access and id token of the same session (origin_jti, scopes, auth_time)
    and no refresh token; so does InitiateAuth's REFRESH_TOKEN_AUTH with it."""
    tokens = signed_in(hosted, scope="openid email aws.cognito.signin.user.admin")
    first = claims(hosted, tokens["access_token"])
    answer = token(hosted, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert answer.status_code == 200, answer.text
    refreshed = answer.json()
    assert set(refreshed) == {"access_token", "id_token", "token_type", "expires_in"}
    again = claims(hosted, refreshed["access_token"])
    assert (again["origin_jti"], again["scope"], again["auth_time"]) == (
        first["origin_jti"],
        first["scope"],
        first["auth_time"],
    )
    assert again["jti"] != first["jti"] and claims(hosted, refreshed["id_token"])["origin_jti"] == first["origin_jti"]

    result = cognito_client(REGION, hosted.endpoint).initiate_auth(
        ClientId=hosted.client_id,
        AuthFlow="REFRESH_TOKEN_AUTH",
        AuthParameters={"REFRESH_TOKEN": tokens["refresh_token"]},
    )["AuthenticationResult"]
    assert "RefreshToken" not in result
    api = claims(hosted, result["AccessToken"])
    assert (api["origin_jti"], api["scope"], api["username"]) == (first["origin_jti"], first["scope"], "LocalIdP_alice")


def test_a_password_sign_ins_refresh_token_works_at_the_token_endpoint(hosted):
    """A refresh token from InitiateAuth (USER_PASSWORD_AUTH) refreshes at the token endpoint too, into tokens
    GetUser answers for, with the admin scope its sign-in had."""
    cognito = cognito_client(REGION, hosted.endpoint)
    provisioned = provision(cognito, REGION)
    ensure_user(cognito, provisioned, **PASSWORD_USER)
    signed = sign_in(cognito, hosted.client_id, PASSWORD_USER["email"], PASSWORD_USER["password"])
    answer = token(hosted, grant_type="refresh_token", refresh_token=signed["RefreshToken"])
    assert answer.status_code == 200, answer.text
    refreshed = answer.json()
    assert claims(hosted, refreshed["access_token"])["scope"] == "aws.cognito.signin.user.admin"
    assert (
        cognito.get_user(AccessToken=refreshed["access_token"])["Username"]
        == claims(hosted, refreshed["access_token"])["sub"]
    )


def test_client_credentials_give_the_machine_client_its_resource_server_scopes(hosted):
    """The confidential client, by HTTP Basic, gets an access token of its own (sub: its id) with its resource
    server scope; a scope it lacks is ignored, and with none left it is invalid_scope; a wrong secret is
    invalid_client."""
    machine = provision_machine_client(cognito_client(REGION, hosted.endpoint), hosted.pool_id)
    basic = (machine.client_id, machine.secret)
    answer = token(hosted, auth=basic, grant_type="client_credentials")
    assert answer.status_code == 200, answer.text
    issued = answer.json()
    assert set(issued) == {"access_token", "token_type", "expires_in"}
    access = claims(hosted, issued["access_token"])
    assert (access["sub"], access["client_id"], access["scope"]) == (
        machine.client_id,
        machine.client_id,
        "reports-api/read",
    )
    assert "username" not in access and "cognito:groups" not in access
    narrowed = token(hosted, auth=basic, grant_type="client_credentials", scope="reports-api/write reports-api/read")
    assert claims(hosted, narrowed.json()["access_token"])["scope"] == "reports-api/read"
    assert (
        oauth_error(token(hosted, auth=basic, grant_type="client_credentials", scope="reports-api/write"))
        == "invalid_scope"
    )
    wrong = (machine.client_id, "not-the-secret")
    assert oauth_error(token(hosted, auth=wrong, grant_type="client_credentials")) == "invalid_client"


# ----------------------------------------------------------------------------- revocation and sign-out


def test_revoking_a_refresh_token_ends_its_session(hosted):
    """POST /oauth2/revoke with the refresh token: 200 and an empty body; the refresh token is invalid_grant after
    it, and the access token it came with is refused by GetUser and userInfo."""
    tokens = signed_in(hosted)
    revoked = requests.post(
        hosted.endpoint + "/oauth2/revoke",
        data={"token": tokens["refresh_token"], "client_id": hosted.client_id},
        timeout=10,
    )
    assert (revoked.status_code, revoked.content) == (200, b"")
    assert (
        oauth_error(token(hosted, grant_type="refresh_token", refresh_token=tokens["refresh_token"])) == "invalid_grant"
    )
    cognito = cognito_client(REGION, hosted.endpoint)
    with pytest.raises(cognito.exceptions.NotAuthorizedException):
        cognito.get_user(AccessToken=tokens["access_token"])
    info = requests.get(
        hosted.endpoint + "/oauth2/userInfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
    )
    assert oauth_error(info, 401) == "invalid_token"


def test_revoking_leaves_other_sessions_of_the_user_alone(hosted):
    """Only the tokens issued from the revoked refresh token stop working: another sign-in of the same user goes
    on."""
    kept, ended = signed_in(hosted), signed_in(hosted)
    requests.post(
        hosted.endpoint + "/oauth2/revoke",
        data={"token": ended["refresh_token"], "client_id": hosted.client_id},
        timeout=10,
    )
    cognito = cognito_client(REGION, hosted.endpoint)
    assert cognito.get_user(AccessToken=kept["access_token"])["Username"] == "LocalIdP_alice"
    assert token(hosted, grant_type="refresh_token", refresh_token=kept["refresh_token"]).status_code == 200


def test_the_revocation_endpoint_answers_cognitos_errors(hosted):
    """An unknown token is 200 (RFC 7009); an access token is unsupported_token_type; no token is invalid_request;
    an unknown client is 401 invalid_client; a client without EnableTokenRevocation is invalid_request."""

    def revoke(**form: str) -> requests.Response:
        return requests.post(hosted.endpoint + "/oauth2/revoke", data=form, timeout=10)

    tokens = signed_in(hosted)
    assert revoke(token="no-such-token", client_id=hosted.client_id).status_code == 200
    assert oauth_error(revoke(token=tokens["access_token"], client_id=hosted.client_id)) == "unsupported_token_type"
    assert oauth_error(revoke(client_id=hosted.client_id)) == "invalid_request"
    assert oauth_error(revoke(token=tokens["refresh_token"], client_id="no-such-client"), 401) == "invalid_client"
    cognito = cognito_client(REGION, hosted.endpoint)
    closed = cognito.create_user_pool_client(
        UserPoolId=hosted.pool_id, ClientName="no-revocation", EnableTokenRevocation=False
    )["UserPoolClient"]["ClientId"]
    assert oauth_error(revoke(token=tokens["refresh_token"], client_id=closed)) == "invalid_request"
    # None of these revoked anything.
    assert token(hosted, grant_type="refresh_token", refresh_token=tokens["refresh_token"]).status_code == 200


def test_the_revoke_token_action_revokes_as_the_endpoint_does(hosted):
    """RevokeToken (the user-pool API) revokes the refresh token and its tokens: REFRESH_TOKEN_AUTH is then refused;
    an access token is UnsupportedTokenTypeException."""
    cognito = cognito_client(REGION, hosted.endpoint)
    tokens = signed_in(hosted)
    with pytest.raises(cognito.exceptions.UnsupportedTokenTypeException):
        cognito.revoke_token(Token=tokens["access_token"], ClientId=hosted.client_id)
    cognito.revoke_token(Token=tokens["refresh_token"], ClientId=hosted.client_id)
    with pytest.raises(cognito.exceptions.NotAuthorizedException, match="revoked"):
        cognito.initiate_auth(
            ClientId=hosted.client_id,
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": tokens["refresh_token"]},
        )
    with pytest.raises(cognito.exceptions.NotAuthorizedException):
        cognito.get_user(AccessToken=tokens["access_token"])


def test_a_revocation_racing_refreshes_always_ends_its_session(hosted):
    """RevokeToken while the user's other session refreshes through the user-pool API in several threads (each
    refresh adding tokens to the pool's tables) answers 200 every time, and the revoked session's access token is
    refused by GetUser right after."""
    cognito = cognito_client(REGION, hosted.endpoint)
    ensure_user(cognito, provision(cognito, REGION), **PASSWORD_USER)
    refreshed = sign_in(cognito, hosted.client_id, PASSWORD_USER["email"], PASSWORD_USER["password"])["RefreshToken"]
    stop = threading.Event()

    def refresh_until_stopped() -> int:
        with requests.Session() as http:
            count = 0
            while not stop.is_set():
                answer = api(
                    hosted,
                    "InitiateAuth",
                    http=http,
                    ClientId=hosted.client_id,
                    AuthFlow="REFRESH_TOKEN_AUTH",
                    AuthParameters={"REFRESH_TOKEN": refreshed},
                )
                assert answer.status_code == 200, answer.text
                count += 1
            return count

    refused: list[tuple[int, str]] = []
    with ThreadPoolExecutor(4) as threads:
        refreshing = [threads.submit(refresh_until_stopped) for _ in range(4)]
        try:
            time.sleep(3)  # the tables grow while the refreshes run
            for _ in range(20):
                session = sign_in(cognito, hosted.client_id, PASSWORD_USER["email"], PASSWORD_USER["password"])
                revoked = api(hosted, "RevokeToken", ClientId=hosted.client_id, Token=session["RefreshToken"])
                if revoked.status_code != 200:
                    refused.append((revoked.status_code, revoked.text))
                still = api(hosted, "GetUser", AccessToken=session["AccessToken"])
                if still.status_code != 400:
                    refused.append((still.status_code, "GetUser answered for a revoked session"))
        finally:
            stop.set()
        assert all(future.result() > 0 for future in refreshing)
    assert refused == []


def test_global_sign_out_ends_a_federated_users_sessions(hosted):
    """GlobalSignOut with a federated user's access token revokes its tokens: GetUser and the token endpoint refuse
    them."""
    cognito = cognito_client(REGION, hosted.endpoint)
    tokens = signed_in(hosted, "bob")
    cognito.global_sign_out(AccessToken=tokens["access_token"])
    with pytest.raises(cognito.exceptions.NotAuthorizedException):
        cognito.get_user(AccessToken=tokens["access_token"])
    assert (
        oauth_error(token(hosted, grant_type="refresh_token", refresh_token=tokens["refresh_token"])) == "invalid_grant"
    )


# ------------------------------------------------------------------------------- userInfo, logout, CORS


def test_user_info_answers_for_a_token_with_the_openid_scope(hosted):
    """/oauth2/userInfo gives the user's attributes and username for the token endpoint's access token; a token
    without openid (as InitiateAuth's) is 401 invalid_token, and no bearer token is 400 invalid_request, each named
    in WWW-Authenticate."""

    def user_info(authorization: str | None) -> requests.Response:
        headers = {"Authorization": authorization} if authorization else {}
        return requests.get(hosted.endpoint + "/oauth2/userInfo", headers=headers, timeout=10)

    tokens = signed_in(hosted)
    info = user_info(f"Bearer {tokens['access_token']}")
    assert info.status_code == 200, info.text
    body = info.json()
    assert (body["username"], body["email"], body["name"]) == ("LocalIdP_alice", "alice@idp.local", "Alice Federated")
    assert body["sub"] == claims(hosted, tokens["access_token"])["sub"]

    cognito = cognito_client(REGION, hosted.endpoint)
    ensure_user(cognito, provision(cognito, REGION), **PASSWORD_USER)
    api_token = sign_in(cognito, hosted.client_id, PASSWORD_USER["email"], PASSWORD_USER["password"])["AccessToken"]
    refused = user_info(f"Bearer {api_token}")
    assert oauth_error(refused, 401) == "invalid_token"
    assert refused.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    missing = user_info(None)
    assert oauth_error(missing, 400) == "invalid_request"
    assert 'error="invalid_request"' in missing.headers["WWW-Authenticate"]


def test_logout_goes_back_only_to_a_registered_sign_out_url(hosted):
    """/logout sends the browser to logout_uri when it is one of the client's LogoutURLs; any other, or an unknown
    client, gets an error page."""

    def logout(**query: str) -> requests.Response:
        return requests.get(hosted.endpoint + "/logout", params=query, allow_redirects=False, timeout=10)

    answer = logout(client_id=hosted.client_id, logout_uri=APP)
    assert (answer.status_code, answer.headers["Location"]) == (302, APP)
    assert "not one of the app client" in error_page(
        logout(client_id=hosted.client_id, logout_uri="https://attacker.example/")
    )
    assert "Unknown app client" in error_page(logout(client_id="no-such-client", logout_uri=APP))


@pytest.mark.parametrize(
    ("path", "method"), [("/oauth2/token", "POST"), ("/oauth2/revoke", "POST"), ("/oauth2/userInfo", "GET")]
)
def test_the_endpoints_pages_fetch_answer_other_origins(hosted, path, method):
    """The token, revoke and userInfo endpoints answer a preflight for the pages' origin, and their answers (errors
    included) carry it, so the pages read them."""
    origin = APP.rstrip("/")
    preflight = requests.options(
        hosted.endpoint + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization",
        },
        timeout=10,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert method in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    answer = requests.request(method, hosted.endpoint + path, headers={"Origin": origin}, timeout=10)
    assert answer.status_code in (400, 401) and answer.headers["Access-Control-Allow-Origin"] == origin


# ----------------------------------------------------------------------------------------- provisioning


def test_provisioning_the_identity_provider_is_idempotent_and_keeps_the_clients_settings(emulator, idp):
    """provision() and the IdP's provisioning, run twice, leave one pool, one client and one LocalIdP: the client
    keeps its password flows and gains the hosted-UI settings, token revocation and the pool's optional TOTP."""
    first, again = _provisioned(emulator, idp), _provisioned(emulator, idp)
    assert (first.pool_id, first.client_id) == (again.pool_id, again.client_id)
    cognito = cognito_client(REGION, emulator)
    providers = cognito.list_identity_providers(UserPoolId=first.pool_id)["Providers"]
    assert [provider["ProviderName"] for provider in providers] == [LOCAL_IDP]
    provider = cognito.describe_identity_provider(UserPoolId=first.pool_id, ProviderName=LOCAL_IDP)["IdentityProvider"]
    assert provider["ProviderType"] == "OIDC" and provider["ProviderDetails"]["oidc_issuer"] == idp
    assert provider["ProviderDetails"]["authorize_scopes"] == "openid email profile"
    assert provider["AttributeMapping"]["username"] == "sub"
    app = cognito.describe_user_pool_client(UserPoolId=first.pool_id, ClientId=first.client_id)["UserPoolClient"]
    assert app["ClientName"] == "cruddur" and "ALLOW_USER_PASSWORD_AUTH" in app["ExplicitAuthFlows"]
    assert (app["AllowedOAuthFlows"], app["AllowedOAuthFlowsUserPoolClient"]) == (["code"], True)
    assert app["AllowedOAuthScopes"] == SCOPES.split() and app["CallbackURLs"] == app["LogoutURLs"] == [APP]
    assert app["SupportedIdentityProviders"] == ["COGNITO", LOCAL_IDP] and app["EnableTokenRevocation"] is True
    mfa = cognito.get_user_pool_mfa_config(UserPoolId=first.pool_id)
    assert mfa["MfaConfiguration"] == "OPTIONAL" and mfa["SoftwareTokenMfaConfiguration"] == {"Enabled": True}


def test_provisioning_updates_an_existing_provider(emulator, idp):
    """A second provisioning with another registration replaces the provider's details."""
    hosted = _provisioned(emulator, idp)
    cognito = cognito_client(REGION, emulator)
    provision_identity_provider(
        cognito,
        hosted.pool_id,
        hosted.client_id,
        OidcIdentityProvider(issuer=idp, client_id="another-registration", client_secret="s3cret"),
        callback_urls=[APP],
        logout_urls=[APP],
    )
    provider = cognito.describe_identity_provider(UserPoolId=hosted.pool_id, ProviderName=LOCAL_IDP)["IdentityProvider"]
    assert provider["ProviderDetails"]["client_id"] == "another-registration"
    _provisioned(emulator, idp)  # back to a registration the IdP knows, for the tests after this one
