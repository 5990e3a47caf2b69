"""UVR's VR architecture models, checked against audio-separator 0.47.1's own inference.

The networks are UVR's (``nets.py``, ``nets_new.py``, as audio-separator carries them) with
random weights and random batch-norm statistics; the oracle is audio-separator's
``VRSeparator`` algorithm compiled from the installed file (``vr_reference.py``), reading the
same WAV file. Layouts are UVR's own band layouts as demixer ships them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner, Result

from demixer.cli import app
from demixer.errors import CheckpointMismatch, InvalidModelConfig
from demixer.models.base import InputStats
from demixer.models.vr import StreamingVrBackend, VrBackend
from demixer.models.vr.bands import parse_layout
from demixer.models.vr.network import CascadedAspp, CascadedLstm, build
from demixer.models.vr.params import LAYOUTS, VrParams
from demixer.models.vr.user import read_params
from vr_reference import UvrVr, demixer_vr, layout_file, ours_parts, randomised, reference_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 44100
TOLERANCE = 1e-4


def music(seconds: float, seed: int) -> np.ndarray:
    """Two channels of a chord and noise, float32, at 44.1 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    chord = sum(np.sin(2 * np.pi * f * t + p) for f, p in ((220, 0.0), (277.2, 1.0), (329.6, 2.0)))
    mix = 0.15 * chord[None] * np.array([[1.0], [0.6]]) + 0.05 * rng.standard_normal((2, t.size))
    return mix.astype(np.float32)


def ours(reference: torch.nn.Module, bins: int, **params: object) -> VrBackend:
    """demixer's backend with the reference network's weights (windows)."""
    return VrBackend(*ours_parts(reference, bins, params), stems=("primary", "secondary"))


def streaming(reference: torch.nn.Module, bins: int, **params: object) -> StreamingVrBackend:
    """demixer's backend with the reference network's weights, as the engine streams it."""
    made = demixer_vr(reference, bins, params)
    assert isinstance(made, StreamingVrBackend)
    return made


def streamed(vr: StreamingVrBackend, mix: np.ndarray, block: int = 7001) -> dict[str, np.ndarray]:
    """``mix`` through the backend's stream in blocks of ``block`` samples, after its meter
    has measured the whole of it (what the engine does)."""
    meter = vr.meter()
    for start in range(0, mix.shape[1], 3001):
        meter.push(mix[:, start : start + 3001])
    blocks = (mix[:, start : start + block] for start in range(0, mix.shape[1], block))
    parts = list(vr.stream(blocks, stats=meter.result()))
    return {stem: np.concatenate([p[stem] for p in parts], axis=1) for stem in vr.stems}


def peak_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


