"""monitor-queue: alert when Celery queues on Dify's broker back up (docs/jobs/monitor-queue.md).

The job needs neither the database nor a worker: :func:`measure` reads the queue lists the way kombu stores
them (the bare list plus its priority siblings, under the broker's ``global_keyprefix``), the ``unacked``
hash and the oldest waiting message, all in one pipeline. Because the database may be absent, the job lock
lives in the broker's Redis (the module's :func:`lock` hook, :class:`_BrokerLock`). Over the threshold the
outcome is ``threshold_exceeded`` (exit 3) whether or not mail goes out; :class:`_Alerts` sends at most one
mail per queue per cool-down, remembered under ``maintenance:queue_monitor:alerted:<queue>``, and starts the
cool-down only once a mail was accepted.

With ``--all-queues`` it also asks the workers which queues they consume (Celery's ``active_queues``
broadcast, :func:`difymaint.dify.celery.queue_consumers`): a queue that holds messages and that no worker
consumes only grows until Redis runs out of memory, so it is reported on its own (``dead_queues``, exit 3,
a line of its own), with the broker's ``used_memory`` against ``maxmemory``.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from difymaint.core.context import Context
from difymaint.core.errors import ConfigError, UsageError
from difymaint.core.locking import JobLock, RedisJobLock
from difymaint.core.settings import Settings
from difymaint.core.summary import Outcome, RunSummary
from difymaint.dify.celery import (
    DIFY_WORKER_QUEUES,
    UNACKED_KEY,
    broker_redis,
    mask_url,
    queue_consumers,
    queue_keys,
)
from difymaint.dify.mail import Mail, MailError, MailSender, PreviewSender, mail_sender, render
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun

JOB = "monitor-queue"
COOLDOWN_KEY = "maintenance:queue_monitor:alerted:{queue}"
HTML_TEMPLATE = "queue_monitor_alert.html"
TEXT_TEMPLATE = "queue_monitor_alert.txt"
DEFAULT_QUEUE = "dataset"  # what Dify's monitor watches
MEMORY_WARN_RATIO = 0.9  # warn when the broker's used_memory reaches this share of maxmemory


@dataclass(frozen=True)
class MonitorQueueParams:
    run: RunOptions = field(default_factory=RunOptions)
    queues: tuple[str, ...] = ()
    all_queues: bool = False
    threshold: int | None = 200  # None (QUEUE_MONITOR_THRESHOLD unset to null): measure only, as Dify skips
    alert_emails: str | None = None
    cooldown_minutes: int = 60
    inspect_timeout_s: float = 2.0  # how long workers have to say which queues they consume (--all-queues)
    preview: IO[str] | None = None  # dry run: where the rendered alert mails go (default: the output stream)
    sender: MailSender | None = None  # default: the one MAIL_TYPE selects


Params = MonitorQueueParams


def check(ctx: Context, params: MonitorQueueParams) -> None:
    if params.queues and params.all_queues:
        raise UsageError("--queue and --all-queues do not go together", hint="use one of them")
    for queue in params.queues:
        if any(ch.isspace() for ch in queue) or "\x06" in queue:
            raise UsageError(f"--queue {queue!r} is not a queue name")
    if not 0 < params.inspect_timeout_s <= 60:
        raise UsageError("--inspect-timeout must be more than 0 and at most 60 seconds")


def recipients(raw: str | None) -> list[str]:
    """QUEUE_MONITOR_ALERT_EMAILS split on commas and trimmed (Dify keeps the spaces and fails on them)."""
    seen: list[str] = []
    for part in (raw or "").split(","):
        address = part.strip()
        if address and address not in seen:
            seen.append(address)
    return seen


def _message_time(raw: bytes | None) -> datetime | None:
    """When a waiting message was sent or became due, if the message says so."""
    if raw is None:
        return None
    try:
        message = json.loads(raw)
        headers = message.get("headers") or {}
        properties = message.get("properties") or {}
    except (ValueError, AttributeError):
        return None  # not a kombu JSON envelope: no age rather than a failed check
    for stamp in (headers.get("timestamp"), properties.get("timestamp")):
        if isinstance(stamp, int | float):
            return datetime.fromtimestamp(stamp, UTC)
    eta = headers.get("eta")
    if isinstance(eta, str):
        try:
            parsed = datetime.fromisoformat(eta)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def measure(client: Any, prefix: str, queues: tuple[str, ...], now: datetime) -> dict[str, dict[str, Any]]:
    """Per queue: total waiting, per priority list, and the oldest waiting message's age (one pipeline)."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue):
            pipe.llen(prefix + key)
            pipe.lindex(prefix + key, -1)  # LPUSH in, BRPOP out: the oldest message is at the tail
    replies = iter(pipe.execute())
    result: dict[str, dict[str, Any]] = {}
    for queue in queues:
        by_priority: dict[str, int] = {}
        oldest: datetime | None = None
        for priority, _key in zip(("0", "3", "6", "9"), queue_keys(queue), strict=True):
            length, tail = int(next(replies)), next(replies)
            by_priority[priority] = length
            when = _message_time(tail)
            if when is not None and when <= now and (oldest is None or when < oldest):
                oldest = when
        result[queue] = {
            "length": sum(by_priority.values()),
            "by_priority": by_priority,
            "oldest_age_s": round((now - oldest).total_seconds(), 1) if oldest is not None else None,
        }
    return result


