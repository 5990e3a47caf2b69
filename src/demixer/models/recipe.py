"""Recipes: named graphs of model steps, declared as data and run by the one graph runner
(:class:`demixer.models.cascade.GraphBackend`).

A recipe is a :class:`~demixer.models.spec.ModelSpec` whose ``arch_params["steps"]`` lists its
steps, each a plain mapping (reviewable like any catalogue entry, JSON-able)::

    {"model": "mel-roformer-karaoke-becruily",  # a registered model id
     "input": "vocals",                          # "mix" or a stem an earlier step made
     "keep": {"vocals": "lead_vocals"},          # model stem -> recipe stem
     "rest": "backing_vocals"}                   # the input minus the kept stems

``requires`` names the models, so ``models pull`` fetches them and a recipe is installed
exactly when they all are. Every catalogue recipe names a ``rest`` in every step: its stems add
up to the input (mixture consistency across the graph). The catalogue's recipes are declared in
:mod:`demixer.models.catalogue.recipes`.
"""

from __future__ import annotations

from pathlib import Path

from demixer.errors import ModelUnavailable
from demixer.models.base import Backend
from demixer.models.cascade import GraphBackend, Step
from demixer.models.loading import is_installed, load_backend
from demixer.models.registry import get_spec
from demixer.models.spec import ModelSpec

__all__ = ["load", "load_members"]


def load_members(
    spec: ModelSpec, model_dir: Path | None, model_path: Path | None, device: str
) -> dict[str, Backend]:
    """Every model a recipe or ensemble needs, loaded once each.

    Raises:
        ModelUnavailable: ``model_path`` was given (it names one model's weights) or a model is
            not installed (the message says how to pull them all).
    """
    if model_path is not None:
        raise ModelUnavailable(f"{spec.id!r} runs several models: --model-path is for one model")
    missing = [m for m in spec.requires if not is_installed(get_spec(m, model_dir), model_dir)]
    if missing:
        raise ModelUnavailable(
            f"{spec.id!r} needs {', '.join(missing)}, not installed: {spec.install_hint}"
        )
    return {m: load_backend(m, model_dir=model_dir, device=device) for m in spec.requires}


def load(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
) -> GraphBackend:
    """Load every model a recipe chains (each once, however many steps use it).

    Raises:
        ModelUnavailable: see :func:`load_members`; or the recipe's graph is inconsistent.
    """
    backends = load_members(spec, model_dir, model_path, device)
    steps = [
        Step(backends[s["model"]], s["input"], s["keep"], s["rest"], label=s["model"])
        for s in spec.arch_params["steps"]
    ]
    try:
        return GraphBackend(steps, spec.stems)
    except ValueError as exc:
        raise ModelUnavailable(f"recipe {spec.id!r} is inconsistent: {exc}") from None
