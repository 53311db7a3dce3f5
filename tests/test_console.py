"""The operator's console on the real PostgreSQL and Redis: run history, status --check, locks release,
pause/resume, run chains and run-due (with child processes and a fixed clock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from difymaint.cli.app import create_app
from difymaint.cli.runner import Environment, use_environment
from difymaint.core.locking import PostgresAdvisoryLock, RedisJobLock, database_lock
from difymaint.core.settings import load_settings
from difymaint.ops.console import worst
from difymaint.ops.history import HistoryStore, RunRecord, redact
from difymaint.ops.schedule import is_due, is_overdue, job_schedule, previous_fire, schedule_zone
from tests.conftest import is_mysql_url, login_role
from tests.console_jobs import TEST_JOBS

APP = create_app(TEST_JOBS)
ENV = {"NO_COLOR": "1", "DIFYMAINT_USE_REDIS": "false", "COLUMNS": "200"}


@pytest.fixture(autouse=True)
def _no_tty() -> Iterator[None]:
    with use_environment(Environment(stdin_isatty=False)):
        yield


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(APP, list(args), env={**ENV, **(env or {})})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def child(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.console_jobs", *args],
        env={**os.environ, **ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def records(url: str, job: str | None = None) -> list[RunRecord]:
    engine = sa.create_engine(url)
    try:
        return HistoryStore(engine).recent(job=job, limit=None)
    finally:
        engine.dispose()


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


# --- history ------------------------------------------------------------------------------------------------


def test_history_records_done_failed_partial_and_locked_runs(db_url: str) -> None:
    done = cli("quick-job", "--database-url", db_url, "--yes", "--json")
    assert done.exit_code == 0, done.output
    failed = cli("quick-job", "--database-url", db_url, "--yes", "--fail-after", "1")
    assert failed.exit_code == 1
    partial = cli("quick-job", "--database-url", db_url, "--yes", "--max-batches", "1", "--dry-run")
    assert partial.exit_code == 4
    engine = sa.create_engine(db_url)
    holder = database_lock(engine, "maintenance:quick-job")
    assert holder is not None and holder.acquire()
    try:
        locked = cli("quick-job", "--database-url", db_url, "--yes")
    finally:
        holder.release()
        engine.dispose()
    assert locked.exit_code == 5

    runs = {r.outcome: r for r in records(db_url, "quick-job")}
    assert set(runs) == {"done", "failed", "partial", "skipped_locked"}
    assert (runs["done"].exit_code, runs["done"].rows_total, runs["done"].batches) == (0, 30, 3)
    assert runs["done"].tables == {"ticks": 30} and runs["done"].ended_at is not None
    lock_kind = "MySQL named lock" if is_mysql_url(db_url) else "PostgreSQL advisory lock"
    assert any(f"holding {lock_kind}" in line for line in runs["done"].log_lines)
    assert runs["failed"].error == "RuntimeError: tick machine jammed" and runs["failed"].rows_total == 10
    assert runs["failed"].log_lines[-1] == "ERROR RuntimeError: tick machine jammed"
    assert runs["partial"].dry_run and runs["partial"].stop_reason == "max-batches"
    assert runs["partial"].rows_remaining == 20 and runs["partial"].exit_code == 4
    assert runs["skipped_locked"].exit_code == 5 and runs["skipped_locked"].batches == 0
    # Its own schema, never Dify's public one (MySQL: its own prefixed tables in Dify's database).
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        schemas = set(
            conn.execute(
                sa.text("SELECT table_schema FROM information_schema.tables WHERE table_name = :name"),
                {"name": "difymaint_job_runs" if is_mysql_url(db_url) else "job_runs"},
            ).scalars()
        )
    engine.dispose()
    assert schemas == ({engine.url.database} if is_mysql_url(db_url) else {"difymaint"})

    listed = cli("history", "quick-job", "--database-url", db_url, "--json")
    assert [r["outcome"] for r in json.loads(listed.stdout)][::-1] == ["done", "failed", "partial", "skipped_locked"]
    shown = cli("history", "show", runs["failed"].run_id[:8], "--database-url", db_url)
    assert shown.exit_code == 0 and "tick machine jammed" in shown.stdout and "log:" in shown.stdout
    missing = cli("history", "show", "nope-nope", "--database-url", db_url)
    assert missing.exit_code == 1 and "no recorded run" in missing.stderr


def test_history_of_an_interrupted_run_and_redacted_arguments(pg_url: str) -> None:
    proc = child(
        "long-job",
        "--database-url",
        pg_url,
        "--yes",
        "--redis-url",
        "redis://:hunter2@127.0.0.1:1/0",
        env={"DIFYMAINT_USE_REDIS": "false"},
    )
    wait_for(lambda: any(r.batches >= 1 for r in records(pg_url, "long-job")))
    running = records(pg_url, "long-job")[0]
    assert running.outcome == "running" and running.heartbeat_at is not None and running.rate
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    record = records(pg_url, "long-job")[0]
    assert record.outcome == "interrupted" and record.exit_code == 143 and record.stop_reason == "signal SIGTERM"
    assert "hunter2" not in json.dumps(record.args) and record.args["redis_url"] == "redis://:***@127.0.0.1:1/0"
    assert redact({"TIDB_PRIVATE_KEY": "x", "url": "postgresql://u:p@h/db"}) == {
        "TIDB_PRIVATE_KEY": "***",
        "url": "postgresql://u:***@h/db",
    }


def test_history_unavailable_warns_and_the_job_still_succeeds(pg_url: str, pg_admin_url: str) -> None:
    grants = ('REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC, {role}', "GRANT USAGE ON SCHEMA public TO {role}")
    with login_role(pg_url, "nocreate", *grants) as role:
        result = cli("quick-job", "--database-url", role.url, "--yes", "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["outcome"] == "done"
        assert any(w.startswith("run history unavailable (start)") for w in summary["warnings"]), summary
        assert "run history unavailable" in result.stderr
        with role.admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = 'difymaint'")).first()
        assert exists is None


def test_history_off_records_nothing_and_prune_trims(pg_url: str) -> None:
    assert cli("quick-job", "--database-url", pg_url, "--yes", env={"DIFYMAINT_HISTORY": "off"}).exit_code == 0
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = 'difymaint'")).first() is None
    store = HistoryStore(engine)
    old = store.start(job="quick-job", args={}, dry_run=False, started_at=datetime.now(UTC) - timedelta(days=40))
    store.update(old, outcome="done", exit_code=0)
    store.start(job="quick-job", args={}, dry_run=False, started_at=datetime.now(UTC) - timedelta(days=40))  # running
    engine.dispose()
    assert cli("history", "prune", "--older-than", "30", "--database-url", pg_url).exit_code == 2  # needs --yes
    pruned = cli("history", "prune", "--older-than", "30", "--yes", "--database-url", pg_url, "--json")
    assert json.loads(pruned.stdout)["pruned"] == 1
    assert [r.outcome for r in records(pg_url)] == ["running"]


# --- status -------------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 24, 12, 30, tzinfo=UTC)  # the test jobs fire daily at 12:00


def seed(url: str, job: str, started: datetime, outcome: str = "done", rows: int = 0) -> str:
    engine = sa.create_engine(url)
    store = HistoryStore(engine)
    run_id = store.start(job=job, args={}, dry_run=False, started_at=started)
    store.update(run_id, outcome=outcome, exit_code=0 if outcome == "done" else 1, ended_at=started, rows_total=rows)
    engine.dispose()
    return run_id


def status(url: str, *extra: str) -> Any:
    return cli("status", "--database-url", url, "--now", NOW.isoformat(), *extra)


def test_status_check_exits_3_for_an_overdue_or_failed_job(pg_url: str) -> None:
    for job in TEST_JOBS:
        seed(pg_url, job, NOW - timedelta(minutes=29), rows=5)
    ok = status(pg_url, "--check", "--json")
    assert ok.exit_code == 0, ok.output
    rows = {row["job"]: row for row in json.loads(ok.stdout)["jobs"]}
    assert rows["quick-job"]["rows_7d"] == 5 and not rows["quick-job"]["overdue"]
    assert rows["off-job"]["enabled"] is False

    seed(pg_url, "slow-job", NOW - timedelta(minutes=10), outcome="failed")
    failed = status(pg_url, "--check")
    assert failed.exit_code == 3 and "slow-job: last run failed" in failed.stderr
    seed(pg_url, "slow-job", NOW - timedelta(minutes=5))

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # quick-job's last success is now 2 days old: a whole day's slot was missed
        conn.execute(
            sa.text("UPDATE difymaint.job_runs SET started_at = started_at - interval '2 days' WHERE job = 'quick-job'")
        )
    engine.dispose()
    overdue = status(pg_url, "--check")
    assert overdue.exit_code == 3 and "quick-job: overdue" in overdue.stderr
    assert "(overdue)" in overdue.stdout
    # A paused job is deliberate, and a disabled one is not scheduled: neither alerts.
    assert cli("pause", "quick-job", "--reason", "migration", "--database-url", pg_url).exit_code == 0
    assert status(pg_url, "--check").exit_code == 0
    assert status(pg_url).exit_code == 0  # without --check status only reports


def test_schedules_due_and_overdue() -> None:
    overridden = load_settings(overrides={"DIFYMAINT_SCHEDULE_QUICK_JOB": "*/5 * * * *"})
    assert job_schedule(TEST_JOBS["quick-job"], overridden).cron == "*/5 * * * *"
    assert job_schedule(TEST_JOBS["quick-job"], load_settings()).cron == "0 12 * * *"
    assert is_due("0 12 * * *", NOW - timedelta(days=3), NOW, first_seen=NOW)  # three missed slots: due once
    assert not is_due("0 12 * * *", NOW - timedelta(minutes=20), NOW, first_seen=NOW)
    assert not is_due("0 12 * * *", None, NOW, first_seen=NOW - timedelta(minutes=1))  # never ran, slot before
    assert is_overdue("0 12 * * *", NOW - timedelta(days=1, minutes=31), NOW)
    assert not is_overdue("0 12 * * *", NOW - timedelta(hours=23), NOW)
    # In Dify's beat zone (LOG_TZ): 04:00 in Shanghai is 20:00 UTC the day before.
    shanghai = schedule_zone({"LOG_TZ": "Asia/Shanghai"})
    assert previous_fire("0 4 * * *", NOW, shanghai) == datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    assert schedule_zone({}) is UTC
    assert worst([0, 5, 4]) == 4 and worst([4, 1, 143]) == 1 and worst([]) == 0


# --- locks --------------------------------------------------------------------------------------------------


def test_locks_release_refuses_a_renewing_holder(pg_url: str, redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    lock = RedisJobLock(client, "maintenance:quick-job", ttl_s=30)
    assert lock.acquire()
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(0.2):
            lock.renew()

    renewer = threading.Thread(target=renew)
    renewer.start()
    args = ("--database-url", pg_url, "--redis-url", redis_url)
    try:
        listed = cli("locks", *args, "--json", env={"DIFYMAINT_USE_REDIS": "true"})
        assert listed.exit_code == 0, listed.output
        (entry,) = json.loads(listed.stdout)
        assert entry["name"] == "maintenance:quick-job" and entry["backend"] == "redis" and 0 < entry["ttl_s"] <= 30
        refused = cli(
            "locks",
            "release",
            "maintenance:quick-job",
            *args,
            "--yes",
            "--observe",
            "1.5",
            env={"DIFYMAINT_USE_REDIS": "true"},
        )
        assert refused.exit_code == 1 and "still renewing" in refused.stderr
        assert client.exists("maintenance:quick-job")
    finally:
        stop.set()
        renewer.join()
    # The holder stopped renewing (a stuck run): the lease only runs down, so the release goes ahead.
    released = cli(
        "locks",
        "release",
        "maintenance:quick-job",
        *args,
        "--yes",
        "--observe",
        "1.5",
        env={"DIFYMAINT_USE_REDIS": "true"},
    )
    assert released.exit_code == 0, released.output
    assert not client.exists("maintenance:quick-job")
    client.close()


def test_locks_lists_and_force_releases_a_database_lock(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    holder = database_lock(engine, "maintenance:slow-job")
    assert holder is not None and holder.acquire()
    try:
        listed = cli("locks", "--database-url", db_url, "--json")
        (entry,) = json.loads(listed.stdout)
        assert entry["backend"] == engine.dialect.name.replace("postgresql", "postgres")
        assert entry["name"] == "maintenance:slow-job"
        assert (
            cli("locks", "release", "maintenance:slow-job", "--database-url", db_url, "--observe", "0").exit_code == 2
        )
        forced = cli("locks", "release", "maintenance:slow-job", "--database-url", db_url, "--yes", "--force")
        assert forced.exit_code == 0, forced.output
        assert json.loads(cli("locks", "--database-url", db_url, "--json").stdout) == []
    finally:
        with pytest.raises(Exception):  # noqa: B017 - the holder's session was terminated
            holder.renew()
        engine.dispose()


# --- pause / resume -----------------------------------------------------------------------------------------


def test_a_pause_stops_a_running_job_between_batches_and_skips_new_runs(db_url: str) -> None:
    proc = child("long-job", "--database-url", db_url, "--yes")
    wait_for(lambda: any(r.batches >= 1 for r in records(db_url, "long-job")))
    assert cli("pause", "long-job", "--reason", "incident 42", "--database-url", db_url).exit_code == 0
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 4, err
    record = records(db_url, "long-job")[0]
    assert record.outcome == "partial" and record.stop_reason == "paused" and 1 <= record.batches < 40
    assert "was paused (incident 42)" in err

    skipped = cli("long-job", "--database-url", db_url, "--yes", "--json")
    assert skipped.exit_code == 0 and json.loads(skipped.stdout)["outcome"] == "paused"
    assert records(db_url, "long-job")[0].outcome == "paused"
    assert cli("resume", "long-job", "--database-url", db_url).exit_code == 0
    assert cli("long-job", "--database-url", db_url, "--yes", "--batches", "1").exit_code == 0
    assert cli("pause", "no-such-job", "--database-url", db_url).exit_code == 2


# --- run / run-due ------------------------------------------------------------------------------------------


def test_run_chain_exit_codes_with_and_without_keep_going(pg_url: str) -> None:
    ok = cli("run", "quick-job", "notdue-job", "--database-url", pg_url, "--yes")
    assert ok.exit_code == 0, ok.output
    assert len(records(pg_url)) == 2

    engine = sa.create_engine(pg_url)
    holder = PostgresAdvisoryLock(engine, "maintenance:quick-job")
    assert holder.acquire()
    try:
        stopped = cli("run", "quick-job", "notdue-job", "--database-url", pg_url, "--yes")
        assert stopped.exit_code == 5 and "not run: notdue-job" in stopped.stderr
        assert len(records(pg_url)) == 3
        kept = cli("run", "quick-job", "notdue-job", "--keep-going", "--database-url", pg_url, "--yes")
        assert kept.exit_code == 5
        assert [r.job for r in records(pg_url)][:2] == ["notdue-job", "quick-job"]
    finally:
        holder.release()
        engine.dispose()
    assert cli("run", "quick-job", "nope", "--database-url", pg_url).exit_code == 2


def test_run_due_runs_exactly_the_due_jobs_once_concurrently(pg_url: str) -> None:
    now = datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)
    for job in ("quick-job", "slow-job", "off-job", "paused-job"):
        seed(pg_url, job, now - timedelta(days=3))  # several missed slots
    seed(pg_url, "notdue-job", now - timedelta(seconds=10))  # already ran for this slot
    ancient = seed(pg_url, "quick-job", now - timedelta(days=45))  # older than DIFYMAINT_HISTORY_KEEP_DAYS (30)
    assert cli("pause", "paused-job", "--database-url", pg_url).exit_code == 0
    jobs = {"quick-job", "slow-job", "off-job", "paused-job", "notdue-job"}
    env = {"DIFYMAINT_SCHEDULE_LONG_JOB": "0 0 1 1 *"}  # not due today

    listed = cli("run-due", "--list", "--now", now.isoformat(), "--database-url", pg_url, "--json", env=env)
    plan = {d["job"]: (d["action"], d["reason"]) for d in json.loads(listed.stdout)["run_due"]}
    assert plan["quick-job"][0] == plan["slow-job"][0] == "run"
    assert plan["off-job"] == ("skip", "disabled: ENABLE_CLEAN_MESSAGES is unset, and Dify's default is off")
    assert plan["paused-job"] == ("skip", "paused") and set(plan) == jobs - {"notdue-job"}

    before = {r.run_id for r in records(pg_url)} - {ancient}
    result = cli(
        "run-due", "--now", now.isoformat(), "--database-url", pg_url, "--child-module", "tests.console_jobs", env=env
    )
    assert result.exit_code == 0, result.output
    new = [r for r in records(pg_url) if r.run_id not in before and r.job != "run-due"]
    assert sorted(r.job for r in new) == ["quick-job", "slow-job"]
    quick, slow = (next(r for r in new if r.job == name) for name in ("quick-job", "slow-job"))
    assert quick.outcome == slow.outcome == "done" and quick.args["scheduled"] is True
    # Concurrent children: the quick job finished while the slow one (4 × 1 s) was still on its batches.
    assert quick.ended_at is not None and slow.ended_at is not None
    assert quick.ended_at < slow.started_at + timedelta(seconds=2) < slow.ended_at
    assert ancient not in {r.run_id for r in records(pg_url)}  # the tick pruned it
    assert records(pg_url, "run-due")[0].log_lines[-1] == "pruned 1 run records older than 30 days"

    again = cli(
        "run-due", "--now", now.isoformat(), "--database-url", pg_url, "--child-module", "tests.console_jobs", env=env
    )
    assert again.exit_code == 0 and ": run (" not in again.stderr  # the skipped ones are reported again, not run
    assert len([r for r in records(pg_url) if r.job not in ("run-due",)]) == len(before) + 2


def test_run_due_and_status_read_schedules_through_difys_intervals(pg_url: str) -> None:
    """One function decides a job's cron line for run-due and status alike: Dify's interval settings, its
    CELERY_BEAT_SCHEDULER_TIME days, DIFYMAINT_SCHEDULE_<JOB>; an interval cron cannot express is refused for that
    job alone (the tick exits 2, the other jobs still run)."""
    from dataclasses import replace

    from difymaint.ops.console import job_status, plan_due

    quick = TEST_JOBS["quick-job"]
    jobs = {
        "monitor-like": replace(
            quick, name="monitor-like", schedule="*/30 * * * *", interval_setting="QUEUE_MONITOR_INTERVAL"
        ),
        "retention-like": replace(
            quick, name="retention-like", schedule="0 4 * * *", every_days_setting="CELERY_BEAT_SCHEDULER_TIME"
        ),
        "poller-like": replace(
            quick, name="poller-like", schedule="* * * * *", interval_setting="WORKFLOW_SCHEDULE_POLLER_INTERVAL"
        ),
        "overridden": replace(quick, name="overridden"),
    }
    now = datetime(2026, 11, 24, 12, 10, 30, tzinfo=UTC)  # 12:10 is a */10 slot, not a */30 one
    for name in jobs:
        seed(pg_url, name, datetime(2026, 11, 24, 12, 0, 5, tzinfo=UTC))
    settings = load_settings(
        overrides={
            "QUEUE_MONITOR_INTERVAL": "10",
            "CELERY_BEAT_SCHEDULER_TIME": "3",
            "WORKFLOW_SCHEDULE_POLLER_INTERVAL": "7",  # no cron line runs every 7 minutes
            "DIFYMAINT_SCHEDULE_OVERRIDDEN": "10 12 * * *",
        }
    )
    engine = sa.create_engine(pg_url)
    try:
        store = HistoryStore(engine)
        plan = {d.job: d for d in plan_due(store, jobs, settings, now)}
        rows = {row.job: row for row in job_status(store, jobs, settings, now)}
    finally:
        engine.dispose()
    assert plan["monitor-like"].action == "run" and plan["monitor-like"].reason == "schedule */10 * * * * fired"
    assert plan["overridden"].action == "run" and "10 12 * * *" in plan["overridden"].reason
    refused = plan["poller-like"]
    assert (
        refused.action == "skip" and refused.exit_code == 2 and "WORKFLOW_SCHEDULE_POLLER_INTERVAL=7" in refused.reason
    )
    assert worst([d.exit_code for d in plan.values() if d.exit_code is not None]) == 2
    assert "retention-like" not in plan  # 04:00 on days 1, 4, 7, ...: not due at noon
    assert rows["monitor-like"].schedule == "*/10 * * * *"
    assert rows["monitor-like"].next_run == datetime(2026, 11, 24, 12, 20, tzinfo=UTC)
    assert rows["retention-like"].schedule == "0 4 */3 * *"
    assert rows["retention-like"].next_run == datetime(2026, 11, 25, 4, 0, tzinfo=UTC)  # 25 = 1 + 8 × 3
    assert rows["overridden"].schedule == "10 12 * * *"
    assert rows["poller-like"].schedule is None and "WORKFLOW_SCHEDULE_POLLER_INTERVAL" in (
        rows["poller-like"].problem or ""
    )
    # Dify's defaults when nothing is set (QUEUE_MONITOR_INTERVAL=0 means 30 in Dify too).
    default = load_settings(overrides={"QUEUE_MONITOR_INTERVAL": "0"})
    assert job_schedule(jobs["monitor-like"], default).cron == "*/30 * * * *"
    assert job_schedule(jobs["retention-like"], default).cron == "0 4 * * *"


def test_run_parallel_runs_each_job_as_its_own_child_and_exits_with_the_worst(pg_url: str) -> None:
    """The every-minute CronJob's command: every job at once, each with its own lock, switch and record."""
    args = ("--database-url", pg_url, "--yes", "--child-module", "tests.console_jobs")
    ok = cli("run", "--parallel", "slow-job", "quick-job", *args)
    assert ok.exit_code == 0, ok.output
    assert "slow-job: exit 0" in ok.stderr and "quick-job: exit 0" in ok.stderr
    quick, slow = (records(pg_url, name)[0] for name in ("quick-job", "slow-job"))
    assert quick.outcome == slow.outcome == "done"
    assert quick.ended_at is not None and slow.ended_at is not None
    assert quick.ended_at < slow.started_at + timedelta(seconds=2) < slow.ended_at  # side by side, not in turn

    engine = sa.create_engine(pg_url)
    holder = PostgresAdvisoryLock(engine, "maintenance:quick-job")
    assert holder.acquire()
    try:  # a real process: the children write their JSON summaries to its stdout
        proc = child("run", "--parallel", "quick-job", "off-job", "--scheduled", "--json", *args)
        out, err = proc.communicate(timeout=60)
        ok_locked = cli("run", "--parallel", "quick-job", *args, env={"DIFYMAINT_ON_LOCKED": "ok"})
    finally:
        holder.release()
        engine.dispose()
    assert proc.returncode == 5, err  # the worst of 5 (lock held) and 0 (disabled)
    summaries = {line["job"]: line for line in map(json.loads, out.splitlines())}
    assert summaries["quick-job"]["outcome"] == "skipped_locked" and summaries["off-job"]["outcome"] == "disabled"
    assert ok_locked.exit_code == 0
    assert cli("run", "--parallel", "quick-job", "nope", *args).exit_code == 2


