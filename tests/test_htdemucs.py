"""MSST's ``htdemucs`` models (demucs' HTDemucs or Hybrid Demucs, trained with MSST): demixer
computes what MSST computes.

The oracle is MSST itself (PyPI ``msst`` 0.1.0): its own copy of the network
(``msst.models.demucs4ht``, built by its ``get_model`` from the config as OmegaConf reads it)
and its ``demix`` in the "demucs" mode it runs htdemucs in (chunks of ``samplerate * segment``,
no fades, no edge padding). The configs are MSST's published ones (``tests/data/msst``),
shrunk in width, transformer and segment; the checkpoints are MSST's network with random
weights.
"""

from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml  # type: ignore[import-untyped]
from omegaconf import OmegaConf

from cli_support import demixer_here
from demixer.engine import Separator
from demixer.errors import InvalidModelConfig, ModelUnavailable
from demixer.models.arch import build_model
from demixer.models.demucs_backend import import_demucs, openunmix_without_init
from demixer.models.msst.config import parse_config, read_config
from demixer.models.msst.user import open_files
from msst_support import DATA, music, randomise

pytestmark = pytest.mark.usefixtures("one_torch_thread")

import_demucs()
with openunmix_without_init():  # MSST's copy imports Open-Unmix's filter, as demucs does
    from msst.models.demucs4ht import get_model as msst_htdemucs
from msst.utils.model_utils import demix  # noqa: E402

CONFIGS = {
    "vocals": "config_vocals_htdemucs.yaml",
    "4 stems": "config_musdb18_htdemucs.yaml",
    "6 stems, no bottom channels": "config_htdemucs_6stems.yaml",
    "drumsep (hdemucs)": "config_drumsep.yaml",
}
#: what the tests shrink, per network (the options' combination is the published one; a
#: published `bottom_channels` other than 0 becomes 32)
SMALL = {"htdemucs": {"channels": 8, "t_layers": 1, "t_heads": 2}, "hdemucs": {"channels": 8}}
RATE = 44100


def published(name: str) -> dict[str, Any]:
    """The published config, read as MSST reads an htdemucs config (OmegaConf)."""
    loaded: dict[str, Any] = OmegaConf.to_container(OmegaConf.load(DATA / CONFIGS[name]))  # type: ignore[assignment]
    return loaded


def shrunk(name: str, segment: float = 1.0) -> dict[str, Any]:
    config = copy.deepcopy(published(name))
    section = config[config["model"]]
    section.update(SMALL[config["model"]])
    if section.get("bottom_channels"):
        section["bottom_channels"] = 32
    config["training"]["segment"] = segment
    return config


