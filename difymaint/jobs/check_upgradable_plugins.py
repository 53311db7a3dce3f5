"""check-upgradable-plugins: hand the workspaces due for a plugin auto-upgrade check to Dify's per-tenant task
(what it selects and how it differs from Dify: docs/jobs/check-upgradable-plugins.md).

The window is computed from the scheduled fire time (:func:`parse_window_start`, :func:`window_ranges`, which
split a window that crosses midnight), so a late tick still serves its own slot. The order of
:func:`_dispatch` keeps every failure before any side effect: count the due workspaces (none: no marketplace
call, no Redis needed), fetch the manifest, connect to the broker, and only then cache the snapshots (one
pipeline) and publish a page at a time. Spreading over the window is Celery's ``countdown`` per chunk
(:func:`countdown`), so the run never sleeps. The per-tenant task itself stays Dify's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.core.errors import ConfigError, DifymaintError, UsageError
from difymaint.dify import tables as t
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema

JOB = "check-upgradable-plugins"
TASK = "tasks.process_tenant_plugin_autoupgrade_check_task.process_tenant_plugin_autoupgrade_check_task"
QUEUE = "plugin"
WINDOW_S = 900  # Dify's AUTO_UPGRADE_MINIMAL_CHECKING_INTERVAL
CHUNK = 20  # Dify's MAX_CONCURRENT_CHECK_TASKS: tenants per chunk when spreading
DAY_S = 86400
CACHE_FAMILY = "plugin_autoupgrade_check_task:cached_plugin_snapshot:"  # Dify's CACHE_REDIS_KEY_PREFIX
CACHE_TTL_S = 3600  # Dify's CACHE_REDIS_TTL
MANIFEST_PATH = "/api/v1/dist/plugins/manifest.json"
SNAPSHOT_FIELDS = ("org", "name", "latest_version", "latest_package_identifier", "latest_package_url")
TABLE = "tenant_plugin_auto_upgrade_strategies"
LISTED_MAX = 1000  # tenant ids kept in the --json summary


class MarketplaceUnavailable(DifymaintError):
    """The marketplace manifest could not be fetched or read: this cycle is skipped."""

    reference = "marketplace-unavailable"


@dataclass(frozen=True)
class CheckUpgradablePluginsParams:
    window_start: str | None = None
    spread_s: int = WINDOW_S
    run: RunOptions = field(default_factory=RunOptions)


Params = CheckUpgradablePluginsParams


def parse_window_start(raw: str | None, now: datetime) -> datetime:
    """``--window-start``: an ISO date-time (naive = UTC) or Unix seconds; default floor(now / 900) × 900."""
    if raw is None or raw == "":
        epoch = int(now.timestamp()) // WINDOW_S * WINDOW_S
        return datetime.fromtimestamp(epoch, UTC)
    text = raw.strip()
    try:
        if text.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise UsageError(
            f"--window-start {raw!r} is not a date-time", hint="e.g. 2026-12-04T10:45:00Z or Unix seconds"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check(ctx: Context, params: CheckUpgradablePluginsParams) -> None:
    parse_window_start(params.window_start, ctx.clock.now())


def window_ranges(start: datetime) -> list[tuple[int, int]]:
    """Seconds-of-day ranges ``[lo, hi)`` the window covers (two when it crosses midnight)."""
    lo = start.hour * 3600 + start.minute * 60 + start.second
    hi = lo + WINDOW_S
    if hi <= DAY_S:
        return [(lo, hi)]
    return [(lo, DAY_S), (0, hi - DAY_S)]


def due(ranges: list[tuple[int, int]]) -> sa.ColumnElement[bool]:
    table = t.tenant_plugin_auto_upgrade_strategies
    in_window = sa.or_(
        *(sa.and_(table.c.upgrade_time_of_day >= lo, table.c.upgrade_time_of_day < hi) for lo, hi in ranges)
    )
    return sa.and_(in_window, table.c.strategy_setting != "disabled")


def fetch_manifest(ctx: Context) -> list[dict[str, Any]]:
    """Dify's global manifest: ``{"plugins": [{org, name, latest_version, …}]}``, each checked."""
    import httpx  # only when a workspace is due: an empty tick stays fast (it runs every 15 minutes)

    base = ctx.settings.MARKETPLACE_API_URL.rstrip("/")
    headers = {"X-Dify-Version": ctx.settings.DIFYMAINT_DIFY_VERSION} if ctx.settings.DIFYMAINT_DIFY_VERSION else {}
    try:
        response = httpx.get(base + MANIFEST_PATH, headers=headers, timeout=ctx.settings.DIFYMAINT_MARKETPLACE_TIMEOUT)
        response.raise_for_status()
        body = response.json()
    except httpx.HTTPStatusError as exc:
        raise MarketplaceUnavailable(
            f"{JOB}: the marketplace answered HTTP {exc.response.status_code} for {MANIFEST_PATH}; cycle skipped",
            hint="check MARKETPLACE_API_URL",
        ) from None
    except (httpx.HTTPError, ValueError) as exc:
        raise MarketplaceUnavailable(
            f"{JOB}: cannot read the marketplace manifest from {base}: {type(exc).__name__}; cycle skipped",
            hint="check MARKETPLACE_API_URL and the network",
        ) from None
    plugins = body.get("plugins", []) if isinstance(body, dict) else None
    if not isinstance(plugins, list):
        raise MarketplaceUnavailable(f"{JOB}: the marketplace manifest has no plugin list; cycle skipped")
    snapshots = []
    for number, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not all(isinstance(plugin.get(name), str) for name in SNAPSHOT_FIELDS):
            raise MarketplaceUnavailable(f"{JOB}: manifest entry {number} lacks {', '.join(SNAPSHOT_FIELDS)}")
        snapshot = {name: plugin[name] for name in SNAPSHOT_FIELDS}
        snapshot["plugin_id"] = f"{plugin['org']}/{plugin['name']}"  # Dify's computed field
        snapshots.append(snapshot)
    return snapshots