@pytest.mark.parametrize(
    ("kind", "bins", "aspp_branches", "five_levels"),
    [("31191", 672, 5, False), ("33966", 672, 7, False), ("129605", 1024, 6, True)],
)  # fmt: skip
def test_the_v5_networks_compute_uvrs_masks(
    kind: str, bins: int, aspp_branches: int, five_levels: bool
) -> None:
    """Each v5 capacity UVR tells apart by file size is read from the tensors alone; 7-branch
    pyramids hold one module twice in UVR's files, and the last one loaded serves both."""
    reference = randomised(reference_network(bins, kind), seed=int(kind))
    state = reference.state_dict()
    if aspp_branches == 7:  # UVR's file holds both names; only the last one's values count
        assert "stg1_low_band_net.aspp.conv7.conv.0.weight" in state
    network = build(state, bins, source="test")
    assert isinstance(network, CascadedAspp)
    assert network.stg1_low_band_net.aspp.extra == aspp_branches - 5
    assert network.stg1_low_band_net.five_levels is five_levels
    network.load_state_dict(state)
    x = torch.rand(
        1, 2, bins + 1, 2 * network.offset + 32, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = reference.predict_mask(x)
        got = network.eval().predict_mask(x)
    assert got.shape == (1, 2, bins + 1, 32)
    assert peak_error(got.numpy(), expected.numpy()) == 0.0


@pytest.mark.parametrize("kind", ["123821", "537238"])
def test_the_wider_v5_networks_are_told_apart_too(kind: str) -> None:
    """123821 (``*_HP-UVR``, width 32) and 537238 (``*_HP2-UVR``: 7 branches, width 64),
    built on the meta device (32 M and 135 M parameters): every name and shape as UVR's."""
    with torch.device("meta"):
        reference = reference_network(672, kind)
        network = build(reference.state_dict(), 672, source="test")
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == theirs


def test_the_v51_network_computes_uvrs_masks() -> None:
    reference = randomised(reference_network(672, "v5.1", nout=16, nout_lstm=32), seed=3)
    network = build(reference.state_dict(), 672, source="test")
    assert isinstance(network, CascadedLstm)
    network.load_state_dict(reference.state_dict())
    x = torch.rand(2, 2, 673, 2 * network.offset + 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference.predict_mask(x)
        got = network.eval().predict_mask(x)
    assert peak_error(got.numpy(), expected.numpy()) < 1e-6


# layout, network, primary stem, settings: UVR's ways to code channels and bands, both
# generations, aggression either way, TTA and each window size
CASES = {
    "4band_v3 v5 instrumental": ("4band_v3", "31191", "Instrumental", {}),
    "4band_v2 v5 vocals aggressive": (
        "4band_v2",
        "33966",
        "Vocals",
        {"aggression": 10, "window_size": 320},
    ),
    "4band_v3_sn v5.1 no echo": ("4band_v3_sn", "v5.1", "No Echo", {}),
    "4band_v4_ms_fullband v5.1": ("4band_v4_ms_fullband", "v5.1", "Vocals", {"aggression": 0}),
    "3band_44100_msb2 mid-side": ("3band_44100_msb2", "31191", "Vocals", {"window_size": 320}),
    "2band_44100_lofi sinc, tta": ("2band_44100_lofi", "v5.1", "Instrumental", {"tta": True}),
    "4band_44100_reverse": (
        "4band_44100_reverse",
        "31191",
        "Instrumental",
        {"aggression": -20, "window_size": 320},
    ),
    "1band_sr44100_hl512": ("1band_sr44100_hl512", "v5.1", "Instrumental", {"window_size": 320}),
    "4band_v3 high end, post-process": (
        "4band_v3",
        "31191",
        "Vocals",
        {"high_end_process": True, "post_process": True, "window_size": 320},
    ),
    "4band_v4_ms_fullband high end": (
        "4band_v4_ms_fullband",
        "v5.1",
        "Instrumental",
        {"high_end_process": True},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_song_is_separated_as_uvr_separates_it(case: str, tmp_path: Path) -> None:
    layout, kind, primary, settings = CASES[case]
    parsed = parse_layout(json.loads(layout_file(layout).read_text()), source=layout)
    bins, hop = parsed.bins, parsed.bands[-1].hl
    reference = randomised(reference_network(bins, kind, nout=16, nout_lstm=32), seed=7)
    mix = music(0.5, seed=len(case))
    sf.write(tmp_path / "song.wav", mix.T, RATE, subtype="FLOAT")
    uvr = UvrVr(
        reference, layout_file(layout), primary, v51=kind == "v5.1",
        window_size=int(settings.get("window_size", 512)),  # type: ignore[call-overload]
        aggression=int(settings.get("aggression", 5)),  # type: ignore[call-overload]
        tta=bool(settings.get("tta", False)),
        post_process=bool(settings.get("post_process", False)),
        high_end_process=bool(settings.get("high_end_process", False)),
    )  # fmt: skip
    expected = uvr.separate(tmp_path / "song.wav")
    backend = ours(reference, bins, vr_model_param=layout, primary_stem=primary, **settings)
    got = backend.separate(mix)
    n = expected[0].shape[1]  # UVR's waves: a whole number of hops, under one hop short
    assert mix.shape[1] - hop < n <= mix.shape[1]
    for stem, want in zip(("primary", "secondary"), expected, strict=True):
        assert got[stem].shape == mix.shape
        assert float(np.abs(want).max()) > 1e-2
        assert peak_error(got[stem][:, :n], want) < TOLERANCE, stem
        assert not got[stem][:, n:].any()  # past UVR's last hop: silence, as UVR writes none


# layout, network, primary stem, settings, rate: each way a song is cut into chunks and put
# back (both generations, lower bands by polyphase and libsamplerate, TTA's second grid,
# High-End Process, Post-Process)
STREAMED = {
    "4band_v3 v5 high end, post-process": (
        "4band_v3",
        "31191",
        "Vocals",
        {"high_end_process": True, "post_process": True, "window_size": 320},
        2.5,
    ),
    "2band_32000 v5.1 sinc, tta": ("2band_32000", "v5.1", "Vocals", {"tta": True}, 3.0),
    "4band_v4_ms_fullband v5.1 high end": (
        "4band_v4_ms_fullband",
        "v5.1",
        "Instrumental",
        {"high_end_process": True, "window_size": 320},
        4.0,
    ),
}


@pytest.mark.parametrize("case", list(STREAMED))
def test_a_song_many_chunks_long_streams_to_uvrs_whole_song_stems(
    case: str, tmp_path: Path
) -> None:
    """UVR divides the whole song by its loudest bin and runs its grid from the first frame:
    a song streamed in chunks of 30 frames (2.5-4 s here: 8 to 11) gets exactly UVR's stems
    for the whole song, its first third too, which the last third, ten times louder, scales
    (the first third alone, scaled by its own loudest bin, differs: checked once)."""
    layout, kind, primary, settings, seconds = STREAMED[case]
    parsed = parse_layout(json.loads(layout_file(layout).read_text()), source=layout)
    reference = randomised(reference_network(parsed.bins, kind, nout=16, nout_lstm=32), seed=3)
    rate = parsed.sr
    mix = music(seconds * RATE / rate, seed=len(case))[:, : int(seconds * rate)]
    third = mix.shape[1] // 3
    mix[:, 2 * third :] *= 10
    sf.write(tmp_path / "song.wav", mix.T, rate, subtype="FLOAT")
    uvr = UvrVr(
        reference, layout_file(layout), primary, v51=kind == "v5.1",
        window_size=int(settings.get("window_size", 512)),  # type: ignore[call-overload]
        tta=bool(settings.get("tta", False)),
        post_process=bool(settings.get("post_process", False)),
        high_end_process=bool(settings.get("high_end_process", False)),
    )  # fmt: skip
    expected = uvr.separate(tmp_path / "song.wav")
    vr = streaming(reference, parsed.bins, vr_model_param=layout, primary_stem=primary, **settings)
    vr.chunk = 30
    got = streamed(vr, mix)
    n = expected[0].shape[1]
    for stem, want in zip(("primary", "secondary"), expected, strict=True):
        assert got[stem].shape == mix.shape
        assert peak_error(got[stem][:, :n], want) < TOLERANCE, stem
        assert not got[stem][:, n:].any()
    if not case.startswith("4band_v4"):
        return
    # the first third alone, scaled by its own loudest bin, is not what UVR gives
    alone = ours(reference, parsed.bins, vr_model_param=layout, primary_stem=primary, **settings)
    own = alone.separate(mix[:, :third])["primary"]
    assert peak_error(own[:, : third - 5000], expected[0][:, : third - 5000]) > 10 * TOLERANCE


def test_the_stream_gives_stems_while_the_song_is_still_coming() -> None:
    """Memory does not grow with the song: the first stems come out once the first grid
    window (320 frames: 3.5 s) and a chunk's margins are in, the rest as each next window
    runs, and the stream never holds more of the song than that, to its end."""
    reference = randomised(reference_network(672, "v5.1", nout=16, nout_lstm=32), seed=2)
    vr = streaming(
        reference, 672, vr_model_param="4band_v3", primary_stem="Vocals", window_size=320
    )
    vr.chunk = 50  # frames of 480 samples: 0.54 s
    mix = music(12.0, seed=5)
    read = 0
    reads_at_output: list[int] = []

    def blocks() -> Iterator[np.ndarray]:
        nonlocal read
        for start in range(0, mix.shape[1], 4410):
            read += 4410
            yield mix[:, start : start + 4410]

    made = 0
    for stems in vr.stream(blocks(), stats=InputStats(peak=1.0)):
        reads_at_output.append(read)
        made += stems["primary"].shape[1]
        assert read - made < 6 * RATE  # held: under 6 s of a 12-s song
    assert made == mix.shape[1]
    assert reads_at_output[0] < 6 * RATE
    assert len(reads_at_output) >= 4  # a grid window's kept frames (2 s) at a time, or more


def test_an_ensemble_of_two_layouts_scales_each_by_its_own_peak() -> None:
    """Two VR models on different band layouts see different spectrograms of one song, so
    each needs its own loudest bin: one pass over the song measures both, and the ensemble's
    stems are the mean of each model's stems for the whole song."""
    from demixer.engine import Separator
    from demixer.models.ensemble import EnsembleBackend, combine
    from demixer.models.registry import get_spec

    members = []
    for layout, bins, seed in (("4band_v3", 672, 6), ("1band_sr44100_hl512", 1024, 7)):
        reference = randomised(reference_network(bins, "v5.1", nout=16, nout_lstm=32), seed)
        vr = streaming(
            reference, bins, vr_model_param=layout, primary_stem="Vocals", window_size=320
        )
        vr.chunk = 30
        members.append(vr)
    ensemble = EnsembleBackend([("a", members[0]), ("b", members[1])], members[0].stems, "avg")
    spec = replace(get_spec("vr-karaoke-5hp"), id="avg:a+b", stems=members[0].stems)
    separator = Separator.from_backend(spec, ensemble)
    mix = music(2.0, seed=8)
    mix[:, RATE:] *= 10
    passes = 0

    def blocks() -> Iterator[np.ndarray]:
        nonlocal passes
        passes += 1
        return (mix[:, i : i + 5000] for i in range(0, mix.shape[1], 5000))

    stats = separator.input_stats(blocks, RATE)
    assert passes == 1 and len(stats) == 2
    got = separator.separate_array(mix, RATE, ["primary"])["primary"]
    want = combine([vr.separate(mix)["primary"] for vr in members], "avg")
    assert peak_error(got, want) < TOLERANCE


def test_quality_levels_are_uvrs_window_sizes_and_tta(tmp_path: Path) -> None:
    """`fast` is UVR's 1024-frame window, `best` adds UVR's TTA, `balanced` is as set."""
    reference = randomised(reference_network(672, "v5.1", nout=16, nout_lstm=32), seed=8)
    mix = music(0.5, seed=9)
    sf.write(tmp_path / "song.wav", mix.T, RATE, subtype="FLOAT")
    backend = ours(reference, 672, vr_model_param="4band_v3", primary_stem="Instrumental")
    assert backend.with_quality("balanced") is backend
    best = backend.with_quality("best").params  # TTA's numbers: the 2band_44100_lofi case
    assert (best.tta, best.window_size) == (True, 512)
    fast = backend.with_quality("fast")
    assert (fast.params.tta, fast.params.window_size) == (False, 1024)
    uvr = UvrVr(reference, layout_file("4band_v3"), "Instrumental", v51=True, window_size=1024)
    want, _ = uvr.separate(tmp_path / "song.wav")
    got = fast.separate(mix)["primary"]
    assert peak_error(got[:, : want.shape[1]], want) < TOLERANCE
    assert backend.params.window_size == 512 and not backend.params.tta  # shared, not changed


@pytest.mark.parametrize("seed", range(6))
def test_post_process_is_uvrs_merge_artifacts(seed: int) -> None:
    """UVR's Post-Process on masks with long loud runs (close together, at either end, too
    short, or none), against audio-separator's own ``merge_artifacts``."""
    from audio_separator.separator.uvr_lib_v5.spec_utils import merge_artifacts as uvr_merge

    from demixer.models.vr import merge_artifacts

    rng = np.random.default_rng(seed)
    frames = 400
    mask = rng.uniform(0.0, 0.5, (2, 20, frames)).astype(np.float32)
    runs = [(0, 90), (110, 200), (230, 250), (300, 400)][: 1 + seed % 4]
    if seed == 5:
        runs = []
    for start, stop in runs:
        mask[:, :, start:stop] = rng.uniform(0.3, 1.0, (2, 20, stop - start))
    want = uvr_merge(mask.copy(), thres=0.25)
    got = merge_artifacts(mask.copy(), 0.25)
    assert peak_error(got, want) < 1e-6
    if seed in (0, 1):
        assert peak_error(got, mask) > 0.1  # a run was merged


def test_silence_gives_silence() -> None:
    """UVR divides by the loudest bin: for silence it gets NaN and writes zeros; so does this.
    An input shorter than one hop (480 samples) has no wave in UVR (its length is the hop
    times one less than the frames): silence too, where the inverse STFT failed."""
    reference = randomised(reference_network(672, "31191"), seed=4)
    backend = ours(reference, 672, vr_model_param="4band_v3", primary_stem="Vocals")
    out = backend.separate(np.zeros((2, 20000), dtype=np.float32))
    assert all(v.shape == (2, 20000) and not v.any() for v in out.values())
    for n in (1, 479):
        out = backend.separate(music(n / RATE, seed=n))
        assert all(v.shape == (2, n) and not v.any() for v in out.values())
    vr = streaming(reference, 672, vr_model_param="4band_v3", primary_stem="Vocals")
    for mix in (np.zeros((2, 20000), np.float32), np.zeros((1, 20000), np.float32)):
        out = streamed(vr, mix, block=3000)
        assert all(v.shape == mix.shape and not v.any() for v in out.values())
    out = streamed(vr, music(479 / RATE, seed=1))
    assert all(v.shape == (2, 479) and not v.any() for v in out.values())
    assert list(vr.stream(iter([]), stats=InputStats(peak=1.0))) == []


def test_a_v5_network_on_the_reversed_layout_takes_windows() -> None:
    """Its frames run from the song's end, which a stream does not know until it ends: the
    engine cuts it windows (each scaled by its own loudest bin); a v5.1 network reads that
    layout forwards, and streams."""
    v5 = randomised(reference_network(672, "31191"), seed=4)
    made = demixer_vr(v5, 672, {"vr_model_param": "4band_44100_reverse", "primary_stem": "Vocals"})
    assert type(made) is VrBackend
    v51 = randomised(reference_network(672, "v5.1", nout=16, nout_lstm=32), seed=4)
    assert isinstance(
        streaming(v51, 672, vr_model_param="4band_44100_reverse", primary_stem="Vocals"),
        StreamingVrBackend,
    )


def test_every_layout_uvr_ships_is_read() -> None:
    assert len(LAYOUTS) == 25
    for name in LAYOUTS:
        params = VrParams.from_arch_params(
            {"vr_model_param": name, "primary_stem": "Vocals"}, model_id="t"
        )
        assert params.layout.bands[-1].sr == params.layout.sr


# -- a user's own model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A v5.1 network in UVR's file format, named as UVR names its de-echo models."""
    path = tmp_path_factory.mktemp("own") / "UVR-De-Echo-Mine.pth"
    torch.save(
        randomised(reference_network(672, "v5.1", nout=16, nout_lstm=32), 5).state_dict(), path
    )
    return path


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    models = tmp_path / "models"
    monkeypatch.setenv("DEMIXER_MODEL_DIR", str(models))
    return models


ENTRY = {"vr_model_param": "4band_v3_sn", "primary_stem": "No Echo", "nout": 16, "nout_lstm": 32}


def params_file(tmp_path: Path, form: str, pth: Path) -> Path:
    """``own_pth``'s parameters as a user has them: ``entry`` (YAML), ``model-data`` (UVR's
    whole VR model_data.json), ``audio-separator`` (its model-data.json) or ``layout`` (a band
    layout of one's own with its primary stem)."""
    own = hashlib.md5(pth.read_bytes()[-10000 * 1024 :]).hexdigest()
    other = {"0d0e6d143046b0eecc41a22e60224582": {"vr_model_param": "3band_44100_msb2",
                                                 "primary_stem": "Instrumental"}}  # fmt: skip
    if form == "entry":
        path = tmp_path / "params.yaml"
        path.write_text("".join(f"{k}: {v}\n" for k, v in ENTRY.items()))
    elif form == "model-data":
        path = tmp_path / "model_data.json"
        path.write_text(json.dumps({**other, own: {**ENTRY, "is_karaoke": False}}))
    elif form == "audio-separator":
        path = tmp_path / "model-data.json"
        path.write_text(json.dumps({"vr_model_data": {**other, own: ENTRY}, "mdx_model_data": {}}))
    else:
        path = tmp_path / "layout.json"
        layout = json.loads(layout_file("4band_v3_sn").read_text())
        path.write_text(json.dumps({**layout, "primary_stem": "No Echo"}))
    return path


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def written(out: Path) -> dict[str, np.ndarray]:
    return {
        p.stem.removeprefix("song_"): sf.read(p, dtype="float32", always_2d=True)[0].T
        for p in sorted(out.iterdir())
    }


def uvr_stems(pth: Path, wav: Path) -> tuple[np.ndarray, np.ndarray]:
    reference = reference_network(672, "v5.1", nout=16, nout_lstm=32)
    reference.load_state_dict(torch.load(pth))
    return UvrVr(reference.eval(), layout_file("4band_v3_sn"), "No Echo", v51=True).separate(wav)


@pytest.mark.parametrize("form", ["entry", "model-data", "audio-separator", "layout"])
def test_models_add_takes_each_form_of_parameters(
    form: str, own_pth: Path, tmp_path: Path, user_dir: Path
) -> None:
    params = params_file(tmp_path, form, own_pth)
    added = cli(
        "models", "add", "mine", "--arch", "vr", "--checkpoint", own_pth, "--config", params
    )
    assert added.exit_code == 0, added.stderr
    assert added.stdout == (
        "mine: vr, stems no_echo, echo, 44100 Hz; run it with `demixer separate FILE -m mine`\n"
    )
    kept = {p.name for p in (user_dir / "mine").iterdir()}
    assert kept == {"demixer-model.json", params.with_stem("params").name, "model.pth"}
    manifest = json.loads((user_dir / "mine" / "demixer-model.json").read_text())
    layout = manifest["arch_params"]["vr_model_param"]  # what the loader reads: resolved
    if form == "layout":
        assert layout == json.loads(layout_file("4band_v3_sn").read_text())
    else:
        assert layout == "4band_v3_sn"
    assert manifest["arch_params"]["primary_stem"] == "No Echo"


def test_an_added_model_runs_as_uvr(own_pth: Path, tmp_path: Path, user_dir: Path) -> None:
    """Added from UVR's whole model data (the entry found by the file's hash), then run by
    name: UVR's stems."""
    params = params_file(tmp_path, "model-data", own_pth)
    added = cli(
        "models", "add", "mine", "--arch", "vr", "--checkpoint", own_pth, "--config", params
    )
    assert added.exit_code == 0, added.stderr
    mix = music(1.0, seed=11)
    sf.write(tmp_path / "song.wav", mix.T, RATE, subtype="FLOAT")
    ran = cli("separate", tmp_path / "song.wav", "-m", "mine", "-o", tmp_path / "out",
              "--bit-depth", "32f")  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    stems = written(tmp_path / "out")
    assert list(stems) == ["echo", "no_echo"]
    no_echo, echo = uvr_stems(own_pth, tmp_path / "song.wav")
    assert peak_error(stems["no_echo"][:, : no_echo.shape[1]], no_echo) < TOLERANCE
    assert peak_error(stems["echo"][:, : echo.shape[1]], echo) < TOLERANCE


def test_separate_runs_the_files_as_they_are(
    own_pth: Path, tmp_path: Path, user_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine measures the whole song's loudest bin first, then streams it through in
    chunks (0.3 s here): UVR's stems for the song whole, its louder end scaling its start."""
    monkeypatch.setattr("demixer.models.vr.CHUNK_SECONDS", 0.3)
    params = params_file(tmp_path, "entry", own_pth)
    mix = music(2.5, seed=12)
    mix[:, 2 * RATE :] *= 10
    sf.write(tmp_path / "song.wav", mix.T, RATE, subtype="FLOAT")
    ran = cli("separate", tmp_path / "song.wav", "--arch", "vr", "--model-path", own_pth,
              "--model-config", params, "--stems", "no_echo", "-o", tmp_path / "out",
              "--bit-depth", "32f")  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    assert "by uvr-de-echo-mine " in ran.stdout  # the model goes by the file's name
    stems = written(tmp_path / "out")
    assert list(stems) == ["no_echo", "residual"]
    no_echo, _ = uvr_stems(own_pth, tmp_path / "song.wav")
    assert peak_error(stems["no_echo"][:, : no_echo.shape[1]], no_echo) < TOLERANCE
    assert not user_dir.exists()  # nothing added


BAD: dict[str, tuple[str, str]] = {
    "no primary stem": (
        "vr_model_param: 4band_v3\n",
        "{p}: lacks primary_stem (UVR's model data gives them per model)",
    ),
    "unknown key": (
        "vr_model_param: 4band_v3\nprimary_stem: Vocals\nagression: 10\n",
        "{p}: has unknown key(s) agression; known: vr_model_param, primary_stem, aggression, "
        "window_size, tta, post_process, post_process_threshold, high_end_process, batch_size, "
        "is_karaoke, is_bv_model, is_bv_model_rebalanced, nout, nout_lstm",
    ),
    "unknown layout": (
        "vr_model_param: 5band_v9\nprimary_stem: Vocals\n",
        "{p}: vr_model_param '5band_v9' is not a band layout UVR ships; known: "
        + ", ".join(LAYOUTS) + " (or give the layout's own mapping)",
    ),
    "aggression out of range": (
        "vr_model_param: 4band_v3\nprimary_stem: Vocals\naggression: 500\n",
        "{p}: aggression=500: expected a whole number from -100 to 100",
    ),
    "layout without its stem": (
        json.dumps({"bins": 672, "band": {}}),
        "{p}: a band layout needs a primary_stem beside it, what the model's mask keeps "
        "(Instrumental, Vocals, No Echo, ...; UVR's model data gives it per model)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_parameters_are_refused_by_name(case: str, own_pth: Path, tmp_path: Path) -> None:
    text, message = BAD[case]
    path = tmp_path / ("params.json" if text.startswith("{") else "params.yaml")
    path.write_text(text)
    with pytest.raises(InvalidModelConfig) as caught:
        read_params(path, own_pth)
    assert caught.value.message == message.format(p=path)


def test_a_window_the_network_cannot_run_is_refused_before_any_song(
    own_pth: Path, tmp_path: Path
) -> None:
    """UVR fails mid-song on a window that keeps no frame past the context, or does not halve
    evenly at each level; here the model does not load."""
    from demixer.models.vr.user import check_files

    for size, problem in (
        (128, "this network takes 64 frames of context at each end of a window"),
        (200, "this network's windows halve 4 times: use a multiple of 16"),
    ):
        path = tmp_path / "params.yaml"
        path.write_text(f"vr_model_param: 4band_v3\nprimary_stem: Vocals\nwindow_size: {size}\n")
        with pytest.raises(InvalidModelConfig) as caught:
            check_files(path, own_pth)
        assert caught.value.message == (
            f"model 'uvr-de-echo-mine': arch_params window_size {size}: {problem}"
        )


def test_a_layout_that_does_not_add_up_is_refused() -> None:
    layout = json.loads(layout_file("4band_v3").read_text())
    layout["band"]["4"]["crop_stop"] = 482  # past the 481 bins of a 960-point STFT
    with pytest.raises(InvalidModelConfig) as caught:
        parse_layout(layout, source="mine.json")
    assert caught.value.message == (
        "mine.json: band 4: crop_start 78 to crop_stop 482 must lie within the band's 481 bins"
    )
    layout["band"]["4"]["crop_stop"] = 481  # within the band, but the crops outgrow the bins
    with pytest.raises(InvalidModelConfig) as caught:
        parse_layout(layout, source="mine.json")
    assert (
        caught.value.message == "mine.json: the bands' crops add up to 770 bins, more than bins 672"
    )
    layout["band"]["4"]["crop_stop"] = 383
    layout["band"]["4"]["n_fft"] = 1 << 27  # its crop still within: every chunk took gigabytes
    with pytest.raises(InvalidModelConfig) as caught:
        parse_layout(layout, source="mine.json")
    assert caught.value.message == (
        "mine.json: band 4: n_fft (134217728) is over 65536, the most samples in an STFT frame "
        "demixer takes (published models use 320 to 2048): each band's window and spectrogram "
        "are computed for every chunk, and this would not fit in memory"
    )
    layout["band"]["4"]["n_fft"] = 960
    layout["band"]["1"]["res_type"] = "kaiser_best"  # resampy: not a dependency
    with pytest.raises(InvalidModelConfig) as caught:
        parse_layout(layout, source="mine.json")
    assert caught.value.message.startswith(
        "mine.json: res_type 'kaiser_best' (a lower band's resampler) is not one demixer has: "
        "polyphase, sinc_best,"
    )


def test_a_file_that_is_not_a_vr_network_for_the_layout_is_one_error(
    own_pth: Path, tmp_path: Path, user_dir: Path
) -> None:
    """A v5.1 file given a layout of other bins, and a file that is no VR network at all:
    each one clear error, and `models add` leaves nothing behind."""
    params = tmp_path / "params.yaml"
    params.write_text("vr_model_param: 3band_44100_msb2\nprimary_stem: Vocals\n")  # 640 bins
    added = cli(
        "models", "add", "mine", "--arch", "vr", "--checkpoint", own_pth, "--config", params
    )
    assert added.exit_code != 0
    assert f"{user_dir / '.mine.'}" not in added.stderr
    assert "does not fit a VR network for 640 bins" in added.stderr
    assert not (user_dir / "mine").exists()
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointMismatch) as caught:
        from demixer.models.vr.user import check_files

        check_files(params, other)
    assert caught.value.message == (
        f"{other}: not a UVR VR model: it has no tensor "
        f"'stg1_low_band_net.enc1.conv1.conv.0.weight' (the parameters: {params})"
    )


# The catalogue's VR models: the network each file holds, as UVR's model data and file size
# make it (v5.1 width 64 for a 218 409 KiB file without nout; nout 48 as the model data says;
# 5_HP's and 6_HP's 123 812 KiB is UVR's 32-wide v5 net), built on the meta device at full size.
CATALOGUE_NETS = {  # network, width, the stem the mask keeps
    "vr-deecho-dereverb": ("v5.1", 64, "noreverb"),
    "vr-de-echo-normal": ("v5.1", 48, "noecho"),
    "vr-de-echo-aggressive": ("v5.1", 48, "noecho"),
    "vr-karaoke-5hp": ("123812", 32, "instrumental"),
    "vr-karaoke-6hp": ("123812", 32, "instrumental"),
    "vr-denoise-lite": ("v5.1", 16, "noise"),
    "vr-denoise": ("v5.1", 48, "noise"),
    "vr-bve": ("v5.1", 64, "backing_vocals"),
}


@pytest.mark.parametrize("model_id", list(CATALOGUE_NETS))
def test_each_catalogue_entry_is_the_network_its_pinned_file_holds(model_id: str) -> None:
    """The entry's layout gives the network's bins; UVR's network for it has exactly the
    names and shapes demixer builds, and its tensors take the pinned file's size less
    `torch.save`'s few hundred bytes per entry (a wrong width or layout misses by megabytes)."""
    from demixer.models.registry import get_spec

    spec = get_spec(model_id)
    kind, nout, primary = CATALOGUE_NETS[model_id]
    params = VrParams.from_arch_params(spec.arch_params, model_id=model_id)
    with torch.device("meta"):
        state = reference_network(params.layout.bins, kind, nout=nout, nout_lstm=128).state_dict()
        network = build(state, params.layout.bins, source=model_id)
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == {
        k: tuple(v.shape) for k, v in state.items()
    }
    tensors = sum(t.numel() * t.element_size() for t in state.values())
    size = spec.weights[0].size
    assert size is not None
    assert 300 * len(state) < size - tensors < 450 * len(state)
    assert spec.stems[0] == primary  # VrBackend gives the mask's stem first


def test_an_unknown_architecture_is_refused_naming_every_one(own_pth: Path, tmp_path: Path) -> None:
    """Before any file is read: a config read for the wrong kind of model said less."""
    params = params_file(tmp_path, "entry", own_pth)
    sf.write(tmp_path / "song.wav", music(0.2, seed=1).T, RATE)
    known = "apollo, bandit, bandit_v2, bs_conformer, bs_roformer, htdemucs, mdx23c, "
    known += "mel_band_conformer, mel_band_roformer, scnet, scnet_masked, scnet_tran, mdx_net, vr"
    for args in (
        ["separate", tmp_path / "song.wav", "--arch", "vr5", "--model-config", params,
         "--model-path", own_pth],
        ["models", "add", "mine", "--arch", "vr5", "--config", params, "--checkpoint", own_pth],
    ):  # fmt: skip
        ran = cli(*args)
        assert ran.exit_code == 2
        assert f"unknown architecture 'vr5'; demixer runs: {known}" in ran.stderr
