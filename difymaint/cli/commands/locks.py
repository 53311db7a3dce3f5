"""``difymaint locks``: who holds each job's single-flight lock, and for how much longer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command(
        "locks",
        help="Show each job's lock: free or held, by whom (host, pid, run id, start time for difymaint runs; "
        "Dify's beat otherwise) and the lease left. Redis when configured, else PostgreSQL advisory locks. "
        "Changes nothing.",
        short_help="Show who holds each job's lock.",
    )(locks)


def locks(
    env_file: Annotated[
        Path | None,
        typer.Option("--env-file", metavar="PATH", envvar="DIFYMAINT_ENV_FILE", help="Dify's .env file."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", metavar="URL", help="SQLAlchemy URL; overrides DB_*.")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", metavar="URL", help="redis:// URL; overrides REDIS_*.")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> int:
    import json as jsonlib

    from rich.console import Console
    from rich.table import Table

    from difymaint.cli.render import Consoles, error_line
    from difymaint.core.context import Context
    from difymaint.core.errors import DifymaintError
    from difymaint.core.locking import lock_status
    from difymaint.core.redact import register_secrets, secrets_in
    from difymaint.core.settings import load_settings
    from difymaint.jobs import JOBS

    consoles = Consoles.create(None)
    overrides = {"DIFYMAINT_DATABASE_URL": database_url, "DIFYMAINT_REDIS_URL": redis_url}
    register_secrets(secrets_in(overrides))
    ctx: Context | None = None
    try:
        settings = load_settings(env_file, overrides)
        register_secrets(settings.secret_values())
        ctx = Context(settings)
        client = ctx.redis
        keys = [(name, info.lock_key, ctx.keys.key(info.lock_key)) for name, info in JOBS.items() if info.lock_key]
        rows = lock_status(client, None if client is not None else ctx.engine, keys)
    except DifymaintError as exc:
        error_line(consoles, exc.message, exc.hint)
        raise typer.Exit(int(exc.exit_code)) from None
    finally:
        if ctx is not None:
            ctx.close()
    if json:
        typer.echo(jsonlib.dumps({"locks": rows}, default=str))
        return 0
    table = Table(show_edge=False, pad_edge=False)
    for column in ("job", "key", "state", "holder", "lease left"):
        table.add_column(column)
    for row in rows:
        state = "held" if row["held"] else "free"
        if row.get("holder_alive") is False:
            state = "held (holder dead: next run takes over)"
        lease = f"{row['lease_s']:.0f}s" if row.get("lease_s") else ""
        table.add_row(row["job"], row["key"], state, row.get("holder", ""), lease)
    Console(highlight=False, soft_wrap=True).print(table)
    return 0
