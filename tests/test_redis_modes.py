"""Redis connection modes from Dify's settings: host/port, URL, Sentinel, and "no Redis configured"."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from difymaint.core.context import Context
from difymaint.core.errors import RedisUnavailable
from difymaint.core.locking import FileLock, NoLock, RedisJobLock
from difymaint.core.settings import load_settings
from tests.test_cli import run_cli

pytestmark = pytest.mark.redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_redis_configured_means_no_redis(sqlite_url: str) -> None:
    ctx = Context(load_settings(None, {"DIFYMAINT_DATABASE_URL": sqlite_url}))
    assert ctx.redis is None
    assert isinstance(ctx.job_lock("retention:clean_messages"), FileLock)
    assert isinstance(ctx.job_lock("retention:clean_messages", enabled=False), NoLock)


def test_difys_host_and_port_settings(redis_url: str, sqlite_url: str) -> None:
    parsed = urlparse(redis_url)
    settings = load_settings(
        None,
        {
            "DIFYMAINT_DATABASE_URL": sqlite_url,
            "REDIS_HOST": parsed.hostname,
            "REDIS_PORT": parsed.port,
            "REDIS_DB": 3,
            "REDIS_KEY_PREFIX": "p",
        },
    )
    ctx = Context(settings)
    lock = ctx.job_lock("retention:clean_messages")
    assert isinstance(lock, RedisJobLock) and lock.key == "p:retention:clean_messages"
    assert lock.acquire()
    assert ctx.redis.connection_pool.connection_kwargs["db"] == 3
    assert ctx.redis.exists("p:retention:clean_messages") == 1
    lock.renew()
    assert 50 <= ctx.redis.ttl("p:retention:clean_messages") <= 60  # the 60 s default lease (heartbeat-renewed)
    lock.release()
    assert ctx.redis.exists("p:retention:clean_messages") == 0
    ctx.close()


def test_unreachable_redis_is_one_line(sqlite_url: str) -> None:
    result = run_cli(
        ["clean-messages", "--dry-run", "--database-url", sqlite_url],
        env={
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(_free_port()),
            "REDIS_SOCKET_TIMEOUT": "1",
            "REDIS_SOCKET_CONNECT_TIMEOUT": "1",
        },
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Redis" in lines[0]


def test_unreachable_redis_raises(sqlite_url: str) -> None:
    settings = load_settings(
        None,
        {
            "DIFYMAINT_DATABASE_URL": sqlite_url,
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": _free_port(),
            "REDIS_SOCKET_CONNECT_TIMEOUT": 1,
        },
    )
    with pytest.raises(RedisUnavailable):
        _ = Context(settings).redis


@pytest.fixture
def sentinel(redis_url: str, tmp_path: Path) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed")
    port = _free_port()
    master = urlparse(redis_url)
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster {master.hostname} {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 5000\n"
    )
    proc = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sentinel_settings(sentinel: int, sqlite_url: str) -> None:
    settings = load_settings(
        None,
        {
            "DIFYMAINT_DATABASE_URL": sqlite_url,
            "REDIS_USE_SENTINEL": True,
            "REDIS_SENTINELS": f"127.0.0.1:{sentinel}",
            "REDIS_SENTINEL_SERVICE_NAME": "mymaster",
            "REDIS_SENTINEL_SOCKET_TIMEOUT": 1.0,
        },
    )
    ctx = Context(settings)
    lock: Any = ctx.job_lock("retention:clean_messages")
    assert isinstance(lock, RedisJobLock)
    assert lock.acquire()
    assert not ctx.job_lock("retention:clean_messages").acquire()  # single flight through the Sentinel master
    lock.release()
    ctx.close()


def test_malformed_sentinel_list(sqlite_url: str) -> None:
    result = run_cli(
        ["clean-messages", "--dry-run", "--database-url", sqlite_url],
        env={"REDIS_USE_SENTINEL": "true", "REDIS_SENTINELS": "nohostport", "REDIS_SENTINEL_SERVICE_NAME": "m"},
    )
    assert result.returncode == 2 and "REDIS_SENTINELS" in result.stderr


def test_unreachable_sentinels_are_one_short_line(sqlite_url: str) -> None:
    """The line names the sentinels actually asked and the service, not REDIS_HOST's default, and not the
    thousand-character repr of redis-py's sentinel clients (issue 13 item 9)."""
    ports = [_free_port(), _free_port()]
    result = run_cli(
        ["clean-messages", "--dry-run", "--database-url", sqlite_url],
        env={
            "REDIS_USE_SENTINEL": "true",
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in ports),
            "REDIS_SENTINEL_SERVICE_NAME": "mymaster",
        },
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.strip().splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    line = errors[0]
    assert f"Sentinel 127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]} (service 'mymaster')" in line, line
    assert f"127.0.0.1:{ports[0]} Connection refused; 127.0.0.1:{ports[1]} Connection refused" in line, line
    assert "6379" not in line and "localhost" not in line and "<redis" not in line
    assert "REDIS_SENTINELS" in line and len(line) < 400, line


def test_sentinel_without_the_service_says_so(sentinel: int, sqlite_url: str) -> None:
    result = run_cli(
        ["clean-messages", "--dry-run", "--database-url", sqlite_url],
        env={
            "REDIS_USE_SENTINEL": "true",
            "REDIS_SENTINELS": f"127.0.0.1:{sentinel}",
            "REDIS_SENTINEL_SERVICE_NAME": "othermaster",
        },
    )
    assert result.returncode == 1
    assert f"127.0.0.1:{sentinel} monitors no service 'othermaster'" in result.stderr, result.stderr


def test_lock_errors_are_short_for_a_sentinel_without_master() -> None:
    """A Sentinel that loses its master mid-run fails the lock renewal; the line names the service, not the
    repr of every sentinel client that redis-py puts in its message."""
    from redis.sentinel import MasterNotFoundError

    from difymaint.core.redis_client import short_redis_error

    noisy = MasterNotFoundError("No master found for 'mymaster' : " + "<redis.client.Redis(...)> - x, " * 40)
    assert short_redis_error(noisy) == "no Sentinel answered with a master for 'mymaster'"
    long_line = ConnectionError("Error 111 connecting to 10.0.0.1:26379. " + "x" * 500)
    assert len(short_redis_error(long_line)) <= 160 and not short_redis_error(long_line).startswith("Error")
