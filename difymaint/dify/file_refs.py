"""Which stored files Dify still refers to: the set-based reference scan behind storage-report and sweep-files.

Two tables own storage objects: ``upload_files`` (``key``) and ``tool_files`` (``file_key``). Any other Dify row
may point at one of them (docs/jobs/sweep-files.md#referrers lists every referrer with its source in Dify):

* a uuid column (``message_files.upload_file_id``, ``workflow_node_execution_offload.file_id``, …);
* a uuid inside text or JSON: a File mapping's ``related_id`` / ``upload_file_id`` / ``tool_file_id`` /
  ``reference``, a URL ``/files/{id}/file-preview``, ``/files/{id}/image-preview``, ``/files/tools/{id}.ext``,
  an icon or avatar that is an upload id;
* the ``record_id`` of a ``dify-file-ref:`` + base64url(JSON) reference, which no uuid search sees.

The scan is deliberately wider than the forms: **any** uuid anywhere in a referrer column that is the id of a
file row counts, so a new way of writing an id into the same columns is still found. Each referrer table is
read once per scan, all its columns in one pass: one regular expression picks out both the uuids and the
``dify-file-ref:`` tokens, the uuids are joined to the file ids on the server (a hash semi-join against a
temporary table of the file rows), and only the tokens (few) come to the client, to be decoded.

Everything lives in temporary tables of one session (:class:`ReferenceScan` holds that connection):
``dm_files`` (every file row: id, kind, key, age, role) and ``dm_ref`` (per referenced id: whether a durable row
refers to it, and the newest log row that does). PostgreSQL only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from difymaint.core.database import database_url
from difymaint.core.errors import ConfigError
from difymaint.core.settings import Settings
from difymaint.dify.storage import dify_storage
from difymaint.engine.schema import Need, SchemaReport, check_schema

UUID_RE = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID = re.compile(UUID_RE)
TOKEN_PREFIX = "dify-file-ref:"
# One pass finds both forms (a whole match is either a token or a uuid; no capture groups needed).
FIND_RE = f"{TOKEN_PREFIX}[A-Za-z0-9_-]+=*|{UUID_RE}"
# The objects an offloaded node execution writes are named so (docs/jobs/sweep-files.md#archived-runs).
OFFLOAD_NAME_LIKE = "node\\_execution\\_%"
# Column names that say "a file id is here": a table Dify adds later with such a column is scanned too.
FILE_ID_COLUMN_LIKE = ("%file_id%", "%attachment_id%")


@dataclass(frozen=True)
class Referrer:
    """Columns of one table that may hold file ids.

    ``durable``: the row is content or configuration (a document, an app icon, a draft), which a file retention
    never overrides; otherwise it is a log row (a message, a run) whose age is ``age_column``. ``source`` names
    where Dify writes or reads the reference (docs/jobs/sweep-files.md#referrers)."""

    table: str
    columns: tuple[str, ...]
    source: str
    durable: bool = False
    age_column: str = "created_at"
    confirmed: bool = True  # False: plausible, scanned to be safe (not seen written in Dify's code)


REFERRERS: tuple[Referrer, ...] = (
    # conversations and messages (log rows)
    Referrer(
        "message_files",
        ("upload_file_id", "url"),
        "api/models/model.py MessageFile; api/core/tools/tool_engine.py _create_message_files (tool file id in "
        "upload_file_id); api/core/tools/tool_file_manager.py get_file_binary_by_message_file_id (id in url)",
    ),
    Referrer(
        "messages",
        ("answer", "inputs", "message", "message_metadata"),
        "api/models/model.py Message.re_sign_file_url_answer, Message.inputs (File mappings)",
    ),
    Referrer(
        "conversations",
        ("introduction", "system_instruction", "inputs"),
        "api/models/model.py Conversation.inputs (same File mappings as messages)",
        age_column="updated_at",
    ),
    Referrer(
        "message_agent_thoughts",
        ("observation", "tool_input", "message_files"),
        "api/models/model.py MessageAgentThought (tool inputs and outputs)",
        confirmed=False,
    ),
    Referrer(
        "dataset_retriever_resources",
        ("content",),
        "api/models/model.py DatasetRetrieverResource (copies of segment text with its image links)",
        confirmed=False,
    ),
    Referrer(
        "workflow_conversation_variables",
        ("data",),
        "api/models/workflow.py ConversationVariable (file and array[file] variables)",
        age_column="updated_at",
        confirmed=False,
    ),
    # workflow runs (log rows)
    Referrer(
        "workflow_runs",
        ("inputs", "outputs"),
        "api/models/workflow.py WorkflowRun (sys.files, end-node file outputs)",
    ),
    Referrer(
        "workflow_node_executions",
        ("inputs", "process_data", "outputs"),
        "api/models/workflow.py WorkflowNodeExecutionModel (File mappings)",
    ),
    Referrer(
        "workflow_node_execution_offload",
        ("file_id",),
        "api/models/workflow.py WorkflowNodeExecutionOffload; "
        "api/repositories/sqlalchemy_workflow_node_execution_repository.py _truncate_and_upload (used=false)",
    ),
    Referrer(
        "workflow_trigger_logs",
        ("inputs", "outputs"),
        "api/models/trigger.py WorkflowTriggerLog (trigger inputs, webhook files)",
        confirmed=False,
    ),
    Referrer(
        "dataset_queries",
        ("content",),
        "api/models/dataset.py DatasetQuery.queries (image_query content = upload file id)",
    ),
    Referrer(
        "document_pipeline_execution_logs",
        ("datasource_info", "input_data"),
        "api/models/dataset.py DocumentPipelineExecutionLog",
        confirmed=False,
    ),
    # knowledge bases (durable)
    Referrer(
        "documents",
        ("data_source_info", "file_id"),
        "api/models/dataset.py Document.data_source_detail_dict (upload_file_id)",
        durable=True,
    ),
    Referrer(
        "document_segments",
        ("content", "answer"),
        "api/models/dataset.py DocumentSegment.get_sign_content (/files/{id}/image-preview, file-preview, "
        "/files/tools/{id}.ext); api/core/rag/extractor/word_extractor.py (image_files/)",
        durable=True,
    ),
    Referrer(
        "child_chunks",
        ("content",),
        "api/models/dataset.py ChildChunk (pieces of the parent segment's text, with its links)",
        durable=True,
    ),
    Referrer(
        "segment_attachment_bindings",
        ("attachment_id",),
        "api/models/dataset.py SegmentAttachmentBinding, DocumentSegment.attachments",
        durable=True,
    ),
    Referrer("datasets", ("icon_info",), "api/models/dataset.py Dataset.icon_info", durable=True, confirmed=False),
    Referrer(
        "pipeline_built_in_templates",
        ("icon",),
        "api/models/dataset.py PipelineBuiltInTemplate",
        durable=True,
        confirmed=False,
    ),
    Referrer(
        "pipeline_customized_templates",
        ("icon",),
        "api/models/dataset.py PipelineCustomizedTemplate",
        durable=True,
        confirmed=False,
    ),
    # apps, workflows, workspaces (durable)
    Referrer(
        "workflow_draft_variables",
        ("value",),
        "api/models/workflow.py WorkflowDraftVariable (File.model_dump() of file segments)",
        durable=True,
    ),
    Referrer(
        "workflow_draft_variable_files",
        ("upload_file_id",),
        "api/models/workflow.py WorkflowDraftVariableFile (offloaded large draft values)",
        durable=True,
    ),
    Referrer(
        "workflows",
        ("graph", "features"),
        "api/models/workflow.py Workflow (default values of file variables, opening statement)",
        durable=True,
        confirmed=False,
    ),
    Referrer(
        "app_model_configs",
        ("opening_statement",),
        "api/models/model.py AppModelConfig",
        durable=True,
        confirmed=False,
    ),
    Referrer(
        "message_annotations",
        ("question", "content"),
        "api/models/model.py MessageAnnotation",
        durable=True,
        confirmed=False,
    ),
    Referrer("accounts", ("avatar",), "api/fields/member_fields.py _build_avatar_url (upload file id)", durable=True),
    Referrer("apps", ("icon",), "api/models/model.py App.icon_url (icon_type='image')", durable=True),
    Referrer("sites", ("icon",), "api/models/model.py Site.icon_url (icon_type='image')", durable=True),
    Referrer(
        "tenants",
        ("custom_config",),
        "api/controllers/files/image_preview.py WorkspaceWebappLogoApi (replace_webapp_logo)",
        durable=True,
    ),
    Referrer("tool_api_providers", ("icon",), "api/models/tools.py ApiToolProvider", durable=True, confirmed=False),
    Referrer(
        "tool_workflow_providers",
        ("icon",),
        "api/models/tools.py WorkflowToolProvider",
        durable=True,
        confirmed=False,
    ),
    Referrer("tool_mcp_providers", ("icon",), "api/models/tools.py MCPToolProvider", durable=True, confirmed=False),
)
KNOWN_FILE_ID_COLUMNS = frozenset(
    {(r.table, c) for r in REFERRERS for c in r.columns}
    | {("upload_files", "id"), ("tool_files", "id"), ("workflow_draft_variables", "file_id")}
)


@dataclass
class TableScan:
    table: str
    columns: list[str]
    seconds: float
    references: int  # (file id, referrer row) pairs found, before de-duplication
    tokens: int


@dataclass
class ScanReport:
    files: int = 0
    upload_files: int = 0
    tool_files: int = 0
    referenced: int = 0
    seconds: float = 0.0
    tables: list[TableScan] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # referrer tables/columns this Dify does not have
    unknown: list[str] = field(default_factory=list)  # file-id-like columns of tables not in REFERRERS
    archived_offloads: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "referenced": self.referenced,
            "seconds": round(self.seconds, 3),
            "tables": {s.table: {"seconds": round(s.seconds, 3), "references": s.references} for s in self.tables},
            "skipped": self.skipped,
            "unknown_file_id_columns": self.unknown,
            "archived_offloads_kept": self.archived_offloads,
        }


