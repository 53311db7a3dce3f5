"""Id filters (``--tenant-ids``, ``--app-ids``, ``--workflow-ids``, …) that can only ever narrow a run.

An empty filter must never mean "everything": ``--tenant-ids "$TENANT"`` with an unset variable would
otherwise clean every workspace. So a filter that was given but holds no id is a usage error, and every id
must be a UUID (Dify stores them as UUIDs), so a typo stops the run before it reaches the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from difymaint.core.errors import UsageError


def parse_ids(raw: str | Iterable[str] | None, option: str) -> tuple[str, ...] | None:
    """The ids of a comma-separated filter, in first-seen order, without duplicates.

    ``None`` (the option was not given) means "no filter". Anything else must hold at least one id.
    """
    if raw is None:
        return None
    parts = [raw] if isinstance(raw, str) else list(raw)
    ids: dict[str, None] = {}
    for part in parts:
        for piece in part.split(","):
            if value := piece.strip():
                ids[_canonical(value, option)] = None
    if not ids:
        raise UsageError(
            f"{option} was given but names no id",
            hint="an empty filter never means 'all'; omit the option to run without a filter",
        )
    return tuple(ids)


def parse_setting_ids(raw: str, option: str, *, explicitly_set: bool) -> tuple[str, ...] | None:
    """Like :func:`parse_ids` for a filter that also has a Dify setting (empty setting = no filter, as in
    Dify); a setting or flag that was set but parses to nothing (``","``, ``" "``) is still an error."""
    if not raw.strip() and not explicitly_set:
        return None
    return parse_ids(raw, option)


def _canonical(value: str, option: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise UsageError(f"{option}: {shown!r} is not an id", hint="ids are UUIDs, comma-separated") from None