# --- catalogue and confirmation -----------------------------------------------------------------------------


def test_catalogue_lists_jobs_and_one_jobs_parameters() -> None:
    listed = cli("jobs", "--json")
    assert [job["name"] for job in json.loads(listed.stdout)] == list(TEST_JOBS)
    real = CliRunner().invoke(create_app(), ["jobs", "show", "clean-messages", "--json"], env=ENV)
    shown = json.loads(real.stdout)
    params = {p["name"]: p for p in shown["parameters"]}
    assert params["days"]["setting"] == "SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS" and params["days"]["type"] == "int"
    assert params["batch_size"]["setting"] == "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE"
    assert params["scan_strategy"]["type"] == "auto|global|eligible-apps"
    assert shown["lock"] == "retention:clean_messages" and shown["dify_switch"] == "ENABLE_CLEAN_MESSAGES"
    assert {c["code"] for c in shown["exit_codes"]} >= {0, 1, 2, 4, 5, 130, 143}
    human = CliRunner().invoke(create_app(), ["jobs", "show", "clean-messages"], env=ENV)
    assert "SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS" in human.stdout and "exit codes" in human.stdout
    assert cli("jobs", "show", "nope").exit_code == 2


def test_a_run_declined_at_the_confirmation_closes_its_record(pg_url: str) -> None:
    with use_environment(Environment(stdin_isatty=True)):
        result = CliRunner().invoke(APP, ["quick-job", "--database-url", pg_url], input="n\n", env=ENV)
    assert result.exit_code == 1
    (record,) = records(pg_url, "quick-job")
    assert record.outcome == "failed" and record.error == "aborted before it started" and record.batches == 0


