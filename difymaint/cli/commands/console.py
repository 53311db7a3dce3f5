"""The operator's console: ``jobs``, ``history``, ``status``, ``locks``, ``pause``/``resume``, ``run``, ``run-due``.

No daemon, no web service: every command reads (or writes) the run history in the database the jobs use
(:mod:`difymaint.ops.history`), Redis, and the registry. Every command has ``--json`` for tooling.
"""

from __future__ import annotations

import json as jsonlib
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from difymaint.cli.session import Color, DatabaseUrl, EnvFile, Json, RedisUrl, make_consoles
from difymaint.cli.session import console_session as _session
from difymaint.cli.session import guarded as _guarded
from difymaint.jobs import JobInfo
from difymaint.jobs.spec import RUN

if TYPE_CHECKING:
    from difymaint.cli.render import Consoles
    from difymaint.core.context import Context
    from difymaint.ops.history import HistoryStore


def _store(ctx: Context) -> HistoryStore:
    from difymaint.core.errors import ConfigError
    from difymaint.ops.history import HistoryStore, history_enabled

    if not history_enabled(ctx.settings):
        raise ConfigError("run history is off (DIFYMAINT_HISTORY=off)", hint="unset DIFYMAINT_HISTORY to use it")
    return HistoryStore(ctx.engine)


def _print_json(consoles: Consoles, data: Any) -> None:
    consoles.out.file.write(jsonlib.dumps(data, default=str) + "\n")
    consoles.out.file.flush()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


_OUTCOME_STYLE = {
    "done": "green",
    "running": "cyan",
    "partial": "yellow",
    "interrupted": "yellow",
    "skipped_locked": "yellow",
    "failed": "red",
    "threshold_exceeded": "red",
    "paused": "dim",
    "disabled": "dim",
}


def _outcome(value: str) -> str:
    style = _OUTCOME_STYLE.get(value, "white")
    return f"[{style}]{value}[/{style}]"


def _unknown_job(name: str, jobs: Mapping[str, JobInfo]) -> None:
    from difymaint.core.errors import UsageError

    if name not in jobs:
        raise UsageError(f"no job named {name!r}", hint=f"one of: {', '.join(jobs)}")


