"""Spectral-gating denoiser: a stationary noise floor is estimated, then gated away.

How it works (all arrays float32 ``(channels, samples)``, rates in Hz):

1. **Noise profile** (:func:`estimate_noise`): STFT frames (``N_FFT`` = 2048 samples, hop 512)
   of the first ``profile_seconds`` of audio; the quietest ``QUIET_FRACTION`` of frames (by
   energy, ignoring digital silence below -80 dBFS) are averaged into a per-frequency noise
   power. The profile is then capped by its own median over ``MEDIAN_BINS`` neighbouring bins,
   so sustained narrow-band sounds (a held note, a test tone) are not mistaken for noise:
   broadband hiss and its colour are kept, narrow peaks are not.
2. **Gate** (:class:`SpectralGate`): each frame's power, smoothed over a few bins and shared by
   the channels (one gain for all, so the stereo image does not move), is compared with the
   profile. The gain rises smoothly from ``floor_db`` at ``LOW_DB`` above the noise to 1 at
   ``HIGH_DB`` above it, and is smoothed once more over frequency and over time (a one-pole
   filter across frames) so the gate does not chatter ("musical noise").
3. ISTFT by weighted overlap-add (square-root Hann analysis and synthesis windows), so with a
   gain of 1 everywhere the output equals the input.

Memory is bounded: only the profile window (``profile_seconds``) is held, then blocks stream
through the gate with ``N_FFT`` samples of state. :func:`denoise_blocks` keeps the stream's
length exactly (the gate's delay is compensated), so it can sit in front of the separator.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

__all__ = [
    "HIGH_DB",
    "HOP",
    "LOW_DB",
    "N_FFT",
    "SpectralGate",
    "denoise",
    "denoise_blocks",
    "estimate_noise",
]

N_FFT = 2048  # samples per STFT frame (46 ms at 44.1 kHz)
HOP = N_FFT // 4
LOW_DB = 3.0  # at or below this many dB over the noise floor: fully gated
HIGH_DB = 12.0  # at or above: passed unchanged
QUIET_FRACTION = 0.2  # the share of quietest frames the noise floor is measured on
MEDIAN_BINS = 31  # frequency span of the median that removes narrow peaks from the profile
SILENCE_RMS = 1e-4  # frames quieter than -80 dBFS are digital silence, not noise
_EPS = 1e-12
_WINDOW = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
_OLA_GAIN = 2.0  # sum of the squared window over hops of N_FFT / 4


def _frames(x: np.ndarray) -> np.ndarray:
    """``(channels, samples)`` -> ``(channels, frames, N_FFT)`` views, hop :data:`HOP`."""
    count = (x.shape[1] - N_FFT) // HOP + 1
    if count <= 0:
        return np.zeros((x.shape[0], 0, N_FFT), dtype=x.dtype)
    view = np.lib.stride_tricks.sliding_window_view(x, N_FFT, axis=1)
    return view[:, ::HOP][:, :count]


def _smooth_bins(a: np.ndarray, width: int) -> np.ndarray:
    """Moving average of ``(frames, bins)`` over ``width`` bins (edges replicated)."""
    pad = width // 2
    padded = np.pad(a, ((0, 0), (pad, pad)), mode="edge")
    kernel = np.ones(width, dtype=a.dtype) / width
    return np.apply_along_axis(np.convolve, 1, padded, kernel, mode="valid")


def estimate_noise(x: np.ndarray) -> np.ndarray:
    """Per-bin noise power ``(N_FFT // 2 + 1,)`` of ``x`` ``(channels, samples)``.

    Zeros when ``x`` is shorter than a frame or holds only digital silence: nothing is gated.
    """
    frames = _frames(np.asarray(x, dtype=np.float32))
    bins = N_FFT // 2 + 1
    if frames.shape[1] == 0:
        return np.zeros(bins, dtype=np.float64)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=(0, 2)))
    power = np.mean(np.abs(np.fft.rfft(frames * _WINDOW, axis=2)) ** 2, axis=0)  # (frames, bins)
    live = rms >= SILENCE_RMS
    if not live.any():
        return np.zeros(bins, dtype=np.float64)
    energy = rms[live]
    quiet = power[live][energy <= np.quantile(energy, QUIET_FRACTION)]
    profile = quiet.mean(axis=0)
    pad = MEDIAN_BINS // 2
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(profile, pad, mode="edge"), MEDIAN_BINS
    )
    result: np.ndarray = np.minimum(profile, np.median(windows, axis=1))
    return result


class SpectralGate:
    """Streaming gate: :meth:`push` blocks in, get gated samples out (delay ``N_FFT - HOP``).

    Args:
        noise: per-bin noise power from :func:`estimate_noise`.
        channels: channels of every block.
        floor_db: gain (dB, negative) applied to what is judged noise.
        time_smoothing: one-pole coefficient of the gain across frames (0: none).
    """

    def __init__(
        self,
        noise: np.ndarray,
        channels: int,
        *,
        floor_db: float = -30.0,
        time_smoothing: float = 0.5,
    ) -> None:
        self.noise = np.maximum(np.asarray(noise, dtype=np.float64), _EPS)
        self.channels = channels
        self.floor = float(10 ** (floor_db / 20))
        self.alpha = time_smoothing
        self._zi = np.zeros((1, N_FFT // 2 + 1))  # the time smoother's state
        self._zi_set = False
        # Input not yet framed; starts with N_FFT - HOP zeros so the first samples get full
        # overlap (the delay that :meth:`flush` and :func:`denoise_blocks` compensate).
        self._pending = np.zeros((channels, N_FFT - HOP), dtype=np.float32)
        self._tail = np.zeros((channels, N_FFT - HOP), dtype=np.float64)

    def _gains(self, power: np.ndarray) -> np.ndarray:
        """``(frames, bins)`` power -> ``(frames, bins)`` gains in ``[floor, 1]``."""
        snr_db = 10 * np.log10(_smooth_bins(power, 5) / self.noise + _EPS)
        ramp = np.clip((snr_db - LOW_DB) / (HIGH_DB - LOW_DB), 0.0, 1.0)
        gain = self.floor + (1 - self.floor) * _smooth_bins(ramp, 3)
        if self.alpha > 0:
            if not self._zi_set:  # start the smoother at the first frame, not at zero
                self._zi = (self.alpha * gain[:1]).copy()
                self._zi_set = True
            # Imported here: scipy.signal costs every worker child ~1 s at start-up otherwise.
            from scipy.signal import lfilter

            gain, zf = lfilter([1 - self.alpha], [1, -self.alpha], gain, axis=0, zi=self._zi)
            self._zi = zf
        out: np.ndarray = gain
        return out

    def push(self, block: np.ndarray) -> np.ndarray:
        """Gate ``block`` ``(channels, n)``; returns the samples now complete (any length)."""
        self._pending = np.concatenate([self._pending, np.asarray(block, dtype=np.float32)], 1)
        frames = _frames(self._pending)
        count = frames.shape[1]
        if count == 0:
            return np.zeros((self.channels, 0), dtype=np.float32)
        spectra = np.fft.rfft(frames * _WINDOW, axis=2)  # (channels, frames, bins)
        power = np.mean(np.abs(spectra) ** 2, axis=0)
        gained = np.fft.irfft(spectra * self._gains(power)[None], n=N_FFT, axis=2) * _WINDOW
        span = (count - 1) * HOP + N_FFT
        out = np.zeros((self.channels, span), dtype=np.float64)
        out[:, : N_FFT - HOP] += self._tail
        for i in range(count):  # overlap-add: count is at most a block's worth of frames
            out[:, i * HOP : i * HOP + N_FFT] += gained[:, i]
        done = count * HOP
        self._tail = out[:, done:]
        self._pending = self._pending[:, done:]
        return (out[:, :done] / _OLA_GAIN).astype(np.float32)

    def flush(self) -> np.ndarray:
        """The rest of the signal (pads with silence so the last samples get full frames)."""
        return self.push(np.zeros((self.channels, N_FFT), dtype=np.float32))


def denoise_blocks(
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    *,
    profile_seconds: float = 20.0,
    floor_db: float = -30.0,
) -> Iterator[np.ndarray]:
    """Denoise a stream of ``(channels, n)`` float32 blocks; yields the same total length.

    The noise profile comes from the first ``profile_seconds`` (held in memory, then gated
    like the rest), so memory does not grow with the stream.
    """
    it = iter(blocks)
    head: list[np.ndarray] = []
    held = 0
    limit = max(1, round(profile_seconds * sample_rate))
    for block in it:
        head.append(np.asarray(block, dtype=np.float32))
        held += block.shape[1]
        if held >= limit:
            break
    if not head:
        return
    channels = head[0].shape[0]
    gate = SpectralGate(estimate_noise(np.concatenate(head, axis=1)), channels, floor_db=floor_db)
    skip = N_FFT - HOP  # the gate's delay
    remaining = 0

    def emit(chunk: np.ndarray) -> Iterator[np.ndarray]:
        nonlocal skip, remaining
        if skip:
            cut = min(skip, chunk.shape[1])
            chunk, skip = chunk[:, cut:], skip - cut
        chunk = chunk[:, :remaining]
        remaining -= chunk.shape[1]
        if chunk.shape[1]:
            yield chunk

    def source() -> Iterator[np.ndarray]:
        yield from head
        head.clear()  # the profile window is no longer needed once gated
        yield from it

    for block in source():
        remaining += block.shape[1]
        yield from emit(gate.push(block))
    yield from emit(gate.flush())


def denoise(x: np.ndarray, sample_rate: int, **kwargs: float) -> np.ndarray:
    """Denoise a whole ``(channels, samples)`` signal (see :func:`denoise_blocks`)."""
    x = np.asarray(x, dtype=np.float32)
    parts = list(denoise_blocks([x], sample_rate, **kwargs))
    return np.concatenate(parts, axis=1) if parts else np.zeros_like(x)
