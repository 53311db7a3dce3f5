"""storage-report: where a Dify installation's disk goes, files and database alike (docs/jobs/storage-report.md).

Read-only. The storage side lists ``upload_files/``, ``tools/`` and ``image_files/`` (object count and bytes per
prefix) and sets them against the file rows and the reference scan sweep-files uses: objects without a row, rows
without an object, rows no Dify row refers to (bytes are always the stored objects' sizes, never the ``size``
column). The database side reads PostgreSQL's statistics per table: heap, index and TOAST size, live and dead
tuples, last (auto)vacuum and analyze, an estimate of what a VACUUM would make reusable and of what only a rewrite
would give back to the file system, and which tables warrant which (docs/jobs/storage-report.md#database).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.core.database import database_url
from difymaint.core.errors import ConfigError
from difymaint.dify.file_refs import ReferenceScan
from difymaint.dify.storage import Storage, dify_storage
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema

JOB = "storage-report"
PREFIXES = ("image_files/", "tools/", "upload_files/")  # = sweep-files' (docs/jobs/sweep-files.md)
PAGE = 1000
TOP_TABLES = 25
# When a table is worth a VACUUM, and when only a rewrite helps (docs/jobs/storage-report.md#advice).
VACUUM_DEAD_SHARE = 0.2
VACUUM_DEAD_MIN = 10_000
REWRITE_SHARE = 0.5
REWRITE_MIN_BYTES = 256 * 2**20
PAGE_BYTES = 8192
TUPLE_OVERHEAD = 28  # tuple header (23, aligned to 24) + line pointer (4)
PAGE_FILL = 0.9  # a page never fills completely (alignment, the page header, fill factor of updated tables)
REWRITE_ADVICE = (
    "rewrite to return {size} to the file system: pg_repack (online; takes an ACCESS EXCLUSIVE lock only briefly "
    "at the start and end, needs free space for a full copy) or, in a maintenance window, VACUUM FULL (ACCESS "
    "EXCLUSIVE lock for the whole rewrite: every read and write of the table waits)"
)


@dataclass(frozen=True)
class StorageReportParams:
    run: RunOptions = field(default_factory=RunOptions)


Params = StorageReportParams


def check(ctx: Context, params: StorageReportParams) -> None:
    if database_url(ctx.settings).get_backend_name() != "postgresql":
        raise ConfigError(
            f"{JOB} needs PostgreSQL (the reference scan and the table statistics are PostgreSQL's); "
            "not MySQL or SQLite"
        )
    dify_storage(ctx.settings).close()  # a STORAGE_TYPE difymaint does not serve is refused here


def run(job: JobRun, params: StorageReportParams) -> None:
    ctx = job.ctx
    storage = dify_storage(ctx.settings)
    storage.check()
    schema = check_schema(
        ctx.engine,
        [
            Need("upload_files", ("id", "key", "tenant_id", "name", "created_at", "used_at", "created_by_role")),
            Need("tool_files", ("id", "file_key", "tenant_id", "name"), optional=True),
        ],
        job=JOB,
    )
    job.warn(*schema.warnings)
    report(job, storage, has_tool_files=schema.has("tool_files"))


def _fmt(count: int | None) -> str:
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def report(job: JobRun, storage: Storage, *, has_tool_files: bool) -> None:
    """Fill the summary's details (the JSON) and the terminal tables."""
    ctx = job.ctx
    details = job.summary.details
    with ReferenceScan(ctx.engine) as scan:
        scan.load_files(has_tool_files=has_tool_files)
        ctx.reporter.info(f"{JOB}: {scan.report.files} file rows; scanning what refers to them")
        scan_report = scan.scan()
        files = _storage_side(job, storage, scan)
        upload_orphans, tool_orphans = scan.unreferenced()
        files["unreferenced_rows"]["count"] = upload_orphans + tool_orphans
        files["unreferenced_rows"]["upload_files"] = upload_orphans
        files["unreferenced_rows"]["tool_files"] = tool_orphans
        files["rows_outside_prefixes"] = scan.outside(PREFIXES)
        details.update(files)
        details["reference_scan"] = scan_report.as_dict()
    details["storage"] = storage.description
    details["database"] = database_side(ctx.engine)
    _display(job)
    job.settle_remaining()


def _storage_side(job: JobRun, storage: Storage, scan: ReferenceScan) -> dict[str, Any]:
    prefixes: dict[str, dict[str, int]] = {}
    without_row = {"count": 0, "bytes": 0}
    unreferenced_bytes = 0
    missing = {"count": 0, "referenced": 0}
    for prefix in PREFIXES:
        totals = {"count": 0, "bytes": 0}
        previous: str | None = None
        page: list[Any] = []

        def flush(items: list[Any], upto: str | None, after: str | None, *, pref: str = prefix) -> None:
            nonlocal unreferenced_bytes
            rows = scan.rows_for_keys([o.key for o in items]) if items else {}
            seen = {o.key for o in items}
            for info in items:
                found = rows.get(info.key)
                if not found:
                    without_row["count"] += 1
                    without_row["bytes"] += info.size
                elif not any(row["referenced"] for row in found):
                    unreferenced_bytes += info.size
            for key, referenced in scan.keys_between([pref], after, upto):
                if key not in seen:
                    missing["count"] += 1
                    missing["referenced"] += int(referenced)

        for info in storage.list(prefix):
            totals["count"] += 1
            totals["bytes"] += info.size
            page.append(info)
            if len(page) >= PAGE:
                flush(page, page[-1].key, previous)
                previous = page[-1].key
                page = []
        flush(page, None, previous)
        prefixes[prefix.rstrip("/")] = totals
        job.ctx.reporter.info(f"{JOB}: {prefix} {totals['count']} objects, {_fmt(totals['bytes'])}")
    return {
        "prefixes": prefixes,
        "objects_without_row": without_row,
        "rows_without_object": missing,
        "unreferenced_rows": {"count": 0, "bytes": unreferenced_bytes},
    }


