"""Limits held on what is decoded, not on what a file declares; FFmpeg kept to its job.

The crafted files (tests/crafted.py) declare one length and hold another. The duration limit
(AudioReader ``max_seconds``: the worker's ``max_duration_seconds``, the CLI's
``--max-duration``) stops decoding at the limit; the upload probe sees what the job would
(progress on a lying file: tests/test_engine.py); FFmpeg opens only the demuxers of audio
and video files, so a concat script or playlist cannot make it read another file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from audiofiles import encode, tone
from crafted import concat_script, lying_xing_mp3, silent_flac_without_length, wav_promising
from demixer.audio import AudioReader, OutputFormat, StemSetWriter, probe
from demixer.audio.container import DEMUXERS
from demixer.errors import DurationLimit, InvalidAudio, StorageFull
from demixer.service.worker.child import classify_error

RATE = 44100
DOCS = Path(__file__).resolve().parent.parent / "docs" / "hardening.md"


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crafted")
    return {
        "lying": lying_xing_mp3(root / "lying.mp3", seconds=12.0),
        "silent": silent_flac_without_length(root / "silent.flac", seconds=3300.0),
        "promising": wav_promising(root / "promising.wav"),
    }


def test_a_length_hidden_from_the_header_still_stops_at_the_limit(
    crafted: dict[str, Path],
) -> None:
    with av.open(str(crafted["lying"])) as c:  # what the file says about itself
        assert c.duration is not None and c.duration / av.time_base < 1.0
    with AudioReader(crafted["lying"], max_seconds=5.0) as reader:
        decoded = 0
        with pytest.raises(DurationLimit, match="limit of 5 s") as caught:
            for block in reader.blocks(4096):
                decoded += block.shape[1]
    assert 4.5 * RATE <= decoded <= 5.0 * RATE  # stopped at the limit, not at the end
    assert "'lying.mp3'" in caught.value.message
    # The hour of silence in 80 kB, no length declared: stopped after the limit, not an hour.
    with AudioReader(crafted["silent"], max_seconds=20.0) as reader, pytest.raises(DurationLimit):
        for _ in reader.blocks(1 << 16):
            pass


def test_the_probe_counts_what_the_header_hides(crafted: dict[str, Path]) -> None:
    assert probe(crafted["lying"]).duration == pytest.approx(12.0, abs=0.1)
    assert probe(crafted["silent"]).duration == pytest.approx(3300.0, abs=1.0)
    # Counting stops past the limit: a bound on the work, and enough to refuse the file.
    bounded = probe(crafted["silent"], max_seconds=60.0).duration
    assert bounded is not None and 60.0 < bounded < 61.0


def test_probe_and_reader_give_one_answer_on_a_header_promising_hours(
    crafted: dict[str, Path],
) -> None:
    with pytest.raises(InvalidAudio, match="truncated") as at_upload:
        probe(crafted["promising"])
    with pytest.raises(InvalidAudio, match="truncated") as in_the_job:
        AudioReader(crafted["promising"])
    assert at_upload.value.message == in_the_job.value.message


@pytest.mark.parametrize(("name", "codec", "rate", "within"),
                         [("a.opus", "libopus", 48000, 1e-6),
                          ("a.m4a", "aac", RATE, 1e-6),
                          ("a.mp3", "libmp3lame", RATE, 1e-6),
                          # Matroska's times are whole milliseconds
                          ("a.webm", "libopus", 48000, 0.002),
                          ("a.mka", "libopus", 48000, 0.002)])  # fmt: skip
def test_a_file_of_exactly_the_limit_is_within_it(
    tmp_path: Path, name: str, codec: str, rate: int, within: float
) -> None:
    """An encoder's delay is not the song's: an Ogg Opus file (a WebM) of exactly the limit
    (its 312-sample pre-skip counted in the stream's length) was refused at upload and by the
    job as longer than it."""
    path = encode(tmp_path / name, tone(2.0, rate, (440.0, 660.0)), rate, codec)
    duration = probe(path, max_seconds=2.0).duration
    assert duration is not None and 2.0 - within <= duration <= 2.0
    with AudioReader(path, max_seconds=2.0) as reader:
        assert sum(block.shape[1] for block in reader.blocks(4096)) == 2 * rate


def test_a_file_just_past_the_limit_is_said_to_be_past_it(tmp_path: Path) -> None:
    """Tenths read a file 1 ms over the limit as within it: "longer than the limit of 2 s (it
    declares 2.0 s)"."""
    path = encode(tmp_path / "a.flac", tone(2.001, RATE, (440.0,)), RATE, "flac")
    with pytest.raises(DurationLimit) as refused:
        AudioReader(path, max_seconds=2.0)
    assert refused.value.message == (
        "'a.flac' is longer than the limit of 2 s (it declares 2.001 s); send a shorter file"
    )


