"""What `demixer serve` costs on top of the bare engine, and how fast its hot endpoints answer.

1. **Overhead.** A 3-minute stereo 44.1 kHz song (the MUSDB18 excerpt's mix looped, 16-bit
   wav in .cache) separated with ``spleeter-2stems`` three ways, alternating each round:

   - **A, cold CLI**: ``demixer separate FILE -m spleeter-2stems -o OUT`` in a fresh process,
     end to end (interpreter start, imports, model load, decode, separation, 16-bit wav out);
   - **B, warm service**: a ``demixer serve --workers 1`` started once with the stock settings
     (poll 0.5 s, heartbeat 2 s) and warmed by one job (its separation child has imported torch
     and loaded the model); timed from the start of the upload to the last stem on disk:
     multipart ``POST /v1/files`` -> ``POST /v1/queue/audio/stems`` -> ``GET .../status``
     every 0.2 s -> ``GET .../result`` -> every signed URL downloaded to a file;
   - **C, warm engine**: ``Separator.separate_file`` in a long-lived process that loaded the
     model and ran it once before the rounds, like the warmed child (what the child runs per
     job: decode, separate, write 16-bit wavs).

   The service job asks for ``stems: ["vocals"]``, i.e. vocals + residual, two 16-bit wavs
   like the CLI's vocals + accompaniment. Its time is split at timestamps that all come from
   this machine's one clock: the client's, the job's log lines (``attempt 1 started``,
   ``completed``), and the times of the blobs in the server's storage directory (birth and
   modification of the upload's copy into storage; the outputs' last write by the child, or
   the start of their copy when storage copies them).

   Each upload is made unique (the low byte of its last sample), so that the server's result
   cache never answers a timed request.

2. **Load.** ``wrk`` (Debian package; an asyncio httpx generator when it is missing) against
   ``GET /v1/queue/requests/{id}/status`` of a COMPLETED job at 1, 8 and 32 connections, and
   against ``POST /v1/queue/audio/stems`` at 8 connections on a server started with
   ``--workers 0`` (jobs only queue); then the status of the last of those queued jobs (its
   ``queue_position`` counts every job ahead of it); and the COMPLETED job's status once more
   with the per-key request counter off. Loopback only; every run ends by itself.

    .venv/bin/python benchmarks/service.py [--rounds 3] [--seconds 180] [--no-load]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import psutil
import soundfile as sf

import common

POLL = 0.2  # seconds between the client's status polls
STEMS = ["vocals"]  # + residual: two outputs, like the CLI's vocals + accompaniment
CONTENDED = 0.10  # other processes' share of the CPU above which a timing is re-run
FINAL = ("COMPLETED", "FAILED", "CANCELLED")
# Settings the servers run with on top of the stock ones: the per-key rate limit (600 requests
# a minute) is raised out of reach, so requests are still counted (one database upsert each)
# but a load run is not answered with 429s; no cap on a key's queued jobs (stock: 8).
SERVER_ENV = {"DEMIXER_RATE_LIMIT_PER_MINUTE": "1000000000", "DEMIXER_MAX_CONCURRENT_JOBS": "0"}


def _dirty() -> bool:
    proc = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        cwd=common.ROOT,
    )
    return bool(proc.stdout.strip())


DIRTY = _dirty()


def server_env() -> dict[str, str]:
    return {**common._env(), **SERVER_ENV}


def harness() -> ModuleType:
    """tests/service_harness.py: starts a real `demixer serve` on a free loopback port."""
    path = common.ROOT / "tests" / "service_harness.py"
    spec = importlib.util.spec_from_file_location("service_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["service_harness"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def song(seconds: float) -> Path:
    """The excerpt's mix looped to ``seconds``, 16-bit stereo 44.1 kHz wav, made once."""
    path = common.CACHE / f"falcon69-{round(seconds)}s-pcm16.wav"
    if path.is_file():
        return path
    mix = common.excerpt().mix
    n = round(seconds * common.RATE)
    reps = -(-n // mix.shape[1])
    audio = np.tile(mix, (1, reps))[:, :n]
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        audio = audio * (0.999 / peak)
    common.CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.wav")
    sf.write(str(tmp), audio.T, common.RATE, subtype="PCM_16")
    tmp.rename(path)
    return path


# --- CPU accounting for a process tree we do not wait on ----------------------------------


class TreeWatch:
    """Like :class:`common.CpuWatch`, for work done by live processes (this one and a running
    server with its children): ``foreign`` = CPU time of every other process, as a share of the
    machine over the block."""

    def __init__(self, *pids: int) -> None:
        self.roots = [psutil.Process(p) for p in (os.getpid(), *pids)]
        self.roles: dict[int, str] = {}

    def _cpu(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for i, root in enumerate(self.roots):
            for proc in [root, *root.children(recursive=True)]:
                try:
                    t = proc.cpu_times()
                    out[proc.pid] = t.user + t.system
                except psutil.Error:
                    continue
                if i == 0:
                    self.roles[proc.pid] = "client" if proc.pid == root.pid else "other"
                else:
                    self.roles[proc.pid] = "server" if proc.pid == root.pid else "children"
        return out

    def __enter__(self) -> TreeWatch:
        self._busy = common._busy_cpu_s()
        self._tree = self._cpu()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t
        after = self._cpu()
        busy = common._busy_cpu_s()
        deltas = {pid: v - self._tree.get(pid, 0.0) for pid, v in after.items()}
        self.tree_cpu = sum(deltas.values())
        self.by_role: dict[str, float] = {}
        for pid, d in deltas.items():
            role = self.roles.get(pid, "other")
            self.by_role[role] = self.by_role.get(role, 0.0) + d
        self.foreign: float | None = None
        if busy is not None and self._busy is not None and self.wall > 0:
            other = max(0.0, busy - self._busy - self.tree_cpu)
            self.foreign = other / (self.wall * (os.cpu_count() or 1))


# --- A: cold CLI, C: warm engine ------------------------------------------------------------


def run_cli(src: Path, work: Path) -> dict[str, Any]:
    out = work / "cli-out"
    cmd = [str(common.demixer_cli()), "separate", str(src), "-m", common.MODEL, "-o", str(out)]
    with common.CpuWatch() as watch:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=common._env(), timeout=900)
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        return {"error": f"exit {proc.returncode}: {tail}", "wall_s": watch.wall}
    return {"total_s": watch.wall, "foreign_load": watch.foreign}


ENGINE = r"""
import json, resource, sys, time
t = time.perf_counter()
from demixer.audio import OutputFormat
from demixer.engine import Separator
out, model, stems = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
sep = Separator(model)
print(json.dumps({"load_s": time.perf_counter() - t}), flush=True)
fmt = OutputFormat.parse("wav", "16")
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
for i, line in enumerate(sys.stdin):  # one input path per line, one JSON answer each
    t, c = time.perf_counter(), cpu()
    sep.separate_file(line.strip(), f"{out}/{i}", stems, fmt=fmt, template="{stem}.{ext}",
                      downmix=True, on_progress=lambda f: None)
    print(json.dumps({"total_s": time.perf_counter() - t, "cpu_s": cpu() - c}), flush=True)
"""


class Engine:
    """C: a long-lived process holding a loaded ``Separator``, like a service child: it loads
    the model and warms up on one call when started, then times each :meth:`run`."""

    def __init__(self, src: Path, work: Path) -> None:
        self.out = work / "engine-out"
        cmd = [str(common.MAIN_PY), "-c", ENGINE, str(self.out), common.MODEL, ",".join(STEMS)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=common._env()
        )
        self.pid = self.proc.pid
        self.load_s = float(json.loads(self._readline())["load_s"])
        self.warmup_s = self.run(src)["total_s"]

    def _readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the engine process exited ({self.proc.wait()})")
        return line

    def run(self, src: Path) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{src}\n")
        self.proc.stdin.flush()
        res: dict[str, Any] = json.loads(self._readline())
        shutil.rmtree(self.out, ignore_errors=True)
        return res

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


# --- B: the warm service --------------------------------------------------------------------


def file_times(paths: list[Path]) -> list[tuple[float | None, float, float]]:
    """(birth time or None, modification time, change time) of each file, epoch seconds."""
    proc = subprocess.run(
        ["stat", "-c", "%.9W %.9Y %.9Z", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    out = []
    for line in proc.stdout.splitlines():
        birth, mtime, ctime = (float(x) for x in line.split())
        out.append((birth if birth > 0 else None, mtime, ctime))
    return out


def _epoch(stamp: str) -> float:
    dt = datetime.fromisoformat(stamp)
    if dt.tzinfo is None:  # the database keeps UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _log_time(logs: list[dict[str, Any]], prefix: str) -> float:
    for line in logs:
        if line["message"].startswith(prefix):
            return _epoch(line["timestamp"])
    raise RuntimeError(f"no log line {prefix!r} in {logs}")


_uploads = [0]


def unique_copy(src: Path, work: Path) -> Path:
    """``src`` with the low byte of its last sample changed: other bytes, so the server's
    result cache (same input bytes + options -> the earlier outputs) can never answer."""
    _uploads[0] += 1
    data = bytearray(src.read_bytes())
    data[-2] ^= _uploads[0] % 255 + 1  # little-endian PCM: the last right sample's LSB
    path = work / f"upload-{_uploads[0]}.wav"
    path.write_bytes(bytes(data))
    return path


def service_job(
    server: Any,
    api: httpx.Client,
    dl: httpx.Client,
    song_path: Path,
    work: Path,
    keep: bool = False,
) -> dict[str, Any]:
    """One timed upload -> submit -> poll -> result -> download; returns the timeline."""
    out = work / "service-out"
    out.mkdir(exist_ok=True)
    src = unique_copy(song_path, work)
    t0 = time.time()
    with src.open("rb") as fh:
        r = api.post("/v1/files", files={"file": (src.name, fh, "audio/wav")})
    if r.status_code != 201:
        return {"error": f"upload: {r.status_code} {r.text[:200]}"}
    file_id = r.json()["file_id"]
    t_up = time.time()
    body = {"input": {"file_id": file_id, "model": common.MODEL, "stems": STEMS}}
    body["input"].update({"output_format": "wav", "bit_depth": "16"})
    r = api.post("/v1/queue/audio/stems", json=body)
    if r.status_code != 202:
        return {"error": f"submit: {r.status_code} {r.text[:200]}"}
    job = r.json()["request_id"]
    t_sub = time.time()
    polls, deadline = 0, time.monotonic() + 600
    while True:
        status = api.get(f"/v1/queue/requests/{job}/status").json()
        polls += 1
        if status["status"] in FINAL or time.monotonic() > deadline:
            break
        time.sleep(POLL)
    t_done = time.time()
    if status["status"] != "COMPLETED":
        return {"error": f"job {job}: {status}"}
    data = api.get(f"/v1/queue/requests/{job}/result").json()["data"]
    t_res = time.time()
    for item in data.values():
        if isinstance(item, dict):
            with dl.stream("GET", item["url"]) as resp, (out / item["file_name"]).open("wb") as f:
                resp.raise_for_status()
                for chunk in resp.iter_bytes(1 << 20):
                    f.write(chunk)
    t_end = time.time()
    shutil.rmtree(out, ignore_errors=True)
    src.unlink()

    # Server-side timestamps: job log lines and the blobs' copies into storage.
    logs = api.get(f"/v1/queue/requests/{job}/status", params={"logs": "true"}).json()["logs"]
    if not any(line["message"].startswith("attempt 1 started") for line in logs):
        return {"error": f"job {job} did not run once in a worker: {logs}"}
    started, completed = _log_time(logs, "attempt 1 started"), _log_time(logs, "completed")
    storage = server.data_dir / "storage"
    (in_birth, in_mtime, _), *outs = file_times(
        [
            storage / "inputs" / file_id,
            *sorted((storage / "outputs" / job / "attempt-1").glob("*.wav")),
        ]
    )
    # Where the child's work ends. Blobs copied into storage after the child finished are born
    # late in the attempt: the child ended when the first copy began. Blobs that are the
    # child's own files (hard-linked into storage) were born while it wrote them: it ended
    # with its last write to them.
    births = [b for b, _, _ in outs if b is not None]
    child_end = None
    if outs:
        copied = bool(births) and min(births) > (started + completed) / 2
        child_end = min(births) if copied else max(m for _, m, _ in outs)
    res: dict[str, Any] = {
        "total_s": t_end - t0,
        "upload_s": t_up - t0,
        "submit_s": t_sub - t_up,
        "queue_wait_s": started - t_sub,
        "job_s": completed - started,  # claim to COMPLETED committed: child + store
        "detect_s": t_done - completed,  # COMPLETED committed -> the client's poll sees it
        "result_s": t_res - t_done,
        "download_s": t_end - t_res,
        "polls": polls,
        "download_bytes": float(sum(v["size"] for v in data.values() if isinstance(v, dict))),
    }
    if in_birth is not None:
        res["upload_receive_s"] = in_birth - t0  # request sent + multipart spooled
        res["upload_store_s"] = in_mtime - in_birth  # spool copied into storage
        res["upload_probe_s"] = t_up - in_mtime  # probe, file row, response
    if child_end is not None:
        res["separate_s"] = child_end - started  # job handed to the child -> outputs written
        res["store_s"] = completed - child_end  # outputs put into storage, COMPLETED
        res["around_s"] = res["total_s"] - res["separate_s"]  # all but the separation
    res["stamps"] = {  # the raw timeline (epoch seconds), for a second look
        "t0": t0,
        "uploaded": t_up,
        "submitted": t_sub,
        "started": started,
        "completed": completed,
        "seen": t_done,
        "result": t_res,
        "downloaded": t_end,
        "input_blob": [in_birth, in_mtime],
        "output_blobs": outs,
    }
    if not keep:  # delete the job and the upload (untimed): the data dir does not grow
        api.delete(f"/v1/queue/requests/{job}")
        api.delete(f"/v1/files/{file_id}")
    res["request_id"] = job
    return res


def clients(server: Any) -> tuple[httpx.Client, httpx.Client]:
    api = server.client()
    api.timeout = httpx.Timeout(600)
    return api, httpx.Client(timeout=600)


def timed(kind: str, fn: Any, watch_pids: list[int], quiet_wait: float, retries: int) -> Any:
    """Run ``fn`` after waiting for a quiet machine; re-run when other load was high."""
    results = []
    for attempt in range(retries + 1):
        quiet = common.wait_quiet(quiet_wait)
        if watch_pids:
            with TreeWatch(*watch_pids) as watch:
                res = fn()
            res["foreign_load"] = watch.foreign
            res["tree_cpu_s"] = watch.tree_cpu
            for role, cpu in watch.by_role.items():  # server process, its children, client
                res[f"cpu_{role}_s"] = cpu
        else:
            res = fn()
        res["attempt"], res["waited_quiet"] = attempt, quiet
        shown = {
            k: round(v, 3) if isinstance(v, float) else v for k, v in res.items() if k != "stamps"
        }
        print(f"    {kind}:", json.dumps(shown), flush=True)
        results.append(res)
        load = res.get("foreign_load")
        if "error" in res or load is None or load <= CONTENDED:
            break
    return results


# --- part 2: load -------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str, key: str, conns: int, seconds: float, body: dict[str, Any] | None, tmp: Path
) -> dict[str, Any]:
    """``wrk`` on one thread (the other core is the server's); returns req/s and latencies."""
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    cmd += ["-H", f"Authorization: Bearer {key}"]
    if body is not None:
        script = tmp / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        cmd += ["-s", str(script)]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60)
    text = proc.stdout
    if proc.returncode != 0:
        return {"error": f"wrk exit {proc.returncode}: {proc.stderr.strip()[:200]}"}
    dist = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", text, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if "50" not in dist or "99" not in dist or rps is None:
        return {"error": "wrk printed no latencies: " + " | ".join(text.strip().splitlines()[-6:])}
    total = re.search(r"(\d+) requests in ([\d.]+\w+)", text)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {
        "tool": "wrk",
        "rps": float(rps.group(1)),
        "p50_ms": _ms(dist["50"]),
        "p99_ms": _ms(dist["99"]),
        "requests": int(total.group(1)) if total else None,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def httpx_load(
    url: str, key: str, conns: int, seconds: float, body: dict[str, Any] | None, _tmp: Path
) -> dict[str, Any]:
    """Fallback without wrk: ``conns`` asyncio tasks, each with its own keep-alive connection,
    requesting back to back until ``seconds`` have passed."""

    async def main() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        bad = 0
        headers = {"Authorization": f"Bearer {key}"}
        stop = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal bad
            async with httpx.AsyncClient(headers=headers, timeout=10) as c:
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    if body is None:
                        r = await c.get(url)
                    else:
                        r = await c.post(url, json=body)
                    latencies.append(time.perf_counter() - t)
                    bad += not 200 <= r.status_code < 400

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(conns)))
        return latencies, bad, time.perf_counter() - t0

    latencies, bad, elapsed = asyncio.run(main())
    ms = np.array(latencies) * 1e3
    return {
        "tool": "httpx",
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests": len(latencies),
        "non_2xx": bad,
        "socket_errors": "",
    }


