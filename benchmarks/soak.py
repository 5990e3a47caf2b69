"""Does a long-running `demixer serve` keep its resources flat? A soak over every protocol.

Starts a real ``demixer serve`` (SQLite and a local data directory, or ``--backend pg-s3``:
PostgreSQL and an S3 server started by ``tests/servers.py``) with the real ``spleeter-2stems``
model, then runs each scenario ``--loops`` times (the ones that need a separation a smaller
number, ``--job-loops``) and after each scenario prints what the server holds: its open file
descriptors, threads and RSS, its child processes (the worker slots' separation children) with
their fds and RSS, the files under its data directory (scratch ``tmp/``, storage) and under its
own ``$TMPDIR``, and on PostgreSQL the database's connections (``pg_stat_activity``).

The scenarios: successful jobs in each protocol (native, Gaudio, MusicGPT, sunoapi), failed
jobs (undecodable audio, over the duration limit, an unknown model, an ``audio_url`` whose
host refuses), cancelled running jobs, uploads cut off mid-body (multipart and signed PUT), SSE
streams abandoned mid-stream, downloads abandoned mid-body (closed, or left open and unread:
measured once twice the server's body timeout, 10 s here, has passed), Range downloads,
webhooks to a receiver that hangs and to a refused port, duplicate submits with one
Idempotency-Key, deleted files and requests. ``--separate-worker`` runs ``serve --workers 0``
and one ``demixer worker`` beside it, measured too (``w_...``).

    .venv/bin/python benchmarks/soak.py [--loops 200] [--job-loops 50] [--every 100]
        [--backend sqlite|pg-s3] [--separate-worker] [--only native,cancel_running,...]

Figures and what they showed: benchmarks/RESULTS.md, "Soak".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from service_harness import (  # noqa: E402
    Server,
    WorkerProcess,
    fast_env,
    start_server,
    start_worker,
)

RATE = 44100
MAX_DURATION = 60  # seconds: the server's limit, so a longer upload fails DURATION_LIMIT
STALL_SECONDS = 10  # the server's DEMIXER_BODY_TIMEOUT_SECONDS: a stalled answer is cut then


def wav(seconds: float, seed: int) -> bytes:
    """A unique 16-bit stereo wav of noise (unique: the result cache never answers it)."""
    rng = np.random.default_rng(seed)
    data = (0.1 * rng.standard_normal((int(seconds * RATE), 2))).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, data, RATE, subtype="PCM_16", format="WAV")
    return out.getvalue()


class Hanging:
    """A webhook receiver that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Soak:
    """The scenarios (one request flow each) against a running server, and what it holds."""

    def __init__(
        self, server: Server, pg_admin: str | None, worker: WorkerProcess | None = None
    ) -> None:
        self.server = server
        self.worker = worker
        self.bucket_dir: Path | None = None
        self.stalled: list[socket.socket] = []
        self.base = server.base_url
        self.key = server.key
        self.http = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=120
        )
        self.pg_admin = pg_admin
        self.seed = 0
        self.short = wav(1.0, 0)
        self.hanging = Hanging()
        self.refused = refused_port()

    # --- measuring ------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        proc = psutil.Process(self.server.process.pid)
        children = proc.children(recursive=True)
        data = self.server.data_dir
        scratch = data / "tmp"  # uploads' spool; work/: the attempts' own

        def count(path: Path) -> int:
            return sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0

        out: dict[str, Any] = {
            "fds": proc.num_fds(),
            "threads": proc.num_threads(),
            "rss_mb": round(proc.memory_info().rss / 2**20, 1),
            "children": len(children),
            "child_fds": sum(c.num_fds() for c in children),
            "child_rss_mb": round(sum(c.memory_info().rss for c in children) / 2**20, 1),
            "scratch": count(scratch) + count(data / "work"),
            # The local store's directory, or the S3 server's (rclone's) directory.
            "storage": count(self.bucket_dir or data / "storage"),
            "tmpdir": count(Path(self.server.env()["TMPDIR"])),
        }
        if self.pg_admin:
            import psycopg

            db = self.server.env()["DEMIXER_DATABASE_URL"].rsplit("/", 1)[-1]
            with psycopg.connect(self.pg_admin.replace("postgresql+psycopg", "postgresql")) as c:
                row = c.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,)
                ).fetchone()
                out["pg_conns"] = row[0] if row else 0
        if self.worker is not None:  # a separate `demixer worker` (its data dir: its scratch)
            wproc = psutil.Process(self.worker.process.pid)
            wchildren = wproc.children(recursive=True)
            wdata = self.worker.log.parent
            out.update(
                w_fds=wproc.num_fds(),
                w_threads=wproc.num_threads(),
                w_rss_mb=round(wproc.memory_info().rss / 2**20, 1),
                w_children=len(wchildren),
                w_child_fds=sum(c.num_fds() for c in wchildren),
                w_scratch=count(wdata / "tmp") + count(wdata / "work"),
            )
        return out

    # --- helpers --------------------------------------------------------------------------

    def unique(self, data: bytes | None = None) -> bytes:
        """``data`` (default: 1 s of noise) made new: the low bytes of its last samples, so
        the server's result cache never answers it."""
        self.seed += 1
        b = bytearray(self.short if data is None else data)
        b[-4:] = self.seed.to_bytes(4, "little")
        return bytes(b)

    def upload(self, data: bytes, name: str = "a.wav") -> str:
        r = self.http.post("/v1/files", files={"file": (name, data, "audio/wav")})
        assert r.status_code == 201, r.text
        return str(r.json()["file_id"])

    def stems(self, file_id: str, **extra: Any) -> httpx.Response:
        body = {"input": {"file_id": file_id, "stems": ["vocals"]}, **extra}
        return self.http.post("/v1/queue/audio/stems", json=body)

    def wait(self, request_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.http.get(f"/v1/queue/requests/{request_id}/status").json()
            if body["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                return dict(body)
            time.sleep(0.1)
        raise AssertionError(f"{request_id} never finished")

    def raw(self, head: bytes, body: bytes) -> None:
        """Send ``head`` and part of a body, then close the socket without reading."""
        with socket.create_connection(("127.0.0.1", self.server_port)) as s:
            s.sendall(head + body)

    @property
    def server_port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    # --- scenarios ------------------------------------------------------------------------

    def native(self) -> None:
        rid = self.stems(self.upload(self.unique())).json()["request_id"]
        assert self.wait(rid)["status"] == "COMPLETED"
        result = self.http.get(f"/v1/queue/requests/{rid}/result").json()
        for out in result["data"].values():
            if isinstance(out, dict):
                assert httpx.get(out["url"], timeout=60).status_code == 200

    def gaudio(self) -> None:
        g = httpx.Client(base_url=self.base + "/developers/api", headers={"x-ga-apikey": self.key})
        with g:
            data = self.unique()
            made = g.post(
                "/v1/files/upload-multipart/create",
                json={"fileName": "a.wav", "fileSize": len(data)},
            ).json()["resultData"]
            chunk = made["chunkSize"]
            parts = []
            for i, url in enumerate(made["preSignedUrl"]):
                put = httpx.put(url, content=data[i * chunk : (i + 1) * chunk])
                parts.append({"awsETag": put.headers["etag"].strip('"'), "partNumber": i + 1})
            done = g.post(
                "/v1/files/upload-multipart/complete",
                json={"uploadId": made["uploadId"], "parts": parts},
            ).json()
            assert done["resultCode"] == 1000, done
            job = g.post(
                "/v1/gsep_music_hq_v1/jobs",
                json={"audioUploadId": made["uploadId"], "type": "vocal"},
            ).json()["resultData"]["jobId"]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                got = g.get(f"/v1/gsep_music_hq_v1/jobs/{job}").json()["resultData"]
                if got["status"] in ("success", "failed"):
                    break
                time.sleep(0.1)
            assert got["status"] == "success", got
            assert httpx.get(got["downloadUrl"]["vocal"]["wav"]).status_code == 200

    def musicgpt(self) -> None:
        m = httpx.Client(base_url=self.base + "/api/public", headers={"Authorization": self.key})
        with m:
            made = m.post(
                "/v1/Extraction",
                data={"stems": '["vocals"]'},
                files={"audio_file": ("a.wav", self.unique(), "audio/wav")},
            ).json()
            task = made["task_id"]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                conv = m.get("/v1/byId", params={"conversionType": "EXTRACTION", "task_id": task})
                got = conv.json()["conversion"]
                if got["status"] in ("COMPLETED", "FAILED"):
                    break
                time.sleep(0.1)
            assert got["status"] == "COMPLETED", got

    def sunoapi(self) -> None:
        fid = self.upload(self.unique())
        base = "/api/v1/vocal-removal"
        made = self.http.post(f"{base}/generate", json={"fileId": fid}).json()
        task = made["data"]["taskId"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            data = self.http.get(f"{base}/record-info", params={"taskId": task}).json()["data"]
            if data["successFlag"] != "PENDING":
                break
            time.sleep(0.1)
        assert data["successFlag"] == "SUCCESS", data

    def failed_undecodable(self) -> None:
        r = self.http.post(
            "/v1/files", files={"file": ("a.wav", b"RIFF" + bytes(4000), "audio/wav")}
        )
        if r.status_code == 201:  # refused at upload or the job fails: either is fine
            rid = self.stems(r.json()["file_id"]).json().get("request_id")
            if rid:
                assert self.wait(rid)["status"] == "FAILED"

    def failed_too_long(self) -> None:
        # Refused where the upload is probed (422 DURATION_LIMIT), after it was spooled.
        r = self.http.post("/v1/files", files={"file": ("a.wav", self.long_file, "audio/wav")})
        assert r.status_code == 422 and r.json()["error"]["code"] == "DURATION_LIMIT", r.text

    def failed_unknown_model(self) -> None:
        body = {"input": {"file_id": self.short_id, "model": "no-such-model"}}
        r = self.http.post("/v1/queue/audio/stems", json=body)
        assert r.status_code in (400, 404, 422), r.text

    def failed_url(self) -> None:
        # An audio_url whose host refuses: the worker's fetch fails.
        body = {"input": {"audio_url": f"http://127.0.0.1:{self.refused}/a.wav"}}
        r = self.http.post(
            "/v1/queue/audio/separate",
            json={**body, "input": {**body["input"], "prompt": "vocals"}},
        )
        assert r.status_code == 202, r.text
        assert self.wait(r.json()["request_id"])["status"] == "FAILED"

    def cancel_running(self) -> None:
        fid = self.upload(self.unique(self.medium))
        rid = self.stems(fid).json()["request_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = self.http.get(f"/v1/queue/requests/{rid}/status").json()["status"]
            if status != "IN_QUEUE":
                break
            time.sleep(0.05)
        time.sleep(0.3)
        self.http.put(f"/v1/queue/requests/{rid}/cancel")
        assert self.wait(rid)["status"] in ("CANCELLED", "COMPLETED")

    def cut_multipart(self) -> None:
        boundary = "soakboundary"
        pre = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        total = len(pre) + 2_000_000
        head = (
            f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.key}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {total}\r\n\r\n"
        ).encode()
        self.raw(head, pre + self.short[:200_000])

    def cut_signed_put(self) -> None:
        made = self.http.post(
            "/v1/files",
            json={
                "file_name": "a.wav",
                "content_type": "audio/wav",
                "file_size": 2_000_000,
                "purpose": "audio.separate.input",
            },
        ).json()
        url = httpx.URL(made["upload_url"])
        if url.port != self.server_port:  # S3's: not the server's socket
            return
        headers = "".join(f"{k}: {v}\r\n" for k, v in made["headers"].items())
        target = url.raw_path.decode()
        head = (
            f"PUT {target} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 2000000\r\n\r\n"
        ).encode()
        self.raw(head, self.short[:150_000])

    def sse_abandoned(self) -> None:
        # A stream of a job not yet finished (a long one; a new one once it ends).
        status = self.http.get(f"/v1/queue/requests/{self.running_id}/status").json()["status"]
        if status in ("COMPLETED", "FAILED", "CANCELLED"):
            self.running_id = self.stems(self.upload(self.unique(self.medium))).json()["request_id"]
        url = f"/v1/queue/requests/{self.running_id}/status/stream"
        with self.http.stream("GET", url, params={"interval": 1}) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    break  # and close mid-stream

    def download_abandoned(self) -> None:
        with httpx.stream("GET", self.big_url) as r:
            for _ in r.iter_bytes(65536):
                break

    def download_stalled(self) -> None:
        # A download the client stops reading without closing it (kept open to the end).
        url = httpx.URL(self.big_url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", url.port or 80))
        sock.sendall(f"GET {url.raw_path.decode()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.recv(65536)
        self.stalled.append(sock)

    def range_download(self) -> None:
        r = httpx.get(self.big_url, headers={"Range": "bytes=1000-200000"})
        assert r.status_code == 206, r.status_code
        r = httpx.get(self.big_url, headers={"Range": "bytes=-5000"})
        assert r.status_code == 206, r.status_code

    def webhook_hang(self) -> None:
        hook = {"url": f"http://127.0.0.1:{self.hanging.port}/hook"}
        rid = self.stems(self.upload(self.unique()), webhook=hook).json()["request_id"]
        self.wait(rid)

    def webhook_refused(self) -> None:
        hook = {"url": f"http://127.0.0.1:{self.refused}/hook"}
        rid = self.stems(self.upload(self.unique()), webhook=hook).json()["request_id"]
        self.wait(rid)

    def idempotent(self) -> None:
        key = uuid.uuid4().hex
        body = {"input": {"file_id": self.short_id, "stems": ["vocals"]}}
        h = {"Idempotency-Key": key}
        a = self.http.post("/v1/queue/audio/stems", json=body, headers=h)
        b = self.http.post("/v1/queue/audio/stems", json=body, headers=h)
        assert a.json()["request_id"] == b.json()["request_id"], (a.text, b.text)
        # Deleted at once (a queued request is cancelled): the soak's queue stays short.
        self.http.delete(f"/v1/queue/requests/{a.json()['request_id']}")

    def delete(self) -> None:
        fid = self.upload(self.unique())
        rid = self.stems(fid).json()["request_id"]
        self.wait(rid)
        assert self.http.delete(f"/v1/queue/requests/{rid}").status_code == 204
        assert self.http.delete(f"/v1/files/{fid}").status_code in (200, 204)

    def setup(self) -> None:
        self.long_file = wav(MAX_DURATION + 2, 999)
        self.medium = wav(15, 998)
        self.short_id = self.upload(self.unique())
        rid = self.stems(self.upload(self.unique(wav(55, 997)))).json()["request_id"]
        assert self.wait(rid)["status"] == "COMPLETED"
        result = self.http.get(f"/v1/queue/requests/{rid}/result").json()
        self.big_url = result["data"]["vocals"]["url"]  # 10 MB: past the sockets' buffers
        self.running_id = rid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=200)
    parser.add_argument("--job-loops", type=int, default=50)
    parser.add_argument("--backend", choices=("sqlite", "pg-s3"), default="sqlite")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--separate-worker",
        action="store_true",
        help="serve --workers 0 and one `demixer worker` beside it (pg-s3 only)",
    )
    parser.add_argument("--every", type=int, default=0, help="figures every N loops too")
    args = parser.parse_args()

    job_scenarios = [
        "native", "gaudio", "musicgpt", "sunoapi", "failed_undecodable", "failed_too_long",
        "failed_url", "cancel_running", "webhook_hang", "webhook_refused", "delete",
    ]  # fmt: skip
    cheap = [
        "failed_unknown_model", "cut_multipart", "cut_signed_put", "sse_abandoned",
        "download_abandoned", "download_stalled", "range_download", "idempotent",
    ]  # fmt: skip
    wanted = [s for s in args.only.split(",") if s] or cheap + job_scenarios

    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dx-soak-")))
        tmpdir = root / "server-tmp"
        tmpdir.mkdir()
        # The servers run this checkout's code, whatever the virtual environment has installed.
        here = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
        env = fast_env(
            PYTHONPATH=here,
            TMPDIR=str(tmpdir),
            DEMIXER_URL_ALLOWLIST="127.0.0.1",
            DEMIXER_WEBHOOK_TIMEOUT_SECONDS="2",
            DEMIXER_WEBHOOK_BACKOFF_SECONDS="0",
            DEMIXER_WEBHOOK_MAX_ATTEMPTS="3",
            DEMIXER_MAX_DURATION_SECONDS=str(MAX_DURATION),
            DEMIXER_RATE_LIMIT_PER_MINUTE="0",
            DEMIXER_MAX_CONCURRENT_JOBS="0",
            DEMIXER_URL_FETCH_TIMEOUT_SECONDS="5",
            DEMIXER_BODY_TIMEOUT_SECONDS=str(STALL_SECONDS),
        )
        pg_admin = None
        if args.backend == "pg-s3":
            from servers import start as start_servers

            root.chmod(0o755)  # PostgreSQL runs as the postgres user, who must reach it
            servers = start_servers(root / "servers")
            stack.callback(servers.stop)
            env.update(servers.s3_env())
            env["DEMIXER_DATABASE_URL"] = servers.create_database()
            env["DEMIXER_STORAGE_URL"] = servers.create_bucket()
            pg_admin = servers.admin_url()
        workers = 0 if args.separate_worker else args.workers
        server = start_server(root / "data", workers=workers, env=env)
        stack.callback(server.kill)
        worker = None
        if args.separate_worker:
            worker = start_worker(root / "worker", env=env, slots=args.workers)
            stack.callback(worker.kill)
        soak = Soak(server, pg_admin, worker)
        if pg_admin:
            soak.bucket_dir = root / "servers" / "s3"
        stack.callback(lambda: [sock.close() for sock in soak.stalled])
        soak.setup()
        print("start", json.dumps(soak.figures()), flush=True)
        for name in wanted:
            loops = args.job_loops if name in job_scenarios else args.loops
            fn: Callable[[], None] = getattr(soak, name)
            before = soak.figures()
            started = time.monotonic()
            errors = 0
            for i in range(loops):
                if args.every and i and i % args.every == 0:
                    print(f"  {name} {i}: {json.dumps(soak.figures())}", flush=True)
                try:
                    fn()
                except Exception as exc:  # counted and shown; the soak goes on
                    errors += 1
                    if errors <= 3:
                        print(f"  {name}: {type(exc).__name__}: {exc}"[:400], flush=True)
            # Let the last request's cleanup finish; a stalled download's takes the timeout
            # twice at most (a client that took some of it within the first has a second).
            time.sleep(2 * STALL_SECONDS + 2 if name == "download_stalled" else 1.0)
            after = soak.figures()
            took = time.monotonic() - started
            delta = {k: after[k] - before[k] for k in after}
            print(
                f"{name} x{loops} ({took:.0f} s, {errors} errors): "
                f"after {json.dumps(after)} delta {json.dumps(delta)}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
