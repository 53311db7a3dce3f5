"""``difymaint pause JOB`` / ``difymaint resume JOB``: a kill switch that needs no redeploy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated

import typer

from difymaint.cli.commands._common import check_job, history_store, print_json
from difymaint.cli.options import ConsoleOptions, console_options
from difymaint.cli.session import console_session
from difymaint.jobs import JobInfo


def register(app: typer.Typer, jobs: Mapping[str, JobInfo], run_job: Callable[..., int]) -> None:
    @app.command("pause", short_help="Pause a job (a kill switch without a redeploy).")
    @console_options()
    def pause_command(
        opts: ConsoleOptions,
        job: Annotated[str, typer.Argument(metavar="JOB")],
        reason: Annotated[str | None, typer.Option("--reason", help="Why (shown by status).")] = None,
    ) -> None:
        """Pause a job: runs started while it is paused exit at once with outcome 'paused' (exit 0), and a running one
        stops after its current batch (outcome partial, stop reason 'paused', exit 4). Stored in the run history
        tables; needs no redeploy.
        """
        with console_session(opts) as (consoles, ctx):
            check_job(job, jobs)
            history_store(ctx).pause(job, reason, datetime.now(UTC))
            if opts.json:
                print_json(consoles, {"job": job, "paused": True, "reason": reason})
            else:
                consoles.out.print(
                    f"{job} is paused{f' ({reason})' if reason else ''}; `difymaint resume {job}` lifts it"
                )

    @app.command("resume", help="Lift a pause set by 'difymaint pause'.", short_help="Resume a paused job.")
    @console_options()
    def resume_command(
        opts: ConsoleOptions,
        job: Annotated[str, typer.Argument(metavar="JOB")],
    ) -> None:
        with console_session(opts) as (consoles, ctx):
            check_job(job, jobs)
            was = history_store(ctx).resume(job)
            if opts.json:
                print_json(consoles, {"job": job, "paused": False, "was_paused": was})
            else:
                consoles.out.print(f"{job} resumed" if was else f"{job} was not paused")
