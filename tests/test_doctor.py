"""`difymaint doctor` on the real PostgreSQL and Redis: what it finds, what it fixes, and its exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.exit_codes import ExitCode
from tests.conftest import is_mysql_url, login_role
from tests.stubs.smtp import SmtpStub
from tests.test_cli import invoke_assert_code

pytestmark = pytest.mark.postgres


def doctor(args: list[str], code: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = invoke_assert_code(["doctor", "--json", *args], code, env=env)
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def by_area(payload: dict[str, Any], area: str) -> list[dict[str, Any]]:
    return [check for check in payload["checks"] if check["area"] == area]


def test_a_healthy_installation(db_url: str, redis_url: str) -> None:
    payload = doctor(
        ["--database-url", db_url, "--redis-url", redis_url], ExitCode.OK, env={"REDIS_KEY_PREFIX": "dify"}
    )
    assert payload["ok"] is True
    assert by_area(payload, "database")[0]["status"] == "ok"
    assert ("MariaDB" if is_mysql_url(db_url) else "PostgreSQL") in by_area(payload, "database")[0]["detail"]
    assert by_area(payload, "dify schema")[0]["status"] == "ok"
    redis_check = by_area(payload, "redis")[0]
    assert redis_check["status"] == "ok" and "'dify'" in redis_check["detail"]


def test_a_missing_cascade_index_is_reported_then_created(db_engine: Engine, db_url: str) -> None:
    mysql = is_mysql_url(db_url)
    with db_engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX message_feedback_message_idx" + (" ON message_feedbacks" if mysql else "")))

    payload = doctor(["--database-url", db_url], ExitCode.OK)
    (index_check,) = by_area(payload, "indexes")
    assert index_check["status"] == "warn" and "message_feedbacks.message_id" in index_check["detail"]
    expected = (
        "ALTER TABLE message_feedbacks ADD INDEX difymaint_message_feedbacks_message_id_idx (message_id), "
        "ALGORITHM=INPLACE, LOCK=NONE;"
        if mysql
        else "CREATE INDEX CONCURRENTLY IF NOT EXISTS difymaint_message_feedbacks_message_id_idx "
        "ON message_feedbacks (message_id);"
    )
    assert expected in index_check["statements"]

    payload = doctor(["--database-url", db_url, "--create-missing-indexes"], ExitCode.OK)
    assert by_area(payload, "indexes")[0]["status"] == "ok"
    indexes = {index["name"] for index in sa.inspect(db_engine).get_indexes("message_feedbacks")}
    assert "difymaint_message_feedbacks_message_id_idx" in indexes
    assert by_area(doctor(["--database-url", db_url], ExitCode.OK), "indexes")[0]["status"] == "ok"


def test_the_dataset_queries_created_at_index_is_offered_under_a_name_of_its_own(
    pg_engine: Engine, pg_url: str
) -> None:
    def about_dataset_queries() -> list[dict[str, Any]]:
        checks = by_area(doctor(["--database-url", pg_url], ExitCode.OK), "indexes")
        return [check for check in checks if "dataset_queries" in check["detail"]]

    assert about_dataset_queries() == []  # the index exists: nothing said
    with pg_engine.begin() as conn:  # released Dify: no index on dataset_queries.created_at
        conn.execute(sa.text("DROP INDEX dataset_query_created_at_idx"))
    (check,) = about_dataset_queries()
    assert check["status"] == "warn" and "clean-dataset-queries" in check["detail"]
    # Not Dify's name: Dify's migration must still be able to create dataset_query_created_at_idx.
    assert check["statements"] == [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS difymaint_dataset_queries_created_at_idx "
        "ON dataset_queries (created_at);"
    ]
    doctor(["--database-url", pg_url, "--create-missing-indexes"], ExitCode.OK)
    assert about_dataset_queries() == []
    names = {index["name"] for index in sa.inspect(pg_engine).get_indexes("dataset_queries")}
    assert "difymaint_dataset_queries_created_at_idx" in names


def test_an_unreachable_database_is_a_blocker_without_the_password() -> None:
    result = invoke_assert_code(
        ["doctor", "--json", "--database-url", "postgresql://dify:hunter2-secret@127.0.0.1:1/dify"], ExitCode.FAILED
    )
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and by_area(payload, "database")[0]["status"] == "fail"
    assert by_area(payload, "dify schema") == []  # nothing more is asked of a database that is not there
    assert "hunter2-secret" not in result.stdout + result.stderr


@pytest.fixture
def empty_database(pg_admin_url: str) -> Iterator[str]:
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS doctor_not_dify"))
        conn.execute(sa.text("CREATE DATABASE doctor_not_dify"))
    url = sa.make_url(pg_admin_url).set(database="doctor_not_dify").render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS doctor_not_dify WITH (FORCE)"))
    admin.dispose()


def test_a_database_that_is_not_difys(empty_database: str) -> None:
    payload = doctor(["--database-url", empty_database], ExitCode.FAILED)
    (schema,) = by_area(payload, "dify schema")
    assert schema["status"] == "fail" and "not a Dify API database" in schema["detail"]


def test_unreachable_redis_and_broker_are_blockers(pg_url: str) -> None:
    payload = doctor(
        ["--database-url", pg_url, "--redis-url", "redis://:redis-secret@127.0.0.1:1/0"],
        ExitCode.FAILED,
        env={"CELERY_BROKER_URL": "redis://:broker-secret@127.0.0.1:1/1"},
    )
    assert by_area(payload, "redis")[0]["status"] == "fail"
    assert by_area(payload, "celery broker")[0]["status"] == "fail"
    assert "broker-secret" not in json.dumps(payload) and "redis-secret" not in json.dumps(payload)


def test_send_test_mail(pg_url: str) -> None:
    with SmtpStub() as smtp:
        env = {key: str(value) for key, value in smtp.settings().items()}
        payload = doctor(["--database-url", pg_url, "--send-test-mail", "ops@example.com"], ExitCode.OK, env=env)
    assert by_area(payload, "mail")[0]["status"] == "ok"
    assert [received.rcpt_tos for received in smtp.received] == [["ops@example.com"]]
    assert "difymaint" in smtp.received[0].message["Subject"]


def test_billing_on_but_unreachable(pg_url: str) -> None:
    env = {"BILLING_ENABLED": "true", "BILLING_API_URL": "http://127.0.0.1:1", "BILLING_API_SECRET_KEY": "k"}
    env |= {"DIFYMAINT_BILLING_RETRY_SECONDS": "0", "DIFYMAINT_BILLING_RETRY_WAIT": "0"}
    payload = doctor(["--database-url", pg_url], ExitCode.FAILED, env=env)
    assert by_area(payload, "billing")[0]["status"] == "fail"


def test_schedule_shows_which_jobs_both_dify_and_difymaint_would_run(pg_url: str) -> None:
    env = {"ENABLE_CLEAN_MESSAGES": "true", "ENABLE_CLEAN_EMBEDDING_CACHE_TASK": "true"}
    payload = doctor(["--database-url", pg_url], ExitCode.OK, env=env)
    schedule = {check["detail"].split(":")[0]: check for check in by_area(payload, "schedule")}
    # clean-messages takes Dify's own lock: a beat still running it cannot overlap.
    assert schedule["clean-messages"]["status"] == "ok" and "same lock" in schedule["clean-messages"]["hint"]
    assert schedule["clean-embeddings"]["status"] == "warn"
    assert "DIFYMAINT_ENABLE_CLEAN_EMBEDDINGS" in schedule["clean-embeddings"]["hint"]
    assert schedule["clean-workflow-logs"]["status"] == "skip"


def test_the_table_for_people(pg_url: str) -> None:
    result = invoke_assert_code(["doctor", "--database-url", pg_url], ExitCode.OK)
    assert "database" in result.stdout and "indexes" in result.stdout and "schedule" in result.stdout


def test_a_deleting_job_that_would_empty_the_archive_is_named(pg_url: str, tmp_path: Any) -> None:
    """Workflow-log retention (30 days) scheduled with the archive (90 days): the runs are gone before they
    are old enough to archive. Each setting is fine alone; doctor names the combination and the fix."""
    env = {"ARCHIVE_STORAGE_ENABLED": "true", "DIFYMAINT_ARCHIVE_DIR": str(tmp_path)}
    env |= {"WORKFLOW_LOG_CLEANUP_ENABLED": "true", "ENABLE_WORKFLOW_RUN_CLEANUP_TASK": "true"}
    payload = doctor(["--database-url", pg_url], ExitCode.OK, env=env)
    warned = [c for c in by_area(payload, "schedule") if "before archive-workflow-runs" in c["detail"]]
    assert {c["detail"].split()[0] for c in warned} == {"clean-workflow-logs", "clean-workflow-runs"}
    assert all(c["status"] == "warn" and "nothing will be archived" in c["detail"] for c in warned)
    assert "PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS" in warned[0]["hint"]

    archive_first = env | {"PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS": "20"}
    payload = doctor(["--database-url", pg_url], ExitCode.OK, env=archive_first)
    assert not [c for c in by_area(payload, "schedule") if "nothing will be archived" in c["detail"]]
    billing = env | {"BILLING_ENABLED": "true", "BILLING_API_URL": "http://127.0.0.1:1", "BILLING_API_SECRET_KEY": "k"}
    billing |= {"DIFYMAINT_BILLING_RETRY_SECONDS": "0", "DIFYMAINT_BILLING_RETRY_WAIT": "0"}
    payload = doctor(["--database-url", pg_url], ExitCode.FAILED, env=billing)  # the billing API is down: a blocker
    warned = [c for c in by_area(payload, "schedule") if "nothing will be archived" in c["detail"]]
    assert [c["detail"].split()[0] for c in warned] == ["clean-workflow-logs"]  # sandbox vs paid: no overlap


def test_session_visibility_says_what_the_pacing_can_see(pg_url: str) -> None:
    superuser = by_area(doctor(["--database-url", pg_url], ExitCode.OK), "session visibility")
    assert superuser[0]["status"] == "ok" and "sees every session" in superuser[0]["detail"]
    grants = ("GRANT USAGE ON SCHEMA public TO {role}", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    with login_role(pg_url, "blind", *grants) as role:
        blind = by_area(doctor(["--database-url", role.url], ExitCode.OK), "session visibility")
        assert blind[0]["status"] == "ok" and "its own sessions only" in blind[0]["detail"]
        assert blind[0]["statements"] == [f"GRANT pg_monitor TO {role.name};"]
        with role.admin.connect() as conn:
            conn.execute(sa.text(f"GRANT pg_monitor TO {role.name}"))
        granted = by_area(doctor(["--database-url", role.url], ExitCode.OK), "session visibility")
        assert "sees every session" in granted[0]["detail"]
