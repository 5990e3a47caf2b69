"""Bandit v2 (``bandit-v2-dnr``, ``--arch bandit_v2``) and BandIt (``bandit-plus-dnr``,
``--arch bandit``) compute what MSST's ``bandit_v2`` and ``bandit`` do.

The oracles are MSST's own networks (PyPI ``msst`` 0.1.0, ``msst.models.bandit_v2`` and
``msst.models.bandit``), importable through ``bandit_reference`` (which stands in for the
torchaudio transforms and the Lightning base class they import), and MSST's own ``demix``.
As in ``test_msst_exact.py``: the published
config (``tests/data/msst``, the catalogue's pinned bytes) shrunk in width, depth and chunk
length, MSST's randomised weights, fp32.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml  # type: ignore[import-untyped]

from bandit_reference import BandIt as MsstBandIt
from bandit_reference import Bandit as MsstBandit
from bandit_reference import unscripted
from demixer.engine import Separator
from demixer.errors import InvalidModelConfig
from demixer.models.arch import FP32_BY_DEFAULT, build_model
from demixer.models.arch.bandit import musical_bands
from demixer.models.msst.config import parse_config, read_config
from demixer.models.msst.user import open_files
from demixer.models.registry import get_spec
from msst_support import DATA, music, randomise, write_config

PUBLISHED = DATA / "config_dnr_bandit_v2_mus64.yaml"
SMALL = {"n_sqm_modules": 1, "emb_dim": 16, "rnn_dim": 16, "mlp_dim": 32}
RATE = 48000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def published(path: Path = PUBLISHED) -> dict[str, Any]:
    with path.open() as fh:
        config: dict[str, Any] = yaml.load(fh, Loader=yaml.FullLoader)  # as MSST reads it
    return config


def shrunk(path: Path = PUBLISHED, section: str = "kwargs", **options: Any) -> dict[str, Any]:
    """The config at ``path`` shrunk (SMALL), with ``options`` in its ``section``."""
    config = published(path)
    config[section].update(SMALL)
    config[section].update(options)
    return config


def test_the_published_config_reads_as_msst_reads_it() -> None:
    config = read_config(PUBLISHED, arch="bandit_v2")
    assert (config.arch, config.stems, config.sample_rate) == (
        "bandit_v2", ("speech", "music", "sfx"), 48000,
    )  # fmt: skip
    assert (config.chunk_size, config.num_overlap, config.batch_size) == (384000, 4, 8)
    assert config.model["n_sqm_modules"] == 8 and config.model["rnn_type"] == "GRU"


# Every option the reference takes that changes what it computes, over the published config.
NETWORKS: dict[str, dict[str, Any]] = {
    "published": {},
    "lstm, one direction": {"rnn_type": "LSTM", "bidirectional": False},
    "real masks, no band weights, relu": {
        "complex_mask": False, "use_freq_weights": False, "hidden_activation": "ReLU",
    },
    "48 bands, 1024-point stft, hamming, zero padding, not normalized": {
        "n_bands": 48, "n_fft": 1024, "win_length": 1024, "hop_length": 256,
        "window_fn": "hamming_window", "pad_mode": "constant", "normalized": False,
    },
    "two modules, a short window": {"n_sqm_modules": 2, "win_length": 1536},
}  # fmt: skip


@pytest.mark.parametrize(
    ("bands", "n_fft", "fs"),
    [(64, 2048, 44100), (64, 2048, 48000), (48, 1024, 44100), (100, 512, 44100)],
)
def test_the_musical_band_layout_is_mssts(bands: int, n_fft: int, fs: int) -> None:
    """Which bins each band holds and its share of each: exactly (a bin more or less is a
    network of other shapes; 100 bands over 257 bins leave some without one)."""
    from msst.models.bandit_v2.utils import MusicalBandsplitSpecification

    theirs = MusicalBandsplitSpecification(nfft=n_fft, fs=fs, n_bands=bands)
    specs, weights = musical_bands(bands, n_fft, fs)
    assert specs == theirs.get_band_specs()
    assert len(weights) == len(theirs.get_freq_weights())
    for mine, reference in zip(weights, theirs.get_freq_weights(), strict=True):
        assert mine.dtype == reference.dtype == torch.float64
        assert torch.equal(mine, reference)


def reference_files(
    root: Path, arch: str, config: dict[str, Any], checkpoint_name: str
) -> tuple[Path, Path, Any, Any]:
    """``config`` with chunks of 24 hops written to ``root``, MSST's network for it built by
    MSST's own get_model_from_config (BandIt's unscripted) with randomised weights, its
    checkpoint, and MSST's config object."""
    from msst.utils.settings import get_model_from_config

    config["audio"]["chunk_size"] = 24 * 512
    path = write_config(config, root / f"{arch}.yaml")
    with unscripted():
        reference, reference_config = get_model_from_config(arch, str(path))
    randomise(reference, seed=3)
    checkpoint = root / checkpoint_name
    torch.save(reference.state_dict(), checkpoint)
    return path, checkpoint, reference, reference_config


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any, Any]:
    """The published Bandit v2 config shrunk, MSST's randomised network and checkpoint."""
    return reference_files(tmp_path_factory.mktemp("bandit"), "bandit_v2", shrunk(), "bandit.ckpt")


