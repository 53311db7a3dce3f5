"""What the TiDB client tests and the TiDB job tests share: the stub's project, the variables to clear, and a
clock that moves only when the code under test sleeps (its backoff)."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.conftest import NOW, FixedClock

PROJECT = "1372813089209061633"
# Cleared before every TiDB test, so that the machine's environment cannot leak into a run.
TIDB_VARS = (
    "TIDB_API_URL",
    "TIDB_IAM_API_URL",
    "TIDB_PUBLIC_KEY",
    "TIDB_PRIVATE_KEY",
    "TIDB_PROJECT_ID",
    "TIDB_REGION",
    "TIDB_SPEND_LIMIT",
    "TIDB_SERVERLESS_NUMBER",
    "CREATE_TIDB_SERVICE_JOB_ENABLED",
    "ENABLE_CREATE_TIDB_SERVERLESS_TASK",
    "ENABLE_UPDATE_TIDB_SERVERLESS_STATUS_TASK",
    "DIFYMAINT_TIDB_TIMEOUT",
    "DIFYMAINT_TIDB_MAX_REQUESTS",
    "DIFYMAINT_TIDB_MAX_SECONDS",
    "DIFYMAINT_TIDB_LEAK_FILE",
)


class FakeClock(FixedClock):
    """Wall and monotonic time that move only when the code under test sleeps, from a fixed now."""

    def __init__(self, now: datetime = NOW) -> None:
        super().__init__(now)
        self.t = 0.0

    def now(self) -> datetime:
        return self._now + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
