"""Sample-rate conversion with libsoxr (high quality), whole arrays or streamed blocks.

Both forms produce exactly :func:`resampled_length` samples and the same values: libsoxr
compensates its filter delay itself (the first output sample is aligned with the first input
sample), and :class:`StreamResampler` only has to trim or pad the flushed tail to the exact
length, so a streamed conversion can replace a whole-array one sample for sample.
"""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["QUALITY", "StreamResampler", "fit_length", "resample", "resampled_length"]

QUALITY = "HQ"  # soxr "high quality": 20-bit, passband to 91 % of Nyquist; plenty for float32


def resampled_length(n: int, from_rate: int, to_rate: int) -> int:
    """Samples that ``n`` samples at ``from_rate`` Hz become at ``to_rate`` Hz.

    ``round(n * to_rate / from_rate)`` with halves rounded up, in exact integer arithmetic
    (so a 44.1 kHz <-> 48 kHz length never depends on float error).
    """
    return (2 * n * to_rate + from_rate) // (2 * from_rate)


def _check_rates(from_rate: int, to_rate: int) -> None:
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate} Hz")


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` (``(channels, m)``) cut or zero-padded to ``n`` samples (a resampler's round trip
    may miss by one)."""
    if y.shape[1] >= n:
        return y[:, :n]
    return np.pad(y, ((0, 0), (0, n - y.shape[1])))


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a whole signal.

    Args:
        x: ``(channels, n)`` samples at ``from_rate`` Hz (any float dtype).
        from_rate: input rate in Hz.
        to_rate: output rate in Hz.

    Returns:
        ``(channels, resampled_length(n, from_rate, to_rate))`` float32, C-contiguous;
        ``x`` itself as float32 when the rates are equal.
    """
    _check_rates(from_rate, to_rate)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected (channels, samples), got shape {x.shape}")
    if from_rate == to_rate:
        return x
    n_out = resampled_length(x.shape[1], from_rate, to_rate)
    if x.shape[1] == 0:
        return np.zeros((x.shape[0], 0), dtype=np.float32)
    # soxr wants (frames, channels); the transpose of a C-contiguous (channels, n) array is
    # exactly the "split channel" layout it reads without copying.
    y = soxr.resample(np.ascontiguousarray(x).T, from_rate, to_rate, quality=QUALITY)
    return np.ascontiguousarray(fit_length(y.T, n_out))


class StreamResampler:
    """Resample a signal that arrives in blocks, with bounded memory.

    Feed blocks in order to :meth:`process`, the last with ``last=True``. The concatenated
    outputs equal :func:`resample` of the concatenated inputs (to float rounding) and have
    exactly ``resampled_length(total_in, from_rate, to_rate)`` samples. Outputs lag inputs by
    the filter's delay (a few hundred samples), which the final flush returns.
    """

    def __init__(self, from_rate: int, to_rate: int, channels: int) -> None:
        """Args: rates in Hz; ``channels`` of every block."""
        _check_rates(from_rate, to_rate)
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self.channels = channels
        self._stream = (
            None
            if from_rate == to_rate
            else soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality=QUALITY)
        )
        self._in = 0  # input samples consumed so far
        self._out = 0  # output samples returned so far
        self._done = False

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next block.

        Args:
            block: ``(channels, n)`` samples at ``from_rate`` Hz; ``n`` may be 0.
            last: true for the final block: flushes the filter and fixes the total length.

        Returns:
            ``(channels, m)`` float32 at ``to_rate`` Hz; ``m`` varies from call to call.
        """
        if self._done:
            raise RuntimeError("StreamResampler.process() called after last=True")
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, samples), got shape {block.shape}")
        self._in += block.shape[1]
        self._done = last
        if self._stream is None:
            out = block
        else:
            y = self._stream.resample_chunk(np.ascontiguousarray(block.T), last=last)
            out = y.T
        if last:
            # libsoxr's flushed total can differ from the exact length by a sample or so.
            remaining = max(0, resampled_length(self._in, self.from_rate, self.to_rate) - self._out)
            out = fit_length(out, remaining)
        self._out += out.shape[1]
        return np.ascontiguousarray(out)
