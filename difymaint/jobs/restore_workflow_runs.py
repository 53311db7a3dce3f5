"""restore-workflow-runs: put archived workflow runs back from their archive.v1.0.zip bundles
(docs/jobs/restore-workflow-runs.md).

A manual command, so its params come from :func:`params_hook` (run ids or a window, not a retention window).
:class:`_Restorer` handles one run at a time: fetch the bundle at Dify's key, verify every table file against
the manifest before touching the database, then in one transaction insert the rows whose ``id`` is not there
yet (restoring twice inserts nothing) and remove the run's ``workflow_archive_logs`` rows unless
``--keep-archive-logs``. A run that fails does so alone (:class:`_RunFailed`): nothing is inserted for it,
the others go on, and :class:`RestoreFailed` ends the job with the list. A dry run verifies and counts, and
writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.context import Context
from difymaint.core.database import as_str, ids_in
from difymaint.core.errors import DifymaintError, UsageError
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.archive import (
    ARCHIVED_TABLES,
    ArchiveInvalid,
    Bundle,
    archive_key,
    decode_record,
    read_bundle,
    reflect_tables,
)
from difymaint.dify.storage import Storage, StorageError, archive_store
from difymaint.engine.keyset import Cursor, after, in_window
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema
from difymaint.jobs.confirm import database_description
from difymaint.jobs.resolve import window_from

JOB = "restore-workflow-runs"
ID_CHUNK = 1000


@dataclass(frozen=True)
class RestoreWorkflowRunsParams:
    run_ids: tuple[str, ...] = ()
    window: TimeWindow | None = None  # on workflow_archive_logs.run_created_at
    tenant_ids: tuple[str, ...] = ()
    limit: int = 100  # runs of the window
    run: RunOptions = field(default_factory=RunOptions)
    archive_dir: Path | None = None
    keep_archive_logs: bool = False


class RestoreFailed(DifymaintError):
    """Some runs could not be restored (the others were)."""

    reference = "restore-failed"


class _RunFailed(Exception):
    """One run cannot be restored; its transaction (if any) was rolled back."""


@dataclass(frozen=True)
class ArchivedRun:
    run_id: str
    tenant_id: str
    app_id: str
    created_at: datetime

    @property
    def key(self) -> str:
        return archive_key(self.tenant_id, self.app_id, self.created_at, self.run_id)


def needs() -> list[Need]:
    return [
        Need("workflow_archive_logs", ("workflow_run_id", "tenant_id", "app_id", "run_created_at")),
        Need("workflow_runs", ("id",)),
        Need("workflow_app_logs", ("id",)),
        Need("workflow_node_executions", ("id",)),
        *(
            Need(name, ("id",), optional=True)
            for name in ARCHIVED_TABLES
            if name not in ("workflow_runs", "workflow_app_logs", "workflow_node_executions")
        ),
    ]


def check(ctx: Context, params: RestoreWorkflowRunsParams) -> None:
    if bool(params.run_ids) == (params.window is not None):
        raise UsageError(
            "give either --run-id or a window (--start-from/--end-before)",
            hint="e.g. --run-id <id>, or --start-from 2026-01-01 --end-before 2026-02-01",
        )


def run(job: JobRun, params: RestoreWorkflowRunsParams) -> None:
    ctx = job.ctx
    schema = check_schema(ctx.engine, needs(), job=JOB)
    present = [name for name in ARCHIVED_TABLES if schema.has(name)]
    job.use_tables(present)
    store = archive_store(ctx.settings, params.archive_dir, writing=False)
    try:
        store.check()
        _restore_all(job, params, present, store)
    finally:
        store.close()


def _restore_all(job: JobRun, params: RestoreWorkflowRunsParams, present: list[str], store: Storage) -> None:
    ctx = job.ctx
    restorer = _Restorer(ctx, job, params, store, reflect_tables(ctx.engine, present))
    ctx.reporter.info(f"{JOB}: from {store.description}")
    if params.run_ids:
        restorer.restore_ids()
    else:
        restorer.restore_window()
    if restorer.dropped:
        warning = "archived columns missing from this database were dropped: " + ", ".join(
            f"{table}.{column}" for table, columns in sorted(restorer.dropped.items()) for column in sorted(columns)
        )
        job.warn(warning)
    job.summary.details.update(
        source=store.description,
        runs_restored=restorer.restored,
        runs_failed=len(restorer.failures),
        failures=restorer.failures,
        archive_logs_removed=restorer.logs_removed,
        keep_archive_logs=params.keep_archive_logs,
        tenant_filter=list(params.tenant_ids) or None,
        limit=None if params.run_ids else params.limit,
    )
    job.settle_remaining()
    if restorer.failures:
        first = restorer.failures[0]
        raise RestoreFailed(
            f"{len(restorer.failures)} of {restorer.attempted} archived run(s) could not be restored; nothing was "
            f"inserted for them (first: run {first['run_id']}: {first['error']})",
            hint="the JSON summary (--json) lists every failure under details.failures",
        )


class _Restorer:
    def __init__(
        self,
        ctx: Context,
        job: JobRun,
        params: RestoreWorkflowRunsParams,
        store: Storage,
        live: dict[str, sa.Table],
    ) -> None:
        self.ctx, self.job, self.params, self.store, self.live = ctx, job, params, store, live
        self.restored = 0
        self.attempted = 0
        self.logs_removed = 0
        self.failures: list[dict[str, Any]] = []
        self.dropped: dict[str, set[str]] = {}

    # --- which runs ---------------------------------------------------------------------------------------

    def _archived(self) -> sa.Select[Any]:
        logs = t.workflow_archive_logs
        query = sa.select(
            logs.c.workflow_run_id.label("id"),
            logs.c.tenant_id,
            logs.c.app_id,
            logs.c.run_created_at.label("created_at"),
        ).distinct()
        if self.params.tenant_ids:
            query = query.where(logs.c.tenant_id.in_(self.params.tenant_ids))
        return query

    @staticmethod
    def _archived_run(row: Any) -> ArchivedRun:
        return ArchivedRun(as_str(row.id), as_str(row.tenant_id), as_str(row.app_id), row.created_at)

    def restore_ids(self) -> None:
        logs = t.workflow_archive_logs
        wanted = list(dict.fromkeys(self.params.run_ids))
        with self.ctx.engine.connect() as conn:
            found = {
                as_str(row.id): self._archived_run(row)
                for row in conn.execute(
                    self._archived().where(ids_in(logs.c.workflow_run_id, wanted, conn.dialect.name))
                )
            }
        for run_id in wanted:
            if not self.job.keep_going():
                return
            archived = found.get(run_id)
            if archived is None:
                self.attempted += 1
                self._fail(run_id, None, None, "no workflow_archive_logs row: not archived (or already restored)")
                continue
            self._restore(archived)

    def restore_window(self) -> None:
        logs = t.workflow_archive_logs
        assert self.params.window is not None
        cursor: Cursor | None = None
        while self.attempted < self.params.limit and self.job.keep_going():
            page_size = min(self.job.batch_size, self.params.limit - self.attempted)
            with self.ctx.engine.connect() as conn:
                rows = conn.execute(
                    self._archived()
                    .where(
                        in_window(logs.c.run_created_at, self.params.window),
                        after(logs.c.run_created_at, logs.c.workflow_run_id, cursor),
                    )
                    .order_by(logs.c.run_created_at, logs.c.workflow_run_id)
                    .limit(page_size)
                ).all()
            if not rows:
                return
            for row in rows:
                if not self.job.keep_going():
                    return
                self._restore(self._archived_run(row))
                cursor = Cursor.of(row)

    # --- one run ------------------------------------------------------------------------------------------

    def _fail(self, run_id: str, tenant_id: str | None, key: str | None, error: str) -> None:
        self.failures.append({"run_id": run_id, "tenant_id": tenant_id, "key": key, "error": error})
        self.ctx.reporter.warning(f"{JOB}: run {run_id} not restored: {error}")

    def _restore(self, archived: ArchivedRun) -> None:
        """Restore one run in its own transaction (retried on a batch timeout)."""
        self.attempted += 1
        try:
            bundle = read_bundle(self.store.get(archived.key))
            if bundle.run_id and bundle.run_id != archived.run_id:
                raise ArchiveInvalid(f"the bundle holds run {bundle.run_id}")
        except (StorageError, ArchiveInvalid) as exc:  # ObjectNotFound included
            self._fail(archived.run_id, archived.tenant_id, archived.key, exc.message)
            return
        while True:
            counts: dict[str, int] = {}
            failed: str | None = None
            with self.job.batch() as batch:
                try:
                    with batch.transaction() as conn:
                        counts = self._insert(conn, bundle)
                        removed = self._remove_logs(conn, archived.run_id)
                except (_RunFailed, sa.exc.IntegrityError, sa.exc.DataError) as exc:
                    failed = _reason(exc)
                    counts, removed = {}, 0
                batch.record(scanned=1, affected=0 if failed else 1, rows=counts)
            if batch.rolled_back:
                continue  # a timeout: the same run again, with the core's retry budget
            break
        if failed is not None:
            self._fail(archived.run_id, archived.tenant_id, archived.key, failed)
            return
        self.restored += 1
        self.logs_removed += removed

    def _insert(self, conn: Connection, bundle: Bundle) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in ARCHIVED_TABLES:
            records = bundle.tables.get(name, [])
            table = self.live.get(name)
            if table is None:
                if records:
                    raise _RunFailed(f"the archive holds {len(records)} {name} rows but this database has no {name}")
                continue
            values = []
            for record in records:
                try:
                    decoded, dropped = decode_record(table, record)
                except (ValueError, TypeError) as exc:
                    raise _RunFailed(f"a {name} row in the archive has a bad value: {exc}") from None
                if dropped:
                    self.dropped.setdefault(name, set()).update(dropped)
                if decoded.get("id") is None:
                    raise _RunFailed(f"a {name} row in the archive has no id")
                values.append(decoded)
            missing = self._missing(conn, table, values)
            if missing and not self.job.dry_run:
                by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
                for row in missing:
                    by_columns.setdefault(tuple(sorted(row)), []).append(row)
                for rows in by_columns.values():
                    conn.execute(sa.insert(table), rows)
            counts[name] = len(missing)
        return counts

    @staticmethod
    def _missing(conn: Connection, table: sa.Table, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows whose id is not in the table yet (restoring twice inserts nothing the second time)."""
        ids = [str(row["id"]) for row in values]
        existing: set[str] = set()
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            existing.update(
                as_str(value)
                for value in conn.execute(
                    sa.select(table.c.id).where(ids_in(table.c.id, chunk, conn.dialect.name))
                ).scalars()
            )
        seen: set[str] = set()
        missing = []
        for row in values:
            row_id = str(row["id"])
            if row_id not in existing and row_id not in seen:
                seen.add(row_id)
                missing.append(row)
        return missing

    def _remove_logs(self, conn: Connection, run_id: str) -> int:
        """Dify's restore deletes the run's archive logs after restoring it (unless --keep-archive-logs)."""
        if self.params.keep_archive_logs:
            return 0
        logs = t.workflow_archive_logs
        where = logs.c.workflow_run_id == run_id
        if self.job.dry_run:
            return int(conn.execute(sa.select(sa.func.count()).select_from(logs).where(where)).scalar_one())
        return int(conn.execute(sa.delete(logs).where(where)).rowcount)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, sa.exc.DBAPIError):
        text = str(exc.orig).strip() if exc.orig is not None else str(exc)
        return f"the database refused a row: {text.splitlines()[0] if text else type(exc).__name__}"
    return str(exc)


