"""Meta's Demucs models (``htdemucs``, ``htdemucs_ft``, ``htdemucs_6s``, ``hdemucs_mmi``).

The networks, their checkpoint format and the segment-wise inference are the ``demucs`` package's
own (``demucs.states.load_model``, ``demucs.apply.apply_model``, ``BagOfModels``); this module
adds weight verification, demixer's errors and the :class:`~demixer.models.base.Backend` shape.

Only the torch-only parts of demucs are imported. ``demucs.audio``, ``demucs.api`` and
``demucs.separate`` need torchaudio, which demixer neither has nor wants, and are never touched.

Checkpoints are pickles of demucs classes, so they are read with ``torch.load(weights_only=False)``
-- for registered weights only after every file's SHA-256 matched its pin (see
:mod:`demixer.models.download` for what a pin is). A ``model_path`` the user passes is not
checked against anything: it is trusted exactly like any pickle the user chooses to open.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import math
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from demixer.errors import ModelFailed, ModelUnavailable
from demixer.models.base import Backend
from demixer.models.download import verify_pin
from demixer.models.loading import damaged_remedy, no_random_fill, resolve_weight
from demixer.models.quality import Quality
from demixer.models.registry import ModelSpec

__all__ = [
    "OVERLAP_SECONDS",
    "WINDOW_SECONDS",
    "DemucsApi",
    "DemucsBackend",
    "import_demucs",
    "load",
    "openunmix_without_init",
]

# The engine's window: long enough that demucs' own 7.8 s segments (44 s for hdemucs_mmi, the
# segment its bag yaml sets) are blended inside it, short enough to bound memory.
WINDOW_SECONDS = 44.0
# Cross-fade between the engine's windows; demucs blends its own segments inside a window.
OVERLAP_SECONDS = 1.0
# demucs' default overlap between its segments, used by its CLI and its published scores.
_SEGMENT_OVERLAP = 0.25
#: The ``best`` quality level's passes: demucs' "shift trick" (``--shifts``), each pass the
#: window delayed by a part of demucs' half-second range, at fixed delays rather than random
#: ones, so that the same input always gives the same stems.
BEST_SHIFTS = 4

_DEMUCS_MISSING = (
    "the Demucs models need the `demucs` package without its torchaudio requirement: "
    "`pip install --no-deps demucs==4.0.1 openunmix==1.3.0` and `pip install 'demixer[demucs]'`"
)


@dataclass(frozen=True)
class _BagLayout:
    """What a model's bag yaml in ``demucs/remote/`` says, so no yaml is downloaded.

    Attributes:
        weights: per model, per stem weight (None: every model counts equally for every stem).
        segment: seconds per demucs segment, overriding the checkpoint's own (None: keep it).
    """

    weights: list[list[float]] | None = None
    segment: float | None = None


_BAGS: dict[str, _BagLayout] = {
    # htdemucs_ft.yaml: model i (in registry order) alone gives stem i.
    "htdemucs_ft": _BagLayout(weights=[[float(i == j) for j in range(4)] for i in range(4)]),
    # hdemucs_mmi.yaml: `segment: 44`.
    "hdemucs_mmi": _BagLayout(segment=44.0),
}


class DemucsApi(NamedTuple):
    """The three demucs entry points demixer uses (see :func:`import_demucs`)."""

    apply_model: Any
    bag_of_models: Any
    load_model: Any


_import_lock = threading.Lock()
_api: DemucsApi | None = None


@contextmanager
def openunmix_without_init() -> Iterator[None]:
    """Let ``from openunmix.filtering import wiener`` run without ``openunmix/__init__.py``.

    demucs' ``hdemucs`` and ``htdemucs`` import Open-Unmix's Wiener filter, but the package's
    ``__init__`` imports ``openunmix.utils``, which imports torchaudio. While demucs is imported,
    ``openunmix`` is a bare package module whose ``__path__`` is the installed directory, so only
    ``openunmix/filtering.py`` (pure torch) executes. Afterwards both entries are taken out of
    ``sys.modules`` again (demucs keeps its reference to ``wiener``), so a later real
    ``import openunmix`` in an environment that has torchaudio still gets the whole package.
    """
    if "openunmix" in sys.modules:  # already imported (for real or by us): nothing to do
        yield
        return
    spec = importlib.util.find_spec("openunmix")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"the `openunmix` package is not installed; {_DEMUCS_MISSING}")
    stub = types.ModuleType("openunmix", "Bare stand-in so only openunmix.filtering runs.")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["openunmix"] = stub
    try:
        yield
    finally:
        if sys.modules.get("openunmix") is stub:
            del sys.modules["openunmix"]
            sys.modules.pop("openunmix.filtering", None)


def import_demucs() -> DemucsApi:
    """Import the torch-only parts of demucs once; raises :class:`ModelUnavailable` if absent."""
    global _api
    with _import_lock:
        if _api is None:
            if importlib.util.find_spec("demucs") is None:
                raise ModelUnavailable(f"the `demucs` package is not installed; {_DEMUCS_MISSING}")
            try:
                with openunmix_without_init():
                    apply = importlib.import_module("demucs.apply")
                    states = importlib.import_module("demucs.states")
            except ImportError as exc:
                raise ModelUnavailable(
                    f"importing demucs failed ({exc}); {_DEMUCS_MISSING}"
                ) from exc
            _api = DemucsApi(apply.apply_model, apply.BagOfModels, states.load_model)
        return _api


class DemucsBackend:
    """A loaded Demucs model or bag of models, ready to split windows.

    Attributes:
        model_id: the registered id it was loaded for.
        sample_rate: Hz (44100 for every published Demucs model).
        channels: 2.
        stems: the checkpoint's sources, in its order.
        window: samples per engine window (:data:`WINDOW_SECONDS`).
        overlap: samples shared by consecutive windows (:data:`OVERLAP_SECONDS`).
    """

    def __init__(self, model: Any, api: DemucsApi, *, model_id: str, device: torch.device):
        self.model_id = model_id
        self.sample_rate = int(model.samplerate)
        self.channels = int(model.audio_channels)
        self.stems = tuple(str(source) for source in model.sources)
        self.window = int(WINDOW_SECONDS * self.sample_rate)
        self.overlap = int(OVERLAP_SECONDS * self.sample_rate)
        self._model = model
        self._apply_model = api.apply_model
        self._device = device
        self.shifts = 0

    def with_quality(self, quality: Quality) -> DemucsBackend:
        """The backend at ``quality`` (:class:`~demixer.models.quality.Tunable`), sharing the
        loaded model: ``fast`` and ``balanced`` run each window once; ``best`` runs it
        :data:`BEST_SHIFTS` times, delayed by 0, 1/4, 1/2 and 3/4 of demucs' half-second shift
        range, and averages the passes (demucs' ``--shifts 4`` with those delays for its random
        ones): four times the work."""
        shifts = BEST_SHIFTS if quality == "best" else 0
        if shifts == self.shifts:
            return self
        tuned = copy.copy(self)
        tuned.shifts = shifts
        return tuned

    def separate(
        self, mix: np.ndarray, *, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Split one window; ``on_progress`` gets the fraction done after each demucs segment.

        The window is normalised as demucs' CLI does a whole track (subtract the mean of the
        mono mix, divide by its standard deviation, undo both on every stem); demixer does it per
        window because the engine hands the backend one window at a time. Inside the window
        demucs runs its own segments with 25 % overlap, blended with its triangular weights, and
        without the random "shift trick", which the ``best`` level runs at fixed delays
        (:meth:`with_quality`), so that the same input always gives the same output.

        Args:
            mix: ``(channels, samples)`` float32 at ``sample_rate``.

        Returns:
            stem name -> ``(channels, samples)`` float32, same length as ``mix``.

        Raises:
            ValueError: ``mix`` is not ``(channels, samples)``.
            ModelFailed: the model raised.
        """
        if mix.ndim != 2 or mix.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, samples) audio, got shape {mix.shape}")
        samples = mix.shape[1]
        if samples == 0:
            return {stem: np.zeros((self.channels, 0), np.float32) for stem in self.stems}
        try:
            with torch.inference_mode():
                wav = torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32))
                ref = wav.mean(0)
                center = float(ref.mean())
                scale = float(ref.std()) if samples > 1 else 0.0
                # Silence (or one sample) has no usable spread: leave its level alone.
                if not math.isfinite(scale) or scale < 1e-8:
                    scale = 1.0
                wav = (wav - center) / scale
                out = self._shifted(wav, on_progress)
                out = out * scale + center
                stems = out.to("cpu", torch.float32).numpy()
        except Exception as exc:
            raise ModelFailed(f"Demucs model {self.model_id!r} failed: {exc!r}") from exc
        return {stem: np.ascontiguousarray(stems[i]) for i, stem in enumerate(self.stems)}

    def _shifted(
        self, wav: torch.Tensor, on_progress: Callable[[float], None] | None
    ) -> torch.Tensor:
        """demucs' ``apply_model`` on one normalised window, once per shift (:attr:`shifts`,
        none: once as it is), averaged. As demucs' shift trick: a pass delayed by ``d`` samples
        is the window after ``d`` zeros, its output from sample ``d`` on."""
        passes = self.shifts or 1
        models = len(getattr(self._model, "models", [None]))
        pool = _CountingPool(models * passes, on_progress)
        max_shift = int(0.5 * self.sample_rate)
        out: torch.Tensor | None = None
        for k in range(passes):
            delay = max_shift - k * max_shift // passes if self.shifts else 0
            shifted = torch.nn.functional.pad(wav, (delay, 0))
            y = self._apply_model(
                self._model,
                shifted[None],
                shifts=0,
                split=True,
                overlap=_SEGMENT_OVERLAP,
                progress=False,
                device=self._device,
                pool=pool,
            )[0][..., delay:]
            out = y if out is None else out + y
        assert out is not None
        return out / passes if passes > 1 else out


