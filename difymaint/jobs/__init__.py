"""The job registry: one entry per job, one module per job, imported only when the job runs.

Like pip's ``commands_dict``: listing jobs (``--help``, deploy manifests, the README reference) never imports
SQLAlchemy or a job module. Each entry declares everything the CLI, the schedule renderers and the catalogue
need: the job's options, window and batch sizing (:mod:`difymaint.jobs.spec`), its Dify counterpart, switches
and lock. Adding a job is one module in this package plus one entry here (see docs/design.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from difymaint.core.switches import Switch
from difymaint.jobs.spec import (
    ARCHIVE_DIR,
    CONNECTION,
    ORPHAN_MANIFEST,
    TENANT_IDS,
    WINDOW,
    Batch,
    Opt,
    Window,
    batch_options,
    graceful_period,
    window_options,
)


@dataclass(frozen=True)
class JobInfo:
    name: str  # the subcommand
    module: str  # difymaint.jobs.<module>: `run(ctx, params)`, `Params`, and optionally `confirmation`, `check`
    summary: str
    schedule: str  # Dify's default beat schedule as a cron line (LOG_TZ=UTC, CELERY_BEAT_SCHEDULER_TIME=1)
    dify_task: str  # the beat entry it replaces
    dify_switch: str  # the ENABLE_* flag that turns Dify's beat entry on ("" = none)
    # Dify's settings that must all be on for a scheduled (--scheduled) run to go ahead; see core/switches.
    switches: tuple[Switch, ...]
    lock_key: str  # logical lock key (Dify's name where Dify has one)
    help: str = ""  # what --help says after the summary and the Dify line
    options: tuple[Opt, ...] = ()  # the job's own options, in --help order
    window: Window | None = None
    batch: Batch | None = field(default_factory=Batch)
    # Params fields filled from a setting that has no flag of its own.
    from_settings: tuple[tuple[str, str], ...] = ()
    dry_run_help: str | None = None  # the job's own words for --dry-run
    destructive: bool = True
    # Flags every unattended (cron / CronJob) run of this job needs beyond --yes and --max-runtime.
    scheduled_args: tuple[str, ...] = ()
    # False for manual commands (restores, one-off repairs): no CronJob manifest or crontab line is generated.
    scheduled: bool = True

    def load(self) -> ModuleType:
        """The job module: a name in this package, or a dotted path (a job kept elsewhere, e.g. in tests)."""
        return importlib.import_module(self.module if "." in self.module else f"difymaint.jobs.{self.module}")

    def all_options(self) -> tuple[Opt, ...]:
        """The job's options as its command takes them: window, its own, then batch sizing."""
        window = window_options(self.window) if self.window else ()
        batch = batch_options(self.batch) if self.batch else ()
        return (*window, *self.options, *batch)

    def describe(self) -> str:
        """The long --help text."""
        origin = ""
        if self.dify_switch:
            origin = (
                f"Replaces Dify's {self.dify_task} beat job (schedule {self.schedule}, switch {self.dify_switch}). "
            )
        return f"{self.summary}\n\n{origin}{self.help}".rstrip()


_SANDBOX_BATCH = Batch(
    setting="SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE",
    sleep_setting="SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL",
    workers=True,
)
_SANDBOX_WINDOW = Window("SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS")

