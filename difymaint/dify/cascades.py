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

from difymaint.core.database import ids_in, ids_not_in
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


def delete_or_count(conn: Connection, table: sa.Table, where: sa.ColumnElement[bool], *, dry_run: bool) -> int:
    """Delete the matching rows, or count them when ``dry_run`` (the same predicate either way)."""
    if dry_run:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())
    return int(conn.execute(sa.delete(table).where(where)).rowcount)


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
    counts = dict.fromkeys(CONVERSATION_CASCADE_TABLES, 0)
    if not candidates:
        return counts
    for table in (t.pinned_conversations, t.workflow_conversation_variables):
        counts[table.name] = delete_or_count(
            conn, table, ids_in(table.c.conversation_id, candidates, dialect), dry_run=dry_run
        )
    counts["conversations"] = delete_or_count(conn, conv, ids_in(conv.c.id, candidates, dialect), dry_run=dry_run)
    return counts
