"""UVR MDX-Net models through onnxruntime, checked against audio-separator 0.47.1's inference.

Every network here is a random-weight ConvTDFNet-shaped ONNX file built at test time
(``mdx_onnx.py``) with the real I/O signature ``(batch, 4, dim_f, frames)``; the oracle is
audio-separator's own demix loop (``uvr_reference.py``). Small STFT settings keep most tests
fast; one runs Kim_Vocal_2's real ones (dim_f 3072, n_fft 7680, 256 frames).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner, Result

from demixer.cli import app
from demixer.engine import Separator
from demixer.errors import CheckpointMismatch, ModelUnavailable, WeightsChecksumMismatch
from demixer.models import registry
from demixer.models.loading import file_sha256
from demixer.models.mdx_net import (
    ARCH_PARAMS,
    WINDOW_STEPS,
    MdxNetBackend,
    MdxParams,
    OnnxNetwork,
    load,
)
from demixer.models.mdx_net.user import UVR_HASH_BYTES, read_params, uvr_hash
from demixer.models.registry import ModelSpec, WeightFile
from mdx_onnx import mdx_spec, tfc_tdf_onnx
from uvr_reference import UvrMdx, uvr_default_overlap

RATE = 44100
# Small but real-shaped settings: 32 frames of 1024 -> chunks of 31744 samples (0.72 s).
SMALL = {"dim_f": 256, "dim_t": 32, "n_fft": 2048, "segment_size": 32, "compensate": 1.035}
CHUNK = 1024 * 31
STEP = CHUNK - 2048  # UVR's default step: chunk - n_fft
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mdx") / "small.onnx"
    return tfc_tdf_onnx(path, dim_f=256, dim_t=32, g=4, levels=2, bn=2, gain=0.8)


def noise(seconds: float, seed: int = 1) -> np.ndarray:
    """Stereo test signal: noise plus a tone, so both channels differ and have structure."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    tone = 0.05 * np.sin(2 * np.pi * 220 * np.arange(n) / RATE)
    return (rng.standard_normal((2, n)) * 0.1 + tone).astype(np.float32)


def backend(path: Path, **overrides: Any) -> MdxNetBackend:
    params = MdxParams.from_arch_params({**SMALL, **overrides}, model_id="test-mdx")
    return MdxNetBackend(OnnxNetwork(path, params), params, stems=("vocals",))


def reference(path: Path, mix: np.ndarray, **overrides: Any) -> np.ndarray:
    """UVR's primary stem: audio-separator's demix output times ``compensate``."""
    p = {**SMALL, **overrides}
    overlap = p.get("overlap", uvr_default_overlap(p["n_fft"], 1024 * (p["segment_size"] - 1)))
    uvr = UvrMdx(
        path,
        dim_f=p["dim_f"],
        n_fft=p["n_fft"],
        segment_size=p["segment_size"],
        overlap=overlap,
        denoise=p.get("denoise", False),
    )
    out = uvr.demix(mix.copy()) * p["compensate"]
    # The comparison means something only if the network's output is not near silence.
    assert 0.05 < np.abs(out).max() < 20
    return np.asarray(out, dtype=np.float32)


