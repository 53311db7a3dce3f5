"""clean-oauth-tokens against a real PostgreSQL (and SQLite): Dify's predicate on timestamptz columns, and a
Dify version without the table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, clean_oauth_tokens
from difymaint.jobs.clean_oauth_tokens import CleanOAuthTokensParams, cutoff
from difymaint.jobs.execute import run_job
from tests.conftest import NOW, make_context
from tests.test_cli import invoke_assert_code, run_cli

pytestmark = pytest.mark.postgres

ABSENT = "table oauth_access_tokens does not exist in this Dify version"


def seed(engine: Engine, now: datetime, *, bulk: int = 0, edges: bool = True) -> dict[str, set[str]]:
    """One token per case of Dify's predicate (cut-off = now − 30 days), plus ``bulk`` zombie tokens.

    ``edges=False`` leaves out the cases within a second of the cut-off (for a subprocess whose clock runs a
    little later)."""
    cut = cutoff(now, 30)
    day = timedelta(days=1)
    # name → (revoked_at, expires_at, deleted?)
    cases: dict[str, tuple[datetime | None, datetime, bool]] = {
        "revoked_long_ago": (cut - 10 * day, cut + 20 * day, True),
        "revoked_long_ago_and_expired": (cut - 5 * day, cut - 60 * day, True),
        "revoked_recently": (now - 2 * day, now + 20 * day, False),
        "revoked_recently_expired_long_ago": (now - 2 * day, cut - 5 * day, False),  # revoked_at decides
        "revoked_exactly_at_cutoff": (cut, cut - day, False),
        "revoked_just_before_cutoff": (cut - timedelta(seconds=1), now + day, True),
        "never_revoked_expired_long_ago": (None, cut - 3 * day, True),  # a zombie
        "never_revoked_expired_just_before_cutoff": (None, cut - timedelta(seconds=1), True),
        "never_revoked_expired_at_cutoff": (None, cut, False),
        "never_revoked_expired_recently": (None, now - 3 * day, False),
        "active": (None, now + 30 * day, False),
    }
    rows: list[dict[str, Any]] = []
    groups: dict[str, set[str]] = {"deleted": set(), "kept": set()}

    def add(revoked_at: datetime | None, expires_at: datetime, deleted: bool) -> None:
        token_id = t.new_id()
        rows.append(
            {
                "id": token_id,
                "subject_email": f"user{len(rows)}@example.com",
                "subject_issuer": "dify:account",
                "account_id": t.new_id(),
                "client_id": "difyctl",
                "device_label": f"laptop-{len(rows)}",
                "prefix": "dfy_",
                "token_hash": f"{len(rows):064x}",
                "created_at": expires_at - 30 * day,
                "expires_at": expires_at,
                "revoked_at": revoked_at,
            }
        )
        groups["deleted" if deleted else "kept"].add(token_id)

    for name, (revoked_at, expires_at, deleted) in cases.items():
        if edges or "cutoff" not in name:
            add(revoked_at, expires_at, deleted)
    for i in range(bulk):  # zombies: never revoked, expired a day or more before the cut-off
        add(None, cut - timedelta(days=1, minutes=i), True)
    with engine.begin() as conn:
        conn.execute(sa.insert(t.oauth_access_tokens), rows)
    return groups


def remaining(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(row[0]) for row in conn.execute(sa.select(t.oauth_access_tokens.c.id))}


def params(**run: Any) -> CleanOAuthTokensParams:
    return CleanOAuthTokensParams(retention_days=30, run=RunOptions(**run))


def test_predicate_matrix_in_several_batches(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW, bulk=40)
    ctx = make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0)
    summary = run_job(clean_oauth_tokens, ctx, params(batch_size=9))
    assert remaining(db_engine) == groups["kept"]
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert summary.tables == {"oauth_access_tokens": len(groups["deleted"])} == {"oauth_access_tokens": 45}
    assert summary.batches == 5 and summary.rows_remaining == 0
    assert summary.details["cutoff"] == cutoff(NOW, 30).isoformat() and summary.details["table_present"]
    assert not summary.warnings


def test_schema_has_difys_partial_indexes(pg_engine: Engine) -> None:
    query = sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'oauth_access_tokens'")
    with pg_engine.connect() as conn:
        found = {str(name): str(definition) for name, definition in conn.execute(query).all()}
    assert "WHERE (revoked_at IS NULL)" in found["idx_oauth_token_hash"]
    per_device = found["uq_oauth_active_per_device"]
    assert "UNIQUE" in per_device and "WHERE (revoked_at IS NULL)" in per_device
    assert "account_id IS NOT NULL" in found["idx_oauth_account"]
    columns = {c["name"]: c["type"] for c in sa.inspect(pg_engine).get_columns("oauth_access_tokens")}
    assert all(columns[name].timezone for name in ("created_at", "last_used_at", "expires_at", "revoked_at"))


def test_aware_cutoff_whatever_the_session_time_zone(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW)
    ctx = make_context(db_url, DB_SESSION_TIMEZONE_OVERRIDE="America/Los_Angeles")
    summary = run_job(clean_oauth_tokens, ctx, params())
    assert remaining(db_engine) == groups["kept"]  # the one-second edges hold in any session zone
    assert summary.tables["oauth_access_tokens"] == len(groups["deleted"])


def test_days_changes_the_cutoff(pg_engine: Engine, pg_url: str) -> None:
    seed(pg_engine, NOW)
    summary = run_job(clean_oauth_tokens, make_context(pg_url), CleanOAuthTokensParams(retention_days=90))
    assert summary.tables["oauth_access_tokens"] == 0  # nothing in the fixture is 90 days past the edge


def test_dry_run_counts_equal_real_deletions(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW, bulk=20)
    before = remaining(db_engine)
    dry = run_job(clean_oauth_tokens, make_context(db_url), params(dry_run=True, batch_size=4))
    assert remaining(db_engine) == before
    real = run_job(clean_oauth_tokens, make_context(db_url), params(batch_size=500))
    assert dry.tables == real.tables == {"oauth_access_tokens": len(groups["deleted"])}
    assert remaining(db_engine) == groups["kept"]


def test_max_batches_is_partial(db_engine: Engine, db_url: str) -> None:
    groups = seed(db_engine, NOW, bulk=20)
    first = run_job(
        clean_oauth_tokens, make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0), params(batch_size=5, max_batches=3)
    )
    assert first.outcome is Outcome.PARTIAL and first.exit_code == 4
    assert first.tables["oauth_access_tokens"] == 15
    assert first.rows_remaining == len(groups["deleted"]) - 15
    second = run_job(clean_oauth_tokens, make_context(db_url), params())
    assert second.outcome is Outcome.DONE and remaining(db_engine) == groups["kept"]


def test_table_absent_in_older_dify_is_done_with_a_warning(pg_engine: Engine, pg_url: str) -> None:
    with pg_engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE oauth_access_tokens"))
    ctx = make_context(pg_url)
    summary = run_job(clean_oauth_tokens, ctx, params())
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert summary.total_rows == 0 and summary.batches == 0 and summary.rows_remaining == 0
    assert summary.details["table_present"] is False
    assert any(ABSENT in warning for warning in summary.warnings)
    assert any(ABSENT in warning for warning in ctx.reporter.warnings)  # type: ignore[attr-defined]
    result = run_cli(["clean-oauth-tokens", "--database-url", pg_url, "--yes", "--json"])
    assert result.returncode == 0, result.stderr
    cli_summary = json.loads(result.stdout)
    assert cli_summary["outcome"] == "done" and cli_summary["rows_total"] == 0
    assert any(ABSENT in warning for warning in cli_summary["warnings"])


def test_cli_json_summary(pg_engine: Engine, pg_url: str) -> None:
    groups = seed(pg_engine, datetime.now(UTC), bulk=12, edges=False)  # the subprocess uses the real clock
    base = ["clean-oauth-tokens", "--database-url", pg_url, "--json", "--batch-size", "5"]
    dry = run_cli([*base, "--dry-run", "--days", "30"])
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["tables"] == {"oauth_access_tokens": len(groups["deleted"])}
    partial = run_cli([*base, "--yes", "--max-batches", "1"])
    assert partial.returncode == 4, partial.stderr
    assert json.loads(partial.stdout)["tables"] == {"oauth_access_tokens": 5}
    done = run_cli([*base, "--yes"], env={"OAUTH_ACCESS_TOKEN_RETENTION_DAYS": "30"})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["job"] == "clean-oauth-tokens" and summary["outcome"] == "done"
    assert summary["tables"] == {"oauth_access_tokens": len(groups["deleted"]) - 5}
    assert remaining(pg_engine) == groups["kept"]


def test_registry_and_help() -> None:
    info = JOBS["clean-oauth-tokens"]
    assert (info.module, info.schedule, info.dify_task, info.dify_switch, info.lock_key) == (
        "clean_oauth_tokens",
        "0 5 * * *",
        "clean_oauth_access_tokens_task",
        "ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK",
        "maintenance:clean_oauth_tokens",
    )
    assert info.load() is clean_oauth_tokens
    out = invoke_assert_code(["clean-oauth-tokens", "--help"], 0).stdout
    assert "clean_oauth_access_tokens_task" in out and "--days" in out


def test_sqlite(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    groups = seed(engine, NOW, bulk=10)
    fixed = {"DIFYMAINT_TARGET_BATCH_MS": 0}
    dry = run_job(clean_oauth_tokens, make_context(sqlite_url, **fixed), params(dry_run=True, batch_size=4))
    real = run_job(clean_oauth_tokens, make_context(sqlite_url, **fixed), params(batch_size=4))
    assert dry.tables == real.tables == {"oauth_access_tokens": len(groups["deleted"])}
    assert real.outcome is Outcome.DONE
    assert remaining(engine) == groups["kept"]
    engine.dispose()
