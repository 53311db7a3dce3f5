"""The pause after a batch (engine/pacing.py): Dify's random pause, the duty cycle, and the workload's lock-wait
signal, read on a real PostgreSQL while another session really waits on the batch's row lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.engine.pacing import Pacer


def test_the_longest_pause_wins_and_sleep_ms_0_turns_pacing_off() -> None:
    pacer = Pacer(200, coef=2.0)
    # the duty cycle: at least twice a 300 ms batch, above Dify's 0-200 ms
    assert all(0.6 <= pacer.pause(seconds=0.3, scanned=10, requested=10, blocked=0) <= 0.6 for _ in range(20))
    # a fast batch: Dify's random pause (capped at 200 ms) is the longer one at times, never below 2 × 10 ms
    pauses = [pacer.pause(seconds=0.01, scanned=10, requested=10, blocked=0) for _ in range(200)]
    assert min(pauses) >= 0.02 and max(pauses) <= 0.2 and max(pauses) > 0.1
    # others waited on the batch's locks: at least as long as the batch took
    assert Pacer(200).pause(seconds=0.5, scanned=10, requested=10, blocked=1) >= 0.5
    assert Pacer(0, coef=5.0).pause(seconds=1.0, scanned=10, requested=10, blocked=3) == 0.0


@pytest.fixture
def messages_table(pg_engine: Engine) -> Iterator[Engine]:
    with pg_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE paced (id int PRIMARY KEY, note text)"))
        conn.execute(sa.text("INSERT INTO paced SELECT g, 'x' FROM generate_series(1, 10) g"))
    yield pg_engine


@pytest.mark.postgres
def test_a_session_waiting_on_the_batch_is_seen_before_the_commit(messages_table: Engine) -> None:
    pacer = Pacer(200)
    waited: list[float] = []

    def blocked_update() -> None:
        started = time.monotonic()
        with messages_table.begin() as other:
            other.execute(sa.text("UPDATE paced SET note = 'y' WHERE id = 3"))
        waited.append(time.monotonic() - started)

    with messages_table.begin() as conn:
        assert pacer.blocked_by(conn) == 0  # nobody waits
    with messages_table.begin() as conn:
        conn.execute(sa.text("DELETE FROM paced WHERE id <= 5"))
        other = threading.Thread(target=blocked_update)
        other.start()
        deadline = time.monotonic() + 10
        with messages_table.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
            # until the update really waits on our row lock
            query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            while not watcher.execute(sa.text(query)).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.05)
        # One look per batch, as the run takes it (PostgreSQL keeps one pg_stat_activity snapshot per transaction).
        assert pacer.blocked_by(conn) == 1
    other.join(timeout=10)
    assert waited and pacer.figures() == {"lock_blocked_batches": 1, "lock_blocked_sessions_max": 1}
    # Paced off (--sleep-ms 0): not even looked at.
    with messages_table.begin() as conn:
        assert Pacer(0).blocked_by(conn) == 0
