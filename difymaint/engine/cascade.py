"""Deletion cascades as data: ordered steps (table, key column, parent) that drive the delete, the dry-run
count, the summary order, the schema needs and the optional-table skips from one description.

A step's rows are those whose ``key`` column points at a parent row being deleted: the root ids for a direct
child, or, through a sub-select, the rows of another step (``workflow_pause_reasons.pause_id`` →
``workflow_pauses.id`` → the runs). Steps run children first, the root last, inside the caller's
transaction, so a crash leaves nothing half-deleted. A dry run counts the same predicates instead.

On PostgreSQL a batch is ONE statement (:meth:`Cascade.batch_statement`): the batch's root rows are a
``MATERIALIZED`` CTE (``doomed``: a keyset page chosen on the server, or the ids a job already holds as one
array), every step is a data-modifying CTE (``DELETE … WHERE key IN (SELECT id FROM doomed)``) or, in a dry
run, a ``count(*)`` of the same predicate, and the statement returns the per-table counts and the page's last
``(created_at, id)``. All CTEs see the same snapshot, so a child step found through its parent (offloads
through node executions) still sees the parent rows its sibling CTE deletes. One round trip instead of one
per table, and the ids never travel to the client and back (docs/batching.md#one-statement-per-batch).

MySQL/MariaDB (no data-modifying CTE, no ``RETURNING`` on MySQL, error 1093 on a DELETE whose sub-query
reads its own table) read a keyset page first, then name its rows by their key range (the page's conditions, at
or before its last key): each child is a multi-table ``DELETE child FROM root STRAIGHT_JOIN … child ON …
WHERE <range>`` through its chain of parents, the root a ``DELETE … WHERE <range>``, all in ONE round trip (a
multi-statement query). MariaDB 10.11 evaluates a long literal ``IN`` list per statement and runs a
single-table DELETE's ``IN (SELECT …)`` as a dependent sub-query; the range is one index scan of the root
(docs/mysql.md#deletes). Ids a job already holds, and SQLite (the demo), take one ``DELETE … WHERE key IN
(<ids>)`` per step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import visitors

from difymaint.core.database import (
    delete_or_count,
    ids_array,
    ids_in,
    ids_marker,
    is_mysql,
    is_postgres,
    mysql_literal,
    mysql_statements,
    mysql_texts,
)
from difymaint.engine.keyset import KeysetCompare
from difymaint.engine.schema import Need


def pages_on_server(conn: Connection | Engine) -> bool:
    """Whether a batch can choose its own page inside its transaction (:meth:`Cascade.run_batch`, the parent
    scan's ``walk_server``): PostgreSQL in one statement, MySQL/MariaDB as a page read plus one DELETE per
    table. SQLite (the demo) walks with the ids on the client."""
    return is_postgres(conn) or is_mysql(conn)


@dataclass(frozen=True)
class Selection:
    """The root rows as a predicate over the root table (a whole window: the set-based dry run)."""

    where: sa.ColumnElement[bool]


@dataclass(frozen=True)
class IdArray:
    """The root ids as one sorted array computed on the server (a batch statement's ``doomed_ids`` CTE)."""

    ids: sa.ScalarSelect[Any]


@dataclass(frozen=True)
class Marked:
    """The root ids as the placeholder :func:`~difymaint.core.database.mysql_statements` fills in (MySQL)."""


MARKED = Marked()

# Which root rows a statement is about: ids held by the client, a server-side array of them (one array
# probed by every step; IN (SELECT …) measured ~25 % slower, as it hashes the ids again for each step), the
# MySQL placeholder for them, or a predicate.
Roots = Sequence[str] | IdArray | Marked | Selection


@dataclass(frozen=True)
class BatchResult:
    """What one batch statement did: per-table counts, root rows in the page, and the page's last key."""

    counts: dict[str, int]
    scanned: int
    last: tuple[datetime, str] | None


@dataclass(frozen=True)
class Step:
    table: sa.Table
    key: str  # the column of ``table`` that points at the parent
    parent: str = ""  # the parent step's table name; "" = the cascade's root ids
    parent_key: str = "id"  # the parent's column ``key`` points at
    optional: bool = False  # absent in older Dify versions: skipped (with its dependants) and warned about
    # A predicate the rows must still match when deleted (a token revoked since its page was chosen stays).
    where: sa.ColumnElement[bool] | None = None

    @property
    def name(self) -> str:
        return self.table.name


@dataclass(frozen=True)
class Cascade:
    """``steps`` in deletion order; the last one is the root (``key`` = its own id column)."""

    steps: tuple[Step, ...]
    # Batch statements per page object: a keyset walk hands the same page (bound parameters read when it
    # executes) to every batch, and building and keying this many-CTE statement anew costs milliseconds of
    # client CPU per batch (engine/parent_scan.py).
    _built: OrderedDict[tuple[int, bool, tuple[str, ...]], tuple[sa.Select[Any], sa.Select[Any]]] = field(
        default_factory=OrderedDict, compare=False, repr=False
    )

    @property
    def root(self) -> Step:
        return self.steps[-1]

    def tables(self, skip: Collection[str] = ()) -> list[str]:
        """The tables in deletion order, skipped ones left out."""
        return [step.name for step in self.steps if step.name not in skip]

    def summary_order(self, skip: Collection[str] = ()) -> list[str]:
        """The root first (progress counts it), then its children in deletion order."""
        return [name for name in [self.root.name, *self.tables()[:-1]] if name not in skip]

    def needs(self) -> list[Need]:
        """What the cascade needs from the live schema (each step's key; a parent's referenced column)."""
        columns: dict[str, list[str]] = {}
        for step in self.steps:
            columns.setdefault(step.name, []).append(step.key)
            if step.parent:
                columns.setdefault(step.parent, []).append(step.parent_key)
        optional = {step.name for step in self.steps if step.optional}
        return [Need(name, tuple(dict.fromkeys(cols)), optional=name in optional) for name, cols in columns.items()]

    def skipped(self, missing: Collection[str]) -> set[str]:
        """The steps to leave out: the missing optional tables and every step found only through them."""
        skip = set(missing)
        changed = True
        while changed:
            changed = False
            for step in self.steps:
                if step.parent in skip and step.name not in skip:
                    skip.add(step.name)
                    changed = True
        return skip

    def predicate(self, step: Step, roots: Roots, dialect: str) -> sa.ColumnElement[bool]:
        """The rows of ``step`` that belong to the ``roots``."""
        found = self._belongs(step, roots, dialect)
        return found if step.where is None else sa.and_(found, step.where)

    def _belongs(self, step: Step, roots: Roots, dialect: str) -> sa.ColumnElement[bool]:
        column = step.table.c[step.key]
        if not step.parent:
            if isinstance(roots, Selection):
                if step is self.root:
                    return roots.where  # the root table itself: its own predicate, no self-join
                return column.in_(sa.select(self.root.table.c[self.root.key]).where(roots.where))
            if isinstance(roots, IdArray):
                # The explicit cast makes ANY take the array, not a sub-query's rows of arrays.
                return column == sa.any_(sa.cast(roots.ids, postgresql.ARRAY(column.type)))
            if isinstance(roots, Marked):
                return column.op("IN")(ids_marker())
            return ids_in(column, roots, dialect)
        parent = self._step(step.parent)
        referenced = sa.select(parent.table.c[step.parent_key]).where(self.predicate(parent, roots, dialect))
        return column.in_(referenced)

    def batch_statement(self, doomed: sa.Select[Any], *, dry_run: bool, skip: Collection[str] = ()) -> sa.Select[Any]:
        """The one PostgreSQL statement for a batch whose root rows ``doomed`` selects (an ``id`` column,
        and ``created_at`` when it is a keyset page). Returns one row: a count per step (``n_<table>``), the
        number of root rows (``scanned``), and the page's last ``created_at``/``id`` (when ``doomed`` has
        ``created_at``)."""
        page = doomed.cte("doomed").prefix_with("MATERIALIZED")
        # The page's ids as one array sorted once: every step's index probe (= ANY) sorts its array first,
        # and sorted input makes that sort a single pass and the probes walk the index in order (measured:
        # a 10,000-message batch 121 → 97 ms on PostgreSQL 15).
        sorted_ids = sa.select(sa.func.array_agg(postgresql.aggregate_order_by(page.c.id, page.c.id)).label("ids"))
        id_array = sorted_ids.cte("doomed_ids").prefix_with("MATERIALIZED")
        root_ids = IdArray(sa.select(id_array.c.ids).scalar_subquery())
        columns: list[sa.ColumnElement[Any]] = []
        for index, step in enumerate(self.steps):
            if step.name in skip:
                continue
            where = self.predicate(step, root_ids, "postgresql")
            if dry_run:
                count = sa.select(sa.func.count()).select_from(step.table).where(where).scalar_subquery()
            else:
                deleted = sa.delete(step.table).where(where).returning(sa.literal(1).label("one")).cte(f"d{index}")
                count = sa.select(sa.func.count()).select_from(deleted).scalar_subquery()
            columns.append(count.label(f"n_{step.name}"))
        columns.append(sa.select(sa.func.count()).select_from(page).scalar_subquery().label("scanned"))
        if "created_at" in page.c:
            last = sa.select(page.c.created_at, page.c.id).order_by(page.c.created_at.desc(), page.c.id.desc()).limit(1)
            last_cte = last.cte("last_row")
            columns += [
                sa.select(last_cte.c.created_at).scalar_subquery().label("last_created_at"),
                sa.select(last_cte.c.id).scalar_subquery().label("last_id"),
            ]
        return sa.select(*columns)

    def run_batch(
        self, conn: Connection, doomed: sa.Select[Any], *, dry_run: bool, skip: Collection[str] = ()
    ) -> BatchResult:
        """Delete (or count) one batch in one round trip on PostgreSQL (see :meth:`batch_statement`). On MySQL
        the page is read inside the batch's transaction, then its rows are deleted by their key range
        (:meth:`_mysql_range_batch`) or, when the page is not a keyset page of the root, by its ids
        (:meth:`delete`); SQLite takes the ids (module docstring)."""
        if is_mysql(conn) and not any(_has_subquery(step.where) for step in self.steps):
            page_range = _page_range(doomed, self.root.table)
            if page_range is not None:
                return self._mysql_range_batch(conn, doomed, page_range, dry_run=dry_run, skip=skip)
        if not is_postgres(conn):
            rows = conn.execute(doomed).all()
            counts = self.delete(conn, [str(row.id) for row in rows], dry_run=dry_run, skip=skip)
            counts = {step.name: counts.get(step.name, 0) for step in self.steps if step.name not in skip}
            last = (rows[-1].created_at, str(rows[-1].id)) if rows and "created_at" in rows[-1]._fields else None
            return BatchResult(counts=counts, scanned=len(rows), last=last)
        row = conn.execute(self._statement_for(doomed, dry_run=dry_run, skip=skip)).one()._mapping
        counts = {step.name: int(row[f"n_{step.name}"]) for step in self.steps if step.name not in skip}
        last = None
        if row.get("last_id") is not None:
            last = (row["last_created_at"], str(row["last_id"]))
        return BatchResult(counts=counts, scanned=int(row["scanned"]), last=last)

    def _statement_for(self, doomed: sa.Select[Any], *, dry_run: bool, skip: Collection[str]) -> sa.Select[Any]:
        key = (id(doomed), dry_run, tuple(sorted(skip)))
        built = self._built.get(key)
        if built is not None and built[0] is doomed:  # the same page object (an id may be reused once freed)
            return built[1]
        statement = self.batch_statement(doomed, dry_run=dry_run, skip=skip)
        self._built[key] = (doomed, statement)  # holds the page, so its id stays its own while memoized
        while len(self._built) > 16:
            self._built.popitem(last=False)
        return statement

    def count(self, conn: Connection, selection: Selection, *, skip: Collection[str] = ()) -> dict[str, int]:
        """The set-based dry run: one ``count(*)`` per step over every root row ``selection`` matches (no
        walk, no batches), with the same predicates a real run deletes by. One statement per table, in the
        caller's transaction: as separate statements each may use a parallel plan, which measured faster
        than the same counts as scalar sub-queries of one statement."""
        dialect = conn.dialect.name
        return {
            step.name: int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(step.table).where(self.predicate(step, selection, dialect))
                ).scalar_one()
            )
            for step in self.steps
            if step.name not in skip
        }

    def delete(
        self, conn: Connection, ids: Sequence[str], *, dry_run: bool, skip: Collection[str] = ()
    ) -> dict[str, int]:
        """Delete (or, in a dry run, count) every step's rows for the root ``ids``, children first."""
        if not ids:
            return {}
        dialect = conn.dialect.name
        if is_postgres(conn):
            # One round trip: the ids go up once, as one array, and every step reads them on the server.
            doomed = sa.select(sa.func.unnest(ids_array(ids)).label("id"))
            return self.run_batch(conn, doomed, dry_run=dry_run, skip=skip).counts
        if is_mysql(conn):
            return self._mysql_batch(conn, ids, dry_run=dry_run, skip=skip)
        return {
            step.name: delete_or_count(conn, step.table, self.predicate(step, ids, dialect), dry_run=dry_run)
            for step in self.steps
            if step.name not in skip
        }

    def _mysql_batch(
        self, conn: Connection, ids: Sequence[str], *, dry_run: bool, skip: Collection[str]
    ) -> dict[str, int]:
        """MySQL: every step's DELETE in one multi-statement round trip, children first (a dry run: one SELECT
        of every count), the ids written once as a literal list (module docstring)."""
        steps = [step for step in self.steps if step.name not in skip]
        if not steps:
            return {}
        if dry_run:
            counts = [
                sa.select(sa.func.count()).select_from(step.table).where(self.predicate(step, MARKED, "mysql"))
                for step in steps
            ]
            statements: list[sa.ClauseElement] = [sa.select(*(count.scalar_subquery() for count in counts))]
        else:
            statements = [self._mysql_delete(conn, step) for step in steps]
        values = mysql_statements(conn, statements, ids)
        return dict(zip((step.name for step in steps), values, strict=True))

    def _mysql_range_batch(
        self, conn: Connection, doomed: sa.Select[Any], page_range: PageRange, *, dry_run: bool, skip: Collection[str]
    ) -> BatchResult:
        """MySQL, a keyset page: the page is read for its length and last key, then every step's rows are
        found by joining from the root rows in the page's key range (its own conditions, at or before its last
        key) instead of by an id list: MariaDB evaluates a long ``IN`` list per statement, where the range is
        one index scan of the root (module docstring; docs/mysql.md#deletes)."""
        steps = [step for step in self.steps if step.name not in skip]
        rows = conn.execute(doomed).all()
        if not rows:
            return BatchResult(counts={step.name: 0 for step in steps}, scanned=0, last=None)
        last = (rows[-1].created_at, str(rows[-1].id))
        if not steps:  # every table skipped: the walk still moves past the page, as with an id list
            return BatchResult(counts={}, scanned=len(rows), last=last)
        created, ident, where = page_range
        upto = KeysetCompare(
            created, ident, sa.literal(last[0], created.type), sa.literal(last[1], ident.type), is_after=False
        )
        in_range = mysql_literal(conn, sa.and_(where, upto))
        joins = [self._mysql_join(conn, step, in_range) for step in steps]
        if dry_run:
            counts = ", ".join(f"(SELECT count(*) FROM {source} WHERE {found})" for _table, source, found in joins)
            texts = [f"SELECT {counts}"]
        else:
            texts = [
                f"DELETE FROM {source} WHERE {found}"
                if table == source
                else f"DELETE {table} FROM {source} WHERE {found}"
                for table, source, found in joins
            ]
        values = mysql_texts(conn, texts)
        return BatchResult(
            counts=dict(zip((step.name for step in steps), values, strict=True)), scanned=len(rows), last=last
        )

    def _mysql_join(self, conn: Connection, step: Step, in_range: str) -> tuple[str, str, str]:
        """``(table, source, condition)``: the rows of ``step`` are the rows of ``table`` in the join ``source``
        that match ``condition``. The root itself is its own range; a child is reached from the root's rows
        in the range through its chain of parents (``STRAIGHT_JOIN``: in that order, whatever the optimizer
        guesses from the table sizes). Each join key is unique on its parent's side, so the join yields each
        child row once and its count is the dry run's."""
        quote = conn.dialect.identifier_preparer
        root = quote.format_table(self.root.table)
        if step is self.root:
            found = [in_range] + ([mysql_literal(conn, step.where)] if step.where is not None else [])
            return root, root, " AND ".join(f"({part})" for part in found)
        chain = [step]
        while chain[-1].parent:
            chain.append(self._step(chain[-1].parent))
        source, found = root, [in_range]
        for link in reversed(chain):
            parent = self._step(link.parent) if link.parent else self.root
            on = link.table.c[link.key] == parent.table.c[link.parent_key if link.parent else self.root.key]
            source += f" STRAIGHT_JOIN {quote.format_table(link.table)} ON {mysql_literal(conn, on)}"
            if link.where is not None:
                found.append(mysql_literal(conn, link.where))
        return quote.format_table(step.table), source, " AND ".join(f"({part})" for part in found)

    def _mysql_delete(self, conn: Connection, step: Step) -> sa.ClauseElement:
        """A step's DELETE for :meth:`_mysql_batch`. A step found through its parent is a multi-table DELETE
        from the parent rows to the child's (``STRAIGHT_JOIN``: parents first, then the child's index, whatever
        the table sizes make the optimizer guess); its row count is the child table's alone, as only that
        table is named before FROM, and it matches :meth:`predicate` (the dry run's count): the parent key is
        unique."""
        if not step.parent:
            return sa.delete(step.table).where(self.predicate(step, MARKED, "mysql"))
        parent = self._step(step.parent)
        quote = conn.dialect.identifier_preparer
        child_table, parent_table = quote.format_table(step.table), quote.format_table(parent.table)
        where = [mysql_literal(conn, self.predicate(parent, MARKED, "mysql"))]
        if step.where is not None:
            where.append(mysql_literal(conn, step.where))
        statement = (
            f"DELETE {child_table} FROM {parent_table} STRAIGHT_JOIN {child_table} ON "
            f"{mysql_literal(conn, step.table.c[step.key] == parent.table.c[step.parent_key])} WHERE "
            + " AND ".join(f"({part})" for part in where)
        )
        return sa.text(statement.replace(":", "\\:"))  # rendered already: no bind parameters in it

    def _step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"cascade has no step {name!r}")


