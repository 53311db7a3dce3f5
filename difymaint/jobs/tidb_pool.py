"""What create-tidb and update-tidb-status share: the TiDB Cloud client for a run, the schema check, and the
leak file (docs/tidb-pool.md#the-leak-file).

The leak file is JSON lines, one per cluster TiDB Cloud may have created without a ``tidb_auth_bindings`` row
(the binding insert failed, or batchCreate's outcome is unknown). A line never holds a password: only
``cluster_id`` (None when TiDB Cloud never told us the id), ``display_name``, ``created_at`` (aware UTC ISO
8601) and ``reason``. Appends and rewrites hold an exclusive ``flock`` so the two jobs can share the file.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.dify.tidb_cloud import TidbCloudClient, TidbCloudConfig, require_tidb_settings
from difymaint.engine.schema import Need, SchemaReport, check_schema

TABLE = "tidb_auth_bindings"
BASE_COLUMNS = (
    "id",
    "tenant_id",
    "cluster_id",
    "cluster_name",
    "active",
    "status",
    "account",
    "password",
    "created_at",
)
ENDPOINT_COLUMN = "qdrant_endpoint"  # Dify migration 8574b23a38fd (2026-04)


def require_config(ctx: Context) -> None:
    """Missing TIDB_API_URL / TIDB_PUBLIC_KEY / TIDB_PRIVATE_KEY / TIDB_PROJECT_ID → one ConfigError (exit 2)."""
    require_tidb_settings(ctx.settings)


class PoolClient(TidbCloudClient):
    """The client, remembering the display names it submits (to name clusters a batchCreate left unlisted)."""

    def __init__(self, config: TidbCloudConfig, **kwargs: Any) -> None:
        self.submitted_names: list[str] = []
        super().__init__(config, name_factory=self._next_name, **kwargs)

    def _next_name(self) -> str:
        name = uuid.uuid4().hex  # Dify's display names: 32 hex digits
        self.submitted_names.append(name)
        return name


def client_for(ctx: Context, *, call_tries: int | None = None) -> PoolClient:
    """One client per run: its failure budget (DIFYMAINT_TIDB_MAX_REQUESTS / _MAX_SECONDS) spans every call;
    ``call_tries`` bounds each call on its own (see :class:`TidbCloudClient`)."""
    settings = ctx.settings
    return PoolClient(
        require_tidb_settings(settings),
        timeout_s=settings.DIFYMAINT_TIDB_TIMEOUT,
        max_requests=settings.DIFYMAINT_TIDB_MAX_REQUESTS,
        max_seconds=settings.DIFYMAINT_TIDB_MAX_SECONDS,
        call_tries=call_tries,
        clock=ctx.clock,
    )


def check_bindings_table(ctx: Context, job: str) -> tuple[SchemaReport, bool]:
    """The schema report and whether the table has Dify's ``qdrant_endpoint`` column."""
    report = check_schema(ctx.engine, [Need(TABLE, BASE_COLUMNS)], job=job)
    columns = {column["name"] for column in sa.inspect(ctx.engine).get_columns(TABLE)}
    return report, ENDPOINT_COLUMN in columns


@dataclass(frozen=True)
class LeakEntry:
    cluster_id: str | None
    display_name: str
    created_at: str  # aware UTC, ISO 8601
    reason: str

    def created(self) -> datetime | None:
        try:
            moment = datetime.fromisoformat(self.created_at)
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else None

    @classmethod
    def parse(cls, line: str) -> LeakEntry | None:
        try:
            raw: Any = json.loads(line)
        except ValueError:
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("display_name", ""), str):
            return None
        cluster_id = raw.get("cluster_id")
        return cls(
            cluster_id=str(cluster_id) if cluster_id not in (None, "") else None,
            display_name=str(raw.get("display_name") or ""),
            created_at=str(raw.get("created_at") or ""),
            reason=str(raw.get("reason") or ""),
        )


@contextmanager
def _locked(path: Path, mode: str) -> Iterator[IO[str]]:
    with open(path, mode, encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def append_leaks(path: Path, entries: Iterable[LeakEntry]) -> int:
    """Append entries and fsync; returns how many. Raises OSError when the file cannot be written."""
    lines = [json.dumps(asdict(entry), separators=(",", ":")) + "\n" for entry in entries]
    if not lines:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path, "a") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())
    return len(lines)


def read_leaks(path: Path) -> list[LeakEntry]:
    if not path.exists():
        return []
    with _locked(path, "r") as handle:
        entries = [LeakEntry.parse(line) for line in handle if line.strip()]
    return [entry for entry in entries if entry is not None]


def drop_leaks(path: Path, dropped: set[LeakEntry]) -> None:
    """Remove ``dropped`` from the file, keeping lines appended meanwhile (read again under the lock)."""
    if not path.exists():
        return
    with _locked(path, "r+") as handle:
        current = [entry for entry in (LeakEntry.parse(line) for line in handle if line.strip()) if entry]
        remaining = [entry for entry in current if entry not in dropped]
        handle.seek(0)
        handle.truncate()
        handle.writelines(json.dumps(asdict(entry), separators=(",", ":")) + "\n" for entry in remaining)
        handle.flush()
        os.fsync(handle.fileno())
