"""The ``demixer`` command line.

Exit codes: 0 ok, 2 usage (unknown model or stem, bad option), 3 bad input audio, 4 model
unavailable (weights missing or failing their checksum), 130 interrupted, 143 and 129 terminated
(SIGTERM, SIGHUP), 1 anything else. Errors print one line, never a traceback.
"""

from __future__ import annotations

import io
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from demixer import __version__, cli_models, cli_remote, cli_service, cli_user_models
from demixer.cli_inputs import (
    AudioTrackOption,
    DownmixOption,
    ExcludeSpanOption,
    FilesArgument,
    Input,
    RescaleOption,
    SpanOption,
    check_distinct_tracks,
    check_outputs,
    expand_inputs,
    parse_spans,
    skipped_line,
)
from demixer.cli_output import (
    FileProgress,
    Tally,
    fail,
    level_notes,
    print_error,
    print_warning,
    readable_help,
    stems_there,
    summed_up,
    written_lines,
)
from demixer.cli_signals import Terminated, stopping_on_termination, unblock_stop_signals
from demixer.defaults import DEFAULT_MODEL
from demixer.errors import (
    Cancelled,
    DemixerError,
    DurationLimit,
    InputNotFound,
    InvalidAudio,
    InvalidOutput,
    UnknownModel,
    UnknownQuality,
    exit_code_for,
)
from demixer.models.quality import DEFAULT_QUALITY, Quality, parse_quality
from demixer.naming import DEFAULT_TEMPLATE, shown_name

__all__ = ["app", "main"]

app = typer.Typer(
    name="demixer",
    help="Split songs and videos into stems (vocals, drums, bass, ...) on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help that reads in any terminal (see cli_output)
)

# Seconds of audio `separate` decodes at most per input (a DJ set fits; a crafted file whose
# header hides its length cannot decode for days).
DEFAULT_MAX_DURATION = 4 * 3600.0

err = Console(stderr=True)
# Never wrapped: scripts read the paths printed here, and a wrapped path is a wrong path.
out = Console(soft_wrap=True)


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
    from demixer.settings import load_env_file

    load_env_file()  # ./.env, as the deployment guide says; the environment wins over it