def cache_manifest(ctx: Context, snapshots: list[dict[str, Any]]) -> None:
    """One pipeline of SETEX, under the keys Dify's per-tenant task reads (prefixed like redis_client.setex)."""
    client = ctx.redis
    assert client is not None  # checked in run()
    pipe = client.pipeline(transaction=False)
    for snapshot in snapshots:
        key = ctx.keys.key(CACHE_FAMILY + snapshot["plugin_id"])
        pipe.setex(key, CACHE_TTL_S, json.dumps(snapshot, separators=(",", ":")))
    pipe.execute()


def _pages(ctx: Context, where: sa.ColumnElement[bool], size: int) -> Iterator[list[Any]]:
    """Due strategies by tenant_id (keyset), a page at a time."""
    table = t.tenant_plugin_auto_upgrade_strategies
    last: str | None = None
    while True:
        query = sa.select(
            table.c.tenant_id,
            table.c.strategy_setting,
            table.c.upgrade_time_of_day,
            table.c.upgrade_mode,
            table.c.exclude_plugins,
            table.c.include_plugins,
        ).where(where)
        if last is not None:
            query = query.where(table.c.tenant_id > last)
        with ctx.engine.connect() as conn:
            rows = conn.execute(query.order_by(table.c.tenant_id).limit(size)).all()
        if not rows:
            return
        yield list(rows)
        last = str(rows[-1].tenant_id)
        if len(rows) < size:
            return


def task_args(row: Any) -> tuple[Any, ...]:
    """Dify's positional signature: tenant_id, strategy_setting, upgrade_time_of_day, upgrade_mode,
    exclude_plugins, include_plugins."""
    return (
        str(row.tenant_id),
        row.strategy_setting,
        int(row.upgrade_time_of_day),
        row.upgrade_mode,
        list(row.exclude_plugins or []),
        list(row.include_plugins or []),
    )


