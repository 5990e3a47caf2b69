"""MDX23C: KUIELab's TFC-TDF v3 U-Net on complex spectrograms, MSST's ``mdx23c``.

The pipeline (Kim et al., "Sound Demixing Challenge 2023 Music Demixing Track: KUIELab-MDX23C"):

- a periodic-Hann STFT (``n_fft``, ``hop_length``, centred, reflect-padded) of each channel; the
  lowest ``dim_f`` bins are kept and their real and imaginary parts become channels, and the bins
  are cut into ``num_subbands`` equal sub-bands stacked as further channels
  (``channels * 2 * num_subbands`` planes of ``dim_f / num_subbands`` bins);
- a 1x1 convolution to ``num_channels``, then a U-Net over (frames, bins) with ``num_scales``
  levels: each level is ``num_blocks_per_scale`` TFC-TDF blocks (3x3 convolutions, a
  bottleneck of two linear maps along frequency, a 1x1 shortcut), then a strided convolution
  by ``scale`` adding ``growth`` channels; the decoder mirrors it with transposed convolutions
  and skip concatenations;
- the decoder output times the first convolution's output, concatenated with the input planes,
  through 1x1 convolutions to ``stems * channels * 2 * num_subbands`` planes, which are put back
  into (stem, channel, complex bin, frame) order, zero-padded to ``n_fft / 2 + 1`` bins and
  inverted by the ISTFT.

Every normalisation and activation comes before its convolution (pre-activation), as named in the
config: ``norm`` BatchNorm, InstanceNorm, GroupNorm<groups> or anything else for none; ``act``
gelu, relu or elu<alpha>.

Output: ``(batch, stems, channels, hop_length * (frames - 1))`` where ``frames = samples //
hop_length + 1`` (``chunk_size`` in, ``chunk_size`` out for the published configs), also for one
stem (``target_instrument``): the reference keeps the stem axis. The frame count must be a
multiple of ``scale[0] ** num_scales`` (and the bins of ``scale[1] ** num_scales``), as in the
reference, which fails otherwise.
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

__all__ = ["Mdx23cOptions", "TFCTDFNet", "build"]


@dataclass(frozen=True)
class Mdx23cOptions:
    """The config options the network reads (``audio:`` and ``model:`` sections).

    Attributes:
        n_fft: STFT frame length in samples.
        hop_length: STFT hop in samples.
        dim_f: STFT bins kept, from bin 0.
        channels: audio channels (``audio.num_channels``).
        stems: output stems (``len(instruments)``, or 1 with a ``target_instrument``).
        num_subbands, num_scales, scale, num_blocks_per_scale, num_channels, growth,
        bottleneck_factor, norm, act: the ``model:`` options of the same names.
    """

    n_fft: int
    hop_length: int
    dim_f: int
    channels: int
    stems: int
    num_subbands: int
    num_scales: int
    scale: tuple[int, int]
    num_blocks_per_scale: int
    num_channels: int
    growth: int
    bottleneck_factor: int
    norm: str
    act: str


def _norm(kind: str, channels: int) -> nn.Module:
    # The reference's table: anything it does not name is no normalisation at all.
    if kind == "BatchNorm":
        return nn.BatchNorm2d(channels)
    if kind == "InstanceNorm":
        return nn.InstanceNorm2d(channels, affine=True)
    if "GroupNorm" in kind:
        return nn.GroupNorm(int(kind.replace("GroupNorm", "")), channels)
    return nn.Identity()


def _check_act(kind: str) -> None:
    if kind in ("gelu", "relu"):
        return
    if kind.startswith("elu"):
        try:
            float(kind[3:])
        except ValueError:
            pass
        else:
            return
    raise ValueError(f"mdx23c: model.act must be gelu, relu or elu<alpha>, not {kind!r}")


def _act_module(kind: str) -> nn.Module:
    if kind == "gelu":
        return nn.GELU()
    if kind == "relu":
        return nn.ReLU()
    return nn.ELU(float(kind[3:]))


def _activate_(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The activation, in place on ``x`` (a fresh tensor nobody else holds)."""
    if kind == "gelu":
        out: torch.Tensor = torch.ops.aten.gelu_(x)
        return out
    if kind == "relu":
        return x.relu_()
    return F.elu_(x, float(kind[3:]))


