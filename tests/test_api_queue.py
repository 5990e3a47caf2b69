"""Queue requests: validation before queueing, the params contract, status, cancel, result,
SSE, listing and deletion. The worker's part is played through the real queue."""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api_support import TESTSERVER, Api, api, bucket_refusal, make_api, signed_an_hour_ago
from demixer.api import jobs
from demixer.api.routes.web import WEB_DIR
from demixer.service.jobs.contract import JobParams
from demixer.service.jobs.queue import LeaseLost
from demixer.service.retention.sweeper import Sweeper
from demixer.service.schema import File, Job
from worker_support import wait_until

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["api", "make_api"]  # fixtures


def _error(r: Any, status: int, code: str, param: str | None = None) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code, body
    if param is not None:
        assert body["param"] == param, body
    return str(body["message"])


def _params(api: Api, job_id: str) -> dict[str, Any]:
    """The job's params as its worker reads them (the row leaves out fields at their default)."""
    with api.services.db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return JobParams.from_row(job.params).model_dump(mode="json")


def test_submit_separate_queues_with_the_params_contract(api: Api) -> None:
    file_id = api.upload()
    r = api.queue_separate(file_id, "the singer", input={"output_format": "FLAC", "bit_depth": 24})
    assert r.status_code == 202, r.text
    body = r.json()
    job_id = body["request_id"]
    assert body["status"] == "IN_QUEUE" and body["model"] == "audio/separate"
    assert body["engine_model"] == "spleeter-2stems" and body["queue_position"] == 0
    base = f"http://testserver/v1/queue/requests/{job_id}"
    assert body["status_url"] == f"{base}/status"
    assert body["stream_url"] == f"{base}/status/stream"
    assert body["result_url"] == f"{base}/result"
    assert body["cancel_url"] == f"{base}/cancel"
    assert _params(api, job_id) == {  # the job contract's row, version 2
        "version": 2,
        "input": {
            "file_id": file_id,
            "storage_key": f"inputs/{file_id}",
            "file_name": "stereo.wav",
            "duration": 1.5,
        },
        "stems": ["vocals", "residual"],
        "output_format": "flac",
        "bit_depth": "24",
        "names": {"vocals": "target", "residual": "residual"},
        "spans": None,
        "quality": "balanced",  # the server's default (DEMIXER_QUALITY)
        "webhook": None,
        "prompt": "the singer",
        # Download names: the prompt's stem by what it is, the residual as "without" it.
        "labels": {"target": "vocals", "residual": "without-vocals"},
        "downmix": False,
        "audio_track": None,  # the one players play
        "rescale": False,
        "extra_formats": [],
        "preprocess": [],
        "vendor": None,
    }

    status = api.get(body["status_url"] + "?logs=true").json()
    assert status["status"] == "IN_QUEUE" and status["queue_position"] == 0
    assert status["progress"] is None and status["error"] is None and status["stage"] is None
    # What a person knows the request by (history lists): the song, its length, the prompt;
    # and the upload it was made from, which a client deleting the song deletes as well.
    assert (status["file_name"], status["duration"]) == ("stereo.wav", 1.5)
    assert status["file_id"] == file_id
    assert (status["prompt"], status["stems"]) == ("the singer", None)
    assert any("the singer" in line["message"] for line in status["logs"])
    assert api.get(body["status_url"]).json()["logs"] is None

    second = api.queue_separate(file_id, "vocals").json()
    assert second["queue_position"] == 1
    assert api.get(second["status_url"]).json()["queue_position"] == 1


def test_queue_position_counts_every_account_s_queued_jobs(api: Api) -> None:
    """What a tenant learns of the others from ``queue_position`` (docs/hardening.md, "What
    one account sees of another"): how many queued jobs, of every account, run before its
    own; with priority -100, the whole queue's length. Never whose, or what."""
    song = "https://example.org/song.mp3"
    for _ in range(3):  # another tenant's jobs
        made = api.post(
            "/v1/queue/audio/stems", key=api.other_key, json={"input": {"audio_url": song}}
        )
        assert made.status_code == 202, made.text
    mine = api.post("/v1/queue/audio/stems", json={"input": {"audio_url": song}}).json()
    assert mine["queue_position"] == 3
    first = api.post("/v1/queue/audio/stems", json={"input": {"audio_url": song}, "priority": 100})
    assert first.json()["queue_position"] == 0  # ahead of everyone's default-priority jobs
    last = api.post("/v1/queue/audio/stems", json={"input": {"audio_url": song}, "priority": -100})
    assert last.json()["queue_position"] == 5  # every queued job on the server
    assert api.get(mine["status_url"]).json()["queue_position"] == 4
    listed = api.get("/v1/queue/requests").json()["data"]
    assert len(listed) == 3  # the other tenant's jobs are counted, never shown


def test_a_client_written_for_fal_finds_the_result_at_response_url(api: Api) -> None:
    # fal's queue (https://fal.ai/docs/model-endpoints/queue), which this API is modelled on,
    # names the result's URL `response_url` in the submit and status responses.
    r = api.queue_separate(api.upload(), "the singer")
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["response_url"] == queued["result_url"]
    for query in ("", "?logs=1"):  # the fast lane and the routed status
        status = api.get(f"{queued['status_url']}{query}").json()
        assert status["response_url"] == queued["result_url"]
    r = api.get(queued["response_url"])
    assert _error(r, 409, "NOT_READY")
    # fal's REST docs also name the request's own URL as where its response is got.
    r = api.get(f"/v1/queue/requests/{queued['request_id']}")
    assert _error(r, 409, "NOT_READY")


def test_a_span_after_the_end_of_the_upload_is_refused_at_submission(api: Api) -> None:
    file_id = api.upload()  # stereo.wav: 1.5 s
    spans = [{"start": 5, "end": 9, "include": True}]
    r = api.queue_separate(file_id, "vocals", input={"spans": spans})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("INVALID_OUTPUT", "input.spans")
    assert error["message"] == (
        "the span 5:9 starts after the input ends (1.50 s): it would keep nothing of the "
        "separated sound"
    )
    excluded = [{"start": 5, "end": 9, "include": False}]  # takes out nothing: harmless
    assert api.queue_separate(file_id, "vocals", input={"spans": excluded}).status_code == 202


def test_everything_but_the_vocals_swaps_target_and_residual(api: Api) -> None:
    file_id = api.upload()
    r = api.queue_separate(
        file_id,
        "everything but the vocals",
        input={"spans": [{"start": 0.2, "end": 0.8, "include": True}]},
        webhookUrl="https://example.org/hook",
        webhookSecret="whsec_abc",
        priority=5,
    )
    assert r.status_code == 202, r.text
    params = _params(api, r.json()["request_id"])
    assert params["names"] == {"vocals": "residual", "residual": "target"}
    assert params["spans"] == [{"start": 0.2, "end": 0.8, "include": True}]
    assert params["webhook"] == {
        "url": "https://example.org/hook",
        "secret": "whsec_abc",
        "style": "native",
    }
    assert r.json()["webhook"] == {"url": "https://example.org/hook", "signing_secret": "whsec_abc"}
    with api.services.db.read() as s:
        assert s.get(Job, r.json()["request_id"]).priority == 5  # type: ignore[union-attr]

    r = api.queue_separate(file_id, "karaoke", webhook={"url": "http://example.org/h"})
    secret = r.json()["webhook"]["signing_secret"]
    assert secret.startswith("whsec_") and len(secret) > 20


def test_submit_stems_and_audio_url(api: Api) -> None:
    file_id = api.upload()
    r = api.post(
        "/v1/queue/audio/stems",
        json={"input": {"file_id": file_id, "stems": ["drums", "Bass"], "output_format": "mp3"}},
    )
    assert r.status_code == 202, r.text
    assert r.json()["engine_model"] == "cascade-4stems"  # the only installed one with drums
    params = _params(api, r.json()["request_id"])
    # The residual is not named: the worker adds it, and drops it if silent.
    assert params["stems"] == ["drums", "bass"]
    listed = api.get("/v1/queue/requests").json()["data"][0]
    assert (listed["stems"], listed["prompt"], listed["file_name"]) == (
        ["drums", "bass"],
        None,
        "stereo.wav",
    )
    assert params["names"] == {"drums": "drums", "bass": "bass", "residual": "residual"}
    assert (params["output_format"], params["bit_depth"]) == ("mp3", None)

    r = api.post(
        "/v1/queue/audio/stems",
        json={"input": {"audio_url": "https://example.org/song.mp3", "model": "spleeter-2stems"}},
    )
    assert r.status_code == 202, r.text
    params = _params(api, r.json()["request_id"])
    assert params["input"] == {"audio_url": "https://example.org/song.mp3"}
    assert params["stems"] == ["vocals", "accompaniment"]  # every stem: nothing left out
    assert params["names"] == {"vocals": "vocals", "accompaniment": "accompaniment"}

    r = api.post(
        "/v1/queue/audio/stems",
        json={"input": {"file_id": file_id, "stems": ["vocals", "instrumental"]}},
    )
    assert r.status_code == 202, r.text
    assert _params(api, r.json()["request_id"])["stems"] == ["vocals", "instrumental"]


