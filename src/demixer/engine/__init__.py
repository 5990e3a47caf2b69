"""The separation engine: pure audio in, stems out (no database, API or storage)."""

from demixer.engine.separator import DEFAULT_MODEL, DEFAULT_TEMPLATE, FileResult, Separator
from demixer.engine.stems import RESIDUAL, StemPlan, plan_stems

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TEMPLATE",
    "RESIDUAL",
    "FileResult",
    "Separator",
    "StemPlan",
    "plan_stems",
]