def _now(value: str | None) -> datetime:
    from difymaint.core.errors import UsageError

    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now {value!r} is not an ISO date-time", hint="e.g. 2026-11-24T04:00:30Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def register(app: typer.Typer, jobs: Mapping[str, JobInfo], run_job: Callable[..., int]) -> None:
    """Add the console commands for this registry (tests pass their own registry)."""

    # --- jobs -------------------------------------------------------------------------------------------------

    @app.command(
        "jobs",
        help="The job catalogue: every job, what it does, the Dify job it replaces, its schedule, switch and lock. "
        "'difymaint jobs show JOB' lists the job's parameters (type, default, the Dify setting behind each) and "
        "the exit codes it can return.",
        short_help="List the jobs, or show one job's parameters (jobs show JOB).",
    )
    def jobs_command(
        args: Annotated[list[str] | None, typer.Argument(metavar="[show JOB]", show_default=False)] = None,
        json: Json = False,
        color: Color = None,
    ) -> None:
        from rich.table import Table

        from difymaint.ops.console import exit_codes_of, job_catalogue, job_parameters

        consoles = make_consoles(color)
        words = list(args or [])
        with _guarded(consoles):
            if not words:
                rows = [job_catalogue(info) for info in jobs.values()]
                if json:
                    _print_json(consoles, rows)
                    return
                table = Table(show_edge=False, pad_edge=False)
                for column in ("job", "what it does", "replaces (Dify)", "schedule (UTC)", "Dify switch", "lock"):
                    table.add_column(column, overflow="fold")
                for row in rows:
                    table.add_row(
                        row["name"],
                        row["summary"],
                        row["dify_task"],
                        row["schedule"] or "manual",
                        " + ".join(s["name"] for s in row["switches"]) or "-",
                        row["lock"],
                    )
                consoles.out.print(table)
                return
            from difymaint.core.errors import UsageError

            if words[0] != "show" or len(words) != 2:
                raise UsageError("expected 'difymaint jobs' or 'difymaint jobs show JOB'")
            _unknown_job(words[1], jobs)
            info = jobs[words[1]]
            data = {
                **job_catalogue(info),
                "parameters": job_parameters(info),
                "exit_codes": [{"code": c, "meaning": m} for c, m in exit_codes_of(info)],
            }
            if json:
                _print_json(consoles, data)
                return
            consoles.out.print(f"[b]{info.name}[/b] — {info.summary}")
            consoles.out.print(
                f"replaces {info.dify_task}; schedule {data['schedule'] or 'manual'}; lock {info.lock_key}"
            )
            params = Table(title="parameters", title_justify="left", show_edge=False, pad_edge=False)
            for column in ("flag", "type", "default", "setting / env var", "meaning"):
                params.add_column(column, overflow="fold")
            for p in data["parameters"]:
                params.add_row(
                    ", ".join(p["flags"]) or "-", p["type"], p["default"] or "-", p["setting"] or "-", p["help"]
                )
            consoles.out.print(params)
            codes = Table(title="exit codes", title_justify="left", show_edge=False, pad_edge=False)
            codes.add_column("code", justify="right")
            codes.add_column("meaning")
            for code in data["exit_codes"]:
                codes.add_row(str(code["code"]), code["meaning"])
            consoles.out.print(codes)

    # --- history ----------------------------------------------------------------------------------------------

    @app.command(
        "history",
        help="Recorded runs, newest first: 'difymaint history [JOB] [--since DAYS|DATE]'. 'difymaint history show "
        "RUN_ID' prints one run with its log (a unique prefix of the id is enough). 'difymaint history prune "
        "--older-than DAYS' deletes finished records older than that.",
        short_help="List recorded runs; show one with its log; prune old records.",
    )
    def history_command(
        args: Annotated[
            list[str] | None, typer.Argument(metavar="[JOB | show RUN_ID | prune]", show_default=False)
        ] = None,
        since: Annotated[
            str | None, typer.Option("--since", metavar="DAYS|DATE", help="Only runs started since then.")
        ] = None,
        limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 50,
        older_than: Annotated[
            int | None, typer.Option("--older-than", min=1, metavar="DAYS", help="prune: records older than DAYS.")
        ] = None,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="prune: do not ask.")] = False,
        env_file: EnvFile = None,
        database_url: DatabaseUrl = None,
        json: Json = False,
        color: Color = None,
    ) -> None:
        consoles = make_consoles(color)
        words = list(args or [])
        with _session(consoles, env_file, database_url, None) as ctx:
            from difymaint.core.errors import UsageError

            store = _store(ctx)
            if words and words[0] == "show":
                if len(words) != 2:
                    raise UsageError("expected 'difymaint history show RUN_ID'")
                _history_show(consoles, store, words[1], json)
            elif words and words[0] == "prune":
                if older_than is None:
                    raise UsageError("history prune needs --older-than DAYS")
                _history_prune(consoles, store, older_than, yes, json)
            else:
                if len(words) > 1:
                    raise UsageError("expected at most one JOB")
                if words and words[0] != "run-due":  # run-due records its own ticks
                    _unknown_job(words[0], jobs)
                render_history(consoles, store, words[0] if words else None, _since(since), limit, json)

    # --- status -----------------------------------------------------------------------------------------------

    @app.command(
        "status",
        help="Per job: last run and outcome, last success and its age against the schedule (overdue in red), rows "
        "changed in the last 7 days, and what is running now (host, rows so far, rate, ETA). --check exits 3 when "
        "an enabled, unpaused job is overdue or its last run failed (for monitors).",
        short_help="Last runs, overdue jobs and running jobs; --check for monitors.",
    )
    def status_command(
        check: Annotated[
            bool, typer.Option("--check", help="Exit 3 when an enabled job is overdue or failed.")
        ] = False,
        watch: Annotated[bool, typer.Option("--watch", help="Refresh until interrupted.")] = False,
        interval: Annotated[float, typer.Option("--interval", min=1, help="--watch refresh, seconds.")] = 5.0,
        now: Annotated[str | None, typer.Option("--now", hidden=True, help="Pretend it is this UTC time.")] = None,
        env_file: EnvFile = None,
        database_url: DatabaseUrl = None,
        json: Json = False,
        color: Color = None,
    ) -> None:
        consoles = make_consoles(color)
        code = 0
        with _session(consoles, env_file, database_url, None) as ctx:
            store = _store(ctx)
            try:
                while True:
                    if watch and not json:
                        consoles.out.clear()
                    code = render_status(consoles, store, jobs, ctx, _now(now), json=json, check=check)
                    if not watch:
                        break
                    time.sleep(interval)
            except KeyboardInterrupt:  # Ctrl-C is how --watch ends
                pass
        raise typer.Exit(code)

    # --- locks ------------------------------------------------------------------------------------------------

    @app.command(
        "locks",
        help="Every difymaint lock and Dify's own retention locks: Redis keys (holder token, TTL), PostgreSQL "
        "advisory locks (holding session) and SQLite lock files, each tied to the running history record when "
        "there is one. 'difymaint locks release NAME' removes a stuck lock after a confirmation (--yes); it "
        "refuses while the holder still renews the lock (watched for --observe seconds) unless --force.",
        short_help="List held locks; release a stuck one (locks release NAME).",
    )
    def locks_command(
        args: Annotated[list[str] | None, typer.Argument(metavar="[release NAME]", show_default=False)] = None,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="release: do not ask.")] = False,
        force: Annotated[bool, typer.Option("--force", help="release: even while the holder renews it.")] = False,
        observe: Annotated[
            float, typer.Option("--observe", min=0, metavar="SECONDS", help="release: watch for renewals this long.")
        ] = 12.0,
        env_file: EnvFile = None,
        database_url: DatabaseUrl = None,
        redis_url: RedisUrl = None,
        json: Json = False,
        color: Color = None,
    ) -> None:
        from difymaint.cli.runner import current_environment

        consoles = make_consoles(color)
        words = list(args or [])
        with _session(consoles, env_file, database_url, redis_url) as ctx:
            from difymaint.core.errors import UsageError

            locks = _all_locks(ctx, jobs)
            if not words:
                _render_locks(consoles, ctx, jobs, locks, json)
                return
            if words[0] != "release" or len(words) != 2:
                raise UsageError("expected 'difymaint locks' or 'difymaint locks release NAME'")
            _release(consoles, ctx, locks, words[1], yes, force, observe, json, current_environment().isatty())

    # --- pause / resume ---------------------------------------------------------------------------------------

    @app.command(
        "pause",
        help="Pause a job: runs started while it is paused exit at once with outcome 'paused' (exit 0), and a "
        "running one stops after its current batch (outcome partial, stop reason 'paused', exit 4). Stored in the "
        "run history tables; needs no redeploy.",
        short_help="Pause a job (a kill switch without a redeploy).",
    )
    def pause_command(
        job: Annotated[str, typer.Argument(metavar="JOB")],
        reason: Annotated[str | None, typer.Option("--reason", help="Why (shown by status).")] = None,
        env_file: EnvFile = None,
        database_url: DatabaseUrl = None,
        json: Json = False,
    ) -> None:
        consoles = make_consoles()
        with _session(consoles, env_file, database_url, None) as ctx:
            _unknown_job(job, jobs)
            _store(ctx).pause(job, reason, datetime.now(UTC))
            if json:
                _print_json(consoles, {"job": job, "paused": True, "reason": reason})
            else:
                consoles.out.print(
                    f"{job} is paused{f' ({reason})' if reason else ''}; `difymaint resume {job}` lifts it"
                )

    @app.command("resume", help="Lift a pause set by 'difymaint pause'.", short_help="Resume a paused job.")
    def resume_command(
        job: Annotated[str, typer.Argument(metavar="JOB")],
        env_file: EnvFile = None,
        database_url: DatabaseUrl = None,
        json: Json = False,
    ) -> None:
        consoles = make_consoles()
        with _session(consoles, env_file, database_url, None) as ctx:
            _unknown_job(job, jobs)
            was = _store(ctx).resume(job)
            if json:
                _print_json(consoles, {"job": job, "paused": False, "was_paused": was})
            else:
                consoles.out.print(f"{job} resumed" if was else f"{job} was not paused")

    # --- run / run-due ----------------------------------------------------------------------------------------

    @app.command(
        "run",
        help="Run jobs one after the other in this process, each with its defaults (Dify's settings). Stops at "
        "the first job that does not exit 0 unless --keep-going; exits with the worst code (failed > usage > "
        "interrupted > threshold > partial > locked > ok).",
        short_help="Run several jobs in order; exit with the worst code.",
    )
    def run_command(
        names: Annotated[list[str], typer.Argument(metavar="JOB...")],
        keep_going: Annotated[bool, typer.Option("--keep-going", help="Run the rest after a job fails.")] = False,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", "-n", help="Dry-run every job.", rich_help_panel=RUN)
        ] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.", rich_help_panel=RUN)] = False,
        scheduled: Annotated[
            bool, typer.Option("--scheduled", help="Honour Dify's switches (as cron runs do).", rich_help_panel=RUN)
        ] = False,
        max_runtime: Annotated[
            float | None,
            typer.Option("--max-runtime", min=1, metavar="SECONDS", help="Per job.", rich_help_panel=RUN),
        ] = None,
        env_file: EnvFile = None,
        database_url: DatabaseUrl = None,
        redis_url: RedisUrl = None,
        json: Json = False,
    ) -> None:
        from difymaint.cli.options import Common
        from difymaint.ops.console import run_chain

        consoles = make_consoles()
        with _guarded(consoles):
            for name in names:
                _unknown_job(name, jobs)
        common = Common(
            dry_run=dry_run,
            yes=yes or None,
            scheduled=scheduled,
            max_runtime=max_runtime,
            env_file=env_file,
            database_url=database_url,
            redis_url=redis_url,
            json=json,
        )

        def say(line: str) -> None:
            if not json or line.startswith("stopping"):
                consoles.err.print(line, highlight=False, markup=False)

        code = run_chain(names, lambda name: run_job(jobs[name], common, {}), keep_going=keep_going, say=say)
        raise typer.Exit(code)

    @app.command(
        "run-due",
        help="Run every job whose schedule (the registry's, or DIFYMAINT_SCHEDULE_<JOB>) fired since its last "
        "recorded run, honouring Dify's switches and pauses; a missed slot runs once. Due jobs run at the same "
        "time as child processes ('difymaint JOB --scheduled --yes'), quick ones started first, so a long "
        "retention job never delays a quick one. One crontab line is enough: '* * * * * difymaint run-due'.",
        short_help="Run the jobs whose schedule fired (one crontab line for everything).",
    )
    def run_due_command(
        list_only: Annotated[bool, typer.Option("--list", help="Say what is due; run nothing.")] = False,
        now: Annotated[
            str | None, typer.Option("--now", metavar="DATETIME", help="Decide as if it were this UTC time.")
        ] = None,
        child_module: Annotated[str, typer.Option("--child-module", hidden=True)] = "difymaint",
        env_file: EnvFile = None,
        database_url: DatabaseUrl = None,
        redis_url: RedisUrl = None,
        json: Json = False,
    ) -> None:
        from difymaint.ops.console import RUN_DUE, dispatch_due, plan_due, worst

        consoles = make_consoles()
        code = 0
        with _session(consoles, env_file, database_url, redis_url) as ctx:
            moment = _now(now)
            store = _store(ctx)
            decisions = plan_due(store, jobs, ctx.settings, moment)
            if list_only:
                _render_due(consoles, decisions, json)
                return
            tick = store.start(job=RUN_DUE, args={"now": now}, dry_run=False, started_at=moment)
            keep = ctx.settings.DIFYMAINT_HISTORY_KEEP_DAYS
            # Minute-level jobs write ~1,440 records a day each: the dispatcher keeps the table bounded.
            pruned = store.prune(moment - timedelta(days=keep)) if keep else 0
            env = dict(os.environ)
            for variable, value in (
                ("DIFYMAINT_ENV_FILE", env_file),
                ("DIFYMAINT_DATABASE_URL", database_url),
                ("DIFYMAINT_REDIS_URL", redis_url),
            ):
                if value is not None:
                    env[variable] = str(value)
            dispatch_due(decisions, jobs, child_module=child_module, extra_args=("--json",) if json else (), env=env)
            code = worst([d.exit_code for d in decisions if d.exit_code is not None])
            store.update(
                tick,
                ended_at=moment,
                outcome="done" if code == 0 else "failed",
                exit_code=code,
                log_lines=[f"{d.job}: {d.action} ({d.reason}) exit {d.exit_code}" for d in decisions]
                + ([f"pruned {pruned} run records older than {keep} days"] if pruned else []),
            )
            _render_due(consoles, decisions, json)
        raise typer.Exit(code)


