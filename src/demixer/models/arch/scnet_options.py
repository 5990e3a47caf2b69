"""The ``model:`` options of MSST's ``scnet``, ``scnet_masked`` and ``scnet_tran``, checked once
(the networks are in :mod:`.scnet`).

Besides each option's type and range, what the network's arithmetic needs is checked here,
before any song: the band convolutions of every encoder level must find bins to work on
(``band_SR``, ``band_kernel``, ``band_stride`` against the STFT's bins, in the reference's own
integer arithmetic), the dual-path layers come in pairs, the STFT window fits its frame and
frames are no further apart than it. ``scnet_masked`` takes the same options (its mask layer
is built for stereo, its Hann window ``nfft`` long); ``scnet_tran`` takes the ``tran_*`` options
of its dual-path transformers besides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from demixer.models.arch.limits import frame_problem, many_layers_problem, stems_problem

__all__ = [
    "BANDS",
    "DEFAULTS",
    "TRAN_DEFAULTS",
    "VARIANTS",
    "ScnetOptions",
    "TranOptions",
    "band_edges",
    "options",
]

BANDS = 3  # low, mid, high: the reference names exactly three


@dataclass(frozen=True)
class TranOptions:
    """The ``tran_*`` options of MSST's ``scnet_tran``: its dual-path layers' transformers
    (dropouts, and ``tran_flash_attn``, which changes no number, are read and not kept; the
    rotary width is checked equal to ``dim_head``, which is the one kept)."""

    depth: int
    heads: int
    dim_head: int


@dataclass(frozen=True)
class ScnetOptions:
    """The ``model:`` options of MSST's ``scnet`` (the official SCNet's constructor), and which
    of its variants they build: ``masked`` (``scnet_masked``: a learned frequency embedding
    added to the spectrogram, and the stems as a mask of it) or ``tran`` (``scnet_tran``:
    transformers in place of the dual-path LSTMs)."""

    sources: tuple[str, ...]
    audio_channels: int
    dims: tuple[int, ...]
    nfft: int
    hop_size: int
    win_size: int
    normalized: bool
    band_SR: tuple[float, float, float]  # the config's name
    band_stride: tuple[int, int, int]
    band_kernel: tuple[int, int, int]
    conv_depths: tuple[int, int, int]
    compress: float
    conv_kernel: int
    num_dplayer: int
    expand: int
    masked: bool = False
    tran: TranOptions | None = None


# The reference's defaults (the official constructor's), used for options a config leaves out.
DEFAULTS: dict[str, Any] = {
    "sources": ("drums", "bass", "other", "vocals"),
    "audio_channels": 2,
    "dims": (4, 32, 64, 128),
    "nfft": 4096,
    "hop_size": 1024,
    "win_size": 4096,
    "normalized": True,
    "band_SR": (0.175, 0.392, 0.433),
    "band_stride": (1, 4, 16),
    "band_kernel": (3, 4, 16),
    "conv_depths": (3, 2, 1),
    "compress": 4,
    "conv_kernel": 3,
    "num_dplayer": 6,
    "expand": 1,
}

# scnet_tran's own options, with its constructor's defaults.
TRAN_DEFAULTS: dict[str, Any] = {
    "tran_rotary_embedding_dim": 64,
    "tran_depth": 1,
    "tran_heads": 8,
    "tran_dim_head": 64,
    "tran_attn_dropout": 0.0,
    "tran_ff_dropout": 0.0,
    "tran_flash_attn": False,
}


def band_edges(bins: int, ratios: Sequence[float]) -> list[tuple[int, int]]:
    # The reference's float arithmetic exactly: ceil(F * low), ceil(F * (low + mid)).
    low = math.ceil(bins * ratios[0])
    mid = math.ceil(bins * (ratios[0] + ratios[1]))
    return [(0, low), (low, mid), (mid, bins)]


def _ints(value: Any, count: int | None, name: str, minimum: int | None = 1) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum)
        for v in value
    ):
        least = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"model.{name} must be a list of integers{least}, not {value!r}")
    if count is not None and len(value) != count:
        raise ValueError(f"model.{name} must have {count} entries, not {len(value)}")
    return tuple(value)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model.{name} must be an integer >= 1, not {value!r}")
    return value


def _frequency_problem(o: ScnetOptions) -> str | None:
    """Why the encoder's band convolutions cannot run on the STFT's bins (None if they can):
    the reference's arithmetic, level by level, on the bin counts alone (no tensors)."""
    bins = o.nfft // 2 + 1
    for level in range(1, len(o.dims)):
        out = 0
        for name, (start, end), k, s in zip(
            ("low", "mid", "high"),
            band_edges(bins, o.band_SR),
            o.band_kernel,
            o.band_stride,
            strict=True,
        ):
            size = end - start
            padded = size + (k - 1 if s == 1 else (s - size % s) % s)
            frames = (padded - k) // s + 1
            if size < 1 or padded < k or (frames - 1) * s + k < size:
                return (
                    f"at encoder level {level} the {name} band holds {max(size, 0)} of the "
                    f"{bins} bins (model.band_SR {list(o.band_SR)}), too few for its kernel "
                    f"{k} and stride {s} (model.band_kernel, model.band_stride)"
                )
            out += frames
        bins = out
    return None


