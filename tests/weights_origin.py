"""A real HTTP server on 127.0.0.1 for weights downloads, with the faults downloads must survive.

It serves ``files`` (path -> bytes; 404 otherwise) and can honour ``Range`` or ignore it, cut
the next transfer short after N bytes (what a dropped connection looks like to the client),
stall the next one after N bytes (the connection open, nothing more coming), refuse the next
requests with a status of its choice (429, 503) and a ``Retry-After``, and hold responses until
the test lets them go. ``requests`` records each GET's path, ``ranges`` its ``Range``
header (or None).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["BODY", "SHA", "Origin", "serve"]

BODY = bytes(range(256)) * 400  # 102 400 bytes, every offset distinguishable
SHA = hashlib.sha256(BODY).hexdigest()


@dataclass
class Origin:
    url: str = ""  # http://127.0.0.1:<port>, no trailing slash
    files: dict[str, bytes] = field(default_factory=lambda: {"/weights.ckpt": BODY})
    honour_range: bool = True
    cut_after: int | None = None  # the next response stops after this many body bytes
    hold: threading.Event | None = None  # responses wait for this before sending the body
    stall_after: int | None = None  # the next response stops sending after this many bytes
    # Answers given before any file, one per request: (status, Retry-After header or None).
    refusals: list[tuple[int, str | None]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    ranges: list[str | None] = field(default_factory=list)
    seen: threading.Event = field(default_factory=threading.Event)


@contextmanager
def serve() -> Iterator[Origin]:
    state = Origin()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked = self.headers.get("Range")
            state.requests.append(self.path)
            state.ranges.append(asked)
            state.seen.set()
            if state.hold is not None:
                state.hold.wait(30)
            if state.refusals:
                status, wait = state.refusals.pop(0)
                self.send_response(status)
                if wait is not None:
                    self.send_header("Retry-After", wait)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", asked or "")
            if state.honour_range and match:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_error(416, "Range Not Satisfiable")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if state.cut_after is not None:
                payload, state.cut_after = payload[: state.cut_after], None
                self.close_connection = True
            if state.stall_after is not None:
                # The connection stays open with nothing more coming: a stalled server.
                head, state.stall_after = payload[: state.stall_after], None
                self.wfile.write(head)
                self.wfile.flush()
                threading.Event().wait(2)
                return
            # A client that stopped reading (it gave up, or had what it asked) is no error here.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        if state.hold is not None:
            state.hold.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
