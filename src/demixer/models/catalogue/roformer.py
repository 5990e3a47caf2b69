"""The RoFormer entries: vocals, instrumental, karaoke, de-reverb, de-echo, denoise, crowd and
breath models, and a six-stem model (guitar and piano besides the four)."""

from __future__ import annotations

from demixer.models.catalogue.sources import (
    CLEANSPLIT,
    MELBAND_INFER,
    MSST,
    MSST_COMMIT,
    MSST_TABLE,
    MSST_WEBUI_MODELS,
    POLITREES_COMMIT,
    UVR_DATA_COMMIT,
    UVR_RELEASE,
    UVR_RELEASES_PAGE,
    file,
    hf,
    hf_file,
    msst,
    multisong,
    politrees_config,
    raw,
    separator_median,
)
from demixer.models.spec import ModelSpec, Score

__all__ = ["ROFORMERS"]

_KIM_REPO, _KIM_REV = "KimberleyJSN/melbandroformer", "ac9b0614ab3cd7f77219e18ba494dfd93956c348"
_INST_REPO, _INST_REV = (
    "becruily/mel-band-roformer-instrumental",
    "1bbef428121cc700899a57c8a50d6dce13aa7e98",
)
# becruily's vocal model: the revision several projects pin its checkpoint at.
_VOC_REPO, _VOC_REV = (
    "becruily/mel-band-roformer-vocals",
    "af457f56e56eb23fa8322929eef6a63b455e5858",
)
_KARA_REPO = "becruily/mel-band-roformer-karaoke"
# becruily's guitar model: the revision other projects pin its two files at.
_GUITAR_REPO = "becruily/mel-band-roformer-guitar"
_GUITAR_REV = "6409e7f88754b07ef7ca3bd1b76a15f010f1672a"
# openmirlab's pin list at the commit that first lists the guitar model.
_MELBAND_INFER_GUITAR = (
    "https://github.com/openmirlab/melband-roformer-infer/blob/"
    "cae90e4ade45e91ce4e7b8d9f887b75d07bcbe90/src/mel_band_roformer/data/checksums.json"
)
_KARA_REV = "0c149975cfaa261c7d87baf54330a9da85bcf888"
# frazer and becruily's BS-RoFormer karaoke model: the revision two projects pin it at.
_BS_KARA_REPO = "becruily/bs-roformer-karaoke"
_BS_KARA_REV = "f7849ae934209184dc288d1018cd8a76a7fc8b3c"
_VERB_REPO = "anvuew/dereverb_mel_band_roformer"
_VERB_REV = "cef05ad2b5b3145ea5c149d3ad5d1f8439b34d06"
_NOISE_REPO = "poiqazwsx/melband-roformer-denoise"
_NOISE_REV = "4e39bc34a36dda8e73254cd8f5d44f15de2bd7b9"
# Sucial's aspiration (breath) model: the one commit that uploaded its files.
_BREATH_REPO = "Sucial/Aspiration_Mel_Band_Roformer"
_BREATH_REV = "7c1a73d2c5a9b45ae85ba059aff275c648b2e7ac"
_MALE_FEMALE_REV = "848ebc6354066288fc39131ecdf8a2d83057091e"  # Politrees' HF commit adding it
_ECHO_REPO = "Sucial/Dereverb-Echo_Mel_Band_Roformer"
_ECHO_REV = (
    "9c83bf27196213e6107cf0de5ff2d06d56a46876"  # its main branch's head, as pinned elsewhere
)
# The SW six-stem model's first host (huggingface.co/jarredou/BS-ROFO-SW-Fixed) is gone; this
# re-host serves the same checkpoint (the pins below). No commit of it is recorded anywhere, so
# its URL follows the branch: the SHA-256 and size, checked before anything is loaded, fix the
# bytes. The config comes from Politrees/UVR_resources at a commit (the same bytes).
_SW_REPO, _SW_REV = "enerjazzer/BS-ROFO-SW-Fixed", "main"
_BS_INFER = (
    "https://github.com/openmirlab/bs-roformer-infer/blob/"
    "04cfa4be2d04ad5164c6f7e97ff31f37b0b162fe/src/bs_roformer/data/checksums.json"
)


