"""Multichannel Wiener filtering: mask-based estimates refined with the sources' stereo images.

Each source ``j`` is modelled, at every STFT bin (frame ``f``, frequency ``b``), as a zero-mean
complex Gaussian vector over the two channels with covariance ``v_j[f, b] * R_j[b]``: a power
``v_j`` that follows the music and a 2 x 2 spatial covariance ``R_j`` (the source's place in the
stereo field) that is fixed per frequency over the stretch analysed. The multichannel Wiener
filter gives each source the posterior mean ``v_j R_j (sum_k v_k R_k + δ I)^-1 x`` of the mixture
``x``. Expectation-maximisation alternates between estimating ``v`` and ``R`` from the current
estimates and filtering again: the local Gaussian model of Duong, Vincent & Gribonval (2010) with
the simplified updates of Nugraha, Liutkus & Vincent (2016), as in Open-Unmix's ``filtering.py``
and norbert (which Spleeter's ``MWF`` option calls).

One deliberate difference in the first iteration: Open-Unmix and norbert start from the powers of
the masked mixture, ``v_j = |mask_j x|^2``, which squares the mask once more (a ratio mask
``m`` becomes ``m^2 / (m^2 + (1-m)^2)`` wherever the sources share a stereo image); here the first
powers are ``v_j = mask_j |x|^2``, so sources with the same stereo image keep exactly the masks
they came with and only a difference in their images changes the result. Later iterations
follow the references (``v_j = |y_j|^2``).

Everything is computed in closed form for two channels (a 2 x 2 Hermitian inverse per bin), over
chunks of frames so that the working memory stays a fraction of the STFT's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["REGULARISATION", "wiener"]

# δ of the mixture covariance, relative to the power of the loudest bin (Open-Unmix uses 1e-5
# with its mixture scaled to a peak magnitude of 10: the same 1e-7).
REGULARISATION = 1e-7
_EPS = 1e-10
_CHUNK = 256  # frames per filtering step


def wiener(masks: torch.Tensor, mix: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """Refine mask-based estimates of several sources by multichannel Wiener filtering.

    Args:
        masks: ``(sources, channels, frames, bins)`` real masks in [0, 1] that sum to one over
            the sources.
        mix: ``(channels, frames, bins)`` complex STFT of the mixture.
        iterations: EM iterations. 0 returns ``masks * mix`` (the estimates the masks give)
            unchanged; so does any count for one channel, where there is no stereo image to use.

    Returns:
        ``(sources, channels, frames, bins)`` complex estimates, in ``mix``'s dtype.
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, not {iterations}")
    estimates = masks * mix
    if iterations == 0 or mix.shape[0] != 2:
        return estimates
    # Work at a peak magnitude of 1, so that δ is relative to the loudest bin whatever the
    # level, and float32 products of powers stay far from overflow and underflow.
    scale = mix.abs().amax().clamp_min(1e-20)
    x = mix / scale
    y = estimates / scale
    mix_power = _power(x)

    def from_masks(f0: int, f1: int) -> torch.Tensor:
        return masks[:, :, f0:f1] * mix_power[:, f0:f1]

    powers: PowerFn = from_masks
    for _ in range(iterations):
        y = _filter(x, _spatial_covariances(y), powers)
        current = y

        def from_estimates(f0: int, f1: int, y: torch.Tensor = current) -> torch.Tensor:
            return _power(y[:, :, f0:f1])

        powers = from_estimates
    return y * scale


def _power(y: torch.Tensor) -> torch.Tensor:
    """``|y|^2`` of complex ``y`` (any shape), real."""
    return y.real.square() + y.imag.square()


Covariances = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
PowerFn = Callable[[int, int], torch.Tensor]
"""``(first frame, end frame)`` -> ``(sources, channels, n, bins)`` per-channel source powers."""


def _spatial_covariances(y: torch.Tensor) -> Covariances:
    """Each source's spatial covariance per frequency, from its estimates over all frames.

    Args:
        y: ``(sources, 2, frames, bins)`` complex estimates.

    Returns:
        ``(r11, r22, r12)``, each ``(sources, bins)``: the two real diagonal entries and the
        complex off-diagonal one of ``R_j = sum_f y y^H / sum_f v_j`` (normalised so that the
        mean of the diagonal is 1 where the source has energy).
    """
    sources, _, frames, bins = y.shape
    r11 = y.real.new_zeros(sources, bins)
    r22 = torch.zeros_like(r11)
    r12 = y.new_zeros(sources, bins)
    for f0 in range(0, frames, _CHUNK):
        chunk = y[:, :, f0 : f0 + _CHUNK]
        r11 += _power(chunk[:, 0]).sum(dim=1)
        r22 += _power(chunk[:, 1]).sum(dim=1)
        r12 += (chunk[:, 0] * chunk[:, 1].conj()).sum(dim=1)
    weight = (r11 + r22) / 2 + _EPS
    return r11 / weight, r22 / weight, r12 / weight


def _filter(x: torch.Tensor, covariances: Covariances, powers: PowerFn) -> torch.Tensor:
    """Every source's Wiener estimate ``v_j R_j C^-1 x``, frame chunk by frame chunk.

    Args:
        x: ``(2, frames, bins)`` complex mixture (peak magnitude 1).
        covariances: from :func:`_spatial_covariances`.
        powers: ``(first frame, end frame)`` -> ``(sources, 2, n, bins)`` per-channel powers;
            a source's ``v_j`` is their mean over the channels.

    Returns:
        ``(sources, 2, frames, bins)`` complex estimates.
    """
    r11, r22, r12 = (r[:, None, :] for r in covariances)  # (sources, 1, bins)
    frames = x.shape[1]
    out = x.new_empty(r11.shape[0], 2, frames, x.shape[2])
    delta = REGULARISATION
    for f0 in range(0, frames, _CHUNK):
        f1 = min(frames, f0 + _CHUNK)
        v = powers(f0, f1).mean(dim=1)  # (sources, n, bins)
        # The mixture covariance [[a, c], [conj(c), d]] (a, d real) and its determinant. Each
        # R_j is positive semi-definite, so a d - |c|^2 >= 0 before regularisation; clamping it
        # there keeps float rounding (channels that are nearly identical) from making it
        # negative, and δ keeps it positive.
        a = (v * r11).sum(dim=0)
        d = (v * r22).sum(dim=0)
        c = (v * r12).sum(dim=0)
        det = (a * d - _power(c)).clamp_min(0) + delta * (a + d) + delta * delta
        x0, x1 = x[0, f0:f1], x[1, f0:f1]
        z0 = ((d + delta) * x0 - c * x1) / det  # C^-1 x
        z1 = ((a + delta) * x1 - c.conj() * x0) / det
        out[:, 0, f0:f1] = v * (r11 * z0 + r12 * z1)
        out[:, 1, f0:f1] = v * (r12.conj() * z0 + r22 * z1)
    return out
