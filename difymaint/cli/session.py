"""What the commands that are not jobs share (console, doctor, demo): consoles that honour the injected
environment, one-line errors, and a context from the settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from difymaint.cli.options import ConsoleOptions
    from difymaint.cli.render import Consoles
    from difymaint.core.context import Context


def make_consoles(color: bool | None = None) -> Consoles:
    from difymaint.cli.render import Consoles, root_output, setup_logging
    from difymaint.cli.runner import current_environment

    env = current_environment()
    consoles = Consoles.create(color, out=env.out, err=env.err)
    root = root_output()
    setup_logging(consoles, verbosity=root.verbose - root.quiet, log_format="text")
    if not consoles.out.is_terminal and "COLUMNS" not in os.environ:
        consoles.out.width = 160  # piped into a file or over `kubectl exec`: do not squeeze tables into 80
    return consoles


@contextmanager
def guarded(consoles: Consoles) -> Iterator[None]:
    """Errors become one line on stderr and their exit code, through the same ladder as the jobs' runs."""
    from difymaint.cli.render import error_line
    from difymaint.core.summary import exit_code_of
    from difymaint.ops.runner import failure_of

    try:
        yield
    except (typer.Exit, typer.Abort):  # Click's own ends (a confirmation answered no, an exit code)
        raise
    except Exception as exc:
        failure = failure_of(exc)
        error_line(consoles, failure.message, failure.hint)
        raise typer.Exit(int(exit_code_of(failure.outcome))) from None


@contextmanager
def console_session(opts: ConsoleOptions) -> Iterator[tuple[Consoles, Context]]:
    """What every console command opens: its consoles, errors as one line (:func:`guarded`), and a settings
    context that is closed however the command ends."""
    consoles = make_consoles(opts.color)
    with guarded(consoles):
        ctx = settings_context(opts)
        try:
            yield consoles, ctx
        finally:
            ctx.close()


def settings_context(opts: ConsoleOptions) -> Context:
    from difymaint.core.context import Context
    from difymaint.core.settings import load_settings

    overrides: dict[str, object] = {"DIFYMAINT_DATABASE_URL": opts.database_url, "DIFYMAINT_REDIS_URL": opts.redis_url}
    return Context(load_settings(opts.env_file, overrides))
