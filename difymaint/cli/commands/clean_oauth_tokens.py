"""``difymaint clean-oauth-tokens``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from difymaint.cli import options as o
from difymaint.jobs import JOBS

NAME = "clean-oauth-tokens"


def register(app: typer.Typer) -> None:
    info = JOBS[NAME]
    app.command(
        NAME,
        help=f"{info.summary}\n\nReplaces Dify's {info.dify_task} beat job (schedule {info.schedule}, switch "
        f"{info.dify_switch}, on by default in Dify). Active tokens and tokens that expired or were revoked "
        "less than the retention ago stay. On a Dify version without the oauth_access_tokens table the run "
        "ends with a warning and exit 0.",
        short_help=info.summary,
    )(clean_oauth_tokens)


def clean_oauth_tokens(
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            metavar="DAYS",
            min=1,
            help="Delete tokens revoked, or expired and never revoked, more than this many days ago "
            "(OAUTH_ACCESS_TOKEN_RETENTION_DAYS, 30).",
            rich_help_panel=o.WINDOW,
        ),
    ] = None,
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
    from difymaint.jobs.clean_oauth_tokens import DEFAULT_BATCH_SIZE, CleanOAuthTokensParams, cutoff

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
    overrides: dict[str, object] = {"OAUTH_ACCESS_TOKEN_RETENTION_DAYS": days}

    def build(settings: Settings, ctx: Context) -> CleanOAuthTokensParams:
        return CleanOAuthTokensParams(
            retention_days=settings.OAUTH_ACCESS_TOKEN_RETENTION_DAYS,
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
        before = cutoff(ctx.clock.now(), params.retention_days)
        return (
            f"Delete OAuth access tokens revoked, or expired and never revoked, before "
            f"{before:%Y-%m-%d %H:%M:%S} UTC from {_where(settings)}?"
        )

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)


def _where(settings: Any) -> str:
    from difymaint.core.database import database_url

    return database_url(settings).render_as_string(hide_password=True)
