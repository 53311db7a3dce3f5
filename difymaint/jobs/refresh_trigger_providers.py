"""refresh-trigger-providers: hand plugin trigger subscriptions that expire soon to Dify's refresh task
(docs/jobs/refresh-trigger-providers.md).

Replaces Dify's ``trigger_provider_refresh`` beat task. A subscription is due when its OAuth credential or its
provider-side subscription expires within Dify's thresholds (epoch-second columns, -1 = never). The due rows
are walked with a ``(updated_at, id)`` keyset cursor (Dify pages with OFFSET over a set its own refreshes
reorder). Per page, the in-flight key ``trigger_provider_refresh_lock:{tenant}_{subscription}`` is set with
``SET NX EX max(300, subscription threshold)`` in one pipeline, and ``trigger_subscription_refresh`` is
published for each key this run set. The key is written **prefixed** with ``REDIS_KEY_PREFIX``, because that is
how Dify's executor reads it (Dify's own dispatcher writes it unprefixed, so under a prefix every refresh is
skipped). When the broker refuses the messages, the keys this run set are deleted again, so the next tick
retries instead of waiting out the TTL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from redis.exceptions import RedisError

from difymaint.core.errors import ConfigError, RedisUnavailable
from difymaint.dify import tables as t

# core.celery imports Celery only inside the functions that publish: an empty tick never loads it.
from difymaint.dify.celery import DIFY_TASKS, BrokerUnavailable, CeleryPublisher, publisher
from difymaint.engine.keyset import Cursor, after
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun

JOB = "refresh-trigger-providers"
# trigger_subscription_refresh(tenant_id=, subscription_id=) on queue trigger_refresh_executor.
REFRESH = DIFY_TASKS["tasks.trigger_subscription_refresh_tasks.trigger_subscription_refresh"]
TASK = REFRESH.name
QUEUE = REFRESH.queue
MIN_KEY_TTL = 300  # Dify: max(300, TRIGGER_PROVIDER_SUBSCRIPTION_THRESHOLD_SECONDS)

subs = t.trigger_subscriptions


@dataclass(frozen=True)
class RefreshTriggerProvidersParams:
    credential_threshold_s: int = 3600  # TRIGGER_PROVIDER_CREDENTIAL_THRESHOLD_SECONDS
    subscription_threshold_s: int = 3600  # TRIGGER_PROVIDER_SUBSCRIPTION_THRESHOLD_SECONDS
    run: RunOptions = field(default_factory=RunOptions)


Params = RefreshTriggerProvidersParams


def lock_key(tenant_id: str, subscription_id: str) -> str:
    """Dify's ``build_trigger_refresh_lock_key`` (logical name; the KeyNamer adds the prefix)."""
    return f"trigger_provider_refresh_lock:{tenant_id}_{subscription_id}"


def due(now_ts: int, params: RefreshTriggerProvidersParams) -> sa.ColumnElement[bool]:
    """Dify's ``_build_due_filter``: credential or subscription expiring within its threshold."""
    return sa.or_(
        sa.and_(
            subs.c.credential_expires_at != -1,
            subs.c.credential_expires_at <= now_ts + params.credential_threshold_s,
        ),
        sa.and_(subs.c.expires_at != -1, subs.c.expires_at <= now_ts + params.subscription_threshold_s),
    )


