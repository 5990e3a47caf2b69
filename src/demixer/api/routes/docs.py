"""``/v1/docs``: Swagger UI from files installed with demixer, so it renders offline.

FastAPI's own docs page loads Swagger UI from a CDN and stays blank without the internet. The
assets here come from the ``fastapi-offline`` package (its ``static/`` folder, Swagger UI 5 with
OpenAPI 3.1 support), served by demixer at ``/v1/docs/{asset}``; nothing is copied by hand.

The page carries a Content-Security-Policy as the web page does: no other site may frame it
(``frame-ancestors 'none'``: a framed "Try it out" could be clicked for a visitor), and no
script runs but Swagger UI's file and the one inline script that starts it (by its hash).
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from demixer.errors import NotFound

__all__ = ["DOCS_URL", "router"]

DOCS_URL = "/v1/docs"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
}

# The page's own inline script: the one <script> without a src.
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


def _policy(html: bytes) -> str:
    """The docs page's Content-Security-Policy: the inline script of ``html`` may run (by
    its hash), no other."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self'; "
        "img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    )


@router.get(DOCS_URL)
def docs(request: Request) -> HTMLResponse:
    """The interactive API documentation."""
    app = request.app
    # Relative to the page (<root>/v1/docs): a reverse proxy serving the API under a path
    # (https://example.com/demixer/) gets the spec and Swagger UI's files from there; the
    # absolute "/v1/openapi.json" went to the proxy's root, and the page stayed blank.
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url.rsplit("/", 1)[1],
        title=f"{app.title} API",
        swagger_js_url="docs/swagger-ui-bundle.js",
        swagger_css_url="docs/swagger-ui.css",
        swagger_favicon_url="../favicon.ico",
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    page.headers["Content-Security-Policy"] = _policy(bytes(page.body))
    page.headers["X-Content-Type-Options"] = "nosniff"
    page.headers["Referrer-Policy"] = "no-referrer"
    return page


@router.get(DOCS_URL + "/{name}")
def docs_asset(name: str) -> Response:
    """Swagger UI's script and style sheet, as the installed package ships them."""
    if name not in _ASSETS:
        raise NotFound(f"no docs asset {name!r}")
    data = resources.files("fastapi_offline").joinpath("static", name).read_bytes()
    return Response(
        data,
        media_type=_ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
