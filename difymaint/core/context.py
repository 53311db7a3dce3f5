"""The environment a job runs in: settings, clock, reporter, stop token, and lazily built connections.

One object carries everything a job touches outside its own code, so the CLI builds a real one and tests
build their own (another clock, reporter or output stream) without patching anything.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.engine import Engine

from difymaint.core.clock import Clock, SystemClock
from difymaint.core.database import check_connection, create_engine
from difymaint.core.locking import (
    FileLock,
    JobLock,
    MySQLNamedLock,
    NoLock,
    PostgresAdvisoryLock,
    RedisJobLock,
    sqlite_lock_path,
)
from difymaint.core.redis_client import KeyNamer, check_redis, create_redis, redis_configured
from difymaint.core.reporter import LogReporter, Reporter
from difymaint.core.settings import Settings
from difymaint.core.stop import StopToken

_UNSET: Any = object()


@dataclass
class Context:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    reporter: Reporter = field(default_factory=LogReporter)
    stop: StopToken = field(default_factory=StopToken)
    # Where a job prints data a person reads (dry-run mail previews); the CLI points it at stderr under --json.
    output: IO[str] = field(default_factory=lambda: sys.stdout)
    # Called with the JobRun after every committed batch (the run history's heartbeat and pause check).
    batch_hooks: list[Callable[[Any], None]] = field(default_factory=list)
    _engine: Engine | None = None
    _redis: Any = _UNSET

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            engine = create_engine(self.settings)
            check_connection(engine)
            self._engine = engine
        return self._engine

    @property
    def redis(self) -> Any | None:
        """The Redis client, or None when no Redis is configured (locks fall back to the database)."""
        if self._redis is _UNSET:
            client = None
            if redis_configured(self.settings):
                client = create_redis(self.settings)
                check_redis(client, self.settings)
            self._redis = client
        return self._redis

    @property
    def keys(self) -> KeyNamer:
        return KeyNamer(self.settings.REDIS_KEY_PREFIX)

    def job_lock(self, logical_key: str, *, enabled: bool = True) -> JobLock:
        """The single-flight lock for a job, on the best backend available."""
        if not enabled:
            return NoLock()
        if self.redis is not None:
            return RedisJobLock(self.redis, self.keys.key(logical_key), self.settings.DIFYMAINT_LOCK_TTL)
        if self.engine.dialect.name == "postgresql":
            return PostgresAdvisoryLock(self.engine, logical_key)
        if self.engine.dialect.name == "mysql":
            return MySQLNamedLock(self.engine, logical_key)
        return FileLock(sqlite_lock_path(self.engine, logical_key))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._redis not in (_UNSET, None):
            self._redis.close()
