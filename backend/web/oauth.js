// "Sign in with <provider>": OAuth 2.0's authorization code grant with PKCE (RFC 7636) against the pool's hosted
// endpoints (config.domain), from the browser, as a public client (no secret). The provider's own page signs the
// user in; Cognito then sends the browser back here with a one-time code, which only the holder of the verifier can
// exchange for the pool's tokens.
//
// What the round trip needs is kept in sessionStorage (this tab, this origin) until the browser comes back: the
// state, which ties the answer to a sign-in this tab started (no one else's code is taken in), the verifier, and
// where the code is to be exchanged (the domain, client and callback the sign-in started with: the code is only ever
// sent there, whatever the page's config is by then). All of it is taken out on return, whatever happens.

const PENDING = "cruddur.oauth";
// openid, email and profile for the id token's claims; aws.cognito.signin.user.admin lets the access token call the
// user-pool API on the user's own behalf (GetUser, GlobalSignOut, the security page), as a password sign-in's does.
export const SCOPES = "openid email profile aws.cognito.signin.user.admin";

export class OAuthError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code; // the endpoint's error (invalid_grant, access_denied, ...) or the pages' own (state_mismatch)
  }
}

// RFC 6749 section 5.2's token endpoint errors, in words; the code itself is shown beside them.
const TOKEN_ERRORS = {
  invalid_grant: "The sign-in code was refused: it expired, was used already, or does not belong to this sign-in.",
  invalid_client: "This app is not allowed to sign in this way.",
  unauthorized_client: "This app is not allowed to sign in this way.",
  invalid_request: "The sign-in service could not read the request.",
  unsupported_grant_type: "The sign-in service does not take this kind of sign-in.",
  invalid_scope: "The sign-in service refused what the app asked for.",
};

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// 32 random bytes: 256 bits, 43 characters of [A-Za-z0-9_-], which is also RFC 7636's shortest verifier.
function randomToken() {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

export function redirectUri() {
  // The pages' root: the app client's callback URL and its sign-out URL. The same value goes to /oauth2/authorize
  // and /oauth2/token, and to /logout as logout_uri.
  return `${location.origin}/`;
}

// Where to send the browser to sign in with provider; stores the state, the verifier and where to exchange the code
// for the way back.
export async function authorizeUrl({ domain, clientId }, provider) {
  if (!crypto.subtle) {
    throw new OAuthError("insecure_context", "Signing in with another provider needs this page on https.");
  }
  const state = randomToken();
  const verifier = randomToken();
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  const callback = redirectUri();
  sessionStorage.setItem(PENDING, JSON.stringify({ state, verifier, provider, domain, clientId, redirectUri: callback }));
  const query = new URLSearchParams({
    response_type: "code",
    client_id: clientId,
    redirect_uri: callback,
    state,
    identity_provider: provider,
    scope: SCOPES,
    code_challenge: base64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
  });
  return `${domain}/oauth2/authorize?${query}`;
}

// The authorization response in a query string (?code=&state= or ?error=&error_description=), or null when the
// query is not one.
export function authorizationResponse(search) {
  const query = new URLSearchParams(search);
  if (!query.has("code") && !query.has("error") && !query.has("state")) return null;
  return {
    code: query.get("code"),
    state: query.get("state"),
    error: query.get("error"),
    errorDescription: query.get("error_description"),
  };
}

// What authorizeUrl stored, taken out (it serves one answer only), or null.
export function takePending() {
  const raw = sessionStorage.getItem(PENDING);
  sessionStorage.removeItem(PENDING);
  try {
    const pending = JSON.parse(raw);
    if (pending && typeof pending.state === "string" && typeof pending.verifier === "string") return pending;
  } catch {
    // unreadable: as good as none
  }
  return null;
}

// Cognito's logout endpoint, which ends its own sign-in session (a cookie on the hosted domain that would sign the
// next "Sign in with <provider>" straight back in) and sends the browser back to the pages' root, which must be one
// of the app client's sign-out URLs exactly.
export function logoutUrl({ domain, clientId }) {
  return `${domain}/logout?${new URLSearchParams({ client_id: clientId, logout_uri: redirectUri() })}`;
}

// Whether pending names where to exchange its code: an http(s) origin, a client and an absolute callback URL.
function exchangeable({ domain, clientId, redirectUri: callback }) {
  return (
    typeof domain === "string" &&
    /^https?:\/\/[^/?#\s]+$/.test(domain) &&
    typeof clientId === "string" &&
    clientId !== "" &&
    typeof callback === "string" &&
    /^https?:\/\/[^/?#\s]+\//.test(callback)
  );
}

// The tokens for an authorization response, shaped as InitiateAuth's AuthenticationResult; an OAuthError when the
// response is not the answer to this tab's sign-in, or when Cognito refuses the code. The code goes to the domain,
// client and callback the sign-in started with (pending), and nowhere else.
export async function finishSignIn(response, pending) {
  if (!pending || !response.state || response.state !== pending.state) {
    // Not the answer to a sign-in this tab started (or one already answered): its code is not exchanged.
    throw new OAuthError(
      "state_mismatch",
      "The sign-in could not be completed: it did not start on this page, or it was changed on the way. Please try again.",
    );
  }
  const provider = pending.provider || "the other provider";
  if (response.error) {
    const detail = response.errorDescription ? `${response.error}: ${response.errorDescription}` : response.error;
    throw new OAuthError(response.error, `Signing in with ${provider} did not complete (${detail}).`);
  }
  if (!response.code) {
    throw new OAuthError("invalid_request", `Signing in with ${provider} did not complete: no code came back.`);
  }
  if (!exchangeable(pending)) {
    // Never a relative URL, nor a guess: without them the code and the verifier are not sent anywhere.
    throw new OAuthError(
      "incomplete_sign_in",
      `Signing in with ${provider} could not be completed: this page no longer knows where to finish it. Please try again.`,
    );
  }
  let answer;
  try {
    answer = await fetch(`${pending.domain}/oauth2/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        client_id: pending.clientId,
        code: response.code,
        redirect_uri: pending.redirectUri,
        code_verifier: pending.verifier,
      }),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new OAuthError("network", "Cannot reach the sign-in service. Check your connection and try again.");
  }
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok || typeof data.access_token !== "string") {
    const code = typeof data.error === "string" ? data.error : `HTTP ${answer.status}`;
    const words = Object.hasOwn(TOKEN_ERRORS, code) ? TOKEN_ERRORS[code] : "The sign-in service refused the sign-in.";
    const detail = typeof data.error_description === "string" ? `${code}: ${data.error_description}` : code;
    throw new OAuthError(code, `${words} Please try again. (${detail})`);
  }
  return { AccessToken: data.access_token, IdToken: data.id_token, RefreshToken: data.refresh_token };
}
