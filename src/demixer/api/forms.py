"""Multipart form uploads, parsed while they arrive, the file counted where its bytes are written.

:func:`read_form` feeds the request body to python-multipart's streaming parser. Small fields
are kept in memory (each at most :data:`MAX_FIELD_BYTES`); the one file part is written to a
spool file in the data directory's scratch space (:mod:`demixer.service.scratch`, never
``$TMPDIR``), and its bytes are counted before they are written: the byte past ``max_file_bytes``
raises :class:`~demixer.errors.FileTooLarge` (413), and the byte past the room the account's
storage has left (``storage``, read before the body) its
:class:`~demixer.errors.StorageQuotaExceeded` (413); neither is written anywhere. The spool file
is removed when the context ends, whatever happened; a full disk is
:class:`~demixer.errors.StorageFull` (507).

A form's fields may also come URL-encoded, or as one JSON object (what a client built for a
JSON API sends: strings are kept, other values JSON-encoded, so ``"stems": ["vocals"]`` reads
as the form's ``stems='["vocals"]'``); a request with no body at all is an empty form.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import queue
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import parse_qsl, unquote_to_bytes

import anyio
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from demixer.api.bodies import parse_json
from demixer.api.scope import sends_no_body
from demixer.api.text import NUL
from demixer.api.uploads import run_upload
from demixer.errors import FileTooLarge, InvalidRequest, RequestTooLarge, StorageFull
from demixer.service.accounts.storage import StorageUse
from demixer.service.scratch import scratch_file

__all__ = ["IN_FLIGHT", "MAX_FIELD_BYTES", "WRITE_BYTES", "Form", "SpooledFile", "read_form"]

MAX_FIELD_BYTES = 64 * 1024  # a form field (stems, a URL…) is short
# File bytes gathered into one block before they are handed to the writer thread.
WRITE_BYTES = 1 << 20
# Blocks waiting to be written at most (the receiving waits beyond): memory stays flat.
IN_FLIGHT = 8
# A part's RFC 5987 file name, ``filename*=utf-8''Beyonc%C3%A9.wav`` (charset, language, the
# percent-encoded bytes), which python-multipart's header parser leaves out.
_EXTENDED_NAME = re.compile(rb"""(?:^|;)\s*filename\*\s*=\s*([^';\s]*)'[^']*'([^;\s]*)""", re.I)


@dataclass
class SpooledFile:
    """The form's file: spooled at ``path`` (``size`` bytes), as the client named and typed it."""

    field: str
    filename: str
    content_type: str | None
    path: Path
    size: int = 0
    sha256: str | None = None  # hex, computed while the bytes were written (once complete)


@dataclass
class Form:
    """A parsed form: its text fields (first value of each name) and its one file, if any."""

    fields: dict[str, str] = field(default_factory=dict)
    file: SpooledFile | None = None


class _Parser:
    """python-multipart callbacks building a :class:`Form` (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        max_file_bytes: int,
        max_fields: int,
        charset: str,
        storage: StorageUse | None,
    ):
        self.form = Form()
        self.data_dir = data_dir
        self.max_file_bytes = max_file_bytes
        self.storage = storage
        self.max_fields = max_fields
        self.charset = charset
        self.fd: int | None = None
        self.pending: list[bytes] = []  # file bytes to write (off the event loop)
        self.pending_bytes = 0
        self.digest = hashlib.sha256()  # of the file, as it is written
        self._headers: dict[bytes, bytes] = {}
        self._name = b""
        self._value = b""
        self._field: str | None = None
        self._data = bytearray()
        self._in_file = False
        self._count = 0

    def _text(self, raw: bytes) -> str:
        """A name, file name or field value (never the file's bytes), as text a field takes
        (``api/text.py``)."""
        return self._checked(raw.decode(self.charset, errors="replace"))

    @staticmethod
    def _checked(text: str) -> str:
        """``text``, refused when it holds a NUL (``api/text.py``)."""
        if "\x00" in text:
            raise InvalidRequest(f"the form holds {NUL}")
        return text

    def on_part_begin(self) -> None:
        self._headers, self._data, self._in_file, self._field = {}, bytearray(), False, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def _file_name(self, disposition: bytes, options: dict[bytes, bytes]) -> str | None:
        """The part's file name: its ``filename*`` when it has one, else its ``filename``
        (None: neither, the part is a field). .NET's HttpClient and PowerShell send both for
        a name that is not ASCII, ``filename`` as a MIME encoded word
        (``"=?utf-8?B?QmV5b25jw6kud2F2?="``) that no one would call the song; RFC 6266 has
        ``filename*`` win where both are given."""
        extended = _EXTENDED_NAME.search(disposition)
        # RFC 5987's two charsets; another (Python's "undefined" codec raises whatever it is
        # given) leaves the plain name.
        if extended is not None and extended.group(1).lower() in (b"utf-8", b"iso-8859-1"):
            codec = extended.group(1).decode()
            return self._checked(unquote_to_bytes(extended.group(2)).decode(codec, "replace"))
        if b"filename" in options:
            # Browsers, curl and httpx send a '"' in a file name as %22 (the HTML standard's
            # form encoding): the song 'Take "2".wav' is not called 'Take %222%22.wav'.
            return self._text(options[b"filename"].replace(b"%22", b'"'))
        return None

    def on_headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        if b"name" not in options:
            raise InvalidRequest("each form part needs a Content-Disposition with a name")
        name = self._text(options[b"name"])
        self._count += 1
        if self._count > self.max_fields:
            raise InvalidRequest(f"a form here has at most {self.max_fields} fields")
        file_name = self._file_name(disposition, options)
        if file_name is None:
            self._field = name
            return
        if self.form.file is not None:
            raise InvalidRequest("send one file per request", param=name)
        content_type = self._headers.get(b"content-type")
        fd, path = scratch_file(self.data_dir, "upload")
        self.fd = fd
        self.form.file = SpooledFile(
            field=name,
            filename=file_name,
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
                raise FileTooLarge.over(self.max_file_bytes, param=self.form.file.field)
            storage = self.storage
            room = storage.room_bytes if storage is not None else None
            if storage is not None and room is not None and self.form.file.size > room:
                # The same, for the room the account's storage had left.
                what = f"this file is over the {room} bytes left in this account's storage"
                raise storage.refusal(what, self.form.file.field)
            self.pending.append(chunk)
            self.pending_bytes += len(chunk)
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

    def take(self) -> bytes:
        """The file bytes received since the last call, to be written (by :class:`_Writer`)."""
        data, self.pending, self.pending_bytes = b"".join(self.pending), [], 0
        return data

    def write(self, data: bytes) -> None:
        """Hash and write ``data`` to the spool (blocking: runs in :class:`_Writer`'s thread)."""
        assert self.fd is not None
        self.digest.update(data)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            if StorageFull.caused(exc):
                spool = self.form.file
                raise StorageFull(where=spool.path.parent if spool else self.data_dir) from exc
            raise

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


class _Writer:
    """Hashes and writes the file's blocks in a thread of its own while the event loop receives
    the next ones (hashing and writing release the GIL): receiving never waits for the disk,
    and at most :data:`IN_FLIGHT` blocks wait to be written, so memory stays flat. A write
    error (a full disk) ends the upload when the next block is handed over, or at the end."""

    def __init__(self, parser: _Parser) -> None:
        self.parser = parser
        self.blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=IN_FLIGHT)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def _run(self) -> None:
        while (block := self.blocks.get()) is not None:
            if self.error is None:
                try:
                    self.parser.write(block)
                except BaseException as exc:  # raised in the event loop (put, finish)
                    self.error = exc

    def raise_error(self) -> None:
        """Raise the error a write met, if one did."""
        if self.error is not None:
            raise self.error

    async def _put(self, item: bytes | None) -> None:
        try:
            self.blocks.put_nowait(item)
        except queue.Full:  # the disk is behind: wait for room, off the event loop
            await run_upload(partial(self.blocks.put, item))

    async def put(self, block: bytes) -> None:
        """Hand ``block`` over to be written."""
        self.raise_error()
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="demixer-upload", daemon=True)
            self.thread.start()
        await self._put(block)

    async def stop(self) -> None:
        """Wait until every block handed over is written (or failed) and the thread ended."""
        with anyio.CancelScope(shield=True):  # the thread is stopped, whatever happens
            if self.thread is not None:
                await self._put(None)
                await run_upload(self.thread.join)
                self.thread = None


async def _fields_body(request: Request, max_fields: int) -> bytes:
    """The body of a form without a file, read up to what ``max_fields`` fields can hold."""
    limit = max_fields * MAX_FIELD_BYTES
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestTooLarge(f"a form here is at most {limit} bytes")
    return body


async def _json_fields(request: Request, max_fields: int) -> dict[str, str]:
    """The fields of a JSON object body (see the module docstring)."""
    value = parse_json(await _fields_body(request, max_fields))
    if not isinstance(value, dict):
        raise InvalidRequest("the JSON body must be an object of fields")
    if len(value) > max_fields:
        raise InvalidRequest(f"a form here has at most {max_fields} fields")
    return {
        str(name): item if isinstance(item, str) else json.dumps(item)
        for name, item in value.items()
        if item is not None
    }


async def _urlencoded(request: Request, max_fields: int, charset: str) -> dict[str, str]:
    """The fields of a URL-encoded form, read up to what ``max_fields`` fields can hold."""
    body = await _fields_body(request, max_fields)
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
    request: Request,
    data_dir: Path,
    max_file_bytes: int,
    *,
    max_fields: int = 20,
    storage: StorageUse | None = None,
) -> AsyncIterator[Form]:
    """The multipart form of ``request``, its file spooled under ``data_dir`` (removed after).
    ``storage``: what the caller's account holds, read before the body: its file may take no
    more than the room left (:func:`~demixer.api.uploads.storage_room`).

    Raises:
        InvalidRequest: not a form (multipart, URL-encoded, a JSON object or no body at
            all), or a broken one (400).
        FileTooLarge: the file is over ``max_file_bytes`` (413; nothing past it was written).
        StorageQuotaExceeded: the file is over ``storage``'s room (413; the same).
        RequestTooLarge: a text field over :data:`MAX_FIELD_BYTES` (413).
        StorageFull: the spool could not be written (507).
    """
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind == b"application/x-www-form-urlencoded":  # fields only (e.g. an audio_url)
        yield Form(fields=await _urlencoded(request, max_fields, _charset(params)))
        return
    if kind == b"application/json":
        yield Form(fields=await _json_fields(request, max_fields))
        return
    if not kind and sends_no_body(request.scope):  # nothing sent: the route says what is missing
        yield Form()
        return
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest("send a multipart/form-data body (with its boundary)")
    parser = _Parser(data_dir, max_file_bytes, max_fields, _charset(params), storage)
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
    writer = _Writer(parser)
    try:
        try:
            multipart = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
            async for chunk in request.stream():
                multipart.write(chunk)
                if parser.pending_bytes >= WRITE_BYTES:
                    await writer.put(parser.take())
            multipart.finalize()
        except FormParserError as exc:
            await writer.stop()
            raise InvalidRequest(f"the multipart form is malformed: {exc}") from None
        except BaseException:
            await writer.stop()  # the spool is removed below: its error does not matter
            raise
        if parser.pending_bytes:
            await writer.put(parser.take())
        await writer.stop()
        writer.raise_error()
        parser.close()
        if parser.form.file is not None:
            parser.form.file.sha256 = parser.digest.hexdigest()
        yield parser.form
    finally:
        parser.close()
        if parser.form.file is not None:
            parser.form.file.path.unlink(missing_ok=True)
