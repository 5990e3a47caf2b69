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
so a job's start and end, a webhook's outcome and a worker's registration never reached the log.
Each record's message is written on one line (:class:`OneLine`): a log reader finds an event by
its level, and a line without one (psycopg's hint "Is the server running on that host..." on a
second line) was an orphan that ``grep WARNING`` missed, or a line anyone could have written.

Python warnings (``warnings.warn``, a library's deprecation notice) go through the same handler
too, each one line at WARNING, rather than printed bare by :mod:`warnings`.

Every line starts with the time it was written, in UTC with milliseconds
(``2026-12-05T23:27:00.123Z INFO:     ...``): ``docker logs`` and a log file keep no time of
their own, and an operator could not tell when a job failed. Under journald, which stamps each
line itself, ``DEMIXER_LOG_TIMESTAMPS=false`` leaves it out.
"""

from __future__ import annotations

import copy
import logging
import logging.config
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from uvicorn.logging import AccessFormatter, DefaultFormatter

from demixer.naming import SECRET_QUERY

__all__ = [
    "OneLine",
    "RedactSecrets",
    "configure_logging",
    "log_config",
    "one_line",
    "redact",
    "utc_stamp",
]


# The request this task is answering (method, path, request id), set by the API's
# RequestIdMiddleware: for the lines written about it where it is not at hand (the access
# line uvicorn writes as the response starts, a failure a vendor's envelope answers).
ANSWERING: ContextVar[tuple[str, str, str] | None] = ContextVar("answering", default=None)


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


# Line breaks (with the indentation around them), and the other control characters (a
# terminal's escape sequences), as they may appear in an error's text.
_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """``text`` on one line: line breaks made spaces, other control characters escaped
    (``\\x1b``)."""
    text = _BREAKS.sub(" ", text)
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


def utc_stamp(created: float) -> str:
    """``created`` (seconds since the epoch, a record's) as ISO 8601 in UTC to the millisecond:
    ``2026-12-05T23:27:00.123Z``."""
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _UtcTime(logging.Formatter):
    """``%(asctime)s`` as :func:`utc_stamp` writes it (logging's own has a comma before the
    milliseconds and the machine's local time, without its zone)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_stamp(record.created)


class OneLine(_UtcTime, DefaultFormatter):
    """uvicorn's ``LEVEL:    message`` with the message on one line; a traceback after it
    keeps its lines: the record's own, or one from another process passed as
    ``extra={"trace": text}`` (the separation child's)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Trailing breaks go, not made a space: a captured warning's text ends with one.
        record.message = one_line(record.message.rstrip())
        return str(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        trace = getattr(record, "trace", None)
        return f"{text}\n{trace}" if isinstance(trace, str) else text


class AccessLine(_UtcTime, AccessFormatter):
    """uvicorn's access line, ending with the request id its response carries (the
    ``x-request-id`` header, an error body's ``request_id``): what a user's complaint quotes."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = str(super().formatMessage(record))
        answering = ANSWERING.get()
        return f"{line} (request {answering[2]})" if answering is not None else line


def log_config(level: str = "INFO", *, timestamps: bool = True) -> dict[str, Any]:
    """uvicorn's own logging configuration, with :class:`RedactSecrets` on its loggers and
    demixer's loggers on uvicorn's default handler (stderr, ``TIME LEVEL:    message``; the
    access log on stdout, as uvicorn writes it), and uvicorn's, at ``level``
    (``DEMIXER_LOG_LEVEL``); every other library's at WARNING or ``level`` if higher.
    ``timestamps`` (``DEMIXER_LOG_TIMESTAMPS``) False leaves the time out of each line."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": RedactSecrets}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    config["formatters"]["default"]["()"] = OneLine
    config["formatters"]["access"]["()"] = AccessLine
    if timestamps:
        for formatter in config["formatters"].values():
            formatter["fmt"] = "%(asctime)s " + formatter["fmt"]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        config["loggers"][name]["level"] = level
    config["loggers"]["demixer"] = {"handlers": ["default"], "level": level, "propagate": False}
    # Other libraries' warnings (boto, SQLAlchemy, ...) in the same shape, not bare lines; but
    # not python-multipart's about each malformed upload: the client is answered 400 with it.
    others = max(logging.WARNING, logging.getLevelName(level))
    config["root"] = {"handlers": ["default"], "level": logging.getLevelName(others)}
    config["loggers"]["python_multipart"] = {"level": "ERROR"}
    return config


def configure_logging(level: str = "INFO", *, timestamps: bool = True) -> None:
    """Apply :func:`log_config` to this process (``demixer worker``, which runs no uvicorn;
    ``serve`` also hands it to uvicorn, which applies it again), and log Python warnings
    (``warnings.warn``) through it."""
    logging.config.dictConfig(log_config(level, timestamps=timestamps))
    # A library's warnings.warn printed a bare line (no time, no level) of its own; through
    # the ``py.warnings`` logger it reaches the root's handler, one line at WARNING.
    logging.captureWarnings(True)
