"""update-tidb-status: promote pooled TiDB Serverless clusters from CREATING to ACTIVE
(docs/jobs/update-tidb-status.md).

:func:`_poll` pages the idle CREATING bindings by ``(created_at, id)``, 20 per ``batchGet`` (TiDB Cloud's
maximum); :func:`_chunk` promotes a page in one transaction, every ``UPDATE`` repeating the CREATING guard.
A chunk that keeps failing is set aside after ``CALL_TRIES`` tries (before it can spend the run's failure
budget) and recorded in :class:`_Failures`; the walk goes on, and the run exits 1 at the end naming the
clusters it left CREATING. After the walk, stuck clusters are reported
(:func:`_report_stuck`) and, with ``--reap-older-than``, deleted in TiDB Cloud before their rows
(:func:`_reap_bindings`), then the leak file is processed (:func:`_reap_leaks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from difymaint.core.clock import naive_utc
from difymaint.core.context import Context
from difymaint.core.errors import DifymaintError
from difymaint.core.summary import Outcome
from difymaint.dify import tables as t
from difymaint.dify.tidb_cloud import (
    ACTIVE,
    CREATING,
    MAX_BATCH,
    ClusterNotFound,
    ClusterState,
    TidbAuthFailed,
    TidbCloudClient,
    TidbCloudError,
    TidbCloudUnavailable,
)
from difymaint.engine.options import RunOptions
from difymaint.engine.run import Batch, JobRun
from difymaint.jobs.confirm import database_description
from difymaint.jobs.tidb_pool import (
    TABLE,
    LeakEntry,
    check_bindings_table,
    client_for,
    drop_leaks,
    read_leaks,
    require_config,
)

JOB = "update-tidb-status"
LISTED = 20  # ids named in a warning or the summary; the rest are counted
# Tries of one request before its chunk is set aside: a poison chunk must not spend the budget the other
# chunks share (an outage still ends the run within the budget: the failures count toward its streak).
CALL_TRIES = 3


@dataclass(frozen=True)
class UpdateTidbStatusParams:
    stuck_after_hours: int = 24
    reap_older_than_hours: int | None = None
    leak_file: Path = Path("difymaint-tidb-leaks.jsonl")
    max_failed_requests: int = 10
    max_failing_seconds: float = 30.0
    run: RunOptions = field(default_factory=RunOptions)


Params = UpdateTidbStatusParams


@dataclass
class _Failures:
    count: int = 0
    first: str | None = None
    skipped_chunks: list[list[str]] = field(default_factory=list)  # cluster ids of chunks whose batchGet failed
    skipped_clusters: list[str] = field(default_factory=list)  # clusters whose endpoint lookup failed

    def add(self, job: JobRun, message: str) -> None:
        self.count += 1
        self.first = self.first or message.removeprefix(f"{JOB}: ")
        job.warn(message)

    @property
    def skipped(self) -> list[str]:
        """Every cluster left CREATING because a call about it failed."""
        return [cluster_id for chunk in self.skipped_chunks for cluster_id in chunk] + self.skipped_clusters

    def describe(self) -> str:
        skipped = self.skipped
        text = f"{JOB}: {self.count} chunk(s) failed, the others went through"
        if skipped:
            more = f" and {len(skipped) - LISTED} more" if len(skipped) > LISTED else ""
            text += f"; set aside, still CREATING: {', '.join(skipped[:LISTED])}{more}"
        return f"{text}; first: {self.first}"


def _creating(table: sa.Table) -> sa.ColumnElement[bool]:
    """Idle bindings still waiting for their cluster (the guard every write repeats)."""
    return sa.and_(table.c.active.is_(False), table.c.status == CREATING)


def check(ctx: Context, params: UpdateTidbStatusParams) -> None:
    require_config(ctx)  # one line, exit 2, before touching the database


def run(job: JobRun, params: UpdateTidbStatusParams) -> None:
    ctx = job.ctx
    _, has_endpoint = check_bindings_table(ctx, JOB)
    now = naive_utc(ctx.clock.now())  # created_at is naive UTC
    details = job.summary.details
    details.update(qdrant_endpoint_column=has_endpoint, stuck_after_hours=params.stuck_after_hours)
    failures = _Failures()
    cursor: tuple[datetime, str] | None = None
    job.remaining = lambda: _count_after(ctx, cursor)  # reads the cursor as it stands, even mid-walk
    client = client_for(ctx, call_tries=CALL_TRIES)
    try:
        cursor = _poll(ctx, job, client, has_endpoint, failures)
        stopped = job.summary.outcome is not Outcome.DONE
        _report_stuck(ctx, job, now - timedelta(hours=params.stuck_after_hours), params.stuck_after_hours)
        if params.reap_older_than_hours is not None and not stopped:
            cut = now - timedelta(hours=params.reap_older_than_hours)
            _reap_bindings(ctx, job, client, cut, failures)
            if job.summary.outcome is Outcome.DONE:
                _reap_leaks(ctx, job, client, params.leak_file, cut, failures)
    finally:
        details.update(api_requests=client.requests_sent, api_failed_requests=client.failed_requests)
        if failures.skipped_chunks:
            details["skipped_chunks"] = failures.skipped_chunks
        if failures.skipped_clusters:
            details["skipped_clusters"] = failures.skipped_clusters
        client.close()
    job.settle_remaining(lambda: _count_after(ctx, cursor))
    remaining = job.summary.rows_remaining
    if failures.skipped and remaining is not None and remaining >= 0:
        job.summary.rows_remaining = remaining + _count_creating(ctx, failures.skipped)  # behind the cursor
    if failures.count:
        details["failed_chunks"] = failures.count
        raise DifymaintError(failures.describe(), hint="the next run retries them")


# ------------------------------------------------------------------------------------------------ promotion


def _poll(
    ctx: Context, job: JobRun, client: TidbCloudClient, has_endpoint: bool, failures: _Failures
) -> tuple[datetime, str] | None:
    """Walk the CREATING bindings in chunks; returns the cursor where the walk stopped (None: from the start)."""
    table = t.tidb_auth_bindings
    columns = [table.c.id, table.c.cluster_id, table.c.created_at]
    if has_endpoint:
        columns.append(table.c.qdrant_endpoint)
    cursor: tuple[datetime, str] | None = None
    while job.keep_going():
        query = sa.select(*columns).where(_creating(table))
        if cursor is not None:
            query = query.where(sa.tuple_(table.c.created_at, table.c.id) > sa.tuple_(*cursor))
        query = query.order_by(table.c.created_at, table.c.id).limit(min(job.batch_size, MAX_BATCH))
        with ctx.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        if not rows:
            break
        previous, cursor = cursor, (rows[-1]["created_at"], str(rows[-1]["id"]))
        with job.batch() as batch:
            _chunk(ctx, job, batch, client, rows, has_endpoint, failures)
        if batch.rolled_back:
            cursor = previous  # a statement timeout: read the same chunk again
    return cursor


def _chunk(
    ctx: Context,
    job: JobRun,
    batch: Batch,
    client: TidbCloudClient,
    rows: list[dict[str, Any]],
    has_endpoint: bool,
    failures: _Failures,
) -> None:
    where = f"chunk of {len(rows)} bindings from created_at {rows[0]['created_at']:%Y-%m-%d %H:%M:%S}"
    try:
        states = {state.cluster_id: state for state in client.batch_get([row["cluster_id"] for row in rows])}
    except (TidbCloudUnavailable, TidbAuthFailed):
        raise  # the budget is spent, or the key is wrong: every later call would fail too
    except TidbCloudError as exc:
        failures.skipped_chunks.append([str(row["cluster_id"]) for row in rows])
        failures.add(job, f"{JOB}: {where}: {exc.message}")
        batch.record(scanned=len(rows), affected=0, rows={})
        return
    updates: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        state = states.get(row["cluster_id"])
        if state is None or not state.is_active:
            continue
        values = _promotion(ctx, job, client, row, state, has_endpoint, failures)
        if values is not None:
            updates.append((str(row["id"]), values))
    promoted = sum(1 for _, values in updates if values.get("status") == ACTIVE)
    if updates and not job.dry_run:
        table = t.tidb_auth_bindings
        promoted = 0
        with batch.transaction() as conn:
            for binding_id, values in updates:
                result = conn.execute(
                    sa.update(table).where(table.c.id == binding_id, _creating(table)).values(**values)
                )
                promoted += result.rowcount if values.get("status") == ACTIVE else 0
    batch.record(scanned=len(rows), affected=promoted, rows={TABLE: promoted})


def _promotion(
    ctx: Context,
    job: JobRun,
    client: TidbCloudClient,
    row: dict[str, Any],
    state: ClusterState,
    has_endpoint: bool,
    failures: _Failures,
) -> dict[str, Any] | None:
    """The values Dify writes for a cluster TiDB Cloud reports ACTIVE; status only once an endpoint is known."""
    values: dict[str, Any] = {"account": state.account}
    if not has_endpoint:
        return {**values, "status": ACTIVE}
    endpoint = row.get("qdrant_endpoint") or state.qdrant_endpoint
    if not endpoint:
        try:  # Dify's fallback when the batch answer lacks endpoints.public.host
            endpoint = client.get(row["cluster_id"]).qdrant_endpoint
        except (TidbCloudUnavailable, TidbAuthFailed):
            raise
        except TidbCloudError as exc:
            failures.skipped_clusters.append(str(row["cluster_id"]))
            failures.add(job, f"{JOB}: cluster {row['cluster_id']}: {exc.message}")
            return None
    if not endpoint:
        ctx.reporter.info(f"{JOB}: cluster {row['cluster_id']} is ACTIVE without a public host yet; retried next run")
        return values
    return {**values, "qdrant_endpoint": endpoint, "status": ACTIVE}


def _count_creating(ctx: Context, cluster_ids: list[str]) -> int:
    """How many of these clusters' bindings are still CREATING (a reaped one is no longer to do)."""
    table = t.tidb_auth_bindings
    query = sa.select(sa.func.count()).select_from(table).where(_creating(table), table.c.cluster_id.in_(cluster_ids))
    with ctx.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _count_after(ctx: Context, cursor: tuple[datetime, str] | None) -> int:
    table = t.tidb_auth_bindings
    query = sa.select(sa.func.count()).select_from(table).where(_creating(table))
    if cursor is not None:
        query = query.where(sa.tuple_(table.c.created_at, table.c.id) > sa.tuple_(*cursor))
    with ctx.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


