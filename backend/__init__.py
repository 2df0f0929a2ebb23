"""The Cruddur feed service: trusts only the identity headers Envoy sets after ext_authz allows a request."""

from __future__ import annotations

from backend.app import create_app

__all__ = ["create_app"]
