"""``difymaint clean-workflow-runs``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from difymaint.cli import options as o
from difymaint.jobs import JOBS

NAME = "clean-workflow-runs"


def register(app: typer.Typer) -> None:
    info = JOBS[NAME]
    app.command(
        NAME,
        help=f"{info.summary}\n\nReplaces Dify's {info.dify_task} beat job (schedule {info.schedule}, switch "
        f"{info.dify_switch}). Only ended runs (succeeded, failed, partial-succeeded, stopped) go; running, "
        "paused and scheduled runs stay. Node-execution offloads, node executions, app logs, pause reasons, "
        "pauses, trigger logs and the runs go in one transaction per batch. With BILLING_ENABLED=false every "
        "workspace is treated as sandbox (Dify's behaviour).",
        short_help=info.summary,
    )(clean_workflow_runs)


def clean_workflow_runs(
    days: o.Days = None,
    start_from: o.StartFrom = None,
    end_before: o.EndBefore = None,
    from_days_ago: o.FromDaysAgo = None,
    to_days_ago: o.ToDaysAgo = None,
    tenant_ids: o.TenantIds = None,
    graceful_period: Annotated[
        int | None,
        typer.Option(
            "--graceful-period",
            min=0,
            metavar="DAYS",
            help="Days after a paid plan expires before its runs go (billing on).",
        ),
    ] = None,
    with_messages: Annotated[
        bool,
        typer.Option(
            "--with-messages",
            help="Also delete the runs' advanced-chat messages, then conversations left without messages "
            "and untouched since the cut-off.",
        ),
    ] = False,
    orphan_manifest: o.OrphanManifestPath = None,
    batch_size: o.BatchSize = None,
    sleep_ms: o.SleepMs = None,
    dry_run: o.DryRun = False,
    yes: o.Yes = None,
    max_runtime: o.MaxRuntime = None,
    max_batches: o.MaxBatches = None,
    lock_ttl: o.LockTtl = None,
    no_lock: o.NoLock = False,
    vacuum_analyze: o.VacuumAnalyze = False,
    fail_if_locked: o.FailIfLocked = None,
    env_file: o.EnvFile = None,
    database_url: o.DatabaseUrl = None,
    redis_url: o.RedisUrl = None,
    json: o.Json = False,
    verbose: o.Verbose = 0,
    quiet: o.Quiet = 0,
    log_format: o.LogFormat = None,
    color: o.Color = None,
    debug: o.Debug = False,
) -> int:
    from difymaint.cli.runner import execute
    from difymaint.core.context import Context
    from difymaint.core.errors import UsageError
    from difymaint.core.run import RunOptions
    from difymaint.core.settings import Settings
    from difymaint.core.window import resolve_window
    from difymaint.jobs.clean_workflow_runs import CleanWorkflowRunsParams, validate_ids

    common = o.Common(
        env_file=env_file,
        database_url=database_url,
        redis_url=redis_url,
        dry_run=dry_run,
        yes=yes,
        max_runtime=max_runtime,
        max_batches=max_batches,
        lock_ttl=lock_ttl,
        no_lock=no_lock,
        fail_if_locked=fail_if_locked,
        json=json,
        verbose=verbose,
        quiet=quiet,
        log_format=log_format,
        color=color,
        debug=debug,
    )
    overrides: dict[str, object] = {
        "SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS": days,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE": batch_size,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL": sleep_ms,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_GRACEFUL_PERIOD": graceful_period,
    }

    def build(settings: Settings, ctx: Context) -> CleanWorkflowRunsParams:
        if days is not None and (start_from or end_before or from_days_ago is not None or to_days_ago is not None):
            raise UsageError("--days cannot be combined with another window form")
        window = resolve_window(
            ctx.clock.now(),
            default_days=settings.SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS,
            days=None,  # --days already became SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS
            start_from=start_from,
            end_before=end_before,
            from_days_ago=from_days_ago,
            to_days_ago=to_days_ago,
        )
        return CleanWorkflowRunsParams(
            window=window,
            run=RunOptions(
                dry_run=dry_run,
                batch_size=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE,
                max_runtime_s=max_runtime,
                max_batches=max_batches,
                sleep_ms=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL,
                use_lock=not no_lock,
                vacuum_analyze=vacuum_analyze,
            ),
            tenant_ids=validate_ids(o.split_ids(tenant_ids), "--tenant-ids"),
            graceful_period_days=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_GRACEFUL_PERIOD,
            with_messages=with_messages,
            orphan_manifest=orphan_manifest,
        )

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str:
        scope = f"workspaces {', '.join(params.tenant_ids)}" if params.tenant_ids else "all workspaces"
        if settings.BILLING_ENABLED or settings.DIFYMAINT_PLAN_FILE:
            who = f"expired sandbox {scope} (whitelist and {params.graceful_period_days}-day grace apply)"
        else:
            ctx.reporter.warning(
                "BILLING_ENABLED is false: every workspace is treated as sandbox, so the ended workflow runs of "
                f"{scope.upper() if not params.tenant_ids else scope} in the window are deleted (Dify's behaviour)"
            )
            who = scope
        extra = " and their chat messages" if params.with_messages else ""
        return f"Delete ended workflow runs{extra} {params.window.describe()} of {who} from {_where(settings)}?"

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)


def _where(settings: Any) -> str:
    from difymaint.core.database import database_url

    return database_url(settings).render_as_string(hide_password=True)
