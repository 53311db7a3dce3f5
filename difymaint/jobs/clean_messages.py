"""clean-messages: delete expired chat messages with every per-message child row (docs/jobs/clean-messages.md).

Two scan strategies (:func:`choose_strategy`), both on a ``ParentScan`` keyset walk of ``(created_at, id)``:

* ``global``: one walk over ``messages`` in the window. On PostgreSQL, when no id is needed on the client
  (no plan filter, orphan manifest or conversation clean-up: :attr:`_MessageCleaner.server_side`), each
  batch is one server-side statement (``walk_server``); otherwise the page's ids are read and the cascade
  runs per batch;
* ``eligible-apps``: eligible tenants first, then their apps, each app a lane with its own cursor in a
  round robin (docs/jobs/clean-messages.md#scan-strategies). Each batch re-checks its tenants' plans
  uncached right before deleting, so a tenant that upgraded mid-run keeps its data.

The tenant policy (and with it the billing whitelist) is built in :func:`run`, under the lock.

:class:`_MessageCleaner` holds the per-batch body: one transaction with the children, the messages, then
(``--clean-conversations``) the conversations left empty. A dry run executes the same selection and counts
the same predicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.context import Context
from difymaint.core.database import as_str, ids_in
from difymaint.core.errors import UsageError
from difymaint.core.summary import Outcome
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.billing import TenantPolicy, sandbox_expiry_policy
from difymaint.dify.cascades import (
    CONVERSATION_CASCADE_TABLES,
    MESSAGE_CASCADE,
    MESSAGE_CHILDREN,
    empty_conversations,
    message_cascade,
    orphaned_upload_files,
)
from difymaint.engine.cascade import Selection, pages_on_server
from difymaint.engine.keyset import Lane, RoundRobin, in_window
from difymaint.engine.manifest import OrphanManifest
from difymaint.engine.options import RunOptions
from difymaint.engine.parent_scan import Lanes, ParentScan
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, SchemaReport, check_schema
from difymaint.engine.shard import sharded
from difymaint.jobs.confirm import retention_question

JOB = "clean-messages"
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


def run(job: JobRun, params: CleanMessagesParams) -> None:
    ctx = job.ctx
    schema = check_schema(ctx.engine, needs(params), job=JOB)
    # messages first: the progress line's running total counts the first table (the children follow).
    tables = [name for name in MESSAGE_CASCADE.summary_order() if schema.has(name)]
    if params.clean_conversations:
        tables += [name for name in CONVERSATION_CASCADE_TABLES if schema.has(name)]
    job.use_tables(tables)
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
    cleaner = _MessageCleaner(ctx, job, params, policy, manifest, skip=schema.missing_optional)
    job.remaining = cleaner.scan.remaining
    # Plans are re-checked uncached right before deleting (an upgrade mid-run wins).
    recheck = partial(policy.eligible, fresh=True)
    lanes = None if strategy == "global" else Lanes(t.messages.c.app_id, cleaner.refill, recheck)
    try:
        cleaner.scan.walk(
            cleaner.delete_batch,
            lanes=lanes,
            server=cleaner.walk_server if cleaner.server_side else None,
            keep=cleaner.eligible_ids if cleaner.filtered else None,
        )
    finally:
        manifest.close()
    job.summary.details.update(policy.stats())
    if manifest.enabled:
        job.summary.details["orphan_manifest"] = {
            "path": str(params.orphan_manifest),
            "files": manifest.count,
        }
    job.settle_remaining()
    if job.summary.outcome in (Outcome.PARTIAL, Outcome.INTERRUPTED):
        # Lanes not yet queued (apps of later pages) are not counted; nor, with billing on, is the
        # global walk's count filtered by plan.
        job.summary.rows_remaining_estimated = (
            not cleaner.apps_exhausted if strategy == "eligible-apps" else policy.billing_enabled
        )


def _preflight_warnings(ctx: Context, job: JobRun, schema: SchemaReport) -> None:
    job.warn(*schema.warnings)
    job.warn_missing_indexes([(child.name, "message_id") for child in MESSAGE_CHILDREN] + [("messages", "created_at")])


class _MessageCleaner:
    """The messages' selection and batch body on the core's parent scan."""

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
        self.filtered = policy.billing_enabled or bool(params.tenant_ids)
        self.apps_after: str | None = None
        self.apps_exhausted = False
        m = t.messages
        self.scan = ParentScan(
            job,
            m,
            selection=sharded(in_window(m.c.created_at, self.window), m.c.app_id, params.run.shard),
            columns=(m.c.id, m.c.app_id, m.c.conversation_id, m.c.created_at),
        )

    @property
    def server_side(self) -> bool:
        """The server-side walk: PostgreSQL (one statement a batch) or MySQL, and no id needed on the client (no
        plan filter, no orphan manifest, no conversation clean-up, which reads the batch's conversation ids)."""
        return (
            pages_on_server(self.ctx.engine)
            and not self.filtered
            and not self.manifest.enabled
            and not self.params.clean_conversations
        )

    def walk_server(self) -> None:
        skip = self.skip
        if self.job.dry_run and self.job.options.max_batches is None:
            # Exact and set-based: one count per table over the whole window, not a walk of the batches.
            selection = Selection(self.scan.selection)
            if self.scan.count_set(lambda conn: MESSAGE_CASCADE.count(conn, selection, skip=skip)):
                return
        self.scan.walk_server(
            lambda conn, page: MESSAGE_CASCADE.run_batch(conn, page, dry_run=self.job.dry_run, skip=skip)
        )

    def delete_batch(self, rows: Sequence[Any], ids: list[str], would_be_deleted: sa.ColumnElement[bool]) -> bool:
        """Run one batch transaction; False when it was rolled back and must be retried."""
        dry_run = self.job.dry_run
        with self.job.batch() as batch:
            counts: dict[str, int] = {}
            if ids:
                with batch.transaction() as conn:
                    if self.manifest.enabled:
                        orphans: list[dict[str, Any]] = orphaned_upload_files(conn, ids)
                        # Durable before the commit that orphans them (docs/batching.md#orphan-manifest).
                        self.manifest.stage(orphans, source="message_files")
                    counts = message_cascade(conn, ids, dry_run=dry_run, skip_tables=self.skip)
                    if self.params.clean_conversations:
                        chosen = set(ids)
                        conversation_ids = sorted({as_str(r.conversation_id) for r in rows if as_str(r.id) in chosen})
                        counts.update(
                            empty_conversations(
                                conn,
                                conversation_ids,
                                updated_before=self.window.end_before,
                                dry_run=dry_run,
                                would_be_deleted=would_be_deleted,
                                skip_tables=self.skip,
                            )
                        )
            batch.record(scanned=len(rows), affected=len(ids), rows=counts)
        return self.manifest.settle(rolled_back=batch.rolled_back)

    def eligible_ids(self, conn: Connection, rows: Sequence[Any]) -> list[str]:
        """The global walk's rows whose app's tenant may be cleaned (billing on, or a tenant filter)."""
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

    def refill(self, lanes: RoundRobin) -> bool:
        """Queue the next page of apps whose tenant is eligible, one lane (cursor) per app."""
        apps = t.apps
        page_size = self.params.app_page_size
        while not lanes and not self.apps_exhausted and self.job.keep_going():
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
            lanes.extend(
                Lane(key=as_str(row.id), tenant_id=as_str(row.tenant_id))
                for row in page
                if as_str(row.tenant_id) in eligible
            )
        return bool(lanes)


Params = CleanMessagesParams


def confirmation(ctx: Context, params: CleanMessagesParams) -> str:
    return retention_question(
        ctx,
        what="messages",
        window=params.window,
        tenant_ids=params.tenant_ids,
        graceful_period_days=params.graceful_period_days,
    )
