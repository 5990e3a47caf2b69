"""Mel-Band RoFormer (Wang et al., 2023), MSST's ``mel_band_roformer``.

Like BS-RoFormer, but the bands are the ``num_bands`` triangles of a Slaney mel filterbank made
binary: a bin belongs to every band whose filter is positive there, so neighbouring bands
overlap, and each bin's mask is the mean of the masks of the bands holding it. Each transformer
ends in an RMSNorm and there is no final norm; the mask MLPs have one more layer than
BS-RoFormer's for the same ``mask_estimator_depth`` (both as in the reference).

With a small ``stft_n_fft`` and many bands, a low band can be narrower than a bin and hold none
(4 of 60 bands at 256 points and 44.1 kHz). As in the reference, it still is a band of the
transformer, its features its band split's bias alone, and it gives no mask.

The filterbank is computed here (no librosa at run time) with exactly librosa's float64
arithmetic, because which bins belong to a band depends on which weights come out exactly zero.

Output: ``(batch, stems, channels, samples)``, or ``(batch, channels, samples)`` for one stem.

MSST's ``mel_band_conformer`` is the same network with Conformer blocks in place of the time and
frequency transformers, without their final RMSNorm, and with BS-RoFormer's mask MLPs (one layer
fewer for the same ``mask_estimator_depth``): built here by :func:`build_conformer`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from demixer.errors import InvalidModelConfig
from demixer.models.arch.bands import BandSplit, MaskEstimator, Stft, complex_masks
from demixer.models.arch.limits import bands_problem
from demixer.models.arch.options import RoformerOptions
from demixer.models.arch.roformer import (
    active_heads,
    axial_layers,
    check_channels,
    run_axial,
)

__all__ = ["MelBandRoformer", "build", "build_conformer", "mel_filterbank"]

# Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = (_MIN_LOG_HZ - 0.0) / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    mel = (hz - 0.0) / _F_SP
    if hz >= _MIN_LOG_HZ:
        mel = _MIN_LOG_MEL + float(np.log(hz / _MIN_LOG_HZ)) / _LOGSTEP
    return mel


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = 0.0 + _F_SP * mels
    log = mels >= _MIN_LOG_MEL
    hz[log] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log] - _MIN_LOG_MEL))
    return hz


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-normalised mel filterbank ``(n_mels, n_fft // 2 + 1)`` float32, 0 Hz to Nyquist.

    Equal, value for value, to ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft,
    n_mels=n_mels)`` (librosa 0.10/0.11 defaults: Slaney scale and norm), which is what the
    reference builds its bands from.
    """
    bins = n_fft // 2 + 1
    fft_hz = np.arange(0, bins, dtype=int) * (1.0 / (n_fft * (1.0 / sample_rate)))
    mel_hz = _mel_to_hz(
        np.linspace(_hz_to_mel(0.0), _hz_to_mel(float(sample_rate) / 2), n_mels + 2)
    )
    widths = np.diff(mel_hz)
    ramps = np.subtract.outer(mel_hz, fft_hz)
    weights = np.zeros((n_mels, bins), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2 : n_mels + 2] - mel_hz[:n_mels]))[:, np.newaxis]
    return weights


def band_membership(sample_rate: float, n_fft: int, num_bands: int) -> np.ndarray:
    """``(num_bands, bins)`` bool: which bins each band holds (the reference's binary bands).

    The reference forces the first bin into the first band and the last into the last (its
    filterbank leaves them at zero, or at 1e-18 depending on the platform).

    A band may hold no bin (see the module's docstring); the reference runs it, and so does
    demixer.

    Raises:
        InvalidModelConfig: a bin in no band (the reference asserts against it too).
    """
    weights = mel_filterbank(sample_rate, n_fft, num_bands)
    weights[0, 0] = 1.0
    weights[-1, -1] = 1.0
    member: np.ndarray = weights > 0
    if not member.any(axis=0).all():
        raise InvalidModelConfig(
            f"mel_band_roformer: {num_bands} mel bands leave some of the {n_fft // 2 + 1} STFT "
            "bins in no band; use fewer bands or a larger stft_n_fft"
        )
    return member


