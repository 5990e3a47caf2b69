"""Text prompts ("separate the piano from the background music") onto an installed model's stem.

The native API is text-prompted and answers a ``target`` and a ``residual``. A prompt names one
sound; demixer maps it onto a stem an installed model produces and picks the best such model.
"Everything but X" prompts (and "instrumental", "karaoke", …, which mean "everything but the
vocals") are the same separation with the two outputs swapped: the stem becomes the residual
and the residual the target (:attr:`PromptMatch.invert`).

The matching is deliberately plain, in English words: the prompt's words are scanned left to
right for known phrases (longest first, so "bass drum" is drums and "bass guitar" is bass). Each
sound named is wanted, or refused by a negation up to three words before it, "all of the" not
counted ("no", "without", "everything but", "remove", "don't", …; a list after one is refused
with it: "no vocals or drums"), or right after it ("vocals removed", "drum-less"). Two negations
cancel ("remove everything but the vocals"); "but", "just", "only" and "keep" end one's reach
("not the vocals but the drums", "no music, just the vocals"); a sound after "from" is what the
target comes out of ("the piano from the background music"). The one sound wanted is the target;
a prompt that only refuses one asks for everything but it. Noise, reverb, echo and a crowd are
sounds the clean-up models (denoise, de-reverb, de-echo, crowd removal) separate from the whole
input: "remove the noise", "denoise this" and "remove the applause" ask for everything but it.

Nothing is ever silently substituted or left out: a prompt naming no known sound, two sounds
("drums and bass"), two to leave out ("no vocals, no drums"), one to leave out that the target
holds ("the drums without the kick") or keeps ("the instrumental without the drums"), noise,
reverb, echo or a crowd left out of another sound ("the drums without the echo": one separation
takes it off the whole input), an effect no model takes off (distortion, laughter, …), a word two
sounds share ("the beat": the drums or the instrumental), a verb said both of keeping a sound
and of taking it away ("take the vocals out of this song", "get the vocals out"), or a sound no
installed model produces, raises :class:`~demixer.errors.UnsupportedPrompt` listing what can be
separated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from demixer.errors import UnsupportedPrompt
from demixer.models.planner import PREFERENCE, producers, produces, pull_hint
from demixer.models.registry import ModelSpec, list_specs
from demixer.service.jobs.prompt_words import (
    AFTER,
    AMBIGUOUS,
    AUXILIARIES,
    CLEANUP_SOUNDS,
    COMPLEMENT,
    DETERMINERS,
    EFFECTS,
    FALLBACK,
    FALLBACK_LEFT_OUT,
    FROM,
    NEGATION_REACH,
    NEGATIONS,
    OUT_EITHER,
    OUT_VERBS,
    PART_OF,
    STEM_WORDS,
    TURNS,
    VOCALS,
)

__all__ = [
    "MODEL_PREFERENCE",
    "PromptMatch",
    "best_model",
    "map_prompt",
    "read_prompt",
    "separable",
]

#: Best first where no published figure decides: :data:`demixer.models.planner.PREFERENCE`.
MODEL_PREFERENCE = PREFERENCE

_PHRASES: dict[tuple[str, ...], tuple[str, bool] | None] = {
    **{tuple(p.split()): v for p, v in STEM_WORDS.items()},
    **{tuple(p.split()): None for p in NEGATIONS},
}
_LONGEST = max(len(k) for k in _PHRASES)


class _Named(NamedTuple):
    """One sound a prompt names: ``stem``, whether the phrase itself means everything but it
    (``invert``: "instrumental"), whether the prompt refuses it (``negated``), and whether it
    is what the target comes out of (``source``: named after "from")."""

    stem: str
    invert: bool
    negated: bool
    source: bool = False


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
    named = {stem for stem, _ in STEM_WORDS.values()}
    stems: list[str] = []
    for spec in sorted(installed, key=_rank):
        for stem in produces(spec):
            if stem not in stems and stem in named:
                stems.append(stem)
    out: list[str] = []
    for stem in stems:
        out.append(stem)
        if stem == VOCALS:
            out.append("accompaniment (everything but the vocals)")
    return out


def _after(words: list[str], start: int, end: int) -> bool | None:
    """Whether a negation follows the sound ``words[start:end]`` ("vocals removed", "the vocals
    are gone", "drum-less", "cut the vocals out"; not "separate the drums out of it"); None when
    it is said both ways ("take the vocals out": away, or out to keep?)."""
    i = end + (end < len(words) and words[end] in AUXILIARIES)
    if i >= len(words) or words[i] not in AFTER:
        return False
    if words[i] != "out":
        return True
    # "Out" takes the sound out after "cut", "leave", … ("cut the vocals out of the song"),
    # gets it out of the song after other verbs ("separate the drums out of it"), and either
    # after "take", "get" or "pull".
    j = _before(words, start)
    if j >= 0 and words[j] in OUT_EITHER:
        return None
    return j >= 0 and words[j] in OUT_VERBS


def _before(words: list[str], start: int) -> int:
    """Where the word before the sound starting at ``words[start]`` is, determiners ("all of
    the") skipped; -1 when there is none."""
    j = start - 1
    while j >= 0 and words[j] in DETERMINERS:
        j -= 1
    return j


def _apart(words: list[str], start: int, end: int) -> int:
    """How many words of ``words[start:end]`` are not determiners ("all of the")."""
    return sum(1 for word in words[start:end] if word not in DETERMINERS)


def _scan(prompt: str) -> tuple[list[_Named], list[tuple[str, str | None]]]:
    """Every sound the prompt names, left to right, those named after "from" marked as the
    source; and the
    words it says that no sound can be read from, each with the sounds it can mean (None: an
    effect): an effect, a word two sounds share, or a verb said both of a sound and of
    everything but it (:data:`~demixer.service.jobs.prompt_words.EFFECTS`, ``AMBIGUOUS``,
    ``OUT_EITHER``)."""
    tokens = re.findall(r"[a-z0-9]+|[,.;:!?]", prompt.lower().replace("-", " "))
    words: list[str] = []
    pauses: set[int] = set()  # words a comma or a full stop follows
    for token in tokens:
        if token.isalnum():
            words.append(token)
        elif words:
            pauses.add(len(words) - 1)
    named: list[_Named] = []
    unclear: list[tuple[str, str | None]] = []
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
            if words[i] in TURNS and reach is not None and i != negation_end:
                negations, reach = 0, None
            elif words[i] == FROM:
                source_end = i + 1
            elif words[i] in EFFECTS:
                unclear.append((words[i], None))
            elif words[i] in AMBIGUOUS:
                unclear.append((words[i], AMBIGUOUS[words[i]]))
            elif words[i] in OUT_EITHER and words[i + 1 : i + 2] == ["out"]:
                unclear.append((f"{words[i]} out", "the sound it names or everything but it"))
            i += 1
            continue
        value = _PHRASES[key]
        in_reach = reach is not None and _apart(words, reach, i) < NEGATION_REACH
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
            after = _after(words, i, i + length)
            if after is None:  # "take the vocals out": the words from the verb to "out"
                said = " ".join(words[_before(words, i) : words.index("out", i) + 1])
                unclear.append((said, f"{_say(stem)} or everything but {_say(stem)}"))
            source = source_end is not None and _apart(words, source_end, i) < NEGATION_REACH
            named.append(_Named(stem, invert, negated != bool(after), source))
        i += length
    return named, unclear


def _say(stem: str, invert: bool = False) -> str:
    """A sound in words: "the hi hat", "everything but the vocals"."""
    sound = "the " + stem.replace("_", " ")
    return f"everything but {sound}" if invert else sound


def _overlap(a: str, b: str) -> bool:
    """Whether one of two stems holds the other (or they are the same)."""
    return a == b or PART_OF.get(a) == b or PART_OF.get(b) == a


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


def _misfit(
    prompt: str, stem: str, invert: bool, named: list[_Named], sources: list[_Named]
) -> str | None:
    """Why leaving out the sounds ``named`` refuses does not fit the separation of ``stem``
    (``invert``: everything but it), or None: they must all be in what it sets aside ("the
    vocals without the drums"; not "the drums without the kick", nor "the instrumental
    without the drums", which would take out two sounds). Noise, reverb and echo lie on every
    sound, so neither the vocals without the echo nor the noise taken off the vocals (a sound
    in ``sources``) is one separation: it would give the vocals with their echo, or the
    whole song without its noise."""
    for other in (n for n in named if n.negated):
        if invert:
            fits = other.stem == stem and not other.invert
        else:
            fits = (other.stem == stem and other.invert) or not (
                other.invert or _overlap(other.stem, stem) or other.stem in CLEANUP_SOUNDS
            )
        if not fits:
            return (
                f"{prompt.strip()[:200]!r} asks for {_say(stem, invert)} without "
                f"{_say(other.stem, other.invert)}, which one separation cannot give"
            )
    if invert and stem in CLEANUP_SOUNDS:
        for source in sources:
            if source.stem != stem:
                return (
                    f"{prompt.strip()[:200]!r} asks for {_say(source.stem, source.invert)} "
                    f"without {_say(stem)}, which one separation cannot give (it takes "
                    f"{_say(stem)} off the whole song)"
                )
    return None


def read_prompt(prompt: str, can_separate: Sequence[str]) -> tuple[str, bool]:
    """The sound ``prompt`` asks for, where the installed models can separate
    ``can_separate`` (:func:`separable`'s answer, as ``GET /v1/models`` lists it): what
    :func:`map_prompt` reads, without the models themselves, so that a client can say a refusal
    before it uploads a song.

    Returns:
        ``(stem, invert)`` (see :class:`PromptMatch`).

    Raises:
        UnsupportedPrompt: as :func:`map_prompt`, in the same words.
    """
    can = ", ".join(can_separate) or "nothing (no model is installed)"
    scanned, unclear = _scan(prompt)
    named = [n for n in scanned if not n.source]
    if unclear:
        (word, meaning), said = unclear[0], repr(prompt.strip()[:200])
        why = (
            f"{said} says {word!r}, which can mean {meaning}: say which"
            if meaning is not None
            else f"{said} names {word}, which a prompt cannot take out or keep"
        )
        raise UnsupportedPrompt(
            f"{why}; with the installed models demixer can separate: {can}",
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
    asked, invert = found
    stem = asked
    if stem not in can_separate:
        stem, invert = _fallback(stem, invert)
    if stem not in can_separate:
        hint = pull_hint([asked], list_specs())
        raise UnsupportedPrompt(
            f"no installed model separates {asked}{hint}; with the installed models demixer "
            f"can separate: {can}",
            param="input.prompt",
        )
    # Judged as run: the sound asked for is what stands in for it ("remove the dialogue" is
    # everything but the vocals, not that without the dialogue), the others as they are (the
    # vocals standing in for the lead vocals hold the backing vocals a prompt leaves out).
    flipped = invert != found[1]
    named = [
        n._replace(stem=stem, invert=n.invert != flipped) if n.stem == asked else n for n in named
    ]
    misfit = _misfit(prompt, stem, invert, named, [n for n in scanned if n.source])
    if misfit is not None:
        raise UnsupportedPrompt(
            f"{misfit}; with the installed models demixer can separate: {can}",
            param="input.prompt",
        )
    return stem, invert


def _fallback(stem: str, invert: bool) -> tuple[str, bool]:
    """What stands in for ``stem`` (``invert``: everything but it) where no installed model
    separates it: the drums for the kick, but everything but the drums is not everything but
    the kick, so only the sound itself falls back (the dialogue left out too:
    :data:`FALLBACK_LEFT_OUT`); the music is everything but the vocals (:data:`COMPLEMENT`).
    Itself where nothing does."""
    if stem in FALLBACK and (not invert or stem in FALLBACK_LEFT_OUT):
        return FALLBACK[stem], invert
    if stem in COMPLEMENT:
        return COMPLEMENT[stem], not invert
    return stem, invert


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
    stem, invert = read_prompt(prompt, separable(installed))
    spec = best_model(stem, installed)
    if spec is None:  # not reached: separable() lists every stem some installed model makes
        raise UnsupportedPrompt(f"no installed model separates {stem}", param="input.prompt")
    return PromptMatch(spec.id, stem, invert)
