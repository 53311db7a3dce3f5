"""archive-workflow-runs and restore-workflow-runs on PostgreSQL (and SQLite): Dify's archive bundles, the
workflow_archive_logs rows, paid-only selection, delete-after-archive, and a byte-exact round trip."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.errors import ConfigError
from difymaint.core.exit_codes import ExitCode
from difymaint.core.summary import Outcome
from difymaint.core.window import TimeWindow
from difymaint.demo.builders import Builder
from difymaint.dify import tables as t
from difymaint.dify.archive import ARCHIVED_TABLES, archive_key, md5_hex, read_bundle, to_jsonl
from difymaint.dify.storage import ObjectNotFound, StorageError, archive_store, fs_storage, s3_storage
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, archive_workflow_runs, restore_workflow_runs
from difymaint.jobs.archive_workflow_runs import ArchiveWorkflowRunsParams
from difymaint.jobs.execute import run_job
from difymaint.jobs.restore_workflow_runs import RestoreFailed, RestoreWorkflowRunsParams
from tests.conftest import NOW, make_context, make_settings, stored
from tests.s3_server import S3Bucket
from tests.workflow_scenario import RUN_TABLES, WorkflowScenario, assert_no_dangling, ids, seed

pytestmark = pytest.mark.postgres

EVERYTHING = TimeWindow(end_before=NOW.replace(tzinfo=None) + timedelta(days=1))  # restore: every archived run


def archive(scenario: WorkflowScenario, archive_dir: Path | None, **kwargs: Any) -> ArchiveWorkflowRunsParams:
    run = kwargs.pop("run", RunOptions(batch_size=4))
    return ArchiveWorkflowRunsParams(
        window=TimeWindow(end_before=scenario.cutoff), run=run, archive_dir=archive_dir, **kwargs
    )


def restore(archive_dir: Path | None, **kwargs: Any) -> RestoreWorkflowRunsParams:
    kwargs.setdefault("window", None if kwargs.get("run_ids") else EVERYTHING)
    kwargs.setdefault("limit", 1000)
    return RestoreWorkflowRunsParams(archive_dir=archive_dir, **kwargs)


def archivable(scenario: WorkflowScenario, tenants: set[str] | None = None) -> set[str]:
    """Old ended runs of workflow apps: chat (advanced-chat) runs are never archived (Dify's ARCHIVED_TYPE)."""
    chat_apps = set(scenario.chat_apps.values())
    return {rid for rid in scenario.old_ended(tenants) if scenario.runs[rid].app_id not in chat_apps}


def snapshot(engine: Engine, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, whole, in id order: what a round trip must give back exactly."""
    result = {}
    with engine.connect() as conn:
        for name in names:
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            rows = conn.execute(sa.select(table).order_by(table.c.id))
            result[name] = [{k: str(v) if isinstance(v, UUID) else v for k, v in row._mapping.items()} for row in rows]
    return result


def archive_logs(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(t.workflow_archive_logs))]


def key_of(scenario: WorkflowScenario, run_id: str) -> str:
    run = scenario.runs[run_id]
    return archive_key(scenario.tenant_ids[run.tenant], run.app_id, run.created_at, run_id)


def billing_settings(billing: Any) -> dict[str, Any]:
    return {"BILLING_ENABLED": True, "BILLING_API_URL": billing.url, "BILLING_API_SECRET_KEY": "test-secret"}


def reshape_app_logs(engine: Engine, scenario: WorkflowScenario) -> tuple[str, str]:
    """One archivable run loses its app log (one archive log with no log_id), another gets a second one."""
    none, two = sorted(archivable(scenario))[:2]
    with engine.begin() as conn:
        conn.execute(sa.delete(t.workflow_app_logs).where(t.workflow_app_logs.c.workflow_run_id == none))
        run = scenario.runs[two]
        Builder(conn, scenario.now).workflow_app_log(
            scenario.tenant_ids[run.tenant], run.app_id, run.workflow_id, two, run.created_at + timedelta(seconds=1)
        )
    scenario.runs[none].app_logs, scenario.runs[two].app_logs = 0, 2
    return none, two


# --- registry -----------------------------------------------------------------------------------------------


def test_registry_entries() -> None:
    info = JOBS["archive-workflow-runs"]
    assert (info.module, info.schedule, info.dify_switch, info.lock_key, info.scheduled) == (
        "archive_workflow_runs",
        "0 23 * * *",  # before clean-workflow-runs deletes at 00:00
        "",  # Dify never schedules it, so there is no switch to turn off
        "maintenance:archive_workflow_runs",
        True,
    )
    assert "branch only" in info.dify_task
    restore_info = JOBS["restore-workflow-runs"]
    assert (restore_info.module, restore_info.lock_key, restore_info.scheduled) == (
        "restore_workflow_runs",
        "maintenance:restore_workflow_runs",
        False,
    )


# --- archive ------------------------------------------------------------------------------------------------


def test_archive_writes_difys_bundles_and_archive_logs(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    scenario = seed(db_engine, NOW)
    without_log, with_two = reshape_app_logs(db_engine, scenario)
    before = snapshot(db_engine, RUN_TABLES)
    summary = run_job(archive_workflow_runs, make_context(db_url), archive(scenario, tmp_path))
    expected = archivable(scenario)
    assert expected and summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert summary.details["runs_archived"] == len(expected) and summary.verb == "archived"

    # One bundle per run at Dify's key layout, nothing else (no temporary files left behind).
    files = {str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file()}
    assert files == {key_of(scenario, rid) for rid in expected}
    some = sorted(expected)[0]
    run = scenario.runs[some]
    assert key_of(scenario, some) == (
        f"{scenario.tenant_ids[run.tenant]}/app_id={run.app_id}/year={run.created_at:%Y}/month={run.created_at:%m}/"
        f"workflow_run_id={some}/archive.v1.0.zip"
    )
    for rid in expected:
        data = (tmp_path / key_of(scenario, rid)).read_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            assert bundle.testzip() is None
            assert bundle.namelist() == ["manifest.json", *(f"{name}.jsonl" for name in ARCHIVED_TABLES)]
            assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in bundle.infolist())
            manifest = json.loads(bundle.read("manifest.json"))
            run = scenario.runs[rid]
            assert manifest["schema_version"] == "1.0" and manifest["workflow_run_id"] == rid
            assert (manifest["tenant_id"], manifest["app_id"], manifest["workflow_id"]) == (
                scenario.tenant_ids[run.tenant],
                run.app_id,
                run.workflow_id,
            )
            assert manifest["created_at"] == stored(db_url, run.created_at).isoformat()
            assert manifest["archived_at"] == NOW.isoformat()
            assert list(manifest["tables"]) == list(ARCHIVED_TABLES)
            counts = scenario.cascade_rows({rid})
            for name, info in manifest["tables"].items():
                payload = bundle.read(f"{name}.jsonl")
                assert info == {"row_count": counts[name], "checksum": md5_hex(payload), "size_bytes": len(payload)}
                lines = payload.decode().splitlines()
                assert len(lines) == counts[name]
                for line in lines:  # stable JSON: sorted keys, compact
                    assert line == json.dumps(
                        json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False
                    )
            (run_row,) = [json.loads(line) for line in bundle.read("workflow_runs.jsonl").decode().splitlines()]
            assert run_row["id"] == rid and run_row["graph"].startswith('{"nodes"')  # whole rows
            assert run_row["created_at"] == stored(db_url, run.created_at).isoformat()
        assert read_bundle(data).run_id == rid  # our reader verifies what we wrote

    # workflow_archive_logs: one per app log, or one without log_id; the run's summary columns copied.
    logs = archive_logs(db_engine)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for log in logs:
        by_run.setdefault(str(log["workflow_run_id"]), []).append(log)
    assert set(by_run) == expected
    assert {rid: len(rows) for rid, rows in by_run.items()} == {
        rid: max(1, scenario.runs[rid].app_logs) for rid in expected
    }
    assert [log["log_id"] for log in by_run[without_log]] == [None]
    app_log_ids = {row["id"] for row in before["workflow_app_logs"] if str(row["workflow_run_id"]) == with_two}
    assert {log["log_id"] for log in by_run[with_two]} == app_log_ids
    runs_before = {str(row["id"]): row for row in before["workflow_runs"]}
    for rid, rows in by_run.items():
        source = runs_before[rid]
        for log in rows:
            assert (log["run_status"], log["run_version"], log["run_triggered_from"]) == (
                source["status"],
                source["version"],
                source["triggered_from"],
            )
            assert (
                log["run_created_at"],
                log["run_finished_at"],
                log["run_elapsed_time"],
                log["run_total_tokens"],
            ) == (
                source["created_at"],
                source["finished_at"],
                source["elapsed_time"],
                source["total_tokens"],
            )
            assert (log["tenant_id"], log["app_id"], log["created_by"]) == (
                source["tenant_id"],
                source["app_id"],
                source["created_by"],
            )
            assert log["trigger_metadata"] == "{}" and log["archived_at"] == NOW.replace(tzinfo=None)

    # Running, paused and scheduled runs, new runs and chat runs are never archived; nothing was deleted.
    never = {rid for rid, run in scenario.runs.items() if run.status in ("running", "paused", "scheduled")}
    assert never and not never & set(by_run)
    assert snapshot(db_engine, RUN_TABLES) == before
    expected_rows = scenario.cascade_rows(expected)
    assert {name: summary.tables[name] for name in RUN_TABLES} == expected_rows
    assert summary.tables["workflow_archive_logs"] == len(logs)
    assert summary.details["bytes_written"] == sum(path.stat().st_size for path in tmp_path.rglob("*.zip"))


def test_already_archived_runs_are_skipped(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    scenario = seed(db_engine, NOW)
    first = run_job(archive_workflow_runs, make_context(db_url), archive(scenario, tmp_path))
    logs = len(archive_logs(db_engine))
    second = run_job(archive_workflow_runs, make_context(db_url), archive(scenario, tmp_path))
    assert first.details["runs_archived"] == len(archivable(scenario))
    assert second.details["runs_archived"] == 0
    assert second.details["runs_skipped_already_archived"] == len(archivable(scenario))
    assert second.tables["workflow_archive_logs"] == 0 and len(archive_logs(db_engine)) == logs


def test_paid_workspaces_only_with_billing(pg_engine: Engine, pg_url: str, tmp_path: Path, billing: Any) -> None:
    scenario = seed(pg_engine, NOW)
    billing.state.plans = scenario.plans()
    summary = run_job(
        archive_workflow_runs, make_context(pg_url, **billing_settings(billing)), archive(scenario, tmp_path)
    )
    # professional and team (even an expired team plan, as Dify) are paid; sandbox and unknown are not.
    expected = archivable(scenario, {"professional", "team_expired"})
    assert {str(log["workflow_run_id"]) for log in archive_logs(pg_engine)} == expected
    assert summary.details["runs_skipped_not_paid"] == len(archivable(scenario)) - len(expected)
    assert summary.details["billing"] == "billing-api"
    sandbox = scenario.tenant_ids["sandbox_never_paid"]
    assert not (tmp_path / sandbox).exists()


def test_tenant_filter_and_limit(pg_engine: Engine, pg_url: str, tmp_path: Path) -> None:
    scenario = seed(pg_engine, NOW)
    target = scenario.tenant_ids["professional"]
    summary = run_job(
        archive_workflow_runs, make_context(pg_url), archive(scenario, tmp_path, tenant_ids=(target,), limit=3)
    )
    archived = {str(log["workflow_run_id"]) for log in archive_logs(pg_engine)}
    assert len(archived) == 3 and archived <= archivable(scenario, {"professional"})
    assert summary.details["limit_reached"] and summary.details["runs_archived"] == 3


def test_delete_after_archive_then_restore_gives_back_the_same_rows(
    db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    scenario = seed(db_engine, NOW)
    reshape_app_logs(db_engine, scenario)
    before = snapshot(db_engine, [*RUN_TABLES, "upload_files"])
    runs_before = ids(db_engine, t.workflow_runs)
    archived = run_job(
        archive_workflow_runs, make_context(db_url), archive(scenario, tmp_path, delete_after_archive=True)
    )
    expected = archivable(scenario)
    assert ids(db_engine, t.workflow_runs) == runs_before - expected
    assert archived.details["deleted"] == scenario.cascade_rows(expected)
    assert_no_dangling(db_engine)
    assert snapshot(db_engine, ["upload_files"]) == {"upload_files": before["upload_files"]}  # offload files kept

    restored = run_job(restore_workflow_runs, make_context(db_url), restore(tmp_path))
    assert restored.outcome is Outcome.DONE and restored.details["runs_restored"] == len(expected)
    assert snapshot(db_engine, RUN_TABLES) == {name: before[name] for name in RUN_TABLES}
    assert {name: restored.tables[name] for name in RUN_TABLES} == scenario.cascade_rows(expected)
    assert (
        archive_logs(db_engine) == []
        and restored.details["archive_logs_removed"] == archived.tables["workflow_archive_logs"]
    )
    assert restored.verb == "restored"
    assert_no_dangling(db_engine)


def test_restore_is_idempotent(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    scenario = seed(db_engine, NOW)
    run_job(archive_workflow_runs, make_context(db_url), archive(scenario, tmp_path))  # runs stay in the database
    before = snapshot(db_engine, RUN_TABLES)
    logs = archive_logs(db_engine)
    again = run_job(restore_workflow_runs, make_context(db_url), restore(tmp_path, keep_archive_logs=True))
    assert again.details["runs_restored"] == len(archivable(scenario))
    assert again.total_rows == 0 and snapshot(db_engine, RUN_TABLES) == before
    assert archive_logs(db_engine) == logs  # kept

    # A run half there (its node executions lost): only the missing rows come back.
    rid = sorted(archivable(scenario))[0]
    with db_engine.begin() as conn:
        conn.execute(sa.delete(t.workflow_node_executions).where(t.workflow_node_executions.c.workflow_run_id == rid))
    one = run_job(restore_workflow_runs, make_context(db_url), restore(tmp_path, run_ids=(rid,)))
    assert (
        one.tables["workflow_node_executions"] == scenario.runs[rid].nodes
        and one.total_rows == scenario.runs[rid].nodes
    )
    assert snapshot(db_engine, RUN_TABLES) == before
    assert {str(log["workflow_run_id"]) for log in archive_logs(db_engine)} == archivable(scenario) - {rid}


def test_corrupted_archives_fail_only_their_run(pg_engine: Engine, pg_url: str, tmp_path: Path) -> None:
    scenario = seed(pg_engine, NOW)
    before = snapshot(pg_engine, RUN_TABLES)
    run_job(archive_workflow_runs, make_context(pg_url), archive(scenario, tmp_path, delete_after_archive=True))
    expected = sorted(archivable(scenario))
    tampered, truncated, missing = expected[:3]

    # A table file edited after archiving (the zip itself stays valid): its MD5 no longer matches.
    path = tmp_path / key_of(scenario, tampered)
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as original:
        members = {name: original.read(name) for name in original.namelist()}
    members["workflow_node_executions.jsonl"] = members["workflow_node_executions.jsonl"].replace(b"LLM", b"XXX")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as rewritten:
        for name, data in members.items():
            rewritten.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    (tmp_path / key_of(scenario, truncated)).write_bytes(b"PK\x03\x04 not really")
    (tmp_path / key_of(scenario, missing)).unlink()

    with pytest.raises(RestoreFailed) as failed:
        run_job(restore_workflow_runs, make_context(pg_url), restore(tmp_path))
    assert failed.value.exit_code == ExitCode.FAILED and "3 of" in failed.value.message
    summary = failed.value.difymaint_summary  # type: ignore[attr-defined]
    errors = {item["run_id"]: item["error"] for item in summary.details["failures"]}
    assert set(errors) == {tampered, truncated, missing}
    assert "workflow_node_executions.jsonl: MD5" in errors[tampered]
    assert "not a readable zip" in errors[truncated]
    assert "not found" in errors[missing]
    assert summary.details["runs_restored"] == len(expected) - 3
    # nothing of the failed runs came back; everything else did; their archive logs stay for a retry
    runs_now = ids(pg_engine, t.workflow_runs)
    assert not {tampered, truncated, missing} & runs_now
    assert {str(row["id"]) for row in before["workflow_runs"]} - runs_now == {tampered, truncated, missing}
    assert {str(log["workflow_run_id"]) for log in archive_logs(pg_engine)} == {tampered, truncated, missing}
    with pg_engine.connect() as conn:
        nodes = t.workflow_node_executions
        count = conn.execute(sa.select(sa.func.count()).where(nodes.c.workflow_run_id == tampered)).scalar_one()
    assert count == 0
    assert_no_dangling(pg_engine)


def test_dry_runs_count_what_real_runs_do(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    scenario = seed(db_engine, NOW)
    reshape_app_logs(db_engine, scenario)
    before = snapshot(db_engine, [*RUN_TABLES, "workflow_archive_logs"])
    dry = run_job(
        archive_workflow_runs,
        make_context(db_url),
        archive(scenario, None, run=RunOptions(dry_run=True, batch_size=3), delete_after_archive=True),
    )
    assert snapshot(db_engine, [*RUN_TABLES, "workflow_archive_logs"]) == before  # nothing written
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    real = run_job(archive_workflow_runs, make_context(db_url), archive(scenario, tmp_path, delete_after_archive=True))
    assert dry.tables == real.tables and dry.details["deleted"] == real.details["deleted"]
    assert dry.details["runs_archived"] == real.details["runs_archived"] == len(archivable(scenario))
    assert dry.verb == "would archive"

    after_archive = snapshot(db_engine, [*RUN_TABLES, "workflow_archive_logs"])
    dry_restore = run_job(
        restore_workflow_runs, make_context(db_url), restore(tmp_path, run=RunOptions(dry_run=True, batch_size=7))
    )
    assert snapshot(db_engine, [*RUN_TABLES, "workflow_archive_logs"]) == after_archive
    real_restore = run_job(restore_workflow_runs, make_context(db_url), restore(tmp_path))
    assert dry_restore.tables == real_restore.tables
    assert dry_restore.details["archive_logs_removed"] == real_restore.details["archive_logs_removed"]


def test_optional_tables_missing_give_empty_table_files(pg_engine: Engine, pg_url: str, tmp_path: Path) -> None:
    scenario = seed(pg_engine, NOW)
    with pg_engine.begin() as conn:
        for name in ("workflow_pause_reasons", "workflow_pauses", "workflow_trigger_logs"):
            conn.execute(sa.text(f"DROP TABLE {name}"))
    summary = run_job(archive_workflow_runs, make_context(pg_url), archive(scenario, tmp_path))
    assert "workflow_pauses" not in summary.tables
    assert sum("does not exist in this Dify version" in warning for warning in summary.warnings) == 3
    bundle = read_bundle((tmp_path / key_of(scenario, sorted(archivable(scenario))[0])).read_bytes())
    assert bundle.tables["workflow_pauses"] == [] and bundle.tables["workflow_trigger_logs"] == []
    assert all(log["trigger_metadata"] is None for log in archive_logs(pg_engine))


def test_no_destination_is_a_config_error(pg_engine: Engine, pg_url: str) -> None:
    scenario = seed(pg_engine, NOW)
    with pytest.raises(ConfigError, match="no archive destination"):
        run_job(archive_workflow_runs, make_context(pg_url), archive(scenario, None))
    with pytest.raises(ConfigError, match="ARCHIVE_STORAGE_SECRET_KEY"):
        run_job(
            archive_workflow_runs,
            make_context(
                pg_url,
                ARCHIVE_STORAGE_ENDPOINT="http://127.0.0.1:1",
                ARCHIVE_STORAGE_ARCHIVE_BUCKET="b",
                ARCHIVE_STORAGE_ACCESS_KEY="k",
            ),
            archive(scenario, None),
        )
    assert archive_logs(pg_engine) == []


def test_restore_needs_an_existing_directory_and_archived_runs(pg_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        run_job(restore_workflow_runs, make_context(pg_url), restore(tmp_path / "typo"))
    assert not (tmp_path / "typo").exists()  # a restore never creates the directory it reads
    unknown = "00000000-0000-0000-0000-00000000abcd"
    with pytest.raises(RestoreFailed) as failed:
        run_job(restore_workflow_runs, make_context(pg_url), restore(tmp_path, run_ids=(unknown,)))
    (failure,) = failed.value.difymaint_summary.details["failures"]  # type: ignore[attr-defined]
    assert failure["run_id"] == unknown and "not archived" in failure["error"]


# --- S3 -----------------------------------------------------------------------------------------------------


def test_s3_store_against_the_server(s3_bucket: S3Bucket) -> None:
    """The archive client against a real S3 server: round trip, missing objects, a key with characters S3
    encodes, deletes, and a bucket that does not exist."""
    store = archive_store(make_settings(**s3_bucket.archive_settings()))
    store.check()
    key = "tenant/app_id=a/year=2026/month=01/workflow_run_id=r/archive.v1.0.zip"
    store.put(key, b"zip bytes")
    assert s3_bucket.objects() == {key: b"zip bytes"}
    assert store.get(key) == b"zip bytes" and store.exists(key) and not store.exists(key + ".nope")
    with pytest.raises(ObjectNotFound):
        store.get("missing/archive.v1.0.zip")
    store.delete(key)
    store.delete(key)  # a missing object is not an error
    assert s3_bucket.stored_keys() == set()
    missing = s3_storage(
        bucket="other-bucket",
        endpoint=s3_bucket.endpoint,
        region="auto",
        access_key=s3_bucket.access_key,
        secret_key=s3_bucket.secret_key,
    )
    with pytest.raises(ConfigError, match="does not exist"):
        missing.check()


def test_s3_signatures_are_checked(signed_s3_bucket: S3Bucket) -> None:
    """A server that checks request signatures takes the archive client's, and refuses a wrong secret."""
    bucket = signed_s3_bucket
    store = archive_store(make_settings(**bucket.archive_settings()))
    key = "tenant/app_id=a/year=2026/month=01/workflow_run_id=r/archive.v1.0.zip"
    store.put(key, b"zip bytes")
    assert store.get(key) == b"zip bytes" and bucket.objects() == {key: b"zip bytes"}
    wrong = s3_storage(
        bucket=bucket.name, endpoint=bucket.endpoint, region="auto", access_key=bucket.access_key, secret_key="nope"
    )
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
        wrong.put(key, b"x")
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
        wrong.get(key)
    assert bucket.objects() == {key: b"zip bytes"}


def test_archive_and_restore_through_s3(pg_engine: Engine, pg_url: str, s3_bucket: S3Bucket) -> None:
    scenario = seed(pg_engine, NOW)
    before = snapshot(pg_engine, RUN_TABLES)
    settings = s3_bucket.archive_settings()
    run_job(archive_workflow_runs, make_context(pg_url, **settings), archive(scenario, None, delete_after_archive=True))
    expected = archivable(scenario)
    assert s3_bucket.stored_keys() == {key_of(scenario, rid) for rid in expected}
    restored = run_job(restore_workflow_runs, make_context(pg_url, **settings), restore(None))
    assert restored.details["runs_restored"] == len(expected)
    assert snapshot(pg_engine, RUN_TABLES) == before


def test_local_store_rejects_keys_that_leave_the_directory(tmp_path: Path) -> None:
    store = fs_storage(tmp_path / "archives", create=True)
    store.check()
    for key in ("../x.zip", "/etc/x.zip", "a//b.zip", "a/./b.zip", ""):
        with pytest.raises(StorageError, match="invalid object key"):
            store.put(key, b"x")
    store.put("a/b/c.zip", b"x")
    assert store.get("a/b/c.zip") == b"x" and store.exists("a/b/c.zip") and not store.exists("a/b/d.zip")


def test_jsonl_is_stable() -> None:
    from datetime import datetime

    row = {"b": 1.5, "a": UUID("00000000-0000-0000-0000-000000000001"), "c": datetime(2026, 1, 2, 3, 4, 5, 6), "d": "é"}
    assert (
        to_jsonl([row, {}])
        == (
            '{"a":"00000000-0000-0000-0000-000000000001","b":1.5,"c":"2026-01-02T03:04:05.000006","d":"é"}\n{}\n'
        ).encode()
    )
    assert to_jsonl([]) == b""


# --- SQLite and the CLI -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sqlite_round_trip(sqlite_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(sqlite_url)
    scenario = seed(engine, NOW)
    before = snapshot(engine, RUN_TABLES)
    dry = run_job(
        archive_workflow_runs,
        make_context(sqlite_url),
        archive(scenario, None, run=RunOptions(dry_run=True), delete_after_archive=True),
    )
    real = run_job(
        archive_workflow_runs, make_context(sqlite_url), archive(scenario, tmp_path, delete_after_archive=True)
    )
    assert dry.tables == real.tables and real.details["runs_archived"] == len(archivable(scenario))
    assert ids(engine, t.workflow_runs) == {str(row["id"]) for row in before["workflow_runs"]} - archivable(scenario)
    run_job(restore_workflow_runs, make_context(sqlite_url), restore(tmp_path))
    assert snapshot(engine, RUN_TABLES) == before
    engine.dispose()


@pytest.mark.slow
def test_cli_json(sqlite_url: str, tmp_path: Path) -> None:
    from tests.test_cli import run_cli

    engine = sa.create_engine(sqlite_url)
    seed(engine, NOW)
    archives = tmp_path / "archives"
    base = ["--database-url", sqlite_url, "--archive-dir", str(archives)]
    refused = run_cli(["archive-workflow-runs", *base, "--delete-after-archive", "--days", "30"])
    assert refused.returncode == 2 and "--yes" in refused.stderr

    result = run_cli(["archive-workflow-runs", *base, "--days", "30", "--json", "--delete-after-archive", "--yes"])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["job"] == "archive-workflow-runs" and summary["details"]["runs_archived"] > 0
    assert summary["tables"]["workflow_runs"] == summary["details"]["runs_archived"]
    assert len(list(archives.rglob("archive.v1.0.zip"))) == summary["details"]["runs_archived"]
    with engine.connect() as conn:
        run_ids = sorted({str(v) for v in conn.execute(sa.select(t.workflow_archive_logs.c.workflow_run_id)).scalars()})

    # restore one run by id (exit 0), then a corrupted one (exit 1, failures in the JSON)
    one = run_cli(["restore-workflow-runs", *base, "--run-id", run_ids[0], "--json", "--yes"])
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["details"]["runs_restored"] == 1
    bad = next(path for path in archives.rglob("archive.v1.0.zip") if f"workflow_run_id={run_ids[1]}" in str(path))
    bad.write_bytes(b"garbage")
    failed = run_cli(["restore-workflow-runs", *base, "--run-id", f"{run_ids[1]},{run_ids[2]}", "--json", "--yes"])
    assert failed.returncode == 1
    body = json.loads(failed.stdout)
    assert body["outcome"] == "failed" and body["details"]["runs_restored"] == 1
    assert [item["run_id"] for item in body["details"]["failures"]] == [run_ids[1]]
    assert "could not be restored" in failed.stderr

    usage = run_cli(["restore-workflow-runs", *base, "--dry-run"])
    assert usage.returncode == 2 and "--run-id" in usage.stderr
    engine.dispose()
