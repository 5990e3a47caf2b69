"""Ensembles of models that window the input themselves (MSST's), streamed member by member.

UVR, audio-separator and MSST's ensemble run each model over the whole file and combine the
whole arrays; an ensemble of such models must give those stems, not those of each model run
inside the engine's windows (its own chunks, edge padding and normalisation per window). The
members are tiny random RoFormers from the published configs (``msst_support``), in fp32.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml  # type: ignore[import-untyped]

from demixer.audio import OutputFormat, resample
from demixer.engine import Separator
from demixer.errors import Cancelled
from demixer.models.ensemble import MODES, CombineStream, EnsembleBackend, combine
from demixer.models.loading import load_backend
from demixer.models.msst.backend import MsstBackend
from demixer.models.registry import ModelSpec, get_spec
from msst_support import model_files, music, write_config

SR = 44100
STEMS = ("vocals", "instrumental")
Members = list[tuple[ModelSpec, MsstBackend]]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Members]:
    """Two vocal models with different chunks and overlaps, both normalising the input, one
    at 48 kHz (so each needs the input's statistics at its own rate)."""
    from demixer.models.msst.user import open_files

    root = tmp_path_factory.mktemp("members")
    made = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: more threads only contend on a shared machine
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEMIXER_PRECISION", "fp32")
        for name, arch, seed, hops, overlaps, rate in (
            ("kim-mel-vocals", "mel_band_roformer", 0, 20, 2, SR),
            ("viperx-bs-1297", "bs_roformer", 1, 27, 4, 48000),
        ):
            config, checkpoint = model_files(root, name, seed)
            options = yaml.load(config.read_text(), Loader=yaml.FullLoader)
            options["audio"]["chunk_size"] = 441 * hops
            options["audio"]["sample_rate"] = rate
            options["inference"].update(num_overlap=overlaps, normalize=True)
            made.append(open_files(arch, write_config(options, config), checkpoint))
    yield made
    torch.set_num_threads(threads)


def _ensemble(members: Members, mode: str, weights: tuple[float, ...] | None = None) -> Separator:
    backend = EnsembleBackend([(spec.id, b) for spec, b in members], STEMS, mode, weights)
    spec = replace(members[0][0], id=f"{mode}:a+b", stems=STEMS)
    return Separator.from_backend(spec, backend)


@pytest.mark.parametrize("seconds", [1.3, 0.1])
def test_an_ensemble_of_msst_models_gives_each_model_over_the_whole_song_combined(
    members: Members, seconds: float
) -> None:
    """The ensemble ran each member inside every window the engine cut (the shorter member's
    chunk), with that member's own chunking, edge padding and statistics per window: stems
    other than each model's over the whole song, combined. 1.3 s is several chunks of each
    member; 0.1 s is shorter than one. A weighted average (``a@3+b``) weighs them as it does
    the whole arrays."""
    mix = music(int(seconds * SR), seed=3) * 2 + 0.02  # loud and off centre: stats matter
    alone = [Separator.from_backend(*m).separate_array(mix, SR)["vocals"] for m in members]
    for mode, weights in (("avg", None), ("max", None), ("avg", (3.0, 1.0))):
        got = _ensemble(members, mode, weights).separate_array(mix, SR)
        vocals = combine(alone, mode, weights)
        assert list(got) == list(STEMS)
        np.testing.assert_allclose(got["vocals"], vocals, atol=1e-5, rtol=0, err_msg=mode)
        np.testing.assert_allclose(got["instrumental"], mix - vocals, atol=1e-5, rtol=0)


def test_an_ensemble_with_a_model_that_takes_windows_runs_each_model_as_it_runs_alone(
    members: Members,
) -> None:
    """Beside Spleeter (which takes the engine's windows) an MSST model ran inside each window
    of the ensemble, the shortest member's, its chunks and statistics per window: not the
    stems it gives alone. Now each member runs over the whole song as it does alone, Spleeter
    in its own cross-faded windows (shrunk here to 4 s, so that 9 s of music crosses two of
    their seams), and the estimates are combined."""
    spleeter = load_backend("spleeter-2stems")
    spleeter.window, spleeter.overlap = 4 * SR, SR // 2
    spleeter_spec = get_spec("spleeter-2stems")
    mix = music(9 * SR, seed=5) * 2 + 0.02
    alone = [
        Separator.from_backend(spleeter_spec, spleeter).separate_array(mix, SR)["vocals"],
        Separator.from_backend(*members[1]).separate_array(mix, SR)["vocals"],
    ]
    backend = EnsembleBackend(
        [(spleeter_spec.id, spleeter), (members[1][0].id, members[1][1])], STEMS, "max"
    )
    spec = replace(members[1][0], id="max:spleeter-2stems+b", stems=STEMS)
    got = Separator.from_backend(spec, backend).separate_array(mix, SR)
    vocals = combine(alone, "max")
    np.testing.assert_allclose(got["vocals"], vocals, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["instrumental"], mix - vocals, atol=1e-5, rtol=0)


def test_members_normalising_at_two_rates_take_their_statistics_from_one_decoding(
    members: Members,
) -> None:
    """The whole input's statistics at each normalising member's rate (44.1 and 48 kHz here)
    took one decoding of the input per rate: for a long compressed song, seconds each. One
    pass now gives both, each the mono mix's mean and deviation as that model gets the song."""
    separator = _ensemble(members, "avg")
    mix = music(2 * SR + 123, seed=6) * 2 + 0.02
    passes = 0

    def blocks() -> Iterator[np.ndarray]:
        nonlocal passes
        passes += 1
        for start in range(0, mix.shape[1], 10_000):
            yield mix[:, start : start + 10_000]

    got = separator.input_stats(blocks, SR)
    assert passes == 1 and sorted(got) == [SR, 48000]
    for rate, stats in got.items():
        mono = resample(mix, SR, rate).astype(np.float64).mean(axis=0)
        assert stats.mean == pytest.approx(float(mono.mean()), rel=1e-6)
        assert stats.std == pytest.approx(float(mono.std()), rel=1e-6)


def test_a_streamed_ensemble_reads_a_file_reports_progress_and_cancels(
    members: Members, tmp_path: Path
) -> None:
    mix = music(SR, seed=4)
    song = tmp_path / "song.wav"
    sf.write(song, mix.T, SR, subtype="FLOAT")
    separator = _ensemble(members, "min")
    seen: list[float] = []
    result = separator.separate_file(
        song, tmp_path / "out", fmt=OutputFormat.parse("wav", "32f"), on_progress=seen.append
    )
    alone = [Separator.from_backend(*m).separate_array(mix, SR)["vocals"] for m in members]
    vocals = sf.read(result.paths["vocals"], dtype="float32")[0].T
    np.testing.assert_allclose(vocals, combine(alone, "min"), atol=1e-5, rtol=0)
    assert len(seen) >= 10 and seen == sorted(seen) and seen[-1] == 1.0  # per member chunk

    asked = 0

    def cancel() -> bool:
        nonlocal asked
        asked += 1
        return asked > 3

    with pytest.raises(Cancelled):
        separator.separate_file(song, tmp_path / "cancelled", should_cancel=cancel)
    assert asked == 4
    assert not any(p.is_file() for p in (tmp_path / "cancelled").rglob("*"))


@pytest.mark.parametrize("mode", [*MODES, "avg@2,1,0.5"])
def test_combining_as_the_estimates_come_is_combining_the_whole_arrays(mode: str) -> None:
    rng = np.random.default_rng(7)
    estimates = [rng.standard_normal((2, 100_003)).astype(np.float32) for _ in range(3)]
    mode, _, weighted = mode.partition("@")
    weights = [float(w) for w in weighted.split(",")] if weighted else None
    stream = CombineStream(mode, weights)
    parts, start = [], 0
    for size in (1, 1023, 1025, 40_000, 7, 30_000, 27_947):  # uneven, as members yield
        parts.append(stream.push([e[:, start : start + size] for e in estimates]))
        start += size
    parts.append(stream.finish())
    assert start == 100_003
    whole = combine(estimates, mode, weights)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, atol=1e-6, rtol=0)
