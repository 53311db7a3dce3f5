"""The options every job command shares, declared once, and the builder that turns a registry entry into a
Typer command, so no command declares a shared option of its own.

:class:`Common` is the single declaration of the shared connection, run-control and output options: each field's
annotation carries its ``typer.Option``. :func:`job_command` builds a command whose signature is the job's
own options (from :mod:`difymaint.jobs.spec`) followed by these, so every job has the same flags with the
same help, and the values land in a ``Common`` plus a dict of the job's values.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

import typer

from difymaint.jobs import JobInfo
from difymaint.jobs.spec import CONNECTION, MAX_COUNT, OUTPUT, RUN, Opt

MAX_RUNTIME_S = 31 * 86400  # a month: anything longer (or inf) is a typo, not a budget


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class OnReplicaLost(StrEnum):
    CONTINUE = "continue"
    STOP = "stop"


# Run options only a deleting job (JobInfo.destructive) takes: the others never pace on a replica.
DELETING_ONLY = frozenset({"max_replica_lag", "replica_url", "on_replica_lost"})


# The shared options, declared once: the job commands take them through Common, the console commands
# (run, run-due, history, locks, …), doctor and demo by these names.
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", "-n", help="Count what would be deleted, per table; change nothing.", rich_help_panel=RUN
    ),
]
Yes = Annotated[
    bool | None,
    typer.Option(
        "--yes", "-y", help="Do not ask for confirmation (needed when stdin is not a terminal).", rich_help_panel=RUN
    ),
]
MaxRuntime = Annotated[
    float | None,
    typer.Option(
        "--max-runtime",
        min=1,
        max=MAX_RUNTIME_S,
        metavar="SECONDS",
        help="Stop cleanly after this many seconds (outcome partial, exit 4).",
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
Json = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.", rich_help_panel=OUTPUT)]
Color = Annotated[
    bool | None,
    typer.Option(
        "--color/--no-color",
        help="Force colour on or off (default: auto, NO_COLOR honoured).",
        rich_help_panel=OUTPUT,
    ),
]


@dataclass(frozen=True)
class Common:
    """The connection, run-control and output options every job command takes (the one declaration)."""

    dry_run: DryRun = False
    yes: Yes = None
    max_runtime: MaxRuntime = None
    max_batches: Annotated[
        int | None,
        typer.Option(
            "--max-batches",
            metavar="N",
            min=1,
            max=MAX_COUNT,
            help="Stop cleanly after this many batches (outcome partial, exit 4).",
            rich_help_panel=RUN,
        ),
    ] = None
    lock_ttl: Annotated[
        int | None,
        typer.Option(
            "--lock-ttl",
            min=10,
            max=7 * 86400,
            metavar="SECONDS",
            help="Lock lease, renewed every third of it while the run lives (DIFYMAINT_LOCK_TTL).",
            rich_help_panel=RUN,
        ),
    ] = None
    no_lock: Annotated[
        bool,
        typer.Option("--no-lock", help="Run without the single-flight lock (not recommended).", rich_help_panel=RUN),
    ] = False
    scheduled: Scheduled = False
    fail_if_locked: Annotated[
        bool | None,
        typer.Option(
            "--fail-if-locked", help="Exit 1 instead of 5 when another run holds the lock.", rich_help_panel=RUN
        ),
    ] = None
    vacuum_analyze: Annotated[
        bool,
        typer.Option(
            "--vacuum-analyze",
            help="After a real run, VACUUM (ANALYZE) the tables it deleted from (PostgreSQL; never VACUUM FULL; "
            "ANALYZE TABLE on MySQL).",
            rich_help_panel=RUN,
        ),
    ] = False
    max_replica_lag: Annotated[
        float | None,
        typer.Option(
            "--max-replica-lag",
            min=0.1,
            max=86400,
            metavar="SECONDS",
            help="Before each batch, wait while a streaming replica's replay lags more than this "
            "(DIFYMAINT_MAX_REPLICA_LAG; PostgreSQL).",
            rich_help_panel=RUN,
        ),
    ] = None
    replica_url: Annotated[
        str | None,
        typer.Option(
            "--replica-url",
            metavar="URL",
            help="Read the lag on this replica instead of pg_stat_replication on the primary "
            "(DIFYMAINT_REPLICA_URL; a role without pg_monitor).",
            rich_help_panel=RUN,
        ),
    ] = None
    on_replica_lost: Annotated[
        OnReplicaLost | None,
        typer.Option(
            "--on-replica-lost",
            metavar="POLICY",
            help="A replica gone mid-run and not back within DIFYMAINT_REPLICA_LOST_WAIT_S (60 s): continue without "
            "it, or stop (partial) (DIFYMAINT_ON_REPLICA_LOST, continue).",
            rich_help_panel=RUN,
        ),
    ] = None
    env_file: EnvFile = None
    database_url: DatabaseUrl = None
    redis_url: RedisUrl = None
    json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary line on stdout.", rich_help_panel=OUTPUT)
    ] = False
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output.", rich_help_panel=OUTPUT)
    ] = 0
    quiet: Annotated[int, typer.Option("--quiet", "-q", count=True, help="Less output.", rich_help_panel=OUTPUT)] = 0
    log_format: Annotated[
        LogFormat,
        typer.Option("--log-format", help="Log line format on stderr.", rich_help_panel=OUTPUT),
    ] = LogFormat.TEXT
    color: Color = None
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.", rich_help_panel=OUTPUT)] = False
    ping_url: Annotated[
        str | None,
        typer.Option(
            "--ping-url",
            metavar="URL",
            help="Dead-man pings: URL/start, URL on success, URL/fail; {job} is expanded (DIFYMAINT_PING_URL).",
            rich_help_panel=OUTPUT,
        ),
    ] = None
    metrics_textfile: Annotated[
        str | None,
        typer.Option(
            "--metrics-textfile",
            metavar="PATH",
            help="Write Prometheus metrics for node_exporter here after the run; a directory gets "
            "difymaint_<job>.prom (DIFYMAINT_METRICS_TEXTFILE).",
            rich_help_panel=OUTPUT,
        ),
    ] = None
    pushgateway: Annotated[
        str | None,
        typer.Option(
            "--pushgateway",
            metavar="URL",
            help="Push the run's Prometheus metrics to this Pushgateway (DIFYMAINT_PUSHGATEWAY_URL).",
            rich_help_panel=OUTPUT,
        ),
    ] = None

    def check(self) -> None:
        """What click's ranges cannot refuse: NaN compares false with both bounds."""
        for flag, value in (("--max-runtime", self.max_runtime), ("--max-replica-lag", self.max_replica_lag)):
            if value is not None and not math.isfinite(value):
                from difymaint.core.errors import UsageError

                raise UsageError(f"{flag} {value} is not a number of seconds")

    def run_options(self) -> Any:
        """The core's run options these flags set (the job's batch size and pacing are filled in later)."""
        from difymaint.engine.options import RunOptions

        return RunOptions(
            dry_run=self.dry_run,
            max_runtime_s=self.max_runtime,
            max_batches=self.max_batches,
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
            "DIFYMAINT_PING_URL": self.ping_url,
            "DIFYMAINT_METRICS_TEXTFILE": self.metrics_textfile,
            "DIFYMAINT_PUSHGATEWAY_URL": self.pushgateway,
            "DIFYMAINT_MAX_REPLICA_LAG": self.max_replica_lag,
            "DIFYMAINT_REPLICA_URL": self.replica_url,
            "DIFYMAINT_ON_REPLICA_LOST": self.on_replica_lost.value if self.on_replica_lost else None,
        }


