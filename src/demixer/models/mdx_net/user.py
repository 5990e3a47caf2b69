"""A user's own UVR MDX-Net model: an ``.onnx`` file and its parameters.

``demixer separate FILE --arch mdx_net --model-config PARAMS --model-path M.onnx`` runs
:func:`open_files`; ``demixer models add NAME --arch mdx_net --config PARAMS --checkpoint M.onnx``
runs :func:`add`, which opens the file in onnxruntime and checks its shapes against the
parameters before registering both (see :mod:`demixer.models.user_models` for the layout).

PARAMS is a file of one of three forms, read as JSON if its name ends in ``.json``, else as YAML
(a safe loader: nothing in it is executed):

- demixer's own ``arch_params`` (:mod:`demixer.models.mdx_net.params`), ``primary_stem`` included;
- one entry of UVR's model data, by UVR's names: ``{"compensate": 1.035, "mdx_dim_f_set": 3072,
  "mdx_dim_t_set": 8, "mdx_n_fft_scale_set": 7680, "primary_stem": "Vocals"}``;
- UVR's whole ``model_data.json``, a map from hash to entry (or audio-separator's
  ``model-data.json``, which holds that map under ``mdx_model_data``): the entry is the one
  under the ``.onnx``'s hash as UVR computes it (:func:`uvr_hash`).

The stems are the primary (``primary_stem`` lowercased, spaces as ``_``: ``Vocals`` -> ``vocals``,
``No Crowd`` -> ``no_crowd``), then the secondary, the input minus the primary, named as UVR pairs
them: ``vocals`` and ``instrumental`` each other's (as in the catalogue's Kim_Vocal_2 and
Inst_HQ_3 entries), any other ``x`` with ``no_x``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demixer.errors import InvalidModelConfig, ModelUnavailable
from demixer.models.mdx_net import MdxNetBackend, MdxParams, load
from demixer.models.msst.config import STEM_PATTERN, load_yaml, read_config_text, stem_name
from demixer.models.registry import ModelSpec
from demixer.models.user_models import Checked, install_params_model, run_files

__all__ = [
    "UVR_HASH_BYTES",
    "UserParams",
    "add",
    "check_files",
    "is_model_data",
    "model_data_entry",
    "open_files",
    "read_data",
    "read_params",
    "stem_pair",
    "uvr_hash",
]

ARCH = "mdx_net"
SAMPLE_RATE = 44100  # every published MDX-Net model
#: how much of a model file's end UVR hashes to find its entry in the model data
UVR_HASH_BYTES = 10000 * 1024
_HASH = re.compile(r"[0-9a-f]{32}")
#: UVR's model-data names -> demixer's (``mdx_dim_t_set`` is a log2, undone below)
_UVR_NAMES = {
    "mdx_dim_f_set": "dim_f",
    "mdx_dim_t_set": "dim_t",
    "mdx_n_fft_scale_set": "n_fft",
    "compensate": "compensate",
    "primary_stem": "primary_stem",
    "is_karaoke": "is_karaoke",
}
#: UVR's flags for its backing-vocal splitter (which model to chain, the gain it rebalances
#: by): read by UVR's interface, not by the separation; accepted and left out here.
_UVR_UNUSED = ("is_bv_model", "is_bv_model_rebalanced")
_PAIRS = {"vocals": "instrumental", "instrumental": "vocals"}


@dataclass(frozen=True)
class UserParams:
    """A parameters file, resolved.

    Attributes:
        arch_params: by demixer's names, validated; ``primary_stem`` as the stem's name.
        stems: the primary stem, then the secondary (the input minus the primary).
    """

    arch_params: dict[str, Any]
    stems: tuple[str, str]


def uvr_hash(path: Path) -> str:
    """UVR's key for a model file in its model data: the MD5 (hex) of the file's last
    :data:`UVR_HASH_BYTES`, or of the whole file when it is shorter (UVR's seek back from the
    end fails then, and it hashes everything)."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as fh:
        fh.seek(max(0, fh.seek(0, os.SEEK_END) - UVR_HASH_BYTES))
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_params(path: Path, onnx: Path) -> UserParams:
    """Read a parameters file in any of the module docstring's forms, for the file ``onnx``
    (read only to find its entry in a whole model data file).

    Raises:
        InvalidModelConfig: unreadable, not JSON/YAML, no entry for ``onnx``'s hash, an
            unknown key, or a value out of range; the message names the file and the key.
        ModelUnavailable: ``onnx`` cannot be read to hash it.
    """
    data, source = read_data(path)
    params, source = _arch_params(data, source, onnx)
    MdxParams.from_arch_params(params, model_id=source, source=source)  # raises if unusable
    primary = params.get("primary_stem")
    if primary is None:
        raise InvalidModelConfig(
            f"{source}: lacks primary_stem, what the network outputs (Vocals, Instrumental, "
            "...; UVR's model data gives it per model)"
        )
    stems = stem_pair(primary, source)
    return UserParams({**params, "primary_stem": stems[0]}, stems)


def check_files(config: Path, onnx: Path) -> Checked:
    """Read ``config`` and open ``onnx`` in onnxruntime with it (shapes checked, a trial run
    where its frame count is not the parameters').

    Raises:
        InvalidModelConfig: see :func:`read_params`.
        CheckpointMismatch: the network's inputs or outputs do not fit the parameters.
        ModelUnavailable: ``onnx`` is not a model onnxruntime can load.
    """
    checked = _checked(read_params(config, onnx))
    _open(checked, config, onnx)
    return checked


def add(name: str, *, config: Path, checkpoint: Path, model_dir: Path | None = None) -> ModelSpec:
    """Register a parameters file and an ``.onnx`` as the model ``name`` (copied into the model
    directory as ``params.json`` or ``params.yaml``, and ``model.onnx``)."""
    return install_params_model(
        name, config=config, checkpoint=checkpoint, check=check_files,
        checkpoint_name="model.onnx", model_dir=model_dir,
    )  # fmt: skip


