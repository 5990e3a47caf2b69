"""Time spans that limit where a separated target stem is kept: a streaming step of the engine.

Spans ``{start, end, include}`` are in seconds of the input. With any ``include: true`` span,
the target is kept only inside the included spans; inside every ``include: false`` span it is
silenced (exclusion wins where they overlap). Whatever is taken out of the target is added to
the residual, so target + residual still equals the input. :meth:`demixer.engine.Separator.
separate_file` applies them to its output blocks as they stream (``spans=``), for
``demixer separate --span`` and the service's ``audio/separate`` alike.

Each edge is a linear fade of :data:`FADE_SECONDS` placed *outside* the span, so a span's own
samples are honoured exactly (an included span keeps all of its target, an excluded one keeps
none) and the cut never clicks.

Everything here is a pure function of sample positions, so a long file is processed block by
block with the same result as all at once (see :func:`span_gain`'s ``start``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from demixer.errors import InvalidOutput

__all__ = ["FADE_SECONDS", "MAX_SPANS", "Span", "apply_spans", "check_reach", "span_gain"]

#: The most spans one request of the API may give (the remote CLI checks it before it uploads).
MAX_SPANS = 100

FADE_SECONDS = 0.010


@dataclass(frozen=True)
class Span:
    """A stretch of the input, in seconds from its start: ``start <= t <= end``.

    Raises:
        InvalidOutput: non-finite or negative times, or ``end <= start``.
    """

    start: float
    end: float
    include: bool = True

    def __post_init__(self) -> None:
        start, end = self.start, self.end
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise InvalidOutput(f"a span needs 0 <= start < end (seconds), got {start}..{end}")

    @classmethod
    def parse(cls, text: str, *, include: bool = True) -> Span:
        """``"START:END"`` in seconds (``"12.5:30"``), as ``demixer separate --span`` takes it.

        Raises:
            InvalidOutput: not two numbers separated by a colon, or not a valid span.
        """
        head, colon, tail = text.partition(":")
        try:
            if not colon:
                raise ValueError(text)
            start, end = float(head), float(tail)
        except ValueError:
            raise InvalidOutput(
                f"span {text!r} is not START:END in seconds (e.g. 12.5:30)"
            ) from None
        return cls(start, end, include)


def check_reach(spans: Sequence[Span], duration: float) -> None:
    """Raise :class:`InvalidOutput` when the spans keep nothing of an input ``duration``
    seconds long: every included span starts at or after its end (an excluded one there is
    harmless: it takes out nothing)."""
    included = [s for s in spans if s.include]
    if included and all(s.start >= duration for s in included):
        first = min(included, key=lambda s: s.start)
        raise InvalidOutput(
            f"the span {first.start:g}:{first.end:g} starts after the input ends "
            f"({duration:.2f} s): it would keep nothing of the separated sound"
        )


def _coverage(t: np.ndarray, span: Span, fade: float) -> np.ndarray:
    """1 inside the span, linear ramps over ``fade`` seconds on both sides, 0 beyond."""
    # Distance outside the span (exactly 0 inside, so the span's own samples get exactly 1).
    outside: np.ndarray = np.maximum(np.maximum(span.start - t, t - span.end), 0.0)
    coverage: np.ndarray
    if fade <= 0:
        coverage = (outside == 0).astype(np.float64)
    else:
        coverage = np.clip(1.0 - outside / fade, 0.0, 1.0)
    return coverage


def _covered(
    start: int, t: np.ndarray, sample_rate: int, spans: Sequence[Span], fade: float
) -> np.ndarray:
    """The largest coverage of any of ``spans`` at times ``t`` (samples ``start`` on).

    Each span is computed over the samples it reaches only (its fades included): the other
    samples get 0 from it, as :func:`_coverage` would give them. Computing every span over
    the whole block took 100 spans times a block of a minute's samples in memory at once
    (gigabytes) and as many passes over it."""
    n = len(t)
    covered = np.zeros(n, dtype=np.float64)
    reach = max(fade, 0.0)
    for span in spans:
        # A sample of margin each side, for rounding; min() before the int conversion keeps a
        # huge (finite) span time from overflowing.
        low = (span.start - reach) * sample_rate - start
        high = (span.end + reach) * sample_rate - start
        first = max(math.floor(min(low, n)) - 1, 0)
        last = min(math.ceil(min(high, n)) + 2, n)
        if first < last:
            part = covered[first:last]
            np.maximum(part, _coverage(t[first:last], span, fade), out=part)
    return covered


def span_gain(
    start: int,
    n: int,
    sample_rate: int,
    spans: Sequence[Span],
    fade: float = FADE_SECONDS,
) -> np.ndarray:
    """The target's gain for samples ``start .. start + n - 1`` of the input.

    Args:
        start: index of the first sample (samples from the input's start).
        n: number of samples.
        sample_rate: Hz.
        spans: the spans (seconds); empty means gain 1 everywhere.
        fade: seconds of each linear edge fade.

    Returns:
        ``(n,)`` float32 in ``[0, 1]``.
    """
    t = (start + np.arange(n, dtype=np.float64)) / sample_rate
    includes = [s for s in spans if s.include]
    excludes = [s for s in spans if not s.include]
    gain = np.ones(n, dtype=np.float64)
    if includes:
        gain = _covered(start, t, sample_rate, includes, fade)
    if excludes:
        gain *= 1.0 - _covered(start, t, sample_rate, excludes, fade)
    return gain.astype(np.float32)


def apply_spans(
    target: np.ndarray,
    residual: np.ndarray,
    start: int,
    sample_rate: int,
    spans: Sequence[Span],
    fade: float = FADE_SECONDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Move the target outside the kept spans into the residual.

    Args:
        target: ``(channels, n)`` float32, samples ``start .. start + n - 1`` of the target.
        residual: the same samples of the residual, same shape.
        start: index of the first sample in the whole signal.
        sample_rate: Hz.
        spans: see :func:`span_gain`.

    Returns:
        ``(target, residual)``, new float32 arrays with ``target + residual`` unchanged.
    """
    if target.shape != residual.shape or target.ndim != 2:
        raise ValueError(f"target {target.shape} and residual {residual.shape} must match")
    if not spans:
        return target, residual
    gain = span_gain(start, target.shape[1], sample_rate, spans, fade)
    kept = (target * gain).astype(np.float32)
    moved = target - kept
    return kept, (residual + moved).astype(np.float32)
