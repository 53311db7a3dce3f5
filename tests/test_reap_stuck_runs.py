"""reap-stuck-runs against a real PostgreSQL (and SQLite): Dify's predicates at their boundaries, the row locks
and the re-check, trigger logs on request, the switch that must be set, and the settings' range. The
predicates, the dry run, the row locks, the re-check and the trigger logs run on MariaDB too."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.clock import naive_utc
from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, reap_stuck_runs
from difymaint.jobs.execute import run_job
from difymaint.jobs.reap_stuck_runs import RUNNING_ERROR, SCHEDULED_ERROR, ReapStuckRunsParams
from tests.conftest import NOW, make_context
from tests.test_cli import invoke_assert_code, run_cli

pytestmark = pytest.mark.postgres

N = naive_utc(NOW)
SCHEDULED_CUT = N - timedelta(minutes=5)
RUNNING_CUT = N - timedelta(minutes=30)
US = timedelta(microseconds=1)
UNREACHABLE_DB = "postgresql://nobody@127.0.0.1:1/nothing"


@dataclass
class Seeded:
    reaped: dict[str, str] = field(default_factory=dict)  # run id → kind (scheduled | running)
    kept: set[str] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)  # case name → run id

    @property
    def scheduled(self) -> int:
        return sum(1 for kind in self.reaped.values() if kind == "scheduled")

    @property
    def running(self) -> int:
        return sum(1 for kind in self.reaped.values() if kind == "running")


def add_run(conn: sa.Connection, status: str, created_at: datetime, **values: Any) -> str:
    run_id = t.new_id()
    conn.execute(
        sa.insert(t.workflow_runs).values(
            id=run_id,
            tenant_id=t.new_id(),
            app_id=t.new_id(),
            workflow_id=t.new_id(),
            type="workflow",
            triggered_from="app-run",
            version="v1",
            status=status,
            elapsed_time=1.5,
            total_tokens=42,
            created_by_role="account",
            created_by=t.new_id(),
            created_at=created_at,
            **values,
        )
    )
    return run_id


def add_node(conn: sa.Connection, run_id: str, created_at: datetime, finished_at: datetime | None) -> None:
    conn.execute(
        sa.insert(t.workflow_node_executions).values(
            id=t.new_id(),
            tenant_id=t.new_id(),
            app_id=t.new_id(),
            workflow_id=t.new_id(),
            triggered_from="workflow-run",
            workflow_run_id=run_id,
            index=1,
            node_id="llm",
            node_type="llm",
            title="LLM",
            status="succeeded" if finished_at else "running",
            created_by_role="account",
            created_by=t.new_id(),
            created_at=created_at,
            finished_at=finished_at,
        )
    )


def seed(engine: Engine, now: datetime = N, *, bulk: int = 0, edges: bool = True) -> Seeded:
    """One run per case of Dify's predicates (cut-offs now − 5 and now − 30 minutes), plus ``bulk`` stuck
    scheduled runs. ``edges=False`` leaves out the cases within a second of a cut-off (a subprocess's clock
    runs on)."""
    scheduled_cut, running_cut = now - timedelta(minutes=5), now - timedelta(minutes=30)
    hour = timedelta(hours=1)
    seeded = Seeded()
    with engine.begin() as conn:

        def case(name: str, status: str, created_at: datetime, outcome: str | None, **values: Any) -> str:
            run_id = add_run(conn, status, created_at, **values)
            seeded.names[name] = run_id
            if outcome is None:
                seeded.kept.add(run_id)
            else:
                seeded.reaped[run_id] = outcome
            return run_id

        case("scheduled_long_ago", "scheduled", scheduled_cut - hour, "scheduled")
        case("scheduled_recently", "scheduled", now - timedelta(minutes=1), None)
        case("running_no_nodes", "running", running_cut - 2 * hour, "running")
        stale = case("running_stale_nodes", "running", running_cut - 2 * hour, "running")
        add_node(conn, stale, running_cut - hour, running_cut - hour + timedelta(minutes=3))
        add_node(conn, stale, running_cut - timedelta(minutes=20), None)  # started long ago, never finished
        busy = case("running_node_started_recently", "running", running_cut - 2 * hour, None)
        add_node(conn, busy, running_cut + timedelta(minutes=10), None)
        waiting = case("running_node_finished_recently", "running", running_cut - 2 * hour, None)
        add_node(conn, waiting, running_cut - hour, now - timedelta(minutes=2))
        case("running_recently", "running", now - timedelta(minutes=10), None)
        for status in ("paused", "succeeded", "failed", "stopped", "partial-succeeded"):
            case(f"{status}_long_ago", status, running_cut - 48 * hour, None, finished_at=None)
        if edges:
            case("scheduled_at_cutoff", "scheduled", scheduled_cut, None)  # strict <: kept
            case("scheduled_just_before_cutoff", "scheduled", scheduled_cut - US, "scheduled")
            case("running_at_cutoff", "running", running_cut, None)
            case("running_just_before_cutoff", "running", running_cut - US, "running")
            started = case("running_node_started_at_cutoff", "running", running_cut - hour, None)  # >=: alive
            add_node(conn, started, running_cut, None)
            finished = case("running_node_finished_at_cutoff", "running", running_cut - hour, None)
            add_node(conn, finished, running_cut - hour, running_cut)
            before = case("running_node_finished_just_before_cutoff", "running", running_cut - hour, "running")
            add_node(conn, before, running_cut - hour, running_cut - US)
        for i in range(bulk):
            case(f"bulk_{i}", "scheduled", scheduled_cut - timedelta(minutes=1 + i), "scheduled")
        # Another run's recent node activity protects nothing but that run.
        add_node(conn, t.new_id(), now - timedelta(minutes=1), None)
    return seeded


def runs_by_id(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {str(row.id): row for row in conn.execute(sa.select(t.workflow_runs))}


def params(**run: Any) -> ReapStuckRunsParams:
    return ReapStuckRunsParams(run=RunOptions(**run))


def assert_reaped_exactly(engine: Engine, seeded: Seeded, before: dict[str, Any], finished_at: datetime = N) -> None:
    after = runs_by_id(engine)
    for run_id, kind in seeded.reaped.items():
        row = after[run_id]
        assert row.status == "failed", (run_id, kind)
        assert row.error == (SCHEDULED_ERROR if kind == "scheduled" else RUNNING_ERROR)
        assert row.finished_at == finished_at
        # Nothing else is written.
        assert (row.elapsed_time, row.total_tokens, row.created_at) == (1.5, 42, before[run_id].created_at)
    for run_id in seeded.kept:
        assert after[run_id] == before[run_id], [name for name, i in seeded.names.items() if i == run_id]


def test_difys_predicates_at_their_boundaries_in_batches(db_engine: Engine, db_url: str) -> None:
    seeded = seed(db_engine, bulk=12)
    before = runs_by_id(db_engine)
    with db_engine.connect() as conn:
        nodes_before = conn.execute(sa.select(sa.func.count()).select_from(t.workflow_node_executions)).scalar()
    ctx = make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0)
    summary = run_job(reap_stuck_runs, ctx, params(batch_size=5))
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert (seeded.scheduled, seeded.running) == (14, 4)
    assert summary.tables == {"workflow_runs": 18}
    assert summary.details["scheduled"] == 14 and summary.details["running"] == 4
    assert summary.batches == 4 and summary.rows_remaining == 0  # 5 + 5 + 5 + 3
    assert sorted(summary.details["reaped_run_ids"]) == sorted(seeded.reaped)
    assert summary.details["scheduled_cutoff"] == SCHEDULED_CUT.isoformat()
    assert summary.details["running_cutoff"] == RUNNING_CUT.isoformat()
    assert_reaped_exactly(db_engine, seeded, before)
    assert "\u2014" in RUNNING_ERROR  # Dify's em dash
    with db_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.workflow_node_executions)).scalar() == nodes_before
    infos = ctx.reporter.infos  # type: ignore[attr-defined]
    assert any("Reaped zombie workflow runs: 14 scheduled, 4 running" in line for line in infos)
    again = run_job(reap_stuck_runs, make_context(db_url), params())
    assert again.tables == {"workflow_runs": 0} and again.details["scheduled"] == again.details["running"] == 0


def test_max_batches_is_partial_and_the_next_run_finishes(pg_engine: Engine, pg_url: str) -> None:
    seeded = seed(pg_engine, bulk=10)
    fixed = {"DIFYMAINT_TARGET_BATCH_MS": 0}
    first = run_job(reap_stuck_runs, make_context(pg_url, **fixed), params(batch_size=4, max_batches=2))
    assert first.outcome is Outcome.PARTIAL and first.exit_code == 4 and first.stop_reason == "max-batches"
    assert first.tables == {"workflow_runs": 8} and first.rows_remaining == len(seeded.reaped) - 8
    second = run_job(reap_stuck_runs, make_context(pg_url, **fixed), params(batch_size=4))
    assert second.outcome is Outcome.DONE and second.tables == {"workflow_runs": len(seeded.reaped) - 8}


def test_dry_run_counts_equal_the_real_run(db_engine: Engine, db_url: str) -> None:
    seeded = seed(db_engine, bulk=7)
    before = runs_by_id(db_engine)
    fixed = make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0)
    dry = run_job(reap_stuck_runs, fixed, params(dry_run=True, batch_size=4))
    assert runs_by_id(db_engine) == before  # nothing written
    real = run_job(reap_stuck_runs, make_context(db_url), params())
    assert dry.tables == real.tables == {"workflow_runs": len(seeded.reaped)}
    assert (dry.details["scheduled"], dry.details["running"]) == (real.details["scheduled"], real.details["running"])
    assert sorted(dry.details["reaped_run_ids"]) == sorted(real.details["reaped_run_ids"])
    assert dry.verb == "would update" and real.verb == "updated"


def test_longer_timeouts_move_both_cutoffs(pg_engine: Engine, pg_url: str) -> None:
    seeded = seed(pg_engine, edges=False)
    longer = ReapStuckRunsParams(scheduled_timeout_min=600, running_timeout_min=600)
    summary = run_job(reap_stuck_runs, make_context(pg_url), longer)
    assert summary.tables == {"workflow_runs": 0}  # nothing in the fixture is 10 hours old and stuck
    assert seeded.reaped


def test_a_run_a_worker_holds_is_skipped_and_reaped_next_time(db_engine: Engine, db_url: str) -> None:
    seeded = seed(db_engine, edges=False)
    held = seeded.names["running_no_nodes"]
    with db_engine.connect() as worker:  # a worker is writing this run right now
        transaction = worker.begin()
        worker.execute(sa.select(t.workflow_runs.c.id).where(t.workflow_runs.c.id == held).with_for_update())
        first = run_job(reap_stuck_runs, make_context(db_url), params())
        transaction.rollback()
    assert first.outcome is Outcome.DONE
    assert first.tables == {"workflow_runs": len(seeded.reaped) - 1}  # no wait on the lock, no failure
    assert runs_by_id(db_engine)[held].status == "running"
    second = run_job(reap_stuck_runs, make_context(db_url), params())
    assert second.tables == {"workflow_runs": 1} and second.details["reaped_run_ids"] == [held]


def test_node_activity_after_the_page_was_read_saves_the_run(
    db_engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The update re-checks the predicate with its own snapshot: a node a worker writes between the locked
    page read and the update keeps the run alive."""
    seeded = seed(db_engine, edges=False)
    revived = seeded.names["running_no_nodes"]
    original = reap_stuck_runs._Reaper.reap

    def reap_after_a_worker_wrote_a_node(self: Any, conn: sa.Connection, ids: list[str]) -> dict[str, int]:
        assert revived in ids  # the page still saw it as stuck
        with db_engine.begin() as worker:
            add_node(worker, revived, N, None)
        return original(self, conn, ids)

    monkeypatch.setattr(reap_stuck_runs._Reaper, "reap", reap_after_a_worker_wrote_a_node)
    summary = run_job(reap_stuck_runs, make_context(db_url), params())
    assert summary.tables == {"workflow_runs": len(seeded.reaped) - 1}
    assert runs_by_id(db_engine)[revived].status == "running"


