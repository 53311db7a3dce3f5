"""A Celery app that plays Dify's workers: stub tasks with Dify's exact names, queues and signatures.

Started as a real ``celery worker`` by tests/celery_worker.py. Each task records what it received (one
JSON line per message: task name, args, kwargs, queue) into the file named by ``STUB_RECORD_FILE``; a
message whose arguments do not fit Dify's signature fails in the worker and is recorded as an error.

Written independently of difymaint.dify.celery (names and signatures taken from Dify's api/tasks/*.py), so
a wrong entry in difymaint's task table shows up here instead of being mirrored. The broker is configured
from the environment like Dify's ext_celery.py: CELERY_BROKER_URL, REDIS_KEY_PREFIX (global_keyprefix),
CELERY_USE_SENTINEL / CELERY_SENTINEL_MASTER_NAME / CELERY_SENTINEL_PASSWORD.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.signals import task_failure, task_unknown, worker_ready

# Dify's docker entrypoint queue list plus the queue monitor's own `monitor` queue.
QUEUES = (
    "api_token,dataset,dataset_summary,priority_dataset,priority_pipeline,pipeline,mail,ops_trace,app_deletion,"
    "plugin,workflow_storage,conversation,workflow,schedule_poller,schedule_executor,triggered_workflow_dispatcher,"
    "trigger_refresh_publisher,trigger_refresh_executor,retention,workflow_based_app_execution,monitor"
)


def _transport_options() -> dict[str, Any]:
    options: dict[str, Any] = {}
    prefix = os.environ.get("REDIS_KEY_PREFIX", "").strip()
    if prefix:
        options["global_keyprefix"] = f"{prefix}:"
    if os.environ.get("CELERY_USE_SENTINEL", "").lower() in ("1", "true"):
        options["master_name"] = os.environ["CELERY_SENTINEL_MASTER_NAME"]
        options["sentinel_kwargs"] = {"socket_timeout": 0.5, "password": os.environ.get("CELERY_SENTINEL_PASSWORD")}
    return options


app = Celery("dify_stub", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1"))
app.conf.update(
    broker_transport_options=_transport_options(),
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
)


def _record(entry: dict[str, Any]) -> None:
    line = json.dumps(entry, default=str) + "\n"
    # One write per line on an O_APPEND file: whole lines even if the test reads concurrently.
    fd = os.open(os.environ["STUB_RECORD_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _received(task: Task) -> None:
    request = task.request
    _record(
        {
            "task": task.name,
            "args": list(request.args or ()),
            "kwargs": dict(request.kwargs or {}),
            "queue": (request.delivery_info or {}).get("routing_key"),
            "eta": str(request.eta) if request.eta else None,
        }
    )


@worker_ready.connect
def _ready(**_: Any) -> None:
    Path(os.environ["STUB_READY_FILE"]).write_text("ready", encoding="utf-8")


@task_failure.connect
def _failed(sender: Task | None = None, exception: BaseException | None = None, **_: Any) -> None:
    _record({"task": getattr(sender, "name", "?"), "error": repr(exception)})


@task_unknown.connect
def _unknown(name: str | None = None, **_: Any) -> None:
    _record({"task": name, "error": "unregistered task (not one of Dify's names)"})


# Signatures are checked in the worker, where Dify's would be: a misfit message fails and is recorded.
@app.task(bind=True, name="tasks.deal_dataset_vector_index_task.deal_dataset_vector_index_task", queue="dataset")
def deal_dataset_vector_index_task(self: Task, dataset_id: str, action: str) -> None:
    _received(self)


@app.task(
    bind=True,
    name="tasks.process_tenant_plugin_autoupgrade_check_task.process_tenant_plugin_autoupgrade_check_task",
    queue="plugin",
)
def process_tenant_plugin_autoupgrade_check_task(
    self: Task,
    tenant_id: str,
    strategy_setting: str,
    upgrade_time_of_day: int,
    upgrade_mode: str,
    exclude_plugins: list[str],
    include_plugins: list[str],
) -> None:
    _received(self)


@app.task(bind=True, name="tasks.workflow_schedule_tasks.run_schedule_trigger", queue="schedule_executor")
def run_schedule_trigger(self: Task, schedule_id: str) -> None:
    _received(self)


@app.task(
    bind=True,
    name="tasks.trigger_subscription_refresh_tasks.trigger_subscription_refresh",
    queue="trigger_refresh_executor",
)
def trigger_subscription_refresh(self: Task, tenant_id: str, subscription_id: str) -> None:
    _received(self)


@app.task(bind=True, name="resume_app_execution", queue="workflow_based_app_execution")
def resume_app_execution(self: Task, payload: dict[str, Any]) -> None:
    if not isinstance(payload, dict) or "workflow_run_id" not in payload:
        raise TypeError(f"resume_app_execution expects payload={{'workflow_run_id': ...}}, got {payload!r}")
    _received(self)
