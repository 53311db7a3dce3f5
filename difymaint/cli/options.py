"""Shared option definitions, so every job has the same flags with the same help (sqlfluff-style).

Every option defaults to None: only flags the operator actually gave are overlaid on the settings.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer

if TYPE_CHECKING:
    from difymaint.core.run import RunOptions
    from difymaint.core.window import TimeWindow

CONNECTION = "Connection"
RUN = "Run control"
WINDOW = "Time window"
OUTPUT = "Output"

EnvFile = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        metavar="PATH",
        envvar="DIFYMAINT_ENV_FILE",
        help="Dify's .env file to read settings from.",
        rich_help_panel=CONNECTION,
        show_envvar=True,
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL; overrides DB_* (also DIFYMAINT_DATABASE_URL).",
        rich_help_panel=CONNECTION,
    ),
]
RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        metavar="URL",
        help="redis:// URL; overrides REDIS_* (also DIFYMAINT_REDIS_URL).",
        rich_help_panel=CONNECTION,
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", "-n", help="Count what would be deleted, per table; change nothing.", rich_help_panel=RUN
    ),
]
Yes = Annotated[
    bool | None,
    typer.Option(
        "--yes",
        "-y",
        help="Do not ask for confirmation (needed when stdin is not a terminal).",
        rich_help_panel=RUN,
    ),
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size", metavar="N", min=1, max=100000, help="Parent rows per batch to start with.", rich_help_panel=RUN
    ),
]
SleepMs = Annotated[
    int | None,
    typer.Option(
        "--sleep-ms",
        metavar="MS",
        min=0,
        help="Random pause of up to this many ms after each deleting batch.",
        rich_help_panel=RUN,
    ),
]
MaxRuntime = Annotated[
    float | None,
    typer.Option(
        "--max-runtime",
        min=1,
        metavar="SECONDS",
        help="Stop cleanly after this many seconds (outcome partial, exit 4).",
        rich_help_panel=RUN,
    ),
]
MaxBatches = Annotated[
    int | None,
    typer.Option(
        "--max-batches",
        metavar="N",
        min=1,
        help="Stop cleanly after this many batches (outcome partial, exit 4).",
        rich_help_panel=RUN,
    ),
]
LockTtl = Annotated[
    int | None,
    typer.Option(
        "--lock-ttl",
        min=10,
        metavar="SECONDS",
        help="Lock lease, renewed per batch (DIFYMAINT_LOCK_TTL).",
        rich_help_panel=RUN,
    ),
]
Scheduled = Annotated[
    bool,
    typer.Option(
        "--scheduled",
        envvar="DIFYMAINT_SCHEDULED",
        help="An unattended scheduled run: do nothing (exit 0) unless Dify's switch for this job is on "
        "(or DIFYMAINT_ENABLE_<JOB>=true). The generated crontab and CronJobs pass it.",
        rich_help_panel=RUN,
    ),
]
NoLock = Annotated[
    bool,
    typer.Option("--no-lock", help="Run without the single-flight lock (not recommended).", rich_help_panel=RUN),
]
FailIfLocked = Annotated[
    bool | None,
    typer.Option("--fail-if-locked", help="Exit 1 instead of 5 when another run holds the lock.", rich_help_panel=RUN),
]
VacuumAnalyze = Annotated[
    bool,
    typer.Option(
        "--vacuum-analyze",
        help="After a real run, VACUUM (ANALYZE) the tables it deleted from (PostgreSQL; never VACUUM FULL).",
        rich_help_panel=RUN,
    ),
]
Days = Annotated[
    int | None,
    typer.Option(
        "--days",
        "--before-days",
        metavar="DAYS",
        min=1,
        help="Delete rows older than this many days.",
        rich_help_panel=WINDOW,
    ),
]
StartFrom = Annotated[
    str | None,
    typer.Option("--start-from", metavar="DATE", help="Window start, UTC (with --end-before).", rich_help_panel=WINDOW),
]
EndBefore = Annotated[
    str | None,
    typer.Option("--end-before", metavar="DATE", help="Window end (exclusive), UTC.", rich_help_panel=WINDOW),
]
FromDaysAgo = Annotated[
    int | None,
    typer.Option(
        "--from-days-ago",
        metavar="DAYS",
        min=1,
        help="Window start in days ago (with --to-days-ago).",
        rich_help_panel=WINDOW,
    ),
]
ToDaysAgo = Annotated[
    int | None,
    typer.Option("--to-days-ago", metavar="DAYS", min=0, help="Window end in days ago.", rich_help_panel=WINDOW),
]
TenantIds = Annotated[
    str | None,
    typer.Option("--tenant-ids", metavar="IDS", help="Comma-separated workspace ids to limit the run to."),
]
OrphanManifestPath = Annotated[
    Path | None,
    typer.Option(
        "--orphan-manifest",
        metavar="PATH",
        help="Append the storage keys of upload_files this run orphans, as JSON lines.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON summary line on stdout.", rich_help_panel=OUTPUT)]
Verbose = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output.", rich_help_panel=OUTPUT)]
Quiet = Annotated[int, typer.Option("--quiet", "-q", count=True, help="Less output.", rich_help_panel=OUTPUT)]
LogFormat = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        metavar="text|json",
        help="Log line format on stderr (default: text).",
        rich_help_panel=OUTPUT,
    ),
]
Color = Annotated[
    bool | None,
    typer.Option(
        "--color/--no-color",
        help="Force colour on or off (default: auto, NO_COLOR honoured).",
        rich_help_panel=OUTPUT,
    ),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.", rich_help_panel=OUTPUT)]


@dataclass(frozen=True)
class Common:
    """The connection, run-control and output options every job command takes."""

    env_file: Path | None = None
    database_url: str | None = None
    redis_url: str | None = None
    dry_run: bool = False
    yes: bool | None = None
    max_runtime: float | None = None
    max_batches: int | None = None
    lock_ttl: int | None = None
    no_lock: bool = False
    scheduled: bool = False
    fail_if_locked: bool | None = None
    json: bool = False
    verbose: int = 0
    quiet: int = 0
    log_format: str | None = None
    color: bool | None = None
    debug: bool = False
    vacuum_analyze: bool = False

    def run_options(self, *, batch_size: int, sleep_ms: int = 0) -> RunOptions:
        """The core's run options from these flags plus the job's resolved batch size and pacing."""
        from difymaint.core.run import RunOptions

        return RunOptions(
            dry_run=self.dry_run,
            batch_size=batch_size,
            max_runtime_s=self.max_runtime,
            max_batches=self.max_batches,
            sleep_ms=sleep_ms,
            use_lock=not self.no_lock,
            vacuum_analyze=self.vacuum_analyze,
        )

    def overrides(self) -> dict[str, object]:
        """Settings these flags override (None = not given)."""
        return {
            "DIFYMAINT_DATABASE_URL": self.database_url,
            "DIFYMAINT_REDIS_URL": self.redis_url,
            "DIFYMAINT_LOCK_TTL": self.lock_ttl,
            "DIFYMAINT_ON_LOCKED": "fail" if self.fail_if_locked else None,
            "DIFYMAINT_ASSUME_YES": self.yes,
            "DIFYMAINT_SCHEDULED": self.scheduled or None,
        }


def id_filter(raw: str | list[str] | None, option: str) -> tuple[str, ...]:
    """A flag's id filter; () when the flag was not given. Given but empty, or not UUIDs: exit 2."""
    from difymaint.core.ids import parse_ids

    # A repeatable option Typer saw no value for arrives as []; an empty string was given and stays an error.
    return parse_ids(None if raw is None or raw == [] else raw, option) or ()


