"""Small deterministic backends at the :class:`~demixer.models.base.Backend` interface, for the
graph runner, ensembles and the planner (a real network would only make those tests slow).

Each fake's stems are simple, known functions of its input, so a test can compute by hand what a
chain or an ensemble of them must return. Like many real 2-stem models (whose two outputs are
each predicted), the fakes' stems do *not* add up to their input: mixture consistency has to
come from the recipe's remainders, not from the models. Every call is counted per fake id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from demixer.models.base import InputStats
from demixer.models.registry import ModelSpec, get_spec

__all__ = ["CALLS", "FakeBackend", "FakeLeveller", "fake_spec", "lowpass", "stems_of"]

CALLS: Counter[str] = Counter()


def lowpass(x: np.ndarray, taps: int) -> np.ndarray:
    """A causal moving average over ``taps`` samples, per channel (float32)."""
    kernel = np.ones(taps, dtype=np.float64) / taps
    return np.stack([np.convolve(c, kernel)[: x.shape[1]] for c in x]).astype(np.float32)


def stems_of(kind: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """What fake ``kind`` returns for ``x`` (``(channels, n)``)."""
    if kind == "vocals":  # "Vocals" the low band, an "Instrumental" that does not add up
        low = lowpass(x, 8)
        return {"Vocals": low, "Instrumental": (0.9 * (x - low)).astype(np.float32)}
    if kind == "vocals2":  # another vocal model: a smoother low band
        low = lowpass(x, 32)
        return {"vocals": low, "other": (x - low).astype(np.float32)}
    if kind == "karaoke":  # lead = 60 % of its input
        return {
            "Vocals": (0.6 * x).astype(np.float32),
            "Instrumental": (0.3 * x).astype(np.float32),
        }
    if kind == "dereverb":  # "dry" = the low band
        low = lowpass(x, 4)
        return {"noreverb": low, "reverb": (x - low).astype(np.float32)}
    if kind == "four":
        return {
            "drums": (0.1 * x).astype(np.float32),
            "bass": lowpass(x, 64),
            "other": (0.2 * x).astype(np.float32),
            "vocals": (0.3 * x).astype(np.float32),
        }
    raise ValueError(kind)


_STEMS = {
    "vocals": ("Vocals", "Instrumental"),
    "vocals2": ("vocals", "other"),
    "karaoke": ("Vocals", "Instrumental"),
    "four": ("drums", "bass", "other", "vocals"),
    "dereverb": ("noreverb", "reverb"),
    "level": ("Lead", "Rest"),
}


class FakeBackend:
    """A fake model of one ``kind`` with the window and overlap its spec's ``arch_params`` say."""

    channels = 2

    def __init__(self, spec: ModelSpec) -> None:
        self.id = spec.id
        self.kind = str(spec.arch_params["kind"])
        self.sample_rate = spec.sample_rate
        self.stems = _STEMS[self.kind]
        self.window = int(spec.arch_params.get("window", 4 * spec.sample_rate))
        self.overlap = int(spec.arch_params.get("overlap", spec.sample_rate // 4))

    def separate(self, mix: np.ndarray) -> dict[str, np.ndarray]:
        assert mix.shape[1] <= self.window, "the engine must never pass more than the window"
        CALLS[self.id] += 1
        return stems_of(self.kind, mix)


class _PeakMeter:
    def __init__(self) -> None:
        self.peak = 0.0

    def push(self, block: np.ndarray) -> None:
        if block.size:
            self.peak = max(self.peak, float(np.abs(block).max()))

    def result(self) -> InputStats:
        return InputStats(peak=self.peak)


class FakeLeveller:
    """A fake model that scales by its whole input, as a VR model does by its loudest bin: its
    ``Lead`` is the input brought to a peak of 0.5 (``Rest`` a tenth of the input, not adding
    up); it streams the input itself, block by block, after the engine has measured the peak
    with its meter. Given a window (:meth:`separate`), it can only scale by that window's."""

    channels = 2
    needs_stats = True
    meter_key = "fake-peak"

    def __init__(self, spec: ModelSpec) -> None:
        self.id = spec.id
        self.sample_rate = spec.sample_rate
        self.stems = _STEMS["level"]
        self.window = int(spec.arch_params.get("window", 4 * spec.sample_rate))
        self.overlap = int(spec.arch_params.get("overlap", spec.sample_rate // 4))

    def meter(self) -> _PeakMeter:
        return _PeakMeter()

    def _stems(self, x: np.ndarray, peak: float) -> dict[str, np.ndarray]:
        gain = 0.5 / peak if peak else 0.0
        return {"Lead": (gain * x).astype(np.float32), "Rest": (0.1 * x).astype(np.float32)}

    def separate(self, mix: np.ndarray) -> dict[str, np.ndarray]:
        CALLS[self.id] += 1
        return self._stems(mix, float(np.abs(mix).max()))

    def stream(
        self,
        blocks: Iterable[np.ndarray],
        *,
        before_run: Callable[[int], None] | None = None,
        stats: InputStats | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        assert stats is not None, "the engine must measure the input first"
        position = 0
        for block in blocks:
            if before_run is not None:
                before_run(position)
            CALLS[self.id] += 1
            position += block.shape[1]
            yield self._stems(block, stats.peak)


def fake_spec(model_id: str, kind: str, **arch: int) -> ModelSpec:
    """A registered-looking spec for a fake (no weights: always installed)."""
    base = get_spec("spleeter-2stems")
    return replace(
        base,
        id=model_id,
        stems=tuple(s.lower() for s in _STEMS[kind]),  # a spec names stems lowercase
        loader="fake_models:load",
        weights=(),
        requires=(),
        arch_params={"kind": kind, **arch},
        scores=(),
    )


def load(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
) -> FakeBackend | FakeLeveller:
    return FakeLeveller(spec) if spec.arch_params["kind"] == "level" else FakeBackend(spec)
