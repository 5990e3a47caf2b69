"""Fetching ``audio_url`` inputs from a real local HTTP server (``http.server`` in a thread)."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from demixer.service.urlguard import UrlRefused, check_url
from demixer.service.worker.fetch import AudioUrlFailed, fetch_audio_url

BODY = bytes(range(256)) * 400  # 100 KiB
LOCAL = ("127.0.0.1",)  # the test server's address, allowed past the SSRF guard
# /drip sends its body 10 bytes at a time, each next piece once the client said it has the last
# (a test's on_chunk releases it; after 2 s without, it goes on anyway).
DRIP = threading.Semaphore(0)
# 32 MiB of zeros gzipped twice: 218 bytes on the wire ("Content-Encoding: gzip, gzip").
BOMB = gzip.compress(gzip.compress(bytes(32 << 20)))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/audio":
            self._send(200, BODY)
        elif self.path == "/chunked":  # no Content-Length: the limit is enforced while reading
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(BODY), 8192):
                part = BODY[i : i + 8192]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect"))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/to-ftp":
            self.send_response(301)
            self.send_header("Location", "ftp://example.com/a.mp3")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for i in range(10):
                self.wfile.write(bytes([i]) * 10)
                DRIP.acquire(timeout=2)
        elif self.path == "/gzip":  # compressed once although identity was asked for
            self._send(200, gzip.compress(BODY), (("Content-Encoding", "gzip"),))
        elif self.path == "/gzip-twice":
            self._send(200, BOMB, (("Content-Encoding", "gzip, gzip"),))
        elif self.path == "/share-page":  # a cloud drive's page about the file
            page = b"<!doctype html><title>song.mp3</title>"
            self._send(200, page, (("Content-Type", "text/html; charset=utf-8"),))
        elif self.path == "/bad-gzip":
            self._send(200, b"not gzip at all", (("Content-Encoding", "gzip"),))
        elif self.path == "/empty":
            self._send(200, b"")
        elif self.path in ("/continue-forever", "/header-a-second"):
            # Every read in time, the answer never complete (given up after 6 s).
            if self.path == "/header-a-second":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            line = b"HTTP/1.1 100 Continue\r\n\r\n" if "continue" in self.path else b"X: y\r\n"
            for _ in range(30):
                self.wfile.write(line)
                self.wfile.flush()
                time.sleep(0.2)
            self.close_connection = True
        elif self.path == "/trickle":  # 10 bytes every 0.1 s of 100 KB, for 4 s at most
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x" * 10)
                self.wfile.flush()
                time.sleep(0.1)
            self.close_connection = True
        elif self.path == "/busy":
            self._send(503, b"try later")
        else:
            self._send(404, b"no such file")

    def _send(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that stop reading on purpose (size limit) reset the connection


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_downloads_the_body(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "in"
    seen: list[int] = []
    assert fetch_audio_url(
        f"{server}/audio", dest, 1 << 20, 5, allowlist=LOCAL, on_chunk=seen.append
    ) == len(BODY)
    assert dest.read_bytes() == BODY
    assert seen[-1] == len(BODY)


def test_follows_redirects(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "in"
    assert fetch_audio_url(
        f"{server}/redirect/redirect/audio", dest, 1 << 20, 5, allowlist=LOCAL
    ) == len(BODY)
    assert dest.read_bytes() == BODY


@pytest.mark.parametrize("path", ["/audio", "/chunked"])
def test_too_large_is_final_and_leaves_nothing(server: str, tmp_path: Path, path: str) -> None:
    dest = tmp_path / "in"
    with pytest.raises(AudioUrlFailed, match="limit") as info:
        fetch_audio_url(f"{server}{path}", dest, 50_000, 5, allowlist=LOCAL)
    assert info.value.retryable is False and info.value.code == "INVALID_AUDIO_URL"
    assert not dest.exists()


def test_a_body_gzipped_once_is_saved_decompressed(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "in"
    assert fetch_audio_url(f"{server}/gzip", dest, 1 << 20, 5, allowlist=LOCAL) == len(BODY)
    assert dest.read_bytes() == BODY


def test_stacked_compression_is_refused_unread(server: str, tmp_path: Path) -> None:
    """218 bytes gzipped twice decompress into 32 MiB in one go (a few KiB: gigabytes, and
    the server runs out of memory before the size limit sees a byte)."""
    dest = tmp_path / "in"
    tracemalloc.start()
    try:
        with pytest.raises(AudioUrlFailed, match="Content-Encoding 'gzip, gzip'") as info:
            fetch_audio_url(f"{server}/gzip-twice", dest, 1 << 20, 5, allowlist=LOCAL)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (info.value.code, info.value.retryable) == ("INVALID_AUDIO_URL", False)
    assert peak < 4 << 20 and not dest.exists()


@pytest.mark.parametrize(
    ("path", "retryable", "match"),
    [
        ("/missing", False, "HTTP 404"),
        ("/busy", True, "HTTP 503"),
        ("/to-ftp", False, "http or https"),
        ("/loop", False, "redirected more than"),
        ("/share-page", False, r"answered a web page \(text/html\), not an audio file"),
        ("/empty", False, "answered an empty body"),
        ("/bad-gzip", False, "Content-Encoding cannot decompress"),
    ],
)
def test_http_failures(server: str, tmp_path: Path, path: str, retryable: bool, match: str) -> None:
    dest = tmp_path / "in"
    with pytest.raises(AudioUrlFailed, match=match) as info:
        fetch_audio_url(f"{server}{path}", dest, 1 << 20, 5, allowlist=LOCAL)
    assert info.value.retryable is retryable and info.value.code == "INVALID_AUDIO_URL"
    assert not dest.exists()


@pytest.mark.parametrize("path", ["/continue-forever", "/header-a-second"])
def test_an_answer_whose_headers_never_end_times_out(
    server: str, tmp_path: Path, path: str
) -> None:
    """Nothing heartbeats or checks the job's time limit before the headers are in: a server
    that kept sending "100 Continue" (or a header line) held the worker for good, its job
    IN_PROGRESS forever; the whole head now has the fetch timeout."""
    start = time.monotonic()
    with pytest.raises(AudioUrlFailed, match="ReadTimeout") as info:
        fetch_audio_url(f"{server}{path}", tmp_path / "in", 1 << 20, 1, allowlist=LOCAL)
    assert time.monotonic() - start < 3
    assert (info.value.code, info.value.retryable) == ("INVALID_AUDIO_URL", True)


def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AudioUrlFailed, match="could not fetch") as info:
        fetch_audio_url(
            f"http://127.0.0.1:{port}/a.wav", tmp_path / "in", 1 << 20, 2, allowlist=LOCAL
        )
    assert info.value.retryable is True


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/a.mp3", "http://", "nonsense"])
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(UrlRefused) as info:
        check_url(url, LOCAL)
    assert info.value.code == "URL_REFUSED"


def test_on_chunk_may_abort_and_the_file_is_removed(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "in"

    def abort(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_audio_url(f"{server}/audio", dest, 1 << 20, 5, allowlist=LOCAL, on_chunk=abort)
    assert not dest.exists()


def test_bytes_are_reported_as_they_arrive_not_per_64_kib(server: str, tmp_path: Path) -> None:
    """A slow server's every arrival reaches ``on_chunk`` (the worker's heartbeat, cancel and
    time-limit check), not only each 64 KiB: at 100 bytes a second that was 11 minutes
    without a heartbeat, deaf to a cancel, its lease expired under it."""
    seen: list[int] = []

    def arrived(total: int) -> None:
        seen.append(total)
        DRIP.release()

    dest = tmp_path / "drip.bin"
    size = fetch_audio_url(f"{server}/drip", dest, 10**6, 10, allowlist=LOCAL, on_chunk=arrived)
    assert size == 100 and seen == list(range(10, 101, 10))
    assert dest.read_bytes() == b"".join(bytes([i]) * 10 for i in range(10))


def test_an_origin_sending_too_slowly_is_given_up_on(server: str, tmp_path: Path) -> None:
    """An origin sending 10 bytes every 0.1 s, each read well inside the read timeout, held
    a worker slot until the job's own time limit (an hour by default). Past ``slow_after`` a
    body averaging under 1 KiB/s is given up on, as the API gives up on an upload's."""
    dest = tmp_path / "in"
    start = time.monotonic()
    with pytest.raises(AudioUrlFailed, match="sent too slowly") as info:
        fetch_audio_url(f"{server}/trickle", dest, 1 << 20, 2, allowlist=LOCAL, slow_after=0.5)
    assert time.monotonic() - start < 2
    assert (info.value.code, info.value.retryable) == ("INVALID_AUDIO_URL", False)
    assert not dest.exists()
