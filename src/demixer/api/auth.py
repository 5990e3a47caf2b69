"""Who is calling: ``Authorization: Bearer <key>`` checked against the hashed keys, plus scopes.

Routes take one of the ``Annotated`` aliases below; a missing or unknown key is a 401, a key
without the route's scope a 403. Signed blob URLs take no key (the signature is the auth).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from demixer.api.limits import count_request
from demixer.errors import Forbidden
from demixer.service.accounts.keys import Identity, authenticate
from demixer.service.context import Services

__all__ = [
    "FilesRead",
    "FilesWrite",
    "ModelsRead",
    "QueueRead",
    "QueueWrite",
    "ServicesDep",
    "require",
]

_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="dmx_…",
    description="An API key from `demixer keys create`.",
)


def get_services(request: Request) -> Services:
    """The services ``create_app`` was given."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require(*scopes: str) -> Callable[..., Identity]:
    """A dependency: the caller's identity, which must hold one of ``scopes``.

    Every authenticated request is counted against its key's rate limit here (429 when over).
    """

    def dependency(request: Request, services: ServicesDep, credentials: _Credentials) -> Identity:
        identity = authenticate(services.db, credentials.credentials if credentials else None)
        count_request(request, services, identity)
        if not identity.scopes.intersection(scopes):
            raise Forbidden(
                f"this API key lacks the scope {' or '.join(repr(s) for s in scopes)}; "
                f"it has: {', '.join(sorted(identity.scopes)) or 'none'}"
            )
        return identity

    return dependency


QueueWrite = Annotated[Identity, Depends(require("audio:separate"))]
"""Submit, cancel and delete requests."""
QueueRead = Annotated[Identity, Depends(require("audio:separate", "files:read"))]
"""Read a request's status (and list requests): either scope."""
FilesWrite = Annotated[Identity, Depends(require("files:write"))]
"""Upload and delete files."""
FilesRead = Annotated[Identity, Depends(require("files:read"))]
"""Read files and results."""
ModelsRead = Annotated[Identity, Depends(require("models:read"))]
"""List models."""
