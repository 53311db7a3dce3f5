"""clean-dataset-queries against a real PostgreSQL and Redis (and SQLite): Dify's cut-off with its clamp, Dify's
lock, the switch, the settings' range and the created_at index. The cut-off, the dry run and the workers run
on MariaDB too, and its sweep without the index."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.clock import naive_utc
from difymaint.core.errors import LockHeld
from difymaint.core.exit_codes import ExitCode
from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, clean_dataset_queries
from difymaint.jobs.clean_dataset_queries import CleanDatasetQueriesParams
from difymaint.jobs.execute import run_job
from tests.conftest import NOW, make_context
from tests.test_cli import invoke_assert_code, run_cli

pytestmark = pytest.mark.postgres

DAY = timedelta(days=1)
LOCK = "retention:clean_dataset_queries_task"
SOURCES = ("app", "hit_testing", "plugin")


def seed(engine: Engine, now: datetime, *, old: int = 40, edges: bool = True) -> dict[str, set[str]]:
    """Queries of several workspaces' datasets and every source: ``old`` beyond 60 days (many sharing one
    timestamp), one exactly at the 60-day cut-off and one a microsecond before it, and younger rows at 20,
    45 and 59 days (kept at 60 days; the 45- and 59-day ones go at 30). ``edges=False`` moves the two edge
    rows a day away (a subprocess's clock runs on)."""
    cut = naive_utc(now) - 60 * DAY
    margin = timedelta(microseconds=1) if edges else DAY
    groups: dict[str, set[str]] = {"old": set(), "new": set(), "between_30_and_60": set(), "young": set()}
    rows: list[dict[str, Any]] = []

    def add(group: str, created_at: datetime) -> None:
        row_id = t.new_id()
        rows.append(
            {
                "id": row_id,
                "dataset_id": t.new_id(),
                "content": f"what is {len(rows)}?",
                "source": SOURCES[len(rows) % 3],
                "source_app_id": t.new_id() if len(rows) % 2 else None,
                "created_by_role": "account" if len(rows) % 2 else "end_user",
                "created_by": t.new_id(),
                "created_at": created_at,
            }
        )
        groups[group].add(row_id)

    for i in range(old - 1):
        add("old", cut - 30 * DAY if i % 4 == 0 else cut - timedelta(days=1 + i, minutes=i))
    add("old", cut - margin)
    add("new", cut if edges else cut + margin)  # exactly at the cut-off: kept (created_at < cut-off goes)
    add("new", naive_utc(now) - 20 * DAY)
    groups["young"] = {rows[-1]["id"]}
    for days in (45, 59):
        add("between_30_and_60", naive_utc(now) - days * DAY)
    with engine.begin() as conn:
        conn.execute(sa.insert(t.dataset_queries), rows)
    return groups


def remaining(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(row[0]) for row in conn.execute(sa.select(t.dataset_queries.c.id))}


def params(retention_days: int = 60, floor_days: int = 30, **run: Any) -> CleanDatasetQueriesParams:
    return CleanDatasetQueriesParams(retention_days=retention_days, floor_days=floor_days, run=RunOptions(**run))


def test_deletes_before_the_cutoff_in_batches_then_nothing(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW)
    ctx = make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0)
    summary = run_job(clean_dataset_queries, ctx, params(batch_size=15))
    assert remaining(db_engine) == groups["new"] | groups["between_30_and_60"]
    assert summary.outcome is Outcome.DONE and summary.tables == {"dataset_queries": 40}
    assert summary.batches == 3 and summary.rows_remaining == 0  # 15 + 15 + 10
    assert summary.details["retention_days"] == 60 and summary.window["label"] == "before-60"
    assert summary.window["end_before"] == (naive_utc(NOW) - 60 * DAY).isoformat()
    assert not summary.warnings
    again = run_job(clean_dataset_queries, make_context(db_url), params())
    assert again.tables == {"dataset_queries": 0}


