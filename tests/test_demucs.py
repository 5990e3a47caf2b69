"""The Demucs path end to end, offline: a real checkpoint, a real HTTP server, real audio.

Meta's weights cannot be fetched here, so the tests build a tiny, randomly initialised HTDemucs
with demucs' own classes, serialise it exactly as demucs does (``serialize_model`` + ``torch.save``,
named ``<signature>-<sha256[:8]>.th``), serve it from ``http.server`` on 127.0.0.1 and register a
spec pointing at it. Every URL in these tests is either that local server or an ``.invalid`` host
that no resolver answers, so nothing can reach the internet.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
import yaml  # type: ignore[import-untyped]

from demixer.errors import DownloadFailed, ModelFailed, ModelUnavailable, WeightsChecksumMismatch
from demixer.models import demucs_backend, registry
from demixer.models.download import digest_matches, download, mirror_url, pull, verify_pin
from demixer.models.loading import file_sha256, load_backend
from demixer.models.registry import ModelSpec, WeightFile, get_spec
from weights_origin import Origin as Server
from weights_origin import serve

SOURCES = ("drums", "bass", "other", "vocals")
DEMUCS_IDS = ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi")
FAKE_HOST = "https://weights.demixer-test.invalid"
STEMPEG_EXAMPLE = "The Easton Ellises - Falcon 69.stem.mp4"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Checkpoint:
    name: str
    data: bytes
    sha256: str


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    """A ~200 kB HTDemucs package in demucs' own format, for 44.1 kHz stereo, 4 stems."""
    demucs_backend.import_demucs()  # installs nothing global; see test_import_leaves_no_stub
    htdemucs = importlib.import_module("demucs.htdemucs")
    states = importlib.import_module("demucs.states")
    omegaconf = importlib.import_module("omegaconf")
    torch.manual_seed(0)
    # nfft and depth keep the published layout (4096, 4 layers) so the frequency branch ends
    # where the real model's does; channels, transformer size and a 2 s segment make it tiny.
    model = htdemucs.HTDemucs(
        sources=list(SOURCES),
        channels=4,
        depth=4,
        nfft=4096,
        t_layers=1,
        t_heads=1,
        t_hidden_scale=1.0,
        dconv_comp=2,
        segment=2,
        samplerate=44100,
    )
    package = states.serialize_model(model, omegaconf.OmegaConf.create({}), half=True)
    buffer = io.BytesIO()
    torch.save(package, buffer)
    data = buffer.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    return Checkpoint(name=f"0123abcd-{sha256[:8]}.th", data=data, sha256=sha256)


@pytest.fixture
def server() -> Iterator[Server]:
    """A real HTTP server on 127.0.0.1 serving ``files`` (path -> bytes); 404 otherwise."""
    with serve() as state:
        state.files.clear()
        yield state


def tiny_spec(
    checkpoint: Checkpoint, *, pin: str | None = None, model_id: str = "tiny"
) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        stems=SOURCES,
        sample_rate=44100,
        description="random-weight HTDemucs for tests",
        license="MIT",
        weights_source="built by the test",
        loader="demixer.models.demucs_backend:load",
        quality="none: random weights",
        install_hint=f"run `demixer models pull {model_id}`",
        weights=(
            WeightFile(
                name=checkpoint.name,
                sha256=pin or checkpoint.sha256,
                url=f"{FAKE_HOST}/demucs/test/{checkpoint.name}",
                size=len(checkpoint.data),
            ),
        ),
    )


@pytest.fixture
def registered(
    monkeypatch: pytest.MonkeyPatch, checkpoint: Checkpoint, server: Server
) -> ModelSpec:
    """The tiny spec in the registry, its file on the server at the mirrored path."""
    spec = tiny_spec(checkpoint)
    monkeypatch.setitem(registry._BY_ID, spec.id, spec)
    server.files[f"/demucs/test/{checkpoint.name}"] = checkpoint.data
    return spec


