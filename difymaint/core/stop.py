"""Graceful stop: SIGTERM/SIGINT set a flag that the batch loop checks between batches.

A second signal aborts at once (the open batch transaction rolls back), so an operator is never stuck: the
Python handler raises :class:`Interrupted` when it runs twice, and the watcher below cancels the statement in
flight without waiting for the grace period.

A Python signal handler runs only when the main thread is back in the interpreter, never while it waits in
libpq for a statement blocked on a row lock. So the C-level handler's wakeup fd (``signal.set_wakeup_fd``)
also wakes a watcher thread, which gives the open batch :data:`CANCEL_GRACE_S` to finish and then cancels its
statement with the driver's cancel (psycopg2 ``connection.cancel()``, sqlite3 ``interrupt()``): the batch
rolls back, the loop sees the stop request, and the run exits 143/130 with its summary within seconds.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("difymaint")

CANCEL_GRACE_S = 2.0  # a short batch still finishes after SIGTERM; a statement stuck longer is cancelled


class Statements:
    """The statements in flight (one per open batch transaction), each with the driver's cancel."""

    def __init__(self) -> None:
        self._active: dict[int, Callable[[], None]] = {}
        self._connections: dict[int, Callable[[], None]] = {}
        self._changed = threading.Condition()
        self.cancelled = 0

    @contextmanager
    def running(self, cancel: Callable[[], None]) -> Iterator[None]:
        """``cancel`` asks the server to stop the statement (a server that no longer answers at all is dealt
        with by :meth:`abort_all`, which covers every open connection)."""
        key = id(cancel)
        with self._changed:
            self._active[key] = cancel
        try:
            yield
        finally:
            with self._changed:
                self._active.pop(key, None)
                self._changed.notify_all()

    def connection_opened(self, key: int, abort: Callable[[], None]) -> None:
        """An open database connection (any statement, not only a batch's): :meth:`abort_all` may drop it."""
        with self._changed:
            self._connections[key] = abort

    def connection_closed(self, key: int) -> None:
        with self._changed:
            self._connections.pop(key, None)

    def abort_all(self) -> None:
        """Drop every connection in use: their driver calls fail at once."""
        with self._changed:
            targets = list(self._connections.values())
        for abort in targets:
            try:
                abort()
            except Exception as exc:
                log.debug("connection abort failed: %s", exc)

    def cancel_after(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the open batches to end by themselves, then cancel what still runs."""
        with self._changed:
            self._changed.wait_for(lambda: not self._active, timeout=grace_s)
            targets = list(self._active.values())
        for cancel in targets:
            try:
                cancel()
                self.cancelled += 1
            except Exception as exc:
                log.debug("statement cancel failed: %s", exc)


STATEMENTS = Statements()


# Signals recorded by the entry point's start-up handler before the CLI was imported (difymaint._entry).
EARLY_SIGNALS: list[int] = []


class StopToken:
    deadline_passed = False  # the client-side deadline dropped a connection (see runtime_deadline)

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None
        # Set once the run's outcome is decided: a late signal must neither change the exit code nor raise
        # Interrupted while the summary is being printed.
        self.closed = False

    def request(self, signum: int) -> None:
        self.signum = signum
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns early (True) when a stop is requested."""
        return self._event.wait(seconds) if seconds > 0 else self._event.is_set()


class Interrupted(BaseException):
    """Raised by the second signal; BaseException so no job code swallows it by accident."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def handle_stop_signals(token: StopToken) -> Iterator[StopToken]:
    """Install SIGTERM/SIGINT handlers for the duration of a run (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield token
        return
    if EARLY_SIGNALS:  # arrived while the process was still importing (difymaint._entry): stop before any batch
        token.request(EARLY_SIGNALS[0])
        EARLY_SIGNALS.clear()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if token.closed:
            return
        if token.requested:
            raise Interrupted(signum)
        token.request(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    with _statement_canceller():
        try:
            yield token
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@contextmanager
def _statement_canceller() -> Iterator[None]:
    """The watcher thread fed by the signal wakeup fd (see the module docstring)."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter
        reader.close()
        writer.close()
        yield
        return
    stops = {int(signal.SIGTERM), int(signal.SIGINT)}

    def watch() -> None:
        # The first stop signal gives the open batch CANCEL_GRACE_S; a second one cancels at once. The wakeup
        # fd gets one byte per signal, whereas two signals arriving while the main thread waits in libpq run
        # the Python handler only once: this count is the only place a second signal is seen for sure.
        seen = 0
        cancel_at: float | None = None
        while True:
            reader.settimeout(None if cancel_at is None else max(0.0, cancel_at - time.monotonic()))
            try:
                data = reader.recv(64)
            except TimeoutError:
                cancel_at = None
                STATEMENTS.cancel_after(0)  # the grace is over: cancel what still runs
                continue
            except OSError:
                return
            if not data:
                return  # writer closed: the run is over
            seen += sum(1 for byte in data if byte in stops)
            if seen >= 2:
                cancel_at = None
                STATEMENTS.cancel_after(0)
            elif seen == 1 and cancel_at is None:
                cancel_at = time.monotonic() + CANCEL_GRACE_S

    thread = threading.Thread(target=watch, name="difymaint-signal-watcher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        writer.close()
        reader.shutdown(socket.SHUT_RDWR)
        thread.join(timeout=5)
        reader.close()


DEADLINE_ABORT_AFTER_S = 5.0  # after the cancel: a server that did not act on it gets its connections dropped


@contextmanager
def runtime_deadline(budget_s: float | None, grace_s: float, token: StopToken) -> Iterator[None]:
    """Back ``--max-runtime`` on the client: the budget is checked between batches, so a statement the
    database never finishes (a frozen or partitioned server) would hold the run forever. ``grace_s`` after the
    budget the batch statement in flight is cancelled; if the run still has not ended a few seconds later,
    every database connection it has checked out is dropped from our side, the blocked driver call fails, and
    the run ends with one line instead of hanging."""
    if budget_s is None:
        yield
        return
    finished = threading.Event()

    def watch() -> None:
        if finished.wait(budget_s + grace_s):
            return
        log.warning(
            "--max-runtime (%.0fs) is %.0fs past and the run has not ended: cancelling its statement", budget_s, grace_s
        )
        STATEMENTS.cancel_after(0)
        if finished.wait(DEADLINE_ABORT_AFTER_S):
            return
        log.warning("the database did not act on the cancel: dropping the run's connections")
        token.deadline_passed = True
        STATEMENTS.abort_all()

    thread = threading.Thread(target=watch, name="difymaint-runtime-deadline", daemon=True)
    thread.start()
    try:
        yield
    finally:
        finished.set()
