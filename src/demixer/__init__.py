"""demixer: self-hostable music source separation.

How the package is laid out, following one job from upload to webhook: docs/architecture.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from demixer.errors import DemixerError, InvalidAudio, ModelUnavailable, UnknownStem

if TYPE_CHECKING:
    from demixer import webhooks
    from demixer.client import AsyncClient, Client

__version__ = "0.2.0.dev0"

__all__ = [
    "AsyncClient",
    "Client",
    "DemixerError",
    "InvalidAudio",
    "ModelUnavailable",
    "UnknownStem",
    "__version__",
    "webhooks",
]

# Imported on first use, so `import demixer` stays light (no httpx, torch or numpy).
_LAZY = {"Client": "demixer.client", "AsyncClient": "demixer.client", "webhooks": None}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'demixer' has no attribute {name!r}")
    module = _LAZY[name]
    if module is None:
        return import_module(f"demixer.{name}")
    return getattr(import_module(module), name)
