// The Cruddur pages: hash routes, one module. Cognito is called directly (cognito.js, and oauth.js for its hosted
// endpoints), the API through Envoy on this same origin with the access token in the Authorization header (api
// below); tokens live in sessionStorage (session.js says why). User data is only ever written with textContent.

import { cognitoClient, CognitoError } from "./cognito.js";
import { authorizationResponse, authorizeUrl, finishSignIn, logoutUrl, OAuthError, takePending } from "./oauth.js";
import { claims, clearSession, displayName, loadSession, saveProfile, saveSession } from "./session.js";
import { groupedSecret, otpauthUri, qrSvg } from "./totp.js";

const REFRESH_MARGIN_MS = 60_000; // refresh when less than this remains on the access token
const REFRESH_CHECK_MS = 15_000;
const NOTICES = {
  confirmed: "Your email is confirmed. Sign in to continue.",
  reset: "Your password is changed. Sign in with the new one.",
  session: "Your session has ended. Sign in again.",
  "signed-out-here": "You are signed out on this device, but signing out your other devices failed: they stay signed in until their session ends.",
};

// A notice for the page the browser comes back to after Cognito's /logout (the way back is the app client's sign-out
// URL exactly, so it cannot carry the notice): kept in this tab's storage until the pages load again.
const NOTICE_KEY = "cruddur.notice";

let cognito = null;
// /web/config.json: the pool, client and Cognito endpoint, the sign-out route if any, and the hosted endpoints'
// domain with the identity providers offered there, if any.
let config = {};
let refreshing = null;
// Why the last sign-in did not complete, for the sign-in page to show once (a provider's sign-in comes back to a
// fresh page load, so it cannot throw into the sign-in form).
let signInProblem = "";

const view = document.getElementById("view");
const nav = document.getElementById("nav");

function clone(id) {
  return document.getElementById(id).content.cloneNode(true);
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  return { path: path || "/", params: new URLSearchParams(query) };
}

function show(element, text) {
  element.textContent = text;
  element.hidden = !text;
}

function message(error) {
  if (error instanceof CognitoError || error instanceof OAuthError) return error.message;
  return "Something went wrong. Please try again.";
}

// -- session and tokens ---------------------------------------------------------------------------------------

async function freshSession() {
  const session = loadSession();
  if (!session) return null;
  if (session.expiresAt - Date.now() > REFRESH_MARGIN_MS) return session;
  refreshing ??= renew(session).finally(() => {
    refreshing = null;
  });
  return refreshing;
}

async function renew(session) {
  try {
    const answer = await cognito.refresh(session.refreshToken);
    const current = loadSession();
    // Signed out (or refused by the API) while the refresh was on its way: it must not sign this tab back in.
    if (!current || current.refreshToken !== session.refreshToken) return null;
    return saveSession(answer.AuthenticationResult, current);
  } catch (failure) {
    if (failure instanceof CognitoError && failure.type === "NotAuthorizedException") {
      // The refresh token is revoked or expired: sign in again.
      if (loadSession()) {
        clearSession();
        go("#/signin?notice=session");
      }
      return null;
    }
    // Offline, throttled or failing: keep the session and try again at the next check.
    return session.expiresAt > Date.now() ? session : null;
  }
}

function notice(key) {
  return key && Object.hasOwn(NOTICES, key) ? NOTICES[key] : "";
}

async function api(path) {
  const session = await freshSession();
  const headers = session ? { Authorization: `Bearer ${session.accessToken}` } : {};
  const response = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  if (response.status === 401 && session) {
    // The API refused the token (revoked, signed out elsewhere, or otherwise invalid): start over.
    clearSession();
    go("#/signin?notice=session");
    return null;
  }
  if (!response.ok) throw new Error(`the API answered ${response.status}`);
  return response.json();
}

function renderNav() {
  const session = loadSession();
  nav.replaceChildren(clone(session ? "nav-signed-in" : "nav-signed-out"));
  if (session) {
    document.getElementById("nav-user").textContent = displayName(session);
    document.getElementById("signout").addEventListener("click", signOut);
  }
}

