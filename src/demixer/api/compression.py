"""Text answers gzip-compressed for clients that take it: the web page's scripts, style sheet
and HTML, the OpenAPI document, model lists and listings.

They were sent as they are: the page's first load (its HTML and 15 files) moved 122 kB where
gzip makes it 45 kB, the OpenAPI document 302 kB where it makes it 19 kB, ``GET /v1/models``
51 kB where it makes it 8 kB (measured 2026-12-06 over uvicorn, bodies only).

A client that sends ``Accept-Encoding: gzip`` gets such an answer of :data:`MINIMUM_SIZE`
bytes or more compressed (``Content-Encoding: gzip``); every answer of a type that may be
compressed says ``Vary: Accept-Encoding``, so a shared cache keeps the two apart. A
compressed answer's ``ETag`` is made weak (``W/``): its bytes are not the identity bytes the
strong tag named.

Never compressed: audio and every other type but text (:func:`compressible`), the server-sent
event streams (each event must reach the client as it is written, not when a compressor's
buffer fills), a range of a file (206: its offsets are the identity bytes'), an answer that
already has a ``Content-Encoding``. The middleware sits inside
:class:`~demixer.api.head.HeadAsGet`, so a HEAD is answered with the headers its GET has,
``Content-Encoding`` and length included.

Starlette's ``GZipMiddleware`` compresses every type but the few it lists: an
``application/octet-stream`` or ``application/ogg`` upload read back would be compressed, and
its download could no longer resume by range. Hence a list of the types that may be.
"""

from __future__ import annotations

import zlib

import anyio.to_thread
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MINIMUM_SIZE", "Compress", "accepts_gzip", "compressible"]

MINIMUM_SIZE = 1024  # bytes: below this, gzip's header and the client's work outweigh it
_LEVEL = 6  # zlib's default: near level 9's size for text, at about half its CPU
_IN_THREAD = 256 * 1024  # bodies at least this large are compressed off the event loop
_TEXT = frozenset({"application/json", "application/javascript", "image/svg+xml"})


def compressible(content_type: str) -> bool:
    """Whether an answer of ``content_type`` may be compressed: text, JSON, SVG; never an
    event stream."""
    media = content_type.partition(";")[0].strip().lower()
    if media == "text/event-stream":
        return False
    return media.startswith("text/") or media in _TEXT


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header takes gzip (``gzip`` or ``*``, at a quality
    above 0: ``gzip;q=0`` refuses it)."""
    for coding in accept_encoding.lower().split(","):
        name, _, params = coding.partition(";")
        if name.strip() not in ("gzip", "x-gzip", "*"):
            continue
        quality = params.strip().removeprefix("q=").strip() if params else "1"
        try:
            return float(quality) > 0
        except ValueError:
            return False
    return False


class Compress:
    """ASGI middleware gzip-compressing text answers (see the module's text)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gzip = accepts_gzip(Headers(scope=scope).get("accept-encoding", ""))
        await self.app(scope, receive, _Answer(send, gzip).send)


class _Answer:
    """One answer on its way out: held at its start until its first body part says whether
    it is worth compressing."""

    def __init__(self, send: Send, gzip: bool) -> None:
        self._send = send
        self._gzip = gzip
        self._start: Message | None = None  # held while deciding
        self._compressor: zlib._Compress | None = None
        self._decided = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._begin(message)
            if self._start is None:
                await self._send(message)
        elif kind == "http.response.body" and not self._decided:
            await self._first_body(message)
        elif kind == "http.response.body" and self._compressor is not None:
            more = bool(message.get("more_body", False))
            body = await _compressed(self._compressor, message.get("body", b""), more)
            await self._send({**message, "body": body})
        else:
            await self._release()
            await self._send(message)

    def _begin(self, start: Message) -> None:
        headers = MutableHeaders(scope=start)
        if not compressible(headers.get("content-type", "")) or "content-encoding" in headers:
            self._decided = True  # as it is
            return
        headers.add_vary_header("Accept-Encoding")
        if self._gzip and start["status"] not in (204, 206, 304):
            self._start = start
        else:
            self._decided = True

    async def _first_body(self, message: Message) -> None:
        self._decided = True
        start = self._start
        body = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if start is None or (not more and len(body) < MINIMUM_SIZE):
            await self._release()
            await self._send(message)
            return
        self._start = None
        self._compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        compressed = await _compressed(self._compressor, body, more)
        headers = MutableHeaders(scope=start)
        headers["Content-Encoding"] = "gzip"
        if more:  # its length is known only at its end: sent chunked
            del headers["Content-Length"]
        else:
            headers["Content-Length"] = str(len(compressed))
        etag = headers.get("etag")
        if etag is not None and not etag.startswith("W/"):
            headers["ETag"] = f"W/{etag}"
        await self._send(start)
        await self._send({**message, "body": compressed})

    async def _release(self) -> None:
        """Send the held start, if any, as it is."""
        if self._start is not None:
            start, self._start = self._start, None
            await self._send(start)


async def _compressed(compressor: zlib._Compress, body: bytes, more: bool) -> bytes:
    """``body`` through ``compressor``: flushed, so that each part of a streamed answer reaches
    the client as it is sent, and finished with the last."""
    flush = zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH

    def run() -> bytes:
        return compressor.compress(body) + compressor.flush(flush)

    if len(body) >= _IN_THREAD:
        return await anyio.to_thread.run_sync(run)
    return run()
