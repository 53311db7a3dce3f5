"""Dify's workflow-run archive format (WorkflowRunArchiver, docs/dify-reference.md#archive-format), shared by archive
and restore.

One object per run at ``{tenant_id}/app_id={app_id}/year={YYYY}/month={MM}/workflow_run_id={run_id}/
archive.v1.0.zip``: a DEFLATE zip holding ``manifest.json`` and one ``{table}.jsonl`` per archived table.
The manifest is ``{schema_version: "1.0", workflow_run_id, tenant_id, app_id, workflow_id, created_at,
archived_at, tables: {name: {row_count, checksum, size_bytes}}}`` with ``checksum`` the MD5 hex of the JSONL
bytes. Dify's ``restore-workflow-runs`` reads these bundles, and difymaint's restore reads Dify's.

Rows are whole rows of the *live* table (reflected, not our partial declarations), so an archive holds every
column Dify has. Each JSONL line is stable JSON (sorted keys, compact, UTF-8, datetimes ISO 8601, uuids as
strings), so the same rows always give the same bytes and checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from difymaint.core.clock import naive_utc
from difymaint.core.errors import DifymaintError
from difymaint.dify.tables import UUIDStr

ARCHIVE_SCHEMA_VERSION = "1.0"
ARCHIVE_BUNDLE_NAME = f"archive.v{ARCHIVE_SCHEMA_VERSION}.zip"
MANIFEST_NAME = "manifest.json"
# Dify's ARCHIVED_TABLES, in its order (also the bundle's member order and the restore order).
ARCHIVED_TABLES: tuple[str, ...] = (
    "workflow_runs",
    "workflow_app_logs",
    "workflow_node_executions",
    "workflow_node_execution_offload",
    "workflow_pauses",
    "workflow_pause_reasons",
    "workflow_trigger_logs",
)
# Dify's ARCHIVED_TYPE: chat (advanced-chat) runs are never archived.
ARCHIVED_RUN_TYPES: tuple[str, ...] = ("workflow", "rag-pipeline")


class ArchiveInvalid(DifymaintError):
    """An archive bundle that cannot be trusted: unreadable zip, bad manifest, checksum mismatch."""

    reference = "archive-invalid"


def archive_key(tenant_id: str, app_id: str, created_at: datetime, run_id: str) -> str:
    """Dify's key layout (year and month of the run's ``created_at``)."""
    return (
        f"{tenant_id}/app_id={app_id}/year={created_at:%Y}/month={created_at:%m}/"
        f"workflow_run_id={run_id}/{ARCHIVE_BUNDLE_NAME}"
    )


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # Dify's checksum: integrity, not security


# --- rows ↔ JSONL -------------------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        raise TypeError("binary columns cannot be archived as JSON")
    raise TypeError(f"cannot archive a {type(value).__name__} value")


def to_jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """One stable JSON object per line, a newline after each (empty bytes for no rows), as Dify writes them."""
    lines = [
        json.dumps(dict(row), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_value)
        for row in rows
    ]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def from_jsonl(data: bytes) -> list[dict[str, Any]]:
    records = []
    for line in data.splitlines():
        if line.strip():
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("a JSONL line is not an object")
            records.append(record)
    return records


# --- bundles ------------------------------------------------------------------------------------------------


def build_bundle(
    run: Mapping[str, Any], tables: Mapping[str, Sequence[Mapping[str, Any]]], archived_at: datetime
) -> bytes:
    """The zip for one run: Dify's manifest (indent 2, its key order) then every table's JSONL."""
    payloads = {name: to_jsonl(tables.get(name, ())) for name in ARCHIVED_TABLES}
    created_at: datetime = run["created_at"]
    manifest = {
        "schema_version": ARCHIVE_SCHEMA_VERSION,
        "workflow_run_id": str(run["id"]),
        "tenant_id": str(run["tenant_id"]),
        "app_id": str(run["app_id"]),
        "workflow_id": str(run["workflow_id"]),
        "created_at": created_at.isoformat(),
        "archived_at": archived_at.isoformat(),
        "tables": {
            name: {
                "row_count": len(tables.get(name, ())),
                "checksum": md5_hex(payload),
                "size_bytes": len(payload),
            }
            for name, payload in payloads.items()
        },
    }
    stamp = naive_utc(archived_at).timetuple()[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        members = [(MANIFEST_NAME, json.dumps(manifest, indent=2, default=str).encode("utf-8"))]
        members += [(f"{name}.jsonl", payload) for name, payload in payloads.items()]
        for member, data in members:
            info = zipfile.ZipInfo(member, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


@dataclass
class Bundle:
    manifest: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    unknown_tables: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("workflow_run_id", ""))


def read_bundle(data: bytes) -> Bundle:
    """Open and verify a bundle: every table file must match the manifest's MD5, size and row count.

    Raises :class:`ArchiveInvalid` naming the first problem; nothing of a bundle that fails is returned.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ArchiveInvalid(f"not a readable zip archive ({exc})") from None
    with archive:
        try:
            manifest = json.loads(archive.read(MANIFEST_NAME))
        except KeyError:
            raise ArchiveInvalid(f"{MANIFEST_NAME} is missing") from None
        except (ValueError, zipfile.BadZipFile) as exc:
            raise ArchiveInvalid(f"{MANIFEST_NAME} is unreadable ({exc})") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("tables"), dict):
            raise ArchiveInvalid(f"{MANIFEST_NAME} has no tables object")
        version = str(manifest.get("schema_version") or ARCHIVE_SCHEMA_VERSION)
        if version != ARCHIVE_SCHEMA_VERSION:
            raise ArchiveInvalid(f"unsupported schema_version {version!r} (this difymaint reads 1.0)")
        bundle = Bundle(manifest=manifest)
        names = set(archive.namelist())
        for table, info in manifest["tables"].items():
            if table not in ARCHIVED_TABLES:
                bundle.unknown_tables.append(table)
                continue
            if not isinstance(info, dict):
                raise ArchiveInvalid(f"{MANIFEST_NAME}: bad entry for {table}")
            expected_rows = int(info.get("row_count") or 0)
            member = f"{table}.jsonl"
            if member not in names:
                if expected_rows:
                    raise ArchiveInvalid(f"{member} is missing but the manifest lists {expected_rows} rows")
                bundle.tables[table] = []
                continue
            try:
                payload = archive.read(member)
            except (zipfile.BadZipFile, OSError) as exc:  # a damaged member fails its CRC check
                raise ArchiveInvalid(f"{member} is unreadable ({exc})") from None
            checksum = str(info.get("checksum") or "")
            if checksum and md5_hex(payload) != checksum:
                raise ArchiveInvalid(f"{member}: MD5 {md5_hex(payload)} does not match the manifest's {checksum}")
            if "size_bytes" in info and int(info["size_bytes"]) != len(payload):
                raise ArchiveInvalid(f"{member}: {len(payload)} bytes, the manifest says {info['size_bytes']}")
            try:
                records = from_jsonl(payload)
            except ValueError as exc:
                raise ArchiveInvalid(f"{member} is not JSON lines ({exc})") from None
            if len(records) != expected_rows:
                raise ArchiveInvalid(f"{member}: {len(records)} rows, the manifest says {expected_rows}")
            bundle.tables[table] = records
    return bundle


