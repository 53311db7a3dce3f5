"""``difymaint status``: per job, the last run and outcome, the last success against the schedule, rows changed
in the last 7 days, and what runs now; ``--check`` for monitors."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from difymaint.cli.commands._common import age, history_store, outcome, parse_now, print_json, when
from difymaint.cli.options import ConsoleOptions, console_options
from difymaint.cli.session import console_session
from difymaint.jobs import JobInfo

if TYPE_CHECKING:
    from difymaint.cli.render import Consoles
    from difymaint.core.context import Context
    from difymaint.ops.history import HistoryStore


def register(app: typer.Typer, jobs: Mapping[str, JobInfo], run_job: Callable[..., int]) -> None:
    @app.command("status", short_help="Last runs, overdue jobs and running jobs; --check for monitors.")
    @console_options()
    def status_command(
        opts: ConsoleOptions,
        check: Annotated[
            bool, typer.Option("--check", help="Exit 3 when an enabled job is overdue or failed.")
        ] = False,
        watch: Annotated[bool, typer.Option("--watch", help="Refresh until interrupted.")] = False,
        interval: Annotated[float, typer.Option("--interval", min=1, help="--watch refresh, seconds.")] = 5.0,
        now: Annotated[str | None, typer.Option("--now", hidden=True, help="Pretend it is this UTC time.")] = None,
    ) -> None:
        """Per job: last run and outcome, last success and its age against the schedule (overdue in red), rows changed
        in the last 7 days, and what is running now (host, rows so far, rate, ETA). --check exits 3 when an enabled,
        unpaused job is overdue or its last run failed (for monitors).
        """
        code = 0
        with console_session(opts) as (consoles, ctx):
            store = history_store(ctx)
            try:
                while True:
                    if watch and not opts.json:
                        consoles.out.clear()
                    code = render_status(consoles, store, jobs, ctx, parse_now(now), json=opts.json, check=check)
                    if not watch:
                        break
                    time.sleep(interval)
            except KeyboardInterrupt:  # Ctrl-C is how --watch ends
                pass
        raise typer.Exit(code)


def render_status(
    consoles: Consoles,
    store: HistoryStore,
    jobs: Mapping[str, JobInfo],
    ctx: Context,
    now: datetime,
    *,
    json: bool = False,
    check: bool = False,
) -> int:
    """Print the status; returns 3 under ``check`` when any enabled job is overdue or failed, else 0."""
    from rich.table import Table

    from difymaint.ops.console import job_status

    rows = job_status(store, jobs, ctx.settings, now)
    problems = [row for row in rows if row.problem]
    code = 3 if check and problems else 0
    if json:
        print_json(consoles, {"now": now.isoformat(), "jobs": [row.to_dict(now) for row in rows], "exit_code": code})
        return code
    table = Table(show_edge=False, pad_edge=False)
    for column in ("job", "enabled", "schedule", "last run", "outcome", "last success", "rows 7d", "next"):
        table.add_column(column, justify="right" if column == "rows 7d" else "left")
    for row in rows:
        success_age = (now - row.last_success.started_at).total_seconds() if row.last_success else None
        success = f"{age(success_age)} ago" if row.last_success else "never"
        if row.enabled and row.paused is None and row.overdue:
            success = f"[red]{success} (overdue)[/red]"
        enabled = "[dim]paused[/dim]" if row.paused else ("yes" if row.enabled else "[dim]no[/dim]")
        table.add_row(
            row.job,
            enabled,
            row.schedule or "manual",
            when(row.last_run.started_at) if row.last_run else "-",
            outcome(row.last_run.outcome) if row.last_run else "-",
            success,
            f"{row.rows_7d:,}",
            when(row.next_run) if row.next_run else "-",
        )
    consoles.out.print(table)
    running = [(row, r) for row in rows for r in row.running]
    if running:
        live = Table(title="running now", title_justify="left", show_edge=False, pad_edge=False)
        for column in ("job", "run id", "host", "started", "rows so far", "rate/s", "ETA", "heartbeat"):
            live.add_column(column)
        for row, r in running:
            eta = r.rows_remaining / r.rate if r.rows_remaining and r.rate else None
            beat = f"{age((now - r.heartbeat_at).total_seconds()) if r.heartbeat_at else '-'} ago"
            if r.run_id in row.stale:
                beat = f"[red]{beat} (stale: crashed?)[/red]"
            live.add_row(
                r.job,
                r.run_id[:8],
                r.host,
                when(r.started_at),
                f"{r.rows_total:,}",
                f"{r.rate or 0:,.1f}",
                age(eta),
                beat,
            )
        consoles.out.print(live)
    for row in problems:
        consoles.err.print(f"[red]{row.job}: {row.problem}[/red]")
    return code
