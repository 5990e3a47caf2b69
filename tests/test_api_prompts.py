"""Prompt mapping: words onto the stems installed models produce, best model first."""

from __future__ import annotations

import pytest

from api_support import Api, api, make_api
from demixer.api import submit
from demixer.errors import UnknownStem, UnsupportedPrompt
from demixer.models.registry import ModelSpec, get_spec, list_specs
from demixer.service.jobs.prompts import MODEL_PREFERENCE, PromptMatch, map_prompt, separable

# The mapping is words onto model specs, the same on every backend; the two tests that queue a
# job through the API run on SQLite + local storage and on PostgreSQL + S3 (conftest.py).

__all__ = ["api", "make_api"]  # fixtures


def _specs(*ids: str) -> list[ModelSpec]:
    return [get_spec(i) for i in ids]


SPLEETER = _specs("spleeter-2stems")
DEFAULT = _specs("spleeter-2stems", "cascade-4stems")  # what ships installed
ALL = list(list_specs())


@pytest.mark.parametrize(
    "prompt",
    [
        "vocals",
        "Vocals",
        "vocal",
        "voice",
        "singing",
        "the singer",
        "Separate the singer, please!",
        "extract the lead vocals from this song",
        "a cappella",
        "just the voice",
    ],
)
def test_vocal_words(prompt: str) -> None:
    assert map_prompt(prompt, DEFAULT) == PromptMatch("spleeter-2stems", "vocals", False)


@pytest.mark.parametrize(
    "prompt",
    [
        "everything but the vocals",
        "Everything except the vocals",
        "instrumental",
        "the instrumental version",
        "accompaniment",
        "karaoke",
        "karaoke version without vocals",
        "backing track",
        "no vocals",
        "without the singing",
        "remove the vocals",
        "everything other than the voice",
        "minus one",
    ],
)
def test_accompaniment_words_invert_the_vocals(prompt: str) -> None:
    assert map_prompt(prompt, DEFAULT) == PromptMatch("spleeter-2stems", "vocals", True)


@pytest.mark.parametrize(
    ("prompt", "stem"),
    [
        ("drums", "drums"),
        ("percussion", "drums"),
        ("the drum beat", "drums"),
        ("kick drum", "drums"),
        ("bass drum", "drums"),  # not the bass
        ("bass", "bass"),
        ("the bassline", "bass"),
        ("bass guitar", "bass"),  # not the guitar
        ("other instruments", "other"),
    ],
)
def test_cascade_stems_with_default_install(prompt: str, stem: str) -> None:
    assert map_prompt(prompt, DEFAULT) == PromptMatch("cascade-4stems", stem, False)


def test_negated_non_vocal_stems() -> None:
    assert map_prompt("everything but the drums", DEFAULT) == PromptMatch(
        "cascade-4stems", "drums", True
    )
    assert map_prompt("remove the bass", DEFAULT).invert is True
    # "instrumental" negated is the vocals again.
    assert map_prompt("no instrumental", DEFAULT) == PromptMatch("spleeter-2stems", "vocals", False)
    # A negation far before the sound does not reach it.
    assert map_prompt("no doubt a fine song, give me its vocals", DEFAULT).invert is False


def test_first_named_sound_is_the_target() -> None:
    assert map_prompt("separate the piano from the background music", ALL).stem == "piano"
    assert map_prompt("vocals without the drums", DEFAULT) == PromptMatch(
        "spleeter-2stems", "vocals", False
    )
    assert map_prompt("separate the vocals from the music", DEFAULT).stem == "vocals"