# A keyset page of the root: its created_at column, its id column and its conditions.
PageRange = tuple[sa.ColumnElement[Any], sa.ColumnElement[Any], sa.ColumnElement[bool]]


def _page_range(doomed: sa.Select[Any], root: sa.Table) -> PageRange | None:
    """A keyset page of ``root`` as ``(created_at column, id column, its conditions)``; None when it is not
    one (no ``created_at``, another table, another order, or a sub-query in its conditions: on MySQL a DELETE
    may not read its own table in a sub-query, error 1093). Only a page ordered by ``(created_at, id)`` is
    exactly its conditions at or before its last key: any other order would make that range wider than the
    page."""
    columns = doomed.selected_columns
    if "created_at" not in columns or "id" not in columns or doomed.get_final_froms() != [root]:
        return None
    created, ident = (_unlabelled(columns[name]) for name in ("created_at", "id"))
    order = list(doomed._order_by_clauses)
    if len(order) != 2 or not (order[0].compare(created) and order[1].compare(ident)):
        return None
    where = doomed.whereclause if doomed.whereclause is not None else sa.true()
    if _has_subquery(where):
        return None
    return created, ident, where


def _has_subquery(clause: sa.ClauseElement | None) -> bool:
    """Whether ``clause`` reads a table of its own (on MySQL, in a DELETE of that table: error 1093)."""
    return clause is not None and any(isinstance(element, sa.sql.Selectable) for element in visitors.iterate(clause))


def _unlabelled(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return column.element if isinstance(column, sa.Label) else column
