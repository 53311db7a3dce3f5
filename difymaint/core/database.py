"""Engine construction from Dify's DB_* settings, per-batch transactions, and portable id predicates.

PostgreSQL, MySQL/MariaDB (Dify's ``DB_TYPE=mysql``, and OceanBase/seekdb in MySQL mode, untested) and
SQLite (the demo). What differs per engine is in docs/mysql.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from difymaint.core.errors import ConfigError, DatabaseUnavailable
from difymaint.core.settings import DB_TYPES, Settings
from difymaint.core.stop import STATEMENTS

log = logging.getLogger("difymaint")

# SQLSTATEs that mean "this batch was too big or contended", worth a smaller retry.
_RETRYABLE_SQLSTATES = {
    "57014",
    "55P03",
    "40P01",
    "40001",
}  # query_canceled, lock_not_available, deadlock, serialization
# The same on MySQL/MariaDB (error numbers): lock wait timeout, deadlock, interrupted (KILL QUERY), MariaDB's
# max_statement_time, MySQL's max_execution_time.
_RETRYABLE_MYSQL_ERRORS = {1205, 1213, 1317, 1969, 3024}
# A batch's ids travel to MySQL/MariaDB as one IN list per table (about 40 bytes an id): 10,000 stay far
# below the smallest max_allowed_packet in use (1 MB; MariaDB's default is 16 MB, MySQL 8.0's 64 MB).
MYSQL_MAX_IDS = 10000


class BatchTimeout(Exception):
    """A batch hit statement_timeout / lock_timeout / a deadlock and was rolled back."""


def uses_mysql(settings: Settings) -> bool:
    """Whether the settings point at MySQL/MariaDB (known before connecting)."""
    if settings.DIFYMAINT_DATABASE_URL:
        return settings.DIFYMAINT_DATABASE_URL.strip().split(":", 1)[0].split("+", 1)[0] in ("mysql", "mariadb")
    return settings.DB_TYPE != "postgresql"


def database_url(settings: Settings) -> URL:
    """The SQLAlchemy URL: DIFYMAINT_DATABASE_URL if set, else Dify's DB_* variables."""
    if settings.DIFYMAINT_DATABASE_URL:
        try:
            return make_url(settings.DIFYMAINT_DATABASE_URL)
        except ArgumentError:
            raise ConfigError(
                "DIFYMAINT_DATABASE_URL is not a valid SQLAlchemy URL",
                hint="e.g. postgresql://user:pass@host:5432/dify or sqlite:///path/to/file.db",
            ) from None
    if settings.DB_TYPE not in DB_TYPES:
        raise ConfigError(f"DB_TYPE={settings.DB_TYPE!r} is not supported", hint=f"one of {', '.join(DB_TYPES)}")
    query: dict[str, str] = dict(parse_qsl(settings.DB_EXTRAS)) if settings.DB_EXTRAS else {}
    mysql = settings.DB_TYPE != "postgresql"
    if settings.DB_CHARSET:
        # Dify appends client_encoding= for every DB_TYPE, a libpq name PyMySQL refuses; on MySQL the
        # operator's intent is the connection character set.
        query["charset" if mysql else "client_encoding"] = settings.DB_CHARSET
    return URL.create(
        "mysql+pymysql" if mysql else "postgresql+psycopg2",
        username=settings.DB_USERNAME,
        password=settings.DB_PASSWORD.get_secret_value() or None,
        host=settings.DB_HOST,
        port=settings.DB_PORT,
        database=settings.DB_DATABASE,
        query=query,
    )


