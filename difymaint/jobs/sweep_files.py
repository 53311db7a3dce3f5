"""sweep-files: delete stored files no Dify row refers to, with their rows (docs/jobs/sweep-files.md).

Dify has no such beat job (its ``clear-orphaned-file-records`` / ``remove-orphaned-files-on-storage`` are manual,
miss half the referrers and have no grace period). One run:

1. opens Dify's storage (STORAGE_TYPE; an unknown or unsupported one is exit 2 before anything else) and checks
   that it is this Dify's: some of the newest file rows' objects must be there;
2. scans the referrers once (:mod:`difymaint.dify.file_refs`): which ``upload_files`` / ``tool_files`` ids any
   Dify row points at;
3. walks the objects under ``upload_files/``, ``tools/`` and ``image_files/`` only, in key order from the cursor
   the last run saved (or the keys of ``--orphan-manifest`` files), a page per batch, and deletes

   * an object with no row, last modified before the grace period;
   * an object whose every row is unreferenced and past the grace period (``upload_files.created_at`` and
     ``used_at``; the object's last-modified time, which is all ``tool_files`` has), with those rows.

   Each page is one transaction: its rows are locked and re-checked, the objects deleted, then the rows of the
   objects that are gone; an object that fails to delete keeps its rows and is reported.
4. saves the listing position after each page; a run stopped by ``--max-runtime`` (exit 4) resumes there.

Nothing younger than the grace period, nothing referenced, nothing outside the three prefixes (``privkeys/``!)
is ever deleted, and nothing is written to storage. ``--older-than DAYS`` adds the opt-in file retention.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from difymaint.core.clock import naive_utc
from difymaint.core.context import Context
from difymaint.core.database import database_url
from difymaint.core.errors import ConfigError
from difymaint.dify import tables as t
from difymaint.dify.file_refs import ReferenceScan
from difymaint.dify.storage import ObjectInfo, Storage, StorageError, check_key, dify_storage
from difymaint.engine.manifest import read_manifest
from difymaint.engine.options import RunOptions
from difymaint.engine.resume import CursorStore
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema

JOB = "sweep-files"
# Dify's file prefixes, in key order (the order a resumable listing walks them). Nothing else is ever touched:
# privkeys/ (workspace keys), upload_files_backup/, keyword_files/, website_files/, ops_trace/, pause states.
PREFIXES = ("image_files/", "tools/", "upload_files/")
DEFAULT_GRACE_HOURS = 24
SANITY_SAMPLE = 20
EXAMPLES = 20
# Fault injection for the tests: a delete of a key containing this text fails as the storage would.
FAIL_DELETE_ENV = "DIFYMAINT_TEST_FAIL_DELETE"


@dataclass(frozen=True)
class SweepFilesParams:
    grace_hours: int = DEFAULT_GRACE_HOURS
    orphan_manifests: tuple[str, ...] = ()
    older_than_days: int | None = None
    created_by_role: str | None = None
    restart: bool = False
    run: RunOptions = field(default_factory=RunOptions)


Params = SweepFilesParams


def check(ctx: Context, params: SweepFilesParams) -> None:
    if params.created_by_role is not None and params.older_than_days is None:
        raise ConfigError("--created-by-role only narrows --older-than (the file retention)")
    if params.orphan_manifests and params.restart:
        raise ConfigError("--restart-listing applies to the storage listing, not to --orphan-manifest")
    if database_url(ctx.settings).get_backend_name() != "postgresql":
        raise ConfigError(
            f"{JOB} needs PostgreSQL (the reference scan uses its regular expressions); not MySQL or SQLite"
        )
    for path in params.orphan_manifests:
        if not Path(path).is_file():
            raise ConfigError(f"orphan manifest {path} does not exist")
    dify_storage(ctx.settings).close()  # a STORAGE_TYPE difymaint does not serve is refused here


def confirmation(ctx: Context, params: SweepFilesParams) -> str:
    retention = (
        f", and files older than {params.older_than_days} days whose only referrers are as old"
        if params.older_than_days
        else ""
    )
    return (
        f"Delete stored files no Dify row refers to (older than {params.grace_hours} h){retention}, with their "
        f"upload_files/tool_files rows, from STORAGE_TYPE={ctx.settings.STORAGE_TYPE}?"
    )


def open_storage(ctx: Context) -> Storage:
    """Dify's storage, checked: ConfigError (exit 2, one line) before any lock or connection."""
    storage = dify_storage(ctx.settings)
    storage.check()
    return storage


