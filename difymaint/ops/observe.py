"""What a run tells the outside world besides its summary: dead-man pings and Prometheus metrics.

Both are best-effort. A ping or a metrics write that fails is one warning; it never changes the run's
outcome or exit code, because a monitoring outage must not turn a good cleanup into a failed CronJob.

* **Pings** follow the healthchecks.io convention that Cronitor, Uptime Kuma and Better Stack also accept:
  ``<url>/start`` when the run begins, ``<url>`` when it ends well, ``<url>/fail`` when it fails, with a run id
  (``?rid=``) so overlapping runs are told apart. ``{job}`` in the URL is replaced by the job name, so one
  setting (``DIFYMAINT_PING_URL=https://hc-ping.com/<ping-key>/{job}``) serves every job.
* **Sentry** (Dify's ``SENTRY_DSN``): a Crons check-in per run and an error event per failed run.
* **OpenTelemetry** (Dify's ``ENABLE_OTEL``/``OTLP_*``): the same figures over OTLP/HTTP, flushed at exit.
* **Metrics** use prometheus-client: a node_exporter textfile (written atomically, ``{job}`` expanded, or a
  directory that gets ``difymaint_<job>.prom``) and/or a Pushgateway group per job. The last-success
  timestamp survives failed runs: the textfile keeps the previous value, the Pushgateway is updated with
  POST, which replaces only the metrics a push names.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from difymaint.core.exit_codes import ExitCode
from difymaint.core.redact import dumps_masked, scrub
from difymaint.core.settings import Settings
from difymaint.core.summary import Outcome, RunSummary

if TYPE_CHECKING:
    import httpx
    from prometheus_client import CollectorRegistry

log = logging.getLogger("difymaint")

PING_TIMEOUT_S = 10.0
PUSH_TIMEOUT_S = 10.0
SENTRY_FLUSH_S = 5.0
OTEL_TIMEOUT_S = 10.0

# What a dead-man switch should hear for each ending. Partial runs made progress and will go on at the
# next tick; a run skipped because another holds the lock did nothing, so it only logs (a lock held forever
# then shows up as missing successes); a disabled job did what the configuration asks.
_PING_FOR_OUTCOME: dict[Outcome, str] = {
    Outcome.DONE: "",
    Outcome.PARTIAL: "",
    Outcome.DISABLED: "",
    Outcome.PAUSED: "",  # `difymaint pause`: an operator's deliberate choice, like a disabled job
    Outcome.SKIPPED_LOCKED: "/log",
    Outcome.THRESHOLD_EXCEEDED: "/fail",
    Outcome.INTERRUPTED: "/fail",
    Outcome.FAILED: "/fail",
}

_SUCCESSFUL = (Outcome.DONE, Outcome.PARTIAL, Outcome.DISABLED, Outcome.PAUSED)


class Observer(Protocol):
    def started(self, job: str, run_id: str) -> None: ...

    def finished(self, summary: RunSummary, run_id: str) -> None: ...


def expand(template: str, job: str) -> str:
    return template.replace("{job}", job)


@dataclass
class PingObserver:
    """healthchecks.io-style start / success / fail pings."""

    url_template: str
    client: httpx.Client | None = None  # created on first use: httpx is imported only when pings are on

    def _ping(self, job: str, suffix: str, run_id: str, body: str = "") -> None:
        import httpx

        if self.client is None:
            self.client = httpx.Client(timeout=PING_TIMEOUT_S)
        url = expand(self.url_template, job).rstrip("/") + suffix
        try:
            response = self.client.post(url, params={"rid": run_id}, content=body.encode())
            response.raise_for_status()
        except httpx.HTTPError as exc:
            # The URL carries the check's secret key: name the failure, not the address.
            log.warning("warning: the %s ping for %s failed (%s)", suffix.lstrip("/") or "success", job, _reason(exc))

    def started(self, job: str, run_id: str) -> None:
        self._ping(job, "/start", run_id)

    def finished(self, summary: RunSummary, run_id: str) -> None:
        # The body is what the check's event log shows: the one-line summary, or the error line.
        self._ping(
            summary.job,
            _PING_FOR_OUTCOME[summary.outcome],
            run_id,
            body=dumps_masked(summary.to_dict(), separators=(",", ":")),
        )


def _reason(exc: httpx.HTTPError) -> str:
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


METRIC_PREFIX = "difymaint"


def _build_registry(summary: RunSummary, last_success: float | None) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    # Not `job`: Prometheus sets that label itself (to the scrape job), which would shadow ours.
    labels = {"job_name": summary.job}

    def gauge(name: str, doc: str, value: float, **extra: str) -> None:
        metric = Gauge(f"{METRIC_PREFIX}_{name}", doc, [*labels, *extra], registry=registry)
        metric.labels(**labels, **extra).set(value)

    finished_at = summary.started_at.timestamp() + summary.duration_s
    gauge("last_run_timestamp_seconds", "When the last run ended (Unix time).", finished_at)
    gauge("last_run_duration_seconds", "How long the last run took.", summary.duration_s)
    gauge("last_run_exit_code", "Exit code of the last run.", int(summary.exit_code))
    gauge("last_run_dry_run", "1 when the last run was a dry run.", 1 if summary.dry_run else 0)
    gauge("last_run_batches", "Batches the last run committed.", summary.batches)
    outcome = Gauge(
        f"{METRIC_PREFIX}_last_run_outcome",
        "1 for the outcome of the last run.",
        ["job_name", "outcome"],
        registry=registry,
    )
    for candidate in Outcome:
        outcome.labels(job_name=summary.job, outcome=candidate.value).set(1 if candidate == summary.outcome else 0)
    rows = Gauge(
        f"{METRIC_PREFIX}_last_run_rows",
        "Rows the last run deleted or changed (would have, on a dry run), per table.",
        ["job_name", "table"],
        registry=registry,
    )
    for table, count in summary.tables.items():
        rows.labels(job_name=summary.job, table=table).set(count)
    if summary.rows_remaining is not None:
        gauge("rows_remaining", "Rows still past the cut-off when the last run stopped.", summary.rows_remaining)
    # Job-specific figures (sweep-files: files_bytes_freed, files_orphan_backlog; docs/monitoring.md).
    for name, value in (summary.details.get("metrics") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            gauge(f"last_run_{name}", f"{name} of the last run (docs/monitoring.md).", value)
    if "throttled_s" in summary.details:  # --max-replica-lag was on (engine/throttle.py)
        throttled = float(summary.details["throttled_s"])
        gauge("last_run_throttled_seconds", "Seconds the last run waited for lagging replicas.", throttled)
        waits = int(summary.details.get("throttle_waits", 0))
        gauge("last_run_throttle_waits", "Times the last run waited for lagging replicas.", waits)
        lag = float(summary.details.get("replica_lag_max_s", 0.0))
        gauge("last_run_replica_lag_max_seconds", "The largest replica lag the last run saw before a batch.", lag)
    if last_success is not None:
        gauge("last_success_timestamp_seconds", "When a run last ended well (done, partial or disabled).", last_success)
    _queue_metrics(summary, registry, gauge)
    return registry


def _queue_metrics(summary: RunSummary, registry: CollectorRegistry, gauge: Callable[..., None]) -> None:
    """monitor-queue --all-queues: consumers per queue, the dead-queue count, the broker's memory."""
    from prometheus_client import Gauge

    details, queues = summary.details, summary.details.get("queues")
    if "workers" in details and isinstance(queues, dict):
        consumers = Gauge(
            f"{METRIC_PREFIX}_queue_consumers",
            "Celery workers consuming the queue (monitor-queue --all-queues).",
            ["job_name", "queue"],
            registry=registry,
        )
        for queue, measured in queues.items():
            consumers.labels(job_name=summary.job, queue=queue).set(measured.get("consumers", 0))
        gauge("dead_queues", "Queues holding messages that no worker consumes.", len(details.get("dead_queues") or ()))
    memory = details.get("broker_memory")
    if isinstance(memory, dict):
        gauge("broker_used_memory_bytes", "used_memory of the Celery broker's Redis.", memory["used_memory"])
        gauge("broker_maxmemory_bytes", "maxmemory of the Celery broker's Redis (0 = no limit).", memory["maxmemory"])


