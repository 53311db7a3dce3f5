"""Graceful stop: SIGTERM/SIGINT set a flag that the batch loop checks between batches.

A second signal aborts at once (the open batch transaction rolls back), so an operator is never stuck.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from difymaint.core.exit_codes import ExitCode


class StopToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None

    def request(self, signum: int) -> None:
        self.signum = signum
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns early (True) when a stop is requested."""
        return self._event.wait(seconds) if seconds > 0 else self._event.is_set()

    @property
    def exit_code(self) -> ExitCode:
        if self.signum == signal.SIGINT:
            return ExitCode.INTERRUPTED_SIGINT
        return ExitCode.INTERRUPTED_SIGTERM


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

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if token.requested:
            raise Interrupted(signum)
        token.request(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield token
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
