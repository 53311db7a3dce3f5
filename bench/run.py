"""Side-by-side benchmark: difymaint against Dify's own SQL shapes and the set-based floor (bench/README.md).

Builds one Dify-shaped template database server-side (``generate_series``; the schema is the one the tests
use, difymaint/dify/tables.py), then times every contender on a fresh copy of it (``CREATE DATABASE …
TEMPLATE``), for clean-messages, clean-workflow-runs, clean-embeddings and clean-dataset-queries:

* ``floor``: one set-based DELETE per table, all in one transaction (the practical lower bound);
* ``dify``: Dify's shape (MessagesCleanService / WorkflowRunCleanup: keyset page of 1000, per-table ``IN``
  deletes, one commit per batch, then a random 0-200 ms pause; clean_embedding_cache_task: 100 ids newest
  first, one DELETE per row; clean_dataset_queries_task: 500 ids, one ``DELETE … IN``); ``dify-no-sleep``: the
  same without the pause;
* ``difymaint``: the CLI with its defaults; ``difymaint-sleep0``: ``--sleep-ms 0``;
  ``difymaint-workers2``: ``--sleep-ms 0 --workers 2``; with ``--busy``, ``difymaint-busy``: the defaults with
  the batch length they aim at while other sessions use the database (``DIFYMAINT_SHARED_BATCH_MS``; the bench's
  database is otherwise idle, so this stands in for a run beside Dify's traffic).

Every contender must delete exactly the same rows per table (checked by counting the copies afterwards). It
prints wall time, rows/s, the ratios to Dify's default, to Dify without its sleep and to the floor,
p50/p95/max batch transaction time, peak RSS (difymaint: the CLI process) and WAL bytes; then the exact
``--dry-run`` against one ``count(*)`` per table with the same predicates.

    bench/run --pg-url postgresql://postgres@127.0.0.1:5432/postgres --messages 300000 [--json]

``--mysql-url`` runs the same on MySQL/MariaDB (Dify's ``DB_TYPE=mysql``): the template is built with
``INSERT … SELECT`` from a numbers table and copied table by table (``CREATE TABLE … LIKE``), Dify's shapes
run unchanged, the floor is one multi-table ``DELETE … JOIN`` per table (a single-table DELETE's
``IN (SELECT …)`` is a dependent sub-query on MariaDB 10.11), and WAL is InnoDB's redo (``Innodb_os_log_written``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from difymaint.core.settings import Settings
from difymaint.dify.tables import metadata

MESSAGE_CHILDREN = (
    "message_feedbacks",
    "message_annotations",
    "message_chains",
    "message_agent_thoughts",
    "message_files",
    "saved_messages",
    "app_annotation_hit_histories",
    "dataset_retriever_resources",
)
MESSAGE_TABLES = (*MESSAGE_CHILDREN, "messages")
RUN_TABLES = (
    "workflow_node_execution_offload",
    "workflow_node_executions",
    "workflow_app_logs",
    "workflow_pause_reasons",
    "workflow_pauses",
    "workflow_trigger_logs",
    "workflow_runs",
)
ENDED = "('succeeded', 'failed', 'partial-succeeded', 'stopped')"
# The tables the template fills (the rest stay empty in every copy).
POPULATED = ("tenants", "apps", "conversations", *MESSAGE_TABLES, *RUN_TABLES, "embeddings")
DIFY_SLEEP_MS = 200  # SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL's default
DAYS = 30
# The durability an operator's PostgreSQL has, for the benches that start a server of their own (bench/live,
# bench/scale --own-server); the test suite's cluster turns these off.
PRODUCTION_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "1GB",
    "max_wal_size": "4GB",
}


@dataclass
class Result:
    job: str
    contender: str
    wall_s: float
    rows: int
    deleted: dict[str, int]
    batches: int = 0
    batch_ms: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    wal_bytes: int | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    # MySQL: seconds after the contender ended until InnoDB's purge had removed its delete-marked rows.
    purge_s: float = 0.0

    @property
    def rows_per_s(self) -> float:
        """Rows per second of the contender's time plus the purge it left behind (zero on PostgreSQL)."""
        total = self.wall_s + self.purge_s
        return self.rows / total if total else 0.0


# --- the template database -----------------------------------------------------------------------------------


def uid(prefix: str, expr: str) -> str:
    """A deterministic uuid from a prefix and an integer expression (no join needed to point at a parent)."""
    return f"md5('{prefix}' || ({expr})::text)::uuid"


