"""The lock lease cannot lapse under a live run, and a lost lease stops the run without deleting further.

Real PostgreSQL and Redis: a second connection holds row locks on ``messages`` so that the run's DELETE waits
(lock_timeout off) for longer than the 10 s lease.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.locking import LockHeartbeat, NoLock, RedisJobLock
from tests.conftest import NOW
from tests.scenario import assert_cascade_consistent, remaining_messages, seed
from tests.test_cli import CLEAN_ENV

KEY = "retention:clean_messages"
TTL = 10


def _wait_for(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def rows_locked(url: str) -> Iterator[Connection]:
    """Another session holding every message row, as a long Dify transaction would."""
    engine = sa.create_engine(url)
    conn = engine.connect()
    conn.execute(sa.text("SELECT id FROM messages FOR UPDATE")).all()
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()
        engine.dispose()


def _start(pg_url: str, redis_url: str | None) -> subprocess.Popen[str]:
    """clean-messages with no lock or statement timeout: on a locked row its DELETE waits until cancelled.
    With ``redis_url`` it takes the Redis lock with a TTL of TTL seconds; without, it runs without Redis."""
    lock = ["--lock-ttl", str(TTL)] if redis_url else []
    redis_env = {"DIFYMAINT_REDIS_URL": redis_url} if redis_url else {"DIFYMAINT_USE_REDIS": "false"}
    return subprocess.Popen(
        [sys.executable, "-m", "difymaint", "clean-messages", "--yes", "--json", *lock],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={
            **CLEAN_ENV,
            "NO_COLOR": "1",
            "DIFYMAINT_DATABASE_URL": pg_url,
            **redis_env,
            "DIFYMAINT_LOCK_TIMEOUT": "0",  # wait on the row lock as long as it is held
            "DIFYMAINT_STATEMENT_TIMEOUT": "0",
        },
    )


def _waiting_on_lock(pg_url: str) -> bool:
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        if engine.dialect.name == "mysql":
            query = "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
        else:
            query = (
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'difymaint' "
                "AND wait_event_type = 'Lock' AND datname = current_database()"
            )
        waiting = conn.execute(sa.text(query)).scalar_one()
    engine.dispose()
    return bool(waiting)


@pytest.mark.postgres
@pytest.mark.redis
def test_lease_outlives_a_blocked_batch_and_keeps_a_second_run_out(db_url: str, redis_url: str) -> None:
    engine = sa.create_engine(db_url)
    seed(engine, NOW)
    client = redis.Redis.from_url(redis_url)
    with rows_locked(db_url):
        first = _start(db_url, redis_url)
        try:
            _wait_for("the first run to take the lock", lambda: client.exists(KEY) == 1)
            _wait_for("its DELETE to wait on the row lock", lambda: _waiting_on_lock(db_url))
            time.sleep(TTL * 1.4)  # well past the lease: only the heartbeat can have kept it
            holder = json.loads(client.get(KEY) or b"{}")
            assert holder["pid"] == first.pid and {"host", "run_id", "started_at"} <= holder.keys()
            assert 0 < client.pttl(KEY) <= TTL * 1000
            second = subprocess.run(
                [sys.executable, "-m", "difymaint", "clean-messages", "--yes"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**CLEAN_ENV, "NO_COLOR": "1", "DIFYMAINT_DATABASE_URL": db_url, "DIFYMAINT_REDIS_URL": redis_url},
            )
            assert second.returncode == 5, second.stderr
            assert f"pid {first.pid}" in second.stderr  # "lock held" names the holder
            assert first.poll() is None  # still working
        except BaseException:
            first.kill()
            raise
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert json.loads(out)["tables"]["messages"] > 0
    assert client.exists(KEY) == 0  # released at the end; the heartbeat did not re-create it
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.redis
def test_lost_lease_stops_the_run_and_rolls_the_batch_back(pg_url: str, redis_url: str) -> None:
    engine = sa.create_engine(pg_url)
    seed(engine, NOW)
    before = remaining_messages(engine)
    client = redis.Redis.from_url(redis_url)
    with rows_locked(pg_url):
        first = _start(pg_url, redis_url)
        try:
            _wait_for("the first run to take the lock", lambda: client.exists(KEY) == 1)
            _wait_for("its DELETE to wait on the row lock", lambda: _waiting_on_lock(pg_url))
            # Someone else takes the key (an operator, or a run after a Redis failover).
            client.set(KEY, "dify-beat-token", px=120_000)
            time.sleep(TTL / 3 + 2)  # one renewal interval: the heartbeat notices
        except BaseException:
            first.kill()
            raise
    out, err = first.communicate(timeout=60)
    assert first.returncode == 1, (out, err)
    assert "lost the Redis lock" in err and "Dify's own beat task or another tool" in err
    assert json.loads(out)["outcome"] == "failed"
    assert remaining_messages(engine) == before  # the batch that ran while the lock was lost rolled back
    assert client.get(KEY) == b"dify-beat-token"  # and the other holder's key was left alone
    engine.dispose()


@pytest.mark.redis
def test_heartbeat_renews_and_stops(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    lock = RedisJobLock(client, "maintenance:hb-test", TTL)
    lock.renew_every_s = 0.2  # fast, for the test
    assert lock.acquire()
    with LockHeartbeat(lock) as heartbeat:
        time.sleep(1.0)
        assert heartbeat.renewals >= 3 and heartbeat.lost is None
    renewals = heartbeat.renewals
    time.sleep(0.5)
    assert heartbeat.renewals == renewals  # stopped with the block
    lock.release()
    assert client.exists("maintenance:hb-test") == 0


def test_heartbeat_is_a_no_op_for_locks_that_cannot_lapse() -> None:
    with LockHeartbeat(NoLock()) as heartbeat:
        assert heartbeat._thread is None
        heartbeat.check()


def _identity(**overrides: object) -> bytes:
    who = {"host": socket.gethostname(), "pid": os.getpid(), "run_id": "r", "started_at": "t", "tool": "difymaint"}
    who.update(overrides)
    return json.dumps(who, sort_keys=True).encode()


@pytest.mark.redis
def test_takeover_only_from_a_provably_dead_holder(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()  # reaped: its pid no longer exists
    not_provably_dead = [
        _identity(),  # alive: this very process
        _identity(pid=dead_pid.pid, host="another-pod"),  # another host: its pids mean nothing here
        b"8c1b6a1e4f0d4b9e9d7f3a2b1c0d9e8f",  # Dify's beat token
    ]
    for value in not_provably_dead:
        client.set(KEY, value, px=600_000)
        assert not RedisJobLock(client, KEY, TTL).acquire(), value
        assert client.get(KEY) == value
    client.set(KEY, _identity(pid=dead_pid.pid), px=600_000)
    lock = RedisJobLock(client, KEY, TTL)
    assert lock.acquire()
    assert json.loads(client.get(KEY) or b"{}")["pid"] == os.getpid() and client.pttl(KEY) <= TTL * 1000
    lock.renew()  # the lock object owns the taken-over key
    lock.release()
    assert client.exists(KEY) == 0


@pytest.mark.postgres
@pytest.mark.redis
def test_after_kill_9_the_next_run_starts_at_once(pg_url: str, redis_url: str) -> None:
    engine = sa.create_engine(pg_url)
    seed(engine, NOW)
    client = redis.Redis.from_url(redis_url)
    with rows_locked(pg_url):
        first = _start(pg_url, redis_url)
        _wait_for("the first run to take the lock", lambda: client.exists(KEY) == 1)
        _wait_for("its DELETE to wait on the row lock", lambda: _waiting_on_lock(pg_url))
        first.kill()
        first.wait(timeout=30)
    assert client.exists(KEY) == 1  # the dead run's lease is still there
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "difymaint", "clean-messages", "--yes", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**CLEAN_ENV, "NO_COLOR": "1", "DIFYMAINT_DATABASE_URL": pg_url, "DIFYMAINT_REDIS_URL": redis_url},
    )
    assert second.returncode == 0, second.stderr  # not 5: the holder is provably dead
    assert "took over the lock" in second.stderr
    assert time.monotonic() - started < 30
    assert_cascade_consistent(engine)
    engine.dispose()


@pytest.mark.redis
def test_locks_command_names_the_holders(redis_url: str, sqlite_url: str) -> None:
    from tests.test_cli import run_cli

    client = redis.Redis.from_url(redis_url)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client.set(KEY, _identity(pid=dead.pid, run_id="run-1"), px=30_000)
    client.set("retention:clean_workflow_runs_task", "8c1b6a1e4f0d4b9e9d7f3a2b1c0d9e8f", px=30_000)
    result = run_cli(["locks", "--json", "--redis-url", redis_url, "--database-url", sqlite_url])
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    ours = rows[KEY]
    assert f"pid {dead.pid} run run-1" in ours["holder_description"] and "holder dead" in ours["holder_description"]
    assert 0 < ours["ttl_s"] <= 30
    assert rows["retention:clean_workflow_runs_task"]["holder_description"] == "Dify's own beat task or another tool"
    text = run_cli(["locks", "--redis-url", redis_url, "--database-url", sqlite_url], env={"COLUMNS": "250"})
    assert "holder dead" in text.stdout and f"pid {dead.pid} run run-1" in text.stdout


@pytest.mark.redis
@pytest.mark.postgres
def test_five_runs_started_at_once_exactly_one_works(db_url: str, redis_url: str) -> None:
    engine = sa.create_engine(db_url)
    seed(engine, NOW, per_tenant=40)
    before = remaining_messages(engine)
    env = {
        **CLEAN_ENV,
        "NO_COLOR": "1",
        "DIFYMAINT_DATABASE_URL": db_url,
        "DIFYMAINT_REDIS_URL": redis_url,
        "DIFYMAINT_TARGET_BATCH_MS": "0",
    }
    # Small batches with Dify's pause: the one that gets the lock is still working when the others arrive.
    args = ["clean-messages", "--yes", "--json", "--batch-size", "5", "--sleep-ms", "300"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "difymaint", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(5)
    ]
    results = [(proc.communicate(timeout=300), proc.returncode) for proc in procs]
    codes = sorted(code for _, code in results)
    assert codes == [0, 5, 5, 5, 5], [(code, err[-300:]) for (_, err), code in results]
    outcomes = sorted(json.loads(out)["outcome"] for (out, _), _ in results)
    assert outcomes == ["done", "skipped_locked", "skipped_locked", "skipped_locked", "skipped_locked"]
    assert remaining_messages(engine) < before
    assert_cascade_consistent(engine)
    engine.dispose()
