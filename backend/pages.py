"""The web pages (backend/web/): the sign-up, confirm, sign-in (with a TOTP code step and "Sign in with <IdP>"),
recover and sign-out flows, the security page (an authenticator app on or off) and the home feed.

Served on the same origin as the API, through Envoy, which lets `/` and `/web/` through without a token. The
pages call Cognito's user-pool API directly (as Amplify does) at the endpoint `/web/config.json` names: the
pool, app client and endpoint the stack runs with (the local emulator by default, a real pool's regional
endpoint otherwise), and, for sign-in with another identity provider, the pool's hosted endpoints (its domain).
Nothing here reads a token: the pages send it to the API themselves.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path
from typing import NotRequired, TypedDict
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, send_from_directory

logger = logging.getLogger(__name__)
WEB_DIR = Path(__file__).resolve().parent / "web"
_ASSETS = frozenset(
    {
        "app.js",
        "cognito.js",
        "oauth.js",
        "session.js",
        "totp.js",
        "qrcode-generator.js",
        "style.css",
        "favicon.svg",
    }
)
REAL_ENDPOINT = "https://cognito-idp.{region}.amazonaws.com/"
# The settings page_config reads; create_app hands it these and no others.
PAGE_SETTINGS = (
    "AWS_COGNITO_USER_POOLS_ID",
    "AWS_COGNITO_CLIENT_ID",
    "AWS_ENDPOINT_URL_COGNITO_IDP",
    "PAGES_COGNITO_ENDPOINT",
    "PAGES_SIGN_OUT_PATH",
    "PAGES_COGNITO_DOMAIN",
    "PAGES_IDENTITY_PROVIDERS",
)
# Where plain http may serve the hosted endpoints: the local emulator, on this machine only.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
_DEFAULT_PORTS = {"https": 443, "http": 80}
# A path segment of RFC 3986's unreserved characters: nothing that could end the path or a policy directive.
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
# Cognito's own sign-in, which `identity_provider=` also accepts: no other provider of the pool.
COGNITO_PROVIDER = "COGNITO"


class PageConfig(TypedDict):
    """/web/config.json: what the pages need to reach Cognito."""

    userPoolId: str
    clientId: str
    region: str
    endpoint: str
    signOutPath: NotRequired[str]
    domain: NotRequired[str]
    identityProviders: NotRequired[list[str]]


def _checked_url(value: str) -> tuple[str, str] | None:
    """(origin, path) of an absolute URL the pages may call, each rebuilt from its checked parts (they go into the
    Content-Security-Policy and the pages' config): https, or http on a loopback host (the local emulator); a host
    name and a port only, no userinfo, query or fragment; a path of plain segments. None for anything else."""
    if not _printable(value):
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # a port that is no number, or out of range
        return None
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme not in _DEFAULT_PORTS or (scheme == "http" and host not in LOOPBACK_HOSTS):
        return None
    if not _HOST.fullmatch(host) or parts.username is not None or parts.password is not None:
        return None
    if "?" in value or "#" in value or not _is_plain_path(parts.path):
        return None
    origin = f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")
    return origin, parts.path


def _printable(value: str) -> bool:
    """Printable ASCII with no whitespace: urlsplit drops tabs and line breaks silently, so they are refused here."""
    return value.isascii() and value.isprintable() and not any(char.isspace() for char in value)


def _is_plain_path(path: str) -> bool:
    """Whether path is empty, "/", or /segment/segment... (a trailing slash allowed) of RFC 3986's unreserved
    characters, with no empty segment (so never "//", which a browser reads as another host) and no "." or ".."."""
    if path in ("", "/"):
        return True
    if not path.startswith("/"):
        return False
    segments = path[1:].removesuffix("/").split("/")
    return all(_SEGMENT.fullmatch(segment) and segment not in (".", "..") for segment in segments)


def hosted_origin(value: str) -> str | None:
    """The origin of a pool's hosted endpoints (/oauth2/authorize, /oauth2/token, /logout) from
    PAGES_COGNITO_DOMAIN, or None when value is not one: an https origin, or http on a loopback host (the local
    emulator), with nothing after the host and port. The origin is rebuilt from its checked parts, since it goes
    into the Content-Security-Policy as it is."""
    checked = _checked_url(value.strip())
    if checked is None or checked[1] not in ("", "/"):
        return None
    return checked[0]


def browser_endpoint(value: str) -> str | None:
    """Where the pages call Cognito's user-pool API, from PAGES_COGNITO_ENDPOINT (or the servers' endpoint, or the
    regional one), or None when value is not a place they may call: a path on the pages' own origin (compose's
    "/cognito/", through Envoy), or an https URL (http on a loopback host) of a host, a port and a path. Rebuilt from
    its checked parts, as its origin goes into the Content-Security-Policy's connect-src."""
    value = value.strip()
    if value.startswith("/"):
        return value if _printable(value) and _is_plain_path(value) else None
    checked = _checked_url(value)
    return None if checked is None else checked[0] + checked[1]


