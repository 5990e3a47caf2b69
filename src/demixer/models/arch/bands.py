"""The RoFormers' front and back ends: STFT, band split, mask estimation.

The reference runs one small network per band (60 or 62 bands): a norm and a linear layer into
the model, a 2-4 layer MLP and a GLU out of it, each a separate small matmul. Here the bands run
together as batched matmuls (``baddbmm``): the MLPs' hidden layers have the same shape in every
band and are stacked; the layers whose width is the band's own (band split in, last layer out)
are zero-padded to the widest band of a group of similar bands. The parameters stay the
reference's per-band ones (``to_features.k``, ``to_freqs.k``), so checkpoints load unchanged; the
stacked forms are built at the first call after the weights change, the hidden layers' per-band
weights then being views into the stacks (no second copy).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from demixer.models.arch.options import RoformerOptions
from demixer.models.arch.roformer import RMSNorm
from demixer.models.stft import stft_problem

__all__ = ["BandSplit", "MaskEstimator", "Stft", "band_groups", "complex_masks"]

_SLACK = 1.3  # a group's padded width may exceed its bands' total by this factor


def band_groups(sizes: Sequence[int], slack: float = _SLACK) -> list[tuple[int, int]]:
    """Consecutive bands ``[start, stop)`` whose padding to the widest among them wastes little.

    Bands grow in width from low to high frequencies, so neighbours are alike: BS-RoFormer's
    62 bands fall into its 7 widths exactly; Mel-Band RoFormer's 60 into about 8 groups.
    """
    groups = []
    start = 0
    while start < len(sizes):
        stop = start + 1
        while stop < len(sizes):
            widths = sizes[start : stop + 1]
            if max(widths) * len(widths) > slack * sum(widths):
                break
            stop += 1
        groups.append((start, stop))
        start = stop
    return groups


def _signature(module: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a parameter is replaced, moved, cast or written in place."""
    return tuple((p.data_ptr(), p.dtype, p._version) for p in module.parameters())


