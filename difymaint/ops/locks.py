"""Seeing and releasing the single-flight locks from outside the run that holds them (``difymaint locks``).

* Redis: every key under Dify's ``retention:`` and difymaint's ``maintenance:`` families — holder token
  (redis-py's lock value), TTL.
* PostgreSQL: granted advisory locks in ``pg_locks`` whose key is one of the known lock names
  (:func:`difymaint.core.locking.advisory_key`), with the holding backend from ``pg_stat_activity``.
* MySQL/MariaDB: the named locks (``GET_LOCK``) of the known lock names, their holding connection from
  ``IS_USED_LOCK`` and ``information_schema.PROCESSLIST``.
* SQLite: the flock()ed files beside the database.

A live holder renews its lease (Redis: the TTL goes back up; PostgreSQL, MySQL: its session runs a statement
per renewal), so :func:`still_renewing` watches for that over a short interval before a release is allowed.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine

from difymaint.core.errors import DifymaintError, RedisUnavailable
from difymaint.core.locking import advisory_key, mysql_lock_name, sqlite_lock_path
from difymaint.core.redis_client import KeyNamer

LOCK_FAMILIES = ("retention:", "maintenance:")

# Atomic "delete only if the holder is still the one we looked at", as redis-py's own release script does.
_DELETE_IF_VALUE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


@dataclass
class LockInfo:
    name: str  # the logical key (retention:clean_messages)
    backend: str  # redis | postgres | mysql | file
    where: str  # the Redis key, the advisory key, or the file
    holder: str | None  # Redis token, backend pid, or file pid
    ttl_s: float | None = None
    since: datetime | None = None  # PostgreSQL: when the holding session started
    client: str | None = None  # PostgreSQL: application_name@address

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "where": self.where,
            "holder": self.holder,
            "ttl_s": self.ttl_s,
            "since": self.since.isoformat() if self.since else None,
            "client": self.client,
        }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def redis_locks(client: Any, namer: KeyNamer) -> list[LockInfo]:
    found: list[LockInfo] = []
    try:
        for family in LOCK_FAMILIES:
            pattern = namer.key(family) + "*"
            for raw in client.scan_iter(match=pattern, count=500):
                key = _text(raw) or ""
                token = _text(client.get(key))
                pttl = client.pttl(key)
                if token is None and pttl == -2:
                    continue  # released between SCAN and GET
                logical = key[len(namer.key(family)) - len(family) :]
                found.append(LockInfo(logical, "redis", key, token, pttl / 1000 if pttl and pttl > 0 else None))
    except RedisError as exc:
        raise RedisUnavailable(f"cannot list Redis locks: {exc}") from None
    return sorted(found, key=lambda lock: lock.name)


def advisory_locks(engine: Engine, names: Iterable[str]) -> list[LockInfo]:
    """Granted advisory locks whose 64-bit key is one of ``names`` (pg_locks splits it in classid/objid)."""
    by_key = {advisory_key(name): name for name in names}
    query = sa.text(
        "SELECT l.classid::bigint AS hi, l.objid::bigint AS lo, l.pid, a.application_name, "
        "host(a.client_addr) AS addr, a.backend_start FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    )
    found = []
    with engine.connect() as conn:
        for row in conn.execute(query).mappings():
            unsigned = (int(row["hi"]) << 32) | int(row["lo"])
            key = unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned
            name = by_key.get(key)
            if name is None:
                continue  # someone else's advisory lock
            found.append(
                LockInfo(
                    name,
                    "postgres",
                    f"advisory {key}",
                    str(row["pid"]),
                    since=row["backend_start"],
                    client=f"{row['application_name'] or '?'}@{row['addr'] or 'local'}",
                )
            )
    return sorted(found, key=lambda lock: lock.name)


def named_locks(engine: Engine, names: Iterable[str]) -> list[LockInfo]:
    """MySQL/MariaDB: the known lock names some connection holds, with that connection's user@host."""
    found = []
    with engine.connect() as conn:
        for name in sorted(set(names)):
            where = mysql_lock_name(engine.url.database, name)
            holder = conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": where}).scalar()
            if holder is None:
                continue
            row = conn.execute(
                sa.text("SELECT USER, HOST FROM information_schema.PROCESSLIST WHERE ID = :id"), {"id": int(holder)}
            ).first()
            client = f"{row[0]}@{row[1]}" if row is not None else None  # another user's: needs PROCESS
            found.append(LockInfo(name, "mysql", f"GET_LOCK {where}", str(holder), client=client))
    return found


