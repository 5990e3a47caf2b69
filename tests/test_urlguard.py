"""The SSRF guard: addresses checked directly, then real fetches from a local server.

Nothing here connects anywhere but 127.0.0.1: the ``connections`` fixture wraps
``socket.create_connection`` (what httpx's network backend dials with), records every target and
refuses (without connecting) any other than 127.0.0.1. Host names resolve through the fake DNS
of ``conftest.py``. A "trap" listener on 127.0.0.2 (Linux routes all of 127/8 to ``lo``) proves
that refused URLs are refused before anything connects to them.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from api_support import Api, make_api
from audiofiles import AudioFiles
from demixer.service import urlguard
from demixer.service.urlguard import (
    UnresolvableHost,
    UrlRefused,
    check_address,
    check_url,
    guarded_client,
    parse_allowlist,
)
from demixer.service.worker.fetch import AudioUrlFailed, fetch_audio_url

__all__ = ["make_api"]  # fixtures

LOCAL = ("127.0.0.1",)

REFUSED = [
    "10.0.0.1",
    "192.168.1.1",
    "172.16.0.1",
    "169.254.169.254",
    "fd00::1",
    "fe80::1",
    "::1",
    "127.0.0.1",
    "127.0.0.2",
    "0.0.0.0",
    "::",
    "100.64.0.1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "224.0.0.1",
    "ff02::1",
    "fd00:ec2::254",
    "168.63.129.16",
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "255.255.255.255",
    "240.0.0.1",
    "fec0::2",  # site-local: QEMU's user network reaches its host there
]
ALLOWED = ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8", "1.1.1.1"]


# --- the guard itself, no network ------------------------------------------------------------


@pytest.mark.parametrize("address", REFUSED)
def test_forbidden_addresses_are_refused(address: str) -> None:
    with pytest.raises(UrlRefused) as info:
        check_address(address, ())
    assert info.value.code == "URL_REFUSED"
    with pytest.raises(UrlRefused):  # as ipaddress objects too
        check_address(ipaddress.ip_address(address), ())


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address: str) -> None:
    check_address(address, ())
    check_address(ipaddress.ip_address(address), ())


def test_allowlist_by_address_network_and_name() -> None:
    check_address("10.0.0.5", ["10.0.0.5"])
    check_address("10.1.2.3", "10.0.0.0/8, example.org")
    check_address("fd00::1", ["[fd00::1]"])
    check_address("10.0.0.5", ["Media.Internal"], host="media.internal.")
    with pytest.raises(UrlRefused):
        check_address("10.0.0.6", ["10.0.0.5"])
    with pytest.raises(UrlRefused):
        check_address("10.0.0.5", ["media.internal"], host="other.internal")
    assert parse_allowlist(" A.example.COM., ,10.0.0.1 ,[::1]") == (
        "a.example.com",
        "10.0.0.1",
        "::1",
    )


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.org/a.mp3",
        "gopher://x/",
        "http://",
        "nonsense",
        "",
        "https://8.8.8.8:99999/a.mp3",  # a port no connection can use: refused, not retried
        "https://8.8.8.8:0/a.mp3",  # was taken as 443
    ],
)
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url, LOCAL)


def test_every_resolved_address_is_checked(no_dns: dict[str, list[str]]) -> None:
    no_dns["public.test"] = ["8.8.8.8", "2001:4860:4860::8888"]
    no_dns["mixed.test"] = ["8.8.8.8", "10.0.0.1"]
    no_dns["media.internal"] = ["10.0.0.7"]
    assert check_url("https://public.test/a.mp3", ()) == [
        ipaddress.ip_address("8.8.8.8"),
        ipaddress.ip_address("2001:4860:4860::8888"),
    ]
    with pytest.raises(UrlRefused, match=r"mixed\.test \(10\.0\.0\.1\)"):
        check_url("https://mixed.test/a.mp3", ())
    with pytest.raises(UrlRefused):
        check_url("http://media.internal/a.mp3", ())
    assert check_url("http://media.internal/a.mp3", ["media.internal"])
    assert check_url("http://media.internal/a.mp3", ["10.0.0.0/24"])
    with pytest.raises(UnresolvableHost):
        check_url("http://nowhere.test/a.mp3", ())
    with pytest.raises(UrlRefused, match="loopback"):
        check_url("http://localhost:8000/", ())
    with pytest.raises(UrlRefused, match="loopback"):  # numeric forms of 127.0.0.1
        check_url("http://2130706433/", ())


# --- real fetches from 127.0.0.1 -------------------------------------------------------------


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (host, port) the HTTP client dials; only 127.0.0.1 is really connected to."""
    seen: list[tuple[str, int]] = []
    real = socket.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        seen.append((str(address[0]), int(address[1])))
        if address[0] != "127.0.0.1":
            raise ConnectionRefusedError(f"test: no connection to {address[0]} allowed")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return seen


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("Host", ""))
        if self.path == "/song.wav":
            body = self.server.song
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/go?"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/go?"))
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    song: bytes
    hosts: list[str]


