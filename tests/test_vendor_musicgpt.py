"""MusicGPT-style extraction (``/api/public``) against a real `demixer serve`, and the denoiser.

The client part follows MusicGPT's quick-start with plain httpx (no demixer imports): POST the
form to ``/v1/Extraction``, poll ``/v1/byId`` until COMPLETED, download each stem; the
completion webhook lands on a local receiver (127.0.0.1 is allowlisted for the server).
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf

from audiofiles import decode_stream, stempeg_example
from conftest import Backend
from demixer.audio.denoise import denoise, denoise_blocks
from demixer.engine import Separator
from demixer.models.msst.user import add, open_files
from demixer.models.user_models import remove_user_model
from msst_support import model_files
from service_harness import Server, create_key, fast_env, running_server

# A time as MusicGPT's clients read it: UTC, "Z", a fraction of a second or not.
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

RATE = 44100
SECONDS = 2.0


def snr_db(reference: np.ndarray, x: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((x - reference) ** 2)))


# --- the denoiser itself -----------------------------------------------------------------------


def _chord(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    """A stereo chord with a slow swell, ``(2, n)`` float32."""
    t = np.arange(round(seconds * RATE)) / RATE
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)
    mono = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    return (amplitude * swell * mono)[None].repeat(2, 0).astype(np.float32)


def test_denoise_improves_snr_on_white_noise_over_a_tone() -> None:
    clean = _chord(4.0)
    noise = (0.1 * np.random.default_rng(1).standard_normal(clean.shape)).astype(np.float32)
    noisy = clean + noise
    out = denoise(noisy, RATE)
    assert out.shape == noisy.shape and out.dtype == np.float32
    before, after = snr_db(clean, noisy), snr_db(clean, out)
    assert after >= before + 6, (before, after)


def test_denoise_keeps_silence_silent_and_a_clean_signal_intact() -> None:
    silence = np.zeros((2, RATE), dtype=np.float32)
    assert np.max(np.abs(denoise(silence, RATE))) == 0.0
    clean = _chord(3.0)
    assert snr_db(clean, denoise(clean, RATE)) > 40  # barely changed


def test_denoise_streams_block_by_block_and_keeps_the_length() -> None:
    rng = np.random.default_rng(2)
    x = (_chord(3.0) + 0.05 * rng.standard_normal((2, 3 * RATE))).astype(np.float32)[:, :-123]
    blocks = [x[:, i : i + 7000] for i in range(0, x.shape[1], 7000)]
    streamed = np.concatenate(list(denoise_blocks(iter(blocks), RATE)), axis=1)
    assert streamed.shape == x.shape
    np.testing.assert_allclose(streamed, denoise(x, RATE), atol=1e-5)
    # A profile window shorter than the stream (the rest is gated with it) still denoises.
    short = np.concatenate(list(denoise_blocks(iter(blocks), RATE, profile_seconds=0.5)), 1)
    assert short.shape == x.shape
    for tiny in (1, 100, 2047):  # shorter than a frame: passed through with its length
        assert denoise(x[:, :tiny], RATE).shape == (2, tiny)


# --- a local webhook receiver ----------------------------------------------------------------


@dataclass
class Receiver:
    port: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.bodies):
                if body.get("task_id") == task_id:
                    return body
            time.sleep(0.1)
        raise AssertionError(f"no webhook for {task_id}; got {self.bodies}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            rec.bodies.append(json.loads(body))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Server]:
    # ``backend``: one per backend, started in its environment (its database and bucket).
    env = fast_env(DEMIXER_URL_ALLOWLIST="127.0.0.1")
    with running_server(tmp_path_factory.mktemp("serve"), env=env) as s:
        yield s


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mix = decode_stream(stempeg_example(), 0)[:, : round(SECONDS * RATE)]
    path = tmp_path_factory.mktemp("audio") / "song.wav"
    sf.write(path, mix.T, RATE, subtype="FLOAT")
    return path


# --- the client, as MusicGPT's quick-start writes it (plain httpx) ----------------------------


def musicgpt(server: Server, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": key if key is not None else server.key}
    return httpx.Client(base_url=f"{server.base_url}/api/public", headers=headers, timeout=60)


def extract(client: httpx.Client, audio: Path | None = None, **form: Any) -> httpx.Response:
    data = {k: json.dumps(v) if isinstance(v, list) else v for k, v in form.items()}
    if audio is None:
        return client.post("/v1/Extraction", data=data)
    files = {"audio_file": (audio.name, audio.read_bytes(), "audio/wav")}
    return client.post("/v1/Extraction", data=data, files=files)


def poll(client: httpx.Client, task_id: str, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/v1/byId", params={"conversionType": "EXTRACTION", "task_id": task_id})
        assert r.status_code == 200, r.text
        conversion: dict[str, Any] = r.json()["conversion"]
        assert conversion["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"), conversion
        if conversion["status"] == "COMPLETED":
            return conversion
        time.sleep(0.2)
    raise AssertionError(f"{task_id} did not complete")


def download(url: str) -> tuple[np.ndarray, int]:
    r = httpx.get(url, timeout=60)
    assert r.status_code == 200, r.text
    audio, rate = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    return audio.T, rate


def test_quick_start_upload_poll_download_and_webhook(
    server: Server, song: Path, receiver: Receiver, backend: Backend
) -> None:
    with musicgpt(server) as client:
        r = extract(  # vocals only: the rest still comes back as `instrumental`, as documented
            client, song, stems=["vocals"], webhook_url=receiver.url("/hook")
        )
        assert r.status_code == 200, r.text
        queued = r.json()
        assert queued["success"] is True
        assert queued["task_id"] == queued["conversion_id"]
        assert isinstance(queued["eta"], int) and queued["eta"] >= 1
        assert queued["credit_estimate"] == pytest.approx(SECONDS / 60, abs=0.01)
        conversion = poll(client, queued["task_id"])
        # The audio_file is the conversion's own, deleted with it: no answer names its id.
        native = server.client().get(f"/v1/queue/requests/{queued['task_id']}/status")
        assert native.json()["file_id"] is None, native.text
        # conversion_id looks it up too
        by_conv = client.get("/v1/byId", params={"conversion_id": queued["conversion_id"]})
        assert by_conv.json()["conversion"]["status"] == "COMPLETED"
        both = {"task_id": queued["task_id"], "conversion_id": queued["conversion_id"]}
        assert client.get("/v1/byId", params=both).json()["conversion"]["status"] == "COMPLETED"
        # Two different ids: which one was meant is not guessed.
        mixed = client.get("/v1/byId", params={**both, "conversion_id": "req_other"})
        assert mixed.status_code == 400
        assert mixed.json() == {
            "success": False,
            "error": "INVALID_REQUEST",
            "message": f"task_id {queued['task_id']!r} and conversion_id 'req_other' name "
            "different conversions; give one of them",
        }
    assert conversion["conversion_duration"] == pytest.approx(SECONDS, abs=0.05)
    original, _ = download(conversion["audio_url"])
    stems = {}
    for name in ("vocals", "instrumental"):  # the WAVs: the MP3s are lossy
        stems[name], rate = download(conversion[f"{name}_wav"])
        assert rate == RATE
        assert stems[name].shape[1] / rate == pytest.approx(SECONDS, abs=0.05)
    np.testing.assert_allclose(stems["vocals"] + stems["instrumental"], original, atol=2e-3)
    assert conversion["vocal"] == conversion["vocals"]  # the webhook's spelling, here too
    assert conversion["vocal_wav"] == conversion["vocals_wav"]
    hook = receiver.wait(queued["task_id"])
    assert hook["success"] is True and hook["conversion_id"] == queued["task_id"]
    # As MusicGPT's sample payload: the status as byId words it, and the times.
    assert (hook["status"], hook["status_msg"]) == ("COMPLETED", "completed")
    assert hook["createdAt"] == conversion["createdAt"]
    # In UTC with a "Z", as the sample payload's "2025-01-01T12:00:00Z" (not "+00:00").
    assert all(ISO_Z.fullmatch(hook[name]) for name in ("createdAt", "updatedAt")), hook
    assert datetime.fromisoformat(hook["updatedAt"]) > datetime.fromisoformat(hook["createdAt"])
    # A signed blob URL: the API's own, or the bucket's on S3.
    blobs = backend.servers.s3_endpoint if backend.servers is not None else server.base_url
    assert hook["audio_path"].startswith(blobs + "/")
    assert download(hook["audio_path"])[0].shape == original.shape
    assert hook["audio_url"] == hook["audio_path"]  # as byId names it
    assert set(hook) >= {"vocal", "instrumental", "conversion_cost", "conversion_duration"}
    assert download(hook["vocal"])[0].shape == stems["vocals"].shape
    assert hook["vocals"] == hook["vocal"]  # byId's spelling, here too
    np.testing.assert_array_equal(download(hook["instrumental_wav"])[0], stems["instrumental"])
    assert hook["conversion_duration"] == pytest.approx(SECONDS, abs=0.05)


def test_stems_are_mp3_as_musicgpt_shows_with_wav_beside_them(
    server: Server, song: Path, receiver: Receiver
) -> None:
    """Every audio URL MusicGPT's examples show is an MP3 (byId's and the webhook's
    ``audiofile.mp3``), and its conversions give the WAV beside it (``conversion_path`` and
    ``conversion_path_wav``): each stem field was a WAV, so a client saving ``vocals`` as
    ``.mp3`` wrote WAV bytes. The field is the MP3 now, ``{field}_wav`` the WAV, each URL's
    file name, Content-Type and bytes the same format."""
    with musicgpt(server) as client:
        r = extract(client, song, stems=["vocals"], webhook_url=receiver.url("/formats"))
        assert r.status_code == 200, r.text
        task_id = r.json()["task_id"]
        conversion = poll(client, task_id)
    hook = receiver.wait(task_id)
    for body in (conversion, hook):
        for name in ("vocals", "vocal", "instrumental"):
            for key, ext, content_type, fmt in (
                (name, "mp3", "audio/mpeg", "MP3"),
                (f"{name}_wav", "wav", "audio/wav", "WAV"),
            ):
                url = body[key]
                assert urlsplit(url).path.endswith(f".{ext}"), (key, url)
                got = httpx.get(url, timeout=60)
                assert got.status_code == 200, got.text
                assert got.headers["content-type"] == content_type, key
                assert sf.info(io.BytesIO(got.content)).format == fmt, key
                assert sf.info(io.BytesIO(got.content)).duration == pytest.approx(SECONDS, abs=0.1)


@pytest.mark.backends("sqlite")  # which model runs: the same on either backend
def test_denoise_job_separates_the_denoised_input(server: Server, tmp_path: Path) -> None:
    clean = _chord(SECONDS, amplitude=0.4)
    rng = np.random.default_rng(3)
    noisy = (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
    path = tmp_path / "noisy.wav"
    sf.write(path, noisy.T, RATE, subtype="FLOAT")
    with musicgpt(server, f"Bearer {server.key}") as client:  # "Bearer" is accepted too
        r = extract(
            client, path, stems=["vocals", "instrumental"], preprocessing_options=["Denoise"]
        )
        assert r.status_code == 200, r.text
        conversion = poll(client, r.json()["task_id"])
    assert conversion["preprocessing_options"] == ["Denoise"]
    total = download(conversion["vocals"])[0] + download(conversion["instrumental"])[0]
    assert total.shape == noisy.shape
    # stems + residual = the denoised input: much closer to the clean chord than the upload.
    assert snr_db(clean, total) >= snr_db(clean, noisy) + 6


def test_surround_is_folded_to_stereo_the_protocol_cannot_ask_for_it(
    server: Server, song: Path, tmp_path: Path
) -> None:
    stereo, rate = sf.read(song, dtype="float32", always_2d=True)
    surround = tmp_path / "film.wav"  # 5.1: L R C LFE Ls Rs, the song in front only
    zeros = np.zeros(len(stereo), np.float32)
    sf.write(surround, np.stack([*stereo.T, zeros, zeros, zeros, zeros], axis=1), rate)
    with musicgpt(server) as client:
        r = extract(client, surround, stems=["vocals"])
        assert r.status_code == 200, r.text
        conversion = poll(client, r.json()["task_id"])
    vocals, _ = download(conversion["vocals"])
    instrumental, _ = download(conversion["instrumental"])
    assert vocals.shape == instrumental.shape == (2, len(stereo))
    folded = vocals + instrumental  # the front pair, as the fold keeps it
    assert np.abs(folded).max() > 0.1 and np.corrcoef(folded[0], stereo[:, 0])[0, 1] > 0.99


def test_errors(server: Server, song: Path, tmp_path: Path) -> None:
    base = f"{server.base_url}/api/public"
    # MusicGPT's error table has no 401: a key problem is its 403 ("authentication issues").
    missing = httpx.get(f"{base}/v1/byId", params={"task_id": "req_x"})
    assert missing.status_code == 403 and missing.json()["success"] is False
    assert missing.json()["error"] == "UNAUTHENTICATED"
    with musicgpt(server, "dmx_not_a_key") as bad:
        r = bad.get("/v1/byId", params={"task_id": "req_x"})
        assert r.status_code == 403 and r.json()["success"] is False
        assert extract(bad, song, stems=["vocals"]).status_code == 403
    with musicgpt(server) as client:
        r = client.get("/v1/byId", params={"conversionType": "EXTRACTION", "task_id": "req_nope"})
        assert r.status_code == 404 and r.json() == {
            "success": False,
            "error": "NOT_FOUND",
            "message": r.json()["message"],
        }
        r = extract(client, song, stems=["vocals", "kick_drum"])
        assert r.status_code == 422, r.text
        assert "kick_drum" in r.json()["message"] and "vocals" in r.json()["message"]
        assert "drums" in r.json()["message"]  # what can be produced is named
        # No stems: MusicGPT's default, whose piano no model here produces, and the
        # message says where the piano came from.
        r = extract(client, song)
        assert r.status_code == 422, r.text
        assert r.json()["message"] == (
            "no installed model produces 'piano' (no stems were given, so MusicGPT's default: "
            "drums, bass, piano, guitar); this server can produce: vocals, drums, bass, "
            "instrumental"
        )
        r = extract(client, song, stems=["male_vocal"])
        assert r.status_code == 422 and "male_vocal" in r.json()["message"]
        # Lead and backing vocals need the karaoke recipe's models: not installed here.
        r = extract(client, song, stems=["lead_vocal", "back_vocal"])
        assert r.status_code == 422, r.text
        assert r.json()["message"] == (
            "no installed model produces 'lead_vocal'; this server can produce: vocals, drums, "
            "bass, instrumental"
        )
        junk = tmp_path / "junk.mp3"
        junk.write_bytes(b"this is not audio at all" * 100)
        files = {"audio_file": ("junk.mp3", junk.read_bytes(), "audio/mpeg")}
        r = client.post("/v1/Extraction", data={"stems": '["vocals"]'}, files=files)
        assert r.status_code == 422 and r.json()["error"] == "INVALID_AUDIO", r.text
        # No audio is the 422 MISSING_INPUT whatever else is missing and however the fields
        # come: a multipart or URL-encoded form, a JSON object, or no body at all.
        missing = {
            "success": False,
            "error": "MISSING_INPUT",
            "message": "send the audio as `audio_file` (a file) or `audio_url`",
        }
        for r in (
            extract(client, None, stems=["vocals"]),
            extract(client, None),  # no stems either: still the input that is named
            client.post("/v1/Extraction", files={"stems": (None, '["vocals"]')}),
            client.post("/v1/Extraction", json={"stems": ["vocals"]}),
            client.post("/v1/Extraction"),
        ):
            assert r.status_code == 422 and r.json() == missing, r.text
        # A file in another field (a public client sends it as `audio`) is no `audio_file`:
        # the same 422, naming where it went (it was a 400).
        elsewhere = {"audio": ("song.wav", song.read_bytes(), "audio/wav")}
        r = client.post("/v1/Extraction", data={"stems": '["vocals"]'}, files=elsewhere)
        assert (r.status_code, r.json()["error"]) == (422, "MISSING_INPUT"), r.text
        assert r.json()["message"] == "the file goes in the field `audio_file`, not 'audio'"
        # The fields as a JSON object are read as the form's.
        sent = {"audio_url": "http://127.0.0.1:9/gone.wav", "stems": ["vocals"]}
        r = client.post("/v1/Extraction", json=sent)
        assert r.status_code == 200 and r.json()["success"] is True, r.text
        r = client.post("/v1/Extraction", json=["vocals"])
        assert r.status_code == 400 and r.json()["message"] == (
            "the JSON body must be an object of fields"
        )
        r = client.get("/v1/no-such-endpoint")
        assert r.status_code == 404 and r.json() == {
            "success": False,
            "error": "NOT_FOUND",
            "message": "no such endpoint: 'v1/no-such-endpoint'",
        }
        r = extract(client, song, stems=["vocals"], preprocessing_options=["Dereverb"])
        assert r.status_code == 422 and r.json()["message"] == (
            "preprocessing option 'Dereverb' needs a model that is not installed on this "
            "server (`demixer models pull mel-roformer-dereverb-anvuew` on the server)"
        )
        r = extract(client, song, stems=["vocals"], preprocessing_options=["Deecho"])
        assert r.status_code == 422 and r.json()["message"] == (
            "preprocessing option 'Deecho' needs a model that is not installed on this "
            "server (`demixer models pull mel-roformer-deecho-sucial` on the server)"
        )
        r = extract(client, song, stems="vocals")  # not JSON
        assert r.status_code == 400
        task = extract(client, song, stems=["vocals"]).json()["task_id"]
    # Another account's task is unknown to this one.
    with musicgpt(server, create_key(server.data_dir)) as other:
        assert other.get("/v1/byId", params={"task_id": task}).status_code == 404
    # A conversion holds download URLs: read as a result is, with files:read; an audio_file
    # is stored as any upload is, with files:write (a key with neither got both).
    with musicgpt(server, create_key(server.data_dir, scopes="audio:separate")) as narrow:
        r = narrow.get("/v1/byId", params={"task_id": task})
        assert (r.status_code, r.json()["error"]) == (403, "PERMISSION_DENIED")
        assert r.json()["message"] == "this API key lacks the scope 'files:read'"
        r = extract(narrow, song, stems=["vocals"])
        assert (r.status_code, r.json()["error"]) == (403, "PERMISSION_DENIED")
        assert "'files:write'" in r.json()["message"]


def test_by_user_pages_the_callers_extractions_and_v1_checks_the_key(server: Server) -> None:
    """MusicGPT's n8n node lists conversions with `GET /v1/byUser` (conversionType,
    startDate, endDate, sortOrder, limit, LastEvaluatedKey -> {success, conversions,
    LastEvaluatedKey}) and tests its credential with `GET /v1/`: both were 404."""
    key = create_key(server.data_dir)  # an account of its own: its listing is these alone
    url = "http://127.0.0.1:9/song.wav"  # queued at once (fetched by the worker, later)
    with musicgpt(server, key) as client:
        check = client.get("/v1/")
        assert check.status_code == 200 and check.json()["success"] is True, check.text
        ids = []
        for _ in range(3):
            r = extract(client, audio_url=url, stems=["vocals"])
            assert r.status_code == 200, r.text
            ids.append(r.json()["task_id"])
            time.sleep(0.01)
        # A native request of the same key is no MusicGPT conversion.
        native = server.client(key).post(
            "/v1/queue/audio/stems", json={"input": {"audio_url": url, "stems": ["vocals"]}}
        )
        assert native.status_code == 202, native.text
        r = client.get("/v1/byUser")
        assert r.status_code == 200, r.text
        listed = r.json()
        assert listed["success"] is True and listed["LastEvaluatedKey"] is None
        assert [c["task_id"] for c in listed["conversions"]] == ids[::-1]  # newest first
        one = client.get("/v1/byId", params={"conversionType": "EXTRACTION", "task_id": ids[0]})
        assert set(listed["conversions"][-1]) == set(one.json()["conversion"])  # byId's shape
        first = client.get("/v1/byUser", params={"limit": 2}).json()
        assert [c["task_id"] for c in first["conversions"]] == ids[:0:-1]
        assert first["LastEvaluatedKey"]
        rest = client.get(
            "/v1/byUser", params={"limit": 2, "LastEvaluatedKey": first["LastEvaluatedKey"]}
        ).json()
        assert [c["task_id"] for c in rest["conversions"]] == ids[:1]
        assert rest["LastEvaluatedKey"] is None
        oldest = client.get(
            "/v1/byUser", params={"sortOrder": "ASC", "conversionType": "EXTRACTION"}
        )
        assert [c["task_id"] for c in oldest.json()["conversions"]] == ids
        for params in ({"conversionType": "MUSIC_AI"}, {"startDate": "2999-01-01T00:00:00Z"}):
            r = client.get("/v1/byUser", params=params)
            assert r.status_code == 200 and r.json()["conversions"] == [], r.text
        r = client.get("/v1/byUser", params={"limit": 0})
        assert r.status_code == 400 and r.json()["error"] == "INVALID_REQUEST", r.text
    with musicgpt(server) as other:  # another account's key sees none of them
        theirs = other.get("/v1/byUser", params={"limit": 100}).json()["conversions"]
        assert not {c["task_id"] for c in theirs} & set(ids)
    with musicgpt(server, "dmx_not_a_key") as bad:
        assert bad.get("/v1/").status_code == 403
        assert bad.get("/v1/byUser").status_code == 403


@pytest.mark.backends("sqlite")  # no service: the stem names alone
def test_a_narrower_stem_is_refused_not_given_the_broader_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a 6-stem model, `guitar` and `piano` are its stems; `electric_guitar`,
    `acoustic_guitar` and `keys` are not (a guitar stem holds every guitar: asking for both
    kinds would return the same file twice), so they are refused naming the broader stem."""
    from demixer.api import submit
    from demixer.errors import UnknownStem
    from demixer.models.registry import get_spec
    from demixer.vendors.musicgpt.wire import plan_stems

    monkeypatch.setattr(submit, "installed_models", lambda _: [get_spec("htdemucs_6s")])
    services: Any = None
    assert plan_stems(services, ["guitar", "piano"]) == (
        ["guitar", "piano"],
        {"guitar": "guitar", "piano": "piano"},
    )
    can = "vocals, guitar, drums, piano, bass, instrumental"
    for name, broader in (
        ("electric_guitar", "guitar"),
        ("acoustic_guitar", "guitar"),
        ("keys", "piano"),
        ("kick_drum", "drums"),
    ):
        with pytest.raises(UnknownStem) as refused:
            plan_stems(services, ["vocals", name])
        assert refused.value.message == (
            f"no installed model produces {name!r}; this server can produce: {can} "
            f"(the {broader!r} stem has it, mixed with the rest of that stem)"
        )
    with pytest.raises(UnknownStem) as refused:
        plan_stems(services, ["strings"])  # nothing holds it
    assert refused.value.message.endswith(f"this server can produce: {can}")
    # The drum kit's pieces and male and female voices are stems of their recipes.
    recipes = [get_spec("drum-kit"), get_spec("male-female")]
    monkeypatch.setattr(submit, "installed_models", lambda _: recipes)
    assert plan_stems(services, ["kick_drum", "hi_hat", "crash", "female_vocal"]) == (
        ["kick", "hi_hat", "crash", "female_vocals"],
        {
            "kick_drum": "kick",
            "hi_hat": "hi_hat",
            "crash": "crash",
            "female_vocal": "female_vocals",
        },
    )


