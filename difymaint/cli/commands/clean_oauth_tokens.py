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


@o.job_command
def clean_oauth_tokens(
    common: o.Common,
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
) -> int:
    from difymaint.cli.runner import execute
    from difymaint.core.context import Context
    from difymaint.core.settings import Settings
    from difymaint.jobs.clean_oauth_tokens import DEFAULT_BATCH_SIZE, CleanOAuthTokensParams, cutoff

    overrides: dict[str, object] = {"OAUTH_ACCESS_TOKEN_RETENTION_DAYS": days}

    def build(settings: Settings, ctx: Context) -> CleanOAuthTokensParams:
        return CleanOAuthTokensParams(
            retention_days=settings.OAUTH_ACCESS_TOKEN_RETENTION_DAYS,
            run=common.run_options(batch_size=batch_size or DEFAULT_BATCH_SIZE, sleep_ms=sleep_ms or 0),
        )

    def confirmation(settings: Settings, ctx: Context, params: Any) -> str:
        before = cutoff(ctx.clock.now(), params.retention_days)
        return (
            f"Delete OAuth access tokens revoked, or expired and never revoked, before "
            f"{before:%Y-%m-%d %H:%M:%S} UTC from {o.database_description(settings)}?"
        )

    return execute(NAME, common, overrides=overrides, build_params=build, confirmation=confirmation)
