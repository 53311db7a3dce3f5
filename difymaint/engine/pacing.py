"""How long a run pauses after each deleting batch, so that Dify's own traffic keeps its latency
(docs/batching.md#pacing).

Three inputs, the longest pause wins:

* Dify's pacing: a random pause of up to ``--sleep-ms`` (``…_BATCH_MAX_INTERVAL``, 200 ms), its cap scaled by
  how full the batch was, so the short last page costs next to nothing;
* a duty cycle (``DIFYMAINT_SLEEP_COEF``, pt-archiver's ``--sleep-coef``): at least that many times the batch's
  own duration, so the run never keeps the server busy more than 1 / (1 + coef) of the time, however fast the
  server deletes (a fixed pause would not: the faster the batch, the larger its share);
* the workload's own signal: when, right before a batch commits, other sessions wait on locks it holds (Dify's
  requests queued behind it), the run pauses at least as long as the batch took and halves the next batch, so
  the next wait is shorter (``DIFYMAINT_YIELD_TO_LOCK_WAITERS``). One cheap look at ``pg_stat_activity``; it
  only evaluates ``pg_blocking_pids`` for sessions that wait on a lock at all.

``--sleep-ms 0`` turns all of it off: full speed, for a maintenance window.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("difymaint")

# Sessions blocked by this one, looked at right before the batch commits. The CASE keeps pg_blocking_pids (which
# takes the lock manager's partition locks) to the few sessions that wait on a lock at all.
_BLOCKED = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
    "CASE WHEN wait_event_type = 'Lock' THEN pg_backend_pid() = ANY (pg_blocking_pids(pid)) ELSE false END"
)


def pause_s(max_ms: int, scanned: int, requested: int) -> float:
    """Dify's pacing: a random pause of up to ``max_ms`` after a batch that deleted something, its cap
    scaled by how full the batch was (as Dify's MessagesCleanService does), so the short last page of a
    scan, after which nothing follows, costs next to nothing."""
    fill = min(1.0, scanned / requested) if requested > 0 else 1.0
    return random.uniform(0, max_ms * fill) / 1000


@dataclass
class Pacer:
    sleep_ms: int
    coef: float = 0.0
    watch_locks: bool = True
    blocked_batches: int = 0  # batches that, before committing, had other sessions waiting on their locks
    blocked_sessions: int = 0  # the most sessions one batch held up
    _broken: bool = False
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    @property
    def active(self) -> bool:
        return self.sleep_ms > 0

    def blocked_by(self, conn: Connection) -> int:
        """Sessions waiting on this batch's locks right now (0 when not PostgreSQL, paced off, or unreadable)."""
        if not (self.active and self.watch_locks) or self._broken or conn.dialect.name != "postgresql":
            return 0
        try:
            with conn.begin_nested():  # a refused look must not abort the batch's transaction
                waiting = int(conn.execute(_BLOCKED).scalar_one())
        except DBAPIError as exc:
            self._broken = True
            log.info("not watching lock waits: %s", str(exc.orig).strip().splitlines()[0] if exc.orig else exc)
            return 0
        if waiting:
            with self._mutex:
                self.blocked_batches += 1
                self.blocked_sessions = max(self.blocked_sessions, waiting)
        return waiting

    def pause(self, *, seconds: float, scanned: int, requested: int, blocked: int) -> float:
        """The pause after a batch that deleted something and took ``seconds``."""
        if not self.active:
            return 0.0
        pause = max(pause_s(self.sleep_ms, scanned, requested), self.coef * seconds)
        if blocked:
            pause = max(pause, seconds)
        return pause

    def figures(self) -> dict[str, int]:
        if not self.blocked_batches:
            return {}
        return {"lock_blocked_batches": self.blocked_batches, "lock_blocked_sessions_max": self.blocked_sessions}
