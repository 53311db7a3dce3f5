"""Dify's deletion cascades as data (engine/cascade.py), shared by every job that removes messages
(docs/dify-reference.md#message-cascade) or workflow runs (docs/dify-reference.md#workflow-run-cascade).

Every function runs inside the caller's transaction, so a batch is all-or-nothing. With
``dry_run=True`` the same predicates are counted instead of deleted, which is what makes dry-run counts
equal real deletions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.database import ids_in, ids_not_in
from difymaint.core.window import TimeWindow
from difymaint.dify import tables as t
from difymaint.engine.cascade import BatchResult, Cascade, Selection, Step
from difymaint.engine.keyset import in_window
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, SchemaReport

# Dify's order: children first, so a crash leaves orphans, never dangling parents.
MESSAGE_CHILDREN: tuple[sa.Table, ...] = (
    t.message_feedbacks,
    t.message_annotations,
    t.message_chains,
    t.message_agent_thoughts,
    t.message_files,
    t.saved_messages,
    t.app_annotation_hit_histories,
    t.dataset_retriever_resources,
)
MESSAGE_CASCADE = Cascade(
    (*(Step(child, "message_id", optional=True) for child in MESSAGE_CHILDREN), Step(t.messages, "id"))
)
MESSAGE_CASCADE_TABLES: tuple[str, ...] = tuple(MESSAGE_CASCADE.tables())
# A conversation goes only once it has no message left (see empty_conversations), with its pins and variables.
CONVERSATION_CASCADE = Cascade(
    (
        Step(t.pinned_conversations, "conversation_id", optional=True),
        Step(t.workflow_conversation_variables, "conversation_id", optional=True),
        Step(t.conversations, "id"),
    )
)
CONVERSATION_CASCADE_TABLES: tuple[str, ...] = tuple(CONVERSATION_CASCADE.tables())


def message_cascade(
    conn: Connection,
    message_ids: Sequence[str],
    *,
    dry_run: bool,
    skip_tables: set[str] | frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Delete messages and every per-message child row, in Dify's order."""
    return MESSAGE_CASCADE.delete(conn, message_ids, dry_run=dry_run, skip=skip_tables)


def orphaned_upload_files(conn: Connection, message_ids: Sequence[str]) -> list[dict[str, Any]]:
    """``upload_files`` rows that only these messages' files point at (call before deleting them).

    The objects in storage are not touched: the rows go to the orphan manifest for a storage sweeper.
    """
    if not message_ids:
        return []
    dialect = conn.dialect.name
    mine = t.message_files
    others = t.message_files.alias("other_files")
    uf = t.upload_files
    referenced = sa.select(mine.c.upload_file_id).where(
        ids_in(mine.c.message_id, message_ids, dialect), mine.c.upload_file_id.is_not(None)
    )
    still_used = sa.exists().where(
        others.c.upload_file_id == uf.c.id, ids_not_in(others.c.message_id, message_ids, dialect)
    )
    rows = conn.execute(
        sa.select(uf.c.id, uf.c.tenant_id, uf.c.storage_type, uf.c.key, uf.c.size)
        .where(uf.c.id.in_(referenced), ~still_used)
        .order_by(uf.c.id)
    )
    return [dict(row._mapping) for row in rows]


