"""The ``demixer models`` commands: ``list``, ``info`` and ``pull``.

Output rules: what a script reads (paths, JSON, a card piped to a file) goes to stdout and is
never wrapped or decorated; progress, licence notices and warnings go to stderr. ``list`` fits
the terminal (80 columns included) by wrapping stems and figures, never ids.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from typing import TYPE_CHECKING, Annotated, ClassVar

import typer
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markdown import Markdown, MarkdownElement, TableElement
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from demixer.cli_output import WarningLines, fail
from demixer.errors import DemixerError

if TYPE_CHECKING:
    from demixer.models.spec import ModelSpec

__all__ = ["models_app", "register"]

models_app = typer.Typer(
    help="List the model catalogue, read a model's card, fetch its weights; add and remove "
    "your own models.",
    short_help="The model catalogue: cards, weights, your own models.",
    no_args_is_help=True,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)

#: Short architecture labels for the narrow table (``--wide`` and ``--json`` give the full name).
_ARCH_LABELS = {
    "spleeter": "spleeter",
    "demucs": "demucs",
    "cascade": "cascade",
    "bs_roformer": "bs-rofo",
    "mel_band_roformer": "mel-rofo",
    "mdx23c": "mdx23c",
    "scnet": "scnet",
    "scnet_masked": "scnet-m",
    "scnet_tran": "scnet-t",
    "bs_conformer": "bs-conf",
    "mel_band_conformer": "mel-conf",
    "bandit": "bandit",
    "bandit_v2": "bandit2",
    "htdemucs": "htdemucs",
    "apollo": "apollo",
    "mdx_net": "mdx-net",
    "vr": "vr",
    "recipe": "recipe",
}

#: What a user must know before relying on weights of each restrictive class.
_WARNINGS = {
    "copyleft": "a copyleft licence: any use, commercial too, but weights you pass on (or a "
    "model made from them) must go under the same licence.",
    "non-commercial": "these weights are for non-commercial use only.",
    "research only": "these weights are offered for research use only, not for commercial use.",
    "not stated": "the authors state no licence for these weights: commercial use or "
    "redistribution is at your own risk.",
}


@models_app.command("list", short_help="The catalogue: stems, installed here, licence.")
def models_list(
    wide: Annotated[
        bool,
        typer.Option("--wide", help="Every column in full (licence text, all figures, source)."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Every field of every model as JSON on stdout.")
    ] = False,
) -> None:
    """The model catalogue: what each model separates, whether it is here, its licence class.

    Columns: id and stems, architecture, installed here, licence class, and the headline
    figure its publisher gives (`demixer models info ID` names the metric and test set).
    """
    from demixer.models.loading import damaged_files, default_model_dir, is_installed
    from demixer.models.registry import LICENSE_CLASSES, list_specs

    specs = list_specs()
    installed = {spec.id: is_installed(spec) for spec in specs}
    damaged = {spec.id: damaged_files(spec) for spec in specs}
    # "bad": its files are there but one is not the size it was pinned at (`models pull` mends it)
    here = {s.id: "yes" if installed[s.id] else "bad" if damaged[s.id] else "no" for s in specs}
    if as_json:
        records = [
            spec.summary() | {"installed": installed[spec.id], "damaged_files": damaged[spec.id]}
            for spec in specs
        ]
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
        return
    if wide:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False)  # no line of blanks above
        for column in ("id", "arch", "stems", "rate", "installed", "published figures"):
            # A recipe's eight stems wrap at their commas rather than squeeze the figures.
            table.add_column(column, no_wrap=column not in ("stems", "published figures"))
        table.add_column("licence class")
        for column in ("licence", "source"):  # URLs whole, over lines, never cut short
            table.add_column(column, overflow="fold")
        for spec in specs:
            table.add_row(
                spec.id,
                spec.family,
                ", ".join(spec.stems),
                f"{spec.sample_rate} Hz",
                here[spec.id],
                "; ".join(f"{s.short()} ({s.test_set})" for s in spec.scores) or "none",
                spec.license_class,
                escape(spec.license),
                spec.source_url,
            )
        Console(width=max(out.width, 240)).print(table)
        return
    # 80 columns: id 29 (the longest id, never wrapped), arch 8, here 4, licence 14 and the
    # figure take 72 with the gaps; the stems go on a second line under the id.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    id_width = max(len(spec.id) for spec in specs)
    table.add_column("id / stems", width=id_width)
    table.add_column("arch", width=max(len(label) for label in _ARCH_LABELS.values()))
    table.add_column("here", width=4)
    table.add_column("licence", width=max(len(c) for c in LICENSE_CLASSES))
    table.add_column("published")
    for spec in specs:
        headline = spec.headline
        table.add_row(
            f"[bold]{escape(spec.id)}[/]\n[dim]{escape(_indented(spec.stems, id_width))}[/]",
            _ARCH_LABELS.get(spec.family, spec.family),
            here[spec.id],
            spec.license_class,
            headline.short() if headline is not None else "-",
        )
    out.print(table, soft_wrap=False)
    _print_producible([spec for spec in specs if installed[spec.id]])
    notes = [
        "published: the headline figure in dB. MS = MVSep Multisong SDR, med = median SDR",
        "over tracks; `demixer models info ID` names the test set and the licence text.",
    ]
    if any(damaged.values()):
        notes.append("bad: a file is not the size it was pinned at; `models pull ID` mends it.")
    notes.append(f"weights cache: {default_model_dir()}")
    for line in notes:
        out.print(escape(line), soft_wrap=False, highlight=False)


def _indented(stems: tuple[str, ...], width: int) -> str:
    """``stems`` listed under a model's id: indented, continued lines indented further."""
    return textwrap.fill(
        ", ".join(stems),
        width,
        initial_indent="  ",
        subsequent_indent="    ",
        break_on_hyphens=False,
    )


