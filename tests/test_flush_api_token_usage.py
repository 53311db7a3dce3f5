"""flush-api-token-usage against a real PostgreSQL and redis-server: Dify's key format under both prefixes,
GETDEL, forward-only updates, malformed keys, pages, dry run, secrets kept out of output, the CLI."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.errors import DifymaintError
from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.engine.options import RunOptions
from difymaint.jobs import flush_api_token_usage as job
from difymaint.jobs.execute import run_job
from difymaint.jobs.flush_api_token_usage import FlushApiTokenUsageParams, parse_usage, token_hash
from tests.conftest import is_mysql_url, make_context
from tests.test_cli import run_cli

pytestmark = pytest.mark.postgres

BASE = datetime(2026, 11, 24, 11, 0, 0)


def ctx_for(db_url: str, redis_url: str, prefix: str = "", **settings: Any) -> Any:
    return make_context(
        db_url,
        DIFYMAINT_USE_REDIS=True,
        DIFYMAINT_REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix,
        DIFYMAINT_TARGET_BATCH_MS=0,
        **settings,
    )


def add_token(engine: Engine, token: str, kind: str = "app", last_used_at: datetime | None = None) -> str:
    token_id = t.new_id()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(t.api_tokens).values(
                id=token_id, app_id=t.new_id(), type=kind, token=token, last_used_at=last_used_at
            )
        )
    return token_id


def last_used(engine: Engine) -> dict[str, datetime | None]:
    with engine.connect() as conn:
        return {row.token: row.last_used_at for row in conn.execute(sa.select(t.api_tokens))}


def usage_key(scope: str, token: str, prefix: str = "") -> str:
    key = f"api_token_active:{scope}:{token}"
    return f"{prefix}:{key}" if prefix else key


def params(**run: Any) -> FlushApiTokenUsageParams:
    return FlushApiTokenUsageParams(run=RunOptions(**run))


@pytest.mark.parametrize("prefix", ["", "dify-prod", "p*[x]"])
def test_flushes_newest_usage_and_deletes_keys(db_engine: Engine, db_url: str, redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    add_token(db_engine, "app-newer", last_used_at=BASE - timedelta(hours=1))
    add_token(db_engine, "app-older", last_used_at=BASE + timedelta(hours=1))  # the key is older: kept
    add_token(db_engine, "app-never")
    add_token(db_engine, "dataset-k", kind="dataset")
    add_token(db_engine, "app-wrongtype", kind="app")
    client.set(usage_key("app", "app-newer", prefix), BASE.isoformat(), ex=3600)
    client.set(usage_key("app", "app-older", prefix), BASE.isoformat())
    client.set(usage_key("app", "app-never", prefix), (BASE + timedelta(minutes=5)).isoformat())
    client.set(usage_key("dataset", "dataset-k", prefix), (BASE + timedelta(minutes=7)).isoformat())
    client.set(usage_key("dataset", "app-wrongtype", prefix), BASE.isoformat())  # scope must match type
    client.set(usage_key("None", "app-unknown", prefix), BASE.isoformat())  # Dify's literal None scope
    client.set(usage_key("app", "app-bad", prefix), "not-a-timestamp")
    client.set(f"{prefix + ':' if prefix else ''}api_token_active:no-scope", BASE.isoformat())
    client.set("api_token:app:app-newer", "cache entry, not a usage key")  # a neighbouring family stays
    if prefix:
        client.set(usage_key("app", "app-never"), BASE.isoformat())  # unprefixed: not Dify's key here
        client.set(usage_key("app", "app-never", "pZx"), BASE.isoformat())  # what an unescaped glob would match

    ctx = ctx_for(db_url, redis_url, prefix)
    summary = run_job(job, ctx, params(batch_size=3))

    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    after = last_used(db_engine)
    assert after["app-newer"] == BASE
    assert after["app-older"] == BASE + timedelta(hours=1)
    assert after["app-never"] == BASE + timedelta(minutes=5)
    assert after["dataset-k"] == BASE + timedelta(minutes=7)
    assert after["app-wrongtype"] is None
    counts = summary.details["counts"]
    assert counts == {
        "keys_scanned": 8,
        "usages": 6,
        "malformed_dropped": 2,
        "rows_updated": 3,
        "not_newer_or_unknown": 3,
    }
    assert summary.tables == {"api_tokens": 3}
    left = {key.decode() for key in client.scan_iter(match="*api_token_active:*")}
    assert left == ({usage_key("app", "app-never"), usage_key("app", "app-never", "pZx")} if prefix else set())
    assert client.get("api_token:app:app-newer") is not None
    if prefix:
        assert client.get(usage_key("app", "app-never")) is not None  # outside the prefix: untouched
        assert client.get(usage_key("app", "app-never", "pZx")) is not None
    client.close()


def test_same_token_in_one_page_keeps_the_newest(db_engine: Engine, db_url: str, redis_url: str) -> None:
    # Two scopes can name one token; both rows exist with different types.
    add_token(db_engine, "tok-1", kind="app")
    client = redis.Redis.from_url(redis_url)
    client.set(usage_key("app", "tok-1"), BASE.isoformat())
    summary = run_job(job, ctx_for(db_url, redis_url), params(batch_size=1000))
    assert last_used(db_engine)["tok-1"] == BASE and summary.tables == {"api_tokens": 1}
    entries = job.latest(
        [job.Usage("a", "app", BASE), job.Usage("a", "app", BASE + timedelta(seconds=1)), job.Usage("a", None, BASE)]
    )
    assert sorted((u.scope or "", u.used_at) for u in entries) == [("", BASE), ("app", BASE + timedelta(seconds=1))]
    client.close()


def test_aware_timestamps_become_naive_utc() -> None:
    usage = parse_usage("app:tok", "2026-11-24T12:00:00+01:00")
    assert usage is not None and usage.used_at == datetime(2026, 11, 24, 11, 0) and usage.used_at.tzinfo is None
    assert parse_usage("app:tok", b"") is None and parse_usage("apptok", BASE.isoformat()) is None
    assert parse_usage("None:tok", BASE.isoformat()) == job.Usage("tok", None, BASE)


def test_many_pages_one_update_each(pg_engine: Engine, pg_url: str, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with pg_engine.begin() as conn:
        conn.execute(
            sa.insert(t.api_tokens),
            [{"id": t.new_id(), "app_id": t.new_id(), "type": "app", "token": f"app-{i:04d}"} for i in range(450)],
        )
    pipe = client.pipeline()
    for i in range(450):
        pipe.set(usage_key("app", f"app-{i:04d}"), (BASE + timedelta(seconds=i)).isoformat())
    pipe.execute()
    summary = run_job(job, ctx_for(pg_url, redis_url), params(batch_size=100))
    assert summary.tables == {"api_tokens": 450} and summary.batches >= 4
    after = last_used(pg_engine)
    assert all(after[f"app-{i:04d}"] == BASE + timedelta(seconds=i) for i in range(450))
    assert client.dbsize() == 0 or not list(client.scan_iter(match="api_token_active:*"))
    client.close()


def test_dry_run_changes_nothing_and_counts_what_a_run_does(db_engine: Engine, db_url: str, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for i in range(5):
        add_token(db_engine, f"app-{i}")
        client.set(usage_key("app", f"app-{i}"), BASE.isoformat())
    add_token(db_engine, "app-newer", last_used_at=BASE + timedelta(days=1))
    client.set(usage_key("app", "app-newer"), BASE.isoformat())
    ctx = ctx_for(db_url, redis_url)
    ctx.output = io.StringIO()
    dry = run_job(job, ctx, params(dry_run=True, batch_size=2))
    listing = ctx.output.getvalue().splitlines()
    assert sorted(listing) == sorted(
        f"would set last_used_at of app token sha256:{token_hash(f'app-{i}')} to {BASE.isoformat()}" for i in range(5)
    )
    assert all(value is None for token, value in last_used(db_engine).items() if token != "app-newer")
    assert len(list(client.scan_iter(match="api_token_active:*"))) == 6
    real = run_job(job, ctx_for(db_url, redis_url), params(batch_size=2))
    assert dry.tables == real.tables == {"api_tokens": 5}
    assert not list(client.scan_iter(match="api_token_active:*"))
    client.close()


def test_a_failed_update_puts_the_values_back(db_engine: Engine, db_url: str, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    add_token(db_engine, "app-x")
    client.set(usage_key("app", "app-x"), BASE.isoformat())
    with db_engine.begin() as conn:  # the update fails: the column refuses the value
        conn.execute(sa.text("ALTER TABLE api_tokens ADD CONSTRAINT no_use CHECK (last_used_at IS NULL)"))
    with pytest.raises(DifymaintError) as failed:
        run_job(job, ctx_for(db_url, redis_url), params())
    refused = "OperationalError" if is_mysql_url(db_url) else "CheckViolation"  # MariaDB's CHECK: error 4025
    assert refused in failed.value.message and "app-x" not in failed.value.message
    assert client.get(usage_key("app", "app-x")) == BASE.isoformat().encode()
    assert 0 < client.ttl(usage_key("app", "app-x")) <= 3600
    env = {"DIFYMAINT_REDIS_URL": redis_url, "DIFYMAINT_USE_REDIS": "true"}
    result = run_cli(["flush-api-token-usage", "--database-url", db_url, "--json"], env=env)
    assert result.returncode == 1 and "app-x" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert client.get(usage_key("app", "app-x")) == BASE.isoformat().encode()
    client.close()


def test_cli_json_never_prints_tokens(pg_engine: Engine, pg_url: str, redis_url: str) -> None:
    secret = "app-SuperSecretToken123"
    client = redis.Redis.from_url(redis_url)
    add_token(pg_engine, secret)
    client.set(usage_key("app", secret), BASE.isoformat())
    client.set(usage_key("app", "app-AnotherSecret"), "garbage")
    env = {"DIFYMAINT_REDIS_URL": redis_url, "DIFYMAINT_USE_REDIS": "true"}
    result = run_cli(["flush-api-token-usage", "--database-url", pg_url, "--json"], env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "done" and summary["tables"] == {"api_tokens": 1}
    assert summary["details"]["counts"]["malformed_dropped"] == 1
    assert "SuperSecret" not in result.stdout + result.stderr and "AnotherSecret" not in result.stdout + result.stderr
    assert token_hash("app-AnotherSecret") in result.stderr
    client.close()


def test_without_redis_is_a_config_error(pg_url: str) -> None:
    result = run_cli(["flush-api-token-usage", "--database-url", pg_url], env={"DIFYMAINT_USE_REDIS": "false"})
    assert result.returncode == 2 and "needs Dify's Redis" in result.stderr and "Traceback" not in result.stderr


def test_sqlite(sqlite_url: str, redis_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    add_token(engine, "app-1", last_used_at=BASE - timedelta(days=1))
    add_token(engine, "app-2", last_used_at=BASE + timedelta(days=1))
    client = redis.Redis.from_url(redis_url)
    client.set(usage_key("app", "app-1"), BASE.isoformat())
    client.set(usage_key("app", "app-2"), BASE.isoformat())
    dry = run_job(job, ctx_for(sqlite_url, redis_url), params(dry_run=True))
    real = run_job(job, ctx_for(sqlite_url, redis_url), params())
    assert dry.tables == real.tables == {"api_tokens": 1}
    assert last_used(engine) == {"app-1": BASE, "app-2": BASE + timedelta(days=1)}
    client.close()
    engine.dispose()
