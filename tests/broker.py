"""Reading what was published onto a kombu Redis broker: the queue list's messages, decoded."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def refusing_broker() -> Iterator[str]:
    """A real redis-server that answers PING but refuses every write (maxmemory 1 byte, noeviction): a broker
    that fails between the publisher's start-up check and its first message."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--maxmemory", "1", "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