class BandSplit(nn.Module):
    """Per band: RMSNorm and a linear map of its ``2 s f_k`` STFT values to ``d`` features.

    ``(b, t, sum_k 2 s f_k)`` -> ``(b, t, k, d)`` float32; parameters ``to_features.k.{0,1}``.
    The output is float32 even under bf16 autocast: it starts the residual stream, which stays
    in float32 (accuracy) while the matmuls run in bf16 (speed).
    """

    def __init__(self, dim: int, dim_inputs: Sequence[int]) -> None:
        super().__init__()
        self.dim = dim
        self.dim_inputs = tuple(dim_inputs)
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(n), nn.Linear(n, dim)) for n in self.dim_inputs
        )
        self._groups = band_groups(self.dim_inputs)
        self._key: tuple[Any, ...] | None = None
        self._packed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _pack(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        key = _signature(self)
        if key == self._key:
            return self._packed
        offsets = [0, *itertools.accumulate(self.dim_inputs)]
        total = offsets[-1]
        packed = []
        with torch.no_grad(), torch.inference_mode(False):
            for start, stop in self._groups:
                width = max(self.dim_inputs[start:stop])
                lin: nn.Linear = self.to_features[start][1]  # type: ignore[index]
                index = torch.full((stop - start, width), total, dtype=torch.long)
                scale = torch.zeros(stop - start, 1, width, device=lin.weight.device)
                weight = lin.weight.new_zeros(stop - start, width, self.dim)
                bias = lin.weight.new_empty(stop - start, 1, self.dim)
                for j, k in enumerate(range(start, stop)):
                    n = self.dim_inputs[k]
                    norm: RMSNorm = self.to_features[k][0]  # type: ignore[index]
                    linear: nn.Linear = self.to_features[k][1]  # type: ignore[index]
                    index[j, :n] = torch.arange(offsets[k], offsets[k] + n)
                    scale[j, 0, :n] = norm.gamma.float() * math.sqrt(n)
                    weight[j, :n] = linear.weight.t()
                    bias[j, 0] = linear.bias
                packed.append((index.to(lin.weight.device), scale, weight, bias))
        self._key, self._packed = key, packed
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        padded = F.pad(x.float(), (0, 1))  # index `total` reads this zero
        outs = []
        for index, scale, weight, bias in self._pack():
            bands = padded[..., index].reshape(b * t, *index.shape).transpose(0, 1)
            norm = torch.linalg.vector_norm(bands, dim=-1, keepdim=True).clamp_min(1e-12)
            outs.append(torch.baddbmm(bias, bands / norm * scale, weight))  # (n, b*t, d)
        out = torch.cat(outs).float().transpose(0, 1)
        return out.reshape(b, t, len(self.dim_inputs), self.dim)


def _mlp(dim_in: int, dim_out: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` linear maps with tanh between them (the reference's ``MLP``)."""
    dims = (dim_in, *([hidden] * (layers - 1)), dim_out)
    net: list[nn.Module] = []
    for i in range(layers):
        net.append(nn.Linear(dims[i], dims[i + 1]))
        if i < layers - 1:
            net.append(nn.Tanh())
    return nn.Sequential(*net)


class MaskEstimator(nn.Module):
    """Per band: an MLP from ``d`` features to ``2 s f_k`` complex mask values, then a GLU.

    ``(b, t, k, d)`` -> ``(b, t, sum_k 2 s f_k)`` float32; parameters ``to_freqs.k.0.{0,2,...}``.
    ``layers`` is the number of linear maps (BS-RoFormer: ``mask_estimator_depth``;
    Mel-Band RoFormer: ``mask_estimator_depth + 1``, as the two references differ). The GLU
    runs in float32.
    """

    def __init__(self, dim: int, dim_inputs: Sequence[int], layers: int, expansion: int) -> None:
        super().__init__()
        self.dim_inputs = tuple(dim_inputs)
        self.layers = layers
        self.to_freqs = nn.ModuleList(
            nn.Sequential(_mlp(dim, n * 2, dim * expansion, layers), nn.GLU(dim=-1))
            for n in self.dim_inputs
        )
        self._groups = band_groups(self.dim_inputs)
        self._key: tuple[Any, ...] | None = None
        self._hidden: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._last: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _linears(self, layer: int) -> list[nn.Linear]:
        return [band[0][2 * layer] for band in self.to_freqs]  # type: ignore[index]

    def _pack(self) -> None:
        if _signature(self) == self._key:
            return
        hidden, last = [], []
        with torch.no_grad(), torch.inference_mode(False):
            for layer in range(self.layers - 1):
                linears = self._linears(layer)
                weight = torch.stack([lin.weight for lin in linears])  # (k, out, in)
                bias = torch.stack([lin.bias for lin in linears])[:, None]  # (k, 1, out)
                for k, lin in enumerate(linears):  # the per-band weights become views
                    lin.weight = nn.Parameter(weight[k], requires_grad=False)
                    lin.bias = nn.Parameter(bias[k, 0], requires_grad=False)
                hidden.append((weight, bias))
            linears = self._linears(self.layers - 1)
            for start, stop in self._groups:
                width = max(self.dim_inputs[start:stop])
                ref = linears[start].weight
                weight = ref.new_zeros(stop - start, ref.shape[1], 2, width)
                bias = ref.new_zeros(stop - start, 1, 2, width)
                keep = []
                for j, k in enumerate(range(start, stop)):
                    n = self.dim_inputs[k]
                    # (sizes spelt out: a Mel-Band RoFormer's band may hold no bin, n = 0)
                    weight[j, :, :, :n] = linears[k].weight.t().reshape(ref.shape[1], 2, n)
                    bias[j, 0, :, :n] = linears[k].bias.reshape(2, n)
                    keep.append(torch.arange(n) + j * width)
                index = torch.cat(keep).to(ref.device)
                last.append((weight.flatten(2), bias.flatten(2), index))
        self._hidden, self._last = hidden, last
        self._key = _signature(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, k, d = x.shape
        self._pack()
        h = x.permute(2, 0, 1, 3).reshape(k, b * t, d)
        for weight, bias in self._hidden:
            h = torch.baddbmm(bias, h, weight.transpose(1, 2)).tanh_()
        outs = []
        for (start, stop), (weight, bias, index) in zip(self._groups, self._last, strict=True):
            y = torch.baddbmm(bias, h[start:stop], weight).float()  # (n, b*t, 2 * width)
            width = weight.shape[-1] // 2  # spelt out: bands that hold no bin have width 0
            value, gate = y.unflatten(-1, (2, width)).unbind(-2)  # type: ignore[no-untyped-call]
            y = value * gate.sigmoid()  # the GLU, per band
            outs.append(y.transpose(0, 1).reshape(b * t, -1).index_select(1, index))
        return torch.cat(outs, dim=1).reshape(b, t, -1)


class Stft(nn.Module):
    """The reference's STFT: centred, reflect-padded, periodic Hann of ``win_length``.

    ``analyse``: ``(b, s, T)`` -> ``(b, F * s, t, 2)`` real/imaginary with bins major and
    channels interleaved (``(f s)``); ``synthesise``: ``(b, n, F * s, t)`` complex ->
    ``(b, n, s, T)``, the DC bin zeroed when ``zero_dc``. The window is a buffer made once.
    """

    window: torch.Tensor  # a buffer

    def __init__(self, opts: RoformerOptions) -> None:
        super().__init__()
        self.n_fft = opts.n_fft
        self.hop = opts.hop_length
        self.win_length = opts.win_length
        self.normalized = opts.normalized
        self.zero_dc = opts.zero_dc
        self.register_buffer("window", torch.hann_window(opts.win_length), persistent=False)

    @property
    def bins(self) -> int:
        """STFT bins ``F`` (``n_fft // 2 + 1``)."""
        return self.n_fft // 2 + 1

    def chunk_problem(self, samples: int) -> str | None:
        """Why ``samples``-sample chunks cannot go through this STFT and back; None if they can."""
        return stft_problem(self.window, n_fft=self.n_fft, hop=self.hop, samples=samples)

    def analyse(self, audio: torch.Tensor) -> torch.Tensor:
        b, s, samples = audio.shape
        spec = torch.stft(
            audio.reshape(b * s, samples).float(),
            n_fft=self.n_fft,
            hop_length=self.hop,
            win_length=self.win_length,
            window=self.window,
            normalized=self.normalized,
            return_complex=True,
        )
        real = torch.view_as_real(spec).reshape(b, s, self.bins, -1, 2)
        return real.transpose(1, 2).reshape(b, self.bins * s, -1, 2)

    def synthesise(self, spec: torch.Tensor, channels: int, samples: int) -> torch.Tensor:
        b, n, _, frames = spec.shape
        spec = spec.reshape(b * n, self.bins, channels, frames).transpose(1, 2)
        spec = spec.reshape(b * n * channels, self.bins, frames)
        if self.zero_dc:
            spec[:, 0] = 0.0
        audio = torch.istft(
            spec,
            n_fft=self.n_fft,
            hop_length=self.hop,
            win_length=self.win_length,
            window=self.window,
            normalized=self.normalized,
            length=samples,
        )
        return audio.reshape(b, n, channels, samples)


def complex_masks(masks: torch.Tensor) -> torch.Tensor:
    """``(b, n, t, M * 2)`` real mask outputs -> ``(b, n, M, t)`` complex64 (computed in fp32)."""
    b, n, t, _ = masks.shape
    pairs = masks.float().reshape(b, n, t, -1, 2).transpose(2, 3).contiguous()
    return torch.view_as_complex(pairs)
