"""Single-flight locks: one run of a job at a time, across pods and hosts.

* Redis (preferred): Dify's own key names (``retention:clean_messages``, prefixed like Dify's
  ``redis_client.lock``), so difymaint and a still-enabled Dify beat exclude each other. The TTL is short
  and renewed after every batch instead of Dify's 25 h.
* PostgreSQL without Redis: a session-level advisory lock on a dedicated connection; it vanishes with the
  connection if the process dies.
* SQLite: an flock()ed file beside the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa
from redis.exceptions import LockNotOwnedError, RedisError
from sqlalchemy.engine import Connection, Engine

from difymaint.core.errors import LockLost, RedisUnavailable


class JobLock(Protocol):
    description: str

    def acquire(self) -> bool:
        """Try once, never wait. True when we now hold the lock."""

    def renew(self) -> None:
        """Extend the lease; raise LockLost when it is no longer ours."""

    def release(self) -> None: ...


class RedisJobLock:
    def __init__(self, client: Any, key: str, ttl_s: int) -> None:
        # thread_local=False: the token must be visible to whichever thread renews (docs/dify-reference.md#locks).
        self._lock = client.lock(key, timeout=ttl_s, blocking=False, thread_local=False)
        self.description = f"Redis lock {key!r} (TTL {ttl_s}s, renewed per batch)"
        self.key = key

    def acquire(self) -> bool:
        try:
            return bool(self._lock.acquire(blocking=False))
        except RedisError as exc:
            raise RedisUnavailable(f"cannot take the Redis lock {self.key!r}: {exc}") from None

    def renew(self) -> None:
        try:
            self._lock.reacquire()
        except LockNotOwnedError:
            raise LockLost(
                f"the Redis lock {self.key!r} expired or was taken by another run",
                hint="raise DIFYMAINT_LOCK_TTL above the slowest batch",
            ) from None
        except RedisError as exc:
            raise RedisUnavailable(f"cannot renew the Redis lock {self.key!r}: {exc}") from None

    def release(self) -> None:
        try:
            self._lock.release()
        except (LockNotOwnedError, RedisError):
            pass  # expired already, or Redis is gone; the TTL cleans up


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_try_advisory_lock (no server-side hash function needed)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class PostgresAdvisoryLock:
    def __init__(self, engine: Engine, key: str) -> None:
        self._engine = engine
        self._key = advisory_key(key)
        self._conn: Connection | None = None
        self.description = f"PostgreSQL advisory lock for {key!r}"

    def acquire(self) -> bool:
        conn = self._engine.connect()
        got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar())
        conn.commit()
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def renew(self) -> None:
        if self._conn is None or self._conn.closed:
            raise LockLost("the database connection holding the advisory lock was lost")
        try:
            self._conn.execute(sa.text("SELECT 1"))
            self._conn.commit()
        except sa.exc.DBAPIError:
            raise LockLost("the database connection holding the advisory lock was lost") from None

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            self._conn.commit()
        except sa.exc.DBAPIError:
            pass  # the lock dies with the session anyway
        finally:
            self._conn.close()
            self._conn = None


class FileLock:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle: IO[str] | None = None
        self.description = f"file lock {path}"

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
