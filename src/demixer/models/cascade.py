"""The ``cascade-4stems`` model: spleeter's vocals, then drums/bass/other split by DSP.

Spleeter's 2-stem U-Net gives vocals and accompaniment;
:func:`demixer.models.dsp.split_accompaniment` splits the accompaniment into drums, bass and
other with harmonic/percussive median filtering and a low band. No weights beyond spleeter's are
needed. The result is weak (see the model card): it exists so that a 4-stem request works on a
machine without Demucs weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from demixer.models.base import Backend, reports_progress
from demixer.models.dsp import DEFAULT_PARAMS, SplitParams, split_accompaniment
from demixer.models.loading import load_backend
from demixer.models.quality import Quality, tuned
from demixer.models.registry import ModelSpec

__all__ = ["CascadeBackend", "load"]

# The harmonic median spans 0.4 s, so each window's edge is unreliable for ~0.2 s; the engine's
# cross-fade must be longer than that.
_MIN_OVERLAP_S = 1.0


class CascadeBackend:
    """Vocals from a 2-stem backend; drums, bass and other from its accompaniment.

    Attributes:
        sample_rate: the 2-stem backend's rate (Hz); the DSP runs at the same rate.
        channels: the 2-stem backend's channel count.
        stems: ``("vocals", "drums", "bass", "other")``.
        window: the 2-stem backend's window (samples); the DSP's working memory grows linearly
            with it, about 0.4 GB for spleeter's 47 s stereo window, so it needs no smaller one.
        overlap: the 2-stem backend's overlap, or at least 1 s, whichever is longer (samples).
    """

    stems: tuple[str, ...] = ("vocals", "drums", "bass", "other")

    def __init__(self, two_stem: Backend, params: SplitParams = DEFAULT_PARAMS) -> None:
        if set(two_stem.stems) != {"vocals", "accompaniment"}:
            raise ValueError(f"need a vocals/accompaniment backend, got stems {two_stem.stems}")
        self.two_stem = two_stem
        self.params = params
        self.sample_rate = two_stem.sample_rate
        self.channels = two_stem.channels
        self.window = two_stem.window
        min_overlap = int(_MIN_OVERLAP_S * two_stem.sample_rate)
        self.overlap = min(max(two_stem.overlap, min_overlap), self.window // 2)

    def with_quality(self, quality: Quality) -> Backend:
        """The cascade on the 2-stem backend at ``quality`` (the DSP split has no levels)."""
        return CascadeBackend(tuned(self.two_stem, quality), self.params)

    def separate(
        self, mix: np.ndarray, *, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Split one window; ``on_progress`` gets the fraction done (Spleeter's passes count
        for the first 80 %, the DSP split for the rest).

        Args:
            mix: ``(channels, samples)`` float32 at :attr:`sample_rate`.

        Returns:
            ``vocals``, ``drums``, ``bass``, ``other`` -> ``(channels, samples)`` float32; the
            last three sum to spleeter's accompaniment, so all four sum to what spleeter's two
            stems sum to.
        """
        if on_progress is not None and reports_progress(self.two_stem):
            reporting: Any = self.two_stem
            halves = reporting.separate(mix, on_progress=lambda f: on_progress(0.8 * f))
        else:
            halves = self.two_stem.separate(mix)
        parts = split_accompaniment(halves["accompaniment"], self.sample_rate, self.params)
        if on_progress is not None:
            on_progress(1.0)
        return {
            "vocals": np.asarray(halves["vocals"], dtype=np.float32),
            "drums": parts["drums"],
            "bass": parts["bass"],
            "other": parts["other"],
        }


def load(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
) -> CascadeBackend:
    """Build the cascade on top of the ``spleeter-2stems`` backend.

    Args:
        spec: the ``cascade-4stems`` spec (its ``requires`` names the 2-stem model).
        model_dir: weights cache directory for the 2-stem model.
        model_path: local weights for the 2-stem model, passed on unchanged (the cascade has
            none of its own).
        device: torch device for spleeter; the DSP runs on the CPU.
    """
    two_stem_id = spec.requires[0] if spec.requires else "spleeter-2stems"
    two_stem = load_backend(two_stem_id, model_dir=model_dir, model_path=model_path, device=device)
    return CascadeBackend(two_stem)
