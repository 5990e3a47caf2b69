"""MSST checkpoints: tensors only, and a clear answer when they do not fit their config.

A checkpoint is read with ``torch.load(weights_only=True)``: plain containers and tensors, never
an arbitrary pickled object, so a file cannot run code even before (or without) a checksum.
Accepted layouts are the ones MSST's inference accepts: a bare ``state_dict``, or one under
``state``, ``state_dict`` or ``model_state_dict`` (unwrapped in that order, as MSST does). Also
what other training code writes and MSST itself does not take: a ``state_dict`` under
``model``, and every key prefixed ``module.`` (saved from ``DataParallel``), ``_orig_mod.``
(from a ``torch.compile``-d network) or ``model.`` (a Lightning module holding the network as
``self.model``), in any combination.

And a checkpoint saved by demucs' own training (``demucs.states.serialize_model``: the network's
class and arguments beside its weights under ``state``), as inagoy's DrumSep release asset for
MSST's htdemucs type is: the classes such a file names (:data:`STAND_INS`: demucs' networks,
``fractions.Fraction``) are read as inert stand-ins, never imported or called, and the weights
under ``state`` are taken. And the version string torch writes as
``torch.torch_version.TorchVersion`` (a ``str`` subclass; the Apollo authors' ``serialize``
records ``torch.__version__`` beside the weights, under ``infos``), read as that string. A file
naming any other class is still refused unread.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from demixer.errors import CheckpointMismatch, ModelUnavailable
from demixer.models.arch import CHECKPOINT_MARKS, checkpoint_arch
from demixer.models.loading import unpickling_detail

__all__ = ["STAND_INS", "check_fit", "describe_mismatch", "load_weights", "read_state_dict"]

_WRAPPERS = ("state", "state_dict", "model_state_dict", "model")
#: what wrappers of a network put before its parameters' names (see the module docstring)
_PREFIXES = ("module.", "_orig_mod.", "model.")
_SHOWN = 4  # names listed per kind of mismatch
#: the classes a checkpoint saved by demucs' training names beside its weights (the network's
#: class; a segment as a Fraction), read as :class:`_StandIn`: nothing of theirs runs
STAND_INS = frozenset(
    {"demucs.demucs.Demucs", "demucs.hdemucs.HDemucs", "demucs.htdemucs.HTDemucs"}
    | {"fractions.Fraction"}
)


class _StandIn:
    """What a :data:`STAND_INS` class is read as: takes any arguments or state, keeps none."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        del args, kwargs

    def __setstate__(self, state: object) -> None:
        del state


#: every class a checkpoint may name, and what it is read as: the :data:`STAND_INS` as
#: :class:`_StandIn`; torch's version string (a ``str`` subclass) as itself
_READ_AS: dict[str, type] = {name: _StandIn for name in STAND_INS} | {
    "torch.torch_version.TorchVersion": torch.torch_version.TorchVersion
}


def _load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, the :data:`STAND_INS` a file names read as
    :class:`_StandIn` and torch's version string as itself (any other class still fails it,
    and torch's error names that one)."""
    try:
        return _load_tensors(path)
    except pickle.UnpicklingError:
        try:
            named = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # not a file torch can list: the first error says what is wrong
            named = set()
        allowed: list[Any] = [(_READ_AS[name], name) for name in sorted(named & set(_READ_AS))]
        if not allowed:
            raise
        with torch.serialization.safe_globals(allowed):
            return _load_tensors(path)


