"""poll-workflow-schedules: fire due schedule-trigger plans through Dify's workers
(docs/jobs/poll-workflow-schedules.md).

Each batch of :class:`_Poller` is one transaction: select the due plans ``FOR UPDATE SKIP LOCKED`` (so
concurrent pollers, Dify's included, never take the same plan), compute each plan's next slot
(:func:`next_run_at`, croniter under Dify's rules), write and **commit**, and only then publish
``run_schedule_trigger``. Committing first means a failed commit publishes nothing; when the broker refuses the
messages after the commit, the plans get their old ``next_run_at`` back (compare-and-set), so they fire on the
next tick instead of being lost. A plan whose expression or time zone cannot be evaluated is pushed aside by
:data:`POISON_RETRY` instead of aborting the tick. An empty tick imports neither Celery nor croniter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from difymaint.core.clock import naive_utc
from difymaint.dify import tables as t

# core.celery imports Celery only inside the functions that publish: an empty tick never loads it.
from difymaint.dify.celery import DIFY_TASKS, BrokerUnavailable, CeleryPublisher, LazyPublisher
from difymaint.engine.keyset import Cursor, after
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun

JOB = "poll-workflow-schedules"
# run_schedule_trigger(schedule_id) on queue schedule_executor (the shared table checks the call's shape).
RUN_SCHEDULE_TRIGGER = DIFY_TASKS["tasks.workflow_schedule_tasks.run_schedule_trigger"]
TASK = RUN_SCHEDULE_TRIGGER.name
QUEUE = RUN_SCHEDULE_TRIGGER.queue
TRIGGER_TYPE = "trigger-schedule"  # AppTriggerType.TRIGGER_SCHEDULE
ENABLED = "enabled"  # AppTriggerStatus.ENABLED
# How far a plan that cannot be evaluated is pushed: out of every tick's way, yet retried (and logged) hourly
# so a fixed expression or a newer tzdata picks it up again without anyone touching the row.
POISON_RETRY = timedelta(hours=1)
LISTED = 1000  # at most this many plans named in the summary details

plans = t.workflow_schedule_plans
triggers = t.app_triggers


@dataclass(frozen=True)
class PollWorkflowSchedulesParams:
    max_dispatch: int = 0  # WORKFLOW_SCHEDULE_MAX_DISPATCH_PER_TICK; 0 = unlimited
    run: RunOptions = field(default_factory=RunOptions)


Params = PollWorkflowSchedulesParams


def next_run_at(cron_expression: str, timezone: str, base: datetime) -> datetime:
    """Dify's ``calculate_next_run_at``: the next slot after ``base`` in the plan's zone, as naive UTC.

    Five fields or an ``@`` macro (croniter knows ``@daily`` … ``@yearly``, names, ``?``, ``L``, Sunday=7).
    Raises ValueError for anything Dify would reject (or crash on: an unknown zone is a KeyError there).
    """
    from croniter import croniter  # imported only when a plan is due: keeps an empty tick's start fast

    fields = cron_expression.strip().split()
    if len(fields) != 5 and not cron_expression.startswith("@"):
        raise ValueError(f"cron expression must have 5 fields or be a macro, got {len(fields)}: {cron_expression!r}")
    try:
        zone = ZoneInfo(timezone)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"invalid time zone {timezone!r}") from None
    aware = base if base.tzinfo is not None else base.replace(tzinfo=UTC)
    try:
        following = croniter(cron_expression, aware.astimezone(zone)).get_next(datetime)
    except Exception as exc:  # croniter's own errors, and whatever a malformed field provokes
        raise ValueError(f"invalid cron expression {cron_expression!r}: {exc}") from None
    return naive_utc(following.astimezone(UTC))


def _due(now: datetime) -> sa.Select[Any]:
    """Dify's selection: plans of enabled schedule triggers whose next_run_at has come, most overdue first."""
    return (
        sa.select(
            plans.c.id,
            plans.c.app_id,
            plans.c.tenant_id,
            plans.c.cron_expression,
            plans.c.timezone,
            plans.c.next_run_at,
        )
        .select_from(
            plans.join(
                triggers,
                sa.and_(
                    triggers.c.app_id == plans.c.app_id,
                    triggers.c.node_id == plans.c.node_id,
                    triggers.c.trigger_type == TRIGGER_TYPE,
                ),
            )
        )
        .where(plans.c.next_run_at.is_not(None), plans.c.next_run_at <= now, triggers.c.status == ENABLED)
    )