# ------------------------------------------------------------------------------------------ stuck and reaping


def _report_stuck(ctx: Context, job: JobRun, cut: datetime, hours: int) -> None:
    table = t.tidb_auth_bindings
    old = sa.and_(_creating(table), table.c.created_at < cut)
    with ctx.engine.connect() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).select_from(table).where(old)).scalar_one())
        listed = conn.execute(
            sa.select(table.c.cluster_id, table.c.created_at).where(old).order_by(table.c.created_at).limit(LISTED)
        ).all()
    job.summary.details["stuck_clusters"] = total
    job.summary.details["stuck_cluster_ids"] = [str(row.cluster_id) for row in listed]
    if total:
        more = f" and {total - len(listed)} more" if total > len(listed) else ""
        job.warn(
            f"{total} clusters still CREATING more than {hours} h after creation (oldest since "
            f"{listed[0].created_at:%Y-%m-%d %H:%M:%S} UTC): {', '.join(str(r.cluster_id) for r in listed)}{more}"
        )


def _reap_bindings(ctx: Context, job: JobRun, client: TidbCloudClient, cut: datetime, failures: _Failures) -> None:
    """Delete clusters stuck in CREATING since before ``cut``: in TiDB Cloud first, then their binding rows."""
    table = t.tidb_auth_bindings
    cursor: tuple[datetime, str] | None = None
    reaped: list[str] = []
    while job.keep_going():
        query = sa.select(table.c.id, table.c.cluster_id, table.c.created_at).where(
            _creating(table), table.c.created_at < cut
        )
        if cursor is not None:
            query = query.where(sa.tuple_(table.c.created_at, table.c.id) > sa.tuple_(*cursor))
        with ctx.engine.connect() as conn:
            rows = conn.execute(query.order_by(table.c.created_at, table.c.id).limit(MAX_BATCH)).all()
        if not rows:
            break
        cursor = (rows[-1].created_at, str(rows[-1].id))
        with job.batch() as batch:
            if job.dry_run:
                gone = [str(row.id) for row in rows]
                ctx.reporter.info(f"{JOB}: would reap {', '.join(str(row.cluster_id) for row in rows)}")
            else:
                gone = [str(row.id) for row in rows if _delete_cluster(ctx, job, client, str(row.cluster_id), failures)]
                if gone:
                    with batch.transaction() as conn:
                        conn.execute(sa.delete(table).where(table.c.id.in_(gone), _creating(table)))
            reaped += [str(row.cluster_id) for row in rows if str(row.id) in gone]
            batch.record(scanned=len(rows), affected=len(gone), rows={})
    job.summary.details["reaped_clusters" if not job.dry_run else "would_reap_clusters"] = reaped


