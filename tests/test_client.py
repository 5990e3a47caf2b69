"""``demixer.Client`` / ``AsyncClient`` and ``demixer remote`` against a real ``demixer serve``
(uvicorn, SQLite, a worker child running spleeter-2stems on the MUSDB excerpt).

The server is never faked. Where a test needs a failure, it is put where demixer does not own
the wire: an httpx transport standing for a reverse proxy in front of the server (one that
refuses or cuts the event stream, or rate-limits with its own 429), and a plain HTTP server
serving a non-audio ``audio_url``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import symtable
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest.mock import patch

import httpx
import numpy as np
import pytest
import soundfile as sf

from audiofiles import decode_stream, encode_tracks, stempeg_example
from cli_support import demixer_here
from conftest import Backend, interrupt_after
from demixer import AsyncClient, Client, cli_remote
from demixer.client import (
    ApiError,
    BadResponse,
    ConnectionFailed,
    JobCancelled,
    JobFailed,
    Result,
    Status,
    WaitTimeout,
)
from demixer.client.core import StatusStream
from demixer.client.retries import retry_delay
from demixer.client.transfers import atomic_file
from demixer.errors import InvalidAudio, InvalidOutput, StorageFull, exit_code_for
from demixer.retry_after import retry_after
from service_harness import DEMIXER, Server, fast_env, free_port, running_server

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

RATE = 44100


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The MUSDB excerpt's mix as a float wav (~6 s), and its samples ``(2, n)``."""
    mix = decode_stream(stempeg_example(), 0)
    path = tmp_path_factory.mktemp("music") / "falcon.wav"
    sf.write(path, mix.T, RATE, subtype="FLOAT")
    return path, mix


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Server]:
    # ``backend``: one per backend, started in its environment (its database and bucket).
    # 127.0.0.1 allowed as an audio_url host: the non-audio URL below is served on loopback.
    env = fast_env(DEMIXER_URL_ALLOWLIST="127.0.0.1")
    with running_server(tmp_path_factory.mktemp("serve"), env=env) as s:
        yield s


@pytest.fixture(scope="module")
def not_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("junk") / "notes.mp3"
    path.write_text("this is not audio at all\n" * 50)
    return path


def client(server: Server, **kwargs: object) -> Client:
    return Client(server.base_url, server.key, poll_interval=0.5, **kwargs)  # type: ignore[arg-type]


def read(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == RATE
    return np.asarray(data.T)


# --- edges we do not own: a proxy in front of the server ---------------------------------------


class Proxy(httpx.BaseTransport):
    """A reverse proxy in front of the real server that refuses event streams (as a buffering
    proxy does with a 502 page) and/or rate-limits the first ``limit_first`` requests to
    ``limit_path`` with its own 429."""

    def __init__(
        self, *, refuse_stream: bool = False, limit_path: str = "", limit_first: int = 0
    ) -> None:
        self.inner = httpx.HTTPTransport()
        self.refuse_stream = refuse_stream
        self.limit_path, self.limit_first = limit_path, limit_first
        self.seen: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        if self.refuse_stream and request.url.path.endswith("/status/stream"):
            return httpx.Response(502, html="<html><body>502 Bad Gateway</body></html>")
        if self.limit_path and request.url.path == self.limit_path and self.limit_first > 0:
            self.limit_first -= 1
            return httpx.Response(429, headers={"Retry-After": "1"}, text="slow down")
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class _CutStream(httpx.AsyncByteStream):
    """Passes the first chunk of the event stream, then the connection drops."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            yield chunk
            raise httpx.RemoteProtocolError("peer closed connection mid-stream")

    async def aclose(self) -> None:
        await self.inner.aclose()


class CuttingProxy(httpx.AsyncBaseTransport):
    """A proxy that drops event-stream connections after their first frame."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/status/stream"):
            assert isinstance(response.stream, httpx.AsyncByteStream)
            return httpx.Response(
                response.status_code, headers=response.headers, stream=_CutStream(response.stream)
            )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- the sync client ---------------------------------------------------------------------------


