"""Ensembles: several models' estimates of the same stems, combined per stem.

An ensemble is named by its members and how it combines them: ``a+b`` (the average of the
waveforms; ``a@2+b`` weighs ``a`` twice), ``max:a+b`` / ``min:a+b`` (UVR's "max spec" / "min
spec": per time-frequency bin, the member estimate whose spectrogram magnitude is the largest
/ smallest, its phase with it), ``median_wave:a+b``, ``max_wave:a+b``, ``min_wave:a+b`` (per
sample: the median, the value furthest from / nearest to zero) and ``median_fft:a+b`` (per
bin, the median of the real parts and of the imaginary parts): audio-separator's
``Ensembler`` algorithms of those names (:data:`MODES`). :func:`ensemble_spec` turns such an
id into a
:class:`~demixer.models.spec.ModelSpec` (the registry asks it for ids it does not know), so an
ensemble runs wherever a model id goes: the CLI, the API, a worker, the result cache.

Its stems are the ones every member makes (in demixer's names, :mod:`demixer.models.planner`).
When the stems include ``instrumental`` (or else ``other``), that one is the input minus the
others, so the stems add up to the input.

The engine runs each member once over the whole input, as that model runs alone, and combines
the estimates as they come (:func:`demixer.engine.streaming.stream_ensemble`,
:class:`CombineStream`): a member that windows the input itself (MSST's RoFormers, MDX23C,
SCNet, UVR's MDX-Net: a :class:`~demixer.models.base.StreamingBackend`) with its own chunks,
overlap, edge padding and normalisation by the whole song's statistics; one that takes windows
(Spleeter, Demucs) in its own windows, cross-faded. The stems are those of running each model
over the whole file and combining the whole arrays, as UVR, audio-separator and MSST's ensemble
do; memory is bounded by the members' latencies and windows. (An ensemble given windows, as a
model that takes windows is: :meth:`EnsembleBackend.separate`.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from demixer.models.base import Backend
from demixer.models.cascade import MIX, Step, run_step, shared_timing
from demixer.models.catalogue.ensembles import (
    ALIASES,
    LOADER,
    MODES,
    ensemble_id,
    ensemble_mode,
    ensemble_spec,
    remainder,
)
from demixer.models.planner import canonical_stems
from demixer.models.quality import Quality, tuned
from demixer.models.recipe import load_members
from demixer.models.spec import ModelSpec

__all__ = [
    "ALIASES",
    "LOADER",
    "MODES",
    "CombineStream",
    "EnsembleBackend",
    "combine",
    "ensemble_id",
    "ensemble_mode",
    "ensemble_spec",
    "load",
]

# UVR's max / min spec frames (audio-separator's ``uvr_max_spec``, MSST's ``max_fft``): 2048
# points, hop 1024, zeros padded at the ends (librosa's default). At hop 512 other bins were
# picked: the result differed from UVR's by 8 % of its level (-22 dB); now by float rounding.
_N_FFT, _HOP = 2048, 1024
# CombineStream's least new output per pass (samples): each pass recomputes two frames.
_SEGMENT = 16 * _HOP
# The modes that combine per STFT bin; the others combine per sample.
_SPECTRAL = ("max", "min", "median_fft")


def combine(
    estimates: Sequence[np.ndarray], mode: str, weights: Sequence[float] | None = None
) -> np.ndarray:
    """One stem's estimates, combined.

    Args:
        estimates: each ``(channels, samples)`` float32, all the same shape.
        mode: one of :data:`MODES`: ``avg`` (mean waveform), ``median_wave`` (per sample, the
            median; of an even count, the mean of the middle two), ``max_wave`` / ``min_wave``
            (per sample, the value with the largest / smallest magnitude), ``max`` / ``min``
            (per STFT bin, the estimate with the largest / smallest magnitude), ``median_fft``
            (per STFT bin, the median of the real parts and of the imaginary parts); the STFT
            2048-point Hann frames, hop 1024, as UVR's. Of magnitudes exactly equal, the
            picks take the first estimate's, as audio-separator's ``max_fft`` and MSST's (UVR's
            max / min spec take the later one's).
        weights: per estimate, its weight in ``avg`` (None: equal); no other mode takes any.

    Returns:
        ``(channels, samples)`` float32.
    """
    if mode == "avg" and weights is not None:
        total = np.zeros(estimates[0].shape, np.float64)
        for estimate, weight in zip(estimates, weights, strict=True):
            total += estimate * weight
        return np.asarray(total / sum(weights), dtype=np.float32)
    if mode == "avg" or len(estimates) == 1:
        return np.asarray(np.mean(np.stack(estimates), axis=0), dtype=np.float32)
    if mode == "median_wave":
        return np.asarray(np.median(np.stack(estimates), axis=0), dtype=np.float32)
    import torch

    x = torch.from_numpy(np.stack(estimates).astype(np.float32))  # (members, channels, n)
    if mode in ("max_wave", "min_wave"):
        picked = _pick(list(x), [e.abs() for e in x], mode.removesuffix("_wave"))
        return np.ascontiguousarray(picked.numpy(), dtype=np.float32)
    members, channels, n = x.shape
    # Past the last frame's centre only that frame's fading edge covers a sample, so the
    # inverse divides by nearly zero there: a pick of bins from different estimates, which no
    # signal has as its spectrogram, would come out as a spike of up to 10^4 in the last 1023
    # samples (as MSST's ensemble.py's does; UVR drops those samples). Zeros up to a whole hop
    # add one frame centred past the end and change none of the others.
    padded = -(-n // _HOP) * _HOP
    x = torch.nn.functional.pad(x, (0, padded - n))
    window = torch.hann_window(_N_FFT)
    spec = torch.stft(
        x.reshape(-1, padded),
        _N_FFT,
        _HOP,
        window=window,
        center=True,
        pad_mode="constant",  # zeros take any length, a window shorter than a frame too
        return_complex=True,
    ).reshape(members, channels, _N_FFT // 2 + 1, -1)
    if mode == "median_fft":
        # Per part, as audio-separator's median_fft (MSST's takes numpy's median of the
        # complex values, which sorts them by real part first: of three or more estimates,
        # another bin). numpy's median: of an even count, the mean of the middle two, where
        # torch's gives the lower one.
        parts = [np.median(part.numpy(), axis=0) for part in (spec.real, spec.imag)]
        chosen = torch.complex(*(torch.from_numpy(p) for p in parts))
    else:
        chosen = _pick(list(spec), [s.abs() for s in spec], mode)
    out = torch.istft(chosen, _N_FFT, _HOP, window=window, center=True, length=padded)
    return np.ascontiguousarray(out[..., :n].numpy(), dtype=np.float32)


def _pick(values: list[Any], magnitudes: list[Any], mode: str) -> Any:
    """Per element, the value whose magnitude is the largest (``max``) or smallest (``min``);
    the first on a tie. Pairwise ``where`` passes: an argmax across members is ~20x slower."""
    import torch

    best, best_mag = values[0], magnitudes[0]
    for value, magnitude in zip(values[1:], magnitudes[1:], strict=True):
        better = magnitude > best_mag if mode == "max" else magnitude < best_mag
        best = torch.where(better, value, best)
        best_mag = torch.where(better, magnitude, best_mag)
    return best


class CombineStream:
    """One stem's estimates combined as they come: the same samples as :func:`combine` of the
    whole arrays.

    ``avg`` and the ``_wave`` modes are per sample. ``max``, ``min`` and ``median_fft`` combine
    per STFT frame, and a sample depends only on the two frames that cover it (2048 points,
    hop 1024), so :func:`combine` runs on segments that start on a frame centre (a multiple of
    the hop) and overlap the one before by two hops: of each segment, the samples more than a
    hop from either cut are the whole array's (its first segment starts, and its last ends,
    where the whole array does). The two frames computed twice per segment add at most a ninth
    to the combining, small beside any model.

    Args:
        mode: one of :data:`MODES`.
        weights: per member, its weight in ``avg`` (None: equal).
    """

    def __init__(self, mode: str, weights: Sequence[float] | None = None) -> None:
        self.mode = mode
        self.weights = weights
        self._held: list[np.ndarray] | None = None  # per member, from a frame centre on
        self._channels = 1
        self._first = True  # the held samples start at the input's first sample

    def push(self, estimates: Sequence[np.ndarray]) -> np.ndarray:
        """The next samples of each estimate (``(channels, n)`` float32, the same ``n``) ->
        the combined samples ready now, ``(channels, m)`` float32 (``m`` may be 0); in all,
        with :meth:`finish`'s, as many as were pushed."""
        self._channels = estimates[0].shape[0]
        if self.mode not in _SPECTRAL or len(estimates) == 1:
            return combine(estimates, self.mode, self.weights)
        if self._held is None:
            self._held = [np.asarray(e, np.float32) for e in estimates]
        else:
            pairs = zip(self._held, estimates, strict=True)
            self._held = [np.concatenate([h, e], axis=1) for h, e in pairs]
        skip = 0 if self._first else _HOP
        end = self._held[0].shape[1] // _HOP * _HOP
        if end - _HOP - skip < _SEGMENT:  # too few frames yet to be worth a pass
            return np.zeros((self._channels, 0), np.float32)
        out = combine([h[:, :end] for h in self._held], self.mode)[:, skip : end - _HOP]
        # The next segment starts two hops before this one's end: its first exact sample is
        # the one after this segment's last.
        self._held = [h[:, end - 2 * _HOP :] for h in self._held]
        self._first = False
        return out

    def finish(self) -> np.ndarray:
        """The combined samples left, up to the input's end."""
        if self._held is None:  # per sample, or nothing pushed
            return np.zeros((self._channels, 0), np.float32)
        skip = 0 if self._first else _HOP
        out = combine(self._held, self.mode)[:, skip:]
        self._held = None
        return out


