"""Live-workload bench: what a cleanup does to Dify's own traffic and to a streaming replica (bench/README.md).

Starts its own primary (production durability: fsync, synchronous_commit and full-page writes on) and a hot
standby of it (``pg_basebackup -R``, streaming over loopback; tests/own_servers.py), builds bench/run.py's
Dify-shaped template on the primary, and then, on a fresh copy for each contender:

1. runs a Dify-like workload at a fixed rate (a separate process, several connections): insert a message with
   two children, update its conversation, read a conversation's latest messages, each in its own transaction
   with an application's ``lock_timeout``; latency is measured from each operation's scheduled start (an
   operation that had to queue behind a slow one counts its wait);
2. lets it run alone for a few seconds (the baseline: every contender's quiet window, pooled);
3. runs the contender while the workload goes on: difymaint at its defaults, at full speed
   (``--sleep-ms 0 --workers 2``), and Dify's own SQL shapes with and without Dify's pause (bench/run.py's);
4. samples the replica's replay lag (seconds and bytes, engine/throttle.py's reader) every 100 ms.

It prints, per contender, the workload's p50 / p99 / max latency as a ratio of the baseline, its errors (lock
timeouts, deadlocks, others), the contender's rows/s, and the largest replay lag. ``--lag-scenario`` then runs
difymaint with ``--max-replica-lag`` while the replica's replay is paused for a while, and reports the WAL the
job wrote while the replica lagged past the bound against one batch's WAL, and whether the run resumed by
itself.

    bench/live --messages 200000 [--rate 200] [--json] [--lag-scenario]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.own_servers (the replica helper)

# A spawned workload lane imports this module again as __mp_main__ and needs only the standard library and the
# driver: leaving SQLAlchemy and difymaint out makes the lanes start in a fraction of the time.
if __name__ != "__mp_main__":
    import sqlalchemy as sa
    from run import DAYS, DIFY_SLEEP_MS, MESSAGE_CHILDREN, PRODUCTION_SETTINGS, Timer, build_template, cli
    from sqlalchemy.engine import Engine

    from difymaint.engine.throttle import PrimaryReader
    from tests.own_servers import OwnPostgres, OwnReplica

    DIFY = {"dify": DIFY_SLEEP_MS, "dify-no-sleep": 0}
    # A production-like primary: durable commits, as an operator's database has them. The standby inherits them.
    PRODUCTION = {
        **PRODUCTION_SETTINGS,
        # A busy server recycles WAL segments; a fresh cluster would create (zero-fill, fsync) one for every
        # 16 MB, under the WAL write lock, which no production server does in steady state.
        "min_wal_size": "1GB",
        "max_connections": "100",
    }
APPS = 200
LOCK_TIMEOUT = "1s"  # what an application would set: fail fast rather than queue behind a purge
STATEMENT_TIMEOUT = "10s"
CONFLICT_SPREAD = 5000  # --conflicts touches one of this many oldest messages (a cleanup's current batches)
WORKLOAD_LANES = 6  # processes, one connection each
SAMPLE_EVERY_S = 0.1
KEPT_DETAILS = (
    "wal_bytes",
    "throttled_s",
    "lock_blocked_batches",
    "lock_blocked_sessions_max",
    "contended_batches",
    "traffic_batches",
    "batch_target_ms",
    "paced_extra_s",
)
KINDS = ("insert", "update", "read", "touch-old")  # the workload's operations in turn; the last with --conflicts

DIFYMAINT: dict[str, list[str]] = {
    "difymaint": [],
    "difymaint-full": ["--sleep-ms", "0", "--workers", "2"],
}
# --- the workload (a process of its own, so that it never shares a GIL with a contender) ----------------------


def _uid(prefix: str, n: int) -> str:
    """bench/run.py's deterministic ids: md5(prefix || n) as a uuid."""
    import hashlib

    return str(uuid.UUID(hashlib.md5(f"{prefix}{n}".encode()).hexdigest()))


