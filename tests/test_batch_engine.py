"""The batch engine on PostgreSQL: one statement per batch, the set-based dry run, and --workers slices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import sqlalchemy as sa

from difymaint.core.summary import Outcome
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.dify.cascades import MESSAGE_CASCADE, MESSAGE_CASCADE_TABLES
from difymaint.engine.options import RunOptions
from difymaint.jobs import clean_messages, clean_workflow_runs
from difymaint.jobs.clean_messages import CleanMessagesParams
from difymaint.jobs.clean_workflow_runs import CleanWorkflowRunsParams
from difymaint.jobs.execute import run_job
from tests import scenario as messages_scenario
from tests import workflow_scenario
from tests.conftest import NOW, make_context, row_counts

pytestmark = pytest.mark.postgres


def message_params(cutoff: Any, **run: Any) -> CleanMessagesParams:
    return CleanMessagesParams(window=TimeWindow(end_before=cutoff), run=RunOptions(**run))


def run_params(cutoff: Any, **run: Any) -> CleanWorkflowRunsParams:
    return CleanWorkflowRunsParams(window=TimeWindow(end_before=cutoff), run=RunOptions(**run))


def record_statements(ctx: Any) -> list[str]:
    statements: list[str] = []
    sa.event.listen(ctx.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    return statements


def test_each_batch_is_one_statement_and_no_id_reaches_the_client(pg_engine: Any, pg_url: str) -> None:
    scenario = messages_scenario.seed(pg_engine, NOW)
    before = messages_scenario.remaining_messages(pg_engine)
    ctx = make_context(pg_url, DIFYMAINT_TARGET_BATCH_MS=0)
    statements = record_statements(ctx)
    summary = run_job(clean_messages, ctx, message_params(scenario.cutoff, batch_size=3))
    gone = scenario.all_old()
    assert messages_scenario.remaining_messages(pg_engine) == before - gone
    assert summary.tables["messages"] == len(gone) and summary.outcome is Outcome.DONE
    deletes = [s for s in statements if "DELETE FROM" in s]
    assert summary.batches == -(-len(gone) // 3) and len(deletes) == summary.batches
    # every batch statement deletes the whole cascade, with the page chosen on the server
    assert all(s.count("DELETE FROM") == len(MESSAGE_CASCADE_TABLES) and "MATERIALIZED" in s for s in deletes)
    assert not [s for s in statements if s.lstrip().startswith("SELECT") and "FROM messages" in s and "LIMIT" in s]
    messages_scenario.assert_cascade_consistent(pg_engine)


def test_set_based_dry_run_is_one_count_per_table_equal_to_the_real_run(db_engine: Any, db_url: str) -> None:
    scenario = messages_scenario.seed(db_engine, NOW)
    counts_before = row_counts(db_engine, list(MESSAGE_CASCADE_TABLES))
    ctx = make_context(db_url)
    statements = record_statements(ctx)
    dry = run_job(clean_messages, ctx, message_params(scenario.cutoff, batch_size=2, dry_run=True))
    assert row_counts(db_engine, list(MESSAGE_CASCADE_TABLES)) == counts_before
    assert dry.batches == 1 and not [s for s in statements if "DELETE" in s]
    counting = [s for s in statements if "count(*)" in s and "LIMIT" not in s]
    assert len(counting) == len(MESSAGE_CASCADE_TABLES)  # one count per table, no walk of the batches
    real = run_job(clean_messages, make_context(db_url), message_params(scenario.cutoff, batch_size=2))
    assert dry.tables == real.tables and dry.tables["messages"] == len(scenario.all_old())


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_delete_exactly_what_one_worker_does(db_engine: Any, db_url: str, workers: int) -> None:
    scenario = workflow_scenario.seed(db_engine, NOW)
    runs_before = workflow_scenario.ids(db_engine, t.workflow_runs)
    tables_before = row_counts(db_engine, list(workflow_scenario.RUN_TABLES))
    summary = run_job(
        clean_workflow_runs, make_context(db_url), run_params(scenario.cutoff, batch_size=2, workers=workers)
    )
    gone = scenario.old_ended()
    assert workflow_scenario.ids(db_engine, t.workflow_runs) == runs_before - gone
    expected = scenario.cascade_rows(gone)
    assert {name: summary.tables[name] for name in workflow_scenario.RUN_TABLES} == expected
    assert row_counts(db_engine, list(workflow_scenario.RUN_TABLES)) == {
        name: tables_before[name] - expected[name] for name in workflow_scenario.RUN_TABLES
    }
    assert summary.outcome is Outcome.DONE and summary.rows_remaining == 0
    assert summary.batches >= workers  # every slice had work
    workflow_scenario.assert_no_dangling(db_engine)


def test_workers_respect_max_batches_exactly_and_the_backlog_is_counted(db_engine: Any, db_url: str) -> None:
    scenario = messages_scenario.seed(db_engine, NOW)
    before = messages_scenario.remaining_messages(db_engine)
    ctx = make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0)
    first = run_job(clean_messages, ctx, message_params(scenario.cutoff, batch_size=2, workers=2, max_batches=3))
    assert first.outcome is Outcome.PARTIAL and first.stop_reason == "max-batches" and first.exit_code == 4
    deleted = first.tables["messages"]
    assert first.batches == 3 and 3 <= deleted <= 6  # at most 2 a batch; fewer in a slice's short last page
    assert first.rows_remaining == len(scenario.all_old()) - deleted
    messages_scenario.assert_cascade_consistent(db_engine)
    second = run_job(clean_messages, make_context(db_url), message_params(scenario.cutoff, batch_size=50, workers=2))
    assert second.outcome is Outcome.DONE
    assert first.tables["messages"] + second.tables["messages"] == len(scenario.all_old())
    assert messages_scenario.remaining_messages(db_engine) == before - scenario.all_old()


def test_workers_stop_after_their_open_batch_on_sigterm(pg_engine: Any, pg_url: str) -> None:
    scenario = messages_scenario.seed(pg_engine, NOW)
    ctx = make_context(pg_url, DIFYMAINT_TARGET_BATCH_MS=0)
    ctx.reporter.batch = lambda progress: ctx.stop.request(15)  # type: ignore[method-assign]
    summary = run_job(clean_messages, ctx, message_params(scenario.cutoff, batch_size=2, workers=2))
    assert summary.outcome is Outcome.INTERRUPTED and summary.exit_code == 143
    assert 1 <= summary.batches <= 2  # the batch that saw the signal, and at most the other worker's open one
    assert summary.tables["messages"] == 2 * summary.batches
    messages_scenario.assert_cascade_consistent(pg_engine)


def test_batch_statement_counts_and_cursor(pg_engine: Any) -> None:
    scenario = messages_scenario.seed(pg_engine, NOW)
    m = t.messages
    page = (
        sa.select(m.c.id.label("id"), m.c.created_at.label("created_at"))
        .where(m.c.created_at < scenario.cutoff)
        .order_by(m.c.created_at, m.c.id)
        .limit(3)
    )
    with pg_engine.connect() as conn:
        expected = conn.execute(page).all()
        result = MESSAGE_CASCADE.run_batch(conn, page, dry_run=True)
    assert result.scanned == 3 and result.counts["messages"] == 3
    assert result.last == (expected[-1].created_at, str(expected[-1].id))


def _cli_with_workers(pg_url: str, cutoff: Any) -> subprocess.Popen[str]:
    """The real CLI, two workers, batches of 2 messages with long pauses between them (so a signal lands
    mid-run), in its own process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "REDIS_", "DIFYMAINT_"))}
    env.update(DIFYMAINT_USE_REDIS="false", DIFYMAINT_TARGET_BATCH_MS="0", NO_COLOR="1")
    command = [sys.executable, "-m", "difymaint", "clean-messages", "--end-before", cutoff.isoformat(), "--yes"]
    command += ["--json", "--database-url", pg_url, "--batch-size", "2", "--sleep-ms", "1500", "--workers", "2"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_first_batch(engine: Any, before: set[str], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while messages_scenario.remaining_messages(engine) == before:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before any batch"
        time.sleep(0.05)


def test_sigterm_to_the_cli_with_two_workers_stops_cleanly(pg_engine: Any, pg_url: str) -> None:
    scenario = messages_scenario.seed(pg_engine, NOW)
    before = messages_scenario.remaining_messages(pg_engine)
    process = _cli_with_workers(pg_url, scenario.cutoff)
    _wait_for_first_batch(pg_engine, before, process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["outcome"] == "interrupted"
    gone = before - messages_scenario.remaining_messages(pg_engine)
    assert summary["tables"]["messages"] == len(gone) and gone <= scenario.all_old()
    assert summary["rows_remaining"] == len(scenario.all_old() - gone)
    messages_scenario.assert_cascade_consistent(pg_engine)  # no half-deleted batch


def test_kill_9_with_two_workers_leaves_no_half_deleted_cascade(pg_engine: Any, pg_url: str) -> None:
    scenario = messages_scenario.seed(pg_engine, NOW)
    before = messages_scenario.remaining_messages(pg_engine)
    process = _cli_with_workers(pg_url, scenario.cutoff)
    _wait_for_first_batch(pg_engine, before, process)
    process.kill()
    process.communicate(timeout=60)
    messages_scenario.assert_cascade_consistent(pg_engine)
    assert scenario.all_old() - messages_scenario.remaining_messages(pg_engine)  # some old messages still there
    rest = run_job(clean_messages, make_context(pg_url), message_params(scenario.cutoff, batch_size=50, workers=2))
    assert rest.outcome is Outcome.DONE
    assert messages_scenario.remaining_messages(pg_engine) == before - scenario.all_old()
    messages_scenario.assert_cascade_consistent(pg_engine)


def test_workers_that_cannot_apply_are_named_not_silently_ignored(pg_engine: Any, pg_url: str, tmp_path: Any) -> None:
    """With the orphan manifest the ids come to the client, so the walk is one connection: the run says so,
    and still deletes exactly what it would with one worker."""
    scenario = messages_scenario.seed(pg_engine, NOW)
    ctx = make_context(pg_url)
    params = CleanMessagesParams(
        window=TimeWindow(end_before=scenario.cutoff),
        run=RunOptions(batch_size=50, workers=2),
        orphan_manifest=tmp_path / "orphans.jsonl",
    )
    summary = run_job(clean_messages, ctx, params)
    assert summary.outcome is Outcome.DONE and summary.tables["messages"] == len(scenario.all_old())
    assert [w for w in ctx.reporter.warnings if "--workers 2 does not apply" in w] != []  # type: ignore[attr-defined]
    one = make_context(pg_url)
    run_job(clean_messages, one, message_params(scenario.cutoff, batch_size=50, workers=1))
    assert not [w for w in one.reporter.warnings if "--workers" in w]  # type: ignore[attr-defined]
