"""The catalogue's recipes: named chains of catalogue models (run by
:mod:`demixer.models.recipe`), declared as data like the model entries and reviewed the same way.

Each step keeps the stems it is trusted for and names the rest ``rest`` (its input minus them),
so a recipe's stems always add up to the input. A recipe publishes no figure of its own: its
``scores`` are the published figures of the model that makes each stem, where one exists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from demixer.models.spec import LicenseClass, ModelSpec, Score

__all__ = [
    "LOADER",
    "RECIPE_STEPS",
    "recipe_file",
    "recipe_spec",
    "recipes",
    "strictest",
    "user_recipes",
]

LOADER = "demixer.models.recipe:load"
# Most restrictive last: a recipe's weights are as free as its least free model's.
_STRICTNESS: tuple[LicenseClass, ...] = (
    "permissive",
    "copyleft",
    "not stated",
    "non-commercial",
    "research only",
)
_STEP_KEYS = frozenset({"model", "input", "keep", "rest"})


def strictest(classes: Sequence[LicenseClass]) -> LicenseClass:
    """The most restrictive of ``classes`` (``permissive`` for none)."""
    return max(classes, key=_STRICTNESS.index, default="permissive")


def _steps(definition: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validated plain copies of the step mappings (``ValueError`` naming the fault)."""
    out = []
    for i, raw in enumerate(definition):
        keep = raw.get("keep", {})
        if set(raw) - _STEP_KEYS or "model" not in raw or not isinstance(keep, Mapping):
            raise ValueError(f"step {i + 1} takes model, input, keep and rest; got {dict(raw)}")
        rest = raw.get("rest")
        out.append(
            {
                "model": str(raw["model"]),
                "input": str(raw.get("input", "mix")),
                "keep": {str(k).lower(): str(v) for k, v in keep.items()},
                "rest": None if rest is None else str(rest),
            }
        )
    if not out:
        raise ValueError("a recipe needs at least one step")
    return out


def recipe_spec(
    recipe_id: str,
    *,
    description: str,
    stems: tuple[str, ...],
    steps: Sequence[Mapping[str, Any]],
    known: Mapping[str, ModelSpec],
) -> ModelSpec:
    """A recipe as a registered model: its stems, the models it requires, their licences and
    the published figures of the models that make its stems.

    Args:
        recipe_id: the name users type (``--recipe karaoke``).
        stems: the stems it returns, in order.
        steps: the step mappings (:mod:`demixer.models.recipe`).
        known: model id -> spec of every model a step may name.

    Raises:
        ValueError: a malformed step or a model ``known`` does not have.
    """
    checked = _steps(steps)
    models = tuple(dict.fromkeys(s["model"] for s in checked))
    missing = [m for m in models if m not in known]
    if missing:
        raise ValueError(f"recipe {recipe_id!r} names unknown model(s) {', '.join(missing)}")
    specs = [known[m] for m in models]
    scores = []
    for step in checked:  # a kept stem's figure is its model's figure for that stem
        for model_stem, name in step["keep"].items():
            scores += [
                Score(name, s.value, s.metric, s.test_set, s.source)
                for s in known[step["model"]].scores
                if s.stem.lower() == model_stem and name in stems
            ]
    return ModelSpec(
        id=recipe_id,
        stems=stems,
        sample_rate=specs[0].sample_rate,
        description=description,
        license="each model's own: " + ", ".join(f"{s.id} ({s.license_class})" for s in specs),
        weights_source=f"the weights of {', '.join(models)} (see their cards)",
        loader=LOADER,
        quality=f"its models' figures ({' -> '.join(models)}); the chain is not measured yet",
        install_hint=(
            f"fetch the models it chains with `demixer models pull {recipe_id}` "
            f"({', '.join(models)})"
        ),
        requires=models,
        arch_params={"steps": checked},
        license_class=strictest([s.license_class for s in specs]),
        source_url=specs[0].source_url,
        scores=tuple(scores),
    )