def music(seconds: float) -> np.ndarray:
    """``(2, samples)`` float32 at 44.1 kHz: the MUSDB excerpt stempeg ships, else tones + noise."""
    spec = importlib.util.find_spec("stempeg")
    locations = spec.submodule_search_locations if spec else None
    path = Path(next(iter(locations or [])), "data", STEMPEG_EXAMPLE) if locations else None
    n = int(seconds * 44100)
    if path is None or not path.is_file():
        t = np.arange(n) / 44100
        rng = np.random.default_rng(0)
        tones = 0.3 * np.sin(2 * np.pi * np.array([[220.0], [330.0]]) * t)
        return (tones + 0.05 * rng.standard_normal((2, n))).astype(np.float32)
    blocks: list[np.ndarray] = []
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=44100)
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):  # stream 0: the mixture
            blocks.extend(out.to_ndarray() for out in resampler.resample(frame))
            if sum(b.shape[1] for b in blocks) >= n:
                break
    return np.ascontiguousarray(np.concatenate(blocks, axis=1)[:, :n], dtype=np.float32)


def check_stems(stems: dict[str, np.ndarray], mix: np.ndarray) -> None:
    assert list(stems) == list(SOURCES)
    for audio in stems.values():
        assert audio.shape == mix.shape
        assert audio.dtype == np.float32
        assert np.isfinite(audio).all()


# --- pull + load + separate -------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["full", "prefix"])
def test_pull_load_separate(
    pin: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    checkpoint: Checkpoint,
    server: Server,
) -> None:
    # A prefix pin is what Meta publishes (the 8 hex digits in the file name).
    spec = tiny_spec(checkpoint, pin=checkpoint.name[9:17] if pin == "prefix" else None)
    monkeypatch.setitem(registry._BY_ID, spec.id, spec)
    server.files[f"/demucs/test/{checkpoint.name}"] = checkpoint.data
    monkeypatch.setenv("DEMIXER_MODEL_BASE_URL", server.url)  # the mirror, from the environment
    progress: list[tuple[str, int, int | None]] = []

    paths = pull(spec.id, model_dir=tmp_path, on_progress=lambda *p: progress.append(p))

    dest = tmp_path / spec.id / checkpoint.name
    assert paths == [dest]
    assert file_sha256(dest) == checkpoint.sha256
    assert sorted(p.name for p in dest.parent.iterdir()) == [checkpoint.name]  # no .part left
    assert progress[-1] == (checkpoint.name, len(checkpoint.data), len(checkpoint.data))
    assert server.requests == [f"/demucs/test/{checkpoint.name}"]

    backend = load_backend(spec.id, model_dir=tmp_path)
    assert (backend.sample_rate, backend.channels, backend.stems) == (44100, 2, SOURCES)
    assert backend.window == 44 * 44100 and backend.overlap == 44100

    mix = music(3.0)
    stems = backend.separate(mix)
    check_stems(stems, mix)
    # No random shifts: the same window always gives the same stems.
    again = backend.separate(mix)
    assert all(np.array_equal(stems[s], again[s]) for s in SOURCES)


def test_pull_skips_verified_file_and_replaces_a_bad_one(
    tmp_path: Path, registered: ModelSpec, server: Server, checkpoint: Checkpoint
) -> None:
    pull(registered.id, model_dir=tmp_path, base_url=server.url)
    pull(registered.id, model_dir=tmp_path, base_url=server.url)
    assert len(server.requests) == 1  # the second pull found the file with its pin

    dest = tmp_path / registered.id / checkpoint.name
    dest.write_bytes(b"half a file")
    pull(registered.id, model_dir=tmp_path, base_url=server.url)
    assert len(server.requests) == 2
    assert file_sha256(dest) == checkpoint.sha256


def test_load_from_model_path(tmp_path: Path, checkpoint: Checkpoint) -> None:
    local = tmp_path / "mine.th"
    local.write_bytes(checkpoint.data)
    # The real htdemucs entry, whose weights are not here: model_path replaces them.
    backend = load_backend("htdemucs", model_dir=tmp_path / "empty", model_path=local)
    assert backend.stems == SOURCES
    mix = music(1.5)
    check_stems(backend.separate(mix), mix)


def test_progress_within_a_window_counts_demucs_segments(
    tmp_path: Path, checkpoint: Checkpoint
) -> None:
    local = tmp_path / "mine.th"
    local.write_bytes(checkpoint.data)
    backend = load_backend("htdemucs", model_path=local)
    progress: list[float] = []
    mix = music(5.0)
    # 2 s segments at demucs' 25 % overlap start every 1.5 s: 0, 1.5, 3 and 4.5 s.
    stems = backend.separate(mix, on_progress=progress.append)  # type: ignore[call-arg]
    assert progress == [0.25, 0.5, 0.75, 1.0]
    check_stems(stems, mix)


