"""What ``difymaint schedule render`` renders with, beyond the operator's names: the schedule Dify's settings give
each job (:func:`difymaint.ops.schedule.job_schedule`), the environment every job gets (``--env``, a Helm
release's ``beat.extraEnv`` and ``worker.extraEnv``), the jobs that environment switches off, and the warnings the
operator must read.

Settings come from ``--env-file``, the environment, and (Helm) the chart's worker ConfigMap and the extraEnv
lists, later ones winning; ``--env`` wins over all. On Kubernetes a job the baked-in environment switches off
for certain renders suspended (``suspend: true``, a comment naming the switch) rather than being left out, so
the set of resources, and ``kubectl apply --prune``, does not change with a switch. Certain means: set there
to false; or, for a Helm release, whose ConfigMap carries none of Dify's beat switches, unset with Dify's
default off. A switch that comes from ``valueFrom`` is decided by the pod at run time (``--scheduled``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from difymaint.core.errors import ConfigError
from difymaint.core.redact import secret_name, url_password
from difymaint.core.settings import load_settings
from difymaint.dify.switches import override_variable
from difymaint.jobs import JOBS, JobInfo
from difymaint.ops.helm import HelmRelease, merge_env, read_release
from difymaint.ops.manifests import (
    CONFIG_MAP,
    SECRET,
    TIME_ZONE,
    EnvVar,
    RenderError,
    RenderOptions,
    check_env,
    scheduled_jobs,
    selected_jobs,
)
from difymaint.ops.schedule import job_schedule, schedule_variable

_as_bool = TypeAdapter(bool)
CHART_SOURCE = "the chart's worker ConfigMap"


@dataclass
class RenderPlan:
    options: RenderOptions
    registry: dict[str, JobInfo]  # the registry with each scheduled job's effective schedule
    warnings: list[str] = field(default_factory=list)  # one line each, for stderr


def parse_env_flags(values: Iterable[str]) -> list[EnvVar]:
    """``--env NAME=VALUE`` (repeatable; a later one of the same name wins)."""
    found: list[EnvVar] = []
    for text in values:
        name, sep, value = text.partition("=")
        if not sep:
            raise RenderError(f"--env takes NAME=VALUE, not {name!r}")
        variable = EnvVar(name, value, source="--env")
        check_env(variable)
        found.append(variable)
    return merge_env(found)


def beat_only_names(registry: Mapping[str, JobInfo]) -> set[str]:
    """Settings that only Dify's beat reads (which entries it schedules, how often, in which zone), plus
    difymaint's per-job overrides: in a Helm release they count from beat.extraEnv, never worker.extraEnv."""
    names = {"LOG_TZ"}
    for job in registry.values():
        names |= {override_variable(job.name), schedule_variable(job.name)}
        names |= {name for name in (job.dify_switch, job.interval_setting, job.every_days_setting) if name}
    return names