class Local:
    """The 127.0.0.1 server, and a trap listener on 127.0.0.2 with the same port."""

    def __init__(self, server: _Server, trap: socket.socket) -> None:
        self.server = server
        self.port = server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.trap = trap

    def trapped(self) -> int:
        """Connections the trap received (the kernel queues them even if nobody accepts)."""
        count = 0
        while True:
            try:
                conn, _ = self.trap.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.song = AudioFiles(tmp_path).get("stereo.wav").path.read_bytes()
    server.hosts = []
    trap = socket.socket()
    trap.bind(("127.0.0.2", server.server_address[1]))
    trap.listen(8)
    trap.setblocking(False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Local(server, trap)
    finally:
        server.shutdown()
        server.server_close()
        trap.close()


def test_the_allowed_host_is_fetched(
    local: Local, tmp_path: Path, connections: list[tuple[str, int]]
) -> None:
    dest = tmp_path / "in.wav"
    size = fetch_audio_url(f"{local.base}/song.wav", dest, 1 << 24, 5, allowlist=LOCAL)
    assert size == len(local.server.song) and dest.read_bytes() == local.server.song
    assert connections == [("127.0.0.1", local.port)]


def test_without_the_allowlist_even_the_local_server_is_refused(
    local: Local, tmp_path: Path, connections: list[tuple[str, int]]
) -> None:
    with pytest.raises(AudioUrlFailed, match="loopback") as info:
        fetch_audio_url(f"{local.base}/song.wav", tmp_path / "in", 1 << 24, 5)
    assert (info.value.code, info.value.retryable) == ("INVALID_AUDIO_URL", False)
    assert connections == [] and local.server.hosts == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:{port}/song.wav",
        "http://[::1]:{port}/song.wav",
        "http://0.0.0.0:{port}/song.wav",
        "http://[::ffff:127.0.0.2]:{port}/song.wav",
        "http://localhost:{port}/song.wav",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
        "{base}/go?http://127.0.0.2:{port}/song.wav",  # redirect from the allowed host
        "{base}/go?http://[::1]:{port}/song.wav",
        "{base}/go?file:///etc/passwd",
    ],
)
def test_refused_before_any_connection(
    local: Local, tmp_path: Path, connections: list[tuple[str, int]], url: str
) -> None:
    url = url.format(base=local.base, port=local.port)
    dest = tmp_path / "in"
    with pytest.raises(AudioUrlFailed) as info:
        fetch_audio_url(url, dest, 1 << 24, 5, allowlist=LOCAL)
    assert (info.value.code, info.value.retryable) == ("INVALID_AUDIO_URL", False)
    assert "refused" in info.value.message
    assert local.trapped() == 0
    # Only the allowed server was ever dialled (for the redirect's first hop).
    assert all(target == ("127.0.0.1", local.port) for target in connections)
    assert len(connections) == (1 if "/go?" in url else 0)
    assert not dest.exists()


