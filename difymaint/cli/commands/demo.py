"""``difymaint demo``: seed a SQLite Dify database and run clean-messages on it, dry run first."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command(
        "demo",
        help="Create a seeded SQLite database with Dify's real tables, run clean-messages --dry-run on it, then "
        "for real, and show that the dry-run counts match. Needs no PostgreSQL, Redis or billing service.",
        short_help="Try clean-messages on a seeded SQLite demo database.",
    )(demo)


def demo(
    path: Annotated[
        Path, typer.Option("--path", help="Where to create the demo database (replaced if present).")
    ] = Path("difymaint-demo.sqlite"),
    json: Annotated[bool, typer.Option("--json", help="Print the two JSON summaries on stdout.")] = False,
) -> int:
    import json as jsonlib
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from difymaint.cli.options import Common
    from difymaint.cli.runner import execute
    from difymaint.demo.seed import WORKSPACES, seed_demo
    from difymaint.jobs import JOBS

    path = path.resolve()
    plan_file = path.with_suffix(".plans.json")
    manifest = path.with_suffix(".orphans.jsonl")
    for leftover in (path, plan_file, manifest):
        leftover.unlink(missing_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}")
    now = datetime.now(UTC)
    seeded = seed_demo(engine, plan_file, now)
    engine.dispose()
    err = typer.echo
    err(f"Seeded {path} with {seeded['workspaces']} workspaces:", err=True)
    for workspace in WORKSPACES:
        err(f"  - {workspace.name}: old messages {workspace.expected}", err=True)
    err(f"Plans come from {plan_file} (DIFYMAINT_PLAN_FILE), standing in for Dify's billing API.\n", err=True)

    overrides: dict[str, object] = {
        "DIFYMAINT_DATABASE_URL": f"sqlite:///{path}",
        "DIFYMAINT_PLAN_FILE": str(plan_file),
        "DIFYMAINT_USE_REDIS": False,
        "DIFYMAINT_ASSUME_YES": True,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL": 0,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE": 100,
    }
    results = []
    for dry_run in (True, False):
        err(f"$ difymaint clean-messages{' --dry-run' if dry_run else ' --yes'}", err=True)
        captured: list[str] = []
        code = execute(
            JOBS["clean-messages"],
            Common(dry_run=dry_run, json=json),
            {"batch_size": 100, "clean_conversations": True, "orphan_manifest": None if dry_run else manifest},
            settings_overrides=overrides,
            summary_sink=captured.append,
        )
        results.append((code, captured[0] if captured else "{}"))
        err("", err=True)
    (dry_code, dry_json), (real_code, real_json) = results
    dry_tables = jsonlib.loads(dry_json).get("tables")
    real_tables = jsonlib.loads(real_json).get("tables")
    if dry_code or real_code:
        return max(dry_code, real_code)
    if dry_tables != real_tables:
        typer.echo("difymaint: error: the dry run's counts differ from the real run's", err=True)
        return 1
    err(f"The dry run predicted every table's count exactly. Orphaned upload files: {manifest}", err=True)
    err(f"Inspect the database: sqlite3 {path} 'select count(*) from messages'", err=True)
    return 0
