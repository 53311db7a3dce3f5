"""clean-workflow-logs: self-hosted workflow log retention for every tenant (docs/jobs/clean-workflow-logs.md).

One ``ParentScan`` walk over the ended runs in the window (no plan check), the workflow and app filters
added to the selection. Each batch is one transaction through the shared ``RunCleanup``: the runs' messages
with their child rows, the conversations that now have no message and were not updated since the cut-off,
then the run cascade. :class:`_LogCleaner` returns False for a batch that did not commit, so the walk re-reads
the same runs after a backoff (never skips them) and gives up after ``max_failures`` in a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.core.database import ids_in
from difymaint.core.errors import DifymaintError
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.cascades import RunCleanup, ended_runs
from difymaint.engine.manifest import OrphanManifest
from difymaint.engine.options import RunOptions
from difymaint.engine.parent_scan import ParentScan
from difymaint.engine.run import JobRun
from difymaint.engine.schema import check_schema
from difymaint.engine.shard import sharded
from difymaint.jobs.confirm import database_description

JOB = "clean-workflow-logs"
MAX_FAILURES = 3  # Dify's MAX_RETRIES


@dataclass(frozen=True)
class CleanWorkflowLogsParams:
    window: TimeWindow
    run: RunOptions = field(default_factory=RunOptions)
    workflow_ids: tuple[str, ...] = ()
    app_ids: tuple[str, ...] = ()
    orphan_manifest: Path | None = None
    max_failures: int = MAX_FAILURES
    backoff_s: float = 1.0  # first retry after this long, doubling per failure


def run(job: JobRun, params: CleanWorkflowLogsParams) -> None:
    ctx = job.ctx
    manifest_wanted = params.orphan_manifest is not None
    schema = check_schema(ctx.engine, RunCleanup.needs(with_messages=True, manifest=manifest_wanted), job=JOB)
    cleanup = RunCleanup(
        skip_tables=RunCleanup.skipped(schema),
        conversations_updated_before=params.window.end_before,
        collect_orphans=manifest_wanted,
    )
    tables = cleanup.summary_tables()
    job.use_tables(tables)
    cleanup.warn_preflight(job, schema)
    job.summary.details.update(
        workflow_filter=list(params.workflow_ids) or None,
        app_filter=list(params.app_ids) or None,
        alembic_version=schema.alembic_version,
    )
    scope = "all workflows" if not params.workflow_ids else f"{len(params.workflow_ids)} workflow(s)"
    ctx.reporter.info(f"{JOB}: ended runs {params.window.describe()}, every tenant, {scope}")
    manifest = OrphanManifest(params.orphan_manifest, job=JOB, dry_run=params.run.dry_run)
    cleaner = _LogCleaner(ctx, job, params, manifest, cleanup)
    job.remaining = cleaner.scan.remaining
    try:
        cleaner.scan.walk_all(cleaner.delete_batch)
    finally:
        manifest.close()
        job.summary.details["failed_batch_attempts"] = cleaner.failed_attempts
    if manifest.enabled:
        job.summary.details["orphan_manifest"] = manifest.details()
    job.settle_remaining()


class _LogCleaner:
    """Every tenant's ended runs, one global walk; a failed batch is retried on the same cursor."""

    def __init__(
        self,
        ctx: Context,
        job: JobRun,
        params: CleanWorkflowLogsParams,
        manifest: OrphanManifest,
        cleanup: RunCleanup,
    ) -> None:
        self.ctx, self.job, self.params, self.manifest, self.cleanup = ctx, job, params, manifest, cleanup
        self.failures = 0  # in a row
        self.failed_attempts = 0
        runs = t.workflow_runs
        dialect = ctx.engine.dialect.name
        selection = ended_runs(params.window)
        if params.workflow_ids:
            selection = sa.and_(selection, ids_in(runs.c.workflow_id, params.workflow_ids, dialect))
        if params.app_ids:
            selection = sa.and_(selection, ids_in(runs.c.app_id, params.app_ids, dialect))
        selection = sharded(selection, runs.c.app_id, params.run.shard)
        self.scan = ParentScan(job, runs, selection=selection, columns=(runs.c.id, runs.c.created_at))

    def delete_batch(self, rows: Sequence[Any], run_ids: list[str], passed: sa.ColumnElement[bool]) -> bool:
        """One batch; on failure wait and return False, so the walk re-reads the same runs (never skips)."""
        reason = "a statement or lock timeout rolled it back"
        try:
            with self.job.batch() as batch:
                with batch.transaction() as conn:
                    counts, orphans = self.cleanup.delete(conn, run_ids, dry_run=self.job.dry_run, runs_passed=passed)
                    # Durable before the commit that orphans them (docs/batching.md#orphan-manifest).
                    for source, found in orphans.items():
                        self.manifest.stage(found, source=source)
                batch.record(scanned=len(rows), affected=len(run_ids), rows=counts)
            committed = not batch.rolled_back
        except sa.exc.OperationalError as exc:
            committed, reason = False, _first_line(exc.orig if exc.orig is not None else exc)
        if committed:
            self.failures = 0
            self.manifest.commit()
            return True
        self.manifest.rollback()
        self.failures += 1
        self.failed_attempts += 1
        cursor = self.scan.cursor
        where = f"after {cursor.created_at:%Y-%m-%d %H:%M:%S} / {cursor.id}" if cursor else "first"
        if self.failures >= self.params.max_failures:
            raise DifymaintError(
                f"{JOB}: the {where} batch failed {self.failures} times in a row ({reason}); stopped without "
                "skipping it",
                hint="lower --batch-size, raise DIFYMAINT_STATEMENT_TIMEOUT / DIFYMAINT_LOCK_TIMEOUT, or look "
                "for locks held on the workflow tables; the next run resumes here",
            )
        delay = self.params.backoff_s * 2 ** (self.failures - 1)
        self.ctx.reporter.warning(
            f"{JOB}: batch failed ({reason}); retrying the same batch in {delay:g}s "
            f"({self.failures}/{self.params.max_failures})"
        )
        if not self.ctx.stop.requested:
            self.ctx.clock.sleep(delay)
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


Params = CleanWorkflowLogsParams


def confirmation(ctx: Context, params: CleanWorkflowLogsParams) -> str:
    scope = []
    if params.workflow_ids:
        scope.append(f"workflows {', '.join(params.workflow_ids)}")
    if params.app_ids:
        scope.append(f"apps {', '.join(params.app_ids)}")
    which = " of " + " and ".join(scope) if scope else " of EVERY workspace"
    return (
        f"Delete ended workflow runs and their chat messages {params.window.describe()}{which} "
        f"from {database_description(ctx.settings)}?"
    )
