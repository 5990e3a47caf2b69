"""Writing stem sets: formats, round trips through the real decoder, clipping, rescale, abort."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf

from audiofiles import dominant_frequency, tone
from conftest import interrupt_after
from demixer.audio import FORMATS, OutputFormat, StemSetWriter, WriteReport, load, resample
from demixer.audio import encode as encode_module
from demixer.errors import InvalidOutput
from demixer.filemode import check_folder

BLOCK = 4096


def write_set(
    directory: Path,
    stems: dict[str, np.ndarray],
    rate: int,
    fmt: OutputFormat,
    *,
    rescale: bool = False,
    block: int = BLOCK,
) -> tuple[dict[str, Path], WriteReport]:
    """Stream ``stems`` (name -> (channels, n)) through a StemSetWriter in ``block`` chunks."""
    paths = {name: directory / f"{name}.{fmt.extension}" for name in stems}
    channels, n = next(iter(stems.values())).shape
    with StemSetWriter(paths, rate, channels, fmt, rescale=rescale) as writer:
        for start in range(0, n, block):
            writer.write({name: x[:, start : start + block] for name, x in stems.items()})
        report = writer.close()
    return paths, report


def leftovers(directory: Path) -> list[str]:
    """Hidden temporaries the writer may have left (it must not)."""
    return sorted(p.name for p in directory.rglob(".*"))


# --- OutputFormat -------------------------------------------------------------------------


def test_formats_parse_with_their_default_bit_depths() -> None:
    assert FORMATS == ("wav", "flac", "mp3")
    assert OutputFormat.parse("wav", None) == OutputFormat("wav", "16")
    assert OutputFormat.parse("FLAC", None) == OutputFormat("flac", "16")
    assert OutputFormat.parse(" mp3 ", None) == OutputFormat("mp3", None)
    assert OutputFormat.parse("wav", "32F").bit_depth == "32f"
    assert OutputFormat.parse("flac", "24").bit_depth == "24"


def test_format_properties() -> None:
    wav = OutputFormat.parse("wav", "32f")
    mp3 = OutputFormat.parse("mp3", None)
    flac = OutputFormat.parse("flac", "24")
    assert (wav.extension, wav.suffix, wav.content_type, wav.is_float) == (
        "wav",
        ".wav",
        "audio/wav",
        True,
    )
    assert (mp3.extension, mp3.content_type, mp3.is_float) == ("mp3", "audio/mpeg", False)
    assert (flac.extension, flac.content_type, flac.is_float) == ("flac", "audio/flac", False)


@pytest.mark.parametrize(
    ("fmt", "depth", "listed"),
    [
        ("ogg", None, "wav, flac, mp3"),
        ("wav", "8", "16, 24, 32f"),
        ("wav", "32", "16, 24, 32f"),
        ("flac", "32f", "16, 24"),
        ("mp3", "16", "320 kbps"),
    ],
)
def test_bad_format_choices_raise_invalid_output_listing_the_valid_ones(
    fmt: str, depth: str | None, listed: str
) -> None:
    with pytest.raises(InvalidOutput, match=listed):
        OutputFormat.parse(fmt, depth)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "depth", "step"),
    [
        ("wav", "16", 2**-15),
        ("wav", "24", 2**-23),
        ("wav", "32f", 0.0),
        ("flac", "16", 2**-15),
        ("flac", "24", 2**-23),
    ],
)
def test_lossless_round_trip_is_within_quantisation(
    tmp_path: Path, fmt: str, depth: str, step: float
) -> None:
    rate = 44100
    stems = {
        "vocals": tone(1.0, rate, (440.0, 550.0), amplitude=0.9),
        "bass": tone(1.0, rate, (110.0, 55.0), amplitude=0.3),
    }

    paths, report = write_set(tmp_path, stems, rate, OutputFormat.parse(fmt, depth))

    assert report.gain == 1.0 and report.clipped == {"vocals": 0, "bass": 0}
    assert report.peaks["vocals"] == pytest.approx(0.9, abs=1e-3)
    for name, source in stems.items():
        audio, got_rate = load(paths[name])
        assert (audio.shape, got_rate) == (source.shape, rate)
        assert np.abs(audio - source).max() <= step  # at most one quantisation step
    assert sf.info(str(paths["vocals"])).subtype == {"16": "PCM_16", "24": "PCM_24"}.get(
        depth, "FLOAT"
    )
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("depth", ["16", "24", "32f"])
@pytest.mark.parametrize("rescale", [False, True])
def test_a_wav_stem_past_4_gib_is_rf64_holding_every_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: str, rescale: bool
) -> None:
    """A WAV's sizes are 32-bit: past 4 GiB (a 3.4 h float stem, 2 h at 96 kHz/24 bits)
    libsndfile wrote 0xFFFFFFFF, and libsndfile's readers (soundfile here, Audacity, sox)
    stopped at 4 GiB. The limit is made small here; a stem past it is RF64, every sample and
    tag kept, and one within it stays a plain WAV."""
    frame_bytes = 2 * {"16": 2, "24": 3}.get(depth, 4)  # stereo
    limit = 3 * BLOCK * frame_bytes
    monkeypatch.setattr("demixer.audio.encode._WAV_MAX_DATA", limit, raising=False)
    rate = 44100
    fmt = OutputFormat.parse("wav", depth)
    song = tone(4 * BLOCK / rate, rate, (440.0, 550.0), amplitude=0.5)
    for name, frames, container in [("long", 4 * BLOCK, "RF64"), ("short", 2 * BLOCK, "WAV")]:
        path = tmp_path / f"{name}.wav"
        tags = {"vocals": {"title": f"Mix ({name})"}}
        with StemSetWriter({"vocals": path}, rate, 2, fmt, rescale=rescale, tags=tags) as writer:
            for start in range(0, frames, BLOCK):
                writer.write({"vocals": song[:, start : start + BLOCK]})
            writer.close()
        with sf.SoundFile(str(path)) as f:
            assert (f.format, f.frames, f.title) == (container, frames, f"Mix ({name})")
            step = {"16": 2.0**-15, "24": 2.0**-23}.get(depth, 0.0)
            assert np.abs(f.read(dtype="float32").T - song[:, :frames]).max() <= step / 2 + 1e-7
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("fmt", "depth"), [("wav", "16"), ("flac", "16"), ("wav", "24")])
def test_integer_output_holds_the_nearest_step(tmp_path: Path, fmt: str, depth: str) -> None:
    """Each sample is rounded to the nearest step of full scale (2**-15 at 16 bits): WAV
    through libsndfile alone truncated (up to a step low, half a step on average: a DC
    offset), while FLAC rounded."""
    step = 2.0 ** -(int(depth) - 1)
    steps = [0.4, 0.6, -0.4, -0.6, 1000.3, -1000.7]
    x = np.array([[v * step for v in steps] + [1.5, -1.5]], np.float32)
    paths, _ = write_set(tmp_path, {"s": x}, 44100, OutputFormat(fmt, depth))
    read, _ = sf.read(paths["s"], dtype="int32")
    top = 1 << (int(depth) - 1)
    assert (read >> (32 - int(depth))).tolist() == [0, 1, 0, -1, 1000, -1001, top - 1, -top]


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 1), (32000, 2)])
def test_mp3_round_trip_keeps_rate_channels_length_and_alignment(
    tmp_path: Path, rate: int, channels: int
) -> None:
    source = tone(2.0, rate, (440.0, 660.0)[:channels])
    fmt = OutputFormat.parse("mp3", None)

    paths, _ = write_set(tmp_path, {"mix": source}, rate, fmt)
    audio, got_rate = load(paths["mix"])

    assert (audio.shape[0], got_rate) == (channels, rate)
    # The LAME Info tag tells the decoder the encoder delay and padding: the samples that
    # come out are exactly the ones that went in, in the same place.
    assert audio.shape[1] == source.shape[1]
    for decoded, original in zip(audio, source, strict=True):
        assert np.corrcoef(decoded, original)[0, 1] > 0.999
    with av.open(str(paths["mix"])) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.bit_rate == 320_000  # CBR 320 kbps
        assert stream.metadata.get("encoder") == "LAME3.100"  # FFmpeg checked the tag's CRC
    # A second, independent decoder (libsndfile's mpg123) honours the tag the same way.
    assert sf.info(str(paths["mix"])).frames == source.shape[1]


@pytest.mark.parametrize(("rate", "mp3_rate"), [(96000, 48000), (22050, 44100), (8000, 48000)])
def test_mp3_at_rates_mpeg1_lacks_is_resampled(tmp_path: Path, rate: int, mp3_rate: int) -> None:
    source = tone(1.0, rate, (440.0, 1000.0))

    paths, _ = write_set(tmp_path, {"mix": source}, rate, OutputFormat.parse("mp3", None))
    audio, got_rate = load(paths["mix"])

    assert got_rate == mp3_rate
    assert audio.shape == (2, mp3_rate)
    reference = resample(source, rate, mp3_rate)
    assert np.corrcoef(audio[1], reference[1])[0, 1] > 0.999
    assert dominant_frequency(audio[0], got_rate) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("rescale", [False, True])
def test_a_stem_too_short_for_one_mp3_sample_is_an_empty_mp3_not_a_failed_set(
    tmp_path: Path, rescale: bool
) -> None:
    """One sample at 192 kHz is a quarter of one at 48 kHz: the mp3 holds no frame (an empty
    file, as the writer makes it). Checking it for clipping then failed the whole set, WAV
    and all, with "'.vocals.mp3.….part' is empty (0 bytes)"."""
    one = np.full((2, 1), 0.25, dtype=np.float32)

    paths, report = write_set(
        tmp_path, {"vocals": one, "other": one}, 192000, OutputFormat.parse("mp3", None),
        rescale=rescale,
    )  # fmt: skip

    assert [paths[s].stat().st_size for s in ("vocals", "other")] == [0, 0]
    assert report.clipped == {"vocals": 0, "other": 0}
    assert leftovers(tmp_path) == []


# --- clipping and rescaling ----------------------------------------------------------------


def test_float_output_keeps_values_beyond_full_scale(tmp_path: Path) -> None:
    loud = tone(0.5, 44100, (440.0, 660.0), amplitude=1.5)

    paths, report = write_set(tmp_path, {"drums": loud}, 44100, OutputFormat.parse("wav", "32f"))
    audio, _ = load(paths["drums"])

    assert report.clipped == {"drums": 0} and report.gain == 1.0
    assert report.peaks["drums"] == pytest.approx(1.5, abs=1e-3)
    np.testing.assert_array_equal(audio, loud)


@pytest.mark.parametrize(("fmt", "depth"), [("wav", "16"), ("flac", "24"), ("mp3", None)])
def test_integer_and_mp3_output_clip_and_count(tmp_path: Path, fmt: str, depth: str | None) -> None:
    loud = tone(0.5, 44100, (440.0, 660.0), amplitude=1.2)
    quiet = tone(0.5, 44100, (440.0, 660.0), amplitude=0.5)
    over = int(np.count_nonzero(np.abs(loud) > 1.0))

    paths, report = write_set(
        tmp_path, {"loud": loud, "quiet": quiet}, 44100, OutputFormat.parse(fmt, depth)
    )

    assert over > 1000
    assert report.clipped == {"loud": over, "quiet": 0}
    assert report.peaks["loud"] == pytest.approx(1.2, abs=1e-3)
    assert report.gain == 1.0
    audio, _ = load(paths["loud"])
    assert np.abs(audio).max() <= 1.0 + (0.1 if fmt == "mp3" else 0.0)


@pytest.mark.parametrize(("depth", "rescale"), [("32f", False), ("16", True)])
def test_nan_and_inf_from_a_model_are_written_as_silence_and_said(
    tmp_path: Path, depth: str, rescale: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A model whose arithmetic overflowed (half precision on a loud float input) gave stems
    of NaN: a float WAV kept them, and with rescale one infinite sample made the divisor
    infinite and every stem silent. They are silence now, the rest as it was, and said."""
    clean = tone(0.5, 44100, (440.0, 660.0))
    broken = clean.copy()
    broken[0, 100:200] = np.nan
    broken[1, 300] = np.inf
    broken[0, 400] = -np.inf

    with caplog.at_level("WARNING", logger="demixer.audio"):
        paths, report = write_set(
            tmp_path, {"vocals": broken}, 44100, OutputFormat.parse("wav", depth), rescale=rescale
        )

    written, _ = sf.read(str(paths["vocals"]), dtype="float32", always_2d=True)
    expected = np.where(np.isfinite(broken), clean, np.float32(0.0))
    np.testing.assert_allclose(written.T, expected, atol=1 / 32768)
    assert report.gain == 1.0 and report.peaks["vocals"] == pytest.approx(0.5, abs=1e-3)
    assert [r.getMessage() for r in caplog.records] == [
        "vocals.wav: 102 samples were NaN or infinite: written as silence"
    ]


@pytest.mark.parametrize(("fmt", "depth"), [("wav", "16"), ("flac", "24"), ("wav", "32f")])
def test_rescale_applies_one_common_gain_and_keeps_stem_ratios(
    tmp_path: Path, fmt: str, depth: str
) -> None:
    rate = 44100
    drums = tone(1.0, rate, (200.0, 300.0), amplitude=2.0)
    vocals = tone(1.0, rate, (440.0, 550.0), amplitude=0.5)

    paths, report = write_set(
        tmp_path,
        {"drums": drums, "vocals": vocals},
        rate,
        OutputFormat.parse(fmt, depth),
        rescale=True,
        block=10_000,
    )

    peak = max(float(np.abs(drums).max()), float(np.abs(vocals).max()))
    assert report.gain == pytest.approx(1 / peak)
    assert report.peaks == pytest.approx({"drums": peak, "vocals": float(np.abs(vocals).max())})
    assert report.clipped == {"drums": 0, "vocals": 0}
    out_drums, _ = load(paths["drums"])
    out_vocals, _ = load(paths["vocals"])
    assert np.abs(out_drums).max() <= 1.0
    assert np.abs(out_drums).max() == pytest.approx(1.0, abs=1e-4)
    # One gain for all: the stems still sum to the equally scaled mix.
    np.testing.assert_allclose(out_drums, drums * report.gain, atol=2**-15)
    np.testing.assert_allclose(out_vocals, vocals * report.gain, atol=2**-15)
    assert np.abs(out_vocals).max() / np.abs(out_drums).max() == pytest.approx(0.25, rel=1e-3)
    assert leftovers(tmp_path) == []


