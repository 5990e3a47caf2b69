"""Overlapping windows with cross-faded overlap-add, so memory does not grow with duration.

The input arrives as blocks of any size. Windows of ``window`` samples advance by
``window - overlap``; each is separated on its own, and in the overlap the earlier window's
output fades out linearly while the later one's fades in (the two weights sum to one, so a
stem that is consistent within each window stays consistent across the seam).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

__all__ = ["overlap_add"]

Separate = Callable[[np.ndarray], dict[str, np.ndarray]]


def overlap_add(
    blocks: Iterable[np.ndarray],
    separate: Separate,
    *,
    window: int,
    overlap: int,
    before_window: Callable[[int], None] | None = None,
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Run ``separate`` over overlapping windows of a block stream.

    Args:
        blocks: ``(channels, n)`` float32 arrays, in order.
        separate: window ``(channels, m)`` -> stem -> ``(channels, m)``.
        window: window length in samples (> overlap).
        overlap: samples shared by consecutive windows (cross-faded).
        before_window: called with the input position (samples) of each window's start, before
            it is separated (progress and cancellation hook).

    Yields:
        ``(input, stems)``: consecutive, non-overlapping regions of the input and their stems,
        each ``(channels, n)``; the regions tile the whole input.
    """
    if not 0 <= overlap < window:
        raise ValueError(f"need 0 <= overlap ({overlap}) < window ({window})")
    hop = window - overlap
    fade_in = ((np.arange(overlap, dtype=np.float32) + 0.5) / overlap) if overlap else None
    pending: list[np.ndarray] = []
    pending_len = 0
    start = 0  # input position of the first pending sample
    tail: dict[str, np.ndarray] | None = None  # previous window's stems over the overlap

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        nonlocal tail
        if before_window is not None:
            before_window(start)
        stems = separate(x)
        if tail is not None and fade_in is not None:
            for name, y in stems.items():
                n = min(overlap, y.shape[1])
                y[:, :n] = tail[name][:, :n] * (1 - fade_in[:n]) + y[:, :n] * fade_in[:n]
        return stems

    for block in blocks:
        if block.shape[1] == 0:
            continue
        pending.append(block)
        pending_len += block.shape[1]
        if pending_len < window:
            continue
        buf = np.concatenate(pending, axis=1)
        while buf.shape[1] >= window:
            stems = run(buf[:, :window])
            yield buf[:, :hop], {k: v[:, :hop] for k, v in stems.items()}
            tail = {k: v[:, hop:window] for k, v in stems.items()}
            buf = buf[:, hop:]
            start += hop
        pending, pending_len = [buf], buf.shape[1]

    if not pending_len:
        return
    buf = np.concatenate(pending, axis=1)
    if tail is not None and buf.shape[1] <= overlap:
        # The input ended inside the last overlap: that stretch is already separated.
        yield buf, {k: v[:, : buf.shape[1]] for k, v in tail.items()}
        return
    yield buf, run(buf)
