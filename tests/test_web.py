"""The web page at `/`, driven in Debian's Chromium by Playwright against a real `demixer serve`.

Chromium is a test dependency (`make test` installs it): its absence is a failure, not a skip.
Screenshots of the main states go to `test-artifacts/`.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf
from playwright.sync_api import Browser, Page, expect, sync_playwright

import demixer
from api_support import on_uvicorn
from audiofiles import decode_stream, encode, encode_tracks, stempeg_example, tone
from conftest import Backend
from demixer.models.registry import get_spec
from path_proxy import path_proxy
from service_harness import Server, fast_env, running_server

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
    # As `make run` starts it: with the local session the page uses on this machine.
    # One thread per separation: the cancel test needs a job that is still running when it
    # clicks, and the page's other tests separate only 3 s.
    # An empty model directory: the models installed are Spleeter's (from its package) and
    # those built on it, whatever this machine has pulled, so the picker's lists are known.
    models = tmp_path_factory.mktemp("models")
    env = fast_env(DEMIXER_LOCAL_SESSION="1", DEMIXER_THREADS="1", DEMIXER_MODEL_DIR=str(models))
    with running_server(tmp_path_factory.mktemp("web"), env=env) as s:
        yield s


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """3 s of the MUSDB excerpt (wav) and ~4 min of it looped (flac): long enough that a job
    on it is still running when the cancel test clicks Cancel, on a fast machine too."""
    mix = decode_stream(stempeg_example(), 0)
    folder = tmp_path_factory.mktemp("audio")
    short, long = folder / "Falcon 69.wav", folder / "long.flac"
    sf.write(short, mix[:, : 3 * RATE].T, RATE, subtype="PCM_16")
    sf.write(long, np.tile(mix, (1, 40)).T, RATE, subtype="PCM_16")
    return short, long


DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
SONG = "Falcon 69"  # the short file's name: downloads are named after it


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    yield from _page(browser, viewport=DESKTOP)


@pytest.fixture
def phone(browser: Browser, server: Server) -> Iterator[Page]:
    yield from _page(browser, viewport=PHONE, is_mobile=True, has_touch=True)


def _page(browser: Browser, **options: Any) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True, **options)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors  # no uncaught script errors


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"), full_page=full_page)


def open_page(page: Page, server: Server) -> None:
    page.goto(server.base_url + "/")
    expect(page.locator("#model-select option")).not_to_have_count(0, timeout=30_000)


def upload(page: Page, path: Path) -> None:
    page.get_by_test_id("upload-input").set_input_files(str(path))
    expect(page.get_by_test_id("upload-status")).to_contain_text("Ready", timeout=60_000)


def local_key(server: Server) -> str:
    return str(json.loads((server.data_dir / "web-session.json").read_text())["secret"])


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.evaluate("window.innerWidth"), f"the page is {width} px wide"


def until(page: Page, script: str, timeout: float = 30.0) -> Any:
    """Evaluate ``script`` (a JS arrow function) until it answers something true; returns it.
    (``wait_for_function`` evaluates a string, which the page's CSP rightly refuses.)"""
    deadline = time.monotonic() + timeout
    while not (answer := page.evaluate(script)):
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        page.wait_for_timeout(50)
    return answer


def focused(page: Page, element_id: str) -> None:
    """The keyboard's focus comes to the element (it is not lost on the page's body)."""
    until(page, f"() => document.activeElement.id === {element_id!r}", timeout=30)


# The colours a person sees, from the browser's computed styles: each element from the root to
# the one asked about paints its background over what is under it, and an element's opacity
# blends all it paints (its text too) into what was there before it.
_PAINT = """(el, [prop, pseudo]) => {
  const chain = [];
  for (let e = el; e; e = e.parentElement) {
    const css = getComputedStyle(e);
    chain.unshift([css.backgroundColor, Number(css.opacity)]);
  }
  return [getComputedStyle(el, pseudo)[prop], chain];
}"""


def _rgba(css: str) -> tuple[float, float, float, float]:
    """A computed CSS colour (rgb(), rgba() or color(srgb …)) as 0-1 floats."""
    srgb = re.fullmatch(r"color\(srgb ([\d.e-]+) ([\d.e-]+) ([\d.e-]+)(?: / ([\d.]+))?\)", css)
    if srgb:
        r, g, b, a = srgb.groups()
        return float(r), float(g), float(b), float(a or 1)
    rgb = re.fullmatch(r"rgba?\(([\d.]+), ([\d.]+), ([\d.]+)(?:, ([\d.]+))?\)", css)
    assert rgb, f"a colour this test cannot read: {css}"
    r, g, b, a = rgb.groups()
    return int(r) / 255, int(g) / 255, int(b) / 255, float(a or 1)


def _paint(chain: list[list[Any]], top: str | None) -> tuple[float, ...]:
    """The pixel under an element's text (top: the text's colour) or beside it (top: None)."""
    pixel: tuple[float, ...] = (1.0, 1.0, 1.0)  # the browser's canvas

    def over(colour: str, under: tuple[float, ...]) -> tuple[float, ...]:
        *rgb, a = _rgba(colour)
        return tuple(a * c + (1 - a) * u for c, u in zip(rgb, under, strict=True))

    def paint(k: int, under: tuple[float, ...]) -> tuple[float, ...]:
        background, opacity = chain[k]
        inner = over(background, under)
        if k + 1 < len(chain):
            inner = paint(k + 1, inner)
        elif top is not None:
            inner = over(top, inner)
        return tuple(opacity * i + (1 - opacity) * u for i, u in zip(inner, under, strict=True))

    return paint(0, pixel)


def _luminance(rgb: tuple[float, ...]) -> float:
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(locator: Any, prop: str = "color", pseudo: str | None = None) -> float:
    """WCAG's contrast ratio of an element's text (``prop``: ``color``) against what is under
    it; of its edge (``prop``: ``border-top-color``) against what is outside it."""
    top, chain = locator.evaluate(_PAINT, [prop, pseudo])
    fore = _paint(chain, top)
    back = _paint(chain if prop == "color" else chain[:-1], None)
    light, dark = sorted((_luminance(fore), _luminance(back)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


THEMES = ("dark", "light")  # the system's setting the page follows (dark: also with none)


def readable(locator: Any, at_least: float, prop: str = "color", pseudo: str | None = None) -> None:
    """``contrast()`` is at least ``at_least`` in each theme: the page set to dark, then to
    light, then back to what it was."""
    page = locator.page
    light = page.evaluate("matchMedia('(prefers-color-scheme: light)').matches")
    ratios = {}
    for scheme in THEMES:
        page.emulate_media(color_scheme=scheme)
        ratios[scheme] = round(contrast(locator, prop, pseudo), 2)
    page.emulate_media(color_scheme="light" if light else "dark")
    assert min(ratios.values()) >= at_least, ratios


# The colour a waveform is drawn in, once the canvas shows the one its CSS gives it for the theme
# (mixer.js draws it again when the system turns light or dark); null until then.
_DRAWN = """c => {
  const one = new OffscreenCanvas(1, 1).getContext("2d");
  one.fillStyle = getComputedStyle(c).color;
  one.fillRect(0, 0, 1, 1);
  const want = [...one.getImageData(0, 0, 1, 1).data].slice(0, 3);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] === 255) return want.every((v, k) => v === d[i + k]) && `rgb(${want.join(", ")})`;
  }
  return null;
}"""


def waveform_contrast(wave: Any) -> float:
    """WCAG's contrast ratio of a stem's drawn waveform against the ground it is drawn on."""
    deadline = time.monotonic() + 10
    while not (drawn := wave.locator("canvas").evaluate(_DRAWN)):
        assert time.monotonic() < deadline, "the waveform is not drawn in its theme's colour"
        time.sleep(0.05)
    _, chain = wave.evaluate(_PAINT, ["color", None])
    fore, back = _luminance(_paint(chain, drawn)), _luminance(_paint(chain, None))
    light, dark = max(fore, back), min(fore, back)
    return (light + 0.05) / (dark + 0.05)


def band_contrast(part: Any, against: Any) -> float:
    """WCAG's contrast ratio of what ``part`` paints (its background over what is under it)
    against what ``against`` (an element around it) paints there."""
    over = _paint(part.evaluate(_PAINT, ["color", None])[1], None)
    under = _paint(against.evaluate(_PAINT, ["color", None])[1], None)
    light, dark = sorted((_luminance(over), _luminance(under)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def in_view(page: Page, testid: str) -> None:
    """Part of it is on screen, where the user is: no scrolling needed to notice it."""
    expect(page.get_by_test_id(testid)).to_be_in_viewport(timeout=10_000)


def test_separate_listen_mix_and_download(
    page: Page, server: Server, audio: tuple[Path, Path], backend: Backend
) -> None:
    open_page(page, server)
    expect(page.get_by_test_id("session-info")).to_contain_text("account acct_")
    no_sideways_scroll(page)
    expect(page.get_by_test_id("submit")).to_be_disabled()
    expect(page.get_by_test_id("submit-hint")).to_have_text("First choose a song.")
    shot(page, "start")
    upload(page, audio[0])
    page.locator("#model-select").select_option("spleeter-2stems")
    page.locator("#format-select").select_option("wav")
    page.get_by_test_id("quality-select").select_option("fast")  # not the server's default
    shot(page, "uploaded")
    # In either theme, words on the accent colour read at 4.5:1 (the chosen tab, "Choose a
    # file", Separate), and so do the words on the card and the page; a text field's edge shows
    # at 3:1 on its card (WCAG 1.4.3, 1.4.11).
    for words in (".tab:has(input:checked)", ".drop .button", "#submit", "#drop-title"):
        readable(page.locator(words), 4.5)
    for words in (".drop .muted", "#upload-text", ".field", "#session-info", "#switch-key"):
        readable(page.locator(words).first, 4.5)
    for words in (".chip", "#more-models summary", "#submit-hint"):
        readable(page.locator(words).first, 4.5)
    for field in ("#api-key", "#prompt", "#model-select"):
        readable(page.locator(field), 3, "border-top-color")
    page.get_by_test_id("submit").click()

    # The mixer comes up where the user is, with the song's length before any play.
    rows = page.get_by_test_id("stem-row")
    expect(rows).to_have_count(2, timeout=180_000)
    in_view(page, "mixer")
    # The job's card went, with the focus in it: the focus is on the mixer's heading now, and
    # a screen reader is told.
    focused(page, "mixer-title")
    expect(page.get_by_test_id("announce")).to_have_text(
        f"{SONG}.wav: ready. The stems are in the mixer."
    )
    expect(page.get_by_test_id("job")).to_be_hidden()
    expect(page.get_by_test_id("time")).to_have_text("0:00 / 0:03")
    no_sideways_scroll(page)
    shot(page, "mixer", full_page=False)
    # A stem's name, in its colour, reads at 4.5:1 in either theme; its waveform shows at 3:1
    # (WCAG 1.4.11) on its ground, drawn again in the theme's colours when the system turns.
    for row in rows.all():
        readable(row.locator(".name"), 4.5)
        for scheme in THEMES:
            page.emulate_media(color_scheme=scheme)
            drawn = waveform_contrast(row.locator(".wave"))
            assert drawn >= 3, (scheme, row.get_attribute("data-stem"), drawn)
    page.emulate_media(color_scheme="light")  # Playwright's own, as the page was opened
    # One time axis: the loop ruler spans exactly the waveforms' column.
    ruler_box = page.get_by_test_id("ruler").bounding_box()
    wave_box = rows.first.locator(".wave").bounding_box()
    assert ruler_box is not None and wave_box is not None
    assert ruler_box["x"] == pytest.approx(wave_box["x"], abs=1)
    assert ruler_box["width"] == pytest.approx(wave_box["width"], abs=1)

    # Both stems asked for: no residual, and no silent stem.
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.key}"}
    ) as api:  # the key serve printed sees what the page made: one account
        listed = api.get("/v1/queue/requests", params={"limit": 1}).json()["data"][0]
        request_id = listed["request_id"]
        assert listed["quality"] == "fast"  # the page's Quality choice reached the request
        result = api.get(f"/v1/queue/requests/{request_id}/result").json()["data"]
    outputs = {name for name, value in result.items() if isinstance(value, dict)}
    assert outputs == {"vocals", "accompaniment"}
    assert {rows.nth(i).get_attribute("data-stem") for i in range(2)} == outputs
    loudness = page.evaluate(
        "demixerMixer.stems.map(s => { const d = s.buffer.getChannelData(0);"
        " let e = 0; for (const v of d) e += v * v; return Math.sqrt(e / d.length); })"
    )
    assert min(loudness) > 1e-3, loudness
    if backend.servers is not None:  # the page loads and mixes stems straight from the bucket
        assert result["vocals"]["url"].startswith(backend.servers.s3_endpoint)

    # Mute, solo, volume in dB: the mix changes and silenced stems look silenced.
    full = page.evaluate("demixerMixer.energy()")
    vocals = page.locator("[data-testid=stem-row][data-stem=vocals]")
    vocals.get_by_test_id("stem-mute").click()
    expect(vocals).to_have_class(re.compile(r"\bsilenced\b"))
    # Silenced, the row's waveform dims; its name, its level and the Mute that turns the sound
    # back on stay readable.
    for part in (".name", "[data-testid=stem-db]", "[data-testid=stem-mute]"):
        readable(vocals.locator(part), 4.5)
    # In a contrast theme (its colours, no fills), the pressed Mute shows by a thicker edge.
    page.emulate_media(forced_colors="active")
    edge = "el => parseFloat(getComputedStyle(el).borderTopWidth)"
    pressed = vocals.get_by_test_id("stem-mute").evaluate(edge)
    assert pressed >= 3 > vocals.get_by_test_id("stem-solo").evaluate(edge)
    # There the playhead (a fill the theme would clear) stays drawn, in the theme's text colour
    # against the track's (the ruler's, and the row that is not muted).
    heard = page.locator("[data-testid=stem-row][data-stem=accompaniment]")
    for track in (page.get_by_test_id("ruler"), heard):
        assert band_contrast(track.locator(".playhead"), against=track) >= 3, track
    page.emulate_media(forced_colors="none")
    gains = page.evaluate("demixerMixer.gains()")
    assert gains["vocals"] == 0 and gains["accompaniment"] == 1
    muted = page.evaluate("demixerMixer.energy()")
    assert 0 < muted < 0.98 * full
    vocals.get_by_test_id("stem-mute").click()
    vocals.get_by_test_id("stem-solo").click()
    readable(vocals.get_by_test_id("stem-solo"), 4.5)  # pressed
    other = page.locator("[data-testid=stem-row][data-stem=accompaniment]")
    expect(other).to_have_class(re.compile(r"\bsilenced\b"))
    expect(vocals).not_to_have_class(re.compile(r"\bsilenced\b"))
    soloed = page.evaluate("demixerMixer.gains()")
    assert soloed["vocals"] == 1 and soloed["accompaniment"] == 0
    vocals.get_by_test_id("stem-solo").click()
    vocals.get_by_test_id("stem-volume").fill("-6")
    expect(vocals.get_by_test_id("stem-db")).to_have_text("-6.0 dB")
    # A screen reader hears the slider's stem and its level in dB, once.
    expect(vocals.get_by_role("slider", name="vocals volume", exact=True)).to_have_attribute(
        "aria-valuetext", "-6.0 dB"
    )
    assert page.evaluate("demixerMixer.gains()")["vocals"] == pytest.approx(0.501, abs=1e-3)

    # Drag on a waveform (press at 10 %, move to 80 %, let go): the playhead follows the
    # pointer and stays where it is let go, within two pixels of the waveform.
    wave = other.locator(".wave")
    box = wave.bounding_box()
    assert box is not None
    head = other.locator(".playhead")
    pixel = 3.0 / box["width"]  # one pixel of the waveform, in seconds of the 3 s song
    middle = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.1 * box["width"], middle)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.8 * box["width"], middle, steps=8)
    assert page.evaluate("demixerMixer.position()") == pytest.approx(2.4, abs=2 * pixel)
    page.mouse.up()
    assert page.evaluate("demixerMixer.position()") == pytest.approx(2.4, abs=2 * pixel)
    expect(page.get_by_test_id("time")).to_have_text("0:02 / 0:03")
    left = head.evaluate("el => parseFloat(el.style.left)")
    assert left == pytest.approx(80, abs=2 * 100 / box["width"])
    assert page.evaluate("demixerMixer.playing") is False  # a drag while paused stays paused

    # The Position slider seeks from the keyboard, and says where the song is in words.
    position = page.get_by_role("slider", name="Position", exact=True)
    position.fill("2")
    assert page.evaluate("demixerMixer.position()") == pytest.approx(2)
    expect(page.get_by_test_id("time")).to_have_text("0:02 / 0:03")
    expect(position).to_have_attribute("aria-valuetext", "0:02 of 0:03")
    position.press("Home")
    expect(position).to_have_attribute("aria-valuetext", "0:00 of 0:03")
    assert page.evaluate("demixerMixer.position()") == 0

    # Click on a waveform: the playhead goes there. Clicked where the wave is now, as a user
    # does (at a fraction of its width; Playwright scrolls it into view first): the page may
    # have scrolled since its box was measured (Play scrolls itself into view).
    width, height = box["width"], box["height"]

    def click_wave(fraction: float) -> None:
        wave.click(position={"x": fraction * width, "y": height / 2})

    click_wave(0.5)
    assert page.evaluate("demixerMixer.position()") == pytest.approx(1.5, abs=0.1)
    expect(page.get_by_test_id("time")).to_have_text("0:01 / 0:03")
    assert head.evaluate("el => parseFloat(el.style.left)") == pytest.approx(50, abs=3)

    # Play: the shared clock and the playheads move; space pauses.
    page.get_by_test_id("play").click()
    until(page, "() => demixerMixer.position() > 1.8")
    assert head.evaluate("el => parseFloat(el.style.left)") > 55
    page.keyboard.press("Space")
    assert page.evaluate("demixerMixer.playing") is False
    paused = page.evaluate("demixerMixer.position()")
    page.keyboard.press("Space")
    assert page.evaluate("demixerMixer.playing") is True
    assert page.evaluate("demixerMixer.position()") >= paused

    # A loop: drag along the ruler over 20-60 % of the song; playback stays inside and wraps.
    ruler = page.get_by_test_id("ruler").bounding_box()
    assert ruler is not None
    y = ruler["y"] + ruler["height"] / 2
    page.mouse.move(ruler["x"] + 0.2 * ruler["width"], y)
    page.mouse.down()
    page.mouse.move(ruler["x"] + 0.6 * ruler["width"], y, steps=5)
    page.mouse.up()
    loop = page.evaluate("demixerMixer.loop")
    assert (
        loop["on"] is True and page.get_by_test_id("loop").get_attribute("aria-pressed") == "true"
    )
    readable(page.get_by_test_id("loop"), 4.5)  # pressed
    # The looped part is a band on the ruler in either theme, not two thin edges (1.1:1 in light).
    region = page.locator("#loop-region")
    for scheme in THEMES:
        page.emulate_media(color_scheme=scheme)
        assert band_contrast(region, against=page.get_by_test_id("ruler")) >= 1.5, scheme
    page.emulate_media(color_scheme="light")
    assert (loop["start"], loop["end"]) == (
        pytest.approx(0.6, abs=0.05),
        pytest.approx(1.8, abs=0.05),
    )
    page.evaluate(
        "window.seen = []; window.wrapped = false; setInterval(() => {"
        " const p = demixerMixer.position(); const last = seen[seen.length - 1];"
        " if (last !== undefined && p < last - 0.3) wrapped = true; seen.push(p); }, 30)"
    )
    until(page, "() => wrapped", timeout=15)
    seen = page.evaluate("seen")
    assert min(seen) >= loop["start"] - 0.05 and max(seen) <= loop["end"] + 0.05
    shot(page, "loop", full_page=False)

    # The same from the keyboard: [ starts the loop at the playhead and ] ends it there.
    page.keyboard.press("Space")  # pause, so the playhead stays where it is put
    assert page.evaluate("demixerMixer.playing") is False
    click_wave(0.25)
    page.keyboard.press("[")
    assert page.evaluate("demixerMixer.loop") == {
        "on": True,
        "start": pytest.approx(0.75, abs=2 * pixel),
        "end": pytest.approx(loop["end"], abs=1e-6),  # the old end is still after it
    }
    click_wave(0.9)
    page.keyboard.press("]")
    keyed = page.evaluate("demixerMixer.loop")
    assert (keyed["start"], keyed["end"]) == (
        pytest.approx(0.75, abs=2 * pixel),
        pytest.approx(2.7, abs=2 * pixel),
    )
    shade = page.locator("#loop-region")
    expect(shade).to_be_visible()
    assert shade.evaluate("el => parseFloat(el.style.left)") == pytest.approx(25, abs=1)
    assert shade.evaluate("el => parseFloat(el.style.width)") == pytest.approx(65, abs=1)
    # ] before the loop's start: the loop runs from the song's start to there.
    click_wave(0.1)
    page.keyboard.press("]")
    keyed = page.evaluate("demixerMixer.loop")
    assert (keyed["start"], keyed["end"]) == (0, pytest.approx(0.3, abs=2 * pixel))
    # Keys pressed on a control outside the mixer are that control's (WCAG 2.1.4): on a song's
    # button in the history, an arrow, L, [ or ] moves and loops nothing.
    mix_state = "[demixerMixer.position(), demixerMixer.loop]"
    before_keys = page.evaluate(mix_state)
    page.get_by_test_id("history-item").first.locator("button").first.focus()
    for key in ("ArrowRight", "ArrowLeft", "l", "[", "]"):
        page.keyboard.press(key)
    assert page.evaluate(mix_state) == before_keys
    # The loop's ends from buttons, at the Position slider's spot, said to a screen reader.
    position.fill("1")
    page.get_by_role("button", name="Loop from here").click()
    position.fill("2")
    page.get_by_role("button", name="Loop to here").click()
    assert page.evaluate("demixerMixer.loop") == {"on": True, "start": 1, "end": 2}
    expect(page.get_by_test_id("announce")).to_have_text("Loop 0:01 to 0:02")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("L")  # off again
    expect(page.get_by_test_id("loop")).to_have_attribute("aria-pressed", "false")
    # And on: the song wraps inside 0:01-0:02 while A/B is tried below, never ending (played
    # on from 0:02, it ended within a second, and a slow run then saw it stopped).
    page.keyboard.press("L")
    expect(page.get_by_test_id("loop")).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("Space")
    assert page.evaluate("demixerMixer.playing") is True

    # A/B with the original (uploaded in this tab): while it plays, the button switches what
    # is heard from the stems to the song as it was, and back to the mix as it was set.
    ab = page.get_by_test_id("ab")
    expect(ab).to_be_enabled()
    expect(page.get_by_test_id("ab-note")).to_have_text(
        "Original: hear the song as it was, at the same spot."
    )
    heard = (
        "() => ({stems: demixerMixer.gains(), playing: demixerMixer.playing,"
        " original: demixerMixer.originalGain.gain.value})"
    )
    ab.click()
    expect(ab).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id("stems")).to_have_class(re.compile(r"\bab-original\b"))
    # Not heard while the original plays: the waveforms dim, the names and levels do not.
    for part in (vocals.locator(".name"), other.get_by_test_id("stem-db"), ab):
        readable(part, 4.5)
    assert page.evaluate(heard) == {
        "stems": {"vocals": 0, "accompaniment": 0},
        "original": 1,
        "playing": True,
    }
    ab.click()
    expect(ab).to_have_attribute("aria-pressed", "false")
    expect(page.get_by_test_id("stems")).not_to_have_class(re.compile(r"\bab-original\b"))
    back = page.evaluate(heard)
    assert back["original"] == 0 and back["playing"] is True
    assert back["stems"] == pytest.approx({"vocals": 0.501, "accompaniment": 1}, abs=1e-3)
    # Space on a focused control is that control's own (here A/B, just clicked); elsewhere
    # it plays and pauses.
    page.keyboard.press("Space")
    expect(ab).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("demixerMixer.playing") is True
    ab.click()
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("Space")
    assert page.evaluate("demixerMixer.playing") is False

    # Downloads are named after the song.
    with page.expect_download() as info:
        vocals.get_by_test_id("stem-download").click()
    assert info.value.suggested_filename == f"{SONG}_vocals.wav"
    data = Path(info.value.path()).read_bytes()
    samples, rate = sf.read(io.BytesIO(data), always_2d=True)
    assert rate == RATE and samples.shape == (3 * RATE, 2)
    with page.expect_download() as info:
        page.get_by_test_id("download-all").click()
    assert info.value.suggested_filename == f"{SONG}_stems.zip"
    with zipfile.ZipFile(info.value.path()) as zf:
        assert zf.testzip() is None
        assert sorted(zf.namelist()) == [f"{SONG}_accompaniment.wav", f"{SONG}_vocals.wav"]
    with page.expect_download() as info:
        page.get_by_test_id("render-mix").click()
    assert info.value.suggested_filename == f"{SONG}_mix.wav"
    mix, rate = sf.read(info.value.path(), always_2d=True)
    assert rate == RATE and mix.shape == (3 * RATE, 2) and np.abs(mix).max() > 0.01
    # With the original on, the mix heard and downloaded is the uploaded song, sample for
    # sample.
    ab.click()
    with page.expect_download() as info:
        page.get_by_test_id("render-mix").click()
    as_heard, rate = sf.read(info.value.path(), always_2d=True, dtype="int16")
    uploaded, _ = sf.read(audio[0], always_2d=True, dtype="int16")
    assert rate == RATE and as_heard.shape == uploaded.shape
    assert np.array_equal(as_heard, uploaded)
    ab.click()
    expect(ab).to_have_attribute("aria-pressed", "false")

    # History: the song, its length, its stems, its state in words, thumbnails of its stems.
    item = page.get_by_test_id("history-item").first
    expect(item.locator(".song")).to_have_text(f"{SONG}.wav")
    expect(item).to_contain_text("0:03 · vocals, accompaniment")
    expect(item.get_by_test_id("history-state")).to_have_text("Ready")
    readable(item.get_by_test_id("history-state"), 4.5)
    expect(item.locator(".thumb")).to_have_count(2)
    shot(page, "history")

    # Open from the history, from the top of the page: the mixer comes into view again.
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#mixer").evaluate("el => el.hidden = true")
    item.get_by_role("button", name=f"Open {SONG}.wav").click()
    expect(rows).to_have_count(2, timeout=60_000)
    in_view(page, "mixer")
    focused(page, "mixer-title")  # the view opened, not a button gone with its list
    assert page.evaluate("demixerMixer.loop.on") is False  # a fresh player
    # Opened from the history, the song was not uploaded in this tab: no original to compare
    # with, and the page says so beside the A/B button.
    expect(ab).to_be_disabled()
    expect(page.get_by_test_id("ab-note")).to_have_text(
        "Original: not here, because this song was not uploaded in this tab."
    )
    expect(page.get_by_test_id("ab-note")).to_be_visible()
    # A signed URL is a credential: the server's log has none. Each stem's is fetched here
    # once more; through this server (local storage) the request is logged with its signature
    # cut out, and from the bucket (S3) the server sees nothing of it.
    for name in sorted(outputs):
        url = result[name]["url"]
        assert httpx.get(url).status_code == 200
        query = parse_qs(urlsplit(url).query)
        secret = (query.get("sig") or query["X-Amz-Signature"])[0]
        if backend.servers is None:
            redacted = f'expires={query["expires"][0]}&sig=… HTTP/1.1" 200'
            deadline = time.monotonic() + 10
            while redacted not in server.logs():  # the access log is written just after
                assert time.monotonic() < deadline, f"no request logged with {redacted}"
                time.sleep(0.05)
        assert secret not in server.logs()
    assert not re.search(r"sig=[A-Za-z0-9_-]{6}", server.logs())

    # A new separation takes the mixer off the screen: what it played stops with it.
    page.get_by_test_id("play").click()
    assert page.evaluate("demixerMixer.playing") is True
    page.evaluate(
        "window.playingWhenHidden = null; const box = document.querySelector('#mixer');"
        " new MutationObserver(() => { if (box.hidden && playingWhenHidden === null)"
        " playingWhenHidden = demixerMixer.playing; }).observe(box, {attributes: true})"
    )
    page.get_by_test_id("submit").click()
    until(page, "() => playingWhenHidden !== null")
    assert page.evaluate("playingWhenHidden") is False


