"""The separation engine: stem plans, windowed overlap-add, and the Separator on real audio.

``plan_stems`` and ``overlap_add`` are checked with known answers (a fake ``separate`` whose
output is computable). The Separator runs the real Spleeter weights on real files written by
FFmpeg's encoders (``audiofiles.py``) and on the MUSDB18 excerpt, with its window shrunk to
one second so that several windows and cross-faded seams occur on a few seconds of audio.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from audiofiles import AudioFiles, encode, stempeg_example, tone
from crafted import lying_xing_mp3
from demixer.audio import OutputFormat, load
from demixer.engine import RESIDUAL, Separator, StemPlan, plan_stems
from demixer.engine.windows import overlap_add
from demixer.errors import (
    Cancelled,
    InvalidAudio,
    InvalidOutput,
    NoStemsRequested,
    UnknownQuality,
    UnknownStem,
    exit_code_for,
)
from demixer.models.registry import get_spec

MODEL = "spleeter-2stems"
TWO = ("vocals", "accompaniment")
FOUR = ("vocals", "drums", "bass", "other")

# --- plan_stems ------------------------------------------------------------------------------


def test_default_is_every_model_stem_without_residual() -> None:
    assert plan_stems(MODEL, TWO, None) == StemPlan(TWO, None)


@pytest.mark.parametrize("requested", [[], [" ", ""]])
def test_a_request_naming_no_stem_is_refused(requested: list[str]) -> None:
    with pytest.raises(NoStemsRequested) as info:
        plan_stems(MODEL, TWO, requested)
    assert info.value.code == "NO_STEMS_REQUESTED"
    assert "vocals, accompaniment" in info.value.message


def test_every_stem_requested_in_any_order_gives_the_models_order_and_no_residual() -> None:
    plan = plan_stems("m", FOUR, ["Other", "bass", "vocals", "drums", "bass"])
    assert plan == StemPlan(FOUR, None)


@pytest.mark.parametrize(
    ("requested", "targets", "outputs"),
    [
        (["vocals"], ("vocals",), ("vocals", RESIDUAL)),
        (["accompaniment"], ("accompaniment",), ("accompaniment", RESIDUAL)),
        (["vocals", "residual"], ("vocals",), ("vocals", RESIDUAL)),
    ],
)
def test_a_subset_adds_the_residual(
    requested: list[str], targets: tuple[str, ...], outputs: tuple[str, ...]
) -> None:
    plan = plan_stems(MODEL, TWO, requested)
    assert plan.targets == targets
    assert plan.outputs == outputs
    # Added, it is dropped when silent; named, it is what the user asked for.
    assert plan.residual_optional == ("residual" not in requested)


def test_a_subset_of_four_adds_the_residual_last_in_model_order() -> None:
    plan = plan_stems("m", FOUR, ["bass", "drums"])
    assert plan.outputs == ("drums", "bass", RESIDUAL)


@pytest.mark.parametrize("alias", ["instrumental", "accompaniment", "others", "Instrumental "])
def test_an_alias_beside_exactly_one_stem_names_the_residual(alias: str) -> None:
    plan = plan_stems("m", FOUR, ["vocals", alias])
    assert plan.targets == ("vocals",)
    assert plan.residual_name == alias.strip().lower()
    assert plan.outputs == ("vocals", alias.strip().lower())


def test_an_alias_that_is_a_model_stem_is_that_stem() -> None:
    # For the 2-stem model "accompaniment" is a real stem, not the residual.
    assert plan_stems(MODEL, TWO, ["vocals", "accompaniment"]) == StemPlan(TWO, None)
    assert plan_stems("m", FOUR, ["vocals", "other"]).outputs == ("vocals", "other", RESIDUAL)


@pytest.mark.parametrize("alias", ["instrumental", "accompaniment", "others"])
def test_an_alias_beside_several_stems_is_rejected(alias: str) -> None:
    with pytest.raises(UnknownStem, match="exactly one"):
        plan_stems("m", FOUR, ["vocals", "drums", alias])


@pytest.mark.parametrize(
    ("model_stems", "requested"),
    [(TWO, ["accompaniment", "instrumental"]), (FOUR, ["other", "others"])],
)
def test_an_alias_beside_a_stem_that_is_already_the_rest_is_rejected(
    model_stems: tuple[str, ...], requested: list[str]
) -> None:
    # "--stems accompaniment,instrumental" would write the vocals as "instrumental".
    with pytest.raises(UnknownStem) as info:
        plan_stems("m", model_stems, requested)
    assert info.value.message == (
        f"{requested[1]!r} beside {requested[0]!r} would hold everything but {requested[0]!r}: "
        f"ask for {requested[0]!r} alone, or with 'residual'"
    )


def test_residual_with_several_stems_is_fine() -> None:
    plan = plan_stems("m", FOUR, ["vocals", "drums", "residual"])
    assert plan.outputs == ("vocals", "drums", RESIDUAL)


def test_an_unknown_stem_is_rejected_naming_the_valid_ones() -> None:
    with pytest.raises(UnknownStem) as info:
        plan_stems(MODEL, TWO, ["vocals", "guitar"])
    message = info.value.message
    assert "guitar" in message
    for name in (*TWO, RESIDUAL):
        assert name in message


def test_a_misspelt_stem_is_rejected_with_the_nearest_ones() -> None:
    """``separate -m spleeter-2stems --stems vocls``: the one error line says what was meant."""
    with pytest.raises(UnknownStem) as info:
        plan_stems(MODEL, TWO, ["vocls"])
    assert info.value.message == (
        "model 'spleeter-2stems' cannot produce stem 'vocls' (did you mean 'vocals'?); it "
        "produces: vocals, accompaniment, residual"
    )


@pytest.mark.parametrize("requested", [["residual"], ["instrumental"], ["residual", "others"]])
def test_the_residual_alone_is_rejected(requested: list[str]) -> None:
    with pytest.raises(UnknownStem, match="at least one of"):
        plan_stems(MODEL, TWO, requested)


# --- overlap_add -----------------------------------------------------------------------------

WINDOW, OVERLAP = 40, 10
HOP = WINDOW - OVERLAP


def _blocks(x: np.ndarray, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``x`` in random-sized blocks (0 to 2.5 windows), as a decoder would deliver it."""
    start = 0
    while start < x.shape[1]:
        n = int(rng.integers(0, 100))
        yield x[:, start : start + n].copy()
        start += n


