"""Many clients of one API process at once, on a real uvicorn server: what one group of them
does (slow uploads, ...) must not stop the others' requests from being answered."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from api_support import TESTSERVER, Api, api, make_api, on_uvicorn
from demixer.server.app import create_app
from worker_support import wait_until

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["api", "make_api"]  # fixtures

#: AnyIO's default worker threads (40), and two more.
UPLOADS = 42


def _partials(root: Path) -> int:
    """Uploads whose bytes are being written to local storage (a temporary each)."""
    return sum(1 for _ in root.rglob(".*.part"))


@pytest.fixture
def base(api: Api) -> Iterator[str]:
    with on_uvicorn(create_app(api.services)) as url:
        yield url


@pytest.mark.backends("sqlite")  # on S3 the upload URLs are the bucket's: no body reaches the API
def test_uploads_in_flight_leave_threads_for_the_other_requests(api: Api, base: str) -> None:
    """42 signed PUTs whose bodies are still arriving (slow clients, or big files): each held
    one of AnyIO's 40 worker threads until its body ended, so a listing, a submit, a key not yet
    cached, even ``/healthz``, waited for an upload to end. Now a listing is answered meanwhile,
    and the uploads all end well once their bytes are there."""
    announced = [api.announce() for _ in range(UPLOADS)]
    data = announced[0]["data"]
    with ExitStack() as stack:
        senders = []
        for up in announced:
            url = urlsplit(up["upload_url"].replace(TESTSERVER, base))
            sock = stack.enter_context(socket.create_connection((url.hostname, url.port)))
            head = (
                f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Content-Type: audio/wav\r\nContent-Length: {len(data)}\r\n\r\n"
            )
            sock.sendall(head.encode() + data[:1000])  # the rest is still on its way
            senders.append(sock)
        storage = Path(api.services.settings.data_dir) / "storage"
        wait_until(lambda: _partials(storage) >= 40, 30, "40 uploads being written")

        listing = httpx.get(f"{base}/v1/queue/requests", headers=api.headers(), timeout=20)
        assert listing.status_code == 200

        for sock in senders:
            sock.sendall(data[1000:])
        answers = [sock.recv(64).split(b" ")[1] for sock in senders]
    assert answers == [b"200"] * UPLOADS


def _half_sent(base: str, head: str, body: bytes) -> None:
    """Send ``head`` (its Content-Length counting all of ``body``) and half of ``body``, then
    close the connection, as a cancelled upload does."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode() + body[: len(body) // 2])


def _form(field: str, data: bytes) -> tuple[str, bytes]:
    """A multipart form of one file field: its Content-Type and its body."""
    body = (
        (
            f'--BOUND\r\nContent-Disposition: form-data; name="{field}"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + data
        + b"\r\n--BOUND--\r\n"
    )
    return "multipart/form-data; boundary=BOUND", body


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_a_client_leaving_mid_upload_is_one_line_not_a_crash(
    api: Api, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An upload whose client closed the connection halfway (multipart, signed PUT, MusicGPT's
    form) was logged as an unhandled error with a traceback of 60 to 100 lines each: 300
    cancelled uploads wrote 21 000 lines of crashes. Each is now one INFO line."""
    caplog.set_level(logging.INFO, logger="demixer.api")
    up = api.announce()
    data = up["data"]
    kind, form = _form("file", data)
    _half_sent(
        base,
        f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.key}\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {len(form)}\r\n\r\n",
        form,
    )
    put = urlsplit(up["upload_url"])
    _half_sent(
        base,
        f"PUT {put.path}?{put.query} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
        f"Content-Length: {len(data)}\r\n\r\n",
        data,
    )
    kind, form = _form("audio_file", data)
    _half_sent(
        base,
        f"POST /api/public/v1/Extraction HTTP/1.1\r\nHost: x\r\nAuthorization: {api.key}\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {len(form)}\r\n\r\n",
        form,
    )

    def told() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "demixer.api"]

    wait_until(lambda: len(told()) == 3, 30, "a log record for each upload")
    assert [(r.levelname, r.exc_info) for r in told()] == [("INFO", None)] * 3
    paths = [r.getMessage().split(" ")[5] for r in told()]
    assert sorted(paths) == sorted(["/v1/files", put.path, "/api/public/v1/Extraction"])
