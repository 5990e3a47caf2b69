"""The Demucs networks as MSST trains and runs them: MSST's ``htdemucs`` model type.

MSST builds one of demucs' own classes, named by the config's ``model:``: ``htdemucs`` (Hybrid
Transformer Demucs, Rouard, Massa and Défossez, 2023: MSST's vocals and 4-stem models),
``hdemucs`` (Hybrid Demucs v3, Défossez, 2021: inagoy's DrumSep, MSST's MMI config) or
``demucs`` (v2), from the section that name names and ``training:``'s ``instruments`` (its
sources), ``channels``, ``samplerate`` and ``segment``. For ``hdemucs`` and ``demucs`` MSST
imports demucs' classes as they are. For ``htdemucs`` it keeps a copy that adds one option,
``num_subbands``, which every htdemucs config MSST publishes sets to 1; with 1 the copy is
demucs' class exactly (the same parameters, the same output: tested against MSST's own), and
defaults ``use_train_segment`` to false where demucs defaults it to true. So demixer builds
demucs' classes, from the ``demucs`` package it runs Meta's own Demucs models with, with MSST's
default. :mod:`demixer.models.msst.config` reads the config as MSST does for this model type
(OmegaConf's YAML: ``1e-3`` is a number) and puts ``training:``'s values and the network's
name (``model``) among the options.

MSST runs them through its "demucs" inference (:class:`demixer.models.msst.inference.Chunking`):
chunks of ``samplerate * segment`` samples, no fades, no edge padding.

Output: ``(batch, stems, channels, samples)``, one stem per instrument in order.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from demixer.models.arch.limits import frame_problem, many_layers_problem
from demixer.models.demucs_backend import import_demucs

__all__ = ["build"]

#: ``model:`` -> demucs' class (module, name)
_CLASSES = {
    "demucs": ("demucs.demucs", "Demucs"),
    "hdemucs": ("demucs.hdemucs", "HDemucs"),
    "htdemucs": ("demucs.htdemucs", "HTDemucs"),
}


def _demucs_class(name: str) -> Any:
    import_demucs()  # demucs' torch-only parts, imported once (ModelUnavailable if absent)
    module, attribute = _CLASSES[name]
    return getattr(importlib.import_module(module), attribute)


def build(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> nn.Module:
    """The network ``model["model"]`` names (default ``htdemucs``) from the options of its
    section (with ``training:``'s channels, sample rate and segment, which the config reader
    adds as ``audio_channels``, ``samplerate`` and ``segment``), in eval mode; its sources are
    ``training.instruments``.

    Raises:
        ValueError: another network, ``num_subbands`` other than 1, an option demucs' class
            does not take, or values that make no network.
    """
    options = dict(model)
    name = options.pop("model", "htdemucs")
    if name not in _CLASSES:
        raise ValueError(f"htdemucs: MSST builds demucs' {', '.join(_CLASSES)}, not {name!r}")
    if name == "htdemucs":
        subbands = options.pop("num_subbands", 1)
        if subbands != 1:
            raise ValueError(
                f"htdemucs: num_subbands {subbands!r} is not run by demixer: it runs HTDemucs "
                "with num_subbands 1, as every htdemucs config MSST publishes sets it"
            )
        options.setdefault("use_train_segment", False)  # MSST's copy's default (demucs': true)
    klass = _demucs_class(name)
    takes = set(inspect.signature(klass.__init__).parameters) - {"self", "sources"}
    unknown = sorted(set(options) - takes)
    if unknown:
        what = "is not an option" if len(unknown) == 1 else "are not options"
        raise ValueError(
            f"{name}: {', '.join(unknown)} {what} of demucs' {klass.__name__} (MSST would refuse "
            f"{'it' if len(unknown) == 1 else 'them'} too)"
        )
    too_big = _size_problem(name, options)
    if too_big:
        raise ValueError(f"{name}: {too_big}")
    try:
        network: nn.Module = klass(sources=list(instruments), **options)
    except (TypeError, ValueError, AssertionError, ZeroDivisionError, RuntimeError) as exc:
        raise ValueError(f"{name}: these options make no network: {exc}") from None
    return network.eval()


#: Options of demucs' classes that stack layers (the rest are widths, kernels, strides).
_LAYER_OPTIONS = ("depth", "dconv_depth", "t_layers", "lstm_layers")


def _size_problem(name: str, options: Mapping[str, Any]) -> str | None:
    """Why the network ``options`` describe is too big to build (None if it is not; ill-typed
    values are left to demucs' class to refuse)."""

    def given(key: str) -> int | None:
        value = options.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    layers = {f"{name}.{key}": n for key in _LAYER_OPTIONS if (n := given(key)) is not None}
    nfft = given("nfft")
    return many_layers_problem(layers) or (
        frame_problem(f"{name}.nfft", nfft) if nfft is not None else None
    )
