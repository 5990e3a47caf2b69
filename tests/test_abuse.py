"""The abuse suite: a live `demixer serve` fuzzed and fed hostile files, and a full disk.

On SQLite + local storage and on PostgreSQL + S3 (conftest.py), against real servers:

- schema fuzzing: schemathesis against the live ``/v1/openapi.json`` (a fixed budget of examples
  per operation, deterministic), checking that no answer is a 5xx and that every answer is one
  the document declares, in its content type;
- the crafted-file catalogue (tests/crafted.py) and hostile requests to each vendor protocol:
  every case answered with one specific status and code in the protocol's own envelope; after
  each, the server answers, no request is left unfinished and the disk is back where it was;
  peak memory (the server's process tree) and disk use are sampled during each case;
- a full disk: the data directory on a small tmpfs, filled up: uploads answer 507
  ``STORAGE_FULL`` with ``Retry-After``, a job that cannot write its stems fails
  ``STORAGE_FULL``, and once space is freed the same requests succeed by themselves.

Each test writes its figures to ``test-artifacts/abuse-*.json`` (docs/hardening.md quotes them).
"""

from __future__ import annotations

import gc
import gzip
import http.client
import http.server
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from api_support import Api, make_api, on_uvicorn
from conftest import Backend
from crafted import CRAFTED
from demixer.server.protocol import head_timeout_protocol
from service_harness import Server, fast_env, running_server, wait_status

pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["make_api"]  # fixtures

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
MAX_UPLOAD = 2 << 20  # bytes: small, so the cases over it stay quick
MAX_SECONDS = 8  # the server's duration limit
BODY_TIMEOUT = 2  # seconds a request body may pause
KEEP_ALIVE = 5  # seconds an idle connection is kept after a response (longer than the above)
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
FUZZ_EXAMPLES = 3  # per operation and phase: the suite's time budget (see docs/hardening.md)


# --- measuring ---------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (children of any of its threads)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def _rss(pid: int) -> int:
    total = 0
    for member in _tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _bytes_under(root: Path, skip: Callable[[Path], bool] = lambda _: False) -> int:
    """Bytes of the files under ``root``, each hard-linked file once (an upload's spool is
    linked into storage)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if skip(path):
                continue
            try:
                stat = path.lstat()
            except OSError:
                continue
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


@dataclass
class Stack:
    """A live server and where its bytes live (its data directory, and its bucket on S3)."""

    server: Server
    bucket_dir: Path | None
    origin: str  # a local HTTP server's base URL, serving files for audio_url

    def client(self) -> httpx.Client:
        return self.server.client()

    def disk(self) -> int:
        """Bytes of stored data: inputs, outputs, scratch (not the database or the logs)."""

        def ignored(p: Path) -> bool:
            return (
                p.name.startswith("demixer.db")
                or p.suffix == ".log"
                or p.name.endswith((".key", ".json"))
            )

        total = _bytes_under(self.server.data_dir, ignored)
        if self.bucket_dir is not None:
            total += _bytes_under(self.bucket_dir)
        return total

    def scratch_left(self) -> list[str]:
        left = []
        for sub in ("tmp", "work"):
            root = self.server.data_dir / sub
            if root.is_dir():
                left += [str(p.relative_to(root)) for p in root.iterdir()]
        return left


@dataclass
class Sampler:
    """Peak RSS of the server's process tree and peak stored bytes, sampled every 20 ms."""

    stack: Stack
    peak_rss: int = 0
    peak_disk: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, _rss(self.stack.server.process.pid))
            self.peak_disk = max(self.peak_disk, self.stack.disk())
            self._stop.wait(0.02)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The crafted catalogue, plus a file on the server machine's disk for them to point at."""
    root = tmp_path_factory.mktemp("crafted")
    target = CRAFTED["fine.wav"](root / "secret.wav", root)
    return {name: make(root / name, target) for name, make in CRAFTED.items()}


