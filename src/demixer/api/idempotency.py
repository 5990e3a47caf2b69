"""``Idempotency-Key`` on POSTs: a retried request gets the first answer instead of a duplicate.

A POST route takes the :data:`IdempotencyDep` dependency and runs its action through
:meth:`Idempotency.run`. With the header, the first request stores ``(account, key) -> hash of
method, path, query and body`` as *in flight*, runs, and stores its status and JSON; a repeat
with the same hash gets that answer again (same status, same JSON, ``Idempotent-Replayed: true``), a
repeat with another hash is a 409 ``IDEMPOTENCY_KEY_REUSED``, and a repeat while the first is
still running is a 409 ``IDEMPOTENCY_IN_PROGRESS``. Keys are per account and kept 24 hours.

Only successful answers are stored: a request that fails (bad body, limits, 429) releases its
key, so the client may fix or simply retry it under the same key. Multipart uploads
(``POST /v1/files`` with ``multipart/form-data``) ignore the header: hashing them would mean
buffering the whole upload before storing it; their retry is harmless anyway (an unused file
simply expires).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from demixer.api.scope import content_length, content_type
from demixer.errors import IdempotencyInProgress, IdempotencyKeyReused, InvalidRequest
from demixer.service.context import Services
from demixer.service.schema import IdempotencyRecord

__all__ = [
    "HEADER",
    "IN_FLIGHT_TIMEOUT",
    "REPLAYED_HEADER",
    "TTL",
    "Idempotency",
    "IdempotencyDep",
    "idempotency",
]

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL = timedelta(hours=24)
# A first request still "in flight" after this crashed with its process: its key is free again.
IN_FLIGHT_TIMEOUT = timedelta(minutes=5)
_MAX_KEY = 255
# What `str.isprintable` takes of the characters a header can carry (Latin-1), at least one of
# them not a space: the keys the server takes, as the OpenAPI document's `pattern`.
_KEY_CHARS = "!-~\u00a1-\u00ac\u00ae-\u00ff"
_PRINTABLE = f"^[ {_KEY_CHARS}]*[{_KEY_CHARS}][ {_KEY_CHARS}]*$"
_MAX_BODY = 1 << 20  # JSON bodies are hashed whole; they are small

M = TypeVar("M", bound=BaseModel)


def _canonical(body: bytes) -> bytes:
    """JSON bodies compare by content (key order and spacing do not matter)."""
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to re-encode
        return body


@dataclass(frozen=True)
class Idempotency:
    """One request's ``Idempotency-Key`` (``key`` None: no header, or not supported here).

    Attributes:
        key: the header's value.
        request_hash: SHA-256 hex of method, path, (canonical) body and query.
        method: the request's method (shown in a conflict's message).
        path: the request's path.
    """

    key: str | None
    request_hash: str = ""
    method: str = "POST"
    path: str = ""

    def run(
        self,
        services: Services,
        account_id: str,
        response: Response,
        model: type[M],
        status_code: int,
        action: Callable[[], M],
    ) -> M:
        """``action()``, or the stored answer of the first request with this key.

        Args:
            services: the database and clock.
            account_id: keys are per account.
            response: the route's response, to carry a replay's status and header.
            model: the route's answer type (a replay is validated back into it).
            status_code: the route's success status, stored with the answer.
            action: does the work; runs at most once per key and body.
        """
        if self.key is None:
            return action()
        replay = self._begin(services, account_id)
        if replay is not None:
            status, body = replay
            response.status_code = status
            response.headers[REPLAYED_HEADER] = "true"
            return model.model_validate(body)
        try:
            result = action()
        except BaseException:
            with services.db.write() as s:  # failed: free the key for a retry
                s.execute(
                    delete(IdempotencyRecord).where(
                        IdempotencyRecord.account_id == account_id,
                        IdempotencyRecord.key == self.key,
                        IdempotencyRecord.status_code.is_(None),
                    )
                )
            raise
        with services.db.write() as s:
            s.execute(
                update(IdempotencyRecord)
                .where(
                    IdempotencyRecord.account_id == account_id, IdempotencyRecord.key == self.key
                )
                .values(
                    status_code=status_code,
                    response=result.model_dump(mode="json", by_alias=True),
                )
            )
        return result

    def _begin(self, services: Services, account_id: str) -> tuple[int, dict[str, object]] | None:
        """Claim the key (None), or return the first answer to replay; raises on conflicts."""
        assert self.key is not None
        now = services.db.clock()
        try:
            with services.db.write() as s:
                s.execute(
                    delete(IdempotencyRecord).where(
                        IdempotencyRecord.account_id == account_id,
                        IdempotencyRecord.expires_at <= now,
                    )
                )
                row = s.get(IdempotencyRecord, (account_id, self.key))
                stale = row is not None and row.created_at + IN_FLIGHT_TIMEOUT < now
                if row is not None and row.status_code is None and stale:  # its process died
                    s.delete(row)
                    s.flush()
                    row = None
                if row is not None:
                    if row.request_hash != self.request_hash:
                        raise self._reused(row.method, row.path)
                    if row.status_code is None or row.response is None:
                        raise IdempotencyInProgress(
                            f"the first request with Idempotency-Key {self.key!r} is still "
                            "running; retry shortly",
                            param=HEADER,
                        )
                    return row.status_code, row.response
                s.add(
                    IdempotencyRecord(
                        account_id=account_id,
                        key=self.key,
                        method=self.method,
                        path=self.path,
                        request_hash=self.request_hash,
                        status_code=None,
                        response=None,
                        created_at=now,
                        expires_at=now + TTL,
                    )
                )
        except IntegrityError:  # a concurrent first request inserted it meanwhile
            with services.db.read() as s:
                row = s.get(IdempotencyRecord, (account_id, self.key))
                first = (row.method, row.path, row.request_hash) if row is not None else None
            if first is not None and first[2] != self.request_hash:
                raise self._reused(first[0], first[1]) from None
            raise IdempotencyInProgress(
                f"the first request with Idempotency-Key {self.key!r} is still running",
                param=HEADER,
            ) from None
        return None

    def _reused(self, method: str, path: str) -> IdempotencyKeyReused:
        return IdempotencyKeyReused(
            f"the Idempotency-Key {self.key!r} was used with another request "
            f"({method} {path} with another body); use a new key",
            param=HEADER,
        )


async def idempotency(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Send the same request again safely: a repeat with this key (and the "
            "same body) within 24 h answers what the first did, with `Idempotent-Replayed: "
            "true`; another body with it is 409 `IDEMPOTENCY_KEY_REUSED`. 1 to 255 printable "
            "characters. JSON requests only (a multipart upload ignores it).",
            # Documented, not enforced here: the check below answers its own 400, and a
            # multipart upload ignores the header whatever it holds.
            json_schema_extra={"minLength": 1, "maxLength": _MAX_KEY, "pattern": _PRINTABLE},
        ),
    ] = None,
) -> Idempotency:
    """The dependency: reads the header and hashes the request (the body is read once and
    cached by Starlette, so the route still gets it)."""
    if key is None or content_type(request.scope) not in ("application/json", ""):
        return Idempotency(None)  # multipart uploads (see the module docstring), unread; 415s
    key = key.strip()
    if not key or len(key) > _MAX_KEY or not key.isprintable():
        raise InvalidRequest(f"{HEADER} must be 1 to {_MAX_KEY} printable characters", param=HEADER)
    length = content_length(request.scope)
    if length is not None and length > _MAX_BODY:
        raise InvalidRequest(f"a JSON request body is under {_MAX_BODY} bytes")
    body = await request.body()
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), _canonical(body)):
        digest.update(part)
        digest.update(b"\n")
    if request.url.query:  # part of the request too: fal's `?fal_webhook=` on a submit
        digest.update(request.url.query.encode())
    return Idempotency(key, digest.hexdigest(), request.method, request.url.path)


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
"""The ``Idempotency-Key`` of a POST route."""
