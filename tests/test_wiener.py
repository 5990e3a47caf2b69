"""The multichannel Wiener filter (demixer.models.wiener) on synthetic stereo spectrograms.

Open-Unmix's ``filtering.py`` (PyPI ``openunmix`` 1.3.0, installed by ``make install``) is the
reference: with binary masks the first iteration's powers are the same in both, so the whole EM
must agree with it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from demixer.models.wiener import wiener

FRAMES, BINS = 200, 48


def _open_unmix_filtering() -> ModuleType:
    """openunmix/filtering.py, loaded by path: the package's ``__init__`` imports torchaudio,
    which demixer never installs, and the filtering module needs only torch."""
    spec = importlib.util.find_spec("openunmix")
    assert spec is not None and spec.submodule_search_locations, "openunmix is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "filtering.py"
    loader_spec = importlib.util.spec_from_file_location("openunmix_filtering", path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return module


def _panned_sources(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sources with their own stereo images and powers that change over time.

    Returns ``(sources (2, 2, frames, bins) complex128, mix (2, frames, bins))``.
    """
    g = torch.Generator().manual_seed(seed)

    def spectrum() -> torch.Tensor:
        power = torch.rand(FRAMES, BINS, generator=g, dtype=torch.float64) ** 4  # sparse-ish
        phase = torch.rand(FRAMES, BINS, generator=g, dtype=torch.float64) * 6.283
        return torch.polar(power.sqrt(), phase)

    left = torch.tensor([0.95, 0.3], dtype=torch.complex128)[:, None, None]
    right = torch.tensor([0.25, 0.97], dtype=torch.complex128)[:, None, None]
    sources = torch.stack([left * spectrum(), right * spectrum()])
    return sources, sources.sum(dim=0)


def _sdr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    error = (reference - estimate).abs().square().sum()
    return float(10 * torch.log10(reference.abs().square().sum() / error))


def _true_masks(sources: torch.Tensor) -> torch.Tensor:
    power = sources.abs().square()
    return power / power.sum(dim=0, keepdim=True).clamp_min(1e-30)


def test_zero_iterations_and_one_channel_give_the_masked_mixture_unchanged() -> None:
    sources, mix = _panned_sources(0)
    masks = _true_masks(sources)
    assert torch.equal(wiener(masks, mix, 0), masks * mix)
    mono = wiener(masks[:, :1], mix[:1], 3)
    assert torch.equal(mono, masks[:, :1] * mix[:1])


def test_sources_with_one_stereo_image_keep_their_masks() -> None:
    # Both sources panned the same way: nothing spatial tells them apart, so the filter must
    # give back exactly what the masks gave (Open-Unmix's first powers, |mask x|^2, would
    # sharpen the masks to m^2 / (m^2 + (1 - m)^2) instead).
    g = torch.Generator().manual_seed(1)
    mono = torch.polar(
        torch.rand(FRAMES, BINS, generator=g, dtype=torch.float64) + 0.1,
        torch.rand(FRAMES, BINS, generator=g, dtype=torch.float64) * 6.283,
    )
    mix = torch.tensor([0.8, 0.6], dtype=torch.complex128)[:, None, None] * mono
    vocal = torch.rand(FRAMES, BINS, generator=g, dtype=torch.float64).expand(2, -1, -1)
    masks = torch.stack([vocal, 1 - vocal])
    masked = masks * mix
    filtered = wiener(masks, mix, 1)
    relative = (filtered - masked).abs().max() / mix.abs().max()
    assert relative < 1e-4
    sharpened = vocal**2 / (vocal**2 + (1 - vocal) ** 2)
    assert (sharpened * mix - masked).abs().max() / mix.abs().max() > 0.1  # a real difference


def test_the_stereo_images_separate_what_rough_masks_do_not() -> None:
    sources, mix = _panned_sources(2)
    true = _true_masks(sources)
    rough = 0.5 + 0.2 * (true - 0.5)  # right direction, far too timid
    masked = rough * mix
    one = wiener(rough, mix, 1)
    two = wiener(rough, mix, 2)
    for j in range(2):
        before = _sdr(sources[j], masked[j])
        assert _sdr(sources[j], one[j]) > before + 3.0
        assert _sdr(sources[j], two[j]) > _sdr(sources[j], one[j])


@pytest.mark.parametrize("iterations", [1, 2])
def test_agrees_with_open_unmix_for_binary_masks(iterations: int) -> None:
    reference = _open_unmix_filtering()
    sources, mix = _panned_sources(3)
    mix = mix * 50  # Open-Unmix rescales to a peak of 10 only above it; demixer always does
    masks = (sources[0].abs() > sources[1].abs()).to(torch.float64).expand(2, -1, -1)
    masks = torch.stack([masks, 1 - masks])
    ours = wiener(masks, mix, iterations)

    # Open-Unmix's layout: targets (frames, bins, channels, sources), complex as a last axis.
    targets = masks.permute(2, 3, 1, 0).contiguous()
    x = torch.view_as_real(mix.permute(1, 2, 0).contiguous())
    theirs = reference.wiener(targets, x, iterations=iterations, softmask=True, eps=1e-10)
    theirs = torch.view_as_complex(theirs.permute(4, 2, 0, 1, 3).contiguous())
    assert theirs.shape == ours.shape
    relative = (ours - theirs).abs().max() / mix.abs().max()
    assert relative < 1e-6


def test_float32_spectrograms_stay_finite_with_identical_channels_and_silence() -> None:
    # Mono duplicated to stereo (a singular spatial covariance) and digital silence: the
    # determinant is kept positive, nothing divides by zero.
    g = torch.Generator().manual_seed(4)
    one = torch.polar(torch.rand(FRAMES, BINS, generator=g), torch.rand(FRAMES, BINS, generator=g))
    one[:, : BINS // 4] = 0
    mix = torch.stack([one, one])
    vocal = torch.rand(FRAMES, BINS, generator=g).expand(2, -1, -1)
    out = wiener(torch.stack([vocal, 1 - vocal]), mix, 2)
    assert out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all()
    assert out[:, :, :, : BINS // 4].abs().max() == 0
