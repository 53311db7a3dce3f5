"""SIGTERM/SIGINT while a statement waits on a row lock: the watcher cancels it after the grace period, the
batch rolls back, and the run exits 143/130 with its JSON summary within seconds (not when the lock frees)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from difymaint.core.stop import CANCEL_GRACE_S
from tests.conftest import NOW
from tests.scenario import assert_cascade_consistent, remaining_messages, seed
from tests.test_cli import CLEAN_ENV
from tests.test_lock_heartbeat import _start, _wait_for, _waiting_on_lock, rows_locked


@pytest.mark.postgres
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_cancels_a_blocked_statement(db_engine: Any, db_url: str, signum: int, code: int) -> None:
    seed(db_engine, NOW)
    before = remaining_messages(db_engine)
    with rows_locked(db_url):
        proc = _start(db_url, None)
        try:
            _wait_for("the DELETE to wait on the row lock", lambda: _waiting_on_lock(db_url))
            sent = time.monotonic()
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=30)  # the row lock is still held here
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == code, err
    assert took < CANCEL_GRACE_S + 5, took
    summary = json.loads(out)
    assert summary["outcome"] == "interrupted" and summary["stop_reason"].startswith("signal")
    assert remaining_messages(db_engine) == before  # the cancelled batch rolled back whole
    assert summary["tables"]["messages"] == 0
    assert_cascade_consistent(db_engine)


# --- signals at the edges of a run (in-process; a recorder stands in for the default handler) --------------


class _Recorder:
    """Installed as the process's SIGTERM handler before the CLI runs: it is called only if a signal arrives
    while difymaint's own handlers are not installed (where the default handler would kill with 143)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, signum: int, _frame: object) -> None:
        self.calls.append(signum)


@pytest.fixture
def recorder() -> Any:
    rec = _Recorder()
    previous = signal.signal(signal.SIGTERM, rec)
    yield rec
    signal.signal(signal.SIGTERM, previous)


def _invoke(args: list[str], env: Any) -> Any:
    from typer.testing import CliRunner

    from difymaint.cli.app import app
    from difymaint.cli.runner import use_environment

    with use_environment(env):
        return CliRunner().invoke(app, args, env={"NO_COLOR": "1"})


def test_signal_while_connecting_stops_before_the_first_batch(sqlite_url: str, recorder: _Recorder) -> None:
    import os

    import sqlalchemy as sa

    from difymaint.cli.runner import Environment
    from difymaint.core.context import Context

    engine = sa.create_engine(sqlite_url)
    seed(engine, NOW)
    before = remaining_messages(engine)

    def context_factory(settings: Any, **kwargs: Any) -> Context:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the run is still being set up
        return Context(settings, **kwargs)

    result = _invoke(
        ["clean-messages", "--database-url", sqlite_url, "--yes", "--json"],
        Environment(context_factory=context_factory, stdin_isatty=False),
    )
    assert recorder.calls == []  # difymaint's handler took it, not the default one
    assert result.exit_code == 143, result.output
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "interrupted" and summary["tables"]["messages"] == 0
    assert remaining_messages(engine) == before


