"""The MSST format as a user meets it: configs read safely, checkpoints checked, own models added.

Checkpoints here are made with demixer's own networks from the published configs (shrunk):
these tests are about reading, checking, registering and running files, not about the numbers
(``test_msst_exact.py`` compares those with MSST itself).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from api_support import Api, make_api
from cli_support import demixer_here
from demixer.audio import resample
from demixer.cli import app
from demixer.engine import Separator
from demixer.errors import (
    Cancelled,
    CheckpointMismatch,
    Conflict,
    InputNotFound,
    InvalidModelConfig,
    InvalidModelDir,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    UnknownArchitecture,
    UnknownModel,
    WeightsChecksumMismatch,
)
from demixer.models.arch import build_model
from demixer.models.loading import is_installed, load_backend
from demixer.models.memory import bytes_text, machine_memory
from demixer.models.msst.checkpoint import read_state_dict
from demixer.models.msst.config import parse_config, read_config
from demixer.models.msst.user import add, check_files, open_files
from demixer.models.registry import catalogue_ids, get_spec, list_specs
from demixer.models.user_models import install_user_model, remove_user_model
from msst_support import DATA, model_files, music, shrunk, write_config

__all__ = ["make_api"]  # a fixture


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the YAML --------------------------------------------------------------------------------

MINIMAL = """
audio: {chunk_size: 1000, sample_rate: 44100}
model: {dim: 8, depth: 1}
training: {instruments: [Vocals, other], target_instrument: Vocals}
inference: {num_overlap: 2, batch_size: 3}
"""


def test_published_configs_read_with_their_tuples() -> None:
    config = read_config(DATA / "model_bs_roformer_ep_317_sdr_12.9755.yaml", arch="bs_roformer")
    assert config.arch == "bs_roformer"
    bands = config.model["freqs_per_bands"]
    assert isinstance(bands, tuple) and len(bands) == 62 and sum(bands) == 1025
    assert (config.chunk_size, config.num_overlap, config.batch_size) == (352800, 2, 4)
    assert (config.sample_rate, config.channels) == (44100, 2)
    assert config.stems == ("vocals", "other")  # the target, then the mix minus it
    assert config.instruments == ("vocals", "other") and config.target_instrument == "vocals"


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        "!!python/name:os.system",
    ],
)
def test_a_config_that_would_run_code_is_refused_and_runs_nothing(
    tmp_path: Path, payload: str
) -> None:
    marker = tmp_path / "ran"
    text = MINIMAL + f"extra: {payload.format(marker=marker)}\n"
    with pytest.raises(InvalidModelConfig, match="nothing in a config is executed"):
        parse_config(text, arch="bs_roformer")
    assert not marker.exists()


def test_an_alias_bomb_deep_nesting_or_a_self_holding_value_is_refused_at_once() -> None:
    """Ten short lines of aliases of aliases stand for 9**10 values: the error that quoted one
    (``inference.num_overlap must be a positive integer, not [[[...``) wrote them all out, and
    the process was killed for memory. Lists nested thousands deep gave a RecursionError
    traceback."""
    bomb = "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)
    )
    text = bomb + MINIMAL.replace("num_overlap: 2", "num_overlap: *l9")
    refused = (
        r"^kim\.yaml is not a usable model config: it holds \d{10} values with its aliases "
        r"\(\*name\) written out, over the 100000 a model config may hold$"
    )
    with pytest.raises(InvalidModelConfig, match=refused):
        parse_config(text, arch="bs_roformer", source="kim.yaml")
    deep = MINIMAL + "extra: " + "[" * 500 + "]" * 500 + "\n"
    with pytest.raises(InvalidModelConfig, match="nested over 32 levels deep"):
        parse_config(deep, arch="bs_roformer", source="kim.yaml")
    itself = MINIMAL.replace("dim: 8", "dim: &me [*me]")
    with pytest.raises(InvalidModelConfig, match=r"an alias \(\*name\) inside the list .* itself"):
        parse_config(itself, arch="bs_roformer", source="kim.yaml")
    shared = "common: &c {dim: 8, depth: 1}\n" + MINIMAL.replace("{dim: 8, depth: 1}", "*c")
    assert parse_config(shared, arch="bs_roformer").model["dim"] == 8  # aliases as such are fine


def test_a_config_that_is_not_yaml_says_where_and_what() -> None:
    """A YAML slip (an unclosed list) names the line and column and the parser's complaint,
    not the refused-tags hint, which is about something else."""
    text = MINIMAL + "inference: {num_overlap: [1, 2}\n"
    with pytest.raises(InvalidModelConfig) as caught:
        parse_config(text, arch="bs_roformer", source="kim.yaml")
    line = len(MINIMAL.splitlines()) + 1
    assert caught.value.message == (
        f"kim.yaml is not a usable model config at line {line}, column 31: expected ',' or "
        "']', but got '}'"
    )


def test_mssts_precedence_and_defaults() -> None:
    config = parse_config(MINIMAL, arch="bs_roformer")
    assert config.stems == ("vocals", "other")  # demixer's stem names are lowercase
    assert config.complement == "other"  # the mix minus the target, as MSST extracts it
    three = parse_config(MINIMAL.replace("[Vocals, other]", "[Vocals, drums, other]"), arch="x")
    assert (three.stems, three.complement) == (("vocals",), None)  # the residual is the rest
    assert (config.chunk_size, config.step, config.channels, config.normalize) == (
        1000,
        500,
        2,
        False,
    )
    inference_chunk = MINIMAL.replace("num_overlap: 2,", "num_overlap: 2, chunk_size: 800,")
    assert parse_config(inference_chunk, arch="bs_roformer").chunk_size == 800
    assert config.batch_size == 3
    # UVR's copy of Kim's config (Politrees/UVR_resources) has no batch_size: 1, as in
    # audio-separator, which runs it.
    unbatched = MINIMAL.replace(", batch_size: 3", "")
    assert parse_config(unbatched, arch="bs_roformer").batch_size == 1
    typed = MINIMAL.replace(
        "target_instrument: Vocals}", "target_instrument: Vocals, model_type: mel_band_roformer}"
    )
    assert parse_config(typed, arch="bs_roformer").arch == "mel_band_roformer"
    everything = parse_config(MINIMAL.replace(", target_instrument: Vocals", ""), arch="x")
    assert everything.stems == ("vocals", "other")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("num_overlap: 2, ", "", "inference.num_overlap must be a positive integer"),
        ("num_overlap: 2", "num_overlap: 2000", "exceeds the chunk size"),
        ("chunk_size: 1000, ", "", "chunk_size"),
        ("target_instrument: Vocals", "target_instrument: drums", "not in training.instruments"),
        ("[Vocals, other]", "[vocals, Vocals]", "repeats a name"),
        ("[Vocals, other]", "[../up, other]", "cannot be a stem name"),
        ("batch_size: 3", "batch_size: 0", "inference.batch_size"),
        ("model: {dim: 8, depth: 1}", "model: [1, 2]", "must be a mapping"),
    ],
)
def test_bad_configs_say_what_is_wrong(old: str, new: str, message: str) -> None:
    assert old in MINIMAL
    with pytest.raises(InvalidModelConfig, match=message):
        parse_config(MINIMAL.replace(old, new), arch="bs_roformer")


def test_options_demixer_cannot_compute_exactly_are_refused(tmp_path: Path) -> None:
    config, arch = shrunk("viperx-bs-1297", use_shared_bias=True)
    with pytest.raises(InvalidModelConfig, match=r"unknown model option.*use_shared_bias"):
        build_model(arch, config["model"], {}, ["vocals", "other"], "vocals")
    config, arch = shrunk("viperx-bs-1297", freqs_per_bands=(2, 4, 1000))
    with pytest.raises(InvalidModelConfig, match="sum to 1006"):
        build_model(arch, config["model"], {}, ["vocals", "other"], "vocals")
    known = "bs_roformer, htdemucs, mdx23c, mel_band_conformer, mel_band_roformer, scnet"
    with pytest.raises(UnknownArchitecture, match=known):
        build_model("bs_roformer_experimental", config["model"], {}, ["vocals"], None)


def test_a_config_for_another_architecture_than_arch_is_named_for_what_it_is(
    tmp_path: Path,
) -> None:
    """Kim's Mel-Band RoFormer config with --arch mdx23c was refused with "model.scale must be
    two positive integers, not None", with --arch scnet with two dozen unknown options."""
    config, checkpoint = model_files(tmp_path)
    for arch in ("bs_roformer", "mdx23c", "scnet"):
        with pytest.raises(InvalidModelConfig) as caught:
            check_files(config, checkpoint, arch)
        assert caught.value.message == (
            f"{config}: it is a config for mel_band_roformer (it has model.num_bands), not for "
            f"{arch}: run it with --arch mel_band_roformer"
        )


# --- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_wrappers_and_data_parallel_prefix_load(tmp_path: Path) -> None:
    config, checkpoint = model_files(tmp_path)
    state = torch.load(checkpoint, weights_only=True)
    for wrapped in (
        {"state_dict": state, "epoch": 3},
        {"model_state_dict": state},
        {"state": state},
        {f"module.{k}": v for k, v in state.items()},
    ):
        path = tmp_path / "wrapped.ckpt"
        torch.save(wrapped, path)
        assert set(read_state_dict(path)) == set(state)
    stems = check_files(config, tmp_path / "wrapped.ckpt", "mel_band_roformer")[1]
    assert stems == ("vocals", "other")


def test_a_loaded_network_holds_the_checkpoints_values_and_leaves_torch_as_it_was(
    tmp_path: Path,
) -> None:
    """The network is built without drawing random initial values (the checkpoint replaces
    them all, a second of a full-size RoFormer's load): every tensor is the checkpoint's, and
    torch's initialisers are its own again after, for anything built later."""
    from demixer.models.msst.backend import build_network

    config, checkpoint = model_files(tmp_path)
    fills = {name: getattr(torch.nn.init, name) for name in ("uniform_", "kaiming_uniform_")}
    network = build_network(read_config(config, arch="mel_band_roformer"), checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    loaded = network.state_dict()
    assert sorted(loaded) == sorted(state)
    for name, value in state.items():
        assert torch.equal(loaded[name], value), name
    assert {name: getattr(torch.nn.init, name) for name in fills} == fills
    torch.manual_seed(1)
    drawn = torch.nn.Linear(4, 4).weight.detach().clone()
    assert drawn.abs().max() > 0
    # While a load skips them, a network another thread builds (a program using demixer as a
    # library) still gets its random values.
    from demixer.models.loading import no_random_fill

    built: list[torch.Tensor] = []

    def build_elsewhere() -> None:
        torch.manual_seed(1)
        built.append(torch.nn.Linear(4, 4).weight.detach().clone())

    with no_random_fill():
        elsewhere = threading.Thread(target=build_elsewhere)
        elsewhere.start()
        elsewhere.join()
    assert torch.equal(built[0], drawn)


def test_compiled_lightning_and_model_wrapped_checkpoints_load(tmp_path: Path) -> None:
    """A network trained under torch.compile saves ``_orig_mod.``-prefixed keys, a Lightning
    module holding it as ``self.model`` saves ``model.``-prefixed keys under ``state_dict``,
    beside its hyper-parameters; other trainers save ``{"model": state_dict}``. Each was
    refused as a misfit of every key (or as "not a state_dict")."""
    config, checkpoint = model_files(tmp_path)
    state = torch.load(checkpoint, weights_only=True)
    lightning = {
        "epoch": 7,
        "global_step": 1000,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "hyper_parameters": {"lr": 1e-4},
        "optimizer_states": [],
    }
    for name, saved in (
        ("compiled", {f"_orig_mod.{k}": v for k, v in state.items()}),
        ("ddp-compiled", {f"module._orig_mod.{k}": v for k, v in state.items()}),
        ("lightning", lightning),
        ("model", {"model": state, "epoch": 3}),
    ):
        path = tmp_path / f"{name}.ckpt"
        torch.save(saved, path)
        assert check_files(config, path, "mel_band_roformer").stems == ("vocals", "other"), name


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_holding_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Exploit(marker)}, path)
    with pytest.raises(ModelUnavailable, match=r"unsupported GLOBAL posix\.system.*weights_only"):
        read_state_dict(path)
    assert not marker.exists()
    whole = tmp_path / "whole.ckpt"  # a network saved whole, torch.save(model)
    torch.save(torch.nn.Linear(2, 2), whole)
    with pytest.raises(ModelUnavailable) as pickled:
        read_state_dict(whole)
    assert pickled.value.message == (  # torch's advice to programs, cut off mid-bracket, is out
        f"{whole} holds more than tensors (WeightsUnpickler error: Unsupported global: GLOBAL "
        "torch.nn.modules.linear.Linear); demixer loads checkpoints with weights_only=True and "
        "will not unpickle arbitrary objects: if you trust the file, save its network's "
        "state_dict alone (torch.save(model.state_dict(), PATH))"
    )
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(ModelUnavailable) as text:
        read_state_dict(tmp_path / "text.ckpt")
    assert text.value.message == (
        f"cannot read checkpoint {tmp_path / 'text.ckpt'}: it is not a PyTorch checkpoint "
        "(neither the zip archive nor the pickle torch.save writes); is it the right file?"
    )


def test_a_plain_pickle_or_a_safetensors_file_is_one_plain_error(tmp_path: Path) -> None:
    """A file pickled without torch is refused with no warning of torch's on the way (the
    user sees one line); a .safetensors file is named as what is not read."""
    import pickle
    import warnings

    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps({"x": [1, 2]}, protocol=4))
    with warnings.catch_warnings(record=True) as seen, pytest.raises(ModelUnavailable) as caught:
        warnings.simplefilter("always")
        read_state_dict(plain)
    assert caught.value.message.startswith(f"cannot read checkpoint {plain}: ")
    assert [str(w.message) for w in seen] == []
    safe = tmp_path / "model.safetensors"
    safe.write_bytes(b"{}")
    with pytest.raises(ModelUnavailable) as caught:
        read_state_dict(safe)
    assert caught.value.message == (
        f"cannot read checkpoint {safe}: safetensors files are not read; give the model's .ckpt "
        "or .pth (torch.save) file"
    )


def test_a_checkpoint_that_does_not_fit_gives_one_error_naming_keys_and_shapes(
    tmp_path: Path,
) -> None:
    config, _ = model_files(tmp_path)
    _, wider = model_files(tmp_path, seed=1, dim=24)
    _, deeper = model_files(tmp_path, seed=2, depth=2)
    with pytest.raises(CheckpointMismatch) as wide:
        check_files(config, wider, "mel_band_roformer")
    message = wide.value.message
    assert message.startswith(f"checkpoint {wider} does not fit the network config {config} ")
    assert (
        "440 shape mismatch(es), checkpoint vs config: layers.0.0.layers.0.0.norm.gamma " in message
    )
    assert "layers.0.0.layers.0.0.to_qkv.weight (96, 24) vs (96, 16)" in message
    assert message.endswith("... (436 more). Are they from the same model?")
    with pytest.raises(CheckpointMismatch) as deep:
        check_files(config, deeper, "mel_band_roformer")
    assert "24 unexpected key(s): layers.1.0.layers.0.0.norm.gamma, " in deep.value.message
    assert "missing" not in deep.value.message
    with pytest.raises(CheckpointMismatch, match=r"^checkpoint .* missing key\(s\): layers\.1"):
        check_files(
            write_config(shrunk("kim-mel-vocals", depth=2)[0], tmp_path / "d2.yaml"),
            model_files(tmp_path, seed=3)[1],
            "mel_band_roformer",
        )


def test_a_catalogue_model_with_model_path_takes_its_published_config(tmp_path: Path) -> None:
    """`separate -m mel-roformer-vocals-kim --model-path MY.ckpt`: the registered config, pinned,
    with the user's checkpoint; without that config the error says how to get it or do without."""
    models = tmp_path / "models"
    _, checkpoint = model_files(tmp_path)  # a shrunk network's: it cannot fit the full config
    with pytest.raises(ModelUnavailable) as missing:
        load_backend("mel-roformer-vocals-kim", model_dir=models, model_path=checkpoint)
    assert missing.value.message == (
        "--model-path runs 'mel-roformer-vocals-kim' with its published config, "
        "config_vocals_mel_band_roformer_kj.yaml, which is not here; `demixer models pull "
        "mel-roformer-vocals-kim` fetches it (with the catalogue's checkpoint), or run your "
        "files as they are: --arch mel_band_roformer --model-config CONFIG.yaml --model-path "
        "CHECKPOINT"
    )
    (models / "mel-roformer-vocals-kim").mkdir(parents=True)
    config = models / "mel-roformer-vocals-kim" / "config_vocals_mel_band_roformer_kj.yaml"
    config.write_bytes((DATA / "config_vocals_mel_band_roformer_kj.yaml").read_bytes())
    with pytest.raises(CheckpointMismatch) as misfit:
        load_backend("mel-roformer-vocals-kim", model_dir=models, model_path=checkpoint)
    assert misfit.value.message.startswith(
        f"checkpoint {checkpoint} does not fit the network config {config} describes: "
    )
    config.write_bytes(config.read_bytes() + b"# edited\n")  # the pin still holds the config
    with pytest.raises(WeightsChecksumMismatch):
        load_backend("mel-roformer-vocals-kim", model_dir=models, model_path=checkpoint)


# --- the user's own models -------------------------------------------------------------------


def test_add_list_run_tamper_remove(tmp_path: Path) -> None:
    config, checkpoint = model_files(tmp_path)
    models = tmp_path / "models"
    spec = add(
        "my-kim", arch="mel_band_roformer", config=config, checkpoint=checkpoint, model_dir=models
    )
    assert (spec.id, spec.arch, spec.stems, spec.sample_rate) == (
        "my-kim",
        "mel_band_roformer",
        ("vocals", "other"),
        44100,
    )
    assert sorted(p.name for p in (models / "my-kim").iterdir()) == [
        "config.yaml",
        "demixer-model.json",
        "model.ckpt",
    ]
    manifest = json.loads((models / "my-kim" / "demixer-model.json").read_text())
    assert manifest["files"][1]["size"] == checkpoint.stat().st_size
    assert [s.id for s in list_specs(models)][-1] == "my-kim"
    assert get_spec("my-kim", models) == spec and is_installed(spec, models)

    backend = load_backend("my-kim", model_dir=models)
    mix = music(30000)
    stems = backend.separate(mix)
    assert stems["vocals"].shape == mix.shape and np.abs(stems["vocals"]).max() > 0

    with (models / "my-kim" / "model.ckpt").open("r+b") as fh:
        fh.seek(-3, 2)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(WeightsChecksumMismatch) as tampered:
        load_backend("my-kim", model_dir=models)
    assert tampered.value.message.endswith(  # nothing to fetch: the user's own files
        "so it was not loaded; add the model again: `demixer models remove my-kim`, then "
        "`demixer models add my-kim --arch ... --config ... --checkpoint ...` with the original "
        "files"
    )

    assert remove_user_model("my-kim", models) == models / "my-kim"
    assert not (models / "my-kim").exists()
    with pytest.raises(UnknownModel, match="known models: spleeter-2stems"):
        get_spec("my-kim", models)


def test_add_refuses_bad_names_taken_names_and_misfits_leaving_nothing(tmp_path: Path) -> None:
    config, checkpoint = model_files(tmp_path)
    _, other = model_files(tmp_path, seed=1, dim=24)
    models = tmp_path / "models"
    kw: dict[str, Any] = {"arch": "mel_band_roformer", "config": config, "model_dir": models}
    with pytest.raises(InvalidRequest, match="lowercase letters"):
        add("My Model", checkpoint=checkpoint, **kw)
    with pytest.raises(Conflict, match="catalogue model"):
        add("htdemucs", checkpoint=checkpoint, **kw)
    with pytest.raises(Conflict, match="names the catalogue model 'htdemucs_ft'"):
        add("htdemucs_ft.yaml", checkpoint=checkpoint, **kw)  # audio-separator's name for it
    with pytest.raises(CheckpointMismatch) as misfit:
        add("misfit", checkpoint=other, **kw)
    # The checked copies are gone: the message names the user's files, the ones to fix.
    assert misfit.value.message.startswith(
        f"checkpoint {other} does not fit the network config {config} describes: "
    )
    with pytest.raises(InputNotFound):  # FILE_NOT_FOUND, as a missing input to separate
        add("missing", checkpoint=tmp_path / "nope.ckpt", **kw)
    assert list(models.iterdir()) == []  # no staging directory left behind
    add("ok", checkpoint=checkpoint, **kw)
    with pytest.raises(Conflict, match="already exists"):
        add("ok", checkpoint=checkpoint, **kw)
    (models / "htdemucs").mkdir()  # catalogue weights live beside user models
    with pytest.raises(NotFound):
        remove_user_model("htdemucs", models)
    assert [s.id for s in list_specs(models) if s.id not in catalogue_ids()] == ["ok"]


def test_two_adds_of_one_name_at_once_keep_the_first_and_say_the_name_is_taken(
    tmp_path: Path,
) -> None:
    """Two `models add mine` at once (two terminals) both passed the name check; the one that
    finished second said INVALID_MODEL_DIR "Directory not empty" (exit 2), blaming the model
    directory. It is CONFLICT, as for a name already taken, and the first model stays whole."""
    first_config, first_checkpoint = model_files(tmp_path)
    config, checkpoint = model_files(tmp_path, seed=1)
    models = tmp_path / "models"

    def check_while_the_other_add_finishes(copied_config: Path, copied_checkpoint: Path) -> Any:
        add("mine", arch="mel_band_roformer", config=first_config, checkpoint=first_checkpoint,
            model_dir=models)  # fmt: skip
        return check_files(copied_config, copied_checkpoint, "mel_band_roformer")

    with pytest.raises(Conflict) as taken:
        install_user_model("mine", config=config, checkpoint=checkpoint, model_dir=models,
                           check=check_while_the_other_add_finishes)  # fmt: skip
    assert taken.value.code == "CONFLICT"
    assert taken.value.message == (
        f"{models / 'mine'} already exists; remove it first (`demixer models remove mine`) "
        "or choose another name"
    )
    assert os.listdir(models) == ["mine"]  # the loser's staging folder is gone
    kept = (models / "mine" / "model.ckpt").read_bytes()
    assert kept == first_checkpoint.read_bytes()


def test_an_added_model_is_readable_by_a_server_of_another_user_as_the_umask_allows(
    tmp_path: Path,
) -> None:
    """``models add`` made the model's folder 0700 (a temporary folder renamed into place): a
    ``serve`` or ``worker`` running as another user of the shared model directory could not
    read its manifest and did not list it, though it read the catalogue's weights there."""
    config, checkpoint = model_files(tmp_path)
    models = tmp_path / "models"
    before = os.umask(0o022)
    try:
        add(
            "mine", arch="mel_band_roformer", config=config, checkpoint=checkpoint, model_dir=models
        )
    finally:
        os.umask(before)
    folder = models / "mine"
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (folder, *folder.iterdir())}
    assert modes == {
        "mine": "0o755",
        "config.yaml": "0o644",
        "model.ckpt": "0o644",
        "demixer-model.json": "0o644",
    }


