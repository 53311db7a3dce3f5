"""refresh-trigger-providers against a real PostgreSQL, a real Redis (Dify's app keys in DB 0, the broker in
DB 1) and a real Celery worker running a stub of Dify's trigger_subscription_refresh: Dify's due predicate,
keyset pages, the in-flight key under the prefix Dify's executor reads, throttling, a broker that is down."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from difymaint.core.errors import ConfigError
from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.dify.celery import BrokerUnavailable
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, refresh_trigger_providers
from difymaint.jobs.execute import run_job
from difymaint.jobs.refresh_trigger_providers import QUEUE, TASK, RefreshTriggerProvidersParams
from tests.celery_worker import CeleryWorker
from tests.conftest import NOW, make_context
from tests.dispatch_helpers import RefusingBroker, refusing_broker

__all__ = ["refusing_broker"]  # the fixture
from tests.test_cli import run_cli

pytestmark = pytest.mark.postgres

NOW_TS = int(NOW.timestamp())
BASE = NOW.replace(tzinfo=None)
_seq = iter(range(10**6))


def add_subscription(
    engine: Engine, *, credential_expires_at: int = -1, expires_at: int = -1, updated_ago_s: int = 0
) -> tuple[str, str]:
    tenant_id, sub_id = t.new_id(), t.new_id()
    n = next(_seq)
    with engine.begin() as conn:
        conn.execute(
            t.trigger_subscriptions.insert().values(
                id=sub_id,
                name=f"sub-{n}",
                tenant_id=tenant_id,
                user_id=t.new_id(),
                provider_id="langgenius/github/github",
                endpoint_id=f"endpoint-{n}",
                parameters={},
                properties={},
                credentials={"access_token": "secret"},
                credential_type="oauth2",
                credential_expires_at=credential_expires_at,
                expires_at=expires_at,
                updated_at=BASE - timedelta(seconds=updated_ago_s),
            )
        )
    return tenant_id, sub_id


def ctx_for(db_url: str, redis_url: str, worker: CeleryWorker | None, **settings: Any) -> Any:
    """Dify's app Redis for the keys, the worker's broker (and REDIS_KEY_PREFIX) for the messages."""
    return make_context(
        db_url,
        DIFYMAINT_USE_REDIS=True,
        DIFYMAINT_REDIS_URL=redis_url,
        **{**(worker.settings if worker else {}), **settings},
    )


def refreshed(worker: CeleryWorker, count: int) -> list[tuple[str, str]]:
    """(tenant_id, subscription_id) of every refresh the worker ran, in order: exactly ``count``."""
    if count:
        worker.received(TASK, count)
    time.sleep(0.3)  # anything beyond ``count`` would have arrived by now
    records = worker.records(TASK)
    assert all(r["args"] == [] and set(r["kwargs"]) == {"tenant_id", "subscription_id"} for r in records)
    assert all(r["queue"] == QUEUE for r in records) and len(records) == count, records
    return [(r["kwargs"]["tenant_id"], r["kwargs"]["subscription_id"]) for r in records]


def key(tenant: str, sub: str, prefix: str = "") -> str:
    logical = f"trigger_provider_refresh_lock:{tenant}_{sub}"
    return f"{prefix}:{logical}" if prefix else logical


@pytest.fixture
def redis_client(redis_url: str) -> Any:
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.parametrize("celery_worker", ["", "dify"], indirect=True)
def test_publishes_due_subscriptions_with_the_key_difys_executor_reads(
    db_engine: Engine, db_url: str, redis_url: str, redis_client: Any, celery_worker: CeleryWorker
) -> None:
    prefix = celery_worker.prefix
    credential = add_subscription(db_engine, credential_expires_at=NOW_TS + 100, updated_ago_s=50)
    subscription = add_subscription(db_engine, expires_at=NOW_TS + 3600, updated_ago_s=40)  # at the threshold
    expired = add_subscription(db_engine, expires_at=NOW_TS - 10, updated_ago_s=30)
    add_subscription(db_engine, credential_expires_at=NOW_TS + 3601, expires_at=NOW_TS + 7200)  # not yet
    never = add_subscription(db_engine)  # -1 / -1
    summary = run_job(
        refresh_trigger_providers, ctx_for(db_url, redis_url, celery_worker), RefreshTriggerProvidersParams()
    )
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert refreshed(celery_worker, 3) == [credential, subscription, expired]  # updated_at order
    assert summary.details["due"] == 3 and summary.tables == {"trigger_subscriptions": 3}
    for tenant, sub in (credential, subscription, expired):
        assert redis_client.get(key(tenant, sub, prefix)) == b"1"
        assert 3590 < redis_client.ttl(key(tenant, sub, prefix)) <= 3600  # max(300, subscription threshold)
        if prefix:
            assert redis_client.exists(key(tenant, sub)) == 0  # Dify's unprefixed SET would be invisible to GET
    assert redis_client.exists(key(*never, prefix)) == 0


def test_in_flight_keys_throttle_the_next_tick(
    pg_engine: Engine, pg_url: str, redis_url: str, redis_client: Any, celery_worker: CeleryWorker
) -> None:
    busy = add_subscription(pg_engine, credential_expires_at=NOW_TS, updated_ago_s=20)
    free = add_subscription(pg_engine, credential_expires_at=NOW_TS, updated_ago_s=10)
    redis_client.set(key(*busy), b"1", ex=60)  # the executor is still on it
    params = RefreshTriggerProvidersParams(subscription_threshold_s=60)
    first = run_job(refresh_trigger_providers, ctx_for(pg_url, redis_url, celery_worker), params)
    assert refreshed(celery_worker, 1) == [free] and first.details["throttled"] == 1
    assert 290 < redis_client.ttl(key(*free)) <= 300  # the 300 s floor
    second = run_job(refresh_trigger_providers, ctx_for(pg_url, redis_url, celery_worker), params)
    assert second.details["throttled"] == 2 and refreshed(celery_worker, 1) == [free]


def test_keyset_pages_cover_every_due_row_once(
    db_engine: Engine, db_url: str, redis_url: str, celery_worker: CeleryWorker
) -> None:
    # Ties on updated_at across page boundaries: the (updated_at, id) cursor neither skips nor repeats.
    due = [add_subscription(db_engine, expires_at=NOW_TS, updated_ago_s=n // 3) for n in range(11)]
    params = RefreshTriggerProvidersParams(run=RunOptions(batch_size=2))
    summary = run_job(
        refresh_trigger_providers, ctx_for(db_url, redis_url, celery_worker, DIFYMAINT_TARGET_BATCH_MS=0), params
    )
    counts = Counter(refreshed(celery_worker, len(due)))
    assert set(counts) == set(due) and max(counts.values()) == 1
    assert summary.batches == 6 and summary.details["due"] == 11


def test_an_adaptive_batch_size_never_ends_the_walk_early(
    pg_engine: Engine, pg_url: str, redis_url: str, celery_worker: CeleryWorker
) -> None:
    due = [add_subscription(pg_engine, expires_at=NOW_TS, updated_ago_s=n) for n in range(9)]
    # Fast batches make the size grow after each full page; the page just read must still be judged by the
    # size it was read with.
    params = RefreshTriggerProvidersParams(run=RunOptions(batch_size=2))
    summary = run_job(
        refresh_trigger_providers, ctx_for(pg_url, redis_url, celery_worker, DIFYMAINT_TARGET_BATCH_MS=10000), params
    )
    assert summary.details["due"] == 9 and sorted(refreshed(celery_worker, 9)) == sorted(due)


def test_max_batches_stops_early_with_the_backlog(
    db_engine: Engine, db_url: str, redis_url: str, celery_worker: CeleryWorker
) -> None:
    due = [add_subscription(db_engine, expires_at=NOW_TS, updated_ago_s=10 - n) for n in range(5)]
    fixed = {"DIFYMAINT_TARGET_BATCH_MS": 0}
    params = RefreshTriggerProvidersParams(run=RunOptions(batch_size=2, max_batches=1))
    first = run_job(refresh_trigger_providers, ctx_for(db_url, redis_url, celery_worker, **fixed), params)
    assert first.outcome is Outcome.PARTIAL and first.exit_code == 4 and first.rows_remaining == 3
    assert refreshed(celery_worker, 2) == due[:2]


def test_dry_run_sets_and_publishes_nothing(
    db_engine: Engine, db_url: str, redis_url: str, redis_client: Any, celery_worker: CeleryWorker
) -> None:
    busy = add_subscription(db_engine, credential_expires_at=NOW_TS)
    free = [add_subscription(db_engine, expires_at=NOW_TS + n) for n in range(3)]
    redis_client.set(key(*busy), b"1", ex=60)
    ctx = ctx_for(db_url, redis_url, celery_worker)
    ctx.output = io.StringIO()
    dry = run_job(refresh_trigger_providers, ctx, RefreshTriggerProvidersParams(run=RunOptions(dry_run=True)))
    lines = ctx.output.getvalue().splitlines()
    assert len(lines) == 3 and all(TASK in line and QUEUE in line for line in lines)
    assert refreshed(celery_worker, 0) == [] and all(redis_client.exists(key(*pair)) == 0 for pair in free)
    real = run_job(
        refresh_trigger_providers, ctx_for(db_url, redis_url, celery_worker), RefreshTriggerProvidersParams()
    )
    assert dry.tables == real.tables == {"trigger_subscriptions": 3}
    assert sorted(refreshed(celery_worker, 3)) == sorted(free)


def test_broker_down_sets_no_key(pg_engine: Engine, pg_url: str, redis_url: str, redis_client: Any) -> None:
    pair = add_subscription(pg_engine, credential_expires_at=NOW_TS)
    down = {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "REDIS_SOCKET_CONNECT_TIMEOUT": 0.5}
    with pytest.raises(BrokerUnavailable):
        run_job(refresh_trigger_providers, ctx_for(pg_url, redis_url, None, **down), RefreshTriggerProvidersParams())
    assert redis_client.exists(key(*pair)) == 0
    result = run_cli(
        ["refresh-trigger-providers", "--database-url", pg_url, "--json"],
        env={"DIFYMAINT_REDIS_URL": redis_url, **{name: str(value) for name, value in down.items()}},
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["outcome"] == "failed" and "Traceback" not in result.stderr
    assert "Celery broker" in result.stderr and redis_client.exists(key(*pair)) == 0


def test_broker_refusing_the_messages_frees_their_keys(
    pg_engine: Engine, pg_url: str, redis_url: str, redis_client: Any, refusing_broker: RefusingBroker
) -> None:
    pairs = [add_subscription(pg_engine, credential_expires_at=NOW_TS, updated_ago_s=n) for n in range(3)]
    refusing_broker.refuse_writes()  # connection check passes; the messages are refused after the keys are set
    ctx = ctx_for(pg_url, redis_url, None, CELERY_BROKER_URL=refusing_broker.url)
    with pytest.raises(BrokerUnavailable):
        run_job(refresh_trigger_providers, ctx, RefreshTriggerProvidersParams())
    assert all(redis_client.exists(key(*pair)) == 0 for pair in pairs)  # the next tick retries at once
    refusing_broker.refuse_writes(False)
    summary = run_job(
        refresh_trigger_providers,
        ctx_for(pg_url, redis_url, None, CELERY_BROKER_URL=refusing_broker.url),
        RefreshTriggerProvidersParams(),
    )
    assert summary.details["throttled"] == 0 and summary.tables == {"trigger_subscriptions": 3}
    assert all(redis_client.get(key(*pair)) == b"1" for pair in pairs)


def test_needs_difys_redis_once_something_is_due(pg_engine: Engine, pg_url: str, celery_worker: CeleryWorker) -> None:
    add_subscription(pg_engine, credential_expires_at=NOW_TS + 10**6)
    # Nothing due: neither Redis nor a broker is needed (none is configured here).
    summary = run_job(refresh_trigger_providers, make_context(pg_url), RefreshTriggerProvidersParams())
    assert summary.outcome is Outcome.DONE and summary.details["due"] == 0 and summary.total_rows == 0
    add_subscription(pg_engine, credential_expires_at=NOW_TS)
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match="Redis"):
            run_job(
                refresh_trigger_providers,
                make_context(pg_url, **celery_worker.settings),
                RefreshTriggerProvidersParams(run=RunOptions(dry_run=dry_run)),
            )
    assert refreshed(celery_worker, 0) == []


def test_registry_entry() -> None:
    info = JOBS["refresh-trigger-providers"]
    assert (info.schedule, info.dify_task, info.dify_switch) == (
        "* * * * *",
        "trigger_provider_refresh",
        "ENABLE_TRIGGER_PROVIDER_REFRESH_TASK",
    )
    assert info.load() is refresh_trigger_providers