def test_cancel_a_running_job_shows_its_stage_and_time_left_first(
    page: Page, server: Server, audio: tuple[Path, Path]
) -> None:
    open_page(page, server)
    upload(page, audio[1])
    # At the best quality (several passes) the 4-minute song separates for some 13 s here on
    # one thread: time for the page to see the pace (two progress updates, 2 s apart) and say
    # the time left, with room for a machine several times faster.
    page.get_by_test_id("quality-select").select_option("best")
    page.get_by_test_id("submit").click()
    status = page.get_by_test_id("job-status")
    in_view(page, "job")
    # Separate is disabled now: the focus went on to the job, not back to the top of the page.
    until(page, "() => document.activeElement.id === 'job-title'")
    # While it runs, Separate waits (a second click would submit it again).
    expect(page.get_by_test_id("submit")).to_be_disabled()
    expect(page.get_by_test_id("submit-hint")).to_contain_text("being separated")
    # The stage in words and the progress, from inside the first window, before it is done.
    expect(status).to_have_text("Separating", timeout=60_000)
    expect(page.get_by_test_id("job-model")).to_have_text("Model: spleeter-2stems")  # the first
    # Reloaded mid-job, the page follows it again (and its history keeps itself fresh).
    page.reload()
    expect(page.get_by_test_id("job")).to_be_visible(timeout=30_000)
    expect(status).to_have_text("Separating", timeout=30_000)
    expect(page.get_by_test_id("history-state").first).to_have_text("Separating")
    # A status said once: #job-status is a live region, and each write is said again.
    page.evaluate(
        "window.said = []; new MutationObserver((changes) => changes.forEach((c) =>"
        " c.addedNodes.forEach((n) => said.push(n.textContent))))"
        ".observe(document.querySelector('#job-status'), {childList: true})"
    )
    # The list refreshes itself while the song separates: a focus on one of its buttons stays
    # on that button, and on the same element while its row reads the same.
    page.evaluate(
        "window.listDone = false; new MutationObserver((changes) => { if (changes.some((c) =>"
        " c.type === 'childList' || !c.target.hasAttribute('aria-busy'))) listDone = true; })"
        ".observe(document.querySelector('#history-list'), {childList: true, subtree: true,"
        " attributeFilter: ['aria-busy']})"
    )
    button = page.get_by_test_id("history-item").first.locator("button").first  # its Open
    button.focus()
    button_id, looks = button.evaluate(
        "el => { el.focusedByTest = true; listDone = false;"
        " return [el.id, el.closest('li').dataset.looks]; }"
    )
    until(page, "() => listDone")  # the next refresh, whatever it changed
    kept = page.evaluate(
        "() => { const el = document.activeElement;"
        " return [el.id, el.focusedByTest === true, el.closest('li')?.dataset.looks]; }"
    )
    assert button_id and kept[0] == button_id, kept
    assert kept[1] or kept[2] != looks, kept
    until(
        page,
        "() => { const v = document.querySelector('#job-progress').value;"
        " return v > 0 && v < 100; }",
        timeout=60,
    )
    expect(page.get_by_test_id("job-detail")).to_contain_text("%")
    # Then the time left, from the pace so far, shown with the stage before it is done (one
    # look at the three, so they are from the same moment).
    seen = until(
        page,
        "() => { const detail = document.querySelector('#job-detail').textContent;"
        " return / left$/.test(detail) && {detail,"
        " status: document.querySelector('#job-status').textContent,"
        " progress: document.querySelector('#job-progress').value}; }",
        timeout=60,
    )
    assert seen["status"] == "Separating"
    assert 0 < seen["progress"] < 100
    left = r"(a few seconds|about \d+ s|about \d+ min) left"
    assert re.fullmatch(rf"{seen['progress']} % · {left}", seen["detail"]), seen
    page.get_by_test_id("cancel").click()
    focused(page, "job-title")  # Cancel is disabled now: the focus is not lost with it
    expect(status).to_have_text("Cancelled", timeout=60_000)
    expect(page.get_by_test_id("cancel")).to_be_disabled()
    said = page.evaluate("said")
    assert said[-1] == "Cancelled" and all(a != b for a, b in itertools.pairwise(said)), said
    expect(page.get_by_test_id("stem-row")).to_have_count(0)
    # Separate no longer waits for it; the reload left no song chosen, and it says so.
    expect(page.get_by_test_id("submit-hint")).to_have_text("First choose a song.")
    body = page.locator("body").inner_text()
    for word in ("IN_PROGRESS", "CANCELLATION_REQUESTED", "IN_QUEUE", "Request req_", "vm:"):
        assert word not in body
    shot(page, "cancelled")


