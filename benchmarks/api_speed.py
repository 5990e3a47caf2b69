"""The API at the speed of its framework: the hot endpoints' request rates against the
framework's floor, where a status read's time goes, 1,000 SSE streams, a 500 MB upload.

Per stack (``sqlite``: SQLite + local storage; ``pg``: Debian's PostgreSQL from
``tests/servers.py`` + local storage):

1. **Jobs.** A ``demixer serve --workers 1`` of this tree completes one job through each protocol
   on a 3 s clip: native (``POST /v1/files`` form, ``/v1/queue/audio/stems``), Gaudio (multipart
   upload, job), MusicGPT (``Extraction`` form), sunoapi (``generate`` from the native file),
   then stops.
2. **Rates.** ``demixer serve --workers 0`` processes on that data (every key's requests counted,
   the limit out of reach: ``DEMIXER_RATE_LIMIT_PER_MINUTE=1000000000``; access log on, as
   ``serve`` runs): *after*, this tree; *before*, the ``--baseline`` commit's ``src`` (default:
   the commit this work started from) with uvicorn's pure-Python loop and parser (uvloop and
   httptools were not dependencies then: they are hidden from it); *after, asyncio*: this tree
   without uvloop (what it brings; httptools cannot be left out, the server's protocol is built
   on it). Floors on the same uvicorn (uvloop, httptools, access log on): a FastAPI app with
   one async route answering a constant JSON, and a bare ASGI app.
   ``wrk -t1 -c8`` per run, each server pinned to CPU 0 and wrk (and PostgreSQL) to CPU 1 with
   ``taskset`` when the machine has two CPUs or more; the variants alternate within each round;
   medians over ``--rounds``. *server µs/request*: CPU time of the server process (all threads)
   per request answered.
3. **Profile** (first stack): ``py-spy record`` of the *after* server during a status run; each
   sample is put in the part of the request it is in.
4. **SSE** (both stacks): the *after* app on uvicorn in this process, one stream against 1,000
   streams over 100 queued jobs (``interval=1``): statements the database ran per second,
   counted by a SQLAlchemy hook on the engine. On PostgreSQL, *before* against *after* as
   servers: transactions per second in ``pg_stat_database`` with 1,000 streams open.
5. **Upload** (SQLite): a 500 MB 192 kHz float WAV (made once in ``.cache``) sent as a
   multipart ``POST /v1/files`` with curl to *before*, *after* and a bare ASGI app that only
   reads the body (the floor); MB/s, and the server's resident memory growth while it arrived.

    .venv/bin/python benchmarks/api_speed.py [--stack sqlite pg] [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import soundfile as sf

import common
import service

BASELINE = "970db2a"  # the main branch this work started from
KEY_LIMIT = {"DEMIXER_RATE_LIMIT_PER_MINUTE": "1000000000", "DEMIXER_MAX_CONCURRENT_JOBS": "0"}
PINNED = (os.cpu_count() or 1) >= 2
CLIP_SECONDS = 3.0

FLOOR_APP = r"""
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.get("/floor")
async def floor() -> dict:
    return {"status": "ok"}
async def bare(scope, receive, send):
    if scope["type"] != "http":
        return
    n = 0
    while True:  # read the whole body (the upload floor)
        m = await receive()
        n += len(m.get("body", b""))
        if not m.get("more_body"):
            break
    body = b'{"status":"ok","bytes":%d}' % n
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
uvicorn.run(app if sys.argv[2] == "fastapi" else bare, host="127.0.0.1", port=int(sys.argv[1]),
            log_level="info")