def test_a_url_of_a_host_alone_names_no_file_and_never_its_password(api: Api) -> None:
    """An audio_url with no path (a host, with a user and password in it) became the request's
    file_name: the password on show in every listing, the web page's history and the stems'
    download names ("alice:s3cret@media.example.com_vocals.wav")."""
    url = "https://alice:s3cret@media.example.com#take-2"
    r = api.post("/v1/queue/audio/stems", json={"input": {"audio_url": url}})
    assert r.status_code == 202, r.text
    request_id = r.json()["request_id"]
    assert api.get("/v1/queue/requests").json()["data"][0]["file_name"] is None
    assert api.get(f"/v1/queue/requests/{request_id}/status").json()["file_name"] is None
    # Its stems are named as any nameless input's are.
    assert JobParams.from_row(_params(api, request_id)).input_name == "audio"


def test_a_url_path_in_percent_encoded_utf8_names_the_song_as_a_browser_shows_it(
    api: Api,
) -> None:
    """A URL's path can only carry 米 or a space percent-encoded: the request and its stems
    were called "%E7%B1%B3%E6%B4%A5%E7%8E%84%E5%B8%AB%20-%20Lemon_vocals.wav"."""
    url = "https://cdn.example.com/music/%E7%B1%B3%E6%B4%A5%E7%8E%84%E5%B8%AB%20-%20Lemon.mp3?a=1"
    r = api.post("/v1/queue/audio/stems", json={"input": {"audio_url": url}})
    assert r.status_code == 202, r.text
    request_id = r.json()["request_id"]
    assert api.get("/v1/queue/requests").json()["data"][0]["file_name"] == "米津玄師 - Lemon.mp3"
    status = api.get(f"/v1/queue/requests/{request_id}/status").json()
    assert status["file_name"] == "米津玄師 - Lemon.mp3"
    # What the worker names the stems after (米津玄師 - Lemon_vocals.wav).
    assert JobParams.from_row(_params(api, request_id)).input_name == "米津玄師 - Lemon.mp3"
    # Decoded, a %00 or %0A would be a control character in the name: left out.
    url = "https://cdn.example.com/take%00%0A%1B2.mp3"
    r = api.post("/v1/queue/audio/stems", json={"input": {"audio_url": url}})
    status = api.get(f"/v1/queue/requests/{r.json()['request_id']}/status").json()
    assert status["file_name"] == "take2.mp3"


def test_the_joiners_a_name_is_spelled_with_stay_in_its_stems_names(api: Api) -> None:
    """The stems' names dropped every invisible character: Persian's zero-width non-joiner
    (U+200C: "songs", آهنگ‌ها, joined into another spelling) and the joiner (U+200D) of an
    emoji family (three people instead). A bidi override (U+202E) still goes."""
    songs = "آهنگ\u200cهای من.wav"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    for uploaded, named in ((songs, songs), (f"{family} \u202etake.wav", f"{family} take.wav")):
        request_id = api.queue_separate(api.upload(as_name=uploaded)).json()["request_id"]
        # What the worker names the stems after.
        assert JobParams.from_row(_params(api, request_id)).input_name == named


def test_a_number_or_boolean_given_as_another_type_is_refused_not_guessed(
    make_api: Callable[..., Api],
) -> None:
    # The schema says boolean and integer; "yes", 1 and "5" were read as true and 5 (lax
    # coercion), so a client's mistake ran as something it did not write.
    api = make_api()
    file_id = api.upload()
    separate = "/v1/queue/audio/separate"

    def sep(body: dict[str, Any] | None = None, **inp: Any) -> Any:
        return api.post(
            separate,
            json={"input": {"file_id": file_id, "prompt": "vocals", **inp}, **(body or {})},
        )

    _error(sep(downmix="yes"), 400, "INVALID_REQUEST", "input.downmix")
    _error(sep(rescale=1), 400, "INVALID_REQUEST", "input.rescale")
    _error(sep({"priority": "5"}), 400, "INVALID_REQUEST", "priority")
    _error(sep({"priority": 5.5}), 400, "INVALID_REQUEST", "priority")
    _error(sep(spans=[{"start": "0", "end": 1}]), 400, "INVALID_REQUEST", "input.spans.0.start")
    bad_include = [{"start": 0, "end": 1, "include": "false"}]
    _error(sep(spans=bad_include), 400, "INVALID_REQUEST", "input.spans.0.include")
    # true was read as the integer 1 (refused as "bit depth '1'"), and 24.5 was reported at
    # "input.bit_depth.str", a field no client sends.
    _error(sep(bit_depth=True), 400, "INVALID_REQUEST", "input.bit_depth")
    _error(sep(bit_depth=24.5), 400, "INVALID_REQUEST", "input.bit_depth")
    r = api.post(
        "/v1/files",
        json={"file_name": "a.wav", "content_type": "audio/wav", "file_size": "1000"},
    )
    _error(r, 400, "INVALID_REQUEST", "file_size")
    # The types written as the schema says are taken (integers where numbers are asked too).
    r = sep(
        {"priority": 5}, downmix=True, rescale=False, spans=[{"start": 0, "end": 1.5}], bit_depth=24
    )
    assert r.status_code == 202, r.text


def test_a_shared_server_can_keep_every_key_from_jumping_the_queue(
    make_api: Callable[..., Api],
) -> None:
    # The queue's order is the whole server's: any key asking priority 100 ran before every
    # other account's requests, and an operator had no way to stop it.
    api = make_api(max_priority=0)
    file_id = api.upload()

    def sep(priority: int) -> Any:
        body = {"input": {"file_id": file_id, "prompt": "vocals"}, "priority": priority}
        return api.post("/v1/queue/audio/separate", json=body)

    message = _error(sep(1), 400, "INVALID_REQUEST", "priority")
    assert message == "priority 1 is above this server's limit of 0 (DEMIXER_MAX_PRIORITY)"
    assert sep(0).status_code == 202
    assert sep(-5).status_code == 202  # lower, behind the others, stays anyone's choice


