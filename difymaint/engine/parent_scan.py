"""The parent-row scan a cascade job is built on: which parent rows go next, batch by batch.

Two ways to walk the parents (messages, workflow runs), both keyset on ``(created_at, id)``:

* :meth:`ParentScan.walk_all`: one cursor over the whole selection (billing off: every tenant is eligible);
* :meth:`ParentScan.walk_lanes`: a cursor per lane (an app, a tenant) served round-robin, lanes coming from
  the job's ``refill`` (eligible tenants first, so a paid tenant's history is never read), with the plans
  re-checked uncached right before each delete.

The job supplies only its selection and its batch body (the cascade). A batch body returns False when its
transaction was rolled back (a timeout); the cursor then stays where it was and the batch is read again.

On PostgreSQL, when the job needs no id on the client, :meth:`ParentScan.walk_server` is the fast path: the
page is not read by the client at all; each batch is one statement that chooses its page with the keyset
cursor and deletes the cascade (:meth:`difymaint.engine.cascade.Cascade.batch_statement`), returning the
counts and the new cursor. On MySQL/MariaDB the same walk reads the page inside the batch's transaction and
deletes it one table at a time (:meth:`difymaint.engine.cascade.Cascade.run_batch`). With ``--workers N`` the
window is cut into 4N disjoint ``created_at`` slices at its percentiles, and N threads, each with its own
connection, take the next unstarted slice and walk it with its own cursor: no two workers ever read the same
index range (docs/batching.md#workers).
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.database import as_str, count_or_unknown, is_mysql
from difymaint.engine.cascade import BatchResult
from difymaint.engine.keyset import Cursor, KeysetCompare, Lane, RoundRobin, after, up_to
from difymaint.engine.run import JobRun

# --workers cuts the window into this many slices per worker, handed out one at a time.
SLICES_PER_WORKER = 4

# (rows read, ids to delete, what the run will have passed once this batch commits) → committed?
BatchBody = Callable[[Sequence[Any], list[str], sa.ColumnElement[bool]], bool]
# Narrow a page of the global walk to the ids that may go (e.g. a plan check), on the page's connection.
Keep = Callable[[Connection, Sequence[Any]], list[str]]
# One server-side batch: (the batch's connection, the page as a select of id and created_at) → what it did.
ServerBody = Callable[[Connection, sa.Select[Any]], BatchResult]


@dataclass(frozen=True)
class Lanes:
    """A walk per lane: the column a lane is a value of, where lanes come from, and the re-check before each
    delete (see :meth:`ParentScan.walk_lanes`)."""

    column: sa.ColumnElement[Any]
    refill: Callable[[RoundRobin], bool]
    recheck: Callable[[set[str]], set[str]]


@dataclass
class Part:
    """One worker's slice of the window (``created_at`` in ``[low, high)``) and its cursor."""

    where: sa.ColumnElement[bool]
    cursor: Cursor | None = None
    done: bool = False
    limit: int = 0  # this batch's page size, fixed when the batch starts


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
    parts: list[Part] = field(default_factory=list)  # walk_server's slices (one per worker)

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
        self.job.one_connection("when the batch's ids are needed on the client (or on SQLite)")
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

    def count_set(self, counter: Callable[[Connection], dict[str, int]]) -> bool:
        """The set-based dry run: the whole selection counted in one statement (one ``count(*)`` per table
        with the predicates a real run deletes by) and recorded as one batch. False when it hit a timeout
        (the caller then walks the batches instead)."""
        with self.job.batch() as batch:
            with batch.transaction() as conn:
                counts = counter(conn)
            parents = counts.get(self.table.name, 0)
            batch.record(scanned=parents, affected=parents, rows=counts)
        return not batch.rolled_back

    def walk_server(self, body: ServerBody) -> None:
        """Batches chosen and deleted on the server, one statement each; ``--workers`` in parallel, each
        taking the next unstarted slice when its own is done (so no worker idles while another still has a
        long slice: the run ends with its slowest batch, not its slowest slice)."""
        workers = max(1, self.job.options.workers)
        self.parts = self.slices(workers * SLICES_PER_WORKER if workers > 1 else 1)
        if len(self.parts) == 1:
            self._walk_part(self.parts[0], body, threading.Event())
            return
        failed = threading.Event()
        errors: list[BaseException] = []
        unstarted = collections.deque(self.parts)  # popleft is atomic: each slice goes to exactly one worker

        def work() -> None:
            try:
                while not failed.is_set():
                    try:
                        part = unstarted.popleft()
                    except IndexError:
                        return  # every slice is taken
                    self._walk_part(part, body, failed)
                    if not part.done:
                        return  # the run is stopping (budget, signal, lock): leave the rest for next time
            except BaseException as exc:  # handed to the main thread, which re-raises it
                errors.append(exc)
                failed.set()

        # Daemon threads: a second SIGTERM aborts the main thread at once; the process exit then drops the
        # workers' connections and PostgreSQL rolls their open batch back (nothing half-deleted).
        threads = [threading.Thread(target=work, daemon=True) for _ in range(min(workers, len(self.parts)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)  # short joins keep the main thread responsive to signals
        if errors:
            raise errors[0]

    def _walk_part(self, part: Part, body: ServerBody, failed: threading.Event) -> None:
        first, following = self._pages(part)
        while not part.done and not failed.is_set() and self.job.claim():
            limit = part.limit = self.job.batch_size
            page = first if part.cursor is None else following
            result: BatchResult | None = None
            with self.job.batch(claimed=True) as batch:
                with batch.transaction() as conn:
                    result = body(conn, page)
                if result.scanned:
                    affected = result.counts.get(self.table.name, result.scanned)
                    batch.record(scanned=result.scanned, affected=affected, rows=result.counts)
            if batch.rolled_back or result is None:
                continue  # same cursor, smaller page
            if result.last is not None:
                part.cursor = Cursor(created_at=result.last[0], id=result.last[1])
            if result.scanned < limit:
                part.done = True  # a short page was the slice's last

    def _pages(self, part: Part) -> tuple[sa.Select[Any], sa.Select[Any]]:
        """The part's page statements, built once: its first page, and the pages after its cursor. The cursor
        and the page size are bound parameters read from ``part`` when a batch executes, so every batch runs
        the same statement object (built and keyed by SQLAlchemy once; the cascade keeps its batch statement
        per page). The redundant ``created_at >= c`` lets an index on ``created_at`` alone (``embeddings``)
        bound the scan; the row comparison needs a ``(created_at, id)`` index for that. On MySQL the page is
        read by the client inside the batch's transaction (engine/cascade.py), the same statement each batch."""

        def cursor() -> Cursor:
            assert part.cursor is not None  # the following pages run only once the part has a cursor
            return part.cursor

        limit = sa.bindparam("page_limit", type_=sa.Integer(), callable_=lambda: part.limit)
        created = sa.bindparam("cursor_created_at", type_=self.created.type, callable_=lambda: cursor().created_at)
        last_id = sa.bindparam("cursor_id", type_=self.id.type, callable_=lambda: cursor().id)
        page = sa.select(self.id.label("id"), self.created.label("created_at")).where(self.selection, part.where)
        # KeysetCompare is the row value on PostgreSQL and SQLite, written out on MySQL (engine/keyset.py).
        past = sa.and_(self.created >= created, KeysetCompare(self.created, self.id, created, last_id, is_after=True))
        first = page.order_by(self.created, self.id).limit(limit)
        return first, page.where(past).order_by(self.created, self.id).limit(limit)

    def slices(self, count: int) -> list[Part]:
        """``count`` disjoint slices of the selection, cut at ``created_at`` percentiles (one index-only
        pass over the window, about the cost of a count)."""
        if count <= 1:
            return [Part(sa.true())]
        with self.job.ctx.engine.connect() as conn:
            if is_mysql(conn):
                # No ordered-set aggregates on MySQL/MariaDB: the first row of each NTILE bucket (one ordered pass).
                bucket = sa.func.ntile(count).over(order_by=self.created).label("bucket")
                ranked = sa.select(self.created.label("created_at"), bucket).where(self.selection).subquery()
                firsts = sa.select(sa.func.min(ranked.c.created_at)).group_by(ranked.c.bucket)
                cuts = [cut for (cut,) in conn.execute(firsts).all()][1:]
            else:
                cuts = list(
                    conn.execute(
                        sa.select(
                            *(sa.func.percentile_disc(k / count).within_group(self.created) for k in range(1, count))
                        ).where(self.selection)
                    ).one()
                )
        bounds = sorted({cut for cut in cuts if cut is not None})
        edges: list[Any] = [None, *bounds, None]
        parts = []
        for low, high in itertools.pairwise(edges):
            where: list[sa.ColumnElement[bool]] = []
            if low is not None:
                where.append(self.created >= sa.literal(low, self.created.type))
            if high is not None:
                where.append(self.created < sa.literal(high, self.created.type))
            parts.append(Part(sa.and_(sa.true(), *where)))
        return parts

    def walk(
        self,
        body: BatchBody,
        *,
        lanes: Lanes | None = None,
        server: Callable[[], None] | None = None,
        keep: Keep | None = None,
    ) -> None:
        """The walk a cascade job's strategy chooses: per lane when plans decide (``lanes``); otherwise the
        server-side statement where the job has one (``server``, PostgreSQL), else the client-side walk."""
        if lanes is not None:
            self.walk_lanes(body, lanes.column, lanes.refill, lanes.recheck)
        elif server is not None:
            server()
        else:
            self.walk_all(body, keep=keep)

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
        self.job.one_connection("to the billing strategies (they walk one app or tenant at a time)")

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
        elif self.parts:
            pending = [sa.and_(p.where, after(self.created, self.id, p.cursor)) for p in self.parts if not p.done]
            where = sa.and_(self.selection, sa.or_(sa.false(), *pending))
        else:
            where = sa.and_(self.selection, after(self.created, self.id, self.cursor))
        with self.job.ctx.engine.connect() as conn:
            return count_or_unknown(conn, sa.select(sa.func.count()).select_from(self.table).where(where))
