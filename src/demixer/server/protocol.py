"""uvicorn's HTTP/1.1 protocol with a time limit on a request's head.

uvicorn times a body only through the app (:class:`~demixer.api.bodies.BodyLimitMiddleware`
does) and a keep-alive connection only until its next request's first byte: a client sending
its request line and headers a byte every 20 s holds its connection, and a file descriptor,
for as long as it likes; a few thousand such clients starve the server. Here a connection's
next request head (the request line and headers) must arrive whole within ``head_timeout``
seconds of the connection being made, or of the last response: past that it is answered 408
``REQUEST_TIMEOUT`` (the native envelope: its path may not have arrived) and closed, or closed
silently if not one byte of it came (an idle speculative connection a browser opened).

A request that is not HTTP at all is answered 400 ``INVALID_REQUEST`` in the same envelope,
not uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from demixer.api.errors import error_body
from demixer.service.accounts.keys import new_id

__all__ = ["head_timeout_protocol"]


class _HeadTimeoutProtocol(HttpToolsProtocol):
    head_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if data:
            self._head_started = True
        super().data_received(data)
        if self._in_request():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._in_request():
            self._arm()  # the wait for the next request's head (pipelined: already here)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request that is not HTTP (uvicorn answers it in plain text): the native JSON
        envelope every other error has."""
        self._write_error(400, b"Bad Request", "INVALID_REQUEST", "the request is not valid HTTP")

    def _write_error(self, status: int, reason: bytes, code: str, message: str) -> None:
        rid = new_id("rid")  # as every answer has one (api/errors.py's middleware gives the rest)
        body = json.dumps(error_body(code, message, rid=rid)).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"x-request-id: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (status, reason, rid.encode(), len(body), body)
        )
        self.transport.close()

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
        if not self._head_started:
            self.transport.close()
            return
        message = (
            f"the request's headers did not arrive within {self.head_timeout:g} s "
            "(DEMIXER_BODY_TIMEOUT_SECONDS): the connection is closed"
        )
        self._write_error(408, b"Request Timeout", "REQUEST_TIMEOUT", message)


def head_timeout_protocol(seconds: float) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, heads limited to ``seconds``."""
    return type("HeadTimeoutProtocol", (_HeadTimeoutProtocol,), {"head_timeout": seconds})
