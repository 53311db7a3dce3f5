"""Durable run history and pauses, kept in the database the jobs already use.

On PostgreSQL the tables live in their own schema ``difymaint`` (``difymaint.job_runs``,
``difymaint.job_pauses``), created on first use, so nothing is ever added to Dify's alembic-managed ``public``
schema. On SQLite they are ``difymaint_job_runs`` / ``difymaint_job_pauses``. ``DIFYMAINT_HISTORY=off``
turns all of it off.

A run writes its record when it starts (outcome ``running``), refreshes it after its first batch and then at
most once a second (heartbeat, rows so far, rate: a write and a commit on Dify's database, which short batches
would otherwise double) and completes it at the end. Writing history is best effort: any failure becomes one warning
and the recorder goes quiet for the rest of the run; it never fails the job.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine, RowMapping

from difymaint.core.database import tracked
from difymaint.core.redact import RedactingFilter, mask_data, scrub
from difymaint.core.summary import Outcome, RunSummary

SCHEMA = "difymaint"
RUNNING = "running"
MAX_LOG_LINES = 500  # per run: enough for a failed run's story, small enough for a table row
MAX_LOG_LINE_CHARS = 500
FINISH_RETRY_S = 5.0  # how long the closing write waits for a restarting database
FINISH_RETRY_EVERY_S = 0.5
PAUSE_CHECK_EVERY_S = 3.0  # a running job looks at the pause table at most this often
HEARTBEAT_EVERY_S = 1.0  # and refreshes its record at most this often (after the first batch)
_ENSURE_LOCK = 0x646966796D61696E  # "difymain": serialises the first-use CREATE statements across processes

log = logging.getLogger("difymaint")


def host_name() -> str:
    """The pod name in Kubernetes (HOSTNAME), else the machine's name."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def redact(args: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments fit to store and show: values of secret keys masked (the same names as every output,
    core/redact.py), passwords cut out of URLs, known secrets replaced."""
    clean: dict[str, Any] = {}
    for key, value in args.items():
        if value is None or value is False or value in ((), []):
            continue  # only what the operator actually set
        if isinstance(value, int | float | bool):
            clean[key] = value
        elif isinstance(value, list | tuple):
            clean[key] = [str(item) for item in value]
        else:
            clean[key] = str(value)
    masked: dict[str, Any] = mask_data(clean)
    return masked


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time here is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@dataclass
class RunRecord:
    run_id: str
    job: str
    host: str
    pid: int | None
    args: dict[str, Any]
    dry_run: bool
    started_at: datetime
    ended_at: datetime | None
    heartbeat_at: datetime | None
    outcome: str
    exit_code: int | None
    tables: dict[str, int]
    rows_total: int
    batches: int
    rows_remaining: int | None
    rate: float | None
    stop_reason: str | None
    error: str | None
    log_lines: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.outcome == RUNNING

    @property
    def duration_s(self) -> float | None:
        end = self.ended_at or self.heartbeat_at
        return (end - self.started_at).total_seconds() if end else None

    def to_dict(self, *, with_log: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "job": self.job,
            "host": self.host,
            "pid": self.pid,
            "args": self.args,
            "dry_run": self.dry_run,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "heartbeat_at": self.heartbeat_at.isoformat() if self.heartbeat_at else None,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "tables": self.tables,
            "rows_total": self.rows_total,
            "batches": self.batches,
            "rows_remaining": self.rows_remaining,
            "rate_rows_per_s": self.rate,
            "stop_reason": self.stop_reason,
            "error": self.error,
        }
        if with_log:
            data["log"] = self.log_lines
        return data


@dataclass
class Pause:
    job: str
    reason: str | None
    paused_at: datetime
    paused_by: str


class HistoryStore:
    """The two tables, on whichever database the engine points at."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        postgres = engine.dialect.name == "postgresql"
        metadata = sa.MetaData(schema=SCHEMA if postgres else None)
        prefix = "" if postgres else "difymaint_"
        # MySQL's DATETIME keeps whole seconds by default: microseconds for durations and rates.
        moment = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql")
        self.runs = sa.Table(
            f"{prefix}job_runs",
            metadata,
            sa.Column("run_id", sa.String(36), primary_key=True),
            sa.Column("job", sa.String(100), nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer),
            sa.Column("args", sa.JSON, nullable=False),
            sa.Column("dry_run", sa.Boolean, nullable=False),
            sa.Column("started_at", moment, nullable=False),
            sa.Column("ended_at", moment),
            sa.Column("heartbeat_at", moment),
            sa.Column("outcome", sa.String(32), nullable=False),
            sa.Column("exit_code", sa.Integer),
            sa.Column("tables", sa.JSON, nullable=False),
            sa.Column("rows_total", sa.BigInteger, nullable=False, default=0),
            sa.Column("batches", sa.Integer, nullable=False, default=0),
            sa.Column("rows_remaining", sa.BigInteger),
            sa.Column("rate", sa.Float),
            sa.Column("stop_reason", sa.String(100)),
            sa.Column("error", sa.Text),
            sa.Column("log_lines", sa.JSON),
            sa.Index(f"{prefix}job_runs_job_started_idx", "job", "started_at"),
            sa.Index(f"{prefix}job_runs_started_idx", "started_at"),  # prune and `history --since`
        )
        self.pauses = sa.Table(
            f"{prefix}job_pauses",
            metadata,
            sa.Column("job", sa.String(100), primary_key=True),
            sa.Column("reason", sa.Text),
            sa.Column("paused_at", moment, nullable=False),
            sa.Column("paused_by", sa.String(255), nullable=False),
        )
        self._metadata = metadata
        self._postgres = postgres
        self._mysql = engine.dialect.name == "mysql"
        self._ready = False

    def ensure(self) -> None:
        """Create the schema and tables on first use (CREATE … IF NOT EXISTS: safe from concurrent runs)."""
        if self._ready:
            return
        with self.engine.begin() as conn:
            if self._postgres:
                # Concurrent first runs (run-due starts several at once) would race on CREATE SCHEMA; and a role
                # without CREATE on the database may still use a schema an administrator created for it.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ENSURE_LOCK})
                exists = conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :n"), {"n": SCHEMA}).first()
                if exists is None:
                    conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            if self._mysql:
                # DDL commits at once on MySQL, so no transaction-scoped lock: a named lock for the session.
                conn.execute(sa.text("SELECT GET_LOCK(:n, 30)"), {"n": f"{self.engine.url.database}:difymaint-history"})
            try:
                self._metadata.create_all(conn, checkfirst=True)
            finally:
                if self._mysql:
                    conn.execute(
                        sa.text("SELECT RELEASE_LOCK(:n)"), {"n": f"{self.engine.url.database}:difymaint-history"}
                    )
        self._ready = True

    # --- runs ------------------------------------------------------------------------------------------------

    def start(
        self, *, job: str, args: Mapping[str, Any], dry_run: bool, started_at: datetime, run_id: str | None = None
    ) -> str:
        self.ensure()
        run_id = run_id or str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(
                self.runs.insert().values(
                    run_id=run_id,
                    job=job,
                    host=host_name(),
                    pid=os.getpid(),
                    args=redact(args),
                    dry_run=dry_run,
                    started_at=started_at,
                    heartbeat_at=started_at,
                    outcome=RUNNING,
                    tables={},
                    rows_total=0,
                    batches=0,
                )
            )
        return run_id

    def update(self, run_id: str, **values: Any) -> None:
        # The per-batch heartbeat: cancellable like the batch itself, so a frozen database cannot hang the run.
        with self.engine.begin() as conn, tracked(conn):
            conn.execute(self.runs.update().where(self.runs.c.run_id == run_id).values(**values))

    def get(self, run_id: str) -> RunRecord | None:
        self.ensure()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.runs).where(self.runs.c.run_id == run_id)).mappings().first()
            if row is None and len(run_id) >= 4:  # a unique prefix is enough, as with git hashes
                rows = (
                    conn.execute(sa.select(self.runs).where(self.runs.c.run_id.startswith(run_id)).limit(2))
                    .mappings()
                    .all()
                )
                row = rows[0] if len(rows) == 1 else None
        return _record(row) if row is not None else None

    def recent(
        self, *, job: str | None = None, since: datetime | None = None, limit: int | None = 50
    ) -> list[RunRecord]:
        """Runs, newest first."""
        self.ensure()
        query = sa.select(self.runs).order_by(self.runs.c.started_at.desc(), self.runs.c.run_id)
        if job is not None:
            query = query.where(self.runs.c.job == job)
        if since is not None:
            query = query.where(self.runs.c.started_at >= since)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    def last(self, job: str, *, outcomes: tuple[str, ...] | None = None, real_only: bool = False) -> RunRecord | None:
        self.ensure()
        query = sa.select(self.runs).where(self.runs.c.job == job)
        if outcomes is not None:
            query = query.where(self.runs.c.outcome.in_(outcomes))
        if real_only:
            query = query.where(self.runs.c.dry_run.is_(False))
        query = query.order_by(self.runs.c.started_at.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _record(row) if row is not None else None

    def running(self) -> list[RunRecord]:
        """Records still marked running (a crashed run stays so; its heartbeat tells)."""
        self.ensure()
        query = sa.select(self.runs).where(self.runs.c.outcome == RUNNING).order_by(self.runs.c.started_at)
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    def rows_since(self, job: str, since: datetime) -> int:
        """Rows a job's real runs changed since ``since`` (status: "rows removed in 7 days")."""
        self.ensure()
        query = sa.select(sa.func.coalesce(sa.func.sum(self.runs.c.rows_total), 0)).where(
            self.runs.c.job == job, self.runs.c.started_at >= since, self.runs.c.dry_run.is_(False)
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def prune(self, older_than: datetime) -> int:
        """Delete finished runs that started before ``older_than``; running records stay."""
        self.ensure()
        with self.engine.begin() as conn:
            result = conn.execute(
                self.runs.delete().where(self.runs.c.started_at < older_than, self.runs.c.outcome != RUNNING)
            )
        return int(result.rowcount or 0)

    # --- pauses ----------------------------------------------------------------------------------------------

    def pause(self, job: str, reason: str | None, now: datetime) -> None:
        self.ensure()
        with self.engine.begin() as conn:
            conn.execute(self.pauses.delete().where(self.pauses.c.job == job))
            conn.execute(self.pauses.insert().values(job=job, reason=reason, paused_at=now, paused_by=host_name()))

    def resume(self, job: str) -> bool:
        self.ensure()
        with self.engine.begin() as conn:
            return bool(conn.execute(self.pauses.delete().where(self.pauses.c.job == job)).rowcount)

    def paused(self, job: str) -> Pause | None:
        self.ensure()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.pauses).where(self.pauses.c.job == job)).mappings().first()
        if row is None:
            return None
        return Pause(row["job"], row["reason"], _aware(row["paused_at"]) or row["paused_at"], row["paused_by"])

    def pauses_all(self) -> dict[str, Pause]:
        self.ensure()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.pauses)).mappings().all()
        return {
            row["job"]: Pause(row["job"], row["reason"], _aware(row["paused_at"]) or row["paused_at"], row["paused_by"])
            for row in rows
        }


