"""Recipes and ensembles: wall time per audio minute and peak memory, on this machine's cores.

The catalogue's recipes chain RoFormer and SCNet checkpoints that cannot be fetched here, so the
runs use what can run for real: ``spleeter-2stems`` alone (the reference), ``cascade-4stems``
(the graph runner with two steps: spleeter, then the DSP split of its accompaniment), and the
ensembles of ``spleeter-2stems`` and ``cascade-4stems`` (both run once per window; average of the
waveforms, and UVR's max spec). Where ``models pull`` has put a recipe's models in place, that
recipe is measured too.

Each system separates the same looped MUSDB18 excerpt (60 s and 180 s, float32 wav) in a fresh
process (``Separator.separate_file``, wav out): wall seconds per audio minute (model loading
excluded) and peak RSS of the process, at both lengths (memory must not grow with length).
Timings are noisy on a shared machine: peers run side by side in one run, alternating.

    .venv/bin/python benchmarks/recipes.py [--rounds 2]

It rewrites only its own section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import header, long_mix, write_section
from demixer.models.loading import is_installed
from demixer.models.registry import get_spec, list_specs

BASE = ["spleeter-2stems", "cascade-4stems", "spleeter-2stems+cascade-4stems"]
BASE += ["max:spleeter-2stems+cascade-4stems"]
LENGTHS = (60.0, 180.0)  # both longer than spleeter's 47 s window

_CHILD = """
import json, resource, sys, time
from demixer.engine import Separator
model, path, out = sys.argv[1:4]
sep = Separator(model)
t = time.perf_counter()
result = sep.separate_file(path, out)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall": wall, "duration": result.duration, "peak_mib": peak}))
"""


def run_one(model: str, audio: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, model, str(audio), out],
            capture_output=True,
            text=True,
            check=True,
        )
    record: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    recipes = [s.id for s in list_specs() if s.loader.endswith("recipe:load") and is_installed(s)]
    models = BASE + recipes
    runs: dict[tuple[str, float], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for seconds in LENGTHS:
            audio = long_mix(seconds, "wav")
            for model in models:  # alternating: each system sees the same load
                record = run_one(model, audio)
                runs.setdefault((model, seconds), []).append(record)
                print(model, seconds, record, flush=True)
    lines = [
        "## Recipes and ensembles (`benchmarks/recipes.py`)",
        "",
        header("recipes.py").rstrip(),
        "",
        "Wall seconds per minute of audio (model loading excluded; median of "
        f"{args.rounds} round(s)) and peak RSS, separating a looped MUSDB18 excerpt. Recipes "
        "of the catalogue are measured only where their models are installed "
        f"({', '.join(recipes) or 'none here'}).",
        "",
        "| system | what runs per window | s / audio min (60 s) | s / audio min (180 s) "
        "| peak MiB (60 s) | peak MiB (180 s) |",
        "|---|---|---|---|---|---|",
    ]
    for model in models:
        cells = []
        for key in ("wall", "peak_mib"):
            for seconds in LENGTHS:
                values = runs[(model, seconds)]
                if key == "wall":
                    cells.append(
                        f"{statistics.median(v['wall'] / v['duration'] * 60 for v in values):.1f}"
                    )
                else:
                    cells.append(f"{max(v['peak_mib'] for v in values):.0f}")
        spec = get_spec(model)
        if spec.arch_params.get("mode"):  # an ensemble
            what = " + ".join(spec.requires)
        elif spec.requires:  # a chain: a recipe's steps, or the cascade's spleeter then DSP
            steps = spec.arch_params.get("steps") or [{"model": m} for m in spec.requires]
            what = " -> ".join(
                [s["model"] for s in steps] + ([] if "steps" in spec.arch_params else ["DSP split"])
            )
        else:
            what = "the model"
        lines.append(f"| `{model}` | {what} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The ensembles run each member once per window, so their time is about the sum of the "
        "members' (the cascade contains a second spleeter); the max spec adds one STFT pass per "
        "stem. Peak memory at 180 s against 60 s shows whether it grows with length (the graph "
        "runs window by window). The machine is shared with other work: timings are noisy.",
    ]
    write_section("recipes", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