def test_queue_validation_errors(make_api: Callable[..., Api]) -> None:
    api = make_api()
    file_id = api.upload()
    stems = "/v1/queue/audio/stems"

    def sep(**inp: Any) -> Any:
        return api.post("/v1/queue/audio/separate", json={"input": {"prompt": "vocals", **inp}})

    _error(api.post("/v1/queue/audio/nope", json={}), 404, "UNKNOWN_MODEL")
    _error(api.post("/v1/queue/requests", json={}), 405, "METHOD_NOT_ALLOWED")  # its GET's path
    _error(sep(file_id="file_nope"), 404, "NOT_FOUND", "input.file_id")
    _error(sep(), 400, "INVALID_REQUEST", "input")
    _error(sep(file_id=file_id, audio_url="https://x.org/a.mp3"), 400, "INVALID_REQUEST", "input")
    _error(sep(audio_url="file:///etc/passwd"), 400, "INVALID_AUDIO_URL", "input.audio_url")
    _error(sep(audio_url="ftp://example.org/a.mp3"), 400, "INVALID_AUDIO_URL")
    _error(sep(audio_url="https://"), 400, "INVALID_AUDIO_URL")
    msg = _error(sep(file_id=file_id, output_format="ogg"), 400, "INVALID_OUTPUT")
    assert "wav" in msg and "flac" in msg
    _error(sep(file_id=file_id, output_format="mp3", bit_depth="24"), 400, "INVALID_OUTPUT")
    _error(sep(file_id=file_id, output_format="flac", bit_depth="32f"), 400, "INVALID_OUTPUT")
    _error(
        sep(file_id=file_id, spans=[{"start": 2, "end": 1}]),
        400,
        "INVALID_REQUEST",
        "input.spans.0",
    )
    r = api.post(
        "/v1/queue/audio/separate",
        json={"input": {"file_id": file_id, "prompt": "vocals"}, "webhook": {"url": "mailto:x"}},
    )
    _error(r, 400, "URL_REFUSED", "webhook.url")

    msg = _error(sep(file_id=file_id, prompt="the flute solo"), 422, "UNSUPPORTED_PROMPT")
    assert "vocals" in msg and "drums" in msg
    msg = _error(sep(file_id=file_id, prompt="guitar"), 422, "UNSUPPORTED_PROMPT", "input.prompt")
    assert "htdemucs_6s" in msg
    # Spaces alone are no prompt, as "" is: a client's mistake, not a sound no model makes.
    _error(sep(file_id=file_id, prompt=""), 400, "INVALID_REQUEST", "input.prompt")
    msg = _error(sep(file_id=file_id, prompt=" \t "), 400, "INVALID_REQUEST", "input.prompt")
    assert "the prompt is blank" in msg
    # Two sounds: refused, not the drums alone.
    _error(sep(file_id=file_id, prompt="drums and bass"), 422, "UNSUPPORTED_PROMPT", "input.prompt")

    r = api.post(stems, json={"input": {"file_id": file_id, "stems": ["kazoo"]}})
    msg = _error(r, 422, "UNKNOWN_STEM", "input.stems")
    for nothing in ([], ["", " "]):  # nothing at all asked for: not "everything"
        r = api.post(stems, json={"input": {"file_id": file_id, "stems": nothing}})
        msg = _error(r, 422, "NO_STEMS_REQUESTED", "input.stems")
        assert "leave it out" in msg
    r = api.post(
        stems, json={"input": {"file_id": file_id, "model": "cascade-4stems", "stems": ["guitar"]}}
    )
    msg = _error(r, 422, "UNKNOWN_STEM", "input.stems")
    assert "drums" in msg and "residual" in msg
    r = api.post(
        stems, json={"input": {"file_id": file_id, "model": "htdemucs", "stems": ["drums"]}}
    )
    msg = _error(r, 422, "MODEL_UNAVAILABLE", "input.model")
    assert msg == (  # what the server's operator runs there, not the caller's own CLI options
        "model 'htdemucs' is not installed on this server nor on any of its workers; its "
        "operator installs it there: demixer models pull htdemucs"
    )
    r = api.post(stems, json={"input": {"file_id": file_id, "model": "nope"}})
    _error(r, 404, "UNKNOWN_MODEL", "input.model")
    # python-audio-separator's name for a model reaches it, and is said as the model's id.
    for name in ("Kim_Vocal_2.onnx", "Kim_Vocal_2"):
        r = api.post(stems, json={"input": {"file_id": file_id, "model": name}})
        msg = _error(r, 422, "MODEL_UNAVAILABLE", "input.model")
        assert msg.startswith("model 'mdx-net-vocals-kim-2' is not installed on this server")
    r = api.post(stems, json={"input": {"file_id": file_id, "model": "kim_vocal_2.onnx"}})
    _error(r, 404, "UNKNOWN_MODEL", "input.model")  # the names are exact
    r = api.post(
        stems, json={"input": {"file_id": file_id, "model": "Kim_Vocal_2+mdx-net-vocals-kim-2"}}
    )
    msg = _error(r, 404, "UNKNOWN_MODEL", "input.model")
    assert msg == "ensemble 'Kim_Vocal_2+mdx-net-vocals-kim-2' names 'mdx-net-vocals-kim-2' twice"
    # Lead and backing vocals need the karaoke recipe's models; the error names what can be made.
    r = api.post(stems, json={"input": {"file_id": file_id, "stems": ["lead_vocals", "drums"]}})
    msg = _error(r, 422, "UNKNOWN_STEM", "input.stems")
    assert msg == (
        "no installed model or recipe makes lead_vocals (karaoke or karaoke-5hp or "
        "vr-karaoke-5hp or vr-karaoke-6hp can: `demixer models pull karaoke`); the installed "
        "ones make: bass, drums, instrumental, other, vocals"
    )
    r = api.post(stems, json={"input": {"file_id": file_id, "model": "karaoke"}})
    msg = _error(r, 422, "MODEL_UNAVAILABLE", "input.model")
    assert "demixer models pull karaoke" in msg
    # An ensemble by its id, however many models it names up to 200 characters.
    pair = "max:mel-roformer-vocals-kim+bs-roformer-vocals-1297"
    r = api.post(stems, json={"input": {"file_id": file_id, "model": pair}})
    msg = _error(r, 422, "MODEL_UNAVAILABLE", "input.model")
    assert msg.endswith(
        f"its operator installs it there: demixer models pull {pair} "
        "(mel-roformer-vocals-kim, bs-roformer-vocals-1297)"
    )
    # audio-separator's modes and weights: the id the install command names is demixer's.
    r = api.post(stems, json={"input": {"file_id": file_id, "model": "avg_fft:" + pair[4:]}})
    msg = _error(r, 422, "MODEL_UNAVAILABLE", "input.model")
    assert f"demixer models pull {pair[4:]} (" in msg
    weighted = "mel-roformer-vocals-kim@2+bs-roformer-vocals-1297"
    r = api.post(stems, json={"input": {"file_id": file_id, "model": "median_wave:" + weighted}})
    msg = _error(r, 404, "UNKNOWN_MODEL", "input.model")
    assert msg.startswith(
        f"ensemble 'median_wave:{weighted}': weights go with the average only, not with "
        "median_wave; an ensemble's id is A+B (the average), MODE:A+B with MODE one of avg,"
    )
    r = api.post(stems, json={"input": {"file_id": file_id, "model": "+".join(["htdemucs"] * 23)}})
    _error(r, 400, "INVALID_REQUEST", "input.model")  # 206 characters
    # 199 characters, 213 as the job's engine model (Kim_Vocal_2 as mdx-net-vocals-kim-2, @.5
    # as @0.5): with its models installed, PostgreSQL refused the job's row, a 500.
    halves = ["Kim_Vocal_2", "htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi"]
    others = ["spleeter-2stems", "cascade-4stems", "mel-roformer-vocals-kim", "scnet-xl-ihf",
              "bs-roformer-vocals-1297", "mdx23c-instvoc-hq", "mdx-net-inst-hq-3"]  # fmt: skip
    model = "+".join([f"{m}@.5" for m in halves] + others)
    r = api.post(stems, json={"input": {"file_id": file_id, "model": model}})
    assert len(model) == 199
    assert "is 213 characters with its models' ids and weights spelled out, more than 200" in (
        _error(r, 400, "INVALID_REQUEST", "input.model")
    )
    r = api.post(stems, json={"input": {"file_id": file_id, "model": "htdemucs+htdemucs"}})
    assert "twice" in _error(r, 404, "UNKNOWN_MODEL", "input.model")
    r = api.post(
        stems,
        json={
            "input": {"file_id": file_id, "stems": ["vocals"], "spans": [{"start": 0, "end": 1}]}
        },
    )
    _error(r, 400, "INVALID_REQUEST", "input.spans")

    # Not uploaded yet, failed, expired, someone else's.
    pending = api.announce()["file_id"]
    _error(sep(file_id=pending), 409, "FILE_NOT_READY", "input.file_id")
    junk = b"not audio at all " * 20
    up = api.post(
        "/v1/files",
        json={"file_name": "j.wav", "content_type": "audio/wav", "file_size": len(junk)},
    ).json()
    api.put_bytes(up, junk)  # on S3 not completed: the submission probes the bytes itself
    _error(sep(file_id=up["file_id"]), 422, "INVALID_AUDIO", "input.file_id")
    theirs = api.post(
        "/v1/files",
        key=api.other_key,
        files={"file": ("a.wav", api.files.get("mono.wav").path.read_bytes())},
    )
    _error(sep(file_id=theirs.json()["file_id"]), 404, "NOT_FOUND", "input.file_id")
    with api.services.db.write() as s:
        s.execute(
            update(File)
            .where(File.id == file_id)
            .values(expires_at=api.services.db.clock() - timedelta(seconds=1))
        )
    _error(sep(file_id=file_id), 410, "FILE_EXPIRED", "input.file_id")
    with api.services.db.read() as s:
        assert s.query(Job).count() == 0  # nothing above was queued


