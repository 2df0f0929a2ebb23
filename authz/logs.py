"""One JSON object per log line. Callers pass structured fields as `extra={"fields": {...}}`."""

from __future__ import annotations

import json
import logging
import sys
import time

QUIET_LIBRARIES = ("botocore", "boto3", "urllib3", "s3transfer")


class JsonFormatter(logging.Formatter):
    def __init__(self, fields: dict[str, object] | None = None) -> None:
        """fields: added to every line (a worker's index)."""
        super().__init__()
        self._fields = fields or {}

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self._fields,
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def configure_logging(level: str, fields: dict[str, object] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # At DEBUG these log whole requests and responses: GetUser's carries the access token and the user's
    # attributes. Logs never hold a token, whatever AUTHZ_LOG_LEVEL says.
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(max(logging.WARNING, root.level))
