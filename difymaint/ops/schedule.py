"""Cron schedules, read by croniter (the library Dify's own schedule triggers use) and nothing else: each job's
effective cron line, when a job last fired, whether a run is due or overdue, and the shapes the schedule renderer
needs (the values a field matches, the minutes of the day a job starts, its shortest period).

:func:`job_schedule` is the one place a job's cron line comes from, for ``schedule render``, ``run-due`` and
``status`` alike: ``DIFYMAINT_SCHEDULE_<JOB>`` (for example ``DIFYMAINT_SCHEDULE_CLEAN_MESSAGES="30 3 * * *"``)
when set, else Dify's beat schedule under Dify's own settings (the registry names the setting: an interval in
minutes such as ``QUEUE_MONITOR_INTERVAL``, or ``CELERY_BEAT_SCHEDULER_TIME`` days). Schedules are read in
Dify's beat time zone, ``LOG_TZ`` (default UTC), the zone ``difymaint schedule render`` gives the CronJobs and
timers too.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from difymaint.core.errors import ConfigError

if TYPE_CHECKING:
    from difymaint.core.settings import Settings
    from difymaint.jobs import JobInfo

EVERY_MINUTE = "* * * * *"
HOUR_MINUTES = 60
DAY_HOURS = 24
MONTH_DAYS = 31


def schedule_variable(job_name: str) -> str:
    """``clean-messages`` → ``DIFYMAINT_SCHEDULE_CLEAN_MESSAGES``."""
    return "DIFYMAINT_SCHEDULE_" + job_name.upper().replace("-", "_")


@dataclass(frozen=True)
class JobSchedule:
    cron: str  # five cron fields; "" for a manual command (never scheduled)
    origin: str = ""  # the setting that made it differ from the registry's default, e.g. "QUEUE_MONITOR_INTERVAL=10"
    overridden: bool = False  # set by DIFYMAINT_SCHEDULE_<JOB>: the operator's own line, rendered as given


def job_schedule(job: JobInfo, settings: Settings) -> JobSchedule:
    """The job's effective cron line: ``DIFYMAINT_SCHEDULE_<JOB>``, else Dify's schedule shaped by the Dify setting
    the registry names for it. ConfigError (exit 2) for an override that is no cron line, or an interval that cron
    cannot express exactly (7 minutes, 90 minutes, 2.5): refused rather than rounded, since a rounded interval
    silently runs a job more or less often than Dify's beat did."""
    variable = schedule_variable(job.name)
    override = settings.schedule_override(variable)
    if override is not None:
        try:
            cron_fields(override)
        except ScheduleError:
            raise ConfigError(
                f"{variable}={override!r} is not a five-field cron line", hint="e.g. '0 4 * * *' (in LOG_TZ)"
            ) from None
        return JobSchedule(override, variable, overridden=True)
    if not job.schedule:
        return JobSchedule("")
    if job.interval_setting:
        return _every_minutes(job, job.interval_setting, getattr(settings, job.interval_setting))
    if job.every_days_setting:
        days = int(getattr(settings, job.every_days_setting))
        if days == 1:
            return JobSchedule(job.schedule)
        minute, hour, _, month, weekday = job.schedule.split()
        # Cron step semantics, as Dify's crontab(day_of_month="*/N"): days 1, 1+N, ... of each month; a step
        # past the month's end leaves only the 1st, which is also what a larger N gives in Dify.
        day = f"*/{days}" if days < MONTH_DAYS else "1"
        return JobSchedule(f"{minute} {hour} {day} {month} {weekday}", f"{job.every_days_setting}={days}")
    return JobSchedule(job.schedule)