def _delete_cluster(ctx: Context, job: JobRun, client: TidbCloudClient, cluster_id: str, failures: _Failures) -> bool:
    """True once the cluster is gone from TiDB Cloud (deleted now, or already unknown there)."""
    try:
        client.delete(cluster_id)
    except ClusterNotFound:
        ctx.reporter.info(f"{JOB}: cluster {cluster_id} is already gone from TiDB Cloud")
        return True
    except (TidbCloudUnavailable, TidbAuthFailed):
        raise
    except TidbCloudError as exc:
        failures.add(job, f"{JOB}: deleting cluster {cluster_id}: {exc.message}")
        return False
    ctx.reporter.info(f"{JOB}: deleted cluster {cluster_id} in TiDB Cloud")
    return True


def _reap_leaks(
    ctx: Context, job: JobRun, client: TidbCloudClient, path: Path, cut: datetime, failures: _Failures
) -> None:
    """Leak-file clusters created before ``cut`` that no binding row records: delete them, drop their lines."""
    entries = read_leaks(path)
    if not entries:
        return
    table = t.tidb_auth_bindings
    known = {entry.cluster_id for entry in entries if entry.cluster_id}
    with ctx.engine.connect() as conn:
        recorded = {
            str(value) for value in conn.execute(sa.select(table.c.cluster_id).where(table.c.cluster_id.in_(known)))
        }
    dropped: set[LeakEntry] = set()
    reaped: list[str] = []
    unidentified: list[str] = []
    for entry in entries:
        if entry.cluster_id is None:
            unidentified.append(entry.display_name)
            continue
        if entry.cluster_id in recorded:
            dropped.add(entry)  # recorded after all: not a leak
            continue
        created = entry.created()
        if created is None or naive_utc(created) >= cut or not job.keep_going():
            continue
        if job.dry_run:
            reaped.append(entry.cluster_id)
        elif _delete_cluster(ctx, job, client, entry.cluster_id, failures):
            reaped.append(entry.cluster_id)
            dropped.add(entry)
    if not job.dry_run and dropped:
        drop_leaks(path, dropped)
    job.summary.details["leaked_reaped" if not job.dry_run else "leaked_would_reap"] = reaped
    if unidentified:
        job.summary.details["leaked_without_id"] = len(unidentified)
        names = ", ".join(unidentified[:LISTED])
        job.warn(
            f"{len(unidentified)} leak-file clusters have no clusterId (batchCreate's answer was lost); look them "
            f"up by display name in the TiDB Cloud console and delete them there: {names}"
        )


def confirmation(ctx: Context, params: UpdateTidbStatusParams) -> str | None:
    if params.reap_older_than_hours is None:
        return None  # promoting rows deletes nothing
    return (
        f"Delete TiDB Cloud clusters still CREATING after {params.reap_older_than_hours} hours, with their "
        f"tidb_auth_bindings rows in {database_description(ctx.settings)}, and leaked clusters of that age?"
    )
