"""``difymaint schedule render``: the crontab, Kubernetes CronJobs (a kustomize base) or systemd units for this
installation, rendered from the job registry with the operator's names (the renderer: difymaint.ops.manifests)."""

from __future__ import annotations

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
        "Without --output: k8s prints the CronJobs as one YAML stream (for kubectl apply -f -), crontab the "
        "/etc/cron.d file, systemd the units with a '# ==> NAME <==' line before each. With --output DIR: every "
        "file, including the kustomization and READMEs, written into DIR; into a folder rendered before, --only "
        "merges (the other jobs stay in the kustomization) and a file changed since it was rendered is kept "
        "unless --force. The schedules follow Dify's interval settings (QUEUE_MONITOR_INTERVAL, "
        "CELERY_BEAT_SCHEDULER_TIME, ...) and DIFYMAINT_SCHEDULE_<JOB>, from --env-file, the environment, --env "
        "and (Helm) the release's values; an interval cron cannot express exactly is refused. On Kubernetes the "
        "jobs that run every minute share one CronJob (one pod a minute), and --helm-values renders what Dify's "
        "beat in that release sees: its ConfigMap and Secret, beat.extraEnv baked in, and the jobs it switches "
        "off suspended. Every job still honours Dify's switches (--scheduled); the defaults render what deploy/ "
        "holds.",
        short_help="Render the crontab, CronJobs or systemd timers with your names.",
    )(render)
    app.add_typer(group)


def render(
    fmt: Annotated[Format, typer.Option("--format", "-f", help="What to render.")] = Format.K8S,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            metavar="IMAGE",
            help="Image reference, pinned: name:TAG (not latest) or name@sha256:... (default: difymaint:VERSION).",
        ),
    ] = None,
    config_map: Annotated[
        str | None,
        typer.Option(
            "--config-map",
            metavar="NAME",
            help="ConfigMap with Dify's settings the pods read (default: dify-worker, or <fullname>-worker with Helm).",
        ),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            metavar="NAME",
            help="Secret with Dify's settings the pods read (default: dify-worker, or <fullname>-worker with Helm).",
        ),
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
            help="IANA zone of the schedules (k8s timeZone, systemd OnCalendar); default: Dify's LOG_TZ (from "
            "--env, beat.extraEnv, the environment or --env-file), else Etc/UTC.",
        ),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="PATH",
            help="Dify's .env: where crontab/systemd runs read settings from, and (when it exists here) LOG_TZ and "
            "Dify's intervals for the schedules (default: /opt/dify/docker/.env).",
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            metavar="NAME=VALUE",
            help="Give every rendered job this variable (k8s env, systemd Environment=, a crontab variable), e.g. "
            "DIFYMAINT_ENABLE_CLEAN_MESSAGES=true; it also shapes the schedules. Repeat for more.",
        ),
    ] = None,
    helm_values: Annotated[
        Path | None,
        typer.Option(
            "--helm-values",
            metavar="FILE",
            help="k8s: the Dify Helm release's values (BorisPolonsky/dify-helm; `helm get values RELEASE -o yaml`): "
            "the pods read the beat's <fullname>-worker ConfigMap and Secret, get beat.extraEnv (and the "
            "worker.extraEnv settings the jobs read), and jobs the beat would not run are suspended.",
        ),
    ] = None,
    helm_release: Annotated[
        str | None,
        typer.Option(
            "--helm-release",
            metavar="NAME",
            help="k8s: the Helm release name (the chart's fullname follows from it and the values' "
            "nameOverride / fullnameOverride).",
        ),
    ] = None,
    helm_fullname: Annotated[
        str | None,
        typer.Option(
            "--helm-fullname", metavar="NAME", help="k8s: the chart's fullname itself (instead of --helm-release)."
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
    force: Annotated[
        bool, typer.Option("--force", help="With --output: overwrite files changed since they were rendered.")
    ] = False,
) -> int:
    from difymaint.core.errors import DifymaintError
    from difymaint.ops import manifests as schedules
    from difymaint.ops.render_files import read_state, write_rendered
    from difymaint.ops.render_plan import prepare

    if shards > 1 and fmt.value != "k8s":
        return _usage("--shards is for --format k8s (Indexed Jobs); with cron, run one line per shard by hand")
    defaults = schedules.DEFAULTS
    wanted = tuple(only or ())
    state = read_state(output, fmt.value) if output is not None else None
    known = schedules.scheduled_jobs()
    # Into a folder rendered before, --only adds to the jobs already there (merge, not replace).
    rendered = (*(job for job in state.jobs if job in known), *wanted) if state is not None and wanted else wanted
    options = schedules.RenderOptions(
        image=image or defaults.image,
        config_map=config_map or "",
        secret=secret or "",
        namespace=namespace or defaults.namespace,
        time_zone=time_zone or "",
        env_file=str(env_file.absolute()) if env_file is not None else defaults.env_file,
        binary=binary or defaults.binary,
        only=tuple(dict.fromkeys(rendered)),
        compose_dir=str(compose_dir.absolute()) if compose_dir is not None else "",
        namespaced=output is None,  # a stream for kubectl apply has no kustomization to set the namespace
        shards=shards,
    )
    if not options.binary.startswith("/"):
        return _usage("--binary must be an absolute path (systemd runs ExecStart without a PATH search)")
    try:
        plan = prepare(
            options,
            fmt=fmt.value,
            env_file=env_file,
            env=env or (),
            helm_values=helm_values,
            helm_release=helm_release,
            helm_fullname=helm_fullname,
        )
        files = schedules.render_format(fmt.value, plan.options, plan.registry)
        selected = schedules.selected_jobs(plan.options, plan.registry)
        for warning in plan.warnings:
            typer.echo(f"difymaint: warning: {warning}", err=True)
        if output is not None:
            prefix = {
                Format.K8S: schedules.K8S_DIR,
                Format.CRONTAB: schedules.CRONTAB_DIR,
                Format.SYSTEMD: schedules.SYSTEMD_DIR,
            }[fmt] + "/"
            # --only rewrites no other job's own files (their CronJob, their units): only the shared ones.
            others = {
                path
                for job in selected
                if wanted and job.name not in wanted
                for path in schedules.job_files(fmt.value, job.name)
            }
            todo = {path.removeprefix(prefix): text for path, text in files.items() if path not in others}
            written = write_rendered(output, fmt.value, todo, [job.name for job in selected], force=force)
            typer.echo(f"{len(written)} file(s) written to {output} ({len(todo) - len(written)} unchanged)", err=True)
            return int(ExitCode.OK)
    except ValueError as exc:  # RenderError, ScheduleError: one line
        return _usage(str(exc))
    except DifymaintError as exc:  # a setting Dify's beat would also reject, an interval cron cannot express
        return _usage(f"{exc.message} — {exc.hint}" if exc.hint else exc.message)
    out = sys.stdout
    if fmt is Format.K8S:
        out.write("---\n".join(files[path] for path in schedules.cronjob_paths(selected)))
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
