"""``difymaint locks``: every difymaint lock and Dify's own retention locks; ``locks release NAME`` removes a
stuck one, after watching that its holder no longer renews it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from difymaint.cli.commands._common import age, command_group, print_json, when
from difymaint.cli.options import ConsoleOptions, console_options
from difymaint.cli.session import console_session
from difymaint.jobs import JobInfo

if TYPE_CHECKING:
    from difymaint.cli.render import Consoles
    from difymaint.core.context import Context


def register(app: typer.Typer, jobs: Mapping[str, JobInfo], run_job: Callable[..., int]) -> None:
    group = command_group("locks")

    @group.command("list", help="The locks held now (the default of 'difymaint locks').")
    @console_options(redis=True)
    def list_locks(
        opts: ConsoleOptions,
    ) -> None:
        with console_session(opts) as (consoles, ctx):
            _render_locks(consoles, ctx, jobs, _all_locks(ctx, jobs), opts.json)

    @group.command("release", help="Remove a stuck lock (by name or key), after a confirmation.")
    @console_options(redis=True)
    def release_lock(
        opts: ConsoleOptions,
        name: Annotated[str, typer.Argument(metavar="NAME")],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Even while the holder renews it.")] = False,
        observe: Annotated[
            float, typer.Option("--observe", min=0, metavar="SECONDS", help="Watch for renewals this long.")
        ] = 12.0,
    ) -> None:
        from difymaint.cli.runner import current_environment

        with console_session(opts) as (consoles, ctx):
            locks = _all_locks(ctx, jobs)
            _release(consoles, ctx, locks, name, yes, force, observe, opts.json, current_environment().isatty())

    app.add_typer(group)


def _all_locks(ctx: Context, jobs: Mapping[str, JobInfo]) -> list[Any]:
    from difymaint.ops.locks import advisory_locks, file_locks, named_locks, redis_locks

    names = {info.lock_key for info in jobs.values()}
    found = []
    if ctx.redis is not None:
        found += redis_locks(ctx.redis, ctx.keys)
    if ctx.engine.dialect.name == "postgresql":
        found += advisory_locks(ctx.engine, names)
    elif ctx.engine.dialect.name == "mysql":
        found += named_locks(ctx.engine, names)
    else:
        found += file_locks(ctx.engine, names)
    return found


def _holders(ctx: Context, jobs: Mapping[str, JobInfo]) -> dict[str, Any]:
    """Lock name → the running history record of the job that uses it (when history is on)."""
    from difymaint.ops.history import HistoryStore, history_enabled

    if not history_enabled(ctx.settings):
        return {}
    try:
        running = HistoryStore(ctx.engine).running()
    except Exception:  # listing locks must work without history
        return {}
    by_job = {info.name: info.lock_key for info in jobs.values()}
    return {by_job.get(r.job, r.job): r for r in running}


def _holder_text(lock: Any) -> str:
    """Redis values written by difymaint name their holder (host, pid, run); Dify's are bare tokens."""
    from difymaint.core.locking import holder_summary

    if lock.backend == "redis" and lock.holder:
        return holder_summary(lock.holder)
    return str(lock.holder or "-")


def _render_locks(consoles: Consoles, ctx: Context, jobs: Mapping[str, JobInfo], locks: list[Any], json: bool) -> None:
    from rich.table import Table

    holders = _holders(ctx, jobs)
    if json:
        print_json(
            consoles,
            [
                {
                    **lock.to_dict(),
                    "holder_description": _holder_text(lock),
                    "run": holders[lock.name].to_dict() if lock.name in holders else None,
                }
                for lock in locks
            ],
        )
        return
    if not locks:
        consoles.out.print("no locks held")
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("name", "backend", "where", "holder", "TTL", "run (history)"):
        table.add_column(column, overflow="fold")
    for lock in locks:
        run = holders.get(lock.name)
        table.add_row(
            lock.name,
            lock.backend,
            lock.where,
            _holder_text(lock),
            age(lock.ttl_s) if lock.ttl_s is not None else "-",
            f"{run.run_id[:8]} on {run.host} since {when(run.started_at)}" if run else "-",
        )
    consoles.out.print(table)


def _release(
    consoles: Consoles,
    ctx: Context,
    locks: list[Any],
    name: str,
    yes: bool,
    force: bool,
    observe: float,
    json: bool,
    interactive: bool,
) -> None:
    from difymaint.core.errors import DifymaintError, UsageError
    from difymaint.ops.locks import release, still_renewing

    matches = [lock for lock in locks if name in (lock.name, lock.where)]
    if not matches:
        raise DifymaintError(f"no held lock named {name!r}", hint="'difymaint locks' lists them")
    lock = matches[0]
    engine = ctx.engine if lock.backend in ("postgres", "mysql") else None
    if not force and observe > 0:
        if not json:
            consoles.err.print(f"watching {lock.where} for {observe:.0f}s for renewals…")
        if still_renewing(lock, client=ctx.redis, engine=engine, seconds=observe, sleep=time.sleep):
            raise DifymaintError(
                f"refusing to release {lock.name!r}: its holder ({lock.holder}) is still renewing it",
                hint="the run is alive; stop it (or pause the job), or add --force",
            )
    if not yes:
        if not interactive:
            raise UsageError(
                "refusing to release a lock without confirmation in a non-interactive run", hint="add --yes"
            )
        typer.confirm(f"Release {lock.backend} lock {lock.where} held by {lock.holder}?", abort=True, err=True)
    release(lock, client=ctx.redis, engine=engine)
    if json:
        print_json(consoles, {"released": lock.to_dict()})
    else:
        consoles.out.print(f"released {lock.where}")