def open_files(config: Path, onnx: Path, *, device: str = "cpu") -> tuple[ModelSpec, MdxNetBackend]:
    """Load a parameters file and an ``.onnx`` as they are (nothing copied or pinned).

    Returns:
        a spec (id: the ``.onnx``'s file name, lowercased) and the loaded backend.
    """
    return _open(_checked(read_params(config, onnx)), config, onnx, device)


def _checked(params: UserParams) -> Checked:
    return Checked(ARCH, params.stems, SAMPLE_RATE, params.arch_params)


def _open(
    checked: Checked, config: Path, onnx: Path, device: str = "cpu"
) -> tuple[ModelSpec, MdxNetBackend]:
    """A spec for the files (id: the ``.onnx``'s name) and the network loaded from them."""
    return run_files(
        onnx, config, checked, loader="demixer.models.mdx_net:load",
        load=lambda spec: load(spec, model_path=onnx, device=device),
    )  # fmt: skip


def read_data(path: Path) -> tuple[Any, str]:
    """A parameters file's contents (JSON if its name ends in ``.json``, else YAML read
    safely) and its name for messages."""
    source = str(path)
    text = read_config_text(path)
    is_json = Path(path).suffix.lower() == ".json"
    return (_parse(text, source) if is_json else load_yaml(text, source)), source


def is_model_data(data: Mapping[Any, Any]) -> bool:
    """Whether ``data`` is UVR's whole model data: a map from file hash to entry."""
    return all(_HASH.fullmatch(str(key)) for key in data)


def model_data_entry(data: Mapping[Any, Any], source: str, model: Path) -> tuple[Any, str]:
    """The entry of UVR's whole model data ``data`` for the file ``model`` (by UVR's hash of
    it), and where it was found.

    Raises:
        InvalidModelConfig: no entry for that hash.
        ModelUnavailable: ``model`` cannot be read.
    """
    try:
        digest = uvr_hash(model)
    except OSError as exc:
        raise ModelUnavailable(
            f"cannot read {model} to find its entry in {source}: {exc.strerror}"
        ) from None
    if digest not in data:
        raise InvalidModelConfig(
            f"{source} has no entry for {model}, whose hash (UVR's: the MD5 of its last "
            f"10000 KiB) is {digest}; give that model's own entry or parameters instead"
        )
    return data[digest], f"{source}, entry {digest}"


def _parse(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidModelConfig(
            f"{source} is not JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:  # json reads nested arrays by recursion: deeper than Python's stack
        raise InvalidModelConfig(
            f"{source} is not a model's parameters: nested too deeply to read"
        ) from None


def _arch_params(data: Any, source: str, onnx: Path) -> tuple[dict[str, Any], str]:
    """``data`` as demixer's ``arch_params``, and where in ``source`` they were found."""
    if not isinstance(data, Mapping) or not data:
        raise InvalidModelConfig(
            f"{source}: expected a model's parameters (dim_f, dim_t, n_fft, ...), one entry "
            "of UVR's model data, or UVR's whole model_data.json"
        )
    if isinstance(data.get("mdx_model_data"), Mapping):  # audio-separator's model-data.json
        data = data["mdx_model_data"]
    if is_model_data(data):  # UVR's model_data.json: hash -> entry
        entry, source = model_data_entry(data, source, onnx)
        return _from_uvr(entry, source)
    if any(str(key).startswith("mdx_") for key in data):
        return _from_uvr(data, source)
    return {str(key): value for key, value in data.items()}, source


def _from_uvr(entry: Any, source: str) -> tuple[dict[str, Any], str]:
    """One entry of UVR's model data by demixer's names."""
    if not isinstance(entry, Mapping):
        raise InvalidModelConfig(f"{source}: expected a mapping of UVR's parameters")
    if "config_yaml" in entry:
        raise InvalidModelConfig(
            f"{source} describes an MSST-format model (config_yaml {entry['config_yaml']!r}), "
            "not an MDX-Net .onnx: add it with its YAML config and --arch mdx23c, bs_roformer, "
            "mel_band_roformer or scnet"
        )
    entry = {key: value for key, value in entry.items() if key not in _UVR_UNUSED}
    unknown = sorted(str(key) for key in entry if key not in _UVR_NAMES)
    if unknown:
        raise InvalidModelConfig(
            f"{source}: unknown key(s) {', '.join(unknown)}; UVR's model data for an MDX-Net "
            f"model has {', '.join(_UVR_NAMES)}"
        )
    params = {_UVR_NAMES[key]: value for key, value in entry.items()}
    log2 = params.get("dim_t")
    if log2 is not None:
        if isinstance(log2, bool) or not isinstance(log2, int) or not 1 <= log2 <= 16:
            raise InvalidModelConfig(
                f"{source}: mdx_dim_t_set={log2!r}: expected UVR's log2 of the frames per chunk "
                "(8 for 256)"
            )
        params["dim_t"] = 2**log2
    return params, source


def stem_pair(primary: str, source: str) -> tuple[str, str]:
    """The primary stem's name and the secondary's (see the module docstring)."""
    name = stem_name(primary)
    negated = name.startswith("no_") and len(name) > 3
    other = name[3:] if negated else _PAIRS.get(name, f"no_{name}")
    if not all(STEM_PATTERN.fullmatch(n) and n != "residual" for n in (name, other)):
        raise InvalidModelConfig(
            f"{source}: primary_stem {primary!r} cannot be a stem name (letters, digits, "
            "spaces, '_', '.', '+', '-'; not 'residual')"
        )
    return name, other
