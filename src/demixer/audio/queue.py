"""A queue of audio blocks from which exact sample counts are taken, for streams whose output
arrives in other block sizes than their input (the engine's residual, MSST's complement stem)."""

from __future__ import annotations

import numpy as np

__all__ = ["SampleQueue"]


class SampleQueue:
    """``(channels, n)`` float32 blocks queued; take exactly ``n`` samples from the front.

    Attributes:
        size: samples queued.
    """

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self.size = 0

    def push(self, block: np.ndarray) -> None:
        if block.shape[1]:
            self._blocks.append(block)
            self.size += block.shape[1]

    def pop(self, n: int) -> np.ndarray:
        """The next ``n`` samples (at most :attr:`size`), contiguous, removed from the queue."""
        joined = np.concatenate(self._blocks, axis=1) if len(self._blocks) > 1 else self._blocks[0]
        out, rest = joined[:, :n], joined[:, n:]
        self._blocks = [rest] if rest.shape[1] else []
        self.size -= n
        return np.ascontiguousarray(out)

    def pop_fitted(self, n: int, channels: int) -> np.ndarray:
        """``n`` samples, zero-padded if fewer are queued (a resampler's last sample or so);
        empties the queue."""
        have = min(n, self.size)
        out = self.pop(have) if have else np.zeros((channels, 0), np.float32)
        if have < n:
            out = np.pad(out, ((0, 0), (0, n - have)))
        self._blocks, self.size = [], 0
        return out
