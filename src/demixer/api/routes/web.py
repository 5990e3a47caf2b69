"""The web page (``/`` and ``/web/*``) and its local session (``GET /v1/session``).

The page uses only the public v1 API. When the server runs with the local session turned on
(``DEMIXER_LOCAL_SESSION=1`` / ``serve --local-session``, as ``make run`` does) and listens on
loopback, a browser on the same machine gets a key from ``GET /v1/session`` (made on first use;
its secret kept, mode 0600, in the data directory beside the URL-signing key). That key belongs
to the account of the first key on the server (the one ``demixer serve`` printed), so jobs made
with either show in one history; only on a server without keys does the page get an account of
its own. Otherwise the endpoint answers 403 and the page asks for an API key: the opt-in is
what a reverse proxy on the same host cannot forge (it would present every visitor as a
loopback client with a loopback ``Host``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from demixer.api.auth import ServicesDep
from demixer.api.caching import unchanged
from demixer.api.openapi import error_responses
from demixer.errors import DemixerError, Forbidden, NotFound
from demixer.service.accounts.keys import SERVE_KEY_NAME, authenticate, create_key, list_keys
from demixer.service.context import Services

__all__ = ["WEB_DIR", "router"]

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"
SESSION_FILE = "web-session.json"
_ASSETS = {
    "app.js": "text/javascript",
    "page.js": "text/javascript",
    "form.js": "text/javascript",
    "job.js": "text/javascript",
    "history.js": "text/javascript",
    "mixer.js": "text/javascript",
    "stems.js": "text/javascript",
    "transport.js": "text/javascript",
    "timeline.js": "text/javascript",
    "mixdown.js": "text/javascript",
    "words.js": "text/javascript",
    "files.js": "text/javascript",
    "stretch.js": "text/javascript",
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
_lock = threading.Lock()

router = APIRouter(tags=["web"])


class LocalSession(BaseModel):
    """A key for the local web account."""

    api_key: str
    account_id: str


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(url: str) -> str:
    """``url``'s host ("" for none, or for one that does not parse: an unclosed ``[``)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def is_local(request: Request, services: Services) -> bool:
    """The local session turned on, a loopback server, loopback client, and a loopback
    ``Host`` (no DNS rebinding) and ``Origin`` (no other site's page)."""
    settings = services.settings
    if not settings.local_session or not _is_loopback(settings.host):
        return False
    if settings.public_url and not _is_loopback(urlsplit(settings.public_url).hostname):
        return False
    if not _is_loopback(request.client.host if request.client else None):
        return False
    if not _is_loopback(_host_name(f"//{request.headers.get('host', '')}")):
        return False
    origin = request.headers.get("origin")
    return origin is None or _is_loopback(_host_name(origin))


def local_session(services: Services) -> LocalSession:
    """The local web account's key: the stored one while valid, else a new one."""
    path = services.settings.data_dir / SESSION_FILE
    with _lock:
        account_id: str | None = None
        try:
            stored = json.loads(path.read_text())
            account_id = str(stored["account_id"])
            authenticate(services.db, str(stored["secret"]))
            return LocalSession(api_key=str(stored["secret"]), account_id=account_id)
        except (OSError, ValueError, KeyError, TypeError):  # first visit
            account_id = _first_account(services)
        except DemixerError:  # revoked: a new key on the same account
            pass
        try:
            account_id, secret = create_key(services.db, account_id=account_id, name="local web")
        except DemixerError:  # the account is gone
            account_id, secret = create_key(services.db, name="local web")
        key_id = authenticate(services.db, secret).key_id
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"account_id": account_id, "key_id": key_id, "secret": secret}, fh)
        return LocalSession(api_key=secret, account_id=account_id)


def _first_account(services: Services) -> str | None:
    """The account of the key ``serve`` printed: the first key of all, made by ``serve``
    (revoked or not: the account is still the server owner's). None when the first key was
    another's (keys made with ``demixer keys create`` before ``serve`` first ran): the page
    then gets an account of its own, never one of theirs."""
    keys = list_keys(services.db)  # oldest first
    served = next((k for k in keys if k.name == SERVE_KEY_NAME), None)
    return served.account_id if served and served.created_at == keys[0].created_at else None


@router.get("/v1/session", responses=error_responses(403))
def get_session(request: Request, services: ServicesDep) -> LocalSession:
    """The local web account's API key, only when the server runs with `--local-session` and
    for a browser on the loopback address of a server listening on loopback (embedded mode);
    elsewhere a 403 and the page asks for a key."""
    if not is_local(request, services):
        raise Forbidden(
            "no local session here (the server gives one only with --local-session, and only "
            "on loopback); enter an API key"
        )
    return local_session(services)


def _page_headers(services: Services) -> dict[str, str]:
    base = urlsplit(services.settings.base_url)
    downloads = f"{base.scheme}://{base.netloc}"  # signed URLs may name another origin
    if services.storage.public_origin:  # presigned URLs name the bucket's
        downloads += f" {services.storage.public_origin}"
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            f"media-src 'self' blob:; connect-src 'self' {downloads}; object-src 'none'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _file(request: Request, path: Path, media_type: str, headers: dict[str, str]) -> Response:
    """``path`` as the answer, or a 304 when the browser's copy is this one: the page's files
    say ``no-cache``, so the browser asks again at every load, and it got every file whole
    again (Starlette's ``FileResponse`` tags a file but never compares the tag)."""
    answer = FileResponse(path, media_type=media_type, headers=headers, stat_result=path.stat())
    etag = answer.headers["etag"]
    if unchanged(request, etag):
        return Response(None, 304, {"ETag": etag, "Cache-Control": headers["Cache-Control"]})
    return answer


@router.get("/", include_in_schema=False)
def index(request: Request, services: ServicesDep) -> Response:
    """The web page."""
    return _file(request, WEB_DIR / "index.html", "text/html", _page_headers(services))


@router.get("/favicon.ico", include_in_schema=False)
def favicon(request: Request) -> Response:
    """The icon browsers ask for on every page (an SVG; every current browser takes one)."""
    headers = {"Cache-Control": "public, max-age=86400"}
    return _file(request, WEB_DIR / "favicon.svg", "image/svg+xml", headers)


@router.get("/web/{name}", include_in_schema=False)
def asset(name: str, request: Request, services: ServicesDep) -> Response:
    """The page's scripts, style sheet and icon."""
    if name not in _ASSETS:
        raise NotFound(f"no web asset {name!r}")
    return _file(request, WEB_DIR / name, _ASSETS[name], _page_headers(services))
