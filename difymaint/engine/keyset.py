"""Keyset pagination on ``(created_at, id)``: the cursor moves forward, never restarts from the oldest row.

Restarting from the oldest row each batch slows down 3x while any long transaction holds the xmin horizon
(the dead index entries of earlier batches are stepped over again; docs/batching.md#keyset-cursor); a
persistent cursor does not.

The comparison is a row value ``(created_at, id) > (:c, :id)`` on PostgreSQL and SQLite. MariaDB's optimizer
bounds an index range with the first column of a row value only, so on MySQL/MariaDB it is written out as
``created_at >= :c AND (created_at > :c OR id > :id)``: the first term bounds the ``(created_at, id)`` index
range on both servers, the second resumes exactly inside a second shared by more rows than a batch
(``DATETIME`` keeps whole seconds; docs/mysql.md#keyset).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement, Grouping
from sqlalchemy.sql.visitors import InternalTraversal

from difymaint.core.window import TimeWindow


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: str

    @classmethod
    def of(cls, row: Any) -> Cursor:
        return cls(created_at=row.created_at, id=str(row.id))


class KeysetCompare(ColumnElement[bool]):
    """``(created, id) > (c, i)`` (``after``) or ``<=`` (not after), compiled per dialect (module docstring)."""

    inherit_cache = True
    # Not sa.Boolean: SQLAlchemy would append "= 1" to a boolean-typed element on MySQL and SQLite.
    type = sa.types.NULLTYPE  # type: ignore[assignment]
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy reads it from the class
        ("created", InternalTraversal.dp_clauseelement),
        ("id", InternalTraversal.dp_clauseelement),
        ("at", InternalTraversal.dp_clauseelement),
        ("key", InternalTraversal.dp_clauseelement),
        ("is_after", InternalTraversal.dp_boolean),
    ]

    def __init__(self, created: Any, id_: Any, at: Any, key: Any, *, is_after: bool) -> None:
        self.created, self.id, self.at, self.key, self.is_after = created, id_, at, key, is_after

    def self_group(self, against: Any = None) -> ColumnElement[Any]:
        return Grouping(self)  # always parenthesised: NOT, AND and OR wrap it safely

    def row_value(self) -> sa.ColumnElement[bool]:
        left, right = sa.tuple_(self.created, self.id), sa.tuple_(self.at, self.key)
        return left > right if self.is_after else left <= right

    def written_out(self) -> sa.ColumnElement[bool]:
        if self.is_after:
            return sa.and_(self.created >= self.at, sa.or_(self.created > self.at, self.id > self.key))
        return sa.or_(self.created < self.at, sa.and_(self.created == self.at, self.id <= self.key))


@compiles(KeysetCompare)
def _compile_row_value(element: KeysetCompare, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.row_value(), **kw)


@compiles(KeysetCompare, "mysql")
def _compile_written_out(element: KeysetCompare, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.written_out(), **kw)


def _compare(
    created_col: sa.ColumnElement[Any], id_col: sa.ColumnElement[Any], cursor: Cursor, *, is_after: bool
) -> sa.ColumnElement[bool]:
    at, key = sa.literal(cursor.created_at, created_col.type), sa.literal(cursor.id, id_col.type)
    return KeysetCompare(created_col, id_col, at, key, is_after=is_after)


def after(
    created_col: sa.ColumnElement[Any], id_col: sa.ColumnElement[Any], cursor: Cursor | None
) -> sa.ColumnElement[bool]:
    """Rows strictly after the cursor in ``(created_at, id)`` order."""
    if cursor is None:
        return sa.true()
    return _compare(created_col, id_col, cursor, is_after=True)


def up_to(created_col: sa.ColumnElement[Any], id_col: sa.ColumnElement[Any], cursor: Cursor) -> sa.ColumnElement[bool]:
    """Rows at or before the cursor (what a run has already passed)."""
    return _compare(created_col, id_col, cursor, is_after=False)


def in_window(created_col: sa.ColumnElement[Any], window: TimeWindow) -> sa.ColumnElement[bool]:
    condition = created_col < window.end_before
    if window.start_from is not None:
        condition = sa.and_(condition, created_col >= window.start_from)
    return condition


@dataclass(eq=False)
class Lane:
    """One of many keyset cursors served in turn: an app's messages, a tenant's runs (docs/batching.md#keyset-cursor).

    ``tenant_id`` is whose plan decides whether the lane's rows may go.
    """

    key: str
    tenant_id: str
    cursor: Cursor | None = None


@dataclass
class Served:
    lane: Lane
    rows: list[Any]
    asked: int  # the page limit it was read with: a full page may have more, a short one drained the lane


class RoundRobin:
    """A queue of lanes; each batch takes pages from the lanes at the front until the batch is full.

    Cursors move only in :meth:`advance`, after the batch committed, so a rolled-back batch is re-read from
    the same place. Served lanes rotate to the back, so one huge app cannot starve the others under a
    --max-runtime budget.
    """

    def __init__(self) -> None:
        self.queue: deque[Lane] = deque()

    def __bool__(self) -> bool:
        return bool(self.queue)

    def extend(self, lanes: Iterable[Lane]) -> None:
        self.queue.extend(lanes)

    def take(self, conn: Connection, limit: int, page: Callable[[Lane, int], sa.Select[Any]]) -> list[Served]:
        served: list[Served] = []
        for lane in list(self.queue):
            if limit <= 0:
                break
            rows = list(conn.execute(page(lane, limit)).all())
            served.append(Served(lane, rows, limit))
            limit -= len(rows)
        return served

    def batches(
        self,
        keep_going: Callable[[], bool],
        engine: Engine,
        limit: Callable[[], int],
        page: Callable[[Lane, int], sa.Select[Any]],
        refill: Callable[[], bool],
        recheck: Callable[[set[str]], set[str]],
    ) -> Iterator[tuple[list[Served], set[str]]]:
        """Serve batches until the budget ends or every lane is drained.

        Each batch yields the served pages and the tenants still eligible after ``recheck`` (an uncached plan
        look-up right before deleting). The caller deletes, then calls :meth:`advance` only after its commit.
        """
        while keep_going():
            if not self and not refill():
                return
            with engine.connect() as conn:
                served = self.take(conn, limit(), page)
            if not any(item.rows for item in served):
                self.retire(served)
                continue
            yield served, recheck(self.tenants(served))

    def retire(self, served: Iterable[Served]) -> None:
        """Drop lanes that returned nothing (drained)."""
        for item in served:
            if not item.rows:
                self.queue.remove(item.lane)

    def advance(self, served: Iterable[Served], keep_tenants: set[str]) -> None:
        """Commit a batch's cursors; lanes whose tenant is no longer eligible leave the queue."""
        for item in served:
            self.queue.remove(item.lane)
            if item.lane.tenant_id not in keep_tenants:
                continue  # upgraded (or whitelisted) mid-run: leave its rows alone
            if item.rows:
                item.lane.cursor = Cursor.of(item.rows[-1])
            if len(item.rows) == item.asked:
                self.queue.append(item.lane)

    @staticmethod
    def tenants(served: Iterable[Served]) -> set[str]:
        """The tenants whose lanes returned rows (to re-check their plans before deleting)."""
        return {item.lane.tenant_id for item in served if item.rows}

    @staticmethod
    def row_ids(served: Iterable[Served], tenants: set[str]) -> list[str]:
        """Ids of the served rows whose tenant is in ``tenants``."""
        return [str(row.id) for item in served if item.lane.tenant_id in tenants for row in item.rows]

    @staticmethod
    def passed(
        served: Iterable[Served],
        key_col: sa.ColumnElement[Any],
        created_col: sa.ColumnElement[Any],
        id_col: sa.ColumnElement[Any],
        tenants: set[str] | None = None,
    ) -> sa.ColumnElement[bool]:
        """Rows the lanes have passed once this batch commits (what a dry run counts as gone)."""
        conditions = [
            sa.and_(key_col == item.lane.key, up_to(created_col, id_col, Cursor.of(item.rows[-1])))
            for item in served
            if item.rows and (tenants is None or item.lane.tenant_id in tenants)
        ]
        return sa.or_(*conditions) if conditions else sa.false()

    def remaining(
        self, key_col: sa.ColumnElement[Any], created_col: sa.ColumnElement[Any], id_col: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[bool]:
        """Rows the queued lanes have not reached yet (for a partial run's backlog figure)."""
        conditions = [sa.and_(key_col == lane.key, after(created_col, id_col, lane.cursor)) for lane in self.queue]
        return sa.or_(*conditions) if conditions else sa.false()
