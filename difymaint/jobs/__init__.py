"""The job registry: one entry per job, one module per job, imported only when the job runs.

Like pip's ``commands_dict``: listing jobs (``--help``, deploy manifests) never imports SQLAlchemy or a
job module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from difymaint.core.switches import Switch


@dataclass(frozen=True)
class JobInfo:
    name: str  # the subcommand
    module: str  # difymaint.jobs.<module>, holding `run(ctx, params) -> RunSummary`
    summary: str
    schedule: str  # Dify's default beat schedule as a cron line (LOG_TZ=UTC, CELERY_BEAT_SCHEDULER_TIME=1)
    dify_task: str  # the beat entry it replaces
    dify_switch: str  # the ENABLE_* flag to turn off in Dify once difymaint runs the job ("" = none)
    # Dify's settings that must all be on for a scheduled (--scheduled) run to go ahead; see core/switches.
    switches: tuple[Switch, ...]
    lock_key: str  # logical lock key (Dify's name where Dify has one)
    destructive: bool = True
    # Flags every unattended (cron / CronJob) run of this job needs beyond --yes and --max-runtime.
    scheduled_args: tuple[str, ...] = ()
    # False for manual commands (restores, one-off repairs): no CronJob manifest or crontab line is generated.
    scheduled: bool = True

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
        switches=(Switch("ENABLE_CLEAN_MESSAGES", dify_default=False),),
        lock_key="retention:clean_messages",
    ),
    "archive-workflow-runs": JobInfo(
        name="archive-workflow-runs",
        module="archive_workflow_runs",
        summary="Archive ended workflow runs of paid workspaces (every workspace with billing off) to object storage "
        "as Dify's archive.v1.0.zip bundles; optionally delete them afterwards.",
        # Dify has no beat entry for it (its task lives on a branch). 23:00 archives before clean-workflow-runs
        # deletes at 00:00, and stays outside the 01:00-03:00 hours that DST skips or repeats.
        schedule="0 23 * * *",
        dify_task="archive_workflow_runs_task (branch only)",
        dify_switch="",  # nothing to turn off: Dify's beat never schedules it
        # Dify's own archive task returns at once unless archive storage is enabled.
        switches=(Switch("ARCHIVE_STORAGE_ENABLED", dify_default=False),),
        lock_key="maintenance:archive_workflow_runs",
    ),
    "clean-workflow-runs": JobInfo(
        name="clean-workflow-runs",
        module="clean_workflow_runs",
        summary="Delete expired, ended workflow runs with node executions, logs and pauses "
        "(sandbox tenants, or all with billing off).",
        schedule="0 0 * * *",
        dify_task="clean_workflow_runs_task",
        dify_switch="ENABLE_WORKFLOW_RUN_CLEANUP_TASK",
        switches=(Switch("ENABLE_WORKFLOW_RUN_CLEANUP_TASK", dify_default=False),),
        lock_key="retention:clean_workflow_runs_task",
    ),
    "clean-workflow-logs": JobInfo(
        name="clean-workflow-logs",
        module="clean_workflow_logs",
        summary="Delete every tenant's ended workflow runs older than WORKFLOW_LOG_RETENTION_DAYS, with their "
        "messages (self-hosted log retention).",
        schedule="0 2 * * *",
        dify_task="clean_workflow_runlogs_precise",
        dify_switch="WORKFLOW_LOG_CLEANUP_ENABLED",
        switches=(Switch("WORKFLOW_LOG_CLEANUP_ENABLED", dify_default=False),),
        lock_key="retention:clean_workflow_runlogs_precise",
    ),
    "clean-embeddings": JobInfo(
        name="clean-embeddings",
        module="clean_embeddings",
        summary="Delete embedding cache rows (the embeddings table) older than PLAN_SANDBOX_CLEAN_DAY_SETTING days.",
        schedule="0 2 * * *",
        dify_task="clean_embedding_cache_task",
        dify_switch="ENABLE_CLEAN_EMBEDDING_CACHE_TASK",
        switches=(Switch("ENABLE_CLEAN_EMBEDDING_CACHE_TASK", dify_default=False),),
        lock_key="maintenance:clean_embeddings",
    ),
    "clean-oauth-tokens": JobInfo(
        name="clean-oauth-tokens",
        module="clean_oauth_tokens",
        summary="Delete CLI OAuth access tokens revoked, or expired and never revoked, more than "
        "OAUTH_ACCESS_TOKEN_RETENTION_DAYS days ago.",
        schedule="0 5 * * *",
        dify_task="clean_oauth_access_tokens_task",
        dify_switch="ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK",
        switches=(Switch("ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK", dify_default=True),),
        lock_key="maintenance:clean_oauth_tokens",
    ),
    "clean-unused-datasets": JobInfo(
        name="clean-unused-datasets",
        module="clean_unused_datasets",
        summary="Disable the documents of knowledge bases unused for N days and hand their index removal to Dify.",
        schedule="0 3 * * *",
        dify_task="clean_unused_datasets_task",
        dify_switch="ENABLE_CLEAN_UNUSED_DATASETS_TASK",
        switches=(Switch("ENABLE_CLEAN_UNUSED_DATASETS_TASK", dify_default=False),),
        lock_key="maintenance:clean_unused_datasets",
        # Index removal is Dify's work: hand it to Dify's own Celery task on CELERY_BROKER_URL.
        scheduled_args=("--enqueue-index-removal",),
    ),
    "notify-cleaned-documents": JobInfo(
        name="notify-cleaned-documents",
        module="notify_cleaned_documents",
        summary="Mail workspace owners which knowledge bases were auto-disabled, then mark the logs notified.",
        schedule="0 10 * * 1",
        dify_task="mail_clean_document_notify_task",
        dify_switch="ENABLE_MAIL_CLEAN_DOCUMENT_NOTIFY_TASK",
        switches=(Switch("ENABLE_MAIL_CLEAN_DOCUMENT_NOTIFY_TASK", dify_default=False),),
        lock_key="maintenance:notify_cleaned_documents",
        destructive=False,  # it sends mail and flips flags; only --purge-notified-older-than deletes (asks --yes)
    ),
    "restore-workflow-runs": JobInfo(
        name="restore-workflow-runs",
        module="restore_workflow_runs",
        summary="Restore archived workflow runs from their archive.v1.0.zip bundles (manual; never scheduled).",
        schedule="",  # a manual command, like Dify's `flask restore-workflow-runs`
        dify_task="flask restore-workflow-runs (manual command)",
        dify_switch="",
        switches=(),
        lock_key="maintenance:restore_workflow_runs",
        scheduled=False,
    ),
}