def test_a_text_file_is_refused_in_words_and_a_new_upload_starts_clean(
    page: Page, server: Server, tmp_path: Path, audio: tuple[Path, Path]
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not audio\n" * 50)
    open_page(page, server)
    # Tabbing to the file picker shows where the focus is: on "Choose a file".
    for _ in range(10):
        if page.evaluate("document.activeElement.id") == "upload-input":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "upload-input"
    ring = "getComputedStyle(document.querySelector('.drop-target')).outlineStyle"
    assert page.evaluate(ring) == "solid"
    page.get_by_test_id("upload-input").set_input_files(str(bad))
    error = page.locator("#drop").get_by_test_id("error")
    expect(error).to_have_text(re.compile(r"can't be (read as audio|separated)"), timeout=30_000)
    assert "INVALID_AUDIO" not in error.inner_text() and "UNSUPPORTED" not in error.inner_text()
    # It belongs to the file picker: back on it, a screen reader hears the file was refused.
    picker = page.get_by_test_id("upload-input")
    expect(picker).to_have_attribute("aria-invalid", "true")
    expect(picker).to_have_accessible_description(re.compile(r"can't be (read as audio|separated)"))
    expect(page.get_by_test_id("upload-progress")).to_be_hidden()  # no full bar beside it
    expect(page.get_by_test_id("submit")).to_be_disabled()
    shot(page, "bad-file")
    upload(page, audio[0])
    expect(error).to_be_hidden()
    expect(picker).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("submit")).to_be_enabled()
    # Nothing ticked is nothing to do: Separate says so instead of running the whole model.
    for chip in page.locator("#stem-choices input").all():
        chip.uncheck()
    expect(page.get_by_test_id("submit")).to_be_disabled()
    expect(page.get_by_test_id("submit-hint")).to_have_text("Pick at least one stem.")
    # A sound no installed model separates: the page says what can be separated instead.
    page.get_by_label("Describe a sound").check()
    # What can be separated is said with the field, not only printed under it.
    expect(page.get_by_test_id("prompt")).to_have_accessible_description(
        re.compile(r"^This server can separate: .*vocals")
    )
    page.get_by_test_id("prompt").fill("a kazoo solo")
    page.get_by_test_id("submit").click()
    said = page.locator("#job-form").get_by_test_id("error")
    expect(said).to_contain_text("That can't be separated as described. Cannot tell which sound")
    expect(said).to_contain_text("demixer can separate: vocals")


def test_a_proxys_own_refusal_is_said_in_words(
    page: Page, server: Server, audio: tuple[Path, Path]
) -> None:
    """Behind a reverse proxy (nginx takes 1 MB by default), a song too big for the proxy came
    back as its HTML page, not the API's JSON: the page said "Something went wrong. Try again.
    (HTTP_413)", and trying again fails the same way."""
    page.route(
        "**/v1/files",
        lambda route: route.fulfill(
            status=413, content_type="text/html", body="<h1>413 Request Entity Too Large</h1>"
        ),
    )
    open_page(page, server)
    page.get_by_test_id("upload-input").set_input_files(str(audio[0]))
    error = page.locator("#drop").get_by_test_id("error")
    expect(error).to_have_text("This file is bigger than this server takes.")


@pytest.mark.backends("sqlite")  # the page's own check: the same on either backend
def test_a_file_over_the_servers_limit_is_refused_before_it_is_sent(
    browser: Browser, tmp_path: Path, audio: tuple[Path, Path]
) -> None:
    """A song over the server's upload limit went up whole (minutes, on a slow line) before
    the server's 413 came back as "bigger than this server takes", without saying the limit."""
    env = fast_env(DEMIXER_LOCAL_SESSION="1", DEMIXER_MAX_UPLOAD_BYTES=str(300 * 1024))
    sent: list[str] = []  # the requests that began an upload
    with running_server(tmp_path / "small", env=env) as small:
        for page in _page(browser, viewport=DESKTOP):
            page.on(
                "request",
                lambda r: (
                    sent.append(r.url) if r.method == "POST" and "/v1/files" in r.url else None
                ),
            )
            open_page(page, small)
            page.get_by_test_id("upload-input").set_input_files(str(audio[0]))  # over 500 KB
            error = page.locator("#drop").get_by_test_id("error")
            expect(error).to_have_text(
                "This file is bigger than this server takes. The most it takes is 300 KB."
            )
            # A video, the most common file this big: the page says how to send its sound.
            video = tmp_path / "phone.mov"
            video.write_bytes(bytes(400 * 1024))
            page.get_by_test_id("upload-input").set_input_files(str(video))
            expect(error).to_have_text(
                "This file is bigger than this server takes. The most it takes is 300 KB. Only "
                "a video's sound is separated: save its sound alone (as .m4a, a small part of "
                "the size) and upload that."
            )
            assert sent == []
            expect(page.get_by_test_id("submit")).to_be_disabled()


@pytest.mark.backends("sqlite")  # the decoder's fold, the page's words: on either backend alike
def test_a_surround_video_track_is_folded_to_stereo_and_said_so(
    page: Page, server: Server, tmp_path: Path, audio: tuple[Path, Path]
) -> None:
    """A film's 5.1 sound: the API refuses more than 2 channels unless asked to fold them,
    so the page asks, and says it did."""
    mix, _ = sf.read(audio[0], dtype="float32", always_2d=True)
    surround = tmp_path / "film.wav"
    sf.write(surround, np.concatenate([mix, mix, mix * 0.5], axis=1), RATE, subtype="PCM_16")
    open_page(page, server)
    upload(page, surround)
    expect(page.get_by_test_id("upload-status")).to_have_text(
        "Ready: film.wav · 0:03 · 6 channels, folded to stereo"
    )
    shot(page, "surround", full_page=False)
    page.set_viewport_size(PHONE)
    no_sideways_scroll(page)  # the longer line wraps
    shot(page, "phone-surround", full_page=False)
    page.set_viewport_size(DESKTOP)
    page.locator("#model-select").select_option("spleeter-2stems")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=180_000)
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.key}"}
    ) as api:
        listed = api.get("/v1/queue/requests", params={"limit": 1}).json()["data"][0]
        result = api.get(f"/v1/queue/requests/{listed['request_id']}/result").json()["data"]
        status_url = f"/v1/queue/requests/{listed['request_id']}/status"
        logged = api.get(status_url, params={"logs": "true"}).json()["logs"][-1]["message"]
    vocals = httpx.get(result["vocals"]["url"], timeout=60)
    assert sf.info(io.BytesIO(vocals.content)).channels == 2
    # Folded, this film peaks above full scale (its centre and surrounds add to each side):
    # the page asks for rescale, so its 16-bit stems were turned down together, not clipped.
    assert re.fullmatch(
        r"completed: vocals, accompaniment; every output scaled by 0\.\d{3} so that none "
        r"clips \(input\.rescale\)",
        logged,
    ), logged
    gain = result["vocals"]["gain"]  # the result says it, for the page and other clients
    assert result["accompaniment"]["gain"] == gain and f"by {gain:.3f} so" in logged
    # The mixer says so, and plays the original at the same gain: A/B compares the sound.
    expect(page.get_by_test_id("ab-note")).to_have_text(
        "Original: hear the song as it was, at the same spot. The stems were turned down "
        f"together by {-20 * math.log10(gain):.1f} dB so that none clips; the original plays "
        "at the same level."
    )
    assert page.evaluate("window.demixerMixer.originalLevel") == gain
    page.get_by_test_id("ab-note").scroll_into_view_if_needed()
    shot(page, "mixer-rescaled", full_page=False)
    page.set_viewport_size(PHONE)
    no_sideways_scroll(page)  # the longer note wraps
    page.get_by_test_id("ab-note").scroll_into_view_if_needed()
    shot(page, "phone-mixer-rescaled", full_page=False)
    page.set_viewport_size(DESKTOP)
    # The next file, in stereo, is not folded: nothing is said, and nothing is asked.
    upload(page, audio[0])
    expect(page.get_by_test_id("upload-status")).to_have_text("Ready: Falcon 69.wav · 0:03")
    clip = tmp_path / "clip.wav"  # under a second: its length in tenths, not "0:00"
    sf.write(clip, mix[: round(0.2 * RATE)], RATE)
    upload(page, clip)
    expect(page.get_by_test_id("upload-status")).to_have_text("Ready: clip.wav · 0.2 s")
    # Its mixer's clock has tenths too: a one-shot sample's playhead is not "0:00 / 0:00".
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("time")).to_have_text("0:00.0 / 0:00.2", timeout=180_000)
    position = page.locator("#position")
    expect(position).to_have_attribute("aria-valuetext", "0:00.0 of 0:00.2")


@pytest.mark.backends("sqlite")  # the page's own doing: the same on either backend
def test_a_video_whose_sound_starts_late_is_compared_in_step_and_its_tracks_said(
    page: Page, server: Server, tmp_path: Path
) -> None:
    """A phone video whose sound starts 0.5 s after its picture: the stems start with the
    file (so they go back on the video in sync), the browser decodes the sound alone, and
    A/B played the original 0.5 s early against them. A video with several audio tracks
    says which one is separated, lets the musician choose another, and offers no A/B: the
    browser would play its first."""
    sound = tone(1.5, 48000, [440.0, 660.0])
    sound[:, 24_000:24_048] = 0.9  # 1.0 s into the video
    phone = encode(tmp_path / "phone.mov", sound, 48000, "pcm_s16le", video="mpeg4",
                   video_seconds=2.0, audio_start=0.5)  # fmt: skip
    open_page(page, server)
    upload(page, phone)
    expect(page.locator("#track-field")).to_be_hidden()  # one track: nothing to choose
    page.locator("#model-select").select_option("spleeter-2stems")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=180_000)
    ab = page.get_by_test_id("ab")
    ab.click()
    expect(ab).to_have_attribute("aria-pressed", "true")
    expect(ab).to_have_text("Original")  # decoded
    first_click = "(b) => { const d = b.getChannelData(0); return d.findIndex((x) => x > 0.8); }"
    heard = page.evaluate(
        f"""() => {{ const at = {first_click}; const m = demixerMixer;
            return {{ original: at(m.original), length: m.original.length,
                      stems: m.stems[0].buffer.length, rate: m.original.sampleRate }}; }}"""
    )
    assert heard["rate"] == 48000  # the page's context runs at the stems' rate
    assert (heard["original"], heard["length"]) == (48_000, heard["stems"])

    commentary, music = tone(1.0, 48000, [300.0, 300.0]), tone(1.0, 48000, [440.0, 660.0])
    film = encode_tracks(tmp_path / "film.mkv", [commentary, music], 48000, default=1,
                         video_seconds=1.0)  # fmt: skip
    upload(page, film)
    expect(page.get_by_test_id("upload-status")).to_have_text(
        "Ready: film.mkv · 0:01 · 2 audio tracks: the default one is separated, or choose one"
    )
    # The other track (the commentary), chosen: the request asks for it.
    tracks = page.get_by_test_id("track-select")
    expect(tracks.locator("option")).to_have_text(["the default one", "track 1", "track 2"])
    tracks.select_option("1")
    shot(page, "video-tracks")
    with page.expect_request(lambda r: r.url.endswith("/v1/queue/audio/stems")) as sent:
        page.get_by_test_id("submit").click()
    assert sent.value.post_data_json["input"]["audio_track"] == 1
    expect(page.get_by_test_id("ab-note")).to_have_text(
        "Original: not here, because this video has several audio tracks, and the browser "
        "would play the first, not always the one separated.",
        timeout=180_000,
    )
    expect(ab).to_be_disabled()


@pytest.mark.backends("sqlite")  # the page's own layout: the same on either backend
def test_on_a_phone(phone: Page, server: Server, audio: tuple[Path, Path]) -> None:
    page = phone
    open_page(page, server)
    for width in (360, 390, 430):  # no sideways scrolling on any common phone
        page.set_viewport_size({"width": width, "height": 844})
        no_sideways_scroll(page)
    page.set_viewport_size(PHONE)
    expect(page.locator("#drop-title")).to_have_text("Choose a song or a video")  # no drop
    shot(page, "phone-start", full_page=False)
    upload(page, audio[0])
    # Every control a thumb uses is at least 44 px each way.
    small = page.evaluate(
        """[...document.querySelectorAll('button, select, input[type=text], .chip, .tab, summary')]
           .filter(el => el.offsetParent !== null)
           .map(el => [el.id || el.className || el.tagName, el.getBoundingClientRect()])
           .filter(([, r]) => r.height < 44 || r.width < 44).map(([n]) => n)"""
    )
    assert small == [], small
    # Only the vocals: the rest of the song comes too, named in words, not "residual".
    page.locator(".chip", has_text="accompaniment").tap()
    page.get_by_test_id("submit").tap()
    rows = page.get_by_test_id("stem-row")
    expect(rows).to_have_count(2, timeout=180_000)
    in_view(page, "mixer")
    expect(page.locator("#stems .name")).to_have_text(["vocals", "everything else"])
    # The name a voice says ("click M") is in the button's name: "M: mute …".
    expect(rows.nth(1).get_by_test_id("stem-mute")).to_have_attribute(
        "aria-label", "M: mute everything else"
    )
    for width in (360, 430, 390):  # the mixer fits every common phone too
        page.set_viewport_size({"width": width, "height": 844})
        no_sideways_scroll(page)
    shot(page, "phone-mixer", full_page=False)
    touch = page.evaluate(
        """[...document.querySelectorAll('#mixer button, #mixer a, #mixer input')]
           .filter(el => el.offsetParent !== null)  // not one hidden (the long song's note)
           .map(el => el.getBoundingClientRect())
           .filter(r => r.height < 44 || r.width < 44).length"""
    )
    assert touch == 0
    # A finger swiping up or down over the waveforms and the ruler scrolls the page.
    assert page.evaluate(
        "[...document.querySelectorAll('#ruler, #stems .wave')]"
        ".every(el => getComputedStyle(el).touchAction === 'pan-y')"
    )
    # Names are whole words on one line, never "accompanimen/t".
    for name in page.locator("#stems .name").all():
        assert name.evaluate(
            "el => el.scrollWidth <= el.clientWidth && el.getClientRects().length == 1"
        )
    # Play, tap near the end, then open the song again from the history: a fresh player.
    page.get_by_test_id("play").tap()
    until(page, "() => demixerMixer.position() > 0.3")
    page.get_by_test_id("play").tap()
    # Paused, wherever that is: on a busy machine the 3-s song can end before the tap lands,
    # which then plays it again (a tap on the wave would then play on to the end, and 0:00).
    until(page, "() => !demixerMixer.playing")
    # Tapped where the wave is when the finger lands: tapping Play scrolls it into view, which
    # can take the wave below the screen (the page's scroll after the mixer opened differs
    # with the machine's speed), and a tap at coordinates measured before lands on nothing.
    wave = rows.first.locator(".wave")
    box = wave.bounding_box()
    assert box is not None
    wave.tap(position={"x": 0.9 * box["width"], "y": box["height"] / 2})
    expect(page.get_by_test_id("time")).to_have_text("0:02 / 0:03")
    page.evaluate("window.scrollTo(0, 0)")
    page.get_by_test_id("history-item").first.get_by_role("button", name=re.compile("^Open")).tap()
    expect(page.get_by_test_id("time")).to_have_text("0:00 / 0:03", timeout=60_000)
    expect(rows).to_have_count(2)
    in_view(page, "mixer")
    shot(page, "phone-history", full_page=True)
    # At 200 % zoom (195 CSS px) everything reflows onto more lines: nothing is squeezed to
    # nothing, cut or pushed out of its card, and no word breaks in two.
    page.set_viewport_size({"width": 195, "height": 422})
    no_sideways_scroll(page)
    bad = page.evaluate(
        """[...document.querySelectorAll(`#stems .name, #stems output, #history-list .song,
             #refresh, .chip, .tab, #quality-select, #format-select, #model-select`)]
           .filter(el => el.getClientRects().length)
           .map(el => {
             const r = el.getBoundingClientRect();
             const card = el.closest('.card').getBoundingClientRect();
             const words = document.createRange();
             words.selectNodeContents(el);
             const lines = new Set([...words.getClientRects()].map(l => Math.round(l.top))).size;
             return [el.id || el.className || el.tagName, el.textContent.trim(), {
               width: r.width > 16, inside: r.left >= card.left - 1 && r.right <= card.right + 1,
               whole: el.matches('.song, select') || el.scrollWidth <= el.clientWidth,
               oneLine: !el.matches('#refresh, #stems .name, #stems output') || lines === 1}];
           })
           .filter(([, , ok]) => !Object.values(ok).every(Boolean))"""
    )
    assert bad == [], bad
    song = page.get_by_test_id("history-item").first.locator(".song")
    expect(song).to_have_attribute("title", f"{SONG}.wav")  # cut short, it shows on hover
    shot(page, "phone-zoom-200", full_page=False)


