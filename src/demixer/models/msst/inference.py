"""MSST's chunked inference (``demix`` in ``msst/utils/model_utils.py``), streamed.

MSST separates a song like this, and demixer computes exactly the same, sample for sample:

1. ``step = chunk // num_overlap``, ``border = chunk - step``, ``fade = chunk // 10``.
2. If the song is longer than ``2 * border`` (and ``border > 0``), it is padded by ``border``
   samples at both ends by reflection. Call the result P, of length ``Lp``.
3. Chunks start at ``0, step, 2 step, ...`` while ``start < Lp``; a chunk shorter than
   ``chunk`` (at the end) is padded to ``chunk`` by reflection if it holds more than half a
   chunk, else by zeros.
4. Chunks go to the model in batches of ``batch_size``, in order; the last batch may be short.
5. Every output chunk is weighted by a window: ones with linear ramps of ``fade`` samples
   (``linspace(0, 1)`` in, ``linspace(1, 0)`` out). The ramp-in is left out (ones) for a batch
   whose last chunk starts at 0, otherwise the ramp-out for the batch holding the last chunk:
   MSST decides this per batch, not per chunk, and so does this module.
6. Weighted outputs and the weights are summed per sample; the estimate is their quotient
   (0 where no weight fell: MSST's ``nan_to_num``), and the padding is cut off again.

MSST runs an ``htdemucs`` model in its "demucs" mode instead (:attr:`Chunking.demucs`): the
chunk is ``training.samplerate * training.segment``, there is no edge padding (step 2), a short
last chunk is always padded by zeros (step 3), and every output chunk weighs one (step 5: no
fades), so the estimate is the plain mean of the chunks covering a sample.

So the chunks that start in the right padding (about ``num_overlap - 1`` on a padded song)
only add to samples step 6 cuts off; demixer does not run them, and their batch's window is
still the one MSST gives it.

MSST keeps the song, the sums and the weights as whole-song arrays. Here the input is a stream
of blocks and the output is yielded as soon as no later chunk can touch it: memory holds about
``(batch_size + 2)`` chunks, whatever the song's length. The model can be run on fewer chunks at a
time than ``batch_size`` (``compute_batch``) without changing the result, since the batches of
step 4 only decide the windows.

The weighted sums of step 6 are kept where the model ran (its output tensors' device): on a GPU
only the finished estimate comes back to the host, about ``step`` samples per chunk rather than
the whole chunk, and no per-chunk arithmetic runs on the host. The sums are the same IEEE
products and additions in the same order as MSST's, so the result is too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Chunking", "RunChunks", "demix_stream", "fade_window"]

RunChunks = Callable[[np.ndarray], torch.Tensor]
"""``(n, channels, chunk)`` float32 -> ``(n, stems, channels, chunk)`` float32, on the device
the model ran on (the sums stay there)."""


@dataclass(frozen=True)
class Chunking:
    """MSST's chunking parameters (samples at the model's rate).

    Attributes:
        chunk: samples per chunk.
        num_overlap: chunks covering each sample.
        batch: chunks per batch in MSST (decides which windows fade; see the module docstring).
        demucs: MSST's "demucs" mode (``htdemucs``): no edge padding, no fades, short chunks
            padded by zeros.
    """

    chunk: int
    num_overlap: int
    batch: int
    demucs: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.num_overlap <= self.chunk or self.batch < 1:
            raise ValueError(f"bad chunking {self}")

    @property
    def step(self) -> int:
        return self.chunk // self.num_overlap

    @property
    def border(self) -> int:
        """Samples consecutive chunks share."""
        return self.chunk - self.step

    @property
    def edge(self) -> int:
        """Samples of reflection padding at each end of a song long enough for it."""
        return 0 if self.demucs else self.border

    @property
    def fade(self) -> int:
        return 0 if self.demucs else self.chunk // 10


def fade_window(chunk: int, fade: int) -> np.ndarray:
    """MSST's ``_getWindowingArray``: ``(chunk,)`` float32 ones with ``fade``-sample ramps."""
    window = torch.ones(chunk)
    if fade > 0:
        window[-fade:] = torch.linspace(1, 0, fade)
        window[:fade] = torch.linspace(0, 1, fade)
    return window.numpy()


