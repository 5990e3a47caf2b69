"""Ensembles' ids and specs (the combining itself is :mod:`demixer.models.ensemble`).

An ensemble's id names its models and how their estimates are combined: ``a+b`` (the average
of the waveforms), ``MODE:a+b`` for another :data:`MODES` (``max:a+b``: UVR's max spec), and
``a@2+b`` weighs ``a`` twice in the average (weights go with ``avg`` only, as in
audio-separator and MSST). audio-separator's and MSST's names for the modes they share with
demixer (``avg_wave``, ``max_fft``, ``uvr_max_spec``...: :data:`ALIASES`) are taken too and read
as demixer's. The registry asks :func:`ensemble_spec` for ids it does not know, so an ensemble
runs wherever a model id goes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal

from demixer.errors import UnknownModel, UnknownStem
from demixer.models.catalogue.recipes import strictest
from demixer.models.planner import produces
from demixer.models.spec import ModelSpec

__all__ = [
    "ALIASES",
    "FORM",
    "LOADER",
    "MODES",
    "ensemble_id",
    "ensemble_members",
    "ensemble_mode",
    "ensemble_spec",
    "remainder",
]

LOADER = "demixer.models.ensemble:load"
#: How an ensemble combines its members' estimates, per stem -> the words its spec says it in.
#: ``max`` / ``min`` / ``median_fft`` work per STFT bin (2048 points, hop 1024, as UVR), the
#: others per sample; each is audio-separator's ``Ensembler`` algorithm of the same name (``max``
#: / ``min``: its ``max_fft`` / ``min_fft``, UVR's max / min spec).
MODES = {
    "avg": "average of the waveforms",
    "max": "max spec",
    "min": "min spec",
    "median_wave": "per-sample median of the waveforms",
    "max_wave": "per sample, the loudest waveform",
    "min_wave": "per sample, the quietest waveform",
    "median_fft": "per-bin median of the spectrograms",
}
#: audio-separator's (``--ensemble_algorithm``) and MSST's (``--type``) names for demixer's
#: modes: an id or ``--ensemble-mode`` may use them. ``avg_fft`` is the average of the
#: waveforms: the STFT is linear, so averaging spectrograms gives the same samples.
ALIASES = {
    "avg_wave": "avg",
    "avg_fft": "avg",
    "max_fft": "max",
    "min_fft": "min",
    "uvr_max_spec": "max",
    "uvr_min_spec": "min",
}
#: How an ensemble's id is spelled, for the error that refuses a malformed one.
FORM = (
    "an ensemble's id is A+B (the average), MODE:A+B with MODE one of "
    + ", ".join(MODES)
    + " (or "
    + ", ".join(ALIASES)
    + "), and A@2+B weighs A twice in the average"
)
# A member's weight: a positive decimal number, `2`, `0.5`, `.5` (no sign, exponent or
# `inf`: each would need URL-escaping or reads as something else); 400 digits, a float's
# infinity, would make every sample NaN.
_WEIGHT = re.compile(r"[0-9]*\.?[0-9]+")


def ensemble_mode(word: str) -> str | None:
    """The mode ``word`` names (one of :data:`MODES`, or an alias of one), or None."""
    return word if word in MODES else ALIASES.get(word)


def ensemble_id(
    members: Sequence[str], mode: str = "avg", weights: Sequence[float] | None = None
) -> str:
    """The id of the ensemble of ``members`` combined by ``mode`` (``a+b``, ``max:a+b``), each
    member weighted by ``weights`` (``a@2+b``; a weight of 1 is left out)."""
    weights = weights or [1.0] * len(members)
    joined = "+".join(
        m if w == 1 else f"{m}@{Decimal(repr(float(w))).normalize():f}"
        for m, w in zip(members, weights, strict=True)
    )
    return joined if mode == "avg" else f"{mode}:{joined}"


class _Malformed(ValueError):
    """An id spelled as an ensemble's, but not a valid one (the message says what is wrong)."""


