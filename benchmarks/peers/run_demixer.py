"""Runner for demixer's own ``spleeter-2stems`` (the project venv), through its Python API.

``Separator("spleeter-2stems")`` loads the model once; ``separate_array(mix, rate,
stems=["vocals"], quality=...)`` returns ``vocals`` and ``residual`` (everything else: the
accompaniment) at the input's rate, whatever that rate and channel count are (demixer resamples
itself). The quality level is ``DEMIXER_QUALITY`` (default: demixer's default level) and the
U-Net's precision ``DEMIXER_PRECISION`` (default ``auto``: bf16 on CPUs with native bf16, else
fp32), both set per system by the harness.

``BENCH_SPLEETER_PLAN`` (JSON: ``average``, ``wiener_iterations``, ``shifts``,
``channel_swap``, ``polarity``, ``level``) runs that
:class:`~demixer.models.spleeter.SpleeterPlan` in place of ``best``: the harness's ablations,
each one part of a level changed.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from _protocol import main

_t = time.perf_counter()
import torch  # noqa: E402

from demixer.engine import Separator  # noqa: E402

IMPORT_S = time.perf_counter() - _t


def _quality() -> str:
    from demixer.models.quality import DEFAULT_QUALITY

    return (
        "best"
        if os.environ.get("BENCH_SPLEETER_PLAN")
        else os.environ.get("DEMIXER_QUALITY", DEFAULT_QUALITY)
    )


def load(threads: int) -> Separator:
    torch.set_num_threads(threads)
    sep = Separator("spleeter-2stems")
    raw = os.environ.get("BENCH_SPLEETER_PLAN")
    if raw:
        from demixer.models.spleeter import SpleeterBackend, SpleeterPlan
        from demixer.models.tta import Augmentation

        spec = json.loads(raw)
        plan = SpleeterPlan(
            average=float(spec.get("average", 0.0)),
            wiener_iterations=int(spec.get("wiener_iterations", 0)),
            level=None if spec.get("level") is None else tuple(spec["level"]),
            augmentation=Augmentation(
                shifts=tuple(spec.get("shifts", (0,))),
                channel_swap=bool(spec.get("channel_swap", False)),
                polarity=bool(spec.get("polarity", False)),
            ),
        )
        assert isinstance(sep.backend, SpleeterBackend)
        sep.backend.plans = {**sep.backend.plans, "best": plan}
    return sep


def separate(sep: Separator, mix: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    out = sep.separate_array(mix, rate, stems=["vocals"], quality=_quality())
    return {"vocals": np.asarray(out["vocals"]), "accompaniment": np.asarray(out["residual"])}


def describe(sep: Separator) -> dict[str, Any]:
    """The U-Net precision and quality level demixer runs at here."""
    try:
        from demixer.models.spleeter import resolve_precision

        wanted = os.environ.get("DEMIXER_PRECISION", "auto")
        return {
            "precision": resolve_precision(wanted, torch.device("cpu")),
            "quality": _quality(),
        }
    except Exception as exc:  # report, never fail the run over it
        return {"precision": f"unknown ({exc})"}


if __name__ == "__main__":
    main(load, separate, IMPORT_S, describe=describe)
