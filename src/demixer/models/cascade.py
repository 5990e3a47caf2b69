"""Chains of models: the one graph runner behind recipes and the ``cascade-4stems`` model.

A :class:`GraphBackend` runs steps in order on each window the engine hands it. A step runs a
backend on the window's mix or on a stem an earlier step produced (that stem is then *consumed*:
it is split, not returned), renames the backend's stems it keeps, and may name a *remainder*:
the step's input minus the stems it kept. With a remainder (or a backend whose stems already
sum to its input) every step's outputs add up to its input, so the graph's returned stems add
up to the window: mixture consistency holds across the whole graph, and the engine's residual
(input minus the requested stems) is exactly the stems left out.

The engine streams a graph (:mod:`demixer.engine.graph`): each step's model runs over its
whole input as it runs alone, in memory flat in the input's length. :meth:`GraphBackend.separate`
runs every step on one window: for a graph as a member of an ensemble, and for the cascade
(:attr:`GraphBackend.streams`).

``cascade-4stems`` is the two-step case: spleeter's vocals and accompaniment, then drums, bass
and other split from the accompaniment by DSP (:func:`demixer.models.dsp.split_accompaniment`).
It is weak (see its card): it exists so that a 4-stem request works on a machine without
Demucs weights. Recipes from the catalogue go through :mod:`demixer.models.recipe`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from demixer.models.base import Backend, separate_at
from demixer.models.dsp import DEFAULT_PARAMS, SplitParams, split_accompaniment
from demixer.models.loading import load_backend
from demixer.models.quality import Quality, tuned
from demixer.models.registry import ModelSpec

__all__ = [
    "MIX",
    "CascadeBackend",
    "DspSplit",
    "GraphBackend",
    "Step",
    "load",
    "run_step",
    "shared_timing",
]

#: The name a step uses for the window's own mix as its input.
MIX = "mix"
# The harmonic median spans 0.4 s, so each window's edge is unreliable for ~0.2 s; the engine's
# cross-fade must be longer than that.
_MIN_OVERLAP_S = 1.0


@dataclass(frozen=True)
class Step:
    """One step of a graph.

    Attributes:
        backend: the loaded model (or DSP) the step runs.
        source: :data:`MIX` or a stem an earlier step produced (consumed here).
        outputs: backend stem (compared lowercase) -> graph stem name; backend stems not named
            here are left to the remainder.
        remainder: graph stem taking the source minus the stems kept, or None when every
            backend stem is kept as it is.
        label: the step's model id, for messages.
        weight: the step's share of a window's progress (relative to the other steps').
    """

    backend: Backend
    source: str
    outputs: Mapping[str, str]
    remainder: str | None = None
    label: str = ""
    weight: float = 1.0


class DspSplit:
    """The DSP split of an accompaniment into drums, bass and other, as a backend.

    Attributes:
        sample_rate: Hz. channels: 2 (mono works too). stems: drums, bass, other.
        window: unbounded in practice (the graph's other steps bound it); the DSP's working
            memory grows linearly with the window, about 0.4 GB for a 47 s stereo window.
        overlap: 1 s: the median filters' edge effects must be cross-faded away.
    """

    stems: tuple[str, ...] = ("drums", "bass", "other")
    channels = 2

    def __init__(self, sample_rate: int, params: SplitParams = DEFAULT_PARAMS) -> None:
        self.sample_rate = sample_rate
        self.params = params
        self.window = 1 << 30
        self.overlap = int(_MIN_OVERLAP_S * sample_rate)

    def separate(self, mix: np.ndarray) -> dict[str, np.ndarray]:
        """``(channels, n)`` -> drums, bass, other, summing exactly to ``mix``."""
        return split_accompaniment(mix, self.sample_rate, self.params)


def _check(steps: Sequence[Step], stems: Sequence[str]) -> None:
    """Every source produced before it is used and used once; the returned stems are exactly
    the ones produced and not consumed. Raises ``ValueError`` naming the fault."""
    produced: dict[str, str] = {}
    consumed: set[str] = set()
    for i, step in enumerate(steps):
        if step.source != MIX and step.source not in produced:
            raise ValueError(f"step {i + 1} reads {step.source!r}, which no earlier step makes")
        if step.source in consumed:
            raise ValueError(f"step {i + 1} reads {step.source!r}, already split by a step")
        consumed.add(step.source)
        names = [*step.outputs.values(), *([step.remainder] if step.remainder else [])]
        backend_stems = {s.lower() for s in step.backend.stems}
        unknown = [k for k in step.outputs if k.lower() not in backend_stems]
        if unknown:
            raise ValueError(
                f"step {i + 1} keeps {unknown[0]!r}, not a stem of {step.label or 'its model'} "
                f"({', '.join(step.backend.stems)})"
            )
        if step.remainder is None and len(step.outputs) < len(backend_stems):
            raise ValueError(f"step {i + 1} drops stems without a remainder to take them")
        for name in names:
            if name in produced or name == MIX or names.count(name) > 1:
                raise ValueError(f"stem {name!r} is made twice")
            produced[name] = step.label
    leaves = [s for s in produced if s not in consumed]
    if sorted(leaves) != sorted(stems):
        raise ValueError(f"the graph returns {', '.join(leaves)}, not {', '.join(stems)}")


class GraphBackend:
    """Steps run in order on each window; the stems nobody consumed are returned.

    Attributes:
        sample_rate: the first step's rate (Hz); a step at another rate gets its input
            resampled to its own rate and back.
        channels: 2 when any step is stereo.
        stems: the graph's returned stems, in the declared order.
        window: the shortest of the steps' windows, in samples at :attr:`sample_rate`.
        overlap: the longest of the steps' overlaps, at most half the window (samples).
    """

    #: Whether the engine streams each step over its whole input (:mod:`demixer.engine.graph`)
    #: rather than running every step on its windows (:meth:`separate`).
    streams = True

    def __init__(self, steps: Sequence[Step], stems: Sequence[str]) -> None:
        if not steps:
            raise ValueError("a graph needs at least one step")
        _check(steps, stems)
        self.steps = tuple(steps)
        self.stems = tuple(stems)
        timing = shared_timing([s.backend for s in steps])
        self.sample_rate, self.channels, self.window, self.overlap = timing
        total = sum(s.weight for s in steps)
        self.shares = tuple(s.weight / total for s in steps)

    def with_quality(self, quality: Quality) -> Backend:
        """The graph with each step's model at ``quality`` (the loaded weights are shared)."""
        steps = [replace(step, backend=tuned(step.backend, quality)) for step in self.steps]
        if all(a.backend is b.backend for a, b in zip(steps, self.steps, strict=True)):
            return self
        graph = GraphBackend(steps, self.stems)
        graph.streams = self.streams
        return graph

    def separate(
        self, mix: np.ndarray, *, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Run every step on one window.

        Args:
            mix: ``(channels, samples)`` float32 at :attr:`sample_rate`.
            on_progress: fractions of this window done (each step's share by its weight,
                from inside a step whose backend reports progress).

        Returns:
            :attr:`stems` -> ``(channels, samples)`` float32, same shape as ``mix``.
        """
        values: dict[str, np.ndarray] = {MIX: mix}
        done = 0.0
        for step, share in zip(self.steps, self.shares, strict=True):
            source = values.pop(step.source)
            report = None if on_progress is None else _within(on_progress, done, share)
            values.update(run_step(step, source, self.sample_rate, report))
            done += share
            if on_progress is not None:
                on_progress(min(done, 1.0))
        return {name: values[name] for name in self.stems}


def shared_timing(backends: Sequence[Backend]) -> tuple[int, int, int, int]:
    """``(sample_rate, channels, window, overlap)`` for running ``backends`` on the same
    windows: the first one's rate (Hz), stereo when any is, the shortest window and the longest
    overlap (at most half that window), both in samples at that rate."""
    rate = backends[0].sample_rate
    window = min(round(b.window * rate / b.sample_rate) for b in backends)
    overlap = max(round(b.overlap * rate / b.sample_rate) for b in backends)
    return rate, max(b.channels for b in backends), window, min(overlap, window // 2)


def _within(
    on_progress: Callable[[float], None], start: float, share: float
) -> Callable[[float], None]:
    """A step's own fractions -> the window's, the step covering ``[start, start + share]``."""
    return lambda fraction: on_progress(start + share * min(max(fraction, 0.0), 1.0))


def run_step(
    step: Step, x: np.ndarray, rate: int, on_progress: Callable[[float], None] | None
) -> dict[str, np.ndarray]:
    """One step on ``x`` (``(channels, n)`` at ``rate``): the stems it names, same shape."""
    # Named by the engine, a crash said only "model 'max:a+b+c' failed": which of the models
    # ran out of memory (or broke) is what the user has to change.
    label = step.label or None
    stems = separate_at(
        step.backend, x, rate, list(step.outputs), label=label, on_progress=on_progress
    )
    out = {name: stems[stem] for stem, name in step.outputs.items()}
    if step.remainder is not None:
        kept = sum(out.values()) if out else np.zeros_like(x)
        out[step.remainder] = np.ascontiguousarray(x - kept, dtype=np.float32)
    return out


class CascadeBackend(GraphBackend):
    """Vocals from a 2-stem backend; drums, bass and other from its accompaniment.

    Spleeter's passes count for 80 % of a window's progress, the DSP split for the rest. The
    window is the 2-stem backend's; the overlap its own or 1 s, whichever is longer.

    Both steps take windows and neither scales by its whole input, so the engine runs them on
    one shared window in turn (:attr:`streams` false): streamed one behind the other (the
    split in windows of its own), their working sets would be held at once, for no better
    stems (measured: 0.1-0.2 GB more at 3 minutes).
    """

    streams = False

    def __init__(self, two_stem: Backend, params: SplitParams = DEFAULT_PARAMS) -> None:
        if set(two_stem.stems) != {"vocals", "accompaniment"}:
            raise ValueError(f"need a vocals/accompaniment backend, got stems {two_stem.stems}")
        self.two_stem = two_stem
        self.params = params
        steps = (
            Step(
                two_stem,
                MIX,
                {"vocals": "vocals", "accompaniment": "accompaniment"},
                label="spleeter-2stems",
                weight=0.8,
            ),
            Step(
                DspSplit(two_stem.sample_rate, params),
                "accompaniment",
                {"drums": "drums", "bass": "bass", "other": "other"},
                label="dsp-split",
                weight=0.2,
            ),
        )
        super().__init__(steps, ("vocals", "drums", "bass", "other"))


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
