"""``difymaint clean-unused-datasets``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from difymaint.cli import options as o
from difymaint.jobs import JOBS

NAME = "clean-unused-datasets"
DEFAULT_BATCH_SIZE = 50  # Dify's page size


def register(app: typer.Typer) -> None:
    info = JOBS[NAME]
    app.command(
        NAME,
        help=f"{info.summary}\n\nReplaces Dify's {info.dify_task} beat job (schedule {info.schedule}, switch "
        f"{info.dify_switch}). Pass 'all': every workspace, datasets unused for PLAN_SANDBOX_CLEAN_DAY_SETTING "
        "(30) days, with one dataset_auto_disable_logs row per document (notify-cleaned-documents mails them). "
        "Pass 'sandbox': sandbox workspaces, PLAN_PRO_CLEAN_DAY_SETTING (7) days, no logs. With "
        "BILLING_ENABLED=false EVERY workspace is sandbox (Dify's behaviour). Documents are disabled, never "
        "deleted; the vector index removal goes to Dify's workers (--enqueue-index-removal) or to a work list "
        "(--emit-index-removals), one of which a real run needs.",
        short_help=info.summary,
    )(clean_unused_datasets)


@o.job_command
def clean_unused_datasets(
    common: o.Common,
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            metavar="DAYS",
            min=1,
            help="Pass 'all': unused for this many days (PLAN_SANDBOX_CLEAN_DAY_SETTING, 30).",
            rich_help_panel=o.WINDOW,
        ),
    ] = None,
    sandbox_days: Annotated[
        int | None,
        typer.Option(
            "--sandbox-days",
            metavar="DAYS",
            min=1,
            help="Pass 'sandbox': unused for this many days (PLAN_PRO_CLEAN_DAY_SETTING, 7).",
            rich_help_panel=o.WINDOW,
        ),
    ] = None,
    passes: Annotated[
        str,
        typer.Option(
            "--pass",
            metavar="both|all|sandbox",
            help="all: every workspace, logged; sandbox: sandbox workspaces, shorter, unlogged; both (Dify).",
        ),
    ] = "both",
    enqueue_index_removal: Annotated[
        bool,
        typer.Option(
            "--enqueue-index-removal",
            help="Send Dify's Celery task deal_dataset_vector_index_task(dataset_id, 'remove') to queue "
            "'dataset' on CELERY_BROKER_URL before disabling each batch.",
        ),
    ] = False,
    emit_index_removals: Annotated[
        Path | None,
        typer.Option(
            "--emit-index-removals",
            metavar="PATH",
            help="Append one JSON line per dataset whose index must be removed (dataset_id, tenant_id, "
            "indexing_technique, doc_form, …), written before each batch is disabled.",
        ),
    ] = None,
    broker_url: Annotated[
        str | None,
        typer.Option(
            "--broker-url",
            metavar="URL",
            help="Celery broker URL; overrides CELERY_BROKER_URL.",
            rich_help_panel=o.CONNECTION,
        ),
    ] = None,
    tenant_ids: o.TenantIds = None,
    batch_size: o.BatchSize = None,
    sleep_ms: o.SleepMs = None,
) -> int:
    from difymaint.cli.runner import execute
    from difymaint.core.context import Context
    from difymaint.core.settings import Settings
    from difymaint.jobs.clean_unused_datasets import CleanUnusedDatasetsParams, check_handover, plan_passes

    overrides: dict[str, object] = {
        "PLAN_SANDBOX_CLEAN_DAY_SETTING": days,
        "PLAN_PRO_CLEAN_DAY_SETTING": sandbox_days,
        "CELERY_BROKER_URL": broker_url,
    }

    def build(settings: Settings, ctx: Context) -> CleanUnusedDatasetsParams:
        params = CleanUnusedDatasetsParams(
            all_days=settings.PLAN_SANDBOX_CLEAN_DAY_SETTING,
            sandbox_days=settings.PLAN_PRO_CLEAN_DAY_SETTING,
            passes=passes,
            run=common.run_options(batch_size=batch_size or DEFAULT_BATCH_SIZE, sleep_ms=sleep_ms or 0),
            tenant_ids=o.id_filter(tenant_ids, "--tenant-ids"),
            enqueue_index_removal=enqueue_index_removal,
            emit_index_removals=emit_index_removals,
        )
        plan_passes(params, ctx.clock.now())  # a bad --pass is a usage error before any question
        check_handover(params, settings)
        return params

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str:
        scope = f"workspaces {', '.join(params.tenant_ids)}" if params.tenant_ids else "all workspaces"
        parts = []
        for one_pass in plan_passes(params, ctx.clock.now()):
            if one_pass.sandbox_only:
                if settings.BILLING_ENABLED or settings.DIFYMAINT_PLAN_FILE:
                    who = f"sandbox workspaces among {scope}"
                else:
                    ctx.reporter.warning(
                        "BILLING_ENABLED is false: every workspace is treated as sandbox, so the sandbox pass "
                        f"disables knowledge bases of {scope.upper() if not params.tenant_ids else scope} unused "
                        f"for {one_pass.days} days, without logs or mail (Dify's behaviour; --pass all avoids it)"
                    )
                    who = f"{scope} (billing off: all count as sandbox)"
                parts.append(f"unused for {one_pass.days} days in {who}")
            else:
                parts.append(f"unused for {one_pass.days} days in {scope}")
        return (
            f"Disable the documents of knowledge bases {' and '.join(parts)} and remove their vector indexes, "
            f"in {o.database_description(settings)}?"
        )

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)
