"""PostgreSQL or Redis restarted while a run deletes: one clear line, exit 1, nothing half-done, and the next
run completes. Each test restarts a server of its own (tests/own_servers.py), never the suite's shared ones."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from difymaint.dify.tables import metadata
from difymaint.ops.history import HistoryStore
from tests.conftest import NOW
from tests.own_servers import OwnPostgres, OwnRedis
from tests.scenario import Scenario, assert_cascade_consistent, remaining_messages, seed
from tests.test_cli import CLEAN_ENV

# ~570 expired messages in batches of 10 with a pause between: long enough to restart a server mid-run.
PER_TENANT = 80
BATCH = "10"


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    cluster = OwnPostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def dify_db(own_pg: OwnPostgres) -> Iterator[tuple[str, Engine, Scenario]]:
    """A fresh Dify-shaped database on the module's own cluster, seeded with a many-batch backlog."""
    name = f"dify_{time.monotonic_ns()}"
    admin = sa.create_engine(own_pg.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(own_pg.url).set(database=name).render_as_string(hide_password=False)
    # NullPool: every check opens a new connection, so a restart cannot leave us a dead pooled one.
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"'))
    metadata.create_all(engine)
    scenario = seed(engine, NOW, per_tenant=PER_TENANT)
    yield url, engine, scenario
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _env(**extra: str) -> dict[str, str]:
    return {
        **CLEAN_ENV,
        "NO_COLOR": "1",
        "DIFYMAINT_TARGET_BATCH_MS": "0",  # keep the batches small: many commits before the fault
        "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL": "0",
        **extra,
    }


def _clean_messages(url: str) -> list[str]:
    return [sys.executable, "-m", "difymaint", "clean-messages", "--yes", "--json", "--database-url", url]


def _wait_until(what: str, condition: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"gave up waiting for {what} (exit {proc.returncode}): {err}{out}")


def _deleted_so_far(engine: Engine, before: int) -> int:
    return before - len(remaining_messages(engine))


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=env
    )


def _restart_mid_run(
    proc: subprocess.Popen[str], engine: Engine, before: int, *, at_least: int, restart: Callable[[], None]
) -> tuple[str, str]:
    """Let ``at_least`` messages go, restart a server under the running job, and return the job's stdout and
    stderr once it has ended (killed if the test fails first)."""
    try:
        _wait_until("a few batches to commit", lambda: _deleted_so_far(engine, before) >= at_least, proc)
        assert proc.poll() is None, "the run finished before the restart: make it longer"
        restart()
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def _error_lines(err: str) -> list[str]:
    return [line for line in err.strip().splitlines() if line.startswith("difymaint: error:")]


def _second_run_completes(url: str, engine: Engine, scenario: Scenario, env: dict[str, str]) -> None:
    again = subprocess.run(
        [*_clean_messages(url), "--batch-size", "200"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rows_remaining"] == 0
    # (The CLI runs on the real clock, after the scenario's NOW: it may delete a few more, never fewer.)
    assert not remaining_messages(engine) & scenario.all_old()
    assert_cascade_consistent(engine)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_mid_run(own_pg: OwnPostgres, dify_db: tuple[str, Engine, Scenario], mode: str) -> None:
    url, engine, scenario = dify_db
    before = len(remaining_messages(engine))
    env = _env(DIFYMAINT_USE_REDIS="false")
    proc = _start([*_clean_messages(url), "--batch-size", BATCH, "--sleep-ms", "60"], env)
    out, err = _restart_mid_run(proc, engine, before, at_least=30, restart=lambda: own_pg.restart(mode))
    assert proc.returncode == 1, (proc.returncode, err)
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert "lost the database connection mid-run" in lines[0], err
    assert "restart" in err, err  # says what probably happened, so nobody debugs a restart as a bug
    for wrong in ("Traceback", "error: unexpected", "OperationalError", "lock TTL", "--lock-ttl", "--debug"):
        assert wrong not in err, (wrong, err)
    # The closing history write waits for the server to come back: the record says failed, not running.
    assert "run history unavailable" not in err, err
    (record,) = HistoryStore(engine).recent(job="clean-messages")
    assert record.outcome == "failed" and record.exit_code == 1, record
    summary = json.loads(out)
    assert summary["outcome"] == "failed"
    deleted = _deleted_so_far(engine, before)
    assert deleted >= 30
    # Every committed batch is counted, and nothing else: the open one rolled back whole.
    assert summary["tables"]["messages"] == deleted, (summary, deleted)
    assert_cascade_consistent(engine)
    _second_run_completes(url, engine, scenario, env)


def test_redis_restart_mid_run(own_redis: OwnRedis, dify_db: tuple[str, Engine, Scenario]) -> None:
    """A restarted Redis forgets the lock: the heartbeat notices, the run stops at the next batch boundary and
    says Redis lost the key, not that the lease (--lock-ttl) was too short."""
    url, engine, scenario = dify_db
    before = len(remaining_messages(engine))
    env = _env(DIFYMAINT_USE_REDIS="true", DIFYMAINT_REDIS_URL=own_redis.url, DIFYMAINT_LOCK_TTL="10")
    # ~0.2 s per batch on average: the run outlasts the heartbeat's next renewal (every TTL/3 = 3.3 s).
    proc = _start([*_clean_messages(url), "--batch-size", BATCH, "--sleep-ms", "400"], env)
    out, err = _restart_mid_run(proc, engine, before, at_least=20, restart=own_redis.restart)
    assert proc.returncode == 1, (proc.returncode, err)
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert "lost the Redis lock" in lines[0] and "Redis restarted" in lines[0], err
    for wrong in ("Traceback", "error: unexpected", "lock TTL", "--lock-ttl", "LOCK_TTL", "--debug"):
        assert wrong not in err, (wrong, err)
    summary = json.loads(out)
    assert summary["outcome"] == "failed"
    assert 0 < summary["tables"]["messages"] == _deleted_so_far(engine, before) < before
    assert_cascade_consistent(engine)
    _second_run_completes(url, engine, scenario, env)


def test_postgres_restart_with_pre_ping_does_not_carry_on_unlocked(
    own_pg: OwnPostgres, dify_db: tuple[str, Engine, Scenario]
) -> None:
    """With SQLALCHEMY_POOL_PRE_PING the batches reconnect after a restart that fell between them, but the
    advisory lock died with its session: the heartbeat notices and the run stops instead of deleting on
    without a lock (another run could start meanwhile)."""
    url, engine, scenario = dify_db
    before = len(remaining_messages(engine))
    env = _env(DIFYMAINT_USE_REDIS="false", SQLALCHEMY_POOL_PRE_PING="true")
    # Long pauses between batches: the restart most likely falls into one, and pre-ping then reconnects.
    proc = _start([*_clean_messages(url), "--batch-size", BATCH, "--sleep-ms", "2000"], env)
    out, err = _restart_mid_run(proc, engine, before, at_least=20, restart=lambda: own_pg.restart("fast"))
    assert proc.returncode == 1, (proc.returncode, err)
    lines = _error_lines(err)
    assert len(lines) == 1 and "lost the database connection mid-run" in lines[0] and "restarted" in lines[0], err
    summary = json.loads(out)
    assert summary["outcome"] == "failed" and summary["tables"]["messages"] == _deleted_so_far(engine, before)
    assert _deleted_so_far(engine, before) < before
    assert_cascade_consistent(engine)
    _second_run_completes(url, engine, scenario, env)