def decode_token(token: str) -> tuple[str | None, str | None]:
    """``(record_id, storage_key)`` of a ``dify-file-ref:`` payload (base64url of compact JSON, padding kept);
    ``(None, None)`` when it does not decode (Dify then takes the whole string as an id: no file of ours)."""
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(payload, dict):
        return None, None
    record, key = payload.get("record_id"), payload.get("storage_key")
    return (str(record) if record else None), (str(key) if key else None)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ReferenceScan:
    """The temporary tables of one scan, on one connection (call :meth:`close` or use as a context manager)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Autocommit: every statement stands alone (no long transaction pinning vacuum); the temporary tables
        # live as long as this session, which close() resets before the pool takes it back.
        self.conn: Connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.report = ScanReport()
        self.started_at: datetime | None = None

    def __enter__(self) -> ReferenceScan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.conn.exec_driver_sql("DISCARD ALL")  # temporary tables and the session's statement_timeout
        except sa.exc.DBAPIError:
            self.conn.invalidate()
        finally:
            self.conn.close()

    # --- the file rows ---------------------------------------------------------------------------------------

    def load_files(self, *, has_tool_files: bool) -> None:
        """Every ``upload_files`` and ``tool_files`` row into ``dm_files`` (one scan of each)."""
        c = self.conn
        c.execute(sa.text("SET statement_timeout = 0"))  # one pass over a table of millions of rows is the point
        self.started_at = c.execute(sa.text("SELECT now() AT TIME ZONE 'UTC'")).scalar_one()
        c.execute(
            sa.text(
                'CREATE TEMP TABLE dm_files (id uuid NOT NULL, kind text NOT NULL, key text COLLATE "C" NOT NULL, '
                "tenant_id uuid, name text, created_at timestamp, used_at timestamp, created_by_role text) "
                "ON COMMIT PRESERVE ROWS"
            )
        )
        c.execute(
            sa.text(
                "INSERT INTO dm_files SELECT id, 'upload', key, tenant_id, name, created_at, used_at, "
                "created_by_role FROM upload_files"
            )
        )
        if has_tool_files:
            c.execute(
                sa.text(
                    "INSERT INTO dm_files SELECT id, 'tool', file_key, tenant_id, name, NULL, NULL, NULL "
                    "FROM tool_files"
                )
            )
        c.execute(sa.text("CREATE INDEX ON dm_files (id)"))
        c.execute(sa.text("CREATE INDEX ON dm_files (key)"))
        c.execute(sa.text("ANALYZE dm_files"))
        c.execute(
            sa.text(
                "CREATE TEMP TABLE dm_refs (id uuid NOT NULL, durable boolean NOT NULL, ref_at timestamp, "
                "source text NOT NULL) ON COMMIT PRESERVE ROWS"
            )
        )
        c.execute(
            sa.text(
                "CREATE TEMP TABLE dm_tokens (token text NOT NULL, durable boolean, ref_at timestamp, "
                "source text NOT NULL) ON COMMIT PRESERVE ROWS"
            )
        )
        counts: dict[str, int] = dict(c.execute(sa.text("SELECT kind, count(*) FROM dm_files GROUP BY kind")).all())
        self.report.upload_files = int(counts.get("upload", 0))
        self.report.tool_files = int(counts.get("tool", 0))
        self.report.files = self.report.upload_files + self.report.tool_files

    # --- the referrers ---------------------------------------------------------------------------------------

    def scan(self, referrers: Sequence[Referrer] = REFERRERS) -> ScanReport:
        """Fill ``dm_ref``: every file id some referrer row points at. Each table is read once."""
        started = time.monotonic()
        present = self._columns()
        for referrer in referrers:
            columns = [c for c in referrer.columns if c in present.get(referrer.table, {})]
            missing = [c for c in referrer.columns if c not in columns]
            if referrer.table not in present:
                self.report.skipped.append(referrer.table)
                continue
            self.report.skipped.extend(f"{referrer.table}.{c}" for c in missing)
            if columns:
                age = referrer.age_column if referrer.age_column in present[referrer.table] else None
                self._scan_table(referrer, columns, age)
        for table, column in self._unknown_columns(present):
            self.report.unknown.append(f"{table}.{column}")
            self._scan_table(Referrer(table, (column,), "not known to difymaint", durable=True), [column], None)
        self._decode_tokens()
        if "workflow_archive_logs" in present:
            self._archived_offloads()
        self._aggregate()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _columns(self) -> dict[str, dict[str, str]]:
        rows = self.conn.execute(
            sa.text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema()"
            )
        ).all()
        found: dict[str, dict[str, str]] = {}
        for table, column, kind in rows:
            found.setdefault(str(table), {})[str(column)] = str(kind)
        return found

    def _unknown_columns(self, present: dict[str, dict[str, str]]) -> Iterator[tuple[str, str]]:
        """Columns named like a file id in tables no referrer covers (a newer Dify's): scanned as durable
        referrers, and named in the summary so the list can be extended."""
        for table, columns in sorted(present.items()):
            for column in sorted(columns):
                if (table, column) in KNOWN_FILE_ID_COLUMNS or table in ("upload_files", "tool_files"):
                    continue
                if "file_id" in column or "attachment_id" in column:
                    yield table, column

    def _scan_table(self, referrer: Referrer, columns: list[str], age: str | None) -> None:
        started = time.monotonic()
        values = ", ".join(f"(t.{_quote(c)}::text)" for c in columns)
        age_sql = f"t.{_quote(age)}" if age and not referrer.durable else "NULL::timestamp"
        source = f"{referrer.table}." + "/".join(columns)
        statement = sa.text(
            f"""
            WITH found AS MATERIALIZED (
                SELECT x.token, x.id, {age_sql} AS ref_at
                FROM {_quote(referrer.table)} t
                CROSS JOIN LATERAL (VALUES {values}) AS v(text_value)
                CROSS JOIN LATERAL regexp_matches(v.text_value, :find, 'g') AS m
                CROSS JOIN LATERAL (
                    SELECT CASE WHEN m[1] LIKE 'dify-file-ref:%' THEN substr(m[1], 15) END AS token,
                           CASE WHEN m[1] NOT LIKE 'dify-file-ref:%' THEN lower(m[1])::uuid END AS id
                ) AS x
                WHERE v.text_value IS NOT NULL
                  AND (x.token IS NOT NULL OR x.id IN (SELECT id FROM dm_files))
            ),
            tokens AS (
                INSERT INTO dm_tokens
                SELECT token, :durable, max(ref_at), :source FROM found WHERE token IS NOT NULL GROUP BY token
                RETURNING 1
            ),
            refs AS (
                INSERT INTO dm_refs
                SELECT f.id, :durable, max(f.ref_at), :source FROM found f
                WHERE f.id IS NOT NULL GROUP BY f.id
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM refs), (SELECT count(*) FROM tokens)
            """
        )
        refs, tokens = self.conn.execute(
            statement, {"find": FIND_RE, "durable": referrer.durable, "source": source}
        ).one()
        self.report.tables.append(
            TableScan(referrer.table, columns, time.monotonic() - started, int(refs), int(tokens))
        )

    def _decode_tokens(self) -> None:
        """``dify-file-ref:`` tokens: their ``record_id`` (and an older ``storage_key``) become references."""
        rows = self.conn.execute(sa.text("SELECT token, durable, ref_at, source FROM dm_tokens")).all()
        ids: list[dict[str, Any]] = []
        keys: list[dict[str, Any]] = []
        for token, durable, ref_at, source in rows:
            record, key = decode_token(str(token))
            if record is not None and _UUID.fullmatch(record):
                ids.append({"record": record.lower(), "durable": durable, "ref_at": ref_at, "source": source})
            if key is not None:
                keys.append({"key": key, "durable": durable, "ref_at": ref_at, "source": source})
        if ids:
            self.conn.execute(
                sa.text(
                    "INSERT INTO dm_refs SELECT f.id, :durable, :ref_at, :source || ' (dify-file-ref)' FROM dm_files f "
                    "WHERE f.id = CAST(:record AS uuid)"
                ),
                ids,
            )
        if keys:
            self.conn.execute(
                sa.text(
                    "INSERT INTO dm_refs SELECT f.id, :durable, :ref_at, :source || ' (dify-file-ref key)' "
                    "FROM dm_files f WHERE f.key = :key"
                ),
                keys,
            )

    def _archived_offloads(self) -> None:
        """Offloaded node-execution payloads of archived runs: their offload rows live only in the archive now,
        and restoring the run needs the files (docs/jobs/sweep-files.md#archived-runs). An upload named like an
        offload, created while an archived run of its workspace ran, is kept."""
        result = self.conn.execute(
            sa.text(
                "INSERT INTO dm_refs SELECT f.id, true, NULL, 'workflow_archive_logs' FROM dm_files f "
                "WHERE f.kind = 'upload' AND f.name LIKE :offload AND EXISTS (SELECT 1 FROM workflow_archive_logs a "
                "WHERE a.tenant_id = f.tenant_id AND f.created_at >= a.run_created_at - interval '1 minute' "
                "AND (a.run_finished_at IS NULL OR f.created_at <= a.run_finished_at + interval '1 minute'))"
            ),
            {"offload": OFFLOAD_NAME_LIKE},
        )
        self.report.archived_offloads = int(result.rowcount or 0)

    def _aggregate(self) -> None:
        c = self.conn
        c.execute(
            sa.text(
                "CREATE TEMP TABLE dm_ref ON COMMIT PRESERVE ROWS AS SELECT id, bool_or(durable) AS durable, "
                "max(ref_at) AS last_log_at, array_agg(DISTINCT source ORDER BY source) AS sources "
                "FROM dm_refs GROUP BY id"
            )
        )
        c.execute(sa.text("ALTER TABLE dm_ref ADD PRIMARY KEY (id)"))
        c.execute(sa.text("ANALYZE dm_ref"))
        self.report.referenced = int(c.execute(sa.text("SELECT count(*) FROM dm_ref")).scalar_one())

    # --- questions ---------------------------------------------------------------------------------------------

    def rows_for_keys(self, keys: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The file rows (with their reference state) holding each of these keys; keys without a row are absent."""
        rows = self.conn.execute(
            sa.text(
                "SELECT f.key, f.id::text AS id, f.kind, f.created_at, f.used_at, f.created_by_role, "
                "r.id IS NOT NULL AS referenced, coalesce(r.durable, false) AS durable, r.last_log_at "
                "FROM dm_files f LEFT JOIN dm_ref r ON r.id = f.id WHERE f.key = ANY(:keys)"
            ),
            {"keys": list(keys)},
        ).mappings()
        found: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            found.setdefault(str(row["key"]), []).append(dict(row))
        return found

    def unreferenced(self) -> tuple[int, int]:
        """``(upload_files, tool_files)`` rows no Dify row refers to, of any age."""
        rows: dict[str, int] = dict(
            self.conn.execute(
                sa.text(
                    "SELECT f.kind, count(*) FROM dm_files f "
                    "WHERE NOT EXISTS (SELECT 1 FROM dm_ref r WHERE r.id = f.id) GROUP BY f.kind"
                )
            ).all()
        )
        return int(rows.get("upload", 0)), int(rows.get("tool", 0))

    def keys_between(self, prefixes: Sequence[str], after: str | None, upto: str | None) -> list[tuple[str, bool]]:
        """``(key, referenced)`` of the file rows under ``prefixes`` with ``after < key <= upto`` (either bound
        open when None), for rows whose object a listing of that range did not see."""
        conditions = ["(" + " OR ".join(f"f.key LIKE :p{i}" for i in range(len(prefixes))) + ")"]
        params: dict[str, Any] = {f"p{i}": prefix.replace("_", "\\_") + "%" for i, prefix in enumerate(prefixes)}
        if after is not None:
            conditions.append("f.key > :after")
            params["after"] = after
        if upto is not None:
            conditions.append("f.key <= :upto")
            params["upto"] = upto
        rows = self.conn.execute(
            sa.text(
                "SELECT DISTINCT f.key, EXISTS (SELECT 1 FROM dm_ref r WHERE r.id = f.id) FROM dm_files f WHERE "
                + " AND ".join(conditions)
                + " ORDER BY 1"
            ),
            params,
        ).all()
        return [(str(key), bool(referenced)) for key, referenced in rows]

    def outside(self, prefixes: Sequence[str]) -> int:
        """File rows whose key lies outside ``prefixes`` (never touched by a sweep)."""
        clause = " AND ".join(f"key NOT LIKE :p{i}" for i in range(len(prefixes)))
        params = {f"p{i}": prefix.replace("_", "\\_") + "%" for i, prefix in enumerate(prefixes)}
        count = self.conn.execute(sa.text(f"SELECT count(*) FROM dm_files WHERE {clause}"), params).scalar_one()
        return int(count)

    def sample_keys(self, limit: int) -> list[str]:
        """The newest file keys (upload rows first), for the storage sanity check."""
        rows = self.conn.execute(
            sa.text("SELECT key FROM dm_files ORDER BY kind DESC, created_at DESC NULLS LAST LIMIT :n"), {"n": limit}
        ).scalars()
        keys = [str(k) for k in rows]
        return keys


def require_file_scan(settings: Settings, job: str) -> None:
    """What a job that scans Dify's files needs, refused before any connection (exit 2): PostgreSQL (the scan
    uses its regular expressions and statistics) and a STORAGE_TYPE difymaint serves."""
    if database_url(settings).get_backend_name() != "postgresql":
        raise ConfigError(
            f"{job} needs PostgreSQL (the reference scan uses its regular expressions); not MySQL or SQLite"
        )
    dify_storage(settings).close()


def file_rows_schema(engine: sa.Engine, job: str) -> SchemaReport:
    """The file rows the scan reads: upload_files, and tool_files where this Dify has it."""
    return check_schema(
        engine,
        [
            Need("upload_files", ("id", "key", "tenant_id", "name", "created_at", "used_at", "created_by_role")),
            Need("tool_files", ("id", "file_key", "tenant_id", "name"), optional=True),
        ],
        job=job,
    )
