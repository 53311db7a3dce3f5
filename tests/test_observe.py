"""Dead-man pings and Prometheus metrics: what a monitoring system hears from each way a run ends.

The pings go to a local healthchecks.io-style stub; the Pushgateway is the real one scripts/test starts, and
the textfile is read back with prometheus-client's own parser (what node_exporter accepts).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from difymaint.core.exit_codes import ExitCode
from tests.stubs.healthchecks import PingStub
from tests.test_cli import invoke_assert_code

JOB = "clean-oauth-tokens"
UNREACHABLE_DB = "postgresql+psycopg2://postgres@127.0.0.1:1/nothing"


@pytest.fixture
def pings() -> Iterator[PingStub]:
    with PingStub() as stub:
        yield stub


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found[(sample.name, labels)] = sample.value
    return found


def metric(found: dict[Any, float], name: str, **labels: str) -> float | None:
    for (sample_name, sample_labels), value in found.items():
        if sample_name == f"difymaint_{name}" and all((k, v) in sample_labels for k, v in labels.items()):
            return value
    return None


def test_a_good_run_pings_start_then_success_with_one_run_id(sqlite_url: str, pings: PingStub) -> None:
    invoke_assert_code(
        [JOB, "--yes", "--database-url", sqlite_url, "--ping-url", f"{pings.url}/ping-key/{{job}}"], ExitCode.OK
    )

    assert [p.path for p in pings.pings] == [f"/ping-key/{JOB}/start", f"/ping-key/{JOB}"]
    start, end = pings.pings
    assert start.run_id and start.run_id == end.run_id
    assert json.loads(end.body)["outcome"] == "done"


def test_a_failed_run_pings_fail_with_the_error(pings: PingStub) -> None:
    invoke_assert_code(
        [JOB, "--yes", "--database-url", UNREACHABLE_DB, "--ping-url", f"{pings.url}/check"], ExitCode.FAILED
    )

    assert [p.path for p in pings.pings] == ["/check/start", "/check/fail"]
    assert json.loads(pings.pings[1].body)["outcome"] == "failed"


@pytest.mark.postgres
def test_a_run_skipped_by_the_lock_only_logs(pg_url: str, redis_url: str, pings: PingStub) -> None:
    import redis

    lock = redis.Redis.from_url(redis_url).lock("retention:clean_messages", timeout=60)
    assert lock.acquire(blocking=False)
    try:
        invoke_assert_code(
            ["clean-messages", "--yes", "--database-url", pg_url, "--redis-url", redis_url, "--ping-url", pings.url],
            ExitCode.SKIPPED_LOCKED,
        )
    finally:
        lock.release()

    # Not a success: a lock that stays held shows up as missing successes on the dead-man switch.
    assert [p.path for p in pings.pings] == ["/start", "/log"]


def test_a_ping_outage_never_fails_the_run_nor_shows_the_key(sqlite_url: str, pings: PingStub) -> None:
    pings.fail_status = 503
    secret_url = f"{pings.url}/very-secret-ping-key"
    result = invoke_assert_code([JOB, "--yes", "--database-url", sqlite_url, "--ping-url", secret_url], ExitCode.OK)
    assert "ping" in result.stderr and "HTTP 503" in result.stderr
    assert "very-secret-ping-key" not in result.stderr + result.stdout

    closed = "http://127.0.0.1:1/another-secret-key"
    result = invoke_assert_code([JOB, "--yes", "--database-url", sqlite_url, "--ping-url", closed], ExitCode.OK)
    assert "another-secret-key" not in result.stderr + result.stdout


def test_textfile_keeps_the_last_success_across_a_failure(sqlite_url: str, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "textfile"
    metrics_dir.mkdir()
    invoke_assert_code([JOB, "--yes", "--database-url", sqlite_url, "--metrics-textfile", str(metrics_dir)], 0)
    path = metrics_dir / "difymaint_clean_oauth_tokens.prom"
    first = samples(path.read_text())
    succeeded_at = metric(first, "last_success_timestamp_seconds", job_name=JOB)
    assert succeeded_at is not None and succeeded_at > 0
    assert metric(first, "last_run_outcome", job_name=JOB, outcome="done") == 1
    assert metric(first, "last_run_exit_code", job_name=JOB) == 0

    invoke_assert_code(
        [JOB, "--yes", "--database-url", UNREACHABLE_DB, "--metrics-textfile", str(metrics_dir)], ExitCode.FAILED
    )
    second = samples(path.read_text())
    assert metric(second, "last_run_outcome", job_name=JOB, outcome="failed") == 1
    assert metric(second, "last_run_outcome", job_name=JOB, outcome="done") == 0
    assert metric(second, "last_run_exit_code", job_name=JOB) == ExitCode.FAILED
    assert metric(second, "last_success_timestamp_seconds", job_name=JOB) == succeeded_at
    assert [p.name for p in metrics_dir.iterdir()] == [path.name]  # written atomically, no temp file left


def test_textfile_rows_per_table_on_a_dry_run(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "{job}.prom"
    invoke_assert_code(
        ["clean-embeddings", "--dry-run", "--database-url", sqlite_url, "--metrics-textfile", str(path)], 0
    )
    found = samples((tmp_path / "clean-embeddings.prom").read_text())
    assert metric(found, "last_run_dry_run", job_name="clean-embeddings") == 1
    assert metric(found, "last_run_rows", job_name="clean-embeddings", table="embeddings") == 0


def test_pushgateway_groups_per_job_and_keeps_the_last_success(sqlite_url: str, pushgateway_url: str) -> None:
    invoke_assert_code([JOB, "--yes", "--database-url", sqlite_url, "--pushgateway", pushgateway_url], 0)
    scraped = samples(httpx.get(f"{pushgateway_url}/metrics", timeout=5).text)
    succeeded_at = metric(scraped, "last_success_timestamp_seconds", job_name=JOB)
    assert succeeded_at is not None

    invoke_assert_code(
        [JOB, "--yes", "--database-url", UNREACHABLE_DB, "--pushgateway", pushgateway_url], ExitCode.FAILED
    )
    scraped = samples(httpx.get(f"{pushgateway_url}/metrics", timeout=5).text)
    assert metric(scraped, "last_run_outcome", job="difymaint", job_name=JOB, outcome="failed") == 1
    assert metric(scraped, "last_success_timestamp_seconds", job="difymaint", job_name=JOB) == succeeded_at


def test_pushgateway_down_is_a_warning(sqlite_url: str) -> None:
    result = invoke_assert_code(
        [JOB, "--yes", "--database-url", sqlite_url, "--pushgateway", "http://127.0.0.1:1"], ExitCode.OK
    )
    assert "Pushgateway" in result.stderr


@pytest.mark.slow
def test_sentry_check_ins_and_an_error_event_for_a_failed_run(sqlite_url: str) -> None:
    from difymaint.jobs import JOBS
    from tests.stubs.sentry import SentryStub
    from tests.test_cli import run_cli

    with SentryStub() as sentry:
        failed = run_cli([JOB, "--yes", "--database-url", UNREACHABLE_DB], env={"SENTRY_DSN": sentry.dsn})
        assert failed.returncode == ExitCode.FAILED
        check_ins = sentry.of_type("check_in")
        events = sentry.of_type("event")
    assert [c["status"] for c in check_ins] == ["in_progress", "error"]
    assert {c["monitor_slug"] for c in check_ins} == {f"difymaint-{JOB}"}
    assert check_ins[0]["check_in_id"] == check_ins[1]["check_in_id"]
    assert check_ins[0]["monitor_config"]["schedule"] == {"type": "crontab", "value": JOBS[JOB].schedule}
    (event,) = events
    assert event["level"] == "error" and event["tags"]["job"] == JOB and event["tags"]["outcome"] == "failed"
    message = event["message"]
    text = message["formatted"] if isinstance(message, dict) else message
    assert text.startswith(f"{JOB} failed: cannot connect to the database")


def test_sentry_a_good_run_checks_in_ok_and_sends_no_event(sqlite_url: str) -> None:
    from tests.stubs.sentry import SentryStub
    from tests.test_cli import run_cli

    with SentryStub() as sentry:
        done = run_cli([JOB, "--yes", "--database-url", sqlite_url], env={"SENTRY_DSN": sentry.dsn})
        assert done.returncode == 0, done.stderr
        assert [c["status"] for c in sentry.of_type("check_in")] == ["in_progress", "ok"]
        assert sentry.of_type("event") == []


RFC3339_MS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


@pytest.mark.postgres
def test_json_logs_carry_the_run_and_each_batch(pg_engine: Any, pg_url: str) -> None:
    import re

    from tests.conftest import NOW
    from tests.scenario import seed
    from tests.test_cli import run_cli

    seed(pg_engine, NOW)
    result = run_cli(
        ["clean-messages", "--yes", "--log-format", "json", "--batch-size", "5", "-v", "--database-url", pg_url],
        env={"SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL": "0"},
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and all(re.match(RFC3339_MS, line["ts"]) for line in lines)
    run_ids = {line.get("run_id") for line in lines}
    assert len(run_ids) == 1 and None not in run_ids
    assert all(line["job"] == "clean-messages" for line in lines)
    batches = [line for line in lines if "batch" in line]
    assert batches and {"rows", "rows_total", "ms", "scanned"} <= batches[0].keys()


def test_json_logs_make_the_fatal_error_a_json_line_too() -> None:
    from tests.test_cli import run_cli

    result = run_cli([JOB, "--yes", "--log-format", "json", "--database-url", UNREACHABLE_DB])
    assert result.returncode == ExitCode.FAILED
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line parses
    fatal = lines[-1]
    assert fatal["level"] == "error" and fatal["msg"].startswith("cannot connect to the database")
    assert fatal["hint"] and fatal["job"] == JOB


@pytest.mark.postgres
def test_otel_metrics_keep_difys_names_for_clean_messages(pg_engine: Any, pg_url: str) -> None:
    from tests.conftest import NOW
    from tests.scenario import seed
    from tests.stubs.otlp import OtlpStub
    from tests.test_cli import run_cli

    seed(pg_engine, NOW)
    with OtlpStub(token="otlp-key") as otlp:
        env = {"ENABLE_OTEL": "true", "OTLP_BASE_ENDPOINT": otlp.url, "OTLP_API_KEY": "otlp-key"}
        env["SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL"] = "0"
        result = run_cli(["clean-messages", "--yes", "--json", "--days", "30", "--database-url", pg_url], env=env)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
    assert otlp.resources[0]["service.name"] == "difymaint"
    (runs,) = otlp.named("difymaint_runs_total")
    assert runs.attributes == {"job_name": "clean-messages", "dry_run": False, "status": "done"} and runs.value == 1
    (jobs,) = otlp.named("messages_cleanup_jobs_total")
    assert jobs.attributes["job_name"] == "clean_messages" and jobs.attributes["status"] == "success"
    assert jobs.attributes["task_label"] == "before-30" and jobs.attributes["window_mode"] == "before_cutoff"
    (deleted,) = otlp.named("messages_cleanup_deleted_messages_total")
    assert deleted.value == summary["tables"]["messages"] > 0
    rows = {p.attributes["table"]: p.value for p in otlp.named("difymaint_rows_total")}
    assert rows == {table: float(count) for table, count in summary["tables"].items() if count}


@pytest.mark.slow
def test_otel_endpoint_down_is_a_warning(sqlite_url: str) -> None:
    from tests.test_cli import run_cli

    env = {"ENABLE_OTEL": "true", "OTLP_BASE_ENDPOINT": "http://127.0.0.1:1", "OTLP_API_KEY": "otlp-secret-key"}
    result = run_cli([JOB, "--yes", "--database-url", sqlite_url], env=env)
    assert result.returncode == 0, result.stderr
    assert "otlp-secret-key" not in result.stderr + result.stdout
