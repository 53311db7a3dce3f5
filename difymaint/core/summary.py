"""The run summary every job returns: what it did, per table, and how the run ended."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from difymaint.core.exit_codes import ExitCode


class Outcome(StrEnum):
    DONE = "done"
    PARTIAL = "partial"  # budget (--max-runtime / --max-batches) reached; work remains
    INTERRUPTED = "interrupted"  # SIGTERM / SIGINT; the open batch finished or rolled back
    SKIPPED_LOCKED = "skipped_locked"
    DISABLED = "disabled"  # a scheduled run of a job Dify's switches turn off: nothing was touched
    FAILED = "failed"
    THRESHOLD_EXCEEDED = "threshold_exceeded"
    PAUSED = "paused"  # `difymaint pause JOB` is in force: the run touched nothing (exit 0)
    REFUSED = "refused"  # a usage or configuration error: nothing ran (exit 2)


@dataclass(frozen=True)
class ExitPolicy:
    """How the settings map two outcomes that are not failures to exit codes (DIFYMAINT_ON_LOCKED,
    DIFYMAINT_ON_PARTIAL): Kubernetes runs them as 0 so a busy lock or a large backlog is no failed Job."""

    on_locked: str = "skip"  # skip (5), fail (1) or ok (0)
    on_partial: str = "partial"  # partial (4) or ok (0)


_EXIT_CODES = {
    Outcome.DONE: ExitCode.OK,
    Outcome.PARTIAL: ExitCode.PARTIAL,
    Outcome.INTERRUPTED: ExitCode.INTERRUPTED_SIGTERM,
    Outcome.SKIPPED_LOCKED: ExitCode.SKIPPED_LOCKED,
    Outcome.DISABLED: ExitCode.OK,
    Outcome.FAILED: ExitCode.FAILED,
    Outcome.THRESHOLD_EXCEEDED: ExitCode.THRESHOLD_EXCEEDED,
    Outcome.PAUSED: ExitCode.OK,
    Outcome.REFUSED: ExitCode.USAGE,
}
_ON_LOCKED = {"skip": ExitCode.SKIPPED_LOCKED, "fail": ExitCode.FAILED, "ok": ExitCode.OK}


def exit_code_of(outcome: Outcome, *, signum: int | None = None, policy: ExitPolicy = ExitPolicy()) -> ExitCode:
    """The one place an outcome becomes an exit code."""
    if outcome is Outcome.INTERRUPTED and signum == 2:
        return ExitCode.INTERRUPTED_SIGINT
    if outcome is Outcome.SKIPPED_LOCKED:
        return _ON_LOCKED[policy.on_locked]
    if outcome is Outcome.PARTIAL and policy.on_partial == "ok":
        return ExitCode.OK  # the next run continues; the outcome still says partial
    return _EXIT_CODES[outcome]


@dataclass
class RunSummary:
    job: str
    dry_run: bool
    started_at: datetime
    window: dict[str, str | None] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    scanned: int = 0
    duration_s: float = 0.0
    outcome: Outcome = Outcome.DONE
    stop_reason: str | None = None
    rows_remaining: int | None = None
    rows_remaining_estimated: bool = False
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    signum: int | None = None  # the signal that interrupted the run
    policy: ExitPolicy = field(default_factory=ExitPolicy)  # set by the runner from the settings
    # What the per-table counts mean, as (done, dry run) wording: most jobs delete, some update.
    verbs: tuple[str, str] = ("deleted", "would delete")
    # Extra tables for a terminal ({"title", "columns", "rows"}), rendered after the summary; --json carries the
    # same figures in details, so these are left out of it.
    display_tables: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verb(self) -> str:
        return self.verbs[1] if self.dry_run else self.verbs[0]

    def add(self, table: str, rows: int) -> None:
        self.tables[table] = self.tables.get(table, 0) + rows

    @property
    def total_rows(self) -> int:
        return sum(self.tables.values())

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_of(self.outcome, signum=self.signum, policy=self.policy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "outcome": self.outcome.value,
            "exit_code": int(self.exit_code),
            "dry_run": self.dry_run,
            "started_at": self.started_at.isoformat(),
            "window": self.window,
            "tables": self.tables,
            "tables_meaning": self.verbs[0],
            "rows_total": self.total_rows,
            "batches": self.batches,
            "scanned": self.scanned,
            "duration_s": round(self.duration_s, 3),
            "stop_reason": self.stop_reason,
            "rows_remaining": self.rows_remaining,
            "rows_remaining_estimated": self.rows_remaining_estimated,
            "warnings": self.warnings,
            "details": self.details,
            "error": self.error,
        }

    def to_json(self) -> str:
        """One line, for `--json` on stdout."""
        return json.dumps(self.to_dict(), default=str, separators=(",", ":"))
