"""Random-weight MDX-Net networks as ONNX files, built with the ``onnx`` package's helpers.

The graph follows KUIELab's ConvTDFNet (the network inside every UVR MDX-Net ``.onnx``):
a 1x1 conv from the 4 spectrogram channels to ``g``, then, on ``(channels, frames, bins)``, a
U-Net of TFC-TDF blocks (``layers`` 3x3 conv + ReLU layers, then a residual two-layer
"time-distributed" linear map over the bins with a ``bn``-fold bottleneck), 2x2 stride-2 convs
down (``g`` more channels per level), transposed convs up, skips multiplied in, and a final 1x1
conv back to 4 channels. Batch norms are folded into the convs, as the exported files have them.
Inputs and outputs are named ``input`` and ``output`` with shape ``(batch, 4, dim_f, dim_t)``,
the signature UVR and audio-separator feed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from demixer.models.registry import ModelSpec, WeightFile

__all__ = ["mdx_spec", "tfc_tdf_onnx"]


class _Graph:
    def __init__(self, rng: np.random.Generator, gain: float) -> None:
        self.rng = rng
        self.gain = gain
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def weight(self, shape: tuple[int, ...], fan_in: int, scale: float = 1.0) -> str:
        name = self.name("w")
        std = self.gain * scale * np.sqrt(2.0 / fan_in)
        value = (self.rng.standard_normal(shape) * std).astype(np.float32)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, *, stride: int = 1, pad: int = 0) -> str:
        w = self.weight((cout, cin, k, k), cin * k * k)
        b = self.weight((cout,), 1, 0.01)
        return self.node(
            "Conv", [x, w, b], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4
        )

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def tfc_tdf(self, x: str, c: int, f: int, layers: int, bn: int) -> str:
        for _ in range(layers):
            x = self.relu(self.conv(x, c, c, 3, pad=1))
        h = self.relu(self.node("MatMul", [x, self.weight((f, f // bn), f)]))
        h = self.relu(self.node("MatMul", [h, self.weight((f // bn, f), f // bn, 0.5)]))
        return self.node("Add", [x, h])


def tfc_tdf_onnx(
    path: Path,
    *,
    dim_f: int,
    dim_t: int | str,
    g: int = 4,
    levels: int = 1,
    layers: int = 1,
    bn: int = 2,
    batch: int | str = "batch",
    seed: int = 0,
    gain: float = 1.0,
    bake_frames: bool = False,
) -> Path:
    """Write a random ConvTDFNet-shaped MDX-Net to ``path`` and return it.

    Args:
        dim_f: bins (divisible by ``2 ** levels``).
        dim_t: frames, or a name to leave the time axis free.
        g: channels added per level (48 is about Kim_Vocal_2's size: ~16 M weights).
        levels: down/up-sampling levels (5 in the published models).
        layers: conv layers per TFC block (KUIELab's ``l``; 3 in the published models).
        bn: bottleneck factor of the TDF linear maps (8 in the published models).
        batch: the batch axis: a name (free) or a fixed size.
        seed: weights' random seed.
        gain: scale on every weight's He-normal standard deviation.
        bake_frames: end with a Reshape to a constant shape holding ``dim_t``, as an export
            that traced its sizes would: the graph then runs at no other length.
    """
    graph = _Graph(np.random.default_rng(seed), gain)
    x = graph.relu(graph.conv("input", 4, g, 1))
    x = graph.node("Transpose", [x], perm=[0, 1, 3, 2])  # (batch, c, frames, bins)
    c, f = g, dim_f
    skips = []
    for _ in range(levels):
        x = graph.tfc_tdf(x, c, f, layers, bn)
        skips.append(x)
        x = graph.relu(graph.conv(x, c, c + g, 2, stride=2))
        c, f = c + g, f // 2
    x = graph.tfc_tdf(x, c, f, layers, bn)
    for skip in reversed(skips):
        w = graph.weight((c, c - g, 2, 2), c)
        x = graph.relu(graph.node("ConvTranspose", [x, w], kernel_shape=[2, 2], strides=[2, 2]))
        c, f = c - g, f * 2
        x = graph.node("Mul", [x, skip])
        x = graph.tfc_tdf(x, c, f, layers, bn)
    x = graph.node("Transpose", [x], perm=[0, 1, 3, 2])
    final = graph.conv(x, c, 4, 1)
    if bake_frames:
        shape_name = graph.name("shape")
        fixed = np.array([0, 4, dim_f, dim_t], np.int64)
        graph.inits.append(numpy_helper.from_array(fixed, shape_name))
        final = graph.node("Reshape", [final, shape_name])
    graph.nodes.append(helper.make_node("Identity", [final], ["output"]))
    shape = [batch, 4, dim_f, dim_t]
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "mdx_net",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
            graph.inits,
        ),
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="demixer-tests",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mdx_spec(
    model_id: str, arch_params: dict[str, Any], weights: tuple[WeightFile, ...] = ()
) -> ModelSpec:
    """A registry entry (not registered) for a one-stem ("vocals") random MDX-Net."""
    return ModelSpec(
        id=model_id,
        stems=("vocals",),
        sample_rate=44100,
        description="random-weight MDX-Net (tests/mdx_onnx.py)",
        license="none",
        weights_source="tests/mdx_onnx.py",
        loader="demixer.models.mdx_net:load",
        quality="none",
        install_hint="built by the test or benchmark",
        weights=weights,
        arch="mdx_net",
        arch_params=arch_params,
    )
