"""clean-oauth-tokens: prune ``oauth_access_tokens``, the device-flow tokens of Dify's CLI
(docs/jobs/clean-oauth-tokens.md).

The predicate (:func:`expired`) and an aware-UTC cut-off (:func:`cutoff`: the columns are ``timestamptz``,
docs/dify-reference.md#time-handling) handed to the one-table sweep, which re-checks the predicate in its
``DELETE``. The schema check comes first because the table only exists in newer Dify versions: without it the
run ends ``done`` with a warning, so one schedule works across upgrades.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from difymaint.core.clock import naive_utc
from difymaint.core.context import Context
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema
from difymaint.engine.single_table import TableSweep, sweep
from difymaint.jobs.confirm import database_description

TABLE = "oauth_access_tokens"


@dataclass(frozen=True)
class CleanOAuthTokensParams:
    retention_days: int = 30
    run: RunOptions = field(default_factory=RunOptions)


def cutoff(now: datetime, retention_days: int) -> datetime:
    """Aware UTC now − days (the columns are timestamptz)."""
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return aware.astimezone(UTC) - timedelta(days=retention_days)


def expired(table: sa.Table, before: datetime) -> sa.ColumnElement[bool]:
    """Dify's predicate: revoked before the cut-off, or never revoked and expired before it."""
    return sa.or_(
        table.c.revoked_at < before,
        sa.and_(table.c.revoked_at.is_(None), table.c.expires_at < before),
    )


def run(job: JobRun, params: CleanOAuthTokensParams) -> None:
    ctx = job.ctx
    schema = check_schema(
        ctx.engine, [Need(TABLE, ("id", "created_at", "expires_at", "revoked_at"), optional=True)], job=job.job
    )
    before = cutoff(ctx.clock.now(), params.retention_days)
    job.summary.window = TimeWindow(end_before=naive_utc(before), label=f"before-{params.retention_days}").as_dict()
    job.summary.details.update(
        cutoff=before.isoformat(),
        retention_days=params.retention_days,
        table_present=schema.has(TABLE),
        alembic_version=schema.alembic_version,
    )
    if not schema.has(TABLE):
        job.warn(*schema.warnings)  # "table oauth_access_tokens does not exist in this Dify version"
        job.summary.rows_remaining = 0
        return
    ctx.reporter.info(f"{job.job}: tokens revoked, or expired and never revoked, before {before:%Y-%m-%d %H:%M:%S} UTC")
    sweep(job, TableSweep(t.oauth_access_tokens, where=expired(t.oauth_access_tokens, before)))


Params = CleanOAuthTokensParams


def confirmation(ctx: Context, params: CleanOAuthTokensParams) -> str:
    before = cutoff(ctx.clock.now(), params.retention_days)
    return (
        f"Delete OAuth access tokens revoked, or expired and never revoked, before {before:%Y-%m-%d %H:%M:%S} UTC "
        f"from {database_description(ctx.settings)}?"
    )