@app.command(short_help="Separate songs into stems on this machine.")
def separate(
    ctx: typer.Context,
    files: FilesArgument,
    model: Annotated[
        str | None,
        typer.Option(
            "-m",
            "--model",
            metavar="ID",
            help="Model id (see `demixer models list`) or its audio-separator file name "
            "(Kim_Vocal_2.onnx). Default: the best installed model or "
            f"recipe for --stems by published figures, else {DEFAULT_MODEL}.",
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            metavar="ID",
            help="Run a recipe, a chain of models (e.g. karaoke: vocals, then lead/backing).",
        ),
    ] = None,
    ensemble: Annotated[
        str | None,
        typer.Option(
            "--ensemble",
            metavar="A,B",
            help="Combine these models' estimates of the stems they share (each runs once); "
            "A@2,B weighs A twice in the average.",
        ),
    ] = None,
    ensemble_mode: Annotated[
        str | None,
        typer.Option(
            "--ensemble-mode",
            metavar="MODE",
            help="With --ensemble: avg (mean waveform, the default), max or min (UVR's "
            "max/min spec), median_wave, max_wave or min_wave (per sample), median_fft (per "
            "STFT bin); audio-separator's and MSST's names (avg_fft, max_fft, uvr_max_spec...) "
            "are taken too.",
        ),
    ] = None,
    stems: Annotated[
        str | None,
        typer.Option(
            "--stems",
            help="Comma-separated stems, e.g. vocals,drums (default: all of the model's). "
            "'residual' (or, beside one stem, 'instrumental'/'accompaniment'/'others') is "
            "everything else; it is also added when the stems leave part of the model out "
            "and that part is not silent.",
        ),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("-o", "--out", metavar="DIR", help="Output directory.")
    ] = Path("separated"),
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="wav, flac or mp3 (320 kbps).")
    ] = "wav",
    bit_depth: Annotated[
        str | None,
        typer.Option(
            "--bit-depth",
            metavar="DEPTH",
            help="wav: 16, 24 or 32f (float); flac: 16 or 24. Default 16.",
        ),
    ] = None,
    template: Annotated[
        str,
        typer.Option(
            "--template",
            help="Output file name: {track}, {stem}, {ext} (added at the end if left out), "
            "{model}; may hold folders.",
        ),
    ] = DEFAULT_TEMPLATE,
    downmix: DownmixOption = False,
    audio_track: AudioTrackOption = None,
    rescale: RescaleOption = False,
    model_path: Annotated[
        Path | None,
        typer.Option(
            "--model-path",
            metavar="PATH",
            help="Load this local checkpoint instead of the catalogue's (spleeter-2stems: the "
            "folder holding its two).",
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="Run your own model: its architecture (MSST format: bs_roformer, "
            "mel_band_roformer, bs_conformer, mel_band_conformer, mdx23c, scnet, scnet_masked, "
            "scnet_tran, bandit, bandit_v2, htdemucs, apollo; mdx_net, a UVR MDX-Net "
            ".onnx; or vr, "
            "a UVR VR .pth), with --model-config and --model-path; stems are named from the "
            "config. With DEMIXER_PRECISION=fp32 an MSST model gives what MSST's own "
            "inference gives; an mdx_net or vr model gives what UVR gives.",
        ),
    ] = None,
    model_config: Annotated[
        Path | None,
        typer.Option(
            "--model-config",
            metavar="FILE",
            help="Your MSST model's YAML config; for mdx_net and vr its parameters (YAML or "
            "JSON: demixer's arch_params, one UVR model-data entry, or UVR's model_data.json).",
        ),
    ] = None,
    quality: Annotated[
        str,
        typer.Option(
            "--quality",
            "-q",
            metavar="LEVEL",
            envvar="DEMIXER_QUALITY",
            help="fast, balanced or best. For spleeter-2stems and cascade-4stems: fast is "
            "Deezer's own pipeline, balanced better stems at the same speed, best about 4x "
            "slower for a little more. RoFormer, SCNet and MDX23C models: fast runs at most 2 "
            "overlapping chunks (up to 4x less work where the config sets 4 or 8), best adds "
            "MSST's test-time augmentation (3x the time); MDX-Net: best adds UVR's denoise "
            "pass (2x); "
            "Demucs: best is its shift trick, --shifts 4 (4x).",
        ),
    ] = DEFAULT_QUALITY,
    device: Annotated[
        str, typer.Option("--device", help="cpu, cuda, cuda:1, ... or auto (a GPU if any).")
    ] = "cpu",
    span: SpanOption = None,
    exclude_span: ExcludeSpanOption = None,
    max_duration: Annotated[
        float,
        typer.Option(
            "--max-duration",
            min=0,
            help="Refuse an input once it decodes to more than this many seconds, whatever "
            "its header says (0: no limit).",
        ),
    ] = DEFAULT_MAX_DURATION,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Leave out a song whose stem files are all in OUT already, whatever made them "
            "(a batch stopped by Ctrl-C, run again, does only the rest).",
        ),
    ] = False,
) -> None:
    """Separate songs into stems: OUT/{track}_{stem}.{ext} (several files share one model).

    Files run in order (a folder's sorted by path). One that cannot be read is named with
    its reason and the rest still run; the last line counts the songs separated and names
    every one that failed (exit 3, or 2 for a span past a song's end). Run again, every song
    is separated again and its stems replaced (--skip-existing: not those whose stems are all
    there); nothing else in OUT is touched.

    Models run in bf16 where the CPU or GPU has it natively, else fp32
    (DEMIXER_PRECISION=fp32 forces fp32). MDX23C: fp32 by default; MDX-Net and
    Demucs: always fp32.
    """
    from demixer.audio import OutputFormat
    from demixer.engine import Separator, plan_stems
    from demixer.engine.outputs import output_paths, span_outputs
    from demixer.filemode import check_folder
    from demixer.models.registry import get_spec

    own = arch is not None or model_config is not None
    named = any(x is not None for x in (model, recipe, ensemble, ensemble_mode))
    if own and (arch is None or model_config is None or model_path is None or named):
        print_error(
            "USAGE",
            "your own model needs --arch, --model-config and --model-path together "
            "(and no -m, --recipe or --ensemble)",
        )
        raise typer.Exit(2)
    model_id = DEFAULT_MODEL

    def known_stems() -> tuple[str, ...]:
        if arch is not None and model_config is not None and model_path is not None:
            from demixer.models.own import stems as own_stems

            return own_stems(arch, model_config, model_path)
        return get_spec(model_id).stems

    inputs, skipped = expand_inputs(files, out_dir)
    try:
        check_distinct_tracks(inputs)
        level = _quality(quality, ctx)
        if not any(item.path.exists() for item in inputs):  # nothing to do: say so at once
            missing = ", ".join(shown_name(str(item.path)) for item in inputs)
            raise InputNotFound(
                f"file not found: {missing}"
                if inputs
                else f"no audio or video file in {', '.join(shown_name(str(f)) for f in files)}"
            )
        output = OutputFormat.parse(fmt, bit_depth)
        # A bad template (in capitals, what stands for a name: TRACK_STEM.wav), or -o a file
        # or read-only: said before the model loads.
        output_paths(template, out_dir, "TRACK", ["STEM"], output, "MODEL")
        check_folder(out_dir)
        spans = parse_spans(span, exclude_span)
        requested = stems.split(",") if stems is not None else None
        if not own:
            model_id = _model_for(model, recipe, ensemble, ensemble_mode, requested)
        if requested is not None and not any(s.strip() for s in requested):
            plan_stems(model_id, known_stems(), requested)  # names nothing: say so now
        if spans:  # one stem and its residual, else refused before the model loads
            span_outputs(plan_stems(model_id, known_stems(), requested))
        if arch is not None and model_config is not None and model_path is not None:
            from demixer.engine.device import resolve_device
            from demixer.models.own import open_files

            torch_device = resolve_device(device)[0]  # `auto` and a missing GPU, as for -m
            with _loading(model_path.name):
                spec, backend = open_files(arch, model_config, model_path, device=torch_device)
            separator = Separator.from_backend(spec, backend)
        else:
            with _loading(model_id):
                separator = Separator(model_id, model_path=model_path, device=device)
        plan = separator.plan(requested)  # reject unknown stems before any decoding

        def stem_files(item: Input) -> list[Path]:
            return list(
                output_paths(
                    template, out_dir / item.subdir, item.path.stem, plan.outputs, output,
                    separator.spec.id,
                ).values()
            )  # fmt: skip

        check_outputs(inputs, stem_files)
    except DemixerError as e:
        raise fail(e) from None
    if skipped:
        print_warning(skipped_line(skipped))

    last_error: DemixerError | None = None
    tally = Tally(len(inputs))
    with (
        stopping_on_termination() as stop,
        FileProgress(out, err) as progress,
        summed_up(tally, lambda line: progress.print(line, highlight=False)),
    ):
        for number, item in enumerate(inputs, 1):
            path = item.path
            if skip_existing and stems_there(stem_files(item)):
                progress.print(escape(tally.skip(shown_name(path.name))))
                continue
            progress.start(shown_name(path.name), number, len(inputs))
            try:
                result = separator.separate_file(
                    path,
                    out_dir / item.subdir,
                    requested,
                    fmt=output,
                    template=template,
                    downmix=downmix,
                    track=audio_track,
                    rescale=rescale,
                    quality=level,
                    on_progress=progress.advance,
                    on_stage=progress.stage,
                    max_seconds=max_duration or None,
                    spans=spans,
                    should_cancel=stop.requested,
                )
            except Cancelled:  # a SIGTERM or SIGHUP whose own exception was lost on the way
                raise Terminated(stop.signum or signal.SIGTERM) from None
            except (InvalidAudio, InvalidOutput) as e:  # this file's problem: say so, go on
                message = e.message
                if isinstance(e, InvalidOutput):  # its message speaks of spans, not the file
                    message = f"{shown_name(path.name)}: {message}"
                if isinstance(e, DurationLimit):
                    message += " or raise --max-duration (0: no limit)"
                progress.error(e.code, message)
                last_error = e
                tally.failed.append(path)
                continue
            except DemixerError as e:
                progress.error(e.code, e.message)
                raise typer.Exit(exit_code_for(e)) from None
            tally.separated += 1
            speed = result.duration / result.seconds if result.seconds else 0.0
            progress.print_out(
                f"{escape(shown_name(path.name))}: {result.duration:.1f} s in "
                f"{result.seconds:.1f} s by {escape(separator.spec.id)} ({speed:.1f}x real time)"
            )
            for line in written_lines(result.paths, result.report.clipped):
                progress.print_out(line)
            if separator.spec.arch_params.get("steps") or separator.spec.arch_params.get("mode"):
                for name, made in result.made_by.items():  # a recipe or ensemble: who made what
                    progress.print(f"  {escape(name)} by {escape(made)}")
            for line in level_notes(result.report.clipped, result.report.gain):
                progress.print(line)
    if last_error is not None:
        raise typer.Exit(exit_code_for(last_error))


