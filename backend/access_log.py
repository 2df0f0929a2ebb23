"""gunicorn's access log with paths as logs may show them: cut before their query (?), parameters (;) or fragment
(#), and "-" when what is left is shaped like a JWT, since each may carry a token. The same rule as the authz
server's decision log (authz.authorizer.loggable_path) and Envoy's access log (envoy/bootstrap.py LOGGABLE_PATH);
tests/test_contract.py holds the two Python ones to the same answers.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

_PATH_TAIL = re.compile(r"[?;#]")
# A JWT's header is base64url JSON, so it starts with `eyJ` ('{"'), and a dot follows it.
_JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]*\.")


def loggable_path(path: str) -> str:
    head = _PATH_TAIL.split(path, maxsplit=1)[0]
    return "-" if _JWT_SHAPED.search(head) else head


class AccessLogger(Logger):
    """gunicorn's Logger, with every atom that holds the request target (r, U, q) made loggable."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        path = loggable_path(atoms.get("U") or "")
        atoms["U"] = path
        atoms["q"] = "-"
        atoms["r"] = f"{atoms.get('m')} {path} {atoms.get('H')}"
        return atoms