def test_it_runs_in_fp32_unless_bf16_is_forced(files: tuple[Path, Path, Any, Any]) -> None:
    """Not measured in bf16, so `auto` keeps fp32 even where bf16 is native; forced, bf16 runs
    (its matmul layers' weights stored in bf16, the recurrent layers' and the STFT in fp32)."""
    from demixer.models.msst.backend import backend_for

    config, checkpoint, _, _ = files
    assert "bandit_v2" in FP32_BY_DEFAULT
    read = read_config(config, arch="bandit_v2")
    assert backend_for(read, checkpoint, precision="auto").precision == "fp32"
    forced = backend_for(read, checkpoint, precision="bf16")
    mix = music(6000, seed=6)
    exact = backend_for(read, checkpoint, precision="fp32").separate(mix)
    fast = forced.separate(mix)
    for stem in ("speech", "music", "sfx"):
        noise = float(np.sum((fast[stem] - exact[stem]) ** 2))
        assert 10 * np.log10(float(np.sum(exact[stem] ** 2)) / noise) > 20.0, stem


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"in_channels": 2}, "kwargs.in_channels must be 1, not 2: MSST's bandit_v2 separates "
         "each audio channel on its own"),
        ({"band_type": "mel"}, "kwargs.band_type must be musical (the only layout the "
         "reference builds), not 'mel'"),
        ({"rnn_type": "Mamba"}, "kwargs.rnn_type must be one of GRU, LSTM, RNN, not 'Mamba'"),
        ({"n_bands": 0}, "kwargs.n_bands must be an integer >= 1, not 0"),
        ({"use_film": True}, "unknown kwargs option(s): use_film"),
        ({"stems": ["speech", "music", "music"]}, "kwargs.stems repeats a name: "
         "['speech', 'music', 'music']"),
        ({"stems": ["speech", "music"]}, "kwargs.stems (2: speech, music) and "
         "training.instruments (3: speech, music, sfx) must name as many stems: the network "
         "gives one per stem, named by the instruments in order"),
    ],
)  # fmt: skip
def test_a_config_it_cannot_compute_is_refused_naming_the_option(
    options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    config = write_config(shrunk(**options), tmp_path / "bad.yaml")
    checkpoint = tmp_path / "none.ckpt"
    torch.save({}, checkpoint)
    with pytest.raises(InvalidModelConfig) as refused:
        open_files("bandit_v2", config, checkpoint)
    assert refused.value.message == f"{config}: bandit_v2: {message}"


def test_a_config_given_the_wrong_architecture_is_named_for_what_it_is() -> None:
    text = PUBLISHED.read_text("utf-8")
    with pytest.raises(InvalidModelConfig) as caught:
        parse_config(text, arch="bs_roformer", source="dnr.yaml")
    assert caught.value.message == (
        "dnr.yaml: it is a config for bandit_v2 (its options are under `kwargs:`), not for "
        "bs_roformer: run it with --arch bandit_v2"
    )
    kim = (DATA / "config_vocals_mel_band_roformer_kj.yaml").read_text("utf-8")
    with pytest.raises(InvalidModelConfig) as caught:
        parse_config(kim, arch="bandit_v2", source="kim.yaml")
    assert caught.value.message == (
        "kim.yaml: it is a config for mel_band_roformer (it has model.num_bands), not for "
        "bandit_v2: run it with --arch mel_band_roformer"
    )
    unknown = "training:\n  instruments: [a, b]\nmodel:\n  dim: 8\n"  # whose is it? not said
    with pytest.raises(InvalidModelConfig) as caught:
        parse_config(unknown, arch="bandit_v2", source="mine.yaml")
    assert caught.value.message == (
        "mine.yaml: the `kwargs:` section bandit_v2 reads is missing; its options are under "
        "`model:`, as in a config for another architecture (say which with --arch)"
    )


# --- BandIt (MSST's `bandit`: BandIt Plus) ---------------------------------------------------

PLUS = DATA / "config_dnr_bandit_bsrnn_multi_mus64.yaml"
PLUS_RATE = 44100


def plus_shrunk(**options: Any) -> dict[str, Any]:
    return shrunk(PLUS, "model", **options)


def test_bandit_plus_config_reads_as_msst_reads_it() -> None:
    config = read_config(PLUS, arch="bandit")
    assert (config.arch, config.stems, config.sample_rate) == (
        "bandit", ("speech", "music", "effects"), 44100,
    )  # fmt: skip
    assert (config.chunk_size, config.num_overlap, config.batch_size) == (264600, 4, 1)
    assert config.model["band_specs"] == "musical" and config.model["in_channel"] == 1


# Every option BandIt's reference takes that changes what it computes, over the published one.
PLUS_NETWORKS: dict[str, dict[str, Any]] = {
    "published": {},
    "lstm, one direction": {"rnn_type": "LSTM", "bidirectional": False},
    "real masks, no band weights, relu": {
        "complex_mask": False, "use_freq_weights": False, "hidden_activation": "ReLU",
    },
    "48 bands at 48 kHz, two modules": {"n_bands": 48, "fs": 48000, "n_sqm_modules": 2},
    # MSST's wrapper never passes its spectral options on (its base class is called without
    # arguments): its STFT is always the default; cond_dim never reaches the mask estimators.
    "spectral options and a condition size, ignored as the reference ignores them": {
        "win_length": 1024, "hop_length": 256, "window_fn": "hamming_window",
        "pad_mode": "reflect", "normalized": False, "cond_dim": 3,
    },
}  # fmt: skip


# Both model types: MSST's class, the config section it is built from, a shrunk config.
REFERENCES: dict[str, tuple[Any, str, Any]] = {
    "bandit_v2": (MsstBandit, "kwargs", shrunk),
    "bandit": (MsstBandIt, "model", plus_shrunk),
}
NETWORK_CASES = [("bandit_v2", case) for case in NETWORKS] + [
    ("bandit", case) for case in PLUS_NETWORKS
]


@pytest.mark.parametrize(("arch", "case"), NETWORK_CASES)
def test_network_equals_msst(arch: str, case: str) -> None:
    reference_class, section, shrink = REFERENCES[arch]
    options = (NETWORKS if arch == "bandit_v2" else PLUS_NETWORKS)[case]
    config = shrink(**options)
    reference = randomise(reference_class(**config[section]))
    ours = build_model(
        arch, config[section], config["audio"], config["training"]["instruments"], None
    )
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict())
    wave = torch.from_numpy(np.stack([music(RATE + 777, seed=1), music(RATE + 777, seed=2)]))
    with torch.inference_mode():
        expected, got = reference(wave), ours(wave)
    assert got.shape == expected.shape == (2, 3, 2, RATE + 777)
    assert float(expected.abs().max()) > 1e-3
    assert float((got - expected).abs().max()) <= 1e-5


