"""Test-time augmentation: a backend's stems averaged over transformed copies of each window.

Each copy of the window is transformed (delayed by a few samples, its channels swapped, its
polarity inverted), separated, and the transform undone on every stem; the stems are averaged
over all copies. A model whose output changes with the transform (the STFT grid, the order of
the channels it was trained on) gives slightly different errors on each copy, and the average
has less of them. Transforms a model is exactly invariant to cost a pass and change nothing:
a magnitude-mask model such as Spleeter gives exactly the same result for an inverted input, so
polarity is never worth it there (``tests/test_tta.py`` checks that identity).

Each copy's stems sum to that copy's input and every transform is linear, so the averaged stems
still sum to the window: mixture consistency survives.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from demixer.models.base import Backend, reports_progress

__all__ = ["Augmentation", "Augmented"]


@dataclass(frozen=True)
class Augmentation:
    """Which copies of each window a model separates.

    Attributes:
        shifts: delays in samples at the model's rate (0: the window as it is); each copy is
            the window with this much silence in front.
        channel_swap: also separate each copy with its left and right channels exchanged.
        polarity: also separate each copy inverted (sign flipped).
    """

    shifts: tuple[int, ...] = (0,)
    channel_swap: bool = False
    polarity: bool = False

    def __post_init__(self) -> None:
        if not self.shifts or any(s < 0 for s in self.shifts):
            raise ValueError(f"shifts must be >= 0 samples, and at least one: {self.shifts}")

    @property
    def passes(self) -> int:
        """Separations per window."""
        return len(self.shifts) * (2 if self.channel_swap else 1) * (2 if self.polarity else 1)


class Augmented:
    """A :class:`~demixer.models.base.Backend` averaging ``inner``'s stems over augmented copies.

    Attributes:
        window: ``inner``'s window less the longest shift, so that every shifted copy still fits
            the window the model is fastest at (samples).
        overlap, sample_rate, channels, stems: ``inner``'s.
    """

    def __init__(self, inner: Backend, augmentation: Augmentation) -> None:
        longest = max(augmentation.shifts)
        if longest >= inner.window // 2:
            raise ValueError(f"shift {longest} is too long for a {inner.window}-sample window")
        self.inner = inner
        self.augmentation = augmentation
        self.sample_rate = inner.sample_rate
        self.channels = inner.channels
        self.stems = inner.stems
        self.window = inner.window - longest
        self.overlap = min(inner.overlap, self.window // 2)

    def separate(
        self, mix: np.ndarray, *, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Split one window ``(channels, samples)`` float32; stems of the same shape, float32.

        ``on_progress`` gets the fraction of the window done: within each copy when the inner
        backend reports it, else after each copy.
        """
        aug = self.augmentation
        swaps = (False, True) if aug.channel_swap and mix.shape[0] > 1 else (False,)
        signs = (1.0, -1.0) if aug.polarity else (1.0,)
        variants = list(itertools.product(aug.shifts, swaps, signs))
        samples = mix.shape[1]
        total: dict[str, np.ndarray] = {}
        copies = 0
        for shift, swap, sign in variants:
            x = mix[::-1] if swap else mix
            x = np.ascontiguousarray(np.pad(x * np.float32(sign), ((0, 0), (shift, 0))))
            if on_progress is not None and reports_progress(self.inner):
                reporting: Any = self.inner

                def within(
                    f: float, done: int = copies, report: Callable[[float], None] = on_progress
                ) -> None:
                    report((done + f) / len(variants))

                separated = reporting.separate(x, on_progress=within)
            else:
                separated = self.inner.separate(x)
            for name, y in separated.items():
                y = y[::-1, shift : shift + samples] if swap else y[:, shift : shift + samples]
                if name in total:
                    total[name] += y * np.float32(sign)
                else:
                    total[name] = (y * np.float32(sign)).astype(np.float32)
            copies += 1
            if on_progress is not None:
                on_progress(copies / len(variants))
        return {name: y / np.float32(copies) for name, y in total.items()}
