"""What each quality level costs: ``fast``, ``balanced`` and ``best`` timed on one model of each
family, in one process on 2 threads, the levels alternating per round.

Models: ``spleeter-2stems`` (its real weights); Kimberley Jensen's Mel-Band RoFormer config
(``num_overlap: 2``) and the catalogue crowd remover's (``num_overlap: 4``), shrunk as
``msst_speed.py --memory`` shrinks them (fewer, narrower blocks: at full size one pass over
10 s takes minutes on 2 AVX2 cores; the levels' ratios are what is measured), random
weights; the Kim_Vocal_2-sized MDX-Net stand-in
(``mdx_net.py``'s); HTDemucs at its published layout (demucs' ``HTDemucs`` defaults), random
weights, in demucs' own checkpoint format. Speed does not depend on the weights' values. Each
separation is ``Separator.separate_array`` on the MUSDB excerpt looped to ``--seconds``, the
model already loaded, default precision. What each level does is in README ("Quality") and
``demixer separate --help``.

    .venv/bin/python benchmarks/quality_levels.py [--seconds 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import common

LEVELS = ("fast", "balanced", "best")


def demucs_checkpoint() -> Path:
    """HTDemucs with demucs' default (published) layout and random weights, built once."""
    import torch

    path = common.CACHE / "htdemucs-random.th"
    if path.is_file():
        return path
    from demixer.models import demucs_backend

    demucs_backend.import_demucs()
    from demucs.htdemucs import HTDemucs  # type: ignore[import-untyped]
    from demucs.states import serialize_model  # type: ignore[import-untyped]
    from omegaconf import OmegaConf  # type: ignore[import-untyped]

    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], samplerate=44100, segment=7.8)
    buffer = io.BytesIO()
    torch.save(serialize_model(model, OmegaConf.create({})), buffer)
    common.CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def separators() -> Iterator[tuple[str, Any]]:
    """(label, loaded Separator) per family."""
    import mdx_net
    import msst_speed
    from demixer.engine import Separator
    from demixer.models.msst.user import open_files

    yield "spleeter-2stems (real weights)", Separator("spleeter-2stems")
    for name, label in (
        ("kim-mel", "Mel-Band RoFormer, Kim's config shrunk (num_overlap 2)"),
        ("crowd-mel", "Mel-Band RoFormer, the crowd remover's config shrunk (num_overlap 4)"),
    ):
        config, checkpoint, arch = msst_speed.model_files(name, shrink=True)
        spec, backend = open_files(arch, config, checkpoint)
        yield label, Separator.from_backend(spec, backend)
    model = mdx_net.register()
    yield (
        "MDX-Net, Kim_Vocal_2-sized stand-in",
        Separator(model, model_path=mdx_net.network("standin")),
    )
    yield "HTDemucs, published layout", Separator("htdemucs", model_path=demucs_checkpoint())


def measure(seconds: float, rounds: int) -> list[tuple[str, dict[str, float]]]:
    import torch

    torch.set_num_threads(2)
    ex = common.excerpt()
    reps = int(np.ceil(seconds * ex.rate / ex.mix.shape[1]))
    mix = np.tile(ex.mix, (1, reps))[:, : round(seconds * ex.rate)].astype(np.float32)
    results = []
    for label, separator in separators():
        separator.separate_array(mix[:, : ex.rate], ex.rate)  # warm
        times: dict[str, list[float]] = {level: [] for level in LEVELS}
        for _ in range(rounds):
            for level in LEVELS:
                start = time.perf_counter()
                separator.separate_array(mix, ex.rate, quality=level)
                times[level].append(time.perf_counter() - start)
        results.append((label, {level: statistics.median(t) for level, t in times.items()}))
        print(label, {level: round(t, 2) for level, t in results[-1][1].items()}, flush=True)
    return results


def render(results: list[tuple[str, dict[str, float]]], seconds: float, rounds: int) -> str:
    rows = [
        [label, *(common.fmt(t[level]) for level in LEVELS),
         *(f"{t[level] / t['balanced']:.2f}x" for level in ("fast", "best"))]
        for label, t in results
    ]  # fmt: skip
    head = ["model", "fast s", "balanced s", "best s", "fast / balanced", "best / balanced"]
    return (
        "## Quality levels: what each costs (`benchmarks/quality_levels.py`)\n\n"
        + common.header("quality_levels.py")
        + f"\nSeparation of {seconds:g} s of music (the excerpt looped), model loaded, median of "
        f"{rounds} rounds, the levels alternating; default precision on this CPU. `best` is "
        "MSST's test-time augmentation for the RoFormers (3 passes), UVR's denoise for MDX-Net "
        "(2), demucs' shift trick for Demucs (4), and for Spleeter the averaged masks over 4 "
        "shifts. `fast` is Deezer's own pipeline for Spleeter; for the MSST models it runs at "
        "most two overlapping chunks (`inference.num_overlap: 2`), which changes nothing where "
        "the config sets 2 (Kim's) and halves the chunks where it sets 4 (the crowd "
        "remover's; on a song of one or two chunks the two counts differ little); for "
        "MDX-Net and Demucs it is the same computation as `balanced`. Where "
        "two levels run the same computation, what differs between their times is this "
        "shared machine's noise.\n\n" + common.table(head, rows) + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 40 s: several of an MSST model's 8-s chunks, so that their overlap (``fast``) shows.
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    results = measure(args.seconds, args.rounds)
    common.write_section("quality-levels", render(results, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
