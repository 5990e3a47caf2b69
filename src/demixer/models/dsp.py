"""Splitting an accompaniment into drums, bass and other with plain DSP.

This is the second half of the ``cascade-4stems`` model: spleeter removes the vocals, and what is
left is split here without any learned weights:

1. harmonic/percussive separation by median filtering of the STFT magnitude (Fitzgerald 2010,
   "Harmonic/percussive separation using median filtering", DAFx): a median along time keeps
   sustained partials (harmonic), a median along frequency keeps broadband transients
   (percussive); soft power masks with margins, as in librosa's ``hpss``, turn the two into
   masks (with margins above 1, what neither claims is a residual, which goes to "other");
2. the harmonic part below a smooth crossover (150 Hz fading out by 400 Hz, the range of
   a bass guitar's fundamentals) becomes the bass;
3. drums are the percussive part; "other" is everything else, defined as the input minus drums
   minus bass so that the three stems sum back to the input exactly.

The masks are computed once from the channels' mean magnitude and applied to every channel, so the
stereo image of each stem is the input's (per-channel masks would let a source wander between
stems from left to right).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # scipy is imported where it is used: it costs every process ~1 s to load
    from scipy.signal import ShortTimeFFT

__all__ = [
    "DEFAULT_PARAMS",
    "SplitParams",
    "bass_weights",
    "hpss_masks",
    "split_accompaniment",
    "stft_transform",
]

# Floor of a soft mask's denominator; (x/z)**p + (ref/z)**p is at least 1 unless p is huge.
_EPS = 1e-10


@dataclass(frozen=True)
class SplitParams:
    """Parameters of :func:`split_accompaniment`, in physical units so they hold at any rate.

    Attributes:
        frame_s: STFT frame length in seconds (rounded to a power of two in samples); long
            frames resolve bass notes, short ones keep drum hits sharp.
        hop_fraction: hop as a fraction of the frame (1/4 with a Hann window reconstructs
            perfectly).
        harmonic_kernel_s: length (seconds) of the median along time that keeps sustained
            partials; longer than a drum hit, shorter than a held note.
        percussive_kernel_hz: width (Hz) of the median along frequency that keeps broadband
            transients; wider than the spacing between a note's partials.
        power: exponent of the soft masks (2 = Wiener-like).
        harmonic_margin: how much the harmonic estimate must exceed the percussive one to be
            kept as harmonic; above 1, the ambiguous energy goes to the residual ("other").
        percussive_margin: the same for the percussive mask.
        bass_low_hz: below this frequency the harmonic part is all bass.
        bass_high_hz: above this frequency none of it is; between the two a raised-cosine
            crossover, so no note is cut abruptly in half.
        bass_residual: fraction of the low-band residual (energy neither mask claims) given to
            the bass rather than to "other".
    """

    frame_s: float = 0.093
    hop_fraction: float = 0.25
    harmonic_kernel_s: float = 0.4
    percussive_kernel_hz: float = 100.0
    power: float = 2.0
    harmonic_margin: float = 1.0
    percussive_margin: float = 1.0
    bass_low_hz: float = 150.0
    bass_high_hz: float = 400.0
    bass_residual: float = 0.0


DEFAULT_PARAMS = SplitParams()


def stft_transform(sample_rate: int, params: SplitParams = DEFAULT_PARAMS) -> ShortTimeFFT:
    """The Hann-window STFT used by the split (perfect reconstruction with a 1/4 hop).

    Args:
        sample_rate: rate of the audio in Hz.
        params: the frame length and hop.
    """
    # A power-of-two frame keeps the FFT fast; 0.093 s is 4096 samples at 44.1 kHz.
    n_fft = 1 << max(6, round(np.log2(params.frame_s * sample_rate)))
    hop = max(1, int(n_fft * params.hop_fraction))
    from scipy.signal import ShortTimeFFT
    from scipy.signal.windows import hann

    window = hann(n_fft, sym=False)
    return ShortTimeFFT(window, hop, sample_rate, mfft=n_fft)


def _odd(n: float) -> int:
    """The odd integer nearest ``n`` and at least 1: a median kernel needs a centre."""
    k = max(1, round(n))
    return k if k % 2 else k + 1


def _softmask(x: np.ndarray, ref: np.ndarray, power: float) -> np.ndarray:
    """``x**p / (x**p + ref**p)``, computed relative to the larger so it cannot overflow.

    Where both are zero (silence) the mask is 1/2, so two complementary masks still sum to 1.
    """
    z = np.maximum(x, ref)
    silent = z <= 0
    z = np.where(silent, 1.0, z)
    xp = (x / z) ** power
    rp = (ref / z) ** power
    mask = np.where(silent, 0.5, xp / np.maximum(xp + rp, _EPS))
    return np.asarray(mask, dtype=np.float32)


def hpss_masks(
    magnitude: np.ndarray,
    *,
    time_kernel: int,
    freq_kernel: int,
    power: float = 2.0,
    harmonic_margin: float = 1.0,
    percussive_margin: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic and percussive soft masks by median filtering (Fitzgerald 2010).

    Args:
        magnitude: ``(bins, frames)`` non-negative STFT magnitude.
        time_kernel: median length along time, in frames (odd).
        freq_kernel: median length along frequency, in bins (odd).
        power: soft-mask exponent.
        harmonic_margin: margin of the harmonic mask (1 = no residual from it).
        percussive_margin: margin of the percussive mask.

    Returns:
        ``(harmonic, percussive)`` masks, each ``(bins, frames)`` float32 in [0, 1]; their sum
        is at most 1 and exactly 1 when both margins are 1.
    """
    from scipy.ndimage import median_filter

    harmonic = median_filter(magnitude, size=(1, time_kernel), mode="reflect")
    percussive = median_filter(magnitude, size=(freq_kernel, 1), mode="reflect")
    mask_h = _softmask(harmonic, harmonic_margin * percussive, power)
    mask_p = _softmask(percussive, percussive_margin * harmonic, power)
    return mask_h, mask_p


