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
   psutil. On the first stack, also one ``demixer worker --slots S`` process for S in
   ``--slots`` (its slots split the cores' torch threads), and with ``--split-threads`` (on by
   default) N × ``demixer worker --slots 1 --threads T`` for each N > 1 in ``--workers``, T =
   max(1, cores ÷ N): the same processes with the cores' threads split among them instead of
   each child using all the cores. Then, with the configuration that had the most jobs per
   minute (and on the first stack with one worker too), the same with ``--long-jobs`` files of
   ``--long-seconds``: how cost grows with file length. ``--only-split`` runs the split-thread
   batches alone (no other throughput rows, no long files); merge them into a full run's
   figures with ``--keep-quieter``.
2. **Load**, on the stacks of ``--load-stack``. ``wrk`` (one thread per generator) against
   ``GET /v1/queue/requests/{id}/status`` of a COMPLETED job and ``POST /v1/queue/audio/stems``
   (no workers: jobs only queue), at each of ``--connections``, with one API process and with
   two on different ports sharing the data dir and database (one generator per API process,
   run at once; rates summed).

    .venv/bin/python benchmarks/scale.py [--stack pg-s3 pg sqlite] [--workers 1 2 4]
    .venv/bin/python benchmarks/scale.py --stack pg-s3 --workers 2 4 --no-load --only-split \
        --keep-quieter benchmarks/.cache/scale.json
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
# (worker processes, slots each, --threads or None for the worker's default of cores ÷ slots)
Config = tuple[int, int, int | None]
BODY_EXTRA = {"output_format": "wav", "bit_depth": "16"}
# What makes two measurements the same set-up (quieter()). Rows measured before --threads
# existed have no "threads": None, so they stay apart from the --threads rows.
SETUP_FIELDS = (
    *("stack", "workers", "slots", "threads", "seconds", "jobs"),  # throughput
    *("endpoint", "apis", "conns"),  # load
)


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


def start_workers(
    n: int, data_dir: Path, slots: int = 1, threads: int | None = None
) -> list[subprocess.Popen[bytes]]:
    """``n`` × ``demixer worker --slots SLOTS [--threads THREADS]`` on ``data_dir`` (stock poll
    and heartbeat)."""
    procs = []
    for i in range(n):
        log = (data_dir / f"worker-{i}.log").open("wb")
        cmd = [str(common.demixer_cli()), "worker", "--slots", str(slots)]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        cmd += ["--data-dir", str(data_dir)]
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
    h: ModuleType,
    stack: Stack,
    config: Config,
    seconds: float,
    jobs: int,
    args: Any,
    work: Path,
) -> dict[str, Any]:
    """One batch of ``jobs`` on warm workers: ``config`` = (worker processes, slots each,
    ``--threads`` or None)."""
    n, slots, threads = config
    tag = "" if threads is None else f"t{threads}"
    data_dir = work / f"{stack.name}-w{n}x{slots}{tag}-{round(seconds)}s"
    src = service.song(seconds)
    print(f"scale: {stack.name}, {label(config)}, {jobs} × {seconds:g} s", flush=True)
    res: dict[str, Any] = {"stack": stack.name, "workers": n, "slots": slots}
    if threads is not None:  # rows without the key: the worker's default (cores ÷ slots)
        res["threads"] = threads
    res.update({"seconds": seconds, "jobs": jobs})
    with (
        environment(stack.env()),
        h.running_server(data_dir, workers=0, env=service.server_env()) as api_srv,
    ):
        workers = start_workers(n, data_dir, slots, threads)
        try:
            api = api_srv.client()
            t_warm = time.perf_counter()
            warm = [submit(api, upload(api, src, work)) for _ in range(n * slots)]
            wait_all(api, warm, 300)
            res["warmup_s"] = time.perf_counter() - t_warm  # workers start + first jobs
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
            "commit": common.git_rev(),
        }
    )
    shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}
    print(f"    {json.dumps(shown)}", flush=True)
    return res


