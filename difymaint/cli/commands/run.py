"""``difymaint run JOB...`` (several jobs in order, in this process) and ``difymaint run-due`` (every job whose
schedule fired since its last run, as child processes: one crontab line for everything)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from difymaint.cli.commands._common import check_job, history_store, parse_now, print_json
from difymaint.cli.options import (
    ConsoleOptions,
    DryRun,
    MaxRuntime,
    Scheduled,
    Yes,
    console_options,
)
from difymaint.cli.session import console_session, guarded, make_consoles
from difymaint.jobs import JobInfo
from difymaint.jobs.spec import RUN

if TYPE_CHECKING:
    from difymaint.cli.render import Consoles


def register(app: typer.Typer, jobs: Mapping[str, JobInfo], run_job: Callable[..., int]) -> None:
    @app.command("run", short_help="Run several jobs in order; exit with the worst code.")
    @console_options(redis=True)
    def run_command(
        opts: ConsoleOptions,
        names: Annotated[list[str], typer.Argument(metavar="JOB...")],
        keep_going: Annotated[bool, typer.Option("--keep-going", help="Run the rest after a job fails.")] = False,
        dry_run: DryRun = False,
        yes: Yes = None,
        scheduled: Scheduled = False,
        max_runtime: MaxRuntime = None,
    ) -> None:
        """Run jobs one after the other in this process, each with its defaults (Dify's settings). Stops at the first
        job that does not exit 0 unless --keep-going; exits with the worst code (failed > usage > interrupted >
        threshold > partial > locked > ok).
        """
        from difymaint.cli.options import Common
        from difymaint.ops.console import run_chain

        consoles = make_consoles(opts.color)
        with guarded(consoles):
            for name in names:
                check_job(name, jobs)
        common = Common(
            dry_run=dry_run,
            yes=yes,
            scheduled=scheduled,
            max_runtime=max_runtime,
            env_file=opts.env_file,
            database_url=opts.database_url,
            redis_url=opts.redis_url,
            json=opts.json,
        )

        def say(line: str) -> None:
            if not opts.json or line.startswith("stopping"):
                consoles.err.print(line, highlight=False, markup=False)

        code = run_chain(names, lambda name: run_job(jobs[name], common, {}), keep_going=keep_going, say=say)
        raise typer.Exit(code)

    @app.command("run-due", short_help="Run the jobs whose schedule fired (one crontab line for everything).")
    @console_options(redis=True)
    def run_due_command(
        opts: ConsoleOptions,
        list_only: Annotated[bool, typer.Option("--list", help="Say what is due; run nothing.")] = False,
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run",
                "-n",
                help="Dry-run every due job (each says what it would change); the tick is not recorded, so the "
                "next real run-due still runs them.",
                rich_help_panel=RUN,
            ),
        ] = False,
        now: Annotated[
            str | None, typer.Option("--now", metavar="DATETIME", help="Decide as if it were this UTC time.")
        ] = None,
        child_module: Annotated[str, typer.Option("--child-module", hidden=True)] = "difymaint",
    ) -> None:
        """Run every job whose schedule (the registry's, or DIFYMAINT_SCHEDULE_<JOB>) fired since its last recorded
        run, honouring Dify's switches and pauses; a missed slot runs once. Due jobs run at the same time as child
        processes ('difymaint JOB --scheduled --yes'), quick ones started first, so a long retention job never
        delays a quick one. One crontab line is enough: '* * * * * difymaint run-due'.
        """
        from difymaint.ops.console import RUN_DUE, dispatch_due, plan_due, worst

        code = 0
        with console_session(opts) as (consoles, ctx):
            moment = parse_now(now)
            store = history_store(ctx)
            decisions = plan_due(store, jobs, ctx.settings, moment)
            if list_only:
                _render_due(consoles, decisions, opts.json)
                return
            env = dict(os.environ)
            for variable, value in (
                ("DIFYMAINT_ENV_FILE", opts.env_file),
                ("DIFYMAINT_DATABASE_URL", opts.database_url),
                ("DIFYMAINT_REDIS_URL", opts.redis_url),
            ):
                if value is not None:
                    env[variable] = str(value)
            extra = ("--json",) if opts.json else ()
            if dry_run:
                dispatch_due(decisions, jobs, child_module=child_module, extra_args=extra, env=env, dry_run=True)
                _render_due(consoles, decisions, opts.json)
                raise typer.Exit(worst([d.exit_code for d in decisions if d.exit_code is not None]))
            tick = store.start(job=RUN_DUE, args={"now": now}, dry_run=False, started_at=moment)
            keep = ctx.settings.DIFYMAINT_HISTORY_KEEP_DAYS
            # Minute-level jobs write ~1,440 records a day each: the dispatcher keeps the table bounded.
            pruned = store.prune(moment - timedelta(days=keep)) if keep else 0
            dispatch_due(decisions, jobs, child_module=child_module, extra_args=extra, env=env)
            code = worst([d.exit_code for d in decisions if d.exit_code is not None])
            store.update(
                tick,
                ended_at=moment,
                outcome="done" if code == 0 else "failed",
                exit_code=code,
                log_lines=[f"{d.job}: {d.action} ({d.reason}) exit {d.exit_code}" for d in decisions]
                + ([f"pruned {pruned} run records older than {keep} days"] if pruned else []),
            )
            _render_due(consoles, decisions, opts.json)
        raise typer.Exit(code)


def _render_due(consoles: Consoles, decisions: list[Any], json: bool) -> None:
    if json:
        print_json(consoles, {"run_due": [d.to_dict() for d in decisions]})
        return
    if not decisions:
        consoles.err.print("nothing is due")
    for d in decisions:
        result = "" if d.exit_code is None else f" → exit {d.exit_code}"
        consoles.err.print(f"{d.job}: {d.action} ({d.reason}){result}", highlight=False)
