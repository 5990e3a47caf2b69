"""The engine's side of a :class:`~demixer.models.cascade.GraphBackend` (a recipe's chain):
each step runs over its whole input exactly as its model runs alone.

A step's model streams the stem an earlier step makes as it comes out
(:func:`~demixer.engine.streaming.stream_backend` for a model that windows the input itself,
:func:`~demixer.engine.streaming.window_regions` for one that takes windows), so a chain of
models is a pipeline: memory is bounded by the steps' latencies, whatever the input's length,
and a step's stems are the stems its model gives for that whole input. That is what a chain of
separations file by file computes (UVR's, or audio-separator's run twice): a recipe's figures
are its models' figures.

One thing a pipeline cannot give: a model that scales by its whole input (a VR model divides by
its input's loudest bin, an MSST model that normalises by the mean and deviation) needs those of
the stem it is given before its first block. Such a step on an earlier step's stem is a
*barrier*: the steps before it run over the whole input first, and what the rest of the graph
still needs of theirs (the stems, the input) is spooled to unnamed scratch files (float32,
removed when closed: nothing is left behind, even by a killed process), measured, and read back.
A step that scales by the input itself gets the engine's measurement of the input
(:func:`~demixer.engine.streaming.stats_members`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from demixer.audio import SampleQueue
from demixer.engine.streaming import Regions, alone_regions, input_stats_at, scaling
from demixer.errors import StorageFull
from demixer.models.base import Backend, InputStats, stats_key
from demixer.models.cascade import MIX, GraphBackend, Step

__all__ = ["stream_graph", "streamed_graph"]

_SPOOL_FRAMES = 1 << 16  # frames per block read back from a spool
_INPUT = "\0input"  # the lane of the graph's input as its regions come out (never a stem name)


def streamed_graph(backend: Backend) -> GraphBackend | None:
    """``backend`` when it is a graph of steps that streams (the engine then runs each step
    over its whole input: :func:`stream_graph`), else None."""
    return backend if isinstance(backend, GraphBackend) and backend.streams else None


class _Spool:
    """A stream of ``(channels, n)`` float32 blocks kept in an unnamed scratch file, read back
    as often as needed. A full disk is :class:`~demixer.errors.StorageFull`."""

    def __init__(self, scratch: Path | None) -> None:
        with _disk(scratch):
            self._file = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 (see close())
        self.scratch = scratch
        self.channels = 0
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        if not block.shape[1]:
            return
        self.channels = block.shape[0]
        with _disk(self.scratch):
            self._file.write(np.ascontiguousarray(block.T, dtype=np.float32).tobytes())
        self.frames += block.shape[1]

    def blocks(self) -> Iterator[np.ndarray]:
        """The blocks from the first frame (a reader of its own: two may read at once)."""
        with _disk(self.scratch):
            self._file.flush()
        frame_bytes = 4 * self.channels
        for start in range(0, self.frames, _SPOOL_FRAMES):
            n = min(_SPOOL_FRAMES, self.frames - start)
            data = os.pread(self._file.fileno(), n * frame_bytes, start * frame_bytes)
            yield np.frombuffer(data, np.float32).reshape(n, self.channels).T.copy()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a full disk's last buffer: dropped with the file
            self._file.close()


@contextlib.contextmanager
def _disk(scratch: Path | None) -> Iterator[None]:
    """A full disk under the spools said as such (nothing of the job's is kept)."""
    try:
        yield
    except OSError as exc:
        if StorageFull.caused(exc, scratch):
            raise StorageFull(
                "cannot keep a recipe's intermediate stems: the disk is full", where=scratch
            ) from exc
        raise


def stream_graph(
    graph: GraphBackend,
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    targets: Sequence[str],
    *,
    before_run: Callable[[int], None] | None = None,
    stats: Mapping[Hashable, InputStats] | None = None,
    scratch: Path | None = None,
) -> Regions:
    """Separate a block stream with a graph, each step over its whole input (see the module).

    Args:
        blocks: ``(channels, n)`` float32 at ``sample_rate``, 1 or 2 channels.
        targets: the graph's stems to return.
        before_run: called before each step's model call with the graph's position (its steps'
            positions weighted by their shares, samples at ``sample_rate``); raise from it to
            stop.
        stats: :func:`~demixer.models.base.stats_key` -> the input's statistics, for every
            step of :func:`~demixer.engine.streaming.stats_members`.
        scratch: the directory of the spools a barrier needs (None: ``$TMPDIR``).

    Yields:
        ``(input, stems)``: consecutive regions of the input and the target stems for them,
        each ``(channels, n)`` at ``sample_rate``; the regions tile the input.
    """
    positions = [0] * len(graph.steps)

    def hook(index: int) -> Callable[[int], None]:
        def at(position: int) -> None:
            positions[index] = position
            if before_run is not None:
                before_run(int(sum(s * p for s, p in zip(graph.shares, positions, strict=True))))

        return at

    def run(
        index: int, step: Step, feed: Iterator[np.ndarray], measured: InputStats | None
    ) -> Regions:
        return alone_regions(
            step.backend,
            feed,
            sample_rate,
            list(step.outputs),
            model_id=step.label,
            before_run=hook(index),
            stats=measured,
        )

    chain = _Chain(list(enumerate(graph.steps)), run, sample_rate, stats or {}, scratch)
    for values in chain.values({MIX: iter(blocks)}, list(targets)):
        yield values.pop(MIX), values


_Run = Callable[[int, Step, Iterator[np.ndarray], InputStats | None], Regions]


class _Chain:
    """Steps ``(index, step)`` run as pipelines, split at each barrier (see the module)."""

    def __init__(
        self,
        steps: list[tuple[int, Step]],
        run: _Run,
        sample_rate: int,
        stats: Mapping[Hashable, InputStats],
        scratch: Path | None,
    ) -> None:
        self.steps, self.run, self.sample_rate = steps, run, sample_rate
        self.stats, self.scratch = stats, scratch

    def values(
        self,
        sources: dict[str, Iterator[np.ndarray]],
        outputs: list[str],
        start: int = 0,
        measured: Mapping[str, InputStats] | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Blocks of :data:`MIX` and ``outputs`` (equal lengths, tiling the input) from the
        steps from ``start`` on, their inputs read from ``sources`` (value name -> blocks;
        :data:`MIX` always among them); ``measured``: the statistics of spooled values that a
        step scaling by them reads."""
        measured = measured or {}
        steps = self.steps[start:]
        cut = next(
            (
                k
                for k, (_, step) in enumerate(steps)
                if k and step.source not in sources and scaling(step.backend) is not None
            ),
            None,
        )
        if cut is None:
            yield from self._pipeline(steps, sources, outputs, measured)
            return
        head, tail = steps[:cut], steps[cut:]
        # What the tail still needs of the head's values and of the sources the head leaves.
        made = {name for _, s in head for name in _made(s)}
        needed = [
            name for name in dict.fromkeys([*(s.source for _, s in tail), *outputs]) if name in made
        ]
        passed = {n: it for n, it in sources.items() if n not in {s.source for _, s in head}}
        with ExitStack() as stack:
            spools: dict[str, _Spool] = {}
            for name in [MIX, *needed]:
                spools[name] = _Spool(self.scratch)
                stack.callback(spools[name].close)
            for values in self._pipeline(head, sources, needed, measured):
                for name, block in values.items():
                    spools[name].write(block)
            later = dict(measured)
            for _, step in tail:
                member = scaling(step.backend)
                if member is not None and step.source in spools:
                    later[step.source] = input_stats_at(
                        spools[step.source].blocks(), self.sample_rate, [member]
                    )[stats_key(member)]
            fed = {**passed, **{name: spool.blocks() for name, spool in spools.items()}}
            yield from self.values(fed, outputs, start + cut, later)

    def _pipeline(
        self,
        steps: list[tuple[int, Step]],
        sources: dict[str, Iterator[np.ndarray]],
        outputs: list[str],
        measured: Mapping[str, InputStats],
    ) -> Iterator[dict[str, np.ndarray]]:
        """Steps with no barrier among them, pulled block by block (see :meth:`values`)."""
        lanes: dict[str, SampleQueue] = {}
        maker: dict[str, int | None] = {name: None for name in sources}  # None: a source
        for k, (_, step) in enumerate(steps):
            for name in _made(step):
                maker[name] = k
            if step.source == MIX:
                maker[_INPUT] = k
        if _INPUT not in maker:  # the input passes through (spooled): read it as it is
            maker[_INPUT] = None
            sources = {**sources, _INPUT: sources[MIX]}
        for name in maker:
            lanes[name] = SampleQueue()
        done: set[int] = set()

        def advance(name: str) -> bool:
            """One more region from what makes ``name``; False when it has ended."""
            k = maker[name]
            if k is None:
                block = next(sources[name], None)
                if block is None:
                    return False
                lanes[name].push(block)
                return True
            if k in done:
                return False
            try:
                region, stems = next(runs[k])
            except StopIteration:
                done.add(k)
                return False
            step = steps[k][1]
            kept = {name_: stems[stem] for stem, name_ in step.outputs.items()}
            for name_, stem in kept.items():
                lanes[name_].push(stem)
            if step.remainder is not None:
                rest = region - sum(kept.values()) if kept else region
                lanes[step.remainder].push(np.ascontiguousarray(rest, dtype=np.float32))
            if step.source == MIX:
                lanes[_INPUT].push(region)
            return True

        def feed(name: str) -> Iterator[np.ndarray]:
            lane = lanes[name]
            while lane.size or advance(name):
                if lane.size:
                    yield lane.pop(lane.size)

        runs: list[Regions] = []
        for index, step in steps:
            member = scaling(step.backend)
            stats = None
            if member is not None:
                stats = (
                    self.stats.get(stats_key(member))
                    if step.source == MIX
                    else measured[step.source]
                )
            runs.append(self.run(index, step, feed(step.source), stats))
        names = [_INPUT, *outputs]
        while True:
            n = min(lanes[name].size for name in names)
            if n:
                values = {name: lanes[name].pop(n) for name in outputs}
                yield {MIX: lanes[_INPUT].pop(n), **values}
                continue
            if not any(advance(name) for name in names if not lanes[name].size):
                break


def _made(step: Step) -> list[str]:
    """The values a step makes: its kept stems' names and its remainder."""
    return [*step.outputs.values(), *([step.remainder] if step.remainder else [])]
