"""The separation engine: audio in, stems out, in bounded memory.

``Separator`` loads a model once and separates any number of arrays or files with it. It never
touches the database, the API or storage: callers pass ``on_progress`` and ``should_cancel``.

Per window (see :mod:`demixer.engine.windows`): the input is resampled to the model's rate,
mono is duplicated for stereo models, the model separates, the requested stems are resampled
back to the input's rate, and the residual is the input minus their sum at the input's rate.

Every separation runs at a quality level (:mod:`demixer.models.quality`; default
:data:`~demixer.models.quality.DEFAULT_QUALITY`): the loaded model, at that level, separates the
windows. Models with nothing to offer at a level run as they are.
"""

from __future__ import annotations

import os
import string
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demixer.audio import AudioReader, OutputFormat, StemSetWriter, WriteReport, resample
from demixer.engine.stems import StemPlan, plan_stems
from demixer.engine.windows import overlap_add
from demixer.errors import Cancelled, DemixerError, InvalidAudio, InvalidOutput, ModelFailed
from demixer.models.base import Backend
from demixer.models.loading import load_backend
from demixer.models.quality import DEFAULT_QUALITY, parse_quality, tuned
from demixer.models.registry import ModelSpec, get_spec

__all__ = ["DEFAULT_MODEL", "DEFAULT_TEMPLATE", "FileResult", "Separator"]

DEFAULT_MODEL = "spleeter-2stems"
DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
_TEMPLATE_FIELDS = {"track", "stem", "ext", "model"}
_READ_BLOCK = 1 << 16  # frames per decoded block

ProgressFn = Callable[[float], None]
PreprocessFn = Callable[[Iterable[np.ndarray], int], Iterable[np.ndarray]]
"""``(blocks, sample_rate) -> blocks`` of the same total length, applied before separation."""
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class FileResult:
    """What :meth:`Separator.separate_file` wrote.

    Attributes:
        paths: output name (stem or residual name) -> file written.
        duration: seconds of input audio.
        sample_rate: rate of the input and of every output file (mp3 may differ; see encode).
        channels: channels of every output file (1 for mono input).
        report: peaks, clipped-sample counts and applied gain (see ``WriteReport``).
        seconds: wall-clock seconds spent.
    """

    paths: dict[str, Path]
    duration: float
    sample_rate: int
    channels: int
    report: WriteReport
    seconds: float


def output_paths(
    template: str, out_dir: Path, track: str, stems: Sequence[str], fmt: OutputFormat, model: str
) -> dict[str, Path]:
    """Resolve the output name template (``{track}``, ``{stem}``, ``{ext}``, ``{model}``)."""
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
    paths = {}
    root = out_dir.resolve()
    for stem in stems:
        path = out_dir / template.format(track=track, stem=stem, ext=fmt.extension, model=model)
        if not path.resolve().is_relative_to(root):
            raise InvalidOutput(f"output template {template!r} escapes the output directory")
        paths[stem] = path
    return paths