def run(job: JobRun, params: SweepFilesParams) -> None:
    ctx = job.ctx
    storage = open_storage(ctx)
    schema = check_schema(
        ctx.engine,
        [
            Need("upload_files", ("id", "key", "tenant_id", "name", "created_at", "used_at", "created_by_role")),
            Need("tool_files", ("id", "file_key", "tenant_id", "name"), optional=True),
        ],
        job=JOB,
    )
    job.warn(*schema.warnings)
    manifests = [Path(p) for p in params.orphan_manifests]
    Sweep(job, params, storage, manifests, has_tool_files=schema.has("tool_files")).run()


def _fmt_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


@dataclass
class Decision:
    """What one page of objects comes to."""

    deletable: list[tuple[ObjectInfo, list[dict[str, Any]]]] = field(default_factory=list)
    kept_referenced: int = 0
    kept_young: int = 0


class Sweep:
    def __init__(
        self,
        job: JobRun,
        params: SweepFilesParams,
        storage: Storage,
        manifests: list[Path],
        *,
        has_tool_files: bool,
    ) -> None:
        self.job, self.params, self.storage, self.manifests = job, params, storage, manifests
        self.ctx = job.ctx
        self.has_tool_files = has_tool_files
        now = self.ctx.clock.now()
        self.now_naive = naive_utc(now)
        self.cutoff = self.now_naive - timedelta(hours=params.grace_hours)
        self.cutoff_aware = self.cutoff.replace(tzinfo=UTC)
        self.retention_cutoff = (
            self.now_naive - timedelta(days=params.older_than_days) if params.older_than_days else None
        )
        self.cursors = CursorStore(self.ctx.engine, JOB, storage.identity)
        self.fail_delete = os.environ.get(FAIL_DELETE_ENV) or None
        # figures
        self.objects_deleted = 0
        self.bytes_freed = 0
        self.strays_deleted = 0
        self.rows_deleted = {"upload_files": 0, "tool_files": 0}
        self.kept_referenced = 0
        self.kept_young = 0
        self.objects_seen = 0
        self.bytes_seen = 0
        self.missing_rows = 0
        self.missing_referenced = 0
        self.missing_examples: list[str] = []
        self.failures: list[dict[str, str]] = []
        self.skipped_changed = 0
        self.backlog = 0
        self.listing: dict[str, Any] = {}
        self.page_cut = False
        self.manifest_details: dict[str, Any] = {}

    # --- the run ---------------------------------------------------------------------------------------------

    def run(self) -> None:
        job, ctx = self.job, self.ctx
        with ReferenceScan(ctx.engine) as scan:
            self.scan = scan
            scan.load_files(has_tool_files=self.has_tool_files)
            ctx.reporter.info(f"{JOB}: {scan.report.files} file rows; scanning what refers to them")
            report = scan.scan()
            upload_orphans, tool_orphans = scan.unreferenced()
            self.backlog = upload_orphans + tool_orphans
            job.remaining = lambda: max(0, self.backlog - sum(self.rows_deleted.values()))
            ctx.reporter.info(
                f"{JOB}: reference scan {report.seconds:.1f} s: {report.referenced} of {report.files} files "
                f"referenced, {self.backlog} not (any age)"
            )
            if report.unknown:
                job.warn(
                    "columns named like a file id in tables difymaint does not know as referrers, scanned as such: "
                    + ", ".join(report.unknown)
                )
            self._sanity_check()
            if self.manifests:
                self._sweep_manifests()
            else:
                self._sweep_listing()
        self._finish(report.as_dict())

    def _sanity_check(self) -> None:
        """Refuse a storage that is not this Dify's (a wrong root or bucket would make every object a stray and
        every row a row without object): at least one of the newest file rows' objects must be there."""
        keys = [k for k in self.scan.sample_keys(SANITY_SAMPLE * 5) if k.startswith(PREFIXES)][:SANITY_SAMPLE]
        if not keys:
            return
        for key in keys:
            try:
                if self.storage.stat(check_key(key)) is not None:
                    return
            except StorageError:
                continue
        raise ConfigError(
            f"none of the {len(keys)} newest files of upload_files/tool_files is in {self.storage.description}: "
            "is STORAGE_TYPE (OPENDAL_FS_ROOT, S3_BUCKET_NAME, …) pointing at this Dify's storage?"
        )

    # --- where the objects come from --------------------------------------------------------------------------

    def _sweep_listing(self) -> None:
        start = None if self.params.restart else self.cursors.load()
        if self.cursors.problem:
            self.job.warn(self.cursors.problem)
        self.listing = {"started_after": start, "stopped_at": None, "complete": False}
        if start is not None:
            self.ctx.reporter.info(f"{JOB}: continuing the listing after {start}")
        last: str | None = None
        for prefix in PREFIXES:
            after = start if start is not None and start > prefix else None
            if start is not None and start >= prefix and not start.startswith(prefix):
                continue  # this prefix was done by an earlier run
            previous = after
            for page in self._pages(self.storage.list(prefix, start_after=after)):
                self._rows_without_object(prefix, previous, page[-1].key, {o.key for o in page})
                while True:  # a page rolled back by a timeout is tried again (smaller batches follow)
                    if not self.job.keep_going():
                        self.listing["stopped_at"] = last
                        return
                    if self._process(page):
                        break
                if self.page_cut:  # stopped inside the page: the position stays before it
                    self.job.keep_going()  # records the signal as the outcome
                    self.listing["stopped_at"] = last
                    return
                previous = last = page[-1].key
                if not self.job.dry_run:
                    self.cursors.save(last, self.ctx.clock.now())
            self._rows_without_object(prefix, previous, None, set())
        self.listing.update(stopped_at=last, complete=True)
        if not self.job.dry_run:
            self.cursors.clear()

    def _pages(self, objects: Iterator[ObjectInfo]) -> Iterator[list[ObjectInfo]]:
        page: list[ObjectInfo] = []
        for info in objects:
            page.append(info)
            if len(page) >= self.job.batch_size:
                yield page
                page = []
        if page:
            yield page

    def _sweep_manifests(self) -> None:
        """The keys the retention jobs' --orphan-manifest files list (committed and uncertain batches alike:
        every key is checked from scratch), instead of a listing."""
        keys: set[str] = set()
        outside = 0
        for path in self.manifests:
            for record in read_manifest(path).orphaned():
                key = str(record.get("key") or "")
                if key.startswith(PREFIXES):
                    keys.add(key)
                elif key:
                    outside += 1
        self.manifest_details = {
            "files": [str(p) for p in self.manifests],
            "keys": len(keys),
            "outside_prefixes": outside,
        }
        ordered = sorted(keys)
        size = self.job.batch_size
        for offset in range(0, len(ordered), size):
            chunk = ordered[offset : offset + size]
            if not self.job.keep_going():
                return
            page: list[ObjectInfo] = []
            for key in chunk:
                info = self.storage.stat(key)
                if info is None:
                    self._missing(key, self.scan.rows_for_keys([key]).get(key, []))
                else:
                    page.append(info)
            while page and not self._process(page):
                if not self.job.keep_going():
                    return
            if self.page_cut:
                self.job.keep_going()  # records the signal as the outcome
                return

    def _rows_without_object(self, prefix: str, after: str | None, upto: str | None, seen: set[str]) -> None:
        """Rows whose key falls in the range the listing just covered but whose object it did not see."""
        for key, referenced in self.scan.keys_between([prefix], after, upto):
            if key not in seen:
                self.missing_rows += 1
                self.missing_referenced += int(referenced)
                if len(self.missing_examples) < EXAMPLES:
                    self.missing_examples.append(key)

    def _missing(self, key: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.missing_rows += 1
            self.missing_referenced += int(any(r["referenced"] for r in rows))
            if len(self.missing_examples) < EXAMPLES:
                self.missing_examples.append(key)

    # --- one page ------------------------------------------------------------------------------------------

    def _decide(self, page: Sequence[ObjectInfo]) -> Decision:
        rows = self.scan.rows_for_keys([o.key for o in page])
        decision = Decision()
        for info in page:
            self.objects_seen += 1
            self.bytes_seen += info.size
            young = info.last_modified is None or info.last_modified >= self.cutoff_aware
            found = rows.get(info.key, [])
            if young:
                decision.kept_young += 1
            elif not found or all(self._row_goes(row, info) for row in found):
                decision.deletable.append((info, found))
            elif any(self._young_row(row) for row in found):
                decision.kept_young += 1
            else:
                decision.kept_referenced += 1
        return decision

    def _young_row(self, row: dict[str, Any]) -> bool:
        if row["kind"] != "upload":
            return False
        created, used = row["created_at"], row["used_at"]
        return created is None or created >= self.cutoff or (used is not None and used >= self.cutoff)

    def _row_goes(self, row: dict[str, Any], info: ObjectInfo) -> bool:
        """The exact row predicate (docs/jobs/sweep-files.md#predicates)."""
        if self._young_row(row):
            return False
        if not row["referenced"]:
            return True
        if self.retention_cutoff is None or row["durable"]:
            return False
        # File retention: only log rows refer to it, the newest of them older than the retention.
        last = row["last_log_at"]
        if last is not None and last >= self.retention_cutoff:
            return False
        if row["kind"] == "upload":
            if row["created_at"] >= self.retention_cutoff:
                return False
            return self.params.created_by_role is None or row["created_by_role"] == self.params.created_by_role
        if self.params.created_by_role is not None:
            return False  # tool files have no creator role
        modified = info.last_modified
        return modified is not None and modified.replace(tzinfo=None) < self.retention_cutoff

    def _process(self, page: list[ObjectInfo]) -> bool:
        """Decide and delete one page in its own batch; False when the batch was rolled back (retry it)."""
        decision = self._decide(page)
        self.kept_referenced += decision.kept_referenced
        self.kept_young += decision.kept_young
        job = self.job
        with job.batch() as batch:
            if job.dry_run:
                rows = self._count_rows(decision.deletable)
                self._book(decision.deletable, rows)
                batch.record(scanned=len(page), affected=len(decision.deletable), rows=rows)
            else:
                with batch.transaction() as conn:
                    done, rows = self._delete(conn, decision.deletable)
                self._book(done, rows)
                batch.record(scanned=len(page), affected=len(done), rows=rows)
        if batch.rolled_back:
            return False
        if decision.deletable:
            verb = "would remove" if job.dry_run else "removed"
            self.ctx.reporter.info(
                f"{JOB}: {verb} {self.objects_deleted} files so far ({_fmt_bytes(self.bytes_freed)}); "
                f"{self.objects_seen} looked at ({_fmt_bytes(self.bytes_seen)})"
            )
        return True

    @staticmethod
    def _count_rows(deletable: list[tuple[ObjectInfo, list[dict[str, Any]]]]) -> dict[str, int]:
        rows = {"upload_files": 0, "tool_files": 0}
        for _, found in deletable:
            for row in found:
                rows["upload_files" if row["kind"] == "upload" else "tool_files"] += 1
        return rows

    def _book(self, done: list[tuple[ObjectInfo, list[dict[str, Any]]]], rows: dict[str, int]) -> None:
        for info, found in done:
            self.objects_deleted += 1
            self.bytes_freed += info.size
            self.strays_deleted += int(not found)
        for table, count in rows.items():
            self.rows_deleted[table] += count

    def _delete(
        self, conn: sa.Connection, deletable: list[tuple[ObjectInfo, list[dict[str, Any]]]]
    ) -> tuple[list[tuple[ObjectInfo, list[dict[str, Any]]]], dict[str, int]]:
        """Lock and re-check the rows, delete the objects, then the rows of the objects that are gone."""
        uploads = [r["id"] for _, found in deletable for r in found if r["kind"] == "upload"]
        tools = [r["id"] for _, found in deletable for r in found if r["kind"] == "tool"]
        uf, tf = t.upload_files, t.tool_files
        still: set[str] = set()
        if uploads:
            still.update(
                str(i)
                for i in conn.execute(
                    sa.select(uf.c.id)
                    .where(
                        uf.c.id.in_(uploads),
                        uf.c.created_at < self.cutoff,
                        sa.or_(uf.c.used_at.is_(None), uf.c.used_at < self.cutoff),
                    )
                    .with_for_update()
                ).scalars()
            )
        if tools:
            still.update(
                str(i) for i in conn.execute(sa.select(tf.c.id).where(tf.c.id.in_(tools)).with_for_update()).scalars()
            )
        done: list[tuple[ObjectInfo, list[dict[str, Any]]]] = []
        for info, found in deletable:
            if self.ctx.stop.requested:  # SIGTERM: finish with what is deleted; this page is redone next time
                self.page_cut = True
                break
            if any(r["id"] not in still for r in found):
                self.skipped_changed += 1  # a row changed or went since the scan: leave the object
                continue
            try:
                if self.fail_delete and self.fail_delete in info.key:
                    raise StorageError(f"storage delete {info.key} failed: injected failure")
                self.storage.delete(info.key)
            except StorageError as exc:
                self.failures.append({"key": info.key, "error": exc.message})
                self.job.warn(f"{JOB}: {exc.message}; its rows stay")
                continue
            done.append((info, found))
        gone_uploads = [r["id"] for _, found in done for r in found if r["kind"] == "upload"]
        gone_tools = [r["id"] for _, found in done for r in found if r["kind"] == "tool"]
        rows = {"upload_files": 0, "tool_files": 0}
        if gone_uploads:
            rows["upload_files"] = conn.execute(sa.delete(uf).where(uf.c.id.in_(gone_uploads))).rowcount or 0
        if gone_tools:
            rows["tool_files"] = conn.execute(sa.delete(tf).where(tf.c.id.in_(gone_tools))).rowcount or 0
        return done, rows

    # --- the end -------------------------------------------------------------------------------------------

    def _finish(self, scan: dict[str, Any]) -> None:
        job, ctx = self.job, self.ctx
        details = job.summary.details
        details.update(
            storage=self.storage.description,
            prefixes=list(PREFIXES),
            grace_hours=self.params.grace_hours,
            objects_deleted=self.objects_deleted,
            bytes_freed=self.bytes_freed,
            strays_deleted=self.strays_deleted,
            objects_looked_at=self.objects_seen,
            bytes_looked_at=self.bytes_seen,
            kept_referenced=self.kept_referenced,
            kept_young=self.kept_young,
            skipped_changed=self.skipped_changed,
            delete_failures=self.failures,
            rows_without_object={
                "count": self.missing_rows,
                "referenced": self.missing_referenced,
                "examples": self.missing_examples,
            },
            orphan_backlog=self.backlog,
            reference_scan=scan,
            metrics={"files_bytes_freed": self.bytes_freed, "files_orphan_backlog": self.backlog},
        )
        if self.listing:
            details["listing"] = self.listing
        if self.manifest_details:
            details["manifest"] = self.manifest_details
        if self.retention_cutoff is not None:
            details["file_retention"] = {
                "older_than_days": self.params.older_than_days,
                "created_by_role": self.params.created_by_role,
            }
        if self.failures:
            job.warn(
                f"{JOB}: {len(self.failures)} object(s) could not be deleted; their rows stay (details.delete_failures)"
            )
        job.settle_remaining()
        verb = "Would remove" if job.dry_run else "Removed"
        gigabytes = self.bytes_freed / 1e9
        ctx.reporter.info(f"{verb} {self.objects_deleted} files (approx. {gigabytes:.2f} GB)")
