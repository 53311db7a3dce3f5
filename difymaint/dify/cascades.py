"""Dify's deletion cascades, shared by every job that removes messages (spec §3.7) or runs (§3.6).

Every function runs inside the caller's transaction, so a batch is all-or-nothing. With
``dry_run=True`` the same predicates are counted instead of deleted, which is what makes dry-run counts
equal real deletions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from difymaint.core.database import delete_or_count, ids_in, ids_not_in
from difymaint.dify import tables as t

# Dify's order (spec §3.7): children first, so a crash leaves orphans, never dangling parents.
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
MESSAGE_CASCADE_TABLES: tuple[str, ...] = (*(table.name for table in MESSAGE_CHILDREN), "messages")
CONVERSATION_CASCADE_TABLES: tuple[str, ...] = (
    "pinned_conversations",
    "workflow_conversation_variables",
    "conversations",
)


def message_cascade(
    conn: Connection,
    message_ids: Sequence[str],
    *,
    dry_run: bool,
    skip_tables: set[str] | frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Delete messages and every per-message child row, in Dify's order."""
    dialect = conn.dialect.name
    counts: dict[str, int] = {}
    if not message_ids:
        return counts
    for child in MESSAGE_CHILDREN:
        if child.name in skip_tables:
            continue
        counts[child.name] = delete_or_count(
            conn, child, ids_in(child.c.message_id, message_ids, dialect), dry_run=dry_run
        )
    counts["messages"] = delete_or_count(
        conn, t.messages, ids_in(t.messages.c.id, message_ids, dialect), dry_run=dry_run
    )
    return counts


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
    counts = {name: 0 for name in CONVERSATION_CASCADE_TABLES if name not in skip_tables}
    if not candidates:
        return counts
    for table in (t.pinned_conversations, t.workflow_conversation_variables):
        if table.name in skip_tables:  # older Dify without the table
            continue
        counts[table.name] = delete_or_count(
            conn, table, ids_in(table.c.conversation_id, candidates, dialect), dry_run=dry_run
        )
    counts["conversations"] = delete_or_count(conn, conv, ids_in(conv.c.id, candidates, dialect), dry_run=dry_run)
    return counts


# --- workflow runs (spec §3.6) -----------------------------------------------------------------------------

