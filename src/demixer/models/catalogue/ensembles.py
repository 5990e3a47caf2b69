"""Ensembles' ids and specs (the combining itself is :mod:`demixer.models.ensemble`).

An ensemble's id names its models, ``a+b`` (average of the waveforms) or ``max:a+b`` /
``min:a+b`` (UVR's max / min spec); the registry asks :func:`ensemble_spec` for ids it does not
know, so an ensemble runs wherever a model id goes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from demixer.errors import UnknownModel, UnknownStem
from demixer.models.catalogue.recipes import strictest
from demixer.models.planner import produces
from demixer.models.spec import ModelSpec

__all__ = ["LOADER", "MODES", "ensemble_id", "ensemble_members", "ensemble_spec", "remainder"]

LOADER = "demixer.models.ensemble:load"
MODES = ("avg", "max", "min")


def ensemble_id(members: Sequence[str], mode: str = "avg") -> str:
    """The id of the ensemble of ``members`` combined by ``mode`` (``a+b``, ``max:a+b``)."""
    joined = "+".join(members)
    return joined if mode == "avg" else f"{mode}:{joined}"


def _parse(model_id: str) -> tuple[str, list[str]] | None:
    mode, sep, rest = model_id.partition(":")
    if not sep:
        mode, rest = "avg", model_id
    members = rest.split("+")
    if mode not in MODES or len(members) < 2 or not all(members):
        return None
    return mode, members


def ensemble_members(model_id: str) -> list[str] | None:
    """The model ids ensemble ``model_id`` combines, or None when it is not an ensemble's id."""
    parsed = _parse(model_id)
    return parsed[1] if parsed is not None else None


def remainder(stems: Sequence[str]) -> str | None:
    """The stem of ``stems`` an ensemble takes as the input minus the others, if any."""
    return next((s for s in ("instrumental", "other") if s in stems), None)


def ensemble_spec(model_id: str, lookup: Callable[[str], ModelSpec]) -> ModelSpec | None:
    """The spec of ensemble ``model_id``, or None when it is not an ensemble's id.

    Args:
        lookup: model id -> spec (raises for an unknown member: the error names it).

    Raises:
        UnknownModel: a member is named twice. UnknownStem: the members share no stem.
    """
    parsed = _parse(model_id)
    if parsed is None:
        return None
    mode, names = parsed
    members = [lookup(m) for m in names]
    ids = [m.id for m in members]  # an alias (Kim_Vocal_2.onnx) as the id it names
    twice = [m for i, m in enumerate(ids) if m in ids[:i]]
    if twice:
        raise UnknownModel(f"ensemble {model_id!r} names {twice[0]!r} twice")
    model_id = ensemble_id(ids, mode)
    first = produces(members[0])
    stems = tuple(s for s in first if all(s in produces(m) for m in members[1:]))
    if not stems or stems == (remainder(stems),):
        raise UnknownStem(
            f"{', '.join(ids)} share no stem to combine: "
            + "; ".join(f"{m.id} makes {', '.join(produces(m))}" for m in members)
        )
    how = {"avg": "average of the waveforms", "max": "max spec", "min": "min spec"}[mode]
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
            "partial": remainder(stems) is None,
            "remainder": remainder(stems),
        },
        license_class=strictest([m.license_class for m in members]),
        source_url=members[0].source_url,
    )