def test_best_quality_is_demucs_shift_trick_at_fixed_delays(
    tmp_path: Path, checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--quality best` changed nothing for a Demucs model: it is demucs' own `--shifts 4` now,
    with its four random offsets fixed at 0, 1/4, 1/2 and 3/4 of its half-second range, so
    that the same song gives the same stems. demucs computes the expected stems itself."""
    local = tmp_path / "mine.th"
    local.write_bytes(checkpoint.data)
    backend = load_backend("htdemucs", model_path=local)
    best = backend.with_quality("best")  # type: ignore[attr-defined]
    mix = music(3.0)
    progress: list[float] = []
    got = best.separate(mix, on_progress=progress.append)

    apply = importlib.import_module("demucs.apply")
    offsets = iter([k * 22050 // 4 for k in range(4)])  # demucs' range: 0 to 0.5 s
    monkeypatch.setattr(apply.random, "randint", lambda low, high: next(offsets))
    wav = torch.from_numpy(mix)
    center, scale = float(wav.mean(0).mean()), float(wav.mean(0).std())
    with torch.inference_mode():
        expected = (
            apply.apply_model(
                backend._model,  # type: ignore[attr-defined]
                ((wav - center) / scale)[None],
                shifts=4,
                split=True,
                overlap=0.25,
            )[0]
            * scale
            + center
        )
    for i, stem in enumerate(SOURCES):
        assert float(np.abs(got[stem] - expected[i].numpy()).max()) <= 1e-5, stem
    plain = backend.separate(mix)
    assert max(float(np.abs(got[s] - plain[s]).max()) for s in SOURCES) > 1e-3
    assert progress[-1] == 1.0 and progress == sorted(progress)
    assert backend.with_quality("balanced") is backend  # type: ignore[attr-defined]


def test_model_path_with_other_stems_is_refused(tmp_path: Path, checkpoint: Checkpoint) -> None:
    local = tmp_path / "mine.th"
    local.write_bytes(checkpoint.data)
    with pytest.raises(ModelUnavailable, match="declares"):
        load_backend("htdemucs_6s", model_path=local)


def test_separate_edge_cases(tmp_path: Path, checkpoint: Checkpoint) -> None:
    local = tmp_path / "mine.th"
    local.write_bytes(checkpoint.data)
    backend = load_backend("htdemucs", model_path=local)
    empty = backend.separate(np.zeros((2, 0), np.float32))
    assert all(a.shape == (2, 0) for a in empty.values())
    silence = np.zeros((2, 4410), np.float32)
    check_stems(backend.separate(silence), silence)  # zero spread: no division by zero
    with pytest.raises(ValueError, match="expected"):
        backend.separate(np.zeros((1, 100), np.float32))


def test_model_errors_become_model_failed(
    tmp_path: Path, checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "mine.th"
    local.write_bytes(checkpoint.data)
    backend = load_backend("htdemucs", model_path=local)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(backend, "_apply_model", broken)
    with pytest.raises(ModelFailed, match="out of memory"):
        backend.separate(np.zeros((2, 100), np.float32))


# --- failures ---------------------------------------------------------------------------------


def test_corrupted_download_fails_and_leaves_nothing(
    tmp_path: Path, registered: ModelSpec, server: Server, checkpoint: Checkpoint
) -> None:
    tampered = bytearray(checkpoint.data)
    tampered[len(tampered) // 2] ^= 0xFF  # same size, one bit pattern changed
    server.files[f"/demucs/test/{checkpoint.name}"] = bytes(tampered)
    with pytest.raises(DownloadFailed, match="SHA-256"):
        pull(registered.id, model_dir=tmp_path, base_url=server.url)
    assert list((tmp_path / registered.id).iterdir()) == []


def test_http_404_fails(tmp_path: Path, registered: ModelSpec, server: Server) -> None:
    server.files.clear()
    with pytest.raises(DownloadFailed, match="HTTP 404") as info:
        pull(registered.id, model_dir=tmp_path, base_url=server.url)
    assert "tiny" in info.value.message
    assert list((tmp_path / registered.id).iterdir()) == []


def test_wrong_size_fails(tmp_path: Path, server: Server, checkpoint: Checkpoint) -> None:
    server.files["/f.th"] = checkpoint.data
    dest = tmp_path / "f.th"
    with pytest.raises(DownloadFailed, match="announces"):
        download(f"{server.url}/f.th", dest, sha256=checkpoint.sha256, size=10)
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_connection_refused_fails(tmp_path: Path, checkpoint: Checkpoint) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and now is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadFailed, match="failed"):
        download(f"http://127.0.0.1:{port}/x.th", tmp_path / "x.th", sha256=checkpoint.sha256)
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_say_how_to_pull(tmp_path: Path, registered: ModelSpec) -> None:
    for model_id in (registered.id, *DEMUCS_IDS):
        with pytest.raises(ModelUnavailable, match=f"demixer models pull {model_id}`"):
            load_backend(model_id, model_dir=tmp_path)


def test_tampered_cache_file_is_never_unpickled(
    tmp_path: Path, registered: ModelSpec, checkpoint: Checkpoint
) -> None:
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.mkdir, (str(marker),))

    dest = tmp_path / registered.id / checkpoint.name
    dest.parent.mkdir()
    torch.save({"klass": Payload()}, dest)
    with pytest.raises(WeightsChecksumMismatch):
        load_backend(registered.id, model_dir=tmp_path)
    assert not marker.exists()