def test_the_cli_has_a_duration_bound(crafted: dict[str, Path], tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "demixer"
    out = tmp_path / "out"
    run = subprocess.run(
        [str(cli), "separate", str(crafted["silent"]), "-o", str(out), "--max-duration", "2"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "DEMIXER_MODEL_DIR": str(tmp_path / "models")},
    )  # fmt: skip
    assert run.returncode == 3, run.stderr
    assert run.stderr.startswith(f"error [DURATION_LIMIT] '{crafted['silent'].name}' is longer ")
    # This is the user's own limit, not a server's, and the message says how to lift it.
    assert "than the limit of 2 s (" in run.stderr
    assert run.stderr.rstrip().endswith("send a shorter file or raise --max-duration (0: no limit)")
    assert not any(p.is_file() for p in out.rglob("*")) if out.exists() else True


def test_a_concat_script_cannot_make_ffmpeg_read_another_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.wav"
    sf.write(secret, np.zeros((RATE, 2), np.float32), RATE)
    script = concat_script(tmp_path / "upload.mp3", secret)
    for open_it in (probe, AudioReader):
        with pytest.raises(InvalidAudio, match="cannot be read"):
            open_it(script)


def test_the_documented_ffmpeg_is_the_one_pyav_brings() -> None:
    """Major and minor versions: PyAV 18.1.1 brought FFmpeg 8.1.3 where the line named 18.1.0
    and 8.1.2, and every fresh install failed here on a patch release that changes no demuxer."""
    assert set(DEMUXERS) <= set(av.formats_available)
    text = DOCS.read_text()
    documented = re.search(r"PyAV (\S+) with FFmpeg (\S+)", text)
    assert documented is not None, "docs/hardening.md names PyAV's FFmpeg"
    installed = (av.__version__, av.ffmpeg_version_info)
    assert documented.groups() == tuple(".".join(v.split(".")[:2]) for v in installed), (
        "PyAV or its FFmpeg changed: check the demuxer allowlist (audio/decode.py DEMUXERS) "
        "against the new FFmpeg and update docs/hardening.md"
    )


def test_stems_on_a_full_disk_are_storage_full_not_a_system_error(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                             capture_output=True, check=False)  # fmt: skip
    assert mounted.returncode == 0, f"this test needs to mount a tmpfs: {mounted.stderr!r}"
    try:
        block = np.zeros((2, RATE), np.float32)
        for fmt in ("wav", "flac", "mp3"):
            with pytest.raises(StorageFull, match="disk is full") as caught:
                writer = StemSetWriter({"a": small / f"a.{fmt}"}, RATE, 2,
                                       OutputFormat.parse(fmt, None))  # fmt: skip
                for _ in range(60):
                    writer.write({"a": block + 0.1 * np.random.rand(2, RATE).astype(np.float32)})
                writer.close()
            assert list(small.iterdir()) == []  # nothing left behind
            code, _, retryable = classify_error(caught.value)
            assert (code, retryable) == ("STORAGE_FULL", True)
    finally:
        subprocess.run(["umount", str(small)], check=False)