def test_quality_is_checked_defaulted_and_echoed(make_api: Callable[..., Api]) -> None:
    # As DEMIXER_QUALITY=best would: neither the built-in default (balanced) nor the level rows
    # without one read as (fast).
    api = make_api(quality="best")
    file_id = api.upload()
    stems = "/v1/queue/audio/stems"
    r = api.post(stems, json={"input": {"file_id": file_id, "quality": "ultra"}})
    msg = _error(r, 422, "UNKNOWN_QUALITY", "input.quality")
    assert "'ultra'" in msg and "fast, balanced, best" in msg
    with api.services.db.read() as s:
        assert s.query(Job).count() == 0

    def submitted(body: dict[str, Any]) -> tuple[str, str | None]:
        r = api.post(body.pop("path", stems), json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["request_id"]
        status = api.get(r.json()["status_url"]).json()
        return _params(api, job_id)["quality"], status["quality"]

    assert submitted({"input": {"file_id": file_id}}) == ("best", "best")
    assert submitted({"input": {"file_id": file_id, "quality": "FAST"}}) == ("fast", "fast")
    separate = {"path": "/v1/queue/audio/separate", "input": {"file_id": file_id, "prompt": "x"}}
    separate["input"] |= {"prompt": "vocals", "quality": "balanced"}
    assert submitted(separate) == ("balanced", "balanced")
    # A vendor protocol has no quality field: its jobs run at the server's default.
    r = api.post(
        "/api/public/v1/Extraction",
        data={"audio_url": "https://example.org/song.mp3", "stems": '["vocals"]'},
    )
    assert r.status_code == 200, r.text
    assert _params(api, r.json()["task_id"])["quality"] == "best"
    # The level is published with the request schema.
    models = api.get("/v1/models").json()["data"]
    field = models[1]["input"]["$defs"]["StemsInput"]["properties"]["quality"]
    assert field["enum"] == ["fast", "balanced", "best", None]


def test_a_recipe_added_to_the_servers_model_dir_is_listed_within_a_second(api: Api) -> None:
    """GET /v1/models read the recipes and models added (`models add`) from $DEMIXER_MODEL_DIR,
    not from the server's own model directory, and rebuilt its list only when the installed
    models changed: a recipe whose models are not here was never listed, where a job for it
    says MODEL_UNAVAILABLE (and `remote separate -m` took it for a typo)."""
    from demixer.api.routes.models import DISK_SECONDS

    def catalogue() -> dict[str, bool]:
        return {m["id"]: m["installed"] for m in api.get("/v1/models").json()["catalogue"]}

    assert "my-drums" not in catalogue()
    recipes = api.services.settings.model_dir / "recipes"
    recipes.mkdir(parents=True)
    step = {"model": "htdemucs", "input": "mix", "keep": {"drums": "drums"}, "rest": "rest"}
    recipe = {"id": "my-drums", "stems": ["drums", "rest"], "steps": [step]}
    (recipes / "my-drums.json").write_text(json.dumps(recipe))
    time.sleep(DISK_SECONDS)
    assert catalogue()["my-drums"] is False


def test_a_recipe_edited_in_the_servers_model_dir_is_listed_as_it_is_now(api: Api) -> None:
    """An operator who edits a recipe file (same id, other stems) saw GET /v1/models list its
    old stems until the server restarted: the list was rebuilt only when ids changed."""
    from demixer.api.routes.models import DISK_SECONDS

    def stems() -> list[str]:
        listed = api.get("/v1/models").json()["catalogue"]
        return next(m["stems"] for m in listed if m["id"] == "my-drums")

    recipes = api.services.settings.model_dir / "recipes"
    recipes.mkdir(parents=True)
    step = {"model": "htdemucs", "input": "mix", "keep": {"drums": "drums"}, "rest": "rest"}
    recipe = {"id": "my-drums", "stems": ["drums", "rest"], "steps": [step]}
    (recipes / "my-drums.json").write_text(json.dumps(recipe))
    assert stems() == ["drums", "rest"]
    step["rest"] = "no_drums"
    recipe["stems"] = ["drums", "no_drums"]
    (recipes / "my-drums.json").write_text(json.dumps(recipe))
    time.sleep(DISK_SECONDS)
    assert stems() == ["drums", "no_drums"]


def test_limits_checked_before_queueing(make_api: Callable[..., Api]) -> None:
    api = make_api(max_duration_seconds=1.0)
    # A file over the limit could never be separated: refused at upload, nothing kept.
    path = api.files.get("stereo.wav").path  # 1.5 s
    r = api.post("/v1/files", files={"file": ("stereo.wav", path.read_bytes(), "audio/wav")})
    msg = _error(r, 422, "DURATION_LIMIT", "file")
    assert msg == (
        "'stereo.wav' is longer than this server's limit of 1 s (1.5 s or more); "
        "send a shorter file"
    )
    with api.services.db.read() as s:
        refused = s.scalars(select(File)).one()
    assert (refused.status, refused.error_code) == ("failed", "DURATION_LIMIT")
    assert not api.services.storage.exists(refused.storage_key)
    # One stored before the limit was lowered is refused at submit.
    api.services.settings.max_duration_seconds = 10.0
    file_id = api.upload("stereo.wav")
    api.services.settings.max_duration_seconds = 1.0
    msg = _error(api.queue_separate(file_id), 422, "DURATION_LIMIT", "input.file_id")
    assert msg == (
        f"file {file_id!r} (stereo.wav) is longer than this server's limit of 1 s "
        "(1.5 s or more); send a shorter file"
    )
    api.services.settings.max_duration_seconds = 10.0
    api.services.settings.max_upload_bytes = 1000  # lowered after the upload
    _error(api.queue_separate(file_id), 413, "FILE_TOO_LARGE", "input.file_id")


def test_cancel(api: Api) -> None:
    file_id = api.upload()
    job_id = api.queue_separate(file_id).json()["request_id"]
    _error(api.put(f"/v1/queue/requests/{job_id}/cancel", key=api.other_key), 404, "NOT_FOUND")
    r = api.put(f"/v1/queue/requests/{job_id}/cancel")
    assert r.status_code == 200 and r.json() == {"request_id": job_id, "status": "CANCELLED"}
    assert api.get(f"/v1/queue/requests/{job_id}/status").json()["status"] == "CANCELLED"
    _error(api.put(f"/v1/queue/requests/{job_id}/cancel"), 409, "JOB_CONFLICT")
    _error(api.get(f"/v1/queue/requests/{job_id}/result"), 409, "JOB_CONFLICT")

    running = api.queue_separate(file_id).json()["request_id"]
    claim = api.services.queue.claim("w1")
    assert claim is not None and claim.id == running
    r = api.put(f"/v1/queue/requests/{running}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "CANCELLATION_REQUESTED"
    status = api.get(f"/v1/queue/requests/{running}/status").json()
    assert status["status"] == "IN_PROGRESS" and status["cancel_requested"] is True
    assert api.services.queue.heartbeat(running, "w1") is True  # the worker sees the flag


def test_fals_paths_under_the_model_answer_as_the_requests_own(api: Api) -> None:
    """fal's clients build a request's URLs under its model: `/v1/queue/audio/separate/
    requests/{id}/status` (`?logs=1`), `.../status/stream`, `.../requests/{id}` and
    `PUT .../cancel`; all four were 404. Another model's (or account's) is the 404 of an
    unknown id."""
    file_id = api.upload()
    job_id = api.queue_separate(file_id).json()["request_id"]
    base = f"/v1/queue/audio/separate/requests/{job_id}"
    r = api.get(f"{base}/status?logs=1")
    assert r.status_code == 200, r.text
    assert (r.json()["request_id"], r.json()["status"]) == (job_id, "IN_QUEUE")
    assert r.json()["logs"] == api.get(f"/v1/queue/requests/{job_id}/status?logs=1").json()["logs"]
    _error(api.get(base), 409, "NOT_READY")
    unknown = f"no request {job_id!r}"  # what an unknown id answers, with this id
    for wrong in (
        f"/v1/queue/audio/stems/requests/{job_id}",
        f"/v1/queue/fal-ai/flux/dev/requests/{job_id}",
    ):
        assert _error(api.get(f"{wrong}/status"), 404, "NOT_FOUND") == unknown
        assert _error(api.get(f"{wrong}/status/stream"), 404, "NOT_FOUND") == unknown
        assert _error(api.get(wrong), 404, "NOT_FOUND") == unknown
        assert _error(api.put(f"{wrong}/cancel"), 404, "NOT_FOUND") == unknown
    assert _error(api.get(f"{base}/status", key=api.other_key), 404, "NOT_FOUND") == unknown
    assert api.get(f"{base}/status").json()["status"] == "IN_QUEUE"  # no cancel reached it
    other = api.queue_separate(file_id, "drums").json()["request_id"]
    r = api.put(f"/v1/queue/audio/separate/requests/{other}/cancel")
    assert r.status_code == 200 and r.json() == {"request_id": other, "status": "CANCELLED"}
    api.worker_done(job_id)
    r = api.get(base)
    assert r.status_code == 200 and set(r.json()["data"]) >= {"target", "residual"}, r.text
    r = api.get(f"{base}/status/stream")
    assert r.headers["content-type"].startswith("text/event-stream")
    assert [f[1]["status"] for f in _frames(r.text)] == ["COMPLETED"]
    _error(api.put(f"{base}/cancel"), 409, "JOB_CONFLICT")  # the native answer, kept


def test_fals_webhook_in_the_query_is_the_requests_webhook(api: Api) -> None:
    """fal's clients pass the webhook as `?fal_webhook=URL` on the submit: it was ignored."""
    file_id = api.upload()
    hook = "https://example.org/hook"
    body = {"input": {"file_id": file_id, "prompt": "vocals"}}
    r = api.post(f"/v1/queue/audio/separate?fal_webhook={hook}", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["webhook"]["url"] == hook
    assert _params(api, r.json()["request_id"])["webhook"]["url"] == hook
    stems = {"input": {"file_id": file_id, "stems": ["vocals"]}}
    r = api.post(f"/v1/queue/audio/stems?fal_webhook={hook}", json=stems)
    assert r.status_code == 202 and r.json()["webhook"]["url"] == hook, r.text
    # The same URL in the body too is one webhook; another one is a 400.
    same = {**body, "webhookUrl": hook}
    assert api.post(f"/v1/queue/audio/separate?fal_webhook={hook}", json=same).status_code == 202
    other = {**body, "webhook": {"url": "https://example.org/other"}}
    r = api.post(f"/v1/queue/audio/separate?fal_webhook={hook}", json=other)
    _error(r, 400, "INVALID_REQUEST", "fal_webhook")
    # A retry under the same Idempotency-Key with another webhook is another request.
    keyed = {"Idempotency-Key": "fal-1"}
    first = api.post(f"/v1/queue/audio/separate?fal_webhook={hook}", json=body, headers=keyed)
    assert first.status_code == 202, first.text
    again = api.post(f"/v1/queue/audio/separate?fal_webhook={hook}2", json=body, headers=keyed)
    _error(again, 409, "IDEMPOTENCY_KEY_REUSED")
    # Checked as the body's webhook is: the same refusal, code and status.
    for refused in ("http://127.0.0.1:9/hook", "mailto:x"):
        in_body = api.post("/v1/queue/audio/separate", json={**body, "webhookUrl": refused})
        in_query = api.post(f"/v1/queue/audio/separate?fal_webhook={refused}", json=body)
        assert in_body.status_code == in_query.status_code == 400, in_query.text
        assert in_query.json()["error"]["code"] == in_body.json()["error"]["code"] == "URL_REFUSED"


def test_fals_clients_send_the_input_as_the_whole_body(api: Api) -> None:
    """fal's clients (`fal_client.submit`, `fal.queue.submit`) POST the model's input as the
    body itself, with the key as `Key`: it was 400 `input: Field required`. Its result came
    without `x-fal-request-id`, where fal's JavaScript client reads `result.requestId`."""
    file_id = api.upload()
    fal = {"Authorization": f"Key {api.key}"}
    body = {"file_id": file_id, "prompt": "vocals"}  # as fal_client 1.0.3 sent it
    r = api.post("/v1/queue/audio/separate", json=body, headers=fal)
    assert r.status_code == 202, r.text
    job_id = r.json()["request_id"]
    # fal_client polls the status_url it is given: fal's path, where a failed request is
    # COMPLETED with its error (it raised "Unknown status: FAILED" at the request's own path).
    fal_base = f"{TESTSERVER}/v1/queue/audio/separate/requests/{job_id}"
    urls = {k: r.json()[k] for k in ("status_url", "response_url", "result_url", "cancel_url")}
    assert urls == {
        "status_url": f"{fal_base}/status",
        "response_url": fal_base,
        "result_url": fal_base,
        "cancel_url": f"{fal_base}/cancel",
    }
    wrapped = api.queue_separate(file_id, "vocals").json()
    assert wrapped["status_url"] == (
        f"{TESTSERVER}/v1/queue/requests/{wrapped['request_id']}/status"
    )
    assert _params(api, job_id) == _params(api, wrapped["request_id"])
    stems = {"file_id": file_id, "stems": ["vocals"], "webhookUrl": "https://example.org/h"}
    r = api.post("/v1/queue/audio/stems", json=stems, headers=fal)
    assert r.status_code == 202 and r.json()["webhook"]["url"] == "https://example.org/h"
    _error(api.post("/v1/queue/audio/separate", json={"prompt": "vocals"}), 400, "INVALID_REQUEST")
    api.worker_done(job_id)
    for path in (f"audio/separate/requests/{job_id}", f"requests/{job_id}/result"):
        r = api.get(f"/v1/queue/{path}", headers=fal)
        assert r.status_code == 200 and r.headers["x-fal-request-id"] == job_id, r.text


def test_fals_path_says_a_failed_request_is_completed_with_its_error(api: Api) -> None:
    """fal's clients stop polling at `COMPLETED` only, then read the result: @fal-ai/client
    1.10.1's `subscribe` polled a FAILED request at fal's path until its own timeout. There a
    failed or cancelled request is `COMPLETED` with `error_type`, as fal's queue says it; the
    request's own status path keeps `FAILED`."""
    fal = {"Authorization": f"Key {api.key}"}
    failed = api.queue_separate(api.upload()).json()["request_id"]
    assert api.services.queue.claim("w1") is not None
    api.services.queue.fail(failed, "w1", code="INVALID_AUDIO", message="x", retryable=False)
    r = api.get(f"/v1/queue/audio/separate/requests/{failed}/status", headers=fal)
    assert (r.status_code, r.json()["status"], r.json()["error_type"]) == (
        200,
        "COMPLETED",
        "INVALID_AUDIO",
    )
    assert api.get(f"/v1/queue/requests/{failed}/status").json()["status"] == "FAILED"
    result = api.get(f"/v1/queue/audio/separate/requests/{failed}", headers=fal)
    _error(result, 422, "INVALID_AUDIO")
    cancelled = api.queue_separate(api.upload()).json()["request_id"]
    api.put(f"/v1/queue/requests/{cancelled}/cancel")
    r = api.get(f"/v1/queue/audio/separate/requests/{cancelled}/status", headers=fal)
    assert (r.json()["status"], r.json()["error_type"]) == ("COMPLETED", "CANCELLED")


def test_a_cancel_of_a_job_whose_worker_died_ends_it_at_once(api: Api) -> None:
    """The only worker was killed mid-job (its lease ran out) and none took the job again: the
    cancel answered 202 CANCELLATION_REQUESTED and the job stayed IN_PROGRESS for good, as
    only a worker's next claim ever settled it."""
    queue = api.services.queue
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    assert queue.claim("killed-worker") is not None
    with api.services.db.write() as s:  # the worker died a while ago
        past = api.services.db.clock() - timedelta(seconds=60)
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=past))
    r = api.put(f"/v1/queue/requests/{job_id}/cancel")
    assert (r.status_code, r.json()["status"]) == (200, "CANCELLED")
    body = api.get(f"/v1/queue/requests/{job_id}/status?logs=true").json()
    assert body["status"] == "CANCELLED"
    assert body["logs"][-1]["message"] == "cancelled (its worker stopped responding)"
    # Should the worker come back, its lease is gone: it stops and writes nothing.
    with pytest.raises(LeaseLost):
        queue.heartbeat(job_id, "killed-worker")


def test_the_jobs_of_a_worker_that_died_with_none_left_to_claim_them_settle(
    make_api: Callable[..., Api],
) -> None:
    """Only a worker's claim settled an expired lease: with the worker killed mid-job and no
    worker left, its job read IN_PROGRESS for good (on its last attempt too, never FAILED).
    The API's sweeper settles them."""
    api = make_api(max_attempts=2)
    queue, db = api.services.queue, api.services.db
    first = api.queue_separate(api.upload()).json()["request_id"]
    last = api.queue_separate(api.upload(), input={"output_format": "flac"}).json()["request_id"]
    assert queue.claim("killed-worker") is not None
    assert queue.fail(first, "killed-worker", code="X", message="y", retryable=True)
    for job_id in (first, last):  # attempt 2 of the first, attempt 1 of the second
        claim = queue.claim("killed-worker")
        assert claim is not None and claim.id == job_id
    with db.write() as s:  # killed a while ago
        s.execute(update(Job).values(lease_expires_at=db.clock() - timedelta(minutes=5)))
    Sweeper(api.services).sweep_once()
    body = api.get(f"/v1/queue/requests/{last}/status?logs=true").json()
    assert (body["status"], body["queue_position"]) == ("IN_QUEUE", 0)
    assert body["waiting_reason"].startswith("no worker is running")
    assert body["logs"][-1]["message"] == (
        "attempt 1 lost: killed-worker stopped renewing its lease (killed, crashed or cut off)"
    )
    body = api.get(f"/v1/queue/requests/{first}/status").json()
    assert (body["status"], body["error"]["code"]) == ("FAILED", "WORKER_LOST")


def test_a_worker_that_died_mid_job_is_a_warning_in_the_log(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    """A worker killed (OOM, a crash) says nothing itself: its lost attempt was written only in
    the job's own log, and the operator's showed an INFO "attempt 2 started" at most."""
    api = make_api(max_attempts=2)
    queue, db = api.services.queue, api.services.db
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    assert queue.claim("killed-worker") is not None
    with db.write() as s:  # killed a while ago
        s.execute(update(Job).values(lease_expires_at=db.clock() - timedelta(minutes=5)))
    with caplog.at_level("WARNING", logger="demixer.queue"):
        claim = queue.claim("w2")
    assert claim is not None and claim.attempt == 2
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"job {job_id}: attempt 1 lost: killed-worker stopped renewing its lease (killed, "
            "crashed or cut off)",
        )
    ]