def prepare(
    options: RenderOptions,
    *,
    fmt: str,
    env_file: Path | None = None,
    env: Sequence[str] = (),
    helm_values: Path | None = None,
    helm_release: str | None = None,
    helm_fullname: str | None = None,
    jobs: Mapping[str, JobInfo] | None = None,
) -> RenderPlan:
    """The knobs and registry to render ``fmt`` with. ``options`` holds the flags as given; its config_map,
    secret and time_zone are filled here when empty. RenderError / ConfigError: one line, exit 2."""
    registry = dict(JOBS if jobs is None else jobs)
    helm: HelmRelease | None = None
    if helm_values is not None or helm_release or helm_fullname:
        if fmt != "k8s":
            raise RenderError("--helm-values, --helm-release and --helm-fullname are for --format k8s")
        helm = read_release(helm_values, helm_release, helm_fullname)
    flags = parse_env_flags(env)
    baked = merge_env(helm.cronjob_env(beat_only_names(registry)) if helm else [], flags)
    literal = {v.name: v.value for v in baked if v.value_from is None and v.value}
    from_ref = {v.name for v in baked if v.value_from is not None}
    sources = {v.name: v.source for v in baked}
    chart = dict(helm.chart_env) if helm else {}
    sources.update({name: CHART_SOURCE for name in chart if name not in sources})
    settings = load_settings(env_file if env_file is not None and env_file.is_file() else None, {**chart, **literal})

    selected = {job.name for job in selected_jobs(options, registry)}
    origins: list[tuple[str, str]] = []
    overridden: set[str] = set()
    for name, job in scheduled_jobs(registry).items():
        try:
            schedule = job_schedule(job, settings)
        except ConfigError:
            if name in selected:
                raise
            continue  # not rendered: its neighbours' deadlines keep its default
        registry[name] = replace(job, schedule=schedule.cron)
        if schedule.origin and name in selected:
            origins.append((name, schedule.origin))
        if schedule.overridden:
            overridden.add(name)

    suspended: list[tuple[str, str]] = []
    if fmt == "k8s":
        env_view = {**chart, **literal}
        for name in sorted(selected, key=list(registry).index):
            reason = switched_off(registry[name], env_view, from_ref, sources, defaults_known=helm is not None)
            if reason:
                suspended.append((name, reason))

    planned = replace(
        options,
        config_map=options.config_map or (helm.config_map if helm else CONFIG_MAP),
        secret=options.secret or (helm.secret if helm else SECRET),
        time_zone=options.time_zone or settings.LOG_TZ or TIME_ZONE,
        env=tuple(baked),
        suspended=tuple(suspended),
        origins=tuple(origins),
        overridden=frozenset(overridden),
        helm_fullname=helm.fullname if helm else "",
    )
    shaping = {"LOG_TZ"} | {
        name
        for job in registry.values()
        for name in (schedule_variable(job.name), job.interval_setting, job.every_days_setting)
        if name
    }
    return RenderPlan(planned, registry, _warnings(helm, helm_release, flags, from_ref & shaping))


def switched_off(
    job: JobInfo,
    env: Mapping[str, str],
    unknown: set[str],
    sources: Mapping[str, str],
    *,
    defaults_known: bool,
) -> str:
    """Why the environment baked into the job's CronJob turns a scheduled run off for certain ("" if it does
    not, or cannot be known before run time). ``env``: the literal values; ``unknown``: names set by valueFrom;
    ``defaults_known``: nothing else sets Dify's switches (a Helm release), so an unset one has Dify's default."""
    override = override_variable(job.name)
    if override in unknown:
        return ""
    if override in env:
        return "" if _on(override, env[override], sources) else f"{override}=false in {sources[override]}"
    for switch in job.switches:
        if switch.name in unknown:
            continue
        if switch.name in env:
            if not _on(switch.name, env[switch.name], sources):
                return f"{switch.name}=false in {sources[switch.name]}"
        elif defaults_known and not switch.dify_default:
            return f"{switch.name} is not set in beat.extraEnv and Dify's default is off"
    return ""


def _on(name: str, value: str, sources: Mapping[str, str]) -> bool:
    try:
        return _as_bool.validate_python(value.strip())
    except ValidationError:
        raise RenderError(f"{name}={value!r} in {sources.get(name, '--env')} is not true or false") from None


def _warnings(
    helm: HelmRelease | None, release: str | None, flags: Sequence[EnvVar], unknown_shaping: set[str]
) -> list[str]:
    warnings: list[str] = []
    if helm is not None and helm.beat_enabled:
        warnings.append(
            "Dify's beat is still on in this release (beat.enabled): it and these CronJobs would both run the jobs; "
            f"turn it off durably with `helm upgrade {release or 'RELEASE'} CHART --reuse-values --set "
            "beat.enabled=false` (a `kubectl scale` to 0 is undone by the next helm upgrade)"
        )
    for name in sorted(unknown_shaping):
        warnings.append(
            f"{name} comes from valueFrom: its value is unknown here, so the schedules assume Dify's default for it"
        )
    for variable in flags:
        if secret_name(variable.name) or url_password(variable.value or ""):
            warnings.append(
                f"--env {variable.name}: the value is written in clear into the rendered files; "
                "prefer the Secret the pods read (--secret) or a valueFrom"
            )
    return warnings