JobRunner = Callable[[JobInfo, Common, dict[str, Any]], int]


def _shared_parameters(info: JobInfo) -> list[inspect.Parameter]:
    hints = get_type_hints(Common, include_extras=True)
    parameters = []
    for field in fields(Common):
        if field.name in DELETING_ONLY and not info.destructive:
            continue
        annotation = hints[field.name]
        if field.name == "dry_run" and info.dry_run_help:
            annotation = Annotated[bool, typer.Option("--dry-run", "-n", help=info.dry_run_help, rich_help_panel=RUN)]
        default = field.default if field.default is not MISSING else None
        parameters.append(
            inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
    return parameters


def _annotation(opt: Opt) -> Any:
    """The Typer annotation for one declared job option."""
    kwargs: dict[str, Any] = {"help": opt.help}
    if opt.metavar:
        kwargs["metavar"] = opt.metavar
    if opt.min is not None:
        kwargs["min"] = opt.min
    if opt.max is not None:
        kwargs["max"] = opt.max
    if opt.panel:
        kwargs["rich_help_panel"] = opt.panel
    option = typer.Option(*opt.flags, **kwargs)
    if opt.kind == "flag":
        return Annotated[bool, option]
    if opt.kind in ("repeated_ids", "repeated"):
        return Annotated[list[str] | None, option]
    value_type: Any = Literal.__getitem__(opt.choices) if opt.choices else opt.type
    return Annotated[value_type | None, option]


def job_command(info: JobInfo, run: JobRunner) -> Callable[..., int]:
    """A command function for ``info``: its declared options, then the shared ones; calls ``run``."""
    own = [
        inspect.Parameter(
            opt.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=False if opt.kind == "flag" else None,
            annotation=_annotation(opt),
        )
        for opt in info.all_options()
    ]
    shared = _shared_parameters(info)
    shared_names = {parameter.name for parameter in shared}

    def command(**kwargs: Any) -> int:
        common = Common(**{name: kwargs.pop(name) for name in shared_names})
        return run(info, common, kwargs)

    command.__name__ = info.name.replace("-", "_")
    command.__doc__ = info.describe()
    parameters = own + shared
    command.__signature__ = inspect.Signature(parameters, return_annotation=int)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": int}
    return command


def register_jobs(app: typer.Typer, jobs: Mapping[str, JobInfo], run: JobRunner) -> None:
    """One subcommand per registry entry, in registry order."""
    for info in jobs.values():
        # \b keeps Click from rewrapping the example lines into one paragraph.
        epilog = "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in info.usage_examples())
        app.command(info.name, help=info.describe(), short_help=info.summary, epilog=epilog)(job_command(info, run))


@dataclass(frozen=True)
class ConsoleOptions:
    """The connection and output options the console commands (history, status, locks, run-due, doctor, …)
    share, declared once; a command gets them as one ``opts`` argument (see :func:`console_options`)."""

    env_file: EnvFile = None
    database_url: DatabaseUrl = None
    redis_url: RedisUrl = None
    json: Json = False
    color: Color = None


def console_options(*, redis: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a console command the shared options (``--redis-url`` only where it reads Redis) after its own:
    the wrapped function receives them as ``opts``."""
    hints = get_type_hints(ConsoleOptions, include_extras=True)
    shared = [
        inspect.Parameter(
            field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=hints[field.name]
        )
        for field in fields(ConsoleOptions)
        if redis or field.name != "redis_url"
    ]
    names = {parameter.name for parameter in shared}

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for name, p in inspect.signature(function).parameters.items() if name != "opts"]
        own_hints = get_type_hints(function, include_extras=True)

        @functools.wraps(function)
        def command(**kwargs: Any) -> Any:
            opts = ConsoleOptions(**{name: kwargs.pop(name) for name in names})
            return function(opts=opts, **kwargs)

        parameters = [p.replace(annotation=own_hints.get(p.name, p.annotation)) for p in own] + shared
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate
