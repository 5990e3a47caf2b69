"""Decoding real files of real formats, rejecting bad ones, and resampling.

Every input is an actual file written by FFmpeg's encoders (see ``audiofiles.py``) or the
MUSDB18 excerpt stempeg ships; assertions are what a user would check by ear or by eye:
channel count, rate, length, pitch, and a clear error for a file that cannot work.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from audiofiles import (
    AudioFiles,
    dominant_frequency,
    encode,
    encode_tracks,
    stempeg_example,
    tone,
    with_cover,
)
from crafted import many_channels_wav
from demixer.audio import AudioReader, StreamResampler, load, probe, resample, resampled_length
from demixer.errors import InvalidAudio


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> AudioFiles:
    return AudioFiles(tmp_path_factory.mktemp("decode"))


# name -> (channels, rate, codec, lossless)
GOOD = {
    "stereo.wav": (2, 44100, "pcm_s16le", True),
    "mono.wav": (1, 44100, "pcm_s16le", True),
    "float.wav": (2, 48000, "pcm_f32le", True),
    "stereo.flac": (2, 44100, "flac", True),
    "mono.flac": (1, 22050, "flac", True),
    "stereo.mp3": (2, 44100, "mp3", False),
    "mono.mp3": (1, 44100, "mp3", False),
    "stereo.m4a": (2, 44100, "aac", False),
    "opus.ogg": (2, 48000, "opus", False),
    "vorbis.ogg": (2, 44100, "vorbis", False),
    "video.mp4": (2, 44100, "aac", False),
    "video.mov": (2, 48000, "pcm_s16le", True),
    "video.mkv": (2, 48000, "flac", True),
    "video.webm": (2, 48000, "opus", False),
    "rate8k.wav": (1, 8000, "pcm_s16le", True),
    "rate96k.flac": (2, 96000, "flac", True),
    "rate192k.wav": (2, 192000, "pcm_s16le", True),
}


@pytest.mark.parametrize("name", GOOD)
def test_every_container_decodes_to_its_channels_rate_length_and_pitch(
    files: AudioFiles, name: str
) -> None:
    channels, rate, codec, lossless = GOOD[name]
    made = files.get(name)

    info = probe(made.path)
    audio, got_rate = load(made.path)

    assert (info.channels, info.sample_rate, info.codec) == (channels, rate, codec)
    assert info.duration == pytest.approx(made.seconds, abs=0.02)
    assert audio.dtype == np.float32 and audio.ndim == 2
    assert (audio.shape[0], got_rate) == (channels, rate)
    # Lossy codecs may keep a frame of priming or padding; nothing more.
    assert audio.shape[1] / rate == pytest.approx(made.seconds, abs=0.03)
    if name != "vorbis.ogg":
        # Where the file says where its audio starts and ends (an MP3's LAME tag, an MP4's
        # edit list, Ogg Opus's pre-skip and end granule), exactly that: stems line up with
        # the song sample for sample in a DAW. (An AAC's end padding once came out too.)
        assert audio.shape[1] == made.signal.shape[1]
    for decoded, source in zip(audio, made.signal, strict=True):
        expected = dominant_frequency(source, rate)
        assert dominant_frequency(decoded[: len(source)], rate) == pytest.approx(expected, abs=2)
    if lossless:
        n = made.signal.shape[1]
        assert audio.shape[1] == n
        for decoded, source in zip(audio, made.signal, strict=True):
            assert np.corrcoef(decoded, source)[0, 1] > 0.99999
        assert np.abs(audio - made.signal).max() < 2e-4  # 16-bit quantisation


def test_probe_names_the_container(files: AudioFiles) -> None:
    assert probe(files.get("stereo.mp3").path).container == "mp3"
    assert probe(files.get("stereo.m4a").path).container == "mov,mp4,m4a,3gp,3g2,mj2"
    assert probe(files.get("video.webm").path).container == "matroska,webm"


@pytest.mark.parametrize(
    ("name", "frames"),
    [("long.mp3", 10_007), ("long.flac", 4096), ("stereo.m4a", 1), ("video.webm", 48_000)],
)
def test_streamed_blocks_are_constant_size_and_concatenate_to_load(
    files: AudioFiles, name: str, frames: int
) -> None:
    path = files.get(name).path
    whole, rate = load(path)

    with AudioReader(path) as reader:
        blocks = list(reader.blocks(frames))
        assert (reader.channels, reader.sample_rate) == (whole.shape[0], rate)

    assert all(b.shape == (whole.shape[0], frames) for b in blocks[:-1])
    assert 0 < blocks[-1].shape[1] <= frames
    assert all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)


def _projection(mixed: np.ndarray, source: np.ndarray) -> float:
    """How much of ``source`` (1-D) is in ``mixed`` (1-D), as a linear gain."""
    return float(mixed @ source / (source @ source))


def test_surround_downmixes_with_the_itu_matrix(files: AudioFiles) -> None:
    made = files.get("surround.flac")  # 5.1: FL FR FC LFE BL BR, each its own tone

    audio, rate = load(made.path, downmix=True)

    assert (audio.shape, rate) == ((2, made.signal.shape[1]), 48000)
    fl, fr, fc, lfe, bl, br = made.signal
    left, right = audio
    assert _projection(left, fl) == pytest.approx(1.0, abs=1e-3)
    assert _projection(left, fc) == pytest.approx(0.7071, abs=1e-3)
    assert _projection(left, bl) == pytest.approx(0.7071, abs=1e-3)
    assert _projection(right, br) == pytest.approx(0.7071, abs=1e-3)
    assert abs(_projection(left, fr)) < 1e-3 and abs(_projection(left, br)) < 1e-3
    assert abs(_projection(left, lfe)) < 1e-3 and abs(_projection(right, lfe)) < 1e-3


@pytest.mark.parametrize("name", ["three.wav", "surround.flac", "surround.m4a"])
def test_more_than_two_channels_needs_downmix(files: AudioFiles, name: str) -> None:
    path = files.get(name).path
    stored = files.get(name).signal.shape[0]

    assert probe(path).channels == stored  # probing reports, it does not reject
    with pytest.raises(InvalidAudio, match=f"{stored} channels.*--downmix"):
        load(path)
    with AudioReader(path, downmix=True) as reader:
        assert (reader.channels, reader.info.channels) == (2, stored)
        audio = np.concatenate(list(reader.blocks(8192)), axis=1)
    assert audio.shape[0] == 2
    assert audio.shape[1] / reader.sample_rate == pytest.approx(1.5, abs=0.03)


def _wav_extensible(path: Path, signal: np.ndarray, rate: int, channel_mask: int) -> Path:
    """``signal`` as 16-bit WAVE_FORMAT_EXTENSIBLE naming its channels' speakers by
    ``channel_mask`` (libsndfile writes no mask of one's choosing)."""
    channels = signal.shape[0]
    pcm = np.rint(signal.T * 32767).astype("<i2").tobytes()
    pcm_guid = bytes.fromhex("0100000000001000800000aa00389b71")
    fmt = struct.pack(
        "<HHIIHHHHI", 0xFFFE, channels, rate, rate * 2 * channels, 2 * channels, 16, 22, 16,
        channel_mask,
    ) + pcm_guid  # fmt: skip
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


@pytest.mark.parametrize(("speakers", "mask"), [("back left/right", 0x30), ("centre + LFE", 0xC)])
@pytest.mark.parametrize("downmix", [False, True])
def test_a_stereo_file_is_read_as_its_two_channels_whatever_speakers_they_name(
    tmp_path: Path, speakers: str, mask: int, downmix: bool
) -> None:
    """A two-channel WAV whose header names other speakers than front left/right (a surround
    pair exported on its own) was remixed by FFmpeg towards the front: refused as "corrupt"
    for back left/right, its LFE dropped and centre doubled for centre + LFE."""
    signal = tone(1.0, 44100, [440.0, 660.0])
    path = _wav_extensible(tmp_path / "pair.wav", signal, 44100, mask)

    read, rate = load(path, downmix=downmix)

    assert (read.shape, rate) == (signal.shape, 44100)
    np.testing.assert_allclose(read, signal, atol=1 / 32768)


@pytest.mark.parametrize(
    ("channels", "mask", "said"),
    [
        (32, None, "32 channels, no speakers named"),  # a mixing desk's 32-track recording
        (4, 0x630, "4 channels (BL+BR+SL+SR)"),  # surrounds only: no front to fold them to
    ],
)
def test_a_downmix_ffmpeg_cannot_make_is_said_not_called_corrupt(
    tmp_path: Path, channels: int, mask: int | None, said: str
) -> None:
    """Asked to fold these to stereo, FFmpeg has no matrix: the file was refused as "corrupt
    or truncated: decoding failed (FFmpeg: Invalid argument)"."""
    path = tmp_path / "multitrack.wav"
    if mask is None:
        many_channels_wav(path, channels, seconds=0.1)
    else:
        signal = tone(0.1, 44100, [200.0 + 100 * i for i in range(channels)], amplitude=0.2)
        _wav_extensible(path, signal, 44100, mask)

    with pytest.raises(InvalidAudio) as refused:
        load(path, downmix=True)
    assert refused.value.message == (
        f"'multitrack.wav' has {said}: FFmpeg cannot fold that to stereo; mix it down to "
        "stereo first"
    )


def test_downmix_keeps_mono_and_stereo_as_they_are(files: AudioFiles) -> None:
    assert load(files.get("mono.flac").path, downmix=True)[0].shape[0] == 1
    stereo = files.get("stereo.flac")
    np.testing.assert_array_equal(load(stereo.path, downmix=True)[0], load(stereo.path)[0])


def damaged_middle(files: AudioFiles, name: str, damage: bytes, at: bytes = b"") -> Path:
    """A copy of ``name`` with ``damage`` written over the bytes at its middle (or where
    ``at`` first occurs after it)."""
    data = bytearray(files.get(name).path.read_bytes())
    middle = data.index(at, len(data) // 2)
    data[middle : middle + len(damage)] = damage
    return files.bytes_file(f"damaged-{name}", bytes(data))


def _bad_inputs() -> dict[str, tuple[Callable[[AudioFiles], Path], str]]:
    """name -> (make the file, a word the error message must contain)."""

    def made(name: str) -> Callable[[AudioFiles], Path]:
        return lambda f: f.get(name).path

    def cut(name: str, fraction: float) -> Callable[[AudioFiles], Path]:
        return lambda f: f.truncated(name, fraction)

    def zeroed_middle(name: str, size: int = 300) -> Callable[[AudioFiles], Path]:
        return lambda f: damaged_middle(f, name, bytes(size))

    def bad_headers(name: str) -> Callable[[AudioFiles], Path]:
        def make(f: AudioFiles) -> Path:  # every frame header in the middle third
            data = f.get(name).path.read_bytes()
            third = len(data) // 3
            middle = re.sub(rb"\xff\xfb[\x90-\x93]", b"\xff\xfb\xff", data[third : 2 * third])
            return f.bytes_file(f"headless-{name}", data[:third] + middle + data[2 * third :])

        return make

    return {
        "missing": (lambda f: f.root / "no-such-file.mp3", "not found"),
        "directory": (lambda f: f.root, "directory"),
        "empty file": (lambda f: f.bytes_file("empty.mp3", b""), "empty"),
        "text named .mp3": (
            lambda f: f.bytes_file("notes.mp3", b"just some text, not audio\n" * 40),
            "not an audio or video file",
        ),
        "mp3 cut to 40%": (cut("long.mp3", 0.4), "truncated"),
        "mp3 cut to 90%": (cut("long.mp3", 0.9), "truncated"),
        "mp3 damaged for a second": (zeroed_middle("long.mp3", 20_000), "damaged"),
        "mp3 frames damaged for a second": (bad_headers("long.mp3"), "corrupt"),
        "wav cut to 40%": (cut("long.wav", 0.4), "truncated"),
        "wav cut to 90%": (cut("long.wav", 0.9), "truncated"),
        "flac cut to 40%": (cut("long.flac", 0.4), "truncated"),
        "flac cut to 97%": (cut("long.flac", 0.97), "truncated"),
        "flac damaged": (zeroed_middle("long.flac"), "damaged"),
        "m4a cut": (cut("stereo.m4a", 0.8), "truncated"),
        "ogg cut mid-page": (cut("vorbis.ogg", 0.9), "truncated"),
        "opus cut mid-page": (cut("opus.ogg", 0.9), "truncated"),
        "mkv cut": (cut("video.mkv", 0.6), "truncated"),
        "zero-length wav": (made("empty.wav"), "zero length"),
        "zero-length flac": (made("empty.flac"), "zero length"),
        "video without audio": (made("silent-video.mp4"), "no audio stream"),
        "4 kHz": (made("rate4k.wav"), "4000 Hz"),
        "384 kHz": (made("rate384k.wav"), "384000 Hz"),
        "6 channels": (made("surround.m4a"), "6 channels"),
    }


BAD = _bad_inputs()


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_one_typed_error_saying_what_is_wrong(
    files: AudioFiles, case: str
) -> None:
    make, word = BAD[case]
    path = make(files)

    with pytest.raises(InvalidAudio, match=word) as whole:
        load(path)
    # Streaming reports the same problem, at the latest when the blocks run out.
    with pytest.raises(InvalidAudio, match=word) as streamed, AudioReader(path) as reader:
        for _ in reader.blocks(4096):
            pass
    # A path that is not there is its own case (a typo is not a broken file): FILE_NOT_FOUND.
    expected = "FILE_NOT_FOUND" if case == "missing" else "INVALID_AUDIO"
    assert whole.value.code == streamed.value.code == expected


def test_an_mp3_whose_tag_is_not_the_utf8_it_claims_is_read_with_its_tags(
    files: AudioFiles,
) -> None:
    """An ID3v2.4 title in Latin-1 bytes marked UTF-8 (as some taggers write) made PyAV's
    strict tag decoding fail, and the song was refused as "not an audio or video file"."""
    text = b"\x03" + "Café del Mar".encode("latin-1")  # 3: UTF-8, which this is not
    frame = b"TIT2" + len(text).to_bytes(4, "big") + b"\x00\x00" + text  # sizes < 128
    tag = b"ID3\x04\x00\x00" + len(frame).to_bytes(4, "big") + frame
    clean = files.get("stereo.mp3").path
    path = files.bytes_file("latin1-tag.mp3", tag + clean.read_bytes())

    assert probe(path).duration == pytest.approx(probe(clean).duration)
    with AudioReader(path) as reader:
        assert reader.tags == {"title": "Caf\ufffd del Mar"}
        audio = np.concatenate(list(reader.blocks(1 << 16)), axis=1)
    np.testing.assert_array_equal(audio, load(clean)[0])


def test_a_damaged_mp3_frame_is_read_as_silence_keeping_time_and_said(
    files: AudioFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """A glitch in a downloaded mp3 (a damaged frame header mid-file) refused the whole song,
    where every player skips it. Now its frames are silence of their length: the audio
    before is untouched, the song goes on after it at its time, and a warning says so.
    The damaged header hid where a frame began, so FFmpeg made 4 packets of the 5 frames:
    silence of 4 frames put the rest of the song a frame early, and the song (every stem)
    925 samples short."""
    clean, rate = load(files.get("long.mp3").path)
    # An MPEG-1 layer III frame header (128 kb/s) made one with bit rate and sample rate
    # indexes that mean nothing.
    path = damaged_middle(files, "long.mp3", b"\xff\xfb\xff\xff", at=b"\xff\xfb\x90")
    with caplog.at_level("WARNING", logger="demixer.audio"):
        read, read_rate = load(path)
    assert read_rate == rate and read.shape == clean.shape
    assert [r.getMessage() for r in caplog.records] == [
        "'damaged-long.mp3': 5 damaged audio frames (0.13 s) read as silence"
    ]
    silent = np.flatnonzero(np.all(read == 0, axis=0))
    start, end = silent[0], silent[-1] + 1
    assert end - start == 5 * 1152  # the five frames, nothing else
    assert 1.0 * rate < start < 2.0 * rate  # mid-file (of 3 s)
    np.testing.assert_array_equal(read[:, :start], clean[:, :start])
    # After it, the song again, at its time: sample for sample once two frames are decoded
    # (an MP3 frame may hold bits of the next one's; some of those were in the damage).
    np.testing.assert_array_equal(read[:, end + 2 * 1152 :], clean[:, end + 2 * 1152 :])


def test_truncation_is_reported_after_the_audio_that_did_decode(files: AudioFiles) -> None:
    path = files.truncated("long.mp3", 0.5)
    blocks: list[np.ndarray] = []

    with AudioReader(path) as reader, pytest.raises(InvalidAudio, match="truncated"):
        for block in reader.blocks(4096):
            blocks.append(block)

    assert sum(b.shape[1] for b in blocks) / 44100 == pytest.approx(1.5, abs=0.1)


def test_a_cut_flac_is_refused_by_the_probe_as_a_cut_wav_is(files: AudioFiles) -> None:
    """An upload of a FLAC cut short is refused at once (its header still says the whole
    length), not accepted as 3 s of audio and failed later by the job."""
    assert probe(files.get("long.flac").path).duration == pytest.approx(3.0)
    cut = files.truncated("long.flac", 0.25)
    with pytest.raises(InvalidAudio) as refused:
        probe(cut)
    assert re.fullmatch(
        r"\S+ is truncated or damaged: only 0\.\d\d s of audio is present but the file "
        r"declares 3\.00 s \(an incomplete download or copy\?\)",
        refused.value.message,
    ), refused.value.message
    # A duration limit below the file's length is not mistaken for a cut.
    assert probe(files.get("long.flac").path, max_seconds=1.0).duration == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("name", "container"),
    [
        ("take.w64", "W64"),
        ("take.caf", "CAF"),
        ("take-rf64.wav", "RF64"),
        ("take.aiff", "AIFF"),
        ("take.au", "AU"),
    ],
)
def test_a_cut_wave64_caf_rf64_aiff_or_au_is_refused_by_the_probe_as_a_cut_wav_is(
    tmp_path: Path, name: str, container: str
) -> None:
    """Cut short, a Wave64 (WAV with 64-bit sizes, from Sony's editors) or a CAF (Apple's)
    was taken as a shorter song: FFmpeg clamps its length to the bytes present, and the stems
    came back short. A cut RF64 (WAV with 64-bit sizes, from broadcast recorders), AIFF or AU
    was accepted at upload and its job failed later; now all are refused at once (Gaudio:
    1107 at job creation)."""
    whole = tmp_path / name
    sf.write(whole, tone(2.0, 44100, [440.0, 660.0]).T, 44100, format=container)
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    assert probe(whole).duration == pytest.approx(2.0)
    with pytest.raises(InvalidAudio) as refused:
        probe(cut)
    assert re.fullmatch(
        rf"'cut-{name}' is truncated or damaged: only [01]\.\d\d s of audio is present but the "
        r"file declares 2\.00 s \(an incomplete download or copy\?\)",
        refused.value.message,
    ), refused.value.message
    with pytest.raises(InvalidAudio, match="truncated"):
        load(cut)


def test_a_cut_compressed_caf_is_refused_by_the_probe_as_its_job_would(tmp_path: Path) -> None:
    """A compressed CAF whose packet table comes before its audio (the table states the whole
    length) was accepted when cut, and its job failed later."""
    made = encode(tmp_path / "made.caf", tone(2.0, 48000, [440.0, 660.0]), 48000, "libmp3lame")
    data = made.read_bytes()
    chunks, pos = [], 8  # after "caff", its version and flags
    while pos < len(data):  # a chunk: 4-byte name, 8-byte big-endian size, the data
        end = pos + 12 + int.from_bytes(data[pos + 4 : pos + 12], "big")
        chunks.append(data[pos:end])
        pos = end
    chunks.sort(key=lambda chunk: chunk[:4] == b"data")  # FFmpeg writes "pakt" after it
    whole = data[:8] + b"".join(chunks)
    cut = tmp_path / "cut.caf"
    cut.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(InvalidAudio) as refused:
        probe(cut)
    assert re.fullmatch(
        r"'cut.caf' is truncated or damaged: only 1\.\d\d s of audio is present but the file "
        r"declares 2\.00 s \(an incomplete download or copy\?\)",
        refused.value.message,
    ), refused.value.message
    with pytest.raises(InvalidAudio, match="truncated"):
        load(cut)
    (tmp_path / "whole.caf").write_bytes(whole)
    assert probe(tmp_path / "whole.caf").duration == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("codec", "parts"),
    [  # (rate in Hz, frequencies: one a channel) of each part
        ("libopus", ((48000, [440.0, 660.0]), (48000, [550.0]))),
        ("vorbis", ((44100, [440.0, 660.0]), (48000, [440.0, 660.0]))),
    ],
)
def test_ogg_files_of_different_formats_joined_are_refused_as_such(
    tmp_path: Path, codec: str, parts: tuple[tuple[int, list[float]], ...]
) -> None:
    """A stereo and a mono Opus file joined end to end (a chained Ogg file), or Vorbis files of
    two sample rates, were refused as "corrupt or truncated (FFmpeg: Not yet implemented in
    FFmpeg, patches welcome)": FFmpeg cannot read such a change there, and the user is now
    told that, at upload."""
    data = b""
    for i, (rate, freqs) in enumerate(parts):
        part = tmp_path / f"part{i}.ogg"
        encode(part, tone(1.0, rate, freqs), rate, codec, container_format="ogg",
               options={"strict": "experimental"} if codec == "vorbis" else None)  # fmt: skip
        data += part.read_bytes()
    joined = tmp_path / "joined.ogg"
    joined.write_bytes(data)

    with pytest.raises(InvalidAudio) as at_upload:
        probe(joined)
    assert at_upload.value.message == (
        "'joined.ogg' joins Ogg streams of different channel counts or sample rates (a mono "
        "part after a stereo one, say), which FFmpeg cannot read; send the parts separately, "
        "or converted to one format"
    )
    with pytest.raises(InvalidAudio) as in_the_job:
        load(joined)
    assert in_the_job.value.message == at_upload.value.message


@pytest.mark.parametrize(
    ("ext", "codec", "first", "second"),
    [  # (rate in Hz, bit rate) of each part
        ("mp3", "libmp3lame", (22050, 64_000), (44100, 128_000)),
        ("aac", "aac", (44100, 32_000), (44100, 256_000)),
    ],
)
def test_files_joined_end_to_end_are_read_whole_at_their_real_length(
    tmp_path: Path, ext: str, codec: str, first: tuple[int, int], second: tuple[int, int]
) -> None:
    """Two MP3s (or ADTS AAC streams) joined end to end, the second at a higher bit rate: FFmpeg
    guesses such a file's length from the first part's bit rate (6.2 s for this 4 s of MP3,
    15 s for the AAC). The upload said so, and the job then refused the file as "truncated or
    damaged: only 4.10 s of audio decoded but the file declares 6.20 s"."""
    parts = b""
    for i, (rate, bit_rate) in enumerate((first, second)):
        part = tmp_path / f"part{i}.{ext}"
        signal = tone(2.0, rate, [440.0, 660.0])
        encode(part, signal, rate, codec, container_format="adts" if ext == "aac" else None,
               bit_rate=bit_rate)  # fmt: skip
        parts += part.read_bytes()
    joined = tmp_path / f"joined.{ext}"
    joined.write_bytes(parts)

    info = probe(joined)
    audio, rate = load(joined)
    assert rate == first[0] and audio.shape[0] == 2
    assert audio.shape[1] / rate == pytest.approx(4.0, abs=0.15)
    assert info.duration == pytest.approx(audio.shape[1] / rate, abs=0.05)


def test_a_big_endian_wav_is_refused_not_separated_as_noise(tmp_path: Path) -> None:
    """FFmpeg reads a big-endian WAV (RIFX)'s samples as little-endian ones: the song decoded
    as full-scale noise, and its stems were noise. It is refused at upload, saying why."""
    path = tmp_path / "take.wav"
    sf.write(path, tone(0.5, 44100, [440.0, 660.0]).T, 44100, format="WAV", endian="BIG")
    assert path.read_bytes()[:4] == b"RIFX"

    message = (
        "'take.wav' is a big-endian WAV (RIFX), which FFmpeg decodes as noise; convert it to "
        "a standard WAV or to FLAC first"
    )
    with pytest.raises(InvalidAudio) as at_upload:
        probe(path)
    assert at_upload.value.message == message
    with pytest.raises(InvalidAudio) as in_the_job:
        load(path)
    assert in_the_job.value.message == message


def test_nan_and_inf_samples_are_read_as_silence_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A float WAV holding NaN or Inf (a broken render) would make every stem NaN, or silent
    at 16 bits, with exit 0: those samples are read as 0, the rest as they are, and a warning
    says how many."""
    rng = np.random.default_rng(4)
    audio = (0.2 * rng.standard_normal((2, 44100))).astype(np.float32)
    broken = audio.copy()
    broken[0, ::1000] = np.nan
    broken[1, 500::1000] = np.inf
    path = tmp_path / "broken.wav"
    sf.write(path, broken.T, 44100, subtype="FLOAT")
    with caplog.at_level("WARNING", logger="demixer.audio"):
        read, rate = load(path)
    assert rate == 44100
    expected = np.where(np.isfinite(broken), audio, np.float32(0.0))
    np.testing.assert_array_equal(read, expected)
    assert [r.getMessage() for r in caplog.records] == [
        "'broken.wav': 89 samples were NaN or infinite: read as silence"
    ]


@pytest.mark.parametrize(
    ("name", "audio", "video"),
    [
        ("clip.mkv", "flac", "mpeg4"),
        ("clip.webm", "libopus", "vp8"),
        ("clip.avi", "pcm_s16le", "mpeg4"),
    ],
)
def test_a_video_whose_picture_outlasts_its_sound_is_read_whole_not_called_truncated(
    tmp_path: Path, name: str, audio: str, video: str
) -> None:
    """A music video with an end card after the song (3 s of picture, 2 s of sound) was
    refused as "truncated or damaged": its container's length is the video's. The probe says
    the sound's length, and the whole of it is read."""
    signal = tone(2.0, 48000, [440.0, 660.0])
    path = encode(tmp_path / name, signal, 48000, audio, video=video, video_seconds=3.0)

    assert probe(path).duration == pytest.approx(2.0, abs=0.01)
    read, rate = load(path)
    assert (read.shape, rate) == (signal.shape, 48000)


def test_a_wmv_whose_picture_outlasts_its_sound_reads_as_its_sound_alone(tmp_path: Path) -> None:
    """ASF gives every stream the file's play time: a WMV screen recording whose picture ran
    1 s past its sound was refused as "truncated or damaged" (2 s of sound, 3 s declared).
    It reads as the same sound in a WMA file of its own, sample for sample."""
    signal = tone(2.0, 48000, [440.0, 660.0])
    video = encode(tmp_path / "screen.wmv", signal, 48000, "wmav2", video="wmv2",
                   video_seconds=3.0, bit_rate=128_000)  # fmt: skip
    sound = encode(tmp_path / "sound.wma", signal, 48000, "wmav2", bit_rate=128_000,
                   container_format="asf")  # fmt: skip

    read, _ = load(video)
    alone, _ = load(sound)

    np.testing.assert_array_equal(read, alone)
    assert alone.shape[1] > 1.9 * 48000  # the sound, not the start of it
    assert probe(video).duration == pytest.approx(probe(sound).duration, abs=0.05)


def test_the_first_audio_track_is_read_whole_when_a_second_one_is_longer(tmp_path: Path) -> None:
    """A file with a longer second audio track (a commentary, another language) was refused
    as truncated: the file's length is that of its longest track."""
    first, second = tone(1.0, 44100, [440.0, 660.0]), tone(2.0, 44100, [330.0, 550.0])
    path = encode_tracks(tmp_path / "two tracks.mkv", [first, second], 44100)

    assert probe(path).duration == pytest.approx(1.0)
    read, _ = load(path)
    assert read.shape == first.shape
    assert dominant_frequency(read[0], 44100) == pytest.approx(440.0, abs=2)


def test_the_audio_track_players_play_is_read_and_the_choice_said(tmp_path: Path) -> None:
    """A download with a commentary track first and the music second, flagged default (what
    every player plays): the commentary was separated, and nothing said there was a choice."""
    commentary, music = tone(1.0, 48000, [300.0, 300.0]), tone(1.0, 48000, [440.0, 660.0])
    path = encode_tracks(tmp_path / "film.mkv", [commentary, music], 48000, default=1)

    info = probe(path)
    read, _ = load(path)

    assert dominant_frequency(read[0], 48000) == pytest.approx(440.0, abs=2)
    assert (info.track, info.tracks) == (2, 2)
    assert info.track_note("'film.mkv'") == (
        "'film.mkv' has 2 audio tracks; track 2 (the one players play) is separated: to "
        "separate another, ask for it (CLI --audio-track, API input.audio_track)"
    )
    # The other one, asked for: read, and nothing to say; one the file lacks is refused.
    asked = probe(path, track=1)
    commentary_read, _ = load(path, track=1)
    assert (asked.track, asked.tracks, asked.track_note("'film.mkv'")) == (1, 2, None)
    assert dominant_frequency(commentary_read[0], 48000) == pytest.approx(300.0, abs=2)
    for missing in (0, 3):
        with pytest.raises(InvalidAudio) as refused:
            probe(path, track=missing)
        assert refused.value.message == (
            f"'film.mkv' has 2 audio tracks; there is no audio track {missing} to separate"
        )


@pytest.mark.parametrize(("name", "codec"), [("phone.mov", "pcm_s16le"), ("screen.mkv", "flac")])
def test_sound_that_starts_after_the_picture_keeps_its_place_on_the_video_timeline(
    tmp_path: Path, name: str, codec: str
) -> None:
    """A recording whose sound starts 0.5 s after its picture: its stems started at the first
    sound, 24 000 samples early against the video they are put back on (lip sync lost), and
    a Matroska one was refused as "truncated" (its track's length tag is its end time). The
    stems start where the file does, silent until the sound does: a click 1 s into the video
    is at sample 48 000."""
    signal = tone(2.5, 48000, [440.0, 660.0])
    signal[:, 24_000:24_048] = 0.9  # 0.5 s into the sound: 1.0 s into the video
    path = encode(tmp_path / name, signal, 48000, codec, video="mpeg4", video_seconds=3.0,
                  audio_start=0.5)  # fmt: skip

    read, _ = load(path)

    assert int(np.argmax(read[0] > 0.8)) == 48_000
    assert not read[:, :24_000].any()
    assert read.shape == (2, 144_000)
    assert probe(path).duration == pytest.approx(3.0, abs=0.001)


def test_a_cover_picture_does_not_move_where_an_mp3s_sound_starts(tmp_path: Path) -> None:
    """An MP3's sound starts 25 ms in (the encoder delay, which FFmpeg drops); its cover
    picture has no time of its own. Counted as the file's start, any other time FFmpeg gave
    it would put silence before every stem of a song bought with its artwork."""
    signal = tone(1.0, 44100, [440.0, 660.0])
    plain = encode(tmp_path / "plain.mp3", signal, 44100, "libmp3lame")
    covered = with_cover(encode(tmp_path / "song.mp3", signal, 44100, "libmp3lame"))

    info = probe(covered)

    assert info.offset == 0.0
    assert info.duration == probe(plain).duration
    assert load(covered)[0].shape == load(plain)[0].shape


@pytest.mark.parametrize(("name", "codec"), [("screen.mkv", "flac"), ("screen.mp4", "aac")])
def test_a_gap_in_a_videos_sound_is_read_as_silence_keeping_what_follows_in_place(
    tmp_path: Path, name: str, codec: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A screen recording whose sound paused for 0.5 s (a muted microphone) while the picture
    ran on was refused as "truncated" (3.00 s decoded, 3.50 s declared): its frames were put
    end to end, and all after the gap came 0.5 s early against the picture. The gap is read
    as silence, as players play it, and said."""
    signal = tone(3.0, 48000, [440.0, 660.0])
    signal[:, 96_000:96_048] = 0.9  # 2 s into the sound: 2.5 s into the video
    path = encode(tmp_path / name, signal, 48000, codec, video="mpeg4", video_seconds=3.5,
                  gap=(1.0, 0.5))  # fmt: skip

    with caplog.at_level("WARNING", logger="demixer.audio"):
        read, _ = load(path)

    assert abs(int(np.argmax(read[0] > 0.8)) - 120_000) <= 1  # an AAC decoder's one sample
    assert read.shape == (2, 168_000)
    assert caplog.messages == [
        f"'{name}': 1 gap in its sound (0.50 s) read as silence, so that what follows keeps "
        "its place against the picture"
    ]


@pytest.mark.parametrize(
    ("name", "codec", "video", "rate"),
    [
        ("broadcast.ts", "aac", "mpeg2video", 48000),
        ("camcorder.mpg", "mp2", "mpeg2video", 48000),
        ("stream.flv", "mp3", "flv1", 44100),
        ("screen.wmv", "wmav2", "wmv2", 44100),
    ],
)
def test_a_gap_in_a_transport_stream_flv_or_wmv_recordings_sound_is_read_as_silence(
    tmp_path: Path, name: str, codec: str, video: str, rate: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Gaps were read as silence in MP4 and Matroska only. A TV or camcorder recording (MPEG
    transport or program stream) or a WMV whose sound paused for 0.5 s was refused as
    "truncated" (its declared length counts the pause); an FLV was read end to end, all
    after the pause 0.5 s early against the picture. Against the same recording without the
    pause, what follows it comes 0.5 s later (to FLV's timestamps' millisecond), the pause
    is said, and the probe counts it (the length a duration limit sees at upload)."""
    signal = tone(3.0, rate, [440.0, 660.0])
    signal[:, 2 * rate : 2 * rate + 48] = 0.9  # 2 s into the sound
    bit_rate = 128_000 if codec == "wmav2" else None
    plain = encode(tmp_path / f"plain {name}", signal, rate, codec, video=video,
                   video_seconds=3.5, bit_rate=bit_rate)  # fmt: skip
    paused = encode(tmp_path / name, signal, rate, codec, video=video, video_seconds=3.5,
                    bit_rate=bit_rate, gap=(1.0, 0.5))  # fmt: skip

    unpaused, _ = load(plain)
    with caplog.at_level("WARNING", logger="demixer.audio"):
        read, _ = load(paused)

    def click(audio: np.ndarray) -> int:
        return int(np.argmax(audio[0] > 0.8))

    ms = rate // 1000
    assert abs(click(read) - click(unpaused) - rate // 2) <= ms
    assert abs(read.shape[1] - unpaused.shape[1] - rate // 2) <= ms
    delay = click(unpaused) - 2 * rate  # the codec's, the same in both
    pause = slice(delay + round(1.1 * rate), delay + round(1.45 * rate))
    assert not read[:, pause].any() and unpaused[:, pause].any()
    assert caplog.messages == [
        f"'{name}': 1 gap in its sound (0.50 s) read as silence, so that what follows keeps "
        "its place against the picture"
    ]
    assert probe(paused).duration == pytest.approx(probe(plain).duration + 0.5, abs=0.002)


def test_a_file_cut_before_its_first_audio_is_truncated_not_zero_length(
    files: AudioFiles,
) -> None:
    """An MKV cut just after its headers (an upload broken off early) declares 1.5 s and
    holds no audio: it was refused as "zero length" (Gaudio's empty-file answer), where the
    file is cut."""
    data = files.get("video.mkv").path.read_bytes()
    first_cluster = data.index(b"\x1f\x43\xb6\x75")  # Matroska's Cluster element
    path = files.bytes_file("cut-early.mkv", data[: first_cluster + 100])

    assert probe(path).duration == pytest.approx(1.5, abs=0.01)
    with pytest.raises(InvalidAudio) as refused:
        load(path)
    assert refused.value.message == (
        "'cut-early.mkv' is truncated or damaged: only 0.00 s of audio decoded but the file "
        "declares 1.50 s (an incomplete download or copy?)"
    )


def test_zero_length_wav_is_refused_when_opened(files: AudioFiles) -> None:
    with pytest.raises(InvalidAudio, match="zero length"):
        AudioReader(files.get("empty.wav").path)


def test_a_slightly_short_lossy_file_is_not_called_truncated(files: AudioFiles) -> None:
    # Cutting the last few milliseconds of an MP3 is indistinguishable from encoder padding.
    audio, rate = load(files.truncated("long.mp3", 0.995))
    assert audio.shape[1] / rate == pytest.approx(3.0, abs=0.05)


@pytest.fixture(scope="module")
def musdb() -> Path:
    return stempeg_example()


def test_musdb_stem_file_reads_the_mix_stream(musdb: Path) -> None:
    info = probe(musdb)
    audio, rate = load(musdb)

    assert (info.codec, info.sample_rate, info.channels) == ("aac", 44100, 2)
    assert info.duration == pytest.approx(6.08, abs=0.05)
    assert (audio.shape[0], rate) == (2, 44100)
    assert audio.shape[1] / rate == pytest.approx(info.duration, abs=0.05)
    # Real music: loud, and different in the two channels.
    assert 0.03 < float(np.sqrt(np.mean(audio**2))) < 0.5
    assert np.abs(audio[0] - audio[1]).max() > 0.01
    # It is the first of the five streams (the mix), not the drums that follow it.
    with av.open(str(musdb)) as container:
        streams = container.streams.audio
        assert len(streams) == 5
        drums = np.concatenate([f.to_ndarray() for f in container.decode(streams[1])], axis=1)
    n = min(drums.shape[1], audio.shape[1])
    assert np.corrcoef(audio[0, :n], drums[0, :n])[0, 1] < 0.9


def test_musdb_stream_in_small_blocks_equals_load(musdb: Path) -> None:
    whole, _ = load(musdb)
    with AudioReader(musdb) as reader:
        streamed = np.concatenate(list(reader.blocks(1000)), axis=1)
    np.testing.assert_array_equal(streamed, whole)


# --- resampling -------------------------------------------------------------------------


RATE_PAIRS = [(44100, 48000), (48000, 44100), (8000, 44100), (96000, 44100), (192000, 48000)]


@pytest.mark.parametrize(("from_rate", "to_rate"), RATE_PAIRS)
@pytest.mark.parametrize("block", [1000, 4096, 65536])
def test_streamed_resampling_matches_whole_signal_resampling(
    from_rate: int, to_rate: int, block: int
) -> None:
    rng = np.random.default_rng(from_rate + to_rate + block)
    n = from_rate + 12_345  # not a multiple of anything
    x = (0.3 * rng.standard_normal((2, n))).astype(np.float32)

    whole = resample(x, from_rate, to_rate)
    stream = StreamResampler(from_rate, to_rate, 2)
    parts = [stream.process(x[:, i : i + block]) for i in range(0, n, block)]
    parts.append(stream.process(np.zeros((2, 0), np.float32), last=True))
    streamed = np.concatenate(parts, axis=1)

    assert whole.shape == streamed.shape == (2, round(n * to_rate / from_rate))
    assert whole.shape[1] == resampled_length(n, from_rate, to_rate)
    assert whole.dtype == streamed.dtype == np.float32
    assert np.abs(streamed - whole).max() <= 1e-5


def test_streaming_with_the_last_flag_on_a_real_block_is_exact() -> None:
    x = tone(1.0, 44100, (440.0,))
    stream = StreamResampler(44100, 48000, 1)
    out = np.concatenate([stream.process(x[:, :30000]), stream.process(x[:, 30000:], last=True)], 1)
    np.testing.assert_allclose(out, resample(x, 44100, 48000), atol=1e-5)
    with pytest.raises(RuntimeError):
        stream.process(x)


def test_resampling_keeps_pitch_and_round_trips() -> None:
    x = tone(1.0, 8000, (1000.0,))

    up = resample(x, 8000, 44100)
    back = resample(up, 44100, 8000)

    assert up.shape == (1, 44100) and back.shape == x.shape
    assert dominant_frequency(up[0], 44100) == pytest.approx(1000, abs=2)
    # Away from the edges (where the filter sees the abrupt start) the round trip is exact.
    assert np.abs(back - x)[:, 200:-200].max() < 1e-4


def test_equal_rates_are_the_identity() -> None:
    x = tone(0.1, 44100, (440.0, 660.0))
    np.testing.assert_array_equal(resample(x, 44100, 44100), x)
    stream = StreamResampler(44100, 44100, 2)
    np.testing.assert_array_equal(stream.process(x, last=True), x)