class _CountingPool:
    """demucs' own lazy pool (a segment runs when its result is asked for), counting segments
    for progress. demucs submits every segment of one model before it asks for any result, and
    a bag's models run one after the other: each such round is ``1 / rounds`` of the window.
    """

    def __init__(self, rounds: int, on_progress: Callable[[float], None] | None) -> None:
        self.rounds = max(1, rounds)
        self.on_progress = on_progress
        self.round = -1
        self.submitted = 0
        self.done = 0

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> _Lazy:
        if self.done == self.submitted:  # the previous model's segments are all done
            self.round += 1
            self.submitted = self.done = 0
        self.submitted += 1
        return _Lazy(self, func, args, kwargs)

    def finished(self) -> None:
        self.done += 1
        if self.on_progress is not None:
            fraction = (self.round + self.done / self.submitted) / self.rounds
            self.on_progress(min(1.0, fraction))


class _Lazy:
    """One segment's work, run by :meth:`result` (demucs' ``DummyPoolExecutor`` does this)."""

    def __init__(
        self, pool: _CountingPool, func: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        self.pool, self.func, self.args, self.kwargs = pool, func, args, kwargs

    def result(self) -> Any:
        out = self.func(*self.args, **self.kwargs)
        self.pool.finished()
        return out


def _read_checkpoint(path: Path, api: DemucsApi) -> Any:
    """Build the model a demucs ``.th`` package describes (``{klass, args, kwargs, state}``)."""
    try:
        with warnings.catch_warnings():
            # load_model warns for every constructor argument the installed demucs dropped.
            warnings.simplefilter("ignore")
            package = torch.load(path, map_location="cpu", weights_only=False)
            state = package.get("state") if isinstance(package, dict) else None
            # demucs loads an unquantized state strictly: every parameter replaced.
            strict = isinstance(state, dict) and not state.get("__quantized")
            with no_random_fill() if strict else contextlib.nullcontext():
                return api.load_model(package)
    except (Exception, SystemExit) as exc:
        # SystemExit: demucs calls dora's fatal() for quantized checkpoints without diffq.
        raise ModelUnavailable(f"{path} is not a loadable Demucs checkpoint: {exc!r}") from exc


def _checkpoint_paths(
    spec: ModelSpec, model_dir: Path | None, model_path: Path | None
) -> list[Path]:
    """The files to load, every registered one verified against its pin before anything loads."""
    if model_path is not None:
        path = Path(model_path)
        if not path.is_file():
            raise ModelUnavailable(f"--model-path {path} is not a file")
        return [path]
    if not spec.weights:
        raise ModelUnavailable(f"model {spec.id!r} lists no weights; {spec.install_hint}")
    paths = [resolve_weight(spec, weight, model_dir) for weight in spec.weights]
    for path, weight in zip(paths, spec.weights, strict=True):
        verify_pin(path, weight.sha256, damaged_remedy(spec))
    return paths


def load(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
) -> Backend:
    """Load a registered Demucs model.

    Args:
        spec: its registry entry.
        model_dir: weights cache directory (default: ``$DEMIXER_MODEL_DIR`` or the user cache).
        model_path: one local demucs checkpoint (``.th``) to use instead of the registered
            weights. It is unpickled without any check: pass only files you trust.
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).

    Raises:
        ModelUnavailable: weights missing (the message says ``demixer models pull <id>``), the
            demucs package missing, a checkpoint that does not load, a device that is not there,
            or a checkpoint whose stems are not the ones the model declares.
        WeightsChecksumMismatch: a registered weights file does not match its pin.
    """
    paths = _checkpoint_paths(spec, model_dir, model_path)
    api = import_demucs()
    layout = _BAGS.get(spec.id, _BagLayout())
    models = [_read_checkpoint(path, api) for path in paths]
    weights = layout.weights if model_path is None else None
    try:
        bag = api.bag_of_models(models, weights, layout.segment)
    except (AssertionError, ValueError) as exc:
        raise ModelUnavailable(f"model {spec.id!r}: the checkpoints do not form a bag") from exc
    if set(bag.sources) != set(spec.stems):
        raise ModelUnavailable(
            f"the checkpoint produces stems {list(bag.sources)}, but model {spec.id!r} declares "
            f"{list(spec.stems)}"
        )
    try:
        target = torch.device(device)
        # Kept on the device: apply_model moves a bag's models back to where they were after
        # every call, which would copy the weights to the GPU and back for each window.
        bag.to(target).eval()
    except (RuntimeError, AssertionError) as exc:
        raise ModelUnavailable(f"cannot run model {spec.id!r} on {device!r}: {exc}") from exc
    return DemucsBackend(bag, api, model_id=spec.id, device=target)
