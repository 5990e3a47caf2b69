"""A user's own models, kept in the model directory beside the catalogue's weights.

``demixer models add NAME --arch ARCH --config C.yaml --checkpoint M.ckpt`` copies both files to
``$DEMIXER_MODEL_DIR/NAME/`` and writes ``demixer-model.json`` there::

    {"format": 1, "id": "NAME", "arch": "bs_roformer", "stems": ["vocals"],
     "sample_rate": 44100, "config_name": "config.yaml",
     "files": [{"name": "config.yaml", "sha256": "...", "size": 1234},
               {"name": "model.ckpt", "sha256": "...", "size": 5678}],
     "added_from": {"config": "/path/C.yaml", "checkpoint": "/path/M.ckpt"}}

A UVR MDX-Net model (``--arch mdx_net``: an ``.onnx`` and its parameters,
:mod:`demixer.models.mdx_net.user`) keeps its files as ``params.yaml`` (or ``params.json``) and
``model.onnx``, and its manifest adds ``"arch_params"``: the parameters as the catalogue's
MDX-Net entries give them, resolved once at ``add`` (a whole ``model_data.json`` needs the
file's hash). A UVR VR model (``--arch vr``, :mod:`demixer.models.vr.user`) likewise keeps
``params.yaml`` (or ``.json``) and ``model.pth``, its resolved parameters in ``"arch_params"``.
The architecture chooses the loader; a manifest without ``arch_params`` (every
MSST model, and every manifest written before MDX-Net) reads as before.

:func:`user_specs` turns every such directory into a :class:`~demixer.models.registry.ModelSpec`,
so the registry (``get_spec``, ``list_specs``), the CLI, ``demixer serve`` and ``worker`` see and
run it like a catalogue model, and its files are verified against the recorded SHA-256 before
every load. This module never imports torch: the API process lists models without it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from demixer.errors import (
    CheckpointMismatch,
    Conflict,
    DemixerError,
    InputNotFound,
    InvalidModelDir,
    InvalidRequest,
    NotFound,
)
from demixer.models.catalogue import SHIPPED_ALIASES, SHIPPED_IDS
from demixer.models.catalogue.recipes import recipe_file
from demixer.models.model_dir import RECIPES, default_model_dir, usable_model_dir
from demixer.models.spec import ModelSpec, WeightFile

try:  # POSIX only; elsewhere a killed add's staging folder is left for the user to delete
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "MANIFEST",
    "NAME_PATTERN",
    "Checked",
    "check_name",
    "files_spec",
    "install_params_model",
    "install_user_model",
    "remove_user_model",
    "run_files",
    "user_spec",
    "user_specs",
    "weights_identity",
]

MANIFEST = "demixer-model.json"
CONFIG_NAME = "config.yaml"
CHECKPOINT_NAME = "model.ckpt"
NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
_NAME = re.compile(NAME_PATTERN)
_FORMAT = 1
_CHUNK = 1 << 20
#: the lock an ``add`` holds inside its staging folder ``.NAME.<16 hex>`` while it works there
_STAGING_LOCK = ".demixer-adding"
_UNLOCKED = f"{_STAGING_LOCK}.new"  # its name until it is locked
_STAGING = re.compile(rf"\.({NAME_PATTERN})\.[0-9a-f]{{16}}")
#: a removed model's folder while it is deleted: ``.NAME.removed.<pid>``
_REMOVED = re.compile(rf"\.({NAME_PATTERN})\.removed\.[0-9]{{1,10}}")

#: the loader of each architecture that does not run as an MSST model
_LOADERS = {"mdx_net": "demixer.models.mdx_net:load", "vr": "demixer.models.vr:load"}
_MSST_LOADER = "demixer.models.msst:load"
#: how each such architecture's files are named on ``models add`` (see the hints below)
_ADD_FILES = {
    "mdx_net": "--config PARAMS --checkpoint MODEL.onnx",
    "vr": "--config PARAMS --checkpoint MODEL.pth",
}
_MSST_ADD_FILES = "--config CONFIG.yaml --checkpoint MODEL.ckpt"


class Checked(NamedTuple):
    """What a model's files turned out to be when checked."""

    arch: str
    stems: tuple[str, ...]
    sample_rate: int
    #: parameters the loader reads from the spec (MDX-Net's); empty for MSST models
    arch_params: Mapping[str, Any] = {}


Check = Callable[[Path, Path], Checked]
"""``(config, checkpoint) -> Checked``; raises when they do not fit."""
_Loaded = TypeVar("_Loaded")


