"""clean-messages: delete expired chat messages with every per-message child row (spec §5.3).

Two scan strategies, both keyset-paginated on ``(created_at, id)``:

* ``global`` (billing off): walk ``messages`` in the window once; every message goes (Dify's
  BillingDisabledPolicy).
* ``eligible-apps`` (billing on, or ``--tenant-ids``; spec §5.3.6): find the eligible tenants first, walk
  their apps, and read each app's messages with its own cursor on ``message_app_id_idx``. Paid tenants'
  history is never scanned, and every batch re-checks its tenants' plans uncached before deleting, so a
  tenant that upgraded mid-run keeps its data.

Each batch is one transaction: children, then messages, then (``--clean-conversations``) the conversations
left empty. A dry run executes the same selection and counts the same predicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.billing import TenantPolicy, sandbox_expiry_policy
from difymaint.core.context import Context
from difymaint.core.database import as_str, count_or_unknown, ids_in
from difymaint.core.errors import UsageError
from difymaint.core.keyset import Cursor, Lane, RoundRobin, after, in_window, up_to
from difymaint.core.manifest import OrphanManifest
from difymaint.core.run import JobRun, RunOptions, job_run
from difymaint.core.schema import Need, SchemaReport, check_schema
from difymaint.core.summary import Outcome, RunSummary
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.cascades import (
    CONVERSATION_CASCADE_TABLES,
    MESSAGE_CASCADE_TABLES,
    MESSAGE_CHILDREN,
    empty_conversations,
    message_cascade,
    orphaned_upload_files,
)

JOB = "clean-messages"
LOCK_KEY = "retention:clean_messages"  # Dify's own key: difymaint and Dify's beat exclude each other
STRATEGIES = ("auto", "global", "eligible-apps")


@dataclass(frozen=True)
class CleanMessagesParams:
    window: TimeWindow
    run: RunOptions = field(default_factory=RunOptions)
    tenant_ids: tuple[str, ...] = ()
    scan_strategy: str = "auto"
    graceful_period_days: int = 21
    clean_conversations: bool = False
    orphan_manifest: Path | None = None
    app_page_size: int = 500


def needs(params: CleanMessagesParams) -> list[Need]:
    result = [
        Need("messages", ("id", "app_id", "conversation_id", "created_at")),
        Need("apps", ("id", "tenant_id")),
        *(Need(child.name, ("message_id",), optional=True) for child in MESSAGE_CHILDREN),
    ]
    if params.clean_conversations:
        result += [
            Need("conversations", ("id", "updated_at")),
            Need("pinned_conversations", ("conversation_id",), optional=True),
            Need("workflow_conversation_variables", ("conversation_id",), optional=True),
        ]
    if params.orphan_manifest is not None:
        result += [
            Need("upload_files", ("id", "tenant_id", "storage_type", "key", "size")),
            Need("message_files", ("message_id", "upload_file_id")),
        ]
    return result


def choose_strategy(requested: str, policy: TenantPolicy, tenant_ids: Sequence[str]) -> str:
    requested = requested.replace("_", "-")
    if requested not in STRATEGIES:
        raise UsageError(f"unknown scan strategy {requested!r}", hint=f"use one of {', '.join(STRATEGIES)}")
    if requested == "auto":
        return "eligible-apps" if policy.billing_enabled or tenant_ids else "global"
    return requested


def run(ctx: Context, params: CleanMessagesParams) -> RunSummary:
    schema = check_schema(ctx.engine, needs(params), job=JOB)
    tables = [name for name in MESSAGE_CASCADE_TABLES if schema.has(name)]
    if params.clean_conversations:
        tables += [name for name in CONVERSATION_CASCADE_TABLES if schema.has(name)]
    with job_run(ctx, JOB, lock_key=LOCK_KEY, options=params.run, window=params.window, tables=tables) as job:
        _preflight_warnings(ctx, job, schema)
        # The whitelist is fetched only now, under the lock (Dify fetches it before locking).
        policy = sandbox_expiry_policy(
            ctx.settings, ctx.clock, ctx.redis, ctx.keys, graceful_period_days=params.graceful_period_days
        )
        strategy = choose_strategy(params.scan_strategy, policy, params.tenant_ids)
        job.summary.details.update(
            strategy=strategy,
            policy=policy.description,
            tenant_filter=list(params.tenant_ids) or None,
            alembic_version=schema.alembic_version,
        )
        ctx.reporter.info(f"{JOB}: {params.window.describe()}; {policy.description}; strategy {strategy}")
        manifest = OrphanManifest(params.orphan_manifest, job=JOB, dry_run=params.run.dry_run)
        scan = _Scan(ctx, job, params, policy, manifest, skip=schema.missing_optional)
        try:
            scan.strategy = strategy
            if strategy == "global":
                scan.global_scan()
            else:
                scan.eligible_apps_scan()
        finally:
            manifest.close()
        job.summary.details.update(policy.stats())
        if manifest.enabled:
            job.summary.details["orphan_manifest"] = {
                "path": str(params.orphan_manifest),
                "files": manifest.count,
            }
        if job.summary.outcome in (Outcome.PARTIAL, Outcome.INTERRUPTED):
            scan.estimate_remaining()
        else:
            job.summary.rows_remaining = 0
    return job.summary


def _preflight_warnings(ctx: Context, job: JobRun, schema: SchemaReport) -> None:
    job.warn(*schema.warnings)
    job.warn_missing_indexes([(child.name, "message_id") for child in MESSAGE_CHILDREN] + [("messages", "created_at")])


class _Scan:
    def __init__(
        self,
        ctx: Context,
        job: JobRun,
        params: CleanMessagesParams,
        policy: TenantPolicy,
        manifest: OrphanManifest,
        skip: set[str],
    ) -> None:
        self.ctx, self.job, self.params, self.policy, self.manifest = ctx, job, params, policy, manifest
        self.skip = skip
        self.window = params.window
        self.app_tenants: dict[str, str | None] = {}  # job-wide app → tenant cache
        self.global_cursor: Cursor | None = None
        self.strategy = "global"
        self.lanes = RoundRobin()  # eligible apps, each with its own cursor
        self.apps_after: str | None = None
        self.apps_exhausted = False

    # --- shared batch body --------------------------------------------------------------------------------

    def _delete_batch(self, rows: Sequence[Any], ids: list[str], would_be_deleted: sa.ColumnElement[bool]) -> bool:
        """Run one batch transaction; False when it was rolled back and must be retried."""
        dry_run = self.job.dry_run
        orphans: list[dict[str, Any]] = []
        with self.job.batch() as batch:
            counts: dict[str, int] = {}
            if ids:
                with batch.transaction() as conn:
                    if self.manifest.enabled:
                        orphans = orphaned_upload_files(conn, ids)
                    counts = message_cascade(conn, ids, dry_run=dry_run, skip_tables=self.skip)
                    if self.params.clean_conversations:
                        chosen = set(ids)
                        conversation_ids = sorted({as_str(r.conversation_id) for r in rows if as_str(r.id) in chosen})
                        counts.update(self._conversations(conn, conversation_ids, would_be_deleted))
            batch.record(scanned=len(rows), affected=len(ids), rows=counts)
        if batch.rolled_back:
            return False
        # Written only after the commit: the manifest lists what really lost its last reference.
        self.manifest.write(orphans, source="message_files")
        return True

    def _conversations(
        self, conn: Connection, conversation_ids: list[str], would_be_deleted: sa.ColumnElement[bool]
    ) -> dict[str, int]:
        return empty_conversations(
            conn,
            conversation_ids,
            updated_before=self.window.end_before,
            dry_run=self.job.dry_run,
            would_be_deleted=would_be_deleted,
            skip_tables=self.skip,
        )

    def _message_select(self) -> sa.Select[Any]:
        m = t.messages
        return sa.select(m.c.id, m.c.app_id, m.c.conversation_id, m.c.created_at).where(
            in_window(m.c.created_at, self.window)
        )

    # --- strategy: global keyset scan ---------------------------------------------------------------------

    def global_scan(self) -> None:
        m = t.messages
        filter_by_tenant = self.policy.billing_enabled or bool(self.params.tenant_ids)
        while self.job.keep_going():
            with self.ctx.engine.connect() as conn:
                rows = conn.execute(
                    self._message_select()
                    .where(after(m.c.created_at, m.c.id, self.global_cursor))
                    .order_by(m.c.created_at, m.c.id)
                    .limit(self.job.batch_size)
                ).all()
                if not rows:
                    return
                if filter_by_tenant:
                    ids = self._eligible_ids(conn, rows)
                else:
                    ids = [as_str(row.id) for row in rows]
            new_cursor = Cursor.of(rows[-1])
            passed = sa.and_(in_window(m.c.created_at, self.window), up_to(m.c.created_at, m.c.id, new_cursor))
            if self._delete_batch(rows, ids, passed):
                self.global_cursor = new_cursor

    def _eligible_ids(self, conn: Connection, rows: Sequence[Any]) -> list[str]:
        unknown = sorted({as_str(r.app_id) for r in rows} - self.app_tenants.keys())
        if unknown:
            found = conn.execute(
                sa.select(t.apps.c.id, t.apps.c.tenant_id).where(ids_in(t.apps.c.id, unknown, conn.dialect.name))
            ).all()
            self.app_tenants.update({app_id: None for app_id in unknown})  # deleted apps: tenant unknown
            self.app_tenants.update({as_str(r.id): as_str(r.tenant_id) for r in found})
        tenants = {self.app_tenants[as_str(r.app_id)] for r in rows} - {None}
        if self.params.tenant_ids:
            tenants &= set(self.params.tenant_ids)
        eligible = self.policy.eligible({tid for tid in tenants if tid is not None})
        return [as_str(r.id) for r in rows if self.app_tenants[as_str(r.app_id)] in eligible]

    # --- strategy: eligible tenants → their apps → per-app cursors (spec §5.3.6) ---------------------------

    def eligible_apps_scan(self) -> None:
        m = t.messages

        def page(lane: Lane, limit: int) -> sa.Select[Any]:
            return (
                self._message_select()
                .where(m.c.app_id == lane.key, after(m.c.created_at, m.c.id, lane.cursor))
                .order_by(m.c.created_at, m.c.id)
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
            rows_all = [row for item in served for row in item.rows]
            ids = RoundRobin.row_ids(served, still)
            passed = sa.and_(
                in_window(m.c.created_at, self.window), RoundRobin.passed(served, m.c.app_id, m.c.created_at, m.c.id)
            )
            if self._delete_batch(rows_all, ids, passed):
                self.lanes.advance(served, still)

    def _refill_queue(self) -> bool:
        apps = t.apps
        page_size = self.params.app_page_size
        while not self.lanes and not self.apps_exhausted and self.job.keep_going():
            query = sa.select(apps.c.id, apps.c.tenant_id).order_by(apps.c.id).limit(page_size)
            with self.ctx.engine.connect() as conn:
                if self.params.tenant_ids:
                    query = query.where(ids_in(apps.c.tenant_id, self.params.tenant_ids, conn.dialect.name))
                if self.apps_after is not None:
                    query = query.where(apps.c.id > sa.literal(self.apps_after, apps.c.id.type))
                page = conn.execute(query).all()
            if len(page) < page_size:
                self.apps_exhausted = True
            if not page:
                break
            self.apps_after = as_str(page[-1].id)
            eligible = self.policy.eligible({as_str(row.tenant_id) for row in page})
            self.lanes.extend(
                Lane(key=as_str(row.id), tenant_id=as_str(row.tenant_id))
                for row in page
                if as_str(row.tenant_id) in eligible
            )
        return bool(self.lanes)

    # --- backlog estimate for a partial run (what an alert on "falling behind" watches) -------------------

    def estimate_remaining(self) -> None:
        m = t.messages
        summary = self.job.summary
        if self.strategy == "eligible-apps":
            where = sa.and_(
                in_window(m.c.created_at, self.window), self.lanes.remaining(m.c.app_id, m.c.created_at, m.c.id)
            )
            summary.rows_remaining_estimated = not self.apps_exhausted
        else:
            where = sa.and_(in_window(m.c.created_at, self.window), after(m.c.created_at, m.c.id, self.global_cursor))
            summary.rows_remaining_estimated = self.policy.billing_enabled
        with self.ctx.engine.connect() as conn:
            summary.rows_remaining = count_or_unknown(conn, sa.select(sa.func.count()).select_from(m).where(where))
