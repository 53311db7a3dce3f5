"""The job registry: one entry per job, one module per job, imported only when the job runs.

Like pip's ``commands_dict``: listing jobs (``--help``, deploy manifests) never imports SQLAlchemy or a
job module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class JobInfo:
    name: str  # the subcommand
    module: str  # difymaint.jobs.<module>, holding `run(ctx, params) -> RunSummary`
    summary: str
    schedule: str  # Dify's default beat schedule as a cron line (LOG_TZ=UTC, CELERY_BEAT_SCHEDULER_TIME=1)
    dify_task: str  # the beat entry it replaces
    dify_switch: str  # the ENABLE_* flag to turn off in Dify once difymaint runs the job
    lock_key: str  # logical lock key (Dify's name where Dify has one)
    destructive: bool = True

    def load(self) -> ModuleType:
        return importlib.import_module(f"difymaint.jobs.{self.module}")


JOBS: dict[str, JobInfo] = {
    "clean-messages": JobInfo(
        name="clean-messages",
        module="clean_messages",
        summary="Delete expired chat messages and their child rows (sandbox tenants, or all with billing off).",
        schedule="0 4 * * *",
        dify_task="clean_messages",
        dify_switch="ENABLE_CLEAN_MESSAGES",
        lock_key="retention:clean_messages",
    ),
}
