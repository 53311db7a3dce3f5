"""A real ``celery worker`` (tests/celery_stub_app.py) consuming Dify's queues on the test Redis.

Fixtures (registered in tests/conftest.py):

* ``celery_worker`` — a worker on the test Redis (DB 1, like Dify's docker broker) without a key prefix;
  parametrize it indirectly with a prefix to get one running under ``REDIS_KEY_PREFIX``::

      @pytest.mark.parametrize("celery_worker", ["", "dify"], indirect=True)
      def test_x(celery_worker): ...
      ctx = make_context(pg_url, **celery_worker.settings)      # CELERY_BROKER_URL + REDIS_KEY_PREFIX
      assert celery_worker.received(TASK, 3) == [(args, kwargs), ...]

  Workers are started once per session and prefix (a worker takes seconds to boot); each test gets an
  emptied record, and every message published before the test ends must have been consumed.
* ``celery_worker_factory`` — start a worker with any broker settings (e.g. a Sentinel URL), optionally on
  some queues only (``start(env, queues="dataset,mail")``).
* ``sentinel_broker`` — a real ``redis-server --sentinel`` on a free port watching the test Redis.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROKER_DB = 1
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CeleryWorker:
    """One running worker process and the file its stub tasks record into."""

    env: dict[str, str]
    record: Path
    process: subprocess.Popen[bytes]
    log: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return self.env.get("REDIS_KEY_PREFIX", "")

    @property
    def broker_url(self) -> str:
        return self.env["CELERY_BROKER_URL"]

    def entries(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def errors(self) -> list[dict[str, Any]]:
        return [entry for entry in self.entries() if "error" in entry]

    def received(self, task: str, count: int, timeout: float = 30.0) -> list[tuple[list[Any], dict[str, Any]]]:
        """Wait until ``count`` messages of ``task`` ran; returns every (args, kwargs) seen for it.

        Fails at once when the worker rejected a message (unknown name, arguments not fitting Dify's
        signature) and after ``timeout`` seconds when fewer arrived.
        """
        deadline = time.monotonic() + timeout
        while True:
            entries = self.entries()
            errors = [entry for entry in entries if "error" in entry]
            if errors:
                raise AssertionError(f"the stub worker rejected messages: {errors}")
            got = [(entry["args"], entry["kwargs"]) for entry in entries if entry.get("task") == task]
            if len(got) >= count:
                return got
            if self.process.poll() is not None:
                raise AssertionError(f"the celery worker exited ({self.process.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{task}: {len(got)} of {count} message(s) arrived within {timeout}s")
            time.sleep(0.05)

    def records(self, task: str) -> list[dict[str, Any]]:
        """The full records (with ``queue`` and ``eta``) of ``task`` so far."""
        return [entry for entry in self.entries() if entry.get("task") == task]

    def reset(self) -> None:
        self.record.write_text("", encoding="utf-8")

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_worker(
    directory: Path, env_overrides: dict[str, str], *, name: str = "stub", queues: str | None = None
) -> CeleryWorker:
    """Start ``celery worker`` on the stub app; returns once it is consuming (its worker_ready signal)."""
    directory.mkdir(parents=True, exist_ok=True)
    record, ready, log = directory / "received.jsonl", directory / "ready", directory / "worker.log"
    for path in (record, ready):
        path.unlink(missing_ok=True)
    record.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_"))}
    env.update(env_overrides)
    env.update(STUB_RECORD_FILE=str(record), STUB_READY_FILE=str(ready), PYTHONPATH=str(ROOT))
    from tests.celery_stub_app import QUEUES

    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.celery_stub_app",
        "worker",
        "--pool=solo",  # one process: little CPU on a shared test machine
        "--concurrency=1",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
        f"--hostname={name}-{os.getpid()}@%h",
        "-Q",
        queues or QUEUES,
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    worker = CeleryWorker(env, record, process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"the celery worker did not start: {worker.tail()}")
        time.sleep(0.05)
    worker.settings = {k: v for k, v in env_overrides.items() if k.startswith(("CELERY_", "REDIS_KEY_PREFIX"))}
    return worker


def broker_url(redis_url: str, db: int = BROKER_DB) -> str:
    """The test Redis URL pointed at another DB (the broker's, like Dify's docker DB 1)."""
    return urlsplit(redis_url)._replace(path=f"/{db}").geturl()


@pytest.fixture(scope="session")
def _celery_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CeleryWorker]]:
    workers: dict[str, CeleryWorker] = {}
    yield workers
    for worker in workers.values():
        worker.stop()


def _drained(worker: CeleryWorker, settle: float = 0.3) -> None:
    """Every message published to the worker's queues was consumed (none left waiting in Redis)."""
    import redis

    client = redis.Redis.from_url(worker.broker_url)
    try:
        from tests.celery_stub_app import QUEUES

        prefix = f"{worker.prefix}:" if worker.prefix else ""
        keys = [
            f"{prefix}{q}{suffix}" for q in QUEUES.split(",") for suffix in ("", "\x06\x163", "\x06\x166", "\x06\x169")
        ]
        deadline = time.monotonic() + 10
        while sum(int(client.llen(key)) for key in keys) and time.monotonic() < deadline:
            time.sleep(settle)
    finally:
        client.close()


@pytest.fixture
def celery_worker(
    request: pytest.FixtureRequest,
    redis_url: str,
    _celery_workers: dict[str, CeleryWorker],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CeleryWorker]:
    prefix = str(getattr(request, "param", "") or "")
    worker = _celery_workers.get(prefix)
    if worker is None or worker.process.poll() is not None:
        env = {"CELERY_BROKER_URL": broker_url(redis_url)}
        if prefix:
            env["REDIS_KEY_PREFIX"] = prefix
        worker = start_worker(tmp_path_factory.mktemp(f"celery-{prefix or 'noprefix'}"), env)
        _celery_workers[prefix] = worker
    worker.reset()
    yield worker
    _drained(worker)


@pytest.fixture
def celery_worker_factory(tmp_path: Path) -> Iterator[Callable[..., CeleryWorker]]:
    started: list[CeleryWorker] = []

    def start(env: dict[str, str], queues: str | None = None) -> CeleryWorker:
        worker = start_worker(tmp_path / f"worker{len(started)}", env, name=f"custom{len(started)}", queues=queues)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@dataclass
class SentinelBroker:
    port: int
    master_name: str
    password: str
    process: subprocess.Popen[bytes]

    def url(self, db: int = BROKER_DB) -> str:
        return f"sentinel://127.0.0.1:{self.port}/{db}"


@pytest.fixture
def sentinel_broker(redis_url: str, tmp_path: Path) -> Iterator[SentinelBroker]:
    """A real Redis Sentinel (password-protected) monitoring the test Redis as master ``difymaster``."""
    import shutil

    import redis

    server = shutil.which("redis-sentinel") or shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (scripts/test installs it)")
    master = urlsplit(redis_url)
    port, name, password = free_port(), "difymaster", "sentinel-secret"
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nrequirepass {password}\n"
        f"sentinel monitor {name} {master.hostname} {master.port} 1\n"
        f"sentinel down-after-milliseconds {name} 60000\n",
        encoding="utf-8",
    )
    log = tmp_path / "sentinel.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([server, str(conf), "--sentinel"], stdout=out, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                if client.execute_command("SENTINEL", "get-master-addr-by-name", name):
                    break
            except redis.RedisError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis sentinel did not start: {log.read_text(errors='replace')[-1500:]}")
            time.sleep(0.1)
        yield SentinelBroker(port, name, password, process)
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
