"""poll-workflow-schedules against a real PostgreSQL, a real Redis broker and a real Celery worker running stub
tasks of Dify's names and signatures: Dify's selection and croniter rules, commit-before-publish, poison rows,
SKIP LOCKED between pollers, the circuit breaker, a broker that is down or refuses writes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.dify.celery import BrokerUnavailable
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, poll_workflow_schedules
from difymaint.jobs.execute import run_job
from difymaint.jobs.poll_workflow_schedules import QUEUE, TASK, PollWorkflowSchedulesParams, next_run_at
from tests.celery_worker import CeleryWorker
from tests.conftest import NOW, make_context
from tests.dispatch_helpers import RefusingBroker, published, refusing_broker

__all__ = ["refusing_broker"]  # the fixture
from tests.test_cli import run_cli

pytestmark = pytest.mark.postgres

BASE = NOW.replace(tzinfo=None)  # naive UTC, like Dify's column


def add_plan(
    engine: Engine,
    cron: str,
    tz: str = "UTC",
    *,
    next_run: datetime | None = BASE - timedelta(minutes=1),
    status: str = "enabled",
    trigger_type: str = "trigger-schedule",
) -> str:
    app_id, node_id = t.new_id(), "schedule-node"
    tenant_id = t.new_id()
    plan_id = t.new_id()
    with engine.begin() as conn:
        conn.execute(
            t.workflow_schedule_plans.insert().values(
                id=plan_id,
                app_id=app_id,
                node_id=node_id,
                tenant_id=tenant_id,
                cron_expression=cron,
                timezone=tz,
                next_run_at=next_run,
            )
        )
        conn.execute(
            t.app_triggers.insert().values(
                tenant_id=tenant_id,
                app_id=app_id,
                node_id=node_id,
                trigger_type=trigger_type,
                title="Schedule",
                status=status,
            )
        )
    return plan_id


def next_runs(engine: Engine) -> dict[str, datetime | None]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.workflow_schedule_plans.c.id, t.workflow_schedule_plans.c.next_run_at))
        return {str(row.id): row.next_run_at for row in rows}


def fired(worker: CeleryWorker, count: int) -> list[str]:
    """The plan ids the worker ran ``run_schedule_trigger`` for, in order: exactly ``count`` of them."""
    if count:
        worker.received(TASK, count)
    time.sleep(0.3)  # anything published beyond ``count`` would have arrived by now
    records = worker.records(TASK)
    assert all(r["kwargs"] == {} and len(r["args"]) == 1 for r in records)  # run_schedule_trigger(schedule_id)
    assert all(r["queue"] == QUEUE for r in records)
    assert len(records) == count, records
    return [r["args"][0] for r in records]


def ctx_for(db_url: str, worker: CeleryWorker | None, **settings: Any) -> Any:
    return make_context(db_url, **(worker.settings if worker else {}), **settings)


def params(**kwargs: Any) -> PollWorkflowSchedulesParams:
    return PollWorkflowSchedulesParams(**kwargs)


def test_next_run_at_follows_difys_rules() -> None:
    assert next_run_at("*/5 * * * *", "UTC", NOW) == datetime(2026, 11, 24, 12, 5)
    # 20:00 in Shanghai: the next 09:00 there is tomorrow, 01:00 UTC.
    assert next_run_at("0 9 * * *", "Asia/Shanghai", NOW) == datetime(2026, 11, 25, 1, 0)
    assert next_run_at("@daily", "America/New_York", NOW) == datetime(2026, 11, 25, 5, 0)  # EST midnight
    assert next_run_at("0 8 ? * MON-FRI", "UTC", NOW) == datetime(2026, 11, 25, 8, 0)
    assert next_run_at("0 0 L * *", "UTC", NOW) == datetime(2026, 11, 30, 0, 0)
    assert next_run_at("0 10 * * 7", "UTC", NOW) == datetime(2026, 11, 29, 10, 0)  # Sunday as 7
    for cron, tz, error in [
        ("* * *", "UTC", "5 fields"),
        ("0 0 * * * *", "UTC", "5 fields"),  # Dify rejects seconds
        ("61 * * * *", "UTC", "invalid cron"),
        ("0 9 * * *", "Mars/Olympus", "time zone"),
        ("0 9 * * *", "", "time zone"),
    ]:
        with pytest.raises(ValueError, match=error):
            next_run_at(cron, tz, NOW)


@pytest.mark.parametrize("celery_worker", ["", "dify"], indirect=True)
def test_fires_due_plans_once_and_commits_their_next_run(
    db_engine: Engine, db_url: str, celery_worker: CeleryWorker
) -> None:
    every5 = add_plan(db_engine, "*/5 * * * *")
    shanghai = add_plan(db_engine, "0 9 * * *", "Asia/Shanghai", next_run=BASE - timedelta(days=2))
    daily_ny = add_plan(db_engine, "@daily", "America/New_York", next_run=BASE)  # due exactly now
    future = add_plan(db_engine, "*/5 * * * *", next_run=BASE + timedelta(seconds=1))
    disabled = add_plan(db_engine, "*/5 * * * *", status="disabled")
    webhook = add_plan(db_engine, "*/5 * * * *", trigger_type="trigger-webhook")
    never = add_plan(db_engine, "*/5 * * * *", next_run=None)
    before = next_runs(db_engine)

    summary = run_job(poll_workflow_schedules, ctx_for(db_url, celery_worker), params())
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert summary.details["published"] == summary.tables["workflow_schedule_plans"] == 3
    # Oldest slot first, as Dify orders them; the worker (under the same prefix) ran each once.
    assert fired(celery_worker, 3) == [shanghai, every5, daily_ny]
    after = next_runs(db_engine)
    assert after[every5] == datetime(2026, 11, 24, 12, 5)
    assert after[shanghai] == datetime(2026, 11, 25, 1, 0)
    assert after[daily_ny] == datetime(2026, 11, 25, 5, 0)
    for untouched in (future, disabled, webhook, never):
        assert after[untouched] == before[untouched]

    again = run_job(poll_workflow_schedules, ctx_for(db_url, celery_worker), params())
    assert again.details["published"] == 0
    assert len(fired(celery_worker, 3)) == 3  # at most one run per plan per slot


def test_poison_rows_are_pushed_aside_and_never_stop_the_tick(
    pg_engine: Engine, pg_url: str, celery_worker: CeleryWorker
) -> None:
    bad_cron = add_plan(pg_engine, "61 * * * *", next_run=BASE - timedelta(hours=3))
    bad_zone = add_plan(pg_engine, "0 9 * * *", "Mars/Olympus", next_run=BASE - timedelta(hours=2))
    bad_fields = add_plan(pg_engine, "* * *", next_run=BASE - timedelta(hours=1))
    good = add_plan(pg_engine, "*/5 * * * *")
    ctx = ctx_for(pg_url, celery_worker)
    summary = run_job(poll_workflow_schedules, ctx, params(run=RunOptions(batch_size=2)))
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert fired(celery_worker, 1) == [good]
    assert {item["plan_id"] for item in summary.details["poisoned"]} == {bad_cron, bad_zone, bad_fields}
    after = next_runs(pg_engine)
    for poisoned in (bad_cron, bad_zone, bad_fields):
        assert after[poisoned] == BASE + poll_workflow_schedules.POISON_RETRY
    assert after[good] == datetime(2026, 11, 24, 12, 5)
    assert any("Mars/Olympus" in warning for warning in summary.warnings)
    # The next tick, within the hour, neither fires nor re-reports them.
    again = run_job(poll_workflow_schedules, ctx_for(pg_url, celery_worker), params())
    assert again.details["poisoned"] == [] and fired(celery_worker, 1) == [good]


def test_dry_run_lists_and_changes_nothing(db_engine: Engine, db_url: str, celery_worker: CeleryWorker) -> None:
    plans = [add_plan(db_engine, "*/5 * * * *", next_run=BASE - timedelta(minutes=n)) for n in range(5)]
    add_plan(db_engine, "61 * * * *")
    before = next_runs(db_engine)
    ctx = ctx_for(db_url, celery_worker)
    ctx.output = io.StringIO()
    dry = run_job(poll_workflow_schedules, ctx, params(run=RunOptions(dry_run=True, batch_size=2)))
    assert next_runs(db_engine) == before and fired(celery_worker, 0) == []
    listed = ctx.output.getvalue().splitlines()
    assert len(listed) == 5 and all(TASK in line and QUEUE in line for line in listed)
    assert {item["plan_id"] for item in dry.details["plans"]} == set(plans)
    real = run_job(poll_workflow_schedules, ctx_for(db_url, celery_worker), params(run=RunOptions(batch_size=2)))
    assert dry.tables == real.tables == {"workflow_schedule_plans": 5}
    assert sorted(fired(celery_worker, 5)) == sorted(plans)


def test_empty_tick_needs_no_broker(pg_engine: Engine, pg_url: str) -> None:
    add_plan(pg_engine, "*/5 * * * *", next_run=BASE + timedelta(minutes=3))
    # No CELERY_BROKER_URL at all: an empty tick never connects to (or imports) the publisher.
    summary = run_job(poll_workflow_schedules, make_context(pg_url), params())
    assert summary.outcome is Outcome.DONE and summary.details["published"] == 0 and summary.batches == 1


def test_broker_down_changes_nothing(pg_engine: Engine, pg_url: str) -> None:
    plan = add_plan(pg_engine, "*/5 * * * *")
    before = next_runs(pg_engine)
    ctx = make_context(pg_url, CELERY_BROKER_URL="redis://127.0.0.1:1/0", REDIS_SOCKET_CONNECT_TIMEOUT=0.5)
    with pytest.raises(BrokerUnavailable):
        run_job(poll_workflow_schedules, ctx, params())
    assert next_runs(pg_engine) == before
    result = run_cli(
        ["poll-workflow-schedules", "--database-url", pg_url, "--json"],
        env={"CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "REDIS_SOCKET_CONNECT_TIMEOUT": "0.5"},
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["outcome"] == "failed"
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert any("Celery broker" in line for line in errors) and "Traceback" not in result.stderr
    assert next_runs(pg_engine)[plan] == before[plan]


def test_a_failed_commit_publishes_nothing(pg_engine: Engine, pg_url: str, celery_worker: CeleryWorker) -> None:
    plan = add_plan(pg_engine, "*/5 * * * *")
    before = next_runs(pg_engine)
    # A deferred constraint trigger fails the transaction at COMMIT, after selection and update succeeded.
    with pg_engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'commit refused by test'; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE CONSTRAINT TRIGGER refuse_commit AFTER UPDATE ON workflow_schedule_plans "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit()"
            )
        )
    with pytest.raises(sa.exc.DBAPIError, match="commit refused"):
        run_job(poll_workflow_schedules, ctx_for(pg_url, celery_worker), params())
    assert fired(celery_worker, 0) == []
    assert next_runs(pg_engine)[plan] == before[plan]  # still due: it fires on the next tick, once
    with pg_engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_commit ON workflow_schedule_plans"))
    run_job(poll_workflow_schedules, ctx_for(pg_url, celery_worker), params())
    assert fired(celery_worker, 1) == [plan]


def test_broker_refusing_after_the_commit_restores_the_slot(
    pg_engine: Engine, pg_url: str, refusing_broker: RefusingBroker
) -> None:
    plans = [add_plan(pg_engine, "*/5 * * * *", next_run=BASE - timedelta(minutes=n)) for n in range(2)]
    before = next_runs(pg_engine)
    # The broker passes the connection check but refuses the messages: the failure comes after the commit.
    refusing_broker.refuse_writes()
    ctx = ctx_for(pg_url, None, CELERY_BROKER_URL=refusing_broker.url)
    with pytest.raises(BrokerUnavailable):
        run_job(poll_workflow_schedules, ctx, params())
    assert any("next_run_at was restored" in warning for warning in ctx.reporter.warnings)
    assert next_runs(pg_engine) == before  # the slots were put back
    refusing_broker.refuse_writes(False)
    summary = run_job(poll_workflow_schedules, ctx_for(pg_url, None, CELERY_BROKER_URL=refusing_broker.url), params())
    assert summary.details["published"] == 2
    assert [m.args[0] for m in published(refusing_broker.url, QUEUE)] == list(reversed(plans))


def test_skip_locked_leaves_plans_another_poller_holds(
    db_engine: Engine, db_url: str, celery_worker: CeleryWorker
) -> None:
    held = add_plan(db_engine, "*/5 * * * *", next_run=BASE - timedelta(minutes=10))
    free = add_plan(db_engine, "*/5 * * * *")
    other = db_engine.connect()
    transaction = other.begin()
    other.execute(sa.text("SELECT id FROM workflow_schedule_plans WHERE id = :id FOR UPDATE"), {"id": held})
    try:
        started = time.monotonic()
        summary = run_job(poll_workflow_schedules, ctx_for(db_url, celery_worker), params())
        assert time.monotonic() - started < 10  # skipped, not waited for
        assert summary.details["published"] == 1 and fired(celery_worker, 1) == [free]
    finally:
        transaction.rollback()
        other.close()
    run_job(poll_workflow_schedules, ctx_for(db_url, celery_worker), params())
    assert fired(celery_worker, 2) == [free, held]


def test_concurrent_pollers_never_publish_a_plan_twice(
    db_engine: Engine, db_url: str, celery_worker: CeleryWorker
) -> None:
    plans = [add_plan(db_engine, "*/5 * * * *", next_run=BASE - timedelta(seconds=n)) for n in range(40)]
    errors: list[BaseException] = []
    summaries: list[Any] = []
    barrier = threading.Barrier(2)

    def poller() -> None:
        try:
            barrier.wait()
            # No single-flight lock: only the row locks keep the two apart.
            options = RunOptions(batch_size=3, use_lock=False)
            summaries.append(run_job(poll_workflow_schedules, ctx_for(db_url, celery_worker), params(run=options)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=poller) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    counts = Counter(fired(celery_worker, len(plans)))
    assert set(counts) == set(plans) and max(counts.values()) == 1
    assert sum(s.details["published"] for s in summaries) == len(plans)


def test_max_batches_is_partial_and_the_rest_stay_due(
    db_engine: Engine, db_url: str, celery_worker: CeleryWorker
) -> None:
    plans = [add_plan(db_engine, "*/5 * * * *", next_run=BASE - timedelta(minutes=n)) for n in range(5)]
    options = RunOptions(batch_size=2, max_batches=1)
    ctx = ctx_for(db_url, celery_worker, DIFYMAINT_TARGET_BATCH_MS=0)
    first = run_job(poll_workflow_schedules, ctx, params(run=options))
    assert first.outcome is Outcome.PARTIAL and first.exit_code == 4 and first.rows_remaining == 3
    assert fired(celery_worker, 2) == [plans[4], plans[3]]
    rest = run_job(poll_workflow_schedules, ctx_for(db_url, celery_worker), params())
    assert rest.details["published"] == 3 and rest.rows_remaining == 0


def test_circuit_breaker_caps_a_tick(pg_engine: Engine, pg_url: str, celery_worker: CeleryWorker) -> None:
    plans = [add_plan(pg_engine, "*/5 * * * *", next_run=BASE - timedelta(minutes=n)) for n in range(5)]
    first = run_job(poll_workflow_schedules, ctx_for(pg_url, celery_worker), params(max_dispatch=3))
    assert first.details["published"] == 3 and any("circuit breaker" in w for w in first.warnings)
    assert first.outcome is Outcome.DONE and first.rows_remaining == 2
    second = run_job(poll_workflow_schedules, ctx_for(pg_url, celery_worker), params(max_dispatch=3))
    assert second.details["published"] == 2
    assert fired(celery_worker, 5) == list(reversed(plans))


def test_cli_empty_tick_is_fast_and_imports_no_publisher(pg_url: str) -> None:
    args = [sys.executable, "-X", "importtime", "-m", "difymaint", "poll-workflow-schedules"]
    started = time.monotonic()
    result = subprocess.run(
        [*args, "--database-url", pg_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "DIFYMAINT_USE_REDIS": "false"},
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["details"]["published"] == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "import time:" in line}
    assert not {name for name in imported if name.split(".")[0] in ("celery", "kombu", "croniter")}
    assert elapsed < 10  # generous on a loaded machine; the measured cold start is in the job's docs page


def test_cli_dry_run_json_keeps_stdout_for_the_summary(pg_engine: Engine, pg_url: str) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)  # the subprocess runs on the wall clock
    plan = add_plan(pg_engine, "0 9 * * *", "Asia/Shanghai", next_run=now - timedelta(minutes=5))
    before = next_runs(pg_engine)
    result = run_cli(["poll-workflow-schedules", "--database-url", pg_url, "--dry-run", "--json"])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # the one JSON line; the listing went to stderr
    assert summary["outcome"] == "done" and summary["dry_run"] is True
    assert [item["plan_id"] for item in summary["details"]["plans"]] == [plan]
    assert f"would publish {TASK}('{plan}') to {QUEUE}" in result.stderr
    assert next_runs(pg_engine) == before


def test_registry_entry() -> None:
    info = JOBS["poll-workflow-schedules"]
    assert (info.schedule, info.dify_task, info.dify_switch) == (
        "* * * * *",
        "workflow_schedule_task",
        "ENABLE_WORKFLOW_SCHEDULE_POLLER_TASK",
    )
    assert info.load() is poll_workflow_schedules and not info.destructive
