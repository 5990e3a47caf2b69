"""Measure the quality of ``cascade-4stems`` and of its DSP split, against trivial baselines.

Ground truth is the real MUSDB18 excerpt that the PyPI package ``stempeg`` ships (6 s, 44.1 kHz
stereo, AAC streams: mix, drums, bass, other, vocals), decoded with PyAV (no ffmpeg binary).

The metric is plain SDR over both channels, ``10 log10(|s|^2 / |s - ŝ|^2)`` in dB: no
projection, no permitted distortion filter (BSS-eval's SDR would be somewhat higher).

Tables written:

* the DSP split applied to the TRUE accompaniment (drums + bass + other): the best the DSP can
  do when the vocals are perfectly removed, for the default parameters and a few alternatives;
* the full cascade on the mix (spleeter, then the DSP on spleeter's accompaniment);
* for both, two do-nothing baselines: every stem = accompaniment / 3, and the whole accompaniment
  as "other" (drums and bass silent, which scores exactly 0 dB for them).

Run from the repository root (``demixer`` importable, e.g. ``pip install -e .`` or
``PYTHONPATH=src``)::

    python benchmarks/cascade_quality.py [--no-write]

It prints the tables and writes them into ``benchmarks/RESULTS.md`` between
``<!-- cascade:start -->`` and ``<!-- cascade:end -->``, leaving the rest of the file alone
(``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np

import common
from demixer.errors import ModelUnavailable
from demixer.models.dsp import DEFAULT_PARAMS, SplitParams, split_accompaniment
from demixer.models.loading import load_backend
from demixer.models.quality import DEFAULT_QUALITY, QUALITIES, tuned

EXCERPT = "The Easton Ellises - Falcon 69.stem.mp4"
STREAMS = ("mix", "drums", "bass", "other", "vocals")  # MUSDB18 stem-file stream order
DSP_STEMS = ("drums", "bass", "other")
RESULTS = Path(__file__).with_name("RESULTS.md")
START, END = "<!-- cascade:start -->", "<!-- cascade:end -->"

# Alternatives to the defaults, to show how much the choice matters (not a search).
VARIANTS: dict[str, SplitParams] = {
    "defaults": DEFAULT_PARAMS,
    "Fitzgerald 2010 kernels (17 frames x 17 bins: 0.39 s, 183 Hz)": replace(
        DEFAULT_PARAMS, harmonic_kernel_s=0.39, percussive_kernel_hz=183.0
    ),
    "librosa-like kernels (0.72 s, 334 Hz)": replace(
        DEFAULT_PARAMS, harmonic_kernel_s=0.72, percussive_kernel_hz=334.0
    ),
    "narrower percussive kernel (60 Hz, best on this excerpt)": replace(
        DEFAULT_PARAMS, percussive_kernel_hz=60.0
    ),
    "bass crossover 100-200 Hz": replace(DEFAULT_PARAMS, bass_low_hz=100.0, bass_high_hz=200.0),
    "margins 2 (ambiguous energy to other)": replace(
        DEFAULT_PARAMS, harmonic_margin=2.0, percussive_margin=2.0
    ),
}

Stems = dict[str, np.ndarray]


def excerpt_path() -> Path:
    """The excerpt inside the installed ``stempeg`` package, found without importing it.

    stempeg's own import fails when no ffmpeg binary is on PATH, and we only need its data file.
    """
    spec = importlib.util.find_spec("stempeg")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("stempeg is not installed: `pip install stempeg`")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / EXCERPT
        if path.is_file():
            return path
    raise SystemExit(f"stempeg is installed but ships no {EXCERPT}")


def read_stems(path: Path) -> tuple[int, Stems]:
    """Decode every audio stream of a stem file to ``(channels, samples)`` float32."""
    stems: Stems = {}
    rate = 0
    for index, name in enumerate(STREAMS):
        with av.open(str(path)) as container:
            stream = container.streams.audio[index]
            rate = stream.rate
            resampler = av.AudioResampler(format="fltp")
            blocks = [
                out.to_ndarray()
                for frame in container.decode(stream)
                for out in resampler.resample(frame)
            ]
            blocks += [out.to_ndarray() for out in resampler.resample(None)]
        stems[name] = np.concatenate(blocks, axis=1).astype(np.float32)
    length = min(a.shape[1] for a in stems.values())
    return rate, {k: a[:, :length] for k, a in stems.items()}


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain SDR in dB over all channels: ``10 log10(|s|^2 / |s - ŝ|^2)``."""
    ref = reference.astype(np.float64)
    err = ref - estimate.astype(np.float64)
    return float(10.0 * np.log10(np.sum(ref**2) / max(np.sum(err**2), 1e-20)))


def thirds(acc: np.ndarray) -> Stems:
    """Baseline: every stem gets a third of the accompaniment."""
    return {stem: acc / 3.0 for stem in DSP_STEMS}


def all_other(acc: np.ndarray) -> Stems:
    """Baseline: the whole accompaniment is "other"; drums and bass are silent."""
    return {"drums": np.zeros_like(acc), "bass": np.zeros_like(acc), "other": acc}


