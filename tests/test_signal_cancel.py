"""SIGTERM/SIGINT while a statement waits on a row lock: the watcher cancels it after the grace period, the
batch rolls back, and the run exits 143/130 with its JSON summary within seconds (not when the lock frees)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from difymaint.core.stop import CANCEL_GRACE_S
from tests.conftest import NOW
from tests.scenario import assert_cascade_consistent, remaining_messages, seed
from tests.test_cli import CLEAN_ENV
from tests.test_lock_heartbeat import _wait_for, _waiting_on_lock, rows_locked


@pytest.mark.postgres
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_cancels_a_blocked_statement(pg_engine: Any, pg_url: str, signum: int, code: int) -> None:
    seed(pg_engine, NOW)
    before = remaining_messages(pg_engine)
    with rows_locked(pg_url):
        proc = subprocess.Popen(
            [sys.executable, "-m", "difymaint", "clean-messages", "--yes", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            env={
                **CLEAN_ENV,
                "NO_COLOR": "1",
                "DIFYMAINT_DATABASE_URL": pg_url,
                "DIFYMAINT_USE_REDIS": "false",
                "DIFYMAINT_LOCK_TIMEOUT": "0",  # without the cancel, the DELETE would wait forever
                "DIFYMAINT_STATEMENT_TIMEOUT": "0",
            },
        )
        try:
            _wait_for("the DELETE to wait on the row lock", lambda: _waiting_on_lock(pg_url))
            sent = time.monotonic()
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=30)  # the row lock is still held here
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == code, err
    assert took < CANCEL_GRACE_S + 5, took
    summary = json.loads(out)
    assert summary["outcome"] == "interrupted" and summary["stop_reason"].startswith("signal")
    assert remaining_messages(pg_engine) == before  # the cancelled batch rolled back whole
    assert summary["tables"]["messages"] == 0
    assert_cascade_consistent(pg_engine)