def test_dns_rebinding_cannot_swap_the_address(
    local: Local,
    tmp_path: Path,
    connections: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name answers the allowed address to the check, then 127.0.0.2 to the connection."""
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    real = socket.getaddrinfo  # given literal addresses only: no DNS

    def rebinding(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        assert host == "rebind.test"
        return real(next(answers), port, *args, **kwargs)

    monkeypatch.setattr(urlguard, "getaddrinfo", rebinding)
    allow = ["127.0.0.1"]
    assert check_url(f"http://rebind.test:{local.port}/song.wav", allow)  # the first answer
    with pytest.raises(AudioUrlFailed, match=r"127\.0\.0\.2"):
        fetch_audio_url(f"http://rebind.test:{local.port}/song.wav", tmp_path / "in", 1 << 24, 5)
    assert connections == [] and local.trapped() == 0
    # And the transport on its own (no URL check first): it refuses at connect time.
    monkeypatch.setattr(urlguard, "getaddrinfo", lambda h, p, *a, **k: real("127.0.0.2", p))
    with guarded_client(allow, 5) as client, pytest.raises(UrlRefused, match=r"127\.0\.0\.2"):
        client.get(f"http://rebind.test:{local.port}/song.wav")
    assert connections == [] and local.trapped() == 0


def test_the_transport_dials_the_checked_address_and_keeps_the_host_name(
    local: Local,
    tmp_path: Path,
    connections: list[tuple[str, int]],
    no_dns: dict[str, list[str]],
) -> None:
    no_dns["media.test"] = ["127.0.0.1"]
    dest = tmp_path / "in.wav"
    url = f"http://media.test:{local.port}/song.wav"
    with pytest.raises(AudioUrlFailed, match="loopback"):  # 127.0.0.1 but not allowed by name
        fetch_audio_url(url, dest, 1 << 24, 5, allowlist=["other.test"])
    assert fetch_audio_url(url, dest, 1 << 24, 5, allowlist=["media.test"]) > 0
    assert connections == [("127.0.0.1", local.port)]  # the address, not the name
    assert local.server.hosts == [f"media.test:{local.port}"]  # Host: still the name


# --- at submit, through the API --------------------------------------------------------------


def _submit(api: Api, url: str) -> Any:
    return api.post(
        "/v1/queue/audio/separate", json={"input": {"audio_url": url, "prompt": "vocals"}}
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:{port}/song.wav",
        "http://[::1]:{port}/song.wav",
        "http://0.0.0.0:{port}/song.wav",
        "http://10.0.0.1/song.wav",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://localhost:{port}/song.wav",
        "file:///etc/passwd",
        "http://exa mple.com/a.mp3",  # no name server answers such a host: not the worker's
        "http://[::1/a.mp3",  # an unclosed IPv6 address (was a 500)
        "http://[zz]/a.mp3",
        "http://a..b/x.mp3",  # an empty label, a label with a hyphen at its end, one too long
        "http://-a-.com/x.mp3",
        f"http://{'a' * 64}.com/x.mp3",
    ],
)
def test_submit_refuses_forbidden_urls_at_once(
    make_api: Callable[..., Api], local: Local, connections: list[tuple[str, int]], url: str
) -> None:
    api = make_api(url_allowlist="127.0.0.1")
    r = _submit(api, url.format(port=local.port))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "INVALID_AUDIO_URL"
    assert r.json()["error"]["param"] == "input.audio_url"
    assert connections == [] and local.trapped() == 0


def test_submit_accepts_allowed_and_public_urls(
    make_api: Callable[..., Api],
    local: Local,
    connections: list[tuple[str, int]],
    no_dns: dict[str, list[str]],
) -> None:
    no_dns["cdn.example.org"] = ["8.8.8.8"]  # checked as an address only; never dialled
    allowed = make_api(url_allowlist="127.0.0.1")
    assert _submit(allowed, f"{local.base}/song.wav").status_code == 202
    assert _submit(allowed, "https://cdn.example.org/song.mp3").status_code == 202
    # A name that does not resolve (yet) is the worker's to fail or retry, not a refusal.
    assert _submit(allowed, "https://unknown.example.net/a.mp3").status_code == 202
    strict = make_api()
    r = _submit(strict, f"{local.base}/song.wav")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_AUDIO_URL")
    assert connections == []  # submit checks, it never connects
