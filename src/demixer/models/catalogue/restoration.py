"""The restoration entries: Apollo networks (MSST's ``apollo``) that restore audio damaged by
lossy compression rather than separate it. Their stems are the restored audio and ``addition``,
the input less it (the damage the codec added, as MSST's training names it)."""

from __future__ import annotations

from demixer.models.catalogue.sources import (
    MSST,
    MSST_COMMIT,
    MSST_WEBUI_COMMIT,
    MSST_WEBUI_MODELS,
    file,
    hf,
    msst,
    raw,
)
from demixer.models.spec import ModelSpec

__all__ = ["RESTORATION"]

_APOLLO = "https://github.com/JusperLee/Apollo"
_STEMSEP = (
    "https://github.com/engdahlz/StemSep/blob/719386e5eb785b04cad192ec21b822e428481b94/"
    "StemSepApp/assets/catalog.runtime.bootstrap.json"
)
_LEW = "https://github.com/deton24/Lew-s-vocal-enhancer-for-Apollo-by-JusperLee"

RESTORATION: tuple[ModelSpec, ...] = (
    msst(
        "apollo-lq-mp3",
        arch="apollo",
        stems=("restored", "addition"),
        description=(
            "Kai Li and Yi Luo's Apollo: restores a low-bitrate MP3's lost highs and smeared "
            "detail (trained on MP3s of 128 kbps and below)."
        ),
        config=file(
            "config_apollo.yaml",
            raw(
                "ZFTurbo/Music-Source-Separation-Training",
                MSST_COMMIT,
                "configs/config_apollo.yaml",
            ),
            "67a41e6c13c0d441467c06e696b04ba566a985d31d209a50c294e91ef6a0f09f",
            561,
        ),
        checkpoint=file(
            "pytorch_model.bin",
            hf("JusperLee/Apollo", "c68bd80fdd9c0d93d2f4a833cb154624f660a561", "pytorch_model.bin"),
            "99d9af7f1ff20e63c393035513a655392818d66b4d7fc23d658175c1f15e8d76",
            66541845,
        ),
        license=(
            "CC BY-SA 4.0, as the authors' Hugging Face model card states it (license: "
            "cc-by-sa-4.0); their code (https://github.com/JusperLee/Apollo) is CC BY-SA 4.0 too "
            "since July 2025 (CC BY-NC-SA 4.0 before)"
        ),
        license_class="copyleft",
        weights_source="Kai Li (JusperLee) and Yi Luo, Hugging Face JusperLee/Apollo",
        source_url="https://huggingface.co/JusperLee/Apollo",
        quality=(
            "the authors' README gives 16.64 dB SDR over their test music, without naming the "
            "test set; not measured by demixer"
        ),
        scores=(),
        pin_sources=(
            "checkpoint: https://huggingface.co/JusperLee/Apollo/blob/"
            "c68bd80fdd9c0d93d2f4a833cb154624f660a561/pytorch_model.bin (the authors' Git LFS "
            "pointer: SHA-256, 66.5 MB)",
            f"checkpoint: {MSST_WEBUI_MODELS} (SHA-256 and size of another upload, "
            "Apollo_LQ_MP3_restoration.ckpt in Sucial/MSST-WebUI on Hugging Face)",
            "checkpoint: the same SHA-256, with the size and this revision, pinned by several "
            "projects that download the file (found in a code index; not citable by URL here)",
            f"checkpoint size: {_STEMSEP} (an HTTP HEAD of the authors' file: 66,541,845 bytes)",
            f"config: git blob 290547b44d0c5d62d3d3315e7c2e444728139f22 at {MSST} commit "
            f"{MSST_COMMIT}; SHA-256 computed from that blob",
        ),
    ),
    msst(
        "apollo-universal-lew",
        arch="apollo",
        stems=("restored", "addition"),
        description=(
            "Lew's universal Apollo: restores compressed or band-limited audio of any kind (a "
            "wider Apollo, 384 features, trained by Lew)."
        ),
        config=file(
            "apollo_model_uni.ckpt.yaml",
            raw(
                "SUC-DriverOld/MSST-WebUI",
                MSST_WEBUI_COMMIT,
                "configs_backup/single_stem_models/apollo_model_uni.ckpt.yaml",
            ),
            "bfc9599bbe8651c3a93eeb0b491d772ebfceb77feed6bbcb29878b97af9df32c",
            488,
        ),
        checkpoint=file(
            "apollo_model_uni.ckpt",
            f"{_LEW}/releases/download/uni/apollo_model_uni.ckpt",
            "11433256eca90143d32f1108d156ac756fd0201fbc69e5f736def4062fb52186",
            146867952,
        ),
        license=(
            "Not stated by its author (Lew); published in deton24's repository, which has no "
            "licence file. The Apollo network is Kai Li and Yi Luo's (CC BY-SA 4.0)"
        ),
        license_class="not stated",
        weights_source=f"Lew, published in deton24's releases ({_LEW})",
        source_url=f"{_LEW}/releases/tag/uni",
        quality="no figure with a metric and a test set published; not measured by demixer",
        scores=(),
        pin_sources=(
            f"checkpoint: {MSST_WEBUI_MODELS} (SHA-256 and size of its copy in "
            "Sucial/MSST-WebUI on Hugging Face)",
            "checkpoint: https://github.com/rcruzotiniano/Apollo_Mod/blob/"
            "b67ae9ccf526b1458d2efc20e44911137434d4d5/model/apollo_model_uni.ckpt (the Git LFS "
            "pointer of another upload: SHA-256 and size)",
            "config: MSST-WebUI's MSST-format config for this checkpoint, pinned to its commit; "
            "SHA-256 computed from the file at that commit (one source: the release's own "
            "config_apollo_uni.yaml is a training config, not MSST's format)",
        ),
    ),
)