def _model_for(
    model: str | None,
    recipe: str | None,
    ensemble: str | None,
    mode: str | None,
    requested: list[str] | None,
) -> str:
    """The model id to run: the one named by --model, --recipe or --ensemble (at most one),
    else the best installed one for the requested stems, else the default model."""
    from demixer.engine.stems import choose_model
    from demixer.models.ensemble import ALIASES, MODES, ensemble_id, ensemble_mode
    from demixer.models.loading import installed_specs
    from demixer.models.registry import get_spec, list_specs

    if sum(x is not None for x in (model, recipe, ensemble)) > 1:
        raise UnknownModel("give one of --model, --recipe and --ensemble, not several")
    if mode is not None and ensemble_mode(mode) is None:
        raise UnknownModel(
            f"--ensemble-mode {mode!r} is not one of {', '.join(MODES)} (or {', '.join(ALIASES)})"
        )
    if mode is not None and ensemble is None:
        # Left alone, `-m a+b --ensemble-mode max` silently ran the average.
        raise UnknownModel(
            f"--ensemble-mode goes with --ensemble A,B; with -m, the id names the mode: {mode}:A+B"
        )
    if recipe is not None:
        if get_spec(recipe).loader != "demixer.models.recipe:load":
            recipes = [s.id for s in list_specs() if s.loader == "demixer.models.recipe:load"]
            raise UnknownModel(f"{recipe!r} is not a recipe; recipes: {', '.join(recipes)}")
        return recipe
    if ensemble is not None:
        members = [m.strip() for m in ensemble.split(",") if m.strip()]
        if len(members) < 2:
            raise UnknownModel(f"--ensemble {ensemble!r}: name two models or more, A,B")
        return get_spec(ensemble_id(members, mode or "avg")).id
    if model is not None:
        return model
    installed = installed_specs()
    chosen = choose_model(requested or [], installed)
    return chosen.id if chosen is not None else DEFAULT_MODEL