def _identity(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"same": x.copy(), "double": 2 * x}


def _run(
    x: np.ndarray, separate: object, seed: int = 0
) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]], list[int]]:
    starts: list[int] = []
    regions, stems = [], []
    for region, out in overlap_add(
        _blocks(x, np.random.default_rng(seed)),
        separate,  # type: ignore[arg-type]
        window=WINDOW,
        overlap=OVERLAP,
        before_window=starts.append,
    ):
        regions.append(region.copy())
        stems.append({k: v.copy() for k, v in out.items()})
    return regions, stems, starts


# Lengths: shorter than a window, exactly one window, ending exactly at a window boundary
# (k hops + window), ending inside the last overlap, just past it, and long.
LENGTHS = [1, 17, WINDOW, 3 * HOP + WINDOW, 4 * HOP + 5, 4 * HOP + OVERLAP + 1, 1000]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regions_tile_the_input_and_identity_survives_the_seams(length: int, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    x = rng.standard_normal((2, length)).astype(np.float32)
    regions, stems, starts = _run(x, _identity, seed)

    np.testing.assert_array_equal(np.concatenate(regions, axis=1), x)
    for region, out in zip(regions, stems, strict=True):
        assert set(out) == {"same", "double"}
        assert out["same"].shape == region.shape
        np.testing.assert_allclose(out["same"], region, atol=1e-6)
        np.testing.assert_allclose(out["double"], 2 * region, atol=1e-6)
    # Windows start a hop apart from 0, and every window but the last is full.
    assert starts == [HOP * i for i in range(len(starts))]
    assert starts[-1] + WINDOW >= length


def test_windows_never_exceed_the_window_length() -> None:
    seen: list[int] = []

    def separate(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(x.shape[1])
        return {"a": x.copy()}

    _run(np.ones((1, 1000), dtype=np.float32), separate)
    assert max(seen) == WINDOW
    assert all(n == WINDOW for n in seen[:-1])


@pytest.mark.parametrize("length", [3 * HOP + WINDOW, 3 * HOP + WINDOW + 13, 4 * HOP + 5])
def test_a_per_window_gain_crossfades_linearly(length: int) -> None:
    """Window ``k`` multiplies by ``k + 1``: in each overlap the gain ramps linearly k+1 -> k+2."""
    calls = 0

    def separate(x: np.ndarray) -> dict[str, np.ndarray]:
        nonlocal calls
        calls += 1
        return {"a": x * np.float32(calls)}

    x = np.ones((1, length), dtype=np.float32)
    _, stems, _ = _run(x, separate)
    y = np.concatenate([s["a"] for s in stems], axis=1)[0]

    expected = np.empty(length)
    for k in range(calls):
        start = k * HOP
        expected[start : start + WINDOW] = k + 1  # later windows overwrite the overlap...
    for k in range(1, calls):  # ... which is then the ramp from window k's gain to k+1's
        start = k * HOP
        n = min(OVERLAP, length - start)
        ramp = (np.arange(n) + 0.5) / OVERLAP
        expected[start : start + n] = k * (1 - ramp) + (k + 1) * ramp
    np.testing.assert_allclose(y, expected, atol=1e-5)
    # The ramp is strictly increasing across each seam: no step, no dip.
    for k in range(1, calls):
        seam = y[k * HOP - 1 : min(k * HOP + OVERLAP + 1, length)]
        assert (np.diff(seam) > 0).all()


def test_empty_blocks_and_an_empty_stream() -> None:
    out = list(overlap_add(iter([]), _identity, window=WINDOW, overlap=OVERLAP))
    assert out == []
    blocks = [np.zeros((2, 0), np.float32), np.ones((2, 5), np.float32)]
    (region, stems), *rest = overlap_add(iter(blocks), _identity, window=WINDOW, overlap=OVERLAP)
    assert rest == [] and region.shape == (2, 5) and stems["same"].shape == (2, 5)


def test_zero_overlap_just_cuts() -> None:
    x = np.arange(100, dtype=np.float32)[None]
    regions = [r for r, _ in overlap_add(iter([x]), _identity, window=30, overlap=0)]
    assert [r.shape[1] for r in regions] == [30, 30, 30, 10]


@pytest.mark.parametrize(("window", "overlap"), [(10, 10), (10, 11), (10, -1)])
def test_bad_window_overlap_is_refused(window: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="overlap"):
        list(
            overlap_add(
                iter([np.ones((1, 5), np.float32)]), _identity, window=window, overlap=overlap
            )
        )


# --- Separator on the real model ---------------------------------------------------------------

SMALL_WINDOW = 2.0  # seconds at the model's rate
SMALL_OVERLAP = 0.5


@pytest.fixture(scope="module")
def separator() -> Iterator[Separator]:
    sep = Separator(MODEL)
    rate = sep.backend.sample_rate
    with pytest.MonkeyPatch.context() as mp:
        # A few windows and seams on a few seconds of audio instead of one 47 s window.
        mp.setattr(sep.backend, "window", round(SMALL_WINDOW * rate))
        mp.setattr(sep.backend, "overlap", round(SMALL_OVERLAP * rate))
        yield sep


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> AudioFiles:
    return AudioFiles(tmp_path_factory.mktemp("engine-in"))


@pytest.fixture(scope="module")
def excerpt() -> tuple[np.ndarray, int]:
    """The MUSDB18 excerpt's mix, ``(2, samples)`` float32 and its rate (~6 s, 44.1 kHz)."""
    return load(stempeg_example())


@pytest.fixture(scope="module")
def excerpt_wav(tmp_path_factory: pytest.TempPathFactory, excerpt: tuple[np.ndarray, int]) -> Path:
    """The excerpt as a float WAV, so the file path sees exactly the array's samples."""
    audio, rate = excerpt
    path = tmp_path_factory.mktemp("engine-excerpt") / "falcon.wav"
    sf.write(str(path), audio.T, rate, subtype="FLOAT")
    return path


def _read(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T, rate


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


FLOAT = OutputFormat.parse("wav", "32f")


def test_separate_array_stems_sum_to_the_input_across_seams(
    separator: Separator, excerpt: tuple[np.ndarray, int]
) -> None:
    audio, rate = excerpt
    windows: list[float] = []
    stems = separator.separate_array(audio, rate, on_progress=windows.append)
    assert tuple(stems) == TWO
    for y in stems.values():
        assert y.shape == audio.shape and y.dtype == np.float32
        assert np.sqrt(np.mean(y**2)) > 1e-3  # both stems of this excerpt are audible
    assert np.abs(stems["vocals"] + stems["accompaniment"] - audio).max() <= 1e-4
    assert len(windows) >= 4  # the shrunk window really gave several windows and seams


def test_separate_array_with_an_alias_and_mono(separator: Separator) -> None:
    mono = tone(1.5, 44100, [440.0])
    stems = separator.separate_array(mono, 44100, ["vocals", "instrumental"])
    assert tuple(stems) == ("vocals", "instrumental")
    for y in stems.values():
        assert y.shape == mono.shape
    assert np.abs(stems["vocals"] + stems["instrumental"] - mono).max() <= 1e-4


def test_an_unknown_quality_is_refused_before_anything_is_read(
    separator: Separator, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(UnknownQuality, match="choose one of fast, balanced, best") as info:
        separator.separate_file(tmp_path / "not-even-there.wav", out, quality="loud")
    assert exit_code_for(info.value) == 2 and not out.exists()
    with pytest.raises(UnknownQuality):
        separator.separate_array(np.zeros((2, 100), np.float32), 44100, quality="")


@pytest.mark.parametrize("shape", [(3, 100), (2, 0), (100,), (1, 2, 100)])
def test_separate_array_rejects_bad_shapes(separator: Separator, shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidAudio, match="shape"):
        separator.separate_array(np.zeros(shape, np.float32), 44100)


def test_separate_file_float_output_sums_to_the_input_with_progress(
    separator: Separator, excerpt_wav: Path, excerpt: tuple[np.ndarray, int], tmp_path: Path
) -> None:
    audio, rate = excerpt
    progress: list[float] = []
    result = separator.separate_file(
        excerpt_wav, tmp_path, ["vocals"], fmt=FLOAT, on_progress=progress.append
    )

    assert set(result.paths) == {"vocals", RESIDUAL}
    assert result.paths["vocals"] == tmp_path / "falcon_vocals.wav"
    assert _files_under(tmp_path) == sorted(result.paths.values())
    assert (result.sample_rate, result.channels) == (rate, 2)
    assert result.duration == pytest.approx(audio.shape[1] / rate)
    assert result.report.clipped == {"vocals": 0, RESIDUAL: 0}
    vocals, vrate = _read(result.paths["vocals"])
    residual, rrate = _read(result.paths[RESIDUAL])
    assert vrate == rrate == rate
    assert vocals.shape == residual.shape == audio.shape
    assert np.abs(vocals + residual - audio).max() <= 1e-4

    assert len(progress) >= 4  # once per window (several) and once at the end
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert progress == sorted(progress)
    assert progress[-1] == 1.0


def test_mono_input_gives_mono_stems(
    separator: Separator, files: AudioFiles, tmp_path: Path
) -> None:
    made = files.get("mono.wav")
    decoded, _ = load(made.path)
    result = separator.separate_file(made.path, tmp_path, fmt=FLOAT)
    assert result.channels == 1
    total = np.zeros_like(decoded)
    for name in TWO:
        y, rate = _read(result.paths[name])
        assert (y.shape, rate) == ((1, made.signal.shape[1]), made.rate)
        total += y
    assert np.abs(total - decoded).max() <= 1e-4


@pytest.mark.parametrize(
    ("rate", "channels"), [(8000, 1), (22050, 2), (48000, 2), (96000, 2)], ids=str
)
def test_any_input_rate_gives_stems_at_that_rate_and_length(
    separator: Separator, tmp_path: Path, rate: int, channels: int
) -> None:
    signal = tone(1.5, rate, [330.0, 550.0][:channels], amplitude=0.3)
    path = encode(tmp_path / f"in-{rate}.flac", signal, rate, "flac")
    result = separator.separate_file(path, tmp_path / "out", ["vocals"], fmt=FLOAT)
    assert result.sample_rate == rate
    decoded, _ = load(path)
    total = np.zeros_like(decoded)
    for name in ("vocals", RESIDUAL):
        y, got_rate = _read(result.paths[name])
        assert got_rate == rate
        assert y.shape == decoded.shape
        total += y
    # The residual is taken at the input's rate, so the pair adds back exactly at any rate.
    assert np.abs(total - decoded).max() <= 1e-4
    # Every stem, so no residual: the model's own stems add back too. What the model (44.1
    # kHz) could not hear (here a 23 kHz tone in the 48 and 96 kHz files, and the resampler's
    # edges) is in the accompaniment, not lost.
    if rate > 44100:
        signal = signal + tone(1.5, rate, [23000.0] * channels, amplitude=0.1)
        path = encode(tmp_path / f"hi-{rate}.flac", signal, rate, "flac")
        decoded, _ = load(path)
    every = separator.separate_file(path, tmp_path / "every", fmt=FLOAT)
    assert set(every.paths) == set(TWO)
    total = sum(_read(every.paths[name])[0] for name in TWO)
    assert np.abs(total - decoded).max() <= 1e-4


@pytest.mark.parametrize(
    "name", ["stereo.wav", "stereo.flac", "stereo.mp3", "stereo.m4a", "video.mp4", "video.mkv"]
)
def test_every_input_container_gives_stems_of_its_length(
    separator: Separator, files: AudioFiles, tmp_path: Path, name: str
) -> None:
    made = files.get(name)
    decoded, rate = load(made.path)
    result = separator.separate_file(made.path, tmp_path, ["vocals"])
    assert result.paths["vocals"] == tmp_path / f"{Path(name).stem}_vocals.wav"
    for path in result.paths.values():
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (rate, 2, decoded.shape[1])
        assert info.subtype == "PCM_16"  # the default output
    # Lossy codecs pad a little, but never more than a frame or two.
    assert decoded.shape[1] == pytest.approx(made.signal.shape[1], abs=2 * 2048)


def test_mp3_and_flac24_outputs_decode(
    separator: Separator, files: AudioFiles, tmp_path: Path
) -> None:
    made = files.get("stereo.flac")
    decoded, _ = load(made.path)
    mp3 = separator.separate_file(made.path, tmp_path / "mp3", fmt=OutputFormat.parse("mp3", None))
    flac = separator.separate_file(
        made.path, tmp_path / "flac", fmt=OutputFormat.parse("flac", "24")
    )
    for name in TWO:
        assert mp3.paths[name].suffix == ".mp3"
        audio, rate = load(mp3.paths[name])
        assert (audio.shape, rate) == (made.signal.shape, made.rate)
        assert sf.info(str(flac.paths[name])).subtype == "PCM_24"
    # The stems still add up to the input through both encoders (mp3 is lossy: loosely).
    flac_total = sum(_read(flac.paths[n])[0] for n in TWO)
    assert np.abs(flac_total - decoded).max() <= 1e-4
    mp3_total = sum(load(mp3.paths[n])[0] for n in TWO)
    assert np.sqrt(np.mean((mp3_total - decoded) ** 2)) < 0.02


def test_cancel_stops_and_leaves_no_files(
    separator: Separator, excerpt_wav: Path, tmp_path: Path
) -> None:
    asked = 0

    def should_cancel() -> bool:
        nonlocal asked
        asked += 1
        return asked >= 3  # asked before each window and after each pass of the model

    with pytest.raises(Cancelled):
        separator.separate_file(excerpt_wav, tmp_path, should_cancel=should_cancel)
    assert asked == 3
    assert _files_under(tmp_path) == []


def test_cancel_before_the_first_window(separator: Separator) -> None:
    with pytest.raises(Cancelled):
        separator.separate_array(tone(1.0, 44100, [440.0]), 44100, should_cancel=lambda: True)


def test_output_template_with_model_track_stem_and_ext(
    separator: Separator, files: AudioFiles, tmp_path: Path
) -> None:
    made = files.get("stereo.wav")
    result = separator.separate_file(
        made.path,
        tmp_path,
        ["vocals"],
        fmt=OutputFormat.parse("flac", None),
        template="{model}/{track}/{stem}.{ext}",
    )
    expected = {
        "vocals": tmp_path / MODEL / "stereo" / "vocals.flac",
        RESIDUAL: tmp_path / MODEL / "stereo" / "residual.flac",
    }
    assert result.paths == expected
    assert _files_under(tmp_path) == sorted(expected.values())


def test_a_template_without_ext_gets_the_formats_extension(
    separator: Separator, files: AudioFiles, tmp_path: Path
) -> None:
    made = files.get("stereo.wav")
    fmt = OutputFormat.parse("mp3", None)
    result = separator.separate_file(made.path, tmp_path, ["vocals"], fmt=fmt, template="{stem}")
    assert result.paths == {"vocals": tmp_path / "vocals.mp3", RESIDUAL: tmp_path / "residual.mp3"}


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("{track}.{ext}", "must contain"),
        ("{track}/{stem}-{date}.{ext}", "unknown field"),
        ("{track}/{stem", "bad output template"),
        ("../{track}/{stem}.{ext}", "escapes"),
        ("{track}/{stem}/", "ends in a folder"),  # else hidden files: A/vocals/.wav
    ],
)
def test_bad_templates_are_invalid_output_and_write_nothing(
    separator: Separator, files: AudioFiles, tmp_path: Path, template: str, match: str
) -> None:
    made = files.get("stereo.wav")
    out = tmp_path / "out"
    with pytest.raises(InvalidOutput, match=match):
        separator.separate_file(made.path, out, template=template)
    assert _files_under(tmp_path) == []


BAD_INPUTS = {
    "empty file": (lambda f: f.bytes_file("empty.mp3", b""), "empty"),
    "text named .mp3": (
        lambda f: f.bytes_file("notes.mp3", b"just some text, not audio\n" * 40),
        "not an audio",
    ),
    "truncated mp3": (lambda f: f.truncated("long.mp3", 0.5), "truncated"),
    "video without audio": (lambda f: f.get("silent-video.mp4").path, "no audio stream"),
    "3 channels without downmix": (lambda f: f.get("three.wav").path, "downmix"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_are_invalid_audio_and_write_nothing(
    separator: Separator, files: AudioFiles, tmp_path: Path, case: str
) -> None:
    make, match = BAD_INPUTS[case]
    path = make(files)
    with pytest.raises(InvalidAudio, match=match):
        separator.separate_file(path, tmp_path)
    assert _files_under(tmp_path) == []


def test_six_channels_with_downmix_gives_stereo_stems(
    separator: Separator, files: AudioFiles, tmp_path: Path
) -> None:
    made = files.get("surround.flac")
    result = separator.separate_file(made.path, tmp_path, ["vocals"], downmix=True, fmt=FLOAT)
    assert result.channels == 2
    decoded, _ = load(made.path, downmix=True)
    total = np.zeros_like(decoded)
    for path in result.paths.values():
        y, got_rate = _read(path)
        assert (y.shape, got_rate) == (decoded.shape, made.rate)
        total += y
    assert np.abs(total - decoded).max() <= 1e-4


@pytest.fixture(scope="module")
def loud(tmp_path_factory: pytest.TempPathFactory, excerpt: tuple[np.ndarray, int]) -> Path:
    """The first 2 s of the excerpt at 4x gain, as a float WAV (peaks well beyond full scale)."""
    audio, rate = excerpt
    path = tmp_path_factory.mktemp("engine-loud") / "loud.wav"
    sf.write(str(path), 4 * audio[:, : 2 * rate].T, rate, subtype="FLOAT")
    return path


def test_loud_input_to_integer_output_reports_clipping(
    separator: Separator, loud: Path, tmp_path: Path
) -> None:
    result = separator.separate_file(loud, tmp_path, fmt=OutputFormat.parse("wav", "16"))
    assert result.report.gain == 1.0
    assert max(result.report.peaks.values()) > 1.0
    for name in TWO:
        y, _ = _read(result.paths[name])
        assert np.abs(y).max() <= 1.0
        assert (result.report.clipped[name] > 0) == (result.report.peaks[name] > 1.0)
    assert sum(result.report.clipped.values()) > 0


def test_loud_input_with_rescale_gets_one_common_gain(
    separator: Separator, loud: Path, tmp_path: Path
) -> None:
    source, _ = _read(loud)
    result = separator.separate_file(
        loud, tmp_path, fmt=OutputFormat.parse("wav", "24"), rescale=True
    )
    report = result.report
    assert report.clipped == {"vocals": 0, "accompaniment": 0}
    assert report.gain == pytest.approx(1.0 / max(report.peaks.values()))
    assert report.gain < 1.0
    stems = {name: _read(result.paths[name])[0] for name in TWO}
    assert max(np.abs(y).max() for y in stems.values()) <= 1.0
    assert max(np.abs(y).max() for y in stems.values()) > 0.99  # the loudest reaches full scale
    # One gain for all: the rescaled stems still add up to the equally rescaled input.
    assert np.abs(stems["vocals"] + stems["accompaniment"] - report.gain * source).max() < 1e-4


def test_progress_is_reported_within_one_long_window(
    separator: Separator, excerpt_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real window (47 s) holds the whole 6 s excerpt: without progress from inside the
    # window, a short song would sit at 0 % until it is done.
    whole = separator
    for name in ("window", "overlap"):  # the module's separator has a shrunk window
        monkeypatch.setattr(whole.backend, name, getattr(type(whole.backend), name))
    assert whole.backend.window > 6 * whole.backend.sample_rate
    progress: list[float] = []
    stages: list[str] = []
    whole.separate_file(
        excerpt_wav, tmp_path, fmt=FLOAT, on_progress=progress.append, on_stage=stages.append
    )
    inside = [p for p in progress if 0.0 < p < 1.0]
    assert inside, progress
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert stages == ["decoding", "separating", "encoding"]


class _FakeBackend:
    """Three stems with known content: ``c`` is ``c_gain`` times the input, ``a`` and ``b``
    share the rest equally, so the residual of ``a`` + ``b`` is exactly ``c``."""

    sample_rate = 44100
    channels = 2
    stems = ("a", "b", "c")
    window = 44100
    overlap = 4410

    def __init__(self, c_gain: float) -> None:
        self.c_gain = np.float32(c_gain)

    def separate(self, mix: np.ndarray) -> dict[str, np.ndarray]:
        rest = mix * (1 - self.c_gain) / 2
        return {"a": rest, "b": rest.copy(), "c": mix * self.c_gain}


def _fake_separator(c_gain: float) -> Separator:
    """A Separator around :class:`_FakeBackend` (no weights loaded)."""
    sep = Separator.__new__(Separator)
    sep.spec, sep.device = get_spec(MODEL), "cpu"
    sep.backend = _FakeBackend(c_gain)
    return sep


@pytest.mark.parametrize(
    ("c_gain", "kept"),
    [(0.0, False), (1e-4, False), (1e-2, True)],  # silence, -80 dB, -40 dB of the input
)
def test_an_added_residual_is_returned_only_when_audible(
    excerpt_wav: Path, tmp_path: Path, c_gain: float, kept: bool
) -> None:
    sep = _fake_separator(c_gain)
    audio, rate = load(excerpt_wav)
    stems = sep.separate_array(audio, rate, ["a", "b"])
    assert (RESIDUAL in stems) == kept
    result = sep.separate_file(excerpt_wav, tmp_path, ["a", "b"], fmt=FLOAT)
    assert (RESIDUAL in result.paths) == kept
    written = sorted(p.name for p in tmp_path.iterdir())
    expected = ["falcon_a.wav", "falcon_b.wav"] + (["falcon_residual.wav"] if kept else [])
    assert written == expected  # a dropped residual leaves no file, not even a temporary
    if kept:
        residual, _ = _read(result.paths[RESIDUAL])
        assert np.abs(residual - c_gain * audio).max() <= 1e-5


def test_a_residual_the_user_named_is_returned_even_when_silent(excerpt_wav: Path) -> None:
    sep = _fake_separator(0.0)
    audio, rate = load(excerpt_wav)
    stems = sep.separate_array(audio, rate, ["a", "b", "residual"])
    assert tuple(stems) == ("a", "b", RESIDUAL)
    assert np.abs(stems[RESIDUAL]).max() < 1e-6  # silent (float rounding at the seams aside)


def test_progress_never_reads_done_before_the_end_of_a_lying_file(
    separator: Separator, tmp_path: Path
) -> None:
    # An MP3 whose seek header says 0.95 s while 3 s follow (tests/crafted.py): progress by
    # the declared length alone would read 100 % after the first second.
    lying = lying_xing_mp3(tmp_path / "lying.mp3", seconds=3.0)
    progress: list[float] = []
    result = separator.separate_file(lying, tmp_path / "out", on_progress=progress.append)
    assert result.duration == pytest.approx(3.0, abs=0.1)
    assert progress[-1] == 1.0
    before_end = progress[:-1]
    assert len(before_end) >= 2 and max(before_end) < 1.0
    assert before_end == sorted(before_end)


def test_the_songs_tags_go_to_its_stems_in_every_format(
    separator: Separator, tmp_path: Path
) -> None:
    """A DJ's library shows stems by their tags: each stem keeps the song's artist, album,
    date, genre and track number, and its title says which stem it is (WAV's LIST INFO, FLAC's
    Vorbis comments, MP3's ID3v2.4 before the LAME tag, which still trims the MP3 exactly)."""
    song = tmp_path / "tagged.flac"
    signal = tone(1.0, 44100, [330.0, 550.0], amplitude=0.3)
    with sf.SoundFile(song, "w", samplerate=44100, channels=2, format="FLAC") as f:
        f.title, f.artist, f.album = "Falcon 69 ✓", "The Easton Ellises", "MUSDB18"
        f.date, f.genre, f.tracknumber = "2016", "Rock", "3/12"
        f.write(signal.T)
    result = separator.separate_file(
        song,
        tmp_path / "out",
        fmt=OutputFormat.parse("mp3", None),
        extra_formats=[OutputFormat.parse("wav", None), OutputFormat.parse("flac", None)],
    )
    for stem in ("vocals", "accompaniment"):
        for ext in ("mp3", "wav", "flac"):
            path = tmp_path / "out" / f"tagged_{stem}.{ext}"
            with av.open(str(path)) as container:
                tags = {**container.metadata, **container.streams.audio[0].metadata}
            names = ("title", "artist", "album", "date", "genre", "track")
            assert {k: tags.get(k) for k in names} == {
                "title": f"Falcon 69 ✓ ({stem})",
                "artist": "The Easton Ellises",
                "album": "MUSDB18",
                "date": "2016",
                "genre": "Rock",
                "track": "3/12",
            }, (path, tags)
        assert load(result.paths[stem])[0].shape == signal.shape  # the MP3, sample for sample
    # A song that names nothing gives stems that name nothing (no empty tags).
    plain = encode(tmp_path / "plain.flac", signal, 44100, "flac")
    separator.separate_file(plain, tmp_path / "plain", fmt=OutputFormat.parse("mp3", None))
    assert (tmp_path / "plain" / "plain_vocals.mp3").read_bytes()[:3] != b"ID3"
