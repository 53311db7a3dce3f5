"""clean-workflow-runs: delete expired, ended workflow runs with every per-run row (spec §5.4).

Replaces Dify's ``clean_workflow_runs_task`` (WorkflowRunCleanup). Only ended runs go (succeeded, failed,
partial-succeeded, stopped); running, paused and scheduled runs are never selected. Two scans, both
keyset-paginated on ``(created_at, id)`` and reading only ``id, tenant_id, created_at`` (never the large
``graph``/``inputs``/``outputs`` columns):

* ``global`` (billing off, no ``--tenant-ids``): one walk over ``workflow_runs`` in the window on
  ``workflow_run_created_at_id_idx``; every run goes (Dify's behaviour with billing disabled).
* ``tenants`` (billing on or a plan file, or ``--tenant-ids``): list the eligible tenants first (expired
  sandbox, whitelist fails closed), then read each tenant's runs with its own cursor. Paid tenants' runs
  are never scanned, and every batch re-checks its tenants' plans uncached before deleting.

Each batch is one transaction: (with ``--with-messages`` the runs' advanced-chat messages and the
conversations left empty,) then offloads, node executions, app logs, pause reasons and pauses, trigger
logs and the runs (spec §3.6). A dry run executes the same selection and counts the same predicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from difymaint.core.billing import TenantPolicy, sandbox_expiry_policy
from difymaint.core.context import Context
from difymaint.core.database import as_str, count_or_unknown
from difymaint.core.keyset import Cursor, Lane, RoundRobin, after, in_window, up_to
from difymaint.core.manifest import OrphanManifest
from difymaint.core.run import JobRun, RunOptions, job_run
from difymaint.core.schema import Need, SchemaReport, check_schema
from difymaint.core.summary import Outcome, RunSummary
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.cascades import (
    CONVERSATION_CASCADE_TABLES,
    ENDED_RUN_STATUSES,
    MESSAGE_CASCADE_TABLES,
    MESSAGE_CHILDREN,
    WORKFLOW_RUN_CASCADE_TABLES,
    delete_workflow_runs,
)

JOB = "clean-workflow-runs"
LOCK_KEY = "retention:clean_workflow_runs_task"  # Dify's own key: difymaint and Dify's beat exclude each other
MESSAGE_INDEX_HINT = (
    "CREATE INDEX CONCURRENTLY message_workflow_run_id_only_idx ON messages (workflow_run_id) "
    "WHERE workflow_run_id IS NOT NULL"
)


@dataclass(frozen=True)
class CleanWorkflowRunsParams:
    window: TimeWindow
    run: RunOptions = field(default_factory=RunOptions)
    tenant_ids: tuple[str, ...] = ()
    graceful_period_days: int = 21
    with_messages: bool = False
    orphan_manifest: Path | None = None
    tenant_page_size: int = 500


# --- helpers shared with clean-workflow-logs ----------------------------------------------------------------


def run_cascade_needs(*, with_messages: bool, manifest: bool) -> list[Need]:
    """What the run cascade (and optionally the message cascade) needs from the live schema."""
    result = [
        Need("workflow_runs", ("id", "tenant_id", "app_id", "workflow_id", "status", "created_at")),
        Need("workflow_node_executions", ("id", "workflow_run_id")),
        Need("workflow_app_logs", ("workflow_run_id",)),
        # Absent in older Dify versions: the step is skipped with a warning.
        Need("workflow_node_execution_offload", ("node_execution_id", "file_id"), optional=True),
        Need("workflow_pauses", ("id", "workflow_run_id", "state_object_key"), optional=True),
        Need("workflow_pause_reasons", ("pause_id",), optional=True),
        Need("workflow_trigger_logs", ("workflow_run_id",), optional=True),
    ]
    if with_messages:
        result += [
            Need("messages", ("id", "conversation_id", "workflow_run_id")),
            *(Need(child.name, ("message_id",), optional=True) for child in MESSAGE_CHILDREN),
            Need("conversations", ("id", "updated_at")),
            Need("pinned_conversations", ("conversation_id",), optional=True),
            Need("workflow_conversation_variables", ("conversation_id",), optional=True),
        ]
    if manifest:
        result.append(Need("upload_files", ("id", "tenant_id", "storage_type", "key", "size")))
        if with_messages:
            result.append(Need("message_files", ("message_id", "upload_file_id")))
    return result


def skipped_tables(schema: SchemaReport) -> set[str]:
    skip = set(schema.missing_optional)
    if "workflow_pauses" in skip:
        skip.add("workflow_pause_reasons")  # reasons are found through their pauses
    return skip


def summary_tables(skip: set[str], *, with_messages: bool) -> list[str]:
    """Summary table order: the runs first (the progress line counts them), then the cascade."""
    names = ["workflow_runs", *(n for n in WORKFLOW_RUN_CASCADE_TABLES if n != "workflow_runs")]
    if with_messages:
        names += [*MESSAGE_CASCADE_TABLES, *CONVERSATION_CASCADE_TABLES]
    return [name for name in names if name not in skip]


def preflight_warnings(ctx: Context, job: JobRun, schema: SchemaReport, *, with_messages: bool) -> None:
    job.warn(*schema.warnings)
    job.warn_missing_indexes(
        [("workflow_node_executions", "workflow_run_id"), ("workflow_app_logs", "workflow_run_id")]
    )
    if with_messages:
        job.warn_missing_indexes(
            [("messages", "workflow_run_id")],
            f"every batch scans messages (Dify has no such index); consider: {MESSAGE_INDEX_HINT}",
        )


def ended_runs(window: TimeWindow) -> sa.ColumnElement[bool]:
    """Dify's batch predicate (spec §3.6): in the window, ended runs only."""
    runs = t.workflow_runs
    return sa.and_(in_window(runs.c.created_at, window), runs.c.status.in_(ENDED_RUN_STATUSES))