@pytest.mark.backends("sqlite")  # the page's own layout: the same on either backend
def test_on_a_phone_a_long_song_name_shows_whole_in_the_list(phone: Page, server: Server) -> None:
    """A long name was cut to one line ("Fleetwood Mac - Rumo…"), whole only in a tooltip a
    finger cannot show: on a phone an album's songs all read the same in the list."""
    page = phone
    names = [
        f"Fleetwood Mac - Rumours (2004 Remaster) - 0{n} {song}.flac"
        for n, song in ((1, "Second Hand News"), (2, "Dreams"))
    ]
    jobs = [
        {
            "request_id": f"req_long{i}",
            "status": "COMPLETED",
            "file_name": name,
            "duration": 180,
            "stems": ["vocals", "accompaniment"],
            "engine_model": "spleeter-2stems",
            "created_at": "2026-01-02T03:04:05Z",
        }
        for i, name in enumerate(names)
    ]
    page.route(
        re.compile(r"/v1/queue/requests\?limit="),
        lambda route: route.fulfill(json={"data": jobs, "has_more": False}),
    )
    open_page(page, server)
    songs = page.locator("#history-list .song")
    expect(songs).to_have_text(names)
    for song in songs.all():  # every letter on screen: none hidden behind an ellipsis
        assert song.evaluate(
            "el => el.scrollWidth <= el.clientWidth && el.scrollHeight <= el.clientHeight"
        ), song.text_content()
    no_sideways_scroll(page)


@pytest.mark.backends("sqlite")  # the page's own colours: the same on either backend
def test_the_page_follows_the_systems_light_or_dark_setting(
    browser: Browser, server: Server
) -> None:
    """Dark on a system set to dark (and by default); light on one set to light, for a bright
    room or a phone in daylight. The browser's own parts (lists, sliders) follow as well."""
    for scheme in THEMES:
        context = browser.new_context(color_scheme=scheme, viewport=DESKTOP)
        page = context.new_page()
        open_page(page, server)
        meta = page.locator("meta[name=color-scheme]").get_attribute("content")
        assert meta == "dark light"
        assert page.evaluate("getComputedStyle(document.documentElement).colorScheme") == scheme
        ground, words = (
            _luminance(_rgba(page.locator("body").evaluate(f"el => getComputedStyle(el).{p}"))[:3])
            for p in ("backgroundColor", "color")
        )
        if scheme == "dark":
            assert ground < 0.02 and words > 0.8, (ground, words)
        else:
            assert ground > 0.85 and words < 0.02, (ground, words)
        # The drop zone's dashed edge shows (1.6:1 in light, 1.4:1 in dark before).
        assert contrast(page.locator("#drop"), "border-top-color") >= 3, scheme
        # From the keyboard, the focus ring shows at 3:1 where it is drawn: on the checked tab
        # (a radio's focus is on it; the ring on its fill was 1.2:1 in light), and round "More
        # models" (the browser's thin ring before).
        for target in ("input[name=mode]:checked", "#more-models > summary"):
            for _ in range(30):
                if page.evaluate(f"document.activeElement.matches({target!r})"):
                    break
                page.keyboard.press("Tab")
            assert page.evaluate(f"document.activeElement.matches({target!r})"), (
                target,
                page.evaluate("document.activeElement.outerHTML.slice(0, 200)"),
            )
            ring = page.locator(target)
            expect(ring).to_have_css("outline-style", "solid")  # once focus-visible applies
            expect(ring).to_have_css("outline-width", "3px")
            assert contrast(ring, "outline-color") >= 3, (scheme, target)
        shot(page, f"theme-{scheme}", full_page=False)
        context.close()