def _norm_act(chain: nn.Sequential, index: int, kind: str, x: torch.Tensor) -> torch.Tensor:
    """``chain[index]`` (a norm) then ``chain[index + 1]`` (the activation ``kind``) on ``x``.

    A norm always returns a new tensor, so the activation then runs in place on it.
    """
    norm = chain[index]
    if isinstance(norm, nn.Identity):
        out: torch.Tensor = chain[index + 1](x)
        return out
    return _activate_(norm(x), kind)


class _PreAct(nn.Sequential):
    """``norm -> act -> layer``; the three as items 0, 1, 2 (the checkpoint's names)."""

    def __init__(self, norm: nn.Module, act: str, layer: nn.Module) -> None:
        super().__init__(norm, _act_module(act), layer)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self[2](_norm_act(self, 0, self.act, x))
        return out


class _Tdf(nn.Sequential):
    """Norm, act, linear ``f -> f / bottleneck``, norm, act, linear back: along frequency."""

    def __init__(self, opts: Mdx23cOptions, channels: int, bins: int) -> None:
        hidden = bins // opts.bottleneck_factor
        super().__init__(
            _norm(opts.norm, channels),
            _act_module(opts.act),
            nn.Linear(bins, hidden, bias=False),
            _norm(opts.norm, channels),
            _act_module(opts.act),
            nn.Linear(hidden, bins, bias=False),
        )
        self.act = opts.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self[2](_norm_act(self, 0, self.act, x))
        out: torch.Tensor = self[5](_norm_act(self, 3, self.act, h))
        return out


