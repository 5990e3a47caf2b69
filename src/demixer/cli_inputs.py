"""What ``demixer separate`` and ``demixer remote separate`` take as input: files and folders.

A folder stands for every audio and video file under it, recursively (linked folders too, each
real folder once), by extension (FFmpeg reads the containers listed in
:data:`MEDIA_EXTENSIONS`; anything else in a music folder is cover art, playlists, notes). A
file named on the command line is always taken as given: the decoder then says whether it is
audio.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from demixer.errors import InvalidOutput
from demixer.naming import shown_name, track_name

if TYPE_CHECKING:
    from demixer.engine.spans import Span

__all__ = [
    "MEDIA_EXTENSIONS",
    "DownmixOption",
    "ExcludeSpanOption",
    "FilesArgument",
    "Input",
    "RescaleOption",
    "SpanOption",
    "check_distinct_tracks",
    "check_outputs",
    "expand_inputs",
    "parse_spans",
    "skipped_line",
]

FilesArgument = Annotated[
    list[Path],
    typer.Argument(
        metavar="FILES",
        help="Audio or video files, or folders (every audio and video file in them, "
        "recursively, linked folders too; hidden files and folders left out).",
        show_default=False,
    ),
]
"""The ``FILES...`` argument of ``separate`` and ``remote separate``."""

DownmixOption = Annotated[
    bool, typer.Option("--downmix", help="Fold inputs with more than 2 channels to stereo.")
]
AudioTrackOption = Annotated[
    int | None,
    typer.Option(
        "--audio-track",
        min=1,
        metavar="N",
        help="Separate audio track N (from 1) of a file with several (a film's other "
        "language, its commentary); default: the one players play.",
        show_default=False,
    ),
]
RescaleOption = Annotated[
    bool,
    typer.Option(
        "--rescale",
        help="Integer/mp3 output: scale all stems by one gain instead of clipping peaks.",
    ),
]
SpanOption = Annotated[
    list[str] | None,
    typer.Option(
        "--span",
        metavar="START:END",
        help="Keep the separated sound only from START to END seconds (repeatable); the rest "
        "of it goes to the residual. Needs one sound: for `separate` one of --stems (e.g. "
        "vocals), for `remote separate` a --prompt.",
    ),
]
ExcludeSpanOption = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude-span",
        metavar="START:END",
        help="Move the separated sound from START to END seconds into the residual (repeatable).",
    ),
]
"""``--downmix``, ``--audio-track``, ``--span`` and ``--exclude-span``, the same for ``separate``
and ``remote separate``; :func:`parse_spans` reads the last two."""


def parse_spans(span: list[str] | None, exclude_span: list[str] | None) -> list[Span]:
    """``--span`` and ``--exclude-span`` values as spans (InvalidOutput for a bad one)."""
    from demixer.engine.spans import Span  # with numpy and the engine: only when spans are given

    spans = [Span.parse(s) for s in span or ()]
    return spans + [Span.parse(s, include=False) for s in exclude_span or ()]


MEDIA_EXTENSIONS = frozenset(
    {
        # audio
        "wav", "wave", "flac", "mp3", "m4a", "aac", "ogg", "oga", "opus", "wma", "aif",
        "aiff", "aifc", "alac", "caf", "wv", "ape", "mka", "ac3", "eac3", "dts", "mp2",
        "mpc", "tta", "amr", "au", "snd", "w64", "rf64",
        # video
        "mp4", "m4v", "mov", "mkv", "webm", "avi", "flv", "wmv", "mpg", "mpeg", "ts",
        "mts", "m2ts", "3gp", "vob", "ogv",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Input:
    """One file to separate.

    Attributes:
        path: the file.
        subdir: where its outputs go below the output directory: its folder relative to the
            folder argument it was found in (``.`` for a file named on the command line), so
            two songs with one name in two folders never overwrite each other's stems.
    """

    path: Path
    subdir: Path


def expand_inputs(
    arguments: Iterable[Path], out_dir: Path | None = None
) -> tuple[list[Input], list[Path]]:
    """The files the arguments stand for, in order (a folder's sorted by path), each once;
    and the files under the folders skipped as not audio or video (each relative to its
    folder: short enough to read in a line).

    A folder's files inside ``out_dir``, when that is a sub-folder of it, are left out: they
    are stems of an earlier run (``separate ~/Music -o ~/Music/separated``, run twice), not
    songs. A file named on the command line is taken wherever it is.
    """
    found: list[Input] = []
    seen: set[Path] = set()
    skipped: list[Path] = []
    outputs = out_dir.resolve() if out_dir is not None else None
    for argument in arguments:
        if not argument.is_dir():
            candidates = [(argument, Path("."))]
        else:
            candidates = []
            stems_here = outputs if _inside(outputs, argument.resolve()) else None
            for path in _files_under(argument, stems_here):
                relative = path.relative_to(argument)
                if path.suffix.lower().lstrip(".") not in MEDIA_EXTENSIONS:
                    skipped.append(relative)
                    continue
                candidates.append((path, relative.parent))
        for path, subdir in candidates:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                found.append(Input(path, subdir))
    return found, skipped


def _files_under(folder: Path, outputs: Path | None) -> list[Path]:
    """The files under ``folder``, sorted by path, without hidden files and folders (.DS_Store,
    ._AppleDouble, .git: nobody's songs) nor the ``outputs`` folder (resolved).

    A linked folder is entered (a DJ's crates linked in from another disk are songs like any
    others), each real folder once: a link back up the tree (a loop) or a second link to a
    folder already walked adds nothing.
    """
    files: list[Path] = []
    walked: set[Path] = set()
    for top, folders, names in os.walk(folder, followlinks=True):
        here = Path(top)
        walked.add(here.resolve())
        folders.sort()  # the same real folder always found by the same path, run after run
        folders[:] = [
            name
            for name in folders
            if not name.startswith(".")
            and (here / name).resolve() not in walked
            and not _is_output(here / name, outputs)
        ]
        # A real folder linked twice from one folder: walked under its first name only.
        unique: dict[Path, str] = {}
        for name in folders:
            unique.setdefault((here / name).resolve(), name)
        folders[:] = list(unique.values())
        walked.update(unique)
        files += [here / name for name in names if not name.startswith(".")]
    return sorted(path for path in files if path.is_file())


def _is_output(folder: Path, outputs: Path | None) -> bool:
    return outputs is not None and folder.resolve().is_relative_to(outputs)


def skipped_line(skipped: list[Path], show: int = 5) -> str:
    """The line saying which files of the folders were not taken (the first ``show`` named:
    a user with a song in an unknown format learns which one)."""
    names = ", ".join(shown_name(str(path)) for path in skipped[:show])
    more = f" and {len(skipped) - show} more" if len(skipped) > show else ""
    files = "file is" if len(skipped) == 1 else "files are"
    return f"{len(skipped)} {files} not audio or video, skipped: {names}{more}"


def check_distinct_tracks(inputs: Iterable[Input]) -> None:
    """Refuse inputs that would write the same stem files: two songs of one name in one output
    folder (``song.wav`` and ``song.flac``: both ``song_vocals.wav``; ``Song.wav`` and
    ``song.wav`` where case is ignored), before anything runs, rather than the second silently
    replacing the first's stems. Every such pair is named."""
    first: dict[tuple[Path, str], tuple[Path, str]] = {}
    clashes = []
    for item in inputs:
        track = track_name(item.path.stem)
        # macOS, Windows and the FAT/exFAT of a USB stick take "Song" and "song", or a "é" in
        # one piece and as "e" + accent, for one name: the second song's stems would replace
        # the first's there, though this file system kept both.
        key = (item.subdir, unicodedata.normalize("NFC", track).casefold())
        other, other_track = first.setdefault(key, (item.path, track))
        if other == item.path:
            continue
        a, b = shown_name(str(other)), shown_name(str(item.path))
        if other_track == track:
            clashes.append(
                f"{a} and {b} would write the same stems ({track}_STEM.EXT) into one folder"
            )
        else:
            clashes.append(
                f"{a} and {b} would write stems whose names differ only in capitals or in how an "
                f"accent is stored "
                f"({shown_name(other_track)}_STEM.EXT, {shown_name(track)}_STEM.EXT): one file on "
                "macOS, Windows and USB sticks"
            )
    if clashes:
        raise InvalidOutput(
            f"{_listed(clashes)}: rename one, or separate them into different -o folders"
        )


def check_outputs(inputs: Iterable[Input], paths_of: Callable[[Input], Iterable[Path]]) -> None:
    """Refuse, before anything runs, inputs whose stems would land on one path (an output
    ``--template`` without ``{track}``: the last song's stems would silently replace the
    others'), or on an input file itself (``vocals.wav`` into its own folder as ``{stem}``).
    ``paths_of``: the files an input's separation writes. Every such clash is named."""
    items = list(inputs)
    sources = {item.path.resolve(): item.path for item in items}
    writer: dict[Path, Path] = {}
    clashes = []
    for item in items:
        for path in paths_of(item):
            where = path.resolve()
            if where in sources:
                clashes.append(
                    f"separating {shown_name(str(item.path))} would write "
                    f"{shown_name(str(path))} over the input {shown_name(str(sources[where]))}"
                )
            elif writer.setdefault(where, item.path) != item.path:
                clashes.append(
                    f"{shown_name(str(writer[where]))} and {shown_name(str(item.path))} would "
                    f"both write {shown_name(str(path))}"
                )
    if clashes:
        raise InvalidOutput(
            f"{_listed(clashes)}: use {{track}} in --template, or another -o folder"
        )


def _listed(clashes: list[str], most: int = 5) -> str:
    shown = "; ".join(clashes[:most])
    return shown + (f"; and {len(clashes) - most} more" if len(clashes) > most else "")


def _inside(folder: Path | None, root: Path) -> bool:
    """Whether ``folder`` is a sub-folder of ``root`` (both resolved)."""
    return folder is not None and folder != root and folder.is_relative_to(root)