_KIM = "mel-roformer-vocals-kim"
#: recipe id -> (description, stems, steps).
RECIPE_STEPS: dict[str, tuple[str, tuple[str, ...], tuple[dict[str, Any], ...]]] = {
    "karaoke": (
        "Lead and backing vocals apart: Kim's vocals, then becruily's karaoke model on them.",
        ("lead_vocals", "backing_vocals", "instrumental"),
        (
            {"model": _KIM, "input": "mix", "keep": {"vocals": "vocals"}, "rest": "instrumental"},
            {
                "model": "mel-roformer-karaoke-becruily",
                "input": "vocals",
                "keep": {"vocals": "lead_vocals"},
                "rest": "backing_vocals",
            },
        ),
    ),
    "karaoke-5hp": (
        "Lead and backing vocals apart, every model permissively licensed: Kim's vocals, then "
        "UVR's 5_HP-Karaoke (VR) on them.",
        ("lead_vocals", "backing_vocals", "instrumental"),
        (
            {"model": _KIM, "input": "mix", "keep": {"vocals": "vocals"}, "rest": "instrumental"},
            {
                "model": "vr-karaoke-5hp",
                "input": "vocals",
                "keep": {"lead_vocals": "lead_vocals"},
                "rest": "backing_vocals",
            },
        ),
    ),
    "dry-vocals": (
        "Vocals without their reverb: Kim's vocals, then anvuew's de-reverb on them.",
        ("dry_vocals", "vocals_reverb", "instrumental"),
        (
            {"model": _KIM, "input": "mix", "keep": {"vocals": "vocals"}, "rest": "instrumental"},
            {
                "model": "mel-roformer-dereverb-anvuew",
                "input": "vocals",
                "keep": {"noreverb": "dry_vocals"},
                "rest": "vocals_reverb",
            },
        ),
    ),
    "6stems": (
        "SCNet XL's four stems, then guitar and piano taken out of its other by htdemucs_6s.",
        ("vocals", "drums", "bass", "guitar", "piano", "other"),
        (
            {
                "model": "scnet-xl-ihf",
                "input": "mix",
                "keep": {"vocals": "vocals", "drums": "drums", "bass": "bass"},
                "rest": "rest",
            },
            {
                "model": "htdemucs_6s",
                "input": "rest",
                "keep": {"guitar": "guitar", "piano": "piano"},
                "rest": "other",
            },
        ),
    ),
    "drum-kit": (
        "The drum kit piece by piece: SCNet XL's drums, then aufr33 and jarredou's DrumSep "
        "on them (kick, snare, toms, hi-hat, ride, crash).",
        ("kick", "snare", "toms", "hi_hat", "ride", "crash", "drums_other", "no_drums"),
        (
            {
                "model": "scnet-xl-ihf",
                "input": "mix",
                "keep": {"drums": "drums"},
                "rest": "no_drums",
            },
            {
                "model": "mdx23c-drumsep",
                "input": "drums",
                "keep": {
                    "kick": "kick",
                    "snare": "snare",
                    "toms": "toms",
                    "hh": "hi_hat",
                    "ride": "ride",
                    "crash": "crash",
                },
                "rest": "drums_other",
            },
        ),
    ),
    "male-female": (
        "Male and female voices apart: Kim's vocals, then aufr33's male/female model on them.",
        ("male_vocals", "female_vocals", "other_vocals", "instrumental"),
        (
            {"model": _KIM, "input": "mix", "keep": {"vocals": "vocals"}, "rest": "instrumental"},
            {
                "model": "bs-roformer-male-female",
                "input": "vocals",
                "keep": {"male": "male_vocals", "female": "female_vocals"},
                "rest": "other_vocals",
            },
        ),
    ),
}


def recipes(known: Mapping[str, ModelSpec]) -> tuple[ModelSpec, ...]:
    """The catalogue's recipes over the models in ``known`` (id -> spec)."""
    return tuple(
        recipe_spec(rid, description=d, stems=stems, steps=steps, known=known)
        for rid, (d, stems, steps) in RECIPE_STEPS.items()
    )


def recipe_file(directory: Path, recipe_id: str) -> Path | None:
    """The file in ``directory`` that declares the recipe ``recipe_id``, if one does (files
    that are not recipes are passed over: :func:`user_recipes` names those)."""
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        try:
            raw = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(raw, dict) and raw.get("id") == recipe_id:
            return path
    return None


def user_recipes(directory: Path, known: Mapping[str, ModelSpec]) -> tuple[ModelSpec, ...]:
    """The user's own recipes: one JSON file each in ``directory`` (``$DEMIXER_MODEL_DIR/
    recipes/``), ``{"id", "description", "stems", "steps"}`` with steps as in the catalogue's.

    Raises:
        ValueError: a file that is not such a recipe, whose id is already taken or holds
            ``+`` or ``:`` (an ensemble's); the message names the file and the fault.
    """
    if not directory.is_dir():
        return ()
    out: list[ModelSpec] = []
    for path in sorted(directory.glob("*.json")):
        try:
            raw = json.loads(path.read_text("utf-8"))
            if not isinstance(raw, dict) or set(raw) - {"id", "description", "stems", "steps"}:
                raise ValueError("expected an object with id, description, stems and steps")
            recipe_id = str(raw["id"])
            if any(c in recipe_id for c in "+:@"):
                # Those spell an ensemble (``a+b``, ``max:a+b``, a member's weight ``a@2``):
                # such an id could not be an ensemble's member, would shadow an ensemble and
                # counts as one in metrics.
                raise ValueError(
                    f"the id {recipe_id!r} holds '+', ':' or '@', which name an ensemble's models"
                )
            if recipe_id in known or any(r.id == recipe_id for r in out):
                raise ValueError(f"the id {recipe_id!r} is already taken")
            spec = recipe_spec(
                recipe_id,
                description=str(raw.get("description") or f"{recipe_id} (your recipe)"),
                stems=tuple(str(s) for s in raw["stems"]),
                steps=raw["steps"],
                known=known,
            )
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"recipe file {path}: {exc}") from None
        out.append(spec)
    return tuple(out)
