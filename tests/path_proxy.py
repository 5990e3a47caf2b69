"""A reverse proxy serving a demixer under a path, as nginx's ``location /demixer/ { proxy_pass
http://upstream/; }`` does, for tests that need one without nginx: run :func:`path_proxy`'s
application with ``api_support.on_uvicorn``.

A request under the path goes upstream without it, with its headers (``Host`` too, as
``proxy_set_header Host $host`` sends it) and its body as it arrives; the answer comes back as
the upstream sends it, chunk by chunk (a status stream's events as they come). Anything else on
the proxy's site is the site's own 404, and is listed in ``outside``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["path_proxy"]

# Hop-by-hop headers: a proxy answers with its own framing.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def path_proxy(upstream: str, prefix: str, outside: list[str]) -> ASGIApp:
    """An ASGI proxy sending ``prefix``/... to ``upstream``/... (``prefix``: ``/demixer``)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if not path.startswith(prefix + "/"):
            outside.append(path)
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"<h1>404 Not Found</h1>"})
            return

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                yield message.get("body", b"")
                if not message.get("more_body"):
                    return

        url = upstream + path.removeprefix(prefix)
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        headers = [(k, v) for k, v in scope["headers"] if k.decode().lower() not in _HOP]
        sent = body() if any(k == b"content-length" for k, _ in headers) else None
        async with httpx.AsyncClient(timeout=120) as client:
            request = client.build_request(scope["method"], url, headers=headers, content=sent)
            answer = await client.send(request, stream=True)
            try:
                out = [(k, v) for k, v in answer.headers.raw if k.decode().lower() not in _HOP]
                await send(
                    {"type": "http.response.start", "status": answer.status_code, "headers": out}
                )
                async for chunk in answer.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                await answer.aclose()

    return app
