"""UVR's MDX-Net inference as PyPI audio-separator 0.47.1 implements it: the test oracle.

``audio_separator.separator.architectures.mdx_separator`` imports librosa, pydub, onnx2torch
and more at module level, none of which the demix loop uses. So the three methods that are the
algorithm (``initialize_model_settings``, ``demix``, ``run_model``) are compiled from the
installed file, unchanged, onto a small class, and its ``STFT`` class from its own file (with
the one device helper it imports, from its file). Nothing of audio-separator is copied here.

Versus UVR itself, audio-separator's ``separate`` also scales the input by its peak and leaves
the primary stem without ``compensate``; UVR does neither (``source * compensate``,
``secondary = mix - source``), and demixer follows UVR, so tests compare demixer's stem with
``compensate * demix(mix)`` here.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["AUDIO_SEPARATOR_VERSION", "UvrMdx", "uvr_default_overlap"]

AUDIO_SEPARATOR_VERSION = "0.47.1"
_METHODS = ("initialize_model_settings", "demix", "run_model")


def _package_dir() -> Path:
    spec = importlib.util.find_spec("audio_separator")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"audio-separator is not installed: `pip install --no-deps "
            f"audio-separator=={AUDIO_SEPARATOR_VERSION}` (make install does)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _exec_file(path: Path, namespace: dict[str, Any], names: tuple[str, ...] = ()) -> None:
    """Run ``path``'s top-level statements (only the functions ``names``, when given, of its
    class ``MDXSeparator``) in ``namespace``, leaving out its ``from audio_separator ...``
    imports: the names they bring in are put in ``namespace`` beforehand."""
    tree = ast.parse(path.read_text("utf-8"))
    body: list[ast.stmt] = [
        node
        for node in tree.body
        if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("audio_sep"))
    ]
    if names:
        cls = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == "MDXSeparator")
        body = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in names]
        assert sorted(f.name for f in body) == sorted(names), f"{path} changed"
    module = ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))
    exec(compile(module, str(path), "exec"), namespace)


def _load_methods() -> dict[str, Any]:
    root = _package_dir() / "separator"
    devices: dict[str, Any] = {}
    _exec_file(root / "uvr_lib_v5" / "device_utils.py", devices)
    stft: dict[str, Any] = {
        "should_fallback_to_cpu_for_complex_ops": devices["should_fallback_to_cpu_for_complex_ops"]
    }
    _exec_file(root / "uvr_lib_v5" / "stft.py", stft)
    namespace: dict[str, Any] = {
        "np": np,
        "torch": torch,
        "STFT": stft["STFT"],
        "tqdm": lambda iterable, *a, **k: iterable,
    }
    _exec_file(root / "architectures" / "mdx_separator.py", namespace, _METHODS)
    return {name: namespace[name] for name in _METHODS}


_methods: dict[str, Any] | None = None


def uvr_default_overlap(n_fft: int, chunk: int) -> float:
    """The overlap fraction for which audio-separator's step equals UVR's default,
    ``chunk - n_fft`` (its ``int((1 - overlap) * chunk)`` with half a sample to spare)."""
    overlap = (n_fft - 0.5) / chunk
    assert int((1 - overlap) * chunk) == chunk - n_fft
    return overlap


class UvrMdx:
    """audio-separator's MDXSeparator, reduced to its inference loop.

    Args:
        model_path: the ``.onnx`` file, run by onnxruntime as audio-separator runs it.
        dim_f, n_fft, hop_length, segment_size: the model's parameters.
        overlap: audio-separator's overlap fraction (see :func:`uvr_default_overlap`).
        denoise: audio-separator's ``enable_denoise``.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        dim_f: int,
        n_fft: int,
        segment_size: int,
        overlap: float,
        hop_length: int = 1024,
        denoise: bool = False,
    ) -> None:
        global _methods
        import onnxruntime as ort

        _methods = _methods or _load_methods()
        self._m = _methods
        self.logger = logging.getLogger("uvr_reference")
        self.dim_f, self.n_fft, self.hop_length = dim_f, n_fft, hop_length
        self.segment_size, self.overlap, self.batch_size = segment_size, overlap, 1
        self.enable_denoise = denoise
        self.torch_device = torch.device("cpu")
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        self.model_run = lambda spek: session.run(None, {"input": spek.cpu().numpy()})[0]

    def initialize_model_settings(self) -> None:
        self._m["initialize_model_settings"](self)

    def run_model(self, mix: Any, is_match_mix: bool = False) -> Any:
        return self._m["run_model"](self, mix, is_match_mix=is_match_mix)

    def demix(self, mix: np.ndarray) -> np.ndarray:
        """``(2, samples)`` float32 -> the network's ``(2, samples)`` output, uncompensated."""
        with warnings.catch_warnings():
            # Its own deprecation and 0/0 warnings (the divider is 0 in the dropped padding).
            warnings.simplefilter("ignore")
            out: np.ndarray = self._m["demix"](self, mix)
        return out
