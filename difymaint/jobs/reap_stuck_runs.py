"""reap-stuck-runs: fail the workflow runs a dead worker left ``scheduled`` or ``running``
(docs/jobs/reap-stuck-runs.md).

Dify's two predicates (:func:`stuck_scheduled`, :func:`stuck_running` with its node-activity test
:func:`recent_node_activity`) on naive-UTC cut-offs (:class:`Cutoffs`). :class:`_Reaper` walks the stuck runs
on a ``(created_at, id)`` cursor, each batch one transaction that locks its page ``FOR UPDATE SKIP LOCKED``
(a run a worker is writing is skipped, never waited for) and then updates per kind with the predicate in the
``UPDATE``: that statement's newer snapshot sees a node a worker wrote after the page was read, so a run that
came back to life is never failed. Only Dify's three columns are written.

On MySQL/MariaDB a locking read locks every index record it scans, live runs too, so the page is read
without a lock and only its runs are then locked by id (:meth:`_Reaper.lock_by_id`); the ``UPDATE``'s
sub-query reads the nodes as of now there as well (a locking read), and with no ``UPDATE … RETURNING`` the
page's failed runs are read back in the same transaction (docs/mysql.md#row-locks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from difymaint.core.clock import naive_utc
from difymaint.core.context import Context
from difymaint.core.database import as_str, ids_in, is_mysql
from difymaint.dify import tables as t
from difymaint.engine.keyset import Cursor, after
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema

JOB = "reap-stuck-runs"
# Dify's texts, exactly (the running one with an em dash).
SCHEDULED_ERROR = "Task was not picked up by worker within timeout"
RUNNING_ERROR = "Execution timed out with no recent node activity \u2014 worker may have crashed"
# Trigger-log states that say "still in flight" (--include-trigger-logs); the others are final or paused.
OPEN_TRIGGER_STATES = ("queued", "running")
LISTED_MAX = 1000  # reaped run ids listed in the summary

runs = t.workflow_runs
nodes = t.workflow_node_executions
trigger_logs = t.workflow_trigger_logs


@dataclass(frozen=True)
class ReapStuckRunsParams:
    scheduled_timeout_min: int = 5
    running_timeout_min: int = 30
    include_trigger_logs: bool = False
    run: RunOptions = field(default_factory=RunOptions)


Params = ReapStuckRunsParams


@dataclass(frozen=True)
class Cutoffs:
    now: datetime  # naive UTC, also the reaped runs' finished_at
    scheduled: datetime
    running: datetime

    @classmethod
    def at(cls, now: datetime, params: ReapStuckRunsParams) -> Cutoffs:
        moment = naive_utc(now)
        return cls(
            now=moment,
            scheduled=moment - timedelta(minutes=params.scheduled_timeout_min),
            running=moment - timedelta(minutes=params.running_timeout_min),
        )


def recent_node_activity(since: datetime) -> sa.ColumnElement[bool]:
    """A node execution of the run started or finished at or after ``since`` (Dify's liveness test)."""
    return (
        sa.select(nodes.c.id)
        .where(
            nodes.c.workflow_run_id == runs.c.id,
            sa.or_(nodes.c.created_at >= since, nodes.c.finished_at >= since),
        )
        .exists()
    )


def stuck_scheduled(cut: Cutoffs) -> sa.ColumnElement[bool]:
    return sa.and_(runs.c.status == "scheduled", runs.c.created_at < cut.scheduled)


def stuck_running(cut: Cutoffs) -> sa.ColumnElement[bool]:
    return sa.and_(runs.c.status == "running", runs.c.created_at < cut.running, ~recent_node_activity(cut.running))


def stuck(cut: Cutoffs) -> sa.ColumnElement[bool]:
    return sa.or_(stuck_scheduled(cut), stuck_running(cut))


def confirmation(ctx: Context, params: ReapStuckRunsParams) -> str:
    from difymaint.jobs.confirm import database_description

    triggers = " and their open trigger logs" if params.include_trigger_logs else ""
    return (
        f"Mark workflow runs scheduled more than {params.scheduled_timeout_min} min ago, or running more than "
        f"{params.running_timeout_min} min without node activity, as failed{triggers} in "
        f"{database_description(ctx.settings)}?"
    )


def run(job: JobRun, params: ReapStuckRunsParams) -> None:
    ctx = job.ctx
    needs = [
        Need(runs.name, ("id", "status", "error", "created_at", "finished_at")),
        Need(nodes.name, ("id", "workflow_run_id", "created_at", "finished_at")),
    ]
    if params.include_trigger_logs:
        needs.append(Need(trigger_logs.name, ("workflow_run_id", "status", "error", "finished_at"), optional=True))
    schema = check_schema(ctx.engine, needs, job=job.job)
    with_triggers = params.include_trigger_logs and schema.has(trigger_logs.name)
    if params.include_trigger_logs and not with_triggers:
        job.warn(*schema.warnings)
    job.use_tables([runs.name, *([trigger_logs.name] if with_triggers else [])])
    job.warn_missing_indexes(
        [(nodes.name, "workflow_run_id")], "the node-activity check scans that table for every running run"
    )
    cut = Cutoffs.at(ctx.clock.now(), params)
    details = job.summary.details
    details.update(
        scheduled=0,
        running=0,
        scheduled_cutoff=cut.scheduled.isoformat(),
        running_cutoff=cut.running.isoformat(),
        alembic_version=schema.alembic_version,
        reaped_run_ids=[],
    )
    ctx.reporter.info(
        f"{job.job}: runs scheduled before {cut.scheduled:%Y-%m-%d %H:%M:%S}, or running since before "
        f"{cut.running:%Y-%m-%d %H:%M:%S} without node activity since (UTC)"
    )
    _Reaper(job, cut, with_triggers).walk()
    scheduled, running = details["scheduled"], details["running"]
    if details["reaped_run_ids"] and len(details["reaped_run_ids"]) < scheduled + running:
        details["reaped_run_ids_truncated"] = True
    verb = "would reap" if job.dry_run else "Reaped"
    ctx.reporter.info(f"{verb} zombie workflow runs: {scheduled} scheduled, {running} running")


@dataclass
class _Reaper:
    job: JobRun
    cut: Cutoffs
    with_triggers: bool
    cursor: Cursor | None = None

    def walk(self) -> None:
        job = self.job
        job.remaining = self.remaining
        while job.keep_going():
            limit = job.batch_size
            page: list[Any] = []
            with job.batch() as batch:
                with batch.transaction() as conn:
                    page = list(conn.execute(self.page(conn, limit)).all())
                    ids = [as_str(row.id) for row in page]
                    if ids and is_mysql(conn) and not job.dry_run:
                        ids = self.lock_by_id(conn, ids)
                    counts = self.reap(conn, ids) if page else {}
                if page:
                    batch.record(scanned=len(page), affected=counts[runs.name], rows=counts)
            if batch.rolled_back:
                continue  # same cursor, smaller page
            if not page:
                break
            self.cursor = Cursor.of(page[-1])
            if len(page) < limit:
                break
        job.settle_remaining()

    def page(self, conn: sa.Connection, limit: int) -> sa.Select[Any]:
        query = (
            sa.select(runs.c.id, runs.c.created_at)
            .where(stuck(self.cut), after(runs.c.created_at, runs.c.id, self.cursor))
            .order_by(runs.c.created_at, runs.c.id)
            .limit(limit)
        )
        # The real run locks its page, skipping rows a worker holds right now (they are alive; the next run
        # looks again). A dry run takes no lock: it must not hold up a worker, even for a moment.
        return query if self.job.dry_run or is_mysql(conn) else query.with_for_update(skip_locked=True)

    def lock_by_id(self, conn: sa.Connection, ids: list[str]) -> list[str]:
        """MySQL: lock the page's runs by primary key, skipping those a worker holds; the ``UPDATE`` re-checks
        Dify's predicates (the node-activity sub-query stays out of this locking read)."""
        open_runs = runs.c.status.in_(("scheduled", "running"))
        query = sa.select(runs.c.id).where(ids_in(runs.c.id, ids, conn.dialect.name), open_runs)
        return [as_str(i) for i in conn.execute(query.with_for_update(skip_locked=True)).scalars()]

    def reap(self, conn: sa.Connection, ids: list[str]) -> dict[str, int]:
        """Fail (or count) the page's runs that still match, per kind; their open trigger logs if asked."""
        if not ids:  # every run of the page is held by a worker right now
            return {runs.name: 0, **({trigger_logs.name: 0} if self.with_triggers else {})}
        reaped: list[str] = []
        details = self.job.summary.details
        for kind, predicate, error in (
            ("scheduled", stuck_scheduled(self.cut), SCHEDULED_ERROR),
            ("running", stuck_running(self.cut), RUNNING_ERROR),
        ):
            where = sa.and_(ids_in(runs.c.id, ids, conn.dialect.name), predicate)
            if self.job.dry_run:
                found = [as_str(i) for i in conn.execute(sa.select(runs.c.id).where(where)).scalars()]
            else:
                found = self.fail(conn, ids, where, error)
            details[kind] += len(found)
            reaped += found
        listed = details["reaped_run_ids"]
        listed.extend(reaped[: max(0, LISTED_MAX - len(listed))])
        counts = {runs.name: len(reaped)}
        if self.with_triggers:
            counts[trigger_logs.name] = self.fail_trigger_logs(conn, reaped) if reaped else 0
        return counts

    def fail(self, conn: sa.Connection, ids: list[str], where: sa.ColumnElement[bool], error: str) -> list[str]:
        """Fail the runs ``where`` matches; their ids."""
        update = sa.update(runs).where(where).values(status="failed", error=error, finished_at=self.cut.now)
        if not is_mysql(conn):
            return [as_str(i) for i in conn.execute(update.returning(runs.c.id)).scalars()]
        # No UPDATE … RETURNING: the page's runs are locked by this transaction, so those failed with this
        # error now are exactly the ones this UPDATE changed (the page held only scheduled or running runs).
        conn.execute(update)
        mine = sa.and_(ids_in(runs.c.id, ids, conn.dialect.name), runs.c.status == "failed", runs.c.error == error)
        return [as_str(i) for i in conn.execute(sa.select(runs.c.id).where(mine)).scalars()]

    def fail_trigger_logs(self, conn: sa.Connection, run_ids: list[str]) -> int:
        """The reaped runs' trigger logs still queued or running, failed with their run's error text."""
        where = sa.and_(
            ids_in(trigger_logs.c.workflow_run_id, run_ids, conn.dialect.name),
            trigger_logs.c.status.in_(OPEN_TRIGGER_STATES),
        )
        if self.job.dry_run:
            return int(conn.execute(sa.select(sa.func.count()).select_from(trigger_logs).where(where)).scalar_one())
        error = sa.select(runs.c.error).where(runs.c.id == trigger_logs.c.workflow_run_id).scalar_subquery()
        result = conn.execute(
            sa.update(trigger_logs).where(where).values(status="failed", error=error, finished_at=self.cut.now)
        )
        return int(result.rowcount)

    def remaining(self) -> int:
        """Stuck runs past the cursor (what the next run would reap)."""
        query = (
            sa.select(sa.func.count())
            .select_from(runs)
            .where(stuck(self.cut), after(runs.c.created_at, runs.c.id, self.cursor))
        )
        with self.job.ctx.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
