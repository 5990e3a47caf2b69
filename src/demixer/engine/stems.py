"""Which stems a request produces: the model's stems it names, plus the residual.

The residual is everything the requested stems leave out (input minus their sum), computed at
the input's own rate, so requested stems + residual always add back to the input exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from demixer.errors import UnknownStem

__all__ = ["RESIDUAL", "RESIDUAL_ALIASES", "StemPlan", "plan_stems"]

RESIDUAL = "residual"
# Names users reach for when they mean "everything else" in a two-way split.
RESIDUAL_ALIASES = ("instrumental", "accompaniment", "others", "other", "rest", "background")


@dataclass(frozen=True)
class StemPlan:
    """What to compute and what to call it.

    Attributes:
        targets: model stems to output, in the model's order.
        residual_name: the file name of the residual (``residual`` or the alias the user typed),
            or None when the request covers every model stem and asked for no residual.
    """

    targets: tuple[str, ...]
    residual_name: str | None

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every output name, residual last."""
        return self.targets + ((self.residual_name,) if self.residual_name else ())


def plan_stems(
    model_id: str, model_stems: Sequence[str], requested: Sequence[str] | None
) -> StemPlan:
    """Resolve a request against a model's stems.

    ``None`` or empty means every model stem. A model stem is taken as itself; ``residual``, or
    for a request of a single stem one of :data:`RESIDUAL_ALIASES` that is not a model stem,
    names the residual. Anything else raises :class:`UnknownStem` naming the valid choices.
    """
    names = [s.strip().lower() for s in requested or () if s.strip()]
    if not names:
        return StemPlan(tuple(model_stems), None)
    targets: list[str] = []
    residual_name: str | None = None
    for name in names:
        if name in model_stems:
            if name not in targets:
                targets.append(name)
        elif name == RESIDUAL or name in RESIDUAL_ALIASES:
            residual_name = residual_name or name
        else:
            valid = ", ".join([*model_stems, RESIDUAL])
            raise UnknownStem(
                f"model {model_id!r} cannot produce stem {name!r}; it produces: {valid}"
            )
    if not targets:
        raise UnknownStem(
            f"request at least one of {', '.join(model_stems)}: the residual alone is the input"
        )
    if residual_name not in (None, RESIDUAL) and len(targets) != 1:
        raise UnknownStem(
            f"{residual_name!r} means 'everything but the one stem requested'; request exactly "
            f"one of {', '.join(model_stems)} with it, or ask for 'residual'"
        )
    ordered = tuple(s for s in model_stems if s in targets)
    if residual_name is None and len(ordered) < len(model_stems):
        residual_name = RESIDUAL
    return StemPlan(ordered, residual_name)