def test_best_installed_model_wins() -> None:
    # By the published Multisong figure for the stem: Kim's vocals 10.98 dB (viperx's 10.87,
    # htdemucs 8.24; SCNet XL publishes a Multisong mean only), htdemucs_ft's drums 11.13.
    assert map_prompt("vocals", ALL).model == "mel-roformer-vocals-kim"
    assert map_prompt("drums", ALL).model == "htdemucs_ft"
    assert map_prompt("drums", _specs("htdemucs", "htdemucs_ft")).model == "htdemucs_ft"
    assert map_prompt("vocals", _specs("spleeter-2stems", "mel-roformer-vocals-kim")).model == (
        "mel-roformer-vocals-kim"
    )
    # A vocal model's "other" is everything but the vocals, not the prompt's other instruments.
    assert map_prompt("other", _specs("mel-roformer-vocals-kim", "htdemucs")).model == "htdemucs"
    assert map_prompt("drums", _specs("cascade-4stems", "htdemucs")).model == "htdemucs"
    assert map_prompt("vocals", _specs("hdemucs_mmi", "spleeter-2stems")).model == "hdemucs_mmi"
    assert map_prompt("vocals", _specs("htdemucs_6s", "htdemucs")).model == "htdemucs"
    # Guitar and piano: only the 6-stem models have them, the SW BS-RoFormer first.
    without_sw = [spec for spec in ALL if spec.id != "bs-roformer-sw-6stems"]
    for prompt, stem in (("guitar", "guitar"), ("piano", "piano"), ("the keys", "piano")):
        assert map_prompt(prompt, ALL) == PromptMatch("bs-roformer-sw-6stems", stem, False)
        assert map_prompt(prompt, without_sw) == PromptMatch("htdemucs_6s", stem, False)
    # Installed order does not matter.
    assert map_prompt("vocals", list(reversed(ALL))).model == "mel-roformer-vocals-kim"
    # Lead and backing vocals: the karaoke recipe; lead vocals alone fall back to the vocals.
    assert map_prompt("the backing vocals", ALL) == PromptMatch("karaoke", "backing_vocals")
    assert map_prompt("extract the lead vocals", DEFAULT).stem == "vocals"
    with pytest.raises(UnsupportedPrompt, match="karaoke or karaoke-5hp or vr-bve can"):
        map_prompt("backing vocals", DEFAULT)
    assert set(MODEL_PREFERENCE) == {s.id for s in ALL}
    # A drum kit's pieces and male or female voices: their recipes; without them, the drums
    # and the vocals that hold them.
    for prompt, stem in (("the kick drum", "kick"), ("snare", "snare"), ("the hi-hats", "hi_hat")):
        assert map_prompt(prompt, ALL)[:2] == ("drum-kit", stem)
        assert map_prompt(prompt, DEFAULT)[:2] == ("cascade-4stems", "drums")
    assert map_prompt("everything but the ride cymbal", ALL) == PromptMatch(
        "drum-kit", "ride", True
    )
    # Everything but the drums is not everything but the ride: it would take out the rest of
    # the kit the user asked to keep.
    with pytest.raises(UnsupportedPrompt, match="drum-kit or mdx23c-drumsep can"):
        map_prompt("everything but the ride cymbal", DEFAULT)
    assert map_prompt("the female singer", ALL) == PromptMatch("male-female", "female_vocals")
    assert map_prompt("the male voice", DEFAULT) == PromptMatch("spleeter-2stems", "vocals")


def test_vocals_prefer_spleeter_over_the_cascade() -> None:
    # The cascade's vocals are Spleeter's: the 2-stem model gives the same for less work.
    assert map_prompt("vocals", _specs("cascade-4stems", "spleeter-2stems")).model == (
        "spleeter-2stems"
    )
    assert map_prompt("vocals", _specs("cascade-4stems")).model == "cascade-4stems"


def test_unknown_sound_names_what_can_be_separated() -> None:
    with pytest.raises(UnsupportedPrompt) as info:
        map_prompt("the flute", DEFAULT)
    error = info.value
    assert error.code == "UNSUPPORTED_PROMPT" and error.param == "input.prompt"
    assert isinstance(error, UnknownStem)
    for stem in ("vocals", "accompaniment", "drums", "bass", "other"):
        assert stem in error.message
    with pytest.raises(UnsupportedPrompt):
        map_prompt("", DEFAULT)
    with pytest.raises(UnsupportedPrompt):
        map_prompt("!!!", DEFAULT)


