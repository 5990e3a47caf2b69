"""The engine's side of a :class:`~demixer.models.base.StreamingBackend`.

Such a backend windows the whole input itself (MSST's chunking), so the engine does not cut
windows: it resamples the input stream to the model's rate, passes it through the backend, and
resamples each requested stem back, all with streaming resamplers; the input is held back only
until the stems for the same samples come out, so the residual (input minus stems) is exact and
memory stays bounded by the backend's own latency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from demixer.audio import SampleQueue, StreamResampler, resampled_length
from demixer.engine.stems import HEARD
from demixer.errors import DemixerError, ModelFailed
from demixer.models.base import InputStats, StreamingBackend

__all__ = ["input_stats", "stream_backend"]


def input_stats(blocks: Iterable[np.ndarray], sample_rate: int, model_rate: int) -> InputStats:
    """Mean and standard deviation of the mono mix of a block stream at ``sample_rate``, taken
    as the model gets it: resampled to ``model_rate`` (float64, one pass).

    MSST normalises the audio it separates, which it has already resampled to the model's rate;
    the statistics of the input at its own rate differ (the resampler removes what lies above
    the lower Nyquist frequency, and a short input's few samples become others).
    """
    count, mean, m2 = 0, 0.0, 0.0
    for block in _resampled(blocks, sample_rate, model_rate):
        mono = np.asarray(block, np.float64).mean(axis=0)
        n = mono.shape[0]
        if not n:
            continue
        block_mean = float(mono.mean())
        block_m2 = float(np.square(mono - block_mean).sum())
        delta = block_mean - mean
        total = count + n
        mean += delta * n / total
        m2 += block_m2 + delta * delta * count * n / total
        count = total
    return InputStats(mean=mean, std=(m2 / count) ** 0.5 if count else 0.0)


def _resampled(blocks: Iterable[np.ndarray], from_rate: int, to_rate: int) -> Iterator[np.ndarray]:
    """``blocks`` resampled as one stream (as :func:`stream_backend` sends them to the model)."""
    if from_rate == to_rate:
        yield from blocks
        return
    resampler: StreamResampler | None = None
    for block in blocks:
        if not block.shape[1]:
            continue
        if resampler is None:
            resampler = StreamResampler(from_rate, to_rate, block.shape[0])
        yield resampler.process(block)
    if resampler is not None:
        yield resampler.process(np.zeros((resampler.channels, 0), np.float32), last=True)


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
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
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

    def ready() -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
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