#: The variants and what each adds to the official SCNet.
VARIANTS = ("scnet", "scnet_masked", "scnet_tran")


def options(model: Mapping[str, Any], arch: str = "scnet") -> ScnetOptions:
    """Check the ``model:`` section for ``arch`` (one of :data:`VARIANTS`; the reference's
    defaults fill what it leaves out); a ValueError's message starts with ``arch``."""
    try:
        return _options(model, arch)
    except ValueError as exc:
        raise ValueError(f"{arch}: {exc}") from None


def _options(model: Mapping[str, Any], arch: str) -> ScnetOptions:
    known = {**DEFAULTS, **(TRAN_DEFAULTS if arch == "scnet_tran" else {})}
    unknown = sorted(set(model) - set(known))
    if unknown:
        # The reference passes the section as keyword arguments: it fails on these too.
        tran = sorted(set(unknown) & set(TRAN_DEFAULTS))
        if tran:
            raise ValueError(
                f"model.{tran[0]} is an option of scnet_tran (SCNet with transformers), which "
                "this config is for: run it with --arch scnet_tran"
            )
        raise ValueError(f"unknown model option(s): {', '.join(unknown)}")
    m = {**known, **model}
    sources = m["sources"]
    if not isinstance(sources, list | tuple) or not sources:
        raise ValueError(f"model.sources must be a non-empty list, not {sources!r}")
    ratios = m["band_SR"]
    if (
        not isinstance(ratios, list | tuple)
        or len(ratios) != BANDS
        or not all(
            isinstance(r, int | float) and not isinstance(r, bool) and r >= 0 for r in ratios
        )
    ):
        raise ValueError(f"model.band_SR must be 3 proportions >= 0, not {ratios!r}")
    dims = _ints(m["dims"], None, "dims")
    if len(dims) < 2:
        raise ValueError("model.dims needs at least two entries")
    scalars = {k: m[k] for k in ("audio_channels", "nfft", "hop_size", "win_size")}
    scalars |= {k: m[k] for k in ("conv_kernel", "num_dplayer", "expand")}
    for key, value in scalars.items():
        _int(value, key)
    too_big = frame_problem("model.nfft", m["nfft"])
    if too_big:
        raise ValueError(too_big)
    if m["conv_kernel"] % 2 != 1:
        raise ValueError(f"model.conv_kernel must be odd, not {m['conv_kernel']}")
    if dims[0] != 2 * m["audio_channels"]:
        raise ValueError(
            f"model.dims[0] ({dims[0]}) must be 2 x audio_channels ({m['audio_channels']})"
        )
    if m["num_dplayer"] % 2:  # each pair of layers takes the time axis into an rFFT and back
        raise ValueError(f"model.num_dplayer must be even, not {m['num_dplayer']}")
    if m["win_size"] > m["nfft"] or m["hop_size"] > m["win_size"]:
        raise ValueError(
            f"model.win_size ({m['win_size']}) must be at most model.nfft ({m['nfft']}) "
            f"and model.hop_size ({m['hop_size']}) at most model.win_size: a window must fit "
            "its frame, and frames further apart than it leave gaps no inverse STFT can fill"
        )
    compress = m["compress"]
    if (
        isinstance(compress, bool)
        or not isinstance(compress, int | float)
        or not 0 < compress <= min(dims[1:])
    ):
        raise ValueError(
            f"model.compress must be a number in (0, {min(dims[1:])}] (the narrowest of "
            f"model.dims[1:] over it is each convolution module's width), not {compress!r}"
        )
    opts = ScnetOptions(
        sources=tuple(str(s) for s in sources),
        audio_channels=m["audio_channels"],
        dims=dims,
        nfft=m["nfft"],
        hop_size=m["hop_size"],
        win_size=m["win_size"],
        normalized=bool(m["normalized"]),
        band_SR=(float(ratios[0]), float(ratios[1]), float(ratios[2])),
        band_stride=_ints(m["band_stride"], BANDS, "band_stride"),  # type: ignore[arg-type]
        band_kernel=_ints(m["band_kernel"], BANDS, "band_kernel"),  # type: ignore[arg-type]
        conv_depths=_ints(m["conv_depths"], BANDS, "conv_depths", None),  # type: ignore[arg-type]
        compress=float(compress),
        conv_kernel=m["conv_kernel"],
        num_dplayer=m["num_dplayer"],
        expand=m["expand"],
        masked=arch == "scnet_masked",
        tran=_tran_options(m) if arch == "scnet_tran" else None,
    )
    if opts.masked and (opts.audio_channels != 2 or opts.win_size != opts.nfft):
        # The reference's mask layer takes 4 planes per stem, and its Hann window is nfft long
        # (torch's STFT refuses a window of another length than win_size).
        raise ValueError(
            f"model.audio_channels ({opts.audio_channels}) must be 2 and model.win_size "
            f"({opts.win_size}) equal model.nfft ({opts.nfft}): the reference builds its mask "
            "layer for stereo and its window nfft samples long"
        )
    problem = _size_problem(opts) or _frequency_problem(opts)
    if problem:
        raise ValueError(problem)
    return opts


