"""A VR model over a whole song in bounded memory, computing what UVR computes for it whole.

UVR analyses the whole song into one stitched spectrogram, divides its magnitude by its
largest value, runs the network ``window_size`` frames at a time on a grid that starts at the
song's first frame (and, with TTA, on a second grid half a window later), and turns the masked
spectrogram back into a wave. All of that is local in time but the largest value:

- a frame of the spectrogram depends on the samples under its bands' STFT windows, widened by
  the resampling filters that made the lower bands;
- a frame of the mask on the one grid window holding it (one per grid);
- a sample of a stem on the frames whose inverse-STFT windows cover it, widened likewise.

So the song goes through in chunks. :class:`SpectrogramStream` gives exact frames of the
spectrogram from the samples pushed so far: each chunk is analysed from a start a margin
(:func:`guard_frames`) before the frames it gives, so the frames it keeps are those of the
whole song's spectrogram. A chunk starts at a frame's first sample, which lies on the whole
song's phase of every resampling step between bands, both ways: every band steps the same time
(``hl / sr``, which the layout's parser checks), so a frame's sample in one band times the
ratio of the rates is its sample in the next, a whole number (a polyphase step of
``up``/``down`` gives the whole song's samples from any input start that is a multiple of
``down``, and this one is).
:class:`MaskedSynthesis` runs each grid window once, as soon as its frames are in, and turns
the masked frames back into samples, again from a margin before and after the samples it
gives. The largest value comes from a first pass over the song (:class:`PeakMeter`, run by
the engine before it separates: :attr:`demixer.models.base.InputStats.peak`).

UVR's post-process (:func:`merge_artifacts`) looks at runs of frames; each
chunk's runs are read from :data:`POST_PROCESS_GUARD` frames either side, which holds all of a
run that matters to the chunk, but not UVR's giving up on a whole song when one fade does not
fit (it then leaves every mask as it is; here, that chunk's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from demixer.models.base import InputStats
from demixer.models.vr.bands import Layout, analyse, mirrored_high_end, synthesise

if TYPE_CHECKING:
    from demixer.models.vr import VrBackend

__all__ = [
    "POST_PROCESS_GUARD",
    "MaskedSynthesis",
    "PeakMeter",
    "SpectrogramStream",
    "guard_frames",
    "merge_artifacts",
]

#: each resampling step's reach, in samples of its input, taken at most: libsamplerate's
#: ``sinc_best`` filter spans about 143 zero crossings of the lower rate each side, scipy's
#: polyphase one 10 of the higher, soxr's very-high-quality one under 1000 samples
_RESAMPLER_REACH = 4096
#: mask frames read either side of a chunk for UVR's post-process: longer than the longest
#: reach of a run's fades (64-frame runs, 32-frame fades, a run pulled 64 frames back)
POST_PROCESS_GUARD = 256


class _Frames:
    """The last axis of an array from a global index on: appended at the end, dropped from
    the start."""

    def __init__(self, start: int = 0) -> None:
        self.start = start
        self._parts: list[np.ndarray] = []
        self._size = 0

    @property
    def end(self) -> int:
        return self.start + self._size

    def append(self, block: np.ndarray) -> None:
        if block.shape[-1]:
            self._parts.append(block)
            self._size += block.shape[-1]

    def get(self, lo: int, hi: int) -> np.ndarray:
        if not self.start <= lo <= hi <= self.end:
            raise AssertionError(f"frames {lo}:{hi} asked, {self.start}:{self.end} held")
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts, axis=-1)]
        return self._parts[0][..., lo - self.start : hi - self.start]

    def drop(self, before: int) -> None:
        """Forget everything before global index ``before``."""
        n = min(before, self.end) - self.start
        if n <= 0:
            return
        whole = self.get(self.start, self.end)
        self._parts = [whole[..., n:]] if n < whole.shape[-1] else []
        self._size -= n
        self.start += n


def merge_artifacts(
    mask: np.ndarray, threshold: float, min_range: int = 64, fade: int = 32
) -> np.ndarray:
    """UVR's "Post-Process" (its ``merge_artifacts``): each run of more than ``min_range``
    frames in which the mask keeps over ``threshold`` of every bin of both channels is pushed
    to keeping everything, faded in and out over ``fade`` frames (a run closer than ``fade``
    to the one before starts ``2 * fade`` before that one's end)."""
    frames = np.flatnonzero(mask.min(axis=(0, 1)) > threshold)
    if frames.size == 0:  # UVR's own code fails here, and leaves the mask as it was
        return mask
    breaks = np.flatnonzero(np.diff(frames) != 1)
    starts = np.concatenate([frames[:1], frames[breaks + 1]])
    ends = np.concatenate([frames[breaks], frames[-1:]])
    long = ends - starts > min_range
    weight = np.zeros_like(mask)
    previous_end: int | None = None
    try:
        for s, e in zip(starts[long].tolist(), ends[long].tolist(), strict=True):
            if previous_end is not None and s - previous_end < fade:
                s = previous_end - fade * 2
            if s != 0:
                weight[:, :, s : s + fade] = np.linspace(0, 1, fade)
            else:
                s -= fade
            if e != mask.shape[2]:
                weight[:, :, e - fade : e] = np.linspace(1, 0, fade)
            else:
                e += fade
            weight[:, :, s + fade : e - fade] = 1
            previous_end = e
    except ValueError:  # a fade that does not fit the frames: UVR's code gives up, as here
        return mask
    merged: np.ndarray = mask + weight * (1 - mask)
    return merged


def guard_frames(layout: Layout) -> int:
    """Frames either side of a frame that its samples reach, at most, through the widest STFT
    window and every resampling step between the bands (the same both ways: analysis and
    synthesis)."""
    top = layout.bands[-1]
    window = max(b.n_fft // 2 * top.sr / b.sr for b in layout.bands)
    reach = sum(_RESAMPLER_REACH * top.sr / b.sr for b in layout.bands[1:])
    return math.ceil((window + reach) / top.hl) + 2


class SpectrogramStream:
    """The stitched spectrogram of samples pushed block by block, frame for frame the one
    :func:`~demixer.models.vr.bands.analyse` gives for them all at once.

    Frames come out (:meth:`take`) once the samples their bands' windows and resamplers reach
    are in, ``chunk`` frames at a time (all that are left at the end).
    """

    def __init__(self, layout: Layout, *, lstm: bool, high_end: bool, chunk: int) -> None:
        self.layout, self.lstm, self.high_end, self.chunk = layout, lstm, high_end, chunk
        self.hop = layout.bands[-1].hl
        self.guard = guard_frames(layout)
        self.samples = 0
        self.done = 0  # frames given out
        self._audio = _Frames()

    def push(self, block: np.ndarray) -> None:
        """``(2, n)`` float32 at the layout's rate."""
        self._audio.append(block)
        self.samples += block.shape[1]

    def take(self, *, last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """The frames now ready, a chunk at a time, each with (``high_end``) the top band's
        highest bins for it (:func:`~demixer.models.vr.bands.high_end_bins`); ``last``: the
        song has ended, so every frame left, the last piece up to a chunk and a margin."""
        while True:
            ready = self.samples // self.hop - self.guard
            if ready - self.done >= self.chunk:
                yield self._analyse(self.done + self.chunk)
            elif last and self.samples:
                yield self._analyse(None)
                return
            else:
                return

    def _analyse(self, end: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Frames ``done`` to ``end`` (None: to the song's end)."""
        first = max(0, self.done - self.guard)
        stop = self.samples if end is None else (end + self.guard) * self.hop
        high: list[np.ndarray] | None = [] if self.high_end else None
        wave = self._audio.get(first * self.hop, stop)
        spec = analyse(wave, self.layout, lstm=self.lstm, high_end=high)
        end = first + spec.shape[2] if end is None else end
        lo, hi = self.done - first, max(end, self.done) - first
        self.done = max(end, self.done)
        self._audio.drop(max(0, self.done - self.guard) * self.hop)
        return spec[:, :, lo:hi], (high[0][:, :, lo:hi] if high else None)


class PeakMeter:
    """The largest magnitude of a stream's stitched spectrogram (UVR divides by it): the
    whole-input measurement a streaming VR model needs (``InputStats.peak``)."""

    def __init__(self, layout: Layout, *, lstm: bool, chunk: int) -> None:
        self._frames = SpectrogramStream(layout, lstm=lstm, high_end=False, chunk=chunk)
        self._peak = 0.0

    def push(self, block: np.ndarray) -> None:
        """``(channels, n)`` at the layout's rate (mono is taken twice, as the model takes it)."""
        self._frames.push(stereo(block))
        self._take(last=False)

    def result(self) -> InputStats:
        self._take(last=True)
        return InputStats(peak=self._peak)

    def _take(self, *, last: bool) -> None:
        for spec, _ in self._frames.take(last=last):
            if spec.size:
                self._peak = max(self._peak, float(np.abs(spec).max()))


def stereo(block: np.ndarray) -> np.ndarray:
    """A block as the model takes it: float32, mono repeated."""
    block = np.asarray(block, dtype=np.float32)
    return np.repeat(block, 2, axis=0) if block.shape[0] == 1 else block


class MaskedSynthesis:
    """A VR model's stems from its spectrogram's frames, pushed in order (UVR's
    ``inference_vr`` and ``spec_to_wav``, chunk by chunk).

    Args:
        backend: the model (its network, parameters and batch).
        peak: the whole song's :class:`PeakMeter` value, above 0 (silence is the caller's).
        chunk: frames of stems given out at a time (all that are left at the end).
    """

    def __init__(self, backend: VrBackend, peak: float, *, chunk: int) -> None:
        self.backend, self.chunk = backend, chunk
        params = backend.params
        self.layout = params.layout
        self.hop = self.layout.bands[-1].hl
        self.guard = guard_frames(self.layout)
        self.post = POST_PROCESS_GUARD if params.post_process else 0
        self.peak = peak
        offset = backend.network.offset
        self.size = params.window_size
        self.kept = self.size - 2 * offset
        self.offset = offset
        # each grid: its first window keeps frames from this one on (TTA's, half a window early)
        self.phases = [0, -(self.kept // 2)] if params.tta else [0]
        self._next = [0] * len(self.phases)  # each grid's next window
        self._grids = [_Frames(phase) for phase in self.phases]
        self._spec = _Frames()
        self._high = _Frames()
        self._scaled = _Frames()
        self._mask = _Frames()  # both grids' mean, with the aggression applied
        self.frames: int | None = None  # the song's, once it has ended
        self.done = 0  # frames whose samples are out
        self.samples = 0  # samples given out

    def push(
        self,
        spec: np.ndarray,
        high: np.ndarray | None,
        *,
        last: bool = False,
        samples: int = 0,
        before_run: Callable[[int], None] | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Take the next frames; yield the stems (``(2, n)`` float32 each, consecutive) for
        every chunk now computable. ``last``: the song has ended, ``samples`` long: the
        stems are given to its end (UVR's waves end at the last frame: silence after it)."""
        self._spec.append(spec)
        if high is not None:
            self._high.append(high)
        self._scaled.append(np.abs(spec) / self.peak)
        if last:
            self.frames = self._spec.end
            if self.frames <= 1:  # UVR's waves are a hop times one less than the frames long
                yield self._silence(samples)
                return
        self._run(before_run)
        yield from self._stems(samples)

    def _silence(self, samples: int) -> dict[str, np.ndarray]:
        """The backend's silence for the rest of the song's ``samples``."""
        out = self.backend.silence(samples - self.samples)
        self.samples = samples
        return out

    def _window(self, start: int) -> np.ndarray:
        """The scaled frames of the grid window starting at frame ``start`` (before the
        song's first frame and after its last: zeros, as UVR pads)."""
        out = np.zeros((2, self.layout.bins + 1, self.size), np.float32)
        end = self.frames if self.frames is not None else self._scaled.end
        lo, hi = max(start, 0), min(start + self.size, end)
        if lo < hi:
            out[:, :, lo - start : hi - start] = self._scaled.get(lo, hi)
        return out

    def _run(self, before_run: Callable[[int], None] | None) -> None:
        """Every grid window whose frames are in, once; then the mask frames both grids have."""
        network, batch = self.backend.network, self.backend.batch
        for g, phase in enumerate(self.phases):
            while True:
                starts = []
                for i in range(self._next[g], self._next[g] + batch):
                    keep = phase + i * self.kept  # the first frame it keeps
                    if self.frames is not None:
                        if keep >= self.frames:
                            break
                    elif keep - self.offset + self.size > self._scaled.end:
                        break
                    starts.append(keep - self.offset)
                if not starts:
                    break
                if before_run is not None:
                    before_run(max(0, starts[0] + self.offset) * self.hop)
                windows = torch.from_numpy(np.stack([self._window(s) for s in starts]))
                with torch.inference_mode():
                    pred = network.predict_mask(windows.to(self.backend.device)).float().cpu()
                if pred.shape[3] <= 0:
                    raise ValueError(f"window_size {self.size} leaves no frames past the context")
                for one in pred.unbind(0):
                    self._grids[g].append(one.numpy())
                self._next[g] += len(starts)
        end = min(grid.end for grid in self._grids)
        if self.frames is not None:
            end = min(end, self.frames)
        lo = self._mask.end
        if end > lo:
            masks = [grid.get(lo, end) for grid in self._grids]
            mask = masks[0] if len(masks) == 1 else (masks[0] + masks[1]) * 0.5
            self._mask.append(self.backend.aggressive(mask))
            for grid in self._grids:
                grid.drop(end)
        grid_starts = zip(self.phases, self._next, strict=True)
        self._scaled.drop(min(phase + i * self.kept - self.offset for phase, i in grid_starts))

    def _stems(self, samples: int) -> Iterator[dict[str, np.ndarray]]:
        """The stems for every chunk of frames whose masks (and margins) are in."""
        while self.frames is None or self.done < self.frames:
            mask_end = self._mask.end
            ready = self.frames if self.frames is not None else mask_end - self.guard - self.post
            stop = min(ready, self.done + self.chunk)
            if self.frames is None and stop - self.done < self.chunk:
                return
            yield self._chunk(stop, mask_end, samples)

    def _chunk(self, stop: int, mask_end: int, samples: int) -> dict[str, np.ndarray]:
        """The stems from frame :attr:`done` to ``stop`` (to the song's end when ``stop`` is
        its last frame)."""
        lo = max(0, self.done - self.guard)
        hi = stop + self.guard
        if self.frames is not None:
            hi = min(hi, self.frames)
        spec = self._spec.get(lo, hi)
        mask = self._mask.get(max(0, lo - self.post), min(mask_end, hi + self.post))
        if self.post:
            start = lo - max(0, lo - self.post)
            merged = merge_artifacts(mask, self.backend.params.post_process_threshold)
            mask = merged[:, :, start : start + hi - lo]
        magnitude = np.abs(spec)
        phase = np.exp(1.0j * np.angle(spec))
        primary = np.nan_to_num(mask * magnitude * phase, nan=0.0, posinf=0.0, neginf=0.0)
        secondary = np.nan_to_num((1 - mask) * magnitude * phase, nan=0.0, posinf=0.0, neginf=0.0)
        high = self._high.get(lo, hi) if self.backend.params.high_end_process else None
        # UVR's wave ends at the last frame's centre: silence after it, to the song's end
        final = stop == self.frames
        first, end = self.done * self.hop, stop * self.hop
        if self.frames is not None:
            end = min(end, (self.frames - 1) * self.hop)
        out = {}
        for stem, part in zip(self.backend.stems, (primary, secondary), strict=True):
            top = mirrored_high_end(part, high, self.layout) if high is not None else None
            wave = synthesise(part, self.layout, lstm=self.backend.lstm, high_end=top)
            taken = wave[:, first - lo * self.hop : end - lo * self.hop].astype(np.float32)
            if final:  # to the song's end
                taken = np.pad(taken, ((0, 0), (0, samples - self.samples - taken.shape[1])))
            out[stem] = taken
        self.samples += next(iter(out.values())).shape[1]
        self.done = stop
        keep = max(0, self.done - self.guard) - self.post
        self._spec.drop(keep)
        self._high.drop(keep)
        self._mask.drop(keep)
        return out