def test_status_watch_refreshes_until_interrupted(pg_url: str) -> None:
    seed(pg_url, "quick-job", NOW - timedelta(minutes=5))
    proc = child("status", "--watch", "--interval", "1", "--database-url", pg_url, "--json")
    time.sleep(3.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    frames = [json.loads(line) for line in out.splitlines()]
    assert len(frames) >= 2 and all(frame["jobs"][0]["job"] == "quick-job" for frame in frames)


def test_run_due_passes_sigterm_on_to_its_children(pg_url: str) -> None:
    now = datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)
    seed(pg_url, "long-job", now - timedelta(days=1))
    seed(pg_url, "run-due", now - timedelta(seconds=10))  # a tick after the slot: jobs that never ran are not due
    proc = child("run-due", "--now", now.isoformat(), "--database-url", pg_url, "--child-module", "tests.console_jobs")
    wait_for(lambda: any(r.outcome == "running" and r.batches >= 1 for r in records(pg_url, "long-job")))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    record = records(pg_url, "long-job")[0]
    assert record.outcome == "interrupted" and record.stop_reason == "signal SIGTERM" and record.batches < 40
    tick = records(pg_url, "run-due")[0]
    assert tick.exit_code == 143 and tick.log_lines == ["long-job: run (schedule 0 12 * * * fired) exit 143"]


