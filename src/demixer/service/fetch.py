"""Fetching a job's ``audio_url`` input into a local file, in the worker's parent process.

One function, :func:`fetch_audio_url`, so that the guard on where it may connect (an SSRF
guard: no loopback, private or link-local addresses) can be added in one place,
:func:`check_url`, which every hop of a redirect chain passes through. The body is streamed to
disk and the size limit is enforced while streaming, so a lying or absent ``Content-Length``
cannot fill the disk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from demixer.errors import DemixerError

__all__ = ["AudioUrlFailed", "check_url", "fetch_audio_url"]

MAX_REDIRECTS = 5
_CHUNK = 1 << 16
_REDIRECTS = (301, 302, 303, 307, 308)


class AudioUrlFailed(DemixerError):
    """The job's ``audio_url`` could not be fetched.

    Attributes:
        retryable: True for failures that may pass on a later attempt (connection errors,
            timeouts, HTTP 5xx and 429); False for the URL's own fault (bad URL, 4xx, too big).
    """

    code = "INVALID_AUDIO_URL"

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def check_url(url: str) -> None:
    """Raise :class:`AudioUrlFailed` unless ``url`` may be fetched (http or https, a host)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise AudioUrlFailed(
            f"audio_url {url!r} is not a valid URL: {exc}", retryable=False
        ) from None
    if parts.scheme not in ("http", "https"):
        raise AudioUrlFailed(
            f"audio_url must be an http or https URL, not {parts.scheme or 'schemeless'!r}",
            retryable=False,
        )
    if not parts.hostname:
        raise AudioUrlFailed(f"audio_url {url!r} has no host", retryable=False)


def fetch_audio_url(
    url: str,
    dest: Path,
    max_bytes: int,
    timeout: float,
    *,
    on_chunk: Callable[[int], None] | None = None,
    client: httpx.Client | None = None,
) -> int:
    """Download ``url`` into ``dest`` (created or replaced); returns the bytes written.

    Args:
        url: an http(s) URL; redirects are followed (at most :data:`MAX_REDIRECTS`), each hop
            checked by :func:`check_url`.
        dest: the file to write; removed again when the download fails.
        max_bytes: the most bytes accepted (checked against ``Content-Length`` and while
            streaming).
        timeout: seconds allowed for connecting and for each read (not the whole transfer:
            the job's own time limit bounds that).
        on_chunk: called with the bytes received so far after each chunk; it may raise to
            abort the download (the worker heartbeats from here).
        client: an httpx client to use (tests, a future guarded transport); default: a new one.

    Raises:
        AudioUrlFailed: bad URL, HTTP error, too large, or a network failure.
    """
    own = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)
    try:
        return _fetch(http, url, dest, max_bytes, on_chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            dest.unlink(missing_ok=True)
        raise
    finally:
        if own:
            http.close()


def _fetch(
    http: httpx.Client,
    url: str,
    dest: Path,
    max_bytes: int,
    on_chunk: Callable[[int], None] | None,
) -> int:
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url)
        try:
            with http.stream("GET", url, follow_redirects=False) as response:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                _check_status(url, response)
                return _save(url, response, dest, max_bytes, on_chunk)
        except httpx.InvalidURL as exc:
            raise AudioUrlFailed(
                f"audio_url {url!r} is not a valid URL: {exc}", retryable=False
            ) from None
        except httpx.UnsupportedProtocol as exc:
            raise AudioUrlFailed(f"audio_url {url!r}: {exc}", retryable=False) from None
        except httpx.TransportError as exc:  # connect/read errors and timeouts
            raise AudioUrlFailed(
                f"could not fetch audio_url {url!r}: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc
    raise AudioUrlFailed(f"audio_url redirected more than {MAX_REDIRECTS} times", retryable=False)


def _check_status(url: str, response: httpx.Response) -> None:
    status = response.status_code
    if status == 200:
        return
    retryable = status >= 500 or status in (408, 429)
    raise AudioUrlFailed(
        f"fetching audio_url {url!r} answered HTTP {status} {response.reason_phrase}".rstrip(),
        retryable=retryable,
    )


def _save(
    url: str,
    response: httpx.Response,
    dest: Path,
    max_bytes: int,
    on_chunk: Callable[[int], None] | None,
) -> int:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise AudioUrlFailed(
            f"audio_url {url!r} is {int(declared)} bytes; the limit is {max_bytes}",
            retryable=False,
        )
    total = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in response.iter_bytes(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise AudioUrlFailed(
                    f"audio_url {url!r} sent more than the limit of {max_bytes} bytes",
                    retryable=False,
                )
            out.write(chunk)
            if on_chunk is not None:
                on_chunk(total)
    return total
