"""clean-draft-variables: remove the draft variables of deleted apps, with their offloaded files
(docs/jobs/clean-draft-variables.md).

:meth:`_Cleaner.walk_apps` pages the orphaned apps (:func:`orphaned`: the app row is gone), :meth:`clean_app`
each app's variables by id. Per batch the page and its files are read in a short read, the files' objects are
deleted with no transaction open (:meth:`remove_objects`, before the rows so a retry still finds the keys),
then the rows in one transaction (:meth:`delete_rows`), minus the variables whose object stayed: they keep
their rows for the next run and the run exits 1. Storage is reached only through :func:`open_storage` and
:func:`delete_object`; where it is out of reach, ``--orphan-manifest`` lists the keys instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.core.database import as_str, ids_in
from difymaint.core.errors import DifymaintError
from difymaint.core.settings import Settings
from difymaint.dify import tables as t
from difymaint.dify.storage import Storage, StorageError, dify_storage
from difymaint.engine.manifest import OrphanManifest
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema

JOB = "clean-draft-variables"
APP_PAGE = 10  # orphaned apps found per query (Dify's LIMIT 10)
SOURCE = "workflow_draft_variable_files.upload_file_id"

variables = t.workflow_draft_variables
var_files = t.workflow_draft_variable_files
uploads = t.upload_files
apps = t.apps


@dataclass(frozen=True)
class CleanDraftVariablesParams:
    max_apps: int | None = None
    orphan_manifest: Path | None = None
    run: RunOptions = field(default_factory=RunOptions)


Params = CleanDraftVariablesParams


class DraftFilesLeft(DifymaintError):
    """Some variables stayed because their offloaded file could not be removed from storage."""

    reference = "draft-files-left"


def confirmation(ctx: Context, params: CleanDraftVariablesParams) -> str:
    from difymaint.jobs.confirm import database_description

    return (
        "Delete the draft variables of deleted apps, their offloaded files' rows and the files in Dify's storage, "
        f"from {database_description(ctx.settings)}?"
    )


# --- storage: the one place this job reaches it ---------------------------------------------------------------


def open_storage(settings: Settings) -> tuple[Storage | None, str]:
    """Dify's storage (``STORAGE_TYPE``) if difymaint can reach it from here, else None; and where it is."""
    try:
        store = dify_storage(settings)
    except DifymaintError as exc:  # a storage type difymaint does not serve: the keys go to the manifest
        return None, exc.message
    where = store.description
    try:
        store.check()
    except DifymaintError as exc:  # a missing bucket, bad credentials, a network error
        store.close()
        return None, f"{where}, unreachable: {exc.message}"
    return store, where


def delete_object(store: Storage, key: str) -> str | None:
    """Delete one object (an object already missing counts as deleted); None, or why it failed."""
    try:
        store.delete(key)
    except StorageError as exc:
        return exc.message
    return None


# --- selection ------------------------------------------------------------------------------------------------


def orphaned() -> sa.ColumnElement[bool]:
    """Dify's only criterion: the variable's app row is gone."""
    return ~sa.exists().where(apps.c.id == variables.c.app_id)


@dataclass
class _File:
    variable_id: str
    file_id: str
    upload_id: str | None  # None: the upload_files row is already gone
    key: str | None
    size: int


@dataclass
class _Tally:
    apps: int = 0
    bytes: int = 0
    objects_deleted: int = 0
    objects_listed: int = 0
    variables_left: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)


def run(job: JobRun, params: CleanDraftVariablesParams) -> None:
    ctx = job.ctx
    schema = check_schema(
        ctx.engine,
        [
            Need(variables.name, ("id", "app_id", "file_id")),
            Need(apps.name, ("id",)),
            Need(var_files.name, ("id", "upload_file_id"), optional=True),
            Need(uploads.name, ("id", "key", "size")),
        ],
        job=JOB,
    )
    with_files = schema.has(var_files.name)
    if not with_files:
        job.warn(*schema.warnings)
        job.use_tables([variables.name])
    cleaner = _Cleaner(job, params, with_files)
    try:
        cleaner.walk_apps()
    finally:
        cleaner.close()
    tally = cleaner.tally
    job.summary.details.update(
        apps=tally.apps,
        bytes=tally.bytes,
        storage=cleaner.where,
        objects_deleted=tally.objects_deleted,
        objects_listed=tally.objects_listed,
        variables_left=tally.variables_left,
        failures=tally.failures[:100],
        alembic_version=schema.alembic_version,
    )
    if cleaner.manifest.enabled:
        job.summary.details["manifest"] = cleaner.manifest.details()
    job.settle_remaining()
    if cleaner.stopped_at_max:
        job.summary.rows_remaining = cleaner.remaining()
    if tally.variables_left and not job.dry_run:
        first = tally.failures[0]["error"] if tally.failures else cleaner.where
        raise DraftFilesLeft(
            f"{tally.variables_left} draft variable(s) stay with their offloaded file, which could not be removed "
            f"from Dify's storage (first: {first}); the next run tries again",
            hint="pass --orphan-manifest PATH to list the keys and delete the rows where storage is out of reach",
        )


