"""Ensembles: several models' estimates of the same stems, combined per stem.

An ensemble is named by its members and how it combines them: ``a+b`` (the average of the
waveforms), ``max:a+b`` / ``min:a+b`` (UVR's "max spec" / "min spec": per time-frequency bin,
the member estimate whose spectrogram magnitude is the largest / smallest, its phase with it),
``avg:a+b`` spelled out. :func:`ensemble_spec` turns such an id into a
:class:`~demixer.models.spec.ModelSpec` (the registry asks it for ids it does not know), so an
ensemble runs wherever a model id goes: the CLI, the API, a worker, the result cache.

Its stems are the ones every member makes (in demixer's names, :mod:`demixer.models.planner`).
Each member runs once per window; windows are the shortest of the members' windows, so memory
stays flat in the input's length. When the stems include ``instrumental`` (or else ``other``),
that one is the input minus the others, so the stems add up to the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from demixer.errors import UnknownModel, UnknownStem
from demixer.models.base import Backend
from demixer.models.cascade import MIX, Step, run_step, shared_timing
from demixer.models.catalogue.recipes import strictest
from demixer.models.planner import canonical_stems, produces
from demixer.models.recipe import load_members
from demixer.models.spec import ModelSpec

__all__ = ["LOADER", "MODES", "EnsembleBackend", "combine", "ensemble_id", "ensemble_spec", "load"]

LOADER = "demixer.models.ensemble:load"
MODES = ("avg", "max", "min")
_N_FFT, _HOP = 2048, 512  # UVR's spectrogram ensembles use the same 2048-point frames


def ensemble_id(members: Sequence[str], mode: str = "avg") -> str:
    """The id of the ensemble of ``members`` combined by ``mode`` (``a+b``, ``max:a+b``)."""
    joined = "+".join(members)
    return joined if mode == "avg" else f"{mode}:{joined}"


def _parse(model_id: str) -> tuple[str, list[str]] | None:
    mode, sep, rest = model_id.partition(":")
    if not sep:
        mode, rest = "avg", model_id
    members = rest.split("+")
    if mode not in MODES or len(members) < 2 or not all(members):
        return None
    return mode, members


def _remainder(stems: Sequence[str]) -> str | None:
    return next((s for s in ("instrumental", "other") if s in stems), None)


def ensemble_spec(model_id: str, lookup: Callable[[str], ModelSpec]) -> ModelSpec | None:
    """The spec of ensemble ``model_id``, or None when it is not an ensemble's id.

    Args:
        lookup: model id -> spec (raises for an unknown member: the error names it).

    Raises:
        UnknownModel: a member is named twice. UnknownStem: the members share no stem.
    """
    parsed = _parse(model_id)
    if parsed is None:
        return None
    mode, ids = parsed
    members = [lookup(m) for m in ids]
    twice = [m for i, m in enumerate(ids) if m in ids[:i]]
    if twice:
        raise UnknownModel(f"ensemble {model_id!r} names {twice[0]!r} twice")
    first = produces(members[0])
    stems = tuple(s for s in first if all(s in produces(m) for m in members[1:]))
    if not stems or stems == (_remainder(stems),):
        raise UnknownStem(
            f"{', '.join(ids)} share no stem to combine: "
            + "; ".join(f"{m.id} makes {', '.join(produces(m))}" for m in members)
        )
    how = {"avg": "average of the waveforms", "max": "max spec", "min": "min spec"}[mode]
    return ModelSpec(
        id=model_id,
        stems=stems,
        sample_rate=members[0].sample_rate,
        description=f"Ensemble of {', '.join(ids)} ({how}).",
        license="each model's own: " + ", ".join(f"{m.id} ({m.license_class})" for m in members),
        weights_source=f"the weights of {', '.join(ids)} (see their cards)",
        loader=LOADER,
        quality="not measured by demixer; see the members' cards",
        install_hint=f"fetch its models with `demixer models pull` ({', '.join(ids)})",
        requires=tuple(ids),
        arch_params={"mode": mode},
        license_class=strictest([m.license_class for m in members]),
        source_url=members[0].source_url,
    )


def combine(estimates: Sequence[np.ndarray], mode: str) -> np.ndarray:
    """One stem's estimates, combined.

    Args:
        estimates: each ``(channels, samples)`` float32, all the same shape.
        mode: ``avg`` (mean waveform), ``max`` / ``min`` (per STFT bin, the estimate with the
            largest / smallest magnitude; 2048-point Hann frames, hop 512).

    Returns:
        ``(channels, samples)`` float32.
    """
    if mode == "avg" or len(estimates) == 1:
        return np.asarray(np.mean(np.stack(estimates), axis=0), dtype=np.float32)
    import torch

    x = torch.from_numpy(np.stack(estimates).astype(np.float32))  # (members, channels, n)
    members, channels, n = x.shape
    if n < _N_FFT:  # too short for a frame: a sample-wise pick is what is left
        return np.asarray(_pick(list(x), [v.abs() for v in x], mode).numpy(), dtype=np.float32)
    window = torch.hann_window(_N_FFT)
    spec = torch.stft(
        x.reshape(-1, n), _N_FFT, _HOP, window=window, center=True, return_complex=True
    ).reshape(members, channels, _N_FFT // 2 + 1, -1)
    chosen = _pick(list(spec), [s.abs() for s in spec], mode)
    out = torch.istft(chosen, _N_FFT, _HOP, window=window, center=True, length=n)
    return out.numpy().astype(np.float32)


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


class EnsembleBackend:
    """Members run once per window, their estimates combined per stem.

    Attributes:
        sample_rate: the first member's rate (Hz); others are resampled to theirs and back.
        channels: 2 when any member is stereo.
        stems: the stems every member makes (demixer's names).
        window: the shortest member window, in samples at :attr:`sample_rate`.
        overlap: the longest member overlap, at most half the window (samples).
    """

    def __init__(
        self, members: Sequence[tuple[str, Backend]], stems: Sequence[str], mode: str
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.stems = tuple(stems)
        self._remainder = _remainder(self.stems)
        self._steps = []
        for label, backend in members:
            names = canonical_stems(backend.stems)
            keep = {k: v for k, v in names.items() if v in self.stems and v != self._remainder}
            self._steps.append(Step(backend, MIX, keep, "_rest", label=label))
        timing = shared_timing([b for _, b in members])
        self.sample_rate, self.channels, self.window, self.overlap = timing

    def separate(
        self, mix: np.ndarray, *, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Run each member once on ``mix`` (``(channels, samples)`` float32) and combine.

        Returns:
            :attr:`stems` -> ``(channels, samples)`` float32, same shape as ``mix``.
        """
        estimates: dict[str, list[np.ndarray]] = {s: [] for s in self.stems}
        for i, step in enumerate(self._steps):
            for name, audio in run_step(step, mix, self.sample_rate, None).items():
                if name in estimates:
                    estimates[name].append(audio)
            if on_progress is not None:
                on_progress((i + 1) / len(self._steps))
        out = {s: combine(estimates[s], self.mode) for s in self.stems if s != self._remainder}
        if self._remainder is not None:
            rest = mix - sum(out.values()) if out else mix
            out[self._remainder] = np.ascontiguousarray(rest, dtype=np.float32)
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
    return EnsembleBackend(members, spec.stems, str(spec.arch_params.get("mode", "avg")))
