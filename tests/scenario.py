"""A Dify database covering the clean-messages matrix, shared by the PostgreSQL and SQLite tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.clock import naive_utc
from difymaint.demo.builders import Builder, new_id
from difymaint.dify import tables as t
from difymaint.dify.cascades import MESSAGE_CHILDREN

# name → (plan, expiration days ago or None for never paid, whitelisted, eligible when billing is on)
TENANTS = {
    "sandbox_never_paid": ("sandbox", None, False, True),
    "sandbox_expired_long_ago": ("sandbox", 60, False, True),
    "sandbox_in_grace": ("sandbox", 5, False, False),
    "sandbox_whitelisted": ("sandbox", None, True, False),
    "professional": ("professional", None, False, False),
    "team_expired": ("team", 90, False, False),
    "unknown_to_billing": (None, None, False, False),
}


class BillingMatrix:
    """The billing answers for the TENANTS matrix (the message and the workflow-run scenarios share it)."""

    now: datetime
    tenant_ids: dict[str, str]

    @property
    def cutoff(self) -> datetime:
        return self.now - timedelta(days=30)

    def plans(self) -> dict[str, dict[str, object]]:
        result = {}
        for name, (plan, days_ago, _, _) in TENANTS.items():
            if plan is None:
                continue
            expiration = -1 if days_ago is None else int((self.now - timedelta(days=days_ago)).timestamp())
            result[self.tenant_ids[name]] = {"plan": plan, "expiration_date": expiration}
        return result

    def whitelist(self) -> list[str]:
        return [self.tenant_ids[name] for name, spec in TENANTS.items() if spec[2]]


@dataclass
class Scenario(BillingMatrix):
    now: datetime
    tenant_ids: dict[str, str] = field(default_factory=dict)
    app_ids: dict[str, str] = field(default_factory=dict)
    old: dict[str, list[str]] = field(default_factory=dict)  # tenant name → messages before the cut-off
    new: dict[str, list[str]] = field(default_factory=dict)  # at or after the cut-off
    ghost_old: list[str] = field(default_factory=list)  # old messages of a deleted app
    conversations: dict[str, str] = field(default_factory=dict)

    def eligible_old(self) -> set[str]:
        return {mid for name, spec in TENANTS.items() if spec[3] for mid in self.old[name]}

    def all_old(self) -> set[str]:
        return {mid for ids in self.old.values() for mid in ids} | set(self.ghost_old)


def seed(engine: Engine, now: datetime, *, per_tenant: int = 4) -> Scenario:
    now = naive_utc(now)
    scenario = Scenario(now=now)
    cutoff = scenario.cutoff
    with engine.begin() as conn:
        build = Builder(conn, now)
        for name in TENANTS:
            tenant = build.tenant(name)
            app = build.app(tenant, name=f"{name} app")
            scenario.tenant_ids[name], scenario.app_ids[name] = tenant, app
            old_conv = build.conversation(app, cutoff - timedelta(days=20), updated_at=cutoff - timedelta(days=2))
            mixed_conv = build.conversation(app, cutoff - timedelta(days=5), updated_at=now - timedelta(days=1))
            scenario.conversations[name] = old_conv
            build.pin(app, old_conv)
            build.conversation_variable(app, old_conv)
            same_moment = cutoff - timedelta(days=3)
            old = []
            for i in range(per_tenant):
                # two share one timestamp, to exercise the id tie-break of the cursor
                created = same_moment if i < 2 else cutoff - timedelta(days=10 + i, seconds=i)
                conv = old_conv if i % 2 == 0 else mixed_conv
                upload = build.upload_file(tenant, created) if i == 0 else None
                old.append(build.message(app, conv, created, upload_file_id=upload))
            old.append(build.message(app, mixed_conv, cutoff - timedelta(microseconds=1)))  # just before
            scenario.old[name] = old
            scenario.new[name] = [
                build.message(app, mixed_conv, cutoff),  # exactly at the cut-off: kept
                build.message(app, mixed_conv, now - timedelta(days=1)),
            ]
        ghost_app = new_id()
        ghost_conv = build.conversation(ghost_app, cutoff - timedelta(days=50))
        scenario.ghost_old = [build.message(ghost_app, ghost_conv, cutoff - timedelta(days=40 + i)) for i in range(3)]
    return scenario


def remaining_messages(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(row[0]) for row in conn.execute(sa.select(t.messages.c.id))}


def child_rows_by_message(engine: Engine) -> dict[str, int]:
    """message_id → number of child rows across the eight child tables."""
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for child in MESSAGE_CHILDREN:
            for row in conn.execute(sa.select(child.c.message_id, sa.func.count()).group_by(child.c.message_id)):
                counts[str(row[0])] = counts.get(str(row[0]), 0) + int(row[1])
    return counts


def assert_cascade_consistent(engine: Engine) -> None:
    """No child row without its message, and every remaining message still has all 8 children."""
    remaining = remaining_messages(engine)
    children = child_rows_by_message(engine)
    orphans = set(children) - remaining
    assert not orphans, f"{len(orphans)} messages deleted but their children kept"
    incomplete = {mid for mid in remaining if children.get(mid) != len(MESSAGE_CHILDREN)}
    assert not incomplete, f"{len(incomplete)} remaining messages lost child rows"
