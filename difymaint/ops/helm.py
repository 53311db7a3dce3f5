"""Dify's community Helm chart (BorisPolonsky/dify-helm): the environment its Celery beat sees, read from the
release's values, so that the CronJobs replacing the beat see the same (README, "Kubernetes with the Helm
chart").

What the chart gives the beat Deployment (rendered while ``beat.enabled``, its default): ``envFrom`` the
ConfigMap and the Secret named ``<fullname>-worker`` (the worker's; there is no beat ConfigMap), then the env
list ``MODE=beat``, ``LOG_LEVEL`` and ``beat.extraEnv`` (``name`` with ``value`` or ``valueFrom``). That
ConfigMap carries none of Dify's beat switches or intervals except ``MARKETPLACE_ENABLED`` (from
``global.marketplace.enabled``), so Dify's defaults plus ``beat.extraEnv`` decide which jobs the beat schedules
and how often. Dify's worker, which runs the jobs' bodies, reads the same ConfigMap and Secret plus
``worker.extraEnv``: the settings a body reads (retention days, batch sizes) are set there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difymaint.ops.manifests import ENV_NAME, EnvVar, RenderError

CHART_NAME = "dify"  # .Chart.Name, the default of nameOverride
NAME_LIMIT = 63  # the chart truncates fullname to this (DNS label)
# `helm get values RELEASE` without `-o yaml` prints one of these header lines before the YAML.
_HEADERS = ("USER-SUPPLIED VALUES", "COMPUTED VALUES")


@dataclass(frozen=True)
class HelmRelease:
    fullname: str
    beat_enabled: bool
    beat_env: tuple[EnvVar, ...]  # beat.extraEnv, in order
    worker_env: tuple[EnvVar, ...]  # worker.extraEnv, in order
    chart_env: Mapping[str, str]  # what the worker ConfigMap says about Dify's switches (MARKETPLACE_ENABLED)

    @property
    def config_map(self) -> str:
        return f"{self.fullname}-worker"

    @property
    def secret(self) -> str:
        return f"{self.fullname}-worker"

    def cronjob_env(self, beat_only: Iterable[str]) -> list[EnvVar]:
        """What the CronJobs get in their env: worker.extraEnv (what the jobs' bodies read in Dify), without the
        names only the beat decides by (``beat_only``: switches, intervals, LOG_TZ, difymaint's per-job
        overrides), then beat.extraEnv, winning by name."""
        skip = set(beat_only)
        return merge_env([variable for variable in self.worker_env if variable.name not in skip], self.beat_env)


def merge_env(*layers: Sequence[EnvVar]) -> list[EnvVar]:
    """The layers' variables, a later one replacing an earlier one of the same name (in its place)."""
    merged: dict[str, EnvVar] = {}
    for layer in layers:
        for variable in layer:
            merged[variable.name] = variable
    return list(merged.values())


def chart_fullname(values: Mapping[str, Any], release: str | None) -> str:
    """``dify.fullname`` as the chart computes it: fullnameOverride; else the release name when it contains
    the chart's name (nameOverride, else "dify"), else ``<release>-<name>``; at most 63 characters, one
    trailing '-' dropped."""
    override = _text(values.get("fullnameOverride"), "fullnameOverride")
    if override:
        return _trim(override)
    if not release:
        raise RenderError(
            "the chart names its ConfigMap and Secret after the release: pass --helm-release NAME "
            "(or --helm-fullname NAME, or set fullnameOverride in the values)"
        )
    name = _text(values.get("nameOverride"), "nameOverride") or CHART_NAME
    return _trim(release if name in release else f"{release}-{name}")


def read_release(values_file: Path | None, release: str | None = None, fullname: str | None = None) -> HelmRelease:
    """The beat-relevant part of a release's values (a values.yaml, or ``helm get values RELEASE -o yaml``);
    no file means the chart's defaults."""
    values = load_values(values_file) if values_file is not None else {}
    beat = _section(values, "beat")
    worker = _section(values, "worker")
    marketplace = _section(_section(values, "global"), "marketplace")
    return HelmRelease(
        fullname=fullname or chart_fullname(values, release),
        beat_enabled=_flag(beat.get("enabled", True), "beat.enabled"),
        beat_env=tuple(extra_env(beat.get("extraEnv"), "beat.extraEnv")),
        worker_env=tuple(extra_env(worker.get("extraEnv"), "worker.extraEnv")),
        chart_env={
            "MARKETPLACE_ENABLED": "true"
            if _flag(marketplace.get("enabled", True), "global.marketplace.enabled")
            else "false"
        },
    )


def load_values(path: Path) -> dict[str, Any]:
    import yaml  # only `schedule render --helm-values` needs it

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RenderError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RenderError(f"{path} is not UTF-8 text (a Helm values file)") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise RenderError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise RenderError(f"{path}: a Helm values file is a mapping at the top, not a {type(loaded).__name__}")
    return {key: value for key, value in loaded.items() if not (key in _HEADERS and value is None)}


def extra_env(raw: object, where: str) -> list[EnvVar]:
    """A chart ``extraEnv`` list: Kubernetes EnvVar objects, copied as given (a literal value becomes text, as
    the container would see it)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RenderError(f"{where} must be a list of {{name, value}} or {{name, valueFrom}} entries")
    found: list[EnvVar] = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RenderError(f"{at} must be a mapping with a name")
        name = item["name"]
        if not ENV_NAME.match(name):
            raise RenderError(f"{at}: {name!r} is not an environment variable name")
        if "valueFrom" in item:
            if "value" in item or not isinstance(item["valueFrom"], dict):
                raise RenderError(f"{at} ({name}): valueFrom must be a mapping, and without a value beside it")
            found.append(EnvVar(name, value_from=item["valueFrom"], source=where))
            continue
        found.append(EnvVar(name, _env_text(item.get("value"), f"{at} ({name})"), source=where))
    return found


def _env_text(value: object, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # YAML's unquoted true/false: Go templates print them lower case
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise RenderError(f"{where}: value must be text, not a {type(value).__name__}")


def _section(values: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    section = values.get(key)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise RenderError(f"Helm values: {key} must be a mapping")
    return section


def _flag(value: object, where: str) -> bool:
    # Only YAML booleans: the chart's `if` would take the text "false" for true, which no one means.
    if isinstance(value, bool):
        return value
    raise RenderError(f"Helm values: {where} must be true or false (unquoted), not {value!r}")


def _text(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RenderError(f"Helm values: {where} must be text")
    return value


def _trim(name: str) -> str:
    name = name[:NAME_LIMIT]
    return name[:-1] if name.endswith("-") else name  # Helm's trimSuffix: one '-'
