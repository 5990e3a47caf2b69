"""What every separation model gives the engine.

A backend is the loaded, ready-to-run form of a registered model. It sees audio only at its own
sample rate and channel count; decoding, resampling, windowing, residuals and encoding all belong
to the engine, so a backend is just "array in, stems out".
"""

from __future__ import annotations

import inspect
from typing import Protocol

import numpy as np

__all__ = ["Backend", "reports_progress"]


class Backend(Protocol):
    """A loaded model.

    Attributes:
        sample_rate: the rate (Hz) ``separate`` expects and returns.
        channels: the channel count ``separate`` expects (the engine duplicates mono input).
        stems: the stems ``separate`` returns, in the model's order.
        window: preferred window length in samples at ``sample_rate``; the engine feeds windows
            of at most this length (the last may be shorter) so memory stays bounded.
        overlap: samples shared by consecutive windows, cross-faded by the engine.
    """

    sample_rate: int
    channels: int
    stems: tuple[str, ...]
    window: int
    overlap: int

    def separate(self, mix: np.ndarray) -> dict[str, np.ndarray]:
        """Split one window.

        A backend whose window takes long may also accept a keyword ``on_progress``
        (``Callable[[float], None]``, the fraction of this window done, non-decreasing): the
        engine then passes one and reports progress within the window, not only between
        windows (Spleeter and Demucs do; see :mod:`demixer.engine.separator`).

        Args:
            mix: ``(channels, samples)`` float32 at ``sample_rate``.

        Returns:
            stem name -> ``(channels, samples)`` float32, same length as ``mix``.
        """
        ...


def reports_progress(backend: Backend) -> bool:
    """Whether ``backend.separate`` takes an ``on_progress`` keyword (progress within a
    window; see :meth:`Backend.separate`)."""
    try:
        return "on_progress" in inspect.signature(backend.separate).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no keywords to look at
        return False
