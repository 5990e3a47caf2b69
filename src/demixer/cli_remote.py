"""``demixer remote``: the same separation, run by a demixer server over HTTP.

Exit codes as the local CLI (:mod:`demixer.cli`): 0 ok, 2 usage (unknown model or stem, bad
option), 3 bad input audio, 4 model unavailable, 1 anything else; the server's error code is
mapped through the same table. Errors print one line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from demixer.cli_inputs import (
    AudioTrackOption,
    DownmixOption,
    ExcludeSpanOption,
    FilesArgument,
    RescaleOption,
    SpanOption,
    check_distinct_tracks,
    expand_inputs,
    parse_spans,
    skipped_line,
)
from demixer.cli_output import (
    Tally,
    fail,
    level_notes,
    print_error,
    print_warning,
    stems_there,
    summed_up,
    written_lines,
)
from demixer.cli_signals import stopping_on_termination
from demixer.errors import DemixerError, InputNotFound, InvalidOutput, exit_code_for
from demixer.naming import DEFAULT_TEMPLATE, is_residual_maker, shown_name

if TYPE_CHECKING:
    from demixer.audio import OutputFormat
    from demixer.client import Client

__all__ = ["register", "remote_app"]

remote_app = typer.Typer(
    help="Separate on a demixer server (`demixer serve`) instead of this machine.",
    short_help="Separate on a demixer server instead of here.",
    no_args_is_help=True,
)
out = Console(soft_wrap=True)  # never wrapped: scripts read the paths printed here
err = Console(stderr=True, soft_wrap=True)


def _unreachable(server: str) -> str | None:
    """Why nothing at ``server`` can be reached at all (nothing listens there, no such host),
    asked once before any upload, so a wrong ``--server`` is said at once rather than after the
    client's retries; None when it answers anything (or is merely slow: the client retries)."""
    import httpx

    from demixer.client.core import server_root

    root = server_root(server)
    try:
        httpx.head(f"{root}/healthz", timeout=10)
    except httpx.ConnectError as exc:
        return f"cannot reach {root}: {exc} (is the server running at that address?)"
    except httpx.HTTPError:
        return None
    return None


def _exit_code(error: DemixerError) -> int:
    from demixer.client import ApiError, JobFailed
    from demixer.client.errors import local_class

    if isinstance(error, ApiError | JobFailed):  # the server's code names the local error
        return exit_code_for(local_class(error.code)(error.message))
    return exit_code_for(error)


def _spans(
    prompt: str | None, span: list[str] | None, exclude_span: list[str] | None
) -> list[tuple[float, float, bool]] | None:
    """``--span`` / ``--exclude-span`` for the client, checked before any upload, as
    ``separate`` checks them; they limit the sound a prompt names."""
    if not span and not exclude_span:
        return None
    hint = "'--span' / '--exclude-span'"
    if prompt is None:
        raise typer.BadParameter(
            "a span limits the sound a --prompt names (e.g. --prompt vocals)", param_hint=hint
        )
    try:
        parsed = parse_spans(span, exclude_span)
    except DemixerError as e:
        raise typer.BadParameter(e.message, param_hint=hint) from None
    from demixer.engine.spans import MAX_SPANS

    if len(parsed) > MAX_SPANS:  # the server refuses more for every song: before any upload
        raise typer.BadParameter(
            f"{len(parsed)} spans; a server takes at most {MAX_SPANS}", param_hint=hint
        )
    return [(p.start, p.end, p.include) for p in parsed]


def _planned_outputs(client: Client, model: str | None, stems: str | None) -> tuple[str, ...]:
    """The outputs the server will write for each song of this run, as its planner names them
    (:func:`~demixer.engine.stems.plan_stems`, on the model it will run: ``-m``'s, else
    ``GET /v1/models``' ``default_model`` for a request that names no stem of its own, else
    the one every installed model that makes the stems agrees on), read before any upload.

    Raises:
        InvalidOutput: that cannot be told beforehand; the message says what would tell it.
    """
    from demixer.client import ApiError
    from demixer.client.errors import BadResponse
    from demixer.engine.stems import RESIDUAL, RESIDUAL_ALIASES, plan_stems
    from demixer.models.planner import canonical_stem

    try:
        listing = client.models()
    except (ApiError, BadResponse) as e:
        raise InvalidOutput(f"the server's models cannot be read ({e.code})") from None
    requested = stems.split(",") if stems is not None else None
    # As the server picks (api/submit.py): a model named, else the default one for a request
    # that names only the residual or nothing, else the best installed maker of the stems.
    names = [canonical_stem(s) for s in requested or () if s.strip()]
    own = [s for s in names if s != RESIDUAL and s not in RESIDUAL_ALIASES]
    if model is None and own:
        candidates = listing.installed
        unknown = "the model the server picks for these stems decides the files; name it with -m"
    else:
        chosen = model if model is not None else listing.default_model
        candidates = [
            m for m in listing.catalogue or listing.installed
            if chosen in (m.id, *m.aliases, *(Path(a).stem for a in m.aliases))
        ]  # fmt: skip
        unknown = (
            f"the server lists no model {chosen!r} that makes these stems"
            if chosen is not None
            else "the server does not say which model it runs by default (an earlier release)"
        )
    plans = set()
    for candidate in candidates:
        try:
            plans.add(plan_stems(candidate.id, candidate.stems, requested).outputs)
        except DemixerError:  # it does not make these stems: the server does not pick it
            continue
    if len(plans) != 1:
        raise InvalidOutput(unknown)
    return plans.pop()


