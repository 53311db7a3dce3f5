"""timeout-human-input: time out human-input forms that workflows wait on (docs/jobs/timeout-human-input.md).

:func:`_walk` pages the due forms (:func:`due_filter`) by id, each batch one transaction that locks its forms
``FOR UPDATE SKIP LOCKED`` (a Dify beat still running beside it never handles the same form). :func:`decide`
picks each form's fate (delivery test, global timeout, node timeout); :func:`_mark` and :func:`_stop_run` write
it. The resumes of a batch are published by :class:`Publisher` after its updates and before its commit, so a
broker failure rolls the batch back and no form is marked without its resume; the broker is opened at the
first resume, so a run with nothing to resume never imports Celery. Pause state objects are removed from
Dify's storage after the commit (:class:`StateObjects`), or listed in ``--orphan-manifest`` when that storage
is out of reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from difymaint.core.clock import naive_utc
from difymaint.core.context import Context
from difymaint.core.errors import DifymaintError
from difymaint.dify import tables as t
from difymaint.dify.celery import DIFY_TASKS, LazyPublisher
from difymaint.dify.storage import Storage, StorageError, dify_storage
from difymaint.engine.manifest import OrphanManifest
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema

JOB = "timeout-human-input"
RESUME_TASK = "resume_app_execution"  # Dify's explicit task name
RESUME_QUEUE = "workflow_based_app_execution"
RESUMABLE_MODES = ("workflow", "advanced-chat")
FORMS = "human_input_forms"
LISTED_MAX = 1000

forms = t.human_input_forms
runs = t.workflow_runs
pauses = t.workflow_pauses


@dataclass(frozen=True)
class TimeoutHumanInputParams:
    max_forms: int | None = None
    global_timeout_s: int = 604800
    orphan_manifest: Path | None = None
    run: RunOptions = field(default_factory=RunOptions)


Params = TimeoutHumanInputParams


def confirmation(ctx: Context, params: TimeoutHumanInputParams) -> str | None:
    if params.run.dry_run:
        return None
    from difymaint.jobs.confirm import database_description

    return (
        f"Time out the due human-input forms in {database_description(ctx.settings)}, stopping the workflow runs "
        "past the global timeout and deleting their pause state objects?"
    )


@dataclass
class Decision:
    form_id: str
    kind: str  # delivery_test | global | node
    workflow_run_id: str | None
    node_id: str
    resume: bool = False  # node timeout of a workflow / advanced-chat app


def due_filter(now: datetime, global_timeout_s: int) -> sa.ColumnElement[bool]:
    timed_out = forms.c.expiration_time <= now
    if global_timeout_s > 0:
        timed_out = sa.or_(timed_out, forms.c.created_at <= now - timedelta(seconds=global_timeout_s))
    return sa.and_(forms.c.status == "waiting", timed_out)


def decide(row: Any, now: datetime, global_timeout_s: int) -> Decision:
    """Dify's rule: delivery tests time out; a form with a run past the global deadline expires; else node."""
    run_id = None if row.workflow_run_id is None else str(row.workflow_run_id)
    if row.form_kind == "delivery_test":
        return Decision(str(row.id), "delivery_test", run_id, row.node_id)
    is_global = (
        global_timeout_s > 0 and run_id is not None and row.created_at + timedelta(seconds=global_timeout_s) <= now
    )
    if is_global:
        return Decision(str(row.id), "global", run_id, row.node_id)
    return Decision(str(row.id), "node", run_id, row.node_id, resume=row.app_mode in RESUMABLE_MODES)


def _select(after_id: str | None, now: datetime, params: TimeoutHumanInputParams, limit: int) -> sa.Select[Any]:
    query = (
        sa.select(
            forms.c.id,
            forms.c.form_kind,
            forms.c.workflow_run_id,
            forms.c.node_id,
            forms.c.created_at,
            t.apps.c.mode.label("app_mode"),
        )
        .select_from(
            forms.outerjoin(runs, runs.c.id == forms.c.workflow_run_id).outerjoin(t.apps, t.apps.c.id == runs.c.app_id)
        )
        .where(due_filter(now, params.global_timeout_s))
        .order_by(forms.c.id)
        .limit(limit)
    )
    if after_id is not None:
        query = query.where(forms.c.id > after_id)
    return query


def _lock_forms_first(
    conn: sa.Connection,
    query: sa.Select[Any],
    after_id: str | None,
    now: datetime,
    params: TimeoutHumanInputParams,
    limit: int,
) -> sa.Select[Any]:
    """MySQL/MariaDB lock every row a locking read joins (no ``FOR UPDATE OF``): lock the due forms alone with
    ``SKIP LOCKED`` first, then read their runs and apps without a lock (docs/mysql.md#row-locks)."""
    mine = sa.select(forms.c.id).where(due_filter(now, params.global_timeout_s)).order_by(forms.c.id).limit(limit)
    if after_id is not None:
        mine = mine.where(forms.c.id > after_id)
    locked = [str(form_id) for form_id in conn.execute(mine.with_for_update(skip_locked=True)).scalars()]
    return query.where(forms.c.id.in_(locked)) if locked else query.where(sa.false())


