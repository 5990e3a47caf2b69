"""Whether torch's STFT and inverse STFT take a model's settings, asked when its config is read.

A model's STFT settings (frame, hop, window) and its chunk length decide whether
``torch.stft`` and ``torch.istft`` run at all: the centred STFT pads ``n_fft // 2`` samples by
reflection, which needs a longer input, and the inverse refuses frames whose windows leave a
sample uncovered (its "NOLA" check: the overlap-added squared windows must stay above 1e-11
over the whole output). Which hops pass depends on the window's shape and on the chunk length,
not only on ``hop <= window``: a Hann window's tail is so small that frames half a window apart
fail for some lengths (n_fft 8192, hop 4096), and further apart for many. So rather than
re-derive torch's arithmetic, the inverse is run here once on an all-zero spectrogram shaped
like the chunk's (no network: milliseconds), and a refusal is put in words before any song is
separated.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["stft_problem"]


def stft_problem(window: torch.Tensor, *, n_fft: int, hop: int, samples: int) -> str | None:
    """Why a centred STFT of ``samples`` samples, or its inverse, would fail; None when both run.

    Args:
        window: the analysis and synthesis window, ``(win_length,)`` with ``win_length <=
            n_fft`` (torch centres it in the frame).
        n_fft: frame length, samples.
        hop: samples between frames.
        samples: the signal's length (a chunk's), samples.
    """
    width = int(window.numel())
    if not 0 < width <= n_fft:
        return f"a {width}-sample window does not fit a frame of n_fft {n_fft}"
    if samples <= n_fft // 2:
        return (
            f"{samples} samples are too few for an STFT of n_fft {n_fft}, whose centring pads "
            f"{n_fft // 2} samples at each end by reflection (it needs more than {n_fft // 2})"
        )
    if 4 * hop <= width:  # every sample lies in the middle half of some window
        return None
    # torch's check sees the chunk's two ends and the frames' periodic pattern between them: a
    # chunk as long past its last whole hop, with a few frames, fails exactly when it does
    # (and costs a few frames, however long the chunk).
    odd = n_fft % 2  # the centred STFT pads n_fft - 1 samples in all when n_fft is odd
    whole, rest = divmod(samples - odd, hop)
    short = odd + rest + hop * min(whole, -(-n_fft // hop) + 2)
    frames = (short - odd) // hop + 1
    spec = torch.zeros(1, n_fft // 2 + 1, frames, dtype=torch.complex64, device="cpu")
    window = window.detach().float().cpu()
    try:
        with warnings.catch_warnings():  # "shorter than length": as the real chunk would be
            warnings.simplefilter("ignore", UserWarning)
            torch.istft(spec, n_fft, hop, width, window, center=True, length=short)
    except RuntimeError:
        return (
            f"frames {hop} samples apart under a {width}-sample window leave samples of a "
            f"{samples}-sample chunk that no inverse STFT can rebuild (the windows overlap too "
            "little; a hop of at most a quarter of the window always works)"
        )
    return None
