"""The GPU check of demixer's MSST families, prepared to run in one call on a CUDA machine.

Issue 11 asks for the GPU paths (cuda, fp16/bf16, batch size) to be exercised on a machine with
a GPU when one is lent; none has been yet. This script is that run, ready to go: on each family
at full size (the networks ``msst_speed.py`` builds: seeded random weights in MSST's own classes,
from the published configs), with MSST's ``demix`` and demixer's ``MsstBackend`` in one process
on the same GPU:

* **exactness**: demixer with ``DEMIXER_PRECISION=fp32`` against MSST's ``demix`` with its
  autocast off, TF32 off for both, on an input shorter than one chunk (3 s) and on the whole
  ``--seconds`` input: the peak difference of the stems (the tests' CPU bound is 1e-4);
* **speed**: the whole input through MSST's ``demix`` as it runs on CUDA by default (fp16
  autocast), MSST in fp32, demixer's default precision (bf16 where the GPU has it, fp16 else;
  MDX23C fp32) and demixer fp32, each timed after a warm-up, synchronised, at batch 1 and at the
  config's ``inference.batch_size`` (both systems read the same config, so the batch also
  decides the same fade windows);
* **agreement**: each low-precision output against MSST's fp32 output (SNR, dB; the issue asks
  40 dB or better);
* **memory**: ``torch.cuda.max_memory_allocated`` of each run.

On a device machine, ``benchmarks/gpu_check.sh`` runs it: ``fetch`` here gets the wheels that
machine lacks (MSST and its imports, PyAV) and the input, ``run COMMIT`` there installs them
and runs this script on a 30 s input (the 12 s excerpt looped).

Here, to check the script itself (shrunk networks, small inputs, CPU):

    .venv/bin/python benchmarks/gpu_check.py --device cpu --shrink --seconds 12

It prints a Markdown table and writes ``gpu_check.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import yaml  # type: ignore[import-untyped]
from torch.nn.attention import SDPBackend, sdpa_kernel

import common
from demixer.models.msst.backend import MsstBackend, backend_for
from demixer.models.msst.config import read_config
from msst_speed import MODELS, Msst, agreement, model_files

SHORT_SECONDS = 3.0  # under every family's chunk: the one-chunk path


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """TF32 for CUDA matmuls and convolutions on or off (restored after)."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(
    device: torch.device, run: Callable[[], dict[str, np.ndarray]]
) -> tuple[dict[str, np.ndarray], float, float | None]:
    """``run()``'s stems, its seconds and its peak GPU memory (MB; None on a CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    started = time.perf_counter()
    stems = run()
    _sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return stems, seconds, peak


def _config_with_batch(config: Path, batch: int, tmp: Path) -> Path:
    """A copy of ``config`` with ``inference.batch_size: batch``."""
    data = yaml.load(config.read_text(), Loader=yaml.FullLoader)  # MSST's own configs
    data["inference"]["batch_size"] = batch
    path = tmp / f"{config.stem}-batch{batch}.yaml"
    path.write_text(yaml.dump(data))
    return path


def _without_flash(config: Path, tmp: Path) -> Path:
    """``config`` with ``model.flash_attn: false`` where it sets it: MSST's flash path allows only
    the fused kernels, which take no fp32 on CUDA ("No available kernel"), so its fp32 runs use
    the plain attention, the same numbers (the tests check flash on and off agree)."""
    data = yaml.load(config.read_text(), Loader=yaml.FullLoader)
    if not data.get("model", {}).get("flash_attn"):
        return config
    data["model"]["flash_attn"] = False
    path = tmp / f"{config.stem}-noflash.yaml"
    path.write_text(yaml.dump(data))
    return path


def _demixer(
    arch: str, config: Path, checkpoint: Path, device: torch.device, precision: str
) -> MsstBackend:
    parsed = read_config(config, arch=arch)
    return backend_for(parsed, checkpoint, device=str(device), precision=precision)


def _peak_diff(ref: dict[str, np.ndarray], est: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(ref[s] - est[s]).max()) for s in ref)


def _input(args: argparse.Namespace) -> np.ndarray:
    """``(2, n)`` float32: ``--wav`` looped to ``--seconds``, or the excerpt's mix of that length
    (cached in ``.cache``)."""
    wav = args.wav or common.long_mix(args.seconds, "wav")
    mix = sf.read(str(wav), dtype="float32", always_2d=True)[0].T
    n = round(args.seconds * common.RATE)
    return np.ascontiguousarray(np.tile(mix, (1, -(-n // mix.shape[1])))[:, :n])


def _speed_runs(
    arch: str, config: Path, checkpoint: Path, device: torch.device, mix: np.ndarray, tmp: Path
) -> list[dict[str, Any]]:
    """Each system on ``mix`` with ``config``: seconds, peak GPU memory, agreement."""
    msst = Msst(arch, _without_flash(config, tmp), checkpoint, device)
    msst_amp = Msst(arch, config, checkpoint, device)
    default = _demixer(arch, config, checkpoint, device, "auto")
    fp32 = _demixer(arch, config, checkpoint, device, "fp32")
    systems: list[tuple[str, str, Callable[[], dict[str, np.ndarray]]]] = [
        ("MSST demix, fp32", "fp32", lambda: msst.separate(mix, amp=False)),
        ("demixer, fp32", "fp32", lambda: fp32.separate(mix)),
    ]
    if device.type == "cuda":  # MSST's autocast runs on CUDA only
        amp = ("MSST demix, fp16 autocast (its CUDA default)", "fp16",
               lambda: msst_amp.separate(mix, amp=True))  # fmt: skip
        systems.insert(1, amp)
    if default.precision != "fp32":
        systems.append(("demixer, default", default.precision, lambda: default.separate(mix)))
    entries: list[dict[str, Any]] = []
    reference: dict[str, np.ndarray] | None = None
    for label, precision, run in systems:
        run()  # warm-up: cuDNN's algorithm search, kernels loaded, caches filled
        stems, seconds, peak = _timed(device, run)
        if reference is None:
            reference = stems  # MSST fp32, the first system
        entries.append(
            {
                "system": label,
                "precision": precision,
                "seconds": seconds,
                "peak_gpu_mb": peak,
                "snr_vs_msst_fp32_db": agreement(reference, stems),
            }
        )
    return entries


def check_model(
    name: str, args: argparse.Namespace, device: torch.device, tmp: Path
) -> dict[str, Any]:
    """Exactness, speed, agreement and memory of one family (see the module docstring)."""
    config, checkpoint, arch = model_files(name, shrink=args.shrink)
    long_mix = _input(args)
    short_mix = np.ascontiguousarray(long_mix[:, : round(SHORT_SECONDS * common.RATE)])
    batch_cfg = read_config(config, arch=arch).batch_size
    result: dict[str, Any] = {"label": MODELS[name][2], "arch": arch, "runs": []}

    # Exactness: true fp32 on both sides.
    with _tf32(False):
        msst = Msst(arch, _without_flash(config, tmp), checkpoint, device)
        ours = _demixer(arch, config, checkpoint, device, "fp32")
        for label, mix in (("short", short_mix), ("long", long_mix)):
            ref = msst.separate(mix, amp=False)
            est = ours.separate(mix)
            result[f"fp32_peak_diff_{label}"] = _peak_diff(ref, est)
            result[f"fp32_peak_{label}"] = max(float(np.abs(v).max()) for v in ref.values())
            if device.type == "cuda":
                # MSST's attention without flash is the plain product and softmax; ours asks
                # scaled_dot_product_attention, which takes a fused kernel for fp32 on CUDA.
                # The same with the plain (math) kernel tells the kernels' rounding apart.
                with sdpa_kernel(SDPBackend.MATH):
                    est = ours.separate(mix)
                result[f"fp32_math_sdpa_peak_diff_{label}"] = _peak_diff(ref, est)
        del msst, ours
    exact = {k: v for k, v in result.items() if k.startswith("fp32_")}
    print(json.dumps({"model": name, **exact}), flush=True)

    for batch in sorted({1, batch_cfg}):
        cfg = _config_with_batch(config, batch, tmp)
        for entry in _speed_runs(arch, cfg, checkpoint, device, long_mix, tmp):
            entry = {**entry, "batch": batch, "realtime": args.seconds / entry["seconds"]}
            result["runs"].append(entry)
            print(json.dumps({"model": name, **entry}), flush=True)
    return result


def cross_device(
    name: str, args: argparse.Namespace, device: torch.device, tmp: Path
) -> dict[str, Any]:
    """fp32 (TF32 off) on ``device`` against the CPU, for MSST and for demixer, on the short
    input: how far the reference itself moves between devices, beside demixer's distance to it."""
    config, checkpoint, arch = model_files(name, shrink=args.shrink)
    mix = np.ascontiguousarray(_input(args)[:, : round(SHORT_SECONDS * common.RATE)])
    cpu = torch.device("cpu")
    with _tf32(False):
        out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        for where in (device, cpu):
            msst = Msst(arch, _without_flash(config, tmp), checkpoint, where)
            out["msst", where.type] = msst.separate(mix, amp=False)
            ours = _demixer(arch, config, checkpoint, where, "fp32")
            out["ours", where.type] = ours.separate(mix)
    row: dict[str, Any] = {
        "model": name,
        "msst_gpu_vs_msst_cpu": _peak_diff(out["msst", "cpu"], out["msst", device.type]),
        "ours_gpu_vs_ours_cpu": _peak_diff(out["ours", "cpu"], out["ours", device.type]),
        "ours_cpu_vs_msst_cpu": _peak_diff(out["msst", "cpu"], out["ours", "cpu"]),
        "ours_gpu_vs_msst_gpu": _peak_diff(out["msst", device.type], out["ours", device.type]),
    }
    print(json.dumps(row), flush=True)
    return row