ROFORMERS: tuple[ModelSpec, ...] = (
    msst(
        "mel-roformer-vocals-kim",
        arch="mel_band_roformer",
        stems=("vocals", "other"),
        description="Kimberley Jensen's Mel-Band RoFormer: vocals and the rest (other).",
        config=file(
            "config_vocals_mel_band_roformer_kj.yaml",
            raw(
                "ZFTurbo/Music-Source-Separation-Training",
                MSST_COMMIT,
                "configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml",
            ),
            "f63f38eb1e6e40a7db0dade714a5ae257555dd8748f4e774eae8679275a81926",
            1721,
        ),
        checkpoint=hf_file(
            _KIM_REPO,
            _KIM_REV,
            "MelBandRoformer.ckpt",
            "87201f4d31afb5bc79993230fc49446918425574db48c01c405e44f365c7559e",
            913106900,
        ),
        license=(
            'MIT: the "license: mit" tag on huggingface.co/KimberleyJSN/melbandroformer (the '
            "model card has no other text)"
        ),
        license_class="permissive",
        weights_source="Kimberley Jensen (KimberleyJSN), Hugging Face; config from ZFTurbo's MSST",
        source_url=f"https://huggingface.co/{_KIM_REPO}",
        quality="vocals 10.98 dB SDR on MVSep Multisong (MSST's table); not measured by demixer",
        scores=(multisong("vocals", 10.98), separator_median("vocals", 12.60, 11)),
        pin_sources=(
            MELBAND_INFER,
            "https://github.com/shimabox/Bunri/blob/778353b0d3e5a924560d92bff221ebb4a8b128d4/"
            "MODEL_LICENSES.md (the Hugging Face file, hashed; same digest)",
            f"config: git blob f7f511025573acaa7a53f75c957b878c0aaa8205 at {MSST} commit "
            f"{MSST_COMMIT}; SHA-256 computed from that blob",
        ),
    ),
    msst(
        "bs-roformer-vocals-1297",
        arch="bs_roformer",
        stems=("vocals", "other"),
        description="viperx's BS-RoFormer (the '1297' model): vocals and the rest (other).",
        config=file(
            "model_bs_roformer_ep_317_sdr_12.9755.yaml",
            raw(
                "ZFTurbo/Music-Source-Separation-Training",
                MSST_COMMIT,
                "configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml",
            ),
            "42e5635ceab7287b83d9591c9880966f0b61cff26a0a40a29d236bacb32e5f2c",
            1881,
        ),
        checkpoint=file(
            "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
            UVR_RELEASE + "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
            "5b84f37e8d444c8cb30c79d77f613a41c05868ff9c9ac6c7049c00aefae115aa",
            639331213,
        ),
        license=(
            "Not stated: published in UVR's model releases (TRvlvr/model_repo), which carry no "
            "licence and empty release notes; trained by viperx"
        ),
        license_class="not stated",
        weights_source="viperx, published in UVR's model releases; config from ZFTurbo's MSST",
        source_url=UVR_RELEASES_PAGE,
        quality="vocals 10.87 dB SDR on MVSep Multisong (MSST's table); not measured by demixer",
        scores=(multisong("vocals", 10.87), separator_median("vocals", 11.77, 40)),
        pin_sources=(
            f"checkpoint: {CLEANSPLIT}, SHA-256 and size",
            "checkpoint: the Git LFS pointer (oid sha256 and size) of a copy uploaded to Hugging "
            "Face, https://huggingface.co/datasets/SayanoAI/RVC-Studio/commit/"
            "42e886c9642a83b51ae34a75fa9d76fad76bd9bc",
            "checkpoint: the same SHA-256 recorded by several other public projects (found in a "
            "code index; not citable by URL here)",
            f"config: git blob 135a051897dee27285ac46ee350afe1e1ec02011 at {MSST} commit "
            f"{MSST_COMMIT}; SHA-256 computed from that blob",
        ),
    ),
    msst(
        "mel-roformer-inst-becruily",
        arch="mel_band_roformer",
        stems=("instrumental", "vocals"),
        description="becruily's Mel-Band RoFormer trained for the instrumental (and vocals).",
        config=file(
            "config_melband_roformer_instrumental_becruily.yaml",
            politrees_config("Roformer/MelBand/config_melband_roformer_instrumental_becruily.yaml"),
            "a222235643d329817a1123d82d8eb38392d919e90ed597e053de49c092d3b442",
            1736,
        ),
        checkpoint=hf_file(
            _INST_REPO,
            _INST_REV,
            "mel_band_roformer_instrumental_becruily.ckpt",
            "a8da6632a1c25efb1c9be783ce9ea367d226d4b918cd6c3717c8b1d7a396041d",
            913106900,
        ),
        license="Not stated (no licence on huggingface.co/becruily/mel-band-roformer-instrumental)",
        license_class="not stated",
        weights_source="becruily, Hugging Face; config as mirrored by Politrees/UVR_resources",
        source_url=f"https://huggingface.co/{_INST_REPO}",
        quality="instrumental 15.36 dB median SDR, 10 MUSDB18 tracks (audio-separator's run)",
        scores=(
            separator_median("instrumental", 15.36, 10),
            separator_median("vocals", 10.75, 10),
        ),
        pin_sources=(
            MELBAND_INFER,
            "config: git blob 862010f34a3765fa1ac9f22c04ba74042b2fd086 at "
            f"https://github.com/Politrees/UVR_resources commit {POLITREES_COMMIT}; SHA-256 "
            "computed from that blob; the same bytes are in SUC-DriverOld/MSST-WebUI's history "
            "(configs_backup/vocal_models/config_instrumental_becruily.yaml)",
        ),
    ),
    msst(
        "mel-roformer-vocals-becruily",
        arch="mel_band_roformer",
        stems=("vocals", "other"),
        description="becruily's Mel-Band RoFormer trained for the vocals (and the rest, other).",
        config=file(
            "config_melband_roformer_vocals_becruily.yaml",
            politrees_config("Roformer/MelBand/config_melband_roformer_vocals_becruily.yaml"),
            "186792a36db251fc5834a883c519b609ca80abbd2bfc4668eea43ee3a4223985",
            1723,
        ),
        checkpoint=hf_file(
            _VOC_REPO,
            _VOC_REV,
            "mel_band_roformer_vocals_becruily.ckpt",
            "a05961310cc55fbb901290c2e8be02682942f73522b6ac76bf2ec11e347ed95a",
            913107578,
        ),
        license=f"Not stated (no licence on huggingface.co/{_VOC_REPO})",
        license_class="not stated",
        weights_source="becruily, Hugging Face; config as mirrored by Politrees/UVR_resources",
        source_url=f"https://huggingface.co/{_VOC_REPO}",
        quality="no published figure for this file; not measured by demixer",
        scores=(),
        pin_sources=(
            f"checkpoint and config: {_MELBAND_INFER_GUITAR} (the checkpoint's digest read from "
            "the Hugging Face LFS pointer, the config's from its bytes, as "
            "config_mel_band_roformer_vocals_becruily.yaml; sizes too)",
            f"checkpoint: {MSST_WEBUI_MODELS} (SHA-256 and size of its copy in Sucial/MSST-WebUI "
            "on Hugging Face)",
            f"checkpoint: the same SHA-256 pinned at revision {_VOC_REV} by several public "
            "projects that download it (found in a code index; not citable by URL here)",
            "config: git blob 2d42333851e31c9e5747d818efec365921358a7c at "
            f"https://github.com/Politrees/UVR_resources commit {POLITREES_COMMIT}; SHA-256 "
            "computed from that blob",
        ),
    ),
    msst(
        "mel-roformer-karaoke-becruily",
        arch="mel_band_roformer",
        stems=("vocals", "instrumental"),
        description="becruily's karaoke model: lead vocals vs. everything else (backing too).",
        config=hf_file(
            _KARA_REPO,
            _KARA_REV,
            "config_karaoke_becruily.yaml",
            "cd37b0dcc285fc22d88090415722ac7127ee1d9ea2f3346c3b8d8fcc61e0c74b",
            1724,
        ),
        checkpoint=hf_file(
            _KARA_REPO,
            _KARA_REV,
            "mel_band_roformer_karaoke_becruily.ckpt",
            "d3aa262ac01df870b9fc033e9c7b6cad33fe04fc9c148b6c40841326a515a0e0",
            1719139254,
        ),
        license=(
            'Not stated in the repository; in its discussion #1 ("Under what license is this '
            'model released?") the author answered: "You can use the model freely as long as '
            "it's not commercial use.\""
        ),
        license_class="non-commercial",
        weights_source="becruily, Hugging Face",
        source_url=f"https://huggingface.co/{_KARA_REPO}",
        quality="no published figure for this file; not measured by demixer",
        scores=(),
        pin_sources=(
            MELBAND_INFER,
            "config: git blob 58cd1747a53d1695128e732aa7aa6802cb77db70 at "
            f"https://github.com/Politrees/UVR_resources commit {POLITREES_COMMIT} holds the "
            "same bytes; SHA-256 computed from that blob",
        ),
    ),
    msst(
        "mel-roformer-guitar-becruily",
        arch="mel_band_roformer",
        stems=("guitar", "other"),
        description=(
            "becruily's Mel-Band RoFormer guitar model: the guitars (electric and acoustic) and "
            "the rest without them."
        ),
        config=hf_file(
            _GUITAR_REPO,
            _GUITAR_REV,
            "config_guitar_becruily.yaml",
            "b681c3f886251b04b666b3f06e87ce65d7ec610e40b5d75915c01782e5444b0e",
            1411,
        ),
        checkpoint=hf_file(
            _GUITAR_REPO,
            _GUITAR_REV,
            "becruily_guitar.ckpt",
            "83472bbf125774af5282d2e0b86df89eaf2dd45e8a4ec8d68e820ebf3e42a83c",
            45142183,
        ),
        license=(
            "Not stated in the repository; in its discussion #9 the author answered that it is "
            '"generally free to use as long as it\'s non commercial"'
        ),
        license_class="non-commercial",
        weights_source="becruily, Hugging Face",
        source_url=f"https://huggingface.co/{_GUITAR_REPO}",
        quality="no published figure for this file; not measured by demixer",
        scores=(),
        pin_sources=(
            f"checkpoint and config: {_MELBAND_INFER_GUITAR} (the checkpoint's digest read from "
            "the Hugging Face LFS pointer, the config's from its bytes; sizes too)",
            "checkpoint and config: the same two SHA-256 digests, at the same revision, pinned "
            "by other projects (found in a code index; not citable by URL here), one of which "
            "also downloaded the checkpoint and measured its size",
        ),
    ),
    msst(
        "bs-roformer-karaoke-frazer",
        arch="bs_roformer",
        stems=("vocals", "instrumental"),
        description="frazer and becruily's BS-RoFormer karaoke model: lead vocals vs. the rest.",
        config=hf_file(
            _BS_KARA_REPO,
            _BS_KARA_REV,
            "config_karaoke_frazer_becruily.yaml",
            "1d3b58b473025183d0d3c91e7a444cb5f1418d9f34e8f46b8d2fb10d2cc8ab34",
            1903,
        ),
        checkpoint=hf_file(
            _BS_KARA_REPO,
            _BS_KARA_REV,
            "bs_roformer_karaoke_frazer_becruily.ckpt",
            "eb90ee24c1154d83fbcfd27e96182f19e061557cc6e4746953125e08c29389f9",
            204436907,
        ),
        license=(
            "Not stated: the projects that pin these files record no licence for them "
            "(none was found on the model page as they quote it)"
        ),
        license_class="not stated",
        weights_source="frazer and becruily, Hugging Face",
        source_url=f"https://huggingface.co/{_BS_KARA_REPO}",
        quality="no published figure for this file; not measured by demixer",
        scores=(),
        pin_sources=(
            "checkpoint and config: https://github.com/openmirlab/bs-roformer-infer/blob/"
            "04cfa4be2d04ad5164c6f7e97ff31f37b0b162fe/src/bs_roformer/data/checksums.json "
            "(SHA-256 and size of each; the checkpoint's from its Hugging Face LFS pointer)",
            "checkpoint and config: the same two SHA-256 digests, with the Hugging Face revision "
            f"{_BS_KARA_REV}, in another project's model registry found through a code index, "
            "and the checkpoint's in several more projects' download lists",
        ),
    ),
    msst(
        "mel-roformer-dereverb-anvuew",
        arch="mel_band_roformer",
        stems=("noreverb", "reverb"),
        description="anvuew's Mel-Band RoFormer de-reverb: the dry sound and its reverb.",
        config=hf_file(
            _VERB_REPO,
            _VERB_REV,
            "dereverb_mel_band_roformer_anvuew.yaml",
            "66963a9d60756076506a230b4e503c553a3beb7b4e9a10e6bcc73dee9dbd4866",
            1846,
        ),
        checkpoint=hf_file(
            _VERB_REPO,
            _VERB_REV,
            "dereverb_mel_band_roformer_anvuew_sdr_19.1729.ckpt",
            "9262877b87e9ebb0fb808a456b0a411fa677f5df31c8383c1254af531c078970",
            913107578,
        ),
        license="GPL-3.0 (the licence tag on huggingface.co/anvuew/dereverb_mel_band_roformer)",
        license_class="copyleft",
        weights_source="anvuew, Hugging Face",
        source_url=f"https://huggingface.co/{_VERB_REPO}",
        quality="19.17 dB SDR on the author's own validation set (in the file name)",
        scores=(
            Score(
                "noreverb",
                19.17,
                "SDR",
                "the author's validation set (figure in the file name)",
                f"https://huggingface.co/{_VERB_REPO}",
            ),
        ),
        pin_sources=(
            MELBAND_INFER,
            "config: the same bytes are in SUC-DriverOld/MSST-WebUI's history "
            "(configs_backup/dereverb_mel_band_roformer_anvuew.yaml, git blob "
            "5a96f4388b696daebc2e35dd185af1daadc14753); SHA-256 computed from that blob",
        ),
    ),
    msst(
        "mel-roformer-denoise-aufr33",
        arch="mel_band_roformer",
        stems=("dry", "other"),
        description="aufr33's Mel-Band RoFormer denoiser: the clean signal (dry) and the noise.",
        config=file(
            "config_melband_roformer_denoise_aufr33_sdr_27.9959.yaml",
            politrees_config(
                "Roformer/MelBand/config_melband_roformer_denoise_aufr33_sdr_27.9959.yaml"
            ),
            "5d7d83b2e9d232da60941b717b0abdc345155d45cff3f79715cdb2790ba18c36",
            1621,
        ),
        checkpoint=hf_file(
            _NOISE_REPO,
            _NOISE_REV,
            "denoise_mel_band_roformer_aufr33_sdr_27.9959.ckpt",
            "7c1c39191edc34e942ca7f2346ce6b6c0e1208a5f76349ffce6f696bd12910de",
            913097300,
        ),
        license=(
            "Not stated (aufr33; published on ZFTurbo's MSST release v.1.0.7, rehosted on "
            "Hugging Face by poiqazwsx, neither with a licence)"
        ),
        license_class="not stated",
        weights_source="aufr33; the copy on Hugging Face by poiqazwsx",
        source_url=f"{MSST}/releases/tag/v.1.0.7",
        quality="28.00 dB SDR on the author's own validation set (in the file name)",
        scores=(
            Score(
                "dry",
                27.9959,
                "SDR",
                "the author's validation set (figure in the file name)",
                MSST_TABLE,
            ),
        ),
        pin_sources=(
            MELBAND_INFER,
            "config: git blob 265e19c806778d7b2d5ffdaef9e3d503a6dba3f1 at "
            f"https://github.com/Politrees/UVR_resources commit {POLITREES_COMMIT}; SHA-256 "
            "computed from that blob",
        ),
    ),
    msst(
        "mel-roformer-crowd-aufr33",
        arch="mel_band_roformer",
        stems=("crowd", "other"),
        description=(
            "aufr33 and viperx's Mel-Band RoFormer crowd remover: a live recording's crowd "
            "(cheers, applause, singing along) and the rest without it."
        ),
        config=file(
            "config_melband_roformer_crowd_aufr33_viperx_sdr_8.7144.yaml",
            politrees_config(
                "Roformer/MelBand/config_melband_roformer_crowd_aufr33_viperx_sdr_8.7144.yaml"
            ),
            "029e5dce3abae9d9895ea19449c2b1fe749417437751676474affe255846d0de",
            1621,
        ),
        checkpoint=file(
            "mel_band_roformer_crowd_aufr33_viperx_sdr_8.7144.ckpt",
            hf(
                "Politrees/UVR_resources",
                "main",
                "models/Roformer/MelBand/mel_band_roformer_crowd_aufr33_viperx_sdr_8.7144.ckpt",
            ),
            "ca8799531fe51c94172cc047226209ed48bf7d8c02e04671795a15d2a1c318af",
            913096801,
        ),
        license=(
            "Not stated by its authors (aufr33 and viperx; published on ZFTurbo's MSST "
            "release v.1.0.4 without a licence); the Politrees/UVR_resources mirror on Hugging "
            "Face is tagged MIT by its uploader, not by the authors"
        ),
        license_class="not stated",
        weights_source="aufr33 and viperx, as mirrored by Politrees/UVR_resources (Hugging Face)",
        source_url=f"{MSST}/releases/tag/v.1.0.4",
        quality=(
            "5.99 dB SDR (crowd) in MSST's pretrained-model table, test set not named there; "
            "8.71 in the file name, the authors' own validation set; not measured by demixer"
        ),
        scores=(
            Score(
                "crowd",
                5.99,
                "SDR",
                "not named (MSST's pretrained-model table)",
                MSST_TABLE,
            ),
        ),
        pin_sources=(
            f"checkpoint: {MELBAND_INFER}, for this mirror's URL (its overrides.json); one "
            "source: no second public record of this file's digest was found",
            "config: git blob 7e44ef94c71082af3a619c9b439f808ae8eb3e1c at "
            f"https://github.com/Politrees/UVR_resources commit {POLITREES_COMMIT}; SHA-256 "
            "computed from that blob (one source)",
        ),
    ),
    msst(
        "mel-roformer-aspiration-sucial",
        arch="mel_band_roformer",
        stems=("aspiration", "other"),
        description=(
            "Sucial's Mel-Band RoFormer for breaths: the aspiration (breathing) in a recording, "
            "and the rest without it."
        ),
        config=hf_file(
            _BREATH_REPO,
            _BREATH_REV,
            "config_aspiration_mel_band_roformer.yaml",
            "1944ff2915dcfce1309fd1d97d931d8da1d1c61392ec0ece2a0f2ad704e2c144",
            1932,
        ),
        checkpoint=hf_file(
            _BREATH_REPO,
            _BREATH_REV,
            "aspiration_mel_band_roformer_sdr_18.9845.ckpt",
            "9e791258c866c6c8da66052693d8cc3b64f1f42c01e052dbdc570cd278380cc5",
            835983746,
        ),
        license=f"CC-BY-NC-SA-4.0 (the licence tag on huggingface.co/{_BREATH_REPO})",
        license_class="non-commercial",
        weights_source="Sucial (SUC-DriverOld), Hugging Face",
        source_url=f"https://huggingface.co/{_BREATH_REPO}",
        quality=(
            "aspiration 9.86 dB SDR on the author's 17 validation songs (the model card); not "
            "measured by demixer"
        ),
        scores=(
            Score(
                "aspiration",
                9.8554,
                "SDR",
                "the author's 17 validation songs (model card)",
                f"https://huggingface.co/{_BREATH_REPO}",
            ),
            Score(
                "other",
                28.1136,
                "SDR",
                "the author's 17 validation songs (model card)",
                f"https://huggingface.co/{_BREATH_REPO}",
            ),
        ),
        pin_sources=(
            f"checkpoint and config: {_MELBAND_INFER_GUITAR} (the checkpoint's digest read from "
            "the Hugging Face LFS pointer, the config's from its bytes; sizes too)",
            f"checkpoint: {MSST_WEBUI_MODELS} (SHA-256 and size of its copy in Sucial/MSST-WebUI "
            "on Hugging Face)",
            "config: one source for its digest (the list above); its size is the 1.93 kB "
            f"Hugging Face lists at revision {_BREATH_REV}",
        ),
    ),
    msst(
        "bs-roformer-male-female",
        arch="bs_roformer",
        stems=("male", "female"),
        description=(
            "aufr33's BS-RoFormer: male and female voices apart, from a vocals stem "
            "(the male-female recipe takes the vocals first)."
        ),
        config=file(
            "config_chorus_male_female_bs_roformer.yaml",
            politrees_config("Roformer/BandSplit/config_bs_roformer_chorus_male_female.yaml"),
            "363ef6bef5f0fd89b69e6e0f90dcc102dec6aaeb6e55790cae1796bebdf5097e",
            1847,
        ),
        checkpoint=file(
            "bs_roformer_male_female_by_aufr33_sdr_7.2889.ckpt",
            hf(
                "Politrees/UVR_resources",
                _MALE_FEMALE_REV,
                "models/Roformer/BandSplit/bs_roformer_male_female_by_aufr33_sdr_7.2889.ckpt",
            ),
            "3cf11736d1b42a11ae55d8299316585921477dd2a671b24b663660846ca9861b",
            527119779,
        ),
        license=(
            "Not stated by its author (aufr33); the Politrees/UVR_resources mirror on Hugging "
            "Face is tagged MIT by its uploader, not by the author"
        ),
        license_class="not stated",
        weights_source="aufr33, as mirrored by Politrees/UVR_resources (Hugging Face)",
        source_url=f"https://huggingface.co/Politrees/UVR_resources/commit/{_MALE_FEMALE_REV}",
        quality=(
            "7.29 dB SDR in its file name, on its author's own validation set (not published); "
            "not measured by demixer"
        ),
        scores=(),
        pin_sources=(
            "checkpoint: the Git LFS pointer (oid sha256 and size) in Politrees/UVR_resources's "
            f"Hugging Face commit {_MALE_FEMALE_REV}",
            "checkpoint and config: https://github.com/openmirlab/bs-roformer-infer/blob/"
            "04cfa4be2d04ad5164c6f7e97ff31f37b0b162fe/src/bs_roformer/data/checksums.json "
            "(the CHANGELOG.md of that commit says the checkpoint was checked byte for byte "
            "against a second mirror, Sucial/MSST-WebUI's)",
            "config: git blob eab8413f38d13a0ee021fd752c85fb20b65a376f at "
            f"https://github.com/Politrees/UVR_resources commit {POLITREES_COMMIT}; SHA-256 "
            "computed from that blob",
        ),
    ),
    msst(
        "mel-roformer-deecho-sucial",
        arch="mel_band_roformer",
        stems=("dry", "no_dry"),
        description=(
            "Sucial's Mel-Band RoFormer de-reverb and de-echo (v2): the dry sound, and the "
            "reverb and echo it took off."
        ),
        config=file(
            "config_dereverb-echo_mel_band_roformer_sdr_13.4843_v2.yaml",
            politrees_config(
                "Roformer/MelBand/config_melband_roformer_dereverb-echo_sdr_13.4843_v2.yaml"
            ),
            "9abd9b811b432beca3e6974a31eb3e9c2c72d3f4d7297473cce6a4721ba135c1",
            1106,
        ),
        checkpoint=hf_file(
            _ECHO_REPO,
            _ECHO_REV,
            "dereverb_echo_mbr_v2_sdr_dry_13.4843.ckpt",
            "396432f5af25992fe82d0286634bd879027c073721db6ab10199e75459708b9f",
            455862568,
        ),
        license=f"CC-BY-NC-SA-4.0 (the licence tag on huggingface.co/{_ECHO_REPO})",
        license_class="non-commercial",
        weights_source="Sucial (SUC-DriverOld), Hugging Face",
        source_url=f"https://huggingface.co/{_ECHO_REPO}",
        quality="13.48 dB SDR (dry) on the author's own validation set (in the file name)",
        scores=(
            Score(
                "dry",
                13.4843,
                "SDR",
                "the author's validation set (figure in the file name)",
                f"https://huggingface.co/{_ECHO_REPO}",
            ),
        ),
        pin_sources=(
            # The pin list names the author's file only from this later commit; at MELBAND_INFER's
            # it lists the Politrees copy's name alone.
            "checkpoint: https://github.com/openmirlab/melband-roformer-infer/blob/"
            "cae90e4ade45e91ce4e7b8d9f887b75d07bcbe90/src/mel_band_roformer/data/checksums.json "
            "(digests read from the Hugging Face LFS pointers): the same SHA-256 and size for the "
            "author's file and for the copy on Hugging Face's Politrees/UVR_resources "
            "(dereverb-echo_mel_band_roformer_sdr_13.4843_v2.ckpt)",
            "checkpoint: the same SHA-256 recorded by a project that ran the model as "
            "'DeReverb-Echo V2' (found in a code index; not citable by URL here)",
            "config: git blob b9ed3ca2589954b800872e65c72b2eff115237ac at "
            f"https://github.com/Politrees/UVR_resources commit {POLITREES_COMMIT}; SHA-256 "
            "computed from that blob (one source)",
        ),
    ),
    msst(
        "bs-roformer-sw-6stems",
        arch="bs_roformer",
        stems=("bass", "drums", "other", "vocals", "guitar", "piano"),
        description=(
            "The BS-RoFormer 'SW' six-stem model: vocals, drums, bass, guitar, piano and the "
            "rest (other)."
        ),
        config=file(
            "BS-Rofo-SW-Fixed.yaml",
            politrees_config("Roformer/BandSplit/config_BandSplit-Roformer_SW_by-jarredou.yaml"),
            "f9fada9f94e5ba2d2e4600196299459294bc5f532b314c209cc156ac63e4329b",
            4613,
        ),
        checkpoint=hf_file(
            _SW_REPO,
            _SW_REV,
            "BS-Rofo-SW-Fixed.ckpt",
            "24e7d35ee9c64415673d3fd33e06a67cac2c103c5df6267ba1576459c775916e",
            699412152,
        ),
        license=(
            "Not stated: no licence on either host, and its trainer is not named (its first "
            "host, jarredou, is recorded as having re-keyed it to load in MSST, not trained it)"
        ),
        license_class="not stated",
        weights_source=(
            "unknown trainer; re-keyed for MSST by jarredou; re-hosted by enerjazzer (Hugging Face)"
        ),
        source_url=f"https://huggingface.co/{_SW_REPO}",
        quality="no published figure; not measured by demixer",
        scores=(),
        pin_sources=(
            f"checkpoint and config: {_BS_INFER} (the checkpoint's digest read from the Hugging "
            "Face LFS pointer and checked against two downloaded copies; the config's from "
            "the remote file's bytes)",
            f"checkpoint: {CLEANSPLIT} (the same SHA-256 and size, and the note that the first "
            "host's account is deleted and this re-host is hash-identical)",
            "checkpoint and config: the same two SHA-256 digests, pinned for both hosts' URLs "
            "by a project whose catalogue records their summed Content-Length, 699,416,765 "
            "bytes, the two sizes above added (found in a code index; not citable by URL here)",
            "config: git blob 12564e347f6f244f81d948ab60d34f7196a8627f at "
            f"https://github.com/Politrees/UVR_resources commit {POLITREES_COMMIT}; SHA-256 "
            "computed from that blob (the same bytes as the model's own host's file)",
        ),
    ),
    msst(
        "mel-roformer-karaoke-aufr33",
        arch="mel_band_roformer",
        stems=("vocals", "instrumental"),
        description=(
            "aufr33 and viperx's Mel-Band RoFormer karaoke model: lead vocals vs. everything "
            "else (backing vocals too); the karaoke model UVR and audio-separator list."
        ),
        config=file(
            "config_melband_roformer_karaoke_aufr33_viperx_sdr_10.1956.yaml",
            politrees_config(
                "Roformer/MelBand/config_melband_roformer_karaoke_aufr33_viperx_sdr_10.1956.yaml"
            ),
            "b35077d94861f068097cce1a5e54633c055e7dcc2613eade4e4dc7c7c9c3f48b",
            1726,
        ),
        checkpoint=file(
            "mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt",
            UVR_RELEASE + "mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt",
            "1de20d459332fe8869aeb01327a31df0032262706e1365114e852dc271779813",
            913096801,
        ),
        license=(
            "Not stated by its authors (aufr33 and viperx); distributed in UVR's model "
            'releases, whose README says: "For all third-party application developers who '
            "wish to use our models, please honor the MIT license by providing credit to UVR "
            'and its developers."'
        ),
        license_class="not stated",
        weights_source="aufr33 and viperx, UVR's model releases",
        source_url=UVR_RELEASES_PAGE,
        quality=(
            "10.20 dB SDR in the file name, the authors' own validation set (not named); not "
            "measured by demixer"
        ),
        scores=(),
        pin_sources=(
            f"checkpoint: {MSST_WEBUI_MODELS} (SHA-256 and size of its copy in Sucial/MSST-WebUI "
            "on Hugging Face)",
            "checkpoint: the same SHA-256 with 913,096,801 bytes, pinned for this release asset "
            "and for other uploads by several public projects that download it (found in a code "
            "index; not citable by URL here)",
            "config: git blob b88403c926bc5957a54ba90271f0cced47c8366f at "
            f"https://github.com/Politrees/UVR_resources commit {POLITREES_COMMIT}; SHA-256 "
            "computed from that blob, the digest and size (1,726 bytes) other projects pin for "
            "UVR's release copy, mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956_config.yaml, "
            "which audio-separator fetches",
        ),
    ),
    msst(
        "bs-roformer-4stems-zfturbo",
        arch="bs_roformer",
        stems=("drums", "bass", "other", "vocals"),
        description="ZFTurbo's BS-RoFormer trained on MUSDB18-HQ: 4 stems.",
        config=file(
            "config_bs_roformer_384_8_2_485100.yaml",
            raw(
                "TRvlvr/application_data",
                UVR_DATA_COMMIT,
                "mdx_model_data/mdx_c_configs/config_bs_roformer_384_8_2_485100.yaml",
            ),
            "61992c9b4959091f70120626e9c3d870effa5ff2bf584426df918ca0430fa1ca",
            4566,
        ),
        checkpoint=file(
            "model_bs_roformer_ep_17_sdr_9.6568.ckpt",
            f"{MSST}/releases/download/v1.0.12/model_bs_roformer_ep_17_sdr_9.6568.ckpt",
            "3e9daecd70aaed5b5a0d1f861cc4d77eaa45afb3fc6301b1cf32c1be0f5868fb",
            527385512,
        ),
        license=(
            "Not stated for the weights (a release asset of ZFTurbo/Music-Source-Separation-"
            "Training, whose code is MIT)"
        ),
        license_class="not stated",
        weights_source="Roman Solovyev (ZFTurbo), MSST release v1.0.12",
        source_url=f"{MSST}/releases/tag/v1.0.12",
        quality="MUSDB18-HQ test: 9.65 dB mean SDR (MSST's table); not measured by demixer",
        scores=(
            Score("mean", 9.65, "SDR", "MUSDB18-HQ test", MSST_TABLE),
            Score("vocals", 11.08, "SDR", "MUSDB18-HQ test", MSST_TABLE),
            Score("drums", 11.61, "SDR", "MUSDB18-HQ test", MSST_TABLE),
            Score("bass", 8.48, "SDR", "MUSDB18-HQ test", MSST_TABLE),
            Score("other", 7.44, "SDR", "MUSDB18-HQ test", MSST_TABLE),
            multisong("mean", 9.38),
        ),
        pin_sources=(
            f"checkpoint: {_BS_INFER} (SHA-256 and size)",
            "checkpoint: the same SHA-256 with 527,385,512 bytes, pinned for this release asset "
            "by several public projects that download it (found in a code index; not citable by "
            "URL here)",
            "config: git blob f4eec01c9350d0015fc0652bbd5ee16bdfa32e28 at "
            f"https://github.com/TRvlvr/application_data commit {UVR_DATA_COMMIT}, UVR's copy "
            "of the release config (its instruments capitalised; the network's options those of "
            "MSST's config_musdb18_bs_roformer_384_8_2_485100_sage.yaml less sage_attention); "
            "SHA-256 computed from that blob",
        ),
    ),
)
