"""The separation engine: audio in, stems out, in bounded memory.

``Separator`` loads a model once and separates any number of arrays or files with it. It never
touches the database, the API or storage: callers pass ``on_progress`` and ``should_cancel``.

Per window (see :mod:`demixer.engine.windows`): the input is resampled to the model's rate,
mono is duplicated for stereo models, the model separates, the requested stems are resampled
back to the input's rate, and the residual is the input minus their sum at the input's rate.
A backend that windows the input itself (MSST's chunking: :mod:`demixer.engine.streaming`) gets
the whole input as a resampled block stream instead, and so does each member of an ensemble of
such backends; each step of a recipe runs over its whole input as its model runs alone
(:mod:`demixer.engine.graph`); resampling back, the residual, progress, cancellation and
encoding stay here.

Every separation runs at a quality level (:mod:`demixer.models.quality`; default
:data:`~demixer.models.quality.DEFAULT_QUALITY`): the loaded model, at that level, separates the
windows. Models with nothing to offer at a level run as they are.

Progress: ``on_progress(fraction)`` is called before each window and, for backends whose
``separate`` takes an ``on_progress`` keyword (see :mod:`demixer.models.base`), within a window
too, so a song shorter than one long window does not sit at 0 % until it is done.
``on_stage(name)`` names what :meth:`Separator.separate_file` is doing: :data:`STAGES`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from demixer.audio import AudioReader, OutputFormat, WriteReport, probe
from demixer.defaults import DEFAULT_MODEL
from demixer.engine.device import resolve_device
from demixer.engine.graph import stream_graph, streamed_graph
from demixer.engine.outputs import (
    ResidualCheck,
    Writers,
    output_paths,
    span_outputs,
    stem_tags,
)
from demixer.engine.spans import Span, apply_spans, check_reach
from demixer.engine.stems import HEARD, StemPlan, plan_stems
from demixer.engine.streaming import (
    input_stats_at,
    stats_members,
    stream_backend,
    stream_ensemble,
    streamed_ensemble,
    window_regions,
    window_size,
)
from demixer.errors import Cancelled, InvalidAudio
from demixer.models import planner
from demixer.models.base import Backend, InputStats, reports_progress, stats_key, streaming
from demixer.models.loading import load_backend
from demixer.models.quality import DEFAULT_QUALITY, parse_quality, tuned
from demixer.models.registry import ModelSpec, get_spec
from demixer.naming import DEFAULT_TEMPLATE, residual_maker

__all__ = ["DEFAULT_MODEL", "DEFAULT_TEMPLATE", "STAGES", "FileResult", "Separator"]

log = logging.getLogger("demixer.engine")

# What separate_file reports through on_stage, in order (the service adds loading_model before
# and storing after): opening the input, running the model, finishing the files.
STAGES = ("decoding", "separating", "encoding")
# Progress of a file never reads 100 % before its last stem is written: a declared length can
# be wrong or missing (see separate_file).
_BEFORE_END = 0.99
_READ_BLOCK = 1 << 16  # frames per decoded block

ProgressFn = Callable[[float], None]
StageFn = Callable[[str], None]
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
        extras: output name -> extension -> the same output in each of ``extra_formats``.
        made_by: output name -> what made it (:meth:`Separator.made_by`).
    """

    paths: dict[str, Path]
    duration: float
    sample_rate: int
    channels: int
    report: WriteReport
    seconds: float
    extras: dict[str, dict[str, Path]] = field(default_factory=dict)
    made_by: dict[str, str] = field(default_factory=dict)


