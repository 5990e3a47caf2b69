"""Where model weights live: one directory, ``$DEMIXER_MODEL_DIR`` or the user's cache."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

from demixer.errors import InvalidModelDir

__all__ = ["RECIPES", "default_model_dir", "usable_model_dir"]

#: the folder of the user's recipes in the model directory (never a model's)
RECIPES = "recipes"


def default_model_dir() -> Path:
    """``$DEMIXER_MODEL_DIR`` (``~`` expanded) or ``<user cache dir>/demixer/models``."""
    env = os.environ.get("DEMIXER_MODEL_DIR")
    # A .env file, docker compose and systemd pass "~/models" as it is written: without the
    # expansion the weights would go into a folder named "~" in whatever the current folder is.
    return Path(env).expanduser() if env else Path(user_cache_dir("demixer")) / "models"


def usable_model_dir(path: Path) -> Path:
    """``path``, created if need be, to write weights or a model into.

    Raises:
        InvalidModelDir: it cannot be created (a file in the way, no permission, ...).
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidModelDir(
            f"cannot use {path} as the model directory: {exc.strerror or exc} "
            "(DEMIXER_MODEL_DIR chooses another)"
        ) from None
    return path
