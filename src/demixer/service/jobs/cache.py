"""The result cache: a request identical to one already completed reuses its outputs.

Two requests give the same outputs when their input bytes (and audio track), engine model,
stems, output names, format, bit depth, rescaling, spans and quality level agree;
:func:`fingerprint` hashes exactly those. Only uploaded files take part: an ``audio_url``'s
content is unknown until a worker fetches it, so URL requests are never answered from the cache.
Reuse stays within one account.

The reused outputs are *copied* (hard-linked where the storage can) under the new request's own
prefix, ``outputs/{job_id}/cached/…``: each request owns its blobs, so deleting or expiring one
never breaks the other, and no reference counts are needed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from demixer.models.catalogue.ensembles import ensemble_members
from demixer.naming import renamed
from demixer.service.jobs.contract import JobParams, UploadInput
from demixer.service.jobs.queue import COMPLETED
from demixer.service.schema import File, Job
from demixer.storage import Storage

__all__ = ["copy_outputs", "find_reusable", "fingerprint", "input_sha256"]

# An ensemble's numbers changed with how it is computed: UVR's framing of max / min (4958c0b),
# then each member that chunks the song itself run once over the whole song instead of inside
# every window (da5b20f), then beside a member that takes windows too (a mixed ensemble: 3). A
# result made before is not what the same request gives now, so the key of an ensemble's
# request names the revision it was made by; one from before is not reused.
_ENSEMBLE_REVISION = 3
# `best` did nothing for the MSST, MDX-Net and Demucs models and does now (f71451e, 53e22f7): a
# `best` result made before (for those, the `balanced` stems) is not what the same request
# gives now. Spleeter's `best` did not change; its results from before are made once more.
_BEST_REVISION = 2


def input_sha256(session: Session, params: JobParams) -> str | None:
    """The SHA-256 of a request's uploaded input (None for URL inputs or unknown hashes)."""
    if not isinstance(params.input, UploadInput):
        return None
    file_id = params.input.file_id
    return session.execute(select(File.sha256).where(File.id == file_id)).scalar_one_or_none()


def fingerprint(
    content_sha256: str | None,
    engine_model: str,
    params: JobParams,
    weights: str | None = None,
    cleanup: Mapping[str, str] | None = None,
) -> str | None:
    """What makes two requests' outputs identical, hashed (None: not cacheable).

    ``weights``: the engine model's weights identity where the same name can stand for other
    weights (a user model added again: :func:`~demixer.models.user_models.weights_identity`);
    a catalogue id names one set of pinned files. ``cleanup``: each model clean-up step
    (``dereverb``, ``deecho``) -> the model that runs it, with a user model's weights
    identity (another model, or other weights, cleans the input otherwise). The hashed
    object keeps the shape of the first release's (fields added since enter only when set),
    so jobs completed before an upgrade are still found.
    """
    if not content_sha256:
        return None
    row = params.model_dump(mode="json")  # every field: to_row leaves out the defaults
    key = {
        "input_sha256": content_sha256,
        "engine_model": engine_model,
        **{name: row[name] for name in ("stems", "names", "output_format", "bit_depth", "spans")},
    }
    # Only when set: older rows hold no such field (an input's other audio track is another
    # input altogether).
    for added in ("extra_formats", "preprocess", "rescale", "audio_track"):
        if row[added]:
            key[added] = row[added]
    if weights:
        key["weights"] = weights
    if ensemble_members(engine_model) is not None:
        key["ensemble_revision"] = _ENSEMBLE_REVISION
    if cleanup:
        key["cleanup_models"] = dict(cleanup)
    # Jobs from before quality levels ran at `fast` and read as `fast`: a `fast` request keeps
    # their fingerprint (and reuses them); any other level is another result.
    if params.quality != "fast":
        key["quality"] = params.quality
    if params.quality == "best":
        key["best_revision"] = _BEST_REVISION
    if key["spans"]:
        # The same spans in another order keep the same samples (each span's gain is a
        # maximum over all of them: engine/spans.py), so they are the same result. Sorted,
        # a list already in order hashes as it always did.
        key["spans"] = sorted(key["spans"], key=lambda s: (s["start"], s["end"], s["include"]))
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


def copy_outputs(storage: Storage, source: Job, job_id: str, params: JobParams) -> dict[str, Any]:
    """Copy ``source``'s output blobs to ``outputs/{job_id}/cached/``; returns the new
    ``outputs``: the same entries with new keys, and file names after this request's input
    (the same bytes uploaded as ``beta.wav`` give ``beta_vocals.wav``, not the first upload's
    ``alpha_vocals.wav``). On failure nothing copied is left behind."""
    was = Path(JobParams.of_job(source.id, source.params).input_name).stem
    now = Path(params.input_name).stem
    outputs: dict[str, Any] = {}
    try:
        for name, out in (source.outputs or {}).items():
            key = f"outputs/{job_id}/cached/{out['key'].rsplit('/', 1)[-1]}"
            storage.copy(out["key"], key)
            outputs[name] = {**out, "key": key}
            if "file_name" in out:
                outputs[name]["file_name"] = renamed(out["file_name"], was, now)
    except BaseException:
        storage.delete_prefix(f"outputs/{job_id}/")
        raise
    return outputs
