"""Standard Webhooks v1 signatures: what demixer signs its events with, and how to check them.

This module needs only the standard library, so a receiver can ``from demixer.webhooks import
verify`` without the server's dependencies::

    from demixer.webhooks import WebhookVerificationError, verify

    try:
        event = verify(request.headers, request.body, "whsec_…")  # the secret from submit
    except WebhookVerificationError:
        return 400
    # dedupe on headers["webhook-id"] (or event["request_id"]), then handle event["type"]

A message is signed as ``v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">``
with the key that the secret ``whsec_<base64>`` encodes (a secret the caller gave without that
prefix: the bytes its base64 encodes, or its UTF-8 bytes where it is not base64).
``webhook-signature`` may carry several space-separated signatures (key rotation); one match is
enough. The same scheme is implemented by the ``standardwebhooks`` package, so either side may
use either library (with a ``whsec_`` secret).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "new_secret",
    "secret_key",
    "sign",
    "verify",
]

SECRET_PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """A webhook whose headers are missing, whose timestamp is too far off, or whose signature
    matches none computed with the secret."""


def new_secret(nbytes: int = 24) -> str:
    """A fresh random secret, ``whsec_`` + base64 of ``nbytes`` random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a webhook secret: the bytes a ``whsec_<base64>`` secret encodes
    (Standard Webhooks), or, for a secret given without the prefix, the bytes its base64
    encodes where it is base64 (as the ``standardwebhooks`` package reads it, and as demixer
    always has, so a stored secret keeps signing alike) and its UTF-8 bytes where it is not.

    A caller's own secret need not be Standard Webhooks': AudioLasso's webhook page submits
    ``"webhookSecret": "replace-with-your-hmac-secret"``, a plain HMAC secret, which its
    receiver keys HMAC-SHA256 with as it reads.
    """
    if not secret:
        raise ValueError("a webhook secret may not be empty")
    prefixed = secret.startswith(SECRET_PREFIX)
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        # Padding is added because some secrets circulate unpadded; extra "=" are ignored.
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        if not prefixed:
            return secret.encode()
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message.

    Args:
        secret: ``whsec_<base64>`` (the HMAC key is the decoded part) or a plain string (the
            key is what its base64 encodes, else its UTF-8 bytes): :func:`secret_key`.
        msg_id: the ``webhook-id`` header (demixer uses the delivery's id).
        timestamp: the ``webhook-timestamp`` header, Unix seconds.
        body: the exact bytes sent.

    Returns:
        ``v1,<base64 signature>``.
    """
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str,
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook's signature and timestamp, and return its parsed JSON body.

    Args:
        headers: the request's headers (names in any case).
        body: the raw request body, exactly as received (not re-serialised JSON).
        secret: the ``whsec_…`` secret returned at submit (or the one the caller gave).
        tolerance: how far, in seconds, ``webhook-timestamp`` may be from ``now`` either way.
        now: Unix seconds to check against (default: the current time).

    Raises:
        WebhookVerificationError: a header is missing or malformed, the timestamp is outside
            ``±tolerance``, no signature matches, or the body is not a JSON object.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(
            f"webhook-timestamp {stamp[:40]!r} is not Unix seconds"
        ) from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {current - timestamp:+.0f} s from now "
            f"(allowed: ±{tolerance} s); a replay, or a clock out of sync"
        )
    data = body.encode() if isinstance(body, str) else bytes(body)
    try:
        expected = sign(secret, msg_id, timestamp, data).split(",", 1)[1].encode()
    except ValueError as exc:
        raise WebhookVerificationError(str(exc)) from exc
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            break
    else:
        raise WebhookVerificationError("no v1 signature matches the secret")
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        raise WebhookVerificationError("the signed body is not JSON") from exc
    if not isinstance(parsed, dict):
        raise WebhookVerificationError("the signed body is not a JSON object")
    return parsed
