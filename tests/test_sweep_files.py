"""sweep-files and storage-report against a real PostgreSQL, a real directory (OpenDAL fs) and a real S3 server:
every referrer family keeps its file, unreferenced and stray files go with exactly their bytes, young files and
other prefixes stay, the dry run equals the real run, a stopped run resumes, a failed delete keeps its rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.summary import Outcome, RunSummary
from difymaint.dify import tables as t
from difymaint.engine.manifest import OrphanManifest
from difymaint.engine.options import RunOptions
from difymaint.jobs import storage_report, sweep_files
from difymaint.jobs.execute import run_job
from difymaint.jobs.sweep_files import FAIL_DELETE_ENV, SweepFilesParams
from tests.conftest import FixedClock, make_context
from tests.files_world import File, FilesWorld, file_mapping, file_ref
from tests.s3_server import S3Bucket
from tests.test_cli import run_cli

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 24, 12, 0, 0)  # naive UTC: the clock the jobs get in the fs tests


@pytest.fixture
def world(pg_engine: Engine, tmp_path: Path) -> FilesWorld:
    root = tmp_path / "storage"
    root.mkdir()
    return FilesWorld(pg_engine, NOW, root=root)


def sweep(world: FilesWorld, pg_url: str, now: datetime | None = None, **params: Any) -> RunSummary:
    run = params.pop("run", RunOptions(batch_size=params.pop("batch_size", 500), dry_run=params.pop("dry_run", False)))
    ctx = make_context(
        pg_url,
        clock=FixedClock((now or world.now).replace(tzinfo=UTC)),
        DIFYMAINT_TARGET_BATCH_MS=0,
        **world.settings(),
    )
    return run_job(sweep_files, ctx, SweepFilesParams(run=run, **params))


# --- one test per referrer family ---------------------------------------------------------------------------

Family = Callable[[FilesWorld, File], None]


def _message_files_upload(w: FilesWorld, f: File) -> None:
    w.message_file(upload_file_id=f.id)


def _message_files_tool_id(w: FilesWorld, f: File) -> None:
    w.message_file(upload_file_id=f.id)  # transfer_method tool_file: the tool file's id in upload_file_id


def _message_files_url(w: FilesWorld, f: File) -> None:
    w.message_file(url=f"https://dify.example/files/tools/{f.id}.png?timestamp=1&nonce=n&sign=s")


def _answer_file_preview(w: FilesWorld, f: File) -> None:
    w.message(answer=f"![x](https://dify.example/files/{f.id}/file-preview?timestamp=1&nonce=n&sign=s)")


def _segment_image_preview(w: FilesWorld, f: File) -> None:
    w.segment(f"before 0.10: ![image](/files/{f.id}/image-preview)")


def _child_chunk(w: FilesWorld, f: File) -> None:
    dataset, document = w.dataset_rows()
    w.insert(
        t.child_chunks,
        tenant_id=w.tenant,
        dataset_id=dataset,
        document_id=document,
        segment_id=t.new_id(),
        position=1,
        content=f"![](/files/{f.id}/file-preview)",
        word_count=1,
        created_by=w.account,
    )


def _inputs_related_id(w: FilesWorld, f: File) -> None:
    w.message(inputs={"photo": file_mapping(related_id=f.id)})


def _conversation_inputs(w: FilesWorld, f: File) -> None:
    w.message(conversation_inputs={"doc": file_mapping(upload_file_id=f.id)})


def _node_outputs_tool_file_id(w: FilesWorld, f: File) -> None:
    w.node_execution(outputs=json.dumps({"files": [file_mapping(tool_file_id=f.id, transfer_method="tool_file")]}))


def _run_inputs_reference(w: FilesWorld, f: File) -> None:
    w.run_row(inputs=json.dumps({"sys.files": [file_mapping(reference=f.id)]}))


def _draft_value_file_ref(w: FilesWorld, f: File) -> None:
    w.insert(
        t.workflow_draft_variables,
        app_id=t.new_id(),
        node_id="n",
        name="v",
        selector='["n", "v"]',
        value_type="file",
        value=json.dumps(file_mapping(reference=file_ref(f.id))),
    )


def _offload(w: FilesWorld, f: File) -> None:
    w.insert(
        t.workflow_node_execution_offload,
        tenant_id=w.tenant,
        app_id=t.new_id(),
        node_execution_id=t.new_id(),
        type="outputs",
        file_id=f.id,
    )


def _draft_variable_file(w: FilesWorld, f: File) -> None:
    w.insert(
        t.workflow_draft_variable_files, tenant_id=w.tenant, app_id=t.new_id(), user_id=w.account, upload_file_id=f.id
    )


def _attachment(w: FilesWorld, f: File) -> None:
    dataset, document = w.dataset_rows()
    w.insert(
        t.segment_attachment_bindings,
        tenant_id=w.tenant,
        dataset_id=dataset,
        document_id=document,
        segment_id=t.new_id(),
        attachment_id=f.id,
    )


def _dataset_query_image(w: FilesWorld, f: File) -> None:
    w.insert(
        t.dataset_queries,
        dataset_id=t.new_id(),
        content=json.dumps([{"content_type": "image_query", "content": f.id}]),
        source="app",
        created_by_role="account",
        created_by=w.account,
    )


def _document_source(w: FilesWorld, f: File) -> None:
    w.insert(
        t.documents,
        tenant_id=w.tenant,
        dataset_id=t.new_id(),
        position=1,
        data_source_type="upload_file",
        data_source_info=json.dumps({"upload_file_id": f.id}),
        batch="b",
        name="d",
        created_from="web",
        created_by=w.account,
    )


def _avatar(w: FilesWorld, f: File) -> None:
    w.insert(t.accounts, name="a", email="a@example.com", avatar=f.id)


def _app_icon(w: FilesWorld, f: File) -> None:
    w.app(icon_type="image", icon=f.id)


def _site_icon(w: FilesWorld, f: File) -> None:
    w.insert(t.sites, app_id=t.new_id(), title="s", icon_type="image", icon=f.id)


def _webapp_logo(w: FilesWorld, f: File) -> None:
    w.insert(t.tenants, name="ws", custom_config=json.dumps({"replace_webapp_logo": f.id}))


def _archived_offload(w: FilesWorld, f: File) -> None:
    """An offload payload of a run that was archived (its offload row now lives only in the archive)."""
    w.insert(
        t.workflow_archive_logs,
        tenant_id=w.tenant,
        app_id=t.new_id(),
        workflow_id=t.new_id(),
        workflow_run_id=t.new_id(),
        created_by_role="account",
        created_by=w.account,
        run_version="1",
        run_status="succeeded",
        run_triggered_from="app-run",
        run_created_at=w.now - timedelta(hours=49),
        run_finished_at=w.now - timedelta(hours=47),
    )


def _unknown_table(w: FilesWorld, f: File) -> None:
    """A table a newer Dify adds, with a column named like a file id: scanned (and named in a warning)."""
    with w.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE future_things (id uuid PRIMARY KEY, cover_file_id uuid)"))
        conn.execute(sa.text("INSERT INTO future_things VALUES (gen_random_uuid(), :f)"), {"f": f.id})


FAMILIES: dict[str, tuple[str, Family]] = {
    "message_files.upload_file_id": ("upload", _message_files_upload),
    "message_files.upload_file_id (tool file)": ("tool", _message_files_tool_id),
    "message_files.url /files/tools/{id}.ext": ("tool", _message_files_url),
    "messages.answer /files/{id}/file-preview": ("upload", _answer_file_preview),
    "document_segments.content /files/{id}/image-preview": ("upload", _segment_image_preview),
    "child_chunks.content": ("upload", _child_chunk),
    "messages.inputs related_id": ("upload", _inputs_related_id),
    "conversations.inputs upload_file_id": ("upload", _conversation_inputs),
    "workflow_node_executions.outputs tool_file_id": ("tool", _node_outputs_tool_file_id),
    "workflow_runs.inputs reference": ("upload", _run_inputs_reference),
    "workflow_draft_variables.value dify-file-ref": ("tool", _draft_value_file_ref),
    "workflow_node_execution_offload.file_id": ("upload", _offload),
    "workflow_draft_variable_files.upload_file_id": ("upload", _draft_variable_file),
    "segment_attachment_bindings.attachment_id": ("upload", _attachment),
    "dataset_queries.content image_query": ("upload", _dataset_query_image),
    "documents.data_source_info upload_file_id": ("upload", _document_source),
    "accounts.avatar": ("upload", _avatar),
    "apps.icon": ("upload", _app_icon),
    "sites.icon": ("upload", _site_icon),
    "tenants.custom_config replace_webapp_logo": ("upload", _webapp_logo),
    "workflow_archive_logs (archived offload)": ("upload", _archived_offload),
    "a newer table's *_file_id column": ("upload", _unknown_table),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_referenced_file_is_kept(world: FilesWorld, pg_url: str, family: str) -> None:
    kind, refer = FAMILIES[family]
    name = "node_execution_abc_outputs.json" if "archived" in family else "file.png"
    referenced = world.upload(name=name) if kind == "upload" else world.tool()
    control = world.upload() if kind == "upload" else world.tool()  # the same, unreferenced: it goes
    refer(world, referenced)
    summary = sweep(world, pg_url)
    assert referenced.key in world.stored() and control.key not in world.stored()
    table = t.upload_files if kind == "upload" else t.tool_files
    assert referenced.id in world.rows(table) and control.id not in world.rows(table)
    assert summary.details["objects_deleted"] == 1 and summary.tables[table.name] == 1
    if "newer table" in family:
        assert any("future_things.cover_file_id" in warning for warning in summary.warnings)


# --- what goes and what stays ----------------------------------------------------------------------------------


def build_mixed(world: FilesWorld) -> dict[str, Any]:
    """Every case at once: what a sweep must delete (with its bytes) and what it must leave."""
    gone = {
        "old unreferenced upload": world.upload(size=1111),
        "old unreferenced image_files upload": world.upload(size=2222, prefix="image_files"),
        "old unreferenced tool file": world.tool(size=3333),
    }
    stray_key = f"upload_files/{world.tenant}/stray.bin"
    world.put(stray_key, 4444, age_h=30)
    kept = {
        "young upload": world.upload(age_h=2),
        "old row, young object": world.upload(object_age_h=2),
        "used recently": world.upload(used_age_h=3),
        "young tool object": world.tool(object_age_h=5),
        "referenced": world.upload(),
    }
    world.message_file(upload_file_id=kept["referenced"].id)
    young_stray = f"tools/{world.tenant}/young.bin"
    world.put(young_stray, 10, age_h=1)
    untouched = [
        f"privkeys/{world.tenant}/private.pem",
        f"upload_files_backup/{world.tenant}/old.png",
        f"keyword_files/{world.tenant}/x.txt",
        "workflow-state-0a1b.json",
        "upload_files.txt",
    ]
    for key in untouched:
        world.put(key, 50, age_h=1000)
    missing = world.upload(with_object=False)  # a row whose object is gone: reported, kept
    return {
        "gone": gone,
        "kept": kept,
        "stray": stray_key,
        "young_stray": young_stray,
        "untouched": untouched,
        "missing": missing,
        "bytes": sum(f.size for f in gone.values()) + 4444,
    }


def test_sweep_deletes_exactly_the_unreferenced_and_stray_files(world: FilesWorld, pg_url: str) -> None:
    case = build_mixed(world)
    before_keys = world.stored()
    dry = sweep(world, pg_url, dry_run=True, batch_size=3)
    assert world.stored() == before_keys  # a dry run changes nothing
    assert len(world.rows(t.upload_files)) == 7
    real = sweep(world, pg_url, batch_size=3)
    expected_gone = {f.key for f in case["gone"].values()} | {case["stray"]}
    assert world.stored() == before_keys - expected_gone
    for key in case["untouched"]:
        assert key in world.stored()  # privkeys/ and every other prefix
    assert case["young_stray"] in world.stored()
    assert {f.id for f in case["kept"].values() if f.kind == "upload"} | {case["missing"].id} == world.rows(
        t.upload_files
    )
    assert case["kept"]["young tool object"].id in world.rows(t.tool_files)
    # counts and bytes: the real run's equal the dry run's, and the bytes are the stored objects' sizes
    assert real.tables == dry.tables == {"upload_files": 2, "tool_files": 1}
    assert real.details["objects_deleted"] == dry.details["objects_deleted"] == 4
    assert real.details["bytes_freed"] == dry.details["bytes_freed"] == case["bytes"]
    assert real.details["strays_deleted"] == 1
    assert real.details["rows_without_object"]["count"] == 1
    assert real.details["rows_without_object"]["examples"] == [case["missing"].key]
    assert real.outcome == Outcome.DONE and real.rows_remaining == 0
    again = sweep(world, pg_url)
    assert again.tables == {"upload_files": 0, "tool_files": 0}
    assert again.details["objects_deleted"] == 0 and again.details["bytes_freed"] == 0


def test_sweep_on_s3(pg_engine: Engine, pg_url: str, s3_bucket: S3Bucket) -> None:
    """The same on a real S3 server. S3 stamps objects with its own time, so the job's clock runs two days ahead
    (everything just written is 48 h old) and the young ones are rows, not objects."""
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0) + timedelta(hours=48)
    world = FilesWorld(pg_engine, now, bucket=s3_bucket)
    gone = [world.upload(size=1500), world.tool(size=2500)]
    world.put(f"image_files/{world.tenant}/stray.png", 3500)
    referenced = world.upload()
    world.message(answer=f"/files/{referenced.id}/file-preview")
    young = world.upload(age_h=1)
    world.put(f"privkeys/{world.tenant}/private.pem", 10)
    world.put(f"upload_files_backup/{world.tenant}/x.png", 10)
    before = world.stored()
    dry = sweep(world, pg_url, dry_run=True, batch_size=2)
    assert world.stored() == before
    real = sweep(world, pg_url, batch_size=2)
    assert world.stored() == before - {f.key for f in gone} - {f"image_files/{world.tenant}/stray.png"}
    assert {referenced.key, young.key, f"privkeys/{world.tenant}/private.pem"} <= world.stored()
    assert real.details["bytes_freed"] == dry.details["bytes_freed"] == 1500 + 2500 + 3500
    assert real.tables == dry.tables == {"upload_files": 1, "tool_files": 1}


def test_a_stopped_run_resumes_where_it_stopped(world: FilesWorld, pg_url: str) -> None:
    files = [world.upload(size=100 + i) for i in range(5)]
    first = sweep(world, pg_url, run=RunOptions(batch_size=2, max_batches=1))
    assert first.outcome == Outcome.PARTIAL and first.exit_code == 4
    assert first.details["objects_deleted"] == 2 and first.details["listing"]["complete"] is False
    stopped_at = first.details["listing"]["stopped_at"]
    assert stopped_at == sorted(f.key for f in files)[1]
    second = sweep(world, pg_url, run=RunOptions(batch_size=2, max_batches=1))
    assert second.details["listing"]["started_after"] == stopped_at  # continued, not restarted
    third = sweep(world, pg_url, run=RunOptions(batch_size=2))
    assert third.outcome == Outcome.DONE and third.details["listing"]["complete"] is True
    assert first.details["objects_deleted"] + second.details["objects_deleted"] + third.details["objects_deleted"] == 5
    assert not any(key.startswith("upload_files/") for key in world.stored())
    fresh = sweep(world, pg_url)  # a complete pass cleared the position: the next run starts from the top
    assert fresh.details["listing"]["started_after"] is None


def test_sigterm_stops_between_pages_and_keeps_the_position(world: FilesWorld, pg_url: str) -> None:
    files = sorted((world.upload(size=50) for _ in range(4)), key=lambda f: f.key)
    ctx = make_context(
        pg_url, clock=FixedClock(NOW.replace(tzinfo=UTC)), DIFYMAINT_TARGET_BATCH_MS=0, **world.settings()
    )
    ctx.batch_hooks.append(lambda run: ctx.stop.request(15))  # SIGTERM arrives during the first page
    summary = run_job(sweep_files, ctx, SweepFilesParams(run=RunOptions(batch_size=2)))
    assert summary.outcome == Outcome.INTERRUPTED and summary.exit_code == 143
    assert summary.details["objects_deleted"] == 2 and summary.details["listing"]["stopped_at"] == files[1].key
    assert world.rows(t.upload_files) == {f.id for f in files[2:]}
    resumed = sweep(world, pg_url, batch_size=2)
    assert resumed.details["listing"]["started_after"] == files[1].key and resumed.details["objects_deleted"] == 2


def test_a_failed_object_delete_keeps_its_rows(world: FilesWorld, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [world.upload(size=10 * (i + 1)) for i in range(4)]
    failing = sorted(files, key=lambda f: f.key)[1]
    monkeypatch.setenv(FAIL_DELETE_ENV, failing.key.rsplit("/", 1)[1])
    summary = sweep(world, pg_url, batch_size=4)
    assert world.rows(t.upload_files) == {failing.id} and world.stored() == {failing.key}
    assert [item["key"] for item in summary.details["delete_failures"]] == [failing.key]
    assert summary.tables["upload_files"] == 3
    assert summary.details["bytes_freed"] == sum(f.size for f in files if f is not failing)
    monkeypatch.delenv(FAIL_DELETE_ENV)
    assert sweep(world, pg_url).tables["upload_files"] == 1  # the next run takes it


def test_orphan_manifest_limits_the_sweep_to_its_keys(world: FilesWorld, pg_url: str, tmp_path: Path) -> None:
    released = [world.upload(size=300), world.upload(size=400)]
    other = world.upload()  # unreferenced too, but not in the manifest
    still_used = world.upload()
    world.message_file(upload_file_id=still_used.id)  # the manifest is re-checked: another row refers to it
    path = tmp_path / "orphans.jsonl"
    manifest = OrphanManifest(path, job="clean-messages", dry_run=False)
    manifest.write([{"id": f.id, "key": f.key} for f in [*released, still_used]], source="message_files")
    manifest.write([{"key": "workflow-state-1.json"}], source="workflow_pauses.state_object_key")
    manifest.close()
    summary = sweep(world, pg_url, orphan_manifests=(str(path),))
    assert world.rows(t.upload_files) == {other.id, still_used.id}
    assert summary.details["bytes_freed"] == 700
    assert summary.details["manifest"] == {"files": [str(path)], "keys": 3, "outside_prefixes": 1}


def test_file_retention_older_than(world: FilesWorld, pg_url: str) -> None:
    old_log_only = world.upload(age_h=24 * 40, role="end_user")
    world.message_file(upload_file_id=old_log_only.id, age_h=24 * 35)
    recent_log = world.upload(age_h=24 * 40, role="end_user")
    world.message_file(upload_file_id=recent_log.id, age_h=24 * 5)
    in_a_document = world.upload(age_h=24 * 40, role="end_user")
    world.segment(f"![](/files/{in_a_document.id}/file-preview)")
    by_an_account = world.upload(age_h=24 * 40, role="account")
    world.message_file(upload_file_id=by_an_account.id, age_h=24 * 35)
    plain = sweep(world, pg_url)
    assert plain.tables["upload_files"] == 0  # every one of them is referenced
    summary = sweep(world, pg_url, older_than_days=30, created_by_role="end_user")
    assert world.rows(t.upload_files) == {recent_log.id, in_a_document.id, by_an_account.id}
    assert summary.details["file_retention"] == {"older_than_days": 30, "created_by_role": "end_user"}
    assert sweep(world, pg_url, older_than_days=30).tables["upload_files"] == 1  # any role: the account's goes


def test_a_storage_that_is_not_this_difys_is_refused(world: FilesWorld, pg_url: str, tmp_path: Path) -> None:
    world.upload()
    world.put(f"upload_files/{world.tenant}/stray.bin", 10)
    other = tmp_path / "other"
    other.mkdir()
    (other / "upload_files").mkdir()
    (other / "upload_files" / "x.png").write_bytes(b"x")
    world.root = other
    from difymaint.core.errors import ConfigError

    with pytest.raises(ConfigError, match="pointing at this Dify's storage"):
        sweep(world, pg_url)
    assert (other / "upload_files" / "x.png").exists()


# --- storage-report ------------------------------------------------------------------------------------------


def test_storage_report(world: FilesWorld, pg_url: str) -> None:
    case = build_mixed(world)
    ctx = make_context(pg_url, clock=FixedClock(NOW.replace(tzinfo=UTC)), **world.settings())
    before = world.stored()
    summary = run_job(storage_report, ctx, storage_report.StorageReportParams())
    assert world.stored() == before
    d = summary.details
    uploads = [f for f in [*case["gone"].values(), *case["kept"].values()] if f.kind == "upload"]
    upload_prefix = [f for f in uploads if f.key.startswith("upload_files/")]
    assert d["prefixes"]["upload_files"] == {
        "count": len(upload_prefix) + 1,
        "bytes": sum(f.size for f in upload_prefix) + 4444,
    }
    assert d["prefixes"]["image_files"]["count"] == 1 and d["prefixes"]["tools"]["count"] == 3
    assert d["objects_without_row"] == {"count": 2, "bytes": 4444 + 10}
    assert d["rows_without_object"]["count"] == 1
    # unreferenced: every file row but the referenced one (any age), bytes of the objects they have
    assert d["unreferenced_rows"]["count"] == 8
    referenced = case["kept"]["referenced"]
    all_files = [*case["gone"].values(), *case["kept"].values()]
    assert d["unreferenced_rows"]["bytes"] == sum(f.size for f in all_files if f is not referenced)
    tables = {row["name"]: row for row in d["database"]["tables"]}
    assert "upload_files" in tables and tables["upload_files"]["live_tuples"] >= 0
    assert {"heap_bytes", "index_bytes", "toast_bytes", "dead_tuples", "last_autovacuum", "advice"} <= set(
        tables["upload_files"]
    )


# --- the command line ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["sweep-files", "--yes"], ["storage-report"]])
def test_an_unknown_storage_type_is_one_line_and_exit_2(pg_url: str, command: list[str], world: FilesWorld) -> None:
    world.upload(age_h=100)
    for storage_type in ("minio", "azure-blob"):
        result = run_cli(
            [*command, "--database-url", pg_url],
            env={"STORAGE_TYPE": storage_type, "DIFYMAINT_USE_REDIS": "false"},
        )
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and storage_type in result.stderr
        assert "Traceback" not in result.stderr
    assert len(world.rows(t.upload_files)) == 1 and len(world.stored()) == 1


def test_cli_json_and_the_switch(world: FilesWorld, pg_url: str) -> None:
    gone = world.upload(age_h=100, size=2048)
    env = {"DIFYMAINT_USE_REDIS": "false", **{k: str(v) for k, v in world.settings().items()}}
    scheduled = run_cli(["sweep-files", "--database-url", pg_url, "--scheduled", "--yes", "--json"], env=env)
    assert scheduled.returncode == 0 and json.loads(scheduled.stdout)["outcome"] == "disabled"
    assert gone.key in world.stored()  # off unless DIFYMAINT_ENABLE_SWEEP_FILES=true
    dry = run_cli(["sweep-files", "--database-url", pg_url, "--dry-run", "--json"], env=env)
    assert dry.returncode == 0, dry.stderr
    body = json.loads(dry.stdout)
    assert body["dry_run"] is True and body["tables"]["upload_files"] == 1
    assert body["details"]["objects_deleted"] == 1 and body["details"]["bytes_freed"] == 2048
    assert "Would remove 1 files (approx. 0.00 GB)" in dry.stderr
    on = {**env, "DIFYMAINT_ENABLE_SWEEP_FILES": "true"}
    real = run_cli(["sweep-files", "--database-url", pg_url, "--scheduled", "--yes", "--json"], env=on)
    assert real.returncode == 0, real.stderr
    summary = json.loads(real.stdout)
    assert summary["dry_run"] is False and summary["tables"] == {"upload_files": 1, "tool_files": 0}
    assert summary["details"]["bytes_freed"] == 2048 and "Removed 1 files (approx. 0.00 GB)" in real.stderr
    assert gone.key not in world.stored()
    stopped = run_cli(["sweep-files", "--database-url", pg_url, "--yes", "--json", "--max-batches", "1"], env=env)
    assert stopped.returncode == 0  # nothing left to do: a budget that was not needed is no partial run
    report = run_cli(["storage-report", "--database-url", pg_url], env=env)
    assert report.returncode == 0, report.stderr
    assert "upload_files" in report.stdout and "database" in report.stdout
