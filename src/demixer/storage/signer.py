"""The API's own signed, expiring blob URLs (``/v1/blobs/...``), for stores that cannot
presign (the local directory)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote

__all__ = ["UrlSigner"]


class UrlSigner:
    """HMAC-SHA256 signatures over (method, key, expiry) for download and upload URLs.

    A URL is ``{base}/v1/blobs/{key}?expires={unix}&sig={b64url}``; the API checks the
    signature (403 when wrong) and the expiry (410 when past).
    """

    def __init__(self, secret: bytes, base_url: str) -> None:
        self.secret = secret
        self.base_url = base_url.rstrip("/")

    def _sig(self, method: str, key: str, expires: int) -> str:
        msg = f"{method}\n{key}\n{expires}".encode()
        mac = hmac.new(self.secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def url(self, method: str, key: str, ttl_seconds: int, now: float | None = None) -> str:
        """A signed URL for ``method`` (GET or PUT) on ``key``, valid ``ttl_seconds``."""
        expires = int((now if now is not None else time.time()) + ttl_seconds)
        sig = self._sig(method, key, expires)
        return f"{self.base_url}/v1/blobs/{quote(key)}?expires={expires}&sig={sig}"

    def expiry(self, ttl_seconds: int, now: float | None = None) -> int:
        """The ``expires`` value a URL made now would carry."""
        return int((now if now is not None else time.time()) + ttl_seconds)

    def check(self, method: str, key: str, expires: int, sig: str, now: float | None = None) -> str:
        """``"ok"``, ``"invalid"`` (tampered: 403) or ``"expired"`` (410)."""
        # compare_digest takes only ASCII strings; a signature is URL-safe base64, so anything
        # else (``sig=%C3%A9``) is simply wrong.
        if not sig.isascii() or not hmac.compare_digest(self._sig(method, key, expires), sig):
            return "invalid"
        if (now if now is not None else time.time()) > expires:
            return "expired"
        return "ok"
