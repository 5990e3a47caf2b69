"""What a job's owner is told when a worker's copy of its model could not be loaded.

A model missing or damaged on one machine is that machine's: the attempt goes back to the queue
(another worker's copy may load), and if none does, its owner reads what puts it right, run on
that machine, without the server's paths or hashes (those are in the worker's log).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from demixer.models.catalogue.ensembles import ensemble_members
from demixer.models.catalogue.recipes import recipe_file
from demixer.models.model_dir import RECIPES, default_model_dir
from demixer.models.registry import catalogue_ids

__all__ = ["unloadable_message"]


def unloadable_message(model: str, model_dir: Path | None, damaged: Sequence[str] = ()) -> str:
    """The job's message when a worker's copy of ``model`` could not be loaded (missing,
    damaged, removed): what puts it right, run on that machine (with `demixer serve` the job's
    owner is its operator), naming none of its paths or hashes (those are in the log).

    ``model_dir``: the worker's (None: the default), where a user's recipes are declared.
    ``damaged``: the models that worker found unusable (``Runner.unloadable``); one that
    an ensemble or a recipe is built on is named, with what puts it right.
    """
    said = f"model {model!r} could not be loaded on the worker that ran this attempt"
    parts = [name for name in damaged if name != model]
    if len(parts) > 1:
        named = ", ".join(repr(name) for name in parts)
        return f"{said}: its models {named} could not; the server's log has details"
    if parts:
        said += f": its model {parts[0]!r} could not"
    remedy = _remedy(parts[0] if parts else model, model_dir)
    if remedy is None:  # an ensemble or a recipe of your own: the log says which model failed
        return f"{said}; the server's log has details"
    return f"{said} (the server's log has details): {remedy}"


def _remedy(model: str, model_dir: Path | None) -> str | None:
    """What puts a worker's unusable copy of ``model`` right (None: none that one command
    names, for an ensemble or a recipe of the user's own)."""
    if model in catalogue_ids():
        return f"`demixer models pull {model}` on that machine fetches it again"
    if ensemble_members(model) is None and not _user_recipe(model, model_dir):
        # A model added with `demixer models add`: only its owner has its files, and a name
        # still taken by a damaged copy must be removed before it is added again.
        return (
            f"on that machine, `demixer models remove {model}`, then `demixer models add "
            f"{model}` with its files, adds it again"
        )
    return None


def _user_recipe(model: str, model_dir: Path | None) -> bool:
    return recipe_file((model_dir or default_model_dir()) / RECIPES, model) is not None
