"""archive-workflow-runs: write ended workflow runs as Dify's ``archive.v1.0.zip`` bundles, and optionally
delete them (what it selects and why: docs/jobs/archive-workflow-runs.md).

:class:`_Archiver` walks ``workflow_runs`` on a ``(created_at, id)`` cursor, reading only ``id, tenant_id,
created_at``, and filters each page (already archived, not paid, ``--limit``) before it archives run by run
inside the batch's transaction. The order within a run is what the shape protects: read the rows of the
archived tables from the live schema (reflected, so every column is kept), build the bundle
(:mod:`difymaint.dify.archive`), write the object, and only then insert the ``workflow_archive_logs`` rows, so
a crash leaves at worst an unreferenced object, never a log row without its archive. With
``--delete-after-archive`` the run cascade deletes in the same transaction, and :class:`ArchiveChanged` rolls
the batch back when a table holds more rows than were archived. A dry run counts the same predicates and
needs no destination.

Offload ``upload_files`` and pause state objects are never listed as orphans: the archive still points at them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.context import Context
from difymaint.core.database import as_str, count_or_unknown, ids_in
from difymaint.core.errors import DifymaintError
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.archive import (
    ARCHIVED_RUN_TYPES,
    ARCHIVED_TABLES,
    archive_key,
    archive_log_rows,
    build_bundle,
    ordered,
    reflect_tables,
    run_predicates,
)
from difymaint.dify.billing import PAID_PLANS, PlanLookup, plan_lookup
from difymaint.dify.cascades import ENDED_RUN_STATUSES, workflow_run_cascade
from difymaint.dify.storage import Storage, archive_store
from difymaint.engine.keyset import Cursor, after, in_window
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, SchemaReport, check_schema
from difymaint.jobs.confirm import database_description, plan_aware, tenant_scope

JOB = "archive-workflow-runs"
ARCHIVE_LOG_COLUMNS = tuple(column.name for column in t.workflow_archive_logs.columns)


@dataclass(frozen=True)
class ArchiveWorkflowRunsParams:
    window: TimeWindow
    run: RunOptions = field(default_factory=RunOptions)
    tenant_ids: tuple[str, ...] = ()  # empty = every (paid) workspace
    limit: int | None = None  # at most this many runs archived
    delete_after_archive: bool = False
    archive_dir: Path | None = None  # None: DIFYMAINT_ARCHIVE_DIR, else Dify's ARCHIVE_STORAGE_* S3


class ArchiveChanged(DifymaintError):
    """A run gained rows between being archived and being deleted; the batch was rolled back."""

    reference = "archive-changed"


def needs() -> list[Need]:
    return [
        Need(
            "workflow_runs",
            (
                "id",
                "tenant_id",
                "app_id",
                "workflow_id",
                "type",
                "triggered_from",
                "version",
                "status",
                "error",
                "elapsed_time",
                "total_tokens",
                "created_by_role",
                "created_by",
                "created_at",
                "finished_at",
            ),
        ),
        Need("workflow_node_executions", ("id", "workflow_run_id")),
        Need("workflow_app_logs", ("id", "workflow_run_id", "created_from", "created_at")),
        Need("workflow_archive_logs", ARCHIVE_LOG_COLUMNS),
        # Absent in older Dify versions: their table files are empty.
        Need("workflow_node_execution_offload", ("node_execution_id",), optional=True),
        Need("workflow_pauses", ("id", "workflow_run_id"), optional=True),
        Need("workflow_pause_reasons", ("pause_id",), optional=True),
        Need("workflow_trigger_logs", ("workflow_run_id", "trigger_metadata"), optional=True),
    ]


def run(job: JobRun, params: ArchiveWorkflowRunsParams) -> None:
    ctx = job.ctx
    schema = check_schema(ctx.engine, needs(), job=JOB)
    skip = set(schema.missing_optional)
    if "workflow_pauses" in skip:
        skip.add("workflow_pause_reasons")  # reasons are found through their pauses
    present = [name for name in ARCHIVED_TABLES if name not in skip]
    job.use_tables([*present, "workflow_archive_logs"])
    # A dry run needs no destination; a real one checks it before the first run is read (Dify's head_bucket).
    store = None if params.run.dry_run else archive_store(ctx.settings, params.archive_dir)
    try:
        if store is not None:
            store.check()
        _archive(job, params, schema, present, skip, store)
    finally:
        if store is not None:
            store.close()


def _archive(
    job: JobRun,
    params: ArchiveWorkflowRunsParams,
    schema: SchemaReport,
    present: list[str],
    skip: set[str],
    store: Storage | None,
) -> None:
    ctx = job.ctx
    job.warn(*schema.warnings)
    lookup = plan_lookup(ctx.settings, ctx.clock, ctx.redis, ctx.keys)
    destination = store.description if store is not None else "nowhere (dry run)"
    paid = "every workspace counts as paid (billing off)" if not lookup.billing_enabled else lookup.description
    ctx.reporter.info(f"{JOB}: ended runs {params.window.describe()} to {destination}; {paid}")
    archiver = _Archiver(ctx, job, params, lookup, store, reflect_tables(ctx.engine, present), skip)
    job.remaining = archiver.estimate_remaining
    archiver.scan()
    job.summary.details.update(
        destination=destination,
        tenant_filter=list(params.tenant_ids) or None,
        limit=params.limit,
        limit_reached=archiver.limit_reached,
        runs_archived=archiver.archived,
        runs_skipped_already_archived=archiver.skipped_archived,
        runs_skipped_not_paid=archiver.skipped_unpaid,
        bytes_written=archiver.bytes_written,
        delete_after_archive=params.delete_after_archive,
        alembic_version=schema.alembic_version,
        **lookup.stats(),
    )
    if params.delete_after_archive:
        job.summary.details["deleted"] = archiver.deleted
    job.settle_remaining()


class _Archiver:
    def __init__(
        self,
        ctx: Context,
        job: JobRun,
        params: ArchiveWorkflowRunsParams,
        lookup: PlanLookup,
        store: Storage | None,
        live: dict[str, sa.Table],
        skip: set[str],
    ) -> None:
        self.ctx, self.job, self.params, self.lookup, self.store = ctx, job, params, lookup, store
        self.live, self.skip = live, skip
        self.cursor: Cursor | None = None
        self.archived = 0
        self.skipped_archived = 0
        self.skipped_unpaid = 0
        self.bytes_written = 0
        self.limit_reached = False
        self.deleted: dict[str, int] = {}

    def _candidates(self) -> sa.ColumnElement[bool]:
        """Dify's get_runs_batch_by_time_range: in the window, ended, archivable type, the tenant filter."""
        runs = t.workflow_runs
        condition = sa.and_(
            in_window(runs.c.created_at, self.params.window),
            runs.c.status.in_(ENDED_RUN_STATUSES),
            runs.c.type.in_(ARCHIVED_RUN_TYPES),
        )
        if self.params.tenant_ids:
            condition = sa.and_(condition, runs.c.tenant_id.in_(self.params.tenant_ids))
        return condition

    def _paid(self, tenant_ids: set[str]) -> set[str]:
        if not self.lookup.billing_enabled:
            return tenant_ids  # Dify: billing off → every tenant is paid
        return {tid for tid, plan in self.lookup.plans(tenant_ids).items() if plan in PAID_PLANS}

    def scan(self) -> None:
        runs, logs = t.workflow_runs, t.workflow_archive_logs
        while self.job.keep_going():
            if self.params.limit is not None and self.archived >= self.params.limit:
                self.limit_reached = True
                self.ctx.reporter.info(f"{JOB}: reached --limit {self.params.limit}")
                return
            with self.ctx.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(runs.c.id, runs.c.tenant_id, runs.c.created_at)
                    .where(self._candidates(), after(runs.c.created_at, runs.c.id, self.cursor))
                    .order_by(runs.c.created_at, runs.c.id)
                    .limit(self.job.batch_size)
                ).all()
                if not rows:
                    return
                ids = [as_str(row.id) for row in rows]
                archived = {
                    as_str(value)
                    for value in conn.execute(
                        sa.select(logs.c.workflow_run_id)
                        .where(ids_in(logs.c.workflow_run_id, ids, conn.dialect.name))
                        .distinct()
                    ).scalars()
                }
            fresh = [row for row in rows if as_str(row.id) not in archived]
            paid = self._paid({as_str(row.tenant_id) for row in fresh})
            chosen = [as_str(row.id) for row in fresh if as_str(row.tenant_id) in paid]
            if self.params.limit is not None:
                chosen = chosen[: self.params.limit - self.archived]
            if self._archive_batch(len(rows), chosen):
                self.cursor = Cursor.of(rows[-1])
                self.skipped_archived += len(rows) - len(fresh)
                self.skipped_unpaid += len(fresh) - sum(1 for row in fresh if as_str(row.tenant_id) in paid)

    def _archive_batch(self, scanned: int, run_ids: list[str]) -> bool:
        """One transaction: every run's bundle, then its log rows, then (optionally) the cascade. False when it
        was rolled back (timeout) and must be retried from the same cursor."""
        counts = dict.fromkeys(self.job.summary.tables, 0)
        deleted: dict[str, int] = {}
        done: list[str] = []
        written = 0
        with self.job.batch() as batch:
            if run_ids:
                with batch.transaction() as conn:
                    for run_id in run_ids:
                        one, size = self._archive_run(conn, run_id)
                        if one is None:
                            continue  # gone since the page was read (another cleaner)
                        done.append(run_id)
                        written += size
                        for name, rows in one.items():
                            counts[name] += rows
                    if self.params.delete_after_archive and done:
                        deleted = workflow_run_cascade(conn, done, dry_run=self.job.dry_run, skip_tables=self.skip)
                        grown = {name: n for name, n in deleted.items() if n > counts.get(name, 0)}
                        if grown:
                            raise ArchiveChanged(
                                f"{JOB}: rows were added to {', '.join(sorted(grown))} while the batch was archived; "
                                "the batch was rolled back and nothing was deleted",
                                hint="run the job again",
                            )
            batch.record(scanned=scanned, affected=len(done), rows=counts)
        if batch.rolled_back:
            return False
        self.archived += len(done)
        self.bytes_written += written
        for name, rows in deleted.items():
            self.deleted[name] = self.deleted.get(name, 0) + rows
        return True

    def _archive_run(self, conn: Connection, run_id: str) -> tuple[dict[str, int] | None, int]:
        """Archive one run (or count it, dry run): per-table rows and the bundle size; None when it is gone."""
        where = run_predicates(self.live, run_id)
        if self.job.dry_run:
            counts = {
                name: int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where[name])).scalar_one())
                for name, table in self.live.items()
            }
            if not counts["workflow_runs"]:
                return None, 0
            counts["workflow_archive_logs"] = max(1, counts["workflow_app_logs"])
            return counts, 0
        rows: dict[str, list[dict[str, Any]]] = {
            name: [
                dict(row._mapping)
                for row in conn.execute(sa.select(table).where(where[name]).order_by(*ordered(table)))
            ]
            for name, table in self.live.items()
        }
        if not rows["workflow_runs"]:
            return None, 0
        run = rows["workflow_runs"][0]
        archived_at = self.ctx.clock.now()
        bundle = build_bundle(run, rows, archived_at)
        assert self.store is not None
        # The object first: a crash after this leaves an unreferenced object, never a log without its archive.
        self.store.put(archive_key(run["tenant_id"], run["app_id"], run["created_at"], run_id), bundle)
        log_rows = archive_log_rows(run, rows["workflow_app_logs"], rows.get("workflow_trigger_logs", []), archived_at)
        conn.execute(sa.insert(t.workflow_archive_logs), log_rows)
        counts = {name: len(table_rows) for name, table_rows in rows.items()}
        counts["workflow_archive_logs"] = len(log_rows)
        return counts, len(bundle)

    def estimate_remaining(self) -> int:
        """Ended runs past the cursor in the window (already archived and unpaid ones included: an estimate)."""
        runs = t.workflow_runs
        where = sa.and_(self._candidates(), after(runs.c.created_at, runs.c.id, self.cursor))
        with self.ctx.engine.connect() as conn:
            remaining = count_or_unknown(conn, sa.select(sa.func.count()).select_from(runs).where(where))
        self.job.summary.rows_remaining_estimated = True
        return remaining


Params = ArchiveWorkflowRunsParams


def confirmation(ctx: Context, params: ArchiveWorkflowRunsParams) -> str | None:
    if not params.delete_after_archive:
        return None  # it only adds objects and workflow_archive_logs rows
    everyone = (
        "all paid workspaces"
        if plan_aware(ctx.settings)
        else "ALL workspaces (billing is off: every workspace is paid)"
    )
    destination = archive_store(ctx.settings, params.archive_dir).description
    return (
        f"Archive the ended workflow runs {params.window.describe()} of {tenant_scope(params.tenant_ids, everyone)} "
        f"to {destination} and then DELETE them from {database_description(ctx.settings)}?"
    )