def empty_conversations(
    conn: Connection,
    conversation_ids: Sequence[str],
    *,
    updated_before: datetime,
    dry_run: bool,
    would_be_deleted: sa.ColumnElement[bool] | None = None,
    skip_tables: set[str] | frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Delete conversations that have no messages left and have not been touched since the cut-off.

    In a dry run nothing was deleted, so ``would_be_deleted`` (a predicate over ``messages``) says which
    messages this run has deleted so far; a conversation counts once all its messages satisfy it. That
    keeps dry-run counts equal to a real run even when a conversation's messages span batches.
    """
    if not conversation_ids:
        return {}
    dialect = conn.dialect.name
    conv, msg = t.conversations, t.messages
    blocking = msg.c.conversation_id == conv.c.id
    if dry_run and would_be_deleted is not None:
        blocking = sa.and_(blocking, sa.not_(would_be_deleted))
    candidates = [
        str(row[0])
        for row in conn.execute(
            sa.select(conv.c.id).where(
                ids_in(conv.c.id, conversation_ids, dialect),
                conv.c.updated_at < updated_before,
                ~sa.exists().where(blocking),
            )
        )
    ]
    counts = dict.fromkeys(CONVERSATION_CASCADE.tables(skip_tables), 0)
    counts.update(CONVERSATION_CASCADE.delete(conn, candidates, dry_run=dry_run, skip=skip_tables))
    return counts


# --- workflow runs (docs/dify-reference.md#workflow-run-cascade) ----------------------------------------

# Only ended runs are ever deleted: running, paused and scheduled runs stay (Dify's selection,
# docs/dify-reference.md#workflow-run-cascade).
ENDED_RUN_STATUSES: tuple[str, ...] = ("succeeded", "failed", "partial-succeeded", "stopped")
MESSAGE_INDEX_HINT = (
    "CREATE INDEX CONCURRENTLY message_workflow_run_id_only_idx ON messages (workflow_run_id) "
    "WHERE workflow_run_id IS NOT NULL"
)
# MySQL/MariaDB have no partial index; an in-place build keeps writes going (docs/mysql.md#indexes).
MYSQL_MESSAGE_INDEX_HINT = (
    "ALTER TABLE messages ADD INDEX message_workflow_run_id_only_idx (workflow_run_id), ALGORITHM=INPLACE, LOCK=NONE"
)


def ended_runs(window: TimeWindow) -> sa.ColumnElement[bool]:
    """Dify's batch predicate: runs in the window that have ended."""
    runs = t.workflow_runs
    return sa.and_(in_window(runs.c.created_at, window), runs.c.status.in_(ENDED_RUN_STATUSES))


# Dify's order in delete_runs_with_related: children first, the runs last. The offloads hang off the runs'
# node executions and the pause reasons off their pauses; four tables are missing in older Dify versions.
WORKFLOW_RUN_CASCADE = Cascade(
    (
        Step(
            t.workflow_node_execution_offload,
            "node_execution_id",
            parent="workflow_node_executions",
            optional=True,
        ),
        Step(t.workflow_node_executions, "workflow_run_id"),
        Step(t.workflow_app_logs, "workflow_run_id"),
        Step(t.workflow_pause_reasons, "pause_id", parent="workflow_pauses", optional=True),
        Step(t.workflow_pauses, "workflow_run_id", optional=True),
        Step(t.workflow_trigger_logs, "workflow_run_id", optional=True),
        Step(t.workflow_runs, "id"),
    )
)
WORKFLOW_RUN_CASCADE_TABLES: tuple[str, ...] = tuple(WORKFLOW_RUN_CASCADE.tables())


def _node_executions_of(run_ids: Sequence[str], dialect: str) -> sa.Select[Any]:
    nodes = t.workflow_node_executions
    return sa.select(nodes.c.id).where(ids_in(nodes.c.workflow_run_id, run_ids, dialect))


def workflow_run_cascade(
    conn: Connection,
    run_ids: Sequence[str],
    *,
    dry_run: bool,
    skip_tables: set[str] | frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Delete workflow runs with every per-run row, in Dify's order, in the caller's transaction."""
    return WORKFLOW_RUN_CASCADE.delete(conn, run_ids, dry_run=dry_run, skip=skip_tables)


def orphaned_run_storage(
    conn: Connection,
    run_ids: Sequence[str],
    *,
    skip_tables: set[str] | frozenset[str] = frozenset(),
) -> dict[str, list[dict[str, Any]]]:
    """Storage these runs leave unreferenced, by source table (call before deleting them).

    ``workflow_node_execution_offload``: the ``upload_files`` rows behind the runs' offloads that no other
    offload uses. ``workflow_pauses``: the pauses' ``state_object_key`` objects (no upload_files row).
    Nothing is deleted here or in storage: the rows go to the orphan manifest for a storage sweeper.
    """
    result: dict[str, list[dict[str, Any]]] = {}
    if not run_ids:
        return result
    dialect = conn.dialect.name
    off, uf, runs = t.workflow_node_execution_offload, t.upload_files, t.workflow_runs
    if off.name not in skip_tables:
        mine = _node_executions_of(run_ids, dialect)
        others = off.alias("other_offloads")
        referenced = sa.select(off.c.file_id).where(off.c.node_execution_id.in_(mine))
        still_used = sa.exists().where(
            others.c.file_id == uf.c.id,
            others.c.node_execution_id.is_not(None),
            others.c.node_execution_id.not_in(mine),
        )
        rows = conn.execute(
            sa.select(uf.c.id, uf.c.tenant_id, uf.c.storage_type, uf.c.key, uf.c.size)
            .where(uf.c.id.in_(referenced), ~still_used)
            .order_by(uf.c.id)
        )
        result[off.name] = [dict(row._mapping) for row in rows]
    pauses = t.workflow_pauses
    if pauses.name not in skip_tables:
        rows = conn.execute(
            sa.select(
                runs.c.tenant_id,
                pauses.c.state_object_key.label("key"),
                pauses.c.workflow_run_id,
                pauses.c.id.label("pause_id"),
            )
            .select_from(pauses.join(runs, runs.c.id == pauses.c.workflow_run_id))
            .where(ids_in(pauses.c.workflow_run_id, run_ids, dialect))
            .order_by(pauses.c.id)
        )
        result[pauses.name] = [dict(row._mapping) for row in rows]
    return result


def run_messages(conn: Connection, run_ids: Sequence[str]) -> list[tuple[str, str]]:
    """``(message id, conversation id)`` of the advanced-chat messages these runs produced.

    No index leads with ``messages.workflow_run_id`` in Dify (docs/dify-reference.md#indexes): without
    ``message_workflow_run_id_only_idx`` this scans ``messages``.
    """
    if not run_ids:
        return []
    msg = t.messages
    rows = conn.execute(
        sa.select(msg.c.id, msg.c.conversation_id).where(ids_in(msg.c.workflow_run_id, run_ids, conn.dialect.name))
    )
    return [(str(row[0]), str(row[1])) for row in rows]


@dataclass(frozen=True)
class RunCleanup:
    """How a job deletes a batch of workflow runs, decided once per run of the job.

    ``conversations_updated_before`` set: the runs' advanced-chat messages go too (message cascade), then the
    conversations left with no message at all and not updated since then (a conversation that still has
    newer messages stays). ``collect_orphans``: the storage the batch leaves unreferenced is returned for the
    orphan manifest.
    """

    skip_tables: frozenset[str] = frozenset()
    conversations_updated_before: datetime | None = None
    collect_orphans: bool = False

    @property
    def with_messages(self) -> bool:
        return self.conversations_updated_before is not None

    @staticmethod
    def needs(*, with_messages: bool, manifest: bool) -> list[Need]:
        """What the run cascade (and, with messages, the message and conversation cascades) needs."""
        result = [
            Need("workflow_runs", ("id", "tenant_id", "app_id", "workflow_id", "status", "created_at")),
            *WORKFLOW_RUN_CASCADE.needs(),
        ]
        if with_messages:
            result += [
                Need("messages", ("id", "conversation_id", "workflow_run_id")),
                *MESSAGE_CASCADE.needs(),
                Need("conversations", ("id", "updated_at")),
                *CONVERSATION_CASCADE.needs(),
            ]
        if manifest:
            result += [
                Need("upload_files", ("id", "tenant_id", "storage_type", "key", "size")),
                Need("workflow_node_execution_offload", ("file_id",), optional=True),
                Need("workflow_pauses", ("state_object_key",), optional=True),
            ]
            if with_messages:
                result.append(Need("message_files", ("message_id", "upload_file_id")))
        return result

    @staticmethod
    def skipped(schema: SchemaReport) -> frozenset[str]:
        """Missing optional tables, and the steps reached only through them (reasons through pauses)."""
        missing = set(schema.missing_optional)
        return frozenset(
            WORKFLOW_RUN_CASCADE.skipped(missing)
            | MESSAGE_CASCADE.skipped(missing)
            | CONVERSATION_CASCADE.skipped(missing)
        )

    def summary_tables(self) -> list[str]:
        """Summary order: the runs first (the progress line counts them), then the cascades."""
        names = WORKFLOW_RUN_CASCADE.summary_order(self.skip_tables)
        if self.with_messages:
            names += [*MESSAGE_CASCADE.tables(self.skip_tables), *CONVERSATION_CASCADE.tables(self.skip_tables)]
        return names

    def warn_preflight(self, job: JobRun, schema: SchemaReport) -> None:
        job.warn(*schema.warnings)
        job.warn_missing_indexes(
            [("workflow_node_executions", "workflow_run_id"), ("workflow_app_logs", "workflow_run_id")]
        )
        if self.with_messages:
            hint = MYSQL_MESSAGE_INDEX_HINT if job.ctx.engine.dialect.name == "mysql" else MESSAGE_INDEX_HINT
            job.warn_missing_indexes(
                [("messages", "workflow_run_id")],
                f"every batch scans messages (Dify has no such index); consider: {hint}",
            )

    @property
    def server_side(self) -> bool:
        """Whether a batch can be one server-side statement: nothing in it needs the run ids on the client
        (the manifest reads the runs' storage; with messages, the emptied conversations are found from them)."""
        return not self.collect_orphans and not self.with_messages

    def run_batch(self, conn: Connection, page: sa.Select[Any], *, dry_run: bool) -> BatchResult:
        """One batch of runs chosen by ``page``, deleted (or counted) in one statement (PostgreSQL)."""
        return WORKFLOW_RUN_CASCADE.run_batch(conn, page, dry_run=dry_run, skip=self.skip_tables)

    def count(self, conn: Connection, selection: sa.ColumnElement[bool]) -> dict[str, int]:
        """The set-based dry run of the runs ``selection`` matches (without messages)."""
        return WORKFLOW_RUN_CASCADE.count(conn, Selection(selection), skip=self.skip_tables)

    def delete(
        self,
        conn: Connection,
        run_ids: Sequence[str],
        *,
        dry_run: bool,
        runs_passed: sa.ColumnElement[bool] | None = None,
    ) -> tuple[dict[str, int], dict[str, list[dict[str, Any]]]]:
        """One batch of runs in the caller's transaction: (their messages and emptied conversations,) then
        the runs. In a dry run, ``runs_passed`` (a predicate over ``workflow_runs``) says which runs the job has
        covered so far, so a conversation counts once all its messages belong to such runs, as in a real run.
        Returns the per-table counts and the orphaned storage by source table."""
        counts: dict[str, int] = {}
        orphans: dict[str, list[dict[str, Any]]] = {}
        if not run_ids:
            return counts, orphans
        skip = self.skip_tables
        if self.collect_orphans:
            orphans.update(orphaned_run_storage(conn, run_ids, skip_tables=skip))
        if self.conversations_updated_before is not None:
            messages = run_messages(conn, run_ids)
            message_ids = [mid for mid, _ in messages]
            if self.collect_orphans:
                orphans["message_files"] = orphaned_upload_files(conn, message_ids)
            counts.update(dict.fromkeys(MESSAGE_CASCADE.tables(skip), 0))
            counts.update(MESSAGE_CASCADE.delete(conn, message_ids, dry_run=dry_run, skip=skip))
            would_be_deleted = None
            if runs_passed is not None:
                run_id = t.messages.c.workflow_run_id
                # IS NOT NULL first: a message without a run must keep blocking (NOT (NULL IN …) is NULL).
                would_be_deleted = sa.and_(
                    run_id.is_not(None), run_id.in_(sa.select(t.workflow_runs.c.id).where(runs_passed))
                )
            counts.update(
                empty_conversations(
                    conn,
                    sorted({cid for _, cid in messages}),
                    updated_before=self.conversations_updated_before,
                    dry_run=dry_run,
                    would_be_deleted=would_be_deleted,
                    skip_tables=skip,
                )
            )
        counts.update(WORKFLOW_RUN_CASCADE.delete(conn, run_ids, dry_run=dry_run, skip=skip))
        return counts, orphans
