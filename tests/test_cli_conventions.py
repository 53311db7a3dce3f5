"""What an operator expects of any command-line tool: shell completion, -v/-q before the command, examples in
--help, a catalogue that reads at 80 columns, usage errors decided before any connection, and refused runs
recorded as such."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from difymaint.jobs import JOBS
from tests.test_cli import CLEAN_ENV, invoke_assert_code, run_cli

UNREACHABLE_DB = "postgresql+psycopg2://dify:secret@127.0.0.1:9/dify"  # port 9: connection refused


def _complete(words: str, cword: int) -> list[str]:
    env = {**CLEAN_ENV, "_DIFYMAINT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    done = subprocess.run([sys.executable, "-m", "difymaint"], capture_output=True, text=True, env=env, timeout=60)
    return done.stdout.split()


@pytest.mark.slow
def test_shell_completion_is_offered_and_completes_commands_options_and_subcommands() -> None:
    script = run_cli(["--show-completion", "bash"])
    assert script.returncode == 0 and "_difymaint_completion" in script.stdout
    assert "--install-completion" in invoke_assert_code(["--help"], 0).stdout
    assert _complete("difymaint clean-m", 1) == ["clean-messages"]
    assert _complete("difymaint clean-messages --dry", 2) == ["--dry-run"]
    assert _complete("difymaint history sh", 2) == ["show"]


@pytest.mark.slow
def test_verbose_and_quiet_work_before_the_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing.sqlite'}"
    args = ["clean-embeddings", "--dry-run", "--database-url", url]
    logger = logging.getLogger("difymaint")
    for root, level in (([], logging.INFO), (["-v"], logging.DEBUG), (["-q"], logging.WARNING)):
        invoke_assert_code([*root, *args], 1)
        assert logger.level == level, root
        invoke_assert_code([*root, "history", "--database-url", url], 0)  # the console commands too
        assert logger.level == level, root
    # -qq silences the summary table of a run, as the command's own -qq does.
    demo = tmp_path / "demo.sqlite"
    invoke_assert_code(["demo", "--path", str(demo), "--json"], 0)
    real = ["clean-messages", "--dry-run", "--database-url", f"sqlite:///{demo}"]
    assert invoke_assert_code(real, 0).stdout.strip()
    assert invoke_assert_code(["-qq", *real], 0).stdout.strip() == ""


@pytest.mark.parametrize("job", list(JOBS))
def test_every_job_help_ends_with_examples(job: str) -> None:
    text = invoke_assert_code([job, "--help"], 0).stdout
    examples = text[text.index("Examples:") :].splitlines()[1:]
    lines = [line.strip() for line in examples if line.strip()]
    assert len(lines) >= 2 and all(line.startswith(f"difymaint {job}") for line in lines)


def test_the_catalogue_reads_at_80_columns() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "difymaint", "jobs"],
        capture_output=True,
        text=True,
        env={**CLEAN_ENV, "COLUMNS": "80", "NO_COLOR": "1"},
        timeout=60,
    )
    assert result.returncode == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    first_cells = {line.split("│")[0].strip() for line in result.stdout.splitlines() if "│" in line}
    assert set(JOBS) <= first_cells  # every name whole, on one line


def test_a_missing_yes_is_a_usage_error_even_with_the_database_down() -> None:
    started = time.monotonic()
    result = run_cli(["clean-messages", "--database-url", UNREACHABLE_DB, "--json"])
    assert result.returncode == 2, result.stderr
    assert "refusing to delete without confirmation" in result.stderr and "connect" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "refused" and summary["exit_code"] == 2
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    "args",
    [
        ["clean-messages", "--days", "3", "--start-from", "2026-01-01"],  # two window forms
        ["clean-unused-datasets", "--yes"],  # no index hand-over chosen
        ["restore-workflow-runs", "--yes"],  # neither run ids nor a window
        ["monitor-queue", "--queue", "a", "--all-queues"],
    ],
)
def test_usage_errors_come_before_any_connection(args: list[str]) -> None:
    result = run_cli([*args, "--database-url", UNREACHABLE_DB, "--redis-url", "redis://127.0.0.1:9/0"])
    assert result.returncode == 2, result.stderr
    assert "connect" not in result.stderr and "unreachable" not in result.stderr


@pytest.mark.postgres
def test_a_refused_run_is_recorded_as_refused(pg_url: str) -> None:
    result = run_cli(["clean-messages", "--database-url", pg_url], env={"DIFYMAINT_USE_REDIS": "false"})
    assert result.returncode == 2
    history = run_cli(["history", "clean-messages", "--database-url", pg_url, "--json"])
    (record,) = json.loads(history.stdout)
    assert record["outcome"] == "refused" and record["exit_code"] == 2
    assert "confirmation" in (record["error"] or "")


def test_usage_errors_are_quick_with_the_stock_env() -> None:
    """No connection is tried for a run refused on its flags, whatever Dify's .env points at."""
    env_file = Path(__file__).parent / "fixtures" / "dify-stock-switches.env"
    result = run_cli(["clean-messages", "--env-file", str(env_file)], env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 2
