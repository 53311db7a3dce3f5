"""The ``difymaint`` command's entry point: SIGTERM/SIGINT are ours from the first line that runs.

Importing the CLI (Typer, pydantic, SQLAlchemy) takes a few hundred milliseconds; a signal arriving then used
to kill the process with no summary. Here a tiny handler is installed before those imports and only records
the signal; the job's own handlers (:func:`difymaint.core.stop.handle_stop_signals`) pick it up and stop the
run before its first batch, with its summary and exit 143/130. A command that never installs them (``--help``,
the console) exits with 128+signal after its output.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from difymaint.core.stop import EARLY_SIGNALS

_cli_imported = threading.Event()


def _remember(signum: int, _frame: FrameType | None) -> None:
    if not _cli_imported.is_set():
        EARLY_SIGNALS.append(signum)  # still importing: the run (if any) stops before its first batch
        return
    # Imported, and no job has installed its own handlers: behave as Python's defaults would.
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def main() -> None:
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _remember)
    from difymaint.cli.app import main as cli_main  # the heavy imports, now under our handler

    # From here a signal acts as usual (Ctrl-C ends `status --watch`) until a job installs its own handlers,
    # which also take over a signal that came during the imports (EARLY_SIGNALS).
    _cli_imported.set()

    try:
        cli_main()
    finally:
        if EARLY_SIGNALS:  # a signal nobody consumed: end as that signal would have, after the output
            sys.stdout.flush()
            sys.exit(128 + EARLY_SIGNALS[0])