def test_a_cancelled_conversion_reads_failed_and_its_webhook_says_so(
    receiver: Receiver, tmp_path: Path
) -> None:
    """An API with no worker: the conversion stays queued until the native cancel ends it.
    MusicGPT has no cancel, so its client learns it from the webhook, as of any failure."""
    env = fast_env(DEMIXER_URL_ALLOWLIST="127.0.0.1")
    with running_server(tmp_path / "api-only", workers=0, env=env) as api, musicgpt(api) as client:
        hook = receiver.url("/cancelled")
        song = receiver.url("/song.wav")  # never fetched: no worker
        r = extract(client, None, audio_url=song, stems=["vocals"], webhook_url=hook)
        assert r.status_code == 200, r.text
        assert r.json()["eta"] == -1  # not fetched yet: its length is unknown
        task = r.json()["task_id"]
        cancel = api.client().put(f"/v1/queue/requests/{task}/cancel")
        assert cancel.json()["status"] == "CANCELLED", cancel.text
        conversion = client.get("/v1/byId", params={"task_id": task}).json()["conversion"]
        body = receiver.wait(task)
    assert (conversion["status"], conversion["status_msg"]) == ("FAILED", "cancelled")
    assert body == {
        "success": False,
        "task_id": task,
        "conversion_id": task,
        "conversion_type": "EXTRACTION",
        "status": "FAILED",
        "status_msg": "cancelled",
        "audio_path": receiver.url("/song.wav"),
        "audio_url": receiver.url("/song.wav"),  # the name MusicGPT's webhook page shows
        "createdAt": conversion["createdAt"],
        "updatedAt": body["updatedAt"],  # the cancel's time (checked below)
        "error": "CANCELLED",
        "message": "the conversion was cancelled",
    }
    assert datetime.fromisoformat(body["updatedAt"]) > datetime.fromisoformat(body["createdAt"])


