"""Unit tests of the shared core: windows, batch sizing, key names, plans, settings precedence, exit codes."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from difymaint.core.errors import ConfigError, UsageError
from difymaint.core.exit_codes import ExitCode
from difymaint.core.redis_client import KeyNamer
from difymaint.core.settings import load_settings
from difymaint.core.summary import Outcome, RunSummary
from difymaint.core.window import TimeWindow, resolve_window
from difymaint.dify.billing import SandboxExpiryPolicy, StaticPlanFile, TenantPlan, TenantPlanCache
from difymaint.engine.options import RunOptions
from difymaint.engine.pacing import pause_s
from difymaint.engine.run import AdaptiveBatchSize
from difymaint.jobs import clean_messages
from difymaint.jobs.clean_messages import CleanMessagesParams
from difymaint.jobs.execute import run_job
from tests.conftest import NOW, FixedClock, make_context
from tests.scenario import assert_cascade_consistent, remaining_messages, seed

NAIVE_NOW = NOW.replace(tzinfo=None)


def test_window_forms() -> None:
    assert resolve_window(NOW, default_days=30).end_before == NAIVE_NOW - timedelta(days=30)
    assert resolve_window(NOW, default_days=30, days=7).label == "before-7"
    rel = resolve_window(NOW, default_days=30, from_days_ago=60, to_days_ago=30)
    assert (rel.start_from, rel.end_before) == (NAIVE_NOW - timedelta(days=60), NAIVE_NOW - timedelta(days=30))
    absolute = resolve_window(NOW, default_days=30, start_from="2026-01-01", end_before="2026-02-01T12:00:00")
    assert absolute.start_from is not None and absolute.end_before.hour == 12


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_from": "2026-01-01"},
        {"from_days_ago": 10},
        {"from_days_ago": 10, "to_days_ago": 20},
        {"days": 5, "end_before": "2026-01-01"},
        {"start_from": "2026-02-01", "end_before": "2026-01-01"},
        {"end_before": "not a date"},
        {"end_before": "2027-01-01"},
    ],
)
def test_window_misuse_is_a_usage_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        resolve_window(NOW, default_days=30, **kwargs)


@given(
    initial=st.integers(1, 20000),
    timings=st.lists(st.floats(min_value=0.0001, max_value=30), max_size=40),
    maximum=st.integers(1, 50000),
)
def test_adaptive_batch_size_stays_in_bounds(initial: int, timings: list[float], maximum: int) -> None:
    sizer = AdaptiveBatchSize(initial, target_s=0.3, maximum=maximum)
    for seconds in timings:
        before = sizer.size
        sizer.observe(seconds, rows=sizer.size)
        assert sizer.minimum <= sizer.size <= sizer.maximum
        assert sizer.size <= max(before * 4, sizer.minimum) and sizer.size >= min(before // 2, before)


def test_adaptive_batch_size_moves_toward_target() -> None:
    sizer = AdaptiveBatchSize(1000, target_s=0.3, maximum=10000)
    assert sizer.size == 250  # the first batch is a probe: a quarter of the starting size
    sizer.observe(0.075, rows=250)
    assert sizer.size == 1000  # a fast probe: straight back to the starting size
    sizer.observe(0.15, rows=1000)
    assert sizer.size == 2000  # halfway to the target: double
    sizer.observe(0.05, rows=2000)
    assert sizer.size == 2000  # one lucky fast batch: 2000 rows at the cost seen a batch ago take 300 ms
    sizer.observe(0.05, rows=2000)
    assert sizer.size == 8000  # fast for as long as it remembers: at most ×4
    sizer.observe(1.2, rows=8000)
    assert sizer.size == 4000  # far above: at most ÷2
    sizer.observe(0.01, rows=10)  # a short last page says nothing
    assert sizer.size == 4000


def test_the_cost_memory_bounds_growth_and_never_shrinks_after_a_blip() -> None:
    sizer = AdaptiveBatchSize(1000, target_s=0.3, maximum=10000)
    sizer.observe(0.075, rows=250)
    sizer.observe(0.3, rows=1000)
    assert sizer.size == 1000
    sizer.observe(0.9, rows=1000)
    assert sizer.size == 500  # a blip: halved
    sizer.observe(0.15, rows=500)
    assert sizer.size == 500  # fast again, but the blip's cost is still remembered: no growth, and no second halving
    sizer.observe(0.15, rows=500)
    assert sizer.size == 1000  # the blip has left the memory (this batch and the one before)


def test_the_probe_never_goes_under_the_minimum_and_a_fixed_size_has_none() -> None:
    assert AdaptiveBatchSize(100, target_s=0.3, maximum=1000).size == 50
    assert AdaptiveBatchSize(20, target_s=0.3, maximum=1000).size == 20
    assert AdaptiveBatchSize(1000, target_s=0, maximum=1000).size == 1000  # DIFYMAINT_TARGET_BATCH_MS=0


@given(max_ms=st.integers(1, 10_000), scanned=st.integers(0, 100_000), requested=st.integers(0, 100_000))
def test_pause_is_capped_and_scaled_by_how_full_the_batch_was(max_ms: int, scanned: int, requested: int) -> None:
    fill = min(1.0, scanned / requested) if requested else 1.0
    assert 0 <= pause_s(max_ms, scanned, requested) <= max_ms * fill / 1000


def test_a_short_last_page_barely_pauses() -> None:
    pauses = [pause_s(200, 10, 1000) for _ in range(200)]
    assert max(pauses) <= 0.002
    full = [pause_s(200, 1000, 1000) for _ in range(200)]
    assert max(full) > 0.1  # a full batch keeps Dify's 0..200 ms pause


def test_key_names_follow_dify() -> None:
    keys = KeyNamer("dify")
    assert keys.key("retention:clean_messages") == "dify:retention:clean_messages"
    assert keys.key("tenant_plan:abc") == "tenant_plan:abc"  # Dify's raw MGET/pipeline
    assert KeyNamer("").key("retention:clean_messages") == "retention:clean_messages"


def test_plan_parsing() -> None:
    assert TenantPlan.parse({"plan": "team", "expiration_date": "1767225600"}) == TenantPlan("team", 1767225600)
    assert TenantPlan.parse(b'{"plan": "sandbox", "expiration_date": -1}') == TenantPlan("sandbox", -1)
    assert TenantPlan.parse("not json") is None
    assert TenantPlan.parse({"expiration_date": 1}) is None


def test_sandbox_expiry_rule(tmp_path: Path) -> None:
    now_s = int(NOW.timestamp())
    day = 86400
    plan_file = tmp_path / "plans.json"
    plan_file.write_text(
        '{"tenants": {'
        '"never": {"plan": "sandbox", "expiration_date": -1},'
        f'"lapsed": {{"plan": "sandbox", "expiration_date": {now_s - 22 * day}}},'
        f'"grace": {{"plan": "sandbox", "expiration_date": {now_s - 20 * day}}},'
        '"paid": {"plan": "team", "expiration_date": -1},'
        '"white": {"plan": "sandbox", "expiration_date": -1}}, "whitelist": ["white"]}'
    )
    source = StaticPlanFile(plan_file)
    policy = SandboxExpiryPolicy(
        cache=TenantPlanCache(source=source, redis=None, keys=KeyNamer()),
        whitelist=source.fetch_whitelist(),
        graceful_period_days=21,
        clock=FixedClock(),
    )
    assert policy.eligible({"never", "lapsed", "grace", "paid", "white", "unknown"}) == {"never", "lapsed"}
    assert policy.skipped == {"whitelisted": 1, "unknown_plan": 1, "paid": 1, "in_grace": 1}


def test_plan_file_stays_out_of_difys_shared_plan_cache(tmp_path: Path, redis_url: str) -> None:
    """A plan file overrides the billing API for this run only: Dify's `tenant_plan:` cache is neither
    read (a cached real plan must not shadow the file) nor written (Dify would serve the file's answers)."""
    import redis

    from difymaint.core.clock import SystemClock
    from difymaint.dify.billing import plan_lookup

    plan_file = tmp_path / "plans.json"
    plan_file.write_text('{"tenants": {"t1": {"plan": "sandbox", "expiration_date": -1}, "t2": {"plan": "team"}}}')
    client = redis.Redis.from_url(redis_url)
    client.set("tenant_plan:t2", '{"plan": "sandbox", "expiration_date": -1}')
    settings = load_settings(None, {"DIFYMAINT_PLAN_FILE": str(plan_file), "BILLING_ENABLED": True})

    lookup = plan_lookup(settings, SystemClock(), client, KeyNamer())

    assert lookup.plans({"t1", "t2"}) == {"t1": "sandbox", "t2": "team"}
    assert sorted(client.keys("tenant_plan:*")) == [b"tenant_plan:t2"]
    client.close()


def test_bad_plan_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "plans.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError):
        StaticPlanFile(bad)


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS=10\nDB_HOST=from-file\nREDIS_USERNAME=\n")
    monkeypatch.setenv("DB_HOST", "from-env")
    settings = load_settings(env_file, {"DB_PORT": None})
    assert settings.SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS == 10  # env file beats the default
    assert settings.DB_HOST == "from-env"  # environment beats the env file
    assert settings.REDIS_USERNAME is None  # an empty value means unset, as in Dify
    assert (
        load_settings(env_file, {"SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS": 3}).SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS
        == 3
    )
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.env")


def test_outcomes_map_to_the_exit_code_contract() -> None:
    expected = {
        Outcome.DONE: ExitCode.OK,
        Outcome.PARTIAL: ExitCode.PARTIAL,
        Outcome.INTERRUPTED: ExitCode.INTERRUPTED_SIGTERM,
        Outcome.SKIPPED_LOCKED: ExitCode.SKIPPED_LOCKED,
        Outcome.FAILED: ExitCode.FAILED,
        Outcome.THRESHOLD_EXCEEDED: ExitCode.THRESHOLD_EXCEEDED,
    }
    for outcome, code in expected.items():
        assert RunSummary(job="x", dry_run=False, started_at=NOW, outcome=outcome).exit_code == code
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5, 130, 143]