def _record(row: RowMapping) -> RunRecord:
    started = _aware(row["started_at"])
    assert started is not None
    return RunRecord(
        run_id=row["run_id"],
        job=row["job"],
        host=row["host"],
        pid=row["pid"],
        args=dict(row["args"] or {}),
        dry_run=bool(row["dry_run"]),
        started_at=started,
        ended_at=_aware(row["ended_at"]),
        heartbeat_at=_aware(row["heartbeat_at"]),
        outcome=row["outcome"],
        exit_code=row["exit_code"],
        tables=dict(row["tables"] or {}),
        rows_total=int(row["rows_total"] or 0),
        batches=int(row["batches"] or 0),
        rows_remaining=row["rows_remaining"],
        rate=row["rate"],
        stop_reason=row["stop_reason"],
        error=row["error"],
        log_lines=list(row["log_lines"] or []),
    )


class _LogCapture(logging.Handler):
    """Keeps the first MAX_LOG_LINES lines the run logs (then counts the rest), for ``history show``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.dropped = 0
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
        self.addFilter(RedactingFilter())  # stored for `history show`: as scrubbed as what the terminal saw

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) >= MAX_LOG_LINES:
            self.dropped += 1
            return
        try:
            self.lines.append(self.format(record)[:MAX_LOG_LINE_CHARS])
        except Exception:  # a log line that cannot be formatted is not worth failing over
            self.dropped += 1

    def collected(self) -> list[str]:
        return [*self.lines, f"… {self.dropped} more lines not kept"] if self.dropped else list(self.lines)


class RunRecorder:
    """One run's record: started, refreshed per batch (the JobRun ``batch_hooks`` call), completed.

    Every write is best effort: the first failure is reported through ``warn`` and the recorder stops writing.
    """

    def __init__(
        self,
        store: HistoryStore,
        *,
        job: str,
        args: Mapping[str, Any],
        dry_run: bool,
        now: Callable[[], datetime],
        warn: Callable[[str], None],
        run_id: str | None = None,
    ) -> None:
        self.store = store
        self.job = job
        self.args = args
        self.dry_run = dry_run
        self.now = now
        self.warn = warn
        self.wanted_run_id = run_id  # the run id the logs and monitors already use, so all three agree
        self.run_id: str | None = None
        self.broken = False
        self._capture = _LogCapture()
        self._started_mono = time.monotonic()
        self._last_pause_check = self._started_mono
        self.pause_check_every_s = PAUSE_CHECK_EVERY_S
        self._last_heartbeat: float | None = None

    def _safely(self, what: str, action: Callable[[], Any]) -> Any:
        if self.broken:
            return None
        try:
            return action()
        except Exception as exc:
            self.broken = True
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            self.warn(f"run history unavailable ({what}): {reason[0] if reason else type(exc).__name__}")
            return None

    def start(self) -> None:
        self.run_id = self._safely(
            "start",
            lambda: self.store.start(
                job=self.job, args=self.args, dry_run=self.dry_run, started_at=self.now(), run_id=self.wanted_run_id
            ),
        )
        if self.run_id is not None:
            logging.getLogger("difymaint").addHandler(self._capture)

    def paused(self) -> Pause | None:
        if self.run_id is None:
            return None
        result: Pause | None = self._safely("pause check", lambda: self.store.paused(self.job))
        return result

    def on_batch(self, run: Any) -> None:
        """After each batch (``run`` is engine.run.JobRun): heartbeat, rows so far, rate; and the pause check."""
        if self.run_id is None or self.broken:
            return
        summary = run.summary
        mono = time.monotonic()
        if self._last_heartbeat is None or mono - self._last_heartbeat >= HEARTBEAT_EVERY_S:
            self._last_heartbeat = mono
            self._heartbeat(summary)
        if summary.stop_reason is None and mono - self._last_pause_check >= self.pause_check_every_s:
            self._last_pause_check = mono
            pause = self.paused()
            if pause is not None:
                # Stop as --max-runtime does: the open batch is committed, the next one never starts.
                summary.outcome = Outcome.PARTIAL
                summary.stop_reason = "paused"
                run.ctx.reporter.warning(
                    f"{self.job} was paused{f' ({pause.reason})' if pause.reason else ''}; stopping after this batch"
                )

    def _heartbeat(self, summary: RunSummary) -> None:
        assert self.run_id is not None
        run_id = self.run_id
        elapsed = max(time.monotonic() - self._started_mono, 1e-6)

        def heartbeat() -> None:
            try:
                self.store.update(
                    run_id,
                    heartbeat_at=self.now(),
                    tables=dict(summary.tables),
                    rows_total=summary.total_rows,
                    batches=summary.batches,
                    rows_remaining=summary.rows_remaining,
                    rate=round(summary.total_rows / elapsed, 3),
                )
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                # The server went away (a restart, a failover): the run's own next statement says so in its
                # one error line, and the closing write waits for the server; this heartbeat is just skipped.
                logging.getLogger("difymaint").debug("run history heartbeat skipped: %s", exc.orig or exc)

        self._safely("heartbeat", heartbeat)

    def finish(self, summary: RunSummary, exit_code: int) -> None:
        logging.getLogger("difymaint").removeHandler(self._capture)
        if self.run_id is None:
            return
        run_id = self.run_id
        elapsed = max(time.monotonic() - self._started_mono, 1e-6)
        end = self.now()
        self._safely(
            "finish",
            lambda: _retrying_lost_connections(
                FINISH_RETRY_S,
                lambda: self.store.update(
                    run_id,
                    ended_at=end,
                    heartbeat_at=end,
                    outcome=summary.outcome.value,
                    exit_code=exit_code,
                    tables=dict(summary.tables),
                    rows_total=summary.total_rows,
                    batches=summary.batches,
                    rows_remaining=summary.rows_remaining,
                    rate=round(summary.total_rows / elapsed, 3),
                    stop_reason=summary.stop_reason,
                    error=scrub(summary.error) if summary.error else None,
                    log_lines=self._capture.collected() + ([f"ERROR {scrub(summary.error)}"] if summary.error else []),
                ),
            ),
        )


def _retrying_lost_connections(within_s: float, action: Callable[[], Any]) -> Any:
    """Run ``action``, retrying while the database refuses connections for up to ``within_s``: a run that
    failed because PostgreSQL restarted would otherwise leave its record "running" (and a warning under the
    error line) although the server is back a second later. Any other error is raised at once."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return action()
        except sa.exc.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(FINISH_RETRY_EVERY_S)


def history_enabled(settings: Any) -> bool:
    return bool(getattr(settings, "DIFYMAINT_HISTORY", True))