def test_a_lost_attempt_the_database_cannot_record_is_not_logged_until_it_is(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    """The warning was logged before the commit: with the database's disk full, every sweep
    (one a second) failed to requeue the job and logged it lost again, 55 lines in a minute."""
    api = make_api(max_attempts=2)
    queue, db = api.services.queue, api.services.db
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    assert queue.claim("killed-worker") is not None
    with db.write() as s:  # killed a while ago
        s.execute(update(Job).values(lease_expires_at=db.clock() - timedelta(minutes=5)))

    def disk_full(_session: Session) -> None:
        raise OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full"))

    event.listen(Session, "before_commit", disk_full)
    try:
        with caplog.at_level("WARNING", logger="demixer.queue"):
            for _ in range(3):
                with pytest.raises(OperationalError):
                    queue.settle_expired()
    finally:
        event.remove(Session, "before_commit", disk_full)
    # The queue's own lines: the listener fails every session's commit in this process while
    # it is on, and the app's background threads (the request counts' flush) say so too.
    assert [r for r in caplog.records if r.name == "demixer.queue"] == []
    caplog.clear()
    with caplog.at_level("WARNING", logger="demixer.queue"):
        queue.settle_expired()  # room again: requeued, and said once
    assert [r.getMessage() for r in caplog.records if r.name == "demixer.queue"] == [
        f"job {job_id}: attempt 1 lost: killed-worker stopped renewing its lease (killed, "
        "crashed or cut off)"
    ]


def test_an_attempt_finishing_after_its_cancel_was_accepted_ends_cancelled(api: Api) -> None:
    """The cancel answered 202 CANCELLATION_REQUESTED while the worker was storing: the job
    used to end COMPLETED (delivered, and billed) all the same."""
    queue = api.services.queue
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    claim = queue.claim("w1")
    assert claim is not None and claim.id == job_id
    r = api.put(f"/v1/queue/requests/{job_id}/cancel")
    assert (r.status_code, r.json()["status"]) == (202, "CANCELLATION_REQUESTED")
    ended = queue.complete(job_id, "w1", outputs={}, duration=1.0, sample_rate=44100)
    assert ended == "CANCELLED"
    body = api.get(f"/v1/queue/requests/{job_id}/status?logs=true").json()
    assert body["status"] == "CANCELLED"
    assert body["logs"][-1]["message"] == (
        "cancelled: the attempt finished after the cancel request; outputs unused"
    )
    _error(api.get(f"/v1/queue/requests/{job_id}/result"), 409, "JOB_CONFLICT")
    with api.services.db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.outputs is None
    # Without a cancel request the same call completes it.
    other = api.queue_separate(api.upload(), input={"output_format": "flac"}).json()
    assert queue.claim("w2") is not None
    done = queue.complete(other["request_id"], "w2", outputs={}, duration=1.0, sample_rate=44100)
    assert done == "COMPLETED"
    assert api.get(other["status_url"]).json()["status"] == "COMPLETED"


def test_an_attempt_that_ends_after_a_cancel_request_cancels_the_job(api: Api) -> None:
    """A running job whose cancel was requested is never queued again: not when its attempt
    fails with a retryable error (an audio_url server that went away), nor when its worker
    gives it back on the way down. It ends CANCELLED, and no worker claims it again."""
    queue = api.services.queue
    file_id = api.upload()
    for end in ("fail", "give_back"):
        job_id = api.queue_separate(file_id, input={"output_format": "flac"}).json()["request_id"]
        claim = queue.claim("w1")
        assert claim is not None and claim.id == job_id
        assert api.put(f"/v1/queue/requests/{job_id}/cancel").status_code == 202
        if end == "fail":
            status = queue.fail(
                job_id, "w1", code="INVALID_AUDIO_URL", message="connection reset", retryable=True
            )
            assert status == "CANCELLED"
        else:
            queue.give_back(job_id, "w1", "the worker is stopping")
        assert queue.claim("w2") is None
        body = api.get(f"/v1/queue/requests/{job_id}/status?logs=true").json()
        assert body["status"] == "CANCELLED", (end, body)
        assert body["logs"][-1]["message"].startswith("cancelled: the running attempt ")
        with api.services.db.read() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.attempts == 1 and job.finished_at is not None


def test_a_cancel_racing_a_delete_is_404(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # The cancel found the request, then a DELETE removed it before the cancel's update: it
    # answered 409 JOB_CONFLICT "job req_... is already None".
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    queue = api.services.queue
    real = queue.cancel

    def deleted_first(request_id: str) -> str:
        jobs.delete_job(api.services, api.account, request_id)  # the DELETE, finishing first
        return real(request_id)

    monkeypatch.setattr(queue, "cancel", deleted_first)
    message = _error(api.put(f"/v1/queue/requests/{job_id}/cancel"), 404, "NOT_FOUND")
    assert message == f"no request {job_id!r}"


def test_result_after_the_worker_completes(api: Api) -> None:
    file_id = api.upload()
    job_id = api.queue_separate(file_id).json()["request_id"]
    result = f"/v1/queue/requests/{job_id}/result"
    assert "IN_QUEUE" in _error(api.get(result), 409, "NOT_READY")
    _error(api.get(result, key=api.other_key), 404, "NOT_FOUND")

    claim = api.services.queue.claim("w1")
    assert claim is not None
    api.services.queue.heartbeat(job_id, "w1", progress=0.25)
    status = api.get(f"/v1/queue/requests/{job_id}/status").json()
    assert status["status"] == "IN_PROGRESS" and status["progress"] == 0.25
    assert status["queue_position"] is None
    assert "IN_PROGRESS" in _error(api.get(result), 409, "NOT_READY")
    api.services.queue.fail(job_id, "w1", code="X", message="x", retryable=True)  # requeued
    api.worker_done(job_id)

    r = api.get(result)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "COMPLETED" and body["request_id"] == job_id
    assert body["model"] == "audio/separate"
    data = body["data"]
    assert set(data) == {"target", "residual", "duration", "sample_rate"}
    assert data["sample_rate"] == 44100 and abs(data["duration"] - 1.5) < 1e-6
    assert body["made_by"] == {"target": "spleeter-2stems", "residual": "the input minus target"}
    assert body["usage"] == {
        "feature": "audio_seconds",
        "quantity": data["duration"],
        "billing_status": "not_billed",
    }
    assert "delete_after" in body["retention"]
    target = data["target"]
    assert target["file_name"] == "song_target.wav" and target["content_type"] == "audio/wav"
    assert target["channels"] == 1 and target["size"] > 0
    # The signed URL needs no key, streams the real blob, names the file.
    dl = api.fetch(target["url"])
    assert dl.status_code == 200
    assert dl.content == api.files.get("mono.wav").path.read_bytes()
    assert dl.headers["content-type"] == "audio/wav"
    assert 'filename="song_target.wav"' in dl.headers["content-disposition"]
    assert int(dl.headers["content-length"]) == target["size"]
    # A tampered signature, or an expiry in the past (on S3 the bucket refuses both: 403).
    key = f"outputs/{job_id}/attempt-1/target.wav"
    if api.direct:
        assert bucket_refusal(api.fetch(api.tampered(target["url"]))) == "SignatureDoesNotMatch"
        with signed_an_hour_ago():
            short = api.services.links.download_url(key, 60)
        assert bucket_refusal(api.fetch(short)) == "AccessDenied"
    else:
        _error(api.fetch(api.tampered(target["url"])), 403, "INVALID_SIGNATURE")
        old = api.services.signer.url("GET", key, 60, now=time.time() - 3600)
        _error(api.client.get(old), 410, "URL_EXPIRED")

    status = api.get(f"/v1/queue/requests/{job_id}/status?logs=true").json()
    assert status["status"] == "COMPLETED" and status["progress"] == 1.0
    assert [line["message"] for line in status["logs"]][-1].startswith("completed")


@pytest.mark.backends("sqlite")  # on S3 the URLs are the bucket's own (presigned)
def test_a_stem_download_serves_one_byte_range_and_head(api: Api) -> None:
    # A browser seeking in a stem, a download manager resuming one: one range answers 206.
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id)
    url = api.get(f"/v1/queue/requests/{job_id}/result").json()["data"]["target"]["url"]
    whole = api.files.get("mono.wav").path.read_bytes()
    size = len(whole)
    for asked, first, last in (
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, size - 1),
        ("bytes=-10", size - 10, size - 1),
        (f"bytes=5-{size + 100}", 5, size - 1),
    ):
        r = api.fetch(url, headers={"Range": asked})
        assert r.status_code == 206, (asked, r.text)
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert r.content == whole[first : last + 1]
    r = api.fetch(url, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    assert "outside this" in _error(r, 416, "RANGE_NOT_SATISFIABLE", param="Range")
    # Offsets past int()'s 4300 digits were a 500; they are as far past the end as any.
    r = api.fetch(url, headers={"Range": f"bytes={'1' * 4301}-"})
    _error(r, 416, "RANGE_NOT_SATISFIABLE", param="Range")
    for asked in (f"bytes=-{'1' * 4301}", f"bytes=0-{'9' * 4301}", f"bytes={'0' * 4400}1-"):
        r = api.fetch(url, headers={"Range": asked})
        first = 1 if asked.endswith("1-") else 0
        assert r.status_code == 206, (asked[:20], r.text)
        assert r.headers["content-range"] == f"bytes {first}-{size - 1}/{size}"
    # A browser resuming a download sends If-Range with the ETag it got: the rest, as it is
    # still the same file (without an ETag, Chrome started a multi-GB stem over).
    tag = api.fetch(url).headers["etag"]
    r = api.fetch(url, headers={"Range": "bytes=10-", "If-Range": tag})
    assert r.status_code == 206 and r.content == whole[10:]
    # Several ranges, a range that does not parse, or an If-Range of another tag or a date:
    # the whole file (RFC 9110).
    for headers in (
        {"Range": "bytes=0-1,5-6"},
        {"Range": "bytes=9-2"},
        {"Range": "bytes=0-9", "If-Range": '"v1"'},
        {"Range": "bytes=0-9", "If-Range": "Sat, 05 Dec 2026 10:00:00 GMT"},
    ):
        r = api.fetch(url, headers=headers)
        assert r.status_code == 200 and r.content == whole, headers
        assert r.headers["accept-ranges"] == "bytes"
    head = api.send("HEAD", url)
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == tag
    assert int(head.headers["content-length"]) == size
    assert head.headers["content-type"] == "audio/wav"
    assert 'filename="song_target.wav"' in head.headers["content-disposition"]
    assert api.send("HEAD", api.tampered(url)).status_code == 403


@pytest.mark.backends("sqlite")  # on S3 the URLs are the bucket's own (presigned)
def test_a_stem_the_client_has_is_304_not_sent_again(api: Api) -> None:
    """A browser revalidating a cached stem sends ``If-None-Match`` with its ETag: it got the
    whole stem again (200) instead of 304."""
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id)
    url = api.get(f"/v1/queue/requests/{job_id}/result").json()["data"]["target"]["url"]
    tag = api.fetch(url).headers["etag"]
    for method in ("GET", "HEAD"):
        for asked in (tag, f'"other", W/{tag}', "*"):
            r = api.send(method, url, headers={"If-None-Match": asked, "Range": "bytes=0-9"})
            assert (r.status_code, r.content, r.headers["etag"]) == (304, b"", tag), asked
            assert r.headers["cache-control"] == "private"
        r = api.send(method, url, headers={"If-None-Match": '"other"'})
        assert r.status_code == 200, method
        # The browser may keep it; a shared cache (a proxy) kept a deleted song's stems.
        assert r.headers["cache-control"] == "private"
    # A URL that does not check out is refused, whatever the client holds.
    assert api.send("GET", api.tampered(url), headers={"If-None-Match": "*"}).status_code == 403


