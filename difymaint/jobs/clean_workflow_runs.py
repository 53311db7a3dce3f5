"""clean-workflow-runs: delete expired, ended workflow runs with every per-run row (docs/jobs/clean-workflow-runs.md).

Only ended runs are selected, and only ``id, tenant_id, created_at`` are read (never the large
``graph``/``inputs``/``outputs`` columns). Two scans on a ``ParentScan`` keyset walk of ``(created_at, id)``:

* ``global`` (billing off, no ``--tenant-ids``): one walk over ``workflow_runs``; on PostgreSQL, when no id
  is needed on the client (``RunCleanup.server_side``), each batch is one server-side statement
  (``walk_server``);
* ``tenants`` (plans in play, or ``--tenant-ids``): the eligible tenants first, each a lane with its own
  cursor; each batch re-checks its tenants' plans uncached before deleting.

:class:`_RunCleaner` deletes through ``RunCleanup`` (its helpers are shared with clean-workflow-logs): with
``--with-messages`` the runs' messages and the conversations left empty, then the run cascade
(docs/dify-reference.md#workflow-run-cascade), one transaction per batch. A dry run executes the same
selection and counts the same predicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.core.database import as_str
from difymaint.core.summary import Outcome
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.billing import TenantPolicy, sandbox_expiry_policy
from difymaint.dify.cascades import RunCleanup, ended_runs
from difymaint.engine.cascade import pages_on_server
from difymaint.engine.keyset import Lane, RoundRobin
from difymaint.engine.manifest import OrphanManifest
from difymaint.engine.options import RunOptions
from difymaint.engine.parent_scan import Lanes, ParentScan
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema
from difymaint.engine.shard import sharded
from difymaint.jobs.confirm import retention_question

JOB = "clean-workflow-runs"


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


def run(job: JobRun, params: CleanWorkflowRunsParams) -> None:
    ctx = job.ctx
    schema = check_schema(ctx.engine, needs(params), job=JOB)
    cleanup = RunCleanup(
        skip_tables=RunCleanup.skipped(schema),
        conversations_updated_before=params.window.end_before if params.with_messages else None,
        collect_orphans=params.orphan_manifest is not None,
    )
    job.use_tables(cleanup.summary_tables())
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
    # Plans are re-checked uncached right before deleting (an upgrade mid-run wins).
    recheck = partial(policy.eligible, fresh=True)
    lanes = None if strategy == "global" else Lanes(t.workflow_runs.c.tenant_id, cleaner.refill, recheck)
    server_side = cleanup.server_side and pages_on_server(ctx.engine)
    try:
        cleaner.scan.walk(cleaner.delete_batch, lanes=lanes, server=cleaner.walk_server if server_side else None)
    finally:
        manifest.close()
    job.summary.details.update(policy.stats())
    job.summary.details["runs_skipped_upgraded"] = cleaner.scan.skipped
    if manifest.enabled:
        job.summary.details["orphan_manifest"] = manifest.details()
    job.settle_remaining()
    if strategy == "tenants" and job.summary.outcome in (Outcome.PARTIAL, Outcome.INTERRUPTED):
        job.summary.rows_remaining_estimated = not cleaner.tenants_exhausted  # later tenant pages not counted


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
        return self.manifest.settle(rolled_back=batch.rolled_back)

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