def test_the_history_record_carries_the_run_id_of_the_log_lines(pg_url: str) -> None:
    result = cli("quick-job", "--database-url", pg_url, "--yes", "--log-format", "json")
    assert result.exit_code == 0, result.output
    ids = {json.loads(line).get("run_id") for line in result.stderr.splitlines() if line.startswith("{")}
    (record,) = records(pg_url, "quick-job")
    assert ids == {record.run_id}


def test_run_due_dry_run_runs_the_due_jobs_dry_and_leaves_them_due(pg_url: str) -> None:
    now = datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)
    seed(pg_url, "quick-job", now - timedelta(days=3))
    env = {"DIFYMAINT_SCHEDULE_LONG_JOB": "0 0 1 1 *", "DIFYMAINT_SCHEDULE_SLOW_JOB": "0 0 1 1 *"}
    before = {r.run_id for r in records(pg_url)}
    args = ["--now", now.isoformat(), "--database-url", pg_url, "--json"]
    result = cli("run-due", "--dry-run", *args, "--child-module", "tests.console_jobs", env=env)
    assert result.exit_code == 0, result.output
    new = [r for r in records(pg_url) if r.run_id not in before]
    assert [(r.job, r.dry_run, r.outcome) for r in new if r.job == "quick-job"] == [("quick-job", True, "done")]
    assert all(r.job != "run-due" for r in new)  # no tick recorded: the real run-due still runs the jobs
    listed = cli("run-due", "--list", *args, env=env)
    assert ("quick-job", "run") in {(d["job"], d["action"]) for d in json.loads(listed.stdout)["run_due"]}
