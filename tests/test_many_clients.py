"""Many clients of one API process at once, on a real uvicorn server: what one group of them
does (slow uploads, cancelled uploads, probes of a stuck storage) must not stop the others'
requests from being answered, nor fill the log."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from api_support import TESTSERVER, Api, make_api, on_uvicorn
from demixer.api import forms, uploads
from demixer.server.app import create_app
from worker_support import wait_until

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["make_api"]  # fixtures

#: AnyIO's default worker threads (40), and two more.
UPLOADS = 42


def _partials(root: Path) -> int:
    """Uploads whose bytes are being written to local storage (a temporary each)."""
    return sum(1 for _ in root.rglob(".*.part"))


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """An :class:`Api` without the per-key limit on queued requests (many are sent here)."""
    return make_api(max_concurrent_jobs=0)


@dataclass
class Served:
    """The app of an :class:`Api` on uvicorn, counting the requests that reached it."""

    app: ASGIApp
    url: str = ""
    arrived: Counter[str] = field(default_factory=Counter)  # by path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.arrived[scope["path"]] += 1
        await self.app(scope, receive, send)


@pytest.fixture
def served(api: Api) -> Iterator[Served]:
    counting = Served(create_app(api.services))
    with on_uvicorn(counting) as url:
        counting.url = url
        yield counting


@pytest.fixture
def base(served: Served) -> str:
    return served.url


def _status(sock: socket.socket) -> bytes:
    """The status code of the answer that arrives on ``sock``."""
    return sock.recv(64).split(b" ")[1]


@dataclass
class Held:
    """Calls that wait until :attr:`release` is set (60 s at most), each counted as it comes."""

    release: threading.Event = field(default_factory=threading.Event)
    calls: list[object] = field(default_factory=list)

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        """``real``, held as it is called."""

        def held(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(args)
            self.release.wait(60)
            return real(*args, **kwargs)

        return held


def _meanwhile(
    served: Served,
    requests: Sequence[bytes],
    holding: Callable[[], bool],
    what: str,
    release: Callable[[], object],
    asks: Sequence[str],
    headers: Mapping[str, str],
) -> tuple[list[int], list[bytes]]:
    """Send each of ``requests`` on a connection of its own, wait until ``holding()`` says they
    hold what they take (``what``), GET each of ``asks`` meanwhile, then ``release()`` them.
    Returns the asks' status codes and the status of each request's answer."""
    url = urlsplit(served.url)
    with ExitStack() as stack:
        sent = []
        for request in requests:
            sock = stack.enter_context(socket.create_connection((url.hostname, url.port)))
            sock.sendall(request)
            sent.append(sock)
        wait_until(holding, 30, what)
        try:
            asked = [
                httpx.get(served.url + path, headers=headers, timeout=10).status_code
                for path in asks
            ]
        finally:
            release()
        return asked, [_status(sock) for sock in sent]


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
        answers = [_status(sock) for sock in senders]
    assert answers == [b"200"] * UPLOADS


def _half_sent(base: str, head: bytes, body: bytes) -> None:
    """Send ``head`` (its Content-Length counting all of ``body``) and half of ``body``, then
    close the connection, as a cancelled upload does."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head + body[: len(body) // 2])


