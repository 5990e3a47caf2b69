"""UVR's VR architecture models whose files could be pinned (:mod:`demixer.models.vr`).

Each ``.pth`` is a release asset of UVR's model repository, which publishes no digest: the
full SHA-256 of each is what independent Hugging Face mirrors record for their copies (their
Git LFS pointers), the size what other projects measured of the asset or a mirror. The
parameters are UVR's model data (``TRvlvr/application_data``, ``vr_model_data/
model_data_new.json``, under the MD5 of the file's last 10 000 KiB; the older
``model_data.json`` names these models' stems ``No Other`` / ``Other``, and is not used).
"""

from __future__ import annotations

from demixer.models.catalogue.sources import (
    MSST_WEBUI_MODELS,
    UVR_DATA_COMMIT,
    UVR_LICENSE,
    UVR_RELEASE,
    file,
    vr,
)
from demixer.models.spec import ModelSpec

__all__ = ["UVR_VR"]

_MODEL_DATA = (
    "https://github.com/TRvlvr/application_data/blob/"
    f"{UVR_DATA_COMMIT}/vr_model_data/model_data_new.json"
)
_FOXJOY_LICENSE = (
    "Not stated by its author (FoxJoy, as UVR's download list credits it); distributed in "
    "UVR's model releases, whose README says: \"For all third-party application developers "
    "who wish to use our models, please honor the MIT license by providing credit to UVR and "
    'its developers."'
)


def _identity(md5: str) -> str:
    return f"UVR model data key {md5} (identity): {_MODEL_DATA}"


