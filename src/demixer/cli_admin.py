"""The operator's commands on the shared database: ``workers`` (who runs what), ``migrate``,
``copy-to`` (onto another database and storage) and ``keys`` (API keys and monthly
allowances). :func:`demixer.cli_service.register` adds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table

from demixer.cli_output import fail, print_error
from demixer.cli_startup import DataDir, load_settings, masked, open_services
from demixer.errors import DemixerError, InvalidRequest

__all__ = ["copy_to", "keys_app", "migrate", "workers_list"]

keys_app = typer.Typer(
    help="Create, list and revoke API keys, and set monthly allowances.",
    no_args_is_help=True,
)
out = Console(soft_wrap=True)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def workers_list(data_dir: DataDir = None) -> None:
    """List worker processes (live ones, then those stopped or lost in the last day) and the
    jobs they run now."""
    from demixer.service.worker.registry import list_workers

    settings = load_settings(data_dir)
    services = open_services(settings)
    found = list_workers(services.db, settings)
    if not found:
        out.print("no worker has registered in the last day", highlight=False)
        return
    now = services.db.clock()
    rows = [
        (
            w.id,
            w.state,
            w.device,
            ", ".join(w.models),
            str(w.slots),
            w.version,
            _ago((now - w.last_seen_at).total_seconds()),
        )
        for w in found
    ]
    table = _table(
        ("id", "state", "device", "models", "slots", "version", "last seen"),
        rows,
        wrap={"device": 6, "models": 15},
    )
    out.print(table)
    live = [w for w in found if w.state == "live"]
    runs = sorted({m for w in live for m in w.models})
    out.print(f"{len(live)} live worker(s) run: {', '.join(runs) or 'nothing'}", highlight=False)
    running = _running_jobs(services, [w.id for w in live])
    if running:
        out.print("running now:", highlight=False)
        out.print(_table(("job", "model", "done", "worker", "slot"), running, wrap={"model": 20}))


def _running_jobs(services: Any, worker_ids: Sequence[str]) -> list[tuple[str, ...]]:
    """``(job, model, progress, worker, slot)`` of each job a live worker holds now (its
    lease owner is one of the worker's slots: :func:`~demixer.service.worker.registry.slot_of`).
    """
    from sqlalchemy import select

    from demixer.service.jobs.queue import IN_PROGRESS
    from demixer.service.schema import Job
    from demixer.service.worker.registry import slot_of

    with services.db.read() as s:
        jobs = s.execute(
            select(Job.id, Job.engine_model, Job.progress, Job.lease_owner)
            .where(Job.status == IN_PROGRESS)
            .order_by(Job.created_at)
        ).all()
    rows: list[tuple[str, ...]] = []
    for job_id, model, progress, owner in jobs:
        for worker_id in worker_ids:
            slot = slot_of(worker_id, owner or "")
            if slot is not None:
                rows.append((job_id, model, f"{progress or 0.0:.0%}", worker_id, str(slot)))
    return rows


def migrate(data_dir: DataDir = None) -> None:
    """Create or upgrade the database schema."""
    settings = load_settings(data_dir)
    open_services(settings)
    out.print(f"database at {masked(settings.database)} is up to date", highlight=False)


def copy_to(
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            help="The database to copy into (e.g. postgresql+psycopg://...): new and empty; "
            "its schema is created.",
        ),
    ],
    storage_url: Annotated[
        str | None,
        typer.Option(
            "--storage-url",
            help="The storage to copy the stored files into (e.g. s3://BUCKET?endpoint=...); "
            "default: the files stay where they are.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Copy accounts, keys, allowances, jobs, results and webhook deliveries to another
    database, and the stored files to another storage. Stop serve and every worker first."""
    from demixer.service.transfer import copy_files, copy_records
    from demixer.service.worker.registry import list_workers

    settings = load_settings(data_dir)
    source = open_services(settings)
    live = [w.id for w in list_workers(source.db, settings) if w.state == "live"]
    if live:
        print_error("CONFLICT", f"stop serve and every worker first; live: {', '.join(live)}")
        raise typer.Exit(1)
    moved = load_settings(data_dir, database_url=database_url, storage_url=storage_url)
    target = open_services(moved)
    try:
        if storage_url is not None:  # first: a copy that fails midway is simply run again
            files, size = copy_files(source.storage, target.storage)
            out.print(f"{files} stored files ({size} bytes) copied to {moved.storage}")
        rows = copy_records(source.db, target.db)
    except DemixerError as e:
        raise fail(e) from None
    counts = ", ".join(f"{n} {table}" for table, n in rows.items() if n)
    out.print(f"copied to {masked(moved.database)}: {counts or 'no rows'}", highlight=False)


@keys_app.command("create", short_help="Create a key (and an account unless --account).")
def keys_create(
    data_dir: DataDir = None,
    account: Annotated[
        str | None, typer.Option("--account", help="Add the key to this account.")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A label for the key.")] = "",
    scopes: Annotated[
        str | None,
        typer.Option(
            "--scopes",
            help="Comma-separated scopes (default: all): audio:separate (submit, cancel, "
            "delete requests), files:write (upload, delete files), files:read (files and "
            "results), models:read (list models).",
        ),
    ] = None,
    minutes: Annotated[
        int | None,
        typer.Option(
            "--minutes",
            help="The new account's allowance of audio minutes per calendar month (UTC); "
            "default: unlimited. Change it later with `keys quota`.",
        ),
    ] = None,
) -> None:
    """Create a key (and a new account unless --account); the key is the last line printed."""
    from demixer.service.accounts.keys import ALL_SCOPES, create_key

    services = open_services(load_settings(data_dir))
    chosen = tuple(s.strip() for s in scopes.split(",")) if scopes else ALL_SCOPES
    try:
        account_id, secret = create_key(
            services.db, account_id=account, scopes=chosen, name=name, monthly_minutes=minutes
        )
    except DemixerError as e:
        raise fail(e) from None
    allowance = "" if minutes is None else f", {minutes} audio minutes a month"
    out.print(f"account {account_id}, scopes {' '.join(chosen)}{allowance}", highlight=False)
    out.print(secret, highlight=False)


@keys_app.command("quota", short_help="Set an account's audio minutes a month, or its storage cap.")
def keys_quota(
    account: Annotated[str, typer.Argument(help="The account's id (from `keys list`).")],
    minutes: Annotated[
        str | None,
        typer.Option(
            "--minutes",
            help="Audio minutes its requests may use per calendar month (UTC), or `none` "
            "for unlimited.",
        ),
    ] = None,
    storage_bytes: Annotated[
        str | None,
        typer.Option(
            "--storage-bytes",
            help="The most bytes its uploads and stems may hold at once, in place of "
            "DEMIXER_MAX_ACCOUNT_STORAGE_BYTES: a whole number of bytes, `none` for no cap, "
            "or `default` for the setting's again.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Set an account's allowance of audio minutes per calendar month (UTC), or its cap on
    the bytes its uploads and stems hold, in force at once: a request whose input does not fit
    in what is left is refused (402 QUOTA_EXCEEDED), an upload that does not fit in its
    storage, or any request once it is full, too (413 STORAGE_QUOTA_EXCEEDED)."""
    from demixer.service.accounts.quota import set_quota, set_storage_cap

    if minutes is None and storage_bytes is None:
        raise fail(InvalidRequest("give --minutes, --storage-bytes or both"))
    allowance = cap = None
    if minutes is not None:
        wanted = minutes.strip().lower()
        if wanted != "none" and not wanted.isdigit():
            message = f"--minutes is a whole number of minutes or `none`, not {minutes!r}"
            raise fail(InvalidRequest(message))
        allowance = None if wanted == "none" else int(wanted)
    if storage_bytes is not None:
        wanted = storage_bytes.strip().lower()
        if wanted not in ("none", "default") and not wanted.isdigit():
            message = (
                "--storage-bytes is a whole number of bytes, `none` or `default`, "
                f"not {storage_bytes!r}"
            )
            raise fail(InvalidRequest(message))
        if wanted == "default":
            cap = None  # the setting's again
        elif wanted == "none":
            cap = 0
        else:
            cap = int(wanted)
    db = open_services(load_settings(data_dir)).db
    try:
        if minutes is not None:
            set_quota(db, account, allowance)
        if storage_bytes is not None:
            set_storage_cap(db, account, cap)
    except DemixerError as e:
        raise fail(e) from None
    if minutes is not None:
        said = "unlimited" if allowance is None else f"{allowance} audio minutes a month"
        out.print(f"account {account}: {said}", highlight=False)
    if storage_bytes is not None:
        if cap is None:
            said = "the server's storage cap (DEMIXER_MAX_ACCOUNT_STORAGE_BYTES)"
        else:
            said = "no storage cap" if cap == 0 else f"uploads and stems hold at most {cap} bytes"
        out.print(f"account {account}: {said}", highlight=False)


@keys_app.command("list", short_help="List keys by account, with each allowance.")
def keys_list(data_dir: DataDir = None) -> None:
    """List keys by account (never their secrets), with each account's monthly allowance:
    minutes used or queued this month and when it resets; and its own storage cap, if it
    has one."""
    from demixer.service.accounts.keys import ALL_SCOPES, list_keys
    from demixer.service.accounts.quota import account_quotas, account_storage_caps

    db = open_services(load_settings(data_dir)).db
    keys = list_keys(db)
    if not keys:
        out.print("no keys yet: `demixer keys create` makes one", highlight=False)
        return
    quotas = account_quotas(db)
    caps = account_storage_caps(db)
    accounts: dict[str, list[Any]] = {}
    for k in keys:
        accounts.setdefault(k.account_id, []).append(k)
    for account, owned in accounts.items():
        out.print(f"account {account}", highlight=False, style="bold")
        if account in quotas:
            out.print("  " + _allowance(quotas[account]), highlight=False)
        if account in caps:  # its own, in place of DEMIXER_MAX_ACCOUNT_STORAGE_BYTES
            cap = caps[account]
            said = f"at most {cap} bytes" if cap else "no cap"
            out.print(f"  storage: {said} (its own)", highlight=False)
        rows = [
            (
                k.id,
                k.prefix + "…",
                _scopes(k, ALL_SCOPES),
                k.name,
                k.created_at[:10],
            )
            for k in owned
        ]
        table = _table(
            # The day in UTC, said so: east of UTC it is often the local day before.
            ("key id", "prefix", "scopes", "name", "created (UTC)"),
            rows,
            wrap={"scopes": 14, "name": 6},
            styles=["dim" if k.revoked else None for k in owned],
            width=out.width - 2,  # indented under its account
        )
        out.print(Padding(table, (0, 0, 1, 2)), width=out.width)


@keys_app.command("revoke", short_help="Revoke a key: refused everywhere within 2 s.")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key: every API process refuses it (401) within DEMIXER_KEY_CACHE_SECONDS, 2 s."""
    from demixer.service.accounts.keys import revoke_key

    try:
        revoke_key(open_services(load_settings(data_dir)).db, key_id)
    except DemixerError as e:
        raise fail(e) from None
    out.print(f"revoked {key_id}", highlight=False)


def _allowance(state: Any) -> str:
    """An account's monthly allowance and where it stands (the line under its heading)."""
    used = (state.used_seconds + state.held_seconds) / 60
    return (
        f"allowance {state.minutes} audio minutes a month: {used:.1f} used or queued, "
        f"resets {state.resets_at:%Y-%m-%d}"
    )


def _scopes(key: Any, every: tuple[str, ...]) -> str:
    """A key's scopes in a word or a few: ``revoked`` (it can do nothing), ``all``, or each."""
    if key.revoked:
        return "revoked"
    return "all" if set(key.scopes) == set(every) else " ".join(key.scopes)


def _table(
    columns: tuple[str, ...],
    rows: Sequence[tuple[str, ...]],
    wrap: dict[str, int] | None = None,
    styles: list[str | None] | None = None,
    width: int | None = None,
) -> Table:
    """A borderless table that fits ``width`` (default: the terminal): ids and times never
    break and keep their full width; the ``wrap`` columns (name -> narrowest useful width)
    share what is left and wrap between words."""
    wrap = wrap or {}
    widest = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(columns)]
    fixed = sum(w for name, w in zip(columns, widest, strict=True) if name not in wrap)
    room = (width or out.width) - fixed - 2 * (len(columns) - 1)
    wanted = {name: w for name, w in zip(columns, widest, strict=True) if name in wrap}
    # Never keep a column wider than its longest word: scopes named one by one ("files:read
    # models:read") need 11, and the 3 more of its 14 let a key's name keep its words whole.
    least = {
        name: min(wrap[name], max(len(word) for row in rows for word in [name, *row[i].split()]))
        for i, name in enumerate(columns)
        if name in wrap
    }
    share = _share(room, wanted, least)
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )
    for name, w in zip(columns, widest, strict=True):
        if name in wrap:
            table.add_column(name, overflow="fold", width=share[name])
        else:
            table.add_column(name, no_wrap=True, min_width=w)
    for row, style in zip(rows, styles or [None] * len(rows), strict=True):
        table.add_row(*row, style=style)
    return table


def _share(room: int, wanted: dict[str, int], least: dict[str, int]) -> dict[str, int]:
    """``room`` characters split among wrapping columns: each gets what it needs when all fit,
    else its ``least`` and a share of the rest in proportion to what it lacks."""
    if sum(wanted.values()) <= room:
        return wanted
    share = {name: min(least[name], need) for name, need in wanted.items()}
    spare = max(0, room - sum(share.values()))
    extra = {name: need - share[name] for name, need in wanted.items()}
    total = sum(extra.values()) or 1
    return {name: share[name] + spare * extra[name] // total for name in wanted}
