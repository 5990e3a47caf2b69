"""Recipes, ensembles and the planner on the engine's real code paths.

Most tests chain small deterministic fakes (``fake_models``: stems that are known functions of
their input, which do not add up to it), so what a chain or an ensemble must return can be
computed by hand; one chains the real Spleeter weights on real music. The planner is tested on
the real catalogue's entries and published figures.
"""

from __future__ import annotations

import json
import logging
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import fake_models
from audiofiles import decode_stream, stempeg_example, tone
from demixer.audio import OutputFormat
from demixer.cli_inputs import Input, check_distinct_tracks
from demixer.engine import Separator, plan_stems
from demixer.engine.cleanup import keep_stem
from demixer.engine.outputs import output_paths
from demixer.engine.stems import choose_model
from demixer.errors import (
    Cancelled,
    InvalidOutput,
    ModelFailed,
    ModelUnavailable,
    UnknownModel,
    UnknownStem,
)
from demixer.models import registry
from demixer.models.base import InputStats
from demixer.models.cascade import MIX, GraphBackend, Step
from demixer.models.catalogue.ensembles import ensemble_members, ensemble_mode
from demixer.models.catalogue.recipes import recipe_spec
from demixer.models.ensemble import EnsembleBackend, combine
from demixer.models.planner import (
    canonical_stem,
    canonical_stems,
    choose,
    cleanup_model,
    produces,
)
from demixer.models.registry import ModelSpec, get_spec, list_specs, model_card
from demixer.naming import output_name, renamed

SR = 44100
KARAOKE_STEPS = (
    {"model": "fake-vocals", "input": "mix", "keep": {"Vocals": "vocals"}, "rest": "instrumental"},
    {
        "model": "fake-karaoke",
        "input": "vocals",
        "keep": {"vocals": "lead_vocals"},
        "rest": "backing_vocals",
    },
)

LEAD = {"lead": "lead_vocals"}


def _register(monkeypatch: pytest.MonkeyPatch, *specs: ModelSpec) -> None:
    for spec in specs:
        monkeypatch.setitem(registry._BY_ID, spec.id, spec)


@pytest.fixture()
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModelSpec]:
    """Fake models (4 s windows) and a karaoke recipe over them, registered."""
    specs = {
        "fake-vocals": fake_models.fake_spec("fake-vocals", "vocals"),
        "fake-vocals2": fake_models.fake_spec("fake-vocals2", "vocals2", window=3 * SR),
        "fake-karaoke": fake_models.fake_spec("fake-karaoke", "karaoke"),
        "fake-four": fake_models.fake_spec("fake-four", "four"),
        "fake-level": fake_models.fake_spec("fake-level", "level"),
    }
    specs["fake-kara"] = recipe_spec(
        "fake-kara",
        description="test karaoke",
        stems=("lead_vocals", "backing_vocals", "instrumental"),
        steps=KARAOKE_STEPS,
        known=specs,
    )
    specs["fake-level-kara"] = recipe_spec(
        "fake-level-kara",
        description="test karaoke whose second model scales by its whole input",
        stems=("lead_vocals", "backing_vocals", "instrumental"),
        steps=(KARAOKE_STEPS[0], {**KARAOKE_STEPS[1], "model": "fake-level", "keep": LEAD}),
        known=specs,
    )
    _register(monkeypatch, *specs.values())
    fake_models.CALLS.clear()
    return specs


def _noise(seconds: float, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((2, int(seconds * SR)))).astype(np.float32)


# --- recipes -----------------------------------------------------------------------------------


def test_a_recipe_chains_its_models_as_declared(fakes: dict[str, ModelSpec]) -> None:
    x = _noise(2.0)  # one window
    out = Separator("fake-kara").separate_array(x, SR)
    vocals = fake_models.lowpass(x, 8)  # fake-vocals' "Vocals"
    assert list(out) == ["lead_vocals", "backing_vocals", "instrumental"]
    np.testing.assert_allclose(out["lead_vocals"], 0.6 * vocals, atol=1e-6)
    np.testing.assert_allclose(out["backing_vocals"], 0.4 * vocals, atol=1e-6)
    # The vocal model's own "Instrumental" is 0.9 of the rest: the recipe's remainder is not.
    np.testing.assert_allclose(out["instrumental"], x - vocals, atol=1e-6)


def test_stems_add_up_to_the_input_across_windows_and_each_model_runs_once_per_window(
    fakes: dict[str, ModelSpec],
) -> None:
    x = _noise(11.0)
    alone = Separator("fake-vocals")
    alone.separate_array(x, SR)
    windows = fake_models.CALLS["fake-vocals"]
    assert windows >= 3
    fake_models.CALLS.clear()
    out = Separator("fake-kara").separate_array(x, SR)
    assert dict(fake_models.CALLS) == {"fake-vocals": windows, "fake-karaoke": windows}
    np.testing.assert_allclose(sum(out.values()), x, atol=2e-6)
    # Two of the three stems asked for: the residual is exactly the third.
    some = Separator("fake-kara").separate_array(x, SR, ["lead_vocal", "back_vocal"])
    assert list(some) == ["lead_vocals", "backing_vocals", "residual"]
    np.testing.assert_allclose(some["residual"], out["instrumental"], atol=2e-6)


@pytest.mark.parametrize("recipe", ["fake-kara", "fake-level-kara"])
def test_a_recipe_at_another_rate_and_mono_input_still_adds_up(
    fakes: dict[str, ModelSpec], recipe: str
) -> None:
    # Mono at 32 kHz, resampled into the 44.1 kHz steps and back (tones: well inside the band
    # the resampler keeps); the residual is computed at the input's rate: exact. The second
    # recipe keeps the vocals in a spool (mono, at the input's rate) before its second step.
    x = tone(3.0, 32000, [220.0, 1250.0, 5100.0]).sum(axis=0, keepdims=True)
    out = Separator(recipe).separate_array(x, 32000, ["lead_vocals", "backing_vocals"])
    assert all(a.shape == x.shape for a in out.values())
    np.testing.assert_allclose(sum(out.values()), x, atol=1e-6)
    assert np.sqrt(np.mean(out["residual"] ** 2)) > 0.05  # the instrumental: not empty


