"""The engine's side of a :class:`~demixer.models.base.StreamingBackend`.

Such a backend windows the whole input itself (MSST's chunking), so the engine does not cut
windows: it resamples the input stream to the model's rate, passes it through the backend, and
resamples each requested stem back, all with streaming resamplers; the input is held back only
until the stems for the same samples come out, so the residual (input minus stems) is exact and
memory stays bounded by the backend's own latency.

A backend that takes windows (Spleeter, Demucs) gets them from :func:`window_regions`: the engine
cuts the input into the backend's windows and cross-fades them (:mod:`demixer.engine.windows`).

An ensemble (:mod:`demixer.models.ensemble`) streams either way: :func:`stream_ensemble` runs
each member once over the one input stream, as that member runs alone (:func:`stream_backend`
or :func:`window_regions`), and combines the members' estimates as they come out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from demixer.audio import SampleQueue, StreamResampler, fit_length, resample, resampled_length
from demixer.engine.stems import HEARD
from demixer.engine.windows import overlap_add
from demixer.errors import DemixerError, ModelFailed
from demixer.models.base import (
    Backend,
    InputStats,
    Meter,
    StreamingBackend,
    meter,
    separate_at,
    stats_key,
    streaming,
)
from demixer.models.cascade import MIX, GraphBackend
from demixer.models.ensemble import CombineStream, EnsembleBackend

__all__ = [
    "alone_regions",
    "input_stats_at",
    "scaling",
    "separate_window",
    "stats_members",
    "stream_backend",
    "stream_ensemble",
    "streamed_ensemble",
    "window_regions",
    "window_size",
]

Regions = Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]
"""``(input, stems)``: consecutive regions of the input and the stems for them."""


def input_stats_at(
    blocks: Iterable[np.ndarray], sample_rate: int, members: Sequence[StreamingBackend]
) -> dict[Hashable, InputStats]:
    """The whole input's statistics each of ``members`` needs, by
    :func:`~demixer.models.base.stats_key`, in one pass over ``blocks`` (a block stream at
    ``sample_rate``): what a member's own meter measures (a VR model's spectral peak), else
    the mono mix's mean and standard deviation (float64), each taken as the model gets the
    input: resampled to its rate (an ensemble's members at two rates decoded the input once
    for each).

    MSST normalises the audio it separates, which it has already resampled to the model's rate;
    the statistics of the input at its own rate differ (the resampler removes what lies above
    the lower Nyquist frequency, and a short input's few samples become others).
    """
    meters: dict[Hashable, tuple[int, Meter]] = {}
    for member in members:
        key = stats_key(member)
        if key not in meters:
            meters[key] = (member.sample_rate, meter(member) or _Moments())
    resamplers: dict[int, StreamResampler] = {}
    channels = 0
    for block in blocks:
        if not block.shape[1]:
            continue
        channels = block.shape[0]
        at_rate: dict[int, np.ndarray] = {}
        for rate, measure in meters.values():
            if rate not in at_rate:
                if rate != sample_rate and rate not in resamplers:
                    resamplers[rate] = StreamResampler(sample_rate, rate, channels)
                at_rate[rate] = block if rate == sample_rate else resamplers[rate].process(block)
            measure.push(at_rate[rate])
    tails = {
        rate: resampler.process(np.zeros((channels, 0), np.float32), last=True)
        for rate, resampler in resamplers.items()
    }
    for rate, measure in meters.values():
        if rate in tails:
            measure.push(tails[rate])
    return {key: measure.result() for key, (_, measure) in meters.items()}


class _Moments:
    """The running mean and sum of squared deviations of a stream's mono mix (float64)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def push(self, block: np.ndarray) -> None:
        mono = np.asarray(block, np.float64).mean(axis=0)
        n = mono.shape[0]
        if not n:
            return
        block_mean = float(mono.mean())
        block_m2 = float(np.square(mono - block_mean).sum())
        delta = block_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.m2 += block_m2 + delta * delta * self.count * n / total
        self.count = total

    def result(self) -> InputStats:
        return InputStats(mean=self.mean, std=(self.m2 / self.count) ** 0.5 if self.count else 0.0)


def stream_backend(
    backend: StreamingBackend,
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    targets: Sequence[str],
    *,
    model_id: str,
    before_run: Callable[[int], None] | None = None,
    stats: InputStats | None = None,
    heard: bool = False,
) -> Regions:
    """Separate a block stream with a backend that windows it itself.

    Args:
        blocks: ``(channels, n)`` float32 at ``sample_rate``, 1 or 2 channels.
        targets: the stems to return (a subset of ``backend.stems``).
        before_run: the backend's hook, with positions converted to ``sample_rate``.
        heard: also return, under :data:`~demixer.engine.stems.HEARD`, the input as the model
            got it, resampled back (when the rates differ): what it lacks, the model never had.

    Yields:
        ``(input, stems)``: consecutive regions of the input and the target stems for them,
        each ``(channels, n)`` at ``sample_rate``; the regions tile the input.
    """
    rate = backend.sample_rate
    pending = SampleQueue()
    heard = heard and rate != sample_rate
    outputs = {name: SampleQueue() for name in (*targets, *([HEARD] if heard else []))}
    back: dict[str, StreamResampler] = {}
    channels = 0

    def model_blocks() -> Iterator[np.ndarray]:
        nonlocal channels
        to_model: StreamResampler | None = None
        for block in blocks:
            if not block.shape[1]:
                continue
            if to_model is None:
                channels = block.shape[0]
                to_model = StreamResampler(sample_rate, rate, channels)
            pending.push(block)
            yield sent(to_model.process(block))
        if to_model is not None:
            yield sent(to_model.process(np.zeros((channels, 0), np.float32), last=True), True)

    def sent(block: np.ndarray, last: bool = False) -> np.ndarray:
        if heard:
            if HEARD not in back:
                back[HEARD] = StreamResampler(rate, sample_rate, channels)
            outputs[HEARD].push(back[HEARD].process(block, last=last))
        return block

    def hook(position: int) -> None:
        if before_run is not None:
            before_run(resampled_length(position, rate, sample_rate))

    def ready() -> Regions:
        n = min([pending.size, *(f.size for f in outputs.values())])
        if n:
            yield pending.pop(n), {name: f.pop(n) for name, f in outputs.items()}

    try:
        for stems in backend.stream(model_blocks(), before_run=hook, stats=stats):
            for name in targets:
                if name not in back:
                    back[name] = StreamResampler(rate, sample_rate, stems[name].shape[0])
                outputs[name].push(back[name].process(stems[name]))
            yield from ready()
    except DemixerError:
        raise
    except Exception as exc:  # a model crash is ours, not the user's: say so
        raise ModelFailed(f"model {model_id!r} failed: {type(exc).__name__}: {exc}") from exc
    for name in targets:  # the HEARD resampler was flushed with the input's last block
        if name in back:
            outputs[name].push(back[name].process(np.zeros((channels, 0), np.float32), last=True))
    yield from ready()
    if pending.size:  # rates differ: the round trip may end a sample short or long
        n = pending.size
        yield pending.pop(n), {name: f.pop_fitted(n, channels) for name, f in outputs.items()}


def window_size(backend: Backend, sample_rate: int) -> tuple[int, int]:
    """``(window, overlap)`` of a backend that takes windows, in samples at ``sample_rate``."""
    ratio = sample_rate / backend.sample_rate
    window = max(2, round(backend.window * ratio))
    return window, min(window - 1, round(backend.overlap * ratio))


def window_regions(
    backend: Backend,
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    targets: Sequence[str],
    *,
    model_id: str,
    before_window: Callable[[int], None] | None = None,
    within: Callable[[float], None] | None = None,
    heard: bool = False,
) -> Regions:
    """Separate a block stream with a backend that takes windows: the input is cut into its
    windows (:func:`window_size`) and the windows' stems cross-faded
    (:func:`~demixer.engine.windows.overlap_add`); each window is :func:`separate_window`'s.

    Args:
        before_window: called with each window's start (samples at ``sample_rate``) before it
            is separated; raise from it to stop.
        within: fractions of the current window, for a backend that reports them.
        heard: also return the input as the model got it (see :func:`separate_window`).

    Yields:
        ``(input, stems)`` regions tiling the input, as :func:`stream_backend`'s.
    """
    window, overlap = window_size(backend, sample_rate)

    def separate(x: np.ndarray) -> dict[str, np.ndarray]:
        return separate_window(
            backend, x, sample_rate, targets, model_id=model_id, heard=heard, on_progress=within
        )

    return overlap_add(
        blocks, separate, window=window, overlap=overlap, before_window=before_window
    )


def separate_window(
    backend: Backend,
    x: np.ndarray,
    sample_rate: int,
    targets: Sequence[str],
    *,
    model_id: str,
    heard: bool = False,
    on_progress: Callable[[float], None] | None = None,
) -> dict[str, np.ndarray]:
    """One window ``(channels, n)`` at the input rate -> the ``targets`` stems, same shape, by
    ``backend`` (the loaded model at the request's quality level): resampled to the model's
    rate and channels and back. ``heard``: also return, under
    :data:`~demixer.engine.stems.HEARD`, the input as the model got it, resampled back (when
    the rates differ). ``on_progress``: fractions of this window, passed to a backend that
    reports them.
    """
    at_rate = resample(x, sample_rate, backend.sample_rate)  # the model's input, and what it heard
    out = separate_at(
        backend, x, sample_rate, targets, label=model_id, on_progress=on_progress, at_rate=at_rate
    )
    if heard and sample_rate != backend.sample_rate:
        out[HEARD] = fit_length(resample(at_rate, backend.sample_rate, sample_rate), x.shape[1])
    return out


def streamed_ensemble(backend: Backend) -> EnsembleBackend | None:
    """``backend`` when it is an ensemble (the engine then runs each member once over the
    whole input: :func:`stream_ensemble`), else None."""
    return backend if isinstance(backend, EnsembleBackend) else None


def stats_members(backend: Backend) -> list[StreamingBackend]:
    """The models in ``backend`` that need the whole input's :class:`InputStats` before it
    streams: itself when it streams and needs them, each such member of a streamed ensemble,
    each such step of a graph on the input itself (:mod:`demixer.engine.graph` measures those
    on an earlier step's stem), none otherwise."""
    if isinstance(backend, GraphBackend) and backend.streams:  # steps on the input (graph.py)
        members = [step.backend for step in backend.steps if step.source == MIX]
    elif (ensemble := streamed_ensemble(backend)) is not None:
        members = [step.backend for step in ensemble.steps]
    else:
        members = [backend]
    return [s for m in members if (s := scaling(m)) is not None]


def scaling(backend: Backend) -> StreamingBackend | None:
    """``backend`` when it streams and scales by its whole input's :class:`InputStats`."""
    member = streaming(backend)
    return member if member is not None and member.needs_stats else None


def alone_regions(
    backend: Backend,
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    targets: Sequence[str],
    *,
    model_id: str,
    before_run: Callable[[int], None] | None = None,
    stats: InputStats | None = None,
) -> Regions:
    """One model over a whole block stream as it runs alone: :func:`stream_backend` for one
    that windows the input itself (given ``stats`` where it scales by them),
    :func:`window_regions` (its own windows, ``before_run`` called before each) for one that
    takes windows. ``targets``: its stems, matched case-blind, keyed as given; an ensemble's
    members and a graph's steps run this way."""
    member = streaming(backend)
    if member is None:
        return window_regions(
            backend, blocks, sample_rate, targets, model_id=model_id, before_window=before_run
        )
    spelt = {stem.lower(): stem for stem in member.stems}  # the model's own spelling
    named = {name: spelt[name.lower()] for name in targets}
    regions = stream_backend(
        member,
        blocks,
        sample_rate,
        list(named.values()),
        model_id=model_id,
        before_run=before_run,
        stats=stats if member.needs_stats else None,
    )
    return (
        (region, {name: stems[stem] for name, stem in named.items()}) for region, stems in regions
    )


def stream_ensemble(
    ensemble: EnsembleBackend,
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    targets: Sequence[str],
    *,
    before_run: Callable[[int], None] | None = None,
    stats: Mapping[Hashable, InputStats] | None = None,
) -> Regions:
    """Separate a block stream with an ensemble, each member once over the whole input.

    Each member makes one pass over the whole input as it does alone: one that windows the input
    itself through :func:`stream_backend` (resampled to its rate and back, its statistics at its
    own rate), one that takes windows through :func:`window_regions` (its own windows, cross-
    faded, the engine's windows for it alone); their estimates, aligned
    sample for sample, are combined as they come (:class:`~demixer.models.ensemble.CombineStream`)
    and the ensemble's remainder is the input minus the combined stems. The member whose
    output is furthest behind runs next, so the input held for the others (and the estimates
    waiting for theirs) stays within the members' latencies.

    Args:
        blocks: ``(channels, n)`` float32 at ``sample_rate``, 1 or 2 channels.
        targets: the ensemble's stems to return.
        before_run: called before each member's model call with the members' mean position
            (samples at ``sample_rate``); raise from it to stop.
        stats: :func:`~demixer.models.base.stats_key` -> the input's statistics, for every
            member of :func:`stats_members`.

    Yields:
        ``(input, stems)``: consecutive regions of the input and the target stems for them,
        each ``(channels, n)`` at ``sample_rate``; the regions tile the input.
    """
    steps = ensemble.steps
    positions = [0] * len(steps)

    def hook(member: int) -> Callable[[int], None]:
        def at(position: int) -> None:
            positions[member] = position
            if before_run is not None:
                before_run(sum(positions) // len(steps))

        return at

    runs: list[Regions] = []
    for i, (step, copy) in enumerate(zip(steps, itertools.tee(blocks, len(steps)), strict=True)):
        scaled = scaling(step.backend)
        runs.append(
            alone_regions(
                step.backend,
                copy,
                sample_rate,
                list(step.outputs),
                model_id=step.label,  # a crash names the member
                before_run=hook(i),
                stats=None if scaled is None else (stats or {}).get(stats_key(scaled)),
            )
        )
    combined = [s for s in ensemble.stems if s != ensemble.remainder]
    estimates = [{stem: SampleQueue() for stem in combined} for _ in steps]
    combiners = {stem: CombineStream(ensemble.mode, ensemble.weights) for stem in combined}
    mixes = SampleQueue()  # the input, as the first member's regions tile it
    done = {stem: SampleQueue() for stem in combined}  # combined, not yet yielded
    made = [0] * len(steps)
    running = set(range(len(steps)))

    def ready() -> Regions:
        n = min(mixes.size, *(q.size for q in done.values()))
        if n:
            mix = mixes.pop(n)
            out = {stem: done[stem].pop(n) for stem in combined}
            if ensemble.remainder is not None:
                out[ensemble.remainder] = mix - sum(out.values())
            yield mix, {name: out[name] for name in targets}

    while running:
        i = min(running, key=made.__getitem__)  # the member furthest behind
        try:
            region, stems = next(runs[i])
        except StopIteration:
            running.discard(i)
            continue
        made[i] += region.shape[1]
        if i == 0:
            mixes.push(region)
        for name, stem in steps[i].outputs.items():
            estimates[i][stem].push(stems[name])
        n = min(q.size for member in estimates for q in member.values())
        if n:
            for stem in combined:
                done[stem].push(combiners[stem].push([m[stem].pop(n) for m in estimates]))
            yield from ready()
    for stem in combined:
        done[stem].push(combiners[stem].finish())
    yield from ready()
