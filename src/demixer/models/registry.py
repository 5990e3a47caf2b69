"""The model registry: every model demixer knows, with its stems, rate, weights and licence.

A :class:`ModelSpec` is pure data (``spec.py``); every entry demixer ships is declared in
``catalogue/`` (``builtin.py``: Spleeter, the DSP cascade, Meta's Demucs; the community
checkpoints: RoFormer, SCNet, MDX23C, MDX-Net; the recipes) and looked up here.
Loading goes through :func:`demixer.models.loading.load_backend`, which verifies every weights
file's SHA-256 before anything is deserialised.

Besides these, :func:`get_spec` and :func:`list_specs` see the user's own models and recipes
in the model directory (:mod:`demixer.models.user_models`, ``demixer models add``) and
ensembles' ids (:mod:`demixer.models.catalogue.ensembles`). Nothing this module imports imports
it back.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from demixer.errors import UnknownModel, unknown_model
from demixer.models.catalogue import SHIPPED, SHIPPED_ALIASES, SHIPPED_IDS
from demixer.models.catalogue.ensembles import ensemble_spec
from demixer.models.catalogue.recipes import user_recipes
from demixer.models.model_dir import RECIPES, default_model_dir
from demixer.models.spec import (
    LICENSE_CLASSES,
    RESTRICTIVE_CLASSES,
    LicenseClass,
    ModelSpec,
    Score,
    WeightFile,
)
from demixer.models.user_models import user_spec, user_specs

__all__ = [
    "LICENSE_CLASSES",
    "RESTRICTIVE_CLASSES",
    "LicenseClass",
    "ModelSpec",
    "Score",
    "WeightFile",
    "catalogue_ids",
    "get_spec",
    "list_specs",
    "model_card",
]

_SPECS = SHIPPED
_BY_ID = {spec.id: spec for spec in _SPECS}


def catalogue_ids() -> frozenset[str]:
    """The ids of the catalogue's models (never a user model's name)."""
    return SHIPPED_IDS


def list_specs(model_dir: Path | None = None) -> tuple[ModelSpec, ...]:
    """Every registered model, in display order: the catalogue, then the user's own models and
    recipes in ``model_dir`` (default ``$DEMIXER_MODEL_DIR``)."""
    return _SPECS + user_specs(model_dir) + _user_recipes(model_dir)


def _user_recipes(model_dir: Path | None = None) -> tuple[ModelSpec, ...]:
    """The recipes in ``<model_dir>/recipes/*.json``, whose steps may name catalogue models and
    the user's own (a faulty file: UnknownModel naming it, on every call, so it cannot go
    unnoticed)."""
    folder = (Path(model_dir) if model_dir is not None else default_model_dir()) / RECIPES
    known = {**_BY_ID, **{spec.id: spec for spec in user_specs(model_dir)}}
    try:
        return user_recipes(folder, known)
    except ValueError as exc:
        raise UnknownModel(str(exc)) from None


def get_spec(model_id: str, model_dir: Path | None = None) -> ModelSpec:
    """The spec for ``model_id``: a catalogue id or alias (``Kim_Vocal_2.onnx``), a user model or
    recipe in ``model_dir``, or an ensemble's id (``a+b``, ``max:a+b``); raises
    :class:`UnknownModel` naming the known ids, first the nearest to a typo's."""
    spec = _BY_ID.get(model_id) or _BY_ID.get(SHIPPED_ALIASES.get(model_id, ""))
    if spec is not None:
        return spec
    user = user_spec(model_id, model_dir)
    if user is not None:
        return user
    for recipe in _user_recipes(model_dir):
        if recipe.id == model_id:
            return recipe
    combined = ensemble_spec(model_id, lambda part: get_spec(part, model_dir))
    if combined is not None:
        return combined
    raise unknown_model(model_id, [s.id for s in list_specs(model_dir)], SHIPPED_ALIASES)


def model_card(model_id: str) -> str:
    """The model card (markdown) shipped with demixer for ``model_id``; for a user's recipe or
    an ensemble, one written from its spec."""
    spec = get_spec(model_id)
    card = resources.files("demixer.models").joinpath("cards", f"{spec.id}.md")
    if card.is_file():
        return card.read_text("utf-8")
    if not spec.requires:  # a user's own model: no card ships for it
        return (
            f"# {spec.id}\n\n{spec.description}.\n\n- Stems: {', '.join(spec.stems)}\n"
            f"- Sample rate: {spec.sample_rate} Hz\n- Weights: {spec.weights_source}\n"
            f"- Licence: {spec.license}\n"
        )
    return (
        f"# {spec.id}\n\n{spec.description}\n\n| | |\n|---|---|\n"
        f"| stems | {', '.join(spec.stems)} |\n| models | {', '.join(spec.requires)} |\n"
        f"| licence | {spec.license}; class **{spec.license_class}** |\n\n"
        "Not shipped with demixer: not reviewed, not measured by demixer.\n"
    )