@pytest.fixture(scope="module")
def finished(browser: Browser, server: Server, audio: tuple[Path, Path]) -> str:
    """The short song, separated once for the module's tests that open it: its request id."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    open_page(page, server)
    upload(page, audio[0])
    page.locator("#model-select").select_option("spleeter-2stems")
    page.get_by_test_id("quality-select").select_option("fast")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=180_000)
    context.close()
    with server.client() as api:
        listed = api.get("/v1/queue/requests", params={"limit": 1}).json()["data"][0]
    return str(listed["request_id"])


def _ratio(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def stands_out(control: Any) -> float:
    """WCAG's contrast ratio of what marks a control out from what is around it: its edge, or
    its fill where that stands out more (a filled button needs no edge of its own)."""
    fill = band_contrast(control, against=control.locator("xpath=.."))
    if control.evaluate("el => parseFloat(getComputedStyle(el).borderTopWidth)") == 0:
        return fill
    return max(fill, contrast(control, "border-top-color"))


def drawn_part(control: Any, prop: str, against: Any) -> float:
    """WCAG's contrast ratio of a part the browser draws of a control (a slider's track or knob,
    a progress bar's fill), in the colour its registered custom property ``prop`` gives it,
    against what ``against`` paints there. (The browser's parts have no computed style.)"""
    value = control.evaluate(f"el => getComputedStyle(el).getPropertyValue({prop!r}).trim()")
    if not value:  # the browser's own colours, which no style gives: none known, counted as 1:1
        return 1.0
    under = _paint(against.evaluate(_PAINT, ["color", None])[1], None)
    return _ratio(_rgba(value)[:3], under)


@pytest.mark.backends("sqlite")  # the page's own colours: the same on either backend
@pytest.mark.parametrize("scheme", THEMES)
def test_every_control_and_its_state_shows_at_3_to_1(
    page: Page, server: Server, finished: str, scheme: str
) -> None:
    """WCAG 1.4.11: what identifies a control (its edge or its fill) and what tells its state
    (a pressed toggle, a chosen tab or stem, a slider's knob, a progress bar's fill) reads at 3:1
    against what is next to it, in either theme. In light, buttons' and tabs' edges were 1.6:1
    on the card and the browser's progress and slider tracks 1.1-2.1:1; in dark, 1.4:1."""
    page.emulate_media(color_scheme=scheme)
    open_page(page, server)
    page.locator(f"#open-{finished}").click()
    rows = page.get_by_test_id("stem-row")
    expect(rows).to_have_count(2, timeout=60_000)
    rows.first.get_by_test_id("stem-mute").click()
    rows.last.get_by_test_id("stem-solo").click()
    page.get_by_test_id("loop").click()  # the whole song, looped: Loop pressed, the band shown
    expect(page.get_by_test_id("loop")).to_have_attribute("aria-pressed", "true")
    controls = {
        "button": "#refresh",
        "button without a fill": "#history-list button.quiet",
        "primary button": ".drop .button",
        "icon button": "[data-testid=play]",
        "icon link": "[data-testid=stem-download]",
        "tab": ".tab:not(:has(input:checked))",
        "chosen tab": ".tab:has(input:checked)",
        "list": "#model-select",
        "stem chip": ".chip",
        "toggle": "[data-testid=stem-solo][aria-pressed=false]",
        "pressed toggle": "#loop[aria-pressed=true]",
        "pressed Mute": "[data-testid=stem-mute][aria-pressed=true]",
        "pressed Solo": "[data-testid=stem-solo][aria-pressed=true]",
        "drop zone": "#drop",
        "progress track": "#job-progress",  # hidden now: its colours are the same while shown
    }
    ratios = {name: stands_out(page.locator(css).first) for name, css in controls.items()}
    progress = page.locator("#job-progress")
    ratios["progress fill"] = drawn_part(progress, "--mark", against=progress)
    sliders = {"Position": page.get_by_test_id("position")}
    sliders["volume"] = rows.first.get_by_test_id("stem-volume")
    for name, slider in sliders.items():
        ratios[f"{name} track"] = drawn_part(slider, "--track", against=slider)
        ratios[f"{name} knob"] = drawn_part(slider, "--mark", against=slider)
    # A chosen stem's tick box, in the stem's colour on the chip's tint.
    box = page.locator(".chip input:checked").first
    accent = box.evaluate("el => getComputedStyle(el).accentColor")
    tint = _paint(box.locator("xpath=..").evaluate(_PAINT, ["color", None])[1], None)
    ratios["stem tick box"] = _ratio(_rgba(accent)[:3], tint)
    # The loop's edges and the playhead on the ruler.
    ruler = page.get_by_test_id("ruler")
    ratios["loop edge"] = contrast(page.locator("#loop-region"), "border-left-color")
    ratios["playhead"] = band_contrast(ruler.locator(".playhead"), against=ruler)
    low = {name: round(r, 2) for name, r in ratios.items() if r < 3}
    assert not low, (scheme, low)


@pytest.mark.backends("sqlite")  # the page's own player: the same on either backend
def test_seeking_while_playing_keeps_one_playhead_loop(
    page: Page, server: Server, finished: str
) -> None:
    """Each seek while playing (an arrow key, a drag, a loop set) started one more frame loop
    that never ended until pause: after a few dozen seeks the page redrew the playhead dozens
    of times a frame, and a long session of scrubbing turned the page sluggish."""
    open_page(page, server)
    page.locator(f"#open-{finished}").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    page.locator("#mixer-title").focus()
    page.keyboard.press("Space")
    until(page, "() => window.demixerMixer.playing")
    for _ in range(20):
        page.keyboard.press("ArrowLeft")  # back to the start (the song is 3 s long)
    # Frames asked for over 10 frames: one a frame for the one playhead loop.
    asked = page.evaluate("""async () => {
      const real = window.requestAnimationFrame.bind(window);
      let n = 0;
      window.requestAnimationFrame = (f) => { n++; return real(f); };
      for (let i = 0; i < 10; i++) await new Promise((r) => real(r));
      window.requestAnimationFrame = real;
      return n;
    }""")
    assert page.evaluate("() => window.demixerMixer.playing")
    assert asked <= 12, asked


@pytest.mark.backends("sqlite")  # the page's own player: the same on either backend
def test_opening_a_song_twice_quickly_shows_its_stems_once(
    page: Page, server: Server, finished: str
) -> None:
    """A double click on Open (or Open on another song while the first one's stems load):
    both loads went on, and each added its stems to the mixer, which showed every stem twice
    and played the first load's buffers under the second's."""
    open_page(page, server)
    # The history loads beside the model list open_page waits for: its button may come later.
    expect(page.locator(f"#open-{finished}")).to_be_attached()
    page.evaluate(
        f"() => {{ const b = document.getElementById('open-{finished}'); b.click(); b.click(); }}"
    )
    until(page, "() => document.querySelector('#time').textContent.includes('/')")
    page.wait_for_timeout(500)
    expect(page.get_by_test_id("stem-row")).to_have_count(2)
    assert page.evaluate("() => window.demixerMixer.stems.length") == 2


@pytest.mark.backends("sqlite")  # the page's own player: the same on either backend
def test_a_song_opened_after_another_frees_the_first_ones_stems(
    page: Page, server: Server, finished: str
) -> None:
    """Each stem's download link holds a copy of the stem in the page's memory: they were never
    let go, so every song opened kept its stems (tens of MB each) until the tab closed."""
    open_page(page, server)
    opened = page.locator(f"#open-{finished}")
    opened.click()
    link = page.get_by_test_id("stem-download").first
    old = link.get_attribute("href")
    page.locator("#history-title").focus()  # Open is under the mixer: back up to it
    opened.click()
    expect(link).not_to_have_attribute("href", old or "")
    # (The page's CSP lets media, not fetch, read blob: URLs.)
    gone = """(url) => new Promise((done) => {
      const a = new Audio();
      a.onloadedmetadata = () => done(false);
      a.onerror = () => done(true);
      a.src = url;
    })"""
    assert page.evaluate(gone, old)


@pytest.mark.backends("sqlite")  # the page's own player: the same on either backend
def test_turning_the_loop_off_goes_on_from_where_it_is_heard(
    page: Page, server: Server, finished: str
) -> None:
    """Loop 0:00-0:01 played for a while, then L: the song jumped ahead by all the time spent
    looping (or to its end), not on from the spot inside the loop that was being heard."""
    open_page(page, server)
    page.locator(f"#open-{finished}").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    page.evaluate("() => window.demixerMixer.setLoop(0, 1, true)")
    page.locator("#mixer-title").focus()
    page.keyboard.press("Space")
    until(page, "() => window.demixerMixer.position() > 0.3")
    page.wait_for_timeout(1200)  # once round the loop at least
    page.keyboard.press("L")
    expect(page.get_by_test_id("loop")).to_have_attribute("aria-pressed", "false")
    assert page.evaluate("() => window.demixerMixer.offset") < 1


@pytest.mark.backends("sqlite")  # the page's own player: the same on either backend
def test_a_key_held_down_toggles_play_and_loop_once(
    page: Page, server: Server, finished: str
) -> None:
    """Space or L held a moment too long (a tremor, a slow release) repeats: each repeat
    toggled again, so the song stuttered between play and pause and the loop flipped on and
    off, left at chance when the key came up."""
    open_page(page, server)
    page.locator(f"#open-{finished}").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    page.locator("#mixer-title").focus()
    for key in ("Space", "l"):
        page.keyboard.down(key)
        page.keyboard.down(key)  # the key's repeat, as the system sends it while held
        page.keyboard.up(key)
    assert page.evaluate("demixerMixer.playing") is True
    expect(page.get_by_test_id("loop")).to_have_attribute("aria-pressed", "true")


# The page's own clocks, over 0.8 s of the audio clock while the song plays: how far the song
# moved for each second the sound card played.
_SONG_SECONDS_PER_SECOND = """async () => {
  const m = window.demixerMixer;
  const ticks = () => new Promise((r) => setTimeout(r, 20));
  const c0 = m.ctx.currentTime, p0 = m.position();
  while (m.ctx.currentTime < c0 + 0.8) await ticks();
  return (m.position() - p0) / (m.ctx.currentTime - c0);
}"""


@pytest.mark.backends("sqlite")  # the page's own player: the same on either backend
def test_practice_speed_slows_the_song_at_its_pitch_with_the_stems_aligned(
    page: Page, server: Server, finished: str
) -> None:
    """A musician slows a hard passage down, as Moises and every practice app let them: the
    Speed list (50-125 %, labelled, from the keyboard too) plays the song at that tempo at the
    same pitch, the stems together, with the position, the loop and the gains as at 100 %."""
    open_page(page, server)
    page.locator(f"#open-{finished}").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    speed = page.get_by_role("combobox", name="Speed", exact=True)
    expect(speed).to_have_value("100")
    values = speed.locator("option").evaluate_all("els => els.map((e) => Number(e.value))")
    assert values == list(range(50, 130, 5))

    # From the keyboard: - steps down, + up, each said to a screen reader.
    page.locator("#mixer-title").focus()
    page.keyboard.press("-")
    expect(speed).to_have_value("95")
    expect(page.get_by_test_id("announce")).to_have_text("Speed 95 %")
    page.keyboard.press("+")
    expect(speed).to_have_value("100")

    # At 50 % the song moves half a second for each second heard, on the audio clock.
    speed.select_option("50")
    assert page.evaluate("demixerMixer.speed") == 0.5
    page.get_by_test_id("play").click()
    until(page, "() => demixerMixer.playing && demixerMixer.position() > 0.1")
    assert page.evaluate(_SONG_SECONDS_PER_SECOND) == pytest.approx(0.5, abs=0.02)
    # Only the blocks about to play are held, not every block since play (a long song).
    assert page.evaluate("demixerMixer.sources.length") <= 2 * 10

    # A loop at 50 %: the song stays inside it and goes round.
    page.evaluate("() => demixerMixer.setLoop(0.5, 0.8, true)")
    page.evaluate(
        "window.seen = []; window.wrapped = false; setInterval(() => {"
        " const p = demixerMixer.position(); const last = seen[seen.length - 1];"
        " if (last !== undefined && p < last - 0.15) wrapped = true; seen.push(p); }, 30)"
    )
    until(page, "() => wrapped", timeout=10)
    seen = page.evaluate("seen")
    assert min(seen) >= 0.5 - 0.01 and max(seen) <= 0.8 + 0.01, seen

    # Without the loop, at 125 %, the song plays to its end and the playhead goes back to 0:00.
    page.evaluate("() => { demixerMixer.setLoop(0.5, 0.8, false); demixerMixer.setSpeed(1.25); }")
    expect(speed).to_have_value("125")
    page.get_by_test_id("position").fill("2.7")
    until(page, "() => !demixerMixer.playing", timeout=5)
    assert page.evaluate("demixerMixer.position()") == 0

    # The pitch stays: a 1 s tone at 440 Hz through the same stretch at 50 % lasts 2 s and is
    # still 440 Hz (a slowed-down playback would be 220 Hz).
    rate = page.evaluate("demixerMixer.ctx.sampleRate")
    length, middle = page.evaluate(
        """(rate) => {
          const m = window.demixerMixer;
          const sine = Float32Array.from(
            { length: rate }, (_, i) => Math.sin((2 * Math.PI * 440 * i) / rate));
          const s = new m.Stretcher({ tracks: [[sine]], rate, weights: () => [1], speed: 0.5,
            offset: 0, loop: { on: false } });
          const out = [];
          while (!s.done) {
            const { grains, data } = s.block(16);
            out.push(...data[0][0].subarray(0, grains * s.hop));
          }
          return [out.length, out.slice(rate / 2, rate)];
        }""",
        rate,
    )
    assert length == pytest.approx(2 * rate, abs=0.05 * rate)
    spectrum = np.abs(np.fft.rfft(np.asarray(middle) * np.hanning(len(middle))))
    assert np.argmax(spectrum) * rate / len(middle) == pytest.approx(440, abs=3)

    # The stems are cut at the same places: stretched, they still sum to the stretched song,
    # sample for sample (stems stretched each on its own would drift apart and smear).
    apart = page.evaluate(
        """() => {
          const m = window.demixerMixer;
          const [v, a] = m.stems.map((s) => [0, 1].map((c) => s.buffer.getChannelData(c)));
          const song = [0, 1].map((c) => v[c].map((x, i) => x + a[c][i]));
          const s = new m.Stretcher({ tracks: [v, a, song], rate: m.ctx.sampleRate,
            weights: () => [1, 0, 0], speed: 0.5, offset: 0.5, loop: { on: false } });
          let worst = 0, loudest = 0;
          for (let b = 0; b < 8; b++) {
            const [sv, sa, ss] = s.block(16).data;
            for (let c = 0; c < 2; c++) for (let i = 0; i < ss[c].length; i++) {
              worst = Math.max(worst, Math.abs(sv[c][i] + sa[c][i] - ss[c][i]));
              loudest = Math.max(loudest, Math.abs(ss[c][i]));
            }
          }
          return [worst, loudest];
        }"""
    )
    assert apart[1] > 0.05 and apart[0] < 1e-5, apart

    # Another key, as Moises and the practice apps offer it: the Key list (-6 to +6 semitones)
    # plays the song at its speed, stretched to 2^(-k/12) of it and each block resampled to
    # 2^(-k/12) of its length (the browser's playbackRate would interpolate linearly).
    key = page.get_by_role("combobox", name="Key", exact=True)
    expect(key).to_have_value("0")
    values = key.locator("option").evaluate_all("els => els.map((e) => Number(e.value))")
    assert values == list(range(-6, 7))
    page.evaluate("() => demixerMixer.setSpeed(1)")
    # From the keyboard: < steps down a semitone, > up (or , and . without Shift), said.
    page.locator("#mixer-title").focus()
    page.keyboard.press("<")
    expect(key).to_have_value("-1")
    expect(page.get_by_test_id("announce")).to_have_text("Key -1")
    page.keyboard.press(".")
    page.keyboard.press(".")
    expect(key).to_have_value("1")
    key.select_option("6")
    page.locator("#mixer-title").focus()
    page.keyboard.press(">")  # none past +6
    expect(key).to_have_value("6")
    key.select_option("2")
    assert page.evaluate("demixerMixer.pitch") == 2
    page.get_by_test_id("position").fill("0")
    page.get_by_test_id("play").click()
    until(page, "() => demixerMixer.playing && demixerMixer.position() > 0.1")
    assert page.evaluate(_SONG_SECONDS_PER_SECOND) == pytest.approx(1.0, abs=0.02)
    played = page.evaluate(
        "demixerMixer.sources.map((s) => [s.buffer.length, s.playbackRate.value])"
    )
    block = round(17 * 1024 / 2 ** (2 / 12))  # 16 grains and the overlap, of 1024 samples
    assert played and all(p == [block, 1] for p in played), played
    page.get_by_test_id("play").click()
    key.select_option("0")

    # What the downloaded mix is resampled by: a sine comes out r times as high, the same
    # pushed whole or in pieces, and raised a tritone a 20 kHz tone is filtered away (-80 dB),
    # not folded back down to an audible 15.8 kHz.
    highest, pieces, folded = page.evaluate(
        """(rate) => {
          const R = window.demixerMixer.Resampler;
          const sine = (f, n) => Float32Array.from(
            { length: n }, (_, i) => Math.sin((2 * Math.PI * f * i) / rate));
          const run = (x, r, size) => {
            const rs = new R(r, 1), out = [];
            for (let a = 0; a < x.length; a += size) {
              out.push(rs.push([x.subarray(a, a + size)])[0]);
            }
            out.push(rs.push(null, { last: true, total: Math.round(x.length / r) })[0]);
            const all = new Float32Array(out.reduce((n, o) => n + o.length, 0));
            let at = 0; for (const o of out) { all.set(o, at); at += o.length; }
            return all;
          };
          const x = sine(1000, rate), r = 2 ** (2 / 12);
          const whole = run(x, r, x.length), split = run(x, r, 7919);
          let apart = whole.length === split.length ? 0 : 1;
          whole.forEach((v, i) => { apart = Math.max(apart, Math.abs(v - split[i])); });
          const high = run(sine(20000, rate), 2 ** (6 / 12), 4096);
          let energy = 0;
          for (let i = 2000; i < high.length - 2000; i++) energy += high[i] ** 2;
          return [Array.from(whole.slice(2000, 2000 + rate / 2)), apart,
                  Math.sqrt(energy / (high.length - 4000))];
        }""",
        rate,
    )
    spectrum = np.abs(np.fft.rfft(np.asarray(highest) * np.hanning(len(highest))))
    assert np.argmax(spectrum) * rate / len(highest) == pytest.approx(1000 * 2 ** (2 / 12), abs=2)
    assert pieces == 0 and folded < 1e-4 * np.sqrt(0.5), (pieces, folded)

    # It fits the transport's row on a laptop and wraps within it on a phone.
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        box = speed.bounding_box()
        card = page.get_by_test_id("mixer").bounding_box()
        assert box is not None and card is not None
        assert card["x"] <= box["x"] and box["x"] + box["width"] <= card["x"] + card["width"]
        no_sideways_scroll(page)
        page.locator("#mixer").scroll_into_view_if_needed()
        shot(page, f"practice-speed-{viewport['width']}", full_page=False)


@pytest.mark.backends("sqlite")  # the page's own mixing in the browser: the same on either backend
def test_the_mix_downloads_at_the_songs_rate_and_sums_its_stems(
    page: Page, server: Server, finished: str
) -> None:
    """The mix was rendered at the rate of the page's audio output, the sound card's: on a
    48 kHz laptop a 44.1 kHz song's mix came out at 48 kHz, resampled by the browser, 3 ms
    longer, and no longer lined up with the song and its stems in a DAW. It is the song's
    rate, length and channels, and the stems' sum sample for sample."""
    open_page(page, server)
    # A context at the sound card's rate, as a 48 kHz output device gives it (one made before
    # a song opened: the page keeps a context while its rate is the song's).
    page.evaluate("() => { window.demixerMixer.ctx = new AudioContext({ sampleRate: 48000 }); }")
    page.locator(f"#open-{finished}").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    with server.client() as api:
        data = api.get(f"/v1/queue/requests/{finished}/result").json()["data"]
    stems = [
        sf.read(io.BytesIO(httpx.get(data[name]["url"]).content), dtype="int16")[0]
        for name in ("vocals", "accompaniment")
    ]
    with page.expect_download() as info:
        page.get_by_test_id("render-mix").click()
    mix, rate = sf.read(info.value.path(), always_2d=True, dtype="int16")
    assert rate == RATE and mix.shape == stems[0].shape == (3 * RATE, 2)
    # To a step: Chromium reads a positive 16-bit sample over 0x7fff and a negative one over
    # 0x8000, so two stems of opposite signs can sum to a step between two of the file's.
    summed = np.clip(stems[0].astype(np.int32) + stems[1], -32768, 32767)
    assert np.abs(mix - summed).max() <= 1


@pytest.mark.backends("sqlite")  # the page's own player: the same on either backend
def test_the_tab_holds_each_stem_once_and_the_mix_decodes_nothing_again(
    page: Page, server: Server, finished: str
) -> None:
    """A long song killed the tab on a phone: the page kept every stem's fetched file beside
    its decoding (a 10-minute song of 4 stems: 1.4 GB once open), and "Download this mix"
    decoded every stem once more and kept those too (3 GB). The tab's array buffers now hold
    the decoded stems and nothing else (the files stay in Blobs, outside the tab's memory),
    and the mix is summed from the buffers played, decoding nothing again.
    (benchmarks/page_memory.py measures the same for songs of 1 to 60 minutes.)"""
    open_page(page, server)
    page.locator(f"#open-{finished}").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    cdp = page.context.new_cdp_session(page)

    def held() -> int:
        """Bytes in the tab's array buffers (the decoded samples among them), after a GC."""
        cdp.send("HeapProfiler.collectGarbage")
        return int(cdp.send("Runtime.getHeapUsage")["backingStorageSize"])

    decoded = page.evaluate(
        "demixerMixer.stems.reduce((n, { buffer: b }) => n + 4 * b.length * b.numberOfChannels, 0)"
    )
    assert decoded == 2 * 4 * 2 * 3 * RATE  # two stereo stems of 3 s, as floats
    margin = 256 * 1024  # the page's own small buffers; a stem's file is 517 KiB
    assert held() <= decoded + margin
    page.evaluate("""() => {
      window.decodes = 0;
      const real = BaseAudioContext.prototype.decodeAudioData;
      BaseAudioContext.prototype.decodeAudioData = function (...args) {
        window.decodes++;
        return real.apply(this, args);
      };
    }""")
    with page.expect_download() as info:
        page.get_by_test_id("render-mix").click()
    mix, rate = sf.read(info.value.path(), always_2d=True)
    assert rate == RATE and mix.shape == (3 * RATE, 2)
    assert page.evaluate("window.decodes") == 0
    assert held() <= decoded + margin


@pytest.mark.backends("sqlite")  # the page's own player: the same on either backend
def test_a_song_too_long_for_the_devices_memory_is_offered_as_files_first(
    browser: Browser, server: Server, tmp_path: Path
) -> None:
    """The page decoded every stem whole to play it, whatever the device: a 30-minute song of 4
    stems (2.5 GB decoded) killed a phone's tab, the stems with it. Where the decoded stems
    would take more than the device can spare (here a computer saying it has 0.25 GB: 64 MB),
    the page offers the files first, with what playing them would take, and opens them in the
    mixer only when asked to."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.add_init_script(
        'Object.defineProperty(Navigator.prototype, "deviceMemory", { get: () => 0.25 })'
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    song = tmp_path / "Long Take.wav"
    mix = decode_stream(stempeg_example(), 0)
    looped = np.tile(mix, (1, -(-100 * RATE // mix.shape[1])))[:, : 100 * RATE]
    sf.write(song, looped.T, RATE, subtype="PCM_16")
    open_page(page, server)
    upload(page, song)
    page.locator("#model-select").select_option("spleeter-2stems")
    page.locator("#format-select").select_option("wav")
    page.get_by_test_id("quality-select").select_option("fast")
    page.get_by_test_id("submit").click()

    # Two stereo stems of 100 s at 44.1 kHz, decoded: 70.56 MB (67.3 MiB).
    note = page.get_by_test_id("files-note")
    expect(note).to_have_text(
        "This song is 1:40 long: playing its 2 stems here would take about 68 MB of memory, "
        "more than this device can spare for it (about 64 MB), and the page could close. "
        "Listen to the stems one at a time here (the browser plays a file as it reads it), "
        "download them, or open them in the mixer anyway. Open in the mixer anyway",
        timeout=180_000,
    )
    files = page.get_by_test_id("stem-file")
    expect(files).to_have_count(2)
    expect(page.get_by_test_id("stem-row")).to_have_count(0)
    for hidden in ("play", "position", "ruler", "render-mix"):
        expect(page.get_by_test_id(hidden)).to_be_hidden()
    # Each stem plays in the browser's own player, read as it plays, one at a time.
    players = page.get_by_test_id("stem-listen")
    expect(players).to_have_count(2)
    expect(players.first).to_have_attribute("aria-label", "Listen to vocals")
    until(page, "() => [...document.querySelectorAll('audio')].every((a) => a.duration === 100)")
    page.evaluate("document.querySelectorAll('audio')[0].play()")
    until(page, "() => document.querySelectorAll('audio')[0].currentTime > 0.2")
    page.evaluate("document.querySelectorAll('audio')[1].play()")
    until(page, "() => document.querySelectorAll('audio')[1].currentTime > 0.2")
    assert page.evaluate("[...document.querySelectorAll('audio')].map((a) => a.paused)") == [
        True,
        False,
    ]
    assert page.evaluate("demixerMixer.stems.length") == 0  # nothing decoded
    shot(page, "too-long", full_page=False)
    page.set_viewport_size(PHONE)
    no_sideways_scroll(page)
    page.evaluate("document.querySelector('#mixer').scrollIntoView()")
    shot(page, "too-long-phone", full_page=False)
    page.set_viewport_size(DESKTOP)
    with page.expect_download() as info:
        files.first.get_by_test_id("stem-download").click()
    assert info.value.suggested_filename == "Long Take_vocals.wav"
    vocals, rate = sf.read(info.value.path(), always_2d=True)
    assert (rate, vocals.shape) == (RATE, (100 * RATE, 2))
    with page.expect_download() as info:
        page.get_by_test_id("download-all").click()
    with zipfile.ZipFile(info.value.path()) as zf:
        assert sorted(zf.namelist()) == ["Long Take_accompaniment.wav", "Long Take_vocals.wav"]

    page.evaluate("window.listened = document.querySelectorAll('audio')[1]")
    page.get_by_test_id("open-anyway").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    expect(note).to_be_hidden()
    expect(files).to_have_count(0)
    expect(players).to_have_count(0)
    assert page.evaluate("window.listened.paused")  # not playing on, off the page
    expect(page.get_by_test_id("time")).to_have_text("0:00 / 1:40")
    focused(page, "mixer-title")
    page.keyboard.press("Space")
    until(page, "() => window.demixerMixer.position() > 0.2")
    context.close()
    assert not errors, errors


@pytest.mark.backends("sqlite")  # the page's own player: the same on either backend
def test_the_original_is_decoded_on_the_first_ab_press_not_with_the_stems(
    page: Page, server: Server, audio: tuple[Path, Path]
) -> None:
    """The song uploaded in this tab was decoded whole with the stems for A/B, pressed or
    not: one more stem's memory (21 MB a minute) for every song opened. It is decoded on the
    first press, the button saying so meanwhile; while playing, the original joins at the
    same spot, in step with the stems."""
    open_page(page, server)
    # Every decoding counted; one held back on request, to see the button while it reads.
    page.evaluate("""() => {
      window.decodes = 0;
      const real = BaseAudioContext.prototype.decodeAudioData;
      BaseAudioContext.prototype.decodeAudioData = function (...args) {
        window.decodes++;
        const decoding = real.apply(this, args);
        if (!window.hold) return decoding;
        return new Promise((done) => { window.release = () => done(decoding); });
      };
    }""")
    upload(page, audio[0])
    page.locator("#model-select").select_option("spleeter-2stems")
    page.get_by_test_id("quality-select").select_option("fast")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=120_000)
    ab = page.get_by_test_id("ab")
    expect(ab).to_be_enabled()
    expect(page.get_by_test_id("ab-note")).to_have_text(
        "Original: hear the song as it was, at the same spot."
    )
    assert page.evaluate("[window.decodes, demixerMixer.original]") == [2, None]  # the stems
    page.get_by_test_id("loop").click()  # the whole song, over and over: it plays throughout
    page.get_by_test_id("play").click()
    page.evaluate("window.hold = true")
    ab.focus()
    page.keyboard.press("Enter")
    expect(ab).to_have_text("Reading the original…")
    expect(ab).to_have_attribute("aria-disabled", "true")
    expect(ab).to_be_focused()
    # The file is read before it is decoded: the held decoding starts a moment after the press.
    until(page, "() => typeof window.release === 'function'")
    page.evaluate("window.hold = false; window.release()")
    expect(ab).to_have_attribute("aria-pressed", "true")
    expect(ab).to_have_text("Original")
    expect(ab).not_to_have_attribute("aria-disabled", "true")
    heard = page.evaluate(
        "() => ({decodes: window.decodes, playing: demixerMixer.playing,"
        " sources: demixerMixer.sources.length, original: demixerMixer.originalGain.gain.value})"
    )
    assert heard == {"decodes": 3, "playing": True, "sources": 3, "original": 1}
    ab.click()  # back, and again: decoded once
    ab.click()
    expect(ab).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.decodes") == 3
    page.get_by_test_id("play").click()


@pytest.mark.backends("sqlite")  # the page's own mixing in the browser: the same on either backend
def _edges(r: float) -> float:
    """How far a stretched tone's measured length may be from the song's over the speed: at
    each end, a 10-ms frame either way, and WSOLA's reach (stretch.js: a grain is read up to
    half a hop, 512 samples, from where it belongs, where it best continues the one before),
    which resampling to a key r times as high makes 1/r as long."""
    return 2 * (0.01 + 512 / RATE / r)


def test_the_mix_downloads_at_the_practice_speed_and_key(
    page: Page, server: Server, tmp_path: Path
) -> None:
    """A musician practising at 50 % downloads the mix to practise with offline: it came out at
    100 % whatever the speed. It is stretched as the player stretches it: a 1 s tone at 440 Hz
    lasts 2 s and is still 440 Hz, and the file says its speed; at 100 % it is the mix as
    before, byte for byte. In another key it is that much higher or lower, as long."""
    t = np.arange(3 * RATE) / RATE
    tone = np.where((t >= 0.5) & (t < 1.5), 0.5 * np.sin(2 * np.pi * 440 * t), 0.0)
    song = tmp_path / "tone.wav"
    sf.write(song, np.stack([tone, tone], axis=1), RATE, subtype="PCM_16")
    open_page(page, server)
    upload(page, song)
    page.locator("#model-select").select_option("spleeter-2stems")
    page.get_by_test_id("quality-select").select_option("fast")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=180_000)

    def download() -> tuple[str, bytes]:
        with page.expect_download() as info:
            page.get_by_test_id("render-mix").click()
        return info.value.suggested_filename, Path(info.value.path()).read_bytes()

    name, before = download()
    assert name == "tone_mix.wav"
    page.get_by_role("combobox", name="Speed", exact=True).select_option("50")
    name, slow = download()
    assert name == "tone_mix_50%.wav"
    # While it was made the button said how far it was; it is itself again.
    expect(page.get_by_test_id("render-mix")).to_have_text("Download this mix (WAV)")
    mix, rate = sf.read(io.BytesIO(slow), always_2d=True)
    assert rate == RATE and mix.shape == (6 * RATE, 2)
    # How long the tone lasts: where its loudness (10 ms frames) is over half the tone's.
    frames = mix[: len(mix) // 441 * 441, 0].reshape(-1, 441)
    loudness = np.sqrt((frames**2).mean(axis=1))
    heard = loudness > 0.5 * np.median(loudness[loudness > 0.1])
    assert heard.sum() * 0.01 == pytest.approx(2, abs=_edges(1.0))
    middle = mix[int(1.5 * RATE) : int(2.5 * RATE), 0]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    assert np.argmax(spectrum) * RATE / len(middle) == pytest.approx(440, abs=1)
    page.get_by_role("combobox", name="Speed", exact=True).select_option("100")
    assert download() == ("tone_mix.wav", before)

    # In another key: +2 semitones at 100 % is the tone 2^(2/12) as high, as long, the file as
    # long as the song; -3 at 50 % lasts twice as long, 2^(-3/12) as high.
    key = page.get_by_role("combobox", name="Key", exact=True)
    for semitones, percent, seconds, name_wanted in (
        ("2", "100", 1, "tone_mix_key+2.wav"),
        ("-3", "50", 2, "tone_mix_50%_key-3.wav"),
    ):
        key.select_option(semitones)
        page.get_by_role("combobox", name="Speed", exact=True).select_option(percent)
        name, data = download()
        assert name == name_wanted
        mix, rate = sf.read(io.BytesIO(data), always_2d=True)
        assert rate == RATE and mix.shape == (3 * seconds * RATE, 2)
        frames = mix[: len(mix) // 441 * 441, 0].reshape(-1, 441)
        loudness = np.sqrt((frames**2).mean(axis=1))
        heard = loudness > 0.5 * np.median(loudness[loudness > 0.1])
        assert heard.sum() * 0.01 == pytest.approx(seconds, abs=_edges(2 ** (int(semitones) / 12)))
        middle = mix[int((0.5 + 0.1) * seconds * RATE) : int((1.5 - 0.1) * seconds * RATE), 0]
        spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
        pitch = np.argmax(spectrum) * RATE / len(middle)
        assert pitch == pytest.approx(440 * 2 ** (int(semitones) / 12), abs=1)


@pytest.mark.backends("sqlite")  # the page's own layout: the same on either backend
def test_at_200_percent_zoom_on_a_laptop_the_waveforms_keep_their_width(
    page: Page, server: Server, finished: str
) -> None:
    """A 1366 px laptop screen at 200 % zoom is a 683 px window: there the mixer kept its
    one-line rows, whose name, volume and buttons left the waveforms and the Position slider
    95 px (53 px at 641 px), against 276 px on a 320 px phone. In every window the waveforms
    and the Position slider are at least as wide as on that phone."""
    open_page(page, server)
    page.locator(f"#open-{finished}").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    widths = {}
    for width in (641, 683, 768, 879, 880, 1024):
        page.set_viewport_size({"width": width, "height": 800})
        widths[width] = page.evaluate(
            "() => ['#stems .wave', '#position', '#ruler'].map("
            "(css) => Math.round(document.querySelector(css).getBoundingClientRect().width))"
        )
    narrow = {width: w for width, w in widths.items() if min(w) < 276}
    assert not narrow, narrow


@pytest.mark.backends("sqlite")  # the page's own layout: the same on either backend
def test_the_text_follows_the_browsers_font_size(page: Page, server: Server, finished: str) -> None:
    """Text set larger in the browser (Chrome: Settings, Appearance, Font size: very large, 24
    px) made the headings and buttons larger but left the page's own text (a model's words,
    the stems' and songs' names, errors) at 16 px, smaller than the small print beside it; and
    the mixer kept its one-line rows, the waveforms 172 px wide in a 1366 px window."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Page.enable")
    cdp.send("Page.setFontSizes", {"fontSizes": {"standard": 24, "fixed": 20}})
    open_page(page, server)
    page.locator(f"#open-{finished}").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    sizes = page.evaluate(
        "() => ['body', '#model-info p', '#stems .name', '#history-list .song'].map("
        "(css) => parseFloat(getComputedStyle(document.querySelector(css)).fontSize))"
    )
    assert sizes == [24, 24, 24, 24], sizes
    wave = page.locator("#stems .wave").first.bounding_box()
    assert wave is not None and wave["width"] >= 1.5 * 276, wave  # a 320 px phone's, larger
    no_sideways_scroll(page)


