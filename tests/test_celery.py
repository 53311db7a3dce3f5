"""dify/celery.py: Dify's tasks published through Celery's own client and consumed by a real worker."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from difymaint.core.errors import ConfigError
from difymaint.core.settings import load_settings
from difymaint.dify.celery import (
    DIFY_TASKS,
    BrokerUnavailable,
    TaskCall,
    broker_url,
    mask_url,
    publisher,
    transport_options,
)
from tests import celery_worker as rig
from tests.celery_worker import CeleryWorker, SentinelBroker

pytestmark = pytest.mark.redis

# One realistic call per Dify task, in the shape Dify's beat job uses (docs/dify-reference.md#celery).
CALLS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "tasks.deal_dataset_vector_index_task.deal_dataset_vector_index_task": (("ds-1", "remove"), {}),
    "tasks.process_tenant_plugin_autoupgrade_check_task.process_tenant_plugin_autoupgrade_check_task": (
        ("tenant-1", "latest", 3600, "exclude", ["langgenius/openai"], []),
        {},
    ),
    "tasks.workflow_schedule_tasks.run_schedule_trigger": (("plan-1",), {}),
    "tasks.trigger_subscription_refresh_tasks.trigger_subscription_refresh": (
        (),
        {"tenant_id": "tenant-1", "subscription_id": "sub-1"},
    ),
    "resume_app_execution": ((), {"payload": {"workflow_run_id": "run-1"}}),
}
QUEUES = {
    "tasks.deal_dataset_vector_index_task.deal_dataset_vector_index_task": "dataset",
    "tasks.process_tenant_plugin_autoupgrade_check_task.process_tenant_plugin_autoupgrade_check_task": "plugin",
    "tasks.workflow_schedule_tasks.run_schedule_trigger": "schedule_executor",
    "tasks.trigger_subscription_refresh_tasks.trigger_subscription_refresh": "trigger_refresh_executor",
    "resume_app_execution": "workflow_based_app_execution",
}


def test_task_table_is_difys() -> None:
    assert set(DIFY_TASKS) == set(CALLS)
    assert {name: task.queue for name, task in DIFY_TASKS.items()} == QUEUES
    for name, (args, kwargs) in CALLS.items():
        assert DIFY_TASKS[name].call(*args, **kwargs) == TaskCall(args, kwargs or None)
    with pytest.raises(ValueError, match="takes args"):
        DIFY_TASKS["tasks.workflow_schedule_tasks.run_schedule_trigger"].call("a", "b")
    with pytest.raises(ValueError, match="takes args"):
        DIFY_TASKS["resume_app_execution"].call(workflow_run_id="x")


@pytest.mark.parametrize("celery_worker", ["", "dify"], indirect=True)
def test_every_dify_task_reaches_a_real_worker(celery_worker: CeleryWorker) -> None:
    settings = load_settings(None, celery_worker.settings)
    pub = publisher(settings)
    try:
        for name, (args, kwargs) in CALLS.items():
            task = DIFY_TASKS[name]
            ids = pub.send_to(task, [task.call(*args, **kwargs), task.call(*args, **kwargs)])
            assert len(set(ids)) == 2
        assert pub.sent == 2 * len(CALLS)
    finally:
        pub.close()
    for name, (args, kwargs) in CALLS.items():
        assert celery_worker.received(name, 2) == [(list(args), kwargs)] * 2
        assert {record["queue"] for record in celery_worker.records(name)} == {QUEUES[name]}


def test_countdown_becomes_an_eta(celery_worker: CeleryWorker) -> None:
    pub = publisher(load_settings(None, celery_worker.settings))
    task = DIFY_TASKS["tasks.workflow_schedule_tasks.run_schedule_trigger"]
    pub.send_to(task, [TaskCall(("plan-eta",), None, countdown=0.5)])
    pub.close()
    assert celery_worker.received(task.name, 1) == [(["plan-eta"], {})]
    assert celery_worker.records(task.name)[0]["eta"] is not None


def test_sentinel_fronted_broker(sentinel_broker: SentinelBroker, celery_worker_factory: Any, redis_url: str) -> None:
    """The publisher finds the master through a password-protected Sentinel, as Dify's ext_celery does."""
    sentinel_env = {
        "CELERY_BROKER_URL": sentinel_broker.url(db=2),
        "CELERY_USE_SENTINEL": "true",
        "CELERY_SENTINEL_MASTER_NAME": sentinel_broker.master_name,
        "CELERY_SENTINEL_PASSWORD": sentinel_broker.password,
        "REDIS_KEY_PREFIX": "dify",
    }
    # The worker reads the master directly: only the publisher goes through the Sentinel.
    worker = celery_worker_factory({"CELERY_BROKER_URL": rig.broker_url(redis_url, 2), "REDIS_KEY_PREFIX": "dify"})
    pub = publisher(load_settings(None, sentinel_env))
    task = DIFY_TASKS["tasks.trigger_subscription_refresh_tasks.trigger_subscription_refresh"]
    try:
        pub.send_to(task, [task.call(tenant_id="t", subscription_id="s")])
    finally:
        pub.close()
    assert worker.received(task.name, 1) == [([], {"tenant_id": "t", "subscription_id": "s"})]
    wrong = dict(sentinel_env, CELERY_SENTINEL_PASSWORD="not-it", REDIS_SOCKET_CONNECT_TIMEOUT="1")
    with pytest.raises(BrokerUnavailable) as caught:
        publisher(load_settings(None, wrong))
    assert "not-it" not in caught.value.message


