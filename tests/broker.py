"""Reading what was published onto a kombu Redis broker: the queue list's messages, decoded."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis


@dataclass(frozen=True)
class Published:
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any]


def published(broker_url: str, queue: str, *, prefix: str = "") -> list[Published]:
    """The messages waiting on ``queue`` (oldest first), with Celery's ``global_keyprefix`` applied."""
    client = redis.Redis.from_url(broker_url)
    try:
        raw = client.lrange(f"{prefix}:{queue}" if prefix else queue, 0, -1)
    finally:
        client.close()
    out = []
    for item in reversed(raw):  # LPUSH: newest first
        envelope = json.loads(item)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        out.append(Published(envelope["headers"]["task"], args, kwargs, envelope["headers"]))
    return out
