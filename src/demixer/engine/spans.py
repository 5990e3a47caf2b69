"""Time spans that limit where a separated ``target`` is kept (``audio/separate`` jobs).

A request may carry spans ``{start, end, include}`` in seconds of the input. With any
``include: true`` span, the target is kept only inside the included spans; inside every
``include: false`` span it is silenced (exclusion wins where they overlap). Whatever is taken
out of the target is added to the residual, so target + residual still equals the input.

Each edge is a linear fade of :data:`FADE_SECONDS` placed *outside* the span, so a span's own
samples are honoured exactly (an included span keeps all of its target, an excluded one keeps
none) and the cut never clicks.

Everything here is a pure function of sample positions, so a long file is processed block by
block with the same result as all at once (see :func:`span_gain`'s ``start``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from demixer.audio import OutputFormat, StemSetWriter, WriteReport
from demixer.errors import InvalidOutput

__all__ = [
    "FADE_SECONDS",
    "Span",
    "apply_spans",
    "apply_spans_to_files",
    "parse_spans",
    "span_gain",
]

_BLOCK = 1 << 16  # frames per block when applying spans to files

FADE_SECONDS = 0.010


@dataclass(frozen=True)
class Span:
    """A stretch of the input, in seconds from its start: ``start <= t <= end``."""

    start: float
    end: float
    include: bool


def parse_spans(raw: Any) -> list[Span]:
    """Validate a request's ``spans`` (None or a list of ``{start, end, include}``).

    Raises:
        InvalidOutput: not a list of objects, non-finite or negative times, ``end <= start``.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidOutput(f"spans must be a list of {{start, end, include}}, got {raw!r}")
    spans = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidOutput(f"spans[{i}] must be an object {{start, end, include}}")
        try:
            start, end = float(item["start"]), float(item["end"])
        except (KeyError, TypeError, ValueError):
            raise InvalidOutput(f"spans[{i}] needs numeric start and end (seconds)") from None
        include = item.get("include", True)
        if not isinstance(include, bool):
            raise InvalidOutput(f"spans[{i}].include must be true or false")
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise InvalidOutput(
                f"spans[{i}] must have 0 <= start < end (seconds), got {start}..{end}"
            )
        spans.append(Span(start, end, include))
    return spans


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
        gain = np.max([_coverage(t, s, fade) for s in includes], axis=0)
    if excludes:
        gain *= 1.0 - np.max([_coverage(t, s, fade) for s in excludes], axis=0)
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


def _engine_name(names: dict[str, str], outputs: dict[str, Path], api_name: str) -> str:
    for engine_name in outputs:
        if names.get(engine_name, engine_name) == api_name:
            return engine_name
    raise InvalidOutput(
        f"spans apply to the outputs named 'target' and 'residual', but this job's outputs are "
        f"{', '.join(names.get(n, n) for n in outputs)}"
    )


def apply_spans_to_files(
    floats: dict[str, Path],
    finals: dict[str, Path],
    names: dict[str, str],
    spans: list[Span],
    sample_rate: int,
    channels: int,
    fmt: OutputFormat,
) -> WriteReport:
    """Stream the float WAVs ``floats`` through the spans into ``finals`` (format ``fmt``)."""
    target = _engine_name(names, floats, "target")
    residual = _engine_name(names, floats, "residual")
    with contextlib.ExitStack() as stack:
        readers = {name: stack.enter_context(sf.SoundFile(str(p))) for name, p in floats.items()}
        writer = stack.enter_context(StemSetWriter(finals, sample_rate, channels, fmt))
        start = 0
        while True:
            blocks = {
                name: reader.read(_BLOCK, dtype="float32", always_2d=True).T
                for name, reader in readers.items()
            }
            n = blocks[target].shape[1]
            if n == 0:
                break
            blocks[target], blocks[residual] = apply_spans(
                blocks[target], blocks[residual], start, sample_rate, spans
            )
            writer.write(blocks)
            start += n
        return writer.close()
