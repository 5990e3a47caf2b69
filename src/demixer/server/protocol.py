"""uvicorn's HTTP/1.1 protocol with time limits on a request's head and on an answer nobody reads.

uvicorn times a body only through the app (:class:`~demixer.api.bodies.BodyLimitMiddleware`
does) and a keep-alive connection only until its next request's first byte: a client sending
its request line and headers a byte every 20 s holds its connection, and a file descriptor,
for as long as it likes; a few thousand such clients starve the server. Here a connection's
next request head (the request line and headers) must arrive whole within ``head_timeout``
seconds of the connection being made, or of the last response: past that it is answered 408
``REQUEST_TIMEOUT`` (the native envelope: its path may not have arrived) and closed, or closed
silently if not one byte of it came (an idle speculative connection a browser opened). A
connection idle after a response is uvicorn's keep-alive's to close (``timeout_keep_alive``,
``DEMIXER_KEEP_ALIVE_SECONDS``), when that is the longer: a load balancer keeping connections
open longer than the server does sends requests on connections the server is closing (502s).

An answer the client stops reading is limited the same way: once the connection's buffers are
full, the client must take some of it within ``head_timeout`` seconds, again and again, or the
connection is cut (a reset: what is still buffered can never be sent). A client that asked for
a stem and then read nothing held its connection, the open blob and the answer's task for as
long as it liked, where a stalled upload is cut after that time (nginx's ``send_timeout``
does this for its answers). A slow reader that takes a few bytes within each period keeps it.

A request that is not HTTP at all is answered 400 ``INVALID_REQUEST`` in the same envelope,
not uvicorn's plain text.

A head's size is limited too: uvicorn (httptools) keeps all of it in memory, however long, so one
client could fill the memory with a single header within the time limit. A URL over
:data:`MAX_URL_BYTES` is answered 414 ``URL_TOO_LONG``; a head over :data:`MAX_HEAD_BYTES`
(give or take one read: pipelined heads are not counted) 431 ``HEADERS_TOO_LARGE``; either
closes the connection, and what came is dropped.

With CORS on (``DEMIXER_CORS_ORIGINS``) these answers carry its headers as the app's do
(:func:`demixer.api.cors.answer_headers`), so a browser app can read them: for a listed origin
when its ``Origin`` header arrived before the answer (not on a 414, whose headers never came),
always with ``*``.

Each of these answers ends the connection without losing itself: the client may still be
sending (the rest of an over-long head), and a socket closed with bytes unread sends a reset,
which can destroy the answer in the client's buffer before it is read (with a head of 200 kB,
every time). So the answer is followed by a half-close (FIN), what still arrives is read and
dropped, and the connection closes when the client closes its side, or after
:data:`LINGER_SECONDS`.

The app's answers end a connection the same way. uvicorn closes it the moment an answer that
ends it is written (the client sent ``Connection: close``, as Python's urllib always does, or
spoke HTTP/1.0), even with the request's body still arriving: an upload refused on its headers
alone (401, 403 ``INVALID_SIGNATURE``, 413 by ``Content-Length``, 415) was cut with a reset,
and urllib raised "Broken pipe" instead of the answer. Such a connection lingers instead, for as
long as the body keeps arriving (at most ``head_timeout`` seconds). On a kept-alive connection
the rest of such a body is read and dropped by uvicorn, for ``head_timeout`` seconds at most:
then the connection ends the same way, without the 408 a stalled head gets (no request is
waiting for an answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Sequence
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

try:  # where the system tells a socket's send queue (see _unsent)
    import fcntl
    import termios
except ImportError:  # Windows
    fcntl = termios = None  # type: ignore[assignment]

from demixer.api.cors import answer_headers
from demixer.api.errors import error_body
from demixer.service.accounts.keys import new_id

__all__ = ["LINGER_SECONDS", "MAX_HEAD_BYTES", "MAX_URL_BYTES", "head_timeout_protocol"]

#: A request line's URL: as nginx and Apache take by default.
MAX_URL_BYTES = 8 * 1024
#: A request's whole head (request line and headers), several times what browsers send.
MAX_HEAD_BYTES = 64 * 1024
#: How long a connection answered with an error is read (and the bytes dropped) before it is
#: closed, when its client does not close it first.
LINGER_SECONDS = 2.0


class _HeadTimeoutProtocol(HttpToolsProtocol):
    head_timeout: float = 60.0
    cors_origins: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False
        self._head_bytes = 0  # read since the last head (or body) ended
        self._in_body = False  # between a head's end and its message's end
        self._url_too_long = False
        self._lingering = False  # an error was answered: the connection only drains now
        self._linger_timer: asyncio.TimerHandle | None = None
        self._drain_until = 0.0  # loop time until which arriving bytes keep a lingering one open
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_left = 0  # bytes waiting to be sent when the writes were last checked

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # after an error's answer: read and dropped (see _linger)
            if self.loop.time() < self._drain_until:
                self._close_later()  # a body still arriving: not yet
            return
        if data:
            self._head_started = True
        while data and not self.transport.is_closing():
            if self._in_body:  # a body: api/bodies.py limits it
                piece, data = data, b""
            elif self._head_bytes >= MAX_HEAD_BYTES:
                message = (
                    f"the request's head (its line and headers) is over {_kib(MAX_HEAD_BYTES)}"
                )
                self._write_error(
                    431, b"Request Header Fields Too Large", "HEADERS_TOO_LARGE", message
                )
                return
            else:  # no further than the limit: the parser says whether the head ends in it
                room = MAX_HEAD_BYTES - self._head_bytes
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
            super().data_received(piece)
        if self._in_request():
            self._disarm()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._url_too_long = True
            raise ValueError("URL too long")  # the parser's error: send_400_response below

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_bytes = 0
        super().on_headers_complete()
        if self.cycle is not None:  # its answer closes the connection through _close_answered
            self.cycle.transport = _CycleTransport(self)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._lingering:  # the answer ended the connection (_close_answered): no next request
            self._unset_keepalive_if_required()  # uvicorn's timer would cut the drain short
            return
        if not self.transport.is_closing() and not self._in_request():
            self._arm()  # the wait for the next request's head (pipelined: already here)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._stop_send_watch()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The transport's buffer is full (the client reads slower than the answer comes):
        from now on the client must take some of it every ``head_timeout`` seconds."""
        super().pause_writing()
        self._watch_send()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_send_watch()

    def _watch_send(self) -> None:
        self._stop_send_watch()
        self._send_left = _unsent(self.transport)
        self._send_timer = self.loop.call_later(self.head_timeout, self._send_checked)

    def _stop_send_watch(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_checked(self) -> None:
        self._send_timer = None
        if self.transport.is_closing():
            return
        if _unsent(self.transport) < self._send_left:
            self._watch_send()  # the client took some: a slow reader, not a stalled one
            return
        # Closing would wait for the buffer to be sent, which the client never lets happen; and
        # a socket closed with bytes queued keeps them (megabytes) for as long as the client
        # holds on. A reset drops them.
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def send_400_response(self, msg: str) -> None:
        """A request that is not HTTP (uvicorn answers it in plain text): the native JSON
        envelope every other error has. A URL past the limit is a parser error too."""
        if self._url_too_long:
            message = f"the URL is over {_kib(MAX_URL_BYTES)}"
            self._write_error(414, b"URI Too Long", "URL_TOO_LONG", message)
            return
        self._write_error(400, b"Bad Request", "INVALID_REQUEST", "the request is not valid HTTP")

    def _write_error(self, status: int, reason: bytes, code: str, message: str) -> None:
        rid = new_id("rid")  # as every answer has one, and no-store (api/errors.py, api/caching.py)
        body = json.dumps(error_body(code, message, rid=rid)).encode()
        cors = answer_headers(self.cors_origins, self._origin())
        extra = b"".join(
            b"%s: %s\r\n" % (name.lower().encode(), value.encode("latin-1"))
            for name, value in cors.items()
        )
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"cache-control: no-store\r\nx-request-id: %s\r\ncontent-length: %d\r\n%s\r\n%s"
            % (status, reason, rid.encode(), len(body), extra, body)
        )
        self._linger()

    def _origin(self) -> str | None:
        """The ``Origin`` header of the request being read, if it has arrived."""
        for name, value in getattr(self, "headers", ()):  # uvicorn's, as its parser read them
            if name == b"origin":
                return str(value.decode("latin-1"))
        return None

    def _close_answered(self) -> None:
        """uvicorn closing the connection after an answer: at once if the request came whole,
        else lingering while the rest of its body arrives (module docstring)."""
        if self._in_body and not self.transport.is_closing():
            self._linger(draining=self.head_timeout)
        else:
            self.transport.close()

    def _linger(self, draining: float = 0.0) -> None:
        """End the connection after an answer without a reset destroying it (module docstring):
        half-close, drain, close when the client does or after :data:`LINGER_SECONDS` with
        nothing arriving, or ``draining`` seconds from now at the latest."""
        self._lingering = True
        self._disarm()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.transport.resume_reading()  # uvicorn may have paused it: drain all the same
        self._drain_until = self.loop.time() + draining
        self._close_later()

    def _close_later(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _keeps_alive(self) -> bool:
        """uvicorn's keep-alive timer is running: the connection served a response and sits
        idle, and uvicorn closes it at its own time."""
        task = getattr(self, "timeout_keep_alive_task", None)
        return task is not None and not task.cancelled()

    def _in_request(self) -> bool:
        """A request's head arrived and its response is not complete."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._head_started = False
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._in_request():
            return
        if self._in_body:  # the rest of an answered request's body, arriving all this time
            self._linger()
            return
        if not self._head_started:
            if not self._keeps_alive():
                self.transport.close()
            return
        message = (
            f"the request's headers did not arrive within {self.head_timeout:g} s "
            "(DEMIXER_BODY_TIMEOUT_SECONDS): the connection is closed"
        )
        self._write_error(408, b"Request Timeout", "REQUEST_TIMEOUT", message)


class _CycleTransport:
    """The connection as a request's response cycle (uvicorn's) sees it: the same, but closing
    it is the protocol's :meth:`_HeadTimeoutProtocol._close_answered`."""

    def __init__(self, protocol: _HeadTimeoutProtocol) -> None:
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol.transport.is_closing()

    def close(self) -> None:
        self._protocol._close_answered()


def head_timeout_protocol(
    seconds: float, cors_origins: Sequence[str] = ()
) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, heads limited to ``seconds``; its
    own error answers carry CORS headers for ``cors_origins`` (``Settings.cors_origin_list``)."""
    attributes = {"head_timeout": seconds, "cors_origins": tuple(cors_origins)}
    return type("HeadTimeoutProtocol", (_HeadTimeoutProtocol,), attributes)


def _unsent(transport: asyncio.Transport) -> int:
    """Bytes of the answer the client has not taken yet: the transport's buffer and, where the
    system says it (Linux: ``SIOCOUTQ``), the socket's send queue. The transport's buffer alone
    moves only when the system's queue has room for a large share of it again: a client
    reading a few kB a second took that long to move it, and looked stalled."""
    left = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is None or termios is None or not hasattr(termios, "TIOCOUTQ"):
        return left
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    except OSError:
        return left
    return left + int(struct.unpack("i", queued)[0])


def _kib(size: int) -> str:
    return f"{size // 1024} KiB ({size:,} bytes)".replace(",", " ")