def test_broker_down_is_one_masked_line() -> None:
    settings = load_settings(
        None, {"CELERY_BROKER_URL": "redis://:s3cret-pw@127.0.0.1:1/1", "REDIS_SOCKET_CONNECT_TIMEOUT": 0.5}
    )
    with pytest.raises(BrokerUnavailable) as caught:
        publisher(settings)
    message = caught.value.message
    assert "s3cret-pw" not in message and "redis://:**@127.0.0.1:1/1" in message
    assert "\n" not in message and caught.value.exit_code == 1


def test_broker_dies_between_sends(tmp_path: Path) -> None:
    """A broker that goes away mid-run: the next send fails with one clear line, nothing counted as sent."""
    port = rig.free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        url = f"redis://:pw-never-shown@127.0.0.1:{port}/0"
        client.config_set("requirepass", "pw-never-shown")
        pub = publisher(load_settings(None, {"CELERY_BROKER_URL": url, "REDIS_SOCKET_CONNECT_TIMEOUT": 0.5}))
        task = DIFY_TASKS["tasks.workflow_schedule_tasks.run_schedule_trigger"]
        assert len(pub.send_to(task, [task.call("plan-a")])) == 1
        server.terminate()
        server.wait(timeout=10)
        with pytest.raises(BrokerUnavailable, match="cannot publish 2 ") as caught:
            pub.send_to(task, [task.call("plan-b"), task.call("plan-c")])
        assert caught.value.published == [] and pub.sent == 1
        assert "pw-never-shown" not in caught.value.message and "\n" not in caught.value.message
        pub.close()
    finally:
        server.kill()
        server.wait()


def test_configuration_like_dify() -> None:
    sentinel = load_settings(
        None,
        {
            "CELERY_BROKER_URL": "sentinel://:redispw@s1:26379/1;sentinel://s2:26379/1",
            "CELERY_USE_SENTINEL": True,
            "CELERY_SENTINEL_MASTER_NAME": "mymaster",
            "CELERY_SENTINEL_PASSWORD": "sentpw",
            "REDIS_KEY_PREFIX": " dify ",
        },
    )
    options = transport_options(sentinel)
    assert options["master_name"] == "mymaster" and options["global_keyprefix"] == "dify:"
    assert options["sentinel_kwargs"] == {"socket_timeout": 0.1, "password": "sentpw"}
    assert mask_url(broker_url(sentinel)) == "sentinel://:**@s1:26379/1;sentinel://s2:26379/1"
    amqp = load_settings(None, {"CELERY_BROKER_URL": "amqp://guest:pw@rabbit:5672//", "REDIS_KEY_PREFIX": "x"})
    assert broker_url(amqp) and transport_options(amqp) == {}
    with pytest.raises(ConfigError, match="not a sentinel"):
        broker_url(load_settings(None, {"CELERY_BROKER_URL": "redis://h/1", "CELERY_USE_SENTINEL": True}))
    with pytest.raises(ConfigError, match="MASTER_NAME"):
        broker_url(load_settings(None, {"CELERY_BROKER_URL": "sentinel://h:26379/1", "CELERY_USE_SENTINEL": True}))


def test_rediss_broker_gets_difys_ssl_options() -> None:
    import ssl

    from difymaint.dify.celery import celery_app

    settings = load_settings(
        None,
        {
            "CELERY_BROKER_URL": "rediss://:pw@redis.example:6380/1",
            "REDIS_SSL_CERT_REQS": "CERT_REQUIRED",
            "REDIS_SSL_CA_CERTS": "/etc/ca.pem",
        },
    )
    app = celery_app(settings)
    assert app.conf.broker_use_ssl == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_certfile": None,
        "ssl_keyfile": None,
    }
    assert app.conf.task_ignore_result is True
    plain = celery_app(load_settings(None, {"CELERY_BROKER_URL": "redis://redis.example:6379/1"}))
    assert not plain.conf.broker_use_ssl
