"""clean-messages against a real PostgreSQL (and SQLite): exactly the right rows, with every child table."""

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
from difymaint.dify.cascades import MESSAGE_CASCADE_TABLES
from difymaint.engine.options import RunOptions
from difymaint.jobs import clean_messages
from difymaint.jobs.clean_messages import CleanMessagesParams
from difymaint.jobs.execute import run_job
from tests.conftest import NOW, holding_db_lock, is_mysql_url, make_context, row_counts
from tests.scenario import (
    TENANTS,
    assert_cascade_consistent,
    remaining_messages,
    seed,
)

pytestmark = pytest.mark.postgres


def params(scenario: Any, **kwargs: Any) -> CleanMessagesParams:
    run = kwargs.pop("run", RunOptions(batch_size=3))
    return CleanMessagesParams(window=TimeWindow(end_before=scenario.cutoff), run=run, **kwargs)


def untouched_tables(engine: Any) -> dict[str, int]:
    return row_counts(
        engine,
        [
            "conversations",
            "pinned_conversations",
            "upload_files",
            "workflow_conversation_variables",
            "apps",
            "tenants",
        ],
    )


@pytest.mark.parametrize("strategy", ["global", "eligible-apps"])
def test_billing_off_deletes_every_old_message_with_children(db_engine: Any, db_url: str, strategy: str) -> None:
    scenario = seed(db_engine, NOW)
    before_all = remaining_messages(db_engine)
    others = untouched_tables(db_engine)
    summary = run_job(clean_messages, make_context(db_url), params(scenario, scan_strategy=strategy))
    expected_gone = scenario.all_old() if strategy == "global" else scenario.all_old() - set(scenario.ghost_old)
    assert remaining_messages(db_engine) == before_all - expected_gone
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert summary.tables["messages"] == len(expected_gone)
    for table in MESSAGE_CASCADE_TABLES[:-1]:
        assert summary.tables[table] == len(expected_gone), table
    assert_cascade_consistent(db_engine)
    assert untouched_tables(db_engine) == others  # conversations etc. are not part of the default run
    assert summary.rows_remaining == 0


def test_billing_plan_matrix(db_engine: Any, db_url: str, billing: Any) -> None:
    scenario = seed(db_engine, NOW)
    billing.state.plans = scenario.plans()
    billing.state.whitelist = scenario.whitelist()
    billing.state.expiration_as_string = True  # the API may send ints as strings
    before = remaining_messages(db_engine)
    ctx = make_context(db_url, BILLING_ENABLED=True, BILLING_API_URL=billing.url, BILLING_API_SECRET_KEY="test-secret")
    summary = run_job(clean_messages, ctx, params(scenario))
    assert remaining_messages(db_engine) == before - scenario.eligible_old()
    assert summary.details["strategy"] == "eligible-apps"
    assert summary.tables["messages"] == len(scenario.eligible_old())
    assert_cascade_consistent(db_engine)
    # paid tenants' apps were never scanned: no plan lookup asked for their messages' pages
    asked = {tid for call in billing.plan_calls() for tid in call}
    assert scenario.tenant_ids["sandbox_whitelisted"] not in asked  # whitelisted: never even looked up
    decisions = summary.details["tenant_decisions_skipped"]
    assert decisions["unknown_plan"] >= 1 and decisions["in_grace"] >= 1 and decisions["paid"] >= 2


