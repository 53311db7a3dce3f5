"""What the console commands share: the history store, JSON output, ages and times as an operator reads
them, job-name and time checks, and the group whose first word may be left out (``difymaint history JOB``
is ``difymaint history list JOB``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from difymaint.jobs import JobInfo

if TYPE_CHECKING:
    from difymaint.cli.render import Consoles
    from difymaint.core.context import Context
    from difymaint.ops.history import HistoryStore


class DefaultCommandGroup(TyperGroup):
    """A command group with a default subcommand: words that name no subcommand go to ``list``."""

    default_command = "list"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        completing = ctx.resilient_parsing  # shell completion: offer the subcommands, guess nothing
        if not completing and (not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names)):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def command_group(name: str, help: str, short_help: str) -> typer.Typer:
    """A sub-app whose bare form (``difymaint NAME``) runs its ``list`` command."""
    return typer.Typer(name=name, cls=DefaultCommandGroup, help=help, short_help=short_help, add_completion=False)


def history_store(ctx: Context) -> HistoryStore:
    from difymaint.core.errors import ConfigError
    from difymaint.ops.history import HistoryStore, history_enabled

    if not history_enabled(ctx.settings):
        raise ConfigError("run history is off (DIFYMAINT_HISTORY=off)", hint="unset DIFYMAINT_HISTORY to use it")
    return HistoryStore(ctx.engine)


def print_json(consoles: Consoles, data: Any) -> None:
    """One JSON document on stdout, masked as data (core/redact.py) so that it stays valid JSON."""
    from difymaint.cli.render import unscrubbed
    from difymaint.core.redact import dumps_masked

    out = unscrubbed(consoles.out.file)
    out.write(dumps_masked(data) + "\n")
    out.flush()


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


OUTCOME_STYLE = {
    "done": "green",
    "running": "cyan",
    "partial": "yellow",
    "interrupted": "yellow",
    "skipped_locked": "yellow",
    "failed": "red",
    "threshold_exceeded": "red",
    "paused": "dim",
    "disabled": "dim",
}


def outcome(value: str) -> str:
    style = OUTCOME_STYLE.get(value, "white")
    return f"[{style}]{value}[/{style}]"


def check_job(name: str, jobs: Mapping[str, JobInfo]) -> None:
    from difymaint.core.errors import UsageError

    if name not in jobs:
        raise UsageError(f"no job named {name!r}", hint=f"one of: {', '.join(jobs)}")


def parse_now(value: str | None) -> datetime:
    from difymaint.core.errors import UsageError

    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now {value!r} is not an ISO date-time", hint="e.g. 2026-11-24T04:00:30Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_since(value: str | None) -> datetime | None:
    from difymaint.core.errors import UsageError

    if value is None:
        return None
    if value.isdigit():
        return datetime.now(UTC) - timedelta(days=int(value))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--since {value!r} is neither a number of days nor a date", hint="e.g. 7 or 2026-11-01"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