def workload(
    dsn: str,
    rate: float,
    messages: int,
    lane: int,
    lanes: int,
    t0: Any,
    stop: Any,
    results: Any,
    ready: Any,
    only: int | None = None,
) -> None:
    """One lane of the workload: operations k = lane, lane + lanes, … each started at t0 + k / rate (an open
    loop: a slow operation delays the next one of its lane, and that wait counts in the next one's latency),
    until ``stop`` is set; puts [(scheduled, latency_s, error, kind)] on ``results``. One process and one
    connection per lane, so that no lane waits on another's Python (a GIL) or driver. ``only``: every operation
    of this lane is that kind (the conflicting lane)."""
    import psycopg2  # type: ignore[import-untyped]  # no stubs installed; the workload only needs the driver

    conn = psycopg2.connect(
        dsn,
        application_name="workload",
        options=f"-c lock_timeout={LOCK_TIMEOUT} -c statement_timeout={STATEMENT_TIMEOUT}",
    )
    ready.release()
    while not t0.value and not stop.wait(0.01):  # the parent starts the clock once every lane is connected
        pass
    start = t0.value
    records: list[tuple[float, float, str, int]] = []
    rng = random.Random(lane)
    someone = "00000000-0000-0000-0000-000000000001"

    conversations = max(1, messages // 5)

    def op(cur: Any, kind: int) -> None:
        if kind == 3:  # feedback on one of the oldest messages left: the rows a cleanup is deleting right now
            cur.execute(
                "UPDATE messages SET updated_at = now() AT TIME ZONE 'utc' WHERE id = (SELECT id FROM messages "
                "ORDER BY created_at, id LIMIT 1 OFFSET %s)",
                (rng.randrange(CONFLICT_SPREAD),),
            )
            return
        g = rng.randrange(conversations)
        conversation, app = _uid("c", g), _uid("a", g % APPS)
        if kind == 0:  # a new message with two children, as a chat turn writes them
            message = str(uuid.uuid4())
            cur.execute(
                "INSERT INTO messages (id, app_id, conversation_id, inputs, query, message, answer, "
                "message_unit_price, answer_unit_price, currency, from_source, created_at, updated_at) VALUES "
                "(%s, %s, %s, '{}', 'q', '[]', %s, 0, 0, 'USD', 'api', now() AT TIME ZONE 'utc', "
                "now() AT TIME ZONE 'utc')",
                (message, app, conversation, "answer " * 20),
            )
            cur.execute(
                "INSERT INTO message_agent_thoughts (id, message_id, position, created_by_role, created_by) "
                "VALUES (%s, %s, 1, 'account', %s)",
                (str(uuid.uuid4()), message, someone),
            )
            cur.execute(
                "INSERT INTO message_chains (id, message_id, type) VALUES (%s, %s, 'system')",
                (str(uuid.uuid4()), message),
            )
        elif kind == 1:  # the conversation's bookkeeping after a turn
            cur.execute("UPDATE conversations SET updated_at = now() AT TIME ZONE 'utc' WHERE id = %s", (conversation,))
        else:  # a page of the conversation's latest messages
            cur.execute(
                "SELECT id, query, answer, created_at FROM messages WHERE conversation_id = %s "
                "ORDER BY created_at DESC LIMIT 20",
                (conversation,),
            )
            cur.fetchall()

    try:
        k = lane
        while not stop.is_set():
            scheduled = start + k / rate
            delay = scheduled - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            error = ""
            try:
                kind = only if only is not None else k % 3
                with conn, conn.cursor() as cur:
                    op(cur, kind)
            except psycopg2.Error as exc:
                error = {"55P03": "lock_timeout", "40P01": "deadlock"}.get(exc.pgcode or "", "other")
                if error == "other":
                    error += f": {exc.pgcode} {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            records.append((scheduled, time.monotonic() - scheduled, error, kind))
            k += lanes
    finally:
        conn.close()
        results.put(records)


def dify_child(url: str, cutoff: datetime, sleep_ms: int, results: Any) -> None:
    """Dify's own loop (bench/run.py), in a process of its own: (started, ended, batch seconds)."""
    import sqlalchemy as sa
    from run import Timer, dify_messages

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    timer = Timer()
    with engine.connect() as conn:
        started = time.monotonic()
        dify_messages(sleep_ms)(conn, cutoff, timer)
        ended = time.monotonic()
    engine.dispose()
    results.put((started, ended, timer.batches))


# --- measuring ---------------------------------------------------------------------------------------------------


@dataclass
class LagSampler:
    """The replica's replay lag every 100 ms, read on the primary as the throttle reads it."""

    engine: Engine
    samples: list[tuple[float, float, int, int]] = field(default_factory=list)  # (at, seconds, bytes, wal pos)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        reader = PrimaryReader(self.engine)

        def loop() -> None:
            while not self._stop.is_set():
                lags = reader.read()
                at = time.monotonic()
                position = reader.clock.samples[-1][1] if reader.clock.samples else 0
                worst = max(lags.values(), key=lambda lag: lag.seconds, default=None)
                self.samples.append((at, worst.seconds if worst else 0.0, worst.bytes if worst else 0, position))
                self._stop.wait(SAMPLE_EVERY_S)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def within(self, start: float, end: float) -> list[tuple[float, float, int, int]]:
        return [s for s in self.samples if start <= s[0] <= end]


@dataclass
class WaitSampler:
    """What the workload's sessions are doing while active, every 20 ms (``--waits``): CPU (no wait event),
    WAL writes, locks, I/O. Which one grows while a contender runs says which kind of contention it causes."""

    engine: Engine
    tally: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        query = sa.text(
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity "
            "WHERE application_name = 'workload' AND state = 'active'"
        )

        def loop() -> None:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                while not self._stop.wait(0.02):
                    for (event,) in conn.execute(query):
                        self.tally[event] = self.tally.get(event, 0) + 1

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.engine.dispose()
        return dict(sorted(self.tally.items(), key=lambda item: -item[1]))


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 2)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1] * 1000, 2)}


