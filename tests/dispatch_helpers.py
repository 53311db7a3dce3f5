"""Helpers shared by the dispatcher tests: what a real Redis broker holds after a publish."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Published:
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    routing_key: str


def queue_key(queue: str, prefix: str) -> str:
    """The broker list of a queue: Celery's global_keyprefix is ``"<REDIS_KEY_PREFIX>:"``."""
    return f"{prefix}:{queue}" if prefix else queue


def published(redis_url: str, queue: str, prefix: str = "") -> list[Published]:
    """Every message waiting on ``queue`` (oldest first), decoded from its kombu envelope."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        raw = [json.loads(item) for item in reversed(client.lrange(queue_key(queue, prefix), 0, -1))]
    finally:
        client.close()
    messages = []
    for message in raw:
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        messages.append(
            Published(message["headers"]["task"], args, kwargs, message["properties"]["delivery_info"]["routing_key"])
        )
    return messages