def test_retention_below_plan_sandbox_days_is_clamped_with_a_warning(pg_engine: Engine, pg_url: str) -> None:
    groups = seed(pg_engine, NOW)
    ctx = make_context(pg_url)
    summary = run_job(clean_dataset_queries, ctx, params(retention_days=10, floor_days=30))
    # 30 days, not 10: the 20-day-old query stays (clean-unused-datasets still reads it).
    assert remaining(pg_engine) == groups["young"]
    assert summary.tables == {"dataset_queries": 43} and summary.details["retention_days"] == 30
    (warning,) = summary.warnings
    assert "CLEAN_DATASET_QUERIES_RETENTION_DAYS (10) < PLAN_SANDBOX_CLEAN_DAY_SETTING (30)" in warning
    assert "clamping to 30" in warning
    assert warning in ctx.reporter.warnings  # type: ignore[attr-defined]


def test_dry_run_counts_equal_the_real_run(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW)
    before = remaining(db_engine)
    dry = run_job(clean_dataset_queries, make_context(db_url), params(dry_run=True))
    walked = run_job(clean_dataset_queries, make_context(db_url), params(dry_run=True, batch_size=9, max_batches=99))
    assert remaining(db_engine) == before
    real = run_job(clean_dataset_queries, make_context(db_url), params(batch_size=9))
    assert dry.tables == walked.tables == real.tables == {"dataset_queries": len(groups["old"])}


def test_workers_delete_the_same_rows(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW, old=120)
    summary = run_job(clean_dataset_queries, make_context(db_url), params(batch_size=10, workers=3))
    assert summary.outcome is Outcome.DONE and summary.tables == {"dataset_queries": 120}
    assert remaining(db_engine) == groups["new"] | groups["between_30_and_60"]


