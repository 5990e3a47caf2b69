"""Resumable, verified weight downloads against a real HTTP server on 127.0.0.1.

The server can honour ``Range`` or ignore it, cut a transfer short after N bytes (the way a
dropped connection looks to the client), serve tampered bytes, and hold a response until the
test lets it go. Every URL is that server's; nothing reaches the internet.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from demixer.errors import DownloadFailed, InvalidModelDir
from demixer.models import download as download_module
from demixer.models.download import download
from weights_origin import BODY, SHA, Origin, serve


@pytest.fixture
def origin() -> Iterator[Origin]:
    with serve() as state:
        yield state


def fetch(origin: Origin, dest: Path, progress: list[tuple[int, int | None]] | None = None) -> Path:
    report = None if progress is None else lambda done, total: progress.append((done, total))
    return download(
        origin.url + "/weights.ckpt",
        dest,
        sha256=SHA,
        size=len(BODY),
        on_progress=report,
        timeout=10,
    )


def test_an_interrupted_download_resumes_where_it_stopped(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "m" / "weights.ckpt"
    part = dest.with_name("weights.ckpt.part")
    origin.cut_after = 40_000
    with pytest.raises(DownloadFailed, match="resumes"):
        fetch(origin, dest)
    assert not dest.exists()
    assert part.read_bytes() == BODY[:40_000]  # kept for the next attempt

    progress: list[tuple[int, int | None]] = []
    assert fetch(origin, dest, progress) == dest
    assert origin.ranges == [None, "bytes=40000-"]
    assert dest.read_bytes() == BODY
    assert not part.exists()
    assert progress[0] == (40_000, len(BODY)) and progress[-1] == (len(BODY), len(BODY))
    assert oct(dest.stat().st_mode & 0o777) == "0o644"


def test_a_server_ignoring_range_gets_a_clean_restart(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "weights.ckpt"
    origin.honour_range = False
    origin.cut_after = 30_000
    with pytest.raises(DownloadFailed):
        fetch(origin, dest)
    assert fetch(origin, dest) == dest
    assert origin.ranges == [None, "bytes=30000-"]  # asked for the rest, got the whole file
    assert dest.read_bytes() == BODY  # not the kept prefix followed by the whole file


def test_a_bad_partial_file_is_dropped_and_the_file_fetched_whole(
    origin: Origin, tmp_path: Path
) -> None:
    dest = tmp_path / "weights.ckpt"
    dest.with_name("weights.ckpt.part").write_bytes(b"\0" * 50_000)  # not the file's start
    assert fetch(origin, dest) == dest
    assert origin.ranges == ["bytes=50000-", None]
    assert dest.read_bytes() == BODY


def test_a_partial_file_longer_than_the_pin_is_dropped(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "weights.ckpt"
    dest.with_name("weights.ckpt.part").write_bytes(BODY + b"more")
    assert fetch(origin, dest) == dest
    assert origin.ranges == [None]
    assert dest.read_bytes() == BODY


def test_a_complete_partial_file_is_verified_without_a_request(
    origin: Origin, tmp_path: Path
) -> None:
    dest = tmp_path / "weights.ckpt"
    dest.with_name("weights.ckpt.part").write_bytes(BODY)  # cut just before the rename
    assert fetch(origin, dest) == dest
    assert origin.ranges == []
    assert dest.read_bytes() == BODY


def test_a_server_that_stalls_before_any_byte_times_out_and_leaves_nothing(
    origin: Origin, tmp_path: Path
) -> None:
    origin.hold = threading.Event()  # the answer never comes within the timeout
    url = origin.url + "/weights.ckpt"
    with pytest.raises(DownloadFailed) as stalled:
        download(url, tmp_path / "weights.ckpt", sha256=SHA, size=len(BODY), timeout=0.3)
    # Nothing was received, and the empty .part is gone: no word of bytes kept to resume from.
    assert stalled.value.message == f"downloading {url} failed: TimeoutError('timed out')"
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_stalls_mid_file_times_out_keeping_what_came(
    origin: Origin, tmp_path: Path
) -> None:
    big = BODY * 11  # over one 1 MiB read: the first whole read is written before the stall
    origin.files["/big.ckpt"] = big
    origin.stall_after = 1_100_000
    dest = tmp_path / "big.ckpt"
    part = dest.with_name("big.ckpt.part")
    url = origin.url + "/big.ckpt"
    with pytest.raises(DownloadFailed) as stalled:
        download(url, dest, sha256=hashlib.sha256(big).hexdigest(), size=len(big), timeout=0.3)
    assert stalled.value.message == (
        f"downloading {url} failed: TimeoutError('timed out'); the 1048576 bytes received are "
        f"kept in {part}, and the same command resumes from them"
    )
    assert part.read_bytes() == big[: 1 << 20]


def test_a_tampered_file_is_refused_and_nothing_is_kept(origin: Origin, tmp_path: Path) -> None:
    tampered = bytearray(BODY)
    tampered[70_000] ^= 0xFF
    origin.files["/weights.ckpt"] = bytes(tampered)
    dest = tmp_path / "weights.ckpt"
    with pytest.raises(DownloadFailed, match=f"expected SHA-256 {SHA}"):
        fetch(origin, dest)
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_file_that_fails_its_pin_twice_is_refused(origin: Origin, tmp_path: Path) -> None:
    tampered = bytearray(BODY)
    tampered[90_000] ^= 0xFF  # after the kept prefix: the restart gets the same bad bytes
    origin.files["/weights.ckpt"] = bytes(tampered)
    dest = tmp_path / "weights.ckpt"
    dest.with_name("weights.ckpt.part").write_bytes(BODY[:20_000])
    with pytest.raises(DownloadFailed, match="discarded"):
        fetch(origin, dest)
    assert origin.ranges == ["bytes=20000-", None]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="the .part lock uses POSIX flock")
def test_two_concurrent_downloads_of_one_file_fetch_it_once(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "weights.ckpt"
    origin.hold = threading.Event()
    results: list[Path | BaseException] = []

    def run() -> None:
        try:
            results.append(fetch(origin, dest))
        except BaseException as exc:  # surfaced by the assertion below
            results.append(exc)

    first = threading.Thread(target=run)
    first.start()
    assert origin.seen.wait(10)  # the first holds the lock and is mid-request
    origin.seen.clear()
    second = threading.Thread(target=run)
    second.start()
    # Without the lock the second would now send its own request; with it, none comes. (The
    # wait can only let a wrong implementation show itself; a right one passes either way.)
    assert not origin.seen.wait(0.5)
    origin.hold.set()
    first.join(30)
    second.join(30)
    assert results == [dest, dest]
    assert origin.ranges == [None]  # the second found the finished file and fetched nothing
    assert dest.read_bytes() == BODY


@pytest.mark.skipif(os.name != "posix", reason="O_NOFOLLOW is POSIX")
def test_a_partial_file_that_is_a_symlink_is_refused_and_its_target_untouched(
    origin: Origin, tmp_path: Path
) -> None:
    """In a model directory others can write to, a planted ``.part`` link must not get a
    user's own file truncated, overwritten with the weights and made readable by all."""
    private = tmp_path / "private.txt"
    private.write_bytes(b"secret " * 20_000)
    private.chmod(0o600)
    dest = tmp_path / "models" / "weights.ckpt"
    dest.parent.mkdir()
    dest.with_name("weights.ckpt.part").symlink_to(private)
    with pytest.raises(InvalidModelDir, match=r"weights.ckpt.part is a symbolic link, not a "):
        fetch(origin, dest)
    assert private.read_bytes() == b"secret " * 20_000
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    assert not dest.exists() and not dest.is_symlink()
    assert origin.ranges == []


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits a download takes, recorded instead of slept."""
    taken: list[float] = []
    monkeypatch.setattr(download_module, "_sleep", taken.append)
    return taken


def test_a_server_saying_come_back_later_is_asked_again_after_the_wait_it_names(
    origin: Origin, tmp_path: Path, waits: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """Hugging Face answers 429 to an address that downloads too often, and a busy mirror
    503: `models pull` failed at once with HTTP 429, where waiting a moment would do."""
    origin.refusals = [(429, "7"), (503, None)]
    dest = tmp_path / "weights.ckpt"
    assert fetch(origin, dest) == dest
    assert dest.read_bytes() == BODY
    assert waits == [7.0, 2.0]  # as asked; then, with no Retry-After, the second step of 1, 2, 4
    assert origin.ranges == [None, None, None]
    host = origin.url.removeprefix("http://")
    assert [r.getMessage() for r in caplog.records] == [
        f"{host} answered HTTP 429 Too Many Requests; asking again in 7 s (1 of 3)",
        f"{host} answered HTTP 503 Service Unavailable; asking again in 2 s (2 of 3)",
    ]


def test_a_server_still_busy_after_three_waits_is_one_error_saying_to_come_back(
    origin: Origin, tmp_path: Path, waits: list[float]
) -> None:
    origin.refusals = [(503, "1")] * 4
    url = origin.url + "/weights.ckpt"
    with pytest.raises(DownloadFailed) as busy:
        fetch(origin, tmp_path / "weights.ckpt")
    assert busy.value.message == (
        f"downloading {url} failed: HTTP 503 Service Unavailable; asked 4 times: run the same "
        "command again later"
    )
    assert waits == [1.0, 1.0, 1.0]
    assert list(tmp_path.iterdir()) == []


def test_a_wait_longer_than_a_minute_is_the_users_to_take(
    origin: Origin, tmp_path: Path, waits: list[float]
) -> None:
    origin.refusals = [(429, "3600")]
    url = origin.url + "/weights.ckpt"
    with pytest.raises(DownloadFailed) as limited:
        fetch(origin, tmp_path / "weights.ckpt")
    assert limited.value.message == (
        f"downloading {url} failed: HTTP 429 Too Many Requests; the server asks to wait 3600 s: "
        "run the same command again then"
    )
    assert waits == []  # not slept through: an hour with no word is a hung command
    assert origin.ranges == [None]
