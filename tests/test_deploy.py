"""deploy/: the committed artefacts are the rendered ones, valid for Kubernetes 1.31, and follow our policy."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from difymaint.devtools import deploy
from difymaint.jobs import JOBS, JobInfo

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / deploy.K8S_DIR
CRONTAB = ROOT / deploy.CRONTAB_DIR / deploy.CRONTAB_FILE
K8S_VERSION = "1.31"  # the minimum supported version (podFailurePolicy GA)
ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SCHEDULED = deploy.scheduled_jobs()  # manual commands (scheduled=False) get no deploy files


# Each scheduled job's CronJob file: its own, or the every-minute one it shares.
CRONJOB_OF = {job.name: stem for stem, members in deploy.k8s_cronjobs(list(SCHEDULED.values())) for job in members}


def _manifest(job: JobInfo) -> dict[str, Any]:
    loaded = yaml.safe_load((K8S / f"{CRONJOB_OF.get(job.name, job.name)}.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _grouped(job: JobInfo) -> bool:
    return CRONJOB_OF[job.name] == deploy.EVERY_MINUTE_GROUP


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def _job_lines() -> list[str]:
    lines = CRONTAB.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#") and not ENV_LINE.match(line)]


jobs = pytest.mark.parametrize("job", list(SCHEDULED.values()), ids=list(SCHEDULED))


# --- committed files == rendered files ---------------------------------------------------------------------------


def test_committed_deploy_files_are_up_to_date() -> None:
    rendered = deploy.render_all()
    stale = deploy.stale_files(ROOT, rendered)
    assert not stale, f"stale: {stale}; run python -m difymaint.devtools.deploy"
    for relative, text in rendered.items():
        assert (ROOT / relative).read_text(encoding="utf-8") == text, relative


def test_check_mode_reports_a_changed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy.main(["--root", str(tmp_path)]) == 0
    assert deploy.main(["--root", str(tmp_path), "--check"]) == 0
    manifest = tmp_path / deploy.K8S_DIR / f"{next(iter(JOBS))}.yaml"
    manifest.write_text(manifest.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    capsys.readouterr()
    assert deploy.main(["--root", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stale" in err and manifest.name in err


def test_manual_commands_get_no_deploy_files() -> None:
    manual = [name for name, job in JOBS.items() if not job.scheduled]
    assert "restore-workflow-runs" in manual
    rendered = deploy.render_all()
    crontab = rendered[f"{deploy.CRONTAB_DIR}/{deploy.CRONTAB_FILE}"]
    for name in manual:
        assert f"{deploy.K8S_DIR}/{name}.yaml" not in rendered
        assert f" {name} " not in crontab
        assert not any(name in path for path in rendered if path.startswith(deploy.SYSTEMD_DIR))
        # a manual command gets a Job template, which is not a resource of the kustomize base
        assert f"{deploy.K8S_MANUAL_DIR}/{name}.yaml" in rendered
        assert name not in rendered[f"{deploy.K8S_DIR}/kustomization.yaml"]


def test_manifests_of_removed_jobs_are_stale_and_deleted(tmp_path: Path) -> None:
    first, *rest = JOBS
    deploy.write_all(tmp_path)
    smaller = deploy.render_all({name: JOBS[name] for name in rest})
    leftover = f"{deploy.K8S_DIR}/{first}.yaml"
    assert leftover in deploy.stale_files(tmp_path, smaller)
    deploy.write_all(tmp_path, smaller)
    assert not (tmp_path / leftover).exists()
    assert deploy.stale_files(tmp_path, smaller) == []


# --- Kubernetes manifests ----------------------------------------------------------------------------------------


def test_one_manifest_per_registry_job_but_one_for_the_every_minute_jobs() -> None:
    on_disk = {path.stem for path in K8S.glob("*.yaml")} | {path.stem for path in K8S.glob("*.yml")}
    assert on_disk == set(CRONJOB_OF.values()) | {"kustomization", deploy.NAMES_CONFIG_MAP}
    minute = sorted(name for name, job in SCHEDULED.items() if job.schedule == "* * * * *")
    assert minute == ["poll-workflow-schedules", "reap-stuck-runs", "refresh-trigger-providers", "timeout-human-input"]
    assert sorted(name for name, stem in CRONJOB_OF.items() if stem == deploy.EVERY_MINUTE_GROUP) == minute
    # Every scheduled job runs in exactly one CronJob: as its first argument, or one of the group's.
    started = []
    for stem in set(CRONJOB_OF.values()):
        (container,) = _pod_spec(yaml.safe_load((K8S / f"{stem}.yaml").read_text(encoding="utf-8")))["containers"]
        args = container["args"]
        started += [arg for arg in args if arg in SCHEDULED] if args[:2] == ["run", "--parallel"] else [args[0]]
    assert sorted(started) == sorted(SCHEDULED)


@jobs
def test_cronjob_validates_strictly(job: JobInfo) -> None:
    kubernetes_validate.validate(_manifest(job), K8S_VERSION, strict=True)


def test_strict_validation_catches_a_typo() -> None:
    obj = _manifest(next(iter(JOBS.values())))
    obj["spec"]["timeZonez"] = obj["spec"].pop("timeZone")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@jobs
def test_cronjob_policy(job: JobInfo) -> None:
    obj = _manifest(job)
    assert obj["apiVersion"] == "batch/v1" and obj["kind"] == "CronJob"
    name = obj["metadata"]["name"]
    assert name == f"difymaint-{CRONJOB_OF[job.name]}" and len(name) <= 52
    spec = obj["spec"]
    assert spec["schedule"] == job.schedule
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= 600
    assert spec["successfulJobsHistoryLimit"] == (1 if deploy.is_frequent(job) else 3)
    assert spec["failedJobsHistoryLimit"] == 3

    job_spec = spec["jobTemplate"]["spec"]
    timing = deploy.timing_for(job)
    assert job_spec["backoffLimit"] == 1
    assert 0 < job_spec["activeDeadlineSeconds"] < timing.period_seconds
    assert job_spec["activeDeadlineSeconds"] <= 3 * 3600
    rules = job_spec["podFailurePolicy"]["rules"]
    fail = [rule for rule in rules if rule["action"] == "FailJob"]
    assert len(fail) == 1 and fail[0]["onExitCodes"]["operator"] == "In"
    assert fail[0]["onExitCodes"]["values"] == [2, 3]  # 4 and 5 exit 0 through the environment below
    assert fail[0]["onPodConditions"] == []
    ignore = [rule for rule in rules if rule["action"] == "Ignore"]
    assert ignore == [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    assert {rule["action"] for rule in rules} <= {"FailJob", "Ignore", "Count"}

    pod = _pod_spec(obj)
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] == 120
    assert pod["automountServiceAccountToken"] is False
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert isinstance(security["runAsUser"], int) and security["runAsUser"] > 0
    assert isinstance(security["runAsGroup"], int) and security["runAsGroup"] > 0
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]

    (container,) = pod["containers"]
    assert container["resources"]["limits"]["memory"]
    memory = "256Mi" if _grouped(job) else "128Mi"  # the every-minute pod runs three processes
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": memory}
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"} in container["env"]
    assert {"name": "DIFYMAINT_ON_PARTIAL", "value": "ok"} in container["env"]
    assert {"name": "DIFYMAINT_ON_LOCKED", "value": "ok"} in container["env"]
    assert [next(iter(source)) for source in container["envFrom"]] == ["configMapRef", "secretRef"]


@jobs
def test_cronjob_args(job: JobInfo) -> None:
    (container,) = _pod_spec(_manifest(job))["containers"]
    assert container["command"] == ["difymaint"]
    args = container["args"]
    if _grouped(job):  # one child process per job, each with the flags below and its own scheduled arguments
        assert args[:3] == ["run", "--parallel", "--scheduled"] and job.name in args and "--yes" in args
        (flag,) = [arg for arg in args if arg.startswith("--max-runtime=")]
        job_spec = _manifest(job)["spec"]["jobTemplate"]["spec"]
        assert 0 < int(flag.split("=", 1)[1]) * (job_spec["backoffLimit"] + 1) < job_spec["activeDeadlineSeconds"]
        assert job_spec["activeDeadlineSeconds"] < 60  # under the period: never two group pods at once
        return
    assert args[0] == job.name
    assert "--log-format=json" in args and "--json" in args
    max_runtime = [arg for arg in args if arg.startswith("--max-runtime=")]
    if job.destructive:
        assert "--yes" in args
        (flag,) = max_runtime
        seconds = int(flag.split("=", 1)[1])
        job_spec = _manifest(job)["spec"]["jobTemplate"]["spec"]
        # the first pod and every retry each get the full budget, and all of them fit in the Job's deadline
        assert 0 < seconds * (job_spec["backoffLimit"] + 1) < job_spec["activeDeadlineSeconds"]
    else:
        assert "--yes" not in args and not max_runtime


def test_cronjob_name_length_is_enforced() -> None:
    job = next(iter(JOBS.values()))
    too_long = dataclasses.replace(job, name="x" * 43)
    with pytest.raises(ValueError, match="52"):
        deploy.render_cronjob(too_long)


@pytest.mark.parametrize(
    ("schedule", "period"),
    [
        ("0 4 * * *", 86400),
        ("0 10 * * 1", 86400),
        ("0 2 */1 * *", 86400),
        ("0 * * * *", 3600),
        ("*/10 * * * *", 600),
        ("*/15 * * * *", 900),
        ("0,30 1-3 * * MON-FRI", 1800),
        ("*/7 * * * *", 240),  # 56 -> 0 of the next hour
    ],
)
def test_schedule_period(schedule: str, period: int) -> None:
    assert deploy.schedule_period_seconds(schedule) == period


@pytest.mark.parametrize("schedule", ["@daily", "0 4 * *", "60 * * * *", "0 4 * * 8", "*/0 * * * *", "a b c d e"])
def test_bad_schedules_are_rejected(schedule: str) -> None:
    with pytest.raises(deploy.ScheduleError):
        deploy.schedule_period_seconds(schedule)


def test_frequent_schedules_get_deadlines_under_their_period() -> None:
    job = JobInfo(
        name="every-ten-minutes",
        module="x",
        summary="x",
        schedule="*/10 * * * *",
        dify_task="x",
        dify_switch="X",
        switches=(),
        lock_key="x",
    )
    timing = deploy.timing_for(job)
    assert timing.max_runtime_seconds < timing.active_deadline_seconds < timing.period_seconds == 600
    assert timing.starting_deadline_seconds < timing.period_seconds
    kubernetes_validate.validate(yaml.safe_load(deploy.render_cronjob(job)), K8S_VERSION, strict=True)


# --- /etc/cron.d file --------------------------------------------------------------------------------------------


def test_crontab_file_name_is_run_parts_safe() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]+", CRONTAB.name)


def test_crontab_ends_with_newline_and_sets_environment() -> None:
    text = CRONTAB.read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n")
    lines = text.splitlines()
    for setting in (
        "SHELL=/bin/sh",
        "MAILTO=root",
        "DIFYMAINT_ENV_FILE=/opt/dify/docker/.env",
        "DIFYMAINT_ON_PARTIAL=ok",
        "DIFYMAINT_ON_LOCKED=ok",
    ):
        assert setting in lines
    assert any(line.startswith("PATH=/") for line in lines)


def test_crontab_has_one_line_per_job() -> None:
    lines = _job_lines()
    assert len(lines) == len(SCHEDULED)
    by_job: dict[str, str] = {}
    for line in lines:
        fields = line.split()
        assert len(fields) > 6, line
        schedule, user = " ".join(fields[:5]), fields[5]
        assert user == "root"
        deploy.schedule_period_seconds(schedule)  # five valid time fields
        job_name = fields[fields.index("difymaint") + 1]
        assert job_name not in by_job
        by_job[job_name] = line
        assert schedule == deploy.dst_safe(JOBS[job_name].schedule)
        if schedule.split()[1].isdigit():  # daily runs stay out of the hours DST skips or repeats
            assert int(schedule.split()[1]) not in {1, 2, 3}, line
    assert set(by_job) == set(SCHEDULED)
    for name, line in by_job.items():
        job = JOBS[name]
        assert f"flock -n -E 0 /run/lock/difymaint-{name}.lock difymaint {name}" in line
        log = f"/var/log/difymaint/{name}.log"
        assert f">>{log} 2>&1 || echo " in line and line.endswith(f'see {log}"')
        assert ("--yes" in line) == job.destructive
        assert ("--max-runtime=" in line) == job.destructive
        assert " --log-format=json --json >>" in line  # the log gets JSON, as on Kubernetes


@pytest.mark.slow  # a job subprocess
def test_a_crontab_line_writes_json_lines_to_its_log() -> None:
    """What a cron line appends to /var/log/difymaint/<job>.log: JSON log lines and one JSON summary."""
    from tests.test_cli import run_cli

    line = next(line for line in _job_lines() if " difymaint clean-messages " in line)
    words = line.split(" >>", 1)[0].split()
    args = words[words.index("difymaint") + 1 :]
    stock = ROOT / "tests" / "fixtures" / "dify-stock-switches.env"
    result = run_cli(
        [*args, "--database-url", "postgresql://nobody@127.0.0.1:1/none"], env={"DIFYMAINT_ENV_FILE": str(stock)}
    )
    assert result.returncode == 0, result.stderr
    (summary,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert summary["job"] == "clean-messages" and summary["outcome"] == "disabled"  # Dify ships it off
    assert all(json.loads(text)["level"] for text in result.stderr.splitlines())


def test_crontab_has_no_unescaped_percent() -> None:
    for line in _job_lines():
        assert not re.search(r"(?<!\\)%", line), line


def test_percent_signs_are_escaped() -> None:
    job = next(iter(JOBS.values()))
    odd = dataclasses.replace(job, name="odd%name")
    command = deploy.crontab_command(odd)
    assert "odd\\%name" in command and not re.search(r"(?<!\\)%", command)


@pytest.mark.parametrize("name", sorted(SCHEDULED))
def test_scheduled_arguments_are_real_flags(name: str) -> None:
    """Every flag the manifests and the crontab pass exists on the command (a typo would fail each night)."""
    from typer.testing import CliRunner

    from difymaint.cli.app import app
    from difymaint.devtools.deploy import job_args

    result = CliRunner().invoke(app, [*job_args(JOBS[name]), "--help"])
    assert result.exit_code == 0, result.output
