"""SCNet: sparse compression network (Tong et al., 2024), MSST's ``scnet``.

The pipeline, as in the official implementation (starrytong/SCNet) that MSST's ``scnet`` carries:

- the input is padded at the end so that the STFT has an even number of frames (by
  ``hop_size`` more than needed when the samples already fill whole hops), then a centred,
  reflect-padded STFT with a rectangular window (``nfft``, ``hop_size``, ``win_size``,
  ``normalized``); real and imaginary parts of each channel become four planes;
- an encoder of ``len(dims) - 1`` sparse down-sampling blocks: the bins are split into low, mid
  and high bands (``band_SR`` proportions), each band is convolved along frequency with its own
  stride and kernel (``band_stride``, ``band_kernel``), runs ``conv_depths`` residual
  convolution modules along time (GLU, depthwise conv, Swish; ``compress``, ``conv_kernel``)
  and a GELU, and a 3x3 convolution mixes the bands again;
- a separation network of ``num_dplayer`` dual-path layers (a bidirectional LSTM across
  frequency, then one across time, each with a linear map back and a residual), between which
  the features alternate into and out of the frequency domain of the time axis (an
  orthonormal real FFT whose real and imaginary parts double the channels);
- a decoder of fusion layers (skip added, a gated 3x3 convolution) and sparse up-sampling
  layers (a transposed convolution per band, trimmed to the band's size), giving real and
  imaginary planes per stem and channel for the inverse STFT.

Output: ``(batch, stems, channels, samples)``, the stems being ``model.sources``.

Two variants MSST trains and publishes are built by the same class:

- ``scnet_masked`` (MSST's ``models/scnet/scnet_masked.py``; "SCNet Masked" small and XL IHF):
  a periodic Hann window ``nfft`` long in place of the rectangular one; a learned embedding
  per frequency bin (``pos_embed_f``, ``(1, dims[0], nfft // 2 + 1, 1)``) added to the
  spectrogram before the encoder; and the decoder's output is not the stems' spectrograms but,
  through a mask layer (3x3 conv to 64 channels, GELU, 1x1 conv back, tanh), a complex mask
  each stem's spectrogram is the mixture's times, per audio channel.
- ``scnet_tran`` (``scnet_tran.py``; "SCNet Tran"): each dual-path layer is a transformer
  across frequency then one across time (RMSNorm, gated attention with rotary positions, a
  feed-forward of 4x width; all frequency transformers share one rotary embedding, all time
  transformers another), each after a GroupNorm and with a residual, in place of the two
  LSTMs; the modules are the RoFormers' (:mod:`.roformer`), with the reference's parameter
  names. Its ``first_conv`` (a 1x1 conv on the spectrogram) is built and loaded as the
  reference's is, and as there never run.

The LSTMs are torch's own (oneDNN on CPU): a hand-written recurrence (both directions batched,
the input projection hoisted out of the loop) computed the same numbers but was slower, its
dozen small operations per step each paying a thread-pool round trip. They are fed
step-major, bf16 sequences padded to a multiple of 32, and the linear maps after them computed
transposed (:func:`_lstm_linear`): the same arithmetic as MSST's, 1.3x (SCNet) to 1.6x (XL IHF)
faster in bf16 than the plain layout on a whole chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from demixer.models.arch import check_named_in_order
from demixer.models.arch.roformer import RotaryEmbedding, Transformer
from demixer.models.arch.scnet_options import (
    BANDS,
    ScnetOptions,
    TranOptions,
    band_edges,
    options,
)
from demixer.models.stft import stft_problem

__all__ = ["SCNet", "ScnetOptions", "build", "build_masked", "build_tran"]


class _Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class _ConvolutionModule(nn.Module):
    """``depth`` residual layers along time on ``(rows, channels, frames)``.

    Each layer: GroupNorm(1), conv to 2x hidden, GLU, depthwise conv, GroupNorm(1), Swish, 1x1
    conv back (items 0-6 of the reference's ``nn.Sequential``).
    """

    def __init__(self, channels: int, depth: int, compress: float, kernel: int) -> None:
        super().__init__()
        hidden = int(channels / compress)
        pad = kernel // 2
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(1, channels),
                nn.Conv1d(channels, hidden * 2, kernel, padding=pad),
                nn.GLU(1),
                nn.Conv1d(hidden, hidden, kernel, padding=pad, groups=hidden),
                nn.GroupNorm(1, hidden),
                _Swish(),
                nn.Conv1d(hidden, channels, 1),
            )
            for _ in range(abs(depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


class _SDLayer(nn.Module):
    """Per-band strided convolutions along frequency (``convs``: the checkpoint's name)."""

    def __init__(self, opts: ScnetOptions, cin: int, cout: int) -> None:
        super().__init__()
        self.ratios = opts.band_SR
        self.strides = opts.band_stride
        self.kernels = opts.band_kernel
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, (k, 1), (s, 1))
            for k, s in zip(opts.band_kernel, opts.band_stride, strict=True)
        )

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
        """``(B, C, F, T)`` -> per-band outputs and the bands' input sizes."""
        outputs, sizes = [], []
        edges = band_edges(x.shape[2], self.ratios)
        for conv, stride, kernel, (start, end) in zip(
            self.convs, self.strides, self.kernels, edges, strict=True
        ):
            size = end - start
            total = kernel - 1 if stride == 1 else (stride - size % stride) % stride
            band = F.pad(x[:, :, start:end], (0, 0, total // 2, total - total // 2))
            outputs.append(conv(band))
            sizes.append(size)
        return outputs, sizes


class _SDBlock(nn.Module):
    """Sparse down-sampling: band convolutions, convolution modules, a 3x3 global conv."""

    keep_float32 = False  # see SCNet.__init__

    def __init__(self, opts: ScnetOptions, cin: int, cout: int) -> None:
        super().__init__()
        self.SDlayer = _SDLayer(opts, cin, cout)
        self.conv_modules = nn.ModuleList(
            _ConvolutionModule(cout, depth, opts.compress, opts.conv_kernel)
            for depth in opts.conv_depths
        )
        self.globalconv = nn.Conv2d(cout, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
        bands, sizes = self.SDlayer(x)
        processed = []
        for module, band in zip(self.conv_modules, bands, strict=True):
            b, c, f, t = band.shape
            rows = band.permute(0, 2, 1, 3).reshape(b * f, c, t)
            out = module(rows).view(b, f, c, t).permute(0, 2, 1, 3)
            processed.append(F.gelu(out))
        lengths = [band.shape[2] for band in processed]
        full = torch.cat(processed, dim=2)
        return self.globalconv(full), full, lengths, sizes


class _FusionLayer(nn.Module):
    """Skip added, a 3x3 conv on the doubled channels, GLU (``conv``: the checkpoint's name).

    The reference doubles the channels by repeating them; a convolution of ``[x, x]`` is the
    convolution of ``x`` with the two halves of the kernel summed, which halves the work.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels * 2, channels * 2, 3, 1, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        half = self.conv.in_channels // 2
        weight = self.conv.weight[:, :half] + self.conv.weight[:, half:]
        return F.glu(F.conv2d(x + skip, weight, self.conv.bias, padding=1), dim=1)


class _SULayer(nn.Module):
    """Per-band transposed convolutions along frequency, each trimmed to its band's size."""

    def __init__(self, opts: ScnetOptions, cin: int, cout: int) -> None:
        super().__init__()
        self.convtrs = nn.ModuleList(
            nn.ConvTranspose2d(cin, cout, (k, 1), (s, 1))
            for k, s in zip(opts.band_kernel, opts.band_stride, strict=True)
        )

    def forward(self, x: torch.Tensor, lengths: list[int], sizes: list[int]) -> torch.Tensor:
        outputs = []
        start = 0
        for i, convtr in enumerate(self.convtrs):
            end = start + lengths[i] if i < BANDS - 1 else x.shape[2]
            out = convtr(x[:, :, start:end])
            trim = abs(sizes[i] - out.shape[2]) // 2
            outputs.append(out[:, :, trim : trim + sizes[i]])
            start = end
        return torch.cat(outputs, dim=2)


class _DualPathRNN(nn.Module):
    """GroupNorm, BiLSTM across frequency, linear, residual; then the same across time."""

    def __init__(self, channels: int, expand: int) -> None:
        super().__init__()
        hidden = channels * expand
        self.lstm_layers = nn.ModuleList(
            nn.LSTM(channels, hidden, num_layers=1, bidirectional=True, batch_first=True)
            for _ in range(2)
        )
        self.linear_layers = nn.ModuleList(nn.Linear(hidden * 2, channels) for _ in range(2))
        self.norm_layers = nn.ModuleList(nn.GroupNorm(1, channels) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Across frequency: a sequence of F steps per (batch, frame); the change comes back
        # as (channels, F, batch, frames).
        h = self.norm_layers[0](x).permute(2, 0, 3, 1)
        x = x + _lstm_linear(self.lstm_layers[0], self.linear_layers[0], h).permute(2, 0, 1, 3)
        # Across time: a sequence of T steps per (batch, bin); back as (channels, T, batch, F).
        h = self.norm_layers[1](x).permute(3, 0, 2, 1)
        return x + _lstm_linear(self.lstm_layers[1], self.linear_layers[1], h).permute(2, 0, 3, 1)


#: Sequences per bf16 LSTM call on a CPU are padded to a multiple of this (see _lstm_linear).
LSTM_ROWS = 32


def _lstm_linear(lstm: nn.Module, linear: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``linear(lstm(...))`` over ``h`` of shape ``(steps, b, n, channels)`` (``b * n``
    sequences), as ``(out_channels, steps, b, n)``.

    The layouts are chosen for speed, the arithmetic is MSST's: the sequences go in step-major
    (oneDNN's own layout, so the LSTM copies nothing), and the linear map is computed as
    ``weight @ out.T``, so its result has the frames (or bins) innermost, as the residual they
    are added to: that add was a transposing gather across all channels, 10x slower than the
    contiguous one (13.7 ms an add on the 11 s chunk, against 1.3). With bf16 weights on a CPU
    the sequences go in zero-padded to a multiple of :data:`LSTM_ROWS`: oneDNN's bf16 LSTM
    takes up to 4x longer per sequence at many other counts (239 sequences: 3.7 us per step and
    sequence, 240: 0.9, deterministic per count); the sequences are independent, so the
    padding changes nothing else.
    """
    steps, b, n, channels = h.shape
    rows = b * n
    # The sequences go in the dtype the LSTM computes in: its weights' (stored in bf16 by the
    # backend), or autocast's. Under autocast an fp32 input is refused by oneDNN's LSTM on CPUs
    # without native bf16 ("could not create a primitive descriptor"), a bf16 one is not.
    dtype = lstm.get_parameter("weight_ih_l0").dtype
    if torch.is_autocast_enabled(h.device.type):
        dtype = torch.get_autocast_dtype(h.device.type)
    padded = rows
    if dtype == torch.bfloat16 and h.device.type == "cpu":
        padded = -(-rows // LSTM_ROWS) * LSTM_ROWS
    x = torch.empty(steps, padded, channels, dtype=dtype, device=h.device)
    x[:, :rows].view(steps, b, n, channels).copy_(h)
    x[:, rows:].zero_()
    # batch_first: the module takes (sequences, steps, ...) and hands the same back; both are
    # views of step-major tensors.
    out = lstm(x.transpose(0, 1))[0].transpose(0, 1).reshape(steps * padded, -1)
    matrix, bias = linear.get_parameter("weight"), linear.get_parameter("bias")
    y = torch.addmm(bias.unsqueeze(1), matrix, out.t())
    return y.view(-1, steps, padded)[:, :, :rows].view(-1, steps, b, n)


class _DualPathTran(nn.Module):
    """scnet_tran's dual-path layer: GroupNorm, a transformer across frequency, residual; then
    the same across time (``norm_layers``, ``freq_layer``, ``time_layer``: the reference's
    names)."""

    def __init__(
        self, channels: int, tran: TranOptions, time: RotaryEmbedding, freq: RotaryEmbedding
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"dim": channels, "depth": tran.depth, "norm_output": True}
        kw |= {"heads": tran.heads, "dim_head": tran.dim_head}
        self.norm_layers = nn.ModuleList(nn.GroupNorm(1, channels) for _ in range(2))
        self.time_layer = Transformer(rotary=time, **kw)
        self.freq_layer = Transformer(rotary=freq, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        # Across frequency: a sequence of F bins per (batch, frame).
        h = self.norm_layers[0](x).permute(0, 3, 2, 1).reshape(b * t, f, c)
        x = x + self.freq_layer(h).view(b, t, f, c).permute(0, 3, 2, 1)
        # Across time: a sequence of T frames per (batch, bin).
        h = self.norm_layers[1](x).permute(0, 2, 3, 1).reshape(b * f, t, c)
        out: torch.Tensor = x + self.time_layer(h).view(b, f, t, c).permute(0, 3, 1, 2)
        return out


class _SeparationNet(nn.Module):
    """Dual-path layers; after each, the time axis goes into (even) or out of (odd) an rFFT.

    The layers are LSTM pairs (``scnet``, ``scnet_masked``) or transformer pairs
    (``scnet_tran``).
    """

    def __init__(self, channels: int, opts: ScnetOptions) -> None:
        super().__init__()
        widths = [channels * (2 if i % 2 else 1) for i in range(opts.num_dplayer)]
        tran = opts.tran
        if tran is None:
            self.dp_modules = nn.ModuleList(_DualPathRNN(w, opts.expand) for w in widths)
        else:
            time, freq = RotaryEmbedding(tran.dim_head), RotaryEmbedding(tran.dim_head)
            self.dp_modules = nn.ModuleList(_DualPathTran(w, tran, time, freq) for w in widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.dp_modules):
            x = layer(x).float()
            if i % 2 == 0:
                spec = torch.fft.rfft(x, dim=3, norm="ortho")
                x = torch.cat([spec.real, spec.imag], dim=1)
            else:
                half = x.shape[1] // 2
                x = torch.fft.irfft(torch.complex(x[:, :half], x[:, half:]), dim=3, norm="ortho")
        return x


class _MaskLayer(nn.Sequential):
    """scnet_masked's mask: 3x3 conv to 64 channels, GELU, 1x1 conv back, tanh (items 0-3 of
    the reference's ``mask_layer``). Run with autocast off: the mask multiplies the mixture."""

    keep_float32 = True

    def __init__(self, planes: int) -> None:
        super().__init__(
            nn.Conv2d(planes, 64, 3, padding="same"),
            nn.GELU(),
            nn.Conv2d(64, planes, 1, padding="same"),
            nn.Tanh(),
        )


class SCNet(nn.Module):
    """SCNet for inference; parameter names and shapes are MSST's (and the official) ``SCNet``'s.

    ``forward``: ``(batch, audio_channels, samples)`` -> ``(batch, sources, audio_channels,
    samples)`` float32.
    """

    window: torch.Tensor

    def __init__(self, opts: ScnetOptions) -> None:
        super().__init__()
        self.opts = opts
        self.audio_channels = opts.audio_channels  # the backend feeds it as many
        dims = opts.dims
        self.encoder = nn.ModuleList(
            _SDBlock(opts, dims[i], dims[i + 1]) for i in range(len(dims) - 1)
        )
        # It runs with autocast off (see forward): its weights stay float32 when a backend stores
        # the others in bf16 (demixer.models.msst.backend.store_weights_in).
        cast(_SDBlock, self.encoder[0]).keep_float32 = True
        # Deepest level first, as the reference stores them.
        self.decoder = nn.ModuleList(
            nn.Sequential(
                _FusionLayer(dims[i + 1]),
                _SULayer(opts, dims[i + 1], dims[i] * (len(opts.sources) if i == 0 else 1)),
            )
            for i in reversed(range(len(dims) - 1))
        )
        self.separation_net = _SeparationNet(dims[-1], opts)
        # The reference passes no window, i.e. torch's rectangular default; naming it spares
        # torch's warning about it on every call. Not in the checkpoint, as in the reference.
        # scnet_masked's reference passes a periodic Hann window, nfft long.
        window = torch.hann_window(opts.nfft) if opts.masked else torch.ones(opts.win_size)
        self.register_buffer("window", window, persistent=False)
        self.pos_embed_f: nn.Parameter | None = None
        self.mask_layer: _MaskLayer | None = None
        if opts.masked:
            self.pos_embed_f = nn.Parameter(torch.zeros(1, dims[0], opts.nfft // 2 + 1, 1))
            self.mask_layer = _MaskLayer(dims[0] * len(opts.sources))
        if opts.tran is not None:  # the reference's, in its checkpoints; its forward skips it
            self.first_conv = nn.Conv2d(dims[0], dims[0], 1, bias=False)

    def chunk_problem(self, samples: int) -> str | None:
        """Why the network cannot run ``samples``-sample chunks (their padded STFT, see
        :meth:`forward`); None if it can."""
        padded = samples + self._padding(samples)
        problem = stft_problem(
            self.window, n_fft=self.opts.nfft, hop=self.opts.hop_size, samples=padded
        )
        return problem and f"padded to {padded} samples (an odd number of hops), {problem}"

    def _padding(self, samples: int) -> int:
        # Pad to an odd number of hops, so the centred STFT has an even frame count (the
        # separation network's rFFT along time needs it); never zero padding.
        hop = self.opts.hop_size
        padding = hop - samples % hop
        if (samples + padding) // hop % 2 == 0:
            padding += hop
        return padding

    def _stft_args(self) -> dict[str, Any]:
        o = self.opts
        return {
            "n_fft": o.nfft,
            "hop_length": o.hop_size,
            "win_length": o.win_size,
            "window": self.window,
            "center": True,
            "normalized": o.normalized,
        }

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        o = self.opts
        batch, channels, samples = wave.shape
        padding = self._padding(samples)
        with torch.autocast(wave.device.type, enabled=False):
            x = F.pad(wave.float(), (0, padding))
            spec = torch.stft(x.reshape(-1, x.shape[-1]), **self._stft_args(), return_complex=True)
            bins, frames = spec.shape[-2:]
            # (B*C, F, T) complex -> (B, C*2, F, T): channel-major, then real/imaginary.
            x = torch.view_as_real(spec).permute(0, 3, 1, 2).reshape(batch, -1, bins, frames)
            if self.pos_embed_f is not None:  # one per bin: the STFT's nfft // 2 + 1 bins
                x = x + self.pos_embed_f
        skips, lengths, sizes = [], [], []
        for i, block in enumerate(self.encoder):
            # The first block sees the raw spectrogram, whose dynamic range bf16 does not keep:
            # under bf16 autocast, running it in float32 took the output from 33 to 49 dB SNR
            # against float32 (random full-size weights) for a small share of the work.
            exact = torch.autocast(wave.device.type, enabled=False) if i == 0 else nullcontext()
            with exact:
                x, skip, length, size = block(x)
            skips.append(skip)
            lengths.append(length)
            sizes.append(size)
        x = self.separation_net(x)
        for stage in self.decoder:
            fusion, su = cast(tuple[_FusionLayer, _SULayer], tuple(cast(nn.Sequential, stage)))
            x = su(fusion(x, skips.pop()), lengths.pop(), sizes.pop())
        with torch.autocast(wave.device.type, enabled=False):
            x = x.float() if self.mask_layer is None else self.mask_layer(x.float())
            # Channel 2k / 2k+1: real / imaginary of output k = (source, audio channel).
            planes = x.reshape(-1, 2, bins, frames).permute(0, 2, 3, 1).contiguous()
            stems = torch.view_as_complex(planes)
            if self.mask_layer is not None:  # a mask of each channel's mixture, per stem
                sources = len(o.sources)
                mixture = spec.view(batch, 1, channels, bins, frames)
                masked = mixture * stems.view(batch, sources, channels, bins, frames)
                stems = masked.view(-1, bins, frames)
            out = torch.istft(stems, **self._stft_args())
        return out.reshape(batch, len(o.sources), channels, -1)[..., :-padding]


def build(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> SCNet:
    """SCNet from an MSST config's ``model:`` section, in eval mode.

    The stems are ``model.sources`` (MSST builds the network from the ``model:`` section alone;
    its ``training.instruments`` names the same stems in the published configs, and must name
    as many: MSST pairs them in order).
    """
    return _build(model, instruments, "scnet")


def build_masked(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> SCNet:
    """MSST's ``scnet_masked`` from its config's ``model:`` section (as :func:`build`)."""
    return _build(model, instruments, "scnet_masked")


def build_tran(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> SCNet:
    """MSST's ``scnet_tran`` from its config's ``model:`` section (as :func:`build`)."""
    return _build(model, instruments, "scnet_tran")


def _build(model: Mapping[str, Any], instruments: Sequence[str], arch: str) -> SCNet:
    opts = options(model, arch)
    check_named_in_order(arch, "model.sources", opts.sources, instruments, "source")
    return SCNet(opts).eval()