def build_template(
    engine: Engine,
    *,
    messages: int,
    runs: int,
    embeddings: int,
    now: datetime,
    history_days: int = 90,
    dataset_queries: int = 0,
) -> None:
    # Tables first and their secondary indexes after the rows are in: one sort per index instead of one index
    # insert per row (the 10x tier of bench/scale.py builds tens of millions of rows).
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            conn.execute(sa.schema.CreateTable(table))
    apps, conversations = 200, max(1, messages // 5)
    # Rows spread evenly over history_days; the 30-day cut-off removes (history_days - 30) / history_days of
    # them: two thirds by default (a backlog), 1/31 at 31 days (one night of a daily job).
    span = history_days * 86400
    someone = "'00000000-0000-0000-0000-000000000001'"
    ts = f"(timestamp '{now:%Y-%m-%d %H:%M:%S}' - ((g::bigint * {span}) / GREATEST(n, 1)) * interval '1 second')"
    statements = [
        # Payload columns stored uncompressed, so the 1-4 KB and 6 KB rows really weigh that much in TOAST.
        "ALTER TABLE workflow_node_executions ALTER COLUMN inputs SET STORAGE EXTERNAL",
        "ALTER TABLE workflow_node_executions ALTER COLUMN outputs SET STORAGE EXTERNAL",
        "ALTER TABLE embeddings ALTER COLUMN embedding SET STORAGE EXTERNAL",
        "INSERT INTO tenants (id, name) SELECT " + uid("t", "g") + ", 't' || g FROM generate_series(0, 49) g",
        f"INSERT INTO apps (id, tenant_id, name, mode, enable_site, enable_api) SELECT {uid('a', 'g')}, "
        f"{uid('t', 'g % 50')}, 'app', 'chat', true, true FROM generate_series(0, {apps - 1}) g",
        f"INSERT INTO conversations (id, app_id, mode, name, inputs, status, from_source) SELECT {uid('c', 'g')}, "
        f"{uid('a', f'g % {apps}')}, 'chat', 'c', '{{}}', 'normal', 'api' "
        f"FROM generate_series(0, {conversations - 1}) g",
        f"INSERT INTO messages (id, app_id, conversation_id, inputs, query, message, answer, message_unit_price, "
        f"answer_unit_price, currency, from_source, created_at, updated_at) SELECT {uid('m', 'g')}, "
        f"{uid('a', f'(g % {conversations}) % {apps}')}, {uid('c', f'g % {conversations}')}, '{{}}', 'q', '[]', "
        f"repeat('answer ', 20), 0, 0, 'USD', 'api', {ts}, {ts} FROM generate_series(0, {messages - 1}) g, "
        f"(SELECT {messages} AS n) k",
        # ~3.2 child rows per message across the eight tables
        f"INSERT INTO message_feedbacks (id, app_id, conversation_id, message_id, rating, from_source) "
        f"SELECT {uid('mf', 'g')}, {uid('a', f'(g % {conversations}) % {apps}')}, {uid('c', f'g % {conversations}')}, "
        f"{uid('m', 'g')}, 'like', 'user' FROM generate_series(0, {messages - 1}) g WHERE g % 10 = 0",
        f"INSERT INTO message_annotations (id, app_id, conversation_id, message_id, question, content, account_id) "
        f"SELECT {uid('ma', 'g')}, {uid('a', f'(g % {conversations}) % {apps}')}, "
        f"{uid('c', f'g % {conversations}')}, {uid('m', 'g')}, 'q', 'a', {someone} "
        f"FROM generate_series(0, {messages - 1}) g WHERE g % 20 = 1",
        f"INSERT INTO message_chains (id, message_id, type) SELECT {uid('mc', 'g')}, {uid('m', 'g')}, 'system' "
        f"FROM generate_series(0, {messages - 1}) g WHERE g % 2 = 0",
        f"INSERT INTO message_agent_thoughts (id, message_id, position, created_by_role, created_by) "
        f"SELECT {uid('mt', 'g * 2 + p')}, {uid('m', 'g')}, p, 'account', {someone} "
        f"FROM generate_series(0, {messages - 1}) g, generate_series(0, 1) p WHERE g % 4 <> 3 OR p = 0",
        f"INSERT INTO message_files (id, message_id, type, transfer_method, created_by_role, created_by) "
        f"SELECT {uid('mfi', 'g')}, {uid('m', 'g')}, 'image', 'remote_url', 'end_user', {someone} "
        f"FROM generate_series(0, {messages - 1}) g WHERE g % 5 = 2",
        f"INSERT INTO saved_messages (id, app_id, message_id, created_by) SELECT {uid('sm', 'g')}, "
        f"{uid('a', f'(g % {conversations}) % {apps}')}, {uid('m', 'g')}, {someone} "
        f"FROM generate_series(0, {messages - 1}) g WHERE g % 20 = 3",
        f"INSERT INTO app_annotation_hit_histories (id, app_id, annotation_id, source, question, account_id, "
        f"message_id, annotation_question, annotation_content) SELECT {uid('ah', 'g')}, "
        f"{uid('a', f'(g % {conversations}) % {apps}')}, {someone}, 'api', 'q', {someone}, {uid('m', 'g')}, 'q', 'a' "
        f"FROM generate_series(0, {messages - 1}) g WHERE g % 20 = 4",
        f"INSERT INTO dataset_retriever_resources (id, message_id, position, dataset_id, dataset_name, "
        f"document_name, content, retriever_from, created_by) SELECT {uid('dr', 'g')}, {uid('m', 'g')}, 1, "
        f"{someone}, 'd', 'doc', repeat('chunk ', 40), 'api', {someone} "
        f"FROM generate_series(0, {messages - 1}) g WHERE g % 2 = 1",
        # workflow runs: 1 in 10 still running or paused (never deleted), 5 node executions of 1-4 KB each
        f"INSERT INTO workflow_runs (id, tenant_id, app_id, workflow_id, type, triggered_from, version, graph, "
        f"inputs, outputs, status, created_by_role, created_by, created_at) SELECT {uid('r', 'g')}, "
        f"{uid('t', 'g % 50')}, {uid('a', f'g % {apps}')}, {uid('w', 'g % 400')}, 'workflow', 'app-run', 'v1', "
        f"repeat('{{}}', 200), '{{}}', '{{}}', CASE g % 10 WHEN 0 THEN 'running' WHEN 5 THEN 'paused' "
        f"WHEN 7 THEN 'failed' ELSE 'succeeded' END, 'account', {someone}, {ts} "
        f"FROM generate_series(0, {runs - 1}) g, (SELECT {runs} AS n) k",
        f"INSERT INTO workflow_node_executions (id, tenant_id, app_id, workflow_id, triggered_from, "
        f"workflow_run_id, index, node_id, node_type, title, inputs, outputs, status, created_by_role, created_by, "
        f"created_at) SELECT {uid('ne', 'g * 5 + i')}, {uid('t', 'g % 50')}, {uid('a', f'g % {apps}')}, "
        f"{uid('w', 'g % 400')}, 'workflow-run', {uid('r', 'g')}, i, 'n' || i, 'llm', 'node', "
        f"repeat(md5((g * 5 + i)::text), 16 + ((g + i) % 4) * 16), repeat(md5(g::text), 16), 'succeeded', "
        f"'account', {someone}, now() FROM generate_series(0, {runs - 1}) g, generate_series(0, 4) i",
        f"INSERT INTO workflow_node_execution_offload (id, tenant_id, app_id, node_execution_id, type, file_id) "
        f"SELECT {uid('off', 'g')}, {uid('t', 'g % 50')}, {uid('a', f'g % {apps}')}, {uid('ne', 'g * 5')}, "
        f"'outputs', {uid('uf', 'g')} FROM generate_series(0, {runs - 1}) g WHERE g % 10 = 3",
        f"INSERT INTO workflow_app_logs (id, tenant_id, app_id, workflow_id, workflow_run_id, created_from, "
        f"created_by_role, created_by) SELECT {uid('al', 'g')}, {uid('t', 'g % 50')}, {uid('a', f'g % {apps}')}, "
        f"{uid('w', 'g % 400')}, {uid('r', 'g')}, 'service-api', 'account', {someone} "
        f"FROM generate_series(0, {runs - 1}) g",
        f"INSERT INTO workflow_pauses (id, workflow_id, workflow_run_id, state_object_key) SELECT {uid('p', 'g')}, "
        f"{uid('w', 'g % 400')}, {uid('r', 'g')}, 'pause/' || g FROM generate_series(0, {runs - 1}) g "
        f"WHERE g % 10 IN (5, 6)",
        f"INSERT INTO workflow_pause_reasons (id, pause_id, type_, form_id, node_id) SELECT {uid('pr', 'g')}, "
        f"{uid('p', 'g')}, 'human_input', {someone}, 'n1' FROM generate_series(0, {runs - 1}) g "
        f"WHERE g % 10 IN (5, 6)",
        f"INSERT INTO workflow_trigger_logs (id, tenant_id, app_id, workflow_id, workflow_run_id, trigger_metadata, "
        f"trigger_type, trigger_data, inputs, status, queue_name, retry_count, created_by_role, created_by) "
        f"SELECT {uid('tl', 'g')}, {uid('t', 'g % 50')}, {uid('a', f'g % {apps}')}, {uid('w', 'g % 400')}, "
        f"{uid('r', 'g')}, '{{}}', 'webhook', '{{}}', '{{}}', 'succeeded', 'q', 0, 'account', {someone} "
        f"FROM generate_series(0, {runs - 1}) g WHERE g % 10 = 4",
        # the embedding cache: ~6 KB per row
        f"INSERT INTO embeddings (id, model_name, hash, embedding, provider_name, created_at) SELECT "
        f"{uid('e', 'g')}, 'text-embedding-3-small', md5(g::text), decode(repeat(md5(g::text), 384), 'hex'), "
        f"'openai', {ts} FROM generate_series(0, {embeddings - 1}) g, (SELECT {embeddings} AS n) k",
        # the retrieval log: one short row per knowledge retrieval. clean-dataset-queries takes `--days` (now -
        # 30 days to the second), the other contenders the midnight before: no row lies between the two.
        f"INSERT INTO dataset_queries (id, dataset_id, content, source, source_app_id, created_by_role, "
        f"created_by, created_at) SELECT {uid('dq', 'g')}, {uid('d', 'g % 500')}, "
        f"'{{\"query\": \"' || repeat('what is ', 10) || g || '\"}}', 'app', {uid('a', f'g % {apps}')}, "
        f"'end_user', {someone}, CASE WHEN {ts} >= :gap_from AND {ts} < :gap_to THEN {ts} - interval '1 day' "
        f"ELSE {ts} END FROM generate_series(0, {dataset_queries - 1}) g, (SELECT {dataset_queries} AS n) k",
    ]
    gap_from = (now - timedelta(days=DAYS)).replace(hour=0, minute=0, second=0)
    gap = {"gap_from": gap_from, "gap_to": now - timedelta(days=DAYS) + timedelta(hours=1)}
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), gap if ":gap_from" in statement else {})
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL maintenance_work_mem = '512MB'"))
        for table in metadata.sorted_tables:
            for index in sorted(table.indexes, key=lambda index: str(index.name)):
                conn.execute(sa.schema.CreateIndex(index))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))


