"""Forward speed and peak memory of demixer's Apollo network next to MSST's, on the same weights.

The catalogue's ``apollo-lq-mp3`` config (``tests/data/msst/config_apollo.yaml``, MSST's own) is
built full size twice, as MSST's module (PyPI ``msst`` 0.1.0, ``msst.models.look2hear``, the
authors' code) and as demixer's, with the same random weights (the checkpoint is not downloaded
here). Both restore the same input, one ``chunk_size`` chunk (3 s at 44.1 kHz; batch 1), in
float32, alternating for ``--rounds`` rounds with ``torch.set_num_threads(2)``; reported are the
median and best seconds of network time per second of audio, the largest difference between the
outputs, the FLOPs per second of audio (every convolution, counted by hooks on the reference's
modules; the attention across 80 bands adds under 1 %) against this machine's measured peak
(``speed.py``'s probe), and each system's peak RSS for one chunk, measured in a process of its
own (``ru_maxrss``, the model included).

    .venv/bin/python benchmarks/apollo_speed.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import common
from arch_speed import alternating_rounds
from demixer.models.arch import build_model
from demixer.models.msst.config import load_yaml
from speed import machine_gflops

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "msst" / "config_apollo.yaml"
COLUMNS = [
    "system", "s per audio s", "speed vs MSST", "GFLOP/s", "of peak", "peak GB", "other load"
]  # fmt: skip


def pair() -> tuple[torch.nn.Module, torch.nn.Module, dict[str, Any]]:
    from msst.models.look2hear.models import BaseModel

    config = load_yaml(CONFIG.read_text("utf-8"), str(CONFIG))
    torch.manual_seed(0)
    ref = BaseModel.apollo(**config["model"]).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    training = config["training"]
    ours = build_model(
        "apollo", config["model"], config["audio"], training["instruments"],
        training["target_instrument"],
    )  # fmt: skip
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours, config


def peak(system: str) -> None:
    """In a process of its own: one chunk through ``system``'s network; prints its peak RSS."""
    torch.set_num_threads(2)
    ref, ours, config = pair()
    net = ref if system == "MSST" else ours  # both built, as in the timed run
    wave = 0.1 * torch.randn(1, 2, config["audio"]["chunk_size"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.inference_mode():
        net(wave)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": after, "before_mb": before}))


def peak_mb(system: str) -> float:
    run = subprocess.run(
        [sys.executable, __file__, "--peak", system], capture_output=True, text=True, check=True
    )
    return float(json.loads(run.stdout.strip().splitlines()[-1])["peak_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    parser.add_argument("--peak", choices=["MSST", "demixer"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        peak(args.peak)
        return
    torch.set_num_threads(2)
    probe = machine_gflops(quiet_wait=10.0)
    top = max(v for k, v in probe.items() if k.startswith("fp32"))
    # First, while this process is small: Linux keeps a process's peak RSS across the exec that
    # starts a child, so a child started later would report this one's peak.
    peaks = {system: peak_mb(system) for system in ("MSST", "demixer")}
    ref, ours, config = pair()
    rate, samples = config["audio"]["sample_rate"], config["audio"]["chunk_size"]
    seconds = samples / rate
    wave = 0.1 * torch.randn(1, 2, samples)
    times, loads, outputs, macs = alternating_rounds(ref, ours, wave, args.rounds, seconds)
    diff = (outputs["demixer"] - outputs["MSST"]).abs().max().item()
    peak_out = outputs["MSST"].abs().max().item()
    per_s = 2 * macs / 1e9 / seconds
    base = statistics.median(times["MSST"])
    rows = []
    for system, ts in times.items():
        med = statistics.median(ts)
        rows.append([
            system, f"{med:.2f} ({min(ts):.2f})", f"{base / med:.2f}x", f"{per_s / med:.0f}",
            f"{100 * per_s / med / top:.0f} %", f"{peaks[system] / 1024:.2f}",
            f"{statistics.median(loads[system]):.2f}",
        ])  # fmt: skip
    body = (
        "## Apollo network (`benchmarks/apollo_speed.py`)"
        + common.KIND_TITLES[common.cpu_kind()]
        + "\n\n"
        + common.header("apollo_speed.py", "msst")
        + f"\nThe network's forward pass alone (STFT to inverse STFT), float32, batch 1, 2 "
        f"threads, on one whole {seconds:g}-s chunk at {rate} Hz, the catalogue's "
        "`apollo-lq-mp3` config full size (16.5 M parameters) with random weights loaded into "
        "both modules (the checkpoint is not downloaded here), input white noise at -20 dBFS. "
        "MSST = `msst` 0.1.0's `apollo` module (the authors' code); demixer = "
        f"`demixer.models.arch.apollo`. {args.rounds} alternating rounds after one untimed "
        "forward of MSST's (counting its FLOPs); *s per audio s* is median (best); *peak GB* "
        "the peak RSS of a process building the two networks and running one chunk through "
        "that one; *other load* the median share of both cores used by other processes "
        "meanwhile.\n\n"
        f"{2 * macs / 1e9:.0f} GFLOP per {seconds:g} s chunk: **{per_s:.0f} GFLOP "
        "per second of audio**, nearly all in its 1x1 convolutions. demixer vs MSST: largest "
        f"difference {diff:.1e} (output peak {peak_out:.2f}).\n\n"
        + common.table(COLUMNS, rows)
        + f"\nPeak of this machine on 2 threads (`speed.py`'s probe, best kernel): fp32 "
        f"{top:.0f} GFLOP/s.\n\n"
        "What the figures say: both spend most of their time in torch's 1x1 convolutions, "
        "the same arithmetic in both (demixer's edge is in what surrounds them); demixer "
        "computes MSST's numbers, its frames and bands a slice at a time (less memory: the "
        "8x-wide MLP never holds a whole chunk). The config's 4 overlapping chunks put each "
        "second of sound through the network four times (`--quality fast`: 2x). demixer runs "
        "it in float32 everywhere (its bf16 agreement is not measured).\n"
    )
    print(body)
    if not args.no_write:
        common.write_section(common.kind_section("arch-apollo"), body)


if __name__ == "__main__":
    main()
