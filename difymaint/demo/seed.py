"""Seed a realistic little Dify database for ``difymaint demo``.

Five workspaces cover the plan matrix (never-paid sandbox, lapsed sandbox past its grace period, sandbox
still inside its grace period, whitelisted sandbox, paying team), plus messages of a deleted app, messages
on both sides of the cut-off, and messages sharing one timestamp (the cursor's id tie-break).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from difymaint.demo.builders import Builder, new_id
from difymaint.dify import tables as t
from difymaint.dify.tables import metadata


@dataclass(frozen=True)
class DemoWorkspace:
    name: str
    plan: str
    expiration_days_ago: int | None  # None = never paid (-1)
    whitelisted: bool
    expected: str  # what clean-messages should do with its old messages


WORKSPACES = (
    DemoWorkspace("Acme (sandbox, never paid)", "sandbox", None, False, "cleaned"),
    DemoWorkspace("Lapsed Co (sandbox, plan ended 60 days ago)", "sandbox", 60, False, "cleaned"),
    DemoWorkspace("Fresh Downgrade (sandbox, ended 5 days ago: in grace)", "sandbox", 5, False, "kept"),
    DemoWorkspace("Partner (sandbox, whitelisted)", "sandbox", None, True, "kept"),
    DemoWorkspace("Bigcorp (team plan)", "team", None, False, "kept"),
)


def seed_demo(engine: Engine, plan_file: Path, now: datetime, *, messages_per_app: int = 60) -> dict[str, object]:
    """Create Dify's tables and seed them; write the matching plan file. Returns a short description."""
    metadata.create_all(engine)
    rng = random.Random(20261124)
    plans: dict[str, dict[str, int | str]] = {}
    whitelist: list[str] = []
    with engine.begin() as conn:
        build = Builder(conn, now)
        for workspace in WORKSPACES:
            tenant_id = build.tenant(workspace.name)
            expiration = -1
            if workspace.expiration_days_ago is not None:
                expiration = int((now - timedelta(days=workspace.expiration_days_ago)).timestamp())
            plans[tenant_id] = {"plan": workspace.plan, "expiration_date": expiration}
            if workspace.whitelisted:
                whitelist.append(tenant_id)
            for app_no in range(2):
                app_id = build.app(tenant_id, name=f"{workspace.name.split(' ')[0]} bot {app_no + 1}")
                _seed_app(build, rng, tenant_id, app_id, now, messages_per_app)
        # An app that was deleted but whose messages stay behind (common in real databases).
        first_tenant = next(iter(plans))
        _seed_app(build, rng, first_tenant, new_id(), now, 10, with_files=False)
        _seed_caches(build, now)
    plan_file.write_text(json.dumps({"tenants": plans, "whitelist": whitelist}, indent=2))
    return {"workspaces": len(WORKSPACES), "rows": dict(build.counts)}


def _seed_app(
    build: Builder,
    rng: random.Random,
    tenant_id: str,
    app_id: str,
    now: datetime,
    count: int,
    *,
    with_files: bool = True,
) -> None:
    shared_moment = now - timedelta(days=40, hours=3)
    started = now
    conversation = ""
    for index in range(count):
        if index % 6 == 0:  # a new conversation every few messages; some of them span the cut-off
            started = now - timedelta(days=rng.uniform(5, 90))
            conversation = build.conversation(app_id, started, updated_at=min(now, started + timedelta(days=8)))
            if index % 12 == 0:
                build.pin(app_id, conversation)
        created = shared_moment if index % 10 == 3 else min(now, started + timedelta(days=rng.uniform(0, 8)))
        upload = build.upload_file(tenant_id, created) if with_files and index % 7 == 0 else None
        build.message(app_id, conversation, created, upload_file_id=upload)


def _seed_caches(build: Builder, now: datetime) -> None:
    """Rows for the other jobs that run on SQLite: embedding cache entries (clean-embeddings, 30 days) and
    CLI OAuth tokens (clean-oauth-tokens, 30 days), on both sides of their cut-offs."""
    naive = now.replace(tzinfo=None)
    for index in range(40):
        build.insert(
            t.embeddings,
            hash=f"{index:064x}",
            embedding=b"\x80\x04]\x94.",  # a pickled empty list: the column's format, not real vectors
            created_at=naive - timedelta(days=10 + index * 2),  # 10 .. 88 days old: the older ones go
        )
    for index in range(12):
        expired = index % 2 == 0
        build.insert(
            t.oauth_access_tokens,
            subject_email=f"dev{index}@example.com",
            client_id="difyctl",
            device_label=f"laptop {index}",
            prefix=f"dfy{index:04d}",
            token_hash=f"{index:064x}",
            created_at=now - timedelta(days=120),
            expires_at=now - timedelta(days=45 if expired else -30),  # half expired 45 days ago, half still valid
        )
