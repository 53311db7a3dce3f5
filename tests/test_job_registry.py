"""One declaration per job: the flag → params mapping of every command, asserted in-process by capturing the
params the CLI builds, and a throwaway job that appears everywhere from one registry entry."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from difymaint.cli.app import create_app
from difymaint.cli.runner import Environment, use_environment
from difymaint.core.context import Context
from difymaint.core.summary import RunSummary
from difymaint.devtools import deploy
from difymaint.devtools.reference import render_help, render_section
from difymaint.dify.switches import Switch
from difymaint.jobs import JOBS, JobInfo
from difymaint.jobs.resolve import declaration_errors
from difymaint.jobs.spec import TENANT_IDS, Batching, Opt, Window

T1 = "6f1c2a5e-0f0b-4c2d-9b7a-1e2f3a4b5c6d"
T2 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
DB = "sqlite:///unused.sqlite"  # the captured runs never connect


class Captured:
    def __init__(self) -> None:
        self.params: list[Any] = []

    def dispatch(self, info: JobInfo, ctx: Context, params: Any) -> RunSummary:
        self.params.append(params)
        return RunSummary(job=info.name, dry_run=params.run.dry_run, started_at=datetime.now(UTC))


@pytest.fixture
def captured() -> Iterator[Captured]:
    capture = Captured()
    with use_environment(Environment(dispatch=capture.dispatch, stdin_isatty=False)):
        yield capture


def params_for(
    captured: Captured, args: list[str], env: dict[str, str] | None = None, app: Any = None, database_url: str = DB
) -> Any:
    result = CliRunner().invoke(
        app or create_app(), [*args, "--database-url", database_url], env={"NO_COLOR": "1", **(env or {})}
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, (result.exit_code, result.output, result.stderr)
    return captured.params[-1]


def attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# The jobs refuse to run (exit 2, before any connection) without what they talk to; the captured runs never call it.
TIDB_CONFIG = {"TIDB_API_URL": "http://tidb", "TIDB_PUBLIC_KEY": "k", "TIDB_PRIVATE_KEY": "s", "TIDB_PROJECT_ID": "p"}

CASES: list[tuple[str, list[str], dict[str, str], dict[str, Any]]] = [
    (
        "clean-messages",
        [],
        {},
        {
            "window.label": "before-30",
            "tenant_ids": (),
            "graceful_period_days": 21,
            "scan_strategy": "auto",
            "clean_conversations": False,
            "orphan_manifest": None,
            "app_page_size": 500,
            "run.batch_size": 1000,
            "run.sleep_ms": 200,
            "run.workers": 1,
            "run.dry_run": True,
        },
    ),
    (
        "clean-messages",
        [
            "--days",
            "7",
            "--tenant-ids",
            f"{T1},{T2}",
            "--graceful-period",
            "3",
            "--scan-strategy",
            "global",
            "--clean-conversations",
            "--orphan-manifest",
            "/tmp/o.jsonl",
            "--batch-size",
            "250",
            "--sleep-ms",
            "0",
            "--max-batches",
            "2",
            "--max-runtime",
            "60",
            "--no-lock",
            "--vacuum-analyze",
        ],
        {},
        {
            "window.label": "before-7",
            "tenant_ids": (T1, T2),
            "graceful_period_days": 3,
            "scan_strategy": "global",
            "clean_conversations": True,
            "orphan_manifest": Path("/tmp/o.jsonl"),
            "run.batch_size": 250,
            "run.sleep_ms": 0,
            "run.max_batches": 2,
            "run.max_runtime_s": 60.0,
            "run.use_lock": False,
            "run.vacuum_analyze": True,
        },
    ),
    (  # Dify's settings from the environment; a flag beats them
        "clean-messages",
        ["--batch-size", "300"],
        {
            "SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS": "10",
            "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE": "50",
            "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL": "5",
            "SANDBOX_EXPIRED_RECORDS_CLEAN_GRACEFUL_PERIOD": "9",
            "SANDBOX_EXPIRED_RECORDS_CLEAN_APP_PAGE_SIZE": "77",
        },
        {
            "window.label": "before-10",
            "run.batch_size": 300,
            "run.sleep_ms": 5,
            "graceful_period_days": 9,
            "app_page_size": 77,
        },
    ),
    (
        "clean-messages",
        ["--from-days-ago", "60", "--to-days-ago", "30"],
        {},
        {"window.label": "60to30"},
    ),
    (
        "clean-workflow-runs",
        ["--days", "14", "--tenant-ids", T1, "--with-messages", "--graceful-period", "0", "--orphan-manifest", "/m"],
        {},
        {
            "window.label": "before-14",
            "tenant_ids": (T1,),
            "with_messages": True,
            "graceful_period_days": 0,
            "orphan_manifest": Path("/m"),
            "run.batch_size": 1000,
            "run.sleep_ms": 200,
        },
    ),
    (  # --workers beats DIFYMAINT_WORKERS
        "clean-workflow-runs",
        ["--workers", "3"],
        {"DIFYMAINT_WORKERS": "2"},
        {"run.workers": 3},
    ),
    (
        "clean-messages",
        [],
        {"DIFYMAINT_WORKERS": "2"},
        {"run.workers": 2},
    ),
    (  # a job without parallel slices ignores the setting
        "clean-workflow-logs",
        [],
        {"DIFYMAINT_WORKERS": "2"},
        {"run.workers": 1},
    ),
    (
        "clean-workflow-logs",
        ["--days", "5", "--workflow-ids", T1, "--app-ids", T2, "--batch-size", "20"],
        {},
        {"window.label": "before-5", "workflow_ids": (T1,), "app_ids": (T2,), "run.batch_size": 20, "run.sleep_ms": 0},
    ),
    (
        "clean-workflow-logs",
        [],
        {
            "WORKFLOW_LOG_RETENTION_DAYS": "45",
            "WORKFLOW_LOG_CLEANUP_BATCH_SIZE": "33",
            "WORKFLOW_LOG_CLEANUP_SPECIFIC_WORKFLOW_IDS": f"{T2}, {T1}",
        },
        {"window.label": "before-45", "run.batch_size": 33, "workflow_ids": (T2, T1), "app_ids": ()},
    ),
    (
        "clean-embeddings",
        [],
        {"PLAN_SANDBOX_CLEAN_DAY_SETTING": "12"},
        {"window.label": "before-12", "run.batch_size": 1000, "run.sleep_ms": 0},
    ),
    (
        "clean-embeddings",
        ["--start-from", "2026-01-01", "--end-before", "2026-02-01", "--batch-size", "10", "--sleep-ms", "7"],
        {},
        {"window.label": "custom", "run.batch_size": 10, "run.sleep_ms": 7, "run.workers": 1},
    ),
    (
        "clean-embeddings",
        ["--workers", "2"],
        {},
        {"run.workers": 2},
    ),
    (
        "clean-oauth-tokens",
        ["--days", "3"],
        {},
        {"retention_days": 3, "run.batch_size": 500},
    ),
    (
        "clean-oauth-tokens",
        [],
        {"OAUTH_ACCESS_TOKEN_RETENTION_DAYS": "40"},
        {"retention_days": 40},
    ),
    (
        "clean-unused-datasets",
        [
            "--days",
            "40",
            "--sandbox-days",
            "9",
            "--pass",
            "all",
            "--emit-index-removals",
            "/w.jsonl",
            "--tenant-ids",
            T1,
        ],
        {},
        {
            "all_days": 40,
            "sandbox_days": 9,
            "passes": "all",
            "emit_index_removals": Path("/w.jsonl"),
            "enqueue_index_removal": False,
            "tenant_ids": (T1,),
            "run.batch_size": 50,
        },
    ),
    (
        "clean-unused-datasets",
        [],
        {"PLAN_SANDBOX_CLEAN_DAY_SETTING": "31", "PLAN_PRO_CLEAN_DAY_SETTING": "8"},
        {"all_days": 31, "sandbox_days": 8, "passes": "both"},
    ),
    (
        "notify-cleaned-documents",
        ["--purge-notified-older-than", "90", "--tenant-ids", T2, "--batch-size", "7"],
        {},
        {"purge_notified_older_than": 90, "tenant_ids": (T2,), "run.batch_size": 7},
    ),
    (
        "monitor-queue",
        ["--queue", "dataset", "--queue", "plugin, mail", "--threshold", "5", "--cooldown-minutes", "15"],
        {"QUEUE_MONITOR_ALERT_EMAILS": "a@example.com"},
        {
            "queues": ("dataset", "plugin", "mail"),
            "all_queues": False,
            "threshold": 5,
            "cooldown_minutes": 15,
            "alert_emails": "a@example.com",
        },
    ),
    (
        "monitor-queue",
        ["--all-queues", "--alert-emails", "b@example.com"],
        {"QUEUE_MONITOR_THRESHOLD": "50"},
        {"queues": (), "all_queues": True, "threshold": 50, "cooldown_minutes": 60, "alert_emails": "b@example.com"},
    ),
    (
        "archive-workflow-runs",
        [
            "--days",
            "100",
            "--tenant-ids",
            f"{T1},{T1}",
            "--limit",
            "5",
            "--delete-after-archive",
            "--archive-dir",
            "/a",
        ],
        {},
        {
            "window.label": "before-100",
            "tenant_ids": (T1,),
            "limit": 5,
            "delete_after_archive": True,
            "archive_dir": Path("/a"),
            "run.batch_size": 100,
        },
    ),
    (
        "archive-workflow-runs",
        [],
        {
            "PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS": "120",
            "PAID_PLAN_WORKFLOW_RUN_ARCHIVE_BATCH_SIZE": "9",
            "PAID_PLAN_WORKFLOW_RUN_ARCHIVE_TENANT_IDS": T2,
            "DIFYMAINT_ARCHIVE_DIR": "/b",
        },
        {"window.label": "before-120", "run.batch_size": 9, "tenant_ids": (T2,), "archive_dir": Path("/b")},
    ),
    (
        "create-tidb",
        ["--target", "7", "--leak-file", "/l", "--max-failed-requests", "3", "--max-failing-seconds", "2.5"],
        {},
        {"target": 7, "leak_file": Path("/l"), "max_failed_requests": 3, "max_failing_seconds": 2.5},
    ),
    (
        "create-tidb",
        [],
        {"TIDB_SERVERLESS_NUMBER": "40", "DIFYMAINT_TIDB_LEAK_FILE": "/m", "DIFYMAINT_TIDB_MAX_REQUESTS": "4"},
        {"target": 40, "leak_file": Path("/m"), "max_failed_requests": 4, "max_failing_seconds": 30.0},
    ),
    (
        "update-tidb-status",
        ["--stuck-after", "5", "--reap-older-than", "48", "--batch-size", "7", "--leak-file", "/k"],
        TIDB_CONFIG,
        {"stuck_after_hours": 5, "reap_older_than_hours": 48, "run.batch_size": 7, "leak_file": Path("/k")},
    ),
    (
        "update-tidb-status",
        [],
        {**TIDB_CONFIG, "DIFYMAINT_TIDB_MAX_SECONDS": "9"},
        {"stuck_after_hours": 24, "reap_older_than_hours": None, "run.batch_size": 20, "max_failing_seconds": 9.0},
    ),
    (
        "poll-workflow-schedules",
        [],
        {"WORKFLOW_SCHEDULE_POLLER_BATCH_SIZE": "25", "WORKFLOW_SCHEDULE_MAX_DISPATCH_PER_TICK": "400"},
        {"max_dispatch": 400, "run.batch_size": 25},
    ),
    (
        "poll-workflow-schedules",
        ["--max-dispatch", "7", "--batch-size", "3"],
        {"WORKFLOW_SCHEDULE_MAX_DISPATCH_PER_TICK": "400"},
        {"max_dispatch": 7, "run.batch_size": 3},
    ),
    (
        "refresh-trigger-providers",
        [],
        {},
        {"credential_threshold_s": 3600, "subscription_threshold_s": 3600, "run.batch_size": 200},
    ),
    (
        "refresh-trigger-providers",
        ["--credential-threshold", "60", "--batch-size", "9"],
        {
            "TRIGGER_PROVIDER_SUBSCRIPTION_THRESHOLD_SECONDS": "7200",
            "TRIGGER_PROVIDER_CREDENTIAL_THRESHOLD_SECONDS": "5",
        },
        {"credential_threshold_s": 60, "subscription_threshold_s": 7200, "run.batch_size": 9},
    ),
    (
        "restore-workflow-runs",
        ["--run-id", T1, "--run-id", f"{T2},{T1}", "--keep-archive-logs", "--archive-dir", "/r"],
        {},
        {"run_ids": (T1, T2), "window": None, "keep_archive_logs": True, "archive_dir": Path("/r"), "limit": 100},
    ),
    (
        "restore-workflow-runs",
        ["--start-from", "2026-01-01", "--end-before", "2026-02-01", "--limit", "30", "--tenant-ids", T1],
        {},
        {"run_ids": (), "window.label": "custom", "limit": 30, "run.batch_size": 30, "tenant_ids": (T1,)},
    ),
    (
        "check-upgradable-plugins",
        ["--window-start", "2026-12-04T23:45:00Z", "--batch-size", "7"],
        {},
        {"window_start": "2026-12-04T23:45:00Z", "run.batch_size": 7},
    ),
    ("check-upgradable-plugins", [], {}, {"window_start": None, "run.batch_size": 100}),
    (
        "timeout-human-input",
        ["--max", "250", "--orphan-manifest", "/m.jsonl"],
        {"HUMAN_INPUT_GLOBAL_TIMEOUT_SECONDS": "3600"},
        {"max_forms": 250, "global_timeout_s": 3600, "orphan_manifest": Path("/m.jsonl"), "run.batch_size": 100},
    ),
    (
        "timeout-human-input",
        ["--global-timeout", "0", "--batch-size", "10"],
        {"HUMAN_INPUT_GLOBAL_TIMEOUT_SECONDS": "3600"},
        {"max_forms": None, "global_timeout_s": 0, "run.batch_size": 10},
    ),
    (
        "reap-stuck-runs",
        [],
        {},
        {"scheduled_timeout_min": 5, "running_timeout_min": 30, "include_trigger_logs": False, "run.batch_size": 500},
    ),
    (
        "reap-stuck-runs",
        ["--running-timeout", "45", "--include-trigger-logs", "--batch-size", "20"],
        {"ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES": "7", "ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES": "90"},
        {"scheduled_timeout_min": 7, "running_timeout_min": 45, "include_trigger_logs": True, "run.batch_size": 20},
    ),
    (
        "clean-dataset-queries",
        [],
        {},
        {"retention_days": 60, "floor_days": 30, "run.batch_size": 500, "run.sleep_ms": 0, "run.workers": 1},
    ),
    (  # Dify's settings; --days and --batch-size beat them
        "clean-dataset-queries",
        ["--days", "90", "--workers", "2"],
        {
            "CLEAN_DATASET_QUERIES_RETENTION_DAYS": "10",
            "CLEAN_DATASET_QUERIES_BATCH_SIZE": "250",
            "PLAN_SANDBOX_CLEAN_DAY_SETTING": "45",
        },
        {"retention_days": 90, "floor_days": 45, "run.batch_size": 250, "run.workers": 2},
    ),
    (
        "clean-dataset-queries",
        ["--batch-size", "40"],
        {"CLEAN_DATASET_QUERIES_RETENTION_DAYS": "10", "CLEAN_DATASET_QUERIES_BATCH_SIZE": "250"},
        {"retention_days": 10, "floor_days": 30, "effective_days": 30, "clamped": True, "run.batch_size": 40},
    ),
    ("clean-draft-variables", [], {}, {"max_apps": None, "orphan_manifest": None, "run.batch_size": 1000}),
    (
        "clean-draft-variables",
        ["--max-apps", "3", "--batch-size", "200", "--orphan-manifest", "/o.jsonl"],
        {},
        {"max_apps": 3, "orphan_manifest": Path("/o.jsonl"), "run.batch_size": 200},
    ),
    ("flush-api-token-usage", ["--batch-size", "50"], {"REDIS_HOST": "redis"}, {"run.batch_size": 50}),
    ("flush-api-token-usage", [], {"REDIS_HOST": "redis"}, {"run.batch_size": 200}),
]


# The jobs that scan Dify's files check PostgreSQL, the storage and the file tables before dispatch.
FILE_SCAN_CASES: list[tuple[str, list[str], dict[str, str], dict[str, Any]]] = [
    (
        "sweep-files",
        [],
        {},
        {
            "grace_hours": 24,
            "orphan_manifests": (),
            "older_than_days": None,
            "created_by_role": None,
            "restart": False,
            "run.batch_size": 500,
        },
    ),
    (
        "sweep-files",
        [
            "--grace-hours",
            "72",
            "--orphan-manifest",
            "{tmp}/a.jsonl",
            "--orphan-manifest",
            "{tmp}/b.jsonl",
            "--older-than",
            "90",
            "--created-by-role",
            "end_user",
            "--batch-size",
            "50",
        ],
        {},
        {
            "grace_hours": 72,
            "orphan_manifests": ("{tmp}/a.jsonl", "{tmp}/b.jsonl"),
            "older_than_days": 90,
            "created_by_role": "end_user",
            "run.batch_size": 50,
        },
    ),
    ("storage-report", [], {}, {"run.dry_run": True}),
]


@pytest.mark.parametrize(("job", "args", "env", "expected"), FILE_SCAN_CASES, ids=lambda v: str(v)[:20])
def test_file_scan_flags_map_to_params(
    captured: Captured,
    pg_url: str,
    tmp_path: Path,
    job: str,
    args: list[str],
    env: dict[str, str],
    expected: dict[str, Any],
) -> None:
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text("", encoding="utf-8")
    argv = [job, "--dry-run", *(arg.format(tmp=tmp_path) for arg in args)]
    params = params_for(captured, argv, {"OPENDAL_FS_ROOT": str(tmp_path), **env}, database_url=pg_url)
    for dotted, value in expected.items():
        wanted = tuple(str(v).format(tmp=tmp_path) for v in value) if dotted == "orphan_manifests" else value
        assert attr(params, dotted) == wanted, dotted


@pytest.mark.parametrize(("job", "args", "env", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_flags_map_to_params(
    captured: Captured, job: str, args: list[str], env: dict[str, str], expected: dict[str, Any]
) -> None:
    params = params_for(captured, [job, "--dry-run", *args], env)
    assert type(params) is JOBS[job].load().Params
    assert {name: attr(params, name) for name in expected} == expected


@pytest.mark.parametrize(
    "args",
    [
        ["clean-workflow-logs", "--workers", "2"],
        ["clean-messages", "--workers", "9"],
        ["clean-embeddings", "--workers", "0"],
    ],
)
def test_workers_only_where_declared_and_in_range(captured: Captured, args: list[str]) -> None:
    result = CliRunner().invoke(create_app(), [*args, "--dry-run", "--database-url", DB], env={"NO_COLOR": "1"})
    assert result.exit_code == 2 and captured.params == []


def test_every_command_is_covered_by_a_mapping_case() -> None:
    assert {case[0] for case in CASES + FILE_SCAN_CASES} == set(JOBS)


def test_every_deleting_job_asks_before_it_deletes() -> None:
    for info in JOBS.values():
        module = info.load()
        assert hasattr(module, "Params") and hasattr(module, "run"), info.name
        if info.destructive:
            assert callable(getattr(module, "confirmation", None)), info.name


def test_a_real_run_without_yes_is_refused_before_dispatch(captured: Captured) -> None:
    result = CliRunner().invoke(create_app(), ["clean-embeddings", "--database-url", DB], env={"NO_COLOR": "1"})
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert captured.params == []  # refused before the job was dispatched


WIDGETS = JobInfo(
    name="clean-widgets",
    module="tests.widgets_job",
    summary="Delete old widgets (a job that exists only in this test).",
    schedule="30 6 * * *",
    dify_task="clean_widgets_task",
    dify_switch="ENABLE_CLEAN_MESSAGES",
    switches=(Switch("ENABLE_CLEAN_MESSAGES", dify_default=False),),
    lock_key="maintenance:clean_widgets",
    help="Widgets go one batch at a time.",
    window=Window("SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS"),
    options=(TENANT_IDS, Opt("polish", ("--polish",), "Polish the widgets first.", type=bool, kind="flag")),
    batch=Batching(default=10),
)


@pytest.mark.slow
def test_a_new_job_is_one_registry_entry_away(tmp_path: Path) -> None:
    registry = {**JOBS, WIDGETS.name: WIDGETS}
    app = create_app(registry)
    assert "clean-widgets" in render_help([], app)
    widget_help = render_help(["clean-widgets"], app)
    for flag in ("--polish", "--tenant-ids", "--days", "--batch-size", "--dry-run", "--scheduled", "--json"):
        assert flag in widget_help
    assert "### difymaint clean-widgets\n" in render_section(app)
    rendered = deploy.render_all(registry)
    assert "deploy/k8s-cronjobs/clean-widgets.yaml" in rendered
    assert "difymaint clean-widgets --scheduled" in rendered["deploy/crontab/difymaint"]
    # …and it runs end to end through the shared runner (lock and run history on a SQLite file), flags mapped
    # by the shared resolver.
    database = f"sqlite:///{tmp_path / 'widgets.sqlite'}"
    result = CliRunner().invoke(
        app,
        ["clean-widgets", "--polish", "--tenant-ids", T1, "--days", "3", "--json", "--yes", "--database-url", database],
        env={"NO_COLOR": "1"},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tables"] == {"widgets": 3} and summary["details"]["tenant_ids"] == [T1]
    assert summary["window"]["label"] == "before-3"


def test_every_declared_option_reaches_the_job() -> None:
    # An option that is neither a Params field nor a setting would be dropped without a word.
    assert [error for info in JOBS.values() for error in declaration_errors(info)] == []


def test_a_dropped_option_is_caught() -> None:
    stray = JobInfo(
        **{
            **{f.name: getattr(WIDGETS, f.name) for f in dataclasses.fields(JobInfo)},
            "options": (*WIDGETS.options, Opt("sparkle", ("--sparkle",), "Not a widget field.", kind="flag")),
        }
    )
    assert declaration_errors(stray) == [
        "clean-widgets: sparkle is neither a field of WidgetParams nor a setting the job reads"
    ]


def test_registry_tables_are_the_cascades() -> None:
    from difymaint.dify.archive import ARCHIVED_TABLES
    from difymaint.dify.cascades import CONVERSATION_CASCADE_TABLES, MESSAGE_CASCADE, RunCleanup

    runs = RunCleanup(skip_tables=frozenset(), conversations_updated_before=None, collect_orphans=False)
    with_chat = RunCleanup(
        skip_tables=frozenset(), conversations_updated_before=datetime.now(UTC), collect_orphans=False
    )
    assert JOBS["clean-messages"].tables == (*MESSAGE_CASCADE.summary_order(), *CONVERSATION_CASCADE_TABLES)
    assert runs.summary_tables() == list(JOBS["clean-workflow-runs"].tables[: len(runs.summary_tables())])
    assert JOBS["clean-workflow-runs"].tables == JOBS["clean-workflow-logs"].tables == tuple(with_chat.summary_tables())
    assert JOBS["archive-workflow-runs"].tables == (*ARCHIVED_TABLES, "workflow_archive_logs")
    assert JOBS["restore-workflow-runs"].tables == ARCHIVED_TABLES


def test_lock_keys_and_batch_defaults_live_only_in_the_registry() -> None:
    from difymaint.core.settings import Settings

    for info in JOBS.values():
        source = inspect.getsource(info.load())
        assert "LOCK_KEY" not in source and "DEFAULT_BATCH_SIZE" not in source, info.name
        assert "RunOptions(batch_size" not in source and "job_run(" not in source, info.name
        if info.batch is not None and info.batch.setting:  # the setting's default is the registry's
            assert Settings.model_fields[info.batch.setting].default == info.batch.default, info.name
