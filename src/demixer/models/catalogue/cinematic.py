"""The cinematic entry: a film's or video's sound as dialogue, music and effects (Bandit v2)."""

from __future__ import annotations

from demixer.models.catalogue.sources import (
    MSST,
    MSST_COMMIT,
    UVR_RELEASE,
    UVR_RELEASES_PAGE,
    file,
    msst,
    raw,
)
from demixer.models.spec import ModelSpec

__all__ = ["CINEMATIC"]

_BANDIT_V2 = "https://github.com/kwatcharasupat/bandit-v2"
_WEIGHTS_RECORD = "https://zenodo.org/records/12701995"

CINEMATIC: tuple[ModelSpec, ...] = (
    msst(
        "bandit-v2-dnr",
        arch="bandit_v2",
        stems=("speech", "music", "sfx"),
        description=(
            "Watcharasupat, Wu and Orife's Bandit v2 (multilingual, DnR v3): a film's or "
            "video's dialogue, music and effects, asked for as dialogue, music, effects."
        ),
        sample_rate=48000,
        config=file(
            "config_dnr_bandit_v2_mus64.yaml",
            raw(
                "ZFTurbo/Music-Source-Separation-Training",
                MSST_COMMIT,
                "configs/config_dnr_bandit_v2_mus64.yaml",
            ),
            "b7062645d3fcd996b2f6da6119775100faf3c5c91f7d048fe8f6d1a1f1453232",
            1948,
        ),
        checkpoint=file(
            "checkpoint-multi_fixed.ckpt",
            UVR_RELEASE + "checkpoint-multi_fixed.ckpt",
            "20bcd513dc7eb0541dd045909a4e7dff8dab474cc2efba4904101c76524aee85",
            149133378,
        ),
        license=(
            "CC BY-SA 4.0 (Creative Commons Attribution-ShareAlike 4.0 International), as its "
            f"authors publish the weights ({_WEIGHTS_RECORD}, checkpoint-multi.ckpt); their "
            f"code ({_BANDIT_V2}) is Apache-2.0. This file is that checkpoint's network weights "
            "alone (its training state left out, as MSST loads it), published in UVR's model "
            "releases"
        ),
        license_class="copyleft",
        weights_source=(
            "Karn N. Watcharasupat, Chih-Wei Wu and Iroro Orife (Netflix; Zenodo record "
            "12701995), converted for MSST and published in UVR's model releases"
        ),
        source_url=_BANDIT_V2,
        quality=(
            "no figure with a metric and a test set published by its authors was read here "
            "(their paper, arXiv:2407.07275, reports it on DnR v3 per language); not measured "
            "by demixer"
        ),
        scores=(),
        pin_sources=(
            f"checkpoint: {UVR_RELEASES_PAGE}, the URL two public projects pin, found in a code "
            "index (not citable by URL here): one records the full SHA-256 and the size "
            "(149,133,378 bytes) of a download from this URL, the other, a preservation mirror, "
            "the SHA-256's first 16 digits and 142 MiB for its copy from Politrees/UVR_resources "
            "on Hugging Face",
            f"config: git blob db74fee27426b6e2204d459070603abcf846e3a6 at {MSST} commit "
            f"{MSST_COMMIT}; SHA-256 computed from that blob, and its first 16 digits recorded "
            "by the same preservation mirror",
        ),
    ),
)
