"""UVR's VR inference as PyPI audio-separator 0.47.1 implements it: the test oracle.

``audio_separator.separator.architectures.vr_separator`` imports pydub and audio-separator's
common separator (pydub, requests, ...) at module level, none of which the algorithm uses. So
its three methods that are the algorithm (``loading_mix``: the file read at each band's rate
and the bands' spectrograms stitched; ``inference_vr``: the network run window by window, the
mask and its aggression; ``spec_to_wav``: the bands turned back into a wave) are compiled from
the installed file, unchanged, onto a small class; ``spec_utils`` and the networks are
audio-separator's own modules, imported as they are. Nothing of audio-separator is copied here.

The networks come from UVR's ``nets.py`` (``determine_model_capacity``, the v5 models, by the
file size UVR would see) and ``nets_new.py`` (``CascadedNet``, v5.1).
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from demixer.models.vr import VrBackend, backend
from demixer.models.vr.network import VrNetwork, build
from demixer.models.vr.params import VrParams
from uvr_reference import _package_dir

__all__ = [
    "UvrVr",
    "demixer_vr",
    "layout_file",
    "ours_parts",
    "randomised",
    "reference_network",
]

_METHODS = ("loading_mix", "inference_vr", "spec_to_wav")


def _methods() -> dict[str, Any]:
    from audio_separator.separator.uvr_lib_v5 import spec_utils

    path = _package_dir() / "separator" / "architectures" / "vr_separator.py"
    tree = ast.parse(path.read_text("utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VRSeparator")
    body: list[ast.stmt] = [
        n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in _METHODS
    ]
    assert sorted(f.name for f in body) == sorted(_METHODS), f"{path} changed"
    import librosa  # the oracle's own dependency (the test venv has it)
    from tqdm import tqdm

    namespace: dict[str, Any] = {
        "np": np,
        "torch": torch,
        "librosa": librosa,
        "tqdm": tqdm,
        "spec_utils": spec_utils,
        "CommonSeparator": _Common,
    }
    module = ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))
    exec(compile(module, str(path), "exec"), namespace)
    return {name: namespace[name] for name in _METHODS}


class _Common:
    """What ``inference_vr`` reads of audio-separator's ``CommonSeparator``."""

    NON_ACCOM_STEMS = (
        "Vocals", "Other", "Bass", "Drums", "Guitar", "Piano", "Synthesizer", "Strings",
        "Woodwinds", "Brass", "Wind Inst",
    )  # fmt: skip


def reference_network(bins: int, kind: str, *, nout: int = 32, nout_lstm: int = 128) -> Any:
    """UVR's network for ``bins`` bins: ``kind`` a v5 architecture size (``"123821"``: UVR's
    ``determine_model_capacity`` by the file's KiB) or ``"v5.1"`` (``CascadedNet``)."""
    from audio_separator.separator.uvr_lib_v5.vr_network import nets, nets_new

    if kind == "v5.1":
        return nets_new.CascadedNet(bins * 2, 56817, nout=nout, nout_lstm=nout_lstm)
    return nets.determine_model_capacity(bins * 2, int(kind))


def randomised(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``network`` with random weights and random batch-norm statistics (fresh ones are the
    identity), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("weight") and tensor.ndim == 1:  # batch norm's scale
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=generator))
            else:
                fan_in = max(1, tensor[0].numel())
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
    return network.eval()


class UvrVr:
    """audio-separator's ``VRSeparator`` algorithm for one network and one band layout file.

    Args:
        network: UVR's network (:func:`reference_network`), weights loaded, eval mode.
        layout: the band layout file (UVR's model parameters JSON).
        primary_stem: UVR's name of the mask's stem (``Instrumental``, ``Vocals``, ...).
        v51: whether the network is a v5.1 (``CascadedNet``) one.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        layout: Path,
        primary_stem: str,
        *,
        v51: bool,
        window_size: int = 512,
        aggression: int = 5,
        tta: bool = False,
        post_process: bool = False,
        post_process_threshold: float = 0.2,
        high_end_process: bool = False,
    ) -> None:
        from audio_separator.separator.uvr_lib_v5.vr_network.model_param_init import (
            ModelParameters,
        )

        methods = _methods()
        self._loading_mix = methods["loading_mix"]
        self._inference_vr = methods["inference_vr"]
        self._spec_to_wav = methods["spec_to_wav"]
        self.logger = logging.getLogger("uvr_vr_reference")
        self.model_params = ModelParameters(str(layout))
        self.model_run = network
        self.is_vr_51_model = v51
        self.primary_stem_name = primary_stem
        self.window_size = window_size
        self.batch_size = 1
        self.enable_tta = tta
        self.enable_post_process = post_process
        self.post_process_threshold = post_process_threshold
        self.high_end_process = high_end_process
        self.input_high_end = None
        self.input_high_end_h = None
        self.torch_device_mps = None
        self.wav_subtype = "FLOAT"
        self.aggressiveness = {
            "value": float(int(aggression) / 100),
            "split_bin": self.model_params.param["band"][1]["crop_stop"],
            "aggr_correction": self.model_params.param.get("aggr_correction"),
        }

    def separate(self, audio_file: Path) -> tuple[np.ndarray, np.ndarray]:
        """The primary and the secondary stem of ``audio_file`` (read at the top band's rate,
        as UVR reads it), ``(2, n)`` each, before audio-separator writes them."""
        self.audio_file_path = str(audio_file)
        with torch.no_grad():
            spec = self._loading_mix(self)
            y_spec, v_spec = self._inference_vr(self, spec, "cpu", self.aggressiveness)
        y_spec = np.nan_to_num(y_spec, nan=0.0, posinf=0.0, neginf=0.0)
        v_spec = np.nan_to_num(v_spec, nan=0.0, posinf=0.0, neginf=0.0)
        return self._spec_to_wav(self, y_spec), self._spec_to_wav(self, v_spec)


def layout_file(name: str) -> Path:
    """UVR's band layout ``name``, the JSON file demixer ships (and UVR reads)."""
    return Path(str(resources.files("demixer.models.vr") / "layouts" / f"{name}.json"))


def ours_parts(
    reference: torch.nn.Module, bins: int, params: Mapping[str, object], model_id: str = "test"
) -> tuple[VrNetwork, VrParams]:
    """demixer's network with ``reference``'s weights (eval mode), and ``params`` (a catalogue
    entry's ``arch_params``: one entry of UVR's model data and any settings) as demixer reads
    them."""
    network = build(reference.state_dict(), bins, source=model_id)
    network.load_state_dict(reference.state_dict())
    return network.eval(), VrParams.from_arch_params(dict(params), model_id=model_id)


def demixer_vr(
    reference: torch.nn.Module,
    bins: int,
    params: Mapping[str, object],
    *,
    stems: tuple[str, str] = ("primary", "secondary"),
    model_id: str = "test",
) -> VrBackend:
    """demixer's backend with ``reference``'s weights, as the engine loads it
    (:func:`demixer.models.vr.backend`: it streams on every layout but the reversed one)."""
    return backend(*ours_parts(reference, bins, params, model_id), stems=stems)