def _model_dir(model_dir: Path | None) -> Path:
    return Path(model_dir) if model_dir is not None else default_model_dir()


def _spec(data: Mapping[str, Any], directory: Path) -> ModelSpec:
    """The spec a manifest describes; ValueError/KeyError/TypeError when it is malformed."""
    if data.get("format") != _FORMAT or data.get("id") != directory.name:
        raise ValueError("not a demixer user-model manifest for this directory")
    files = tuple(
        WeightFile(name=str(f["name"]), sha256=str(f["sha256"]), size=int(f["size"]))
        for f in data["files"]
    )
    arch = str(data["arch"])
    origin = data.get("added_from", {})
    arch_params = data.get("arch_params", {})
    if not isinstance(arch_params, dict):
        raise TypeError("arch_params is not a mapping")
    return ModelSpec(
        id=directory.name,
        stems=tuple(str(s) for s in data["stems"]),
        sample_rate=int(data["sample_rate"]),
        description=f"your own {arch} model (demixer models add)",
        license="not stated: your own model",
        weights_source=f"added from {origin.get('checkpoint', 'a local checkpoint')}",
        loader=_LOADERS.get(arch, _MSST_LOADER),
        quality="not measured",
        install_hint=(
            f"its files in {directory} are missing: add it again with `demixer models add "
            f"{directory.name} --arch {arch} {_ADD_FILES.get(arch, _MSST_ADD_FILES)}`"
        ),
        weights=files,
        arch=arch,
        config_name=str(data["config_name"]),
        arch_params=arch_params,
        license_class="not stated",
    )


def user_spec(name: str, model_dir: Path | None = None) -> ModelSpec | None:
    """The user model ``name`` in the model directory, or None (also for a bad manifest)."""
    if not _NAME.fullmatch(name) or name in SHIPPED_IDS or name in SHIPPED_ALIASES:
        return None
    directory = _model_dir(model_dir) / name
    try:
        data = json.loads((directory / MANIFEST).read_text("utf-8"))
        return _spec(data, directory)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def weights_identity(name: str, model_dir: Path | None = None) -> str | None:
    """A user model's weights as one digest of its files' SHA-256s, or None for any other
    model: it changes when the model is added again under its name with other files, so what
    was computed or loaded with the old ones is not taken for the new (the result cache, a
    worker's loaded models)."""
    spec = user_spec(name, model_dir)
    if spec is None:
        return None
    listed = "\n".join(f"{w.name} {w.sha256}" for w in spec.weights)
    return hashlib.sha256(listed.encode()).hexdigest()


def user_specs(model_dir: Path | None = None) -> tuple[ModelSpec, ...]:
    """Every user model in the model directory, by name."""
    root = _model_dir(model_dir)
    try:
        names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    except OSError:
        return ()
    found = (user_spec(name, root) for name in names)
    return tuple(spec for spec in found if spec is not None)