@dataclass
class Planned:
    plan_id: str
    app_id: str
    tenant_id: str
    due_at: datetime
    following: datetime
    error: str | None = None


def _plan(row: Any, now: datetime) -> Planned:
    try:
        following, error = next_run_at(row.cron_expression, row.timezone, now), None
    except ValueError as exc:
        following, error = now + POISON_RETRY, str(exc)
    return Planned(str(row.id), str(row.app_id), str(row.tenant_id), row.next_run_at, following, error)


class _Poller:
    def __init__(self, job: JobRun, params: PollWorkflowSchedulesParams, now: datetime) -> None:
        self.job = job
        self.ctx = job.ctx
        self.params = params
        self.now = now
        self.publisher = LazyPublisher(job.ctx.settings)
        self.dispatched = 0
        self.listed: list[dict[str, Any]] = []
        self.poisoned: list[dict[str, str]] = []
        self.tripped = False

    def budget(self) -> int:
        """Rows the next batch may take: the batch size, capped by what the circuit breaker still allows."""
        size = self.job.batch_size
        if self.params.max_dispatch:
            size = min(size, self.params.max_dispatch - self.dispatched)
        return size

    def breaker_tripped(self) -> bool:
        if self.params.max_dispatch and self.dispatched >= self.params.max_dispatch:
            self.job.warn(
                f"circuit breaker: {self.dispatched} schedule(s) published, WORKFLOW_SCHEDULE_MAX_DISPATCH_PER_TICK="
                f"{self.params.max_dispatch}; the rest fire on the next tick"
            )
            self.tripped = True
            return True
        return False

    def note(self, planned: list[Planned]) -> None:
        for item in planned:
            if item.error is not None:
                message = (
                    f"plan {item.plan_id} (app {item.app_id}): {item.error}; next_run_at pushed to "
                    f"{item.following:%Y-%m-%d %H:%M:%S} UTC"
                )
                self.poisoned.append({"plan_id": item.plan_id, "error": item.error})
                self.job.warn(message)
            elif len(self.listed) < LISTED:
                self.listed.append(
                    {
                        "plan_id": item.plan_id,
                        "app_id": item.app_id,
                        "tenant_id": item.tenant_id,
                        "due_at": item.due_at.isoformat(),
                        "next_run_at": item.following.isoformat(),
                    }
                )

    def publisher_for_run(self) -> CeleryPublisher:
        return self.publisher.get()  # checks the broker before any plan is touched

    # --- a real tick ----------------------------------------------------------------------------------------

    def tick(self) -> None:
        while self.job.keep_going() and not self.breaker_tripped():
            with self.job.batch() as batch:
                with batch.transaction() as conn:
                    rows = conn.execute(
                        _due(self.now)
                        .order_by(plans.c.next_run_at, plans.c.id)
                        .limit(self.budget())
                        .with_for_update(skip_locked=True, of=plans)
                    ).all()
                    planned = [_plan(row, self.now) for row in rows]
                    firing = [item for item in planned if item.error is None]
                    if firing:
                        self.publisher_for_run()  # a broker that is down fails the run here: nothing committed
                    if planned:
                        conn.execute(
                            plans.update()
                            .where(plans.c.id == sa.bindparam("plan_id"))
                            .values(next_run_at=sa.bindparam("following"), updated_at=sa.func.current_timestamp()),
                            [{"plan_id": item.plan_id, "following": item.following} for item in planned],
                        )
                # Committed: from here on a plan fires at most once for this slot.
                self.note(planned)
                self.publish(firing)
                batch.record(scanned=len(rows), affected=len(firing), rows={plans.name: len(firing)})
            if batch.rolled_back:
                continue
            if not rows:
                break

    def publish(self, firing: list[Planned]) -> None:
        if not firing:
            return
        calls = [RUN_SCHEDULE_TRIGGER.call(item.plan_id) for item in firing]
        try:
            self.publisher_for_run().send_to(RUN_SCHEDULE_TRIGGER, calls)
        except BrokerUnavailable as exc:
            # Messages go out in order: the first len(published) reached the broker and keep their new slot.
            self.dispatched += len(exc.published)
            self.restore(firing[len(exc.published) :])
            raise
        self.dispatched += len(firing)

    def restore(self, firing: list[Planned]) -> None:
        """Give unpublished plans their slot back, unless someone (Dify's editor, another poller) moved it."""
        if not firing:
            return
        with self.job.ctx.engine.begin() as conn:
            for item in firing:
                conn.execute(
                    plans.update()
                    .where(plans.c.id == item.plan_id, plans.c.next_run_at == item.following)
                    .values(next_run_at=item.due_at)
                )
        self.job.warn(f"the broker refused {len(firing)} schedule(s); their next_run_at was restored")

    # --- a dry run: the same selection, walked with a cursor because nothing moves ---------------------------

    def preview(self) -> None:
        cursor: Cursor | None = None
        while self.job.keep_going() and not self.breaker_tripped():
            with self.job.batch() as batch:
                with batch.transaction() as conn:
                    query = _due(self.now)
                    if cursor is not None:
                        query = query.where(after(plans.c.next_run_at, plans.c.id, cursor))
                    rows = conn.execute(query.order_by(plans.c.next_run_at, plans.c.id).limit(self.budget())).all()
                planned = [_plan(row, self.now) for row in rows]
                firing = [item for item in planned if item.error is None]
                self.note(planned)
                for item in firing:
                    print(
                        f"would publish {TASK}({item.plan_id!r}) to {QUEUE}: app {item.app_id}, due "
                        f"{item.due_at:%Y-%m-%d %H:%M:%S}, next {item.following:%Y-%m-%d %H:%M:%S} UTC",
                        file=self.ctx.output,
                    )
                self.dispatched += len(firing)
                batch.record(scanned=len(rows), affected=len(firing), rows={plans.name: len(firing)})
            if not rows:
                break
            cursor = Cursor(rows[-1].next_run_at, str(rows[-1].id))

    def remaining(self) -> int:
        """Due plans this run left for the next tick (for a dry run: those it did not get to list)."""
        with self.ctx.engine.connect() as conn:
            due = int(conn.execute(sa.select(sa.func.count()).select_from(_due(self.now).subquery())).scalar_one())
        return max(0, due - self.dispatched - len(self.poisoned)) if self.job.dry_run else due

    def close(self) -> None:
        self.publisher.close()

    def details(self) -> dict[str, Any]:
        """What the summary's details say of this tick."""
        return {
            "now": self.now.isoformat(),
            "task": TASK,
            "queue": QUEUE,
            "published": self.dispatched,
            "poisoned": self.poisoned,
            "plans": self.listed,
            "max_dispatch_per_tick": self.params.max_dispatch,
        }


def run(job: JobRun, params: PollWorkflowSchedulesParams) -> None:
    ctx = job.ctx
    now = naive_utc(ctx.clock.now())
    poller = _Poller(job, params, now)
    job.remaining = poller.remaining
    try:
        poller.preview() if params.run.dry_run else poller.tick()
    finally:
        poller.close()
        job.summary.details.update(poller.details())
    job.settle_remaining()
    if poller.tripped:  # a tripped breaker ends the run done, but with plans still due
        job.summary.rows_remaining = poller.remaining()
