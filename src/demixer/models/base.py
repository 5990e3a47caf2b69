"""What every separation model gives the engine.

A backend is the loaded, ready-to-run form of a registered model. It sees audio only at its own
sample rate and channel count; decoding, resampling, windowing, residuals and encoding all belong
to the engine, so a backend is just "array in, stems out".

A model whose published quality depends on its own chunking (MSST's chunk size, overlap, fade
window and edge padding; UVR's VR grid of windows) is a :class:`StreamingBackend`: the engine
hands it the whole input as a stream of blocks at the model's rate and it does its own
windowing, in bounded memory, after a first pass for the whole input's :class:`InputStats`
where it scales by them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from demixer.audio import fit_length, resample
from demixer.errors import DemixerError, ModelFailed

__all__ = [
    "Backend",
    "InputStats",
    "Meter",
    "StreamingBackend",
    "meter",
    "reports_progress",
    "separate_at",
    "separate_with",
    "stats_key",
    "streaming",
]


class Backend(Protocol):
    """A loaded model.

    Attributes:
        sample_rate: the rate (Hz) ``separate`` expects and returns.
        channels: the channel count ``separate`` expects (the engine duplicates mono input).
        stems: the stems ``separate`` returns, in the model's order.
        window: preferred window length in samples at ``sample_rate``; the engine feeds windows
            of at most this length (the last may be shorter) so memory stays bounded.
        overlap: samples shared by consecutive windows, cross-faded by the engine.
    """

    sample_rate: int
    channels: int
    stems: tuple[str, ...]
    window: int
    overlap: int

    def separate(self, mix: np.ndarray) -> dict[str, np.ndarray]:
        """Split one window.

        A backend whose window takes long may also accept a keyword ``on_progress``
        (``Callable[[float], None]``, the fraction of this window done, non-decreasing): the
        engine then passes one and reports progress within the window, not only between
        windows (Spleeter and Demucs do; see :mod:`demixer.engine.separator`).

        Args:
            mix: ``(channels, samples)`` float32 at ``sample_rate``.

        Returns:
            stem name -> ``(channels, samples)`` float32, same length as ``mix``.
        """
        ...


@dataclass(frozen=True)
class InputStats:
    """Level statistics of a whole input, for models that scale by them (0: not measured).

    Attributes:
        mean: mean of the mono mix (the channels' average), over all samples.
        std: its standard deviation (population, as numpy's ``std``).
        peak: the largest magnitude of the model's own spectrogram of it (UVR's VR models
            divide by it; their :class:`Meter` measures it).
    """

    mean: float = 0.0
    std: float = 0.0
    peak: float = 0.0


class Meter(Protocol):
    """A whole input's statistics, measured block by block."""

    def push(self, block: np.ndarray) -> None:
        """``(channels, n)`` float32 at the model's rate, in order."""
        ...

    def result(self) -> InputStats:
        """The statistics of everything pushed."""
        ...


class StreamingBackend(Backend, Protocol):
    """A backend that windows a whole input itself.

    Attributes:
        needs_stats: whether :meth:`stream` needs the whole input's :class:`InputStats` (the
            engine then reads the input twice): by default the mono mix's mean and deviation
            at the model's rate; a backend with a ``meter()`` method (a :class:`Meter`) and a
            ``meter_key`` (hashable: backends with equal keys measure the same) gets what its
            meter measures instead (see :func:`stats_key`).
    """

    needs_stats: bool

    def stream(
        self,
        blocks: Iterable[np.ndarray],
        *,
        before_run: Callable[[int], None] | None = None,
        stats: InputStats | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Separate a whole input given as blocks.

        Args:
            blocks: ``(channels, n)`` float32 at ``sample_rate``, 1 or 2 channels, in order.
            before_run: called before each model call with the input position (samples at
                ``sample_rate``) it starts at; raise from it to stop.
            stats: the input's statistics, when ``needs_stats``.

        Yields:
            stem name -> ``(channels, m)`` float32 (the input's channel count): consecutive
            ranges that together cover the input exactly.
        """
        ...


def stats_key(backend: StreamingBackend) -> Hashable:
    """What ``backend``'s :class:`InputStats` are found under: its ``meter_key`` when it has
    a meter of its own, else its rate (normalising models at one rate share the mono mix's
    statistics)."""
    if callable(getattr(backend, "meter", None)):
        key: Hashable = getattr(backend, "meter_key")  # noqa: B009 (not in the protocol)
        return key
    return backend.sample_rate


def meter(backend: StreamingBackend) -> Meter | None:
    """``backend``'s own :class:`Meter`, or None when it takes the default statistics."""
    make = getattr(backend, "meter", None)
    return make() if callable(make) else None


def streaming(backend: Backend) -> StreamingBackend | None:
    """``backend`` as a :class:`StreamingBackend`, or None when it takes windows."""
    return backend if callable(getattr(backend, "stream", None)) else None  # type: ignore[return-value]


def separate_with(
    backend: Backend,
    x: np.ndarray,
    *,
    label: str | None,
    on_progress: Callable[[float], None] | None = None,
) -> dict[str, np.ndarray]:
    """``backend.separate(x)``, with ``on_progress`` where the backend reports progress; a
    crash that is not one of demixer's own errors becomes
    :class:`~demixer.errors.ModelFailed` naming ``label`` (the model the user asked for, or
    the member of it that broke: what they have to change), or goes on as it is without one."""
    try:
        if on_progress is not None and reports_progress(backend):
            reporting: Any = backend
            separated: dict[str, np.ndarray] = reporting.separate(x, on_progress=on_progress)
            return separated
        return backend.separate(x)
    except DemixerError:
        raise
    except Exception as exc:
        if label is None:
            raise
        raise ModelFailed(f"model {label!r} failed: {type(exc).__name__}: {exc}") from exc


def separate_at(
    backend: Backend,
    x: np.ndarray,
    rate: int,
    names: Sequence[str],
    *,
    label: str | None,
    on_progress: Callable[[float], None] | None = None,
    at_rate: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``x`` (``(channels, n)`` at ``rate``) -> the stems ``names`` of ``backend`` (matched
    case-blind), each ``(channels, n)`` float32 at ``rate``: the input resampled to the model's
    rate and given its channels (mono repeated), the stems resampled back (cut or padded to
    ``n``: a round trip may miss by one) and averaged to mono for a mono input. The engine's
    windows and a cascade's steps alike; ``label`` and ``on_progress`` as
    :func:`separate_with`'s; ``at_rate``: ``x`` already resampled to the model's rate, by a
    caller that uses it too (None: resampled here)."""
    channels, n = x.shape
    if at_rate is None:
        at_rate = resample(x, rate, backend.sample_rate)
    model_in = (
        np.repeat(at_rate, backend.channels, axis=0) if channels < backend.channels else at_rate
    )
    separated = separate_with(backend, model_in, label=label, on_progress=on_progress)
    by_name = {k.lower(): v for k, v in separated.items()}
    out = {}
    for name in names:
        y = fit_length(resample(np.asarray(by_name[name.lower()]), backend.sample_rate, rate), n)
        if channels < y.shape[0]:
            y = y.mean(axis=0, keepdims=True)
        out[name] = np.ascontiguousarray(y, dtype=np.float32)
    return out


def reports_progress(backend: Backend) -> bool:
    """Whether ``backend.separate`` takes an ``on_progress`` keyword (progress within a
    window; see :meth:`Backend.separate`)."""
    try:
        return "on_progress" in inspect.signature(backend.separate).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no keywords to look at
        return False