class EnsembleBackend:
    """Members' estimates combined per stem: the engine runs each member once over the whole
    input (see the module docstring); :meth:`separate` runs them on one window.

    Attributes:
        sample_rate: the first member's rate (Hz); others are resampled to theirs and back.
        channels: 2 when any member is stereo.
        stems: the stems every member makes (demixer's names).
        window: the shortest member window, in samples at :attr:`sample_rate`.
        overlap: the longest member overlap, at most half the window (samples).
        mode: one of :data:`MODES`.
        weights: per member, its weight in ``avg`` (None: equal).
        remainder: the stem that is the input minus the others, or None.
        steps: per member, its backend, label and kept stems (its stem -> the ensemble's).
    """

    def __init__(
        self,
        members: Sequence[tuple[str, Backend]],
        stems: Sequence[str],
        mode: str,
        weights: Sequence[float] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if weights is not None and (mode != "avg" or len(weights) != len(members)):
            raise ValueError(f"{len(weights)} weights for {len(members)} members in {mode}")
        self.mode = mode
        self.weights = tuple(weights) if weights is not None else None
        self.stems = tuple(stems)
        self.remainder = remainder(self.stems)
        self.steps: list[Step] = []
        for label, backend in members:
            names = canonical_stems(backend.stems)
            keep = {k: v for k, v in names.items() if v in self.stems and v != self.remainder}
            self.steps.append(Step(backend, MIX, keep, "_rest", label=label))
        timing = shared_timing([b for _, b in members])
        self.sample_rate, self.channels, self.window, self.overlap = timing

    def with_quality(self, quality: Quality) -> Backend:
        """The ensemble with each member at ``quality`` (the loaded weights are shared).

        Without it the engine's level stopped here: a member with levels (Spleeter, and the
        cascade and recipes over it) ran at its loaded one, Deezer's pipeline, whatever was
        asked for."""
        members = [(step.label, tuned(step.backend, quality)) for step in self.steps]
        if all(b is step.backend for (_, b), step in zip(members, self.steps, strict=True)):
            return self
        return EnsembleBackend(members, self.stems, self.mode, self.weights)

    def separate(
        self, mix: np.ndarray, *, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Run each member once on ``mix`` (``(channels, samples)`` float32) and combine (the
        engine's path when some member takes windows).

        Returns:
            :attr:`stems` -> ``(channels, samples)`` float32, same shape as ``mix``.
        """
        estimates: dict[str, list[np.ndarray]] = {s: [] for s in self.stems}
        for i, step in enumerate(self.steps):
            for name, audio in run_step(step, mix, self.sample_rate, None).items():
                if name in estimates:
                    estimates[name].append(audio)
            if on_progress is not None:
                on_progress((i + 1) / len(self.steps))
        out = {
            s: combine(estimates[s], self.mode, self.weights)
            for s in self.stems
            if s != self.remainder
        }
        if self.remainder is not None:
            rest = mix - sum(out.values()) if out else mix
            out[self.remainder] = np.ascontiguousarray(rest, dtype=np.float32)
        return {s: out[s] for s in self.stems}


def load(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
) -> EnsembleBackend:
    """Load every member of ensemble ``spec`` (:func:`~demixer.models.recipe.load_members`)."""
    backends = load_members(spec, model_dir, model_path, device)
    members = [(m, backends[m]) for m in spec.requires]
    mode = str(spec.arch_params.get("mode", "avg"))
    return EnsembleBackend(members, spec.stems, mode, spec.arch_params.get("weights"))
