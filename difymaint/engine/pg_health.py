"""Database facts an operator needs around a purge: WAL written, xmin-horizon blockers, and VACUUM.

Deleting only marks rows dead; space becomes reusable after VACUUM, and a long-open transaction elsewhere
keeps even that from happening (docs/batching.md#vacuum-and-wal). All of this is best-effort: a managed database that
refuses one of these queries costs a warning, never the run.

On MySQL/MariaDB the same facts come from InnoDB (docs/mysql.md#health): redo bytes written
(``Innodb_os_log_written``) for WAL, ``information_schema.innodb_trx`` for old transactions (their read view
holds back purge), and ``ANALYZE TABLE`` for VACUUM (ANALYZE); purge reclaims deleted rows by itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("difymaint.pg")


_REDO_WRITTEN = sa.text(
    "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'Innodb_os_log_written'"
)


def current_wal_lsn(engine: Engine) -> str | None:
    if engine.dialect.name == "mysql":
        try:
            with engine.connect() as conn:
                value = conn.execute(_REDO_WRITTEN).scalar()
            return None if value is None else f"redo:{int(value)}"
        except DBAPIError:
            return None  # performance_schema off (MySQL 8 reads GLOBAL_STATUS there) or no privilege
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
    if start_lsn.startswith("redo:"):
        now = current_wal_lsn(engine)
        return None if now is None else max(0, int(now[5:]) - int(start_lsn[5:]))
    try:
        with engine.connect() as conn:
            value = conn.execute(
                sa.text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), CAST(:start AS pg_lsn))"),
                {"start": start_lsn},
            ).scalar_one()
            return int(value)
    except DBAPIError:
        return None


def blocker_consequence(engine: Engine) -> str:
    """What a long transaction found by :func:`long_running_transactions` does to this run's deletions."""
    if engine.dialect.name == "mysql":
        return "its read view keeps InnoDB's purge from removing the rows this run deletes until it ends"
    return "its snapshot keeps vacuum from reclaiming the rows this run deletes until it ends"


def long_running_transactions(engine: Engine, older_than_s: float) -> list[str]:
    """Other sessions whose open snapshot holds back vacuum (described for a warning)."""
    if engine.dialect.name == "mysql":
        return _innodb_long_transactions(engine, older_than_s)
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


def _innodb_long_transactions(engine: Engine, older_than_s: float) -> list[str]:
    query = sa.text(
        "SELECT t.trx_mysql_thread_id AS id, t.trx_state AS state, TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) "
        "AS age_s, p.USER AS user, p.HOST AS host FROM information_schema.innodb_trx t LEFT JOIN "
        "information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id WHERE t.trx_mysql_thread_id <> "
        "CONNECTION_ID() AND TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) >= :secs ORDER BY t.trx_started LIMIT 3"
    )
    try:
        with engine.connect() as conn:
            rows = conn.execute(query, {"secs": int(older_than_s)}).all()
    except DBAPIError:
        return []  # no PROCESS privilege: innodb_trx is refused
    return [
        f"connection {row.id} ({row.user or '?'}@{row.host or '?'}, {row.state}) open for {row.age_s}s" for row in rows
    ]


def maintenance_statement(engine: Engine) -> str:
    """What ``--vacuum-analyze`` runs on this engine (for the progress line)."""
    return "ANALYZE TABLE" if engine.dialect.name == "mysql" else "VACUUM (ANALYZE)"


def vacuum_analyze(engine: Engine, tables: Iterable[str]) -> dict[str, float]:
    """``VACUUM (ANALYZE)`` each table (never VACUUM FULL: that locks the table). Returns seconds per table.

    On MySQL/MariaDB ``ANALYZE TABLE`` (fresh statistics; InnoDB's purge reuses the space of deleted rows by
    itself). Never ``OPTIMIZE TABLE``, which rebuilds the table: docs/mysql.md#health says when to."""
    import time

    timings: dict[str, float] = {}
    if engine.dialect.name == "mysql":
        with engine.connect() as conn:
            for table in tables:
                started = time.monotonic()
                conn.execute(sa.text(f"ANALYZE TABLE `{table}`")).all()
                timings[table] = round(time.monotonic() - started, 3)
        return timings
    if engine.dialect.name != "postgresql":
        return timings
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            started = time.monotonic()
            conn.execute(sa.text(f'VACUUM (ANALYZE) "{table}"'))
            timings[table] = round(time.monotonic() - started, 3)
    return timings


@dataclass(frozen=True)
class Headroom:
    """What a purge of ``tables`` may write to the WAL at most, against the free space of the WAL's volume."""

    wal_bound_bytes: int  # heap + indexes + TOAST of the tables: deleting every row rewrites at most each page once
    free_bytes: int | None  # None: the server's disk is not visible from here (another host, a managed service)

    @property
    def short(self) -> bool:
        return self.free_bytes is not None and self.wal_bound_bytes > self.free_bytes

    def as_dict(self) -> dict[str, int | None]:
        return {"wal_bound_bytes": self.wal_bound_bytes, "free_bytes": self.free_bytes}


def disk_headroom(engine: Engine, tables: Iterable[str]) -> Headroom | None:
    """Before a purge: an upper bound of the WAL it may write and, where the data directory is visible from this
    host (difymaint beside PostgreSQL, a shared volume), the free space of the volume ``pg_wal`` is on.

    A delete writes a full-page image of each page it first touches after a checkpoint, so the tables' total size
    bounds what deleting all their rows costs in WAL (the real figure is usually far lower: docs/batching.md).
    Best effort: None when PostgreSQL will not say (a restricted role, not PostgreSQL)."""
    names = list(tables)
    if engine.dialect.name != "postgresql" or not names:
        return None
    try:
        with engine.connect() as conn:
            bound = conn.execute(
                sa.text(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "WHERE c.relkind = 'r' AND c.relname = ANY(:names) "
                    "AND c.relnamespace = current_schema()::regnamespace"
                ),
                {"names": names},
            ).scalar_one()
            directory = conn.execute(sa.text("SELECT current_setting('data_directory', true)")).scalar()
    except DBAPIError:
        return None
    free = None
    if directory:
        wal = os.path.join(str(directory), "pg_wal")
        try:
            stats = os.statvfs(wal if os.path.isdir(wal) else str(directory))
            free = stats.f_bavail * stats.f_frsize
        except OSError:
            free = None  # not on this host
    return Headroom(int(bound), free)
