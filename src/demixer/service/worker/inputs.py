"""A job's input made local for one attempt, in the worker (parent) process.

A stored upload is linked under the user's own file name from ``storage.local_path``; an
``audio_url`` is downloaded (:mod:`demixer.service.worker.fetch`) and its seconds are then held
against its account's monthly allowance. What stops the attempt here raises an
:class:`~demixer.service.worker.lease.Abort`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from demixer.audio import probe
from demixer.errors import (
    DemixerError,
    FileExpired,
    QuotaExceeded,
    StorageFull,
    StorageUnavailable,
    TurnedOff,
)
from demixer.service.accounts.quota import check_quota, held, hold, quota_state
from demixer.service.context import Services
from demixer.service.jobs.contract import JobParams, UploadInput
from demixer.service.jobs.queue import Claim
from demixer.service.urlguard import AUDIO_URLS_OFF, parse_allowlist
from demixer.service.worker.fetch import AudioUrlFailed, fetch_audio_url
from demixer.service.worker.lease import Abort, Lease
from demixer.storage import BlobNotFound

__all__ = ["hold_quota", "local_input"]


@contextmanager
def local_input(
    services: Services, worker_id: str, params: JobParams, tmp: Path, lease: Lease
) -> Iterator[Path]:
    """The job's input as a local file under ``tmp``, for as long as the block runs."""
    settings = services.settings
    source = params.input
    if isinstance(source, UploadInput):
        key = source.storage_key
        with ExitStack() as stack:
            try:
                path = lease.through_outage(
                    lambda: stack.enter_context(services.storage.local_path(key)),
                    f"{worker_id}: fetching the input of {key}",
                )
            except (StorageUnavailable, StorageFull) as exc:
                # An outage (the job waits for the store), or no room for the input's local
                # copy: retried.
                message = f"fetching the input failed: {exc.message}"
                raise Abort("failed", exc.code, message, retryable=True) from exc
            except BlobNotFound as exc:  # the input was deleted or swept meanwhile
                raise _input_gone(source) from exc
            except DemixerError as exc:  # anything else the store says: not retried
                message = f"fetching the input failed: {exc.message}"
                raise Abort("failed", exc.code, message) from exc
            # Under the user's own file name, so that error messages speak of it. A hard
            # link: the job's own name for the bytes, so that the upload deleted while the
            # job runs (its name in the store unlinked) leaves the job its input, as object
            # storage's downloaded copy does. A symbolic link was left dangling, and the
            # job failed FILE_NOT_FOUND with this path in its message.
            named = tmp / "input" / params.input_name
            named.parent.mkdir()
            try:
                os.link(path, named)
            except FileNotFoundError as exc:  # deleted since the store found it
                raise _input_gone(source) from exc
            except OSError:  # the store on another file system: a symbolic link
                try:
                    named.symlink_to(path)
                except OSError:
                    named = path
            yield named
        return
    if not settings.audio_urls:  # queued before the operator turned URL inputs off
        raise Abort("failed", TurnedOff.code, AUDIO_URLS_OFF)
    dest = tmp / "input" / params.input_name
    dest.parent.mkdir()
    try:
        fetch_audio_url(
            source.audio_url,
            dest,
            settings.max_upload_bytes,
            # Reads never outlast a lease.
            min(settings.url_fetch_timeout_seconds, max(1.0, settings.lease_seconds / 2)),
            allowlist=parse_allowlist(settings.url_allowlist),
            on_chunk=lambda _: lease.tick(),
            # Past this, a body averaging under 1 KiB/s is given up on (settings.MIN_BODY_RATE).
            slow_after=settings.url_fetch_timeout_seconds,
        )
    except AudioUrlFailed as exc:
        raise Abort("failed", exc.code, exc.message, exc.retryable) from exc
    yield dest


def hold_quota(services: Services, claim: Claim, params: JobParams, path: Path) -> None:
    """Hold an ``audio_url``'s seconds against its account's monthly allowance, now that
    the file is here to measure (an upload's are held since its submit); a file longer
    than the allowance has left fails the job ``QUOTA_EXCEEDED``, as the submit of an
    upload that long is refused (``service/accounts/quota.py``)."""
    if isinstance(params.input, UploadInput) and params.input.duration is not None:
        return
    db = services.db
    with db.read() as s:
        if held(s, claim.id) or quota_state(s, claim.account_id, db.clock()) is None:
            return  # measured by an earlier attempt, or unlimited: nothing to measure
    try:
        limit = services.settings.max_duration_seconds
        info = probe(path, max_seconds=limit, track=params.audio_track)  # the track it reads
    except DemixerError:
        return  # unusable: the child's check of the input fails it with the upload's answer
    if info.duration is None:
        return  # no length to hold: the child's check says what is wrong with it
    try:
        with db.write() as s:
            check_quota(s, claim.account_id, info.duration, db.clock())
            hold(s, claim.id, claim.account_id, info.duration)
    except QuotaExceeded as exc:
        raise Abort("failed", exc.code, exc.message) from None


def _input_gone(source: UploadInput) -> Abort:
    """The job's end when its uploaded input was deleted (or swept) before it was read."""
    message = f"the input file {source.file_id} was deleted or expired before this request ran"
    return Abort("failed", FileExpired.code, message)
