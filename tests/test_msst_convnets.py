"""MDX23C and SCNet (and SCNet's variants) as MSST-format models: the registry's path, the
CLI's, their precision.

The networks themselves are compared with MSST's in ``test_arch_mdx23c_scnet.py``; here each is
a whole model as a user runs it: a config file (a published one, shrunk in width) and a
random checkpoint made by MSST's own class, registered the way the catalogue registers its
entries (``catalogue.sources.msst``: config + checkpoint pinned by SHA-256, loaded by
``demixer.models.msst:load``) or given to ``separate --arch``. Separations are compared with
MSST's own ``demix`` in fp32 (1e-4 peak), on an input of several chunks.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from msst.utils.model_utils import demix
from msst.utils.settings import get_model_from_config

from cli_support import demixer_here
from demixer.engine import Separator
from demixer.models import registry
from demixer.models.arch import ARCHITECTURES, FP32_BY_DEFAULT
from demixer.models.catalogue import CATALOGUE
from demixer.models.catalogue.sources import msst
from demixer.models.loading import file_sha256
from demixer.models.msst.backend import MsstBackend
from demixer.models.msst.config import read_config
from demixer.models.registry import ModelSpec, WeightFile
from msst_support import DATA, music, randomise, write_config
from test_arch_mdx23c_scnet import MDX23C_CONFIGS, SCNET_CONFIGS, SCNET_TRAN

# Published configs, shrunk in width, chunk length and overlap (the published 8 and 4 overlaps
# only multiply the chunks run; the windowing itself is proven against MSST's on the RoFormers,
# over many overlaps, in test_msst_exact.py).
MSST_FAMILIES = ("mdx23c", "scnet", "bs_roformer", "mel_band_roformer", "bandit", "bandit_v2")
_MDX = MDX23C_CONFIGS["uvr-instvoc-hq"]  # stems `Vocals`, `Instrumental`, as UVR writes them
_SCNET = SCNET_CONFIGS["msst-musdb18-xl-ihf"]
CONFIGS: dict[str, dict[str, Any]] = {
    "mdx23c": {
        "audio": {**_MDX["audio"], "chunk_size": 31 * 1024},  # 32 frames: 2**num_scales
        "model": {**_MDX["model"], "num_channels": 8, "growth": 4},
        "training": {"instruments": _MDX["instruments"], "target_instrument": None},
        "inference": {"batch_size": 1, "dim_t": 256, "num_overlap": 2},
    },
    "scnet": {
        "audio": {"chunk_size": 22050, "num_channels": 2, "sample_rate": 44100},
        "model": {**_SCNET, "dims": [4, 8, 16, 32], "num_dplayer": 2},
        "training": {"instruments": _SCNET["sources"], "target_instrument": None},
        "inference": {"batch_size": 2, "num_overlap": 2},
    },
}
# SCNet Masked XL IHF's is the XL IHF config (MSST release v1.0.17); SCNet Tran's its own.
CONFIGS["scnet_masked"] = CONFIGS["scnet"]
CONFIGS["scnet_tran"] = {
    **CONFIGS["scnet"],
    "model": {
        **SCNET_TRAN,
        "dims": [4, 8, 16, 32],
        "num_dplayer": 2,
        "tran_heads": 2,
        "tran_dim_head": 8,
        "tran_rotary_embedding_dim": 8,
    },
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model_files(root: Path, arch: str) -> tuple[Path, Path, torch.nn.Module, Any]:
    """Config, random checkpoint, MSST's module with those weights and MSST's config."""
    config = write_config(CONFIGS[arch], root / f"{arch}.yaml")
    reference, reference_config = get_model_from_config(arch, str(config))
    torch.manual_seed(0)
    randomise(reference, seed=1)
    checkpoint = root / f"{arch}.ckpt"
    torch.save(reference.state_dict(), checkpoint)
    return config, checkpoint, reference, reference_config


@pytest.fixture
def registered(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[ModelSpec, torch.nn.Module, Any]:
    """A registry entry as the catalogue makes one, its pinned files in a model dir."""
    arch: str = request.param
    config, checkpoint, reference, reference_config = model_files(tmp_path, arch)
    stems = tuple(s.lower() for s in CONFIGS[arch]["training"]["instruments"])
    spec = msst(
        f"test-{arch}", arch=arch, stems=stems,
        description="test", config=WeightFile(config.name, file_sha256(config)),
        checkpoint=WeightFile(checkpoint.name, file_sha256(checkpoint)), license="none",
        license_class="not stated", weights_source="test", source_url="", quality="none",
        scores=(), pin_sources=(),
    )  # fmt: skip
    home = tmp_path / "models" / spec.id
    home.mkdir(parents=True)
    for path in (config, checkpoint):
        (home / path.name).write_bytes(path.read_bytes())
    monkeypatch.setitem(registry._BY_ID, spec.id, spec)
    return spec, reference, reference_config


def test_the_catalogue_runs_its_msst_models_through_the_msst_loader() -> None:
    """Every MSST entry names an architecture demixer has; where the pinned config is in
    tests/data (same SHA-256), its stems are the ones the entry declares, which the loader
    checks before anything runs."""
    pinned = {file_sha256(path): path for path in DATA.glob("*.yaml")}
    checked = []
    for spec in CATALOGUE:
        if spec.arch in MSST_FAMILIES:
            assert spec.arch in ARCHITECTURES and spec.loader == "demixer.models.msst:load"
            assert spec.config_name is not None and len(spec.weights) == 2
            config = next(w for w in spec.weights if w.name == spec.config_name)
            if config.sha256 in pinned:
                assert read_config(pinned[config.sha256], arch=spec.arch).stems == spec.stems
                checked.append(spec.id)
    assert checked == [
        "mel-roformer-vocals-kim",
        "bs-roformer-vocals-1297",
        "mel-roformer-vocals-becruily",
        "mel-roformer-crowd-aufr33",
        "bs-roformer-sw-6stems",
        "mel-roformer-karaoke-aufr33",
        "bandit-v2-dnr",
        "bandit-plus-dnr",
    ]


@pytest.mark.parametrize(
    "registered", ["mdx23c", "scnet", "scnet_masked", "scnet_tran"], indirect=True
)
def test_a_registered_model_equals_msst(
    registered: tuple[ModelSpec, torch.nn.Module, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, reference, reference_config = registered
    chunk = reference_config.audio.chunk_size
    mix = music(2 * chunk + 777, seed=2)
    with torch.inference_mode():
        expected = demix(reference_config, reference, mix, "cpu", spec.arch)
    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator(spec.id, model_dir=tmp_path / "models")
    got = separator.separate_array(mix, 44100)
    assert list(got) == list(spec.stems)
    for stem, name in zip(spec.stems, reference_config.training.instruments, strict=True):
        assert float(np.abs(expected[name]).max()) > 1e-3
        assert float(np.abs(got[stem] - expected[name]).max()) <= 1e-4, stem


def test_cli_runs_an_mdx23c_by_arch_and_takes_lowercase_stems(tmp_path: Path) -> None:
    """UVR's config says `Vocals`; `--stems vocals` asks for it (names are lowercase)."""
    config, checkpoint, _, _ = model_files(tmp_path, "mdx23c")
    sf.write(tmp_path / "song.wav", music(30000, seed=3).T, 44100, subtype="FLOAT")
    cli = Path(sys.executable).parent / "demixer"
    env = {**os.environ, "DEMIXER_MODEL_DIR": str(tmp_path / "models"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [str(cli), "separate", str(tmp_path / "song.wav"), "--arch", "mdx23c",
         "--model-config", str(config), "--model-path", str(checkpoint), "--stems", "vocals",
         "-o", str(tmp_path / "out")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    written = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*")
    )
    assert written == ["song_residual.wav", "song_vocals.wav"]


def test_mdx23c_runs_in_fp32_unless_bf16_is_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also as a model added with `models add`, which a worker runs by name; SCNet on the same
    machine takes bf16 where it is native."""
    from demixer.models.msst.user import add, open_files

    monkeypatch.delenv("DEMIXER_PRECISION", raising=False)
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    scnet_files = model_files(tmp_path, "scnet")[:2]
    assert open_files("scnet", *scnet_files)[1].precision == ("bf16" if native else "fp32")
    config, checkpoint, _, _ = model_files(tmp_path, "mdx23c")
    assert "mdx23c" in FP32_BY_DEFAULT
    spec = add("my-mdx", arch="mdx23c", config=config, checkpoint=checkpoint, model_dir=tmp_path)
    assert (spec.arch, spec.stems) == ("mdx23c", ("vocals", "instrumental"))
    default = Separator("my-mdx", model_dir=tmp_path).backend
    assert isinstance(default, MsstBackend) and default.precision == "fp32"
    forced = _backend(config, checkpoint, "mdx23c", "bf16")
    assert forced.precision == "bf16"


def test_bf16_asked_of_a_cpu_that_only_emulates_it_is_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On a CPU without native bf16 (AVX2: emulated bf16 matmuls ran at 0.8 % of fp32's rate)
    `auto` runs fp32 silently; a forced bf16 still runs, with a warning saying what it costs."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    config, checkpoint, _, _ = model_files(tmp_path, "scnet")
    with caplog.at_level(logging.WARNING, logger="demixer.models.precision"):
        assert _backend(config, checkpoint, "scnet", "auto").precision == "fp32"
        assert caplog.messages == []
        assert _backend(config, checkpoint, "scnet", "bf16").precision == "bf16"
    assert caplog.messages == [
        "bf16 was asked for, but this CPU does not compute bf16 natively: emulated, it runs at "
        "about 1 % of fp32's speed (DEMIXER_PRECISION=auto runs fp32 here)"
    ]


def _backend(config: Path, checkpoint: Path, arch: str, precision: str) -> MsstBackend:
    from demixer.models.msst.backend import backend_for
    from demixer.models.msst.config import read_config

    return backend_for(read_config(config, arch=arch), checkpoint, precision=precision)


def test_scnet_in_bf16_keeps_its_first_block_in_float32(tmp_path: Path) -> None:
    """Its first encoder block runs with autocast off: its weights stay float32 while the
    other layers' are stored in bf16, and the model runs."""
    config, checkpoint, _, _ = model_files(tmp_path, "scnet")
    backend = _backend(config, checkpoint, "scnet", "bf16")
    network = backend._network
    first = {p.dtype for p in network.encoder[0].parameters()}  # type: ignore[union-attr]
    later = {m.weight.dtype for m in network.decoder.modules() if isinstance(m, torch.nn.Conv2d)}  # type: ignore[union-attr]
    assert (first, later) == ({torch.float32}, {torch.bfloat16})
    mix = music(30000, seed=4)
    exact = _backend(config, checkpoint, "scnet", "fp32").separate(mix)
    fast = backend.separate(mix)
    for stem in backend.stems:
        noise = float(np.sum((fast[stem] - exact[stem]) ** 2))
        assert 10 * np.log10(float(np.sum(exact[stem] ** 2)) / noise) > 20.0, stem


def test_a_checkpoint_of_an_scnet_variant_given_as_another_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCNet's variants take the same config: the checkpoint tells which one it is for, and the
    one-line error says what to run instead; given as itself it is added, and runs in fp32 by
    default even where bf16 is native (its bf16 output is not measured)."""
    config, checkpoint, _, _ = model_files(tmp_path, "scnet_masked")
    models = tmp_path / "models"
    adding = ("models", "add", "mine", "--config", config, "--checkpoint", checkpoint)
    wrong = demixer_here(*adding, "--arch", "scnet", model_dir=models)
    assert wrong.returncode == 4
    assert wrong.stderr == (
        f"error [CHECKPOINT_MISMATCH] checkpoint {checkpoint} does not fit the network config "
        f"{config} describes: 5 unexpected key(s): pos_embed_f, mask_layer.0.weight, "
        "mask_layer.0.bias, mask_layer.2.weight, ... (1 more). It is a checkpoint of "
        "scnet_masked (it has pos_embed_f): run it with --arch scnet_masked.\n"
    )
    assert not (models / "mine").exists()
    (tmp_path / "tran").mkdir()
    tran_config, tran, _, _ = model_files(tmp_path / "tran", "scnet_tran")
    for arch in ("scnet", "scnet_masked"):
        given = demixer_here(*adding[:6], tran, "--arch", arch, model_dir=models)
        assert given.returncode == 4
        assert given.stderr.endswith(
            "It is a checkpoint of scnet_tran (it has separation_net.dp_modules.0.freq_layer"
            ".norm.gamma): run it with --arch scnet_tran.\n"
        )
    right = demixer_here(*adding, "--arch", "scnet_masked", model_dir=models)
    assert right.returncode == 0, right.stderr
    assert right.stdout.startswith("mine: scnet_masked, stems drums, bass, other, vocals, 44100 Hz")
    monkeypatch.delenv("DEMIXER_PRECISION", raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert Separator("mine", model_dir=models).backend.precision == "fp32"
    assert _backend(tran_config, tran, "scnet_tran", "auto").precision == "fp32"
