"""create_app(): the Flask feed service behind Envoy.

Routes trust the identity headers Envoy sets (see identity.py) and nothing else: no JWT is parsed here.
"""

from __future__ import annotations

import json
import os
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify
from flask_cors import CORS
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from backend.activities import home_activities
from backend.identity import current_identity, init_identity
from backend.pages import PAGE_SETTINGS, init_pages, page_config
from identity_headers import DEFAULT_PREFIX, PREFIX_PATTERN

# The authz server's realm default; a 401 from here reads the same as one from Envoy.
REALM = "api"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from `config`; keys it does not give are read from the environment, here and only here."""
    source: Mapping[str, Any] = ChainMap(dict(config or {}), os.environ)
    app = Flask(__name__, static_folder=None)
    if config:
        app.config.from_mapping(config)
    app.config.update(_settings(source))

    CORS(
        app,
        resources={r"/api/*": {"origins": _origins(app.config["FRONTEND_URL"], app.config["BACKEND_URL"])}},
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["location", "link"],
        methods="OPTIONS,GET,HEAD,POST",
        # Only answer browsers that ask: without this every response would list all configured origins.
        always_send=False,
    )
    init_identity(app, app.config["IDENTITY_HEADER_PREFIX"])
    _register_routes(app)
    # Where the pages find Cognito (backend/pages.py): the same pool, client and endpoint as the stack.
    init_pages(app, page_config({key: str(source.get(key) or "") for key in PAGE_SETTINGS}))
    app.register_error_handler(HTTPException, _json_error)
    return app


def _settings(source: Mapping[str, Any]) -> dict[str, str]:
    prefix = str(source.get("IDENTITY_HEADER_PREFIX") or DEFAULT_PREFIX).strip()
    # PREFIX_PATTERN is also the authz server's AUTHZ_HEADER_PREFIX rule, so a prefix one side accepts the other does.
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(
            f"IDENTITY_HEADER_PREFIX: expected lowercase letters, digits and dashes ending in '-', got {prefix!r}"
        )
    return {
        "FRONTEND_URL": str(source.get("FRONTEND_URL") or "").strip(),
        "BACKEND_URL": str(source.get("BACKEND_URL") or "").strip(),
        "IDENTITY_HEADER_PREFIX": prefix,
    }


def _origins(*urls: str) -> list[str]:
    # A browser's Origin never ends in "/", so a configured "http://host:3000/" would otherwise never match;
    # an unset URL must not become an allowed origin.
    return [url.rstrip("/") for url in urls if url]


def _register_routes(app: Flask) -> None:
    @app.get("/api/health")
    def health() -> Response:
        return jsonify(status="ok")

    @app.get("/api/activities/home")
    def activities_home() -> Response:
        response = jsonify(home_activities(current_identity()))
        # The feed differs per caller, so no shared cache may hand one caller's feed to another.
        response.headers["Cache-Control"] = "private, no-store"
        return response

    @app.post("/api/sign-out")
    def sign_out() -> tuple[str, int]:
        # authz has already had every replica refuse the caller's tokens (the route's sign_out rule): nothing is
        # left to do here but say so.
        return "", 204

    @app.get("/api/me")
    def me() -> Response | tuple[Response, int, dict[str, str]]:
        identity = current_identity()
        if identity is None:
            # Envoy already demands a token here; this answers a request that reached us some other way.
            body = jsonify(error="unauthenticated", message="authentication required")
            return body, 401, {"WWW-Authenticate": f'Bearer realm="{REALM}"'}
        response = jsonify(identity.as_json())
        response.headers["Cache-Control"] = "private, no-store"
        return response


def _json_error(error: HTTPException) -> WerkzeugResponse:
    # Keep the headers Werkzeug chose (Allow on a 405) and swap the HTML page for JSON.
    response = error.get_response()
    code = (error.name or "error").lower().replace(" ", "_")
    response.data = json.dumps({"error": code, "message": error.description})
    response.content_type = "application/json"
    return response