def _stems_there(directory: Path, song: Path, outputs: tuple[str, ...], fmt: OutputFormat) -> bool:
    """Whether every file ``outputs`` of ``song`` would be written to is in ``directory``
    (named as ``separate`` names them, :func:`~demixer.engine.outputs.output_paths`)."""
    from demixer.engine.outputs import output_paths

    try:
        files = output_paths(DEFAULT_TEMPLATE, directory, song.stem, outputs, fmt, "")
    except InvalidOutput:  # a name too long for the disk: the download shortens it its own way
        return False
    return stems_there(files.values())


@remote_app.command("separate", short_help="Separate songs on a demixer server.")
def remote_separate(
    files: FilesArgument,
    server: Annotated[
        str, typer.Option("--server", envvar="DEMIXER_SERVER", help="The server's base URL.")
    ] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None,
        typer.Option(
            "--key", envvar="DEMIXER_API_KEY", help="API key (dmx_...).", show_default=False
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "-m",
            "--model",
            help="Model id (see the server's GET /v1/models; default: the server picks the "
            "best model it has for the stems, as separate does).",
            show_default=False,
        ),
    ] = None,
    stems: Annotated[
        str | None,
        typer.Option(
            "--stems",
            help="Comma-separated stems (default: all); 'residual' (everything else) is "
            "added when the stems leave part of the model out and it is not silent.",
        ),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", help='What to separate, in words ("the singer"), not --stems.'),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("-o", "--out", metavar="DIR", help="Output directory.")
    ] = Path("separated"),
    fmt: Annotated[str, typer.Option("--format", "-f", help="wav, flac or mp3.")] = "wav",
    bit_depth: Annotated[
        str | None,
        typer.Option(
            "--bit-depth", metavar="DEPTH", help="wav: 16, 24 or 32f (float); flac: 16 or 24."
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds to wait for each job.")
    ] = None,
    downmix: DownmixOption = False,
    audio_track: AudioTrackOption = None,
    rescale: RescaleOption = False,
    span: SpanOption = None,
    exclude_span: ExcludeSpanOption = None,
    quality: Annotated[
        str | None,
        typer.Option(
            "--quality",
            "-q",
            metavar="LEVEL",
            help="fast, balanced or best (default: the server's DEMIXER_QUALITY).",
            show_default=False,
        ),
    ] = None,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Leave out, without uploading it, a song whose stem files are all in OUT "
            "already, as separate does (the server's model list tells which files; not with "
            "--prompt).",
        ),
    ] = False,
) -> None:
    """Separate songs on a demixer server: OUT/{track}_{stem}.{ext}, as `separate` does."""
    from demixer.audio import OutputFormat
    from demixer.client import Client, Result
    from demixer.client.core import clean_api_key, is_http_url
    from demixer.client.errors import WaitTimeout
    from demixer.filemode import check_folder

    if prompt is not None and stems:
        raise typer.BadParameter("give --stems or --prompt, not both")
    if prompt is not None and skip_existing:
        raise typer.BadParameter(
            "a prompt's files are named by what the server makes of it: --skip-existing "
            "takes --stems (or none)",
            param_hint="'--skip-existing'",
        )
    if not is_http_url(server):
        raise typer.BadParameter(
            f"{server!r} is not an http(s) URL, e.g. http://127.0.0.1:8000",
            param_hint="'--server'",
        )
    if timeout is not None and not timeout > 0:  # also NaN
        raise typer.BadParameter(
            f"{timeout:g} is not a number of seconds above 0", param_hint="'--timeout'"
        )
    spans = _spans(prompt, span, exclude_span)
    if quality is not None:
        from demixer.models.quality import parse_quality

        try:  # here, before any upload; the server checks it again
            quality = parse_quality(quality)
        except DemixerError as e:
            raise fail(e) from None
    try:  # likewise: a typo in -f is not worth a whole upload
        output = OutputFormat.parse(fmt, bit_depth)
    except DemixerError as e:
        raise fail(e) from None
    try:
        key = clean_api_key(key)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="'--key'") from None
    if key is None:  # every API call needs one: say so before any upload
        raise typer.BadParameter(
            "no API key: pass --key or set DEMIXER_API_KEY (`demixer keys create` on the "
            "server makes one)",
            param_hint="'--key'",
        )
    inputs, skipped = expand_inputs(files, out_dir)
    try:
        check_distinct_tracks(inputs)
    except DemixerError as e:
        raise fail(e) from None
    unreachable = _unreachable(server)
    if unreachable is not None:
        print_error("CONNECTION_FAILED", unreachable)
        raise typer.Exit(1)
    if skipped:
        print_warning(skipped_line(skipped))
    last = 0
    tally = Tally(len(inputs))
    # SIGTERM and SIGHUP as Ctrl-C: the job running on the server is cancelled.
    with (
        stopping_on_termination(),
        summed_up(
            tally, lambda line: err.print(line, highlight=False, soft_wrap=not err.is_terminal)
        ),
        Client(server, key) as client,
    ):
        planned: tuple[str, ...] | None = None
        if skip_existing:
            try:
                planned = _planned_outputs(client, model, stems)
            except InvalidOutput as e:
                print_warning(f"--skip-existing: {e.message}; every song is separated")
        for item in inputs:
            path = item.path
            name = shown_name(path.name)
            results: list[Result] = []
            directory = out_dir / item.subdir
            if planned is not None and _stems_there(directory, path, planned, output):
                err.print(escape(tally.skip(name)), highlight=False)
                continue
            try:  # before the upload: the server's work would be lost
                check_folder(directory)
            except DemixerError as e:
                raise fail(e) from None
            try:
                paths = client.separate(
                    path,
                    stems=stems.split(",") if stems is not None else None,
                    model=model,
                    prompt=prompt,
                    output_format=fmt,
                    bit_depth=bit_depth,
                    quality=quality,
                    directory=directory,
                    progress=err.is_terminal,
                    timeout=timeout,
                    downmix=downmix,
                    rescale=rescale,
                    spans=spans,
                    audio_track=audio_track,
                    on_result=results.append,
                )
            except FileNotFoundError:
                print_error(InputNotFound.code, f"file not found: {shown_name(str(path))}")
                last = 3
                tally.failed.append(path)
                continue
            except WaitTimeout as e:  # before OSError: it is a TimeoutError too
                print_error(
                    e.code,
                    f"{name}: {e.message}; the job keeps running on the server, and GET "
                    f"/v1/queue/requests/{e.request_id}/result gives its stems once it is "
                    "done (or give a longer --timeout)",
                )
                last = _exit_code(e)
                tally.failed.append(path)
                continue  # this job is slow, the next ones may not be
            except DemixerError as e:
                hints = {"input.downmix": "--downmix", "input.audio_track": "--audio-track"}
                hint = f" ({hints[e.param]} here)" if e.param in hints else ""
                print_error(e.code, f"{name}: {e.message}{hint}")
                last = _exit_code(e)
                # This input is bad, or too short for the spans (they start after its end):
                # go on with the others, as the local CLI does. Not for spans refused as
                # such (over the server's cap): every song would be.
                too_short = e.code == InvalidOutput.code and e.param == "input.spans"
                if last == 3 or too_short:
                    tally.failed.append(path)
                    continue
                raise typer.Exit(last) from None
            except OSError as e:  # the local file: unreadable, a folder, ...
                print_error("INVALID_INPUT", f"{shown_name(str(path))}: {e.strerror or e}")
                last = 3
                tally.failed.append(path)
                continue
            tally.separated += 1
            outputs = results[0].outputs
            clipped = {output: file.clipped for output, file in outputs.items()}
            made_by = ", ".join(  # the model(s) the server chose; not the residual's sum
                dict.fromkeys(
                    made for made in results[0].made_by.values() if not is_residual_maker(made)
                )
            )
            out.print(
                f"{escape(name)}: {results[0].duration:.1f} s"
                + (f" by {escape(made_by)}" if made_by else ""),
                highlight=False,
            )
            for line in written_lines(paths, clipped):
                out.print(line, highlight=False)
            gain = min((file.gain for file in outputs.values()), default=1.0)
            for line in level_notes(clipped, gain):
                err.print(line, highlight=False)
    if last:
        raise typer.Exit(last)


def register(app: typer.Typer) -> None:
    """Add ``demixer remote`` to the main CLI."""
    app.add_typer(remote_app, name="remote")