class _BrokerLock:
    """The job lock on the broker the monitor measures: it needs neither Dify's Redis nor its database."""

    def __init__(self, settings: Settings, key: str) -> None:
        self._connection = ExitStack()
        client, prefix = self._connection.enter_context(broker_redis(settings))
        self._lock = RedisJobLock(client, prefix + key, settings.DIFYMAINT_LOCK_TTL)
        self.description, self.label = self._lock.description, self._lock.label
        self.renew_every_s: float | None = self._lock.renew_every_s
        self.holder = self._lock.holder

    def acquire(self) -> bool:
        acquired = self._lock.acquire()
        if not acquired:
            self._connection.close()
        return acquired

    def renew(self) -> None:
        self._lock.renew()

    def release(self) -> None:
        try:
            self._lock.release()
        finally:
            self._connection.close()


def dead_queues(stats: dict[str, dict[str, Any]], consumers: dict[str, list[str]]) -> list[str]:
    """Queues holding messages that no worker consumes."""
    return [queue for queue, measured in stats.items() if measured["length"] > 0 and not consumers.get(queue)]


def broker_memory(client: Any) -> dict[str, Any] | None:
    """The broker's ``used_memory`` against ``maxmemory`` (0 = no limit); None where INFO is refused."""
    import redis

    try:
        info = client.info("memory")
    except redis.ResponseError:  # some managed Redis services disable INFO
        return None
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    return {
        "used_memory": used,
        "maxmemory": limit,
        "maxmemory_policy": info.get("maxmemory_policy"),
        "used_ratio": round(used / limit, 4) if limit else None,
    }


def lock(ctx: Context, lock_key: str, params: MonitorQueueParams) -> JobLock:
    return _BrokerLock(ctx.settings, lock_key)


def run(job: JobRun, params: MonitorQueueParams) -> None:
    ctx, summary = job.ctx, job.summary
    dry_run = params.run.dry_run
    queues = DIFY_WORKER_QUEUES if params.all_queues else (params.queues or (DEFAULT_QUEUE,))
    addresses = recipients(params.alert_emails)
    sender: MailSender | None = None
    mail_problem: str | None = None
    if addresses:
        try:
            sender = params.sender or mail_sender(ctx.settings)
        except ConfigError as exc:
            sender, mail_problem = None, exc.message
        if sender is None and mail_problem is None:
            mail_problem = "MAIL_TYPE is not set"
        if dry_run:
            sender = PreviewSender(params.preview or ctx.output)
    started = ctx.clock.now()
    with broker_redis(ctx.settings) as (client, prefix):
        stats = measure(client, prefix, queues, started)
        unacked = int(client.hlen(prefix + UNACKED_KEY))
        threshold = params.threshold
        if threshold is None:
            summary.warnings.append("no threshold (QUEUE_MONITOR_THRESHOLD is null): measured only")
        over = [queue for queue in queues if threshold is not None and stats[queue]["length"] >= threshold]
        job.use_tables(list(queues))
        summary.tables = {queue: stats[queue]["length"] for queue in queues}
        summary.details.update(
            broker=mask_url(ctx.settings.CELERY_BROKER_URL or ""),
            key_prefix=prefix,
            threshold=params.threshold,
            queues=stats,
            unacked=unacked,
            over_threshold=over,
            dead_queues=[],
        )
        if params.all_queues:
            _check_consumers(job, params, stats, broker_memory(client))
        if over:
            summary.outcome = Outcome.THRESHOLD_EXCEEDED
            listed = ", ".join(f"{queue} {stats[queue]['length']}" for queue in over)
            # The one line on stderr: cron mail and `kubectl logs` show it without --json.
            ctx.reporter.warning(f"{JOB}: waiting messages at or above {threshold}: {listed}")
            alerts = _Alerts(ctx, client, prefix, params, summary, sender, addresses, mail_problem)
            for queue in over:
                alerts.alert(queue, stats[queue], unacked, started)
            summary.details["alerts"] = alerts.report


