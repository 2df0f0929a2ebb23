"""The identity headers: the one definition every part that speaks them derives from.

The authz server sets them on an allowed request, Envoy strips every client-sent one before asking authz, and the
backend reads them as the caller's identity. Those parts meet only over the wire (none imports another), so the
names they agree on live here, in a package with no dependencies that each of them imports: authz, the backend,
Envoy's configuration (envoy/bootstrap.py), the local stack and the bench. tests/test_contract.py holds every part
to it.
"""

from __future__ import annotations

import re

# The prefix every part uses unless told otherwise (AUTHZ_HEADER_PREFIX, IDENTITY_HEADER_PREFIX, Envoy's strip).
DEFAULT_PREFIX = "x-user-"
# A prefix every part accepts (fullmatch): lowercase letters, digits and dashes, ending in a dash, so that no prefix
# can name a header outside its own family and Envoy's case-insensitive prefix match strips what authz sets.
PREFIX_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*-")

# The fields after the prefix, in the order authz emits them.
SUB = "sub"
NAME = "name"
GROUPS = "groups"  # comma-joined
SCOPES = "scopes"  # space-joined
CLIENT_ID = "client-id"
TOKEN_USE = "token-use"
FIELDS = (SUB, NAME, GROUPS, SCOPES, CLIENT_ID, TOKEN_USE)
GROUPS_SEPARATOR = ","
SCOPES_SEPARATOR = " "


def header_names(prefix: str = DEFAULT_PREFIX) -> tuple[str, ...]:
    """The six header names for a prefix, in FIELDS order."""
    return tuple(prefix + field for field in FIELDS)