class MelBandRoformer(nn.Module):
    """Mel-Band RoFormer for inference; parameter names and shapes are the reference's.

    Args:
        opts: the checked ``model:`` options.
        membership: ``(bands, bins)`` bool from :func:`band_membership`.
        heads: indices of the mask estimators to run (all, or the target's only).
    """

    freq_indices: torch.Tensor  # a buffer
    bands_per_bin: torch.Tensor  # a buffer

    def __init__(self, opts: RoformerOptions, membership: np.ndarray, heads: Sequence[int]) -> None:
        super().__init__()
        self.opts = opts
        self.audio_channels = opts.channels
        self.heads = list(heads)
        channels = opts.channels
        # The reference's transformers end in an RMSNorm, its Conformers (MSST's
        # mel_band_conformer) do not.
        self.layers = axial_layers(opts, norm_output=opts.conformer is None)
        self.stft = Stft(opts)
        _, bins = np.nonzero(membership)  # band-major, bins ascending within a band
        if channels == 2:
            bins = (bins[:, None] * 2 + np.arange(2)).reshape(-1)
        # (numpy, not torch: a network built on the meta device has these buffers all the same)
        index = torch.from_numpy(bins.astype(np.int64))
        # One gather picks every band's bins (both channels) from the (bins * channels) axis,
        # one index_add puts the masks back; each bin's mask is divided by its band count.
        self.register_buffer("freq_indices", index, persistent=False)
        per_bin = torch.from_numpy(membership.sum(axis=0).astype(np.float32))
        self.register_buffer(
            "bands_per_bin", per_bin.repeat_interleave(channels)[:, None], persistent=False
        )
        dims = tuple(2 * int(f) * channels for f in membership.sum(axis=1))
        with warnings.catch_warnings():
            # A band that holds no bin has layers of width 0, whose initialisation torch warns
            # is a no-op; the checkpoint's weights replace it anyway.
            warnings.filterwarnings("ignore", "Initializing zero-element tensors", UserWarning)
            self.band_split = BandSplit(opts.dim, dims)
            # The reference's mask MLPs have mask_estimator_depth hidden layers, BS-RoFormer's
            # one fewer; its Conformer's are BS-RoFormer's.
            depth = opts.mask_depth + (1 if opts.conformer is None else 0)
            self.mask_estimators = nn.ModuleList(
                MaskEstimator(opts.dim, dims, depth, opts.mlp_expansion)
                for _ in range(opts.num_stems)
            )

    def chunk_problem(self, samples: int) -> str | None:
        """Why the network cannot run ``samples``-sample chunks (its STFT); None if it can."""
        return self.stft.chunk_problem(samples)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``(b, s, T)`` float32 -> ``(b, n, s, T)``, or ``(b, s, T)`` when one stem is run."""
        check_channels(audio, self.opts.channels, "mel_band_roformer")
        spec = self.stft.analyse(audio)  # (b, F*s, t, 2)
        b, _, frames, _ = spec.shape
        picked = spec[:, self.freq_indices]  # (b, M, t, 2)
        x = self.band_split(picked.transpose(1, 2).reshape(b, frames, -1))
        x = run_axial(self.layers, x, skip_connection=self.opts.skip_connection)
        masks = torch.stack([self.mask_estimators[i](x) for i in self.heads], dim=1)
        masks = complex_masks(masks)  # (b, n, M, t)
        mixture = torch.view_as_complex(spec)
        summed = mixture.new_zeros(b, len(self.heads), *mixture.shape[1:])
        summed.index_add_(2, self.freq_indices, masks)
        separated = mixture[:, None] * (summed / self.bands_per_bin.clamp(min=1e-8))
        out = self.stft.synthesise(separated, self.opts.channels, audio.shape[-1])
        return out[:, 0] if len(self.heads) == 1 else out


def build(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> nn.Module:
    """A :class:`MelBandRoformer` from an MSST config's ``model:`` section.

    ``model.sample_rate`` (default 44100, as the reference; ``audio:`` is not read) places the
    mel bands.

    Raises:
        InvalidModelConfig: see :meth:`RoformerOptions.read`, ``num_bands``, ``sample_rate``.
    """
    own = frozenset({"num_bands", "sample_rate"})
    opts = RoformerOptions.read(model, arch="mel_band_roformer", own=own, mask_depth=1)
    return _network(model, opts, instruments, target_instrument, "mel_band_roformer")


def build_conformer(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> nn.Module:
    """MSST's ``mel_band_conformer`` from its config's ``model:`` section: a
    :class:`MelBandRoformer` with Conformer blocks (see :meth:`RoformerOptions.read_conformer`)."""
    own = frozenset({"num_bands", "sample_rate"})
    opts = RoformerOptions.read_conformer(model, arch="mel_band_conformer", own=own, mask_depth=1)
    return _network(model, opts, instruments, target_instrument, "mel_band_conformer")


def _network(
    model: Mapping[str, Any],
    opts: RoformerOptions,
    instruments: Sequence[str],
    target_instrument: str | None,
    arch: str,
) -> MelBandRoformer:
    num_bands = model.get("num_bands", 60)
    rate = model.get("sample_rate", 44100)
    if isinstance(num_bands, bool) or not isinstance(num_bands, int) or num_bands < 2:
        raise InvalidModelConfig(f"{arch}: model.num_bands must be >= 2: {num_bands!r}")
    too_many = bands_problem("model.num_bands", num_bands)
    if too_many:
        raise InvalidModelConfig(f"{arch}: {too_many}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
        raise InvalidModelConfig(f"{arch}: model.sample_rate must be > 0: {rate!r}")
    membership = band_membership(rate, opts.n_fft, num_bands)
    heads = active_heads(opts.num_stems, instruments, target_instrument, arch)
    return MelBandRoformer(opts, membership, heads)