def with_server_cpu(server: Any, fn: Any, args: Any) -> dict[str, Any]:
    """Run the load ``fn`` after waiting for a quiet machine; add the server tree's CPU
    seconds per wall second (*server cores*) and other processes' share of the machine
    (*foreign_load*: neither the server, this process, nor the generator we waited on);
    re-run up to ``args.retries`` times while that share is over :data:`CONTENDED`."""
    proc = psutil.Process(server.process.pid)

    def cpu() -> tuple[float, float]:
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        own = psutil.Process().cpu_times()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has exited
        return total, own.user + own.system + ru.ru_utime + ru.ru_stime

    res: dict[str, Any] = {}
    for attempt in range(args.retries + 1):
        common.wait_quiet(args.quiet_wait)
        (srv0, own0), busy0, t = cpu(), common._busy_cpu_s(), time.perf_counter()
        res = fn()
        wall = time.perf_counter() - t
        (srv1, own1), busy1 = cpu(), common._busy_cpu_s()
        res["server_cores"] = (srv1 - srv0) / wall
        res["foreign_load"] = None
        if busy0 is not None and busy1 is not None:
            other = max(0.0, busy1 - busy0 - (srv1 - srv0) - (own1 - own0))
            res["foreign_load"] = other / (wall * (os.cpu_count() or 1))
        res["attempt"] = attempt
        print("    ", json.dumps(res), flush=True)
        if "error" in res or (res["foreign_load"] or 0.0) <= CONTENDED:
            break
    return res


