"""The web pages (backend/web/): the sign-up, confirm, sign-in, recover and sign-out flows and the home feed.

Served on the same origin as the API, through Envoy, which lets `/` and `/web/` through without a token. The
pages call Cognito's user-pool API directly (as Amplify does) at the endpoint `/web/config.json` names: the
pool, app client and endpoint the stack runs with (the local emulator by default, a real pool's regional
endpoint otherwise). Nothing here reads a token: the pages send it to the API themselves.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, send_from_directory

WEB_DIR = Path(__file__).resolve().parent / "web"
_ASSETS = frozenset({"app.js", "cognito.js", "session.js", "style.css", "favicon.svg"})
REAL_ENDPOINT = "https://cognito-idp.{region}.amazonaws.com/"


def page_config(source: dict[str, str]) -> dict[str, str] | None:
    """What the pages need to reach Cognito, or None when no pool is configured."""
    pool_id = source.get("AWS_COGNITO_USER_POOLS_ID", "").split(",")[0].strip()
    client_id = source.get("AWS_COGNITO_CLIENT_ID", "").split(",")[0].strip()
    if not pool_id or not client_id or "_" not in pool_id:
        return None
    region = pool_id.partition("_")[0]
    # Where the browser reaches Cognito: PAGES_COGNITO_ENDPOINT when the pages reach it another way than the servers
    # do (compose: "/cognito/" on the pages' own origin, through Envoy), else the servers' endpoint or the real one.
    endpoint = (
        (source.get("PAGES_COGNITO_ENDPOINT") or "").strip()
        or (source.get("AWS_ENDPOINT_URL_COGNITO_IDP") or "").strip()
        or REAL_ENDPOINT.format(region=region)
    )
    config = {"userPoolId": pool_id, "clientId": client_id, "region": region, "endpoint": endpoint}
    # PAGES_SIGN_OUT_PATH: the API route where authz signs a caller out on every replica at once (its route table's
    # sign_out rule, with the replicas' shared state); unset, the pages sign out with Cognito alone.
    sign_out_path = (source.get("PAGES_SIGN_OUT_PATH") or "").strip()
    if sign_out_path.startswith("/api/"):
        config["signOutPath"] = sign_out_path
    return config


def init_pages(app: Flask, config: dict[str, str] | None) -> None:
    connect = "'self'"
    if config is not None:
        parts = urlsplit(config["endpoint"])
        if parts.netloc:  # a path on the pages' own origin is 'self' already
            connect += f" {parts.scheme}://{parts.netloc}"
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
            return jsonify(error="not_configured", message="no Cognito user pool is configured for the pages"), 404
        return secured(jsonify(config))

    @app.get("/web/<name>")
    def asset(name: str) -> Response:
        if name not in _ASSETS:
            abort(404)
        return secured(send_from_directory(WEB_DIR, name))