async function signOut(event) {
  event.target.disabled = true;
  // GlobalSignOut needs an access token Cognito still accepts: refresh first if it is about to expire.
  const session = (await freshSession().catch(() => null)) || loadSession();
  clearSession();
  if (session && config.signOutPath) {
    // Every authz replica refuses this user's tokens from now on, before Cognito's own sign-out is asked (it is
    // what the replicas would otherwise learn only at their next GetUser). A failure here still signs out below.
    await fetch(config.signOutPath, {
      method: "POST",
      headers: { Authorization: `Bearer ${session.accessToken}` },
      cache: "no-store",
      credentials: "omit",
    }).catch(() => null);
  }
  let everywhere = true;
  if (session) {
    // GlobalSignOut first: RevokeToken also revokes the access tokens issued with the refresh token, after which
    // Cognito would no longer take GlobalSignOut from this one. RevokeToken still ends this tab's session at Cognito
    // when GlobalSignOut fails (an access token Cognito no longer takes, say).
    try {
      await cognito.globalSignOut(session.accessToken); // every device, as the seed's signOut({ global: true })
    } catch {
      everywhere = false;
    }
    try {
      await cognito.revokeToken(session.refreshToken);
    } catch {
      // Nothing more to say: after a GlobalSignOut that went through, this refresh token is revoked already (and
      // what Cognito answers RevokeToken for it then is not documented); after one that failed, the notice says so.
    }
  }
  // This device is signed out either way; when GlobalSignOut failed, say that the others may not be.
  const noticeKey = everywhere ? "" : "signed-out-here";
  if (session?.hosted && config.domain) {
    // Signed in through Cognito's hosted sign-in: Cognito keeps a session of its own there (a cookie on its domain,
    // an hour at a real pool) that would sign the next "Sign in with <provider>" straight back in. Its /logout ends
    // it and sends the browser back to the pages' root.
    if (noticeKey) sessionStorage.setItem(NOTICE_KEY, noticeKey);
    location.assign(logoutUrl(config));
    return;
  }
  go(noticeKey ? `#/?notice=${noticeKey}` : "#/");
}

// After a sign-in (a password, a code, or a provider's, hosted: through Cognito's hosted sign-in): keep the tokens,
// and the name the user signed up with (id tokens from some issuers, the local emulator's among them, lack it). The
// caller goes on to home.
async function signedIn(result, { hosted = false } = {}) {
  const session = saveSession(result, hosted ? { hosted } : {});
  try {
    saveProfile(session, (await cognito.getUser(session.accessToken)).UserAttributes);
  } catch {
    // Only the greeting needs it: fall back to the id token's claims.
  }
}

// -- pages ----------------------------------------------------------------------------------------------------

async function home(params) {
  view.replaceChildren(clone("page-home"));
  show(document.getElementById("home-notice"), notice(params.get("notice")));
  const session = loadSession();
  document.getElementById("home-lead").textContent = session
    ? `Welcome back, ${displayName(session)}.`
    : "What people are saying. Sign in to see your own activity.";
  let items;
  try {
    items = await api("/api/activities/home");
  } catch {
    show(document.getElementById("feed-error"), "The feed is unavailable right now. Please try again.");
    return;
  }
  if (items === null) return;
  const me = session ? { sub: claims(session.accessToken).sub, name: displayName(session) } : null;
  const feed = document.getElementById("feed");
  if (!feed) return; // navigated away meanwhile
  feed.replaceChildren(...items.map((item) => activity(item, me)));
}

function activity(item, me) {
  const node = clone("activity");
  const article = node.querySelector("article");
  const own = me !== null && item.uuid === me.sub;
  article.classList.toggle("own", own);
  article.querySelector(".badge").hidden = !own;
  // The API names the caller by their Cognito username (the sub, in an email sign-in pool); show their name.
  article.querySelector(".handle").textContent = own ? me.name : item.handle;
  article.querySelector(".message").textContent = item.message;
  const time = article.querySelector("time");
  time.dateTime = item.created_at;
  time.textContent = new Date(item.created_at).toLocaleString();
  article.querySelector(".counts").textContent =
    `${item.likes_count} likes · ${item.replies_count ?? (item.replies || []).length} replies · ${item.reposts_count} reposts`;
  return node;
}

function form(pageId, formId, errorId, submit) {
  view.replaceChildren(clone(pageId));
  const element = document.getElementById(formId);
  bind(element, document.getElementById(errorId), submit);
  return element;
}

