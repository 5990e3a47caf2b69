"""Spans: where an ``audio/separate`` target is kept, with known answers on synthetic arrays."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from demixer.engine.spans import FADE_SECONDS, Span, apply_spans, span_gain
from demixer.errors import InvalidOutput

RATE = 1000  # Hz: one sample per millisecond keeps the arithmetic readable
FADE = round(FADE_SECONDS * RATE)  # 10 samples


def _signals(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.standard_normal((2, n)).astype(np.float32)
    residual = rng.standard_normal((2, n)).astype(np.float32)
    return target, residual


def test_no_spans_keeps_everything() -> None:
    target, residual = _signals()
    kept, rest = apply_spans(target, residual, 0, RATE, [])
    assert kept is target and rest is residual
    assert np.all(span_gain(0, 100, RATE, []) == 1.0)


def test_include_keeps_the_span_exactly_and_nothing_beyond_the_fades() -> None:
    gain = span_gain(0, 3000, RATE, [Span(1.0, 2.0, True)])
    assert np.all(gain[1000:2001] == 1.0)  # the span itself: every sample kept
    assert np.all(gain[: 1000 - FADE] == 0.0)
    assert np.all(gain[2000 + FADE + 1 :] == 0.0)
    # Linear fades of 10 ms outside the span.
    np.testing.assert_allclose(gain[1000 - FADE : 1001], np.linspace(0, 1, FADE + 1), atol=1e-6)
    np.testing.assert_allclose(gain[2000 : 2000 + FADE + 1], np.linspace(1, 0, FADE + 1), atol=1e-6)


def test_exclude_silences_the_span_exactly_and_keeps_the_rest() -> None:
    gain = span_gain(0, 3000, RATE, [Span(1.0, 2.0, False)])
    assert np.all(gain[1000:2001] == 0.0)
    assert np.all(gain[: 1000 - FADE] == 1.0)
    assert np.all(gain[2000 + FADE + 1 :] == 1.0)
    assert np.all(np.diff(gain[1000 - FADE : 1001]) < 0)


def test_exclusion_wins_over_inclusion_and_includes_combine() -> None:
    spans = [Span(0.5, 1.0, True), Span(2.0, 2.5, True), Span(0.7, 0.8, False)]
    gain = span_gain(0, 3000, RATE, spans)
    assert np.all(gain[500:690] == 1.0)
    assert np.all(gain[700:801] == 0.0)
    assert np.all(gain[810:1001] == 1.0)
    assert np.all(gain[2000:2501] == 1.0)
    assert np.all(gain[1011:1990] == 0.0)


def test_what_leaves_the_target_goes_to_the_residual() -> None:
    target, residual = _signals()
    spans = [Span(0.4, 1.3, True), Span(0.9, 1.0, False)]
    kept, rest = apply_spans(target, residual, 0, RATE, spans)
    assert kept.dtype == np.float32 and rest.dtype == np.float32
    np.testing.assert_allclose(kept + rest, target + residual, atol=1e-5)
    gain = span_gain(0, 3000, RATE, spans)
    np.testing.assert_allclose(kept, target * gain, atol=1e-6)
    assert np.all(kept[:, 2000:] == 0.0)
    np.testing.assert_array_equal(rest[:, 2000:], target[:, 2000:] + residual[:, 2000:])


def test_blocks_give_the_same_result_as_the_whole_signal() -> None:
    target, residual = _signals(n=2500, seed=1)
    spans = [Span(0.333, 1.5, True), Span(1.2, 1.201, False)]
    whole = apply_spans(target, residual, 0, RATE, spans)
    parts = [
        apply_spans(target[:, i : i + 97], residual[:, i : i + 97], i, RATE, spans)
        for i in range(0, 2500, 97)
    ]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts], axis=1), whole[0])
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts], axis=1), whole[1])


def test_a_span_shorter_than_its_fades_still_peaks_at_one() -> None:
    gain = span_gain(0, 200, RATE, [Span(0.1, 0.1001, True)])
    assert gain.max() == pytest.approx(1.0, abs=0.11)
    assert np.count_nonzero(gain) <= 2 * FADE + 2


def test_the_api_s_hundred_spans_take_a_few_blocks_of_memory_not_one_per_span() -> None:
    """Spleeter hands the spans blocks of 46 s (2,027,520 samples): with the 100 spans the API
    accepts, each block's gain held every span's coverage of the whole block at once, 2.5 GB
    in the worker (and 5x the separation's time). A second of audio here, same shape."""
    rate = 44100
    spans = [Span(i / 100, i / 100 + 0.004, i % 4 != 0) for i in range(100)]
    tracemalloc.start()
    try:
        gain = span_gain(0, rate, rate, spans)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * rate * 8  # a few block-long float64 arrays
    assert np.all(gain[round(0.02 * rate) : round(0.024 * rate) + 1] == 1.0)  # span 2: kept
    assert np.all(gain[round(0.04 * rate) : round(0.044 * rate) + 1] == 0.0)  # span 4: out


def test_a_span_reads_start_colon_end_in_seconds() -> None:
    assert Span.parse("1:2.5") == Span(1.0, 2.5, True)
    assert Span.parse("0:1", include=False) == Span(0.0, 1.0, False)


@pytest.mark.parametrize("text", ["0-1", "1", "a:2", "2:1", "1:1", "-1:1", "0:inf", ":"])
def test_a_bad_span_is_refused(text: str) -> None:
    with pytest.raises(InvalidOutput, match="span"):
        Span.parse(text)


def test_mismatched_shapes_are_refused() -> None:
    target, residual = _signals()
    with pytest.raises(ValueError, match="must match"):
        apply_spans(target, residual[:, :10], 0, RATE, [Span(0, 1, True)])
