"""timeout-human-input against a real PostgreSQL, redis-server as Celery broker, a local directory and an S3
server as Dify's storage: Dify's three outcomes, the loop past 100 forms, --max, a broker that is down,
unreachable storage, dry run, the CLI."""

from __future__ import annotations

import io
import json
import signal
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.reporter import BatchProgress, RecordingReporter
from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.dify.celery import BrokerUnavailable
from difymaint.engine.options import RunOptions
from difymaint.jobs import timeout_human_input as job
from difymaint.jobs.execute import run_job
from difymaint.jobs.timeout_human_input import TimeoutHumanInputParams
from tests.broker import published, refusing_broker
from tests.celery_worker import CeleryWorker
from tests.conftest import NOW, FixedClock, make_context
from tests.s3_server import S3Bucket
from tests.test_cli import run_cli

pytestmark = pytest.mark.postgres

NAIVE_NOW = NOW.replace(tzinfo=None)
WEEK = 604800
QUEUE = "workflow_based_app_execution"


@dataclass
class Form:
    id: str
    run_id: str | None
    state_key: str | None = None


def ctx_for(db_url: str, redis_url: str, storage_root: Path | None = None, **settings: Any) -> Any:
    base: dict[str, Any] = {
        "CELERY_BROKER_URL": redis_url,
        "DIFYMAINT_TARGET_BATCH_MS": 0,
        "STORAGE_TYPE": "opendal",
        "OPENDAL_SCHEME": "fs",
        "OPENDAL_FS_ROOT": str(storage_root or "/nonexistent/dify-storage"),
    }
    return make_context(db_url, clock=FixedClock(NOW), **(base | settings))


def app(engine: Engine, mode: str) -> str:
    app_id = t.new_id()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(t.apps).values(
                id=app_id, tenant_id=t.new_id(), name="a", mode=mode, enable_site=True, enable_api=True
            )
        )
    return app_id


def form(
    engine: Engine,
    app_id: str,
    *,
    expires_in: timedelta,
    age: timedelta = timedelta(hours=1),
    kind: str = "runtime",
    status: str = "waiting",
    paused: bool = False,
    storage_root: Path | None = None,
) -> Form:
    run_id = None if kind == "delivery_test" else t.new_id()
    form_id = t.new_id()
    state_key = None
    with engine.begin() as conn:
        if run_id is not None:
            conn.execute(
                sa.insert(t.workflow_runs).values(
                    id=run_id,
                    tenant_id=t.new_id(),
                    app_id=app_id,
                    workflow_id=t.new_id(),
                    type="workflow",
                    triggered_from="app-run",
                    version="v1",
                    status="paused",
                    created_by_role="account",
                    created_by=t.new_id(),
                    created_at=NAIVE_NOW - age,
                )
            )
        if paused and run_id is not None:
            state_key = f"workflow-state-{t.new_id()}.json"
            conn.execute(
                sa.insert(t.workflow_pauses).values(
                    id=t.new_id(), workflow_id=t.new_id(), workflow_run_id=run_id, state_object_key=state_key
                )
            )
            if storage_root is not None:
                (storage_root / state_key).write_text('{"state": 1}')
        conn.execute(
            sa.insert(t.human_input_forms).values(
                id=form_id,
                tenant_id=t.new_id(),
                app_id=app_id,
                workflow_run_id=run_id,
                form_kind=kind,
                node_id="human_1",
                form_definition="{}",
                rendered_content="<p>approve?</p>",
                status=status,
                expiration_time=NAIVE_NOW + expires_in,
                selected_action_id="approve" if status == "submitted" else None,
                created_at=NAIVE_NOW - age,
            )
        )
    return Form(form_id, run_id, state_key)


def status_of(engine: Engine, form_id: str) -> str:
    with engine.connect() as conn:
        query = sa.select(t.human_input_forms.c.status).where(t.human_input_forms.c.id == form_id)
        return str(conn.execute(query).scalar_one())


def run_row(engine: Engine, run_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(t.workflow_runs).where(t.workflow_runs.c.id == run_id)).one()