# The pinned config of mel-roformer-deecho-sucial (Politrees/UVR_resources's copy, SHA-256
# 9abd9b81...): what MSST reads of it, not its bytes (its authors' licence is CC-BY-NC-SA-4.0).
# Shrunk in width and chunk length: its layout (60 mel bands, hop 441, one target of two
# instruments) is kept.
_ECHO_CONFIG: dict[str, Any] = {
    "audio": {
        "chunk_size": 441 * 20,  # published: 352800 (800 hops)
        "dim_f": 1024,
        "dim_t": 801,
        "hop_length": 441,
        "n_fft": 2048,
        "num_channels": 2,
        "sample_rate": 44100,
        "min_mean_abs": 0.0,
    },
    "model": {
        "dim": 16,  # published: 256
        "depth": 1,  # published: 8
        "stereo": True,
        "num_stems": 1,
        "time_transformer_depth": 1,
        "freq_transformer_depth": 1,
        "num_bands": 60,
        "dim_head": 16,  # published: 64
        "heads": 2,  # published: 8
        "attn_dropout": 0.1,
        "ff_dropout": 0.1,
        "flash_attn": True,
        "dim_freqs_in": 1025,
        "sample_rate": 44100,
        "stft_n_fft": 2048,
        "stft_hop_length": 441,
        "stft_win_length": 2048,
        "stft_normalized": False,
        "mask_estimator_depth": 2,
    },
    "training": {"instruments": ["dry", "No dry"], "target_instrument": "dry"},
    "inference": {"batch_size": 1, "dim_t": 801, "num_overlap": 4},
}


