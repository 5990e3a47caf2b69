"""What a request's ASGI scope says about its body, before a byte of it is read: its media
type (and how any ``Content-Type`` value reads as one), its declared length, whether it has one
at all, and why a JSON route refuses it whole.

Free of the application's error handling, so both the body limits (``api/bodies.py``) and the
error handlers (``api/errors.py``) use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: a worker importing media_type loads no web framework
    from starlette.types import Scope

from demixer.errors import DemixerError, InvalidRequest, UnsupportedMediaType

__all__ = [
    "body_encoding",
    "body_refused",
    "content_length",
    "content_type",
    "may_have_body",
    "media_type",
    "sends_no_body",
]


def media_type(value: str | None) -> str:
    """``"Audio/WAV; rate=1"`` -> ``"audio/wav"``."""
    return (value or "").split(";", 1)[0].strip().lower()


def content_type(scope: Scope) -> str:
    """The media type, lowercase, without parameters; "" when none is given."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return media_type(value.decode("latin-1"))
    return ""


def content_length(scope: Scope) -> int | None:
    """The declared ``Content-Length``, or None (none, or not a number)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            if not text.isdigit():
                return None
            return int(text) if len(text) <= 20 else 10**20  # past int()'s 4300 digits
    return None


def may_have_body(scope: Scope) -> bool:
    """Whether the request can have a body: in HTTP/1.1 only with a ``Content-Length`` or a
    ``Transfer-Encoding`` (the server reads none otherwise)."""
    return any(
        name in (b"content-length", b"transfer-encoding") for name, _ in scope.get("headers", ())
    )


def sends_no_body(scope: Scope) -> bool:
    """Whether the request has no body at all: no length and no chunks, or a length of 0."""
    return not may_have_body(scope) or content_length(scope) == 0


def body_encoding(scope: Scope) -> str | None:
    """The coding the body is sent in beyond chunks, as its header says it (``"Content-Encoding:
    gzip"``, ``"Transfer-Encoding: gzip, chunked"``), or None for a body sent as it is. The
    HTTP server takes chunks off; nothing here takes a compression off."""
    for name, value in scope.get("headers", ()):
        text = value.decode("latin-1").strip()
        codings = [c.strip().lower() for c in text.split(",") if c.strip()]
        if name == b"content-encoding" and any(c != "identity" for c in codings):
            return f"Content-Encoding: {text}"
        if name == b"transfer-encoding" and any(c != "chunked" for c in codings):
            return f"Transfer-Encoding: {text}"
    return None


def body_refused(scope: Scope) -> DemixerError | None:
    """Why a JSON route's body as a whole was refused (FastAPI says "Field required" or "Input
    should be a valid dictionary" of ``body``): another media type (415), or no body at all."""
    where = f"{scope.get('method')} {scope.get('path')}"
    kind = content_type(scope)
    if kind and kind != "application/json" and not kind.endswith("+json"):
        return UnsupportedMediaType(f"{where} takes application/json, not {kind!r}")
    if sends_no_body(scope):
        return InvalidRequest(f"{where} takes a JSON object; the request has no body")
    return None
