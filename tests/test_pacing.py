"""The pause after a batch (engine/pacing.py): Dify's random pause, the duty cycle scaled by the workload's
pressure, the lock signal, and the shorter batches while others use the database, read on a real PostgreSQL
while another session really waits on the batch or really runs statements beside it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.window import TimeWindow
from difymaint.engine.options import RunOptions
from difymaint.engine.pacing import Contention, Pacer
from difymaint.jobs import clean_messages
from difymaint.jobs.clean_messages import CleanMessagesParams
from difymaint.jobs.execute import run_job
from tests.conftest import NOW, make_context
from tests.scenario import seed

QUIET, WAL, BLOCKED = Contention(), Contention(wal=2), Contention(blocked=1)


def test_the_longest_pause_wins_and_sleep_ms_0_turns_pacing_off() -> None:
    # Nobody else around: Dify's random pause only, whatever the coefficient.
    pacer = Pacer(200, coef=2.0)
    quiet = [pacer.pause(seconds=0.3, scanned=10, requested=10, seen=QUIET) for _ in range(200)]
    assert max(quiet) <= 0.2 and pacer.pressure == 0.0
    # Under sustained pressure (others wait on the WAL at every batch) the duty cycle takes over: ~2 × 300 ms.
    pacer.pressure = 1.0
    assert pacer.pause(seconds=0.3, scanned=10, requested=10, seen=WAL) == pytest.approx(0.6)
    # Others waiting on the batch's own locks: at least as long as the batch took, pressure or not.
    assert Pacer(200).pause(seconds=0.5, scanned=10, requested=10, seen=BLOCKED) >= 0.5
    assert Pacer(0, coef=5.0).pause(seconds=1.0, scanned=10, requested=10, seen=BLOCKED) == 0.0


@pytest.fixture
def paced_table(pg_engine: Engine) -> Iterator[Engine]:
    with pg_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE paced (id int PRIMARY KEY, note text)"))
        conn.execute(sa.text("INSERT INTO paced SELECT g, 'x' FROM generate_series(1, 10) g"))
    yield pg_engine


@pytest.mark.postgres
def test_a_session_waiting_on_the_batch_is_seen_before_the_commit(paced_table: Engine) -> None:
    pacer = Pacer(200, coef=1.0)
    waited: list[float] = []

    def blocked_update() -> None:
        started = time.monotonic()
        with paced_table.begin() as other:
            other.execute(sa.text("UPDATE paced SET note = 'y' WHERE id = 3"))
        waited.append(time.monotonic() - started)

    with paced_table.begin() as conn:
        assert pacer.look(conn) == QUIET  # nobody waits
    with paced_table.begin() as conn:
        conn.execute(sa.text("DELETE FROM paced WHERE id <= 5"))
        other = threading.Thread(target=blocked_update)
        other.start()
        deadline = time.monotonic() + 10
        with paced_table.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
            # until the update really waits on our row lock
            query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            while not watcher.execute(sa.text(query)).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.05)
        # One look per batch, as the run takes it (PostgreSQL keeps one pg_stat_activity snapshot per transaction).
        seen = pacer.look(conn)
        assert (seen.blocked, seen.wal) == (1, 0)
        assert seen.traffic >= 1  # the waiting update (and the watcher) ran statements during the batch
    other.join(timeout=10)
    assert waited
    assert pacer.pressure == 0.5  # one contended look out of two, the newest weighing half
    figures = pacer.figures()
    assert figures["lock_blocked_batches"] == 1 and figures["contended_batches"] == 1
    # Paced off (--sleep-ms 0): not even looked at.
    with paced_table.begin() as conn:
        assert Pacer(0).look(conn) == QUIET and Pacer(0).figures() == {}


def test_the_batch_target_follows_the_share_of_batches_that_ran_beside_other_sessions() -> None:
    pacer = Pacer(200, shared_target_s=0.05)
    assert pacer.batch_target_s(0.3) == 0.3  # nothing looked at yet
    pacer.looks, pacer.traffic = 1, 1.0
    assert pacer.batch_target_s(0.3) == pytest.approx(0.05)  # busy all the time: the shared target
    pacer.traffic = 0.5
    assert pacer.batch_target_s(0.3) == pytest.approx((0.3 * 0.05) ** 0.5)  # geometrically in between
    pacer.traffic = 0.0
    assert pacer.batch_target_s(0.3) == pytest.approx(0.3)  # nobody else: the long batches
    assert pacer.batch_target_s(0.0) == 0.0  # DIFYMAINT_TARGET_BATCH_MS=0 keeps the size fixed
    assert pacer.batch_target_s(0.02) == pytest.approx(0.02)  # never longer than the full target
    off = Pacer(200, watch_locks=False, shared_target_s=0.0)
    assert not off.watching and off.batch_target_s(0.3) == 0.3
    assert Pacer(0, shared_target_s=0.05).watching is False  # --sleep-ms 0: full speed, nothing looked at


@pytest.mark.postgres
def test_a_look_sees_sessions_that_ran_statements_during_the_batch_and_not_idle_ones(pg_engine: Engine) -> None:
    pacer = Pacer(200, shared_target_s=0.05)
    with pg_engine.connect() as idle:
        idle.execute(sa.text("SELECT 1"))  # last ran before the batch: not traffic
        idle.commit()
        time.sleep(0.01)
        with pg_engine.begin() as conn:
            assert pacer.look(conn).traffic == 0
        assert pacer.traffic == 0.0 and pacer.batch_target_s(0.3) == pytest.approx(0.3)
        with pg_engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
            idle.execute(sa.text("SELECT 1"))  # another session runs a statement while the batch is open
            idle.commit()
            assert pacer.look(conn).traffic == 1
    assert pacer.traffic == 0.5 and pacer.figures()["traffic_batches"] == 1


def clean_old_messages(pg_engine: Engine, pg_url: str) -> Any:
    scenario = seed(pg_engine, NOW, per_tenant=6)
    ctx = make_context(pg_url, DIFYMAINT_SHARED_BATCH_MS=40)
    params = CleanMessagesParams(
        window=TimeWindow(end_before=scenario.cutoff), run=RunOptions(batch_size=4, sleep_ms=1)
    )
    return run_job(clean_messages, ctx, params)


@pytest.mark.postgres
def test_a_run_beside_a_busy_session_aims_at_the_shared_target(pg_engine: Engine, pg_url: str) -> None:
    stop = threading.Event()

    def busy() -> None:  # an application's session, running statements all the time
        with pg_engine.connect() as conn:
            while not stop.is_set():
                conn.execute(sa.text("SELECT pg_sleep(0.002)"))
                conn.commit()

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        summary = clean_old_messages(pg_engine, pg_url)
    finally:
        stop.set()
        worker.join(timeout=10)
    assert summary.exit_code == 0 and summary.batches >= 3
    assert summary.details["traffic_batches"] == summary.batches
    assert summary.details["batch_target_ms"] == 40


@pytest.mark.postgres
def test_a_run_on_a_database_nobody_else_uses_keeps_the_full_target(pg_engine: Engine, pg_url: str) -> None:
    summary = clean_old_messages(pg_engine, pg_url)  # the run's own sessions do not count as traffic
    assert summary.exit_code == 0 and summary.batches >= 3
    assert summary.details["traffic_batches"] == 0
    assert summary.details["batch_target_ms"] == 300