def manifest_details(manifest: OrphanManifest, path: Path | None, by_source: dict[str, int]) -> dict[str, Any]:
    return {"path": str(path), "files": manifest.count, "by_source": dict(by_source)}


# --- the job ------------------------------------------------------------------------------------------------


def needs(params: CleanWorkflowRunsParams) -> list[Need]:
    return [
        *run_cascade_needs(with_messages=params.with_messages, manifest=params.orphan_manifest is not None),
        Need("tenants", ("id",)),
    ]


def run(ctx: Context, params: CleanWorkflowRunsParams) -> RunSummary:
    schema = check_schema(ctx.engine, needs(params), job=JOB)
    skip = skipped_tables(schema)
    tables = summary_tables(skip, with_messages=params.with_messages)
    with job_run(ctx, JOB, lock_key=LOCK_KEY, options=params.run, window=params.window, tables=tables) as job:
        preflight_warnings(ctx, job, schema, with_messages=params.with_messages)
        # The whitelist is fetched only now, under the lock, and a failure stops the job (Dify: fail-open).
        policy = sandbox_expiry_policy(
            ctx.settings, ctx.clock, ctx.redis, ctx.keys, graceful_period_days=params.graceful_period_days
        )
        strategy = "tenants" if policy.billing_enabled or params.tenant_ids else "global"
        job.summary.details.update(
            strategy=strategy,
            policy=policy.description,
            tenant_filter=list(params.tenant_ids) or None,
            with_messages=params.with_messages,
            alembic_version=schema.alembic_version,
        )
        ctx.reporter.info(f"{JOB}: ended runs {params.window.describe()}; {policy.description}; strategy {strategy}")
        manifest = OrphanManifest(params.orphan_manifest, job=JOB, dry_run=params.run.dry_run)
        scan = _Scan(ctx, job, params, policy, manifest, skip=skip)
        try:
            if strategy == "global":
                scan.global_scan()
            else:
                scan.tenant_scan()
        finally:
            manifest.close()
        job.summary.details.update(policy.stats())
        job.summary.details["runs_skipped_upgraded"] = scan.runs_skipped
        if manifest.enabled:
            job.summary.details["orphan_manifest"] = manifest_details(manifest, params.orphan_manifest, scan.orphans)
        if job.summary.outcome in (Outcome.PARTIAL, Outcome.INTERRUPTED):
            scan.estimate_remaining(strategy)
        else:
            job.summary.rows_remaining = 0
    return job.summary