def _print_producible(installed: list[ModelSpec]) -> None:
    """Each stem the installed models and recipes make, with what (best first)."""
    from demixer.models.planner import native_stem, producers, produces

    def maker(spec: ModelSpec, stem: str) -> str:  # the name its files get, when another
        native = native_stem(spec, stem)
        return spec.id if native in (None, stem) else f"{spec.id} (as {native})"

    stems = list(dict.fromkeys(s for spec in installed for s in produces(spec)))
    out.print("installed, stem by stem (best first):", highlight=False)
    for stem in stems:
        makers = ", ".join(maker(spec, stem) for spec in producers(stem, installed))
        out.print(escape(f"  {stem}: {makers}"), highlight=False)


@models_app.command("info", short_help="A model's card: files, pins, licence, quality.")
def models_info(
    name: Annotated[
        str,
        typer.Argument(
            help="Model id (see `demixer models list`), or a file name it answers to "
            "(Kim_Vocal_2.onnx)."
        ),
    ],
) -> None:
    """Print a model's card: files and pins, licence, published quality, notes.

    Rendered on a terminal; the markdown as it is when piped or redirected.
    """
    from demixer.models.loading import (
        damaged_files,
        default_model_dir,
        is_installed,
        resolve_weight,
    )
    from demixer.models.registry import get_spec, model_card

    try:
        spec = get_spec(name)
    except DemixerError as e:
        raise fail(e) from None
    card = model_card(spec.id)
    if not spec.weights:
        status = "Installed here: nothing to fetch for this model itself."
    elif is_installed(spec):  # where the weights are: a package may ship them (Spleeter's)
        status = f"Installed here: yes ({resolve_weight(spec, spec.weights[0]).parent})."
    elif damaged := damaged_files(spec):
        status = (
            f"Installed here: damaged ({', '.join(damaged)} not the size pinned above; "
            f"`demixer models pull {spec.id}` fetches it again)."
        )
    else:
        status = f"Installed here: no (`models pull` puts it in {default_model_dir() / spec.id})."
    if spec.aliases:
        names = ", ".join(f"`{name}`" for name in spec.aliases)
        status = f"Also answers to: {names} (with or without the extension).\n\n{status}"
    print_card(card + "\n" + status + "\n", out)


