"""The run contract every destructive job shares: lock, budget, batches, pacing, summary.

A job's loop looks like::

    with job_run(ctx, "clean-messages", lock_key=..., options=...) as run:
        while run.keep_going():
            ...select a page with the keyset cursor...
            with run.batch() as batch:          # times it, adapts the size, checks the lock lease, sleeps
                with batch.transaction() as conn:  # one transaction per batch, with timeouts
                    ...delete children, then parents...
                batch.record(scanned=..., affected=..., rows={...})
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from difymaint.core.context import Context
from difymaint.core.database import MYSQL_MAX_IDS, BatchTimeout, batch_transaction, count_timeout, uses_mysql
from difymaint.core.errors import DifymaintError, LockHeld
from difymaint.core.locking import JobLock, LockHeartbeat
from difymaint.core.reporter import BatchProgress
from difymaint.core.settings import Settings
from difymaint.core.stop import Interrupted
from difymaint.core.summary import Outcome, RunSummary
from difymaint.core.window import TimeWindow
from difymaint.engine import pg_health
from difymaint.engine.options import RunOptions
from difymaint.engine.pacing import Contention, Pacer
from difymaint.engine.schema import missing_leading_indexes
from difymaint.engine.throttle import ReplicaThrottle, replica_throttle

MAX_TIMEOUT_RETRIES = 5
# SQLite binds a batch's ids as one parameter each, and allows 32,766 of them in a statement.
SQLITE_MAX_BATCH_SIZE = 10000
INTERRUPTED_COUNT_TIMEOUT_S = 3  # the backlog count after a second signal: quick, or unknown
DEFAULT_BATCH_SIZE = 1000  # for a run opened without a job's own default (the registry holds those)


_COST_MEMORY = 2  # full batches (this one and the one before) whose slower per-row cost bounds the growth


class AdaptiveBatchSize:
    """Steer the batch size toward a target duration per batch (docs/batching.md#one-transaction-per-batch).

    Only full batches are measured: a short last page says nothing about the cost of a full one. The first
    batch is a probe of a quarter of ``initial`` (never under the minimum): it reads the coldest pages and
    plans the statements, so it costs the most per row, and a run's slowest batch is otherwise its first one
    (1.2-1.8 s for 1000 workflow runs on MariaDB, where the next ones take 300 ms). A fast probe grows ×4,
    back to ``initial``, at once.
    """

    def __init__(self, initial: int, *, target_s: float, maximum: int) -> None:
        self.size = max(1, initial)
        self.target_s = target_s
        self.maximum = max(maximum, self.size)
        self.minimum = max(1, min(self.size, 50))
        self._costs: list[float] = []  # seconds per row of the last full batches after the probe
        self._probed = False
        if target_s > 0:
            self.size = max(self.minimum, self.size // 4)

    def observe(self, seconds: float, rows: int) -> None:
        if self.target_s <= 0 or rows < self.size:
            return
        ratio = self.target_s / max(seconds, 1e-3)
        if self._probed:
            # Grow on the slower per-row cost of this batch and the one before (_COST_MEMORY), not on this one
            # alone: one lucky fast batch would size the next at ×4, and the batch after a lucky one is what made
            # the p95 (0.45-0.86 s on MariaDB at a 300 ms target). The probe is left out: cold pages cost it more.
            self._costs.append(seconds / rows)
            del self._costs[:-_COST_MEMORY]
            # A bound on growth only: after a blip has halved the size, a fast batch must not shrink it again.
            ratio = min(ratio, max(1.0, self.target_s / max(max(self._costs) * rows, 1e-3)))
        self._probed = True
        # Grow at most ×4 per batch (a nightly run reaches its size in two steps instead of four, which
        # is fewer small batches and fewer pauses), shrink at most ÷2 (a slow batch may be a blip).
        ratio = min(4.0, max(0.5, ratio))
        if 0.8 <= ratio <= 1.25:
            return  # close enough; avoid jitter
        self.size = min(self.maximum, max(self.minimum, int(self.size * ratio)))

    def shrink(self) -> None:
        self.size = max(self.minimum, self.size // 2)


@dataclass
class Batch:
    run: JobRun
    scanned: int = 0
    affected: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    recorded: bool = False
    rolled_back: bool = False  # hit a timeout: the caller must retry the same cursor
    requested: int = 0  # the batch size when it started (how full it was scales the pause)
    seen: Contention = field(default_factory=Contention)  # who waited as it was about to commit (engine/pacing.py)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with batch_transaction(self.run.ctx.engine, self.run.ctx.settings) as conn:
            yield conn
            if not self.run.dry_run:
                self.seen = self.run.pacer.look(conn)  # the workload's signal
            # Lost the lock while this batch worked (e.g. waited on a row lock): roll it back, someone else
            # owns the job now.
            self.run.heartbeat.check()

    def record(self, *, scanned: int, affected: int, rows: dict[str, int]) -> None:
        self.scanned, self.affected, self.rows, self.recorded = scanned, affected, rows, True


class JobRun:
    def __init__(
        self,
        ctx: Context,
        job: str,
        *,
        options: RunOptions,
        lock: JobLock,
        window: TimeWindow | None,
        tables: list[str],
        lock_key: str = "",
    ) -> None:
        self.ctx = ctx
        self.job = job
        self.options = options
        self.lock = lock
        self.lock_key = lock_key  # the logical key (shard suffix included), for a job's own extra guards
        settings: Settings = ctx.settings
        size = options.batch_size or DEFAULT_BATCH_SIZE
        initial, maximum = size, max(settings.DIFYMAINT_MAX_BATCH_SIZE, size)
        if (settings.DIFYMAINT_DATABASE_URL or "").startswith("sqlite"):
            initial, maximum = min(initial, SQLITE_MAX_BATCH_SIZE), min(maximum, SQLITE_MAX_BATCH_SIZE)
        elif uses_mysql(settings):
            initial, maximum = min(initial, MYSQL_MAX_IDS), min(maximum, MYSQL_MAX_IDS)
        self.sizer = AdaptiveBatchSize(initial, target_s=settings.DIFYMAINT_TARGET_BATCH_MS / 1000, maximum=maximum)
        self.pacer = Pacer(
            0 if options.dry_run else options.sleep_ms,
            coef=settings.DIFYMAINT_SLEEP_COEF,
            watch_locks=settings.DIFYMAINT_YIELD_TO_LOCK_WAITERS,
            shared_target_s=settings.DIFYMAINT_SHARED_BATCH_MS / 1000,
        )
        self._full_target_s = self.sizer.target_s
        self.summary = RunSummary(
            job=job,
            dry_run=options.dry_run,
            started_at=ctx.clock.now(),
            window=window.as_dict() if window else {},
            tables=dict.fromkeys(tables, 0),
        )
        self._started = ctx.clock.monotonic()
        self.heartbeat = LockHeartbeat(lock)  # started by job_run once the lock is ours
        self._timeouts_in_a_row = 0
        # --workers: batches run on several threads; the bookkeeping below is shared, so it is serialised,
        # and batch slots are claimed up front so that --max-batches is never overshot.
        self._mutex = threading.RLock()
        self._claimed = 0
        self.batch_seconds: list[float] = []  # every committed batch's duration (the bench's p50/p95/max)
        # The job's backlog count, registered as soon as the job can count (see settle_remaining): a second
        # signal ends the run from anywhere, and the summary still says how much is left.
        self.remaining: Callable[[], int | None] | None = None
        # --max-replica-lag (engine/throttle.py): set by job_run once the lock is ours, for real runs only.
        self.throttle: ReplicaThrottle | None = None

    def use_tables(self, tables: list[str]) -> None:
        """The tables this run reports, in order, when they depend on the live schema or the params (a
        missing optional table, an option that adds one); called before the first batch."""
        self.summary.tables = {table: self.summary.tables.get(table, 0) for table in tables}

    @property
    def dry_run(self) -> bool:
        return self.options.dry_run

    @property
    def batch_size(self) -> int:
        return self.sizer.size

    def elapsed(self) -> float:
        return self.ctx.clock.monotonic() - self._started

    def keep_going(self) -> bool:
        """False once a stop was requested or the budget is spent (recording why); LockLost when the lease
        was lost, so that nothing more is deleted. Every loop asks this before its next batch, so this is also
        where the run waits for lagging replicas (``--max-replica-lag``)."""
        if not self._may_go_on():
            return False
        if self.throttle is None:
            return True
        if not self.throttle.wait(self._time_left):
            self.summary.outcome = Outcome.PARTIAL
            self.summary.stop_reason = "replica-lost"
            return False
        return self._may_go_on()  # the wait spent time: the budget, a signal or the lease may have changed

    def _time_left(self) -> float | None:
        if self.options.max_runtime_s is None:
            return None
        return self.options.max_runtime_s - self.elapsed()

    def _may_go_on(self) -> bool:
        self.heartbeat.check()
        if self.summary.stop_reason is not None:
            return False
        if self.ctx.stop.requested:
            self.summary.outcome = Outcome.INTERRUPTED
            self.summary.signum = self.ctx.stop.signum or signal.SIGTERM
            self.summary.stop_reason = f"signal {signal.Signals(self.summary.signum).name}"
            return False
        if self.options.max_batches is not None and self.summary.batches + self._claimed >= self.options.max_batches:
            self.summary.outcome = Outcome.PARTIAL
            self.summary.stop_reason = "max-batches"
            return False
        if self.options.max_runtime_s is not None and self.elapsed() >= self.options.max_runtime_s:
            self.summary.outcome = Outcome.PARTIAL
            self.summary.stop_reason = "max-runtime"
            return False
        return True

    def one_connection(self, why: str) -> None:
        """Say so when ``--workers`` asked for more than this walk can use (never silently ignore it)."""
        if self.options.workers > 1:
            asked = f"--workers {self.options.workers}"
            self.ctx.reporter.warning(f"{asked} does not apply {why}; this run uses one connection")

    def claim(self) -> bool:
        """For parallel workers: :meth:`keep_going` and, if so, reserve the next batch slot atomically (the
        slot is released when that :meth:`batch` ends, claimed=True). The replica-lag wait happens outside the
        lock, so a waiting worker never holds up another one's bookkeeping."""
        if not self.keep_going():
            return False
        with self._mutex:
            if not self._may_go_on():
                return False
            self._claimed += 1
            return True

    @contextmanager
    def batch(self, *, claimed: bool = False) -> Iterator[Batch]:
        batch = Batch(self, requested=self.sizer.size)
        started = self.ctx.clock.monotonic()
        try:
            yield batch
        except BatchTimeout as exc:
            with self._mutex:
                if claimed:
                    self._claimed -= 1
                self._after_timeout(batch, exc)
            return
        except BaseException:
            if claimed:
                with self._mutex:
                    self._claimed -= 1
            raise
        with self._mutex:
            if claimed:
                self._claimed -= 1
            seconds = self._book(batch, started)
            if seconds is None:
                return
            if batch.seen.blocked:
                self.sizer.shrink()  # others queued behind this batch's locks: hold them for less next time
        if batch.affected:
            pause = self.pacer.pause(seconds=seconds, scanned=batch.scanned, requested=batch.requested, seen=batch.seen)
            self.ctx.stop.wait(pause)

    def _after_timeout(self, batch: Batch, exc: BatchTimeout) -> None:
        self._timeouts_in_a_row += 1
        if self._timeouts_in_a_row > MAX_TIMEOUT_RETRIES:
            raise DifymaintError(
                f"{self.job}: {MAX_TIMEOUT_RETRIES} batches in a row hit a timeout ({exc})",
                hint="lower --batch-size, raise DIFYMAINT_STATEMENT_TIMEOUT, or check for missing indexes",
            ) from None
        self.sizer.shrink()
        self.ctx.reporter.warning(f"batch rolled back ({exc}); retrying with batch size {self.sizer.size}")
        batch.rolled_back = True

    def _book(self, batch: Batch, started: float) -> float | None:
        """Add a committed batch to the summary; its duration, or None when it recorded nothing."""
        self._timeouts_in_a_row = 0
        if not batch.recorded:
            return None
        seconds = self.ctx.clock.monotonic() - started
        self.summary.batches += 1
        self.summary.scanned += batch.scanned
        for table, count in batch.rows.items():
            self.summary.add(table, count)
        self.batch_seconds.append(seconds)
        if self.summary.batches == 1:  # how long the run took to get going (plans, index checks, first page)
            self.summary.details["first_batch_s"] = round(self.elapsed(), 3)
        self.sizer.target_s = self.pacer.batch_target_s(self._full_target_s)  # shorter while Dify is busy
        self.sizer.observe(seconds, batch.scanned)
        self.ctx.reporter.batch(
            BatchProgress(
                job=self.job,
                batch_no=self.summary.batches,
                scanned=batch.scanned,
                affected=batch.affected,
                total_affected=self.summary.tables.get(self.primary_table, 0),
                batch_size=self.sizer.size,
                seconds=seconds,
                dry_run=self.dry_run,
                verb=self.summary.verb,
            )
        )
        for hook in self.ctx.batch_hooks:  # run history: heartbeat, rows so far, pause check (ops/history.py)
            hook(self)
        return seconds

    def warn(self, *messages: str) -> None:
        """Record warnings in the summary and tell the operator now."""
        for message in messages:
            self.summary.warnings.append(message)
            self.ctx.reporter.warning(message)

    def warn_missing_indexes(
        self, edges: list[tuple[str, str]], consequence: str = "every batch scans that table"
    ) -> list[str]:
        """Warn about cascade/filter columns no index leads with; returns the ``table.column`` pairs."""
        missing = missing_leading_indexes(self.ctx.engine, edges)
        self.warn(*(f"no index leads with {edge}: {consequence}" for edge in missing))
        return missing

    @property
    def primary_table(self) -> str:
        return next(iter(self.summary.tables), "")

    def settle_remaining(self, estimate: Callable[[], int | None] | None = None) -> None:
        """``rows_remaining``: 0 when the run went through; when it stopped early, the estimate (the one given,
        else the one registered in :attr:`remaining`; unknown without either). Every job ends with this, so a
        backlog alert has one figure to watch."""
        estimate = estimate or self.remaining
        if self.summary.outcome in (Outcome.PARTIAL, Outcome.INTERRUPTED):
            self.summary.rows_remaining = estimate() if estimate is not None else None
        else:
            self.summary.rows_remaining = 0

    def settle_after_interrupt(self) -> None:
        """A second signal ended the run mid-batch: count the backlog anyway, but briefly (the operator asked
        to stop *now*); a count that takes longer, fails or is interrupted again leaves -1 (unknown size)."""
        if self.remaining is None:
            return
        try:
            with count_timeout(INTERRUPTED_COUNT_TIMEOUT_S):
                self.summary.rows_remaining = self.remaining()
        except BaseException:  # a third signal, or the database gone: the figure is unknown, not zero
            self.summary.rows_remaining = -1

    def finish(self) -> RunSummary:
        self.summary.duration_s = self.elapsed()
        if self.batch_seconds:
            ordered = sorted(self.batch_seconds)

            def at(share: float) -> float:
                return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 1)

            self.summary.details["batch_ms"] = {"p50": at(0.5), "p95": at(0.95), "max": at(1.0)}
        if self.throttle is not None:
            self.summary.details.update(self.throttle.figures())
        self.summary.details.update(self.pacer.figures())
        if self.pacer.looks:
            self.summary.details["batch_target_ms"] = round(self.sizer.target_s * 1000)
        return self.summary