def params(**kw: Any) -> TimeoutHumanInputParams:
    run = {k: kw.pop(k) for k in list(kw) if k in ("dry_run", "batch_size", "max_batches")}
    if kw.pop("run_no_lock", False):
        run["use_lock"] = False
    return TimeoutHumanInputParams(global_timeout_s=kw.pop("global_timeout_s", WEEK), run=RunOptions(**run), **kw)


def test_difys_three_outcomes(
    db_engine: Engine, db_url: str, redis_url: str, tmp_path: Path, celery_worker: CeleryWorker
) -> None:
    workflow, chat, completion = (
        app(db_engine, "workflow"),
        app(db_engine, "advanced-chat"),
        app(db_engine, "completion"),
    )
    test_form = form(db_engine, workflow, expires_in=-timedelta(minutes=1), kind="delivery_test")
    node_wf = form(db_engine, workflow, expires_in=-timedelta(seconds=1))
    node_chat = form(db_engine, chat, expires_in=timedelta(0))  # expiration_time <= now
    node_other = form(db_engine, completion, expires_in=-timedelta(minutes=5))
    global_form = form(
        db_engine, workflow, expires_in=timedelta(days=3), age=timedelta(days=8), paused=True, storage_root=tmp_path
    )
    not_due = form(db_engine, workflow, expires_in=timedelta(seconds=1))
    submitted = form(db_engine, workflow, expires_in=-timedelta(days=1), status="submitted")

    summary = run_job(job, ctx_for(db_url, redis_url, tmp_path, **celery_worker.settings), params(batch_size=2))

    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert status_of(db_engine, test_form.id) == "timeout"
    assert [status_of(db_engine, f.id) for f in (node_wf, node_chat, node_other)] == ["timeout"] * 3
    assert status_of(db_engine, global_form.id) == "expired"
    assert status_of(db_engine, not_due.id) == "waiting" and status_of(db_engine, submitted.id) == "submitted"
    stopped = run_row(db_engine, str(global_form.run_id))
    assert stopped.status == "stopped" and stopped.finished_at == NAIVE_NOW
    assert stopped.error == "Human input global timeout at node human_1"
    assert run_row(db_engine, str(node_wf.run_id)).status == "paused"  # Dify's worker resumes it
    with db_engine.connect() as conn:
        resumed = conn.execute(sa.select(t.workflow_pauses.c.resumed_at)).scalar_one()
    assert resumed == NAIVE_NOW
    assert not (tmp_path / str(global_form.state_key)).exists()
    # A real Celery worker with Dify's resume_app_execution(payload) signature ran both resumes.
    received = celery_worker.received("resume_app_execution", 2)
    assert all(args == [] for args, _ in received) and len(received) == 2
    assert sorted(kwargs["payload"]["workflow_run_id"] for _, kwargs in received) == sorted(
        [str(node_wf.run_id), str(node_chat.run_id)]
    )
    assert {record["queue"] for record in celery_worker.records("resume_app_execution")} == {QUEUE}
    assert summary.details["counts"] == {
        "delivery_test": 1,
        "node": 3,
        "global": 1,
        "resumes_published": 2,
        "skipped_not_waiting": 0,
    }
    assert summary.details["state_objects"]["deleted"] == 1
    assert summary.tables == {"human_input_forms": 5, "workflow_runs": 1, "workflow_pauses": 1}
    assert summary.batches == 3 and summary.rows_remaining == 0


def test_loops_past_difys_hundred_and_stops_at_max(
    pg_engine: Engine, pg_url: str, redis_url: str, celery_worker: CeleryWorker
) -> None:
    workflow = app(pg_engine, "workflow")
    forms = [form(pg_engine, workflow, expires_in=-timedelta(minutes=i + 1)) for i in range(130)]
    first = run_job(job, ctx_for(pg_url, redis_url, **celery_worker.settings), params(max_forms=110, batch_size=50))
    assert first.outcome is Outcome.DONE and first.exit_code == 0
    assert first.details["counts"]["node"] == 110 and first.rows_remaining == 20
    second = run_job(job, ctx_for(pg_url, redis_url, **celery_worker.settings), params())
    assert second.details["counts"]["node"] == 20 and second.batches == 1
    assert all(status_of(pg_engine, f.id) == "timeout" for f in forms)
    received = celery_worker.received("resume_app_execution", 130)
    assert sorted(kwargs["payload"]["workflow_run_id"] for _, kwargs in received) == sorted(
        str(f.run_id) for f in forms
    )


