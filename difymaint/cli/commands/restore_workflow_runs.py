"""``difymaint restore-workflow-runs``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from difymaint.cli import options as o
from difymaint.cli.commands.archive_workflow_runs import ArchiveDir
from difymaint.jobs import JOBS

NAME = "restore-workflow-runs"
DEFAULT_LIMIT = 100


def register(app: typer.Typer) -> None:
    info = JOBS[NAME]
    app.command(
        NAME,
        help=f"{info.summary}\n\nDify's flask restore-workflow-runs. The runs come from workflow_archive_logs: "
        "--run-id, or those archived with a run created in --start-from .. --end-before (--tenant-ids, --limit). "
        "Every table file of a bundle is checked against its manifest (MD5, size, row count) before anything is "
        "inserted; then, in one transaction per run, the rows whose id is missing are inserted (restoring twice "
        "is harmless) and the run's workflow_archive_logs rows are removed, as Dify does (--keep-archive-logs "
        "keeps them). A run that fails does not stop the others; the command then exits 1 and the --json "
        "summary lists the failures. Reads archives of archive-workflow-runs and of Dify.",
        short_help=info.summary,
    )(restore_workflow_runs)


@o.job_command
def restore_workflow_runs(
    common: o.Common,
    run_id: Annotated[
        list[str] | None,
        typer.Option("--run-id", metavar="ID", help="A run to restore; repeat the option or separate ids by commas."),
    ] = None,
    start_from: o.StartFrom = None,
    end_before: o.EndBefore = None,
    tenant_ids: o.TenantIds = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", metavar="N", min=1, help=f"Restore at most N runs of the window (default {DEFAULT_LIMIT})."
        ),
    ] = None,
    keep_archive_logs: Annotated[
        bool,
        typer.Option(
            "--keep-archive-logs",
            help="Keep the runs' workflow_archive_logs rows (Dify removes them after a restore).",
        ),
    ] = False,
    archive_dir: ArchiveDir = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            "-n",
            help="Read and verify the archives and count the rows a restore would insert, per table; insert nothing.",
            rich_help_panel=o.RUN,
        ),
    ] = False,
) -> int:
    from difymaint.cli.runner import execute
    from difymaint.core.context import Context
    from difymaint.core.errors import UsageError
    from difymaint.core.settings import Settings
    from difymaint.core.window import resolve_window
    from difymaint.jobs.restore_workflow_runs import RestoreWorkflowRunsParams

    overrides: dict[str, object] = {"DIFYMAINT_ARCHIVE_DIR": archive_dir}

    def build(settings: Settings, ctx: Context) -> RestoreWorkflowRunsParams:
        run_ids = o.id_filter(run_id, "--run-id")
        window = None
        if start_from is not None or end_before is not None:
            if run_ids:
                raise UsageError("--run-id cannot be combined with --start-from/--end-before")
            window = resolve_window(ctx.clock.now(), default_days=1, start_from=start_from, end_before=end_before)
        elif not run_ids:
            raise UsageError(
                "nothing to restore: give --run-id, or --start-from/--end-before",
                hint="e.g. --run-id <id>, or --start-from 2026-01-01 --end-before 2026-02-01",
            )
        return RestoreWorkflowRunsParams(
            run_ids=run_ids,
            window=window,
            tenant_ids=o.id_filter(tenant_ids, "--tenant-ids"),
            limit=limit or DEFAULT_LIMIT,
            run=common.run_options(batch_size=min(limit or DEFAULT_LIMIT, DEFAULT_LIMIT)),
            archive_dir=settings.DIFYMAINT_ARCHIVE_DIR,
            keep_archive_logs=keep_archive_logs,
        )

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str:
        if params.run_ids:
            what = f"{len(params.run_ids)} archived workflow run(s)"
        else:
            what = f"up to {params.limit} archived workflow runs {params.window.describe()}"
        return f"Restore {what} into {o.database_description(settings)}?"

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)
