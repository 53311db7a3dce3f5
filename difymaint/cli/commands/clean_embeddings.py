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


def clean_embeddings(
    days: o.Days = None,
    start_from: o.StartFrom = None,
    end_before: o.EndBefore = None,
    from_days_ago: o.FromDaysAgo = None,
    to_days_ago: o.ToDaysAgo = None,
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
    from difymaint.jobs.clean_embeddings import DEFAULT_BATCH_SIZE, CleanEmbeddingsParams

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
    overrides: dict[str, object] = {"PLAN_SANDBOX_CLEAN_DAY_SETTING": days}

    def build(settings: Settings, ctx: Context) -> CleanEmbeddingsParams:
        if days is not None and (start_from or end_before or from_days_ago is not None or to_days_ago is not None):
            raise UsageError("--days cannot be combined with another window form")
        window = resolve_window(
            ctx.clock.now(),
            default_days=settings.PLAN_SANDBOX_CLEAN_DAY_SETTING,
            days=None,  # --days already became PLAN_SANDBOX_CLEAN_DAY_SETTING
            start_from=start_from,
            end_before=end_before,
            from_days_ago=from_days_ago,
            to_days_ago=to_days_ago,
        )
        return CleanEmbeddingsParams(
            window=window,
            run=RunOptions(
                dry_run=dry_run,
                batch_size=batch_size or DEFAULT_BATCH_SIZE,
                max_runtime_s=max_runtime,
                max_batches=max_batches,
                sleep_ms=sleep_ms or 0,  # Dify does not pause between batches
                use_lock=not no_lock,
                vacuum_analyze=vacuum_analyze,
            ),
        )

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str:
        return f"Delete embedding cache rows {params.window.describe()} from {_where(settings)}?"

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)


def _where(settings: Any) -> str:
    from difymaint.core.database import database_url

    return database_url(settings).render_as_string(hide_password=True)
