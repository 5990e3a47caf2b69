"""MDX-Net (UVR's ONNX models): demixer against audio-separator 0.47.1's inference, side by side.

No MDX-Net weights can be fetched here, so the network is a stand-in: a random-weight ONNX file
with Kim_Vocal_2's I/O and STFT settings (dim_f 3072, 256 frames of 1024, n_fft 7680)
and KUIELab's ConvTDFNet layout at the size of the published files (5 levels, 3 convs per block,
48 channels per level, TDF bottleneck 8: ~16.7 M weights, a 66.7 MB file like Kim_Vocal_2.onnx),
built by ``tests/mdx_onnx.py``. Both systems run it with onnxruntime on the same threads.

- **demixer**: ``Separator(...).separate_file`` (decode, engine windows, write a wav), UVR's
  default overlap (chunks stepped by ``chunk - n_fft``).
- **audio-separator**: its ``MDXSeparator.demix`` loop (``tests/uvr_reference.py``) on the same
  array, read whole from the same wav, with the overlap that gives the same step; only the
  separation pass is timed (its ``separate`` also runs a second, model-free STFT pass and writes
  files, which is left out in its favour).

Speed runs alternate the two systems, each in a fresh process; the table gives medians.
Memory (peak RSS of the process) is measured on 1- and 10-minute files with a light network
of the same I/O, since what grows with length is the audio arrays, not the network; the
stand-in's own working memory is the "speed" table's peak RSS.

Run: ``.venv/bin/python benchmarks/mdx_net.py [--runs 2] [--seconds 24]``.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

import common

sys.path.insert(0, str(common.ROOT / "tests"))
KIM = {"dim_f": 3072, "dim_t": 256, "n_fft": 7680, "segment_size": 256, "compensate": 1.043}
CHUNK = 1024 * 255
STANDIN = {"g": 48, "levels": 5, "layers": 3, "bn": 8, "gain": 0.5}
LIGHT = {"g": 2, "levels": 1, "layers": 1, "bn": 64, "gain": 0.9}
SYSTEMS = ("demixer", "audio-separator")


def network(kind: str) -> Path:
    """The stand-in (``standin``) or light (``light``) network file, built once into .cache."""
    from mdx_onnx import tfc_tdf_onnx

    path = common.CACHE / f"mdx-kim-{kind}.onnx"
    if not path.is_file():
        common.CACHE.mkdir(parents=True, exist_ok=True)
        shape = STANDIN if kind == "standin" else LIGHT
        tfc_tdf_onnx(path.with_suffix(".part"), dim_f=3072, dim_t=256, seed=7, **shape)
        path.with_suffix(".part").rename(path)
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(system: str, model: Path, wav: Path, out: Path) -> dict[str, Any]:
    """One separation in this process: seconds, peak RSS and the stem written to ``out``."""
    if system == "demixer":
        from demixer.engine import Separator

        separator = Separator(register(), model_path=model)
        cpu = cpu_seconds()
        started = time.perf_counter()
        result = separator.separate_file(wav, out.parent, ["vocals"], template="{stem}.{ext}")
        seconds = time.perf_counter() - started
        result.paths["vocals"].rename(out)
    else:
        from uvr_reference import UvrMdx, uvr_default_overlap

        uvr = UvrMdx(
            model,
            dim_f=KIM["dim_f"],
            n_fft=KIM["n_fft"],
            segment_size=KIM["segment_size"],
            overlap=uvr_default_overlap(KIM["n_fft"], CHUNK),
        )
        cpu = cpu_seconds()
        started = time.perf_counter()
        mix = sf.read(str(wav), dtype="float32", always_2d=True)[0].T
        stem = uvr.demix(np.ascontiguousarray(mix)) * KIM["compensate"]
        seconds = time.perf_counter() - started
        sf.write(str(out), stem.T, common.RATE, subtype="FLOAT")
    return {"seconds": seconds, "cpu_s": cpu_seconds() - cpu, "peak_rss_mb": peak_rss_mb()}


def register() -> str:
    """A registry entry for the stand-in (run with ``model_path``); returns its id."""
    from demixer.models import registry
    from mdx_onnx import mdx_spec

    spec = mdx_spec("bench-mdx", dict(KIM))
    registry._BY_ID[spec.id] = spec
    return spec.id


def seams(model: Path, seconds: float) -> dict[str, float]:
    """Engine windows against one UVR pass over the whole input (``MdxNetBackend.stream``, which
    tests/test_mdx_net.py holds to audio-separator's output), in dB of signal to difference."""
    from demixer.engine import Separator
    from demixer.models.mdx_net import MdxNetBackend

    separator = Separator(register(), model_path=model)
    backend = separator.backend
    assert isinstance(backend, MdxNetBackend)
    # Windows of two chunk steps (the engine's have ten) put a seam every 11.5 s instead of
    # every 57.5 s; a seam itself (a one-chunk cross-fade between two windows) is the same.
    backend.window = 2 * backend.params.step + backend.overlap
    mix = sf.read(str(common.long_mix(seconds, "wav")), dtype="float32", always_2d=True)[0].T
    blocks = (mix[:, i : i + 65536] for i in range(0, mix.shape[1], 65536))
    whole = np.concatenate([b["vocals"] for b in backend.stream(blocks)], axis=1)
    windowed = separator.separate_array(mix, common.RATE, ["vocals"])["vocals"]
    hop, fade = backend.window - backend.overlap, backend.overlap
    seam = np.zeros(mix.shape[1], bool)
    for start in range(hop, mix.shape[1], hop):
        seam[start : start + fade] = True

    def snr(mask: np.ndarray) -> float:
        ref, diff = whole[:, mask], windowed[:, mask] - whole[:, mask]
        return float(10 * np.log10(np.sum(ref**2) / max(np.sum(diff**2), 1e-30)))

    return {
        "window_s": backend.window / common.RATE,
        "fade_s": fade / common.RATE,
        "seams": float(seam.sum() / fade),
        "whole_db": snr(np.ones_like(seam)),
        "seam_db": snr(seam),
        "outside_peak": float(np.abs(windowed[:, ~seam] - whole[:, ~seam]).max()),
    }


def flops_per_chunk(model: Path) -> float:
    """FLOPs (2 per multiply-add) of one network call at batch 1, counted from the graph:
    every Conv, ConvTranspose and MatMul (the rest is a few % and not counted)."""
    import onnx
    from onnx import shape_inference

    graph = shape_inference.infer_shapes(onnx.load(str(model))).graph
    shapes = {
        v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
        for v in (*graph.value_info, *graph.input, *graph.output)
    }
    weights = {init.name: list(init.dims) for init in graph.initializer}
    macs = 0
    for node in graph.node:
        if node.op_type == "Conv":  # output elements x (in channels x kernel)
            w = weights[node.input[1]]
            macs += int(np.prod(shapes[node.output[0]])) * w[1] * w[2] * w[3]
        elif node.op_type == "ConvTranspose":  # input elements x (out channels x kernel)
            w = weights[node.input[1]]
            macs += int(np.prod(shapes[node.input[0]])) * w[1] * w[2] * w[3]
        elif node.op_type == "MatMul":
            macs += int(np.prod(shapes[node.input[0]])) * weights[node.input[1]][1]
    return 2.0 * macs


def compute(model: Path, repeats: int = 2) -> dict[str, Any]:
    """The stand-in's FLOPs and onnxruntime's CPU seconds per chunk at batch 1 and 2
    (alternated), as demixer's backend opens it."""
    from demixer.models.mdx_net import MdxParams, OnnxNetwork

    net = OnnxNetwork(model, MdxParams.from_arch_params(KIM, model_id="bench-mdx"))
    x = np.random.default_rng(0).standard_normal((2, 4, 3072, 256)).astype(np.float32)
    net(x[:1])  # warm-up
    per_chunk: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for batch in (1, 2):
            before = cpu_seconds()
            net(x[:batch])
            per_chunk[batch].append((cpu_seconds() - before) / batch)
    return {
        "gflop_chunk": flops_per_chunk(model) / 1e9,
        **{f"batch{b}_cpu_s": statistics.median(v) for b, v in per_chunk.items()},
    }


def run(system: str, model: Path, wav: Path, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", system, str(model), str(wav), str(out)]
    with common.CpuWatch() as watch:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=common._env())
    if proc.returncode:
        raise SystemExit(f"{system} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["foreign"] = watch.foreign
    return result


RAW = common.CACHE / "mdx-net-results.json"
#: The measured parts, each of which ``--only`` reruns alone.
PARTS = ("speed", "memory", "compute", "seams")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    # 12 s: both systems run the same three chunks (for some lengths UVR runs one more, wholly
    # in its padding, which demixer skips: a gain this comparison leaves out).
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--lengths", default="60,600", help="memory runs, seconds")
    parser.add_argument("--seam-seconds", type=float, default=20.0)
    parser.add_argument(
        "--only",
        choices=(*PARTS, "report"),
        help="rerun one part and keep the others' last figures (report: rerun none)",
    )
    args = parser.parse_args()
    raw: dict[str, Any] = json.loads(RAW.read_text()) if args.only and RAW.is_file() else {}
    standin, light = network("standin"), network("light")
    with common.tempdir("mdx") as tmp:
        outs = {s: Path(tmp) / f"{s}.wav" for s in SYSTEMS}
        if args.only in (None, "speed"):
            speed: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
            wav = common.long_mix(args.seconds, "wav")
            for i in range(args.runs):
                for system in SYSTEMS if i % 2 == 0 else SYSTEMS[::-1]:
                    speed[system].append(run(system, standin, wav, outs[system]))
                    print(system, speed[system][-1], flush=True)
            ours, ref = (sf.read(str(outs[s]), dtype="float32")[0] for s in SYSTEMS)
            raw["speed"] = {
                "seconds": args.seconds,
                "runs": speed,
                "agreement": float(np.abs(ours - ref).max()),
            }
        if args.only in (None, "memory"):
            raw["memory"] = {}
            for length in (int(x) for x in args.lengths.split(",")):
                long_wav = common.long_mix(length, "wav")
                raw["memory"][str(length)] = {
                    s: run(s, light, long_wav, outs[s])["peak_rss_mb"] for s in SYSTEMS
                }
                print(length, raw["memory"][str(length)], flush=True)
                long_wav.unlink()
    if args.only in (None, "compute"):
        raw["compute"] = compute(standin)
        print(raw["compute"], flush=True)
    if args.only in (None, "seams"):
        raw["seams"] = {"seconds": args.seam_seconds, **seams(standin, args.seam_seconds)}
        print(raw["seams"], flush=True)
    RAW.write_text(json.dumps(raw, indent=1))
    # --only on a fresh checkout (no earlier run's figures in .cache) has measured one part: it
    # is kept in RAW, and the section is written once every part has figures.
    missing = [part for part in PARTS if part not in raw]
    if missing:
        print(
            f"RESULTS.md not rewritten: no figures yet for {', '.join(missing)} "
            f"(run `--only PART` for each, or once without --only); kept in {RAW}"
        )
        return
    write(raw)


def kernel_rates() -> dict[str, float]:
    """Best fp32 and bf16 kernel GFLOP/s on 2 threads, from the Speed section of RESULTS.md
    (``speed.py`` measures them on a quiet machine; this script's runs rarely get one)."""
    text = common.RESULTS.read_text("utf-8") if common.RESULTS.is_file() else ""
    rates: dict[str, float] = {}
    for precision, value in re.findall(r"^\| (fp32|bf16) [^|]+\| ([0-9.]+) \|$", text, re.M):
        rates[precision] = max(rates.get(precision, 0.0), float(value))
    return rates


def write(raw: dict[str, Any]) -> None:
    speed, memory, seam, comp = raw["speed"], raw["memory"], raw["seams"], raw["compute"]
    gflop_audio_s = comp["gflop_chunk"] * common.RATE / (CHUNK - KIM["n_fft"])  # per step
    rates = kernel_rates()
    fp32_peak, bf16_peak = rates.get("fp32", float("nan")), rates.get("bf16", float("nan"))
    # Both cores busy for cpu_s / 2 seconds per chunk: the rate the network ran at.
    achieved = comp["gflop_chunk"] / (comp["batch1_cpu_s"] / 2)
    runs: dict[str, list[dict[str, Any]]] = speed["runs"]
    wall = {s: statistics.median(r["seconds"] for r in runs[s]) for s in SYSTEMS}
    cpu = {s: statistics.median(r.get("cpu_s", float("nan")) for r in runs[s]) for s in SYSTEMS}
    rows = []
    for system in SYSTEMS:
        foreign = [r["foreign"] for r in runs[system] if r["foreign"] is not None]
        rows.append(
            [
                system,
                ", ".join(common.fmt(r["seconds"], 0) for r in runs[system]),
                common.fmt(speed["seconds"] / wall[system], 2),
                common.fmt(wall["audio-separator"] / wall[system], 2) + "x",
                common.fmt(cpu[system], 1),
                common.fmt(cpu["audio-separator"] / cpu[system], 2) + "x",
                common.fmt(max(r["peak_rss_mb"] for r in runs[system]), 0),
                common.fmt(statistics.median(foreign), 2) if foreign else "–",
            ]
        )
    head = ["system", "wall s per run", "x real time", "wall speed-up", "CPU s", "CPU speed-up"]
    mem_rows = [
        [f"{int(length) // 60} min"] + [common.fmt(memory[length][s], 0) for s in SYSTEMS]
        for length in sorted(memory, key=int)
    ]
    now = time.strftime("%Y-%m-%d %H:%M %Z")
    body = f"""## MDX-Net (`benchmarks/mdx_net.py`)

*{now}; commit {common.git_rev()}; {common.machine()}; onnxruntime \
{common.pip_version(common.MAIN_PY, "onnxruntime")}, audio-separator \
{common.pip_version(common.MAIN_PY, "audio-separator")}.*

*Reproduce: `.venv/bin/python benchmarks/mdx_net.py` (not part of `make bench`).*

{(__doc__ or "").split("Run:")[0].strip()}

### Speed: {speed["seconds"]:.0f} s of music (the MUSDB excerpt looped), Kim_Vocal_2-sized stand-in

{common.table([*head, "peak RSS MB", "foreign load"], rows)}
*x real time* (seconds of audio per second) and the speed-ups are medians. *foreign load*
is the share of the machine's CPU that other processes used during the runs (0 = quiet): this
machine is shared by several engineers, so
the wall-clock seconds are noisy; the CPU seconds (the process's own, all threads) much less
so. The two outputs differ by at most {speed["agreement"]:.1e} (peak).

### Where the time goes

The stand-in does {comp["gflop_chunk"]:.0f} GFLOP per 5.92 s chunk (convolutions and TDF matrix
products; chunks start every 5.75 s), i.e. **{gflop_audio_s:.0f} GFLOP per second of audio**.
onnxruntime spends {comp["batch1_cpu_s"]:.1f} CPU s on a chunk (2 threads), i.e. with both
cores to itself it would run at about {achieved:.0f} GFLOP/s: {100 * achieved / fp32_peak:.0f} %
of the best fp32 kernel rate the Speed section measured on this machine ({fp32_peak:.0f} GFLOP/s
on 2 threads; bf16: {bf16_peak:.0f}), so in fp32 the network is at the machine's limit. Both systems
call the same onnxruntime kernels, so no fp32 implementation can be much faster than either:
demixer's lead comes from around the network (one pass, nothing recomputed, no chunk run
inside the padding), and a 2x speed-up needs bf16. Running the graph op by op with torch in
bf16 (AMX here; a throwaway interpreter, not kept) took 7.2 CPU s per chunk against
onnxruntime's 7.7 on the same day: layout copies and unfused ReLUs ate what the bf16
convolutions saved, so the network stays on onnxruntime in fp32.

Batching chunks does not pay either: {comp["batch1_cpu_s"]:.1f} CPU s per chunk one at a time,
{comp["batch2_cpu_s"]:.1f} two at a time (with twice the activation memory), so demixer runs one.

### Peak memory (RSS, MB) against length, light network of the same I/O

{common.table(["input", *SYSTEMS], mem_rows)}
### Engine windows against one pass over the whole track

demixer's engine separates 63.4 s windows (ten chunk steps plus one chunk) whose chunks lie on
UVR's whole-track grid, and cross-fades consecutive windows over {seam["fade_s"]:.1f} s (one
chunk). Measured here with {seam["window_s"]:.1f} s windows, to get seams in a short input.
Outside the cross-fades its output differs from UVR's by {seam["outside_peak"]:.1e} (peak);
inside them
the chunks next to a seam saw zeros where UVR's saw the neighbouring audio. On
{seam["seconds"]:.0f} s of music through the stand-in ({seam["seams"]:.0f} seam): signal to
difference {seam["whole_db"]:.1f} dB over the whole track,
{seam["seam_db"]:.1f} dB inside the cross-fades. A random network's receptive field is the
trained one's, but its output is not music, so read the dB as the size of the seams' effect,
not as a quality figure.
"""
    common.write_section("mdx-net", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        system, model, wav, out = sys.argv[2:6]
        print(json.dumps(child(system, Path(model), Path(wav), Path(out))))
    else:
        main()