def _after_run(ctx: Context, run: JobRun, start_lsn: str | None) -> None:
    wal = pg_health.wal_bytes_since(ctx.engine, start_lsn)
    if wal is not None:
        run.summary.details["wal_bytes"] = wal
    touched = [table for table, rows in run.summary.tables.items() if rows]
    if run.options.vacuum_analyze and not run.dry_run and touched:
        ctx.reporter.info(f"{run.job}: {pg_health.maintenance_statement(ctx.engine)} {', '.join(touched)}")
        run.summary.details["vacuum_analyze_s"] = pg_health.vacuum_analyze(ctx.engine, touched)


def _check_headroom(run: JobRun, tables: list[str]) -> None:
    """Before a purge: warn when the WAL it may write could fill the volume PostgreSQL writes it to."""
    headroom = pg_health.disk_headroom(run.ctx.engine, tables)
    if headroom is None:
        return
    run.summary.details["disk_headroom"] = headroom.as_dict()
    if headroom.short:
        run.warn(
            f"deleting from {', '.join(tables)} may write up to {headroom.wal_bound_bytes // 2**20} MiB of WAL and "
            f"the WAL volume has {(headroom.free_bytes or 0) // 2**20} MiB free: lower --max-runtime or --max-batches, "
            "or make room first (docs/batching.md#vacuum-and-wal)"
        )


