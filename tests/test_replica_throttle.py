"""--max-replica-lag against a real streaming replica (a primary and a hot standby of this module's own, so
the suite's shared server is untouched): the run waits while replay is paused and finishes by itself once it
resumes; a replica that goes away is a warning and a bounded wait; a primary without replicas and a role that
may not see the replicas' positions change nothing (the latter says so once)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from difymaint.dify.tables import metadata
from tests.conftest import NOW
from tests.own_servers import OwnPostgres, OwnReplica
from tests.scenario import remaining_messages, seed
from tests.test_cli import CLEAN_ENV

pytestmark = pytest.mark.postgres

PER_TENANT = 40  # ~290 expired messages: ~29 batches of 10, with their pauses ~2 s unthrottled
BOUND_S = 1.0
BLIND_ROLE = "lagblind"  # LOGIN, may delete, but neither superuser nor pg_monitor
SECRET = "replica-url-s3cret"


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[OwnPostgres, OwnReplica]]:
    primary = OwnPostgres()
    replica: OwnReplica | None = None
    try:
        primary.start()
        replica = OwnReplica(primary)
        replica.start()
        yield primary, replica
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


@pytest.fixture(scope="module")
def template(pair: tuple[OwnPostgres, OwnReplica]) -> str:
    """Seeded once; each test gets a copy."""
    primary = pair[0]
    primary.sql(f"CREATE ROLE {BLIND_ROLE} LOGIN")
    primary.sql("CREATE DATABASE dify_template")
    engine = sa.create_engine(sa.make_url(primary.url).set(database="dify_template"), poolclass=NullPool)
    metadata.create_all(engine)
    seed(engine, NOW, per_tenant=PER_TENANT)
    with engine.begin() as conn:
        conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {BLIND_ROLE}"))
    engine.dispose()
    return "dify_template"


@pytest.fixture
def dify_db(pair: tuple[OwnPostgres, OwnReplica], template: str) -> Iterator[tuple[str, Engine]]:
    primary, replica = pair
    name = f"dify_{time.monotonic_ns()}"
    primary.sql(f'CREATE DATABASE "{name}" TEMPLATE {template}')
    url = sa.make_url(primary.url).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url, poolclass=NullPool)
    caught_up(primary)
    yield url, engine
    if replica.sql("SELECT pg_is_wal_replay_paused()") == "t":
        replica.resume_replay()
    engine.dispose()
    primary.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def caught_up(primary: OwnPostgres, timeout_s: float = 30) -> None:
    query = "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn = pg_current_wal_lsn()"
    deadline = time.monotonic() + timeout_s
    while primary.sql(query) != "1":
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.05)


def start(url: str, *extra: str, **env: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "difymaint", "clean-messages", "--yes", "--json", "--database-url", url]
    return subprocess.Popen(
        [*command, "--batch-size", "10", "--sleep-ms", "100", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={
            **CLEAN_ENV,
            "NO_COLOR": "1",
            "DIFYMAINT_TARGET_BATCH_MS": "0",  # stay at 10 per batch: many batches
            "DIFYMAINT_HISTORY": "false",  # the blind role may not create the history schema
            **env,
        },
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.strip(), err
    return proc.returncode, json.loads(out.strip().splitlines()[-1]), err


def wait_for(what: str, condition: Any, proc: subprocess.Popen[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"gave up waiting for {what} (exit {proc.returncode}): {err}{out}")
        time.sleep(0.02)


def connected(engine: Engine) -> bool:
    """The job has opened its connection (it then deletes, or waits for the replica straight away: a paused
    replica may already lag by the few bytes the server writes by itself)."""
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'difymaint'"
        return bool(conn.execute(sa.text(query)).scalar_one())


def test_the_run_waits_while_replay_is_paused_and_finishes_by_itself(
    pair: tuple[OwnPostgres, OwnReplica], dify_db: tuple[str, Engine]
) -> None:
    _, replica = pair
    url, engine = dify_db
    before = len(remaining_messages(engine))
    replica.pause_replay()
    proc = start(url, "--max-replica-lag", str(BOUND_S), "-v")
    wait_for("the job to connect", lambda: connected(engine), proc)
    first_batch = time.monotonic()
    # From here on nothing is replayed: past the bound (and a few batches' worth of slack), the run must have
    # stopped deleting.
    time.sleep(BOUND_S + 0.5)
    held = len(remaining_messages(engine))
    time.sleep(1.5)
    assert len(remaining_messages(engine)) == held, "a batch ran while the replica lagged past the bound"
    assert proc.poll() is None
    replica.resume_replay()
    code, summary, err = finish(proc)
    waited = time.monotonic() - first_batch
    assert code == 0, err
    assert summary["rows_remaining"] == 0 and len(remaining_messages(engine)) < held <= before
    details = summary["details"]
    assert details["throttle_waits"] >= 1
    assert 1.5 <= details["throttled_s"] <= waited
    assert details["replica_lag_max_s"] > BOUND_S
    assert "over --max-replica-lag 1 s: waiting" in err
    assert "within --max-replica-lag again" in err
    assert summary["warnings"] == []


@pytest.mark.parametrize(("policy", "code", "outcome"), [("continue", 0, "done"), ("stop", 4, "partial")])
def test_a_replica_that_goes_away_is_a_warning_and_a_bounded_wait(
    pair: tuple[OwnPostgres, OwnReplica], dify_db: tuple[str, Engine], policy: str, code: int, outcome: str
) -> None:
    _, replica = pair
    url, engine = dify_db
    replica.pause_replay()  # the run waits on it first, so it is surely mid-run when the replica goes
    proc = start(
        url, "--max-replica-lag", str(BOUND_S), "--on-replica-lost", policy, DIFYMAINT_REPLICA_LOST_WAIT_S="1.5"
    )
    try:
        wait_for("the job to connect", lambda: connected(engine), proc)
        time.sleep(BOUND_S + 0.5)
        replica.halt()
        started = time.monotonic()
        got, summary, err = finish(proc)
        took = time.monotonic() - started
    finally:
        replica.restart()
    assert got == code, err
    assert summary["outcome"] == outcome
    assert 1.5 <= took < 15, "the wait for the lost replica is bounded"
    gone = [w for w in summary["warnings"] if "disappeared" in w]
    assert len(gone) == 1 and "waiting up to 1.5 s" in gone[0]
    if policy == "stop":
        assert summary["stop_reason"] == "replica-lost" and summary["rows_remaining"] > 0
    else:
        assert summary["rows_remaining"] == 0
        assert any("going on without it" in w for w in summary["warnings"])


def test_a_primary_without_replicas_is_a_no_op(pg_url: str) -> None:
    engine = sa.create_engine(pg_url, poolclass=NullPool)
    seed(engine, NOW, per_tenant=4)
    proc = start(pg_url, "--max-replica-lag", "0.5")
    code, summary, err = finish(proc)
    engine.dispose()
    assert code == 0, err
    assert summary["details"]["throttled_s"] == 0 and summary["details"]["throttle_waits"] == 0
    assert summary["warnings"] == []
    assert "no streaming replica is connected" in err


def test_a_role_without_pg_monitor_gets_one_warning_and_replica_url_reads_the_replica(
    pair: tuple[OwnPostgres, OwnReplica], dify_db: tuple[str, Engine]
) -> None:
    _, replica = pair
    url, engine = dify_db
    blind = sa.make_url(url).set(username=BLIND_ROLE)
    proc = start(blind.render_as_string(hide_password=False), "--max-replica-lag", str(BOUND_S), "--max-batches", "5")
    code, summary, err = finish(proc)
    assert code == 4, err  # partial: --max-batches
    blind_warnings = [w for w in summary["warnings"] if "pg_monitor" in w]
    assert len(blind_warnings) == 1 and "not throttling" in blind_warnings[0]
    assert err.count("may not read the replicas' positions") == 1
    assert summary["details"]["throttled_s"] == 0

    # The same role reading the lag on the replica itself does throttle; the URL's password is never shown.
    replica_url = f"postgresql://{BLIND_ROLE}:{SECRET}@127.0.0.1:{replica.port}/postgres"
    replica.pause_replay()
    # ~24 batches remain: a longer pause keeps the run going well past the moment the lag passes the bound
    # (at the default 100 ms it could finish first on a fast machine and never be throttled).
    proc = start(
        blind.render_as_string(hide_password=False),
        *("--max-replica-lag", str(BOUND_S), "--replica-url", replica_url, "--sleep-ms", "300"),
    )
    wait_for("the job to connect", lambda: connected(engine), proc)
    time.sleep(BOUND_S + 1.0)
    replica.resume_replay()
    code, summary, err = finish(proc)
    assert code == 0, err
    assert summary["details"]["throttled_s"] > 0 and summary["warnings"] == []
    assert f"replica 127.0.0.1:{replica.port} lags" in err
    assert SECRET not in err and SECRET not in json.dumps(summary)