def render(results: dict[str, Any]) -> str:
    lines = [
        f"GPU check: {results['device']}, torch {results['torch']}, "
        f"{results['seconds']:g} s input, commit {results['commit']}",
        "",
        "| model | system | precision | config batch | s | x realtime | peak GPU MB "
        "| dB vs MSST fp32 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, model in results["models"].items():
        for run in model["runs"]:
            peak = "-" if run["peak_gpu_mb"] is None else f"{run['peak_gpu_mb']:.0f}"
            agreement = run["snr_vs_msst_fp32_db"]
            db = "exact" if agreement > 200 else f"{agreement:.1f}"
            lines.append(
                f"| {name} | {run['system']} | {run['precision']} | {run['batch']} "
                f"| {run['seconds']:.2f} | {run['realtime']:.1f} | {peak} | {db} |"
            )
    lines.append("")
    lines.append("fp32 exactness (peak difference, demixer against MSST, TF32 off):")
    for name, error in results.get("failed", {}).items():
        lines.append(f"- {name}: failed, {error}")
    for name, model in results["models"].items():
        line = (
            f"- {name}: {model['fp32_peak_diff_short']:.2e} on {SHORT_SECONDS:g} s, "
            f"{model['fp32_peak_diff_long']:.2e} on {results['seconds']:g} s "
            f"(stems' peak {model['fp32_peak_long']:.2f})"
        )
        if "fp32_math_sdpa_peak_diff_long" in model:
            line += (
                f"; with the math attention kernel {model['fp32_math_sdpa_peak_diff_short']:.2e}"
                f" and {model['fp32_math_sdpa_peak_diff_long']:.2e}"
            )
        lines.append(line)
    return "\n".join(lines)


SECTION_HEAD = """## MSST models on a GPU (`benchmarks/gpu_check.py`)

*{when}; commit {commit}; {device}; torch {torch} (the device machine's), msst 0.1.0.*
*Reproduce on a machine with a GPU: `bash benchmarks/gpu_check.sh fetch` here, then
`bash benchmarks/gpu_check.sh run COMMIT` there; `.venv/bin/python benchmarks/gpu_check.py
--results DIR` writes this section from the JSON it leaves.*

Each family {size}
through MSST's `demix` and demixer's MSST backend in one process on the same GPU, on
{seconds:g} s of the excerpt looped. Each system runs once to warm up (cuDNN's algorithm search,
kernels loaded), then once timed, synchronised; *config batch* is `inference.batch_size` (MSST
batches by it; demixer on a GPU too), 1 and the config's. *dB vs MSST fp32*: SNR of the stems
against MSST's fp32 stems in the same row group. *peak GPU MB*: `torch.cuda.max_memory_allocated`.
demixer's default is bf16 except MDX23C (fp32; see docs/models.md). One run: the times of
these short inputs (0.3-3 s) moved by up to 25 % between two runs on the same machine.
"""


def write_results(folder: Path) -> None:
    """RESULTS.md's ``msst-gpu`` block from ``folder``'s JSON (see :data:`SECTION_HEAD`)."""
    results = json.loads((folder / "gpu_check.json").read_text())
    stamp = time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime((folder / "gpu_check.json").stat().st_mtime)
    )
    size = (
        "shrunk (`--shrink`: a check of the script, not figures of the published networks)"
        if results.get("shrunk")
        else "at full size (the published configs, seeded random weights, as in the sections above)"
    )
    head = SECTION_HEAD.format(when=stamp, size=size, **results)
    body = head + "\n" + render(results).split("\n", 2)[2]
    cross_file = folder / "gpu_check_cross.json"
    if cross_file.is_file():
        cross = json.loads(cross_file.read_text())
        body += (
            "\n\nfp32 on the GPU against fp32 on the CPU (peak difference, TF32 off, "
            f"{SHORT_SECONDS:g} s, commit {cross['commit']}):\n\n"
            "| model | MSST GPU vs MSST CPU | demixer GPU vs demixer CPU "
            "| demixer CPU vs MSST CPU | demixer GPU vs MSST GPU |\n|---|---:|---:|---:|---:|\n"
        )
        for row in cross["rows"]:
            body += (
                f"| {row['model']} | {row['msst_gpu_vs_msst_cpu']:.2e} "
                f"| {row['ours_gpu_vs_ours_cpu']:.2e} | {row['ours_cpu_vs_msst_cpu']:.2e} "
                f"| {row['ours_gpu_vs_msst_gpu']:.2e} |\n"
            )
    common.write_section("msst-gpu", body)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--wav", type=Path, help="input to loop to --seconds (default: the excerpt)")
    ap.add_argument("--shrink", action="store_true", help="shrunk networks (a check of the script)")
    ap.add_argument("--out", type=Path, default=common.CACHE)
    ap.add_argument("--commit", help="the commit measured (where the tree has no .git)")
    ap.add_argument("--cross", action="store_true", help="only fp32 on the device against the CPU")
    ap.add_argument(
        "--results",
        type=Path,
        metavar="DIR",
        help="write RESULTS.md's GPU section from DIR's gpu_check.json (and gpu_check_cross.json)",
    )
    args = ap.parse_args(argv)
    if args.results:
        write_results(args.results)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --device cpu")
    if args.cross:
        with common.tempdir("gpu-check") as tmp:
            rows = [cross_device(name, args, device, Path(tmp)) for name in args.models]
        args.out.mkdir(parents=True, exist_ok=True)
        cross = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "commit": args.commit or common.git_rev(), "rows": rows}  # fmt: skip
        (args.out / "gpu_check_cross.json").write_text(json.dumps(cross, indent=1))
        return
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "seconds": args.seconds,
        "commit": args.commit or common.git_rev(),
        "shrunk": args.shrink,
        "models": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with common.tempdir("gpu-check") as tmp:
        for name in args.models:
            try:
                results["models"][name] = check_model(name, args, device, Path(tmp))
            except Exception as exc:  # one family's failure is a finding; the others still run
                traceback.print_exc()
                results.setdefault("failed", {})[name] = f"{type(exc).__name__}: {exc}"
            # after each family, so that a run stopped at its time limit keeps what it measured
            (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    print(render(results))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