JOBS: dict[str, JobInfo] = {
    "clean-messages": JobInfo(
        name="clean-messages",
        module="clean_messages",
        summary="Delete expired chat messages and their child rows (sandbox tenants, or all with billing off).",
        schedule="0 4 * * *",
        dify_task="clean_messages",
        dify_switch="ENABLE_CLEAN_MESSAGES",
        switches=(Switch("ENABLE_CLEAN_MESSAGES", dify_default=False),),
        help="Messages, their feedbacks, annotations, chains, agent thoughts, files, saved messages, annotation "
        "hits and retriever resources go in one transaction per batch. With BILLING_ENABLED=false every workspace "
        "is treated as sandbox (Dify's behaviour).",
        window=_SANDBOX_WINDOW,
        options=(
            TENANT_IDS,
            graceful_period("messages"),
            Opt(
                "scan_strategy",
                ("--scan-strategy",),
                "auto: eligible tenants first when billing is on, one global scan when off.",
                metavar="auto|global|eligible-apps",
                choices=("auto", "global", "eligible-apps", "eligible_apps"),
                setting="SANDBOX_EXPIRED_RECORDS_CLEAN_SCAN_STRATEGY",
            ),
            Opt(
                "clean_conversations",
                ("--clean-conversations",),
                "Also delete conversations left without messages and untouched since the cut-off.",
                type=bool,
                kind="flag",
            ),
            ORPHAN_MANIFEST,
        ),
        batch=_SANDBOX_BATCH,
        from_settings=(("app_page_size", "SANDBOX_EXPIRED_RECORDS_CLEAN_APP_PAGE_SIZE"),),
        lock_key="retention:clean_messages",  # Dify's own key: difymaint and Dify's beat exclude each other
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
        help="Dify's WorkflowRunArchiver (flask archive-workflow-runs). Dify has no beat entry for it "
        "(archive_workflow_runs_task lives on a branch); the generated schedules run it at 0 23 * * *. Ended "
        "workflow and rag-pipeline runs in the window, not yet in workflow_archive_logs, of paid workspaces "
        "(professional or team; every workspace with BILLING_ENABLED=false) are written with their app logs, node "
        "executions, offloads, pauses, pause reasons and trigger logs as one archive.v1.0.zip per run at "
        "{tenant_id}/app_id={app_id}/year=YYYY/month=MM/workflow_run_id={run_id}/, then recorded in "
        "workflow_archive_logs. Runs are deleted only with --delete-after-archive.",
        window=Window(
            "PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS",
            days_help="Archive runs older than this many days (PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS, 90).",
        ),
        options=(
            Opt(
                "tenant_ids",
                ("--tenant-ids",),
                "Comma-separated workspaces to archive (PAID_PLAN_WORKFLOW_RUN_ARCHIVE_TENANT_IDS); default: every "
                "paid workspace.",
                kind="ids",
                metavar="IDS",
                setting="PAID_PLAN_WORKFLOW_RUN_ARCHIVE_TENANT_IDS",
            ),
            Opt("limit", ("--limit",), "Archive at most N runs in this run.", type=int, metavar="N", min=1),
            Opt(
                "delete_after_archive",
                ("--delete-after-archive",),
                "Delete the archived runs and their rows (the clean-workflow-runs cascade) in the same transaction "
                "as their workflow_archive_logs rows.",
                type=bool,
                kind="flag",
            ),
            ARCHIVE_DIR,
        ),
        batch=Batch(
            setting="PAID_PLAN_WORKFLOW_RUN_ARCHIVE_BATCH_SIZE",
            help="Runs per batch to start with (PAID_PLAN_WORKFLOW_RUN_ARCHIVE_BATCH_SIZE, 100).",
        ),
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
        help="Only ended runs (succeeded, failed, partial-succeeded, stopped) go; running, paused and scheduled "
        "runs stay. Node-execution offloads, node executions, app logs, pause reasons, pauses, trigger logs and "
        "the runs go in one transaction per batch. With BILLING_ENABLED=false every workspace is treated as "
        "sandbox (Dify's behaviour).",
        window=_SANDBOX_WINDOW,
        options=(
            TENANT_IDS,
            graceful_period("runs"),
            Opt(
                "with_messages",
                ("--with-messages",),
                "Also delete the runs' advanced-chat messages, then conversations left without messages and "
                "untouched since the cut-off.",
                type=bool,
                kind="flag",
            ),
            ORPHAN_MANIFEST,
        ),
        batch=_SANDBOX_BATCH,
        lock_key="retention:clean_workflow_runs_task",  # Dify's own key, shared with Dify's beat
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
        help="No plan check: every tenant's ended runs go. Per batch one transaction: the runs' messages with their "
        "child rows, the conversations left without messages and untouched since the cut-off (a conversation "
        "with newer messages stays), then the runs with node executions, offloads, app logs, pauses and trigger "
        "logs. A failed batch is retried on the same cursor (1 s, 2 s); the third failure in a row fails the run.",
        window=Window("WORKFLOW_LOG_RETENTION_DAYS", forms="days"),
        options=(
            Opt(
                "workflow_ids",
                ("--workflow-ids",),
                "Comma-separated workflow ids to limit the run to (WORKFLOW_LOG_CLEANUP_SPECIFIC_WORKFLOW_IDS).",
                kind="ids",
                metavar="IDS",
                setting="WORKFLOW_LOG_CLEANUP_SPECIFIC_WORKFLOW_IDS",
            ),
            Opt("app_ids", ("--app-ids",), "Comma-separated app ids to limit the run to.", kind="ids", metavar="IDS"),
            ORPHAN_MANIFEST,
        ),
        batch=Batch(setting="WORKFLOW_LOG_CLEANUP_BATCH_SIZE"),
        lock_key="retention:clean_workflow_runlogs_precise",  # Dify takes no lock for it
    ),
    "clean-embeddings": JobInfo(
        name="clean-embeddings",
        module="clean_embeddings",
        summary="Delete embedding cache rows (the embeddings table) older than PLAN_SANDBOX_CLEAN_DAY_SETTING days.",
        schedule="0 2 * * *",
        dify_task="clean_embedding_cache_task",
        dify_switch="ENABLE_CLEAN_EMBEDDING_CACHE_TASK",
        switches=(Switch("ENABLE_CLEAN_EMBEDDING_CACHE_TASK", dify_default=False),),
        help="Global, no plan check: the cache has no tenant. Each batch deletes a page of ids in one statement "
        "and commits (Dify: one DELETE per row); Dify recomputes a missing embedding on its next use.",
        window=Window("PLAN_SANDBOX_CLEAN_DAY_SETTING"),
        batch=Batch(default=1000, workers=True),
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
        help="On by default in Dify. Active tokens and tokens that expired or were revoked less than the retention "
        "ago stay. On a Dify version without the oauth_access_tokens table the run ends with a warning and exit 0.",
        options=(
            Opt(
                "retention_days",
                ("--days",),
                "Delete tokens revoked, or expired and never revoked, more than this many days ago "
                "(OAUTH_ACCESS_TOKEN_RETENTION_DAYS, 30).",
                type=int,
                metavar="DAYS",
                min=1,
                setting="OAUTH_ACCESS_TOKEN_RETENTION_DAYS",
                panel=WINDOW,
            ),
        ),
        batch=Batch(default=500),  # Dify's DELETE_BATCH_SIZE
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
        help="Pass 'all': every workspace, datasets unused for PLAN_SANDBOX_CLEAN_DAY_SETTING (30) days, with one "
        "dataset_auto_disable_logs row per document (notify-cleaned-documents mails them). Pass 'sandbox': sandbox "
        "workspaces, PLAN_PRO_CLEAN_DAY_SETTING (7) days, no logs. With BILLING_ENABLED=false EVERY workspace is "
        "sandbox (Dify's behaviour). Documents are disabled, never deleted; the vector index removal goes to "
        "Dify's workers (--enqueue-index-removal) or to a work list (--emit-index-removals), one of which a real "
        "run needs.",
        options=(
            Opt(
                "all_days",
                ("--days",),
                "Pass 'all': unused for this many days (PLAN_SANDBOX_CLEAN_DAY_SETTING, 30).",
                type=int,
                metavar="DAYS",
                min=1,
                setting="PLAN_SANDBOX_CLEAN_DAY_SETTING",
                panel=WINDOW,
            ),
            Opt(
                "sandbox_days",
                ("--sandbox-days",),
                "Pass 'sandbox': unused for this many days (PLAN_PRO_CLEAN_DAY_SETTING, 7).",
                type=int,
                metavar="DAYS",
                min=1,
                setting="PLAN_PRO_CLEAN_DAY_SETTING",
                panel=WINDOW,
            ),
            Opt(
                "passes",
                ("--pass",),
                "all: every workspace, logged; sandbox: sandbox workspaces, shorter, unlogged; both (Dify).",
                metavar="both|all|sandbox",
                choices=("both", "all", "sandbox"),
                default="both",
            ),
            Opt(
                "enqueue_index_removal",
                ("--enqueue-index-removal",),
                "Send Dify's Celery task deal_dataset_vector_index_task(dataset_id, 'remove') to queue 'dataset' on "
                "CELERY_BROKER_URL before disabling each batch.",
                type=bool,
                kind="flag",
            ),
            Opt(
                "emit_index_removals",
                ("--emit-index-removals",),
                "Append one JSON line per dataset whose index must be removed (dataset_id, tenant_id, "
                "indexing_technique, doc_form, …), written before each batch is disabled.",
                type=Path,
                metavar="PATH",
            ),
            Opt(
                "broker_url",
                ("--broker-url",),
                "Celery broker URL; overrides CELERY_BROKER_URL.",
                metavar="URL",
                setting="CELERY_BROKER_URL",
                panel=CONNECTION,
            ),
            TENANT_IDS,
        ),
        batch=Batch(default=50),  # Dify's page size
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
        help="Reads the dataset_auto_disable_logs that clean-unused-datasets wrote, mails each non-sandbox "
        "workspace's owner once (MAIL_TYPE smtp or resend, Dify's settings), and marks that workspace's logs "
        "notified right after its mail was accepted. With BILLING_ENABLED=false every workspace is sandbox: no "
        "mail is sent and the logs are only marked (Dify's behaviour). MAIL_TYPE unset: nothing is sent or "
        "marked. No confirmation is needed unless --purge-notified-older-than deletes rows.",
        options=(
            Opt(
                "purge_notified_older_than",
                ("--purge-notified-older-than",),
                "Also delete logs already notified and older than DAYS (Dify never prunes them).",
                type=int,
                metavar="DAYS",
                min=1,
            ),
            Opt(
                "console_web_url",
                ("--console-web-url",),
                "Console base URL for the link in the mail; overrides CONSOLE_WEB_URL.",
                metavar="URL",
                setting="CONSOLE_WEB_URL",
            ),
            TENANT_IDS,
        ),
        batch=Batch(default=100, help="Workspaces per page.", max=10000, sleep_option=False),
        dry_run_help="Render the mails on stdout (stderr with --json) instead of sending; mark nothing.",
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
        help="Dify's flask restore-workflow-runs. The runs come from workflow_archive_logs: --run-id, or those "
        "archived with a run created in --start-from .. --end-before (--tenant-ids, --limit). Every table file of "
        "a bundle is checked against its manifest (MD5, size, row count) before anything is inserted; then, in "
        "one transaction per run, the rows whose id is missing are inserted (restoring twice is harmless) and the "
        "run's workflow_archive_logs rows are removed, as Dify does (--keep-archive-logs keeps them). A run that "
        "fails does not stop the others; the command then exits 1 and the --json summary lists the failures. "
        "Reads archives of archive-workflow-runs and of Dify.",
        options=(
            Opt(
                "run_ids",
                ("--run-id",),
                "A run to restore; repeat the option or separate ids by commas.",
                kind="repeated_ids",
                metavar="ID",
            ),
            Opt(
                "start_from", ("--start-from",), "Window start, UTC (with --end-before).", metavar="DATE", panel=WINDOW
            ),
            Opt("end_before", ("--end-before",), "Window end (exclusive), UTC.", metavar="DATE", panel=WINDOW),
            TENANT_IDS,
            Opt(
                "limit",
                ("--limit",),
                "Restore at most N runs of the window (default 100).",
                type=int,
                metavar="N",
                min=1,
                default=100,
            ),
            Opt(
                "keep_archive_logs",
                ("--keep-archive-logs",),
                "Keep the runs' workflow_archive_logs rows (Dify removes them after a restore).",
                type=bool,
                kind="flag",
            ),
            ARCHIVE_DIR,
        ),
        batch=None,
        dry_run_help="Read and verify the archives and count the rows a restore would insert, per table; insert "
        "nothing.",
        lock_key="maintenance:restore_workflow_runs",
        scheduled=False,
    ),
}