def _clicks(seconds: float, rate: int, peak: float) -> np.ndarray:
    """A click track (a decaying burst of full-band noise every quarter second) peaking at
    ``peak``: what an mp3 encoder overshoots most."""
    rng = np.random.default_rng(3)
    audio = np.zeros((2, int(seconds * rate)), dtype=np.float32)
    burst = np.exp(-np.arange(2000) / 300) * np.sign(rng.standard_normal((2, 2000)))
    for start in range(0, audio.shape[1] - 2000, rate // 4):
        audio[:, start : start + 2000] = burst
    return audio * np.float32(peak / np.abs(audio).max())


def test_rescaled_mp3_stems_never_decode_past_full_scale(tmp_path: Path) -> None:
    """rescale promises no clipping. An mp3 scaled to peak at exactly 1.0 decoded at 1.6
    (the encoder overshoots a click by 4 dB): a player clipped thousands of samples. Now
    the set is encoded again, quieter by one common gain, until no stem decodes past 1."""
    clicks, tone_ = _clicks(2.0, 44100, 1.5), tone(2.0, 44100, (440.0, 440.0), amplitude=0.5)
    paths, report = write_set(
        tmp_path, {"drums": clicks, "vocals": tone_}, 44100, OutputFormat.parse("mp3", None),
        rescale=True,
    )  # fmt: skip
    drums, vocals = (load(paths[stem])[0] for stem in ("drums", "vocals"))
    assert np.abs(drums).max() <= 1.0 and np.abs(vocals).max() <= 1.0
    assert np.abs(drums).max() > 0.9  # made quieter by what it overshot, not by far more
    assert report.gain < 1 / 1.5
    assert report.clipped == {"drums": 0, "vocals": 0}
    # One gain for both: the tone is the input's times the reported gain.
    assert np.abs(vocals).max() == pytest.approx(0.5 * report.gain, rel=0.02)
    assert leftovers(tmp_path) == []


def test_an_mp3_counts_the_samples_a_player_will_clip(tmp_path: Path) -> None:
    """Clicks peaking at 0.99 clip nothing going into the encoder, but its mp3 decodes past
    full scale: those samples are the count, not 0."""
    paths, report = write_set(
        tmp_path, {"drums": _clicks(2.0, 44100, 0.99)}, 44100, OutputFormat.parse("mp3", None)
    )
    decoded = load(paths["drums"])[0]
    assert report.clipped == {"drums": int(np.count_nonzero(np.abs(decoded) > 1.0))}
    assert report.clipped["drums"] > 100


def test_rescale_of_quiet_stems_is_unity_gain(tmp_path: Path) -> None:
    quiet = tone(0.5, 44100, (440.0,), amplitude=0.5)
    paths, report = write_set(
        tmp_path, {"a": quiet}, 44100, OutputFormat.parse("mp3", None), rescale=True
    )
    assert report.gain == 1.0
    assert load(paths["a"])[0].shape == quiet.shape


# --- atomicity -----------------------------------------------------------------------------


@pytest.mark.parametrize("rescale", [False, True])
def test_the_stems_of_a_set_are_encoded_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rescale: bool
) -> None:
    """Two MP3 stems are encoded at the same time, not one after the other: each stem's
    encoder waits at a barrier for the other's before it takes a block, which one thread
    doing both would never reach (the wait then fails after 5 s)."""
    meet = threading.Barrier(2, timeout=5)
    real = encode_module._open_sink

    class Meeting:
        def __init__(self, sink: Any) -> None:
            self.sink = sink

        def write(self, block: np.ndarray) -> None:
            meet.wait()
            self.sink.write(block)

        def close(self) -> None:
            self.sink.close()

        def abort(self) -> None:
            self.sink.abort()

    monkeypatch.setattr(encode_module, "_open_sink", lambda *args: Meeting(real(*args)))
    block = tone(0.5, 44100, (440.0, 660.0))
    paths, _ = write_set(
        tmp_path,
        {"vocals": block, "accompaniment": 0.5 * block},
        44100,
        OutputFormat.parse("mp3", None),
        rescale=rescale,
        block=block.shape[1],
    )
    decoded = {stem: load(path)[0] for stem, path in paths.items()}
    np.testing.assert_allclose(decoded["accompaniment"], 0.5 * decoded["vocals"], atol=0.02)
    assert leftovers(tmp_path) == []


