"""Text prompts ("separate the piano from the background music") onto an installed model's stem.

The native API is text-prompted and answers a ``target`` and a ``residual``. A prompt names one
sound; demixer maps it onto a stem an installed model produces and picks the best such model.
"Everything but X" prompts (and "instrumental", "karaoke", …, which mean "everything but the
vocals") are the same separation with the two outputs swapped: the stem becomes the residual
and the residual the target (:attr:`PromptMatch.invert`).

The matching is deliberately plain: the prompt's words are scanned left to right for known
phrases (longest first, so "bass drum" is drums and "bass guitar" is bass); the first sound
named is the target, and a negation just before it ("no", "without", "everything but",
"remove", …) inverts it. Nothing is ever silently substituted: a prompt naming no known sound,
or one no installed model produces, raises :class:`~demixer.errors.UnsupportedPrompt` listing
what can be separated.
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
_words("hi_hat", False, "hi hat", "hihat", "hi hats", "hihats")
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
_words("lead_vocals", False, "lead vocals", "lead vocal", "lead singer", "main vocals")
_words("backing_vocals", False, "backing vocals", "backing vocal", "back vocals", "harmonies")
_words("dry_vocals", False, "dry vocals", "dry vocal")
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
        "all but",
        "all except",
        "anything but",
        "except",
        "except for",
        "other than",
        "but not",
        "without",
        "no",
        "not",
        "remove",
        "removing",
        "removed",
        "minus",
        "exclude",
        "excluding",
        "mute",
        "strip",
        "drop",
        "get rid of",
        "take out",
        "cut out",
    }
)
# A negation applies to a sound named at most this many words after it ("without the lead X").
_NEGATION_REACH = 3

_PHRASES: dict[tuple[str, ...], tuple[str, bool] | None] = {
    **{tuple(p.split()): v for p, v in _STEM_WORDS.items()},
    **{tuple(p.split()): None for p in _NEGATIONS},
}
_LONGEST = max(len(k) for k in _PHRASES)


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
    """What prompts can ask for with ``installed``: every stem, plus the accompaniment.

    Returns names like ``["vocals", "accompaniment (everything but the vocals)", "drums"]``.
    """
    stems: list[str] = []
    for spec in sorted(installed, key=_rank):
        for stem in produces(spec):
            if stem not in stems and stem != "instrumental":
                stems.append(stem)
    out: list[str] = []
    for stem in stems:
        out.append(stem)
        if stem == _VOCALS:
            out.append("accompaniment (everything but the vocals)")
    return out


def _scan(prompt: str) -> tuple[str, bool] | None:
    """The first sound the prompt names, and whether a negation right before it inverts it."""
    words = re.findall(r"[a-z0-9]+", prompt.lower().replace("-", " "))
    negated_at: int | None = None
    i = 0
    while i < len(words):
        for length in range(min(_LONGEST, len(words) - i), 0, -1):
            key = tuple(words[i : i + length])
            if key in _PHRASES:
                value = _PHRASES[key]
                if value is None:
                    negated_at = i + length
                else:
                    stem, invert = value
                    negated = negated_at is not None and i - negated_at < _NEGATION_REACH
                    return stem, invert != negated
                i += length
                break
        else:
            i += 1
    return None


def map_prompt(prompt: str, installed: Sequence[ModelSpec]) -> PromptMatch:
    """Map ``prompt`` onto the best installed model that produces the sound it names.

    Args:
        prompt: free text, e.g. ``"vocals"``, ``"the singer"``, ``"everything but the drums"``.
        installed: the models whose weights are present (``demixer.models.loading.is_installed``).

    Returns:
        ``(model, stem, invert)`` (see :class:`PromptMatch`).

    Raises:
        UnsupportedPrompt: the prompt names no known sound, or one no installed model
            produces; the message lists what can be separated.
    """
    can = ", ".join(separable(installed)) or "nothing (no model is installed)"
    found = _scan(prompt)
    if found is None:
        raise UnsupportedPrompt(
            f"cannot tell which sound {prompt.strip()[:200]!r} asks for; with the installed "
            f"models demixer can separate: {can} (e.g. 'vocals' or 'everything but the vocals')",
            param="input.prompt",
        )
    stem, invert = found
    spec = best_model(stem, installed)
    if spec is None and stem in _FALLBACK:
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
    return PromptMatch(spec.id, stem, invert)
