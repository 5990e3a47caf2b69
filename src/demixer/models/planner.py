"""Which installed model, recipe or ensemble makes a requested stem, by published figures.

Stem names differ between models (``Vocals``, ``other`` meaning "everything but the vocals" in
a 2-stem vocal model, ``noreverb``) and between the vocabularies users and vendors speak
(``lead_vocal``, ``backing vocals``, ``keys``). This module is the one place that maps both onto
demixer's stem names (:func:`canonical_stem`, :func:`produces`) and ranks what can make a stem
(:func:`rank`): the model's published figure for that stem (MVSep's Multisong SDR, the one
metric the catalogue publishes for most models), then the hand-kept order of
:data:`PREFERENCE` for models without one.
"""

from __future__ import annotations

from collections.abc import Sequence

from demixer.errors import UnknownStem, did_you_mean
from demixer.models.catalogue import SHIPPED
from demixer.models.spec import ModelSpec

__all__ = [
    "CLEANUP_STEMS",
    "COMPARABLE_METRIC",
    "PREFERENCE",
    "canonical_stem",
    "canonical_stems",
    "choose",
    "cleanup_model",
    "figure",
    "makers",
    "native_stem",
    "producers",
    "produces",
    "pull_hint",
    "rank",
]

#: The metric figures are compared in (others measure other sets and do not compare).
COMPARABLE_METRIC = "Multisong SDR"

# Best first where no figure decides (see the model cards). The 4-stem models come before every
# 2-stem one because "other" means the instruments besides vocals, drums and bass; spleeter ranks
# above the cascade (the cascade's vocals *are* spleeter's); for guitar and piano the SW
# six-stem BS-RoFormer comes before htdemucs_6s, whose authors call its piano "not working
# great" (no published figure compares the two), and becruily's guitar specialist after both
# (no published figure compares it either; it makes nothing else); becruily's vocal model
# after Kim's and viperx's (no published figure for it); the special-purpose models (karaoke,
# de-reverb, denoise, crowd, breaths) come last, each UVR VR model after the RoFormer doing its
# job (no published figure compares them), and last of all those made for one stem of a song
# (DrumSep's drums, male/female's vocals).
# Models and recipes not listed come after all of these, in registry order.
PREFERENCE = (
    "scnet-xl-ihf",
    "bs-roformer-4stems-zfturbo",
    "htdemucs_ft",
    "htdemucs",
    "bs-roformer-sw-6stems",
    "htdemucs_6s",
    "6stems",
    "mel-roformer-guitar-becruily",
    "hdemucs_mmi",
    "mel-roformer-vocals-kim",
    "bs-roformer-vocals-1297",
    "mel-roformer-vocals-becruily",
    "mdx23c-instvoc-hq",
    "mdx-net-vocals-kim-2",
    "spleeter-2stems",
    "cascade-4stems",
    "mel-roformer-inst-becruily",
    "mdx-net-inst-hq-4",
    "mdx-net-inst-hq-3",
    "karaoke",
    "karaoke-5hp",
    "dry-vocals",
    "drum-kit",
    "male-female",
    "mel-roformer-karaoke-becruily",
    "bs-roformer-karaoke-frazer",
    "mel-roformer-karaoke-aufr33",
    "vr-karaoke-5hp",
    "vr-karaoke-6hp",
    "vr-bve",
    "mel-roformer-dereverb-anvuew",
    "vr-deecho-dereverb",
    "mel-roformer-denoise-aufr33",
    "vr-denoise",
    "vr-denoise-lite",
    "mel-roformer-deecho-sucial",
    "vr-de-echo-normal",
    "vr-de-echo-aggressive",
    "mel-roformer-crowd-aufr33",
    "mel-roformer-aspiration-sucial",
    # A film's dialogue, music and effects: never a song's vocals or instruments but by name.
    "bandit-v2-dnr",
    "bandit-plus-dnr",
    # Trained on one stem (drums, vocals): on a whole song only when nothing else makes it.
    "mdx23c-drumsep",
    "bs-roformer-male-female",
    # Restoration (Apollo): the restored audio, never a stem of a song; the authors' MP3 model
    # first (its figures are published), Lew's wider universal one after.
    "apollo-lq-mp3",
    "apollo-universal-lew",
)

#: A clean-up step -> the model stem it keeps (the model's other stem is what it removes).
CLEANUP_STEMS = {"dereverb": "noreverb", "deecho": "noecho"}

#: What "everything but the vocals" is called by 2-stem vocal models.
_REST_OF_VOCALS = frozenset({"other", "instrumental", "accompaniment", "no_vocals"})

