"""MDX23C and SCNet: our networks against the reference implementations, number for number.

The oracle is ZFTurbo's Music-Source-Separation-Training as published on PyPI (``msst`` 0.1.0,
MIT; installed without its dependencies by the Makefile): its ``TFC_TDF_net`` and ``SCNet``
(and SCNet's masked and transformer variants, ``scnet_masked`` and ``scnet_tran``) are built
from the same config sections, randomly initialised, and their ``state_dict`` is loaded into
ours with ``strict=True``; both see the same audio and must agree within 1e-5 at every sample.

The configs are the published ones (``audio:``, ``model:`` and the stems of the configs shipped
with MSST's and UVR's checkpoints); only widths and depths (``num_channels``, ``growth``,
``dims``, ``num_dplayer``) are shrunk so that the suite stays fast. Every other option keeps its
published value, and the option values MSST accepts but no published config uses (BatchNorm,
GroupNorm, relu, elu, no norm) get a case of their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from msst.models.mdx23c_tfc_tdf_v3 import TFC_TDF_net
from msst.models.scnet import SCNet as ReferenceSCNet
from msst.models.scnet.scnet_masked import SCNet as ReferenceMasked
from msst.models.scnet.scnet_tran import SCNet_Tran as ReferenceTran

from demixer.models.arch import builder, mdx23c, scnet
from demixer.models.msst.backend import store_weights_in
from demixer.models.msst.config import read_config
from msst_support import DATA

TOLERANCE = 1e-5

# --- published configs (model: and audio: sections, stems) ---------------------------------

_MDX_MODEL = {
    "act": "gelu",
    "bottleneck_factor": 4,
    "growth": 128,
    "norm": "InstanceNorm",
    "num_blocks_per_scale": 2,
    "num_channels": 128,
    "num_scales": 5,
    "num_subbands": 4,
    "scale": [2, 2],
}
_MDX_AUDIO = {
    "chunk_size": 261120,
    "dim_f": 4096,
    "dim_t": 256,
    "hop_length": 1024,
    "n_fft": 8192,
    "num_channels": 2,
    "sample_rate": 44100,
}
MDX23C_CONFIGS: dict[str, dict[str, Any]] = {
    # MSST configs/config_musdb18_mdx23c.yaml (model_mdx23c_ep_168_sdr_7.0207.ckpt)
    "msst-musdb18": {
        "model": _MDX_MODEL,
        "audio": _MDX_AUDIO,
        "instruments": ["vocals", "bass", "drums", "other"],
        "target": None,
    },
    # UVR model_2_stem_full_band_8k.yaml (MDX23C-8KFFT-InstVoc_HQ.ckpt and _HQ_2); MSST's
    # configs/config_vocals_mdx23c.yaml (model_vocals_mdx23c_sdr_10.17.ckpt) is the same network.
    "uvr-instvoc-hq": {
        "model": _MDX_MODEL,
        "audio": _MDX_AUDIO,
        "instruments": ["Vocals", "Instrumental"],
        "target": None,
    },
    # UVR model_2_stem_full_band.yaml: 6 sub-bands of a 12288-point STFT, hop 2048
    "uvr-full-band": {
        "model": {**_MDX_MODEL, "growth": 64, "num_subbands": 6},
        "audio": {**_MDX_AUDIO, "dim_f": 6144, "dim_t": 128, "hop_length": 2048, "n_fft": 12288},
        "instruments": ["Vocals", "Instrumental"],
        "target": None,
    },
    # Politrees/UVR_resources config_drumsep_mdx23c.yaml (MDX23C-DrumSep-aufr33-jarredou.ckpt):
    # a 2048-point STFT, hop 512, six pieces of a drum kit
    "drumsep": {
        "model": _MDX_MODEL,
        "audio": {
            **_MDX_AUDIO,
            "chunk_size": 130560,
            "dim_f": 1024,
            "hop_length": 512,
            "n_fft": 2048,
        },
        "instruments": ["kick", "snare", "toms", "hh", "ride", "crash"],
        "target": None,
    },
    # UVR model3.yaml: one target among four instruments
    "uvr-model3-target": {
        "model": {**_MDX_MODEL, "growth": 64},
        "audio": {**_MDX_AUDIO, "dim_t": 128, "hop_length": 2048, "n_fft": 12288},
        "instruments": ["Vocals", "Drums", "Bass", "Other"],
        "target": "Vocals",
    },
    # UVR sndfx.yaml: three stems from a 2048-point STFT
    "uvr-sndfx": {
        "model": {**_MDX_MODEL, "growth": 64, "num_channels": 64},
        "audio": {**_MDX_AUDIO, "dim_f": 1024, "n_fft": 2048},
        "instruments": ["Music", "Speech", "SFX"],
        "target": None,
    },
    # Options MSST's TFC-TDF v3 accepts that no published config uses.
    "batchnorm-elu": {
        "model": {**_MDX_MODEL, "norm": "BatchNorm", "act": "elu0.5", "num_blocks_per_scale": 1},
        "audio": {**_MDX_AUDIO, "dim_f": 1024, "n_fft": 2048},
        "instruments": ["a", "b"],
        "target": None,
    },
    "groupnorm-relu": {
        "model": {**_MDX_MODEL, "norm": "GroupNorm4", "act": "relu", "num_scales": 3},
        "audio": {**_MDX_AUDIO, "dim_f": 1024, "n_fft": 2048},
        "instruments": ["a", "b"],
        "target": None,
    },
    "no-norm": {
        "model": {**_MDX_MODEL, "norm": "none", "scale": [1, 2], "num_scales": 3},
        "audio": {**_MDX_AUDIO, "dim_f": 1024, "n_fft": 2048},
        "instruments": ["a"],
        "target": None,
    },
}


def _scnet_model(**changes: Any) -> dict[str, Any]:
    # MSST configs/config_musdb18_scnet.yaml (scnet_checkpoint_musdb18.ckpt, the official
    # SCNet small weights)
    model: dict[str, Any] = {
        "sources": ["drums", "bass", "other", "vocals"],
        "audio_channels": 2,
        "dims": [4, 32, 64, 128],
        "nfft": 4096,
        "hop_size": 1024,
        "win_size": 4096,
        "normalized": True,
        "band_SR": [0.175, 0.392, 0.433],
        "band_stride": [1, 4, 16],
        "band_kernel": [3, 4, 16],
        "conv_depths": [3, 2, 1],
        "compress": 4,
        "conv_kernel": 3,
        "num_dplayer": 6,
        "expand": 1,
    }
    return {**model, **changes}


SCNET_CONFIGS: dict[str, dict[str, Any]] = {
    "msst-musdb18": _scnet_model(),
    # config_musdb18_scnet_large.yaml / _starrytong: wider and other band proportions
    "msst-musdb18-large": _scnet_model(dims=[4, 64, 128, 256], band_SR=[0.225, 0.372, 0.403]),
    # config_vocals_scnet.yaml
    "msst-vocals": _scnet_model(sources=["vocals", "other"]),
    # SCNet XL IHF (config_musdb18_scnet_xl_more_wide_v5.yaml, model_scnet_ep_36_sdr_10.0891),
    # as other projects that load it spell its model section out (the release asset itself is
    # not reachable here): a stride of 4 for the high band too, deeper conv modules, 8 layers.
    "msst-musdb18-xl-ihf": _scnet_model(
        dims=[4, 64, 128, 256],
        band_SR=[0.23, 0.37, 0.4],
        band_stride=[1, 4, 4],
        band_kernel=[3, 4, 4],
        conv_depths=[3, 3, 3],
        num_dplayer=8,
    ),
}

# --- helpers ---------------------------------------------------------------------------------


def _randomise_norms(net: torch.nn.Module) -> None:
    # Fresh norms are the identity map; give them weights and statistics that matter.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)  # type: ignore[operator]
            module.running_var.uniform_(0.5, 2.0)  # type: ignore[operator]
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.InstanceNorm2d | torch.nn.GroupNorm):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)


def _mdx_reference(case: dict[str, Any], **shrink: int) -> tuple[torch.nn.Module, Any]:
    model = {**case["model"], **shrink}
    config = SimpleNamespace(
        model=SimpleNamespace(**model),
        audio=SimpleNamespace(**case["audio"]),
        training=SimpleNamespace(instruments=case["instruments"], target_instrument=case["target"]),
    )
    torch.manual_seed(0)
    reference = TFC_TDF_net(config).eval()
    if reference.first_conv.weight.device.type != "meta":
        with torch.no_grad():
            _randomise_norms(reference)
    ours = mdx23c.build(model, case["audio"], case["instruments"], case["target"])
    return reference, ours


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These networks are many small operations at test sizes: on a busy 2-core machine each
    # multi-threaded one waits for a second core, which made the module several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _compare(reference: torch.nn.Module, ours: torch.nn.Module, samples: int) -> None:
    ours.load_state_dict(reference.state_dict(), strict=True)
    torch.manual_seed(samples)
    wave = 0.5 * torch.randn(1, 2, samples)
    with torch.inference_mode():
        expected = reference(wave)
        got = ours(wave)
    assert got.shape == expected.shape
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() < TOLERANCE


# --- MDX23C ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MDX23C_CONFIGS))
def test_mdx23c_matches_reference(name: str) -> None:
    case = MDX23C_CONFIGS[name]
    reference, ours = _mdx_reference(case, num_channels=8, growth=4)
    hop = case["audio"]["hop_length"]
    # The U-Net needs frames (samples // hop + 1) divisible by scale[0] ** num_scales, as the
    # reference does: an input on a hop boundary, and a longer one past it.
    frames = max(8, case["model"]["scale"][0] ** case["model"]["num_scales"])
    _compare(reference, ours, (frames - 1) * hop)
    if name in ("uvr-instvoc-hq", "no-norm"):
        _compare(reference, ours, (2 * frames - 1) * hop + 517)


def test_mdx23c_one_target_keeps_the_stem_axis() -> None:
    case = MDX23C_CONFIGS["uvr-model3-target"]
    _, ours = _mdx_reference(case, num_channels=8, growth=4)
    with torch.inference_mode():
        out = ours(torch.zeros(1, 2, 31 * 2048))
    assert out.shape == (1, 1, 2, 31 * 2048)


@pytest.mark.parametrize("name", ["uvr-instvoc-hq", "msst-musdb18", "uvr-full-band"])
def test_mdx23c_published_size_has_the_reference_parameters(name: str) -> None:
    # Full width: every key and shape of the reference, nothing more (buffers included).
    # Built on the meta device: shapes without the cost of initialising 30 M parameters.
    with torch.device("meta"):
        reference, ours = _mdx_reference(MDX23C_CONFIGS[name])
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs


def test_mdx23c_checkpoint_of_another_config_names_the_mismatch() -> None:
    case = MDX23C_CONFIGS["uvr-instvoc-hq"]
    reference, _ = _mdx_reference(case, num_channels=8, growth=4)
    _, wider = _mdx_reference(case, num_channels=8, growth=8)
    with pytest.raises(RuntimeError) as err:
        wider.load_state_dict(reference.state_dict(), strict=True)
    assert "size mismatch for encoder_blocks.0.downscale.conv.2.weight" in str(err.value)
    four_stems = MDX23C_CONFIGS["msst-musdb18"]
    _, ours = _mdx_reference(four_stems, num_channels=8, growth=4)
    with pytest.raises(RuntimeError, match=r"size mismatch for final_conv\.2\.weight"):
        ours.load_state_dict(reference.state_dict(), strict=True)


def test_mdx23c_rejects_an_unknown_activation() -> None:
    case = MDX23C_CONFIGS["uvr-instvoc-hq"]
    with pytest.raises(ValueError) as err:
        mdx23c.build({**case["model"], "act": "swish"}, case["audio"], ["a"], None)
    assert str(err.value) == "mdx23c: model.act must be gelu, relu or elu<alpha>, not 'swish'"


# --- SCNet -----------------------------------------------------------------------------------


def _scnet_pair(model: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    reference = ReferenceSCNet(**model).eval()
    with torch.no_grad():
        _randomise_norms(reference)
    return reference, scnet.build(model, {}, model["sources"], None)


@pytest.mark.parametrize("name", sorted(SCNET_CONFIGS))
def test_scnet_matches_reference(name: str) -> None:
    model = {**SCNET_CONFIGS[name], "num_dplayer": 4}
    model["dims"] = [4, *(d // 8 for d in model["dims"][1:])]
    reference, ours = _scnet_pair(model)
    # Lengths: whole hops (padded by an extra hop), an odd and an even hop count, and 1 s.
    for samples in (20 * 1024, 21 * 1024 + 5, 44100):
        _compare(reference, ours, samples)


@pytest.mark.parametrize("name", sorted(SCNET_CONFIGS))
def test_scnet_published_size_has_the_reference_parameters(name: str) -> None:
    model = SCNET_CONFIGS[name]
    with torch.device("meta"):
        reference = ReferenceSCNet(**model)
        ours = scnet.build(model, {}, model["sources"], None)
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs


def test_scnet_checkpoint_of_another_config_names_the_mismatch() -> None:
    small = {**SCNET_CONFIGS["msst-vocals"], "dims": [4, 8, 16, 24], "num_dplayer": 2}
    reference, _ = _scnet_pair(small)
    ours = scnet.build({**small, "num_dplayer": 4}, {}, small["sources"], None)
    with pytest.raises(RuntimeError) as err:
        ours.load_state_dict(reference.state_dict(), strict=True)
    assert 'Missing key(s) in state_dict: "separation_net.dp_modules.2.' in str(err.value)


def test_scnet_rejects_an_option_the_reference_does_not_take() -> None:
    with pytest.raises(ValueError, match="unknown model option"):
        scnet.build(_scnet_model(use_mamba=False), {}, ["a"], None)


def test_scnet_bf16_autocast_agrees_with_fp32() -> None:
    # Under bf16 autocast (what demixer uses where the CPU has native bf16) the output stays
    # within 40 dB of float32; emulated bf16 is only slow, not different.
    model = {**SCNET_CONFIGS["msst-vocals"], "dims": [4, 16, 32, 48], "num_dplayer": 2}
    _, ours = _scnet_pair(model)
    wave = 0.5 * torch.randn(1, 2, 44100)
    with torch.inference_mode():
        exact = ours(wave)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = ours(wave)
    assert fast.dtype == torch.float32
    snr = 10 * math.log10(exact.pow(2).sum().item() / (fast - exact).pow(2).sum().item())
    assert snr > 40.0
    # As the backend runs it: linear, convolution and LSTM weights stored in bf16 once, the
    # first encoder block (run with autocast off) kept in float32.
    store_weights_in(ours, torch.bfloat16)
    lstm = ours.separation_net.dp_modules[0].lstm_layers[0]
    assert {p.dtype for p in lstm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in ours.encoder[0].parameters()} == {torch.float32}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        stored = ours(wave)
    snr = 10 * math.log10(exact.pow(2).sum().item() / (stored - exact).pow(2).sum().item())
    assert snr > 40.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scnet_dual_path_layouts_and_padding_change_no_sequence(dtype: torch.dtype) -> None:
    # The dual-path layer feeds its LSTMs step-major, pads bf16 sequences to a multiple of
    # LSTM_ROWS and computes the linear map transposed; each sequence's result must be what the
    # plain modules give it alone: 3 x 13 = 39 sequences (padded to 64 in bf16), 20 steps.
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(24, 24, bidirectional=True, batch_first=True).eval().to(dtype)
    linear = torch.nn.Linear(48, 24).eval().to(dtype)
    h = torch.randn(20, 3, 13, 24)  # (steps, b, n, channels), float32 as the norm gives it
    with torch.inference_mode():
        got = scnet._lstm_linear(lstm, linear, h)
        plain = linear(lstm(h.permute(1, 2, 0, 3).reshape(39, 20, 24).to(dtype))[0])
    assert got.shape == (24, 20, 3, 13)
    want = plain.view(3, 13, 20, 24).permute(3, 2, 0, 1).float()
    if dtype == torch.float32:
        assert (got - want).abs().max().item() < 1e-6
    else:  # the same bf16 arithmetic; only the kernels' blocking may differ
        snr = 10 * math.log10(want.pow(2).sum().item() / (got.float() - want).pow(2).sum().item())
        assert snr > 45.0


# --- SCNet's variants: scnet_masked, scnet_tran -------------------------------------------------

# MSST's configs/config_musdb18_scnet_tran.yaml: SCNet small with transformers (model section).
SCNET_TRAN = dict(read_config(DATA / "config_musdb18_scnet_tran.yaml", arch="scnet_tran").model)
_TRAN_OPTIONS = {k: v for k, v in SCNET_TRAN.items() if k.startswith("tran_")}
# The same, narrow: 2 heads of 8 (every option keeps its published value but these).
_TRAN_SMALL = {**_TRAN_OPTIONS, "tran_heads": 2, "tran_dim_head": 8, "tran_rotary_embedding_dim": 8}
# Reference class and the options over a config; demixer's network is builder(variant)'s.
VARIANTS: dict[str, tuple[type[torch.nn.Module], dict[str, Any]]] = {
    "scnet_masked": (ReferenceMasked, {}),
    "scnet_tran": (ReferenceTran, _TRAN_SMALL),
}


def _variant_pair(variant: str, model: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference_class, extra = VARIANTS[variant]
    build = builder(variant)
    model = {**model, **extra}
    torch.manual_seed(0)
    reference = reference_class(**model).eval()
    with torch.no_grad():
        _randomise_norms(reference)
        for name, parameter in reference.named_parameters():
            if name == "pos_embed_f":  # initialised at 0.02: make each bin's offset matter
                parameter.normal_(0.0, 0.5)
    return reference, build(model, {}, model["sources"], None)


@pytest.mark.parametrize("name", sorted(SCNET_CONFIGS))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_scnet_variants_match_reference(variant: str, name: str) -> None:
    """SCNet Masked (MSST's "SCNet Masked" small and XL IHF are trained on these configs) and
    SCNet Tran, on every published SCNet config, shrunk as the plain SCNet's test shrinks it."""
    model = {**SCNET_CONFIGS[name], "num_dplayer": 4}
    model["dims"] = [4, *(d // 8 for d in model["dims"][1:])]
    reference, ours = _variant_pair(variant, model)
    for samples in (20 * 1024, 21 * 1024 + 5, 44100):
        _compare(reference, ours, samples)


@pytest.mark.parametrize(
    ("variant", "model"),
    [
        ("scnet_tran", SCNET_TRAN),
        ("scnet_masked", SCNET_CONFIGS["msst-musdb18"]),
        ("scnet_masked", SCNET_CONFIGS["msst-musdb18-xl-ihf"]),
    ],
)
def test_scnet_variants_at_published_size_have_the_reference_parameters(
    variant: str, model: dict[str, Any]
) -> None:
    reference_class, _ = VARIANTS[variant]
    build = builder(variant)
    with torch.device("meta"):
        reference = reference_class(**model)
        ours = build(model, {}, model["sources"], None)
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs


@pytest.mark.parametrize(
    ("variant", "changes", "message"),
    [
        (
            "scnet",
            {"tran_depth": 1},
            "scnet: model.tran_depth is an option of scnet_tran (SCNet with transformers), which "
            "this config is for: run it with --arch scnet_tran",
        ),
        (
            "scnet_masked",
            {"win_size": 2048},
            "scnet_masked: model.audio_channels (2) must be 2 and model.win_size (2048) equal "
            "model.nfft (4096): the reference builds its mask layer for stereo and its window "
            "nfft samples long",
        ),
        (
            "scnet_tran",
            {"tran_rotary_embedding_dim": 32},
            "scnet_tran: model.tran_rotary_embedding_dim (32) must equal model.tran_dim_head "
            "(64): demixer turns whole heads, as every published scnet_tran config does",
        ),
        (
            "scnet_tran",
            {"tran_attn_dropout": 1.5},
            "scnet_tran: model.tran_attn_dropout must be a number in [0, 1), not 1.5",
        ),
        (
            "scnet_tran",
            {"num_dplayer": 3},
            "scnet_tran: model.num_dplayer must be even, not 3",
        ),
    ],
)
def test_scnet_variant_options_the_reference_cannot_run_are_refused(
    variant: str, changes: dict[str, Any], message: str
) -> None:
    base = SCNET_TRAN if variant == "scnet_tran" else SCNET_CONFIGS["msst-musdb18"]
    with pytest.raises(ValueError) as err:
        builder(variant)({**base, **changes}, {}, base["sources"], None)
    assert str(err.value) == message
