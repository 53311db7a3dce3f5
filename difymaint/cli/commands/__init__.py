"""CLI command modules, one per job. They import only typer and the shared options at import time;
the job module (SQLAlchemy, Redis, httpx) is imported when the command runs."""

from __future__ import annotations

import typer

from difymaint.cli.commands import (
    archive_workflow_runs,
    clean_embeddings,
    clean_messages,
    clean_oauth_tokens,
    clean_unused_datasets,
    clean_workflow_logs,
    clean_workflow_runs,
    demo,
    notify_cleaned_documents,
    restore_workflow_runs,
)


def register_all(app: typer.Typer) -> None:
    for module in (
        clean_messages,
        clean_workflow_runs,
        clean_workflow_logs,
        clean_unused_datasets,
        notify_cleaned_documents,
        clean_embeddings,
        clean_oauth_tokens,
        archive_workflow_runs,
        restore_workflow_runs,
        demo,
    ):
        module.register(app)
