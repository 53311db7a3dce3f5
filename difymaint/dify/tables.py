"""Dify's tables as SQLAlchemy Core metadata: real table, column and index names (dify-data-model.md).

The jobs query through these objects; the demo and the test fixtures create them with ``metadata.create_all``.
Only the columns the jobs and fixtures need are declared; a real Dify table has more, which does not matter
to a query. No ForeignKey objects: production has none on these tables (data model §1).
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

metadata = sa.MetaData()


class UUIDStr(TypeDecorator[str]):
    """Native ``uuid`` on PostgreSQL, CHAR(36) text elsewhere; always a str in Python."""

    impl = sa.String(36)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=False))
        return dialect.type_descriptor(sa.String(36))

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)


JSONB = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.text("CURRENT_TIMESTAMP")


def new_id() -> str:
    return str(uuid.uuid4())


def _id() -> sa.Column[str]:
    return sa.Column("id", UUIDStr(), primary_key=True, default=new_id)


def _ts(name: str, *, nullable: bool = False, default: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(), nullable=nullable, server_default=NOW if default else None)


def _uuid(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, UUIDStr(), nullable=nullable)


def _str(name: str, length: int = 255, *, nullable: bool = False, default: str | None = None) -> sa.Column[str]:
    return sa.Column(
        name,
        sa.String(length),
        nullable=nullable,
        server_default=sa.text(f"'{default}'") if default is not None else None,
    )


def _text(name: str, *, nullable: bool = True) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _bool(name: str, default: bool) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.true() if default else sa.false())


# --- workspace and identity -------------------------------------------------------------------------------

tenants = sa.Table(
    "tenants",
    metadata,
    _id(),
    _str("name"),
    _str("plan", default="basic"),  # legacy; never a plan source (data model §3)
    _str("status", default="normal"),
    _ts("created_at"),
    _ts("updated_at"),
)

accounts = sa.Table(
    "accounts",
    metadata,
    _id(),
    _str("name"),
    _str("email"),
    _str("status", 16, default="active"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("account_email_idx", "email"),
)

tenant_account_joins = sa.Table(
    "tenant_account_joins",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("account_id"),
    _str("role", 16, default="normal"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.UniqueConstraint("tenant_id", "account_id", name="unique_tenant_account_join"),
    sa.Index("tenant_account_join_account_id_idx", "account_id"),
    sa.Index("tenant_account_join_tenant_id_idx", "tenant_id"),
)

apps = sa.Table(
    "apps",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _str("name"),
    _str("mode"),
    _str("status", default="normal"),
    sa.Column("enable_site", sa.Boolean(), nullable=False),
    sa.Column("enable_api", sa.Boolean(), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("app_tenant_id_idx", "tenant_id"),
)

upload_files = sa.Table(
    "upload_files",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _str("storage_type"),
    _str("key"),
    _str("name"),
    sa.Column("size", sa.Integer(), nullable=False),
    _str("extension"),
    _str("mime_type", nullable=True),
    _uuid("created_by"),
    _str("created_by_role", default="account"),
    _ts("created_at"),
    _bool("used", False),
    _uuid("used_by", nullable=True),
    _ts("used_at", nullable=True, default=False),
    sa.Index("upload_file_tenant_idx", "tenant_id"),
)

# --- conversation and message family ----------------------------------------------------------------------

conversations = sa.Table(
    "conversations",
    metadata,
    _id(),
    _uuid("app_id"),
    _str("mode"),
    _str("name"),
    sa.Column("inputs", sa.JSON(), nullable=False),
    _str("status"),
    _str("from_source"),
    _uuid("from_end_user_id", nullable=True),
    _uuid("from_account_id", nullable=True),
    _bool("is_deleted", False),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("conversation_app_from_user_idx", "app_id", "from_source", "from_end_user_id"),
    sa.Index(
        "conversation_app_updated_at_idx",
        "app_id",
        sa.text("updated_at DESC"),
        postgresql_where=sa.text("is_deleted IS FALSE"),
        sqlite_where=sa.text("is_deleted = 0"),
    ),
)

messages = sa.Table(
    "messages",
    metadata,
    _id(),
    _uuid("app_id"),
    _uuid("conversation_id"),
    sa.Column("inputs", sa.JSON(), nullable=False),
    _text("query", nullable=False),
    sa.Column("message", sa.JSON(), nullable=False),
    _text("answer", nullable=False),
    sa.Column("message_unit_price", sa.Numeric(10, 4), nullable=False),
    sa.Column("answer_unit_price", sa.Numeric(10, 4), nullable=False),
    _str("currency"),
    _str("from_source"),
    _uuid("from_end_user_id", nullable=True),
    _uuid("from_account_id", nullable=True),
    _uuid("workflow_run_id", nullable=True),
    _str("status", default="normal"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("message_app_id_idx", "app_id", "created_at"),
    sa.Index("message_conversation_id_idx", "conversation_id"),
    # Leads with conversation_id: `workflow_run_id IN (...)` cannot seek on it (data model §10).
    sa.Index("message_workflow_run_id_idx", "conversation_id", "workflow_run_id"),
    sa.Index("message_created_at_id_idx", "created_at", "id"),
)

message_feedbacks = sa.Table(
    "message_feedbacks",
    metadata,
    _id(),
    _uuid("app_id"),
    _uuid("conversation_id"),
    _uuid("message_id"),
    _str("rating"),
    _text("content"),
    _str("from_source"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("message_feedback_app_idx", "app_id"),
    sa.Index("message_feedback_message_idx", "message_id", "from_source"),
)

message_annotations = sa.Table(
    "message_annotations",
    metadata,
    _id(),
    _uuid("app_id"),
    _uuid("conversation_id", nullable=True),
    _uuid("message_id", nullable=True),
    _text("question", nullable=False),
    _text("content", nullable=False),
    sa.Column("hit_count", sa.Integer(), nullable=False, server_default="0"),
    _uuid("account_id"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("message_annotation_app_idx", "app_id"),
    sa.Index("message_annotation_message_idx", "message_id"),
)

message_chains = sa.Table(
    "message_chains",
    metadata,
    _id(),
    _uuid("message_id"),
    _str("type"),
    _text("input"),
    _text("output"),
    _ts("created_at"),
    sa.Index("message_chain_message_id_idx", "message_id"),
)

message_agent_thoughts = sa.Table(
    "message_agent_thoughts",
    metadata,
    _id(),
    _uuid("message_id"),
    _uuid("message_chain_id", nullable=True),
    sa.Column("position", sa.Integer(), nullable=False),
    _text("thought"),
    sa.Column("tool_labels_str", sa.Text(), nullable=False, server_default=sa.text("'{}'")),
    sa.Column("tool_meta_str", sa.Text(), nullable=False, server_default=sa.text("'{}'")),
    _str("created_by_role"),
    _uuid("created_by"),
    _ts("created_at"),
    sa.Index("message_agent_thought_message_id_idx", "message_id"),
)

message_files = sa.Table(
    "message_files",
    metadata,
    _id(),
    _uuid("message_id"),
    _str("type"),
    _str("transfer_method"),
    _text("url"),
    _uuid("upload_file_id", nullable=True),
    _str("belongs_to", nullable=True),
    _str("created_by_role"),
    _uuid("created_by"),
    _ts("created_at"),
    sa.Index("message_file_message_idx", "message_id"),
    sa.Index("message_file_created_by_idx", "created_by"),
)

saved_messages = sa.Table(
    "saved_messages",
    metadata,
    _id(),
    _uuid("app_id"),
    _uuid("message_id"),
    _uuid("created_by"),
    _str("created_by_role", default="end_user"),
    _ts("created_at"),
    sa.Index("saved_message_message_idx", "app_id", "message_id", "created_by_role", "created_by"),
    sa.Index("saved_message_message_id_idx", "message_id"),
)

pinned_conversations = sa.Table(
    "pinned_conversations",
    metadata,
    _id(),
    _uuid("app_id"),
    _uuid("conversation_id"),
    _uuid("created_by"),
    _str("created_by_role", default="end_user"),
    _ts("created_at"),
    sa.Index("pinned_conversation_conversation_idx", "app_id", "conversation_id", "created_by_role", "created_by"),
)

app_annotation_hit_histories = sa.Table(
    "app_annotation_hit_histories",
    metadata,
    _id(),
    _uuid("app_id"),
    _uuid("annotation_id"),
    _text("source", nullable=False),
    _text("question", nullable=False),
    _uuid("account_id"),
    _uuid("message_id"),
    _text("annotation_question", nullable=False),
    _text("annotation_content", nullable=False),
    sa.Column("score", sa.Float(), nullable=False, server_default="0"),
    _ts("created_at"),
    sa.Index("app_annotation_hit_histories_app_idx", "app_id"),
    sa.Index("app_annotation_hit_histories_message_idx", "message_id"),
    sa.Index("app_annotation_hit_histories_annotation_idx", "annotation_id"),
)

dataset_retriever_resources = sa.Table(
    "dataset_retriever_resources",
    metadata,
    _id(),
    _uuid("message_id"),
    sa.Column("position", sa.Integer(), nullable=False),
    _uuid("dataset_id"),
    _text("dataset_name", nullable=False),
    _uuid("document_id", nullable=True),
    _text("document_name", nullable=False),
    _text("content", nullable=False),
    _text("retriever_from", nullable=False),
    _uuid("created_by"),
    _ts("created_at"),
    sa.Index("dataset_retriever_resource_message_id_idx", "message_id"),
)

workflow_conversation_variables = sa.Table(
    "workflow_conversation_variables",
    metadata,
    sa.Column("id", UUIDStr(), primary_key=True),
    sa.Column("conversation_id", UUIDStr(), primary_key=True),
    _uuid("app_id"),
    _text("data", nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("workflow_conversation_variables_app_id_idx", "app_id"),
    sa.Index("workflow_conversation_variables_conversation_id_idx", "conversation_id"),
    sa.Index("workflow_conversation_variables_created_at_idx", "created_at"),
)