@pytest.mark.backends("sqlite")  # on S3 the URLs are the bucket's own (presigned)
def test_a_blob_is_never_a_page_on_the_apis_origin(api: Api) -> None:
    """A user's bytes are served from the API's origin: nothing told a browser not to sniff
    them as HTML or to run no script in them, were one ever shown inline."""
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id)
    url = api.get(f"/v1/queue/requests/{job_id}/result").json()["data"]["target"]["url"]
    for method in ("GET", "HEAD"):
        r = api.send(method, url)
        assert r.status_code == 200, method
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == "sandbox; default-src 'none'"


def test_a_download_named_with_accents_is_named_without_them_for_curl(api: Api) -> None:
    """``curl -OJ`` reads the header's ASCII ``filename`` (not ``filename*``): it saved
    "Beyonc_ - D_j_ Vu_target.wav"; browsers read the UTF-8 one."""
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id, track="Beyoncé - Déjà Vu")
    target = api.get(f"/v1/queue/requests/{job_id}/result").json()["data"]["target"]
    disposition = api.fetch(target["url"]).headers["content-disposition"]
    assert disposition == (
        'attachment; filename="Beyonce - Deja Vu_target.wav"; '
        "filename*=UTF-8''Beyonc%C3%A9%20-%20D%C3%A9j%C3%A0%20Vu_target.wav"
    )


