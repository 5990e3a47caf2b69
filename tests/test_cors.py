"""CORS (``DEMIXER_CORS_ORIGINS``): a browser app on another origin calls every API surface.

The middleware sits in front of every route and does not touch the database or storage, so
these run on the embedded backend only; the last test drives a real browser (Chromium).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

from api_support import Api, api, make_api, on_uvicorn
from demixer.api.cors import ALLOW_HEADERS, MAX_AGE_SECONDS
from demixer.server.protocol import head_timeout_protocol
from local_origin import local_origin

__all__ = ["api", "make_api"]  # fixtures

APP = "https://app.example.com"
OTHER = "https://evil.example.net"


def _preflight(api: Api, path: str, method: str, headers: str, origin: str = APP) -> object:
    return api.client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


@pytest.fixture
def cors(make_api: Callable[..., Api]) -> Api:
    return make_api(cors_origins=f"{APP},http://localhost:3000")


def _allows(r: object, origin: str = APP) -> None:
    headers = r.headers  # type: ignore[attr-defined]
    assert headers["access-control-allow-origin"] == origin
    assert "Origin" in headers["vary"]
    exposed = headers["access-control-expose-headers"]
    for name in ("x-request-id", "Retry-After", "RateLimit-Remaining", "ETag", "Content-Range"):
        assert name in exposed


@pytest.mark.parametrize(
    ("path", "method", "asked"),
    [
        ("/v1/queue/audio/stems", "POST", "authorization,content-type,idempotency-key"),
        ("/developers/api/v1/separate/jobs", "POST", "x-ga-apikey,content-type"),
        ("/api/v1/separate", "POST", "authorization"),  # sunoapi
        ("/v1/blobs/inputs/file_x", "PUT", "content-type"),  # a signed upload URL
        ("/v1/blobs/results/x.wav", "GET", "range,if-range"),
        ("/v1/queue/requests/req_x", "DELETE", "authorization"),
    ],
)
def test_a_preflight_from_a_listed_origin_is_answered_204(
    cors: Api, path: str, method: str, asked: str
) -> None:
    r = _preflight(cors, path, method, asked)
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == APP
    assert method in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == ", ".join(ALLOW_HEADERS)
    assert r.headers["access-control-max-age"] == str(MAX_AGE_SECONDS)


def test_a_preflight_from_another_origin_or_with_an_unknown_header_is_refused(cors: Api) -> None:
    r = _preflight(cors, "/v1/models", "GET", "authorization", origin=OTHER)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "ORIGIN_NOT_ALLOWED")
    assert OTHER in r.json()["error"]["message"]
    assert "access-control-allow-origin" not in r.headers
    r = _preflight(cors, "/v1/models", "GET", "x-custom")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "ORIGIN_NOT_ALLOWED")
    assert "x-custom" in r.json()["error"]["message"]


def test_a_public_page_may_reach_this_server_on_a_private_network(cors: Api) -> None:
    """Chrome's Private Network Access: a page on a public site calling a LAN or loopback
    server sends this header in its preflight and refuses the call unless the answer allows
    it; another origin is refused as ever, and a preflight that does not ask is not told."""
    private = {"Access-Control-Request-Private-Network": "true"}
    r = cors.client.options(
        "/v1/files",
        headers={"Origin": APP, "Access-Control-Request-Method": "POST", **private},
    )
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-private-network"] == "true"
    r = cors.client.options(
        "/v1/files",
        headers={"Origin": OTHER, "Access-Control-Request-Method": "POST", **private},
    )
    assert (r.status_code, r.json()["error"]["code"]) == (403, "ORIGIN_NOT_ALLOWED")
    assert "access-control-allow-private-network" not in r.headers
    r = _preflight(cors, "/v1/files", "POST", "authorization")
    assert "access-control-allow-private-network" not in r.headers


def test_answers_to_a_listed_origin_carry_cors_headers_and_others_none(cors: Api) -> None:
    r = cors.get("/v1/models", headers={"Origin": APP})
    assert r.status_code == 200
    _allows(r)
    assert "RateLimit-Remaining" in r.headers  # the header the app now can read
    r = cors.get("/v1/models", headers={"Origin": "http://localhost:3000"})
    _allows(r, "http://localhost:3000")
    r = cors.get("/v1/models", headers={"Origin": OTHER})
    assert r.status_code == 200
    assert not [name for name in r.headers if name.startswith("access-control-")]
    # A cache keeps one answer per origin (and per Accept-Encoding: the list is gzipped).
    assert r.headers["vary"] == "Accept-Encoding, Origin"


def test_error_answers_carry_cors_headers(make_api: Callable[..., Api]) -> None:
    """Without them the app sees only "network error", never why it was refused."""
    api = make_api(cors_origins=APP, rate_limit_per_minute=2)
    origin = {"Origin": APP}
    r = api.client.get("/v1/models", headers=origin)  # no key
    assert (r.status_code, r.json()["error"]["code"]) == (401, "UNAUTHENTICATED")
    _allows(r)
    bad_key = {**origin, "x-ga-apikey": "dmx_nope"}  # Gaudio's own envelope
    r = api.client.get("/developers/api/v1/separate/jobs/x", headers=bad_key)
    assert r.status_code == 401
    _allows(r)
    r = api.post("/v1/queue/audio/stems", content=b"{" * (300 * 1024), headers=origin)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "REQUEST_TOO_LARGE")
    _allows(r)
    for _ in range(3):  # the limit is 2 a minute
        r = api.get("/v1/models", headers=origin)
    assert (r.status_code, r.json()["error"]["code"]) == (429, "RATE_LIMITED")
    _allows(r)


def test_any_origin_is_star(make_api: Callable[..., Api]) -> None:
    api = make_api(cors_origins="*")
    r = api.get("/v1/queue/requests/req_x/status/stream", headers={"Origin": OTHER})
    assert r.status_code == 404
    assert r.headers["access-control-allow-origin"] == "*"
    r = _preflight(api, "/v1/files", "POST", "authorization,content-type", origin=OTHER)
    assert (r.status_code, r.headers["access-control-allow-origin"]) == (204, "*")


def test_off_by_default_answers_carry_none_and_a_preflight_says_why(api: Api) -> None:
    r = api.get("/v1/models", headers={"Origin": APP})
    assert not [name for name in r.headers if name.startswith("access-control-")]
    r = _preflight(api, "/v1/models", "GET", "authorization")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "ORIGIN_NOT_ALLOWED")
    assert "DEMIXER_CORS_ORIGINS" in r.json()["error"]["message"]


def _raw(url: str, request: bytes) -> bytes:
    """``request`` sent as it is; the answer, to the end of the connection."""
    where = urlsplit(url)
    received = b""
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_the_http_layers_own_refusals_carry_cors_headers(make_api: Callable[..., Api]) -> None:
    """431 (a head too large) and 414 (a URL too long) are answered before the app sees the
    request; a browser app must be able to read them too."""
    api = make_api()
    with on_uvicorn(api.client.app, http=head_timeout_protocol(30, (APP,))) as url:
        head = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nOrigin: {APP}\r\nX-Big: "
        answer = _raw(url, head.encode() + b"a" * (70 * 1024) + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert f"access-control-allow-origin: {APP}\r\n".encode() in answer.lower()
    with on_uvicorn(api.client.app, http=head_timeout_protocol(30, ("*",))) as url:
        answer = _raw(url, b"GET /" + b"a" * (9 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414 ")
    assert b"access-control-allow-origin: *\r\n" in answer.lower()


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


def test_a_page_on_another_origin_reads_the_api_in_a_browser(
    make_api: Callable[..., Api], chromium: object
) -> None:
    """Chromium's own CORS checks: a listed origin's fetch (with a key, so preflighted) reads
    the answer and an exposed header; an unlisted origin's fetch fails."""
    script = """async ([url, key]) => {
        try {
            const r = await fetch(url, {headers: {Authorization: `Bearer ${key}`}});
            return [r.status, r.headers.get("RateLimit-Limit")];
        } catch (e) { return [String(e)]; }
    }"""
    # The pages come from a real loopback server: Chromium refuses a request to a loopback
    # address from a page it does not know to be on one, whatever CORS says.
    with local_origin() as pages:
        pages.files["app.html"] = (b"<p>an app</p>", "text/html")
        app = f"http://localhost:{pages.port}"  # another origin than 127.0.0.1:<port>
        api = make_api(cors_origins=app)
        with on_uvicorn(api.client.app) as base:
            context = chromium.new_context()  # type: ignore[attr-defined]
            page = context.new_page()
            page.goto(f"{app}/app.html")
            assert page.evaluate(script, [f"{base}/v1/models", api.key]) == [200, "600"]
            page.goto(pages.url("app.html"))  # http://127.0.0.1:<port>: not listed
            assert page.evaluate(script, [f"{base}/v1/models", api.key]) == [
                "TypeError: Failed to fetch"
            ]
            context.close()


