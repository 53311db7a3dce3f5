"""``difymaint clean-workflow-logs``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from difymaint.cli import options as o
from difymaint.jobs import JOBS

NAME = "clean-workflow-logs"


def register(app: typer.Typer) -> None:
    info = JOBS[NAME]
    app.command(
        NAME,
        help=f"{info.summary}\n\nReplaces Dify's {info.dify_task} beat job (schedule {info.schedule}, switch "
        f"{info.dify_switch}). No plan check: every tenant's ended runs go. Per batch one transaction: the "
        "runs' messages with their child rows, the conversations left without messages and untouched since "
        "the cut-off (a conversation with newer messages stays), then the runs with node executions, "
        "offloads, app logs, pauses and trigger logs. A failed batch is retried on the same cursor (1 s, "
        "2 s); the third failure in a row fails the run.",
        short_help=info.summary,
    )(clean_workflow_logs)


@o.job_command
def clean_workflow_logs(
    common: o.Common,
    days: o.Days = None,
    workflow_ids: Annotated[
        str | None,
        typer.Option(
            "--workflow-ids",
            metavar="IDS",
            help="Comma-separated workflow ids to limit the run to (WORKFLOW_LOG_CLEANUP_SPECIFIC_WORKFLOW_IDS).",
        ),
    ] = None,
    app_ids: Annotated[
        str | None,
        typer.Option("--app-ids", metavar="IDS", help="Comma-separated app ids to limit the run to."),
    ] = None,
    orphan_manifest: o.OrphanManifestPath = None,
    batch_size: o.BatchSize = None,
    sleep_ms: o.SleepMs = None,
) -> int:
    from difymaint.cli.runner import execute
    from difymaint.core.context import Context
    from difymaint.core.settings import Settings
    from difymaint.core.window import resolve_window
    from difymaint.jobs.clean_workflow_logs import CleanWorkflowLogsParams

    overrides: dict[str, object] = {
        "WORKFLOW_LOG_RETENTION_DAYS": days,
        "WORKFLOW_LOG_CLEANUP_BATCH_SIZE": batch_size,
        "WORKFLOW_LOG_CLEANUP_SPECIFIC_WORKFLOW_IDS": workflow_ids,
    }

    def build(settings: Settings, ctx: Context) -> CleanWorkflowLogsParams:
        window = resolve_window(ctx.clock.now(), default_days=settings.WORKFLOW_LOG_RETENTION_DAYS)
        return CleanWorkflowLogsParams(
            window=window,
            run=common.run_options(batch_size=settings.WORKFLOW_LOG_CLEANUP_BATCH_SIZE, sleep_ms=sleep_ms or 0),
            workflow_ids=o.setting_id_filter(settings, "WORKFLOW_LOG_CLEANUP_SPECIFIC_WORKFLOW_IDS", "--workflow-ids"),
            app_ids=o.id_filter(app_ids, "--app-ids"),
            orphan_manifest=orphan_manifest,
        )

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str:
        scope = []
        if params.workflow_ids:
            scope.append(f"workflows {', '.join(params.workflow_ids)}")
        if params.app_ids:
            scope.append(f"apps {', '.join(params.app_ids)}")
        which = " of " + " and ".join(scope) if scope else " of EVERY workspace"
        return (
            f"Delete ended workflow runs and their chat messages {params.window.describe()}{which} "
            f"from {o.database_description(settings)}?"
        )

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)
