"""The shape of a middleware that adds headers to every HTTP answer as it starts (the rate
limit's, ``Cache-Control``, CORS): one loop over the ASGI messages, each middleware saying
only which headers it adds."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AnswerHeaders"]


class AnswerHeaders:
    """ASGI middleware calling :meth:`add` with each HTTP answer's headers as it starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def add(self, scope: Scope, headers: MutableHeaders) -> None:
        """Add (or leave) headers of the answer to the request ``scope``."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.add(scope, MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, send_with_headers)
