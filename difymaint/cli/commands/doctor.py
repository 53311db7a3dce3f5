"""``difymaint doctor``: check the database, Dify's schema and indexes, Redis, the broker, billing, mail,
archive storage and the schedule switches, and say how to fix what is wrong."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated

import typer

from difymaint.jobs.spec import CONNECTION


def register(app: typer.Typer) -> None:
    app.command(
        "doctor",
        help="Check everything the jobs depend on: database and Dify schema (tables, columns, alembic version), "
        "missing indexes on cascade columns (with the CREATE INDEX CONCURRENTLY to run), Redis and its key "
        "prefix, the Celery broker, the billing API, mail (--send-test-mail), archive storage, and which jobs a "
        "scheduled run would do given Dify's ENABLE_* switches. Exit 1 when anything blocks a job.",
        short_help="Check settings, connections, schema and indexes; say how to fix what is wrong.",
    )(doctor)


def doctor(
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="PATH",
            envvar="DIFYMAINT_ENV_FILE",
            help="Dify's .env file to read settings from.",
            rich_help_panel=CONNECTION,
        ),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", metavar="URL", help="SQLAlchemy URL; overrides DB_*.")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", metavar="URL", help="redis:// URL; overrides REDIS_*.")
    ] = None,
    create_missing_indexes: Annotated[
        bool,
        typer.Option(
            "--create-missing-indexes",
            help="Create the missing cascade indexes (CREATE INDEX CONCURRENTLY: Dify keeps writing meanwhile).",
        ),
    ] = False,
    send_test_mail: Annotated[
        str | None, typer.Option("--send-test-mail", metavar="ADDRESS", help="Send a test mail to this address.")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the checks as one JSON object on stdout.")] = False,
    color: Annotated[bool | None, typer.Option("--color/--no-color", help="Force colour on or off.")] = None,
) -> int:
    from rich.table import Table

    from difymaint.cli.render import Consoles, error_line
    from difymaint.core.context import Context
    from difymaint.core.errors import DifymaintError
    from difymaint.core.exit_codes import ExitCode
    from difymaint.core.settings import load_settings
    from difymaint.diagnose import DoctorOptions, Status, has_blocker, run_checks

    consoles = Consoles.create(color)
    overrides: dict[str, object] = {"DIFYMAINT_DATABASE_URL": database_url, "DIFYMAINT_REDIS_URL": redis_url}
    try:
        settings = load_settings(env_file, overrides)
    except DifymaintError as exc:
        error_line(consoles, exc.message, exc.hint)
        return int(exc.exit_code)
    ctx = Context(settings)
    try:
        checks = run_checks(ctx, DoctorOptions(create_missing_indexes, send_test_mail))
    finally:
        ctx.close()
    blocked = has_blocker(checks)
    if json:
        payload = {"ok": not blocked, "checks": [check.to_dict() for check in checks]}
        typer.echo(jsonlib.dumps(payload))
    else:
        style = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in ("area", "status", "detail", "fix"):
            table.add_column(column, overflow="fold")
        for check in checks:
            fix = "\n".join([check.hint, *check.statements]).strip()
            table.add_row(check.area, f"[{style[check.status]}]{check.status.value}[/]", check.detail, fix)
        consoles.out.print(table)
        if blocked:
            consoles.err.print("[red]doctor: at least one check failed[/red]")
    return int(ExitCode.FAILED if blocked else ExitCode.OK)