def test_a_page_on_another_origin_uploads_through_a_signed_url(
    make_api: Callable[..., Api], chromium: object
) -> None:
    """The upload a browser app makes: announce with its key, PUT the bytes to the signed URL
    with their Content-Type (a preflighted request to a keyless path), read the answer."""
    script = """async ([base, key]) => {
        const song = await (await fetch("/song.wav")).blob();
        const announced = await fetch(`${base}/v1/files`, {
            method: "POST",
            headers: {Authorization: `Bearer ${key}`, "Content-Type": "application/json"},
            body: JSON.stringify(
                {file_name: "song.wav", content_type: "audio/wav", file_size: song.size}),
        });
        const up = await announced.json();
        const url = base + up.upload_url.slice(up.upload_url.indexOf("/v1/"));
        const put = await fetch(url, {method: "PUT", headers: up.headers, body: song});
        return [announced.status, put.status, (await put.json()).status,
                put.headers.get("x-request-id").slice(0, 4)];
    }"""
    with local_origin() as pages:
        pages.files["app.html"] = (b"<p>an app</p>", "text/html")
        api = make_api(cors_origins=f"http://localhost:{pages.port}")
        pages.files["song.wav"] = (api.files.get("stereo.wav").path.read_bytes(), "audio/wav")
        with on_uvicorn(api.client.app) as base:
            context = chromium.new_context()  # type: ignore[attr-defined]
            page = context.new_page()
            page.goto(f"http://localhost:{pages.port}/app.html")
            assert page.evaluate(script, [base, api.key]) == [201, 200, "uploaded", "rid_"]
            context.close()
