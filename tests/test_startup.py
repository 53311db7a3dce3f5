"""A scheduled run with nothing to do costs about what `difymaint --version` costs, with an env file of Dify's
size: the every-minute jobs of a host install start 1,440 times a day each."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from dotenv import dotenv_values

from difymaint.core.settings import Settings, load_settings
from difymaint.jobs import JOBS
from tests.test_cli import CLEAN_ENV

pytestmark = pytest.mark.slow  # subprocesses and builds: not in the fast tier


STOCK_SETTINGS = 721  # Dify's single docker/.env of the 1.14 releases; the split files of later ones are smaller


def dify_sized_env(path: Path) -> Path:
    """An env file of Dify's size and shape: every setting difymaint reads, at its default, with the switches
    the registry names set off, among unrelated settings up to Dify's count, with comments and blank lines
    as Dify's file has them (about one comment per setting, a blank line every few)."""
    lines: list[str] = []
    names: list[tuple[str, str]] = []
    for name, field in Settings.model_fields.items():
        value = field.default.get_secret_value() if hasattr(field.default, "get_secret_value") else field.default
        names.append((name, "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)))
    names += [(switch.name, "false") for info in JOBS.values() for switch in info.switches]
    names += [(f"VECTOR_STORE_OPTION_{index}", f"value-{index}") for index in range(STOCK_SETTINGS - len(names))]
    for index, (name, value) in enumerate(names):
        lines.append(f"# {name.lower().replace('_', ' ')}: what it sets")
        if index % 4 == 0:
            lines.append("")
        lines.append(f"{name}={value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _fastest(args: list[str], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "difymaint", *args],
            capture_output=True,
            text=True,
            env={**CLEAN_ENV, "NO_COLOR": "1"},
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        best = min(best, time.perf_counter() - started)
        assert done.returncode == 0, done.stderr
    return best


def test_a_switched_off_scheduled_run_costs_little_more_than_the_version(tmp_path: Path) -> None:
    env_file = dify_sized_env(tmp_path / ".env")
    assert sum(1 for line in env_file.read_text().splitlines() if "=" in line and not line.startswith("#")) >= 700
    version = _fastest(["--version"])
    # clean-messages is off in Dify's stock settings: the run ends 'disabled' before any connection.
    idle = _fastest(["clean-messages", "--env-file", str(env_file), "--scheduled", "--yes", "--json"])
    assert idle <= 3 * version, f"{idle:.2f} s against --version {version:.2f} s"


def test_the_env_file_reads_as_python_dotenv_reads_it(tmp_path: Path) -> None:
    """Only declared settings and switches are parsed, but each exactly as python-dotenv parses the whole file,
    a quoted value that runs over several lines included (its lines are never read as assignments)."""
    text = "\n".join(
        [
            "# Dify's settings",
            'UNRELATED="first line',
            "DB_HOST=not-this-one",
            'still the unrelated value"',
            "DB_HOST=postgres.internal",
            "export REDIS_HOST = redis.internal  # a comment",
            'SMTP_PASSWORD="pa\\"ss',
            'word"',
            "DB_PASSWORD='single quoted # not a comment'",
            "ENABLE_CLEAN_MESSAGES=true",
            "REDIS_PORT=",
        ]
    )
    env_file = tmp_path / ".env"
    env_file.write_text(text + "\n", encoding="utf-8")
    whole = dotenv_values(env_file)
    settings = load_settings(env_file, {})
    assert settings.DB_HOST == whole["DB_HOST"] == "postgres.internal"
    assert settings.REDIS_HOST == whole["REDIS_HOST"] == "redis.internal"
    assert settings.SMTP_PASSWORD is not None and settings.SMTP_PASSWORD.get_secret_value() == whole["SMTP_PASSWORD"]
    assert settings.DB_PASSWORD.get_secret_value() == whole["DB_PASSWORD"] == "single quoted # not a comment"
    assert settings.switch("ENABLE_CLEAN_MESSAGES") is True
    assert settings.REDIS_PORT == 6379  # empty means unset, as in Dify
    interpolating = tmp_path / "interpolating.env"
    interpolating.write_text("HOST_BASE=db.example\nDB_HOST=${HOST_BASE}\n", encoding="utf-8")
    assert load_settings(interpolating, {}).DB_HOST == "db.example"