class Separator:
    """A loaded model, ready to separate arrays and files.

    Args:
        model: registered model id (``demixer models list``).
        model_dir: weights cache directory (default ``$DEMIXER_MODEL_DIR``).
        model_path: a local checkpoint to use instead of the registered weights.
        device: torch device, e.g. ``cpu`` or ``cuda``.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        model_dir: Path | None = None,
        model_path: Path | None = None,
        device: str = "cpu",
    ) -> None:
        self.spec: ModelSpec = get_spec(model)
        self.backend: Backend = load_backend(
            model, model_dir=model_dir, model_path=model_path, device=device
        )

    def plan(self, stems: Sequence[str] | None) -> StemPlan:
        """Resolve requested stem names (see :func:`demixer.engine.stems.plan_stems`)."""
        return plan_stems(self.spec.id, self.backend.stems, stems)

    def separate_array(
        self,
        audio: np.ndarray,
        sample_rate: int,
        stems: Sequence[str] | None = None,
        *,
        quality: str = DEFAULT_QUALITY,
        on_progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> dict[str, np.ndarray]:
        """Separate an in-memory signal.

        Args:
            audio: ``(channels, samples)`` float32, 1 or 2 channels.
            sample_rate: Hz of ``audio``.
            stems: stem names to produce (None: all of the model's).
            quality: ``fast``, ``balanced`` or ``best`` (see :mod:`demixer.models.quality`).

        Returns:
            output name -> ``(channels, samples)`` float32 at ``sample_rate``.
        """
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
            raise InvalidAudio(
                f"expected (1 or 2 channels, samples) audio, got shape {audio.shape}"
            )
        plan = self.plan(stems)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in plan.outputs}
        blocks = (audio[:, i : i + _READ_BLOCK] for i in range(0, audio.shape[1], _READ_BLOCK))
        for out in self.stream(
            blocks,
            sample_rate,
            plan,
            audio.shape[1],
            quality=quality,
            on_progress=on_progress,
            should_cancel=should_cancel,
        ):
            for name, block in out.items():
                parts[name].append(block)
        return {name: np.concatenate(blocks_, axis=1) for name, blocks_ in parts.items()}

    def stream(
        self,
        blocks: Iterable[np.ndarray],
        sample_rate: int,
        plan: StemPlan,
        total_samples: int | None = None,
        *,
        quality: str = DEFAULT_QUALITY,
        on_progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Separate a stream of ``(channels, n)`` blocks, yielding consecutive output blocks.

        Memory is bounded by the model's window, whatever the stream's length. ``quality``:
        ``fast``, ``balanced`` or ``best``; anything else raises
        :class:`~demixer.errors.UnknownQuality` before any block is read.
        """
        backend = tuned(self.backend, parse_quality(quality))
        ratio = sample_rate / backend.sample_rate
        window = max(2, round(backend.window * ratio))
        overlap = min(window - 1, round(backend.overlap * ratio))

        def before_window(position: int) -> None:
            if should_cancel is not None and should_cancel():
                raise Cancelled("separation cancelled")
            if on_progress is not None and total_samples:
                on_progress(min(position / total_samples, 1.0))

        def separate(x: np.ndarray) -> dict[str, np.ndarray]:
            return self._separate_window(backend, x, sample_rate, plan)

        for region, stems in overlap_add(
            blocks, separate, window=window, overlap=overlap, before_window=before_window
        ):
            out = {name: stems[name] for name in plan.targets}
            if plan.residual_name is not None:
                out[plan.residual_name] = region - sum(out.values())
            yield out
        if on_progress is not None:
            on_progress(1.0)

    def _separate_window(
        self, backend: Backend, x: np.ndarray, sample_rate: int, plan: StemPlan
    ) -> dict[str, np.ndarray]:
        """One window ``(channels, n)`` at the input rate -> target stems, same shape."""
        channels, n = x.shape
        model_in = np.repeat(x, backend.channels, axis=0) if channels < backend.channels else x
        model_in = resample(model_in, sample_rate, backend.sample_rate)
        try:
            separated = backend.separate(model_in)
        except DemixerError:
            raise
        except Exception as exc:  # a model crash is ours, not the user's: say so
            raise ModelFailed(
                f"model {self.spec.id!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        out = {}
        for name in plan.targets:
            y = resample(separated[name], backend.sample_rate, sample_rate)[:, :n]
            if y.shape[1] < n:
                y = np.pad(y, ((0, 0), (0, n - y.shape[1])))
            if channels < y.shape[0]:
                y = y.mean(axis=0, keepdims=True)
            out[name] = np.ascontiguousarray(y, dtype=np.float32)
        return out

    def separate_file(
        self,
        path: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        stems: Sequence[str] | None = None,
        *,
        fmt: OutputFormat | None = None,
        template: str = DEFAULT_TEMPLATE,
        downmix: bool = False,
        rescale: bool = False,
        quality: str = DEFAULT_QUALITY,
        on_progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
        preprocess: PreprocessFn | None = None,
    ) -> FileResult:
        """Decode ``path`` (any audio or video file), separate, and write one file per output.

        Decoding, separation and encoding all stream, so memory does not depend on duration.
        Files appear under their final names only when complete. ``preprocess`` (e.g.
        :func:`demixer.audio.denoise.denoise_blocks`) transforms the decoded block stream
        before separation, keeping its length; the residual is then computed against the
        preprocessed input, so stems + residual add up to it, not to the file.
        """
        started = time.perf_counter()
        fmt = fmt or OutputFormat.parse("wav", None)
        plan = self.plan(stems)
        parse_quality(quality)  # before the file is opened
        source = Path(path)
        with AudioReader(source, downmix=downmix) as reader:
            paths = output_paths(
                template, Path(out_dir), source.stem, plan.outputs, fmt, self.spec.id
            )
            total = (
                round(reader.info.duration * reader.sample_rate) if reader.info.duration else None
            )
            writer = StemSetWriter(paths, reader.sample_rate, reader.channels, fmt, rescale=rescale)
            samples = 0
            try:
                blocks: Iterable[np.ndarray] = reader.blocks(_READ_BLOCK)
                if preprocess is not None:
                    blocks = preprocess(blocks, reader.sample_rate)
                for out in self.stream(
                    blocks,
                    reader.sample_rate,
                    plan,
                    total,
                    quality=quality,
                    on_progress=on_progress,
                    should_cancel=should_cancel,
                ):
                    writer.write(out)
                    samples += next(iter(out.values())).shape[1]
                report = writer.close()
            except BaseException:
                writer.abort()
                raise
        return FileResult(
            paths=paths,
            duration=samples / reader.sample_rate,
            sample_rate=reader.sample_rate,
            channels=reader.channels,
            report=report,
            seconds=time.perf_counter() - started,
        )
