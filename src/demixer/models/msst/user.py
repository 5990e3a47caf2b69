"""A user's own MSST model: run it from its files, or add it to the model directory.

``demixer separate FILE --arch ARCH --model-config C.yaml --model-path M.ckpt`` runs
:func:`open_files`; ``demixer models add NAME --arch ARCH --config C.yaml --checkpoint M.ckpt``
runs :func:`add`, which checks that the config and checkpoint fit before registering them (see
:mod:`demixer.models.user_models` for the directory layout).
"""

from __future__ import annotations

from pathlib import Path

from demixer.models.msst.backend import MsstBackend, backend_for, build_network
from demixer.models.msst.config import read_config
from demixer.models.registry import ModelSpec
from demixer.models.user_models import Checked, files_spec, install_user_model

__all__ = ["add", "check_files", "open_files"]


def check_files(config: Path, checkpoint: Path, arch: str) -> Checked:
    """Read ``config`` and load ``checkpoint`` into the network it describes.

    Returns:
        ``(arch, stems, sample_rate)``, no ``arch_params``: the architecture (the config's
        ``training.model_type`` wins over ``arch``, as in MSST), the stems and the rate.

    Raises:
        InvalidModelConfig, UnknownArchitecture, ModelUnavailable, CheckpointMismatch.
    """
    parsed = read_config(config, arch=arch)
    build_network(parsed, checkpoint)
    return Checked(parsed.arch, parsed.stems, parsed.sample_rate)


def add(
    name: str, *, arch: str, config: Path, checkpoint: Path, model_dir: Path | None = None
) -> ModelSpec:
    """Register a config and checkpoint as the model ``name`` (copied into the model dir)."""
    return install_user_model(
        name,
        config=config,
        checkpoint=checkpoint,
        check=lambda c, k: check_files(c, k, arch),
        model_dir=model_dir,
    )


def open_files(
    arch: str, config: Path, checkpoint: Path, *, device: str = "cpu"
) -> tuple[ModelSpec, MsstBackend]:
    """Load a config and checkpoint as they are (nothing copied or pinned).

    Returns:
        a spec (id: the checkpoint's file name, lowercased) and the loaded backend.
    """
    parsed = read_config(config, arch=arch)
    backend = backend_for(parsed, Path(checkpoint), device=device)
    spec = files_spec(
        checkpoint,
        arch=parsed.arch,
        stems=parsed.stems,
        sample_rate=parsed.sample_rate,
        loader="demixer.models.msst:load",
        description=f"{parsed.arch} from {config}",
    )
    return spec, backend
