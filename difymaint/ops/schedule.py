"""Cron schedules (croniter): when a job last fired, whether a run is due, whether a job is overdue.

Schedules are read in Dify's beat time zone, ``LOG_TZ`` (default UTC), the zone ``difymaint schedule render``
gives the CronJobs and timers too. ``DIFYMAINT_SCHEDULE_<JOB>`` (for example
``DIFYMAINT_SCHEDULE_CLEAN_MESSAGES="30 3 * * *"``) overrides the registry's schedule for ``status`` and
``run-due``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from difymaint.core.errors import ConfigError


def schedule_variable(job_name: str) -> str:
    """``clean-messages`` → ``DIFYMAINT_SCHEDULE_CLEAN_MESSAGES``."""
    return "DIFYMAINT_SCHEDULE_" + job_name.upper().replace("-", "_")


def effective_schedule(job_name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """The job's cron line: the override variable when set, else the registry's (``""``: never scheduled)."""
    variable = schedule_variable(job_name)
    value = (environ if environ is not None else os.environ).get(variable, "").strip()
    if value:
        if not croniter.is_valid(value):
            raise ConfigError(f"{variable}={value!r} is not a cron expression", hint="e.g. '0 4 * * *' (UTC)")
        return value
    return default


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