def test_known_sound_no_installed_model_has() -> None:
    with pytest.raises(UnsupportedPrompt) as info:
        map_prompt("guitar", DEFAULT)
    assert "htdemucs_6s" in info.value.message and "demixer models pull" in info.value.message
    with pytest.raises(UnsupportedPrompt) as info:
        map_prompt("drums", SPLEETER)
    assert "vocals" in info.value.message
    with pytest.raises(UnsupportedPrompt) as info:
        map_prompt("vocals", [])
    assert "no model is installed" in info.value.message


def test_separable() -> None:
    assert separable(SPLEETER) == ["vocals", "accompaniment (everything but the vocals)"]
    assert separable(DEFAULT) == [
        "vocals",
        "accompaniment (everything but the vocals)",
        "drums",
        "bass",
        "other",
    ]
    assert {"guitar", "piano"} <= set(separable(ALL))
    assert separable([]) == []


@pytest.mark.parametrize(
    ("prompt", "stem", "invert"),
    [
        # A negation after the sound.
        ("vocals removed", "vocals", True),
        ("the song with the vocals removed", "vocals", True),
        ("vocal-less version", "vocals", True),
        ("drum free", "drums", True),
        ("cut the vocals out", "vocals", True),
        ("separate the drums out of it", "drums", False),
        # "Don't".
        ("I don't want the vocals", "vocals", True),
        ("i dont want vocals", "vocals", True),
        # Two negations cancel.
        ("remove everything except the vocals", "vocals", False),
        ("mute everything but the bass", "bass", False),
        # "But", "just", "keep" end a negation's reach; a "No," before a comma negates nothing.
        ("not the vocals but the drums", "drums", False),
        ("no music just vocals", "vocals", False),
        ("remove music keep voice", "vocals", False),
        ("No, just the vocals", "vocals", False),
        ("remove only the drums", "drums", True),
        # Determiners do not put a sound out of a negation's reach.
        ("remove all of the vocals", "vocals", True),
        ("leave all of the vocals out", "vocals", True),
    ],
)
def test_negations_after_the_sound_cancelling_or_ending(
    prompt: str, stem: str, invert: bool
) -> None:
    assert map_prompt(prompt, DEFAULT)[1:] == (stem, invert)


@pytest.mark.parametrize(
    "prompt",
    [
        "drums and bass",  # two sounds: not the drums alone
        "vocals, drums",
        "remove the vocals and the drums",  # two to leave out: not the song without the vocals
        "no vocals no drums",
        "the instrumental without the drums",  # that would take out two sounds
        "drums without the kick",  # the drums hold the kick
        "vocals without the backing vocals",
        "guitar backing track",  # a track to play the guitar to, or the guitar?
        "vocals without echo",  # an effect: not the vocals with their echo
        "de-reverb the vocals",
        "just the beat",  # the drums to a drummer, the instrumental to a rapper
        "take the vocals out of this song",  # the karaoke, or the a cappella?
        "get the vocals out of this song",
        "take out the drums",
    ],
)
def test_prompts_one_separation_cannot_serve_are_refused(prompt: str) -> None:
    with pytest.raises(UnsupportedPrompt) as info:
        map_prompt(prompt, ALL)  # every model installed: refused for what it asks
    assert info.value.code == "UNSUPPORTED_PROMPT" and info.value.param == "input.prompt"
    assert "demixer can separate: " in info.value.message


@pytest.mark.usefixtures("backend")
def test_take_the_vocals_out_asks_which_it_means(api: Api) -> None:
    """ "Take the vocals out of this song" gave everything but the vocals and "get the vocals
    out of this song" the vocals: people say both of making a karaoke version and of making an
    a cappella. Either is now a 422 asking which, as "just the beat" is."""
    file_id = api.upload()
    for verb in ("take", "get"):
        r = api.queue_separate(file_id, f"{verb} the vocals out of this song")
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert (error["code"], error["param"]) == ("UNSUPPORTED_PROMPT", "input.prompt")
        assert error["message"].startswith(
            f"'{verb} the vocals out of this song' says '{verb} the vocals out', which can mean "
            "the vocals or everything but the vocals: say which; "
        )