def generator() -> Any:
    return wrk if shutil.which("wrk") else httpx_load


def status_load(
    server: Any, key: str, job_id: str, conns: list[int], args: Any, work: Path
) -> list[dict[str, Any]]:
    """``GET .../status`` of ``job_id`` at each number of connections."""
    gen, out = generator(), []
    url = f"{server.base_url}/v1/queue/requests/{job_id}/status"
    for n in conns:
        print(f"service: status load, {n} connection(s)", flush=True)
        res = with_server_cpu(
            server, lambda n=n: gen(url, key, n, args.load_seconds, None, work), args
        )
        res["conns"] = n
        out.append(res)
    return out


def load_tests(
    h: ModuleType, server: Any, completed_id: str, args: Any, work: Path
) -> dict[str, Any]:
    gen = generator()
    out: dict[str, Any] = {"tool": "wrk" if gen is wrk else "httpx", "submit": None}
    out["status"] = status_load(server, server.key, completed_id, args.connections, args, work)

    print("service: submit load on a --workers 0 server", flush=True)
    with h.running_server(work / "queue-only", workers=0, env=server_env()) as q:
        api = q.client()
        with song(args.seconds).open("rb") as fh:
            file_id = api.post("/v1/files", files={"file": ("song.wav", fh, "audio/wav")}).json()[
                "file_id"
            ]
        body = {"input": {"file_id": file_id, "model": common.MODEL, "stems": STEMS}}
        sub_url = f"{q.base_url}/v1/queue/audio/stems"
        res = with_server_cpu(
            q, lambda: gen(sub_url, q.key, args.submit_conns, args.submit_seconds, body, work), args
        )
        res["conns"] = args.submit_conns
        listed = api.get("/v1/queue/requests", params={"limit": 1})
        if listed.status_code != 200:
            raise RuntimeError(f"listing the queued jobs: {listed.status_code} {listed.text}")
        newest = listed.json()["data"][0]
        last = api.get(f"/v1/queue/requests/{newest['request_id']}/status").json()
        res["queued_after"] = (last.get("queue_position") or 0) + 1
        out["submit"] = res
        # The newest queued job's status: its queue_position counts every job ahead of it.
        print("service: status load on a queued job", flush=True)
        q_url = f"{q.base_url}/v1/queue/requests/{newest['request_id']}/status"
        res = with_server_cpu(
            q, lambda: gen(q_url, q.key, args.submit_conns, args.load_seconds, None, work), args
        )
        res["conns"] = args.submit_conns
        res["queue_position"] = last.get("queue_position")
        out["queued_status"] = res
    return out


