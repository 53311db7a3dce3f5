"""Dify's tables as SQLAlchemy Core metadata: real table, column and index names (docs/dify-reference.md#tables).

The jobs query through these objects; the demo and the test fixtures create them with ``metadata.create_all``.
Only the columns the jobs and fixtures need are declared; a real Dify table has more, which does not matter
to a query. No ForeignKey objects: production has none on these tables (docs/dify-reference.md#tables).

The types are dialect-aware the way Dify's own are (docs/mysql.md#schema): on MySQL/MariaDB a uuid is
``CHAR(36)``, text ``LONGTEXT``, binary ``LONGBLOB``, a timestamp ``DATETIME`` (whole seconds), a boolean
``TINYINT(1)``, and a partial index a plain one; so ``metadata.create_all`` builds Dify's MySQL schema too.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

metadata = sa.MetaData()


class UUIDStr(TypeDecorator[str]):
    """Native ``uuid`` on PostgreSQL, ``CHAR(36)`` on MySQL (Dify's StringUUID), text elsewhere; always a str."""

    impl = sa.String(36)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=False))
        if dialect.name == "mysql":
            return dialect.type_descriptor(sa.CHAR(36))
        return dialect.type_descriptor(sa.String(36))

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)


JSONB = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# Dify's LongText / BinaryData: MySQL's TEXT and BLOB stop at 64 KB.
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql")
LONG_BINARY = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql")
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
    return sa.Column(name, LONG_TEXT, nullable=nullable)


def _bool(name: str, default: bool) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.true() if default else sa.false())


# --- workspace and identity -------------------------------------------------------------------------------

tenants = sa.Table(
    "tenants",
    metadata,
    _id(),
    _str("name"),
    _str("plan", default="basic"),  # legacy; never a plan source (docs/dify-reference.md#plan-rule)
    _str("status", default="normal"),
    _ts("created_at"),
    _ts("updated_at"),
    _text("custom_config"),  # JSON text; replace_webapp_logo = an upload file id (docs/jobs/sweep-files.md)
)

