"""Published MSST configs, shrunk, and random checkpoints made by MSST's own classes.

The configs in ``tests/data/msst`` are the real ones (see its README). A test keeps a config's
option combination (STFT, band layout, stems, targets, chunking) and shrinks only what costs time
(width, depth, heads, chunk length). Configs are written back as YAML with ``yaml.dump``, which
writes tuples as ``!!python/tuple`` as the published files do.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml  # type: ignore[import-untyped]

from demixer.models.arch import build_model

DATA = Path(__file__).resolve().parent / "data" / "msst"

# name -> (file, arch)
PUBLISHED = {
    "viperx-bs-1297": ("model_bs_roformer_ep_317_sdr_12.9755.yaml", "bs_roformer"),
    "viperx-bs-other": ("model_bs_roformer_ep_937_sdr_10.5309.yaml", "bs_roformer"),
    "kim-mel-vocals": ("config_vocals_mel_band_roformer_kj.yaml", "mel_band_roformer"),
    "bs-4stem-sage": ("config_musdb18_bs_roformer_384_8_2_485100_sage.yaml", "bs_roformer"),
    "mel-4stem": ("config_musdb18_mel_band_roformer_all_stems.yaml", "mel_band_roformer"),
    "mel-vocals-512": ("config_vocals_mel_band_roformer.yaml", "mel_band_roformer"),
    "bs-musdb-target": ("config_musdb18_bs_roformer.yaml", "bs_roformer"),
    "bs-sw-6stems": ("config_BandSplit-Roformer_SW_by-jarredou.yaml", "bs_roformer"),
    "karaoke-aufr33": (
        "config_melband_roformer_karaoke_aufr33_viperx_sdr_10.1956.yaml",
        "mel_band_roformer",
    ),
    "crowd-aufr33": (
        "config_melband_roformer_crowd_aufr33_viperx_sdr_8.7144.yaml",
        "mel_band_roformer",
    ),
    "guitar-becruily": ("config_melband_roformer_guitar_becruily.yaml", "mel_band_roformer"),
    "vocals-becruily": ("config_melband_roformer_vocals_becruily.yaml", "mel_band_roformer"),
    "aspiration-sucial": ("config_melband_roformer_aspiration.yaml", "mel_band_roformer"),
    # The Conformers: the RoFormers with Conformer blocks along time and frequency.
    "bs-conformer-vocals": ("config_vocals_bs_conformer.yaml", "bs_conformer"),
    "mel-conformer-vocals": ("config_vocals_mel_band_conformer.yaml", "mel_band_conformer"),
    "mel-conformer-4stem": (
        "config_musdb18_mel_band_conformer_all_stems.yaml",
        "mel_band_conformer",
    ),
}

SMALL = {"dim": 16, "depth": 1, "dim_head": 16, "heads": 2}


def published(name: str) -> tuple[dict[str, Any], str]:
    """The published config ``name`` (read as MSST reads it: ``yaml.FullLoader``) and its arch."""
    file, arch = PUBLISHED[name]
    with (DATA / file).open() as fh:
        return yaml.load(fh, Loader=yaml.FullLoader), arch


def shrunk(
    name: str, *, chunk_frames: int | None = None, **model: Any
) -> tuple[dict[str, Any], str]:
    """``name``'s config with :data:`SMALL` (then ``model``) over its model section.

    ``chunk_frames``: chunk_size becomes that many STFT hops (the published chunks are whole
    multiples of the hop too).
    """
    config, arch = published(name)
    config = copy.deepcopy(config)
    config["model"].update(SMALL)
    config["model"].update(model)
    if chunk_frames is not None:
        hop = config["model"].get("stft_hop_length", 512)
        config["audio"]["chunk_size"] = hop * chunk_frames
        config.get("inference", {}).pop("chunk_size", None)
    return config, arch


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.dump(config))
    return path


def model_files(
    root: Path,
    name: str = "kim-mel-vocals",
    seed: int = 0,
    training: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[Path, Path]:
    """A shrunk published config (``training``: over its training section, e.g. other
    instruments) and a random checkpoint of the network it describes."""
    config, arch = shrunk(name, chunk_frames=20, **options)
    config["training"].update(training or {})
    path = write_config(config, root / f"{name}-{seed}.yaml")
    torch.manual_seed(seed)
    section = config["training"]
    network = build_model(
        arch, config["model"], config["audio"], section["instruments"],
        section["target_instrument"],
    )  # fmt: skip
    checkpoint = root / f"{name}-{seed}.ckpt"
    torch.save(network.state_dict(), checkpoint)
    return path, checkpoint


def randomise(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Perturb every weight (initial norms are all ones and biases zeros: too regular to catch
    a swapped axis); rotary frequencies are kept, as training keeps them. PoPE's key phase
    biases (initially zero) are spread over and beyond the [-2 pi, 0] they are clamped to."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("pope_embed.bias"):
                p.uniform_(-8.0, 1.5, generator=gen)
            elif not name.endswith("freqs"):
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()


def music(samples: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """``(channels, samples)`` float32: a few tones with a beat, plus noise (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 44100
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (110, 220, 330, 1760))
    beat = (np.sin(2 * np.pi * 2 * t) > 0.9) * rng.standard_normal(samples)
    out = [0.1 * tones + 0.2 * beat + 0.05 * rng.standard_normal(samples) for _ in range(channels)]
    return np.stack(out).astype(np.float32)