@pytest.mark.postgres
def test_lock_timeout_rolls_back_and_retries_smaller(db_engine: Any, db_url: str) -> None:
    """A batch blocked by another transaction's row lock is rolled back, shrunk and retried, never half-done."""
    scenario = seed(db_engine, NOW)
    victim = sorted(scenario.old["professional"])[0]
    holder = db_engine.connect()
    holder.execute(sa.text("SELECT id FROM message_chains WHERE message_id = :m FOR UPDATE"), {"m": victim})
    ctx = make_context(db_url, DIFYMAINT_LOCK_TIMEOUT=1)
    warnings: list[str] = ctx.reporter.warnings  # type: ignore[attr-defined]

    def release_after_a_rollback() -> None:  # however slowly a loaded machine starts the run
        deadline = time.monotonic() + 30
        while not any("rolled back" in w for w in warnings) and time.monotonic() < deadline:
            time.sleep(0.05)
        holder.rollback()
        holder.close()

    threading.Thread(target=release_after_a_rollback, daemon=True).start()
    summary = run_job(
        clean_messages,
        ctx,
        CleanMessagesParams(window=TimeWindow(end_before=scenario.cutoff), run=RunOptions(batch_size=50)),
    )
    assert summary.outcome is Outcome.DONE
    assert any("rolled back" in warning for warning in ctx.reporter.warnings)  # type: ignore[attr-defined]
    assert remaining_messages(db_engine).isdisjoint(scenario.all_old())
    assert_cascade_consistent(db_engine)