def test_every_get_answers_head_with_its_status_and_headers_and_no_body(api: Api) -> None:
    """RFC 9110: a general-purpose server supports HEAD wherever it supports GET. FastAPI's
    routes named GET alone, so these all answered 405."""
    file_id = api.upload()
    job_id = api.queue_separate(file_id).json()["request_id"]  # queued: it never ends
    for url, key in (
        ("/v1/models", None),
        (f"/v1/files/{file_id}", None),
        (f"/v1/queue/requests/{job_id}/status", None),
        ("/v1/usage", None),
        ("/", None),
        ("/v1/files/file_nothere", None),  # a 404 in the envelope's headers
        ("/v1/models", "dx_wrong"),  # a 401
        ("/api/v1/vocal-removal/record-info?taskId=none", None),  # a vendor's GET
    ):
        get, head = api.get(url, key=key), api.client.head(url, headers=api.headers(key))
        assert head.status_code == get.status_code, url
        assert head.content == b"", url
        assert head.headers["content-type"] == get.headers["content-type"], url
        # As sent: a long answer is gzipped for this client (httpx takes gzip), HEAD or GET.
        for name in ("content-length", "content-encoding"):
            assert head.headers.get(name) == get.headers.get(name), (url, name)
        if "content-encoding" not in get.headers:
            assert head.headers["content-length"] == str(len(get.content)), url
    assert api.client.head("/v1/models").status_code == 401
    # A status stream of a request that never ends: the headers, then the answer is over.
    stream = api.client.head(f"/v1/queue/requests/{job_id}/status/stream", headers=api.headers())
    assert (stream.status_code, stream.content) == (200, b"")
    assert stream.headers["content-type"].startswith("text/event-stream")
    # A path no GET serves is still 405 for HEAD, as for GET.
    assert api.client.head("/v1/queue/audio/separate", headers=api.headers()).status_code == 405