@contextmanager
def job_run(
    ctx: Context,
    job: str,
    *,
    lock_key: str,
    options: RunOptions,
    window: TimeWindow | None,
    tables: list[str],
    verbs: tuple[str, str] = ("deleted", "would delete"),
    lock: JobLock | None = None,
    database: bool = True,
    throttle: bool = True,
) -> Iterator[JobRun]:
    """Take the job's lock (or raise LockHeld), run the body, always release, finish the summary.

    ``lock`` replaces the context's lock (a job locked elsewhere than Dify's Redis or database);
    ``database=False`` for a job that never touches Dify's database (no WAL or vacuum bookkeeping);
    ``throttle=False`` for a job that deletes nothing (``--max-replica-lag`` never holds it up)."""
    if options.shard is not None:
        # Each shard has a lock of its own: N pods run side by side, two pods of one shard never do.
        lock_key += options.shard.lock_suffix
    if lock is None:
        lock = ctx.job_lock(lock_key, enabled=options.use_lock)
    if not lock.acquire():
        holder: Callable[[], str] | None = getattr(lock, "holder", None)
        label: str = getattr(lock, "label", lock.description)
        who = f"{label}, held by {holder()}" if holder is not None else label
        raise LockHeld(
            f"{job}: another run holds the lock ({who}); skipped",
            hint="this is normal when runs overlap; see DIFYMAINT_ON_LOCKED to change the exit code",
        )
    try:
        run = JobRun(ctx, job, options=options, lock=lock, window=window, tables=tables, lock_key=lock_key)
        if throttle and database and not options.dry_run:
            settings = ctx.settings
            run.throttle = replica_throttle(
                ctx.engine,
                max_lag_s=settings.DIFYMAINT_MAX_REPLICA_LAG,
                replica_url=settings.DIFYMAINT_REPLICA_URL,
                on_lost=settings.DIFYMAINT_ON_REPLICA_LOST,
                lost_wait_s=settings.DIFYMAINT_REPLICA_LOST_WAIT_S,
                info=ctx.reporter.info,
                warn=run.warn,
                stop=ctx.stop,
            )
    except BaseException:
        lock.release()
        raise
    run.heartbeat.__enter__()
    run.summary.verbs = verbs
    ctx.reporter.info(f"{job}: holding {lock.description}")
    try:
        start_lsn = None
        if database:
            start_lsn = None if options.dry_run else pg_health.current_wal_lsn(ctx.engine)
            if not options.dry_run and verbs[0] == "deleted":
                _check_headroom(run, tables)
            for blocker in pg_health.long_running_transactions(
                ctx.engine, older_than_s=ctx.settings.DIFYMAINT_LONG_TRANSACTION_WARN_S
            ):
                run.warn(f"{blocker}: {pg_health.blocker_consequence(ctx.engine)}")
        yield run
        if database:
            _after_run(ctx, run, start_lsn)
    except BaseException as exc:
        # Keep what the committed batches did: a failed run still reports its per-table counts.
        if isinstance(exc, Interrupted):
            run.settle_after_interrupt()
        run.summary.outcome = Outcome.FAILED
        run.summary.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        exc.difymaint_summary = run.summary  # type: ignore[attr-defined]
        raise
    finally:
        run.heartbeat.stop()  # before the release: a late renewal must not re-extend a released key
        lock.release()
        if run.throttle is not None:
            run.throttle.close()
        run.finish()