def _previous_last_success(path: Path, job: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            if family.name == f"{METRIC_PREFIX}_last_success_timestamp_seconds":
                for sample in family.samples:
                    if sample.labels.get("job_name") == job:
                        return float(sample.value)
    except ValueError:  # a damaged file is rewritten below
        return None
    return None


def _success_time(summary: RunSummary) -> float | None:
    if summary.outcome in _SUCCESSFUL and summary.exit_code in (ExitCode.OK, ExitCode.PARTIAL):
        return summary.started_at.timestamp() + summary.duration_s
    return None


@dataclass
class TextfileObserver:
    """A node_exporter textfile per job, replaced atomically (written next to it, then renamed)."""

    target: str

    def path_for(self, job: str) -> Path:
        path = Path(expand(self.target, job))
        return path / f"{METRIC_PREFIX}_{job.replace('-', '_')}.prom" if path.is_dir() else path

    def started(self, job: str, run_id: str) -> None:
        return None

    def finished(self, summary: RunSummary, run_id: str) -> None:
        from prometheus_client import write_to_textfile

        path = self.path_for(summary.job)
        last_success = _success_time(summary) or _previous_last_success(path, summary.job)
        try:
            write_to_textfile(str(path), _build_registry(summary, last_success))
        except OSError as exc:
            log.warning("warning: cannot write the metrics textfile %s: %s", path, exc.strerror or exc)


@dataclass
class PushgatewayObserver:
    """One Pushgateway group per job (``job="difymaint", job_name="<job>"``), updated with POST (pushadd)."""

    url: str

    def started(self, job: str, run_id: str) -> None:
        return None

    def finished(self, summary: RunSummary, run_id: str) -> None:
        from prometheus_client import pushadd_to_gateway

        registry = _build_registry(summary, _success_time(summary))
        try:
            pushadd_to_gateway(
                self.url,
                job=METRIC_PREFIX,
                grouping_key={"job_name": summary.job},
                registry=registry,
                timeout=PUSH_TIMEOUT_S,
            )
        except OSError as exc:  # urllib's URLError and socket errors
            log.warning("warning: cannot push metrics to the Pushgateway: %s", type(exc).__name__)


@dataclass
class SentryObserver:
    """Dify's ``SENTRY_DSN``: a Crons check-in per run (in progress, then ok or error, with the schedule so
    Sentry also notices missed runs) and one error event when a run fails, tagged with the job."""

    dsn: str
    schedule: str
    environment: str = "PRODUCTION"
    _check_in_id: str | None = None

    def _sdk(self) -> Any:
        import sentry_sdk

        if not sentry_sdk.is_initialized():
            from difymaint import __version__

            sentry_sdk.init(
                dsn=self.dsn,
                release=f"difymaint@{__version__}",
                environment=self.environment,
                # Only what we send: no logging breadcrumbs that could carry row data, no PII.
                default_integrations=False,
                send_default_pii=False,
                traces_sample_rate=0,
            )
        return sentry_sdk

    def _monitor_config(self) -> Any:  # sentry_sdk types it as a private TypedDict
        return {
            "schedule": {"type": "crontab", "value": self.schedule},
            "checkin_margin": 10,  # minutes: cron and CronJob start times wander a little
            "max_runtime": 24 * 60,
            "timezone": "UTC",
        }

    def started(self, job: str, run_id: str) -> None:
        from sentry_sdk.crons import capture_checkin

        self._sdk()
        self._check_in_id = capture_checkin(
            monitor_slug=f"difymaint-{job}", status="in_progress", monitor_config=self._monitor_config()
        )

    def finished(self, summary: RunSummary, run_id: str) -> None:
        from sentry_sdk.crons import capture_checkin

        sdk = self._sdk()
        failed = summary.outcome in (Outcome.FAILED, Outcome.INTERRUPTED, Outcome.THRESHOLD_EXCEEDED)
        if failed:
            with sdk.new_scope() as scope:
                scope.set_tag("job", summary.job)
                scope.set_tag("outcome", summary.outcome.value)
                scope.set_tag("dry_run", str(summary.dry_run).lower())
                scope.set_context("run", {"run_id": run_id, "exit_code": int(summary.exit_code)})
                # Group by job, not by the changing text (ids, counts) of the error line.
                scope.fingerprint = ["difymaint", summary.job, summary.outcome.value]
                message = f"{summary.job} {summary.outcome.value}: {scrub(summary.error or '')}".strip()
                sdk.capture_message(message, "error")
        capture_checkin(
            monitor_slug=f"difymaint-{summary.job}",
            check_in_id=self._check_in_id,
            status="error" if failed else "ok",
            duration=summary.duration_s,
            monitor_config=self._monitor_config(),
        )
        sdk.flush(timeout=SENTRY_FLUSH_S)


@dataclass
class OtelObserver:
    """Dify's ``ENABLE_OTEL``: the run's metrics over OTLP/HTTP to ``OTLP_METRIC_ENDPOINT`` (or
    ``OTLP_BASE_ENDPOINT``/v1/metrics), with ``OTLP_API_KEY`` as a bearer token, as Dify's API sends them.

    Every job reports ``difymaint_*`` instruments; clean-messages and clean-workflow-runs also report under
    the names Dify's own retention services use, so existing dashboards keep working. A CLI lives seconds,
    so the provider is flushed and shut down before the process exits (no periodic export).
    """

    endpoint: str
    api_key: str = ""
    dify_task: str = ""

    def started(self, job: str, run_id: str) -> None:
        return None

    def finished(self, summary: RunSummary, run_id: str) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
            from opentelemetry.sdk.resources import Resource
        except ImportError:
            log.warning("warning: ENABLE_OTEL is on but OpenTelemetry is not installed: pip install 'difymaint[otel]'")
            return
        from difymaint import __version__

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        exporter = OTLPMetricExporter(endpoint=self.endpoint, headers=headers, timeout=OTEL_TIMEOUT_S)
        # Collected once and exported once, here: a periodic reader would export again at shutdown.
        reader = InMemoryMetricReader()
        resource = Resource.create({"service.name": "difymaint", "service.version": __version__})
        provider = MeterProvider(resource=resource, metric_readers=[reader])
        try:
            _record(provider.get_meter("difymaint"), summary, self.dify_task)
            data = reader.get_metrics_data()
            if data is not None and exporter.export(data) is not MetricExportResult.SUCCESS:
                log.warning("warning: the OpenTelemetry metrics export to the OTLP endpoint failed")
        finally:
            provider.shutdown()
            exporter.shutdown()


def _record(meter: Any, summary: RunSummary, dify_task: str) -> None:
    base = {"job_name": summary.job, "dry_run": summary.dry_run}
    status = {**base, "status": summary.outcome.value}
    meter.create_counter("difymaint_runs_total", description="Runs, by outcome").add(1, status)
    meter.create_histogram("difymaint_run_duration_seconds", unit="s").record(summary.duration_s, status)
    meter.create_counter("difymaint_batches_total").add(summary.batches, base)
    rows = meter.create_counter("difymaint_rows_total", description="Rows deleted or changed, per table")
    for table, count in summary.tables.items():
        rows.add(count, {**base, "table": table})
    if summary.rows_remaining is not None:
        remaining = meter.create_gauge("difymaint_rows_remaining", description="Rows past the cut-off left over")
        remaining.set(summary.rows_remaining, base)
    if "workers" in summary.details:
        dead = meter.create_gauge("difymaint_dead_queues", description="Queues holding messages no worker consumes")
        dead.set(len(summary.details.get("dead_queues") or ()), base)
    if "throttled_s" in summary.details:
        throttled = meter.create_counter("difymaint_throttled_seconds_total", unit="s", description="Replica-lag waits")
        throttled.add(float(summary.details["throttled_s"]), base)
    dify = _DIFY_METRICS.get(summary.job)
    if dify is None:
        return
    prefix, root_table, deleted_name = dify
    start_from = summary.window.get("start_from")
    labels = {
        "job_name": dify_task or summary.job,
        "dry_run": summary.dry_run,
        "window_mode": "between" if start_from else "before_cutoff",
        "task_label": _task_label(summary),
    }
    meter.create_counter(f"{prefix}_jobs_total").add(1, {**labels, "status": _dify_status(summary)})
    meter.create_counter(f"{prefix}_batches_total").add(summary.batches, labels)
    meter.create_counter(f"{prefix}_{deleted_name}").add(summary.tables.get(root_table, 0), labels)
    meter.create_histogram(f"{prefix}_job_duration_seconds", unit="s").record(summary.duration_s, labels)
    if prefix == "workflow_run_cleanup":
        related = meter.create_counter(f"{prefix}_related_records_total")
        action = "would_delete" if summary.dry_run else "deleted"
        for table, count in summary.tables.items():
            if table != root_table:
                related.add(count, {**labels, "action": action, "record_type": table})


# job → (Dify's metric prefix, the root table, the name of the "deleted roots" counter)
_DIFY_METRICS = {
    "clean-messages": ("messages_cleanup", "messages", "deleted_messages_total"),
    "clean-workflow-runs": ("workflow_run_cleanup", "workflow_runs", "deleted_runs_total"),
}


def _dify_status(summary: RunSummary) -> str:
    return "success" if summary.outcome in _SUCCESSFUL else "failed"


def _task_label(summary: RunSummary) -> str:
    """Dify's task_label: ``before-<days>`` for a plain cut-off, ``custom`` for an explicit window."""
    if summary.window.get("start_from"):
        return "custom"
    end_before = summary.window.get("end_before")
    if not end_before:
        return "custom"
    cutoff = datetime.fromisoformat(end_before)
    started = summary.started_at if cutoff.tzinfo else summary.started_at.replace(tzinfo=None)
    return f"before-{round((started - cutoff).total_seconds() / 86400)}"


@dataclass
class Observers:
    """Every observer a run reports to, each one shielded from the others' failures."""

    members: Sequence[Observer] = ()
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def started(self, job: str) -> None:
        self._each(lambda member: member.started(job, self.run_id))

    def finished(self, summary: RunSummary) -> None:
        self._each(lambda member: member.finished(summary, self.run_id))

    def _each(self, call: Callable[[Observer], None]) -> None:
        for member in self.members:
            try:
                call(member)
            except Exception as exc:  # a monitoring bug must never fail the cleanup
                log.warning("warning: reporting the run to %s failed: %s", type(member).__name__, type(exc).__name__)


def observers(settings: Settings, schedule: str, dify_task: str = "") -> Observers:
    """The observers the settings turn on (``schedule``: the job's cron line, for Sentry's monitor;
    ``dify_task``: the Dify task it replaces, the ``job_name`` of Dify's own metrics)."""
    members: list[Observer] = []
    ping_url = settings.DIFYMAINT_PING_URL
    metrics_textfile = settings.DIFYMAINT_METRICS_TEXTFILE
    pushgateway_url = settings.DIFYMAINT_PUSHGATEWAY_URL
    if ping_url:
        members.append(PingObserver(ping_url))
    if metrics_textfile:
        members.append(TextfileObserver(metrics_textfile))
    if pushgateway_url:
        members.append(PushgatewayObserver(pushgateway_url))
    if settings.SENTRY_DSN:
        members.append(SentryObserver(settings.SENTRY_DSN, schedule, environment=settings.DEPLOY_ENV))
    if settings.ENABLE_OTEL:
        endpoint = settings.OTLP_METRIC_ENDPOINT or f"{settings.OTLP_BASE_ENDPOINT.rstrip('/')}/v1/metrics"
        api_key = settings.OTLP_API_KEY.get_secret_value() if settings.OTLP_API_KEY else ""
        members.append(OtelObserver(endpoint, api_key, dify_task))
    return Observers(members)