def database_side(engine: sa.Engine) -> dict[str, Any]:
    """Per table (the largest first): sizes, tuples, vacuum times, and the space estimates with advice."""
    query = sa.text(
        """
        SELECT c.relname AS name,
               pg_relation_size(c.oid) AS heap_bytes,
               pg_indexes_size(c.oid) AS index_bytes,
               coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast_bytes,
               s.n_live_tup AS live_tuples, s.n_dead_tup AS dead_tuples,
               s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
               (SELECT sum(st.avg_width) FROM pg_stats st
                 WHERE st.schemaname = current_schema() AND st.tablename = c.relname) AS row_width
        FROM pg_class c
        JOIN pg_stat_user_tables s ON s.relid = c.oid
        WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace
        ORDER BY pg_total_relation_size(c.oid) DESC
        """
    )
    with engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
    tables = [_table_entry(row) for row in rows]
    return {
        "tables": tables[:TOP_TABLES],
        "tables_total": len(tables),
        "total_bytes": sum(t["heap_bytes"] + t["index_bytes"] + t["toast_bytes"] for t in tables),
        "dead_tuples": sum(t["dead_tuples"] for t in tables),
        "vacuum_reusable_bytes": sum(t["vacuum_reusable_bytes"] or 0 for t in tables),
        "rewrite_returnable_bytes": sum(t["rewrite_returnable_bytes"] or 0 for t in tables),
        "advice": [f"{t['name']}: {t['advice']}" for t in tables if t["advice"]],
    }


def _table_entry(row: dict[str, Any]) -> dict[str, Any]:
    heap, live, dead = int(row["heap_bytes"]), int(row["live_tuples"] or 0), int(row["dead_tuples"] or 0)
    width = row["row_width"]
    expected: int | None = None
    if width is not None:
        per_page = max(1, int(PAGE_BYTES * PAGE_FILL // (TUPLE_OVERHEAD + int(width))))
        expected = -(-live // per_page) * PAGE_BYTES  # pages the live rows need, rounded up
    rewrite = None if expected is None else max(0, heap - expected)
    share = dead / (live + dead) if live + dead else 0.0
    vacuum = int(heap * share) if rewrite is None else min(rewrite, int(heap * share))
    advice = ""
    if rewrite is not None and rewrite >= REWRITE_MIN_BYTES and rewrite >= heap * REWRITE_SHARE:
        advice = REWRITE_ADVICE.format(size=_fmt(rewrite))
    elif dead >= VACUUM_DEAD_MIN and share >= VACUUM_DEAD_SHARE:
        advice = f"VACUUM (ANALYZE): {share:.0%} of its tuples are dead (autovacuum is behind); no lock on rows"
    return {
        "name": str(row["name"]),
        "heap_bytes": heap,
        "index_bytes": int(row["index_bytes"]),
        "toast_bytes": int(row["toast_bytes"]),
        "live_tuples": live,
        "dead_tuples": dead,
        "last_vacuum": _iso(row["last_vacuum"]),
        "last_autovacuum": _iso(row["last_autovacuum"]),
        "last_analyze": _iso(row["last_analyze"]),
        "last_autoanalyze": _iso(row["last_autoanalyze"]),
        "vacuum_reusable_bytes": vacuum,
        "rewrite_returnable_bytes": rewrite,
        "advice": advice,
    }


def _iso(moment: Any) -> str | None:
    return None if moment is None else moment.isoformat()


def _display(job: JobRun) -> None:
    """The report as tables for a terminal (the JSON carries the same figures)."""
    d = job.summary.details
    files = [[name, f"{v['count']:,}", _fmt(v["bytes"])] for name, v in d["prefixes"].items()] + [
        ["objects without a row", f"{d['objects_without_row']['count']:,}", _fmt(d["objects_without_row"]["bytes"])],
        ["rows without an object", f"{d['rows_without_object']['count']:,}", ""],
        ["unreferenced rows (any age)", f"{d['unreferenced_rows']['count']:,}", _fmt(d["unreferenced_rows"]["bytes"])],
    ]
    job.summary.display_tables.append(
        {"title": f"files in {d['storage']}", "columns": ["", "objects", "bytes"], "rows": files}
    )
    db = d["database"]
    rows = [
        [
            t["name"],
            _fmt(t["heap_bytes"]),
            _fmt(t["index_bytes"]),
            _fmt(t["toast_bytes"]),
            f"{t['live_tuples']:,}",
            f"{t['dead_tuples']:,}",
            (t["last_autovacuum"] or t["last_vacuum"] or "never")[:19],
            _fmt(t["vacuum_reusable_bytes"]),
            _fmt(t["rewrite_returnable_bytes"]),
        ]
        for t in db["tables"]
    ]
    job.summary.display_tables.append(
        {
            "title": f"database: {_fmt(db['total_bytes'])} in {db['tables_total']} tables (largest first)",
            "columns": ["table", "heap", "indexes", "TOAST", "live", "dead", "last vacuum", "VACUUM frees", "rewrite"],
            "rows": rows,
        }
    )
    for line in db["advice"]:
        job.ctx.reporter.info(f"{JOB}: {line}")
