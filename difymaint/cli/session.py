"""What the commands that are not jobs share (console, doctor, demo): the connection and output options,
consoles that honour the injected environment, one-line errors, and a context from the settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from difymaint.jobs.spec import CONNECTION, OUTPUT

if TYPE_CHECKING:
    from difymaint.cli.render import Consoles
    from difymaint.core.context import Context


EnvFile = Annotated[
    Path | None,
    typer.Option(
        "--env-file", metavar="PATH", envvar="DIFYMAINT_ENV_FILE", help="Dify's .env file.", rich_help_panel=CONNECTION
    ),
]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", metavar="URL", help="SQLAlchemy URL.", rich_help_panel=CONNECTION)
]
RedisUrl = Annotated[
    str | None, typer.Option("--redis-url", metavar="URL", help="redis:// URL.", rich_help_panel=CONNECTION)
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.", rich_help_panel=OUTPUT)]
Color = Annotated[
    bool | None, typer.Option("--color/--no-color", help="Force colour on or off.", rich_help_panel=OUTPUT)
]


def make_consoles(color: bool | None = None) -> Consoles:
    from difymaint.cli.render import Consoles
    from difymaint.cli.runner import current_environment

    env = current_environment()
    consoles = Consoles.create(color, out=env.out, err=env.err)
    if not consoles.out.is_terminal and "COLUMNS" not in os.environ:
        consoles.out.width = 160  # piped into a file or over `kubectl exec`: do not squeeze tables into 80
    return consoles


@contextmanager
def guarded(consoles: Consoles) -> Iterator[None]:
    """Errors become one line on stderr and their exit code, as for the jobs."""
    import sqlalchemy as sa

    from difymaint.cli.render import error_line
    from difymaint.core.errors import DifymaintError

    try:
        yield
    except DifymaintError as exc:
        error_line(consoles, exc.message, exc.hint)
        raise typer.Exit(int(exc.exit_code)) from None
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        error_line(consoles, f"database error: {reason[0] if reason else type(exc).__name__}")
        raise typer.Exit(1) from None


@contextmanager
def console_session(
    consoles: Consoles, env_file: Path | None, database_url: str | None, redis_url: str | None
) -> Iterator[Context]:
    """What every console command opens: errors as one line (:func:`guarded`) and a settings context that
    is closed however the command ends."""
    with guarded(consoles):
        ctx = settings_context(env_file, database_url, redis_url)
        try:
            yield ctx
        finally:
            ctx.close()


def settings_context(env_file: Path | None, database_url: str | None, redis_url: str | None) -> Context:
    from difymaint.core.context import Context
    from difymaint.core.settings import load_settings

    overrides: dict[str, object] = {"DIFYMAINT_DATABASE_URL": database_url, "DIFYMAINT_REDIS_URL": redis_url}
    return Context(load_settings(env_file, overrides))
