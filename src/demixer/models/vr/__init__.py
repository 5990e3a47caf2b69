"""UVR's VR architecture models (``5_HP-Karaoke-UVR``, ``UVR-DeEcho-DeReverb``, ...).

A VR model is a ``.pth`` of a convolutional network (:mod:`demixer.models.vr.network`) that
masks a multi-band magnitude spectrogram (:mod:`demixer.models.vr.bands`); the band layout and
the stem the mask keeps come from UVR's model data (:mod:`demixer.models.vr.params`).

The inference is UVR's (audio-separator's ``VRSeparator``), with UVR's defaults: the stitched
spectrogram's magnitude, padded by the network's ``offset`` of context at each side and
divided by its largest value, run ``window_size`` frames at a time keeping the middle; the
mask raised by the aggression setting (bins under the first band's ``crop_stop`` by a third
as much); the primary stem is the mask times the spectrogram (the mixture's phase), the
secondary its complement, each turned back into a wave band by band. UVR's options, off by
default as in UVR: TTA, the post-process (:func:`merge_artifacts`) and the high-end process
(:func:`demixer.models.vr.bands.mirrored_high_end`).

The engine streams the whole song through the model (:class:`StreamingVrBackend`,
:mod:`demixer.models.vr.streaming`): UVR's stems for the whole song, however long, in memory
that does not grow with it, after a first pass that finds the loudest bin UVR scales the song
by (as a recipe's step, the earlier step's whole stem: :mod:`demixer.engine.graph`). Where
windows are cut (a v5 network on the one reversed layout) each window of
:data:`WINDOW_SECONDS` is separated as UVR would separate it alone, by its own loudest bin,
and the windows cross-faded over :data:`OVERLAP_SECONDS`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from demixer.errors import CheckpointMismatch, InvalidModelConfig, ModelUnavailable
from demixer.models.base import InputStats
from demixer.models.loading import network_file
from demixer.models.quality import Quality
from demixer.models.registry import ModelSpec
from demixer.models.vr.bands import Layout, analyse
from demixer.models.vr.network import CascadedAspp, CascadedLstm, VrNetwork, build
from demixer.models.vr.params import ARCH_PARAMS, VrParams
from demixer.models.vr.streaming import (
    MaskedSynthesis,
    PeakMeter,
    SpectrogramStream,
    merge_artifacts,
    stereo,
)

__all__ = [
    "ARCH_PARAMS",
    "CHUNK_SECONDS",
    "OVERLAP_SECONDS",
    "WINDOW_SECONDS",
    "StreamingVrBackend",
    "VrBackend",
    "VrParams",
    "backend",
    "load",
    "merge_artifacts",
]

#: seconds per engine window, where windows are cut (a reversed layout): a
#: 4-band layout's spectrograms and masks for it take ~0.5 GB
WINDOW_SECONDS = 120
OVERLAP_SECONDS = 4
#: seconds of frames a streaming model computes at a time: each chunk's DSP is computed with a
#: margin of about a second either side; its working arrays grow with it
CHUNK_SECONDS = 10
#: windows per network call on a CPU (UVR's default is 1; the output is the same)
_CPU_BATCH = 2
#: the stems UVR pushes the other way (``aggression`` lowers their mask): what audio-separator
#: calls its non-accompaniment stems
_NON_ACCOMPANIMENT = frozenset(
    ("vocals", "other", "bass", "drums", "guitar", "piano", "synthesizer", "strings",
     "woodwinds", "brass", "wind inst")
)  # fmt: skip


class VrBackend:
    """A loaded VR model, taking windows (:meth:`separate`): a v5 model on a reversed layout
    (whose frames run from the song's end, so that a stream cannot know them), or a VR model
    inside one window of the engine; :func:`backend` gives a :class:`StreamingVrBackend`
    otherwise.

    Attributes:
        sample_rate: the layout's rate (44.1 kHz for most).
        channels: 2 (the engine duplicates mono, as UVR does).
        stems: the primary (the mask's) and the secondary (its complement), registry names.
        window, overlap: see :data:`WINDOW_SECONDS`.
        network, lstm: the network; whether it is a v5.1 (LSTM) one.
        batch: grid windows per network call. device: where the network runs.
        chunk: frames a stream computes at a time (:data:`CHUNK_SECONDS`).
    """

    channels = 2

    def __init__(
        self,
        network: VrNetwork,
        params: VrParams,
        *,
        stems: tuple[str, str],
        batch: int = _CPU_BATCH,
        device: str = "cpu",
    ) -> None:
        self.params = params
        self.sample_rate = params.layout.sr
        self.stems: tuple[str, ...] = stems
        self.window = WINDOW_SECONDS * self.sample_rate
        self.overlap = OVERLAP_SECONDS * self.sample_rate
        self.network = network
        self.lstm = isinstance(network, CascadedLstm)
        self.batch = params.batch_size or batch
        self.device = torch.device(device)
        self.chunk = max(1, round(CHUNK_SECONDS / params.layout.hop_seconds))
        problem = window_problem(network, params.window_size)
        if problem:
            raise InvalidModelConfig(f"window_size {params.window_size}: {problem}")

    def with_quality(self, quality: Quality) -> VrBackend:
        """``fast``: 1024-frame windows (UVR's "quick" setting; a third fewer frames run);
        ``balanced``: the model's parameters; ``best``: UVR's TTA added (twice the work)."""
        if quality == "balanced":
            return self
        tuned = copy.copy(self)
        if quality == "fast":
            tuned.params = replace(self.params, window_size=max(self.params.window_size, 1024))
        elif not self.params.tta:
            tuned.params = replace(self.params, tta=True)
        return tuned

    def separate(self, mix: np.ndarray) -> dict[str, np.ndarray]:
        """Split one window as UVR splits a whole track.

        Args:
            mix: ``(2, samples)`` float32 at :attr:`sample_rate`.

        Returns:
            both stems, ``(2, samples)`` float32: UVR's waves (a multiple of the hop long),
            zero-padded to ``samples``.
        """
        if mix.ndim != 2 or mix.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, samples) audio, got shape {mix.shape}")
        high: list[np.ndarray] | None = [] if self.params.high_end_process else None
        spec = analyse(mix, self.params.layout, lstm=self.lstm, high_end=high)
        peak = float(np.abs(spec).max()) if spec.size else 0.0
        if not _dividing(peak):
            return self.silence(mix.shape[1])
        synthesis = MaskedSynthesis(self, peak, chunk=spec.shape[2])
        [out] = synthesis.push(spec, high[0] if high else None, last=True, samples=mix.shape[1])
        return out

    def aggressive(self, mask: np.ndarray) -> np.ndarray:
        """The mask with UVR's aggression (its ``adjust_aggr``)."""
        aggr = self.params.aggression / 100 * 2
        if aggr == 0:
            return mask
        if self.params.primary_stem.strip().lower() in _NON_ACCOMPANIMENT:
            aggr = 1 - aggr
        correction = self.params.layout.aggr_correction or (0.0, 0.0)
        split = self.params.layout.bands[0].crop_stop
        out = np.empty_like(mask)
        for ch in range(2):
            a = aggr + correction[ch]
            out[ch, :split] = np.power(mask[ch, :split], 1 + a / 3)
            out[ch, split:] = np.power(mask[ch, split:], 1 + a)
        return out

    def silence(self, samples: int, channels: int = 2) -> dict[str, np.ndarray]:
        """Silent stems ``samples`` long: what UVR writes for silence (it divides by a zero
        peak and writes the NaNs as zeros) and for an input under two frames long."""
        return {stem: np.zeros((channels, samples), np.float32) for stem in self.stems}


class StreamingVrBackend(VrBackend):
    """A VR model that takes the whole song as a stream (:mod:`demixer.models.vr.streaming`):
    UVR's stems for the whole song, however long, in memory that does not grow with it.

    Attributes:
        needs_stats: true: the engine first measures the song's spectral peak
            (:meth:`meter`, keyed by :attr:`meter_key`).
    """

    needs_stats = True

    @property
    def meter_key(self) -> Hashable:
        """Models with one key measure the same peak: those sharing layout and generation."""
        return ("vr-peak", self.params.layout, self.lstm)

    def meter(self) -> PeakMeter:
        return PeakMeter(self.params.layout, lstm=self.lstm, chunk=self.chunk)

    def stream(
        self,
        blocks: Iterable[np.ndarray],
        *,
        before_run: Callable[[int], None] | None = None,
        stats: InputStats | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Separate a whole song given as blocks (see
        :meth:`demixer.models.base.StreamingBackend.stream`): ``stats.peak`` is the song's
        (:meth:`meter`)."""
        if stats is None:
            raise ValueError("a VR model scales the song by its spectral peak: pass stats")
        channels, samples = 0, 0
        if not _dividing(stats.peak):
            for block in blocks:
                yield self.silence(block.shape[1], block.shape[0])
            return
        frames = SpectrogramStream(
            self.params.layout,
            lstm=self.lstm,
            high_end=self.params.high_end_process,
            chunk=self.chunk,
        )
        synthesis = MaskedSynthesis(self, stats.peak, chunk=self.chunk)

        def out(stems: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if channels == 1:
                return {k: v.mean(axis=0, keepdims=True) for k, v in stems.items()}
            return stems

        for block in blocks:
            if not block.shape[1]:
                continue
            channels = block.shape[0]
            samples += block.shape[1]
            frames.push(stereo(block))
            for spec, high in frames.take():
                for stems in synthesis.push(spec, high, before_run=before_run):
                    yield out(stems)
        if not samples:
            return
        pieces = list(frames.take(last=True))
        for i, (spec, high) in enumerate(pieces):
            last = i == len(pieces) - 1
            for stems in synthesis.push(
                spec, high, last=last, samples=samples, before_run=before_run
            ):
                yield out(stems)


def _dividing(peak: float) -> bool:
    """Whether UVR's division by the spectral peak gives numbers (silence: 0, NaN after)."""
    return peak > 0 and math.isfinite(peak)


def backend(
    network: VrNetwork,
    params: VrParams,
    *,
    stems: tuple[str, str],
    batch: int = _CPU_BATCH,
    device: str = "cpu",
) -> VrBackend:
    """The backend for ``network``: a :class:`StreamingVrBackend` unless a v5 network reads
    its layout reversed in time (:class:`VrBackend`: windows)."""
    reversed_frames = params.layout.reverse and not isinstance(network, CascadedLstm)
    kind = VrBackend if reversed_frames else StreamingVrBackend
    return kind(network, params, stems=stems, batch=batch, device=device)


def window_problem(network: VrNetwork, size: int) -> str | None:
    """Why ``network`` cannot run windows of ``size`` frames (UVR fails on such a window
    mid-song), or None: each window must keep frames past the context at both ends, and
    halve evenly at each of the U-Nets' levels."""
    if size <= 2 * network.offset:
        return f"this network takes {network.offset} frames of context at each end of a window"
    step = 32 if isinstance(network, CascadedAspp) and network.stg1_low_band_net.five_levels else 16
    if size % step:
        return (
            f"this network's windows halve {step.bit_length() - 1} times: use a multiple of {step}"
        )
    return None


def open_network(path: Path, layout: Layout, *, device: str = "cpu") -> VrNetwork:
    """The network a UVR VR ``.pth`` holds, with its weights, in eval mode.

    Raises:
        ModelUnavailable: the file cannot be read as a state dict.
        CheckpointMismatch: its tensors are not a VR network's for ``layout``'s bins.
    """
    from demixer.models.msst.checkpoint import describe_mismatch, read_state_dict

    state = read_state_dict(path)
    network = build(state, layout.bins, source=str(path))
    problem = describe_mismatch(network, state)
    if problem:
        raise CheckpointMismatch(
            f"{path} does not fit a VR network for {layout.bins} bins: {problem}"
        )
    network.load_state_dict(state)
    return network.eval().to(device)


def load(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> VrBackend:
    """Load a registered VR model (``arch="vr"``; ``arch_params`` as in
    :mod:`demixer.models.vr.params`; stems: the primary, then the secondary).

    Raises:
        ModelUnavailable: bad ``arch_params`` (InvalidModelConfig), a missing or corrupt file,
            or a file that is not a VR network for the layout (CheckpointMismatch).
        WeightsChecksumMismatch: the registered file does not match its pin.
    """
    del threads  # torch's own setting
    params = VrParams.from_arch_params(spec.arch_params, model_id=spec.id)
    if len(spec.stems) != 2:
        raise ModelUnavailable(
            f"model {spec.id!r} declares stems {list(spec.stems)}; a VR model has two: the "
            "mask's and its complement"
        )
    path = network_file(spec, model_dir, model_path, one="a VR model is one .pth")
    network = open_network(path, params.layout, device=device)
    try:
        return backend(network, params, stems=(spec.stems[0], spec.stems[1]), device=device)
    except InvalidModelConfig as exc:  # the window does not fit this network
        raise InvalidModelConfig(f"model {spec.id!r}: arch_params {exc.message}") from None
