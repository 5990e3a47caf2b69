"""A user's own model from its files, whichever kind it is: the one place that tells them apart.

Three kinds of files can be run or added: an MSST model (``--arch bs_roformer``,
``mel_band_roformer``, ``bs_conformer``, ``mel_band_conformer``, ``mdx23c``, ``scnet``
(``scnet_masked``, ``scnet_tran``), ``bandit``, ``bandit_v2``, ``htdemucs``, ``apollo``: a YAML
config and a checkpoint, :mod:`demixer.models.msst.user`), a UVR MDX-Net model (``--arch
mdx_net``: its parameters and an ``.onnx``, :mod:`demixer.models.mdx_net.user`) and a UVR VR
model (``--arch vr``: its parameters and a ``.pth``, :mod:`demixer.models.vr.user`).
``demixer separate --arch`` and ``demixer models add`` call the functions here, never a kind's
module.
"""

from __future__ import annotations

from pathlib import Path

from demixer.errors import UnknownArchitecture
from demixer.models.arch import ARCHITECTURES
from demixer.models.base import Backend
from demixer.models.registry import ModelSpec

__all__ = ["add", "check_arch", "open_files", "stems"]

MDX_NET = "mdx_net"
VR = "vr"


def check_arch(arch: str) -> None:
    """Raise :class:`UnknownArchitecture` naming every ``--arch`` demixer runs, before any
    file is read (a config read for the wrong kind of model says less)."""
    if arch not in (*ARCHITECTURES, MDX_NET, VR):
        known = ", ".join([*sorted(ARCHITECTURES), MDX_NET, VR])
        raise UnknownArchitecture(f"unknown architecture {arch!r}; demixer runs: {known}")


def stems(arch: str, config: Path, checkpoint: Path) -> tuple[str, ...]:
    """The stems the files name, read without loading the network (for checks before a load)."""
    check_arch(arch)
    if arch == MDX_NET:
        from demixer.models.mdx_net.user import read_params

        return read_params(config, checkpoint).stems
    if arch == VR:
        from demixer.models.vr import user as vr

        return vr.read_params(config, checkpoint).stems
    from demixer.models.msst.config import read_config

    return read_config(config, arch=arch).stems


def open_files(
    arch: str, config: Path, checkpoint: Path, *, device: str = "cpu"
) -> tuple[ModelSpec, Backend]:
    """Load the files as they are (nothing copied or pinned): a spec named after the checkpoint
    and the loaded backend."""
    check_arch(arch)
    if arch == MDX_NET:
        from demixer.models.mdx_net import user as mdx_net

        return mdx_net.open_files(config, checkpoint, device=device)
    if arch == VR:
        from demixer.models.vr import user as vr

        return vr.open_files(config, checkpoint, device=device)
    from demixer.models.msst import user as msst

    return msst.open_files(arch, config, checkpoint, device=device)


def add(name: str, *, arch: str, config: Path, checkpoint: Path) -> ModelSpec:
    """Check the files fit and register them as the model ``name`` in the model directory."""
    check_arch(arch)
    if arch == MDX_NET:
        from demixer.models.mdx_net import user as mdx_net

        return mdx_net.add(name, config=config, checkpoint=checkpoint)
    if arch == VR:
        from demixer.models.vr import user as vr

        return vr.add(name, config=config, checkpoint=checkpoint)
    from demixer.models.msst import user as msst

    return msst.add(name, arch=arch, config=config, checkpoint=checkpoint)
