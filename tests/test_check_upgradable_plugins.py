"""check-upgradable-plugins against a real PostgreSQL, redis-server (cache and Celery broker) and a local
marketplace server: the window (midnight included), the pipelined cache, Dify's message signature, a
marketplace error, a broker that is down, dry run, the CLI."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.errors import LockHeld, UsageError
from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.dify.celery import BrokerUnavailable
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS
from difymaint.jobs import check_upgradable_plugins as job
from difymaint.jobs.check_upgradable_plugins import (
    CheckUpgradablePluginsParams,
    MarketplaceUnavailable,
    parse_window_start,
    window_ranges,
)
from difymaint.jobs.execute import run_job
from tests.broker import published
from tests.celery_worker import CeleryWorker
from tests.conftest import FixedClock, make_context
from tests.stubs.marketplace import MarketplaceStub, plugin
from tests.test_cli import run_cli

pytestmark = pytest.mark.postgres

CACHE = "plugin_autoupgrade_check_task:cached_plugin_snapshot:"


@pytest.fixture
def marketplace() -> Iterator[MarketplaceStub]:
    with MarketplaceStub() as stub:
        stub.state.plugins = [plugin("langgenius", "openai", "0.2.1"), plugin("acme", "tools", "1.0.0")]
        yield stub


def ctx_for(db_url: str, redis_url: str, market: MarketplaceStub, *, prefix: str = "", **settings: Any) -> Any:
    base: dict[str, Any] = {
        "DIFYMAINT_USE_REDIS": True,
        "DIFYMAINT_REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "MARKETPLACE_API_URL": market.url,
        "DIFYMAINT_TARGET_BATCH_MS": 0,
    }
    return make_context(db_url, clock=FixedClock(datetime(2026, 12, 4, 10, 52, 13, tzinfo=UTC)), **(base | settings))


def strategy(engine: Engine, seconds: int, setting: str = "fix_only", **extra: Any) -> str:
    tenant_id = t.new_id()
    values = {
        "id": t.new_id(),
        "tenant_id": tenant_id,
        "strategy_setting": setting,
        "upgrade_time_of_day": seconds,
        "upgrade_mode": extra.pop("mode", "exclude"),
        "exclude_plugins": extra.pop("exclude", []),
        "include_plugins": extra.pop("include", []),
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(t.tenant_plugin_auto_upgrade_strategies).values(**values))
    return tenant_id


def params(start: str | None = None, **run: Any) -> CheckUpgradablePluginsParams:
    return CheckUpgradablePluginsParams(window_start=start, run=RunOptions(**run))


def test_window_default_is_the_quarter_hour_and_wraps_midnight() -> None:
    now = datetime(2026, 12, 4, 10, 52, 13, tzinfo=UTC)
    assert parse_window_start(None, now) == datetime(2026, 12, 4, 10, 45, tzinfo=UTC)
    assert window_ranges(parse_window_start(None, now)) == [(38700, 39600)]
    last = parse_window_start("2026-12-04T23:45:00Z", now)
    assert window_ranges(last) == [(85500, 86400)]  # 86370..86399 included (Dify loses them)
    assert window_ranges(parse_window_start("2026-12-04T23:50:00", now)) == [(85800, 86400), (0, 300)]
    assert parse_window_start(str(int(last.timestamp())), now) == last
    assert parse_window_start("2026-12-05T00:45:00+01:00", now) == last
    with pytest.raises(UsageError):
        parse_window_start("yesterday", now)


def test_dispatches_due_tenants_with_difys_signature(
    db_engine: Engine, db_url: str, redis_url: str, marketplace: MarketplaceStub, celery_worker: CeleryWorker
) -> None:
    start = 23 * 3600 + 45 * 60
    due_first = strategy(db_engine, start, "latest", mode="partial", include=["langgenius/openai"])
    due_last_second = strategy(db_engine, 86399, "fix_only", exclude=["acme/tools"])
    strategy(db_engine, 86399 - 900, "latest")  # previous window
    strategy(db_engine, 0, "latest")  # next day's first window
    strategy(db_engine, start + 10, "disabled")
    ctx = ctx_for(db_url, redis_url, marketplace, DIFYMAINT_DIFY_VERSION="1.11.1", **celery_worker.settings)
    summary = run_job(job, ctx, params("2026-12-04T23:45:00Z", batch_size=1))

    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert summary.details["tenants_due"] == 2 and summary.tables == {job.TABLE: 2} and summary.batches == 2
    # A real Celery worker with Dify's task signature ran both messages.
    received = celery_worker.received(job.TASK, 2)
    by_tenant = {args[0]: (args, kwargs) for args, kwargs in received}
    assert set(by_tenant) == {due_first, due_last_second} and len(received) == 2
    assert by_tenant[due_first] == ([due_first, "latest", start, "partial", [], ["langgenius/openai"]], {})
    assert by_tenant[due_last_second] == ([due_last_second, "fix_only", 86399, "exclude", ["acme/tools"], []], {})
    assert all(record["queue"] == "plugin" for record in celery_worker.records(job.TASK))
    # The manifest: one request with Dify's version header, every snapshot cached for an hour.
    assert len(marketplace.state.calls) == 1
    assert marketplace.state.calls[0][1].get("X-Dify-Version") == "1.11.1"
    client = redis.Redis.from_url(redis_url)
    cached = json.loads(client.get(CACHE + "langgenius/openai") or b"{}")
    assert cached == {
        "org": "langgenius",
        "name": "openai",
        "latest_version": "0.2.1",
        "latest_package_identifier": marketplace.state.plugins[0]["latest_package_identifier"],
        "latest_package_url": marketplace.state.plugins[0]["latest_package_url"],
        "plugin_id": "langgenius/openai",
    }
    assert 3590 <= client.ttl(CACHE + "acme/tools") <= 3600
    client.close()


@pytest.mark.parametrize("celery_worker", ["dify"], indirect=True)
def test_key_prefix_applies_to_cache_and_broker(
    pg_engine: Engine, pg_url: str, redis_url: str, marketplace: MarketplaceStub, celery_worker: CeleryWorker
) -> None:
    tenant = strategy(pg_engine, 38700)
    summary = run_job(job, ctx_for(pg_url, redis_url, marketplace, **celery_worker.settings), params())
    assert summary.tables == {job.TABLE: 1}
    assert [args[0] for args, _ in celery_worker.received(job.TASK, 1)] == [tenant]
    client = redis.Redis.from_url(redis_url)
    assert client.exists("dify:" + CACHE + "acme/tools") and not client.exists(CACHE + "acme/tools")
    client.close()


def test_spread_uses_countdown_not_sleep(
    pg_engine: Engine, pg_url: str, redis_url: str, marketplace: MarketplaceStub
) -> None:
    for i in range(45):  # 3 chunks of 20: Dify sleeps 300 s twice; here chunk k waits k × 300 s in the broker
        strategy(pg_engine, 38700 + i)
    ctx = ctx_for(pg_url, redis_url, marketplace)
    summary = run_job(job, ctx, params(batch_size=7))
    assert summary.tables == {job.TABLE: 45} and ctx.clock.slept == []
    messages = published(redis_url, "plugin")  # no worker on this broker: the messages wait with their ETA
    etas = [None if m.headers["eta"] is None else datetime.fromisoformat(m.headers["eta"]) for m in messages]
    assert etas[:20] == [None] * 20 and all(eta is not None for eta in etas[20:])
    sent = datetime.now(UTC)
    for chunk, delay in ((slice(20, 40), 300), (slice(40, 45), 600)):
        assert all(delay - 30 <= (eta - sent).total_seconds() <= delay for eta in etas[chunk] if eta is not None)
    assert [job.countdown(i, 45, 900) for i in (0, 19, 20, 39, 40, 44)] == [None, None, 300.0, 300.0, 600.0, 600.0]
    assert job.countdown(30, 45, 0) is None and job.countdown(5, 5, 900) is None


def test_nothing_due_does_not_call_the_marketplace(
    pg_engine: Engine, pg_url: str, redis_url: str, marketplace: MarketplaceStub
) -> None:
    strategy(pg_engine, 1000)
    summary = run_job(job, ctx_for(pg_url, redis_url, marketplace), params())
    assert summary.outcome is Outcome.DONE and summary.details["tenants_due"] == 0
    assert marketplace.state.calls == [] and published(redis_url, "plugin") == []


@pytest.mark.parametrize(
    ("status", "body"), [(503, None), (None, b"<html>"), (None, b'{"plugins":[{"org":"x"}]}'), (None, b"[]")]
)
def test_marketplace_error_skips_the_cycle(
    pg_engine: Engine,
    pg_url: str,
    redis_url: str,
    marketplace: MarketplaceStub,
    status: int | None,
    body: bytes | None,
) -> None:
    strategy(pg_engine, 38700)
    marketplace.state.fail_status, marketplace.state.raw_body = status, body
    with pytest.raises(MarketplaceUnavailable):
        run_job(job, ctx_for(pg_url, redis_url, marketplace), params())
    assert published(redis_url, "plugin") == []
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(match=CACHE + "*"))
    client.close()


def test_broker_down_publishes_and_caches_nothing(
    pg_engine: Engine, pg_url: str, redis_url: str, marketplace: MarketplaceStub
) -> None:
    strategy(pg_engine, 38700)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    ctx = ctx_for(pg_url, redis_url, marketplace, CELERY_BROKER_URL=dead)
    with pytest.raises(BrokerUnavailable):
        run_job(job, ctx, params())
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(match=CACHE + "*"))
    client.close()


def test_dry_run_lists_and_publishes_nothing(
    db_engine: Engine, db_url: str, redis_url: str, marketplace: MarketplaceStub
) -> None:
    tenants = {strategy(db_engine, 38700 + i) for i in range(3)}
    ctx = ctx_for(db_url, redis_url, marketplace)
    ctx.output = io.StringIO()
    summary = run_job(job, ctx, params(dry_run=True))
    assert summary.tables == {job.TABLE: 3} and set(summary.details["tenants"]) == tenants
    listing = ctx.output.getvalue()
    assert listing.count("would publish " + job.TASK) == 3 and all(tenant in listing for tenant in tenants)
    assert published(redis_url, "plugin") == []
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(match=CACHE + "*"))
    client.close()


def test_cli(
    pg_engine: Engine, pg_url: str, redis_url: str, marketplace: MarketplaceStub, celery_worker: CeleryWorker
) -> None:
    tenant = strategy(pg_engine, 0)
    env = {
        "DIFYMAINT_REDIS_URL": redis_url,
        "DIFYMAINT_USE_REDIS": "true",
        "MARKETPLACE_API_URL": marketplace.url,
        **celery_worker.settings,
    }
    base = ["check-upgradable-plugins", "--database-url", pg_url, "--json", "--window-start", "2026-12-05T00:00Z"]
    result = run_cli(base, env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "done" and summary["details"]["tenants"] == [tenant]
    assert [args[0] for args, _ in celery_worker.received(job.TASK, 1)] == [tenant]
    marketplace.state.fail_status = 500
    failed = run_cli(base, env=env)
    assert failed.returncode == 1 and "cycle skipped" in failed.stderr and "Traceback" not in failed.stderr
    bad = run_cli([*base[:-1], "soon"], env=env)
    assert bad.returncode == 2 and "--window-start" in bad.stderr
    off = run_cli([*base, "--scheduled"], env={**env, "MARKETPLACE_ENABLED": "false"})
    assert off.returncode == 0 and json.loads(off.stdout)["outcome"] == "disabled"


def test_budget_and_lock(db_engine: Engine, db_url: str, redis_url: str, marketplace: MarketplaceStub) -> None:
    tenants = sorted(strategy(db_engine, 38700 + i) for i in range(3))
    partial = run_job(job, ctx_for(db_url, redis_url, marketplace), params(batch_size=2, max_batches=1))
    assert partial.outcome is Outcome.PARTIAL and partial.exit_code == 4
    assert [m.args[0] for m in published(redis_url, "plugin")] == tenants[:2]
    holder = ctx_for(db_url, redis_url, marketplace)
    lock = holder.job_lock(JOBS["check-upgradable-plugins"].lock_key)
    assert lock.acquire()
    try:
        with pytest.raises(LockHeld):
            run_job(job, ctx_for(db_url, redis_url, marketplace), params())
    finally:
        lock.release()
    assert len(published(redis_url, "plugin")) == 2  # the locked-out run published nothing