"""


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if PINNED else []


def no_fast_io(names: tuple[str, ...] = ("uvloop", "httptools")) -> Path:
    """A directory whose modules ``names`` fail to import, put first on a server's path: without
    ``uvloop`` uvicorn runs asyncio's loop, without ``httptools`` its h11 parser, as before they
    were dependencies."""
    out = common.CACHE / f"api-no-{'-'.join(names)}"
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        (out / f"{name}.py").write_text(f"raise ImportError('{name} hidden by the benchmark')\n")
    return out


class Proc:
    """A server process (its own process group), answering on ``port``."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path, port: int):
        self.name, self.port, self.log = name, port, log
        self.process = subprocess.Popen(
            cmd,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log.read_text()[-3000:]}")
            try:
                httpx.get(self.url + "/healthz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            self.stop()
            raise RuntimeError(f"{name} did not start:\n{log.read_text()[-3000:]}")
        self.ps = psutil.Process(self.process.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


def serve_cmd(data: Path, port: int, workers: int = 0) -> list[str]:
    return [
        *pin(0),
        sys.executable,
        "-m",
        "demixer",
        "serve",
        "--workers",
        str(workers),
        "--data-dir",
        str(data),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def server_env(stack: dict[str, str], pythonpath: list[Path] | None = None) -> dict[str, str]:
    env = {**common._env(), **stack, **KEY_LIMIT}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    return env


# --- 1. jobs through each protocol -----------------------------------------------------------


def clip(path: Path) -> Path:
    if not path.is_file():
        mix = common.excerpt().mix[:, : int(CLIP_SECONDS * common.RATE)]
        sf.write(str(path), mix.T, common.RATE, subtype="PCM_16")
    return path


def make_jobs(data: Path, env: dict[str, str], work: Path) -> dict[str, str]:
    """A COMPLETED job through each protocol; returns the key and the ids."""
    port = free_port()
    server = Proc("setup", serve_cmd(data, port, workers=1), env, work / "setup.log", port)
    try:
        key = next(line for line in server.log.read_text().splitlines() if line.startswith("dmx_"))
        wav = clip(common.CACHE / "api-clip-3s.wav")
        api = httpx.Client(base_url=server.url, timeout=120)
        bearer = {"Authorization": f"Bearer {key}"}
        with wav.open("rb") as fh:
            r = api.post("/v1/files", files={"file": (wav.name, fh, "audio/wav")}, headers=bearer)
        file_id = r.json()["file_id"]
        body = {"input": {"file_id": file_id, "model": common.MODEL, "stems": ["vocals"]}}
        native = api.post("/v1/queue/audio/stems", json=body, headers=bearer).json()["request_id"]
        data_bytes = wav.read_bytes()
        g = {"x-ga-apikey": key}
        created = api.post(
            "/developers/api/v1/files/upload-multipart/create",
            json={"fileName": wav.name, "fileSize": len(data_bytes)},
            headers=g,
        ).json()["resultData"]
        chunk, parts = created["chunkSize"], []
        for i, url in enumerate(created["preSignedUrl"]):
            put = httpx.put(url, content=data_bytes[i * chunk : (i + 1) * chunk], timeout=60)
            parts.append({"awsETag": put.headers["ETag"].strip('"'), "partNumber": i + 1})
        api.post(
            "/developers/api/v1/files/upload-multipart/complete",
            json={"uploadId": created["uploadId"], "parts": parts},
            headers=g,
        )
        gaudio = api.post(
            "/developers/api/v1/gsep_music_hq_v1/jobs",
            json={"audioUploadId": created["uploadId"], "type": "vocal"},
            headers=g,
        ).json()["resultData"]["jobId"]
        with wav.open("rb") as fh:
            r = api.post(
                "/api/public/v1/Extraction",
                data={"stems": json.dumps(["vocals"])},
                files={"audio_file": (wav.name, fh, "audio/wav")},
                headers={"Authorization": key},
            )
        musicgpt = r.json()["task_id"]
        suno = api.post(
            "/api/v1/vocal-removal/generate",
            json={"type": "separate_vocal", "fileId": file_id},
            headers=bearer,
        ).json()["data"]["taskId"]
        ids = {"native": native, "gaudio": gaudio, "musicgpt": musicgpt, "suno": suno}
        deadline = time.monotonic() + 600
        for name, job in ids.items():
            while True:
                status = api.get(f"/v1/queue/requests/{job}/status", headers=bearer).json()
                if status["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} job {job} did not finish: {status}")
                time.sleep(0.3)
            if status["status"] != "COMPLETED":
                raise RuntimeError(f"{name} job {job}: {status}")
        api.close()
        return {"key": key, **ids}
    finally:
        server.stop()


def endpoints(jobs: dict[str, str]) -> dict[str, tuple[str, dict[str, str]]]:
    key = jobs["key"]
    bearer = {"Authorization": f"Bearer {key}"}
    return {
        "status": (f"/v1/queue/requests/{jobs['native']}/status", bearer),
        "models": ("/v1/models", bearer),
        "gaudio": (
            f"/developers/api/v1/gsep_music_hq_v1/jobs/{jobs['gaudio']}",
            {"x-ga-apikey": key},
        ),
        "musicgpt": (
            f"/api/public/v1/byId?conversionType=EXTRACTION&task_id={jobs['musicgpt']}",
            {"Authorization": key},
        ),
        "sunoapi": (f"/api/v1/vocal-removal/record-info?taskId={jobs['suno']}", bearer),
    }


LABELS = {
    "status": "`GET /v1/queue/requests/{id}/status`",
    "models": "`GET /v1/models`",
    "gaudio": "Gaudio `GET …/jobs/{jobId}`",
    "musicgpt": "MusicGPT `GET /v1/byId`",
    "sunoapi": "sunoapi `GET /record-info`",
    "floor-fastapi": "floor: FastAPI, one async route, constant JSON",
    "floor-bare": "floor: bare ASGI app",
}


# --- 2. rates --------------------------------------------------------------------------------


def load(
    proc: Proc, path: str, headers: dict[str, str], conns: int, seconds: float
) -> dict[str, Any]:
    """``wrk`` against ``proc`` (pinned to CPU 1); rate, latencies, the server's CPU."""
    cmd = [*pin(1), "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    busy0, cpu0, t0 = common._busy_cpu_s(), proc.cpu(), time.perf_counter()
    out = subprocess.run(
        [*cmd, proc.url + path], capture_output=True, text=True, timeout=seconds + 60
    )
    wall, cpu1, busy1 = time.perf_counter() - t0, proc.cpu(), common._busy_cpu_s()
    text = out.stdout
    dist = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", text, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if out.returncode != 0 or rps is None or total is None or "99" not in dist:
        return {"error": (out.stderr or text).strip()[-300:]}
    requests = int(total.group(1))
    res = {
        "rps": float(rps.group(1)),
        "p50_ms": service._ms(dist["50"]),
        "p99_ms": service._ms(dist["99"]),
        "requests": requests,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "server_us": 1e6 * (cpu1 - cpu0) / max(requests, 1),
        "loadavg": os.getloadavg()[0],
    }
    if busy0 is not None and busy1 is not None:
        # Everything but the server: wrk, PostgreSQL, and the other users of the machine.
        res["others_cores"] = max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / wall
    return res


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "rps" in r]
    if not ok:
        return {"error": runs[-1].get("error", "no run") if runs else "no run"}
    keys = ("rps", "p50_ms", "p99_ms", "server_us", "loadavg", "others_cores")
    out: dict[str, Any] = {
        k: statistics.median(r[k] for r in ok if k in r) for k in keys if any(k in r for r in ok)
    }
    out["runs"] = len(ok)
    out["non_2xx"] = sum(r["non_2xx"] for r in ok)
    out["rps_range"] = [min(r["rps"] for r in ok), max(r["rps"] for r in ok)]
    return out


# --- 3. profile --------------------------------------------------------------------------------

# Parts of a request, by the frames a sample is in (the first rule that matches wins).
PARTS: list[tuple[str, str]] = [
    (
        "job row read (SQL, driver)",
        r"service/prepared|service/batchread|sqlalchemy/pool|sqlite3|psycopg",
    ),
    (
        "status built (model + JSON)",
        r"api/jobs\.py:\d+\)?;?.*build_status|BaseModel|model_dump_json|pydantic",
    ),
    (
        "key + rate count (in memory)",
        r"api/callers|service/keycache|service/ratecache|api/auth\.py",
    ),
    ("access log", r"logging/__init__|uvicorn/logging|access_log"),
    (
        "routing (lanes first)",
        r"Router\.__call__.*(matches|_match)|Lane\.matches|routing\.py:\d+\)$",
    ),
    (
        "middlewares (request id, limits, errors)",
        r"api/errors\.py|api/bodies\.py|api/limits\.py|middleware",
    ),
    ("HTTP parse and send (uvicorn)", r"uvicorn/protocols"),
]


def profile(
    proc: Proc, path: str, headers: dict[str, str], seconds: float, work: Path
) -> dict[str, Any]:
    """Samples of ``proc`` during a status run, by part (py-spy; shares of the busy samples)."""
    raw = work / "profile.txt"
    exe = Path(sys.executable).parent / "py-spy"  # installed in the venv (requirements.txt)
    cmd = [str(exe) if exe.is_file() else "py-spy", "record", "-p", str(proc.process.pid)]
    cmd += ["-r", "400", "-d", str(int(seconds)), "-f", "raw", "-o", str(raw)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    load(proc, path, headers, 8, seconds - 2)
    spy.wait(timeout=seconds + 60)
    if not raw.is_file():
        return {"error": "py-spy wrote nothing (is it installed, may it attach?)"}
    parts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        if re.search(r"select \(|_worker \(|wait \(threading|get \(queue", leaf):
            continue  # idle threads
        for part, pattern in PARTS:
            if re.search(pattern, stack):
                parts[part] += int(n)
                break
        else:
            parts["event loop and the rest"] += int(n)
    total = sum(parts.values())
    return {"samples": total, "shares": {k: v / total for k, v in parts.most_common()}}


# --- 4. SSE ------------------------------------------------------------------------------------


def sse_run(base: str, key: str, jobs: list[str], n: int, seconds: float,
            counter: Any) -> dict[str, Any]:  # fmt: skip
    """``n`` streams (``interval=1``) over ``jobs`` (queued: they stay open); ``counter()``'s
    growth per second once every stream is open, and the frames the streams received."""
    opened, frames = [0], [0]
    stop = threading.Event()
    h = {"Authorization": f"Bearer {key}"}

    async def one(client: httpx.AsyncClient, job: str) -> None:
        url = f"{base}/v1/queue/requests/{job}/status/stream?interval=1"
        async with client.stream("GET", url) as r:
            opened[0] += r.status_code == 200
            async for line in r.aiter_lines():
                frames[0] += line.startswith("event: ")
                if stop.is_set():
                    return

    async def all_streams() -> None:
        limits = httpx.Limits(max_connections=n + 10)
        async with httpx.AsyncClient(headers=h, limits=limits, timeout=300) as client:
            await asyncio.gather(*(one(client, jobs[i % len(jobs)]) for i in range(n)))

    t = threading.Thread(target=lambda: asyncio.run(all_streams()), daemon=True)
    t.start()
    deadline = time.monotonic() + 300
    while opened[0] < n and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # the streams' own first reads are over
    c0, f0, t0 = counter(), frames[0], time.perf_counter()
    time.sleep(seconds)
    c1, f1, wall = counter(), frames[0], time.perf_counter() - t0
    stop.set()
    t.join(timeout=60)
    return {"streams": opened[0], "per_s": (c1 - c0) / wall, "frames_per_s": (f1 - f0) / wall}


def queue_jobs(base: str, key: str, n: int) -> list[str]:
    """``n`` jobs queued on a server without workers (they stay IN_QUEUE): each of its own
    upload (the low byte of the last sample differs), so the result cache never answers."""
    data = bytearray(clip(common.CACHE / "api-clip-3s.wav").read_bytes())
    h = {"Authorization": f"Bearer {key}"}
    jobs, low = [], data[-2]
    with httpx.Client(base_url=base, headers=h, timeout=120) as c:
        for i in range(n):
            data[-2] = low ^ (i % 255 + 1)  # never the clip itself (its job is COMPLETED)
            r = c.post("/v1/files", files={"file": ("clip.wav", bytes(data), "audio/wav")})
            body = {"input": {"file_id": r.json()["file_id"], "model": common.MODEL}}
            body["input"]["stems"] = ["vocals"]
            job = c.post("/v1/queue/audio/stems", json=body).json()
            if job["status"] != "IN_QUEUE":
                raise RuntimeError(f"a benchmark job did not stay queued: {job}")
            jobs.append(job["request_id"])
    return jobs


@contextmanager
def in_process(stack: dict[str, str], data: Path) -> Iterator[tuple[str, Any]]:
    """The *after* app on uvicorn in a thread of this process (``data``'s database); yields its
    URL and the engine (a hook counts its statements)."""
    import uvicorn

    from demixer.server.app import create_app
    from demixer.server.compose import build_services
    from demixer.settings import Settings

    old = {k: os.environ.get(k) for k in stack}
    os.environ.update(stack)
    try:
        services = build_services(
            Settings(data_dir=data, rate_limit_per_minute=0, max_concurrent_jobs=0)
        )
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(services), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}", services.db.engine
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        services.db.dispose()


def sse_statements(stack: dict[str, str], data: Path, key: str, jobs: list[str], streams: int,
                   seconds: float) -> dict[str, Any]:  # fmt: skip
    """Statements per second the *after* app runs with 1 and with ``streams`` streams."""
    from sqlalchemy import event

    with in_process(stack, data) as (base, engine):
        count = [0]

        def hook(*_: Any) -> None:
            count[0] += 1

        event.listen(engine, "before_cursor_execute", hook)
        try:
            return {
                str(n): sse_run(base, key, jobs, n, seconds, lambda: count[0]) for n in (1, streams)
            }
        finally:
            event.remove(engine, "before_cursor_execute", hook)


def pg_transactions(admin_url: str, database: str) -> int:
    """Transactions committed or rolled back in ``database`` so far (pg_stat_database)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url)
    try:
        with engine.connect() as c:
            n = c.execute(
                text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :d"),
                {"d": database},
            ).scalar_one()
    finally:
        engine.dispose()
    return int(n)


# --- 5. upload ---------------------------------------------------------------------------------


def big_wav() -> Path:
    """500 MB: 330 s of a 440 Hz tone, 192 kHz stereo float32 (made once)."""
    path = common.CACHE / "api-upload-500mb.wav"
    if path.is_file():
        return path
    rate, seconds = 192_000, 330
    tmp = path.with_suffix(".part.wav")
    with sf.SoundFile(str(tmp), "w", samplerate=rate, channels=2, subtype="FLOAT") as f:
        t = np.arange(rate * 10) / rate
        for start in range(0, rate * seconds, rate * 10):
            x = (0.2 * np.sin(2 * np.pi * 440 * (t + start / rate))).astype(np.float32)
            f.write(np.stack([x, x], 1))
    tmp.rename(path)
    return path


def upload(proc: Proc, path: Path, key: str | None) -> dict[str, Any]:
    """One multipart upload with curl; wall time and the server's RSS growth meanwhile."""
    cmd = [*pin(1), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
           "-F", f"file=@{path};type=audio/wav"]  # fmt: skip
    if key:
        cmd += ["-H", f"Authorization: Bearer {key}"]
    url = proc.url + ("/v1/files" if key else "/")
    rss0 = peak = proc.ps.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            try:
                peak = max(peak, proc.ps.memory_info().rss)
            except psutil.Error:
                return

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=600)
    done.set()
    watcher.join()
    code, seconds = out.stdout.split()
    size = path.stat().st_size
    return {
        "status": int(code),
        "seconds": float(seconds),
        "mb_per_s": size / 1e6 / float(seconds),
        "rss_growth_mb": (peak - rss0) / 1e6,
        "loadavg": os.getloadavg()[0],
    }


# --- the run -------------------------------------------------------------------------------------


def pin_postgres(servers: Any) -> None:
    """PostgreSQL's processes (and the ones it forks later) on CPU 1, with wrk."""
    if not PINNED:
        return
    pid = int((Path(servers.pg_data) / "postmaster.pid").read_text().split()[0])
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        proc.cpu_affinity([1])


def run_stack(name: str, stack: dict[str, str], args: Any, floors: dict[str, Proc],
              pg: tuple[str, str] | None) -> dict[str, Any]:  # fmt: skip
    res: dict[str, Any] = {}
    with common.tempdir(f"api-{name}") as tmp:
        work = Path(tmp)
        data = work / "data"
        print(f"[{name}] jobs through each protocol", flush=True)
        jobs = make_jobs(data, server_env(stack), work)
        res["jobs"] = jobs
        variants: list[tuple[str, list[Path]]] = [("after", [])]
        if not args.no_before:  # the baseline's server only where something measures it
            variants.append(("before", [no_fast_io(), common.baseline_src(args.baseline)]))
        # httptools stays: this tree's HTTP protocol (server/protocol.py) is built on it.
        variants.append(("after-asyncio", [no_fast_io(("uvloop",))]))
        procs: dict[str, Proc] = {}
        try:
            for variant, path in variants:
                port = free_port()
                env = server_env(stack, path)
                procs[variant] = Proc(
                    variant, serve_cmd(data, port), env, work / f"{variant}.log", port
                )
            eps = endpoints(jobs)
            plan: list[tuple[str, str]] = [("after", e) for e in eps]
            plan += [("before", e) for e in eps] if not args.no_before else []
            plan += [("after-asyncio", "status")]
            plan += [("floor", "floor-fastapi"), ("floor", "floor-bare")]
            runs: dict[str, list[dict[str, Any]]] = {}

            def target(variant: str, endpoint: str) -> tuple[Proc, str, dict[str, str]]:
                if variant == "floor":
                    floor = endpoint.removeprefix("floor-")
                    return floors[floor], "/floor" if floor == "fastapi" else "/", {}
                return procs[variant], *eps[endpoint]

            for variant, endpoint in plan:  # warm every route once
                load(*target(variant, endpoint), 8, 1)
            for r in range(args.rounds):
                for variant, endpoint in plan:
                    run = load(*target(variant, endpoint), 8, args.seconds)
                    runs.setdefault(f"{variant}/{endpoint}", []).append(run)
                    print(f"[{name}] round {r + 1} {variant} {endpoint}: "
                          f"{run.get('rps', 0):.0f} req/s p99 {run.get('p99_ms', 0):.1f} ms "
                          f"{run.get('server_us', 0):.0f} us/req load {run.get('loadavg', 0):.1f}",
                          flush=True)  # fmt: skip
            res["rates"] = {k: median_of(v) for k, v in runs.items()}
            res["runs"] = runs
            path, headers = eps["status"]
            for conns in (1, 32):
                res["rates"][f"after/status@{conns}"] = median_of(
                    [load(procs["after"], path, headers, conns, args.seconds)]
                )
            if args.profile and name == args.stack[0]:
                print(f"[{name}] profile", flush=True)
                res["profile"] = profile(procs["after"], path, headers, 10, work)
            if not args.no_sse:
                print(f"[{name}] SSE", flush=True)
                queued = queue_jobs(procs["after"].url, jobs["key"], 100)
                res["sse"] = sse_statements(
                    stack, data, jobs["key"], queued, args.streams, args.sse_seconds
                )
                if pg is not None:
                    res["sse_pg"] = {}
                    for v in [v for v in ("before", "after") if v in procs]:
                        count = partial(pg_transactions, *pg)
                        res["sse_pg"][v] = sse_run(
                            procs[v].url, jobs["key"], queued, args.streams, args.sse_seconds, count
                        )
            if name == "sqlite" and not args.no_upload:
                print(f"[{name}] upload", flush=True)
                wav = big_wav()
                ups: dict[str, list[dict[str, Any]]] = {}
                uploaded = ["floor", *[v for v in ("before", "after") if v in procs]]
                for _ in range(args.upload_rounds):
                    for variant in uploaded:
                        target = floors["bare"] if variant == "floor" else procs[variant]
                        key = None if variant == "floor" else jobs["key"]
                        ups.setdefault(variant, []).append(upload(target, wav, key))
                        print(f"[{name}] upload {variant}: {ups[variant][-1]}", flush=True)
                res["upload"] = ups
                res["upload_bytes"] = wav.stat().st_size
        finally:
            for proc in procs.values():
                proc.stop()
    return res


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stack", nargs="+", choices=("sqlite", "pg"), default=["sqlite", "pg"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--baseline", default=BASELINE, help="the commit measured as *before*")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--sse-seconds", type=float, default=10.0)
    ap.add_argument("--upload-rounds", type=int, default=2)
    ap.add_argument("--no-before", action="store_true")
    ap.add_argument("--no-sse", action="store_true")
    ap.add_argument("--no-upload", action="store_true")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("api_speed.py needs wrk (Debian: apt-get install wrk)")
    common.CACHE.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, Any] = {"pinned": PINNED, "args": vars(args), "stacks": {}}
    with common.tempdir("api-floor") as tmp:
        floors: dict[str, Proc] = {}
        try:
            for kind in ("fastapi", "bare"):
                port = free_port()
                cmd = [*pin(0), sys.executable, "-c", FLOOR_APP, str(port), kind]
                floors[kind] = Proc(
                    f"floor-{kind}", cmd, common._env(), Path(tmp) / f"{kind}.log", port
                )
            for name in args.stack:
                if name == "sqlite":
                    results["stacks"][name] = run_stack(name, {}, args, floors, None)
                    continue
                sys.path.insert(0, str(common.ROOT / "tests"))
                import servers as test_servers

                root = Path(tempfile.mkdtemp(prefix="demixer-bench-pg-"))
                root.chmod(0o755)
                srv = test_servers.start(root / "run")
                try:
                    pin_postgres(srv)
                    url = srv.create_database()
                    stack = {"DEMIXER_DATABASE_URL": url}
                    pg = (srv.admin_url(), url.rsplit("/", 1)[-1])
                    results["stacks"][name] = run_stack(name, stack, args, floors, pg)
                finally:
                    srv.stop()
        finally:
            for proc in floors.values():
                proc.stop()
    results["minutes"] = (time.time() - started) / 60
    (common.CACHE / "api_speed.json").write_text(json.dumps(results, indent=1))
    common.write_section("api-speed", render(results, args))
    print(f"done in {results['minutes']:.1f} min", flush=True)


