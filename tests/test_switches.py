"""Scheduled runs honour Dify's switches: nothing shipped deletes what the same Dify configuration keeps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from difymaint.core.settings import Settings, load_settings
from difymaint.devtools import deploy
from difymaint.dify.switches import Switch, override_variable, switch_state
from difymaint.jobs import JOBS
from tests.every_scenario import seed_every_scenario, snapshot
from tests.test_cli import invoke_assert_code

STOCK_ENV = Path(__file__).parent / "fixtures" / "dify-stock-switches.env"
UNREACHABLE_DB = "postgresql://nobody:SECRET@127.0.0.1:1/nothing"


def _beat_would_schedule(settings: Settings) -> set[str]:
    """What Dify's beat schedules under these settings: every switch of the job on (Dify's own rule)."""
    return {
        name
        for name, job in deploy.scheduled_jobs().items()
        if job.switches and all(switch.on(settings) for switch in job.switches)
    }


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded once, copied for each test."""
    return seed_every_scenario(tmp_path_factory.mktemp("seeded") / "dify.sqlite")


def test_every_switch_and_override_is_a_setting() -> None:
    for job in JOBS.values():
        names = [switch.name for switch in job.switches]
        if job.scheduled:
            names.append(override_variable(job.name))
            assert job.switches or job.dify_switch == "", job.name
        for name in names:  # read from the environment, the env file and flags like any setting
            assert load_settings(None, {name: "true"}).switch(name) is True, (job.name, name)
            assert load_settings(None, {name: "false"}).switch(name) is False, (job.name, name)
        if job.dify_switch:
            assert job.dify_switch in {switch.name for switch in job.switches}, job.name


def test_switch_state_follows_dify_then_the_override() -> None:
    switches = (Switch("ENABLE_CLEAN_MESSAGES", dify_default=False),)
    unset = switch_state(load_settings(None, {}), "clean-messages", switches)
    assert not unset.enabled and "unset" in unset.reason and "ENABLE_CLEAN_MESSAGES" in unset.reason
    on = switch_state(load_settings(None, {"ENABLE_CLEAN_MESSAGES": True}), "clean-messages", switches)
    assert on.enabled
    off = switch_state(load_settings(None, {"ENABLE_CLEAN_MESSAGES": False}), "clean-messages", switches)
    assert not off.enabled and "set to false" in off.reason
    forced = load_settings(None, {"ENABLE_CLEAN_MESSAGES": True, "DIFYMAINT_ENABLE_CLEAN_MESSAGES": False})
    assert not switch_state(forced, "clean-messages", switches).enabled
    taken_over = load_settings(None, {"ENABLE_CLEAN_MESSAGES": False, "DIFYMAINT_ENABLE_CLEAN_MESSAGES": True})
    state = switch_state(taken_over, "clean-messages", switches)
    assert state.enabled and state.reason == "DIFYMAINT_ENABLE_CLEAN_MESSAGES=true"


def test_every_generated_line_is_a_scheduled_run() -> None:
    for job in deploy.scheduled_jobs().values():
        assert "--scheduled" in deploy.job_args(job)
        assert "--scheduled" in deploy.crontab_line(job)
    crontab = (Path(__file__).parents[1] / "deploy" / "crontab" / "difymaint").read_text()
    assert crontab.index("archive-workflow-runs --scheduled") < crontab.index("clean-workflow-runs --scheduled")


def _scheduled_args(job_name: str, tmp: Path, redis_url: str = "") -> list[str]:
    """The exact arguments the generated CronJob passes, plus what a test host needs."""
    job = JOBS[job_name]
    args = deploy.job_args(job)
    extra = {
        "clean-unused-datasets": ["--emit-index-removals", str(tmp / "removals.jsonl")],
        "archive-workflow-runs": ["--archive-dir", str(tmp / "archive")],
        "flush-api-token-usage": ["--redis-url", redis_url],  # its data lives in Dify's Redis
    }
    return [arg for arg in args if arg != "--enqueue-index-removal"] + extra.get(job_name, [])


