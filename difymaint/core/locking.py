"""Single-flight locks: one run of a job at a time, across pods and hosts.

* Redis (preferred): Dify's own key names (``retention:clean_messages``, prefixed like Dify's
  ``redis_client.lock``), so difymaint and a still-enabled Dify beat exclude each other (Dify only checks that
  the key exists). The lease is short (DIFYMAINT_LOCK_TTL) and a :class:`LockHeartbeat` thread renews it every
  TTL/3 for as long as the run lives, also while a statement waits on a row lock or a retry sleeps; a run that
  dies stops renewing, so the next one gets in within one TTL. The value is the holder's identity (host, pid,
  run id, start time) as JSON, so "lock held" can name who holds it.
* PostgreSQL without Redis: a session-level advisory lock on a dedicated connection; it vanishes with the
  connection if the process dies, and the heartbeat checks that connection, so a run whose session ended
  (restart, failover, pg_terminate_backend) stops instead of carrying on unlocked.
* MySQL/MariaDB without Redis: a named lock (``GET_LOCK``) held by a dedicated connection outside the pool,
  checked by the heartbeat the same way (docs/mysql.md#locks).
* SQLite: an flock()ed file beside the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa
from redis.exceptions import LockNotOwnedError, RedisError
from sqlalchemy.engine import Connection, Engine

from difymaint.core.errors import DifymaintError, LockLost, RedisUnavailable
from difymaint.core.redis_client import short_redis_error

log = logging.getLogger("difymaint.lock")


def holder_identity(run_id: str | None = None) -> dict[str, Any]:
    """Who holds a lock: enough to find the process (host/pod name, pid) and its run."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "run_id": run_id or uuid.uuid4().hex,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool": "difymaint",
    }


class JobLock(Protocol):
    description: str
    # Seconds between renewals by the heartbeat; None = the lock cannot lapse while we live (no heartbeat).
    renew_every_s: float | None

    def acquire(self) -> bool:
        """Try once, never wait. True when we now hold the lock."""

    def renew(self) -> None:
        """Extend the lease; raise LockLost when it is no longer ours."""

    def release(self) -> None: ...


