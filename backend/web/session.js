// The signed-in session: Cognito's tokens in sessionStorage under one key.
//
// Why sessionStorage: it survives a reload and the page's own navigation, but not the tab (closing the tab signs
// the browser out), it is never sent to any server by itself (unlike a cookie, so no CSRF), and other tabs and
// origins cannot read it. Like memory, it is readable by script running on this origin; the pages load only
// their own scripts (Content-Security-Policy: script-src 'self') and write user data with textContent only.

const KEY = "cruddur.session";

export function claims(token) {
  // For display and scheduling only: the authz server behind Envoy verifies every token it is sent.
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(payload), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    return JSON.parse(json);
  } catch {
    return {};
  }
}

export function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(KEY));
    if (session && session.accessToken && session.idToken && session.refreshToken) return session;
  } catch {
    // unreadable: treat as signed out
  }
  return null;
}

// Store InitiateAuth's AuthenticationResult; a refresh answer carries no new refresh token, so keep the old one
// (and the profile, the user's own attributes as GetUser returned them at sign-in, and whether the session came
// from Cognito's hosted sign-in, whose own session sign-out ends too).
export function saveSession(result, previous = {}) {
  const session = {
    accessToken: result.AccessToken,
    idToken: result.IdToken,
    refreshToken: result.RefreshToken || previous.refreshToken,
    expiresAt: (claims(result.AccessToken).exp || 0) * 1000,
    profile: previous.profile || {},
    ...(previous.hosted === true ? { hosted: true } : {}),
  };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  return session;
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
}

// The user's attributes as GetUser returned them for session, kept with the session stored now, if that is still
// session (the same refresh token): one signed out meanwhile stays signed out, and one refreshed meanwhile keeps its
// new tokens.
export function saveProfile(session, attributes) {
  const current = loadSession();
  if (!current || current.refreshToken !== session.refreshToken) return;
  const profile = Object.fromEntries((attributes || []).map(({ Name, Value }) => [Name, Value]));
  sessionStorage.setItem(KEY, JSON.stringify({ ...current, profile }));
}

export function displayName(session) {
  const id = claims(session.idToken);
  const profile = session.profile || {};
  return profile.name || id.name || profile.preferred_username || id.preferred_username || id.email || "you";
}