class Separator:
    """A loaded model, ready to separate arrays and files.

    Args:
        model: registered model id (``demixer models list``).
        model_dir: weights cache directory (default ``$DEMIXER_MODEL_DIR``).
        model_path: a local checkpoint to use instead of the registered weights.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a CUDA GPU when torch sees one).

    Raises:
        UnknownModel, ModelUnavailable: no such model, or its weights cannot be loaded.
        DeviceUnavailable: the device is not there (``cuda`` on a CPU-only torch).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        model_dir: Path | None = None,
        model_path: Path | None = None,
        device: str = "cpu",
    ) -> None:
        self.spec: ModelSpec = get_spec(model, model_dir=model_dir)
        self.device = resolve_device(device)[0]
        self.backend: Backend = load_backend(
            model, model_dir=model_dir, model_path=model_path, device=self.device
        )

    @classmethod
    def from_backend(cls, spec: ModelSpec, backend: Backend) -> Separator:
        """A separator around an already loaded backend (e.g. a user's own MSST model given as
        files: :func:`demixer.models.msst.user.open_files`)."""
        separator = cls.__new__(cls)
        separator.spec = spec
        separator.device = str(getattr(backend, "device", "cpu"))
        separator.backend = backend
        return separator

    @property
    def needs_stats(self) -> bool:
        """Whether the model scales by the whole input's statistics (see :meth:`stream`)."""
        return bool(stats_members(self.backend))

    def input_stats(
        self, blocks: Callable[[], Iterable[np.ndarray]], sample_rate: int
    ) -> dict[Hashable, InputStats]:
        """The statistics :meth:`stream` needs (:func:`~demixer.models.base.stats_key` -> the
        input's statistics for those models: at a normalising model's rate, the mono mix's
        mean and deviation; a VR model's spectral peak), one pass over ``blocks()`` (a fresh
        stream of the input at ``sample_rate``) for all; empty (and no pass) when no model
        needs them."""
        members = stats_members(self.backend)
        return input_stats_at(blocks(), sample_rate, members) if members else {}

    def plan(self, stems: Sequence[str] | None) -> StemPlan:
        """Resolve requested stem names (see :func:`demixer.engine.stems.plan_stems`)."""
        return plan_stems(self.spec.id, self.backend.stems, stems, partial=self.spec.partial)

    def made_by(self, plan: StemPlan) -> dict[str, str]:
        """Each output of ``plan`` -> what made it (:func:`demixer.models.planner.makers`: the
        model, or a recipe's chain, or an ensemble's members); the residual: the input minus
        the stems."""
        makers = planner.makers(self.spec)
        out = {stem: makers.get(stem, self.spec.id) for stem in plan.targets}
        if plan.residual_name is not None:
            out[plan.residual_name] = residual_maker(plan.targets)
        return out

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
            output name -> ``(channels, samples)`` float32 at ``sample_rate``; an optional
            residual only when it is audible (:func:`demixer.engine.stems.is_silent`).
        """
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
            raise InvalidAudio(
                f"expected (1 or 2 channels, samples) audio, got shape {audio.shape}"
            )
        plan = self.plan(stems)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in plan.outputs}
        residual = ResidualCheck(plan)

        def blocks() -> Iterator[np.ndarray]:
            return (audio[:, i : i + _READ_BLOCK] for i in range(0, audio.shape[1], _READ_BLOCK))

        for out in self.stream(
            blocks(),
            sample_rate,
            plan,
            audio.shape[1],
            quality=quality,
            on_progress=on_progress,
            should_cancel=should_cancel,
            stats=self.input_stats(blocks, sample_rate),
        ):
            residual.add(out)
            for name, block in out.items():
                parts[name].append(block)
        dropped = residual.dropped()
        return {
            name: np.concatenate(blocks_, axis=1)
            for name, blocks_ in parts.items()
            if name not in dropped
        }

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
        stats: Mapping[Hashable, InputStats] | None = None,
        scratch: Path | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Separate a stream of ``(channels, n)`` blocks, yielding consecutive output blocks.

        Memory is bounded by the model's window, whatever the stream's length. Every block
        holds every output of ``plan`` (an optional residual too: only the caller, at the end,
        knows whether it was silent throughout). ``on_progress`` gets non-decreasing fractions
        of ``total_samples`` (none without it), from within windows where the backend tells.
        ``stats``: the whole input's statistics (:meth:`input_stats`), required when
        :attr:`needs_stats` (the model scales its input by them, so the caller reads the input
        once more to get them).
        ``quality``: ``fast``, ``balanced`` or ``best``; anything else raises
        :class:`~demixer.errors.UnknownQuality` before any block is read.
        ``scratch``: where a recipe whose later model scales by its whole input spools the
        stems of the models before it (:mod:`demixer.engine.graph`; None: ``$TMPDIR``).
        """
        backend = tuned(self.backend, parse_quality(quality))
        window, _ = window_size(backend, sample_rate)
        window_start = 0
        reported = -1.0

        def report(position: float) -> None:
            nonlocal reported
            if on_progress is None or not total_samples:
                return
            fraction = min(position / total_samples, 1.0)
            if fraction >= reported:  # windows overlap: never step back
                reported = fraction
                on_progress(fraction)

        def check_cancel() -> None:
            if should_cancel is not None and should_cancel():
                raise Cancelled("separation cancelled")

        def before_window(position: int) -> None:
            nonlocal window_start
            check_cancel()
            window_start = position
            report(position)

        def within_window(fraction: float) -> None:
            check_cancel()
            span = min(window, (total_samples or 0) - window_start)
            report(window_start + max(0.0, min(fraction, 1.0)) * span)

        inner = within_window if reports_progress(backend) else None

        if any(stats_key(m) not in (stats or {}) for m in stats_members(backend)):
            raise ValueError(
                f"model {self.spec.id!r} scales its input by its statistics: pass stats"
            )
        regions: Iterable[tuple[np.ndarray, dict[str, np.ndarray]]]
        whole = streaming(backend)
        ensemble = streamed_ensemble(backend)
        if whole is not None:
            regions = stream_backend(
                whole,
                blocks,
                sample_rate,
                plan.targets,
                model_id=self.spec.id,
                before_run=before_window,
                stats=(stats or {}).get(stats_key(whole)),
                heard=plan.rest is not None,
            )
        elif (graph := streamed_graph(backend)) is not None:  # each step over its whole input
            regions = stream_graph(
                graph,
                blocks,
                sample_rate,
                plan.targets,
                before_run=before_window,
                stats=stats,
                scratch=scratch,
            )
        elif ensemble is not None:  # stems at the input's rate, its remainder exact there
            regions = stream_ensemble(
                ensemble, blocks, sample_rate, plan.targets, before_run=before_window, stats=stats
            )
        else:
            regions = window_regions(
                backend,
                blocks,
                sample_rate,
                plan.targets,
                model_id=self.spec.id,
                before_window=before_window,
                within=inner,
                heard=plan.rest is not None,
            )
        for region, stems in regions:
            out = {name: stems[name] for name in plan.targets}
            if plan.residual_name is not None:
                out[plan.residual_name] = region - sum(out.values())
            elif HEARD in stems and plan.rest is not None:  # what the model could not hear
                out[plan.rest] = out[plan.rest] + (region - stems[HEARD])
            yield out
        if on_progress is not None:
            on_progress(1.0)

    @staticmethod
    def _decoded(reader: AudioReader, preprocess: PreprocessFn | None) -> Iterable[np.ndarray]:
        blocks: Iterable[np.ndarray] = reader.blocks(_READ_BLOCK)
        return blocks if preprocess is None else preprocess(blocks, reader.sample_rate)

    def separate_file(
        self,
        path: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        stems: Sequence[str] | None = None,
        *,
        fmt: OutputFormat | None = None,
        template: str = DEFAULT_TEMPLATE,
        downmix: bool = False,
        track: int | None = None,
        rescale: bool = False,
        quality: str = DEFAULT_QUALITY,
        on_progress: ProgressFn | None = None,
        on_stage: StageFn | None = None,
        should_cancel: CancelFn | None = None,
        preprocess: PreprocessFn | None = None,
        max_seconds: float | None = None,
        spans: Sequence[Span] = (),
        span_output: str | None = None,
        extra_formats: Sequence[OutputFormat] = (),
    ) -> FileResult:
        """Decode ``path`` (any audio or video file), separate, and write one file per output.

        Decoding, separation and encoding all stream, so memory does not depend on duration.
        Files appear under their final names only when complete; an optional residual that
        stayed silent throughout never appears. ``on_stage`` gets each of :data:`STAGES` as it
        begins. ``preprocess`` (e.g. :func:`demixer.audio.denoise.denoise_blocks`) transforms
        the decoded block stream before separation, keeping its length; the residual is then
        computed against the preprocessed input, so stems + residual add up to it, not to the
        file.

        ``spans`` keep the one requested stem only within them (:mod:`demixer.engine.spans`):
        what is taken out of it goes to the residual, block by block as they stream, so the
        request must name one stem and leave a residual. ``span_output`` names the output the
        spans shape instead (the residual, for "everything but" requests); the other one of
        the pair takes what they leave out. ``extra_formats`` writes every output
        once more in each of them (same name, their extension), from the same blocks.

        ``track``: the audio track to separate, counted from 1 (None: the one players play).
        ``max_seconds`` bounds the audio decoded (``DurationLimit`` past it, whatever the file
        declares). ``on_progress`` gets non-decreasing fractions: of the declared length while
        the separation is within it (from inside windows where the backend tells), else the
        share of the file's bytes read, and 1.0 only once every stem is written.
        """
        started = time.perf_counter()
        fmt = fmt or OutputFormat.parse("wav", None)
        plan = self.plan(stems)
        parse_quality(quality)  # before the file is opened
        shaped = span_outputs(plan, span_output) if spans else None
        formats = [fmt, *(f for f in extra_formats if f.extension != fmt.extension)]
        source = Path(path)
        stage = on_stage or (lambda _: None)
        stage("decoding")
        if shaped is not None:
            # Spans that keep nothing are refused before the model runs, not after a whole
            # song's separation. The length is the one an upload is measured by (the packets
            # counted, where a header understates it); the check after the stream stays, for
            # a file that decodes shorter than that.
            length = probe(source, max_seconds=max_seconds, track=track).duration
            if length:
                check_reach(spans, length)
        opened = partial(AudioReader, source, downmix=downmix, max_seconds=max_seconds, track=track)
        with opened() as reader:
            note = reader.info.track_note(f"'{source.name}'")
            if note:  # a video's other tracks (languages, commentary) are not separated
                log.warning("%s", note)
            files = [
                output_paths(template, Path(out_dir), source.stem, plan.outputs, f, self.spec.id)
                for f in formats
            ]
            total = (
                round(reader.info.duration * reader.sample_rate) if reader.info.duration else None
            )
            writer = Writers(
                files,
                formats,
                reader.sample_rate,
                reader.channels,
                rescale,
                tags=stem_tags(reader.tags, files[0]),
            )
            samples = 0
            separating = False
            shown = 0.0

            def progress(fraction: float) -> None:
                """``fraction`` of the declared length; 1.0 (the stream's end, or a length
                missing or passed) hands over to the share of the file's bytes read."""
                nonlocal separating, shown
                if not separating:  # the first window is decoded: the model starts on it
                    separating = True
                    stage("separating")
                if fraction >= 1.0 or not total:
                    fraction = reader.fraction_read
                fraction = min(fraction, _BEFORE_END)
                if on_progress is not None and fraction > shown:
                    shown = fraction
                    on_progress(fraction)

            residual = ResidualCheck(plan)
            try:

                def decoded() -> Iterator[np.ndarray]:  # a pass of its own over the input
                    with opened() as first:
                        yield from self._decoded(first, preprocess)

                stats = self.input_stats(decoded, reader.sample_rate)
                for out in self.stream(
                    self._decoded(reader, preprocess),
                    reader.sample_rate,
                    plan,
                    total,
                    quality=quality,
                    on_progress=progress,
                    should_cancel=should_cancel,
                    stats=stats,
                    scratch=Path(out_dir),  # the disk the stems go to
                ):
                    if shaped is not None:
                        shape, rest = shaped
                        out[shape], out[rest] = apply_spans(
                            out[shape], out[rest], samples, reader.sample_rate, spans
                        )
                    residual.add(out)
                    writer.write(out)
                    samples += next(iter(out.values())).shape[1]
                    if not total or samples >= total:
                        progress(1.0)  # past the declared length (or none): the bytes tell
                if shaped is not None:  # the real length: a declared one can be wrong
                    check_reach(spans, samples / reader.sample_rate)
                stage("encoding")
                dropped = residual.dropped()
                report = writer.close(drop=dropped)
            except BaseException:
                writer.abort()
                raise
            if on_progress is not None:
                on_progress(1.0)
        kept = [name for name in plan.outputs if name not in dropped]
        also = list(zip(formats[1:], files[1:], strict=True))
        return FileResult(
            paths={name: files[0][name] for name in kept},
            duration=samples / reader.sample_rate,
            sample_rate=reader.sample_rate,
            channels=reader.channels,
            report=report,
            seconds=time.perf_counter() - started,
            extras={name: {f.extension: p[name] for f, p in also} for name in kept} if also else {},
            made_by={name: made for name, made in self.made_by(plan).items() if name in kept},
        )
