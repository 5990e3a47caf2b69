"""What :meth:`~demixer.engine.Separator.separate_file` writes, and the steps between the
model's output blocks and the files: the output paths, one writer per format fed from the same
blocks, which pair of outputs spans reshape, and the silent optional residual's check.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from demixer.audio import OutputFormat, StemSetWriter, WriteReport
from demixer.engine.stems import StemPlan, is_silent
from demixer.errors import InvalidOutput
from demixer.filemode import NAME_MAX, on_disk
from demixer.naming import model_name, track_name

__all__ = ["ResidualCheck", "Writers", "output_paths", "span_outputs", "stem_tags"]

_TEMPLATE_FIELDS = {"track", "stem", "ext", "model"}


def output_paths(
    template: str, out_dir: Path, track: str, stems: Sequence[str], fmt: OutputFormat, model: str
) -> dict[str, Path]:
    """Resolve the output name template (``{track}``, ``{stem}``, ``{ext}``, ``{model}``: the
    song's and the model's names as :func:`~demixer.naming.track_name` and
    :func:`~demixer.naming.model_name` spell them in a file name); one without
    ``{ext}`` gets ``.{ext}`` at its end, so every file says what it holds (and two formats of
    one stem never share a name).

    Raises:
        InvalidOutput: a bad template, one that escapes ``out_dir``, or a file or folder name
            longer than a file system takes (said here, before a separation that could only
            fail at its end, when the finished stems are renamed into place).
    """
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise InvalidOutput(f"bad output template {template!r}: {exc}") from None
    unknown = fields - _TEMPLATE_FIELDS
    if unknown:
        raise InvalidOutput(
            f"output template {template!r} uses unknown field(s) {', '.join(sorted(unknown))}; "
            f"available: {', '.join(sorted(_TEMPLATE_FIELDS))}"
        )
    if "stem" not in fields:
        raise InvalidOutput(f"output template {template!r} must contain {{stem}}")
    if template.endswith("/"):  # else ".{ext}" alone would name hidden files: stem/.wav
        raise InvalidOutput(f"output template {template!r} ends in a folder: name the file")
    if "ext" not in fields:
        template += ".{ext}"
    paths = {}
    root = out_dir.resolve()
    track = on_disk(track_name(track))
    model = on_disk(model_name(model))
    for stem in stems:
        name = template.format(track=track, stem=on_disk(stem), ext=fmt.extension, model=model)
        path = out_dir / name
        if not path.resolve().is_relative_to(root):
            raise InvalidOutput(f"output template {template!r} escapes the output directory")
        for part in Path(name).parts:
            size = len(os.fsencode(part))
            if size > NAME_MAX:
                raise InvalidOutput(
                    f"output name {part!r} is {size} bytes, more than the {NAME_MAX} a file "
                    "system takes: shorten the output template or the song's file name"
                )
        paths[stem] = path
    return paths


def span_outputs(plan: StemPlan, shaped: str | None = None) -> tuple[str, str]:
    """``(output the spans shape, output that takes the rest)``: a stem and its residual.

    Raises:
        InvalidOutput: the plan is not one stem and a residual, or ``shaped`` is neither.
    """
    if len(plan.targets) != 1 or plan.residual_name is None:
        raise InvalidOutput(
            "spans keep one stem in time: request exactly one stem (its residual takes what "
            f"the spans leave out), not {', '.join(plan.outputs)}"
        )
    stem, residual = plan.targets[0], plan.residual_name
    if shaped in (None, stem):
        return stem, residual
    if shaped == residual:
        return residual, stem
    raise InvalidOutput(f"spans shape {stem!r} or {residual!r}, not {shaped!r}")


def stem_tags(song: Mapping[str, str], outputs: Iterable[str]) -> dict[str, dict[str, str]]:
    """Each output's tags: the song's (title, artist, album, date, genre, track), its title
    followed by the stem (``Falcon 69 (vocals)``), so a DJ's library tells the stems apart.
    None for a song that names nothing."""
    if not song:
        return {}
    title = song.get("title")
    return {
        name: {**song, "title": f"{title} ({name})"} if title else dict(song) for name in outputs
    }


class Writers:
    """The same stem blocks to one :class:`~demixer.audio.StemSetWriter` per format: the
    primary one (whose report counts) and each extra format, all from one pass."""

    def __init__(
        self,
        files: list[dict[str, Path]],
        formats: list[OutputFormat],
        sample_rate: int,
        channels: int,
        rescale: bool,
        *,
        tags: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.files = files
        self.writers: list[StemSetWriter] = []
        try:
            for paths, fmt in zip(files, formats, strict=True):
                self.writers.append(
                    StemSetWriter(paths, sample_rate, channels, fmt, rescale=rescale, tags=tags)
                )
        except BaseException:
            self.abort()
            raise

    def write(self, blocks: dict[str, np.ndarray]) -> None:
        """One block per output, ``(channels, n)`` float32, to every format."""
        for writer in self.writers:
            writer.write(blocks)

    def close(self, drop: Sequence[str] = ()) -> WriteReport:
        """Finish every format (``drop``: outputs not to keep); all formats appear, or none."""
        reports: list[WriteReport] = []
        try:
            for writer in self.writers:
                reports.append(writer.close(drop=drop))
        except BaseException:
            for paths in self.files[: len(reports)]:
                for path in paths.values():
                    path.unlink(missing_ok=True)
            self.abort()
            raise
        return reports[0]

    def abort(self) -> None:
        """Stop every format and delete what it wrote."""
        for writer in self.writers:
            writer.abort()


class ResidualCheck:
    """Sums the energy of the input and of a plan's optional residual, block by block, to
    tell at the end whether that residual was silent (:func:`~demixer.engine.stems.is_silent`).
    """

    def __init__(self, plan: StemPlan) -> None:
        self.name = plan.residual_name if plan.residual_optional else None
        self.input = 0.0
        self.residual = 0.0

    def add(self, out: dict[str, np.ndarray]) -> None:
        """One output block of every stem and the residual (they sum to the input block)."""
        if self.name is None:
            return
        mix = np.sum(list(out.values()), axis=0)
        self.input += _energy(mix)
        self.residual += _energy(out[self.name])

    def dropped(self) -> tuple[str, ...]:
        """The residual's name when it was optional and silent, else nothing."""
        if self.name is not None and is_silent(self.residual, self.input):
            return (self.name,)
        return ()


def _energy(x: np.ndarray) -> float:
    """Sum of squared samples, accumulated in float64 (a long song's sum overflows no float32
    but loses the quiet parts' precision)."""
    return float(np.einsum("ij,ij->", x, x, dtype=np.float64))