class _Buffer:
    """A growing window onto the padded signal P: samples ``[start, end)`` of shape (C, n)."""

    def __init__(self, data: np.ndarray, start: int = 0) -> None:
        self.data = data
        self.start = start

    @property
    def end(self) -> int:
        return self.start + int(self.data.shape[1])

    def append(self, block: np.ndarray) -> None:
        self.data = np.concatenate([self.data, block], axis=1)

    def take(self, start: int, length: int) -> np.ndarray:
        return self.data[:, start - self.start : start - self.start + length]

    def drop_before(self, position: int) -> None:
        cut = max(0, position - self.start)
        if cut:
            self.data = self.data[:, cut:]
            self.start += cut


class _Accumulator:
    """MSST's ``result`` and ``counter`` over a sliding range of P, and the finished output.

    The sums live on the device of the outputs added, in a buffer that grows by doubling and
    drops popped samples when it next grows: columns ``[head, end)`` hold P from ``start`` on, and
    every column past ``end`` is zero.
    """

    def __init__(self, like: torch.Tensor) -> None:
        """``like``: an output ``(stems, channels, n)``, for its shape, dtype and device."""
        self.start = 0
        self._head = 0
        self._end = 0
        self.result = like.new_zeros((*like.shape[:2], 0))
        self.counter = like.new_zeros(0)

    def _room(self, columns: int) -> None:
        """Make columns ``[head, head + columns)`` exist, keeping the live ones."""
        if self._head + columns <= self.counter.shape[0]:
            return
        live = self._end - self._head
        capacity = max(2 * columns, 2 * live)
        result = self.result.new_zeros((*self.result.shape[:2], capacity))
        counter = self.counter.new_zeros(capacity)
        result[:, :, :live] = self.result[:, :, self._head : self._end]
        counter[:live] = self.counter[self._head : self._end]
        self.result, self.counter = result, counter
        self._head, self._end = 0, live

    def add(self, start: int, out: torch.Tensor, weight: torch.Tensor) -> None:
        """Add ``out`` ``(stems, channels, n)`` weighted by ``weight`` ``(n,)`` at ``start``."""
        n = out.shape[-1]
        a = start - self.start
        self._room(a + n)
        at = self._head + a
        self.result[:, :, at : at + n] += out * weight
        self.counter[at : at + n] += weight
        self._end = max(self._end, at + n)

    def pop(self, end: int) -> np.ndarray:
        """The finished estimate for ``[start, end)``: ``(stems, channels, n)`` on the host;
        drops it."""
        n = end - self.start
        head = self._head
        estimate = self.result[:, :, head : head + n] / self.counter[head : head + n]
        torch.nan_to_num(estimate, nan=0.0, out=estimate)
        self._head = min(head + n, self.counter.shape[0])
        self._end = max(self._end, self._head)
        self.start = end
        out: np.ndarray = estimate.cpu().numpy()
        return out


def _pad_chunk(part: np.ndarray, chunk: int, *, reflect: bool) -> np.ndarray:
    missing = chunk - part.shape[1]
    if missing <= 0:
        return part
    if reflect and part.shape[1] > chunk // 2:
        return np.pad(part, ((0, 0), (0, missing)), mode="reflect")
    return np.pad(part, ((0, 0), (0, missing)))


