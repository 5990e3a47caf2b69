"""The compute precision of a model: one decision for every backend.

``auto`` is bf16 where the hardware runs it natively (CUDA with bf16, else fp16 on CUDA; CPUs
with AVX512-BF16/AMX, which oneDNN reports), fp32 elsewhere: on CPUs without native bf16 it is
emulated and slower than fp32. A model whose low-precision output is too far from its fp32
output asks ``auto`` for fp32 everywhere (``low_ok=False``: MDX23C).
``DEMIXER_PRECISION`` (auto, fp32, bf16, fp16) overrides it; asking a CPU for a precision it
only emulates is logged as a warning (on an AVX2 CPU bf16 matmuls ran at 0.8 % of fp32's rate).
torch is imported where a precision is resolved or used, not to read the setting: ``serve`` and
``worker`` check it at start in processes that never load a model (importing torch there cost
some 2 s of CPU and 185 MB of memory each).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from demixer.errors import InvalidSetting

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "PRECISION_ENV", "autocast", "requested_precision", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_ENV = "DEMIXER_PRECISION"

log = logging.getLogger(__name__)


def requested_precision(precision: str | None = None) -> str:
    """``precision`` if given, else ``$DEMIXER_PRECISION`` (any case; blank: unset), else
    ``auto``. A value that is none of :data:`PRECISIONS` raises
    :class:`~demixer.errors.InvalidSetting` naming them."""
    if precision:
        return precision
    value = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise InvalidSetting(
            f"{PRECISION_ENV}={os.environ[PRECISION_ENV]!r}: must be one of {', '.join(PRECISIONS)}"
        )
    return value


def resolve_precision(precision: str, device: torch.device, *, low_ok: bool = True) -> str:
    """The compute precision for ``device``: ``auto`` is bf16 where the hardware runs it natively
    and ``low_ok`` (the model computes well enough in it), else fp32.

    On the MUSDB excerpt bf16 moved Spleeter's SDR by at most 0.02 dB either way against fp32
    and runs its U-Net about twice as fast on AVX512-BF16 CPUs.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        if precision != "fp32" and device.type == "cpu" and not _native_on_cpu(precision):
            log.warning(
                "%s was asked for, but this CPU does not compute %s natively: emulated, it runs "
                "at about 1 %% of fp32's speed (%s=auto runs fp32 here)",
                precision, precision, PRECISION_ENV,
            )  # fmt: skip
        return precision
    if not low_ok:
        return "fp32"
    if device.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if _native_on_cpu("bf16") else "fp32"
    return "fp32"


def _native_on_cpu(precision: str) -> bool:
    """Whether oneDNN computes ``precision`` (bf16 or fp16) natively on this CPU."""
    import torch

    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    probe = {"bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported,
             "fp16": torch.ops.mkldnn._is_mkldnn_fp16_supported}[precision]  # fmt: skip
    return bool(probe())


@contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """``torch.autocast`` for a resolved ``precision`` (disabled for fp32). On CUDA, fp32 is
    fp32 throughout: cuDNN computes fp32 convolutions in TF32 (10 bits of mantissa) unless told
    not to (relative errors near 1e-3 a product, where fp32's are near 1e-7: more than the 1e-4
    that fp32 stems keep from the reference's), and matmuls too where the process allowed
    TF32 for them; both are off meanwhile. (Not measured on a GPU here: none was lent.)"""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        if device.type != "cuda" or precision != "fp32":
            yield
            return
        cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
        saved = cudnn.allow_tf32, matmul.allow_tf32
        cudnn.allow_tf32 = matmul.allow_tf32 = False
        try:
            yield
        finally:
            cudnn.allow_tf32, matmul.allow_tf32 = saved