class RedisJobLock:
    def __init__(self, client: Any, key: str, ttl_s: int, *, run_id: str | None = None) -> None:
        # thread_local=False: the token must be visible to whichever thread renews (docs/dify-reference.md#locks).
        self._client = client
        self._lock = client.lock(key, timeout=ttl_s, blocking=False, thread_local=False)
        self.identity = holder_identity(run_id)
        # The token is the identity: unique (the run id) and readable by `redis-cli GET` and by a waiting run.
        self._token = json.dumps(self.identity, sort_keys=True)
        self.description = f"Redis lock {key!r} (lease {ttl_s}s, renewed every {ttl_s / 3:.0f}s)"
        # Without our lease: "lock held" quotes the holder's lease (holder()), not the waiting run's setting.
        self.label = f"Redis lock {key!r}"
        self.key = key
        self.ttl_s = ttl_s
        self.renew_every_s: float | None = ttl_s / 3

    def acquire(self) -> bool:
        try:
            return bool(self._lock.acquire(blocking=False, token=self._token)) or self._take_over_dead_holder()
        except RedisError as exc:
            raise RedisUnavailable(f"cannot take the Redis lock {self.key!r}: {short_redis_error(exc)}") from None

    def _take_over_dead_holder(self) -> bool:
        """Take the key over when its holder is provably gone: a difymaint run on *this* host whose pid no
        longer exists (kill -9, OOM). Anything else (another host or pod, Dify's beat, a live pid, a reused
        pid) waits for the lease to lapse. The swap is atomic: only if the key still holds the dead value."""
        raw = self._client.get(self.key)
        if raw is None:
            return False
        try:
            who = json.loads(raw)
            dead = who.get("host") == self.identity["host"] and not _pid_alive(int(who["pid"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            return False
        if not dead:
            return False
        swapped = self._client.eval(_SWAP_IF_EQUAL, 1, self.key, raw, self._token, int(self.ttl_s * 1000))
        if not swapped:
            return False
        self._lock.local.token = self._token.encode()
        log.warning("took over the lock %r from a dead run (pid %s on this host)", self.key, who["pid"])
        return True

    def holder(self) -> str:
        """Who holds the key now and for how much longer (for "lock held" and "lock lost" lines)."""
        try:
            raw = self._client.get(self.key)
            ttl_ms = self._client.pttl(self.key)
        except RedisError:
            return "holder unknown (Redis error)"
        if raw is None:
            return "nobody (the key is gone)"
        name = describe_holder(raw)
        left = f", lease ends in {ttl_ms / 1000:.0f}s" if isinstance(ttl_ms, int) and ttl_ms > 0 else ""
        return f"{name}{left}"

    def renew(self) -> None:
        try:
            self._lock.reacquire()
        except LockNotOwnedError:
            holder = self.holder()
            hint = (
                "the key vanished: Redis restarted, was flushed, or someone deleted it"
                if holder.startswith("nobody")
                else "another run took over after our lease lapsed"
            )
            raise LockLost(f"lost the Redis lock {self.key!r}; now held by {holder}", hint=hint) from None
        except RedisError as exc:
            raise RedisUnavailable(f"cannot renew the Redis lock {self.key!r}: {short_redis_error(exc)}") from None

    def release(self) -> None:
        try:
            self._lock.release()
        except (LockNotOwnedError, RedisError):
            pass  # expired already, or Redis is gone; the TTL cleans up


def parse_holder(raw: bytes | str) -> dict[str, Any] | None:
    """The identity a difymaint run stored as the lock value, or None (Dify's bare-uuid token, anything else)."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        who = json.loads(text)
    except ValueError:
        return None
    return who if isinstance(who, dict) and {"host", "pid", "run_id", "started_at"} <= who.keys() else None


def describe_holder(raw: bytes | str) -> str:
    who = parse_holder(raw)
    if who is None:
        return "Dify's own beat task or another tool"  # Dify's token is a bare uuid
    return f"{who['host']} pid {who['pid']} run {who['run_id']} since {who['started_at']}"


def holder_summary(raw: bytes | str) -> str:
    """``describe_holder``, plus whether the holder is provably dead (same host, pid gone: the next run takes
    the lock over at once)."""
    who = parse_holder(raw)
    text = describe_holder(raw)
    if who is not None and who.get("host") == socket.gethostname():
        try:
            if not _pid_alive(int(who["pid"])):
                text += " (holder dead)"
        except (TypeError, ValueError):
            pass
    return text


# SET the key to ARGV[2] with a PX TTL only if it still holds ARGV[1] (compare-and-set).
_SWAP_IF_EQUAL = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return false
"""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # 0 and negatives name process groups: never proof of death
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


ADVISORY_CHECK_EVERY_S = 5.0  # how soon a run notices that its advisory lock's session ended


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_try_advisory_lock (no server-side hash function needed)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class SessionLock:
    """A lock that lives exactly as long as one database session: the subclasses name the server's SQL.

    The heartbeat (``renew``) checks that the session still exists: a restart, failover or killed session
    ends the lock silently, and with SQLALCHEMY_POOL_PRE_PING the batches would reconnect and carry on
    without it."""

    kind = "session lock"
    server = "the database"
    acquire_sql = ""
    release_sql = ""
    # A statement that returns 1 while this session still holds the lock; SELECT 1 where holding is implied.
    holds_sql = "SELECT 1"

    def __init__(self, engine: Engine, description: str, params: dict[str, Any]) -> None:
        self._engine = engine
        self._params = params
        self._conn: Connection | None = None
        self.description = description  # how messages name it: "PostgreSQL advisory lock for 'x'"
        self.renew_every_s: float | None = ADVISORY_CHECK_EVERY_S

    def _connect(self) -> Connection:
        return self._engine.connect()

    def acquire(self) -> bool:
        conn = self._connect()
        got = conn.execute(sa.text(self.acquire_sql), self._params).scalar() in (True, 1)
        conn.commit()
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def renew(self) -> None:
        lost = LockLost(
            f"lost the database connection mid-run: the session holding the {self.kind} ended ({self.server} "
            "restarted, failed over, or ended the session)",
            hint="stopped before the next batch, as another run may take the lock now; committed batches stay "
            "done and the next run continues",
        )
        if self._conn is None or self._conn.closed:
            raise lost
        try:
            holds = self._conn.execute(sa.text(self.holds_sql), self._params).scalar()
            self._conn.commit()
        except sa.exc.SQLAlchemyError:  # the driver's error, or SQLAlchemy's refusal to reuse a dead one
            raise lost from None
        if holds not in (True, 1):
            raise lost

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(sa.text(self.release_sql), self._params)
            self._conn.commit()
        except sa.exc.SQLAlchemyError:
            pass  # the lock dies with the session anyway (a dead session: nothing left to unlock)
        finally:
            self._conn.close()
            self._conn = None


class PostgresAdvisoryLock(SessionLock):
    kind = "advisory lock"
    server = "PostgreSQL"
    acquire_sql = "SELECT pg_try_advisory_lock(:k)"
    release_sql = "SELECT pg_advisory_unlock(:k)"

    def __init__(self, engine: Engine, key: str) -> None:
        super().__init__(engine, f"PostgreSQL advisory lock for {key!r}", {"k": advisory_key(key)})


MYSQL_LOCK_NAME_MAX = 64  # MySQL refuses longer GET_LOCK names


def mysql_lock_name(database: str | None, key: str) -> str:
    """The named lock for ``key`` in ``database``: GET_LOCK names are server-wide, so the database is part
    of the name (two Difys on one server never exclude each other); a name over 64 characters keeps its
    start and gets a digest of the whole."""
    name = f"{database or ''}:{key}"
    if len(name) <= MYSQL_LOCK_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:24]
    return f"{name[: MYSQL_LOCK_NAME_MAX - 25]}~{digest}"


class MySQLNamedLock(SessionLock):
    kind = "named lock"
    server = "MySQL"
    acquire_sql = "SELECT GET_LOCK(:name, 0)"
    release_sql = "SELECT RELEASE_LOCK(:name)"
    holds_sql = "SELECT IS_USED_LOCK(:name) = CONNECTION_ID()"

    def __init__(self, engine: Engine, key: str) -> None:
        self.name = mysql_lock_name(engine.url.database, key)
        super().__init__(engine, f"MySQL named lock {self.name!r}", {"name": self.name})

    def _connect(self) -> Connection:
        conn = self._engine.connect()
        # Off the pool: the lock must never go back to the pool with a pooled connection, nor be reset by it.
        conn.detach()
        return conn


def database_lock(engine: Engine, key: str) -> PostgresAdvisoryLock | MySQLNamedLock | None:
    """The session lock this engine offers for ``key`` (None on SQLite)."""
    if engine.dialect.name == "postgresql":
        return PostgresAdvisoryLock(engine, key)
    if engine.dialect.name == "mysql":
        return MySQLNamedLock(engine, key)
    return None


class FileLock:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle: IO[str] | None = None
        self.description = f"file lock {path}"
        self.renew_every_s: float | None = None  # flock() is released only by the process's death

    def acquire(self) -> bool:
        handle = open(self._path, "a+")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return True

    def renew(self) -> None:
        return None

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class NoLock:
    description = "no lock (--no-lock)"
    renew_every_s: float | None = None

    def acquire(self) -> bool:
        return True

    def renew(self) -> None:
        return None

    def release(self) -> None:
        return None


def sqlite_lock_path(engine: Engine, key: str) -> Path:
    database = engine.url.database
    safe = key.replace(":", "_").replace("/", "_")
    if not database or database == ":memory:":
        return Path(os.environ.get("TMPDIR", "/tmp")) / f"difymaint-{safe}.lock"
    return Path(f"{database}.{safe}.lock")


class LockHeartbeat:
    """Renews a lock from a background thread every ``lock.renew_every_s`` while the run works.

    The main thread may sit in one statement for minutes (a row lock, a slow DELETE); the lease must not lapse
    meanwhile, or a second run gets in. A renewal that finds the lock gone or someone else's is recorded in
    :attr:`lost`; the run checks it at each batch boundary (:meth:`check`) and stops with :class:`LockLost`
    rather than deleting further. Transient Redis errors are retried until the lease would have run out.
    For the advisory lock a "renewal" checks that the session holding it is still alive. No-op for the locks
    that cannot lapse (file, none).
    """

    def __init__(self, lock: JobLock) -> None:
        self.lock = lock
        self.lost: DifymaintError | None = None
        self.renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LockHeartbeat:
        if self.lock.renew_every_s is not None:
            self._thread = threading.Thread(target=self._beat, name="difymaint-lock-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def check(self) -> None:
        """Raise LockLost at a batch boundary once a renewal failed for good."""
        if self.lost is not None:
            raise self.lost

    def _beat(self) -> None:
        interval = self.lock.renew_every_s or 1.0
        last_ok = time.monotonic()
        while not self._stop.wait(interval):
            try:
                self.lock.renew()
                self.renewals += 1
                last_ok = time.monotonic()
            except LockLost as exc:
                self.lost = exc
                log.error("%s", exc.message)
                return
            except DifymaintError as exc:
                # Redis unreachable: keep trying while the lease may still be ours (3 intervals = 1 TTL).
                if time.monotonic() - last_ok >= 3 * interval:
                    self.lost = LockLost(
                        f"could not renew the lock for a whole lease ({exc.message})",
                        hint="another run may hold it now; check Redis",
                    )
                    log.error("%s", self.lost.message)
                    return
                log.warning("lock renewal failed, retrying: %s", exc.message)
