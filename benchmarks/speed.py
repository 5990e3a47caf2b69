"""Separation speed of demixer's spleeter-2stems next to the two Spleeter peers.

Input: 180 s of real music (the MUSDB18 excerpt's mix looped), stereo 44.1 kHz float32 wav,
written once to .cache. Every run is a fresh subprocess; the systems alternate (A B C D, A B C D,
...) so that drifts of the machine hit them alike. Each system uses both cores
(``torch.set_num_threads(2)``; TensorFlow's default pools). Reported: the separation call alone
(model loading excluded) as real-time factor = audio seconds / wall seconds, the model load, and
the whole subprocess end to end (interpreter start, imports, load, wav read, separation, wav
write); median and best over the rounds. demixer's CLI is timed end to end.

The TensorFlow pipeline builds its graph and restores its checkpoint inside its first
``separate()`` call, so its runner separates the same input twice and times the second call;
its load time is the first call minus the second. Its end-to-end time therefore contains one
extra separation: the "end to end" column subtracts it (the raw wall time is in the JSON).

Also computed: the FLOPs of the Spleeter U-Net forward pass, counted analytically per layer, and
this machine's measured fp32 throughput (torch matmul and conv2d on 2 threads): their ratio
bounds the real-time factor any implementation of this model can reach here.

    .venv/bin/python benchmarks/speed.py [--rounds 3] [--seconds 180] [--systems ...] [--no-cli]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import common

# --- FLOPs of the Spleeter U-Net ----------------------------------------------------------

T_FRAMES, F_BINS, HOP = 512, 1024, 1024


def unet_layers() -> list[tuple[str, int]]:
    """(layer, multiply-accumulates) of one U-Net forward on a 2 x 512 x 1024 magnitude segment.

    Encoder: six 5x5 stride-2 'same' convolutions 2->16->32->64->128->256->512; a conv's MACs =
    output H x W x Cin x Cout x 25. Decoder: six 5x5 stride-2 transposed convolutions, input
    channels doubled by the skip concatenation from the second on; a transposed conv's MACs =
    input H x W x Cin x Cout x 25 (each input pixel scatters one 5x5xCout kernel). Last, a 4x4
    dilated conv 1->2 at full resolution. BatchNorm, activations, the skip concatenations and
    the final mask multiply are elementwise (< 0.1 %) and left out.
    """
    layers = []
    h, w = T_FRAMES, F_BINS
    chans = [2, 16, 32, 64, 128, 256, 512]
    for i in range(6):
        h, w = h // 2, w // 2
        layers.append(
            (f"conv{i + 1} {chans[i]}->{chans[i + 1]} 5x5/2", h * w * chans[i] * chans[i + 1] * 25)
        )
    # decoder: (in channels, out channels); input resolution starts at 8 x 16
    dec = [(512, 256), (512, 128), (256, 64), (128, 32), (64, 16), (32, 1)]
    for i, (cin, cout) in enumerate(dec):
        layers.append((f"deconv{i + 1} {cin}->{cout} 5x5/2", h * w * cin * cout * 25))
        h, w = h * 2, w * 2
    layers.append(("conv7 1->2 4x4 dil 2", h * w * 1 * 2 * 16))
    return layers


def flops_per_audio_second() -> dict[str, float]:
    macs_unet = sum(m for _, m in unet_layers())
    flops_segment = 2 * 2 * macs_unet  # 2 FLOPs per MAC, two U-Nets (vocals, accompaniment)
    seg_seconds = T_FRAMES * HOP / common.RATE
    return {
        "macs_unet": macs_unet,
        "gflops_segment": flops_segment / 1e9,
        "segment_s": seg_seconds,
        "gflops_per_audio_s": flops_segment / seg_seconds / 1e9,
    }


PROBE = r"""
import json, time, torch
torch.set_num_threads(2)
torch.manual_seed(0)
def best(fn, flops, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return flops / min(times) / 1e9
out = {}
from demixer.models.precision import resolve_precision  # demixer's own bf16 decision
emulated = resolve_precision("auto", torch.device("cpu")) != "bf16"
for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    if name == "bf16" and emulated:
        # no native bf16 (AVX2): about 1 % of fp32's rate; the full probe would take an hour
        n = 512
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out["bf16 matmul 512² (emulated)"] = best(lambda: a @ b, 2 * n**3, 2)
        continue
    n = 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    out[f"{name} matmul 2048²"] = best(lambda: a @ b, 2 * n**3, 20)
    with torch.inference_mode():
        # a Spleeter layer: encoder conv2 (16->32, 5x5, stride 2) on a batch of 4 segments
        x = torch.randn(4, 16, 256, 512, dtype=dtype)
        conv = torch.nn.Conv2d(16, 32, 5, stride=2, padding=2).to(dtype)
        f = 2 * 4 * 128 * 256 * 16 * 32 * 25
        out[f"{name} conv 16→32 5×5/2"] = best(lambda: conv(x), f, 10)
        # a compute-heavy layer: 3x3 256->256 on 64 x 128
        y = torch.randn(2, 256, 64, 128, dtype=dtype)
        conv2 = torch.nn.Conv2d(256, 256, 3, padding=1).to(dtype)
        f = 2 * 2 * 64 * 128 * 256 * 256 * 9
        out[f"{name} conv 3×3 256→256"] = best(lambda: conv2(y), f, 10)
print(json.dumps(out))
"""


def machine_gflops(quiet_wait: float = 120.0) -> dict[str, float]:
    """fp32 GFLOP/s on 2 threads, measured in a fresh process (best of several runs)."""
    common.wait_quiet(quiet_wait)
    proc = subprocess.run(
        [str(common.MAIN_PY), "-c", PROBE], capture_output=True, text=True, check=True
    )
    return {k: float(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


# --- the timed runs -----------------------------------------------------------------------


def run_cli(src: Path, work: Path) -> dict[str, Any]:
    out = work / "cli-out"
    cmd = [str(common.demixer_cli()), "separate", str(src), "-m", common.MODEL, "-o", str(out)]
    cmd += ["--format", "wav", "--bit-depth", "32f"]
    with common.CpuWatch() as watch:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    _rmtree(out)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        return {"error": f"exit {proc.returncode}: {tail}", "wall_s": watch.wall}
    return {"wall_s": watch.wall, "foreign_load": watch.foreign}


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


CONTENDED = 0.10  # other processes' share of the CPU above which a timing is re-run


def _contended(res: dict[str, Any]) -> bool:
    load = res.get("foreign_load")
    return "error" not in res and load is not None and load > CONTENDED


def one_run(system: common.System, src: Path, work: Path) -> dict[str, Any]:
    out = work / f"out-{system.key}"
    res = common.run_job(system, [(src, out)], warm=True, workdir=work, timeout=3600)
    _rmtree(out)
    if "error" in res:
        return res
    item = res["items"][0]
    sep = item["separate_s"]
    load = res["load_s"]
    extra = 0.0
    if "first_call_s" in item:  # TF: the first call = graph build + restore + separation
        load += item["first_call_s"] - sep
        extra = sep  # the second, timed call is not part of a normal end-to-end run
    return {
        "separate_s": sep,
        "load_s": load,
        "import_s": res["import_s"],
        "e2e_s": res["wall_s"] - extra,
        "outputs_written_s": res["process_s"] - extra,  # runner start to outputs written
        "wall_s": res["wall_s"],
        "peak_rss_mb": res["peak_rss_mb"],
        "foreign_load": res.get("foreign_load"),
        "precision": res.get("info", {}).get("precision", system.precision),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--systems", nargs="*", default=list(common.SYSTEMS))
    ap.add_argument("--no-cli", action="store_true")
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        help="re-run a timing this many times when other processes competed for the CPU",
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each run, wait up to this many seconds for the machine to be idle",
    )
    args = ap.parse_args(argv)

    src = common.long_mix(args.seconds, "wav")
    chosen = common.systems(args.systems)
    keys = [s.key for s in chosen]
    labels = {s.key: s.label for s in chosen}
    with_cli = "demixer" in keys and not args.no_cli
    if with_cli:
        keys.append("demixer-cli")
        labels["demixer-cli"] = (
            "demixer CLI, default level (`demixer separate … --format wav --bit-depth 32f`)"
        )
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    tasks: list[tuple[str, Any]] = [(s.key, s) for s in chosen]
    if with_cli:
        tasks.append(("demixer-cli", None))
    with common.tempdir("speed") as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            for key, system in tasks:
                for attempt in range(args.retries + 1):
                    quiet = common.wait_quiet(args.quiet_wait)
                    print(f"speed: round {r + 1}/{args.rounds} {key}", flush=True)
                    res = one_run(system, src, work) if system else run_cli(src, work)
                    res["round"], res["attempt"], res["waited_quiet"] = r + 1, attempt, quiet
                    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}
                    print("   ", json.dumps(shown), flush=True)
                    runs[key].append(res)
                    if not _contended(res):
                        break

    gflops = machine_gflops(args.quiet_wait)
    flops = flops_per_audio_second()
    summary = summarize(runs, args.seconds, flops, gflops)
    common.CACHE.mkdir(exist_ok=True)
    payload = {"runs": runs, "summary": summary, "flops": flops, "machine_gflops": gflops}
    (common.CACHE / "speed.json").write_text(json.dumps(payload, indent=1))
    common.write_section("speed", render(summary, labels, keys, args, flops, gflops))
    return payload


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), min(values)


def summarize(
    runs: dict[str, list[dict[str, Any]]],
    seconds: float,
    flops: dict[str, float],
    gflops: dict[str, float],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        errors = [r["error"] for r in rs if "error" in r]
        clean = [r for r in ok if not _contended(r)]
        n_all = len(ok)
        if clean:  # timings that other processes slowed down are kept in the JSON only
            ok = clean
        if not ok:
            out[key] = {"error": errors[0] if errors else "not run"}
            continue
        s: dict[str, Any] = {"n": len(ok), "n_all": n_all, "errors": errors}
        if "separate_s" in ok[0]:
            med, best = _stats([r["separate_s"] for r in ok])
            s["sep_median_s"], s["sep_best_s"] = med, best
            s["rtf_median"], s["rtf_best"] = seconds / med, seconds / best
            s["load_median_s"] = statistics.median(r["load_s"] for r in ok)
            s["import_median_s"] = statistics.median(r["import_s"] for r in ok)
            s["achieved_gflops"] = flops["gflops_per_audio_s"] * seconds / best
            s["precision"] = ok[0].get("precision", "fp32")
            s["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
        loads = [r["foreign_load"] for r in ok if r.get("foreign_load") is not None]
        s["foreign_max"] = max(loads) if loads else None
        e2e = [r.get("e2e_s", r["wall_s"]) for r in ok]
        s["e2e_median_s"], s["e2e_best_s"] = _stats(e2e)
        s["e2e_rtf_median"] = seconds / s["e2e_median_s"]
        out[key] = s
    bounds = {}
    for prec in ("fp32", "bf16"):
        vals = [v for k, v in gflops.items() if k.startswith(prec)]
        if vals:
            bounds[prec] = {
                "peak_gflops": max(vals),
                "rtf_bound": max(vals) / flops["gflops_per_audio_s"],
            }
    out["_bound"] = bounds
    return out


LEVELS = (("demixer-fast", "fast"), ("demixer", "balanced"), ("demixer-best", "best"))
FLOOR_RTF = 40.0  # the default level must stay at least this fast on 2 cores


def levels_note(summary: dict[str, Any]) -> str:
    """One line per quality level: its separation speed against the floor for the default."""
    parts = []
    for key, level in LEVELS:
        s = summary.get(key, {})
        if "rtf_median" in s:
            ok = "above" if s["rtf_median"] >= FLOOR_RTF else "**below**"
            parts.append(
                f"`{level}` {s['rtf_median']:.1f}x real time ({ok} {FLOOR_RTF:.0f}x), peak RSS "
                f"{s['peak_rss_mb'] * 1024 * 1024 / 1e9:.2f} GB"
            )
    if not parts:
        return ""
    return (
        "**Quality levels** (separation alone, median; *peak RSS*: the runner process's "
        "`ru_maxrss`, model and 180 s of input and output included): "
        + "; ".join(parts)
        + ". The default level is the one whose separation stays at or above "
        f"{FLOOR_RTF:.0f}x on these 2 cores.\n"
    )


def _of_bound(s: dict[str, Any], bound: dict[str, dict[str, float]]) -> str:
    b = bound.get(s["precision"])
    return "–" if b is None else f"{100 * s['rtf_best'] / b['rtf_bound']:.0f} %"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def render(
    summary: dict[str, Any],
    labels: dict[str, str],
    keys: list[str],
    args: argparse.Namespace,
    flops: dict[str, float],
    gflops: dict[str, float],
) -> str:
    bound = summary["_bound"]
    out = ["## Speed", "", common.header("speed.py")]
    out.append(
        f"Input: {args.seconds:.0f} s stereo 44.1 kHz float32 wav (the excerpt's mix looped). "
        f"{args.rounds} rounds, systems alternating, each run a fresh subprocess on 2 threads. "
        "RTF = audio seconds / wall seconds (higher is faster). *separation*: the separation "
        "call alone, model already loaded; *end to end*: the whole subprocess (interpreter "
        "start, imports, model load, wav read, separation, wav write). For the TensorFlow "
        "pipeline the model load is its first `separate()` call minus a second, timed call on "
        "the same input (graph building and checkpoint restore happen lazily inside the first "
        "call), and that second call is not counted in its end-to-end time. Its interpreter "
        "exit (TensorFlow teardown) varies from 1 to ~20 s and is part of its end-to-end "
        "time (`outputs_written_s` in `.cache/speed.json` leaves it out).\n"
    )
    head = [
        "system",
        "separation RTF median (best)",
        "separation s median (best)",
        "model load s",
        "end to end s median (best)",
        "end-to-end RTF",
        "peak RSS GB",
        "GFLOP/s achieved (best)",
        "prec.",
        "of bound",
        "runs kept (max other load)",
    ]
    rows = []
    for key in keys:
        s = summary.get(key, {})
        if "error" in s:
            rows.append([labels[key], f"failed: {s['error'][:120]}", *["–"] * 9])
            continue
        if "rtf_median" in s:
            rows.append(
                [
                    labels[key],
                    f"{s['rtf_median']:.1f} ({s['rtf_best']:.1f})",
                    f"{s['sep_median_s']:.1f} ({s['sep_best_s']:.1f})",
                    f"{s['load_median_s']:.2f}",
                    f"{s['e2e_median_s']:.1f} ({s['e2e_best_s']:.1f})",
                    f"{s['e2e_rtf_median']:.1f}",
                    f"{s['peak_rss_mb'] * 1024 * 1024 / 1e9:.2f}",
                    f"{s['achieved_gflops']:.0f}",
                    s["precision"],
                    _of_bound(s, bound),
                    f"{s['n']}/{s['n_all']} ({_pct(s['foreign_max'])})",
                ]
            )
        else:
            rows.append(
                [
                    labels[key],
                    "–",
                    "–",
                    "–",
                    f"{s['e2e_median_s']:.1f} ({s['e2e_best_s']:.1f})",
                    f"{s['e2e_rtf_median']:.1f}",
                    "–",
                    "–",
                    "–",
                    f"{s['n']}/{s['n_all']} ({_pct(s['foreign_max'])})",
                ]
            )
    out.append(common.table(head, rows))
    out.append(levels_note(summary))
    out.append(
        "*runs kept*: before each run the harness waits (up to `--quiet-wait` s) for the "
        "machine to idle, and measures the CPU time used meanwhile by processes other than the "
        f"benchmarked one (*other load*, share of both cores). A run with other load above "
        f"{100 * CONTENDED:.0f} % is repeated (up to `--retries` times) and left out of the "
        "figures when cleaner runs exist (all runs are in `.cache/speed.json`); a high "
        "*max other load* means that system's figures are pessimistic.\n"
    )
    layers = unet_layers()
    total = sum(m for _, m in layers)
    out.append(
        "**Compute bound.** MACs of one U-Net forward on a 2 × 512 × 1024 magnitude segment, "
        "per layer (6 strided 5×5 convs, 6 strided 5×5 transposed convs, one 4×4 dilated "
        "conv; elementwise layers left out):\n"
    )
    out.append(
        common.table(
            ["layer", "GMAC", "share"],
            [[name, f"{m / 1e9:.3f}", f"{100 * m / total:.1f} %"] for name, m in layers]
            + [["**total (one U-Net)**", f"**{total / 1e9:.2f}**", "100 %"]],
        )
    )
    out.append(
        f"Two U-Nets (vocals, accompaniment) per segment: {flops['gflops_segment']:.1f} GFLOP "
        f"(2 FLOP per MAC) for {flops['segment_s']:.2f} s of audio (512 hops of 1024 samples), "
        f"i.e. **{flops['gflops_per_audio_s']:.2f} GFLOP per second of audio** (STFTs, masks "
        "and resampling are a few % on top and not counted; inputs are padded to whole "
        "segments, which *GFLOP/s achieved* does not credit). Measured throughput of this "
        "machine on 2 threads (torch, best of several runs):\n"
    )
    out.append(common.table(["kernel", "GFLOP/s"], [[k, f"{v:.0f}"] for k, v in gflops.items()]))
    parts = [
        f"{prec}: best {b['peak_gflops']:.0f} GFLOP/s, so **RTF ≤ {b['rtf_bound']:.0f}**"
        for prec, b in bound.items()
    ]
    out.append(
        "No implementation of this model can separate faster than the best kernel rate allows: "
        + "; ".join(parts)
        + ". *of bound* is each system's best separation RTF against the bound for the "
        "precision its U-Net runs in (*prec.*; the peers run fp32; demixer's `auto` picks "
        "bf16 on CPUs with native bf16).\n"
    )
    return "\n".join(out)


if __name__ == "__main__":
    main(sys.argv[1:])