def test_forms_locked_by_another_run_are_skipped(db_engine: Engine, db_url: str, redis_url: str) -> None:
    workflow = app(db_engine, "delivery")
    held = form(db_engine, workflow, expires_in=-timedelta(minutes=2), kind="delivery_test")
    free = form(db_engine, workflow, expires_in=-timedelta(minutes=1), kind="delivery_test")
    with db_engine.connect() as other:  # another run (a Dify beat, say) has locked one form
        transaction = other.begin()
        other.execute(sa.text("SELECT id FROM human_input_forms WHERE id = :id FOR UPDATE"), {"id": held.id})
        summary = run_job(job, ctx_for(db_url, redis_url), params(run_no_lock=True))
        transaction.rollback()
    assert status_of(db_engine, free.id) == "timeout" and status_of(db_engine, held.id) == "waiting"
    assert summary.details["counts"]["delivery_test"] == 1


def test_global_timeout_off(pg_engine: Engine, pg_url: str, redis_url: str) -> None:
    old = form(pg_engine, app(pg_engine, "workflow"), expires_in=timedelta(days=1), age=timedelta(days=30))
    summary = run_job(job, ctx_for(pg_url, redis_url), params(global_timeout_s=0))
    assert status_of(pg_engine, old.id) == "waiting" and summary.tables["human_input_forms"] == 0


def test_broker_down_marks_nothing(pg_engine: Engine, pg_url: str, redis_url: str) -> None:
    due = form(pg_engine, app(pg_engine, "workflow"), expires_in=-timedelta(minutes=1))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    with pytest.raises(BrokerUnavailable):
        run_job(job, ctx_for(pg_url, redis_url, CELERY_BROKER_URL=dead), params())
    assert status_of(pg_engine, due.id) == "waiting"


def test_broker_refusing_the_publish_rolls_the_batch_back(pg_engine: Engine, pg_url: str, redis_url: str) -> None:
    workflow = app(pg_engine, "workflow")
    test_form = form(pg_engine, workflow, expires_in=-timedelta(minutes=1), kind="delivery_test")
    due = form(pg_engine, workflow, expires_in=-timedelta(minutes=1))
    # PING answers, LPUSH fails: the failure comes inside the batch.
    with refusing_broker() as broker, pytest.raises(BrokerUnavailable):
        run_job(job, ctx_for(pg_url, redis_url, CELERY_BROKER_URL=broker), params())
    assert status_of(pg_engine, due.id) == "waiting"
    assert status_of(pg_engine, test_form.id) == "waiting"  # same batch: rolled back with it


