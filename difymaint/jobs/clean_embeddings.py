"""clean-embeddings: prune the embedding cache table ``embeddings`` (docs/jobs/clean-embeddings.md).

The table has no tenant and nothing references it, so the job is the window predicate handed to the
one-table sweep (:func:`difymaint.engine.single_table.sweep`), which supplies the cursor, the batches, the
workers and the set-based dry run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from difymaint.core.context import Context
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.engine.keyset import in_window
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema
from difymaint.engine.single_table import TableSweep, sweep
from difymaint.jobs.confirm import database_description


@dataclass(frozen=True)
class CleanEmbeddingsParams:
    window: TimeWindow
    run: RunOptions = field(default_factory=RunOptions)


def run(job: JobRun, params: CleanEmbeddingsParams) -> None:
    ctx, table = job.ctx, t.embeddings
    schema = check_schema(ctx.engine, [Need(table.name, ("id", "created_at"))], job=job.job)
    job.warn_missing_indexes([(table.name, "created_at")], "every batch scans the table")
    job.summary.details["alembic_version"] = schema.alembic_version
    ctx.reporter.info(f"{job.job}: embedding cache rows {params.window.describe()}")
    sweep(job, TableSweep(table, where=in_window(table.c.created_at, params.window)))


Params = CleanEmbeddingsParams


def confirmation(ctx: Context, params: CleanEmbeddingsParams) -> str:
    return f"Delete embedding cache rows {params.window.describe()} from {database_description(ctx.settings)}?"
