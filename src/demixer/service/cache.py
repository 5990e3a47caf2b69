"""The result cache: a request identical to one already completed reuses its outputs.

Two requests give the same outputs when their input bytes, engine model, stems, output names,
format, bit depth, spans and quality level agree; :func:`fingerprint` hashes exactly those. Only
uploaded files take part: an ``audio_url``'s content is unknown until a worker fetches it, so URL
requests are never answered from the cache. Reuse stays within one account.

The reused outputs are *copied* (hard-linked where the storage can) under the new request's own
prefix, ``outputs/{job_id}/cached/…``: each request owns its blobs, so deleting or expiring one
never breaks the other, and no reference counts are needed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from demixer.service.queue import COMPLETED
from demixer.service.schema import File, Job
from demixer.storage import Storage

__all__ = ["copy_outputs", "find_reusable", "fingerprint", "input_sha256"]


def input_sha256(session: Session, params: dict[str, Any]) -> str | None:
    """The SHA-256 of a request's uploaded input (None for URL inputs or unknown hashes)."""
    file_id = (params.get("input") or {}).get("file_id")
    if not file_id:
        return None
    return session.execute(select(File.sha256).where(File.id == file_id)).scalar_one_or_none()


def fingerprint(
    content_sha256: str | None, engine_model: str, params: dict[str, Any]
) -> str | None:
    """What makes two requests' outputs identical, hashed (None: not cacheable)."""
    if not content_sha256:
        return None
    key = {
        "input_sha256": content_sha256,
        "engine_model": engine_model,
        "stems": params.get("stems"),
        "names": params.get("names"),
        "output_format": params.get("output_format"),
        "bit_depth": params.get("bit_depth"),
        "spans": params.get("spans"),
    }
    if params.get("extra_formats"):  # only when present: older fingerprints stay valid
        key["extra_formats"] = params["extra_formats"]
    if params.get("preprocess"):  # only when set, so older fingerprints stay valid
        key["preprocess"] = params["preprocess"]
    # Jobs from before quality levels ran at `fast` and have no key: a `fast` request keeps
    # their fingerprint (and reuses them); any other level is another result.
    if (params.get("quality") or "fast") != "fast":
        key["quality"] = params["quality"]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def find_reusable(
    session: Session, storage: Storage, account_id: str, fp: str, now: datetime
) -> Job | None:
    """The newest completed, unexpired job of ``account_id`` with fingerprint ``fp`` whose
    output blobs are all still stored, or None."""
    candidates = session.execute(
        select(Job)
        .where(
            Job.account_id == account_id,
            Job.fingerprint == fp,
            Job.status == COMPLETED,
            Job.expired.is_(False),
            or_(Job.expires_at.is_(None), Job.expires_at > now),
        )
        .order_by(Job.finished_at.desc())
        .limit(5)
    ).scalars()
    for job in candidates:
        outputs = job.outputs or {}
        if outputs and all(storage.exists(out["key"]) for out in outputs.values()):
            return job
    return None


def copy_outputs(storage: Storage, source: Job, job_id: str) -> dict[str, Any]:
    """Copy ``source``'s output blobs to ``outputs/{job_id}/cached/``; returns the new
    ``outputs`` (same entries, new keys). On failure nothing copied is left behind."""
    outputs: dict[str, Any] = {}
    try:
        for name, out in (source.outputs or {}).items():
            key = f"outputs/{job_id}/cached/{out['key'].rsplit('/', 1)[-1]}"
            storage.copy(out["key"], key)
            outputs[name] = {**out, "key": key}
    except BaseException:
        storage.delete_prefix(f"outputs/{job_id}/")
        raise
    return outputs
