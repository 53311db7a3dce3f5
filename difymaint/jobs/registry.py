"""The job registry: one entry per job, one module per job, imported only when the job runs.

Listing jobs (``--help``, deploy manifests, the reference) never imports SQLAlchemy or a job module. Each
entry declares everything the CLI, the runner, the schedule renderers and the catalogue need: the job's
options, window and batch sizing (:mod:`difymaint.jobs.spec`), its Dify counterpart, switches and lock, and
the tables its summary reports. Adding a job is one module in this package plus one entry here (see
docs/design.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from difymaint.dify.switches import Switch
from difymaint.jobs.spec import (
    ARCHIVE_DIR,
    CONNECTION,
    MAX_DAYS,
    ORPHAN_MANIFEST,
    TENANT_IDS,
    WINDOW,
    Batching,
    Opt,
    Window,
    batch_options,
    graceful_period,
    window_options,
)


@dataclass(frozen=True)
class JobInfo:
    name: str  # the subcommand
    module: str  # difymaint.jobs.<module>: `Params`, `run(job, params)` and optional hooks (see jobs/execute.py)
    summary: str
    schedule: str  # Dify's default beat schedule as a cron line (LOG_TZ=UTC, CELERY_BEAT_SCHEDULER_TIME=1)
    dify_task: str  # the beat entry it replaces
    dify_switch: str  # the ENABLE_* flag that turns Dify's beat entry on ("" = none)
    # Dify's settings that must all be on for a scheduled (--scheduled) run to go ahead; see dify/switches.
    switches: tuple[Switch, ...]
    lock_key: str  # logical lock key (Dify's name where Dify has one)
    # What the summary counts, in order (the first is the progress line's running total), and in which words;
    # a job narrows the list with JobRun.use_tables when the live schema or its params leave tables out.
    tables: tuple[str, ...] = ()
    verbs: tuple[str, str] = ("deleted", "would delete")
    help: str = ""  # what --help says after the summary and the Dify line
    options: tuple[Opt, ...] = ()  # the job's own options, in --help order
    window: Window | None = None
    batch: Batching | None = field(default_factory=Batching)
    # Params fields filled from a setting that has no flag of its own.
    from_settings: tuple[tuple[str, str], ...] = ()
    dry_run_help: str | None = None  # the job's own words for --dry-run
    destructive: bool = True
    # False for jobs that never touch Dify's database (monitor-queue): their run history is then recorded only
    # where a database is configured and reachable, and an unreachable one costs a note, not the run.
    needs_database: bool = True
    # Flags every unattended (cron / CronJob) run of this job needs beyond --yes and --max-runtime.
    scheduled_args: tuple[str, ...] = ()
    # False for manual commands (restores, one-off repairs): no CronJob manifest or crontab line is generated.
    scheduled: bool = True
    # Scheduled jobs this one must be finished before (archive before deletion): the renderers cap its deadline
    # and --max-runtime at the time until their next start.
    finishes_before: tuple[str, ...] = ()
    # True for monitors: exit 3 means their threshold was exceeded (an alert, not a failure).
    alerts: bool = False
    # Command lines for the --help epilog (default: a dry run and a real run, see usage_examples).
    examples: tuple[str, ...] = ()
    # Dify's setting (minutes) that its beat runs this job every (timedelta(minutes=...)); `schedule` is the cron
    # line of its default. ops/schedule.py job_schedule derives the effective line from it.
    interval_setting: str = ""
    # Dify's setting (days) its beat uses as day_of_month="*/N" in this job's crontab (CELERY_BEAT_SCHEDULER_TIME).
    every_days_setting: str = ""

    def load(self) -> ModuleType:
        """The job module: a name in this package, or a dotted path (a job kept elsewhere, e.g. in tests)."""
        return importlib.import_module(self.module if "." in self.module else f"difymaint.jobs.{self.module}")

    def all_options(self) -> tuple[Opt, ...]:
        """The job's options as its command takes them: window, its own, then batch sizing."""
        window = window_options(self.window) if self.window else ()
        batch = batch_options(self.batch) if self.batch else ()
        return (*window, *self.options, *batch)

    def usage_examples(self) -> tuple[str, ...]:
        """The command lines --help shows: the entry's own, else a look first and the run an operator types."""
        if self.examples:
            return self.examples
        command = f"difymaint {self.name}"
        if not self.scheduled:
            return (f"{command} --dry-run", f"{command} --yes --json")
        if self.destructive:
            window = " --days 90" if self.window is not None else ""
            return (f"{command}{window} --dry-run", f"{command}{window} --yes --max-runtime 3600 --json")
        return (f"{command} --dry-run", f"{command} --json")

    def setting_overrides(self, values: dict[str, object]) -> dict[str, object]:
        """Settings the given flags override (None = the flag was not given): every flag that stands for a
        setting reaches the job through it, so flag > environment > env file > default holds for all alike."""
        overrides: dict[str, object] = {opt.setting: values.get(opt.name) for opt in self.options if opt.setting}
        if self.window is not None:
            overrides[self.window.setting] = values.get("days")
        if self.batch is not None:
            if self.batch.setting:
                overrides[self.batch.setting] = values.get("batch_size")
            if self.batch.sleep_setting:
                overrides[self.batch.sleep_setting] = values.get("sleep_ms")
            if self.batch.workers:
                overrides["DIFYMAINT_WORKERS"] = values.get("workers")
            if self.batch.shard:
                overrides["DIFYMAINT_SHARD"] = values.get("shard")
        return overrides

    def describe(self) -> str:
        """The long --help text."""
        origin = ""
        if self.dify_switch:
            origin = (
                f"Replaces Dify's {self.dify_task} beat job (schedule {self.schedule}, switch {self.dify_switch}). "
            )
        return f"{self.summary}\n\n{origin}{self.help}".rstrip()


