"""Speed of demixer's UVR VR models next to audio-separator's VR inference, on the same weights.

Two networks shaped as the catalogue's VR models, with random weights (the checkpoints are not
downloaded here): ``5_HP-Karaoke-UVR``'s (UVR's v5 ``nets.py``, width 32, band layout
``4band_v2_sn``) and ``UVR-De-Echo-Normal``'s (v5.1 ``nets_new.py``, width 48, ``4band_v3``).
Each separates the same WAV (a chord and noise, ``--seconds`` long) as audio-separator 0.47.1's
``VRSeparator`` does (its ``loading_mix``, ``inference_vr`` and ``spec_to_wav``, compiled from
the installed file by ``tests/vr_reference.py``: the file read, every band's STFT and
resampling, the network window by window, the bands back to a wave) and as demixer's engine
runs the model (``Separator.separate_array``: the pass for the song's loudest bin, then the
stream), alternating for ``--rounds`` rounds with
``torch.set_num_threads(2)``. Reported: the median and best seconds per second of audio, the
speed-up, the largest difference between the primary stems, the other processes' share of
the CPU meanwhile, and the network's FLOPs per second of audio (its layers counted over one
run) with the share of this machine's measured fp32 matmul peak each system reaches.

Memory (``--memory``): the peak RSS of a subprocess separating a WAV of each ``--minutes``
length, once each way: audio-separator's inference reads the whole file, holds every band's
spectrogram and the mask for the whole song; demixer runs ``Separator.separate_file`` (file to
stem files, what ``demixer separate`` and the workers run: a first pass for the song's loudest
bin, then the song streamed in 10-s chunks). The network is De-Echo-Normal's kind and layout,
shrunk to width 16 and LSTM width 32 so that audio-separator's 10 minutes finish in minutes:
its share of the memory (weights, one window's activations) does not grow with the song.

    .venv/bin/python benchmarks/vr_speed.py [--rounds 2] [--seconds 15]
    .venv/bin/python benchmarks/vr_speed.py --memory [--minutes 1 3 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import common
from arch_speed import MacCounter, timed_call
from speed import machine_gflops

ROOT = Path(__file__).resolve().parents[1]
NETS = {  # the catalogue model each is shaped as: UVR's network kind, width, layout, primary
    "5_HP-Karaoke-UVR": ("123812", 32, "4band_v2_sn", "Instrumental"),
    "UVR-De-Echo-Normal": ("v5.1", 48, "4band_v3", "No Echo"),
}


#: --memory: the network separating, shaped as De-Echo-Normal's but narrower
MEMORY_NET = ("v5.1", 16, 32, "4band_v3", "No Echo")


def main() -> None:
    if sys.argv[1:2] == ["--run-memory"]:
        run_memory(sys.argv[2], Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--memory", action="store_true", help="measure peak memory instead")
    parser.add_argument("--minutes", type=float, nargs="*", default=[1.0, 3.0, 10.0])
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    if args.memory:
        memory(args)
        return
    torch.set_num_threads(2)
    probe = machine_gflops(quiet_wait=10.0)
    peak = max(v for k, v in probe.items() if k.startswith("fp32"))
    sys.path.insert(0, str(ROOT / "tests"))
    from demixer.engine import Separator
    from demixer.models.registry import get_spec
    from demixer.models.vr import StreamingVrBackend
    from demixer.models.vr.params import VrParams
    from vr_reference import UvrVr, demixer_vr, layout_file, randomised, reference_network

    rate = 44100
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    mix = (0.15 * chord[None] + 0.05 * rng.standard_normal((2, t.size))).astype(np.float32)
    rows = []
    notes = []
    with common.tempdir("vr-speed-") as tmp:
        wav = Path(tmp) / "song.wav"
        sf.write(wav, mix.T, rate, subtype="FLOAT")
        for name, (kind, width, layout, primary) in NETS.items():
            arch_params = {"vr_model_param": layout, "primary_stem": primary}
            bins = VrParams.from_arch_params(arch_params, model_id=name).layout.bins
            ref = randomised(reference_network(bins, kind, nout=width, nout_lstm=128), seed=1)
            uvr = UvrVr(ref, layout_file(layout), primary, v51=kind == "v5.1")
            vr = demixer_vr(ref, bins, arch_params, model_id=name)
            assert isinstance(vr, StreamingVrBackend)
            spec = replace(get_spec("vr-de-echo-normal"), id=name, stems=vr.stems)
            ours = Separator.from_backend(spec, vr)
            with MacCounter(
                vr.network
            ) as counter:  # the same grid windows as UVR's: one count for both
                ours.separate_array(mix, rate, ["primary"])
            gflop = 2 * counter.total / 1e9
            common.wait_quiet(30.0)
            runs: dict[str, Callable[[], np.ndarray]] = {
                "audio-separator": lambda uvr=uvr: uvr.separate(wav)[0],
                "demixer": lambda ours=ours: ours.separate_array(mix, rate, ["primary"])["primary"],
            }
            times: dict[str, list[float]] = {k: [] for k in runs}
            loads: dict[str, list[float]] = {k: [] for k in runs}
            outputs: dict[str, np.ndarray] = {}
            for r in range(args.rounds):
                for system, run in runs.items():
                    wall, load, out = timed_call(run)
                    out = np.asarray(out, dtype=np.float32)
                    times[system].append(wall / args.seconds)
                    loads[system].append(load)
                    outputs.setdefault(system, out)
                    print(f"{name} round {r + 1}: {system} {wall:.1f} s", flush=True)
            n = outputs["audio-separator"].shape[1]
            diff = float(np.abs(outputs["demixer"][:, :n] - outputs["audio-separator"]).max())
            base = statistics.median(times["audio-separator"])
            for system, ts in times.items():
                med = statistics.median(ts)
                achieved = gflop / (med * args.seconds)
                rows.append([
                    name, system, f"{med:.2f} ({min(ts):.2f})", f"{base / med:.2f}x",
                    f"{achieved:.0f}", f"{100 * achieved / peak:.0f} %",
                    f"{statistics.median(loads[system]):.2f}",
                ])  # fmt: skip
            million = sum(p.numel() for p in ref.parameters()) / 1e6
            notes.append(
                f"{name}: {million:.1f} M parameters, **{gflop / args.seconds:.0f} GFLOP per "
                f"audio s**, largest difference {diff:.1e}"
            )
    body = (
        "## UVR VR models (`benchmarks/vr_speed.py`)"
        + common.KIND_TITLES[common.cpu_kind()]
        + "\n\n"
        + common.header("vr_speed.py", "audio-separator")
        + f"\nA whole separation of a {args.seconds:g}-s stereo WAV at 44.1 kHz (a chord and "
        "noise), float32, 2 threads, by networks shaped as two catalogue models with random "
        "weights (the checkpoints are not downloaded here). audio-separator = its 0.47.1 "
        "`VRSeparator`'s `loading_mix`, `inference_vr` and `spec_to_wav` (compiled from the "
        "installed file by `tests/vr_reference.py`; UVR's defaults: aggression 5, 512-frame "
        "windows, batch 1); demixer = the engine's `Separator.separate_array` on the same "
        "array (its pass for the song's loudest bin, then the model's stream) "
        f"(the same defaults, 2 windows per call). {args.rounds} alternating rounds; *s per "
        "audio s* is median (best); *other load* is the median share of the CPU used by other "
        "processes meanwhile. FLOPs: the network's convolutions, linear maps and LSTM counted "
        "per layer over demixer's run (2 FLOPs per multiply-add; UVR runs the same windows), "
        "per audio second; *GFLOP/s* is that over each system's median time, *of peak* its "
        f"share of this machine's measured fp32 matmul peak ({peak:.0f} GFLOP/s on 2 "
        "threads).\n\n"
        + "; ".join(notes)
        + ".\n\n"
        + common.table(
            ["model", "system", "s per audio s", "speed", "GFLOP/s", "of peak", "other load"], rows
        )
        + "\nWhat the figures say: demixer computes UVR's numbers (to about 1e-7) at about "
        "UVR's speed. Nearly all the time is the network's 3x3 convolutions (81 % of a v5 "
        "window's time in a profile, at 172 GFLOP/s: this machine's fp32 peak), which both run "
        "through torch's oneDNN, so nothing is left to gain in fp32 but work: folding the batch "
        "norms into the convolutions and channels-last layout together gained 5-15 % in a trial, "
        "not kept. Every window recomputes its context frames (a 512-frame window keeps its "
        "middle 256 for a v5 net, 384 for v5.1), as UVR's output depends on them (the window's "
        "zero padding and its corner-aligned upsampling reach the middle); `--quality fast` "
        "(1024-frame windows) saves much of that share.\n"
    )
    print(body)
    if not args.no_write:
        common.write_section(common.kind_section("vr-speed"), body)


def run_memory(system: str, wav: Path) -> None:
    """The subprocess side of ``--memory``: separate ``wav`` once, print the peak RSS."""
    torch.set_num_threads(2)
    probe = machine_gflops(quiet_wait=10.0)
    peak = max(v for k, v in probe.items() if k.startswith("fp32"))
    sys.path.insert(0, str(ROOT / "tests"))
    from demixer.engine import Separator
    from demixer.models.registry import get_spec
    from demixer.models.vr.params import VrParams
    from vr_reference import UvrVr, demixer_vr, layout_file, randomised, reference_network

    kind, width, lstm_width, layout, primary = MEMORY_NET
    arch_params = {"vr_model_param": layout, "primary_stem": primary}
    bins = VrParams.from_arch_params(arch_params, model_id="memory").layout.bins
    ref = randomised(reference_network(bins, kind, nout=width, nout_lstm=lstm_width), seed=1)
    started = time.perf_counter()
    if system == "audio-separator":
        UvrVr(ref, layout_file(layout), primary, v51=True).separate(wav)
    else:
        spec = get_spec("vr-de-echo-normal")
        stems = (spec.stems[0], spec.stems[1])
        vr = demixer_vr(ref, bins, arch_params, stems=stems, model_id="memory")
        with common.tempdir("vr-memory-") as out:
            Separator.from_backend(spec, vr).separate_file(wav, out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"peak_rss_mb": peak, "seconds": time.perf_counter() - started}))


def memory(args: argparse.Namespace) -> None:
    """``--memory``: each system on each length, one subprocess each; the RESULTS section."""
    systems = ("audio-separator", "demixer")
    rows = common.peak_rss_by_length(__file__, "--run-memory", systems, args.minutes)
    table_rows = common.growth_rows(rows, systems)
    _, width, lstm_width, layout, _ = MEMORY_NET
    body = (
        "### UVR VR models: memory (`benchmarks/vr_speed.py --memory`)\n\n"
        + common.header(
            "vr_speed.py", "audio-separator", "`.venv/bin/python benchmarks/vr_speed.py --memory`"
        )
        + "\nPeak RSS (`ru_maxrss`) of a whole subprocess, model built in it, separating a "
        "stereo 44.1 kHz float32 WAV of a chord and noise of each length. audio-separator: its "
        "0.47.1 `VRSeparator`'s `loading_mix`, `inference_vr` and `spec_to_wav` on the file (the "
        "song read whole, every band's spectrogram and the mask held for all of it); demixer: "
        "`Separator.separate_file`, file to stem files (what `demixer separate` and the workers "
        "run: one pass for the song's loudest bin, then the song streamed in 10-s chunks; the "
        "stems equal audio-separator's either way). The network is UVR's v5.1 on "
        f"`{layout}` as De-Echo-Normal's, **shrunk** to width {width} and LSTM width "
        f"{lstm_width} so that audio-separator's 10 minutes finish in minutes on 2 shared "
        "cores: its share (weights, one window's activations) is the same at any length, and "
        "larger at full size for both alike. *growth*: the peak minus the shortest input's.\n\n"
        + common.table(["system", "input", "peak RSS", "growth"], table_rows)
        + "\nWhat the figures say: demixer's peak does not grow with the song (it moves by tens "
        "of MB from run to run); audio-separator's grows by about half a GB per minute of "
        "song (every band's spectrogram, its magnitude and phase, the windows and the mask, "
        "for the whole song). On a short song demixer's is the larger: its imports, and a "
        "chunk's working arrays with their margins.\n"
    )
    print(body)
    if not args.no_write:
        common.write_section("vr-memory", body)


if __name__ == "__main__":
    main()
