"""Throwaway PostgreSQL clusters and Redis servers that a test may restart, and streaming replicas.

The suite's shared servers (scripts/test) must stay up for every other test, so a fault test that restarts
the database or Redis starts its own on a free loopback port, and removes it afterwards. The set-up follows
scripts/services.sh: Debian's binaries, initdb as the ``postgres`` user when we are root, fsync off.

:class:`OwnReplica` is a hot standby of an :class:`OwnPostgres` (``pg_basebackup -R``, streaming over
loopback, on a port of its own): the replica-lag throttle's tests and the live-workload bench (bench/live.py,
which imports this module, so pytest is imported only when a binary is missing) use it.
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

_REQUIRE = bool(os.environ.get("CI") or os.environ.get("DIFYMAINT_TEST_REQUIRE_SERVICES"))


def _missing(what: str) -> None:
    import pytest

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


# Durability off for tests (the OS keeps what was written); the bench passes production settings instead.
FAST = {"fsync": "off", "full_page_writes": "off"}
# What a primary needs for streaming replicas (PostgreSQL's defaults already, said explicitly); initdb's
# pg_hba.conf lets loopback replication connections in with trust.
REPLICATION = {"wal_level": "replica", "max_wal_senders": "10"}


class OwnPostgres:
    """A cluster of our own: ``start()``, ``restart()`` (the fault under test), ``stop()``. ``settings`` are
    server options (``-c name=value``) instead of the fast test ones."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            _missing("PostgreSQL")
        assert bindir is not None
        self.bindir = bindir
        self.settings = {**REPLICATION, **(FAST if settings is None else settings)}
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
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
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

    def sql(self, statement: str, database: str = "postgres") -> str:
        """One statement through psql over loopback; its first value as text ("" when none)."""
        done = subprocess.run(
            [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database]
            + ["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip().split("\n")[0] if done.stdout.strip() else ""

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass  # never started, or already down
        shutil.rmtree(self.base, ignore_errors=True)


class OwnReplica(OwnPostgres):
    """A hot standby streaming from ``primary`` (``pg_basebackup -R``): ``start()``, ``stop()``, and
    ``pause_replay()`` / ``resume_replay()`` to make it lag on purpose."""

    def __init__(self, primary: OwnPostgres) -> None:
        super().__init__({**primary.settings, "hot_standby": "on", "wal_receiver_status_interval": "1"})
        self.primary = primary

    def start(self) -> None:
        # pg_basebackup writes standby.signal and primary_conninfo (-R); -X stream copies the WAL it needs.
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port)]
            + ["-U", "postgres", "-D", str(self.data), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        self.data.chmod(0o700)  # the server refuses a data directory others may read
        self._pg_ctl("start")
        self.wait_streaming()

    def wait_streaming(self, timeout_s: float = 30) -> None:
        """Until the primary lists this standby as streaming."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.primary.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") != "0":
                return
            time.sleep(0.1)
        raise RuntimeError("the replica did not start streaming")

    def pause_replay(self) -> None:
        self.sql("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.sql("SELECT pg_wal_replay_resume()")

    def halt(self) -> None:
        """Stop the server but keep its files (a replica that goes away mid-run)."""
        self._pg_ctl("stop", "-m", "immediate")

    def restart(self, mode: str = "fast") -> None:
        """Up again (after :meth:`halt` too), streaming."""
        super().restart(mode)
        self.wait_streaming()


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
