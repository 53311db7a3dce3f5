"""clean-unused-datasets: disable the documents of knowledge bases nobody used for N days
(docs/jobs/clean-unused-datasets.md).

:func:`plan_passes` turns ``--pass`` into the passes to run, in order (``all``, then ``sandbox``); each pass
is a :class:`_Scan` over one set-based candidate query on a ``(created_at, id)`` cursor. Per batch of
datasets, :class:`_Handover` hands the vector-index removal to Dify first (Dify's Celery task and/or the
JSON-lines work list, fsynced), then one transaction writes the ``dataset_auto_disable_logs`` rows (pass
``all``) and disables the datasets' documents. The handover goes first, as in Dify; when the transaction
then fails, the next run picks the datasets up again (and may hand them over twice). :func:`check_handover`
(through :func:`check`) refuses a real run that has nowhere to hand the removal to, before any connection.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.clock import naive_utc
from difymaint.core.context import Context
from difymaint.core.database import as_str, count_or_unknown, ids_in
from difymaint.core.errors import ConfigError, UsageError
from difymaint.core.settings import Settings
from difymaint.dify import tables as t
from difymaint.dify.billing import SANDBOX, PlanLookup, plan_lookup
from difymaint.dify.celery import DIFY_TASKS, INDEX_TASK, CeleryPublisher, publisher
from difymaint.engine.keyset import Cursor, after
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, SchemaReport, check_schema
from difymaint.jobs.confirm import database_description, plan_aware, tenant_scope

JOB = "clean-unused-datasets"
INDEX_REMOVAL = DIFY_TASKS[INDEX_TASK]  # deal_dataset_vector_index_task(dataset_id, "remove") on `dataset`
INDEX_QUEUE = INDEX_REMOVAL.queue
PASSES = ("both", "all", "sandbox")


@dataclass(frozen=True)
class CleanUnusedDatasetsParams:
    all_days: int = 30  # PLAN_SANDBOX_CLEAN_DAY_SETTING: pass 1, every workspace
    sandbox_days: int = 7  # PLAN_PRO_CLEAN_DAY_SETTING: pass 2, sandbox workspaces (the name is Dify's trap)
    passes: str = "both"
    run: RunOptions = field(default_factory=RunOptions)
    tenant_ids: tuple[str, ...] = ()
    enqueue_index_removal: bool = False
    emit_index_removals: Path | None = None


@dataclass(frozen=True)
class Pass:
    name: str  # "all" | "sandbox"
    days: int
    cutoff: datetime
    sandbox_only: bool
    write_logs: bool


def plan_passes(params: CleanUnusedDatasetsParams, now: datetime) -> list[Pass]:
    chosen = params.passes.strip().lower()
    if chosen not in PASSES:
        raise UsageError(f"unknown pass {params.passes!r}", hint=f"use one of {', '.join(PASSES)}")
    now = naive_utc(now)
    result = []
    if chosen in ("both", "all"):
        result.append(Pass("all", params.all_days, now - timedelta(days=params.all_days), False, True))
    if chosen in ("both", "sandbox"):
        result.append(Pass("sandbox", params.sandbox_days, now - timedelta(days=params.sandbox_days), True, False))
    return result


def needs(passes: list[Pass]) -> list[Need]:
    result = [
        Need("datasets", ("id", "tenant_id", "created_at", "indexing_technique")),
        Need(
            "documents",
            ("id", "dataset_id", "indexing_status", "enabled", "archived", "updated_at", "doc_form"),
        ),
        Need("dataset_queries", ("dataset_id", "created_at")),
        Need("dataset_keyword_tables", ("dataset_id", "data_source_type"), optional=True),
    ]
    if any(p.write_logs for p in passes):
        result.append(
            Need(
                "dataset_auto_disable_logs", ("id", "tenant_id", "dataset_id", "document_id", "notified", "created_at")
            )
        )
    return result


def check_handover(params: CleanUnusedDatasetsParams, settings: Settings) -> None:
    """A real run never disables documents without handing their index removal to Dify."""
    dry_run = params.run.dry_run
    if not dry_run and not (params.enqueue_index_removal or params.emit_index_removals):
        raise UsageError(
            f"{JOB} must hand each dataset's vector index removal to Dify; refusing to only disable documents",
            hint="add --enqueue-index-removal (Dify's Celery task deal_dataset_vector_index_task on queue "
            "'dataset', needs CELERY_BROKER_URL) or --emit-index-removals PATH (a JSON-lines work list)",
        )
    if params.enqueue_index_removal and not dry_run and not settings.CELERY_BROKER_URL:
        raise ConfigError(
            "--enqueue-index-removal needs CELERY_BROKER_URL (Dify's Celery broker)",
            hint="set it as in Dify's .env (or --broker-url), or use --emit-index-removals PATH instead",
        )


def run(job: JobRun, params: CleanUnusedDatasetsParams) -> None:
    ctx = job.ctx
    passes = plan_passes(params, ctx.clock.now())
    dry_run = params.run.dry_run
    schema = check_schema(ctx.engine, needs(passes), job=JOB)
    tables = ["datasets", "documents"] + (["dataset_auto_disable_logs"] if any(p.write_logs for p in passes) else [])
    job.use_tables(tables)
    _preflight_warnings(ctx, job, schema)
    lookup = plan_lookup(ctx.settings, ctx.clock, ctx.redis, ctx.keys) if any(p.sandbox_only for p in passes) else None
    if lookup is not None and not lookup.billing_enabled:
        sandbox = next(p for p in passes if p.sandbox_only)
        warning = (
            "BILLING_ENABLED is false: EVERY workspace counts as sandbox, so the sandbox pass disables the "
            f"knowledge bases of ALL workspaces unused for {sandbox.days} days (PLAN_PRO_CLEAN_DAY_SETTING), "
            "and writes no dataset_auto_disable_logs, so no owner is told (Dify's behaviour); "
            "use --pass all to run only the logged pass"
        )
        job.warn(warning)
    job.summary.details.update(
        passes={p.name: {"days": p.days, "cutoff": p.cutoff.isoformat()} for p in passes},
        plans=lookup.description if lookup else None,
        tenant_filter=list(params.tenant_ids) or None,
        index_removal=_handover_description(params, dry_run),
        alembic_version=schema.alembic_version,
    )
    handover = _Handover(ctx, params, dry_run)
    try:
        scan = _Scan(ctx, job, params, lookup, handover, schema)
        job.remaining = lambda: scan.remaining(passes)
        for one_pass in passes:
            if not job.keep_going():
                break
            ctx.reporter.info(
                f"{JOB}: pass {one_pass.name}: datasets unused since {one_pass.cutoff:%Y-%m-%d %H:%M:%S} UTC"
                + (" (sandbox workspaces)" if one_pass.sandbox_only else " (all workspaces)")
            )
            scan.run_pass(one_pass)
    finally:
        handover.close()
    job.summary.details["passes"] = {
        name: {**job.summary.details["passes"][name], **counts} for name, counts in scan.per_pass.items()
    }
    job.summary.details["index_removals"] = handover.stats()
    if lookup is not None:
        job.summary.details.update(lookup.stats())
        job.summary.details["sandbox_pass_skipped"] = dict(scan.skipped)
    job.settle_remaining()
    # A sandbox pass's count cannot apply the plan filter (that needs the billing API per workspace).
    job.summary.rows_remaining_estimated = bool(job.summary.rows_remaining) and any(
        p.sandbox_only for p in passes[scan.current :]
    )


def _handover_description(params: CleanUnusedDatasetsParams, dry_run: bool) -> str:
    ways = {
        f"Celery {INDEX_TASK}(dataset_id, 'remove') on queue {INDEX_QUEUE}": params.enqueue_index_removal,
        f"work list {params.emit_index_removals}": params.emit_index_removals is not None,
    }
    described = " and ".join(way for way, chosen in ways.items() if chosen) or "none"
    return f"{described} (dry run: nothing sent or written)" if dry_run else described


def _preflight_warnings(ctx: Context, job: JobRun, schema: SchemaReport) -> None:
    job.warn(*schema.warnings)
    job.warn_missing_indexes(
        [("documents", "dataset_id"), ("dataset_queries", "dataset_id")], "every candidate check scans that table"
    )


class _Handover:
    """Hands the index removal to Dify (Celery and/or a work list) before the batch's transaction."""

    def __init__(self, ctx: Context, params: CleanUnusedDatasetsParams, dry_run: bool) -> None:
        self.ctx = ctx
        self.dry_run = dry_run
        self.would_remove = 0
        self.enqueued = 0
        self.emitted = 0
        self.publisher: CeleryPublisher | None = None
        self.worklist: IO[str] | None = None
        self.path = params.emit_index_removals
        if dry_run:
            return  # a dry run hands nothing over and writes nothing
        if params.enqueue_index_removal:
            self.publisher = publisher(ctx.settings)
        if self.path is not None:
            try:
                self.worklist = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise ConfigError(f"cannot write the index-removal work list {self.path}: {exc.strerror}") from None

    def hand_over(self, pass_name: str, cutoff: datetime, rows: list[Any]) -> None:
        self.would_remove += len(rows)
        if self.dry_run or not rows:
            return
        task_ids: list[str | None] = [None] * len(rows)
        if self.publisher is not None:
            task_ids = list(
                self.publisher.send_to(INDEX_REMOVAL, [INDEX_REMOVAL.call(as_str(row.id), "remove") for row in rows])
            )
            self.enqueued += len(rows)
        if self.worklist is not None:
            for row, task_id in zip(rows, task_ids, strict=True):
                record = {
                    "dataset_id": as_str(row.id),
                    "tenant_id": as_str(row.tenant_id),
                    "action": "remove",
                    "indexing_technique": row.indexing_technique,
                    "doc_form": row.chunk_structure or row.first_doc_form or "text_model",
                    "chunk_structure": row.chunk_structure,
                    "keyword_table": row.keyword_table,
                    "pass": pass_name,
                    "cutoff": cutoff.isoformat(),
                    "celery_task_id": task_id,
                    "job": JOB,
                    "queued_at": naive_utc(self.ctx.clock.now()).isoformat(),
                }
                self.worklist.write(json.dumps(record) + "\n")
            self.worklist.flush()
            os.fsync(self.worklist.fileno())  # on disk before the documents are disabled
            self.emitted += len(rows)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = {"datasets": self.would_remove}
        if not self.dry_run:
            result.update(enqueued=self.enqueued, emitted=self.emitted)
        return result

    def close(self) -> None:
        if self.worklist is not None:
            self.worklist.close()
            self.worklist = None
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None