def test_signal_after_the_outcome_changes_nothing(sqlite_url: str, recorder: _Recorder) -> None:
    import io
    import os

    from difymaint.cli.runner import Environment

    class SignallingStdout(io.StringIO):
        def write(self, text: str) -> int:
            os.kill(os.getpid(), signal.SIGTERM)  # twice: neither may raise nor change the exit code
            os.kill(os.getpid(), signal.SIGTERM)
            return super().write(text)

    out = SignallingStdout()
    result = _invoke(
        ["clean-messages", "--database-url", sqlite_url, "--dry-run", "--json"],
        Environment(stdout=out, stdin_isatty=False),
    )
    assert recorder.calls == []
    assert result.exit_code == 0, result.output
    assert json.loads(out.getvalue())["outcome"] == "done"


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` installed (Linux: SigCgt in /proc/PID/status)."""
    try:
        status = open(f"/proc/{pid}/status").read()  # noqa: SIM115 - read at once
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signum - 1)))


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_while_still_importing_gets_a_summary(sqlite_url: str, signum: int, code: int) -> None:
    """The entry point catches the signal before the CLI's imports (difymaint._entry); the job then stops
    before its first batch with its JSON summary instead of dying mid-import."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "difymaint", "clean-messages", "--yes", "--json", "--database-url", sqlite_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**CLEAN_ENV, "NO_COLOR": "1"},
    )
    deadline = time.monotonic() + 10
    # SIGTERM's bit: Python itself catches SIGINT from its first instant; the entry point adds SIGTERM.
    while not _catches(proc.pid, signal.SIGTERM) and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    summary = json.loads(out)
    assert summary["outcome"] == "interrupted" and summary["batches"] == 0


def test_a_signal_during_a_command_without_a_run_still_ends_the_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "difymaint", "jobs", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**CLEAN_ENV, "NO_COLOR": "1"},
    )
    deadline = time.monotonic() + 10
    while not _catches(proc.pid, signal.SIGTERM) and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143  # recorded during the imports, or after them: exit 128+15 either way


@pytest.mark.postgres
def test_max_runtime_holds_when_the_database_freezes(pg_engine: Any, pg_url: str) -> None:
    """A backend that stops answering (SIGSTOP: a frozen or partitioned server) cannot hold the run past
    --max-runtime: the statement is cancelled, then its connection dropped, and the run ends with one line."""
    import os

    import sqlalchemy as sa

    seed(pg_engine, NOW, per_tenant=80)
    env = {
        **CLEAN_ENV,
        "NO_COLOR": "1",
        "DIFYMAINT_DEADLINE_GRACE_S": "1",
        "DIFYMAINT_TARGET_BATCH_MS": "0",
        "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL": "0",
    }
    args = ["clean-messages", "--yes", "--json", "--batch-size", "1", "--max-runtime", "2", "--database-url", pg_url]
    proc = subprocess.Popen(
        [sys.executable, "-m", "difymaint", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    frozen: list[int] = []
    try:
        query = sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = 'difymaint'")
        deadline = time.monotonic() + 30
        while not frozen and time.monotonic() < deadline and proc.poll() is None:
            with pg_engine.connect() as conn:
                pids = [row[0] for row in conn.execute(query)]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
                frozen.append(pid)
            time.sleep(0.05)
        assert frozen, "the run never connected"
        started = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    assert took < 2 + 1 + 5 + 10, err  # budget + grace + the cancel's wait, with room for a slow machine
    assert proc.returncode in (0, 1, 4), (proc.returncode, err)  # done, dropped, or stopped at the budget
    if proc.returncode == 1:
        assert "dropping the run's connections" in err and "Traceback" not in err
    assert json.loads(out)["job"] == "clean-messages"


@pytest.mark.postgres
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_still_reports_the_backlog(db_engine: Any, db_url: str, signum: int) -> None:
    """A second signal while the first one's batch is still stuck cancels it at once, without the first one's
    grace (the two signals reach the Python handler as one: the watcher counts them), and the summary still
    says exactly how many expired messages are left (it was null after a double signal, issue 13 item 9)."""
    import sqlalchemy as sa

    seed(db_engine, NOW)
    with rows_locked(db_url):
        proc = _start(db_url, None)
        try:
            _wait_for("the DELETE to wait on the row lock", lambda: _waiting_on_lock(db_url))
            proc.send_signal(signum)
            time.sleep(0.3)  # well inside the first signal's grace for the open batch
            sent = time.monotonic()
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=30)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 128 + signum, err
    assert took < CANCEL_GRACE_S - 0.3, took  # the second signal did not wait out the grace
    summary = json.loads(out)
    assert summary["outcome"] == "interrupted", summary
    with db_engine.connect() as conn:
        left = conn.execute(
            sa.text("SELECT count(*) FROM messages WHERE created_at < :c"), {"c": summary["window"]["end_before"]}
        ).scalar_one()
    assert left > 0 and summary["rows_remaining"] == left, (summary, left)
    assert_cascade_consistent(db_engine)


def _interrupt_at_batch(number: int) -> Any:
    """A batch hook standing in for the Python signal handler's second call, which raises Interrupted from
    wherever the main thread is; here, right after batch ``number`` committed."""
    from difymaint.core.stop import Interrupted

    def hook(run: Any) -> None:
        if run.summary.batches == number:
            raise Interrupted(signal.SIGTERM)

    return hook


@pytest.mark.postgres
def test_interrupted_run_counts_its_backlog(db_engine: Any, db_url: str) -> None:
    from difymaint.core.stop import Interrupted
    from difymaint.core.window import TimeWindow
    from difymaint.engine.options import RunOptions
    from difymaint.jobs import clean_messages
    from difymaint.jobs.clean_messages import CleanMessagesParams
    from difymaint.jobs.execute import run_job
    from tests.conftest import make_context

    scenario = seed(db_engine, NOW, per_tenant=10)
    ctx = make_context(db_url, DIFYMAINT_TARGET_BATCH_MS=0)
    ctx.batch_hooks.append(_interrupt_at_batch(2))
    params = CleanMessagesParams(window=TimeWindow(end_before=scenario.cutoff), run=RunOptions(batch_size=5))
    with pytest.raises(Interrupted) as caught:
        run_job(clean_messages, ctx, params)
    summary = caught.value.difymaint_summary  # type: ignore[attr-defined]
    left = len(remaining_messages(db_engine) & scenario.all_old())
    assert summary.tables["messages"] == 10 and left > 0
    assert summary.rows_remaining == left
    assert_cascade_consistent(db_engine)
