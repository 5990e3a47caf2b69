"""``demixer purge``: the operator frees disk before the retentions end
(:mod:`demixer.service.retention.purge`). :func:`demixer.cli_service.register` adds it."""

from __future__ import annotations

import re
from datetime import timedelta
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
        str,
        typer.Option(
            "--older-than",
            help="Expire the uploads announced, and the results completed, longer ago than "
            "this: 30m, 24h, 7d (0 for all of them).",
        ),
    ],
    account: Annotated[
        str | None,
        typer.Option("--account", help="Only this account's (from `keys list`); default: all."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only say what would be expired and freed."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Free disk before the retentions end: expire now the uploads and results older than
    --older-than (of one account, or everyone's), and delete their bytes. They answer as
    expired from then on (410 FILE_EXPIRED, RESULT_EXPIRED) and stop counting against the
    account's storage cap; an upload that a queued or running request still reads is
    deleted when that request ends."""
    from demixer.service.retention.purge import purge as expire_early

    try:
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