def test_unreachable_storage_goes_to_the_orphan_manifest(
    pg_engine: Engine, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    workflow = app(pg_engine, "workflow")
    expired = form(pg_engine, workflow, expires_in=timedelta(days=1), age=timedelta(days=8), paused=True)
    manifest = tmp_path / "orphans.jsonl"
    summary = run_job(job, ctx_for(pg_url, redis_url), params(orphan_manifest=manifest))
    assert status_of(pg_engine, expired.id) == "expired"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [line["key"] for line in lines] == [expired.state_key]
    assert lines[0]["source"] == "workflow_pauses.state_object_key" and lines[0]["job"] == job.JOB
    assert (
        summary.details["state_objects"]["listed"] == 1 and "not mounted" in summary.details["state_objects"]["storage"]
    )
    other = form(pg_engine, workflow, expires_in=timedelta(days=1), age=timedelta(days=9), paused=True)
    without = run_job(job, ctx_for(pg_url, redis_url), params())
    assert status_of(pg_engine, other.id) == "expired"
    assert without.details["state_objects"]["left_unlisted"] == 1
    assert any("--orphan-manifest" in warning for warning in without.warnings)


def test_s3_storage_deletes_the_state_object(
    pg_engine: Engine, pg_url: str, redis_url: str, s3_bucket: S3Bucket
) -> None:
    expired = form(pg_engine, app(pg_engine, "workflow"), expires_in=timedelta(1), age=timedelta(8), paused=True)
    s3_bucket.put(str(expired.state_key), b"{}")
    s3_bucket.put("keep.json", b"{}")
    summary = run_job(job, ctx_for(pg_url, redis_url, **s3_bucket.dify_storage_settings()), params())
    assert s3_bucket.stored_keys() == {"keep.json"}
    assert summary.details["state_objects"]["deleted"] == 1


def test_dry_run_lists_and_changes_nothing(db_engine: Engine, db_url: str, redis_url: str, tmp_path: Path) -> None:
    workflow = app(db_engine, "workflow")
    node = form(db_engine, workflow, expires_in=-timedelta(minutes=1))
    expired = form(
        db_engine, workflow, expires_in=timedelta(days=1), age=timedelta(days=8), paused=True, storage_root=tmp_path
    )
    test_form = form(db_engine, workflow, expires_in=-timedelta(minutes=1), kind="delivery_test")
    ctx = ctx_for(db_url, redis_url, tmp_path)
    ctx.output = io.StringIO()
    dry = run_job(job, ctx, params(dry_run=True, batch_size=1))
    listing = ctx.output.getvalue()
    assert f"publish resume_app_execution(payload={{'workflow_run_id': '{node.run_id}'}})" in listing
    assert f"would expire form {expired.id} and stop workflow run {expired.run_id}" in listing
    assert f"delivery-test form {test_form.id}" in listing
    assert {status_of(db_engine, f.id) for f in (node, expired, test_form)} == {"waiting"}
    assert (tmp_path / str(expired.state_key)).exists() and published(redis_url, QUEUE) == []
    real = run_job(job, ctx_for(db_url, redis_url, tmp_path), params())
    assert dry.tables == real.tables and dry.details["counts"] == real.details["counts"]


@pytest.mark.parametrize("celery_worker", ["dify"], indirect=True)
def test_cli_json_and_prefixed_broker(
    pg_engine: Engine, pg_url: str, redis_url: str, celery_worker: CeleryWorker
) -> None:
    node = form(pg_engine, app(pg_engine, "workflow"), expires_in=-timedelta(days=400))  # due under any clock
    env = {**celery_worker.settings, "DIFYMAINT_USE_REDIS": "false"}
    result = run_cli(
        ["timeout-human-input", "--database-url", pg_url, "--json", "--global-timeout", "0", "--yes"], env=env
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "done" and summary["details"]["counts"]["node"] == 1
    assert celery_worker.received("resume_app_execution", 1) == [([], {"payload": {"workflow_run_id": node.run_id}})]
    second = form(pg_engine, app(pg_engine, "workflow"), expires_in=-timedelta(days=400))  # a resume to publish
    down = run_cli(
        ["timeout-human-input", "--database-url", pg_url, "--global-timeout", "0", "--yes"],
        env={**env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"},
    )
    assert down.returncode == 1 and "Celery broker" in down.stderr and "Traceback" not in down.stderr
    assert status_of(pg_engine, second.id) == "waiting"


def test_sigterm_after_a_batch_stops_cleanly(
    db_engine: Engine, db_url: str, redis_url: str, celery_worker: CeleryWorker
) -> None:
    workflow = app(db_engine, "workflow")
    forms = [form(db_engine, workflow, expires_in=-timedelta(minutes=i + 1)) for i in range(5)]
    ctx = ctx_for(db_url, redis_url, **celery_worker.settings)

    class StopAfterFirstBatch(RecordingReporter):
        def batch(self, progress: BatchProgress) -> None:
            super().batch(progress)
            ctx.stop.request(signal.SIGTERM)  # what the SIGTERM handler does

    ctx.reporter = StopAfterFirstBatch()
    summary = run_job(job, ctx, params(batch_size=2))
    assert summary.outcome is Outcome.INTERRUPTED and summary.exit_code == 143
    assert summary.details["counts"]["node"] == 2 and summary.rows_remaining == 3
    assert sorted(status_of(db_engine, f.id) for f in forms) == ["timeout"] * 2 + ["waiting"] * 3
    assert len(celery_worker.received("resume_app_execution", 2)) == 2