def add_trigger_log(conn: sa.Connection, run_id: str | None, status: str) -> str:
    log_id = t.new_id()
    conn.execute(
        sa.insert(t.workflow_trigger_logs).values(
            id=log_id,
            tenant_id=t.new_id(),
            app_id=t.new_id(),
            workflow_id=t.new_id(),
            workflow_run_id=run_id,
            trigger_metadata="{}",
            trigger_type="trigger-webhook",
            trigger_data="{}",
            inputs="{}",
            status=status,
            queue_name="workflow",
            retry_count=0,
            created_by_role="end_user",
            created_by="someone",
        )
    )
    return log_id


def trigger_logs(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {str(row.id): row for row in conn.execute(sa.select(t.workflow_trigger_logs))}


def test_trigger_logs_only_on_request(db_engine: Engine, db_url: str) -> None:
    seeded = seed(db_engine, edges=False)
    stuck_scheduled, stuck_running = seeded.names["scheduled_long_ago"], seeded.names["running_no_nodes"]
    alive = seeded.names["running_recently"]
    with db_engine.begin() as conn:
        failing = {
            add_trigger_log(conn, stuck_scheduled, "queued"): SCHEDULED_ERROR,
            add_trigger_log(conn, stuck_running, "running"): RUNNING_ERROR,
        }
        untouched = {
            add_trigger_log(conn, stuck_running, "succeeded"),
            add_trigger_log(conn, stuck_running, "paused"),
            add_trigger_log(conn, alive, "running"),
            add_trigger_log(conn, None, "queued"),
        }
    before = trigger_logs(db_engine)
    plain = run_job(reap_stuck_runs, make_context(db_url), params(dry_run=True))
    assert plain.tables == {"workflow_runs": len(seeded.reaped)}  # Dify's behaviour: logs not even counted
    with_logs = ReapStuckRunsParams(include_trigger_logs=True, run=RunOptions(dry_run=True))
    dry = run_job(reap_stuck_runs, make_context(db_url), with_logs)
    real = run_job(reap_stuck_runs, make_context(db_url), ReapStuckRunsParams(include_trigger_logs=True))
    expected = {"workflow_runs": len(seeded.reaped), "workflow_trigger_logs": 2}
    assert dry.tables == real.tables == expected
    after = trigger_logs(db_engine)
    for log_id, error in failing.items():
        assert (after[log_id].status, after[log_id].error, after[log_id].finished_at) == ("failed", error, N)
    for log_id in untouched:
        assert after[log_id] == before[log_id]


def test_sqlite(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    seeded = seed(engine, bulk=5)
    before = runs_by_id(engine)
    fixed = {"DIFYMAINT_TARGET_BATCH_MS": 0}
    dry = run_job(reap_stuck_runs, make_context(sqlite_url, **fixed), params(dry_run=True, batch_size=3))
    real = run_job(reap_stuck_runs, make_context(sqlite_url, **fixed), params(batch_size=3))
    assert dry.tables == real.tables == {"workflow_runs": len(seeded.reaped)}
    assert_reaped_exactly(engine, seeded, before)
    engine.dispose()


# --- the command line ---------------------------------------------------------------------------------------


def test_cli_json_and_second_run(pg_engine: Engine, pg_url: str) -> None:
    seeded = seed(pg_engine, naive_utc(datetime.now(UTC)), bulk=3, edges=False)  # the command's clock is real
    base = ["reap-stuck-runs", "--database-url", pg_url, "--json"]
    dry_summary = json.loads(invoke_assert_code([*base, "--dry-run"], 0).stdout)
    assert dry_summary["tables"] == {"workflow_runs": len(seeded.reaped)}
    assert dry_summary["tables_meaning"] == "updated"
    refused = run_cli(base)  # a changing run without --yes, stdin not a terminal
    assert refused.returncode == 2 and "--yes" in refused.stderr
    summary = json.loads(invoke_assert_code([*base, "--yes"], 0).stdout)
    assert summary["tables"] == {"workflow_runs": len(seeded.reaped)} and summary["tables_meaning"] == "updated"
    counts = {"scheduled": seeded.scheduled, "running": seeded.running}
    assert {k: summary["details"][k] for k in counts} == {k: dry_summary["details"][k] for k in counts} == counts
    again = json.loads(invoke_assert_code([*base, "--yes"], 0).stdout)
    assert again["tables"] == {"workflow_runs": 0}


def test_scheduled_run_needs_the_switch_set(pg_engine: Engine, pg_url: str) -> None:
    seeded = seed(pg_engine, naive_utc(datetime.now(UTC)), edges=False)
    before = runs_by_id(pg_engine)
    args = ["reap-stuck-runs", "--scheduled", "--yes", "--json", "--database-url", pg_url]
    unset = json.loads(invoke_assert_code(args, 0).stdout)
    assert unset["outcome"] == "disabled" and "ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK" in unset["details"]["switch"]
    off = json.loads(invoke_assert_code(args, 0, env={"ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK": "false"}).stdout)
    assert off["outcome"] == "disabled"
    assert runs_by_id(pg_engine) == before
    on = json.loads(invoke_assert_code(args, 0, env={"ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK": "true"}).stdout)
    assert on["outcome"] == "done" and on["tables"] == {"workflow_runs": len(seeded.reaped)}
    seed(pg_engine, naive_utc(datetime.now(UTC)), edges=False)
    forced = json.loads(invoke_assert_code(args, 0, env={"DIFYMAINT_ENABLE_REAP_STUCK_RUNS": "true"}).stdout)
    assert forced["outcome"] == "done" and forced["tables"] == {"workflow_runs": len(seeded.reaped)}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES", "0"),
        ("ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES", "five"),
        ("ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES", "-3"),
        ("ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES", "2.5"),
    ],
)
def test_timeouts_are_positive_integers(name: str, value: str) -> None:
    # Refused while reading the settings: the database is never contacted.
    args = ["reap-stuck-runs", "--dry-run", "--database-url", UNREACHABLE_DB]
    result = invoke_assert_code(args, 2, env={name: value})
    lines = result.stderr.strip().splitlines()
    assert lines and name in lines[0] and "Traceback" not in result.stderr


def test_timeout_flag_below_one_is_a_usage_error() -> None:
    result = invoke_assert_code(
        ["reap-stuck-runs", "--dry-run", "--scheduled-timeout", "0", "--database-url", UNREACHABLE_DB], 2
    )
    assert "--scheduled-timeout" in result.stderr


def test_registry_and_help() -> None:
    info = JOBS["reap-stuck-runs"]
    assert (info.schedule, info.dify_switch, info.scheduled_args, info.verbs[0]) == (
        "* * * * *",
        "ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK",
        ("--lock-ttl=60",),
        "updated",
    )
    assert [switch.dify_default for switch in info.switches] == [False]  # unset = off (a branch-only task)
    out = invoke_assert_code(["reap-stuck-runs", "--help"], 0).stdout
    assert "--include-trigger-logs" in out and "--running-timeout" in out
