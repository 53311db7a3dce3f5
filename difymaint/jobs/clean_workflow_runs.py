"""clean-workflow-runs: delete expired, ended workflow runs with every per-run row (docs/jobs/clean-workflow-runs.md).

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
logs and the runs (docs/dify-reference.md#workflow-run-cascade). A dry run executes the same selection and counts the
same predicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.core.database import as_str
from difymaint.core.summary import Outcome, RunSummary
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.billing import TenantPolicy, sandbox_expiry_policy
from difymaint.dify.cascades import RunCleanup, ended_runs
from difymaint.engine.cascade import pages_on_server
from difymaint.engine.keyset import Lane, RoundRobin
from difymaint.engine.manifest import OrphanManifest
from difymaint.engine.parent_scan import ParentScan
from difymaint.engine.run import JobRun, RunOptions, job_run
from difymaint.engine.schema import Need, check_schema
from difymaint.engine.shard import sharded
from difymaint.jobs import JOBS
from difymaint.jobs.confirm import retention_question

JOB = "clean-workflow-runs"
LOCK_KEY = JOBS[JOB].lock_key


@dataclass(frozen=True)
class CleanWorkflowRunsParams:
    window: TimeWindow
    run: RunOptions = field(default_factory=RunOptions)
    tenant_ids: tuple[str, ...] = ()
    graceful_period_days: int = 21
    with_messages: bool = False
    orphan_manifest: Path | None = None
    tenant_page_size: int = 500


def needs(params: CleanWorkflowRunsParams) -> list[Need]:
    return [
        *RunCleanup.needs(with_messages=params.with_messages, manifest=params.orphan_manifest is not None),
        Need("tenants", ("id",)),
    ]


def run(ctx: Context, params: CleanWorkflowRunsParams) -> RunSummary:
    schema = check_schema(ctx.engine, needs(params), job=JOB)
    cleanup = RunCleanup(
        skip_tables=RunCleanup.skipped(schema),
        conversations_updated_before=params.window.end_before if params.with_messages else None,
        collect_orphans=params.orphan_manifest is not None,
    )
    with job_run(
        ctx, JOB, lock_key=LOCK_KEY, options=params.run, window=params.window, tables=cleanup.summary_tables()
    ) as job:
        cleanup.warn_preflight(job, schema)
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
        cleaner = _RunCleaner(ctx, job, params, policy, manifest, cleanup)
        job.remaining = cleaner.scan.remaining
        try:
            if strategy == "global" and cleanup.server_side and pages_on_server(ctx.engine):
                cleaner.walk_server()
            elif strategy == "global":
                cleaner.scan.walk_all(cleaner.delete_batch)
            else:
                # Plans are re-checked uncached right before deleting (an upgrade mid-run wins).
                cleaner.scan.walk_lanes(
                    cleaner.delete_batch,
                    t.workflow_runs.c.tenant_id,
                    cleaner.refill,
                    lambda tenants: policy.eligible(tenants, fresh=True),
                )
        finally:
            manifest.close()
        job.summary.details.update(policy.stats())
        job.summary.details["runs_skipped_upgraded"] = cleaner.scan.skipped
        if manifest.enabled:
            job.summary.details["orphan_manifest"] = manifest.details()
        job.settle_remaining()
        if strategy == "tenants" and job.summary.outcome in (Outcome.PARTIAL, Outcome.INTERRUPTED):
            job.summary.rows_remaining_estimated = not cleaner.tenants_exhausted  # later tenant pages not counted
    return job.summary


class _RunCleaner:
    """The workflow runs' selection and batch body on the core's parent scan."""

    def __init__(
        self,
        ctx: Context,
        job: JobRun,
        params: CleanWorkflowRunsParams,
        policy: TenantPolicy,
        manifest: OrphanManifest,
        cleanup: RunCleanup,
    ) -> None:
        self.ctx, self.job, self.params, self.policy, self.manifest = ctx, job, params, policy, manifest
        self.cleanup = cleanup
        self.window = params.window
        self.tenants_after: str | None = None
        self.tenants_exhausted = False
        runs = t.workflow_runs
        self.scan = ParentScan(
            job,
            runs,
            selection=sharded(ended_runs(self.window), runs.c.app_id, params.run.shard),
            columns=(runs.c.id, runs.c.tenant_id, runs.c.created_at),
        )

    def walk_server(self) -> None:
        """PostgreSQL, nothing needed on the client: one statement per batch (--workers slices in parallel);
        an unbounded dry run is one set-based count."""
        unbounded_dry_run = self.job.dry_run and self.job.options.max_batches is None
        if unbounded_dry_run and self.scan.count_set(lambda conn: self.cleanup.count(conn, self.scan.selection)):
            return
        self.scan.walk_server(lambda conn, page: self.cleanup.run_batch(conn, page, dry_run=self.job.dry_run))

    def delete_batch(self, rows: Sequence[Any], run_ids: list[str], runs_passed: sa.ColumnElement[bool]) -> bool:
        """Run one batch transaction; False when it was rolled back and must be retried."""
        with self.job.batch() as batch:
            counts: dict[str, int] = {}
            if run_ids:
                with batch.transaction() as conn:
                    counts, orphans = self.cleanup.delete(
                        conn, run_ids, dry_run=self.job.dry_run, runs_passed=runs_passed
                    )
                    # Durable before the commit that orphans them (docs/batching.md#orphan-manifest).
                    for source, found in orphans.items():
                        self.manifest.stage(found, source=source)
            batch.record(scanned=len(rows), affected=len(run_ids), rows=counts)
        if batch.rolled_back:
            self.manifest.rollback()
            return False
        self.manifest.commit()
        return True

    def refill(self, lanes: RoundRobin) -> bool:
        """Queue the next page of eligible tenants, one lane (cursor) per tenant."""
        tenants = t.tenants
        page_size = self.params.tenant_page_size
        while not lanes and not self.tenants_exhausted and self.job.keep_going():
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
            lanes.extend(Lane(key=tid, tenant_id=tid) for tid in page if tid in eligible)
        return bool(lanes)


Params = CleanWorkflowRunsParams


def confirmation(ctx: Context, params: CleanWorkflowRunsParams) -> str:
    what = "ended workflow runs" + (" and their chat messages" if params.with_messages else "")
    return retention_question(
        ctx,
        what=what,
        window=params.window,
        tenant_ids=params.tenant_ids,
        graceful_period_days=params.graceful_period_days,
    )