class _Scan:
    def __init__(
        self,
        ctx: Context,
        job: JobRun,
        params: CleanUnusedDatasetsParams,
        lookup: PlanLookup | None,
        handover: _Handover,
        schema: SchemaReport,
    ) -> None:
        self.ctx, self.job, self.params, self.lookup, self.handover = ctx, job, params, lookup, handover
        columns = {column["name"] for column in sa.inspect(ctx.engine).get_columns("datasets")}
        self.has_chunk_structure = "chunk_structure" in columns  # newer Dify only
        self.has_keyword_tables = schema.has("dataset_keyword_tables")
        self.handled: set[str] = set()  # datasets an earlier pass took (a dry run must not count them twice)
        self.per_pass: dict[str, dict[str, int]] = {}
        self.skipped = {"not_sandbox": 0, "unknown_plan": 0}
        # Where the run stands, for the backlog count: the index of the pass under way and its cursor.
        self.current = 0
        self.cursor: Cursor | None = None

    def remaining(self, passes: list[Pass]) -> int:
        """Datasets still matching a pass's conditions that the run has not reached: the current pass past
        its cursor, and every later pass whole (one dataset counted once). -1 when the count timed out."""
        pending = passes[self.current :]
        if not pending:
            return 0
        d = t.datasets
        with self.ctx.engine.connect() as conn:
            matching = [
                sa.and_(*self._eligible(conn, one_pass, self.cursor if index == 0 else None))
                for index, one_pass in enumerate(pending)
            ]
            return count_or_unknown(conn, sa.select(sa.func.count()).select_from(d).where(sa.or_(*matching)))

    def run_pass(self, one_pass: Pass) -> None:
        counts = self.per_pass.setdefault(
            one_pass.name, {"datasets": 0, "documents": 0} | ({"logs": 0} if one_pass.write_logs else {})
        )
        self.cursor = None
        while self.job.keep_going():
            with self.ctx.engine.connect() as conn:
                rows = conn.execute(self._candidates(conn, one_pass, self.cursor, self.job.batch_size)).all()
            if not rows:
                self.current += 1  # this pass is through
                return
            chosen = [row for row in rows if as_str(row.id) not in self.handled]
            if one_pass.sandbox_only:
                chosen = self._sandbox_only(chosen)
            with self.job.batch() as batch:
                rows_changed: dict[str, int] = {}
                if chosen:
                    self.handover.hand_over(one_pass.name, one_pass.cutoff, chosen)
                    with batch.transaction() as conn:
                        rows_changed = self._apply(conn, one_pass, chosen)
                batch.record(scanned=len(rows), affected=len(chosen), rows=rows_changed)
            if batch.rolled_back:
                continue  # same cursor, smaller batch
            self.cursor = Cursor.of(rows[-1])
            self.handled.update(as_str(row.id) for row in chosen)
            counts["datasets"] += rows_changed.get("datasets", 0)
            counts["documents"] += rows_changed.get("documents", 0)
            if one_pass.write_logs:
                counts["logs"] += rows_changed.get("dataset_auto_disable_logs", 0)

    def _eligible(self, conn: Connection, one_pass: Pass, cursor: Cursor | None) -> list[sa.ColumnElement[bool]]:
        """Dify's conditions for a dataset to be disabled by ``one_pass``, past ``cursor``."""
        d, doc, q = t.datasets, t.documents, t.dataset_queries
        cut = one_pass.cutoff
        live = sa.and_(
            doc.c.dataset_id == d.c.id,
            doc.c.indexing_status == "completed",
            doc.c.enabled == sa.true(),
            doc.c.archived == sa.false(),
        )
        # Dify's boundaries: "new" is updated_at > cut-off, "old" is updated_at < cut-off.
        recently_updated = sa.exists().where(live, doc.c.updated_at > cut)
        updated_before = sa.exists().where(live, doc.c.updated_at < cut)
        recently_queried = sa.exists().where(q.c.dataset_id == d.c.id, q.c.created_at > cut)
        conditions = [
            d.c.created_at < cut,
            after(d.c.created_at, d.c.id, cursor),
            ~recently_updated,
            updated_before,
            ~recently_queried,
        ]
        if self.params.tenant_ids:
            conditions.append(ids_in(d.c.tenant_id, self.params.tenant_ids, conn.dialect.name))
        return conditions

    def _candidates(self, conn: Connection, one_pass: Pass, cursor: Cursor | None, limit: int) -> sa.Select[Any]:
        d, doc = t.datasets, t.documents
        first_doc_form = (
            sa.select(doc.c.doc_form)
            .where(doc.c.dataset_id == d.c.id)
            .order_by(doc.c.position, doc.c.created_at, doc.c.id)
            .limit(1)
            .scalar_subquery()
        )
        chunk_structure = d.c.chunk_structure if self.has_chunk_structure else sa.null()
        if self.has_keyword_tables:
            k = t.dataset_keyword_tables
            keyword_table: Any = (
                sa.select(k.c.data_source_type).where(k.c.dataset_id == d.c.id).limit(1).scalar_subquery()
            )
        else:
            keyword_table = sa.null()
        return (
            sa.select(
                d.c.id,
                d.c.tenant_id,
                d.c.created_at,
                d.c.indexing_technique,
                chunk_structure.label("chunk_structure"),
                first_doc_form.label("first_doc_form"),
                keyword_table.label("keyword_table"),
            )
            .where(*self._eligible(conn, one_pass, cursor))
            .order_by(d.c.created_at, d.c.id)
            .limit(limit)
        )

    def _sandbox_only(self, rows: list[Any]) -> list[Any]:
        assert self.lookup is not None
        plans = self.lookup.plans({as_str(row.tenant_id) for row in rows})
        kept = []
        for row in rows:
            plan = plans.get(as_str(row.tenant_id))
            if plan is None:
                self.skipped["unknown_plan"] += 1  # fail closed: an unknown plan is never cleaned
            elif plan != SANDBOX:
                self.skipped["not_sandbox"] += 1
            else:
                kept.append(row)
        return kept

    def _apply(self, conn: Connection, one_pass: Pass, rows: list[Any]) -> dict[str, int]:
        doc, logs = t.documents, t.dataset_auto_disable_logs
        dry_run = self.job.dry_run
        ids = [as_str(row.id) for row in rows]
        tenant_of = {as_str(row.id): as_str(row.tenant_id) for row in rows}
        in_batch = ids_in(doc.c.dataset_id, ids, conn.dialect.name)
        result = {"datasets": len(ids)}
        if one_pass.write_logs:
            # One log per enabled, non-archived document, whatever its indexing status (Dify's pass 1).
            documents = conn.execute(
                sa.select(doc.c.id, doc.c.dataset_id)
                .where(in_batch, doc.c.enabled == sa.true(), doc.c.archived == sa.false())
                .order_by(doc.c.dataset_id, doc.c.id)
            ).all()
            if documents and not dry_run:
                now = naive_utc(self.ctx.clock.now())
                conn.execute(
                    sa.insert(logs),
                    [
                        {
                            "id": t.new_id(),
                            "tenant_id": tenant_of[as_str(row.dataset_id)],
                            "dataset_id": as_str(row.dataset_id),
                            "document_id": as_str(row.id),
                            "notified": False,
                            "created_at": now,
                        }
                        for row in documents
                    ],
                )
            result["dataset_auto_disable_logs"] = len(documents)
        # Every document of the dataset, archived ones included, as Dify (disabled_at/by stay unset, as Dify).
        to_disable = sa.and_(in_batch, doc.c.enabled == sa.true())
        if dry_run:
            result["documents"] = int(
                conn.execute(sa.select(sa.func.count()).select_from(doc).where(to_disable)).scalar_one()
            )
        else:
            result["documents"] = conn.execute(sa.update(doc).where(to_disable).values(enabled=False)).rowcount
        return result