Params = RestoreWorkflowRunsParams
WINDOW_LIMIT = 100  # runs of a window restored by default, and the most per batch


def params_hook(ctx: Context, values: dict[str, Any]) -> RestoreWorkflowRunsParams:
    """--run-id, or a window on the archive logs; never both, never neither."""
    run_ids: tuple[str, ...] = values["run_ids"]
    window = None
    if values["start_from"] is not None or values["end_before"] is not None:
        if run_ids:
            raise UsageError("--run-id cannot be combined with --start-from/--end-before")
        window = window_from(values, ctx.clock.now(), default_days=1)
    elif not run_ids:
        raise UsageError(
            "nothing to restore: give --run-id, or --start-from/--end-before",
            hint="e.g. --run-id <id>, or --start-from 2026-01-01 --end-before 2026-02-01",
        )
    limit: int = values["limit"]
    return RestoreWorkflowRunsParams(
        run_ids=run_ids,
        window=window,
        tenant_ids=values["tenant_ids"],
        limit=limit,
        run=replace(values["run"], batch_size=min(limit, WINDOW_LIMIT)),
        archive_dir=values["archive_dir"],
        keep_archive_logs=values["keep_archive_logs"],
    )


def confirmation(ctx: Context, params: RestoreWorkflowRunsParams) -> str:
    if params.run_ids:
        what = f"{len(params.run_ids)} archived workflow run(s)"
    else:
        what = f"up to {params.limit} archived workflow runs {params.window.describe() if params.window else ''}"
    return f"Restore {what} into {database_description(ctx.settings)}?"