def peak_error(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def test_input_shorter_than_one_chunk_matches_uvr(small_onnx: Path) -> None:
    mix = noise(0.45)
    assert mix.shape[1] < CHUNK
    ours = backend(small_onnx).separate(mix)
    assert list(ours) == ["vocals"]
    assert peak_error(ours["vocals"], reference(small_onnx, mix)) < TOLERANCE


def test_stream_over_many_chunks_matches_uvr_whatever_the_blocks(small_onnx: Path) -> None:
    mix = noise(4.0)
    sizes = [1, 5000, 31744, 70000, 3]
    blocks, start = [], 0
    while start < mix.shape[1]:
        size = sizes[len(blocks) % len(sizes)]
        blocks.append(mix[:, start : start + size])
        start += size
    positions: list[int] = []
    out = backend(small_onnx).stream(iter(blocks), before_run=positions.append)
    ours = np.concatenate([part["vocals"] for part in out], axis=1)
    assert peak_error(ours, reference(small_onnx, mix)) < TOLERANCE
    # One network call per chunk, each announced with where its chunk starts in the input
    # (UVR's first chunk starts in the n_fft // 2 zeros before it).
    assert positions == [0] + [k * STEP - 1024 for k in range(1, 6)]


def test_audio_separator_settings_overlap_and_denoise(tmp_path: Path) -> None:
    # A file whose batch axis is fixed at 1, as some exports have it: the denoise pass (x and
    # -x) and batch_size 3 must still go through it one chunk at a time.
    path = tfc_tdf_onnx(tmp_path / "b1.onnx", dim_f=256, dim_t=32, batch=1, gain=0.8, seed=3)
    settings = {"overlap": 0.25, "denoise": True}
    mix = noise(2.5, seed=2)
    ours = backend(path, batch_size=3, **settings).separate(mix)["vocals"]
    assert peak_error(ours, reference(path, mix, **settings)) < TOLERANCE


def test_kim_vocal_2_shapes(tmp_path: Path) -> None:
    """Kim_Vocal_2's parameters as UVR's model data gives them (key 970b3f94...)."""
    kim = {"dim_f": 3072, "dim_t": 256, "n_fft": 7680, "segment_size": 256, "compensate": 1.009}
    path = tfc_tdf_onnx(tmp_path / "kim.onnx", dim_f=3072, dim_t=256, g=2, bn=64, gain=0.9)
    mix = noise(6.2, seed=4)  # two 5.9 s chunks, the second cut at the end
    ours = backend(path, **kim).separate(mix)["vocals"]
    assert peak_error(ours, reference(path, mix, **kim)) < TOLERANCE


@pytest.fixture
def registered(
    small_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModelSpec]:
    """A test-only registry entry for the small network, its file in a model dir."""
    weights = (WeightFile(name="small.onnx", sha256=file_sha256(small_onnx)),)
    spec = mdx_spec("test-mdx", {**SMALL, "primary_stem": "Vocals"}, weights)
    spec = dataclasses.replace(spec, stems=("vocals", "instrumental"))
    (tmp_path / "models" / spec.id).mkdir(parents=True)
    (tmp_path / "models" / spec.id / "small.onnx").write_bytes(small_onnx.read_bytes())
    monkeypatch.setitem(registry._BY_ID, spec.id, spec)
    yield spec


def test_engine_equals_uvr_at_every_sample_across_windows(
    registered: ModelSpec, tmp_path: Path
) -> None:
    """The engine streams the whole input through UVR's loop: no seam where a window would
    end, at every sample (README, MDX-Net)."""
    separator = Separator(registered.id, model_dir=tmp_path / "models")
    backend = separator.backend
    assert isinstance(backend, MdxNetBackend)
    assert backend.overlap == CHUNK
    assert backend.window == WINDOW_STEPS * STEP + CHUNK  # on UVR's grid: a whole number of steps
    # Windows of two steps each (the default is ten) keep the input short: were the engine to
    # cut it into windows, 2.5 of them would leave two cross-faded seams.
    window = backend.window = 2 * STEP + CHUNK
    mix = noise(2.5 * window / RATE, seed=5)
    out = separator.separate_array(mix, RATE, ["vocals", "instrumental"])
    uvr_primary = reference(tmp_path / "models/test-mdx/small.onnx", mix)
    assert peak_error(out["vocals"], uvr_primary) < TOLERANCE
    # The secondary stem is UVR's: mix - compensate * output, at every sample.
    np.testing.assert_allclose(out["instrumental"], mix - out["vocals"], atol=1e-6)


def test_best_quality_adds_uvrs_denoise_pass(registered: ModelSpec, tmp_path: Path) -> None:
    """`--quality best` changed nothing for an MDX-Net model: it adds UVR's "Denoise Output"
    now (audio-separator's enable_denoise: the network also run on the inverted input)."""
    separator = Separator(registered.id, model_dir=tmp_path / "models")
    mix = noise(2.5, seed=6)
    best = separator.separate_array(mix, RATE, ["vocals"], quality="best")["vocals"]
    model = tmp_path / "models/test-mdx/small.onnx"
    assert peak_error(best, reference(model, mix, denoise=True)) < TOLERANCE
    assert peak_error(best, reference(model, mix)) > 100 * TOLERANCE


def test_mono_input_runs_as_uvr_runs_it(registered: ModelSpec, tmp_path: Path) -> None:
    separator = Separator(registered.id, model_dir=tmp_path / "models")
    mono = noise(1.0, seed=6)[:1]
    out = separator.separate_array(mono, RATE, ["vocals"])
    # UVR stacks a mono file into two identical channels; demixer averages the two back.
    expected = reference(tmp_path / "models/test-mdx/small.onnx", np.repeat(mono, 2, axis=0))
    assert out["vocals"].shape == mono.shape
    assert peak_error(out["vocals"], expected.mean(axis=0, keepdims=True)) < TOLERANCE


def test_primary_stem_names_the_network_output(registered: ModelSpec, tmp_path: Path) -> None:
    # An instrumental model as the catalogue lists one: UVR's primary stem (its capital matched
    # in any case), second here.
    spec = dataclasses.replace(
        registered,
        stems=("vocals", "instrumental"),
        arch_params={**SMALL, "primary_stem": "Instrumental"},  # UVR's spelling
    )
    model = load(spec, model_dir=tmp_path / "models")
    mix = noise(0.5, seed=7)
    out = model.separate(mix)
    assert list(out) == ["vocals", "instrumental"]
    expected = reference(tmp_path / "models/test-mdx/small.onnx", mix)
    assert peak_error(out["instrumental"], expected) < TOLERANCE
    assert peak_error(out["vocals"], mix - expected) < TOLERANCE


def test_registered_file_is_verified_before_loading(registered: ModelSpec, tmp_path: Path) -> None:
    (tmp_path / "models/test-mdx/small.onnx").write_bytes(b"not the pinned network")
    with pytest.raises(WeightsChecksumMismatch):
        load(registered, model_dir=tmp_path / "models")


def test_corrupt_onnx_file_is_one_clear_error(registered: ModelSpec, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    with pytest.raises(ModelUnavailable, match=r"bad\.onnx is not an ONNX model onnxruntime"):
        load(registered, model_path=bad)
    with pytest.raises(ModelUnavailable, match=r"--model-path .*missing\.onnx is not a file"):
        load(registered, model_path=tmp_path / "missing.onnx")


def test_file_contradicting_arch_params_is_refused(registered: ModelSpec, tmp_path: Path) -> None:
    wide = dataclasses.replace(registered, arch_params={**SMALL, "dim_f": 512})
    with pytest.raises(ModelUnavailable) as info:
        load(wide, model_dir=tmp_path / "models")
    assert info.value.message == (
        f"{tmp_path / 'models/test-mdx/small.onnx'}: its input is tensor(float) "
        "['batch', 4, 256, 32], but the model's "
        "arch_params (dim_f=512, dim_t=32) need float32 ['batch', 4, 512, 32]; the file and "
        "the parameters do not belong together"
    )
    # UVR's model data stores log2(dim_t): copying its 5 for 32 frames is caught too.
    log2 = dataclasses.replace(registered, arch_params={**SMALL, "dim_t": 5})
    with pytest.raises(ModelUnavailable, match=r"dim_t=5\) need float32 \['batch', 4, 256, 5\]"):
        load(log2, model_dir=tmp_path / "models")


def test_bad_arch_params_are_refused(registered: ModelSpec, tmp_path: Path) -> None:
    cases = {
        "lacks dim_f": {"dim_t": 32, "n_fft": 2048},
        "unknown key(s) dimf": {**SMALL, "dimf": 256},
        "dim_f=2000 exceeds the 1025 bins": {**SMALL, "dim_f": 2000},
        # its window was made first: a MemoryError (a RuntimeError from torch) for 2 ** 40
        "n_fft (1099511627776) is over 65536, the most samples in an STFT frame demixer takes "
        "(published models use 4096 to 16384): what a config describes is computed when it "
        "is read, and this would not fit in memory": {**SMALL, "n_fft": 1 << 40},
        "overlap=1.5: expected a fraction": {**SMALL, "overlap": 1.5},
        "primary_stem 'other' is not one of its stems ['vocals', 'instrumental']": {
            **SMALL,
            "primary_stem": "Other",
        },
    }
    for message, params in cases.items():
        spec = dataclasses.replace(registered, arch_params=params)
        with pytest.raises(ModelUnavailable, match=f"model 'test-mdx'.*{re.escape(message)}"):
            load(spec, model_dir=tmp_path / "models")
    assert set(SMALL) | {"primary_stem", "overlap"} <= set(ARCH_PARAMS)


def test_segment_size_other_than_the_files(tmp_path: Path) -> None:
    # UVR runs 512-frame models (Reverb HQ) at its default 256 frames; a graph that allows it
    # runs, one that bakes its length in is refused at load time, saying what to set.
    free = tfc_tdf_onnx(tmp_path / "f.onnx", dim_f=256, dim_t=64, gain=0.8)
    out = backend(free, dim_t=64, segment_size=32).separate(noise(1.0))["vocals"]
    assert out.shape == (2, RATE) and np.isfinite(out).all()
    baked = tfc_tdf_onnx(tmp_path / "b.onnx", dim_f=256, dim_t=64, gain=0.8, bake_frames=True)
    with pytest.raises(CheckpointMismatch, match=r"built for 64: set segment_size to 64$"):
        backend(baked, dim_t=64, segment_size=32)


def test_threads_follow_torch_setting(small_onnx: Path) -> None:
    params = MdxParams.from_arch_params(SMALL, model_id="test-mdx")
    default = OnnxNetwork(small_onnx, params)
    options = default._session.get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads()
    one = OnnxNetwork(small_onnx, params, threads=1)
    assert one._session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize(
    "spec", [s for s in registry.list_specs() if s.arch == "mdx_net"], ids=lambda s: s.id
)
def test_catalogue_entries_run_on_this_backend(spec: ModelSpec, tmp_path: Path) -> None:
    """Each catalogue entry's parameters and stems, on a random file of its shapes."""
    params = MdxParams.from_arch_params(spec.arch_params, model_id=spec.id)
    path = tfc_tdf_onnx(
        tmp_path / "m.onnx", dim_f=params.dim_f, dim_t=params.dim_t, g=2, bn=64, gain=0.9
    )
    model = load(spec, model_path=path)
    assert model.stems == spec.stems
    assert model.primary.lower() == params.primary_stem
    mix = noise(0.3, seed=8)
    out = model.separate(mix)
    secondary = next(s for s in spec.stems if s != model.primary)
    np.testing.assert_allclose(out[secondary], mix - out[model.primary], atol=1e-6)
    assert 0.01 < np.abs(out[model.primary]).max() < 20


# --- a user's own MDX-Net model: `models add --arch mdx_net`, `separate --arch mdx_net` -------

# One set of parameters in the three forms a user may hold them in (UVR's default 256 frames).
OWN = {"dim_f": 256, "dim_t": 256, "n_fft": 2048, "compensate": 1.035, "primary_stem": "Vocals"}
UVR_ENTRY = {
    "compensate": 1.035,
    "mdx_dim_f_set": 256,
    "mdx_dim_t_set": 8,  # UVR's log2: 256 frames
    "mdx_n_fft_scale_set": 2048,
    "primary_stem": "Vocals",
}
# Another model's entry, as UVR's model_data.json lists dozens (Kim_Vocal_2's).
KIM_ENTRY = {**UVR_ENTRY, "mdx_dim_f_set": 3072, "mdx_n_fft_scale_set": 7680, "compensate": 1.009}
KIM_MD5 = "970b3f9492014d18fefeedfe4773cb42"


@pytest.fixture(scope="module")
def own_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A network of 256 frames, as UVR's model data's ``mdx_dim_t_set: 8`` says, named as a
    UVR download is."""
    path = tmp_path_factory.mktemp("own") / "UVR-MDX-NET-Voc_Mine.onnx"
    return tfc_tdf_onnx(path, dim_f=256, dim_t=256, g=4, levels=2, bn=2, gain=0.8, seed=9)


@pytest.fixture(scope="module")
def free_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``own_onnx``'s network with its time axis left free (any frame count goes in)."""
    path = tmp_path_factory.mktemp("free") / "UVR-MDX-NET-Free.onnx"
    return tfc_tdf_onnx(path, dim_f=256, dim_t="dim_t", g=4, levels=2, bn=2, gain=0.8, seed=9)


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    models = tmp_path / "models"
    monkeypatch.setenv("DEMIXER_MODEL_DIR", str(models))
    return models


def params_file(tmp_path: Path, form: str, onnx: Path) -> Path:
    """The parameters of ``own_onnx`` as a user has them: ``form`` is ``demixer`` (YAML),
    ``uvr-entry`` (JSON) or ``model-data`` (UVR's whole model_data.json)."""
    if form == "demixer":
        path = tmp_path / "params.yaml"
        path.write_text("".join(f"{key}: {value}\n" for key, value in OWN.items()))
    elif form == "uvr-entry":
        path = tmp_path / "entry.json"
        path.write_text(json.dumps(UVR_ENTRY))
    else:
        path = tmp_path / "model_data.json"
        own = hashlib.md5(onnx.read_bytes()).hexdigest()  # a file under 10000 KiB: all of it
        # UVR's entries may carry its backing-vocal splitter's flags (read by its interface)
        entry = {**UVR_ENTRY, "is_bv_model": False, "is_bv_model_rebalanced": 0}
        path.write_text(json.dumps({KIM_MD5: KIM_ENTRY, own: entry}, indent=4))
    return path


def song(tmp_path: Path, seconds: float = 1.5) -> tuple[Path, np.ndarray]:
    mix = noise(seconds, seed=11)
    path = tmp_path / "song.wav"
    sf.write(path, mix.T, RATE, subtype="FLOAT")
    return path, mix


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def stems_written(out: Path) -> dict[str, np.ndarray]:
    return {
        p.stem.removeprefix("song_"): sf.read(p, dtype="float32", always_2d=True)[0].T
        for p in sorted(out.iterdir())
    }


@pytest.mark.parametrize("form", ["demixer", "uvr-entry", "model-data"])
def test_models_add_takes_each_form_of_parameters_and_runs_as_uvr(
    form: str, own_onnx: Path, tmp_path: Path, user_dir: Path
) -> None:
    params = params_file(tmp_path, form, own_onnx)
    added = cli("models", "add", "mine", "--arch", "mdx_net", "--checkpoint", own_onnx,
                "--config", params)  # fmt: skip
    assert added.exit_code == 0, added.stderr
    assert added.stdout == (
        "mine: mdx_net, stems vocals, instrumental, 44100 Hz; run it with "
        "`demixer separate FILE -m mine`\n"
    )
    kept = {p.name for p in (user_dir / "mine").iterdir()}
    assert kept == {"demixer-model.json", params.with_stem("params").name, "model.onnx"}
    assert (user_dir / "mine" / "model.onnx").read_bytes() == own_onnx.read_bytes()

    wav, mix = song(tmp_path)
    ran = cli("separate", wav, "-m", "mine", "-o", tmp_path / "out", "--bit-depth", "32f")
    assert ran.exit_code == 0, ran.stderr
    stems = stems_written(tmp_path / "out")
    assert list(stems) == ["instrumental", "vocals"]
    # UVR's primary stem (its loop, compensate applied), and the input minus it.
    uvr = reference(own_onnx, mix, dim_t=256, segment_size=256)
    assert peak_error(stems["vocals"], uvr) < TOLERANCE
    assert peak_error(stems["instrumental"], mix - uvr) < TOLERANCE


def test_separate_runs_the_files_as_they_are(own_onnx: Path, tmp_path: Path) -> None:
    params = params_file(tmp_path, "uvr-entry", own_onnx)
    wav, mix = song(tmp_path)
    ran = cli("separate", wav, "--arch", "mdx_net", "--model-path", own_onnx,
              "--model-config", params, "-o", tmp_path / "out", "--bit-depth", "32f")  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    assert "by uvr-mdx-net-voc_mine " in ran.stdout  # the model goes by the file's name
    stems = stems_written(tmp_path / "out")
    assert list(stems) == ["instrumental", "vocals"]
    uvr = reference(own_onnx, mix, dim_t=256, segment_size=256)
    assert peak_error(stems["vocals"], uvr) < TOLERANCE
    assert peak_error(stems["instrumental"], mix - uvr) < TOLERANCE


def test_a_model_that_does_not_fit_its_parameters_is_one_error_and_leaves_nothing(
    own_onnx: Path, free_onnx: Path, tmp_path: Path, user_dir: Path
) -> None:
    wide = tmp_path / "wide.yaml"
    wide.write_text("dim_f: 512\ndim_t: 256\nn_fft: 2048\nprimary_stem: Vocals\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text("dim_f: 256\ndim_t: 256\nn_fft: 2048\nprimary_stem: Vocals\nsegmentsize: 32\n")
    gaps = tmp_path / "gaps.yaml"  # frames 1024 apart, 512 long: no inverse STFT (it crashed)
    gaps.write_text("dim_f: 256\ndim_t: 256\nn_fft: 512\nprimary_stem: Vocals\n")
    # Hann windows a whole window apart overlap nowhere: torch's inverse STFT refused every
    # chunk (MODEL_FAILED on every job), as it does just under a window apart.
    touch = tmp_path / "touch.yaml"
    touch.write_text("dim_f: 256\ndim_t: 256\nn_fft: 2048\nhop_length: 2048\nprimary_stem: v\n")
    # A file of a free time axis, run at 7 frames its U-Net cannot halve: it failed every job.
    odd = tmp_path / "odd.yaml"
    odd.write_text("dim_f: 256\ndim_t: 256\nn_fft: 2048\nsegment_size: 7\nprimary_stem: Vocals\n")
    other = tmp_path / "model_data.json"
    other.write_text(json.dumps({KIM_MD5: KIM_ENTRY}))
    mdxc = tmp_path / "mdxc_data.json"
    own = hashlib.md5(own_onnx.read_bytes()).hexdigest()
    mdxc.write_text(json.dumps({own: {"config_yaml": "model_2_stem_061321.yaml"}}))
    not_onnx = tmp_path / "Kim_Vocal_2.onnx"
    not_onnx.write_bytes(b"<!DOCTYPE html><title>404</title>")  # a failed download
    deep = tmp_path / "deep.json"  # json.loads recursed past Python's stack: a traceback
    deep.write_text("[" * 100_000)
    good = params_file(tmp_path, "uvr-entry", own_onnx)
    wav, _ = song(tmp_path)
    cases = {
        (own_onnx, wide): (
            f"error [CHECKPOINT_MISMATCH] {own_onnx}: its input is tensor(float) "
            "['batch', 4, 256, 256], but the model's arch_params (dim_f=512, dim_t=256) need "
            "float32 ['batch', 4, 512, 256]; the file and the parameters do not belong together "
            f"(the parameters: {wide})"
        ),
        (own_onnx, typo): (
            f"error [INVALID_MODEL_CONFIG] {typo}: has unknown key(s) segmentsize; known: "
            f"{', '.join(ARCH_PARAMS)}"
        ),
        (own_onnx, gaps): (
            f"error [INVALID_MODEL_CONFIG] {gaps}: hop_length=1024 exceeds n_fft=512: frames "
            "must overlap\n"
        ),
        (own_onnx, touch): (
            f"error [INVALID_MODEL_CONFIG] {touch}: hop_length=2048 with n_fft=2048: frames 2048 "
            "samples apart under a 2048-sample window leave samples of a 522240-sample chunk "
            "that no inverse STFT can rebuild (the windows overlap too little; a hop of at most "
            "a quarter of the window always works)\n"
        ),
        (free_onnx, odd): (
            f"error [CHECKPOINT_MISMATCH] {free_onnx} does not run at segment_size 7 frames per "
            "chunk ([ONNXRuntimeError] : 1 : FAIL : Non-zero status code "
        ),
        (own_onnx, other): (
            f"error [INVALID_MODEL_CONFIG] {other} has no entry for {own_onnx}, whose hash "
            f"(UVR's: the MD5 of its last 10000 KiB) is {own}; give that model's own entry or "
            "parameters instead"
        ),
        (own_onnx, mdxc): (
            f"error [INVALID_MODEL_CONFIG] {mdxc}, entry {own} describes an MSST-format model "
            "(config_yaml 'model_2_stem_061321.yaml'), not an MDX-Net .onnx: add it with its "
            "YAML config and --arch mdx23c, bs_roformer, mel_band_roformer or scnet"
        ),
        (own_onnx, deep): (
            f"error [INVALID_MODEL_CONFIG] {deep} is not a model's parameters: nested too "
            "deeply to read\n"
        ),
        (not_onnx, good): (
            f"error [MODEL_UNAVAILABLE] {not_onnx} is not an ONNX model onnxruntime can load: "
        ),
    }
    for (onnx, params), message in cases.items():
        added = cli("models", "add", "mine", "--arch", "mdx_net", "--checkpoint", onnx,
                    "--config", params)  # fmt: skip
        assert added.exit_code == 4 and added.stdout == ""
        assert len(added.stderr.splitlines()) == 1 and added.stderr.startswith(message)
        assert list(user_dir.iterdir()) == []  # no model, no staging folder left behind
        ran = cli("separate", wav, "--arch", "mdx_net", "--model-path", onnx,
                  "--model-config", params, "-o", tmp_path / "out")  # fmt: skip
        assert ran.exit_code == 4 and ran.stderr.startswith(message)
    assert not (tmp_path / "out").exists()


def test_an_added_model_is_listed_and_removed(
    own_onnx: Path, tmp_path: Path, user_dir: Path
) -> None:
    params = params_file(tmp_path, "model-data", own_onnx)
    added = cli("models", "add", "mine", "--arch", "mdx_net", "--checkpoint", own_onnx,
                "--config", params)  # fmt: skip
    assert added.exit_code == 0, added.stderr
    listed = cli("models", "list")
    rows = [line.split() for line in listed.stdout.splitlines() if line.startswith("mine ")]
    assert rows == [["mine", "mdx-net", "yes", "not", "stated", "-"]]
    removed = cli("models", "remove", "mine")
    assert (removed.exit_code, removed.stdout) == (0, f"removed {user_dir / 'mine'}\n")
    assert list(user_dir.iterdir()) == []
    assert "mine " not in cli("models", "list").stdout


def test_uvr_hash_is_the_md5_of_the_last_10000_kib(tmp_path: Path) -> None:
    big = tmp_path / "big.onnx"
    data = np.random.default_rng(0).bytes(UVR_HASH_BYTES + 4096)
    big.write_bytes(data)
    assert uvr_hash(big) == hashlib.md5(data[-10000 * 1024 :]).hexdigest()
    small = tmp_path / "small.onnx"
    small.write_bytes(data[:5000])
    assert uvr_hash(small) == hashlib.md5(data[:5000]).hexdigest()


@pytest.mark.parametrize(
    ("primary", "stems"),
    [
        ("Vocals", ("vocals", "instrumental")),  # as the catalogue's Kim_Vocal_2
        ("Instrumental", ("instrumental", "vocals")),  # as its Inst_HQ_3
        ("Reverb", ("reverb", "no_reverb")),  # Reverb_HQ_By_FoxJoy
        ("No Crowd", ("no_crowd", "crowd")),  # UVR-MDX-NET_Crowd_HQ_1
    ],
)
def test_stems_are_uvrs_primary_stem_and_the_rest(
    primary: str, stems: tuple[str, str], tmp_path: Path
) -> None:
    entry = tmp_path / "entry.yaml"
    entry.write_text(json.dumps({**UVR_ENTRY, "primary_stem": primary}))  # JSON is YAML
    # audio-separator's model-data.json: UVR's map under mdx_model_data
    wrapped = tmp_path / "model-data.json"
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"only hashed here")
    own = hashlib.md5(onnx.read_bytes()).hexdigest()
    wrapped.write_text(json.dumps({"vr_model_data": {}, "mdx_model_data": {own: json.loads(
        entry.read_text())}}))  # fmt: skip
    for path in (entry, wrapped):
        read = read_params(path, onnx)
        assert read.stems == stems
        assert read.arch_params == {**OWN, "primary_stem": stems[0]}