def test_abort_leaves_no_files_and_keeps_older_ones(tmp_path: Path) -> None:
    old = tmp_path / "out" / "vocals.wav"
    old.parent.mkdir()
    old.write_bytes(b"previous run")
    paths = {"vocals": old, "drums": tmp_path / "out" / "drums.wav"}
    block = tone(0.2, 44100, (440.0, 660.0))

    writer = StemSetWriter(paths, 44100, 2, OutputFormat.parse("wav", None))
    writer.write({"vocals": block, "drums": block})
    writer.abort()

    assert sorted(p.name for p in old.parent.iterdir()) == ["vocals.wav"]
    assert old.read_bytes() == b"previous run"
    with pytest.raises(RuntimeError):
        writer.write({"vocals": block, "drums": block})


@pytest.mark.parametrize("rescale", [False, True])
def test_exception_inside_the_writer_block_removes_partial_files(
    tmp_path: Path, rescale: bool
) -> None:
    paths = {"bass": tmp_path / "bass.mp3", "other": tmp_path / "other.mp3"}
    block = tone(0.2, 44100, (440.0, 660.0))

    with (
        pytest.raises(KeyboardInterrupt),
        StemSetWriter(paths, 44100, 2, OutputFormat.parse("mp3", None), rescale=rescale) as w,
    ):
        w.write({"bass": block, "other": block})
        raise KeyboardInterrupt

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("rescale", "nth"),  # two .part files; with rescale two .f32 files, then the two .part
    [(False, 1), (False, 2), (True, 1), (True, 2), (True, 3), (True, 4)],
)
def test_an_interrupt_right_after_a_temporary_is_made_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rescale: bool, nth: int
) -> None:
    """SIGTERM mid-run: the handler's exception can land between a temporary's creation and
    the writer noting it. The writer knows the name first, so nothing is left (a fresh-clone
    run had left a hidden .part stem)."""
    paths = {"bass": tmp_path / "bass.wav", "other": tmp_path / "other.wav"}
    block = tone(0.2, 44100, (440.0, 660.0))
    made = interrupt_after(monkeypatch, "open", tmp_path, nth)
    with (
        pytest.raises(KeyboardInterrupt),
        StemSetWriter(paths, 44100, 2, OutputFormat.parse("wav", None), rescale=rescale) as w,
    ):
        w.write({"bass": block, "other": block})
        w.close()
    # The interrupt came from the nth file made (the stems' .part files of a rescaled set are
    # made side by side, so the other stem's may come just after it).
    assert len(made) == nth or (rescale and nth > 2 and len(made) == 4)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_right_after_the_first_rename_leaves_no_half_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stems appear as a set or not at all, even when the interrupt lands just after one
    stem took its final name; an older stem of the same name is kept when not yet replaced."""
    paths = {"bass": tmp_path / "bass.wav", "other": tmp_path / "other.wav"}
    paths["other"].write_bytes(b"previous run")
    block = tone(0.2, 44100, (440.0, 660.0))
    interrupt_after(monkeypatch, "replace", tmp_path, 1)
    with (
        pytest.raises(KeyboardInterrupt),
        StemSetWriter(paths, 44100, 2, OutputFormat.parse("wav", None)) as w,
    ):
        w.write({"bass": block, "other": block})
        w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.wav"]
    assert paths["other"].read_bytes() == b"previous run"


def test_files_appear_only_on_close_and_parent_dirs_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "vocals.flac"
    block = tone(0.2, 44100, (440.0,))

    writer = StemSetWriter({"vocals": target}, 44100, 1, OutputFormat.parse("flac", None))
    writer.write({"vocals": block})
    assert not target.exists()  # still under a temporary name
    report = writer.close()

    assert target.is_file() and leftovers(tmp_path) == []
    assert writer.close() is report  # closing twice is harmless


def test_blocks_must_match_the_declared_stems_and_shapes(tmp_path: Path) -> None:
    paths = {"a": tmp_path / "a.wav", "b": tmp_path / "b.wav"}
    with StemSetWriter(paths, 44100, 2, OutputFormat.parse("wav", None)) as writer:
        with pytest.raises(ValueError, match="expected blocks"):
            writer.write({"a": np.zeros((2, 10), np.float32)})
        with pytest.raises(ValueError, match="one n"):
            writer.write({"a": np.zeros((2, 10), np.float32), "b": np.zeros((2, 11), np.float32)})
        writer.write({"a": np.zeros((2, 10), np.float32), "b": np.zeros((2, 10), np.float32)})
    assert sf.info(str(paths["b"])).frames == 10


def test_unwritable_target_raises_invalid_output(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    with pytest.raises(InvalidOutput) as caught:
        StemSetWriter({"a": blocker / "a.wav"}, 44100, 2, OutputFormat.parse("wav", None))
    # In words, naming the path: not Python's "[Errno 17] File exists: '...'".
    assert caught.value.message == f"cannot write the stems: {blocker} is a file, not a folder"
    with pytest.raises(InvalidOutput) as below:
        StemSetWriter({"a": blocker / "sub" / "a.wav"}, 44100, 2, OutputFormat.parse("wav", None))
    assert below.value.message == f"cannot write the stems: Not a directory ({blocker / 'sub'})"
    assert [p.name for p in tmp_path.iterdir()] == ["not-a-dir"]


@pytest.mark.parametrize("rescale", [False, True], ids=["direct", "rescale"])
def test_a_stem_name_near_the_file_name_limit_is_written(tmp_path: Path, rescale: bool) -> None:
    """A song with a long name (a download's title, 115 accented letters: 230 bytes) gives
    stems of legal names under 255 bytes; their hidden temporaries must fit too."""
    track = "é" * 115
    paths = {s: tmp_path / f"{track}_{s}.wav" for s in ("vocals", "accompaniment")}
    block = tone(0.2, 44100, (440.0,))
    with StemSetWriter(paths, 44100, 1, OutputFormat.parse("wav", None), rescale=rescale) as w:
        w.write({"vocals": block, "accompaniment": block})
        w.close()
    assert all(path.is_file() for path in paths.values())
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_stems_are_written_into_a_folder_whose_name_is_not_utf8(tmp_path: Path, fmt: str) -> None:
    """`separate -o` an old Latin-1 folder 'Café': the song was separated, then writing its
    stems ended the run in a UnicodeEncodeError traceback (soundfile encodes a path
    strictly)."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/Caf\xe9"))
    folder.mkdir()
    paths = {"vocals": folder / f"A_vocals.{fmt}"}
    with StemSetWriter(paths, 44100, 1, OutputFormat.parse(fmt, None), rescale=False) as w:
        w.write({"vocals": tone(0.2, 44100, (440.0,))})
        w.close()
    assert sf.info(os.fsencode(paths["vocals"])).frames == 8820


def test_a_read_only_disk_is_said_as_such_not_as_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-o on a read-only mount (a locked SD card): mounting one needs root, so the mount is
    played by os.access and os.statvfs, which are what tell it apart."""
    real_statvfs = os.statvfs

    class ReadOnly:
        f_flag = real_statvfs(tmp_path).f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda *_args, **_kw: False)
    monkeypatch.setattr(os, "statvfs", lambda _path: ReadOnly())
    with pytest.raises(InvalidOutput) as caught:
        check_folder(tmp_path / "out")
    assert caught.value.message == f"cannot write the stems: Read-only file system ({tmp_path})"