# WCAG 1.4.12's text spacing, as a user stylesheet (a bookmarklet, an extension) sets it.
TEXT_SPACING = """* { letter-spacing: 0.12em !important; word-spacing: 0.16em !important;
  line-height: 1.5 !important; } p { margin-bottom: 2em !important; }"""


@pytest.mark.backends("sqlite")  # the page's own layout: the same on either backend
def test_with_wider_text_spacing_no_stem_name_is_cut(
    browser: Browser, server: Server, finished: str
) -> None:
    """WCAG 1.4.12: with the letters, words and lines spaced out as a reader may ask for, a
    stem's name in the wide mixer was cut short ("accompanim…"), the rest only in a tooltip."""
    # A user's stylesheet is not the page's: the page's Content-Security-Policy does not apply.
    context = browser.new_context(viewport=DESKTOP, bypass_csp=True)
    page = context.new_page()
    open_page(page, server)
    page.add_style_tag(content=TEXT_SPACING)
    page.locator(f"#open-{finished}").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    cut = {}
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        cut[viewport["width"]] = page.evaluate(
            """[...document.querySelectorAll('#mixer *')]
               .filter(el => el.textContent.trim() && el.clientWidth > 1)  // shown, not .sr
               .filter(el => el.scrollWidth > el.clientWidth + 1
                 || el.scrollHeight > el.clientHeight + 1)
               .map(el => [el.textContent.trim(), el.scrollWidth, el.clientWidth])"""
        )
        page.locator("#mixer").scroll_into_view_if_needed()
        shot(page, f"text-spacing-{viewport['width']}", full_page=False)
    context.close()
    assert cut == {DESKTOP["width"]: [], PHONE["width"]: []}, cut


@pytest.mark.backends("sqlite")  # the page's own layout: the same on either backend
def test_in_every_layout_the_tab_order_follows_what_is_seen(
    page: Page, server: Server, finished: str
) -> None:
    """In the stacked mixer (a phone, a laptop at 200 % zoom) each stem's Mute, Solo and download
    showed on the name's line, above its volume slider, but Tab reached the slider first: the
    focus jumped down, then back up (WCAG 2.4.3)."""
    open_page(page, server)
    page.locator(f"#open-{finished}").click()
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=60_000)
    for width in (390, 683, 1366):  # stacked on a phone and at 200 %; one line per stem wide
        page.set_viewport_size({"width": width, "height": 900})
        page.locator("#position").focus()
        boxes = []
        for _ in range(10):  # each of the two stems' slider, M, S and download, from Position
            page.keyboard.press("Tab")
            boxes.append(
                page.evaluate(
                    """() => { const el = document.activeElement, r = el.getBoundingClientRect();
                    const y = window.scrollY;  // on the page: Tab scrolls the window
                    return [el.dataset.testid, r.top + y, r.bottom + y, r.left, r.right]; }"""
                )
            )
        # Each control after the one before: on its line, to its right, or on a line below.
        back = [
            (a[0], b[0])
            for a, b in itertools.pairwise(boxes[:8])
            if not (b[1] >= a[2] - 1 or (b[1] < a[2] and b[2] > a[1] and b[3] >= a[4] - 1))
        ]
        assert back == [], (width, back)


@pytest.mark.backends("sqlite")  # the page's own layout: the same on either backend
def test_the_file_type_sits_beside_the_quality(page: Page, server: Server) -> None:
    """The row's three parts were spread evenly: in a laptop's window the file type floated
    alone in the middle, 160 px from the quality it goes with."""
    open_page(page, server)
    quality, kind, submit = (
        page.locator(css).bounding_box()
        for css in ("label[for=quality-select]", "label[for=format-select]", "#submit")
    )
    assert quality and kind and submit
    assert kind["x"] - (quality["x"] + quality["width"]) < 20, (quality, kind)
    card = page.locator("#new-job").bounding_box()
    assert card and submit["x"] + submit["width"] > card["x"] + card["width"] - 40, submit


