"""The job protocol every system runner speaks (stdlib + numpy + soundfile only).

A runner is a script executed as a subprocess inside its system's own virtual environment::

    <venv>/bin/python benchmarks/peers/run_<system>.py JOB.json

``JOB.json`` holds::

    {"items": [{"input": "mix.wav", "outdir": "dir"}, ...],   # separated in this order
     "threads": 2,                                               # intra-op threads
     "warm": false,                                              # see below
     "result": "result.json"}                                    # where the runner reports

For each item the runner reads the float32 wav, separates it, and writes ``vocals.wav`` and
``accompaniment.wav`` (float32, the input's rate, ``samples x channels``) into ``outdir``.

``result.json`` gets ``import_s`` (importing the system's library), ``load_s`` (building the
model and reading its weights), per item ``separate_s`` (the separation call alone) and
``first_call_s`` (for systems whose first call also loads the model), and ``peak_rss_mb`` (this
process's peak resident set size).

``warm`` asks for a throw-away separation of the same input before the timed one. Only the
TensorFlow runner needs it: its graph is built and its checkpoint restored inside the first
call, which would otherwise count model loading as separation time.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

T0 = time.perf_counter()


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the rate."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(rate)


def write_wav(path: str | Path, audio: np.ndarray, rate: int) -> None:
    """Write (channels, samples) audio as a float32 wav."""
    sf.write(str(path), np.asarray(audio, dtype=np.float32).T, rate, subtype="FLOAT")


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad or trim (channels, samples) audio to exactly n samples."""
    if audio.shape[1] >= n:
        return audio[:, :n]
    return np.pad(audio, ((0, 0), (0, n - audio.shape[1])))


def main(
    load: Callable[[int], Any],
    separate: Callable[[Any, np.ndarray, int], dict[str, np.ndarray]],
    import_s: float,
    needs_warm_call: bool = False,
    describe: Callable[[Any], dict[str, Any]] | None = None,
) -> None:
    """Run the job named on the command line.

    Args:
        load: builds the model given the thread count; returns a handle passed to ``separate``.
        separate: (handle, (channels, samples) float32, rate) -> {"vocals", "accompaniment"}
            arrays (channels, samples) at ``rate``.
        import_s: seconds spent importing the system's library.
        needs_warm_call: whether the first call also loads the model (TensorFlow).
        describe: optional, handle -> facts for result.json's ``info`` (e.g. the precision).
    """
    job = json.loads(Path(sys.argv[1]).read_text())
    threads = int(job.get("threads", 2))
    t = time.perf_counter()
    handle = load(threads)
    load_s = time.perf_counter() - t
    items = []
    for item in job["items"]:
        mix, rate = read_wav(item["input"])
        record: dict[str, Any] = {"input": item["input"], "seconds": mix.shape[1] / rate}
        if job.get("warm") and needs_warm_call:
            t = time.perf_counter()
            separate(handle, mix, rate)
            record["first_call_s"] = time.perf_counter() - t
        t = time.perf_counter()
        stems = separate(handle, mix, rate)
        record["separate_s"] = time.perf_counter() - t
        out = Path(item["outdir"])
        out.mkdir(parents=True, exist_ok=True)
        for name in ("vocals", "accompaniment"):
            write_wav(out / f"{name}.wav", fit_length(stems[name], mix.shape[1]), rate)
        items.append(record)
    result = {
        "import_s": import_s,
        "load_s": load_s,
        "items": items,
        "peak_rss_mb": peak_rss_mb(),
        "process_s": time.perf_counter() - T0,
        "info": describe(handle) if describe else {},
    }
    Path(job["result"]).write_text(json.dumps(result, indent=1))