def _size_problem(o: ScnetOptions) -> str | None:
    """Why the network ``o`` describes is too big to build (None if it is not)."""
    counts = {
        "model.num_dplayer": o.num_dplayer,
        "model.dims (less one: the encoder's levels)": len(o.dims) - 1,
        "model.conv_depths (its largest)": max(o.conv_depths),
        **({"model.tran_depth": o.tran.depth} if o.tran else {}),
    }
    return many_layers_problem(counts) or stems_problem("model.sources", len(o.sources))


def _tran_options(m: Mapping[str, Any]) -> TranOptions:
    for key in ("tran_rotary_embedding_dim", "tran_depth", "tran_heads", "tran_dim_head"):
        _int(m[key], key)
    for key in ("tran_attn_dropout", "tran_ff_dropout"):  # inference runs without dropout
        value = m[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise ValueError(f"model.{key} must be a number in [0, 1), not {value!r}")
    if not isinstance(m["tran_flash_attn"], bool):
        raise ValueError(
            f"model.tran_flash_attn must be true or false, not {m['tran_flash_attn']!r}"
        )
    if m["tran_rotary_embedding_dim"] != m["tran_dim_head"]:
        # rotary_embedding_torch then turns only part of each head (or fails, if it is wider).
        raise ValueError(
            f"model.tran_rotary_embedding_dim ({m['tran_rotary_embedding_dim']}) must equal "
            f"model.tran_dim_head ({m['tran_dim_head']}): demixer turns whole heads, as every "
            "published scnet_tran config does"
        )
    return TranOptions(
        depth=m["tran_depth"],
        heads=m["tran_heads"],
        dim_head=m["tran_dim_head"],
    )
