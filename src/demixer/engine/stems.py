"""Which stems a request produces: the model's stems it names, plus the residual.

The residual is everything the requested stems leave out (input minus their sum), computed at
the input's own rate, so requested stems + residual always add back to the input exactly.

A residual the user did not name (added because the stems do not cover the model) is
*optional*: the engine returns it only when it is audible, i.e. its energy is above
:data:`SILENT_DB` relative to the input's (a model stem that is silent in this song leaves a
silent residual, and a file of zeros helps nobody).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from demixer.errors import NoStemsRequested, UnknownStem, did_you_mean
from demixer.models.planner import canonical_stem, canonical_stems, choose
from demixer.models.spec import ModelSpec

__all__ = [
    "HEARD",
    "RESIDUAL",
    "RESIDUAL_ALIASES",
    "SILENT_DB",
    "StemPlan",
    "choose_model",
    "is_silent",
    "plan_stems",
]

RESIDUAL = "residual"
# Not a stem: the key under which the engine's window paths return the input as the model
# heard it, brought back to the input's rate (see :attr:`StemPlan.rest`).
HEARD = "<heard>"
# Names users reach for when they mean "everything else" in a two-way split.
RESIDUAL_ALIASES = ("instrumental", "accompaniment", "others", "other", "rest", "background")
# An optional residual this far (dB) below the input's energy is silence: it is not returned.
SILENT_DB = -60.0


def is_silent(energy: float, input_energy: float) -> bool:
    """Whether a signal of ``energy`` (sum of squared samples) is silent next to an input of
    ``input_energy`` (the same sum over the input): at or below :data:`SILENT_DB`."""
    return bool(energy <= input_energy * 10.0 ** (SILENT_DB / 10.0))


@dataclass(frozen=True)
class StemPlan:
    """What to compute and what to call it.

    Attributes:
        targets: model stems to output, in the model's order.
        residual_name: the file name of the residual (``residual`` or the alias the user typed),
            or None when the request covers every model stem and asked for no residual.
        residual_optional: True when the user did not name the residual (it was added because
            the stems do not cover the model): it is dropped when silent (:func:`is_silent`).
    """

    targets: tuple[str, ...]
    residual_name: str | None
    residual_optional: bool = False

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every output name, residual last."""
        return self.targets + ((self.residual_name,) if self.residual_name else ())

    @property
    def rest(self) -> str | None:
        """The stem that takes what the model could not hear, when there is no residual.

        A model runs at its own rate (44.1 kHz): an input at another rate loses, on the way
        there and back, its content above the model's band (a 96 kHz file's 22-48 kHz) and a
        little at the resampler's edges. A residual holds that loss already. Without one, the
        last requested stem named like a residual (``accompaniment``, ``other``,
        ``instrumental``) takes it, so the stems of a model whose stems add up to its input
        (Spleeter's masks, MSST's instrumental) add up to the input at any rate. None when no
        stem is named so (``noreverb`` / ``reverb``): that content is then in no stem.
        """
        if self.residual_name is not None:
            return None
        return next((s for s in reversed(self.targets) if s in RESIDUAL_ALIASES), None)


def plan_stems(
    model_id: str,
    model_stems: Sequence[str],
    requested: Sequence[str] | None,
    *,
    partial: bool = False,
) -> StemPlan:
    """Resolve a request against a model's stems.

    ``None`` means every model stem; a list that names nothing (``[]``, ``[""]``) raises
    :class:`NoStemsRequested`. A model stem is taken as itself; ``residual``, or for a request
    of a single stem one of :data:`RESIDUAL_ALIASES` that is not a model stem, names the
    residual; another word for a model stem (``lead_vocal``, ``Vocals``, a 2-stem vocal model's
    ``other`` as ``instrumental``: :mod:`demixer.models.planner`) is that stem. Anything else
    raises :class:`UnknownStem` naming the valid choices. ``partial``: the model's stems do
    not add up to the input (:attr:`~demixer.models.spec.ModelSpec.partial`), so the residual
    comes with every request, as with one naming only some of them.
    """
    if requested is None:
        if partial:
            return StemPlan(tuple(model_stems), RESIDUAL, residual_optional=True)
        return StemPlan(tuple(model_stems), None)
    names = [s.strip().lower() for s in requested if s.strip()]
    if not names:
        raise NoStemsRequested(
            f"no stem was requested; model {model_id!r} produces: {', '.join(model_stems)}"
        )
    targets: list[str] = []
    residual_name: str | None = None
    native = {canonical: stem for stem, canonical in canonical_stems(model_stems).items()}
    for name in names:
        stem = name if name in model_stems else native.get(canonical_stem(name))
        if stem is not None and (name in model_stems or name not in RESIDUAL_ALIASES):
            if stem not in targets:
                targets.append(stem)
        elif name == RESIDUAL or name in RESIDUAL_ALIASES:
            residual_name = residual_name or name
        else:
            valid = [*model_stems, RESIDUAL]
            raise UnknownStem(
                f"model {model_id!r} cannot produce stem {name!r}{did_you_mean(name, valid)}; "
                f"it produces: {', '.join(valid)}"
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
    if residual_name not in (None, RESIDUAL) and targets[0] in RESIDUAL_ALIASES:
        # The residual of "accompaniment" is the vocals: a file named "instrumental" holding
        # them would mislead whoever opens it.
        raise UnknownStem(
            f"{residual_name!r} beside {targets[0]!r} would hold everything but {targets[0]!r}: "
            f"ask for {targets[0]!r} alone, or with 'residual'"
        )
    ordered = tuple(s for s in model_stems if s in targets)
    if residual_name is None and (partial or len(ordered) < len(model_stems)):
        return StemPlan(ordered, RESIDUAL, residual_optional=True)
    return StemPlan(ordered, residual_name)


def choose_model(requested: Sequence[str], installed: Sequence[ModelSpec]) -> ModelSpec | None:
    """The best of ``installed`` (model, recipe or ensemble) making every requested stem, by
    published figures (:func:`demixer.models.planner.choose`); None when the request names no
    stem of its own (only ``residual`` or its aliases, or nothing: the caller's default).

    Raises:
        UnknownStem: nothing installed makes them all; the message names what can be made.
    """
    names = [canonical_stem(s) for s in requested if s.strip()]
    stems = [s for s in names if s != RESIDUAL and s not in RESIDUAL_ALIASES]
    return choose(list(dict.fromkeys(stems)), installed) if stems else None