def test_sqlite_batches_stay_within_its_parameter_limit(tmp_path: Path) -> None:
    """SQLite binds each id as its own parameter (at most 32,766 a statement): its batches stay at 10,000 even
    when asked for more, while PostgreSQL (one array parameter) may grow to DIFYMAINT_MAX_BATCH_SIZE."""
    from difymaint.core.context import Context
    from difymaint.core.database import MYSQL_MAX_IDS
    from difymaint.core.locking import NoLock
    from difymaint.core.settings import load_settings
    from difymaint.engine.run import SQLITE_MAX_BATCH_SIZE, JobRun

    cases = (
        (f"sqlite:///{tmp_path / 'x.sqlite'}", SQLITE_MAX_BATCH_SIZE),
        ("postgresql://h/db", 60000),
        ("mysql+pymysql://h/db", MYSQL_MAX_IDS),  # an IN list of ids per table, under max_allowed_packet
    )
    for url, expected in cases:
        ctx = Context(load_settings(None, {"DIFYMAINT_DATABASE_URL": url, "DIFYMAINT_USE_REDIS": False}))
        run = JobRun(ctx, "x", options=RunOptions(batch_size=60000), lock=NoLock(), window=None, tables=["messages"])
        assert run.sizer.maximum == expected and run.batch_size == expected // 4  # the first batch: a probe


def test_only_a_page_in_keyset_order_is_deleted_by_its_key_range() -> None:
    """On MySQL a batch deletes the rows of its page's conditions at or before the page's last key
    (engine/cascade.py): that is the page only when it is ordered by (created_at, id)."""
    from difymaint.dify import tables as t
    from difymaint.engine.cascade import _page_range

    messages = t.messages
    page = sa.select(messages.c.id, messages.c.created_at).where(messages.c.app_id == "a").limit(10)
    assert _page_range(page.order_by(messages.c.created_at, messages.c.id), messages) is not None
    assert _page_range(page.order_by(messages.c.id), messages) is None
    assert _page_range(page.order_by(messages.c.id, messages.c.created_at), messages) is None
    assert _page_range(page.order_by(messages.c.created_at.desc(), messages.c.id.desc()), messages) is None
    assert _page_range(page, messages) is None
    reads_itself = page.where(messages.c.id.in_(sa.select(messages.c.id))).order_by(
        messages.c.created_at, messages.c.id
    )
    assert _page_range(reads_itself, messages) is None