// submit(values) on the form's submit, once every required field is filled in; what it throws is shown in error.
function bind(element, error, submit) {
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = element.querySelector("button[type=submit]");
    show(error, "");
    for (const field of element.querySelectorAll("[required]")) {
      if (!field.value.trim()) {
        show(error, `Please fill in ${field.labels[0].textContent.toLowerCase()}.`);
        field.focus();
        return;
      }
    }
    const values = Object.fromEntries(new FormData(element));
    button.disabled = true;
    try {
      await submit(values);
    } catch (failure) {
      show(error, message(failure));
    } finally {
      button.disabled = false;
    }
  });
}

// A TOTP code as apps show it: six digits (spaces or dashes an app or a paste put in the middle are dropped).
function totpCode(value) {
  const code = value.replace(/[\s-]+/g, "");
  if (!/^[0-9]{6}$/.test(code)) throw new CognitoError("InvalidCode", "Enter the 6-digit code from your authenticator app.");
  return code;
}

function signUp() {
  form("page-signup", "signup-form", "signup-error", async ({ name, handle, email, password }) => {
    await cognito.signUp({ email: email.trim(), password, name: name.trim(), handle: handle.trim() });
    go(`#/confirm?email=${encodeURIComponent(email.trim())}`);
  });
}

function confirm(params) {
  const element = form("page-confirm", "confirm-form", "confirm-error", async ({ email, code }) => {
    await cognito.confirmSignUp(email.trim(), code.trim());
    go("#/signin?notice=confirmed");
  });
  element.email.value = params.get("email") || "";
  const status = document.getElementById("confirm-status");
  document.getElementById("resend-code").addEventListener("click", async (event) => {
    const error = document.getElementById("confirm-error");
    show(error, "");
    status.textContent = "";
    if (!element.email.value.trim()) {
      show(error, "Please fill in email.");
      return;
    }
    event.target.disabled = true;
    try {
      await cognito.resendCode(element.email.value.trim());
      status.textContent = "A new code was sent to your email.";
    } catch (failure) {
      show(error, message(failure));
    } finally {
      event.target.disabled = false;
    }
  });
}

const UNSUPPORTED_STEP = "This account needs a sign-in step these pages do not support.";

function signIn(params) {
  const element = form("page-signin", "signin-form", "signin-error", async ({ email, password }) => {
    let answer;
    try {
      answer = await cognito.signIn(email.trim(), password);
    } catch (failure) {
      if (failure instanceof CognitoError && failure.type === "UserNotConfirmedException") {
        go(`#/confirm?email=${encodeURIComponent(email.trim())}`);
        return;
      }
      throw failure;
    }
    if (answer.ChallengeName === "SOFTWARE_TOKEN_MFA") {
      askForCode(email.trim(), answer);
      return;
    }
    if (!answer.AuthenticationResult) {
      throw new CognitoError(answer.ChallengeName || "Challenge", UNSUPPORTED_STEP);
    }
    await signedIn(answer.AuthenticationResult);
    go("#/");
  });
  element.email.value = params.get("email") || "";
  show(document.getElementById("signin-notice"), notice(params.get("notice")));
  show(document.getElementById("signin-error"), signInProblem);
  signInProblem = "";
  providerButtons(document.getElementById("signin-providers"), document.getElementById("signin-error"));
}

// "Sign in with <provider>", one button per provider the pool offers on its hosted endpoints.
function providerButtons(container, error) {
  const providers = config.domain && Array.isArray(config.identityProviders) ? config.identityProviders : [];
  for (const provider of providers) {
    const button = clone("provider-button").querySelector("button");
    button.textContent = `Sign in with ${provider}`;
    button.addEventListener("click", async () => {
      show(error, "");
      button.disabled = true;
      try {
        location.assign(await authorizeUrl(config, provider));
      } catch (failure) {
        show(error, message(failure));
        button.disabled = false;
      }
    });
    container.append(button);
  }
  container.hidden = providers.length === 0;
}

