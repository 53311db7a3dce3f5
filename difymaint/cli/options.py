"""Shared option definitions, so every job has the same flags with the same help (sqlfluff-style).

Every option defaults to None: only flags the operator actually gave are overlaid on the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

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
    fail_if_locked: bool | None = None
    json: bool = False
    verbose: int = 0
    quiet: int = 0
    log_format: str | None = None
    color: bool | None = None
    debug: bool = False

    def overrides(self) -> dict[str, object]:
        """Settings these flags override (None = not given)."""
        return {
            "DIFYMAINT_DATABASE_URL": self.database_url,
            "DIFYMAINT_REDIS_URL": self.redis_url,
            "DIFYMAINT_LOCK_TTL": self.lock_ttl,
            "DIFYMAINT_ON_LOCKED": "fail" if self.fail_if_locked else None,
            "DIFYMAINT_ASSUME_YES": self.yes,
        }


def split_ids(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())