def test_a_users_recipe_may_chain_a_users_own_model(tmp_path: Path) -> None:
    """A recipe in the model directory whose step is a model added there is listed and runs
    (it made every listing fail: "names unknown model(s)"); a model added under a recipe's id
    is refused, as under a catalogue id."""
    config, checkpoint = model_files(tmp_path)
    models = tmp_path / "models"
    add("mine", arch="mel_band_roformer", config=config, checkpoint=checkpoint, model_dir=models)
    (models / "recipes").mkdir()
    step = {"model": "mine", "input": "mix", "keep": {"vocals": "vocals"}, "rest": "instrumental"}
    recipe = {"id": "my-chain", "stems": ["vocals", "instrumental"], "steps": [step]}
    (models / "recipes" / "chain.json").write_text(json.dumps(recipe))
    assert [s.id for s in list_specs(models) if s.id not in catalogue_ids()] == [
        "mine",
        "my-chain",
    ]
    assert get_spec("my-chain", models).requires == ("mine",)
    mix = music(20000)
    stems = Separator("my-chain", model_dir=models).separate_array(mix, 44100)
    np.testing.assert_allclose(stems["vocals"] + stems["instrumental"], mix, atol=1e-5)
    with pytest.raises(Conflict) as taken:
        add("my-chain", arch="mel_band_roformer", config=config, checkpoint=checkpoint,
            model_dir=models)  # fmt: skip
    assert taken.value.message == (
        f"'my-chain' is your recipe in {models / 'recipes' / 'chain.json'}; choose another name"
    )


