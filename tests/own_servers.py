"""Throwaway PostgreSQL clusters and Redis servers that a test may restart.

The suite's shared servers (scripts/test) must stay up for every other test, so a fault test that restarts
the database or Redis starts its own on a free loopback port, and removes it afterwards. The set-up follows
scripts/services.sh: Debian's binaries, initdb as the ``postgres`` user when we are root, fsync off.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

_REQUIRE = bool(os.environ.get("CI") or os.environ.get("DIFYMAINT_TEST_REQUIRE_SERVICES"))


def _missing(what: str) -> None:
    message = f"{what} is not installed; scripts/test installs it"
    if _REQUIRE:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(candidate, "initdb"), os.X_OK):
            return Path(candidate)
    return None


class OwnPostgres:
    """A cluster of our own: ``start()``, ``restart()`` (the fault under test), ``stop()``."""

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            _missing("PostgreSQL")
        assert bindir is not None
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="difymaint-ownpg-"))
        self.base.chmod(0o755)  # the postgres user must reach the data directory inside
        self.data = self.base / "data"
        self.data.mkdir()
        self.port = free_port()
        # initdb refuses to run as root: the cluster belongs to the postgres user then.
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        # fsync off is safe here (the OS keeps what was written); synchronous_commit stays on, as on a real
        # server, or an immediate restart would lose acknowledged commits and the counts could not be compared.
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.data / "server.log")]
            + ["-w", "-t", "60", "-o", options, *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=90,
        )

    def start(self) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
            + ["--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self._pg_ctl("start")

    def restart(self, mode: str = "fast") -> None:
        self._pg_ctl("restart", "-m", mode)

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass  # never started, or already down
        shutil.rmtree(self.base, ignore_errors=True)


class OwnRedis:
    """A redis-server of our own, without persistence: a restart empties it, as a restarted cache does."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _missing("redis-server")
        assert binary is not None
        self.binary = binary
        self.base = Path(tempfile.mkdtemp(prefix="difymaint-ownredis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(self.base)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