class _Alerts:
    """Alert mails, at most one round per queue per cool-down (remembered in the broker's Redis)."""

    def __init__(
        self,
        ctx: Context,
        client: Any,
        prefix: str,
        params: MonitorQueueParams,
        summary: RunSummary,
        sender: MailSender | None,
        addresses: list[str],
        mail_problem: str | None,
    ) -> None:
        self.ctx, self.client, self.prefix, self.params = ctx, client, prefix, params
        self.summary, self.sender, self.addresses, self.mail_problem = summary, sender, addresses, mail_problem
        self.report: dict[str, Any] = {}

    def alert(self, queue: str, stats: dict[str, Any], unacked: int, now: datetime) -> None:
        entry: dict[str, Any] = {"recipients": len(self.addresses), "sent": 0, "failed": 0}
        self.report[queue] = entry
        if not self.addresses:
            entry["skipped"] = "QUEUE_MONITOR_ALERT_EMAILS is not set"
            return
        key = self.prefix + COOLDOWN_KEY.format(queue=queue)
        ttl = int(self.client.ttl(key))
        if ttl > 0 or ttl == -1:
            entry["skipped"] = f"alerted recently (cool-down {ttl if ttl > 0 else 'without expiry'} s left)"
            return
        if self.sender is None:
            entry["skipped"] = f"{self.mail_problem}: no alert mail sent"
            self.summary.warnings.append(f"{queue}: {entry['skipped']}")
            return
        context = {
            "queue_name": queue,
            "queue_length": stats["length"],
            "threshold": self.params.threshold,
            "alert_time": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "by_priority": stats["by_priority"],
            "oldest_age_s": stats["oldest_age_s"],
            "unacked": unacked,
        }
        html, text = render(HTML_TEMPLATE, **context), render(TEXT_TEMPLATE, **context)
        subject = f"Alert: {queue} queue pending tasks exceeded the limit"
        for address in self.addresses:
            try:
                self.sender.send(Mail(to=address, subject=subject, html=html, text=text))
                entry["sent"] += 1
            except MailError as exc:
                # One address failing does not stop the others (Dify's behaviour).
                entry["failed"] += 1
                self.summary.warnings.append(f"{queue}: alert to {address} failed: {exc.message}")
        if self.summary.dry_run:
            entry["would_send"], entry["sent"] = entry["sent"], 0
            return  # a dry run starts no cool-down
        if entry["sent"]:
            self.client.set(key, now.isoformat(), ex=max(1, self.params.cooldown_minutes * 60))
        else:
            self.ctx.reporter.warning(f"{JOB}: no alert mail for {queue} was accepted; the next run tries again")


def _check_consumers(
    job: JobRun, params: MonitorQueueParams, stats: dict[str, dict[str, Any]], memory: dict[str, Any] | None
) -> None:
    """Consumers per queue, the dead queues (exit 3, a line of their own) and the broker's memory."""
    ctx, summary = job.ctx, job.summary
    consumers, workers = queue_consumers(ctx.settings, params.inspect_timeout_s)
    for queue, measured in stats.items():
        measured["consumers"] = len(consumers.get(queue, ()))
    dead = dead_queues(stats, consumers)
    summary.details.update(workers=workers, dead_queues=dead, broker_memory=memory)
    if not workers:
        job.warn(
            f"no Celery worker answered within {params.inspect_timeout_s:g} s: every queue counts as unconsumed "
            "(workers down, busy, or started with remote control off)"
        )
    if dead:
        summary.outcome = Outcome.THRESHOLD_EXCEEDED
        listed = ", ".join(f"{queue} {stats[queue]['length']}" for queue in dead)
        ctx.reporter.warning(f"{JOB}: messages waiting in queues no worker consumes: {listed}")
    if memory and memory["used_ratio"] is not None and memory["used_ratio"] >= MEMORY_WARN_RATIO:
        job.warn(
            f"the broker's Redis uses {memory['used_memory']} of its maxmemory {memory['maxmemory']} bytes "
            f"({memory['used_ratio']:.0%}, policy {memory['maxmemory_policy']})"
        )
