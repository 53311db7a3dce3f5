"""How long a run pauses after each deleting batch, so that Dify's own traffic keeps its latency
(docs/batching.md#pacing).

The longest of three pauses wins:

* Dify's pacing: a random pause of up to ``--sleep-ms`` (``…_BATCH_MAX_INTERVAL``, 200 ms), its cap scaled by
  how full the batch was, so the short last page costs next to nothing;
* a duty cycle scaled by the workload's own signal: ``DIFYMAINT_SLEEP_COEF`` (pt-archiver's ``--sleep-coef``)
  times the batch's duration, times the recent *pressure*. Right before a batch commits, one look at
  ``pg_stat_activity`` counts the other sessions waiting on the WAL (their commits queue behind the WAL a
  purge writes: on the live-workload bench that is where Dify's requests spend the time a cleanup adds) or on
  a lock this batch holds. Pressure is the smoothed share of recent batches that saw any: a database nobody
  else writes to gets Dify's pause only (full defaults speed), a busy one up to ``coef`` times the batch;
* the lock signal on its own: when sessions wait on the batch's locks, at least as long as the batch took,
  and the next batch is half the size, so the next wait is shorter (``DIFYMAINT_YIELD_TO_LOCK_WAITERS``).

While other sessions use the database at all (any of them ran a statement since the previous look), the batch
size aims at ``DIFYMAINT_SHARED_BATCH_MS`` (40 ms) instead of ``DIFYMAINT_TARGET_BATCH_MS`` (300 ms): every
commit of theirs flushes the WAL written before it, the purge's included, so the length of a batch, more than
the pauses between batches, sets how long Dify's own commits wait (bench/live). A database nobody else uses
keeps the long batches and their throughput.

``--sleep-ms 0`` turns all of it off: full speed, for a maintenance window. The look only evaluates
``pg_blocking_pids`` (which takes the lock manager's partition locks) for sessions that wait on a lock at all.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Other client sessions (not this run's own connections) that, as this batch is about to commit, wait on a lock
# it holds, or on the WAL (inserting, writing, flushing: the commit path).
_CONTENTION = sa.text(
    "SELECT count(*) FILTER (WHERE CASE WHEN wait_event_type = 'Lock' "
    "THEN pg_backend_pid() = ANY (pg_blocking_pids(pid)) ELSE false END) AS blocked, "
    "count(*) FILTER (WHERE wait_event IN ('WALWrite', 'WALSync', 'WALInsert', 'WALBufMapping')) AS wal, "
    # Sessions that ran anything since the previous look (or, at the first, since this batch began): live
    # traffic. Counting from the previous look, pauses and page reads included, keeps what is seen independent
    # of the batch length it steers (a window of the batch alone would see less as the batches shrink).
    "count(*) FILTER (WHERE state = 'active' OR state_change >= LEAST(now(), CAST(:since AS timestamptz))) AS traffic, "
    "clock_timestamp() AS looked_at "
    "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' "
    "AND application_name IS DISTINCT FROM 'difymaint'"
)
SMOOTHING = 0.5  # the weight of the newest look in the pressure (a few batches' memory)


def pause_s(max_ms: int, scanned: int, requested: int) -> float:
    """Dify's pacing: a random pause of up to ``max_ms`` after a batch that deleted something, its cap
    scaled by how full the batch was (as Dify's MessagesCleanService does), so the short last page of a
    scan, after which nothing follows, costs next to nothing."""
    fill = min(1.0, scanned / requested) if requested > 0 else 1.0
    return random.uniform(0, max_ms * fill) / 1000


@dataclass(frozen=True)
class Contention:
    blocked: int = 0  # sessions waiting on this batch's locks
    wal: int = 0  # sessions waiting on the WAL
    traffic: int = 0  # sessions that ran a statement since the previous look


@dataclass
class Pacer:
    sleep_ms: int
    coef: float = 0.0
    watch_locks: bool = True
    shared_target_s: float = 0.0  # the batch duration to aim at while others use the database (0 = off)
    pressure: float = 0.0  # 0..1: how often recent batches found others waiting on the WAL or on their locks
    blocked_batches: int = 0  # batches that, before committing, had other sessions waiting on their locks
    blocked_sessions: int = 0  # the most sessions one batch held up
    traffic: float = 0.0  # 0..1: how often recent batches ran while other sessions did
    looks: int = 0
    contended_looks: int = 0
    traffic_looks: int = 0
    last_look_at: datetime | None = None  # the server's clock at the previous look
    paused_s: float = 0.0  # the pauses beyond Dify's random one
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    @property
    def active(self) -> bool:
        return self.sleep_ms > 0

    @property
    def watching(self) -> bool:
        return self.active and (self.watch_locks or self.coef > 0 or self.shared_target_s > 0)

    def look(self, conn: Connection) -> Contention:
        """Who waits right now, in the batch's own transaction right before it commits (one round trip: a
        batch is a handful of them, each costing most when the server is busy). Nothing when not PostgreSQL
        or paced off. PostgreSQL keeps one pg_stat_activity snapshot per transaction: one look per batch."""
        if not self.watching or conn.dialect.name != "postgresql":
            return Contention()
        row = conn.execute(_CONTENTION, {"since": self.last_look_at}).one()
        seen = Contention(
            blocked=int(row.blocked) if self.watch_locks else 0, wal=int(row.wal), traffic=int(row.traffic)
        )
        with self._mutex:
            self.last_look_at = max(filter(None, (self.last_look_at, row.looked_at)))
            self.looks += 1
            self.traffic_looks += bool(seen.traffic)
            # The first look counts in full: a workload that is there at the start is there, and the probe
            # batch should not be followed by full-length ones.
            weight = 1.0 if self.looks == 1 else SMOOTHING
            self.traffic = (1 - weight) * self.traffic + weight * bool(seen.traffic)
            contended = bool(seen.blocked or seen.wal)
            self.contended_looks += contended
            self.pressure = (1 - SMOOTHING) * self.pressure + SMOOTHING * contended
            if seen.blocked:
                self.blocked_batches += 1
                self.blocked_sessions = max(self.blocked_sessions, seen.blocked)
        return seen

    def batch_target_s(self, full_s: float) -> float:
        """The batch duration the size should aim at: ``full_s`` on a database nobody else uses, down to the
        shared target while others use it all the time, geometrically in between (durations scale by factors).
        ``full_s`` of 0 (a fixed batch size) stays 0."""
        if full_s <= 0 or self.shared_target_s <= 0 or not self.looks:
            return full_s
        shared_s = min(self.shared_target_s, full_s)
        return float(full_s * (shared_s / full_s) ** self.traffic)

    def pause(self, *, seconds: float, scanned: int, requested: int, seen: Contention) -> float:
        """The pause after a batch that deleted something and took ``seconds``."""
        if not self.active:
            return 0.0
        dify = pause_s(self.sleep_ms, scanned, requested)
        pause = max(dify, self.coef * self.pressure * seconds)
        if seen.blocked:
            pause = max(pause, seconds)
        with self._mutex:
            self.paused_s += pause - dify
        return pause

    def figures(self) -> dict[str, float | int]:
        if not self.looks:
            return {}
        figures: dict[str, float | int] = {
            "contended_batches": self.contended_looks,
            "traffic_batches": self.traffic_looks,
            "paced_extra_s": round(self.paused_s, 3),
        }
        if self.blocked_batches:
            figures["lock_blocked_batches"] = self.blocked_batches
            figures["lock_blocked_sessions_max"] = self.blocked_sessions
        return figures
