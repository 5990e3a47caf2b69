"""A local HTTP host for vendor-client tests: serves audio files and receives callbacks.

``GET /<name>`` answers ``files[name]``; any ``POST`` is recorded (path, headers, body) and
answered 200. It listens on 127.0.0.1, so the server under test needs
``DEMIXER_URL_ALLOWLIST=127.0.0.1`` to fetch from it and to call it back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Origin", "Posted", "local_origin"]


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Origin:
    port: int = 0
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    posts: list[Posted] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def posted(self, path: str, timeout: float = 60.0) -> Posted:
        """The first POST to ``path``, waiting for it up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for p in self.posts:
                    if p.path == path:
                        return p
            time.sleep(0.1)
        raise AssertionError(f"nothing was POSTed to {path} in {timeout} s")


@contextmanager
def local_origin() -> Iterator[Origin]:
    origin = Origin()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            found = origin.files.get(self.path.lstrip("/"))
            if found is None:
                self.send_response(404)
                self.end_headers()
                return
            data, content_type = found
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with origin.lock:
                origin.posts.append(Posted(self.path, headers, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    origin.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        httpd.shutdown()
        httpd.server_close()