def demix_stream(
    blocks: Iterable[np.ndarray],
    chunking: Chunking,
    run: RunChunks,
    *,
    compute_batch: int = 1,
    before_run: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """MSST's ``demix`` over a stream (see the module docstring).

    Args:
        blocks: ``(channels, n)`` float32 at the model's rate, in order, any sizes.
        chunking: chunk, overlap and batch as the config gives them.
        run: the model on ``(k, channels, chunk)`` chunks, ``k <= compute_batch``.
        compute_batch: chunks per ``run`` call.
        before_run: called before each ``run`` with the input position (samples) of its first
            chunk (progress); raise from it to stop (cancellation).

    Yields:
        ``(stems, channels, m)`` float32 estimates of consecutive input ranges that together
        cover the input exactly.
    """
    chunk, step, border, fade = chunking.chunk, chunking.step, chunking.edge, chunking.fade
    window = fade_window(chunk, fade)
    source = (b for b in blocks if b.shape[1])
    head: list[np.ndarray] = []
    seen = 0
    ended = False
    while border > 0 and seen <= 2 * border:  # is the song long enough to be padded?
        block = next(source, None)
        if block is None:
            ended = True
            break
        head.append(np.asarray(block, np.float32))
        seen += block.shape[1]
    if not head:
        first = next(source, None)
        if first is None:
            return
        head.append(np.asarray(first, np.float32))
    x = np.concatenate(head, axis=1)
    padded = border > 0 and x.shape[1] > 2 * border
    offset = border if padded else 0
    buf = _Buffer(np.pad(x, ((0, 0), (border, 0)), mode="reflect") if padded else x)
    tail = x[:, -(border + 1) :]  # the right reflection needs the last border + 1 samples
    length: int | None = x.shape[1] if ended else None  # input samples, once known
    acc: _Accumulator | None = None
    emitted = offset  # P position of the next output sample
    next_start = 0
    batch: list[tuple[int, int, np.ndarray]] = []  # (start, samples, chunk data)

    def flush(total: int | None) -> Iterator[np.ndarray]:
        nonlocal acc, emitted, batch
        weights = window.copy()
        if next_start - step == 0:
            weights[:fade] = 1
        elif total is not None and next_start >= total:
            weights[-fade:] = 1
        # A chunk starting in the right padding (about num_overlap - 1 at the end of a padded
        # song) only adds to samples that are cut off again: MSST runs it, demixer does not.
        # Its batch's window is decided above as MSST decides it, so the output is the same.
        if padded and length is not None:
            batch = [c for c in batch if c[0] < offset + length]
        for first in range(0, len(batch), compute_batch):
            part = batch[first : first + compute_batch]
            if before_run is not None:
                before_run(max(part[0][0] - offset, 0))
            out = run(np.stack([data for _, _, data in part]))
            if acc is None:
                acc = _Accumulator(out[0])
            weight = torch.from_numpy(weights).to(out.device)
            for (start, samples, _), y in zip(part, out, strict=True):
                acc.add(start, y[..., :samples], weight[:samples])
        batch = []
        done = next_start if total is None else min(next_start, total)
        done = min(done, offset + length) if length is not None else done
        if acc is not None and done > emitted:
            if acc.start < emitted:
                acc.pop(emitted)  # the left padding: computed, never output
            yield acc.pop(done)
            emitted = done

    for block in source:  # the stream: chunks that surely are not the last
        block = np.asarray(block, np.float32)
        buf.append(block)
        tail = np.concatenate([tail, block], axis=1)[:, -(border + 1) :]
        while next_start + max(chunk, step + 1) <= buf.end:
            batch.append((next_start, chunk, buf.take(next_start, chunk)))
            next_start += step
            buf.drop_before(next_start)
            if len(batch) == chunking.batch:
                yield from flush(None)

    # The end is known: pad the right edge, then the remaining chunks, the last batch last.
    length = buf.end - offset
    if padded:
        buf.append(tail[:, -2::-1][:, :border])
    total = buf.end
    while next_start < total:
        part = buf.take(next_start, chunk)
        padded_part = _pad_chunk(part, chunk, reflect=not chunking.demucs)
        batch.append((next_start, part.shape[1], padded_part))
        next_start += step
        if len(batch) == chunking.batch or next_start >= total:
            yield from flush(total)