def test_stock_dify_env_schedules_only_what_dify_schedules(
    seeded_template: Path, tmp_path: Path, redis_url: str
) -> None:
    """Every generated job, run exactly as the CronJob runs it with Dify's stock .env, does something only if
    Dify's beat would have scheduled it; the others touch no row."""
    stock = load_settings(STOCK_ENV, {})
    expected = _beat_would_schedule(stock)
    # Dify ships every other cleanup switch off, and these dispatchers on (nothing is due in the fixture).
    dispatchers = {
        "poll-workflow-schedules",
        "refresh-trigger-providers",
        "check-upgradable-plugins",
        "timeout-human-input",
        "flush-api-token-usage",
    }
    assert expected == {"clean-oauth-tokens"} | dispatchers
    ran: set[str] = set()
    for name in deploy.scheduled_jobs():
        copy = tmp_path / f"{name}.sqlite"
        shutil.copyfile(seeded_template, copy)
        url = f"sqlite:///{copy}"
        before = snapshot(url)
        result = invoke_assert_code(
            [*_scheduled_args(name, tmp_path, redis_url), "--database-url", url],
            0,
            env={"DIFYMAINT_ENV_FILE": str(STOCK_ENV)},
        )
        summary = json.loads(result.stdout)
        if summary["outcome"] == "disabled":
            assert snapshot(url) == before, name
            reason = summary["details"]["switch"]
            assert "Dify's default is off" in reason or "false" in reason or "off unless set to true" in reason
        else:
            ran.add(name)
    assert ran == expected


def test_disabled_scheduled_run_touches_nothing_not_even_the_database() -> None:
    result = invoke_assert_code(
        ["clean-messages", "--scheduled", "--yes", "--json", "--database-url", UNREACHABLE_DB], 0
    )
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "disabled" and summary["exit_code"] == 0
    assert "ENABLE_CLEAN_MESSAGES" in summary["details"]["switch"]
    assert "skipped" in result.stderr and "SECRET" not in result.stderr + result.stdout


def test_disabled_job_needs_none_of_its_other_settings() -> None:
    """The stock .env has no archive storage and an unusable mail sender: disabled jobs still exit 0 nightly."""
    for name in ("archive-workflow-runs", "notify-cleaned-documents"):
        result = invoke_assert_code(
            [name, "--scheduled", "--json", "--database-url", UNREACHABLE_DB],
            0,
            env={"DIFYMAINT_ENV_FILE": str(STOCK_ENV)},
        )
        assert json.loads(result.stdout)["outcome"] == "disabled"


@pytest.mark.parametrize(
    ("env", "outcome"),
    [
        ({"ENABLE_CLEAN_MESSAGES": "true"}, "done"),
        ({"ENABLE_CLEAN_MESSAGES": "false", "DIFYMAINT_ENABLE_CLEAN_MESSAGES": "true"}, "done"),
        ({"ENABLE_CLEAN_MESSAGES": "true", "DIFYMAINT_ENABLE_CLEAN_MESSAGES": "false"}, "disabled"),
        ({"DIFYMAINT_SCHEDULED": "true"}, "disabled"),
    ],
)
def test_scheduled_run_follows_switch_and_override(
    seeded_template: Path, tmp_path: Path, env: dict[str, str], outcome: str
) -> None:
    copy = tmp_path / "dify.sqlite"
    shutil.copyfile(seeded_template, copy)
    url = f"sqlite:///{copy}"
    before = snapshot(url)
    flags = [] if "DIFYMAINT_SCHEDULED" in env else ["--scheduled"]
    result = invoke_assert_code(["clean-messages", *flags, "--yes", "--json", "--database-url", url], 0, env=env)
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["outcome"] == outcome
    assert (snapshot(url) == before) == (outcome == "disabled")
    if outcome == "done":
        assert summary["tables"]["messages"] > 0


def test_a_run_by_hand_is_never_blocked_but_says_so(seeded_template: Path, tmp_path: Path) -> None:
    copy = tmp_path / "dify.sqlite"
    shutil.copyfile(seeded_template, copy)
    result = invoke_assert_code(["clean-messages", "--dry-run", "--json", "--database-url", f"sqlite:///{copy}"], 0)
    assert json.loads(result.stdout)["outcome"] == "done"
    assert "scheduled runs (--scheduled) skip clean-messages" in result.stderr and "started by hand" in result.stderr


def test_notify_dry_run_works_on_dify_stock_env(seeded_template: Path, tmp_path: Path) -> None:
    """Dify's stock .env says MAIL_TYPE=resend with no sender: a preview still runs, and says what a real run
    would refuse; the real run still refuses (exit 2) before sending or marking anything."""
    copy = tmp_path / "dify.sqlite"
    shutil.copyfile(seeded_template, copy)
    url = f"sqlite:///{copy}"
    env = {"DIFYMAINT_ENV_FILE": str(STOCK_ENV)}
    preview = invoke_assert_code(["notify-cleaned-documents", "--dry-run", "--json", "--database-url", url], 0, env)
    summary = json.loads(preview.stdout)
    assert summary["outcome"] == "done"
    assert any("MAIL_DEFAULT_SEND_FROM" in warning for warning in summary["warnings"])
    before = snapshot(url)
    real = invoke_assert_code(["notify-cleaned-documents", "--json", "--database-url", url], 2, env)
    assert "MAIL_DEFAULT_SEND_FROM" in real.stderr
    assert snapshot(url) == before
