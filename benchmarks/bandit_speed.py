"""Forward speed of demixer's Bandit v2 and BandIt networks next to MSST's, on the same weights.

The catalogue's ``bandit-v2-dnr`` and ``bandit-plus-dnr`` configs
(``tests/data/msst/config_dnr_bandit_v2_mus64.yaml`` and
``config_dnr_bandit_bsrnn_multi_mus64.yaml``, MSST's own) are each built full size twice, as
MSST's module (PyPI ``msst`` 0.1.0, imported through ``tests/bandit_reference.py``, which stands
in for the torchaudio transforms and Lightning base class they import) and as demixer's, with
the same random weights (the checkpoints are not downloaded here). Both separate the same
input, one ``chunk_size`` chunk (8 s at 48 kHz; 6 s at 44.1 kHz) (batch 1: what MSST's
``demix`` feeds on CPU), in float32, alternating for ``--rounds`` rounds with
``torch.set_num_threads(2)``; reported are the median and best seconds of network time per
second of audio, the largest difference between the outputs, and the FLOPs per second of audio
(every linear map and GRU, counted by hooks on the reference's modules) against this machine's
measured peak (``speed.py``'s probe).

    .venv/bin/python benchmarks/bandit_speed.py [--rounds 2] [--arch bandit_v2 bandit]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import common
from arch_speed import alternating_rounds
from demixer.models.arch import build_model
from demixer.models.msst.config import load_yaml
from speed import machine_gflops

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "msst"


@dataclass(frozen=True)
class Network:
    title: str
    entry: str  # the catalogue entry whose config it is
    config: Path
    section: str  # the config section MSST builds it from
    reference: str  # bandit_reference's name for MSST's class
    section_name: str  # RESULTS.md's


NETWORKS = {
    "bandit_v2": Network(
        "Bandit v2", "bandit-v2-dnr", DATA / "config_dnr_bandit_v2_mus64.yaml", "kwargs",
        "Bandit", "arch-bandit",
    ),
    "bandit": Network(
        "BandIt", "bandit-plus-dnr", DATA / "config_dnr_bandit_bsrnn_multi_mus64.yaml",
        "model", "ScriptedBandIt", "arch-bandit-plus",
    ),
}  # fmt: skip


def pair(arch: str) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    import bandit_reference

    net = NETWORKS[arch]
    config = load_yaml(net.config.read_text("utf-8"), str(net.config))
    torch.manual_seed(0)
    ref = getattr(bandit_reference, net.reference)(**config[net.section]).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    instruments = config["training"]["instruments"]
    ours = build_model(arch, config[net.section], config["audio"], instruments, None)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    parser.add_argument(
        "--arch", nargs="+", choices=list(NETWORKS), default=list(NETWORKS),
        help="the networks to time, each in a RESULTS.md section of its own",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(2)
    probe = machine_gflops(quiet_wait=10.0)
    peak = max(v for k, v in probe.items() if k.startswith("fp32"))
    for arch in args.arch:
        measure(arch, args.rounds, peak, write=not args.no_write)


def measure(arch: str, rounds: int, peak: float, *, write: bool) -> None:
    net = NETWORKS[arch]
    ref, ours, config = pair(arch)
    rate, samples = config["audio"]["sample_rate"], config["audio"]["chunk_size"]
    seconds = samples / rate
    wave = 0.1 * torch.randn(1, 2, samples)
    times, loads, outputs, macs = alternating_rounds(ref, ours, wave, rounds, seconds)
    diff = (outputs["demixer"] - outputs["MSST"]).abs().max().item()
    peak_out = outputs["MSST"].abs().max().item()
    per_s = 2 * macs / 1e9 / seconds
    rows = []
    base = statistics.median(times["MSST"])
    for system, ts in times.items():
        med = statistics.median(ts)
        rows.append([
            system, f"{med:.2f} ({min(ts):.2f})", f"{base / med:.2f}x", f"{per_s / med:.0f}",
            f"{100 * per_s / med / peak:.0f} %", f"{statistics.median(loads[system]):.2f}",
        ])  # fmt: skip
    params = sum(p.numel() for p in ref.parameters())
    body = (
        f"## {net.title} network (`benchmarks/bandit_speed.py`)"
        + common.KIND_TITLES[common.cpu_kind()]
        + "\n\n"
        + common.header("bandit_speed.py", "msst")
        + f"\nThe network's forward pass alone (STFT to inverse STFT), float32, batch 1, 2 "
        f"threads, on one whole {seconds:g}-s chunk at {rate} Hz, the catalogue's "
        f"`{net.entry}` config full size ({params / 1e6:.1f} M parameters) with random "
        "weights loaded into both modules (the checkpoint is not downloaded here), input white "
        f"noise at -20 dBFS. MSST = `msst` 0.1.0's `{arch}` module; demixer = "
        f"`demixer.models.arch.bandit`. {rounds} alternating rounds after one untimed "
        "forward of MSST's (counting its FLOPs); *s per audio s* is median (best); *other "
        "load* is the median share of "
        "both cores used by other processes meanwhile.\n\n"
        f"{2 * macs / 1e9:.0f} GFLOP per {seconds:g} s chunk: **{per_s:.0f} GFLOP "
        f"per second of audio**, nearly all in its 16 bidirectional GRU layers. demixer vs "
        f"MSST: largest difference {diff:.1e} (output peak {peak_out:.2f}).\n\n"
        + common.table(
            ["system", "s per audio s", "speed vs MSST", "GFLOP/s", "of peak", "other load"], rows
        )
        + f"\nPeak of this machine on 2 threads (`speed.py`'s probe, best kernel): fp32 "
        f"{peak:.0f} GFLOP/s.\n\n"
        "What the figures say: demixer computes MSST's numbers at MSST's speed. Both run "
        "torch's own GRUs, which take nearly all the time, and no arithmetic is left out "
        "without changing the result (a chunk's 2 channels are already one batch in both). "
        "The config's 4 overlapping chunks put each second of sound through the network four "
        "times, so a whole separation costs about 4x the figure above per second of audio "
        "(`--quality fast`: 2x). demixer runs it in float32 everywhere (its bf16 agreement is "
        "not measured).\n"
    )
    print(body)
    if write:
        common.write_section(common.kind_section(net.section_name), body)


if __name__ == "__main__":
    main()
