"""timeout-human-input: time out human-input forms that workflows wait on (docs/jobs/timeout-human-input.md).

Replaces Dify's ``human_input_form_timeout.check_and_resume``. Selection as in Dify: ``status = 'waiting'``
and (``expiration_time <= now`` or ``created_at <= now - HUMAN_INPUT_GLOBAL_TIMEOUT_SECONDS``), in id order.
Unlike Dify (100 forms a minute), it walks the forms by id until none is due or ``--max``; each batch is one
transaction that locks its forms (``FOR UPDATE SKIP LOCKED``, so a Dify beat still running beside it never
handles the same form):

* delivery test → ``timeout``;
* global timeout (a run, created + global <= now) → ``expired``; the run ``stopped`` with Dify's error text
  and ``finished_at``; the pause's ``resumed_at`` set; its state object removed from Dify's storage after the
  commit (or listed in ``--orphan-manifest`` when difymaint cannot reach that storage);
* node timeout → ``timeout``, and Dify's ``resume_app_execution(payload={"workflow_run_id": …})`` published to
  ``workflow_based_app_execution`` for workflow and advanced-chat apps.

The resumes are published inside the batch, after its updates and before its commit: a broker that fails
(unreachable, or refusing the messages) rolls the batch back (no form is marked without its resume). The
broker is connected at the first resume, so a run with nothing to resume never imports Celery. Marking
clears the submission columns as Dify's ``mark_timeout`` does.
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
from difymaint.core.summary import RunSummary
from difymaint.dify import tables as t
from difymaint.dify.object_store import ArchiveStorageError, ObjectStore, dify_storage
from difymaint.engine.manifest import OrphanManifest
from difymaint.engine.run import JobRun, RunOptions, job_run
from difymaint.engine.schema import Need, check_schema
from difymaint.jobs import JOBS

JOB = "timeout-human-input"
LOCK_KEY = JOBS[JOB].lock_key
RESUME_TASK = "resume_app_execution"  # Dify's explicit task name
RESUME_QUEUE = "workflow_based_app_execution"
RESUMABLE_MODES = ("workflow", "advanced-chat")
DEFAULT_BATCH_SIZE = 100  # Dify's limit per call
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
    run: RunOptions = field(default_factory=lambda: RunOptions(batch_size=DEFAULT_BATCH_SIZE))


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
        self.store: ObjectStore | None = None
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
        store, self.where = dify_storage(self.ctx.settings)
        if store is not None:
            try:
                store.check()
            except DifymaintError as exc:  # a missing bucket, bad credentials, a network error: unreachable
                self.where = f"{self.where}, unreachable: {exc.message}"
                store.close()
                store = None
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
            except ArchiveStorageError as exc:
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


def run(ctx: Context, params: TimeoutHumanInputParams) -> RunSummary:
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
        with job_run(
            ctx,
            JOB,
            lock_key=LOCK_KEY,
            options=params.run,
            window=None,
            tables=[FORMS, "workflow_runs", "workflow_pauses"],
            verbs=("updated", "would update"),
        ) as job:
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
    return job.summary


class Publisher:
    """The Celery publisher, connected on the first resume: a minute with nothing to resume never imports
    Celery (cold start), and a broker that is down fails inside the batch, which then rolls back."""

    def __init__(self, ctx: Context, *, dry_run: bool) -> None:
        self.ctx = ctx
        self.dry_run = dry_run
        self._publisher: Any = None

    def resume(self, run_ids: list[str]) -> None:
        if self.dry_run or not run_ids:
            return
        from difymaint.dify.celery import DIFY_TASKS, publisher

        if self._publisher is None:
            self._publisher = publisher(self.ctx.settings)
        task = DIFY_TASKS[RESUME_TASK]  # checks the call against Dify's signature
        self._publisher.send_to(task, [task.call(payload={"workflow_run_id": run_id}) for run_id in run_ids])

    def close(self) -> None:
        if self._publisher is not None:
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
