"""The blocking client: :class:`Client`. Its twin is :class:`~demixer.client.aio.AsyncClient`;
both only send what :mod:`demixer.client.core` builds and parse with it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from demixer.client import core, retries, transfers
from demixer.client.core import CHUNK, DEFAULT_URL, StreamUnusable
from demixer.client.errors import (
    ApiError,
    BadResponse,
    ClientError,
    ConnectionFailed,
    WaitTimeout,
    translate_transport_errors,
)
from demixer.client.progress import SeparateProgress
from demixer.client.retries import Call
from demixer.client.types import (
    FileInfo,
    FilePage,
    Job,
    Models,
    OutputFile,
    RequestPage,
    Result,
    Status,
    Usage,
)
from demixer.filemode import check_folder
from demixer.naming import shown_name

__all__ = ["Client"]

OnBytes = Callable[[int], None]
OnStatus = Callable[[Status], None]


def _chunks(path: Path, on_bytes: OnBytes | None) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk


class Client(core.ClientBase):
    """A demixer server, over HTTP (blocking).

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        api_key: ``dmx_...``; default ``$DEMIXER_API_KEY``.
        timeout: seconds for connecting and for each read.
        transport: an httpx transport (a proxy, a mounted app, a test double).
        max_tries: sends of one request: answered 429 or 503 (honouring ``Retry-After``), or
            cut off by a broken connection, timed out (no answer within ``timeout``) or
            answered 502/504 by a proxy when it is safe to repeat (see ``Call``). A connection
            closed as the request was sent on it (a keep-alive connection the server had just
            closed) is sent again at once, beside these; a repeat the server answers 409
            ``IDEMPOTENCY_IN_PROGRESS`` (still answering the first send) is sent again too.
        poll_interval: seconds between status reads when polling (and between SSE frames).

    Use it as a context manager (``with Client(...) as c:``) or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        max_tries: int = 5,
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_tries, poll_interval)
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- sending -------------------------------------------------------------------------

    def _send(
        self,
        call: Call,
        *,
        content: Callable[[], Iterator[bytes]] | None = None,
        files: Callable[[], dict[str, Any]] | None = None,
        stream: bool = False,
        timeout: httpx.Timeout | None = None,
        deadline: retries.Deadline | None = None,
    ) -> httpx.Response:
        """Send ``call`` (again on 429, with a fresh body from ``content``/``files``); a
        ``deadline`` (``wait``'s) shortens the pauses and ends them with WaitTimeout."""
        attempt, resent, landed = 1, False, False
        while True:  # until an answer is returned or an error raised
            request = self._build(
                self._http,
                call,
                content() if content is not None else None,
                files() if files is not None else None,
                timeout,
            )
            with translate_transport_errors(call.url):
                try:
                    response = self._http.send(request, stream=stream)
                except httpx.HTTPError as exc:  # raised again when not safe to repeat
                    if retries.closed_when_sent(call, exc, resent):
                        resent = True  # an idle connection the server had just closed
                        continue
                    wait = retries.transport_retry_delay(call, exc, attempt, self.max_tries)
                    landed = landed or retries.may_have_landed(exc)
                    time.sleep(retries.pause_within(deadline, wait))
                    attempt += 1
                    continue
            delay = retries.retry_delay(
                response, attempt, self.max_tries, retry_gateway=call.gateway_retried
            )
            if delay is None:
                return retries.repeated_answer(call, response, landed)
            landed = landed or retries.may_have_landed(response)
            response.close()
            time.sleep(retries.pause_within(deadline, delay))
            attempt += 1

    def _json(self, call: Call, **kwargs: Any) -> dict[str, Any]:
        return core.json_body(self._send(call, **kwargs))

    # --- operations ----------------------------------------------------------------------

    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        multipart: bool = False,
        on_bytes: OnBytes | None = None,
    ) -> FileInfo:
        """Upload an audio or video file, streamed in 1 MiB chunks; answers it probed.

        By default the file is announced (``POST /v1/files``), PUT to the signed URL the
        server answers (the API's own, or a presigned object-storage URL) and completed
        (``POST /v1/files/{id}/complete``); ``multipart=True`` sends one
        ``multipart/form-data`` POST instead. ``on_bytes(n)`` is called as each chunk is sent;
        a body sent again (after a cut, a 429 or a 503) counts only the bytes past where the
        sends before it got, so the counts add up to the file's size.
        Not audio: :class:`ApiError` ``INVALID_AUDIO`` (422). An empty file or a folder:
        :class:`~demixer.errors.InvalidAudio` (the same code), before anything is sent.
        """
        path = Path(path)
        size = transfers.upload_size(path)
        ctype = content_type or transfers.content_type_for(path)
        counted = transfers.CountedOnce(on_bytes)  # a body sent again counts once
        if multipart:
            with path.open("rb") as fh:

                def files() -> dict[str, Any]:
                    fh.seek(0)
                    reader = transfers.CountingReader(fh, counted.attempt())
                    return {"file": (shown_name(path.name), reader, ctype)}

                return FileInfo.from_json(self._json(self._multipart_call(), files=files))
        announced = self._json(self._announce_call(path, size, ctype))
        put = self._put_call(announced, size)
        core.check_put(self._send(put, content=lambda: _chunks(path, counted.attempt())))
        # Object storage answers the PUT with no body and does not tell the server: complete.
        return FileInfo.from_json(self._json(self._complete_call(announced)))

    def submit(
        self,
        file_id: str | None = None,
        audio_url: str | None = None,
        *,
        stems: list[str] | str | None = None,
        model: str | None = None,
        prompt: str | None = None,
        output_format: str = "wav",
        bit_depth: str | int | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        idempotency_key: str | None = None,
        quality: str | None = None,
        downmix: bool = False,
        rescale: bool = False,
        spans: Sequence[core.SpanLike] | None = None,
        audio_track: int | None = None,
    ) -> Job:
        """Queue a separation of an uploaded file or an http(s) URL.

        With ``prompt`` ("the singer", "drums") it is ``audio/separate`` (outputs ``target``
        and ``residual``); otherwise ``audio/stems`` with ``stems`` of ``model`` (empty: all)
        plus ``residual``. ``stems``: a list, or one comma-separated string. ``model``: None
        lets the server choose, as ``demixer separate`` does: the best installed model that
        makes every stem asked for, else its default model. ``bit_depth``: wav
        ``16``/``24``/``32f``, flac ``16``/``24``.
        ``quality``: ``fast``, ``balanced`` or ``best`` (None: the server's default).
        ``downmix``: fold more than 2 channels (a film's 5.1) to stereo instead of having
        the input refused. ``audio_track``: which audio track of a file with several to
        separate, from 1 (None: the one players play). ``rescale``: scale all outputs by one
        gain where one would peak above full scale, instead of clipping it. ``spans`` (with a
        prompt): keep the target only in ``(start, end)`` seconds, or take it out of
        ``(start, end, False)``; what is taken out goes to the residual.
        """
        call = self._submit_call(
            file_id,
            audio_url,
            stems=stems,
            model=model,
            prompt=prompt,
            output_format=output_format,
            bit_depth=bit_depth,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            idempotency_key=idempotency_key,
            quality=quality,
            downmix=downmix,
            rescale=rescale,
            spans=spans,
            audio_track=audio_track,
        )
        return Job.from_json(self._json(call))

    def status(self, request_id: str, *, logs: bool = False) -> Status:
        """Where a request stands now; with ``logs``, its log too (:attr:`Status.logs`)."""
        return Status.from_json(self._json(self._status_call(request_id, logs)))

    def wait(
        self,
        request_id: str,
        *,
        on_progress: OnStatus | None = None,
        timeout: float | None = None,
    ) -> Status:
        """Follow a request until it finishes; answers its COMPLETED status.

        Follows the server-sent event stream, and polls ``status`` instead when the stream
        fails or is not offered (e.g. a proxy that buffers or refuses it). ``on_progress`` gets
        every status seen. Raises :class:`JobFailed` (with the failure's code and message),
        :class:`JobCancelled`, or :class:`WaitTimeout` after ``timeout`` seconds. A server that
        does not answer (restarting, unreachable, 503, or a proxy's 502/504) is asked again
        until then, or for 5 minutes without a timeout (:class:`ConnectionFailed` with the
        ``request_id``).
        """
        deadline = retries.Deadline(timeout, request_id)
        outage = retries.Outage(deadline)
        final = self._follow_stream(request_id, on_progress, deadline)
        while final is None:
            try:
                call = self._status_call(request_id)
                status = Status.from_json(self._json(call, deadline=deadline))
            except (ConnectionFailed, ApiError) as exc:
                time.sleep(outage.failed(exc))
                continue
            outage.answered()
            if on_progress is not None:
                on_progress(status)
            if status.done:
                final = status
                break
            deadline.check()
            time.sleep(deadline.nap(self.poll_interval))
        return core.settle(final)

    def _follow_stream(
        self, request_id: str, on_progress: OnStatus | None, deadline: retries.Deadline
    ) -> Status | None:
        """The final status from the SSE stream, or None if the stream could not be used."""
        call = self._stream_call(request_id)
        timeout = self._stream_timeout(deadline)
        try:
            response = self._send(call, stream=True, timeout=timeout, deadline=deadline)
        except WaitTimeout:
            raise
        except ClientError:
            return None
        try:
            core.StatusStream.accept(response)
            frames = core.StatusStream()
            for line in response.iter_lines():
                status = frames.feed(line)
                if status is not None and on_progress is not None:
                    on_progress(status)
                if status is not None and status.done:
                    return status
                deadline.check()  # at keep-alive comments too
        except (httpx.HTTPError, StreamUnusable):
            return None
        finally:
            response.close()
        return None  # closed before a final status

    def result(self, request_id: str) -> Result:
        """A completed request's outputs (signed URLs). Not yet: ApiError ``NOT_READY``."""
        return Result.from_json(self._json(self._result_call(request_id)))

    def download(
        self,
        result: Result,
        directory: str | os.PathLike[str] = ".",
        *,
        on_bytes: OnBytes | None = None,
    ) -> dict[str, Path]:
        """Stream every output to ``directory/{file_name}`` (each written atomically; a
        connection cut mid-file is resumed where it broke, with ``Range``). ``on_bytes(n)`` is
        called as each chunk arrives; a file a store sends whole again counts once."""
        folder = Path(directory)
        check_folder(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name, output in result.outputs.items():
            target = transfers.download_target(folder, output)
            with transfers.atomic_file(target) as fh:
                transfers.check_size(output, self._fetch(output, fh, on_bytes))
            paths[name] = target
        return paths

    def _fetch(self, output: OutputFile, fh: IO[bytes], on_bytes: OnBytes | None) -> int:
        """Write ``output``'s bytes to ``fh``, resuming after a broken connection; answers the
        bytes written. It gives up after ``max_tries`` sends, counted from the last that
        brought bytes past the furthest ever written: on a link that drops every few minutes,
        a big stem whose every try got further was given up after 5 cuts, most of it
        downloaded (and the job done, and counted)."""
        written = 0
        attempt = 1  # sends since (and with) the last that brought bytes never had before
        furthest = 0
        counted = transfers.CountedOnce(on_bytes)  # a file started over counts once
        while True:  # until the file is whole, or max_tries sends bring nothing new
            call = self._blob_call(output.url, written)
            response = self._send(call, stream=True)
            try:
                with translate_transport_errors(output.url):
                    if response.status_code >= 400:
                        response.read()
                        core.check(response)
                    written = transfers.resume_from(response, written)
                    tell = counted.attempt(written)
                    fh.seek(written)
                    fh.truncate()
                    try:
                        for chunk in response.iter_bytes():
                            fh.write(chunk)
                            written += len(chunk)
                            if tell is not None:
                                tell(len(chunk))
                    except httpx.TransportError as exc:  # cut mid-file: ask for the rest
                        if written > furthest:  # new bytes came: a flaky link, not a dead one
                            furthest, attempt = written, 1
                        pause = retries.transport_retry_delay(call, exc, attempt, self.max_tries)
                        time.sleep(pause)
                        attempt += 1
                        continue
            finally:
                response.close()
            return written

    def cancel(self, request_id: str) -> str:
        """Cancel a request: ``CANCELLED`` (it was queued) or ``CANCELLATION_REQUESTED``
        (running; it stops within seconds). A finished one: ApiError ``JOB_CONFLICT``."""
        return str(self._json(self._cancel_call(request_id)).get("status"))

    def delete(self, request_id: str) -> None:
        """Delete a request, its log and its outputs now (a queued or running one is
        cancelled first). Deleted already, or never there: ApiError 404 ``NOT_FOUND`` (not
        when this call's own first send deleted it and its answer was lost: that is done);
        object storage unreachable: ApiError 503 (after ``max_tries``), and the request
        stays."""
        core.no_body(self._send(self._delete_call(request_id)))

    def requests_page(self, cursor: str | None = None, *, limit: int = 20) -> RequestPage:
        """One page of this account's requests, newest first: ``limit`` (1-100) of them, from
        ``cursor`` on (a page's ``next_cursor``; None: the newest)."""
        call = self._list_call("/v1/queue/requests", cursor, limit)
        return RequestPage.from_json(self._json(call))

    def list_requests(self, *, page_size: int = 20) -> Iterator[Status]:
        """Every request of this account, newest first, each as its :class:`Status` (with
        ``file_name``, ``created_at``...): pages of ``page_size`` (1-100) are asked for as
        the iteration reaches them."""
        return core.walk_pages(lambda cursor: self.requests_page(cursor, limit=page_size))

    def files_page(self, cursor: str | None = None, *, limit: int = 20) -> FilePage:
        """One page of this account's uploads, newest first: ``limit`` (1-100) of them, from
        ``cursor`` on (a page's ``next_cursor``; None: the newest). Deleted and expired
        uploads are not listed."""
        return FilePage.from_json(self._json(self._list_call("/v1/files", cursor, limit)))

    def list_files(self, *, page_size: int = 20) -> Iterator[FileInfo]:
        """Every upload of this account, newest first (delete one with :meth:`delete_file`):
        pages of ``page_size`` (1-100) are asked for as the iteration reaches them."""
        return core.walk_pages(lambda cursor: self.files_page(cursor, limit=page_size))

    def file(self, file_id: str) -> FileInfo:
        """An uploaded file, probed (``duration``, ``sample_rate``, ``channels``,
        ``audio_start``, ``audio_tracks``: see :class:`FileInfo`). Deleted or never there:
        ApiError 404 ``NOT_FOUND``; past its retention: 410 ``FILE_EXPIRED``."""
        return FileInfo.from_json(self._json(self._file_call(file_id)))

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file's bytes now. Requests still queued for it then fail
        ``FILE_EXPIRED``; a running one finishes from its own copy, and finished ones keep
        their outputs. Deleted already, or never there: ApiError 404 ``NOT_FOUND``."""
        core.no_body(self._send(self._file_call(file_id, "DELETE")))

    def models(self) -> Models:
        """The engine models this server can run (``installed``), every one it knows
        (``catalogue``, with licences) and what a prompt can name (``separable``)."""
        return Models.from_json(self._json(self._models_call()))

    def usage(self, start: core.When | None = None, end: core.When | None = None) -> Usage:
        """This account's audio seconds processed, per key and engine model, from ``start``
        to ``end`` (both inclusive; a date is its whole day, a naive datetime is UTC).
        Default: the 30 days up to now. Its ``allowance`` says what is left of the account's
        monthly allowance now (None: unlimited); its ``storage`` the bytes the account's
        uploads and stems hold and their cap."""
        return Usage.from_json(self._json(self._usage_call(start, end)))

    def separate(
        self,
        path: str | os.PathLike[str],
        *,
        stems: list[str] | str | None = None,
        model: str | None = None,
        prompt: str | None = None,
        output_format: str = "wav",
        bit_depth: str | int | None = None,
        quality: str | None = None,
        directory: str | os.PathLike[str] = ".",
        progress: bool = True,
        timeout: float | None = None,
        downmix: bool = False,
        rescale: bool = False,
        spans: Sequence[core.SpanLike] | None = None,
        audio_track: int | None = None,
        on_result: Callable[[Result], None] | None = None,
    ) -> dict[str, Path]:
        """Upload ``path``, separate it, wait, and download the outputs into ``directory``.

        Answers output name -> file written (e.g. ``vocals``, ``residual``), named after
        ``path`` as ``demixer separate`` names them (``song_vocals.wav``). ``quality``:
        ``fast``, ``balanced`` or ``best`` (None: the server's default). ``progress``
        shows bars on stderr when it is a terminal. ``on_result`` is called with the job's
        :class:`Result` before the download (each output's ``gain`` and ``clipped``).
        Interrupted (Ctrl-C) while waiting, the job is cancelled on the server. ``directory``
        is checked before anything is sent (:class:`~demixer.errors.InvalidOutput`), and a
        ``model`` id (or an ensemble's members) against ``GET /v1/models`` before the upload,
        once per id: one the server does not list raises its :class:`ApiError` 404
        ``UNKNOWN_MODEL`` without the song sent. A ``prompt`` the list's ``separable`` cannot
        serve raises its 422 ``UNSUPPORTED_PROMPT`` likewise, where the server is this
        client's version (``GET /healthz``; another may read prompts otherwise).
        """
        path = Path(path)
        check_folder(Path(directory))
        size = transfers.upload_size(path)
        models, read = self._models_to_check(model, prompt), self._prompt_to_check(prompt)
        if models or read is not None:  # a typo is said before the upload
            try:
                listing = self._json(self._models_call())
                version = (
                    self._json(self._health_call()).get("version") if read is not None else None
                )
            except (ApiError, BadResponse):  # no models:read scope, ...: the server decides
                listing, version = {}, None
            self._check_listed(models, read, listing, version)
        with SeparateProgress(path, size, progress) as bar:
            info = self.upload(path, on_bytes=bar.uploaded)
            job = self.submit(
                info.file_id,
                stems=stems,
                model=model,
                prompt=prompt,
                output_format=output_format,
                bit_depth=bit_depth,
                quality=quality,
                downmix=downmix,
                rescale=rescale,
                spans=spans,
                audio_track=audio_track,
            )
            with retries.naming_the_job(job.request_id):
                try:
                    self.wait(job.request_id, on_progress=bar.status, timeout=timeout)
                except KeyboardInterrupt:
                    with contextlib.suppress(ClientError):
                        self.cancel(job.request_id)
                    raise
            with retries.naming_the_job(job.request_id, finished=True):
                result = self.result(job.request_id)
                if on_result is not None:
                    on_result(result)
                bar.downloading(result)
                named = transfers.named_after(result, info.file_name, path)
                return self.download(named, directory, on_bytes=bar.downloaded)
