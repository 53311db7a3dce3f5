"""``difymaint schedule render``: the crontab, Kubernetes CronJobs (a kustomize base) or systemd units for this
installation, rendered from the job registry with the operator's names (the renderer: difymaint.ops.manifests)."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from difymaint.core.exit_codes import ExitCode


class Format(StrEnum):
    K8S = "k8s"
    CRONTAB = "crontab"
    SYSTEMD = "systemd"


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="schedule",
        help="The schedule artefacts (Kubernetes CronJobs, /etc/cron.d file, systemd timers) for this installation.",
        no_args_is_help=True,
        rich_markup_mode=None,
    )
    group.command(
        "render",
        help="Render the schedule for every scheduled job (or --only some) with your image, names and time zone. "
        "Without --output: k8s prints the manifests as one YAML stream (for kubectl apply -f -), crontab the "
        "/etc/cron.d file, systemd the units with a '# ==> NAME <==' line before each. With --output DIR: every "
        "file, including the kustomization and READMEs, written into DIR. Every job still honours Dify's switches "
        "(--scheduled); the defaults render what deploy/ holds.",
        short_help="Render the crontab, CronJobs or systemd timers with your names.",
    )(render)
    app.add_typer(group)


def _log_tz(env_file: Path | None) -> str | None:
    """Dify's beat time zone: LOG_TZ from the environment, else from Dify's .env."""
    if os.environ.get("LOG_TZ"):
        return os.environ["LOG_TZ"]
    if env_file is not None and env_file.is_file():
        from dotenv import dotenv_values

        return dotenv_values(env_file).get("LOG_TZ") or None
    return None


def render(
    fmt: Annotated[Format, typer.Option("--format", "-f", help="What to render.")] = Format.K8S,
    image: Annotated[
        str | None,
        typer.Option("--image", metavar="IMAGE", help="Image reference, pinned (default: difymaint:VERSION)."),
    ] = None,
    config_map: Annotated[
        str | None,
        typer.Option("--config-map", metavar="NAME", help="Dify API ConfigMap the pods read (default: dify-api)."),
    ] = None,
    secret: Annotated[
        str | None, typer.Option("--secret", metavar="NAME", help="Dify API Secret the pods read (default: dify-api).")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", metavar="NAME", help="Namespace of Dify (default: dify).")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", metavar="JOB", help="Render only this job (repeat for more); default: every one."),
    ] = None,
    time_zone: Annotated[
        str | None,
        typer.Option(
            "--time-zone",
            metavar="TZ",
            help="IANA zone of the schedules (k8s timeZone, systemd OnCalendar); default: Dify's LOG_TZ from the "
            "environment or --env-file, else Etc/UTC.",
        ),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="PATH",
            help="Dify's .env: where crontab/systemd runs read settings from, and LOG_TZ (default: "
            "/opt/dify/docker/.env).",
        ),
    ] = None,
    binary: Annotated[
        str | None,
        typer.Option(
            "--binary", metavar="PATH", help="systemd: absolute path of difymaint (default: /usr/local/bin/difymaint)."
        ),
    ] = None,
    compose_dir: Annotated[
        Path | None,
        typer.Option(
            "--compose-dir",
            metavar="DIR",
            help="crontab: run every job with `docker compose run --rm difymaint` in Dify's docker/ directory DIR "
            "(with deploy/compose/docker-compose.difymaint.yaml copied there).",
        ),
    ] = None,
    shards: Annotated[
        int,
        typer.Option(
            "--shards",
            metavar="N",
            min=1,
            max=64,
            help="k8s: run the jobs that take --shard (clean-messages, clean-workflow-runs, clean-workflow-logs) as "
            "Indexed Jobs of N pods, pod K with --shard=K/N.",
        ),
    ] = 1,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="DIR", help="Write the files into DIR instead of printing them."),
    ] = None,
) -> int:
    from difymaint.ops import manifests as schedules

    defaults = schedules.DEFAULTS
    options = schedules.RenderOptions(
        image=image or defaults.image,
        config_map=config_map or defaults.config_map,
        secret=secret or defaults.secret,
        namespace=namespace or defaults.namespace,
        time_zone=time_zone or _log_tz(env_file) or defaults.time_zone,
        env_file=str(env_file.absolute()) if env_file is not None else defaults.env_file,
        binary=binary or defaults.binary,
        only=tuple(only or ()),
        compose_dir=str(compose_dir.absolute()) if compose_dir is not None else "",
        namespaced=output is None,  # a stream for kubectl apply has no kustomization to set the namespace
        shards=shards,
    )
    if shards > 1 and fmt.value != "k8s":
        return _usage("--shards is for --format k8s (Indexed Jobs); with cron, run one line per shard by hand")
    if not options.binary.startswith("/"):
        return _usage("--binary must be an absolute path (systemd runs ExecStart without a PATH search)")
    try:
        files = schedules.render_format(fmt.value, options)
    except ValueError as exc:  # RenderError, ScheduleError: one line
        return _usage(str(exc))
    if output is not None:
        prefix = {
            Format.K8S: schedules.K8S_DIR,
            Format.CRONTAB: schedules.CRONTAB_DIR,
            Format.SYSTEMD: schedules.SYSTEMD_DIR,
        }[fmt]
        for relative, text in files.items():
            path = output / relative.removeprefix(prefix + "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        typer.echo(f"{len(files)} file(s) written to {output}", err=True)
        return int(ExitCode.OK)
    out = sys.stdout
    if fmt is Format.K8S:
        names = [job.name for job in schedules.selected_jobs(options)]
        manifests = [files[f"{schedules.K8S_DIR}/{name}.yaml"] for name in names]
        out.write("---\n".join(manifests))
    elif fmt is Format.CRONTAB:
        out.write(files[f"{schedules.CRONTAB_DIR}/{schedules.CRONTAB_FILE}"])
    else:
        for relative, text in files.items():
            if not relative.endswith(".md"):
                out.write(f"# ==> {relative.rsplit('/', 1)[1]} <==\n{text}\n")
    return int(ExitCode.OK)


def _usage(message: str) -> int:
    from difymaint.core.redact import scrub

    typer.echo(f"difymaint: error: {scrub(message)}", err=True)
    return int(ExitCode.USAGE)