# --- the live tables and what belongs to one run ------------------------------------------------------------


def reflect_tables(engine: Engine | Connection, names: Iterable[str]) -> dict[str, sa.Table]:
    """The live tables with every column (a real Dify table has more than :mod:`difymaint.dify.tables`
    declares); uuid columns read and bind as strings on every dialect."""
    metadata = sa.MetaData()
    found: dict[str, sa.Table] = {}
    for name in names:
        table = sa.Table(name, metadata, autoload_with=engine)
        for column in table.columns:
            if isinstance(column.type, sa.Uuid):
                column.type = UUIDStr()
        found[name] = table
    return found


def run_predicates(tables: Mapping[str, sa.Table], run_id: str) -> dict[str, sa.ColumnElement[bool]]:
    """Which rows of each archived table belong to the run (the same edges as the run cascade,
    docs/dify-reference.md#workflow-run-cascade)."""
    where: dict[str, sa.ColumnElement[bool]] = {}
    runs = tables["workflow_runs"]
    where["workflow_runs"] = runs.c.id == run_id
    for name in ("workflow_app_logs", "workflow_node_executions", "workflow_pauses", "workflow_trigger_logs"):
        if name in tables:
            where[name] = tables[name].c.workflow_run_id == run_id
    nodes = tables["workflow_node_executions"]
    if "workflow_node_execution_offload" in tables:
        offload = tables["workflow_node_execution_offload"]
        where[offload.name] = offload.c.node_execution_id.in_(sa.select(nodes.c.id).where(where[nodes.name]))
    if "workflow_pause_reasons" in tables and "workflow_pauses" in tables:
        reasons, pauses = tables["workflow_pause_reasons"], tables["workflow_pauses"]
        where[reasons.name] = reasons.c.pause_id.in_(sa.select(pauses.c.id).where(where[pauses.name]))
    return where


