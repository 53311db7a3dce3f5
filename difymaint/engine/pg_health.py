"""PostgreSQL facts an operator needs around a purge: WAL written, xmin-horizon blockers, and VACUUM.

Deleting only marks rows dead; space becomes reusable after VACUUM, and a long-open transaction elsewhere
keeps even that from happening (docs/batching.md#vacuum-and-wal). All of this is best-effort: a managed database that
refuses one of these queries costs a warning, never the run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("difymaint.pg")


def current_wal_lsn(engine: Engine) -> str | None:
    if engine.dialect.name != "postgresql":
        return None
    try:
        with engine.connect() as conn:
            # The insert position, not the write one: with synchronous_commit=off a short run's WAL may still
            # sit in the WAL buffers when it ends, and the written position would report 0 bytes.
            return str(conn.execute(sa.text("SELECT pg_current_wal_insert_lsn()")).scalar_one())
    except DBAPIError:
        return None  # e.g. a read replica or a restricted role


def wal_bytes_since(engine: Engine, start_lsn: str | None) -> int | None:
    if start_lsn is None:
        return None
    try:
        with engine.connect() as conn:
            value = conn.execute(
                sa.text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), CAST(:start AS pg_lsn))"),
                {"start": start_lsn},
            ).scalar_one()
            return int(value)
    except DBAPIError:
        return None


def long_running_transactions(engine: Engine, older_than_s: float) -> list[str]:
    """Other sessions whose open snapshot holds back vacuum (described for a warning)."""
    if engine.dialect.name != "postgresql":
        return []
    query = sa.text(
        "SELECT pid, state, EXTRACT(EPOCH FROM now() - xact_start)::bigint AS age_s, application_name "
        "FROM pg_stat_activity WHERE (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) AND pid <> pg_backend_pid() "
        "AND xact_start < now() - make_interval(secs => :secs) ORDER BY xact_start LIMIT 3"
    )
    try:
        with engine.connect() as conn:
            rows = conn.execute(query, {"secs": older_than_s}).all()
    except DBAPIError:
        return []
    return [f"pid {row.pid} ({row.application_name or 'unnamed'}, {row.state}) open for {row.age_s}s" for row in rows]


def vacuum_analyze(engine: Engine, tables: Iterable[str]) -> dict[str, float]:
    """``VACUUM (ANALYZE)`` each table (never VACUUM FULL: that locks the table). Returns seconds per table."""
    import time

    timings: dict[str, float] = {}
    if engine.dialect.name != "postgresql":
        return timings
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            started = time.monotonic()
            conn.execute(sa.text(f'VACUUM (ANALYZE) "{table}"'))
            timings[table] = round(time.monotonic() - started, 3)
    return timings
