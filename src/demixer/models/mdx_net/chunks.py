"""UVR's MDX-Net inference loop, streamed: chunks, STFT, network, inverse STFT, overlap-add.

UVR (``separate.py``, ``SeperateMDX.demix``; audio-separator's ``MDXSeparator.demix`` is the same
loop) runs a whole track like this, in samples at 44.1 kHz:

1. ``trim = n_fft // 2`` zeros are put before the track and ``pad = gen + trim - n % gen``
   zeros after it (``gen = chunk - 2 * trim``, ``chunk = hop * (segment_size - 1)``);
2. chunks of ``chunk`` samples start every ``step`` samples from 0 while inside that padded
   "mixture"; the last ones are cut at its end and zero-padded back to ``chunk``;
3. each chunk goes through :class:`Spectrogram` (bins 0-2 zeroed, only ``dim_f`` bins kept),
   the network, and back;
4. each output is weighted by ``np.hanning`` of its uncut length, summed, and divided by the
   summed weights; the ``trim`` leading samples and everything after the track are dropped.

:class:`ChunkStream` computes exactly that, but as the input arrives: a chunk runs as soon as
its samples are all there, and every sample that no later chunk can reach is returned at once.
Memory is about two chunks whatever the track's length. Only the chunks that reach the track's
last sample depend on its total length; they run in :meth:`ChunkStream.finish`. Chunks that
UVR runs entirely inside the trailing padding are skipped: their outputs are all dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from demixer.models.mdx_net.params import MdxParams

__all__ = ["ChunkStream", "Network", "Spectrogram"]

Network = Callable[[np.ndarray], np.ndarray]
"""``(batch, 4, dim_f, frames)`` float32 spectrogram in -> the same shape out."""


class Spectrogram:
    """UVR's STFT layout for MDX-Net networks, and its inverse.

    A chunk ``(batch, 2, chunk)`` becomes ``(batch, 4, dim_f, frames)``: channels are left real,
    left imaginary, right real, right imaginary of a centred (reflect-padded), periodic-Hann STFT
    with ``frames = chunk / hop + 1 = segment_size``; bins 0-2 (below ~17 Hz) are zeroed. The
    inverse puts zeros in the bins above ``dim_f`` and returns ``(batch, 2, chunk)``.
    """

    def __init__(self, params: MdxParams) -> None:
        self.n_fft = params.n_fft
        self.hop = params.hop_length
        self.dim_f = params.dim_f
        self.bins = params.n_fft // 2 + 1
        self.window = torch.hann_window(params.n_fft, periodic=True)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``(batch, 2, samples)`` float32 -> ``(batch, 4, dim_f, frames)`` float32."""
        batch, channels, samples = wave.shape
        spec = torch.stft(
            wave.reshape(batch * channels, samples),
            n_fft=self.n_fft,
            hop_length=self.hop,
            window=self.window,
            center=True,
            return_complex=True,
        )[:, : self.dim_f]
        frames = spec.shape[-1]
        # (batch*2, dim_f, frames, re/im) -> (batch, 2 * re/im, dim_f, frames)
        x = torch.view_as_real(spec).permute(0, 3, 1, 2)
        x = x.reshape(batch, channels * 2, self.dim_f, frames).contiguous()
        x[:, :, :3] = 0  # UVR zeroes the three lowest bins before the network
        return x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 4, dim_f, frames)`` float32 -> ``(batch, 2, (frames - 1) * hop)`` float32."""
        batch, _, dim_f, frames = x.shape
        full = x.new_zeros(batch * 2, self.bins, frames, 2)
        full[:, :dim_f] = x.reshape(batch * 2, 2, dim_f, frames).permute(0, 2, 3, 1)
        wave = torch.istft(
            torch.view_as_complex(full),
            n_fft=self.n_fft,
            hop_length=self.hop,
            window=self.window,
            center=True,
        )
        return wave.reshape(batch, 2, -1)


class ChunkStream:
    """UVR's demix loop over a signal that arrives in blocks (see the module docstring).

    Positions below are in "mixture" samples: the input preceded by ``trim`` zeros.

    Args:
        params: the model's parameters (chunk length, step, trim, window).
        separate: chunks ``(batch, 2, chunk)`` float32 -> the network's output waves, same shape.
        batch: most chunks per ``separate`` call.
        before_run: called before each ``separate`` call with the input position (samples) of
            its first chunk's start (0 for the first, whose start is in UVR's leading zeros).
    """

    def __init__(
        self,
        params: MdxParams,
        separate: Callable[[np.ndarray], np.ndarray],
        *,
        batch: int = 1,
        before_run: Callable[[int], None] | None = None,
    ) -> None:
        self._chunk = params.chunk
        self._step = params.step
        self._trim = params.trim
        self._gen = params.chunk - 2 * params.trim
        self._windowed = params.windowed
        self._full_window = np.hanning(self._chunk) if self._windowed else None
        self._separate = separate
        self._before_run = before_run
        self._batch = max(1, batch)
        self._base = 0  # mixture position of _buf[:, 0], _acc[:, 0] and _div[0]
        self._buf = np.zeros((2, self._trim), np.float32)  # mixture samples from _base on
        self._acc = np.zeros((2, 0), np.float32)  # weighted outputs summed, from _base on
        self._div = np.zeros(0, np.float32)  # weights summed, from _base on
        self._next = 0  # mixture position of the next chunk to run
        self._emitted = self._trim  # mixture position of the next sample to return
        self._received = 0  # input samples fed so far

    def feed(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Take the next ``(2, n)`` input samples.

        Returns:
            ``(input, output)``, each ``(2, m)``: the output samples that are now final and the
            input samples at the same positions (``m`` may be 0; outputs lag inputs by up to
            about two chunks).
        """
        if block.shape[1]:
            self._buf = np.concatenate([self._buf, block.astype(np.float32, copy=False)], 1)
            self._received += block.shape[1]
        starts = []
        while self._next + self._chunk <= self._trim + self._received:
            starts.append(self._next)
            self._next += self._step
        self._run(starts, self._trim + self._received)
        return self._emit(self._next)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Run the chunks that reach the end of the input; return the remaining ``(input,
        output)`` as :meth:`feed` does."""
        end = self._trim + self._received
        if not self._received:
            return np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32)
        # UVR's padded length: trim zeros, the input, then pad = gen + trim - n % gen zeros.
        length = end + self._gen + self._trim - self._received % self._gen
        starts = []
        while self._next < end:  # later chunks lie wholly in the padding: their output is dropped
            starts.append(self._next)
            self._next += self._step
        self._run(starts, length)
        return self._emit(end)

    def _run(self, starts: list[int], length: int) -> None:
        """Separate the chunks starting at ``starts`` in a mixture of ``length`` samples (those
        past the input are zeros) and add their weighted outputs to the accumulators."""
        for first in range(0, len(starts), self._batch):
            group = starts[first : first + self._batch]
            if self._before_run is not None:
                self._before_run(max(0, group[0] - self._trim))
            chunks = np.zeros((len(group), 2, self._chunk), np.float32)
            for row, start in zip(chunks, group, strict=True):
                data = self._buf[:, start - self._base : start - self._base + self._chunk]
                row[:, : data.shape[1]] = data
            outputs = self._separate(chunks)
            for out, start in zip(outputs, group, strict=True):
                size = min(start + self._chunk, length) - start
                self._accumulate(start, out[:, :size], self._weights(size))

    def _weights(self, size: int) -> np.ndarray:
        """UVR's per-sample weights for a chunk cut to ``size`` samples (float64, like its)."""
        if not self._windowed:
            return np.ones(size)
        if size == self._chunk and self._full_window is not None:
            return self._full_window
        return np.hanning(size)

    def _accumulate(self, start: int, out: np.ndarray, weights: np.ndarray) -> None:
        lo = start - self._base
        hi = lo + out.shape[1]
        if hi > self._div.shape[0]:
            grow = hi - self._div.shape[0]
            self._acc = np.concatenate([self._acc, np.zeros((2, grow), np.float32)], 1)
            self._div = np.concatenate([self._div, np.zeros(grow, np.float32)])
        # As UVR: the weighted output is rounded to float32 before it is summed.
        self._acc[:, lo:hi] += (out * weights).astype(np.float32)
        self._div[lo:hi] += weights.astype(np.float32)

    def _emit(self, until: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the inputs and outputs in [_emitted, until) and forget everything before
        ``until``."""
        if until <= self._emitted:
            return np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32)
        lo, hi = self._emitted - self._base, until - self._base
        mix = self._buf[:, lo:hi]
        out = self._acc[:, lo:hi] / self._div[lo:hi]
        self._emitted = until
        cut = min(until, self._next) - self._base
        self._buf = self._buf[:, cut:]
        self._acc = self._acc[:, cut:]
        self._div = self._div[cut:]
        self._base += cut
        return np.ascontiguousarray(mix), np.ascontiguousarray(out, dtype=np.float32)
