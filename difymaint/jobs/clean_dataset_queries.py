"""clean-dataset-queries: prune ``dataset_queries``, the log of every knowledge retrieval
(docs/jobs/clean-dataset-queries.md).

Replaces Dify's branch task ``clean_dataset_queries_task``: rows created before now − retention go, for every
workspace and source; retention = max(``CLEAN_DATASET_QUERIES_RETENTION_DAYS`` (60),
``PLAN_SANDBOX_CLEAN_DAY_SETTING`` (30)), because clean-unused-datasets reads these rows within the latter to
tell a knowledge base in use (a shorter retention would make every base look unused). Under Dify's own lock
``retention:clean_dataset_queries_task``. On the single-table sweep (engine/single_table.py): a persistent
``(created_at, id)`` cursor, one statement per batch on PostgreSQL, ``--workers`` slices, an exact dry run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from difymaint.core.clock import naive_utc
from difymaint.core.context import Context
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.engine.keyset import in_window
from difymaint.engine.run import JobRun, RunOptions
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
    job.warn_missing_indexes(
        [(table.name, "created_at")], "every batch scans the table (difymaint doctor prints the CREATE INDEX)"
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
    sweep(job, TableSweep(table, where=in_window(table.c.created_at, cut)))


def confirmation(ctx: Context, params: CleanDatasetQueriesParams) -> str:
    cut = window(ctx.clock.now(), params)
    return f"Delete dataset queries {cut.describe()} from {database_description(ctx.settings)}?"
