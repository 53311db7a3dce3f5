"""clean-unused-datasets against a real PostgreSQL (and SQLite): the candidate matrix, both passes, the
hand-over."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from difymaint.core.errors import ConfigError, UsageError
from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.dify.celery import BrokerUnavailable
from difymaint.engine.options import RunOptions
from difymaint.jobs import clean_unused_datasets
from difymaint.jobs.clean_unused_datasets import INDEX_TASK, CleanUnusedDatasetsParams
from difymaint.jobs.execute import run_job
from tests.celery_worker import CeleryWorker
from tests.conftest import NOW, make_context, row_counts
from tests.dataset_scenario import (
    PASS_1,
    PASS_2_BILLING_OFF,
    PASS_2_BILLING_ON,
    auto_disable_logs,
    disabled_datasets,
    enabled_documents,
    seed_unused,
)

pytestmark = pytest.mark.postgres

UNTOUCHED = ["datasets", "document_segments", "dataset_keyword_tables", "dataset_queries", "tenants"]


def billing_settings(billing: Any) -> dict[str, Any]:
    return {"BILLING_ENABLED": True, "BILLING_API_URL": billing.url, "BILLING_API_SECRET_KEY": "test-secret"}


def params(tmp_path: Path, **kwargs: Any) -> CleanUnusedDatasetsParams:
    kwargs.setdefault("run", RunOptions(batch_size=2))
    if not kwargs["run"].dry_run and not kwargs.get("enqueue_index_removal"):
        kwargs.setdefault("emit_index_removals", tmp_path / "removals.jsonl")
    return CleanUnusedDatasetsParams(**kwargs)


def worklist(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_both_passes_with_billing(db_engine: Any, db_url: str, billing: Any, tmp_path: Path) -> None:
    sc = seed_unused(db_engine, NOW)
    billing.state.plans = sc.plans()
    before = enabled_documents(db_engine)
    others = row_counts(db_engine, UNTOUCHED)
    summary = run_job(clean_unused_datasets, make_context(db_url, **billing_settings(billing)), params(tmp_path))

    expected = sc.ids(*PASS_1, *PASS_2_BILLING_ON)
    assert disabled_datasets(db_engine, before) == expected
    assert set(enabled_documents(db_engine)) == set(before) - expected  # nothing else lost a document
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0

    # Logs: pass 1 only, one per enabled non-archived document (any indexing status), never notified.
    logs = auto_disable_logs(db_engine)
    assert {(str(r.dataset_id), str(r.document_id)) for r in logs} == {
        (dataset_id, doc_id) for dataset_id, docs in sc.logged_docs.items() for doc_id in docs
    }
    assert not any(r.notified for r in logs)
    assert {str(r.tenant_id) for r in logs if str(r.dataset_id) == sc.datasets["sandbox_old_only"]} == {
        sc.tenants["sandbox"]
    }
    assert all(r.created_at == NOW.replace(tzinfo=None) for r in logs)

    # Every document of a cleaned dataset is disabled, archived ones included; nothing else changes.
    assert summary.tables == {"datasets": 6, "documents": 8, "dataset_auto_disable_logs": 6}
    assert summary.details["passes"]["all"]["datasets"] == 5
    assert summary.details["passes"]["sandbox"] == {
        "days": 7,
        "cutoff": "2026-11-17T12:00:00",
        "datasets": 1,
        "documents": 1,
    }
    assert summary.details["sandbox_pass_skipped"] == {"not_sandbox": 2, "unknown_plan": 1}
    assert row_counts(db_engine, UNTOUCHED) == others  # segments, keyword tables, queries: untouched

    # The work list: one line per dataset, written before the documents were disabled.
    lines = worklist(tmp_path / "removals.jsonl")
    assert {line["dataset_id"] for line in lines} == expected and len(lines) == len(expected)
    by_id = {line["dataset_id"]: line for line in lines}
    economy = by_id[sc.datasets["sandbox_old_only"]]
    assert economy["indexing_technique"] == "economy" and economy["doc_form"] == "qa_model"
    assert economy["keyword_table"] == "file" and economy["pass"] == "all" and economy["action"] == "remove"
    tie = by_id[sc.datasets["tie_a"]]
    assert tie["doc_form"] == tie["chunk_structure"] == "hierarchical_model"  # chunk_structure wins
    assert by_id[sc.datasets["sandbox_week_old"]]["pass"] == "sandbox"
    assert summary.details["index_removals"] == {"datasets": 6, "enqueued": 0, "emitted": 6}


def test_billing_off_sandbox_pass_takes_every_workspace(pg_engine: Any, pg_url: str, tmp_path: Path) -> None:
    sc = seed_unused(pg_engine, NOW)
    before = enabled_documents(pg_engine)
    ctx = make_context(pg_url)
    summary = run_job(clean_unused_datasets, ctx, params(tmp_path))
    assert disabled_datasets(pg_engine, before) == sc.ids(*PASS_1, *PASS_2_BILLING_OFF)
    assert summary.rows_remaining == 0  # a complete run: a number, never null (issue 13 item 9)
    loud = [w for w in summary.warnings if "EVERY workspace counts as sandbox" in w]
    assert loud and loud[0] in ctx.reporter.warnings  # type: ignore[attr-defined]
    # the sandbox pass writes no logs even for paid workspaces' datasets
    assert {str(r.dataset_id) for r in auto_disable_logs(pg_engine)} == sc.ids(*PASS_1)


@pytest.mark.parametrize(("which", "expected"), [("all", PASS_1), ("sandbox", PASS_2_BILLING_OFF)])
def test_a_single_pass(pg_engine: Any, pg_url: str, tmp_path: Path, which: str, expected: set[str]) -> None:
    sc = seed_unused(pg_engine, NOW)
    before = enabled_documents(pg_engine)
    summary = run_job(clean_unused_datasets, make_context(pg_url), params(tmp_path, passes=which))
    if which == "sandbox":
        # without pass 1 first, the 30-day-old datasets are also unused for 7 days
        expected = expected | PASS_1
    assert disabled_datasets(pg_engine, before) == sc.ids(*expected)
    assert list(summary.details["passes"]) == [which]
    assert bool(auto_disable_logs(pg_engine)) == (which == "all")


def test_dry_run_counts_equal_real_run(db_engine: Any, db_url: str, billing: Any, tmp_path: Path) -> None:
    sc = seed_unused(db_engine, NOW)
    billing.state.plans = sc.plans()
    before = row_counts(db_engine, ["documents", "dataset_auto_disable_logs"])
    enabled = enabled_documents(db_engine)
    work = tmp_path / "dry.jsonl"
    dry = run_job(
        clean_unused_datasets,
        make_context(db_url, **billing_settings(billing)),
        params(tmp_path, run=RunOptions(dry_run=True, batch_size=1), emit_index_removals=work),
    )
    assert enabled_documents(db_engine) == enabled and row_counts(db_engine, list(before)) == before
    assert not work.exists()  # a dry run hands nothing over
    real = run_job(
        clean_unused_datasets,
        make_context(db_url, **billing_settings(billing)),
        params(tmp_path, run=RunOptions(batch_size=3)),
    )
    assert dry.tables == real.tables
    assert dry.details["passes"] == real.details["passes"]
    assert dry.details["index_removals"] == {"datasets": len(sc.ids(*PASS_1, *PASS_2_BILLING_ON))}
    assert dry.dry_run and not real.dry_run


@pytest.mark.parametrize("celery_worker", ["", "dify"], indirect=True)
def test_enqueues_difys_celery_task(
    db_engine: Any, db_url: str, billing: Any, tmp_path: Path, celery_worker: CeleryWorker
) -> None:
    """A real Celery worker with Dify's task signature consumes one removal per disabled dataset."""
    sc = seed_unused(db_engine, NOW)
    billing.state.plans = sc.plans()
    ctx = make_context(db_url, **celery_worker.settings, **billing_settings(billing))
    summary = run_job(clean_unused_datasets, ctx, params(tmp_path, enqueue_index_removal=True))
    expected = sc.ids(*PASS_1, *PASS_2_BILLING_ON)
    received = celery_worker.received(INDEX_TASK, len(expected))
    assert INDEX_TASK == "tasks.deal_dataset_vector_index_task.deal_dataset_vector_index_task"
    assert len(received) == len(expected) == summary.details["index_removals"]["enqueued"]
    assert sorted(received) == sorted(([dataset_id, "remove"], {}) for dataset_id in expected)
    assert {record["queue"] for record in celery_worker.records(INDEX_TASK)} == {"dataset"}
    assert not (tmp_path / "removals.jsonl").exists()


