"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ``rclone serve s3``…).

The storage URL is ``s3://BUCKET[/PREFIX]?endpoint=URL&region=R&public_endpoint=URL``:

- ``PREFIX``: every key is stored under it (``PREFIX/inputs/...``), so one bucket can hold
  several deployments;
- ``endpoint``: where the servers reach the bucket (none: real AWS, by region);
- ``region``: the signing region (default ``$AWS_DEFAULT_REGION`` or ``us-east-1``);
- ``public_endpoint``: the host presigned URLs are made for, when clients reach the bucket by
  another address than the servers do (default: ``endpoint``).

Credentials come from the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
profiles, instance roles). Timeouts are short and retries few, so an outage is reported within
seconds as :class:`~demixer.errors.StorageUnavailable` (HTTP 503 ``STORAGE_UNAVAILABLE``; a
retryable failure in the worker), never as a hang or a foreign traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import parse_qs, urlparse, urlsplit

import boto3
import botocore.session
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from demixer.errors import StorageFull, StorageRefused, StorageUnavailable
from demixer.storage.base import (
    BlobNotFound,
    InvalidStorageUrl,
    StoredBlob,
    content_disposition,
    safe_key,
)

__all__ = ["S3Storage"]

_PART = 8 << 20  # bytes per part when ``put`` streams a large source
_MIN_PART = 5 << 20  # S3's smallest part but the last
# CopyObject copies up to 5 GiB in one request; only larger blobs need a multipart copy (which
# `rclone serve s3` answers without the part ETags boto3 needs: a 500 on any upload > 8 MiB).
_COPY_IN_ONE = 5 << 30
_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys
_LIST_PAGE = 1000  # ListObjectsV2 answers at most this many keys a page
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
# S3 error codes of a server whose disk is full (MinIO's, answered with HTTP 507).
_FULL = frozenset({"XMinioStorageFull"})
_T = TypeVar("_T")

_sessions = threading.Lock()
_shared: dict[str, Any] = {}


def _new_session() -> boto3.session.Session:
    """A boto3 session of its own (credentials, profile and region resolved from the
    environment as each storage always did) that shares one loader of botocore's bundled
    service models and endpoints with the process's other sessions: each new session read
    and parsed that JSON again, 120 of the 136 ms of CPU a client took (15 ms shared). The
    loader holds read-only data only."""
    with _sessions:
        core = botocore.session.get_session()
        loader = _shared.setdefault("loader", core.get_component("data_loader"))
        core.register_component("data_loader", loader)
        session = boto3.session.Session(botocore_session=core)
        # boto3 adds its data folder to the loader's search path for each session: once is
        # enough (the list would grow by one path per storage this process opens).
        loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))
        return session


def _unavailable(exc: Exception) -> StorageUnavailable:
    error = StorageUnavailable()
    error.__cause__ = exc
    return error


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


@contextlib.contextmanager
def _translated(key: str = "") -> Iterator[None]:
    """boto3's errors as demixer's: unreachable or 5xx -> StorageUnavailable, but a full disk
    (507, ``XMinioStorageFull``) -> StorageFull; no bucket, or credentials refused (401/403)
    -> StorageRefused (the operator's, never "the file is gone"); 404 -> BlobNotFound.
    Others (400) pass through."""
    try:
        yield
    except ClientError as exc:
        error = _classified(exc, key)
        if error is exc:
            raise
        raise error from (None if isinstance(error, BlobNotFound) else exc)
    except S3UploadFailedError as exc:  # upload_file's wrapper around the ClientError
        cause = exc.__context__
        error = _classified(cause, key) if isinstance(cause, ClientError) else exc
        if error is exc:
            raise
        raise error from exc
    except NoCredentialsError as exc:
        raise StorageRefused(
            "no credentials for the bucket: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or a profile or a role)"
        ) from exc
    except (BotoConnectionError, HTTPClientError) as exc:  # refused, timed out, cut
        raise _unavailable(exc) from exc