# Only ended runs are ever deleted: running, paused and scheduled runs stay (Dify's selection, spec §3.6).
ENDED_RUN_STATUSES: tuple[str, ...] = ("succeeded", "failed", "partial-succeeded", "stopped")
# Dify's order in delete_runs_with_related: children first, the runs last.
WORKFLOW_RUN_CASCADE_TABLES: tuple[str, ...] = (
    "workflow_node_execution_offload",
    "workflow_node_executions",
    "workflow_app_logs",
    "workflow_pause_reasons",
    "workflow_pauses",
    "workflow_trigger_logs",
    "workflow_runs",
)
# Tables older Dify versions lack; a job skips their step with a warning.
OPTIONAL_WORKFLOW_RUN_TABLES: frozenset[str] = frozenset(
    {"workflow_node_execution_offload", "workflow_pause_reasons", "workflow_pauses", "workflow_trigger_logs"}
)


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
    """Delete workflow runs with every per-run row, in Dify's order (spec §3.6), in the caller's transaction.

    Offloads (through the runs' node executions), node executions, app logs, pause reasons and pauses,
    trigger logs, then the runs. Tables in ``skip_tables`` (absent in older Dify versions) are left out.
    """
    counts: dict[str, int] = {}
    if not run_ids:
        return counts
    dialect = conn.dialect.name
    nodes, off = t.workflow_node_executions, t.workflow_node_execution_offload
    if off.name not in skip_tables:
        counts[off.name] = delete_or_count(
            conn, off, off.c.node_execution_id.in_(_node_executions_of(run_ids, dialect)), dry_run=dry_run
        )
    counts[nodes.name] = delete_or_count(
        conn, nodes, ids_in(nodes.c.workflow_run_id, run_ids, dialect), dry_run=dry_run
    )
    logs = t.workflow_app_logs
    counts[logs.name] = delete_or_count(conn, logs, ids_in(logs.c.workflow_run_id, run_ids, dialect), dry_run=dry_run)
    pauses, reasons = t.workflow_pauses, t.workflow_pause_reasons
    if pauses.name not in skip_tables:
        pause_ids = [
            str(row[0])
            for row in conn.execute(sa.select(pauses.c.id).where(ids_in(pauses.c.workflow_run_id, run_ids, dialect)))
        ]
        if reasons.name not in skip_tables:
            counts[reasons.name] = (
                delete_or_count(conn, reasons, ids_in(reasons.c.pause_id, pause_ids, dialect), dry_run=dry_run)
                if pause_ids
                else 0
            )
        counts[pauses.name] = (
            delete_or_count(conn, pauses, ids_in(pauses.c.id, pause_ids, dialect), dry_run=dry_run) if pause_ids else 0
        )
    triggers = t.workflow_trigger_logs
    if triggers.name not in skip_tables:
        counts[triggers.name] = delete_or_count(
            conn, triggers, ids_in(triggers.c.workflow_run_id, run_ids, dialect), dry_run=dry_run
        )
    runs = t.workflow_runs
    counts[runs.name] = delete_or_count(conn, runs, ids_in(runs.c.id, run_ids, dialect), dry_run=dry_run)
    return counts


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

    No index leads with ``messages.workflow_run_id`` in Dify (data model §10): without
    ``message_workflow_run_id_only_idx`` this scans ``messages``.
    """
    if not run_ids:
        return []
    msg = t.messages
    rows = conn.execute(
        sa.select(msg.c.id, msg.c.conversation_id).where(ids_in(msg.c.workflow_run_id, run_ids, conn.dialect.name))
    )
    return [(str(row[0]), str(row[1])) for row in rows]


def delete_workflow_runs(
    conn: Connection,
    run_ids: Sequence[str],
    *,
    dry_run: bool,
    skip_tables: set[str] | frozenset[str] = frozenset(),
    with_messages: bool = False,
    conversations_updated_before: datetime | None = None,
    runs_passed: sa.ColumnElement[bool] | None = None,
    collect_orphans: bool = False,
) -> tuple[dict[str, int], dict[str, list[dict[str, Any]]]]:
    """One batch of runs in one transaction: (their messages, then conversations left empty,) then the runs.

    ``with_messages``: the runs' advanced-chat messages go with their child rows (message cascade), then
    the conversations that now have no message at all and were not updated since
    ``conversations_updated_before`` (a conversation that still has newer messages stays). In a dry run,
    ``runs_passed`` (a predicate over ``workflow_runs``) says which runs this job has covered so far, so
    a conversation counts once all its messages belong to such runs, as in a real run.

    Returns the per-table counts and, with ``collect_orphans``, the orphaned storage by source table.
    """
    counts: dict[str, int] = {}
    orphans: dict[str, list[dict[str, Any]]] = {}
    if not run_ids:
        return counts, orphans
    if collect_orphans:
        orphans.update(orphaned_run_storage(conn, run_ids, skip_tables=skip_tables))
    if with_messages:
        messages = run_messages(conn, run_ids)
        message_ids = [mid for mid, _ in messages]
        if collect_orphans:
            orphans["message_files"] = orphaned_upload_files(conn, message_ids)
        counts.update(dict.fromkeys((n for n in MESSAGE_CASCADE_TABLES if n not in skip_tables), 0))
        counts.update(message_cascade(conn, message_ids, dry_run=dry_run, skip_tables=skip_tables))
        if conversations_updated_before is not None:
            would_be_deleted = None
            if runs_passed is not None:
                run_id = t.messages.c.workflow_run_id
                # IS NOT NULL first: a message without a run must keep blocking (NOT (NULL IN …) is NULL).
                would_be_deleted = sa.and_(
                    run_id.is_not(None), run_id.in_(sa.select(t.workflow_runs.c.id).where(runs_passed))
                )
            emptied = empty_conversations(
                conn,
                sorted({cid for _, cid in messages}),
                updated_before=conversations_updated_before,
                dry_run=dry_run,
                would_be_deleted=would_be_deleted,
                skip_tables=skip_tables,
            )
            for name in CONVERSATION_CASCADE_TABLES:
                if name not in skip_tables:
                    counts[name] = emptied.get(name, 0)
    counts.update(workflow_run_cascade(conn, run_ids, dry_run=dry_run, skip_tables=skip_tables))
    return counts, orphans
