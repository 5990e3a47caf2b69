"""How much a model config may ask for, checked when it is read.

What a config describes is computed or built when it is read, before its checkpoint is compared
with it: filterbanks, band tables and windows (their size grows with the STFT frame and the
band count) and the network's layers (built on the meta device: no memory for the weights, but
each layer is a Python object, and a million of them took minutes and gigabytes before the
process was killed). These limits sit well above every published model, so a config past one
is a typo or an attack, answered with the option named and why.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "MAX_BANDS",
    "MAX_LAYERS",
    "MAX_N_FFT",
    "MAX_STACKED_LAYERS",
    "MAX_STEMS",
    "bands_problem",
    "frame_problem",
    "layers_problem",
    "many_layers_problem",
    "stacked_layers_problem",
    "stems_problem",
]

#: The largest STFT frame a config may ask for, samples (1.5 s at 44.1 kHz; published models use
#: 2,048 to 8,192): a frame of 2**27 samples asked for gigabytes of window and filterbank.
MAX_N_FFT = 1 << 16
#: The most frequency bands a config may split its bins into (published models use 60 or 64):
#: a band layout is a (bands, bins) table.
MAX_BANDS = 1024
#: The most layers one option may stack (a RoFormer's ``depth``, SCNet's ``num_dplayer``,
#: Bandit's ``n_sqm_modules``, ...; published models use 1 to 16).
MAX_LAYERS = 64
#: The most transformer layers a network may hold in all, where options multiply (a RoFormer's
#: ``depth`` times its time, frequency and linear depths; published models hold up to 32).
MAX_STACKED_LAYERS = 256
#: The most stems a network may separate (published models separate 1 to 6): each has its own
#: output layers.
MAX_STEMS = 64

_MEMORY = "what a config describes is computed when it is read, and this would not fit in memory"
_BUILT = (
    "{} built when the config is read, before its checkpoint is compared with it (a million "
    "took minutes and gigabytes)"
)


def frame_problem(
    option: str, n_fft: int, usual: str = "2048 to 8192", why: str = _MEMORY
) -> str | None:
    """Why an STFT frame of ``n_fft`` samples (``option`` of the config) is refused, or None
    (``usual``: the frames published models of the kind use; ``why``: what the frame's size
    decides; both for the message)."""
    return _too_big(option, n_fft, MAX_N_FFT, "samples in an STFT frame", usual, why)


def bands_problem(option: str, bands: int) -> str | None:
    """Why ``bands`` frequency bands (``option`` of the config) are refused, or None."""
    return _too_big(option, bands, MAX_BANDS, "frequency bands", "60 or 64", _MEMORY)


def layers_problem(option: str, layers: int) -> str | None:
    """Why ``layers`` stacked layers (``option`` of the config) are refused, or None."""
    why = _BUILT.format("each layer is")
    return _too_big(option, layers, MAX_LAYERS, "layers one option stacks", "1 to 16", why)


def many_layers_problem(layers: Mapping[str, int]) -> str | None:
    """:func:`layers_problem` of the first of ``layers`` (option -> layers it stacks) over the
    limit, or None."""
    return next((p for option, n in layers.items() if (p := layers_problem(option, n))), None)


def stacked_layers_problem(options: str, layers: int) -> str | None:
    """Why a network of ``layers`` transformer layers in all (``options`` multiplied) is
    refused, or None."""
    why = _BUILT.format("each layer is")
    what = "transformer layers in all"
    return _too_big(options, layers, MAX_STACKED_LAYERS, what, "up to 32", why)


def stems_problem(option: str, stems: int) -> str | None:
    """Why a network of ``stems`` outputs (``option`` of the config) is refused, or None."""
    why = _BUILT.format("each stem's output layers are")
    return _too_big(option, stems, MAX_STEMS, "stems", "1 to 6", why)


def _too_big(option: str, value: int, limit: int, what: str, usual: str, why: str) -> str | None:
    if value <= limit:
        return None
    return (
        f"{option} ({value}) is over {limit}, the most {what} demixer takes (published models "
        f"use {usual}): {why}"
    )
