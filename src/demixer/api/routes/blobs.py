"""``/v1/blobs/{key}``: signed, expiring URLs to PUT an upload or GET a blob, no API key.

The signature (HMAC over method, key and expiry) is the authorisation: a wrong one is a 403
``INVALID_SIGNATURE``, a past expiry a 410 ``URL_EXPIRED``.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from functools import partial
from typing import Any, BinaryIO, cast

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from demixer.api import uploads
from demixer.api.auth import ServicesDep
from demixer.api.openapi import error_responses
from demixer.api.schemas import FileObject
from demixer.errors import FileExpired, InvalidSignature, NotFound, ResultExpired, UrlExpired
from demixer.service.context import Services
from demixer.service.files.lifecycle import FileState
from demixer.service.retention.expiry import result_expired
from demixer.service.schema import File, Job
from demixer.storage import content_disposition

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["blobs"])

_CHUNK = 1 << 20
_Expires = Query(description="Unix seconds after which the URL answers 410.")
_Sig = Query(description="The URL's signature.")
_PUT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
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


@router.get(
    "/blobs/{key:path}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        **error_responses(403, 404, 410),
    },
)
def download(
    key: str, services: ServicesDep, expires: int = _Expires, sig: str = _Sig
) -> StreamingResponse:
    """Stream a blob (an output stem) through a signed URL; no API key."""
    _check(services, "GET", key, expires, sig)
    content_type, file_name = _describe(services, key)
    size = services.storage.size(key)
    handle = services.storage.open(key)

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(_CHUNK):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type=content_type,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": content_disposition(file_name),
        },
    )


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
    row = await anyio.to_thread.run_sync(receive)
    return uploads.file_object(row)
