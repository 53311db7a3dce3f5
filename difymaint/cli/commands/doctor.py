"""``difymaint doctor``: check the database, Dify's schema and indexes, Redis, the broker, billing, mail,
archive storage and the schedule switches, and say how to fix what is wrong."""

from __future__ import annotations

from typing import Annotated

import typer

from difymaint.cli.commands._common import print_json
from difymaint.cli.options import ConsoleOptions, console_options
from difymaint.cli.session import guarded, make_consoles, settings_context

SHORT_HELP = "Check settings, connections, schema and indexes; say how to fix what is wrong."


def register(app: typer.Typer) -> None:
    app.command("doctor", short_help=SHORT_HELP)(doctor)


@console_options(redis=True)
def doctor(
    opts: ConsoleOptions,
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
) -> int:
    """Check everything the jobs depend on: database and Dify schema (tables, columns, alembic version), missing
    indexes on cascade columns (with the CREATE INDEX CONCURRENTLY to run), Redis and its key prefix, the Celery
    broker, the billing API, mail (--send-test-mail), archive storage, and which jobs a scheduled run would do
    given Dify's ENABLE_* switches. Exit 1 when anything blocks a job.
    """
    from rich.table import Table

    from difymaint.core.exit_codes import ExitCode
    from difymaint.ops.doctor import DoctorOptions, Status, has_blocker, run_checks

    consoles = make_consoles(opts.color)
    with guarded(consoles):
        ctx = settings_context(opts)
    try:
        checks = run_checks(ctx, DoctorOptions(create_missing_indexes, send_test_mail))
    finally:
        ctx.close()
    blocked = has_blocker(checks)
    if opts.json:
        payload = {"ok": not blocked, "checks": [check.to_dict() for check in checks]}
        print_json(consoles, payload)
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