# --- rendering helpers ----------------------------------------------------------------------------------------


def _since(value: str | None) -> datetime | None:
    from difymaint.core.errors import UsageError

    if value is None:
        return None
    if value.isdigit():
        return datetime.now(UTC) - timedelta(days=int(value))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--since {value!r} is neither a number of days nor a date", hint="e.g. 7 or 2026-11-01"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def render_history(
    consoles: Consoles, store: HistoryStore, job: str | None, since: datetime | None, limit: int, json: bool
) -> None:
    from rich.table import Table

    records = store.recent(job=job, since=since, limit=limit)
    if json:
        _print_json(consoles, [r.to_dict() for r in records])
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("run id", "job", "started (UTC)", "took", "outcome", "exit", "rows", "batches", "host", "note"):
        table.add_column(column, justify="right" if column in ("exit", "rows", "batches") else "left")
    for r in records:
        note = r.error or (f"stopped by {r.stop_reason}" if r.stop_reason else "")
        table.add_row(
            r.run_id[:8],
            r.job + (" (dry run)" if r.dry_run else ""),
            _when(r.started_at),
            _age(r.duration_s),
            _outcome(r.outcome),
            "-" if r.exit_code is None else str(r.exit_code),
            f"{r.rows_total:,}",
            str(r.batches),
            r.host,
            note,
        )
    consoles.out.print(table)


