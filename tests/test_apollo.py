"""Apollo (``--arch apollo``) computes what MSST's ``apollo`` does: audio restoration.

The oracle is MSST's own network (PyPI ``msst`` 0.1.0, ``msst.models.look2hear``, the authors'
code) and MSST's own ``demix``, on MSST's published ``config_apollo.yaml`` (``tests/data/msst``)
shrunk in width, depth and chunk length, MSST's randomised weights, fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml  # type: ignore[import-untyped]

from demixer.engine import Separator
from demixer.errors import InvalidModelConfig
from demixer.models.arch import FP32_BY_DEFAULT, build_model
from demixer.models.msst.config import read_config
from demixer.models.msst.user import open_files
from msst_support import DATA, music, randomise, write_config

PUBLISHED = DATA / "config_apollo.yaml"
RATE = 44100

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def published() -> dict[str, Any]:
    with PUBLISHED.open() as fh:
        config: dict[str, Any] = yaml.load(fh, Loader=yaml.FullLoader)  # as MSST reads it
    return config


def shrunk(**options: Any) -> dict[str, Any]:
    config = published()
    config["model"].update({"feature_dim": 32, "layer": 2})
    config["model"].update(options)
    return config


def reference_network(model: dict[str, Any]) -> torch.nn.Module:
    from msst.models.look2hear.models import BaseModel

    return BaseModel.apollo(**model).eval()


def test_the_published_config_reads_as_msst_reads_it() -> None:
    config = read_config(PUBLISHED, arch="apollo")
    assert (config.arch, config.stems, config.sample_rate) == (
        "apollo", ("restored", "addition"), 44100,
    )  # fmt: skip
    assert (config.chunk_size, config.num_overlap, config.batch_size) == (132300, 4, 4)
    assert config.target_instrument == "restored"
    assert "apollo" in FP32_BY_DEFAULT


# The options that change what the reference computes: width (down to heads 2 wide), depth, the
# window in milliseconds, the rate it is computed at.
NETWORKS: dict[str, dict[str, Any]] = {
    "published, shrunk": {},
    "heads 2 wide, one layer": {"feature_dim": 16, "layer": 1},
    "a width not divisible by the heads": {"feature_dim": 36, "layer": 1},
    "a 10-ms window at 48 kHz": {"win": 10, "sr": 48000},
}


@pytest.mark.parametrize("case", list(NETWORKS))
def test_network_equals_msst(case: str) -> None:
    config = shrunk(**NETWORKS[case])
    training = config["training"]
    reference = randomise(reference_network(config["model"]))
    ours = build_model(
        "apollo", config["model"], config["audio"], training["instruments"],
        training["target_instrument"],
    )  # fmt: skip
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict())
    wave = torch.from_numpy(np.stack([music(RATE + 777, seed=1), music(RATE + 777, seed=2)]))
    with torch.inference_mode():
        expected, got = reference(wave), ours(wave)
    assert got.shape == expected.shape == (2, 2, RATE + 777)
    assert float(expected.abs().max()) > 1e-3
    assert float((got - expected).abs().max()) <= 1e-5


def test_slices_of_rows_give_the_numbers_of_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long chunk's frames (across the bands) and bands (along time) are computed a slice at a
    time to bound memory: still MSST's numbers, slices of 3 frames and of 1 band here."""
    from demixer.models.arch import apollo

    monkeypatch.setattr(apollo, "_SLICE_NUMBERS", 3 * 8 * 32 * 80)
    config = shrunk()
    reference = randomise(reference_network(config["model"]))
    ours = build_model("apollo", config["model"], config["audio"], ["restored"], None)
    ours.load_state_dict(reference.state_dict())
    wave = torch.from_numpy(music(8000, seed=3))[None]
    with torch.inference_mode():
        expected, got = reference(wave), ours(wave)
    assert float(expected.abs().max()) > 1e-3
    assert float((got - expected).abs().max()) <= 1e-5


