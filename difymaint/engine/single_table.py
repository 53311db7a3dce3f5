"""Keyset-batched delete of one table by a predicate: the shape of every "prune old rows" job.

``embeddings``, ``oauth_access_tokens``, ``dataset_queries``: one table, no child rows, a time predicate.
Each batch reads a page of ids after a persistent ``(created_at, id)`` cursor (never restarting from the
oldest row), then deletes them with one ``DELETE … WHERE id = ANY(:ids) AND <predicate>`` in its own
transaction. A dry run counts that same statement instead. The predicate is applied again in the DELETE,
so a row that changed since its page was read (a token revoked a moment ago) is left alone.

On PostgreSQL the page is not read by the client: each batch is one statement that picks the page and
deletes it (a one-step :class:`~difymaint.engine.cascade.Cascade` on the parent scan's server walk, with
``--workers`` slices), and an unbounded dry run is one ``count(*)``. MySQL/MariaDB take the same walk (the
page read and deleted inside one transaction). The portable path above is SQLite's.

Usage inside a job::

    with job_run(ctx, JOB, lock_key=..., options=..., window=..., tables=[table.name]) as job:
        sweep(job, TableSweep(table, where=table.c.created_at < cutoff))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from difymaint.core.database import as_str, count_or_unknown, delete_or_count, ids_in
from difymaint.engine.cascade import Cascade, Selection, Step, pages_on_server
from difymaint.engine.keyset import Cursor, after
from difymaint.engine.parent_scan import ParentScan
from difymaint.engine.run import JobRun


@dataclass(frozen=True)
class TableSweep:
    """Delete the rows of ``table`` matching ``where``, walking ``(created_column, id_column)``."""

    table: sa.Table
    where: sa.ColumnElement[bool]
    created_column: str = "created_at"
    id_column: str = "id"

    @property
    def created(self) -> sa.Column[Any]:
        return self.table.c[self.created_column]

    @property
    def id(self) -> sa.Column[Any]:
        return self.table.c[self.id_column]

    def after(self, cursor: Cursor | None) -> sa.ColumnElement[bool]:
        """Rows past the cursor. The redundant ``created >= c`` lets a single-column index on the
        timestamp (``embeddings.created_at_idx``) bound the scan; the row comparison alone needs a
        composite ``(created_at, id)`` index for that."""
        if cursor is None:
            return sa.true()
        return sa.and_(
            self.created >= sa.literal(cursor.created_at, self.created.type),
            after(self.created, self.id, cursor),
        )

    def page(self, cursor: Cursor | None, limit: int) -> sa.Select[Any]:
        return (
            sa.select(self.id.label("id"), self.created.label("created_at"))
            .where(self.where, self.after(cursor))
            .order_by(self.created, self.id)
            .limit(limit)
        )


def delete_or_count_ids(conn: sa.Connection, target: TableSweep, ids: list[str], *, dry_run: bool) -> int:
    """Delete (or count, in a dry run) the page's rows that still match the predicate."""
    where = sa.and_(ids_in(target.id, ids, conn.dialect.name), target.where)
    return delete_or_count(conn, target.table, where, dry_run=dry_run)


def sweep(job: JobRun, target: TableSweep) -> Cursor | None:
    """Delete (or count) every matching row in keyset batches until none is left or the budget is spent.

    Every batch is its own transaction (``job.batch()``: timing, adaptive size, lock renewal, pacing); a
    batch rolled back by a timeout is retried from the same cursor with the smaller size. Sets
    ``rows_remaining`` on the summary (0 when done, else the matching rows past the cursor) and returns
    the last cursor.
    """
    if pages_on_server(job.ctx.engine):
        return _sweep_server(job, target)
    engine = job.ctx.engine
    job.one_connection("on SQLite")
    name = target.table.name
    cursor: Cursor | None = None
    job.remaining = lambda: remaining(job, target, cursor)  # reads the cursor as it stands when asked
    while job.keep_going():
        limit = job.batch_size
        with engine.connect() as conn:
            rows = conn.execute(target.page(cursor, limit)).all()
        if not rows:
            break
        ids = [as_str(row.id) for row in rows]
        with job.batch() as batch:
            with batch.transaction() as conn:
                affected = delete_or_count_ids(conn, target, ids, dry_run=job.dry_run)
            batch.record(scanned=len(rows), affected=affected, rows={name: affected})
        if batch.rolled_back:
            continue  # same cursor, smaller page
        cursor = Cursor.of(rows[-1])
        if len(rows) < limit:
            break  # a short page was the last one: no need to ask again
    job.settle_remaining()
    return cursor


def _sweep_server(job: JobRun, target: TableSweep) -> Cursor | None:
    """PostgreSQL (MySQL: a page read and one DELETE): each batch one statement that picks its page and deletes
    it (the ids stay on the server), ``--workers`` slices in parallel; an unbounded dry run is one ``count(*)``."""
    one_table = Cascade((Step(target.table, target.id_column, where=target.where),))
    scan = ParentScan(job, target.table, selection=target.where, columns=(target.id, target.created))
    job.remaining = scan.remaining
    counted = False
    if job.dry_run and job.options.max_batches is None:
        counted = scan.count_set(lambda conn: one_table.count(conn, Selection(target.where)))
    if not counted:
        scan.walk_server(lambda conn, page: one_table.run_batch(conn, page, dry_run=job.dry_run))
    job.settle_remaining()
    cursors = [part.cursor for part in scan.parts if part.cursor is not None]
    return max(cursors, key=lambda c: (c.created_at, c.id)) if cursors else None


def remaining(job: JobRun, target: TableSweep, cursor: Cursor | None) -> int:
    """Matching rows past the cursor (-1 when the count itself timed out after 30 s)."""
    query = sa.select(sa.func.count()).select_from(target.table).where(target.where, target.after(cursor))
    with job.ctx.engine.connect() as conn:
        return count_or_unknown(conn, query, timeout_s=30)
