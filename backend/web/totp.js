// An authenticator app's enrolment: the key Cognito hands out (AssociateSoftwareToken) as text and as a QR code of
// the otpauth:// URI authenticator apps read (Google Authenticator's Key Uri Format), drawn in the browser as SVG
// with DOM methods from the vendored qrcode-generator. The key is only ever put in the page: never stored.

import qrcode from "./qrcode-generator.js";

const ISSUER = "Cruddur";
const SVG = "http://www.w3.org/2000/svg";
const QUIET_ZONE = 4; // light modules around the symbol, as the QR code specification asks, so a camera finds it

export function otpauthUri(account, secret) {
  // The label is "issuer:account", the account percent-encoded (an email's "@" included), as the format asks.
  const label = `${ISSUER}:${encodeURIComponent(account)}`;
  return `otpauth://totp/${label}?secret=${encodeURIComponent(secret)}&issuer=${ISSUER}`;
}

// The key in groups of four, for reading it off the screen into an app.
export function groupedSecret(secret) {
  return (String(secret).replace(/\s+/g, "").match(/.{1,4}/g) || []).join(" ");
}

export function qrSvg(text, label) {
  const code = qrcode(0, "M"); // the smallest version that holds text, medium error correction
  code.addData(text);
  code.make();
  const count = code.getModuleCount();
  const size = count + 2 * QUIET_ZONE;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("shape-rendering", "crispEdges");
  const background = document.createElementNS(SVG, "rect");
  background.setAttribute("width", String(size));
  background.setAttribute("height", String(size));
  background.setAttribute("fill", "#fff");
  // One path of unit squares, one per dark module: built here from numbers only.
  let squares = "";
  for (let row = 0; row < count; row += 1) {
    for (let col = 0; col < count; col += 1) {
      if (code.isDark(row, col)) squares += `M${col + QUIET_ZONE} ${row + QUIET_ZONE}h1v1h-1z`;
    }
  }
  const modules = document.createElementNS(SVG, "path");
  modules.setAttribute("d", squares);
  modules.setAttribute("fill", "#000");
  svg.append(background, modules);
  return svg;
}