# Summary tables of the cascades (dify/cascades.py and dify/archive.py declare them; a test keeps these equal).
_MESSAGE_TABLES = (
    "messages",
    "message_feedbacks",
    "message_annotations",
    "message_chains",
    "message_agent_thoughts",
    "message_files",
    "saved_messages",
    "app_annotation_hit_histories",
    "dataset_retriever_resources",
)
_CONVERSATION_TABLES = ("pinned_conversations", "workflow_conversation_variables", "conversations")
_RUN_TABLES = (
    "workflow_runs",
    "workflow_node_execution_offload",
    "workflow_node_executions",
    "workflow_app_logs",
    "workflow_pause_reasons",
    "workflow_pauses",
    "workflow_trigger_logs",
)
_RUN_MESSAGE_TABLES = (
    "message_feedbacks",
    "message_annotations",
    "message_chains",
    "message_agent_thoughts",
    "message_files",
    "saved_messages",
    "app_annotation_hit_histories",
    "dataset_retriever_resources",
    "messages",
)
_ARCHIVED_TABLES = (
    "workflow_runs",
    "workflow_app_logs",
    "workflow_node_executions",
    "workflow_node_execution_offload",
    "workflow_pauses",
    "workflow_pause_reasons",
    "workflow_trigger_logs",
)

# Dify's runtime guard of the TiDB pool filler (the task returns at once unless it is on).
POOL_GUARD = Switch("CREATE_TIDB_SERVICE_JOB_ENABLED", dify_default=False)

_SANDBOX_BATCH = Batching(
    setting="SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE",
    sleep_setting="SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL",
    workers=True,
    shard=True,
)
_SANDBOX_WINDOW = Window("SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS")

_TIDB_LEAK_FILE = Opt(
    "leak_file",
    ("--leak-file",),
    "JSON-lines file of clusters created but not recorded (DIFYMAINT_TIDB_LEAK_FILE).",
    type=Path,
    metavar="PATH",
    setting="DIFYMAINT_TIDB_LEAK_FILE",
)
_TIDB_BUDGET = (
    Opt(
        "max_failed_requests",
        ("--max-failed-requests",),
        "Failure budget: stop after this many failed TiDB Cloud requests in a row (DIFYMAINT_TIDB_MAX_REQUESTS, 10).",
        type=int,
        metavar="N",
        min=1,
        setting="DIFYMAINT_TIDB_MAX_REQUESTS",
        panel=CONNECTION,
    ),
    Opt(
        "max_failing_seconds",
        ("--max-failing-seconds",),
        "Failure budget: stop once TiDB Cloud has kept failing this long (DIFYMAINT_TIDB_MAX_SECONDS, 30).",
        type=float,
        metavar="S",
        setting="DIFYMAINT_TIDB_MAX_SECONDS",
        panel=CONNECTION,
    ),
)

