"""Row builders for Dify's tables: the demo seeds with them, and so do the tests.

Every builder inserts real-shaped rows (all NOT NULL columns filled) and returns the new id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.dify import tables as t
from difymaint.dify.cascades import MESSAGE_CHILDREN


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Builder:
    conn: Connection
    now: datetime
    counts: dict[str, int] = field(default_factory=dict)

    def _insert(self, table: sa.Table, **values: Any) -> str:
        values.setdefault("id", new_id())
        self.conn.execute(sa.insert(table).values(**values))
        self.counts[table.name] = self.counts.get(table.name, 0) + 1
        return str(values["id"])

    def insert(self, table: sa.Table, **values: Any) -> str:
        """Any other row (the demo's cache tables); counted like the rest."""
        return self._insert(table, **values)

    def tenant(self, name: str = "workspace", **extra: Any) -> str:
        return self._insert(t.tenants, name=name, created_at=self.now, updated_at=self.now, **extra)

    def account(self, email: str, name: str = "Owner") -> str:
        return self._insert(t.accounts, name=name, email=email, created_at=self.now, updated_at=self.now)

    def member(self, tenant_id: str, account_id: str, role: str = "owner") -> str:
        return self._insert(
            t.tenant_account_joins,
            tenant_id=tenant_id,
            account_id=account_id,
            role=role,
            created_at=self.now,
            updated_at=self.now,
        )

    def app(self, tenant_id: str, name: str = "app", mode: str = "chat", app_id: str | None = None) -> str:
        return self._insert(
            t.apps,
            id=app_id or new_id(),
            tenant_id=tenant_id,
            name=name,
            mode=mode,
            enable_site=True,
            enable_api=True,
            created_at=self.now,
            updated_at=self.now,
        )

    def conversation(self, app_id: str, created_at: datetime, updated_at: datetime | None = None) -> str:
        return self._insert(
            t.conversations,
            app_id=app_id,
            mode="chat",
            name="conversation",
            inputs={},
            status="normal",
            from_source="api",
            created_at=created_at,
            updated_at=updated_at or created_at,
        )

    def upload_file(self, tenant_id: str, created_at: datetime) -> str:
        file_id = new_id()
        return self._insert(
            t.upload_files,
            id=file_id,
            tenant_id=tenant_id,
            storage_type="opendal",
            key=f"upload_files/{tenant_id}/{file_id}.png",
            name="picture.png",
            size=2048,
            extension="png",
            mime_type="image/png",
            created_by=new_id(),
            created_at=created_at,
        )

    def message(
        self,
        app_id: str,
        conversation_id: str,
        created_at: datetime,
        *,
        children: bool = True,
        upload_file_id: str | None = None,
        message_id: str | None = None,
        workflow_run_id: str | None = None,
    ) -> str:
        """A message with one row in each of its eight child tables (when ``children``)."""
        mid = self._insert(
            t.messages,
            id=message_id or new_id(),
            app_id=app_id,
            conversation_id=conversation_id,
            inputs={},
            query="What is retention?",
            message=[{"role": "user", "text": "What is retention?"}],
            answer="Deleting what is no longer needed.",
            message_unit_price=0.001,
            answer_unit_price=0.002,
            currency="USD",
            from_source="api",
            workflow_run_id=workflow_run_id,
            created_at=created_at,
            updated_at=created_at,
        )
        if children:
            self.message_children(mid, app_id, conversation_id, created_at, upload_file_id=upload_file_id)
        return mid

    def message_children(
        self,
        message_id: str,
        app_id: str,
        conversation_id: str,
        created_at: datetime,
        *,
        upload_file_id: str | None = None,
    ) -> None:
        someone = new_id()
        common = {"message_id": message_id, "created_at": created_at}
        rows: dict[str, dict[str, Any]] = {
            "message_feedbacks": {
                "app_id": app_id,
                "conversation_id": conversation_id,
                "rating": "like",
                "from_source": "user",
                "updated_at": created_at,
            },
            "message_annotations": {
                "app_id": app_id,
                "conversation_id": conversation_id,
                "question": "q",
                "content": "a",
                "account_id": someone,
                "updated_at": created_at,
            },
            "message_chains": {"type": "system"},
            "message_agent_thoughts": {"position": 1, "created_by_role": "account", "created_by": someone},
            "message_files": {
                "type": "image",
                "transfer_method": "local_file" if upload_file_id else "remote_url",
                "url": None if upload_file_id else "https://example.invalid/cat.png",
                "upload_file_id": upload_file_id,
                "created_by_role": "end_user",
                "created_by": someone,
            },
            "saved_messages": {"app_id": app_id, "created_by": someone},
            "app_annotation_hit_histories": {
                "app_id": app_id,
                "annotation_id": new_id(),
                "source": "api",
                "question": "q",
                "account_id": someone,
                "annotation_question": "q",
                "annotation_content": "a",
            },
            "dataset_retriever_resources": {
                "position": 1,
                "dataset_id": new_id(),
                "dataset_name": "docs",
                "document_name": "guide.md",
                "content": "chunk",
                "retriever_from": "api",
                "created_by": someone,
            },
        }
        for child in MESSAGE_CHILDREN:
            self._insert(child, **common, **rows[child.name])

    def pin(self, app_id: str, conversation_id: str) -> str:
        return self._insert(
            t.pinned_conversations,
            app_id=app_id,
            conversation_id=conversation_id,
            created_by=new_id(),
            created_at=self.now,
        )

    def conversation_variable(self, app_id: str, conversation_id: str) -> str:
        return self._insert(
            t.workflow_conversation_variables,
            id=new_id(),
            conversation_id=conversation_id,
            app_id=app_id,
            data="{}",
            created_at=self.now,
            updated_at=self.now,
        )

    # --- workflow runs and their per-run rows (docs/dify-reference.md#tables)
    # ---------------------------------------------

    def workflow_run(
        self,
        tenant_id: str,
        app_id: str,
        workflow_id: str,
        created_at: datetime,
        *,
        status: str = "succeeded",
        run_type: str = "workflow",
        triggered_from: str = "app-run",
    ) -> str:
        """A run with the large text columns filled (the jobs must never need to read them)."""
        return self._insert(
            t.workflow_runs,
            tenant_id=tenant_id,
            app_id=app_id,
            workflow_id=workflow_id,
            type=run_type,
            triggered_from=triggered_from,
            version="2026-01-01 00:00:00",
            graph='{"nodes": [], "edges": []}' * 50,
            inputs='{"query": "hello"}',
            outputs='{"answer": "world"}',
            status=status,
            elapsed_time=1.5,
            total_tokens=42,
            created_by_role="account",
            created_by=new_id(),
            created_at=created_at,
            finished_at=None if status in ("running", "paused", "scheduled") else created_at,
        )

    def node_execution(
        self,
        tenant_id: str,
        app_id: str,
        workflow_id: str,
        workflow_run_id: str | None,
        created_at: datetime,
        *,
        index: int = 1,
        status: str = "succeeded",
    ) -> str:
        """A node execution; ``workflow_run_id=None`` is a single-step debug run (never a cleanup target)."""
        return self._insert(
            t.workflow_node_executions,
            tenant_id=tenant_id,
            app_id=app_id,
            workflow_id=workflow_id,
            triggered_from="workflow-run" if workflow_run_id else "single-step",
            workflow_run_id=workflow_run_id,
            index=index,
            node_execution_id=new_id(),
            node_id=f"node-{index}",
            node_type="llm",
            title=f"LLM {index}",
            inputs='{"prompt": "hi"}',
            outputs='{"text": "hello"}',
            status=status,
            created_by_role="account",
            created_by=new_id(),
            created_at=created_at,
        )

    def node_offload(
        self, tenant_id: str, app_id: str, node_execution_id: str | None, file_id: str, *, kind: str = "outputs"
    ) -> str:
        return self._insert(
            t.workflow_node_execution_offload,
            tenant_id=tenant_id,
            app_id=app_id,
            node_execution_id=node_execution_id,
            type=kind,
            file_id=file_id,
            created_at=self.now,
        )

    def workflow_app_log(
        self, tenant_id: str, app_id: str, workflow_id: str, workflow_run_id: str, created_at: datetime
    ) -> str:
        return self._insert(
            t.workflow_app_logs,
            tenant_id=tenant_id,
            app_id=app_id,
            workflow_id=workflow_id,
            workflow_run_id=workflow_run_id,
            created_from="service-api",
            created_by_role="end_user",
            created_by=new_id(),
            created_at=created_at,
        )

    def workflow_pause(
        self, workflow_id: str, workflow_run_id: str, created_at: datetime, *, resumed: bool = True, reasons: int = 1
    ) -> str:
        """A pause (at most one per run) with ``reasons`` pause-reason rows; returns the pause id."""
        pause_id = self._insert(
            t.workflow_pauses,
            workflow_id=workflow_id,
            workflow_run_id=workflow_run_id,
            resumed_at=created_at if resumed else None,
            state_object_key=f"workflow-state-{new_id()}.json",
            created_at=created_at,
            updated_at=created_at,
        )
        for i in range(reasons):
            self._insert(
                t.workflow_pause_reasons,
                pause_id=pause_id,
                type_="human_input_required",
                form_id=new_id(),
                node_id=f"human-{i}",
                message="",
                created_at=created_at,
                updated_at=created_at,
            )
        return pause_id

    def workflow_trigger_log(
        self, tenant_id: str, app_id: str, workflow_id: str, workflow_run_id: str | None, created_at: datetime
    ) -> str:
        return self._insert(
            t.workflow_trigger_logs,
            tenant_id=tenant_id,
            app_id=app_id,
            workflow_id=workflow_id,
            workflow_run_id=workflow_run_id,
            trigger_metadata="{}",
            trigger_type="trigger-webhook",
            trigger_data="{}",
            inputs="{}",
            status="succeeded",
            queue_name="workflow_professional",
            retry_count=0,
            created_by_role="end_user",
            created_by="webhook",  # varchar in Dify, not a uuid
            created_at=created_at,
        )