# Words users and vendors use -> demixer's stem name (after lowercasing, "-"/" " -> "_").
_SYNONYMS = {
    "vocal": "vocals",
    "voice": "vocals",
    "lead_vocal": "lead_vocals",
    "lead": "lead_vocals",
    "back_vocal": "backing_vocals",
    "back_vocals": "backing_vocals",
    "backing_vocal": "backing_vocals",
    "backing": "backing_vocals",
    "drum": "drums",
    "keys": "piano",
    "keyboard": "piano",
    "acoustic_piano": "piano",
    "guitars": "guitar",
    "electric_guitar": "guitar",
    "acoustic_guitar": "guitar",
    "dry_vocal": "dry_vocals",
    "kick_drum": "kick",
    "bass_drum": "kick",
    "snare_drum": "snare",
    "tom": "toms",
    "hh": "hi_hat",
    "hihat": "hi_hat",
    "hi_hats": "hi_hat",
    "hihats": "hi_hat",
    "male_vocal": "male_vocals",
    "female_vocal": "female_vocals",
    "no_reverb": "noreverb",
    "no_echo": "noecho",
    "no_crowd": "nocrowd",
    "no_guitar": "noguitar",
    # Sucial's breath model calls breaths "aspiration", as engineers do.
    "aspiration": "breath",
    "breaths": "breath",
    "breathing": "breath",
    "no_breath": "nobreath",
    "no_breaths": "nobreath",
    # A film's or video's three stems, in the film trade's words (dialogue, music, effects):
    # Bandit v2 calls them speech, music and sfx; BandIt speech, music and effects.
    "speech": "dialogue",
    "dialog": "dialogue",
    "sfx": "effects",
    "sound_effects": "effects",
}

# Sucial's de-reverb/de-echo models call what they keep `dry` and what they take off `No dry`
# (the reverb and the echo): the pair is a de-echo model's kept and removed stems. The pair
# decides, not `dry` alone, which is also aufr33's denoiser's name for its clean signal.
_ECHO_PAIR = {"dry": "noecho", "no_dry": "echo"}
# aufr33's denoiser calls the noise it takes off `other`: named so, it would be the "other
# instruments" of a 4-stem model to every request for them where no 4-stem model is installed.
_NOISE_PAIR = {"dry": "dry", "other": "noise"}
# The models of one sound call what they leave without it `other` too: aufr33 and viperx's
# crowd remover, becruily's guitar model, Sucial's breath model (`aspiration`, `breath` here).
# Each pair is the sound and `no<sound>`.
_WITHOUT_PAIRS = tuple(
    {sound: sound, "other": f"no{sound}"} for sound in ("crowd", "guitar", "breath")
)


def canonical_stem(name: str) -> str:
    """A requested stem name in demixer's words: ``"Lead Vocal"`` -> ``lead_vocals``."""
    key = "_".join(name.strip().lower().replace("-", " ").split())
    return _SYNONYMS.get(key, key)


def canonical_stems(stems: Sequence[str]) -> dict[str, str]:
    """A model's stems -> demixer's names for them, in the model's order. A 2-stem vocal
    model's other stem is ``instrumental`` whatever the model calls it; a model of ``dry`` and
    ``no_dry`` makes ``noecho`` and ``echo`` (:data:`_ECHO_PAIR`), one of ``dry`` and
    ``other`` makes ``dry`` and ``noise`` (:data:`_NOISE_PAIR`), one of ``crowd`` (``guitar``,
    ``aspiration``: ``breath``) and ``other`` makes ``crowd`` and ``nocrowd`` (``noguitar``,
    ``nobreath``: :data:`_WITHOUT_PAIRS`)."""
    names = [s.lower() for s in stems]
    out = {stem: _SYNONYMS.get(name, name) for stem, name in zip(stems, names, strict=True)}
    for pair in (_ECHO_PAIR, _NOISE_PAIR, *_WITHOUT_PAIRS):
        if sorted(out.values()) == sorted(pair):
            return {stem: pair[name] for stem, name in out.items()}
    if len(stems) == 2 and "vocals" in out.values():
        for stem, name in out.items():
            if name in _REST_OF_VOCALS:
                out[stem] = "instrumental"
    return out


def produces(spec: ModelSpec) -> tuple[str, ...]:
    """The stems ``spec`` makes, in demixer's names."""
    return tuple(canonical_stems(spec.stems).values())


def native_stem(spec: ModelSpec, stem: str) -> str | None:
    """The name ``spec`` gives demixer's ``stem`` (None: it does not make it)."""
    for native, canonical in canonical_stems(spec.stems).items():
        if canonical == stem:
            return native
    return None


def figure(spec: ModelSpec, stem: str) -> float | None:
    """``spec``'s published :data:`COMPARABLE_METRIC` figure for ``stem`` (dB), if any."""
    names = canonical_stems(spec.stems)
    for score in spec.scores:
        if score.metric == COMPARABLE_METRIC and names.get(score.stem, score.stem) == stem:
            return score.value
    return None


