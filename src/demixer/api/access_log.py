"""The server's access log without secrets: signed URLs' signatures never reach a log file.

A signed download or upload URL is a bearer credential until it expires: anyone who reads it in
a log can fetch the stems. uvicorn logs every request line with its query string, so the access
log's records pass through :class:`RedactSecrets`, which keeps the path and the parameter names
and replaces secret values (``sig``, presigned S3 signatures and credentials, API keys in a
query) with ``…``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from demixer.naming import SECRET_QUERY

__all__ = ["RedactSecrets", "log_config", "redact"]


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced by ``…``."""
    return SECRET_QUERY.sub(r"\1…", text)


class RedactSecrets(logging.Filter):
    """Redacts secret query parameters in a record's message and arguments (uvicorn passes
    the request path as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with :class:`RedactSecrets` on its loggers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": RedactSecrets}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    return config
