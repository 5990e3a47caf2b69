"""Where model weights live: one directory, ``$DEMIXER_MODEL_DIR`` or the user's cache."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

__all__ = ["default_model_dir"]


def default_model_dir() -> Path:
    """``$DEMIXER_MODEL_DIR`` or ``<user cache dir>/demixer/models``."""
    env = os.environ.get("DEMIXER_MODEL_DIR")
    return Path(env) if env else Path(user_cache_dir("demixer")) / "models"