def _form(field: str, data: bytes, **text: str) -> tuple[str, bytes]:
    """A multipart form of one file field (and ``text`` fields before it): its Content-Type
    and its body."""
    parts = "".join(
        f'--BOUND\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in text.items()
    )
    body = (
        (
            f"{parts}--BOUND\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + data
        + b"\r\n--BOUND--\r\n"
    )
    return "multipart/form-data; boundary=BOUND", body


def _form_head(path: str, auth: str, kind: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()


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
    _half_sent(base, _form_head("/v1/files", f"Bearer {api.key}", kind, form), form)
    put = urlsplit(up["upload_url"])
    head = (
        f"PUT {put.path}?{put.query} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    _half_sent(base, head.encode(), data)
    kind, form = _form("audio_file", data)
    _half_sent(base, _form_head("/api/public/v1/Extraction", api.key, kind, form), form)

    def told() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "demixer.api"]

    wait_until(lambda: len(told()) == 3, 30, "a log record for each upload")
    assert [(r.levelname, r.exc_info) for r in told()] == [("INFO", None)] * 3
    paths = [r.getMessage().split(" ")[5] for r in told()]
    assert sorted(paths) == sorted(["/v1/files", put.path, "/api/public/v1/Extraction"])


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_probes_of_a_stuck_storage_share_one_check(
    api: Api, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage that takes connections and never answers (S3 stuck): each ``/readyz`` probe
    ran its own check, each holding one of AnyIO's 40 threads for up to two 60 s read timeouts,
    and 45 probes (load balancers and an orchestrator probing every few seconds) left none for
    a listing, a submit, an upload or ``/healthz``. The probes now share one check."""
    held = Held()
    monkeypatch.setattr(api.services.storage, "ping", held.wrap(lambda: None))
    asked, answers = _meanwhile(
        served,
        [b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"] * 45,
        lambda: served.arrived["/readyz"] == 45,
        "the 45 probes",
        held.release.set,
        ["/healthz", "/v1/queue/requests"],
        api.headers(),
    )
    assert asked == [200, 200]
    assert answers == [b"503"] * 45  # no worker runs here: not ready, said by the one check
    assert len(held.calls) == 1


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_healthz_answers_while_every_thread_waits(
    api: Api, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/healthz`` says the process is up, and nothing else. It ran in a worker thread: while
    all 40 waited (41 requests waiting for a database that stopped answering) the liveness
    probe got no answer, and an orchestrator would restart a process that was up."""
    held = Held()
    monkeypatch.setattr(uploads, "create_file", held.wrap(uploads.create_file))
    body = json.dumps({"file_name": "a.wav", "content_type": "audio/wav", "file_size": 10})
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    asked, answers = _meanwhile(
        served,
        [(head + body).encode()] * 41,
        lambda: len(held.calls) == 40,
        "40 requests waiting",
        held.release.set,
        ["/healthz"],
        {},
    )
    assert asked == [200]
    assert answers == [b"201"] * 41


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
@pytest.mark.parametrize("slow", ["storage", "spool"])
def test_uploads_being_stored_leave_threads_for_the_other_requests(
    api: Api, served: Served, monkeypatch: pytest.MonkeyPatch, slow: str
) -> None:
    """Multipart uploads (``POST /v1/files``, MusicGPT's ``audio_file``) waited for the
    storage, and for the spool file's writer, in AnyIO's 40 shared worker threads: while the
    store hung (or 40 big files were being copied to it, or the disk was slow) every other
    request that needs a thread, a listing here, waited for one. Each upload now waits in a
    thread of its own, as a signed PUT does."""
    held = Held()
    if slow == "storage":
        store = api.services.storage
        monkeypatch.setattr(store, "put_file", held.wrap(store.put_file))
    else:
        monkeypatch.setattr(forms._Parser, "write", held.wrap(forms._Parser.write))
    data = api.files.get("stereo.wav").path.read_bytes()
    sends = []
    for path, auth, (kind, form) in (
        ("/v1/files", f"Bearer {api.key}", _form("file", data)),
        ("/api/public/v1/Extraction", api.key, _form("audio_file", data, stems='["vocals"]')),
    ):
        sends += [_form_head(path, auth, kind, form) + form] * (UPLOADS // 2)
    asked, answers = _meanwhile(
        served,
        sends,
        lambda: len(held.calls) >= 40,
        "40 uploads being stored",
        held.release.set,
        ["/v1/queue/requests"],
        api.headers(),
    )
    assert asked == [200]
    assert answers == [b"201"] * (UPLOADS // 2) + [b"200"] * (UPLOADS // 2)


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
@pytest.mark.parametrize(
    ("request_line", "asks", "answer"),
    [
        # Reads the file back from the store to probe it; no bytes were PUT: FILE_NOT_READY.
        ("POST /v1/files/{}/complete HTTP/1.1\r\nContent-Length: 0", "size", b"409"),
        # Asks the store whether the bytes came; still pending: no bytes were PUT.
        ("GET /v1/files/{} HTTP/1.1", "exists", b"200"),
    ],
    ids=["complete", "poll"],
)
def test_files_waiting_for_the_store_leave_threads_for_the_other_requests(
    api: Api,
    served: Served,
    monkeypatch: pytest.MonkeyPatch,
    request_line: str,
    asks: str,
    answer: bytes,
) -> None:
    """``POST /v1/files/{id}/complete`` (which probes the file, reading it back from the
    store: minutes for a big file on S3) and ``GET /v1/files/{id}`` of a pending file (which
    asks the store whether its bytes came, and probes them if so) each ran in one of AnyIO's
    40 shared threads: 40 completions, or 40 clients polling their uploads, while the store
    hung left none for any other request that needs one."""
    announced = [api.announce()["file_id"] for _ in range(UPLOADS)]
    held = Held()
    monkeypatch.setattr(api.services.storage, asks, held.wrap(getattr(api.services.storage, asks)))
    asked, answers = _meanwhile(
        served,
        [
            f"{request_line.format(file_id)}\r\nHost: x\r\n"
            f"Authorization: Bearer {api.key}\r\n\r\n".encode()
            for file_id in announced
        ],
        lambda: len(held.calls) >= 40,
        "40 requests asking the store",
        held.release.set,
        ["/v1/queue/requests"],
        api.headers(),
    )
    assert asked == [200]
    assert answers == [answer] * UPLOADS


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_gaudio_completions_being_stored_leave_threads_for_the_other_requests(
    api: Api, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gaudio's ``upload-multipart/complete`` copies the parts into the file and probes it
    (minutes for a big file) in one of AnyIO's 40 shared threads: 40 completions at once, or
    a store that hung, left none for any other request that needs one."""
    gaudio = "/developers/api/v1/files/upload-multipart"
    data = api.files.get("stereo.wav").path.read_bytes()
    bodies = []
    for _ in range(UPLOADS):
        r = api.client.post(
            f"{gaudio}/create",
            json={"fileName": "a.wav", "fileSize": len(data)},
            headers={"x-ga-apikey": api.key},
        )
        created = r.json()["resultData"]
        [part_url] = created["preSignedUrl"]
        etag = api.send("PUT", part_url, content=data).headers["ETag"].strip('"')
        parts = [{"awsETag": etag, "partNumber": 1}]
        bodies.append(json.dumps({"uploadId": created["uploadId"], "parts": parts}))
    held = Held()
    monkeypatch.setattr(api.services.storage, "put", held.wrap(api.services.storage.put))
    asked, answers = _meanwhile(
        served,
        [
            f"POST {gaudio}/complete HTTP/1.1\r\nHost: x\r\nx-ga-apikey: {api.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            f"{body}".encode()
            for body in bodies
        ],
        lambda: len(held.calls) >= 40,
        "40 completions being stored",
        held.release.set,
        ["/v1/queue/requests"],
        api.headers(),
    )
    assert asked == [200]
    assert answers == [b"200"] * UPLOADS


@pytest.mark.backends("sqlite")  # the embedded database: reads made in the event loop
def test_writers_waiting_for_the_lock_leave_a_connection_for_the_event_loop(
    api: Api, served: Served
) -> None:
    """Another process holds SQLite's write lock for a few seconds (``demixer keys create``, a
    clean-up): submits wait for it in worker threads, each with a pooled connection. 15 took
    the pool's 15, and the next status read, made in the event loop, waited there for one:
    every request of the process, ``/healthz`` included, was held up until the lock was free.
    Now the status is answered while the lock is held, and the submits go in after it."""
    file_id = api.upload()
    job = api.queue_separate(file_id).json()["request_id"]
    body = json.dumps({"input": {"file_id": file_id, "prompt": "vocals"}}).encode()
    head = (
        f"POST /v1/queue/audio/separate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.key}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    database = api.services.settings.data_dir / "demixer.db"
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the other process's write
        pool = api.services.db.engine.pool
        asked, answers = _meanwhile(
            served,
            [head + body] * 20,
            lambda: pool.checkedout() >= 15,
            "15 submits waiting for the lock",
            lambda: holder.execute("COMMIT"),
            [f"/v1/queue/requests/{job}/status"],
            api.headers(),
        )
    finally:
        holder.close()
    assert asked == [200]
    assert answers == [b"202"] * 20
