"""create-tidb: keep the idle TiDB Serverless cluster pool at its target (docs/jobs/create-tidb.md).

:func:`skip` is Dify's runtime guard (``CREATE_TIDB_SERVICE_JOB_ENABLED``), decided before any connection.
Each batch counts the idle pool again (Dify hands clusters out meanwhile), asks TiDB Cloud for what is
missing in one ``batchCreate`` (:func:`_create`), then inserts the binding rows in one transaction
(:func:`_record`). Two things shape it:

* clusters cost money, so the job lock is backed by a PostgreSQL advisory lock when it lives in Redis
  (:func:`_database_guard`: a Redis lease can expire under a stalled run), and every created clusterId is
  logged before its row is written; clusters created but not recorded go to the leak file
  (docs/tidb-pool.md#the-leak-file) that ``update-tidb-status --reap-older-than`` cleans;
* passwords are held in memory only, never written to Redis, a log line or the summary.

The client's failure budget (:mod:`difymaint.dify.tidb_cloud`) ends a persistently failing API.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.core.errors import DifymaintError, LockHeld
from difymaint.core.locking import database_lock
from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.dify.tidb_cloud import (
    CREATING,
    MAX_BATCH,
    CreatedCluster,
    TidbCreateOutcomeUnknown,
)
from difymaint.engine.options import RunOptions
from difymaint.engine.run import Batch, JobRun
from difymaint.jobs.registry import POOL_GUARD
from difymaint.jobs.tidb_pool import (
    TABLE,
    LeakEntry,
    PoolClient,
    append_leaks,
    check_bindings_table,
    client_for,
    require_config,
)

JOB = "create-tidb"
log = logging.getLogger("difymaint.tidb")


@dataclass(frozen=True)
class CreateTidbParams:
    target: int = 500
    leak_file: Path = Path("difymaint-tidb-leaks.jsonl")
    max_failed_requests: int = 10
    max_failing_seconds: float = 30.0
    run: RunOptions = field(default_factory=RunOptions)


Params = CreateTidbParams


def count_idle(ctx: Context) -> int:
    table = t.tidb_auth_bindings
    with ctx.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(table).where(table.c.active.is_(False))
        return int(conn.execute(query).scalar_one())


def skip(ctx: Context, params: CreateTidbParams) -> str | None:
    """Dify's runtime guard: the task returns at once unless CREATE_TIDB_SERVICE_JOB_ENABLED is true."""
    if POOL_GUARD.on(ctx.settings):
        return None
    how = "set to false" if ctx.settings.explicitly_set("CREATE_TIDB_SERVICE_JOB_ENABLED") else "unset (Dify: false)"
    reason = f"CREATE_TIDB_SERVICE_JOB_ENABLED is {how}"
    ctx.reporter.info(f"{JOB}: {reason}: nothing created (Dify's runtime guard for the pool filler)")
    return reason


def check(ctx: Context, params: CreateTidbParams) -> None:
    if POOL_GUARD.on(ctx.settings):  # with the guard off nothing needs TiDB Cloud
        require_config(ctx)  # one line, exit 2, before touching the database


def run(job: JobRun, params: CreateTidbParams) -> None:
    ctx = job.ctx
    _, has_endpoint = check_bindings_table(ctx, JOB)
    with _database_guard(job):
        idle = count_idle(ctx)
        job.remaining = lambda: max(0, params.target - count_idle(ctx))  # also after a second signal
        details = job.summary.details
        details.update(target=params.target, idle_before=idle, leak_file=str(params.leak_file))
        ctx.reporter.info(f"{JOB}: {idle} idle clusters in the pool, target {params.target}")
        if params.run.dry_run:
            _plan(ctx, job, params, idle)
        else:
            client = client_for(ctx)
            try:
                _fill(ctx, job, client, params, has_endpoint)
            finally:
                details.update(api_requests=client.requests_sent, api_failed_requests=client.failed_requests)
                client.close()
            idle = count_idle(ctx)
            details["idle_after"] = idle
        job.settle_remaining(lambda: max(0, params.target - idle))  # clusters still to create


@contextmanager
def _database_guard(job: JobRun) -> Iterator[None]:
    """A database session lock (PostgreSQL advisory, MySQL GET_LOCK) beside a Redis job lock: a Redis lease can
    lapse under a stalled run, a session lock cannot (it ends only with its connection). Not needed when the job
    lock already is one."""
    ctx = job.ctx
    guard = database_lock(ctx.engine, f"{job.lock_key}:database") if job.options.use_lock and ctx.redis else None
    if guard is None:
        yield
        return
    if not guard.acquire():
        raise LockHeld(f"{JOB}: another run holds {guard.description}; skipped")
    try:
        yield
    finally:
        guard.release()


