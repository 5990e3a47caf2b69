"""The log of `demixer serve` and `demixer worker`: uvicorn's access log without secrets (signed
URLs' signatures never reach a log file), and demixer's own records in the same shape.

A signed download or upload URL is a bearer credential until it expires: anyone who reads it in
a log can fetch the stems. uvicorn logs every request line with its query string, so the access
log's records pass through :class:`RedactSecrets`, which keeps the path and the parameter names
and replaces secret values (``sig``, presigned S3 signatures and credentials, API keys in a
query) with ``…``.

demixer's own loggers (``demixer.worker``, ``demixer.webhooks``, ``demixer.api``, ...) go to the
same handler as uvicorn's, at INFO: without a handler of their own they fell to Python's last
resort, which prints WARNING and above as the bare message (no level, no logger) and drops INFO,
so a job's start and end, a webhook's outcome and "the database is back" never reached the log.
"""

from __future__ import annotations

import copy
import logging
import logging.config
from typing import Any

from demixer.naming import SECRET_QUERY

__all__ = ["RedactSecrets", "configure_logging", "log_config", "redact"]


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
    """uvicorn's own logging configuration, with :class:`RedactSecrets` on its loggers and
    demixer's loggers on uvicorn's default handler (stderr, ``LEVEL:    message``), at INFO."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": RedactSecrets}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    config["loggers"]["demixer"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def configure_logging() -> None:
    """Apply :func:`log_config` to this process (``demixer worker``, which runs no uvicorn;
    ``serve`` also hands it to uvicorn, which applies it again)."""
    logging.config.dictConfig(log_config())