@dataclass
class Outcome:
    contender: str
    wall_s: float = 0.0
    rows: int = 0
    ops: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    vs_baseline: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    replica_lag_max_s: float = 0.0
    replica_lag_max_bytes: int = 0
    batches: int = 0
    batch_ms: dict[str, float] = field(default_factory=dict)  # the last repetition's
    details: dict[str, Any] = field(default_factory=dict)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)  # insert / update / read latencies
    repeats: int = 1
    samples: list[tuple[float, int]] = field(default_factory=list, repr=False)  # (latency s, kind), no errors

    def summarise(self) -> None:
        self.latency_ms = percentiles([latency for latency, _ in self.samples])
        self.by_kind = {
            name: percentiles([latency for latency, kind in self.samples if kind == n]) for n, name in enumerate(KINDS)
        }

    def merge(self, other: Outcome) -> None:
        """Pool another repetition: latencies together, rows and time summed, the worst lag."""
        self.wall_s += other.wall_s
        self.rows += other.rows
        self.ops += other.ops
        self.batches += other.batches
        self.samples += other.samples
        self.repeats += 1
        for error, count in other.errors.items():
            self.errors[error] = self.errors.get(error, 0) + count
        self.replica_lag_max_s = max(self.replica_lag_max_s, other.replica_lag_max_s)
        self.replica_lag_max_bytes = max(self.replica_lag_max_bytes, other.replica_lag_max_bytes)
        self.summarise()

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s else 0.0


class LiveBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.primary = OwnPostgres(PRODUCTION)
        self.replica: OwnReplica | None = None
        self.ctx = mp.get_context("spawn")
        self.now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        self.cutoff = (self.now - timedelta(days=DAYS)).replace(hour=0, minute=0, second=0)
        self.baseline: list[tuple[float, int]] = []
        self.baseline_errors: dict[str, int] = {}
        self.baseline_waits: list[dict[str, int]] = []

    def url(self, database: str) -> str:
        return sa.make_url(self.primary.url).set(database=database).render_as_string(hide_password=False)

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.primary.port} user=postgres dbname={database}"

    def start(self) -> None:
        self.primary.start()
        if not self.args.no_replica:
            self.replica = OwnReplica(self.primary)
            self.replica.start()
        self.admin = sa.create_engine(self.primary.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)

    def stop(self) -> None:
        if self.replica is not None:
            self.replica.stop()
        self.primary.stop()

    def build(self) -> float:
        started = time.perf_counter()
        self.primary.sql("CREATE DATABASE live_tpl")
        engine = sa.create_engine(self.url("live_tpl"), poolclass=sa.pool.NullPool)
        messages = self.args.messages
        build_template(
            engine, messages=messages, runs=10, embeddings=10, now=self.now, history_days=self.args.history_days
        )
        engine.dispose()
        return time.perf_counter() - started

    def fresh_copy(self) -> None:
        self.primary.sql("DROP DATABASE IF EXISTS live_run WITH (FORCE)")
        self.primary.sql("CREATE DATABASE live_run TEMPLATE live_tpl STRATEGY FILE_COPY")
        self.primary.sql("CHECKPOINT")
        self.caught_up()

    def caught_up(self, timeout_s: float = 600) -> None:
        if self.replica is None:
            return
        deadline = time.monotonic() + timeout_s
        query = "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn >= pg_current_wal_lsn()"
        while self.primary.sql(query) != "1":
            if time.monotonic() > deadline:
                raise SystemExit("live bench: the replica did not catch up")
            time.sleep(0.1)

    def count_rows(self) -> int:
        """The expired rows still there: messages past the cut-off and their children (the workload only ever
        adds new rows, so the difference is exactly what a contender deleted)."""
        old = "SELECT id FROM messages WHERE created_at < :cut"
        queries = [f"SELECT count(*) FROM {t} WHERE message_id IN ({old})" for t in MESSAGE_CHILDREN]
        queries.append("SELECT count(*) FROM messages WHERE created_at < :cut")
        engine = sa.create_engine(self.url("live_run"), poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            total = sum(int(conn.execute(sa.text(q), {"cut": self.cutoff}).scalar_one()) for q in queries)
        engine.dispose()
        return total

    def workload_start(self) -> tuple[list[Any], Any, Any]:
        stop, ready, results = self.ctx.Event(), self.ctx.Semaphore(0), self.ctx.Queue()
        t0 = self.ctx.Value("d", 0.0)
        dsn, messages = self.dsn("live_run"), self.args.messages
        procs = [
            self.ctx.Process(
                target=workload, args=(dsn, self.args.rate, messages, lane, WORKLOAD_LANES, t0, stop, results, ready)
            )
            for lane in range(WORKLOAD_LANES)
        ]
        if self.args.conflicts:
            procs.append(
                self.ctx.Process(
                    target=workload, args=(dsn, self.args.conflicts, messages, 0, 1, t0, stop, results, ready, 3)
                )
            )
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.acquire(timeout=60)
        t0.value = time.monotonic() + 0.2  # CLOCK_MONOTONIC is one clock for every process on the machine
        return procs, stop, results

    @staticmethod
    def workload_stop(procs: list[Any], stop: Any, results: Any) -> list[tuple[float, float, str, int]]:
        stop.set()
        records: list[tuple[float, float, str, int]] = []
        for _ in procs:
            records += results.get()
        for proc in procs:
            proc.join()
        return records

    def measure(self, contender: str) -> Outcome:
        self.fresh_copy()
        rows_before = self.count_rows()
        proc, stop, results = self.workload_start()
        sampler = LagSampler(sa.create_engine(self.primary.url, poolclass=sa.pool.NullPool))
        sampler.start()
        time.sleep(self.args.warmup_s)  # the workload alone for a moment: connections and caches warm
        quiet_start = time.monotonic()
        if self.args.waits:
            waits = WaitSampler(sa.create_engine(self.url("live_run"), poolclass=sa.pool.NullPool))
            waits.start()
        time.sleep(self.args.quiet_s)
        quiet_end = time.monotonic()
        if self.args.waits:
            self.baseline_waits.append(waits.stop())
            waits = WaitSampler(sa.create_engine(self.url("live_run"), poolclass=sa.pool.NullPool))
            waits.start()
        outcome = Outcome(contender)
        if contender in DIFYMAINT:
            flags = [arg for arg in DIFYMAINT[contender] if not _is_env(arg)]
            env = dict(arg.split("=", 1) for arg in DIFYMAINT[contender] if _is_env(arg))
            summary, _, _ = cli("clean-messages", self.url("live_run"), self.cutoff, flags, env)
            ended = time.monotonic()
            offset = time.time() - time.monotonic()
            started = datetime.fromisoformat(summary["started_at"]).timestamp() - offset
            outcome.wall_s = float(summary["duration_s"])
            ended = started + outcome.wall_s  # the job's own end (the process still prints and exits after it)
            outcome.batches = int(summary["batches"])
            outcome.batch_ms = summary["details"].get("batch_ms", {})
            outcome.details = {k: v for k, v in summary["details"].items() if k in KEPT_DETAILS}
        else:
            queue = self.ctx.Queue()
            child = self.ctx.Process(
                target=dify_child, args=(self.url("live_run"), self.cutoff, DIFY[contender], queue)
            )
            child.start()
            started, ended, batches = queue.get()
            child.join()
            outcome.wall_s = ended - started
            outcome.batches = len(batches)
            timer = Timer()
            timer.batches = batches
            outcome.batch_ms = timer.summary()
        if self.args.waits:
            outcome.details["workload_waits"] = waits.stop()
        time.sleep(0.2)
        records = self.workload_stop(proc, stop, results)
        sampler.stop()
        sampler.engine.dispose()
        outcome.rows = rows_before - self.count_rows()
        quiet = [r for r in records if quiet_start <= r[0] < quiet_end]
        self.baseline += [(latency, kind) for _, latency, error, kind in quiet if not error]
        for _, _, error, _ in quiet:
            if error:
                self.baseline_errors[error] = self.baseline_errors.get(error, 0) + 1
        during = [r for r in records if started <= r[0] < ended]
        outcome.ops = len(during)
        outcome.samples = [(latency, kind) for _, latency, error, kind in during if not error]
        outcome.summarise()
        for _, _, error, _ in during:
            if error:
                outcome.errors[error] = outcome.errors.get(error, 0) + 1
        lags = sampler.within(started, ended + 2.0)  # the replica may still be replaying the last batch
        outcome.replica_lag_max_s = round(max((s[1] for s in lags), default=0.0), 3)
        outcome.replica_lag_max_bytes = max((s[2] for s in lags), default=0)
        return outcome

    def lag_scenario(self, bound_s: float, pause_s: float) -> dict[str, Any]:
        """difymaint --max-replica-lag while the replica's replay is paused for ``pause_s``: the job's WAL
        written while the lag was over the bound, against one batch's WAL; and whether it resumed by itself."""
        assert self.replica is not None
        replica = self.replica
        database = "live_run"
        if self.args.lag_messages == self.args.messages:
            self.fresh_copy()
        else:  # a run long enough to outlast the pause and the bound
            database = "live_lag"
            self.primary.sql("DROP DATABASE IF EXISTS live_run WITH (FORCE)")
            self.primary.sql(f"CREATE DATABASE {database}")
            engine = sa.create_engine(self.url(database), poolclass=sa.pool.NullPool)
            build_template(
                engine,
                messages=self.args.lag_messages,
                runs=10,
                embeddings=10,
                now=self.now,
                history_days=self.args.history_days,
            )
            engine.dispose()
            self.primary.sql("CHECKPOINT")
            self.caught_up()
        sampler = LagSampler(sa.create_engine(self.primary.url, poolclass=sa.pool.NullPool))
        sampler.start()
        timeline: dict[str, float] = {}

        def pause_later() -> None:
            time.sleep(self.args.lag_pause_after_s)
            replica.pause_replay()
            timeline["paused"] = time.monotonic()
            time.sleep(pause_s)
            replica.resume_replay()
            timeline["resumed"] = time.monotonic()

        pauser = threading.Thread(target=pause_later)
        args = ["--max-replica-lag", f"{bound_s:g}"]
        started = time.monotonic()
        pauser.start()
        summary, _, _ = cli("clean-messages", self.url(database), self.cutoff, args)
        ended = time.monotonic()
        pauser.join()
        time.sleep(0.5)
        sampler.stop()
        sampler.engine.dispose()
        over = [s for s in sampler.samples if s[1] > bound_s]
        wal = int(summary["details"].get("wal_bytes", 0))
        per_batch = wal / max(1, int(summary["batches"]))
        if over:
            # The primary's WAL position from the first sample over the bound to the last one: what was written
            # while the replica lagged past it (nothing else writes to this cluster during the scenario).
            written_over = over[-1][3] - over[0][3]
        else:
            written_over = 0
        return {
            "messages": self.args.lag_messages,
            "bound_s": bound_s,
            "paused_s": pause_s,
            "outcome": summary["outcome"],
            "exit_code": summary["exit_code"],
            "rows": summary["rows_total"],
            "batches": summary["batches"],
            "duration_s": summary["duration_s"],
            "throttled_s": summary["details"].get("throttled_s"),
            "throttle_waits": summary["details"].get("throttle_waits"),
            "lag_max_s": round(max((s[1] for s in sampler.samples), default=0.0), 2),
            "lag_max_bytes": max((s[2] for s in sampler.samples), default=0),
            "wal_per_batch_bytes": round(per_batch),
            "wal_written_over_bound_bytes": written_over,
            "resumed_after_replay_s": round(ended - timeline["resumed"], 2) if "resumed" in timeline else None,
            "finished_before_resume": "resumed" not in timeline or ended < timeline["resumed"],
            "wall_s": round(ended - started, 2),
        }


def _is_env(arg: str) -> bool:
    """A variant's ``NAME=value`` word is a setting for the CLI's environment, not a flag."""
    return "=" in arg and arg.split("=", 1)[0].isupper()


def ratios(outcome: Outcome, baseline: dict[str, float]) -> None:
    for key in ("p50", "p99", "max"):
        if outcome.latency_ms.get(key) and baseline.get(key):
            outcome.vs_baseline[key] = round(outcome.latency_ms[key] / baseline[key], 2)


def print_table(outcomes: list[Outcome], baseline: dict[str, float], baseline_ops: int, errors: dict[str, int]) -> None:
    print(
        f"\nbaseline (workload alone, {baseline_ops} ops): p50 {baseline.get('p50')} ms, p99 {baseline.get('p99')} ms, "
        f"max {baseline.get('max')} ms; errors {errors or 'none'}"
    )
    dify = next((o for o in outcomes if o.contender == "dify"), None)
    header = (
        f"{'contender':<16}{'wall s':>8}{'rows/s':>10}{'÷dify':>7}{'ops':>6}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
    )
    print(header + f"{'p50×':>6}{'p99×':>6}{'max×':>7}{'errors':>8}{'lag s':>7}{'lag MB':>8}{'batches':>8}")
    for o in outcomes:
        vs = f"{o.rows_per_s / dify.rows_per_s:>7.2f}" if dify and dify.rows_per_s else f"{'':>7}"
        lat = "".join(f"{o.latency_ms.get(k, float('nan')):>8.1f}" for k in ("p50", "p99", "max"))
        rat = "".join(f"{o.vs_baseline.get(k, float('nan')):>{w}.2f}" for k, w in (("p50", 6), ("p99", 6), ("max", 7)))
        failed = sum(o.errors.values())
        print(
            f"{o.contender:<16}{o.wall_s:>8.2f}{o.rows_per_s:>10,.0f}{vs}{o.ops:>6}{lat}{rat}{failed:>8}"
            f"{o.replica_lag_max_s:>7.2f}{o.replica_lag_max_bytes / 2**20:>8.1f}{o.batches:>8}"
        )
        if o.errors:
            print(f"{'':<16}errors: {o.errors}")
        if o.details.get("lock_blocked_batches"):
            print(f"{'':<16}batches that held others up: {o.details['lock_blocked_batches']}")
        kinds = ", ".join(f"{name} p99 {o.by_kind.get(name, {}).get('p99')}" for name in KINDS)
        print(f"{'':<16}{kinds}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--history-days", type=int, default=90)
    parser.add_argument("--rate", type=float, default=200.0, help="workload operations per second")
    parser.add_argument("--quiet-s", type=float, default=5.0, help="seconds of workload alone before each contender")
    parser.add_argument(
        "--contenders",
        default=",".join([*DIFYMAINT, *DIFY]),
        help="comma-separated; NAME=ARGS adds a difymaint variant: flags and SETTING=value words, e.g. "
        "'short=--sleep-ms 100 DIFYMAINT_TARGET_BATCH_MS=100'",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure every contender this many times, interleaved, and pool"
    )
    parser.add_argument("--warmup-s", type=float, default=2.0, help="workload alone before the quiet window")
    parser.add_argument(
        "--conflicts",
        type=float,
        default=0.0,
        help="also update this many of the oldest messages per second (the rows a cleanup is deleting: lock waits)",
    )
    parser.add_argument("--waits", action="store_true", help="sample what the workload's sessions wait on")
    parser.add_argument("--no-replica", action="store_true", help="no streaming replica (no lag figures)")
    parser.add_argument("--lag-scenario", action="store_true", help="also run the --max-replica-lag scenario")
    parser.add_argument("--lag-bound", type=float, default=5.0)
    parser.add_argument("--lag-pause", type=float, default=15.0, help="seconds the replica's replay stays paused")
    parser.add_argument(
        "--lag-pause-after-s", type=float, default=3.0, help="pause replay this long after the job's process starts"
    )
    parser.add_argument(
        "--lag-messages", type=int, default=1_000_000, help="messages of the scenario's own database (a long run)"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the whole bench (servers, workload, contenders) at this niceness, e.g. -10 on a machine other "
        "work shares, so that its load does not dominate the tails (root only below 0)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.history_days <= DAYS:
        parser.error(f"--history-days must be more than the {DAYS}-day cut-off")
    if args.nice:
        os.nice(args.nice)  # inherited by every process the bench starts, the servers included
    if args.lag_scenario and args.no_replica:
        parser.error("--lag-scenario needs the replica")
    contenders: list[str] = []
    for item in (part.strip() for part in args.contenders.split(",") if part.strip()):
        if "=" in item:
            name, extra = item.split("=", 1)
            DIFYMAINT[name] = extra.split()
            contenders.append(name)
        elif item in DIFYMAINT or item in DIFY:
            contenders.append(item)
        else:
            parser.error(f"unknown contender {item!r}")
    bench = LiveBench(args)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg(), "nice": args.nice},
        "scale": {"messages": args.messages, "history_days": args.history_days, "rate": args.rate},
        "server": PRODUCTION,
    }
    try:
        bench.start()
        report["build_s"] = round(bench.build(), 1)
        report["postgres"] = bench.primary.sql("SHOW server_version")
        if not args.json:
            print(f"template built in {report['build_s']} s: {report['scale']}; replica: {not args.no_replica}")
        pooled: dict[str, Outcome] = {}
        for _ in range(args.repeat):  # interleaved, so that a noisy minute hurts every contender alike
            for name in contenders:
                outcome = bench.measure(name)
                if name in pooled:
                    pooled[name].merge(outcome)
                else:
                    pooled[name] = outcome
        outcomes = [pooled[name] for name in contenders]
        baseline = percentiles([latency for latency, _ in bench.baseline])
        report["baseline_by_kind"] = {
            name: percentiles([latency for latency, kind in bench.baseline if kind == n])
            for n, name in enumerate(KINDS)
        }
        for outcome in outcomes:
            ratios(outcome, baseline)
        report["baseline"] = {"ops": len(bench.baseline), "latency_ms": baseline, "errors": bench.baseline_errors}
        if bench.baseline_waits:
            report["baseline"]["workload_waits"] = bench.baseline_waits
        report["contenders"] = [
            {k: v for k, v in asdict(o).items() if k != "samples"} | {"rows_per_s": round(o.rows_per_s)}
            for o in outcomes
        ]
        if not args.json:
            print_table(outcomes, baseline, len(bench.baseline), bench.baseline_errors)
            kinds = ", ".join(f"{name} p99 {report['baseline_by_kind'][name].get('p99')}" for name in KINDS)
            print(f"baseline by operation: {kinds}")
        if args.lag_scenario:
            report["lag_scenario"] = bench.lag_scenario(args.lag_bound, args.lag_pause)
            if not args.json:
                print(f"\nreplica-lag scenario: {report['lag_scenario']}")
        report["machine"]["load_after"] = os.getloadavg()
        if args.json:
            print(json.dumps(report, default=str))
        return 0
    finally:
        bench.stop()


if __name__ == "__main__":
    raise SystemExit(main())