def test_prefixed_messages_sit_under_the_prefix(
    pg_engine: Any, pg_url: str, billing: Any, tmp_path: Path, redis_url: str
) -> None:
    """Without a worker: the queue list carries Celery's global_keyprefix ("<REDIS_KEY_PREFIX>:")."""
    import redis

    sc = seed_unused(pg_engine, NOW)
    billing.state.plans = sc.plans()
    ctx = make_context(pg_url, CELERY_BROKER_URL=redis_url, REDIS_KEY_PREFIX="dify", **billing_settings(billing))
    run_job(clean_unused_datasets, ctx, params(tmp_path, enqueue_index_removal=True))
    client = redis.Redis.from_url(redis_url)
    assert client.llen("dataset") == 0
    assert client.llen("dify:dataset") == len(sc.ids(*PASS_1, *PASS_2_BILLING_ON))
    client.close()


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (None, "CELERY_BROKER_URL is not set"),
        ("sentinel://h:26379", "CELERY_USE_SENTINEL is off"),
        ("kafka://h:9092", "not supported"),
    ],
)
def test_broker_url_errors(url: str | None, error: str) -> None:
    from difymaint.core.settings import load_settings
    from difymaint.dify.celery import broker_url

    with pytest.raises(ConfigError, match=error):
        broker_url(load_settings(None, {"CELERY_BROKER_URL": url}))


