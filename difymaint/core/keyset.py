"""Keyset pagination on ``(created_at, id)``: the cursor moves forward, never restarts from the oldest row.

Restarting from the oldest row each batch (Sentry/Airflow shape) slows down 3x while any long transaction
holds the xmin horizon (peer-anchors §5); a persistent cursor does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from difymaint.core.window import TimeWindow


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: str

    @classmethod
    def of(cls, row: Any) -> Cursor:
        return cls(created_at=row.created_at, id=str(row.id))


def after(
    created_col: sa.ColumnElement[Any], id_col: sa.ColumnElement[Any], cursor: Cursor | None
) -> sa.ColumnElement[bool]:
    """Rows strictly after the cursor in ``(created_at, id)`` order."""
    if cursor is None:
        return sa.true()
    return sa.tuple_(created_col, id_col) > sa.tuple_(
        sa.literal(cursor.created_at, created_col.type), sa.literal(cursor.id, id_col.type)
    )


def up_to(created_col: sa.ColumnElement[Any], id_col: sa.ColumnElement[Any], cursor: Cursor) -> sa.ColumnElement[bool]:
    """Rows at or before the cursor (what a run has already passed)."""
    return sa.tuple_(created_col, id_col) <= sa.tuple_(
        sa.literal(cursor.created_at, created_col.type), sa.literal(cursor.id, id_col.type)
    )


def in_window(created_col: sa.ColumnElement[Any], window: TimeWindow) -> sa.ColumnElement[bool]:
    condition = created_col < window.end_before
    if window.start_from is not None:
        condition = sa.and_(condition, created_col >= window.start_from)
    return condition
