"""Accounts and API keys. A key's secret is shown once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from demixer.errors import DemixerError, InvalidRequest
from demixer.service.db import Database
from demixer.service.schema import Account, ApiKey, Quota

__all__ = [
    "ALL_SCOPES",
    "MAX_MINUTES",
    "SERVE_KEY_NAME",
    "Identity",
    "KeyInfo",
    "KeyNotFound",
    "Unauthorized",
    "authenticate",
    "check_minutes",
    "create_key",
    "describe_key",
    "list_keys",
    "new_id",
    "revoke_key",
]

ALL_SCOPES = ("audio:separate", "files:write", "files:read", "models:read")
KEY_PREFIX = "dmx_"
#: The name of the key ``serve`` makes when there is none (the local web session shares its
#: account).
SERVE_KEY_NAME = "created by serve"
#: The largest monthly allowance in audio minutes (a 32-bit column; 4,000 years a month).
MAX_MINUTES = 2**31 - 1


class KeyNotFound(DemixerError):
    """No key or account with that id."""

    code = "NOT_FOUND"


class Unauthorized(DemixerError):
    """No key, or a key that is unknown or revoked (HTTP 401)."""

    code = "UNAUTHENTICATED"


@dataclass(frozen=True)
class Identity:
    """Who is calling: the key's account and scopes."""

    account_id: str
    key_id: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed (never the secret)."""

    id: str
    account_id: str
    prefix: str
    scopes: tuple[str, ...]
    name: str
    created_at: str
    revoked: bool


def new_id(prefix: str) -> str:
    """A random, URL-safe id like ``req_3fQ…`` (128 bits)."""
    return f"{prefix}_{secrets.token_urlsafe(16).replace('-', 'x').replace('_', 'y')}"


def check_minutes(minutes: int | None) -> None:
    """Refuse a monthly allowance (audio minutes; None: unlimited) out of range."""
    if minutes is not None and not 0 <= minutes <= MAX_MINUTES:
        raise InvalidRequest(f"an allowance is 0 to {MAX_MINUTES} minutes a month (got {minutes})")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    db: Database,
    *,
    account_id: str | None = None,
    scopes: tuple[str, ...] = ALL_SCOPES,
    name: str = "",
    monthly_minutes: int | None = None,
) -> tuple[str, str]:
    """Make a key (and a new account unless ``account_id`` is given).

    ``monthly_minutes``: the new account's allowance of audio minutes per calendar month
    (None: unlimited; see :mod:`demixer.service.accounts.quota`); an existing account's is
    changed with :func:`~demixer.service.accounts.quota.set_quota`, never here.

    Returns:
        ``(account_id, secret)``; the secret is not stored and cannot be shown again.
    """
    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown:
        raise InvalidRequest(
            f"unknown scope(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_SCOPES)}"
        )
    if len(name) > 200:
        raise InvalidRequest(f"a key's name is at most 200 characters (got {len(name)})")
    check_minutes(monthly_minutes)
    if account_id is not None and monthly_minutes is not None:
        raise InvalidRequest(
            "an allowance given with a key is its new account's; an existing account's is "
            "set with `demixer keys quota ACCOUNT --minutes N`"
        )
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    now = db.clock()
    with db.write() as s:
        if account_id is None:
            account_id = new_id("acct")
            s.add(Account(id=account_id, name=name, created_at=now))
            if monthly_minutes is not None:
                s.flush()  # the account first: the allowance refers to it
                s.add(Quota(account_id=account_id, monthly_minutes=monthly_minutes))
        elif s.get(Account, account_id) is None:
            raise KeyNotFound(f"no account {account_id}")
        s.add(
            ApiKey(
                id=new_id("key"),
                account_id=account_id,
                key_hash=_hash(secret),
                prefix=secret[:10],
                scopes=" ".join(scopes),
                name=name,
                created_at=now,
            )
        )
    return account_id, secret


def authenticate(db: Database, secret: str | None) -> Identity:
    """The identity behind ``secret``; raises :class:`Unauthorized`."""
    if not secret:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    with db.read() as s:
        key = s.execute(select(ApiKey).where(ApiKey.key_hash == _hash(secret))).scalar_one_or_none()
    if key is None or key.revoked_at is not None:
        raise Unauthorized("invalid or revoked API key")
    return Identity(key.account_id, key.id, frozenset(key.scopes.split()))


def _info(key: ApiKey) -> KeyInfo:
    return KeyInfo(
        key.id,
        key.account_id,
        key.prefix,
        tuple(key.scopes.split()),
        key.name,
        key.created_at.isoformat(),
        key.revoked_at is not None,
    )


def list_keys(db: Database) -> list[KeyInfo]:
    """Every key, oldest first."""
    with db.read() as s:
        rows = s.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars().all()
    return [_info(k) for k in rows]


def describe_key(db: Database, key_id: str) -> tuple[KeyInfo, str]:
    """The key ``key_id`` and its account's name (its id where it has none); raises
    :class:`KeyNotFound`."""
    with db.read() as s:
        row = s.execute(
            select(ApiKey, Account.name)
            .join(Account, Account.id == ApiKey.account_id)
            .where(ApiKey.id == key_id)
        ).one_or_none()
    if row is None:
        raise KeyNotFound(f"no key {key_id}")
    key, account_name = row
    return _info(key), account_name or key.account_id


def revoke_key(db: Database, key_id: str) -> None:
    """Revoke a key by id: its requests answer 401 at once in this process, and within
    ``key_cache_seconds`` in every other API process (see
    :mod:`demixer.service.accounts.keycache`)."""
    with db.write() as s:
        key = s.get(ApiKey, key_id)
        if key is None:
            raise KeyNotFound(f"no key {key_id}")
        if key.revoked_at is None:
            key.revoked_at = db.clock()
