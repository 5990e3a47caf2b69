"""demixer's MSST models compute what MSST computes: the oracle is MSST itself.

PyPI ``msst`` 0.1.0 is ZFTurbo's Music-Source-Separation-Training (MIT), installed ``--no-deps``
as a test dependency. Every test builds a model with MSST's own classes from a real published
config (shrunk in width, depth and chunk length, keeping its option combination), perturbs its
weights at random, and compares:

- the networks alone: demixer's ``demixer.models.arch`` module, loaded with MSST's state_dict,
  against MSST's module on the same batch (fp32, 1e-5 peak);
- whole separations: MSST's own ``demix`` (its chunking, fade windows, edge padding, batches)
  against demixer's streaming engine and its CLI, ``DEMIXER_PRECISION=fp32`` (1e-4 peak), on an
  input shorter than one chunk and on one of many chunks that is no multiple of the step;
- the windowing alone, with a cheap position-dependent model, over many lengths, overlaps,
  batch sizes and input block sizes: bit for bit.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml  # type: ignore[import-untyped]
from msst.models.bs_roformer import BSConformer, BSRoformer, MelBandConformer, MelBandRoformer
from msst.utils.model_utils import apply_tta, demix
from msst.utils.settings import get_model_from_config

import msst_support
from cli_support import demixer_here
from demixer.audio import OutputFormat
from demixer.engine import Separator
from demixer.errors import InvalidModelConfig
from demixer.models.arch import build_model
from demixer.models.arch.mel_band_roformer import mel_filterbank
from demixer.models.msst.checkpoint import load_weights
from demixer.models.msst.inference import Chunking, demix_stream
from demixer.models.msst.user import open_files
from demixer.models.precision import autocast
from demixer.models.registry import get_spec
from msst_support import music, randomise, shrunk, write_config

REFERENCE = {
    "bs_roformer": BSRoformer,
    "mel_band_roformer": MelBandRoformer,
    "bs_conformer": BSConformer,
    "mel_band_conformer": MelBandConformer,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the networks ---------------------------------------------------------------------------

# (published config, model options over the shrunk one): every option the community's
# checkpoints set, in the combinations the published configs use, plus the rarer ones.
NETWORKS: dict[str, tuple[str, dict[str, Any]]] = {
    "bs viperx 1297": ("viperx-bs-1297", {}),
    "bs 4 stems, mlp x2, sage": ("bs-4stem-sage", {}),
    "bs linear+skip, no flash, no zero_dc": (
        "bs-musdb-target",
        {
            "depth": 2,
            "linear_transformer_depth": 1,
            "skip_connection": True,
            "flash_attn": False,
            "zero_dc": False,
        },
    ),
    "bs target head of 2, short window, normalized stft": (
        "viperx-bs-other",
        {"num_stems": 2, "stft_win_length": 1536, "stft_normalized": True},
    ),
    # MSST's BS PolarFormer (vocals, its release v1.0.20): PoPE positions in place of rotary.
    "bs PoPE": ("viperx-bs-1297", {"use_pope": True}),
    "mel kim vocals": ("kim-mel-vocals", {}),
    "mel 4 stems": ("mel-4stem", {}),
    # becruily's guitar model (mel-roformer-guitar-becruily): mask estimators of
    # mlp_expansion_factor 1.
    "mel guitar, mlp x1": ("guitar-becruily", {}),
    "mel mono, linear+skip, depth 1 masks, no flash": (
        "mel-vocals-512",
        {
            "depth": 2,
            "stereo": False,
            "linear_transformer_depth": 1,
            "skip_connection": True,
            "mask_estimator_depth": 1,
            "flash_attn": False,
            "num_bands": 48,
        },
    ),
    # MSST's BS- and Mel-Band Conformers (vocals, and the Mel one's 4 stems), and a Conformer
    # with every option its configs leave at their defaults set otherwise.
    "bs conformer vocals": ("bs-conformer-vocals", {}),
    "mel conformer vocals": ("mel-conformer-vocals", {}),
    "mel conformer 4 stems": ("mel-conformer-4stem", {}),
    "bs conformer linear+skip, kernel 7, ff x2, conv x1": (
        "bs-conformer-vocals",
        {
            "depth": 2,
            "linear_conformer_depth": 1,
            "skip_connection": True,
            "conv_kernel_size": 7,
            "ff_mult": 2,
            "conv_expansion_factor": 1,
        },
    ),
    # 10 of the 128 bands hold none of the 257 bins, alone or among others in a band group.
    "mel mono, 128 bands over a 512-point stft": (
        "mel-vocals-512",
        {
            "stereo": False,
            "num_bands": 128,
            "stft_n_fft": 512,
            "stft_win_length": 512,
            "stft_hop_length": 128,
        },
    ),
}


@pytest.mark.parametrize("case", list(NETWORKS))
def test_network_equals_msst(case: str) -> None:
    name, options = NETWORKS[case]
    config, arch = shrunk(name, **options)
    model = dict(config["model"])
    # MSST 0.1.0 has no sage_attention argument (an approximate kernel for the same attention):
    # demixer accepts it and computes the exact attention, which is what MSST computes without.
    reference = randomise(
        REFERENCE[arch](**{k: v for k, v in model.items() if k != "sage_attention"})
    )
    with torch.no_grad():  # a Conformer's BatchNorm: statistics that matter
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)  # type: ignore[operator]
                module.running_var.uniform_(0.5, 2.0)  # type: ignore[operator]
    training = config["training"]
    ours = build_model(
        arch, model, config["audio"], training["instruments"], training["target_instrument"]
    )
    load_weights(ours, reference.state_dict(), checkpoint="msst", config=case)

    channels = 2 if model.get("stereo") else 1
    hop = model.get("stft_hop_length", 512)
    samples = hop * 24 + (0 if arch.startswith("mel") else 123)  # MSST's mel crops to hops
    x = torch.from_numpy(np.stack([music(samples, channels, seed) for seed in (1, 2)]))
    with torch.inference_mode():
        expected = reference(x)
        got = ours(x)
    if model.get("num_stems", 1) > 1 and training.get("target_instrument"):
        target = training["instruments"].index(training["target_instrument"])
        expected = expected[:, target : target + 1]  # MSST's demix runs that head alone too
    if arch == "bs_conformer" and expected.ndim == 3:  # its one stem without its axis
        expected = expected[:, None]
    assert got.shape == expected.shape
    assert float(expected.abs().max()) > 1e-2  # a real signal, not a silent one
    assert float((got - expected).abs().max()) <= 1e-5


@pytest.mark.parametrize(
    "published", ["bs-conformer-vocals", "mel-conformer-vocals", "mel-conformer-4stem"]
)
def test_a_conformer_at_published_size_has_mssts_parameters(published: str) -> None:
    """Every key and shape of MSST's module, nothing more (the BatchNorms' statistics too);
    built on the meta device."""
    config, arch = msst_support.published(published)
    model, training = config["model"], config["training"]
    target = training.get("target_instrument")
    with torch.device("meta"):
        theirs = REFERENCE[arch](**{k: v for k, v in model.items() if k != "sage_attention"})
        ours = build_model(arch, model, config["audio"], training["instruments"], target)
    expected = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected


def test_a_conformers_options_are_checked_and_its_config_named_for_what_it_is() -> None:
    conformer = dict(msst_support.shrunk("bs-conformer-vocals")[0]["model"])
    mel = dict(msst_support.shrunk("mel-conformer-vocals")[0]["model"])
    rest = "time_conformer_depth, freq_conformer_depth and linear_conformer_depth)"
    cases = [
        (
            "bs_roformer",
            conformer,
            "bs_roformer: it is a config for bs_conformer (it has model.conv_expansion_factor, "
            "an option of MSST's Conformers): run it with --arch bs_conformer",
        ),
        (
            "mel_band_roformer",
            mel,
            "mel_band_roformer: it is a config for mel_band_conformer (it has "
            "model.conv_expansion_factor, an option of MSST's Conformers): run it with --arch "
            "mel_band_conformer",
        ),
        (
            "bs_conformer",
            {**conformer, "conv_kernel_size": 8},
            "bs_conformer: model.conv_kernel_size must be odd (the reference's padding keeps "
            "the length only so), not 8",
        ),
        (
            "bs_conformer",
            {**conformer, "time_transformer_depth": 1},
            "bs_conformer: model.time_transformer_depth is not an option of the reference's "
            f"bs_conformer (a RoFormer's; a Conformer names its depths {rest}",
        ),
        (
            "bs_conformer",
            {**conformer, "ff_mult": 0},
            "bs_conformer: model.ff_mult must be a number > 0, not 0",
        ),
    ]
    for arch, model, message in cases:
        with pytest.raises(InvalidModelConfig) as refused:
            build_model(arch, model, {}, ["vocals", "other"], "vocals")
        assert str(refused.value) == message


def test_a_mel_band_roformer_takes_pope_where_msst_keeps_it() -> None:
    """MSST gave its Mel-Band RoFormer ``use_pope`` after 0.1.0 (the oracle here has it for
    BS-RoFormer only, compared above): the same attention, PoPE's parameters in the same places
    (one per attention layer, the time transformers sharing one PoPE and the frequency ones
    another, as the rotary embeddings are shared), and no rotary ones. (Against MSST's own
    Mel-Band RoFormer with PoPE, at its commit ccc011a, checked once: within 2.3e-8 on the Kim,
    4-stem and mono linear+skip configs; its module is not on PyPI.)"""
    config, arch = shrunk("kim-mel-vocals", use_pope=True, depth=2)
    training = config["training"]
    ours = build_model(
        arch,
        config["model"],
        config["audio"],
        training["instruments"],
        training["target_instrument"],
    )
    positions = {
        k: tuple(v.shape) for k, v in ours.state_dict().items() if "pope" in k or "rotary" in k
    }
    assert positions == {
        f"layers.{block}.{axis}.layers.0.0.pope_embed.{name}": shape
        for block in (0, 1)
        for axis in (0, 1)  # time, frequency
        for name, shape in (("bias", (2, 16)), ("inv_freqs", (16,)))
    }
    time, freq = (
        [ours.get_submodule(f"layers.{block}.{axis}.layers.0.0.pope_embed") for block in (0, 1)]
        for axis in (0, 1)
    )
    assert time[0] is time[1] and freq[0] is freq[1] and time[0] is not freq[0]


def test_a_bs_roformer_naming_no_window_runs_the_references_2048_sample_one() -> None:
    """MSST's ``stft_win_length`` defaults to 2048 whatever ``stft_n_fft`` is; demixer took
    ``stft_n_fft`` (4096 here), and the stems of such a user's model were another network's."""
    config, _ = shrunk("viperx-bs-1297", stft_n_fft=4096)
    model = dict(config["model"])
    del model["stft_win_length"]
    # the viperx layout, each band twice as wide, and the 2049th bin alone
    model["freqs_per_bands"] = (*(2 * f for f in model["freqs_per_bands"][:-1]), 256, 1)
    reference = randomise(BSRoformer(**model))
    ours = build_model("bs_roformer", model, config["audio"], ["vocals"], None)
    load_weights(ours, reference.state_dict(), checkpoint="msst", config="no window")
    x = torch.from_numpy(music(512 * 24 + 123)[None])
    with torch.inference_mode():
        expected = reference(x)
        got = ours(x)
    assert float((got - expected).abs().max()) <= 1e-5
    # With a smaller frame the default window cannot fit: MSST fails in torch's STFT.
    model.update(stft_n_fft=1024, freqs_per_bands=(256, 257))
    with pytest.raises(InvalidModelConfig) as refused:
        build_model("bs_roformer", model, config["audio"], ["vocals"], None)
    assert str(refused.value) == (
        "bs_roformer: model.stft_win_length 2048 (the reference's default) exceeds "
        "model.stft_n_fft 1024: the window must fit in the frame"
    )


@pytest.mark.parametrize(
    ("rate", "n_fft", "bands"),
    [(44100, 2048, 60), (48000, 4096, 64), (44100, 2048, 48), (22050, 1024, 40)],
)
def test_mel_filterbank_is_librosas(rate: int, n_fft: int, bands: int) -> None:
    from librosa.filters import mel

    expected = mel(sr=rate, n_fft=n_fft, n_mels=bands)
    got = mel_filterbank(rate, n_fft, bands)
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(got > 0, expected > 0)  # the band layout, exactly
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("published", "model_id", "width"),
    [
        ("bs-sw-6stems", "bs-roformer-sw-6stems", 4),
        ("crowd-aufr33", "mel-roformer-crowd-aufr33", 4),
        ("karaoke-aufr33", "mel-roformer-karaoke-aufr33", 4),
        # MSST's own variant of the 4-stem config UVR copied (UVR's copy is the pin; the two
        # differ by `sage_attention`, which changes no number, and the instruments' case).
        ("bs-4stem-sage", "bs-roformer-4stems-zfturbo", 4),
        # Politrees' copy of becruily's guitar config (the pinned one is the author's file):
        # its network in float16 fills the pinned checkpoint.
        ("guitar-becruily", "mel-roformer-guitar-becruily", 2),
        ("vocals-becruily", "mel-roformer-vocals-becruily", 4),
        # Politrees' copy of Sucial's aspiration config (the pin is the author's own file, not
        # readable here; this copy's inference settings differ, its network is the same).
        ("aspiration-sucial", "mel-roformer-aspiration-sucial", 4),
    ],
)
def test_a_pinned_config_makes_tensors_the_size_of_the_pinned_checkpoint(
    published: str, model_id: str, width: int
) -> None:
    """A catalogue model's published config, built full size by MSST's class and by demixer's,
    holds as many numbers (of ``width`` bytes: float32, or float16 where the checkpoint was
    saved so) as the entry's pinned checkpoint has room for: its size less torch.save's few
    hundred bytes per tensor (the checkpoint cannot be downloaded here; a config that did not
    describe it would miss by megabytes)."""
    config, arch = msst_support.published(published)
    training = config["training"]
    target = training.get("target_instrument")
    # MSST 0.1.0's class takes no `sage_attention` (a kernel choice, no number changes with it)
    model = {k: v for k, v in config["model"].items() if k != "sage_attention"}
    with torch.device("meta"):
        theirs = REFERENCE[arch](**model)
        ours = build_model(arch, config["model"], config["audio"], training["instruments"], target)
    sizes = [sum(t.numel() * width for t in net.state_dict().values()) for net in (theirs, ours)]
    assert sizes[0] == sizes[1]
    tensors = len(theirs.state_dict())
    spec = get_spec(model_id)
    pinned = next(w.size for w in spec.weights if w.name.endswith(".ckpt"))
    assert pinned is not None
    assert 200 * tensors < pinned - sizes[0] < 600 * tensors
    assert spec.stems == tuple(s.lower() for s in training["instruments"])


# --- whole separations ----------------------------------------------------------------------

CHUNK_FRAMES = 40  # 0.4 s chunks at hop 441: several chunks in 2 s of audio


@dataclass
class Pipeline:
    arch: str
    config: Path  # demixer's (as published, shrunk)
    checkpoint: Path
    reference: torch.nn.Module
    reference_config: Any  # MSST's ConfigDict
    stems: tuple[str, ...]
    chunk: int
    step: int


# name -> (published config, model options over the shrunk one)
PIPELINES: dict[str, tuple[str, dict[str, Any]]] = {
    "viperx-bs-1297": ("viperx-bs-1297", {}),
    "kim-mel-vocals": ("kim-mel-vocals", {}),
    "bs-4stem-sage": ("bs-4stem-sage", {}),
    "bs-musdb-target": ("bs-musdb-target", {}),
    "bs-pope": ("viperx-bs-1297", {"use_pope": True}),
    "bs-conformer-vocals": ("bs-conformer-vocals", {}),
    "mel-conformer-4stem": ("mel-conformer-4stem", {}),
    # The catalogue's six-stem model (bs-roformer-sw-6stems): six heads, all stems predicted.
    "bs-sw-6stems": ("bs-sw-6stems", {}),
    # The catalogue's crowd remover (mel-roformer-crowd-aufr33): a crowd target and the rest.
    "crowd-aufr33": ("crowd-aufr33", {}),
    # A 256-point STFT: 4 of the 60 mel bands hold none of its 129 bins (the lowest bands are
    # narrower than a bin). MSST runs such a network, an empty band's features being its band
    # split's bias alone (and it gives no mask); demixer refused the config.
    "mel-bands-holding-no-bin": (
        "kim-mel-vocals",
        {"stft_n_fft": 256, "stft_win_length": 256, "stft_hop_length": 64},
    ),
}


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pipeline]:
    root = tmp_path_factory.mktemp("msst")
    out = {}
    for seed, (name, (published, options)) in enumerate(PIPELINES.items()):
        config, arch = shrunk(published, chunk_frames=CHUNK_FRAMES, **options)
        ours = write_config(config, root / f"{name}.yaml")
        config["model"].pop("sage_attention", None)  # see test_network_equals_msst
        theirs = write_config(config, root / f"{name}.msst.yaml")
        model, reference_config = get_model_from_config(arch, str(theirs))
        randomise(model, seed)
        checkpoint = root / f"{name}.ckpt"
        torch.save(model.state_dict(), checkpoint)
        training = config["training"]
        target, instruments = training.get("target_instrument"), tuple(training["instruments"])
        stems = (target,) if target else instruments
        if target and len(instruments) == 2:  # and the rest of the mix, named after the other
            stems += tuple(i for i in instruments if i != target)
        chunk = config["audio"]["chunk_size"]
        step = chunk // config["inference"]["num_overlap"]
        out[name] = Pipeline(arch, ours, checkpoint, model, reference_config, stems, chunk, step)
    return out


def msst_stems(p: Pipeline, mix: np.ndarray) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        result: dict[str, np.ndarray] = demix(p.reference_config, p.reference, mix, "cpu", p.arch)
    return result


@pytest.mark.parametrize("name", list(PIPELINES))
@pytest.mark.parametrize("length", ["under one chunk", "many chunks"])
def test_separation_equals_msst(
    pipelines: dict[str, Pipeline], name: str, length: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipelines[name]
    samples = int(p.chunk * 0.7) if length == "under one chunk" else 5 * p.chunk + p.step // 3
    mix = music(samples, seed=len(name))
    expected = msst_stems(p, mix)
    if len(p.stems) > len(expected):  # MSST's --extract_instrumental: the mix minus the target
        expected[p.stems[1]] = mix - expected[p.stems[0]]

    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator.from_backend(*open_files(p.arch, p.config, p.checkpoint))
    got = separator.separate_array(mix, 44100)
    if len(p.stems) == 1:  # a lone target: the rest of the mix comes with it
        np.testing.assert_allclose(got.pop("residual"), mix - got[p.stems[0]], atol=1e-6)

    assert tuple(got) == p.stems == tuple(expected)
    for stem in p.stems:
        assert got[stem].shape == mix.shape
        assert float(np.abs(expected[stem]).max()) > 1e-3
        assert float(np.abs(got[stem] - expected[stem]).max()) <= 1e-4, stem


def test_mono_input_is_msst_first_channel(
    pipelines: dict[str, Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipelines["kim-mel-vocals"]
    mix = music(3 * p.chunk + 5, channels=1, seed=7)
    expected = msst_stems(p, mix)["vocals"]  # MSST duplicates mono and keeps channel 0
    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator.from_backend(*open_files(p.arch, p.config, p.checkpoint))
    got = separator.separate_array(mix, 44100, ["vocals", "instrumental"])
    assert got["vocals"].shape == (1, mix.shape[1])
    assert float(np.abs(got["vocals"] - expected).max()) <= 1e-4
    np.testing.assert_allclose(got["vocals"] + got["instrumental"], mix, atol=1e-6)


@pytest.mark.parametrize("channels", [2, 1], ids=["stereo", "mono"])
def test_best_quality_is_mssts_test_time_augmentation(
    pipelines: dict[str, Pipeline], channels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--quality best` changed nothing for an MSST model: it is MSST's `--use_tta` now (the
    channels swapped, the polarity inverted, three estimates averaged), on a mono song as
    MSST's inference runs one (made stereo; its first channel here)."""
    p = pipelines["kim-mel-vocals"]
    mix = music(3 * p.chunk + p.step // 3, channels=channels, seed=11)
    stereo = np.repeat(mix, 2, axis=0) if channels == 1 else mix
    with torch.inference_mode():
        plain = demix(p.reference_config, p.reference, stereo, "cpu", p.arch)
        augmented = apply_tta(p.reference_config, p.reference, stereo, plain, "cpu", p.arch)
    expected = augmented["vocals"][:channels]

    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator.from_backend(*open_files(p.arch, p.config, p.checkpoint))
    got = separator.separate_array(mix, 44100, ["vocals"], quality="best")["vocals"]
    balanced = separator.separate_array(mix, 44100, ["vocals"])["vocals"]
    assert got.shape == mix.shape
    assert float(np.abs(got - expected).max()) <= 1e-4
    assert float(np.abs(balanced - expected).max()) > 1e-2  # the augmentation counts


def test_fast_quality_is_mssts_inference_with_two_overlapping_chunks(
    pipelines: dict[str, Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fast`` on a config of four overlapping chunks (the crowd remover's) is MSST's
    inference with ``inference.num_overlap: 2``: half the chunks, the same stems MSST gives
    at that setting; ``balanced`` stays the config's."""
    p = pipelines["crowd-aufr33"]
    assert p.reference_config.inference.num_overlap == 4
    mix = music(4 * p.chunk + p.step // 3, seed=12)
    two = copy.deepcopy(p.reference_config)
    two.inference.num_overlap = 2
    expected = {"config's": msst_stems(p, mix)["crowd"]}
    with torch.inference_mode():
        expected["two"] = demix(two, p.reference, mix, "cpu", p.arch)["crowd"]

    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator.from_backend(*open_files(p.arch, p.config, p.checkpoint))
    fast = separator.separate_array(mix, 44100, ["crowd", "other"], quality="fast")
    balanced = separator.separate_array(mix, 44100, ["crowd"])["crowd"]
    assert float(np.abs(fast["crowd"] - expected["two"]).max()) <= 1e-4
    np.testing.assert_allclose(fast["other"], mix - fast["crowd"], atol=1e-6)
    assert float(np.abs(balanced - expected["config's"]).max()) <= 1e-4
    assert float(np.abs(expected["two"] - expected["config's"]).max()) > 1e-3  # they differ


def _demixer(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return demixer_here(*args, model_dir=Path(env["DEMIXER_MODEL_DIR"]), env=env)


def test_cli_own_model_and_added_model_equal_msst(
    pipelines: dict[str, Pipeline], tmp_path: Path
) -> None:
    """`separate --arch --model-config --model-path`, then `models add` + `separate -m`."""
    p = pipelines["kim-mel-vocals"]
    mix = music(4 * p.chunk + 321, seed=3)
    sf.write(tmp_path / "song.wav", mix.T, 44100, subtype="FLOAT")
    expected = msst_stems(p, mix)["vocals"]
    env = {"DEMIXER_PRECISION": "fp32", "DEMIXER_MODEL_DIR": str(tmp_path / "models")}
    fmt = ("--format", "wav", "--bit-depth", "32f", "--stems", "vocals,instrumental")

    own = _demixer(
        "separate", tmp_path / "song.wav", "--arch", p.arch, "--model-config", p.config,
        "--model-path", p.checkpoint, "-o", tmp_path / "own", *fmt, env=env,
    )  # fmt: skip
    assert own.returncode == 0, own.stderr
    added = _demixer(
        "models", "add", "my-kim", "--arch", p.arch, "--config", p.config,
        "--checkpoint", p.checkpoint, env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    by_name = _demixer(
        "separate", tmp_path / "song.wav", "-m", "my-kim", "-o", tmp_path / "added", *fmt, env=env
    )
    assert by_name.returncode == 0, by_name.stderr

    for out in ("own", "added"):
        vocals, rate = sf.read(tmp_path / out / "song_vocals.wav", dtype="float32")
        instrumental, _ = sf.read(tmp_path / out / "song_instrumental.wav", dtype="float32")
        assert rate == 44100
        assert float(np.abs(vocals.T - expected).max()) <= 1e-4
        np.testing.assert_allclose(vocals.T + instrumental.T, mix, atol=1e-6)


# --- the windowing alone --------------------------------------------------------------------


class PositionModel(torch.nn.Module):
    """Two stems that depend on the position inside the chunk (any misplaced sample shows) and
    on the whole chunk (so does the wrong padding of a short one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0.5, 1.5, x.shape[-1])
        whole = x.mean(dim=-1, keepdim=True)
        return torch.stack([torch.tanh(3 * x) * ramp + whole, x * ramp.flip(0) + 0.1], dim=1)


@pytest.mark.parametrize(
    ("chunk", "num_overlap", "batch"),
    [(1000, 2, 4), (1000, 4, 1), (1000, 1, 3), (999, 3, 2), (50, 2, 2), (7, 2, 1)],
)
@pytest.mark.parametrize("mode", ["generic", "demucs"])
def test_streamed_windows_equal_msst_demix_bit_for_bit(
    chunk: int, num_overlap: int, batch: int, mode: str
) -> None:
    """MSST's generic inference, and the "demucs" one it runs htdemucs in (no fades, no edge
    padding, short chunks padded by zeros)."""
    demucs = mode == "demucs"
    model = PositionModel()
    cfg = _config_dict(chunk, num_overlap, batch)
    rng = np.random.default_rng(chunk + num_overlap + batch)
    step = chunk // num_overlap
    border = chunk - step
    ran: list[int] = []  # chunks per model call

    def run(c: np.ndarray) -> torch.Tensor:
        ran.append(c.shape[0])
        out: torch.Tensor = model(torch.from_numpy(c))
        return out

    for length in (1, 5, chunk // 2, chunk - 1, chunk, chunk + 1, 2 * chunk + 1, 7 * chunk + 13):
        x = rng.standard_normal((2, length)).astype(np.float32)
        hook = model.register_forward_hook(lambda _m, args, _o: ran.append(args[0].shape[0]))
        expected = demix(cfg, model, x, "cpu", "htdemucs" if demucs else "bs_roformer")
        hook.remove()
        # MSST pads a song longer than 2 * border by border at both ends, and runs a chunk at
        # every step that starts inside; the chunks that start in the right padding only reach
        # samples it cuts off, and demixer does not run those. Its "demucs" mode pads nothing.
        padded = not demucs and border > 0 and length > 2 * border
        assert sum(ran) == -(-(length + 2 * border * padded) // step)
        wanted = -(-(length + border * padded) // step)
        ran.clear()
        cuts = (
            np.sort(rng.choice(np.arange(1, length), size=min(length - 1, 4), replace=False))
            if length > 1
            else []
        )
        blocks = np.split(x, cuts, axis=1)
        for compute_batch in (1, 2):
            out = demix_stream(
                blocks,
                Chunking(chunk, num_overlap, batch, demucs=demucs),
                run,
                compute_batch=compute_batch,
            )
            got = np.concatenate(list(out), axis=2)
            np.testing.assert_array_equal(got, np.stack([expected["a"], expected["b"]]))
            assert sum(ran) == wanted and max(ran) <= compute_batch
            ran.clear()


def _config_dict(chunk: int, num_overlap: int, batch: int) -> Any:
    from ml_collections import ConfigDict

    return ConfigDict(
        {
            "audio": {"chunk_size": chunk},
            "inference": {"num_overlap": num_overlap, "batch_size": batch},
            "training": {
                "instruments": ["a", "b"],
                "target_instrument": None,
                # the "demucs" mode's chunk: samplerate * segment
                "samplerate": chunk,
                "segment": 1,
            },
        }
    )


def test_a_normalising_config_equals_msst_from_an_array_and_a_file(
    pipelines: dict[str, Pipeline], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inference.normalize``: MSST scales the whole song by its mono mix's mean and std; the
    engine reads a file twice for them (the stream itself never holds the song).

    MSST's ``normalize_audio`` lives in a module that imports matplotlib, so its two lines are
    written out here: ``(audio - mean) / std`` of ``audio.mean(0)``, and back.
    """
    p = pipelines["bs-4stem-sage"]
    config = yaml.load(p.config.read_text(), Loader=yaml.FullLoader)
    config["inference"]["normalize"] = True
    normalising = write_config(config, tmp_path / "normalise.yaml")
    mix = music(3 * p.chunk + 11, seed=5) * 3 + 0.05  # loud, and off centre
    mono = mix.mean(0)
    mean, std = mono.mean(), mono.std()
    expected = {k: v * std + mean for k, v in msst_stems(p, (mix - mean) / std).items()}

    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator.from_backend(*open_files(p.arch, normalising, p.checkpoint))
    got = separator.separate_array(mix, 44100)
    sf.write(tmp_path / "song.wav", mix.T, 44100, subtype="FLOAT")
    written = separator.separate_file(
        tmp_path / "song.wav", tmp_path / "out", fmt=OutputFormat.parse("wav", "32f")
    )
    for stem in p.stems:
        from_file, _ = sf.read(written.paths[stem], dtype="float32")
        assert float(np.abs(got[stem] - expected[stem]).max()) <= 1e-4 * 3
        assert float(np.abs(from_file.T - expected[stem]).max()) <= 1e-4 * 3


def test_a_normalising_target_models_other_stem_is_the_mix_minus_the_target_not_mssts(
    pipelines: dict[str, Pipeline], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``inference.normalize``, MSST's ``--extract_instrumental`` subtracts the normalised
    target from the mix as it came in, then scales the difference back like a stem: its
    instrumental is ``std * mix - target + 2 * mean``, the mix at the level of its std (0.1-0.3
    for music) with the target taken out at full level, so the target comes back inverted. It
    is so in PyPI ``msst`` 0.1.0 and in MSST's inference.py on GitHub (2026-06). demixer's
    ``other`` stays the rest of the mix, ``mix - target``, whatever the level (docs/models.md);
    the target is MSST's.

    MSST's ``separate_audio`` is run itself: its module imports matplotlib (for spectrograms,
    unused here), which the tests do not install, so an empty module stands in for it.
    """
    import argparse
    import types

    for name in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    from msst._inference import separate_audio

    p = pipelines["kim-mel-vocals"]
    config = yaml.load(p.config.read_text(), Loader=yaml.FullLoader)
    config["inference"]["normalize"] = True
    normalising = write_config(config, tmp_path / "normalise.yaml")
    reference_config = copy.deepcopy(p.reference_config)
    reference_config.inference.normalize = True
    mix = music(3 * p.chunk + 11, seed=8) * 0.5 + 0.01  # a song's level, a little off centre
    args = argparse.Namespace(
        extract_instrumental=True, use_tta=False, bigshifts=1, model_type=p.arch,
        disable_detailed_pbar=True,
    )  # fmt: skip
    with torch.inference_mode():
        theirs = separate_audio(p.reference, args, reference_config, "cpu", mix)
    mono = mix.mean(0)
    mean, std = mono.mean(), mono.std()
    assert std < 0.5
    np.testing.assert_allclose(
        theirs["instrumental"], std * mix - theirs["vocals"] + 2 * mean, atol=1e-5
    )

    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator.from_backend(*open_files(p.arch, normalising, p.checkpoint))
    got = separator.separate_array(mix, 44100, ["vocals", "other"])
    assert float(np.abs(got["vocals"] - theirs["vocals"]).max()) <= 1e-4
    np.testing.assert_allclose(got["other"], mix - got["vocals"], atol=1e-6)
    assert float(np.abs(got["other"] - theirs["instrumental"]).max()) > 0.1


def test_a_normalising_config_takes_its_statistics_at_the_models_rate(
    pipelines: dict[str, Pipeline], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MSST resamples a song to the model's rate, then normalises it: the mean and std are the
    resampled audio's. A 48 kHz song's differ from them: the resampler drops what lies above
    22 kHz (here the top of white noise), and a song of two samples becomes another two."""
    from demixer.audio.resample import resample

    p = pipelines["kim-mel-vocals"]
    config = yaml.load(p.config.read_text(), Loader=yaml.FullLoader)
    config["inference"]["normalize"] = True
    normalising = write_config(config, tmp_path / "normalise.yaml")
    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    separator = Separator.from_backend(*open_files(p.arch, normalising, p.checkpoint))
    noise = np.random.default_rng(9).standard_normal((2, p.chunk)).astype(np.float32)
    for mix in (music(p.chunk, seed=6) + 0.5 * noise, noise[:, :2]):
        at_model_rate = resample(mix, 48000, 44100)
        mono = at_model_rate.mean(0)
        mean, std = mono.mean(), mono.std()
        vocals = msst_stems(p, (at_model_rate - mean) / std)["vocals"] * std + mean
        expected = resample(vocals, 44100, 48000)
        got = separator.separate_array(mix, 48000)["vocals"]
        assert float(np.abs(got - expected).max()) <= 1e-4, mix.shape


def test_demixer_precision_is_read_in_any_case_and_a_bad_one_is_one_error_line(
    tmp_path: Path,
) -> None:
    """`DEMIXER_PRECISION=FP32` is fp32; a value none of auto, fp32, bf16, fp16 ends
    `separate` (and `worker`, at its start, not each job later) with one line and exit 2."""
    from service_harness import run_demixer

    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((4410, 2), np.float32), 44100)
    models = tmp_path / "models"
    ok = demixer_here("separate", song, "-o", tmp_path / "a", model_dir=models,
                      env={"DEMIXER_PRECISION": "FP32"})  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    message = "error [INVALID_SETTING] DEMIXER_PRECISION='float32': must be one of auto, fp32, "
    bad = demixer_here("separate", song, "-o", tmp_path / "b", model_dir=models,
                       env={"DEMIXER_PRECISION": "float32"})  # fmt: skip
    assert (bad.returncode, bad.stdout, bad.stderr) == (2, "", message + "bf16, fp16\n")
    # The worker process refuses it as it starts.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEMIXER_PRECISION": "float32"}
    bad = run_demixer("worker", "--data-dir", str(tmp_path / "data"), env=env)
    assert (bad.returncode, bad.stdout, bad.stderr) == (2, "", message + "bf16, fp16\n")
    assert not (tmp_path / "b").exists()


def test_fp32_on_cuda_computes_no_tf32_and_gives_the_processs_settings_back() -> None:
    """cuDNN computes fp32 convolutions in TF32 unless told not to (MDX23C's and SCNet's),
    and a process may allow it for matmuls: far past the 1e-4 fp32 stems keep from the
    reference's. Checked on the settings, which need no GPU (none is lent to the tests)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = True
    try:
        with autocast(torch.device("cuda"), "fp32"):
            assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
        with warnings.catch_warnings():  # "CUDA is not available": autocast stays off
            warnings.simplefilter("ignore", UserWarning)
            with autocast(torch.device("cuda"), "bf16"), autocast(torch.device("cpu"), "fp32"):
                assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