def test_unreachable_broker_disables_nothing(pg_engine: Any, pg_url: str, tmp_path: Path) -> None:
    seed_unused(pg_engine, NOW)
    before = enabled_documents(pg_engine)
    ctx = make_context(pg_url, CELERY_BROKER_URL="redis://127.0.0.1:1/0", REDIS_SOCKET_CONNECT_TIMEOUT=0.5)
    with pytest.raises(BrokerUnavailable):
        run_job(clean_unused_datasets, ctx, params(tmp_path, enqueue_index_removal=True))
    assert enabled_documents(pg_engine) == before
    assert auto_disable_logs(pg_engine) == []


def test_real_run_needs_an_index_hand_over(pg_engine: Any, pg_url: str) -> None:
    seed_unused(pg_engine, NOW)
    before = enabled_documents(pg_engine)
    with pytest.raises(UsageError, match="index removal"):
        run_job(clean_unused_datasets, make_context(pg_url), CleanUnusedDatasetsParams())
    with pytest.raises(ConfigError, match="CELERY_BROKER_URL"):
        run_job(clean_unused_datasets, make_context(pg_url), CleanUnusedDatasetsParams(enqueue_index_removal=True))
    with pytest.raises(UsageError, match="unknown pass"):
        run_job(clean_unused_datasets, make_context(pg_url), CleanUnusedDatasetsParams(passes="paid"))
    assert enabled_documents(pg_engine) == before


def test_tenant_filter(pg_engine: Any, pg_url: str, tmp_path: Path) -> None:
    sc = seed_unused(pg_engine, NOW)
    before = enabled_documents(pg_engine)
    run_job(clean_unused_datasets, make_context(pg_url), params(tmp_path, tenant_ids=(sc.tenants["sandbox"],)))
    assert disabled_datasets(pg_engine, before) == sc.ids("sandbox_old_only", "sandbox_week_old")


def test_max_batches_is_partial_and_resumable(db_engine: Any, db_url: str, tmp_path: Path) -> None:
    sc = seed_unused(db_engine, NOW)
    before = enabled_documents(db_engine)
    ctx = make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0)
    first = run_job(
        clean_unused_datasets, ctx, params(tmp_path, passes="all", run=RunOptions(batch_size=2, max_batches=2))
    )
    assert first.outcome is Outcome.PARTIAL and first.exit_code == 4
    assert first.tables["datasets"] == 4  # the three same-moment datasets split across batches, none skipped
    assert first.rows_remaining == 1 and not first.rows_remaining_estimated  # what the next run takes
    second = run_job(clean_unused_datasets, make_context(db_url), params(tmp_path, passes="all"))
    assert second.tables["datasets"] == 1
    assert second.rows_remaining == 0
    assert disabled_datasets(db_engine, before) == sc.ids(*PASS_1)
    assert len(worklist(tmp_path / "removals.jsonl")) == 5


def test_candidate_query_uses_exists_and_keyset(pg_engine: Any, pg_url: str, tmp_path: Path) -> None:
    seed_unused(pg_engine, NOW)
    ctx = make_context(pg_url)
    schema = clean_unused_datasets.check_schema(ctx.engine, [], job="x")
    scan = clean_unused_datasets._Scan(ctx, None, params(tmp_path), None, None, schema)  # type: ignore[arg-type]
    one_pass = clean_unused_datasets.plan_passes(CleanUnusedDatasetsParams(passes="all"), NOW)[0]
    with pg_engine.connect() as conn:
        sql = str(scan._candidates(conn, one_pass, None, 50).compile(dialect=conn.dialect))
    assert "OFFSET" not in sql.upper() and sql.upper().count("EXISTS") == 3
    assert "ORDER BY datasets.created_at, datasets.id" in sql


