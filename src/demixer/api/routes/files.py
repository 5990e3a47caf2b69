"""``/v1/files``: announce an upload (JSON) or upload directly (multipart); list; read; delete."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select

from demixer.api import uploads
from demixer.api.auth import FilesRead, FilesWrite, ServicesDep
from demixer.api.forms import read_form
from demixer.api.idempotency import Idempotency, IdempotencyDep
from demixer.api.openapi import error_responses
from demixer.api.paging import keyset_page
from demixer.api.routes.listing import PageCursor, PageLimit
from demixer.api.schemas import FileCreate, FileList, FileObject, FileStatus, FileUpload
from demixer.api.scope import content_type
from demixer.api.text import body_refusal
from demixer.errors import InvalidRequest, UnsupportedMediaType
from demixer.service.context import Services
from demixer.service.files.lifecycle import listed
from demixer.service.files.states import FileState
from demixer.service.schema import File

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["files"])


_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/FileCreate"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["audio.separate.input"]},
                    },
                    "required": ["file"],
                },
                # The types an upload is taken in (415 otherwise); application/octet-stream or
                # none is judged by the file name's extension.
                "encoding": {"file": {"contentType": ", ".join(uploads.MEDIA_TYPES)}},
            },
        },
    }
}


async def _announce(
    request: Request,
    services: Services,
    account_id: str,
    idempotency: Idempotency,
    response: Response,
) -> FileUpload:
    body = await request.body()  # at most max_json_body_bytes (api/bodies.py)
    try:
        req = FileCreate.model_validate_json(body or b"{}")
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
    refusal = body_refusal(body)
    if refusal:
        raise InvalidRequest(refusal)
    create = partial(uploads.create_file, services, account_id, req)
    run = partial(idempotency.run, services, account_id, response, FileUpload, 201, create)
    return await anyio.to_thread.run_sync(run)


async def _direct(request: Request, services: Services, account_id: str) -> FileObject:
    settings = services.settings
    # The file is counted while it arrives and spooled in the data directory, no further than
    # the room the account's storage has left (api/forms.py).
    room = await anyio.to_thread.run_sync(uploads.storage_room, services, account_id)
    limit = settings.max_upload_bytes
    async with read_form(request, settings.data_dir, limit, storage=room) as form:
        upload = form.file
        if upload is None or upload.field != "file":
            raise InvalidRequest(
                "send the audio as a multipart file field named `file`", param="file"
            )
        purpose = form.fields.get("purpose")
        if purpose not in (None, "audio.separate.input"):
            raise InvalidRequest("purpose must be 'audio.separate.input'", param="purpose")
        store = partial(
            uploads.store_direct,
            services,
            account_id,
            upload.path,
            file_name=upload.filename or "upload",
            content_type=upload.content_type,
            sha256=upload.sha256,
        )
        row = await uploads.run_upload(store)  # the store may take long: not a shared thread
    return uploads.file_object(row)


@router.post(
    "/files",
    status_code=201,
    response_model=FileUpload | FileObject,
    responses=error_responses(400, 401, 403, 409, 413, 415, 422, 429, 503, 507),
    openapi_extra=_CREATE_BODY,
)
async def create_file(
    request: Request,
    response: Response,
    services: ServicesDep,
    identity: FilesWrite,
    idempotency: IdempotencyDep,
) -> FileUpload | FileObject:
    """Announce a file (JSON: answers a signed `upload_url` to PUT the bytes to, with the
    `headers` given; then `POST /v1/files/{file_id}/complete`) or upload it directly
    (`multipart/form-data`, field `file`: answers the file, probed as audio)."""
    kind = content_type(request.scope)
    if kind == "multipart/form-data":
        return await _direct(request, services, identity.account_id)
    if kind not in ("application/json", ""):
        raise UnsupportedMediaType(
            f"POST /v1/files takes application/json (announce, then PUT the bytes) or "
            f"multipart/form-data (field `file`), not {kind!r}"
        )
    return await _announce(request, services, identity.account_id, idempotency, response)


@router.get("/files", responses=error_responses(401, 403))
def list_files(
    services: ServicesDep,
    identity: FilesRead,
    limit: PageLimit = 20,
    cursor: PageCursor = None,
    status: FileStatus | None = None,
) -> FileList:
    """The caller's uploads, newest first; follow `next_cursor` for older ones. Deleted and
    expired files are not listed, nor a MusicGPT extraction's `audio_file` (it belongs to its
    request). `status` lists only the files in that state. A `pending` file is listed as last
    recorded: `GET /v1/files/{file_id}` completes one whose bytes have reached the store."""
    query = select(File).where(File.account_id == identity.account_id, listed(services.db.clock()))
    if status is not None:
        query = query.where(File.status == status)
    with services.db.read() as s:
        rows, next_cursor = keyset_page(s, query, File.created_at, File.id, limit, cursor)
        return FileList(data=[uploads.file_object(r) for r in rows], next_cursor=next_cursor)


@router.get("/files/{file_id}", responses=error_responses(401, 403, 404, 410, 503))
async def get_file(file_id: str, services: ServicesDep, identity: FilesRead) -> FileObject:
    """A file and its probe results (`duration`, `sample_rate`, `channels`) once uploaded.

    A `pending` file whose bytes have reached the store is completed first (see
    `POST /v1/files/{file_id}/complete`)."""

    def read() -> File:
        with services.db.read() as s:
            return uploads.owned_file(services, s, identity.account_id, file_id)

    row = await anyio.to_thread.run_sync(read)
    if row.status == FileState.PENDING:
        # Asking the store whether the bytes came, then reading them back to probe them
        # (minutes for a big file on S3): a thread of its own, as a completion has, not one
        # of the shared ones every other request needs. Clients poll pending files.
        row = await uploads.run_upload(partial(uploads.settle_pending, services, row))
    return uploads.file_object(row)


@router.post(
    "/files/{file_id}/complete",
    responses=error_responses(400, 401, 403, 404, 409, 410, 422, 503),
)
async def complete_file(file_id: str, services: ServicesDep, identity: FilesWrite) -> FileObject:
    """Tell the API that the bytes were PUT to the `upload_url`: checks that exactly
    `file_size` bytes arrived (400 `SIZE_MISMATCH` otherwise; they are dropped, PUT again) and
    probes them as audio (422 `INVALID_AUDIO` and status `failed` if they are not). Before any
    bytes arrived: 409 `FILE_NOT_READY`. Idempotent: an uploaded file answers itself.

    Needed when the `upload_url` points at object storage (S3), which does not tell the API;
    harmless otherwise (the PUT through the API has probed the file already)."""
    # The probe reads the file back from the store (minutes for a big one on S3): a thread
    # of its own, not one of the shared ones every other request needs.
    complete = partial(uploads.complete_file, services, identity.account_id, file_id)
    return uploads.file_object(await uploads.run_upload(complete))


@router.delete(
    "/files/{file_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 403, 404, 410),
)
def delete_file(file_id: str, services: ServicesDep, identity: FilesWrite) -> Response:
    """Delete a file's bytes now; the id answers 404 afterwards."""
    uploads.delete_file(services, identity.account_id, file_id)
    return Response(status_code=204)
