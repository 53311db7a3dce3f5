"""clean-workflow-runs against a real PostgreSQL (and SQLite): ended, expired runs with every per-run row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from difymaint.core.errors import BillingUnavailable, LockHeld
from difymaint.core.summary import Outcome
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.cascades import MESSAGE_CHILDREN
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, clean_workflow_runs
from difymaint.jobs.clean_workflow_runs import CleanWorkflowRunsParams
from difymaint.jobs.execute import run_job
from tests.conftest import NOW, make_context, row_counts
from tests.workflow_scenario import CHAT_TABLES, RUN_TABLES, assert_no_dangling, ids, seed

pytestmark = pytest.mark.postgres


def params(scenario: Any, **kwargs: Any) -> CleanWorkflowRunsParams:
    run = kwargs.pop("run", RunOptions(batch_size=4))
    return CleanWorkflowRunsParams(window=TimeWindow(end_before=scenario.cutoff), run=run, **kwargs)


def billing_settings(billing: Any) -> dict[str, Any]:
    return {"BILLING_ENABLED": True, "BILLING_API_URL": billing.url, "BILLING_API_SECRET_KEY": "test-secret"}


def test_registry_entry() -> None:
    info = JOBS["clean-workflow-runs"]
    assert (info.module, info.schedule, info.dify_task, info.dify_switch, info.lock_key) == (
        "clean_workflow_runs",
        "0 0 * * *",
        "clean_workflow_runs_task",
        "ENABLE_WORKFLOW_RUN_CLEANUP_TASK",
        "retention:clean_workflow_runs_task",
    )


def test_billing_off_deletes_every_ended_old_run_with_its_rows(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    runs_before = ids(db_engine, t.workflow_runs)
    chat_before = row_counts(db_engine, CHAT_TABLES)
    tables_before = row_counts(db_engine, RUN_TABLES)
    summary = run_job(clean_workflow_runs, make_context(db_url), params(scenario))
    gone = scenario.old_ended()
    assert ids(db_engine, t.workflow_runs) == runs_before - gone
    expected = scenario.cascade_rows(gone)
    assert {name: summary.tables[name] for name in RUN_TABLES} == expected
    assert row_counts(db_engine, RUN_TABLES) == {name: tables_before[name] - expected[name] for name in RUN_TABLES}
    # running, paused and scheduled runs survive however old, with their pauses and offloads
    left = ids(db_engine, t.workflow_runs)
    active = {rid for rid, run in scenario.runs.items() if run.status in ("running", "paused", "scheduled")}
    assert active <= left
    assert {rid for rid, run in scenario.runs.items() if run.created_at >= scenario.cutoff} <= left
    assert set(scenario.single_step_nodes) <= ids(db_engine, t.workflow_node_executions)
    assert row_counts(db_engine, CHAT_TABLES) == chat_before  # messages are not part of the default run
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert summary.details["strategy"] == "global" and summary.rows_remaining == 0
    assert_no_dangling(db_engine)


def test_only_id_tenant_and_created_at_are_read(pg_engine: Any, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    statements: list[str] = []
    ctx = make_context(pg_url)
    sa.event.listen(ctx.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    run_job(clean_workflow_runs, ctx, params(scenario, run=RunOptions(dry_run=True)))
    selects = [s for s in statements if s.lstrip().startswith("SELECT") and "FROM workflow_runs" in s]
    assert selects
    for statement in selects:
        head = statement.split("FROM", 1)[0]
        assert "graph" not in head and "outputs" not in head and "inputs" not in head, head


def test_billing_plan_matrix_tenant_first(db_engine: Any, db_url: str, billing: Any) -> None:
    scenario = seed(db_engine, NOW)
    billing.state.plans = scenario.plans()
    billing.state.whitelist = scenario.whitelist()
    billing.state.expiration_as_string = True
    before = ids(db_engine, t.workflow_runs)
    summary = run_job(clean_workflow_runs, make_context(db_url, **billing_settings(billing)), params(scenario))
    gone = scenario.old_ended(tenants=scenario.eligible_tenants())
    assert ids(db_engine, t.workflow_runs) == before - gone
    assert summary.details["strategy"] == "tenants"
    assert summary.tables["workflow_runs"] == len(gone)
    asked = {tid for call in billing.plan_calls() for tid in call}
    assert scenario.tenant_ids["sandbox_whitelisted"] not in asked  # whitelisted: never even looked up
    decisions = summary.details["tenant_decisions_skipped"]
    assert decisions["unknown_plan"] >= 1 and decisions["in_grace"] >= 1 and decisions["paid"] >= 2
    assert_no_dangling(db_engine)


def test_whitelist_failure_fails_closed(pg_engine: Any, pg_url: str, billing: Any) -> None:
    scenario = seed(pg_engine, NOW)
    billing.state.fail_whitelist = 503
    before = row_counts(pg_engine, RUN_TABLES)
    with pytest.raises(BillingUnavailable):
        run_job(clean_workflow_runs, make_context(pg_url, **billing_settings(billing)), params(scenario))
    assert row_counts(pg_engine, RUN_TABLES) == before  # Dify would have used an empty whitelist


def test_plan_lookup_failure_deletes_nothing(pg_engine: Any, pg_url: str, billing: Any) -> None:
    scenario = seed(pg_engine, NOW)
    billing.state.fail_plans = 503
    before = row_counts(pg_engine, RUN_TABLES)
    summary = run_job(clean_workflow_runs, make_context(pg_url, **billing_settings(billing)), params(scenario))
    assert row_counts(pg_engine, RUN_TABLES) == before
    assert summary.details["failed_plan_chunks"] >= 1


def test_tenant_filter(pg_engine: Any, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    target = scenario.tenant_ids["professional"]
    before = ids(pg_engine, t.workflow_runs)
    summary = run_job(clean_workflow_runs, make_context(pg_url), params(scenario, tenant_ids=(target,)))
    assert ids(pg_engine, t.workflow_runs) == before - scenario.old_ended(tenants={"professional"})
    assert summary.details["strategy"] == "tenants"


def test_with_messages_removes_run_messages_and_emptied_conversations(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    messages_before = ids(db_engine, t.messages)
    summary = run_job(clean_workflow_runs, make_context(db_url), params(scenario, with_messages=True))
    gone_runs = scenario.old_ended()
    gone_messages = scenario.messages_of(gone_runs)
    assert ids(db_engine, t.messages) == messages_before - gone_messages
    for child in MESSAGE_CHILDREN:
        assert summary.tables[child.name] == len(gone_messages), child.name
    conversations = ids(db_engine, t.conversations)
    for name, kinds in scenario.conversations.items():
        assert kinds["old"] not in conversations, name  # all its messages were old run messages
        assert kinds["spanning"] in conversations, name  # a newer message stays with its conversation
        assert kinds["mixed"] in conversations, name  # still holds a message without a run
        assert set(scenario.new_messages[name] + scenario.plain_messages[name]) <= ids(db_engine, t.messages)
    assert summary.tables["conversations"] == len(scenario.conversations)
    assert summary.tables["pinned_conversations"] == len(scenario.conversations)
    assert summary.tables["workflow_conversation_variables"] == len(scenario.conversations)
    assert_no_dangling(db_engine)


def test_dry_run_counts_equal_real_run(db_engine: Any, db_url: str, billing: Any) -> None:
    scenario = seed(db_engine, NOW)
    billing.state.plans = scenario.plans()
    billing.state.whitelist = scenario.whitelist()
    settings = billing_settings(billing)
    before = row_counts(db_engine, RUN_TABLES + CHAT_TABLES)
    dry = run_job(
        clean_workflow_runs,
        make_context(db_url, **settings),
        params(scenario, run=RunOptions(dry_run=True, batch_size=2), with_messages=True),
    )
    assert row_counts(db_engine, RUN_TABLES + CHAT_TABLES) == before  # nothing written
    real = run_job(
        clean_workflow_runs,
        make_context(db_url, **settings),
        params(scenario, run=RunOptions(batch_size=5), with_messages=True),
    )
    assert dry.tables == real.tables
    assert real.tables["conversations"] == len(scenario.eligible_tenants())
    assert dry.dry_run and not real.dry_run


def test_dry_run_equals_real_run_billing_off(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    dry = run_job(
        clean_workflow_runs,
        make_context(db_url),
        params(scenario, run=RunOptions(dry_run=True, batch_size=3), with_messages=True),
    )
    real = run_job(clean_workflow_runs, make_context(db_url), params(scenario, with_messages=True))
    assert dry.tables == real.tables
    assert real.tables["workflow_runs"] == len(scenario.old_ended())


def test_max_batches_is_partial_and_resumable(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    total = len(scenario.old_ended())
    first = run_job(
        clean_workflow_runs,
        make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0),
        params(scenario, run=RunOptions(batch_size=4, max_batches=2)),
    )
    assert first.outcome is Outcome.PARTIAL and first.exit_code == 4 and first.stop_reason == "max-batches"
    assert first.tables["workflow_runs"] == 8
    assert first.rows_remaining == total - 8
    assert_no_dangling(db_engine)
    second = run_job(clean_workflow_runs, make_context(db_url), params(scenario))
    assert second.outcome is Outcome.DONE and second.tables["workflow_runs"] == total - 8


def test_orphan_manifest_lists_offload_files_and_pause_states(db_engine: Any, db_url: str, tmp_path: Path) -> None:
    scenario = seed(db_engine, NOW)
    manifest = tmp_path / "orphans.jsonl"
    uploads_before = row_counts(db_engine, ["upload_files"])
    summary = run_job(
        clean_workflow_runs, make_context(db_url), params(scenario, orphan_manifest=manifest, with_messages=True)
    )
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    gone = [scenario.runs[rid] for rid in scenario.old_ended()]
    by_source: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_source.setdefault(line["source"], []).append(line)
    assert {line["id"] for line in by_source["workflow_node_execution_offload"]} == {
        file_id for run in gone for file_id in run.offload_files
    }
    assert {line["key"] for line in by_source["workflow_pauses"]} == {run.state_key for run in gone if run.state_key}
    assert {line["id"] for line in by_source["message_files"]} == set(scenario.message_upload_files.values())
    pause_line = by_source["workflow_pauses"][0]
    assert pause_line["key"].startswith("workflow-state-") and pause_line["tenant_id"] in scenario.tenant_ids.values()
    assert all(line["job"] == "clean-workflow-runs" and not line["dry_run"] for line in lines)
    assert summary.details["orphan_manifest"]["files"] == len(lines)
    assert row_counts(db_engine, ["upload_files"]) == uploads_before  # rows kept, only listed
    # the paused run's offload files are still referenced: never listed
    paused = [run for run in scenario.runs.values() if run.status == "paused"]
    listed = {line.get("id") for line in lines}
    assert not {file_id for run in paused for file_id in run.offload_files} & listed


def test_optional_tables_missing_are_skipped_with_a_warning(pg_engine: Any, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    with pg_engine.begin() as conn:
        for name in (
            "workflow_pause_reasons",
            "workflow_pauses",
            "workflow_trigger_logs",
            "workflow_node_execution_offload",
        ):
            conn.execute(sa.text(f"DROP TABLE {name}"))
    summary = run_job(clean_workflow_runs, make_context(pg_url), params(scenario))
    assert summary.tables["workflow_runs"] == len(scenario.old_ended())
    assert "workflow_pauses" not in summary.tables and "workflow_trigger_logs" not in summary.tables
    assert sum("workflow_pauses does not exist" in warning for warning in summary.warnings) == 1
    assert sum("does not exist in this Dify version" in warning for warning in summary.warnings) == 4


def test_missing_required_table_is_one_clear_error(pg_engine: Any, pg_url: str) -> None:
    from difymaint.core.errors import SchemaMismatch

    scenario = seed(pg_engine, NOW)
    with pg_engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE workflow_app_logs"))
    with pytest.raises(SchemaMismatch, match="workflow_app_logs"):
        run_job(clean_workflow_runs, make_context(pg_url), params(scenario))


def test_difys_lock_key_excludes_difys_beat(db_engine: Any, db_url: str, redis_url: str) -> None:
    import redis

    scenario = seed(db_engine, NOW)
    client = redis.Redis.from_url(redis_url)
    dify_lock = client.lock("retention:clean_workflow_runs_task", timeout=60, blocking=False)
    assert dify_lock.acquire()
    ctx = make_context(db_url, DIFYMAINT_USE_REDIS=True, DIFYMAINT_REDIS_URL=redis_url)
    before = ids(db_engine, t.workflow_runs)
    with pytest.raises(LockHeld):
        run_job(clean_workflow_runs, ctx, params(scenario))
    assert ids(db_engine, t.workflow_runs) == before
    dify_lock.release()
    assert run_job(clean_workflow_runs, ctx, params(scenario)).outcome is Outcome.DONE


def test_batch_timeout_retries_the_same_cursor(db_engine: Any, db_url: str) -> None:
    """A lock held by another session makes one batch time out; it is retried, nothing is skipped."""
    from difymaint.core.reporter import RecordingReporter
    from tests.conftest import FixedClock

    scenario = seed(db_engine, NOW)
    holder = db_engine.connect()
    holder.execute(sa.text("SELECT id FROM workflow_trigger_logs FOR UPDATE"))  # row locks only

    class ReleasingReporter(RecordingReporter):
        def warning(self, message: str) -> None:
            if "rolled back" in message and holder.in_transaction():
                holder.rollback()  # the batch rolled back: let the retry through
            super().warning(message)

    ctx = make_context(db_url, FixedClock(), DIFYMAINT_LOCK_TIMEOUT=1)
    reporter = ctx.reporter = ReleasingReporter()
    try:
        summary = run_job(clean_workflow_runs, ctx, params(scenario, run=RunOptions(batch_size=50)))
    finally:
        holder.close()
    assert sum("rolled back" in warning for warning in reporter.warnings) == 1
    assert summary.outcome is Outcome.DONE
    assert summary.tables["workflow_runs"] == len(scenario.old_ended())
    assert_no_dangling(db_engine)


def test_sqlite_run(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    scenario = seed(engine, NOW)
    before = ids(engine, t.workflow_runs)
    dry = run_job(
        clean_workflow_runs,
        make_context(sqlite_url),
        params(scenario, run=RunOptions(dry_run=True, batch_size=3), with_messages=True),
    )
    real = run_job(clean_workflow_runs, make_context(sqlite_url), params(scenario, with_messages=True))
    assert dry.tables == real.tables
    assert ids(engine, t.workflow_runs) == before - scenario.old_ended()
    assert_no_dangling(engine)
    engine.dispose()


@pytest.mark.slow
def test_cli_json_on_sqlite(sqlite_url: str) -> None:
    from tests.test_cli import run_cli

    engine = sa.create_engine(sqlite_url)
    seed(engine, NOW)
    engine.dispose()
    result = run_cli(["clean-workflow-runs", "--database-url", sqlite_url, "--dry-run", "--json", "--days", "30"])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["job"] == "clean-workflow-runs" and summary["dry_run"] and summary["tables"]["workflow_runs"] > 0
    bad = run_cli(["clean-workflow-runs", "--database-url", sqlite_url, "--tenant-ids", "nope", "--dry-run"])
    assert bad.returncode == 2 and "is not an id" in bad.stderr
    refused = run_cli(["clean-workflow-runs", "--database-url", sqlite_url])
    assert refused.returncode == 2 and "--yes" in refused.stderr