_MYSQL_UID = """CREATE FUNCTION uid(p VARCHAR(8), n BIGINT) RETURNS CHAR(36) DETERMINISTIC BEGIN
  DECLARE h CHAR(32) DEFAULT MD5(CONCAT(p, n));
  RETURN CONCAT_WS('-', SUBSTR(h, 1, 8), SUBSTR(h, 9, 4), SUBSTR(h, 13, 4), SUBSTR(h, 17, 4), SUBSTR(h, 21, 12));
END"""


def build_template_mysql(
    engine: Engine,
    *,
    messages: int,
    runs: int,
    embeddings: int,
    now: datetime,
    history_days: int = 90,
    dataset_queries: int = 0,
) -> None:
    """The same data as :func:`build_template`, in MySQL's SQL (MySQL 8.0 and MariaDB): ``nums`` stands in for
    generate_series, the stored function ``uid`` for the md5-derived uuids."""
    metadata.create_all(engine)
    apps, conversations = 200, max(1, messages // 5)
    span = history_days * 86400
    someone = "'00000000-0000-0000-0000-000000000001'"

    def ts(n: int) -> str:
        return f"TIMESTAMPADD(SECOND, -((g.g * {span}) DIV GREATEST({n}, 1)), '{now:%Y-%m-%d %H:%M:%S}')"

    def rows(n: int, where: str = "") -> str:
        return f"FROM nums g WHERE g.g < {n}" + (f" AND {where}" if where else "")

    msg_app = f"uid('a', (g.g % {conversations}) % {apps})"
    msg_conv = f"uid('c', g.g % {conversations})"
    statements = [
        _MYSQL_UID,
        "INSERT INTO tenants (id, name) SELECT uid('t', g.g), CONCAT('t', g.g) " + rows(50),
        f"INSERT INTO apps (id, tenant_id, name, mode, enable_site, enable_api) SELECT uid('a', g.g), "
        f"uid('t', g.g % 50), 'app', 'chat', true, true {rows(apps)}",
        f"INSERT INTO conversations (id, app_id, mode, name, inputs, status, from_source) SELECT uid('c', g.g), "
        f"uid('a', g.g % {apps}), 'chat', 'c', '{{}}', 'normal', 'api' {rows(conversations)}",
        f"INSERT INTO messages (id, app_id, conversation_id, inputs, query, message, answer, message_unit_price, "
        f"answer_unit_price, currency, from_source, created_at, updated_at) SELECT uid('m', g.g), {msg_app}, "
        f"{msg_conv}, '{{}}', 'q', '[]', REPEAT('answer ', 20), 0, 0, 'USD', 'api', {ts(messages)}, "
        f"{ts(messages)} {rows(messages)}",
        f"INSERT INTO message_feedbacks (id, app_id, conversation_id, message_id, rating, from_source) "
        f"SELECT uid('mf', g.g), {msg_app}, {msg_conv}, uid('m', g.g), 'like', 'user' {rows(messages, 'g.g % 10 = 0')}",
        f"INSERT INTO message_annotations (id, app_id, conversation_id, message_id, question, content, account_id) "
        f"SELECT uid('ma', g.g), {msg_app}, {msg_conv}, uid('m', g.g), 'q', 'a', {someone} "
        f"{rows(messages, 'g.g % 20 = 1')}",
        f"INSERT INTO message_chains (id, message_id, type) SELECT uid('mc', g.g), uid('m', g.g), 'system' "
        f"{rows(messages, 'g.g % 2 = 0')}",
        f"INSERT INTO message_agent_thoughts (id, message_id, position, created_by_role, created_by) "
        f"SELECT uid('mt', g.g * 2 + p.g), uid('m', g.g), p.g, 'account', {someone} FROM nums g JOIN nums p "
        f"ON p.g < 2 WHERE g.g < {messages} AND (g.g % 4 <> 3 OR p.g = 0)",
        f"INSERT INTO message_files (id, message_id, type, transfer_method, created_by_role, created_by) "
        f"SELECT uid('mfi', g.g), uid('m', g.g), 'image', 'remote_url', 'end_user', {someone} "
        f"{rows(messages, 'g.g % 5 = 2')}",
        f"INSERT INTO saved_messages (id, app_id, message_id, created_by) SELECT uid('sm', g.g), {msg_app}, "
        f"uid('m', g.g), {someone} {rows(messages, 'g.g % 20 = 3')}",
        f"INSERT INTO app_annotation_hit_histories (id, app_id, annotation_id, source, question, account_id, "
        f"message_id, annotation_question, annotation_content) SELECT uid('ah', g.g), {msg_app}, {someone}, 'api', "
        f"'q', {someone}, uid('m', g.g), 'q', 'a' {rows(messages, 'g.g % 20 = 4')}",
        f"INSERT INTO dataset_retriever_resources (id, message_id, position, dataset_id, dataset_name, "
        f"document_name, content, retriever_from, created_by) SELECT uid('dr', g.g), uid('m', g.g), 1, {someone}, "
        f"'d', 'doc', REPEAT('chunk ', 40), 'api', {someone} {rows(messages, 'g.g % 2 = 1')}",
        f"INSERT INTO workflow_runs (id, tenant_id, app_id, workflow_id, type, triggered_from, version, graph, "
        f"inputs, outputs, status, created_by_role, created_by, created_at) SELECT uid('r', g.g), uid('t', g.g % 50), "
        f"uid('a', g.g % {apps}), uid('w', g.g % 400), 'workflow', 'app-run', 'v1', REPEAT('{{}}', 200), '{{}}', "
        f"'{{}}', CASE g.g % 10 WHEN 0 THEN 'running' WHEN 5 THEN 'paused' WHEN 7 THEN 'failed' ELSE 'succeeded' "
        f"END, 'account', {someone}, {ts(runs)} {rows(runs)}",
        f"INSERT INTO workflow_node_executions (id, tenant_id, app_id, workflow_id, triggered_from, "
        f"workflow_run_id, `index`, node_id, node_type, title, inputs, outputs, status, created_by_role, created_by, "
        f"created_at) SELECT uid('ne', g.g * 5 + i.g), uid('t', g.g % 50), uid('a', g.g % {apps}), "
        f"uid('w', g.g % 400), 'workflow-run', uid('r', g.g), i.g, CONCAT('n', i.g), 'llm', 'node', "
        f"REPEAT(MD5(g.g * 5 + i.g), 16 + ((g.g + i.g) % 4) * 16), REPEAT(MD5(g.g), 16), 'succeeded', 'account', "
        f"{someone}, '{now:%Y-%m-%d %H:%M:%S}' FROM nums g JOIN nums i ON i.g < 5 WHERE g.g < {runs}",
        f"INSERT INTO workflow_node_execution_offload (id, tenant_id, app_id, node_execution_id, type, file_id) "
        f"SELECT uid('off', g.g), uid('t', g.g % 50), uid('a', g.g % {apps}), uid('ne', g.g * 5), 'outputs', "
        f"uid('uf', g.g) {rows(runs, 'g.g % 10 = 3')}",
        f"INSERT INTO workflow_app_logs (id, tenant_id, app_id, workflow_id, workflow_run_id, created_from, "
        f"created_by_role, created_by) SELECT uid('al', g.g), uid('t', g.g % 50), uid('a', g.g % {apps}), "
        f"uid('w', g.g % 400), uid('r', g.g), 'service-api', 'account', {someone} {rows(runs)}",
        f"INSERT INTO workflow_pauses (id, workflow_id, workflow_run_id, state_object_key) SELECT uid('p', g.g), "
        f"uid('w', g.g % 400), uid('r', g.g), CONCAT('pause/', g.g) {rows(runs, 'g.g % 10 IN (5, 6)')}",
        f"INSERT INTO workflow_pause_reasons (id, pause_id, type_, form_id, node_id) SELECT uid('pr', g.g), "
        f"uid('p', g.g), 'human_input', {someone}, 'n1' {rows(runs, 'g.g % 10 IN (5, 6)')}",
        f"INSERT INTO workflow_trigger_logs (id, tenant_id, app_id, workflow_id, workflow_run_id, trigger_metadata, "
        f"trigger_type, trigger_data, inputs, status, queue_name, retry_count, created_by_role, created_by) "
        f"SELECT uid('tl', g.g), uid('t', g.g % 50), uid('a', g.g % {apps}), uid('w', g.g % 400), uid('r', g.g), "
        f"'{{}}', 'webhook', '{{}}', '{{}}', 'succeeded', 'q', 0, 'account', {someone} {rows(runs, 'g.g % 10 = 4')}",
        f"INSERT INTO embeddings (id, model_name, hash, embedding, provider_name, created_at) SELECT uid('e', g.g), "
        f"'text-embedding-3-small', MD5(g.g), UNHEX(REPEAT(MD5(g.g), 384)), 'openai', {ts(embeddings)} "
        f"{rows(embeddings)}",
        # the same gap at the clean-dataset-queries cut-off as build_template leaves
        f"INSERT INTO dataset_queries (id, dataset_id, content, source, source_app_id, created_by_role, "
        f"created_by, created_at) SELECT uid('dq', g.g), uid('d', g.g % 500), CONCAT('{{\"query\": \"', "
        f"REPEAT('what is ', 10), g.g, '\"}}'), 'app', uid('a', g.g % {apps}), 'end_user', {someone}, "
        f"CASE WHEN {ts(dataset_queries)} >= :gap_from AND {ts(dataset_queries)} < :gap_to "
        f"THEN TIMESTAMPADD(DAY, -1, {ts(dataset_queries)}) ELSE {ts(dataset_queries)} END {rows(dataset_queries)}",
    ]
    gap_from = (now - timedelta(days=DAYS)).replace(hour=0, minute=0, second=0)
    gap = {"gap_from": gap_from, "gap_to": now - timedelta(days=DAYS) + timedelta(hours=1)}
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE nums (g BIGINT PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO nums VALUES (0), (1), (2), (3), (4), (5), (6), (7)"))
        size = 8
        while size < max(messages, runs, embeddings, dataset_queries, 64):
            conn.execute(sa.text(f"INSERT INTO nums SELECT g + {size} FROM nums"))
            size *= 2
        for statement in statements:
            conn.execute(sa.text(statement), gap if ":gap_from" in statement else {})
        conn.execute(sa.text("DROP TABLE nums"))
        conn.execute(sa.text("DROP FUNCTION uid"))
        conn.execute(sa.text("ANALYZE TABLE " + ", ".join(f"`{t.name}`" for t in metadata.sorted_tables))).all()


# --- contenders --------------------------------------------------------------------------------------------------


class Timer:
    def __init__(self) -> None:
        self.batches: list[float] = []

    def summary(self) -> dict[str, float]:
        if not self.batches:
            return {}
        ordered = sorted(self.batches)

        def at(share: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 1)

        return {"p50": at(0.5), "p95": at(0.95), "max": at(1.0)}


def floor_messages(conn: Connection, cutoff: datetime, _timer: Timer) -> None:
    doomed = "SELECT id FROM messages WHERE created_at < :cut"
    with conn.begin():
        for child in MESSAGE_CHILDREN:
            conn.execute(sa.text(f"DELETE FROM {child} WHERE message_id IN ({doomed})"), {"cut": cutoff})
        conn.execute(sa.text("DELETE FROM messages WHERE created_at < :cut"), {"cut": cutoff})


def floor_runs(conn: Connection, cutoff: datetime, _timer: Timer) -> None:
    runs = f"SELECT id FROM workflow_runs WHERE created_at < :cut AND status IN {ENDED}"
    nodes = f"SELECT id FROM workflow_node_executions WHERE workflow_run_id IN ({runs})"
    pauses = f"SELECT id FROM workflow_pauses WHERE workflow_run_id IN ({runs})"
    statements = [
        f"DELETE FROM workflow_node_execution_offload WHERE node_execution_id IN ({nodes})",
        f"DELETE FROM workflow_node_executions WHERE workflow_run_id IN ({runs})",
        f"DELETE FROM workflow_app_logs WHERE workflow_run_id IN ({runs})",
        f"DELETE FROM workflow_pause_reasons WHERE pause_id IN ({pauses})",
        f"DELETE FROM workflow_pauses WHERE workflow_run_id IN ({runs})",
        f"DELETE FROM workflow_trigger_logs WHERE workflow_run_id IN ({runs})",
        f"DELETE FROM workflow_runs WHERE created_at < :cut AND status IN {ENDED}",
    ]
    with conn.begin():
        for statement in statements:
            conn.execute(sa.text(statement), {"cut": cutoff})


def floor_messages_mysql(conn: Connection, cutoff: datetime, _timer: Timer) -> None:
    """MySQL's set-based floor: a multi-table DELETE joined to the doomed parents, one per table."""
    with conn.begin():
        for child in MESSAGE_CHILDREN:
            conn.execute(
                sa.text(f"DELETE c FROM {child} c JOIN messages m ON c.message_id = m.id WHERE m.created_at < :cut"),
                {"cut": cutoff},
            )
        conn.execute(sa.text("DELETE FROM messages WHERE created_at < :cut"), {"cut": cutoff})


def floor_runs_mysql(conn: Connection, cutoff: datetime, _timer: Timer) -> None:
    runs = f"JOIN workflow_runs r ON {{}} = r.id WHERE r.created_at < :cut AND r.status IN {ENDED}"
    statements = [
        "DELETE o FROM workflow_node_execution_offload o JOIN workflow_node_executions n "
        "ON o.node_execution_id = n.id " + runs.format("n.workflow_run_id"),
        "DELETE n FROM workflow_node_executions n " + runs.format("n.workflow_run_id"),
        "DELETE l FROM workflow_app_logs l " + runs.format("l.workflow_run_id"),
        "DELETE pr FROM workflow_pause_reasons pr JOIN workflow_pauses p ON pr.pause_id = p.id "
        + runs.format("p.workflow_run_id"),
        "DELETE p FROM workflow_pauses p " + runs.format("p.workflow_run_id"),
        "DELETE tl FROM workflow_trigger_logs tl " + runs.format("tl.workflow_run_id"),
        f"DELETE FROM workflow_runs WHERE created_at < :cut AND status IN {ENDED}",
    ]
    with conn.begin():
        for statement in statements:
            conn.execute(sa.text(statement), {"cut": cutoff})


def floor_embeddings(conn: Connection, cutoff: datetime, _timer: Timer) -> None:
    with conn.begin():
        conn.execute(sa.text("DELETE FROM embeddings WHERE created_at < :cut"), {"cut": cutoff})


def floor_dataset_queries(conn: Connection, cutoff: datetime, _timer: Timer) -> None:
    with conn.begin():
        conn.execute(sa.text("DELETE FROM dataset_queries WHERE created_at < :cut"), {"cut": cutoff})


def in_list(statement: str) -> sa.TextClause:
    return sa.text(statement).bindparams(sa.bindparam("ids", expanding=True))


def dify_messages(sleep_ms: int) -> Callable[[Connection, datetime, Timer], None]:
    """MessagesCleanService, billing off: keyset page of 1000, the apps look-up, per-table IN deletes."""

    def run(conn: Connection, cutoff: datetime, timer: Timer) -> None:
        cursor: tuple[Any, Any] | None = None
        while True:
            started = time.perf_counter()
            with conn.begin():
                where = "created_at < :cut" + (" AND (created_at, id) > (:c_ts, :c_id)" if cursor else "")
                params: dict[str, Any] = {"cut": cutoff}
                if cursor:
                    params.update(c_ts=cursor[0], c_id=cursor[1])
                rows = conn.execute(
                    sa.text(
                        f"SELECT id, app_id, created_at FROM messages WHERE {where} ORDER BY created_at, id LIMIT 1000"
                    ),
                    params,
                ).all()
                if not rows:
                    return
                cursor = (rows[-1].created_at, rows[-1].id)
                apps = sorted({str(row.app_id) for row in rows})
                conn.execute(in_list("SELECT id, tenant_id FROM apps WHERE id IN :ids"), {"ids": apps}).all()
            ids = [str(row.id) for row in rows]
            with conn.begin():
                for child in MESSAGE_CHILDREN:
                    conn.execute(in_list(f"DELETE FROM {child} WHERE message_id IN :ids"), {"ids": ids})
                conn.execute(in_list("DELETE FROM messages WHERE id IN :ids"), {"ids": ids})
            timer.batches.append(time.perf_counter() - started)
            if sleep_ms:
                time.sleep(random.uniform(0, sleep_ms) / 1000)

    return run


def dify_runs(sleep_ms: int) -> Callable[[Connection, datetime, Timer], None]:
    """WorkflowRunCleanup, billing off: keyset page of full run rows, delete_runs_with_related, pause."""

    def run(conn: Connection, cutoff: datetime, timer: Timer) -> None:
        cursor: tuple[Any, Any] | None = None
        while True:
            started = time.perf_counter()
            with conn.begin():
                where = f"created_at < :cut AND status IN {ENDED}"
                params: dict[str, Any] = {"cut": cutoff}
                if cursor:
                    where += " AND (created_at, id) > (:c_ts, :c_id)"
                    params.update(c_ts=cursor[0], c_id=cursor[1])
                rows = conn.execute(
                    sa.text(f"SELECT * FROM workflow_runs WHERE {where} ORDER BY created_at, id LIMIT 1000"), params
                ).all()
            if not rows:
                return
            cursor = (rows[-1].created_at, rows[-1].id)
            ids = [str(row.id) for row in rows]
            with conn.begin():
                conn.execute(
                    in_list(
                        "DELETE FROM workflow_node_execution_offload WHERE node_execution_id IN "
                        "(SELECT id FROM workflow_node_executions WHERE workflow_run_id IN :ids)"
                    ),
                    {"ids": ids},
                )
                conn.execute(
                    in_list("DELETE FROM workflow_node_executions WHERE workflow_run_id IN :ids"), {"ids": ids}
                )
                conn.execute(in_list("DELETE FROM workflow_app_logs WHERE workflow_run_id IN :ids"), {"ids": ids})
                pauses = [
                    str(r[0])
                    for r in conn.execute(
                        in_list("SELECT id FROM workflow_pauses WHERE workflow_run_id IN :ids"), {"ids": ids}
                    )
                ]
                if pauses:
                    conn.execute(in_list("DELETE FROM workflow_pause_reasons WHERE pause_id IN :ids"), {"ids": pauses})
                    conn.execute(in_list("DELETE FROM workflow_pauses WHERE id IN :ids"), {"ids": pauses})
                conn.execute(in_list("DELETE FROM workflow_trigger_logs WHERE workflow_run_id IN :ids"), {"ids": ids})
                conn.execute(in_list("DELETE FROM workflow_runs WHERE id IN :ids"), {"ids": ids})
            timer.batches.append(time.perf_counter() - started)
            if sleep_ms:
                time.sleep(random.uniform(0, sleep_ms) / 1000)

    return run


def dify_embeddings(conn: Connection, cutoff: datetime, timer: Timer) -> None:
    """clean_embedding_cache_task: 100 ids newest first, then one DELETE per id, commit."""
    while True:
        started = time.perf_counter()
        with conn.begin():
            ids = [
                str(r[0])
                for r in conn.execute(
                    sa.text("SELECT id FROM embeddings WHERE created_at < :cut ORDER BY created_at DESC LIMIT 100"),
                    {"cut": cutoff},
                )
            ]
            if not ids:
                return
            for one in ids:
                conn.execute(sa.text("DELETE FROM embeddings WHERE id = :id"), {"id": one})
        timer.batches.append(time.perf_counter() - started)


def dify_dataset_queries(conn: Connection, cutoff: datetime, timer: Timer) -> None:
    """clean_dataset_queries_task: 500 ids (no order), one DELETE … IN, commit; until none is left."""
    while True:
        started = time.perf_counter()
        with conn.begin():
            ids = [
                str(r[0])
                for r in conn.execute(
                    sa.text("SELECT id FROM dataset_queries WHERE created_at < :cut LIMIT 500"), {"cut": cutoff}
                )
            ]
            if not ids:
                return
            conn.execute(in_list("DELETE FROM dataset_queries WHERE id IN :ids"), {"ids": ids})
        timer.batches.append(time.perf_counter() - started)


JOBS: dict[str, dict[str, Any]] = {
    "clean-messages": {
        "tables": MESSAGE_TABLES,
        "floor": floor_messages,
        "dify": dify_messages(DIFY_SLEEP_MS),
        "dify-no-sleep": dify_messages(0),
    },
    "clean-workflow-runs": {
        "tables": RUN_TABLES,
        "floor": floor_runs,
        "dify": dify_runs(DIFY_SLEEP_MS),
        "dify-no-sleep": dify_runs(0),
    },
    "clean-embeddings": {"tables": ("embeddings",), "floor": floor_embeddings, "dify": dify_embeddings},
    "clean-dataset-queries": {
        "tables": ("dataset_queries",),
        "floor": floor_dataset_queries,
        "dify": dify_dataset_queries,
    },
}
# Jobs without --end-before: their window as a retention in days (the template leaves a gap at that cut-off).
WINDOW_ARGS = {"clean-dataset-queries": ["--days", str(DAYS)]}
NO_PAUSE = ("clean-embeddings", "clean-dataset-queries")  # no pause by default: difymaint-sleep0 is difymaint
DIFYMAINT = {
    "difymaint": [],
    "difymaint-sleep0": ["--sleep-ms", "0"],
    "difymaint-workers2": ["--sleep-ms", "0", "--workers", "2"],
}
# --busy: the defaults as they run beside Dify's traffic (docs/batching.md#pacing-and-full-speed).
BUSY = {
    "difymaint-busy": {"DIFYMAINT_TARGET_BATCH_MS": str(Settings.model_fields["DIFYMAINT_SHARED_BATCH_MS"].default)}
}


# --- harness ---------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, pg_url: str, tag: str) -> None:
        self.base = make_url(pg_url)
        self.mysql = self.base.get_backend_name() in ("mysql", "mariadb")
        if self.base.drivername in ("postgresql", "postgres"):
            self.base = self.base.set(drivername="postgresql+psycopg2")  # the driver difymaint installs
        if self.mysql:
            self.base = self.base.set(drivername="mysql+pymysql")  # Dify's driver, and difymaint's
        self.admin = sa.create_engine(self.base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.template = f"dmbench_tpl_{tag}"
        self.copy = f"dmbench_run_{tag}"
        self._copied = False
        self.purge_floor = 0  # MySQL: the history list length counted as caught up (see wait_for_purge)

    def url(self, database: str) -> str:
        return self.base.set(database=database).render_as_string(hide_password=False)

    def sql(self, statement: str) -> Any:
        with self.admin.connect() as conn:
            result = conn.execute(sa.text(statement))
            return result.scalar() if result.returns_rows else None

    def fresh_copy(self) -> Engine:
        if self.mysql:
            return self._fresh_copy_mysql()
        self.sql(f"DROP DATABASE IF EXISTS {self.copy} WITH (FORCE)")
        self.sql(f"CREATE DATABASE {self.copy} TEMPLATE {self.template}")
        engine = sa.create_engine(self.url(self.copy), poolclass=sa.pool.NullPool)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("CHECKPOINT"))
        return engine

    def _fresh_copy_mysql(self) -> Engine:
        """No template databases on MySQL: the copy's tables are created once (CREATE TABLE … LIKE), then
        emptied and refilled from the template for each contender (TRUNCATE, INSERT … SELECT)."""
        statements = []
        if not self._copied:
            statements += [f"DROP DATABASE IF EXISTS {self.copy}", f"CREATE DATABASE {self.copy}"]
            statements += [
                f"CREATE TABLE {self.copy}.`{table.name}` LIKE {self.template}.`{table.name}`"
                for table in metadata.sorted_tables
            ]
            self._copied = True
        for name in POPULATED:
            statements.append(f"TRUNCATE TABLE {self.copy}.`{name}`")
            statements.append(f"INSERT INTO {self.copy}.`{name}` SELECT * FROM {self.template}.`{name}`")
        with self.admin.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
            conn.execute(sa.text(f"ANALYZE TABLE {', '.join(f'{self.copy}.`{name}`' for name in POPULATED)}")).all()
        return sa.create_engine(self.url(self.copy), poolclass=sa.pool.NullPool)

    def counts(self, engine: Engine, tables: tuple[str, ...]) -> dict[str, int]:
        with engine.connect() as conn:
            return {name: int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()) for name in tables}

    def wal_lsn(self) -> str:
        if self.mysql:
            return str(self.sql(_REDO_WRITTEN))
        return str(self.sql("SELECT pg_current_wal_lsn()"))

    def wal_since(self, lsn: str) -> int:
        if self.mysql:
            return int(self.sql(_REDO_WRITTEN)) - int(lsn)
        return int(self.sql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')"))

    def version(self) -> str:
        return str(self.sql("SELECT VERSION()" if self.mysql else "SHOW server_version"))

    def purge_history(self) -> int:
        """InnoDB's history list length: the transactions whose undo its purge has still to process."""
        return int(self.sql(_HISTORY_LENGTH))

    def purged_records(self) -> int:
        """How many delete-marked records InnoDB's purge has removed so far (a counter :meth:`settle_purge`
        turns on)."""
        return int(self.sql(_PURGED_RECORDS))

    def settle_purge(self, slack: int = 50, timeout_s: float = 120.0) -> None:
        """Turn on the purge's record counter, then take the caught-up level of the history list once the
        template's own purge has stopped falling (a server doing nothing else keeps a small residue)."""
        self.sql("SET GLOBAL innodb_monitor_enable = 'purge_del_mark_records'")
        deadline = time.perf_counter() + timeout_s
        level = self.purge_history()
        while time.perf_counter() < deadline:
            time.sleep(1.0)
            now = self.purge_history()
            if now >= level:
                break
            level = now
        self.purge_floor = level + slack

    def wait_for_purge(
        self, *, records: int = 0, since: float | None = None, quiet_s: float = 0.5, timeout_s: float = 300.0
    ) -> float:
        """Wait until InnoDB's purge has caught up; returns how long it went on after ``since`` (a
        ``perf_counter`` time, by default the call). InnoDB deletes by delete-marking and purges the rows after
        the commit, on the same CPUs: a batched contender pays for the purge of its earlier batches during its
        later ones, a single transaction leaves all of it for after. Counting the purge each leaves behind
        makes them comparable.

        Caught up: the purge's record counter has reached ``records`` (the counter's value once every row a
        contender deleted is purged), the history list is back to its level at the start, and no record was
        purged for ``quiet_s``. The history list counts transactions, not rows: one large transaction (the
        floor) is a single entry while its purge takes seconds, and the purge may start a second or two after
        its commit, so the count of rows deleted is what says the purge is not done yet."""
        started = time.perf_counter()
        since = started if since is None else since
        last_count, last_change, changed = self.purged_records(), started, False
        while time.perf_counter() - started < timeout_s:
            time.sleep(0.05)
            count = self.purged_records()
            if count != last_count:
                last_count, last_change, changed = count, time.perf_counter(), True
            elif (
                count >= records
                and time.perf_counter() - last_change >= quiet_s
                and self.purge_history() <= self.purge_floor
            ):
                break
        return max(0.0, last_change - since) if changed else 0.0

    def create_template(self) -> None:
        if self.mysql:
            self.sql(f"DROP DATABASE IF EXISTS {self.template}")
        else:
            self.sql(f"DROP DATABASE IF EXISTS {self.template} WITH (FORCE)")
        self.sql(f"CREATE DATABASE {self.template}")

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The contenders; on MySQL the floor is its multi-table DELETE."""
        if not self.mysql:
            return JOBS
        jobs = {name: dict(spec) for name, spec in JOBS.items()}
        jobs["clean-messages"]["floor"] = floor_messages_mysql
        jobs["clean-workflow-runs"]["floor"] = floor_runs_mysql
        return jobs

    def cleanup(self) -> None:
        for name in (self.copy, self.template):
            self.sql(f"DROP DATABASE IF EXISTS {name}" + ("" if self.mysql else " WITH (FORCE)"))
        self.admin.dispose()


_HISTORY_LENGTH = "SELECT count FROM information_schema.INNODB_METRICS WHERE name = 'trx_rseg_history_len'"
_PURGED_RECORDS = "SELECT count FROM information_schema.INNODB_METRICS WHERE name = 'purge_del_mark_records'"
_REDO_WRITTEN = (
    "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'Innodb_os_log_written'"
)


def cli(
    job: str, url: str, cutoff: datetime, extra: list[str], env_extra: dict[str, str] | None = None
) -> tuple[dict[str, Any], float, float]:
    """Run the difymaint CLI; returns its JSON summary, its wall time and its peak RSS in MB."""
    window = WINDOW_ARGS.get(job, ["--end-before", cutoff.strftime("%Y-%m-%d")])
    command = [sys.executable, "-m", "difymaint", job, *window, "--yes"]
    command += ["--json", "-q", "--database-url", url, *extra]
    env = {**os.environ, "DIFYMAINT_USE_REDIS": "false", "BILLING_ENABLED": "false", "NO_COLOR": "1"}
    env.update(env_extra or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        # wait4 gives this child's own peak RSS (KB on Linux), not the maximum over every child so far.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode not in (0, 4):  # 4: partial (a budget such as --max-batches ran out)
        raise SystemExit(f"bench: {job} {' '.join(extra)} failed ({process.returncode}): {stderr[-500:]}")
    return json.loads(stdout.strip().splitlines()[-1]), wall, usage.ru_maxrss / 1024


def measure(bench: Bench, job: str, contender: str, cutoff: datetime) -> Result:
    spec = bench.jobs()[job]
    tables: tuple[str, ...] = spec["tables"]
    engine = bench.fresh_copy()
    before = bench.counts(engine, tables)
    purged_before = 0
    if bench.mysql:
        bench.wait_for_purge()  # the previous contender's purge is not this one's
        purged_before = bench.purged_records()
    lsn = bench.wal_lsn()
    result: Result
    if contender in DIFYMAINT or contender in BUSY:
        summary, wall, rss = cli(job, bench.url(bench.copy), cutoff, DIFYMAINT.get(contender, []), BUSY.get(contender))
        result = Result(job, contender, summary["duration_s"], 0, {}, summary["batches"])
        result.batch_ms = summary["details"].get("batch_ms", {})
        result.peak_rss_mb = round(rss, 1)
        result.ratios["cli_wall_s"] = round(wall, 2)
    else:
        timer = Timer()
        with engine.connect() as conn:
            started = time.perf_counter()
            spec[contender](conn, cutoff, timer)
            wall = time.perf_counter() - started
        result = Result(job, contender, wall, 0, {}, len(timer.batches), timer.summary())
    ended = time.perf_counter()
    after = bench.counts(engine, tables)
    result.deleted = {name: before[name] - after[name] for name in tables}
    result.rows = sum(result.deleted.values())
    if bench.mysql:  # every deleted row is one delete-marked record to purge (a little slack for rounding)
        purged = purged_before + int(result.rows * 0.95)
        result.purge_s = round(bench.wait_for_purge(records=purged, since=ended), 2)
    result.wal_bytes = bench.wal_since(lsn)
    engine.dispose()
    return result


def dry_run_vs_count(bench: Bench, cutoff: datetime, repeat: int = 3) -> dict[str, Any]:
    """clean-messages --dry-run against one count(*) per table with the same predicates; the median of
    ``repeat`` alternating runs of each (a dry run writes nothing, so one copy serves them all)."""
    engine = bench.fresh_copy()
    doomed = "SELECT id FROM messages WHERE created_at < :cut"
    counts = [f"SELECT count(*) FROM {child} WHERE message_id IN ({doomed})" for child in MESSAGE_CHILDREN]
    counts.append("SELECT count(*) FROM messages WHERE created_at < :cut")
    count_times, dry_times, walls = [], [], []
    total = 0
    summary: dict[str, Any] = {}
    for _ in range(repeat):
        with engine.connect() as conn:
            started = time.perf_counter()
            total = sum(int(conn.execute(sa.text(q), {"cut": cutoff}).scalar_one()) for q in counts)
            count_times.append(time.perf_counter() - started)
        summary, wall, _ = cli("clean-messages", bench.url(bench.copy), cutoff, ["--dry-run"])
        dry_times.append(float(summary["duration_s"]))
        walls.append(wall)
    engine.dispose()
    count_s, dry_s = statistics.median(count_times), statistics.median(dry_times)
    return {
        "count_s": round(count_s, 3),
        "count_rows": total,
        "dry_run_s": round(dry_s, 3),
        "dry_run_cli_wall_s": round(statistics.median(walls), 2),
        "dry_run_rows": summary["rows_total"],
        "ratio": round(dry_s / count_s, 2) if count_s else None,
        "repeat": repeat,
    }


def with_ratios(results: list[Result]) -> None:
    by_name = {r.contender: r for r in results}
    for result in results:
        for base in ("dify", "dify-no-sleep", "floor"):
            other = by_name.get(base)
            if other is not None and other.rows_per_s:
                result.ratios[f"vs_{base}"] = round(result.rows_per_s / other.rows_per_s, 2)


def print_table(job: str, results: list[Result]) -> None:
    print(f"\n{job}: {results[0].rows:,} rows deleted by every contender")
    purged = any(r.purge_s for r in results)  # MySQL: rows/s counts the purge each contender left behind
    header = f"{'contender':<20}{'wall s':>8}" + (f"{'purge s':>8}" if purged else "")
    header += f"{'rows/s':>10}{'÷dify':>7}{'÷dify0':>7}{'÷floor':>7}"
    print(header + f"{'batches':>8}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}{'RSS MB':>8}{'WAL MB':>8}")
    for r in results:
        purge = f"{r.purge_s:>8.2f}" if purged else ""
        ratio = [f"{r.ratios.get(k, float('nan')):>7.2f}" for k in ("vs_dify", "vs_dify-no-sleep", "vs_floor")]
        rss = f"{r.peak_rss_mb:>8.0f}" if r.peak_rss_mb is not None else f"{'':>8}"
        wal = f"{(r.wal_bytes or 0) / 2**20:>8.0f}"
        ms = [f"{r.batch_ms.get(k, float('nan')):>8.0f}" for k in ("p50", "p95", "max")]
        print(
            f"{r.contender:<20}{r.wall_s:>8.2f}{purge}{r.rows_per_s:>10,.0f}{''.join(ratio)}{r.batches:>8}{''.join(ms)}"
            f"{rss}{wal}"
        )


def _drop_index_sql(index: str, *, mysql: bool) -> str:
    if not mysql:
        return f'DROP INDEX "{index}"'
    table = next((t.name for t in metadata.sorted_tables for i in t.indexes if i.name == index), None)
    if table is None:
        raise SystemExit(f"bench: no index {index!r} in the template")
    return f"DROP INDEX `{index}` ON `{table}`"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--pg-url", help="a PostgreSQL you may create databases on")
    target.add_argument("--mysql-url", help="a MySQL/MariaDB you may create databases on (Dify's DB_TYPE=mysql)")
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=None, help="workflow runs (default: messages / 5)")
    parser.add_argument("--embeddings", type=int, default=None, help="embedding rows (default: messages / 3)")
    parser.add_argument(
        "--history-days",
        type=int,
        default=90,
        help="days the rows are spread over (the cut-off is 30 days; 31 = one night's share of a daily job)",
    )
    parser.add_argument("--dataset-queries", type=int, default=None, help="dataset_queries rows (default: messages)")
    parser.add_argument(
        "--drop-index",
        action="append",
        default=[],
        metavar="NAME",
        help="drop this index from the template (e.g. dataset_query_created_at_idx, absent in released Dify)",
    )
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated subset of " + ", ".join(JOBS))
    parser.add_argument(
        "--busy",
        action="store_true",
        help="also time the defaults at the batch length they aim at beside Dify's traffic",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--keep", action="store_true", help="keep the template database")
    args = parser.parse_args(argv)
    if args.busy and args.mysql_url:
        parser.error("--busy is PostgreSQL's: on MySQL the batches never aim at the shared target")
    if args.history_days <= DAYS:
        parser.error(f"--history-days must be more than the {DAYS}-day cut-off, or nothing is old enough to delete")
    runs = args.runs if args.runs is not None else max(10, args.messages // 5)
    embeddings = args.embeddings if args.embeddings is not None else max(10, args.messages // 3)
    dataset_queries = args.dataset_queries if args.dataset_queries is not None else max(10, args.messages)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    cutoff = (now - timedelta(days=DAYS)).replace(hour=0, minute=0, second=0)
    bench = Bench(args.pg_url or args.mysql_url, f"{os.getpid()}")
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "postgres": None, "mysql": None},
        "scale": {
            "messages": args.messages,
            "runs": runs,
            "embeddings": embeddings,
            "dataset_queries": dataset_queries,
            "history_days": args.history_days,
            "dropped_indexes": args.drop_index,
        },
        "jobs": {},
    }
    try:
        report["machine"]["mysql" if bench.mysql else "postgres"] = bench.version()
        bench.create_template()
        started = time.perf_counter()
        template = sa.create_engine(bench.url(bench.template), poolclass=sa.pool.NullPool)
        build = build_template_mysql if bench.mysql else build_template
        build(
            template,
            messages=args.messages,
            runs=runs,
            embeddings=embeddings,
            now=now,
            history_days=args.history_days,
            dataset_queries=dataset_queries,
        )
        with template.begin() as conn:
            for index in args.drop_index:
                conn.execute(sa.text(_drop_index_sql(index, mysql=bench.mysql)))
        template.dispose()
        if bench.mysql:
            bench.settle_purge()
            report["purge_floor"] = bench.purge_floor
        report["build_s"] = round(time.perf_counter() - started, 1)
        if not args.json:
            print(f"template built in {report['build_s']} s: {report['scale']}; cut-off {cutoff:%Y-%m-%d}")
        mismatched = []
        for job in [name.strip() for name in args.jobs.split(",") if name.strip()]:
            contenders = [name for name in bench.jobs()[job] if name != "tables"] + list(DIFYMAINT)
            if args.busy:
                contenders += list(BUSY)
            if job in NO_PAUSE:
                contenders.remove("difymaint-sleep0")  # no pause by default: the same as "difymaint"
            results = [measure(bench, job, contender, cutoff) for contender in contenders]
            with_ratios(results)
            if any(r.deleted != results[0].deleted for r in results):
                mismatched.append(job)
            report["jobs"][job] = [asdict(r) | {"rows_per_s": round(r.rows_per_s)} for r in results]
            if not args.json:
                print_table(job, results)
        if "clean-messages" in args.jobs:
            report["dry_run"] = dry_run_vs_count(bench, cutoff)
            if not args.json:
                d = report["dry_run"]
                print(
                    f"\nclean-messages --dry-run: {d['dry_run_s']} s for {d['dry_run_rows']:,} rows; one count(*) per "
                    f"table: {d['count_s']} s ({d['count_rows']:,} rows); ratio {d['ratio']}"
                )
        report["same_rows"] = not mismatched
        if args.json:
            print(json.dumps(report, default=str))
        if mismatched:
            print(f"bench: contenders deleted different rows in {', '.join(mismatched)}", file=sys.stderr)
            return 1
        return 0
    finally:
        if not args.keep:
            bench.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
