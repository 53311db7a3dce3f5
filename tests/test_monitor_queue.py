"""monitor-queue against a real Redis broker (messages published by Celery itself), a real Redis Sentinel and
a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from difymaint.core.errors import ConfigError, LockHeld, UsageError
from difymaint.core.exit_codes import ExitCode
from difymaint.core.settings import load_settings
from difymaint.core.summary import Outcome
from difymaint.dify.celery import DIFY_WORKER_QUEUES, celery_app
from difymaint.engine.options import RunOptions
from difymaint.jobs import monitor_queue
from difymaint.jobs.execute import run_job
from difymaint.jobs.monitor_queue import MonitorQueueParams
from tests import celery_worker as rig
from tests.conftest import FixedClock
from tests.stubs.smtp import SmtpStub
from tests.test_cli import run_cli

pytestmark = pytest.mark.redis

BROKER_DB = 3  # no stub worker consumes this DB: what is published stays waiting
TASK = "tasks.deal_dataset_vector_index_task.deal_dataset_vector_index_task"
NOW = datetime.now(UTC).replace(microsecond=0)  # Celery stamps real times; the clock must agree


@pytest.fixture
def broker(redis_url: str) -> Iterator[str]:
    url = rig.broker_url(redis_url, BROKER_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def smtp() -> Iterator[SmtpStub]:
    with SmtpStub() as server:
        yield server


def publish(url: str, queue: str, count: int, *, prefix: str = "", priority: int | None = None, **options: Any) -> None:
    """Waiting messages, sent by Celery itself (so the lists and envelopes are kombu's own)."""
    settings = load_settings(None, {"CELERY_BROKER_URL": url, "REDIS_KEY_PREFIX": prefix})
    app = celery_app(settings)
    try:
        with app.producer_or_acquire() as producer:
            for n in range(count):
                app.send_task(
                    TASK, args=[f"ds-{n}", "remove"], queue=queue, priority=priority, producer=producer, **options
                )
    finally:
        app.close()


def context(url: str, **settings: Any) -> Any:
    from difymaint.core.context import Context
    from difymaint.core.reporter import RecordingReporter

    values = {"CELERY_BROKER_URL": url, **settings}
    return Context(load_settings(None, values), clock=FixedClock(NOW), reporter=RecordingReporter())


def params(**kwargs: Any) -> MonitorQueueParams:
    kwargs.setdefault("preview", io.StringIO())
    return MonitorQueueParams(**kwargs)


@pytest.mark.parametrize("prefix", ["", "dify"])
def test_length_counts_priority_lists_under_the_prefix(broker: str, prefix: str) -> None:
    publish(broker, "dataset", 3, prefix=prefix)
    publish(broker, "dataset", 2, prefix=prefix, priority=9)
    publish(broker, "plugin", 1, prefix=prefix, priority=5)
    publish(broker, "dataset", 4, prefix="other" if prefix else "dify")  # another install's keys: not counted
    ctx = context(broker, REDIS_KEY_PREFIX=prefix)
    summary = run_job(monitor_queue, ctx, params(queues=("dataset", "plugin", "mail"), threshold=100))
    assert summary.outcome is Outcome.DONE and summary.exit_code == ExitCode.OK
    assert summary.tables == {"dataset": 5, "plugin": 1, "mail": 0}
    queues = summary.details["queues"]
    assert queues["dataset"]["by_priority"] == {"0": 3, "3": 0, "6": 0, "9": 2}
    assert queues["plugin"]["by_priority"] == {"0": 0, "3": 1, "6": 0, "9": 0}  # kombu files 5 under step 3
    assert summary.details["key_prefix"] == (f"{prefix}:" if prefix else "")


def test_all_queues_and_default_queue(broker: str) -> None:
    publish(broker, "schedule_executor", 2)
    everything = run_job(monitor_queue, context(broker), params(all_queues=True, inspect_timeout_s=0.5))
    assert tuple(everything.tables) == DIFY_WORKER_QUEUES and everything.tables["schedule_executor"] == 2
    # No worker at all on this broker: the queue holding messages is dead, the empty ones are not.
    assert everything.details["workers"] == [] and everything.details["dead_queues"] == ["schedule_executor"]
    assert everything.exit_code == ExitCode.THRESHOLD_EXCEEDED
    assert any("no Celery worker answered" in warning for warning in everything.warnings)
    default = run_job(monitor_queue, context(broker), params())
    assert default.tables == {"dataset": 0}  # Dify's monitor watches `dataset`


def test_over_threshold_mails_each_trimmed_address_once_per_cooldown(broker: str, smtp: SmtpStub) -> None:
    publish(broker, "dataset", 3, prefix="dify")
    settings = {"REDIS_KEY_PREFIX": "dify", **smtp.settings()}
    emails = " ops@example.com, ,oncall@example.com ,ops@example.com"
    ctx = context(broker, **settings)
    first = run_job(monitor_queue, ctx, params(threshold=3, alert_emails=emails))
    assert first.outcome is Outcome.THRESHOLD_EXCEEDED and first.exit_code == ExitCode.THRESHOLD_EXCEEDED
    assert [r.rcpt_tos for r in smtp.received] == [["ops@example.com"], ["oncall@example.com"]]
    mail = smtp.received[0]
    assert mail.message["Subject"] == "Alert: dataset queue pending tasks exceeded the limit"
    text = mail.body("plain")
    assert "has 3 waiting message(s)" in text and "threshold is 3" in text
    assert "<td>Reserved (unacked, all queues)</td><td>0</td>" in mail.body("html")
    assert first.details["alerts"]["dataset"] == {"recipients": 2, "sent": 2, "failed": 0}
    assert ctx.reporter.warnings == ["monitor-queue: waiting messages at or above 3: dataset 3"]  # one line
    client = redis.Redis.from_url(broker)
    ttl = client.ttl("dify:maintenance:queue_monitor:alerted:dataset")
    assert 3500 < ttl <= 3600
    second = run_job(monitor_queue, context(broker, **settings), params(threshold=3, alert_emails=emails))
    assert second.exit_code == ExitCode.THRESHOLD_EXCEEDED  # still alerting through the exit code
    assert len(smtp.received) == 2 and "alerted recently" in second.details["alerts"]["dataset"]["skipped"]
    client.delete("dify:maintenance:queue_monitor:alerted:dataset")
    run_job(monitor_queue, context(broker, **settings), params(threshold=3, alert_emails=emails))
    assert len(smtp.received) == 4  # the cool-down is over: mailed again
    client.close()


def test_below_threshold_sends_nothing(broker: str, smtp: SmtpStub) -> None:
    publish(broker, "dataset", 2)
    summary = run_job(
        monitor_queue, context(broker, **smtp.settings()), params(threshold=3, alert_emails="a@example.com")
    )
    assert summary.exit_code == ExitCode.OK and smtp.received == [] and "alerts" not in summary.details


def test_dry_run_renders_and_starts_no_cooldown(broker: str, smtp: SmtpStub) -> None:
    publish(broker, "dataset", 1)
    preview = io.StringIO()
    summary = run_job(
        monitor_queue,
        context(broker, **smtp.settings()),
        params(threshold=1, alert_emails="a@example.com", preview=preview, run=RunOptions(dry_run=True)),
    )
    assert summary.exit_code == ExitCode.THRESHOLD_EXCEEDED and summary.dry_run
    assert smtp.received == [] and "has 1 waiting message(s)" in preview.getvalue()
    assert summary.details["alerts"]["dataset"]["would_send"] == 1
    assert redis.Redis.from_url(broker).exists("maintenance:queue_monitor:alerted:dataset") == 0


def test_one_failing_address_does_not_stop_the_others(broker: str) -> None:
    publish(broker, "dataset", 1)
    with SmtpStub(reject={"bad@example.com"}) as smtp:
        ctx = context(broker, **smtp.settings())
        summary = run_job(monitor_queue, ctx, params(threshold=1, alert_emails="bad@example.com,good@example.com"))
    assert [r.rcpt_tos for r in smtp.received] == [["good@example.com"]]
    assert summary.details["alerts"]["dataset"] == {"recipients": 2, "sent": 1, "failed": 1}
    assert any("bad@example.com" in warning for warning in summary.warnings)


def test_unacked_and_oldest_age(broker: str) -> None:
    publish(broker, "dataset", 1, eta=NOW - timedelta(minutes=10))  # overdue since 10 minutes
    publish(broker, "dataset", 1, countdown=3600)  # due later: no waiting age
    client = redis.Redis.from_url(broker)
    client.hset("unacked", mapping={"tag-1": "{}", "tag-2": "{}"})  # what kombu keeps for reserved messages
    summary = run_job(monitor_queue, context(broker), params(threshold=10))
    assert summary.details["unacked"] == 2
    assert summary.details["queues"]["dataset"]["oldest_age_s"] == pytest.approx(600, abs=5)
    client.close()


def test_monitor_through_sentinel(sentinel_broker: rig.SentinelBroker, redis_url: str) -> None:
    publish(rig.broker_url(redis_url, 4), "dataset", 2, prefix="dify")
    ctx = context(
        sentinel_broker.url(db=4),
        CELERY_USE_SENTINEL=True,
        CELERY_SENTINEL_MASTER_NAME=sentinel_broker.master_name,
        CELERY_SENTINEL_PASSWORD=sentinel_broker.password,
        REDIS_KEY_PREFIX="dify",
    )
    try:
        summary = run_job(monitor_queue, ctx, params(threshold=2))
        assert summary.tables == {"dataset": 2} and summary.exit_code == ExitCode.THRESHOLD_EXCEEDED
    finally:
        redis.Redis.from_url(rig.broker_url(redis_url, 4)).flushdb()


# Dify's worker queues minus two that nobody consumes here (as the trigger_refresh_publisher queue in dify#35280).
UNCONSUMED = ("trigger_refresh_publisher", "workflow_storage")


def test_a_queue_with_messages_and_no_consumer_is_dead(broker: str, celery_worker_factory: Any) -> None:
    consumed = [queue for queue in DIFY_WORKER_QUEUES if queue not in UNCONSUMED]
    worker = celery_worker_factory({"CELERY_BROKER_URL": broker, "REDIS_KEY_PREFIX": "dify"}, queues=",".join(consumed))
    publish(broker, "trigger_refresh_publisher", 3, prefix="dify")  # waits forever: nobody consumes it
    publish(broker, "dataset", 1, prefix="dify")  # consumed at once
    worker.received(TASK, 1)
    settings = {"REDIS_KEY_PREFIX": "dify"}
    summary = run_job(monitor_queue, context(broker, **settings), params(all_queues=True, threshold=100))
    assert summary.outcome is Outcome.THRESHOLD_EXCEEDED and summary.exit_code == ExitCode.THRESHOLD_EXCEEDED
    assert summary.details["dead_queues"] == ["trigger_refresh_publisher"]  # workflow_storage: empty, not dead
    assert summary.details["over_threshold"] == []
    queues = summary.details["queues"]
    assert queues["dataset"]["consumers"] == 1 and queues["trigger_refresh_publisher"]["consumers"] == 0
    assert queues["workflow_storage"]["consumers"] == 0 and len(summary.details["workers"]) == 1
    memory = summary.details["broker_memory"]
    assert memory["used_memory"] > 0 and memory["maxmemory"] >= 0
    # The CLI: exit 3, one line of its own naming the queue, the metric in the textfile.
    result = run_cli(
        ["monitor-queue", "--all-queues", "--json", "--metrics-textfile", str(worker.record.parent / "m.prom")],
        {"CELERY_BROKER_URL": broker, **settings},
    )
    assert result.returncode == 3, result.stderr
    assert json.loads(result.stdout)["details"]["dead_queues"] == ["trigger_refresh_publisher"]
    lines = [line for line in result.stderr.splitlines() if "no worker consumes" in line]
    assert len(lines) == 1 and "trigger_refresh_publisher 3" in lines[0]
    from prometheus_client.parser import text_string_to_metric_families

    found = {
        (sample.name, sample.labels.get("queue")): sample.value
        for family in text_string_to_metric_families((worker.record.parent / "m.prom").read_text())
        for sample in family.samples
    }
    assert found[("difymaint_dead_queues", None)] == 1
    assert found[("difymaint_queue_consumers", "trigger_refresh_publisher")] == 0
    assert found[("difymaint_queue_consumers", "dataset")] == 1
    assert found[("difymaint_broker_used_memory_bytes", None)] > 0


def test_broker_memory_against_maxmemory(broker: str) -> None:
    client = redis.Redis.from_url(broker)
    used = int(client.info("memory")["used_memory"])
    original = client.config_get("maxmemory")["maxmemory"]
    # Half used: a fuller broker would refuse the run's own writes (noeviction) on a server other tests share.
    client.config_set("maxmemory", str(used * 2))
    try:
        summary = run_job(monitor_queue, context(broker), params(all_queues=True, inspect_timeout_s=0.2))
    finally:
        client.config_set("maxmemory", original)
        client.close()
    memory = summary.details["broker_memory"]
    assert memory["maxmemory"] == used * 2 and 0.3 < memory["used_ratio"] < 0.9
    assert memory["maxmemory_policy"] == "noeviction"
    assert not any("maxmemory" in warning for warning in summary.warnings)


def test_lock_held_and_usage_errors(broker: str) -> None:
    client = redis.Redis.from_url(broker)
    client.set("maintenance:monitor_queue", "other-run", ex=60)
    with pytest.raises(LockHeld):
        run_job(monitor_queue, context(broker), params())
    client.close()
    with pytest.raises(UsageError, match="do not go together"):
        monitor_queue.check(context(broker), params(queues=("dataset",), all_queues=True))
    with pytest.raises(UsageError, match="--inspect-timeout"):
        monitor_queue.check(context(broker), params(all_queues=True, inspect_timeout_s=0))
    with pytest.raises(ConfigError, match="Redis broker"):
        run_job(monitor_queue, context("amqp://guest:guest@127.0.0.1:1//"), params())


def test_cli_exit_codes_and_one_line(broker: str) -> None:
    publish(broker, "dataset", 2)
    env = {"CELERY_BROKER_URL": broker}
    over = run_cli(["monitor-queue", "--queue", "dataset", "--threshold", "2", "--json"], env)
    assert over.returncode == 3, over.stderr
    assert json.loads(over.stdout)["details"]["queues"]["dataset"]["length"] == 2
    assert [line for line in over.stderr.splitlines() if "WARNING" in line] == [
        line for line in over.stderr.splitlines() if "at or above 2: dataset 2" in line
    ]
    ok = run_cli(["monitor-queue", "--queue", "dataset,plugin", "--threshold", "3"], env)
    assert ok.returncode == 0, ok.stderr
    both = run_cli(["monitor-queue", "--queue", "dataset", "--all-queues"], env)
    assert both.returncode == 2 and "do not go together" in both.stderr
    down = run_cli(
        ["monitor-queue"], {"CELERY_BROKER_URL": "redis://:hunter2@127.0.0.1:1/0", "REDIS_SOCKET_CONNECT_TIMEOUT": "1"}
    )
    assert down.returncode == 1 and "hunter2" not in down.stderr + down.stdout
    errors = [line for line in down.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "cannot reach the Celery broker at redis://:***@127.0.0.1:1/0" in errors[0]


def test_url_without_db_reads_kombus_db_0(redis_url: str) -> None:
    """kombu (and so Dify's workers) use DB 0 when the URL has no path; Dify's own monitor would read DB 1."""
    from urllib.parse import urlsplit

    bare = urlsplit(redis_url)._replace(path="").geturl()
    publish(bare, "dataset", 2)
    db0, db1 = redis.Redis.from_url(rig.broker_url(redis_url, 0)), redis.Redis.from_url(rig.broker_url(redis_url, 1))
    try:
        assert db0.llen("dataset") == 2 and db1.llen("dataset") == 0
        assert run_job(monitor_queue, context(bare), params(threshold=5)).tables == {"dataset": 2}
    finally:
        db0.delete("dataset")
        db0.close()
        db1.close()
