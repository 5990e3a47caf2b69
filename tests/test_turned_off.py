"""An operator who may let nothing leave the network turns off what demixer fetches or sends on
a user's behalf: ``DEMIXER_AUDIO_URLS=false`` (URL inputs), ``DEMIXER_WEBHOOKS=false``
(webhooks, callbacks). Each protocol then refuses a request asking for one, in its own
envelope, before the URL's host is even looked up; a request queued before the switch neither
fetches nor sends.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from api_support import Api, make_api
from demixer.service import urlguard

__all__ = ["make_api"]  # fixtures

SUNOAPI = "/api/v1/vocal-removal/generate"
MUSICGPT = "/api/public/v1/Extraction"
URL = "https://media.example.com/song.mp3"
HOOK = "https://hooks.example.com/demixer"
URLS_OFF = (
    "this server fetches no audio from URLs (its operator turned DEMIXER_AUDIO_URLS off): "
    "upload the file itself"
)
HOOKS_OFF = (
    "this server sends no webhooks or callbacks (its operator turned DEMIXER_WEBHOOKS off): "
    "leave the callback URL out and ask for the request's status instead"
)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host name the URL guard looks up (none is answered: nothing here resolves)."""
    asked: list[str] = []

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "test: no DNS")

    monkeypatch.setattr(urlguard, "getaddrinfo", getaddrinfo)
    return asked


def _native(api: Api, **body: Any) -> Any:
    return api.post("/v1/queue/audio/separate", json=body)


def _musicgpt(api: Api, song: bool = False, **form: str) -> Any:
    headers = {"Authorization": api.key}  # MusicGPT's: the key itself
    song_file = api.files.get("stereo.wav").path
    files = {"audio_file": (song_file.name, song_file.read_bytes(), "audio/wav")} if song else None
    return api.post(MUSICGPT, data={"stems": '["vocals"]', **form}, files=files, headers=headers)


def test_every_protocol_refuses_an_audio_url_in_its_envelope_without_a_lookup(
    make_api: Callable[..., Api], lookups: list[str]
) -> None:
    api = make_api(audio_urls=False)
    native = _native(api, input={"audio_url": URL, "prompt": "vocals"})
    assert native.status_code == 400
    assert native.json()["error"] | {"request_id": None} == {
        "code": "TURNED_OFF",
        "message": URLS_OFF,
        "param": "input.audio_url",
        "request_id": None,
    }
    musicgpt = _musicgpt(api, audio_url=URL)
    assert (musicgpt.status_code, musicgpt.json()) == (
        400,
        {"success": False, "error": "TURNED_OFF", "message": URLS_OFF},
    )
    suno = api.post(SUNOAPI, json={"audioUrl": URL})
    assert (suno.status_code, suno.json()) == (200, {"code": 400, "msg": URLS_OFF, "data": None})
    assert lookups == []


def test_every_protocol_refuses_a_webhook_in_its_envelope_without_a_lookup(
    make_api: Callable[..., Api], lookups: list[str]
) -> None:
    api = make_api(webhooks=False)
    native = _native(api, input={"file_id": api.upload(), "prompt": "vocals"}, webhook_url=HOOK)
    assert (native.status_code, native.json()["error"]["code"]) == (400, "TURNED_OFF")
    assert native.json()["error"]["message"] == HOOKS_OFF
    assert native.json()["error"]["param"] == "webhook.url"
    fal = api.post(
        "/v1/queue/audio/separate",
        params={"fal_webhook": HOOK},
        json={"input": {"file_id": api.upload(), "prompt": "vocals"}},
    )
    assert (fal.status_code, fal.json()["error"]["code"]) == (400, "TURNED_OFF")
    musicgpt = _musicgpt(api, song=True, webhook_url=HOOK)
    assert (musicgpt.status_code, musicgpt.json()) == (
        400,
        {"success": False, "error": "TURNED_OFF", "message": HOOKS_OFF},
    )
    suno = api.post(SUNOAPI, json={"fileId": api.upload(), "callBackUrl": HOOK})
    assert (suno.status_code, suno.json()) == (200, {"code": 400, "msg": HOOKS_OFF, "data": None})
    assert lookups == []
    # Without a URL, the same requests are taken.
    taken = _native(api, input={"file_id": api.upload(), "prompt": "vocals"})
    assert taken.status_code == 202, taken.text
