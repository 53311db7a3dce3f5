"""A Dify installation's files for the sweep-files and storage-report tests: upload_files / tool_files rows in a
real PostgreSQL and their objects in a real directory (OpenDAL fs) or a real S3 server, with chosen ages, plus
the rows that refer to them. Ages are relative to ``now``, the clock the job is given."""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.dify import tables as t
from tests.s3_server import S3Bucket


@dataclass
class File:
    id: str
    key: str
    size: int
    kind: str  # upload | tool


@dataclass
class FilesWorld:
    engine: Engine
    now: datetime  # naive UTC
    root: Path | None = None  # fs storage
    bucket: S3Bucket | None = None  # S3 storage
    tenant: str = field(default_factory=t.new_id)
    account: str = field(default_factory=t.new_id)

    # --- storage ----------------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        if self.bucket is not None:
            return self.bucket.dify_storage_settings()
        return {"STORAGE_TYPE": "opendal", "OPENDAL_SCHEME": "fs", "OPENDAL_FS_ROOT": str(self.root)}

    def put(self, key: str, size: int, age_h: float = 48) -> None:
        data = os.urandom(size)
        if self.bucket is not None:
            self.bucket.put(key, data)  # S3 sets the time itself: "now" of the server (see the S3 test's clock)
            return
        assert self.root is not None
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        moment = (self.now - timedelta(hours=age_h)).replace(tzinfo=None)
        stamp = (moment - datetime(1970, 1, 1)).total_seconds()
        os.utime(path, (stamp, stamp))

    def stored(self) -> set[str]:
        if self.bucket is not None:
            return self.bucket.stored_keys()
        assert self.root is not None
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()}

    # --- file rows -------------------------------------------------------------------------------------------

    def upload(
        self,
        *,
        age_h: float = 48,
        size: int = 1000,
        object_age_h: float | None = None,
        with_object: bool = True,
        prefix: str = "upload_files",
        role: str = "account",
        used_age_h: float | None = None,
        name: str = "file.png",
    ) -> File:
        file_id = t.new_id()
        key = f"{prefix}/{self.tenant}/{uuid.uuid4()}.png"
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(t.upload_files).values(
                    id=file_id,
                    tenant_id=self.tenant,
                    storage_type="opendal",
                    key=key,
                    name=name,
                    size=12345,  # never the bytes a sweep counts
                    extension="png",
                    mime_type="image/png",
                    created_by=self.account,
                    created_by_role=role,
                    created_at=self.now - timedelta(hours=age_h),
                    used=used_age_h is not None,
                    used_at=None if used_age_h is None else self.now - timedelta(hours=used_age_h),
                )
            )
        if with_object:
            self.put(key, size, age_h if object_age_h is None else object_age_h)
        return File(file_id, key, size, "upload")

    def tool(self, *, object_age_h: float = 48, size: int = 700, with_object: bool = True) -> File:
        file_id = t.new_id()
        key = f"tools/{self.tenant}/{uuid.uuid4().hex}.png"
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(t.tool_files).values(
                    id=file_id, user_id=self.account, tenant_id=self.tenant, file_key=key, mimetype="image/png"
                )
            )
        if with_object:
            self.put(key, size, object_age_h)
        return File(file_id, key, size, "tool")

    def rows(self, table: sa.Table) -> set[str]:
        with self.engine.connect() as conn:
            return {str(v) for v in conn.execute(sa.select(table.c.id)).scalars()}

    # --- referrers -------------------------------------------------------------------------------------------

    def insert(self, table: sa.Table, **values: Any) -> str:
        values.setdefault("id", t.new_id())
        with self.engine.begin() as conn:
            conn.execute(sa.insert(table).values(**values))
        return str(values["id"])

    def app(self, **values: Any) -> str:
        return self.insert(
            t.apps, tenant_id=self.tenant, name="app", mode="chat", enable_site=True, enable_api=True, **values
        )

    def message(self, *, age_h: float = 1, **values: Any) -> str:
        app_id = self.app()
        conversation = self.insert(
            t.conversations,
            app_id=app_id,
            mode="chat",
            name="c",
            inputs=values.pop("conversation_inputs", {}),
            status="normal",
            from_source="api",
            created_at=self.now - timedelta(hours=age_h),
            updated_at=self.now - timedelta(hours=age_h),
            **{k: values.pop(k) for k in ("introduction", "system_instruction") if k in values},
        )
        base: dict[str, Any] = {
            "app_id": app_id,
            "conversation_id": conversation,
            "inputs": {},
            "query": "q",
            "message": [],
            "answer": "",
            "message_unit_price": 0,
            "answer_unit_price": 0,
            "currency": "USD",
            "from_source": "api",
            "created_at": self.now - timedelta(hours=age_h),
        }
        return self.insert(t.messages, **(base | values))

    def message_file(self, *, upload_file_id: str | None = None, url: str | None = None, age_h: float = 1) -> str:
        message = self.message(age_h=age_h)
        return self.insert(
            t.message_files,
            message_id=message,
            type="image",
            transfer_method="tool_file" if url else "local_file",
            url=url,
            upload_file_id=upload_file_id,
            created_by_role="account",
            created_by=self.account,
            created_at=self.now - timedelta(hours=age_h),
        )

    def run_row(self, **values: Any) -> str:
        base: dict[str, Any] = {
            "tenant_id": self.tenant,
            "app_id": t.new_id(),
            "workflow_id": t.new_id(),
            "type": "workflow",
            "triggered_from": "app-run",
            "version": "1",
            "graph": "{}",
            "inputs": "{}",
            "outputs": "{}",
            "status": "succeeded",
            "created_by_role": "account",
            "created_by": self.account,
        }
        return self.insert(t.workflow_runs, **(base | values))

    def node_execution(self, **values: Any) -> str:
        base: dict[str, Any] = {
            "tenant_id": self.tenant,
            "app_id": t.new_id(),
            "workflow_id": t.new_id(),
            "triggered_from": "workflow-run",
            "workflow_run_id": t.new_id(),
            "index": 1,
            "node_id": "n",
            "node_type": "llm",
            "title": "n",
            "status": "succeeded",
            "created_by_role": "account",
            "created_by": self.account,
        }
        return self.insert(t.workflow_node_executions, **(base | values))

    def dataset_rows(self) -> tuple[str, str]:
        dataset = self.insert(t.datasets, tenant_id=self.tenant, name="kb", created_by=self.account)
        document = self.insert(
            t.documents,
            tenant_id=self.tenant,
            dataset_id=dataset,
            position=1,
            data_source_type="upload_file",
            batch="b",
            name="d",
            created_from="web",
            created_by=self.account,
        )
        return dataset, document

    def segment(self, content: str) -> str:
        dataset, document = self.dataset_rows()
        return self.insert(
            t.document_segments,
            tenant_id=self.tenant,
            dataset_id=dataset,
            document_id=document,
            position=1,
            content=content,
            word_count=1,
            tokens=1,
            hit_count=0,
            created_by=self.account,
        )


def file_ref(record_id: str, storage_key: str | None = None) -> str:
    """Dify's canonical reference: ``dify-file-ref:`` + base64url(compact JSON), padding kept."""
    payload: dict[str, str] = {"record_id": record_id}
    if storage_key:
        payload["storage_key"] = storage_key
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return "dify-file-ref:" + base64.urlsafe_b64encode(raw).decode()


def file_mapping(**ids: str) -> dict[str, Any]:
    """A File mapping as Dify stores it in inputs/outputs (legacy keys or ``reference``)."""
    return {"dify_model_identity": "__dify__file__", "type": "image", "transfer_method": "local_file", **ids}