def _load_tensors(path: Path) -> Any:
    if path.suffix.lower() == ".safetensors":
        raise ModelUnavailable(
            f"cannot read checkpoint {path}: safetensors files are not read; give the "
            "model's .ckpt or .pth (torch.save) file"
        )
    # torch's own warnings (e.g. an unusual pickle protocol) say nothing a user can act on:
    # what is wrong with a file is said in the error below.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            # mmap: the tensors are copied once, into the network, not read into memory first.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
        return torch.load(path, map_location="cpu", weights_only=True)  # a pre-1.6 file


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The parameter tensors stored in the checkpoint at ``path``.

    Raises:
        ModelUnavailable: the file is unreadable, not a torch checkpoint, holds objects other
            than tensors and plain containers, or holds no mapping of names to tensors.
    """
    try:
        obj = _load(Path(path))
    except pickle.UnpicklingError as exc:
        detail = unpickling_detail(str(exc))
        if "GLOBAL" not in detail:
            reason = _not_torch(Path(path)) or detail
            raise ModelUnavailable(f"cannot read checkpoint {path}: {reason}") from None
        raise ModelUnavailable(
            f"{path} holds more than tensors ({detail}); demixer loads checkpoints with "
            "weights_only=True and will not unpickle arbitrary objects: if you trust the file, "
            "save its network's state_dict alone (torch.save(model.state_dict(), PATH))"
        ) from None
    except FileNotFoundError:
        raise ModelUnavailable(f"checkpoint {path} does not exist") from None
    except ModelUnavailable:
        raise
    except Exception as exc:  # a corrupt zip or pickle: translate at this boundary
        reason = _not_torch(Path(path)) or f"{type(exc).__name__}: {exc}"
        raise ModelUnavailable(f"cannot read checkpoint {path}: {reason}") from None
    for key in _WRAPPERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelUnavailable(f"{path} holds no state_dict (a mapping of names to tensors)")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ModelUnavailable(
            f"{path} is not a state_dict: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} "
            f"that are not tensors ({', '.join(bad[:_SHOWN])})"
        )
    state: dict[str, torch.Tensor] = dict(obj)
    prefix = _shared_prefix(state)
    while prefix:  # DataParallel of a compiled network: "module._orig_mod.layers..."
        state = {k.removeprefix(prefix): v for k, v in state.items()}
        prefix = _shared_prefix(state)
    return state


def _shared_prefix(state: Mapping[str, torch.Tensor]) -> str | None:
    """The wrapper's prefix (:data:`_PREFIXES`) that every key of ``state`` starts with."""
    return next((p for p in _PREFIXES if all(k.startswith(p) for k in state)), None)


def _not_torch(path: Path) -> str | None:
    """Why ``path`` cannot be a ``torch.save`` file at all, judged by its first bytes (None
    when it might be one: a zip archive, torch 1.6 and later, or a pickle, older torch)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        return None
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return None
    return (
        "it is not a PyTorch checkpoint (neither the zip archive nor the pickle torch.save "
        "writes); is it the right file?"
    )


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def describe_mismatch(network: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """None when ``state`` has exactly ``network``'s keys and shapes, else what differs."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), checkpoint vs config: {_listing(shapes)}")
    return "; ".join(parts) or None


def load_weights(
    network: nn.Module, state: Mapping[str, torch.Tensor], *, checkpoint: str, config: str
) -> None:
    """Copy ``state`` into ``network`` (strictly).

    Raises:
        CheckpointMismatch: the keys or shapes differ; the message names the first few of each
            kind with their counts, and both files.
    """
    check_fit(network, state, checkpoint=checkpoint, config=config)
    network.load_state_dict(state, strict=True)  # copies (and casts a float16 checkpoint)


def check_fit(
    network: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    checkpoint: str,
    config: str,
    arch: str | None = None,
) -> None:
    """Raise :class:`CheckpointMismatch` as :func:`load_weights` does, copying nothing
    (``network`` may be on the meta device: its shapes alone). With ``arch`` (the one asked
    for), a checkpoint of a look-alike architecture (:data:`CHECKPOINT_MARKS`) is named as
    such."""
    problem = describe_mismatch(network, state)
    if problem is not None:
        other = checkpoint_arch(arch, state) if arch else None
        advice = (
            f"It is a checkpoint of {other} (it has {CHECKPOINT_MARKS[other]}): run it with "
            f"--arch {other}."
            if other
            else "Are they from the same model?"
        )
        raise CheckpointMismatch(
            f"checkpoint {checkpoint} does not fit the network config {config} describes: "
            f"{problem}. {advice}"
        )
