"""Apollo (Kai Li and Yi Luo, "Apollo: Band-sequence Modeling for High-Quality Audio
Restoration", ICASSP 2025), MSST's ``apollo``: audio restored from lossy compression (a
low-bitrate MP3's smeared highs and holes), not separated.

The network, as in the authors' code (JusperLee/Apollo, ``look2hear/models/apollo.py``) that
MSST carries, for each audio channel on its own:

- an STFT of ``win`` milliseconds (``sr * win // 1000`` samples, hop half of it, periodic Hann,
  centred with reflection), its bins cut into 80 bands: 79 of ``win_samples // 160`` bins and
  the rest in the last;
- per band, the bins divided by the band's RMS magnitude (its "power", plus float32's
  epsilon inside the root), real and imaginary parts beside the power's log, an RMSNorm and a
  1x1 convolution to ``feature_dim`` features;
- ``layer`` blocks, each a transformer across the 80 bands (8 heads, rotary positions, an RMSNorm
  before the fused QKV projection, a gated SiLU MLP of 4x width whose gate passes SiLU twice, as
  the reference computes it) then three residual convolution blocks along time (a depthwise
  convolution of 7, RMSNorm, 1x1 to 4x width, SiLU, 1x1 back);
- per band, an RMSNorm, a 1x1 convolution and a GLU give the band's restored spectrum (real and
  imaginary), which is inverted.

Output: ``(batch, channels, samples)``, one stem: the config's ``training.target_instrument``
(MSST's configs: ``restored``; the other instrument, ``addition``, is the mixture minus it).

The state_dict is the reference's (``BN``, ``net``, ``output``; its rotary tables stored as
``cos_freq`` / ``sin_freq`` buffers), so a checkpoint MSST loads (a bare state dict, or the
authors' file with it under ``state_dict``) loads as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from demixer.models.arch.limits import frame_problem, layers_problem
from demixer.models.stft import stft_problem

__all__ = ["Apollo", "ApolloOptions", "build", "options"]

_OPTIONS = ("sr", "win", "feature_dim", "layer")  # the reference's, none with a default
_BANDS = 80
_HEADS = 8
_ROTARY_WINDOW = 100  # the reference's rotary tables cover this many positions (bands)
_KERNEL = 7
#: numbers in the widest activation of one slice of rows (:func:`_in_slices`): 128 MiB in float32
_SLICE_NUMBERS = 1 << 25


@dataclass(frozen=True)
class ApolloOptions:
    """The ``model:`` options of MSST's ``apollo``."""

    sr: int
    win: int
    feature_dim: int
    layer: int

    @property
    def win_samples(self) -> int:
        return self.sr * self.win // 1000

    @property
    def band_widths(self) -> tuple[int, ...]:
        """Bins per band: 79 of ``win_samples // 160``, the last the rest."""
        width = self.win_samples // 160
        bins = self.win_samples // 2 + 1
        return (width,) * (_BANDS - 1) + (bins - width * (_BANDS - 1),)


def options(model: Mapping[str, Any]) -> ApolloOptions:
    unknown = sorted(set(model) - set(_OPTIONS))
    if unknown:  # the reference takes the section as keyword arguments: it fails on these too
        raise ValueError(f"apollo: unknown model option(s): {', '.join(unknown)}")
    missing = [key for key in _OPTIONS if key not in model]
    if missing:
        raise ValueError(f"apollo: model.{missing[0]} must be given (the reference has no default)")
    for key in _OPTIONS:
        value = model[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"apollo: model.{key} must be an integer >= 1, not {value!r}")
    opts = ApolloOptions(**{key: model[key] for key in _OPTIONS})
    too_many = layers_problem("model.layer", opts.layer)
    if too_many:
        raise ValueError(f"apollo: {too_many}")
    too_big = frame_problem("its STFT frame", opts.win_samples)
    if too_big:
        raise ValueError(
            f"apollo: model.win ({opts.win} ms at model.sr {opts.sr}) is too long: {too_big}"
        )
    if opts.win_samples < 160:
        raise ValueError(
            f"apollo: model.win ({opts.win} ms at model.sr {opts.sr}) gives a "
            f"{opts.win_samples}-sample window: at least 160 samples are needed for its 80 "
            "bands to hold a bin each"
        )
    hidden = opts.feature_dim // _HEADS
    if hidden < 2 or hidden % 2:
        raise ValueError(
            f"apollo: model.feature_dim ({opts.feature_dim}) must give its {_HEADS} attention "
            f"heads an even width of at least 2 (feature_dim // {_HEADS}, {hidden} here): "
            "rotary positions turn pairs of numbers"
        )
    return opts