def test_add_where_the_model_directory_refuses_is_one_error(tmp_path: Path) -> None:
    """A model directory that refuses writes (read-only, full: here /proc, which takes no
    new folder whoever asks) is INVALID_MODEL_DIR naming it, not a traceback."""
    config, checkpoint = model_files(tmp_path)
    with pytest.raises(InvalidModelDir) as caught:
        add("mine", arch="mel_band_roformer", config=config, checkpoint=checkpoint,
            model_dir=Path("/proc"))  # fmt: skip
    assert caught.value.message.startswith("cannot add 'mine' to the model directory /proc: ")


def test_a_lone_target_comes_with_the_rest_of_the_mix(tmp_path: Path) -> None:
    """A config with a target among four instruments gives the target alone: its stems do not
    add up to the song, so by default the residual comes with it (as MSST's
    --extract_instrumental), given as files (--arch) or added (models add)."""
    config, checkpoint = model_files(tmp_path, name="bs-musdb-target")
    mix = music(30000)
    spec, backend = open_files("bs_roformer", config, checkpoint)
    add("lone", arch="bs_roformer", config=config, checkpoint=checkpoint,
        model_dir=tmp_path / "models")  # fmt: skip
    added = Separator("lone", model_dir=tmp_path / "models")
    for separator in (Separator.from_backend(spec, backend), added):
        stems = separator.separate_array(mix, 44100)
        assert list(stems) == ["vocals", "residual"]
        np.testing.assert_allclose(stems["vocals"] + stems["residual"], mix, atol=1e-5)


