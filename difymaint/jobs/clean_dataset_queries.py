"""clean-dataset-queries: prune ``dataset_queries``, the log of every knowledge retrieval
(docs/jobs/clean-dataset-queries.md).

The retention is clamped to ``PLAN_SANDBOX_CLEAN_DAY_SETTING`` (:attr:`CleanDatasetQueriesParams.effective_days`)
because clean-unused-datasets reads these rows to tell a knowledge base in use. With an index on
``created_at`` the one-table sweep does the work (keyset, ``--workers``); without one (released Dify) a keyset
page is a full scan and sort, so on PostgreSQL 14+ :func:`walk_blocks` passes over the heap once instead, a
range of blocks per batch (TID range scans). MySQL/MariaDB have no row address to range over: there the
sweep runs with or without the index. The job takes Dify's own lock key (the registry's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from difymaint.core.clock import naive_utc
from difymaint.core.context import Context
from difymaint.core.database import delete_or_count, is_postgres
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.engine.keyset import in_window
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema
from difymaint.engine.single_table import TableSweep, sweep
from difymaint.jobs.confirm import database_description

FLOOR_SETTING = "PLAN_SANDBOX_CLEAN_DAY_SETTING"


@dataclass(frozen=True)
class CleanDatasetQueriesParams:
    retention_days: int = 60
    floor_days: int = 30  # PLAN_SANDBOX_CLEAN_DAY_SETTING: the retention is never shorter
    run: RunOptions = field(default_factory=RunOptions)

    @property
    def effective_days(self) -> int:
        return max(self.retention_days, self.floor_days)

    @property
    def clamped(self) -> bool:
        return self.retention_days < self.floor_days


Params = CleanDatasetQueriesParams


def window(now: datetime, params: CleanDatasetQueriesParams) -> TimeWindow:
    """Naive UTC now − the effective retention (the column is ``timestamp``)."""
    days = params.effective_days
    return TimeWindow(end_before=naive_utc(now) - timedelta(days=days), label=f"before-{days}")


def run(job: JobRun, params: CleanDatasetQueriesParams) -> None:
    ctx, table = job.ctx, t.dataset_queries
    schema = check_schema(ctx.engine, [Need(table.name, ("id", "created_at"))], job=job.job)
    blocks = is_postgres(ctx.engine) and (ctx.engine.dialect.server_version_info or (0,)) >= (14,)
    unindexed = job.warn_missing_indexes(
        [(table.name, "created_at")],
        f"{'the run walks the table by blocks' if blocks else 'every batch scans the table'} "
        "(difymaint doctor prints the statement that adds the index)",
    )
    if params.clamped:
        job.warn(
            f"CLEAN_DATASET_QUERIES_RETENTION_DAYS ({params.retention_days}) < {FLOOR_SETTING} "
            f"({params.floor_days}); clamping to {params.floor_days} days, since clean-unused-datasets reads "
            "these rows within that many days"
        )
    cut = window(ctx.clock.now(), params)
    job.summary.window = cut.as_dict()
    job.summary.details.update(
        retention_days=params.effective_days,
        cutoff=cut.end_before.isoformat(),
        alembic_version=schema.alembic_version,
    )
    ctx.reporter.info(f"{job.job}: dataset queries {cut.describe()}, every workspace")
    where = in_window(table.c.created_at, cut)
    if unindexed and blocks:
        walk_blocks(job, table, where)
    else:
        sweep(job, TableSweep(table, where=where))


def _blocks(start: int, end: int) -> sa.ColumnElement[bool]:
    """Rows stored in heap blocks ``[start, end)`` (PostgreSQL 14+ answers it with a TID range scan)."""
    ctid: sa.ColumnElement[str] = sa.literal_column("ctid")
    return sa.and_(ctid >= sa.cast(sa.literal(f"({start},0)"), _TID), ctid < sa.cast(sa.literal(f"({end},0)"), _TID))


class _TID(sa.types.UserDefinedType[str]):
    """PostgreSQL's ``tid`` (a row's physical address), only ever cast to."""

    cache_ok = True

    def get_col_spec(self, **_: object) -> str:
        return "tid"


def walk_blocks(job: JobRun, table: sa.Table, where: sa.ColumnElement[bool]) -> None:
    """Delete (or count) ``where``'s rows in one pass over the heap, a range of blocks per batch.

    The batch size counts blocks here (each holds some 60 queries), adapted toward the target batch time as
    rows are elsewhere. Rows written during the run land in free space or past the end: they are younger
    than the cut-off, so a block passed once needs no second look."""
    engine = job.ctx.engine
    job.one_connection("on the block walk")
    with engine.connect() as conn:
        size = conn.execute(sa.text("SELECT pg_relation_size(:t)"), {"t": table.name}).scalar_one()
        block = int(conn.execute(sa.text("SELECT current_setting('block_size')::int")).scalar_one())
    blocks = int(size) // block + 1
    job.summary.details["block_walk"] = {"blocks": blocks}
    position = 0

    def remaining() -> int:
        with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(table).where(where, _blocks(position, 2**32 - 1))
            return int(conn.execute(query).scalar_one())

    job.remaining = remaining
    if job.dry_run and job.options.max_batches is None:  # unbounded: one count, as the sweep's dry run
        with job.batch() as batch:
            with batch.transaction() as conn:
                found = delete_or_count(conn, table, where, dry_run=True)
            batch.record(scanned=found, affected=found, rows={table.name: found})
        position = blocks if not batch.rolled_back else 0
    while position < blocks and job.keep_going():
        end = position + job.batch_size
        with job.batch() as batch:
            with batch.transaction() as conn:
                affected = delete_or_count(conn, table, sa.and_(_blocks(position, end), where), dry_run=job.dry_run)
            # "scanned" is the blocks read: the size adapts to the time a range of blocks takes.
            batch.record(scanned=end - position, affected=affected, rows={table.name: affected})
        if not batch.rolled_back:
            position = end
    job.settle_remaining()


def confirmation(ctx: Context, params: CleanDatasetQueriesParams) -> str:
    cut = window(ctx.clock.now(), params)
    return f"Delete dataset queries {cut.describe()} from {database_description(ctx.settings)}?"
