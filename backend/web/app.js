// The Cruddur pages: hash routes, one module. Cognito is called directly (cognito.js), the API through Envoy on
// this same origin with the access token in the Authorization header (api below); tokens live in sessionStorage
// (session.js says why). User data is only ever written with textContent.

import { cognitoClient, CognitoError } from "./cognito.js";
import { claims, clearSession, displayName, loadSession, saveProfile, saveSession } from "./session.js";

const REFRESH_MARGIN_MS = 60_000; // refresh when less than this remains on the access token
const REFRESH_CHECK_MS = 15_000;
const NOTICES = {
  confirmed: "Your email is confirmed. Sign in to continue.",
  reset: "Your password is changed. Sign in with the new one.",
  session: "Your session has ended. Sign in again.",
  "signed-out-here": "You are signed out on this device, but signing out your other devices failed: they stay signed in until their session ends.",
};

let cognito = null;
let config = {}; // /web/config.json: the pool, client and Cognito endpoint, and the sign-out route if any
let refreshing = null;

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
  if (error instanceof CognitoError) return error.message;
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
  if (session) {
    try {
      await cognito.globalSignOut(session.accessToken); // every device, as the seed's signOut({ global: true })
    } catch {
      // This device is signed out either way; say that the others may not be.
      go("#/?notice=signed-out-here");
      return;
    }
  }
  go("#/");
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
  const error = document.getElementById(errorId);
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = element.querySelector("button[type=submit]");
    show(error, "");
    const values = Object.fromEntries(new FormData(element));
    for (const [name, value] of Object.entries(values)) {
      if (!String(value).trim()) {
        show(error, `Please fill in ${element.querySelector(`[name=${name}]`).labels[0].textContent.toLowerCase()}.`);
        element.querySelector(`[name=${name}]`).focus();
        return;
      }
    }
    button.disabled = true;
    try {
      await submit(values);
    } catch (failure) {
      show(error, message(failure));
    } finally {
      button.disabled = false;
    }
  });
  return element;
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
    if (!answer.AuthenticationResult) {
      throw new CognitoError(answer.ChallengeName || "Challenge", "This account needs a sign-in step these pages do not support.");
    }
    const session = saveSession(answer.AuthenticationResult);
    try {
      // The name the user signed up with (id tokens from some issuers, the local emulator's among them, lack it).
      saveProfile(session, (await cognito.getUser(session.accessToken)).UserAttributes);
    } catch {
      // Only the greeting needs it: fall back to the id token's claims.
    }
    go("#/");
  });
  element.email.value = params.get("email") || "";
  show(document.getElementById("signin-notice"), notice(params.get("notice")));
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

// A Map, not an object literal: the path comes from the URL, and an object would also answer for the names every
// object inherits (#constructor, #__proto__), which are no pages.
const PAGES = new Map([
  ["/", home],
  ["/signup", signUp],
  ["/confirm", confirm],
  ["/signin", signIn],
  ["/forgot", forgot],
  ["/reset", reset],
]);

function route() {
  renderNav();
  const { path, params } = parseHash();
  (PAGES.get(path) ?? home)(params);
  const heading = view.querySelector("h1");
  if (heading) document.title = `${heading.textContent} · Cruddur`;
}

async function start() {
  const response = await fetch("/web/config.json", { cache: "no-store" });
  if (!response.ok) {
    view.replaceChildren(clone("page-unavailable"));
    return;
  }
  config = await response.json();
  cognito = cognitoClient(config);
  window.addEventListener("hashchange", route);
  // Refresh ahead of expiry, also while the page sits idle.
  setInterval(() => {
    if (loadSession()) freshSession().then(renderNav);
  }, REFRESH_CHECK_MS);
  if (loadSession()) await freshSession();
  route();
}

start();