class _RMSNorm(nn.Module):
    """Over the channels of ``(batch, channels, time)``, in float32, scaled per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-2, keepdim=True) + 1e-5)
        return y.type_as(x) * self.weight[:, None]


class _BandAttention(nn.Module):
    """The reference's ``Roformer``: attention across the bands of one frame, rotary positions,
    a gated MLP; ``(items, features, bands)`` in and out."""

    cos_freq: torch.Tensor
    sin_freq: torch.Tensor

    def __init__(self, features: int) -> None:
        super().__init__()
        self.hidden = features // _HEADS
        cos, sin = _rotary_tables(self.hidden)
        self.register_buffer("cos_freq", cos)
        self.register_buffer("sin_freq", sin)
        self.input_norm = _RMSNorm(features)
        self.weight = nn.Conv1d(features, self.hidden * _HEADS * 3, 1, bias=False)
        self.output = nn.Conv1d(self.hidden * _HEADS, features, 1, bias=False)
        self.MLP = nn.Sequential(
            _RMSNorm(features), nn.Conv1d(features, features * 8, 1, bias=False), nn.SiLU()
        )
        self.MLP_output = nn.Conv1d(features * 4, features, 1, bias=False)

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotary positions on ``(..., positions, hidden)``, pairs interleaved."""
        steps = x.shape[-2]
        pairs = x.reshape(*x.shape[:-1], -1, 2)
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * self.cos_freq[:steps] + turned * self.sin_freq[:steps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        items, _, steps = x.shape
        qkv = self.weight(self.input_norm(x)).reshape(items, _HEADS, self.hidden * 3, steps).mT
        q, k, v = qkv.split(self.hidden, dim=-1)
        attended = F.scaled_dot_product_attention(
            self._rotate(q).contiguous(), self._rotate(k).contiguous(), v.contiguous()
        )
        x = self.output(attended.mT.reshape(items, -1, steps)) + x
        gate, z = self.MLP(x).chunk(2, dim=1)  # SiLU already applied: the gate gets it twice
        out: torch.Tensor = x + self.MLP_output(F.silu(gate) * z)
        return out


def _rotary_tables(hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's cos and sin tables, ``(window, hidden)``, each frequency twice in a row
    (as it computes them: float32 from integer positions and exponents)."""
    exponents = torch.arange(0, hidden, 2, device="cpu")[: hidden // 2] / hidden
    freq = (1.0 / (10000**exponents)).reshape(1, -1)
    angles = torch.arange(0, _ROTARY_WINDOW, device="cpu").reshape(-1, 1) * freq
    return (
        torch.stack([torch.cos(angles)] * 2, -1).reshape(_ROTARY_WINDOW, hidden),
        torch.stack([torch.sin(angles)] * 2, -1).reshape(_ROTARY_WINDOW, hidden),
    )


class _ConvBlock(nn.Module):
    """Depthwise convolution, RMSNorm, 1x1 up 4x, SiLU, 1x1 back, plus the input."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(features, features, _KERNEL, padding=_KERNEL // 2, groups=features),
            _RMSNorm(features),
            nn.Conv1d(features, features * 4, 1),
            nn.SiLU(),
            nn.Conv1d(features * 4, features, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.conv(x)
        return out


class _TimeBlocks(nn.Module):  # the reference's ICB: its weights under `blocks`
    def __init__(self, features: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(_ConvBlock(features) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.blocks(x)
        return out


class _Layer(nn.Module):
    """Across the bands (each frame), then along time (each band)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.band_net = _BandAttention(features)
        self.seq_net = _TimeBlocks(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(items, bands, features, frames)`` in and out."""
        items, bands, features, frames = x.shape
        across = x.permute(0, 3, 2, 1).reshape(items * frames, features, bands)
        x = _in_slices(self.band_net, across, 8 * features * bands)
        x = x.reshape(items, frames, features, bands).permute(0, 3, 2, 1)
        along = _in_slices(
            self.seq_net, x.reshape(items * bands, features, frames), 4 * features * frames
        )
        return along.reshape(items, bands, features, frames)


def _in_slices(layer: nn.Module, x: torch.Tensor, widest: int) -> torch.Tensor:
    """``layer`` over the rows of ``x`` (independent items: a frame's bands, a band's frames)
    a slice at a time, so that its widest activation (``widest`` numbers a row) stays near
    :data:`_SLICE_NUMBERS`: the same numbers as all at once, without the whole chunk's 8x-wide
    MLP in memory at once (gigabytes for a 20-s chunk)."""
    rows = max(1, _SLICE_NUMBERS // widest)
    if x.shape[0] <= rows:
        out: torch.Tensor = layer(x)
        return out
    return torch.cat([layer(x[start : start + rows]) for start in range(0, x.shape[0], rows)])


class Apollo(nn.Module):
    """MSST's ``apollo`` for inference (see the module docstring)."""

    window: torch.Tensor

    def __init__(self, o: ApolloOptions) -> None:
        super().__init__()
        self.opts = o
        self.widths = o.band_widths
        self.n_fft, self.hop = o.win_samples, o.win_samples // 2
        # The reference makes its window on each call; kept here unsaved (not in its keys).
        self.register_buffer("window", torch.hann_window(self.n_fft, device="cpu"), False)
        self.BN = nn.ModuleList(
            nn.Sequential(_RMSNorm(w * 2 + 1), nn.Conv1d(w * 2 + 1, o.feature_dim, 1))
            for w in self.widths
        )
        self.net = nn.Sequential(*(_Layer(o.feature_dim) for _ in range(o.layer)))
        self.output = nn.ModuleList(
            nn.Sequential(
                _RMSNorm(o.feature_dim), nn.Conv1d(o.feature_dim, w * 4, 1), nn.GLU(dim=1)
            )
            for w in self.widths
        )

    def chunk_problem(self, samples: int) -> str | None:
        """Why the network cannot run ``samples``-sample chunks (None if it can)."""
        return stft_problem(self.window, n_fft=self.n_fft, hop=self.hop, samples=samples)

    def _features(self, spec: torch.Tensor) -> torch.Tensor:
        """``(items, bins, frames)`` complex -> ``(items, bands, feature_dim, frames)``."""
        eps = torch.finfo(torch.float32).eps
        features, start = [], 0
        for width, bottleneck in zip(self.widths, self.BN, strict=True):
            band = spec[:, start : start + width]
            start += width
            power = (band.abs().pow(2).sum(1) + eps).sqrt().unsqueeze(1)
            parts = torch.cat([band.real / power, band.imag / power, torch.log(power)], 1)
            features.append(bottleneck(parts))
        stacked: torch.Tensor = torch.stack(features, 1)
        return stacked

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        batch, channels, samples = wave.shape
        device = wave.device.type
        with torch.autocast(device, enabled=False):
            spec = torch.stft(
                wave.float().reshape(batch * channels, samples), n_fft=self.n_fft,
                hop_length=self.hop, window=self.window, return_complex=True,
            )  # fmt: skip
        feature = self.net(self._features(spec))
        bands = []
        for i, head in enumerate(self.output):
            ri = head(feature[:, i]).float()
            ri = ri.reshape(ri.shape[0], 2, self.widths[i], ri.shape[-1])
            bands.append(torch.complex(ri[:, 0], ri[:, 1]))
        with torch.autocast(device, enabled=False):
            out = torch.istft(
                torch.cat(bands, 1), n_fft=self.n_fft, hop_length=self.hop, window=self.window,
                length=samples,
            )  # fmt: skip
        return out.reshape(batch, channels, -1)


def build(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> Apollo:
    """Apollo from an MSST config's ``model:`` section, in eval mode. It gives one stem, so the
    config names it with ``training.target_instrument`` (or lists one instrument)."""
    if not target_instrument and len(instruments) != 1:
        raise ValueError(
            "apollo: the network gives one stem (the restored audio): training."
            f"target_instrument must name it among training.instruments ({', '.join(instruments)})"
        )
    return Apollo(options(model)).eval()