@pytest.fixture(scope="module")
def origin(files: dict[str, Path]) -> Iterator[str]:
    """An HTTP server on loopback serving the catalogue (for audio_url)."""
    root = next(iter(files.values())).parent
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _env(**extra: str) -> dict[str, str]:
    return fast_env(
        DEMIXER_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        DEMIXER_MAX_DURATION_SECONDS=str(MAX_SECONDS),
        DEMIXER_RATE_LIMIT_PER_MINUTE="0",
        DEMIXER_MAX_CONCURRENT_JOBS="0",
        DEMIXER_URL_ALLOWLIST="127.0.0.1",
        DEMIXER_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        DEMIXER_KEEP_ALIVE_SECONDS=str(KEEP_ALIVE),
        **extra,
    )


def _bucket_dir(backend: Backend, env: dict[str, str]) -> Path | None:
    if backend.servers is None:
        return None
    bucket = urlsplit(env["DEMIXER_STORAGE_URL"]).netloc
    return Path(backend.servers.root) / "s3" / bucket


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend, origin: str
) -> Iterator[Stack]:
    env = _env()
    with running_server(tmp_path_factory.mktemp("abuse"), env=env) as server:
        yield Stack(server, _bucket_dir(backend, env), origin)


def _write(name: str, figures: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(figures, indent=1) + "\n")


def _unfinished(client: httpx.Client) -> list[dict[str, Any]]:
    out, cursor = [], None
    while True:
        page = client.get("/v1/queue/requests", params={"limit": 100, "cursor": cursor}).json()
        out += [r for r in page["data"] if r["status"] not in FINAL]
        cursor = page["next_cursor"]
        if not cursor:
            return out


# --- schema fuzzing ----------------------------------------------------------------------------


