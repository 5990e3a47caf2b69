"""Network architectures of config-driven models, one module per family.

Every module ``demixer.models.arch.<name>`` exposes (:mod:`.scnet` also ``build_masked`` and
``build_tran``, its variants)::

    build(model: Mapping[str, Any], audio: Mapping[str, Any],
          instruments: Sequence[str], target_instrument: str | None) -> torch.nn.Module

where ``model`` and ``audio`` are the MSST config's sections as plain dicts. The module it
returns has the reference implementation's ``state_dict`` keys and shapes (so published
checkpoints load as they are), is inference-only, and maps ``(batch, channels, samples)`` float32
to ``(batch, stems, channels, samples)`` (or ``(batch, channels, samples)`` where the reference
returns that for one stem). It may run under ``torch.autocast`` (bf16/fp16): what must stay
float32 (STFTs, complex masks) it keeps in float32 itself. A config it cannot compute exactly as
the reference does, or that no network could run, raises
:class:`~demixer.errors.InvalidModelConfig` (a ``ValueError`` from ``build`` is turned into one
here). Its ``chunk_problem(samples) -> str | None`` says why it cannot run chunks of that many
samples (an STFT that cannot be inverted, frames its U-Net cannot halve), so a config's chunk
size is refused when it is read rather than at the first song (:func:`chunk_problem`).

:data:`ARCHITECTURES` maps each MSST ``model_type`` to its builder, imported only when used.
:data:`FP32_BY_DEFAULT` names the architectures whose bf16 output is too far from fp32 for
``auto`` precision to choose it (:func:`demixer.models.precision.resolve_precision`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from torch import nn

from demixer.errors import InvalidModelConfig, UnknownArchitecture

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINT_MARKS",
    "FP32_BY_DEFAULT",
    "SIGNATURES",
    "Builder",
    "build_model",
    "builder",
    "check_named_in_order",
    "checkpoint_arch",
    "chunk_problem",
]

Builder = Callable[[Mapping[str, Any], Mapping[str, Any], Sequence[str], str | None], nn.Module]

ARCHITECTURES: Mapping[str, str] = {
    "bs_roformer": "demixer.models.arch.bs_roformer:build",
    "mel_band_roformer": "demixer.models.arch.mel_band_roformer:build",
    "mdx23c": "demixer.models.arch.mdx23c:build",
    "scnet": "demixer.models.arch.scnet:build",
    "scnet_masked": "demixer.models.arch.scnet:build_masked",
    "scnet_tran": "demixer.models.arch.scnet:build_tran",
    "bs_conformer": "demixer.models.arch.bs_roformer:build_conformer",
    "mel_band_conformer": "demixer.models.arch.mel_band_roformer:build_conformer",
    "bandit": "demixer.models.arch.bandit:build",
    "bandit_v2": "demixer.models.arch.bandit:build_v2",
    "htdemucs": "demixer.models.arch.htdemucs:build",
    "apollo": "demixer.models.arch.apollo:build",
}

# MDX23C under bf16 autocast agrees with its fp32 output to only ~17 dB SNR on random
# full-size weights (MSST's own module exactly as much; benchmarks/RESULTS.md): by default it
# runs in fp32 even where bf16 is native. DEMIXER_PRECISION=bf16 still forces bf16. BandIt,
# Bandit v2, HTDemucs, SCNet's masked and transformer variants, the Conformers and Apollo too: their
# bf16 output has not been measured against fp32 on a machine that computes bf16 natively.
FP32_BY_DEFAULT: frozenset[str] = frozenset(
    {
        "mdx23c",
        "bandit",
        "bandit_v2",
        "htdemucs",
        "scnet_masked",
        "scnet_tran",
        "bs_conformer",
        "mel_band_conformer",
        "apollo",
    }
)

#: a ``model:`` option that every config MSST publishes for the architecture has, and that no
#: other architecture takes: a config given with another ``--arch`` is named for what it is
#: (it was refused for another architecture's reasons, "model.scale must be two positive
#: integers, not None", or a list of two dozen unknown options).
SIGNATURES: Mapping[str, str] = {
    "bs_roformer": "freqs_per_bands",
    "mel_band_roformer": "num_bands",
    "mdx23c": "num_subbands",
    "scnet": "band_SR",
    # SCNet's variants take scnet's options (scnet_tran adds tran_*, each with a default): a
    # config does not tell them apart, the checkpoint does (CHECKPOINT_MARKS).
    "scnet_masked": "band_SR",
    "scnet_tran": "band_SR",
    # The Conformers' options are the RoFormers', their depths named *_conformer_depth.
    "bs_conformer": "time_conformer_depth",
    "mel_band_conformer": "time_conformer_depth",
    "bandit": "band_specs",
    "bandit_v2": "n_sqm_modules",
    "htdemucs": "dconv_mode",
    "apollo": "feature_dim",
}


#: A key only checkpoints of that architecture have, among architectures whose configs look
#: alike (SCNet's variants, see SIGNATURES), the most specific first: a checkpoint given with
#: the wrong one of them is named for what it is (:func:`checkpoint_arch`).
CHECKPOINT_MARKS: Mapping[str, str] = {
    "scnet_masked": "pos_embed_f",
    "scnet_tran": "separation_net.dp_modules.0.freq_layer.norm.gamma",
    "scnet": "separation_net.dp_modules.0.lstm_layers.0.weight_ih_l0",
}


def checkpoint_arch(arch: str, keys: Collection[str]) -> str | None:
    """The architecture of :data:`CHECKPOINT_MARKS` a checkpoint with ``keys`` is for, when
    ``arch`` is one of them and it is another; else None."""
    if arch not in CHECKPOINT_MARKS:
        return None
    found = next((a for a, key in CHECKPOINT_MARKS.items() if key in keys), None)
    return found if found != arch else None


def builder(arch: str) -> Builder:
    """The ``build`` function of ``arch``; :class:`UnknownArchitecture` names the known ones."""
    target = ARCHITECTURES.get(arch)
    if target is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UnknownArchitecture(f"unknown architecture {arch!r}; demixer runs: {known}")
    module_name, _, name = target.partition(":")
    build: Builder = getattr(importlib.import_module(module_name), name)
    return build


def build_model(
    arch: str,
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> nn.Module:
    """Build ``arch`` from config sections, in eval mode (see the module docstring)."""
    build = builder(arch)
    if SIGNATURES[arch] not in model:
        other = next((a for a, key in SIGNATURES.items() if key in model), None)
        if other is not None:
            raise InvalidModelConfig(
                f"it is a config for {other} (it has model.{SIGNATURES[other]}), not for "
                f"{arch}: run it with --arch {other}"
            )
    try:
        network = build(model, audio, instruments, target_instrument)
    except ValueError as exc:  # a builder's own check of an option
        raise InvalidModelConfig(str(exc)) from None
    return network.eval()


def check_named_in_order(
    arch: str, option: str, stems: Sequence[str], instruments: Sequence[str], each: str
) -> None:
    """Raise ``ValueError`` unless ``training.instruments`` names as many stems as the
    network's ``option`` lists (``stems``): MSST names the network's outputs by the
    instruments, in order (``each``: what one output is, in the message)."""
    if len(stems) != len(instruments):
        raise ValueError(
            f"{arch}: {option} ({len(stems)}: {', '.join(stems)}) and training.instruments "
            f"({len(instruments)}: {', '.join(instruments)}) must name as many stems: the "
            f"network gives one per {each}, named by the instruments in order"
        )


def chunk_problem(network: nn.Module, samples: int) -> str | None:
    """Why ``network`` (from :func:`build_model`) cannot run ``samples``-sample chunks; None if
    it can (or does not say)."""
    check = getattr(network, "chunk_problem", None)
    return check(samples) if callable(check) else None
