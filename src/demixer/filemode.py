"""The user's files: new hidden temporaries beside them (renamed into place, so a reader never
sees half a file), made with the mode the user's umask gives, and whether a folder can take them.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import MutableMapping
from pathlib import Path
from typing import TypeVar

from demixer.errors import InvalidOutput

__all__ = ["NAME_MAX", "check_folder", "new_temporary", "on_disk", "unwritable"]

K = TypeVar("K")

# The longest file name most file systems take (ext4, XFS, btrfs, APFS: 255 bytes).
NAME_MAX = 255


def on_disk(name: str) -> str:
    """``name`` (a file name as demixer spells it, :mod:`demixer.naming`) as a path this
    process can write: its UTF-8 bytes, as the OS's file system encoding decodes them. With
    UTF-8 mode turned off under a C locale (``PYTHONUTF8=0 LC_ALL=C``) Python writes paths in
    ASCII, and a 米 in a name was a UnicodeEncodeError traceback; carried as its UTF-8 bytes
    (surrogate escapes), the file is called on disk what it is called on any UTF-8 system.
    Elsewhere ``name`` is unchanged."""
    return os.fsdecode(name.encode("utf-8", "surrogateescape"))


def new_temporary(beside: Path, suffix: str, into: MutableMapping[K, Path], key: K) -> Path:
    """A new empty hidden file ``.{name}.XXXXXXXXXX{suffix}`` next to ``beside`` (so its last
    rename never crosses file systems), ``0666`` less the umask like any file the user's shell
    makes (mkstemp's 0600 is for secrets; stems and downloads are the user's files).

    Its name is put in ``into[key]`` *before* the file is made: an exception can land between
    any two bytecodes (a SIGTERM handler's), and whoever cleans up after it then knows every
    file made, so none is left behind. Returns the path.

    A long ``beside`` name is cut short in the temporary's: a final name of 240 bytes is a
    legal name, and must not fail only because its temporary adds a dot, a token and a suffix.
    """
    room = NAME_MAX - len(f"..{secrets.token_hex(5)}{suffix}".encode())
    # Cut between characters: half a UTF-8 character is a name macOS refuses.
    name = on_disk(os.fsencode(beside.name)[:room].decode("utf-8", "ignore"))
    for _ in range(100):
        path = into[key] = beside.with_name(f".{name}.{secrets.token_hex(5)}{suffix}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            del into[key]  # someone else's
            continue
        os.close(fd)
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(beside.parent))


def check_folder(folder: Path) -> None:
    """Raise :func:`unwritable`'s error when the stems could not be written into ``folder``
    (its nearest existing part is a file, or not writable), without making anything."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise unwritable(FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(existing)))
    if not os.access(existing, os.W_OK | os.X_OK):
        # A read-only mount (a write-protected SD card, a snapshot) is no matter of
        # permissions: "Permission denied" would send the user to chmod in vain.
        code = errno.EROFS if os.statvfs(existing).f_flag & os.ST_RDONLY else errno.EACCES
        raise unwritable(PermissionError(code, os.strerror(code), str(existing)))


def unwritable(e: OSError) -> InvalidOutput:
    """The stems cannot be written where asked: ``e`` (making the folder, or a file in it) in
    words, e.g. "cannot write the stems: out is a file, not a folder"."""
    if isinstance(e, FileExistsError) and e.filename:  # a folder to make is a file
        return InvalidOutput(f"cannot write the stems: {e.filename} is a file, not a folder")
    # "[Errno 13] Permission denied: 'x'"; of a rename, the name it was to have, not the
    # hidden temporary's (gone by the time anyone looks)
    name = e.filename2 or e.filename
    what = f" ({name})" if name else ""
    return InvalidOutput(f"cannot write the stems: {e.strerror or e}{what}")