@pytest.mark.redis
@pytest.mark.parametrize("prefix", ["", "dify"])
def test_difys_lock_held_is_exit_5_and_nothing_is_deleted(
    pg_engine: Engine, pg_url: str, redis_url: str, prefix: str
) -> None:
    import redis

    seed(pg_engine, NOW)
    before = remaining(pg_engine)
    client = redis.Redis.from_url(redis_url)
    dify_lock = client.lock(f"{prefix}:{LOCK}" if prefix else LOCK, timeout=3600, blocking=False)  # Dify's task
    assert dify_lock.acquire()
    try:
        ctx = make_context(pg_url, DIFYMAINT_USE_REDIS=True, DIFYMAINT_REDIS_URL=redis_url, REDIS_KEY_PREFIX=prefix)
        with pytest.raises(LockHeld):
            run_job(clean_dataset_queries, ctx, params())
        env = {"DIFYMAINT_REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix}
        result = invoke_assert_code(
            ["clean-dataset-queries", "--yes", "--json", "--database-url", pg_url], ExitCode.SKIPPED_LOCKED, env=env
        )
        assert json.loads(result.stdout)["outcome"] == "skipped_locked"
        assert remaining(pg_engine) == before
    finally:
        dify_lock.release()
    assert run_job(clean_dataset_queries, ctx, params()).tables == {"dataset_queries": 40}


def test_without_the_created_at_index_the_heap_is_walked_once_by_blocks(pg_engine: Engine, pg_url: str) -> None:
    with pg_engine.begin() as conn:  # released Dify: no index on created_at
        conn.execute(sa.text("DROP INDEX dataset_query_created_at_idx"))
    groups = seed(pg_engine, NOW, old=600)
    before = remaining(pg_engine)
    fixed = {"DIFYMAINT_TARGET_BATCH_MS": 0}
    dry = run_job(clean_dataset_queries, make_context(pg_url, **fixed), params(dry_run=True))
    walked = run_job(clean_dataset_queries, make_context(pg_url, **fixed), params(dry_run=True, max_batches=999))
    assert remaining(pg_engine) == before
    partial = run_job(clean_dataset_queries, make_context(pg_url, **fixed), params(batch_size=2, max_batches=1))
    assert partial.outcome is Outcome.PARTIAL and 0 < partial.tables["dataset_queries"] < 600
    assert partial.rows_remaining == 600 - partial.tables["dataset_queries"]
    ctx = make_context(pg_url, **fixed)
    real = run_job(clean_dataset_queries, ctx, params(batch_size=2))  # two 8 KB blocks per batch
    blocks = real.details["block_walk"]["blocks"]
    assert blocks > 4 and real.batches == (blocks + 1) // 2
    assert dry.tables == walked.tables == {"dataset_queries": 600}
    assert real.tables["dataset_queries"] + partial.tables["dataset_queries"] == 600
    assert remaining(pg_engine) == groups["new"] | groups["between_30_and_60"]
    assert any("dataset_queries.created_at" in warning for warning in real.warnings)


@pytest.mark.mysql
def test_without_the_created_at_index_mysql_sweeps_by_keyset(mysql_url: str) -> None:
    """No row address to range over on MySQL: the keyset sweep runs unindexed, with the same counts."""
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX dataset_query_created_at_idx ON dataset_queries"))
    groups = seed(engine, NOW, old=60)
    fixed = {"DIFYMAINT_TARGET_BATCH_MS": 0}
    dry = run_job(clean_dataset_queries, make_context(mysql_url, **fixed), params(dry_run=True))
    real = run_job(clean_dataset_queries, make_context(mysql_url, **fixed), params(batch_size=25))
    assert dry.tables == real.tables == {"dataset_queries": 60} and real.batches == 3
    assert "block_walk" not in real.details
    assert any("dataset_queries.created_at: every batch scans the table" in w for w in real.warnings)
    assert remaining(engine) == groups["new"] | groups["between_30_and_60"]
    engine.dispose()


def test_cli_json_switch_and_settings(pg_engine: Engine, pg_url: str) -> None:
    groups = seed(pg_engine, datetime.now(UTC), edges=False)
    base = ["clean-dataset-queries", "--database-url", pg_url, "--json"]
    disabled = json.loads(invoke_assert_code([*base, "--scheduled", "--yes"], 0).stdout)
    assert disabled["outcome"] == "disabled" and "ENABLE_CLEAN_DATASET_QUERIES_TASK" in disabled["details"]["switch"]
    dry = json.loads(invoke_assert_code([*base, "--dry-run"], 0).stdout)
    assert dry["tables"] == {"dataset_queries": len(groups["old"])} and dry["tables_meaning"] == "deleted"
    refused = run_cli(base)  # stdin not a terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    on = {
        "ENABLE_CLEAN_DATASET_QUERIES_TASK": "true",
        "CLEAN_DATASET_QUERIES_BATCH_SIZE": "7",
        "DIFYMAINT_TARGET_BATCH_MS": "0",  # a fixed size: the batch count is exact
    }
    done = json.loads(invoke_assert_code([*base, "--scheduled", "--yes"], 0, env=on).stdout)
    assert done["outcome"] == "done" and done["tables"] == {"dataset_queries": len(groups["old"])}
    assert done["batches"] == 6  # 40 rows, 7 at a time
    assert remaining(pg_engine) == groups["new"] | groups["between_30_and_60"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLEAN_DATASET_QUERIES_RETENTION_DAYS", "0"),
        ("CLEAN_DATASET_QUERIES_RETENTION_DAYS", "sixty"),
        ("CLEAN_DATASET_QUERIES_BATCH_SIZE", "-5"),
        ("CLEAN_DATASET_QUERIES_BATCH_SIZE", "0"),
    ],
)
def test_settings_are_positive_integers(name: str, value: str) -> None:
    args = ["clean-dataset-queries", "--dry-run", "--database-url", "postgresql://nobody@127.0.0.1:1/nothing"]
    result = invoke_assert_code(args, 2, env={name: value})
    lines = result.stderr.strip().splitlines()
    assert lines and name in lines[0] and "Traceback" not in result.stderr


def test_registry_and_help() -> None:
    info = JOBS["clean-dataset-queries"]
    assert (info.schedule, info.dify_switch, info.lock_key) == (
        "0 5 * * *",
        "ENABLE_CLEAN_DATASET_QUERIES_TASK",
        LOCK,
    )
    assert [switch.dify_default for switch in info.switches] == [False]
    out = invoke_assert_code(["clean-dataset-queries", "--help"], 0).stdout
    assert "--workers" in out and "--days" in out


def test_sqlite(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    groups = seed(engine, NOW, old=12)
    fixed = {"DIFYMAINT_TARGET_BATCH_MS": 0}
    dry = run_job(clean_dataset_queries, make_context(sqlite_url, **fixed), params(dry_run=True, batch_size=5))
    real = run_job(clean_dataset_queries, make_context(sqlite_url, **fixed), params(batch_size=5))
    assert dry.tables == real.tables == {"dataset_queries": 12}
    assert real.batches == 3
    assert remaining(engine) == groups["new"] | groups["between_30_and_60"]
    engine.dispose()
