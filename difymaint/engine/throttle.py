"""Pause deleting while a streaming replica lags (``--max-replica-lag``), as pt-archiver's ``--check-slave-lag``
and gh-ost's replica throttle do for MySQL (docs/batching.md#replica-lag).

Before each batch the run asks :meth:`ReplicaThrottle.wait` whether it may go on. The lag is read either on the
primary, for every physical streaming replica (``pg_stat_replication``), or, with ``--replica-url``, on the one
named replica. Two measures, the larger wins:

* the server's own: ``replay_lag`` (primary) or ``now() - pg_last_xact_replay_timestamp()`` (replica); the
  latter is only meaningful while WAL waits to be replayed (an idle replica's last replayed commit may be hours
  old and it still lags by nothing), and ``replay_lag`` is refreshed only when the standby reports;
* the run's own clock over the primary's WAL position: every check samples ``pg_current_wal_lsn()``, so the
  first sample already past the replica's replay position says since when at least it has been behind.

No WAL waiting to be replayed means no lag, whatever the timestamps say. While the worst replica lags more than
the bound, the run waits in short steps on its stop token (SIGTERM and ``--max-runtime`` still end it within a
step). A replica that disappears (gone from ``pg_stat_replication``, or the ``--replica-url`` connection fails)
is a warning and a bounded wait for it to come back, then ``--on-replica-lost`` decides: continue without it, or
stop the run (partial). A primary without replicas makes this a no-op; a role that may not see the replicas'
positions (neither superuser nor pg_monitor: PostgreSQL shows NULLs) costs one warning and no throttling.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from difymaint.core.errors import ConfigError
from difymaint.core.stop import StopToken

log = logging.getLogger("difymaint")

OnLost = Literal["continue", "stop"]
POLL_S = 0.25  # how often a waiting run looks again (and how late it notices a stop or a caught-up replica)
CHECK_EVERY_S = 0.1  # a run that was just told "go" does not ask again sooner (workers share one check)
REPORT_EVERY_S = 10.0  # a long wait says so again this often
LSN_SAMPLES = 4096  # the run's own WAL clock: enough for hours of batches, a few hundred KB at most
REPLICA_TIMEOUT_S = 5  # connect and statement timeout on a --replica-url

# Physical standbys only: a logical walsender (a CDC consumer) is connected to a database, a standby is not, and
# a slow consumer of a logical slot is no reason to hold back a purge. Base backups stream too: not replicas.
_PRIMARY_LAGS = sa.text(
    "SELECT r.application_name, host(r.client_addr) AS addr, r.state, "
    "EXTRACT(EPOCH FROM r.replay_lag)::float8 AS replay_lag_s, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint AS behind, "
    "pg_wal_lsn_diff(r.replay_lsn, '0/0')::bigint AS replay_pos, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS current_pos "
    "FROM pg_stat_replication r LEFT JOIN pg_stat_activity a ON a.pid = r.pid "
    "WHERE a.datname IS NULL AND r.state IS DISTINCT FROM 'backup'"
)
_CURRENT_POS = sa.text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
_REPLICA_LAG = sa.text(
    "SELECT pg_is_in_recovery() AS standby, "
    "pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replay_pos, "
    "EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age_s"
)


@dataclass(frozen=True)
class Lag:
    replica: str  # how the operator knows it: application_name@address, or the replica URL's host
    seconds: float
    bytes: int


class CannotRead(Exception):
    """The role may not see the replicas' positions."""


class ReplicaGone(Exception):
    """The ``--replica-url`` replica did not answer."""


class LsnClock:
    """When the primary's WAL position passed each point: a replica replaying behind a point has been behind at
    least since the first sample past it."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque(maxlen=LSN_SAMPLES)

    def sample(self, now: float, position: int) -> None:
        if not self.samples or position > self.samples[-1][1]:
            self.samples.append((now, position))

    def behind_since(self, replay_pos: int, now: float) -> tuple[float, bool]:
        """(seconds behind, whether a sample at or before ``replay_pos`` exists, i.e. the figure is exact to a
        sampling step rather than a lower bound)."""
        for index, (at, position) in enumerate(self.samples):
            if position > replay_pos:
                return now - at, index > 0
        return 0.0, True


class PrimaryReader:
    """Every physical standby's lag, read on the primary."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.clock = LsnClock()

    def read(self) -> dict[str, Lag]:
        with self.engine.connect() as conn:
            rows = conn.execute(_PRIMARY_LAGS).all()
            current = rows[0].current_pos if rows else conn.execute(_CURRENT_POS).scalar_one()
        now = time.monotonic()
        self.clock.sample(now, int(current))
        lags: dict[str, Lag] = {}
        for row in rows:
            if row.state is None:
                raise CannotRead  # PostgreSQL hides every column but the pid from roles without pg_read_all_stats
            name = f"{row.application_name or 'replica'}@{row.addr or 'local'}"
            behind = max(0, int(row.behind or 0))
            seconds = 0.0
            if behind > 0 and row.replay_pos is not None:
                own, _ = self.clock.behind_since(int(row.replay_pos), now)
                seconds = max(own, float(row.replay_lag_s or 0.0))
            name = _unique(name, lags)
            lags[name] = Lag(name, seconds, behind)
        return lags