def _connection_busy_s(engine: Engine, connection_id: int) -> int | None:
    """Seconds the connection has been in its current state (a renewal's statement resets it), or None."""
    with engine.connect() as conn:
        value = conn.execute(
            sa.text("SELECT TIME FROM information_schema.PROCESSLIST WHERE ID = :id"), {"id": connection_id}
        ).scalar()
    return None if value is None else int(value)


def file_locks(engine: Engine, names: Iterable[str]) -> list[LockInfo]:
    found = []
    for name in names:
        path = sqlite_lock_path(engine, name)
        if path.exists() and _flock_held(path):
            pid = path.read_text().strip() or None
            found.append(LockInfo(name, "file", str(path), pid))
    return found


def _flock_held(path: Path) -> bool:
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def _advisory_activity(engine: Engine, pid: int) -> tuple[Any, ...] | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT state_change, query_start, xact_start FROM pg_stat_activity WHERE pid = :pid"),
            {"pid": pid},
        ).first()
    return tuple(row) if row is not None else None


def still_renewing(
    lock: LockInfo,
    *,
    client: Any,
    engine: Engine | None,
    seconds: float,
    sleep: Callable[[float], None],
    every: float = 0.1,
) -> bool:
    """Watch the lock for ``seconds``: True when its holder renewed it (or it changed hands) meanwhile.

    Sampled every ``every`` seconds: a lease that is only running down never goes back up, a renewed one does.
    """
    sample: Callable[[], Any]
    if lock.backend == "redis":

        def sample() -> Any:
            return client.pttl(lock.where), client.get(lock.where)

    elif lock.backend == "postgres" and engine is not None and lock.holder:
        pid = int(lock.holder)

        def sample() -> Any:
            return _advisory_activity(engine, pid)

    elif lock.backend == "mysql" and engine is not None and lock.holder:
        connection_id = int(lock.holder)

        def sample() -> Any:
            return _connection_busy_s(engine, connection_id)

    else:
        return False
    previous = sample()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sleep(every)
        current = sample()
        if lock.backend == "redis":
            (before_ttl, before_value), (ttl, value) = previous, current
            if value is None:
                return False  # released meanwhile
            if value != before_value or ttl > before_ttl or ttl < 0:
                return True
        elif current is None:
            return False  # the holding session ended
        elif lock.backend == "mysql":
            if current < previous:
                return True  # the time in its state went back: the holder's renewal ran a statement
        elif current != previous:
            return True  # the session ran a statement: the holder's renewal
        previous = current
    return False


def release(lock: LockInfo, *, client: Any, engine: Engine | None) -> None:
    """Remove the lock. Redis: delete the key if the same holder still has it. PostgreSQL, MySQL: end the
    holding session (the lock dies with it). A file lock cannot be taken from a live process."""
    if lock.backend == "redis":
        if not client.eval(_DELETE_IF_VALUE, 1, lock.where, lock.holder or ""):
            raise DifymaintError(f"the lock {lock.name!r} changed hands while releasing it; nothing was removed")
        return
    if lock.backend == "postgres" and engine is not None and lock.holder:
        with engine.connect() as conn:
            ok = conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": int(lock.holder)}).scalar()
        if not ok:
            raise DifymaintError(
                f"could not end PostgreSQL session {lock.holder} holding {lock.name!r}",
                hint="it needs superuser or pg_signal_backend, or the same role as the holder",
            )
        return
    if lock.backend == "mysql" and engine is not None and lock.holder:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f"KILL CONNECTION {int(lock.holder)}"))
        except sa.exc.DBAPIError:
            raise DifymaintError(
                f"could not end MySQL connection {lock.holder} holding {lock.name!r}",
                hint="it needs CONNECTION_ADMIN (SUPER) or the same user as the holder",
            ) from None
        return
    raise DifymaintError(
        f"{lock.where} is held by process {lock.holder or '?'} on this host; a file lock ends with its process",
        hint=f"stop that process (kill {lock.holder})" if lock.holder else None,
    )