class _Scan:
    def __init__(
        self,
        ctx: Context,
        job: JobRun,
        params: CleanWorkflowRunsParams,
        policy: TenantPolicy,
        manifest: OrphanManifest,
        skip: set[str],
    ) -> None:
        self.ctx, self.job, self.params, self.policy, self.manifest = ctx, job, params, policy, manifest
        self.skip = skip
        self.window = params.window
        self.global_cursor: Cursor | None = None
        self.lanes = RoundRobin()  # eligible tenants, each with its own cursor
        self.tenants_after: str | None = None
        self.tenants_exhausted = False
        self.runs_skipped = 0
        self.orphans: dict[str, int] = {}

    def _select(self) -> sa.Select[Any]:
        runs = t.workflow_runs
        return sa.select(runs.c.id, runs.c.tenant_id, runs.c.created_at).where(ended_runs(self.window))

    def _delete_batch(self, scanned: int, run_ids: list[str], runs_passed: sa.ColumnElement[bool]) -> bool:
        """Run one batch transaction; False when it was rolled back and must be retried."""
        orphans: dict[str, list[dict[str, Any]]] = {}
        with self.job.batch() as batch:
            counts: dict[str, int] = {}
            if run_ids:
                with batch.transaction() as conn:
                    counts, orphans = delete_workflow_runs(
                        conn,
                        run_ids,
                        dry_run=self.job.dry_run,
                        skip_tables=self.skip,
                        with_messages=self.params.with_messages,
                        conversations_updated_before=self.window.end_before,
                        runs_passed=runs_passed,
                        collect_orphans=self.manifest.enabled,
                    )
            batch.record(scanned=scanned, affected=len(run_ids), rows=counts)
        if batch.rolled_back:
            return False
        # Written only after the commit: the manifest lists what really lost its last reference.
        for source, rows in orphans.items():
            self.manifest.write(rows, source=source)
            self.orphans[source] = self.orphans.get(source, 0) + len(rows)
        return True

    # --- strategy: global keyset scan (billing off) -------------------------------------------------------

    def global_scan(self) -> None:
        runs = t.workflow_runs
        while self.job.keep_going():
            with self.ctx.engine.connect() as conn:
                rows = conn.execute(
                    self._select()
                    .where(after(runs.c.created_at, runs.c.id, self.global_cursor))
                    .order_by(runs.c.created_at, runs.c.id)
                    .limit(self.job.batch_size)
                ).all()
            if not rows:
                return
            new_cursor = Cursor.of(rows[-1])
            passed = sa.and_(ended_runs(self.window), up_to(runs.c.created_at, runs.c.id, new_cursor))
            if self._delete_batch(len(rows), [as_str(row.id) for row in rows], passed):
                self.global_cursor = new_cursor

    # --- strategy: eligible tenants → a cursor per tenant --------------------------------------------------

    def tenant_scan(self) -> None:
        runs = t.workflow_runs

        def page(lane: Lane, limit: int) -> sa.Select[Any]:
            return (
                self._select()
                .where(runs.c.tenant_id == lane.key, after(runs.c.created_at, runs.c.id, lane.cursor))
                .order_by(runs.c.created_at, runs.c.id)
                .limit(limit)
            )

        # Plans are re-checked uncached right before deleting (an upgrade mid-run wins).
        for served, still in self.lanes.batches(
            self.job.keep_going,
            self.ctx.engine,
            lambda: self.job.batch_size,
            page,
            self._refill_queue,
            lambda tenants: self.policy.eligible(tenants, fresh=True),
        ):
            ids = RoundRobin.row_ids(served, still)
            self.runs_skipped += sum(len(item.rows) for item in served if item.lane.tenant_id not in still)
            passed = sa.and_(
                ended_runs(self.window),
                RoundRobin.passed(served, runs.c.tenant_id, runs.c.created_at, runs.c.id, tenants=still),
            )
            if self._delete_batch(sum(len(item.rows) for item in served), ids, passed):
                self.lanes.advance(served, still)

    def _refill_queue(self) -> bool:
        tenants = t.tenants
        page_size = self.params.tenant_page_size
        while not self.lanes and not self.tenants_exhausted and self.job.keep_going():
            if self.params.tenant_ids:
                page = sorted(set(self.params.tenant_ids))
                self.tenants_exhausted = True
            else:
                query = sa.select(tenants.c.id).order_by(tenants.c.id).limit(page_size)
                if self.tenants_after is not None:
                    query = query.where(tenants.c.id > sa.literal(self.tenants_after, tenants.c.id.type))
                with self.ctx.engine.connect() as conn:
                    page = [as_str(row.id) for row in conn.execute(query)]
                if len(page) < page_size:
                    self.tenants_exhausted = True
                if not page:
                    break
                self.tenants_after = page[-1]
            eligible = self.policy.eligible(set(page))
            self.lanes.extend(Lane(key=tid, tenant_id=tid) for tid in page if tid in eligible)
        return bool(self.lanes)

    # --- backlog estimate for a partial run ----------------------------------------------------------------

    def estimate_remaining(self, strategy: str) -> None:
        runs = t.workflow_runs
        summary = self.job.summary
        if strategy == "tenants":
            where = sa.and_(
                ended_runs(self.window), self.lanes.remaining(runs.c.tenant_id, runs.c.created_at, runs.c.id)
            )
            summary.rows_remaining_estimated = not self.tenants_exhausted
        else:
            where = sa.and_(ended_runs(self.window), after(runs.c.created_at, runs.c.id, self.global_cursor))
        with self.ctx.engine.connect() as conn:
            summary.rows_remaining = count_or_unknown(conn, sa.select(sa.func.count()).select_from(runs).where(where))