@pytest.mark.backends("sqlite")  # no service: the API's check and the worker's step
def test_deecho_runs_the_catalogues_de_echo_model_once_it_is_pulled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``Deecho`` with mel-roformer-deecho-sucial installed (its pinned config, shrunk,
    and random weights, under its file names, pins overridden to them) is accepted, and the
    worker's clean-up step runs that model and keeps its ``dry`` stem for the separation;
    without it the 422 names the model to pull."""
    import torch
    import yaml  # type: ignore[import-untyped]

    from demixer.api import submit
    from demixer.models import registry
    from demixer.models.arch import build_model
    from demixer.models.loading import file_sha256, is_installed
    from demixer.models.registry import WeightFile, get_spec, list_specs
    from demixer.service.worker.separation import _preprocessor
    from demixer.vendors.musicgpt.wire import UnsupportedOption, preprocess_steps
    from msst_support import music

    threads = torch.get_num_threads()  # a tiny network: more threads only contend
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    entry = get_spec("mel-roformer-deecho-sucial")
    config_pin, checkpoint_pin = entry.weights
    home = tmp_path / "models" / entry.id
    home.mkdir(parents=True)
    config = home / config_pin.name
    config.write_text(yaml.dump(_ECHO_CONFIG))
    torch.manual_seed(0)
    network = build_model(
        "mel_band_roformer", _ECHO_CONFIG["model"], _ECHO_CONFIG["audio"], ["dry", "No dry"], "dry"
    )
    torch.save(network.state_dict(), home / checkpoint_pin.name)
    pins = tuple(
        WeightFile(
            name=w.name,
            sha256=file_sha256(home / w.name),
            url=w.url,
            size=(home / w.name).stat().st_size,  # pinned as made, as its hash
        )
        for w in entry.weights
    )
    spec = replace(entry, weights=pins)
    monkeypatch.setitem(registry._BY_ID, spec.id, spec)
    specs = tuple(spec if s.id == spec.id else s for s in registry._SPECS)
    monkeypatch.setattr(registry, "_SPECS", specs)
    models = tmp_path / "models"
    services: Any = None
    installed = [s for s in list_specs(models) if is_installed(s, models)]
    assert spec in installed
    monkeypatch.setattr(submit, "installed_models", lambda _: installed)
    assert preprocess_steps(services, ["Deecho", "Denoise", "Deecho"]) == ["deecho", "denoise"]

    loaded: list[str] = []

    def load(model: str) -> Separator:
        loaded.append(model)
        return Separator(model, model_dir=models)

    step = _preprocessor(("deecho",), load, models)
    assert step is not None and loaded == [spec.id]
    mix = music(30000)
    blocks = [mix[:, i : i + 7000] for i in range(0, mix.shape[1], 7000)]
    cleaned = np.concatenate(list(step(iter(blocks), RATE)), axis=1)
    dry = Separator(spec.id, model_dir=models).separate_array(mix, RATE, stems=["dry"])["dry"]
    assert cleaned.shape == mix.shape
    np.testing.assert_allclose(cleaned, dry, atol=1e-5)
    assert np.abs(cleaned - mix).max() > 0.05  # the echo stem really was taken out

    monkeypatch.setattr(submit, "installed_models", lambda _: [])
    with pytest.raises(UnsupportedOption) as refused:
        preprocess_steps(services, ["Deecho"])
    assert refused.value.message == (
        "preprocessing option 'Deecho' needs a model that is not installed on this server "
        "(`demixer models pull mel-roformer-deecho-sucial` on the server)"
    )


@pytest.mark.backends("sqlite")  # which model runs: the same on either backend
def test_deecho_runs_a_users_own_de_echo_model(
    tmp_path_factory: pytest.TempPathFactory, song: Path
) -> None:
    """A de-echo model a user adds with `demixer models add` (its kept stem "no_echo", UVR's
    "No Echo"), and no catalogue one, is what MusicGPT's ``Deecho`` runs before the separation:
    the stems then add up to the input with the echo stem taken out. Added again under its
    name with other weights, the same request runs again with them (not answered from the
    result cache with what the old weights cleaned)."""
    root = tmp_path_factory.mktemp("deecho")
    # A shrunk Mel-RoFormer whose instruments are the kept "no_echo" (the target) and "echo".
    stems = {"instruments": ["no_echo", "echo"], "target_instrument": "no_echo"}
    config, checkpoint = model_files(root, training=stems)
    _, retrained = model_files(root, training=stems, seed=1)
    models = root / "models"
    adding: dict[str, Any] = {"arch": "mel_band_roformer", "config": config, "model_dir": models}
    add("my-deecho", checkpoint=checkpoint, **adding)
    env = fast_env(DEMIXER_MODEL_DIR=str(models))
    totals = []
    with running_server(root / "serve", env=env) as server, musicgpt(server) as client:
        r = extract(client, song, stems=["vocals"], preprocessing_options=["Deecho"])
        assert r.status_code == 200, r.text
        conversion = poll(client, r.json()["task_id"])
        totals.append(download(conversion["vocals"])[0] + download(conversion["instrumental"])[0])
        r = extract(client, song, stems=["vocals"], preprocessing_options=["Dereverb"])
        assert r.status_code == 422 and r.json()["message"] == (
            "preprocessing option 'Dereverb' needs a model that is not installed on this "
            "server (`demixer models pull mel-roformer-dereverb-anvuew` on the server)"
        )
        remove_user_model("my-deecho", models)
        add("my-deecho", checkpoint=retrained, **adding)
        r = extract(client, song, stems=["vocals"], preprocessing_options=["Deecho"])
        assert r.status_code == 200, r.text
        again = poll(client, r.json()["task_id"])
        totals.append(download(again["vocals"])[0] + download(again["instrumental"])[0])
    assert conversion["preprocessing_options"] == ["Deecho"]
    mix = sf.read(song, dtype="float32", always_2d=True)[0].T
    for total, weights in zip(totals, (checkpoint, retrained), strict=True):
        spec, network = open_files("mel_band_roformer", config, weights)
        dry = Separator.from_backend(spec, network).separate_array(mix, RATE, stems=["no_echo"])
        assert total.shape == mix.shape
        np.testing.assert_allclose(total, dry["no_echo"], atol=2e-3)
        assert np.abs(total - mix).max() > 0.05  # the echo stem really was taken out
    assert np.abs(totals[1] - totals[0]).max() > 0.01