def test_schema_fuzzing_finds_no_server_error(
    stack: Stack, backend: Backend, tmp_path: Path
) -> None:
    server = stack.server
    report = tmp_path / "report"
    # A query past the server's 8 KiB URL limit is refused as such, 414 URL_TOO_LONG, before
    # its parameters are read: a refusal too (a `fal_webhook` over its 4096 characters, each
    # an astral one, 12 bytes percent-encoded), though not one of schemathesis' defaults.
    (tmp_path / "schemathesis.toml").write_text(
        "[checks.negative_data_rejection]\n"
        'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "414", "415", '
        '"422", "428", "429", "5xx"]\n'
    )
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"), "run",
            f"{server.base_url}/v1/openapi.json",
            "-H", f"Authorization: Bearer {server.key}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,negative_data_rejection,ignored_auth",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(FUZZ_EXAMPLES), "--generation-deterministic",
            "--request-timeout", "30", "--continue-on-failure", "--no-color",
            "--report", "ndjson", "--report-dir", str(report),
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    codes: Counter[int] = Counter()
    for path in report.glob("*.ndjson"):
        for line in path.read_text().splitlines():
            _collect_statuses(json.loads(line), codes)
    statuses = dict(sorted(codes.items()))
    _write(
        f"abuse-fuzz-{backend.name}.json", {"requests": sum(codes.values()), "statuses": statuses}
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert sum(codes.values()) > 300 and not [c for c in codes if c >= 500], codes
    client = stack.client()
    deadline = time.monotonic() + 120
    while (left := _unfinished(client)) and time.monotonic() < deadline:
        time.sleep(0.5)  # the fuzzer's audio_url requests fail at their fetch
    assert left == []
    assert client.get("/v1/models").status_code == 200


def _collect_statuses(event: Any, codes: Counter[int]) -> None:
    """Every HTTP status in a schemathesis NDJSON event (responses are nested in it)."""
    if isinstance(event, dict):
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            codes[response["status_code"]] += 1
        for value in event.values():
            if isinstance(value, dict | list):
                _collect_statuses(value, codes)
    elif isinstance(event, list):
        for value in event:
            _collect_statuses(value, codes)


# --- the catalogue -----------------------------------------------------------------------------

DEEP = "[" * 30_000 + "]" * 30_000
GAUDIO = "/developers/api"


def _error(r: httpx.Response) -> str:
    """``status CODE`` of an answer, in whichever envelope it came."""
    try:
        body = r.json()
    except ValueError:
        return f"{r.status_code} (not JSON)"
    if "error" in body and isinstance(body["error"], dict):  # native
        return f"{r.status_code} {body['error']['code']}"
    if "success" in body:  # MusicGPT
        return f"{r.status_code} {body.get('error') or 'ok'}"
    if "resultCode" in body:  # Gaudio business answer
        return f"{r.status_code} {body['resultCode']}"
    if "code" in body and "msg" in body:  # sunoapi
        return f"{r.status_code} {body['code']}"
    return f"{r.status_code} {body.get('error')}"  # Gaudio HTTP error


def _keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    """``headers`` with the placeholder ``KEY`` replaced by the server's key."""
    return {name: value.replace("KEY", key) for name, value in headers.items()}


def _retry_after(r: httpx.Response) -> str:
    return " Retry-After" if "retry-after" in r.headers else ""


@dataclass
class Run:
    """What one case did: its answers, and what to delete after it."""

    answers: list[str] = field(default_factory=list)
    file_ids: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    spool_peak: int = 0


def _upload(stack: Stack, run: Run, path: Path) -> str | None:
    files = {"file": (path.name, path.read_bytes(), "audio/mpeg")}  # a client that lies too
    r = stack.client().post("/v1/files", files=files)
    if r.status_code == 201:
        run.file_ids.append(r.json()["file_id"])
        run.answers.append(f"201 {r.json()['status']}")
        return str(r.json()["file_id"])
    run.answers.append(_error(r))
    return None


def _submit(stack: Stack, run: Run, source: dict[str, Any]) -> None:
    client = stack.client()
    r = client.post("/v1/queue/audio/stems", json={"input": source})
    if r.status_code != 202:
        run.answers.append(_error(r))
        return
    request_id = r.json()["request_id"]
    run.request_ids.append(request_id)
    done = wait_status(client, request_id, FINAL, timeout=180)
    error = (done.get("error") or {}).get("code")
    run.answers.append(f"202 {done['status']}" + (f" {error}" if error else ""))


def _file_case(name: str) -> Callable[[Stack, Run, dict[str, Path]], None]:
    def case(stack: Stack, run: Run, files: dict[str, Path]) -> None:
        file_id = _upload(stack, run, files[name])
        if file_id is not None:
            _submit(stack, run, {"file_id": file_id})

    return case


def _upload_only(name: str) -> Callable[[Stack, Run, dict[str, Path]], None]:
    def case(stack: Stack, run: Run, files: dict[str, Path]) -> None:
        _upload(stack, run, files[name])

    return case


def _url_case(name: str) -> Callable[[Stack, Run, dict[str, Path]], None]:
    def case(stack: Stack, run: Run, files: dict[str, Path]) -> None:
        _submit(stack, run, {"audio_url": f"{stack.origin}/{name}"})

    return case


def _chunked_over_limit(field_name: str, path: str, headers: dict[str, str]) -> Callable[..., None]:
    """A multipart upload sent chunked (no Content-Length), past the limit; the spool in the
    data directory is watched while the bytes arrive."""

    def case(stack: Stack, run: Run, files: dict[str, Path]) -> None:
        spool = stack.server.data_dir / "tmp"

        def body() -> Iterator[bytes]:
            yield (f'--b0\r\nContent-Disposition: form-data; name="{field_name}"; '
                   'filename="big.wav"\r\nContent-Type: audio/wav\r\n\r\n').encode()  # fmt: skip
            for _ in range((MAX_UPLOAD + (1 << 20)) // 65536):
                run.spool_peak = max(run.spool_peak, _bytes_under(spool))
                time.sleep(0.01)  # a slow client: the server writes while it sends
                yield b"\0" * 65536
            yield b"\r\n--b0--\r\n"

        all_headers = {"Content-Type": "multipart/form-data; boundary=b0", **headers}
        try:
            with httpx.Client(base_url=stack.server.base_url, timeout=60) as client:
                r = client.post(path, content=body(), headers=_keyed(all_headers, stack.server.key))
        except httpx.TransportError:  # the server answered and closed before the end: ask again
            run.answers.append("closed early")
            return
        run.answers.append(_error(r))

    return case


def _exchange(stack: Stack, first: bytes, then: bytes = b"") -> str:
    """Send ``first`` on a raw socket (an HTTP client library would not stop mid-request),
    then ``then`` every half second until the server answers; the answer's ``status CODE``."""
    where = urlsplit(stack.server.base_url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(first)
        received = b""
        if then:
            sock.settimeout(0.5)
            for _ in range(100):
                try:
                    received = sock.recv(65536)  # the server's answer ends the trickle
                    break
                except TimeoutError:
                    sock.sendall(then)
            sock.settimeout(30)
        while chunk := sock.recv(65536):  # the server answers, then closes
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    # Every answer names its request, even one the HTTP layer gives (not HTTP, a late head).
    assert re.search(rb"\r\nx-request-id: rid_\S+", head, re.IGNORECASE), head
    return _error(httpx.Response(int(head.split()[1]), content=body))


def _stalled(
    path: str, headers: dict[str, str], start: bytes, trickle: bool = False
) -> Callable[..., None]:
    """A client that sends ``start`` of a body promising 100 bytes more, then nothing, or with
    ``trickle`` a byte every half second, inside any pause limit."""

    def case(stack: Stack, run: Run, files: dict[str, Path]) -> None:
        lines = [f"POST {path} HTTP/1.1", f"Host: {urlsplit(stack.server.base_url).netloc}",
                 f"Content-Length: {len(start) + 100}"]  # fmt: skip
        lines += [f"{k}: {v}" for k, v in _keyed(headers, stack.server.key).items()]
        first = ("\r\n".join(lines) + "\r\n\r\n").encode() + start
        run.answers.append(_exchange(stack, first, b" " if trickle else b""))

    return case


def _raw(first: bytes, then: bytes = b"") -> Callable[..., None]:
    """A client that sends ``first``, then ``then`` every half second until the server
    answers (a request head trickling in, or no HTTP at all)."""

    def case(stack: Stack, run: Run, files: dict[str, Path]) -> None:
        run.answers.append(_exchange(stack, first, then))

    return case


def _request(method: str, path: str, **kw: Any) -> Callable[[Stack, Run, dict[str, Path]], None]:
    def case(stack: Stack, run: Run, files: dict[str, Path]) -> None:
        args = {name: value for name, value in kw.items() if name != "headers"}
        if callable(args.get("content")):  # a generator: made anew for each run
            args["content"] = args["content"]()
        headers = _keyed(kw.get("headers", {}), stack.server.key)
        with httpx.Client(base_url=stack.server.base_url, timeout=60) as client:
            r = client.request(method, path, headers=headers, **args)
        run.answers.append(_error(r) + _retry_after(r))

    return case


def _musicgpt_file(name: str) -> Callable[[Stack, Run, dict[str, Path]], None]:
    def case(stack: Stack, run: Run, files: dict[str, Path]) -> None:
        path = files[name]
        with httpx.Client(base_url=stack.server.base_url, timeout=60) as client:
            r = client.post(
                "/api/public/v1/Extraction", data={"stems": '["vocals"]'},
                files={"audio_file": (path.name, path.read_bytes(), "audio/mpeg")},
                headers={"Authorization": stack.server.key},
            )  # fmt: skip
        run.answers.append(_error(r))

    return case


_BIG = json.dumps({"input": {"audio_url": "http://127.0.0.1/a.mp3"}, "x": "x" * 800_000})
_GZIPPED = gzip.compress(b'{"input": {"audio_url": "http://127.0.0.1/a.mp3"}}')
_JSON = {"Content-Type": "application/json"}
_BEARER = {"Authorization": "Bearer KEY"}

#: case -> (how to run it, the answers expected, in order)
CASES: dict[str, tuple[Callable[[Stack, Run, dict[str, Path]], None], list[str]]] = {
    "lying-xing.mp3 (declares 0.95 s, holds 40 s)": (
        _file_case("lying-xing.mp3"), ["422 DURATION_LIMIT"]),
    "silent-hour.flac (no length, 1 h in 90 kB)": (
        _file_case("silent-hour.flac"), ["422 DURATION_LIMIT"]),
    "promises-10h.wav (header 6.8 h, holds 1 s)": (
        _file_case("promises-10h.wav"), ["422 INVALID_AUDIO"]),
    "surround-6ch.wav": (_file_case("surround-6ch.wav"), ["201 uploaded", "422 INVALID_AUDIO"]),
    "multitrack-24ch.wav": (
        _file_case("multitrack-24ch.wav"), ["201 uploaded", "422 INVALID_AUDIO"]),
    "concat.mp3 (ffconcat naming a file on disk)": (
        _file_case("concat.mp3"), ["422 INVALID_AUDIO"]),
    "playlist.m3u8 (HLS: a file on disk and a URL)": (
        _file_case("playlist.m3u8"), ["422 INVALID_AUDIO"]),
    "empty.wav": (_file_case("empty.wav"), ["422 INVALID_AUDIO"]),
    "text.mp3": (_file_case("text.mp3"), ["422 INVALID_AUDIO"]),
    "rate4k.wav": (_file_case("rate4k.wav"), ["422 INVALID_AUDIO"]),
    "fine.wav (control; separated in test_full_disk.py)": (
        _upload_only("fine.wav"), ["201 uploaded"]),
    "audio_url lying-xing.mp3": (
        _url_case("lying-xing.mp3"), ["202 FAILED DURATION_LIMIT"]),
    "audio_url silent-hour.flac": (
        _url_case("silent-hour.flac"), ["202 FAILED DURATION_LIMIT"]),
    "audio_url surround-6ch.wav": (
        _url_case("surround-6ch.wav"), ["202 FAILED INVALID_AUDIO"]),
    "audio_url concat.mp3": (_url_case("concat.mp3"), ["202 FAILED INVALID_AUDIO"]),
    "native: 800 kB JSON submit": (
        _request("POST", "/v1/queue/audio/stems", content=_BIG, headers={**_JSON, **_BEARER}),
        ["413 REQUEST_TOO_LARGE"]),
    "native: 800 kB JSON submit, chunked": (
        _request("POST", "/v1/queue/audio/stems", content=lambda: iter([_BIG.encode()]),
                 headers={**_JSON, **_BEARER}),
        ["413 REQUEST_TOO_LARGE"]),
    "native: JSON nested 30 000 deep": (
        _request("POST", "/v1/queue/audio/stems", content=DEEP,
                 headers={**_JSON, **_BEARER, "Idempotency-Key": "deep"}),
        ["400 INVALID_REQUEST"]),
    "native: signed URL with a non-ASCII signature": (
        _request("GET", "/v1/blobs/inputs/file_x?expires=9999999999&sig=%C3%A9"),
        ["403 INVALID_SIGNATURE"]),
    "native: chunked multipart past the limit": (
        _chunked_over_limit("file", "/v1/files", _BEARER), ["413 FILE_TOO_LARGE"]),
    "native: a gzip-compressed JSON submit (Content-Encoding: gzip)": (
        _request("POST", "/v1/queue/audio/stems", content=_GZIPPED,
                 headers={**_JSON, **_BEARER, "Content-Encoding": "gzip"}),
        ["415 UNSUPPORTED_ENCODING"]),
    "native: an upload sent as Transfer-Encoding: gzip, chunked (the server dechunked it "
    "and stored the gzip bytes as the file)": (
        _raw(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             b"Content-Type: multipart/form-data; boundary=b0\r\n"
             b"Transfer-Encoding: gzip, chunked\r\n\r\n"
             + b"%x\r\n%s\r\n0\r\n\r\n" % (len(_GZIPPED), _GZIPPED)),
        ["415 UNSUPPORTED_ENCODING"]),
    "gaudio: fileSize 2^70": (
        _request("POST", f"{GAUDIO}/v1/files/upload-multipart/create",
                 json={"fileName": "a.mp3", "fileSize": 1 << 70}, headers={"x-ga-apikey": "KEY"}),
        ["200 1110"]),
    "gaudio: JSON nested 30 000 deep": (
        _request("POST", f"{GAUDIO}/v1/files/upload-multipart/create", content=DEEP,
                 headers={"x-ga-apikey": "KEY"}),
        ["200 1100"]),
    "gaudio: gzip-compressed JSON": (
        _request("POST", f"{GAUDIO}/v1/files/upload-multipart/create", content=_GZIPPED,
                 headers={"x-ga-apikey": "KEY", "Content-Encoding": "gzip"}),
        ["200 1107"]),
    "gaudio: 800 kB JSON": (
        _request("POST", f"{GAUDIO}/v1/files/upload-multipart/create", content=_BIG,
                 headers={"x-ga-apikey": "KEY"}),
        ["413 request_entity_too_large"]),
    "gaudio: part URL with a non-ASCII signature": (
        _request("PUT", f"{GAUDIO}/v1/files/upload-multipart/part/file_x/1?expires=1&sig=%C3%A9",
                 content=b"x"),
        ["403 forbidden"]),
    "musicgpt: stems nested 30 000 deep": (
        _request("POST", "/api/public/v1/Extraction", headers={"Authorization": "KEY"},
                 data={"stems": DEEP, "audio_url": "http://127.0.0.1/a.mp3"}),
        ["400 INVALID_REQUEST"]),
    "musicgpt: chunked audio_file past the limit": (
        _chunked_over_limit("audio_file", "/api/public/v1/Extraction", {"Authorization": "KEY"}),
        ["413 FILE_TOO_LARGE"]),
    "musicgpt: lying-xing.mp3": (_musicgpt_file("lying-xing.mp3"), ["422 DURATION_LIMIT"]),
    "musicgpt: 800 kB JSON (not a form: the JSON limit)": (
        _request("POST", "/api/public/v1/Extraction", content=_BIG,
                 headers={**_JSON, "Authorization": "KEY"}),
        ["413 REQUEST_TOO_LARGE"]),
    "native: a JSON body that stops arriving": (
        _stalled("/v1/queue/audio/stems", {**_JSON, **_BEARER}, b'{"input": {'),
        ["408 REQUEST_TIMEOUT"]),
    "native: a JSON body trickling a byte every half second": (
        _stalled("/v1/queue/audio/stems", {**_JSON, **_BEARER}, b'{"input": {', trickle=True),
        ["408 REQUEST_TIMEOUT"]),
    "native: an upload that stops arriving": (
        _stalled("/v1/files", {**_BEARER, "Content-Type": "multipart/form-data; boundary=b0"},
                 b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                 b"Content-Type: audio/wav\r\n\r\nRIFF"),
        ["408 REQUEST_TIMEOUT"]),
    "gaudio: a JSON body that stops arriving": (
        _stalled(f"{GAUDIO}/v1/files/upload-multipart/create", {"x-ga-apikey": "KEY"}, b"{"),
        ["408 request_timeout"]),
    "musicgpt: an audio_file that stops arriving": (
        _stalled("/api/public/v1/Extraction",
                 {"Authorization": "KEY", "Content-Type": "multipart/form-data; boundary=b0"},
                 b'--b0\r\nContent-Disposition: form-data; name="audio_file"; '
                 b'filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\nRIFF'),
        ["408 REQUEST_TIMEOUT"]),
    "request headers trickling a line every half second": (
        _raw(b"POST /v1/queue/audio/stems HTTP/1.1\r\nHost: x\r\n", then=b"X-Pad: 1\r\n"),
        ["408 REQUEST_TIMEOUT"]),
    "not HTTP at all (a TLS hello to the plain port)": (
        _raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40) + b"\r\n\r\n"),
        ["400 INVALID_REQUEST"]),
    "a URL of 9 000 bytes": (
        _raw(b"GET /v1/models?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ["414 URL_TOO_LONG"]),
    "one header of 70 000 bytes (uvicorn kept any size in memory)": (
        _raw(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n"),
        ["431 HEADERS_TOO_LARGE"]),
    # The server closed at once with most of it unread: a reset, which lost the answer (or
    # broke the client's send) before the client could read it.
    "one header of 3 MB, sent whole before the answer is read": (
        _raw(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 3_000_000 + b"\r\n\r\n"),
        ["431 HEADERS_TOO_LARGE"]),
    "sunoapi: a JSON body that stops arriving": (
        _stalled("/api/v1/vocal-removal/generate", {**_JSON, **_BEARER}, b"{"),
        ["200 400"]),  # the vendor's codes have no timeout: bad parameters
    "sunoapi: JSON nested 30 000 deep": (
        _request("POST", "/api/v1/vocal-removal/generate", content=DEEP,
                 headers={**_JSON, **_BEARER}),
        ["200 400"]),
    "sunoapi: 800 kB JSON": (
        _request("POST", "/api/v1/vocal-removal/generate", content=_BIG,
                 headers={**_JSON, **_BEARER}),
        ["200 413"]),
}  # fmt: skip


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_heads_are_limited_one_at_a_time_and_bodies_not_at_all(stack: Stack) -> None:
    """The head limit (64 KiB) counts each request's head from its start: three heads of 40 kB
    on one keep-alive connection are each answered, and a body of 200 kB after a head of
    nearly 1 kB is not counted with it (it is read whole and judged)."""
    where = urlsplit(stack.server.base_url)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    answers = []
    for _ in range(3):
        connection.request("GET", "/v1/models", headers={"X-Pad": "a" * 40_000})
        r = connection.getresponse()
        answers.append((r.status, json.loads(r.read())["error"]["code"]))
    body = json.dumps({"input": {"file_id": "file_" + "x" * 200_000}})  # read whole, then judged
    headers = {**_keyed(_BEARER, stack.server.key), "Content-Type": "application/json"}
    connection.request("POST", "/v1/queue/audio/stems", body=body, headers=headers)
    r = connection.getresponse()
    answers.append((r.status, json.loads(r.read())["error"]["code"]))
    connection.close()
    assert answers == [(401, "UNAUTHENTICATED")] * 3 + [(400, "INVALID_REQUEST")]


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_an_idle_connection_is_kept_as_long_as_keep_alive_says(stack: Stack) -> None:
    """A load balancer keeps its connections to the server open for its own idle time (AWS
    ALB: 60 s) and sends the next request on one it believes open: the server closed an idle
    connection at the head timeout whatever DEMIXER_KEEP_ALIVE_SECONDS said, so the balancer
    now and then met a closed connection (a 502 to its client)."""
    where = urlsplit(stack.server.base_url)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    connection.auto_open = 0  # a closed connection raises, never quietly opened again
    connection.connect()
    statuses = []
    for idle in (0, BODY_TIMEOUT + 1):  # the second past the head timeout, within keep-alive
        threading.Event().wait(idle)
        connection.request("GET", "/healthz")  # RemoteDisconnected had the server closed it
        answer = connection.getresponse()
        answer.read()
        statuses.append(answer.status)
    connection.close()
    assert statuses == [200, 200]


@pytest.mark.backends("sqlite")  # the HTTP layer; a download through S3 never passes here
def test_a_download_the_client_stops_reading_is_cut_after_the_body_timeout(make_api: Any) -> None:
    """A client asks for an 8 MB stem and stops reading: the server held the connection, the
    open blob and the answer's task for good (a stalled upload is cut after the body
    timeout). Now, with the buffers full, nothing taken for that long cuts it, and a client
    that reads, however slowly (8 kB every 0.05 s for 1.2 s here), keeps it."""
    api = make_api()
    size = 8 << 20
    api.services.storage.put("misc/stem.wav", io.BytesIO(bytes(size)))
    url = urlsplit(api.services.signer.url("GET", "misc/stem.wav", 600))
    with on_uvicorn(api.client.app, http=head_timeout_protocol(0.5)) as base:
        kept = []
        for stall in (0.0, 1.5):  # seconds without reading; the timeout is 0.5 s
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the server's buffers fill
            sock.connect(("127.0.0.1", urlsplit(base).port or 0))
            sock.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sock.settimeout(10)
            read_until = time.monotonic() + 1.2
            try:
                while time.monotonic() < read_until:
                    assert sock.recv(8192)
                    time.sleep(0.05)
                time.sleep(stall)
                got = 0  # then 256 kB more: more than the client's own buffer holds
                while got < 256 << 10 and (chunk := sock.recv(65536)):
                    got += len(chunk)
            except ConnectionResetError:
                got = -1
            sock.close()
            kept.append(got >= 256 << 10)  # they came, or the connection ended
    assert kept == [True, False]


@pytest.mark.backends("sqlite")  # the answer's life in the API; S3's body closes the same way
def test_a_download_the_client_cuts_closes_its_blob_at_once(make_api: Any) -> None:
    """Clients that cut a stem's download (a closed tab, a player seeking) left the blob's file
    open until Python's garbage collector next ran: a busy server's descriptors piled up in
    between. Each is closed as the answer ends, the collector kept off here."""
    api = make_api()
    api.services.storage.put("misc/stem.wav", io.BytesIO(bytes(8 << 20)))
    url = urlsplit(api.services.signer.url("GET", "misc/stem.wav", 600))
    fds = Path("/proc/self/fd")
    with on_uvicorn(api.client.app) as base:
        gc.collect()  # what earlier tests left, so that only what the downloads leave counts
        gc.disable()
        try:
            before = len(list(fds.iterdir()))
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", urlsplit(base).port or 0)) as sock:
                    sock.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    assert sock.recv(65536)
                    # A reset, as a browser closing a tab sends: the server sees it at once.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            deadline = time.monotonic() + 5
            while len(list(fds.iterdir())) > before and time.monotonic() < deadline:
                time.sleep(0.05)
            left = len(list(fds.iterdir())) - before
        finally:
            gc.enable()
    assert left <= 0


def _slow_body(pieces: int) -> Iterator[bytes]:
    """A body of ``pieces`` times 64 kB, a piece every tenth of a second (an upload on a slow
    link)."""
    for _ in range(pieces):
        time.sleep(0.1)
        yield b"x" * 65536


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_an_upload_refused_on_its_headers_gets_its_answer_not_a_reset(
    make_api: Callable[..., Api],
) -> None:
    """urllib sends ``Connection: close``: uvicorn closed the connection the moment the 401
    was written, with the body still arriving, and urllib raised "Broken pipe" (the reset)
    instead of the 401. The body takes longer than keep-alive: that timer must not cut it."""
    protocol = head_timeout_protocol(30)
    with on_uvicorn(make_api().client.app, http=protocol, timeout_keep_alive=1) as url:
        request = urllib.request.Request(
            url + "/v1/files",
            data=_slow_body(20),
            headers={
                "Authorization": "Bearer dmx_wrong",
                "Content-Type": "multipart/form-data; boundary=b",
                "Content-Length": str(20 * 65536),
            },
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_the_rest_of_a_refused_body_gets_no_answer_of_its_own(stack: Stack) -> None:
    """On a kept-alive connection the rest of a body answered early (401 on its headers) is
    read and dropped: once it had taken the head timeout, the server answered it with a second
    answer, a 408 "the request's headers did not arrive", to a request never made."""
    where = urlsplit(stack.server.base_url)
    pieces = int((BODY_TIMEOUT + 0.5) / 0.1)  # past the head timeout
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dmx_wrong\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {pieces * 65536}\r\n"
        "\r\n"
    )
    received = b""
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(head.encode())
        for piece in _slow_body(pieces):
            sock.sendall(piece)
        while chunk := sock.recv(65536):  # to the end the server gives the connection
            received += chunk
    assert re.findall(rb"HTTP/1.1 (\d+)", received) == [b"401"]


def test_the_catalogue_gets_one_specific_answer_each_and_leaves_nothing(
    stack: Stack, files: dict[str, Path], backend: Backend
) -> None:
    client = stack.client()
    baseline = stack.disk()
    figures = []
    for name, (case, expected) in CASES.items():
        run = Run()
        started = time.monotonic()
        with Sampler(stack) as sampler:
            case(stack, run, files)
        figures.append({
            "case": name, "answers": run.answers, "seconds": round(time.monotonic() - started, 2),
            "peak_rss_mib": round(sampler.peak_rss / 2**20), "spool_peak": run.spool_peak,
            "peak_disk_above_baseline": sampler.peak_disk - baseline,
        })  # fmt: skip
        for request_id in run.request_ids:
            client.delete(f"/v1/queue/requests/{request_id}")
        for file_id in run.file_ids:
            client.delete(f"/v1/files/{file_id}")
        assert run.answers == expected, name
        assert run.spool_peak <= MAX_UPLOAD, name  # bytes past the limit never written
        assert client.get("/v1/models").status_code == 200, name  # healthy
        assert _unfinished(client) == [], name
        assert stack.scratch_left() == [], name
        assert stack.disk() == baseline, name  # back where it was
    _write(f"abuse-catalogue-{backend.name}.json", figures)
    chunked = [f for f in figures if "past the limit" in f["case"]]
    assert all(0 < f["spool_peak"] <= MAX_UPLOAD for f in chunked), chunked