def run(job: JobRun, params: CheckUpgradablePluginsParams) -> None:
    ctx = job.ctx
    start = parse_window_start(params.window_start, ctx.clock.now())
    ranges = window_ranges(start)
    check_schema(ctx.engine, [Need(TABLE, ("tenant_id", "strategy_setting", "upgrade_time_of_day"))], job=JOB)
    job.summary.details.update(
        window_start=start.isoformat(),
        seconds_of_day=[list(r) for r in ranges],
        task=TASK,
        queue=QUEUE,
        spread_s=params.spread_s,
    )
    _dispatch(job, due(ranges), params.spread_s)
    job.settle_remaining()


def _dispatch(job: JobRun, where: sa.ColumnElement[bool], spread_s: int) -> None:
    ctx = job.ctx
    with ctx.engine.connect() as conn:
        total = int(
            conn.execute(
                sa.select(sa.func.count()).select_from(t.tenant_plugin_auto_upgrade_strategies).where(where)
            ).scalar_one()
        )
    job.summary.details["tenants_due"] = total
    if total == 0:
        ctx.reporter.info(f"{JOB}: no workspace is due in this window; marketplace not contacted")
        return
    if ctx.redis is None and not job.dry_run:  # only now: an empty window needs neither Redis nor the marketplace
        raise ConfigError(
            f"{JOB} needs Dify's Redis (the manifest cache Dify's per-tenant task reads)",
            hint="set REDIS_HOST (and REDIS_PORT, REDIS_PASSWORD, REDIS_DB) or DIFYMAINT_REDIS_URL",
        )
    snapshots = fetch_manifest(ctx)
    job.summary.details["manifest_plugins"] = len(snapshots)
    publisher = None
    if not job.dry_run:
        from difymaint.dify.celery import publisher as make_publisher  # Celery only in the commands that publish

        publisher = make_publisher(ctx.settings)  # a down broker fails here, before the cache or any message
    try:
        if not job.dry_run:
            cache_manifest(ctx, snapshots)
        ctx.reporter.info(f"{JOB}: {len(snapshots)} plugin snapshots {'seen' if job.dry_run else 'cached'}")
        _publish_pages(job, where, publisher, total, spread_s)
    finally:
        if publisher is not None:
            publisher.close()


def countdown(index: int, total: int, spread_s: int) -> float | None:
    """Dify's pacing without sleeping: chunk ``index // 20`` of ``ceil(total / 20)`` starts
    ``chunk × spread / chunks`` seconds from now (Celery's countdown); None for the first chunk."""
    chunks = math.ceil(total / CHUNK)
    chunk = index // CHUNK
    if spread_s <= 0 or chunk == 0 or chunks <= 1:
        return None
    return round(chunk * spread_s / chunks, 3)


def _publish_pages(job: JobRun, where: sa.ColumnElement[bool], publisher: Any, total: int, spread_s: int) -> None:
    from difymaint.dify.celery import DIFY_TASKS

    task = DIFY_TASKS[TASK]  # checks the arguments against Dify's signature before anything is sent
    ctx = job.ctx
    listed: list[str] = job.summary.details.setdefault("tenants", [])
    index = 0
    for rows in _pages(ctx, where, job.batch_size):
        if not job.keep_going():
            return
        with job.batch() as batch:
            calls = []
            for row in rows:
                calls.append(task.call(*task_args(row), countdown=countdown(index, total, spread_s)))
                index += 1
            if publisher is not None:
                publisher.send_to(task, calls)
            for row, call in zip(rows, calls, strict=True):
                if len(listed) < LISTED_MAX:
                    listed.append(str(row.tenant_id))
                if job.dry_run:
                    delay = f" with countdown {call.countdown:g} s" if call.countdown else ""
                    ctx.output.write(f"would publish {TASK}{call.args!r} to queue {QUEUE}{delay}\n")
            batch.record(scanned=len(rows), affected=len(rows), rows={TABLE: len(rows)})
