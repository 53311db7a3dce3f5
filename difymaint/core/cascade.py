"""Deletion cascades as data: ordered steps (table, key column, parent) that drive the delete, the dry-run
count, the summary order, the schema needs and the optional-table skips from one description.

A step's rows are those whose ``key`` column points at a parent row being deleted: the root ids for a direct
child, or, through a sub-select, the rows of another step (``workflow_pause_reasons.pause_id`` →
``workflow_pauses.id`` → the runs). Steps run children first, the root last, inside the caller's
transaction, so a crash leaves nothing half-deleted. A dry run counts the same predicates instead.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.database import delete_or_count, ids_in
from difymaint.core.schema import Need


@dataclass(frozen=True)
class Step:
    table: sa.Table
    key: str  # the column of ``table`` that points at the parent
    parent: str = ""  # the parent step's table name; "" = the cascade's root ids
    parent_key: str = "id"  # the parent's column ``key`` points at
    optional: bool = False  # absent in older Dify versions: skipped (with its dependants) and warned about

    @property
    def name(self) -> str:
        return self.table.name


@dataclass(frozen=True)
class Cascade:
    """``steps`` in deletion order; the last one is the root (``key`` = its own id column)."""

    steps: tuple[Step, ...]

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

    def predicate(self, step: Step, ids: Sequence[str], dialect: str) -> sa.ColumnElement[bool]:
        """The rows of ``step`` that belong to the root ``ids``."""
        column = step.table.c[step.key]
        if not step.parent:
            return ids_in(column, ids, dialect)
        parent = self._step(step.parent)
        referenced = sa.select(parent.table.c[step.parent_key]).where(self.predicate(parent, ids, dialect))
        return column.in_(referenced)

    def delete(
        self, conn: Connection, ids: Sequence[str], *, dry_run: bool, skip: Collection[str] = ()
    ) -> dict[str, int]:
        """Delete (or, in a dry run, count) every step's rows for the root ``ids``, children first."""
        if not ids:
            return {}
        dialect = conn.dialect.name
        return {
            step.name: delete_or_count(conn, step.table, self.predicate(step, ids, dialect), dry_run=dry_run)
            for step in self.steps
            if step.name not in skip
        }

    def _step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"cascade has no step {name!r}")
