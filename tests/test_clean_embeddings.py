"""clean-embeddings against a real PostgreSQL (and SQLite): old cache rows go in keyset batches, nothing else."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.clock import naive_utc
from difymaint.core.summary import Outcome
from difymaint.core.window import TimeWindow, resolve_window
from difymaint.dify import tables as t
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, clean_embeddings
from difymaint.jobs.clean_embeddings import CleanEmbeddingsParams
from difymaint.jobs.execute import run_job
from tests.conftest import NOW, make_context
from tests.test_cli import invoke_assert_code, run_cli

pytestmark = pytest.mark.postgres

CUTOFF = naive_utc(NOW) - timedelta(days=30)


def seed(engine: Engine, now: datetime, *, old: int = 130, new: int = 15, edges: bool = True) -> dict[str, set[str]]:
    """``old`` rows before the cut-off (many sharing one timestamp, so the cursor must break ties on id),
    one exactly at the cut-off, one a microsecond before it, and ``new`` younger rows. ``edges=False``
    moves those two a day away from the cut-off (for a subprocess whose clock runs a little later)."""
    cutoff = naive_utc(now) - timedelta(days=30)
    margin = timedelta(microseconds=1) if edges else timedelta(days=1)
    rows: list[dict[str, Any]] = []
    groups: dict[str, set[str]] = {"old": set(), "new": set()}

    def add(group: str, created_at: datetime, model: str = "text-embedding-3-small") -> None:
        row_id = t.new_id()
        rows.append(
            {
                "id": row_id,
                "hash": f"{len(rows):064x}",
                "embedding": b"\x80\x04" + bytes(64),
                "model_name": model,
                "provider_name": "openai",
                "created_at": created_at,
            }
        )
        groups[group].add(row_id)

    for i in range(old - 1):
        # a third share one timestamp; the rest spread over a year before the cut-off
        add("old", cutoff - timedelta(days=90) if i % 3 == 0 else cutoff - timedelta(days=1 + i, minutes=i))
    add("old", cutoff - margin)
    add("new", cutoff if edges else cutoff + margin)  # exactly at the cut-off: kept (created_at < cut-off goes)
    for i in range(new - 1):
        add("new", cutoff + timedelta(hours=1 + i), model="text-embedding-ada-002")
    with engine.begin() as conn:
        conn.execute(sa.insert(t.embeddings), rows)
    return groups


def remaining(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(row[0]) for row in conn.execute(sa.select(t.embeddings.c.id))}


def params(**run: Any) -> CleanEmbeddingsParams:
    return CleanEmbeddingsParams(window=TimeWindow(end_before=CUTOFF), run=RunOptions(**run))


def test_deletes_rows_before_the_cutoff_in_several_batches(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW)
    ctx = make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0)  # fixed size: the batch count is exact
    summary = run_job(clean_embeddings, ctx, params(batch_size=40))
    assert remaining(db_engine) == groups["new"]
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert summary.tables == {"embeddings": 130}
    assert summary.batches == 4  # 40 + 40 + 40 + 10: the short last page ends the run
    assert summary.scanned == 130 and summary.rows_remaining == 0
    assert [batch.affected for batch in ctx.reporter.batches] == [40, 40, 40, 10]  # type: ignore[attr-defined]
    assert summary.window["end_before"] == CUTOFF.isoformat()


def test_dry_run_counts_equal_real_deletions(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW)
    before = remaining(db_engine)
    dry = run_job(clean_embeddings, make_context(db_url), params(dry_run=True, batch_size=25))
    assert remaining(db_engine) == before  # nothing written
    assert dry.dry_run and dry.batches == 1  # set-based on PostgreSQL: one count, not a walk
    # Bounded by --max-batches, the dry run walks the batches instead; the counts are the same.
    walked = run_job(clean_embeddings, make_context(db_url), params(dry_run=True, batch_size=25, max_batches=1000))
    assert walked.batches > 1 and remaining(db_engine) == before
    real = run_job(clean_embeddings, make_context(db_url), params(batch_size=60))
    assert dry.tables == walked.tables == real.tables == {"embeddings": len(groups["old"])}
    assert remaining(db_engine) == groups["new"]


def test_max_batches_is_partial_and_the_next_run_finishes(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW)
    ctx = make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0)
    first = run_job(clean_embeddings, ctx, params(batch_size=30, max_batches=2))
    assert first.outcome is Outcome.PARTIAL and first.exit_code == 4 and first.stop_reason == "max-batches"
    assert first.tables["embeddings"] == 60
    assert first.rows_remaining == 70
    assert len(remaining(db_engine) - groups["new"]) == 70
    second = run_job(clean_embeddings, make_context(db_url), params(batch_size=1000))
    assert second.outcome is Outcome.DONE and second.tables["embeddings"] == 70
    assert remaining(db_engine) == groups["new"]


def test_absolute_window_only_touches_rows_inside(pg_engine: Engine, pg_url: str) -> None:
    seed(pg_engine, NOW)
    window = resolve_window(
        NOW,
        default_days=30,
        start_from=(CUTOFF - timedelta(days=20)).isoformat(),
        end_before=(CUTOFF - timedelta(days=10)).isoformat(),
    )
    e = t.embeddings
    inside = sa.and_(e.c.created_at >= window.start_from, e.c.created_at < window.end_before)
    with pg_engine.connect() as conn:
        expected = conn.execute(sa.select(sa.func.count()).select_from(e).where(inside)).scalar_one()
        total = conn.execute(sa.select(sa.func.count()).select_from(e)).scalar_one()
    assert expected > 0
    summary = run_job(clean_embeddings, make_context(pg_url), CleanEmbeddingsParams(window=window))
    assert summary.tables["embeddings"] == expected
    with pg_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(e).where(inside)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(e)).scalar_one() == total - expected


def test_a_locked_row_rolls_the_batch_back_and_it_is_retried(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW, old=40, new=3)
    victim = sorted(groups["old"])[0]
    holding = threading.Event()
    ctx = make_context(db_url, DIFYMAINT_LOCK_TIMEOUT=1)
    warnings: list[str] = ctx.reporter.warnings  # type: ignore[attr-defined]

    def hold_row_lock() -> None:
        with db_engine.begin() as conn:
            conn.execute(sa.select(t.embeddings.c.id).where(t.embeddings.c.id == victim).with_for_update())
            holding.set()
            # Until the run's first batch has hit the 1 s lock timeout (however slow a loaded machine starts
            # the run), then no longer than five retries would last.
            deadline = time.monotonic() + 30
            while not any("rolled back" in w for w in warnings) and time.monotonic() < deadline:
                time.sleep(0.05)

    holder = threading.Thread(target=hold_row_lock)
    holder.start()
    assert holding.wait(10)
    summary = run_job(clean_embeddings, ctx, params(batch_size=1000))
    holder.join()
    assert summary.outcome is Outcome.DONE and summary.tables["embeddings"] == 40
    assert remaining(db_engine) == groups["new"]
    assert any("rolled back" in warning for warning in ctx.reporter.warnings)  # type: ignore[attr-defined]


def test_cli_json_summary_and_partial_exit(pg_engine: Engine, pg_url: str) -> None:
    groups = seed(pg_engine, datetime.now(UTC), edges=False)  # the subprocess uses the real clock
    base = ["clean-embeddings", "--database-url", pg_url, "--json", "--days", "30", "--batch-size", "50"]
    dry = run_cli([*base, "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    dry_summary = json.loads(dry.stdout)
    assert dry_summary["dry_run"] and dry_summary["tables"] == {"embeddings": 130}
    partial = run_cli([*base, "--yes", "--max-batches", "1"])
    assert partial.returncode == 4, partial.stderr
    summary = json.loads(partial.stdout)
    assert summary["outcome"] == "partial" and summary["stop_reason"] == "max-batches"
    assert summary["tables"] == {"embeddings": 50} and summary["rows_remaining"] == 80
    done = run_cli([*base, "--yes"])
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["job"] == "clean-embeddings" and summary["outcome"] == "done"
    assert summary["tables"] == {"embeddings": 80} and summary["rows_remaining"] == 0
    assert remaining(pg_engine) == groups["new"]


def test_cli_refuses_days_with_another_window(sqlite_url: str) -> None:
    result = run_cli(["clean-embeddings", "--database-url", sqlite_url, "--days", "3", "--from-days-ago", "9"])
    assert result.returncode == 2
    assert "--days cannot be combined" in result.stderr


def test_registry_and_help() -> None:
    info = JOBS["clean-embeddings"]
    assert (info.module, info.schedule, info.dify_task, info.dify_switch, info.lock_key) == (
        "clean_embeddings",
        "0 2 * * *",
        "clean_embedding_cache_task",
        "ENABLE_CLEAN_EMBEDDING_CACHE_TASK",
        "maintenance:clean_embeddings",
    )
    assert info.load() is clean_embeddings
    out = invoke_assert_code(["clean-embeddings", "--help"], 0).stdout
    assert "clean_embedding_cache_task" in out and "--dry-run" in out


def test_sqlite(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    groups = seed(engine, NOW, old=30, new=5)
    fixed = {"DIFYMAINT_TARGET_BATCH_MS": 0}
    dry = run_job(clean_embeddings, make_context(sqlite_url, **fixed), params(dry_run=True, batch_size=7))
    real = run_job(clean_embeddings, make_context(sqlite_url, **fixed), params(batch_size=7))
    assert dry.tables == real.tables == {"embeddings": 30}
    assert real.batches == 5 and real.outcome is Outcome.DONE
    assert remaining(engine) == groups["new"]
    engine.dispose()
