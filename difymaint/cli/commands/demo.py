"""``difymaint demo``: seed a SQLite Dify database, run the jobs that work on it with `run`, show the console."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEMO_JOBS = ("clean-messages", "clean-embeddings", "clean-oauth-tokens")  # the jobs with seeded rows on SQLite
# Dify's minute-level dispatchers: nothing is due in the demo, and none needs the broker until something is.
DEMO_DISPATCHERS = (
    "poll-workflow-schedules",
    "refresh-trigger-providers",
    "timeout-human-input",
    "check-upgradable-plugins",
)


SHORT_HELP = "Try the jobs and the console on a seeded SQLite demo database."


def register(app: typer.Typer) -> None:
    app.command("demo", short_help=SHORT_HELP)(demo)


def demo(
    path: Annotated[
        Path, typer.Option("--path", help="Where to create the demo database (replaced if present).")
    ] = Path("difymaint-demo.sqlite"),
    json: Annotated[bool, typer.Option("--json", help="Print the JSON summaries on stdout.")] = False,
) -> int:
    """Create a seeded SQLite database with Dify's real tables, run clean-messages --dry-run on it, then 'difymaint
    run clean-messages clean-embeddings clean-oauth-tokens' for real (checking that the dry run's counts match),
    then one tick of Dify's dispatchers (nothing is due), then show 'difymaint status' and 'difymaint history'.
    Needs no PostgreSQL, Redis, broker or billing service.
    """
    import json as jsonlib
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from difymaint.cli.commands.history import render_history
    from difymaint.cli.commands.status import render_status
    from difymaint.cli.options import Common
    from difymaint.cli.runner import execute
    from difymaint.cli.session import make_consoles
    from difymaint.core.context import Context
    from difymaint.core.settings import load_settings
    from difymaint.demo.seed import WORKSPACES, seed_demo
    from difymaint.jobs import JOBS
    from difymaint.ops.console import run_chain
    from difymaint.ops.history import HistoryStore

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
    err("  - 40 embedding cache rows (10 to 88 days old), 12 CLI OAuth tokens (half expired 45 days ago)", err=True)
    err(f"Plans come from {plan_file} (DIFYMAINT_PLAN_FILE), standing in for Dify's billing API.\n", err=True)

    overrides: dict[str, object] = {
        "DIFYMAINT_DATABASE_URL": f"sqlite:///{path}",
        "DIFYMAINT_PLAN_FILE": str(plan_file),
        "DIFYMAINT_USE_REDIS": False,
        "DIFYMAINT_ASSUME_YES": True,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL": 0,
        "SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE": 100,
    }
    values: dict[str, dict[str, object]] = {"clean-messages": {"batch_size": 100, "clean_conversations": True}}
    summaries: dict[str, list[str]] = {}

    def run_one(name: str, *, dry_run: bool = False) -> int:
        job_values = dict(values.get(name, {}))
        if name == "clean-messages" and not dry_run:
            job_values["orphan_manifest"] = manifest
        return execute(
            JOBS[name],
            Common(dry_run=dry_run, json=json),
            job_values,
            settings_overrides=overrides,
            summary_sink=summaries.setdefault(f"{name}{' --dry-run' if dry_run else ''}", []).append,
        )

    err("$ difymaint clean-messages --dry-run", err=True)
    dry_code = run_one("clean-messages", dry_run=True)
    err(f"\n$ difymaint run {' '.join(DEMO_JOBS)} --yes", err=True)
    real_code = run_chain(DEMO_JOBS, run_one, keep_going=True, say=lambda line: err(line, err=True))
    if dry_code or real_code:
        return max(dry_code, real_code)
    err(f"\n$ difymaint run {' '.join(DEMO_DISPATCHERS)}   # Dify's beat dispatchers, one tick", err=True)
    tick_code = run_chain(DEMO_DISPATCHERS, run_one, keep_going=True, say=lambda line: err(line, err=True))
    if tick_code:
        return tick_code
    dry_tables = jsonlib.loads(summaries["clean-messages --dry-run"][0]).get("tables")
    real_tables = jsonlib.loads(summaries["clean-messages"][0]).get("tables")
    if dry_tables != real_tables:
        typer.echo("difymaint: error: the dry run's counts differ from the real run's", err=True)
        return 1
    err("\nThe dry run predicted every table's count exactly.", err=True)

    consoles = make_consoles()
    ctx = Context(load_settings(None, overrides))
    try:
        store = HistoryStore(ctx.engine)
        err("\n$ difymaint status", err=True)
        render_status(consoles, store, JOBS, ctx, datetime.now(UTC), json=json)
        err("\n$ difymaint history", err=True)
        render_history(consoles, store, None, None, 20, json)
    finally:
        ctx.close()
    err(
        f"\nOrphaned upload files: {manifest}. Inspect the database: sqlite3 {path} 'select count(*) from messages'",
        err=True,
    )
    err(f"Try: difymaint history show RUN_ID --database-url sqlite:///{path}", err=True)
    return 0
