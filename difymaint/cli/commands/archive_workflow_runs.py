"""``difymaint archive-workflow-runs``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from difymaint.cli import options as o
from difymaint.jobs import JOBS

NAME = "archive-workflow-runs"

ArchiveDir = Annotated[
    Path | None,
    typer.Option(
        "--archive-dir",
        metavar="PATH",
        help="Local directory for the archives (DIFYMAINT_ARCHIVE_DIR); default: Dify's ARCHIVE_STORAGE_* S3.",
    ),
]


def register(app: typer.Typer) -> None:
    info = JOBS[NAME]
    app.command(
        NAME,
        help=f"{info.summary}\n\nDify's WorkflowRunArchiver (flask archive-workflow-runs). Dify has no beat entry "
        f"for it ({info.dify_task}); the generated schedules run it at {info.schedule}. Ended workflow and "
        "rag-pipeline runs in the window, not yet in workflow_archive_logs, of paid workspaces (professional or "
        "team; every workspace with BILLING_ENABLED=false) are written with their app logs, node executions, "
        "offloads, pauses, pause reasons and trigger logs as one archive.v1.0.zip per run at "
        "{tenant_id}/app_id={app_id}/year=YYYY/month=MM/workflow_run_id={run_id}/, then recorded in "
        "workflow_archive_logs. Runs are deleted only with --delete-after-archive.",
        short_help=info.summary,
    )(archive_workflow_runs)


@o.job_command
def archive_workflow_runs(
    common: o.Common,
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            "--before-days",
            metavar="DAYS",
            min=1,
            help="Archive runs older than this many days (PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS, 90).",
            rich_help_panel=o.WINDOW,
        ),
    ] = None,
    start_from: o.StartFrom = None,
    end_before: o.EndBefore = None,
    from_days_ago: o.FromDaysAgo = None,
    to_days_ago: o.ToDaysAgo = None,
    tenant_ids: Annotated[
        str | None,
        typer.Option(
            "--tenant-ids",
            metavar="IDS",
            help="Comma-separated workspaces to archive (PAID_PLAN_WORKFLOW_RUN_ARCHIVE_TENANT_IDS); "
            "default: every paid workspace.",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", metavar="N", min=1, help="Archive at most N runs in this run.")
    ] = None,
    delete_after_archive: Annotated[
        bool,
        typer.Option(
            "--delete-after-archive",
            help="Delete the archived runs and their rows (the clean-workflow-runs cascade) in the same "
            "transaction as their workflow_archive_logs rows.",
        ),
    ] = False,
    archive_dir: ArchiveDir = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            metavar="N",
            min=1,
            max=100000,
            help="Runs per batch to start with (PAID_PLAN_WORKFLOW_RUN_ARCHIVE_BATCH_SIZE, 100).",
            rich_help_panel=o.RUN,
        ),
    ] = None,
    sleep_ms: o.SleepMs = None,
) -> int:
    from difymaint.cli.runner import execute
    from difymaint.core.context import Context
    from difymaint.core.object_store import archive_store
    from difymaint.core.settings import Settings
    from difymaint.jobs.archive_workflow_runs import ArchiveWorkflowRunsParams

    overrides: dict[str, object] = {
        "PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS": days,
        "PAID_PLAN_WORKFLOW_RUN_ARCHIVE_BATCH_SIZE": batch_size,
        "PAID_PLAN_WORKFLOW_RUN_ARCHIVE_TENANT_IDS": tenant_ids,
        "DIFYMAINT_ARCHIVE_DIR": archive_dir,
    }

    def build(settings: Settings, ctx: Context) -> ArchiveWorkflowRunsParams:
        return ArchiveWorkflowRunsParams(
            window=o.cli_window(
                ctx.clock.now(),
                default_days=settings.PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS,
                days=days,
                start_from=start_from,
                end_before=end_before,
                from_days_ago=from_days_ago,
                to_days_ago=to_days_ago,
            ),
            run=common.run_options(
                batch_size=settings.PAID_PLAN_WORKFLOW_RUN_ARCHIVE_BATCH_SIZE, sleep_ms=sleep_ms or 0
            ),
            tenant_ids=tuple(
                sorted(o.setting_id_filter(settings, "PAID_PLAN_WORKFLOW_RUN_ARCHIVE_TENANT_IDS", "--tenant-ids"))
            ),
            limit=limit,
            delete_after_archive=delete_after_archive,
            archive_dir=settings.DIFYMAINT_ARCHIVE_DIR,
        )

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str | None:
        if not params.delete_after_archive:
            return None  # it only adds objects and workflow_archive_logs rows
        scope = f"workspaces {', '.join(params.tenant_ids)}" if params.tenant_ids else "all paid workspaces"
        if not (settings.BILLING_ENABLED or settings.DIFYMAINT_PLAN_FILE):
            scope = scope.replace("all paid workspaces", "ALL workspaces (billing is off: every workspace is paid)")
        destination = archive_store(settings, params.archive_dir).description
        return (
            f"Archive the ended workflow runs {params.window.describe()} of {scope} to {destination} and then "
            f"DELETE them from {o.database_description(settings)}?"
        )

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)