def files_spec(
    weights: Path,
    *,
    arch: str,
    stems: tuple[str, ...],
    sample_rate: int,
    loader: str,
    description: str,
    arch_params: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """The spec of a model run from its files as they are (not added): its id is the weights'
    file name, lowercased, with whatever a model id cannot hold as ``-``."""
    return ModelSpec(
        id=re.sub(r"[^a-z0-9._-]+", "-", Path(weights).stem.lower()).strip("-") or "model",
        stems=stems,
        sample_rate=sample_rate,
        description=description,
        license="not stated: your own model",
        weights_source=str(weights),
        loader=loader,
        quality="not measured",
        install_hint="",
        arch=arch,
        arch_params=dict(arch_params or {}),
    )


def run_files(
    weights: Path,
    config: Path,
    checked: Checked,
    *,
    loader: str,
    load: Callable[[ModelSpec], _Loaded],
) -> tuple[ModelSpec, _Loaded]:
    """A model of parameters and one network file (MDX-Net, VR) run from its files as they
    are: its spec (:func:`files_spec`) and ``load(spec)``; a network that does not fit the
    parameters is one :class:`CheckpointMismatch` naming the parameters file too, the one to
    fix if the network is the right one."""
    spec = files_spec(
        weights,
        arch=checked.arch,
        stems=checked.stems,
        sample_rate=checked.sample_rate,
        loader=loader,
        description=f"{checked.arch} with the parameters in {config}",
        arch_params=checked.arch_params,
    )
    try:
        return spec, load(spec)
    except CheckpointMismatch as exc:
        raise CheckpointMismatch(f"{exc.message} (the parameters: {config})") from None


def install_params_model(
    name: str,
    *,
    config: Path,
    checkpoint: Path,
    check: Check,
    checkpoint_name: str,
    model_dir: Path | None = None,
) -> ModelSpec:
    """:func:`install_user_model` for a parameters file (kept as ``params.json``, or
    ``params.yaml`` for any other name) and one network file (``checkpoint_name``)."""
    suffix = ".json" if Path(config).suffix.lower() == ".json" else ".yaml"
    return install_user_model(
        name,
        config=config,
        checkpoint=checkpoint,
        check=check,
        model_dir=model_dir,
        config_name=f"params{suffix}",
        checkpoint_name=checkpoint_name,
    )


def check_name(name: str, model_dir: Path | None = None) -> None:
    """Raise unless ``name`` can become a new user model's id."""
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"model name {name!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name == RECIPES:
        # Its manifest would be read as a faulty recipe: every listing of the models would fail.
        raise Conflict(
            f"{name!r} is the folder of your recipes in the model directory; choose another name"
        )
    if name in SHIPPED_IDS:
        raise Conflict(f"{name!r} is a catalogue model; choose another name")
    if name in SHIPPED_ALIASES:
        raise Conflict(
            f"{name!r} names the catalogue model {SHIPPED_ALIASES[name]!r}; choose another name"
        )
    recipe = recipe_file(_model_dir(model_dir) / RECIPES, name)
    if recipe is not None:  # the recipe's id would be taken: every listing would fail
        raise Conflict(f"{name!r} is your recipe in {recipe}; choose another name")
    if (_model_dir(model_dir) / name).exists():
        raise _taken(_model_dir(model_dir), name)


def _taken(root: Path, name: str) -> Conflict:
    return Conflict(
        f"{root / name} already exists; remove it first "
        f"(`demixer models remove {name}`) or choose another name"
    )


@contextmanager
def _staging_folder(root: Path, name: str, doing: str) -> Iterator[Path]:
    """A new staging folder for ``add``, held locked (see :func:`_sweep`) while in use; it is
    deleted on the way out unless it was renamed into place."""
    # Not tempfile.mkdtemp: its folder is its user's alone (0700), so a server or worker running
    # as another user of a shared model directory did not list the model, though it reads the
    # catalogue's weights there. mkdir gives what the umask allows, as for any folder.
    staging = root / f".{name}.{secrets.token_hex(8)}"
    try:
        staging.mkdir()
    except OSError as exc:
        raise _unwritable(root, doing, exc) from exc
    unlocked = staging / _UNLOCKED
    try:
        lock = open(unlocked, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _unwritable(root, doing, exc) from exc
    try:
        # Locked before it takes the name a sweep looks for, so a sweep never finds it
        # unlocked while this add runs (the lock goes with the file through the rename).
        try:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                os.rename(unlocked, staging / _STAGING_LOCK)
        except OSError:  # a file system without locks: no lock file, so no sweep takes it
            pass
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when renamed into place
        lock.close()


def _sweep(root: Path) -> None:
    """Delete what killed ``add``s and ``remove``s left in the model directory (``kill -9``, a
    power cut): a staging folder holds a partial copy of a checkpoint (hundreds of MB) that is
    never listed. A staging folder is deleted only when no process holds its lock: the kernel
    lets go of a live add's lock only when that add ends, so a running add's folder is never
    taken. A removed model's folder is deleted at once (its remove deleted it anyway). Only
    folders named as demixer names them are looked at; a staging folder without its lock file
    (one of an older demixer) is left alone."""
    try:
        entries = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for entry in entries:
        folder = Path(entry.path)
        if _STAGING.fullmatch(entry.name):  # first: `.x.removed.<16 digits>` is x.removed's
            if fcntl is None:
                continue
            try:
                lock = open(folder / _STAGING_LOCK, "rb")  # noqa: SIM115 - closed below
            except OSError:  # not one of ours, or its add has just renamed it into place
                continue
            with lock:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # its add is running
                    continue
                shutil.rmtree(folder, ignore_errors=True)
        elif _REMOVED.fullmatch(entry.name):
            shutil.rmtree(folder, ignore_errors=True)


def _copy_hashed(source: Path, dest: Path) -> WeightFile:
    digest = hashlib.sha256()
    size = 0
    with Path(source).open("rb") as src, dest.open("wb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return WeightFile(name=dest.name, sha256=digest.hexdigest(), size=size)


def _rename_in_message(exc: DemixerError, paths: Mapping[Path, Path]) -> None:
    """Write each ``paths`` key in ``exc``'s message as its value."""
    message = exc.message
    for copy, source in paths.items():
        message = message.replace(str(copy), str(source))
    exc.message = message
    exc.args = (message,)


def install_user_model(
    name: str,
    *,
    config: Path,
    checkpoint: Path,
    check: Check,
    model_dir: Path | None = None,
    config_name: str = CONFIG_NAME,
    checkpoint_name: str = CHECKPOINT_NAME,
) -> ModelSpec:
    """Copy ``config`` and ``checkpoint`` into ``<model dir>/<name>/`` and register them.

    The copies (named ``config_name`` and ``checkpoint_name`` there) are made in a staging
    directory, hashed while copied, and ``check``-ed there (the files checked are the files
    kept); only then is the manifest written and the directory renamed into place, so a failed
    ``add`` leaves nothing behind (and what one killed midway left, the next ``add`` or
    ``remove`` deletes: :func:`_sweep`).

    Raises:
        InvalidRequest, Conflict: a bad or taken name.
        NotFound: a source file is missing.
        whatever ``check`` raises (the files do not fit).
    """
    check_name(name, model_dir)
    for path in (config, checkpoint):
        if not Path(path).is_file():
            raise InputNotFound(f"{path} is not a file")
    root = usable_model_dir(_model_dir(model_dir))
    _sweep(root)
    with _staging_folder(root, name, f"add {name!r} to") as staging:
        try:
            files = [
                _copy_hashed(config, staging / config_name),
                _copy_hashed(checkpoint, staging / checkpoint_name),
            ]
            try:
                checked = check(staging / config_name, staging / checkpoint_name)
            except DemixerError as exc:
                # The copies are removed: name the user's own files, the ones to fix.
                _rename_in_message(
                    exc, {staging / config_name: config, staging / checkpoint_name: checkpoint}
                )
                raise
            manifest: dict[str, Any] = {
                "format": _FORMAT,
                "id": name,
                "arch": checked.arch,
                "stems": list(checked.stems),
                "sample_rate": checked.sample_rate,
                "config_name": config_name,
                "files": [{"name": f.name, "sha256": f.sha256, "size": f.size} for f in files],
                "added_from": {"config": str(config), "checkpoint": str(checkpoint)},
            }
            if checked.arch_params:
                manifest["arch_params"] = dict(checked.arch_params)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
            # Still locked through its open file: no sweep takes the folder before the rename.
            for lock_file in (_STAGING_LOCK, _UNLOCKED):
                (staging / lock_file).unlink(missing_ok=True)
            try:
                os.rename(staging, root / name)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Another `add` of this name (a second terminal) passed check_name too, and
                # finished first while this one copied and checked its files: the name is
                # taken, as check_name would now say, not a fault of the model directory.
                raise _taken(root, name) from None
        except OSError as exc:  # the model directory is read-only, full, or has a file in the way
            raise _unwritable(root, f"add {name!r} to", exc) from exc
    spec = user_spec(name, root)
    assert spec is not None  # just written
    return spec


def remove_user_model(name: str, model_dir: Path | None = None) -> Path:
    """Delete the user model ``name`` (its directory); catalogue weights are never touched.

    Raises:
        NotFound: no user model of that name.
    """
    root = _model_dir(model_dir)
    if user_spec(name, root) is None:
        raise _no_model(root, name)
    _sweep(root)
    directory = root / name
    doomed = root / f".{name}.removed.{os.getpid()}"
    try:  # out of the way at once (no half-removed model is ever listed), then deleted
        os.rename(directory, doomed)
    except FileNotFoundError:
        # Another `remove` of this name (a second terminal) took it after the check above:
        # the name is gone, as a remove of an unknown name says.
        raise _no_model(root, name) from None
    except OSError as exc:
        raise _unwritable(root, f"remove {name!r} from", exc) from exc
    shutil.rmtree(doomed, ignore_errors=True)
    return directory


def _no_model(root: Path, name: str) -> NotFound:
    return NotFound(f"no user model {name!r} in {root}")


def _unwritable(root: Path, doing: str, exc: OSError) -> InvalidModelDir:
    """The model directory refused a write: what was being done, and the system's words."""
    return InvalidModelDir(f"cannot {doing} the model directory {root}: {exc.strerror or exc}")
