"""The cinematic entries: a film's or video's sound as dialogue, music and effects (Bandit v2,
BandIt Plus)."""

from __future__ import annotations

from demixer.models.catalogue.sources import (
    MSST,
    MSST_COMMIT,
    MSST_TABLE,
    MSST_WEBUI_MODELS,
    UVR_RELEASE,
    UVR_RELEASES_PAGE,
    file,
    msst,
    raw,
)
from demixer.models.spec import ModelSpec, Score

__all__ = ["CINEMATIC"]

_BANDIT_V2 = "https://github.com/kwatcharasupat/bandit-v2"
_WEIGHTS_RECORD = "https://zenodo.org/records/12701995"
_BANDIT = "https://github.com/kwatcharasupat/bandit"
_DNR = "Divide and Remaster (DnR) v2 test"

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
    msst(
        "bandit-plus-dnr",
        arch="bandit",
        stems=("speech", "music", "effects"),
        description=(
            "BandIt Plus (MSST's BandIt checkpoint, DnR): a film's or video's dialogue, music "
            "and effects, asked for as dialogue, music, effects."
        ),
        config=file(
            "config_dnr_bandit_bsrnn_multi_mus64.yaml",
            raw(
                "ZFTurbo/Music-Source-Separation-Training",
                MSST_COMMIT,
                "configs/config_dnr_bandit_bsrnn_multi_mus64.yaml",
            ),
            "994b3c3802e225663aed578ba5e412eb68364a8272e1db556f06dd8428e1bf40",
            2024,
        ),
        checkpoint=file(
            "model_bandit_plus_dnr_sdr_11.47.chpt",
            f"{MSST}/releases/download/v.1.0.3/model_bandit_plus_dnr_sdr_11.47.chpt",
            "c48284779f7d1258a6527d3aaa18a532d45c1f506e2dcc25d5ab179a8c5e2573",
            148891175,
        ),
        license=(
            "Not stated for the weights (a release asset of ZFTurbo/Music-Source-Separation-"
            f"Training, whose code is MIT; BandIt's code, {_BANDIT}, is Apache-2.0)"
        ),
        license_class="not stated",
        weights_source=(
            'MSST release v.1.0.3 (Roman Solovyev, ZFTurbo: "Bandit Plus model added"), '
            "the network Karn N. Watcharasupat et al.'s BandIt; who trained these weights is "
            "not stated there"
        ),
        source_url=f"{MSST}/releases/tag/v.1.0.3",
        quality=(
            "DnR test: 11.50 dB mean SDR (dialogue 15.64, music 9.18, effects 9.69; MSST's "
            "table); not measured by demixer"
        ),
        scores=(
            Score("mean", 11.50, "SDR", _DNR, MSST_TABLE),
            Score("speech", 15.64, "SDR", _DNR, MSST_TABLE),
            Score("music", 9.18, "SDR", _DNR, MSST_TABLE),
            Score("effects", 9.69, "SDR", _DNR, MSST_TABLE),
        ),
        pin_sources=(
            f"checkpoint: {MSST_WEBUI_MODELS} (SHA-256 and size of its copy on Hugging Face, "
            "Sucial/MSST-WebUI)",
            "checkpoint: https://huggingface.co/Eddycrack864/Music-Source-Separation-Training/"
            "blob/4a3768d/model_bandit_plus_dnr_sdr_11.47.chpt (the Git LFS pointer's SHA-256 "
            "of another uploader's copy, 2024-06-17)",
            "checkpoint size: https://github.com/engdahlz/StemSep/blob/"
            "719386e5eb785b04cad192ec21b822e428481b94/StemSepApp/assets/"
            "catalog.runtime.bootstrap.json (an HTTP HEAD of this release asset: 148,891,175 "
            "bytes)",
            f"config: git blob 2392ca496e498e57a99d70f1f28f73fe3dd7c432 at {MSST} commit "
            f"{MSST_COMMIT}; SHA-256 computed from that blob (the network's options are those "
            "of the v.1.0.3 release asset, 1,715 bytes, whose later edits only moved training's "
            "augmentation options)",
        ),
    ),
)