Params = CleanUnusedDatasetsParams


def check(ctx: Context, params: CleanUnusedDatasetsParams) -> None:
    plan_passes(params, ctx.clock.now())  # a bad --pass is a usage error before any question
    check_handover(params, ctx.settings)


def confirmation(ctx: Context, params: CleanUnusedDatasetsParams) -> str:
    scope = tenant_scope(params.tenant_ids)
    parts = []
    for one_pass in plan_passes(params, ctx.clock.now()):
        if not one_pass.sandbox_only:
            parts.append(f"unused for {one_pass.days} days in {scope}")
            continue
        if plan_aware(ctx.settings):
            who = f"sandbox workspaces among {scope}"
        else:
            ctx.reporter.warning(
                "BILLING_ENABLED is false: every workspace is treated as sandbox, so the sandbox pass disables "
                f"knowledge bases of {scope.upper() if not params.tenant_ids else scope} unused for {one_pass.days} "
                "days, without logs or mail (Dify's behaviour; --pass all avoids it)"
            )
            who = f"{scope} (billing off: all count as sandbox)"
        parts.append(f"unused for {one_pass.days} days in {who}")
    return (
        f"Disable the documents of knowledge bases {' and '.join(parts)} and remove their vector indexes, "
        f"in {database_description(ctx.settings)}?"
    )
