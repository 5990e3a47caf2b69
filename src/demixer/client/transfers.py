"""The song's bytes on this machine: checking a file before it is uploaded, reading it as it
is sent, and writing downloads whole or not at all (resuming one cut mid-file). What the
sync and async clients share of it; they do the network I/O themselves.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, BinaryIO

import httpx

from demixer.client.errors import BadResponse, shown_url
from demixer.client.types import OutputFile, Result
from demixer.errors import DemixerError, InvalidAudio, StorageFull
from demixer.filemode import new_temporary, on_disk, unwritable
from demixer.naming import input_name, renamed, shown_name

__all__ = [
    "CountedOnce",
    "CountingReader",
    "atomic_file",
    "check_size",
    "content_type_for",
    "download_target",
    "named_after",
    "resume_from",
    "upload_size",
]

_MEDIA_OK = ("audio/", "video/")


def upload_size(path: Path) -> int:
    """The size of a file to upload; an empty file or a folder is refused before anything is
    sent (``InvalidAudio``; a missing one raises FileNotFoundError)."""
    if path.is_dir():
        raise InvalidAudio(f"{shown_name(path.name) or path} is a folder, not an audio file")
    size = path.stat().st_size
    if size == 0:
        raise InvalidAudio(f"{shown_name(path.name)} is empty (0 bytes)")
    return size


def resume_from(response: httpx.Response, written: int) -> int:
    """Where a download's new answer continues the file: ``written`` (the rest, as asked with
    ``Range``: a 206, or a 200 whose ``Content-Range`` says so) or 0 (a 200: the whole file
    again, so start over).

    ``rclone serve s3``, the object store of demixer's scale-out deployment, answers a range
    200 with its ``Content-Range``: read as the whole file, the rest was written from the
    first byte, and every download cut once failed "got N bytes, the server announced M"."""
    content_range = response.headers.get("content-range", "")
    rest = written > 0 and content_range.startswith(f"bytes {written}-")
    if response.status_code in (200, 206) and rest:
        return written
    if response.status_code == 200:
        return 0
    raise BadResponse(
        f"{shown_url(response.request.url)}: asked for bytes {written}- and got "
        f"{response.status_code} {content_range or '(no Content-Range)'}"
    )


def content_type_for(path: Path) -> str:
    """The upload's Content-Type from its name; the server probes the bytes either way."""
    guessed = mimetypes.guess_type(path.name)[0] or ""
    return guessed if guessed.startswith(_MEDIA_OK) else "application/octet-stream"


def download_target(directory: Path, output: OutputFile) -> Path:
    """Where ``output`` goes: ``directory/{file_name}``, its name kept inside ``directory``."""
    name = Path(output.file_name.replace("\\", "/")).name
    if name in ("", ".", ".."):
        ext = mimetypes.guess_extension(output.content_type) or ""
        name = f"{output.name}{ext}"
    return directory / on_disk(name)


def named_after(result: Result, uploaded: str, path: Path) -> Result:
    """``result`` with its files named after the local file ``path``, as ``demixer separate``
    names them, not after the job's name for the upload ``uploaded`` (which keeps a name's
    last 120 characters and renames a hidden one: two local songs could be one name there,
    and the second's stems would replace the first's)."""
    was, now = Path(input_name(uploaded)).stem, shown_name(path.stem)
    outputs = {
        name: replace(output, file_name=renamed(output.file_name, was, now))
        for name, output in result.outputs.items()
    }
    return replace(result, outputs=outputs)


@contextmanager
def atomic_file(target: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``target`` that replaces it only if the block succeeds.

    The file system's refusals (the disk is full, ``target`` is a folder, no permission)
    are the local CLI's: :class:`~demixer.errors.StorageFull` or
    :class:`~demixer.errors.InvalidOutput`, not a bare OSError that reads as a bad input.
    """
    made: dict[str, Path] = {}
    try:
        tmp = new_temporary(target, ".part", made, "part")
        with tmp.open("wb") as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException as exc:
        for path in made.values():
            path.unlink(missing_ok=True)
        if not isinstance(exc, OSError) or isinstance(exc, DemixerError):  # WaitTimeout is one
            raise
        if StorageFull.caused(exc):
            raise StorageFull("cannot write the stems: the disk is full") from exc
        raise unwritable(exc) from exc


def check_size(output: OutputFile, written: int) -> None:
    if output.size is not None and written != output.size:
        raise BadResponse(
            f"{output.file_name}: got {written} bytes, the server announced {output.size}"
        )


class CountedOnce:
    """``on_bytes`` for a file sent or fetched in more than one try: an upload sent again (a
    cut connection, a 429 or 503) reads the file from its start again, and a download a store
    answers with the whole file again (200 to a ``Range``) starts over. Only the bytes past
    the furthest any try reached are counted, so a progress bar ends at the file's size, not
    past it (5 MiB of a 2.5 MiB song sent twice)."""

    def __init__(self, on_bytes: Callable[[int], None] | None) -> None:
        self._on_bytes = on_bytes
        self._furthest = 0

    def attempt(self, start: int = 0) -> Callable[[int], None] | None:
        """The ``on_bytes`` of one try, which begins at byte ``start`` of the file (None where
        the caller counts nothing)."""
        on_bytes = self._on_bytes
        if on_bytes is None:
            return None
        at = start

        def sent(n: int) -> None:
            nonlocal at
            at += n
            if at > self._furthest:
                on_bytes(at - self._furthest)
                self._furthest = at

        return sent


class CountingReader:
    """A file httpx's multipart encoder reads in chunks, reporting each chunk's size."""

    def __init__(self, fh: BinaryIO, on_bytes: Callable[[int], None] | None) -> None:
        self._fh, self._on_bytes = fh, on_bytes

    def read(self, n: int = -1) -> bytes:
        chunk = self._fh.read(n)
        if self._on_bytes is not None and chunk:
            self._on_bytes(len(chunk))
        return chunk

    def fileno(self) -> int:  # httpx sizes the part (Content-Length) with fstat
        return self._fh.fileno()