def _mark(conn: sa.Connection, form_id: str, status: str) -> bool:
    """Dify's mark_timeout: the new status, submission columns cleared; only while still waiting."""
    result = conn.execute(
        sa.update(forms)
        .where(forms.c.id == form_id, forms.c.status == "waiting")
        .values(
            status=status,
            selected_action_id=None,
            submitted_data=None,
            submission_user_id=None,
            submission_end_user_id=None,
            completed_by_recipient_id=None,
        )
    )
    return bool(result.rowcount)


def _stop_run(conn: sa.Connection, decision: Decision, now: datetime, *, dry_run: bool) -> str | None:
    """Stop the run and close its pause; returns the pause's state object key (removed after the commit).
    A dry run only reads the key."""
    assert decision.workflow_run_id is not None
    if dry_run:
        query = sa.select(pauses.c.state_object_key).where(pauses.c.workflow_run_id == decision.workflow_run_id)
        found = conn.execute(query).scalar_one_or_none()
        return None if found is None else str(found)
    conn.execute(
        sa.update(runs)
        .where(runs.c.id == decision.workflow_run_id)
        .values(status="stopped", error=f"Human input global timeout at node {decision.node_id}", finished_at=now)
    )
    key = conn.execute(
        sa.select(pauses.c.state_object_key).where(pauses.c.workflow_run_id == decision.workflow_run_id)
    ).scalar_one_or_none()
    if key is not None:
        conn.execute(
            sa.update(pauses).where(pauses.c.workflow_run_id == decision.workflow_run_id).values(resumed_at=now)
        )
    return None if key is None else str(key)


class StateObjects:
    """Where removed pause state objects go: Dify's storage when reachable, else the orphan manifest."""

    def __init__(self, ctx: Context, params: TimeoutHumanInputParams, *, dry_run: bool) -> None:
        self.store: Storage | None = None
        self.where = "not needed"
        self.manifest = OrphanManifest(params.orphan_manifest, job=JOB, dry_run=dry_run)
        self.deleted = 0
        self.listed = 0
        self.unhandled = 0
        self.ctx = ctx
        self._opened = False
        self.dry_run = dry_run

    def _open(self) -> None:
        if self._opened:
            return
        self._opened = True
        try:
            store = dify_storage(self.ctx.settings)
        except DifymaintError as exc:  # a storage type difymaint does not serve: list the keys instead
            self.where = exc.message
            return
        self.where = store.description
        try:
            store.check()
        except DifymaintError as exc:  # not mounted here, a missing bucket, bad credentials: unreachable
            self.where = f"{self.where}, unreachable: {exc.message}"
            store.close()
            return
        self.store = store

    def remove(self, job: JobRun, keys: list[str]) -> None:
        if not keys or self.dry_run:
            return
        self._open()
        left: list[str] = []
        for key in keys:
            if self.store is None:
                left.append(key)
                continue
            try:
                self.store.delete(key)
                self.deleted += 1
            except StorageError as exc:
                job.warn(f"{JOB}: cannot delete pause state object {key}: {exc}")
                left.append(key)
        if not left:
            return
        if self.manifest.enabled:
            self.manifest.write([{"key": key} for key in left], source="workflow_pauses.state_object_key")
            self.listed += len(left)
        else:
            self.unhandled += len(left)
            job.warn(
                f"{JOB}: {len(left)} pause state object(s) left in Dify's storage ({self.where}); "
                "pass --orphan-manifest to list them"
            )

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"storage": self.where, "deleted": self.deleted, "listed": self.listed}
        out["left_unlisted"] = self.unhandled
        if self.manifest.enabled:
            out["manifest"] = self.manifest.details()
        return out

    def close(self) -> None:
        self.manifest.close()
        if self.store is not None:
            self.store.close()