def _classified(exc: ClientError, key: str) -> Exception:
    """The demixer error for an S3 error answer (:func:`_translated`); the answer itself when
    it is none of them (a 400: ours)."""
    if _code(exc) == "NoSuchBucket":
        return StorageRefused("the bucket does not exist (NoSuchBucket)")
    if _status(exc) in (401, 403):
        return StorageRefused(
            f"the bucket refused access ({_code(exc) or _status(exc)}): check the credentials "
            "and their rights on it"
        )
    if _code(exc) in _NOT_FOUND or _status(exc) == 404:
        return BlobNotFound(f"no blob {key}")
    if _status(exc) == 507 or _code(exc) in _FULL:
        # A server that says its disk is full (MinIO past its free-space threshold): no
        # outage to wait out in seconds, as the 5xx below are, but a disk to free.
        said = _code(exc) or "507"
        full = StorageFull(f"object storage is full ({said}); nothing was stored, retry later")
        full.__cause__ = exc
        return full
    if _status(exc) >= 500:
        return _unavailable(exc)
    answer: Exception = exc
    return answer


def _raise_for_undeleted(answer: dict[str, Any], prefix: str) -> None:
    """Raise when a DeleteObjects answer lists keys it did not delete. S3 answers such a
    partial failure 200 with an ``Errors`` list (per key: ``InternalError``, ``SlowDown``,
    ``AccessDenied``...); read as a success, the sweeper and ``DELETE`` dropped the rows of
    objects still stored (billed for good, a deleted song still in the bucket)."""
    errors = [e for e in answer.get("Errors", ()) if e.get("Code") not in _NOT_FOUND]
    if not errors:
        return
    codes = sorted({str(e.get("Code", "")) for e in errors})
    message = f"the bucket did not delete {len(errors)} blobs under {prefix} ({', '.join(codes)})"
    if codes == ["AccessDenied"]:
        raise StorageRefused(f"{message}: check the credentials' rights to delete")
    raise StorageUnavailable(f"{message}; retry shortly")


