"""The CLI contract: one-line errors, exit codes, JSON on stdout, locks and signals across processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from difymaint.cli.app import app
from difymaint.core.exit_codes import ExitCode
from tests.conftest import NOW
from tests.scenario import assert_cascade_consistent, remaining_messages, seed

runner = CliRunner()
CLEAN_ENV = {
    key: value
    for key, value in os.environ.items()
    if not key.startswith(("DB_", "REDIS_", "BILLING_", "MAIL_", "SMTP_", "RESEND_", "CELERY_", "DIFYMAINT_"))
}


def invoke_assert_code(args: list[str], code: int, env: dict[str, str] | None = None) -> Any:
    """Invoke the CLI in-process, assert the exit code, and re-raise an unexpected exception with its traceback."""
    result = runner.invoke(app, args, env={"NO_COLOR": "1", "COLUMNS": "200", **(env or {})})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def run_cli(args: list[str], env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "difymaint", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**CLEAN_ENV, "NO_COLOR": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def test_help_lists_jobs() -> None:
    result = invoke_assert_code(["--help"], 0)
    assert "clean-messages" in result.stdout and "Exit codes" in result.stdout


def test_version() -> None:
    assert "difymaint" in invoke_assert_code(["--version"], 0).stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["clean-messages", "--days", "abc"], "--days"),
        (["clean-messages", "--batch-size", "0"], "--batch-size"),
        (["clean-messages", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_flag_is_one_line_exit_2(args: list[str], needle: str) -> None:
    result = run_cli(args)
    assert result.returncode == ExitCode.USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_window_flags_that_do_not_fit(sqlite_url: str) -> None:
    result = run_cli(["clean-messages", "--database-url", sqlite_url, "--start-from", "2026-01-01", "--dry-run"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("difymaint: error: --start-from needs --end-before")


def test_malformed_env_var_names_it(sqlite_url: str) -> None:
    result = run_cli(
        ["clean-messages", "--dry-run"],
        env={"DIFYMAINT_DATABASE_URL": sqlite_url, "SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS": "thirty"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS" in lines[0] and "thirty" in lines[0]


def test_malformed_env_file_value(sqlite_url: str, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"DIFYMAINT_DATABASE_URL={sqlite_url}\nBILLING_ENABLED=maybe\n")
    result = run_cli(["clean-messages", "--dry-run", "--env-file", str(env_file)])
    assert result.returncode == 2 and "BILLING_ENABLED" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_database_is_one_line() -> None:
    result = run_cli(
        ["clean-messages", "--dry-run"],
        env={"DB_HOST": "127.0.0.1", "DB_PORT": "1", "DB_PASSWORD": "s3cret-pass"},
    )
    assert result.returncode == ExitCode.FAILED
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect to the database" in lines[0]
    assert "s3cret-pass" not in result.stderr and "Traceback" not in result.stderr


def test_non_interactive_delete_needs_yes(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    seed(engine, NOW)
    before = remaining_messages(engine)
    result = run_cli(["clean-messages", "--database-url", sqlite_url])
    assert result.returncode == 2 and "--yes" in result.stderr
    assert remaining_messages(engine) == before


def test_json_summary_on_stdout(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    seed(engine, NOW)
    result = run_cli(["clean-messages", "--database-url", sqlite_url, "--yes", "--json", "--days", "30"])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert summary["job"] == "clean-messages" and summary["outcome"] == "done" and summary["exit_code"] == 0
    assert summary["tables"]["messages"] > 0 and summary["rows_remaining"] == 0
    assert {"window", "batches", "duration_s", "rows_total", "dry_run"} <= summary.keys()
    assert "BILLING_ENABLED is false" in result.stderr  # said loudly before deleting


def test_json_summary_for_a_failure(sqlite_url: str) -> None:
    result = run_cli(["clean-messages", "--dry-run", "--json"], env={"DB_HOST": "127.0.0.1", "DB_PORT": "1"})
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "failed" and "cannot connect" in summary["error"]


@pytest.mark.postgres
def test_two_concurrent_runs_one_skips(pg_engine: Any, pg_url: str, redis_url: str) -> None:
    seed(pg_engine, NOW, per_tenant=40)
    import redis

    env = {
        "DIFYMAINT_DATABASE_URL": pg_url,
        "DIFYMAINT_REDIS_URL": redis_url,
        "DIFYMAINT_TARGET_BATCH_MS": "0",
    }
    args = ["clean-messages", "--yes", "--json", "--batch-size", "5", "--sleep-ms", "300"]
    first = subprocess.Popen(
        [sys.executable, "-m", "difymaint", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**CLEAN_ENV, **env},
    )
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 30
    while client.get("retention:clean_messages") is None and time.monotonic() < deadline:
        time.sleep(0.02)
    second = run_cli(args, env=env)
    out, _ = first.communicate(timeout=120)
    assert second.returncode == ExitCode.SKIPPED_LOCKED, second.stderr
    assert json.loads(second.stdout)["outcome"] == "skipped_locked"
    assert first.returncode == 0 and json.loads(out)["outcome"] == "done"
    third = run_cli([*args, "--fail-if-locked"], env=env)  # nothing holds it now
    assert third.returncode == 0


@pytest.mark.postgres
def test_fail_if_locked(pg_engine: Any, pg_url: str, redis_url: str) -> None:
    import redis

    seed(pg_engine, NOW)
    lock = redis.Redis.from_url(redis_url).lock("retention:clean_messages", timeout=60)
    assert lock.acquire(blocking=False)
    env = {"DIFYMAINT_DATABASE_URL": pg_url, "DIFYMAINT_REDIS_URL": redis_url}
    assert run_cli(["clean-messages", "--yes"], env=env).returncode == ExitCode.SKIPPED_LOCKED
    assert run_cli(["clean-messages", "--yes", "--fail-if-locked"], env=env).returncode == ExitCode.FAILED
    lock.release()


@pytest.mark.postgres
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_run_leaves_no_half_deleted_cascade(pg_engine: Any, pg_url: str, signum: int, code: int) -> None:
    scenario = seed(pg_engine, NOW, per_tenant=60)
    before = remaining_messages(pg_engine)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "difymaint",
            "clean-messages",
            "--yes",
            "--json",
            "--batch-size",
            "10",
            "--sleep-ms",
            "400",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**CLEAN_ENV, "DIFYMAINT_DATABASE_URL": pg_url, "DIFYMAINT_TARGET_BATCH_MS": "0"},
    )
    deadline = time.monotonic() + 60
    while remaining_messages(pg_engine) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    summary = json.loads(out)
    assert summary["outcome"] == "interrupted" and summary["stop_reason"].startswith("signal")
    after = remaining_messages(pg_engine)
    deleted = before - after
    assert 0 < len(deleted) < len(scenario.all_old())
    assert deleted <= scenario.all_old()
    assert summary["tables"]["messages"] == len(deleted)
    assert_cascade_consistent(pg_engine)


def test_python_dash_m_works() -> None:
    result = run_cli(["--help"])
    assert result.returncode == 0 and "clean-messages" in result.stdout


@pytest.mark.slow
def test_demo_runs_on_a_fresh_directory(tmp_path: Path) -> None:
    result = run_cli(["demo", "--path", str(tmp_path / "demo.sqlite")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "predicted every table's count exactly" in result.stderr
    # The console part: the jobs ran through `run`, then status and history show them.
    assert "$ difymaint run clean-messages clean-embeddings clean-oauth-tokens" in result.stderr
    assert "$ difymaint status" in result.stderr and "$ difymaint history" in result.stderr
    assert "clean-messages (dry run)" in result.stdout and "last success" in result.stdout
    # one tick of Dify's dispatchers, recorded like the rest
    assert "$ difymaint run poll-workflow-schedules refresh-trigger-providers" in result.stderr
    history = result.stdout[result.stdout.rindex("run id") :]
    assert "poll-workflow-schedules" in history and "timeout-human-input" in history
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'demo.sqlite'}")
    assert remaining_messages(engine)  # paid / whitelisted / in-grace workspaces keep their history
    assert_cascade_consistent(engine)


def test_bare_command_prints_help_and_succeeds() -> None:
    result = run_cli([])
    assert result.returncode == 0 and result.stdout.startswith("Usage: ") and "clean-messages" in result.stdout
    assert result.stderr == ""


def test_mistyped_command_suggests_the_right_one() -> None:
    result = run_cli(["clean-mesages"])
    assert result.returncode == 2 and "clean-messages" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("url", ["sqlite", "mysql+pymysql://dify@127.0.0.1:1/dify"])
def test_max_replica_lag_is_refused_off_postgresql(sqlite_url: str, url: str) -> None:
    """The lag is read from PostgreSQL's streaming replication: elsewhere the flag is one line and exit 2, before
    any connection (the MySQL URL points at a closed port), never a purge that runs unpaced."""
    database = sqlite_url if url == "sqlite" else url
    result = run_cli(["clean-messages", "--yes", "--database-url", database, "--max-replica-lag", "5"])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-replica-lag needs PostgreSQL" in lines[0], lines
    # A dry run waits for nothing: the flag is harmless there.
    if url == "sqlite":
        dry = run_cli(["clean-messages", "--dry-run", "--database-url", database, "--max-replica-lag", "5"])
        assert dry.returncode == 0, dry.stderr