def run(job: JobRun, params: TimeoutHumanInputParams) -> None:
    ctx = job.ctx
    check_schema(
        ctx.engine,
        [
            Need(FORMS, ("id", "status", "expiration_time", "created_at", "form_kind", "workflow_run_id")),
            Need("workflow_runs", ("id", "status", "error", "finished_at", "app_id")),
            Need("workflow_pauses", ("workflow_run_id", "state_object_key", "resumed_at")),
        ],
        job=JOB,
    )
    now = naive_utc(ctx.clock.now())
    publisher = Publisher(ctx, dry_run=params.run.dry_run)
    objects = StateObjects(ctx, params, dry_run=params.run.dry_run)
    try:
        counts = {"delivery_test": 0, "node": 0, "global": 0, "resumes_published": 0, "skipped_not_waiting": 0}
        job.summary.details.update(now=now.isoformat(), global_timeout_s=params.global_timeout_s, counts=counts)
        job.remaining = lambda: _remaining(ctx, now, params)
        _walk(job, params, now, publisher, objects, counts)
        job.summary.details["state_objects"] = objects.details()
        if job.summary.stop_reason == "max":
            job.summary.rows_remaining = _remaining(ctx, now, params)  # --max asked for it: still done
        else:
            job.settle_remaining()
    finally:
        objects.close()
        publisher.close()


class Publisher:
    """Dify's resume task, published on the first resume (a broker that is down fails inside the batch, which
    then rolls back); a dry run publishes nothing."""

    def __init__(self, ctx: Context, *, dry_run: bool) -> None:
        self.dry_run = dry_run
        self._publisher = LazyPublisher(ctx.settings)

    def resume(self, run_ids: list[str]) -> None:
        if self.dry_run or not run_ids:
            return
        task = DIFY_TASKS[RESUME_TASK]  # checks the call against Dify's signature
        self._publisher.get().send_to(task, [task.call(payload={"workflow_run_id": run_id}) for run_id in run_ids])

    def close(self) -> None:
        self._publisher.close()


def _walk(
    job: JobRun,
    params: TimeoutHumanInputParams,
    now: datetime,
    publisher: Publisher,
    objects: StateObjects,
    counts: dict[str, int],
) -> None:
    ctx = job.ctx
    handled = 0
    after: str | None = None
    listed: list[dict[str, Any]] = job.summary.details.setdefault("forms", [])
    while job.keep_going():
        limit = job.batch_size if params.max_forms is None else min(job.batch_size, params.max_forms - handled)
        if limit <= 0:
            job.summary.stop_reason = "max"
            break
        state_keys: list[str] = []
        with job.batch() as batch:
            with batch.transaction() as conn:
                query = _select(after, now, params, limit)
                if not job.dry_run and conn.dialect.name == "postgresql":
                    query = query.with_for_update(of=forms, skip_locked=True)
                elif not job.dry_run and conn.dialect.name == "mysql":
                    query = _lock_forms_first(conn, query, after, now, params, limit)
                rows = conn.execute(query).all()
                if not rows:
                    break
                decisions = [decide(row, now, params.global_timeout_s) for row in rows]
                rows_changed = {FORMS: 0, "workflow_runs": 0, "workflow_pauses": 0}
                resumes: list[str] = []
                for decision in decisions:
                    if job.dry_run:
                        ctx.output.write(_describe(decision) + "\n")
                    elif not _mark(conn, decision.form_id, "expired" if decision.kind == "global" else "timeout"):
                        counts["skipped_not_waiting"] += 1
                        continue
                    rows_changed[FORMS] += 1
                    counts[decision.kind] += 1
                    if decision.kind == "global":
                        rows_changed["workflow_runs"] += 1
                        key = _stop_run(conn, decision, now, dry_run=job.dry_run)
                        if key is not None:
                            rows_changed["workflow_pauses"] += 1
                            state_keys.append(key)
                            if job.dry_run:
                                ctx.output.write(f"would remove pause state object {key}\n")
                    elif decision.resume and decision.workflow_run_id is not None:
                        resumes.append(decision.workflow_run_id)
                    if len(listed) < LISTED_MAX:
                        listed.append({"form_id": decision.form_id, "action": decision.kind})
                # Before the commit: a broker failure rolls the marks back with it.
                publisher.resume(resumes)
                counts["resumes_published"] += len(resumes)
            batch.record(scanned=len(rows), affected=rows_changed[FORMS], rows=rows_changed)
        if batch.rolled_back:
            continue
        handled += len(rows)
        after = str(rows[-1].id)
        objects.remove(job, state_keys)
        if len(rows) < limit:
            break


def _describe(decision: Decision) -> str:
    if decision.kind == "global":
        return f"would expire form {decision.form_id} and stop workflow run {decision.workflow_run_id}"
    if decision.kind == "delivery_test":
        return f"would time out delivery-test form {decision.form_id}"
    if decision.resume:
        return (
            f"would time out form {decision.form_id} and publish {RESUME_TASK}(payload={{'workflow_run_id': "
            f"'{decision.workflow_run_id}'}}) to queue {RESUME_QUEUE}"
        )
    return f"would time out form {decision.form_id} (app mode cannot resume)"


def _remaining(ctx: Context, now: datetime, params: TimeoutHumanInputParams) -> int:
    with ctx.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(forms).where(due_filter(now, params.global_timeout_s))
        return int(conn.execute(query).scalar_one())