def bass_weights(freqs: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """Raised-cosine low-pass weights: 1 below ``low_hz``, 0 above ``high_hz``.

    Args:
        freqs: ``(bins,)`` bin centre frequencies in Hz.
        low_hz: end of the pass band, Hz.
        high_hz: start of the stop band, Hz (must be >= ``low_hz``).

    Returns:
        ``(bins,)`` float32 weights in [0, 1].
    """
    if high_hz <= low_hz:
        return (freqs < low_hz).astype(np.float32)
    t = np.clip((freqs - low_hz) / (high_hz - low_hz), 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float32)


def split_accompaniment(
    acc: np.ndarray, sample_rate: int, params: SplitParams = DEFAULT_PARAMS
) -> dict[str, np.ndarray]:
    """Split an accompaniment (no vocals) into drums, bass and other.

    Args:
        acc: ``(channels, samples)`` audio, amplitude in [-1, 1] nominal.
        sample_rate: rate of ``acc`` in Hz.
        params: the DSP parameters (defaults tuned on a MUSDB18 excerpt; see the model card).

    Returns:
        ``{"drums", "bass", "other"}`` -> ``(channels, samples)`` float32, each the length of
        ``acc``; ``drums + bass + other == acc`` up to float32 rounding.
    """
    if acc.ndim != 2:
        raise ValueError(f"expected (channels, samples) audio, got shape {acc.shape}")
    acc32 = np.ascontiguousarray(acc, dtype=np.float32)
    samples = acc32.shape[-1]
    if samples == 0:
        empty = np.zeros_like(acc32)
        return {"drums": empty, "bass": empty.copy(), "other": empty.copy()}

    transform = stft_transform(sample_rate, params)
    # scipy's STFT needs at least half a frame; a shorter window (the engine's last one can be
    # any length) is zero-padded and cropped back, which keeps the split exact.
    padded = samples
    if samples < transform.mfft:
        padded = transform.mfft
        acc_in = np.pad(acc32, ((0, 0), (0, padded - samples)))
    else:
        acc_in = acc32
    spec = transform.stft(acc_in)  # (channels, bins, frames), complex
    magnitude = np.abs(spec).mean(axis=0)  # (bins, frames)

    frame_rate = sample_rate / transform.hop
    bin_hz = sample_rate / transform.mfft
    mask_h, mask_p = hpss_masks(
        magnitude,
        time_kernel=_odd(params.harmonic_kernel_s * frame_rate),
        freq_kernel=_odd(params.percussive_kernel_hz / bin_hz),
        power=params.power,
        harmonic_margin=params.harmonic_margin,
        percussive_margin=params.percussive_margin,
    )
    low = bass_weights(transform.f, params.bass_low_hz, params.bass_high_hz)[:, None]
    mask_bass = low * (mask_h + params.bass_residual * (1.0 - mask_h - mask_p))

    drums = transform.istft(spec * mask_p, k1=padded)[..., :samples].astype(np.float32)
    bass = transform.istft(spec * mask_bass, k1=padded)[..., :samples].astype(np.float32)
    # "other" is the remainder, not a third ISTFT, so the stems sum to the input exactly
    # whatever the masks are, and the STFT's edge effects land in one stem.
    other = acc32 - drums - bass
    return {"drums": drums, "bass": bass, "other": other}