def uncounted_status(
    h: ModuleType, data_dir: Path, key: str, job_id: str, args: Any, work: Path
) -> dict[str, Any]:
    """The COMPLETED job's status again, from a server on the same data dir with the per-key
    request counter off (``DEMIXER_RATE_LIMIT_PER_MINUTE=0``): what the counter costs."""
    env = {**server_env(), "DEMIXER_RATE_LIMIT_PER_MINUTE": "0"}
    with h.running_server(data_dir, workers=0, env=env) as again:
        return status_load(again, key, job_id, [args.submit_conns], args, work)[0]


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=180.0, help="length of the song")
    ap.add_argument("--retries", type=int, default=2, help="re-runs of a contended timing")
    ap.add_argument("--quiet-wait", type=float, default=120.0)
    ap.add_argument("--no-load", action="store_true", help="skip part 2 (load)")
    ap.add_argument("--connections", type=int, nargs="*", default=[1, 8, 32])
    ap.add_argument("--load-seconds", type=float, default=15.0)
    ap.add_argument("--submit-conns", type=int, default=8)
    ap.add_argument("--submit-seconds", type=float, default=10.0)
    args = ap.parse_args(argv)

    # SIGTERM (a timeout, a Ctrl-C elsewhere) unwinds like an exception: the servers stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    h = harness()
    src = song(args.seconds)
    runs: dict[str, list[dict[str, Any]]] = {"cli": [], "service": [], "engine": []}
    load: dict[str, Any] | None = None
    with common.tempdir("service") as tmp:
        work = Path(tmp)
        print("service: starting `demixer serve --workers 1`", flush=True)
        with h.running_server(work / "serve", workers=1, env=server_env()) as server:
            api, dl = clients(server)
            try:
                print("service: warm-up job", flush=True)
                warm = service_job(server, api, dl, src, work)
                if "error" in warm:
                    raise SystemExit(f"warm-up job failed: {warm['error']}")
                print(f"    warm-up: {warm['total_s']:.2f} s", flush=True)
                pid = server.process.pid
                print("service: starting the engine process (C)", flush=True)
                engine = Engine(src, work)
                print(
                    f"    load {engine.load_s:.2f} s, warm-up {engine.warmup_s:.2f} s", flush=True
                )
                for r in range(args.rounds):
                    print(f"service: round {r + 1}/{args.rounds}", flush=True)
                    runs["cli"] += timed(
                        "cli", lambda: run_cli(src, work), [], args.quiet_wait, args.retries
                    )
                    runs["service"] += timed(
                        "service",
                        lambda: service_job(server, api, dl, src, work),
                        [pid],
                        args.quiet_wait,
                        args.retries,
                    )
                    runs["engine"] += timed(
                        "engine",
                        lambda: engine.run(src),
                        [engine.pid],
                        args.quiet_wait,
                        args.retries,
                    )
                engine.close()
                if not args.no_load:
                    # A COMPLETED job to read (the timed ones were deleted).
                    kept = service_job(server, api, dl, src, work, keep=True)
                    load = load_tests(h, server, kept["request_id"], args, work)
            finally:
                dl.close()
        if load is not None:
            load["status_uncounted"] = uncounted_status(
                h, work / "serve", server.key, kept["request_id"], args, work
            )
    summary = summarize(runs, args.seconds)
    payload = {"runs": runs, "summary": summary, "load": load}
    common.CACHE.mkdir(exist_ok=True)
    (common.CACHE / "service.json").write_text(json.dumps(payload, indent=1))
    common.write_section("service", render(summary, load, args))
    return payload


