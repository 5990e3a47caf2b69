"""The database tables. They are storage, not wire schemas: the API has its own models.

One table, ``jobs``, is both the jobs' state machine and the queue (see
``service/jobs/queue.py``, the only module that changes a job's status). ``workers`` says
which worker processes are alive and what they can run (owned by
``service/worker/registry.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from demixer.models.spec import MODEL_ID_LENGTH

__all__ = [
    "Account",
    "ApiKey",
    "Base",
    "Delivery",
    "File",
    "IdempotencyRecord",
    "Job",
    "JobLog",
    "Quota",
    "QuotaHold",
    "RateCounter",
    "StorageCap",
    "UTCDateTime",
    "UsageRecord",
    "WorkerRecord",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite keeps no zone: we add it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite compares the stored text: store every value in one zone, without an offset.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Account(Base):
    """Who owns files and jobs. Keys belong to an account."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]


class ApiKey(Base):
    """An API key, stored as the SHA-256 of the secret (the secret itself is shown once)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(20))  # shown in listings: "dmx_AbCd…"
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class File(Base):
    """An uploaded input. ``status``: pending -> uploaded (probed as audio) | failed, and
    deleted or expired at the end (``service/files/lifecycle.py``, the only module that
    changes it, has the whole state machine; ``service/files/states.py`` the states)."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    file_name: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(100))
    file_size: Mapped[int | None] = mapped_column(Integer)  # declared bytes (JSON flow)
    purpose: Mapped[str] = mapped_column(String(50), default="audio.separate.input")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    storage_key: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str | None] = mapped_column(String(64))
    bytes_stored: Mapped[int | None] = mapped_column(Integer)
    duration: Mapped[float | None] = mapped_column(Float)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    audio_start: Mapped[float | None] = mapped_column(Float)  # seconds: a video's sound, late
    audio_tracks: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    uploaded_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class Job(Base):
    """A separation request: state machine and queue entry in one row.

    ``status``: IN_QUEUE -> IN_PROGRESS -> COMPLETED | FAILED | CANCELLED (and IN_PROGRESS ->
    IN_QUEUE again when an attempt fails retryably or its lease expires). A worker holds a
    lease (``lease_owner`` until ``lease_expires_at``) and every write it makes is fenced on it.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_queue", "status", "priority", "created_at"),
        # The requests of each final state that finished lately (GET /metrics).
        Index("ix_jobs_finished", "status", "finished_at"),
        # What an account's live results hold (the storage cap), read from the index alone.
        Index("ix_jobs_stored", "account_id", "status", "expired", "expires_at", "output_bytes"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    queue_model: Mapped[str] = mapped_column(String(50))  # "audio/separate" | "audio/stems"
    engine_model: Mapped[str] = mapped_column(String(MODEL_ID_LENGTH))  # registered model id
    params: Mapped[dict[str, Any]]  # what the worker needs: file, stems, format, names…
    status: Mapped[str] = mapped_column(String(20), default="IN_QUEUE")
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher runs first
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    # What the running attempt is doing (loading_model, decoding, separating, encoding,
    # storing; see demixer.service.worker.protocol.STAGES); None outside an attempt.
    stage: Mapped[str | None] = mapped_column(String(20))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any] | None]  # name -> {key, content_type, file_name, size}
    # What the outputs' blobs hold together (each one's ``size``), written with ``outputs``
    # when the job completes; NULL before. The storage cap sums it (service/accounts/storage.py)
    # instead of reading every result's JSON inside the lock that queues.
    output_bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration: Mapped[float | None] = mapped_column(Float)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Who submitted it (usage and rate limits are per key).
    key_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # Result cache: what makes two requests give the same outputs (input content hash, model,
    # stems, options); a completed job with the same fingerprint and account is reused.
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    reused_from: Mapped[str | None] = mapped_column(String(40))
    # Retention: outputs are deleted by the sweeper after this (set at completion).
    expires_at: Mapped[datetime | None]
    expired: Mapped[bool] = mapped_column(Boolean, default=False)


class JobLog(Base):
    """One line of a job's log, shown with ``?logs=true``."""

    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    timestamp: Mapped[datetime]
    message: Mapped[str] = mapped_column(Text)


class Delivery(Base):
    """One webhook event to deliver; retried with backoff, claimed with a lease like a job.

    ``status``: pending -> delivered | failed (gave up, or the receiver answered 410).
    """

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # also the webhook-id
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(200))  # whsec_...
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class UsageRecord(Base):
    """Audio seconds processed, recorded in the transaction that completes a job."""

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_id: Mapped[str | None] = mapped_column(String(40), index=True)
    job_id: Mapped[str] = mapped_column(String(40), unique=True)
    model: Mapped[str] = mapped_column(String(MODEL_ID_LENGTH))
    feature: Mapped[str] = mapped_column(String(50), default="audio_seconds")
    quantity: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(index=True)


class Quota(Base):
    """An account's allowance of audio minutes per calendar month (UTC); an account without
    a row is unlimited (``service/accounts/quota.py``, which owns this table and the next)."""

    __tablename__ = "quotas"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    monthly_minutes: Mapped[int] = mapped_column(Integer)


class QuotaHold(Base):
    """The audio seconds a job holds against its account's allowance while it is queued or
    running: its upload's probed duration, or an ``audio_url``'s once a worker fetched it."""

    __tablename__ = "quota_holds"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    seconds: Mapped[float] = mapped_column(Float)


class StorageCap(Base):
    """An account's own cap on the bytes its files and results hold at once, in place of
    ``DEMIXER_MAX_ACCOUNT_STORAGE_BYTES`` (0: no cap); an account without a row has the
    setting's. Set by ``demixer keys quota`` (``service/accounts/quota.py``), checked by
    ``service/accounts/storage.py``."""

    __tablename__ = "storage_caps"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    max_bytes: Mapped[int] = mapped_column(BigInteger)


class IdempotencyRecord(Base):
    """The first response to a POST with an ``Idempotency-Key``, replayed for repeats."""

    __tablename__ = "idempotency_records"

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)  # None while in flight
    response: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class RateCounter(Base):
    """Requests per key per fixed one-minute window (shared by every API process)."""

    __tablename__ = "rate_counters"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class WorkerRecord(Base):
    """A worker process and what it can run, kept fresh by its heartbeat
    (``service/worker/registry.py``).

    Live while ``stopped_at`` is unset and ``last_seen_at`` is recent; rows of workers gone for
    long are deleted.
    """

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # hostname:pid:random
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(200))  # "cpu", "cuda:0 (NVIDIA H100 …)"
    models: Mapped[list[str]] = mapped_column(JSON)  # engine model ids it claims jobs for
    slots: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(50))
    started_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(index=True)
    stopped_at: Mapped[datetime | None]
