"""clean-embeddings: prune the embedding cache table ``embeddings`` (docs/jobs/clean-embeddings.md).

Replaces Dify's ``clean_embedding_cache_task``: rows created before now − ``PLAN_SANDBOX_CLEAN_DAY_SETTING``
days (30) go, for every tenant (no plan check; the table has no tenant). Fixes against Dify
(docs/jobs/clean-embeddings.md#differences-from-dify
[REIMPL]): one set-based ``DELETE … WHERE id = ANY(:ids)`` per batch instead of one DELETE per row, a
persistent ``(created_at, id)`` cursor walking forward on ``created_at_idx``, an adaptive batch (1000 to
start, Dify: 100), a naive-UTC cut-off (Dify: the worker's local time), a lock and a dry run.
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
