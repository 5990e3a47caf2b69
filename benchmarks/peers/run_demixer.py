"""Runner for demixer's own ``spleeter-2stems`` (the project venv), through its Python API.

``Separator("spleeter-2stems")`` loads the model once; ``separate_array(mix, rate,
stems=["vocals"])`` returns ``vocals`` and ``residual`` (everything else: the accompaniment) at
the input's rate, whatever that rate and channel count are (demixer resamples itself).
The U-Net's precision follows ``DEMIXER_PRECISION`` (default ``auto``: bf16 on CPUs with native
bf16, else fp32); the harness's ``demixer-fp32`` system sets it to ``fp32``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from _protocol import main

_t = time.perf_counter()
import torch  # noqa: E402

from demixer.engine import Separator  # noqa: E402

IMPORT_S = time.perf_counter() - _t


def load(threads: int) -> Separator:
    torch.set_num_threads(threads)
    return Separator("spleeter-2stems")


def separate(sep: Separator, mix: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    out = sep.separate_array(mix, rate, stems=["vocals"])
    return {"vocals": np.asarray(out["vocals"]), "accompaniment": np.asarray(out["residual"])}


def describe(sep: Separator) -> dict[str, Any]:
    """The U-Net precision demixer picks here (``DEMIXER_PRECISION``, default ``auto``)."""
    try:
        from demixer.models.spleeter import resolve_precision

        wanted = os.environ.get("DEMIXER_PRECISION", "auto")
        return {"precision": resolve_precision(wanted, torch.device("cpu"))}
    except Exception as exc:  # the engine is young: report, never fail the run over it
        return {"precision": f"unknown ({exc})"}


if __name__ == "__main__":
    main(load, separate, IMPORT_S, describe=describe)