def _parse(model_id: str) -> tuple[str, list[str], list[float] | None] | None:
    """``model_id`` -> its mode (one of :data:`MODES`), members and weights (None: all 1), or
    None when it is not spelled as an ensemble's (no ``+`` or ``:``).

    Raises:
        _Malformed: spelled as an ensemble's, but wrong.
    """
    if "+" not in model_id and ":" not in model_id:
        return None
    word, sep, rest = model_id.partition(":")
    if not sep:
        word, rest = "avg", model_id
    mode = ensemble_mode(word)
    if mode is None:
        raise _Malformed(f"{word!r} is not an ensemble mode")
    members: list[str] = []
    weights: list[float] = []
    for part in rest.split("+"):
        name, at, weight = part.partition("@")
        if not name or ":" in name:
            raise _Malformed(f"{part!r} is not a model's id")
        if at and (not _WEIGHT.fullmatch(weight) or not 0 < float(weight) < math.inf):
            raise _Malformed(f"the weight {weight!r} of {name} is not a number above 0")
        members.append(name)
        weights.append(float(weight) if at else 1.0)
    if len(members) < 2:
        raise _Malformed("it names one model: an ensemble combines two or more")
    if all(w == 1 for w in weights):
        return mode, members, None
    if mode != "avg":
        # audio-separator and MSST ignore weights here (with a warning): refused, so an id
        # never names a weighting that is not applied.
        raise _Malformed(f"weights go with the average only, not with {word}")
    return mode, members, weights


def ensemble_members(model_id: str) -> list[str] | None:
    """The model ids ensemble ``model_id`` combines, or None when it is not an ensemble's id."""
    try:
        parsed = _parse(model_id)
    except _Malformed:
        return None
    return parsed[1] if parsed is not None else None


def remainder(stems: Sequence[str]) -> str | None:
    """The stem of ``stems`` an ensemble takes as the input minus the others, if any."""
    return next((s for s in ("instrumental", "other") if s in stems), None)


def ensemble_spec(model_id: str, lookup: Callable[[str], ModelSpec]) -> ModelSpec | None:
    """The spec of ensemble ``model_id``, or None when it is not an ensemble's id.

    Args:
        lookup: model id -> spec (raises for an unknown member: the error names it).

    Raises:
        UnknownModel: a malformed id (the message says what is wrong and gives the form), or a
            member named twice. UnknownStem: the members share no stem.
    """
    try:
        parsed = _parse(model_id)
    except _Malformed as exc:
        raise UnknownModel(f"ensemble {model_id!r}: {exc}; {FORM}") from None
    if parsed is None:
        return None
    mode, names, weights = parsed
    members = [lookup(m) for m in names]
    ids = [m.id for m in members]  # an alias (Kim_Vocal_2.onnx) as the id it names
    twice = [m for i, m in enumerate(ids) if m in ids[:i]]
    if twice:
        raise UnknownModel(f"ensemble {model_id!r} names {twice[0]!r} twice")
    model_id = ensemble_id(ids, mode, weights)
    first = produces(members[0])
    stems = tuple(s for s in first if all(s in produces(m) for m in members[1:]))
    if not stems or stems == (remainder(stems),):
        raise UnknownStem(
            f"{', '.join(ids)} share no stem to combine: "
            + "; ".join(f"{m.id} makes {', '.join(produces(m))}" for m in members)
        )
    how = MODES[mode]
    if weights is not None:
        how += ", weighted " + ", ".join(f"{w:g}" for w in weights)
    return ModelSpec(
        id=model_id,
        stems=stems,
        sample_rate=members[0].sample_rate,
        description=f"Ensemble of {', '.join(ids)} ({how}).",
        license="each model's own: " + ", ".join(f"{m.id} ({m.license_class})" for m in members),
        weights_source=f"the weights of {', '.join(ids)} (see their cards)",
        loader=LOADER,
        quality="not measured by demixer; see the members' cards",
        install_hint=f"fetch its models with `demixer models pull {model_id}` ({', '.join(ids)})",
        requires=tuple(ids),
        # No remainder stem (e.g. only vocals are shared): the stems leave the rest out.
        arch_params={
            "mode": mode,
            "weights": weights,
            "partial": remainder(stems) is None,
            "remainder": remainder(stems),
        },
        license_class=strictest([m.license_class for m in members]),
        source_url=members[0].source_url,
    )
