"""Opening an MDX-Net ONNX file with onnxruntime, and checking it is the network it claims to be.

An MDX-Net network maps one float32 tensor ``(batch, 4, dim_f, frames)`` to another of the same
shape. The file's declared input shape is checked against the registry's ``dim_f`` and
``segment_size`` before anything runs, so a wrong pairing of file and parameters is refused at
load time with both shapes named, instead of failing (or worse, running) on the first song.

UVR runs models trained with 512 frames at 256 (its default segment size) by converting them to
PyTorch; here the file's time axis is declared free instead (with the ``onnx`` package), and a
trial run at load time proves the graph accepts the new length. A file whose time axis is free
already gets the same trial run (one chunk of silence) at ``segment_size``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from demixer.errors import CheckpointMismatch, ModelFailed, ModelUnavailable
from demixer.models.mdx_net.params import MdxParams

__all__ = ["OnnxNetwork"]

log = logging.getLogger(__name__)

_ORT_MISSING = "MDX-Net models run on onnxruntime: `pip install onnxruntime`"


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # an optional piece missing from a slim install
        raise ModelUnavailable(f"cannot import onnxruntime ({exc}); {_ORT_MISSING}") from exc
    return onnxruntime


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _free_time_axis(path: Path) -> bytes:
    """The model at ``path`` with its input's and output's last axis declared free."""
    try:
        import onnx
    except ImportError as exc:
        raise ModelUnavailable(
            f"running {path} at another segment size than its file declares needs the "
            f"`onnx` package ({exc}); install it or set segment_size to the file's frame count"
        ) from exc
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[3].dim_param = "frames"
    # Intermediate shapes recorded at export would contradict the new length: drop them.
    del model.graph.value_info[:]
    data: bytes = model.SerializeToString()
    return data


def _providers(ort: Any, device: str) -> list[Any]:
    """CUDA where asked for and available (the onnxruntime-gpu build), else the CPU."""
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if device.startswith("cuda"):
        log.warning("onnxruntime has no CUDA provider here: the MDX-Net network runs on the CPU")
    return ["CPUExecutionProvider"]


class OnnxNetwork:
    """An MDX-Net network in an onnxruntime session.

    Args:
        path: the ``.onnx`` file.
        params: the model's parameters (the input shape is checked against them).
        device: ``cpu`` or ``cuda[:N]`` (CUDA needs the onnxruntime-gpu build).
        threads: intra-op threads (None: torch's setting, which follows ``DEMIXER_THREADS`` /
            ``worker --threads`` through ``OMP_NUM_THREADS``).

    Attributes:
        max_batch: the largest batch the file accepts (its batch axis may be fixed at 1).

    Raises:
        ModelUnavailable: onnxruntime is missing, or the file is not a model it can load.
        CheckpointMismatch: the model's inputs and outputs are not MDX-Net's for ``params``
            (the same code as an MSST checkpoint that does not fit its config), or it does not
            run at ``params.segment_size`` frames.
    """

    def __init__(
        self, path: Path, params: MdxParams, *, device: str = "cpu", threads: int | None = None
    ) -> None:
        ort = _import_ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # One operator at a time, each on every thread: the graph is a chain of large convs.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT's warnings go to stderr otherwise
        self.path = path
        self._params = params
        try:
            session = ort.InferenceSession(str(path), options, providers=_providers(ort, device))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/...: translate here
            raise ModelUnavailable(
                f"{path} is not an ONNX model onnxruntime can load: {_first_line(exc)}"
            ) from exc
        frames = self._check_signature(session)
        if frames == params.segment_size:
            self._session, self._input = session, session.get_inputs()[0].name
            return
        # A free time axis, or a fixed one freed here: which lengths the graph (its U-Net halves
        # the frames at each level) takes, only a run tells. One chunk of silence, at load time.
        fix = "give the segment_size it was made for (UVR's default: 256)"
        try:
            if frames is not None:
                log.info(
                    "running %s at %d frames (file: %d)", path.name, params.segment_size, frames
                )
                fix = f"it is built for {frames}: set segment_size to {frames}"
                freed = _free_time_axis(path)
                session = ort.InferenceSession(freed, options, providers=_providers(ort, device))
            self._session, self._input = session, session.get_inputs()[0].name
            silence = np.zeros((1, 4, params.dim_f, params.segment_size), np.float32)
            session.run(None, {self._input: silence})
        except ModelUnavailable:  # the `onnx` package missing: its own message
            raise
        except Exception as exc:  # onnxruntime's own errors: translated here
            raise CheckpointMismatch(
                f"{path} does not run at segment_size {params.segment_size} frames per "
                f"chunk ({_first_line(exc)}); {fix}"
            ) from None

    def _check_signature(self, session: Any) -> int | None:
        """Check the file's one input and output; return its fixed frame count (None: free)."""
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise CheckpointMismatch(
                f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; an "
                "MDX-Net model has one of each"
            )
        p = self._params
        expected = ["batch", 4, p.dim_f, p.dim_t]
        for role, value in (("input", inputs[0]), ("output", outputs[0])):
            shape = list(value.shape)
            fits = len(shape) == 4 and all(
                not isinstance(got, int) or got == want
                for got, want in zip(shape[1:], expected[1:], strict=True)
            )
            if value.type != "tensor(float)" or not fits:
                raise CheckpointMismatch(
                    f"{self.path}: its {role} is {value.type} {shape}, but the model's "
                    f"arch_params (dim_f={p.dim_f}, dim_t={p.dim_t}) need float32 {expected}; "
                    "the file and the parameters do not belong together"
                )
        batch = inputs[0].shape[0]
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else 1 << 16
        frames = inputs[0].shape[3]
        return frames if isinstance(frames, int) else None

    def __call__(self, spec: np.ndarray) -> np.ndarray:
        """Run the network: ``(batch, 4, dim_f, frames)`` float32 -> the same shape.

        Raises:
            ModelFailed: onnxruntime raised (out of memory, a bad graph).
        """
        try:
            out = self._session.run(None, {self._input: np.ascontiguousarray(spec)})[0]
        except Exception as exc:
            raise ModelFailed(f"{self.path.name} failed: {_first_line(exc)}") from exc
        return np.asarray(out, dtype=np.float32)
