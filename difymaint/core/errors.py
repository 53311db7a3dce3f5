"""Operator-facing errors. Each carries the exit code it maps to and an optional hint."""

from __future__ import annotations

from difymaint.core.exit_codes import ExitCode


class DifymaintError(Exception):
    """Base class: rendered as one line on stderr (plus a hint line), never as a traceback."""

    exit_code: ExitCode = ExitCode.FAILED
    reference: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(DifymaintError):
    """A setting (env var, .env file, flag) is missing or malformed."""

    exit_code = ExitCode.USAGE
    reference = "bad-config"


class UsageError(ConfigError):
    """Flags that do not fit together (e.g. half of a window pair)."""

    reference = "bad-usage"


class DatabaseUnavailable(DifymaintError):
    reference = "database-unreachable"


class RedisUnavailable(DifymaintError):
    reference = "redis-unreachable"


class BillingUnavailable(DifymaintError):
    """The billing API could not answer a question the job cannot safely guess (fail closed)."""

    reference = "billing-unavailable"


class SchemaMismatch(DifymaintError):
    """The live database lacks a table or column the job needs (older or newer Dify)."""

    reference = "schema-mismatch"


class LockHeld(DifymaintError):
    """Another run (difymaint or Dify's own beat) holds the job's lock."""

    exit_code = ExitCode.SKIPPED_LOCKED
    reference = "lock-held"


class LockLost(DifymaintError):
    """Our lock expired or was taken over mid-run; stop at once, someone else owns the work now."""

    reference = "lock-lost"
