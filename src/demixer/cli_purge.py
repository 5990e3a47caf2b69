"""``demixer purge``: the operator frees disk before the retentions end
(:mod:`demixer.service.retention.purge`), or deletes the stored bytes no record names
(``--orphans``, :mod:`demixer.service.retention.orphans`). :func:`demixer.cli_service.register`
adds it."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from demixer.cli_output import fail
from demixer.cli_startup import DataDir, load_settings, open_services
from demixer.errors import DemixerError, InvalidRequest

__all__ = ["purge"]

out = Console(soft_wrap=True)

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _age(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d`` or a number of seconds, as a duration."""
    found = _AGE.fullmatch(text.strip().lower())
    if found is None:
        raise InvalidRequest(
            f"--older-than is a number with s, m, h or d (seconds when none): 30m, 24h, 7d; "
            f"not {text!r}",
            param="--older-than",
        )
    return timedelta(seconds=float(found.group(1)) * _UNIT[found.group(2)])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def purge(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Expire the uploads announced, and the results completed, longer ago than "
            "this: 30m, 24h, 7d (0 for all of them). With --orphans: only the bytes written "
            "longer ago than this (default 24h, at least 1h).",
            show_default=False,
        ),
    ] = None,
    account: Annotated[
        str | None,
        typer.Option("--account", help="Only this account's (from `keys list`); default: all."),
    ] = None,
    orphans: Annotated[
        bool,
        typer.Option(
            "--orphans",
            help="Instead: delete the stored bytes no upload or request of the database names "
            "(or names as deleted or expired): those a restored older database, a crash, or "
            "an older deployment on the same bucket left. Run it with the service's database "
            "and storage, and never on a bucket (prefix) another deployment still uses.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only say what would be expired (deleted) and freed."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Free disk before the retentions end: expire now the uploads and results older than
    --older-than (of one account, or everyone's), and delete their bytes. They answer as
    expired from then on (410 FILE_EXPIRED, RESULT_EXPIRED) and stop counting against the
    account's storage cap; an upload that a queued or running request still reads is
    deleted when that request ends. With --orphans: delete the stored bytes no record names,
    listing each one."""
    from demixer.service.retention.purge import purge as expire_early

    try:
        if orphans:
            _orphans(older_than, account, dry_run=dry_run, data_dir=data_dir)
            return
        if older_than is None:
            raise InvalidRequest(
                "give --older-than (30m, 24h, 7d), or --orphans", param="--older-than"
            )
        age = _age(older_than)
        services = open_services(load_settings(data_dir))
        done = expire_early(services, age, account, dry_run=dry_run)
    except DemixerError as e:
        raise fail(e) from None
    what = (
        f"{_plural(done.files, 'upload')} ({done.file_bytes} bytes) and "
        f"{_plural(done.results, 'result')} ({done.result_bytes} bytes) older than "
        f"{older_than.strip()}, of {f'account {account}' if account else 'every account'}"
    )
    if done.swept is None:
        total = done.file_bytes + done.result_bytes
        out.print(f"would expire {what}: {total} bytes freed", highlight=False)
        return
    out.print(
        f"expired {what}; deleted {_plural(done.swept.blobs, 'stored object')}", highlight=False
    )


def _orphans(
    older_than: str | None, account: str | None, *, dry_run: bool, data_dir: Path | None
) -> None:
    """``purge --orphans``: list the stored bytes no record names, and delete them."""
    from demixer.service.retention.orphans import (
        DEFAULT_AGE,
        MIN_AGE,
        delete_orphans,
        find_orphans,
    )

    if account is not None:
        raise InvalidRequest(
            "--orphans are no account's (no record names them): leave out --account",
            param="--account",
        )
    said = "24h" if older_than is None else older_than.strip()
    age = DEFAULT_AGE if older_than is None else _age(older_than)
    if age < MIN_AGE:
        raise InvalidRequest(
            f"--older-than with --orphans is at least 1h, not {said}: bytes written within the "
            "hour may be an upload's or a request's whose record is not committed yet",
            param="--older-than",
        )
    services = open_services(load_settings(data_dir))
    found = find_orphans(services, age)
    blobs = found.blobs
    what = (
        f"{_plural(len(blobs), 'stored object')} ({found.size} bytes) that no record names, "
        f"written more than {said} ago"
    )
    if not dry_run:
        delete_orphans(services.storage, found)
    out.print(f"{'would delete' if dry_run else 'deleted'} {what}", highlight=False)
    for blob in blobs:
        out.print(f"  {blob.key}  {blob.size} bytes", highlight=False)
    if found.newer:
        out.print(
            f"kept {found.newer} more that no record names, written within {said}",
            highlight=False,
        )