def test_background_vocals_and_vocals_without_reverb() -> None:
    assert map_prompt("background vocals", ALL) == PromptMatch("karaoke", "backing_vocals")
    with pytest.raises(UnsupportedPrompt, match="karaoke or karaoke-5hp or vr-bve can"):
        map_prompt("the background singers", DEFAULT)  # not all the vocals
    assert map_prompt("vocals without reverb", ALL) == PromptMatch("dry-vocals", "dry_vocals")
    with pytest.raises(UnsupportedPrompt, match="dry-vocals can"):
        map_prompt("vocals without reverb", DEFAULT)
    # "From" names what the target comes out of; the documented example is the piano.
    assert map_prompt("separate the piano from the background music", ALL) == PromptMatch(
        "bs-roformer-sw-6stems", "piano"
    )
    assert map_prompt("lead vocals without the backing vocals", ALL) == PromptMatch(
        "karaoke", "lead_vocals"
    )
    # Without the karaoke recipe the lead vocal stands in for all the vocals, which hold
    # the backing vocals this prompt leaves out.
    with pytest.raises(UnsupportedPrompt, match="without the backing vocals"):
        map_prompt("lead vocals without the backing vocals", DEFAULT)


def test_every_sound_listed_as_separable_is_what_its_name_asks_for() -> None:
    # What GET /v1/models (and the web page's hint) lists, typed in as it is listed.
    listed = separable(ALL)
    assert "drums_other" not in listed and "noreverb" not in listed and "male" not in listed
    for sound in listed:
        match = map_prompt(sound, ALL)
        if sound.startswith("accompaniment"):
            assert match[1:] == ("vocals", True)
        else:
            assert match[1:] == (sound, False)


@pytest.mark.parametrize("cleanup", ["mel-roformer-denoise-aufr33", "mel-roformer-crowd-aufr33"])
def test_a_clean_up_models_other_stem_is_not_the_other_instruments(cleanup: str) -> None:
    """The denoiser and the crowd remover call what they take off, or what they leave, `other`:
    neither is the instruments besides vocals, drums and bass."""
    installed = _specs("mel-roformer-vocals-kim", cleanup)
    with pytest.raises(UnsupportedPrompt, match="htdemucs"):
        map_prompt("the other instruments", installed)


@pytest.mark.parametrize(
    ("prompt", "model", "stem"),
    [
        ("remove the noise", "mel-roformer-denoise-aufr33", "noise"),
        ("get rid of the hiss", "mel-roformer-denoise-aufr33", "noise"),
        ("denoise this", "mel-roformer-denoise-aufr33", "noise"),
        ("remove the reverb", "mel-roformer-dereverb-anvuew", "reverb"),
        ("dereverb", "mel-roformer-dereverb-anvuew", "reverb"),
        ("de-echo it", "mel-roformer-deecho-sucial", "echo"),
        ("remove the crowd noise", "mel-roformer-crowd-aufr33", "crowd"),
        ("no applause", "mel-roformer-crowd-aufr33", "crowd"),
        ("get rid of the cheering", "mel-roformer-crowd-aufr33", "crowd"),
    ],
)
def test_clean_up_prompts_reach_the_clean_up_models(prompt: str, model: str, stem: str) -> None:
    """ "Remove the noise" (or the reverb, the echo, the crowd) was refused as an effect though
    the catalogue has a model that takes each off: the prompt asks for everything but it."""
    assert map_prompt(prompt, ALL) == PromptMatch(model, stem, True)
    with pytest.raises(UnsupportedPrompt, match=f"`demixer models pull {model}`"):
        map_prompt(prompt, DEFAULT)
    # Taken off another sound, or left out of it, it is not one separation.
    for refused in (f"the drums without the {stem}", f"remove the {stem} from the drums"):
        with pytest.raises(UnsupportedPrompt, match="which one separation cannot give"):
            map_prompt(refused, ALL)