# --- RESULTS.md ----------------------------------------------------------------------------------

STACK_NAMES = {"sqlite": "SQLite + local", "pg": "PostgreSQL + local"}


def _rate(r: dict[str, Any] | None, p99: bool = True) -> str:
    if not r or "rps" not in r:
        return "–" if not r else f"failed: {r.get('error', '')[:60]}"
    text = f"{r['rps']:.0f}"
    return f"{text} ({r['p99_ms']:.1f} ms)" if p99 else text


def render(results: dict[str, Any], args: Any) -> str:
    out = ["## API speed (`benchmarks/api_speed.py`)", "", common.header("api_speed.py")]
    loads = [
        run["loadavg"]
        for st in results["stacks"].values()
        for runs in st.get("runs", {}).values()
        for run in runs
        if "loadavg" in run
    ]
    pinning = (
        "each server process pinned to CPU 0 and `wrk` (and PostgreSQL) to CPU 1 with `taskset`"
        if results["pinned"]
        else "nothing pinned (one CPU)"
    )
    out.append(
        f"`wrk -t1 -c8 -d{args.seconds:g}s` on loopback, {pinning}; {args.rounds} rounds, the "
        "variants alternating within each round; medians. *before*: commit "
        f"`{args.baseline}` (uvicorn on asyncio + h11: uvloop and httptools were not "
        "dependencies then); *after*: this tree (uvloop + httptools). Every server is a "
        "`demixer serve --workers 0` with the access log on, counting every request against "
        "its key's per-minute limit (raised out of reach: counted, never refused). *p99*: "
        "99th-percentile latency. *µs/request*: CPU time of the server process (all its "
        "threads) per request answered. The machine is shared with other work: its 1-minute "
        f"load average was {min(loads):.1f}–{max(loads):.1f} (median "
        f"{statistics.median(loads):.1f}) during these runs, on {os.cpu_count()} CPUs, so "
        "**every rate here is a floor** for a dedicated core, and the µs/request column is "
        "the steadier comparison.\n"
        if loads
        else "no runs\n"
    )
    out.append(
        "What a status read does *after*: a fast lane ahead of FastAPI's routing and dependency "
        "injection answers its plain form (the FastAPI route stays for every other form and for "
        "the OpenAPI schema); the key is found in the process's key cache (read again every "
        "2 s), the request counted in memory (added to the shared table twice a second), the "
        "job row read with one prebuilt SELECT on a pooled driver connection (in the event loop "
        "on SQLite; on PostgreSQL in a worker thread, one round trip for all the reads asked "
        "for meanwhile), and the status model dumped straight to JSON. *before*: a key lookup, "
        "a write transaction for the counter and an ORM read, through FastAPI's dependencies, "
        "two hops to worker threads. The request rates in the *Service* and *Scale-out* "
        "sections above were measured before this change.\n"
    )
    for name, st in results["stacks"].items():
        rates = st.get("rates", {})
        floor = rates.get("floor/floor-fastapi", {}).get("rps")
        out.append(f"### {STACK_NAMES[name]}: requests per second at 8 connections\n")
        rows = []
        for ep in ("status", "models", "gaudio", "musicgpt", "sunoapi"):
            a, b = rates.get(f"after/{ep}"), rates.get(f"before/{ep}")
            us = "–"
            if a and b and "server_us" in a and "server_us" in b:
                us = f"{b['server_us']:.0f} → {a['server_us']:.0f}"
            rows.append(
                [
                    LABELS[ep],
                    _rate(b),
                    f"**{_rate(a, p99=False)}**",
                    f"{a['p50_ms']:.1f} / {a['p99_ms']:.1f}" if a and "rps" in a else "–",
                    us,
                    f"{a['rps'] / floor:.2f}" if a and "rps" in a and floor else "–",
                ]
            )
        head = ["request", "before req/s (p99)", "after req/s", "after p50 / p99 ms",
                "server µs/request before → after", "after ÷ FastAPI floor"]  # fmt: skip
        out.append(common.table(head, rows))
        rows = []
        for key, what in (
            ("floor/floor-bare", LABELS["floor-bare"]),
            ("floor/floor-fastapi", LABELS["floor-fastapi"]),
            ("after-asyncio/status", "status, this tree on asyncio's loop (no uvloop)"),
            ("after/status@1", "status, 1 connection"),
            ("after/status", "status, 8 connections"),
            ("after/status@32", "status, 32 connections"),
        ):
            r = rates.get(key)
            if r:
                rows.append(
                    [
                        what,
                        _rate(r, p99=False),
                        f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}" if "rps" in r else "–",
                        f"{r['server_us']:.0f}" if "server_us" in r else "–",
                    ]
                )
        out.append("The framework's floor on the same uvicorn, and the status read beside it:\n")
        out.append(common.table(["server", "req/s", "p50 / p99 ms", "µs/request"], rows))
        status = rates.get("after/status", {})
        vendors = [
            rates.get(f"after/{v}", {}).get("rps") for v in ("gaudio", "musicgpt", "sunoapi")
        ]
        if "rps" in status and all(vendors):
            worst = min(v / status["rps"] for v in vendors if v)
            out.append(
                f"Goals: status {status['rps']:.0f} req/s with p99 {status['p99_ms']:.1f} ms "
                f"(goal ≥ 2,000 and < 20 ms); `/v1/models` "
                f"{rates.get('after/models', {}).get('rps', 0):.0f} req/s (≥ 2,000); the "
                f"slowest vendor status read at {100 * worst:.0f} % of the native one (≥ 80 %).\n"
            )
        prof = st.get("profile")
        if prof and "shares" in prof and "server_us" in status:
            us = status["server_us"]
            rows = [[part, f"{100 * share:.0f} %", f"{share * us:.0f}"]
                    for part, share in prof["shares"].items()]  # fmt: skip
            out.append(
                "Where a status read's time goes (`py-spy record` of the *after* server at 8 "
                f"connections, {prof['samples']} busy samples; µs: the share times the "
                "µs/request above):\n"
            )
            out.append(common.table(["part", "share", "µs/request"], rows))
        sse = st.get("sse")
        if sse:
            rows = [[f"{v['streams']} open", f"{v['per_s']:.1f}", f"{v['frames_per_s']:.0f}"]
                    for v in sse.values()]  # fmt: skip
            out.append(
                "Server-sent status streams (`interval=1`, over 100 queued jobs), *after*, the "
                "app on uvicorn in the benchmark's process: statements the database ran per "
                "second (a SQLAlchemy hook on the engine), and frames sent:\n"
            )
            out.append(common.table(["streams", "statements/s", "frames/s"], rows))
        sse_pg = st.get("sse_pg")
        if sse_pg:
            rows = [[v, str(r["streams"]), f"{r['per_s']:.0f}", f"{r['frames_per_s']:.0f}"]
                    for v, r in sse_pg.items()]  # fmt: skip
            out.append(
                f"The same {args.streams} streams on the *before* and *after* servers: "
                "PostgreSQL transactions per second (`pg_stat_database`, every process "
                "included: the servers' webhook dispatcher and sweeper too):\n"
            )
            out.append(common.table(["server", "streams", "transactions/s", "frames/s"], rows))
        ups = st.get("upload")
        if ups:
            mb = st["upload_bytes"] / 1e6
            rows = []
            for variant, runs in ups.items():
                ok = [u for u in runs if u["status"] in (200, 201)]
                if not ok:
                    rows.append([variant, "failed", "–", "–"])
                    continue
                rows.append(
                    [
                        {"floor": "floor: bare ASGI app reading the body"}.get(variant, variant),
                        f"{statistics.median(u['mb_per_s'] for u in ok):.0f}",
                        f"{statistics.median(u['seconds'] for u in ok):.2f}",
                        f"{max(u['rss_growth_mb'] for u in ok):.0f}",
                    ]
                )
            out.append(
                f"A {mb:.0f} MB multipart `POST /v1/files` (curl, a 192 kHz float WAV), "
                f"{args.upload_rounds} rounds alternating; the server stores it, hashes it and "
                "probes it as audio before answering 201:\n"
            )
            out.append(common.table(["server", "MB/s", "seconds", "RSS growth MB (max)"], rows))
    out.append("All runs: `benchmarks/.cache/api_speed.json`.\n")
    return "\n".join(out)


if __name__ == "__main__":
    main(sys.argv[1:])