def _raw(api: Api, url: str, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
    """GET ``url``: the answer and its body as sent, not decoded."""
    with api.client.stream("GET", url, headers=headers) as r:
        return r, b"".join(r.iter_raw())


@pytest.mark.backends("sqlite")  # the API's own blob route serves the stem (S3 serves it there)
def test_text_answers_are_gzipped_for_clients_that_take_it_and_audio_and_streams_never(
    api: Api,
) -> None:
    """The web page's scripts and the API's long JSON answers were sent uncompressed (the
    page's first load 122 kB instead of 45 kB, the OpenAPI document 302 kB instead of 19 kB)."""
    gzip_ok = {"Accept-Encoding": "gzip"}
    script = (WEB_DIR / "job.js").read_bytes()
    r, raw = _raw(api, "/web/job.js", gzip_ok)
    assert (r.status_code, r.headers["content-encoding"]) == (200, "gzip")
    assert gzip.decompress(raw) == script and len(raw) < len(script) // 2
    assert r.headers["content-length"] == str(len(raw))
    assert "Accept-Encoding" in r.headers["vary"]
    identity = api.client.get("/web/job.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in identity.headers and identity.content == script
    assert "Accept-Encoding" in identity.headers["vary"]  # a shared cache keeps the two apart
    # The compressed bytes are not the ones the strong tag names.
    assert r.headers["etag"] == f"W/{identity.headers['etag']}"
    # A HEAD says what its GET would.
    head = api.client.head("/web/job.js", headers=gzip_ok)
    assert head.content == b""
    for name in ("content-encoding", "content-length", "etag", "vary"):
        assert head.headers[name] == r.headers[name], name
    # A range of it is the identity bytes'.
    part, raw = _raw(api, "/web/job.js", {**gzip_ok, "Range": "bytes=0-1999"})
    assert part.status_code == 206 and raw == script[:2000]
    assert "content-encoding" not in part.headers
    models, raw = _raw(api, "/v1/models", {**api.headers(), **gzip_ok})
    assert models.headers["content-encoding"] == "gzip" and json.loads(gzip.decompress(raw))
    refused = api.client.get("/v1/openapi.json", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers

    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id)
    url = api.get(f"/v1/queue/requests/{job_id}/result").json()["data"]["target"]["url"]
    stem = api.files.get("mono.wav").path.read_bytes()
    audio, raw = _raw(api, url, gzip_ok)
    assert audio.status_code == 200 and "content-encoding" not in audio.headers and raw == stem
    stream, raw = _raw(api, f"/v1/queue/requests/{job_id}/status/stream?logs=true", {
        **api.headers(), **gzip_ok})  # fmt: skip
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in stream.headers and raw.startswith(b"event: status")


def test_the_pages_files_answer_a_browsers_revalidation_with_304(api: Api) -> None:
    """The page's files say `no-cache`, so a browser asks again at each load with the tag it
    holds: it got every file whole again (122 kB a load) instead of a 304."""
    for url in ("/", "/web/app.js", "/favicon.ico"):
        first = api.client.get(url, headers={"Accept-Encoding": "identity"})
        assert first.status_code == 200, url
        again = api.client.get(url, headers={"If-None-Match": first.headers["etag"]})
        assert (again.status_code, again.content) == (304, b""), url
        assert again.headers["etag"] == first.headers["etag"], url
        assert again.headers["cache-control"] == first.headers["cache-control"], url
    # The gzipped copy's weak tag names the same file; another file's tag does not.
    zipped = api.client.get("/web/app.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["etag"].startswith("W/")
    weak = {"If-None-Match": zipped.headers["etag"]}
    assert api.client.get("/web/app.js", headers=weak).status_code == 304
    assert api.client.get("/web/job.js", headers=weak).status_code == 200


def test_failed_result_carries_the_failure_code(api: Api) -> None:
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.services.queue.claim("w1")
    api.services.queue.fail(
        job_id, "w1", code="INVALID_AUDIO", message="decoding failed", retryable=False
    )
    msg = _error(api.get(f"/v1/queue/requests/{job_id}/result"), 422, "INVALID_AUDIO")
    assert "decoding failed" in msg
    status = api.get(f"/v1/queue/requests/{job_id}/status").json()
    assert status["status"] == "FAILED"
    assert status["error"] == {"code": "INVALID_AUDIO", "message": "decoding failed"}


def _frames(text: str) -> list[tuple[str, dict[str, Any]]]:
    frames = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        frames.append((lines["event"], json.loads(lines["data"])))
    return frames


def test_sse_streams_until_completed(api: Api) -> None:
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.services.queue.claim("test-worker")
    api.services.queue.heartbeat(job_id, "test-worker", progress=0.5)
    # The "worker" finishes once the process's status watcher has read the stream's job six
    # times (every 0.5 s: half the clamped interval), so after the stream's own first read
    # (IN_PROGRESS) whatever the load, and late enough for an unclamped interval to show.
    watcher = api.client.app.state.status_watcher
    reads_before = watcher.reads

    def finish_once_watched() -> None:
        try:
            wait_until(lambda: watcher.reads >= reads_before + 6, 30, "six watcher reads")
        finally:  # the stream ends either way
            api.services.queue.complete(
                job_id, "test-worker", outputs={}, duration=1.5, sample_rate=44100
            )

    done = threading.Thread(target=finish_once_watched)
    done.start()
    started = time.monotonic()
    r = api.get(f"/v1/queue/requests/{job_id}/status/stream?interval=0.01&logs=true")
    elapsed = time.monotonic() - started
    done.join()
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = _frames(r.text)
    assert {event for event, _ in frames} == {"status"}
    assert frames[0][1]["status"] == "IN_PROGRESS" and frames[0][1]["progress"] == 0.5
    assert [f[1]["status"] for f in frames[1:-1]] == ["IN_PROGRESS"] * (len(frames) - 2)
    assert frames[-1][1]["status"] == "COMPLETED" and frames[-1][1]["logs"]
    # interval=0.01 is clamped up to 1 s: at most one periodic frame a second (a frame per
    # watcher read, 2 a second, if it were not); a load can only make them fewer.
    assert 1 <= len(frames) - 2 <= elapsed, (len(frames), elapsed)

    # A finished request: one frame, closed at once.
    r = api.get(f"/v1/queue/requests/{job_id}/status/stream")
    assert [f[1]["status"] for f in _frames(r.text)] == ["COMPLETED"]
    _error(
        api.get(f"/v1/queue/requests/{job_id}/status/stream", key=api.other_key), 404, "NOT_FOUND"
    )


def test_a_status_stream_ends_when_its_key_is_revoked(api: Api) -> None:
    """A stream opened with a key that is revoked meanwhile sends no more status: an error
    frame says why and it closes (it went on until the job ended, forever for a queued one)."""
    from sqlalchemy import select

    from demixer.service.accounts.keys import create_key, revoke_key
    from demixer.service.schema import ApiKey

    _, secret = create_key(api.services.db, account_id=api.account)
    with api.services.db.read() as s:
        key_id = s.execute(select(ApiKey.id).where(ApiKey.prefix == secret[:10])).scalar_one()
    job_id = api.queue_separate(api.upload()).json()["request_id"]  # queued: it never ends
    watcher = api.client.app.state.status_watcher
    reads_before = watcher.reads

    def revoke_once_watched() -> None:
        wait_until(lambda: watcher.reads >= reads_before + 2, 30, "two watcher reads")
        revoke_key(api.services.db, key_id)

    revoking = threading.Thread(target=revoke_once_watched)
    revoking.start()
    r = api.get(f"/v1/queue/requests/{job_id}/status/stream", key=secret)
    revoking.join()
    assert r.status_code == 200
    frames = _frames(r.text)
    assert {event for event, _ in frames[:-1]} == {"status"}
    event, body = frames[-1]
    assert (event, body["error"]["code"]) == ("error", "UNAUTHENTICATED"), frames[-1]


def test_list_pagination_and_other_accounts(api: Api) -> None:
    file_id = api.upload()
    ids = [api.queue_separate(file_id).json()["request_id"] for _ in range(5)]
    theirs = api.post(
        "/v1/queue/audio/separate",
        key=api.other_key,
        json={"input": {"audio_url": "https://example.org/a.mp3", "prompt": "drums"}},
    )
    assert theirs.status_code == 202, theirs.text

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        url = "/v1/queue/requests?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(url).json()
        assert page["object"] == "list" and len(page["data"]) <= 2
        seen += [item["request_id"] for item in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3
    assert all(
        item["status"] == "IN_QUEUE" for item in api.get("/v1/queue/requests").json()["data"]
    )
    _error(api.get("/v1/queue/requests?cursor=%%%"), 400, "INVALID_REQUEST", "cursor")
    # A made-up cursor with a time without its offset was a 500 (compared with UTC times).
    forged = base64.urlsafe_b64encode(json.dumps(["2026-01-01", "req_x"]).encode()).decode()
    _error(api.get(f"/v1/queue/requests?cursor={forged}"), 400, "INVALID_REQUEST", "cursor")
    for when in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):  # no year 0 or 10000
        forged = base64.urlsafe_b64encode(json.dumps([when, "req_x"]).encode()).decode()
        _error(api.get(f"/v1/queue/requests?cursor={forged}"), 400, "INVALID_REQUEST", "cursor")

    other_id = theirs.json()["request_id"]
    for method, path in (
        ("GET", "status"),
        ("GET", "result"),
        ("GET", "status/stream"),
        ("PUT", "cancel"),
        ("DELETE", ""),
    ):
        url = f"/v1/queue/requests/{other_id}/{path}".rstrip("/")
        _error(api.client.request(method, url, headers=api.headers()), 404, "NOT_FOUND")
    assert [
        j["request_id"] for j in api.get("/v1/queue/requests", key=api.other_key).json()["data"]
    ] == [other_id]


def test_delete_request_removes_outputs(api: Api) -> None:
    file_id = api.upload()
    job_id = api.queue_separate(file_id).json()["request_id"]
    api.worker_done(job_id)
    keys = [
        out["url"]
        for out in api.get(f"/v1/queue/requests/{job_id}/result").json()["data"].values()
        if isinstance(out, dict)
    ]
    assert keys and api.services.storage.exists(f"outputs/{job_id}/attempt-1/target.wav")
    assert api.delete(f"/v1/queue/requests/{job_id}").status_code == 204
    assert not api.services.storage.exists(f"outputs/{job_id}/attempt-1/target.wav")
    _error(api.get(f"/v1/queue/requests/{job_id}/status"), 404, "NOT_FOUND")
    _error(api.client.get(keys[0]), 404, "NOT_FOUND")  # the signed URL outlives nothing

    # A running request is cancelled, then deleted; its worker loses the lease.
    running = api.queue_separate(file_id).json()["request_id"]
    api.services.queue.claim("w1")
    assert api.delete(f"/v1/queue/requests/{running}").status_code == 204
    _error(api.get(f"/v1/queue/requests/{running}/status"), 404, "NOT_FOUND")
    from demixer.service.jobs.queue import LeaseLost

    with pytest.raises(LeaseLost):
        api.services.queue.heartbeat(running, "w1")


def test_a_queued_request_is_cancelled_and_deleted_in_one_step(api: Api) -> None:
    """Another reader (a status stream) sees the request queued until it is gone: never the
    CANCELLED that a delete passes through."""
    from sqlalchemy import event, select

    job_id = api.queue_separate(api.upload()).json()["request_id"]
    engine = api.services.db.engine
    seen: list[str | None] = []

    def read_from_elsewhere(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM JOBS "):
            with engine.connect() as other:  # its own connection: what is committed
                seen.append(other.execute(select(Job.status).where(Job.id == job_id)).scalar())

    event.listen(engine, "before_cursor_execute", read_from_elsewhere)
    try:
        assert api.delete(f"/v1/queue/requests/{job_id}").status_code == 204
    finally:
        event.remove(engine, "before_cursor_execute", read_from_elsewhere)
    assert seen == ["IN_QUEUE"]
    _error(api.get(f"/v1/queue/requests/{job_id}/status"), 404, "NOT_FOUND")
