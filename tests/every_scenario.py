"""One SQLite file holding every job's scenario (messages, workflow runs, datasets, embeddings, tokens), for
the tests that run every command against the same data and check what it touched."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from difymaint.dify.tables import metadata
from tests.conftest import NOW
from tests.dataset_scenario import seed_notify, seed_unused
from tests.scenario import seed
from tests.test_clean_embeddings import seed as seed_embeddings
from tests.test_clean_oauth_tokens import seed as seed_tokens
from tests.workflow_scenario import seed as seed_workflows


def seed_every_scenario(path: Path) -> Path:
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    now = NOW.replace(tzinfo=None)
    seed(engine, now)
    seed_workflows(engine, now)
    seed_unused(engine, now)
    seed_notify(engine, now - timedelta(days=1))
    seed_embeddings(engine, now)
    seed_tokens(engine, now)
    engine.dispose()
    return path


def snapshot(url: str) -> dict[str, list[Any]]:
    """Every row of every table, to compare before and after a run that must change nothing."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = {table.name: sorted(map(repr, conn.execute(sa.select(table)).all())) for table in metadata.sorted_tables}
    engine.dispose()
    return rows