def _every_minutes(job: JobInfo, setting: str, value: float | None) -> JobSchedule:
    if not value:  # Dify: QUEUE_MONITOR_INTERVAL or 30 (unset or 0 means the default)
        return JobSchedule(job.schedule)
    shown = f"{value:g}"
    minutes = float(value)
    cron = ""
    if minutes.is_integer():
        whole = int(minutes)
        if whole < HOUR_MINUTES and HOUR_MINUTES % whole == 0:
            cron = EVERY_MINUTE if whole == 1 else f"*/{whole} * * * *"
        elif whole % HOUR_MINUTES == 0 and DAY_HOURS % (whole // HOUR_MINUTES) == 0:
            hours = whole // HOUR_MINUTES
            cron = "0 * * * *" if hours == 1 else "0 0 * * *" if hours == DAY_HOURS else f"0 */{hours} * * *"
    if not cron:
        raise ConfigError(
            f"{setting}={shown}: every {shown} minutes has no exact cron form ({job.name})",
            hint=f"use minutes that divide 60 or whole hours that divide 24, or set {schedule_variable(job.name)}",
        )
    return JobSchedule(cron, "" if cron == job.schedule else f"{setting}={shown}")


def fires_every_minute(expression: str) -> bool:
    """True for a cron line that matches every minute of every day (``* * * * *`` however written)."""
    fields = cron_fields(expression)
    return all(values == set(range(low, high + 1)) for values, (low, high) in zip(fields, _FIELD_RANGES, strict=True))


def schedule_zone(environ: Mapping[str, str] | None = None) -> tzinfo:
    """Dify's beat time zone: ``LOG_TZ`` (an IANA name), else UTC."""
    name = (environ if environ is not None else os.environ).get("LOG_TZ", "").strip()
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"LOG_TZ={name!r} is not a time zone", hint="an IANA name such as Asia/Shanghai") from None


def previous_fire(expression: str, now: datetime, tz: tzinfo = UTC) -> datetime:
    """The latest time at or before ``now`` the schedule fired (the cron line read in ``tz``)."""
    base = now.astimezone(tz)
    if base.second == 0 == base.microsecond and croniter.match(expression, base):
        return base.astimezone(UTC)
    prev: datetime = croniter(expression, base).get_prev(datetime)
    return prev.astimezone(UTC)


def next_fire(expression: str, now: datetime, tz: tzinfo = UTC) -> datetime:
    nxt: datetime = croniter(expression, now.astimezone(tz)).get_next(datetime)
    return nxt.astimezone(UTC)


def is_due(
    expression: str, last_run: datetime | None, now: datetime, *, first_seen: datetime, tz: tzinfo = UTC
) -> bool:
    """True when the schedule fired after the job's last recorded run (a missed slot counts once, however many
    were missed). A job that never ran counts from ``first_seen`` (when run-due first looked), so a fresh
    install does not start every daily job at once."""
    slot = previous_fire(expression, now, tz)
    return slot > (last_run if last_run is not None else first_seen)


def is_overdue(expression: str, last_success: datetime | None, now: datetime, tz: tzinfo = UTC) -> bool:
    """True when a whole period went by without a success: none since the slot before the latest one (the
    latest slot's run may still be under way)."""
    latest = previous_fire(expression, now, tz)
    before: datetime = croniter(expression, latest.astimezone(tz)).get_prev(datetime)
    return last_success is None or last_success < before.astimezone(UTC)


class ScheduleError(ValueError):
    """A schedule that is not a five-field cron expression."""


_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))  # croniter reads a Sunday written 7 as 0
DAY_MINUTES = 24 * 60


def cron_fields(expression: str) -> list[set[int]]:
    """The values each of the five fields matches (month and weekday names and Sunday=7 as croniter reads
    them)."""
    if len(expression.split()) != len(_FIELD_RANGES):
        raise ScheduleError(f"cron schedule {expression!r}: expected 5 fields (minute hour dom month dow)")
    try:
        expanded, _ = croniter.expand(expression)
    except (CroniterError, ValueError) as exc:
        raise ScheduleError(f"cron schedule {expression!r}: {exc}") from None
    return [
        set(range(low, high + 1)) if values == ["*"] else {int(value) for value in values}
        for (low, high), values in zip(_FIELD_RANGES, expanded, strict=True)
    ]


def field_values(text: str, index: int) -> set[int]:
    """The values one field (or one comma-separated part of it) matches, read at position ``index``."""
    words = ["*"] * len(_FIELD_RANGES)
    words[index] = text
    return cron_fields(" ".join(words))[index]


def start_minutes(expression: str) -> list[int]:
    """The minutes of the day at which the schedule starts (its time fields only)."""
    minutes, hours, *_ = cron_fields(expression)
    return sorted(hour * 60 + minute for hour in hours for minute in minutes)


def period_seconds(expression: str) -> int:
    """The shortest time between two runs (at most one day)."""
    times = start_minutes(expression)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    gaps.append(DAY_MINUTES - times[-1] + times[0])  # to the first run of the next day (or later)
    return min(gaps) * 60


def seconds_until_next(expression: str, other: str) -> int:
    """The shortest time from a start of ``expression`` to the next start of ``other`` (time of day only)."""
    others = start_minutes(other)
    starts = start_minutes(expression)
    return 60 * min((later - start) % DAY_MINUTES or DAY_MINUTES for start in starts for later in others)
