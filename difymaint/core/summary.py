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
    exit_code_override: ExitCode | None = None
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
        if self.exit_code_override is not None:
            return self.exit_code_override
        return {
            Outcome.DONE: ExitCode.OK,
            Outcome.PARTIAL: ExitCode.PARTIAL,
            Outcome.INTERRUPTED: ExitCode.INTERRUPTED_SIGTERM,
            Outcome.SKIPPED_LOCKED: ExitCode.SKIPPED_LOCKED,
            Outcome.DISABLED: ExitCode.OK,
            Outcome.FAILED: ExitCode.FAILED,
            Outcome.THRESHOLD_EXCEEDED: ExitCode.THRESHOLD_EXCEEDED,
            Outcome.PAUSED: ExitCode.OK,
        }[self.outcome]

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
