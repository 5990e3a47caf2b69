"""Caches never keep an API answer: ``Cache-Control: no-store`` on every JSON answer that does
not say otherwise.

An answer is one caller's, and true for a moment: a request's status, a file, a usage count.
Without a ``Cache-Control`` a shared cache (a reverse proxy, a company's proxy) is allowed to
keep a 200 and serve it again (RFC 9111, section 4.2.2: heuristic freshness); it is kept from
doing so only for requests that carry an ``Authorization`` header, and Gaudio's clients send
their key in ``x-ga-apikey``. Varnish, for one, keeps such an answer two minutes by default
(its ``default_ttl``): a client polling a job through it would see the job running for two
minutes after it ended, and anyone asking the same URL would get the first caller's answer.

Routes that want caching say so themselves (the web page's assets, the API docs, a stream's
``no-cache``) and are left alone, as are blobs, which say ``private`` (the browser that
downloaded a stem may keep it; api/routes/blobs.py). Those that a browser keeps and asks about
again (blobs, the web page's files) answer its ``If-None-Match`` with a 304: :func:`unchanged`.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import Scope

from demixer.api.answer_headers import AnswerHeaders

__all__ = ["NoStoreJson", "unchanged"]


class NoStoreJson(AnswerHeaders):
    """ASGI middleware adding ``Cache-Control: no-store`` to JSON answers without one."""

    def add(self, scope: Scope, headers: MutableHeaders) -> None:
        json = headers.get("content-type", "").startswith("application/json")
        if json and "cache-control" not in headers:
            headers["Cache-Control"] = "no-store"


def unchanged(request: Request, etag: str) -> bool:
    """Whether the request's ``If-None-Match`` names ``etag`` (or is ``*``): the client holds
    this answer already, and is answered 304 without it (RFC 9110, section 13.1.2). A browser
    revalidating a stem or a page's script it has cached, or a sync tool checking a file, sent
    it and got the whole body again. Weak tags (``W/"..."``: a gzipped answer's,
    :mod:`demixer.api.compression`) compare by their value, as the RFC says here."""
    asked = request.headers.get("if-none-match")
    if asked is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in asked.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags
