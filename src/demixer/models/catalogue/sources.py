"""What the catalogue entries are built from: hosts, pinned revisions, the records that
corroborate each digest, the published tables, and the entry shapes (MSST, MDX-Net, VR)."""

from __future__ import annotations

from demixer.models.spec import LicenseClass, ModelSpec, Score, WeightFile

__all__ = [
    "CLEANSPLIT",
    "INST_HQ_3_MD5",
    "INST_HQ_4_MD5",
    "KIM_VOCAL_2_MD5",
    "MDX_NET_RECORDS",
    "MELBAND_INFER",
    "MSST",
    "MSST_COMMIT",
    "MSST_TABLE",
    "MSST_WEBUI_COMMIT",
    "MSST_WEBUI_MODELS",
    "POLITREES_COMMIT",
    "SEPARATOR_SCORES",
    "UVR_DATA_COMMIT",
    "UVR_LICENSE",
    "UVR_RELEASE",
    "UVR_RELEASES_PAGE",
    "file",
    "hf",
    "hf_file",
    "mdx_net",
    "msst",
    "multisong",
    "politrees_config",
    "raw",
    "separator_median",
    "vr",
]

MSST = "https://github.com/ZFTurbo/Music-Source-Separation-Training"
MSST_COMMIT = "ccc011abf7f89dd7922bb2888d48493b575c0289"
MSST_TABLE = f"{MSST}/blob/{MSST_COMMIT}/docs/pretrained_models.md"
UVR_RELEASE = "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
UVR_DATA_COMMIT = "3826b05b570dbd4fbedbc807758803b35348ba1b"
POLITREES_COMMIT = "37312b3b58ffd8c7c5faf104d33631730319fb59"
SEPARATOR_SCORES = (
    "https://github.com/nomadkaraoke/python-audio-separator/blob/"
    "0a644dbb07d94a7e747d5265e3abbaf600459449/audio_separator/models-scores.json"
)
# Independent records of full SHA-256 digests (and sizes) for files named below.
MELBAND_INFER = (
    "https://github.com/openmirlab/melband-roformer-infer/blob/"
    "f771bc32a562863913ea785213b2bdeea366a775/src/mel_band_roformer/data/checksums.json"
    " (digests read from the Hugging Face LFS pointers)"
)
CLEANSPLIT = (
    "https://github.com/shipking-ai/CleanSplit/blob/42daeceb010d98a50fadba995b34621f25def6f8/"
    "cleansplit/models/checkpoints.py (hashed from downloaded copies)"
)
UVR_RELEASES_PAGE = "https://github.com/TRvlvr/model_repo/releases/tag/all_public_uvr_models"
# MSST-WebUI's model list: the SHA-256 and size of each file it serves from its own Hugging Face
# copies (Sucial/MSST-WebUI), uploaded apart from the releases demixer fetches.
MSST_WEBUI_COMMIT = "2aee2cc20b55ab6b080cd4c7bc0e26db7d57a2ee"
MSST_WEBUI_MODELS = (
    f"https://github.com/SUC-DriverOld/MSST-WebUI/blob/{MSST_WEBUI_COMMIT}/data_backup/"
    "models_info.json"
)
# The MDX-Net ONNX files: the UVR release assets carry no published digest, and the projects
# that recorded these full SHA-256 digests (and sizes) after downloading the assets or their
# Hugging Face mirrors (seanghay/uvr_models, Politrees/UVR_resources) were found through a
# code-search index that does not name repositories: see the model cards.
MDX_NET_RECORDS = (
    "full SHA-256 and size recorded by at least five independent public projects that hashed "
    "the UVR release asset or its Hugging Face mirrors (found in a code index; not citable by "
    "URL here), e.g. one records '66759214 bytes' after streaming the release asset"
)
# UVR's model_data.json keys: MD5 of a file's last 10 000 KiB. Other projects record each one
# next to the SHA-256 above, which ties UVR's parameters to the very file pinned here.
KIM_VOCAL_2_MD5 = "970b3f9492014d18fefeedfe4773cb42"
INST_HQ_3_MD5 = "55657dd70583b0fedfba5f67df11d711"
INST_HQ_4_MD5 = "0f2a6bc5b49d87d64728ee40e23bceb1"
# UVR's README, the only licence statement for the models UVR publishes.
UVR_LICENSE = (
    "UVR's README: \"For all third-party application developers who wish to use our models, "
    'please honor the MIT license by providing credit to UVR and its developers."'
)


def hf(repo: str, revision: str, name: str) -> str:
    return f"https://huggingface.co/{repo}/resolve/{revision}/{name}"


def raw(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def politrees_config(path: str) -> str:
    """The raw URL of a config in Politrees/UVR_resources at :data:`POLITREES_COMMIT`;
    ``path`` under its ``UVR_resources/configs/`` (``Roformer/MelBand/...``)."""
    return raw("Politrees/UVR_resources", POLITREES_COMMIT, f"UVR_resources/configs/{path}")


def file(name: str, url: str, sha256: str, size: int) -> WeightFile:
    return WeightFile(name=name, sha256=sha256, url=url, size=size)


def hf_file(repo: str, revision: str, name: str, sha256: str, size: int) -> WeightFile:
    return file(name, hf(repo, revision, name), sha256, size)


def hint(model_id: str, megabytes: int) -> str:
    return f"fetch the weights with `demixer models pull {model_id}` (about {megabytes} MB)"


def multisong(stem: str, value: float) -> Score:
    return Score(stem, value, "Multisong SDR", "MVSep Multisong", MSST_TABLE)


def separator_median(stem: str, value: float, tracks: int) -> Score:
    """python-audio-separator's own run: median SDR over the first tracks of MUSDB18's
    training split (which some of these models may have been trained on)."""
    return Score(
        stem,
        value,
        "median SDR",
        f"{tracks} MUSDB18 train-split tracks (python-audio-separator)",
        SEPARATOR_SCORES,
    )


def msst(
    model_id: str,
    *,
    arch: str,
    stems: tuple[str, ...],
    description: str,
    config: WeightFile,
    checkpoint: WeightFile,
    license: str,
    license_class: LicenseClass,
    weights_source: str,
    source_url: str,
    quality: str,
    scores: tuple[Score, ...],
    pin_sources: tuple[str, ...],
    sample_rate: int = 44100,
) -> ModelSpec:
    megabytes = round(((checkpoint.size or 0) + (config.size or 0)) / 1e6)
    return ModelSpec(
        id=model_id,
        stems=stems,
        sample_rate=sample_rate,
        description=description,
        license=license,
        weights_source=weights_source,
        loader="demixer.models.msst:load",
        quality=quality,
        install_hint=hint(model_id, megabytes),
        weights=(config, checkpoint),
        arch=arch,
        config_name=config.name,
        license_class=license_class,
        source_url=source_url,
        scores=scores,
        pin_sources=pin_sources,
    )


def mdx_net(
    model_id: str,
    *,
    stems: tuple[str, ...],
    description: str,
    onnx: WeightFile,
    arch_params: dict[str, float | int | str],
    license: str,
    license_class: LicenseClass,
    weights_source: str,
    quality: str,
    scores: tuple[Score, ...],
    pin_sources: tuple[str, ...],
) -> ModelSpec:
    """An MDX-Net model from UVR's releases: one ``.onnx``, its STFT settings in
    ``arch_params``."""
    return _uvr_release(
        model_id, "mdx_net", onnx, stems=stems, description=description,
        arch_params=arch_params, license=license, license_class=license_class,
        weights_source=weights_source, quality=quality, scores=scores, pin_sources=pin_sources,
    )  # fmt: skip


def vr(
    model_id: str,
    *,
    stems: tuple[str, str],
    description: str,
    pth: WeightFile,
    arch_params: dict[str, float | int | str],
    license: str,
    license_class: LicenseClass,
    weights_source: str,
    quality: str,
    pin_sources: tuple[str, ...],
) -> ModelSpec:
    """A VR model from UVR's releases: one ``.pth``, its band layout and primary stem in
    ``arch_params`` (UVR's model data)."""
    return _uvr_release(
        model_id, "vr", pth, stems=stems, description=description, arch_params=arch_params,
        license=license, license_class=license_class, weights_source=weights_source,
        quality=quality, scores=(), pin_sources=pin_sources,
    )  # fmt: skip


def _uvr_release(
    model_id: str,
    arch: str,
    weights: WeightFile,
    *,
    stems: tuple[str, ...],
    description: str,
    arch_params: dict[str, float | int | str],
    license: str,
    license_class: LicenseClass,
    weights_source: str,
    quality: str,
    scores: tuple[Score, ...],
    pin_sources: tuple[str, ...],
) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        stems=stems,
        sample_rate=44100,
        description=description,
        license=license,
        weights_source=weights_source,
        loader=f"demixer.models.{arch}:load",
        quality=quality,
        install_hint=hint(model_id, round((weights.size or 0) / 1e6)),
        weights=(weights,),
        arch=arch,
        arch_params=arch_params,
        license_class=license_class,
        source_url=UVR_RELEASES_PAGE,
        scores=scores,
        pin_sources=pin_sources,
    )
