"""Fetching a job's ``audio_url`` input into a local file, in the worker's parent process.

One function, :func:`fetch_audio_url`. Redirects are followed by hand so that every hop passes
the SSRF guard (:func:`demixer.service.urlguard.check_url`: no loopback, private, link-local or
metadata addresses unless allowlisted) before anything connects to it, and the connection
itself goes through :class:`~demixer.service.urlguard.GuardedTransport`, which dials only
addresses it has just checked (so DNS rebinding cannot swap one in after the check). The body
is streamed to disk and the size limit is enforced while streaming, so a lying or absent
``Content-Length`` cannot fill the disk. A compressed body (``Content-Encoding``) is taken only
with one layer of gzip or deflate, which at most multiplies each piece read by about a thousand:
layers stacked on each other multiply again, and a few kilobytes would decompress into
gigabytes in memory, at once, before the size limit could see them. A body that, once it has
taken longer than ``slow_after`` seconds, averages under
:data:`~demixer.settings.MIN_BODY_RATE` (as an upload's body must) is given up on: an origin
trickling a few bytes just inside the read timeout held a worker slot until the job's own time
limit (an hour by default).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path
from urllib.parse import urljoin

import httpx

from demixer.errors import DemixerError
from demixer.naming import shown_url
from demixer.service.urlguard import (
    UnresolvableHost,
    UrlRefused,
    check_url,
    guarded_client,
    time_limit,
)
from demixer.settings import MIN_BODY_RATE

__all__ = ["AudioUrlFailed", "fetch_audio_url"]

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
# Audio is compressed already: ask for the bytes as they are. A server may encode them anyway;
# then one of these, once (see the module's docstring).
_ENCODINGS = ("gzip", "deflate")  # what httpx decodes


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


def _refused(url: str, exc: UrlRefused) -> AudioUrlFailed:
    # A name that does not resolve may resolve later (DNS trouble); a forbidden address won't.
    return AudioUrlFailed(
        f"audio_url {shown_url(url)!r} refused: {exc.message}",
        retryable=isinstance(exc, UnresolvableHost),
    )


def fetch_audio_url(
    url: str,
    dest: Path,
    max_bytes: int,
    timeout: float,
    *,
    allowlist: Collection[str] = (),
    on_chunk: Callable[[int], None] | None = None,
    client: httpx.Client | None = None,
    slow_after: float | None = None,
) -> int:
    """Download ``url`` into ``dest`` (created or replaced); returns the bytes written.

    Args:
        url: an http(s) URL; redirects are followed (at most :data:`MAX_REDIRECTS`), each hop
            checked by :func:`~demixer.service.urlguard.check_url` before it is requested.
        dest: the file to write; removed again when the download fails.
        max_bytes: the most bytes accepted (checked against ``Content-Length`` and while
            streaming).
        timeout: seconds allowed for connecting and receiving the answer's status and headers,
            all together, and then for each read of the body (not the whole transfer: the
            job's own time limit bounds that, checked in ``on_chunk``, and so does
            ``slow_after``).
        on_chunk: called with the bytes received so far after each chunk; it may raise to
            abort the download (the worker heartbeats from here).
        allowlist: host names, addresses and networks the guard allows anyway
            (``settings.url_allowlist``, parsed by ``urlguard.parse_allowlist``).
        client: an httpx client to use; default: :func:`~demixer.service.urlguard.guarded_client`.
            A client given here should use ``GuardedTransport`` too: without it only the
            per-hop URL check stands between the fetch and DNS rebinding.
        slow_after: seconds the body may take before it must average
            :data:`~demixer.settings.MIN_BODY_RATE` bytes a second, counted from when its
            headers are in (None: ``timeout``).

    Raises:
        AudioUrlFailed: bad URL, HTTP error, too large, too slow, or a network failure.
    """
    own = client is None
    http = client or guarded_client(allowlist, timeout)
    try:
        grace = timeout if slow_after is None else slow_after
        return _fetch(http, url, dest, max_bytes, timeout, allowlist, on_chunk, grace)
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
    timeout: float,
    allowlist: Collection[str],
    on_chunk: Callable[[int], None] | None,
    slow_after: float,
) -> int:
    for _ in range(MAX_REDIRECTS + 1):
        try:
            check_url(url, allowlist)  # every hop, before anything connects to it
        except UrlRefused as exc:
            raise _refused(url, exc) from None
        try:
            with contextlib.ExitStack() as stack:
                # Until the headers are in, nothing calls on_chunk (no heartbeat, no check of
                # the job's time limit or a cancel): a server sending "100 Continue" or a
                # header line every second, each read in time, held the worker for good.
                with time_limit(timeout):
                    response = stack.enter_context(
                        http.stream(
                            "GET",
                            url,
                            headers={"accept-encoding": "identity"},
                            follow_redirects=False,
                        )
                    )
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                _check_status(url, response)
                return _save(url, response, dest, max_bytes, on_chunk, slow_after)
        except UrlRefused as exc:  # the transport's own check, at connect time
            raise _refused(url, exc) from None
        except httpx.InvalidURL as exc:
            raise AudioUrlFailed(
                f"audio_url {shown_url(url)!r} is not a valid URL: {exc}", retryable=False
            ) from None
        except httpx.UnsupportedProtocol as exc:
            raise AudioUrlFailed(f"audio_url {shown_url(url)!r}: {exc}", retryable=False) from None
        except httpx.DecodingError as exc:  # the server's gzip or deflate is corrupt
            raise AudioUrlFailed(
                f"audio_url {shown_url(url)!r} sent a body its Content-Encoding cannot "
                f"decompress: {exc}",
                retryable=False,
            ) from None
        except httpx.TransportError as exc:  # connect/read errors and timeouts
            raise AudioUrlFailed(
                f"could not fetch audio_url {shown_url(url)!r}: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc
    raise AudioUrlFailed(f"audio_url redirected more than {MAX_REDIRECTS} times", retryable=False)


def _check_status(url: str, response: httpx.Response) -> None:
    status = response.status_code
    if status == 200:
        return
    retryable = status >= 500 or status in (408, 429)
    raise AudioUrlFailed(
        f"fetching audio_url {shown_url(url)!r} answered HTTP {status} "
        f"{response.reason_phrase}".rstrip(),
        retryable=retryable,
    )


def _save(
    url: str,
    response: httpx.Response,
    dest: Path,
    max_bytes: int,
    on_chunk: Callable[[int], None] | None,
    slow_after: float,
) -> int:
    codings = [
        coding.strip().lower()
        for coding in response.headers.get_list("content-encoding", split_commas=True)
        if coding.strip().lower() not in ("", "identity")
    ]
    if len(codings) > 1 or (codings and codings[0] not in _ENCODINGS):
        raise AudioUrlFailed(
            f"audio_url {shown_url(url)!r} was sent with Content-Encoding "
            f"{', '.join(codings)!r}; demixer takes the file as it is, or compressed once with "
            "gzip or deflate",
            retryable=False,
        )
    kind = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        # A share or preview link (cloud drives answer those with a page about the file): said
        # as the URL's fault, not as an audio file demixer cannot read.
        raise AudioUrlFailed(
            f"audio_url {shown_url(url)!r} answered a web page ({kind}), not an audio file; "
            "give the file's direct download link",
            retryable=False,
        )
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise AudioUrlFailed(
            f"audio_url {shown_url(url)!r} is {int(declared)} bytes; the limit is {max_bytes}",
            retryable=False,
        )
    total = 0
    began = time.monotonic()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        # Each piece as it arrives: a fixed chunk size would wait for that many bytes, and a
        # slow server would hold off on_chunk (heartbeat, cancel, time limit) for as long.
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > max_bytes:
                raise AudioUrlFailed(
                    f"audio_url {shown_url(url)!r} sent more than the limit of {max_bytes} bytes",
                    retryable=False,
                )
            out.write(chunk)
            took = time.monotonic() - began
            if took > slow_after and total < MIN_BODY_RATE * took:
                # Not retried: another attempt would hold a slot as long again for the same.
                raise AudioUrlFailed(
                    f"audio_url {shown_url(url)!r} sent too slowly: {total} bytes in "
                    f"{took:.0f} s (at least {MIN_BODY_RATE} bytes a second)",
                    retryable=False,
                )
            if on_chunk is not None:
                on_chunk(total)
    if total == 0:
        raise AudioUrlFailed(
            f"audio_url {shown_url(url)!r} answered an empty body", retryable=False
        )
    return total
