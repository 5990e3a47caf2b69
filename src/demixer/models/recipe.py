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
from demixer.models.cascade import GraphBackend, Step
from demixer.models.loading import load_backend
from demixer.models.spec import ModelSpec

__all__ = ["load"]


def load(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
) -> GraphBackend:
    """Load every model a recipe chains (each once, however many steps use it).

    Raises:
        ModelUnavailable: ``model_path`` was given (a recipe has several models), a model is
            missing, or the recipe's graph is inconsistent.
    """
    if model_path is not None:
        raise ModelUnavailable(
            f"{spec.id!r} is a recipe of several models: --model-path applies to one model"
        )
    backends = {m: load_backend(m, model_dir=model_dir, device=device) for m in spec.requires}
    steps = [
        Step(backends[s["model"]], s["input"], s["keep"], s["rest"], label=s["model"])
        for s in spec.arch_params["steps"]
    ]
    try:
        return GraphBackend(steps, spec.stems)
    except ValueError as exc:
        raise ModelUnavailable(f"recipe {spec.id!r} is inconsistent: {exc}") from None
