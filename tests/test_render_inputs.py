"""`difymaint schedule render` fed by the installation: a Dify Helm release's values (what its beat sees), --env,
Dify's interval settings, and an output folder rendered before (merge, local edits kept)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from difymaint.ops import manifests as schedules
from difymaint.ops.helm import chart_fullname
from difymaint.ops.manifests import RenderError
from tests.test_schedule_render import K8S_VERSION, STOCK_ENV, _container, _kustomize, _render

UNREACHABLE_DB = "postgresql://nobody@127.0.0.1:1/none"
SECRET_VALUE = "s3cr3t-Passw0rd-value"

# What `helm get values prod -o yaml` prints for a release that customised its beat (scripts/lint-k8s lints
# its rendering too).
VALUES = (Path(__file__).parent / "fixtures" / "dify-helm-values.yaml").read_text(encoding="utf-8")


def _docs(stdout: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(stdout) if doc}


def _env(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return _container(doc)["env"]  # type: ignore[no-any-return]


def _literal_env(doc: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in _env(doc) if "value" in item}


def _comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


# --- Helm ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # kubectl kustomize and job subprocesses
def test_helm_release_renders_what_its_beat_sees(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(VALUES, encoding="utf-8")
    out = tmp_path / "out"
    result = _render("--helm-values", str(values), "--helm-release", "prod", "--output", str(out))
    assert result.exit_code == 0, result.output
    # beat.enabled is the chart's default (true): the one durable way off is named
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--set beat.enabled=false" in warnings[0] and "kubectl scale" in warnings[0]

    texts = {path.name: path.read_text(encoding="utf-8") for path in out.glob("*.yaml")}
    docs = {name: yaml.safe_load(text) for name, text in texts.items() if name.endswith(".yaml")}
    cronjobs = {name: doc for name, doc in docs.items() if doc["kind"] == "CronJob"}
    for doc in cronjobs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        # the beat's own ConfigMap and Secret: "<fullname>-worker", fullname "prod-dify"
        assert _container(doc)["envFrom"] == [
            {"configMapRef": {"name": "prod-dify-worker"}},
            {"secretRef": {"name": "prod-dify-worker"}},
        ]
        env = _env(doc)
        assert {"name": "ENABLE_CLEAN_MESSAGES", "value": "true"} in env  # beat.extraEnv, not the worker's false
        assert {"name": "SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS", "value": "90"} in env  # worker.extraEnv
        assert {
            "name": "WORKFLOW_LOG_CLEANUP_ENABLED",
            "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "logs"}},
        } in env  # copied as it is
        assert len({item["name"] for item in env}) == len(env)

    def suspended(name: str) -> str:
        spec = cronjobs[f"{name}.yaml"]["spec"]
        return "suspended" if spec.get("suspend") else "runs"

    # switched off in beat.extraEnv: suspended, and the comment says by what
    assert suspended("clean-oauth-tokens") == "suspended"
    assert "ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK=false in beat.extraEnv" in texts["clean-oauth-tokens.yaml"]
    # switched on there: runs; off by Dify's default and not set: suspended; from valueFrom: decided at run time
    assert suspended("clean-messages") == "runs"
    assert suspended("clean-embeddings") == "suspended"
    assert "ENABLE_CLEAN_EMBEDDING_CACHE_TASK is not set in beat.extraEnv" in texts["clean-embeddings.yaml"]
    assert suspended("clean-workflow-logs") == "runs"
    # on by Dify's default, off in the chart's ConfigMap (global.marketplace.enabled=false)
    assert suspended("check-upgradable-plugins") == "suspended"
    assert "MARKETPLACE_ENABLED=false in the chart's worker ConfigMap" in texts["check-upgradable-plugins.yaml"]
    # QUEUE_MONITOR_INTERVAL=10 in beat.extraEnv: Dify's beat would run it every 10 minutes
    assert cronjobs["monitor-queue.yaml"]["spec"]["schedule"] == "*/10 * * * *"
    # the every-minute pod leaves the switched-off poller out, and still runs the other two
    group = cronjobs["every-minute.yaml"]
    assert not group["spec"].get("suspend")
    args = _container(group)["args"]
    assert "poll-workflow-schedules" not in args and {"timeout-human-input", "refresh-trigger-providers"} <= set(args)
    assert "Left out: ENABLE_WORKFLOW_SCHEDULE_POLLER_TASK=false in beat.extraEnv" in texts["every-minute.yaml"]
    for doc in _kustomize(out):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)

    # At run time the baked-in environment decides as the beat did, on Dify's stock .env (no DB reached).
    from tests.test_cli import run_cli

    for name, outcome in (("clean-oauth-tokens", "disabled"), ("clean-embeddings", "disabled")):
        doc = cronjobs[f"{name}.yaml"]
        env = {**_literal_env(doc), "DIFYMAINT_ENV_FILE": str(STOCK_ENV)}
        run = run_cli([*_container(doc)["args"], "--database-url", UNREACHABLE_DB], env=env)
        assert json.loads(run.stdout)["outcome"] == outcome and run.returncode == 0, name
    messages = cronjobs["clean-messages.yaml"]
    env = {**_literal_env(messages), "DIFYMAINT_ENV_FILE": str(STOCK_ENV)}
    run = run_cli([*_container(messages)["args"], "--database-url", UNREACHABLE_DB], env=env)
    assert json.loads(run.stdout)["outcome"] == "failed" and run.returncode == 1  # it ran: no database there


def test_helm_beat_disabled_no_warning_and_names_from_fullname(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("USER-SUPPLIED VALUES:\nfullnameOverride: acme\nbeat:\n  enabled: false\n", encoding="utf-8")
    result = _render("--helm-values", str(values), "--only=clean-messages")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    (doc,) = _docs(result.stdout).values()
    assert _container(doc)["envFrom"][0] == {"configMapRef": {"name": "acme-worker"}}
    explicit = _render("--helm-fullname", "acme", "--config-map", "mine", "--only=clean-messages")
    assert _container(next(iter(_docs(explicit.stdout).values())))["envFrom"] == [
        {"configMapRef": {"name": "mine"}},
        {"secretRef": {"name": "acme-worker"}},
    ]


@pytest.mark.parametrize(
    ("values", "release", "fullname"),
    [
        ({}, "dify", "dify"),
        ({}, "prod", "prod-dify"),
        ({}, "my-dify-prod", "my-dify-prod"),
        ({"nameOverride": "ai"}, "prod", "prod-ai"),
        ({"nameOverride": "ai"}, "maintai", "maintai"),
        ({"fullnameOverride": "custom-"}, "ignored", "custom"),
        ({}, "r" * 70, "r" * 63),
        ({}, "x" * 58, "x" * 58 + "-dify"),
        ({}, "x" * 59, "x" * 59 + "-dif"),
        ({}, "x" * 62, "x" * 62),  # "<62 x>-" truncated to 63, the trailing '-' dropped
    ],
)
def test_chart_fullname(values: dict[str, str], release: str, fullname: str) -> None:
    assert chart_fullname(values, release) == fullname


@pytest.mark.parametrize(
    ("values", "args", "message"),
    [
        ("beat:\n  enabled: true\n", [], "--helm-release"),
        ("beat: [1, 2\n", ["--helm-release=x"], "not valid YAML (line"),
        ("beat:\n  extraEnv: {A: b}\n", ["--helm-release=x"], "beat.extraEnv must be a list"),
        (
            "beat:\n  extraEnv:\n    - value: x\n",
            ["--helm-release=x"],
            "beat.extraEnv[0] must be a mapping with a name",
        ),
        ("beat:\n  enabled: 'false'\n", ["--helm-release=x"], "beat.enabled must be true or false"),
        ("beat:\n  extraEnv:\n    - {name: ENABLE_CLEAN_MESSAGES, value: maybe}\n", ["--helm-release=x"], "not true"),
        ("beat:\n  extraEnv:\n    - {name: QUEUE_MONITOR_INTERVAL, value: '7'}\n", ["--helm-release=x"], "7 minutes"),
        ("{}\n", ["--helm-release=x", "--format=crontab"], "for --format k8s"),
    ],
)
def test_bad_helm_input_is_one_line_and_exit_2(tmp_path: Path, values: str, args: list[str], message: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values, encoding="utf-8")
    result = _render("--helm-values", str(path), *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr


# --- --env -----------------------------------------------------------------------------------------------------------


def test_env_reaches_every_format_and_secret_values_stay_out_of_comments(tmp_path: Path) -> None:
    env = [
        "--env=DIFYMAINT_ENABLE_CLEAN_MESSAGES=true",
        f"--env=DB_PASSWORD={SECRET_VALUE}",
        "--env=ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK=false",
        "--env=LOG_LEVEL= padded %s ",
    ]
    k8s = _render(*env, "--only=clean-messages", "--only=clean-oauth-tokens", "--only=clean-embeddings")
    assert k8s.exit_code == 0, k8s.output
    (warning,) = k8s.stderr.splitlines()
    assert "DB_PASSWORD" in warning and SECRET_VALUE not in warning
    docs = _docs(k8s.stdout)
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert {"name": "DB_PASSWORD", "value": SECRET_VALUE} in _env(doc)
        assert {"name": "LOG_LEVEL", "value": " padded %s "} in _env(doc)
    # explicit in the pod's env: certain; unset without a Helm release: the ConfigMap may still turn it on
    assert docs["difymaint-clean-oauth-tokens"]["spec"]["suspend"] is True
    assert "suspend" not in docs["difymaint-clean-embeddings"]["spec"]
    assert "suspend" not in docs["difymaint-clean-messages"]["spec"]

    crontab = _render(*env, "--format=crontab")
    assert crontab.exit_code == 0, crontab.output
    lines = crontab.stdout.splitlines()
    assert f"DB_PASSWORD={SECRET_VALUE}" in lines and 'LOG_LEVEL=" padded %s "' in lines
    compose = _render(*env, "--format=crontab", "--compose-dir=/srv/dify")
    assert "run --rm -T -e DIFYMAINT_ENABLE_CLEAN_MESSAGES -e DB_PASSWORD" in compose.stdout

    systemd = _render(*env, "--format=systemd", "--only=clean-messages", f"--output={tmp_path / 'units'}")
    assert systemd.exit_code == 0, systemd.output
    service = (tmp_path / "units" / "difymaint-clean-messages.service").read_text(encoding="utf-8")
    assert f'Environment="DB_PASSWORD={SECRET_VALUE}"' in service.splitlines()
    assert 'Environment="LOG_LEVEL= padded %%s "' in service.splitlines()  # systemd's % specifiers escaped
    analyze = shutil.which("systemd-analyze")
    if analyze:
        checked = subprocess.run(
            [analyze, "verify", str(tmp_path / "units" / "difymaint-clean-messages.service")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert "Environment" not in checked.stderr, checked.stderr

    for text in (k8s.stdout, crontab.stdout, compose.stdout, service):
        assert not [line for line in _comments(text) if SECRET_VALUE in line]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--env=NOVALUE", "NAME=VALUE"),
        ("--env=1BAD=x", "not a shell name"),
        ("--env=CELERY_BEAT_SCHEDULER_TIME=0", "CELERY_BEAT_SCHEDULER_TIME"),
    ],
)
def test_bad_env_is_one_line_and_exit_2(flag: str, message: str) -> None:
    result = _render(flag)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.output


# --- Dify's intervals ------------------------------------------------------------------------------------------------


def test_difys_intervals_shape_every_format(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        STOCK_ENV.read_text(encoding="utf-8")
        + "QUEUE_MONITOR_INTERVAL=10\nWORKFLOW_SCHEDULE_POLLER_INTERVAL=5\nTRIGGER_PROVIDER_REFRESH_INTERVAL=120\n"
        "API_TOKEN_LAST_USED_UPDATE_INTERVAL=60\nCELERY_BEAT_SCHEDULER_TIME=3\n"
        'DIFYMAINT_SCHEDULE_CLEAN_WORKFLOW_LOGS="30 2 * * *"\n',
        encoding="utf-8",
    )
    expected = {
        "monitor-queue": "*/10 * * * *",
        "poll-workflow-schedules": "*/5 * * * *",
        "refresh-trigger-providers": "0 */2 * * *",
        "flush-api-token-usage": "0 * * * *",
        "clean-messages": "0 4 */3 * *",
        "clean-oauth-tokens": "0 5 */3 * *",
        "clean-unused-datasets": "0 3 */3 * *",
        "clean-embeddings": "0 2 */3 * *",
        "clean-workflow-logs": "30 2 * * *",  # the operator's own line, as given
        "clean-workflow-runs": "0 0 * * *",  # not day-scaled in Dify
        "timeout-human-input": "* * * * *",
    }
    k8s = _render(f"--env-file={env_file}", f"--output={tmp_path / 'k8s'}", "--time-zone=Europe/Berlin")
    assert k8s.exit_code == 0, k8s.output
    for name, schedule in expected.items():
        stem = "every-minute" if schedule == "* * * * *" else name
        doc = yaml.safe_load((tmp_path / "k8s" / f"{stem}.yaml").read_text(encoding="utf-8"))
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        # 02:00 and 03:00 leave Berlin's DST hours; an override is rendered as given
        shifted = re.sub(r"^0 ([23]) ", lambda m: f"0 {int(m[1]) + 3} ", schedule)
        assert doc["spec"]["schedule"] == shifted, name
    group = yaml.safe_load((tmp_path / "k8s" / "every-minute.yaml").read_text(encoding="utf-8"))
    grouped = [arg for arg in _container(group)["args"] if not arg.startswith("-")][1:]
    assert grouped == ["reap-stuck-runs", "timeout-human-input"]
    assert "follows QUEUE_MONITOR_INTERVAL=10" in (tmp_path / "k8s" / "monitor-queue.yaml").read_text()

    crontab = _render(f"--env-file={env_file}", "--format=crontab")
    lines = {line.split(" root ")[1].split()[6]: line for line in crontab.stdout.splitlines() if " root flock " in line}
    assert lines["monitor-queue"].startswith("*/10 * * * * root")
    assert lines["clean-messages"].startswith("0 4 */3 * * root")
    assert lines["clean-workflow-logs"].startswith("30 2 * * * root")  # not moved: the operator chose it
    systemd = _render(f"--env-file={env_file}", "--format=systemd", "--only=monitor-queue")
    assert "OnCalendar=*-*-* *:00/10:00 Etc/UTC" in systemd.stdout


@pytest.mark.parametrize(
    ("setting", "value"),
    [("QUEUE_MONITOR_INTERVAL", "7"), ("QUEUE_MONITOR_INTERVAL", "2.5"), ("API_TOKEN_LAST_USED_UPDATE_INTERVAL", "90")],
)
def test_an_interval_cron_cannot_express_is_refused(setting: str, value: str) -> None:
    result = _render(f"--env={setting}={value}")
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"{setting}={value}" in line and "DIFYMAINT_SCHEDULE_" in line


def test_interval_zero_is_difys_default_and_environment_counts() -> None:
    zero = _render("--only=monitor-queue", env={"QUEUE_MONITOR_INTERVAL": "0"})
    assert yaml.safe_load(zero.stdout)["spec"]["schedule"] == "*/30 * * * *"
    from_env = _render("--only=monitor-queue", env={"QUEUE_MONITOR_INTERVAL": "15"})
    assert yaml.safe_load(from_env.stdout)["spec"]["schedule"] == "*/15 * * * *"
    override = _render("--only=monitor-queue", env={"DIFYMAINT_SCHEDULE_MONITOR_QUEUE": "5 * * * *"})
    assert yaml.safe_load(override.stdout)["spec"]["schedule"] == "5 * * * *"


# --- an output folder rendered before -------------------------------------------------------------------------------


@pytest.mark.slow  # kubectl kustomize and job subprocesses
def test_only_merges_into_a_rendered_folder_and_keeps_edited_files(tmp_path: Path) -> None:
    out = tmp_path / "base"
    assert _render(f"--output={out}").exit_code == 0
    before = {path.name: path.read_text(encoding="utf-8") for path in out.glob("*.yaml")}
    merged = _render(f"--output={out}", "--only=clean-messages", "--image=registry.example.com/difymaint:2.0.0")
    assert merged.exit_code == 0, merged.output
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text(encoding="utf-8"))
    assert yaml.safe_load(before["kustomization.yaml"])["resources"] == kustomization["resources"]
    assert "registry.example.com/difymaint:2.0.0" in (out / "clean-messages.yaml").read_text(encoding="utf-8")
    assert (out / "clean-oauth-tokens.yaml").read_text(encoding="utf-8") == before["clean-oauth-tokens.yaml"]
    assert len(_kustomize(out)) == len(schedules.k8s_cronjobs(list(schedules.scheduled_jobs().values())))

    edited = (out / "kustomization.yaml").read_text(encoding="utf-8") + "# my change\n"
    (out / "kustomization.yaml").write_text(edited, encoding="utf-8")
    message = (out / "clean-messages.yaml").read_text(encoding="utf-8")
    refused = _render(f"--output={out}", "--only=clean-messages", "--image=difymaint:3.0.0")
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert "kustomization.yaml" in refused.stderr and "--force" in refused.stderr
    assert (out / "clean-messages.yaml").read_text(encoding="utf-8") == message  # nothing written
    forced = _render(f"--output={out}", "--only=clean-messages", "--image=difymaint:3.0.0", "--force")
    assert forced.exit_code == 0 and "# my change" not in (out / "kustomization.yaml").read_text(encoding="utf-8")

    # a file difymaint has no record of writing is not overwritten either
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "kustomization.yaml").write_text("resources: [mine.yaml]\n", encoding="utf-8")
    assert _render(f"--output={foreign}").exit_code == 2
    assert (foreign / "kustomization.yaml").read_text(encoding="utf-8") == "resources: [mine.yaml]\n"


def test_every_minute_group_gathers_its_members_across_only_renders(tmp_path: Path) -> None:
    out = tmp_path / "minute"
    assert _render(f"--output={out}", "--only=timeout-human-input").exit_code == 0
    assert _render(f"--output={out}", "--only=poll-workflow-schedules").exit_code == 0
    group = yaml.safe_load((out / "every-minute.yaml").read_text(encoding="utf-8"))
    assert {"timeout-human-input", "poll-workflow-schedules"} <= set(_container(group)["args"])
    resources = yaml.safe_load((out / "kustomization.yaml").read_text(encoding="utf-8"))["resources"]
    assert resources == [f"{schedules.NAMES_CONFIG_MAP}.yaml", "every-minute.yaml"]


# --- the renderer's own checks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time-zone=Not/AZone"], "not in the IANA zone database"),
        (["--format=systemd", "--time-zone=Mars/Olympus"], "not in the IANA zone database"),
        (["--image=difymaint:latest"], "not pinned"),
        (["--image=registry.example.com/difymaint"], "has no tag"),
        (["--image=registry.example.com:5000/difymaint"], "has no tag"),
        (["--image=difymaint:stable"], "not pinned"),
        (["--image=difymaint@sha256:1234"], "64 hex"),
    ],
)
def test_unknown_zones_and_unpinned_images_are_refused(args: list[str], message: str) -> None:
    result = _render(*args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


@pytest.mark.parametrize(
    "image", ["difymaint:1.2.3", "registry.example.com:5000/ops/difymaint:2026.1", "difymaint@sha256:" + "a" * 64]
)
def test_pinned_images_are_accepted(image: str) -> None:
    result = _render(f"--image={image}", "--only=clean-messages")
    assert result.exit_code == 0, result.output
    assert _container(yaml.safe_load(result.stdout))["image"] == image


def test_check_image_is_the_rule() -> None:
    with pytest.raises(RenderError, match="not pinned"):
        schedules.check_image("difymaint:LATEST")
