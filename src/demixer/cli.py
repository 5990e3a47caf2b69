"""The ``demixer`` command line.

Exit codes: 0 ok, 2 usage (unknown model or stem, bad option), 3 bad input audio, 4 model
unavailable (weights missing or failing their checksum), 1 anything else. Errors print one line,
never a traceback.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from demixer import __version__, cli_remote, cli_service
from demixer.cli_output import print_error
from demixer.errors import DemixerError, InvalidAudio, exit_code_for
from demixer.models.quality import DEFAULT_QUALITY, parse_quality

__all__ = ["app", "main"]

app = typer.Typer(
    name="demixer",
    help="Split songs and videos into stems (vocals, drums, bass, ...) on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List and fetch separation models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

err = Console(stderr=True)
# Never wrapped: scripts read the paths printed here, and a wrapped path is a wrong path.
out = Console(soft_wrap=True)


def _fail(error: DemixerError) -> typer.Exit:
    print_error(error.code, error.message)
    return typer.Exit(exit_code_for(error))


def _version(value: bool) -> None:
    if value:
        out.print(f"demixer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Split songs and videos into stems (vocals, drums, bass, ...) on this machine."""


def _advance(progress: Progress, task: TaskID, fraction: float) -> None:
    progress.update(task, completed=fraction)


@app.command()
def separate(
    files: Annotated[list[Path], typer.Argument(help="Audio or video files to separate.")],
    model: Annotated[
        str, typer.Option("-m", "--model", help="Model id (see `demixer models list`).")
    ] = "spleeter-2stems",
    stems: Annotated[
        str | None,
        typer.Option(
            "--stems",
            help="Comma-separated stems, e.g. vocals,drums (default: all of the model's). "
            "'residual' (or, beside one stem, 'instrumental'/'accompaniment'/'others') is "
            "everything else; it is added whenever the stems do not cover the model.",
        ),
    ] = None,
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="Output directory.")] = Path(
        "separated"
    ),
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="wav, flac or mp3 (320 kbps).")
    ] = "wav",
    bit_depth: Annotated[
        str | None,
        typer.Option("--bit-depth", help="wav: 16, 24 or 32f (float); flac: 16 or 24. Default 16."),
    ] = None,
    template: Annotated[
        str,
        typer.Option("--template", help="Output path template: {track}, {stem}, {ext}, {model}."),
    ] = "{track}/{stem}.{ext}",
    downmix: Annotated[
        bool, typer.Option("--downmix", help="Fold inputs with more than 2 channels to stereo.")
    ] = False,
    rescale: Annotated[
        bool,
        typer.Option(
            "--rescale",
            help="Integer/mp3 output: scale all stems by one gain instead of clipping peaks.",
        ),
    ] = False,
    model_path: Annotated[
        Path | None, typer.Option("--model-path", help="Load this local checkpoint instead.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")] = "cpu",
    quality: Annotated[
        str,
        typer.Option(
            "--quality",
            "-q",
            envvar="DEMIXER_QUALITY",
            help="fast, balanced or best. For spleeter-2stems and cascade-4stems: fast is "
            "Deezer's own pipeline, balanced better stems at the same speed, best about 4x "
            "slower for a little more; other models ignore it.",
        ),
    ] = DEFAULT_QUALITY,
) -> None:
    """Separate FILES into stems, one folder per track (several files share one loaded model)."""
    from demixer.audio import OutputFormat
    from demixer.engine import Separator

    try:
        level = parse_quality(quality)
        output = OutputFormat.parse(fmt, bit_depth)
        separator = Separator(model, model_path=model_path, device=device)
        requested = stems.split(",") if stems else None
        separator.plan(requested)  # reject unknown stems before any decoding
    except DemixerError as e:
        raise _fail(e) from None

    failures = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    ) as progress:
        for path in files:
            task = progress.add_task(escape(path.name), total=1.0)
            try:
                result = separator.separate_file(
                    path,
                    out_dir,
                    requested,
                    fmt=output,
                    template=template,
                    downmix=downmix,
                    rescale=rescale,
                    quality=level,
                    on_progress=partial(_advance, progress, task),
                )
            except InvalidAudio as e:
                failures += 1
                progress.update(task, description=f"{escape(path.name)} [red]failed")
                print_error(e.code, e.message)
                last_error: DemixerError = e
                continue
            except DemixerError as e:
                raise _fail(e) from None
            progress.update(task, completed=1.0)
            speed = result.duration / result.seconds if result.seconds else 0.0
            out.print(
                f"{escape(path.name)}: {result.duration:.1f} s in {result.seconds:.1f} s "
                f"({speed:.1f}x real time)",
                highlight=False,
            )
            for name, written in result.paths.items():
                clipped = result.report.clipped.get(name, 0)
                note = f"  [yellow]{clipped} samples clipped[/]" if clipped else ""
                out.print(f"  {name}: {escape(str(written))}{note}", highlight=False)
            if any(result.report.clipped.values()):
                out.print(
                    "  [yellow]some stems clipped in integer output: use --bit-depth 32f "
                    "(never clipped) or --rescale[/]"
                )
            if result.report.gain != 1.0:
                out.print(f"  rescaled all stems by {result.report.gain:.3f} to avoid clipping")
    if failures:
        raise typer.Exit(exit_code_for(last_error))


@models_app.command("list")
def models_list() -> None:
    """Every model: id, stems, sample rate, whether its weights are here, measured quality."""
    from demixer.models.loading import default_model_dir, is_installed
    from demixer.models.registry import list_specs

    table = Table(title=f"models (weights cache: {default_model_dir()})")
    for column in ("id", "stems", "rate", "installed", "quality", "licence"):
        table.add_column(column)
    for spec in list_specs():
        table.add_row(
            spec.id,
            ",".join(spec.stems),
            f"{spec.sample_rate} Hz",
            "yes" if is_installed(spec) else "no",
            spec.quality,
            spec.license,
        )
    Console(width=200).print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Model id, e.g. htdemucs.")],
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Mirror to fetch from (also $DEMIXER_MODEL_BASE_URL)."),
    ] = None,
) -> None:
    """Download a model's weights into the cache and verify their SHA-256."""
    from demixer.models.download import pull

    def progress(file: str, done: int, total: int | None) -> None:
        if total:
            err.print(f"\r{file}: {done / total:6.1%}", end="", highlight=False)

    try:
        paths = pull(name, base_url=base_url, on_progress=progress if err.is_terminal else None)
    except DemixerError as e:
        raise _fail(e) from None
    if err.is_terminal:
        err.print()
    for path in paths:
        out.print(f"{path}", highlight=False)
    out.print(f"{name}: installed and verified")


cli_service.register(app)
cli_remote.register(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
