"""The database connection dies mid-batch (restart, failover, pg_terminate_backend): one clear line, exit 1,
nothing half-done, and the next run completes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import NOW
from tests.scenario import assert_cascade_consistent, remaining_messages, seed
from tests.test_cli import CLEAN_ENV
from tests.test_lock_heartbeat import _wait_for, _waiting_on_lock, rows_locked


def _env(pg_url: str) -> dict[str, str]:
    return {
        **CLEAN_ENV,
        "NO_COLOR": "1",
        "DIFYMAINT_DATABASE_URL": pg_url,
        "DIFYMAINT_USE_REDIS": "false",
        "DIFYMAINT_LOCK_TIMEOUT": "0",
        "DIFYMAINT_STATEMENT_TIMEOUT": "0",
    }


@pytest.mark.postgres
def test_connection_killed_mid_batch_is_a_clear_exit_1(pg_engine: Any, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    before = remaining_messages(pg_engine)
    with rows_locked(pg_url) as blocker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "difymaint", "clean-messages", "--yes", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            env=_env(pg_url),
        )
        try:
            _wait_for("the DELETE to wait on the row lock", lambda: _waiting_on_lock(pg_url))
            blocker.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'difymaint' "
                    "AND wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("difymaint: error: lost the database connection mid-run:"), err
    assert "unexpected OperationalError" not in err and "Traceback" not in err
    assert json.loads(out)["outcome"] == "failed"
    assert remaining_messages(pg_engine) == before  # the open batch rolled back whole
    again = subprocess.run(
        [sys.executable, "-m", "difymaint", "clean-messages", "--yes", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(pg_url),
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stderr
    # (The CLI runs on the real clock, ten days after the scenario's NOW: it may take a few more.)
    assert not remaining_messages(pg_engine) & scenario.all_old()
    assert_cascade_consistent(pg_engine)