class _Body:
    """A streaming GET body as a file object; transport errors become StorageUnavailable."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, size: int = -1) -> bytes:
        with _translated():
            data = self._body.read(size if size >= 0 else None)
        return cast(bytes, data)

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_full(source: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end (``source.read`` may answer short)."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = source.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class S3Storage:
    """Blobs as objects in one bucket, under an optional key prefix (see module docs).

    Args:
        bucket: the bucket's name.
        prefix: stored keys are ``{prefix}/{key}`` ("" for none).
        endpoint: the S3 endpoint URL the servers use (None: AWS).
        region: the signing region.
        public_endpoint: the endpoint presigned URLs name (None: ``endpoint``).
        connect_timeout: seconds to wait for a connection.
        read_timeout: seconds to wait for a response's next bytes.
        max_attempts: tries of each call (1 + retries) before it fails.
        scratch: the directory ``local_path`` downloads into (None: ``$TMPDIR``); a full one
            is :class:`~demixer.errors.StorageFull`.
    """

    direct = True  # clients PUT and GET through presigned URLs

    min_part_bytes = _MIN_PART

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        public_endpoint: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 2,
        scratch: Path | None = None,
    ) -> None:
        self.bucket = bucket
        self.scratch = scratch
        self.prefix = prefix.strip("/")
        region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        )
        session = _new_session()
        self._client = session.client(
            "s3", endpoint_url=endpoint, region_name=region, config=config
        )
        # Presigning is local (no request); only the host in the URL differs.
        self._signing = (
            session.client("s3", endpoint_url=public_endpoint, region_name=region, config=config)
            if public_endpoint and public_endpoint != endpoint
            else self._client
        )
        # Where browsers fetch presigned URLs from (the web page's Content-Security-Policy).
        signing_url = urlsplit(str(self._signing.meta.endpoint_url))
        self.public_origin: str | None = f"{signing_url.scheme}://{signing_url.netloc}"
        self._transfer = TransferConfig(
            multipart_threshold=_PART, multipart_chunksize=_PART, max_concurrency=4
        )
        self._copy_transfer = TransferConfig(
            multipart_threshold=_COPY_IN_ONE, multipart_chunksize=_PART, max_concurrency=4
        )

    @classmethod
    def from_url(cls, url: str, *, scratch: Path | None = None) -> S3Storage:
        """``s3://BUCKET[/PREFIX]?endpoint=URL&region=R&public_endpoint=URL``."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InvalidStorageUrl(
                f"bad S3 storage URL {url!r}: use s3://BUCKET[/PREFIX]?endpoint=URL"
            )
        query = {name: values[-1] for name, values in parse_qs(parsed.query).items()}
        unknown = set(query) - {"endpoint", "region", "public_endpoint"}
        if unknown:
            raise InvalidStorageUrl(
                f"bad S3 storage URL {url!r}: unknown option(s) {sorted(unknown)} "
                "(known: endpoint, region, public_endpoint)"
            )
        return cls(
            parsed.netloc,
            parsed.path,
            endpoint=query.get("endpoint"),
            region=query.get("region"),
            public_endpoint=query.get("public_endpoint"),
            scratch=scratch,
        )

    def _key(self, key: str) -> str:
        key = safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, key: str, fn: Callable[..., _T], **kwargs: Any) -> _T:
        with _translated(key):
            return fn(Bucket=self.bucket, **kwargs)

    # --- the Storage interface -------------------------------------------------------------

    def put(self, key: str, source: BinaryIO, *, max_bytes: int | None = None) -> tuple[int, str]:
        full = self._key(key)
        digest = hashlib.sha256()
        first = _read_full(source, _PART)
        if len(first) < _PART:  # all of it: one PUT, atomic by itself
            if max_bytes is not None and len(first) > max_bytes:
                raise ValueError(f"more than {max_bytes} bytes")
            digest.update(first)
            self._call(key, self._client.put_object, Key=full, Body=first)
            return len(first), digest.hexdigest()
        # Larger: a multipart upload, invisible until completed and aborted on any failure.
        upload = self._call(key, self._client.create_multipart_upload, Key=full)["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            total, data = 0, first
            while data:
                total += len(data)
                if max_bytes is not None and total > max_bytes:
                    raise ValueError(f"more than {max_bytes} bytes")
                digest.update(data)
                number = len(parts) + 1
                answer = self._call(
                    key,
                    self._client.upload_part,
                    Key=full,
                    UploadId=upload,
                    PartNumber=number,
                    Body=data,
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                data = _read_full(source, _PART)
            self._call(
                key,
                self._client.complete_multipart_upload,
                Key=full,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            self.abort_multipart(key, upload)
            raise
        return total, digest.hexdigest()

    def put_file(self, key: str, path: Path) -> int:
        if not path.is_file():
            raise BlobNotFound(f"no file {path}")
        with _translated(key):
            self._client.upload_file(str(path), self.bucket, self._key(key), Config=self._transfer)
        return path.stat().st_size

    def open(self, key: str, start: int = 0) -> BinaryIO:
        ranged = {"Range": f"bytes={start}-"} if start else {}
        answer = self._call(key, self._client.get_object, Key=self._key(key), **ranged)
        return cast(BinaryIO, _Body(answer["Body"]))

    def size(self, key: str) -> int:
        return int(self._call(key, self._client.head_object, Key=self._key(key))["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except BlobNotFound:
            return False
        return True

    def ping(self) -> None:
        try:
            self._call("", self._client.head_bucket)
        except BlobNotFound:  # a HEAD has no body to say NoSuchBucket in
            raise StorageRefused("the bucket does not exist") from None
        except ClientError as exc:  # a 400
            raise StorageRefused(
                f"the bucket refused the request ({_code(exc) or _status(exc)})"
            ) from exc

    def sweep_partials(self) -> int:
        return 0  # a PUT is atomic in the bucket; unfinished multipart uploads: its lifecycle

    def _listed(self, prefix: str) -> Iterator[dict[str, Any]]:
        """The listing's entries of the objects ``prefix`` names (see :meth:`delete_prefix`),
        page after page (``_LIST_PAGE`` keys each)."""
        # As on a filesystem: the blob named ``prefix`` and everything "inside" it, never a
        # sibling that merely starts with the same letters (inputs/file_1 vs inputs/file_10).
        base = self._key(prefix.rstrip("/"))
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base, PaginationConfig={"PageSize": _LIST_PAGE}
        )
        with _translated(prefix):
            for page in pages:
                for item in page.get("Contents", ()):
                    name = str(item["Key"])
                    if name == base or name.startswith(base + "/"):
                        yield item

    def blobs(self, prefix: str) -> Iterator[StoredBlob]:
        cut = len(self.prefix) + 1 if self.prefix else 0
        for item in self._listed(prefix):
            modified = item["LastModified"].astimezone(UTC)
            yield StoredBlob(str(item["Key"])[cut:], int(item["Size"]), modified)

    def delete_prefix(self, prefix: str) -> int:
        keys = [str(item["Key"]) for item in self._listed(prefix)]
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": k} for k in keys[start : start + _DELETE_BATCH]]
            answer = self._call(
                prefix, self._client.delete_objects, Delete={"Objects": batch, "Quiet": True}
            )
            _raise_for_undeleted(answer, prefix)
        return len(keys)

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        if self.scratch is not None:
            self.scratch.mkdir(parents=True, exist_ok=True)
        # Named like every scratch entry (service/scratch.py): a killed process's is swept.
        with tempfile.TemporaryDirectory(prefix=f"s3-{os.getpid()}-", dir=self.scratch) as tmp:
            path = Path(tmp) / key.rsplit("/", 1)[-1]
            try:
                with _translated(key):
                    self._client.download_file(
                        self.bucket, self._key(key), str(path), Config=self._transfer
                    )
            except OSError as exc:
                if StorageFull.caused(exc, tmp):
                    raise StorageFull(where=Path(tmp).parent) from exc
                raise
            yield path

    def copy(self, src_key: str, dst_key: str) -> int:
        size = self.size(src_key)  # BlobNotFound before anything is written
        with _translated(src_key):
            self._client.copy(
                {"Bucket": self.bucket, "Key": self._key(src_key)},
                self.bucket,
                self._key(dst_key),
                Config=self._copy_transfer,
            )
        return size

    def presign_get(
        self, key: str, ttl_seconds: int, *, content_type: str, file_name: str
    ) -> str | None:
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ResponseContentType": content_type,
            "ResponseContentDisposition": content_disposition(file_name),
            # As the API's own downloads: the browser may keep a stem, a shared cache not.
            "ResponseCacheControl": "private",
        }
        return str(
            self._signing.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl_seconds)
        )

    def presign_put(
        self, key: str, ttl_seconds: int, *, content_type: str, content_length: int | None = None
    ) -> str | None:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ContentType": content_type,
        }
        if content_length is not None:  # signed: the bucket refuses any other size
            params["ContentLength"] = content_length
        return str(
            self._signing.generate_presigned_url("put_object", Params=params, ExpiresIn=ttl_seconds)
        )

    # --- multipart uploads straight from clients ---------------------------------------------

    def create_multipart(self, key: str, content_type: str) -> str:
        answer = self._call(
            key, self._client.create_multipart_upload, Key=self._key(key), ContentType=content_type
        )
        return str(answer["UploadId"])

    def presign_part(
        self, key: str, upload_id: str, number: int, ttl_seconds: int, content_length: int
    ) -> str:
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "UploadId": upload_id,
            "PartNumber": number,
            "ContentLength": content_length,  # signed: the bucket refuses any other size
        }
        return str(
            self._signing.generate_presigned_url(
                "upload_part", Params=params, ExpiresIn=ttl_seconds
            )
        )

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> int:
        listed = [
            {"PartNumber": number, "ETag": f'"{etag.strip().strip(chr(34))}"'}
            for number, etag in sorted(parts)
        ]
        try:
            with _translated(key):
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    UploadId=upload_id,
                    MultipartUpload={"Parts": listed},
                )
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload":
                raise BlobNotFound(f"no multipart upload {upload_id!r} for {key}") from None
            message = exc.response.get("Error", {}).get("Message") or _code(exc)
            raise ValueError(f"{_code(exc)}: {message}") from None
        return self.size(key)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        # Best effort: a leftover upload is cleaned by the bucket's lifecycle rule.
        with contextlib.suppress(BotoCoreError, ClientError, StorageUnavailable, BlobNotFound):
            self._call(
                key, self._client.abort_multipart_upload, Key=self._key(key), UploadId=upload_id
            )
