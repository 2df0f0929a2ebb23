"""The identity headers: the one definition every part that speaks them derives from.

The authz server sets them on an allowed request, Envoy strips every client-sent one before asking authz, and the
backend reads them as the caller's identity. Those parts meet only over the wire (none imports another), so what
they agree on (the names, how a value is encoded, how long one can be) lives here, in a package with no dependencies
that each of them imports: authz, the backend, Envoy's configuration (envoy/bootstrap.py), the local stack and the
bench. tests/test_contract.py and tests/test_identity_limits.py hold every part to it.
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
PRINCIPAL = "principal"  # which kind of caller: PRINCIPAL_USER or PRINCIPAL_CLIENT
# The external identity provider a federated user signed in with (its name in the pool, e.g. `Google`): only an ID
# token says (its `identities` claim); absent for the pool's own users and for access tokens.
IDP = "idp"
FIELDS = (SUB, NAME, GROUPS, SCOPES, CLIENT_ID, TOKEN_USE, PRINCIPAL, IDP)
# A person signed in to the pool, or an app client on its own (an OAuth 2.0 client credentials grant).
PRINCIPAL_USER = "user"
PRINCIPAL_CLIENT = "client"

# The caller as the rest of Envoy sees it: on an allow, authz's dynamic metadata for the ext_authz filter (namespace
# envoy.filters.http.ext_authz) holds these keys, over gRPC as a Struct (groups and scopes as lists), over HTTP as
# reply headers of these names that Envoy copies (groups and scopes joined as their identity headers are). Envoy's
# access log and its per-caller rate limit read `sub`. Nothing secret, never the token.
METADATA_SUB = "sub"
METADATA_KEYS = (METADATA_SUB, "principal", "client_id", "token_use", "pool", "groups", "scopes")
GROUPS_SEPARATOR = ","
SCOPES_SEPARATOR = " "  # the ASCII space only (RFC 6749 section 3.3), never another Unicode space

# How a value is written: its text as UTF-8 bytes. Cognito's usernames and group names may hold any letter, mark,
# symbol, number or punctuation (SignUp's and CreateGroup's pattern [\p{L}\p{M}\p{S}\p{N}\p{P}]+), so `管理者` and
# `café` are ordinary names. authz writes the text, Envoy forwards the bytes untouched, and a reader decodes them
# as UTF-8 (a WSGI server hands them over as ISO-8859-1 text: decode_wsgi). No value holds a control character or
# whitespace at either end (authz refuses a token whose values would), so servers that trim values change nothing.
ENCODING = "utf-8"

# How large a value gets: the largest identity a Cognito user pool can give a user, which must reach the backend
# intact. Cognito's limits, as AWS documents them:
# - a user is in at most 100 groups: "Maximum number of groups that each user can belong to: 100", a non-adjustable
#   quota (https://docs.aws.amazon.com/cognito/latest/developerguide/quotas.html, "Non-adjustable resource quotas");
# - a group name is 1 to 128 characters (CreateGroup's GroupName,
#   https://docs.aws.amazon.com/cognito-user-identity-pools/latest/APIReference/API_CreateGroup.html), and no
#   character takes more than 4 bytes of UTF-8, however AWS counts them;
# - a username is 1 to 128 such characters (SignUp's Username,
#   https://docs.aws.amazon.com/cognito-user-identity-pools/latest/APIReference/API_SignUp.html);
# - an app client allows at most 50 OAuth scopes of 1 to 256 ASCII characters each (CreateUserPoolClient's
#   AllowedOAuthScopes,
#   https://docs.aws.amazon.com/cognito-user-identity-pools/latest/APIReference/API_CreateUserPoolClient.html).
COGNITO_MAX_GROUPS_PER_USER = 100
COGNITO_MAX_GROUP_NAME_CHARACTERS = 128
COGNITO_MAX_USERNAME_CHARACTERS = 128
COGNITO_MAX_SCOPES_PER_CLIENT = 50
COGNITO_MAX_SCOPE_CHARACTERS = 256
_MAX_UTF8_BYTES_PER_CHARACTER = 4
# The longest value is the group list: 100 names of 128 four-byte characters, comma-joined (51,299 bytes). The scope
# list (12,849), a username (512), a sub (a UUID) and a client id (at most 128) are all shorter. authz refuses a
# token whose value for any header would be longer (only a pre-token-generation Lambda trigger can make one), and
# the backend's server accepts header lines this long (backend/gunicorn.conf.py).
MAX_VALUE_BYTES = (
    COGNITO_MAX_GROUPS_PER_USER * COGNITO_MAX_GROUP_NAME_CHARACTERS * _MAX_UTF8_BYTES_PER_CHARACTER
    + COGNITO_MAX_GROUPS_PER_USER
    - 1
)
# The largest token that carries such an identity: an access token with all of the above in its claims, at their
# costliest in JSON, is about 104,400 characters (tests/test_identity_limits.py builds one), so 128 KiB. Cognito
# writes non-ASCII as raw UTF-8, not as \u escapes (a real id token's "given_name":"Boña" in
# https://github.com/aws-amplify/aws-sdk-ios/issues/1262), so a character costs at most 4 bytes there too; it does
# escape "/" as "\/" (the same token's "iss"), and a scope may be nearly all slashes. authz's token size cap must
# admit this token (AUTHZ_MAX_TOKEN_BYTES), and Envoy's request header limit must admit it beside the identity
# headers made from it (envoy/bootstrap.py).
MAX_TOKEN_BYTES = 128 * 1024


def header_names(prefix: str = DEFAULT_PREFIX) -> tuple[str, ...]:
    """The built-in header names for a prefix, in FIELDS order."""
    return tuple(prefix + field for field in FIELDS)


def decode_wsgi(value: str) -> str:
    """A value as a WSGI server hands it over, read back as the text authz set. A WSGI server decodes header bytes
    as ISO-8859-1 (PEP 3333), so `café` arrives as `cafÃ©`: encoding those characters back to the bytes they came
    from and decoding the bytes as UTF-8 gives `café` again. Raises UnicodeError for bytes that are not UTF-8,
    which authz never sets."""
    return value.encode("iso-8859-1").decode(ENCODING)