def ordered(table: sa.Table) -> list[sa.ColumnElement[Any]]:
    """A stable row order inside a table file: ``created_at, id`` (``id`` alone without created_at)."""
    return [table.c[name] for name in ("created_at", "id") if name in table.c]


def archive_log_rows(
    run: Mapping[str, Any],
    app_logs: Sequence[Mapping[str, Any]],
    trigger_logs: Sequence[Mapping[str, Any]],
    archived_at: datetime,
) -> list[dict[str, Any]]:
    """Dify's ``create_archive_logs``: one row per app log (or one when there is none) copying the run's
    summary columns and the first trigger log's ``trigger_metadata``."""
    base = {
        "tenant_id": run["tenant_id"],
        "app_id": run["app_id"],
        "workflow_id": run["workflow_id"],
        "workflow_run_id": run["id"],
        "created_by_role": run["created_by_role"],
        "created_by": run["created_by"],
        "run_version": run["version"],
        "run_status": run["status"],
        "run_triggered_from": run["triggered_from"],
        "run_error": run.get("error"),
        "run_elapsed_time": run.get("elapsed_time") or 0,
        "run_total_tokens": run.get("total_tokens") or 0,
        "run_total_steps": run.get("total_steps"),
        "run_exceptions_count": run.get("exceptions_count"),
        "run_created_at": run["created_at"],
        "run_finished_at": run.get("finished_at"),
        "trigger_metadata": trigger_logs[0].get("trigger_metadata") if trigger_logs else None,
        "archived_at": naive_utc(archived_at),
    }
    if not app_logs:
        return [{**base, "log_id": None, "log_created_at": None, "log_created_from": None}]
    return [
        {**base, "log_id": log["id"], "log_created_at": log["created_at"], "log_created_from": log["created_from"]}
        for log in app_logs
    ]


# --- restoring a record -------------------------------------------------------------------------------------


def decode_record(table: sa.Table, record: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """An archived record as insert values for the live table, and the archived columns it lacks.

    Like Dify's restore: unknown columns are dropped, a NULL in a NOT NULL column with a default is left to
    the default, ISO strings become datetimes for timestamp columns.
    """
    values: dict[str, Any] = {}
    dropped = set()
    for name, raw in record.items():
        if name not in table.c:
            dropped.add(name)
            continue
        column = table.c[name]
        value = raw
        if raw is None:
            if not column.nullable and (column.server_default is not None or column.default is not None):
                continue
        elif isinstance(raw, str) and isinstance(column.type, sa.DateTime):
            parsed = datetime.fromisoformat(raw)
            value = parsed if column.type.timezone else naive_utc(parsed)
        elif isinstance(raw, str) and isinstance(column.type, sa.Date):
            value = date.fromisoformat(raw)
        values[name] = value
    return values, dropped
