"""``difymaint clean-embeddings``."""

from __future__ import annotations

from typing import Any

import typer

from difymaint.cli import options as o
from difymaint.jobs import JOBS

NAME = "clean-embeddings"


def register(app: typer.Typer) -> None:
    info = JOBS[NAME]
    app.command(
        NAME,
        help=f"{info.summary}\n\nReplaces Dify's {info.dify_task} beat job (schedule {info.schedule}, switch "
        f"{info.dify_switch}). Global, no plan check: the cache has no tenant. Each batch deletes a page of "
        "ids in one statement and commits (Dify: one DELETE per row); Dify recomputes a missing embedding "
        "on its next use.",
        short_help=info.summary,
    )(clean_embeddings)


@o.job_command
def clean_embeddings(
    common: o.Common,
    days: o.Days = None,
    start_from: o.StartFrom = None,
    end_before: o.EndBefore = None,
    from_days_ago: o.FromDaysAgo = None,
    to_days_ago: o.ToDaysAgo = None,
    batch_size: o.BatchSize = None,
    sleep_ms: o.SleepMs = None,
) -> int:
    from difymaint.cli.runner import execute
    from difymaint.core.context import Context
    from difymaint.core.settings import Settings
    from difymaint.jobs.clean_embeddings import DEFAULT_BATCH_SIZE, CleanEmbeddingsParams

    overrides: dict[str, object] = {"PLAN_SANDBOX_CLEAN_DAY_SETTING": days}

    def build(settings: Settings, ctx: Context) -> CleanEmbeddingsParams:
        window = o.cli_window(
            ctx.clock.now(),
            default_days=settings.PLAN_SANDBOX_CLEAN_DAY_SETTING,
            days=days,
            start_from=start_from,
            end_before=end_before,
            from_days_ago=from_days_ago,
            to_days_ago=to_days_ago,
        )
        return CleanEmbeddingsParams(
            window=window,
            run=common.run_options(batch_size=batch_size or DEFAULT_BATCH_SIZE, sleep_ms=sleep_ms or 0),
        )

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str:
        return f"Delete embedding cache rows {params.window.describe()} from {o.database_description(settings)}?"

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)
