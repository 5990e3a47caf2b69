"""A user's own UVR VR model: a ``.pth`` file and its parameters.

``demixer separate FILE --arch vr --model-config PARAMS --model-path M.pth`` runs
:func:`open_files`; ``demixer models add NAME --arch vr --config PARAMS --checkpoint M.pth``
runs :func:`add`, which builds the network the file holds and checks it fits the layout's bins
before registering both (see :mod:`demixer.models.user_models` for the layout on disk).

PARAMS is read as JSON if its name ends in ``.json``, else as YAML (a safe loader), and is one
of:

- one entry of UVR's VR model data, which is also demixer's ``arch_params``
  (:mod:`demixer.models.vr.params`): ``{"vr_model_param": "4band_v3", "primary_stem":
  "Instrumental"}``, the layout named as UVR names the ones it ships;
- UVR's whole VR ``model_data.json``, a map from hash to entry (or audio-separator's
  ``model-data.json``, which holds it under ``vr_model_data``): the entry under the ``.pth``'s
  hash as UVR computes it;
- a band layout of one's own (UVR's model parameters JSON, with its ``band`` mapping) with a
  ``primary_stem`` added.

The stems are named as for an MDX-Net model: the primary (``Instrumental`` -> ``instrumental``,
``No Echo`` -> ``no_echo``), then the secondary (``vocals``; ``echo``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from demixer.errors import InvalidModelConfig
from demixer.models.mdx_net.user import is_model_data, model_data_entry, read_data, stem_pair
from demixer.models.registry import ModelSpec
from demixer.models.user_models import Checked, install_params_model, run_files
from demixer.models.vr import VrBackend, load
from demixer.models.vr.params import VrParams

__all__ = ["add", "check_files", "open_files", "read_params"]

ARCH = "vr"
_LOADER = "demixer.models.vr:load"


def read_params(path: Path, pth: Path) -> Checked:
    """Read a parameters file in any of the module docstring's forms, for the file ``pth``
    (read only to find its entry in a whole model data file).

    Raises:
        InvalidModelConfig: unreadable, not JSON/YAML, no entry for ``pth``'s hash, an unknown
            key, or a value out of range; the message names the file and the key.
    """
    data, source = read_data(path)
    if not isinstance(data, Mapping) or not data:
        raise InvalidModelConfig(
            f"{source}: expected a VR model's parameters (vr_model_param, primary_stem), one "
            "entry of UVR's VR model data, or UVR's whole model_data.json"
        )
    if isinstance(data.get("vr_model_data"), Mapping):  # audio-separator's model-data.json
        data = data["vr_model_data"]
    if is_model_data(data):
        data, source = model_data_entry(data, source, pth)
        if not isinstance(data, Mapping):
            raise InvalidModelConfig(f"{source}: expected a mapping of UVR's parameters")
    params: dict[str, Any] = {str(key): value for key, value in data.items()}
    if "band" in params:  # a layout of one's own, with its primary stem
        primary = params.pop("primary_stem", None)
        params = {"vr_model_param": params, "primary_stem": primary}
        if primary is None:
            raise InvalidModelConfig(
                f"{source}: a band layout needs a primary_stem beside it, what the model's mask "
                "keeps (Instrumental, Vocals, No Echo, ...; UVR's model data gives it per model)"
            )
    vr = VrParams.from_arch_params(params, model_id=source, source=source)
    stems = stem_pair(vr.primary_stem, source)
    return Checked(ARCH, stems, vr.layout.sr, params)


def check_files(config: Path, pth: Path) -> Checked:
    """Read ``config`` and build the network ``pth`` holds for its layout.

    Raises:
        InvalidModelConfig: see :func:`read_params`.
        CheckpointMismatch: the file's tensors are not a VR network for the layout's bins.
        ModelUnavailable: ``pth`` cannot be read.
    """
    checked = read_params(config, pth)
    _open(checked, config, pth)
    return checked


def add(name: str, *, config: Path, checkpoint: Path, model_dir: Path | None = None) -> ModelSpec:
    """Register a parameters file and a ``.pth`` as the model ``name`` (copied into the model
    directory as ``params.json`` or ``params.yaml``, and ``model.pth``)."""
    return install_params_model(
        name, config=config, checkpoint=checkpoint, check=check_files,
        checkpoint_name="model.pth", model_dir=model_dir,
    )  # fmt: skip


def open_files(config: Path, pth: Path, *, device: str = "cpu") -> tuple[ModelSpec, VrBackend]:
    """Load a parameters file and a ``.pth`` as they are (nothing copied or pinned).

    Returns:
        a spec (id: the ``.pth``'s file name, lowercased) and the loaded backend.
    """
    return _open(read_params(config, pth), config, pth, device)


def _open(
    checked: Checked, config: Path, pth: Path, device: str = "cpu"
) -> tuple[ModelSpec, VrBackend]:
    return run_files(
        pth, config, checked, loader=_LOADER,
        load=lambda spec: load(spec, model_path=pth, device=device),
    )  # fmt: skip