class _FoldingTable(TableElement):
    """A card's table whose long words (SHA-256s, file names, URLs) fold onto the next line in
    a narrow terminal instead of being cut off with an ellipsis: a pin must be read whole."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for table in super().__rich_console__(console, options):
            for column in table.columns:  # type: ignore[union-attr]
                column.overflow = "fold"
            yield table


class _CardMarkdown(Markdown):
    elements: ClassVar[dict[str, type[MarkdownElement]]] = {
        **Markdown.elements,
        "table_open": _FoldingTable,
    }


def print_card(text: str, console: Console) -> None:
    """``text`` (markdown) rendered for a terminal, or verbatim when piped or redirected."""
    if console.is_terminal:  # wrapped to the terminal, whatever the console's own soft_wrap
        console.print(_CardMarkdown(text), soft_wrap=False)
    else:
        console.file.write(text)


@models_app.command("pull", short_help="Download a model's weights, verified.")
def models_pull(
    name: Annotated[str, typer.Argument(help="Model id, e.g. mel-roformer-vocals-kim.")],
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="Mirror to fetch from: an http(s) URL or a folder, holding each file at its "
            "URL's path (also $DEMIXER_MODEL_BASE_URL).",
        ),
    ] = None,
) -> None:
    """Download a model's weights into the cache, verified, and tell their licence.

    Fetches every file the model needs (an MSST model's YAML config too), checks each one's
    size and full SHA-256 before it is moved into place, and prints the licence the weights'
    authors state, with a warning when it is copyleft, non-commercial, research only or not
    stated.
    Progress goes to stderr, the installed paths to stdout. A server saying to come back
    later (429, 503) is asked again after the wait it names (up to a minute, three times).
    Run it again after an interruption: the download resumes where it stopped.
    Without internet access: --base-url names a mirror (a folder will do), or copy the model's
    folder from the model directory of a machine that pulled it.
    """
    from demixer.models.download import pull
    from demixer.models.registry import get_spec

    try:
        spec = get_spec(name)
    except DemixerError as e:
        raise fail(e) from None
    licence_notice(spec.id, err)
    with _FileProgress(err) as progress:
        try:
            paths = pull(spec.id, base_url=base_url, on_progress=progress.update)
        except DemixerError as e:
            progress.stop()
            raise fail(e) from None
    for path in paths:
        out.print(f"{path}", highlight=False)
    out.print(f"{spec.id}: installed and verified (SHA-256 and size)", highlight=False)


def licence_notice(model_id: str, console: Console) -> None:
    """The licence of ``model_id``'s weights (and those it requires), with a warning for the
    restrictive classes, on ``console`` (stderr)."""
    from demixer.models.registry import get_spec

    spec = get_spec(model_id)
    for dependency in spec.requires:
        licence_notice(dependency, console)
    if not spec.weights:
        return
    console.print(
        f"[bold]{escape(spec.id)}[/] licence ({spec.license_class}): {escape(spec.license)}",
        highlight=False,
    )
    if spec.source_url:
        console.print(f"  source: {escape(spec.source_url)}", highlight=False)
    warning = _WARNINGS.get(spec.license_class)
    if warning is not None:
        console.print(f"  [bold yellow]warning:[/] {warning}", highlight=False)


class _FileProgress:
    """Per-file download progress on ``console``: a rich bar (percent, bytes, speed, ETA) on a
    terminal, one line per file otherwise (so logs stay readable and stdout stays clean)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            TextColumn("{task.percentage:>3.0f}%"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
            expand=True,
        )
        self.tasks: dict[str, TaskID] = {}
        self.warnings = WarningLines(console)

    def __enter__(self) -> _FileProgress:
        self.bar.start()
        # What the download logs (a busy server asked again after a wait) as warning lines.
        logging.getLogger("demixer").addHandler(self.warnings)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        logging.getLogger("demixer").removeHandler(self.warnings)
        self.bar.stop()

    def update(self, name: str, done: int, total: int | None) -> None:
        task = self.tasks.get(name)
        if task is None:
            # A resumed file starts part-way: the bar starts there, so the speed and ETA are
            # those of this transfer.
            task = self.bar.add_task(escape(name), total=total, completed=done)
            self.tasks[name] = task
            if not self.console.is_terminal:
                resumed = f", resuming at {done} bytes" if done else ""
                size = f"{total} bytes" if total is not None else "size unknown"
                self.console.print(f"fetching {name} ({size}{resumed})", highlight=False)
            return
        self.bar.update(task, completed=done, total=total)


def register(app: typer.Typer) -> None:
    """Add ``demixer models`` to the main CLI."""
    app.add_typer(models_app, name="models")
