"""The parent-row scan a cascade job is built on: which parent rows go next, batch by batch.

Two ways to walk the parents (messages, workflow runs), both keyset on ``(created_at, id)``:

* :meth:`ParentScan.walk_all`: one cursor over the whole selection (billing off: every tenant is eligible);
* :meth:`ParentScan.walk_lanes`: a cursor per lane (an app, a tenant) served round-robin, lanes coming from
  the job's ``refill`` (eligible tenants first, so a paid tenant's history is never read), with the plans
  re-checked uncached right before each delete.

The job supplies only its selection and its batch body (the cascade). A batch body returns False when its
transaction was rolled back (a timeout); the cursor then stays where it was and the batch is read again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.database import as_str, count_or_unknown
from difymaint.core.keyset import Cursor, Lane, RoundRobin, after, up_to
from difymaint.core.run import JobRun

# (rows read, ids to delete, what the run will have passed once this batch commits) → committed?
BatchBody = Callable[[Sequence[Any], list[str], sa.ColumnElement[bool]], bool]
# Narrow a page of the global walk to the ids that may go (e.g. a plan check), on the page's connection.
Keep = Callable[[Connection, Sequence[Any]], list[str]]


@dataclass
class ParentScan:
    job: JobRun
    table: sa.Table
    selection: sa.ColumnElement[bool]  # the parent rows in scope (window and the job's own predicate)
    columns: Sequence[sa.ColumnElement[Any]]  # what each row read carries (id and created_at at least)
    cursor: Cursor | None = None
    lanes: RoundRobin = field(default_factory=RoundRobin)
    lane_column: sa.ColumnElement[Any] | None = None
    skipped: int = 0  # rows read in lanes whose tenant stopped being eligible mid-run

    @property
    def created(self) -> sa.ColumnElement[Any]:
        return self.table.c.created_at

    @property
    def id(self) -> sa.ColumnElement[Any]:
        return self.table.c.id

    def select(self) -> sa.Select[Any]:
        return sa.select(*self.columns).where(self.selection)

    def walk_all(self, body: BatchBody, keep: Keep | None = None) -> None:
        """One keyset cursor over every selected row."""
        engine = self.job.ctx.engine
        while self.job.keep_going():
            with engine.connect() as conn:
                rows = conn.execute(
                    self.select()
                    .where(after(self.created, self.id, self.cursor))
                    .order_by(self.created, self.id)
                    .limit(self.job.batch_size)
                ).all()
                if not rows:
                    return
                ids = keep(conn, rows) if keep is not None else [as_str(row.id) for row in rows]
            cursor = Cursor.of(rows[-1])
            if body(rows, ids, sa.and_(self.selection, up_to(self.created, self.id, cursor))):
                self.cursor = cursor

    def walk_lanes(
        self,
        body: BatchBody,
        lane_column: sa.ColumnElement[Any],
        refill: Callable[[RoundRobin], bool],
        recheck: Callable[[set[str]], set[str]],
    ) -> None:
        """A cursor per lane (``lane_column == lane.key``), lanes from ``refill``, tenants re-checked by
        ``recheck`` right before each delete (an upgrade mid-run wins: its rows stay)."""
        self.lane_column = lane_column

        def page(lane: Lane, limit: int) -> sa.Select[Any]:
            return (
                self.select()
                .where(lane_column == lane.key, after(self.created, self.id, lane.cursor))
                .order_by(self.created, self.id)
                .limit(limit)
            )

        for served, still in self.lanes.batches(
            self.job.keep_going,
            self.job.ctx.engine,
            lambda: self.job.batch_size,
            page,
            lambda: refill(self.lanes),
            recheck,
        ):
            rows = [row for item in served for row in item.rows]
            self.skipped += sum(len(item.rows) for item in served if item.lane.tenant_id not in still)
            passed = sa.and_(
                self.selection, RoundRobin.passed(served, lane_column, self.created, self.id, tenants=still)
            )
            if body(rows, RoundRobin.row_ids(served, still), passed):
                self.lanes.advance(served, still)

    def remaining(self) -> int | None:
        """How many selected rows the scan has not reached (a partial run's backlog figure)."""
        if self.lane_column is not None:
            where = sa.and_(self.selection, self.lanes.remaining(self.lane_column, self.created, self.id))
        else:
            where = sa.and_(self.selection, after(self.created, self.id, self.cursor))
        with self.job.ctx.engine.connect() as conn:
            return count_or_unknown(conn, sa.select(sa.func.count()).select_from(self.table).where(where))