def row(label: str, truth: Stems, estimate: Stems, vocals: float | None = None) -> str:
    """One markdown table row: SDR per DSP stem, their mean, and vocals when given."""
    scores = [sdr(truth[stem], estimate[stem]) for stem in DSP_STEMS]
    cells = [f"{s:.2f}" for s in scores] + [f"**{np.mean(scores):.2f}**"]
    cells.append("–" if vocals is None else f"{vocals:.2f}")
    return f"| {label} | " + " | ".join(cells) + " |"


HEADER = "| method | drums | bass | other | mean (d/b/o) | vocals |\n|---|---:|---:|---:|---:|---:|"


def dsp_seconds_per_window(acc: np.ndarray, rate: int, window: int) -> float:
    """Wall seconds the DSP split takes on one window of ``window`` samples (tiled excerpt)."""
    tiled = np.tile(acc, (1, -(-window // acc.shape[1])))[:, :window]
    start = time.perf_counter()
    split_accompaniment(tiled, rate)
    return time.perf_counter() - start


def measure() -> str:
    """Run every measurement; return the markdown section (without the markers)."""
    rate, s = read_stems(excerpt_path())
    truth = {stem: s[stem] for stem in DSP_STEMS}
    true_acc = s["drums"] + s["bass"] + s["other"]
    p = DEFAULT_PARAMS
    lines = [
        "## cascade-4stems (`benchmarks/cascade_quality.py`)",
        "",
        common.header("cascade_quality.py", reference="stempeg"),
        f"Ground truth: MUSDB18 excerpt `{EXCERPT}` from stempeg ({s['mix'].shape[1] / rate:.1f} s,"
        f" {rate} Hz stereo). Plain SDR in dB over both channels, `10 log10(|s|²/|s-ŝ|²)`"
        " (no BSS-eval projection). Higher is better; 0 dB is what a silent stem scores.",
        "",
        f"Default DSP parameters: frame {p.frame_s} s (4096 samples at 44.1 kHz), harmonic"
        f" (time) median {p.harmonic_kernel_s} s, percussive (frequency) median"
        f" {p.percussive_kernel_hz:g} Hz, power-{p.power:g} soft masks, margins"
        f" {p.harmonic_margin:g}/{p.percussive_margin:g}, bass = harmonic part below a"
        f" raised-cosine crossover {p.bass_low_hz:g}→{p.bass_high_hz:g} Hz. They were tuned on"
        " this same 6 s excerpt, so the DSP rows are optimistic for music in general.",
        "",
        "### DSP split of the TRUE accompaniment (upper bound of the DSP)",
        "",
        HEADER,
    ]
    for label, params in VARIANTS.items():
        lines.append(row(f"DSP, {label}", truth, split_accompaniment(true_acc, rate, params)))
    lines.append(row("baseline: each stem = accompaniment / 3", truth, thirds(true_acc)))
    lines.append(row("baseline: accompaniment as other", truth, all_other(true_acc)))
    lines += ["", "### Full cascade on the mix (spleeter-2stems, then the DSP)", ""]
    try:
        spleeter = load_backend("spleeter-2stems")
    except ModelUnavailable as exc:
        lines.append(f"Not measured: {exc.message}")
        return "\n".join(lines)
    # The cascade runs spleeter at the request's quality level (demixer.models.quality); the
    # DSP split is the same at every level.
    by_level = {q: tuned(spleeter, q).separate(s["mix"]) for q in QUALITIES}
    lines.append(HEADER)
    for level, halves in by_level.items():
        default = ", the default" if level == DEFAULT_QUALITY else ""
        lines.append(
            row(
                f"cascade-4stems `{level}`{default}",
                truth,
                split_accompaniment(halves["accompaniment"], rate),
                sdr(s["vocals"], halves["vocals"]),
            )
        )
    halves = by_level[DEFAULT_QUALITY]
    acc = halves["accompaniment"]
    vocals = sdr(s["vocals"], halves["vocals"])
    lines += [
        row("baseline: each stem = spleeter accompaniment / 3", truth, thirds(acc), vocals),
        row("baseline: spleeter accompaniment as other", truth, all_other(acc), vocals),
        "",
        f"Spleeter's accompaniment (`{DEFAULT_QUALITY}`) itself scores"
        f" {sdr(true_acc, acc):.2f} dB against the true one; the baselines use it. The DSP split"
        f" takes {dsp_seconds_per_window(true_acc, rate, spleeter.window):.1f} s (wall clock) per"
        f" {spleeter.window / rate:.1f} s window (spleeter's) on this machine"
        f" ({platform.machine()}, {os.cpu_count()} cores).",
    ]
    return "\n".join(lines)


def write_section(section: str, path: Path = RESULTS) -> None:
    """Replace (or append) our marked section of ``path``, leaving every other byte alone.

    Read-modify-write in one quick step and an atomic rename, because other benchmarks write
    their own sections of the same file.
    """
    block = f"{START}\n{section}\n{END}"
    text = path.read_text("utf-8") if path.exists() else "# Benchmark results\n"
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".RESULTS.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = ap.parse_args(argv)
    section = measure()
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
