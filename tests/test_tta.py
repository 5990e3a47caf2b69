"""Test-time augmentation (demixer.models.tta): every transform is undone exactly.

The backends here are small linear models written for the test, so the expected stems can be
worked out by hand; the real Spleeter model's invariants are in test_spleeter.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from demixer.models.tta import Augmentation, Augmented

RATE = 1000


class _Linear:
    """Stem ``a`` = ``gains[0]`` x, ``b`` = ``gains[1]`` x on each channel (``gains``: (2, 2))."""

    sample_rate = RATE
    channels = 2
    stems: tuple[str, ...] = ("a", "b")
    window = 4000
    overlap = 500

    def __init__(self, gains: np.ndarray, ramp: bool = False) -> None:
        self.gains = gains.astype(np.float32)
        self.ramp = ramp  # also weight each sample by its position in the window it is given

    def separate(self, mix: np.ndarray) -> dict[str, np.ndarray]:
        weight = np.arange(mix.shape[1], dtype=np.float32) if self.ramp else np.float32(1)
        return {
            name: g[:, None] * mix * weight for name, g in zip(self.stems, self.gains, strict=True)
        }


def _signal(samples: int = 700) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, samples)).astype(np.float32)


@pytest.mark.parametrize(
    "augmentation",
    [
        Augmentation(shifts=(0, 3, 250)),
        Augmentation(channel_swap=True),
        Augmentation(polarity=True),
        Augmentation(shifts=(7, 0), channel_swap=True, polarity=True),
    ],
)
def test_a_model_invariant_to_every_transform_is_unchanged(augmentation: Augmentation) -> None:
    inner = _Linear(np.array([[0.25, 0.25], [0.75, 0.75]]))
    x = _signal()
    out = Augmented(inner, augmentation).separate(x)
    assert list(out) == ["a", "b"]
    for name, y in inner.separate(x).items():
        assert out[name].dtype == np.float32 and out[name].shape == x.shape
        np.testing.assert_allclose(out[name], y, atol=1e-6)
    np.testing.assert_allclose(out["a"] + out["b"], x, atol=1e-6)  # still the mix


def test_channel_swap_averages_a_one_sided_model_over_both_sides() -> None:
    # Stem a is the left channel only; swapped, it is the right channel (mapped back): the
    # average is half of each channel, and b (the rest) still completes the mix.
    inner = _Linear(np.array([[1.0, 0.0], [0.0, 1.0]]))
    x = _signal()
    out = Augmented(inner, Augmentation(channel_swap=True)).separate(x)
    np.testing.assert_allclose(out["a"], x / 2, atol=1e-6)
    np.testing.assert_allclose(out["b"], x / 2, atol=1e-6)


def test_shifts_are_cropped_back_to_the_samples_they_delayed() -> None:
    # The model weights each sample by its index in the window it receives; delayed by s, the
    # sample at t sits at index t + s. The average over shifts is x times the mean index.
    inner = _Linear(np.array([[1.0, 1.0], [0.0, 0.0]]), ramp=True)
    x = _signal(500)
    shifts = (0, 1, 64)
    out = Augmented(inner, Augmentation(shifts=shifts)).separate(x)
    index = np.arange(500, dtype=np.float64)
    expected = x * (index + np.mean(shifts))
    np.testing.assert_allclose(out["a"], expected, rtol=1e-5)


def test_progress_runs_over_every_copy() -> None:
    class _Reporting(_Linear):
        def separate(  # type: ignore[override]
            self, mix: np.ndarray, *, on_progress: Any = None
        ) -> dict[str, np.ndarray]:
            on_progress(0.5)
            return super().separate(mix)

    seen: list[float] = []
    augmentation = Augmentation(shifts=(0, 5), channel_swap=True)
    Augmented(_Reporting(np.eye(2)), augmentation).separate(_signal(), on_progress=seen.append)
    assert seen == [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]  # 4 copies, halves
    seen.clear()
    Augmented(_Linear(np.eye(2)), augmentation).separate(_signal(), on_progress=seen.append)
    assert seen == [0.25, 0.5, 0.75, 1.0]  # an inner model that does not tell: after each copy


def test_the_window_leaves_room_for_the_longest_shift() -> None:
    inner = _Linear(np.eye(2))
    wrapped = Augmented(inner, Augmentation(shifts=(0, 768)))
    assert wrapped.window == inner.window - 768
    assert (wrapped.overlap, wrapped.sample_rate, wrapped.stems) == (500, RATE, ("a", "b"))
    assert Augmentation(shifts=(0, 5), channel_swap=True, polarity=True).passes == 8
    with pytest.raises(ValueError, match="shift"):
        Augmentation(shifts=(-1,))
    with pytest.raises(ValueError, match="too long"):
        Augmented(inner, Augmentation(shifts=(2000,)))
