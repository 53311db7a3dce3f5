"""``difymaint history``: recorded runs, newest first; one run with its log (``history show RUN_ID``); pruning
old records (``history prune --older-than DAYS``)."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from difymaint.cli.commands._common import (
    age,
    check_job,
    command_group,
    history_store,
    outcome,
    parse_since,
    print_json,
    when,
)
from difymaint.cli.options import ConsoleOptions, console_options
from difymaint.cli.session import console_session
from difymaint.jobs import JobInfo

if TYPE_CHECKING:
    from difymaint.cli.render import Consoles
    from difymaint.ops.history import HistoryStore


def register(app: typer.Typer, jobs: Mapping[str, JobInfo], run_job: Callable[..., int]) -> None:
    group = command_group(
        "history",
        help="Recorded runs, newest first: 'difymaint history [JOB] [--since DAYS|DATE]'. 'difymaint history show "
        "RUN_ID' prints one run with its log (a unique prefix of the id is enough). 'difymaint history prune "
        "--older-than DAYS' deletes finished records older than that.",
        short_help="List recorded runs; show one with its log; prune old records.",
    )

    @group.command("list", help="Recorded runs, newest first (the default of 'difymaint history').")
    @console_options()
    def list_runs(
        opts: ConsoleOptions,
        job: Annotated[str | None, typer.Argument(metavar="[JOB]", show_default=False)] = None,
        since: Annotated[
            str | None, typer.Option("--since", metavar="DAYS|DATE", help="Only runs started since then.")
        ] = None,
        limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 50,
    ) -> None:
        with console_session(opts) as (consoles, ctx):
            if job is not None and job != "run-due":  # run-due records its own ticks
                check_job(job, jobs)
            render_history(consoles, history_store(ctx), job, parse_since(since), limit, opts.json)

    @group.command("show", help="One recorded run with its log (a unique prefix of the run id is enough).")
    @console_options()
    def show_run(
        opts: ConsoleOptions,
        run_id: Annotated[str, typer.Argument(metavar="RUN_ID")],
    ) -> None:
        with console_session(opts) as (consoles, ctx):
            _show(consoles, history_store(ctx), run_id, opts.json)

    @group.command("prune", help="Delete finished run records older than --older-than DAYS.")
    @console_options()
    def prune_runs(
        opts: ConsoleOptions,
        older_than: Annotated[
            int, typer.Option("--older-than", min=1, metavar="DAYS", help="Records older than DAYS.")
        ],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ) -> None:
        with console_session(opts) as (consoles, ctx):
            _prune(consoles, history_store(ctx), older_than, yes, opts.json)

    app.add_typer(group)


def render_history(
    consoles: Consoles, store: HistoryStore, job: str | None, since: datetime | None, limit: int, json: bool
) -> None:
    from rich.table import Table

    records = store.recent(job=job, since=since, limit=limit)
    if json:
        print_json(consoles, [r.to_dict() for r in records])
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("run id", "job", "started (UTC)", "took", "outcome", "exit", "rows", "batches", "host", "note"):
        table.add_column(column, justify="right" if column in ("exit", "rows", "batches") else "left")
    for r in records:
        note = r.error or (f"stopped by {r.stop_reason}" if r.stop_reason else "")
        table.add_row(
            r.run_id[:8],
            r.job + (" (dry run)" if r.dry_run else ""),
            when(r.started_at),
            age(r.duration_s),
            outcome(r.outcome),
            "-" if r.exit_code is None else str(r.exit_code),
            f"{r.rows_total:,}",
            str(r.batches),
            r.host,
            note,
        )
    consoles.out.print(table)


def _show(consoles: Consoles, store: HistoryStore, run_id: str, json: bool) -> None:
    from rich.markup import escape

    from difymaint.core.errors import DifymaintError

    record = store.get(run_id)
    if record is None:
        raise DifymaintError(f"no recorded run {run_id!r} (or the prefix is not unique)")
    if json:
        print_json(consoles, record.to_dict(with_log=True))
        return
    data = record.to_dict()
    for key in ("run_id", "job", "outcome", "exit_code", "dry_run", "host", "pid", "started_at", "ended_at"):
        consoles.out.print(f"{key:>15}: {escape(str(data[key]))}")
    consoles.out.print(f"{'args':>15}: {escape(jsonlib.dumps(record.args))}")
    for key in ("batches", "rows_total", "rows_remaining", "rate_rows_per_s", "stop_reason", "error"):
        consoles.out.print(f"{key:>15}: {escape(str(data[key]))}")
    for table, rows in record.tables.items():
        consoles.out.print(f"{'':>15}  {table}: {rows:,}")
    consoles.out.print("log:")
    for line in record.log_lines:
        consoles.out.print("  " + escape(line))


def _prune(consoles: Consoles, store: HistoryStore, days: int, yes: bool, json: bool) -> None:
    from difymaint.cli.runner import current_environment
    from difymaint.core.errors import UsageError

    if not yes:
        if not current_environment().isatty():
            raise UsageError("refusing to prune without confirmation in a non-interactive run", hint="add --yes")
        typer.confirm(f"Delete run records older than {days} days?", abort=True, err=True)
    removed = store.prune(datetime.now(UTC) - timedelta(days=days))
    if json:
        print_json(consoles, {"pruned": removed, "older_than_days": days})
    else:
        consoles.out.print(f"pruned {removed} run records older than {days} days")
