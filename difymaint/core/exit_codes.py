"""The one exit-code contract every difymaint command follows."""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class ExitCode(IntEnum):
    """Process exit codes; documented in the README and relied on by CronJob podFailurePolicy rules."""

    OK = 0
    FAILED = 1
    USAGE = 2  # bad flag, bad env var, bad window: retrying cannot help
    THRESHOLD_EXCEEDED = 3  # monitors: the check ran and found a problem
    PARTIAL = 4  # stopped cleanly at --max-runtime / --max-batches; the next run continues
    SKIPPED_LOCKED = 5  # another run holds the job's lock
    INTERRUPTED_SIGINT = 130  # 128 + SIGINT
    INTERRUPTED_SIGTERM = 143  # 128 + SIGTERM