accounts = sa.Table(
    "accounts",
    metadata,
    _id(),
    _str("name"),
    _str("email"),
    _str("status", 16, default="active"),
    _str("avatar", nullable=True),  # an upload file id, or an http(s) URL
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
    _str("icon_type", nullable=True),  # image | emoji
    _str("icon", nullable=True),  # an upload file id when icon_type = 'image'
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
    _text("introduction"),
    _text("system_instruction"),
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
    _text("message_metadata"),
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
    # Leads with conversation_id: `workflow_run_id IN (...)` cannot seek on it (docs/dify-reference.md#indexes).
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
    _text("tool_input"),
    _text("observation"),
    # A parenthesised default: MySQL 8 takes a default on a TEXT column only as an expression.
    sa.Column("tool_labels_str", LONG_TEXT, nullable=False, server_default=sa.text("('{}')")),
    sa.Column("tool_meta_str", LONG_TEXT, nullable=False, server_default=sa.text("('{}')")),
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

# --- knowledge bases (docs/dify-reference.md#tables)
# ----------------------------------------

datasets = sa.Table(
    "datasets",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _str("name"),
    _text("description"),
    _str("provider", default="vendor"),  # vendor | external
    _str("permission", default="only_me"),
    _str("data_source_type", nullable=True),
    _str("indexing_technique", nullable=True),  # high_quality | economy
    _text("index_struct"),
    _uuid("created_by"),
    _uuid("updated_by", nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    _str("chunk_structure", nullable=True),  # overrides documents.doc_form (newer Dify only)
    sa.Index("dataset_tenant_idx", "tenant_id"),
)

documents = sa.Table(
    "documents",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("dataset_id"),
    sa.Column("position", sa.Integer(), nullable=False),
    _str("data_source_type"),
    _text("data_source_info"),
    _str("batch"),
    _str("name"),
    _str("created_from"),
    _uuid("created_by"),
    _ts("created_at"),
    _ts("updated_at"),
    _str("indexing_status", default="waiting"),
    _bool("enabled", True),
    _ts("disabled_at", nullable=True, default=False),
    _uuid("disabled_by", nullable=True),
    _bool("archived", False),
    _str("doc_form", default="text_model"),  # text_model | qa_model | hierarchical_model
    sa.Index("document_dataset_id_idx", "dataset_id"),
    sa.Index("document_tenant_idx", "tenant_id"),
)

document_segments = sa.Table(
    "document_segments",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("dataset_id"),
    _uuid("document_id"),
    sa.Column("position", sa.Integer(), nullable=False),
    _text("content", nullable=False),
    _text("answer"),
    sa.Column("word_count", sa.Integer(), nullable=False),
    sa.Column("tokens", sa.Integer(), nullable=False),
    sa.Column("hit_count", sa.Integer(), nullable=False),
    _str("index_node_id", nullable=True),
    _bool("enabled", True),
    _str("status", default="waiting"),
    _uuid("created_by"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("document_segment_dataset_id_idx", "dataset_id"),
    sa.Index("document_segment_document_id_idx", "document_id"),
    sa.Index("document_segment_node_dataset_idx", "index_node_id", "dataset_id"),
    sa.Index("document_segment_tenant_dataset_idx", "dataset_id", "tenant_id"),
    sa.Index("document_segment_tenant_document_idx", "document_id", "tenant_id"),
    sa.Index("document_segment_tenant_idx", "tenant_id"),
)

dataset_queries = sa.Table(
    "dataset_queries",
    metadata,
    _id(),
    _uuid("dataset_id"),
    _text("content", nullable=False),
    _str("source"),  # app | hit_testing | …
    _uuid("source_app_id", nullable=True),
    _str("created_by_role"),
    _uuid("created_by"),
    _ts("created_at"),
    sa.Index("dataset_query_dataset_id_idx", "dataset_id"),
    # Added by the migration of Dify's dataset-queries cleanup branch (67b5709d7d0a), absent in released Dify:
    # clean-dataset-queries warns without it and doctor prints the CREATE INDEX (docs/jobs/clean-dataset-queries.md).
    sa.Index("dataset_query_created_at_idx", "created_at"),
)

dataset_auto_disable_logs = sa.Table(
    "dataset_auto_disable_logs",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("dataset_id"),
    _uuid("document_id"),
    _bool("notified", False),
    _ts("created_at"),
    sa.Index("dataset_auto_disable_log_created_atx", "created_at"),  # sic: Dify's name ends in _atx
    sa.Index("dataset_auto_disable_log_dataset_idx", "dataset_id"),
    sa.Index("dataset_auto_disable_log_tenant_idx", "tenant_id"),
)

dataset_keyword_tables = sa.Table(
    "dataset_keyword_tables",
    metadata,
    _id(),
    _uuid("dataset_id"),
    _text("keyword_table", nullable=False),
    _str("data_source_type", default="database"),  # database | file (the table then lives in storage)
    sa.UniqueConstraint("dataset_id", name="dataset_keyword_tables_dataset_id_key"),
    sa.Index("dataset_keyword_table_dataset_id_idx", "dataset_id"),
)

embeddings = sa.Table(  # the embedding cache: no relationship to any other table (docs/dify-reference.md#tables)
    "embeddings",
    metadata,
    _id(),
    _str("hash", 64),  # sha256 of the chunk text
    sa.Column("embedding", LONG_BINARY, nullable=False),  # pickled list of floats, several KB
    _str("model_name", default="text-embedding-ada-002"),
    _str("provider_name", default=""),
    _ts("created_at"),
    sa.UniqueConstraint("model_name", "hash", "provider_name", name="embedding_hash_idx"),
    sa.Index("created_at_idx", "created_at"),
)

# --- OAuth device-flow tokens (docs/dify-reference.md#tables; migration d4a5e1f3c9b7, absent in older Dify)

_ACTIVE_TOKEN: dict[str, Any] = {  # the partial-index predicate of every oauth_access_tokens index
    "postgresql_where": sa.text("revoked_at IS NULL"),
    "sqlite_where": sa.text("revoked_at IS NULL"),
}

oauth_access_tokens = sa.Table(
    "oauth_access_tokens",
    metadata,
    _id(),  # Dify's server default is uuidv7(); nothing here depends on the id's order
    _str("subject_email"),
    _str("subject_issuer", nullable=True),
    _uuid("account_id", nullable=True),  # a real FK → accounts.id ON DELETE SET NULL in Dify; omitted here
    _str("client_id", 64),
    _str("device_label"),
    _str("prefix", 8),
    _str("token_hash", 64, nullable=True),
    # The only timestamptz columns in scope: compare with aware UTC cut-offs (docs/dify-reference.md#time-handling).
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("token_hash", name="oauth_access_tokens_token_hash_key"),
    sa.Index("idx_oauth_subject_email", "subject_email", **_ACTIVE_TOKEN),
    sa.Index(
        "idx_oauth_account",
        "account_id",
        postgresql_where=sa.text("revoked_at IS NULL AND account_id IS NOT NULL"),
        sqlite_where=sa.text("revoked_at IS NULL AND account_id IS NOT NULL"),
    ),
    sa.Index("idx_oauth_client", "subject_email", "client_id", **_ACTIVE_TOKEN),
    sa.Index("idx_oauth_token_hash", "token_hash", **_ACTIVE_TOKEN),
    sa.Index(
        "uq_oauth_active_per_device",
        "subject_email",
        "subject_issuer",
        "client_id",
        "device_label",
        unique=True,
        # InnoDB keys stop at 3072 bytes (four per utf8mb4 character): Dify indexes 191-character prefixes.
        mysql_length={"subject_email": 191, "subject_issuer": 191, "device_label": 191},
        **_ACTIVE_TOKEN,
    ),
)

# --- workflow runs and their per-run rows (docs/dify-reference.md#tables) ------------------------------

workflow_runs = sa.Table(
    "workflow_runs",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("app_id"),
    _uuid("workflow_id"),
    _str("type"),  # workflow | chat | rag-pipeline
    _str("triggered_from"),
    _str("version"),
    _text("graph"),
    _text("inputs"),
    _text("outputs"),
    _text("error"),
    _str("status"),  # running | succeeded | failed | stopped | partial-succeeded | paused (| scheduled)
    sa.Column("elapsed_time", sa.Float(), nullable=False, server_default="0"),
    sa.Column("total_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("total_steps", sa.Integer(), nullable=True, server_default="0"),
    sa.Column("exceptions_count", sa.Integer(), nullable=True, server_default="0"),
    _str("created_by_role"),
    _uuid("created_by"),
    _ts("created_at"),
    _ts("finished_at", nullable=True, default=False),
    # "triggerd" is how the index is spelled in Dify's database.
    sa.Index("workflow_run_triggerd_from_idx", "tenant_id", "app_id", "triggered_from"),
    sa.Index("workflow_run_created_at_id_idx", "created_at", "id"),
)

workflow_node_executions = sa.Table(
    "workflow_node_executions",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("app_id"),
    _uuid("workflow_id"),
    _str("triggered_from"),  # single-step | workflow-run | rag-pipeline-run
    _uuid("workflow_run_id", nullable=True),  # NULL for single-step debug runs
    sa.Column("index", sa.Integer(), nullable=False),
    _str("predecessor_node_id", nullable=True),
    _str("node_execution_id", nullable=True),
    _str("node_id"),
    _str("node_type"),
    _str("title"),
    _text("inputs"),
    _text("process_data"),
    _text("outputs"),
    _text("execution_metadata"),
    _text("error"),
    _str("status"),
    sa.Column("elapsed_time", sa.Float(), nullable=False, server_default="0"),
    _str("created_by_role"),
    _uuid("created_by"),
    _ts("created_at"),
    _ts("finished_at", nullable=True, default=False),
    sa.Index("workflow_node_execution_workflow_run_id_idx", "workflow_run_id"),
    sa.Index("workflow_node_execution_node_run_idx", "tenant_id", "app_id", "workflow_id", "triggered_from", "node_id"),
    sa.Index(
        "workflow_node_execution_id_idx", "tenant_id", "app_id", "workflow_id", "triggered_from", "node_execution_id"
    ),
    sa.Index(
        "workflow_node_executions_tenant_id_idx", "tenant_id", "workflow_id", "node_id", sa.text("created_at DESC")
    ),
)

workflow_node_execution_offload = sa.Table(
    "workflow_node_execution_offload",
    metadata,
    _id(),
    _ts("created_at"),
    _uuid("tenant_id"),
    _uuid("app_id"),
    _uuid("node_execution_id", nullable=True),  # NULL rows are allowed and are garbage
    _str("type", 20),  # inputs | outputs | process_data
    _uuid("file_id"),  # → upload_files.id
    sa.UniqueConstraint("node_execution_id", "type", name="workflow_node_execution_offload_node_execution_id_key"),
)

workflow_app_logs = sa.Table(
    "workflow_app_logs",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("app_id"),
    _uuid("workflow_id"),
    _uuid("workflow_run_id"),
    _str("created_from"),  # service-api | web-app | installed-app
    _str("created_by_role"),
    _uuid("created_by"),
    _ts("created_at"),
    sa.Index("workflow_app_log_app_idx", "tenant_id", "app_id"),
    sa.Index("workflow_app_log_workflow_run_id_idx", "workflow_run_id"),
)

workflow_pauses = sa.Table(
    "workflow_pauses",
    metadata,
    _id(),
    _uuid("workflow_id"),
    _uuid("workflow_run_id"),
    _ts("resumed_at", nullable=True, default=False),
    _str("state_object_key"),  # storage key workflow-state-{uuid}.json
    _ts("created_at"),
    _ts("updated_at"),
    sa.UniqueConstraint("workflow_run_id", name="workflow_pauses_workflow_run_id_key"),
)

workflow_pause_reasons = sa.Table(
    "workflow_pause_reasons",
    metadata,
    _id(),
    _ts("created_at"),
    _ts("updated_at"),
    _uuid("pause_id"),
    _str("type_", 20),  # human_input_required | scheduled_pause
    _str("form_id", 36),
    _str("node_id"),
    _str("message", default=""),
    sa.Index("workflow_pause_reasons_pause_id_idx", "pause_id"),
)

# Draft variables of the workflow editor; a large value is offloaded to storage through an upload_files row
# (docs/jobs/clean-draft-variables.md). workflow_draft_variable_files: Dify 1.9+.
workflow_draft_variables = sa.Table(
    "workflow_draft_variables",
    metadata,
    _id(),
    _ts("created_at"),
    _ts("updated_at"),
    _uuid("app_id"),
    _ts("last_edited_at", nullable=True, default=False),
    _str("node_id"),
    _str("name"),
    _str("description", default=""),
    _str("selector"),
    _str("value_type", 20),
    _text("value"),
    _bool("visible", True),
    _bool("editable", True),
    _uuid("node_execution_id", nullable=True),
    _uuid("file_id", nullable=True),  # → workflow_draft_variable_files.id
    _bool("is_default_value", False),
    _uuid("user_id", nullable=True),
    sa.Index("workflow_draft_variable_file_id_idx", "file_id"),
    sa.Index("workflow_draft_variables_app_id_user_id_key", "app_id", "user_id", "node_id", "name", unique=True),
)

workflow_draft_variable_files = sa.Table(
    "workflow_draft_variable_files",
    metadata,
    _id(),
    _ts("created_at"),
    _uuid("tenant_id"),
    _uuid("app_id"),
    _uuid("user_id"),
    _uuid("upload_file_id"),  # → upload_files.id (whose key names the object in storage)
    sa.Column("size", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("length", sa.Integer(), nullable=True),
    _str("value_type", 20, default="string"),
)

workflow_trigger_logs = sa.Table(
    "workflow_trigger_logs",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("app_id"),
    _uuid("workflow_id"),
    _uuid("workflow_run_id", nullable=True),
    _str("root_node_id", nullable=True),
    _text("trigger_metadata", nullable=False),
    _str("trigger_type", 50),
    _text("trigger_data", nullable=False),
    _text("inputs", nullable=False),
    _text("outputs"),
    _text("error"),
    _str("status", 50),
    _str("queue_name", 100),
    _str("celery_task_id", nullable=True),
    sa.Column("retry_count", sa.Integer(), nullable=False),
    sa.Column("elapsed_time", sa.Float(), nullable=True),
    sa.Column("total_tokens", sa.Integer(), nullable=True),
    _str("created_by_role"),
    _str("created_by"),  # varchar, not uuid (docs/dify-reference.md#tables)
    _ts("created_at"),
    _ts("triggered_at", nullable=True, default=False),
    _ts("finished_at", nullable=True, default=False),
    sa.Index("workflow_trigger_log_created_at_idx", "created_at"),
    sa.Index("workflow_trigger_log_status_idx", "status"),
    sa.Index("workflow_trigger_log_tenant_app_idx", "tenant_id", "app_id"),
    sa.Index("workflow_trigger_log_workflow_id_idx", "workflow_id"),
    sa.Index("workflow_trigger_log_workflow_run_idx", "workflow_run_id"),
)

# A snapshot row per archived run (one per app log, or one if none) kept after the run went to object
# storage (docs/dify-reference.md#archive-format; archive-workflow-runs writes them, restore-workflow-runs reads them).
workflow_archive_logs = sa.Table(
    "workflow_archive_logs",
    metadata,
    _id(),  # uuidv7() in Dify; any uuid works
    _uuid("log_id", nullable=True),  # the workflow_app_logs row it stands for
    _uuid("tenant_id"),
    _uuid("app_id"),
    _uuid("workflow_id"),
    _uuid("workflow_run_id"),
    _str("created_by_role"),
    _uuid("created_by"),
    _ts("log_created_at", nullable=True, default=False),
    _str("log_created_from", nullable=True),
    _str("run_version"),
    _str("run_status"),
    _str("run_triggered_from"),
    _text("run_error"),
    sa.Column("run_elapsed_time", sa.Float(), nullable=False, server_default="0"),
    sa.Column("run_total_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("run_total_steps", sa.Integer(), nullable=True, server_default="0"),
    sa.Column("run_exceptions_count", sa.Integer(), nullable=True, server_default="0"),
    _ts("run_created_at", default=False),
    _ts("run_finished_at", nullable=True, default=False),
    _text("trigger_metadata"),
    _ts("archived_at"),
    sa.Index("workflow_archive_log_app_idx", "tenant_id", "app_id"),
    sa.Index("workflow_archive_log_workflow_run_id_idx", "workflow_run_id"),
    sa.Index("workflow_archive_log_run_created_at_idx", "run_created_at"),
)

# --- TiDB-on-Qdrant cluster pool (docs/tidb-pool.md; create-tidb and update-tidb-status) ----------------------
# One row per pre-created TiDB Cloud Serverless cluster: tenant_id NULL and active=false while idle in the pool,
# status CREATING until TiDB Cloud reports the cluster ACTIVE. Column types as in Dify's models/dataset.py.

tidb_auth_bindings = sa.Table(
    "tidb_auth_bindings",
    metadata,
    _id(),  # uuid4 in Dify
    _uuid("tenant_id", nullable=True),  # set when Dify hands the cluster to a workspace
    _str("cluster_id"),
    _str("cluster_name"),
    _bool("active", False),
    _str("status", default="CREATING"),  # CREATING -> ACTIVE
    _str("account"),  # "root" at creation, "{userPrefix}.root" once ACTIVE
    _str("password"),  # plaintext in Dify: never select it into anything that is printed
    _ts("created_at"),
    # Dify migration 8574b23a38fd (2026-04): absent on older databases, which the jobs detect.
    _str("qdrant_endpoint", 512, nullable=True),
    sa.Index("tidb_auth_bindings_tenant_idx", "tenant_id"),
    sa.Index("tidb_auth_bindings_active_idx", "active"),
    sa.Index("tidb_auth_bindings_created_at_idx", "created_at"),
    sa.Index("tidb_auth_bindings_status_idx", "status"),
)

# --- schedule and plugin triggers (api/models/trigger.py): poll-workflow-schedules, refresh-trigger-providers
# Dify's DateTime columns here are naive UTC ``timestamp``; the two expiries of trigger_subscriptions are epoch
# seconds in plain ``integer`` columns, -1 meaning "never".

workflow_schedule_plans = sa.Table(
    "workflow_schedule_plans",
    metadata,
    _id(),  # uuidv7 in Dify
    _uuid("app_id"),
    _str("node_id", 64),
    _uuid("tenant_id"),
    _str("cron_expression"),
    _str("timezone", 64),
    sa.Column("next_run_at", sa.DateTime(), nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    sa.UniqueConstraint("app_id", "node_id", name="uniq_app_node"),
    sa.Index("workflow_schedule_plan_next_idx", "next_run_at"),
)

app_triggers = sa.Table(
    "app_triggers",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("app_id"),
    _str("node_id", 64),
    _str("trigger_type", 50),  # EnumText: 'trigger-schedule', 'trigger-webhook', 'trigger-plugin'
    _str("title"),
    sa.Column("provider_name", sa.String(255), nullable=True, server_default=sa.text("''")),
    _str("status", 50, default="enabled"),  # EnumText: enabled, disabled, unauthorized, rate_limited
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("app_trigger_tenant_app_idx", "tenant_id", "app_id"),
)

trigger_subscriptions = sa.Table(
    "trigger_subscriptions",
    metadata,
    _id(),
    _str("name"),
    _uuid("tenant_id"),
    _uuid("user_id"),
    _str("provider_id"),
    _str("endpoint_id"),
    sa.Column("parameters", sa.JSON(), nullable=False),
    sa.Column("properties", sa.JSON(), nullable=False),
    sa.Column("credentials", sa.JSON(), nullable=False),
    _str("credential_type", 50),
    sa.Column("credential_expires_at", sa.Integer(), nullable=False, server_default=sa.text("-1")),
    sa.Column("expires_at", sa.Integer(), nullable=False, server_default=sa.text("-1")),
    _str("visibility", 40, default="all_team_members"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("idx_trigger_providers_tenant_provider", "tenant_id", "provider_id"),
    sa.Index("idx_trigger_providers_endpoint", "endpoint_id", unique=True),
    sa.Index("idx_trigger_providers_tenant_endpoint", "tenant_id", "endpoint_id"),
    sa.UniqueConstraint("tenant_id", "provider_id", "name", name="unique_trigger_provider"),
)

# --- dispatchers: API-token usage, plugin auto-upgrade, human input (docs/jobs/flush-api-token-usage.md,
# check-upgradable-plugins.md, timeout-human-input.md; column types as in Dify's api/models) --------------

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    _id(),
    _uuid("app_id", nullable=True),  # set for type 'app'
    _uuid("tenant_id", nullable=True),  # set for type 'dataset'
    _str("type", 16),  # app | dataset
    _str("token"),  # the plaintext key (app-…, dataset-…)
    _ts("last_used_at", nullable=True, default=False),
    _ts("created_at"),
    sa.Index("api_token_app_id_type_idx", "app_id", "type"),
    sa.Index("api_token_tenant_idx", "tenant_id", "type"),
    sa.Index("api_token_token_idx", "token", "type"),
)

tenant_plugin_auto_upgrade_strategies = sa.Table(
    "tenant_plugin_auto_upgrade_strategies",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _str("strategy_setting", 16, default="fix_only"),  # disabled | fix_only | latest
    sa.Column("upgrade_time_of_day", sa.Integer(), nullable=False),  # seconds after midnight UTC
    _str("upgrade_mode", 16, default="exclude"),  # all | partial | exclude
    sa.Column("exclude_plugins", sa.JSON(), nullable=False),  # list of plugin ids
    sa.Column("include_plugins", sa.JSON(), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    sa.UniqueConstraint("tenant_id", name="unique_tenant_plugin_auto_upgrade_strategy"),
)

human_input_forms = sa.Table(
    "human_input_forms",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("app_id"),
    _uuid("workflow_run_id", nullable=True),  # NULL for delivery tests
    _str("form_kind", 20, default="runtime"),  # runtime | delivery_test
    _str("node_id", 60),
    _text("form_definition", nullable=False),
    _text("rendered_content", nullable=False),
    _str("status", 20, default="waiting"),  # waiting | submitted | timeout | expired
    sa.Column("expiration_time", sa.DateTime(), nullable=False),  # naive UTC
    _str("selected_action_id", 200, nullable=True),
    _text("submitted_data"),
    _ts("submitted_at", nullable=True, default=False),
    _uuid("submission_user_id", nullable=True),
    _uuid("submission_end_user_id", nullable=True),
    _uuid("completed_by_recipient_id", nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("human_input_forms_workflow_run_id_node_id_idx", "workflow_run_id", "node_id"),
    sa.Index("human_input_forms_status_expiration_time_idx", "status", "expiration_time"),
    sa.Index("human_input_forms_status_created_at_idx", "status", "created_at"),
)


# --- stored files and what refers to them (docs/jobs/sweep-files.md#referrers) ----------------------------------

# Files tools produced: no created_at (an object's age is its last-modified time), key tools/{tenant}/{hex}{ext}.
tool_files = sa.Table(
    "tool_files",
    metadata,
    _id(),
    _uuid("user_id"),
    _uuid("tenant_id"),
    _uuid("conversation_id", nullable=True),
    _str("file_key"),
    _str("mimetype"),
    _str("original_url", 2048, nullable=True),
    _str("name", default=""),
    sa.Column("size", sa.Integer(), nullable=False, server_default="-1"),
    sa.Index("tool_file_conversation_id_idx", "conversation_id"),
)

sites = sa.Table(
    "sites",
    metadata,
    _id(),
    _uuid("app_id"),
    _str("title"),
    _str("icon_type", nullable=True),
    _str("icon", nullable=True),
    _str("code", nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
)

child_chunks = sa.Table(
    "child_chunks",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("dataset_id"),
    _uuid("document_id"),
    _uuid("segment_id"),
    sa.Column("position", sa.Integer(), nullable=False),
    _text("content", nullable=False),
    sa.Column("word_count", sa.Integer(), nullable=False),
    _uuid("created_by"),
    _ts("created_at"),
    _ts("updated_at"),
)

segment_attachment_bindings = sa.Table(
    "segment_attachment_bindings",
    metadata,
    _id(),
    _uuid("tenant_id"),
    _uuid("dataset_id"),
    _uuid("document_id"),
    _uuid("segment_id"),
    _uuid("attachment_id"),  # → upload_files.id
    _ts("created_at"),
    sa.Index("segment_attachment_binding_attachment_idx", "attachment_id"),
)
