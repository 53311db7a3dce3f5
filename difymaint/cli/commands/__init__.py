"""CLI command modules, one per job. They import only typer and the shared options at import time;
the job module (SQLAlchemy, Redis, httpx) is imported when the command runs."""

from __future__ import annotations

import typer

from difymaint.cli.commands import clean_messages, demo


def register_all(app: typer.Typer) -> None:
    for module in (clean_messages, demo):
        module.register(app)
