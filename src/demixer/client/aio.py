"""The asyncio/trio client: :class:`AsyncClient`, the twin of :class:`~demixer.client.Client`
with the same methods as coroutines. Requests are built and answers parsed in
:mod:`demixer.client.core`; only the I/O differs here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
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
from demixer.client.sync import OnBytes, OnStatus
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

__all__ = ["AsyncClient"]


async def _chunks(path: Path, on_bytes: OnBytes | None) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as fh:
        while chunk := await fh.read(CHUNK):
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk


class AsyncClient(core.ClientBase):
    """A demixer server, over HTTP, from async code; arguments as :class:`Client`.

    Use it as ``async with AsyncClient(...) as c:`` or call :meth:`aclose` (or ``close``).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_tries: int = 5,
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_tries, poll_interval)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def close(self) -> None:
        """:meth:`aclose`, under :class:`Client`'s name."""
        await self.aclose()

    # --- sending -------------------------------------------------------------------------

    async def _send(
        self,
        call: Call,
        *,
        content: Callable[[], AsyncIterator[bytes]] | None = None,
        files: Callable[[], dict[str, Any]] | None = None,
        stream: bool = False,
        timeout: httpx.Timeout | None = None,
        deadline: retries.Deadline | None = None,
    ) -> httpx.Response:
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
                    response = await self._http.send(request, stream=stream)
                except httpx.HTTPError as exc:  # raised again when not safe to repeat
                    if retries.closed_when_sent(call, exc, resent):
                        resent = True  # an idle connection the server had just closed
                        continue
                    wait = retries.transport_retry_delay(call, exc, attempt, self.max_tries)
                    landed = landed or retries.may_have_landed(exc)
                    await anyio.sleep(retries.pause_within(deadline, wait))
                    attempt += 1
                    continue
            delay = retries.retry_delay(
                response, attempt, self.max_tries, retry_gateway=call.gateway_retried
            )
            if delay is None:
                return retries.repeated_answer(call, response, landed)
            landed = landed or retries.may_have_landed(response)
            await response.aclose()
            await anyio.sleep(retries.pause_within(deadline, delay))
            attempt += 1

    async def _json(self, call: Call, **kwargs: Any) -> dict[str, Any]:
        return core.json_body(await self._send(call, **kwargs))

    # --- operations (documented on Client) -----------------------------------------------

    async def upload(
        self,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        multipart: bool = False,
        on_bytes: OnBytes | None = None,
    ) -> FileInfo:
        """See :meth:`Client.upload`."""
        path = Path(path)
        size = transfers.upload_size(path)
        ctype = content_type or transfers.content_type_for(path)
        counted = transfers.CountedOnce(on_bytes)  # a body sent again counts once
        if multipart:
            # httpx's multipart encoder reads the file in 64 KiB blocking reads.
            with path.open("rb") as fh:

                def files() -> dict[str, Any]:
                    fh.seek(0)
                    reader = transfers.CountingReader(fh, counted.attempt())
                    return {"file": (shown_name(path.name), reader, ctype)}

                return FileInfo.from_json(await self._json(self._multipart_call(), files=files))
        announced = await self._json(self._announce_call(path, size, ctype))
        put = self._put_call(announced, size)
        core.check_put(await self._send(put, content=lambda: _chunks(path, counted.attempt())))
        return FileInfo.from_json(await self._json(self._complete_call(announced)))

    async def submit(
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
        """See :meth:`Client.submit`."""
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
        return Job.from_json(await self._json(call))

    async def status(self, request_id: str, *, logs: bool = False) -> Status:
        """See :meth:`Client.status`."""
        return Status.from_json(await self._json(self._status_call(request_id, logs)))

    async def wait(
        self,
        request_id: str,
        *,
        on_progress: OnStatus | None = None,
        timeout: float | None = None,
    ) -> Status:
        """See :meth:`Client.wait`."""
        deadline = retries.Deadline(timeout, request_id)
        outage = retries.Outage(deadline)
        final = await self._follow_stream(request_id, on_progress, deadline)
        while final is None:
            try:
                call = self._status_call(request_id)
                status = Status.from_json(await self._json(call, deadline=deadline))
            except (ConnectionFailed, ApiError) as exc:
                await anyio.sleep(outage.failed(exc))
                continue
            outage.answered()
            if on_progress is not None:
                on_progress(status)
            if status.done:
                final = status
                break
            deadline.check()
            await anyio.sleep(deadline.nap(self.poll_interval))
        return core.settle(final)

    async def _follow_stream(
        self, request_id: str, on_progress: OnStatus | None, deadline: retries.Deadline
    ) -> Status | None:
        call = self._stream_call(request_id)
        timeout = self._stream_timeout(deadline)
        try:
            response = await self._send(call, stream=True, timeout=timeout, deadline=deadline)
        except WaitTimeout:
            raise
        except ClientError:
            return None
        try:
            core.StatusStream.accept(response)
            frames = core.StatusStream()
            async for line in response.aiter_lines():
                status = frames.feed(line)
                if status is not None and on_progress is not None:
                    on_progress(status)
                if status is not None and status.done:
                    return status
                deadline.check()  # at keep-alive comments too
        except (httpx.HTTPError, StreamUnusable):
            return None
        finally:
            await response.aclose()
        return None

    async def result(self, request_id: str) -> Result:
        """See :meth:`Client.result`."""
        return Result.from_json(await self._json(self._result_call(request_id)))

    async def download(
        self,
        result: Result,
        directory: str | os.PathLike[str] = ".",
        *,
        on_bytes: OnBytes | None = None,
    ) -> dict[str, Path]:
        """See :meth:`Client.download`."""
        folder = Path(directory)
        check_folder(folder)
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name, output in result.outputs.items():
            target = transfers.download_target(folder, output)
            with transfers.atomic_file(target) as raw:
                written = await self._fetch(output, anyio.wrap_file(raw), on_bytes)
                transfers.check_size(output, written)
            paths[name] = target
        return paths

    async def _fetch(
        self, output: OutputFile, fh: anyio.AsyncFile[bytes], on_bytes: OnBytes | None
    ) -> int:
        """See :meth:`Client._fetch`."""
        written = 0
        attempt = 1  # sends since (and with) the last that brought bytes never had before
        furthest = 0
        counted = transfers.CountedOnce(on_bytes)  # a file started over counts once
        while True:  # until the file is whole, or max_tries sends bring nothing new
            call = self._blob_call(output.url, written)
            response = await self._send(call, stream=True)
            try:
                with translate_transport_errors(output.url):
                    if response.status_code >= 400:
                        await response.aread()
                        core.check(response)
                    written = transfers.resume_from(response, written)
                    tell = counted.attempt(written)
                    await fh.seek(written)
                    await fh.truncate()
                    try:
                        async for chunk in response.aiter_bytes():
                            await fh.write(chunk)
                            written += len(chunk)
                            if tell is not None:
                                tell(len(chunk))
                    except httpx.TransportError as exc:  # cut mid-file: ask for the rest
                        if written > furthest:  # new bytes came: a flaky link, not a dead one
                            furthest, attempt = written, 1
                        pause = retries.transport_retry_delay(call, exc, attempt, self.max_tries)
                        await anyio.sleep(pause)
                        attempt += 1
                        continue
            finally:
                await response.aclose()
            return written

    async def cancel(self, request_id: str) -> str:
        """See :meth:`Client.cancel`."""
        return str((await self._json(self._cancel_call(request_id))).get("status"))

    async def delete(self, request_id: str) -> None:
        """See :meth:`Client.delete`."""
        core.no_body(await self._send(self._delete_call(request_id)))

    async def requests_page(self, cursor: str | None = None, *, limit: int = 20) -> RequestPage:
        """See :meth:`Client.requests_page`."""
        call = self._list_call("/v1/queue/requests", cursor, limit)
        return RequestPage.from_json(await self._json(call))

    def list_requests(self, *, page_size: int = 20) -> AsyncIterator[Status]:
        """See :meth:`Client.list_requests` (``async for status in client.list_requests()``)."""
        return core.walk_pages_async(lambda cursor: self.requests_page(cursor, limit=page_size))

    async def files_page(self, cursor: str | None = None, *, limit: int = 20) -> FilePage:
        """See :meth:`Client.files_page`."""
        return FilePage.from_json(await self._json(self._list_call("/v1/files", cursor, limit)))

    def list_files(self, *, page_size: int = 20) -> AsyncIterator[FileInfo]:
        """See :meth:`Client.list_files` (``async for info in client.list_files()``)."""
        return core.walk_pages_async(lambda cursor: self.files_page(cursor, limit=page_size))

    async def file(self, file_id: str) -> FileInfo:
        """See :meth:`Client.file`."""
        return FileInfo.from_json(await self._json(self._file_call(file_id)))

    async def delete_file(self, file_id: str) -> None:
        """See :meth:`Client.delete_file`."""
        core.no_body(await self._send(self._file_call(file_id, "DELETE")))

    async def models(self) -> Models:
        """See :meth:`Client.models`."""
        return Models.from_json(await self._json(self._models_call()))

    async def usage(self, start: core.When | None = None, end: core.When | None = None) -> Usage:
        """See :meth:`Client.usage`."""
        return Usage.from_json(await self._json(self._usage_call(start, end)))

    async def separate(
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
        """See :meth:`Client.separate`; cancelled (the task, or Ctrl-C) while it waits, the job
        is cancelled on the server too."""
        path = Path(path)
        check_folder(Path(directory))
        size = transfers.upload_size(path)
        models, read = self._models_to_check(model, prompt), self._prompt_to_check(prompt)
        if models or read is not None:  # a typo is said before the upload
            try:
                listing = await self._json(self._models_call())
                version = (
                    (await self._json(self._health_call())).get("version")
                    if read is not None
                    else None
                )
            except (ApiError, BadResponse):  # no models:read scope, ...: the server decides
                listing, version = {}, None
            self._check_listed(models, read, listing, version)
        with SeparateProgress(path, size, progress) as bar:
            info = await self.upload(path, on_bytes=bar.uploaded)
            job = await self.submit(
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
                    await self.wait(job.request_id, on_progress=bar.status, timeout=timeout)
                except (anyio.get_cancelled_exc_class(), KeyboardInterrupt):
                    # shielded: the cancellation being delivered must not stop this request
                    with anyio.move_on_after(10, shield=True), contextlib.suppress(ClientError):
                        await self.cancel(job.request_id)
                    raise
            with retries.naming_the_job(job.request_id, finished=True):
                result = await self.result(job.request_id)
                if on_result is not None:
                    on_result(result)
                bar.downloading(result)
                named = transfers.named_after(result, info.file_name, path)
                return await self.download(named, directory, on_bytes=bar.downloaded)
