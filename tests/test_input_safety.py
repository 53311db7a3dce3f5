"""No input can widen a delete: an id filter that parses to nothing, or holds a non-id, is exit 2 and touches
nothing, for every command and every filter (flag or Dify setting)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.every_scenario import seed_every_scenario, snapshot
from tests.test_cli import invoke_assert_code

# (command, filter option, extra arguments a real run needs)
FILTERS: list[tuple[str, str, list[str]]] = [
    ("clean-messages", "--tenant-ids", []),
    ("clean-workflow-runs", "--tenant-ids", []),
    ("clean-workflow-logs", "--workflow-ids", []),
    ("clean-workflow-logs", "--app-ids", []),
    ("clean-unused-datasets", "--tenant-ids", ["--emit-index-removals", "{tmp}/removals.jsonl"]),
    ("notify-cleaned-documents", "--tenant-ids", ["--purge-notified-older-than", "1"]),
    ("archive-workflow-runs", "--tenant-ids", ["--archive-dir", "{tmp}/archive", "--delete-after-archive"]),
    (
        "restore-workflow-runs",
        "--tenant-ids",
        ["--archive-dir", "{tmp}/archive", "--start-from", "2020-01-01", "--end-before", "2021-01-01"],
    ),
    ("restore-workflow-runs", "--run-id", ["--archive-dir", "{tmp}/archive"]),
]
EMPTY_VALUES = ["", ",", " , ", ",,,", " "]
NOT_IDS = ["nope", "00000000-0000-0000-0000-00000000000g", "1,2", "'; DROP TABLE messages; --"]


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded once, copied for each test."""
    return seed_every_scenario(tmp_path_factory.mktemp("seeded") / "dify.sqlite")


@pytest.fixture
def seeded(seeded_template: Path, tmp_path: Path) -> str:
    copy = tmp_path / "dify.sqlite"
    shutil.copyfile(seeded_template, copy)
    return f"sqlite:///{copy}"


def _args(command: str, option: str, value: str, extra: list[str], url: str, tmp: Any) -> list[str]:
    return [command, "--database-url", url, "--yes", option, value, *(part.format(tmp=tmp) for part in extra)]


@pytest.mark.parametrize(("command", "option", "extra"), FILTERS, ids=[f"{c}{o}" for c, o, _ in FILTERS])
def test_empty_filter_is_usage_error_and_changes_nothing(
    seeded: str, tmp_path: Any, command: str, option: str, extra: list[str]
) -> None:
    before = snapshot(seeded)
    for value in EMPTY_VALUES:
        result = invoke_assert_code(_args(command, option, value, extra, seeded, tmp_path), 2)
        lines = result.stderr.strip().splitlines()
        assert lines and option in lines[0] and "names no id" in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert snapshot(seeded) == before


@pytest.mark.parametrize(("command", "option", "extra"), FILTERS, ids=[f"{c}{o}" for c, o, _ in FILTERS])
def test_non_id_filter_is_usage_error(seeded: str, tmp_path: Any, command: str, option: str, extra: list[str]) -> None:
    before = snapshot(seeded)
    for value in NOT_IDS:
        result = invoke_assert_code(_args(command, option, value, extra, seeded, tmp_path), 2)
        assert "is not an id" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(seeded) == before


@pytest.mark.parametrize(
    ("command", "variable", "extra"),
    [
        ("clean-workflow-logs", "WORKFLOW_LOG_CLEANUP_SPECIFIC_WORKFLOW_IDS", []),
        ("archive-workflow-runs", "PAID_PLAN_WORKFLOW_RUN_ARCHIVE_TENANT_IDS", ["--archive-dir", "{tmp}/a"]),
    ],
)
def test_setting_that_parses_to_nothing_is_usage_error(
    seeded: str, tmp_path: Any, command: str, variable: str, extra: list[str]
) -> None:
    before = snapshot(seeded)
    args = [command, "--database-url", seeded, "--yes", *(part.format(tmp=tmp_path) for part in extra)]
    for value in [",", " , ,"]:
        result = invoke_assert_code(args, 2, env={variable: value})
        assert variable in result.stderr and "names no id" in result.stderr
    assert snapshot(seeded) == before


def test_filter_ids_are_deduplicated_and_canonical(seeded: str) -> None:
    from difymaint.core.ids import parse_ids

    upper = "6F1C2A5E-0F0B-4C2D-9B7A-1E2F3A4B5C6D"
    assert parse_ids(f" {upper},{upper.lower()} ,", "--tenant-ids") == (upper.lower(),)
    assert parse_ids(None, "--tenant-ids") is None


def test_every_id_filter_of_every_job_is_covered() -> None:
    """A job added later with an id option must join FILTERS above (its empty/non-id cases then run too)."""
    from difymaint.jobs import JOBS

    declared = {
        (name, opt.flag)
        for name, info in JOBS.items()
        for opt in info.all_options()
        if opt.kind in ("ids", "repeated_ids")
    }
    assert declared == {(command, option) for command, option, _ in FILTERS}
