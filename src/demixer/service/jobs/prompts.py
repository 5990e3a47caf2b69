"""Text prompts ("separate the piano from the background music") onto an installed model's stem.

The native API is text-prompted and answers a ``target`` and a ``residual``. A prompt names one
sound; demixer maps it onto a stem an installed model produces and picks the best such model.
"Everything but X" prompts (and "instrumental", "karaoke", …, which mean "everything but the
vocals") are the same separation with the two outputs swapped: the stem becomes the residual
and the residual the target (:attr:`PromptMatch.invert`).

The matching is deliberately plain, in English words: the prompt's words are scanned left to
right for known phrases (longest first, so "bass drum" is drums and "bass guitar" is bass).
Each sound named is wanted, or refused by a negation up to three words before it ("no",
"without", "everything but", "remove", "don't", …; a list after one is refused with it: "no
vocals or drums") or right after it ("vocals removed", "drum-less"). Two negations cancel
("remove everything but the vocals"); "but", "just", "only" and "keep" end one's reach ("not
the vocals but the drums", "no music, just the vocals"); a sound after "from" is what the
target comes out of ("the piano from the background music"). The one sound wanted is the
target; a prompt that only refuses one asks for everything but it.

Nothing is ever silently substituted or left out: a prompt naming no known sound, two sounds
("drums and bass"), two to leave out ("no vocals, no drums"), one to leave out that the target
holds ("the drums without the kick") or keeps ("the instrumental without the drums"), an effect
(reverb, echo, noise, …), or a sound no installed model produces, raises
:class:`~demixer.errors.UnsupportedPrompt` listing what can be separated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from demixer.errors import UnsupportedPrompt
from demixer.models.planner import PREFERENCE, producers, produces
from demixer.models.registry import ModelSpec, list_specs

__all__ = ["MODEL_PREFERENCE", "PromptMatch", "best_model", "map_prompt", "separable"]

#: Best first where no published figure decides: :data:`demixer.models.planner.PREFERENCE`.
MODEL_PREFERENCE = PREFERENCE

_VOCALS = "vocals"

# phrase -> (stem, invert). "Accompaniment" words mean everything but the vocals.
_STEM_WORDS: dict[str, tuple[str, bool]] = {}


def _words(stem: str, invert: bool, *phrases: str) -> None:
    for phrase in phrases:
        _STEM_WORDS[phrase] = (stem, invert)


_words(
    "vocals",
    False,
    "vocals",
    "vocal",
    "voice",
    "voices",
    "vox",
    "singing",
    "singer",
    "singers",
    "vocalist",
    "vocalists",
    "rapper",
    "rapping",
    "lyrics",
    "sung",
    "acapella",
    "acappella",
    "a cappella",
    "a capella",
    "speech",
    "dialogue",
    "dialog",
)
_words(
    "drums",
    False,
    "drums",
    "drum",
    "drum kit",
    "percussion",
    "percussive",
    "beat",
    "beats",
    "cymbals",
)
# A drum kit's pieces (the drum-kit recipe), and male and female voices (male-female).
_words("kick", False, "kick", "kick drum", "kick drums", "bass drum")
_words("snare", False, "snare", "snare drum", "snares")
_words("toms", False, "toms", "tom toms", "tom drums")
_words("hi_hat", False, "hi hat", "hihat", "hi hats", "hihats", "high hat", "high hats")
_words("ride", False, "ride", "ride cymbal")
_words("crash", False, "crash", "crash cymbal")
_words(
    "male_vocals", False, "male vocals", "male vocal", "male voice", "male voices", "male singer"
)
_words(
    "female_vocals",
    False,
    "female vocals",
    "female vocal",
    "female voice",
    "female voices",
    "female singer",
)
_words("bass", False, "bass", "bassline", "bass line", "basslines", "bass guitar", "sub bass")
_words(
    "piano",
    False,
    "piano",
    "pianos",
    "grand piano",
    "keys",
    "keyboard",
    "keyboards",
)
_words(
    "guitar",
    False,
    "guitar",
    "guitars",
    "electric guitar",
    "acoustic guitar",
    "rhythm guitar",
    "lead guitar",
)
_words("other", False, "other", "other instruments")
_words(
    "lead_vocals",
    False,
    "lead vocals",
    "lead vocal",
    "lead singer",
    "lead vocalist",
    "lead voice",
    "main vocals",
    "main vocal",
    "main singer",
)
_words(
    "backing_vocals",
    False,
    "backing vocals",
    "backing vocal",
    "back vocals",
    "harmonies",
    "background vocals",
    "background vocal",
    "background singers",
    "background voices",
    "backing singers",
    "backup vocals",
    "backup singers",
)
# "Without reverb" is part of the sound asked for: read as two sounds, it would be refused.
_words(
    "dry_vocals",
    False,
    "dry vocals",
    "dry vocal",
    "vocals without reverb",
    "vocals without the reverb",
    "vocals no reverb",
    "dereverbed vocals",
)
# Where nothing installed splits the vocals (or the drums), a song's lead vocal is its vocals
# stem, as its kick is in its drums.
_FALLBACK = {
    "lead_vocals": "vocals",
    "male_vocals": "vocals",
    "female_vocals": "vocals",
    **dict.fromkeys(("kick", "snare", "toms", "hi_hat", "ride", "crash"), "drums"),
}
_words(
    _VOCALS,
    True,
    "instrumental",
    "instrumentals",
    "accompaniment",
    "karaoke",
    "backing track",
    "backing tracks",
    "minus one",
    "background music",
    "backing music",
)

_NEGATIONS = frozenset(
    {
        "everything but",
        "everything except",
        "everything other than",
        "everything apart from",
        "all but",
        "all except",
        "anything but",
        "except",
        "except for",
        "other than",
        "apart from",
        "aside from",
        "but not",
        "instead of",
        "rather than",
        "without",
        "w o",  # "w/o"
        "no",
        "not",
        "dont",
        "don t",  # "don't"
        "remove",
        "removing",
        "removed",
        "minus",
        "less",
        "exclude",
        "excluding",
        "mute",
        "strip",
        "drop",
        "delete",
        "erase",
        "eliminate",
        "get rid of",
        "take out",
        "cut out",
        "leave out",
        "filter out",
        "turn off",
    }
)
# A negation applies to a sound named at most this many words after it ("without the lead X"),
# or after a sound it negated ("no vocals or drums", "remove the vocals and the drums").
_NEGATION_REACH = 3
# Negations written after the sound: "vocals removed", "vocal-less", "drum-free", "take the
# vocals out" (but "get the drums out of it" keeps them: see _after).
_AFTER = frozenset({"removed", "muted", "less", "free", "out", "off", "gone"})
_AUXILIARIES = frozenset({"is", "are", "be", "been", "being", "was", "were", "get", "got"})
_OUT_VERBS = frozenset({"take", "cut", "leave", "keep", "filter", "strip", "edit"})
_DETERMINERS = frozenset(
    {"the", "a", "an", "all", "any", "my", "this", "these", "those", "its", "their", "his", "her"}
)
# Where the prompt turns from what it refuses to what it wants ("not the vocals but the drums",
# "no music, just the vocals", "remove the music, keep the voice"). Right after the negation
# they belong to it instead ("remove only the drums").
_TURNS = frozenset({"but", "just", "only", "keep", "instead"})
# The sound named after "from" is what the target is taken out of ("the piano from the
# background music"), not a second sound asked for.
_FROM = "from"

# Effects and noises: no prompt takes them out or keeps them, and a prompt that names one is
# refused, not read without it ("vocals without echo" is not the vocals).
_EFFECTS = frozenset(
    {
        "reverb",
        "reverberation",
        "echo",
        "echoes",
        "noise",
        "noises",
        "noisy",
        "hiss",
        "hum",
        "static",
        "crackle",
        "distortion",
        "bleed",
        "crowd",
        "audience",
        "applause",
        "cheering",
        "laughter",
        "breaths",
        "breathing",
    }
)

# A part of a sound -> the sound that holds it: "the kick" is in the drums.
_PART_OF = {**_FALLBACK, "backing_vocals": _VOCALS, "dry_vocals": _VOCALS}

_PHRASES: dict[tuple[str, ...], tuple[str, bool] | None] = {
    **{tuple(p.split()): v for p, v in _STEM_WORDS.items()},
    **{tuple(p.split()): None for p in _NEGATIONS},
}
_LONGEST = max(len(k) for k in _PHRASES)


class _Named(NamedTuple):
    """One sound a prompt names: ``stem``, whether the phrase itself means everything but it
    (``invert``: "instrumental"), and whether the prompt refuses it (``negated``)."""

    stem: str
    invert: bool
    negated: bool


class PromptMatch(NamedTuple):
    """Where a prompt leads.

    Attributes:
        model: the engine model id to run.
        stem: the model stem to separate.
        invert: True for "everything but ``stem``": answer the residual as the ``target`` and
            the stem as the ``residual``.
    """

    model: str
    stem: str
    invert: bool = False


def _rank(spec: ModelSpec) -> tuple[int, int]:
    order = [s.id for s in list_specs()]
    registry_pos = order.index(spec.id) if spec.id in order else len(order)
    if spec.id in MODEL_PREFERENCE:
        return (MODEL_PREFERENCE.index(spec.id), registry_pos)
    return (len(MODEL_PREFERENCE), registry_pos)


def best_model(stem: str, installed: Sequence[ModelSpec]) -> ModelSpec | None:
    """The best of ``installed`` that produces ``stem`` (demixer's name for it, see
    :mod:`demixer.models.planner`: published figure first), or None."""
    able = producers(stem, installed)
    return able[0] if able else None


def separable(installed: Sequence[ModelSpec]) -> list[str]:
    """What prompts can ask for with ``installed``: every stem a prompt's words name, plus the
    accompaniment. A stem no words name (a recipe's ``drums_other``, a clean-up model's
    ``noreverb``) is left out: typed as listed, it would be refused or read as other sounds.

    Returns names like ``["vocals", "accompaniment (everything but the vocals)", "drums"]``.
    """
    named = {stem for stem, _ in _STEM_WORDS.values()}
    stems: list[str] = []
    for spec in sorted(installed, key=_rank):
        for stem in produces(spec):
            if stem not in stems and stem in named:
                stems.append(stem)
    out: list[str] = []
    for stem in stems:
        out.append(stem)
        if stem == _VOCALS:
            out.append("accompaniment (everything but the vocals)")
    return out


def _after(words: list[str], start: int, end: int) -> bool:
    """Whether a negation follows the sound ``words[start:end]`` ("vocals removed", "the vocals
    are gone", "drum-less", "take the vocals out"; not "get the drums out of it")."""
    i = end + (end < len(words) and words[end] in _AUXILIARIES)
    if i >= len(words) or words[i] not in _AFTER:
        return False
    if words[i] != "out":
        return True
    # "Out" takes the sound out after "take", "cut", "leave", … ("take the vocals out of the
    # song"), and gets it out of the song after any other verb ("get the drums out of it").
    j = start - 1
    while j >= 0 and words[j] in _DETERMINERS:
        j -= 1
    return j >= 0 and words[j] in _OUT_VERBS


def _scan(prompt: str) -> tuple[list[_Named], list[str]]:
    """Every sound the prompt names, left to right, except those named after "from"; and the
    effects it names (:data:`_EFFECTS`)."""
    tokens = re.findall(r"[a-z0-9]+|[,.;:!?]", prompt.lower().replace("-", " "))
    words: list[str] = []
    pauses: set[int] = set()  # words a comma or a full stop follows
    for token in tokens:
        if token.isalnum():
            words.append(token)
        elif words:
            pauses.add(len(words) - 1)
    named: list[_Named] = []
    effects: list[str] = []
    negations = 0  # negations in force: two cancel ("remove everything but the vocals")
    reach: int | None = None  # where the last negation, or a sound it negated, ended
    negation_end: int | None = None  # where the last negation phrase itself ended
    chained = False  # no sound named since the last negation: a next one adds to it
    source_end: int | None = None  # where the last "from" ended
    i = 0
    while i < len(words):
        for length in range(min(_LONGEST, len(words) - i), 0, -1):
            key = tuple(words[i : i + length])
            if key in _PHRASES:
                break
        else:
            if words[i] in _TURNS and reach is not None and i != negation_end:
                negations, reach = 0, None
            elif words[i] == _FROM:
                source_end = i + 1
            elif words[i] in _EFFECTS:
                effects.append(words[i])
            i += 1
            continue
        value = _PHRASES[key]
        in_reach = reach is not None and i - reach < _NEGATION_REACH
        if value is None and i + length - 1 in pauses:
            pass  # it negates nothing: "No, just the vocals", "the vocals, no."
        elif value is None:
            negations = negations + 1 if in_reach and chained else 1
            reach = negation_end = i + length
            chained = True
        else:
            stem, invert = value
            negated = in_reach and negations % 2 == 1
            if in_reach:
                reach = i + length
            chained = False
            if source_end is None or i - source_end >= _NEGATION_REACH:
                named.append(_Named(stem, invert, negated != _after(words, i, i + length)))
        i += length
    return named, effects


def _say(stem: str, invert: bool = False) -> str:
    """A sound in words: "the hi hat", "everything but the vocals"."""
    sound = "the " + stem.replace("_", " ")
    return f"everything but {sound}" if invert else sound


def _overlap(a: str, b: str) -> bool:
    """Whether one of two stems holds the other (or they are the same)."""
    return a == b or _PART_OF.get(a) == b or _PART_OF.get(b) == a


def _choice(prompt: str, named: list[_Named]) -> str | tuple[str, bool]:
    """The one sound ``named`` asks for, ``(stem, invert)``, or why there is none (a sentence
    for the error): a prompt that refuses every sound it names asks for everything but the
    one it refuses; one that asks for two sounds, or refuses two, asks what one separation
    (a sound and everything else) cannot give."""
    said = repr(prompt.strip()[:200])
    wanted = [(n.stem, n.invert) for n in named if not n.negated]
    refused = [(n.stem, n.invert) for n in named if n.negated]
    if not wanted:
        if len(set(refused)) > 1:
            sounds = " and ".join(dict.fromkeys(_say(s, inv) for s, inv in refused))
            return f"{said} leaves out {sounds}; a prompt can leave out only one sound"
        stem, invert = refused[0]
        return stem, not invert
    stem, invert = wanted[0]
    others = [s for s, _ in wanted if s != stem]
    if others:
        sounds = " and ".join(dict.fromkeys(_say(s) for s in [stem, *others]))
        return (
            f"{said} names {sounds}; a prompt separates one sound from the rest (ask "
            "audio/stems, or --stems, for several)"
        )
    return stem, invert


def _misfit(prompt: str, stem: str, invert: bool, named: list[_Named]) -> str | None:
    """Why leaving out the sounds ``named`` refuses does not fit the separation of ``stem``
    (``invert``: everything but it), or None: they must all be in what it sets aside ("the
    vocals without the drums"; not "the drums without the kick", nor "the instrumental
    without the drums", which would take out two sounds)."""
    for other in (n for n in named if n.negated):
        if invert:
            fits = other.stem == stem and not other.invert
        else:
            fits = (other.stem == stem and other.invert) or not (
                other.invert or _overlap(other.stem, stem)
            )
        if not fits:
            return (
                f"{prompt.strip()[:200]!r} asks for {_say(stem, invert)} without "
                f"{_say(other.stem, other.invert)}, which one separation cannot give"
            )
    return None


def map_prompt(prompt: str, installed: Sequence[ModelSpec]) -> PromptMatch:
    """Map ``prompt`` onto the best installed model that produces the sound it names.

    Args:
        prompt: free text, e.g. ``"vocals"``, ``"the singer"``, ``"everything but the drums"``.
        installed: the models whose weights are present (``demixer.models.loading.is_installed``).

    Returns:
        ``(model, stem, invert)`` (see :class:`PromptMatch`).

    Raises:
        UnsupportedPrompt: the prompt names no known sound, or more than one, or one no
            installed model produces; the message lists what can be separated.
    """
    can = ", ".join(separable(installed)) or "nothing (no model is installed)"
    named, effects = _scan(prompt)
    if effects:
        raise UnsupportedPrompt(
            f"{prompt.strip()[:200]!r} names {' and '.join(dict.fromkeys(effects))}, which "
            f"a prompt cannot take out or keep; with the installed models demixer can "
            f"separate: {can}",
            param="input.prompt",
        )
    if not named:
        raise UnsupportedPrompt(
            f"cannot tell which sound {prompt.strip()[:200]!r} asks for; with the installed "
            f"models demixer can separate: {can} (e.g. 'vocals' or 'everything but the vocals')",
            param="input.prompt",
        )
    found = _choice(prompt, named)
    if isinstance(found, str):
        raise UnsupportedPrompt(
            f"{found}; with the installed models demixer can separate: {can}",
            param="input.prompt",
        )
    stem, invert = found
    spec = best_model(stem, installed)
    # The drums stand in for the kick, but everything but the drums is not everything but
    # the kick: only the sound itself falls back.
    if spec is None and stem in _FALLBACK and not invert:
        stem = _FALLBACK[stem]
        spec = best_model(stem, installed)
    if spec is None:
        could = [s.id for s in producers(stem, list_specs())]
        hint = f" ({' or '.join(could)} can: `demixer models pull {could[0]}`)" if could else ""
        raise UnsupportedPrompt(
            f"no installed model separates {stem}{hint}; with the installed models demixer "
            f"can separate: {can}",
            param="input.prompt",
        )
    misfit = _misfit(prompt, stem, invert, named)
    if misfit is not None:
        raise UnsupportedPrompt(
            f"{misfit}; with the installed models demixer can separate: {can}",
            param="input.prompt",
        )
    return PromptMatch(spec.id, stem, invert)