class ReplicaReader:
    """One replica's lag, read on the replica itself (``--replica-url``: a role that cannot read
    pg_stat_replication on the primary, or a replica behind a proxy), against the primary's WAL position."""

    def __init__(self, primary: Engine, replica_url: str) -> None:
        self.primary = primary
        self.clock = LsnClock()
        try:
            url = make_url(replica_url)
        except ArgumentError:
            raise ConfigError("DIFYMAINT_REPLICA_URL is not a valid PostgreSQL URL") from None
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg2")
        self.name = f"{url.host or 'local'}:{url.port or 5432}"
        self.engine = sa.create_engine(
            url.set(query={**url.query, "application_name": "difymaint-throttle"}),
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": REPLICA_TIMEOUT_S,
                "options": f"-c statement_timeout={REPLICA_TIMEOUT_S}s",
            },
        )

    def read(self) -> dict[str, Lag]:
        with self.primary.connect() as conn:
            current = int(conn.execute(_CURRENT_POS).scalar_one())
        now = time.monotonic()
        self.clock.sample(now, current)
        try:
            with self.engine.connect() as conn:
                row = conn.execute(_REPLICA_LAG).one()
        except DBAPIError as exc:
            raise ReplicaGone(_first_line(exc.orig if exc.orig is not None else exc)) from None
        if not row.standby:
            raise ConfigError(f"--replica-url {self.name} is not a standby (pg_is_in_recovery() is false)")
        replay = int(row.replay_pos or 0)
        behind = max(0, current - replay)
        seconds = 0.0
        if behind > 0:
            own, exact = self.clock.behind_since(replay, now)
            # The last replayed commit's age overstates the lag after a quiet spell on the primary; it is only
            # the better figure when the run has no sample from before the replica fell behind.
            seconds = own if exact else max(own, float(row.replay_age_s or 0.0))
        return {self.name: Lag(self.name, seconds, behind)}

    def close(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unique(name: str, taken: dict[str, Lag]) -> str:
    """Two standbys with the same application_name on one host stay two."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    return candidate


@dataclass
class ReplicaThrottle:
    """The run's replica-lag gate. :meth:`wait` returns False when the run must stop because a replica was lost
    (``--on-replica-lost stop``); otherwise True, once every replica is within the bound, or as soon as a stop
    was requested or the budget ran out (the caller's own checks then end the run)."""

    reader: PrimaryReader | ReplicaReader
    max_lag_s: float
    info: Callable[[str], None]
    warn: Callable[[str], None]
    stop: StopToken
    on_lost: OnLost = "continue"
    lost_wait_s: float = 60.0
    throttled_s: float = 0.0
    waits: int = 0
    max_seen_s: float = 0.0
    max_seen_bytes: int = 0
    _known: set[str] = field(default_factory=set)
    _gone_since: dict[str, float] = field(default_factory=dict)
    _ignored: set[str] = field(default_factory=set)
    _disabled: bool = False
    _said_none: bool = False
    _last_go: float = -1e9
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, time_left: Callable[[], float | None]) -> bool:
        if self._disabled:
            return True
        with self._mutex:
            if time.monotonic() - self._last_go < CHECK_EVERY_S:
                return True
            started = time.monotonic()
            waiting_since: float | None = None
            reported = -REPORT_EVERY_S
            caught_up = False
            try:
                while True:
                    verdict, worst = self._check()
                    if verdict == "stop":
                        return False
                    if verdict == "go":
                        self._last_go = time.monotonic()
                        caught_up = True
                        return True
                    now = time.monotonic()
                    if waiting_since is None:
                        waiting_since = now
                        self.waits += 1
                    if worst is not None and now - reported >= REPORT_EVERY_S:
                        reported = now
                        self.info(
                            f"replica {worst.replica} lags {worst.seconds:.1f} s ({_size(worst.bytes)} to replay), "
                            f"over --max-replica-lag {self.max_lag_s:g} s: waiting"
                        )
                    left = time_left()
                    if left is not None and left <= 0:
                        return True
                    if self.stop.wait(POLL_S if left is None else min(POLL_S, left)):
                        return True
            finally:
                if waiting_since is not None:
                    waited = time.monotonic() - started
                    self.throttled_s += waited
                    if caught_up:
                        self.info(f"replicas within --max-replica-lag again after {waited:.1f} s: going on")

    def _check(self) -> tuple[Literal["go", "wait", "stop"], Lag | None]:
        try:
            lags = self.reader.read()
        except CannotRead:
            self._disable(
                "--max-replica-lag: this role may not read the replicas' positions in pg_stat_replication (grant it "
                "pg_monitor, or pass --replica-url); not throttling on replica lag"
            )
            return "go", None
        except ReplicaGone as exc:
            assert isinstance(self.reader, ReplicaReader)
            return self._lost({self.reader.name}, str(exc))
        now = time.monotonic()
        log.debug("replica lag: %s", ", ".join(f"{x.replica} {x.seconds:.2f} s {x.bytes} B" for x in lags.values()))
        if not lags and not self._known and not self._said_none:
            self._said_none = True
            self.info("--max-replica-lag: no streaming replica is connected; nothing to wait for")
        for name in lags:
            if name in self._gone_since:
                self.info(f"replica {name} is back after {now - self._gone_since.pop(name):.0f} s")
            self._ignored.discard(name)
        self._known |= set(lags)
        missing = self._known - set(lags) - self._ignored
        if missing:
            return self._lost(missing, None)
        considered = [lag for lag in lags.values() if lag.replica not in self._ignored]
        worst = max(considered, key=lambda lag: lag.seconds, default=None)
        if worst is not None:
            self.max_seen_s = max(self.max_seen_s, worst.seconds)
            self.max_seen_bytes = max(self.max_seen_bytes, *(lag.bytes for lag in considered))
        if worst is not None and worst.seconds > self.max_lag_s:
            return "wait", worst
        return "go", worst

    def _lost(self, names: set[str], reason: str | None) -> tuple[Literal["go", "wait", "stop"], None]:
        now = time.monotonic()
        for name in sorted(names - set(self._gone_since)):
            self._gone_since[name] = now
            why = f" ({reason})" if reason else ""
            self._warn(f"replica {name} disappeared{why}: waiting up to {self.lost_wait_s:g} s for it to come back")
        expired = sorted(name for name in names if now - self._gone_since[name] >= self.lost_wait_s)
        if not expired:
            return "wait", None
        if self.on_lost == "stop":
            self._warn(f"replica {', '.join(expired)} did not come back within {self.lost_wait_s:g} s: stopping")
            return "stop", None
        for name in expired:
            self._gone_since.pop(name)
            self._ignored.add(name)
        self._warn(f"replica {', '.join(expired)} did not come back within {self.lost_wait_s:g} s: going on without it")
        return "go", None

    def _warn(self, message: str) -> None:
        self.warn(message)

    def _disable(self, message: str) -> None:
        self._disabled = True
        self._warn(message)

    def figures(self) -> dict[str, float | int]:
        """For the run summary's details (and from there the metrics)."""
        return {
            "throttled_s": round(self.throttled_s, 3),
            "throttle_waits": self.waits,
            "replica_lag_max_s": round(self.max_seen_s, 3),
            "replica_lag_max_bytes": self.max_seen_bytes,
        }

    def close(self) -> None:
        if isinstance(self.reader, ReplicaReader):
            self.reader.close()


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def replica_throttle(
    engine: Engine,
    *,
    max_lag_s: float | None,
    replica_url: str | None,
    on_lost: OnLost,
    lost_wait_s: float,
    info: Callable[[str], None],
    warn: Callable[[str], None],
    stop: StopToken,
) -> ReplicaThrottle | None:
    """The throttle a run asked for, or None (no bound, or not PostgreSQL: said once)."""
    if max_lag_s is None:
        return None
    if engine.dialect.name != "postgresql":
        warn("--max-replica-lag needs PostgreSQL (streaming replication); ignored")
        return None
    reader: PrimaryReader | ReplicaReader = ReplicaReader(engine, replica_url) if replica_url else PrimaryReader(engine)
    return ReplicaThrottle(reader, max_lag_s, info, warn, stop, on_lost=on_lost, lost_wait_s=lost_wait_s)
