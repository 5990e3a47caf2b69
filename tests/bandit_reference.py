"""MSST's ``bandit`` and ``bandit_v2`` networks, importable here: the oracles for demixer's
BandIt and Bandit v2.

MSST's modules import ``torchaudio`` (for its ``Spectrogram`` and ``InverseSpectrogram``
transforms, and ``functional`` for mel and triangular layouts neither published model uses) and
``pytorch_lightning`` (for a base class); BandIt's also ``spafe`` (for bark and ERB layouts).
None can be installed here (there is no CPU torchaudio for this torch; Lightning would pull a
training stack for one base class; spafe is not needed for the musical layout), so this module
stands in for them at the edge: the transforms are torchaudio's, written from its source
(``torchaudio/functional/functional.py``: ``spectrogram`` and ``inverse_spectrogram`` with
``normalized=True`` dividing by, then multiplying by, the window's L2 norm; the transforms
register their window as a buffer), ``LightningModule`` is ``torch.nn.Module``, which it
extends, and the layouts' helpers are names that are never called. BandIt's package
(``msst.models.bandit.core``) imports its whole training stack (torchmetrics, asteroid) when
imported; it is entered below its ``__init__``, at the network's modules. Everything else, the
networks, is MSST's own code, as installed from PyPI ``msst``.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msst.models
import torch
from torch import nn


class _Spectrogram(nn.Module):
    def __init__(
        self, n_fft: int = 400, win_length: int | None = None, hop_length: int | None = None,
        pad: int = 0, window_fn: Any = torch.hann_window, power: float | None = 2.0,
        normalized: bool = False, wkwargs: dict[str, Any] | None = None, center: bool = True,
        pad_mode: str = "reflect", onesided: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        assert pad == 0 and power is None and normalized in (True, False)
        self.n_fft = n_fft
        self.win_length = win_length if win_length is not None else n_fft
        self.hop_length = hop_length if hop_length is not None else self.win_length // 2
        window = window_fn(self.win_length, **(wkwargs or {}))
        self.register_buffer("window", window)
        self.normalized, self.center, self.pad_mode, self.onesided = (
            normalized, center, pad_mode, onesided
        )  # fmt: skip

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.size()
        spec = torch.stft(
            waveform.reshape(-1, shape[-1]), n_fft=self.n_fft, hop_length=self.hop_length,
            win_length=self.win_length, window=self.window, center=self.center,
            pad_mode=self.pad_mode, normalized=False, onesided=self.onesided,
            return_complex=True,
        )  # fmt: skip
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        if self.normalized:
            spec /= self.window.pow(2.0).sum().sqrt()
        return spec


class _InverseSpectrogram(_Spectrogram):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(power=None, **kwargs)

    def forward(self, spectrogram: torch.Tensor, length: int | None = None) -> torch.Tensor:  # type: ignore[override]
        if self.normalized:
            spectrogram = spectrogram * self.window.pow(2.0).sum().sqrt()
        shape = spectrogram.size()
        wave = torch.istft(
            spectrogram.reshape(-1, shape[-2], shape[-1]), n_fft=self.n_fft,
            hop_length=self.hop_length, win_length=self.win_length, window=self.window,
            center=self.center, normalized=False, onesided=self.onesided, length=length,
            return_complex=False,
        )  # fmt: skip
        return wave.reshape(shape[:-2] + wave.shape[-1:])


def _never_called(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a band layout the tests do not use")


def _stand_ins() -> dict[str, types.ModuleType]:
    audio = types.ModuleType("torchaudio")
    transforms = types.ModuleType("torchaudio.transforms")
    transforms.Spectrogram = _Spectrogram  # type: ignore[attr-defined]
    transforms.InverseSpectrogram = _InverseSpectrogram  # type: ignore[attr-defined]
    functional = types.ModuleType("torchaudio.functional")
    inner = types.ModuleType("torchaudio.functional.functional")
    inner._create_triangular_filterbank = _never_called  # type: ignore[attr-defined]
    functional.functional = inner  # type: ignore[attr-defined]
    audio.transforms = transforms  # type: ignore[attr-defined]
    audio.functional = functional  # type: ignore[attr-defined]
    lightning = types.ModuleType("pytorch_lightning")
    lightning.LightningModule = nn.Module  # type: ignore[attr-defined]
    spafe = types.ModuleType("spafe")
    fbanks = types.ModuleType("spafe.fbanks")
    fbanks.bark_fbanks = _never_called  # type: ignore[attr-defined]
    utils = types.ModuleType("spafe.utils")
    converters = types.ModuleType("spafe.utils.converters")
    for name in ("erb2hz", "hz2bark", "hz2erb"):
        setattr(converters, name, _never_called)
    # BandIt's package, entered below its __init__ (which imports the training stack)
    core = types.ModuleType("msst.models.bandit.core")
    core.__path__ = [str(Path(msst.models.__file__).parent / "bandit" / "core")]
    return {
        "torchaudio": audio, "torchaudio.transforms": transforms,
        "torchaudio.functional": functional, "torchaudio.functional.functional": inner,
        "pytorch_lightning": lightning, "spafe": spafe, "spafe.fbanks": fbanks,
        "spafe.utils": utils, "spafe.utils.converters": converters,
        "msst.models.bandit.core": core,
    }  # fmt: skip


def _import_with_stand_ins() -> tuple[type[nn.Module], type[nn.Module]]:
    """MSST's two networks, imported with the stand-ins in ``sys.modules`` for the import
    alone: their modules keep the names they bound, and no other test sees a torchaudio
    (demucs' import checks that none is loaded)."""
    stand_ins = _stand_ins()
    added = [name for name in stand_ins if name not in sys.modules]
    sys.modules.update({name: stand_ins[name] for name in added})
    try:
        from msst.models.bandit.core.model import MultiMaskMultiSourceBandSplitRNNSimple
        from msst.models.bandit_v2.bandit import Bandit as reference

        return MultiMaskMultiSourceBandSplitRNNSimple, reference
    finally:
        for name in added:
            del sys.modules[name]


#: MSST's BandIt class as MSST builds it, its band MLPs scripted (the speed benchmark's peer)
ScriptedBandIt, Bandit = _import_with_stand_ins()


@contextlib.contextmanager
def unscripted() -> Iterator[None]:
    """MSST's BandIt with its band MLPs left as the modules they are: it passes each one
    through ``torch.jit.script``, 2.5 s a network of 64 bands, and TorchScript runs the same
    layers (checked: the same keys, and outputs equal to the last bit, scripted or not)."""
    script = torch.jit.script
    torch.jit.script = lambda module, *args, **kwargs: module
    try:
        yield
    finally:
        torch.jit.script = script


def BandIt(**options: Any) -> nn.Module:
    """MSST's BandIt, built :func:`unscripted` (the tests' oracle)."""
    with unscripted():
        return ScriptedBandIt(**options)


__all__ = ["BandIt", "Bandit", "ScriptedBandIt", "unscripted"]
