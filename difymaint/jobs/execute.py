"""The envelope every job runs in, opened from its registry entry: the job module only does the work.

A job module is its ``Params`` and ``run(job, params)``; :func:`run_job` opens the run around it with what
the registry declares (lock key, tables, verbs, whether the job needs Dify's database) and the params'
run options (the registry's batch default when the params leave it open). Optional module hooks:

* ``check(ctx, params)``: usage and configuration errors (exit 2), decided from settings and params alone,
  before any question or connection (the CLI calls it before asking for confirmation too, so it must be
  pure);

* ``skip(ctx, params) -> str | None``: a runtime guard of Dify's own (a setting that makes Dify's task
  return at once); its reason ends the run as ``disabled`` before any check, lock or connection;
* ``lock(ctx, lock_key, params) -> JobLock``: where the job is locked when that is not Dify's Redis or
  database (the queue monitor locks on the broker it measures).
"""

from __future__ import annotations

from dataclasses import is_dataclass, replace
from types import ModuleType
from typing import Any

from difymaint.core.context import Context
from difymaint.core.summary import Outcome, RunSummary
from difymaint.engine.options import RunOptions
from difymaint.engine.run import DEFAULT_BATCH_SIZE, job_run
from difymaint.jobs.registry import JOBS, JobInfo


def info_for(job: JobInfo | ModuleType | str) -> JobInfo:
    """The registry entry of a job given by entry, module or name."""
    if isinstance(job, JobInfo):
        return job
    if isinstance(job, str):
        return JOBS[job]
    module = job.__name__
    for info in JOBS.values():
        if module in (info.module, f"difymaint.jobs.{info.module}"):
            return info
    raise LookupError(f"{module} is not a registered job module")


def run_options(info: JobInfo, options: RunOptions) -> RunOptions:
    """The params' run options with the registry's batch size where they leave it open."""
    if options.batch_size is not None:
        return options
    return replace(options, batch_size=info.batch.default if info.batch is not None else DEFAULT_BATCH_SIZE)


def run_job(job: JobInfo | ModuleType | str, ctx: Context, params: Any) -> RunSummary:
    """Run one job: its runtime guard, then its body inside the envelope; returns the summary."""
    info = info_for(job)
    module = info.load()
    options = run_options(info, params.run)
    if is_dataclass(params) and not isinstance(params, type):
        params = replace(params, run=options)  # the job reads one set of run options
    skip = getattr(module, "skip", None)
    reason = skip(ctx, params) if skip is not None else None
    check = getattr(module, "check", None)
    if reason is None and check is not None:
        check(ctx, params)
    if reason is not None:
        summary = RunSummary(
            job=info.name, dry_run=options.dry_run, started_at=ctx.clock.now(), outcome=Outcome.DISABLED
        )
        summary.verbs, summary.stop_reason = info.verbs, "disabled"
        summary.details["switch"] = reason
        return summary
    lock_for = getattr(module, "lock", None)
    with job_run(
        ctx,
        info.name,
        lock_key=info.lock_key,
        options=options,
        window=getattr(params, "window", None),
        tables=list(info.tables),
        verbs=info.verbs,
        lock=lock_for(ctx, info.lock_key, params) if lock_for is not None and options.use_lock else None,
        database=info.needs_database,
        throttle=info.destructive,  # the replica-lag wait (--max-replica-lag) is a deleting job's
    ) as run:
        module.run(run, params)
    return run.summary
