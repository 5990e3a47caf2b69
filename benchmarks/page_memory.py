"""What the web page's stem mixer holds in the browser for long songs, and whether it still works.

A real ``demixer serve`` (the local session, as ``make run`` starts it) separates a 3-second song
with ``cascade-4stems`` (vocals, drums, bass, other: 16-bit stereo 44.1 kHz WAVs); its four
stems are then replaced in the server's storage by WAVs of 1, 10, 30 and 60 minutes (noise
under a slow swell: what is in them does not change what the page holds), so that the page opens
a song of that length from the history exactly as it opens any finished song. The separation
itself is not what is measured, and would take hours on a small machine for the long ones.

For each length, in Debian's Chromium (the one tests/test_web.py drives), a fresh browser with a
profile on disk, one JSON row (RESULTS.md's "Page memory" table was made from them):

- **ready**: seconds from the click on Open until the mixer holds every stem (playable);
- **JS heap**: CDP ``Performance.getMetrics`` ``JSHeapUsedSize`` once ready (the V8 heap; the
  samples of an AudioBuffer live outside it);
- **tab**: the RSS of the tab's renderer process once ready, and its peak while opening and
  while making the mix (psutil, every 50 ms); **browser**: the same of Chromium's browser
  process (it holds the page's Blobs, the download links' files);
- **works**: play, seek to the middle, solo, 50 % speed, and "Download this mix" (at 100 %:
  the file's length checked), each checked on the page's own state; the seconds the mix took.

    .venv/bin/python benchmarks/page_memory.py [--minutes 1 10 30 60] [--kill-mb 8000]

The tab is killed (and the row says so) once its renderer passes ``--kill-mb``: the machine
this runs on is shared, and the page before 3e68be6 passed 8 GB opening a 60-minute song.

The long WAV goes to a temporary directory (635 MB for 60 minutes, one file linked as the four
stems); the run takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import soundfile as sf
from playwright.sync_api import BrowserContext, Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from service_harness import fast_env, running_server

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--autoplay-policy=no-user-gesture-required",
]
RATE = 44100
STEMS = ("vocals", "drums", "bass", "other")
MB = 1024 * 1024


def long_wav(path: Path, minutes: float) -> None:
    """``minutes`` of 16-bit stereo at 44.1 kHz, written a minute at a time."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as out:
        for m in range(int(np.ceil(minutes))):
            n = int(min(1.0, minutes - m) * 60 * RATE)
            swell = 0.05 + 0.1 * np.abs(np.sin(np.arange(n) / RATE / 7 + m))
            out.write((swell[:, None] * rng.standard_normal((n, 2))).astype(np.float32))