@pytest.mark.usefixtures("backend")
def test_remove_the_noise_is_a_denoise_job(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """``POST /v1/queue/audio/separate`` with "remove the noise": a 422 naming the denoiser to
    pull, then, with it installed, a job that runs it."""
    file_id = api.upload()
    r = api.queue_separate(file_id, "remove the noise")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "UNSUPPORTED_PROMPT"
    assert "`demixer models pull mel-roformer-denoise-aufr33`" in r.json()["error"]["message"]
    installed = [*DEFAULT, get_spec("mel-roformer-denoise-aufr33")]
    monkeypatch.setattr(submit, "installed_models", lambda _: installed)
    r = api.queue_separate(file_id, "remove the noise")
    assert r.status_code == 202, r.text
    assert r.json()["engine_model"] == "mel-roformer-denoise-aufr33"


def test_the_crowd_itself_is_the_crowd_removers_target() -> None:
    assert map_prompt("isolate the applause", ALL) == PromptMatch(
        "mel-roformer-crowd-aufr33", "crowd", False
    )


@pytest.mark.parametrize(
    ("prompt", "stem", "invert"),
    [
        ("isolate the dialogue", "dialogue", False),
        ("just the speech", "dialogue", False),
        ("the narrator's voice over", "dialogue", False),
        ("remove the dialogue", "dialogue", True),
        ("the M&E track", "dialogue", True),  # music and effects: what a dub is mixed onto
        ("the international track", "dialogue", True),
        ("the music", "music", False),
        ("keep the soundtrack, remove everything else", "music", False),
        ("no music", "music", True),
        ("the sound effects", "effects", False),
        ("everything but the foley", "effects", True),
    ],
)
def test_a_films_dialogue_music_and_effects(prompt: str, stem: str, invert: bool) -> None:
    """A video's three stems, from Bandit v2 where it is installed; without it the dialogue is
    a vocal model's vocals (and everything but it the instrumental), the music everything but
    the vocals, as these prompts read before; the effects only Bandit v2 separates."""
    assert map_prompt(prompt, ALL) == PromptMatch("bandit-v2-dnr", stem, invert)
    if stem == "effects":
        with pytest.raises(UnsupportedPrompt, match="`demixer models pull bandit-v2-dnr`"):
            map_prompt(prompt, DEFAULT)
        return
    vocals_not_inverted = (stem == "dialogue") != invert
    expected = PromptMatch("spleeter-2stems", "vocals", not vocals_not_inverted)
    assert map_prompt(prompt, DEFAULT) == expected


@pytest.mark.parametrize(
    ("prompt", "stem", "invert"),
    [("the sound effects", "effects", False), ("remove the dialogue", "dialogue", True)],
)
def test_bandit_plus_makes_a_films_stems_where_bandit_v2_is_not_installed(
    prompt: str, stem: str, invert: bool
) -> None:
    """BandIt Plus names its stems speech, music and effects (Bandit v2: sfx); both are
    asked for by the same words, and Bandit v2 is preferred where both are installed."""
    plus = get_spec("bandit-plus-dnr")
    assert map_prompt(prompt, [*DEFAULT, plus]) == PromptMatch("bandit-plus-dnr", stem, invert)
    both = [*DEFAULT, plus, get_spec("bandit-v2-dnr")]
    assert map_prompt(prompt, both) == PromptMatch("bandit-v2-dnr", stem, invert)


def test_songs_keep_their_vocal_models_with_a_film_model_installed() -> None:
    """Bandit v2 makes `dialogue`, `music` and `effects` only: the vocals, the instrumental and
    "music without vocals" still come from the vocal models."""
    installed = [*DEFAULT, get_spec("bandit-v2-dnr")]
    assert map_prompt("the vocals", installed) == PromptMatch("spleeter-2stems", "vocals")
    assert map_prompt("instrumental", installed) == PromptMatch("spleeter-2stems", "vocals", True)
    assert map_prompt("no music, just the vocals", installed).model == "spleeter-2stems"