def test_dry_run_counts_equal_real_run(db_engine: Any, db_url: str, billing: Any) -> None:
    scenario = seed(db_engine, NOW)
    billing.state.plans = scenario.plans()
    billing.state.whitelist = scenario.whitelist()
    settings = {
        "BILLING_ENABLED": True,
        "BILLING_API_URL": billing.url,
        "BILLING_API_SECRET_KEY": "test-secret",
    }
    before = row_counts(db_engine, list(MESSAGE_CASCADE_TABLES) + ["conversations"])
    dry = run_job(
        clean_messages,
        make_context(db_url, **settings),
        params(scenario, run=RunOptions(dry_run=True, batch_size=2), clean_conversations=True),
    )
    assert row_counts(db_engine, list(MESSAGE_CASCADE_TABLES) + ["conversations"]) == before  # nothing written
    real = run_job(
        clean_messages,
        make_context(db_url, **settings),
        params(scenario, run=RunOptions(batch_size=5), clean_conversations=True),
    )
    assert dry.tables == real.tables
    assert real.tables["conversations"] >= 1  # the fully-expired conversations of eligible tenants
    assert dry.dry_run and not real.dry_run


def test_clean_conversations_only_removes_empty_old_ones(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    summary = run_job(clean_messages, make_context(db_url), params(scenario, clean_conversations=True))
    with db_engine.connect() as conn:
        left = {str(r[0]) for r in conn.execute(sa.select(t.conversations.c.id))}
        pins = conn.execute(sa.select(sa.func.count()).select_from(t.pinned_conversations)).scalar_one()
        variables = conn.execute(sa.select(sa.func.count()).select_from(t.workflow_conversation_variables)).scalar_one()
        orphaned = conn.execute(
            sa.select(sa.func.count())
            .select_from(t.messages)
            .where(~t.messages.c.conversation_id.in_(sa.select(t.conversations.c.id)))
        ).scalar_one()
    # every tenant's all-old conversation (and the deleted app's) went; the mixed ones stay
    assert not set(scenario.conversations.values()) & left
    assert summary.tables["conversations"] == len(TENANTS) + 1
    assert pins == 0 and variables == 0
    assert orphaned == 0  # no remaining message lost its conversation


def test_tenant_filter_limits_the_run(pg_engine: Any, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    target = scenario.tenant_ids["professional"]
    before = remaining_messages(pg_engine)
    summary = run_job(clean_messages, make_context(pg_url), params(scenario, tenant_ids=(target,)))
    assert remaining_messages(pg_engine) == before - set(scenario.old["professional"])
    assert summary.details["strategy"] == "eligible-apps"


def test_whitelist_failure_fails_closed(pg_engine: Any, pg_url: str, billing: Any) -> None:
    scenario = seed(pg_engine, NOW)
    billing.state.fail_whitelist = 500
    before = remaining_messages(pg_engine)
    ctx = make_context(pg_url, BILLING_ENABLED=True, BILLING_API_URL=billing.url, BILLING_API_SECRET_KEY="test-secret")
    with pytest.raises(BillingUnavailable):
        run_job(clean_messages, ctx, params(scenario))
    assert remaining_messages(pg_engine) == before


def test_plan_lookup_failure_deletes_nothing(pg_engine: Any, pg_url: str, billing: Any) -> None:
    scenario = seed(pg_engine, NOW)
    billing.state.fail_plans = 503
    before = remaining_messages(pg_engine)
    ctx = make_context(pg_url, BILLING_ENABLED=True, BILLING_API_URL=billing.url, BILLING_API_SECRET_KEY="test-secret")
    summary = run_job(clean_messages, ctx, params(scenario))
    assert remaining_messages(pg_engine) == before
    assert summary.details["failed_plan_chunks"] >= 1


def test_wrong_billing_secret_is_unavailable_not_empty(pg_engine: Any, pg_url: str, billing: Any) -> None:
    scenario = seed(pg_engine, NOW)
    ctx = make_context(pg_url, BILLING_ENABLED=True, BILLING_API_URL=billing.url, BILLING_API_SECRET_KEY="wrong")
    with pytest.raises(BillingUnavailable, match="401"):
        run_job(clean_messages, ctx, params(scenario))


def test_plan_cache_uses_difys_keys(pg_engine: Any, pg_url: str, billing: Any, redis_url: str) -> None:
    import redis

    scenario = seed(pg_engine, NOW)
    billing.state.plans = scenario.plans()
    settings = {
        "BILLING_ENABLED": True,
        "BILLING_API_URL": billing.url,
        "BILLING_API_SECRET_KEY": "test-secret",
        "DIFYMAINT_USE_REDIS": True,
        "DIFYMAINT_REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": "dify",
    }
    run_job(clean_messages, make_context(pg_url, **settings), params(scenario, run=RunOptions(dry_run=True)))
    client = redis.Redis.from_url(redis_url)
    tid = scenario.tenant_ids["professional"]
    # Dify reads and writes tenant_plan:* with raw MGET/pipeline: never prefixed.
    raw = client.get(f"tenant_plan:{tid}")
    assert raw is not None and json.loads(raw) == {"plan": "professional", "expiration_date": -1}
    assert 590 <= client.ttl(f"tenant_plan:{tid}") <= 600
    assert client.get(f"dify:tenant_plan:{tid}") is None
    lookups_before = len(billing.plan_calls())
    run_job(clean_messages, make_context(pg_url, **settings), params(scenario, run=RunOptions(dry_run=True)))
    app_page_lookups = [call for call in billing.plan_calls()[lookups_before:] if tid in call]
    assert not app_page_lookups  # the second run read the professional tenant's plan from the cache


@pytest.mark.parametrize("prefix", ["", "dify"])
def test_held_lock_skips(db_engine: Any, db_url: str, redis_url: str, prefix: str) -> None:
    import redis

    scenario = seed(db_engine, NOW)
    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:retention:clean_messages" if prefix else "retention:clean_messages"
    dify_lock = client.lock(key, timeout=60, blocking=False)  # what Dify's beat takes
    assert dify_lock.acquire()
    before = remaining_messages(db_engine)
    ctx = make_context(db_url, DIFYMAINT_USE_REDIS=True, DIFYMAINT_REDIS_URL=redis_url, REDIS_KEY_PREFIX=prefix)
    client.pexpire(key, 42_000)  # the holder's lease, unlike ours (60 s, DIFYMAINT_LOCK_TTL's default)
    with pytest.raises(LockHeld) as held:
        run_job(clean_messages, ctx, params(scenario))
    # Names the holder's lease left, not the waiting run's configured one (issue 13 item 9).
    assert "lease ends in 42s" in held.value.message or "lease ends in 41s" in held.value.message, held.value.message
    assert "lease 60s" not in held.value.message and "renewed every" not in held.value.message
    assert remaining_messages(db_engine) == before
    dify_lock.release()
    summary = run_job(clean_messages, ctx, params(scenario))
    assert summary.outcome is Outcome.DONE
    assert client.get(key) is None  # released after the run


def test_database_lock_without_redis(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    with holding_db_lock(db_engine, "retention:clean_messages"), pytest.raises(LockHeld):
        run_job(clean_messages, make_context(db_url), params(scenario))
    assert run_job(clean_messages, make_context(db_url), params(scenario)).outcome is Outcome.DONE


def test_max_batches_is_partial_and_resumable(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    total_old = len(scenario.all_old())
    first = run_job(
        clean_messages,
        make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0),
        params(scenario, run=RunOptions(batch_size=4, max_batches=2)),
    )
    assert first.outcome is Outcome.PARTIAL and first.exit_code == 4 and first.stop_reason == "max-batches"
    assert first.tables["messages"] == 8
    assert first.rows_remaining == total_old - 8
    assert_cascade_consistent(db_engine)
    second = run_job(clean_messages, make_context(db_url), params(scenario))
    assert second.outcome is Outcome.DONE and second.tables["messages"] == total_old - 8


def test_orphan_manifest_lists_files_only_those_messages_used(db_engine: Any, db_url: str, tmp_path: Path) -> None:
    scenario = seed(db_engine, NOW)
    manifest = tmp_path / "orphans.jsonl"
    summary = run_job(clean_messages, make_context(db_url), params(scenario, orphan_manifest=manifest))
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(lines) == len(TENANTS) == summary.details["orphan_manifest"]["files"]
    assert all(line["key"].startswith("upload_files/") and not line["dry_run"] for line in lines)
    assert row_counts(db_engine, ["upload_files"])["upload_files"] == len(TENANTS)  # rows kept, only listed


def test_sqlite_demo_database_works_the_same(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    scenario = seed(engine, NOW)
    before = remaining_messages(engine)
    dry = run_job(
        clean_messages, make_context(sqlite_url), params(scenario, run=RunOptions(dry_run=True, batch_size=2))
    )
    real = run_job(clean_messages, make_context(sqlite_url), params(scenario))
    assert dry.tables == real.tables
    assert remaining_messages(engine) == before - scenario.all_old()
    assert_cascade_consistent(engine)


def test_wal_bytes_vacuum_and_long_transaction_warning(db_engine: Any, db_url: str) -> None:
    scenario = seed(db_engine, NOW)
    mysql = is_mysql_url(db_url)
    with db_engine.connect() as idle:
        # An open transaction with a snapshot: blocks vacuum (PostgreSQL) or InnoDB's purge (MariaDB).
        idle.execute(sa.text("SELECT 1 FROM messages LIMIT 1" if mysql else "SELECT txid_current()"))
        ctx = make_context(db_url, DIFYMAINT_LONG_TRANSACTION_WARN_S=0)
        summary = run_job(clean_messages, ctx, params(scenario, run=RunOptions(batch_size=50, vacuum_analyze=True)))
        idle.rollback()
    assert summary.details["wal_bytes"] > 0  # InnoDB redo bytes on MariaDB
    assert set(summary.details["vacuum_analyze_s"]) == {name for name, rows in summary.tables.items() if rows}
    consequence = "keeps InnoDB's purge from removing" if mysql else "keeps vacuum from reclaiming"
    assert any(consequence in warning for warning in summary.warnings)


def test_older_dify_without_optional_tables(pg_engine: Any, pg_url: str) -> None:
    """A Dify without pinned_conversations / app_annotation_hit_histories: skipped with a warning, no crash."""
    scenario = seed(pg_engine, NOW)
    with pg_engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE pinned_conversations"))
        conn.execute(sa.text("DROP TABLE app_annotation_hit_histories"))
    summary = run_job(clean_messages, make_context(pg_url), params(scenario, clean_conversations=True))
    assert summary.outcome is Outcome.DONE
    assert "pinned_conversations" not in summary.tables and "app_annotation_hit_histories" not in summary.tables
    assert summary.tables["conversations"] == len(TENANTS) + 1
    assert any("pinned_conversations does not exist" in warning for warning in summary.warnings)


def test_missing_required_table_is_one_clear_error(pg_engine: Any, pg_url: str) -> None:
    from difymaint.core.errors import SchemaMismatch

    scenario = seed(pg_engine, NOW)
    with pg_engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE messages RENAME COLUMN app_id TO application_id"))
    with pytest.raises(SchemaMismatch, match="messages lacks column\\(s\\) app_id"):
        run_job(clean_messages, make_context(pg_url), params(scenario))


def test_progress_total_counts_messages(pg_engine: Any, pg_url: str) -> None:
    """The progress line's running total is messages deleted, not the first child table's rows (issue 13
    item 9): without any feedback rows it used to say 0 all along."""
    scenario = seed(pg_engine, NOW)
    with pg_engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM message_feedbacks"))
    ctx = make_context(pg_url, DIFYMAINT_TARGET_BATCH_MS=0)
    summary = run_job(clean_messages, ctx, params(scenario))
    progress = ctx.reporter.batches  # type: ignore[attr-defined]
    assert len(progress) > 1 and summary.tables["message_feedbacks"] == 0
    assert progress[-1].total_affected == summary.tables["messages"] == len(scenario.all_old())
    assert [p.total_affected for p in progress] == sorted(p.total_affected for p in progress)
    assert next(iter(summary.tables)) == "messages"  # listed first in the summary too
