"""Forward speed of demixer's MDX23C and SCNet networks next to MSST's, on the same weights.

SCNet here is its published sizes (small, large, XL IHF) and its two variants MSST publishes
checkpoints of: ``scnet_masked`` (on XL IHF's config) and ``scnet_tran`` (its own config).

For each architecture a full-size published config is built twice, as MSST's module (PyPI
``msst`` 0.1.0, the reference) and as demixer's (``demixer.models.arch``), with the same random
weights (no published checkpoint is downloaded here). Both separate the same input, one
``audio.chunk_size`` chunk (batch 1: what MSST's ``demix`` feeds on CPU), in four variants: each
module in float32 and under bf16 autocast. The variants alternate (A B C D, A B C D, ...) in
one process with ``torch.set_num_threads(2)``, so that the machine's drifts hit them alike;
reported are the median and best seconds of network time per second of audio over the rounds,
with the other processes' share of the CPU meanwhile (the machine is shared: timings with a high
share are slowed by others, both columns alike).

Also: the largest difference between the two float32 outputs, the SNR of each bf16 output
against the reference's float32 one, the FLOPs of one forward (multiply-accumulates of every
convolution, linear map, LSTM and attention counted by hooks on the reference's modules, 2 FLOPs
each) per second of audio, and the share of this machine's measured peak (``speed.py``'s probe)
reached.

    .venv/bin/python benchmarks/arch_speed.py [--rounds 3] [--archs mdx23c scnet scnet-tran]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace
from typing import Any

import torch

import common
from demixer.models.arch import builder, mdx23c
from demixer.models.arch.scnet_options import TRAN_DEFAULTS
from demixer.models.msst.backend import store_weights_in
from demixer.models.precision import resolve_precision
from speed import machine_gflops

RATE = 44100

# UVR's model_2_stem_full_band_8k.yaml (MDX23C-8KFFT-InstVoc_HQ): the same network as MSST's
# config_vocals_mdx23c.yaml.
MDX23C = {
    "model": {
        "act": "gelu",
        "bottleneck_factor": 4,
        "growth": 128,
        "norm": "InstanceNorm",
        "num_blocks_per_scale": 2,
        "num_channels": 128,
        "num_scales": 5,
        "num_subbands": 4,
        "scale": [2, 2],
    },
    "audio": {"chunk_size": 261120, "dim_f": 4096, "dim_t": 256, "hop_length": 1024,
              "n_fft": 8192, "num_channels": 2, "sample_rate": 44100},
    "instruments": ["Vocals", "Instrumental"],
}  # fmt: skip

# MSST's config_musdb18_scnet.yaml (the official SCNet weights), and _large.
_SCNET = {
    "sources": ["drums", "bass", "other", "vocals"],
    "audio_channels": 2,
    "dims": [4, 32, 64, 128],
    "nfft": 4096,
    "hop_size": 1024,
    "win_size": 4096,
    "normalized": True,
    "band_SR": [0.175, 0.392, 0.433],
    "band_stride": [1, 4, 16],
    "band_kernel": [3, 4, 16],
    "conv_depths": [3, 2, 1],
    "compress": 4,
    "conv_kernel": 3,
    "num_dplayer": 6,
    "expand": 1,
}
SCNET_CHUNK = 485100  # audio.chunk_size: 11 s


def _mdx_pair() -> tuple[torch.nn.Module, torch.nn.Module, int, str]:
    from msst.models.mdx23c_tfc_tdf_v3 import TFC_TDF_net

    cfg = MDX23C
    config = SimpleNamespace(
        model=SimpleNamespace(**cfg["model"]),
        audio=SimpleNamespace(**cfg["audio"]),
        training=SimpleNamespace(instruments=cfg["instruments"], target_instrument=None),
    )
    ref = TFC_TDF_net(config).eval()
    ours = mdx23c.build(cfg["model"], cfg["audio"], cfg["instruments"], None)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours, cfg["audio"]["chunk_size"], "MDX23C-8KFFT-InstVoc_HQ config"


# name -> (config it is, its changes to _SCNET)
SCNET_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "scnet": ("config_musdb18_scnet", {}),
    "scnet-large": (
        "config_musdb18_scnet_large",
        {"dims": [4, 64, 128, 256], "band_SR": [0.225, 0.372, 0.403]},
    ),
    # The catalogue's scnet-xl-ihf (config_musdb18_scnet_xl_more_wide_v5.yaml), as other
    # projects that load it spell its model section out (tests/test_arch_mdx23c_scnet.py).
    "scnet-xl-ihf": (
        "config_musdb18_scnet_xl_more_wide_v5, the catalogue's `scnet-xl-ihf`",
        {
            "dims": [4, 64, 128, 256],
            "band_SR": [0.23, 0.37, 0.4],
            "band_stride": [1, 4, 4],
            "band_kernel": [3, 4, 4],
            "conv_depths": [3, 3, 3],
            "num_dplayer": 8,
        },
    ),
}


# SCNet's masked and transformer variants (MSST's scnet_masked, scnet_tran): name -> (config
# it is, its architecture, the SCNet_VARIANTS entry it changes, its own changes).
SCNET_FAMILY: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    # MSST's SCNet Masked XL IHF (release v1.0.17) is trained on config_musdb18_scnet_xl_ihf;
    # its model section is taken to be XL IHF's (that asset is not reachable here).
    "scnet-masked-xl-ihf": (
        "XL IHF config as `scnet_masked` (MSST's SCNet Masked XL IHF)",
        "scnet_masked",
        "scnet-xl-ihf",
        {},
    ),
    "scnet-tran": (
        "MSST's config_musdb18_scnet_tran (SCNet Tran small)",
        "scnet_tran",
        "scnet",
        TRAN_DEFAULTS,  # MSST's published config sets its constructor's defaults, all of them
    ),
}


def _scnet_pair(variant: str) -> tuple[torch.nn.Module, torch.nn.Module, int, str]:
    from msst.models.scnet import SCNet
    from msst.models.scnet.scnet_masked import SCNet as Masked
    from msst.models.scnet.scnet_tran import SCNet_Tran

    arch, base, own = "scnet", variant, {}
    name = SCNET_VARIANTS[variant][0] if variant in SCNET_VARIANTS else ""
    if variant in SCNET_FAMILY:
        name, arch, base, own = SCNET_FAMILY[variant]
    model = _SCNET | SCNET_VARIANTS[base][1] | own
    reference_class = {"scnet": SCNet, "scnet_masked": Masked, "scnet_tran": SCNet_Tran}[arch]
    ref = reference_class(**model).eval()
    ours = builder(arch)(model, {}, model["sources"], None)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours, SCNET_CHUNK, name


PAIRS: dict[str, Callable[[], tuple[torch.nn.Module, torch.nn.Module, int, str]]] = {
    "mdx23c": _mdx_pair,
    **{variant: partial(_scnet_pair, variant) for variant in (*SCNET_VARIANTS, *SCNET_FAMILY)},
}


class MacCounter:
    """Counts the multiply-accumulates (convolutions, linear maps, LSTMs, GRUs, attention) of
    ``net``'s forwards run inside the ``with`` block."""

    KINDS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.total = 0
        self.handles: list[Any] = []

    def __enter__(self) -> MacCounter:
        self.handles = [
            m.register_forward_hook(self._hook)
            for m in self.net.modules()
            if isinstance(m, (*self.KINDS, torch.nn.LSTM, torch.nn.GRU))
            or type(m).__name__ == "Attend"  # scnet_tran's attention (MSST's bs_roformer one)
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def _hook(self, module: torch.nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0]
        if isinstance(module, torch.nn.ConvTranspose2d):
            k = math.prod(module.kernel_size)
            self.total += x.numel() * module.out_channels // module.groups * k
        elif isinstance(module, torch.nn.Conv1d | torch.nn.Conv2d):
            k = math.prod(module.kernel_size)
            self.total += output.numel() * module.in_channels // module.groups * k
        elif isinstance(module, torch.nn.Linear):
            self.total += output.numel() * module.in_features
        elif type(module).__name__ == "Attend":  # q @ k^T and weights @ v: (b, h, n, e) each
            b, h, n, e = x.shape
            self.total += 2 * b * h * n * n * e
        elif isinstance(module, torch.nn.LSTM | torch.nn.GRU):  # 4 gates, or 3
            n, steps, size = x.shape
            hidden = module.hidden_size
            directions = 2 if module.bidirectional else 1
            gates = 4 if isinstance(module, torch.nn.LSTM) else 3
            self.total += directions * n * steps * gates * hidden * (size + hidden)


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def timed_call(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """``run()`` timed: (seconds, other processes' CPU share meanwhile, what it returned)."""
    busy0, own0, t0 = common._busy_cpu_s(), _cpu_s(), time.perf_counter()
    out = run()
    wall = time.perf_counter() - t0
    busy1, own1 = common._busy_cpu_s(), _cpu_s()
    foreign = float("nan")
    if busy0 is not None and busy1 is not None:
        foreign = max(0.0, busy1 - busy0 - (own1 - own0)) / (wall * (os.cpu_count() or 1))
    return wall, foreign, out


def timed(net: torch.nn.Module, wave: torch.Tensor, bf16: bool) -> tuple[float, float, Any]:
    """(seconds, other processes' CPU share meanwhile, output)."""

    def forward() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out: torch.Tensor = net(wave)
        return out

    wall, foreign, out = timed_call(forward)
    return wall, foreign, out.float()


def alternating_rounds(
    ref: torch.nn.Module, ours: torch.nn.Module, wave: torch.Tensor, rounds: int, seconds: float
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any], int]:
    """MSST's network (``ref``) and demixer's (``ours``) on ``wave`` (``seconds`` of audio),
    float32: one untimed forward of ``ref`` counting its multiply-accumulates, then ``rounds``
    rounds of both in turn. Returns each system's seconds per audio second, other processes'
    load meanwhile, its first output, and the count."""
    times: dict[str, list[float]] = {"MSST": [], "demixer": []}
    loads: dict[str, list[float]] = {"MSST": [], "demixer": []}
    outputs: dict[str, Any] = {}
    with MacCounter(ref) as counter:
        timed(ref, wave, False)  # a first forward, not timed: allocations, and the FLOP count
    for r in range(rounds):
        for system, module in (("MSST", ref), ("demixer", ours)):
            wall, load, out = timed(module, wave, False)
            times[system].append(wall / seconds)
            loads[system].append(load)
            outputs.setdefault(system, out)
            print(f"round {r + 1}: {system} {wall:.1f} s (other load {load:.2f})", flush=True)
    return times, loads, outputs, counter.total


def snr_db(ref: torch.Tensor, est: torch.Tensor) -> float:
    return 10 * math.log10(ref.pow(2).sum().item() / max((est - ref).pow(2).sum().item(), 1e-30))


VARIANTS = (("MSST", "fp32"), ("demixer", "fp32"), ("MSST", "bf16"), ("demixer", "bf16"))


def variants() -> tuple[tuple[str, str], ...]:
    """The variants to time: the bf16 ones only where the CPU has native bf16 (emulated, a
    chunk of MDX23C would take half an hour, and demixer runs fp32 there anyway)."""
    return VARIANTS if common.native_bf16() else VARIANTS[:2]


def run_arch(arch: str, rounds: int, fraction: float) -> dict[str, Any]:
    torch.manual_seed(0)
    ref, ours, chunk, config = PAIRS[arch]()
    if arch == "mdx23c":
        # Whole multiples of 32 frames (the U-Net's 5 halvings): hop * (frames - 1) samples.
        hop = MDX23C["audio"]["hop_length"]
        frames = max(32, round(MDX23C["audio"]["dim_t"] * fraction / 32) * 32)
        samples = hop * (frames - 1)
    else:
        samples = round(chunk * fraction)
    wave = 0.1 * torch.randn(1, 2, samples)
    seconds = samples / RATE
    timed_variants = variants()
    times: dict[tuple[str, str], list[float]] = {v: [] for v in timed_variants}
    loads: dict[tuple[str, str], list[float]] = {v: [] for v in timed_variants}
    outputs: dict[tuple[str, str], torch.Tensor] = {}
    # demixer in bf16 as its backend runs it: linear, convolution and LSTM weights stored in
    # bf16 once (demixer.models.msst.backend.store_weights_in), not cast anew at every call.
    stored = copy.deepcopy(ours)
    store_weights_in(stored, torch.bfloat16)
    nets = {("MSST", "fp32"): ref, ("MSST", "bf16"): ref, ("demixer", "fp32"): ours,
            ("demixer", "bf16"): stored}  # fmt: skip
    for r in range(rounds):
        for system, prec in timed_variants:
            net = nets[(system, prec)]
            if r == 0 and (system, prec) == VARIANTS[0]:
                with MacCounter(ref) as counter:
                    wall, load, out = timed(net, wave, False)
            else:
                wall, load, out = timed(net, wave, prec == "bf16")
            times[(system, prec)].append(wall / seconds)
            loads[(system, prec)].append(load)
            outputs.setdefault((system, prec), out)
            print(f"{arch} round {r + 1}: {system} {prec} {wall:.1f} s (other load {load:.2f})",
                  flush=True)  # fmt: skip
    exact = outputs[("MSST", "fp32")]
    return {
        "config": config,
        "chunk_s": seconds,
        "times": times,
        "loads": loads,
        "max_diff": (outputs[("demixer", "fp32")] - exact).abs().max().item(),
        "peak": exact.abs().max().item(),
        "snr": {
            s: snr_db(exact, outputs[(s, "bf16")])
            for s in ("MSST", "demixer")
            if (s, "bf16") in outputs
        },
        "macs": counter.total,
        "params": sum(p.numel() for p in ref.parameters()),
    }


def _load_note(results: dict[str, dict[str, Any]]) -> str:
    """What the other processes' share of the CPU says about the timings."""
    loads = [x for res in results.values() for v in res["loads"].values() for x in v]
    worst = max(loads, default=0.0)
    if worst <= 0.1:
        return f"the machine was quiet (at most {worst:.2f} of it used by others in any round)"
    return (
        f"**the machine was shared with other work while this ran (up to {worst:.2f} of it), "
        "so absolute times are inflated**; the variants alternated, so the ratios hold better "
        "than the times"
    )


def render(
    results: dict[str, dict[str, Any]], peaks: dict[str, float], rounds: int, fraction: float
) -> str:
    kind = common.cpu_kind()
    native = kind != common.NO_BF16
    lines = [
        "## MDX23C and SCNet networks (`benchmarks/arch_speed.py`)"
        + common.KIND_TITLES[kind]
        + "\n",
        common.header("arch_speed.py", "msst"),
        "\nThe network's forward pass alone (STFT to inverse STFT), batch 1, 2 threads, on "
        + (
            "one whole `chunk_size` chunk (what inference feeds the network)"
            if fraction == 1
            else f"{fraction:g} of a `chunk_size` chunk (shorter than inference feeds it: "
            "SCNet's LSTMs batch fewer sequences)"
        )
        + ", random weights loaded into both modules "
        "(full-size published configs; no published checkpoint is downloaded), input white "
        "noise at -20 dBFS. "
        "MSST = `msst` 0.1.0's module (what MSST's `demix` runs; on CPU it never autocasts); "
        "demixer = `demixer.models.arch`; its bf16 rows run the module as demixer's backend "
        "does, with the linear, convolution and LSTM weights stored in bf16 once (MSST's bf16 "
        f"rows: its module under autocast). {rounds} alternating rounds; *s per audio s* is "
        "median (best); *other load* is the median share of both cores used by other "
        f"processes meanwhile: {_load_note(results)}. demixer's default precision here: "
        f"`{resolve_precision('auto', torch.device('cpu'))}` (bf16 only where oneDNN reports "
        "native bf16).\n",
    ]
    if not native:
        lines.append(
            "\nThis CPU has no native bf16 (AVX2 only: emulated bf16 runs at about 1 % of "
            "fp32's rate, below), so demixer runs fp32 here and only the fp32 variants are "
            "timed; the section above was measured on a CPU with native bf16.\n"
        )
    for arch, res in results.items():
        base = statistics.median(res["times"][("MSST", "fp32")])
        gflop = 2 * res["macs"] / 1e9
        per_s = gflop / res["chunk_s"]
        lines.append(
            f"\n### {arch} ({res['config']}, {res['params'] / 1e6:.1f} M parameters)\n\n"
            f"{gflop:.0f} GFLOP per {res['chunk_s']:.2f} s input: **{per_s:.0f} GFLOP per "
            f"second of audio**. demixer fp32 vs MSST fp32: largest difference "
            f"{res['max_diff']:.1e} (output peak {res['peak']:.2f})."
            + (
                f" bf16 vs MSST fp32: demixer {res['snr']['demixer']:.1f} dB SNR, MSST "
                f"{res['snr']['MSST']:.1f} dB."
                if res["snr"]
                else ""
            )
            + "\n\n"
        )
        rows = []
        for system, prec in res["times"]:
            ts = res["times"][(system, prec)]
            med = statistics.median(ts)
            achieved = per_s / med
            rows.append([
                system, prec, f"{med:.2f} ({min(ts):.2f})", f"{base / med:.2f}x",
                f"{achieved:.0f}", f"{100 * achieved / peaks[prec]:.0f} %",
                f"{statistics.median(res['loads'][(system, prec)]):.2f}",
            ])  # fmt: skip
        head = ["system", "precision", "s per audio s", "speed vs MSST fp32", "GFLOP/s",
                "of peak", "other load"]  # fmt: skip
        lines.append(common.table(head, rows))
    lines.append(
        f"\nPeak of this machine on 2 threads (`speed.py`'s probe, best kernel): fp32 "
        f"{peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s"
        + ("" if native else " (emulated)")
        + ".\n"
    )
    if kind == common.AMX:
        lines.append(NOTES)
    elif kind == common.AVX512_BF16:
        lines.append(_notes_avx512_bf16(results, peaks))
    else:
        lines.append(_notes_without_bf16(results, peaks))
    return "".join(lines)


NOTES = """
What the figures say, and what they do not:

- **Exactness**: in float32 demixer's modules compute MSST's numbers (the tests hold them to
  1e-5 at every sample on every published config, shrunk in width; here at full size).
- **Speed: SCNet meets the 2x goal in bf16; MDX23C does not.** SCNet in bf16 runs about 2.1x
  MSST's float32 module (MSST's module under the same autocast: about 1.45x) within 47.8 dB of
  float32, the catalogue's wider XL IHF about 2.45x (MSST's under autocast 1.4x) within 46.7
  dB. Its LSTMs, most of the work, run 2.5-3x faster in bf16 (oneDNN on this CPU's AMX)
  once three things are done: their weights are stored in bf16 rather than cast at every call;
  the sequences go in zero-padded to a multiple of 32, because oneDNN's bf16 LSTM takes up to
  4x longer per sequence at many sequence counts (239 sequences: 3.7 us per step and sequence,
  240: 0.9; fixed per count, and the chunk's 57 bins and 239 or 476 frames were such counts);
  and the dual-path layers feed the LSTMs step-major and compute their linear maps
  transposed, so that each residual add reads contiguous memory instead of gathering across
  all channels (13.7 -> 1.3 ms per add on this chunk; the same layouts give float32 its
  1.1x). A hand-written SCNet LSTM (both directions and all sequences batched per step, input
  projection hoisted) gave the same numbers in float32, was slower than torch's oneDNN LSTM,
  and was dropped; so was one LSTM over both directions with block-diagonal weights (twice the
  arithmetic, slower). In float32 both modules run at about half of this machine's fp32 peak
  (MDX23C is convolutions, about 60 % of MSST's forward, plus instance norms and GELUs):
  demixer does the same arithmetic with less around it (activations in place, the STFT window
  made once, SCNet's fusion convolutions at half the work) and gains 1.1x; no 2x is left at
  that share of the peak without changing the arithmetic. bf16 autocast (which MSST never uses
  on a CPU: its `demix` autocasts on CUDA only) takes MDX23C to about 1.9x, but not within
  40 dB of the float32 output (below), so MDX23C's default stays float32. An earlier run on a
  machine three quarters busy with other work measured 0.9-1.3x for SCNet: the LSTMs
  synchronise both threads at every step, and each wait is long when the machine is
  oversubscribed, so the figures above (a quiet machine) are the ones to read.
- **bf16 accuracy** (against MSST's float32 output; random weights): SCNet's first encoder
  block sees the raw spectrogram, whose dynamic range bf16 loses; demixer runs that block in
  float32 under autocast (a small share of the work), which took SCNet from 33 dB (MSST's
  module under the same autocast) to the figure above. MDX23C stays far below 40 dB in bf16,
  MSST's module exactly as much: random MDX23C weights amplify any perturbation (at width 32,
  an input perturbed at -60 dB gave 37 dB output SNR in plain float32, and rounding only the
  weights to bf16 gave 24 dB), so this says little about a trained checkpoint, which has to be
  measured with that checkpoint (none can be downloaded here). Until then MDX23C is only
  exact with `DEMIXER_PRECISION=fp32`.
"""


def _notes_without_bf16(results: dict[str, dict[str, Any]], peaks: dict[str, float]) -> str:
    """What the float32 figures of a CPU without native bf16 say."""
    speedups, shares = [], []
    for arch, res in results.items():
        med = {v: statistics.median(ts) for v, ts in res["times"].items()}
        speedups.append(f"{arch} {med[('MSST', 'fp32')] / med[('demixer', 'fp32')]:.2f}x")
        per_s = 2 * res["macs"] / 1e9 / res["chunk_s"]
        share = [100 * per_s / med[(s, "fp32")] / peaks["fp32"] for s in ("MSST", "demixer")]
        shares.append(f"{arch} {share[0]:.0f} -> {share[1]:.0f} %")
    return f"""
What the figures say: in float32, demixer's modules compute MSST's numbers (largest
differences above) and run {", ".join(speedups)} of MSST's module on this CPU; the share of
its fp32 peak goes from MSST's to demixer's as {", ".join(shares)}. Both call the same oneDNN
convolutions and LSTMs, which take most of the time here (SCNet's LSTMs alone half of its
forward, profiled on this CPU), so the network alone gains little; a whole separation adds
what demixer saves around the network (section *MSST models*, CPU without bf16). The 2x that
bf16 brings on a CPU with native bf16 is not to be had here: emulated bf16 runs at
{100 * peaks["bf16"] / peaks["fp32"]:.1f} % of fp32's rate.
"""


def _notes_avx512_bf16(results: dict[str, dict[str, Any]], peaks: dict[str, float]) -> str:
    """What the figures of a CPU with native bf16 but no AMX say."""
    parts = []
    for arch, res in results.items():
        med = {v: statistics.median(ts) for v, ts in res["times"].items()}
        base = med[("MSST", "fp32")]
        parts.append(
            f"{arch} {base / med[('demixer', 'bf16')]:.2f}x in bf16 "
            f"({res['snr']['demixer']:.1f} dB from fp32), {base / med[('demixer', 'fp32')]:.2f}x "
            f"in fp32 (MSST's module under autocast: {base / med[('MSST', 'bf16')]:.2f}x)"
        )
    return (
        "\nWhat the figures say: this CPU computes bf16 natively in AVX-512 but has no AMX "
        "tiles (as AMD's Zen 4), so its bf16 matmul peak is "
        f"{peaks['bf16'] / peaks['fp32']:.1f}x its fp32 peak, not the AMX Xeon's 6x (section "
        "above). demixer against MSST's float32 module: " + "; ".join(parts) + ". In float32 "
        "demixer's modules compute MSST's numbers (largest differences above). The AMX "
        "Xeon's notes say what demixer does for speed, and why MDX23C stays float32 by default "
        "(its bf16 output is as far from float32 on this CPU as there, on random weights).\n"
    )


def memory_section() -> str:
    """MDX23C's and SCNet's peak memory next to MSST's (``msst_speed.py --memory``), from its
    cached figures where they exist."""
    from msst_speed import render_memory

    path = common.CACHE / "msst_memory.json"
    if not path.is_file():
        return ""
    text = render_memory(json.loads(path.read_text()), ["mdx23c", "scnet"])
    return f"\n### Memory, whole separation (`msst_speed.py --memory`)\n\n{text}" if text else ""


def _keyed(per_variant: dict[tuple[str, str], list[float]]) -> dict[str, list[float]]:
    return {f"{system} {prec}": v for (system, prec), v in per_variant.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="input length as a fraction of chunk_size"
    )
    parser.add_argument(
        "--archs",
        nargs="+",
        default=["mdx23c", "scnet", "scnet-xl-ihf", "scnet-masked-xl-ihf", "scnet-tran"],
        choices=list(PAIRS),
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    probe = machine_gflops(quiet_wait=10.0)
    peaks = {
        prec: max(v for k, v in probe.items() if k.startswith(prec)) for prec in ("fp32", "bf16")
    }
    results = {}
    for arch in args.archs:
        results[arch] = res = run_arch(arch, args.rounds, args.fraction)
        print(
            json.dumps(
                {arch: {**res, "times": _keyed(res["times"]), "loads": _keyed(res["loads"])}}
            )
        )
    body = render(results, peaks, args.rounds, args.fraction)
    body += memory_section() if common.cpu_kind() == common.AMX else ""
    print(body)
    if not args.no_write:
        common.write_section(common.kind_section("arch-mdx23c-scnet"), body)


if __name__ == "__main__":
    main()
