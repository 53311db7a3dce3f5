"""What the commands that are not jobs share (console, doctor, demo): consoles that honour the injected
environment, one-line errors, and a context from the settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, cast

import typer

if TYPE_CHECKING:
    from difymaint.cli.options import ConsoleOptions
    from difymaint.cli.render import Consoles
    from difymaint.core.context import Context


def make_consoles(color: bool | None = None) -> Consoles:
    """Consoles whose every line is scrubbed as the jobs' are (their JSON: :func:`print_json`, masked as data)."""
    from difymaint.cli.render import Consoles, ScrubbedStream, root_output, setup_logging
    from difymaint.cli.runner import current_environment

    env = current_environment()
    out, err = (cast(IO[str], ScrubbedStream(stream)) for stream in (env.out, env.err))
    consoles = Consoles.create(color, out=out, err=err)
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
    """The console's settings and context, with every secret they hold registered for scrubbing (as a job run
    does): from the environment and the flags before the settings load, from the settings after."""
    from difymaint.core.context import Context
    from difymaint.core.redact import register_secrets, secrets_in
    from difymaint.core.settings import load_settings

    overrides: dict[str, object] = {"DIFYMAINT_DATABASE_URL": opts.database_url, "DIFYMAINT_REDIS_URL": opts.redis_url}
    register_secrets(secrets_in(dict(os.environ)) | secrets_in(overrides))
    settings = load_settings(opts.env_file, overrides)
    register_secrets(settings.secret_values())
    return Context(settings)