def _repeated(block: np.ndarray, times: int) -> Iterator[np.ndarray]:
    for _ in range(times):
        yield block


def _peak_memory(separator: Separator, seconds: int) -> int:
    """The most memory (traced) held while ``seconds`` of noise stream through ``separator``."""
    block = _noise(1.0)
    stats = separator.input_stats(lambda: _repeated(block, seconds), SR)
    tracemalloc.start()
    for _ in separator.stream(_repeated(block, seconds), SR, separator.plan(None), stats=stats):
        pass
    size = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return size


def test_memory_is_flat_in_length(fakes: dict[str, ModelSpec]) -> None:
    separator = Separator("fake-kara")
    short, long = _peak_memory(separator, 20), _peak_memory(separator, 160)
    assert long < 1.25 * short, (short, long)


def _louder_at_the_end(seconds: float) -> np.ndarray:
    """Noise whose last quarter is ten times louder: a window's peak is not the song's."""
    x = _noise(seconds)
    x[:, x.shape[1] * 3 // 4 :] *= 10
    return x


def test_each_step_runs_over_its_whole_input_as_its_model_alone(
    fakes: dict[str, ModelSpec], tmp_path: Path
) -> None:
    """karaoke-5hp's shape: a vocal model, then on its vocals a model that scales by its whole
    input (a VR model divides by the loudest bin). The recipe ran both inside shared windows
    (4 s here, 2 minutes for the catalogue's), the second scaling each window by its own peak:
    stems no chain of the two models run file by file gives. Now the vocals are spooled, their
    peak measured, and the second model streams them: each model's stems for its whole input."""
    x = _louder_at_the_end(11.0)
    vocals = Separator("fake-vocals").separate_array(x, SR)["Vocals"]
    lead = 0.5 * vocals / np.abs(vocals).max()
    out = Separator("fake-level-kara").separate_array(x, SR)
    np.testing.assert_allclose(out["lead_vocals"], lead, atol=1e-6)
    np.testing.assert_allclose(out["backing_vocals"], vocals - lead, atol=1e-6)
    np.testing.assert_allclose(out["instrumental"], x - vocals, atol=1e-6)
    # From a file: the stems, and nothing else left where they were written (the spool).
    sf.write(tmp_path / "song.wav", x.T, SR, subtype="FLOAT")
    result = Separator("fake-level-kara").separate_file(
        tmp_path / "song.wav", tmp_path / "out", fmt=OutputFormat.parse("wav", "32f")
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "song_backing_vocals.wav",
        "song_instrumental.wav",
        "song_lead_vocals.wav",
    ]
    lead_file, _ = sf.read(result.paths["lead_vocals"], dtype="float32")
    np.testing.assert_allclose(lead_file.T, lead, atol=1e-6)


def test_two_models_that_scale_by_their_inputs_one_after_the_other(
    fakes: dict[str, ModelSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second such model reads a stem the first makes: the chain waits twice (two spools),
    each model scaling by its whole input."""
    steps = (
        KARAOKE_STEPS[0],
        {"model": "fake-level", "input": "vocals", "keep": {"rest": "tenth"}, "rest": "most"},
        {"model": "fake-level", "input": "tenth", "keep": {"lead": "levelled"}, "rest": "left"},
    )
    spec = recipe_spec(
        "fake-level-twice",
        description="test",
        stems=("levelled", "left", "most", "instrumental"),
        steps=steps,
        known=fakes,
    )
    _register(monkeypatch, spec)
    x = _louder_at_the_end(9.0)
    vocals = Separator("fake-vocals").separate_array(x, SR)["Vocals"]
    out = Separator(spec.id).separate_array(x, SR)
    tenth = 0.1 * vocals  # the first levelling model's "Rest"
    levelled = 0.5 * tenth / np.abs(tenth).max()
    np.testing.assert_allclose(out["levelled"], levelled, atol=1e-6)
    np.testing.assert_allclose(out["left"], tenth - levelled, atol=1e-6)
    np.testing.assert_allclose(out["most"], vocals - tenth, atol=1e-6)
    np.testing.assert_allclose(out["instrumental"], x - vocals, atol=1e-6)


def test_a_first_step_that_scales_by_the_input_gets_the_engines_measure_of_it(
    fakes: dict[str, ModelSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the mix itself, such a model needs no spool: the engine's pass over the input (one,
    before the stream) measures it, as for the model alone."""
    steps = (
        {"model": "fake-level", "keep": {"lead": "levelled"}, "rest": "rest"},
        {**KARAOKE_STEPS[1], "input": "levelled"},
    )
    spec = recipe_spec(
        "fake-level-first",
        description="test",
        stems=("lead_vocals", "backing_vocals", "rest"),
        steps=steps,
        known=fakes,
    )
    _register(monkeypatch, spec)
    x = _louder_at_the_end(9.0)
    separator = Separator(spec.id)
    passes = 0

    def blocks() -> Iterator[np.ndarray]:
        nonlocal passes
        passes += 1
        return _repeated(x, 1)

    assert separator.input_stats(blocks, SR) == {"fake-peak": InputStats(peak=np.abs(x).max())}
    assert passes == 1
    out = separator.separate_array(x, SR)
    levelled = 0.5 * x / np.abs(x).max()
    np.testing.assert_allclose(out["lead_vocals"] + out["backing_vocals"], levelled, atol=1e-6)
    np.testing.assert_allclose(out["lead_vocals"], 0.6 * levelled, atol=1e-6)
    np.testing.assert_allclose(out["rest"], x - levelled, atol=1e-6)


def test_a_chain_that_spools_reports_progress_cancels_and_stays_flat_in_memory(
    fakes: dict[str, ModelSpec],
) -> None:
    separator = Separator("fake-level-kara")
    plan = separator.plan(None)
    # the second model's peak is its input's, measured in the stream: nothing of the input's
    assert separator.input_stats(lambda: _repeated(_noise(1.0), 3), SR) == {}
    short, long = _peak_memory(separator, 20), _peak_memory(separator, 160)
    assert long < 1.25 * short, (short, long)
    block = _noise(1.0)
    fractions: list[float] = []
    for _ in separator.stream(
        _repeated(block, 12), SR, plan, 12 * SR, on_progress=fractions.append
    ):
        pass
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert 0.4 < fractions[len(fractions) // 2] < 0.7  # both models' shares, not one's
    asked = 0
    fake_models.CALLS.clear()

    def cancel() -> bool:
        nonlocal asked
        asked += 1
        return asked > 3  # before the first model's fourth window of four

    with pytest.raises(Cancelled):
        for _ in separator.stream(_repeated(block, 12), SR, plan, should_cancel=cancel):
            pass
    assert fake_models.CALLS["fake-level"] == 0 and fake_models.CALLS["fake-vocals"] == 3


@pytest.mark.parametrize(
    ("steps", "stems", "fault"),
    [
        ([(MIX, {"vocals": "v"}, "r"), ("nothing", {"vocals": "a"}, "b")], "v r", "no earlier"),
        ([(MIX, {"vocals": "v"}, "v")], "v", "made twice"),
        ([(MIX, {"vocals": "v"}, None)], "v", "without a remainder"),
        ([(MIX, {"drums": "v"}, "r")], "v r", "not a stem"),
        ([(MIX, {"vocals": "v"}, "r"), ("v", {"vocals": "a"}, "b")], "v a b r", "not v"),
    ],
)
def test_an_inconsistent_graph_is_refused(
    fakes: dict[str, ModelSpec],
    steps: list[tuple[str, dict[str, str], str | None]],
    stems: str,
    fault: str,
) -> None:
    backend = fake_models.FakeBackend(fakes["fake-vocals"])
    with pytest.raises(ValueError, match=fault):
        GraphBackend([Step(backend, *s) for s in steps], stems.split())


def test_a_recipe_loads_only_when_every_model_is_there() -> None:
    spec = get_spec("karaoke")
    assert spec.requires == ("mel-roformer-vocals-kim", "mel-roformer-karaoke-becruily")
    assert spec.license_class == "non-commercial"  # the strictest of its models'
    with pytest.raises(ModelUnavailable, match="mel-roformer-vocals-kim"):
        Separator("karaoke")


def test_real_spleeter_then_a_second_model_on_its_vocals(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out_dir = tmp_path
    karaoke = fake_models.fake_spec("fake-karaoke", "karaoke", window=60 * SR)
    steps = (
        {"model": "spleeter-2stems", "keep": {"vocals": "vocals"}, "rest": "instrumental"},
        KARAOKE_STEPS[1],
    )
    known = {"spleeter-2stems": get_spec("spleeter-2stems"), "fake-karaoke": karaoke}
    spec = recipe_spec(
        "spleeter-kara",
        description="test",
        stems=("lead_vocals", "backing_vocals", "instrumental"),
        steps=steps,
        known=known,
    )
    _register(monkeypatch, karaoke, spec)
    song = stempeg_example()
    mix = decode_stream(song, 0)
    spleeter = Separator("spleeter-2stems").separate_array(mix, SR, ["vocals"])
    result = Separator("spleeter-kara").separate_file(
        song,
        out_dir,
        fmt=OutputFormat.parse("wav", "32f"),
    )
    assert result.made_by == {
        "lead_vocals": "spleeter-kara (spleeter-2stems -> fake-karaoke)",
        "backing_vocals": "spleeter-kara (spleeter-2stems -> fake-karaoke)",
        "instrumental": "spleeter-kara (spleeter-2stems)",
    }
    files = {name: sf.read(path, dtype="float32")[0].T for name, path in result.paths.items()}
    np.testing.assert_allclose(files["lead_vocals"], 0.6 * spleeter["vocals"], atol=1e-4)
    np.testing.assert_allclose(files["instrumental"], mix - spleeter["vocals"], atol=1e-4)
    np.testing.assert_allclose(sum(files.values()), mix, atol=1e-4)


# --- ensembles ---------------------------------------------------------------------------------


def test_an_ensemble_averages_the_stems_its_members_share(fakes: dict[str, ModelSpec]) -> None:
    spec = get_spec("fake-vocals+fake-vocals2")
    assert spec.stems == ("vocals", "instrumental") and spec.requires == (
        "fake-vocals",
        "fake-vocals2",
    )
    x = _noise(2.0)
    separator = Separator(spec.id)
    out = separator.separate_array(x, SR)
    vocals = (fake_models.lowpass(x, 8) + fake_models.lowpass(x, 32)) / 2
    np.testing.assert_allclose(out["vocals"], vocals, atol=1e-6)
    np.testing.assert_allclose(out["instrumental"], x - vocals, atol=1e-6)
    assert dict(fake_models.CALLS) == {"fake-vocals": 1, "fake-vocals2": 1}
    assert separator.backend.window == 3 * SR  # the shorter member's
    # The instrumental is not an average of the members' (it was labelled as one, which for
    # max:a+b read as UVR's max spec of the instrumentals).
    assert separator.made_by(separator.plan(None)) == {
        "vocals": "fake-vocals+fake-vocals2 (avg of fake-vocals, fake-vocals2)",
        "instrumental": "fake-vocals+fake-vocals2 (the input minus its vocals)",
    }


def test_an_ensembles_members_run_at_the_quality_asked_for(
    fakes: dict[str, ModelSpec],
) -> None:
    """``-m spleeter-2stems+B`` ran Spleeter at its loaded level, Deezer's pipeline (``fast``),
    whatever ``--quality`` said, the default ``balanced`` too: the level never reached an
    ensemble's members."""
    x = _noise(1.0)
    spleeter = Separator("spleeter-2stems")
    alone = spleeter.separate_array(x, SR, ["vocals"], quality="balanced")
    spec = get_spec("spleeter-2stems+fake-vocals2")
    members = [
        ("spleeter-2stems", spleeter.backend),
        ("fake-vocals2", fake_models.load(fakes["fake-vocals2"])),
    ]
    ensemble = Separator.from_backend(spec, EnsembleBackend(members, spec.stems, "avg"))
    out = ensemble.separate_array(x, SR, quality="balanced")
    expected = (alone["vocals"] + fake_models.lowpass(x, 32)) / 2
    np.testing.assert_allclose(out["vocals"], expected, atol=1e-5)


def test_an_ensemble_member_that_crashes_is_named_and_nothing_is_written(
    fakes: dict[str, ModelSpec], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A member's crash said "model 'max:fake-vocals+fake-vocals2' failed": not which of the
    models to leave out or give more memory."""
    separate = fake_models.FakeBackend.separate

    def crash(self: fake_models.FakeBackend, mix: np.ndarray) -> dict[str, np.ndarray]:
        if self.id == "fake-vocals2":
            raise RuntimeError("CUDA out of memory")
        return separate(self, mix)

    monkeypatch.setattr(fake_models.FakeBackend, "separate", crash)
    song = tmp_path / "song.wav"
    sf.write(song, _noise(0.5).T, SR)
    with pytest.raises(ModelFailed) as failed:
        Separator("max:fake-vocals+fake-vocals2").separate_file(song, tmp_path / "out")
    assert failed.value.message == "model 'fake-vocals2' failed: RuntimeError: CUDA out of memory"
    assert list((tmp_path / "out").iterdir()) == []


def test_an_ensemble_id_names_audio_separators_modes_and_weights(
    fakes: dict[str, ModelSpec],
) -> None:
    """A user of audio-separator (``--ensemble_algorithm median_wave``, weights) or MSST's
    ensemble.py found only avg, max and min: ``median_wave:a+b`` was an unknown model. Their
    names for demixer's own modes are read as demixer's; the id a result names is demixer's."""
    x = _noise(1.0)
    low8, low32 = fake_models.lowpass(x, 8), fake_models.lowpass(x, 32)
    ids = {
        # the id asked for -> the id of the result, and its vocals
        "fake-vocals@3+fake-vocals2": ("fake-vocals@3+fake-vocals2", (3 * low8 + low32) / 4),
        "avg_fft:fake-vocals@.5+fake-vocals2@1": (
            "fake-vocals@0.5+fake-vocals2",
            (0.5 * low8 + low32) / 1.5,
        ),
        "max_wave:fake-vocals+fake-vocals2": (
            "max_wave:fake-vocals+fake-vocals2",
            np.where(np.abs(low32) > np.abs(low8), low32, low8),
        ),
        "uvr_min_spec:fake-vocals+fake-vocals2": (
            "min:fake-vocals+fake-vocals2",
            combine([low8, low32], "min"),
        ),
    }
    for asked, (named, vocals) in ids.items():
        separator = Separator(asked)  # through the engine's windows (fakes take windows)
        assert separator.spec.id == named
        out = separator.separate_array(x, SR)
        np.testing.assert_allclose(out["vocals"], vocals, atol=1e-6, rtol=0, err_msg=asked)
        np.testing.assert_allclose(out["instrumental"], x - vocals, atol=1e-5, rtol=0)
    assert get_spec("fake-vocals@3+fake-vocals2").description == (
        "Ensemble of fake-vocals, fake-vocals2 (average of the waveforms, weighted 3, 1)."
    )
    # A worker that runs both models runs the ensemble; the client checks both before sending.
    assert ensemble_members("fake-vocals@3+fake-vocals2") == ["fake-vocals", "fake-vocals2"]
    assert ensemble_mode("median_fft") == "median_fft" and ensemble_mode("median") is None
    form = "an ensemble's id is A+B (the average), MODE:A+B with MODE one of avg, max, min,"
    for wrong, fault in (
        ("median:fake-vocals+fake-vocals2", "'median' is not an ensemble mode"),
        ("max:fake-vocals@2+fake-vocals2", "weights go with the average only, not with max"),
        ("fake-vocals@0+fake-vocals2", "the weight '0' of fake-vocals is not a number above 0"),
        ("fake-vocals@-1+fake-vocals2", "the weight '-1' of fake-vocals is not a number"),
        ("fake-vocals@1e3+fake-vocals2", "the weight '1e3' of fake-vocals is not a number"),
        ("fake-vocals@" + "9" * 400 + "+fake-vocals2", "the weight '999"),
        ("max:fake-vocals", "it names one model: an ensemble combines two or more"),
        ("fake-vocals++fake-vocals2", "'' is not a model's id"),
        ("max:fake-vocals+min:fake-vocals2", "'min:fake-vocals2' is not a model's id"),
    ):
        with pytest.raises(UnknownModel) as refused:
            get_spec(wrong)
        assert refused.value.message.startswith(f"ensemble {wrong!r}: {fault}"), wrong
        assert form in refused.value.message, wrong
        assert ensemble_members(wrong) is None


def test_an_ensemble_of_a_vocal_and_a_four_stem_model_shares_the_vocals_only(
    fakes: dict[str, ModelSpec],
) -> None:
    spec = get_spec("fake-four+fake-vocals")
    assert spec.stems == ("vocals",) and spec.partial
    with pytest.raises(UnknownModel):
        get_spec("fake-four+nope")
    # The vocals leave the rest of the song out: the residual comes with them, as the README
    # promises ("requested stems + residual add back to the input"), asked for or not.
    x = _noise(2.0)
    separator = Separator(spec.id)
    for requested in (None, ["vocals"]):
        out = separator.separate_array(x, SR, requested)
        assert set(out) == {"vocals", "residual"}, requested
        np.testing.assert_allclose(out["vocals"] + out["residual"], x, atol=1e-5)
    assert not get_spec("fake-vocals+fake-vocals2").partial  # vocals + instrumental: whole


def test_an_ensembles_model_folder_is_a_name_windows_and_smb_shares_take(
    fakes: dict[str, ModelSpec], tmp_path: Path
) -> None:
    """``{model}`` of ``max:a+b`` was a folder named with ``:``, which Windows and SMB shares
    refuse (and NTFS reads as a stream of the file ``max``); a single model's id is kept."""
    song = tmp_path / "song.wav"
    sf.write(song, _noise(0.5).T, SR)
    template = "{model}/{track}_{stem}.{ext}"
    separator = Separator("max:fake-vocals+fake-vocals2")
    result = separator.separate_file(song, tmp_path / "out", ["vocals"], template=template)
    assert result.paths["vocals"] == tmp_path / "out/max_fake-vocals+fake-vocals2/song_vocals.wav"
    result = Separator("fake-vocals2").separate_file(song, tmp_path / "out", template=template)
    assert result.paths["vocals"] == tmp_path / "out/fake-vocals2/song_vocals.wav"


def test_a_songs_stems_are_names_windows_and_smb_shares_take(
    fakes: dict[str, ModelSpec], tmp_path: Path
) -> None:
    """Linux takes any character in a song's name but "/": its stems were named with the
    ``<>:"\\|?*`` Windows and SMB shares refuse (a ``:`` names an NTFS stream) and a
    ``{track}/`` folder with the trailing dot Windows drops. They are spelled ``_`` now, on
    this machine and in the server's download names; an ordinary name is kept as it was."""
    song = tmp_path / 'Live: What? <1> | "x" *.wav'
    sf.write(song, _noise(0.5).T, SR)
    separator = Separator("fake-vocals2")
    result = separator.separate_file(song, tmp_path / "out", ["vocals"])
    assert result.paths["vocals"] == tmp_path / "out/Live_ What_ _1_ _ _x_ __vocals.wav"
    dotted = tmp_path / "Vol. 1..wav"
    sf.write(dotted, _noise(0.5).T, SR)
    result = separator.separate_file(dotted, tmp_path / "out", template="{track}/{stem}.{ext}")
    assert result.paths["vocals"] == tmp_path / "out/Vol. 1_/vocals.wav"
    assert output_name("a:b?", "vocals", "flac") == "a_b__vocals.flac"  # the server's
    assert output_name("Vol. 1 (Live)", "vocals", "wav") == "Vol. 1 (Live)_vocals.wav"
    # A download a server named before (a:b_vocals.wav) is named as this client names it.
    assert renamed("a:b_vocals.wav", "a:b", "a:b") == "a_b_vocals.wav"
    # "a?.wav" and "a*.wav" would both write a__vocals.wav: refused before either runs.
    with pytest.raises(InvalidOutput, match=r"would write the same stems \(a__STEM.EXT\)"):
        check_distinct_tracks([Input(Path(name), Path(".")) for name in ("a?.wav", "a*.wav")])


def test_a_song_named_after_a_windows_device_is_not_the_device(
    fakes: dict[str, ModelSpec], tmp_path: Path
) -> None:
    """A song called CON.wav (or aux.mp3.wav, "nul .wav", COM1.wav, any case) gave a
    ``{track}/`` folder, or a file named after the song, that Windows reads as a device: the
    folder cannot be made and a write to it is lost. The device's name gets a ``_``; a name
    that only starts with one (Console) is kept."""
    song = tmp_path / "CON.wav"
    sf.write(song, _noise(0.5).T, SR)
    separator = Separator("fake-vocals2")
    result = separator.separate_file(song, tmp_path / "out", template="{track}/{stem}.{ext}")
    assert result.paths["vocals"] == tmp_path / "out/CON_/vocals.wav"
    spelled = {
        name: output_paths(
            "{stem}/{track}", Path("out"), name, ["v"], OutputFormat("wav", "16"), "m"
        )
        for name in ("aux.mp3", "nul ", "Com1", "lpt9.x", "Console", "COM10")
    }
    assert {name: paths["v"].name for name, paths in spelled.items()} == {
        "aux.mp3": "aux_.mp3.wav",
        "nul ": "nul__.wav",  # the trailing space is a "_" too
        "Com1": "Com1_.wav",
        "lpt9.x": "lpt9_.x.wav",
        "Console": "Console.wav",
        "COM10": "COM10.wav",
    }
    assert output_name("Nul.live", "vocals", "wav") == "Nul_.live_vocals.wav"  # the server's


@pytest.mark.parametrize("names", [("Song.wav", "song.flac"), ("Caf\u00e9.wav", "Cafe\u0301.wav")])
def test_songs_whose_names_differ_in_capitals_or_accent_forms_are_refused(
    names: tuple[str, str],
) -> None:
    """macOS, Windows and a USB stick's exFAT take "Song_vocals.wav" and "song_vocals.wav" (or
    an "é" in one piece and as "e" + accent, as macOS writes it) for one file: the second
    song's stems silently replaced the first's there, though Linux keeps both inputs."""
    first, second = (Input(Path(name), Path(".")) for name in names)
    with pytest.raises(InvalidOutput) as refused:
        check_distinct_tracks([first, second])
    a, b = (Path(name).stem for name in names)
    assert refused.value.message == (
        f"{names[0]} and {names[1]} would write stems whose names differ only in capitals or in "
        f"how an accent is stored ({a}_STEM.EXT, {b}_STEM.EXT): one file on macOS, Windows "
        "and USB sticks: rename one, or separate them into different -o folders"
    )
    check_distinct_tracks([first, Input(Path(names[1]), Path("other"))])  # other folders: fine


def test_spectrogram_max_and_min_pick_per_bin() -> None:
    t = np.arange(SR) / SR
    a = np.stack([np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
    b = np.stack([0.5 * np.sin(2 * np.pi * 3000 * t)] * 2).astype(np.float32)

    def db(error: np.ndarray, reference: np.ndarray) -> float:
        return float(10 * np.log10(np.sum(error**2) / np.sum(reference**2)))

    # Disjoint spectra: the max keeps both tones, the min neither.
    assert db(combine([a, b], "max") - (a + b), a + b) < -30
    assert db(combine([a, b], "min"), a + b) < -20
    for mode in ("avg", "max", "min"):  # one estimate twice is that estimate
        np.testing.assert_allclose(combine([a, a], mode), a, atol=1e-4)


@pytest.mark.parametrize("count", [3, 4])  # a median of an odd and of an even count
def test_each_ensemble_mode_is_audio_separators_algorithm_of_that_name(count: int) -> None:
    """Each mode equals audio-separator's ``Ensembler`` (``--ensemble_algorithm``, weights)
    given the same fp32 estimates. The length ends 1023 samples past a frame's centre: there
    the per-bin modes' inverse STFT divides by nearly zero, and audio-separator's output (up to
    10^3 on this length) is not the one to match; demixer's extra frame keeps it sane. (UVR's
    max / min spec are the test above: of two magnitudes exactly equal, as one bin of these
    four estimates has, UVR takes the later estimate's, audio-separator's max_fft and demixer
    the first's.)"""
    from audio_separator.separator.ensembler import Ensembler

    rng = np.random.default_rng(5)
    n = 8 * 1024 + 1023
    t = np.arange(n) / SR
    tone = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])
    estimates = [
        (0.3 * (1 + 0.1 * i) * tone + 0.05 * rng.standard_normal(tone.shape)).astype(np.float32)
        for i in range(count)
    ]
    log = logging.getLogger("audio-separator")
    framed = n // 1024 * 1024  # up to the last frame's centre
    weights = [2.0, 1.0, 0.5, 3.0][:count]
    for algorithm, weighted in (
        ("avg_wave", weights),
        ("median_wave", None),
        ("max_wave", None),
        ("min_wave", None),
        ("avg_fft", weights),
        ("median_fft", None),
        ("max_fft", None),
        ("min_fft", None),
    ):
        theirs = Ensembler(log, algorithm, weighted).ensemble([e.copy() for e in estimates])
        mode = ensemble_mode(algorithm)
        assert mode is not None, algorithm
        ours = combine(estimates, mode, weighted)
        assert ours.shape == (2, n) and ours.dtype == np.float32
        whole = algorithm.endswith("_wave")
        end = n if whole else framed  # UVR's spec output ends at its last frame's centre
        np.testing.assert_allclose(ours[:, :end], theirs[:, :end], atol=1e-5, rtol=0,
                                   err_msg=algorithm)  # fmt: skip
        assert np.abs(ours).max() < 1.0, algorithm
    # Every bin a tie: the first estimate's, as audio-separator's max_fft / min_fft and MSST's.
    tied = [estimates[0], -estimates[0]]
    for mode in ("max", "min", "max_wave", "min_wave"):
        np.testing.assert_allclose(combine(tied, mode)[:, :framed], estimates[0][:, :framed],
                                   atol=1e-5, rtol=0, err_msg=mode)  # fmt: skip


def test_an_ensembles_max_and_min_are_uvrs_max_and_min_spec() -> None:
    """``max:a+b`` is documented as UVR's Max Spec, but it framed the spectrograms at hop 512
    (UVR: 1024): other bins were picked, -22 dB from UVR's result on three noisy tones. The
    oracles are audio-separator's (UVR's algorithm, as its users run it) and MSST's
    ensemble.py for the average."""
    from audio_separator.separator.ensembler import Ensembler
    from msst._ensemble import average_waveforms

    rng = np.random.default_rng(5)
    t = np.arange(SR) / SR
    tone = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])
    estimates = [
        (0.3 * (1 + 0.1 * i) * tone + 0.05 * rng.standard_normal(tone.shape)).astype(np.float32)
        for i in range(3)
    ]
    log = logging.getLogger("audio-separator")
    for mode, algorithm in (("max", "uvr_max_spec"), ("min", "uvr_min_spec")):
        uvr = Ensembler(log, algorithm).ensemble([e.copy() for e in estimates])
        # UVR's output stops at its last frame's centre; the samples after it are compared
        # below, with MSST's.
        ours = combine(estimates, mode)
        np.testing.assert_allclose(ours[:, : uvr.shape[1]], uvr, atol=1e-6, err_msg=mode)
    reference = average_waveforms(np.stack(estimates), np.ones(3), "avg_wave")
    np.testing.assert_allclose(combine(estimates, "avg"), reference, atol=1e-6)
    # MSST's min_fft is the same pick over the whole length, but its last samples, past its
    # last frame's centre, divide by nearly zero: a spike (up to 10^4 on this length) that
    # demixer's extra frame avoids, keeping every sample before them UVR's.
    short = [e[:, : 5 * 1024 + 1023] for e in estimates]
    msst = average_waveforms(np.stack(short), np.ones(3), "min_fft")
    ours = combine(short, "min")
    np.testing.assert_allclose(ours[:, : 5 * 1024], msst[:, : 5 * 1024], atol=1e-6)
    assert np.abs(ours).max() < 1.0 < np.abs(msst).max()


# --- the planner -------------------------------------------------------------------------------


def _specs(*ids: str) -> list[ModelSpec]:
    return [get_spec(i) for i in ids]


def test_the_planner_picks_by_published_figure() -> None:
    # Kim's vocals: 10.98 dB on MVSep Multisong; htdemucs 8.24: the figure decides.
    installed = _specs("htdemucs", "spleeter-2stems", "mel-roformer-vocals-kim")
    assert choose(["vocals"], installed).id == "mel-roformer-vocals-kim"
    # Drums: only htdemucs_ft publishes a drums figure (11.13).
    assert choose(["drums"], _specs("htdemucs", "htdemucs_ft")).id == "htdemucs_ft"
    assert choose(["vocals", "drums"], installed).id == "htdemucs"
    everything = list(list_specs())
    assert choose(["lead_vocals", "backing_vocals"], everything).id == "karaoke"
    assert choose(["dry_vocals"], everything).id == "dry-vocals"
    # Guitar and piano: no figure compares the six-stem models; the SW BS-RoFormer comes first.
    assert choose(["guitar", "piano", "vocals"], everything).id == "bs-roformer-sw-6stems"
    without_sw = [spec for spec in everything if spec.id != "bs-roformer-sw-6stems"]
    assert choose(["guitar", "piano", "vocals"], without_sw).id == "htdemucs_6s"
    # The four stems: htdemucs_ft's Multisong figures for all four decide; htdemucs_6s has
    # none for other, so the order does, and puts the SW model first.
    four = ["vocals", "drums", "bass", "other"]
    assert choose(four, _specs("bs-roformer-sw-6stems", "htdemucs_ft")).id == "htdemucs_ft"
    assert choose(four, _specs("bs-roformer-sw-6stems", "htdemucs_6s")).id == (
        "bs-roformer-sw-6stems"
    )


def test_a_drum_kit_and_male_and_female_voices_come_from_their_recipes() -> None:
    # DrumSep and the male/female model were trained on a drum stem and a vocals stem: asked
    # for one of their stems, the planner chains the model that takes that stem out first.
    everything = list(list_specs())
    words = ["Kick Drum", "Hi-Hat", "hh", "snare_drum", "Male Vocal"]
    assert {word: canonical_stem(word) for word in words} == {
        "Kick Drum": "kick",
        "Hi-Hat": "hi_hat",
        "hh": "hi_hat",
        "snare_drum": "snare",
        "Male Vocal": "male_vocals",
    }
    assert choose(["kick", "hi_hat"], everything).id == "drum-kit"
    assert choose(["male_vocals", "female_vocals"], everything).id == "male-female"
    # Alone, the model still makes its own stems (under demixer's names).
    assert choose(["hi_hat"], _specs("mdx23c-drumsep")).id == "mdx23c-drumsep"
    drum_kit = get_spec("drum-kit")
    assert drum_kit.requires == ("scnet-xl-ihf", "mdx23c-drumsep")
    assert drum_kit.license_class == "not stated"
    steps = drum_kit.arch_params["steps"]
    assert [(s["input"], s["rest"]) for s in steps] == [
        ("mix", "no_drums"),
        ("drums", "drums_other"),
    ]
    assert steps[1]["keep"]["hh"] == "hi_hat"
    male_female = get_spec("male-female")
    assert male_female.requires == ("mel-roformer-vocals-kim", "bs-roformer-male-female")
    assert male_female.stems == ("male_vocals", "female_vocals", "other_vocals", "instrumental")


def test_what_nothing_installed_makes_is_an_error_naming_what_can_be_made() -> None:
    with pytest.raises(UnknownStem) as caught:
        choose_model(["lead_vocals", "instrumental"], _specs("spleeter-2stems", "cascade-4stems"))
    assert caught.value.message == (
        "no installed model or recipe makes lead_vocals (karaoke or karaoke-5hp or "
        "vr-karaoke-5hp or vr-karaoke-6hp can: `demixer models pull karaoke`); the installed "
        "ones make: bass, drums, instrumental, other, vocals"
    )
    assert choose_model(["instrumental"], _specs("spleeter-2stems")) is None
    # Each catalogue model and recipe that would make them, best first, the first to pull.
    with pytest.raises(UnknownStem) as caught:
        choose_model(["guitar", "vocals"], _specs("spleeter-2stems"))
    assert caught.value.message == (
        "no installed model or recipe makes guitar (bs-roformer-sw-6stems or htdemucs_6s or "
        "6stems or mel-roformer-guitar-becruily can: `demixer models pull "
        "bs-roformer-sw-6stems`); the installed ones make: instrumental, vocals"
    )
    # Made apart but not together: what makes them together.
    with pytest.raises(UnknownStem) as caught:
        choose_model(["lead_vocals", "drums"], _specs("karaoke", "htdemucs"))
    assert caught.value.message.startswith(
        "no installed model or recipe makes lead_vocals, drums together; the installed ones"
    )


def test_vendor_and_user_words_reach_the_models_stems() -> None:
    karaoke = get_spec("karaoke")
    plan = plan_stems(karaoke.id, karaoke.stems, ["Lead Vocal", "back_vocal"])
    assert plan.targets == ("lead_vocals", "backing_vocals")
    assert plan.residual_name == "residual" and plan.residual_optional
    # A 2-stem vocal model's "other" is what a user calls the instrumental.
    kim = ("vocals", "other")
    assert plan_stems("kim", kim, ["vocals", "instrumental"]).outputs == ("vocals", "instrumental")
    assert plan_stems("kim", ("Vocals", "Instrumental"), ["vocals"]).targets == ("Vocals",)


# --- clean-up by a model (MusicGPT's Dereverb) -------------------------------------------------


def test_dereverb_keeps_the_dry_stem_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cleanup_model("dereverb", list_specs()) == (
        get_spec("mel-roformer-dereverb-anvuew"),
        "noreverb",
    )
    # Sucial's de-reverb/de-echo model keeps `dry` and takes off `No dry`: its stems are the
    # de-echo pair; aufr33's denoiser's `dry` (beside `other`) stays `dry`, and its `other` is
    # the noise, not the other instruments (which a vocal model and it alone cannot make).
    echo = get_spec("mel-roformer-deecho-sucial")
    assert cleanup_model("deecho", list_specs()) == (echo, "dry")
    assert produces(echo) == ("noecho", "echo")
    denoise = get_spec("mel-roformer-denoise-aufr33")
    assert produces(denoise) == ("dry", "noise")
    assert choose(["dry"], list(list_specs())).id == "mel-roformer-denoise-aufr33"
    with pytest.raises(UnknownStem):
        choose(["other"], [get_spec("mel-roformer-vocals-kim"), denoise])
    # So is the crowd remover's `other` the recording without the crowd; UVR's MDX-Net crowd
    # model (added by a user) calls it `No Crowd` (no_crowd): one name for both.
    crowd = get_spec("mel-roformer-crowd-aufr33")
    assert produces(crowd) == ("crowd", "nocrowd")
    assert canonical_stems(("no_crowd", "crowd")) == {"no_crowd": "nocrowd", "crowd": "crowd"}
    assert choose(["nocrowd"], list(list_specs())).id == "mel-roformer-crowd-aufr33"
    with pytest.raises(UnknownStem):
        choose(["other"], [get_spec("mel-roformer-vocals-kim"), crowd])
    # And the guitar model's `other` is the song without its guitars: a `guitar` request takes
    # the six-stem models first (no published figure compares them), this one without them.
    guitar = get_spec("mel-roformer-guitar-becruily")
    assert produces(guitar) == ("guitar", "noguitar")
    assert choose(["noguitar"], list(list_specs())).id == "mel-roformer-guitar-becruily"
    assert choose(["guitar"], list(list_specs())).id == "bs-roformer-sw-6stems"
    assert choose(["guitar"], [get_spec("spleeter-2stems"), guitar]) is guitar
    with pytest.raises(UnknownStem):
        choose(["other"], [get_spec("mel-roformer-vocals-kim"), guitar])
    # And the breath model's (`aspiration` and `other`): breaths and the song without them.
    breath = get_spec("mel-roformer-aspiration-sucial")
    assert produces(breath) == ("breath", "nobreath")
    for asked in ("breath", "Breaths", "aspiration", "nobreath", "no breaths"):
        assert choose([canonical_stem(asked)], list(list_specs())) is breath, asked
    with pytest.raises(UnknownStem):
        choose(["other"], [get_spec("mel-roformer-vocals-kim"), breath])
    # UVR's backing-vocal model keeps the backing vocals (UVR's "Vocals" for it); the rest is
    # the lead on a vocals stem, the lead and the instruments on a song: named for neither.
    bve = get_spec("vr-bve")
    assert produces(bve) == ("backing_vocals", "no_backing_vocals")
    assert choose(["backing_vocals"], list(list_specs())).id == "karaoke"
    assert choose(["backing_vocals"], [get_spec("spleeter-2stems"), bve]) is bve
    with pytest.raises(UnknownStem):
        choose(["lead_vocals"], [get_spec("spleeter-2stems"), bve])
    assert cleanup_model("deecho", _specs("mel-roformer-denoise-aufr33")) is None
    assert cleanup_model("dereverb", _specs("spleeter-2stems")) is None
    _register(monkeypatch, fake_models.fake_spec("fake-dereverb", "dereverb"))
    x = _noise(2.0)
    blocks = [x[:, i : i + 10000] for i in range(0, x.shape[1], 10000)]
    dry = keep_stem(Separator("fake-dereverb"), "noreverb")(iter(blocks), SR)
    np.testing.assert_allclose(
        np.concatenate(list(dry), axis=1), fake_models.lowpass(x, 4), atol=1e-6
    )


# --- a user's own recipe ----------------------------------------------------------------------


def test_a_users_recipe_in_the_model_dir_is_a_model_like_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fakes: dict[str, ModelSpec]
) -> None:
    monkeypatch.setenv("DEMIXER_MODEL_DIR", str(tmp_path))
    (tmp_path / "recipes").mkdir()
    mine = {"id": "my-kara", "stems": ["lead_vocals", "backing_vocals", "instrumental"]}
    mine["steps"] = list(KARAOKE_STEPS)
    (tmp_path / "recipes" / "my-kara.json").write_text(json.dumps(mine))
    spec = get_spec("my-kara")
    assert spec in list_specs() and spec.requires == ("fake-vocals", "fake-karaoke")
    assert choose(["backing_vocals"], [spec]).id == "my-kara"
    out = Separator("my-kara").separate_array(_noise(2.0), SR)
    assert list(out) == ["lead_vocals", "backing_vocals", "instrumental"]
    assert model_card("my-kara").startswith("# my-kara\n")
    # A faulty file is one clear error naming it, wherever models are listed.
    (tmp_path / "recipes" / "bad.json").write_text('{"id": "spleeter-2stems", "stems": []}')
    with pytest.raises(UnknownModel) as caught:
        list_specs()
    assert caught.value.message.endswith("bad.json: the id 'spleeter-2stems' is already taken")


def test_a_users_recipe_whose_id_spells_an_ensemble_is_refused_naming_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fakes: dict[str, ModelSpec]
) -> None:
    # `my+kara` would be split into `my` and `kara` by an ensemble naming it, counted as an
    # ensemble in metrics, and `fake-vocals+fake-vocals2` would hide that ensemble.
    monkeypatch.setenv("DEMIXER_MODEL_DIR", str(tmp_path))
    (tmp_path / "recipes").mkdir()
    mine = {"id": "my+kara", "stems": ["lead_vocals", "backing_vocals", "instrumental"]}
    mine["steps"] = list(KARAOKE_STEPS)
    # `my@v2` could not be a member either: `my@v2+b` reads `v2` as the member's weight.
    for recipe_id in ("my+kara", "my@v2"):
        (tmp_path / "recipes" / "mine.json").write_text(json.dumps({**mine, "id": recipe_id}))
        with pytest.raises(UnknownModel) as caught:
            get_spec(recipe_id)
        assert caught.value.message == (
            f"recipe file {tmp_path}/recipes/mine.json: the id {recipe_id!r} holds '+', ':' or "
            "'@', which name an ensemble's models"
        )
