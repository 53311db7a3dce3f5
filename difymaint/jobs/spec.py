"""How a job declares its parameters: once, as data, without typer (the CLI builds its options from this).

A job's registry entry (:mod:`difymaint.jobs.registry`) lists its own options (:class:`Opt`), its time window
(:class:`Window`) and its batch sizing (:class:`Batching`). :mod:`difymaint.jobs.resolve` turns the values an
operator gave into the job's params in one place for every job: flags overlaid on Dify's settings, windows,
id filters, batch size and pacing. The CLI (:mod:`difymaint.cli.options`) turns the same declarations into
``--flags`` with their help, and the catalogue can list them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MAX_DAYS = 730_000  # = difymaint.core.window.MAX_DAYS (not imported: --help stays free of the core)
MAX_COUNT = 2**31 - 1  # a PostgreSQL integer (LIMIT, counts)
MAX_SLEEP_MS = 60_000

# Help panels, so that every job's --help groups its options the same way.
CONNECTION = "Connection"
RUN = "Run control"
WINDOW = "Time window"
OUTPUT = "Output"

OptKind = Literal["value", "flag", "ids", "repeated_ids", "repeated"]


@dataclass(frozen=True)
class Opt:
    """One job option.

    ``setting`` names the Dify (or difymaint) setting the flag overrides: the job then reads the setting, so
    the flag, the environment and the env file all reach it by one path. ``kind="ids"`` is a comma-separated
    UUID filter that may only narrow a run (empty is an error, see :mod:`difymaint.core.ids`).
    """

    name: str  # the params field it fills (and the Python parameter name)
    flags: tuple[str, ...]
    help: str
    type: type = str
    kind: OptKind = "value"
    metavar: str | None = None
    min: int | None = None
    max: int | None = None
    choices: tuple[str, ...] = ()
    setting: str | None = None
    panel: str | None = None
    default: object = None  # for options without a setting

    def __post_init__(self) -> None:
        # Every number has a real range: an unbounded int reaches a timedelta or the database and fails
        # there as "unexpected" (exit 1) instead of as a usage error (exit 2).
        if self.type is int and self.max is None:
            object.__setattr__(self, "max", MAX_DAYS if self.metavar == "DAYS" else MAX_COUNT)

    @property
    def flag(self) -> str:
        return self.flags[0]


@dataclass(frozen=True)
class Window:
    """The job's time window: ``--days`` overrides ``setting``; ``forms="all"`` adds the absolute
    (``--start-from/--end-before``) and relative (``--from-days-ago/--to-days-ago``) forms."""

    setting: str
    days_help: str = "Delete rows older than this many days."
    forms: Literal["all", "days"] = "all"


@dataclass(frozen=True)
class Batching:
    """Batching sizing and pacing: the size comes from ``setting`` (or ``default``); ``sleep_setting`` is the
    random pause after each deleting batch (Dify's ``…_BATCH_MAX_INTERVAL``), 0 when the job has none."""

    default: int = 1000
    setting: str | None = None
    help: str = "Parent rows per batch to start with."
    max: int = 100000
    sleep_setting: str | None = None
    sleep_option: bool = True  # False: the job has no --sleep-ms (it does not pause)
    workers: bool = False  # the job takes --workers (DIFYMAINT_WORKERS): parallel slices of its window
    shard: bool = False  # the job takes --shard K/N (DIFYMAINT_SHARD): its share of the apps, by hash


# --- options several jobs share ------------------------------------------------------------------------------

TENANT_IDS = Opt(
    "tenant_ids", ("--tenant-ids",), "Comma-separated workspace ids to limit the run to.", kind="ids", metavar="IDS"
)
ORPHAN_MANIFEST = Opt(
    "orphan_manifest",
    ("--orphan-manifest",),
    "Append the storage keys of upload_files this run orphans, as JSON lines.",
    type=Path,
    metavar="PATH",
)
ARCHIVE_DIR = Opt(
    "archive_dir",
    ("--archive-dir",),
    "Local directory for the archives (DIFYMAINT_ARCHIVE_DIR); default: Dify's ARCHIVE_STORAGE_* S3.",
    type=Path,
    metavar="PATH",
    setting="DIFYMAINT_ARCHIVE_DIR",
)


def graceful_period(what: str) -> Opt:
    return Opt(
        "graceful_period_days",
        ("--graceful-period",),
        f"Days after a paid plan expires before its {what} go (billing on).",
        type=int,
        metavar="DAYS",
        min=0,
        setting="SANDBOX_EXPIRED_RECORDS_CLEAN_GRACEFUL_PERIOD",
    )


def window_options(window: Window) -> tuple[Opt, ...]:
    """The window flags a job with this window takes (all of them default to 'not given')."""
    days = Opt("days", ("--days", "--before-days"), window.days_help, type=int, metavar="DAYS", min=1, panel=WINDOW)
    if window.forms == "days":
        return (days,)
    return (
        days,
        Opt("start_from", ("--start-from",), "Window start, UTC (with --end-before).", metavar="DATE", panel=WINDOW),
        Opt("end_before", ("--end-before",), "Window end (exclusive), UTC.", metavar="DATE", panel=WINDOW),
        Opt(
            "from_days_ago",
            ("--from-days-ago",),
            "Window start in days ago (with --to-days-ago).",
            type=int,
            metavar="DAYS",
            min=1,
            panel=WINDOW,
        ),
        Opt(
            "to_days_ago", ("--to-days-ago",), "Window end in days ago.", type=int, metavar="DAYS", min=0, panel=WINDOW
        ),
    )


WORKERS = Opt(
    "workers",
    ("--workers",),
    "Connections deleting disjoint slices of the window in parallel (DIFYMAINT_WORKERS; PostgreSQL, MySQL).",
    type=int,
    metavar="N",
    min=1,
    max=8,
    setting="DIFYMAINT_WORKERS",
    panel=RUN,
)


SHARD = Opt(
    "shard",
    ("--shard",),
    "Take only shard K of N (0-based) of the apps, by a stable hash of the app id, under a lock of its own: "
    "N runs (a Kubernetes Indexed Job) clean one database side by side (DIFYMAINT_SHARD; PostgreSQL, MySQL).",
    metavar="K/N",
    setting="DIFYMAINT_SHARD",
    panel=RUN,
)


def batch_options(batch: Batching) -> tuple[Opt, ...]:
    size = Opt("batch_size", ("--batch-size",), batch.help, type=int, metavar="N", min=1, max=batch.max, panel=RUN)
    workers = ((WORKERS,) if batch.workers else ()) + ((SHARD,) if batch.shard else ())
    if not batch.sleep_option:
        return (size, *workers)
    sleep = Opt(
        "sleep_ms",
        ("--sleep-ms",),
        "Random pause of up to this many ms after each deleting batch.",
        type=int,
        metavar="MS",
        min=0,
        max=MAX_SLEEP_MS,
        panel=RUN,
    )
    return (size, sleep, *workers)
