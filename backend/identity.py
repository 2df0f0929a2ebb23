"""The caller's identity, read from the headers Envoy sets once the authz server allows a request.

This is the backend's only view of who is calling: it never sees or parses a JWT. Envoy overwrites these
headers on an allowed request and strips them from an anonymous one, so a value here was put there by the
authz server. What this module cannot check is the header *name* a client used: `x_user_sub` and
`x-user-sub` both become HTTP_X_USER_SUB in a WSGI environ, which is why the app runs under gunicorn with
header_map="drop" (see gunicorn.conf.py) rather than under a server that maps underscores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flask import Flask, g, request
from werkzeug.datastructures import Headers

from identity_headers import (
    CLIENT_ID,
    FIELDS,
    GROUPS,
    GROUPS_SEPARATOR,
    IDP,
    NAME,
    PRINCIPAL,
    SCOPES,
    SCOPES_SEPARATOR,
    SUB,
    TOKEN_USE,
    decode_wsgi,
)

# Values that are one token each (a Cognito sub is a UUID, a client id is alphanumeric, token use is a word).
# A WSGI server joins a repeated header with ",", so a comma in one of these means the header came more than
# once and we cannot tell which copy Envoy set: the request is treated as anonymous.
_SINGLE_VALUED = (SUB, CLIENT_ID, TOKEN_USE, PRINCIPAL, IDP)
# HTTP's optional whitespace around a value and a list item (RFC 9110 section 5.6.1): the only whitespace trimmed
# here. str.strip() would also take a no-break space (or, before decoding, the \x85 and \xa0 bytes that end many a
# UTF-8 character, `管理者` among them) off a value, and authz never sets a value with whitespace at its edges.
_OWS = " \t"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the authz server says the caller is."""

    sub: str
    username: str | None = None
    groups: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    client_id: str | None = None
    token_use: str | None = None
    # "user", or "client" for an app client calling on its own behalf (identity_headers.PRINCIPAL_CLIENT).
    principal: str | None = None
    # The external identity provider a federated user signed in with (x-user-idp), None for the pool's own users.
    identity_provider: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "sub": self.sub,
            "username": self.username,
            "groups": list(self.groups),
            "scopes": list(self.scopes),
            "token_use": self.token_use,
            "client_id": self.client_id,
            "principal": self.principal,
            "identity_provider": self.identity_provider,
        }


def read_identity(headers: Headers | Mapping[str, str], prefix: str) -> Identity | None:
    """The identity carried by `headers` (as a WSGI server hands them over), or None when the request is anonymous
    or its identity is ambiguous. Values are UTF-8 (identity_headers.ENCODING) and come back exactly as authz set
    them; a value that is not UTF-8 was not set by authz, so the request is anonymous."""
    try:
        values = {field: decode_wsgi(headers.get(prefix + field) or "").strip(_OWS) for field in FIELDS}
    except UnicodeError:
        return None
    if not values[SUB] or any("," in values[field] for field in _SINGLE_VALUED):
        return None
    return Identity(
        sub=values[SUB],
        username=values[NAME] or None,
        groups=_split(values[GROUPS], GROUPS_SEPARATOR),
        scopes=_split(values[SCOPES], SCOPES_SEPARATOR),
        client_id=values[CLIENT_ID] or None,
        token_use=values[TOKEN_USE] or None,
        principal=values[PRINCIPAL] or None,
        identity_provider=values[IDP] or None,
    )


def _split(value: str, separator: str) -> tuple[str, ...]:
    return tuple(item for item in (part.strip(_OWS) for part in value.split(separator)) if item)


def init_identity(app: Flask, prefix: str) -> None:
    """Read the identity once per request, before any view, so views only ever ask current_identity()."""

    def _load_identity() -> None:
        g.identity = read_identity(request.headers, prefix)

    app.before_request(_load_identity)


def current_identity() -> Identity | None:
    """The identity of the request being handled; None when anonymous."""
    return g.get("identity")