def msst_network(config: dict[str, Any], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomise(msst_htdemucs(OmegaConf.create(config)), seed)


def test_a_published_config_is_read_as_msst_reads_it() -> None:
    """OmegaConf's YAML: `dconv_init: 1e-3` is a number (YAML 1.1 would read a string, and the
    network could not be built); the chunk is `training.samplerate * training.segment`."""
    config = read_config(DATA / CONFIGS["vocals"], arch="htdemucs")
    assert config.model["dconv_init"] == 0.001
    assert (config.sample_rate, config.channels, config.chunk_size) == (44100, 2, 485100)
    assert config.chunk_key == "the chunk (training.samplerate * training.segment)"
    assert config.stems == ("vocals", "other")
    assert read_config(DATA / CONFIGS["4 stems"], arch="htdemucs").stems == (
        "drums", "bass", "other", "vocals",
    )  # fmt: skip
    drums = read_config(DATA / CONFIGS["drumsep (hdemucs)"], arch="htdemucs")
    assert drums.model["model"] == "hdemucs"  # the network `model:` names, built from its section
    assert (drums.chunk_size, drums.stems) == (1764000, ("kick", "snare", "cymbals", "toms"))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_full_size_network_has_mssts_tensors(name: str) -> None:
    """Built at full size on the meta device from the file as it is: MSST's names and shapes."""
    config = read_config(DATA / CONFIGS[name], arch="htdemucs")
    with torch.device("meta"):
        ours = build_model("htdemucs", config.model_dict(), {}, config.instruments, None)
        theirs = msst_htdemucs(OmegaConf.create(published(name)))
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in theirs.state_dict().items()
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Any]]:
    """name -> (config file, checkpoint, MSST's network and config)."""
    root = tmp_path_factory.mktemp("htdemucs")
    out = {}
    for seed, name in enumerate(CONFIGS):
        config = shrunk(name)
        path = root / f"{seed}.yaml"
        path.write_text(yaml.dump(config))
        network = msst_network(config, seed)
        checkpoint = root / f"{seed}.ckpt"
        # MSST's own htdemucs checkpoints keep the weights under `state` (demucs' layout).
        torch.save({"state": network.state_dict()} if seed else network.state_dict(), checkpoint)
        out[name] = (path, checkpoint, (network, OmegaConf.create(config)))
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("length", ["under one chunk", "many chunks"])
def test_separation_equals_msst(
    files: dict[str, tuple[Path, Path, Any]],
    name: str,
    length: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, checkpoint, (network, reference_config) = files[name]
    step = RATE // reference_config.inference.num_overlap
    samples = int(RATE * 0.7) if length == "under one chunk" else 3 * RATE + step // 3
    mix = music(samples, seed=len(name))
    with torch.inference_mode():
        expected = demix(reference_config, network, mix, "cpu", "htdemucs")

    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator.from_backend(*open_files("htdemucs", config, checkpoint))
    got = separator.separate_array(mix, RATE)
    assert tuple(got) == tuple(reference_config.training.instruments)
    for stem, want in expected.items():
        assert got[stem].shape == mix.shape
        assert float(np.abs(want).max()) > 1e-3
        assert float(np.abs(got[stem] - want).max()) <= 1e-4, stem


def test_cli_runs_an_htdemucs_model_as_msst_does(
    files: dict[str, tuple[Path, Path, Any]], tmp_path: Path
) -> None:
    """`separate --arch htdemucs --model-config --model-path`, a song of several chunks."""
    config, checkpoint, (network, reference_config) = files["vocals"]
    mix = music(2 * RATE + 777, seed=5)
    sf.write(tmp_path / "song.wav", mix.T, RATE, subtype="FLOAT")
    with torch.inference_mode():
        expected = demix(reference_config, network, mix, "cpu", "htdemucs")
    ran = demixer_here(
        "separate", tmp_path / "song.wav", "--arch", "htdemucs", "--model-config", config,
        "--model-path", checkpoint, "-o", tmp_path / "out", "--format", "wav",
        "--bit-depth", "32f", model_dir=tmp_path / "models", env={"DEMIXER_PRECISION": "fp32"},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    for stem in ("vocals", "other"):
        got, rate = sf.read(tmp_path / "out" / f"song_{stem}.wav", dtype="float32")
        assert rate == RATE
        assert float(np.abs(got.T - expected[stem]).max()) <= 1e-4, stem


def test_a_checkpoint_saved_by_demucs_training_runs_its_weights_and_nothing_else(
    files: dict[str, tuple[Path, Path, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DrumSep's release asset is demucs' own training checkpoint: the network's class and
    arguments (its sources in Spanish, a Fraction) beside float16 weights under `state`. MSST
    unpickles it whole; demixer reads those classes as inert stand-ins and takes `state`, and
    separates as MSST does with the same weights. A file naming any other class is refused."""
    from demucs.hdemucs import HDemucs

    config, _, (network, reference_config) = files["drumsep (hdemucs)"]
    state = {k: v.half() for k, v in network.state_dict().items()}
    path = tmp_path / "model_drumsep.th"
    kwargs = {"sources": ["bombo", "redoblante", "platillos", "toms"], "segment": Fraction(1)}
    torch.save({"klass": HDemucs, "args": (), "kwargs": kwargs, "state": state}, path)
    reference = copy.deepcopy(network)
    reference.load_state_dict(torch.load(path, weights_only=False)["state"])  # as MSST loads it
    mix = music(2 * RATE + 99, seed=11)
    with torch.inference_mode():
        expected = demix(reference_config, reference, mix, "cpu", "htdemucs")

    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    got = Separator.from_backend(*open_files("htdemucs", config, path)).separate_array(mix, RATE)
    assert tuple(got) == ("kick", "snare", "cymbals", "toms")  # named by the config
    for stem, want in expected.items():
        assert float(np.abs(want).max()) > 1e-3
        assert float(np.abs(got[stem] - want).max()) <= 1e-4, stem

    other = tmp_path / "other.th"
    torch.save({"klass": HDemucs, "loss": torch.nn.L1Loss, "state": state}, other)
    with pytest.raises(ModelUnavailable) as refused:
        open_files("htdemucs", config, other)
    assert "Unsupported global: GLOBAL torch.nn.modules.loss.L1Loss" in refused.value.message


def _text(name: str, change: Any) -> str:
    config = published(name)
    change(config)
    return yaml.dump(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["htdemucs"].update(segment=11),
            "htdemucs.segment is not read: MSST gives the network training.segment "
            "(remove htdemucs.segment)",
        ),
        (
            lambda c: c["audio"].update(sample_rate=48000),
            "audio.sample_rate 48000 and training.samplerate 44100 differ: the network runs at "
            "the latter",
        ),
        (
            lambda c: c["training"].update(segment="11s"),
            "training.segment must be a positive number of seconds, not '11s'",
        ),
        (
            lambda c: c.update(model="mdx23c"),
            "`model: mdx23c` is not a network MSST's htdemucs builds (demucs' demucs, hdemucs, "
            "htdemucs)",
        ),
    ],
)
def test_a_config_demixer_cannot_run_as_msst_does_is_refused_saying_why(
    change: Any, message: str
) -> None:
    with pytest.raises(InvalidModelConfig) as caught:
        parse_config(_text("vocals", change), arch="htdemucs", source="c.yaml")
    assert caught.value.message == f"c.yaml: {message}"


def test_options_demucs_does_not_take_are_named() -> None:
    config = parse_config(
        _text("vocals", lambda c: c["htdemucs"].update(num_subbands=4, t_windows=3)),
        arch="htdemucs",
        source="c.yaml",
    )
    with pytest.raises(InvalidModelConfig) as caught, torch.device("meta"):
        build_model("htdemucs", config.model_dict(), {}, config.instruments, None)
    assert caught.value.message == (
        "htdemucs: num_subbands 4 is not run by demixer: it runs HTDemucs with num_subbands 1, "
        "as every htdemucs config MSST publishes sets it"
    )
    config = parse_config(
        _text("vocals", lambda c: c["htdemucs"].update(t_windows=3)), arch="htdemucs"
    )
    with pytest.raises(InvalidModelConfig) as caught, torch.device("meta"):
        build_model("htdemucs", config.model_dict(), {}, config.instruments, None)
    assert caught.value.message == (
        "htdemucs: t_windows is not an option of demucs' HTDemucs (MSST would refuse it too)"
    )


def test_an_htdemucs_config_given_for_another_architecture_says_which_it_is() -> None:
    text = (DATA / CONFIGS["vocals"]).read_text()
    with pytest.raises(InvalidModelConfig) as caught:
        parse_config(text, arch="bs_roformer", source="c.yaml")
    assert caught.value.message == (
        "c.yaml: it is a config for htdemucs (`model: htdemucs`), not for bs_roformer: run it "
        "with --arch htdemucs"
    )
