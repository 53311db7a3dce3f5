"""How jobs tell the operator what is happening, without knowing about terminals.

The CLI supplies a Rich implementation (progress bar on a TTY) or a plain-log one; tests use a recorder.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

# Fields every log line of the current run carries (job, run id, dry run), set by the runner.
log_context: ContextVar[dict[str, object] | None] = ContextVar("difymaint_log_context", default=None)


@dataclass(frozen=True)
class BatchProgress:
    job: str
    batch_no: int
    scanned: int  # parent rows read by this batch
    affected: int  # parent rows deleted (or that would be, in a dry run)
    total_affected: int
    batch_size: int  # the size the next batch will use
    seconds: float
    dry_run: bool
    verb: str = "deleted"  # the run summary's verb for this run (dry-run wording included)


class Reporter(Protocol):
    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def batch(self, progress: BatchProgress) -> None: ...

    def close(self) -> None: ...


log = logging.getLogger("difymaint")


def batch_fields(progress: BatchProgress) -> dict[str, object]:
    """The batch as structured log fields (``--log-format json``)."""
    return {
        "batch": progress.batch_no,
        "scanned": progress.scanned,
        "rows": progress.affected,
        "rows_total": progress.total_affected,
        "ms": round(progress.seconds * 1000),
        "next_batch_size": progress.batch_size,
        "dry_run": progress.dry_run,
    }


def describe_batch(progress: BatchProgress) -> str:
    """The one-line description of a batch used by every plain-text reporter."""
    return (
        f"{progress.job} batch {progress.batch_no}: scanned {progress.scanned}, {progress.verb} {progress.affected} "
        f"(total {progress.total_affected}) in {progress.seconds * 1000:.0f} ms; next batch size {progress.batch_size}"
    )


class LogReporter:
    """Plain log lines (cron mail, kubectl logs)."""

    def info(self, message: str) -> None:
        log.info(message)

    def warning(self, message: str) -> None:
        log.warning(message)

    def batch(self, progress: BatchProgress) -> None:
        log.info("%s", describe_batch(progress), extra={"fields": batch_fields(progress)})

    def close(self) -> None:
        return None


@dataclass
class RecordingReporter:
    """Collects everything; used by tests and by the demo."""

    infos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    batches: list[BatchProgress] = field(default_factory=list)

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def batch(self, progress: BatchProgress) -> None:
        self.batches.append(progress)

    def close(self) -> None:
        return None


def human_bytes(count: int | None) -> str:
    """A byte count as an operator reads it (binary units: 1536 → "1.5 KiB"); None → "?"."""
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
