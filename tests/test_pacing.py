"""The pause after a batch (engine/pacing.py): Dify's random pause, the duty cycle scaled by the workload's
pressure, and the lock signal, read on a real PostgreSQL while another session really waits on the batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.engine.pacing import Contention, Pacer

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
        assert pacer.look(conn) == BLOCKED
    other.join(timeout=10)
    assert waited
    assert pacer.pressure == 0.5  # one contended look out of two, the newest weighing half
    figures = pacer.figures()
    assert figures["lock_blocked_batches"] == 1 and figures["contended_batches"] == 1
    # Paced off (--sleep-ms 0): not even looked at.
    with paced_table.begin() as conn:
        assert Pacer(0).look(conn) == QUIET and Pacer(0).figures() == {}
