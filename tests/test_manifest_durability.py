"""The orphan manifest loses no storage key when the process is killed right after a batch commits.

The fault hook (DIFYMAINT_TEST_CRASH_AFTER_COMMIT=1) SIGKILLs the process after its first batch commit and
before the manifest confirms the batch: the worst moment. Runs are repeated until the backlog is gone; after
each crash, every upload file whose message_files row is gone must be listed in the manifest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from difymaint.dify import tables as t
from difymaint.engine.manifest import CRASH_AFTER_COMMIT_ENV, OrphanManifest, batches_path, read_manifest
from tests.conftest import NOW
from tests.scenario import seed
from tests.test_cli import CLEAN_ENV


def _file_keys_by_message_file(engine: sa.Engine) -> dict[str, str]:
    mf, uf = t.message_files, t.upload_files
    with engine.connect() as conn:
        rows = conn.execute(sa.select(mf.c.id, uf.c.key).join(uf, uf.c.id == mf.c.upload_file_id)).all()
    return {str(row.id): row.key for row in rows}


def _run(pg_url: str, manifest: Path, *, crash: bool) -> subprocess.CompletedProcess[str]:
    env = {**CLEAN_ENV, "NO_COLOR": "1", "DIFYMAINT_DATABASE_URL": pg_url, "DIFYMAINT_USE_REDIS": "false"}
    if crash:
        env[CRASH_AFTER_COMMIT_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "difymaint", "clean-messages", "--yes", "--json", "--batch-size", "2"]
        + ["--sleep-ms", "0", "--orphan-manifest", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.postgres
def test_kill_9_after_commit_loses_no_storage_key(pg_engine: Any, pg_url: str, tmp_path: Path) -> None:
    seed(pg_engine, NOW)
    manifest = tmp_path / "orphans.jsonl"
    files = _file_keys_by_message_file(pg_engine)
    assert files, "the scenario must have message files"
    crashes = 0
    seen_uncertain = False
    for _ in range(40):
        result = _run(pg_url, manifest, crash=True)
        if result.returncode == 0:
            break  # nothing left to commit: the hook never fired
        assert result.returncode == -9, (result.returncode, result.stderr)
        crashes += 1
        remaining = _file_keys_by_message_file(pg_engine)
        gone = {key for mf_id, key in files.items() if mf_id not in remaining}
        report = read_manifest(manifest)
        listed = {record["key"] for record in report.orphaned()}
        assert gone <= listed, (
            f"crash {crashes}: keys of committed deletions missing from the manifest: {gone - listed}"
        )
        seen_uncertain |= bool(report.uncertain)
    else:
        raise AssertionError("the backlog never drained")
    assert crashes >= 2
    assert seen_uncertain  # some crash did land between a commit and its confirmation
    # Nothing left: every message file that went is listed; a final clean run confirms its batches.
    final = _run(pg_url, manifest, crash=False)
    assert final.returncode == 0, final.stderr
    gone = {key for mf_id, key in files.items() if mf_id not in _file_keys_by_message_file(pg_engine)}
    assert gone and gone <= {record["key"] for record in read_manifest(manifest).orphaned()}


def test_manifest_states(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    manifest = OrphanManifest(path, job="j", dry_run=False)
    manifest.stage([{"id": "1", "key": "a"}], source="s")
    manifest.commit()
    manifest.stage([{"id": "2", "key": "b"}], source="s")
    manifest.rollback()
    manifest.stage([{"id": "3", "key": "c"}], source="t")  # "crash": never confirmed
    manifest.close()
    assert manifest.details()["files"] == 1 and manifest.by_source == {"s": 1}
    with open(path, "a") as handle:
        handle.write('{"id": "4", "key": "d", "source": "s"}\n')  # a line of an older version: no batch id
        handle.write('{"id": "5", "ke')  # torn by a crash mid-write
    report = read_manifest(path)
    assert [r["key"] for r in report.committed] == ["a", "d"]
    assert [r["key"] for r in report.rolled_back] == ["b"]
    assert [r["key"] for r in report.uncertain] == ["c"]
    assert report.by_source() == {"s": 2, "t": 1}
    states = [json.loads(line)["state"] for line in batches_path(path).read_text().splitlines()]
    assert states == ["committed", "rolled_back"]
