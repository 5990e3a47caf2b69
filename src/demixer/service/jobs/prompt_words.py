"""The words a text prompt is read with (:mod:`demixer.service.jobs.prompts`), in English.

Plain tables, kept apart from the reading so that a word can be added without touching how
prompts are read: phrases naming a sound (:data:`STEM_WORDS`), negations before and after a
sound, the words that end a negation's reach, and the effects no prompt can separate.
"""

from __future__ import annotations

__all__ = [
    "AFTER",
    "AMBIGUOUS",
    "AUXILIARIES",
    "CLEANUP_SOUNDS",
    "COMPLEMENT",
    "DETERMINERS",
    "EFFECTS",
    "FALLBACK",
    "FALLBACK_LEFT_OUT",
    "FROM",
    "NEGATIONS",
    "NEGATION_REACH",
    "OUT_EITHER",
    "OUT_VERBS",
    "PART_OF",
    "STEM_WORDS",
    "TURNS",
    "VOCALS",
]

VOCALS = "vocals"

# phrase -> (stem, invert). "Accompaniment" words mean everything but the vocals.
STEM_WORDS: dict[str, tuple[str, bool]] = {}


def _words(stem: str, invert: bool, *phrases: str) -> None:
    for phrase in phrases:
        STEM_WORDS[phrase] = (stem, invert)


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
)
# A film's or a video's three stems (Bandit v2, ``bandit-v2-dnr``): its dialogue, its music and
# its sound effects. Without a model making them, the dialogue falls back to the vocals
# (:data:`FALLBACK`).
_words(
    "dialogue",
    False,
    "dialogue",
    "dialogues",
    "dialog",
    "speech",
    "spoken word",
    "talking",
    "narration",
    "narrator",
    "voiceover",
    "voiceovers",
    "voice over",
    "voice overs",
)
# Everything but the dialogue: the "M&E" (music and effects) or international track a dub is
# mixed onto.
_words(
    "dialogue",
    True,
    "music and effects",
    "music and sound effects",
    "music effects",
    "m e",
    "m and e",
    "international track",
    "international version",
    "international mix",
)
_words("music", False, "music", "soundtrack", "film music", "film score")
_words("effects", False, "effects", "sound effects", "sfx", "foley")
_words(
    "drums",
    False,
    "drums",
    "drum",
    "drum kit",
    "percussion",
    "percussive",
    "drum beat",
    "drum beats",
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
# Noise, reverb, echo and a live recording's crowd as sounds of their own: the clean-up models'
# (denoise, de-reverb, de-echo, crowd removal) take them off the whole input, so "remove the
# noise" and "denoise" ask for everything but the noise, as "instrumental" asks for everything
# but the vocals. They lie on every other sound, so no prompt leaves one out of another sound
# (:data:`CLEANUP_SOUNDS`).
_words("noise", False, "noise", "noises", "hiss")
_words("noise", True, "denoise", "denoised", "de noise", "de noised")
_words("reverb", False, "reverb", "reverberation")
_words("reverb", True, "dereverb", "dereverbed", "de reverb", "de reverbed")
_words("echo", False, "echo", "echoes")
_words("echo", True, "deecho", "de echo", "de echoed")
_words(
    "crowd",
    False,
    "crowd",
    "crowds",
    "crowd noise",
    "audience",
    "audience noise",
    "applause",
    "cheering",
    "cheers",
    "clapping",
)
CLEANUP_SOUNDS = frozenset({"noise", "reverb", "echo", "crowd"})
# Where nothing installed splits the vocals (or the drums), a song's lead vocal is its vocals
# stem, as its kick is in its drums; where nothing splits a film's sound, its dialogue is its
# vocals (a vocal model takes voices, spoken and sung).
FALLBACK = {
    "dialogue": "vocals",
    "lead_vocals": "vocals",
    "male_vocals": "vocals",
    "female_vocals": "vocals",
    **dict.fromkeys(("kick", "snare", "toms", "hi_hat", "ride", "crash"), "drums"),
}
_words(
    VOCALS,
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

NEGATIONS = frozenset(
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
        "cut out",
        "leave out",
        "filter out",
        "turn off",
    }
)
# A negation applies to a sound named within this many words after it ("without the loud X"),
# or after a sound it negated ("no vocals or drums", "remove the vocals and the drums").
# Determiners do not count: "remove all of the vocals" is as near as "remove vocals".
NEGATION_REACH = 3
# Negations written after the sound: "vocals removed", "vocal-less", "drum-free", "take the
# vocals out" (but "get the drums out of it" keeps them: see prompts._after).
AFTER = frozenset({"removed", "muted", "less", "free", "out", "off", "gone"})
AUXILIARIES = frozenset({"is", "are", "be", "been", "being", "was", "were", "get", "got"})
# "Out" after a sound takes it away after these verbs ("cut the drums out", "leave the vocals
# out"), and gets it out of the song to keep after any other ("separate the piano out").
OUT_VERBS = frozenset({"cut", "leave", "keep", "filter", "strip", "edit"})
# After these, and in "take out the vocals", it is said both ways: "take the vocals out of this
# song" asks for the karaoke version as often as "get the vocals out" does, and people write
# "take the vocals out" of making an a cappella, "pull the vocals out" of sampling them. A
# prompt saying one is refused, asking which, rather than guessed.
OUT_EITHER = frozenset({"take", "get", "pull"})
DETERMINERS = frozenset(
    {
        *("the", "a", "an", "all", "any", "some", "of", "this", "that", "these", "those"),
        *("my", "your", "our", "its", "their", "his", "her"),
    }
)
# Where the prompt turns from what it refuses to what it wants ("not the vocals but the drums",
# "no music, just the vocals", "remove the music, keep the voice"). Right after the negation
# they belong to it instead ("remove only the drums").
TURNS = frozenset({"but", "just", "only", "keep", "instead"})
# The sound named after "from" is what the target is taken out of ("the piano from the
# background music"), not a second sound asked for.
FROM = "from"

# Words that name one sound to some and another to others: "the beat" is the drums to a
# drummer and the whole instrumental to a rapper. A prompt using one is refused, saying so.
AMBIGUOUS = {
    "beat": "the drums or the instrumental (everything but the vocals)",
    "beats": "the drums or the instrumental (everything but the vocals)",
}

# Effects and noises no model takes off (noise, reverb and echo are sounds, above): no prompt
# takes them out or keeps them, and a prompt that names one is refused, not read without it
# ("the vocals without the distortion" is not the vocals).
EFFECTS = frozenset(
    {
        "noisy",
        "hum",
        "static",
        "crackle",
        "distortion",
        "bleed",
        "laughter",
        "breaths",
        "breathing",
    }
)

# A part of a sound -> the sound that holds it: "the kick" is in the drums.
# Everything but the dialogue falls back too: a vocal model's instrumental is what "remove the
# dialogue" gave before a dialogue model was in the catalogue (the drums stand in for the kick,
# but everything but the drums is not everything but the kick).
FALLBACK_LEFT_OUT = frozenset({"dialogue"})
# Where nothing installed separates a film's music, "the music" is everything but the vocals
# (what "music without vocals" asked for before), and "remove the music" the vocals. Bandit v2's
# training set addressed the "vocal content in non-dialogue stems" of its previous version (DnR
# v3's abstract): its music is meant to hold no voice, the two readings' common ground.
COMPLEMENT = {"music": VOCALS}

PART_OF = {**FALLBACK, "backing_vocals": VOCALS, "dry_vocals": VOCALS}