def _plan(ctx: Context, job: JobRun, params: CreateTidbParams, idle: int) -> None:
    need = max(0, params.target - idle)
    calls = math.ceil(need / MAX_BATCH)
    if params.run.max_batches is not None and calls > params.run.max_batches:
        calls = params.run.max_batches
        job.summary.outcome = Outcome.PARTIAL
        job.summary.stop_reason = "max-batches"
    would = min(need, calls * MAX_BATCH)
    job.summary.add(TABLE, would)
    job.summary.details["planned_calls"] = calls
    ctx.reporter.info(f"{JOB}: would create {would} clusters in {calls} batchCreate calls of at most {MAX_BATCH}")


def _fill(ctx: Context, job: JobRun, client: PoolClient, params: CreateTidbParams, has_endpoint: bool) -> None:
    while True:
        need = params.target - count_idle(ctx)  # counted again: Dify's vector init takes clusters meanwhile
        if need <= 0:
            return
        if not job.keep_going():
            return
        with job.batch() as batch:
            created = _create(ctx, client, min(MAX_BATCH, need), params.leak_file)
            _record(ctx, batch, created, params.leak_file, has_endpoint)
            batch.record(scanned=len(created), affected=len(created), rows={TABLE: len(created)})


def _create(ctx: Context, client: PoolClient, n: int, leak_file: Path) -> list[CreatedCluster]:
    submitted = client.submitted_names
    submitted.clear()
    try:
        created = client.batch_create(n)
    except TidbCreateOutcomeUnknown as exc:
        _leak(ctx, leak_file, [(None, name) for name in exc.display_names], "batchCreate outcome unknown")
        raise
    returned = {cluster.display_name for cluster in created}
    missing = [name for name in submitted if name not in returned]
    if missing:
        _leak(ctx, leak_file, [(None, name) for name in missing], "submitted but not in the batchCreate answer")
    if not created:
        raise DifymaintError(
            f"{JOB}: TiDB Cloud batchCreate answered without creating any of {n} clusters",
            hint="check the project's cluster quota and TIDB_REGION; the next run tries again",
        )
    # Before the database write, so a crash between the two still leaves every id in the log.
    ctx.reporter.info(
        f"{JOB}: TiDB Cloud created {len(created)} clusters: "
        + ", ".join(f"{cluster.cluster_id} ({cluster.display_name})" for cluster in created)
    )
    return created


def _record(ctx: Context, batch: Batch, created: list[CreatedCluster], leak_file: Path, has_endpoint: bool) -> None:
    rows = []
    for cluster in created:
        row = {
            "id": t.new_id(),
            "tenant_id": None,
            "cluster_id": cluster.cluster_id,
            "cluster_name": cluster.display_name,
            "account": cluster.account,
            "password": cluster.password.get_secret_value(),
            "active": False,
            "status": CREATING,
        }
        if has_endpoint:
            row["qdrant_endpoint"] = cluster.qdrant_endpoint
        rows.append(row)
    try:
        with batch.transaction() as conn:
            conn.execute(sa.insert(t.tidb_auth_bindings), rows)
    except BaseException as exc:
        # Whatever stopped the insert (database error, timeout, a second signal), the clusters exist in TiDB
        # Cloud. The SQL error's text would carry the passwords as parameters: name only its type.
        _leak(ctx, leak_file, [(c.cluster_id, c.display_name) for c in created], "binding insert failed")
        if not isinstance(exc, Exception):
            raise  # an interrupt keeps its own exit code
        raise DifymaintError(
            f"{JOB}: recording {len(created)} created clusters in {TABLE} failed ({type(exc).__name__}); "
            f"their ids are logged and listed in the leak file {leak_file}",
            hint="update-tidb-status --reap-older-than HOURS deletes them once they are that old",
        ) from None


def _leak(ctx: Context, leak_file: Path, clusters: list[tuple[str | None, str]], reason: str) -> None:
    now = ctx.clock.now().isoformat()
    entries = [LeakEntry(cluster_id, name, now, reason) for cluster_id, name in clusters]
    described = ", ".join(f"{cluster_id or '?'} ({name})" for cluster_id, name in clusters)
    try:
        append_leaks(leak_file, entries)
    except OSError as exc:
        log.error("%s: cannot append to the leak file %s (%s); unrecorded clusters: %s", JOB, leak_file, exc, described)
        return
    ctx.reporter.warning(f"{JOB}: {len(entries)} clusters may exist unrecorded ({reason}), listed in {leak_file}")


def confirmation(ctx: Context, params: CreateTidbParams) -> str | None:
    return None  # it deletes nothing; what it spends is bounded by TIDB_SERVERLESS_NUMBER, as in Dify