def test_a_workers_clean_up_step_finds_a_users_model_in_its_own_model_directory(
    tmp_path: Path,
) -> None:
    """A worker's `deecho` step looks for the de-echo model in the worker's model directory
    (its settings'), not only in $DEMIXER_MODEL_DIR's."""
    from demixer.service.worker.separation import _preprocessor

    stems = {"instruments": ["no_echo", "echo"], "target_instrument": "no_echo"}
    config, checkpoint = model_files(tmp_path, training=stems)
    models = tmp_path / "elsewhere"
    add("my-deecho", arch="mel_band_roformer", config=config, checkpoint=checkpoint,
        model_dir=models)  # fmt: skip
    loaded: list[str] = []

    def load(model: str) -> Separator:
        loaded.append(model)
        return Separator(model, model_dir=models)

    step = _preprocessor(("deecho",), load, models)
    assert step is not None and loaded == ["my-deecho"]
    mix = music(20000)
    dry = np.concatenate(list(step([mix], 44100)), axis=1)
    assert dry.shape == mix.shape and np.abs(dry - mix).max() > 0


def test_cli_add_misfit_then_list_and_remove(tmp_path: Path) -> None:
    config, checkpoint = model_files(tmp_path)
    _, other = model_files(tmp_path, seed=1, dim=24)
    models = tmp_path / "models"
    adding = ("models", "add", "mine", "--arch", "mel_band_roformer", "--config", config)
    bad = demixer_here(*adding, "--checkpoint", other, model_dir=models)
    assert bad.returncode == 4
    assert bad.stderr.startswith(
        f"error [CHECKPOINT_MISMATCH] checkpoint {other} does not fit the network config {config} "
    )
    assert len(bad.stderr.strip().splitlines()) == 1 and not (models / "mine").exists()
    missing = demixer_here(*adding, "--checkpoint", tmp_path / "nothere.ckpt", model_dir=models)
    assert (missing.returncode, missing.stderr) == (  # as separate's missing input: exit 3
        3,
        f"error [FILE_NOT_FOUND] {tmp_path / 'nothere.ckpt'} is not a file\n",
    )
    good = demixer_here(*adding, "--checkpoint", checkpoint, model_dir=models)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("mine: mel_band_roformer, stems vocals, other, 44100 Hz")
    listed = demixer_here("models", "list", model_dir=models)
    assert "mine" in listed.stdout
    card = demixer_here("models", "info", "mine", model_dir=models)  # a generated card: none ships
    assert card.returncode == 0, card.stderr
    assert card.stdout.startswith("# mine\n") and "- Stems: vocals, other\n" in card.stdout
    files = ("--model-config", config, "--model-path", checkpoint)
    unknown = demixer_here("separate", config, "--arch", "mdx_next", *files, model_dir=models)
    assert unknown.returncode == 2 and "[UNKNOWN_ARCHITECTURE]" in unknown.stderr
    half = demixer_here("separate", config, "--arch", "bs_roformer", model_dir=models)
    assert half.returncode == 2 and "--arch, --model-config and --model-path" in half.stderr
    gone = demixer_here("models", "remove", "mine", model_dir=models)
    assert gone.returncode == 0 and not (models / "mine").exists()


# Configs no network can run, one value changed from a published config (shrunk). demixer
# added each of them and then failed every job (MODEL_FAILED from torch's STFT, a shape error,
# a stem count), or raised a bare traceback; MSST fails on them too. Now `models add` and
# `separate --arch` refuse them at once: file, key and why, in one line. (Mel bands that hold no
# STFT bin are no longer among them: MSST runs them, and so does demixer, see test_msst_exact.)
_UNRUNNABLE = [
    ("bs", {"model.stft_hop_length": 4096}, "bs_roformer: model.stft_hop_length 4096 exceeds "
     "the window (2048 samples, model.stft_win_length): frames would leave gaps "
     "that no inverse STFT can fill"),
    ("mel", {"model.stft_win_length": 4096}, "mel_band_roformer: model.stft_win_length 4096 "
     "exceeds model.stft_n_fft 2048: the window must fit in the frame"),
    ("bs", {"model.stft_hop_length": 1536}, "audio.chunk_size 8820 does not fit the network: "
     "frames 1536 samples apart under a 2048-sample window leave samples of a 8820-sample chunk "
     "that no inverse STFT can rebuild (the windows overlap too little; a hop of at most a "
     "quarter of the window always works)"),
    ("mel", {"audio.chunk_size": 1000}, "audio.chunk_size 1000 does not fit the network: 1000 "
     "samples are too few for an STFT of n_fft 2048, whose centring pads 1024 samples at each "
     "end by reflection (it needs more than 1024)"),
    ("bs", {"model.dim_head": 15}, "bs_roformer: model.dim_head must be even (rotary "
     "embeddings rotate pairs of features), not 15"),
    ("mel", {"model.num_stems": 3}, "mel_band_roformer: model.num_stems 3 does not fit "
     "training.instruments (2: vocals, other): it must be 1 (the target's) or 2, one mask per "
     "instrument"),
    ("bs", {"training.target_instrument": None}, "bs_roformer: model.num_stems 1 does not fit "
     "training.instruments (2: vocals, other): it must be 2, one mask per instrument; a "
     "one-mask network names the instrument it predicts in training.target_instrument"),
    ("mel", {"audio.sample_rate": 10**9}, "audio.sample_rate 1000000000 Hz is not an audio rate "
     "a model runs at (8000 to 384000 Hz)"),
    ("mdx23c", {"audio.chunk_size": 30000}, "audio.chunk_size 30000 does not fit the network: "
     "its 30 STFT frames (audio.hop_length 1024 apart) must be a multiple of 32 (model.scale[0] "
     "2 ** model.num_scales 5); a chunk of 31744 samples would fit"),
    ("mdx23c", {"audio.dim_f": 4092}, "mdx23c: the 1023 bins of a sub-band (audio.dim_f 4092 / "
     "model.num_subbands 4) must be a multiple of 32 (model.scale[1] 2 ** model.num_scales 5)"),
    ("mdx23c", {"audio.hop_length": 16384}, "mdx23c: audio.hop_length 16384 exceeds audio.n_fft "
     "8192: frames would leave gaps that no inverse STFT can fill"),
    ("mdx23c", {"model.num_subbands": 0}, "mdx23c: model.num_subbands must be an integer >= 1, "
     "not 0"),
    ("scnet", {"model.sources": ["a", "b"]}, "scnet: model.sources (2: a, b) and "
     "training.instruments (4: drums, bass, other, vocals) must name as many stems: the network "
     "gives one per source, named by the instruments in order"),
    ("scnet", {"model.hop_size": 8192}, "scnet: model.win_size (4096) must be at most "
     "model.nfft (4096) and model.hop_size (8192) at most model.win_size: a window must fit its "
     "frame, and frames further apart than it leave gaps no inverse STFT can fill"),
    ("scnet", {"model.band_SR": [0.5, 0.5, 0.5]}, "scnet: at encoder level 1 the high band holds "
     "0 of the 2049 bins (model.band_SR [0.5, 0.5, 0.5]), too few for its kernel 4 and stride 4 "
     "(model.band_kernel, model.band_stride)"),
    ("scnet", {"model.compress": 0}, "scnet: model.compress must be a number in (0, 8] (the "
     "narrowest of model.dims[1:] over it is each convolution module's width), not 0"),
    ("scnet", {"model.num_dplayer": 1}, "scnet: model.num_dplayer must be even, not 1"),
    ("mel", {"model.depth": 10**6}, "mel_band_roformer: model.depth (1000000) is over 64, the "
     "most layers one option stacks demixer takes (published models use 1 to 16): each layer is "
     "built when the config is read, before its checkpoint is compared with it (a million took "
     "minutes and gigabytes)"),
    ("bs", {"training.instruments": [f"s{i}" for i in range(65)]}, "training.instruments (65) "
     "is over 64, the most stems demixer takes (published models use 1 to 6): each stem's "
     "output layers are built when the config is read, before its checkpoint is compared with "
     "it (a million took minutes and gigabytes)"),
    ("scnet", {"audio.chunk_size": 1000}, "audio.chunk_size 1000 does not fit the network: "
     "padded to 1024 samples (an odd number of hops), 1024 samples are too few for an STFT of "
     "n_fft 4096, whose centring pads 2048 samples at each end by reflection (it needs more "
     "than 2048)"),
]  # fmt: skip