def create_engine(settings: Settings) -> Engine:
    url = database_url(settings)
    backend = url.get_backend_name()
    if backend == "mariadb":
        url, backend = url.set(drivername="mysql+" + (url.get_driver_name() or "pymysql")), "mysql"
    if backend not in ("postgresql", "mysql", "sqlite"):
        raise ConfigError(
            f"database backend {backend!r} is not supported", hint="use PostgreSQL, MySQL/MariaDB or SQLite"
        )
    kwargs: dict[str, Any] = {"echo": settings.SQLALCHEMY_ECHO, "future": True}
    if backend == "mysql":
        return _create_mysql_engine(url, settings, kwargs)
    if backend == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg2")
        options = url.query.get("options", "")
        extra = []
        if settings.DB_SESSION_TIMEZONE_OVERRIDE:
            # Dify writes naive UTC; compare in the same zone (docs/dify-reference.md#time-handling).
            extra.append(f"-c timezone={settings.DB_SESSION_TIMEZONE_OVERRIDE}")
        # A killed client must never leave a transaction holding locks and the xmin horizon.
        extra.append("-c idle_in_transaction_session_timeout=600000")
        merged = " ".join(part for part in [options if isinstance(options, str) else " ".join(options), *extra] if part)
        url = url.set(query={**url.query, "options": merged, "application_name": "difymaint"})
        kwargs.update(
            # A CLI needs a connection for the batch and one for a lock or a count, not Dify's 30 + 10.
            pool_size=min(settings.SQLALCHEMY_POOL_SIZE, 4),
            max_overflow=min(settings.SQLALCHEMY_MAX_OVERFLOW, 2),
            pool_recycle=settings.SQLALCHEMY_POOL_RECYCLE,
            pool_pre_ping=settings.SQLALCHEMY_POOL_PRE_PING,
            pool_use_lifo=settings.SQLALCHEMY_POOL_USE_LIFO,
            pool_timeout=settings.SQLALCHEMY_POOL_TIMEOUT,
            connect_args={"connect_timeout": 10},
        )
    engine = sa.create_engine(url, **kwargs)
    if backend == "postgresql":
        # Every open connection can be dropped by the runtime deadline (core/stop.py), whatever it runs, the
        # pool's pre-ping and the dialect's own first queries on a new connection included (insert=True: ahead
        # of them, or a server that freezes right after accepting the connection holds the run).
        sa.event.listen(engine, "connect", _register_connection, insert=True)
        sa.event.listen(engine, "close", _forget_connection)
        sa.event.listen(engine, "close_detached", _forget_connection)
    return engine


def _pool_options(settings: Settings) -> dict[str, Any]:
    # A CLI needs a connection for the batch and one for a lock or a count, not Dify's 30 + 10.
    return {
        "pool_size": min(settings.SQLALCHEMY_POOL_SIZE, 4),
        "max_overflow": min(settings.SQLALCHEMY_MAX_OVERFLOW, 2),
        "pool_recycle": settings.SQLALCHEMY_POOL_RECYCLE,
        "pool_pre_ping": settings.SQLALCHEMY_POOL_PRE_PING,
        "pool_use_lifo": settings.SQLALCHEMY_POOL_USE_LIFO,
        "pool_timeout": settings.SQLALCHEMY_POOL_TIMEOUT,
    }


def _create_mysql_engine(url: URL, settings: Settings, kwargs: dict[str, Any]) -> Engine:
    """MySQL 8.0, MariaDB 10.6+ and (untested) OceanBase/seekdb through PyMySQL, Dify's driver.

    Connections allow several statements in one query (a batch's per-table DELETEs in one round trip,
    :func:`mysql_statements`); FOUND_ROWS is kept, as SQLAlchemy sets it for UPDATE row counts."""

    driver = url.get_driver_name()
    if driver not in ("", "mysql", "pymysql") or url.drivername == "mysql+mysqldb":
        raise ConfigError(
            f"MySQL driver {driver!r} is not supported", hint="use mysql+pymysql:// (the driver Dify uses)"
        )
    url = url.set(drivername="mysql+pymysql")
    if settings.DB_TYPE in ("oceanbase", "seekdb") and not settings.DIFYMAINT_DATABASE_URL:
        log.warning(
            "DB_TYPE=%s: running in MySQL mode; difymaint is tested on MariaDB 10.11 only (docs/mysql.md)",
            settings.DB_TYPE,
        )
    flags = _CLIENT_FOUND_ROWS | _CLIENT_MULTI_STATEMENTS
    kwargs.update(_pool_options(settings), connect_args={"connect_timeout": 10, "client_flag": flags})
    engine = sa.create_engine(url, **kwargs)
    lock_s, statement_s = settings.DIFYMAINT_LOCK_TIMEOUT, settings.DIFYMAINT_STATEMENT_TIMEOUT

    def session(dbapi_connection: Any, record: Any) -> None:
        # Once per connection, not per batch: naive UTC for CURRENT_TIMESTAMP (Dify sets no session time zone
        # on MySQL and writes UTC), and the batch timeouts (docs/mysql.md#timeouts).
        server = str(dbapi_connection.get_server_info()).lower()
        assignments = ["time_zone = '+00:00'"]
        if "oceanbase" not in server:
            if lock_s:
                assignments.append(f"innodb_lock_wait_timeout = {int(lock_s)}")
            name, value = _mysql_statement_timeout(server, statement_s)
            record.info["difymaint_statement_timeout"] = f"{name} = {value if statement_s else 'DEFAULT'}"
            if statement_s:
                assignments.append(f"{name} = {value}")
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET SESSION " + ", ".join(assignments))
            cursor.execute("SELECT @@max_allowed_packet")
            record.info["difymaint_max_packet"] = int(cursor.fetchone()[0])

    sa.event.listen(engine, "connect", session)
    sa.event.listen(engine, "connect", _register_connection)
    sa.event.listen(engine, "close", _forget_connection)
    sa.event.listen(engine, "close_detached", _forget_connection)
    return engine


