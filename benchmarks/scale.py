"""Scale-out: jobs per minute with 1, 2 and 4 worker processes, and request rates under load.

The service split into its scale-out processes, all on this one machine and loopback:
``demixer serve --workers 0`` (API only) and ``demixer worker --slots 1`` processes, sharing
one data directory (signing key; local storage when no storage URL is set) and one database.
Each stack (``--stack``) is measured in a fresh database and data directory:

- ``sqlite``: the embedded default, SQLite file + local storage in the shared data dir;
- ``pg``: PostgreSQL (``DEMIXER_DATABASE_URL``) + local storage in the shared data dir;
- ``pg-s3``: PostgreSQL + an S3-compatible bucket (``DEMIXER_STORAGE_URL=s3://…``).

PostgreSQL (Debian's, ``fsync=off``) and the S3 server (``rclone serve s3``) are the test
servers of ``tests/servers.py``, started once per run on loopback.

1. **Throughput.** For N in ``--workers``: start the API and N workers, warm the workers (one
   job each: their separation children import torch and load the model), then submit
   ``--jobs`` jobs of a ``--seconds`` stereo 44.1 kHz 16-bit wav (uploaded beforehand, untimed;
   each upload unique, so the result cache never answers) back to back and time from the first
   submit until the last job's COMPLETED (its ``completed`` log line). CPU seconds per job of
   the worker trees (worker + separation child), the API, PostgreSQL and the S3 server, by
   psutil. Then, at the N with the most jobs per minute, the same with ``--long-seconds``
   files: how cost grows with file length.
2. **Load.** ``wrk`` (one thread per generator) against ``GET /v1/queue/requests/{id}/status``
   of a COMPLETED job and ``POST /v1/queue/audio/stems`` (no workers: jobs only queue), at each
   of ``--connections``, with one API process and with two on different ports sharing the data
   dir and database (one generator per API process, run at once; rates summed).

    .venv/bin/python benchmarks/scale.py [--stack pg sqlite pg-s3] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psutil

import common
import service

STACKS = ("sqlite", "pg", "pg-s3")
BODY_EXTRA = {"output_format": "wav", "bit_depth": "16"}


def servers_module() -> ModuleType:
    """tests/servers.py (PostgreSQL and S3 on loopback), imported from the tests folder."""
    tests = str(common.ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import servers  # type: ignore[import-not-found]

    return servers  # type: ignore[no-any-return]


def s3_ready() -> bool:
    """Whether ``open_storage`` knows ``s3://`` URLs in this tree."""
    code = (
        "from demixer.storage import open_storage\n"
        "import inspect, sys\n"
        "sys.exit(0 if 's3' in inspect.getsource(open_storage) else 1)"
    )
    return subprocess.run([str(common.MAIN_PY), "-c", code], capture_output=True).returncode == 0


class Stack:
    """One database + storage choice; :meth:`env` gives a fresh database (and bucket)."""

    def __init__(self, name: str, srv: Any) -> None:
        self.name, self.srv = name, srv

    def env(self) -> dict[str, str]:
        if self.name == "sqlite":
            return {}
        env = {"DEMIXER_DATABASE_URL": self.srv.create_database()}
        if self.name == "pg-s3":
            env["DEMIXER_STORAGE_URL"] = self.srv.create_bucket()
            env.update(self.srv.s3_env())
        return env

    def helper_pids(self) -> dict[str, list[int]]:
        """The database and S3 server processes whose CPU is counted (their trees)."""
        if self.name == "sqlite":
            return {}
        pid_file = Path(self.srv.root) / "pg" / "postmaster.pid"
        out = {"postgres": [int(pid_file.read_text().split()[0])]}
        if self.name == "pg-s3":
            out["s3"] = [self.srv.rclone_pid]
        return out