def test_separate_writes_stems_that_sum_to_the_input(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, mix = music
    out = tmp_path / "out"
    with client(server) as c:
        paths = c.separate(path, stems=["vocals"], bit_depth="32f", directory=out)
    assert set(paths) == {"vocals", "residual"}
    assert paths["vocals"] == out / "falcon_vocals.wav"
    assert sorted(p.name for p in out.iterdir()) == ["falcon_residual.wav", "falcon_vocals.wav"]
    vocals, residual = read(paths["vocals"]), read(paths["residual"])
    assert vocals.shape == residual.shape == mix.shape
    assert np.abs(vocals + residual - mix).max() < 1e-4
    share = float((vocals**2).sum() / (mix**2).sum())
    assert 0.02 < share < 0.8  # separated, not copied


def test_surround_is_refused_unless_folded_and_spans_limit_a_prompt(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, mix = music
    surround = tmp_path / "film.wav"  # 6 channels: the stereo mix three times over
    sf.write(surround, np.concatenate([mix, mix, mix]).T, RATE, subtype="FLOAT")
    with client(server) as c:
        with pytest.raises(ApiError) as refused:
            c.separate(surround, stems=["vocals"], directory=tmp_path / "no")
        assert (refused.value.code, refused.value.param) == ("INVALID_AUDIO", "input.downmix")
        folded = c.separate(surround, stems=["vocals"], directory=tmp_path / "5.1", downmix=True)
        assert read(folded["vocals"]).shape == mix.shape  # stereo, the input's length

        # A prompt's target kept from 0 to 1 s and taken out from 2 to 2.5 s.
        spans = [(0.0, 1.0), {"start": 2.0, "end": 2.5, "include": False}]
        paths = c.separate(
            path, prompt="vocals", spans=spans, bit_depth="32f", directory=tmp_path / "spans"
        )
        with pytest.raises(ValueError, match="give a prompt with them"):
            c.submit("file_x", stems=["vocals"], spans=spans)
    target, residual = read(paths["target"]), read(paths["residual"])
    fade = int(0.010 * RATE)  # each edge fades over 10 ms outside its span
    assert np.abs(target[:, RATE + fade :]).max() == 0  # only the first second is kept
    assert np.abs(target[:, : RATE // 2]).max() > 1e-3
    np.testing.assert_allclose(residual[:, RATE + fade :], mix[:, RATE + fade :], atol=1e-6)
    assert not (tmp_path / "no").exists()


@pytest.mark.backends("sqlite")  # no server, no backend
def test_spans_from_numpy_are_sent_and_a_string_include_is_refused() -> None:
    """Spans of NumPy float32 times (a beat tracker's) failed with "Object of type float32 is
    not JSON serializable", and ``(2, 3, "false")`` was sent as ``include: true``: the sound
    was kept where the caller asked to take it out. The first is sent as numbers; the second
    is a ValueError, nothing sent."""
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        job = {"request_id": "req_1", "status": "IN_QUEUE", "model": "audio/separate"}
        urls = {f"{n}_url": "u" for n in ("status", "stream", "result", "response", "cancel")}
        return httpx.Response(202, json={**job, **urls, "engine_model": "spleeter-2stems"})

    with Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c:
        times = np.array([0.5, 1.25], dtype=np.float32)
        c.submit("file_x", prompt="vocals", spans=[(times[0], times[1])])
        with pytest.raises(ValueError, match="not 'false'"):
            c.submit("file_x", prompt="vocals", spans=[(2, 3, "false")])
    assert [b["input"]["spans"] for b in bodies] == [  # type: ignore[index]
        [{"start": 0.5, "end": 1.25, "include": True}]
    ]


def test_wait_polls_when_a_proxy_refuses_the_event_stream(
    server: Server, music: tuple[Path, np.ndarray]
) -> None:
    proxy = Proxy(refuse_stream=True)
    seen: list[Status] = []
    with client(server, transport=proxy) as c:
        info = c.upload(music[0], multipart=True)
        assert info.status == "uploaded" and info.channels == 2
        job = c.submit(info.file_id, stems=["vocals"], quality="fast")
        done = c.wait(job.request_id, on_progress=seen.append, timeout=120)
        assert done.status == "COMPLETED" and done.progress == 1.0
        assert done.quality == "fast"
        assert set(c.result(job.request_id).outputs) == {"vocals", "residual"}
    stream = f"GET /v1/queue/requests/{job.request_id}/status/stream"
    status = f"GET /v1/queue/requests/{job.request_id}/status"
    assert proxy.seen.count(stream) == 1
    assert proxy.seen.count(status) == len(seen) >= 1
    assert seen[-1] == done


def test_a_proxy_429_is_retried_after_retry_after_then_raised(
    server: Server, music: tuple[Path, np.ndarray]
) -> None:
    once = Proxy(limit_path="/v1/files", limit_first=1)
    with client(server, transport=once) as c:
        started = time.monotonic()
        info = c.upload(music[0])
        assert time.monotonic() - started >= 0.9  # Retry-After: 1 was honoured
    assert info.status == "uploaded"
    assert once.seen.count("POST /v1/files") == 2

    path = "/v1/queue/requests/req_x/status"
    always = Proxy(limit_path=path, limit_first=100)
    with client(server, transport=always, max_tries=2) as c, pytest.raises(ApiError) as caught:
        c.status("req_x")
    assert caught.value.status == 429 and caught.value.code == "HTTP_429"
    assert always.seen.count(f"GET {path}") == 2


def test_not_audio_is_an_invalid_audio_api_error_at_upload(server: Server, not_audio: Path) -> None:
    with client(server) as c:
        for multipart in (False, True):
            with pytest.raises(ApiError) as caught:
                c.upload(not_audio, multipart=multipart)
            error = caught.value
            assert (error.status, error.code) == (422, "INVALID_AUDIO")
            assert "notes.mp3" in error.message and error.request_id


def test_a_job_whose_input_is_not_audio_raises_job_failed(server: Server, not_audio: Path) -> None:
    handler = partial(SimpleHTTPRequestHandler, directory=str(not_audio.parent))
    files = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{files.server_address[1]}/{not_audio.name}"
        with client(server) as c:
            job = c.submit(audio_url=url, stems=["vocals"])
            with pytest.raises(JobFailed) as caught:
                c.wait(job.request_id, timeout=60)
            with pytest.raises(ApiError) as result:
                c.result(job.request_id)
    finally:
        files.shutdown()
        files.server_close()
    assert caught.value.code == "INVALID_AUDIO" and caught.value.request_id == job.request_id
    assert caught.value.message
    assert result.value.code == "INVALID_AUDIO"


def test_cancel_ends_the_wait_with_job_cancelled(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    # About 4 minutes of music: seconds of work even at spleeter's ~80x real time, so the
    # cancel (a few ms after the submit) surely reaches the job before it could finish.
    longer = tmp_path / "longer.flac"
    sf.write(longer, np.tile(music[1], (1, 40)).T, RATE, subtype="PCM_16")
    with client(server) as c:
        job = c.submit(c.upload(longer).file_id)
        assert c.cancel(job.request_id) in {"CANCELLED", "CANCELLATION_REQUESTED"}
        with pytest.raises(JobCancelled) as caught:
            c.wait(job.request_id, timeout=30)
        assert caught.value.request_id == job.request_id
        with pytest.raises(ApiError) as again:
            c.cancel(job.request_id)
        assert again.value.status == 409


def test_api_errors_carry_the_servers_code(server: Server) -> None:
    with Client(server.base_url, "dmx_not-a-key") as c, pytest.raises(ApiError) as bad_key:
        c.status("req_x")
    assert bad_key.value.status == 401
    with client(server) as c:
        with pytest.raises(ApiError) as unknown:
            c.status("req_doesnotexist")
        assert (unknown.value.status, unknown.value.code) == (404, "NOT_FOUND")
        with pytest.raises(ApiError) as stem:
            c.submit(audio_url="http://127.0.0.1:9/a.wav", stems=["kazoo"])
        assert stem.value.code == "UNKNOWN_STEM" and stem.value.param
        with pytest.raises(ApiError) as level:
            c.submit(audio_url="http://127.0.0.1:9/a.wav", quality="ultra")
        assert (level.value.status, level.value.code) == (422, "UNKNOWN_QUALITY")
        assert level.value.param == "input.quality"


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second of a quiet tone: a job on it takes well under a second of separation."""
    path = tmp_path_factory.mktemp("tone") / "tone.wav"
    sf.write(path, 0.1 * np.sin(np.arange(RATE) / 20.0).astype(np.float32), RATE)
    return path


def test_an_upload_says_where_a_videos_sound_starts_and_how_many_tracks_it_has(
    server: Server, tmp_path: Path
) -> None:
    """The server probes a video's late sound (``audio_start``) and its audio tracks
    (``audio_tracks``: the default-flagged one is separated); the client's ``FileInfo`` left
    both out, so a script could not line the stems up with the picture or warn of the choice.
    An older server that does not send them reads as None."""
    sound = (0.1 * np.ones((2, RATE // 2))).astype(np.float32)
    film = encode_tracks(tmp_path / "film.mkv", [sound, sound], RATE, default=1,
                         video_seconds=1.0, audio_start=0.5)  # fmt: skip
    with client(server) as c:
        info = c.upload(film)
        assert (info.audio_start, info.audio_tracks) == (0.5, 2)
        again = c.file(info.file_id)
        assert (again.audio_start, again.audio_tracks) == (0.5, 2)
        # Which to separate is the script's to say (audio_track); one the file lacks is the
        # server's 422, before anything is queued.
        with pytest.raises(ApiError) as refused:
            c.submit(info.file_id, model="spleeter-2stems", audio_track=3)
        assert (refused.value.status, refused.value.code, refused.value.param) == (
            422, "INVALID_AUDIO", "input.audio_track",
        )  # fmt: skip

    def older(request: httpx.Request) -> httpx.Response:
        old = {k: v for k, v in again.raw.items() if k not in ("audio_start", "audio_tracks")}
        return httpx.Response(200, json=old)

    with Client("http://api.test", api_key="k", transport=httpx.MockTransport(older)) as c:
        before = c.file(info.file_id)
        assert (before.duration, before.audio_start, before.audio_tracks) == (
            again.duration,
            None,
            None,
        )


def test_a_developer_lists_deletes_and_reads_usage_and_models(server: Server, tone: Path) -> None:
    """The calls a script makes around its jobs: one upload read by two jobs, one cancelled
    and deleted (twice: the second is 404 NOT_FOUND), the other done; its file deleted, its
    outputs kept; the listing, newest first, a page at a time; the usage it added."""
    with client(server) as c:
        assert "spleeter-2stems" in [m.id for m in c.models().installed]
        used = c.usage().total_seconds
        info = c.upload(tone)
        assert c.file(info.file_id).duration == pytest.approx(1.0, abs=0.01)
        done = c.submit(info.file_id, stems=["vocals"], model="spleeter-2stems")
        gone = c.submit(info.file_id, stems=["vocals"], model="spleeter-2stems")
        c.cancel(gone.request_id)
        c.delete(gone.request_id)
        with pytest.raises(ApiError) as twice:
            c.delete(gone.request_id)
        assert (twice.value.status, twice.value.code) == (404, "NOT_FOUND")
        assert c.wait(done.request_id, timeout=60).file_id == info.file_id
        # The upload is listed, newest first, until it is deleted; the log read on asking.
        assert [f.file_id for f in c.files_page(limit=1).files] == [info.file_id]
        assert c.status(done.request_id).logs is None
        logs = c.status(done.request_id, logs=True).logs
        assert logs and all(line.message and line.timestamp for line in logs)
        c.delete_file(info.file_id)
        assert info.file_id not in [f.file_id for f in c.list_files(page_size=1)]
        with pytest.raises(ApiError) as file_twice:
            c.delete_file(info.file_id)
        assert (file_twice.value.status, file_twice.value.code) == (404, "NOT_FOUND")
        with pytest.raises(ApiError) as read_gone:
            c.file(info.file_id)
        assert read_gone.value.code == "NOT_FOUND"
        assert set(c.result(done.request_id).outputs) == {"vocals", "residual"}
        hook = "http://127.0.0.1:9/hook"
        third = c.submit(audio_url="http://127.0.0.1:9/a.wav", stems=["vocals"], webhook_url=hook)
        webhook = c.status(third.request_id).webhook
        assert webhook is not None and webhook.url == hook
        assert webhook.delivery_status in ("none", "pending", "failed")  # the fetch may fail
        first = c.requests_page(limit=1)
        assert [s.request_id for s in first.requests] == [third.request_id]
        assert first.next_cursor is not None
        newest = list(itertools.islice(c.list_requests(page_size=1), 2))  # two pages
        assert [s.request_id for s in newest] == [third.request_id, done.request_id]
        assert newest[1].file_name == "tone.wav" and newest[1].stems == ("vocals",)
        assert (newest[0].file_id, newest[1].file_id) == (None, info.file_id)
        assert c.usage().total_seconds - used == pytest.approx(1.0, abs=0.01)
        c.delete(done.request_id)
        with pytest.raises(ApiError) as result_gone:
            c.result(done.request_id)
        assert result_gone.value.code == "NOT_FOUND"


@pytest.mark.backends("sqlite")  # local storage's link; object storage gives the job a copy
def test_deleting_an_upload_while_its_job_runs_never_says_the_servers_paths(
    server: Server, tone: Path
) -> None:
    """A job whose input was deleted as it ran failed FILE_NOT_FOUND with the server's own
    path ("file not found: /srv/data/work/req_.../input/tone.wav") on local storage: the
    worker read the store's file through a link that the delete left dangling. It now runs
    from a copy of its own, as on object storage. The delete lands while the model loads,
    between the input's probe and its decoding (a model this server's worker has not loaded
    yet: the cascade)."""
    with client(server) as c:
        info = c.upload(tone)
        job = c.submit(info.file_id, stems=["drums"], model="cascade-4stems")
        stage = None
        while stage is None:
            status = c.status(job.request_id)
            if status.done:
                break
            stage = status.stage
            time.sleep(0.05)
        c.delete_file(info.file_id)
        assert c.wait(job.request_id, timeout=60).status == "COMPLETED"


class _SlowDeletes(httpx.BaseTransport):
    """A reverse proxy that gives up waiting for the server's answer to the first DELETE
    (504 Gateway Timeout) after passing it on: the server deleted, the client never heard."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.timed_out = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "DELETE" and not self.timed_out:
            self.timed_out += 1
            response.close()
            return httpx.Response(504, html="<html><title>504 Gateway Time-out</title></html>")
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_delete_whose_answer_a_proxy_lost_is_done_not_404(server: Server, tone: Path) -> None:
    """A DELETE sent again after a proxy's 504 (or a cut connection) found nothing left, as
    its first send had deleted it: that raised ApiError 404 NOT_FOUND though what was asked
    was done. A second delete of one's own is still 404."""
    proxy = _SlowDeletes()
    with (
        patch("demixer.client.sync.time.sleep"),
        Client(server.base_url, server.key, transport=proxy) as c,
    ):
        info = c.upload(tone)
        c.delete_file(info.file_id)  # the proxy's 504, then the server's 404: done
        assert proxy.timed_out == 1
        with pytest.raises(ApiError) as twice:
            c.delete_file(info.file_id)
        assert (twice.value.status, twice.value.code) == (404, "NOT_FOUND")


@pytest.mark.backends("sqlite")  # the same calls as the sync client's, sent from async code
def test_async_client_lists_deletes_and_reads_usage_and_models(server: Server, tone: Path) -> None:
    async def run() -> tuple[str, list[str], list[int], int, int, float]:
        async with AsyncClient(server.base_url, server.key) as c:
            info = await c.upload(tone)
            assert (await c.file(info.file_id)).status == "uploaded"
            job = await c.submit(info.file_id, stems=["vocals"], model="spleeter-2stems")
            listed = [s.request_id async for s in c.list_requests(page_size=2)]
            uploads = [f.file_id async for f in c.list_files(page_size=2)]
            assert uploads[0] == info.file_id and len(uploads) == len(set(uploads))
            await c.delete(job.request_id)  # cancelled first, if it runs
            await c.delete_file(info.file_id)
            codes = []
            for again in (c.delete(job.request_id), c.delete_file(info.file_id)):
                with pytest.raises(ApiError) as caught:
                    await again
                codes.append(caught.value.status)
            models = await c.models()
            usage = await c.usage(date(2020, 1, 1), datetime(2020, 1, 2, tzinfo=UTC))
            installed, catalogue = len(models.installed), len(models.catalogue)
            return job.request_id, listed, codes, installed, catalogue, usage.total_seconds

    job_id, listed, codes, installed, catalogue, seconds = asyncio.run(run())
    assert listed[0] == job_id  # newest first
    assert len(listed) == len(set(listed))  # every page once
    assert codes == [404, 404]
    assert 0 < installed <= catalogue
    assert seconds == 0.0


@pytest.mark.backends("sqlite")  # the client's own check: no storage or database concerned
def test_separate_says_a_models_typo_before_it_uploads_the_song(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """`separate(model="htdemucs_fts")` uploaded the whole song, then the server refused the
    id: now the model list (one GET) says so first, with the server's own error. An alias the
    list names goes on to the upload (here to the server's MODEL_UNAVAILABLE: no weights)."""
    proxy = Proxy()
    with client(server, transport=proxy) as c:
        with pytest.raises(ApiError) as typo:
            c.separate(music[0], model="htdemucs_fts", directory=tmp_path, progress=False)
        assert (typo.value.status, typo.value.code, typo.value.param) == (
            404, "UNKNOWN_MODEL", "input.model",
        )  # fmt: skip
        assert typo.value.message.startswith(
            "unknown model 'htdemucs_fts' (did you mean 'htdemucs_ft' or 'htdemucs_6s' or "
            "'htdemucs'?); known models: spleeter-2stems, "
        )
        assert proxy.seen == ["GET /v1/models"]  # no POST /v1/files: nothing uploaded
        with pytest.raises(ApiError) as absent:
            c.separate(music[0], model="Kim_Vocal_2.onnx", directory=tmp_path, progress=False)
        assert absent.value.code == "MODEL_UNAVAILABLE"
        assert "POST /v1/files" in proxy.seen

    seen_async = CuttingProxy()

    async def typo_async() -> ApiError:
        async with AsyncClient(server.base_url, server.key, transport=seen_async) as c:
            with pytest.raises(ApiError) as typo:
                await c.separate(music[0], model="karoke", directory=tmp_path, progress=False)
            return typo.value

    assert asyncio.run(typo_async()).message.startswith(
        "unknown model 'karoke' (did you mean 'karaoke' or 'karaoke-5hp' or 'vr-karaoke-6hp'?)"
    )
    assert seen_async.seen == ["GET /v1/models"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.backends("sqlite")  # the client's own check: no storage or database concerned
def test_separate_says_a_refused_prompt_or_an_ensembles_typo_before_it_uploads_the_song(
    server: Server, music: tuple[Path, np.ndarray], not_audio: Path, tmp_path: Path
) -> None:
    """`remote separate --prompt "drums and bass"` (or `-m max:a+typo`) uploaded the whole
    first song, then the server refused the prompt (or the id): now the model list says so
    first, with the server's own error. A prompt the server serves goes on to the upload."""
    proxy = Proxy()
    with client(server, transport=proxy) as c:
        with pytest.raises(ApiError) as refused:
            c.separate(music[0], prompt="drums and bass", directory=tmp_path, progress=False)
        assert (refused.value.status, refused.value.code, refused.value.param) == (
            422, "UNSUPPORTED_PROMPT", "input.prompt",
        )  # fmt: skip
        assert refused.value.message.startswith("'drums and bass' names the drums and the bass")
        assert proxy.seen == ["GET /v1/models", "GET /healthz"]  # nothing uploaded
        with pytest.raises(ApiError) as served:  # read as the server reads it: uploaded
            c.separate(not_audio, prompt="the singer", directory=tmp_path, progress=False)
        assert served.value.code == "INVALID_AUDIO"
        assert "POST /v1/files" in proxy.seen

    seen_async = CuttingProxy()

    async def typo_async() -> ApiError:
        async with AsyncClient(server.base_url, server.key, transport=seen_async) as c:
            with pytest.raises(ApiError) as typo:
                model = "max:spleeter-2stems+karoke"
                await c.separate(music[0], model=model, directory=tmp_path, progress=False)
            return typo.value

    typo = asyncio.run(typo_async())
    assert (typo.status, typo.code, typo.param) == (404, "UNKNOWN_MODEL", "input.model")
    assert typo.message.startswith(
        "unknown model 'karoke' (did you mean 'karaoke' or 'karaoke-5hp' or 'vr-karaoke-6hp'?)"
    )
    assert seen_async.seen == ["GET /v1/models"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_separate_leaves_a_prompt_to_a_server_of_another_version(
    music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """Another version may read words otherwise ("take the vocals out"): its prompts are left to
    it, not refused here from this client's reading."""
    seen: list[str] = []
    separate = {"id": "audio/separate", "separable": ["vocals"]}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [separate], "catalogue": []})
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"version": "0.0.1-older"})
        error = {"code": "INVALID_AUDIO", "message": "not audio"}
        return httpx.Response(422, json={"error": error})

    mock = httpx.MockTransport(handler)
    with Client("http://api.test", "k", transport=mock) as c, pytest.raises(ApiError) as caught:
        c.separate(music[0], prompt="drums and bass", directory=tmp_path, progress=False)
    assert caught.value.code == "INVALID_AUDIO"
    assert seen == ["GET /v1/models", "GET /healthz", "POST /v1/files"]


# --- the async client --------------------------------------------------------------------------


def test_async_client_step_by_step_with_a_prompt_and_a_cut_stream(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, mix = music
    proxy = CuttingProxy()
    sent: list[int] = []
    seen: list[Status] = []

    async def run() -> dict[str, Path]:
        async with AsyncClient(
            server.base_url, server.key, transport=proxy, poll_interval=0.5
        ) as c:
            info = await c.upload(path, on_bytes=sent.append)
            assert info.status == "uploaded"
            assert info.duration == pytest.approx(mix.shape[1] / RATE, abs=0.05)
            job = await c.submit(info.file_id, prompt="the singer", output_format="flac")
            assert job.status == "IN_QUEUE" and job.stream_url.endswith("/status/stream")
            done = await c.wait(job.request_id, on_progress=seen.append, timeout=120)
            assert done.status == "COMPLETED"
            result = await c.result(job.request_id)
            assert result.duration == pytest.approx(mix.shape[1] / RATE, abs=0.05)
            return await c.download(result, tmp_path / "out")

    paths = asyncio.run(run())
    assert sum(sent) == path.stat().st_size
    assert seen and seen[-1].status == "COMPLETED"
    # The stream gave its first frame, was cut, and the wait went on by polling.
    assert sum(s.endswith("/status/stream") for s in proxy.seen) == 1
    assert any(s.endswith("/status") for s in proxy.seen)
    assert set(paths) == {"target", "residual"}
    target, residual = read(paths["target"]), read(paths["residual"])
    assert target.shape == mix.shape
    assert np.abs(target + residual - mix).max() < 2e-4  # 16-bit flac quantisation


def test_async_separate_hands_over_the_result_before_downloading(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, mix = music
    results: list[Result] = []
    out = tmp_path / "out"

    def on_result(result: Result) -> None:
        assert not out.exists()  # called before anything is downloaded
        results.append(result)

    async def run() -> dict[str, Path]:
        async with AsyncClient(server.base_url, server.key, poll_interval=0.5) as c:
            return await c.separate(
                path, stems=["vocals"], bit_depth="32f", directory=out, on_result=on_result
            )

    paths = asyncio.run(run())
    assert len(results) == 1
    assert set(results[0].outputs) == set(paths) == {"vocals", "residual"}
    for name, file in results[0].outputs.items():
        assert (file.gain, file.clipped) == (1.0, 0)  # float WAV: nothing scaled or clipped
        assert paths[name].stat().st_size == file.size
    assert read(paths["vocals"]).shape == mix.shape


# --- `demixer remote separate` -----------------------------------------------------------------


def remote(server: Server, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """``demixer remote separate ARGS`` against ``server``, in this process (its start-up as a
    process of its own is tested below)."""
    env = {"DEMIXER_API_KEY": key or server.key}
    cmd = ["remote", "separate", *args, "--server", server.base_url]
    return demixer_here(*cmd, model_dir=server.data_dir / "no-models", env=env)


def test_remote_separate_writes_the_stems(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    done = remote(server, str(music[0]), "--stems", "vocals", "-o", str(tmp_path), "-f", "flac")
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["falcon_residual.flac", "falcon_vocals.flac"]
    assert f"vocals: {tmp_path / 'falcon_vocals.flac'}" in done.stdout
    # The model the server chose for the stems asked is named.
    assert done.stdout.splitlines()[0] == "falcon.wav: 6.1 s by spleeter-2stems"
    assert read(tmp_path / "falcon_vocals.flac").shape == music[1].shape


@pytest.mark.backends("sqlite")  # local file names
def test_remote_separate_names_the_stems_after_the_local_file_as_separate_does(
    server: Server, tmp_path: Path
) -> None:
    # The server keeps the last 120 characters of an upload's name: these two songs are one
    # name there. Their stems are named after the files here, as the local CLI names them,
    # and neither song's stems replace the other's.
    rng = np.random.default_rng(7)
    long = "x" * 125
    songs = [tmp_path / f"{first}{long}.wav" for first in ("a", "b")]
    for song in songs:
        sf.write(song, 0.1 * rng.standard_normal((RATE // 2, 2)), RATE, subtype="FLOAT")
    out = tmp_path / "out"
    done = remote(server, *map(str, songs), "--stems", "vocals", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{first}{long}_{stem}.wav" for first in ("a", "b") for stem in ("residual", "vocals")
    )


@pytest.mark.parametrize(
    ("args", "earlier"),
    [
        # The server's default model, spleeter-2stems: vocals and accompaniment.
        ((), ("1_vocals.wav", "1_accompaniment.wav", "2_vocals.wav")),
        (("--stems", "vocals"), ("1_vocals.wav", "1_residual.wav", "2_vocals.wav")),
    ],
    ids=["default-model", "stems"],
)
def test_remote_separate_skip_existing_sends_only_the_songs_whose_stems_are_not_all_there(
    server: Server, tone: Path, tmp_path: Path, args: tuple[str, ...], earlier: tuple[str, ...]
) -> None:
    """`separate --skip-existing` leaves out a song whose stems are all there; `remote
    separate` had no such option, and a batch stopped midway uploaded and separated every song
    again. A song whose stems are there is not uploaded; one lacking a stem is sent."""
    songs = tmp_path / "set"
    songs.mkdir()
    for name in ("1.wav", "2.wav"):
        shutil.copy(tone, songs / name)
    out = tmp_path / "out"
    out.mkdir()
    for name in earlier:  # 2 lacks a stem
        (out / name).write_bytes(b"an earlier run's")
    with client(server) as c:
        before = {f.file_id for f in c.list_files()}
        done = remote(server, str(songs), *args, "-o", str(out), "--skip-existing")
        uploaded = [f.file_name for f in c.list_files() if f.file_id not in before]
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "1.wav: its stems are there, skipped",
        "1 of 2 files separated, 1 skipped (their stems were there)",
    ]
    assert uploaded == ["2.wav"]
    assert (out / earlier[0]).read_bytes() == b"an earlier run's"
    assert sf.info(out / "2_vocals.wav").frames > 0  # replaced by this run's


def test_remote_separate_of_a_folder_ends_with_a_summary_naming_each_failed_file(
    server: Server, tmp_path: Path
) -> None:
    """A folder with an empty file in two sub-folders: each error line named only empty.wav,
    and nothing said how the batch went. The last line counts and names them by path."""
    songs = tmp_path / "set"
    for folder in ("a", "b"):
        (songs / folder).mkdir(parents=True)
        (songs / folder / "empty.wav").write_bytes(b"")  # refused before its upload
    done = remote(server, str(songs), "--stems", "vocals", "-o", str(tmp_path / "out"))
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"0 of 2 files separated; 2 failed: {songs / 'a' / 'empty.wav'}, "
        f"{songs / 'b' / 'empty.wav'}"
    )


@pytest.mark.backends("sqlite")  # local file names
def test_remote_separate_of_a_song_whose_name_is_near_255_bytes_writes_its_stems(
    server: Server, tmp_path: Path
) -> None:
    """120 é are 240 bytes, a legal name; with "_accompaniment.wav" 258, too long to write.
    The server did the whole separation, then the download failed (exit 2, INVALID_OUTPUT
    "File name too long"). The song's name is cut short at its end to fit."""
    song = tmp_path / ("é" * 120 + ".wav")
    sf.write(song, 0.1 * np.random.default_rng(3).standard_normal((RATE // 2, 2)), RATE)
    out = tmp_path / "out"
    done = remote(server, str(song), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "é" * 118 + "_accompaniment.wav",  # 254 bytes
        "é" * 120 + "_vocals.wav",
    ]


@pytest.mark.backends("sqlite")  # the decoder's doing: the same on either backend
def test_remote_separate_folds_surround_with_downmix(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    surround = tmp_path / "film.wav"
    sf.write(surround, np.concatenate([music[1]] * 3).T, RATE, subtype="FLOAT")
    refused = remote(server, str(surround), "-o", str(tmp_path / "no"))
    assert refused.returncode == 3
    assert refused.stderr.rstrip().endswith("fold it to stereo first (--downmix here)")
    done = remote(server, str(surround), "--downmix", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert read(tmp_path / "out" / "film_vocals.wav").shape == music[1].shape


@pytest.mark.backends("sqlite")  # the stems' samples: written alike on either backend
def test_rescale_keeps_a_hot_master_from_clipping_16_bit_stems(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    hot = music[1] * np.float32(2.0 / np.abs(music[1]).max())  # peaks at +6 dBFS
    path = tmp_path / "hot.wav"
    sf.write(path, hot.T, RATE, subtype="FLOAT")
    lsb = 1 / 32768
    auth = {"Authorization": f"Bearer {server.key}"}

    def job_log(request_id: str) -> str:
        url = f"{server.base_url}/v1/queue/requests/{request_id}/status?logs=true"
        status = httpx.get(url, headers=auth).json()
        return str(status["logs"][-1]["message"])

    def newest_request() -> str:
        newest = httpx.get(f"{server.base_url}/v1/queue/requests?limit=1", headers=auth).json()
        return str(newest["data"][0]["request_id"])

    # As it is: the loud samples are clipped at full scale, and the user is told how many.
    done = remote(server, str(path), "--stems", "vocals", "--bit-depth", "16", "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    plain = newest_request()
    line = job_log(plain)
    with client(server) as c:
        outputs = c.result(plain).outputs
    stems = [read(tmp_path / "hot_vocals.wav"), read(tmp_path / "hot_residual.wav")]
    assert max(float(np.abs(s).max()) for s in stems) >= 1 - lsb  # full scale, clipped
    assert np.abs(stems[0] + stems[1] - hot).max() > 0.5  # they no longer add up to the input
    counted = re.fullmatch(
        r"completed: vocals, residual; samples clipped at full scale: (.+) \(input\.rescale "
        r"scales every output by one gain instead\)",
        line,
    )
    assert counted is not None, line
    for name, stem in (("vocals", stems[0]), ("residual", stems[1])):
        over = int((np.abs(stem) >= 1 - lsb).sum())  # what a user counts in the file
        clipped = outputs[name].clipped
        assert (clipped > 0) == (over > 0) and clipped <= over, (name, clipped, over)
        assert (f"{name} {clipped}" in counted[1]) == (clipped > 0), (line, name)
        written = f"  {name}: {tmp_path / f'hot_{name}.wav'}"
        assert (written + (f"  {clipped} samples clipped" if clipped else "")) in done.stdout
        assert outputs[name].gain == 1.0
    assert (
        "some stems clipped at full scale: use --rescale, or float output (--format wav "
        "--bit-depth 32f)"
    ) in done.stderr
    assert "rescaled" not in done.stderr

    # --rescale (the client's rescale=True): one gain for both, the loudest at full scale.
    out = str(tmp_path / "b")
    done = remote(
        server, str(path), "--stems", "vocals", "--bit-depth", "16", "--rescale", "-o", out
    )
    assert done.returncode == 0, done.stderr
    vocals, residual = (
        read(tmp_path / "b" / "hot_vocals.wav"),
        read(tmp_path / "b" / "hot_residual.wav"),
    )
    assert max(float(np.abs(vocals).max()), float(np.abs(residual).max())) >= 1 - 2 * lsb
    total = vocals + residual
    gain = float((total * hot).sum() / (hot * hot).sum())
    assert 0.3 < gain < 0.9
    assert np.abs(total - gain * hot).max() < 4 * lsb  # the input, scaled, to 16-bit rounding
    rescaled = newest_request()
    with client(server) as c:
        outputs = c.result(rescaled).outputs
    assert abs(outputs["vocals"].gain - gain) < 1e-4  # what the files were scaled by
    assert outputs["residual"].gain == outputs["vocals"].gain
    assert outputs["vocals"].clipped == outputs["residual"].clipped == 0
    assert f"rescaled all stems by {outputs['vocals'].gain:.3f} to avoid clipping" in done.stderr
    assert "samples clipped" not in done.stdout
    line = job_log(rescaled)
    scaled = re.fullmatch(
        r"completed: vocals, residual; every output scaled by (0\.\d{3}) so that none clips "
        r"\(input\.rescale\)",
        line,
    )
    assert scaled is not None, line
    assert abs(float(scaled[1]) - gain) <= 0.0005 + 1e-4  # the gain the files were scaled by


@pytest.mark.parametrize(
    ("case", "code", "exit_code"),
    [
        ("not audio", "INVALID_AUDIO", 3),
        ("missing file", "FILE_NOT_FOUND", 3),
        ("unknown stem", "UNKNOWN_STEM", 2),
        ("unknown quality", "UNKNOWN_QUALITY", 2),
        ("bad key", "UNAUTHENTICATED", 1),
    ],
)
def test_remote_separate_errors_are_one_line_and_an_exit_code(
    server: Server,
    music: tuple[Path, np.ndarray],
    not_audio: Path,
    tmp_path: Path,
    case: str,
    code: str,
    exit_code: int,
) -> None:
    args, key = [str(music[0]), "-o", str(tmp_path)], None
    if case == "not audio":
        args[0] = str(not_audio)
    elif case == "missing file":
        args[0] = str(tmp_path / "nothing.wav")
    elif case == "unknown stem":
        args += ["--stems", "kazoo"]
    elif case == "unknown quality":
        args += ["--quality", "ultra"]
    else:
        key = "dmx_not-a-key"
    done = remote(server, *args, key=key)
    assert done.returncode == exit_code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"[{code}]" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.backends("sqlite")  # the model's choice: the same on either backend
def test_remote_separate_lets_the_server_pick_the_model_for_the_stems(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """As `separate` does: drums are not spleeter-2stems' (the default model's), so the server
    picks the cascade. The server given with /v1 and a key in the environment work too."""
    env = dict(os.environ, DEMIXER_API_KEY=server.key)
    out = tmp_path / "out"
    cmd = [DEMIXER, "remote", "separate", str(music[0]), "--stems", "drums", "-o", str(out)]
    cmd += ["--server", f"{server.base_url}/v1/"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["falcon_drums.wav", "falcon_residual.wav"]
    with client(server) as c:  # a stem given as one string is that stem, not its letters
        job = c.submit(c.upload(music[0]).file_id, stems="vocals")
        assert c.wait(job.request_id, timeout=120).status == "COMPLETED"
        assert set(c.result(job.request_id).outputs) == {"vocals", "residual"}
    no_key = {k: v for k, v in os.environ.items() if k != "DEMIXER_API_KEY"}
    cmd = [DEMIXER, "remote", "separate", str(music[0]), "--server", server.base_url]
    done = subprocess.run(cmd, capture_output=True, text=True, env=no_key, timeout=60)
    assert done.returncode == 2
    assert "no API key: pass --key or set DEMIXER_API_KEY" in done.stderr


@pytest.mark.backends("sqlite")  # the client's own check
def test_remote_separate_checks_the_output_folder_before_it_uploads(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {server.key}"}

    def requests() -> list[str]:
        listed = httpx.get(f"{server.base_url}/v1/queue/requests?limit=100", headers=auth)
        return [r["request_id"] for r in listed.json()["data"]]

    before = requests()
    blocker = tmp_path / "afile"
    blocker.write_text("in the way")
    done = remote(server, str(music[0]), "-o", str(blocker / "stems"))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.strip() == (
        f"error [INVALID_OUTPUT] cannot write the stems: {blocker} is a file, not a folder"
    )
    assert done.stdout == "" and requests() == before  # nothing was sent to the server
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.backends("sqlite")  # the client's own check
def test_remote_separate_skips_a_song_too_short_for_the_spans_not_the_batch(
    server: Server, music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """--span 1:1.2 over a 0.5 s song then a 1.5 s one: the batch stopped at the first ("1 of
    2 files separated; stopped before the rest"), the second never sent. As the local CLI
    does, the short song is named in an error and the next one is separated (exit 2)."""
    _, mix = music
    songs = []
    for name, seconds in (("short", 0.5), ("long", 1.5)):
        songs.append(tmp_path / f"{name}.wav")
        sf.write(songs[-1], mix[:, : round(seconds * RATE)].T, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    done = remote(server, *map(str, songs), "--prompt", "vocals", "--span", "1:1.2", "-o", str(out))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error [INVALID_OUTPUT] short.wav: the span 1:1.2 starts after the input ends (0.50 s): "
        "it would keep nothing of the separated sound",
        f"1 of 2 files separated; 1 failed: {songs[0]}",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["long_vocals.wav", "long_without-vocals.wav"]
    # Spans over the server's cap are refused for every song: said once, before any upload.
    uploads = len(server.client().get("/v1/files?limit=100").json()["data"])
    many = [arg for i in range(101) for arg in ("--span", f"{i / 100}:{i / 100 + 0.005}")]
    done = remote(server, *map(str, songs), "--prompt", "vocals", *many, "-o", str(out))
    assert done.returncode == 2, done.stderr
    assert "101 spans; a server takes at most 100" in done.stderr
    assert len(server.client().get("/v1/files?limit=100").json()["data"]) == uploads


@pytest.mark.backends("sqlite")  # the client's wait
def test_remote_separate_past_its_timeout_names_the_job_that_goes_on(
    music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """An API with no worker slots never runs the job, so `--timeout 1` always runs out: the
    error is WAIT_TIMEOUT (not a bad input), names the job, and the job is still queued."""
    with running_server(tmp_path / "api-only", workers=0) as api:
        done = remote(api, str(music[0]), "-o", str(tmp_path / "out"), "--timeout", "1")
        assert done.returncode == 1, (done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        match = re.fullmatch(
            r"error \[WAIT_TIMEOUT\] falcon\.wav: request (req_\w+) did not finish in 1 s; the "
            r"job keeps running on the server, and GET /v1/queue/requests/(req_\w+)/result gives "
            r"its stems once it is done \(or give a longer --timeout\)",
            lines[0],
        )
        assert match is not None and match[1] == match[2], lines[0]
        status = api.client().get(f"/v1/queue/requests/{match[1]}/status").json()
        assert status["status"] == "IN_QUEUE"
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--server", "127.0.0.1:8000", "'127.0.0.1:8000' is not an http(s) URL"),
        ("--server", "ftp://example.com", "'ftp://example.com' is not an http(s) URL"),
        ("--timeout", "0", "0 is not a number of seconds above 0"),
        ("--timeout", "-5", "-5 is not a number of seconds above 0"),
        ("--span", "0:1", "a span limits the sound a --prompt names (e.g. --prompt vocals)"),
    ],
)
@pytest.mark.backends("sqlite")  # refused before any server is reached
def test_remote_separate_refuses_a_bad_server_or_timeout_up_front(
    music: tuple[Path, np.ndarray], tmp_path: Path, option: str, value: str, message: str
) -> None:
    cmd = [DEMIXER, "remote", "separate", str(music[0]), "-o", str(tmp_path), option, value]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    shown = "'--span' / '--exclude-span'" if option == "--span" else f"'{option}'"
    assert f"Invalid value for {shown}: {message}" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.backends("sqlite")  # no server at all: no backend
def test_remote_separate_where_no_server_listens_says_so_before_any_retry(
    music: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """A wrong --server (nothing listens there) is one line naming it, asked once before any
    upload, not the client's retries over 15 s and then an error about /v1/files."""
    port = free_port()
    cmd = [DEMIXER, "remote", "separate", str(music[0]), "-o", str(tmp_path / "out"),
           "--server", f"http://127.0.0.1:{port}/v1", "--key", "k"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"error [CONNECTION_FAILED] cannot reach http://127.0.0.1:{port}: [Errno 111] Connection "
        "refused (is the server running at that address?)\n"
    )
    assert not (tmp_path / "out").exists()


# --- the parts that need no server -------------------------------------------------------------


@pytest.mark.backends("sqlite")  # no server, no backend
@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://example.com", "localhost"])
def test_a_base_url_that_is_not_http_is_refused_when_the_client_is_made(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        Client(url, "dmx_x")
    assert str(caught.value) == f"{url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000"


@pytest.mark.backends("sqlite")  # no server, no backend
def test_the_event_stream_reader_and_retry_policy() -> None:
    frames = StatusStream()
    status = (
        '{"request_id": "req_1", "status": "IN_PROGRESS", "model": "audio/stems", '
        '"engine_model": "spleeter-2stems", "progress": 0.5, "queue_position": null, '
        '"cancel_requested": false}'
    )
    got = [frames.feed(line) for line in [": ping", "event: status", f"data: {status}", ""]]
    assert got[:3] == [None, None, None]
    assert got[3] is not None and got[3].progress == 0.5 and not got[3].done

    def answer(status_code: int, retry_after: str | None = None) -> httpx.Response:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return httpx.Response(status_code, headers=headers)

    assert retry_delay(answer(200), 1, 3) is None
    assert retry_delay(answer(429, "2"), 1, 3) == 2.0
    assert retry_delay(answer(429, "2"), 3, 3) is None  # out of tries
    assert retry_delay(answer(429), 2, 3) == 2.0  # no header: doubling from 1 s
    assert retry_delay(answer(429, "3600"), 1, 3) is None  # longer than we sleep: raised
    assert retry_delay(answer(429, "Wed, 21 Oct 2015 07:28:00 GMT"), 1, 3) == 0.0
    # The asctime date form (no zone: GMT) was not honoured, and "nan" gave up at once
    # (``demixer models pull`` raised ValueError from time.sleep on it).
    assert retry_delay(answer(503, "Sun Nov  6 08:49:37 1994"), 1, 3) == 0.0
    assert retry_delay(answer(503, "nan"), 2, 3) == 2.0
    assert retry_after("nan", 4.0) == retry_after("inf", 4.0) == 4.0


@pytest.mark.backends("sqlite")  # an import: no server, no backend
def test_import_demixer_stays_light() -> None:
    code = "import sys, demixer; assert 'httpx' not in sys.modules; print(demixer.Client)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "demixer.client.sync.Client" in done.stdout


@pytest.mark.backends("sqlite")  # no demixer server, no backend
def test_requests_safe_to_repeat_are_sent_again_after_a_broken_connection(
    tmp_path: Path,
) -> None:
    """A connection cut mid-request (the API restarted) is retried for calls that are safe to
    repeat: GETs, the signed PUT, and POSTs with an Idempotency-Key (the client adds one to its
    announce and submit); a 503 is retried like a 429. The first cut is sent again at once (it
    may be a keep-alive connection closed as it was sent); the next after a pause."""
    seen: list[tuple[str, str, str | None]] = []
    broken = {"/v1/files": 2, "/up": 2, "/v1/files/file_1/complete": 2, "/v1/queue/audio/stems": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        seen.append((request.method, path, request.headers.get("idempotency-key")))
        if broken.get(path, 0) > 0:
            broken[path] -= 1
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if path == "/v1/files":
            return httpx.Response(
                201, json={"file_id": "file_1", "upload_url": "http://s3.test/up", "headers": {}}
            )
        if path == "/up":
            return httpx.Response(200)
        if path.endswith("/complete"):
            file = {"file_id": "file_1", "file_name": "song.wav", "content_type": "audio/wav"}
            return httpx.Response(200, json={**file, "status": "uploaded"})
        if path == "/v1/queue/audio/stems" and sum(p == path for _, p, _ in seen) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": {}})
        job = {"request_id": "req_1", "status": "IN_QUEUE", "model": "audio/stems"}
        urls = {f"{n}_url": "u" for n in ("status", "stream", "result", "response", "cancel")}
        return httpx.Response(202, json={**job, **urls, "engine_model": "spleeter-2stems"})

    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF" + bytes(100))
    waits: list[float] = []
    with (
        patch("demixer.client.sync.time.sleep", waits.append),
        Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c,
    ):
        info = c.upload(song)
        job = c.submit(info.file_id, stems=["vocals"])
    assert (info.status, job.request_id) == ("uploaded", "req_1")
    announces = [key for method, path, key in seen if path == "/v1/files"]
    assert len(announces) == 3 and len(set(announces)) == 1 and announces[0]  # one key: one file
    assert [p for _, p, _ in seen].count("/up") == 3
    assert [p for _, p, _ in seen].count("/v1/queue/audio/stems") == 2  # the 503, then 202
    assert waits == [1.0, 1.0, 1.0, 0.0]


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_a_submit_resent_while_its_first_send_still_runs_gets_the_job_not_a_409() -> None:
    """The connection drops just after the submit went out (flaky Wi-Fi): the client sends it
    again at once with the same Idempotency-Key, and the server, still queueing the first,
    answers 409 IDEMPOTENCY_IN_PROGRESS. The client asks again after a pause and gets the job
    the first send made; raised, the user saw "retry shortly" and had no id for that job."""
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("idempotency-key"))
        if len(sent) == 1:
            raise httpx.ReadError("[Errno 104] Connection reset by peer")
        if len(sent) == 2:  # the server's own answer (api/idempotency.py)
            error = {"code": "IDEMPOTENCY_IN_PROGRESS", "message": "still running",
                     "param": "Idempotency-Key", "request_id": "rid_1"}  # fmt: skip
            return httpx.Response(409, json={"error": error})
        job = {"request_id": "req_1", "status": "IN_QUEUE", "model": "audio/stems"}
        urls = {f"{n}_url": "u" for n in ("status", "stream", "result", "response", "cancel")}
        headers = {"Idempotent-Replayed": "true"}
        return httpx.Response(202, headers=headers, json={**job, **urls, "engine_model": "m"})

    waits: list[float] = []
    with (
        patch("demixer.client.sync.time.sleep", waits.append),
        Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c,
    ):
        job = c.submit("file_1", stems=["vocals"])
    assert job.request_id == "req_1"
    assert len(sent) == 3 and len(set(sent)) == 1 and waits == [1.0]


@pytest.mark.backends("sqlite")  # no demixer server, no backend
def test_a_call_safe_to_repeat_that_timed_out_is_sent_again() -> None:
    """As ``max_tries`` says: a GET left unanswered past ``timeout`` is sent again (after 1 s),
    not raised at once."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.query.decode())
        if len(sent) == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json={"object": "list", "data": [], "next_cursor": None})

    waits: list[float] = []
    with (
        patch("demixer.client.sync.time.sleep", waits.append),
        Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c,
    ):
        page = c.files_page("abc", limit=5)
    assert (page.files, page.next_cursor) == ([], None)
    assert sent == ["limit=5&cursor=abc"] * 2 and waits == [1.0]


class _ClosesIdleConnections:
    """A loopback HTTP/1.1 server (or a load balancer) whose keep-alive timer fires just as a
    client sends its next request on the idle connection: each connection answers its first
    request and is closed, unanswered, when the second arrives. The client's pool could not
    tell: the connection was open when it took it. ``demixer serve`` does this at its
    keep-alive timeout (``DEMIXER_KEEP_ALIVE_SECONDS``) to a request sent at that moment."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.answered = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # closed at the test's end
            while True:
                conn, _ = self.sock.accept()
                threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a client gone: nothing to answer
            head = b"-"
            while head and not head.endswith(b"\r\n\r\n"):  # the request (no body)
                head = conn.recv(65536)
            body = json.dumps(_status_json("IN_QUEUE")).encode()
            # Counted before it is sent: counted after, a loaded machine let the client read
            # the answer, finish and the test check the count before this thread went on.
            self.answered += 1
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            conn.recv(65536)  # the next request: closed unanswered

    def close(self) -> None:
        self.sock.close()


@pytest.mark.backends("sqlite")  # no demixer server: no backend
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_pooled_connection_the_server_closed_is_sent_again_at_once(kind: str) -> None:
    """The next request on a keep-alive connection the server closed as it was sent was
    raised as ConnectionFailed with ``max_tries=1`` (else sent again only after a second's
    pause): a call safe to repeat is sent once more at once, on a new connection, beside
    ``max_tries`` (with one try, no pause is possible: each call is answered or raises)."""
    server = _ClosesIdleConnections()

    async def async_statuses() -> list[str]:
        async with AsyncClient(server.url, "k", max_tries=1) as c:
            return [(await c.status("req_1")).status for _ in range(3)]

    def statuses() -> list[str]:
        if kind == "async":
            return asyncio.run(async_statuses())
        with Client(server.url, "k", max_tries=1) as c:
            return [c.status("req_1").status for _ in range(3)]

    try:
        assert statuses() == ["IN_QUEUE"] * 3
    finally:
        server.close()
    assert server.answered == 3


def _cuts_the_first_upload() -> httpx.MockTransport:
    """An API (and store) whose connection drops as the first PUT of a file ends (the body sent,
    no answer), and that answers the first multipart upload 503 once it has read it; each goes
    through after."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        multipart = request.headers.get("content-type", "").startswith("multipart/")
        if path == "/v1/files" and not multipart:
            return httpx.Response(
                201, json={"file_id": "file_1", "upload_url": "http://api.test/up", "headers": {}}
            )
        first = path not in sent
        sent.append(path)
        if first and path == "/up":
            raise httpx.WriteError("Connection reset by peer")  # the body was read: 2.5 MiB
        if first and multipart:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": {}})
        file = {"file_id": "file_1", "file_name": "song.wav", "content_type": "audio/wav"}
        return httpx.Response(
            200 if path != "/v1/files" else 201, json={**file, "status": "uploaded"}
        )

    return httpx.MockTransport(handler)


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
@pytest.mark.parametrize("multipart", [False, True])
def test_an_upload_sent_again_after_a_cut_counts_its_bytes_once(
    tmp_path: Path, multipart: bool
) -> None:
    """`demixer remote separate`'s bar went past 100 % (5 MiB of a 2.5 MiB song) when the
    connection dropped before its answer and the upload was sent again: the resent bytes were
    counted twice. The bar stops at the file's size, and goes up only as bytes no send had
    reached are sent."""
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF" + bytes(5 << 19))  # 2.5 MiB: three chunks
    seen: list[int] = []
    with (
        patch("demixer.client.sync.time.sleep", lambda _s: None),
        Client("http://api.test", api_key="k", transport=_cuts_the_first_upload()) as c,
    ):
        c.upload(song, multipart=multipart, on_bytes=seen.append)
    assert sum(seen) == song.stat().st_size
    assert min(seen) > 0

    async def upload_async() -> list[int]:
        counted: list[int] = []
        transport = _cuts_the_first_upload()
        async with AsyncClient("http://api.test", api_key="k", transport=transport) as c:
            with patch("demixer.client.aio.anyio.sleep", _no_sleep):
                await c.upload(song, multipart=multipart, on_bytes=counted.append)
        return counted

    assert sum(asyncio.run(upload_async())) == song.stat().st_size


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_a_post_that_is_not_safe_to_repeat_is_not_sent_twice(tmp_path: Path) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF" + bytes(100))
    with (
        Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(ConnectionFailed),
    ):
        c.upload(song, multipart=True)  # a new file each time: never repeated blindly
    assert calls == ["/v1/files"]


# --- a server that does not answer, a download cut mid-file, the caller's folder ----------


class _Clock:
    """time.monotonic and time.sleep for a test: sleeping advances the clock at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.naps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


def _vocals_at_blob_x(size: int) -> Result:
    """A finished request's result: one stem, song_vocals.wav, ``size`` bytes at
    http://blob.test/x (what a mock transport serves)."""
    output = {"url": "http://blob.test/x", "file_name": "song_vocals.wav",
              "content_type": "audio/wav", "size": size}  # fmt: skip
    return Result.from_json(
        {"request_id": "req_1", "model": "audio/stems", "data": {"vocals": output}}
    )


def _until_queued(path: str) -> httpx.Response | None:
    """A mock server's answers up to a queued job: the upload (announce, PUT, complete), the
    submit (req_1) and no status stream (404, so the client polls); None for another path."""
    file = {"file_id": "file_1", "file_name": "song.wav", "content_type": "audio/wav"}
    if path == "/v1/files":
        return httpx.Response(201, json={**file, "upload_url": "http://api.test/up"})
    if path == "/up":
        return httpx.Response(200)
    if path.endswith("/complete"):
        return httpx.Response(200, json={**file, "status": "uploaded"})
    if path == "/v1/queue/audio/stems":
        job = {"request_id": "req_1", "status": "IN_QUEUE", "model": "audio/stems"}
        urls = {f"{n}_url": "u" for n in ("status", "stream", "result", "response", "cancel")}
        return httpx.Response(202, json={**job, **urls, "engine_model": "spleeter-2stems"})
    if path.endswith("/stream"):
        return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": "-"}})
    return None


def _status_json(status: str) -> dict[str, object]:
    progress = 1.0 if status == "COMPLETED" else 0.5
    return {"request_id": "req_1", "status": status, "model": "audio/stems",
            "engine_model": "spleeter-2stems", "progress": progress}  # fmt: skip


def _down_until(clock: _Clock, back_at: float | None) -> httpx.MockTransport:
    """A server refusing connections until ``back_at`` (fake) seconds, then answering that
    req_1 is COMPLETED; it never offers the event stream."""

    def handler(request: httpx.Request) -> httpx.Response:
        if back_at is None or clock.now < back_at:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        if request.url.path.endswith("/stream"):
            return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": "-"}})
        return httpx.Response(200, json=_status_json("COMPLETED"))

    return httpx.MockTransport(handler)


@contextlib.contextmanager
def _client_of_a_server_down_until(clock: _Clock, back_at: float | None) -> Iterator[Client]:
    """A Client on fake time (see _Clock) of a server down until ``back_at`` (_down_until)."""
    with (
        patch("time.monotonic", clock.monotonic),
        patch("time.sleep", clock.sleep),
        Client("http://api.test", api_key="k", transport=_down_until(clock, back_at)) as c,
    ):
        yield c


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
@pytest.mark.parametrize("timeout", [None, 1000.0])
def test_wait_rides_out_a_server_restart_longer_than_its_retries(timeout: float | None) -> None:
    """The server is down for 2 minutes (a restart, a deploy): one call's retries span 15 s,
    but wait goes on asking (at most 10 s apart) and returns the job's final status."""
    clock = _Clock()
    with _client_of_a_server_down_until(clock, 120.0) as c:
        done = c.wait("req_1", timeout=timeout)
    assert done.status == "COMPLETED"
    assert 120.0 <= clock.now <= 130.0 and max(clock.naps) == 10.0


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_wait_with_a_timeout_ends_at_it_while_the_server_is_down() -> None:
    clock = _Clock()
    with (
        _client_of_a_server_down_until(clock, None) as c,
        pytest.raises(WaitTimeout) as caught,
    ):
        c.wait("req_1", timeout=30)
    assert caught.value.request_id == "req_1"
    assert clock.now == 30.0  # not a pause past it


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_wait_without_a_timeout_gives_up_after_5_minutes_naming_the_job() -> None:
    clock = _Clock()
    with (
        _client_of_a_server_down_until(clock, None) as c,
        pytest.raises(ConnectionFailed) as caught,
    ):
        c.wait("req_1")
    assert caught.value.request_id == "req_1"
    assert "request req_1 goes on on the server" in caught.value.message
    assert 300.0 <= clock.now <= 330.0


class _CutAfter(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that breaks off (the connection drops) after ``keep`` bytes."""

    def __init__(self, body: bytes, keep: int) -> None:
        self.body, self.keep = body, keep

    def __iter__(self) -> Iterator[bytes]:
        yield self.body[: self.keep]
        raise httpx.ReadError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
@pytest.mark.parametrize("ranges", [True, False])
def test_a_download_cut_mid_file_resumes_where_it_broke(tmp_path: Path, ranges: bool) -> None:
    """The blob's connection drops twice mid-file: the client asks for the rest (``Range``),
    or, from a server that answers the whole file again (200), starts the file over."""
    body = bytes(range(256)) * 400  # 100 kB
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("range"))
        start = int(request.headers["range"][6:-1]) if ranges and "range" in request.headers else 0
        rest = body[start:]
        headers = {"Content-Length": str(len(rest))}
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        stream = _CutAfter(rest, 30_000) if len(asked) <= 2 else httpx.ByteStream(rest)
        return httpx.Response(status, headers=headers, stream=stream)

    result = _vocals_at_blob_x(len(body))
    with (
        patch("time.sleep", lambda _s: None),
        Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c,
    ):
        paths = c.download(result, tmp_path / "out")
    assert paths["vocals"].read_bytes() == body
    assert asked[0] is None and len(asked) == 3
    if ranges:
        assert asked[1:] == ["bytes=30000-", "bytes=60000-"]
    else:
        assert asked[1:] == ["bytes=30000-", "bytes=30000-"]  # asked for the rest, got it all
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["song_vocals.wav"]


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_a_download_started_over_counts_its_bytes_once(tmp_path: Path) -> None:
    """A store that answers the rest of a cut download with the whole file again (200): the
    file starts over, and `remote separate`'s bar counted the bytes it had twice (130 kB of
    a 100 kB stem); counted once, it ends at the stem's size."""
    body = bytes(range(256)) * 400  # 100 kB
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("range"))
        stream = _CutAfter(body, 30_000) if len(asked) == 1 else httpx.ByteStream(body)
        return httpx.Response(200, headers={"Content-Length": str(len(body))}, stream=stream)

    seen: list[int] = []
    with (
        patch("time.sleep", lambda _s: None),
        Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c,
    ):
        paths = c.download(_vocals_at_blob_x(len(body)), tmp_path / "out", on_bytes=seen.append)
    assert paths["vocals"].read_bytes() == body and asked == [None, "bytes=30000-"]
    assert sum(seen) == len(body) and min(seen) > 0

    async def download_async() -> list[int]:
        counted: list[int] = []
        asked.clear()
        transport = httpx.MockTransport(handler)
        async with AsyncClient("http://api.test", api_key="k", transport=transport) as c:
            with patch("demixer.client.aio.anyio.sleep", _no_sleep):
                result = _vocals_at_blob_x(len(body))
                await c.download(result, tmp_path / "async", on_bytes=counted.append)
        return counted

    assert sum(asyncio.run(download_async())) == len(body)


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_a_download_cut_more_often_than_max_tries_finishes_while_each_try_gets_further(
    tmp_path: Path,
) -> None:
    """A mobile link drops the stem's download 7 times, each try 10 kB further: the file comes
    whole (it was given up after 5 cuts, most of it downloaded). A link that brings nothing new
    (cut at the same byte, the file sent from its start each time) is given up after 5 sends."""
    body = bytes(range(256)) * 400  # 100 kB
    asked: list[str | None] = []
    progress = True

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("range"))
        start = int(request.headers["range"][6:-1]) if progress and len(asked) > 1 else 0
        rest = body[start:]
        headers = {"Content-Length": str(len(rest))}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        stream = _CutAfter(rest, 10_000) if len(asked) <= 7 else httpx.ByteStream(rest)
        return httpx.Response(206 if start else 200, headers=headers, stream=stream)

    result = _vocals_at_blob_x(len(body))
    with (
        patch("time.sleep", lambda _s: None),
        Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c,
    ):
        paths = c.download(result, tmp_path / "out")
        assert paths["vocals"].read_bytes() == body and len(asked) == 8
        asked.clear()
        progress = False
        with pytest.raises(ConnectionFailed):
            c.download(result, tmp_path / "out2")
    assert len(asked) == 5  # the try that got 10 kB, then 4 that got nothing new: max_tries
    assert list((tmp_path / "out2").iterdir()) == []


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_separate_whose_download_fails_says_the_job_finished_not_that_it_goes_on(
    tmp_path: Path,
) -> None:
    """The job is done and its stems' download fails on a dead link: the error names the
    request as finished, its outputs kept; it said the request "goes on on the server"."""

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if (answer := _until_queued(path)) is not None:
            return answer
        if path.endswith("/result"):
            out = {"url": "http://blob.test/x", "file_name": "song_vocals.wav",
                   "content_type": "audio/wav", "size": 10}  # fmt: skip
            return httpx.Response(
                200, json={"request_id": "req_1", "model": "audio/stems", "data": {"vocals": out}}
            )
        if path == "/x":
            raise httpx.ConnectError("[Errno 101] Network is unreachable")
        return httpx.Response(200, json=_status_json("COMPLETED"))

    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF" + bytes(100))
    with (
        patch("demixer.client.sync.time.sleep", lambda _s: None),
        Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(ConnectionFailed) as caught,
    ):
        c.separate(song, directory=tmp_path / "out", progress=False)
    assert caught.value.request_id == "req_1"
    assert caught.value.message.endswith(
        "(request req_1 finished on the server; its outputs are kept there until they expire)"
    )


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_separate_checks_the_folder_and_the_input_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(500)

    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF" + bytes(100))
    with Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(InvalidOutput, match=r"song\.wav is a file, not a folder"):
            c.separate(song, directory=song / "out", progress=False)
        with pytest.raises(InvalidAudio, match="is a folder, not an audio file"):
            c.separate(tmp_path, directory=tmp_path / "out", progress=False)
        with pytest.raises(InvalidAudio, match="is a folder, not an audio file"):
            c.upload(tmp_path)
    assert sent == []


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_cancelling_an_async_separate_cancels_its_job_on_the_server(tmp_path: Path) -> None:
    seen: list[str] = []
    polled = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        seen.append(f"{request.method} {path}")
        if (answer := _until_queued(path)) is not None:
            return answer
        if path.endswith("/cancel"):
            return httpx.Response(202, json={"request_id": "req_1", "status": "CANCELLED"})
        polled.set()
        return httpx.Response(200, json=_status_json("IN_PROGRESS"))

    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF" + bytes(100))

    async def main() -> None:
        transport = httpx.MockTransport(handler)
        c = AsyncClient("http://api.test", api_key="k", transport=transport)
        task = asyncio.create_task(c.separate(song, directory=tmp_path, progress=False))
        while not polled.is_set() and not task.done():
            await asyncio.sleep(0.01)
        assert not task.done(), task
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await c.close()  # Client's name for aclose

    asyncio.run(main())
    assert seen[-1] == "PUT /v1/queue/requests/req_1/cancel"


@pytest.mark.backends("sqlite")
def test_a_download_interrupted_right_after_its_temporary_is_made_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``remote separate`` stopped by SIGTERM as a download starts: the hidden .part file is
    named before it is made, so the clean-up finds it."""
    made = interrupt_after(monkeypatch, "open", tmp_path, 1)
    with pytest.raises(KeyboardInterrupt), atomic_file(tmp_path / "vocals.wav") as fh:
        fh.write(b"never")
    assert len(made) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_an_api_key_read_with_its_newline_is_sent_without_it_and_a_bad_one_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key from a mounted secret or a file keeps its newline: it was sent as it was, which
    HTTP cannot carry, so every call was retried for 15 s and then failed with the key itself
    printed in the error line."""
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("authorization"))
        return httpx.Response(200, json=_status_json("COMPLETED"))

    monkeypatch.setenv("DEMIXER_API_KEY", "dmx_secret\n")
    with Client("http://api.test", transport=httpx.MockTransport(handler), max_tries=1) as c:
        assert c.status("req_1").status == "COMPLETED"
    assert sent == ["Bearer dmx_secret"]

    with pytest.raises(ValueError, match="the API key has a character no key has") as bad:
        Client("http://api.test", api_key="dmx_sécret")
    assert "cret" not in str(bad.value)
    cmd = [DEMIXER, "remote", "separate", "song.wav", "--server", "http://127.0.0.1:9"]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, DEMIXER_API_KEY="dmx_sé"),
    )
    assert done.returncode == 2, done.stderr
    assert "Invalid value for '--key': the API key has a character no key has" in done.stderr
    assert "dmx_s" not in done.stderr


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_a_download_the_disk_refuses_is_an_output_error_not_a_bad_input(tmp_path: Path) -> None:
    """`remote separate` said "[INVALID_INPUT] song.wav: Is a directory" (exit 3, and went on
    with the next file) when a stem could not be written: the local CLI's INVALID_OUTPUT (exit
    2), naming the file it could not write, and STORAGE_FULL for a full disk."""
    body = bytes(1000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    result = _vocals_at_blob_x(len(body))
    out = tmp_path / "out"
    (out / "song_vocals.wav").mkdir(parents=True)  # in the way of the stem

    def disk_full(_n: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(InvalidOutput) as refused:
            c.download(result, out)
        with pytest.raises(StorageFull) as full:
            c.download(result, tmp_path / "full", on_bytes=disk_full)
    assert refused.value.message == (
        f"cannot write the stems: Is a directory ({out / 'song_vocals.wav'})"
    )
    assert exit_code_for(refused.value) == 2
    assert full.value.message == "cannot write the stems: the disk is full"
    assert [p.name for p in out.iterdir()] == ["song_vocals.wav"]  # no .part left
    assert list((tmp_path / "full").iterdir()) == []


@pytest.mark.backends("sqlite")  # a stand-in server: no demixer server, no backend
def test_wait_ends_at_its_timeout_behind_a_proxy_that_buffers_the_event_stream() -> None:
    """A buffering proxy answers the event stream's headers, then holds every frame until the
    job ends: ``wait(timeout=1)`` waited out the stream's 60 s read timeout first."""
    release = threading.Event()

    class Buffering(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if "/status/stream" in self.path:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.wfile.flush()
                release.wait(30)  # the frames sit in the proxy's buffer
                return
            body = json.dumps(_status_json("IN_PROGRESS")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Buffering)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{proxy.server_address[1]}"

    def sync_wait() -> None:
        with Client(url, "k") as c:
            c.wait("req_1", timeout=1)

    async def async_wait() -> None:
        async with AsyncClient(url, "k") as c:
            await c.wait("req_1", timeout=1)

    try:
        for wait in (sync_wait, lambda: asyncio.run(async_wait())):
            started = time.monotonic()
            with pytest.raises(WaitTimeout):
                wait()
            assert time.monotonic() - started < 4
    finally:
        release.set()
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_a_proxys_502_and_504_while_the_server_restarts_are_ridden_out(tmp_path: Path) -> None:
    """Behind nginx or a load balancer a restarting API is a 502 Bad Gateway page (504 when
    slow), not a refused connection or a 503: wait() ended with HTTP_502 at once. Calls safe
    to repeat are sent again; a multipart upload (a new file each time) is not."""
    clock = _Clock()
    seen: list[str] = []
    gateway = {"/v1/queue/requests/req_1/result": 504}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        seen.append(f"{request.method} {path}")
        if clock.now < 40 or request.method == "POST":  # the API behind the proxy restarts
            return httpx.Response(502, html="<html><h1>502 Bad Gateway</h1>nginx</html>")
        if path in gateway:
            return httpx.Response(gateway.pop(path), html="<h1>504 Gateway Time-out</h1>")
        if path.endswith("/result"):
            return httpx.Response(200, json={"request_id": "req_1", "model": "audio/stems",
                                             "data": {}})  # fmt: skip
        return httpx.Response(200, json=_status_json("COMPLETED"))

    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF" + bytes(100))
    with (
        patch("time.monotonic", clock.monotonic),
        patch("time.sleep", clock.sleep),
        Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c,
    ):
        assert c.wait("req_1").status == "COMPLETED"
        assert 40 <= clock.now <= 50
        assert c.result("req_1").request_id == "req_1"  # after one 504
        with pytest.raises(ApiError) as refused:
            c.upload(song, multipart=True)
    assert seen.count("GET /v1/queue/requests/req_1/result") == 2
    # A 502 to the event stream may be a proxy that refuses streams: polled at once instead.
    assert seen.count("GET /v1/queue/requests/req_1/status/stream") == 1
    assert (refused.value.status, refused.value.code) == (502, "HTTP_502")
    assert seen.count("POST /v1/files") == 1


README = Path(__file__).resolve().parent.parent / "README.md"


def _unbound_names(code: str) -> set[str]:
    """The names ``code`` uses (at its top or inside its functions) that it never imports or
    assigns and that are not builtins: what a reader who pastes it alone gets a NameError for."""
    top = symtable.symtable(code, "<readme>", "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    used: set[str] = set()
    tables = [top]
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        for symbol in table.get_symbols():
            at_top = table is top or symbol.is_global()
            if at_top and symbol.is_referenced():
                used.add(symbol.get_name())
    return used - bound - set(dir(builtins))


@pytest.mark.backends("sqlite")  # reads the README: no server, no backend
def test_readme_client_examples_each_import_what_they_use() -> None:
    """The step-by-step example used ``Client`` without importing it (a NameError pasted
    alone); each example of the client section runs as written."""
    section = README.read_text("utf-8").split("## Python client", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) >= 4
    for block in blocks:
        assert _unbound_names(block) == set(), block


@pytest.mark.backends("sqlite")  # no server at all: no backend
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "ogg"], "unknown output format 'ogg'; choose one of wav, flac, mp3"),
        (["--bit-depth", "8"], "bit depth '8' is not available for wav; choose one of 16, 24, 32f"),
    ],
)
def test_remote_separate_refuses_a_bad_format_before_it_uploads(
    music: tuple[Path, np.ndarray], tmp_path: Path, args: list[str], message: str
) -> None:
    """A typo in -f or --bit-depth was said by the server after the whole first file was
    uploaded (here nothing listens: it would be CONNECTION_FAILED); --quality already was
    checked first, as `separate` checks both."""
    cmd = [DEMIXER, "remote", "separate", str(music[0]), "-o", str(tmp_path / "out"), *args,
           "--server", f"http://127.0.0.1:{free_port()}", "--key", "k"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"error [INVALID_OUTPUT] {message}\n"


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_a_download_that_fails_does_not_print_its_signed_url(tmp_path: Path) -> None:
    """An output's signed URL is the key to its file: the error line (in a CI log) named it
    whole, signature and all."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    url = "http://api.test/v1/blobs/outputs/req_1/vocals.wav?expires=1796639275&sig=k_GgI1U38g"
    output = {"url": url, "file_name": "song_vocals.wav", "content_type": "audio/wav"}
    result = Result.from_json(
        {"request_id": "req_1", "model": "audio/stems", "data": {"vocals": output}}
    )
    with (
        patch("time.sleep", lambda _s: None),
        Client("http://api.test", api_key="k", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(ConnectionFailed) as caught,
    ):
        c.download(result, tmp_path)
    assert caught.value.message == (
        "http://api.test/v1/blobs/outputs/req_1/vocals.wav: [Errno 111] Connection refused"
    )


@pytest.mark.backends("sqlite")  # no server: the exit code a server's error maps to
def test_an_input_over_the_servers_upload_limit_is_a_bad_input_not_the_end_of_the_batch() -> None:
    """`remote separate a.wav b.wav`: a too long input (DURATION_LIMIT) is exit 3 and the
    others go on; one over the size limit (FILE_TOO_LARGE, at its upload) was exit 1, which
    stopped the batch there, b.wav never sent."""
    too_long = ApiError(422, "DURATION_LIMIT", "longer than 1200 s")
    too_large = ApiError(413, "FILE_TOO_LARGE", "file_size 15245843 is over this server's limit")
    assert cli_remote._exit_code(too_long) == cli_remote._exit_code(too_large) == 3


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_a_server_that_redirects_http_to_https_is_named_with_where_it_redirects() -> None:
    """A server behind a proxy that sends http:// on to https:// answered every call with a
    308 and no body: the client said "expected a JSON object, got ''"."""

    def handler(request: httpx.Request) -> httpx.Response:
        to = f"https://demixer.example.com{request.url.path}"
        return httpx.Response(308, headers={"Location": to})

    with (
        Client("http://demixer.example.com", "k", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(BadResponse) as caught,
    ):
        c.status("req_1")
    assert caught.value.message == (
        "http://demixer.example.com/v1/queue/requests/req_1/status: the server redirects to "
        "https://demixer.example.com/v1/queue/requests/req_1/status; give the address it "
        "redirects to as the server's URL"
    )


@pytest.mark.backends("sqlite")  # a mock transport: no server, no backend
def test_a_proxys_html_error_page_is_said_in_its_own_words(tmp_path: Path) -> None:
    """nginx in front of the server, at its default 1 MB body limit, refuses the upload with
    an HTML page: the error line was that page's markup, cut at 200 characters."""
    page = (
        "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
        "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx/1.25.3"
        "</center>\r\n</body>\r\n</html>\r\n"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(
                201, json={"file_id": "file_1", "upload_url": "http://api.test/up"}
            )
        return httpx.Response(413, html=page)

    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF" + bytes(100))
    with (
        Client("http://api.test", "k", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(ApiError) as caught,
    ):
        c.upload(song)
    assert str(caught.value) == "413 HTTP_413: 413 Request Entity Too Large"
