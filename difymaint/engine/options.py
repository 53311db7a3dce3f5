"""The options a run is opened with: plain data, importable without the database layer (the CLI builds them
before it knows whether the run goes ahead)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from difymaint.engine.shard import Shard


@dataclass(frozen=True)
class RunOptions:
    """The options every destructive job takes (see difymaint.cli.options)."""

    dry_run: bool = False
    batch_size: int | None = None  # None: the job's registry default (filled in when the run is opened)
    max_runtime_s: float | None = None
    max_batches: int | None = None
    sleep_ms: int = 0
    workers: int = 1  # connections deleting disjoint slices of the window in parallel (cascade jobs)
    shard: Shard | None = None  # this run's share of the apps (--shard K/N); it takes its own lock
    use_lock: bool = True
    vacuum_analyze: bool = False  # VACUUM (ANALYZE) the tables a real run deleted from, afterwards