def rank(
    spec: ModelSpec, stems: Sequence[str], order: Sequence[str] = ()
) -> tuple[float, int, int]:
    """Sort key, best first, for making ``stems`` with ``spec``: the lowest of its figures for
    them (no figure ranks after every figure), then :data:`PREFERENCE`, then ``order``."""
    figures = [figure(spec, s) for s in stems]
    worst = min((f for f in figures if f is not None), default=None)
    known = -worst if worst is not None and None not in figures else float("inf")
    preference = PREFERENCE.index(spec.id) if spec.id in PREFERENCE else len(PREFERENCE)
    position = order.index(spec.id) if spec.id in order else len(order)
    return (known, preference, position)


def _making(stems: Sequence[str], specs: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Every spec of ``specs`` that makes all of ``stems``, best first (:func:`rank`)."""
    order = [s.id for s in specs]
    able = [spec for spec in specs if set(stems) <= set(produces(spec))]
    return sorted(able, key=lambda spec: rank(spec, stems, order))


def producers(stem: str, installed: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Every spec of ``installed`` that makes ``stem``, best first."""
    return _making([stem], installed)


def choose(stems: Sequence[str], installed: Sequence[ModelSpec]) -> ModelSpec:
    """The best of ``installed`` making every one of ``stems`` (demixer's names).

    Raises:
        UnknownStem: none makes them all; the message names what the installed set can make
            (and for a word no model makes, the stems nearest to it).
    """
    able = _making(stems, installed)
    if able:
        return able[0]
    can = sorted({s for spec in installed for s in produces(spec)})
    missing = [s for s in stems if not any(s in produces(spec) for spec in installed)]
    # A stem some model makes is only not installed; any other word is likely a typo.
    words = {s for spec in SHIPPED for s in produces(spec)} | set(can)
    known = [s for s in missing if s in words]
    missing = [s if s in words else s + did_you_mean(s, sorted(words)) for s in missing]
    what = (
        f"no installed model or recipe makes {', '.join(missing)}{pull_hint(known, SHIPPED)}"
        if missing
        else f"no installed model or recipe makes {', '.join(stems)} together"
        f"{pull_hint(stems, SHIPPED)}"
    )
    raise UnknownStem(f"{what}; the installed ones make: {', '.join(can) or 'nothing'}")


def pull_hint(stems: Sequence[str], known: Sequence[ModelSpec]) -> str:
    """What to fetch to make every one of ``stems``: `` (a or b can: `demixer models pull a`)``,
    the models and recipes of ``known`` that make them all, best first (:func:`rank`); ``""``
    when there are no stems or none makes them all."""
    could = [spec.id for spec in _making(stems, known)] if stems else []
    return f" ({' or '.join(could)} can: `demixer models pull {could[0]}`)" if could else ""


def makers(spec: ModelSpec) -> dict[str, str]:
    """Each stem of ``spec`` -> what makes it: the model id; for a recipe ``id (a -> b)``, the
    chain of models that made the stem; for an ensemble ``id (avg of a, b)``, and for the stem
    it takes as the input minus the others (``arch_params["remainder"]``)
    ``id (the input minus its vocals)``."""
    steps = spec.arch_params.get("steps") if spec.requires else None
    if steps:
        chain: dict[str, str] = {"mix": ""}
        for step in steps:
            upstream = chain.get(step["input"], "")
            here = f"{upstream} -> {step['model']}" if upstream else step["model"]
            for name in [*step["keep"].values(), *([step["rest"]] if step["rest"] else [])]:
                chain[name] = here
        return {s: f"{spec.id} ({chain[s]})" if s in chain else spec.id for s in spec.stems}
    mode = spec.arch_params.get("mode") if spec.requires else None
    if mode:
        made = dict.fromkeys(spec.stems, f"{spec.id} ({mode} of {', '.join(spec.requires)})")
        rest = spec.arch_params.get("remainder")
        if rest is not None:  # not combined: labelled "max of a, b", it read as UVR's max spec
            others = ", ".join(s for s in spec.stems if s != rest)
            made[rest] = f"{spec.id} (the input minus its {others})"
        return made
    return dict.fromkeys(spec.stems, spec.id)


def cleanup_model(step: str, installed: Sequence[ModelSpec]) -> tuple[ModelSpec, str] | None:
    """The best of ``installed`` for clean-up ``step`` (:data:`CLEANUP_STEMS`) and its stem
    to keep (the model's own name), or None when none is installed."""
    able = producers(CLEANUP_STEMS[step], installed)
    if not able:
        return None
    native = native_stem(able[0], CLEANUP_STEMS[step])
    assert native is not None
    return able[0], native