@contextlib.contextmanager
def environment(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` plus ``extra`` for the block: every process started meanwhile (servers,
    workers, ``demixer keys create``) talks to the same database and storage."""
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- processes ------------------------------------------------------------------------------


def start_workers(n: int, data_dir: Path) -> list[subprocess.Popen[bytes]]:
    """``n`` × ``demixer worker --slots 1`` on ``data_dir`` (stock poll and heartbeat)."""
    procs = []
    for i in range(n):
        log = (data_dir / f"worker-{i}.log").open("wb")
        cmd = [str(common.demixer_cli()), "worker", "--slots", "1", "--data-dir", str(data_dir)]
        procs.append(
            subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=service.server_env(),
                start_new_session=True,  # its own group: stop() reaches its child too
            )
        )
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class GroupWatch:
    """CPU seconds of named process trees over a block, this process (and the load generators
    it waited on) as ``client``, and ``foreign``: every other process's CPU as a share of the
    machine over the block."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def _cpu(self) -> tuple[dict[str, dict[int, float]], float]:
        out: dict[str, dict[int, float]] = {}
        for name, pids in self.groups.items():
            per: dict[int, float] = {}
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(pid)
                    for proc in [root, *root.children(recursive=True)]:
                        with contextlib.suppress(psutil.Error):
                            t = proc.cpu_times()
                            per[proc.pid] = t.user + t.system
            out[name] = per
        own = psutil.Process().cpu_times()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return out, own.user + own.system + ru.ru_utime + ru.ru_stime

    def __enter__(self) -> GroupWatch:
        self._busy = common._busy_cpu_s()
        self._trees, self._client = self._cpu()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t
        trees, client = self._cpu()
        busy = common._busy_cpu_s()
        self.cpu = {
            name: sum(v - self._trees[name].get(pid, 0.0) for pid, v in per.items())
            for name, per in trees.items()
        }
        self.cpu["client"] = client - self._client
        self.foreign: float | None = None
        if busy is not None and self._busy is not None and self.wall > 0:
            other = max(0.0, busy - self._busy - sum(self.cpu.values()))
            self.foreign = other / (self.wall * (os.cpu_count() or 1))


# --- part 1: throughput ---------------------------------------------------------------------


def upload(api: httpx.Client, src: Path, work: Path) -> str:
    """A unique copy of ``src`` uploaded; returns its file id."""
    path = service.unique_copy(src, work)
    with path.open("rb") as fh:
        r = api.post("/v1/files", files={"file": (path.name, fh, "audio/wav")})
    path.unlink()
    if r.status_code != 201:
        raise RuntimeError(f"upload: {r.status_code} {r.text[:200]}")
    return str(r.json()["file_id"])


def submit(api: httpx.Client, file_id: str) -> str:
    body = {"input": {"file_id": file_id, "model": common.MODEL, "stems": service.STEMS}}
    body["input"].update(BODY_EXTRA)
    r = api.post("/v1/queue/audio/stems", json=body)
    if r.status_code != 202:
        raise RuntimeError(f"submit: {r.status_code} {r.text[:200]}")
    return str(r.json()["request_id"])


def wait_all(api: httpx.Client, jobs: list[str], timeout: float) -> None:
    """Poll the oldest unfinished job every 0.2 s (one request at a time, so that polling
    costs the API little) until every job is COMPLETED."""
    deadline = time.monotonic() + timeout
    pending = list(jobs)
    while pending:
        status = api.get(f"/v1/queue/requests/{pending[0]}/status").json()
        if status["status"] == "COMPLETED":
            pending.pop(0)
            continue
        if status["status"] in service.FINAL or time.monotonic() > deadline:
            raise RuntimeError(f"job {pending[0]}: {status}")
        time.sleep(0.2)


def job_times(api: httpx.Client, job: str) -> tuple[float, float]:
    """(started, completed) epoch seconds of a job's first attempt, from its log lines."""
    logs = api.get(f"/v1/queue/requests/{job}/status", params={"logs": "true"}).json()["logs"]
    return service._log_time(logs, "attempt 1 started"), service._log_time(logs, "completed")


def throughput(
    h: ModuleType, stack: Stack, n: int, seconds: float, jobs: int, args: Any, work: Path
) -> dict[str, Any]:
    """One batch of ``jobs`` on ``n`` warm workers; see the module docs."""
    data_dir = work / f"{stack.name}-w{n}-{round(seconds)}s"
    src = service.song(seconds)
    res: dict[str, Any] = {"stack": stack.name, "workers": n, "seconds": seconds, "jobs": jobs}
    with environment(stack.env()), h.running_server(data_dir, workers=0, env=service.server_env()) as api_srv:
        workers = start_workers(n, data_dir)
        try:
            api = api_srv.client()
            warm = [submit(api, upload(api, src, work)) for _ in range(n)]
            wait_all(api, warm, 300)
            with_child = sum(bool(psutil.Process(w.pid).children(recursive=True)) for w in workers)
            if with_child != n:
                print(f"    note: {with_child}/{n} workers have a warm child", flush=True)
            files = [upload(api, src, work) for _ in range(jobs)]
            res["waited_quiet"] = common.wait_quiet(args.quiet_wait)
            groups = {"workers": [w.pid for w in workers], "api": [api_srv.process.pid]}
            with GroupWatch({**groups, **stack.helper_pids()}) as watch:
                t0 = time.time()
                ids = [submit(api, f) for f in files]
                t_sub = time.time()
                wait_all(api, ids, 600)
            times = [job_times(api, j) for j in ids]
        finally:
            stop(workers)
    end = max(c for _, c in times)
    wall = end - t0
    res.update(
        {
            "wall_s": wall,
            "submit_all_s": t_sub - t0,
            "jobs_per_min": 60 * jobs / wall,
            "audio_s_per_s": jobs * seconds / wall,
            "job_s_mean": statistics.fmean(c - s for s, c in times),
            "queue_wait_first_s": min(s for s, _ in times) - t0,
            "cpu_per_job_s": {k: v / jobs for k, v in watch.cpu.items()},
            "cores_used": sum(watch.cpu.values()) / watch.wall,
            "foreign_load": watch.foreign,
            "warm_children": with_child,
        }
    )
    shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}
    print(f"    {json.dumps(shown)}", flush=True)
    return res


# --- part 2: load ---------------------------------------------------------------------------


def load_runs(
    h: ModuleType, stack: Stack, args: Any, work: Path
) -> list[dict[str, Any]]:
    """Status and submit load on one and on two API processes sharing the data dir."""
    data_dir = work / f"{stack.name}-load"
    src = service.song(args.seconds)
    out: list[dict[str, Any]] = []
    with environment(stack.env()), contextlib.ExitStack() as stack_cm:
        first = stack_cm.enter_context(
            h.running_server(data_dir, workers=0, env=service.server_env())
        )
        api = first.client()
        file_id = upload(api, src, work)
        workers = start_workers(1, data_dir)
        try:
            done = submit(api, file_id)
            wait_all(api, [done], 300)
        finally:
            stop(workers)
        second = stack_cm.enter_context(
            h.running_server(data_dir, workers=0, env=service.server_env())
        )
        body = {"input": {"file_id": file_id, "model": common.MODEL, "stems": service.STEMS}}
        body["input"].update(BODY_EXTRA)
        targets = {
            "status": (f"/v1/queue/requests/{done}/status", None),
            "submit": ("/v1/queue/audio/stems", body),
        }
        for endpoint, (path, req_body) in targets.items():
            for n_api, apis in ((1, [first]), (2, [first, second])):
                for conns in args.connections:
                    print(f"scale: {stack.name} {endpoint}, {n_api} API, {conns} conns", flush=True)
                    r = generate(apis, path, req_body, conns, args, work, stack)
                    r.update({"stack": stack.name, "endpoint": endpoint, "apis": n_api})
                    r["conns"] = conns
                    out.append(r)
    return out


def generate(
    apis: list[Any],
    path: str,
    body: dict[str, Any] | None,
    conns: int,
    args: Any,
    work: Path,
    stack: Stack,
) -> dict[str, Any]:
    """One ``wrk`` per API process at once (``conns`` connections each), rates summed."""
    res: dict[str, Any] = {}
    for attempt in range(args.retries + 1):
        common.wait_quiet(args.quiet_wait)
        dirs = [work / f"gen-{i}" for i in range(len(apis))]
        for d in dirs:
            d.mkdir(exist_ok=True)
        groups = {"api": [a.process.pid for a in apis], **stack.helper_pids()}
        with GroupWatch(groups) as watch, ThreadPoolExecutor(len(apis)) as pool:
            runs = list(
                pool.map(
                    lambda ad: service.wrk(
                        ad[0].base_url + path, ad[0].key, conns, args.load_seconds, body, ad[1]
                    ),
                    zip(apis, dirs),
                )
            )
        errors = [r["error"] for r in runs if "error" in r]
        if errors:
            return {"error": errors[0]}
        res = {
            "rps": sum(r["rps"] for r in runs),
            "p50_ms": max(r["p50_ms"] for r in runs),
            "p99_ms": max(r["p99_ms"] for r in runs),
            "requests": sum(r["requests"] or 0 for r in runs),
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "socket_errors": "; ".join(r["socket_errors"] for r in runs if r["socket_errors"]),
            "cores": {k: v / watch.wall for k, v in watch.cpu.items()},
            "foreign_load": watch.foreign,
            "attempt": attempt,
        }
        print("    ", json.dumps(res), flush=True)
        if (watch.foreign or 0.0) <= service.CONTENDED:
            break
    return res


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stack", nargs="*", choices=STACKS, default=["pg", "sqlite", "pg-s3"])
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--jobs", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the short files")
    ap.add_argument("--long-seconds", type=float, default=60.0)
    ap.add_argument("--connections", type=int, nargs="*", default=[8, 32])
    ap.add_argument("--load-seconds", type=float, default=10.0)
    ap.add_argument("--retries", type=int, default=1, help="re-runs of a contended load run")
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--no-load", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    h = service.harness()
    stacks = list(args.stack)
    skipped: dict[str, str] = {}
    if "pg-s3" in stacks and not s3_ready():
        stacks.remove("pg-s3")
        skipped["pg-s3"] = "`open_storage` did not accept `s3://` URLs in this tree yet"
        print(f"scale: skipping pg-s3: {skipped['pg-s3']}", file=sys.stderr)
    tput: list[dict[str, Any]] = []
    load: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    with common.tempdir("scale") as tmp:
        work = Path(tmp)
        srv = None
        if any(s != "sqlite" for s in stacks):
            work.chmod(0o755)  # PostgreSQL runs as its own user and must reach its directory
            srv = servers_module().start(work / "servers")
        try:
            for name in stacks:
                stack = Stack(name, srv)
                if not args.no_throughput:
                    for n in args.workers:
                        print(f"scale: {name}, {n} worker(s), {args.jobs} × {args.seconds:g} s")
                        tput.append(throughput(h, stack, n, args.seconds, args.jobs, args, work))
                    short = [r for r in tput if r["stack"] == name]
                    best = max(short, key=lambda r: r["jobs_per_min"])["workers"]
                    print(f"scale: {name}, {best} worker(s), {args.jobs} × {args.long_seconds:g} s")
                    tput.append(throughput(h, stack, best, args.long_seconds, args.jobs, args, work))
                if not args.no_load:
                    load += load_runs(h, stack, args, work)
        finally:
            if srv is not None:
                srv.stop()
    payload = {
        "throughput": tput,
        "load": load,
        "skipped": skipped,
        "run_s": time.perf_counter() - t_start,
    }
    common.CACHE.mkdir(exist_ok=True)
    (common.CACHE / "scale.json").write_text(json.dumps(payload, indent=1))
    common.write_section("scale", render(payload, args))
    return payload


# --- RESULTS.md -----------------------------------------------------------------------------


def render(payload: dict[str, Any], args: Any) -> str:
    out = ["## Scale-out", "", common.header("scale.py")]
    return "\n".join(out)


if __name__ == "__main__":
    main(sys.argv[1:])
