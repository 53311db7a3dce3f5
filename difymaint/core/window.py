"""Time windows: --days, --start-from/--end-before and --from-days-ago/--to-days-ago, as Dify's commands."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from difymaint.core.clock import naive_utc
from difymaint.core.errors import UsageError

# The longest window in days anyone can mean (~2000 years): "now - days" must stay a representable date.
MAX_DAYS = 730_000

_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class TimeWindow:
    """Rows with ``start_from <= created_at < end_before`` (naive UTC); ``start_from`` None = no lower bound."""

    end_before: datetime
    start_from: datetime | None = None
    label: str = "custom"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "start_from": self.start_from.isoformat() if self.start_from else None,
            "end_before": self.end_before.isoformat(),
            "label": self.label,
        }

    def describe(self) -> str:
        if self.start_from is None:
            return f"created before {self.end_before:%Y-%m-%d %H:%M:%S} UTC"
        return f"created {self.start_from:%Y-%m-%d %H:%M:%S} .. {self.end_before:%Y-%m-%d %H:%M:%S} UTC"


def parse_timestamp(value: str, option: str) -> datetime:
    """Parse a CLI timestamp (naive values are UTC; aware ones are converted to UTC)."""
    for fmt in _FORMATS:
        try:
            return naive_utc(datetime.strptime(value, fmt))
        except ValueError:
            continue
    try:
        return naive_utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        raise UsageError(
            f"{option} {value!r} is not a date", hint="use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS (UTC)"
        ) from None


def resolve_window(
    now: datetime,
    *,
    default_days: int,
    days: int | None = None,
    start_from: str | None = None,
    end_before: str | None = None,
    from_days_ago: int | None = None,
    to_days_ago: int | None = None,
) -> TimeWindow:
    """Turn the window options into one absolute window. Exactly one form may be used."""
    now = naive_utc(now)
    for name, value in (("--days", days), ("--from-days-ago", from_days_ago), ("--to-days-ago", to_days_ago)):
        if value is not None and not 0 <= value <= MAX_DAYS:
            raise UsageError(f"{name} {value} is out of range (0..{MAX_DAYS})")
    absolute = start_from is not None or end_before is not None
    relative = from_days_ago is not None or to_days_ago is not None
    if sum((absolute, relative, days is not None)) > 1:
        raise UsageError("choose one window form: --days, --start-from/--end-before, or --from-days-ago/--to-days-ago")
    if absolute:
        if end_before is None:
            raise UsageError("--start-from needs --end-before", hint="give both ends of an absolute window")
        end = parse_timestamp(end_before, "--end-before")
        start = parse_timestamp(start_from, "--start-from") if start_from is not None else None
        if start is not None and start >= end:
            raise UsageError("--start-from must be earlier than --end-before")
        if end > now:
            raise UsageError("--end-before lies in the future", hint="retention never deletes rows newer than now")
        return TimeWindow(end_before=end, start_from=start, label="custom")
    if relative:
        if from_days_ago is None or to_days_ago is None:
            raise UsageError("--from-days-ago and --to-days-ago go together")
        if from_days_ago <= to_days_ago:
            raise UsageError(
                "--from-days-ago must be larger than --to-days-ago",
                hint="e.g. --from-days-ago 60 --to-days-ago 30",
            )
        return TimeWindow(
            end_before=now - timedelta(days=to_days_ago),
            start_from=now - timedelta(days=from_days_ago),
            label=f"{from_days_ago}to{to_days_ago}",
        )
    effective = default_days if days is None else days
    if effective < 1:
        raise UsageError("--days must be at least 1")
    return TimeWindow(end_before=now - timedelta(days=effective), label=f"before-{effective}")
