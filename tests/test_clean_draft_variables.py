"""clean-draft-variables against a real PostgreSQL (and SQLite), Dify's storage on a real file system (opendal
fs) or an S3-protocol stub: the rows Dify's command deletes, objects before rows, failures keep the rows. The
rows and objects of a real run, and the dry run, are checked on MariaDB too."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.engine.options import RunOptions
from difymaint.jobs import JOBS, clean_draft_variables
from difymaint.jobs.clean_draft_variables import CleanDraftVariablesParams, DraftFilesLeft
from difymaint.jobs.execute import run_job
from tests.conftest import make_context
from tests.s3_server import S3Bucket
from tests.test_cli import invoke_assert_code

pytestmark = pytest.mark.postgres

TABLES = ("workflow_draft_variables", "workflow_draft_variable_files", "upload_files")


@dataclass
class Seeded:
    kept: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in TABLES})
    gone: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in TABLES})
    objects_gone: set[str] = field(default_factory=set)
    objects_kept: set[str] = field(default_factory=set)
    bytes: int = 0
    keys: dict[str, str] = field(default_factory=dict)  # case name → storage key


def seed(engine: Engine, root: Path | None, *, bulk: int = 9) -> Seeded:
    """A live app and three deleted ones (no apps row), with every shape of offloaded file."""
    seeded = Seeded()
    tenant = t.new_id()
    live = t.new_id()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(t.apps).values(id=live, tenant_id=tenant, name="a", mode="workflow", enable_site=1, enable_api=1)
        )

        def upload(key: str, size: int, *, stored: bool = True) -> str:
            upload_id = t.new_id()
            conn.execute(
                sa.insert(t.upload_files).values(
                    id=upload_id,
                    tenant_id=tenant,
                    storage_type="opendal",
                    key=key,
                    name="value.json",
                    size=size,
                    extension="json",
                    created_by=t.new_id(),
                )
            )
            if stored and root is not None:
                path = root / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x" * size)
            return upload_id

        def var_file(app_id: str, upload_id: str, size: int) -> str:
            file_id = t.new_id()
            conn.execute(
                sa.insert(t.workflow_draft_variable_files).values(
                    id=file_id,
                    tenant_id=tenant,
                    app_id=app_id,
                    user_id=t.new_id(),
                    upload_file_id=upload_id,
                    size=size,
                    value_type="object",
                )
            )
            return file_id

        def variable(app_id: str, name: str, file_id: str | None = None) -> str:
            variable_id = t.new_id()
            conn.execute(
                sa.insert(t.workflow_draft_variables).values(
                    id=variable_id,
                    app_id=app_id,
                    node_id="llm",
                    name=name,
                    selector=f'["llm", "{name}"]',
                    value_type="object",
                    value="{}",
                    file_id=file_id,
                )
            )
            return variable_id

        def case(app_id: str, name: str, *, orphan: bool, file: str = "none", size: int = 100) -> None:
            """file: none | stored | object_missing | upload_missing | dangling (file_id points at nothing)."""
            where = seeded.gone if orphan else seeded.kept
            file_id = upload_id = None
            key = f"workflow_draft_variables/{app_id}/{name}.json"
            if file in ("stored", "object_missing"):
                upload_id = upload(key, size, stored=file == "stored")
                file_id = var_file(app_id, upload_id, size)
                where["upload_files"].add(upload_id)
                where["workflow_draft_variable_files"].add(file_id)
                seeded.keys[name] = key
                if file == "stored":
                    (seeded.objects_gone if orphan else seeded.objects_kept).add(key)
                if orphan:
                    seeded.bytes += size
            elif file == "upload_missing":
                file_id = var_file(app_id, t.new_id(), size)
                where["workflow_draft_variable_files"].add(file_id)
            elif file == "dangling":
                file_id = t.new_id()
            where["workflow_draft_variables"].add(variable(app_id, name, file_id))

        for name, file in (("plain", "none"), ("big", "stored")):
            case(live, f"live_{name}", orphan=False, file=file)
        first, second, third = sorted(t.new_id() for _ in range(3))
        for i in range(4):
            case(first, f"first_plain_{i}", orphan=True)
        for i, size in enumerate((1000, 2000, 3000)):
            case(first, f"first_stored_{i}", orphan=True, file="stored", size=size)
        case(first, "first_object_missing", orphan=True, file="object_missing", size=50)
        case(first, "first_upload_missing", orphan=True, file="upload_missing")
        case(first, "first_dangling", orphan=True, file="dangling")
        for i in range(bulk):
            case(second, f"second_{i}", orphan=True, file="stored" if i % 3 == 0 else "none", size=10)
        case(third, "third_stored", orphan=True, file="stored", size=7)
        # Rows of a deleted app that no variable points at: Dify leaves them, so does difymaint.
        seeded.kept["upload_files"].add(stray := upload(f"workflow_draft_variables/{first}/stray.json", 5))
        seeded.kept["workflow_draft_variable_files"].add(var_file(first, stray, 5))
        seeded.objects_kept.add(f"workflow_draft_variables/{first}/stray.json")
    return seeded


def ids(engine: Engine) -> dict[str, set[str]]:
    with engine.connect() as conn:
        return {name: {str(i) for i in conn.execute(sa.text(f"SELECT id FROM {name}")).scalars()} for name in TABLES}


def objects(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def ctx_for(url: str, root: Path | None, **settings: Any) -> Any:
    storage = {"STORAGE_TYPE": "opendal", "OPENDAL_SCHEME": "fs", "OPENDAL_FS_ROOT": str(root or "/nonexistent/st")}
    return make_context(url, DIFYMAINT_TARGET_BATCH_MS=0, **(storage | settings))


def params(**run: Any) -> CleanDraftVariablesParams:
    return CleanDraftVariablesParams(run=RunOptions(**run))


def expected_counts(seeded: Seeded) -> dict[str, int]:
    return {name: len(seeded.gone[name]) for name in TABLES}


def test_orphans_go_with_the_files_they_point_at_and_nothing_else(
    db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    seeded = seed(db_engine, tmp_path)
    before = ids(db_engine)
    summary = run_job(clean_draft_variables, ctx_for(db_url, tmp_path), params(batch_size=4))
    assert summary.outcome is Outcome.DONE and summary.exit_code == 0
    assert (
        summary.tables
        == expected_counts(seeded)
        == {
            "workflow_draft_variables": 20,
            "workflow_draft_variable_files": 9,
            "upload_files": 8,
        }
    )
    after = ids(db_engine)
    for name in TABLES:
        assert after[name] == before[name] - seeded.gone[name], name
        assert seeded.kept[name] <= after[name], name
    assert objects(tmp_path) == seeded.objects_kept  # the live app's and the stray file's objects stay
    details = summary.details
    assert details["apps"] == 3 and details["bytes"] == seeded.bytes
    assert details["objects_deleted"] == len(seeded.objects_gone) + 1  # + the one already missing
    assert details["variables_left"] == 0 and summary.rows_remaining == 0
    again = run_job(clean_draft_variables, ctx_for(db_url, tmp_path), params())
    assert again.tables == dict.fromkeys(TABLES, 0) and again.details["apps"] == 0


def test_dry_run_counts_rows_and_bytes_and_touches_no_storage(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    seeded = seed(db_engine, tmp_path)
    before, stored = ids(db_engine), objects(tmp_path)
    dry = run_job(clean_draft_variables, ctx_for(db_url, tmp_path), params(dry_run=True, batch_size=3))
    assert ids(db_engine) == before and objects(tmp_path) == stored
    real = run_job(clean_draft_variables, ctx_for(db_url, tmp_path), params(batch_size=3))
    assert dry.tables == real.tables == expected_counts(seeded)
    assert dry.details["bytes"] == real.details["bytes"] == seeded.bytes
    assert dry.details["storage"] == "not needed"


def test_an_object_that_cannot_be_deleted_keeps_its_rows_and_exits_1(
    pg_engine: Engine, pg_url: str, tmp_path: Path
) -> None:
    seeded = seed(pg_engine, tmp_path)
    stuck = tmp_path / seeded.keys["first_stored_1"]
    stuck.unlink()
    (stuck / "child").mkdir(parents=True)  # a non-empty directory where the object is: unlink fails for real
    with pytest.raises(DraftFilesLeft) as left:
        run_job(clean_draft_variables, ctx_for(pg_url, tmp_path), params(batch_size=4))
    summary = left.value.difymaint_summary  # type: ignore[attr-defined]
    assert summary.outcome is Outcome.FAILED and summary.exit_code == 1
    assert summary.details["variables_left"] == 1 and "1 draft variable(s) stay" in left.value.message
    assert summary.tables["workflow_draft_variables"] == 19
    (failure,) = summary.details["failures"]
    assert failure["key"] == seeded.keys["first_stored_1"]
    with pg_engine.connect() as conn:
        row = conn.execute(
            sa.select(t.workflow_draft_variables.c.file_id).where(t.workflow_draft_variables.c.name == "first_stored_1")
        ).one()
        assert conn.execute(
            sa.select(t.workflow_draft_variable_files.c.id).where(t.workflow_draft_variable_files.c.id == row.file_id)
        ).one()
    (stuck / "child").rmdir()
    stuck.rmdir()  # fixed: the next run finds the rows and finishes (the object is gone now)
    final = run_job(clean_draft_variables, ctx_for(pg_url, tmp_path), params())
    assert final.outcome is Outcome.DONE and final.tables == {
        "workflow_draft_variables": 1,
        "workflow_draft_variable_files": 1,
        "upload_files": 1,
    }


def test_storage_out_of_reach_lists_keys_in_the_manifest(pg_engine: Engine, pg_url: str, tmp_path: Path) -> None:
    seeded = seed(pg_engine, None)
    with pytest.raises(DraftFilesLeft, match="could not be removed"):  # no manifest: file variables stay
        run_job(clean_draft_variables, ctx_for(pg_url, None), params())
    manifest = tmp_path / "orphans.jsonl"
    listed = run_job(clean_draft_variables, ctx_for(pg_url, None), CleanDraftVariablesParams(orphan_manifest=manifest))
    assert listed.outcome is Outcome.DONE
    after = ids(pg_engine)
    assert all(not (seeded.gone[name] & after[name]) for name in TABLES)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {line["key"] for line in lines} == seeded.objects_gone | {seeded.keys["first_object_missing"]}
    assert all(line["source"] == "workflow_draft_variable_files.upload_file_id" for line in lines)
    assert "not mounted" in listed.details["storage"] and listed.details["objects_listed"] == len(lines)


def test_s3_storage(pg_engine: Engine, pg_url: str, s3_bucket: S3Bucket) -> None:
    seeded = seed(pg_engine, None)
    for key in seeded.objects_gone | seeded.objects_kept:
        s3_bucket.put(key, b"{}")
    summary = run_job(clean_draft_variables, ctx_for(pg_url, None, **s3_bucket.dify_storage_settings()), params())
    assert s3_bucket.stored_keys() == seeded.objects_kept
    assert summary.tables == expected_counts(seeded)


def test_max_apps_and_the_cli(pg_engine: Engine, pg_url: str, tmp_path: Path) -> None:
    seed(pg_engine, tmp_path)
    storage = {"STORAGE_TYPE": "opendal", "OPENDAL_SCHEME": "fs", "OPENDAL_FS_ROOT": str(tmp_path)}
    base = ["clean-draft-variables", "--database-url", pg_url, "--json"]
    refused = invoke_assert_code([*base, "--dry-run", "--batch-size", "0"], 2)
    assert "--batch-size" in refused.stderr
    one = json.loads(invoke_assert_code([*base, "--yes", "--max-apps", "1"], 0, env=storage).stdout)
    assert one["details"]["apps"] == 1 and one["tables"]["workflow_draft_variables"] == 10
    assert one["tables_meaning"] == "deleted" and one["rows_remaining"] == 10
    rest = json.loads(invoke_assert_code([*base, "--yes", "--batch-size", "2"], 0, env=storage).stdout)
    assert rest["details"]["apps"] == 2 and rest["tables"]["workflow_draft_variables"] == 10


def test_registry_entry_is_manual() -> None:
    info = JOBS["clean-draft-variables"]
    assert info.scheduled is False and info.switches == () and info.tables == TABLES
    assert info.batch is not None and info.batch.default == 1000


def test_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(sqlite_url)
    root = tmp_path / "storage"  # the database file lives in tmp_path itself
    root.mkdir()
    seeded = seed(engine, root, bulk=3)
    dry = run_job(clean_draft_variables, ctx_for(sqlite_url, root), params(dry_run=True, batch_size=2))
    real = run_job(clean_draft_variables, ctx_for(sqlite_url, root), params(batch_size=2))
    assert dry.tables == real.tables == expected_counts(seeded)
    assert objects(root) == seeded.objects_kept
    engine.dispose()
