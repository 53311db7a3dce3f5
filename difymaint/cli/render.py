"""Everything that touches a terminal: consoles, logging, progress, and the rendered summary.

stdout carries results (the summary table, or the one-line ``--json``); stderr carries logs and progress.
Rich honours NO_COLOR, FORCE_COLOR and TERM=dumb; ``--color/--no-color`` overrides.
"""

from __future__ import annotations

import io
import json
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from difymaint.core.redact import RedactingFilter, scrub
from difymaint.core.reporter import BatchProgress, batch_fields, describe_batch, log_context
from difymaint.core.summary import Outcome, RunSummary


@dataclass
class Consoles:
    out: Console
    err: Console

    @classmethod
    def create(cls, color: bool | None, *, out: IO[str] | None = None, err: IO[str] | None = None) -> Consoles:
        kwargs: dict[str, Any] = {}
        if color is True:
            kwargs["force_terminal"] = True
        elif color is False:
            kwargs["no_color"] = True
        return cls(
            out=Console(file=out, highlight=False, soft_wrap=True, **kwargs),
            err=Console(file=err, stderr=err is None, highlight=False, **kwargs),
        )


class ScrubbedStream(io.TextIOBase):
    """A text stream that scrubs what goes through it (core/redact.py), for the console commands' tables and
    lines: rich writes each rendered print in one call. Their JSON goes to :attr:`unscrubbed`, masked as data."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.unscrubbed = stream

    def write(self, text: str) -> int:
        self.unscrubbed.write(scrub(text))
        return len(text)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self.unscrubbed.flush()

    def isatty(self) -> bool:
        return self.unscrubbed.isatty()

    def fileno(self) -> int:
        return self.unscrubbed.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.unscrubbed, "encoding", None) or "utf-8"


def unscrubbed(stream: IO[str]) -> IO[str]:
    """The stream under a :class:`ScrubbedStream` (the stream itself otherwise)."""
    inner: IO[str] = getattr(stream, "unscrubbed", stream)
    return inner


_json_logs: ContextVar[bool] = ContextVar("difymaint_json_logs", default=False)


@dataclass(frozen=True)
class GlobalOutput:
    """``difymaint -v/-q COMMAND``: the root's output options, added to the command's own."""

    verbose: int = 0
    quiet: int = 0


global_output: ContextVar[GlobalOutput | None] = ContextVar("difymaint_global_output", default=None)


def root_output() -> GlobalOutput:
    return global_output.get() or GlobalOutput()


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: RFC 3339 UTC timestamps with milliseconds, the run's job and id, and the
    record's own fields (a batch's number, rows, milliseconds)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        payload: dict[str, object] = {
            "ts": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            **(log_context.get() or {}),
            "msg": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        return json.dumps(payload, default=str)


def setup_logging(consoles: Consoles, *, verbosity: int, log_format: str) -> None:
    level = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO}.get(max(-2, min(verbosity, 0)), logging.DEBUG)
    if verbosity >= 1:
        level = logging.DEBUG
    logger = logging.getLogger("difymaint")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level)
    handler: logging.Handler
    _json_logs.set(log_format == "json")
    if log_format == "json":
        handler = logging.StreamHandler(consoles.err.file)
        handler.setFormatter(JsonLogFormatter())
    elif consoles.err.is_terminal:
        handler = RichHandler(console=consoles.err, show_path=False, markup=False, rich_tracebacks=False)
    else:
        handler = logging.StreamHandler(consoles.err.file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    # On the handler, not the logger: records of child loggers ("difymaint.x") reach it without passing the
    # parent logger's filters.
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)


log = logging.getLogger("difymaint")


@dataclass
class ConsoleReporter:
    """Progress bar on a terminal; otherwise a log line per batch, at most every few seconds."""

    consoles: Consoles
    show_progress: bool
    log_every_s: float = 5.0
    _progress: Progress | None = None
    _task: Any = None
    _last_log: float = field(default=0.0)

    def info(self, message: str) -> None:
        log.info(message)

    def warning(self, message: str) -> None:
        log.warning(message)

    def batch(self, progress: BatchProgress) -> None:
        verb = progress.verb
        if self.show_progress:
            if self._progress is None:
                self._progress = Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    BarColumn(bar_width=None),
                    TextColumn("{task.fields[status]}"),
                    TimeElapsedColumn(),
                    console=self.consoles.err,
                    transient=True,
                )
                self._progress.start()
                self._task = self._progress.add_task(progress.job, total=None, status="")
            self._progress.update(
                self._task,
                status=f"batch {progress.batch_no} · {verb} {progress.total_affected:,} · size {progress.batch_size}",
            )
            return
        now = time.monotonic()
        if progress.batch_no == 1 or now - self._last_log >= self.log_every_s:
            self._last_log = now
            log.info("%s", describe_batch(progress), extra={"fields": batch_fields(progress)})

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


_OUTCOME_STYLE = {
    Outcome.DONE: "green",
    Outcome.PARTIAL: "yellow",
    Outcome.INTERRUPTED: "yellow",
    Outcome.SKIPPED_LOCKED: "yellow",
    Outcome.DISABLED: "dim",
    Outcome.FAILED: "red",
    Outcome.THRESHOLD_EXCEEDED: "red",
    Outcome.PAUSED: "dim",
}


def render_summary(consoles: Consoles, summary: RunSummary) -> None:
    """The human summary on stdout."""
    verb = summary.verb
    title = f"{summary.job}{' (dry run)' if summary.dry_run else ''}"
    if summary.tables or not summary.display_tables:
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("table")
        table.add_column(f"rows {verb}", justify="right")
        for name, count in summary.tables.items():
            table.add_row(name, f"{count:,}")
        table.add_row("[b]total[/b]", f"[b]{summary.total_rows:,}[/b]")
        consoles.out.print(table)
    for extra in summary.display_tables:
        shown = Table(title=escape(str(extra["title"])), title_justify="left", show_edge=False, pad_edge=False)
        for index, column in enumerate(extra["columns"]):
            shown.add_column(escape(str(column)), justify="left" if index == 0 else "right")
        for row in extra["rows"]:
            shown.add_row(*(escape(str(cell)) for cell in row))
        consoles.out.print(shown)
    style = _OUTCOME_STYLE.get(summary.outcome, "white")
    window = summary.window
    span = f"{window.get('start_from') or '-∞'} .. {window.get('end_before')}" if window.get("end_before") else ""
    line = (
        f"[{style}]{summary.outcome.value}[/{style}] in {summary.duration_s:.1f}s · {summary.batches} batches · "
        f"scanned {summary.scanned:,}"
    )
    if span:
        line += f" · window {span}"
    if summary.stop_reason:
        line += f" · stopped by {summary.stop_reason}"
    if summary.rows_remaining not in (None, 0):
        approx = "~" if summary.rows_remaining_estimated else ""
        line += f" · {approx}{summary.rows_remaining:,} rows remain"
    consoles.out.print(line)


def error_line(consoles: Consoles, message: str, hint: str | None = None) -> None:
    """Exactly one line on stderr: the error, and the hint after a dash (a JSON record under
    ``--log-format json``, so a log pipeline sees the fatal line too). Secrets are scrubbed either way."""
    if _json_logs.get():
        log.error(scrub(message), extra={"fields": {"hint": scrub(hint)} if hint else {}})
        return
    text = f"[red]difymaint: error:[/red] {escape(scrub(message))}"
    if hint:
        text += f" [dim]— {escape(scrub(hint))}[/dim]"
    consoles.err.print(text, markup=True, highlight=False, soft_wrap=True)