@pytest.mark.parametrize(
    ("arch", "entry", "path"),
    [("bandit_v2", "bandit-v2-dnr", PUBLISHED), ("bandit", "bandit-plus-dnr", PLUS)],
)
def test_the_pinned_config_makes_tensors_the_size_of_the_pinned_checkpoint(
    arch: str, entry: str, path: Path
) -> None:
    """Built full size, by MSST's class and by demixer's, the published config holds as many
    numbers as the entry's pinned checkpoint has room for: its size less torch.save's few
    hundred bytes per entry (a config that did not describe it would miss by megabytes).
    Tensors shared (Bandit v2's `combined` names; the band weights of the three stems'
    estimators) are stored once."""
    reference_class, section, _ = REFERENCES[arch]
    config = published(path)  # built on the CPU: the band layout is read from real numbers
    theirs = reference_class(**config[section])
    ours = build_model(
        arch, config[section], config["audio"], config["training"]["instruments"], None
    )

    def stored(net: torch.nn.Module) -> int:
        tensors = [*net.named_parameters(), *net.named_buffers()]
        return sum(t.numel() * t.element_size() for _, t in tensors)

    assert stored(theirs) == stored(ours) == 148_124_272  # the same dimensions in both
    entries = len(theirs.state_dict())
    spec = get_spec(entry)
    pinned = next(w.size for w in spec.weights if w.name != spec.config_name)
    assert pinned is not None
    assert 200 * entries < pinned - stored(ours) < 600 * entries
    assert spec.stems == tuple(config["training"]["instruments"])
    assert spec.sample_rate == config["audio"]["sample_rate"]