def _clean(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ok = [r for r in rs if "error" not in r]
    clean = [r for r in ok if (r.get("foreign_load") or 0.0) <= CONTENDED]
    return clean or ok


def summarize(runs: dict[str, list[dict[str, Any]]], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, rs in runs.items():
        ok = _clean(rs)
        if not ok:
            errors = [r.get("error", "?") for r in rs]
            out[kind] = {"error": errors[0] if errors else "not run"}
            continue
        keys = sorted({k for r in ok for k, v in r.items() if isinstance(v, float)})
        med = {k: statistics.median(r[k] for r in ok if r.get(k) is not None) for k in keys}
        mean = {k: statistics.fmean(r[k] for r in ok if r.get(k) is not None) for k in keys}
        loads = [r["foreign_load"] for r in ok if r.get("foreign_load") is not None]
        out[kind] = {
            "n": len(ok),
            "n_all": len(rs),
            "median": med,
            "mean": mean,
            "best_total_s": min(r["total_s"] for r in ok),
            "worst_total_s": max(r["total_s"] for r in ok),
            "min": {k: min(r[k] for r in ok if r.get(k) is not None) for k in keys},
            "max": {k: max(r[k] for r in ok if r.get(k) is not None) for k in keys},
            "foreign_max": max(loads) if loads else None,
        }
    return out


# (key, stage, what it covers, group); the keys partition the service's timeline
STAGES = [
    ("upload_receive_s", "upload: receive", "multipart body sent, parsed, spooled", "upload"),
    ("upload_store_s", "upload: store", "spool copied into storage (with SHA-256)", "upload"),
    ("upload_probe_s", "upload: probe", "input probed as audio, file row, 201", "upload"),
    ("submit_s", "submit", "`POST /v1/queue/audio/stems` answered 202", "submit"),
    ("queue_wait_s", "queue wait", "202 answered -> a worker slot claimed the job", "queue wait"),
    ("separate_s", "separation (child)", "claim -> the child's outputs written", "separation"),
    ("store_s", "store outputs", "outputs put into storage, job COMPLETED", "store outputs"),
    (
        "detect_s",
        "completion seen",
        "COMPLETED -> the client's next poll sees it",
        "completion seen",
    ),
    ("result_s", "result", "`GET .../result` (signed URLs)", "result"),
    ("download_s", "download", "every stem streamed to a file", "download"),
]


def _why(group: str, mean: dict[str, float]) -> str:
    """What a contributor is, precisely (with its parts' means)."""
    mb = mean.get("download_bytes", 0.0) / 1e6
    parts = {k: mean.get(k, 0.0) for k, *_ in STAGES}
    texts = {
        "upload": (
            "the multipart upload of the 16-bit wav: Starlette reads the body and spools it to "
            f"a temporary file ({parts['upload_receive_s']:.3f} s), `uploads.store_direct` "
            "copies the spool into storage computing its SHA-256 on the way "
            f"({parts['upload_store_s']:.3f} s), then the upload is probed as audio and its row "
            f"written before the 201 ({parts['upload_probe_s']:.3f} s)"
        ),
        "completion seen": (
            f"the client's own polling: it asks for the status every {POLL} s, so it learns of "
            f"COMPLETED on average about {POLL / 2:.1f} s (at most {POLL} s plus a request) "
            "after the commit; no server work is involved (the SSE stream sends a frame every "
            "`interval` >= 1 s, so it would be slower; a webhook is sent at the commit)"
        ),
        "download": f"streaming the {mb:.1f} MB of stems from their signed URLs",
        "queue wait": (
            "the worker slot noticing and claiming the job: in `demixer serve` an idle slot "
            "is woken when the submit commits (`Queue.wait_for_work`), so this is the claim "
            "transaction itself; a separate `demixer worker` process is not woken and polls "
            "every `poll_seconds` (0.5 s)"
        ),
        "store outputs": "putting the child's output files into storage and committing COMPLETED",
        "submit": "validating and queueing the request (one write transaction)",
        "result": "reading the job and signing its download URLs",
        "separation excess": (
            "the separation taking longer in the worker's child than in the bare warm process"
        ),
    }
    return texts.get(group, "")


def _s(summary: dict[str, Any], kind: str, key: str = "total_s") -> float | None:
    med = summary.get(kind, {}).get("median", {})
    value = med.get(key)
    return float(value) if value is not None else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def render_overhead(summary: dict[str, Any], args: Any) -> list[str]:
    out = []
    cli, svc, eng = (_s(summary, k) for k in ("cli", "service", "engine"))
    labels = {
        "cli": "A: cold CLI, `demixer separate FILE -m spleeter-2stems -o OUT`",
        "service": "B: warm `demixer serve --workers 1`, upload start -> stems on disk",
        "engine": "C: warm `Separator.separate_file` in a long-lived process (like the child)",
    }
    rows = []
    for kind, label in labels.items():
        s = summary.get(kind, {})
        if "error" in s:
            rows.append([label, f"failed: {s['error'][:100]}", "–", "–", "–", "–"])
            continue
        total = s["median"]["total_s"]
        rows.append(
            [
                label,
                f"{total:.2f}",
                f"{s['best_total_s']:.2f}–{s['worst_total_s']:.2f}",
                f"{args.seconds / total:.0f}",
                f"{total / eng:.2f}×" if eng else "–",
                f"{s['n']}/{s['n_all']} ({_pct(s['foreign_max'])})",
            ]
        )
    head = ["path", "wall s median", "range", "RTF", "÷ C", "runs kept (max other load)"]
    out.append(common.table(head, rows))
    if cli is None or svc is None or eng is None:
        return out
    svc_s, eng_s = summary["service"], summary["engine"]
    med, mean = svc_s["median"], svc_s["mean"]
    over = svc - eng
    around = med.get("around_s")
    verdict = "within" if over <= 0.10 * eng else "over"
    out.append(
        f"**Warm service against the warm engine (B − C, medians): {over:+.2f} s = "
        f"{100 * over / eng:+.1f} % of the bare separation**, {verdict} the 10 % target. "
        f"Against a cold CLI run (A) the warm service takes {svc / cli:.2f}× the time "
        f"({svc - cli:+.2f} s): the CLI pays for interpreter start, imports and model load on "
        "every run, the warm service once.\n"
    )
    if around is not None:
        out.append(
            "B − C mixes the service's own cost with the run-to-run spread of the separation "
            "itself (see the ranges). Measured within each run of B instead, the time that is "
            f"not the child's separation (total − separation) is **{around:.2f} s median = "
            f"{100 * around / eng:.1f} % of C** "
            f"({'within' if around <= 0.10 * eng else 'over'} the 10 % target); the child's "
            f"separation took {med['separate_s']:.2f} s (range "
            f"{svc_s['min']['separate_s']:.2f}–{svc_s['max']['separate_s']:.2f}) against C's "
            f"{eng:.2f} s ({eng_s['best_total_s']:.2f}–{eng_s['worst_total_s']:.2f}).\n"
        )
    rows = []
    for key, stage, what, _ in STAGES:
        if key in med:
            m = mean[key]
            share = f"{100 * m / mean['total_s']:.1f} %"
            rows.append([stage, what, f"{med[key]:.3f}", f"{m:.3f}", share])
    parts = sum(mean.get(k, 0.0) for k, *_ in STAGES)
    out.append(
        "Where B's time goes (its stages partition each run's timeline: their means add up to "
        f"{parts:.2f} s, the mean total is {mean['total_s']:.2f} s):\n"
    )
    out.append(common.table(["stage", "covers", "median s", "mean s", "share of mean"], rows))
    # Contributors: the stages around the separation (means, grouped), and the separation's
    # excess over C when it is larger than the two spreads allow.
    groups: dict[str, float] = {}
    for key, _, _, group in STAGES:
        if key != "separate_s" and key in mean:
            groups[group] = groups.get(group, 0.0) + mean[key]
    excess = mean.get("separate_s", eng_s["mean"]["total_s"]) - eng_s["mean"]["total_s"]
    spread = (svc_s["max"].get("separate_s", 0.0) - svc_s["min"].get("separate_s", 0.0)) / 2 + (
        eng_s["worst_total_s"] - eng_s["best_total_s"]
    ) / 2
    noisy = abs(excess) <= spread
    if not noisy:
        groups["separation excess"] = excess
    ranked = sorted(groups.items(), key=lambda kv: -kv[1])
    listed = ", ".join(f"{g} {v:.3f} s" for g, v in ranked)
    top, top_v = ranked[0]
    eng_mean = eng_s["mean"]["total_s"]
    note = (
        f"The child's separation took {excess:+.3f} s against C on average, within the "
        f"spread of the two (±{spread:.2f} s): no excess that these runs can tell apart. "
        if noisy
        else ""
    )
    out.append(
        f"Overhead by contributor (means): {listed}. {note}**The biggest is {top}, "
        f"{top_v:.3f} s ({100 * top_v / eng_mean:.1f} % of the bare separation)**: "
        f"{_why(top, mean)}.\n"
    )
    wait = groups.get("completion seen")
    if wait is not None and around is not None:
        own = {g: v for g, v in groups.items() if g != "completion seen"}
        own_total = mean.get("around_s", around) - wait
        g2, v2 = max(own.items(), key=lambda kv: kv[1])
        out.append(
            "Leaving out the client's polling delay, what the service itself adds around the "
            f"separation is {own_total:.3f} s = {100 * own_total / eng_mean:.1f} % of C "
            f"(means); its biggest part is {g2}, {v2:.3f} s"
            f"{' (above)' if g2 == top else ': ' + _why(g2, mean)}. The queue "
            "wait is at or below zero: the worker slot claims the job before the client has "
            "read the 202.\n"
        )
    cpu = [
        (mean.get("cpu_children_s"), "the separation child"),
        (mean.get("cpu_server_s"), "the `demixer serve` process (HTTP, worker thread, database)"),
        (mean.get("cpu_client_s"), "this client"),
    ]
    shown = [f"{label} {v:.2f} s" for v, label in cpu if v is not None]
    engine_cpu = eng_s["mean"].get("cpu_s")
    if shown and engine_cpu is not None:
        out.append(
            f"CPU time per run of B (means): {', '.join(shown)}; C's separation call used "
            f"{engine_cpu:.2f} s.\n"
        )
    return out


def render_load(load: dict[str, Any]) -> list[str]:
    out = [
        "### Endpoint throughput\n",
        f"Load generator: `{load['tool']}` on one thread, keep-alive connections, loopback, "
        "on the same 2-core machine as the server (it takes CPU from the server: these are "
        "floors for a dedicated server). *server cores*: CPU seconds of the `demixer serve` "
        "process tree per wall second during the run; *other load*: CPU used meanwhile by "
        "processes other than the server and the generator, as a share of the machine (a run "
        f"is repeated when it is over {100 * CONTENDED:.0f} %). The server is a single uvicorn "
        "process (sync endpoints in AnyIO's thread pool), SQLite, access log on, as "
        "`demixer serve` runs by default; every request with a key is counted against the "
        "key's per-minute limit (a write transaction on the database), except in the row "
        "marked *counter off*, a server on the same data dir with "
        "`DEMIXER_RATE_LIMIT_PER_MINUTE=0`.\n",
    ]
    rows = []

    def row(what: str, r: dict[str, Any]) -> None:
        if "error" in r:
            rows.append([what, str(r.get("conns", "")), f"failed: {r['error'][:80]}"] + ["–"] * 5)
            return
        rows.append(
            [
                what,
                str(r["conns"]),
                f"{r['rps']:.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['requests']} ({r['non_2xx']})",
                f"{r['server_cores']:.2f}",
                _pct(r.get("foreign_load")),
            ]
        )

    for r in load["status"]:
        row("`GET /v1/queue/requests/{id}/status`, COMPLETED job", r)
    if load.get("status_uncounted"):
        row("`GET …/status`, COMPLETED job, *counter off*", load["status_uncounted"])
    if load.get("submit"):
        row("`POST /v1/queue/audio/stems`, `--workers 0`", load["submit"])
    if load.get("queued_status"):
        r = load["queued_status"]
        row(f"`GET …/status`, IN_QUEUE job at position {r['queue_position']}", r)
    head = [
        "endpoint",
        "connections",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "requests (non-2xx)",
        "server cores",
        "other load",
    ]
    out.append(common.table(head, rows))
    return out


def render(summary: dict[str, Any], load: dict[str, Any] | None, args: Any) -> str:
    out = ["## Service", "", common.header("service.py")]
    if DIRTY:
        out.append(
            "*The working tree had uncommitted changes under `src/` when this ran (the service "
            "is under development): the figures describe that tree.*\n"
        )
    out.append(
        f"Input: {args.seconds:.0f} s stereo 44.1 kHz 16-bit wav (the excerpt's mix looped), "
        f"`spleeter-2stems`, two 16-bit wav stems out. {args.rounds} rounds of A, B, C in "
        "turn, each after waiting for an idle machine and re-run when other processes used "
        f"more than {100 * CONTENDED:.0f} % of the CPU meanwhile. A: a fresh CLI process. "
        "B: a `demixer serve --workers 1` (stock settings: worker poll 0.5 s, heartbeat 2 s; "
        "SQLite and local storage in a temp data dir; on every server started here the "
        "per-key limits are lifted, "
        f"{', '.join(f'`{k}={v}`' for k, v in SERVER_ENV.items())}: requests are still "
        "counted but never refused) warmed by one job, so its separation child has torch "
        "imported and the model loaded; timed from the start of the multipart upload to the "
        f"last stem written to disk by the client, polling the status every {POLL} s; the job "
        "asks for `stems: [vocals]` (vocals + residual), and each upload differs from the "
        "others in the low byte of its last sample, so that the server's result cache "
        "cannot answer. "
        "C: a long-lived process holding a loaded `Separator` (model loaded and one warm-up "
        "call before the rounds, like the warmed child), timed per round on "
        "`separate_file` of the same file. Each stage boundary of B is a timestamp on this "
        "machine's clock: the client's, the job's log lines (`attempt 1 started`, "
        "`completed`), and the blobs' times in the server's storage directory (the "
        "upload's copy into storage: birth and modification; the outputs: their last write by "
        "the child).\n"
    )
    out += render_overhead(summary, args)
    if load:
        out += render_load(load)
    out.append("All runs and load results: `benchmarks/.cache/service.json`.\n")
    return "\n".join(out)


if __name__ == "__main__":
    main(sys.argv[1:])