def test_sqlite_run(sqlite_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(sqlite_url)
    sc = seed_unused(engine, NOW)
    before = enabled_documents(engine)
    dry = run_job(clean_unused_datasets, make_context(sqlite_url), params(tmp_path, run=RunOptions(dry_run=True)))
    real = run_job(clean_unused_datasets, make_context(sqlite_url), params(tmp_path))
    assert dry.tables == real.tables
    assert disabled_datasets(engine, before) == sc.ids(*PASS_1, *PASS_2_BILLING_OFF)
    assert len(auto_disable_logs(engine)) == 6
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.document_segments)).scalar_one() == 2
    engine.dispose()


# --- the command line ------------------------------------------------------------------------------------


def test_cli_real_run_without_hand_over_is_a_usage_error(sqlite_url: str) -> None:
    from tests.test_cli import run_cli

    result = run_cli(["clean-unused-datasets", "--database-url", sqlite_url, "--yes"])
    assert result.returncode == 2
    assert "index removal" in result.stderr and "--enqueue-index-removal" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_dry_run_json_and_emit(sqlite_url: str, tmp_path: Path) -> None:
    from tests.test_cli import run_cli

    engine = sa.create_engine(sqlite_url)
    # The subprocess runs on the wall clock, a little later than this: seed a few minutes ahead of it so that
    # the document exactly at the cut-off stays on the "recent" side.
    sc = seed_unused(engine, datetime.now(UTC) + timedelta(minutes=5))
    engine.dispose()
    base = ["clean-unused-datasets", "--database-url", sqlite_url, "--pass", "all", "--json"]
    dry = run_cli([*base, "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["tables"] == {"datasets": 5, "documents": 7, "dataset_auto_disable_logs": 6}
    work = tmp_path / "work.jsonl"
    real = run_cli([*base, "--yes", "--emit-index-removals", str(work)])
    assert real.returncode == 0, real.stderr
    summary = json.loads(real.stdout)
    assert summary["tables"] == json.loads(dry.stdout)["tables"]
    assert len(worklist(work)) == summary["tables"]["datasets"]
    assert {line["dataset_id"] for line in worklist(work)} == sc.ids(*PASS_1)
    bad = run_cli([*base[:-1], "--pass", "paid", "--dry-run"])
    assert bad.returncode == 2 and "--pass" in bad.stderr and "'paid' is not one of" in bad.stderr


def test_partial_run_counts_both_passes_left(pg_engine: Any, pg_url: str, tmp_path: Path) -> None:
    """Stopped in pass 1: the backlog is pass 1 past its cursor plus all of pass 2, each dataset once."""
    sc = seed_unused(pg_engine, NOW)
    before = enabled_documents(pg_engine)
    ctx = make_context(pg_url, DIFYMAINT_TARGET_BATCH_MS=0)
    first = run_job(clean_unused_datasets, ctx, params(tmp_path, run=RunOptions(batch_size=2, max_batches=1)))
    assert first.outcome is Outcome.PARTIAL and first.tables["datasets"] == 2
    assert first.rows_remaining_estimated  # the sandbox pass's plan filter is not applied to the count
    second = run_job(clean_unused_datasets, make_context(pg_url), params(tmp_path))
    assert disabled_datasets(pg_engine, before) == sc.ids(*PASS_1, *PASS_2_BILLING_OFF)
    assert first.rows_remaining == second.tables["datasets"]  # billing off: every workspace is sandbox


def test_second_signal_still_counts_the_backlog(db_engine: Any, db_url: str, tmp_path: Path) -> None:
    from difymaint.core.stop import Interrupted
    from tests.test_signal_cancel import _interrupt_at_batch

    seed_unused(db_engine, NOW)
    ctx = make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0)
    ctx.batch_hooks.append(_interrupt_at_batch(1))
    with pytest.raises(Interrupted) as caught:
        run_job(clean_unused_datasets, ctx, params(tmp_path, passes="all", run=RunOptions(batch_size=2)))
    summary = caught.value.difymaint_summary  # type: ignore[attr-defined]
    assert summary.tables["datasets"] == 2 and summary.rows_remaining == 3  # five in pass 1 (see above)
