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


@o.job_command
def clean_messages(
    common: o.Common,
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
) -> int:
    from difymaint.cli.runner import execute
    from difymaint.core.context import Context
    from difymaint.core.settings import Settings
    from difymaint.jobs.clean_messages import CleanMessagesParams

    overrides: dict[str, object] = {
        "SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS": days,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE": batch_size,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL": sleep_ms,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_GRACEFUL_PERIOD": graceful_period,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_SCAN_STRATEGY": scan_strategy,
    }

    def build(settings: Settings, ctx: Context) -> CleanMessagesParams:
        return CleanMessagesParams(
            window=o.cli_window(
                ctx.clock.now(),
                default_days=settings.SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS,
                days=days,
                start_from=start_from,
                end_before=end_before,
                from_days_ago=from_days_ago,
                to_days_ago=to_days_ago,
            ),
            run=common.run_options(
                batch_size=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE,
                sleep_ms=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL,
            ),
            tenant_ids=o.id_filter(tenant_ids, "--tenant-ids"),
            scan_strategy=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_SCAN_STRATEGY,
            graceful_period_days=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_GRACEFUL_PERIOD,
            clean_conversations=clean_conversations,
            orphan_manifest=orphan_manifest,
            app_page_size=settings.SANDBOX_EXPIRED_RECORDS_CLEAN_APP_PAGE_SIZE,
        )

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str:
        return o.retention_confirmation(
            settings,
            ctx,
            what="messages",
            window=params.window,
            tenant_ids=params.tenant_ids,
            graceful_period_days=params.graceful_period_days,
        )

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)