// The password was right and the account has an authenticator app: the code step, on the same page. The challenge's
// Session lives in this closure only.
function askForCode(email, challenge) {
  const passwordForm = document.getElementById("signin-form");
  const codeForm = document.getElementById("mfa-form");
  // Cognito names the user it challenges (USER_ID_FOR_SRP: the username, which an email sign-in pool keeps apart
  // from the email); the email the user typed otherwise.
  const username = challenge.ChallengeParameters?.USER_ID_FOR_SRP || email;
  const session = challenge.Session;
  passwordForm.hidden = true;
  codeForm.hidden = false;
  document.getElementById("mfa-code").focus();
  const again = (problem) => {
    signInProblem = problem;
    signIn(new URLSearchParams({ email }));
  };
  document.getElementById("mfa-back").addEventListener("click", () => again(""));
  bind(codeForm, document.getElementById("mfa-error"), async ({ code }) => {
    let answer;
    try {
      answer = await cognito.answerSoftwareTokenMfa(username, totpCode(code), session);
    } catch (failure) {
      if (failure instanceof CognitoError && failure.type === "NotAuthorizedException") {
        // The challenge's session expired (a few minutes) or is spent: start again from the password.
        again(`Your sign-in session has ended (${failure.message}). Enter your password again.`);
        return;
      }
      throw failure; // a wrong code (CodeMismatchException) and the like: shown, and the user tries again
    }
    if (!answer.AuthenticationResult) {
      throw new CognitoError(answer.ChallengeName || "Challenge", UNSUPPORTED_STEP);
    }
    await signedIn(answer.AuthenticationResult);
    go("#/");
  });
}

function forgot() {
  form("page-forgot", "forgot-form", "forgot-error", async ({ email }) => {
    await cognito.forgotPassword(email.trim());
    go(`#/reset?email=${encodeURIComponent(email.trim())}`);
  });
}

function reset(params) {
  const element = form("page-reset", "reset-form", "reset-error", async ({ email, code, password }) => {
    await cognito.confirmForgotPassword(email.trim(), code.trim(), password);
    go(`#/signin?notice=reset&email=${encodeURIComponent(email.trim())}`);
  });
  element.email.value = params.get("email") || "";
}

// The signed-in user's authenticator app (TOTP): whether it is on, turning it on (a new key, shown once, and the
// app's first code) and off.
function security() {
  if (!loadSession()) {
    go("#/signin");
    return;
  }
  view.replaceChildren(clone("page-security"));
  const main = view.querySelector("main");
  const status = document.getElementById("mfa-status");
  const noticeBox = document.getElementById("security-notice");
  const error = document.getElementById("security-error");
  const turnOn = document.getElementById("mfa-on");
  const turnOff = document.getElementById("mfa-off");
  const setup = document.getElementById("totp-form");
  const secret = document.getElementById("totp-secret");
  const qr = document.getElementById("totp-qr");

  // The access token to call Cognito with, or null (and off to sign-in) when the session is gone.
  async function accessToken() {
    const session = await freshSession();
    if (!session) throw new CognitoError("NotAuthorizedException", "Your session has ended. Sign in again.");
    return session.accessToken;
  }

  async function run(button, action) {
    show(error, "");
    show(noticeBox, "");
    button.disabled = true;
    try {
      await action();
    } catch (failure) {
      if (failure instanceof CognitoError && failure.type === "NotAuthorizedException" && !loadSession()) return;
      show(error, message(failure));
    } finally {
      button.disabled = false;
    }
  }

  // The key leaves the page once the app is confirmed or the set-up is abandoned; it was never stored elsewhere.
  function forgetKey() {
    secret.textContent = "";
    qr.replaceChildren();
    setup.reset();
    show(document.getElementById("totp-error"), "");
    setup.hidden = true;
  }

  async function refresh() {
    const user = await cognito.getUser(await accessToken());
    const on = (user.UserMFASettingList || []).includes("SOFTWARE_TOKEN_MFA");
    if (!main.isConnected) return; // navigated away meanwhile
    main.dataset.mfa = on ? "on" : "off";
    status.textContent = on
      ? "An authenticator app is on: signing in asks for its code after your password."
      : "An authenticator app is off: signing in asks for your password only.";
    turnOn.hidden = on || !setup.hidden;
    turnOff.hidden = !on;
  }

  turnOn.addEventListener("click", () =>
    run(turnOn, async () => {
      const { SecretCode } = await cognito.associateSoftwareToken(await accessToken());
      const session = loadSession();
      const account = (session && (session.profile?.email || claims(session.idToken).email)) || "account";
      secret.textContent = groupedSecret(SecretCode);
      qr.replaceChildren(qrSvg(otpauthUri(account, SecretCode), "QR code of the key for your authenticator app"));
      setup.hidden = false;
      turnOn.hidden = true;
      document.getElementById("totp-code").focus();
    }),
  );
  document.getElementById("totp-cancel").addEventListener("click", () => {
    forgetKey();
    turnOn.hidden = false;
  });
  bind(setup, document.getElementById("totp-error"), async ({ code, device }) => {
    const token = await accessToken();
    const answer = await cognito.verifySoftwareToken(token, totpCode(code), device.trim() || "Authenticator app");
    if (answer.Status && answer.Status !== "SUCCESS") {
      throw new CognitoError("VerifySoftwareToken", "The code was not accepted. Enter the code the app shows now.");
    }
    await cognito.setSoftwareTokenMfa(token, true);
    forgetKey();
    show(noticeBox, "Your authenticator app is on. Signing in now asks for its code.");
    await refresh();
  });
  turnOff.addEventListener("click", () =>
    run(turnOff, async () => {
      await cognito.setSoftwareTokenMfa(await accessToken(), false);
      show(noticeBox, "Your authenticator app is off. Signing in asks for your password only.");
      await refresh();
    }),
  );

  refresh().catch((failure) => {
    status.textContent = "";
    show(error, message(failure));
  });
}