UVR_VR: tuple[ModelSpec, ...] = (
    vr(
        "vr-deecho-dereverb",
        stems=("noreverb", "reverb"),
        description="UVR-DeEcho-DeReverb by FoxJoy (UVR's VR architecture): takes the echo "
        "and reverb off a vocal or a mix.",
        pth=file(
            "UVR-DeEcho-DeReverb.pth",
            UVR_RELEASE + "UVR-DeEcho-DeReverb.pth",
            "e644028ec82865dc0fe082bc6fea85a43f7c71cfe375caee2da2d154aa661ee7",
            223650277,
        ),
        arch_params={"vr_model_param": "4band_v3", "primary_stem": "No Reverb"},
        license=_FOXJOY_LICENSE,
        license_class="not stated",
        weights_source="FoxJoy, UVR's model releases",
        quality="not published",
        pin_sources=(
            "SHA-256: https://huggingface.co/seanghay/uvr_models/blob/main/"
            "UVR-DeEcho-DeReverb.pth (the mirror's Git LFS pointer)",
            "SHA-256: https://huggingface.co/datasets/SayanoAI/RVC-Studio/blob/"
            "e9b45eb7cfdc84387f3a38eb19e18571ad8f3ac4/UVR/UVR-DeEcho-DeReverb.pth (the same "
            "digest, uploaded separately)",
            "SHA-256 and size: the same digest with 223650277 bytes, pinned by other public "
            "projects that download the release asset (found in a code index; not citable by "
            "URL here)",
            _identity("0fb9249ffe4ffc38d7b16243f394c0ff"),
        ),
    ),
    vr(
        "vr-de-echo-normal",
        stems=("noecho", "echo"),
        description="UVR-De-Echo-Normal by FoxJoy (UVR's VR architecture): takes the echo "
        "off a vocal or a mix, leaving its reverb.",
        pth=file(
            "UVR-De-Echo-Normal.pth",
            UVR_RELEASE + "UVR-De-Echo-Normal.pth",
            "b849dd575643b075c257fb7a96c2ef5a79d7a5e7df74a2b319ad47118f1ee769",
            127139365,
        ),
        arch_params={"vr_model_param": "4band_v3", "primary_stem": "No Echo"},
        license=_FOXJOY_LICENSE,
        license_class="not stated",
        weights_source="FoxJoy, UVR's model releases",
        quality="not published",
        pin_sources=(
            "SHA-256: https://huggingface.co/Politrees/UVR_resources/blob/main/VRArch_models/"
            "UVR-De-Echo-Normal.pth",
            "SHA-256: https://huggingface.co/seanghay/uvr_models/blob/main/UVR-De-Echo-Normal.pth",
            "SHA-256: https://huggingface.co/Blane187/all_public_uvr_models/blob/main/"
            "UVR-De-Echo-Normal.pth",
            "SHA-256 beside its Xet hash aaffa37b, whose object another project measured as "
            "127139365 bytes: https://huggingface.co/NeoPy/VoiceConversion-Models/blob/main/"
            "uvr5_models/VR/UVR-De-Echo-Normal.pth",
            _identity("f200a145434efc7dcf0cd093f517ed52"),
        ),
    ),
    vr(
        "vr-de-echo-aggressive",
        stems=("noecho", "echo"),
        description="UVR-De-Echo-Aggressive by FoxJoy (UVR's VR architecture): takes the echo "
        "off a vocal or a mix harder than the Normal model, leaving its reverb.",
        pth=file(
            "UVR-De-Echo-Aggressive.pth",
            UVR_RELEASE + "UVR-De-Echo-Aggressive.pth",
            "1bd1d79d9c5d1b17d20f96f8a9f8aff1b55a83014f70712446bf420c0188e0a0",
            127139365,
        ),
        arch_params={"vr_model_param": "4band_v3", "primary_stem": "No Echo"},
        license=_FOXJOY_LICENSE,
        license_class="not stated",
        weights_source="FoxJoy, UVR's model releases",
        quality="not published",
        pin_sources=(
            f"SHA-256 and size: {MSST_WEBUI_MODELS} (its copy on Hugging Face, Sucial/MSST-WebUI)",
            "SHA-256: the same digest checked by another project's converter for its copy from "
            "seanghay/uvr_models on Hugging Face (found in a code index; not citable by URL "
            "here)",
            "size: https://github.com/engdahlz/StemSep/blob/"
            "719386e5eb785b04cad192ec21b822e428481b94/StemSepApp/assets/"
            "catalog.runtime.bootstrap.json (an HTTP HEAD of Politrees/UVR_resources' copy: "
            "127139365 bytes)",
            _identity("6857b2972e1754913aad0c9a1678c753"),
        ),
    ),
    vr(
        "vr-denoise",
        stems=("noise", "dry"),
        description="UVR-DeNoise by FoxJoy (UVR's VR architecture): the full-size denoiser "
        "(127 MB, four bands); the noise, and the signal without it (`dry`).",
        pth=file(
            "UVR-DeNoise.pth",
            UVR_RELEASE + "UVR-DeNoise.pth",
            "5addf43ece5bddd18da9f575a02d7ffdb32342414e6ad7ac8d1dd7a04138a628",
            127139365,
        ),
        arch_params={"vr_model_param": "4band_v3", "primary_stem": "Noise"},
        license=_FOXJOY_LICENSE,
        license_class="not stated",
        weights_source="FoxJoy, UVR's model releases",
        quality="not published",
        pin_sources=(
            "SHA-256 and size: https://huggingface.co/datasets/SayanoAI/RVC-Studio/commit/"
            "d18bb6a440b0c6452fb5bb7a3885cdd2455ce5a0 (the Git LFS pointer, oid and size)",
            "SHA-256: https://huggingface.co/Sucial/MSST-WebUI/blob/main/All_Models/VR_Models/"
            "UVR-DeNoise.pth",
            "SHA-256: the same digest, checked by another public project that converted the "
            "file from https://huggingface.co/seanghay/uvr_models at revision 6f4fc0c (found "
            "in a code index; not citable by URL here)",
            "Size and UVR's hash of one file (127139365 bytes, 44c55d8b...), measured together "
            "by another public project (found in a code index; not citable by URL here)",
            _identity("44c55d8b5d2e3edea98c2b2bf93071c7"),
        ),
    ),
    vr(
        "vr-denoise-lite",
        stems=("noise", "dry"),
        description="UVR-DeNoise-Lite by FoxJoy (UVR's VR architecture): a small, fast "
        "denoiser (18 MB); the noise, and the signal without it (`dry`).",
        pth=file(
            "UVR-DeNoise-Lite.pth",
            UVR_RELEASE + "UVR-DeNoise-Lite.pth",
            "0023492fe98c406817b5253965de19ede65d1c147db015a3a428f07602e99571",
            17922277,
        ),
        arch_params={"vr_model_param": "1band_sr44100_hl1024", "primary_stem": "Noise"},
        license=_FOXJOY_LICENSE,
        license_class="not stated",
        weights_source="FoxJoy, UVR's model releases (UVR's own repository ships it too)",
        quality="not published",
        pin_sources=(
            "SHA-256: https://huggingface.co/seanghay/uvr_models/blob/main/UVR-DeNoise-Lite.pth",
            "SHA-256: https://huggingface.co/Sucial/MSST-WebUI/blob/main/All_Models/VR_Models/"
            "UVR-DeNoise-Lite.pth",
            "SHA-256 and size: https://huggingface.co/spaces/justyoung/UVR5/commit/"
            "8bd0b4b51232b382ef4a66d484559ea1c768167a (the Git LFS pointer, oid and size)",
            "SHA-256, size and UVR's hash of one file, measured together by another public "
            "project (found in a code index; not citable by URL here)",
            _identity("51ea8c43a6928ed3c10ef5cb2707d57b"),
        ),
    ),
    vr(
        "vr-karaoke-5hp",
        stems=("instrumental", "lead_vocals"),
        description="5_HP-Karaoke-UVR, UVR's VR karaoke model: the lead vocals apart, the "
        "backing vocals left in the instrumental.",
        pth=file(
            "5_HP-Karaoke-UVR.pth",
            UVR_RELEASE + "5_HP-Karaoke-UVR.pth",
            "fe00891defbb61f4261500af22f7624f1a3df8dc75fa3998d1aece02e6be4537",
            126782699,
        ),
        arch_params={"vr_model_param": "4band_v2_sn", "primary_stem": "Instrumental"},
        license=UVR_LICENSE,
        license_class="permissive",
        weights_source="UVR's developers (Anjok07, aufr33), UVR's model releases",
        quality="not published for the lead vocals",
        pin_sources=(
            "SHA-256: https://huggingface.co/fastrolling/uvr/blob/"
            "0ebf2741d46513ffcb86a8118c2e077da8b6a651/Main_Models/5_HP-Karaoke-UVR.pth",
            "SHA-256: https://huggingface.co/poiqazwsx/uvr_weights/blob/main/5_HP-Karaoke-UVR.pth",
            "SHA-256: https://huggingface.co/Sucial/MSST-WebUI/blob/main/All_Models/VR_Models/"
            "5_HP-Karaoke-UVR.pth",
            "SHA-256 and size: the same digest with 126782699 bytes, pinned by at least four "
            "other public projects that download the release asset (found in a code index; not "
            "citable by URL here)",
            _identity("f6ea8473ff86017b5ebd586ccacf156b"),
        ),
    ),
    vr(
        "vr-karaoke-6hp",
        stems=("instrumental", "lead_vocals"),
        description="6_HP-Karaoke-UVR, UVR's other VR karaoke model (another band layout "
        "than 5_HP's): the lead vocals apart, the backing vocals left in the instrumental.",
        pth=file(
            "6_HP-Karaoke-UVR.pth",
            UVR_RELEASE + "6_HP-Karaoke-UVR.pth",
            "4ce7eaaa9e56f09366b788aebf6d3a72aec8145692c56f1e090e4e7e2d7ce65f",
            126782699,
        ),
        arch_params={"vr_model_param": "3band_44100_msb2", "primary_stem": "Instrumental"},
        license=UVR_LICENSE,
        license_class="permissive",
        weights_source="UVR's developers (Anjok07, aufr33), UVR's model releases",
        quality="not published for the lead vocals",
        pin_sources=(
            "SHA-256: https://huggingface.co/datasets/SayanoAI/RVC-Studio/blob/main/UVR/"
            "6_HP-Karaoke-UVR.pth (the one mirror found recording it)",
            "SHA-256 and size: the same digest with 126782699 bytes, pinned by one other "
            "public project beside 5_HP's and UVR-DeEcho-DeReverb's pins as this catalogue "
            "has them (found in a code index; not citable by URL here)",
            _identity("6b5916069a49be3fe29d4397ecfd73fa"),
        ),
    ),
    vr(
        "vr-bve",
        stems=("backing_vocals", "no_backing_vocals"),
        description="UVR-BVE-4B_SN-44100-1, UVR's VR backing-vocal model: the backing vocals "
        "apart; on a vocals stem the rest is the lead.",
        pth=file(
            "UVR-BVE-4B_SN-44100-1.pth",
            UVR_RELEASE + "UVR-BVE-4B_SN-44100-1.pth",
            "56165bdfa0dd5df7930ff76652200dc287e1bfef622bba5c812c736dc22067fe",
            223650277,
        ),
        arch_params={"vr_model_param": "4band_v3_sn", "primary_stem": "Vocals"},
        license=(
            "Not stated (no source found names its trainer); distributed in UVR's model "
            'releases, whose README says: "For all third-party application developers '
            "who wish to use our models, please honor the MIT license by providing credit to "
            'UVR and its developers."'
        ),
        license_class="not stated",
        weights_source="UVR's model releases",
        quality="not published",
        pin_sources=(
            f"SHA-256 and size: {MSST_WEBUI_MODELS} (its copy on Hugging Face, Sucial/MSST-WebUI)",
            "SHA-256: the same digest pinned by another public project that downloads the file "
            "(found in a code index; not citable by URL here)",
            "parameters: the one backing-vocal entry in UVR's model data (key "
            f"944950a9c5963a5eb70b445d67b7068a, {_MODEL_DATA}): 4band_v3_sn, primary Vocals, "
            "v5.1 widths 64 and 128; the pinned size is that network's tensors and torch.save's "
            "372 bytes each",
        ),
    ),
)