def _history_show(consoles: Consoles, store: HistoryStore, run_id: str, json: bool) -> None:
    from rich.markup import escape

    from difymaint.core.errors import DifymaintError

    record = store.get(run_id)
    if record is None:
        raise DifymaintError(f"no recorded run {run_id!r} (or the prefix is not unique)")
    if json:
        _print_json(consoles, record.to_dict(with_log=True))
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


def _history_prune(consoles: Consoles, store: HistoryStore, days: int, yes: bool, json: bool) -> None:
    from difymaint.cli.runner import current_environment
    from difymaint.core.errors import UsageError

    if not yes:
        if not current_environment().isatty():
            raise UsageError("refusing to prune without confirmation in a non-interactive run", hint="add --yes")
        typer.confirm(f"Delete run records older than {days} days?", abort=True, err=True)
    removed = store.prune(datetime.now(UTC) - timedelta(days=days))
    if json:
        _print_json(consoles, {"pruned": removed, "older_than_days": days})
    else:
        consoles.out.print(f"pruned {removed} run records older than {days} days")


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
        _print_json(consoles, {"now": now.isoformat(), "jobs": [row.to_dict(now) for row in rows], "exit_code": code})
        return code
    table = Table(show_edge=False, pad_edge=False)
    for column in ("job", "enabled", "schedule", "last run", "outcome", "last success", "rows 7d", "next"):
        table.add_column(column, justify="right" if column == "rows 7d" else "left")
    for row in rows:
        success_age = (now - row.last_success.started_at).total_seconds() if row.last_success else None
        success = f"{_age(success_age)} ago" if row.last_success else "never"
        if row.enabled and row.paused is None and row.overdue:
            success = f"[red]{success} (overdue)[/red]"
        enabled = "[dim]paused[/dim]" if row.paused else ("yes" if row.enabled else "[dim]no[/dim]")
        table.add_row(
            row.job,
            enabled,
            row.schedule or "manual",
            _when(row.last_run.started_at) if row.last_run else "-",
            _outcome(row.last_run.outcome) if row.last_run else "-",
            success,
            f"{row.rows_7d:,}",
            _when(row.next_run) if row.next_run else "-",
        )
    consoles.out.print(table)
    running = [(row, r) for row in rows for r in row.running]
    if running:
        live = Table(title="running now", title_justify="left", show_edge=False, pad_edge=False)
        for column in ("job", "run id", "host", "started", "rows so far", "rate/s", "ETA", "heartbeat"):
            live.add_column(column)
        for row, r in running:
            eta = r.rows_remaining / r.rate if r.rows_remaining and r.rate else None
            beat = f"{_age((now - r.heartbeat_at).total_seconds()) if r.heartbeat_at else '-'} ago"
            if r.run_id in row.stale:
                beat = f"[red]{beat} (stale: crashed?)[/red]"
            live.add_row(
                r.job,
                r.run_id[:8],
                r.host,
                _when(r.started_at),
                f"{r.rows_total:,}",
                f"{r.rate or 0:,.1f}",
                _age(eta),
                beat,
            )
        consoles.out.print(live)
    for row in problems:
        consoles.err.print(f"[red]{row.job}: {row.problem}[/red]")
    return code


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
        _print_json(
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
            _age(lock.ttl_s) if lock.ttl_s is not None else "-",
            f"{run.run_id[:8]} on {run.host} since {_when(run.started_at)}" if run else "-",
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
        _print_json(consoles, {"released": lock.to_dict()})
    else:
        consoles.out.print(f"released {lock.where}")


def _render_due(consoles: Consoles, decisions: list[Any], json: bool) -> None:
    if json:
        _print_json(consoles, {"run_due": [d.to_dict() for d in decisions]})
        return
    if not decisions:
        consoles.err.print("nothing is due")
    for d in decisions:
        result = "" if d.exit_code is None else f" → exit {d.exit_code}"
        consoles.err.print(f"{d.job}: {d.action} ({d.reason}){result}", highlight=False)