class _TfcTdfBlock(nn.Module):
    """One TFC-TDF block: ``tfc1``, ``+ tdf``, ``tfc2``, ``+ shortcut(input)``."""

    def __init__(self, opts: Mdx23cOptions, cin: int, cout: int, bins: int) -> None:
        super().__init__()
        self.tfc1 = _PreAct(
            _norm(opts.norm, cin), opts.act, nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        )
        self.tdf = _Tdf(opts, cout, bins)
        self.tfc2 = _PreAct(
            _norm(opts.norm, cout), opts.act, nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        )
        self.shortcut = nn.Conv2d(cin, cout, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shortcut(x)
        h = self.tfc1(x)
        h = h + self.tdf(h)
        out: torch.Tensor = self.tfc2(h)
        return out.add_(s)


class _TfcTdf(nn.Module):
    """``num_blocks_per_scale`` blocks; the first maps ``cin`` to ``cout`` channels."""

    def __init__(self, opts: Mdx23cOptions, cin: int, cout: int, bins: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            _TfcTdfBlock(opts, cin if i == 0 else cout, cout, bins)
            for i in range(opts.num_blocks_per_scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class _Rescale(nn.Module):
    """Norm, act, then a (transposed) convolution with kernel = stride = ``scale``."""

    def __init__(self, opts: Mdx23cOptions, cin: int, cout: int, up: bool) -> None:
        super().__init__()
        kind = nn.ConvTranspose2d if up else nn.Conv2d
        layer = kind(cin, cout, kernel_size=opts.scale, stride=opts.scale, bias=False)
        self.conv = _PreAct(_norm(opts.norm, cin), opts.act, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class _EncoderLevel(nn.Module):
    def __init__(self, opts: Mdx23cOptions, channels: int, bins: int) -> None:
        super().__init__()
        self.tfc_tdf = _TfcTdf(opts, channels, channels, bins)
        self.downscale = _Rescale(opts, channels, channels + opts.growth, up=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the level's output, kept for the skip; its downscaled form)."""
        skip = self.tfc_tdf(x)
        return skip, self.downscale(skip)


class _DecoderLevel(nn.Module):
    def __init__(self, opts: Mdx23cOptions, channels: int, bins: int) -> None:
        super().__init__()
        # channels: this level's output width; the input has `growth` more.
        self.upscale = _Rescale(opts, channels + opts.growth, channels, up=True)
        self.tfc_tdf = _TfcTdf(opts, 2 * channels, channels, bins)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.tfc_tdf(torch.cat([self.upscale(x), skip], 1))
        return out


class TFCTDFNet(nn.Module):
    """MDX23C for inference; parameter names and shapes are MSST's ``TFC_TDF_net``'s.

    ``forward``: ``(batch, channels, samples)`` float32 -> ``(batch, stems, channels,
    hop_length * (samples // hop_length))`` float32 (see the module docstring).
    """

    window: torch.Tensor

    def __init__(self, opts: Mdx23cOptions) -> None:
        super().__init__()
        self.opts = opts
        k = opts.num_subbands
        self.planes = k * opts.channels * 2
        c, bins = opts.num_channels, opts.dim_f // k
        self.first_conv = nn.Conv2d(self.planes, c, 1, 1, 0, bias=False)
        self.encoder_blocks = nn.ModuleList()
        for _ in range(opts.num_scales):
            self.encoder_blocks.append(_EncoderLevel(opts, c, bins))
            bins //= opts.scale[1]
            c += opts.growth
        self.bottleneck_block = _TfcTdf(opts, c, c, bins)
        self.decoder_blocks = nn.ModuleList()
        for _ in range(opts.num_scales):
            bins *= opts.scale[1]
            c -= opts.growth
            self.decoder_blocks.append(_DecoderLevel(opts, c, bins))
        self.final_conv = nn.Sequential(
            nn.Conv2d(c + self.planes, c, 1, 1, 0, bias=False),
            _act_module(opts.act),
            nn.Conv2d(c, opts.stems * self.planes, 1, 1, 0, bias=False),
        )
        # Not in the checkpoint (the reference keeps its window outside the state_dict too).
        window = torch.hann_window(opts.n_fft, periodic=True)
        self.register_buffer("window", window, persistent=False)

    def chunk_problem(self, samples: int) -> str | None:
        """Why the network cannot run ``samples``-sample chunks; None if it can.

        Their STFT must run both ways, and its frames divide by ``scale[0] ** num_scales``
        (each level downscales them and meets them again upscaled).
        """
        o = self.opts
        problem = stft_problem(self.window, n_fft=o.n_fft, hop=o.hop_length, samples=samples)
        if problem:
            return problem
        odd = o.n_fft % 2  # the centred STFT pads n_fft - 1 samples in all when n_fft is odd
        frames, levels = (samples - odd) // o.hop_length + 1, o.scale[0] ** o.num_scales
        if frames % levels:
            fitting = (levels * (frames // levels + 1) - 1) * o.hop_length + odd
            return (
                f"its {frames} STFT frames (audio.hop_length {o.hop_length} apart) must be a "
                f"multiple of {levels} (model.scale[0] {o.scale[0]} ** model.num_scales "
                f"{o.num_scales}); a chunk of {fitting} samples would fit"
            )
        return None

    def _spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, samples)`` -> planes ``(batch, ch*2*k, frames, dim_f/k)``.

        Plane order is the reference's: channel, real/imaginary, sub-band. The layout is
        (frames, bins) so the linear maps along frequency act on the last, contiguous axis.
        """
        o = self.opts
        batch, channels, samples = wave.shape
        spec = torch.stft(
            wave.reshape(-1, samples).float(),
            n_fft=o.n_fft,
            hop_length=o.hop_length,
            window=self.window,
            center=True,
            return_complex=True,
        )[:, : o.dim_f]
        frames = spec.shape[-1]
        planes = torch.view_as_real(spec).reshape(
            batch, channels, o.num_subbands, o.dim_f // o.num_subbands, frames, 2
        )
        # (b, ch, k, f, t, ri) -> (b, ch, ri, k, t, f)
        return planes.permute(0, 1, 5, 2, 4, 3).reshape(batch, self.planes, frames, -1)

    def _waveform(self, planes: torch.Tensor) -> torch.Tensor:
        """Output planes ``(batch, stems*ch*2*k, frames, dim_f/k)`` -> ``(batch, stems, ch, L)``."""
        o = self.opts
        batch, _, frames, bins = planes.shape
        x = planes.float().reshape(batch, o.stems, o.channels, 2, o.num_subbands, frames, bins)
        # (b, s, ch, ri, k, t, f) -> (b, s, ch, k, f, t, ri): bins k*f in order, complex last.
        x = x.permute(0, 1, 2, 4, 6, 5, 3)
        spec = x.new_zeros(batch * o.stems * o.channels, o.n_fft // 2 + 1, frames, 2)
        spec[:, : o.dim_f] = x.reshape(-1, o.dim_f, frames, 2)
        wave = torch.istft(
            torch.view_as_complex(spec),
            n_fft=o.n_fft,
            hop_length=o.hop_length,
            window=self.window,
            center=True,
        )
        return wave.reshape(batch, o.stems, o.channels, -1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(wave.device.type, enabled=False):
            mix = self._spectrogram(wave)
        first = self.first_conv(mix)
        x = first
        skips = []
        for level in self.encoder_blocks:
            skip, x = level(x)
            skips.append(skip)
        x = self.bottleneck_block(x)
        for level in self.decoder_blocks:
            x = level(x, skips.pop())
        x = x * first  # the reference's "reduce artifacts"
        out = self.final_conv(torch.cat([mix.to(x.dtype), x], 1))
        with torch.autocast(wave.device.type, enabled=False):
            return self._waveform(out)


def _int(section: Mapping[str, Any], key: str, where: str, minimum: int = 1) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"mdx23c: {where}.{key} must be an integer >= {minimum}, not {value!r}")
    return value


def _check_norm(kind: str) -> None:
    if "GroupNorm" in kind:
        groups = kind.replace("GroupNorm", "")
        if not groups.isdigit() or int(groups) < 1:
            raise ValueError(
                f"mdx23c: model.norm {kind!r} names no group count (GroupNorm<groups>, e.g. "
                "GroupNorm4)"
            )


def options(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> Mdx23cOptions:
    """Check and collect the options :class:`TFCTDFNet` reads; ``ValueError`` names a bad one."""
    scale = model.get("scale")
    if (
        not isinstance(scale, list | tuple)
        or len(scale) != 2
        or not all(isinstance(s, int) and s > 0 for s in scale)
    ):
        raise ValueError(f"mdx23c: model.scale must be two positive integers, not {scale!r}")
    norm, act = model.get("norm"), model.get("act")
    if not isinstance(norm, str):
        raise ValueError(f"mdx23c: model.norm must be a string, not {norm!r}")
    if not isinstance(act, str):
        raise ValueError(f"mdx23c: model.act must be a string, not {act!r}")
    _check_act(act)
    _check_norm(norm)
    too_big = frame_problem("audio.n_fft", _int(audio, "n_fft", "audio", 2))
    if too_big:
        raise ValueError(f"mdx23c: {too_big}")
    opts = Mdx23cOptions(
        n_fft=_int(audio, "n_fft", "audio", 2),
        hop_length=_int(audio, "hop_length", "audio"),
        dim_f=_int(audio, "dim_f", "audio"),
        channels=_int(audio, "num_channels", "audio"),
        stems=1 if target_instrument else len(instruments),
        num_subbands=_int(model, "num_subbands", "model"),
        num_scales=_int(model, "num_scales", "model", 0),
        scale=(scale[0], scale[1]),
        num_blocks_per_scale=_int(model, "num_blocks_per_scale", "model"),
        num_channels=_int(model, "num_channels", "model"),
        growth=_int(model, "growth", "model", 0),
        bottleneck_factor=_int(model, "bottleneck_factor", "model"),
        norm=norm,
        act=act,
    )
    too_many = layers_problem("model.num_scales", opts.num_scales) or layers_problem(
        "model.num_blocks_per_scale", opts.num_blocks_per_scale
    )
    if too_many:  # before scale ** num_scales below, too: 2 ** 10**9 is itself a long sum
        raise ValueError(f"mdx23c: {too_many}")
    if opts.dim_f > opts.n_fft // 2 + 1 or opts.dim_f % opts.num_subbands:
        raise ValueError(
            f"mdx23c: audio.dim_f ({opts.dim_f}) must be at most n_fft/2+1 and a multiple of "
            f"model.num_subbands ({opts.num_subbands})"
        )
    if opts.hop_length > opts.n_fft:
        raise ValueError(
            f"mdx23c: audio.hop_length {opts.hop_length} exceeds audio.n_fft {opts.n_fft}: "
            "frames would leave gaps that no inverse STFT can fill"
        )
    # Each level halves (by scale[1]) the bins and the skip must meet its upscaled result again.
    levels = opts.scale[1] ** opts.num_scales
    if (opts.dim_f // opts.num_subbands) % levels:
        raise ValueError(
            f"mdx23c: the {opts.dim_f // opts.num_subbands} bins of a sub-band (audio.dim_f "
            f"{opts.dim_f} / model.num_subbands {opts.num_subbands}) must be a multiple of "
            f"{levels} (model.scale[1] {opts.scale[1]} ** model.num_scales {opts.num_scales})"
        )
    if opts.stems < 1:
        raise ValueError("mdx23c: training.instruments is empty")
    return opts


def build(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> TFCTDFNet:
    """MDX23C from an MSST config's ``model:`` and ``audio:`` sections, in eval mode."""
    return TFCTDFNet(options(model, audio, instruments, target_instrument)).eval()