class _Cleaner:
    def __init__(self, job: JobRun, params: CleanDraftVariablesParams, with_files: bool) -> None:
        self.job, self.params, self.with_files = job, params, with_files
        self.tally = _Tally()
        self.manifest = OrphanManifest(params.orphan_manifest, job=JOB, dry_run=job.dry_run)
        self.store: Storage | None = None
        self.where = "not needed"
        self._opened = False
        self.stopped_at_max = False  # --max-apps ended the run with orphans left
        job.remaining = self.remaining

    def close(self) -> None:
        self.manifest.close()
        if self.store is not None:
            self.store.close()

    def remaining(self) -> int:
        query = sa.select(sa.func.count()).select_from(variables).where(orphaned())
        with self.job.ctx.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def walk_apps(self) -> None:
        """Orphaned apps in app-id order, a page at a time, until none is left, ``--max-apps``, or the budget."""
        after: str | None = None
        while self.job.keep_going():
            query = sa.select(variables.c.app_id).where(orphaned()).distinct().order_by(variables.c.app_id)
            if after is not None:
                query = query.where(variables.c.app_id > after)
            with self.job.ctx.engine.connect() as conn:
                page = [as_str(app_id) for app_id in conn.execute(query.limit(APP_PAGE)).scalars()]
            for app_id in page:
                if self.params.max_apps is not None and self.tally.apps >= self.params.max_apps:
                    self.stopped_at_max = True
                    return
                if not self.clean_app(app_id):
                    return  # the budget ran out inside the app
                self.tally.apps += 1
                after = app_id
            if len(page) < APP_PAGE:
                return

    def clean_app(self, app_id: str) -> bool:
        """Every variable of one orphaned app, in id order; False when the run must stop."""
        cursor: str | None = None
        while self.job.keep_going():
            limit = self.job.batch_size
            query = sa.select(variables.c.id, variables.c.file_id).where(variables.c.app_id == app_id)
            if cursor is not None:
                query = query.where(variables.c.id > cursor)
            with self.job.batch() as batch:
                with self.job.ctx.engine.connect() as conn:  # a short read; no transaction stays open
                    page = list(conn.execute(query.order_by(variables.c.id).limit(limit)).all())
                    files = self.files_of(conn, page)
                if not page:
                    return True
                gone, kept = self.remove_objects(files)
                self.delete_rows(batch, app_id, page, files, gone, kept)
            if batch.rolled_back:
                continue  # same cursor, smaller page (the objects already deleted stay deleted)
            cursor = as_str(page[-1].id)
            if len(page) < limit:
                return True
        return False

    def files_of(self, conn: sa.Connection, page: list[Any]) -> list[_File]:
        """The page's offloaded files, with their upload rows (a missing upload row is None)."""
        by_file = {as_str(row.file_id): as_str(row.id) for row in page if row.file_id is not None}
        if not by_file or not self.with_files:
            return []
        query = (
            sa.select(var_files.c.id, uploads.c.id.label("upload_id"), uploads.c.key, uploads.c.size)
            .select_from(var_files.outerjoin(uploads, uploads.c.id == var_files.c.upload_file_id))
            .where(ids_in(var_files.c.id, list(by_file), conn.dialect.name))
        )
        return [
            _File(
                variable_id=by_file[as_str(row.id)],
                file_id=as_str(row.id),
                upload_id=None if row.upload_id is None else as_str(row.upload_id),
                key=row.key,
                size=int(row.size or 0),
            )
            for row in conn.execute(query)
        ]

    def _open(self) -> None:
        if not self._opened:
            self._opened = True
            self.store, self.where = open_storage(self.job.ctx.settings)

    def remove_objects(self, files: list[_File]) -> tuple[list[_File], list[_File]]:
        """Delete the files' objects (before the rows, so a retry still finds the keys); (gone, kept)."""
        with_object = [f for f in files if f.key is not None]
        if self.job.dry_run or not with_object:
            return with_object, []
        self._open()
        if self.store is None:
            if self.manifest.enabled:
                return with_object, []  # listed in the manifest with the batch
            return [], with_object
        gone, kept = [], []
        for item in with_object:
            error = delete_object(self.store, str(item.key))
            if error is None:
                gone.append(item)
                self.tally.objects_deleted += 1
            else:
                kept.append(item)
                self.tally.failures.append({"variable_id": item.variable_id, "key": str(item.key), "error": error})
        return gone, kept

    def delete_rows(
        self, batch: Any, app_id: str, page: list[Any], files: list[_File], gone: list[_File], kept: list[_File]
    ) -> None:
        """The page's variables and their file rows, except those whose object stays; one transaction."""
        staying = {item.variable_id for item in kept}
        variable_ids = [as_str(row.id) for row in page if as_str(row.id) not in staying]
        file_ids = [as_str(row.file_id) for row in page if row.file_id is not None and as_str(row.id) not in staying]
        upload_ids = [f.upload_id for f in files if f.upload_id is not None and f.variable_id not in staying]
        listed = [
            {"key": item.key, "upload_file_id": item.upload_id, "size": item.size}
            for item in gone
            if self.store is None and not self.job.dry_run
        ]
        dry, counts = self.job.dry_run, dict[str, int]()
        try:
            with batch.transaction() as conn:
                dialect = conn.dialect.name
                if self.with_files:
                    counts[uploads.name] = self._delete(conn, uploads, ids_in(uploads.c.id, upload_ids, dialect), dry)
                    counts[var_files.name] = self._delete(
                        conn, var_files, ids_in(var_files.c.id, file_ids, dialect), dry
                    )
                where = sa.and_(ids_in(variables.c.id, variable_ids, dialect), variables.c.app_id == app_id, orphaned())
                counts[variables.name] = self._delete(conn, variables, where, dry)
                if listed:
                    self.manifest.stage(listed, source=SOURCE)
        except BaseException:  # a timeout (retried by the caller), an error, a signal: nothing was deleted
            self.manifest.rollback()
            raise
        if listed:
            self.manifest.commit()
            self.tally.objects_listed += len(listed)
        self.tally.variables_left += len(staying)
        self.tally.bytes += sum(item.size for item in files if item.variable_id not in staying)
        batch.record(scanned=len(page), affected=counts[variables.name], rows=counts)

    @staticmethod
    def _delete(conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool], dry_run: bool) -> int:
        if dry_run:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())
        return int(conn.execute(sa.delete(table).where(where)).rowcount)