def test_a_damaged_demucs_checkpoint_names_the_command_that_fetches_it_again(
    tmp_path: Path,
) -> None:
    """A Demucs file damaged in the cache (here an HTML error page saved in its place) said only
    "delete it and fetch it again"; it names `demixer models pull htdemucs`, as the error for
    every other catalogue model does."""
    weight = get_spec("htdemucs").weights[0]
    damaged = tmp_path / "htdemucs" / weight.name
    damaged.parent.mkdir()
    damaged.write_bytes(b"<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(WeightsChecksumMismatch) as caught:
        load_backend("htdemucs", model_dir=tmp_path)
    assert caught.value.message.startswith(f"{damaged} has SHA-256 ")
    assert caught.value.message.endswith(
        "so it was not loaded; delete it and fetch it again (`demixer models pull htdemucs`)"
    )


# --- registry, pins, mirrors, imports ---------------------------------------------------------


def _demucs_remote() -> Path:
    spec = importlib.util.find_spec("demucs")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)), "remote")


def test_registry_matches_the_installed_demucs_package() -> None:
    urls: dict[str, str] = {}
    root = ""
    for line in (_demucs_remote() / "files.txt").read_text().splitlines():
        line = line.strip()
        if line.startswith("root:"):
            root = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            urls[line.split("-", 1)[0]] = f"https://dl.fbaipublicfiles.com/demucs/{root}{line}"
    for model_id in DEMUCS_IDS:
        spec = get_spec(model_id)
        bag = yaml.safe_load((_demucs_remote() / f"{model_id}.yaml").read_text())
        assert [w.name.split("-")[0] for w in spec.weights] == bag["models"]
        layout = demucs_backend._BAGS.get(model_id, demucs_backend._BagLayout())
        assert layout.weights == bag.get("weights")
        assert layout.segment == bag.get("segment")
        for weight in spec.weights:
            assert weight.url == urls[weight.name.split("-")[0]]
            # The full pin must agree with the prefix Meta put in the file name.
            assert len(weight.sha256) == 64
            assert weight.sha256.startswith(weight.name.removesuffix(".th").split("-")[1])
            assert weight.size
        assert spec.sample_rate == 44100 and spec.license_class == "research only"
        assert f"demixer models pull {model_id}" in spec.install_hint


def test_pins_and_mirrors(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"abc").hexdigest()
    assert digest_matches(digest, digest) and digest_matches(digest, digest[:8].upper())
    assert not digest_matches(digest, "0" * 64)
    with pytest.raises(ValueError):
        digest_matches(digest, "abc")  # too short to pin anything
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    verify_pin(path, digest[:8])
    with pytest.raises(WeightsChecksumMismatch, match="prefix 00000000"):
        verify_pin(path, "00000000")
    url = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"
    assert mirror_url(url, None) == url
    assert (
        mirror_url(url, "http://127.0.0.1:9/m/")
        == "http://127.0.0.1:9/m/demucs/hybrid_transformer/955717e8-8726e21a.th"
    )


def test_import_leaves_no_openunmix_stub_and_no_torchaudio() -> None:
    demucs_backend.import_demucs()
    assert "torchaudio" not in sys.modules
    assert not any(name.startswith("openunmix") for name in sys.modules)
    assert "demucs.htdemucs" in sys.modules
    for name in ("demucs.audio", "demucs.api", "demucs.separate"):
        assert name not in sys.modules