# --- part 2: load ---------------------------------------------------------------------------


def load_runs(h: ModuleType, stack: Stack, args: Any, work: Path) -> list[dict[str, Any]]:
    """Status and submit load on one and on two API processes sharing the data dir."""
    data_dir = work / f"{stack.name}-load"
    src = service.song(args.seconds)
    out: list[dict[str, Any]] = []
    with environment(stack.env()), contextlib.ExitStack() as stack_cm:
        first = stack_cm.enter_context(
            h.running_server(data_dir, workers=0, env=service.server_env())
        )
        api = first.client()
        workers = start_workers(1, data_dir)
        try:
            done = submit(api, upload(api, src, work))
            wait_all(api, [done], 300)
        finally:
            stop(workers)
        second = stack_cm.enter_context(
            h.running_server(data_dir, workers=0, env=service.server_env())
        )
        # An upload no job has run on: every submit queues (one that a completed job ran on
        # would be answered from the result cache, copying its outputs).
        file_id = upload(api, src, work)
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
                    # the first server's key on both: the job and upload belong to its account
                    lambda ad: service.wrk(
                        ad[0].base_url + path, apis[0].key, conns, args.load_seconds, body, ad[1]
                    ),
                    zip(apis, dirs, strict=True),
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
    ap.add_argument("--stack", nargs="*", choices=STACKS, default=["pg-s3", "pg", "sqlite"])
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument(
        "--slots",
        type=int,
        nargs="*",
        default=[2],
        help="also one `demixer worker --slots S` process (first --stack only)",
    )
    ap.add_argument(
        "--split-threads",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also N × `demixer worker --slots 1 --threads max(1, cores ÷ N)` for each N > 1 "
        "in --workers (first --stack only)",
    )
    ap.add_argument(
        "--only-split",
        action="store_true",
        help="throughput: only the --split-threads batches (no other rows, no long files)",
    )
    ap.add_argument("--jobs", type=int, default=24, help="batch of short files")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the short files")
    ap.add_argument("--long-seconds", type=float, default=60.0)
    ap.add_argument("--long-jobs", type=int, default=8, help="batch of long files")
    ap.add_argument(
        "--load-stack",
        nargs="*",
        choices=STACKS,
        default=["pg", "sqlite"],
        help="stacks of the load part (its endpoints do not touch storage)",
    )
    ap.add_argument("--connections", type=int, nargs="*", default=[8, 32])
    ap.add_argument("--load-seconds", type=float, default=10.0)
    ap.add_argument("--retries", type=int, default=0, help="re-runs of a contended load run")
    ap.add_argument("--quiet-wait", type=float, default=30.0)
    ap.add_argument("--no-load", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument(
        "--render", type=Path, help="measure nothing: rewrite the section from this scale.json"
    )
    ap.add_argument(
        "--keep-quieter",
        type=Path,
        help="an earlier run's scale.json: of each measurement in both, keep the one that ran "
        "with less other load on the machine",
    )
    args = ap.parse_args(argv)

    if args.render:
        saved: dict[str, Any] = json.loads(args.render.read_text())
        common.write_section("scale", render(saved, args))
        return saved
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    h = service.harness()
    if args.no_throughput:
        args.stack = []
    if args.no_load:
        args.load_stack = []
    stacks = list(dict.fromkeys([*args.stack, *args.load_stack]))
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
            try:
                srv = servers_module().start(work / "servers")
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                for name in [s for s in stacks if s != "sqlite"]:
                    stacks.remove(name)
                    skipped[name] = f"the test servers did not start ({exc}; `make test-servers`)"
                print(f"scale: PostgreSQL/S3 not available: {exc}", file=sys.stderr)
        try:
            for name in stacks:
                stack = Stack(name, srv)
                if name in args.stack:
                    main_stack = name == args.stack[0]
                    configs: list[Config] = []
                    if not args.only_split:
                        configs += [(n, 1, None) for n in args.workers]
                    if main_stack and not args.only_split:
                        # one process with several slots (threads split among them)
                        configs += [(1, s, None) for s in args.slots]
                    if main_stack and (args.split_threads or args.only_split):
                        # N processes with the threads split among them by --threads
                        cores = os.cpu_count() or 1
                        configs += [(n, 1, max(1, cores // n)) for n in args.workers if n > 1]
                    for config in configs:
                        tput.append(
                            throughput(h, stack, config, args.seconds, args.jobs, args, work)
                        )
                    short = [r for r in tput if r["stack"] == name]
                    longs: list[Config] = []
                    if short and not args.only_split:
                        best = max(short, key=lambda r: r["jobs_per_min"])
                        longs = [_config(best)]
                        if main_stack and longs[0] != (1, 1, None):
                            longs.insert(0, (1, 1, None))
                    for config in longs:
                        tput.append(
                            throughput(
                                h, stack, config, args.long_seconds, args.long_jobs, args, work
                            )
                        )
                if name in args.load_stack:
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
    if args.keep_quieter:
        payload = quieter(json.loads(args.keep_quieter.read_text()), payload)
    common.CACHE.mkdir(exist_ok=True)
    (common.CACHE / "scale.json").write_text(json.dumps(payload, indent=1))
    common.write_section("scale", render(payload, args))
    return payload


def _load_of(row: dict[str, Any], unknown: float) -> float:
    """A measurement's other load (0.0 is a real figure, not a missing one)."""
    value = row.get("foreign_load")
    return unknown if value is None else float(value)


def quieter(earlier: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """``now`` with each measurement replaced by ``earlier``'s of the same set-up when that one
    ran with less other load (a shared machine: the less disturbed figure is the truer one),
    plus ``earlier``'s measurements of set-ups ``now`` lacks."""

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(r.get(f) for f in SETUP_FIELDS)

    out = dict(now)
    replaced = 0
    for part in ("throughput", "load"):
        old = {key(r): r for r in earlier.get(part, []) if "error" not in r}
        rows = []
        for r in now[part]:
            o = old.get(key(r))
            if o is not None and _load_of(o, 0.0) < _load_of(r, 1.0):
                o = {**o, "earlier_run": True}
                replaced += 1
                rows.append(o)
            else:
                rows.append(r)
        seen = {key(r) for r in now[part]}
        rows += [{**r, "earlier_run": True} for k, r in old.items() if k not in seen]
        replaced += sum(k not in seen for k in old)
        out[part] = rows
    out["from_earlier_run"] = replaced
    return out


# --- RESULTS.md -----------------------------------------------------------------------------


def label(config: Config) -> str:
    """``(processes, slots, threads)`` as the command line it stands for."""
    n, slots, threads = config
    opt = "" if threads is None else f" --threads {threads}"
    return f"{n} × `worker --slots {slots}{opt}`"


def _config(r: dict[str, Any]) -> Config:
    return r["workers"], r.get("slots", 1), r.get("threads")


def _order(config: Config) -> tuple[int, int, int]:
    """Sort key: the default thread count (None) before any ``--threads``."""
    return config[0], config[1], config[2] or 0


STACK_LABEL = {
    "sqlite": "SQLite + local",
    "pg": "PostgreSQL + local",
    "pg-s3": "PostgreSQL + S3",
}


def _f(x: float | None, digits: int = 2) -> str:
    return common.fmt(x, digits)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def render_throughput(runs: list[dict[str, Any]], args: Any) -> list[str]:
    stacks = list(dict.fromkeys(r["stack"] for r in runs))

    def order(r: dict[str, Any]) -> tuple[Any, ...]:
        """By stack as measured, then the one-slot rows by process count, each plain row
        followed by its ``--threads`` one, then the several-slot rows; then file length."""
        return stacks.index(r["stack"]), r.get("slots", 1), _order(_config(r)), r["seconds"]

    runs = sorted(runs, key=order)
    short = [r for r in runs if r["seconds"] == args.seconds]
    base = {r["stack"]: r["jobs_per_min"] for r in short if _config(r) == (1, 1, None)}
    rows = []
    for r in short:
        cpu = r["cpu_per_job_s"]
        one = base.get(r["stack"])
        rows.append(
            [
                STACK_LABEL[r["stack"]],
                label(_config(r)),
                _f(r["wall_s"], 1),
                f"**{r['jobs_per_min']:.0f}**",
                f"{r['jobs_per_min'] / one:.2f}×" if one else "–",
                _f(r["job_s_mean"]),
                _f(cpu.get("workers")),
                _f(cpu.get("api"), 3),
                _f(cpu.get("postgres"), 3) if "postgres" in cpu else "–",
                _f(cpu.get("s3"), 3) if "s3" in cpu else "–",
                _f(r["cores_used"]),
                _pct(r["foreign_load"]),
            ]
        )
    head = [
        "stack",
        "workers (processes × slots)",
        "wall s",
        "jobs/min",
        "÷ 1 × `--slots 1`",
        "job s (claim → COMPLETED, mean)",
        "CPU s/job: workers",
        "API",
        "PostgreSQL",
        "S3 server",
        "cores used",
        "other load",
    ]
    out = [
        f"### Throughput: {args.jobs} jobs of {args.seconds:g} s\n",
        common.table(head, rows),
    ]
    rows = []
    for r in runs:
        cpu = r["cpu_per_job_s"].get("workers", 0.0)
        rows.append(
            [
                STACK_LABEL[r["stack"]],
                label(_config(r)),
                f"{r['jobs']} × {r['seconds']:g} s",
                _f(r["wall_s"], 1),
                f"{r['jobs_per_min']:.0f}",
                f"**{r['audio_s_per_s']:.1f}**",
                _f(r["job_s_mean"]),
                _f(cpu),
                _f(60 * cpu / r["seconds"]),
                _pct(r["foreign_load"]),
            ]
        )
    head = [
        "stack",
        "workers (processes × slots)",
        "batch",
        "wall s",
        "jobs/min",
        "audio s per wall s",
        "job s (mean)",
        "worker CPU s/job",
        "worker CPU s per audio minute",
        "other load",
    ]
    out += ["### Cost against file length\n", common.table(head, rows)]
    return out


def render_load(load: list[dict[str, Any]]) -> list[str]:
    rows = []
    what = {
        "status": "`GET /v1/queue/requests/{id}/status`, COMPLETED job",
        "submit": "`POST /v1/queue/audio/stems` (jobs only queue)",
    }
    for r in load:
        if "error" in r:
            rows.append([STACK_LABEL[r["stack"]], what[r["endpoint"]], str(r["apis"])])
            rows[-1] += [str(r["conns"]), f"failed: {r['error'][:80]}"] + ["–"] * 6
            continue
        cores = r["cores"]
        rows.append(
            [
                STACK_LABEL[r["stack"]],
                what[r["endpoint"]],
                str(r["apis"]),
                str(r["conns"]),
                f"**{r['rps']:.0f}**",
                _f(r["p50_ms"], 1),
                _f(r["p99_ms"], 1),
                f"{r['requests']} ({r['non_2xx']})",
                _f(cores.get("api")),
                _f(cores.get("postgres")) if "postgres" in cores else "–",
                _pct(r["foreign_load"]),
            ]
        )
    head = [
        "stack",
        "endpoint",
        "API processes",
        "connections per process",
        "requests/s (sum)",
        "p50 ms",
        "p99 ms",
        "requests (non-2xx)",
        "API cores",
        "PostgreSQL cores",
        "other load",
    ]
    return ["### Request rates under load\n", common.table(head, rows)]


def interpret(payload: dict[str, Any], args: Any) -> list[str]:
    """What limits the figures, from the figures."""
    lines = []
    short = [r for r in payload["throughput"] if r["seconds"] == args.seconds]
    for stack in dict.fromkeys(r["stack"] for r in short):
        rs = {_config(r): r for r in short if r["stack"] == stack}
        if (1, 1, None) not in rs:
            continue
        one = rs[(1, 1, None)]
        best = max(rs.values(), key=lambda r: r["jobs_per_min"])
        ups = ", ".join(
            f"{label(c)} {rs[c]['jobs_per_min'] / one['jobs_per_min']:.2f}×"
            for c in sorted(rs, key=_order)
            if c != (1, 1, None)
        )
        lines.append(
            f"- {STACK_LABEL[stack]}: {one['jobs_per_min']:.0f} jobs/min on one worker "
            f"({one['cores_used']:.2f} cores busy)"
            + (f"; against it {ups}" if ups else "")
            + ". The best is "
            f"{label(_config(best))} at {best['jobs_per_min']:.0f} jobs/min, "
            f"{best['cores_used']:.2f} of the {os.cpu_count()} cores busy."
        )
        two = rs.get((2, 1, None))
        c1, c2 = one["cpu_per_job_s"]["workers"], two and two["cpu_per_job_s"]["workers"]
        if two is not None and c2 is not None and c2 > 1.3 * c1:
            lines.append(
                f"  Two one-slot workers cost {c2:.2f} worker CPU s per job against {c1:.2f} s "
                "for one: each one-slot worker's child runs torch on all the cores, so N of "
                "them put N × cores threads on the cores; the extra CPU time is most likely "
                "those threads spin-waiting for each other (OpenMP), not more work."
            )
        lines += split_lines(rs, one)
        cpu = sum(best["cpu_per_job_s"].values())
        bound = 60 * (os.cpu_count() or 1) / cpu
        lines.append(
            f"  There a job costs {cpu:.2f} CPU s in all "
            f"({best['cpu_per_job_s']['workers']:.2f} s of it in the worker trees): with every "
            f"core on it this machine could do at most {bound:.0f} jobs/min, so the batch ran "
            f"at {100 * best['jobs_per_min'] / bound:.0f} % of its CPU bound."
        )
    long = [r for r in payload["throughput"] if r["seconds"] != args.seconds]
    for r in long:
        same = [s for s in short if s["stack"] == r["stack"] and _config(s) == _config(r)]
        if not same:
            continue
        s = same[0]
        if max(s["foreign_load"] or 0.0, r["foreign_load"] or 0.0) > service.CONTENDED:
            continue  # slowed by other work: no cost model from it
        c_s, c_l = s["cpu_per_job_s"]["workers"], r["cpu_per_job_s"]["workers"]
        slope = (c_l - c_s) / (r["seconds"] - s["seconds"])
        fixed = c_s - slope * s["seconds"]
        lines.append(
            f"- Length ({STACK_LABEL[r['stack']]}, {label(_config(r))}): a "
            f"{r['seconds']:g} s job costs the workers {c_l:.2f} CPU s against {c_s:.2f} s for "
            f"{s['seconds']:g} s, i.e. about {fixed:.2f} s per job plus {60 * slope:.2f} s per "
            f"audio minute; audio processed per wall second goes from "
            f"{s['audio_s_per_s']:.1f} to {r['audio_s_per_s']:.1f}."
        )
    busy = [r for r in [*payload["throughput"], *payload["load"]] if "error" not in r]
    if any((r["foreign_load"] or 0.0) > service.CONTENDED for r in busy):
        lines.append(
            f"- Rows with *other load* above {100 * service.CONTENDED:.0f} % ran while other "
            "work used that share of the machine: they are slowed by it (lower bounds), and the "
            "length lines above leave them out."
        )
    ok = [r for r in payload["load"] if "error" not in r]
    for stack in dict.fromkeys(r["stack"] for r in ok):
        for endpoint in ("status", "submit"):
            runs = [r for r in ok if r["stack"] == stack and r["endpoint"] == endpoint]
            if not runs:
                continue
            one = max((r for r in runs if r["apis"] == 1), key=lambda r: r["rps"], default=None)
            two = max((r for r in runs if r["apis"] == 2), key=lambda r: r["rps"], default=None)
            if one is None or two is None:
                continue
            db = two["cores"].get("postgres")
            lines.append(
                f"- {STACK_LABEL[stack]}, {endpoint}: at best {one['rps']:.0f} requests/s on one "
                f"API process ({one['cores']['api']:.2f} cores), {two['rps']:.0f} on two "
                f"({two['rps'] / one['rps']:.2f}×, {two['cores']['api']:.2f} cores"
                + (f", PostgreSQL {db:.2f}" if db is not None else "")
                + ")."
            )
    return lines


def split_lines(rs: dict[Config, dict[str, Any]], one: dict[str, Any]) -> list[str]:
    """Whether ``--threads`` (cores ÷ processes) recovers what N one-slot workers lost: each
    split row against the same processes with the default threads and against one worker."""
    lines = []
    for (n, slots, threads), split in sorted(rs.items(), key=lambda kv: _order(kv[0])):
        plain = rs.get((n, slots, None))
        if threads is None or plain is None or slots != 1:
            continue
        r_one = split["jobs_per_min"] / one["jobs_per_min"]
        r_plain = split["jobs_per_min"] / plain["jobs_per_min"]
        cheaper = split["cpu_per_job_s"]["workers"] < one["cpu_per_job_s"]["workers"]
        if r_one >= 1.05:
            verdict = (
                "splitting the threads more than recovers the loss, it beats one worker ("
                + ("less worker CPU per job, " if cheaper else "")
                + f"{split['cores_used']:.2f} cores busy against {one['cores_used']:.2f})"
            )
        elif r_one >= 0.95:
            verdict = "splitting the threads recovers the throughput of one worker"
        elif r_plain >= 1.1:
            verdict = (
                f"splitting the threads recovers part of the loss ({100 * r_one:.0f} % of one "
                "worker's throughput)"
            )
        else:
            verdict = "splitting the threads does not recover the loss"
        busy = max(split["foreign_load"] or 0.0, plain["foreign_load"] or 0.0)
        caveat = (
            f" (other load up to {100 * busy:.0f} % on these rows: their figures are lower bounds)"
            if busy > service.CONTENDED
            else ""
        )
        if any(bool(split.get("earlier_run")) != bool(r.get("earlier_run")) for r in (one, plain)):
            caveat += "; the rows it is compared with come from a different run of this script"
        lines.append(
            f"  {label((n, slots, threads))}: {split['jobs_per_min']:.0f} jobs/min, "
            f"{r_plain:.2f}× the {plain['jobs_per_min']:.0f} of {label((n, slots, None))} "
            f"and {r_one:.2f}× the {one['jobs_per_min']:.0f} of one worker "
            f"({split['cpu_per_job_s']['workers']:.2f} worker CPU s per job against "
            f"{plain['cpu_per_job_s']['workers']:.2f} and "
            f"{one['cpu_per_job_s']['workers']:.2f}): {verdict}{caveat}."
        )
    return lines


def render(payload: dict[str, Any], args: Any) -> str:
    out = ["## Scale-out", "", common.header("scale.py")]
    if service.DIRTY:
        out.append(
            "*The working tree had uncommitted changes under `src/` when this ran (the scale-out "
            "pieces were under development): the figures describe that tree.*\n"
        )
    env = ", ".join(f"`{k}={v}`" for k, v in service.SERVER_ENV.items())
    out.append(
        "All processes on this one machine, over loopback: one `demixer serve --workers 0` "
        "(API only) and N `demixer worker --slots 1` processes (stock settings: poll 0.5 s, "
        "heartbeat 2 s; without `--threads` each one-slot worker's separation child uses all "
        f"{os.cpu_count()} cores' torch threads) sharing one data dir (signing key, and "
        "storage when it is local) and one database; per-key limits lifted on every process "
        f"({env}). PostgreSQL is Debian's, started by `tests/servers.py` with `fsync=off`, "
        "`synchronous_commit=off` (a throwaway test cluster: commits cost less than on a "
        "durable server); the S3 server is `rclone serve s3` from the same file. Each "
        "measurement gets a fresh database (and bucket). `spleeter-2stems`, "
        "`stems: [vocals]` (vocals + residual), two 16-bit wav outputs; inputs are 16-bit "
        "stereo 44.1 kHz wavs of the MUSDB18 excerpt's mix looped, each upload made unique "
        "(the low byte of its last sample) so the result cache never answers.\n"
    )
    out.append(
        "*Throughput*: the workers are warmed by one job each (their children have torch "
        "imported and the model loaded), the batch is uploaded (untimed), then submitted back "
        "to back; *wall s* runs from the first submit to the last job's `completed` log line. "
        "*CPU s/job*: CPU seconds of each process tree (psutil) over the batch, per job; "
        "*cores used*: all of them per wall second (with this client); *other load*: CPU "
        "used meanwhile by processes not part of the run, as a share of the machine. The file "
        f"length rows repeat the batch with {args.long_seconds:g} s files with the "
        "configuration that had the most jobs per minute (and, on the first stack, with one "
        "worker too). On the first stack the batch also runs on one `demixer worker --slots "
        f"{' / '.join(map(str, args.slots)) or '–'}` process: with several slots the worker "
        "gives each slot's child cores ÷ slots torch threads, where N one-slot processes each "
        "use all the cores."
        + (
            " The `--threads` rows split the cores among the N one-slot processes instead "
            f"(`--threads` = max(1, {os.cpu_count()} ÷ N); `DEMIXER_THREADS` does the same)."
            if any(r.get("threads") for r in payload["throughput"])
            else ""
        )
        + "\n"
    )
    if payload["throughput"]:
        out += render_throughput(payload["throughput"], args)
    if payload["load"]:
        out.append(
            f"*Load*: `wrk -t1 -c<connections> -d{args.load_seconds:g}s --latency` per API "
            "process (with two API processes, two `wrk` at once, one per port, and their "
            "rates summed; p50/p99 are the worse of the two). The generators run on the same 2 "
            "cores as the servers and the database, so these are floors. *API cores*, "
            "*PostgreSQL cores*: CPU seconds of those process trees per wall second. The "
            "submits go to an API-only deployment with no worker, so every 202 adds a queued "
            "job. The load runs on the stacks in `--load-stack` only: neither endpoint touches "
            "storage (the S3 server used no CPU during a submit run), so PostgreSQL + S3 "
            "answers them like PostgreSQL + local.\n"
        )
        out += render_load(payload["load"])
    for name, why in payload.get("skipped", {}).items():
        out.append(f"*{STACK_LABEL[name]} not measured: {why}.*\n")
    if payload.get("from_earlier_run"):
        out.append(
            f"*{payload['from_earlier_run']} of the measurements above come from an earlier run "
            "of this script (`--keep-quieter`), possibly of an earlier commit than the one named "
            "above: of each measurement made in both runs, the one with less other load on the "
            "machine is shown; those made in only one run are shown as they are.*\n"
        )
    lines = interpret(payload, args)
    if lines:
        out += ["### Reading the figures\n", "\n".join(lines) + "\n"]
    out.append(
        "Reproduce: `.venv/bin/python benchmarks/scale.py` (options: `--stack pg-s3 pg sqlite`, "
        "`--load-stack pg sqlite`, `--slots 2`, `--no-split-threads`, `--only-split`, "
        f"`--workers 1 2 4`, `--jobs {args.jobs}`, `--seconds {args.seconds:g}`, "
        f"`--long-seconds {args.long_seconds:g}`, `--long-jobs {args.long_jobs}`). All figures: "
        "`benchmarks/.cache/scale.json`.\n"
    )
    return "\n".join(out)


if __name__ == "__main__":
    main(sys.argv[1:])