def setting_id_filter(settings: Any, name: str, option: str) -> tuple[str, ...]:
    """An id filter backed by a Dify setting that its flag overrides (empty setting = no filter, as in Dify)."""
    from difymaint.core.ids import parse_setting_ids

    return (
        parse_setting_ids(getattr(settings, name), f"{option} / {name}", explicitly_set=settings.explicitly_set(name))
        or ()
    )


def _common_options(
    dry_run: DryRun = False,
    yes: Yes = None,
    max_runtime: MaxRuntime = None,
    max_batches: MaxBatches = None,
    lock_ttl: LockTtl = None,
    no_lock: NoLock = False,
    scheduled: Scheduled = False,
    fail_if_locked: FailIfLocked = None,
    vacuum_analyze: VacuumAnalyze = False,
    env_file: EnvFile = None,
    database_url: DatabaseUrl = None,
    redis_url: RedisUrl = None,
    json: Json = False,
    verbose: Verbose = 0,
    quiet: Quiet = 0,
    log_format: LogFormat = None,
    color: Color = None,
    debug: Debug = False,
) -> None:
    """The signature every job command gets appended (see :func:`job_command`)."""


_COMMON_NAMES = {field.name for field in fields(Common)}


def job_command(command: Callable[..., int]) -> Callable[..., int]:
    """Give a job command the shared connection, run-control and output options.

    The command declares only its own options plus a ``common: Common`` parameter; the wrapper's signature
    (what Typer reads) is the command's own options followed by the shared ones, so every job has the same
    flags with the same help, written once. A command may redeclare a shared option (same name) to give it
    job-specific help; its value still lands in ``common``.
    """
    own = inspect.signature(command)
    own_hints = get_type_hints(command, include_extras=True)
    shared = inspect.signature(_common_options)
    shared_hints = get_type_hints(_common_options, include_extras=True)
    assert set(shared.parameters) == _COMMON_NAMES, "Common and _common_options must list the same options"
    parameters = [p.replace(annotation=own_hints[p.name]) for p in own.parameters.values() if p.name != "common"]
    redeclared = {p.name for p in parameters}
    parameters += [
        p.replace(annotation=shared_hints[p.name]) for p in shared.parameters.values() if p.name not in redeclared
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> int:
        common = Common(**{name: kwargs.pop(name) for name in _COMMON_NAMES})
        own_values = {name: getattr(common, name) for name in redeclared & _COMMON_NAMES}
        return command(common=common, **kwargs, **own_values)

    del wrapper.__wrapped__  # Typer must see the merged signature below, not the command's own
    wrapper.__signature__ = own.replace(parameters=parameters, return_annotation=int)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": int}
    return wrapper


def cli_window(
    now: datetime,
    *,
    default_days: int,
    days: int | None,
    start_from: str | None,
    end_before: str | None,
    from_days_ago: int | None,
    to_days_ago: int | None,
) -> TimeWindow:
    """The window from the window flags. ``--days`` has already been overlaid on the job's days setting, so
    it only needs to be kept from combining with the other forms here."""
    from difymaint.core.errors import UsageError
    from difymaint.core.window import resolve_window

    if days is not None and (start_from or end_before or from_days_ago is not None or to_days_ago is not None):
        raise UsageError("--days cannot be combined with another window form")
    return resolve_window(
        now,
        default_days=default_days,
        start_from=start_from,
        end_before=end_before,
        from_days_ago=from_days_ago,
        to_days_ago=to_days_ago,
    )


def database_description(settings: Any) -> str:
    """The database a run will change, password hidden (for confirmation questions)."""
    from difymaint.core.database import database_url

    return str(database_url(settings).render_as_string(hide_password=True))


def retention_confirmation(
    settings: Any,
    ctx: Any,
    *,
    what: str,
    window: TimeWindow,
    tenant_ids: tuple[str, ...],
    graceful_period_days: int,
) -> str:
    """The question for a plan-aware retention job; warns loudly first when billing is off (all tenants)."""
    scope = f"workspaces {', '.join(tenant_ids)}" if tenant_ids else "all workspaces"
    if settings.BILLING_ENABLED or settings.DIFYMAINT_PLAN_FILE:
        who = f"expired sandbox {scope} (whitelist and {graceful_period_days}-day grace apply)"
    else:
        ctx.reporter.warning(
            f"BILLING_ENABLED is false: every workspace is treated as sandbox, so the {what} of "
            f"{scope if tenant_ids else scope.upper()} in the window are deleted (Dify's behaviour)"
        )
        who = scope
    return f"Delete {what} {window.describe()} of {who} from {database_description(settings)}?"