def is_provider_name(name: str) -> bool:
    """Whether name is a name Cognito gives an identity provider of a pool (ProviderNameTypeV2: 1 to 32 characters
    matching [^_\\p{Z}][\\p{L}\\p{M}\\p{S}\\p{N}\\p{P}][^_\\p{Z}]+, so at least three); Python's re has no \\p{...}
    classes, so the Unicode categories are checked one by one."""
    if not 3 <= len(name) <= 32:
        return False

    def outer(char: str) -> bool:
        return char != "_" and not unicodedata.category(char).startswith("Z")

    first, second, rest = name[0], name[1], name[2:]
    return outer(first) and unicodedata.category(second)[0] in "LMSNP" and all(outer(char) for char in rest)


def identity_providers(value: str) -> list[str]:
    """The provider names of PAGES_IDENTITY_PROVIDERS (comma-separated), in order, each once; a name Cognito would
    not give a provider, and COGNITO (the pool's own sign-in, which the pages have already), are left out."""
    names: list[str] = []
    for name in (part.strip() for part in value.split(",")):
        if is_provider_name(name) and name != COGNITO_PROVIDER and name not in names:
            names.append(name)
    return names


def page_config(source: dict[str, str]) -> PageConfig | None:
    """What the pages need to reach Cognito, or None when no pool is configured or no endpoint the pages may call
    (the pages then say sign-in is not available, and the log says why)."""
    pool_id = source.get("AWS_COGNITO_USER_POOLS_ID", "").split(",")[0].strip()
    client_id = source.get("AWS_COGNITO_CLIENT_ID", "").split(",")[0].strip()
    if not pool_id or not client_id or "_" not in pool_id:
        return None
    region = pool_id.partition("_")[0]
    # Where the browser reaches Cognito: PAGES_COGNITO_ENDPOINT when the pages reach it another way than the servers
    # do (compose: "/cognito/" on the pages' own origin, through Envoy), else the servers' endpoint or the real one.
    # The first of these that is set is the one: one that is no place the pages may call leaves them with none (and
    # no sign-in), rather than sending passwords to the next.
    setting, value = "AWS_COGNITO_USER_POOLS_ID", REAL_ENDPOINT.format(region=region)
    for name in ("PAGES_COGNITO_ENDPOINT", "AWS_ENDPOINT_URL_COGNITO_IDP"):
        if (source.get(name) or "").strip():
            setting, value = name, (source.get(name) or "").strip()
            break
    endpoint = browser_endpoint(value)
    if endpoint is None:
        logger.warning(
            "the pages offer no sign-in: %s gives %r, which is not a path on the pages' origin nor an https URL "
            "(or http on 127.0.0.1 or localhost) of a host, port and path",
            setting,
            value,
        )
        return None
    config: PageConfig = {"userPoolId": pool_id, "clientId": client_id, "region": region, "endpoint": endpoint}
    # PAGES_SIGN_OUT_PATH: the API route where authz signs a caller out on every replica at once (its route table's
    # sign_out rule, with the replicas' shared state); unset, the pages sign out with Cognito alone.
    sign_out_path = (source.get("PAGES_SIGN_OUT_PATH") or "").strip()
    if sign_out_path.startswith("/api/"):
        config["signOutPath"] = sign_out_path
    # PAGES_COGNITO_DOMAIN: the pool's hosted endpoints (https://<prefix>.auth.<region>.amazoncognito.com, or the
    # emulator's URL), where "Sign in with <provider>" starts and its code is exchanged for tokens;
    # PAGES_IDENTITY_PROVIDERS: the providers offered there. Without a domain no provider can be reached.
    domain = hosted_origin(source.get("PAGES_COGNITO_DOMAIN") or "")
    if domain is not None:
        config["domain"] = domain
        providers = identity_providers(source.get("PAGES_IDENTITY_PROVIDERS") or "")
        if providers:
            config["identityProviders"] = providers
    return config


def _origin(url: str) -> str | None:
    """The origin of an endpoint browser_endpoint rebuilt, or None for a path on the pages' own origin."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else None


def init_pages(app: Flask, config: PageConfig | None) -> None:
    sources = ["'self'"]
    if config is not None:
        # Cognito's user-pool API (a path on the pages' own origin is 'self' already) and its hosted endpoints,
        # where the pages exchange a sign-in code for tokens (a navigation to /oauth2/authorize needs no source).
        for origin in (_origin(config["endpoint"]), config.get("domain")):
            if origin and origin not in sources:
                sources.append(origin)
    connect = " ".join(sources)
    # Only our own scripts and styles run; the only other place the pages talk to is Cognito.
    policy = (
        f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src {connect}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )

    def secured(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = policy
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/")
    def index() -> Response:
        return secured(send_from_directory(WEB_DIR, "index.html"))

    @app.get("/web/config.json")
    def web_config() -> Response | tuple[Response, int]:
        if config is None:
            message = "no Cognito user pool, or no Cognito endpoint the pages may call, is configured for the pages"
            return jsonify(error="not_configured", message=message), 404
        return secured(jsonify(config))

    @app.get("/web/<name>")
    def asset(name: str) -> Response:
        if name not in _ASSETS:
            abort(404)
        return secured(send_from_directory(WEB_DIR, name))