class Peak:
    """The largest RSS of the tab's renderer and of Chromium's browser process, polled."""

    def __init__(self, browser_pid: int, kill_mb: float) -> None:
        self.root = psutil.Process(browser_pid)
        self.kill_bytes = kill_mb * MB
        self.killed = False
        self.tab = self.all = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def now(self) -> tuple[int, int]:
        tab = 0
        total = self.root.memory_info().rss
        for p in self.root.children(recursive=True):
            try:
                rss = p.memory_info().rss
                if "--type=renderer" in " ".join(p.cmdline()):
                    tab = max(tab, rss)
                    if rss > self.kill_bytes:  # the machine is shared: the tab goes first
                        p.kill()
                        self.killed = True
            except psutil.Error:
                pass
        return tab, total

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            tab, total = self.now()
            self.tab, self.all = max(self.tab, tab), max(self.all, total)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def until(page: Page, script: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (answer := page.evaluate(script)):
        if time.monotonic() > deadline:
            raise TimeoutError(script)
        page.wait_for_timeout(50)
    return answer


def measure(page: Page, base_url: str, request_id: str, minutes: float, peak: Peak) -> dict:
    row: dict[str, Any] = {"minutes": minutes}
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.goto(base_url + "/")
    page.locator(f"#open-{request_id}").click(timeout=60_000)
    t = time.monotonic()
    # Ready, or the page said why not (under the mixer).
    said = until(
        page,
        f"() => window.demixerMixer.stems.length === {len(STEMS)} ? 'ready'"
        " : document.querySelector('#mixer > [data-testid=error]').textContent",
        1800,
    )
    if said != "ready":
        raise RuntimeError(f"the page said: {said}")
    row["ready_s"] = round(time.monotonic() - t, 1)
    page.wait_for_timeout(2000)  # the garbage of opening collected
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    row["heap_mb"] = round(metrics["JSHeapUsedSize"] / MB)
    row["ctx_rate"] = page.evaluate("demixerMixer.ctx.sampleRate")
    tab, total = peak.now()
    row["tab_mb"], row["browser_mb"] = round(tab / MB), round(total / MB)
    row["tab_peak_open_mb"] = round(peak.tab / MB)
    works = {}
    page.get_by_test_id("play").click()
    works["play"] = bool(
        until(page, "() => demixerMixer.playing && demixerMixer.position() > 0.2", 20)
    )
    page.get_by_test_id("position").fill(str(minutes * 30))
    works["seek"] = bool(until(page, f"() => demixerMixer.position() > {minutes * 30 + 0.1}", 20))
    page.get_by_test_id("stem-solo").first.click()
    works["solo"] = page.evaluate(
        "() => Object.values(demixerMixer.gains()).filter((g) => g > 0).length === 1"
    )
    page.get_by_role("combobox", name="Speed", exact=True).select_option("50")
    at = page.evaluate("demixerMixer.position()")
    page.wait_for_timeout(1500)
    moved = page.evaluate("demixerMixer.position()") - at
    works["speed"] = 0.4 < moved < 1.0
    page.get_by_role("combobox", name="Speed", exact=True).select_option("100")
    page.get_by_test_id("play").click()  # pause
    page.get_by_test_id("stem-solo").first.click()
    t = time.monotonic()
    try:
        with page.expect_download(timeout=1_800_000) as info:
            page.get_by_test_id("render-mix").click()
        size = os.path.getsize(info.value.path())
        works["mix"] = abs(size - (44 + minutes * 60 * RATE * 4)) < 4 * RATE
        row["mix_s"] = round(time.monotonic() - t, 1)
    except Exception as e:  # the tab died, or the mix failed on the page
        works["mix"] = False
        row["mix_error"] = str(e).splitlines()[0]
    row["works"] = works
    row["tab_peak_mb"], row["browser_peak_mb"] = round(peak.tab / MB), round(peak.all / MB)
    return row


def one_length(
    context: BrowserContext, pid: int, base_url: str, rid: str, minutes: float, kill_mb: float
) -> dict:
    """The row of one length, in a fresh tab; the tab killed past ``kill_mb`` says so."""
    page = context.pages[0] if context.pages else context.new_page()
    crashed: list[str] = []
    page.on("crash", lambda _: crashed.append("the tab crashed"))
    with Peak(pid, kill_mb) as peak:
        try:
            row = measure(page, base_url, rid, minutes, peak)
        except Exception as e:
            error = f"killed past {kill_mb:.0f} MB" if peak.killed else str(e)
            row = {
                "minutes": minutes,
                "error": (crashed or [error])[0].splitlines()[0],
                "tab_peak_mb": round(peak.tab / MB),
                "browser_peak_mb": round(peak.all / MB),
            }
        if peak.killed:
            row["killed_past_mb"] = kill_mb
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30, 60])
    parser.add_argument(
        "--kill-mb", type=float, default=8000, help="the tab is killed past this RSS (MB)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="page-memory-"))
    try:
        models = work / "models"
        models.mkdir()
        env = fast_env(DEMIXER_LOCAL_SESSION="1", DEMIXER_MODEL_DIR=str(models))
        short = work / "short.wav"
        long_wav(short, 3 / 60)
        rows = []
        with running_server(work / "data", env=env) as server, sync_playwright() as p:
            with server.client() as api:
                up = api.post(
                    "/v1/files", files={"file": ("song.wav", short.read_bytes(), "audio/wav")}
                ).json()
                job = api.post(
                    "/v1/queue/audio/stems",
                    json={
                        "input": {
                            "file_id": up["file_id"],
                            "model": "cascade-4stems",
                            "quality": "fast",
                        }
                    },
                ).json()
                rid = job["request_id"]
                while api.get(f"/v1/queue/requests/{rid}/status").json()["status"] != "COMPLETED":
                    time.sleep(0.5)
            stored = work / "data" / "storage" / "outputs" / rid / "attempt-1"
            for minutes in args.minutes:
                source = work / f"{minutes}.wav"
                long_wav(source, minutes)
                for stem in STEMS:
                    (stored / f"{stem}.wav").unlink()
                    os.link(source, stored / f"{stem}.wav")
                # A profile on disk, as a person's browser has: there Chromium keeps big Blobs
                # (the page's stem files) on disk past its memory limit for them. (A private
                # window keeps them in memory: about 2 GB of files in all, then "Failed to fetch".)
                context = p.chromium.launch_persistent_context(
                    work / f"profile-{minutes}",
                    executable_path=CHROMIUM,
                    args=ARGS,
                    headless=True,
                    accept_downloads=True,
                    viewport={"width": 1366, "height": 900},
                )
                pid = next(
                    c.pid
                    for c in psutil.Process().children(recursive=True)
                    if c.name().startswith("chrom") and "--type=" not in " ".join(c.cmdline())
                )
                row = one_length(context, pid, server.base_url, rid, minutes, args.kill_mb)
                print(json.dumps(row), flush=True)
                rows.append(row)
                context.close()
                source.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
