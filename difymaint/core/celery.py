"""A minimal Celery publisher: task messages (protocol v2) pushed onto Dify's Redis broker.

Some work can only be done by Dify's own workers (they hold the vector-store drivers). difymaint hands it
over the way ``task.delay(...)`` would: a kombu Redis-transport envelope ``LPUSH``ed onto the queue's list.

What a Dify worker sees is what Celery (5.x) itself sends for a task declared with
``@shared_task(queue=...)``: a direct queue, so the anonymous exchange with the queue name as routing key,
priority 0 (the bare list name, no ``\\x06\\x16{p}`` sibling), a JSON body ``[args, kwargs, embed]``
base64-encoded. When ``REDIS_KEY_PREFIX`` is set Dify configures Celery's ``global_keyprefix =
"<prefix>:"``, so every broker key, the queue lists included, carries that prefix (docs/dify-reference.md#celery).

Only the Redis transport is supported (``redis://`` and ``rediss://``); Sentinel brokers are refused with a
clear error.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.exceptions import RedisError

from difymaint.core.errors import ConfigError, DifymaintError
from difymaint.core.settings import Settings


class BrokerUnavailable(DifymaintError):
    """The Celery broker could not take the messages (nothing was handed to Dify's workers)."""

    reference = "broker-unreachable"


@dataclass(frozen=True)
class TaskCall:
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None


def origin() -> str:
    """Celery's ``anon_nodename()``: ``gen<pid>@<host>``."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


def task_message(
    task: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    queue: str,
    task_id: str | None = None,
) -> dict[str, Any]:
    """The kombu Redis envelope of one Celery protocol-v2 task message."""
    task_id = task_id or str(uuid.uuid4())
    kwargs = dict(kwargs or {})
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = json.dumps([list(args), kwargs, embed], separators=(",", ":")).encode("utf-8")
    return {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": repr(tuple(args)),
            "kwargsrepr": repr(kwargs),
            "origin": origin(),
            "ignore_result": True,  # Dify runs Celery with task_ignore_result=True
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            # Celery turns a direct queue without an explicit exchange into the anonymous exchange.
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


class CeleryPublisher:
    """Publish task messages to a kombu Redis broker (one pipeline per call)."""

    def __init__(self, client: Any, *, key_prefix: str = "") -> None:
        self.client = client
        self.global_keyprefix = f"{key_prefix}:" if key_prefix else ""
        self.sent = 0

    def queue_key(self, queue: str) -> str:
        return f"{self.global_keyprefix}{queue}"

    def send(self, task: str, calls: Sequence[TaskCall], *, queue: str) -> list[str]:
        """Push one message per call; returns the task ids. Raises BrokerUnavailable when Redis fails."""
        messages = [task_message(task, call.args, call.kwargs, queue=queue) for call in calls]
        if not messages:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            for message in messages:
                pipe.lpush(self.queue_key(queue), json.dumps(message))
            pipe.execute()
        except RedisError as exc:
            raise BrokerUnavailable(
                f"cannot publish {len(messages)} {task} message(s) to the Celery broker: {exc}",
                hint="check CELERY_BROKER_URL",
            ) from None
        self.sent += len(messages)
        return [message["headers"]["id"] for message in messages]

    def close(self) -> None:
        self.client.close()


def broker_client(settings: Settings) -> Any:
    """A Redis client for ``CELERY_BROKER_URL`` (kombu defaults: DB 0 without a path; TLS for rediss)."""
    url = settings.CELERY_BROKER_URL
    if not url:
        raise ConfigError(
            "CELERY_BROKER_URL is not set",
            hint="use Dify's value (docker: redis://:difyai123456@redis:6379/1)",
        )
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"CELERY_BROKER_URL scheme {scheme!r} is not supported",
            hint="difymaint publishes to redis:// and rediss:// brokers only (no Sentinel yet)",
        )
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_SOCKET_CONNECT_TIMEOUT,
    }
    if scheme == "rediss":
        # Dify's broker_use_ssl reuses the REDIS_SSL_* settings.
        reqs = {"CERT_NONE": ssl.CERT_NONE, "CERT_OPTIONAL": ssl.CERT_OPTIONAL, "CERT_REQUIRED": ssl.CERT_REQUIRED}
        kwargs.update(
            ssl_cert_reqs=reqs.get(settings.REDIS_SSL_CERT_REQS, ssl.CERT_NONE),
            ssl_ca_certs=settings.REDIS_SSL_CA_CERTS,
            ssl_certfile=settings.REDIS_SSL_CERTFILE,
            ssl_keyfile=settings.REDIS_SSL_KEYFILE,
        )
    return redis.Redis.from_url(url, **kwargs)


def publisher(settings: Settings) -> CeleryPublisher:
    """A publisher for Dify's broker, checked with a PING so a bad URL fails before any work."""
    client = broker_client(settings)
    try:
        client.ping()
    except RedisError as exc:
        shown = urlsplit(settings.CELERY_BROKER_URL or "")
        where = f"{shown.hostname}:{shown.port or 6379}"
        raise BrokerUnavailable(
            f"cannot reach the Celery broker at {where}: {exc}", hint="check CELERY_BROKER_URL"
        ) from None
    return CeleryPublisher(client, key_prefix=settings.REDIS_KEY_PREFIX)