JOBS: dict[str, JobInfo] = {
    "clean-messages": JobInfo(
        name="clean-messages",
        module="clean_messages",
        summary="Delete expired chat messages and their child rows (sandbox tenants, or all with billing off).",
        schedule="0 4 * * *",
        every_days_setting="CELERY_BEAT_SCHEDULER_TIME",  # Dify: day_of_month="*/N"
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
        tables=(*_MESSAGE_TABLES, *_CONVERSATION_TABLES),
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
        batch=Batching(
            default=100,
            setting="PAID_PLAN_WORKFLOW_RUN_ARCHIVE_BATCH_SIZE",
            help="Runs per batch to start with (PAID_PLAN_WORKFLOW_RUN_ARCHIVE_BATCH_SIZE, 100).",
        ),
        lock_key="maintenance:archive_workflow_runs",
        tables=(*_ARCHIVED_TABLES, "workflow_archive_logs"),
        verbs=("archived", "would archive"),
        finishes_before=("clean-workflow-runs",),  # archive before deletion where both are on
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
        tables=(*_RUN_TABLES, *_RUN_MESSAGE_TABLES, *_CONVERSATION_TABLES),
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
        batch=Batching(default=100, setting="WORKFLOW_LOG_CLEANUP_BATCH_SIZE", shard=True),
        lock_key="retention:clean_workflow_runlogs_precise",  # Dify takes no lock for it
        tables=(*_RUN_TABLES, *_RUN_MESSAGE_TABLES, *_CONVERSATION_TABLES),
    ),
    "clean-embeddings": JobInfo(
        name="clean-embeddings",
        module="clean_embeddings",
        summary="Delete embedding cache rows (the embeddings table) older than PLAN_SANDBOX_CLEAN_DAY_SETTING days.",
        schedule="0 2 * * *",
        every_days_setting="CELERY_BEAT_SCHEDULER_TIME",  # Dify: day_of_month="*/N"
        dify_task="clean_embedding_cache_task",
        dify_switch="ENABLE_CLEAN_EMBEDDING_CACHE_TASK",
        switches=(Switch("ENABLE_CLEAN_EMBEDDING_CACHE_TASK", dify_default=False),),
        help="Global, no plan check: the cache has no tenant. Each batch deletes a page of ids in one statement "
        "and commits (Dify: one DELETE per row); Dify recomputes a missing embedding on its next use.",
        window=Window("PLAN_SANDBOX_CLEAN_DAY_SETTING"),
        batch=Batching(default=1000, workers=True),
        lock_key="maintenance:clean_embeddings",
        tables=("embeddings",),
    ),
    "clean-oauth-tokens": JobInfo(
        name="clean-oauth-tokens",
        module="clean_oauth_tokens",
        summary="Delete CLI OAuth access tokens revoked, or expired and never revoked, more than "
        "OAUTH_ACCESS_TOKEN_RETENTION_DAYS days ago.",
        schedule="0 5 * * *",
        every_days_setting="CELERY_BEAT_SCHEDULER_TIME",  # Dify: day_of_month="*/N"
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
        batch=Batching(default=500),  # Dify's DELETE_BATCH_SIZE
        lock_key="maintenance:clean_oauth_tokens",
        tables=("oauth_access_tokens",),
    ),
    "clean-dataset-queries": JobInfo(
        name="clean-dataset-queries",
        module="clean_dataset_queries",
        summary="Delete dataset_queries (the retrieval log) older than CLEAN_DATASET_QUERIES_RETENTION_DAYS, never "
        "younger than PLAN_SANDBOX_CLEAN_DAY_SETTING days.",
        schedule="0 5 * * *",
        every_days_setting="CELERY_BEAT_SCHEDULER_TIME",  # Dify's branch: day_of_month="*/N"
        dify_task="clean_dataset_queries_task (branch only)",
        dify_switch="ENABLE_CLEAN_DATASET_QUERIES_TASK",
        switches=(Switch("ENABLE_CLEAN_DATASET_QUERIES_TASK", dify_default=False),),
        help="Every workspace and source: rows with created_at before now - max(CLEAN_DATASET_QUERIES_RETENTION_DAYS "
        "(60), PLAN_SANDBOX_CLEAN_DAY_SETTING (30)) days go (clean-unused-datasets reads these rows to tell a "
        "knowledge base in use, so they are kept at least that long; a shorter retention is raised, with a "
        "warning). Keyset batches, one transaction each. Takes Dify's own lock, so a Dify run of the task and a "
        "difymaint run never overlap. Doctor offers the created_at index Dify's branch migration adds.",
        options=(
            Opt(
                "retention_days",
                ("--days",),
                "Delete rows older than this many days (CLEAN_DATASET_QUERIES_RETENTION_DAYS, 60; raised to "
                "PLAN_SANDBOX_CLEAN_DAY_SETTING when below it).",
                type=int,
                metavar="DAYS",
                min=1,
                setting="CLEAN_DATASET_QUERIES_RETENTION_DAYS",
                panel=WINDOW,
            ),
        ),
        from_settings=(("floor_days", "PLAN_SANDBOX_CLEAN_DAY_SETTING"),),
        batch=Batching(
            default=500,
            setting="CLEAN_DATASET_QUERIES_BATCH_SIZE",
            help="Rows per batch to start with (CLEAN_DATASET_QUERIES_BATCH_SIZE, 500).",
            workers=True,
        ),
        lock_key="retention:clean_dataset_queries_task",  # Dify's own key, shared with Dify's task
        tables=("dataset_queries",),
    ),
    "reap-stuck-runs": JobInfo(
        name="reap-stuck-runs",
        module="reap_stuck_runs",
        summary="Mark workflow runs stuck in scheduled or running (their worker died) as failed.",
        schedule="* * * * *",  # Dify's branch: every minute
        dify_task="reap_zombie_workflow_runs_task (branch only)",
        dify_switch="ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK",
        # On by default on Dify's branch, but no released Dify schedules the task: a scheduled run that failed
        # runs because an operator merely left the variable unset would be a surprise, so unset means off here.
        switches=(
            Switch(
                "ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK",
                dify_default=False,
                unset_note="off unless set to true: the task exists only on a Dify branch",
            ),
        ),
        help="Runs in 'scheduled' created more than ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES (5) ago, and runs in "
        "'running' created more than ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES (30) ago with no node execution "
        "created or finished since that cut-off, get status 'failed', finished_at now and Dify's error text; "
        "nothing else changes. Each batch locks its runs (FOR UPDATE SKIP LOCKED) and re-checks the predicate "
        "before it updates, so a run a worker resumed meanwhile is never failed. Scheduled runs reap only when "
        "ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK (or DIFYMAINT_ENABLE_REAP_STUCK_RUNS) is set to true.",
        options=(
            Opt(
                "scheduled_timeout_min",
                ("--scheduled-timeout",),
                "Fail runs still 'scheduled' this many minutes after creation "
                "(ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES, 5).",
                type=int,
                metavar="MINUTES",
                min=1,
                max=MAX_DAYS * 24 * 60,
                setting="ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES",
                panel=WINDOW,
            ),
            Opt(
                "running_timeout_min",
                ("--running-timeout",),
                "Fail runs 'running' this many minutes after creation with no node activity for as long "
                "(ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES, 30).",
                type=int,
                metavar="MINUTES",
                min=1,
                max=MAX_DAYS * 24 * 60,
                setting="ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES",
                panel=WINDOW,
            ),
            Opt(
                "include_trigger_logs",
                ("--include-trigger-logs",),
                "Also fail the reaped runs' workflow_trigger_logs still queued or running (Dify leaves them).",
                type=bool,
                kind="flag",
            ),
        ),
        batch=Batching(default=500, help="Runs per batch (one transaction each) to start with.", sleep_option=False),
        dry_run_help="Count the runs (and trigger logs) it would fail, per kind; lock and change nothing.",
        lock_key="maintenance:reap_stuck_runs",  # Dify takes none: the row locks are the guard
        tables=("workflow_runs",),
        verbs=("updated", "would update"),
        # A run killed without releasing its lock blocks one tick at most (like the other every-minute jobs).
        scheduled_args=("--lock-ttl=60",),
    ),
    "clean-unused-datasets": JobInfo(
        name="clean-unused-datasets",
        module="clean_unused_datasets",
        summary="Disable the documents of knowledge bases unused for N days and hand their index removal to Dify.",
        schedule="0 3 * * *",
        every_days_setting="CELERY_BEAT_SCHEDULER_TIME",  # Dify: day_of_month="*/N"
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
        batch=Batching(default=50),  # Dify's page size
        lock_key="maintenance:clean_unused_datasets",
        tables=("datasets", "documents", "dataset_auto_disable_logs"),
        verbs=("affected", "would affect"),
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
        batch=Batching(default=100, help="Workspaces per page.", max=10000, sleep_option=False),
        dry_run_help="Render the mails on stdout (stderr with --json) instead of sending; mark nothing.",
        lock_key="maintenance:notify_cleaned_documents",
        tables=("dataset_auto_disable_logs", "dataset_auto_disable_logs (purged)"),
        verbs=("affected", "would affect"),
        destructive=False,  # it sends mail and flips flags; only --purge-notified-older-than deletes (asks --yes)
    ),
    "create-tidb": JobInfo(
        name="create-tidb",
        module="create_tidb",
        summary="Top up the idle TiDB Serverless cluster pool (tidb_auth_bindings) to TIDB_SERVERLESS_NUMBER.",
        schedule="0 * * * *",
        dify_task="create_tidb_serverless_task",
        dify_switch="ENABLE_CREATE_TIDB_SERVERLESS_TASK",
        # Dify's beat switch, then the task's own runtime guard: both must be on for Dify to create anything.
        switches=(
            Switch("ENABLE_CREATE_TIDB_SERVERLESS_TASK", dify_default=False),
            POOL_GUARD,
        ),
        help="For the TiDB-on-Qdrant vector store. Idle = active is false (CREATING or ACTIVE). Clusters are "
        "created with POST /clusters:batchCreate, at most 20 per call (one call per batch); each created "
        "clusterId is logged before its binding row is written. With CREATE_TIDB_SERVICE_JOB_ENABLED=false "
        "nothing is created, even by hand (Dify's runtime guard; exit 0). A failing API is retried with "
        "jittered backoff within the failure budget, then the run exits 1. Clusters created but not recorded "
        "go to the leak file, which update-tidb-status --reap-older-than cleans.",
        options=(
            Opt(
                "target",
                ("--target",),
                "Idle pool size to reach (TIDB_SERVERLESS_NUMBER, 500).",
                type=int,
                metavar="N",
                min=1,
                setting="TIDB_SERVERLESS_NUMBER",
            ),
            _TIDB_LEAK_FILE,
            *_TIDB_BUDGET,
        ),
        batch=None,  # the batch is TiDB Cloud's: at most 20 clusters per batchCreate
        dry_run_help="Count the idle pool and say how many clusters would be created, in how many calls; call "
        "no TiDB Cloud API and write nothing.",
        lock_key="maintenance:create_tidb_serverless",  # Dify takes no lock for it
        tables=("tidb_auth_bindings",),
        verbs=("created", "would create"),
    ),
    "update-tidb-status": JobInfo(
        name="update-tidb-status",
        module="update_tidb_status",
        summary="Promote pooled TiDB Serverless clusters from CREATING to ACTIVE; report (and optionally reap) "
        "clusters stuck in CREATING.",
        schedule="*/10 * * * *",
        dify_task="update_tidb_serverless_status_task",
        dify_switch="ENABLE_UPDATE_TIDB_SERVERLESS_STATUS_TASK",
        switches=(Switch("ENABLE_UPDATE_TIDB_SERVERLESS_STATUS_TASK", dify_default=False),),
        help="Idle CREATING bindings are read in created_at order, 20 per GET /clusters:batchGet; a cluster "
        "TiDB Cloud reports ACTIVE with a userPrefix gets account {userPrefix}.root, the Qdrant endpoint "
        "https://qdrant-{endpoints.public.host} and status ACTIVE, one transaction per chunk. A failing chunk "
        "does not stop the others; the run then exits 1. Clusters still CREATING after --stuck-after hours are "
        "reported; with --reap-older-than they are deleted in TiDB Cloud and their binding rows removed, and "
        "leak-file clusters of that age without a binding row are deleted too.",
        options=(
            Opt(
                "stuck_after_hours",
                ("--stuck-after",),
                "Report clusters still CREATING this many hours after creation (default 24).",
                type=int,
                metavar="HOURS",
                min=1,
                default=24,
            ),
            Opt(
                "reap_older_than_hours",
                ("--reap-older-than",),
                "Delete clusters still CREATING after this many hours, in TiDB Cloud and in tidb_auth_bindings, "
                "and leaked clusters of that age (asks for --yes; --dry-run lists them).",
                type=int,
                metavar="HOURS",
                min=1,
            ),
            _TIDB_LEAK_FILE,
            *_TIDB_BUDGET,
        ),
        batch=Batching(
            default=20, max=20, help="Bindings per batchGet call (TiDB Cloud takes at most 20).", sleep_option=False
        ),
        dry_run_help="Ask TiDB Cloud (reads only) and report which bindings would be promoted and which clusters "
        "would be reaped; write nothing and delete nothing.",
        lock_key="maintenance:update_tidb_serverless_status",
        tables=("tidb_auth_bindings",),
        verbs=("promoted", "would promote"),
    ),
    "check-upgradable-plugins": JobInfo(
        name="check-upgradable-plugins",
        module="check_upgradable_plugins",
        summary="Refresh the marketplace manifest cache and hand the workspaces due for a plugin auto-upgrade "
        "check in this 15-minute window to Dify's workers.",
        schedule="*/15 * * * *",
        dify_task="check_upgradable_plugin_task",
        dify_switch="ENABLE_CHECK_UPGRADABLE_PLUGIN_TASK",
        switches=(
            Switch("ENABLE_CHECK_UPGRADABLE_PLUGIN_TASK", dify_default=True),
            Switch("MARKETPLACE_ENABLED", dify_default=True),
        ),
        help="Workspaces whose tenant_plugin_auto_upgrade_strategies.upgrade_time_of_day (seconds after UTC "
        "midnight) falls in [window start, +900 s), wrapping across midnight, and whose strategy is not "
        "'disabled'. With none due the marketplace is not contacted. Otherwise GET "
        "MARKETPLACE_API_URL/api/v1/dist/plugins/manifest.json, cache every plugin snapshot for 3600 s with one "
        "pipelined SETEX, then publish Dify's process_tenant_plugin_autoupgrade_check_task(tenant_id, "
        "strategy_setting, upgrade_time_of_day, upgrade_mode, exclude_plugins, include_plugins) to queue "
        "'plugin' on CELERY_BROKER_URL in one go, chunks of 20 delayed across the window with Celery's countdown "
        "(--spread) where Dify sleeps in the run. Also needs MARKETPLACE_ENABLED. A marketplace error skips the "
        "cycle and exits 1.",
        options=(
            Opt(
                "window_start",
                ("--window-start",),
                "The scheduled fire time whose 15-minute window to serve (ISO date-time, naive = UTC, or Unix "
                "seconds); default: now rounded down to 15 minutes.",
                metavar="WHEN",
                panel=WINDOW,
            ),
            Opt(
                "spread_s",
                ("--spread",),
                "Spread the workspaces, in chunks of 20, over this many seconds with Celery's countdown, as Dify "
                "does by sleeping (default 900; 0 = all at once).",
                type=int,
                metavar="SECONDS",
                min=0,
                max=3600,
                default=900,
            ),
        ),
        batch=Batching(default=100, help="Workspaces per published page.", sleep_option=False),
        dry_run_help="List the messages it would publish (and fetch the manifest); cache and publish nothing.",
        lock_key="maintenance:check_upgradable_plugins",
        tables=("tenant_plugin_auto_upgrade_strategies",),
        verbs=("dispatched", "would dispatch"),
        destructive=False,
    ),
    "timeout-human-input": JobInfo(
        name="timeout-human-input",
        module="timeout_human_input",
        summary="Time out human-input forms past their deadline: resume the workflow along its timeout path, or "
        "stop it after the global timeout.",
        schedule="* * * * *",
        interval_setting="HUMAN_INPUT_TIMEOUT_TASK_INTERVAL",
        dify_task="human_input_form_timeout",
        dify_switch="ENABLE_HUMAN_INPUT_TIMEOUT_TASK",
        switches=(Switch("ENABLE_HUMAN_INPUT_TIMEOUT_TASK", dify_default=True),),
        help="Waiting human_input_forms whose expiration_time has passed, or created more than "
        "HUMAN_INPUT_GLOBAL_TIMEOUT_SECONDS (604800) ago, in id order, a batch per transaction, until none is "
        "left or --max. Delivery tests are marked 'timeout'. A node timeout marks the form 'timeout' and "
        "publishes Dify's resume_app_execution(payload={'workflow_run_id': ...}) to queue "
        "'workflow_based_app_execution' (workflow and advanced-chat apps) before the batch commits. A global "
        "timeout marks it 'expired', stops the workflow run, sets the pause's resumed_at and removes the pause "
        "state object from Dify's storage (STORAGE_TYPE s3 or opendal/local fs), or lists it in "
        "--orphan-manifest when difymaint cannot reach that storage.",
        options=(
            Opt("max_forms", ("--max",), "Handle at most N forms in this run.", type=int, metavar="N", min=1),
            Opt(
                "global_timeout_s",
                ("--global-timeout",),
                "Seconds after creation a form times out globally (HUMAN_INPUT_GLOBAL_TIMEOUT_SECONDS, 604800; "
                "0 = off).",
                type=int,
                metavar="SECONDS",
                min=0,
                setting="HUMAN_INPUT_GLOBAL_TIMEOUT_SECONDS",
                panel=WINDOW,
            ),
            Opt(
                "orphan_manifest",
                ("--orphan-manifest",),
                "Append the pause state objects difymaint could not delete from Dify's storage, as JSON lines.",
                type=Path,
                metavar="PATH",
            ),
        ),
        batch=Batching(default=100, help="Forms per batch (Dify's limit, 100).", sleep_option=False),
        dry_run_help="List the forms it would time out, the runs it would stop and the resumes it would publish; "
        "change and publish nothing.",
        lock_key="maintenance:timeout_human_input",
        tables=("human_input_forms", "workflow_runs", "workflow_pauses"),
        verbs=("updated", "would update"),
        # Stops runs and deletes storage objects: asks for --yes, and scheduled runs get --max-runtime so a
        # backlog ends cleanly (exit 4) before the CronJob's deadline.
    ),
    "flush-api-token-usage": JobInfo(
        name="flush-api-token-usage",
        module="flush_api_token_usage",
        summary="Copy Service-API token usage (Redis api_token_active:* keys) to api_tokens.last_used_at.",
        schedule="*/30 * * * *",
        interval_setting="API_TOKEN_LAST_USED_UPDATE_INTERVAL",
        dify_task="batch_update_api_token_last_used",
        dify_switch="ENABLE_API_TOKEN_LAST_USED_UPDATE_TASK",
        switches=(Switch("ENABLE_API_TOKEN_LAST_USED_UPDATE_TASK", dify_default=True),),
        help="Scans the keys under REDIS_KEY_PREFIX (where Dify's API writes them; Dify's own job scans "
        "unprefixed and finds nothing under a prefix), takes each page with GETDEL, and moves last_used_at "
        "forward with one UPDATE ... FROM (VALUES ...) per page. Malformed keys or values are dropped and "
        "counted. Tokens never appear in output (a 12-digit SHA-256 at most). Schedule: every "
        "API_TOKEN_LAST_USED_UPDATE_INTERVAL (30) minutes.",
        batch=Batching(default=200, help="Keys per SCAN page (COUNT hint) and per UPDATE.", sleep_option=False),
        dry_run_help="Read the keys (GET, not GETDEL) and list the rows that would move (tokens as a short "
        "SHA-256); change nothing.",
        lock_key="maintenance:flush_api_token_usage",
        tables=("api_tokens",),
        verbs=("updated", "would update"),
        destructive=False,
    ),
    "monitor-queue": JobInfo(
        name="monitor-queue",
        module="monitor_queue",
        needs_database=False,
        alerts=True,
        summary="Check how many messages wait in Celery queues on Dify's broker; exit 3 and mail an alert at or "
        "above a threshold.",
        schedule="*/30 * * * *",  # every QUEUE_MONITOR_INTERVAL (30) minutes
        interval_setting="QUEUE_MONITOR_INTERVAL",
        dify_task="datasets-queue-monitor",
        dify_switch="ENABLE_DATASETS_QUEUE_MONITOR",
        switches=(Switch("ENABLE_DATASETS_QUEUE_MONITOR", dify_default=False),),
        help="Length = the queue's list plus its priority lists (\\x06\\x16 3/6/9) under the REDIS_KEY_PREFIX "
        "global_keyprefix, on the broker kombu connects to (Sentinel included; DB 0 when the URL has none). Also "
        "reports the unacked count and the oldest waiting message's age when the message shows a time. At or above "
        "the threshold: exit 3, one line on stderr, and one mail per address in QUEUE_MONITOR_ALERT_EMAILS "
        "(MAIL_TYPE smtp or resend), at most once per queue per cool-down. Needs no monitor worker and no "
        "database. With --all-queues also the consumers of each queue (Celery's active_queues broadcast): a queue "
        "holding messages that no worker consumes is dead (dead_queues; exit 3 with its own line), and the "
        "broker's used_memory against maxmemory. Redis brokers only.",
        options=(
            Opt(
                "queues",
                ("--queue",),
                "A queue to check; repeat the option or separate names by commas (default: dataset, as Dify).",
                kind="repeated",
                metavar="NAME",
            ),
            Opt(
                "all_queues",
                ("--all-queues",),
                "Check every queue Dify's worker consumes (the docker entrypoint's list).",
                type=bool,
                kind="flag",
            ),
            Opt(
                "threshold",
                ("--threshold",),
                "Alert at or above this many waiting messages per queue (QUEUE_MONITOR_THRESHOLD, 200).",
                type=int,
                metavar="N",
                min=0,
                setting="QUEUE_MONITOR_THRESHOLD",
            ),
            Opt(
                "alert_emails",
                ("--alert-emails",),
                "Comma-separated alert recipients; overrides QUEUE_MONITOR_ALERT_EMAILS.",
                metavar="ADDRESSES",
                setting="QUEUE_MONITOR_ALERT_EMAILS",
            ),
            Opt(
                "cooldown_minutes",
                ("--cooldown-minutes",),
                "Mail about a queue at most once per this many minutes (exit 3 every run regardless).",
                type=int,
                metavar="MIN",
                min=1,
                default=60,
            ),
            Opt(
                "inspect_timeout_s",
                ("--inspect-timeout",),
                "With --all-queues: seconds the workers have to say which queues they consume (default 2).",
                type=float,
                metavar="S",
                default=2.0,
                panel=CONNECTION,
            ),
            Opt(
                "broker_url",
                ("--broker-url",),
                "Celery broker URL; overrides CELERY_BROKER_URL.",
                metavar="URL",
                setting="CELERY_BROKER_URL",
                panel=CONNECTION,
            ),
        ),
        batch=None,
        dry_run_help="Measure and report; render the alert mails on stdout (stderr with --json) instead of "
        "sending them, and start no cool-down.",
        lock_key="maintenance:monitor_queue",
        verbs=("waiting", "waiting"),  # tables: the queues checked
        destructive=False,
    ),
    "poll-workflow-schedules": JobInfo(
        name="poll-workflow-schedules",
        module="poll_workflow_schedules",
        summary="Fire due workflow schedule triggers: advance each plan's next_run_at, then publish Dify's "
        "run_schedule_trigger task.",
        schedule="* * * * *",  # every WORKFLOW_SCHEDULE_POLLER_INTERVAL (1) minutes
        interval_setting="WORKFLOW_SCHEDULE_POLLER_INTERVAL",
        dify_task="workflow_schedule_task",
        dify_switch="ENABLE_WORKFLOW_SCHEDULE_POLLER_TASK",
        switches=(Switch("ENABLE_WORKFLOW_SCHEDULE_POLLER_TASK", dify_default=True),),
        help="On by default in Dify. Plans of enabled trigger-schedule app triggers whose next_run_at has come are "
        "selected FOR UPDATE SKIP LOCKED (concurrent pollers never share a plan); next_run_at is computed with "
        "croniter in the plan's time zone from now (Dify's rules) and committed before "
        "tasks.workflow_schedule_tasks.run_schedule_trigger(plan_id) goes to queue schedule_executor on "
        "CELERY_BROKER_URL, so a failed commit never fires twice. A plan with a bad cron expression or time zone "
        "is logged and pushed an hour ahead. Nothing is published, and nothing changed, when the broker is down.",
        options=(
            Opt(
                "max_dispatch",
                ("--max-dispatch",),
                "Publish at most N schedules in this run, the rest on the next tick "
                "(WORKFLOW_SCHEDULE_MAX_DISPATCH_PER_TICK, 0 = unlimited).",
                type=int,
                metavar="N",
                min=0,
                setting="WORKFLOW_SCHEDULE_MAX_DISPATCH_PER_TICK",
            ),
        ),
        batch=Batching(
            default=100,
            setting="WORKFLOW_SCHEDULE_POLLER_BATCH_SIZE",
            help="Plans per batch (one transaction each) to start with (WORKFLOW_SCHEDULE_POLLER_BATCH_SIZE, 100).",
            sleep_option=False,
        ),
        dry_run_help="List the schedules that would be published, with their next run; change and publish nothing.",
        lock_key="maintenance:poll_workflow_schedules",  # Dify takes none: its row locks are the guard
        tables=("workflow_schedule_plans",),
        verbs=("published", "would publish"),
        destructive=False,  # it moves next_run_at and publishes; nothing is deleted
        # A run killed without releasing its lock must not stall the schedules for DIFYMAINT_LOCK_TTL (600 s):
        # one minute at most. The lease is renewed per batch; the row locks make overlapping runs safe anyway.
        scheduled_args=("--lock-ttl=60",),
    ),
    "refresh-trigger-providers": JobInfo(
        name="refresh-trigger-providers",
        module="refresh_trigger_providers",
        summary="Hand plugin trigger subscriptions whose credential or subscription expires soon to Dify's "
        "trigger_subscription_refresh task.",
        schedule="* * * * *",  # every TRIGGER_PROVIDER_REFRESH_INTERVAL (1) minutes
        interval_setting="TRIGGER_PROVIDER_REFRESH_INTERVAL",
        dify_task="trigger_provider_refresh",
        dify_switch="ENABLE_TRIGGER_PROVIDER_REFRESH_TASK",
        switches=(Switch("ENABLE_TRIGGER_PROVIDER_REFRESH_TASK", dify_default=True),),
        help="On by default in Dify. Subscriptions whose credential_expires_at or expires_at (epoch seconds, -1 = "
        "never) falls within the thresholds are walked with an (updated_at, id) cursor; per page the in-flight key "
        "trigger_provider_refresh_lock:{tenant}_{subscription} is SET NX EX max(300, subscription threshold), "
        "prefixed with REDIS_KEY_PREFIX as Dify's executor reads it, and "
        "tasks.trigger_subscription_refresh_tasks.trigger_subscription_refresh(tenant_id=, subscription_id=) goes "
        "to queue trigger_refresh_executor for each key set. Needs Dify's Redis and CELERY_BROKER_URL once "
        "something is due.",
        options=(
            Opt(
                "credential_threshold_s",
                ("--credential-threshold",),
                "Refresh OAuth credentials expiring within this many seconds "
                "(TRIGGER_PROVIDER_CREDENTIAL_THRESHOLD_SECONDS, 3600).",
                type=int,
                metavar="SECONDS",
                min=0,
                setting="TRIGGER_PROVIDER_CREDENTIAL_THRESHOLD_SECONDS",
            ),
            Opt(
                "subscription_threshold_s",
                ("--subscription-threshold",),
                "Refresh subscriptions expiring within this many seconds; also sets the key TTL "
                "(TRIGGER_PROVIDER_SUBSCRIPTION_THRESHOLD_SECONDS, 3600).",
                type=int,
                metavar="SECONDS",
                min=0,
                setting="TRIGGER_PROVIDER_SUBSCRIPTION_THRESHOLD_SECONDS",
            ),
        ),
        batch=Batching(
            default=200,
            setting="TRIGGER_PROVIDER_REFRESH_BATCH_SIZE",
            help="Subscriptions per page (TRIGGER_PROVIDER_REFRESH_BATCH_SIZE, 200).",
            sleep_option=False,
        ),
        dry_run_help="List the subscriptions that would be published (no in-flight key yet); set and publish nothing.",
        lock_key="maintenance:refresh_trigger_providers",
        tables=("trigger_subscriptions",),
        verbs=("published", "would publish"),
        destructive=False,  # it sets Redis keys and publishes
        scheduled_args=("--lock-ttl=60",),  # a killed run blocks one tick at most (the keys throttle anyway)
    ),
    "clean-draft-variables": JobInfo(
        name="clean-draft-variables",
        module="clean_draft_variables",
        summary="Delete the draft variables of deleted apps, with their offloaded files (manual; never scheduled).",
        # Dify has no beat entry (a manual flask command) and orphans appear only when an app is deleted, whose
        # own deletion task already removes its variables: a run by hand after an upgrade or an incident suffices.
        schedule="",
        dify_task="flask cleanup-orphaned-draft-variables (manual command)",
        dify_switch="",
        switches=(),
        help="Dify's flask cleanup-orphaned-draft-variables. A draft variable is orphaned when its app row no longer "
        "exists (no other filter). Per app, batches of --batch-size variables: the workflow_draft_variable_files "
        "rows their file_id points at and those rows' upload_files go with them. Each file's object is deleted "
        "from Dify's storage (STORAGE_TYPE opendal with OPENDAL_SCHEME=fs, local, or s3) before the rows, with no "
        "transaction open; an object already missing is fine. A variable whose object cannot be deleted stays "
        "with its file rows for the next run, and the run exits 1 (Dify deletes the rows anyway). Where Dify's "
        "storage cannot be reached from here, --orphan-manifest lists the keys and the rows go.",
        options=(
            Opt(
                "max_apps",
                ("--max-apps",),
                "Stop after this many orphaned apps (Dify's --max-apps).",
                type=int,
                metavar="N",
                min=1,
            ),
            Opt(
                "orphan_manifest",
                ("--orphan-manifest",),
                "Where Dify's storage cannot be reached from here: append the keys of the files whose rows this "
                "run deletes, as JSON lines, instead of deleting the objects.",
                type=Path,
                metavar="PATH",
            ),
        ),
        batch=Batching(
            default=1000,
            help="Draft variables per batch to start with (Dify's --batch-size, 1000).",
            sleep_option=False,
        ),
        dry_run_help="Count the variables, file rows, upload files and bytes it would delete; touch no storage.",
        lock_key="maintenance:clean_draft_variables",  # Dify takes none
        tables=("workflow_draft_variables", "workflow_draft_variable_files", "upload_files"),
        scheduled=False,
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
        tables=_ARCHIVED_TABLES,
        verbs=("restored", "would restore"),
        scheduled=False,
    ),
    "sweep-files": JobInfo(
        name="sweep-files",
        module="sweep_files",
        summary="Delete stored files (upload_files, tool_files and their objects) that no Dify row refers to, "
        "older than a grace period, and objects under Dify's file prefixes that have no row.",
        # Dify has no beat entry for it: after the retention jobs (00:00-05:00), which leave such files behind.
        schedule="30 6 * * *",
        dify_task="clear-orphaned-file-records / remove-orphaned-files-on-storage (manual flask commands)",
        dify_switch="",
        # Dify has no such job to follow: DIFYMAINT_ENABLE_SWEEP_FILES alone decides, and is off until set to true.
        switches=(
            Switch(
                "DIFYMAINT_ENABLE_SWEEP_FILES",
                dify_default=False,
                unset_note="off unless set to true: Dify has no such job",
            ),
        ),
        help="Scans every row that may refer to a file (docs/jobs/sweep-files.md#referrers: uuid columns, uuids "
        "in text and JSON, /files/ URLs, dify-file-ref: references), then lists upload_files/, tools/ and "
        "image_files/ in Dify's storage (STORAGE_TYPE: opendal fs or s3, local, s3) in key order and deletes, one "
        "transaction per page, each object that has no row, or whose rows are unreferenced, once it is older than "
        "--grace-hours (upload_files.created_at and used_at, and the object's last-modified time), together with "
        "its rows. Never touches another prefix (privkeys/ holds the workspaces' keys) or writes to storage. "
        "--max-runtime stops between pages; the next run continues the listing where this one stopped. "
        "--orphan-manifest checks only the keys retention runs listed. --older-than adds the opt-in file "
        "retention.",
        options=(
            Opt(
                "grace_hours",
                ("--grace-hours",),
                "Never delete a file or object younger than this (default 24: Dify writes the object before its "
                "row, and a new upload is not referenced yet).",
                type=int,
                metavar="H",
                min=1,
                max=24 * 3650,
                default=24,
            ),
            Opt(
                "orphan_manifests",
                ("--orphan-manifest",),
                "Check only the keys in this --orphan-manifest file of the retention jobs instead of listing the "
                "storage; repeat for several.",
                kind="repeated",
                metavar="PATH",
            ),
            Opt(
                "older_than_days",
                ("--older-than",),
                "File retention (opt-in): also delete files older than DAYS whose only referrers are log rows "
                "(messages, conversations, workflow runs, node executions, …) all older than DAYS.",
                type=int,
                metavar="DAYS",
                min=1,
            ),
            Opt(
                "created_by_role",
                ("--created-by-role",),
                "With --older-than: only uploads made by this role (upload_files.created_by_role).",
                choices=("end_user", "account"),
                metavar="ROLE",
            ),
            Opt(
                "restart",
                ("--restart-listing",),
                "Start the listing from the first key instead of where the last run stopped.",
                type=bool,
                kind="flag",
            ),
        ),
        batch=Batching(default=500, help="Objects per batch (one listing page, one transaction).", sleep_option=False),
        dry_run_help="Scan, list and decide exactly as a real run, and report the counts and bytes it would free; "
        "delete nothing and keep the saved listing position.",
        lock_key="maintenance:sweep_files",
        tables=("upload_files", "tool_files"),
    ),
    "storage-report": JobInfo(
        name="storage-report",
        module="storage_report",
        summary="Where the disk goes: objects and bytes per Dify file prefix, files without rows, rows without "
        "files, unreferenced files, and per-table database size, dead tuples and vacuum advice. Read-only.",
        schedule="",
        dify_task="none (Dify has no such report)",
        dify_switch="",
        switches=(),
        help="Lists Dify's storage (STORAGE_TYPE) under upload_files/, tools/ and image_files/, scans what refers "
        "to each file row (as sweep-files does), and reads PostgreSQL's statistics: heap, index and TOAST size, "
        "live and dead tuples and the last (auto)vacuum of every table, the space a VACUUM would make reusable "
        "and the space only a rewrite (pg_repack, VACUUM FULL) would return. Changes nothing; never rewrites.",
        batch=None,
        destructive=False,
        dry_run_help="Same as without it: the report changes nothing.",
        lock_key="maintenance:storage_report",
        verbs=("reported", "reported"),
        scheduled=False,
    ),
}
