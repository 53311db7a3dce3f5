"""Knowledge-base fixtures shared by the clean-unused-datasets and notify-cleaned-documents tests: the candidate
matrix of docs/jobs/clean-unused-datasets.md#selection and the pending logs of docs/jobs/notify-cleaned-documents.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from difymaint.core.clock import naive_utc
from difymaint.dify import tables as t


def new_id() -> str:
    return t.new_id()


@dataclass
class KB:
    """Inserts knowledge-base rows with every NOT NULL column filled."""

    conn: Connection
    now: datetime
    positions: dict[str, int] = field(default_factory=dict)

    def ago(self, days: float) -> datetime:
        return self.now - timedelta(days=days)

    def tenant(self, name: str, tenant_id: str | None = None) -> str:
        tid = tenant_id or new_id()
        self.conn.execute(sa.insert(t.tenants).values(id=tid, name=name, created_at=self.now, updated_at=self.now))
        return tid

    def owner(self, tenant_id: str, email: str, role: str = "owner") -> str:
        account = new_id()
        self.conn.execute(
            sa.insert(t.accounts).values(
                id=account, name=email.split("@", maxsplit=1)[0], email=email, created_at=self.now
            )
        )
        self.conn.execute(
            sa.insert(t.tenant_account_joins).values(
                id=new_id(), tenant_id=tenant_id, account_id=account, role=role, created_at=self.now
            )
        )
        return account

    def dataset(
        self,
        tenant_id: str,
        name: str,
        created_days_ago: float,
        *,
        technique: str | None = "high_quality",
        chunk_structure: str | None = None,
        created_at: datetime | None = None,
    ) -> str:
        did = new_id()
        self.conn.execute(
            sa.insert(t.datasets).values(
                id=did,
                tenant_id=tenant_id,
                name=name,
                indexing_technique=technique,
                chunk_structure=chunk_structure,
                created_by=new_id(),
                created_at=created_at or self.ago(created_days_ago),
                updated_at=created_at or self.ago(created_days_ago),
            )
        )
        return did

    def document(
        self,
        tenant_id: str,
        dataset_id: str,
        updated_days_ago: float,
        *,
        status: str = "completed",
        enabled: bool = True,
        archived: bool = False,
        doc_form: str = "text_model",
        updated_at: datetime | None = None,
        segments: int = 0,
    ) -> str:
        doc_id = new_id()
        position = self.positions.get(dataset_id, 0) + 1
        self.positions[dataset_id] = position
        moment = updated_at or self.ago(updated_days_ago)
        self.conn.execute(
            sa.insert(t.documents).values(
                id=doc_id,
                tenant_id=tenant_id,
                dataset_id=dataset_id,
                position=position,
                data_source_type="upload_file",
                batch="batch-1",
                name=f"doc-{position}.pdf",
                created_from="web",
                created_by=new_id(),
                created_at=moment - timedelta(days=1),
                updated_at=moment,
                indexing_status=status,
                enabled=enabled,
                archived=archived,
                doc_form=doc_form,
            )
        )
        for i in range(segments):
            self.conn.execute(
                sa.insert(t.document_segments).values(
                    id=new_id(),
                    tenant_id=tenant_id,
                    dataset_id=dataset_id,
                    document_id=doc_id,
                    position=i,
                    content="chunk",
                    word_count=1,
                    tokens=1,
                    hit_count=0,
                    index_node_id=new_id(),
                    status="completed",
                    created_by=new_id(),
                    created_at=moment,
                    updated_at=moment,
                )
            )
        return doc_id

    def query(self, dataset_id: str, days_ago: float) -> None:
        self.conn.execute(
            sa.insert(t.dataset_queries).values(
                id=new_id(),
                dataset_id=dataset_id,
                content="what is retention?",
                source="app",
                created_by_role="account",
                created_by=new_id(),
                created_at=self.ago(days_ago),
            )
        )

    def keyword_table(self, dataset_id: str, source: str = "database") -> None:
        self.conn.execute(
            sa.insert(t.dataset_keyword_tables).values(
                id=new_id(), dataset_id=dataset_id, keyword_table='{"k": []}', data_source_type=source
            )
        )

    def log(self, tenant_id: str, dataset_id: str, *, notified: bool = False, days_ago: float = 1) -> str:
        log_id = new_id()
        self.conn.execute(
            sa.insert(t.dataset_auto_disable_logs).values(
                id=log_id,
                tenant_id=tenant_id,
                dataset_id=dataset_id,
                document_id=new_id(),
                notified=notified,
                created_at=self.ago(days_ago),
            )
        )
        return log_id


@dataclass
class UnusedScenario:
    """The candidate matrix. Pass 1 (all): 30 days; pass 2 (sandbox): 7 days."""

    now: datetime
    tenants: dict[str, str] = field(default_factory=dict)
    datasets: dict[str, str] = field(default_factory=dict)
    # pass-1 datasets → documents expected in the logs (enabled, not archived)
    logged_docs: dict[str, set[str]] = field(default_factory=dict)

    def plans(self) -> dict[str, dict[str, Any]]:
        return {
            self.tenants["sandbox"]: {"plan": "sandbox", "expiration_date": -1},
            self.tenants["paid"]: {"plan": "professional", "expiration_date": -1},
            # "unknown" is missing on purpose: the billing API does not know it
        }

    def ids(self, *names: str) -> set[str]:
        return {self.datasets[name] for name in names}


# name → expected with billing on / with billing off (pass 2 takes every workspace)
PASS_1 = {"paid_old_only", "sandbox_old_only", "tie_a", "tie_b", "tie_c"}
PASS_2_BILLING_ON = {"sandbox_week_old"}
# "at_cutoff" is old for the 7-day cut-off: with billing off its paid workspace counts as sandbox.
PASS_2_BILLING_OFF = {"sandbox_week_old", "paid_week_old", "unknown_week_old", "at_cutoff"}


def seed_unused(engine: Engine, now: datetime) -> UnusedScenario:
    now = naive_utc(now)
    sc = UnusedScenario(now=now)
    with engine.begin() as conn:
        kb = KB(conn, now)
        paid = sc.tenants["paid"] = kb.tenant("paid")
        sandbox = sc.tenants["sandbox"] = kb.tenant("sandbox")
        unknown = sc.tenants["unknown"] = kb.tenant("unknown to billing")
        ds = sc.datasets

        # Only old activity: cleaned by pass 1 whatever the plan; the archived and the disabled documents
        # get no log, but the archived one is disabled too (Dify disables every document of the dataset).
        ds["paid_old_only"] = d = kb.dataset(paid, "Handbook", 100)
        keep = {kb.document(paid, d, 60, segments=2), kb.document(paid, d, 45, status="indexing")}
        kb.document(paid, d, 60, archived=True)
        kb.document(paid, d, 60, enabled=False)
        kb.query(d, 50)
        kb.keyword_table(d)
        sc.logged_docs[d] = keep
        ds["sandbox_old_only"] = d = kb.dataset(sandbox, "Recipes", 90, technique="economy")
        sc.logged_docs[d] = {kb.document(sandbox, d, 40, doc_form="qa_model")}
        kb.keyword_table(d, source="file")

        # Three candidates created at the same moment: the keyset cursor's id tie-break.
        same = kb.ago(200)
        for name in ("tie_a", "tie_b", "tie_c"):
            ds[name] = d = kb.dataset(paid, name, 0, created_at=same, chunk_structure="hierarchical_model")
            sc.logged_docs[d] = {kb.document(paid, d, 120)}

        # Not candidates in either pass.
        ds["recent_query"] = d = kb.dataset(paid, "Queried", 100)
        kb.document(paid, d, 60)
        kb.query(d, 5)
        ds["recent_doc"] = d = kb.dataset(paid, "Edited", 100)
        kb.document(paid, d, 60)
        kb.document(paid, d, 3)
        ds["only_archived_or_disabled"] = d = kb.dataset(paid, "Archive", 100)
        kb.document(paid, d, 60, archived=True)
        kb.document(paid, d, 60, enabled=False)
        ds["not_completed"] = d = kb.dataset(paid, "Stuck", 100)
        kb.document(paid, d, 60, status="error")
        ds["empty"] = kb.dataset(paid, "Empty", 100)
        ds["recent_dataset"] = d = kb.dataset(paid, "New", 2)
        kb.document(paid, d, 1)
        # A document updated exactly at the 30-day cut-off is neither "new" nor "old" (Dify's < and >).
        ds["at_cutoff"] = d = kb.dataset(paid, "Boundary", 100)
        kb.document(paid, d, 0, updated_at=now - timedelta(days=30))

        # Unused for 7..30 days: only the sandbox pass takes them, and only for sandbox workspaces.
        for name, tenant in (("sandbox_week_old", sandbox), ("paid_week_old", paid), ("unknown_week_old", unknown)):
            ds[name] = d = kb.dataset(tenant, name, 20)
            kb.document(tenant, d, 15)
            kb.query(d, 10)
    return sc


def enabled_documents(engine: Engine) -> dict[str, int]:
    """dataset_id → number of enabled documents."""
    doc = t.documents
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(doc.c.dataset_id, sa.func.count()).where(doc.c.enabled == sa.true()).group_by(doc.c.dataset_id)
        )
        return {str(row[0]): int(row[1]) for row in rows}


def disabled_datasets(engine: Engine, before: dict[str, int]) -> set[str]:
    """Datasets that had enabled documents before and have none now."""
    after = enabled_documents(engine)
    return {dataset_id for dataset_id in before if dataset_id not in after}


def auto_disable_logs(engine: Engine) -> list[Any]:
    logs = t.dataset_auto_disable_logs
    with engine.connect() as conn:
        return list(conn.execute(sa.select(logs).order_by(logs.c.dataset_id, logs.c.document_id)))


# --- notify-cleaned-documents --------------------------------------------------------------------------------


def tid(n: int) -> str:
    """Tenant ids that sort in the order given, so "the second workspace" is well defined."""
    return f"00000000-0000-4000-8000-{n:012d}"


@dataclass
class NotifyScenario:
    now: datetime
    tenants: dict[str, str] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)  # tenant name → its unnotified log ids
    already_notified: list[str] = field(default_factory=list)

    def plans(self) -> dict[str, dict[str, Any]]:
        plans = {"paid_a": "professional", "paid_b": "team", "sandbox": "sandbox", "no_owner": "professional"}
        return {self.tenants[name]: {"plan": plan, "expiration_date": -1} for name, plan in plans.items()}

    def unnotified(self, *names: str) -> set[str]:
        return {log_id for name in names for log_id in self.logs[name]}


def seed_notify(engine: Engine, now: datetime) -> NotifyScenario:
    sc = NotifyScenario(now=naive_utc(now))
    with engine.begin() as conn:
        kb = KB(conn, sc.now)
        names = ["paid_a", "paid_b", "sandbox", "no_owner", "unknown"]
        for n, name in enumerate(names, start=1):
            sc.tenants[name] = kb.tenant(name, tenant_id=tid(n))
            sc.logs[name] = []
        ta, tb = sc.tenants["paid_a"], sc.tenants["paid_b"]
        kb.owner(ta, "a@example.com")
        kb.owner(ta, "member@example.com", role="normal")
        kb.owner(tb, "b@example.com")
        kb.owner(sc.tenants["sandbox"], "s@example.com")
        kb.owner(sc.tenants["no_owner"], "admin@example.com", role="admin")
        kb.owner(sc.tenants["unknown"], "u@example.com")

        handbook = kb.dataset(ta, "Handbook", 100)
        recipes = kb.dataset(ta, "Recipes & <Tips>", 100)
        gone = new_id()  # a dataset deleted since its documents were disabled
        sc.logs["paid_a"] += [kb.log(ta, handbook) for _ in range(3)]
        sc.logs["paid_a"] += [kb.log(ta, recipes)]
        sc.logs["paid_a"] += [kb.log(ta, gone) for _ in range(2)]
        sc.already_notified.append(kb.log(ta, handbook, notified=True, days_ago=100))
        sc.already_notified.append(kb.log(ta, handbook, notified=True, days_ago=10))
        sc.logs["paid_b"] += [kb.log(tb, kb.dataset(tb, "Contracts", 100))]
        ts = sc.tenants["sandbox"]
        sc.logs["sandbox"] += [kb.log(ts, kb.dataset(ts, "Notes", 100)) for _ in range(2)]
        tn = sc.tenants["no_owner"]
        sc.logs["no_owner"] += [kb.log(tn, kb.dataset(tn, "Orphan", 100))]
        tu = sc.tenants["unknown"]
        sc.logs["unknown"] += [kb.log(tu, kb.dataset(tu, "Mystery", 100))]
    return sc


def notified_ids(engine: Engine) -> set[str]:
    logs = t.dataset_auto_disable_logs
    with engine.connect() as conn:
        return {str(row[0]) for row in conn.execute(sa.select(logs.c.id).where(logs.c.notified == sa.true()))}