@pytest.fixture(scope="module")
def plus_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any, Any]:
    """The BandIt Plus config shrunk (batches of 2), MSST's randomised network and
    checkpoint."""
    config = plus_shrunk()
    config["inference"]["batch_size"] = 2
    return reference_files(
        tmp_path_factory.mktemp("bandit_plus"), "bandit", config, "bandit_plus.chpt"
    )


@pytest.mark.parametrize("length", ["under one chunk", "many chunks"])
@pytest.mark.parametrize(
    ("arch", "fixture", "rate", "stems"),
    [
        ("bandit_v2", "files", RATE, ["speech", "music", "sfx"]),
        ("bandit", "plus_files", PLUS_RATE, ["speech", "music", "effects"]),
    ],
)
def test_separation_equals_msst(
    arch: str, fixture: str, rate: int, stems: list[str], length: str,
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """MSST's own demix (its overlapping chunks, fade windows, edge padding and batches)
    against demixer's streaming engine, at the model's rate: no resampling either side."""
    from msst.utils.model_utils import demix

    config, checkpoint, reference, reference_config = request.getfixturevalue(fixture)
    chunk = reference_config.audio.chunk_size
    samples = int(chunk * 0.7) if length == "under one chunk" else 5 * chunk + 1111
    mix = music(samples, seed=4)
    with torch.inference_mode():
        expected = demix(reference_config, reference, mix, "cpu", arch)
    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator.from_backend(*open_files(arch, config, checkpoint))
    got = separator.separate_array(mix, rate)
    assert list(got) == stems == list(expected)
    for stem in got:
        assert got[stem].shape == mix.shape
        assert float(np.abs(expected[stem]).max()) > 1e-3
        assert float(np.abs(got[stem] - expected[stem]).max()) <= 1e-4, stem


@pytest.mark.parametrize(
    ("arch", "fixture", "song", "subtype", "asked", "written"),
    [
        ("bandit_v2", "files", "clip.wav", "FLOAT", "dialogue,effects",
         ["clip_residual.wav", "clip_sfx.wav", "clip_speech.wav"]),
        ("bandit", "plus_files", "clip.flac", "PCM_16", "sound_effects",
         ["clip_effects.wav", "clip_residual.wav"]),
    ],
)  # fmt: skip
def test_cli_takes_a_films_stems_by_the_trades_names(
    arch: str, fixture: str, song: str, subtype: str, asked: str, written: list[str],
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:  # fmt: skip
    """A video's audio at 44.1 kHz, separated by a user's own Bandit v2 or BandIt (`--arch`),
    asked for by the film trade's names: each file written, named from the config as every
    `--arch` model's are (Bandit v2's `speech` and `sfx`, BandIt's `effects`), at the input's
    rate, the rest as the residual."""
    config, checkpoint, _, _ = request.getfixturevalue(fixture)
    sf.write(tmp_path / song, music(30000, seed=5).T, 44100, subtype=subtype)
    cli = Path(sys.executable).parent / "demixer"
    env = {**os.environ, "DEMIXER_MODEL_DIR": str(tmp_path / "models"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [str(cli), "separate", str(tmp_path / song), "--arch", arch,
         "--model-config", str(config), "--model-path", str(checkpoint),
         "--stems", asked, "-o", str(tmp_path / "out")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.*")) == written
    for name in written:
        info = sf.info(tmp_path / "out" / name)
        assert (info.samplerate, info.channels, info.frames) == (44100, 2, 30000), name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"band_specs": "dnr:speech"}, "model.band_specs must be musical (the layout of "
         "every published bandit model; demixer builds no other), not 'dnr:speech'"),
        ({"band_specs": "tribark"}, "model.band_specs must be musical (the layout of every "
         "published bandit model; demixer builds no other), not 'tribark'"),
        ({"in_channel": 2}, "model.in_channel must be 1, not 2: MSST's bandit separates each "
         "audio channel on its own"),
        ({"n_bands": None}, "model.n_bands must be given (the reference has no default)"),
        ({"mult_add_mask": True}, "model.mult_add_mask must be false: the reference's masks "
         "for it are not defined"),
        ({"n_fft": 1024}, "model.n_fft must be 2048, not 1024: MSST's bandit computes its "
         "STFT with 2048 points whatever the config says (its spectral options never reach "
         "it) and its bands and masks with n_fft's bins, so no other value runs"),
        ({"stems": ["speech", "music", "mne:+"]}, "model.stems names 'mne:+', for which the "
         "reference estimates no stem"),
        ({"n_heads": 8}, "unknown model option(s): n_heads"),
    ],
)  # fmt: skip
def test_a_bandit_config_it_cannot_compute_is_refused_naming_the_option(
    options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    config = write_config(plus_shrunk(**options), tmp_path / "bad.yaml")
    checkpoint = tmp_path / "none.chpt"
    torch.save({}, checkpoint)
    with pytest.raises(InvalidModelConfig) as refused:
        open_files("bandit", config, checkpoint)
    assert refused.value.message == f"{config}: bandit: {message}"


def test_a_bandit_config_given_another_architecture_is_named_for_what_it_is(
    tmp_path: Path,
) -> None:
    with pytest.raises(InvalidModelConfig) as caught:  # its options are not under `kwargs:`
        parse_config(PLUS.read_text("utf-8"), arch="bandit_v2", source="plus.yaml")
    assert caught.value.message == (
        "plus.yaml: it is a config for bandit (it has model.band_specs), not for bandit_v2: "
        "run it with --arch bandit"
    )
    checkpoint = tmp_path / "none.chpt"
    torch.save({}, checkpoint)
    with pytest.raises(InvalidModelConfig) as caught:  # refused before the checkpoint is read
        open_files("bs_roformer", PLUS, checkpoint)
    assert caught.value.message == (
        f"{PLUS}: it is a config for bandit (it has model.band_specs), not for bs_roformer: "
        "run it with --arch bandit"
    )
