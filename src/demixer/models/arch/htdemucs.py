"""HTDemucs (Rouard, Massa and Défossez, 2023) as MSST trains and runs it: MSST's ``htdemucs``.

MSST builds this network as demucs' own ``HTDemucs`` class, from the config's ``htdemucs:``
section (the one ``model: htdemucs`` names) and ``training:``'s ``instruments`` (its sources),
``channels``, ``samplerate`` and ``segment``. Its copy of the class adds one option,
``num_subbands``, which every htdemucs config MSST publishes sets to 1; with 1 the copy is
demucs' class exactly (the same parameters, the same output: tested against MSST's own), and
defaults ``use_train_segment`` to false where demucs defaults it to true. So demixer builds
demucs' class, from the ``demucs`` package it runs Meta's own Demucs models with, with MSST's
default. :mod:`demixer.models.msst.config` reads the config as MSST does for this
architecture (OmegaConf's YAML: ``1e-3`` is a number) and puts ``training:``'s values among
the options.

MSST runs it through its "demucs" inference (:class:`demixer.models.msst.inference.Chunking`):
chunks of ``samplerate * segment`` samples, no fades, no edge padding.

Output: ``(batch, stems, channels, samples)``, one stem per instrument in order.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from demixer.models.demucs_backend import import_demucs

__all__ = ["build"]


def _htdemucs_class() -> Any:
    import_demucs()  # demucs' torch-only parts, imported once (ModelUnavailable if absent)
    return importlib.import_module("demucs.htdemucs").HTDemucs


def build(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> nn.Module:
    """HTDemucs from an MSST config's ``htdemucs:`` section (with ``training:``'s channels,
    sample rate and segment, which the config reader adds as ``audio_channels``,
    ``samplerate`` and ``segment``), in eval mode; its sources are ``training.instruments``.

    Raises:
        ValueError: ``num_subbands`` other than 1, an option demucs' class does not take, or
            values that make no network.
    """
    options = dict(model)
    subbands = options.pop("num_subbands", 1)
    if subbands != 1:
        raise ValueError(
            f"htdemucs: num_subbands {subbands!r} is not run by demixer: it runs HTDemucs with "
            "num_subbands 1, as every htdemucs config MSST publishes sets it"
        )
    options.setdefault("use_train_segment", False)  # MSST's copy's default (demucs': true)
    klass = _htdemucs_class()
    takes = set(inspect.signature(klass.__init__).parameters) - {"self", "sources"}
    unknown = sorted(set(options) - takes)
    if unknown:
        what = "is not an option" if len(unknown) == 1 else "are not options"
        raise ValueError(
            f"htdemucs: {', '.join(unknown)} {what} of demucs' HTDemucs (MSST would refuse "
            f"{'it' if len(unknown) == 1 else 'them'} too)"
        )
    try:
        network: nn.Module = klass(sources=list(instruments), **options)
    except (TypeError, ValueError, AssertionError, ZeroDivisionError, RuntimeError) as exc:
        raise ValueError(f"htdemucs: these options make no network: {exc}") from None
    return network.eval()
