"""From the values an operator gave to a job's params: the one place every job's inputs are resolved.

Two steps, because settings are loaded in between:

1. :meth:`JobInfo.setting_overrides`: the flags that stand for a Dify setting (``--days`` →
   ``SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS``, ``--batch-size`` → ``…_BATCH_SIZE``, …) become settings
   overrides, so flag > environment > env file > default holds for all of them alike.
2. :func:`build_params`: the window, id filters, batch size and pacing, and the remaining options become the
   job module's ``Params``; a module may refine or check them (``params_hook`` / ``check``).
"""

from __future__ import annotations

from dataclasses import MISSING, fields, replace
from datetime import datetime
from typing import Any

from difymaint.core.context import Context
from difymaint.core.database import database_url
from difymaint.core.errors import UsageError
from difymaint.core.ids import parse_ids, parse_setting_ids
from difymaint.core.window import TimeWindow, resolve_window
from difymaint.engine.options import RunOptions
from difymaint.engine.shard import parse_shard
from difymaint.jobs import JobInfo
from difymaint.jobs.spec import Opt

Values = dict[str, Any]


def build_params(info: JobInfo, values: Values, ctx: Context, run: RunOptions) -> Any:
    """The job's params from the flag values (settings already overlaid) and the shared run options."""
    module = info.load()
    resolved = resolve_values(info, values, ctx, run)
    hook = getattr(module, "params_hook", None)
    if hook is not None:
        params = hook(ctx, resolved)
    else:
        names = {field.name for field in fields(module.Params)}
        # An option that only overrides a setting reaches the job through the settings; any other option
        # without a field would be dropped silently (declaration_errors keeps that from shipping).
        params = module.Params(**{name: value for name, value in resolved.items() if name in names})
    check = getattr(module, "check", None)
    if check is not None:
        check(ctx, params)  # job-specific usage errors, before any question or connection
    return params


def declaration_errors(info: JobInfo) -> list[str]:
    """What in the job's declaration has no place in its ``Params`` (an option that would be dropped, or a
    field nothing fills): empty for a sound job. The registry test asserts it for every job."""
    module = info.load()
    if getattr(module, "params_hook", None) is not None:
        return []  # the module maps the values itself
    declared = {opt.name for opt in info.options} | {name for name, _ in info.from_settings} | {"run"}
    if info.window is not None:
        declared.add("window")
    via_settings = {opt.name for opt in info.options if opt.setting}
    params = {field.name: field for field in fields(module.Params)}
    errors = [
        f"{info.name}: {name} is neither a field of {module.Params.__name__} nor a setting the job reads"
        for name in sorted(declared - set(params) - via_settings)
    ]
    errors += [
        f"{info.name}: {module.Params.__name__}.{name} has no default and no declaration fills it"
        for name, field in params.items()
        if name not in declared and field.default is MISSING and field.default_factory is MISSING
    ]
    return errors


def resolve_values(info: JobInfo, values: Values, ctx: Context, run: RunOptions) -> Values:
    settings = ctx.settings
    resolved: Values = {}
    for opt in info.options:
        resolved[opt.name] = _option_value(opt, values.get(opt.name), settings)
    for name, setting in info.from_settings:
        resolved[name] = getattr(settings, setting)
    if info.window is not None:
        resolved["window"] = window_from(values, ctx.clock.now(), default_days=getattr(settings, info.window.setting))
    batch = info.batch
    if batch is not None:
        size = getattr(settings, batch.setting) if batch.setting else values.get("batch_size") or batch.default
        sleep = getattr(settings, batch.sleep_setting) if batch.sleep_setting else values.get("sleep_ms") or 0
        workers = settings.DIFYMAINT_WORKERS if batch.workers else 1
        # `--shard ""` (an unset variable in a script) is an error, never "every shard": it would widen the run.
        shard = parse_shard(settings.DIFYMAINT_SHARD) if batch.shard and settings.DIFYMAINT_SHARD is not None else None
        if shard is not None and database_url(settings).get_backend_name() not in ("postgresql", "mysql", "mariadb"):
            raise UsageError("--shard needs PostgreSQL or MySQL (the hash is computed by the database)")
        resolved["run"] = replace(run, batch_size=size, sleep_ms=sleep, workers=workers, shard=shard)
    else:
        resolved["run"] = run
    if info.destructive and settings.DIFYMAINT_MAX_REPLICA_LAG is not None and not run.dry_run:
        backend = database_url(settings).get_backend_name()
        if backend != "postgresql":
            # The lag is read from PostgreSQL's streaming replication; a silent no-op would let a purge run
            # unpaced on a server whose replicas the operator meant to protect.
            raise UsageError(f"--max-replica-lag needs PostgreSQL (it reads streaming replication), not {backend}")
    return resolved


def _option_value(opt: Opt, given: Any, settings: Any) -> Any:
    if opt.kind == "ids":
        if opt.setting:
            raw = getattr(settings, opt.setting)
            option = f"{opt.flag} / {opt.setting}"
            return parse_setting_ids(raw, option, explicitly_set=settings.explicitly_set(opt.setting)) or ()
        return parse_ids(given, opt.flag) or ()
    if opt.kind == "repeated_ids":
        return parse_ids(given or None, opt.flag) or ()  # a repeatable option seen no time arrives as []
    if opt.kind == "repeated":
        # Repeatable, each value may also be a comma-separated list; blanks are dropped.
        return tuple(part.strip() for value in given or () for part in str(value).split(",") if part.strip())
    if opt.setting:
        return getattr(settings, opt.setting)
    if opt.kind == "flag":
        return bool(given)
    return opt.default if given is None else given


def window_from(values: Values, now: datetime, *, default_days: int) -> TimeWindow:
    """The window from the window flags. ``--days`` has already been overlaid on the job's days setting, so
    here it only must not combine with another form."""
    days = values.get("days")
    others = [values.get(name) for name in ("start_from", "end_before", "from_days_ago", "to_days_ago")]
    if days is not None and any(value is not None for value in others):
        raise UsageError("--days cannot be combined with another window form")
    return resolve_window(
        now,
        default_days=default_days,
        start_from=values.get("start_from"),
        end_before=values.get("end_before"),
        from_days_ago=values.get("from_days_ago"),
        to_days_ago=values.get("to_days_ago"),
    )
