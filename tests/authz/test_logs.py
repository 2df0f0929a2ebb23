"""authz.logs: JSON lines, and no library logging a token whatever the level."""

from __future__ import annotations

import logging

import pytest

from authz.logs import configure_logging


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_aws_client_libraries_never_log_below_warning(level, capsys):
    """botocore logs whole requests at DEBUG, and GetUser's request carries the access token: whatever
    AUTHZ_LOG_LEVEL says, the AWS client libraries log warnings and worse only, so no token reaches the log."""
    try:
        configure_logging(level)
        for library in ("botocore", "botocore.endpoint", "boto3", "urllib3"):
            logging.getLogger(library).debug("request body {'AccessToken': 'SECRET.TOKEN.VALUE'}")
        logging.getLogger("authz.test").debug("authz's own debug line")
    finally:
        logging.getLogger().handlers[:] = []
    err = capsys.readouterr().err
    assert "SECRET.TOKEN.VALUE" not in err
    assert ("authz's own debug line" in err) is (level == "DEBUG")