def _quality(value: str, ctx: typer.Context) -> Quality:
    """``--quality`` as a level; a bad one from DEMIXER_QUALITY (a shell profile's) is named
    as the setting's, or the user looks in vain for a -q they never typed."""
    try:
        return parse_quality(value)
    except UnknownQuality as e:
        # click's ParameterSource, of the copy of click that typer ships (private to it)
        source = getattr(ctx.get_parameter_source("quality"), "name", None)
        if source == "ENVIRONMENT":
            raise UnknownQuality(f"DEMIXER_QUALITY: {e.message}") from None
        raise


@contextmanager
def _loading(model: str) -> Iterator[None]:
    """A spinner while the model loads (a terminal only: logs get nothing)."""
    if not err.is_terminal:
        yield
        return
    with err.status(f"loading {escape(model)}…"):
        yield


cli_models.register(app)
cli_service.register(app)
cli_remote.register(app)
cli_user_models.register(cli_models.models_app)
readable_help(app)  # last: every command is registered


def main() -> None:
    """Console-script entry point."""
    # Output into a file or pipe is in the locale's encoding: Windows' cp1252, a server's
    # Latin-1. A song called 米津玄師 - Lemon.wav would end the run in a UnicodeEncodeError
    # traceback after its first stems; its name is written with \u escapes instead, as
    # Python writes stderr.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    unblock_stop_signals()  # before any thread starts: each starts with this thread's mask
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except DemixerError as e:  # one a command did not expect (a faulty recipe file…): one line
        print_error(e.code, e.message)
        sys.exit(exit_code_for(e))
