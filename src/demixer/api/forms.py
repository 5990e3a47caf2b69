"""Multipart form uploads, parsed while they arrive, the file counted where its bytes are written.

:func:`read_form` feeds the request body to python-multipart's streaming parser. Small fields
are kept in memory (each at most :data:`MAX_FIELD_BYTES`); the one file part is written to a
spool file in the data directory's scratch space (:mod:`demixer.service.scratch`, never
``$TMPDIR``), and its bytes are counted before they are written: the byte past ``max_file_bytes``
raises :class:`~demixer.errors.FileTooLarge` (413) and is never written anywhere. The spool file
is removed when the context ends, whatever happened; a full disk is
:class:`~demixer.errors.StorageFull` (507).
"""

from __future__ import annotations

import codecs
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import anyio.to_thread
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from demixer.errors import FileTooLarge, InvalidRequest, RequestTooLarge, StorageFull
from demixer.service.scratch import scratch_file

__all__ = ["MAX_FIELD_BYTES", "Form", "SpooledFile", "read_form"]

MAX_FIELD_BYTES = 64 * 1024  # a form field (stems, a URL…) is short


@dataclass
class SpooledFile:
    """The form's file: spooled at ``path`` (``size`` bytes), as the client named and typed it."""

    field: str
    filename: str
    content_type: str | None
    path: Path
    size: int = 0


@dataclass
class Form:
    """A parsed form: its text fields (first value of each name) and its one file, if any."""

    fields: dict[str, str] = field(default_factory=dict)
    file: SpooledFile | None = None


class _Parser:
    """python-multipart callbacks building a :class:`Form` (see the module docstring)."""

    def __init__(self, data_dir: Path, max_file_bytes: int, max_fields: int, charset: str):
        self.form = Form()
        self.data_dir = data_dir
        self.max_file_bytes = max_file_bytes
        self.max_fields = max_fields
        self.charset = charset
        self.fd: int | None = None
        self.pending: list[bytes] = []  # file bytes to write (off the event loop)
        self._headers: dict[bytes, bytes] = {}
        self._name = b""
        self._value = b""
        self._field: str | None = None
        self._data = bytearray()
        self._in_file = False
        self._count = 0

    def _text(self, raw: bytes) -> str:
        return raw.decode(self.charset, errors="replace")

    def on_part_begin(self) -> None:
        self._headers, self._data, self._in_file, self._field = {}, bytearray(), False, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise InvalidRequest("each form part needs a Content-Disposition with a name")
        name = self._text(options[b"name"])
        self._count += 1
        if self._count > self.max_fields:
            raise InvalidRequest(f"a form here has at most {self.max_fields} fields")
        if b"filename" not in options:
            self._field = name
            return
        if self.form.file is not None:
            raise InvalidRequest("send one file per request", param=name)
        content_type = self._headers.get(b"content-type")
        fd, path = scratch_file(self.data_dir, "upload")
        self.fd = fd
        self.form.file = SpooledFile(
            field=name,
            filename=self._text(options[b"filename"]),
            content_type=self._text(content_type) if content_type is not None else None,
            path=path,
        )
        self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._in_file:
            assert self.form.file is not None
            self.form.file.size += len(chunk)
            if self.form.file.size > self.max_file_bytes:  # before a byte of it is written
                raise FileTooLarge(
                    f"the upload is over this server's limit of {self.max_file_bytes} bytes",
                    param=self.form.file.field,
                )
            self.pending.append(chunk)
            return
        self._data += chunk
        if len(self._data) > MAX_FIELD_BYTES:
            raise RequestTooLarge(
                f"form field {self._field!r} is over {MAX_FIELD_BYTES} bytes", param=self._field
            )

    def on_part_end(self) -> None:
        if not self._in_file and self._field is not None:
            self.form.fields.setdefault(self._field, self._text(bytes(self._data)))
        self._in_file = False

    def write_pending(self) -> None:
        """Write the file bytes received so far (run in a worker thread)."""
        if self.fd is None or not self.pending:
            return
        data, self.pending = b"".join(self.pending), []
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            if StorageFull.caused(exc):
                raise StorageFull() from exc
            raise

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


async def _urlencoded(request: Request, max_fields: int, charset: str) -> dict[str, str]:
    """The fields of a URL-encoded form, read up to what ``max_fields`` fields can hold."""
    limit = max_fields * MAX_FIELD_BYTES
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestTooLarge(f"a form here is at most {limit} bytes")
    try:
        pairs = parse_qsl(body.decode(charset, errors="replace"), max_num_fields=max_fields)
    except ValueError:
        raise InvalidRequest(f"a form here has at most {max_fields} fields") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if len(value) > MAX_FIELD_BYTES:
            raise RequestTooLarge(
                f"form field {name!r} is over {MAX_FIELD_BYTES} bytes", param=name
            )
        fields.setdefault(name, value)
    return fields


def _charset(params: dict[bytes, bytes]) -> str:
    raw = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        return codecs.lookup(raw).name
    except LookupError:
        return "latin-1"


@contextlib.asynccontextmanager
async def read_form(
    request: Request, data_dir: Path, max_file_bytes: int, *, max_fields: int = 20
) -> AsyncIterator[Form]:
    """The multipart form of ``request``, its file spooled under ``data_dir`` (removed after).

    Raises:
        InvalidRequest: not a multipart form, or a broken one (400).
        FileTooLarge: the file is over ``max_file_bytes`` (413; nothing past it was written).
        RequestTooLarge: a text field over :data:`MAX_FIELD_BYTES` (413).
        StorageFull: the spool could not be written (507).
    """
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind == b"application/x-www-form-urlencoded":  # fields only (e.g. an audio_url)
        yield Form(fields=await _urlencoded(request, max_fields, _charset(params)))
        return
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest("send a multipart/form-data body (with its boundary)")
    parser = _Parser(data_dir, max_file_bytes, max_fields, _charset(params))
    callbacks = {
        name: getattr(parser, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    try:
        try:
            multipart = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
            async for chunk in request.stream():
                multipart.write(chunk)
                await anyio.to_thread.run_sync(parser.write_pending)
            multipart.finalize()
        except FormParserError as exc:
            raise InvalidRequest(f"the multipart form is malformed: {exc}") from None
        await anyio.to_thread.run_sync(parser.write_pending)
        parser.close()
        yield parser.form
    finally:
        parser.close()
        if parser.form.file is not None:
            parser.form.file.path.unlink(missing_ok=True)
