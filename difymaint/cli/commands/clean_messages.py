"""``difymaint clean-messages``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from difymaint.cli import options as o
from difymaint.jobs import JOBS

NAME = "clean-messages"


def register(app: typer.Typer) -> None:
    info = JOBS[NAME]
    app.command(
        NAME,
        help=f"{info.summary}\n\nReplaces Dify's {info.dify_task} beat job (schedule {info.schedule}, switch "
        f"{info.dify_switch}). Messages, their feedbacks, annotations, chains, agent thoughts, files, saved "
        "messages, annotation hits and retriever resources go in one transaction per batch. With "
        "BILLING_ENABLED=false every workspace is treated as sandbox (Dify's behaviour).",
        short_help=info.summary,
    )(clean_messages)


def clean_messages(
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
            help="Days after a paid plan expires before its messages go (billing on).",
        ),
    ] = None,
    scan_strategy: Annotated[
        str | None,
        typer.Option(
            "--scan-strategy",
            metavar="auto|global|eligible-apps",
            help="auto: eligible tenants first when billing is on, one global scan when off.",
        ),
    ] = None,
    clean_conversations: Annotated[
        bool,
        typer.Option(
            "--clean-conversations",
            help="Also delete conversations left without messages and untouched since the cut-off.",
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
    from difymaint.core.run import RunOptions
    from difymaint.core.settings import Settings
    from difymaint.core.window import resolve_window
    from difymaint.jobs.clean_messages import CleanMessagesParams

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
        "SANDBOX_EXPIRED_RECORDS_CLEAN_SCAN_STRATEGY": scan_strategy,
    }

    def build(settings: Settings, ctx: Context) -> CleanMessagesParams:
        window = resolve_window(
            ctx.clock.now(),
            default_days=settings.SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS,
            days=None,  # --days already became SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS
            start_from=start_from,
            end_before=end_before,
            from_days_ago=from_days_ago,
            to_days_ago=to_days_ago,
        )
        if days is not None and (start_from or end_before or from_days_ago is not None or to_days_ago is not None):
            from difymaint.core.errors import UsageError

            raise UsageError("--days cannot be combined with another window form")
        return CleanMessagesParams(
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
            tenant_ids=o.split_ids(tenant_ids),
            scan_strategy=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_SCAN_STRATEGY,
            graceful_period_days=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_GRACEFUL_PERIOD,
            clean_conversations=clean_conversations,
            orphan_manifest=orphan_manifest,
            app_page_size=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_APP_PAGE_SIZE,
        )

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str:
        scope = f"workspaces {', '.join(params.tenant_ids)}" if params.tenant_ids else "all workspaces"
        if settings.BILLING_ENABLED or settings.DIFYMAINT_PLAN_FILE:
            who = f"expired sandbox {scope} (whitelist and {params.graceful_period_days}-day grace apply)"
        else:
            ctx.reporter.warning(
                "BILLING_ENABLED is false: every workspace is treated as sandbox, so messages of "
                f"{scope.upper() if not params.tenant_ids else scope} in the window are deleted (Dify's behaviour)"
            )
            who = scope
        return f"Delete messages {params.window.describe()} of {who} from {_where(settings)}?"

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)


def _where(settings: Any) -> str:
    from difymaint.core.database import database_url

    return database_url(settings).render_as_string(hide_password=True)
