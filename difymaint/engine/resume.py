"""A position a long job saves between runs, so that the next run continues where this one stopped.

sweep-files lists object storage in key order; with ``--max-runtime`` a run may stop half way through a listing
of millions of objects, and the next run should not start again from the first key (as Mastodon's
``--start-after``, but remembered for the operator). The position lives in the database the job already uses,
next to the run history: table ``difymaint.job_cursors`` on PostgreSQL (created on first use, outside Dify's
alembic-managed schema), keyed by job and scope (the storage it lists). Saving is best effort: a database that
refuses it costs a warning, and the next run then starts from the beginning, which is slower but just as right.
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

SCHEMA = "difymaint"  # the run history's schema (ops/history.py)
TABLE = f"{SCHEMA}.job_cursors"
_ENSURE_LOCK = 0x646966796D61696E  # the history's first-use lock: one CREATE SCHEMA at a time

log = logging.getLogger("difymaint")


class CursorStore:
    def __init__(self, engine: Engine, job: str, scope: str) -> None:
        self.engine = engine
        self.job = job
        self.scope = scope
        self._ready = False
        self.problem: str | None = None  # why the position could not be read or saved (None = fine)

    def _ensure(self) -> None:
        if self._ready:
            return
        with self.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ENSURE_LOCK})
            if conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :n"), {"n": SCHEMA}).first() is None:
                conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            conn.execute(
                sa.text(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (job text NOT NULL, scope text NOT NULL, "
                    "position text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (job, scope))"
                )
            )
        self._ready = True

    def _safely(self, what: str, action: sa.TextClause, params: dict[str, object]) -> sa.Row[tuple[str]] | None:
        try:
            self._ensure()
            with self.engine.begin() as conn:
                return conn.execute(action, params).first()
        except DBAPIError as exc:
            first = str(exc.orig or exc).strip().splitlines()[0]
            self.problem = f"cannot {what} the listing position in {TABLE}: {first}"
            log.warning(self.problem)
            return None

    def load(self) -> str | None:
        row = self._safely(
            "read",
            sa.text(f"SELECT position FROM {TABLE} WHERE job = :job AND scope = :scope"),
            {"job": self.job, "scope": self.scope},
        )
        return None if row is None else str(row[0])

    def save(self, position: str, now: datetime) -> None:
        self._safely(
            "save",
            sa.text(
                f"INSERT INTO {TABLE} (job, scope, position, updated_at) VALUES (:job, :scope, :position, :now) "
                "ON CONFLICT (job, scope) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at "
                "RETURNING position"
            ),
            {"job": self.job, "scope": self.scope, "position": position, "now": now},
        )

    def clear(self) -> None:
        self._safely(
            "clear",
            sa.text(f"DELETE FROM {TABLE} WHERE job = :job AND scope = :scope RETURNING position"),
            {"job": self.job, "scope": self.scope},
        )