def _mysql_statement_timeout(server_version: str, seconds: float) -> tuple[str, str]:
    """MariaDB's ``max_statement_time`` (seconds, every statement) or MySQL's ``max_execution_time`` (ms,
    read-only SELECTs only)."""
    if "mariadb" in server_version.lower():
        return "max_statement_time", f"{float(seconds):g}"
    return "max_execution_time", str(int(seconds * 1000))


# MySQL client capability flags (the protocol's values, as in PyMySQL's pymysql.constants.CLIENT).
_CLIENT_FOUND_ROWS = 1 << 1
_CLIENT_MULTI_STATEMENTS = 1 << 16
IDS_MARKER = "__DIFYMAINT_IDS__"


def mysql_id_list(conn: Connection, ids: Sequence[str]) -> str:
    """The ids as one escaped SQL list, built once per batch and shared by its statements (PyMySQL would
    otherwise format every id of every statement in Python)."""
    raw: Any = conn.connection.dbapi_connection
    return ", ".join(raw.escape(str(value)) for value in ids).replace("%", "%%")


def mysql_statements(conn: Connection, statements: Sequence[sa.ClauseElement], ids: Sequence[str]) -> list[int]:
    """Run ``statements`` (each with ``IN (<IDS_MARKER>)`` where the ids go) in ONE round trip, as one
    multi-statement query; returns each statement's row count (for a SELECT: the values of its one row)."""
    id_list = mysql_id_list(conn, ids)
    return mysql_texts(conn, [mysql_literal(conn, statement).replace(IDS_MARKER, id_list) for statement in statements])


def mysql_literal(conn: Connection, clause: sa.ClauseElement) -> str:
    """``clause`` as MySQL text with its values written in (for :func:`mysql_texts`: ``%`` doubled, as PyMySQL
    formats the query it is given)."""
    return str(clause.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))


def mysql_texts(conn: Connection, texts: Sequence[str]) -> list[int]:
    """Run rendered statements (:func:`mysql_literal`) in as few round trips as ``max_allowed_packet`` allows;
    returns each statement's row count (for a SELECT: the values of its one row)."""
    # A query must fit max_allowed_packet (1 MB at the least): statements go together up to half of it.
    budget = int(conn.connection.info.get("difymaint_max_packet", 1 << 20)) // 2
    queries: list[list[str]] = [[]]
    for text in texts:
        if queries[-1] and sum(len(t) + 2 for t in queries[-1]) + len(text) > budget:
            queries.append([])
        queries[-1].append(text)
    counts: list[int] = []
    for group in queries:
        counts += _run_multi(conn, ";\n".join(group))
    return counts


def _run_multi(conn: Connection, query: str) -> list[int]:
    raw: Any = conn.connection.dbapi_connection
    counts: list[int] = []
    try:
        with raw.cursor() as cursor:
            cursor.execute(query, ())  # () un-doubles the % that the compiler doubled for PyMySQL
            while True:
                if cursor.description:  # a SELECT of counts: every value of its one row
                    counts.extend(int(value) for value in cursor.fetchone())
                else:
                    counts.append(int(cursor.rowcount))
                if not cursor.nextset():
                    break
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(query[:2000], None, exc, conn.dialect.loaded_dbapi.Error) from exc
    return counts


def ids_marker() -> sa.ColumnElement[Any]:
    """Where :func:`mysql_statements` puts the batch's ids: ``column.op("IN")(ids_marker())``."""
    return sa.literal_column(f"({IDS_MARKER})")


def is_mysql(conn: Connection | Engine) -> bool:
    """MySQL, MariaDB and the MySQL-compatible servers (one SQLAlchemy dialect)."""
    return conn.dialect.name == "mysql"


