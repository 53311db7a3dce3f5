"""Helpers shared by the dispatcher tests: what a real Redis broker holds after a publish, and a real broker
that refuses writes after the connection check."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.celery_worker import free_port


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


class RefusingBroker:
    """A redis-server of its own (no worker reads it) that can be made to refuse every write while still
    answering PING and reads: Redis's own out-of-memory refusal (``maxmemory 1``, ``noeviction``)."""

    def __init__(self, directory: Path) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server is not installed (scripts/test installs it)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [*command, "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("the refusing broker did not start") from None
                time.sleep(0.05)

    def refuse_writes(self, refuse: bool = True) -> None:
        self.client.config_set("maxmemory-policy", "noeviction")
        self.client.config_set("maxmemory", "1" if refuse else "0")

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def refusing_broker(tmp_path: Path) -> Iterator[RefusingBroker]:
    broker = RefusingBroker(tmp_path)
    yield broker
    broker.stop()
