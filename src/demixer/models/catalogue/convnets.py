"""The convolutional entries: SCNet (4 stems), MDX23C and the MDX-Net (ONNX) classics."""

from __future__ import annotations

from demixer.models.catalogue.sources import (
    CLEANSPLIT,
    INST_HQ_3_MD5,
    KIM_VOCAL_2_MD5,
    MDX_NET_RECORDS,
    MSST,
    MSST_TABLE,
    UVR_DATA_COMMIT,
    UVR_LICENSE,
    UVR_RELEASE,
    UVR_RELEASES_PAGE,
    file,
    mdx_net,
    msst,
    multisong,
    raw,
    separator_median,
)
from demixer.models.spec import ModelSpec, Score

__all__ = ["OTHERS"]


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
        stems=("Vocals", "Instrumental"),
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
            separator_median("Vocals", 10.56, 40),
            separator_median("Instrumental", 15.83, 40),
        ),
        pin_sources=(
            CLEANSPLIT,
            "config: git blob 207aa712b561221c136576db6a6e7d6e35915ba4 at "
            f"https://github.com/TRvlvr/application_data commit {UVR_DATA_COMMIT}; the same "
            "bytes are in Politrees/UVR_resources; SHA-256 computed from that blob",
        ),
    ),
    mdx_net(
        "mdx-net-vocals-kim-2",
        stems=("Vocals", "Instrumental"),
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
            "primary_stem": "Vocals",
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
            separator_median("Vocals", 10.18, 40),
            separator_median("Instrumental", 15.36, 40),
        ),
        pin_sources=(MDX_NET_RECORDS, f"UVR model_data.json key {KIM_VOCAL_2_MD5} (identity)"),
    ),
    mdx_net(
        "mdx-net-inst-hq-3",
        stems=("Instrumental", "Vocals"),
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
            "primary_stem": "Instrumental",
        },
        license=UVR_LICENSE,
        license_class="permissive",
        weights_source="UVR's developers (Anjok07, aufr33), UVR's model releases",
        quality="instrumental 15.42 dB median SDR, 40 MUSDB18 tracks (audio-separator's run)",
        scores=(
            separator_median("Instrumental", 15.42, 40),
            separator_median("Vocals", 8.81, 40),
        ),
        pin_sources=(MDX_NET_RECORDS, f"UVR model_data.json key {INST_HQ_3_MD5} (identity)"),
    ),
)