// A Map, not an object literal: the path comes from the URL, and an object would also answer for the names every
// object inherits (#constructor, #__proto__), which are no pages.
const PAGES = new Map([
  ["/", home],
  ["/signup", signUp],
  ["/confirm", confirm],
  ["/signin", signIn],
  ["/forgot", forgot],
  ["/reset", reset],
  ["/security", security],
]);

function route() {
  renderNav();
  const { path, params } = parseHash();
  (PAGES.get(path) ?? home)(params);
  const heading = view.querySelector("h1");
  if (heading) document.title = `${heading.textContent} · Cruddur`;
}

// Back from "Sign in with <provider>" (?code=&state=, or ?error=): the answer and the sign-in under way in this tab,
// both taken at once, before anything awaits, so that neither outlives this page load whatever happens next (the
// config failing to load, say). The query leaves the address bar and the history: the code is spent either way, and
// a reload must not bring it back. Null when the page was not loaded with an answer.
function takeProviderReturn() {
  const response = authorizationResponse(location.search);
  if (response === null) return null;
  const pending = takePending();
  history.replaceState(null, "", `${location.pathname}#/signin`);
  return { response, pending };
}

// Exchange the code when the answer is to this tab's own sign-in (finishSignIn refuses any other), before any page
// shows.
async function returnFromProvider({ response, pending }) {
  try {
    await signedIn(await finishSignIn(response, pending), { hosted: true });
    history.replaceState(null, "", `${location.pathname}#/`);
  } catch (failure) {
    signInProblem = message(failure);
  }
}

// What sign-out left for this page load to show (see NOTICE_KEY), taken out.
function takeNotice() {
  const key = sessionStorage.getItem(NOTICE_KEY);
  sessionStorage.removeItem(NOTICE_KEY);
  return key;
}

function unavailable(reason) {
  view.replaceChildren(clone("page-unavailable"));
  if (reason) document.getElementById("unavailable-reason").textContent = reason;
}

async function start(providerReturn, leftNotice) {
  let response = null;
  try {
    response = await fetch("/web/config.json", { cache: "no-store" });
    config = response.ok ? await response.json() : null;
  } catch {
    config = null;
  }
  if (!config) {
    // 404: no pool (or no endpoint) configured, as the page says; anything else may pass.
    unavailable(response?.status === 404 ? "" : "The sign-in settings could not be loaded. Please try again later.");
    config = {};
    return;
  }
  cognito = cognitoClient(config);
  if (providerReturn) await returnFromProvider(providerReturn);
  else if (notice(leftNotice)) history.replaceState(null, "", `${location.pathname}#/?notice=${leftNotice}`);
  window.addEventListener("hashchange", route);
  // Refresh ahead of expiry, also while the page sits idle.
  setInterval(() => {
    if (loadSession()) freshSession().then(renderNav);
  }, REFRESH_CHECK_MS);
  if (loadSession()) await freshSession();
  route();
}

start(takeProviderReturn(), takeNotice());
