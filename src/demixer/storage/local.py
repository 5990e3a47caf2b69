"""Blobs as files under one directory, the embedded default; writes are renamed into place.

The API receives and serves these bytes itself (``/v1/blobs``, signed by
:class:`~demixer.storage.signer.UrlSigner`): this store presigns nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO, cast

from demixer.errors import StorageFull, StorageUnavailable
from demixer.storage.base import BlobNotFound, StoredBlob, safe_key

__all__ = ["LocalStorage", "process_alive"]

_CHUNK = 1 << 20


@contextlib.contextmanager
def _disk_full_translated(where: Path) -> Iterator[None]:
    """A write that fails for want of space is :class:`StorageFull` (nothing was stored)."""
    try:
        yield
    except OSError as exc:
        if StorageFull.caused(exc):
            raise StorageFull(where=where) from exc
        raise


class LocalStorage:
    """Blobs as files under one directory; writes go to a temp file renamed into place."""

    direct = False  # the API receives and serves the bytes (/v1/blobs)
    public_origin: str | None = None

    def __init__(self, root: Path) -> None:
        self.root = root
        # Made for this user alone, as the data directory is: every account's songs and stems.
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key)

    def put(self, key: str, source: BinaryIO, *, max_bytes: int | None = None) -> tuple[int, str]:
        target = self._path(key)
        with _disk_full_translated(self.root):
            return self._put(target, source, max_bytes)

    def _put(self, target: Path, source: BinaryIO, max_bytes: int | None) -> tuple[int, str]:
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        total = 0
        # Named after this process: a temporary left by one that was killed mid-write is known
        # by its dead pid and removed by the next process to start (sweep_partials).
        fd, tmp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".part"
        )
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    total += len(chunk)
                    if max_bytes is not None and total > max_bytes:
                        raise ValueError(f"more than {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            try:
                os.replace(tmp, target)
            except FileNotFoundError:  # its folder was deleted as it was written (with tmp)
                raise BlobNotFound(f"{target.parent.name} was deleted meanwhile") from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return total, digest.hexdigest()

    def sweep_partials(self) -> int:
        """Delete the temporaries of writes whose process died midway (an API killed during an
        upload); those of live processes (sharing this directory) are left alone."""
        removed = 0
        for top in ("inputs", "uploads", "staging"):
            for path in (self.root / top).rglob(".*.part"):
                pid = path.name.removesuffix(".part").rsplit(".", 2)[1]  # .{name}.{pid}.{rand}
                if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
                    continue
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed

    def put_file(self, key: str, path: Path) -> int:
        # The workers' outputs sit on the same filesystem: a hard link stores them at once.
        # The caller never changes the file afterwards (it only deletes it).
        if not path.is_file():
            raise BlobNotFound(f"no file {path}")
        with _disk_full_translated(self.root):
            return self._link_or_copy(path, self._path(key))

    @staticmethod
    def _link_or_copy(src: Path, dst: Path) -> int:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.link")
        try:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return dst.stat().st_size

    def open(self, key: str, start: int = 0) -> BinaryIO:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {key}") from None
        handle.seek(start)
        return handle

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {key}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def ping(self) -> None:
        # The directory is made at start; a volume unmounted or removed since shows here.
        if not self.root.is_dir():
            raise StorageUnavailable("the storage directory is missing")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable("the storage directory is not writable")

    def delete_prefix(self, prefix: str) -> int:
        target = self.root / prefix.rstrip("/")
        failed: list[OSError] = []

        def keep(_fn: object, _path: str, info: tuple[type, BaseException, object]) -> None:
            if not isinstance(info[1], FileNotFoundError):  # gone meanwhile: deleted all the same
                failed.append(cast(OSError, info[1]))

        count = 0
        if target.is_file():
            try:
                target.unlink(missing_ok=True)
            except OSError as exc:
                failed.append(exc)
            count = 1
        elif target.is_dir():
            count = sum(1 for p in target.rglob("*") if p.is_file())
            shutil.rmtree(target, onerror=keep)
        if failed:
            # Said deleted, the sweeper marked the result expired and DELETE answered 204 while
            # the files stayed (owned by another user, a disk remounted read-only), for good.
            reason = failed[0].strerror or type(failed[0]).__name__
            raise StorageUnavailable(f"could not delete what is stored under {prefix} ({reason})")
        return count

    def blobs(self, prefix: str) -> Iterator[StoredBlob]:
        target = self.root / prefix.rstrip("/")
        paths = [target] if target.is_file() else target.rglob("*")  # dotfiles too
        for path in paths:
            try:
                info = path.stat()
            except FileNotFoundError:  # deleted since it was listed
                continue
            if S_ISREG(info.st_mode):
                modified = datetime.fromtimestamp(info.st_mtime, UTC)
                yield StoredBlob(path.relative_to(self.root).as_posix(), info.st_size, modified)

    def copy(self, src_key: str, dst_key: str) -> int:
        # A hard link costs nothing and is safe: blobs are only ever replaced by rename and
        # removed by unlink, never changed in place. Other filesystems get a real copy.
        src = self._path(src_key)
        if not src.is_file():
            raise BlobNotFound(f"no blob {src_key}")
        with _disk_full_translated(self.root):
            return self._link_or_copy(src, self._path(dst_key))

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(f"no blob {key}")
        yield path

    def presign_get(
        self, key: str, ttl_seconds: int, *, content_type: str, file_name: str
    ) -> str | None:
        return None  # the API serves local blobs itself (/v1/blobs)

    def presign_put(
        self, key: str, ttl_seconds: int, *, content_type: str, content_length: int | None = None
    ) -> str | None:
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie, killed and not yet reaped, does
    not: it writes nothing more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc to ask: the signal said it exists
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
