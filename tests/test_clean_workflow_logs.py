"""clean-workflow-logs against a real PostgreSQL (and SQLite): every tenant's ended old runs, their messages,
conversations only once they are empty, one transaction per batch, and retries that never skip a batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from difymaint.core.clock import naive_utc
from difymaint.core.errors import DifymaintError, LockHeld
from difymaint.core.exit_codes import ExitCode
from difymaint.core.reporter import RecordingReporter
from difymaint.core.summary import Outcome
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.cascades import ENDED_RUN_STATUSES, MYSQL_MESSAGE_INDEX_HINT
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, clean_workflow_logs
from difymaint.jobs.clean_workflow_logs import CleanWorkflowLogsParams
from difymaint.jobs.execute import run_job
from tests.conftest import NOW, FixedClock, is_mysql_url, make_context, row_counts
from tests.workflow_scenario import CHAT_TABLES, RUN_TABLES, assert_no_dangling, ids, seed

pytestmark = pytest.mark.postgres

HINT = "CREATE INDEX CONCURRENTLY message_workflow_run_id_only_idx ON messages (workflow_run_id)"


def params(scenario: Any, **kwargs: Any) -> CleanWorkflowLogsParams:
    run = kwargs.pop("run", RunOptions(batch_size=5))
    return CleanWorkflowLogsParams(window=TimeWindow(end_before=scenario.cutoff), run=run, **kwargs)


def test_registry_entry() -> None:
    info = JOBS["clean-workflow-logs"]
    assert (info.module, info.schedule, info.dify_task, info.dify_switch, info.lock_key) == (
        "clean_workflow_logs",
        "0 2 * * *",
        "clean_workflow_runlogs_precise",
        "WORKFLOW_LOG_CLEANUP_ENABLED",
        "retention:clean_workflow_runlogs_precise",
    )


def test_every_tenant_runs_messages_and_only_empty_conversations(db_engine: Any, db_url: str, billing: Any) -> None:
    scenario = seed(db_engine, NOW)
    billing.state.fail_whitelist = 503  # no plan check at all: billing is never asked
    runs_before, messages_before = ids(db_engine, t.workflow_runs), ids(db_engine, t.messages)
    tables_before = row_counts(db_engine, RUN_TABLES)
    ctx = make_context(db_url, BILLING_ENABLED=True, BILLING_API_URL=billing.url, BILLING_API_SECRET_KEY="test-secret")
    summary = run_job(clean_workflow_logs, ctx, params(scenario))
    gone = scenario.old_ended()
    assert ids(db_engine, t.workflow_runs) == runs_before - gone
    expected = scenario.cascade_rows(gone)
    assert {name: summary.tables[name] for name in RUN_TABLES} == expected
    assert row_counts(db_engine, RUN_TABLES) == {name: tables_before[name] - expected[name] for name in RUN_TABLES}
    assert not billing.state.calls
    # the runs' messages go (with their child rows); messages of newer runs and without a run stay
    assert ids(db_engine, t.messages) == messages_before - scenario.messages_of(gone)
    conversations = ids(db_engine, t.conversations)
    for name, kinds in scenario.conversations.items():
        assert kinds["old"] not in conversations, name
        # Dify deletes this whole conversation (and orphans its newer message); it must survive
        assert kinds["spanning"] in conversations, name
        assert kinds["mixed"] in conversations, name  # old and untouched, but not empty
    assert summary.tables["conversations"] == len(scenario.conversations)
    assert summary.tables["pinned_conversations"] == summary.tables["workflow_conversation_variables"] == 7
    assert set(scenario.single_step_nodes) <= ids(db_engine, t.workflow_node_executions)
    active = {rid for rid, run in scenario.runs.items() if run.status in ("running", "paused", "scheduled")}
    assert active <= ids(db_engine, t.workflow_runs)
    assert summary.outcome is Outcome.DONE and summary.rows_remaining == 0
    assert summary.details["failed_batch_attempts"] == 0
    assert_no_dangling(db_engine)


def test_workflow_id_filter(pg_engine: Any, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    chosen = {scenario.other_workflow["professional"], scenario.main_workflow["sandbox_in_grace"]}
    before, messages_before = ids(pg_engine, t.workflow_runs), ids(pg_engine, t.messages)
    summary = run_job(clean_workflow_logs, make_context(pg_url), params(scenario, workflow_ids=tuple(sorted(chosen))))
    gone = scenario.old_ended(workflow_ids=chosen)
    assert len(gone) == 1 + 7  # the other workflow's old run, the main workflow's seven ended old runs
    assert ids(pg_engine, t.workflow_runs) == before - gone
    assert ids(pg_engine, t.messages) == messages_before  # no chat runs among them
    assert summary.details["workflow_filter"] == sorted(chosen)


def test_app_id_filter(pg_engine: Any, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    app = scenario.chat_apps["team_expired"]
    before, messages_before = ids(pg_engine, t.workflow_runs), ids(pg_engine, t.messages)
    run_job(clean_workflow_logs, make_context(pg_url), params(scenario, app_ids=(app,)))
    gone = scenario.old_ended(app_ids={app})
    assert len(gone) == 4
    assert ids(pg_engine, t.workflow_runs) == before - gone
    assert ids(pg_engine, t.messages) == messages_before - scenario.messages_of(gone)
    assert scenario.conversations["team_expired"]["old"] not in ids(pg_engine, t.conversations)


def test_dry_run_counts_equal_real_run(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    before = row_counts(db_engine, RUN_TABLES + CHAT_TABLES)
    dry = run_job(
        clean_workflow_logs, make_context(db_url), params(scenario, run=RunOptions(dry_run=True, batch_size=2))
    )
    assert row_counts(db_engine, RUN_TABLES + CHAT_TABLES) == before
    real = run_job(clean_workflow_logs, make_context(db_url), params(scenario, run=RunOptions(batch_size=7)))
    assert dry.tables == real.tables
    assert real.tables["conversations"] == len(scenario.conversations)


def _releasing_reporter(holder: Any) -> RecordingReporter:
    class Releasing(RecordingReporter):
        def warning(self, message: str) -> None:
            if "rolled back" in message and holder.in_transaction():
                holder.rollback()  # the timeout happened: the next attempt gets through
            super().warning(message)

    return Releasing()


def test_lock_timeout_is_retried_on_the_same_cursor(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    first_runs = sorted(
        (run.created_at, run.run_id) for run in scenario.runs.values() if run.run_id in scenario.old_ended()
    )
    oldest = first_runs[0][1]
    holder = db_engine.connect()
    # another session holds a row of the first batch: its DELETE waits DIFYMAINT_LOCK_TIMEOUT, then rolls back
    holder.execute(sa.text("SELECT id FROM workflow_app_logs WHERE workflow_run_id = :r FOR UPDATE"), {"r": oldest})
    clock = FixedClock()
    ctx = make_context(db_url, clock, DIFYMAINT_LOCK_TIMEOUT=1, DIFYMAINT_TARGET_BATCH_MS=0)
    reporter = ctx.reporter = _releasing_reporter(holder)
    try:
        summary = run_job(clean_workflow_logs, ctx, params(scenario))
    finally:
        holder.close()
    assert clock.slept == [1.0]  # seconds-scale backoff, not Dify's 5 minutes
    assert summary.details["failed_batch_attempts"] == 1
    assert any("retrying the same batch in 1s (1/3)" in warning for warning in reporter.warnings)
    assert summary.outcome is Outcome.DONE
    assert summary.tables["workflow_runs"] == len(scenario.old_ended())  # nothing skipped
    assert oldest not in ids(db_engine, t.workflow_runs)
    assert_no_dangling(db_engine)


FAIL_TRIGGER = """
CREATE SEQUENCE difymaint_test_fail_seq;
CREATE FUNCTION difymaint_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- nextval is not rolled back with the batch, so it counts delete attempts across retries
    IF nextval('difymaint_test_fail_seq') IN ({attempts}) THEN
        RAISE EXCEPTION 'injected connection failure' USING ERRCODE = '08006';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER difymaint_test_fail BEFORE DELETE ON workflow_runs
    FOR EACH STATEMENT EXECUTE FUNCTION difymaint_test_fail();
