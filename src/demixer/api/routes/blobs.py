"""``/v1/blobs/{key}``: signed, expiring URLs to PUT an upload or GET a blob, no API key.

The signature (HMAC over method, key and expiry) is the authorisation: a wrong one is a 403
``INVALID_SIGNATURE``, a past expiry a 410 ``URL_EXPIRED``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Iterator
from functools import partial
from typing import Any, BinaryIO, cast

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from demixer.api import uploads
from demixer.api.auth import ServicesDep
from demixer.api.caching import unchanged
from demixer.api.openapi import error_responses
from demixer.api.schemas import FileObject
from demixer.errors import (
    FileExpired,
    InvalidSignature,
    NotFound,
    RangeNotSatisfiable,
    ResultExpired,
    UrlExpired,
)
from demixer.service.context import Services
from demixer.service.files.states import FileState
from demixer.service.retention.expiry import result_expired
from demixer.service.schema import File, Job
from demixer.storage import content_disposition

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["blobs"])

_CHUNK = 1 << 20
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")  # one range (several: a comma, no match)
# A blob is an upload's bytes or a stem's (audio/wav, audio/flac, audio/mpeg): the types an
# upload is taken in, each named. `*/*` had openapi-python-client leave the PUT out of its
# client and type no GET body.
_BYTES_AS = {t: {"schema": {"type": "string", "format": "binary"}} for t in uploads.MEDIA_TYPES}
# The headers a blob's answers carry (a player seeks with them, a download resumes).
_BYTES = {"schema": {"type": "integer", "minimum": 0}, "required": True}
_BLOB_HEADERS: dict[str, Any] = {
    "Content-Length": {"description": "Bytes in this answer's body (a GET's).", **_BYTES},
    "Accept-Ranges": {"required": True, "schema": {"type": "string", "enum": ["bytes"]}},
    "Content-Disposition": {
        "description": "`attachment` with the file's name (e.g. `song_vocals.wav`).",
        "required": True,
        "schema": {"type": "string"},
    },
    "ETag": {
        "description": "The blob's strong tag: send it back in `If-Range` to resume a download.",
        "required": True,
        "schema": {"type": "string", "pattern": '^"[0-9a-f]{32}"$'},
    },
    "Cache-Control": {
        "description": "`private`: the browser that downloaded it may keep it, a shared cache "
        "(a proxy) may not.",
        "required": True,
        "schema": {"type": "string", "enum": ["private"]},
    },
    "X-Content-Type-Options": {
        "description": "`nosniff`: a browser takes the bytes as the type said, never as a page.",
        "required": True,
        "schema": {"type": "string", "enum": ["nosniff"]},
    },
    "Content-Security-Policy": {
        "description": "`sandbox; default-src 'none'`: were a browser ever to show it inline, "
        "no script in it runs, on this origin or any.",
        "required": True,
        "schema": {"type": "string"},
    },
}
# A stem is one account's: the downloading browser may keep it (and revalidate it with its
# ETag), but a shared cache must not, or it went on serving a deleted song's stems to whoever
# had the URL, and kept them on its disk past their deletion.
_PRIVATE = "private"
_NOT_MODIFIED: dict[str, Any] = {
    "description": "`If-None-Match` named the blob's `ETag`: the copy the client has is "
    "current. No body.",
    "headers": {"ETag": _BLOB_HEADERS["ETag"], "Cache-Control": _BLOB_HEADERS["Cache-Control"]},
}
_CONTENT_RANGE = {
    "description": "`bytes FIRST-LAST/SIZE` (206), `bytes */SIZE` (416).",
    "required": True,
    "schema": {"type": "string", "pattern": r"^bytes (\d+-\d+|\*)/\d+$"},
}
_Expires = Query(description="Unix seconds after which the URL answers 410.")
_Sig = Query(description="The URL's signature.")
_PUT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes, sent with the Content-Type it was announced with "
        "(`headers` of the `POST /v1/files` answer; 415 `CONTENT_TYPE_MISMATCH` otherwise).",
        "content": _BYTES_AS,
    }
}


def _check(services: Services, method: str, key: str, expires: int, sig: str) -> None:
    verdict = services.signer.check(method, key, expires, sig)
    if verdict == "invalid":
        raise InvalidSignature(
            f"the signature does not match this {method} URL: it was altered or is for "
            "another method or object",
            param="sig",
        )
    if verdict == "expired":
        raise UrlExpired("this signed URL has expired; ask the API for a fresh one")


def _describe(services: Services, key: str) -> tuple[str, str]:
    """(content type, download file name) of a blob, from the row that owns it."""
    name = key.rsplit("/", 1)[-1]
    with services.db.read() as s:
        if key.startswith("outputs/"):
            job = s.get(Job, key.split("/")[1])
            keep = services.settings.result_retention_seconds
            if job is not None and result_expired(job, keep, services.db.clock()):
                raise ResultExpired("this request's outputs have expired and were deleted")
            for out in (job.outputs or {}).values() if job is not None else ():
                if out.get("key") == key:
                    return out.get("content_type", "application/octet-stream"), out.get(
                        "file_name", name
                    )
            if job is None:
                raise NotFound("this blob no longer exists")
        elif key.startswith("inputs/"):
            row = s.get(File, name)
            if row is None or row.status == FileState.DELETED:
                raise NotFound("this blob no longer exists")
            if row.status == FileState.EXPIRED or (
                row.expires_at is not None and services.db.clock() > row.expires_at
            ):
                raise FileExpired("this file has expired and was deleted")
            return row.content_type, row.file_name
    return mimetypes.guess_type(name)[0] or "application/octet-stream", name


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range a ``Range`` header asks of ``size`` bytes, as (first, last), last
    clipped to the end; None for the whole blob: no header, several ranges, another unit or a
    range that does not parse, which RFC 9110 lets a server ignore.

    Raises:
        RangeNotSatisfiable: the range starts past the end (or asks for the last 0 bytes).
    """
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = _offset(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size - 1
    start = _offset(first)
    if last and _offset(last) < start:
        return None  # not a valid range: ignored
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, min(_offset(last), size - 1) if last else size - 1


def _offset(digits: str) -> int:
    """A byte offset's digits as a number; past any blob's size (or Python's 4300-digit limit on
    ``int``) it is as good as 10**20."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else 10**20


def _etag(key: str, size: int) -> str:
    """A blob's strong entity tag. A stored key's bytes never change (an upload's are written
    once, a stem's under its attempt's own key), so the key and size name them."""
    return '"' + hashlib.sha256(f"{key}\0{size}".encode()).hexdigest()[:32] + '"'


def _not_modified(headers: dict[str, str]) -> Response:
    """The 304 answer: the tag the client has, no body."""
    return Response(None, 304, {"ETag": headers["ETag"], "Cache-Control": _PRIVATE})


def _blob_headers(services: Services, key: str) -> tuple[str, int, dict[str, str]]:
    content_type, file_name = _describe(services, key)
    size = services.storage.size(key)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(file_name),
        "ETag": _etag(key, size),
        "Cache-Control": _PRIVATE,
        # A user's bytes, served from the API's own origin: a browser must never take them
        # for a page (sniffed as HTML, or opened inline despite the attachment) and run a
        # script there. Types and the attachment already keep them out; these hold even if
        # an upload's type check or a browser's handling of attachments ever lets one by.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }
    return content_type, size, headers


@router.get(
    "/blobs/{key:path}",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The blob, as its own type: a stem's (`audio/wav`, `audio/flac`, "
            "`audio/mpeg`) or an upload's.",
            "content": _BYTES_AS,
            "headers": _BLOB_HEADERS,
        },
        206: {
            "description": "The byte range `Range` asked for (`Content-Range` says which).",
            "content": _BYTES_AS,
            "headers": {**_BLOB_HEADERS, "Content-Range": _CONTENT_RANGE},
        },
        304: _NOT_MODIFIED,
        **error_responses(403, 404, 410),
        416: {**error_responses(416)[416], "headers": {"Content-Range": _CONTENT_RANGE}},
    },
)
def download(
    key: str,
    request: Request,
    services: ServicesDep,
    expires: int = _Expires,
    sig: str = _Sig,
) -> Response:
    """Stream a blob (an output stem) through a signed URL; no API key. One byte range
    (`Range: bytes=first-last`, `first-`, `-count`) answers 206, so a player can seek and a
    download can resume (a browser's resume sends `If-Range` with the `ETag` it got: the
    range when it still matches). Several ranges, or an `If-Range` that does not match (a
    date, another tag), get the whole blob. `If-None-Match` with the `ETag` answers 304, no
    body."""
    _check(services, "GET", key, expires, sig)
    content_type, size, headers = _blob_headers(services, key)
    if unchanged(request, headers["ETag"]):
        return _not_modified(headers)
    wanted = request.headers.get("range")
    if request.headers.get("if-range", headers["ETag"]).strip() != headers["ETag"]:
        wanted = None
    span = byte_range(wanted, size)
    first, last = span or (0, size - 1)
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(last - first + 1)
    handle = services.storage.open(key, first)
    status = 200 if span is None else 206
    return _BlobResponse(handle, last - first + 1, status, headers, content_type)


class _BlobResponse(StreamingResponse):
    """``size`` bytes read from ``handle``, a blob opened at the first byte to send; the
    handle is closed as soon as the answer ends, sent whole or cut by the client."""

    def __init__(
        self, handle: BinaryIO, size: int, status: int, headers: dict[str, str], media_type: str
    ) -> None:
        self.handle = handle
        super().__init__(self._chunks(size), status, headers, media_type=media_type)

    def _chunks(self, left: int) -> Iterator[bytes]:
        while left > 0 and (chunk := self.handle.read(min(_CHUNK, left))):
            left -= len(chunk)
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Not in the generator's own ``finally``: a client that cuts the download leaves the
        # generator suspended at its last piece (or never started), and its file stayed open
        # until the garbage collector next ran. No read is in flight here: Starlette waits
        # for the thread reading a piece before the answer ends.
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.handle.close()


@router.head(
    "/blobs/{key:path}",
    response_class=Response,
    responses={
        200: {
            "description": "A GET's headers, no body.",
            "headers": _BLOB_HEADERS,
        },
        304: _NOT_MODIFIED,
        **error_responses(403, 404, 410),
    },
)
def download_headers(
    key: str,
    request: Request,
    services: ServicesDep,
    expires: int = _Expires,
    sig: str = _Sig,
) -> Response:
    """What a GET of the same signed URL would answer, without the body: its size
    (`Content-Length`), type and file name (304 to an `If-None-Match` of its `ETag`)."""
    _check(services, "GET", key, expires, sig)  # a GET URL answers HEAD too
    content_type, size, headers = _blob_headers(services, key)
    if unchanged(request, headers["ETag"]):
        return _not_modified(headers)
    headers["Content-Length"] = str(size)
    return Response(None, 200, headers, media_type=content_type)


@router.put(
    "/blobs/{key:path}",
    responses=error_responses(400, 403, 404, 409, 410, 413, 415, 422),
    openapi_extra=_PUT_BODY,
)
async def upload(
    key: str,
    request: Request,
    services: ServicesDep,
    expires: int = _Expires,
    sig: str = _Sig,
) -> FileObject:
    """Receive an announced file's bytes (exactly `file_size` of them, with its Content-Type);
    answers the file, probed as audio (422 `INVALID_AUDIO` and status `failed` if it is not)."""
    _check(services, "PUT", key, expires, sig)
    try:
        length: int | None = int(request.headers["content-length"])
    except (KeyError, ValueError):
        length = None
    reader = uploads.AsyncBodyReader(request.stream())
    receive = partial(
        uploads.receive_put,
        services,
        key,
        cast(BinaryIO, reader),
        content_type=request.headers.get("content-type"),
        content_length=length,
    )
    row = await uploads.run_upload(receive)
    return uploads.file_object(row)
