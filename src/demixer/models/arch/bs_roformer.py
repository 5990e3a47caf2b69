"""BS-RoFormer: band-split RoPE transformer (Lu et al., 2023), MSST's ``bs_roformer``.

The STFT bins are cut into consecutive bands (``freqs_per_bands``, e.g. 62 bands of 2 to 129
bins); each band's complex values (both channels) become one token per frame; ``depth`` axial
blocks attend along time within each band and along bands within each frame; a final RMSNorm
and one mask estimator per stem give a complex mask per bin, applied to the mixture's STFT.

Output: ``(batch, stems, channels, samples)``, also for one stem (the reference keeps the axis).

MSST's ``bs_conformer`` (BS Conformer) is the same network with Conformer blocks in place of the
time and frequency transformers (:class:`~demixer.models.arch.roformer.Conformer`): built here by
:func:`build_conformer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from demixer.errors import InvalidModelConfig
from demixer.models.arch.bands import BandSplit, MaskEstimator, Stft, complex_masks
from demixer.models.arch.options import RoformerOptions
from demixer.models.arch.roformer import (
    RMSNorm,
    active_heads,
    axial_layers,
    check_channels,
    run_axial,
)

__all__ = ["DEFAULT_FREQS_PER_BANDS", "BSRoformer", "build", "build_conformer"]

# The reference's default band layout for n_fft 2048 (1025 bins): 62 bands.
DEFAULT_FREQS_PER_BANDS: tuple[int, ...] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)


class BSRoformer(nn.Module):
    """BS-RoFormer for inference; parameter names and shapes are the reference's.

    Args:
        opts: the checked ``model:`` options.
        freqs_per_bands: STFT bins per band, low to high; they sum to ``n_fft // 2 + 1``.
        heads: indices of the mask estimators to run (all, or the target's only).
    """

    def __init__(
        self, opts: RoformerOptions, freqs_per_bands: Sequence[int], heads: Sequence[int]
    ) -> None:
        super().__init__()
        self.opts = opts
        self.audio_channels = opts.channels
        self.heads = list(heads)
        self.layers = axial_layers(opts, norm_output=False)
        self.final_norm = RMSNorm(opts.dim)
        self.stft = Stft(opts)
        dims = tuple(2 * f * opts.channels for f in freqs_per_bands)
        self.band_split = BandSplit(opts.dim, dims)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(opts.dim, dims, opts.mask_depth, opts.mlp_expansion)
            for _ in range(opts.num_stems)
        )

    def chunk_problem(self, samples: int) -> str | None:
        """Why the network cannot run ``samples``-sample chunks (its STFT); None if it can."""
        return self.stft.chunk_problem(samples)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``(b, s, T)`` float32 -> ``(b, n, s, T)`` float32, ``n`` = the stems run."""
        check_channels(audio, self.opts.channels, "bs_roformer")
        spec = self.stft.analyse(audio)  # (b, F*s, t, 2)
        b, bins, frames, _ = spec.shape
        x = self.band_split(spec.transpose(1, 2).reshape(b, frames, bins * 2))
        x = run_axial(self.layers, x, skip_connection=self.opts.skip_connection)
        x = self.final_norm(x)
        masks = torch.stack([self.mask_estimators[i](x) for i in self.heads], dim=1)
        separated = torch.view_as_complex(spec)[:, None] * complex_masks(masks)
        return self.stft.synthesise(separated, self.opts.channels, audio.shape[-1])


def _bands(model: Mapping[str, Any], bins: int, arch: str) -> tuple[int, ...]:
    raw = model.get("freqs_per_bands", DEFAULT_FREQS_PER_BANDS)
    if not isinstance(raw, (list, tuple)) or not all(
        isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in raw
    ):
        raise InvalidModelConfig(f"{arch}: model.freqs_per_bands must be positive integers")
    if len(raw) < 2 or sum(raw) != bins:
        raise InvalidModelConfig(
            f"{arch}: model.freqs_per_bands must be at least 2 bands summing to the "
            f"{bins} STFT bins of stft_n_fft, but {len(raw)} band(s) sum to {sum(raw)}"
        )
    return tuple(raw)


def build(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> nn.Module:
    """A :class:`BSRoformer` from an MSST config's ``model:`` section (``audio:`` is unused).

    Raises:
        InvalidModelConfig: see :meth:`RoformerOptions.read` and ``freqs_per_bands``.
    """
    opts = RoformerOptions.read(
        model, arch="bs_roformer", own=frozenset({"freqs_per_bands"}), mask_depth=2
    )
    return _network(model, opts, instruments, target_instrument, "bs_roformer")


def build_conformer(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> nn.Module:
    """MSST's ``bs_conformer`` from its config's ``model:`` section: a :class:`BSRoformer` with
    Conformer blocks (see :meth:`RoformerOptions.read_conformer`)."""
    opts = RoformerOptions.read_conformer(
        model, arch="bs_conformer", own=frozenset({"freqs_per_bands"}), mask_depth=2
    )
    return _network(model, opts, instruments, target_instrument, "bs_conformer")


def _network(
    model: Mapping[str, Any],
    opts: RoformerOptions,
    instruments: Sequence[str],
    target_instrument: str | None,
    arch: str,
) -> BSRoformer:
    bands = _bands(model, opts.n_fft // 2 + 1, arch)
    heads = active_heads(opts.num_stems, instruments, target_instrument, arch)
    return BSRoformer(opts, bands, heads)
