"""clean-workflow-logs: self-hosted workflow log retention for every tenant (spec §5.5).

Replaces Dify's ``clean_workflow_runlogs_precise``: ended runs older than ``WORKFLOW_LOG_RETENTION_DAYS``
go with their messages, no plan check. Fixes against Dify (spec §5.5 [REIMPL]):

* one transaction per batch: the runs' messages (with child rows), then the conversations that now have
  no message and were not updated since the cut-off, then the run cascade. Dify deletes whole
  conversations as soon as one message belongs to an expired run, orphaning their newer messages.
* a failed batch is retried on the same cursor with a backoff of seconds (1 s, 2 s), and the job fails
  after 3 failures in a row; Dify skips the failed batch and sleeps 5-10 minutes.
* a lock (``retention:clean_workflow_runlogs_precise``), a runtime batch size, and a warning when no index
  leads with ``messages.workflow_run_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.core.database import as_str, count_or_unknown, ids_in
from difymaint.core.errors import DifymaintError
from difymaint.core.keyset import Cursor, after, up_to
from difymaint.core.manifest import OrphanManifest
from difymaint.core.run import JobRun, RunOptions, job_run
from difymaint.core.schema import check_schema
from difymaint.core.summary import Outcome, RunSummary
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.cascades import delete_workflow_runs
from difymaint.jobs.clean_workflow_runs import (
    ended_runs,
    manifest_details,
    preflight_warnings,
    run_cascade_needs,
    skipped_tables,
    summary_tables,
)

JOB = "clean-workflow-logs"
LOCK_KEY = "retention:clean_workflow_runlogs_precise"  # Dify takes no lock; the spec's recommended name
MAX_FAILURES = 3  # Dify's MAX_RETRIES


@dataclass(frozen=True)
class CleanWorkflowLogsParams:
    window: TimeWindow
    run: RunOptions = field(default_factory=lambda: RunOptions(batch_size=100))
    workflow_ids: tuple[str, ...] = ()
    app_ids: tuple[str, ...] = ()
    orphan_manifest: Path | None = None
    max_failures: int = MAX_FAILURES
    backoff_s: float = 1.0  # first retry after this long, doubling per failure


class _Attempt(Enum):
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    EXHAUSTED = "exhausted"


def run(ctx: Context, params: CleanWorkflowLogsParams) -> RunSummary:
    schema = check_schema(
        ctx.engine, run_cascade_needs(with_messages=True, manifest=params.orphan_manifest is not None), job=JOB
    )
    skip = skipped_tables(schema)
    tables = summary_tables(skip, with_messages=True)
    with job_run(ctx, JOB, lock_key=LOCK_KEY, options=params.run, window=params.window, tables=tables) as job:
        preflight_warnings(ctx, job, schema, with_messages=True)
        job.summary.details.update(
            workflow_filter=list(params.workflow_ids) or None,
            app_filter=list(params.app_ids) or None,
            alembic_version=schema.alembic_version,
        )
        scope = "all workflows" if not params.workflow_ids else f"{len(params.workflow_ids)} workflow(s)"
        ctx.reporter.info(f"{JOB}: ended runs {params.window.describe()}, every tenant, {scope}")
        manifest = OrphanManifest(params.orphan_manifest, job=JOB, dry_run=params.run.dry_run)
        loop = _Loop(ctx, job, params, manifest, skip)
        try:
            loop.run()
        finally:
            manifest.close()
            job.summary.details["failed_batch_attempts"] = loop.failed_attempts
        if manifest.enabled:
            job.summary.details["orphan_manifest"] = manifest_details(manifest, params.orphan_manifest, loop.orphans)
        if job.summary.outcome in (Outcome.PARTIAL, Outcome.INTERRUPTED):
            loop.estimate_remaining()
        else:
            job.summary.rows_remaining = 0
    return job.summary


class _Loop:
    def __init__(
        self, ctx: Context, job: JobRun, params: CleanWorkflowLogsParams, manifest: OrphanManifest, skip: set[str]
    ) -> None:
        self.ctx, self.job, self.params, self.manifest, self.skip = ctx, job, params, manifest, skip
        self.cursor: Cursor | None = None
        self.failed_attempts = 0
        self.orphans: dict[str, int] = {}

    def _selection(self, dialect: str) -> sa.ColumnElement[bool]:
        runs = t.workflow_runs
        where = ended_runs(self.params.window)
        if self.params.workflow_ids:
            where = sa.and_(where, ids_in(runs.c.workflow_id, self.params.workflow_ids, dialect))
        if self.params.app_ids:
            where = sa.and_(where, ids_in(runs.c.app_id, self.params.app_ids, dialect))
        return where

    def run(self) -> None:
        failures = 0
        while self.job.keep_going():
            reason = "a statement or lock timeout rolled it back"
            try:
                attempt = self._attempt()
            except sa.exc.OperationalError as exc:
                attempt = _Attempt.ROLLED_BACK
                reason = _first_line(exc.orig if exc.orig is not None else exc)
            if attempt is _Attempt.EXHAUSTED:
                return
            if attempt is _Attempt.COMMITTED:
                failures = 0
                continue
            # Never skip a batch: the cursor did not move, so the retry re-reads the same runs.
            failures += 1
            self.failed_attempts += 1
            where = f"after {self.cursor.created_at:%Y-%m-%d %H:%M:%S} / {self.cursor.id}" if self.cursor else "first"
            if failures >= self.params.max_failures:
                raise DifymaintError(
                    f"{JOB}: the {where} batch failed {failures} times in a row ({reason}); stopped without "
                    "skipping it",
                    hint="lower --batch-size, raise DIFYMAINT_STATEMENT_TIMEOUT / DIFYMAINT_LOCK_TIMEOUT, or look "
                    "for locks held on the workflow tables; the next run resumes here",
                )
            delay = self.params.backoff_s * 2 ** (failures - 1)
            self.ctx.reporter.warning(
                f"{JOB}: batch failed ({reason}); retrying the same batch in {delay:g}s "
                f"({failures}/{self.params.max_failures})"
            )
            if not self.ctx.stop.requested:
                self.ctx.clock.sleep(delay)

    def _attempt(self) -> _Attempt:
        runs = t.workflow_runs
        with self.ctx.engine.connect() as conn:
            selection = self._selection(conn.dialect.name)
            rows = conn.execute(
                sa.select(runs.c.id, runs.c.created_at)
                .where(selection, after(runs.c.created_at, runs.c.id, self.cursor))
                .order_by(runs.c.created_at, runs.c.id)
                .limit(self.job.batch_size)
            ).all()
        if not rows:
            return _Attempt.EXHAUSTED
        new_cursor = Cursor.of(rows[-1])
        run_ids = [as_str(row.id) for row in rows]
        passed = sa.and_(selection, up_to(runs.c.created_at, runs.c.id, new_cursor))
        orphans: dict[str, list[dict[str, Any]]] = {}
        with self.job.batch() as batch:
            with batch.transaction() as conn:
                counts, orphans = delete_workflow_runs(
                    conn,
                    run_ids,
                    dry_run=self.job.dry_run,
                    skip_tables=self.skip,
                    with_messages=True,
                    conversations_updated_before=self.params.window.end_before,
                    runs_passed=passed,
                    collect_orphans=self.manifest.enabled,
                )
            batch.record(scanned=len(rows), affected=len(run_ids), rows=counts)
        if batch.rolled_back:
            return _Attempt.ROLLED_BACK
        self.cursor = new_cursor
        for source, found in orphans.items():
            self.manifest.write(found, source=source)
            self.orphans[source] = self.orphans.get(source, 0) + len(found)
        return _Attempt.COMMITTED

    def estimate_remaining(self) -> None:
        runs = t.workflow_runs
        with self.ctx.engine.connect() as conn:
            where = sa.and_(self._selection(conn.dialect.name), after(runs.c.created_at, runs.c.id, self.cursor))
            self.job.summary.rows_remaining = count_or_unknown(
                conn, sa.select(sa.func.count()).select_from(runs).where(where)
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
