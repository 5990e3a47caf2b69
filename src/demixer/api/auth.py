"""Who is calling: ``Authorization: Bearer <key>`` checked against the hashed keys, plus scopes.

``Authorization: Key <key>`` is read the same: fal's queue, which the native API is shaped on,
takes its key so, and its client libraries (``fal_client``, ``@fal-ai/client``) send it so.

Routes take one of the ``Annotated`` aliases below; a missing or unknown key is a 401, a key
without the route's scope a 403. Signed blob URLs take no key (the signature is the auth).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from demixer.api.callers import callers
from demixer.api.limits import count_request
from demixer.errors import Forbidden
from demixer.service.accounts.keys import Identity, Unauthorized
from demixer.service.context import Services

__all__ = [
    "MODELS_READ",
    "QUEUE_READ",
    "FilesRead",
    "FilesWrite",
    "ModelsRead",
    "QueueRead",
    "QueueWrite",
    "ServicesDep",
    "authorize",
    "bearer_secret",
    "identify",
    "require",
]


class _KeyBearer(HTTPBearer):
    """HTTP Bearer (as the OpenAPI document states it), also under fal's scheme name ``Key``."""

    async def __call__(self, request: HTTPConnection) -> HTTPAuthorizationCredentials | None:
        scheme, _, key = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() not in ("bearer", "key") or not key.strip():
            return None
        return HTTPAuthorizationCredentials(scheme="Bearer", credentials=key.strip())


_bearer = _KeyBearer(
    auto_error=False,
    bearerFormat="dmx_…",
    description="An API key from `demixer keys create` (`Key <key>`, as fal's clients send "
    "it, is read the same).",
)


async def get_services(request: Request) -> Services:
    """The services ``create_app`` was given (async: no worker thread for an attribute)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def identify(request: Request, secret: str | None) -> Identity:
    """The identity behind ``secret`` (raises ``Unauthorized``), counted against its key's
    rate limit (raises ``RateLimited`` when over): what every key-checking route does first.
    A key seen lately and far from its limit costs no I/O (:mod:`demixer.api.callers`)."""
    identity = await callers(request).identify(secret)
    await count_request(request, identity)
    return identity


async def authorize(request: Request, secret: str | None, scopes: Iterable[str]) -> Identity:
    """:func:`identify` of a Bearer ``secret``, and the identity must hold one of ``scopes``
    (else ``Forbidden``)."""
    if secret is None and request.headers.get("authorization", "").strip():
        # A key sent bare, or with another scheme ("Token", "Basic"): say what is wrong.
        raise Unauthorized(
            "the Authorization header must read `Bearer <key>`; it holds no Bearer key"
        )
    identity = await identify(request, secret)
    if not identity.scopes.intersection(scopes):
        raise Forbidden(
            f"this API key lacks the scope {' or '.join(repr(s) for s in scopes)}; "
            f"it has: {', '.join(sorted(identity.scopes)) or 'none'}"
        )
    return identity


async def bearer_secret(request: Request) -> str | None:
    """The key of ``Authorization: Bearer <key>`` (or ``Key <key>``), read as the routes'
    dependency reads it."""
    credentials = await _bearer(request)
    return credentials.credentials if credentials else None


def require(*scopes: str) -> Callable[..., Awaitable[Identity]]:
    """A dependency: the caller's identity, which must hold one of ``scopes``.

    Every authenticated request is counted against its key's rate limit here (429 when over).
    """

    async def dependency(request: Request, credentials: _Credentials) -> Identity:
        return await authorize(request, credentials.credentials if credentials else None, scopes)

    return dependency


QueueWrite = Annotated[Identity, Depends(require("audio:separate"))]
"""Submit, cancel and delete requests."""
QUEUE_READ = ("audio:separate", "files:read")
"""The scopes that may read a request's status (the fast lanes check them too)."""
QueueRead = Annotated[Identity, Depends(require(*QUEUE_READ))]
"""Read a request's status (and list requests): either scope."""
FilesWrite = Annotated[Identity, Depends(require("files:write"))]
"""Upload and delete files."""
FilesRead = Annotated[Identity, Depends(require("files:read"))]
"""Read files and results."""
MODELS_READ = ("models:read",)
ModelsRead = Annotated[Identity, Depends(require(*MODELS_READ))]
"""List models."""