def test_the_published_network_is_the_size_the_authors_give() -> None:
    """Full size from the published config, on the meta device: MSST's tensor names and
    shapes, and 16.54 M parameters, the figure in the Apollo authors' README."""
    config = published()
    training = config["training"]
    with torch.device("meta"):
        ours = build_model(
            "apollo", config["model"], config["audio"], training["instruments"],
            training["target_instrument"],
        )  # fmt: skip
        theirs = reference_network(config["model"])
    shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == shapes
    assert round(sum(p.numel() for p in ours.parameters()) / 1e6, 2) == 16.54


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any, Any]:
    """A shrunk published config (chunks of 0.3 s, 2 overlaps), MSST's randomised network, and
    its checkpoint as the authors' ``serialize`` writes one: the weights under
    ``state_dict`` beside the model's name and arguments and ``torch.__version__``."""
    from msst.utils.settings import get_model_from_config

    root = tmp_path_factory.mktemp("apollo")
    config = shrunk()
    config["audio"]["chunk_size"] = 13230
    config["inference"]["num_overlap"] = 2
    path = write_config(config, root / "apollo.yaml")
    reference, reference_config = get_model_from_config("apollo", str(path))
    randomise(reference, seed=3)
    checkpoint = root / "apollo.bin"
    torch.save(
        {
            "model_name": "Apollo", "state_dict": reference.state_dict(),
            "model_args": {"n_sample_rate": 2},
            "infos": {"software_versions": {"torch_version": torch.__version__}},
        },
        checkpoint,
    )  # fmt: skip
    return path, checkpoint, reference, reference_config


@pytest.mark.parametrize("length", ["under one chunk", "many chunks"])
def test_restoration_equals_msst(
    files: tuple[Path, Path, Any, Any], length: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MSST's own demix (its overlapping chunks, fade windows, edge padding, batches of 4)
    against demixer's streaming engine; `addition` is the mixture less the restored audio."""
    from msst.utils.model_utils import demix

    config, checkpoint, reference, reference_config = files
    chunk = reference_config.audio.chunk_size
    samples = int(chunk * 0.7) if length == "under one chunk" else 5 * chunk + 1111
    mix = music(samples, seed=4)
    with torch.inference_mode():
        expected = demix(reference_config, reference, mix, "cpu", "apollo")
    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator.from_backend(*open_files("apollo", config, checkpoint))
    got = separator.separate_array(mix, RATE)
    assert list(got) == ["restored", "addition"] and list(expected) == ["restored"]
    assert float(np.abs(expected["restored"]).max()) > 1e-3
    assert float(np.abs(got["restored"] - expected["restored"]).max()) <= 1e-4
    assert float(np.abs(got["addition"] - (mix - expected["restored"])).max()) <= 1e-4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model.heads": 4}, "apollo: unknown model option(s): heads"),
        ({"model.layer": None}, "apollo: model.layer must be an integer >= 1, not None"),
        ({"model.feature_dim": 24}, "apollo: model.feature_dim (24) must give its 8 attention "
         "heads an even width of at least 2 (feature_dim // 8, 3 here): rotary positions turn "
         "pairs of numbers"),
        ({"model.win": 3}, "apollo: model.win (3 ms at model.sr 44100) gives a 132-sample "
         "window: at least 160 samples are needed for its 80 bands to hold a bin each"),
        ({"training.target_instrument": None}, "apollo: the network gives one stem (the "
         "restored audio): training.target_instrument must name it among "
         "training.instruments (restored, addition)"),
    ],
)  # fmt: skip
def test_a_config_it_cannot_compute_is_refused_naming_the_option(
    change: dict[str, Any], message: str, tmp_path: Path
) -> None:
    config = shrunk()
    for dotted, value in change.items():
        section, key = dotted.split(".")
        config[section][key] = value
    path = write_config(config, tmp_path / "bad.yaml")
    checkpoint = tmp_path / "none.bin"
    torch.save({}, checkpoint)
    with pytest.raises(InvalidModelConfig) as refused:
        open_files("apollo", path, checkpoint)
    assert refused.value.message == f"{path}: {message}"