class _Refresher:
    def __init__(self, job: JobRun, params: RefreshTriggerProvidersParams, now: datetime) -> None:
        self.job = job
        self.ctx = job.ctx
        self.params = params
        self.now_ts = int(now.timestamp())
        self.ttl = max(MIN_KEY_TTL, params.subscription_threshold_s)
        self.publisher: CeleryPublisher | None = None
        self.due = 0
        self.throttled = 0
        self.cursor: Cursor | None = None

    def redis(self) -> Any:
        """Dify's Redis, needed once something is due (an empty tick runs without it, like without a broker)."""
        client = self.ctx.redis
        if client is None:
            raise ConfigError(
                f"{JOB} needs Dify's Redis for the in-flight keys its executor checks",
                hint="set REDIS_HOST (or DIFYMAINT_REDIS_URL) as for Dify's api",
            )
        return client

    def walk(self) -> None:
        keys = self.ctx.keys
        while self.job.keep_going():
            limit = self.job.batch_size  # the size adapts after each batch: a short page is judged by this one
            with self.job.batch() as batch:
                with batch.transaction() as conn:
                    query = sa.select(subs.c.tenant_id, subs.c.id, subs.c.updated_at.label("created_at")).where(
                        due(self.now_ts, self.params), after(subs.c.updated_at, subs.c.id, self.cursor)
                    )
                    rows = conn.execute(query.order_by(subs.c.updated_at, subs.c.id).limit(limit)).all()
                pairs = [(str(row.tenant_id), str(row.id)) for row in rows]
                physical = [keys.key(lock_key(tenant, sub)) for tenant, sub in pairs]
                chosen = self.preview(pairs, physical) if self.job.dry_run else self.dispatch(pairs, physical)
                self.due += len(pairs)
                self.throttled += len(pairs) - chosen
                batch.record(scanned=len(rows), affected=chosen, rows={subs.name: chosen})
            if batch.rolled_back:
                continue
            if len(rows) < limit:
                break
            self.cursor = Cursor.of(rows[-1])

    def preview(self, pairs: list[tuple[str, str]], physical: list[str]) -> int:
        """Dry run: which subscriptions have no in-flight key (and would be published); nothing is set."""
        if not pairs:
            return 0
        try:
            pipe = self.redis().pipeline(transaction=False)
            for key in physical:
                pipe.exists(key)
            held = pipe.execute()
        except RedisError as exc:
            raise RedisUnavailable(f"cannot read the refresh keys from Redis: {exc}") from None
        chosen = 0
        for (tenant, sub), is_held in zip(pairs, held, strict=True):
            if is_held:
                continue
            chosen += 1
            print(
                f"would publish {TASK}(tenant_id={tenant!r}, subscription_id={sub!r}) to {QUEUE}", file=self.ctx.output
            )
        return chosen

    def dispatch(self, pairs: list[tuple[str, str]], physical: list[str]) -> int:
        if not pairs:
            return 0
        if self.publisher is None:
            self.publisher = publisher(self.ctx.settings)  # a broker that is down fails here, before any key is set
        client = self.redis()
        try:
            pipe = client.pipeline(transaction=False)
            for key in physical:
                pipe.set(key, b"1", ex=self.ttl, nx=True)
            acquired = [bool(result) for result in pipe.execute()]
        except RedisError as exc:
            raise RedisUnavailable(f"cannot set the refresh keys in Redis: {exc}") from None
        chosen = [(pair, key) for pair, key, ok in zip(pairs, physical, acquired, strict=True) if ok]
        if not chosen:
            return 0
        calls = [REFRESH.call(tenant_id=tenant, subscription_id=sub) for (tenant, sub), _ in chosen]
        try:
            self.publisher.send_to(REFRESH, calls)
        except BrokerUnavailable as exc:
            # The messages after the first len(published) never reached the executor: free their keys so the
            # next tick retries at once instead of waiting out the TTL.
            unsent = [key for _, key in chosen[len(exc.published) :]]
            try:
                if unsent:
                    client.delete(*unsent)
            except RedisError:
                self.job.warn(f"could not delete {len(unsent)} refresh key(s); they expire in {self.ttl} s")
            raise
        return len(chosen)

    def remaining(self) -> int:
        """Due subscriptions past the cursor: what an early stop left for the next tick."""
        where = sa.and_(due(self.now_ts, self.params), after(subs.c.updated_at, subs.c.id, self.cursor))
        with self.ctx.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(subs).where(where)).scalar_one())

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None


def run(job: JobRun, params: RefreshTriggerProvidersParams) -> None:
    ctx = job.ctx
    now = ctx.clock.now()
    refresher = _Refresher(job, params, now)
    job.remaining = refresher.remaining
    try:
        refresher.walk()
    finally:
        refresher.close()
        job.summary.details.update(
            now_ts=refresher.now_ts,
            task=TASK,
            queue=QUEUE,
            due=refresher.due,
            throttled=refresher.throttled,
            key_ttl_s=refresher.ttl,
            credential_threshold_s=params.credential_threshold_s,
            subscription_threshold_s=params.subscription_threshold_s,
        )
    job.settle_remaining()
