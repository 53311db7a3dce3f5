"""refresh-trigger-providers: hand plugin trigger subscriptions that expire soon to Dify's refresh task
(docs/jobs/refresh-trigger-providers.md).

:class:`_Refresher` walks the due subscriptions (:func:`due`) on an ``(updated_at, id)`` keyset cursor. Per
page, the in-flight keys (:func:`lock_key`) are set with ``SET NX EX`` in one pipeline, and
``trigger_subscription_refresh`` is published only for the keys this run set; when the broker refuses the
messages, those keys are deleted again so the next tick retries instead of waiting out the TTL. The keys are
written prefixed with ``REDIS_KEY_PREFIX``, because that is how Dify's executor reads them
(docs/dify-reference.md#redis-key-prefix). The broker is opened only on the first page with due rows.
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
from difymaint.dify.celery import DIFY_TASKS, BrokerUnavailable, LazyPublisher
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
        self.publisher = LazyPublisher(job.ctx.settings)
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
        publisher = self.publisher.get()  # a broker that is down fails here, before any key is set
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
            publisher.send_to(REFRESH, calls)
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
        self.publisher.close()

    def details(self) -> dict[str, Any]:
        """What the summary's details say of this scan."""
        return {
            "now_ts": self.now_ts,
            "task": TASK,
            "queue": QUEUE,
            "due": self.due,
            "throttled": self.throttled,
            "key_ttl_s": self.ttl,
            "credential_threshold_s": self.params.credential_threshold_s,
            "subscription_threshold_s": self.params.subscription_threshold_s,
        }


def run(job: JobRun, params: RefreshTriggerProvidersParams) -> None:
    ctx = job.ctx
    now = ctx.clock.now()
    refresher = _Refresher(job, params, now)
    job.remaining = refresher.remaining
    try:
        refresher.walk()
    finally:
        refresher.close()
        job.summary.details.update(refresher.details())
    job.settle_remaining()