def _register_connection(dbapi_connection: Any, _record: Any = None) -> None:
    abort = _socket_abort(dbapi_connection)
    if abort is not None:
        STATEMENTS.connection_opened(id(dbapi_connection), abort)


def _forget_connection(dbapi_connection: Any, _record: Any = None) -> None:
    STATEMENTS.connection_closed(id(dbapi_connection))


def describe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def check_connection(engine: Engine) -> None:
    """Fail early with one readable line when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except TypeError as exc:  # PyMySQL takes only the connection arguments it knows
        raise ConfigError(
            f"the database driver refused a connection parameter: {exc}",
            hint="check DB_EXTRAS / the query string of --database-url",
        ) from None
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot connect to the database {describe_url(engine)}: {reason}",
            hint="check DB_HOST/DB_PORT/DB_USERNAME/DB_PASSWORD/DB_DATABASE or --database-url",
        ) from None


def is_postgres(conn: Connection | Engine) -> bool:
    return conn.dialect.name == "postgresql"


@contextmanager
def batch_transaction(engine: Engine, settings: Settings) -> Iterator[Connection]:
    """One transaction for one batch, with per-batch timeouts on PostgreSQL.

    Raises :class:`BatchTimeout` (after rollback) when the batch was cancelled by a timeout or deadlock,
    so the caller can retry the same cursor with a smaller batch.
    """
    try:
        with engine.begin() as conn:
            if is_postgres(conn):
                # Both timeouts in one round trip (set_config(..., true) is SET LOCAL): a batch is otherwise
                # one statement, so every extra round trip shows in the batch time.
                limits = {
                    "statement_timeout": settings.DIFYMAINT_STATEMENT_TIMEOUT,
                    "lock_timeout": settings.DIFYMAINT_LOCK_TIMEOUT,
                }
                calls = [
                    sa.func.set_config(name, f"{int(seconds)}s", True) for name, seconds in limits.items() if seconds
                ]
                if calls:
                    conn.execute(sa.select(*calls))
            # SIGTERM/SIGINT may cancel this batch's statement from the signal watcher (core/stop.py).
            with STATEMENTS.running(_driver_cancel(conn)):
                yield conn
    except DBAPIError as exc:
        interruption = _interruption(exc)
        if interruption is not None:
            # A second signal interrupted the driver mid-reply (PyMySQL reads its protocol in Python), so the
            # rollback failed on the half-read connection: the interruption is what happened; the server
            # rolls the batch back as the connection goes.
            raise interruption from None
        if getattr(exc.orig, "pgcode", None) in _RETRYABLE_SQLSTATES or _mysql_errno(exc) in _RETRYABLE_MYSQL_ERRORS:
            raise BatchTimeout(str(exc.orig).strip().splitlines()[0]) from exc
        raise


def _interruption(exc: BaseException) -> BaseException | None:
    """The Interrupted / KeyboardInterrupt this error was raised while handling, if any."""
    seen: BaseException | None = exc.__context__
    while seen is not None:
        if not isinstance(seen, Exception):
            return seen
        seen = seen.__context__
    return None


def _mysql_errno(exc: DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) and type(exc.orig).__module__.startswith("pymysql") else None


@contextmanager
def tracked(conn: Connection) -> Iterator[Connection]:
    """Register ``conn``'s statements like a batch's, so a signal or the runtime deadline can cancel them
    (for writes made during a run outside the batch transaction: the run history's heartbeat)."""
    with STATEMENTS.running(_driver_cancel(conn)):
        yield conn


def _socket_abort(raw: Any) -> Callable[[], None] | None:
    """Shut a DBAPI connection's socket down from our side (psycopg2, PyMySQL): a call blocked in the driver
    then fails at once, whatever the server does. None for drivers without a socket (sqlite3)."""
    fileno = getattr(raw, "fileno", None)
    if not callable(fileno) and getattr(raw, "_sock", None) is not None:  # PyMySQL keeps its socket here
        fileno = raw._sock.fileno
    if not callable(fileno):
        return None

    def abort() -> None:
        import socket

        with socket.socket(fileno=os.dup(fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)

    return abort


def _driver_cancel(conn: Connection) -> Callable[[], None]:
    """The DBAPI's thread-safe cancel of the statement running on ``conn`` (a no-op when there is none)."""
    raw: Any = conn.connection.dbapi_connection
    if is_mysql(conn):
        return _mysql_kill_query(conn.engine, int(raw.thread_id()))
    cancel = getattr(raw, "cancel", None) or getattr(raw, "interrupt", None)  # psycopg2 / sqlite3
    return cancel if callable(cancel) else (lambda: None)


def _mysql_kill_query(engine: Engine, thread_id: int) -> Callable[[], None]:
    """MySQL has no client-side cancel: ``KILL QUERY`` from a second, short-lived connection (outside the pool,
    which may be exhausted by then) stops the statement of connection ``thread_id``."""

    def cancel() -> None:
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        other = engine.dialect.loaded_dbapi.connect(*cargs, **{**cparams, "connect_timeout": 5})
        try:
            with other.cursor() as cursor:
                cursor.execute(f"KILL QUERY {int(thread_id)}")
        finally:
            other.close()

    return cancel


def ids_array(ids: Sequence[str]) -> sa.ColumnElement[Any]:
    """The ids as one ``uuid[]`` parameter (PostgreSQL)."""
    return sa.cast(
        sa.bindparam(None, list(ids), type_=postgresql.ARRAY(sa.Text())),
        postgresql.ARRAY(postgresql.UUID(as_uuid=False)),
    )


def ids_in(column: sa.ColumnElement[Any], ids: Sequence[str], dialect_name: str) -> sa.ColumnElement[bool]:
    """``column = ANY(:ids)`` on PostgreSQL (one array parameter, index-friendly), ``IN (...)`` elsewhere."""
    if dialect_name == "postgresql":
        array = sa.cast(
            sa.bindparam(None, list(ids), type_=postgresql.ARRAY(sa.Text())),
            postgresql.ARRAY(postgresql.UUID(as_uuid=False)),
        )
        return column == sa.any_(array)
    return column.in_(list(ids))


def ids_not_in(column: sa.ColumnElement[Any], ids: Sequence[str], dialect_name: str) -> sa.ColumnElement[bool]:
    if not ids:
        return sa.true()
    if dialect_name == "postgresql":
        array = sa.cast(
            sa.bindparam(None, list(ids), type_=postgresql.ARRAY(sa.Text())),
            postgresql.ARRAY(postgresql.UUID(as_uuid=False)),
        )
        return column != sa.all_(array)
    return column.not_in(list(ids))


def delete_or_count(conn: Connection, table: sa.Table, where: sa.ColumnElement[bool], *, dry_run: bool) -> int:
    """Delete the matching rows, or count them when ``dry_run``: the same predicate either way, which is
    what makes dry-run counts equal a real run's deletions."""
    if dry_run:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())
    return int(conn.execute(sa.delete(table).where(where)).rowcount)


_count_timeout_s: ContextVar[int] = ContextVar("difymaint_count_timeout_s", default=30)


@contextmanager
def count_timeout(seconds: int) -> Iterator[None]:
    """Bound the report counts (:func:`count_or_unknown`) made inside the block, e.g. after a second signal."""
    token = _count_timeout_s.set(seconds)
    try:
        yield
    finally:
        _count_timeout_s.reset(token)


def count_or_unknown(conn: Connection, query: sa.Select[Any], *, timeout_s: int | None = None) -> int:
    """A count for a report (e.g. rows remaining); -1 when it would take longer than ``timeout_s`` (30 s, or
    what :func:`count_timeout` set)."""
    timeout_s = _count_timeout_s.get() if timeout_s is None else timeout_s
    if is_postgres(conn):
        conn.execute(sa.text(f"SET LOCAL statement_timeout = '{int(timeout_s)}s'"))
    elif is_mysql(conn) and "difymaint_statement_timeout" in conn.connection.info:
        # A session setting: the connection goes back to the pool after a report count, so the batch timeout
        # set at connect is put back afterwards (see _create_mysql_engine).
        version = str(conn.connection.dbapi_connection.get_server_info())  # type: ignore[union-attr]
        name, value = _mysql_statement_timeout(version, timeout_s)
        conn.execute(sa.text(f"SET SESSION {name} = {value}"))
        try:
            return int(conn.execute(query).scalar_one())
        except DBAPIError:
            return -1
        finally:
            conn.execute(sa.text("SET SESSION " + conn.connection.info["difymaint_statement_timeout"]))
    try:
        return int(conn.execute(query).scalar_one())
    except DBAPIError:
        return -1


def as_str(value: Any) -> str:
    """uuid columns come back as uuid.UUID from psycopg2 and as str from SQLite."""
    return str(value)