def _base_config(base: str) -> dict[str, Any]:
    if base in ("bs", "mel"):
        return shrunk("viperx-bs-1297" if base == "bs" else "kim-mel-vocals", chunk_frames=20)[0]
    from test_msst_convnets import CONFIGS

    return copy.deepcopy(CONFIGS[base])


@pytest.fixture(scope="module")
def base_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path, Path]]:
    """Per base config: its architecture, a tiny song, and a checkpoint of its network."""
    root = tmp_path_factory.mktemp("bases")
    song = root / "song.wav"
    sf.write(song, music(4410).T, 44100)
    files = {}
    for base, arch in (("bs", "bs_roformer"), ("mel", "mel_band_roformer"),
                       ("mdx23c", "mdx23c"), ("scnet", "scnet")):  # fmt: skip
        config = _base_config(base)
        training = config["training"]
        network = build_model(arch, config["model"], config["audio"], training["instruments"],
                              training.get("target_instrument"))  # fmt: skip
        torch.save(network.state_dict(), root / f"{base}.ckpt")
        files[base] = (arch, song, root / f"{base}.ckpt")
    return files


@pytest.mark.parametrize(
    ("base", "change", "why"), _UNRUNNABLE, ids=[f"{b}-{next(iter(c))}" for b, c, _ in _UNRUNNABLE]
)
def test_a_config_no_network_can_run_is_refused_at_add_naming_the_file_and_key(
    base: str,
    change: dict[str, Any],
    why: str,
    base_files: dict[str, tuple[str, Path, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arch, song, checkpoint = base_files[base]
    config = _base_config(base)
    for key, value in change.items():
        section, _, name = key.partition(".")
        config[section][name] = value
    path = write_config(config, tmp_path / "config.yaml")
    models = tmp_path / "models"
    monkeypatch.setenv("DEMIXER_MODEL_DIR", str(models))
    runner = CliRunner()
    added = runner.invoke(app, ["models", "add", "mine", "--arch", arch, "--config", str(path),
                                "--checkpoint", str(checkpoint)])  # fmt: skip
    line = f"error [INVALID_MODEL_CONFIG] {path}: {why}\n"
    assert (added.exit_code, added.stdout, added.stderr) == (4, "", line)
    assert not models.exists() or list(models.iterdir()) == []  # nothing added, no staging
    files = ["--arch", arch, "--model-config", str(path), "--model-path", str(checkpoint)]
    ran = runner.invoke(app, ["separate", str(song), *files, "-o", str(tmp_path / "out")])
    assert (ran.exit_code, ran.stderr) == (4, line)
    assert not (tmp_path / "out").exists()


def test_a_chunk_this_machine_cannot_hold_is_refused_at_add_and_separate_naming_chunk_size(
    base_files: dict[str, tuple[str, Path, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`inference.chunk_size: 1000000000000` was added, and then every job failed with
    MODEL_FAILED ("can't allocate memory: you tried to allocate 4000000000000 bytes"; MSST
    fails too). One chunk in and its stem out need 14.6 TiB: refused where the model is loaded,
    saying what to set instead."""
    arch, song, checkpoint = base_files["mel"]
    config = _base_config("mel")
    config["inference"]["chunk_size"] = 10**12
    path = write_config(config, tmp_path / "config.yaml")
    models = tmp_path / "models"
    monkeypatch.setenv("DEMIXER_MODEL_DIR", str(models))
    runner = CliRunner()
    added = runner.invoke(app, ["models", "add", "mine", "--arch", arch, "--config", str(path),
                                "--checkpoint", str(checkpoint)])  # fmt: skip
    memory = machine_memory()
    assert memory is not None and memory < 14 << 40
    line = (
        f"error [CHUNK_TOO_LARGE] {path}: inference.chunk_size 1000000000000 does not fit in "
        "memory: one chunk alone needs at least 14.6 TiB (2 channel(s) in and 1 stem(s) out, "
        f"float32), more than this machine's {bytes_text(memory)}; set inference.chunk_size to "
        "a few seconds of audio, as published configs do (8 s is 352800 samples at 44100 Hz)\n"
    )
    assert (added.exit_code, added.stdout, added.stderr) == (4, "", line)
    assert not models.exists() or list(models.iterdir()) == []
    files = ["--arch", arch, "--model-config", str(path), "--model-path", str(checkpoint)]
    ran = runner.invoke(app, ["separate", str(song), *files, "-o", str(tmp_path / "out")])
    assert (ran.exit_code, ran.stderr) == (4, line)


def test_a_job_whose_chunk_does_not_fit_the_worker_fails_chunk_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_api: Callable[..., Api]
) -> None:
    """A model added on a machine with the memory for its chunks, run by a worker with less (a
    container's limit): the job failed MODEL_UNAVAILABLE ("isn't installed", the web page
    said) for a model `GET /v1/models` lists as installed; its code is CHUNK_TOO_LARGE."""
    from demixer.service.worker import Worker
    from worker_support import running, wait_until

    config, checkpoint = model_files(tmp_path)
    big = shrunk("kim-mel-vocals", chunk_frames=20)[0]  # model_files' config, its network
    big["audio"]["chunk_size"] = 10**12
    write_config(big, config)
    with monkeypatch.context() as bigger:  # the machine `models add` ran on
        bigger.setattr("demixer.models.msst.backend.machine_memory", lambda: 1 << 60)
        add("mine", arch="mel_band_roformer", config=config, checkpoint=checkpoint,
            model_dir=tmp_path / "models")  # fmt: skip
    api = make_api(heartbeat_seconds=0.3, poll_seconds=0.1)  # its model_dir: tmp_path/models
    file_id = api.upload()
    input = {"file_id": file_id, "model": "mine", "stems": ["vocals"]}
    r = api.post("/v1/queue/audio/stems", json={"input": input})
    assert r.status_code == 202, r.text
    status_url = f"/v1/queue/requests/{r.json()['request_id']}/status"
    with running(Worker(api.services, models=["mine"])):
        body = wait_until(lambda: (a := api.get(status_url).json())["status"] == "FAILED" and a)
    assert body["error"]["code"] == "CHUNK_TOO_LARGE", body
    assert "set audio.chunk_size to a few seconds" in body["error"]["message"]


@pytest.mark.parametrize(
    ("broken", "code"),
    [("config", "INVALID_MODEL_CONFIG"), ("checkpoint", "CHECKPOINT_MISMATCH")],
)
def test_an_installed_model_that_cannot_load_fails_its_job_with_its_own_code(
    tmp_path: Path, broken: str, code: str
) -> None:
    """A model installed (its files there and their hashes right: a release's `add` took it)
    whose config this release refuses, or whose checkpoint does not fit its network: the worker
    failed its jobs MODEL_UNAVAILABLE, and the web page said "This model isn't installed";
    they fail with the loader's own code (a damaged weights file stays MODEL_UNAVAILABLE)."""
    from demixer.service.worker.child import classify_error

    config, checkpoint = model_files(tmp_path)
    models = tmp_path / "models"
    add("mine", arch="mel_band_roformer", config=config, checkpoint=checkpoint, model_dir=models)
    folder = models / "mine"
    if broken == "config":
        text = (folder / "config.yaml").read_text()
        (folder / "config.yaml").write_text(text.replace("depth: 1\n", "depth: one\n", 1))
    else:  # another network's weights (two layers deep)
        (tmp_path / "other").mkdir()
        _, deeper = model_files(tmp_path / "other", depth=2)
        (folder / "model.ckpt").write_bytes(deeper.read_bytes())
    manifest = json.loads((folder / "demixer-model.json").read_text())
    for entry in manifest["files"]:  # as `add` wrote them
        data = (folder / entry["name"]).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (folder / "demixer-model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelUnavailable) as caught:
        load_backend("mine", model_dir=models)
    assert classify_error(caught.value) == (code, caught.value.message, False)
    # Damaged weights stay "unavailable" (README: `demixer models pull` or `add` mends them).
    (folder / "model.ckpt").write_bytes(b"<html>not found</html>")
    with pytest.raises(WeightsChecksumMismatch) as damaged:
        load_backend("mine", model_dir=models)
    assert classify_error(damaged.value)[0] == "MODEL_UNAVAILABLE"


@pytest.mark.parametrize("file", sorted(p.name for p in DATA.glob("*.yaml")))
def test_the_published_chunks_fit_a_machine_of_256_mib(file: str) -> None:
    """No fixed cap: the published configs (up to 485100-sample chunks, 11 s) need a few tens
    of MB for a chunk's input and output, so even a small machine takes them."""
    demucs = "demucs" in file or "drumsep" in file  # MSST's htdemucs type: one of demucs' nets
    bandit = "bandit" if "bandit_bsrnn" in file else "bandit_v2"
    arch = bandit if "bandit" in file else "htdemucs" if demucs else "bs_roformer"
    config = read_config(DATA / file, arch=arch)
    assert config.chunk_memory_problem(256 << 20) is None


@pytest.mark.parametrize(
    "change",
    [{"audio.num_channels": 1}, {"model.audio_channels": 1, "model.dims": [2, 8, 16, 32]}],
    ids=["mono-audio", "mono-network"],
)
def test_an_scnet_of_other_channels_than_its_audio_section_runs(
    change: dict[str, Any], tmp_path: Path
) -> None:
    """SCNet's channels are its model.audio_channels: it was fed audio.num_channels instead,
    and a config where the two differ was added and then failed every job. It is fed its own
    now, as the RoFormers are (a mono network runs stereo channel by channel)."""
    config = _base_config("scnet")
    for key, value in change.items():
        section, _, name = key.partition(".")
        config[section][name] = value
    path = write_config(config, tmp_path / "config.yaml")
    network = build_model("scnet", config["model"], {}, config["training"]["instruments"], None)
    torch.save(network.state_dict(), tmp_path / "scnet.ckpt")
    spec, backend = open_files("scnet", path, tmp_path / "scnet.ckpt")
    mix = music(30000)
    stems = Separator.from_backend(spec, backend).separate_array(mix, 44100)
    assert list(stems) == ["drums", "bass", "other", "vocals"]
    assert all(s.shape == mix.shape and np.isfinite(s).all() for s in stems.values())


def test_the_service_lists_and_runs_a_user_model(tmp_path: Path) -> None:
    """`GET /v1/models` advertises it; a worker runs a job for it like a catalogue model."""
    from demixer.api.routes.models import model_list
    from demixer.service.accounts.keys import create_key, new_id
    from demixer.service.context import Services
    from demixer.service.jobs.contract import JobParams, UploadInput
    from demixer.service.jobs.queue import FINAL
    from demixer.service.schema import Job
    from demixer.service.worker import Worker
    from demixer.service.worker.registry import runnable_models
    from demixer.settings import Settings
    from worker_support import running

    config, checkpoint = model_files(tmp_path)
    models = tmp_path / "models"
    add("mine", arch="mel_band_roformer", config=config, checkpoint=checkpoint, model_dir=models)
    settings = Settings(
        data_dir=tmp_path / "data", model_dir=models, heartbeat_seconds=0.3, poll_seconds=0.1
    )
    services = Services.from_settings(settings)
    services.db.create_all()
    engines = {m.id: m for m in model_list(services).engine_models}
    assert engines["mine"].stems == ["vocals", "other"] and engines["mine"].sample_rate == 44100
    assert "mine" in runnable_models(settings)

    account, _ = create_key(services.db)
    song = tmp_path / "song.wav"
    mix = music(40000)
    sf.write(song, mix.T, 44100, subtype="FLOAT")
    key = f"inputs/{new_id('file')}"
    with song.open("rb") as fh:
        services.storage.put(key, fh)
    job_id = new_id("job")
    params = JobParams(
        input=UploadInput(file_id=key.split("/")[1], storage_key=key, file_name=song.name),
        stems=("vocals", "residual"), output_format="wav", bit_depth="32f",
        names={"vocals": "vocals", "residual": "instrumental"},
    )  # fmt: skip
    with services.db.write() as s:
        services.queue.submit(
            s, job_id=job_id, account_id=account, queue_model="audio/stems",
            engine_model="mine", params=params,
        )  # fmt: skip
    with running(Worker(services, models=["mine"])):
        deadline = time.monotonic() + 120
        while True:
            with services.db.read() as s:
                job = s.get(Job, job_id)
                assert job is not None
                if job.status in FINAL:
                    break
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.1)
    assert job.status == "COMPLETED", (job.error_code, job.error_message)
    assert job.outputs is not None and set(job.outputs) == {"vocals", "instrumental"}


def test_a_running_worker_takes_up_models_added_and_replaced_under_its_feet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`models add` while `serve` or `worker` runs: a model added later is run (not queued
    forever), and one added again under its name with other weights is loaded again (not the
    old network kept in memory), and its results are not the old ones from the result cache."""
    from demixer.models.user_models import weights_identity
    from demixer.service.accounts.keys import create_key, new_id
    from demixer.service.context import Services
    from demixer.service.jobs.cache import fingerprint
    from demixer.service.jobs.contract import JobParams, UploadInput
    from demixer.service.jobs.queue import FINAL
    from demixer.service.schema import Job
    from demixer.service.worker import Worker
    from demixer.settings import Settings
    from worker_support import running, wait_until

    monkeypatch.setattr("demixer.service.worker.slots.MODELS_RESCAN_SECONDS", 0.2, raising=False)
    models = tmp_path / "models"
    first = model_files(tmp_path, seed=0)
    second = model_files(tmp_path, seed=1)  # the same config, other weights
    arch = "mel_band_roformer"
    add("mine", arch=arch, config=first[0], checkpoint=first[1], model_dir=models)
    settings = Settings(
        data_dir=tmp_path / "data", model_dir=models, heartbeat_seconds=0.3, poll_seconds=0.1
    )
    services = Services.from_settings(settings)
    services.db.create_all()
    account, _ = create_key(services.db)
    song = tmp_path / "song.wav"
    sf.write(song, music(40000).T, 44100, subtype="FLOAT")
    key = f"inputs/{new_id('file')}"
    with song.open("rb") as fh:
        services.storage.put(key, fh)
    params = JobParams(
        input=UploadInput(file_id=key.split("/")[1], storage_key=key, file_name=song.name),
        stems=("vocals",), output_format="wav", bit_depth="32f",
    )  # fmt: skip

    def separated(model: str) -> np.ndarray:
        job_id = new_id("job")
        with services.db.write() as s:
            services.queue.submit(
                s, job_id=job_id, account_id=account, queue_model="audio/stems",
                engine_model=model, params=params,
            )  # fmt: skip

        def final() -> Job | None:
            with services.db.read() as s:
                job = s.get(Job, job_id)
                return job if job is not None and job.status in FINAL else None

        job = wait_until(final, timeout=120, what=f"the job for {model} to finish")
        assert job.status == "COMPLETED", (job.error_code, job.error_message)
        assert job.outputs is not None
        with services.storage.open(job.outputs["vocals"]["key"]) as fh:
            audio: np.ndarray = sf.read(fh, dtype="float32")[0]
            return audio

    old_identity = weights_identity("mine", models)
    with running(Worker(services)) as worker:
        before = separated("mine")
        add("late", arch=arch, config=second[0], checkpoint=second[1], model_dir=models)
        late = separated("late")  # a model no worker ran when it was queued
        assert "late" in worker.models
        remove_user_model("mine", models)
        add("mine", arch=arch, config=second[0], checkpoint=second[1], model_dir=models)
        after = separated("mine")
    # the new weights' stems (to float rounding: each model loads and runs on its own)
    np.testing.assert_allclose(after, late, atol=1e-5)
    assert np.abs(after - before).max() > 1e-3
    new_identity = weights_identity("mine", models)
    assert None is not old_identity != new_identity is not None
    assert weights_identity("spleeter-2stems", models) is None
    sha = "0" * 64
    assert fingerprint(sha, "mine", params, old_identity) != fingerprint(
        sha, "mine", params, new_identity
    )


# --- the engine around an MSST model ------------------------------------------------------------


def _separator(tmp_path: Path) -> Separator:
    config, checkpoint = model_files(tmp_path)  # 0.2 s chunks, 2 overlaps, batches of 4
    return Separator.from_backend(*open_files("mel_band_roformer", config, checkpoint))


def test_progress_comes_per_chunk_and_cancel_stops_writing_nothing(tmp_path: Path) -> None:
    separator = _separator(tmp_path)
    mix = music(2 * 44100)
    seen: list[float] = []
    separator.separate_array(mix, 44100, on_progress=seen.append)
    assert len(seen) >= 20  # one per chunk (0.1 s steps), and the final 1.0
    assert seen == sorted(seen) and seen[-1] == 1.0 and 0 < seen[2] < 0.2

    song = tmp_path / "song.wav"
    sf.write(song, mix.T, 44100, subtype="FLOAT")
    asked = 0

    def cancel() -> bool:
        nonlocal asked
        asked += 1
        return asked > 3

    with pytest.raises(Cancelled):
        separator.separate_file(song, tmp_path / "out", should_cancel=cancel)
    assert asked == 4
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_other_rates_and_mono_come_back_at_their_rate_and_length(tmp_path: Path) -> None:
    separator = _separator(tmp_path)
    at_44 = music(44100)
    reference = separator.separate_array(at_44, 44100, ["vocals"])["vocals"]
    at_48 = resample(at_44, 44100, 48000)
    out = separator.separate_array(at_48, 48000, ["vocals", "residual"])
    assert out["vocals"].shape == at_48.shape
    np.testing.assert_allclose(out["vocals"] + out["residual"], at_48, atol=1e-5)
    back = resample(out["vocals"], 48000, 44100)
    # The same separation, up to the two resamplings (the chunks fall on other samples).
    error = np.sum((back - reference) ** 2) / np.sum(reference**2)
    assert error < 0.05
    mono = separator.separate_array(at_48[:1], 48000, ["vocals", "residual"])
    assert mono["vocals"].shape == (1, at_48.shape[1])
    # Every stem (other = mix - vocals, as MSST's instrumental): they add back at 48 kHz too, a
    # 23 kHz tone the 44.1 kHz model never heard included (it is in "other").
    t = np.arange(at_48.shape[1]) / 48000
    at_48 = (at_48 + 0.1 * np.sin(2 * np.pi * 23000 * t)).astype(np.float32)
    for mix in (at_48, at_48[:1]):
        every = separator.separate_array(mix, 48000)
        assert set(every) == {"vocals", "other"}
        np.testing.assert_allclose(every["vocals"] + every["other"], mix, atol=1e-5)


# Run in a fresh process: a network that returns half its input (cheap, so a long input is
# quick) through the MSST backend over SECONDS of noise, and the most resident memory the
# stream added (the peak is reset just before it: /proc/self/clear_refs). Resident memory counts
# torch's buffers and numpy's alike, as the user's machine does.
_STREAM_PEAK = """
import re, sys
from pathlib import Path
import numpy as np, torch
from demixer.engine import Separator
from demixer.models.msst.backend import MsstBackend
from demixer.models.msst.config import read_config
from demixer.models.registry import ModelSpec

class HalfOfIt(torch.nn.Module):
    audio_channels = 2
    def forward(self, x):
        return x[:, None] * 0.5

def kib(key):
    return int(re.search(key + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])

config = read_config(Path(sys.argv[1]), arch="mel_band_roformer")
backend = MsstBackend(HalfOfIt(), config, device=torch.device("cpu"), precision="fp32")
spec = ModelSpec(id="half", stems=("vocals",), sample_rate=44100, description="", license="",
                 weights_source="", loader="", quality="", install_hint="")
separator = Separator.from_backend(spec, backend)
plan = separator.plan(["vocals", "residual"])
rng = np.random.default_rng(0)

def stream(seconds):
    blocks = (rng.standard_normal((2, 65536), dtype=np.float32) * 0.1
              for _ in range(seconds * 44100 // 65536))
    total = 0
    for out in separator.stream(blocks, 44100, plan):
        total += out["vocals"].shape[1]
        np.testing.assert_allclose(out["vocals"], out["residual"], atol=1e-6)
    return total

stream(30)  # what a first stream loads once (lazy imports, allocator pools) is not its memory
try:
    Path("/proc/self/clear_refs").write_text("5")
except OSError:  # not writable here: the peak then includes the warm-up's, as large
    pass
before = kib("VmRSS")
total = stream(int(sys.argv[2]))
print(total, (kib("VmHWM") - before) * 1024)
"""


def test_memory_does_not_grow_with_the_length_of_the_input() -> None:
    """A published chunking (8 s chunks, 2 overlaps, batches of 4) over 1 and over 10 minutes:
    about the same peak of resident memory, well under the 10 minutes' 212 MB."""
    config = DATA / "config_vocals_mel_band_roformer_kj.yaml"

    def peak(seconds: int) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _STREAM_PEAK, str(config), str(seconds)],
            capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        total, added = map(int, run.stdout.split())
        assert total == seconds * 44100 // 65536 * 65536
        return added

    # The peak moves between runs by whole buffers (one batch of chunks is 11 MB): 58-81 MB
    # for 1 minute and 70-92 MB for 10 and 20 minutes were seen. Output kept or summed for
    # the whole input would add its 212 MB (10 minutes, stereo float32).
    short, long = peak(60), peak(600)
    assert long < short + 80e6, (short, long)
    assert long < 150e6, (short, long)


def test_a_config_far_bigger_than_its_checkpoint_is_refused_before_it_is_built(
    tmp_path: Path,
) -> None:
    """A typo in a dimension (``dim: 16384`` for 16) describes a network of tens of GB: it was
    allocated and initialised whole before the checkpoint was compared with it, so `models
    add` ran out of memory (or was killed for it) instead of saying they do not fit. The
    shapes are compared first, allocating nothing: here under a 4 GB address-space limit."""
    _, checkpoint = model_files(tmp_path)
    config, _ = shrunk("kim-mel-vocals", chunk_frames=20, dim=16384, depth=4)
    path = write_config(config, tmp_path / "typo.yaml")

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    env = {**os.environ, "DEMIXER_MODEL_DIR": str(tmp_path / "models"), "OMP_NUM_THREADS": "1"}
    cli = Path(sys.executable).parent / "demixer"
    adding = [str(cli), "models", "add", "mine", "--arch", "mel_band_roformer", "--config",
              str(path), "--checkpoint", str(checkpoint)]  # fmt: skip
    run = subprocess.run(adding, capture_output=True, text=True, env=env, preexec_fn=limited)
    assert (run.returncode, run.stdout) == (4, "")
    assert run.stderr.startswith(
        f"error [CHECKPOINT_MISMATCH] checkpoint {checkpoint} does not fit the network config "
        f"{path} describes: "
    )


def test_a_request_for_a_user_model_removed_while_it_waits_stays_queued_saying_why(
    tmp_path: Path,
) -> None:
    """A request queued for your model, then `models remove`: it is not failed; it waits
    IN_QUEUE, its status saying no running worker has the model installed, until one does or
    it is cancelled (README, "The service")."""
    from service_harness import fast_env, running_server, start_worker, wait_status
    from worker_support import wait_until

    config, checkpoint = model_files(tmp_path)
    models = tmp_path / "models"
    add("mine", arch="mel_band_roformer", config=config, checkpoint=checkpoint, model_dir=models)
    song = tmp_path / "song.wav"
    sf.write(song, music(20000).T, 44100, subtype="FLOAT")
    env = fast_env(DEMIXER_MODEL_DIR=str(models))
    with running_server(tmp_path / "data", workers=0, env=env) as server:
        client = server.client()
        with song.open("rb") as fh:
            file_id = client.post("/v1/files", files={"file": (song.name, fh)}).json()["file_id"]
        r = client.post(
            "/v1/queue/audio/stems",
            json={"input": {"file_id": file_id, "model": "mine", "stems": ["vocals"]}},
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["request_id"]
        remove_user_model("mine", models)
        worker = start_worker(server.data_dir, env=env)
        try:

            def waiting() -> str | None:
                body = client.get(f"/v1/queue/requests/{job_id}/status").json()
                assert body["status"] == "IN_QUEUE", body
                reason: str | None = body["waiting_reason"]
                return reason if reason and "live workers run" in reason else None

            reason = wait_until(waiting, 60, "the worker to be live")
            assert reason.startswith("no running worker has model 'mine' installed; ")
            time.sleep(1.0)  # five polls of the worker: it leaves the request alone
            assert client.put(f"/v1/queue/requests/{job_id}/cancel").status_code == 200
            done = wait_status(client, job_id, {"CANCELLED", "FAILED", "COMPLETED"}, 10)
            assert done["status"] == "CANCELLED"
            # Ctrl-C ends it as it ends every command, with 130 (it exited 0).
            worker.process.send_signal(signal.SIGINT)
            assert worker.process.wait(timeout=60) == 130, worker.logs()
        finally:
            worker.kill()


# What each architecture computes from its config before its checkpoint is compared with it
# (filterbanks, band tables, windows) grows with these; asked for absurdly, it asked for
# gigabytes and the process was killed (a MemoryError under a 4 GB cap) instead of an answer.
_FRAME = "the most samples in an STFT frame demixer takes (published models use 2048 to 8192)"
_BANDS = "the most frequency bands demixer takes (published models use 60 or 64)"
_MEMORY = ": what a config describes is computed when it is read, and this would not fit in memory"


@pytest.mark.parametrize(
    ("arch", "model", "audio", "message"),
    [
        ("mel_band_roformer", {"dim": 8, "depth": 1, "stft_n_fft": 1 << 27},
         {}, f"mel_band_roformer: model.stft_n_fft (134217728) is over 65536, {_FRAME}"),
        ("mel_band_roformer", {"dim": 8, "depth": 1, "num_bands": 10**6},
         {}, f"mel_band_roformer: model.num_bands (1000000) is over 1024, {_BANDS}"),
        ("bs_roformer", {"dim": 8, "depth": 1, "stft_n_fft": 65538, "freqs_per_bands": [32770]},
         {}, f"bs_roformer: model.stft_n_fft (65538) is over 65536, {_FRAME}"),
        ("bandit_v2", {"stems": ["a"], "n_fft": 1 << 27},
         {}, f"bandit_v2: kwargs.n_fft (134217728) is over 65536, {_FRAME}"),
        ("bandit_v2", {"stems": ["a"], "n_bands": 10**6},
         {}, f"bandit_v2: kwargs.n_bands (1000000) is over 1024, {_BANDS}"),
        ("scnet", {"nfft": 1 << 27}, {}, f"scnet: model.nfft (134217728) is over 65536, {_FRAME}"),
        ("mdx23c", {"num_subbands": 4, "num_scales": 5, "scale": [2, 2], "norm": "InstanceNorm",
                    "act": "gelu"},
         {"n_fft": 1 << 27, "hop_length": 1024, "dim_f": 1024, "num_channels": 2},
         f"mdx23c: audio.n_fft (134217728) is over 65536, {_FRAME}"),
        ("apollo", {"sr": 384000, "win": 10**6, "feature_dim": 16, "layer": 1},
         {}, "apollo: model.win (1000000 ms at model.sr 384000) is too long: its STFT frame "
         f"(384000000) is over 65536, {_FRAME}"),
    ],
)  # fmt: skip
def test_a_config_asking_for_more_than_memory_holds_is_refused_when_read(
    arch: str, model: dict[str, Any], audio: dict[str, Any], message: str
) -> None:
    stems = ["restored"] if arch == "apollo" else ["a"]
    with pytest.raises(InvalidModelConfig) as refused:
        build_model(arch, model, {"sample_rate": 44100, **audio}, stems, None)
    assert refused.value.message == message + _MEMORY


_LAYERS = "the most layers one option stacks demixer takes (published models use 1 to 16)"
_STEMS = "the most stems demixer takes (published models use 1 to 6)"
_BUILT = (
    ": each {} built when the config is read, before its checkpoint is compared with it (a "
    "million took minutes and gigabytes)"
)
_EACH_LAYER = _BUILT.format("layer is")
_EACH_STEM = _BUILT.format("stem's output layers are")
_MDX = {
    "num_subbands": 4, "num_scales": 5, "scale": [2, 2], "norm": "InstanceNorm", "act": "gelu",
    "num_blocks_per_scale": 1, "num_channels": 8, "growth": 8, "bottleneck_factor": 1,
}  # fmt: skip
_MDX_AUDIO = {"n_fft": 2048, "hop_length": 512, "dim_f": 1024, "num_channels": 2}
_HTDEMUCS = {"model": "htdemucs", "audio_channels": 2, "samplerate": 44100, "segment": 11}


@pytest.mark.parametrize(
    ("arch", "model", "audio", "stems", "message"),
    [
        ("mel_band_roformer", {"dim": 8, "depth": 10**6}, {}, 1,
         f"mel_band_roformer: model.depth (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("bs_roformer", {"dim": 8, "depth": 1, "freqs_per_bands": [1025],
                         "mask_estimator_depth": 10**6}, {}, 1,
         f"bs_roformer: model.mask_estimator_depth (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("bs_conformer", {"dim": 8, "depth": 1, "freqs_per_bands": [1025],
                          "time_conformer_depth": 10**6}, {}, 1,
         f"bs_conformer: model.time_conformer_depth (1000000) is over 64, {_LAYERS}"
         f"{_EACH_LAYER}"),
        # each under the limit, their product over it: depth x (1 + 64 + 0) = 4160 layers
        ("mel_band_roformer", {"dim": 8, "depth": 64, "time_transformer_depth": 1,
                               "freq_transformer_depth": 64}, {}, 1,
         "mel_band_roformer: model.depth x (time_transformer_depth + freq_transformer_depth + "
         "linear_transformer_depth) (4160) is over 256, the most transformer layers in all "
         f"demixer takes (published models use up to 32){_EACH_LAYER}"),
        ("mel_band_roformer", {"dim": 8, "depth": 1, "num_stems": 65}, {}, 65,
         f"mel_band_roformer: model.num_stems (65) is over 64, {_STEMS}{_EACH_STEM}"),
        # scale [1, 1] keeps every level's size: nothing else bounded num_scales
        ("mdx23c", {**_MDX, "scale": [1, 1], "num_scales": 10**6}, _MDX_AUDIO, 2,
         f"mdx23c: model.num_scales (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("mdx23c", {**_MDX, "num_blocks_per_scale": 10**6}, _MDX_AUDIO, 2,
         f"mdx23c: model.num_blocks_per_scale (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("scnet", {"sources": ["a", "b"], "num_dplayer": 10**6}, {}, 2,
         f"scnet: model.num_dplayer (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("scnet", {"sources": ["a", "b"], "dims": [4] + [8] * 100}, {}, 2,
         f"scnet: model.dims (less one: the encoder's levels) (100) is over 64, {_LAYERS}"
         f"{_EACH_LAYER}"),
        ("scnet", {"sources": ["a", "b"], "conv_depths": [3, 10**6, 1]}, {}, 2,
         f"scnet: model.conv_depths (its largest) (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("scnet_tran", {"sources": ["a", "b"], "tran_depth": 10**6}, {}, 2,
         f"scnet_tran: model.tran_depth (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("scnet", {"sources": [f"s{i}" for i in range(65)]}, {}, 65,
         f"scnet: model.sources (65) is over 64, {_STEMS}{_EACH_STEM}"),
        ("bandit", {"band_specs": "musical", "in_channel": 1, "n_bands": 64, "fs": 44100,
                    "n_sqm_modules": 10**6}, {}, 1,
         f"bandit: model.n_sqm_modules (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("bandit_v2", {"stems": [f"s{i}" for i in range(65)]}, {}, 65,
         f"bandit_v2: kwargs.stems (65) is over 64, {_STEMS}{_EACH_STEM}"),
        ("apollo", {"sr": 44100, "win": 20, "feature_dim": 16, "layer": 10**6}, {}, 1,
         f"apollo: model.layer (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("htdemucs", {**_HTDEMUCS, "t_layers": 10**6}, {}, 4,
         f"htdemucs: htdemucs.t_layers (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("htdemucs", {**_HTDEMUCS, "dconv_depth": 10**6}, {}, 4,
         f"htdemucs: htdemucs.dconv_depth (1000000) is over 64, {_LAYERS}{_EACH_LAYER}"),
        ("htdemucs", {**_HTDEMUCS, "nfft": 1 << 27}, {}, 4,
         f"htdemucs: htdemucs.nfft (134217728) is over 65536, {_FRAME}{_MEMORY}"),
    ],
)  # fmt: skip
def test_a_config_stacking_far_more_layers_or_stems_than_published_is_refused_when_read(
    arch: str, model: dict[str, Any], audio: dict[str, Any], stems: int, message: str
) -> None:
    """These were built layer by layer before the checkpoint was compared with them: a million
    layers kept `models add` (or a worker loading the model) building for minutes, until it
    was killed for memory."""
    instruments = ["restored"] if arch == "apollo" else [f"s{i}" for i in range(stems)]
    if arch == "bandit":
        model = {**model, "stems": instruments}
    with pytest.raises(InvalidModelConfig) as refused:
        build_model(arch, model, {"sample_rate": 44100, **audio}, instruments, None)
    assert refused.value.message == message
