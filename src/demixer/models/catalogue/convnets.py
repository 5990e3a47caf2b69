"""The convolutional entries: SCNet (4 stems), MDX23C and the MDX-Net (ONNX) classics."""

from __future__ import annotations

from demixer.models.catalogue.sources import (
    CLEANSPLIT,
    INST_HQ_3_MD5,
    INST_HQ_4_MD5,
    KIM_VOCAL_2_MD5,
    MDX_NET_RECORDS,
    MSST,
    MSST_TABLE,
    POLITREES_COMMIT,
    UVR_DATA_COMMIT,
    UVR_LICENSE,
    UVR_RELEASE,
    UVR_RELEASES_PAGE,
    file,
    hf,
    mdx_net,
    msst,
    multisong,
    politrees_config,
    raw,
    separator_median,
)
from demixer.models.spec import ModelSpec, Score

__all__ = ["OTHERS"]

_DRUMSEP_REV = "fe045eabc3cc20d499a1deee705fbe3b07c60bca"  # Politrees' HF commit adding it


OTHERS: tuple[ModelSpec, ...] = (
    msst(
        "scnet-xl-ihf",
        arch="scnet",
        stems=("drums", "bass", "other", "vocals"),
        description="ZFTurbo's SCNet XL IHF, trained on MUSDB18-HQ: 4 stems.",
        config=file(
            "config_musdb18_scnet_xl_more_wide_v5.yaml",
            f"{MSST}/releases/download/v1.0.15/config_musdb18_scnet_xl_more_wide_v5.yaml",
            "54ddcb8aeeae85c8d0e148741e7d87b0fbd38bd21cffa5d59ba124fe1e672f40",
            5906,
        ),
        checkpoint=file(
            "model_scnet_ep_36_sdr_10.0891.ckpt",
            f"{MSST}/releases/download/v1.0.15/model_scnet_ep_36_sdr_10.0891.ckpt",
            "ac25975f0f5704f3d1a3c3c251505b7a0f417a22eafe82773440ee4f7e14b74f",
            214063778,
        ),
        license=(
            "Not stated for the weights (a release asset of ZFTurbo/Music-Source-Separation-"
            "Training, whose code is MIT)"
        ),
        license_class="not stated",
        weights_source="Roman Solovyev (ZFTurbo), MSST release v1.0.15",
        source_url=f"{MSST}/releases/tag/v1.0.15",
        quality="MUSDB18-HQ test: 10.08 dB mean SDR (MSST's table); not measured by demixer",
        scores=(
            Score("mean", 10.08, "SDR", "MUSDB18-HQ test", MSST_TABLE),
            Score("vocals", 11.42, "SDR", "MUSDB18-HQ test", MSST_TABLE),
            Score("drums", 11.81, "SDR", "MUSDB18-HQ test", MSST_TABLE),
            Score("bass", 9.23, "SDR", "MUSDB18-HQ test", MSST_TABLE),
            Score("other", 7.88, "SDR", "MUSDB18-HQ test", MSST_TABLE),
            multisong("mean", 9.92),
        ),
        pin_sources=(
            CLEANSPLIT,
            "https://github.com/jhurliman/jams/blob/2dfeabbc5a7af443ba70cbfade9bab0e81967f38/"
            "paper/PROVENANCE.md (checkpoint and config, hashed from downloaded copies; sizes "
            "from the GitHub API)",
        ),
    ),
    msst(
        "mdx23c-instvoc-hq",
        arch="mdx23c",
        stems=("vocals", "instrumental"),
        description="MDX23C-InstVoc HQ (TFC-TDF v3, 8k FFT) from UVR: vocals / instrumental.",
        config=file(
            "model_2_stem_full_band_8k.yaml",
            raw(
                "TRvlvr/application_data",
                UVR_DATA_COMMIT,
                "mdx_model_data/mdx_c_configs/model_2_stem_full_band_8k.yaml",
            ),
            "451765e869b78dcb9ca9188a74da31f581b7254ff0e8b532aa76b974148de947",
            709,
        ),
        checkpoint=file(
            "MDX23C-8KFFT-InstVoc_HQ.ckpt",
            UVR_RELEASE + "MDX23C-8KFFT-InstVoc_HQ.ckpt",
            "49d51472769e34a2501cd1da782346a3212555c3a5619fc2c53507445528d816",
            448101203,
        ),
        license=UVR_LICENSE + " UVR credits ZFTurbo with training the MDX23C weights.",
        license_class="permissive",
        weights_source="ZFTurbo for Ultimate Vocal Remover (UVR's model releases)",
        source_url=UVR_RELEASES_PAGE,
        quality="vocals 10.56 dB median SDR, 40 MUSDB18 tracks (audio-separator's run)",
        scores=(
            separator_median("vocals", 10.56, 40),
            separator_median("instrumental", 15.83, 40),
        ),
        pin_sources=(
            CLEANSPLIT,
            "config: git blob 207aa712b561221c136576db6a6e7d6e35915ba4 at "
            f"https://github.com/TRvlvr/application_data commit {UVR_DATA_COMMIT}; the same "
            "bytes are in Politrees/UVR_resources; SHA-256 computed from that blob",
        ),
    ),
    msst(
        "mdx23c-drumsep",
        arch="mdx23c",
        stems=("kick", "snare", "toms", "hh", "ride", "crash"),
        description=(
            "aufr33 and jarredou's MDX23C DrumSep: a drum stem's kick, snare, toms, hi-hat, "
            "ride and crash (the drum-kit recipe takes the drums first)."
        ),
        config=file(
            "config_drumsep_mdx23c.yaml",
            politrees_config("MDX23C/config_drumsep_mdx23c.yaml"),
            "b7165bb73a0b08df49ac4ed5fe7424e29bf2f707b5878300f729a7e92671257a",
            2331,
        ),
        checkpoint=file(
            "MDX23C-DrumSep-aufr33-jarredou.ckpt",
            hf(
                "Politrees/UVR_resources",
                _DRUMSEP_REV,
                "models/MDX23C/MDX23C-DrumSep-aufr33-jarredou.ckpt",
            ),
            "d2a4aa53eb584d21eead358a4e66d1882ad182911be018f052b5da73be9096d0",
            437652699,
        ),
        license=(
            "Not stated by its authors (aufr33 and jarredou; their release on GitHub carries "
            "no terms); the Politrees/UVR_resources mirror on Hugging Face is tagged MIT by its "
            "uploader, not by the authors"
        ),
        license_class="not stated",
        weights_source=(
            "aufr33 and jarredou (released as aufr33-jarredou_DrumSep_model_mdx23c_ep_141_sdr_"
            "10.8059.ckpt), as mirrored by Politrees/UVR_resources (Hugging Face)"
        ),
        source_url=MSST_TABLE,
        quality=(
            "DrumSep test: kick 14.54, snare 9.79, toms 10.63, hi-hat 3.19, cymbals (ride + "
            "crash) 6.08 dB SDR (MSST's table); not measured by demixer"
        ),
        scores=(
            Score("kick", 14.54, "SDR", "DrumSep test", MSST_TABLE),
            Score("snare", 9.79, "SDR", "DrumSep test", MSST_TABLE),
            Score("toms", 10.63, "SDR", "DrumSep test", MSST_TABLE),
            Score("hh", 3.19, "SDR", "DrumSep test", MSST_TABLE),
        ),
        pin_sources=(
            "checkpoint: https://github.com/openmirlab/mdxnet-infer/blob/"
            "81fc1cc097d6d73fd014f5eaa6cb4377e9c946c1/src/mdxnet_infer/config/checkpoints.toml "
            "(SHA-256; the README.md of that commit says the two Hugging Face mirrors it found "
            "were byte-identical)",
            "checkpoint: full SHA-256 and size recorded by several other public projects that "
            "hashed audio-separator's copy or read the mirror's Git LFS pointer (found in a code "
            "index; not citable by URL here)",
            "config: git blob af497f9f6a8687e58adb0ad750547e478f9d7852 at "
            f"https://github.com/Politrees/UVR_resources commit {POLITREES_COMMIT}; the same blob "
            "is in SUC-DriverOld/MSST-WebUI's history; SHA-256 computed from that blob",
        ),
    ),
    mdx_net(
        "mdx-net-vocals-kim-2",
        stems=("vocals", "instrumental"),
        description="Kim Vocal 2, the classic UVR MDX-Net (ONNX) vocal model.",
        onnx=file(
            "Kim_Vocal_2.onnx",
            UVR_RELEASE + "Kim_Vocal_2.onnx",
            "ce74ef3b6a6024ce44211a07be9cf8bc6d87728cc852a68ab34eb8e58cde9c8b",
            66759214,
        ),
        arch_params={
            "n_fft": 7680,
            "dim_f": 3072,
            "dim_t": 256,
            "compensate": 1.009,
            "primary_stem": "vocals",
        },
        license=(
            "Not stated by its author (Kimberley Jensen); distributed in UVR's model releases, "
            'whose README says: "For all third-party application developers who wish to use '
            "our models, please honor the MIT license by providing credit to UVR and its "
            'developers."'
        ),
        license_class="not stated",
        weights_source="Kimberley Jensen (KimberleyJSN), UVR's model releases",
        quality="vocals 10.18 dB median SDR, 40 MUSDB18 tracks (audio-separator's run)",
        scores=(
            separator_median("vocals", 10.18, 40),
            separator_median("instrumental", 15.36, 40),
        ),
        pin_sources=(MDX_NET_RECORDS, f"UVR model_data.json key {KIM_VOCAL_2_MD5} (identity)"),
    ),
    mdx_net(
        "mdx-net-inst-hq-4",
        stems=("instrumental", "vocals"),
        description="UVR-MDX-NET Inst HQ 4, UVR's later MDX-Net (ONNX) instrumental model.",
        onnx=file(
            "UVR-MDX-NET-Inst_HQ_4.onnx",
            UVR_RELEASE + "UVR-MDX-NET-Inst_HQ_4.onnx",
            "3c4b5b9b05090fdf238f38ba5046813982d50e2a652e9cb3324ea79720c3c9c8",
            59074342,
        ),
        arch_params={
            "n_fft": 5120,
            "dim_f": 2560,
            "dim_t": 256,
            "compensate": 1.019,
            "primary_stem": "instrumental",
        },
        license=UVR_LICENSE,
        license_class="permissive",
        weights_source="UVR's developers (Anjok07, aufr33), UVR's model releases",
        quality="instrumental 15.51 dB median SDR, 41 MUSDB18 tracks (audio-separator's run)",
        scores=(
            separator_median("instrumental", 15.51, 41),
            separator_median("vocals", 8.83, 41),
        ),
        pin_sources=(
            "full SHA-256 recorded by at least four independent public projects that pin the UVR "
            "release asset, three of them with its size, 59074342 bytes (found in a code index; "
            "not citable by URL here)",
            f"UVR model_data.json key {INST_HQ_4_MD5} (identity, as one of those projects "
            "records it with these parameters)",
        ),
    ),
    mdx_net(
        "mdx-net-inst-hq-3",
        stems=("instrumental", "vocals"),
        description="UVR-MDX-NET Inst HQ 3, UVR's classic MDX-Net (ONNX) instrumental model.",
        onnx=file(
            "UVR-MDX-NET-Inst_HQ_3.onnx",
            UVR_RELEASE + "UVR-MDX-NET-Inst_HQ_3.onnx",
            "317554b07fe1ea5279a77f2b1520a41ea4b93432560c4ffd08792c30fddf9adc",
            66759214,
        ),
        arch_params={
            "n_fft": 6144,
            "dim_f": 3072,
            "dim_t": 256,
            "compensate": 1.022,
            "primary_stem": "instrumental",
        },
        license=UVR_LICENSE,
        license_class="permissive",
        weights_source="UVR's developers (Anjok07, aufr33), UVR's model releases",
        quality="instrumental 15.42 dB median SDR, 41 MUSDB18 tracks (audio-separator's run)",
        scores=(
            # 41 tracks for this model (one more than for the others): its models-scores.json entry.
            separator_median("instrumental", 15.42, 41),
            separator_median("vocals", 8.81, 41),
        ),
        pin_sources=(MDX_NET_RECORDS, f"UVR model_data.json key {INST_HQ_3_MD5} (identity)"),
    ),
)