@pytest.mark.backends("sqlite")  # the engine's ensemble, the page's words: on either backend alike
def test_models_that_make_the_same_stems_are_combined_as_an_ensemble(
    page: Page, server: Server, audio: tuple[Path, Path]
) -> None:
    """The API takes an ensemble as a model id (`a+b`, `max:a+b`); the page offered one model
    at a time. A musician ticks the models to combine with the one chosen (those installed
    that share a stem with it), picks how in UVR's words, sees the id, and the job, the mixer
    and the history name the ensemble. One the server refuses is said beside the picker."""

    # The page was opened before htdemucs went from the server (it was never here): its list
    # still offers it, and the server refuses the ensemble.
    def stale(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        gone = next(m for m in body["catalogue"] if m["id"] == "htdemucs")
        body["engine_models"].append({**gone, "installed": True, "install": None})
        route.fulfill(response=response, json=body)

    page.route("**/v1/models", stale, times=1)
    open_page(page, server)
    upload(page, audio[0])
    page.locator("#model-select").select_option("spleeter-2stems")
    page.get_by_test_id("quality-select").select_option("fast")
    combine = page.get_by_label("Combine with other models (an ensemble)")
    combine.focus()
    page.keyboard.press("Space")  # from the keyboard, as a checkbox
    others = page.get_by_test_id("ensemble-models").get_by_role("checkbox")
    expect(others).to_have_count(2)  # cascade-4stems and htdemucs each make vocals
    expect(page.get_by_test_id("submit-hint")).to_have_text(
        "Tick a model to combine it with, or untick “Combine with other models”."
    )
    page.get_by_label(re.compile(r"^htdemucs — ")).check()
    ensemble_id = page.get_by_test_id("ensemble-id")
    expect(ensemble_id.locator("code")).to_have_text("spleeter-2stems+htdemucs")
    expect(page.locator("#stem-choices input")).to_have_count(1)  # the stem both make
    with page.expect_response(lambda r: r.url.endswith("/v1/queue/audio/stems")) as refused:
        page.get_by_test_id("submit").click()
    assert refused.value.status == 422
    assert refused.value.json()["error"]["code"] == "MODEL_UNAVAILABLE"
    expect(page.get_by_test_id("model-error")).to_have_text(
        "htdemucs isn't installed on the server (any more), so this ensemble can't run."
        " Combine the models listed."
    )
    expect(others).to_have_count(1)  # the list read again: only what is here
    page.get_by_label(re.compile(r"^cascade-4stems — ")).check()
    page.get_by_test_id("ensemble-mode").select_option(label="Max Spec")
    expect(page.locator("#ensemble-how")).to_contain_text("the loudest")
    expect(ensemble_id.locator("code")).to_have_text("max:spleeter-2stems+cascade-4stems")
    expect(page.get_by_test_id("model-error")).to_have_text("")
    shot(page, "ensemble", full_page=False)
    with page.expect_response(lambda r: r.url.endswith("/v1/queue/audio/stems")) as sent:
        page.get_by_test_id("submit").click()
    assert sent.value.status == 202
    assert sent.value.request.post_data_json["input"]["model"] == (
        "max:spleeter-2stems+cascade-4stems"
    )
    words = "Model: ensemble of spleeter-2stems + cascade-4stems (Max Spec)"
    expect(page.locator("#stems .name")).to_have_text(
        ["vocals", "everything else"], timeout=120_000
    )
    expect(page.get_by_test_id("mixer-model")).to_have_text(words)
    item = page.get_by_test_id("history-item").first
    expect(item).to_contain_text(
        "0:03 · vocals · ensemble of spleeter-2stems + cascade-4stems (Max Spec) · "
    )
    page.set_viewport_size(PHONE)
    page.locator("#new-job").scroll_into_view_if_needed()
    no_sideways_scroll(page)
    shot(page, "ensemble-phone")


@pytest.mark.backends("sqlite")  # the page's own layout: the same on either backend
def test_a_described_sound_comes_first_in_the_mixer(
    page: Page, server: Server, audio: tuple[Path, Path]
) -> None:
    """Asked for "everything but the vocals", the mixer's first row was "everything else" (the
    vocals): the rows came in the model's order, whatever was asked for. The sound asked for
    comes first, the rest of the song last."""
    open_page(page, server)
    upload(page, audio[0])
    page.locator(".tab", has_text="Describe a sound").click()
    page.get_by_test_id("prompt").fill("everything but the vocals")
    page.get_by_test_id("quality-select").select_option("fast")
    page.get_by_test_id("submit").click()
    expect(page.locator("#stems .name")).to_have_text(
        ["“everything but the vocals”", "everything else"], timeout=120_000
    )


@pytest.mark.backends("sqlite")  # the spans and the page's words: the same on either backend
def test_a_described_sound_only_in_part_of_the_song(
    page: Page, server: Server, audio: tuple[Path, Path]
) -> None:
    """The API keeps (or takes out) the sound asked for in one part of the song (`spans`), and
    the page could not ask for it. "Only in part of the song" (Where, From, To: labelled, in
    the keyboard's order) sends it; a part that does not fit the song is refused in the
    server's words, beside the times, which are marked invalid."""
    open_page(page, server)
    upload(page, audio[0])
    page.locator(".tab", has_text="Describe a sound").click()
    page.get_by_test_id("prompt").fill("vocals")
    page.get_by_test_id("quality-select").select_option("fast")
    where = page.get_by_role("combobox", name="Where", exact=True)
    start = page.get_by_role("textbox", name="From", exact=True)
    end = page.get_by_role("textbox", name="To", exact=True)
    expect(where).to_have_value("")  # the whole song, as before
    expect(start).to_be_hidden()
    where.select_option("keep")
    where.focus()
    page.keyboard.press("Tab")
    expect(start).to_be_focused()
    page.keyboard.press("Tab")
    expect(end).to_be_focused()
    error = page.locator("#part-error")

    def refused(first: str, last: str) -> dict[str, Any]:
        start.fill(first)
        end.fill(last)
        with page.expect_response(lambda r: r.url.endswith("/v1/queue/audio/separate")) as sent:
            page.get_by_test_id("submit").click()
        assert sent.value.status == 400
        expect(start).to_have_attribute("aria-invalid", "true")
        return dict(sent.value.json()["error"])

    assert refused("0:02", "1")["code"] == "INVALID_REQUEST"
    expect(error).to_have_text(
        "That part of the song can't be used. A span's end must be after its start."
    )
    assert refused("1:00", "1:10")["code"] == "INVALID_OUTPUT"
    expect(error).to_have_text(
        "That part of the song can't be used. The span 60:70 starts after the input ends"
        " (3.00 s): it would keep nothing of the separated sound."
    )
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        no_sideways_scroll(page)
        page.get_by_test_id("part").scroll_into_view_if_needed()
        shot(page, f"part-of-the-song-{viewport['width']}", full_page=False)
    page.set_viewport_size(DESKTOP)
    # What is not a time is said here, before anything is sent.
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    start.fill("abc")
    page.get_by_test_id("submit").click()
    expect(error).to_have_text(
        "Write where the part starts and ends as minutes and seconds (1:05) or as seconds (65)."
    )
    assert sent == []

    # All but 1 s to 2.5 s: the vocals there go to "everything else".
    where.select_option("remove")
    start.fill("0:01")
    end.fill("2.5")
    with page.expect_request(lambda r: r.url.endswith("/v1/queue/audio/separate")) as request:
        page.get_by_test_id("submit").click()
    spans = request.value.post_data_json["input"]["spans"]
    assert spans == [{"start": 1, "end": 2.5, "include": False}]
    expect(error).to_be_empty()
    expect(start).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("stem-row")).to_have_count(2, timeout=120_000)
    with server.client() as api:
        listed = api.get("/v1/queue/requests", params={"limit": 1}).json()["data"][0]
        data = api.get(f"/v1/queue/requests/{listed['request_id']}/result").json()["data"]
    target, rate = sf.read(io.BytesIO(httpx.get(data["target"]["url"]).content), always_2d=True)
    assert rate == RATE
    assert np.abs(target[: RATE // 2]).max() > 0.01  # kept before the part
    assert np.abs(target[RATE : int(2.5 * RATE)]).max() == 0


@pytest.mark.backends("sqlite")  # the page's own addresses: the same on either backend
def test_behind_a_proxy_under_a_path_the_page_and_the_docs_ask_there(
    page: Page, server: Server, audio: tuple[Path, Path]
) -> None:
    """Served at https://example.com/demixer/, the page asked for /web/app.js, /v1/models...
    at the site's root, where no demixer answers: it stayed blank. The docs page likewise
    fetched /v1/openapi.json and Swagger UI's files there, and showed nothing."""
    outside: list[str] = []
    with on_uvicorn(path_proxy(server.base_url, "/demixer", outside)) as site:
        page.goto(site + "/demixer/")
        expect(page.get_by_test_id("session-info")).to_contain_text("account acct_")
        expect(page.locator("#model-select option")).not_to_have_count(0)
        upload(page, audio[0])  # the form's own POST (XMLHttpRequest)
        docs = httpx.get(site + "/demixer/v1/docs")
        # What Swagger UI's page loads: its script, style sheet and icon, and the spec.
        wanted = re.findall(r'(?:src|href)="([^"]+)"|url: \'([^\']+)\'', docs.text)
        assert len(wanted) == 4
        for url in [a or b for a, b in wanted]:
            assert httpx.get(str(docs.url.join(url))).status_code == 200, url
    assert outside == []


@pytest.mark.backends("sqlite")  # the page's own docs page: the same on either backend
def test_docs_render_offline(page: Page, server: Server) -> None:
    outside: list[str] = []

    def local_only(route: Any) -> None:
        if route.request.url.startswith(server.base_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    page.goto(server.base_url + "/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("demixer", timeout=30_000)
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert outside == []  # Swagger UI's files come from this server
    shot(page, "docs", full_page=False)


def test_history_delete(page: Page, server: Server) -> None:
    # Less motion asked for: no transitions, no gliding scroll.
    page.emulate_media(reduced_motion="reduce")

    def tiny_gain(route: Any) -> None:  # stems turned down by less than 0.05 dB
        response = route.fetch()
        body = response.json()
        for value in body["data"].values():
            if isinstance(value, dict) and value.get("url"):
                value["gain"] = 0.9995
        route.fulfill(response=response, json=body)

    page.route(re.compile(r"/v1/queue/requests/[^/?]+/result$"), tiny_gain)
    open_page(page, server)
    assert page.locator("#drop").evaluate("el => getComputedStyle(el).transitionDuration") == "0s"
    page.evaluate(
        "() => { window.glides = []; const into = Element.prototype.scrollIntoView;"
        " Element.prototype.scrollIntoView = function (how) {"
        " glides.push(how?.behavior); return into.call(this, how); }; }"
    )
    items = page.get_by_test_id("history-item")
    expect(items.first).to_be_visible()
    before = items.count()
    # A new page keeps no waveforms of these songs: each thumbnail is a flat line in its stem's
    # colour, which no one takes for the song's shape.
    heights = page.evaluate(
        "[...document.querySelectorAll('#history-list .thumb i')].map(i => i.style.height)"
    )
    assert heights and set(heights) == {"6%"}
    # The song that is open: deleted, its player leaves the screen with it.
    ready = items.filter(has=page.get_by_test_id("history-state").filter(has_text="Ready")).first
    ready.get_by_role("button", name=re.compile("^Open")).click()
    expect(page.get_by_test_id("mixer")).to_be_visible(timeout=60_000)
    focused(page, "mixer-title")  # the view opened
    glides = page.evaluate("glides")
    assert glides and "smooth" not in glides, glides
    # Turned down by a gain that rounds to 0.0 dB: the note says nothing of it.
    expect(page.get_by_test_id("stem-row")).not_to_have_count(0, timeout=60_000)
    expect(page.get_by_test_id("ab-note")).to_have_text(
        "Original: not here, because this song was not uploaded in this tab."
    )
    # Opened, its stems' waveforms are kept in this browser for the history's thumbnails.
    deleted = ready.get_attribute("data-id")
    kept = "id => id in JSON.parse(localStorage.getItem('demixer.thumbs') || '{}')"
    page.wait_for_function(kept, arg=deleted)
    # Delete asks first (WCAG 3.3.4): the same button now confirms, and Escape takes it back.
    delete = ready.get_by_role("button", name=re.compile("^Delete"))
    delete.click()
    confirm = ready.get_by_role("button", name=re.compile("^Confirm delete"))
    expect(confirm).to_have_text("Confirm delete")
    expect(page.get_by_test_id("announce")).to_contain_text("Press again to delete")
    page.keyboard.press("Escape")
    expect(delete).to_have_text("Delete")
    assert items.count() == before
    delete.click()
    # The focus goes on to the next song's Delete (else the one before, else the heading).
    ids = items.evaluate_all("lis => lis.map(li => li.dataset.id)")
    at = ids.index(ready.get_attribute("data-id"))
    near = ids[at + 1 :] + ids[:at][::-1]
    confirm.click()
    expect(items).to_have_count(before - 1)
    focused(page, f"delete-{near[0]}" if near else "history-title")
    expect(page.get_by_test_id("mixer")).to_be_hidden()
    expect(page.get_by_test_id("job")).to_be_hidden()
    # Nothing of the deleted song stays in this browser: its waveform thumbnails went with it.
    assert page.evaluate(kept, deleted) is False


def test_deleting_a_songs_last_separation_deletes_its_upload(
    page: Page, server: Server, audio: tuple[Path, Path]
) -> None:
    """Delete removed the separation but not the song it was made from: the page said the song
    was deleted while its upload stayed on the server for 72 h. One upload may serve several
    separations (the form keeps it for the next): it goes with the last of them."""
    open_page(page, server)
    with page.expect_response(lambda r: r.url.endswith("/v1/files")) as made:
        upload(page, audio[0])
    file_id = made.value.json()["file_id"]
    api = server.client()
    ids = []
    for stem in ("vocals", "accompaniment"):  # two separations of the one upload
        job = {"input": {"file_id": file_id, "model": "spleeter-2stems", "stems": [stem]}}
        answer = api.post("/v1/queue/audio/stems", json=job)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["request_id"])
    page.locator("#refresh").click()
    note = page.get_by_test_id("history-note")
    for request_id, words in zip(
        ids,
        (
            f"{SONG}.wav: these stems are deleted. The uploaded song stays: another separation"
            " in your list was made from it.",
            f"{SONG}.wav deleted: its stems and the uploaded song.",
        ),
        strict=True,
    ):
        delete = page.locator(f"#delete-{request_id}")
        delete.click()
        delete.click()  # "Confirm delete"
        expect(note).to_have_text(words)
    assert api.get(f"/v1/files/{file_id}").status_code == 404
    # The song chosen above went with it: Separate asks for one again.
    expect(page.get_by_test_id("submit-hint")).to_have_text("First choose a song.")
    shot(page, "deleted-with-upload", full_page=False)


def test_separate_again_tries_another_stem_set_without_uploading_again(
    page: Page, server: Server, audio: tuple[Path, Path]
) -> None:
    """Musicians compare models and stem sets on one song: "Try another model" in the mixer
    (and "Separate again" in the history) puts the song back in the form by its upload on the
    server, so the next separation sends nothing again."""
    sent: list[str] = []  # every upload the page makes
    page.on(
        "request",
        lambda r: (
            sent.append(r.url)
            if r.method == "POST" and urlsplit(r.url).path == "/v1/files"
            else None
        ),
    )
    page.emulate_media(
        reduced_motion="reduce"
    )  # no gliding scroll: the screenshot is where it ends
    open_page(page, server)
    with page.expect_response(
        lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/v1/files"
    ) as made:
        upload(page, audio[0])
    file_id = made.value.json()["file_id"]
    page.locator("#model-select").select_option("spleeter-2stems")
    page.get_by_test_id("quality-select").select_option("fast")
    page.get_by_test_id("submit").click()
    rows = page.get_by_test_id("stem-row")
    expect(rows).to_have_count(2, timeout=180_000)
    # Another upload chosen meanwhile (here: none) would be replaced: the song goes back whole.
    page.get_by_test_id("upload-input").evaluate("el => { el.value = ''; }")
    page.get_by_test_id("again").click()
    focused(page, "model-select")  # the next choice: the model and its stems
    title = page.locator("#drop-title")  # the song's name, where the user now is
    expect(title).to_be_in_viewport()
    expect(title).to_have_text(f"{SONG}.wav")
    expect(page.get_by_test_id("upload-status")).to_have_text(
        f"Ready: {SONG}.wav · 0:03 · already on the server, not sent again."
        " Pick another model or other stems."
    )
    expect(page.get_by_test_id("upload-progress")).to_be_hidden()
    shot(page, "again", full_page=False)
    no_sideways_scroll(page)
    page.locator("#stem-choices input[value=accompaniment]").uncheck()
    with page.expect_response(lambda r: r.url.endswith("/v1/queue/audio/stems")) as second:
        page.get_by_test_id("submit").click()
    assert second.value.status == 202
    assert second.value.request.post_data_json["input"]["file_id"] == file_id
    expect(page.locator("#stems .name")).to_have_text(
        ["vocals", "everything else"], timeout=120_000
    )
    expect(page.locator("#mixer-title")).to_have_text(f"{SONG}.wav")
    # The song chosen in this tab still plays as the original beside the new stems.
    expect(page.get_by_test_id("ab")).to_be_enabled()
    assert sent == [sent[0]], sent  # one upload for both separations
    with server.client() as api:
        listed = api.get("/v1/queue/requests", params={"limit": 2}).json()["data"]
    assert [j["file_id"] for j in listed] == [file_id, file_id]
    # On a phone the history's three buttons and the mixer's fit the width.
    page.set_viewport_size(PHONE)
    item = page.locator(f"[data-id='{listed[1]['request_id']}']")
    expect(item.get_by_role("button", name=f"Separate again {SONG}.wav")).to_be_visible()
    no_sideways_scroll(page)
    item.scroll_into_view_if_needed()
    shot(page, "again-phone")


def test_separate_again_on_a_deleted_upload_asks_for_the_file(page: Page, server: Server) -> None:
    """The upload a song was separated from is gone (deleted here, or past its retention):
    "Separate again" says so in words and asks for the file, instead of a Separate that fails."""
    wav = io.BytesIO()
    sf.write(wav, np.zeros((4410, 2), np.float32), RATE, format="WAV")
    with server.client() as api:
        made = api.post("/v1/files", files={"file": ("Gone.wav", wav.getvalue(), "audio/wav")})
        assert made.status_code == 201, made.text
        file_id = made.json()["file_id"]
        job = {"input": {"file_id": file_id, "model": "spleeter-2stems", "stems": ["vocals"]}}
        answer = api.post("/v1/queue/audio/stems", json=job)
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["request_id"]
        api.put(f"/v1/queue/requests/{request_id}/cancel")
        deadline = time.monotonic() + 60
        while api.get(f"/v1/queue/requests/{request_id}/status").json()["status"] not in (
            "COMPLETED",
            "CANCELLED",
            "FAILED",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert api.delete(f"/v1/files/{file_id}").status_code == 204
    page.emulate_media(reduced_motion="reduce")
    open_page(page, server)
    again = page.locator(f"#again-{request_id}")
    expect(again).to_have_accessible_name("Separate again Gone.wav")
    again.focus()
    page.keyboard.press("Enter")
    error = page.locator("#drop").get_by_test_id("error")
    expect(error).to_have_text(
        "Gone.wav is no longer on the server: its upload expired or was deleted."
        " Choose the file again to separate it."
    )
    focused(page, "upload-input")  # where the file is chosen again; it hears the error there
    expect(page.locator("#drop-title")).to_be_in_viewport()
    expect(page.get_by_test_id("upload-input")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("submit-hint")).to_have_text("First choose a song.")
    shot(page, "again-gone", full_page=False)
    # The same from the cancelled song's own card, opened from the history.
    page.locator(f"#open-{request_id}").click()
    expect(page.get_by_test_id("job-status")).to_have_text("Cancelled")
    error.evaluate("el => { el.textContent = ''; }")  # said again, by this button
    page.get_by_test_id("job-again").click()
    expect(error).to_contain_text("Gone.wav is no longer on the server")


def test_a_song_uploaded_before_is_chosen_again_from_the_recent_uploads(
    phone: Page, server: Server
) -> None:
    """A song uploaded earlier (another tab, the API) and still kept on the server is picked from
    "Or a song you uploaded before", without sending it again."""
    wav = io.BytesIO()
    sf.write(wav, np.zeros((4410, 2), np.float32), RATE, format="WAV")
    name = "A rather long song name from an earlier session (live at the hall).wav"
    with server.client() as api:
        made = api.post("/v1/files", files={"file": (name, wav.getvalue(), "audio/wav")})
        assert made.status_code == 201, made.text
    sent: list[str] = []
    phone.on(
        "request",
        lambda r: (
            sent.append(r.url)
            if r.method == "POST" and urlsplit(r.url).path == "/v1/files"
            else None
        ),
    )
    open_page(phone, server)
    picker = phone.get_by_label("Or a song you uploaded before")
    expect(picker).to_be_visible()
    picker.select_option(made.json()["file_id"])
    expect(phone.get_by_test_id("upload-status")).to_have_text(
        f"Ready: {name} · 0.1 s · already on the server, not sent again."
        " Pick another model or other stems."
    )
    expect(phone.get_by_test_id("submit")).to_be_enabled()
    expect(picker).to_have_value("")  # ready for another
    no_sideways_scroll(phone)
    shot(phone, "again-recent", full_page=False)
    assert sent == []


@pytest.mark.backends("sqlite")  # the page's own layout: the same on either backend
def test_a_long_arabic_name_in_the_history_shows_its_beginning(page: Page, server: Server) -> None:
    """A name too long for its line is cut short with "…": an Arabic one was laid out left to
    right, so the cut took its beginning (read from the right) and the line began mid-word."""
    wav = io.BytesIO()
    sf.write(wav, np.zeros((4410, 2), np.float32), RATE, format="WAV")
    name = "البداية " + "أغنية " * 30 + "النهاية.wav"
    client = server.client()
    made = client.post("/v1/files", files={"file": (name, wav.getvalue(), "audio/wav")})
    assert made.status_code == 201, made.text
    job = {"input": {"file_id": made.json()["file_id"], "model": "spleeter-2stems"}}
    assert client.post("/v1/queue/audio/stems", json=job).status_code == 202
    open_page(page, server)
    song = page.get_by_test_id("history-item").locator(".song", has_text="البداية")
    expect(song).to_be_visible()
    # Where the name's first word is drawn, against the box the line shows.
    first, box = song.evaluate(
        """el => { const r = document.createRange(); r.setStart(el.firstChild, 0);
        r.setEnd(el.firstChild, 7); const a = r.getBoundingClientRect(),
        b = el.getBoundingClientRect(); return [[a.left, a.right], [b.left, b.right]]; }"""
    )
    assert box[0] - 1 <= first[0] and first[1] <= box[1] + 1, (first, box)


def test_a_long_emoji_name_downloads_as_whole_characters(page: Page, server: Server) -> None:
    """The mix and the stems' zip are named after the song's first 100 characters: counted in
    UTF-16 units, the cut went through an emoji's pair and the name ended in U+FFFD."""
    open_page(page, server)
    name = page.evaluate(
        "async () => (await import('/web/words.js')).songName('a' + '🎸'.repeat(120) + '.wav')"
    )
    assert name == "a" + "🎸" * 99


def test_stems_are_named_in_words(page: Page, server: Server) -> None:
    """The mixer's rows and the stem choices said "lead_vocals", "noreverb", "nocrowd": the
    API's names, which the files keep."""
    open_page(page, server)
    names = ["lead_vocals", "hi_hat", "noreverb", "nocrowd", "residual", "vocals", "crowd"]
    said = page.evaluate(
        "async (names) => { const { stemWords } = await import('/web/words.js');"
        " return names.map(stemWords); }",
        names,
    )
    assert said == [
        "lead vocals",
        "hi-hat",
        "without reverb",
        "without the crowd",
        "everything else",
        "vocals",
        "crowd",
    ]


@pytest.mark.backends("sqlite")  # the page's own words
def test_a_model_that_is_there_but_cannot_load_is_not_said_to_be_missing(
    page: Page, server: Server
) -> None:
    """A job failed INVALID_MODEL_CONFIG or CHECKPOINT_MISMATCH (the model is installed; its
    config or checkpoint cannot be used): the page said "Something went wrong. Try again.",
    and trying again fails the same way. Each says what is wrong; a missing model still reads
    as not installed."""
    open_page(page, server)
    said = page.evaluate(
        """async () => {
             const { PlainError } = await import('/web/words.js');
             const codes = ['MODEL_UNAVAILABLE', 'INVALID_MODEL_CONFIG', 'CHECKPOINT_MISMATCH'];
             return Object.fromEntries(codes.map(c => [c, new PlainError(c).message]));
           }"""
    )
    assert said == {
        "MODEL_UNAVAILABLE": "This model isn't installed on the server yet.",
        "INVALID_MODEL_CONFIG": "This model's settings on the server can't be used. Try "
        "another model.",
        "CHECKPOINT_MISMATCH": "This model's weights on the server don't fit its settings. "
        "Try another model.",
    }


@pytest.mark.backends("sqlite")  # the page's own words
def test_a_song_past_the_monthly_allowance_says_what_is_left_and_when(
    page: Page, server: Server
) -> None:
    """A 402 QUOTA_EXCEEDED read "Something went wrong. Try again.": trying again cannot help
    before the month resets, and the server's message says when."""
    open_page(page, server)
    said = page.evaluate(
        """async () => (await import('/web/words.js')).fromBody({error: {code: 'QUOTA_EXCEEDED',
        message: 'this account has 0.50 minutes left; the allowance resets at 2030-02-01'}},
        402).message"""
    )
    assert said == (
        "This song doesn't fit in the audio minutes this account has left this month. "
        "This account has 0.50 minutes left; the allowance resets at 2030-02-01."
    )


@pytest.mark.backends("sqlite")  # the page's own words: the same on either backend
def test_the_model_picker_says_what_each_model_is_good_at(page: Page, server: Server) -> None:
    listed = httpx.get(
        server.base_url + "/v1/models", headers={"Authorization": f"Bearer {server.key}"}
    )
    assert listed.status_code == 200
    catalogue = listed.json()["catalogue"]
    by_id = {m["id"]: m for m in catalogue}
    # A catalogue model this server lacks says exactly how to get it (a model, and a recipe
    # whose pull fetches the models it chains); an installed one has nothing to run.
    assert (by_id["htdemucs"]["installed"], by_id["htdemucs"]["install"]) == (
        False,
        "demixer models pull htdemucs",
    )
    assert (by_id["karaoke"]["installed"], by_id["karaoke"]["install"]) == (
        False,
        "demixer models pull karaoke",
    )
    assert (by_id["spleeter-2stems"]["installed"], by_id["spleeter-2stems"]["install"]) == (
        True,
        None,
    )

    open_page(page, server)
    select = page.get_by_test_id("model-select")
    options = select.evaluate("el => [...el.options].map(o => [o.value, o.textContent])")
    # The installed models (Spleeter's and the cascade on it), the weak one marked and last.
    assert options == [
        ["spleeter-2stems", "spleeter-2stems — vocals, accompaniment"],
        ["cascade-4stems", "cascade-4stems — vocals, drums, bass, other (weak)"],
    ]
    info = page.get_by_test_id("model-info").locator("p")
    for model_id, weak in (("spleeter-2stems", ""), ("cascade-4stems", "weak ")):
        select.select_option(model_id)
        spec = get_spec(model_id)  # the catalogue's own words
        expect(info.nth(0)).to_have_text(weak + spec.description)
        expect(info.nth(1)).to_have_text(f"Quality: {spec.quality}")
        expect(info.locator(".badge.weak")).to_have_count(1 if weak else 0)
    readable(info.locator(".badge.weak"), 4.5)  # cascade-4stems, the last one chosen
    shot(page, "model-picker", full_page=False)

    # Every catalogue model not installed here is offered with the command that pulls it.
    more = page.locator("#more-models")
    more.locator("summary").click()
    items = page.get_by_test_id("available-models").locator("li")
    expect(items.first).to_be_visible()
    missing = [m["id"] for m in catalogue if not m["installed"]]
    assert items.locator("strong").all_text_contents() == missing
    for i, model_id in enumerate(missing):
        item = items.nth(i)
        spec = get_spec(model_id)
        expect(item).to_contain_text(f" — {spec.description} ({spec.quality})")
        expect(item).to_contain_text("To add it, whoever runs the server runs: ")
        expect(item.locator("code")).to_have_text(f"demixer models pull {model_id}")
        if spec.license_class == "permissive":
            expect(item).not_to_contain_text("Licence:")
        else:  # research only, non-commercial, not stated: said before anyone installs it
            expect(item).to_contain_text(f"Licence: {spec.license_class}.")


def test_serve_says_where_to_go(server: Server) -> None:
    """The banner `demixer serve` prints: the page, the docs, the data, the database and
    storage in force (the test servers' PostgreSQL has no password to hide), the workers."""
    env = server.env()
    lines = server.logs().splitlines()
    start = lines.index(f"demixer {demixer.__version__} is running")
    assert lines[start : start + 8] == [
        f"demixer {demixer.__version__} is running",
        f"  web page  {server.base_url}/",
        f"  API docs  {server.base_url}/v1/docs",
        f"  data      {server.data_dir}",
        "  database  "
        + env.get("DEMIXER_DATABASE_URL", f"sqlite:///{server.data_dir / 'demixer.db'}"),
        "  storage   " + env.get("DEMIXER_STORAGE_URL", f"file://{server.data_dir / 'storage'}"),
        "  workers   1 slot on cpu; models: spleeter-2stems, cascade-4stems",
        "Press Ctrl-C to stop.",
    ]


@pytest.mark.backends("sqlite")  # the page's own key handling: the same on either backend
def test_without_a_local_session_the_page_asks_for_a_key(page: Page, server: Server) -> None:
    page.route("**/v1/session", lambda route: route.fulfill(status=403, body="{}"))
    page.goto(server.base_url + "/")
    key = page.get_by_test_id("api-key")
    expect(key).to_be_visible()
    key.fill("dmx_wrong")
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#key-form").get_by_test_id("error")).to_contain_text("isn't valid")
    # The error belongs to the field: back in it, a screen reader hears it is invalid, and why.
    expect(key).to_have_attribute("aria-invalid", "true")
    expect(key).to_have_accessible_description(re.compile(r"^This key isn't valid"))
    # Its placeholder, its edge and the error are readable on the card, in either theme.
    readable(key, 4.5, pseudo="::placeholder")
    readable(key, 3, "border-top-color")
    readable(page.locator("#key-form").get_by_test_id("error"), 4.5)
    key.fill(server.key)
    page.get_by_role("button", name="Use key").click()
    focused(page, "upload-input")  # the key field went: on to choosing a song
    expect(page.locator("#model-select option")).not_to_have_count(0)
    assert page.evaluate("localStorage.getItem('demixer.apiKey')") == server.key
    expect(page.locator("#key-section")).to_be_hidden()
    expect(page.get_by_test_id("session-info")).to_contain_text("Signed in with key dmx_")
    shot(page, "api-key")

    # "Use another key", mistyped: the error says so, and the key in use goes on working.
    page.locator("#switch-key").click()
    key.fill("dmx_mistyped")
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#key-form").get_by_test_id("error")).to_contain_text("isn't valid")
    page.get_by_test_id("key-cancel").click()
    expect(page.locator("#key-section")).to_be_hidden()
    expect(key).not_to_have_attribute("aria-invalid", "true")  # the error went with it
    # Escape puts it away too, back where it was opened.
    page.locator("#switch-key").click()
    focused(page, "api-key")
    page.keyboard.press("Escape")
    expect(page.locator("#key-section")).to_be_hidden()
    focused(page, "switch-key")
    focused(page, "switch-key")  # back where it was opened
    with page.expect_response(re.compile(r"/v1/queue/requests\?limit=")) as listed:
        page.get_by_role("button", name="Refresh").click()
    assert listed.value.status == 200  # asked with the key that works
    expect(page.locator("#history").get_by_test_id("error")).to_have_text("")
    assert page.evaluate("localStorage.getItem('demixer.apiKey')") == server.key


@pytest.mark.backends("sqlite")  # the page's own key handling: the same on either backend
def test_a_typed_key_can_be_forgotten(page: Page, server: Server) -> None:
    """A key typed in the page stayed in the browser's localStorage for good: on a shared
    computer the next person opened the page signed in. "Forget this key" takes it (and the
    songs' waveforms kept here) away and returns to the key prompt; the local session, which
    is the server's own, has nothing to forget."""
    open_page(page, server)  # the local session
    expect(page.get_by_test_id("session-info")).to_contain_text("On this computer")
    forget = page.get_by_role("button", name="Forget this key")
    expect(forget).to_be_hidden()
    page.route("**/v1/session", lambda route: route.fulfill(status=403, body="{}"))
    page.reload()
    key = page.get_by_test_id("api-key")
    key.fill(server.key)
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_test_id("session-info")).to_contain_text("Signed in with key dmx_")
    page.evaluate("localStorage.setItem('demixer.thumbs', JSON.stringify({req_a: []}))")
    shot(page, "key-forget", full_page=False)
    forget.focus()
    page.keyboard.press("Enter")
    expect(key).to_be_visible()
    focused(page, "api-key")
    expect(key).to_have_value("")
    expect(page.get_by_test_id("session-info")).to_have_text(
        "The key was forgotten: this browser keeps none."
    )
    expect(forget).to_be_hidden()
    expect(page.locator("#switch-key")).to_be_hidden()
    assert page.evaluate(
        "[localStorage.getItem('demixer.apiKey'), localStorage.getItem('demixer.thumbs')]"
    ) == [None, None]
    expect(page.locator("#history-list li")).to_have_count(0)  # nothing of the account
    page.set_viewport_size(PHONE)
    key.fill(server.key)
    page.get_by_role("button", name="Use key").click()
    expect(forget).to_be_visible()
    no_sideways_scroll(page)
    shot(page, "key-forget-phone", full_page=False)
    # A kept key the server refuses now (revoked, another server's) had no way out of the
    # browser but typing another: the refusal offers to forget it.
    page.evaluate("localStorage.setItem('demixer.apiKey', 'dmx_revoked_elsewhere')")
    page.reload()
    expect(page.locator("#key-error")).not_to_be_empty()
    expect(forget).to_be_visible()
    shot(page, "key-refused-phone", full_page=False)
    forget.click()
    expect(key).to_have_value("")
    assert page.evaluate("localStorage.getItem('demixer.apiKey')") is None


@pytest.mark.backends("sqlite")  # the page's own key handling: the same on either backend
def test_the_local_session_is_loopback_only_stable_and_the_printed_keys_account(
    server: Server,
) -> None:
    url = server.base_url + "/v1/session"
    first = httpx.get(url)
    assert first.status_code == 200, first.text
    key = first.json()["api_key"]
    assert httpx.get(url).json()["api_key"] == key  # stored, not a new key per visit
    session_file = server.data_dir / "web-session.json"
    assert os.stat(session_file).st_mode & 0o077 == 0
    assert key not in server.logs()
    # One account: what the key `serve` printed uploads, the page's session sees.
    wav = io.BytesIO()
    sf.write(wav, np.zeros((4410, 2), np.float32), RATE, format="WAV")
    made = httpx.post(
        server.base_url + "/v1/files",
        headers={"Authorization": f"Bearer {server.key}"},
        files={"file": ("quiet.wav", wav.getvalue(), "audio/wav")},
        data={"purpose": "audio.separate.input"},
    )
    assert made.status_code == 201, made.text
    seen = httpx.get(
        f"{server.base_url}/v1/files/{made.json()['file_id']}",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert seen.status_code == 200, seen.text
    # DNS rebinding (a foreign Host) and other sites' pages (a foreign Origin) get nothing.
    assert httpx.get(url, headers={"Host": "evil.example"}).status_code == 403
    refused = httpx.get(url, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and refused.json()["error"]["code"]
    # An unparsable one (an unclosed IPv6 bracket) is as foreign, not a 500.
    assert httpx.get(url, headers={"Origin": "http://[::1"}).status_code == 403
    models = httpx.get(server.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert models.status_code == 200
    page = httpx.get(server.base_url + "/")
    assert page.status_code == 200 and 'data-testid="upload-input"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in (
        "app.js",
        "page.js",
        "form.js",
        "job.js",
        "history.js",
        "mixer.js",
        "stems.js",
        "transport.js",
        "timeline.js",
        "mixdown.js",
        "words.js",
        "files.js",
        "stretch.js",
        "app.css",
        "favicon.svg",
    ):
        assert httpx.get(f"{server.base_url}/web/{asset}").status_code == 200, asset
    icon = httpx.get(server.base_url + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert httpx.get(server.base_url + "/web/../app.py").status_code == 404