"""


def _inject_failures(engine: Any, attempts: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(FAIL_TRIGGER.format(attempts=attempts)))


def test_operational_error_in_a_middle_batch_is_retried_not_skipped(pg_engine: Any, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    _inject_failures(pg_engine, "2")  # the second batch's first attempt fails
    clock = FixedClock()
    ctx = make_context(pg_url, clock, DIFYMAINT_TARGET_BATCH_MS=0)
    summary = run_job(clean_workflow_logs, ctx, params(scenario))
    assert clock.slept == [1.0]
    assert summary.outcome is Outcome.DONE and summary.details["failed_batch_attempts"] == 1
    assert summary.tables["workflow_runs"] == len(scenario.old_ended())
    assert not scenario.old_ended() & ids(pg_engine, t.workflow_runs)  # every batch went, none skipped
    assert_no_dangling(pg_engine)


def test_three_failures_in_a_row_fail_the_job(pg_engine: Any, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    _inject_failures(pg_engine, "2, 3, 4")  # the second batch never gets through
    before = ids(pg_engine, t.workflow_runs)
    clock = FixedClock()
    ctx = make_context(pg_url, clock, DIFYMAINT_TARGET_BATCH_MS=0)
    with pytest.raises(DifymaintError, match="failed 3 times in a row") as caught:
        run_job(clean_workflow_logs, ctx, params(scenario))
    assert caught.value.exit_code == ExitCode.FAILED
    assert clock.slept == [1.0, 2.0]
    summary = caught.value.difymaint_summary  # type: ignore[attr-defined]
    assert summary.outcome is Outcome.FAILED and summary.exit_code == 1
    assert summary.tables["workflow_runs"] == 5  # the first batch committed, the failing one did not
    assert len(before - ids(pg_engine, t.workflow_runs)) == 5
    assert summary.details["failed_batch_attempts"] == 3
    assert_no_dangling(pg_engine)


def test_cli_exit_1_after_three_failures(pg_engine: Any, pg_url: str) -> None:
    from tests.test_cli import run_cli

    seed(pg_engine, NOW)
    _inject_failures(pg_engine, "1, 2, 3")
    result = run_cli(["clean-workflow-logs", "--database-url", pg_url, "--yes", "--json"])
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "failed" and "failed 3 times in a row" in summary["error"]
    assert "Traceback" not in result.stderr


def test_missing_index_warning_and_hint(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    summary = run_job(clean_workflow_logs, make_context(db_url), params(scenario, run=RunOptions(dry_run=True)))
    warning = next(w for w in summary.warnings if "messages.workflow_run_id" in w)
    if is_mysql_url(db_url):
        assert MYSQL_MESSAGE_INDEX_HINT in warning
        statement = MYSQL_MESSAGE_INDEX_HINT
    else:
        assert HINT in warning and "WHERE workflow_run_id IS NOT NULL" in warning
        statement = HINT.replace(" CONCURRENTLY", "") + " WHERE workflow_run_id IS NOT NULL"
    with db_engine.begin() as conn:
        conn.execute(sa.text(statement))
    summary = run_job(clean_workflow_logs, make_context(db_url), params(scenario, run=RunOptions(dry_run=True)))
    assert not any("messages.workflow_run_id" in w for w in summary.warnings)


def test_max_batches_is_partial_and_resumable(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    total = len(scenario.old_ended())
    first = run_job(
        clean_workflow_logs,
        make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0),
        params(scenario, run=RunOptions(batch_size=5, max_batches=3)),
    )
    assert first.outcome is Outcome.PARTIAL and first.exit_code == 4
    assert first.tables["workflow_runs"] == 15 and first.rows_remaining == total - 15
    assert_no_dangling(db_engine)
    second = run_job(clean_workflow_logs, make_context(db_url), params(scenario))
    assert second.outcome is Outcome.DONE and second.tables["workflow_runs"] == total - 15
    assert_no_dangling(db_engine)


def test_orphan_manifest(pg_engine: Any, pg_url: str, tmp_path: Path) -> None:
    scenario = seed(pg_engine, NOW)
    manifest = tmp_path / "orphans.jsonl"
    dry_manifest = tmp_path / "dry.jsonl"
    run_job(
        clean_workflow_logs,
        make_context(pg_url),
        params(scenario, run=RunOptions(dry_run=True), orphan_manifest=dry_manifest),
    )
    summary = run_job(clean_workflow_logs, make_context(pg_url), params(scenario, orphan_manifest=manifest))
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    dry_lines = [json.loads(line) for line in dry_manifest.read_text().splitlines()]
    assert all(line["dry_run"] for line in dry_lines) and len(dry_lines) == len(lines)
    gone = [scenario.runs[rid] for rid in scenario.old_ended()]
    expected = {
        "workflow_node_execution_offload": {f for run in gone for f in run.offload_files},
        "workflow_pauses": {run.state_key for run in gone if run.state_key},
        "message_files": set(scenario.message_upload_files.values()),
    }
    found: dict[str, set[str]] = {source: set() for source in expected}
    for line in lines:
        found[line["source"]].add(line["key"] if line["source"] == "workflow_pauses" else line["id"])
        assert line["job"] == "clean-workflow-logs" and line["tenant_id"] in scenario.tenant_ids.values()
    assert found == expected
    assert summary.details["orphan_manifest"]["by_source"] == {k: len(v) for k, v in expected.items()}


def test_optional_tables_missing_are_skipped_with_a_warning(pg_engine: Any, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    with pg_engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE workflow_pause_reasons"))
        conn.execute(sa.text("DROP TABLE workflow_trigger_logs"))
    summary = run_job(clean_workflow_logs, make_context(pg_url), params(scenario))
    assert summary.tables["workflow_runs"] == len(scenario.old_ended())
    assert summary.tables["workflow_pauses"] == sum(1 for rid in scenario.old_ended() if scenario.runs[rid].pauses)
    assert "workflow_pause_reasons" not in summary.tables and "workflow_trigger_logs" not in summary.tables
    assert sum("does not exist in this Dify version" in warning for warning in summary.warnings) == 2


def test_lock_key(db_engine: Any, db_url: str, redis_url: str) -> None:
    import redis

    scenario = seed(db_engine, NOW)
    client = redis.Redis.from_url(redis_url)
    other = client.lock("retention:clean_workflow_runlogs_precise", timeout=60, blocking=False)
    assert other.acquire()
    ctx = make_context(db_url, DIFYMAINT_USE_REDIS=True, DIFYMAINT_REDIS_URL=redis_url)
    with pytest.raises(LockHeld):
        run_job(clean_workflow_logs, ctx, params(scenario))
    other.release()
    assert run_job(clean_workflow_logs, ctx, params(scenario)).outcome is Outcome.DONE


def test_sqlite_run(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    scenario = seed(engine, NOW)
    before, messages_before = ids(engine, t.workflow_runs), ids(engine, t.messages)
    dry = run_job(
        clean_workflow_logs, make_context(sqlite_url), params(scenario, run=RunOptions(dry_run=True, batch_size=3))
    )
    real = run_job(clean_workflow_logs, make_context(sqlite_url), params(scenario))
    assert dry.tables == real.tables
    assert ids(engine, t.workflow_runs) == before - scenario.old_ended()
    assert ids(engine, t.messages) == messages_before - scenario.messages_of(scenario.old_ended())
    assert_no_dangling(engine)
    engine.dispose()


def test_cli_on_sqlite_reads_difys_settings(sqlite_url: str) -> None:
    from tests.test_cli import run_cli

    engine = sa.create_engine(sqlite_url)
    scenario = seed(engine, NOW)
    before = ids(engine, t.workflow_runs)
    chosen = scenario.main_workflow["professional"]
    env = {"WORKFLOW_LOG_CLEANUP_SPECIFIC_WORKFLOW_IDS": chosen, "WORKFLOW_LOG_CLEANUP_BATCH_SIZE": "2"}
    real_cutoff = naive_utc(datetime.now(UTC)) - timedelta(days=30)  # the CLI uses the real clock
    result = run_cli(["clean-workflow-logs", "--database-url", sqlite_url, "--yes", "--json", "--days", "30"], env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["job"] == "clean-workflow-logs" and summary["outcome"] == "done"
    assert summary["details"]["workflow_filter"] == [chosen]
    expected = {
        run.run_id
        for run in scenario.runs.values()
        if run.workflow_id == chosen and run.status in ENDED_RUN_STATUSES and run.created_at < real_cutoff
    }
    assert expected >= scenario.old_ended(workflow_ids={chosen})
    assert ids(engine, t.workflow_runs) == before - expected
    bad = run_cli(["clean-workflow-logs", "--database-url", sqlite_url, "--workflow-ids", "x", "--dry-run"])
    assert bad.returncode == 2 and "is not an id" in bad.stderr
    engine.dispose()
