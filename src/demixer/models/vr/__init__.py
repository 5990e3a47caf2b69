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

The engine hands this backend windows of :data:`WINDOW_SECONDS` (cross-fading
:data:`OVERLAP_SECONDS` between them), so memory stays flat however long the song: a song
that fits one window gets exactly UVR's stems; a longer one, each window as UVR would
separate that window alone (UVR scales the whole song by its loudest bin, a window by its
own).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from demixer.audio import fit_length
from demixer.errors import CheckpointMismatch, InvalidModelConfig, ModelUnavailable
from demixer.models.loading import network_file
from demixer.models.quality import Quality
from demixer.models.registry import ModelSpec
from demixer.models.vr.bands import Layout, analyse, mirrored_high_end, synthesise
from demixer.models.vr.network import CascadedAspp, CascadedLstm, VrNetwork, build
from demixer.models.vr.params import ARCH_PARAMS, VrParams

__all__ = ["ARCH_PARAMS", "OVERLAP_SECONDS", "WINDOW_SECONDS", "VrBackend", "VrParams", "load"]

#: seconds per engine window: a 4-band layout's spectrograms and masks for it take ~0.5 GB
WINDOW_SECONDS = 120
OVERLAP_SECONDS = 4
#: windows per network call on a CPU (UVR's default is 1; the output is the same)
_CPU_BATCH = 2
#: the stems UVR pushes the other way (``aggression`` lowers their mask): what audio-separator
#: calls its non-accompaniment stems
_NON_ACCOMPANIMENT = frozenset(
    ("vocals", "other", "bass", "drums", "guitar", "piano", "synthesizer", "strings",
     "woodwinds", "brass", "wind inst")
)  # fmt: skip


class VrBackend:
    """A loaded VR model.

    Attributes:
        sample_rate: the layout's rate (44.1 kHz for most).
        channels: 2 (the engine duplicates mono, as UVR does).
        stems: the primary (the mask's) and the secondary (its complement), registry names.
        window, overlap: see :data:`WINDOW_SECONDS`.
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
        self._network = network
        self._lstm = isinstance(network, CascadedLstm)
        self._batch = params.batch_size or batch
        self._device = torch.device(device)
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
        layout = self.params.layout
        high_end: list[np.ndarray] | None = [] if self.params.high_end_process else None
        spec = analyse(mix, layout, lstm=self._lstm, high_end=high_end)
        magnitude = np.abs(spec)
        # UVR's waves are the hop times one less than the frames long: nothing for an input
        # shorter than a hop. Silence divides by a zero peak: NaNs, which UVR sanitises to 0.
        mask = self._mask(magnitude) if spec.shape[2] > 1 else None
        if mask is None:
            silent = np.zeros_like(mix, dtype=np.float32)
            return {stem: silent.copy() for stem in self.stems}
        mask = self._aggressive(mask)
        if self.params.post_process:
            mask = merge_artifacts(mask, self.params.post_process_threshold)
        phase = np.exp(1.0j * np.angle(spec))
        primary = np.nan_to_num(mask * magnitude * phase, nan=0.0, posinf=0.0, neginf=0.0)
        secondary = np.nan_to_num((1 - mask) * magnitude * phase, nan=0.0, posinf=0.0, neginf=0.0)
        out = {}
        for stem, part in zip(self.stems, (primary, secondary), strict=True):
            top = mirrored_high_end(part, high_end[0], layout) if high_end else None
            wave = synthesise(part, layout, lstm=self._lstm, high_end=top)
            out[stem] = fit_length(wave, mix.shape[1]).astype(np.float32)
        return out

    def _mask(self, magnitude: np.ndarray) -> np.ndarray | None:
        """The network's mask over every frame (UVR's ``inference_vr``), None for silence."""
        frames = magnitude.shape[2]
        offset = self._network.offset
        size = self.params.window_size
        kept = size - 2 * offset
        if kept <= 0:
            kept = size
        peak = float(magnitude.max()) if magnitude.size else 0.0
        if peak <= 0 or not np.isfinite(peak):
            return None
        scaled = magnitude / peak
        right = offset + kept - frames % kept
        mask = self._run(scaled, offset, right, kept)[..., :frames]
        if self.params.tta:
            half = kept // 2
            shifted = self._run(scaled, offset + half, right + half, kept)
            mask = (mask + shifted[..., half : half + frames]) * 0.5
        return mask

    def _run(self, scaled: np.ndarray, left: int, right: int, kept: int) -> np.ndarray:
        padded = np.pad(scaled, ((0, 0), (0, 0), (left, right)))
        size = self.params.window_size
        count = (padded.shape[2] - 2 * self._network.offset) // kept
        windows = torch.from_numpy(padded)
        out: list[torch.Tensor] = []
        with torch.inference_mode():
            for first in range(0, count, self._batch):
                starts = range(first * kept, min(count, first + self._batch) * kept, kept)
                batch = torch.stack([windows[:, :, s : s + size] for s in starts]).to(self._device)
                pred = self._network.predict_mask(batch).float().cpu()
                if pred.shape[3] <= 0:
                    raise ValueError(f"window_size {size} leaves no frames past the context")
                out.extend(pred.unbind(0))
        return torch.cat(out, dim=2).numpy()

    def _aggressive(self, mask: np.ndarray) -> np.ndarray:
        """UVR's ``adjust_aggr``."""
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
        return VrBackend(network, params, stems=(spec.stems[0], spec.stems[1]), device=device)
    except InvalidModelConfig as exc:  # the window does not fit this network
        raise InvalidModelConfig(f"model {spec.id!r}: arch_params {exc.message}") from None
