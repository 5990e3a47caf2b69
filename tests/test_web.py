"""The web page at `/`, driven in Debian's Chromium by Playwright against a real `demixer serve`.

Chromium is a test dependency (`make test` installs it): its absence is a failure, not a skip.
Screenshots of the main states go to `test-artifacts/`.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from playwright.sync_api import Browser, Page, expect, sync_playwright

from audiofiles import decode_stream, stempeg_example
from conftest import Backend
from service_harness import Server, running_server

# On SQLite + local storage and on PostgreSQL + S3 (conftest.py): on S3 the page fetches the
# stems from the bucket (presigned URLs; the bucket's CORS and the page's CSP allow it).
pytestmark = pytest.mark.usefixtures("backend")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
RATE = 44100
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: `make chromium` installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("web")) as s:
        yield s


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """3 s of the MUSDB excerpt (wav) and ~60 s of it looped (flac)."""
    mix = decode_stream(stempeg_example(), 0)
    folder = tmp_path_factory.mktemp("audio")
    short, long = folder / "falcon.wav", folder / "long.flac"
    sf.write(short, mix[:, : 3 * RATE].T, RATE, subtype="PCM_16")
    sf.write(long, np.tile(mix, (1, 10)).T, RATE, subtype="PCM_16")
    return short, long


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors  # no uncaught script errors


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"), full_page=True)


def open_page(page: Page, server: Server) -> None:
    page.goto(server.base_url + "/")
    expect(page.locator("#model-select option")).not_to_have_count(0, timeout=30_000)


def upload(page: Page, path: Path) -> None:
    page.get_by_test_id("upload-input").set_input_files(str(path))
    expect(page.get_by_test_id("upload-status")).to_contain_text("uploaded", timeout=60_000)
    expect(page.get_by_test_id("submit")).to_be_enabled()


def local_key(server: Server) -> str:
    return str(json.loads((server.data_dir / "web-session.json").read_text())["secret"])


def test_separate_listen_mix_and_download(
    page: Page, server: Server, audio: tuple[Path, Path], backend: Backend
) -> None:
    open_page(page, server)
    expect(page.locator("#session-info")).to_have_text("local session")
    shot(page, "start")
    upload(page, audio[0])
    page.locator("#model-select").select_option("spleeter-2stems")
    page.locator("#format-select").select_option("wav")
    page.get_by_test_id("quality-select").select_option("fast")  # not the server's default
    shot(page, "uploaded")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("job-status")).to_have_text("COMPLETED", timeout=180_000)
    assert page.get_by_test_id("job-progress").evaluate("el => el.value") == 100
    shot(page, "completed")

    request_id = page.locator("#job-id").inner_text()
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {local_key(server)}"}
    ) as api:
        result = api.get(f"/v1/queue/requests/{request_id}/result").json()
        assert result["quality"] == "fast"
        result = result["data"]
    outputs = {name for name, value in result.items() if isinstance(value, dict)}
    assert {"vocals", "accompaniment"} <= outputs
    if backend.servers is not None:  # the page loads and mixes stems straight from the bucket
        assert result["vocals"]["url"].startswith(backend.servers.s3_endpoint)
    rows = page.get_by_test_id("stem-row")
    expect(rows).to_have_count(len(outputs), timeout=60_000)
    assert {rows.nth(i).get_attribute("data-stem") for i in range(len(outputs))} == outputs
    shot(page, "mixer")

    # Muting a stem changes the mix: its gain is 0 and the rendered mix loses energy.
    full = page.evaluate("demixerMixer.energy()")
    vocals = page.locator("[data-testid=stem-row][data-stem=vocals]")
    vocals.get_by_test_id("stem-mute").click()
    gains = page.evaluate("demixerMixer.gains()")
    assert gains["vocals"] == 0 and gains["accompaniment"] == 1
    muted = page.evaluate("demixerMixer.energy()")
    assert 0 < muted < 0.98 * full
    vocals.get_by_test_id("stem-mute").click()
    vocals.get_by_test_id("stem-solo").click()
    soloed = page.evaluate("demixerMixer.gains()")
    assert soloed["vocals"] == 1 and soloed["accompaniment"] == 0
    vocals.get_by_test_id("stem-solo").click()
    vocals.get_by_test_id("stem-volume").fill("0.5")
    assert page.evaluate("demixerMixer.gains()")["vocals"] == 0.5

    # Play advances the shared clock; pause stops it.
    page.locator("#play").click()
    page.wait_for_timeout(600)
    page.locator("#play").click()
    assert float(page.locator("#seek").input_value()) > 0.2

    with page.expect_download() as info:
        vocals.get_by_test_id("stem-download").click()
    data = Path(info.value.path()).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    samples, rate = sf.read(io.BytesIO(data), always_2d=True)
    assert rate == RATE and samples.shape == (3 * RATE, 2)

    with page.expect_download() as info:
        page.get_by_test_id("download-all").click()
    with zipfile.ZipFile(info.value.path()) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert len(names) == len(outputs)
        assert sf.read(io.BytesIO(zf.read(names[0])))[1] == RATE

    with page.expect_download() as info:
        page.locator("#render-mix").click()
    mix, rate = sf.read(info.value.path(), always_2d=True)
    assert rate == RATE and mix.shape == (3 * RATE, 2) and np.abs(mix).max() > 0.01

    # History: the request is listed with its state, and can be deleted.
    item = page.get_by_test_id("history-item").filter(has_text="COMPLETED").first
    expect(item).to_be_visible()
    shot(page, "history")


def test_cancel_a_running_job(page: Page, server: Server, audio: tuple[Path, Path]) -> None:
    open_page(page, server)
    upload(page, audio[1])
    page.get_by_test_id("submit").click()
    status = page.get_by_test_id("job-status")
    expect(status).to_have_text(re.compile("IN_QUEUE|IN_PROGRESS"), timeout=30_000)
    shot(page, "running")
    page.get_by_test_id("cancel").click()
    expect(status).to_have_text("CANCELLED", timeout=60_000)
    expect(page.get_by_test_id("cancel")).to_be_disabled()
    expect(page.get_by_test_id("stem-row")).to_have_count(0)
    shot(page, "cancelled")


def test_a_text_file_is_refused_in_words(page: Page, server: Server, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not audio\n" * 50)
    open_page(page, server)
    page.get_by_test_id("upload-input").set_input_files(str(bad))
    error = page.locator("#drop").get_by_test_id("error")
    expect(error).to_contain_text("upload failed", timeout=30_000)
    assert len(error.inner_text()) > 20
    expect(page.get_by_test_id("submit")).to_be_disabled()
    shot(page, "bad-file")


def test_history_delete(page: Page, server: Server) -> None:
    open_page(page, server)
    items = page.get_by_test_id("history-item")
    expect(items.first).to_be_visible()
    before = items.count()
    items.first.get_by_role("button", name="Delete").click()
    expect(items).to_have_count(before - 1)


def test_without_a_local_session_the_page_asks_for_a_key(page: Page, server: Server) -> None:
    page.route("**/v1/session", lambda route: route.fulfill(status=403, body="{}"))
    page.goto(server.base_url + "/")
    key = page.get_by_test_id("api-key")
    expect(key).to_be_visible()
    key.fill("dmx_wrong")
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#key-form").get_by_test_id("error")).to_contain_text("invalid")
    key.fill(server.key)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#model-select option")).not_to_have_count(0)
    assert page.evaluate("localStorage.getItem('demixer.apiKey')") == server.key
    expect(page.locator("#key-section")).to_be_hidden()
    shot(page, "api-key")


def test_the_local_session_is_loopback_only_and_stable(server: Server) -> None:
    url = server.base_url + "/v1/session"
    first = httpx.get(url)
    assert first.status_code == 200, first.text
    key = first.json()["api_key"]
    assert httpx.get(url).json()["api_key"] == key  # stored, not a new key per visit
    session_file = server.data_dir / "web-session.json"
    assert os.stat(session_file).st_mode & 0o077 == 0
    assert key not in server.logs()
    # DNS rebinding (a foreign Host) and other sites' pages (a foreign Origin) get nothing.
    assert httpx.get(url, headers={"Host": "evil.example"}).status_code == 403
    refused = httpx.get(url, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and refused.json()["error"]["code"]
    models = httpx.get(server.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert models.status_code == 200
    page = httpx.get(server.base_url + "/")
    assert page.status_code == 200 and 'data-testid="upload-input"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(server.base_url + "/web/app.js").status_code == 200
    assert httpx.get(server.base_url + "/web/../app.py").status_code == 404
